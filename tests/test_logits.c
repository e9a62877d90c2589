/* engine/kernels/k_logits: argmax, sorted top-k, max + log-sum-exp at a
 * temperature, temperature division and sparse adjustments, against the
 * references: exact indices (ties included: the lower index wins), over
 * row lengths from 1 to Gemma's 256000, through the subgroup and portable
 * reductions. */
#include "kernel_util.h"
#include "k_logits.h"

#include <stdio.h>

static const uint32_t lens[] = {1, 7, 33, 257, 4097, 152064, 256000};

static void both_paths(void **state, void (*f)(void **state, bool sub))
{
    vkpt_device *dev = vkpt_test_dev(state);
    bool had = dev->caps.subgroup_arith;
    if (had) f(state, true);
    dev->caps.subgroup_arith = false;
    f(state, false);
    dev->caps.subgroup_arith = had;
}

/* Row kinds: 0 uniform random, 1 coarse values (many ties), 2 all equal,
 * 3 specials (+-0, +-inf, NaN) over random values, 4 all -inf, 5 all NaN,
 * 6 negative values with +0 and -0 as the maxima (equal: index order). */
static void fill_row(vkpt_test_rng *r, float *x, uint32_t n, int kind)
{
    for (uint32_t i = 0; i < n; i++) {
        float v = vkpt_test_rng_f32(r, -10, 10);
        switch (kind) {
        case 1: v = floorf(v * 0.7f); break; /* ~14 distinct values */
        case 2: v = 1.5f; break;
        case 3: {
            static const float sp[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN};
            if (vkpt_test_rng_u64(r) % 5 == 0) v = sp[vkpt_test_rng_u64(r) % 5];
            if (vkpt_test_rng_u64(r) % 3 == 0) v = floorf(v); /* and ties */
            break;
        }
        case 4: v = -INFINITY; break;
        case 5: v = NAN; break;
        case 6: v = vkpt_test_rng_u64(r) % 8 ? -fabsf(v) - 1 : (i % 2 ? -0.0f : 0.0f); break;
        }
        x[i] = v;
    }
}

static void argmax_case(void **state, bool sub)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 70 + sub);
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        uint32_t n = lens[li], rows = 7, stride = n + 3;
        float *x = malloc((size_t)rows * stride * 4);
        for (uint32_t t = 0; t < rows; t++) fill_row(&r, x + (size_t)t * stride, n, (int)t);
        uint32_t gi[7], wi[7];
        float gv[7], wv[7];
        vkpt_buf bx = kt_buf(dev, x, (size_t)rows * stride * 4);
        vkpt_buf bi = kt_buf(dev, NULL, rows * 4), bv = kt_buf(dev, NULL, rows * 4);
        vkpt_rows vx = vkpt_rows_of(&bx, 0, stride);
        kt_begin(&c);
        assert_int_equal(vkpt_k_argmax(&c, &vx, n, rows, &bi, &bv), 0);
        kt_run(&c);
        kt_get(dev, &bi, gi, rows * 4);
        kt_get(dev, &bv, gv, rows * 4);
        vkpt_ref_argmax(x, stride, n, rows, wi, wv);
        for (uint32_t t = 0; t < rows; t++) {
            if (gi[t] != wi[t])
                fail_msg("argmax n=%u kind %u sub=%d: index %u, want %u", n, t, sub, gi[t], wi[t]);
            if (wi[t] != UINT32_MAX) assert_memory_equal(&gv[t], &x[(size_t)t * stride + wi[t]], 4);
        }
        assert_int_equal(wi[2], 0);          /* all equal: the first */
        assert_int_equal(wi[4], 0);          /* all -inf: the first */
        assert_int_equal(wi[5], UINT32_MAX); /* all NaN: none */
        vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bi), vkpt_buf_free(dev, &bv);
        free(x);
    }
    vkpt_cmd_free(&c);
}

static void logits_argmax_is_exact_and_ties_pick_the_lowest_index(void **state)
{
    both_paths(state, argmax_case);
}

static void logits_topk_is_sorted_and_exact(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 80);
    static const uint32_t ks[] = {1, 5, 40, 64};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (size_t ki = 0; ki < 4; ki++) {
            uint32_t n = lens[li], k = ks[ki], rows = 7, stride = n + 1;
            if (k > n) continue;
            if (n > 5000 && ki != 3 && ki != 1) continue; /* long rows: two k suffice */
            float *x = malloc((size_t)rows * stride * 4);
            for (uint32_t t = 0; t < rows; t++) fill_row(&r, x + (size_t)t * stride, n, (int)t);
            size_t m = (size_t)rows * k;
            float *gv = malloc(m * 4), *wv = malloc(m * 4);
            uint32_t *gi = malloc(m * 4), *wi = malloc(m * 4);
            vkpt_buf bx = kt_buf(dev, x, (size_t)rows * stride * 4);
            vkpt_buf bv = kt_buf(dev, NULL, m * 4), bi = kt_buf(dev, NULL, m * 4);
            vkpt_rows vx = vkpt_rows_of(&bx, 0, stride);
            kt_begin(&c);
            assert_int_equal(vkpt_k_topk(&c, &vx, n, rows, k, &bv, &bi), 0);
            kt_run(&c);
            kt_get(dev, &bv, gv, m * 4);
            kt_get(dev, &bi, gi, m * 4);
            vkpt_ref_topk(x, stride, n, rows, k, wv, wi);
            for (size_t i = 0; i < m; i++)
                if (gi[i] != wi[i] || memcmp(&gv[i], &wv[i], 4))
                    fail_msg("topk n=%u k=%u kind %zu rank %zu: (%g, %u), want (%g, %u)", n, k,
                             i / k, i % k, gv[i], gi[i], wv[i], wi[i]);
            vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bv), vkpt_buf_free(dev, &bi);
            free(x), free(gv), free(wv), free(gi), free(wi);
        }
    vkpt_cmd_free(&c);
}

/* Bound: |got - ref| <= 1e-5 * max(1, |ref|) for the log-sum-exp (f32
 * accumulation of up to 256000 terms in tree order, online rescaling; the
 * exp/log ulp bounds of Vulkan); the max is one division: 3 ulp. */
static void lse_case(void **state, bool sub)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 90 + sub);
    static const float temps[] = {0.7f, 1.0f, 1.5f, 0.05f, 1.0f};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        uint32_t n = lens[li], rows = 5;
        float *x = malloc((size_t)rows * n * 4);
        for (uint32_t t = 0; t < rows; t++) {
            fill_row(&r, x + (size_t)t * n, n, t == 4 ? 4 : 0);
            for (uint32_t i = 0; i < n; i += 11) x[(size_t)t * n + i] = -INFINITY; /* masked */
        }
        float got[10], want[10];
        vkpt_buf bx = kt_buf(dev, x, (size_t)rows * n * 4), bt = kt_buf(dev, temps, rows * 4);
        vkpt_buf bo = kt_buf(dev, NULL, rows * 8);
        vkpt_rows vx = vkpt_rows_of(&bx, 0, n);
        kt_begin(&c);
        assert_int_equal(vkpt_k_logsumexp(&c, &vx, n, rows, &bt, &bo), 0);
        kt_run(&c);
        kt_get(dev, &bo, got, rows * 8);
        vkpt_ref_logsumexp(x, n, n, rows, temps, want);
        for (uint32_t i = 0; i < 2 * rows; i++) {
            double tol = (i % 2 ? 1e-5 : 4e-7) * fmax(1.0, fabs(want[i]));
            bool same_inf = isinf(want[i]) && got[i] == want[i];
            if (!same_inf && !(fabs(got[i] - want[i]) <= tol))
                fail_msg("logsumexp n=%u row %u sub=%d: %s %.9g want %.9g", n, i / 2, sub,
                         i % 2 ? "lse" : "max", got[i], want[i]);
        }
        assert_true(isinf(want[9]) && want[9] < 0); /* a row of -inf */
        vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bt), vkpt_buf_free(dev, &bo);
        free(x);
    }
    vkpt_cmd_free(&c);
}

static void logits_max_and_logsumexp_at_a_temperature(void **state)
{
    both_paths(state, lse_case);
}

/* Bound 3 ulp (relative 3.6e-7): Vulkan divisions are 2.5 ulp; the
 * references divide exactly. The repetition penalty's branch and the delta
 * are checked by values that differ by far more. */
static void logits_temperature_and_sparse_adjustments(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 95);
    uint32_t n = 4097, rows = 4, stride = 4100;
    size_t total = (size_t)rows * stride;
    float *x = kt_randf(&r, total, -10, 10), *got = malloc(total * 4), *want = malloc(total * 4);
    float temps[4] = {0.5f, 1.0f, 1.3f, 2.0f};
    /* per-row lists: row 0 four edits, row 1 none, row 2 three (one id out of
     * range), row 3 a penalty on every 7th token */
    vkpt_logit_adj e[700];
    uint32_t offs[5], ne = 0;
    offs[0] = 0;
    e[ne++] = (vkpt_logit_adj){3, 1.3f, 0.0f};
    e[ne++] = (vkpt_logit_adj){4096, 1.0f, 5.0f};
    e[ne++] = (vkpt_logit_adj){0, 1.3f, -0.4f};
    e[ne++] = (vkpt_logit_adj){17, 1.0f, -100.0f};
    offs[1] = ne;
    offs[2] = ne;
    e[ne++] = (vkpt_logit_adj){9, 2.0f, 0.25f};
    e[ne++] = (vkpt_logit_adj){4097, 2.0f, 1.0f}; /* past the vocabulary: ignored */
    e[ne++] = (vkpt_logit_adj){10, 0.5f, 0.0f};
    offs[3] = ne;
    for (uint32_t id = 1; id < n && ne < 700; id += 7) e[ne++] = (vkpt_logit_adj){id, 1.2f, -0.5f};
    offs[4] = ne;
    vkpt_buf bx = kt_buf(dev, x, total * 4), bt = kt_buf(dev, temps, sizeof temps);
    vkpt_buf bo = kt_buf(dev, offs, sizeof offs), be = kt_buf(dev, e, ne * sizeof e[0]);
    vkpt_rows vx = vkpt_rows_of(&bx, 2, stride);
    kt_begin(&c);
    assert_int_equal(vkpt_k_logits_adjust(&c, &vx, n, rows, &bo, &be, ne), 0);
    vkpt_cmd_barrier(&c);
    assert_int_equal(vkpt_k_logits_temp(&c, &vx, n, rows, &bt), 0);
    kt_run(&c);
    kt_get(dev, &bx, got, total * 4);
    memcpy(want, x, total * 4);
    vkpt_ref_logits_adjust(want + 2, stride, n, rows, offs, e);
    vkpt_ref_logits_temp(want + 2, stride, n, rows, temps);
    for (size_t i = 0; i < total; i++) {
        uint32_t col = (uint32_t)(i % stride);
        if (col < 2 || col >= n + 2) { /* outside the view: untouched */
            assert_memory_equal(&got[i], &x[i], 4);
            continue;
        }
        if (!(fabs(got[i] - want[i]) <= 3.6e-7 * fabs(want[i])))
            fail_msg("adjust+temp: row %zu token %u: got %.9g want %.9g", i / stride, col - 2,
                     got[i], want[i]);
    }
    vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bt), vkpt_buf_free(dev, &bo);
    vkpt_buf_free(dev, &be);
    free(x), free(got), free(want);
    vkpt_cmd_free(&c);
}

static void logits_reject_bad_arguments(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_buf b = kt_buf(dev, NULL, 1024 * 4);
    vkpt_rows v = vkpt_rows_of(&b, 0, 100);
    kt_begin(&c);
    assert_int_equal(vkpt_k_topk(&c, &v, 100, 2, 0, &b, &b), VKPT_EINVAL);
    assert_int_equal(vkpt_k_topk(&c, &v, 100, 2, 65, &b, &b), VKPT_EINVAL);
    assert_int_equal(vkpt_k_topk(&c, &v, 10, 2, 11, &b, &b), VKPT_EINVAL);
    assert_int_equal(vkpt_k_argmax(&c, &v, 100, 11, &b, &b), VKPT_EINVAL);
    assert_int_equal(vkpt_k_argmax(&c, &v, 0, 1, &b, &b), VKPT_EINVAL);
    vkpt_rows big = vkpt_rows_of(&b, 0, 0);
    assert_int_equal(vkpt_k_argmax(&c, &big, VKPT_LOGITS_MAXN + 1, 1, &b, &b), VKPT_EINVAL);
    kt_run(&c);
    vkpt_buf_free(dev, &b);
    vkpt_cmd_free(&c);
}

#define T(fn) cmocka_unit_test_teardown(fn, vkpt_test_check_validation)
int main(void)
{
    const struct CMUnitTest tests[] = {
        T(logits_argmax_is_exact_and_ties_pick_the_lowest_index),
        T(logits_topk_is_sorted_and_exact),
        T(logits_max_and_logsumexp_at_a_temperature),
        T(logits_temperature_and_sparse_adjustments),
        T(logits_reject_bad_arguments),
    };
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
