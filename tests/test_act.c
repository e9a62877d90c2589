/* engine/kernels/k_act: SwiGLU/GeGLU (two buffers and one fused gate|up
 * buffer), plain GELU (tanh and erf forms) and SiLU, scale and clamp,
 * against the double references at odd sizes, including saturating inputs. */
#include "kernel_util.h"
#include "k_act.h"

#include <stdio.h>

static const uint32_t sizes[] = {1, 7, 33, 257, 1000, 4097};
static const char *act_name[] = {"silu", "gelu_tanh", "gelu_erf"};

/* Bound, relative: |got - ref| <= (4e-6 + 1.2e-7 * e) * |ref| + 1e-37 * |up|,
 * e = |argument of the exp| the shader evaluates. Vulkan allows exp
 * 3 + 2|e| ulp (the 1.2e-7 * e term); the erfc fit is 1.2e-7 relative; a
 * division and a few roundings. Relative, so both tails count: a form that
 * cancels (1 + tanh(y) for x << 0) is off by 1e-3 there; a wrong constant
 * (0.044715, sqrt(2/pi), the erf argument scale) by >= 1e-4. The 1e-37
 * floor admits denormals flushed to zero. */
static double exp_arg(int act, double x)
{
    if (act == VKPT_ACT_SILU) return fabs(x);
    if (act == VKPT_ACT_GELU_TANH) return 2 * 0.7978845608 * fabs(x + 0.044715 * x * x * x);
    return x * x / 2;
}

static void check_glu(int act, const float *gate, const float *up, const float *got, size_t n,
                      const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double want = (double)vkpt_ref_act1(act, gate[i]) * up[i];
        double e = exp_arg(act, gate[i]);
        if (e > 88) e = 88; /* beyond, exp over/underflows and the result saturates exactly */
        double tol = (4e-6 + 1.2e-7 * e) * fabs(want) + 1e-37 * fabs(up[i]);
        if (!(fabs(got[i] - want) <= tol))
            fail_msg("%s %s: [%zu] gate %g up %g: got %.9g want %.9g", what, act_name[act], i,
                     gate[i], up[i], got[i], want);
    }
}

/* inputs: mostly [-8, 8], with saturating values sprinkled in */
static float *act_inputs(vkpt_test_rng *r, size_t n)
{
    static const float extreme[] = {-100, -50, -20, 0, -0.0f, 20, 50, 100, 1e-6f, -1e-6f};
    float *x = kt_randf(r, n, -8, 8);
    for (size_t i = 0; i < n; i += 13) x[i] = extreme[(i / 13) % 10];
    return x;
}

static void act_glu_with_separate_and_fused_inputs(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 3);
    for (int act = 0; act < 3; act++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            uint32_t ff = sizes[si], rows = 3;
            size_t n = (size_t)rows * ff;
            /* fused: [rows][2ff], gate first */
            float *gu = act_inputs(&r, 2 * n), *g = malloc(n * 4), *u = malloc(n * 4);
            for (uint32_t t = 0; t < rows; t++) {
                memcpy(g + (size_t)t * ff, gu + (size_t)t * 2 * ff, ff * 4);
                memcpy(u + (size_t)t * ff, gu + (size_t)t * 2 * ff + ff, ff * 4);
            }
            float *got = malloc(n * 4);
            vkpt_buf bgu = kt_buf(dev, gu, 2 * n * 4), bg = kt_buf(dev, g, n * 4);
            vkpt_buf bu = kt_buf(dev, u, n * 4);
            vkpt_buf by1 = kt_buf(dev, NULL, n * 4), by2 = kt_buf(dev, NULL, n * 4);
            vkpt_rows vg, vu, sg = vkpt_rows_of(&bg, 0, ff), su = vkpt_rows_of(&bu, 0, ff);
            vkpt_glu_split(&bgu, ff, &vg, &vu);
            vkpt_rows y1 = vkpt_rows_of(&by1, 0, ff), y2 = vkpt_rows_of(&by2, 0, ff);
            kt_begin(&c);
            assert_int_equal(vkpt_k_glu(&c, act, &vg, &vu, &y1, ff, rows), 0);
            assert_int_equal(vkpt_k_glu(&c, act, &sg, &su, &y2, ff, rows), 0);
            kt_run(&c);
            kt_get(dev, &by1, got, n * 4);
            check_glu(act, g, u, got, n, "fused");
            kt_get(dev, &by2, got, n * 4);
            check_glu(act, g, u, got, n, "separate");
            vkpt_buf_free(dev, &bgu), vkpt_buf_free(dev, &bg), vkpt_buf_free(dev, &bu);
            vkpt_buf_free(dev, &by1), vkpt_buf_free(dev, &by2);
            free(gu), free(g), free(u), free(got);
        }
    vkpt_cmd_free(&c);
}

static void act_plain_activations_in_place(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 4);
    float one[4097];
    for (int i = 0; i < 4097; i++) one[i] = 1.0f;
    for (int act = 0; act < 3; act++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            uint32_t n = sizes[si], rows = 2;
            float *x = act_inputs(&r, (size_t)rows * n), *got = malloc((size_t)rows * n * 4);
            vkpt_buf bx = kt_buf(dev, x, (size_t)rows * n * 4);
            vkpt_rows v = vkpt_rows_of(&bx, 0, n);
            kt_begin(&c);
            assert_int_equal(vkpt_k_act(&c, act, &v, &v, n, rows), 0);
            kt_run(&c);
            kt_get(dev, &bx, got, (size_t)rows * n * 4);
            for (uint32_t t = 0; t < rows; t++)
                check_glu(act, x + (size_t)t * n, one, got + (size_t)t * n, n, "plain");
            vkpt_buf_free(dev, &bx);
            free(x), free(got);
        }
    vkpt_cmd_free(&c);
}

/* scale and clamp are one rounding / no rounding: bit-exact */
static void act_scale_and_clamp_are_exact(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 6);
    uint32_t n = 1000, rows = 3, stride = 1003;
    float *x = kt_randf(&r, (size_t)rows * stride, -20, 20), *got = malloc((size_t)rows * n * 4);
    vkpt_buf bx = kt_buf(dev, x, (size_t)rows * stride * 4);
    vkpt_buf bs = kt_buf(dev, NULL, (size_t)rows * n * 4),
             bc = kt_buf(dev, NULL, (size_t)rows * n * 4);
    vkpt_rows vx = vkpt_rows_of(&bx, 2, stride), vs = vkpt_rows_of(&bs, 0, n),
              vc = vkpt_rows_of(&bc, 0, n);
    kt_begin(&c);
    assert_int_equal(vkpt_k_scale(&c, &vx, &vs, n, rows, 0.125f * 3), 0);
    assert_int_equal(vkpt_k_clamp(&c, &vx, &vc, n, rows, -8.0f, 8.0f), 0);
    assert_int_equal(vkpt_k_clamp(&c, &vx, &vc, n, rows, 8.0f, -8.0f), VKPT_EINVAL);
    kt_run(&c);
    kt_get(dev, &bs, got, (size_t)rows * n * 4);
    for (uint32_t t = 0; t < rows; t++)
        for (uint32_t i = 0; i < n; i++) {
            float want = x[t * stride + 2 + i] * (0.125f * 3);
            if (memcmp(&got[t * n + i], &want, 4))
                fail_msg("scale [%u][%u]: got %g want %g", t, i, got[t * n + i], want);
        }
    kt_get(dev, &bc, got, (size_t)rows * n * 4);
    int clipped = 0;
    for (uint32_t t = 0; t < rows; t++)
        for (uint32_t i = 0; i < n; i++) {
            float v = x[t * stride + 2 + i];
            float want = v < -8 ? -8 : v > 8 ? 8 : v;
            clipped += want != v;
            assert_true(got[t * n + i] == want);
        }
    assert_true(clipped > 100);
    vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bs), vkpt_buf_free(dev, &bc);
    free(x), free(got);
    vkpt_cmd_free(&c);
}

static void act_rejects_bad_arguments(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_buf b = kt_buf(dev, NULL, 256 * 4);
    vkpt_rows v = vkpt_rows_of(&b, 0, 16);
    kt_begin(&c);
    assert_int_equal(vkpt_k_glu(&c, 7, &v, &v, &v, 16, 2), VKPT_EINVAL);
    assert_int_equal(vkpt_k_act(&c, -1, &v, &v, 16, 2), VKPT_EINVAL);
    assert_int_equal(vkpt_k_glu(&c, VKPT_ACT_SILU, &v, &v, &v, 16, 17), VKPT_EINVAL);
    vkpt_rows off = vkpt_rows_of(&b, 250, 16);
    assert_int_equal(vkpt_k_act(&c, VKPT_ACT_SILU, &off, &v, 16, 1), VKPT_EINVAL);
    kt_run(&c);
    vkpt_buf_free(dev, &b);
    vkpt_cmd_free(&c);
}

#define T(fn) cmocka_unit_test_teardown(fn, vkpt_test_check_validation)
int main(void)
{
    const struct CMUnitTest tests[] = {
        T(act_glu_with_separate_and_fused_inputs),
        T(act_plain_activations_in_place),
        T(act_scale_and_clamp_are_exact),
        T(act_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
