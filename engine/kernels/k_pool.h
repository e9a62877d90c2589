/* Pooling of encoder hidden states (shaders/pool.comp): one vector per
 * sequence of a packed batch, by its CLS row, the mean of its rows or its
 * last row, optionally truncated to fewer dims and L2-normalised; and the C
 * reference.
 *
 * Sequences are described by records of four u32, exactly vkpt_pool_seq,
 * in a device buffer the caller fills (a mapped upload buffer, no
 * allocation per step). Outputs are f32 rows o_stride elements apart. */
#ifndef VKPT_K_POOL_H
#define VKPT_K_POOL_H

#include "k_rows.h"

#include <stdbool.h>

enum vkpt_pool_kind {
    VKPT_POOL_KIND_CLS = 1,  /* the sequence's first row */
    VKPT_POOL_KIND_MEAN = 2, /* the mean of its rows */
    VKPT_POOL_KIND_LAST = 3, /* its last row */
};
#define VKPT_POOL_NORMALIZE 4u /* mode bit: divide by the L2 norm of the dims kept */

/* One sequence (also the GPU record). */
typedef struct vkpt_pool_seq {
    uint32_t start; /* its first row in x */
    uint32_t len;   /* rows, >= 1 */
    uint32_t mode;  /* enum vkpt_pool_kind | VKPT_POOL_NORMALIZE */
    uint32_t dims;  /* leading elements kept, 1..n */
} vkpt_pool_seq;

/* o row s = pool(x rows of seqs[s]) for s < n_seqs. seqs: the records in a
 * u32 buffer; x: rows of n elements; o: rows of at least dims elements,
 * o_stride apart. Returns 0, VKPT_EINVAL (views too small) or the
 * pipeline's error; record contents are the caller's responsibility (rows
 * outside x read as whatever the binding holds past its end: zeros or
 * garbage, never a fault). */
int vkpt_k_pool(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, const vkpt_buf *seqs, uint32_t n_seqs,
                const vkpt_rows *o);

/* Reference in double: same records, plain arrays. Returns VKPT_EINVAL
 * for a record with len 0, dims 0 or dims > n, or a bad kind. */
int vkpt_ref_pool(const float *x, size_t x_stride, uint32_t n, const vkpt_pool_seq *seqs,
                  uint32_t n_seqs, float *o, size_t o_stride);

#endif
