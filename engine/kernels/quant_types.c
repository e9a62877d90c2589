/* The weight-format table (block sizes from the GGUF/ggml definitions) and
 * half-precision conversions. */
#include "quant.h"

#include <string.h>
#include <strings.h>

static const vkpt_qtype_info k_types[VKPT_Q_COUNT] = {
    [VKPT_Q_F32] = {"F32", 1, 4, true},       [VKPT_Q_F16] = {"F16", 1, 2, true},
    [VKPT_Q_Q4_0] = {"Q4_0", 32, 18, true},   [VKPT_Q_Q4_1] = {"Q4_1", 32, 20, true},
    [VKPT_Q_Q5_0] = {"Q5_0", 32, 22, true},   [VKPT_Q_Q5_1] = {"Q5_1", 32, 24, true},
    [VKPT_Q_Q8_0] = {"Q8_0", 32, 34, true},   [VKPT_Q_Q8_1] = {"Q8_1", 32, 36, false},
    [VKPT_Q_Q2_K] = {"Q2_K", 256, 84, false}, [VKPT_Q_Q3_K] = {"Q3_K", 256, 110, false},
    [VKPT_Q_Q4_K] = {"Q4_K", 256, 144, true}, [VKPT_Q_Q5_K] = {"Q5_K", 256, 176, true},
    [VKPT_Q_Q6_K] = {"Q6_K", 256, 210, true}, [VKPT_Q_Q8_K] = {"Q8_K", 256, 292, false},
    [VKPT_Q_I8] = {"I8", 1, 1, false},        [VKPT_Q_I16] = {"I16", 1, 2, false},
    [VKPT_Q_I32] = {"I32", 1, 4, false},      [VKPT_Q_I64] = {"I64", 1, 8, false},
    [VKPT_Q_F64] = {"F64", 1, 8, false},      [VKPT_Q_BF16] = {"BF16", 1, 2, true},
};

const vkpt_qtype_info *vkpt_qtype_get(uint32_t t)
{
    if (t >= VKPT_Q_COUNT || !k_types[t].name) return NULL;
    return &k_types[t];
}

int vkpt_qtype_from_name(const char *name)
{
    for (int t = 0; t < VKPT_Q_COUNT; t++)
        if (k_types[t].name && !strcasecmp(k_types[t].name, name)) return t;
    return -1;
}

uint64_t vkpt_qtype_row_bytes(uint32_t t, uint64_t n)
{
    const vkpt_qtype_info *i = vkpt_qtype_get(t);
    if (!i || n % i->block_elems) return 0;
    return n / i->block_elems * i->block_bytes;
}

float vkpt_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t vkpt_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t exp = (x >> 23) & 0xff, man = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 | (man >> 13) : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00); /* overflow: inf */
    if (e <= 0) {                                  /* subnormal or zero */
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* carries into exp correctly */
    return (uint16_t)h;
}

float vkpt_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t vkpt_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
