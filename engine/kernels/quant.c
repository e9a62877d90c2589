/* Scalar reference (de)quantizers for every weight format vkpt runs.
 *
 * Block layouts are GGUF/ggml's (little-endian, packed, f16 scales):
 *   Q4_0  18 B: d f16 | qs[16]          x = (nibble - 8) * d
 *   Q4_1  20 B: d f16 | m f16 | qs[16]  x = nibble * d + m
 *   Q5_0  22 B: d f16 | qh u32 | qs[16] x = (nibble | bit<<4 - 16) * d
 *   Q5_1  24 B: d f16 | m f16 | qh u32 | qs[16]
 *   Q8_0  34 B: d f16 | qs[32] i8       x = q * d
 *   Q8_1  36 B: d f16 | s f16 (= d * sum q) | qs[32] i8
 *   Legacy nibbles: byte j holds element j (low) and element j + 16 (high);
 *   qh bit j is the fifth bit of element j.
 *   Q4_K 144 B: d f16 | dmin f16 | scales[12] | qs[128]
 *   Q5_K 176 B: d f16 | dmin f16 | scales[12] | qh[32] | qs[128]
 *     eight sub-blocks of 32 with 6-bit scale sc and min m (packed, see
 *     k_scale_min); x = (d * sc) * q - dmin * m. Each 64 elements share 32 qs
 *     bytes: the low nibbles are the first sub-block, the high the second.
 *     Q5_K's fifth bit of element i of 64-group g is bit 2g (low) or 2g+1
 *     (high) of qh[i].
 *   Q6_K 210 B: ql[128] | qh[64] | scales[16] i8 | d f16
 *     sixteen sub-blocks of 16; x = (d * sc) * (q - 32), q 6 bits: per half
 *     of 128, element l (0..31) + 32 s takes ql[l + 32 (s & 1)]'s low
 *     (s < 2) or high nibble and bits 2s..2s+1 of qh[l].
 * Dequantization evaluates exactly these expressions in f32 in this order,
 * so results are bit-identical to ggml's and to the shaders (which mark the
 * same expressions `precise`).
 *
 * Quantization: round to nearest for the legacy formats (scale from the
 * largest magnitude, or from min/max for the _1 types); for the K-quants a
 * least-squares search over candidate scales per sub-block, then the
 * sub-block scales quantized against the super-block scale and the values
 * re-quantized with the scales as stored. */
#include "quant.h"

#include "vkpt/base.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ---- byte access (blocks are only 2-byte aligned, sources may be less) ---- */

static inline uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline float h2f(const uint8_t *p)
{
    return vkpt_f16_to_f32(rd16(p));
}
static inline int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}
/* Round half away from zero (C's lroundf), as an int. */
static inline int rnd(float v)
{
    return (int)lroundf(v);
}

/* 6-bit scale and min of sub-block j (0..7) from Q4_K/Q5_K's 12 scale bytes:
 * bytes 0-3 hold sc 0-3 (low 6 bits), bytes 4-7 m 0-3 (low 6 bits), bytes
 * 8-11 the low nibbles of sc 4-7 and m 4-7 (low/high nibble); the top two
 * bits of bytes 0-7 carry the high bits of sc 4-7 and m 4-7. */
static void k_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void k_scale_min_pack(uint8_t *s, const int sc[8], const int m[8])
{
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] |= (uint8_t)(sc[j] & 63);
            s[j + 4] |= (uint8_t)(m[j] & 63);
        } else {
            s[j + 4] = (uint8_t)((sc[j] & 0xF) | ((m[j] & 0xF) << 4));
            s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s[j] |= (uint8_t)((m[j] >> 4) << 6);
        }
    }
}

/* ---- dequantization ------------------------------------------------------ */

static void deq_q4_0(const uint8_t *b, float *y)
{
    float d = h2f(b);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((b[2 + j] & 0xF) - 8) * d;
        y[j + 16] = (float)((b[2 + j] >> 4) - 8) * d;
    }
}

static void deq_q4_1(const uint8_t *b, float *y)
{
    float d = h2f(b), m = h2f(b + 2);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(b[4 + j] & 0xF) * d + m;
        y[j + 16] = (float)(b[4 + j] >> 4) * d + m;
    }
}

static void deq_q5_0(const uint8_t *b, float *y)
{
    float d = h2f(b);
    uint32_t qh = rd32(b + 2);
    for (int j = 0; j < 16; j++) {
        int lo = (b[6 + j] & 0xF) | (int)(((qh >> j) & 1) << 4);
        int hi = (b[6 + j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = (float)(lo - 16) * d;
        y[j + 16] = (float)(hi - 16) * d;
    }
}

static void deq_q5_1(const uint8_t *b, float *y)
{
    float d = h2f(b), m = h2f(b + 2);
    uint32_t qh = rd32(b + 4);
    for (int j = 0; j < 16; j++) {
        int lo = (b[8 + j] & 0xF) | (int)(((qh >> j) & 1) << 4);
        int hi = (b[8 + j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = (float)lo * d + m;
        y[j + 16] = (float)hi * d + m;
    }
}

static void deq_q8_0(const uint8_t *b, float *y)
{
    float d = h2f(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[2 + j] * d;
}

static void deq_q8_1(const uint8_t *b, float *y)
{
    float d = h2f(b);
    for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)b[4 + j] * d;
}

static void deq_q4_k(const uint8_t *b, float *y)
{
    float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *sc = b + 4, *qs = b + 16;
    for (int g = 0; g < 4; g++) {
        int s0, m0, s1, m1;
        k_scale_min(sc, 2 * g, &s0, &m0);
        k_scale_min(sc, 2 * g + 1, &s1, &m1);
        float d0 = d * (float)s0, o0 = dmin * (float)m0;
        float d1 = d * (float)s1, o1 = dmin * (float)m1;
        for (int l = 0; l < 32; l++) {
            y[64 * g + l] = d0 * (float)(qs[32 * g + l] & 0xF) - o0;
            y[64 * g + 32 + l] = d1 * (float)(qs[32 * g + l] >> 4) - o1;
        }
    }
}

static void deq_q5_k(const uint8_t *b, float *y)
{
    float d = h2f(b), dmin = h2f(b + 2);
    const uint8_t *sc = b + 4, *qh = b + 16, *qs = b + 48;
    for (int g = 0; g < 4; g++) {
        int s0, m0, s1, m1;
        k_scale_min(sc, 2 * g, &s0, &m0);
        k_scale_min(sc, 2 * g + 1, &s1, &m1);
        float d0 = d * (float)s0, o0 = dmin * (float)m0;
        float d1 = d * (float)s1, o1 = dmin * (float)m1;
        for (int l = 0; l < 32; l++) {
            int lo = (qs[32 * g + l] & 0xF) | (((qh[l] >> (2 * g)) & 1) << 4);
            int hi = (qs[32 * g + l] >> 4) | (((qh[l] >> (2 * g + 1)) & 1) << 4);
            y[64 * g + l] = d0 * (float)lo - o0;
            y[64 * g + 32 + l] = d1 * (float)hi - o1;
        }
    }
}

static void deq_q6_k(const uint8_t *b, float *y)
{
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = h2f(b + 208);
    for (int h = 0; h < 2; h++) {
        for (int l = 0; l < 32; l++) {
            for (int s = 0; s < 4; s++) {
                int lo = ql[64 * h + l + 32 * (s & 1)];
                int q = ((s < 2 ? lo & 0xF : lo >> 4) | (((qh[32 * h + l] >> (2 * s)) & 3) << 4));
                float ds = d * (float)sc[8 * h + l / 16 + 2 * s];
                y[128 * h + 32 * s + l] = ds * (float)(q - 32);
            }
        }
    }
}

typedef void (*deq_fn)(const uint8_t *block, float *out);

static deq_fn deq_for(uint32_t type)
{
    switch (type) {
    case VKPT_Q_Q4_0: return deq_q4_0;
    case VKPT_Q_Q4_1: return deq_q4_1;
    case VKPT_Q_Q5_0: return deq_q5_0;
    case VKPT_Q_Q5_1: return deq_q5_1;
    case VKPT_Q_Q8_0: return deq_q8_0;
    case VKPT_Q_Q8_1: return deq_q8_1;
    case VKPT_Q_Q4_K: return deq_q4_k;
    case VKPT_Q_Q5_K: return deq_q5_k;
    case VKPT_Q_Q6_K: return deq_q6_k;
    default: return NULL;
    }
}

static bool plain_type(uint32_t t)
{
    return t == VKPT_Q_F32 || t == VKPT_Q_F16 || t == VKPT_Q_BF16;
}

static int check_row(const char *what, uint32_t type, const void *a, const void *b, size_t n,
                     const vkpt_qtype_info **out)
{
    const vkpt_qtype_info *qi = vkpt_qtype_get(type);
    if (!qi || (!plain_type(type) && !deq_for(type)))
        return vkpt_fail(VKPT_EUNSUPPORTED, "%s: type %u (%s) is not supported", what, type,
                         qi ? qi->name : "unknown");
    if (n % qi->block_elems)
        return vkpt_fail(VKPT_EINVAL, "%s: %zu elements is not a whole number of %s blocks (%u)",
                         what, n, qi->name, qi->block_elems);
    if (n && (!a || !b)) return vkpt_fail(VKPT_EINVAL, "%s: NULL buffer", what);
    *out = qi;
    return 0;
}

int vkpt_dequantize_row(uint32_t type, const void *src, float *dst, size_t n)
{
    const vkpt_qtype_info *qi;
    int err = check_row("dequantize", type, src, dst, n, &qi);
    if (err) return err;
    const uint8_t *p = src;
    switch (type) {
    case VKPT_Q_F32: memcpy(dst, src, n * 4); return 0;
    case VKPT_Q_F16:
        for (size_t i = 0; i < n; i++) dst[i] = vkpt_f16_to_f32(rd16(p + 2 * i));
        return 0;
    case VKPT_Q_BF16:
        for (size_t i = 0; i < n; i++) dst[i] = vkpt_bf16_to_f32(rd16(p + 2 * i));
        return 0;
    default: break;
    }
    deq_fn f = deq_for(type);
    for (size_t b = 0; b < n / qi->block_elems; b++)
        f(p + b * qi->block_bytes, dst + b * qi->block_elems);
    return 0;
}

/* ---- legacy quantizers: round to nearest ------------------------------------ */

/* The value of largest magnitude, with its sign (0 for an all-zero block). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0, v = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), v = x[i];
    return v;
}

static void minmax(const float *x, int n, float *mn, float *mx)
{
    *mn = FLT_MAX;
    *mx = -FLT_MAX;
    for (int i = 0; i < n; i++) {
        if (x[i] < *mn) *mn = x[i];
        if (x[i] > *mx) *mx = x[i];
    }
}

/* Symmetric 4/5-bit: the largest magnitude maps to -2^(bits-1) exactly (the
 * one level without a positive twin), the rest round to nearest. */
static void q_sym(const float *x, int bits, uint8_t *qout, float *dout)
{
    int half = 1 << (bits - 1);
    float d = signed_absmax(x, 32) / (float)-half;
    float id = d != 0 ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) qout[j] = (uint8_t)clampi(rnd(x[j] * id) + half, 0, 2 * half - 1);
    *dout = d;
}

/* Asymmetric 4/5-bit: [min, max] onto 0..2^bits-1. */
static void q_asym(const float *x, int bits, uint8_t *qout, float *dout, float *mout)
{
    int top = (1 << bits) - 1;
    float mn, mx;
    minmax(x, 32, &mn, &mx);
    float d = (mx - mn) / (float)top;
    float id = d != 0 ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) qout[j] = (uint8_t)clampi(rnd((x[j] - mn) * id), 0, top);
    *dout = d;
    *mout = mn;
}

static void pack_nibbles(const uint8_t q[32], uint8_t *qs)
{
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}

static uint32_t pack_fifth_bits(const uint8_t q[32])
{
    uint32_t qh = 0;
    for (int j = 0; j < 32; j++) qh |= (uint32_t)((q[j] >> 4) & 1) << j;
    return qh;
}

static void quant_q4_0(const float *x, uint8_t *b)
{
    uint8_t q[32];
    float d;
    q_sym(x, 4, q, &d);
    wr16(b, vkpt_f32_to_f16(d));
    pack_nibbles(q, b + 2);
}

static void quant_q4_1(const float *x, uint8_t *b)
{
    uint8_t q[32];
    float d, m;
    q_asym(x, 4, q, &d, &m);
    wr16(b, vkpt_f32_to_f16(d));
    wr16(b + 2, vkpt_f32_to_f16(m));
    pack_nibbles(q, b + 4);
}

static void quant_q5_0(const float *x, uint8_t *b)
{
    uint8_t q[32];
    float d;
    q_sym(x, 5, q, &d);
    wr16(b, vkpt_f32_to_f16(d));
    wr32(b + 2, pack_fifth_bits(q));
    pack_nibbles(q, b + 6);
}

static void quant_q5_1(const float *x, uint8_t *b)
{
    uint8_t q[32];
    float d, m;
    q_asym(x, 5, q, &d, &m);
    wr16(b, vkpt_f32_to_f16(d));
    wr16(b + 2, vkpt_f32_to_f16(m));
    wr32(b + 4, pack_fifth_bits(q));
    pack_nibbles(q, b + 8);
}

/* Q8_0 / Q8_1: d = amax / 127, q = round(x / d). */
static float q8_block(const float *x, int8_t *q)
{
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f;
    float id = d != 0 ? 1.0f / d : 0.0f;
    for (int j = 0; j < 32; j++) q[j] = (int8_t)clampi(rnd(x[j] * id), -127, 127);
    return d;
}

static void quant_q8_0(const float *x, uint8_t *b)
{
    float d = q8_block(x, (int8_t *)(b + 2));
    wr16(b, vkpt_f32_to_f16(d));
}

static void quant_q8_1(const float *x, uint8_t *b)
{
    int8_t *q = (int8_t *)(b + 4);
    float d = q8_block(x, q);
    int sum = 0;
    for (int j = 0; j < 32; j++) sum += q[j];
    wr16(b, vkpt_f32_to_f16(d));
    wr16(b + 2, vkpt_f32_to_f16(d * (float)sum));
}

/* ---- K-quant scale search ------------------------------------------------------ */

/* Best (scale, min) for x[0..n) as value = scale * q - min, q in 0..top,
 * min >= 0 (the format stores non-negative mins), minimizing the squared
 * error. Candidate step sizes around (max - lo) / top are tried; for each,
 * the levels are rounded and (scale, min) refit by least squares. */
static void fit_affine(const float *x, int n, int top, float *scale_out, float *min_out)
{
    float lo, hi;
    minmax(x, n, &lo, &hi);
    if (lo > 0) lo = 0; /* min must be >= 0, i.e. the offset <= 0 */
    if (hi <= lo) {
        *scale_out = 0;
        *min_out = -lo;
        return;
    }
    float best_err = FLT_MAX, best_s = (hi - lo) / (float)top, best_lo = lo;
    for (int step = -10; step <= 10; step++) {
        float is = ((float)top + 0.1f * (float)step) / (hi - lo);
        double sw = 0, sq = 0, sqq = 0, sx = 0, sqx = 0;
        for (int i = 0; i < n; i++) {
            int q = clampi(rnd((x[i] - lo) * is), 0, top);
            sw += 1;
            sq += q;
            sqq += (double)q * q;
            sx += x[i];
            sqx += (double)q * x[i];
        }
        /* least squares for x ~ s q + o */
        double det = sw * sqq - sq * sq;
        if (det <= 0) continue;
        double s = (sw * sqx - sq * sx) / det;
        double o = (sqq * sx - sq * sqx) / det;
        if (o > 0) { /* offset must stay <= 0 */
            o = 0;
            s = sqq > 0 ? sqx / sqq : 0;
        }
        if (s <= 0) continue;
        /* error with the levels re-rounded for this (s, o) */
        double err = 0;
        for (int i = 0; i < n; i++) {
            int q = clampi(rnd((float)((x[i] - o) / s)), 0, top);
            double e = s * q + o - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = (float)err;
            best_s = (float)s;
            best_lo = (float)o;
        }
    }
    *scale_out = best_s;
    *min_out = -best_lo;
}

/* Quantize the eight sub-block (scale, min) pairs against the super-block
 * scales d, dmin (6 bits each) and the values against them. */
static void quant_kx(const float *x, int bits, uint8_t *dq, uint8_t *scales, uint8_t q[256])
{
    int top = (1 << bits) - 1;
    float s[8], m[8], smax = 0, mmax = 0;
    for (int j = 0; j < 8; j++) {
        fit_affine(x + 32 * j, 32, top, &s[j], &m[j]);
        smax = fmaxf(smax, s[j]);
        mmax = fmaxf(mmax, m[j]);
    }
    float d = smax / 63.0f, dmin = mmax / 63.0f;
    uint16_t dh = vkpt_f32_to_f16(d), dminh = vkpt_f32_to_f16(dmin);
    d = vkpt_f16_to_f32(dh);
    dmin = vkpt_f16_to_f32(dminh);
    int sc[8], mc[8];
    for (int j = 0; j < 8; j++) {
        int s0 = d > 0 ? clampi(rnd(s[j] / d), 0, 63) : 0;
        int m0 = dmin > 0 ? clampi(rnd(m[j] / dmin), 0, 63) : 0;
        /* the rounded 6-bit pair is not always the best one: try the
         * neighbours with the values re-quantized against each */
        double best = -1;
        for (int ds_i = -1; ds_i <= 1; ds_i++) {
            for (int dm_i = -1; dm_i <= 1; dm_i++) {
                int si = s0 + ds_i, mi = m0 + dm_i;
                if (si < 0 || si > 63 || mi < 0 || mi > 63) continue;
                float ds = d * (float)si, dm = dmin * (float)mi;
                double err = 0;
                for (int i = 0; i < 32; i++) {
                    float v = x[32 * j + i];
                    int qi = ds > 0 ? clampi(rnd((v + dm) / ds), 0, top) : 0;
                    double e = (double)(ds * (float)qi - dm) - v;
                    err += e * e;
                }
                if (best < 0 || err < best) {
                    best = err;
                    sc[j] = si;
                    mc[j] = mi;
                }
            }
        }
    }
    wr16(dq, dh);
    wr16(dq + 2, dminh);
    k_scale_min_pack(scales, sc, mc);
    for (int j = 0; j < 8; j++) {
        float ds = d * (float)sc[j], dm = dmin * (float)mc[j];
        for (int i = 0; i < 32; i++)
            q[32 * j + i] = ds > 0 ? (uint8_t)clampi(rnd((x[32 * j + i] + dm) / ds), 0, top) : 0;
    }
}

static void quant_q4_k(const float *x, uint8_t *b)
{
    uint8_t q[256];
    quant_kx(x, 4, b, b + 4, q);
    for (int g = 0; g < 4; g++)
        for (int l = 0; l < 32; l++)
            b[16 + 32 * g + l] = (uint8_t)(q[64 * g + l] | (q[64 * g + 32 + l] << 4));
}

static void quant_q5_k(const float *x, uint8_t *b)
{
    uint8_t q[256];
    quant_kx(x, 5, b, b + 4, q);
    uint8_t *qh = b + 16, *qs = b + 48;
    memset(qh, 0, 32);
    for (int g = 0; g < 4; g++) {
        for (int l = 0; l < 32; l++) {
            uint8_t lo = q[64 * g + l], hi = q[64 * g + 32 + l];
            qs[32 * g + l] = (uint8_t)((lo & 0xF) | ((hi & 0xF) << 4));
            qh[l] |= (uint8_t)(((lo >> 4) << (2 * g)) | ((hi >> 4) << (2 * g + 1)));
        }
    }
}

/* Best symmetric scale for x[0..16) as value = scale * q, q in -32..31: the
 * largest magnitude maps near -32 (so the scale takes the opposite sign of
 * that value), candidates around it refit by least squares. */
static float fit_sym6(const float *x, int n)
{
    float vmax = signed_absmax(x, n);
    if (vmax == 0) return 0;
    double best = -1, best_s = vmax / -32.0f;
    for (int step = -10; step <= 10; step++) {
        float is = -(32.0f + 0.1f * (float)step) / vmax;
        double sxq = 0, sqq = 0;
        for (int i = 0; i < n; i++) {
            int q = clampi(rnd(x[i] * is), -32, 31);
            sxq += (double)x[i] * q;
            sqq += (double)q * q;
        }
        /* error = sum x^2 - sxq^2 / sqq at the optimal scale sxq / sqq */
        if (sqq > 0 && sxq * sxq / sqq > best) {
            best = sxq * sxq / sqq;
            best_s = sxq / sqq;
        }
    }
    return (float)best_s;
}

static void quant_q6_k(const float *x, uint8_t *b)
{
    float s[16], smax = 0, ssigned = 0;
    for (int j = 0; j < 16; j++) {
        s[j] = fit_sym6(x + 16 * j, 16);
        if (fabsf(s[j]) > smax) smax = fabsf(s[j]), ssigned = s[j];
    }
    /* int8 scales: the largest maps to -128, the one level without a twin */
    float d = ssigned / -128.0f;
    uint16_t dh = vkpt_f32_to_f16(d);
    d = vkpt_f16_to_f32(dh);
    int8_t sc[16];
    uint8_t q[256];
    for (int j = 0; j < 16; j++) {
        int s0 = d != 0 ? clampi(rnd(s[j] / d), -128, 127) : 0;
        double best = -1;
        for (int si = s0 - 1; si <= s0 + 1; si++) { /* neighbours, as for Q4_K */
            if (si < -128 || si > 127) continue;
            float ds = d * (float)si;
            double err = 0;
            for (int i = 0; i < 16; i++) {
                float v = x[16 * j + i];
                int qi = ds != 0 ? clampi(rnd(v / ds), -32, 31) : 0;
                double e = (double)(ds * (float)qi) - v;
                err += e * e;
            }
            if (best < 0 || err < best) best = err, sc[j] = (int8_t)si;
        }
        float ds = d * (float)sc[j];
        for (int i = 0; i < 16; i++)
            q[16 * j + i] = (uint8_t)(ds != 0 ? clampi(rnd(x[16 * j + i] / ds), -32, 31) + 32 : 32);
    }
    uint8_t *ql = b, *qh = b + 128;
    memset(b, 0, 192);
    for (int h = 0; h < 2; h++) {
        for (int l = 0; l < 32; l++) {
            for (int s4 = 0; s4 < 4; s4++) {
                uint8_t v = q[128 * h + 32 * s4 + l];
                ql[64 * h + l + 32 * (s4 & 1)] |= (uint8_t)((v & 0xF) << (s4 < 2 ? 0 : 4));
                qh[32 * h + l] |= (uint8_t)((v >> 4) << (2 * s4));
            }
        }
    }
    memcpy(b + 192, sc, 16);
    wr16(b + 208, dh);
}

typedef void (*quant_fn)(const float *x, uint8_t *block);

static quant_fn quant_for(uint32_t type)
{
    switch (type) {
    case VKPT_Q_Q4_0: return quant_q4_0;
    case VKPT_Q_Q4_1: return quant_q4_1;
    case VKPT_Q_Q5_0: return quant_q5_0;
    case VKPT_Q_Q5_1: return quant_q5_1;
    case VKPT_Q_Q8_0: return quant_q8_0;
    case VKPT_Q_Q8_1: return quant_q8_1;
    case VKPT_Q_Q4_K: return quant_q4_k;
    case VKPT_Q_Q5_K: return quant_q5_k;
    case VKPT_Q_Q6_K: return quant_q6_k;
    default: return NULL;
    }
}

int vkpt_quantize_row(uint32_t type, const float *src, void *dst, size_t n)
{
    const vkpt_qtype_info *qi;
    int err = check_row("quantize", type, src, dst, n, &qi);
    if (err) return err;
    uint8_t *p = dst;
    switch (type) {
    case VKPT_Q_F32: memcpy(dst, src, n * 4); return 0;
    case VKPT_Q_F16:
        for (size_t i = 0; i < n; i++) wr16(p + 2 * i, vkpt_f32_to_f16(src[i]));
        return 0;
    case VKPT_Q_BF16:
        for (size_t i = 0; i < n; i++) wr16(p + 2 * i, vkpt_f32_to_bf16(src[i]));
        return 0;
    default: break;
    }
    quant_fn f = quant_for(type);
    for (size_t b = 0; b < n / qi->block_elems; b++)
        f(src + b * qi->block_elems, p + b * qi->block_bytes);
    return 0;
}
