/* engine/kernels/k_pool: CLS, mean and last-token pooling of a packed batch,
 * with and without L2 normalisation and with Matryoshka truncation, against
 * the double-precision reference; both reduction paths (subgroup and shared
 * memory), widths that are not multiples of the workgroup, sequences of 1 to
 * 700 rows side by side in one dispatch. */
#include "k_pool.h"
#include "kernel_util.h"

#include <stdio.h>

/* Bound: 2e-6 relative to the vector's largest element. CLS/last copy a row
 * (exact); the mean is a Kahan-compensated f32 sum (error ~1 ulp of the sum
 * whatever the length) and one division; the norm is an f32 sum of squares
 * over <= 4099 elements (~log2 n roundings in tree order) and a sqrt. A
 * missing or doubled row in a 700-row mean moves the result by ~1e-3. */
static const double POOL_REL = 2e-6;

static void both_paths(void **state, void (*f)(void **state, bool sub))
{
    vkpt_device *dev = vkpt_test_dev(state);
    bool had = dev->caps.subgroup_arith;
    if (had) f(state, true);
    dev->caps.subgroup_arith = false;
    f(state, false);
    dev->caps.subgroup_arith = had;
}

/* max |a - b| / max |b| over n */
static double rel_err(const float *a, const float *b, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > d || isnan(e)) d = isnan(e) ? INFINITY : e;
        if (fabs(b[i]) > m) m = fabs(b[i]);
    }
    return m > 0 ? d / m : d;
}

static void pool_case(void **state, bool sub)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 5 + sub);
    static const uint32_t widths[] = {1, 13, 64, 333, 1030, 4099};
    static const uint32_t lens[] = {1, 2, 3, 17, 64, 700, 5};
    const uint32_t n_lens = sizeof lens / sizeof lens[0];
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
        uint32_t n = widths[wi];
        /* every (length, kind, normalize) combination once, packed */
        uint32_t n_seqs = n_lens * 3 * 2, rows = 0;
        vkpt_pool_seq *seqs = calloc(n_seqs, sizeof *seqs);
        uint32_t s = 0;
        for (uint32_t li = 0; li < n_lens; li++)
            for (uint32_t kind = 1; kind <= 3; kind++)
                for (uint32_t norm = 0; norm < 2; norm++, s++) {
                    seqs[s].start = rows;
                    seqs[s].len = lens[li];
                    seqs[s].mode = kind | (norm ? VKPT_POOL_NORMALIZE : 0);
                    /* truncate every third one (to a width that is not a
                     * multiple of anything) */
                    seqs[s].dims = s % 3 == 2 && n > 1 ? n - n / 3 : n;
                    rows += lens[li];
                }
        /* an offset, so a mean that drops the compensation loses digits */
        float *x = kt_randf(&r, (size_t)rows * n, -1, 1);
        for (size_t i = 0; i < (size_t)rows * n; i++) x[i] += 3.0f;
        uint32_t o_stride = n + 3;
        float *got = calloc((size_t)n_seqs * o_stride, 4),
              *want = calloc((size_t)n_seqs * o_stride, 4);
        vkpt_buf bx = kt_buf(dev, x, (size_t)rows * n * 4);
        vkpt_buf bs = kt_buf(dev, seqs, n_seqs * sizeof *seqs);
        vkpt_buf bo = kt_buf(dev, NULL, (size_t)n_seqs * o_stride * 4);
        vkpt_rows vx = vkpt_rows_of(&bx, 0, n), vo = vkpt_rows_of(&bo, 2, o_stride);
        kt_begin(&c);
        assert_int_equal(vkpt_k_pool(&c, &vx, n, &bs, n_seqs, &vo), 0);
        kt_run(&c);
        kt_get(dev, &bo, got, (size_t)n_seqs * o_stride * 4);
        assert_int_equal(vkpt_ref_pool(x, n, n, seqs, n_seqs, want, o_stride), 0);
        for (s = 0; s < n_seqs; s++) {
            const float *g = got + 2 + (size_t)s * o_stride, *w = want + (size_t)s * o_stride;
            double e = rel_err(g, w, seqs[s].dims);
            if (e > POOL_REL)
                fail_msg("pool n=%u seq %u (len %u mode %u dims %u) sub=%d: error %.3g", n, s,
                         seqs[s].len, seqs[s].mode, seqs[s].dims, sub, e);
            /* past dims the output row is untouched (the fill pattern) */
            if (seqs[s].dims < n) {
                uint32_t word;
                memcpy(&word, &g[seqs[s].dims], 4);
                assert_int_equal(word, 0xffffffffu);
            }
            if (seqs[s].mode & VKPT_POOL_NORMALIZE) {
                double ss = 0;
                for (uint32_t i = 0; i < seqs[s].dims; i++) ss += (double)g[i] * g[i];
                assert_true(fabs(sqrt(ss) - 1) < 1e-5);
            }
        }
        vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bs), vkpt_buf_free(dev, &bo);
        free(x), free(got), free(want), free(seqs);
    }
    vkpt_cmd_free(&c);
}

static void pool_matches_reference_for_every_mode_and_length(void **state)
{
    both_paths(state, pool_case);
}

/* A zero vector normalises to zeros (the 1e-12 floor), not NaN. */
static void pool_normalize_of_zero_is_zero(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    float x[2 * 40] = {0};
    vkpt_pool_seq seq = {0, 2, VKPT_POOL_KIND_MEAN | VKPT_POOL_NORMALIZE, 40};
    vkpt_buf bx = kt_buf(dev, x, sizeof x), bs = kt_buf(dev, &seq, sizeof seq);
    vkpt_buf bo = kt_buf(dev, NULL, 40 * 4);
    vkpt_rows vx = vkpt_rows_of(&bx, 0, 40), vo = vkpt_rows_of(&bo, 0, 40);
    kt_begin(&c);
    assert_int_equal(vkpt_k_pool(&c, &vx, 40, &bs, 1, &vo), 0);
    kt_run(&c);
    float got[40];
    kt_get(dev, &bo, got, sizeof got);
    for (int i = 0; i < 40; i++) assert_true(got[i] == 0.0f);
    vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bs), vkpt_buf_free(dev, &bo);
    vkpt_cmd_free(&c);
}

/* Bad arguments are refused before anything is recorded. */
static void pool_refuses_views_that_do_not_fit(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_buf bxb = kt_buf(dev, NULL, 64), bsb = kt_buf(dev, NULL, 16), bo = kt_buf(dev, NULL, 64);
    /* allocations round up to 256 bytes: exact-size views */
    vkpt_buf bs = vkpt_buf_view(&bsb, 0, 16), bx = vkpt_buf_view(&bxb, 0, 64);
    vkpt_rows vx = vkpt_rows_of(&bx, 0, 16), vo = vkpt_rows_of(&bo, 0, 16);
    kt_begin(&c);
    /* 2 records need 32 bytes of seqs */
    assert_int_equal(vkpt_k_pool(&c, &vx, 16, &bs, 2, &vo), VKPT_EINVAL);
    /* rows of 17 do not fit a 16-element x */
    assert_int_equal(vkpt_k_pool(&c, &vx, 17, &bs, 1, &vo), VKPT_EINVAL);
    assert_int_equal(vkpt_k_pool(&c, &vx, 0, &bs, 1, &vo), VKPT_EINVAL);
    kt_run(&c);
    vkpt_pool_seq bad = {0, 0, VKPT_POOL_KIND_CLS, 4};
    float xx[4] = {0}, oo[4];
    assert_int_equal(vkpt_ref_pool(xx, 4, 4, &bad, 1, oo, 4), VKPT_EINVAL);
    vkpt_buf_free(dev, &bxb), vkpt_buf_free(dev, &bsb), vkpt_buf_free(dev, &bo);
    vkpt_cmd_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(pool_matches_reference_for_every_mode_and_length,
                                  vkpt_test_check_validation),
        cmocka_unit_test_teardown(pool_normalize_of_zero_is_zero, vkpt_test_check_validation),
        cmocka_unit_test_teardown(pool_refuses_views_that_do_not_fit, vkpt_test_check_validation),
    };
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
