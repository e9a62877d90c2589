/* Weight formats: GGUF/ggml tensor types, their block layouts, and the
 * scalar reference (de)quantizers.
 *
 * The enum values are the GGUF tensor type ids. A row of n elements of a
 * block type is n / block_elems blocks of block_bytes each (n must be a
 * multiple of block_elems). Dequantization here is the oracle the shaders
 * must match bit for bit; quantization follows the formats' usual reference
 * algorithms (round-to-nearest for the legacy types, scale search for K-quants)
 * and is what `vkpt quantize` and `vkpt synth` write. */
#ifndef VKPT_QUANT_H
#define VKPT_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum vkpt_qtype {
    VKPT_Q_F32 = 0,
    VKPT_Q_F16 = 1,
    VKPT_Q_Q4_0 = 2,
    VKPT_Q_Q4_1 = 3,
    VKPT_Q_Q5_0 = 6,
    VKPT_Q_Q5_1 = 7,
    VKPT_Q_Q8_0 = 8,
    VKPT_Q_Q8_1 = 9,
    VKPT_Q_Q2_K = 10,
    VKPT_Q_Q3_K = 11,
    VKPT_Q_Q4_K = 12,
    VKPT_Q_Q5_K = 13,
    VKPT_Q_Q6_K = 14,
    VKPT_Q_Q8_K = 15,
    VKPT_Q_I8 = 24,
    VKPT_Q_I16 = 25,
    VKPT_Q_I32 = 26,
    VKPT_Q_I64 = 27,
    VKPT_Q_F64 = 28,
    VKPT_Q_BF16 = 30,
    VKPT_Q_COUNT = 40 /* bound on ids this table knows */
};

typedef struct vkpt_qtype_info {
    const char *name;     /* "Q4_K"; NULL for ids vkpt does not know */
    uint32_t block_elems; /* elements per block (1 for plain types) */
    uint32_t block_bytes; /* bytes per block */
    bool weight;          /* vkpt's kernels take it as a weight format */
} vkpt_qtype_info;

/* Layout of type id `t`, or NULL when unknown (ids from files: check!). */
const vkpt_qtype_info *vkpt_qtype_get(uint32_t t);
/* Type id by name, case-insensitive ("q4_k", "F16"); -1 when unknown. */
int vkpt_qtype_from_name(const char *name);
/* Bytes of a row of n elements; 0 when n is not a whole number of blocks. */
uint64_t vkpt_qtype_row_bytes(uint32_t t, uint64_t n);

/* f16/bf16 conversions (round to nearest even; NaN/inf preserved). */
float vkpt_f16_to_f32(uint16_t h);
uint16_t vkpt_f32_to_f16(float f);
float vkpt_bf16_to_f32(uint16_t h);
uint16_t vkpt_f32_to_bf16(float f);

/* Reference (de)quantization of one row (engine/kernels/quant.c), for F32,
 * F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q4_K, Q5_K, Q6_K. `n` is
 * the element count, a whole number of blocks; src/dst hold n elements of
 * the respective format (no alignment needed). Returns 0, VKPT_EINVAL (bad
 * n, NULL) or VKPT_EUNSUPPORTED (another type). */
int vkpt_dequantize_row(uint32_t type, const void *src, float *dst, size_t n);
int vkpt_quantize_row(uint32_t type, const float *src, void *dst, size_t n);

#endif
