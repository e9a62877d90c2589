/* Weight formats in GLSL: byte access to packed GGUF blocks and their
 * dequantization, shared by get_rows, matvec and matmul.
 *
 * The including shader defines exactly one WT_<TYPE> (WT_F32, WT_F16,
 * WT_BF16, WT_Q4_0, WT_Q4_1, WT_Q5_0, WT_Q5_1, WT_Q8_0, WT_Q4_K, WT_Q5_K,
 * WT_Q6_K) and declares the weight binding twice, as words and as 16-byte
 * vectors (the same descriptor; uvec4 loads are used only where the format
 * keeps blocks 16-byte aligned):
 *   layout(std430, binding = 0) readonly buffer Wq { uint wq[]; };
 *   layout(std430, binding = 0) readonly buffer Wq4 { uvec4 wq4[]; };
 * Offsets are in bytes from the binding's start. Blocks of 18, 22, 34 and 210
 * bytes are only 2-byte aligned, so their reads go through w_u32a2. The
 * binding is rounded up to 4 bytes, so a word read that starts inside the
 * tensor never leaves the binding.
 *
 * Two views of each quantized format:
 *  - dq8(bb, g, v0, v1): elements 8g..8g+7 of the block at byte bb, computed
 *    with the same f32 expressions, in the same order, as the C reference
 *    (engine/kernels/quant.c) and marked `precise` so no FMA contraction
 *    changes the rounding: bit-identical results.
 *  - unit_load(bb, u, qa, qb, so): unit u (0..QUNITS-1) of the block as two
 *    segments of 16 elements; element i of segment s is
 *    so[2s] * q + so[2s+1], q the byte i of qa (s = 0) or qb (s = 1),
 *    starting at k offset unit_k0(u) / unit_k1(u) within the block. The
 *    matvec kernels dot these bytes with activations (as floats or as int8
 *    dot products) and apply the scale once per segment. Every quantized
 *    format has 32 elements per unit (QK / 32 units per block); bytes are
 *    non-negative except Q8_0's (Q_SIGNED). */
#ifndef VKPT_QUANT_GLSL
#define VKPT_QUANT_GLSL

/* ---- byte access ---------------------------------------------------------- */

uint w_u32(uint o) /* o % 4 == 0 */
{
    return wq[o >> 2];
}
uint w_u16(uint o) /* o % 2 == 0 */
{
    return (wq[o >> 2] >> ((o & 2u) * 8u)) & 0xFFFFu;
}
/* lo's high half and hi's low half when odd, else lo */
uint funnel16(uint lo, uint hi, bool odd)
{
    return odd ? (lo >> 16) | (hi << 16) : lo;
}
uint w_u32a2(uint o) /* o % 2 == 0 */
{
    uint i = o >> 2, hi = 0u;
    bool odd = (o & 2u) != 0u;
    if (odd) hi = wq[i + 1u]; /* only then does the value reach into it */
    return funnel16(wq[i], hi, odd);
}
uint w_u8(uint o)
{
    return (wq[o >> 2] >> ((o & 3u) * 8u)) & 0xFFu;
}
float w_f16(uint o)
{
    return unpackHalf2x16(w_u16(o)).x;
}
uvec4 w_u128a2(uint o) /* 16 bytes at a 2-aligned offset: 4 or 5 word loads */
{
    uint i = o >> 2, e = 0u;
    bool odd = (o & 2u) != 0u;
    uint a = wq[i], b = wq[i + 1u], c = wq[i + 2u], d = wq[i + 3u];
    if (odd) e = wq[i + 4u];
    return uvec4(funnel16(a, b, odd), funnel16(b, c, odd), funnel16(c, d, odd),
                 funnel16(d, e, odd));
}
/* The four bytes of a word as floats, unsigned or sign-extended. */
vec4 bytes_f(uint w)
{
    return vec4(uvec4(w, w >> 8, w >> 16, w >> 24) & 0xFFu);
}
vec4 sbytes_f(uint w)
{
    return vec4(ivec4(w << 24, w << 16, w << 8, w) >> 24);
}
/* Bits 0..3 of n spread to bit 4 of bytes 0..3 (Q5 fifth bits). */
uint spread4(uint n)
{
    return ((n & 1u) | ((n & 2u) << 7) | ((n & 4u) << 14) | ((n & 8u) << 21)) << 4;
}

/* ---- per-format constants -------------------------------------------------- */

#if defined(WT_F32)
#define QK 1u
#define QB 4u
#define WT_FLOAT 1
#elif defined(WT_F16) || defined(WT_BF16)
#define QK 1u
#define QB 2u
#define WT_FLOAT 1
#elif defined(WT_Q4_0)
#define QK 32u
#define QB 18u
#elif defined(WT_Q4_1)
#define QK 32u
#define QB 20u
#elif defined(WT_Q5_0)
#define QK 32u
#define QB 22u
#elif defined(WT_Q5_1)
#define QK 32u
#define QB 24u
#elif defined(WT_Q8_0)
#define QK 32u
#define QB 34u
#define Q_SIGNED 1
#elif defined(WT_Q4_K)
#define QK 256u
#define QB 144u
#elif defined(WT_Q5_K)
#define QK 256u
#define QB 176u
#elif defined(WT_Q6_K)
#define QK 256u
#define QB 210u
#else
#error "define one WT_<type>"
#endif

#ifndef WT_FLOAT
#define QUNITS (QK / 32u)
/* Formats whose elements have an offset term (so[1], so[3] != 0). */
#if !defined(WT_Q8_0)
#define Q_OFFSET 1
#endif
#endif

/* ---- plain types ---------------------------------------------------------- */

#if defined(WT_FLOAT)
/* Element k of the row starting at byte rb. */
float w_elem(uint rb, uint k)
{
#if defined(WT_F32)
    return uintBitsToFloat(wq[(rb >> 2) + k]);
#elif defined(WT_F16)
    return w_f16(rb + 2u * k);
#else
    return uintBitsToFloat(w_u16(rb + 2u * k) << 16);
#endif
}
#endif

/* ---- K-quant scales --------------------------------------------------------- */

#if defined(WT_Q4_K) || defined(WT_Q5_K)
/* 6-bit (scale, min) of sub-block j from the 12 scale bytes as 3 words:
 * s0 = bytes 0-3 (sc 0-3, top bits of sc 4-7), s1 = bytes 4-7 (m 0-3, top
 * bits of m 4-7), s2 = bytes 8-11 (low nibbles of sc/m 4-7). */
uvec2 k4_scale_min(uint s0, uint s1, uint s2, uint j)
{
    uint sh = (j & 3u) * 8u;
    uint b0 = (s0 >> sh) & 0xFFu, b1 = (s1 >> sh) & 0xFFu;
    if (j < 4u) return uvec2(b0 & 63u, b1 & 63u);
    uint b2 = (s2 >> sh) & 0xFFu;
    return uvec2((b2 & 0xFu) | ((b0 >> 6) << 4), (b2 >> 4) | ((b1 >> 6) << 4));
}
#endif

#if defined(WT_Q6_K)
float q6k_scale(uint bb, uint i) /* int8 scale i of the block */
{
    return float(int(w_u8(bb + 192u + i) << 24) >> 24);
}
#endif

/* ---- exact dequantization: 8 consecutive elements ------------------------------ */

#ifndef WT_FLOAT
void dq8(uint bb, uint g, out vec4 v0, out vec4 v1)
{
#if defined(WT_Q4_0) || defined(WT_Q4_1) || defined(WT_Q5_0) || defined(WT_Q5_1)
#if defined(WT_Q4_0)
    const uint qs = 2u;
#elif defined(WT_Q4_1)
    const uint qs = 4u;
#elif defined(WT_Q5_0)
    const uint qs = 6u;
#else
    const uint qs = 8u;
#endif
    /* elements 0..15 are the low nibbles of qs[0..15], 16..31 the high */
    uint sh = (g >> 1) * 4u;
    uint a = (w_u32a2(bb + qs + (g & 1u) * 8u) >> sh) & 0x0F0F0F0Fu;
    uint b = (w_u32a2(bb + qs + (g & 1u) * 8u + 4u) >> sh) & 0x0F0F0F0Fu;
#if defined(WT_Q5_0) || defined(WT_Q5_1)
    uint qh = w_u32a2(bb + qs - 4u) >> (8u * g);
    a |= spread4(qh & 0xFu);
    b |= spread4((qh >> 4) & 0xFu);
#endif
    float d = w_f16(bb);
#if defined(WT_Q4_0)
    precise vec4 r0 = (bytes_f(a) - 8.0) * d;
    precise vec4 r1 = (bytes_f(b) - 8.0) * d;
#elif defined(WT_Q5_0)
    precise vec4 r0 = (bytes_f(a) - 16.0) * d;
    precise vec4 r1 = (bytes_f(b) - 16.0) * d;
#else
    float m = w_f16(bb + 2u);
    precise vec4 r0 = bytes_f(a) * d + m;
    precise vec4 r1 = bytes_f(b) * d + m;
#endif
    v0 = r0;
    v1 = r1;
#elif defined(WT_Q8_0)
    float d = w_f16(bb);
    precise vec4 r0 = sbytes_f(w_u32a2(bb + 2u + 8u * g)) * d;
    precise vec4 r1 = sbytes_f(w_u32a2(bb + 6u + 8u * g)) * d;
    v0 = r0;
    v1 = r1;
#elif defined(WT_Q4_K) || defined(WT_Q5_K)
    /* sub-block j = g / 4; its 32 elements are the low (j even) or high
     * nibbles of qs[32 (j/2) .. +32) */
    uint j = g >> 2, l = (g & 3u) * 8u;
    uint dm = w_u32(bb);
    uvec2 scm = k4_scale_min(w_u32(bb + 4u), w_u32(bb + 8u), w_u32(bb + 12u), j);
#if defined(WT_Q4_K)
    const uint qs = 16u;
#else
    const uint qs = 48u;
#endif
    uint sh = (j & 1u) * 4u;
    uint a = (w_u32(bb + qs + 32u * (j >> 1) + l) >> sh) & 0x0F0F0F0Fu;
    uint b = (w_u32(bb + qs + 32u * (j >> 1) + l + 4u) >> sh) & 0x0F0F0F0Fu;
#if defined(WT_Q5_K)
    a |= ((w_u32(bb + 16u + l) >> j) & 0x01010101u) << 4;
    b |= ((w_u32(bb + 20u + l) >> j) & 0x01010101u) << 4;
#endif
    vec2 dd = unpackHalf2x16(dm);
    precise float ds = dd.x * float(scm.x);
    precise float dn = dd.y * float(scm.y);
    precise vec4 r0 = ds * bytes_f(a) - dn;
    precise vec4 r1 = ds * bytes_f(b) - dn;
    v0 = r0;
    v1 = r1;
#elif defined(WT_Q6_K)
    /* half h = g / 16; e = 8 (g % 16) within it: s = e / 32, l = e % 32 */
    uint h = g >> 4, e = (g & 15u) * 8u, s = e >> 5, l = e & 31u;
    uint qlo = bb + 64u * h + l + 32u * (s & 1u);
    uint sh = (s >> 1) * 4u;
    uint a = (w_u32a2(qlo) >> sh) & 0x0F0F0F0Fu;
    uint b = (w_u32a2(qlo + 4u) >> sh) & 0x0F0F0F0Fu;
    uint qhb = bb + 128u + 32u * h + l;
    a |= ((w_u32a2(qhb) >> (2u * s)) & 0x03030303u) << 4;
    b |= ((w_u32a2(qhb + 4u) >> (2u * s)) & 0x03030303u) << 4;
    float d = w_f16(bb + 208u);
    precise float ds = d * q6k_scale(bb, 8u * h + l / 16u + 2u * s);
    precise vec4 r0 = ds * (bytes_f(a) - 32.0);
    precise vec4 r1 = ds * (bytes_f(b) - 32.0);
    v0 = r0;
    v1 = r1;
#endif
}
#endif

/* ---- exact dequantization: one element ----------------------------------------- */

#ifndef WT_FLOAT
/* Element i (0..QK-1) of the block at byte bb: the value dq8 gives for it,
 * from the same f32 expressions (bit-identical to the C reference). For
 * kernels that decode element by element (matmul_nv2.comp's decode
 * functions). */
float dq1(uint bb, uint i)
{
#if defined(WT_Q4_0) || defined(WT_Q4_1) || defined(WT_Q5_0) || defined(WT_Q5_1)
#if defined(WT_Q4_0)
    const uint qs = 2u;
#elif defined(WT_Q4_1)
    const uint qs = 4u;
#elif defined(WT_Q5_0)
    const uint qs = 6u;
#else
    const uint qs = 8u;
#endif
    /* elements 0..15: low nibbles of qs[0..15]; 16..31: the high ones */
    uint q = (w_u8(bb + qs + (i & 15u)) >> ((i >> 4) * 4u)) & 0xFu;
#if defined(WT_Q5_0) || defined(WT_Q5_1)
    q |= ((w_u32a2(bb + qs - 4u) >> i) & 1u) << 4;
#endif
    float d = w_f16(bb);
#if defined(WT_Q4_0)
    precise float r = (float(q) - 8.0) * d;
#elif defined(WT_Q5_0)
    precise float r = (float(q) - 16.0) * d;
#else
    precise float r = float(q) * d + w_f16(bb + 2u);
#endif
    return r;
#elif defined(WT_Q8_0)
    precise float r = float(int(w_u8(bb + 2u + i) << 24) >> 24) * w_f16(bb);
    return r;
#elif defined(WT_Q4_K) || defined(WT_Q5_K)
    uint j = i >> 5, l = i & 31u; /* sub-block, element in it */
    uvec2 scm = k4_scale_min(w_u32(bb + 4u), w_u32(bb + 8u), w_u32(bb + 12u), j);
#if defined(WT_Q4_K)
    const uint qs = 16u;
#else
    const uint qs = 48u;
#endif
    uint q = (w_u8(bb + qs + 32u * (j >> 1) + l) >> ((j & 1u) * 4u)) & 0xFu;
#if defined(WT_Q5_K)
    q |= ((w_u8(bb + 16u + l) >> j) & 1u) << 4;
#endif
    vec2 dd = unpackHalf2x16(w_u32(bb));
    precise float ds = dd.x * float(scm.x);
    precise float dn = dd.y * float(scm.y);
    precise float r = ds * float(q) - dn;
    return r;
#elif defined(WT_Q6_K)
    /* half h = i / 128; e = i % 128: group s = e / 32, l = e % 32 */
    uint h = i >> 7, e = i & 127u, s = e >> 5, l = e & 31u;
    uint q = (w_u8(bb + 64u * h + l + 32u * (s & 1u)) >> ((s >> 1) * 4u)) & 0xFu;
    q |= ((w_u8(bb + 128u + 32u * h + l) >> (2u * s)) & 3u) << 4;
    precise float ds = w_f16(bb + 208u) * q6k_scale(bb, 8u * h + l / 16u + 2u * s);
    precise float r = ds * (float(q) - 32.0);
    return r;
#endif
}
#endif

/* ---- matvec units: two segments of 16 bytes + (scale, offset) each ---------------- */

#ifndef WT_FLOAT
#if defined(WT_Q4_K) || defined(WT_Q5_K)
/* unit u: 64-group G = u / 2, l0 = 16 (u & 1): segment 0 is sub-block 2G
 * (low nibbles), segment 1 sub-block 2G + 1 (high nibbles) */
uint unit_k0(uint u)
{
    return 64u * (u >> 1) + 16u * (u & 1u);
}
uint unit_k1(uint u)
{
    return unit_k0(u) + 32u;
}
#elif defined(WT_Q6_K)
/* unit u: half h = u / 4, l0 = 16 ((u / 2) & 1), p = u & 1: segment 0 is
 * group s = p (low nibbles), segment 1 group s = p + 2 (high nibbles) */
uint unit_k0(uint u)
{
    return 128u * (u >> 2) + 16u * ((u >> 1) & 1u) + 32u * (u & 1u);
}
uint unit_k1(uint u)
{
    return unit_k0(u) + 64u;
}
#else
uint unit_k0(uint u)
{
    return 0u;
}
uint unit_k1(uint u)
{
    return 16u;
}
#endif

void unit_load(uint bb, uint u, out uvec4 qa, out uvec4 qb, out vec4 so)
{
#if defined(WT_Q4_0) || defined(WT_Q4_1) || defined(WT_Q5_0) || defined(WT_Q5_1)
#if defined(WT_Q4_0)
    const uint qs = 2u;
#elif defined(WT_Q4_1)
    const uint qs = 4u;
#elif defined(WT_Q5_0)
    const uint qs = 6u;
#else
    const uint qs = 8u;
#endif
    uvec4 w = w_u128a2(bb + qs);
    qa = w & 0x0F0F0F0Fu;
    qb = (w >> 4) & 0x0F0F0F0Fu;
#if defined(WT_Q5_0) || defined(WT_Q5_1)
    uint qh = w_u32a2(bb + qs - 4u);
    qa |= uvec4(spread4(qh), spread4(qh >> 4), spread4(qh >> 8), spread4(qh >> 12));
    qb |= uvec4(spread4(qh >> 16), spread4(qh >> 20), spread4(qh >> 24), spread4(qh >> 28));
#endif
    float d = w_f16(bb);
#if defined(WT_Q4_0)
    so = vec4(d, -8.0 * d, d, -8.0 * d);
#elif defined(WT_Q5_0)
    so = vec4(d, -16.0 * d, d, -16.0 * d);
#else
    float m = w_f16(bb + 2u);
    so = vec4(d, m, d, m);
#endif
#elif defined(WT_Q8_0)
    qa = w_u128a2(bb + 2u);
    qb = w_u128a2(bb + 18u);
    float d = w_f16(bb);
    so = vec4(d, 0.0, d, 0.0);
#elif defined(WT_Q4_K) || defined(WT_Q5_K)
    uint G = u >> 1, l0 = 16u * (u & 1u);
    uvec4 hd = wq4[bb >> 4]; /* d, dmin, scales[0..11] */
#if defined(WT_Q4_K)
    uvec4 w = wq4[(bb + 16u + 32u * G + l0) >> 4];
#else
    uvec4 w = wq4[(bb + 48u + 32u * G + l0) >> 4];
#endif
    qa = w & 0x0F0F0F0Fu;
    qb = (w >> 4) & 0x0F0F0F0Fu;
#if defined(WT_Q5_K)
    uvec4 qh = wq4[(bb + 16u + l0) >> 4];
    qa |= ((qh >> (2u * G)) & 0x01010101u) << 4;
    qb |= ((qh >> (2u * G + 1u)) & 0x01010101u) << 4;
#endif
    vec2 dd = unpackHalf2x16(hd.x);
    uvec2 sm0 = k4_scale_min(hd.y, hd.z, hd.w, 2u * G);
    uvec2 sm1 = k4_scale_min(hd.y, hd.z, hd.w, 2u * G + 1u);
    so = vec4(dd.x * float(sm0.x), -dd.y * float(sm0.y), dd.x * float(sm1.x),
              -dd.y * float(sm1.y));
#elif defined(WT_Q6_K)
    uint h = u >> 2, l0 = 16u * ((u >> 1) & 1u), p = u & 1u;
    uvec4 ql = w_u128a2(bb + 64u * h + 32u * p + l0);
    uvec4 qh = w_u128a2(bb + 128u + 32u * h + l0);
    qa = (ql & 0x0F0F0F0Fu) | (((qh >> (2u * p)) & 0x03030303u) << 4);
    qb = ((ql >> 4) & 0x0F0F0F0Fu) | (((qh >> (2u * p + 4u)) & 0x03030303u) << 4);
    float d = w_f16(bb + 208u);
    float s0 = d * q6k_scale(bb, 8u * h + l0 / 16u + 2u * p);
    float s1 = d * q6k_scale(bb, 8u * h + l0 / 16u + 2u * p + 4u);
    so = vec4(s0, -32.0 * s0, s1, -32.0 * s1);
#endif
}
#endif

#endif
