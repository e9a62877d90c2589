/* engine/kernels/quant.c: the reference dequantizers against blocks built by
 * hand from the GGUF layouts, and quantize -> dequantize round trips of every
 * weight format with an error bound typical of that format. CPU only. */
#include "vk_fixture.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void deq(uint32_t type, const uint8_t *blk, float *out, size_t n)
{
    assert_int_equal(vkpt_dequantize_row(type, blk, out, n), 0);
}

/* Each expected value below is worked out from the format description, not
 * from the code under test. */
static void quant_dequantizes_hand_built_legacy_blocks(void **state)
{
    (void)state;
    uint8_t b[64];
    float y[32];

    /* Q4_0: d = 0.5; x_j = (low nibble of qs[j] - 8) d, x_{j+16} high nibble */
    memset(b, 0x88, sizeof b); /* every nibble 8: value 0 */
    put16(b, 0x3800);
    b[2 + 0] = 0xF3;
    b[2 + 15] = 0x80;
    deq(VKPT_Q_Q4_0, b, y, 32);
    assert_true(y[0] == -2.5f && y[16] == 3.5f && y[15] == -4.0f && y[31] == 0.0f);
    assert_true(y[1] == 0.0f && y[17] == 0.0f);

    /* Q4_1: d = 2, m = -1: x = q d + m */
    memset(b, 0, sizeof b);
    put16(b, 0x4000);
    put16(b + 2, 0xBC00);
    b[4 + 1] = 0x5A;
    deq(VKPT_Q_Q4_1, b, y, 32);
    assert_true(y[1] == 19.0f && y[17] == 9.0f && y[0] == -1.0f);

    /* Q5_0: d = 0.25, qh bit j is bit 4 of element j: x = (q - 16) d */
    memset(b, 0, sizeof b);
    put16(b, 0x3400);
    uint32_t qh = (1u << 3) | (1u << 20);
    memcpy(b + 2, &qh, 4);
    b[6 + 3] = 0x21;
    deq(VKPT_Q_Q5_0, b, y, 32);
    assert_true(y[3] == 0.25f && y[19] == -3.5f && y[20] == 0.0f && y[4] == -4.0f);

    /* Q5_1: d = 1, m = 0.5, element 31 = high nibble of qs[15] | qh bit 31 */
    memset(b, 0, sizeof b);
    put16(b, 0x3C00);
    put16(b + 2, 0x3800);
    qh = 1u << 31;
    memcpy(b + 4, &qh, 4);
    b[8 + 15] = 0xF0;
    deq(VKPT_Q_Q5_1, b, y, 32);
    assert_true(y[31] == 31.5f && y[15] == 0.5f && y[30] == 0.5f);

    /* Q8_0: d = 0.125, signed bytes */
    memset(b, 0, sizeof b);
    put16(b, 0x3000);
    b[2 + 5] = 0xF9; /* -7 */
    b[2 + 31] = 127;
    deq(VKPT_Q_Q8_0, b, y, 32);
    assert_true(y[5] == -0.875f && y[31] == 15.875f && y[0] == 0.0f);

    /* Q8_1: d = 0.5, s unused by dequantization, bytes after 4 header bytes */
    memset(b, 0, sizeof b);
    put16(b, 0x3800);
    put16(b + 2, 0x7BFF);
    b[4 + 2] = 0x80; /* -128 */
    deq(VKPT_Q_Q8_1, b, y, 32);
    assert_true(y[2] == -64.0f && y[3] == 0.0f);
}

static void quant_dequantizes_hand_built_k_blocks(void **state)
{
    (void)state;
    uint8_t b[256];
    float y[256];

    /* Q4_K: d = 1, dmin = 0.5. Sub-block 0: sc 3, m 2 (bytes 0 and 4, low
     * 6 bits). Sub-block 1: sc 1 (byte 1), m 0 (byte 5). Sub-block 5: sc 37
     * = 0b10_0101: low nibble 5 in byte 9's low nibble, top bits 0b10 in
     * byte 1's bits 6-7; m 28 = 0b01_1100: high nibble of byte 9 = 0xC, top
     * bits 0b01 in byte 5's bits 6-7. x = d sc q - dmin m. Elements 0..31
     * are qs[0..31] low nibbles, 32..63 their high nibbles, 160+l the high
     * nibble of qs[64 + l]. */
    memset(b, 0, sizeof b);
    put16(b, 0x3C00);
    put16(b + 2, 0x3800);
    uint8_t *sc = b + 4, *qs = b + 16;
    sc[0] = 3;
    sc[4] = 2;
    sc[1] = 0x80 | 1;
    sc[5] = 0x40 | 0;
    sc[9] = 0xC5;
    qs[0] = 0x47;
    qs[64 + 4] = 0x90;
    deq(VKPT_Q_Q4_K, b, y, 256);
    assert_true(y[0] == 20.0f);      /* 3 * 7 - 0.5 * 2 */
    assert_true(y[1] == -1.0f);      /* 3 * 0 - 1 */
    assert_true(y[32] == 4.0f);      /* 1 * 4 - 0 */
    assert_true(y[164] == 319.0f);   /* 37 * 9 - 0.5 * 28 */
    assert_true(y[165] == -14.0f);   /* 37 * 0 - 14 */
    assert_true(y[128 + 4] == 0.0f); /* sub-block 4: sc = m = 0 */

    /* Q5_K: d = 1, dmin = 0.25; sub-block 3 (second half of 64-group 1):
     * sc 10 (byte 3), m 8 (byte 7); element 96 + l = high nibble of
     * qs[32 + l] plus bit 3 of qh[l] as bit 4. */
    memset(b, 0, sizeof b);
    put16(b, 0x3C00);
    put16(b + 2, 0x3400);
    b[4 + 3] = 10;
    b[4 + 7] = 8;
    b[16 + 2] = 0x08;      /* qh[2] */
    b[48 + 32 + 2] = 0x60; /* qs[34] */
    deq(VKPT_Q_Q5_K, b, y, 256);
    assert_true(y[98] == 218.0f); /* 10 * (6 + 16) - 0.25 * 8 */
    assert_true(y[99] == -2.0f);
    assert_true(y[66] == 0.0f); /* sub-block 2: sc = m = 0 */

    /* Q6_K: d = 0.5 (bytes 208-209), int8 scales at 192. Element
     * 128 h + 32 s + l: ql[64 h + l + 32 (s & 1)] low (s < 2) or high
     * nibble, qh[32 h + l] bits 2s..2s+1 on top, scale[8 h + l / 16 + 2 s];
     * x = d * scale * (q - 32). */
    memset(b, 0, sizeof b);
    put16(b + 208, 0x3800);
    int8_t *s6 = (int8_t *)(b + 192);
    s6[0] = 2;
    s6[14] = -3;
    b[64 + 32 + 5] = 0xA0;  /* ql[101]: high nibble 10 */
    b[128 + 32 + 5] = 0x80; /* qh[37]: bits 6-7 = 2 */
    deq(VKPT_Q_Q6_K, b, y, 256);
    assert_true(y[229] == -15.0f); /* 0.5 * -3 * (10 + 32 - 32) */
    assert_true(y[0] == -32.0f);   /* 0.5 * 2 * (0 - 32) */
    assert_true(y[230] == 48.0f);  /* 0.5 * -3 * (0 - 32) */
}

static void quant_dequantizes_plain_types(void **state)
{
    (void)state;
    uint8_t b[16];
    float y[4];
    put16(b, 0x3C00);
    put16(b + 2, 0xC000);
    put16(b + 4, 0x0001); /* smallest f16 subnormal */
    put16(b + 6, 0x7BFF); /* largest f16 */
    deq(VKPT_Q_F16, b, y, 4);
    assert_true(y[0] == 1.0f && y[1] == -2.0f && y[2] == ldexpf(1, -24) && y[3] == 65504.0f);
    put16(b, 0x3F80);
    put16(b + 2, 0xC0A0);
    deq(VKPT_Q_BF16, b, y, 2);
    assert_true(y[0] == 1.0f && y[1] == -5.0f);
    float f[3] = {1.5f, -0.0f, 3e38f};
    deq(VKPT_Q_F32, (const uint8_t *)f, y, 3);
    assert_memory_equal(f, y, sizeof f);
}

static void quant_rejects_bad_arguments(void **state)
{
    (void)state;
    float x[64] = {0};
    uint8_t q[512];
    assert_int_equal(vkpt_quantize_row(VKPT_Q_Q4_0, x, q, 33), VKPT_EINVAL);
    assert_int_equal(vkpt_dequantize_row(VKPT_Q_Q4_K, q, x, 64), VKPT_EINVAL);
    assert_int_equal(vkpt_quantize_row(VKPT_Q_Q2_K, x, q, 256), VKPT_EUNSUPPORTED);
    assert_int_equal(vkpt_dequantize_row(999, q, x, 32), VKPT_EUNSUPPORTED);
    assert_int_equal(vkpt_dequantize_row(VKPT_Q_Q8_0, NULL, x, 32), VKPT_EINVAL);
    assert_int_equal(vkpt_quantize_row(VKPT_Q_Q8_0, x, q, 0), 0);
}

/* Gaussian weights with a few outliers, like trained matrices. */
static void fill_weights(vkpt_test_rng *r, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = 0.02f * vkpt_test_rng_normal(r);
        if (vkpt_test_rng_u64(r) % 500 == 0) x[i] *= 8;
    }
}

static double round_trip_nmse(uint32_t type, const float *x, size_t n)
{
    uint8_t *q = malloc(vkpt_qtype_row_bytes(type, n));
    float *y = malloc(n * sizeof *y);
    assert_int_equal(vkpt_quantize_row(type, x, q, n), 0);
    assert_int_equal(vkpt_dequantize_row(type, q, y, n), 0);
    double e = vkpt_test_nmse(y, x, n);
    free(q);
    free(y);
    return e;
}

/* Normalized MSE, sum (x' - x)^2 / sum x^2, of a round trip over 16k
 * Gaussian weights with 0.2% outliers at 8x. A uniform quantizer with step
 * D adds error variance D^2/12, and the step is roughly the block's range
 * over its levels: 8-bit types land near 1e-4..1e-5, 6-bit near 4e-4,
 * 5-bit near 1.5e-3..3e-3, 4-bit near 6e-3..1e-2 (symmetric types use one
 * level less, so their error is the larger). Each bound is the value this
 * data gives (in parentheses) plus ~30%: a quantizer that stops searching
 * scales or packs a bit wrongly moves far past it. The ordering asserts
 * that the K-quants' scale/min search beats round-to-nearest at equal bits
 * per weight. */
static void quant_round_trip_error_is_typical_of_each_format(void **state)
{
    (void)state;
    enum { N = 256 * 64 };
    float *x = malloc(N * sizeof *x);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 11);
    fill_weights(&r, x, N);
    static const struct {
        uint32_t type;
        double bound;
    } cases[] = {
        {VKPT_Q_F32, 0},        {VKPT_Q_F16, 6e-8}, /* 11-bit significand (4.4e-8) */
        {VKPT_Q_BF16, 3.6e-6},                      /* 8-bit significand (2.7e-6) */
        {VKPT_Q_Q8_0, 5.7e-5},                      /* (4.4e-5) */
        {VKPT_Q_Q6_K, 5e-4},                        /* (3.9e-4) */
        {VKPT_Q_Q5_0, 3.7e-3},                      /* (2.8e-3) */
        {VKPT_Q_Q5_1, 2.1e-3},                      /* (1.6e-3) */
        {VKPT_Q_Q5_K, 1.8e-3},                      /* (1.4e-3) */
        {VKPT_Q_Q4_0, 1.45e-2},                     /* (1.1e-2) */
        {VKPT_Q_Q4_1, 9e-3},                        /* (7.0e-3) */
        {VKPT_Q_Q4_K, 7.3e-3},                      /* (5.6e-3) */
    };
    double e[VKPT_Q_COUNT] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        e[cases[i].type] = round_trip_nmse(cases[i].type, x, N);
        fprintf(stderr, "# %-5s nmse %.3g (bound %.3g)\n", vkpt_qtype_get(cases[i].type)->name,
                e[cases[i].type], cases[i].bound);
        assert_true(e[cases[i].type] <= cases[i].bound);
    }
    assert_true(e[VKPT_Q_F32] == 0);
    /* more bits, less error; K-quants beat the legacy types of equal size */
    assert_true(e[VKPT_Q_Q8_0] < e[VKPT_Q_Q6_K] && e[VKPT_Q_Q6_K] < e[VKPT_Q_Q5_K]);
    assert_true(e[VKPT_Q_Q5_K] < e[VKPT_Q_Q4_K]);
    assert_true(e[VKPT_Q_Q4_K] < e[VKPT_Q_Q4_0] && e[VKPT_Q_Q4_K] < e[VKPT_Q_Q4_1]);
    assert_true(e[VKPT_Q_Q5_K] < e[VKPT_Q_Q5_0] && e[VKPT_Q_Q5_K] < e[VKPT_Q_Q5_1]);
    free(x);
}

/* Round to nearest: every legacy-format value is within half a step of the
 * input (plus the f16 rounding of the stored scale and min). The symmetric
 * types map the signed extreme to the level -2^(bits-1), so on the other
 * side the top level is one short: there the error may reach a full step. */
static void quant_legacy_formats_round_to_nearest(void **state)
{
    (void)state;
    enum { N = 32 * 40 };
    float x[N], y[N];
    uint8_t q[N * 2];
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 5);
    vkpt_test_fill_f32(&r, x, N, -3, 3);
    static const struct {
        uint32_t type;
        int div; /* step = amax / div (symmetric) or (max - min) / div */
        bool asym;
    } cases[] = {{VKPT_Q_Q8_0, 127, false},
                 {VKPT_Q_Q4_0, 8, false},
                 {VKPT_Q_Q5_0, 16, false},
                 {VKPT_Q_Q4_1, 15, true},
                 {VKPT_Q_Q5_1, 31, true}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        assert_int_equal(vkpt_quantize_row(cases[c].type, x, q, N), 0);
        assert_int_equal(vkpt_dequantize_row(cases[c].type, q, y, N), 0);
        for (int b = 0; b < N / 32; b++) {
            float lo = x[32 * b], hi = x[32 * b];
            for (int j = 0; j < 32; j++) {
                lo = fminf(lo, x[32 * b + j]);
                hi = fmaxf(hi, x[32 * b + j]);
            }
            float amax = fmaxf(-lo, hi);
            float step = (cases[c].asym ? hi - lo : amax) / (float)cases[c].div;
            for (int j = 0; j < 32; j++) {
                float v = x[32 * b + j], err = fabsf(y[32 * b + j] - v);
                bool far_side = !cases[c].asym && fabsf(v) > amax - step &&
                                (v > 0) != (-lo > hi ? false : true);
                float lim = (far_side ? 1.0f : 0.5f) * step * 1.001f + 1e-3f * amax;
                if (err > lim)
                    fail_msg("%s block %d elem %d: %g -> %g (step %g)",
                             vkpt_qtype_get(cases[c].type)->name, b, j, v, y[32 * b + j], step);
            }
        }
    }
}

static void quant_zero_and_constant_blocks_survive(void **state)
{
    (void)state;
    static const uint32_t types[] = {VKPT_Q_Q4_0, VKPT_Q_Q4_1, VKPT_Q_Q5_0, VKPT_Q_Q5_1,
                                     VKPT_Q_Q8_0, VKPT_Q_Q8_1, VKPT_Q_Q4_K, VKPT_Q_Q5_K,
                                     VKPT_Q_Q6_K, VKPT_Q_F16,  VKPT_Q_BF16};
    float x[256], y[256];
    uint8_t q[1024];
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        memset(x, 0, sizeof x);
        assert_int_equal(vkpt_quantize_row(types[t], x, q, 256), 0);
        assert_int_equal(vkpt_dequantize_row(types[t], q, y, 256), 0);
        for (int i = 0; i < 256; i++) assert_true(y[i] == 0.0f); /* no NaN from 0/0 */
        for (int i = 0; i < 256; i++) x[i] = 0.75f;
        assert_int_equal(vkpt_quantize_row(types[t], x, q, 256), 0);
        assert_int_equal(vkpt_dequantize_row(types[t], q, y, 256), 0);
        for (int i = 0; i < 256; i++)
            if (fabsf(y[i] - 0.75f) > 0.75f * 2e-3f)
                fail_msg("%s: constant 0.75 came back as %g", vkpt_qtype_get(types[t])->name, y[i]);
    }
}

static void quant_q8_1_stores_scaled_sum(void **state)
{
    (void)state;
    float x[64];
    uint8_t q[72];
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 9);
    vkpt_test_fill_f32(&r, x, 64, -1, 2);
    assert_int_equal(vkpt_quantize_row(VKPT_Q_Q8_1, x, q, 64), 0);
    for (int b = 0; b < 2; b++) {
        const uint8_t *blk = q + 36 * b;
        float d = vkpt_f16_to_f32((uint16_t)(blk[0] | blk[1] << 8));
        float s = vkpt_f16_to_f32((uint16_t)(blk[2] | blk[3] << 8));
        int sum = 0;
        for (int j = 0; j < 32; j++) sum += (int8_t)blk[4 + j];
        /* s is stored as f16 from the unrounded d */
        assert_true(fabsf(s - d * (float)sum) <= fabsf(s) * 2e-3f);
        assert_true(sum > 0); /* inputs mostly positive */
    }
}

static void quant_f16_bf16_round_to_nearest_even(void **state)
{
    (void)state;
    enum { N = 4096 };
    float x[N], y[N];
    uint8_t q[N * 2];
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 3);
    vkpt_test_fill_f32(&r, x, N, -100, 100);
    assert_int_equal(vkpt_quantize_row(VKPT_Q_F16, x, q, N), 0);
    assert_int_equal(vkpt_dequantize_row(VKPT_Q_F16, q, y, N), 0);
    for (int i = 0; i < N; i++) assert_true(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-11f);
    assert_int_equal(vkpt_quantize_row(VKPT_Q_BF16, x, q, N), 0);
    assert_int_equal(vkpt_dequantize_row(VKPT_Q_BF16, q, y, N), 0);
    for (int i = 0; i < N; i++) assert_true(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-8f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(quant_dequantizes_hand_built_legacy_blocks),
        cmocka_unit_test(quant_dequantizes_hand_built_k_blocks),
        cmocka_unit_test(quant_dequantizes_plain_types),
        cmocka_unit_test(quant_rejects_bad_arguments),
        cmocka_unit_test(quant_round_trip_error_is_typical_of_each_format),
        cmocka_unit_test(quant_legacy_formats_round_to_nearest),
        cmocka_unit_test(quant_zero_and_constant_blocks_survive),
        cmocka_unit_test(quant_q8_1_stores_scaled_sum),
        cmocka_unit_test(quant_f16_bf16_round_to_nearest_even),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
