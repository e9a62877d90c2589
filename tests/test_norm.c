/* engine/kernels/k_norm: RMSNorm, LayerNorm and the per-head RMSNorm against
 * the double-precision references, through both the subgroup and the
 * portable shared-memory reductions, at sizes that are not multiples of the
 * workgroup or subgroup size. */
#include "kernel_util.h"
#include "k_norm.h"

#include <stdio.h>

static const uint32_t sizes[] = {1, 7, 33, 257, 1000, 4097};

/* Run f with the subgroup variants on (when the device has them) and off:
 * the launchers choose from caps, so clearing the bit forces the portable
 * shared-memory path. */
static void both_paths(void **state, void (*f)(void **state, bool sub))
{
    vkpt_device *dev = vkpt_test_dev(state);
    bool had = dev->caps.subgroup_arith;
    if (had) f(state, true);
    dev->caps.subgroup_arith = false;
    f(state, false);
    dev->caps.subgroup_arith = had;
}

/* Bound: relative 1e-5 of (1 + |ref|). The f32 sum of n squares and the
 * mean carry about log2(n) roundings in tree order (<= 2^-24 * 13 here),
 * inversesqrt is 2 ulp in Vulkan, the products 2 roundings: ~1e-6; 1e-5
 * leaves room for drivers' reduction order without hiding a wrong term
 * (one missing element of n = 4097 already moves the result by ~1e-4). */
static const double NORM_REL = 1e-5;

static void rms_case(void **state, bool sub)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 11 + sub);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (int with_w = 0; with_w < 2; with_w++) {
            uint32_t n = sizes[si], rows = 5;
            float *x = kt_randf(&r, (size_t)rows * n, -3, 3);
            float *w = kt_randf(&r, n, 0.5f, 1.5f);
            float *got = malloc((size_t)rows * n * 4), *want = malloc((size_t)rows * n * 4);
            vkpt_buf bx = kt_buf(dev, x, (size_t)rows * n * 4), bw = kt_buf(dev, w, n * 4);
            vkpt_buf by = kt_buf(dev, NULL, (size_t)rows * n * 4);
            vkpt_rows vx = vkpt_rows_of(&bx, 0, n), vy = vkpt_rows_of(&by, 0, n);
            kt_begin(&c);
            assert_int_equal(vkpt_k_rmsnorm(&c, &vx, &vy, with_w ? &bw : NULL, n, 1, rows, 1e-5f),
                             0);
            kt_run(&c);
            kt_get(dev, &by, got, (size_t)rows * n * 4);
            vkpt_ref_rmsnorm(x, n, want, n, with_w ? w : NULL, n, 1, rows, 1e-5f);
            size_t at = 0;
            double e = kt_err_ratio(got, want, (size_t)rows * n, NORM_REL, NORM_REL, &at);
            if (e > 1)
                fail_msg("rmsnorm n=%u w=%d sub=%d: [%zu] got %g want %g", n, with_w, sub, at,
                         got[at], want[at]);
            vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bw), vkpt_buf_free(dev, &by);
            free(x), free(w), free(got), free(want);
        }
    vkpt_cmd_free(&c);
}

static void norm_rms_matches_reference_at_odd_sizes(void **state)
{
    both_paths(state, rms_case);
}

static void layer_case(void **state, bool sub)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 21 + sub);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (int mode = 0; mode < 3; mode++) { /* no affine, weight only, weight + bias */
            uint32_t n = sizes[si], rows = 3;
            /* an offset mean, so a one-pass variance would lose digits */
            float *x = kt_randf(&r, (size_t)rows * n, 9, 11);
            float *w = kt_randf(&r, n, 0.5f, 1.5f), *b = kt_randf(&r, n, -1, 1);
            float *got = malloc((size_t)rows * n * 4), *want = malloc((size_t)rows * n * 4);
            vkpt_buf bx = kt_buf(dev, x, (size_t)rows * n * 4), bw = kt_buf(dev, w, n * 4);
            vkpt_buf bb = kt_buf(dev, b, n * 4), by = kt_buf(dev, NULL, (size_t)rows * n * 4);
            vkpt_rows vx = vkpt_rows_of(&bx, 0, n), vy = vkpt_rows_of(&by, 0, n);
            kt_begin(&c);
            assert_int_equal(vkpt_k_layernorm(&c, &vx, &vy, mode ? &bw : NULL,
                                              mode == 2 ? &bb : NULL, n, rows, 1e-5f),
                             0);
            kt_run(&c);
            kt_get(dev, &by, got, (size_t)rows * n * 4);
            vkpt_ref_layernorm(x, n, want, n, mode ? w : NULL, mode == 2 ? b : NULL, n, rows,
                               1e-5f);
            /* x - mean loses the digits of the offset: ~10 * 2^-24 / std(0.58) ~ 1e-6 more */
            size_t at = 0;
            double e = kt_err_ratio(got, want, (size_t)rows * n, 2 * NORM_REL, 2 * NORM_REL, &at);
            if (e > 1)
                fail_msg("layernorm n=%u mode=%d sub=%d: [%zu] got %g want %g", n, mode, sub, at,
                         got[at], want[at]);
            vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bw), vkpt_buf_free(dev, &bb);
            vkpt_buf_free(dev, &by);
            free(x), free(w), free(b), free(got), free(want);
        }
    vkpt_cmd_free(&c);
}

static void norm_layer_with_and_without_affine(void **state)
{
    both_paths(state, layer_case);
}

/* Qwen3's q norm in place on the q part of a fused qkv buffer: each head
 * slice normalized alone with the shared weight; k and v untouched. */
static void head_case(void **state, bool sub)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 31 + sub);
    static const uint32_t dims[] = {8, 16, 128};
    for (size_t di = 0; di < 3; di++) {
        uint32_t hd = dims[di], nh = 5, nkv = 1, rows = 7;
        uint32_t stride = (nh + 2 * nkv) * hd;
        size_t total = (size_t)rows * stride;
        float *x = kt_randf(&r, total, -2, 2), *w = kt_randf(&r, hd, 0.5f, 1.5f);
        float *got = malloc(total * 4), *want = malloc(total * 4);
        memcpy(want, x, total * 4);
        vkpt_buf bx = kt_buf(dev, x, total * 4), bw = kt_buf(dev, w, hd * 4);
        /* k part: offset nh*hd; normalize q (offset 0) and k in place */
        vkpt_rows vq = vkpt_rows_of(&bx, 0, stride), vk = vkpt_rows_of(&bx, nh * hd, stride);
        kt_begin(&c);
        assert_int_equal(vkpt_k_rmsnorm(&c, &vq, &vq, &bw, hd, nh, rows, 1e-6f), 0);
        assert_int_equal(vkpt_k_rmsnorm(&c, &vk, &vk, &bw, hd, nkv, rows, 1e-6f), 0);
        kt_run(&c);
        kt_get(dev, &bx, got, total * 4);
        vkpt_ref_rmsnorm(x, stride, want, stride, w, hd, nh, rows, 1e-6f);
        vkpt_ref_rmsnorm(x + nh * hd, stride, want + nh * hd, stride, w, hd, nkv, rows, 1e-6f);
        for (uint32_t t = 0; t < rows; t++) /* v: bit-identical */
            assert_memory_equal(got + t * stride + (nh + nkv) * hd,
                                x + t * stride + (nh + nkv) * hd, nkv * hd * 4);
        size_t at = 0;
        double e = kt_err_ratio(got, want, total, NORM_REL, NORM_REL, &at);
        if (e > 1)
            fail_msg("head norm hd=%u sub=%d: [%zu] got %g want %g", hd, sub, at, got[at],
                     want[at]);
        vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bw);
        free(x), free(w), free(got), free(want);
    }
    vkpt_cmd_free(&c);
}

static void norm_per_head_in_place_on_fused_qkv(void **state)
{
    both_paths(state, head_case);
}

static void norm_rejects_views_that_do_not_fit(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    /* 256 floats: a size the allocator does not round up */
    vkpt_buf b = kt_buf(dev, NULL, 256 * 4);
    assert_int_equal(b.size, 256 * 4);
    vkpt_rows v = vkpt_rows_of(&b, 0, 16);
    kt_begin(&c);
    assert_int_equal(vkpt_k_rmsnorm(&c, &v, &v, NULL, 16, 1, 17, 1e-5f), VKPT_EINVAL);
    assert_int_equal(vkpt_k_rmsnorm(&c, &v, &v, NULL, 8, 3, 16, 1e-5f), VKPT_EINVAL);
    assert_int_equal(vkpt_k_rmsnorm(&c, &v, &v, &b, 300, 1, 1, 1e-5f), VKPT_EINVAL);
    assert_int_equal(vkpt_k_layernorm(&c, &v, &v, NULL, NULL, 0, 1, 1e-5f), VKPT_EINVAL);
    assert_int_equal(vkpt_k_rmsnorm(&c, &v, &v, NULL, 16, 1, 16, -1.0f), VKPT_EINVAL);
    assert_int_equal(vkpt_k_rmsnorm(&c, &v, &v, NULL, 16, 1, 16, 1e-5f), 0);
    kt_run(&c);
    vkpt_buf_free(dev, &b);
    vkpt_cmd_free(&c);
}

#define T(fn) cmocka_unit_test_teardown(fn, vkpt_test_check_validation)
int main(void)
{
    const struct CMUnitTest tests[] = {
        T(norm_rms_matches_reference_at_odd_sizes),
        T(norm_layer_with_and_without_affine),
        T(norm_per_head_in_place_on_fused_qkv),
        T(norm_rejects_views_that_do_not_fit),
    };
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
