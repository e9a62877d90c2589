/* engine/kernels/k_rope: inverse-frequency tables of every scaling type
 * against the formulas evaluated in double, and the kernel (interleaved and
 * neox layouts, partial rotary, fused-buffer views, YaRN's cos/sin scale)
 * against the reference. */
#include "kernel_util.h"
#include "k_rope.h"

#include <stdio.h>

#define PI 3.14159265358979323846

/* Table bound: relative 2e-6. The tables are f32 computations of a few
 * steps (powf, a reciprocal, a scale or a blend), each within 1 ulp
 * (6e-8): worst about 8 ulp = 5e-7; 2e-6 still catches any wrong term
 * (a wrong exponent, factor or ramp end moves values by >= 1e-3). */
static const double FREQ_REL = 2e-6;

static double plain_d(double theta, uint32_t dim, uint32_t k)
{
    return pow(theta, -(double)(2 * k) / dim);
}

static void check_table(const char *what, const float *got, const double *want, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++)
        if (fabs(got[k] - want[k]) > FREQ_REL * fabs(want[k]))
            fail_msg("%s: inv_freq[%u] = %.9g, formula %.9g", what, k, got[k], want[k]);
}

static void rope_freq_tables_match_the_formulas_in_double(void **state)
{
    (void)state;
    float inv[512], ms;
    double want[512];
    static const uint32_t dims[] = {8, 16, 32, 64, 80, 128, 256};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        uint32_t d = dims[di];
        /* plain and linear */
        vkpt_rope_cfg cfg = {.scaling = VKPT_ROPE_PLAIN, .rot_dim = d, .theta = 10000};
        assert_int_equal(vkpt_rope_freqs(&cfg, inv, &ms), 0);
        assert_true(ms == 1.0f);
        for (uint32_t k = 0; k < d / 2; k++) want[k] = plain_d(10000, d, k);
        check_table("plain", inv, want, d / 2);
        assert_true(inv[0] == 1.0f);
        cfg = (vkpt_rope_cfg){.scaling = VKPT_ROPE_LINEAR, .rot_dim = d, .theta = 1e6, .factor = 4};
        assert_int_equal(vkpt_rope_freqs(&cfg, inv, &ms), 0);
        for (uint32_t k = 0; k < d / 2; k++) want[k] = plain_d(1e6, d, k) / 4;
        check_table("linear", inv, want, d / 2);

        /* llama3 (Llama 3.1's numbers) */
        cfg = (vkpt_rope_cfg){.scaling = VKPT_ROPE_LLAMA3,
                              .rot_dim = d,
                              .theta = 500000,
                              .factor = 8,
                              .low_freq_factor = 1,
                              .high_freq_factor = 4,
                              .orig_ctx = 8192};
        assert_int_equal(vkpt_rope_freqs(&cfg, inv, &ms), 0);
        int n_hi = 0, n_mid = 0, n_lo = 0;
        for (uint32_t k = 0; k < d / 2; k++) {
            double f = plain_d(500000, d, k), wl = 2 * PI / f;
            if (wl < 8192.0 / 4) {
                want[k] = f, n_hi++;
            } else if (wl > 8192.0 / 1) {
                want[k] = f / 8, n_lo++;
            } else {
                double s = (8192.0 / wl - 1) / (4 - 1);
                want[k] = (1 - s) * f / 8 + s * f, n_mid++;
            }
        }
        check_table("llama3", inv, want, d / 2);
        if (d >= 64) assert_true(n_hi > 0 && n_mid > 0 && n_lo > 0); /* all three regimes */

        /* yarn, default attention factor; truncated and not */
        for (int trunc = 0; trunc < 2; trunc++) {
            cfg = (vkpt_rope_cfg){.scaling = VKPT_ROPE_YARN,
                                  .rot_dim = d,
                                  .theta = 10000,
                                  .factor = 4,
                                  .orig_ctx = 4096,
                                  .no_truncate = trunc == 1};
            assert_int_equal(vkpt_rope_freqs(&cfg, inv, &ms), 0);
            double lo = d * log(4096 / (32 * 2 * PI)) / (2 * log(10000.0));
            double hi = d * log(4096 / (1 * 2 * PI)) / (2 * log(10000.0));
            if (!trunc) lo = floor(lo), hi = ceil(hi);
            lo = lo < 0 ? 0 : lo;
            hi = hi > d - 1 ? d - 1 : hi;
            if (lo == hi) hi += 0.001;
            for (uint32_t k = 0; k < d / 2; k++) {
                double ramp = (k - lo) / (hi - lo);
                ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
                double f = plain_d(10000, d, k);
                /* ramp 0: extrapolate (unchanged), ramp 1: interpolate (f / factor) */
                want[k] = f / 4 * ramp + f * (1 - ramp);
            }
            check_table(trunc ? "yarn (no truncate)" : "yarn", inv, want, d / 2);
            assert_true(fabs(ms - (0.1 * log(4.0) + 1.0)) < 1e-7);
        }
    }
    /* yarn's attention factor from DeepSeek's mscale pair, and given outright */
    vkpt_rope_cfg y = {.scaling = VKPT_ROPE_YARN,
                       .rot_dim = 64,
                       .theta = 10000,
                       .factor = 40,
                       .orig_ctx = 4096,
                       .mscale = 1.0,
                       .mscale_all_dim = 0.707};
    assert_int_equal(vkpt_rope_freqs(&y, inv, &ms), 0);
    double m1 = 0.1 * 1.0 * log(40.0) + 1, m2 = 0.1 * 0.707 * log(40.0) + 1;
    assert_true(fabs(ms - m1 / m2) < 1e-6);
    y.attn_factor = 1.25;
    assert_int_equal(vkpt_rope_freqs(&y, inv, &ms), 0);
    assert_true(ms == 1.25f);
    /* bad configurations are refused with a message */
    vkpt_rope_cfg bad = {.scaling = VKPT_ROPE_PLAIN, .rot_dim = 7, .theta = 10000};
    assert_int_equal(vkpt_rope_freqs(&bad, inv, &ms), VKPT_EINVAL);
    bad = (vkpt_rope_cfg){.scaling = VKPT_ROPE_LLAMA3,
                          .rot_dim = 64,
                          .theta = 5e5,
                          .factor = 8,
                          .low_freq_factor = 4,
                          .high_freq_factor = 1,
                          .orig_ctx = 8192};
    assert_int_equal(vkpt_rope_freqs(&bad, inv, &ms), VKPT_EINVAL);
    bad = (vkpt_rope_cfg){.scaling = VKPT_ROPE_YARN, .rot_dim = 64, .theta = 1e4, .factor = 4};
    assert_int_equal(vkpt_rope_freqs(&bad, inv, &ms), VKPT_EINVAL);
    bad = (vkpt_rope_cfg){.scaling = 99, .rot_dim = 64, .theta = 1e4, .factor = 4};
    assert_int_equal(vkpt_rope_freqs(&bad, inv, &ms), VKPT_EINVAL);
}

/* Kernel bound: |got - ref| <= 2e-6 * (|x0| + |x1|) + 1e-7 per rotated
 * element. The angle is the same f32 product on both sides; the shader's
 * cos/sin are within ~2 ulp of exact (its range reduction loses < 1 ulp of
 * a reduced angle < pi/4, the polynomials ~1 ulp) and the rotation adds 2
 * roundings: ~5e-7 relative. A wrong pair, position or frequency is off by
 * O(1). Positions reach 10^6, where a driver's sin/cos is often off by
 * 1e-4 and more. */
static void rope_case(vkpt_device *dev, vkpt_cmd *c, vkpt_test_rng *r, uint32_t n_rows,
                      uint32_t n_heads, uint32_t head_dim, uint32_t rot_dim, int layout,
                      float mscale, uint32_t extra)
{
    /* the rows live in a fused buffer: `extra` other values after each row */
    uint32_t stride = n_heads * head_dim + extra;
    size_t total = (size_t)n_rows * stride;
    float *x = kt_randf(r, total, -2, 2), *got = malloc(total * 4), *want = malloc(total * 4);
    uint32_t *pos = malloc(n_rows * 4);
    for (uint32_t t = 0; t < n_rows; t++)
        pos[t] = t % 3 == 0 ? t : (uint32_t)(vkpt_test_rng_u64(r) % (t % 3 == 1 ? 4096 : 1000000));
    float inv[128], ms;
    vkpt_rope_cfg cfg = {.scaling = VKPT_ROPE_PLAIN, .rot_dim = rot_dim, .theta = 10000};
    assert_int_equal(vkpt_rope_freqs(&cfg, inv, &ms), 0);
    vkpt_buf bx = kt_buf(dev, x, total * 4), bp = kt_buf(dev, pos, n_rows * 4);
    vkpt_buf bf = kt_buf(dev, inv, rot_dim / 2 * 4);
    vkpt_rows v = vkpt_rows_of(&bx, 0, stride);
    kt_begin(c);
    assert_int_equal(
        vkpt_k_rope(c, &v, &bp, &bf, n_rows, n_heads, head_dim, rot_dim, layout, mscale), 0);
    kt_run(c);
    kt_get(dev, &bx, got, total * 4);
    memcpy(want, x, total * 4);
    vkpt_ref_rope(want, stride, pos, inv, n_rows, n_heads, head_dim, rot_dim, layout, mscale);
    for (size_t i = 0; i < total; i++) {
        uint32_t t = (uint32_t)(i / stride), j = (uint32_t)(i % stride);
        uint32_t h = j / head_dim, dd = j % head_dim;
        if (j >= n_heads * head_dim || dd >= rot_dim) { /* untouched: bit for bit */
            if (memcmp(&got[i], &x[i], 4))
                fail_msg("rope: element %u of row %u changed (%g -> %g)", j, t, x[i], got[i]);
            continue;
        }
        uint32_t half = rot_dim / 2;
        uint32_t k = layout == VKPT_ROPE_NEOX ? dd % half : dd / 2;
        uint32_t i0 = layout == VKPT_ROPE_NEOX ? k : 2 * k;
        uint32_t i1 = layout == VKPT_ROPE_NEOX ? k + half : 2 * k + 1;
        const float *xh = x + (size_t)t * stride + (size_t)h * head_dim;
        double tol = 2e-6 * mscale * (fabs(xh[i0]) + fabs(xh[i1])) + 1e-7;
        if (fabs((double)got[i] - want[i]) > tol)
            fail_msg("rope d=%u rot=%u layout=%d: row %u (pos %u) head %u dim %u: got %.8g want "
                     "%.8g",
                     head_dim, rot_dim, layout, t, pos[t], h, dd, got[i], want[i]);
    }
    vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bp), vkpt_buf_free(dev, &bf);
    free(x), free(got), free(want), free(pos);
}

static void rope_matches_reference_in_both_layouts(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 5);
    for (int layout = 0; layout < 2; layout++) {
        rope_case(dev, &c, &r, 7, 3, 8, 8, layout, 1.0f, 0); /* stories260K */
        rope_case(dev, &c, &r, 33, 4, 64, 64, layout, 1.0f, 0);
        rope_case(dev, &c, &r, 5, 2, 128, 128, layout, 1.0f, 3 * 128); /* q in a fused qkv row */
        rope_case(dev, &c, &r, 9, 5, 80, 32, layout, 1.0f, 0);         /* partial rotary (phi-2) */
        rope_case(dev, &c, &r, 4, 2, 256, 64, layout, 1.0f, 7);        /* partial, odd stride */
        rope_case(dev, &c, &r, 6, 3, 64, 64, layout, 1.1386f, 0);      /* YaRN's cos/sin scale */
    }
    vkpt_cmd_free(&c);
}

static void rope_rejects_bad_shapes(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_buf b = kt_buf(dev, NULL, 1024 * 4);
    vkpt_rows v = vkpt_rows_of(&b, 0, 64);
    kt_begin(&c);
    assert_int_equal(vkpt_k_rope(&c, &v, &b, &b, 4, 1, 64, 65, 0, 1), VKPT_EINVAL);
    assert_int_equal(vkpt_k_rope(&c, &v, &b, &b, 4, 1, 64, 7, 0, 1), VKPT_EINVAL);
    assert_int_equal(vkpt_k_rope(&c, &v, &b, &b, 4, 1, 64, 64, 2, 1), VKPT_EINVAL);
    assert_int_equal(vkpt_k_rope(&c, &v, &b, &b, 17, 1, 64, 64, 0, 1), VKPT_EINVAL);
    kt_run(&c);
    vkpt_buf_free(dev, &b);
    vkpt_cmd_free(&c);
}

#define T(fn) cmocka_unit_test_teardown(fn, vkpt_test_check_validation)
int main(void)
{
    const struct CMUnitTest tests[] = {
        T(rope_freq_tables_match_the_formulas_in_double),
        T(rope_matches_reference_in_both_layouts),
        T(rope_rejects_bad_shapes),
    };
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
