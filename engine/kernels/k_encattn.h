/* Encoder attention (shaders/attn_enc.comp): non-causal, f32 q/k/v read in
 * place from row views, over a packed batch of sequences of different
 * lengths; the host-side work list and the C reference.
 *
 * Sequence s of the batch owns rows start .. start+len-1 of q, k, v and
 * out; each of its query rows attends to all of its len rows and to no
 * other sequence's. The work list (vkpt_encattn_items) cuts every sequence
 * into tiles of query rows; the caller uploads it (a mapped buffer, no
 * allocation per step) and records vkpt_k_encattn.
 *
 * Why its own kernel rather than the paged one (k_attn.h): an encoder keeps
 * no cache between steps, and the paged kernel's f16 K/V would cost ~1e-3
 * relative accuracy where embeddings are held to 1e-4 of f32 transformers. */
#ifndef VKPT_K_ENCATTN_H
#define VKPT_K_ENCATTN_H

#include "k_rows.h"

/* A sequence of the batch (host side). */
typedef struct vkpt_encattn_seq {
    uint32_t start; /* first row */
    uint32_t len;   /* rows, >= 1 */
} vkpt_encattn_seq;

typedef struct vkpt_encattn_params {
    uint32_t n_head, n_kv_head, head_dim; /* head_dim: multiple of 4, <= 256 */
    float scale;                          /* 0: 1/sqrt(head_dim) */
} vkpt_encattn_params;

/* Query rows per work item (the kernel's workgroup size). */
#define VKPT_ENCATTN_ROWS 64

/* Work items (three u32 each) for the batch: the count, or with items !=
 * NULL also written there; at most cap items are written (a larger count
 * means the buffer was too small). */
uint32_t vkpt_encattn_items(const vkpt_encattn_seq *seqs, uint32_t n_seqs, uint32_t *items,
                            uint32_t cap);

/* out row r, head h = softmax_j(scale * q[r,h] . k[j,kvh]) v[j,kvh] over the
 * rows j of r's sequence. items: n_items records from vkpt_encattn_items.
 * q, k, v: row views whose offsets and strides are multiples of 4 elements;
 * out: rows of n_head*head_dim at out.off + r*out.stride (multiples of 4
 * too). n_rows: rows the batch covers (for the bounds checks). Returns 0,
 * VKPT_EINVAL (shape, alignment, views too small) or the pipeline's error. */
int vkpt_k_encattn(vkpt_cmd *c, const vkpt_encattn_params *p, const vkpt_buf *items,
                   uint32_t n_items, uint32_t n_rows, const vkpt_rows *q, const vkpt_rows *k,
                   const vkpt_rows *v, const vkpt_rows *out);

/* Reference: scores, softmax and sums in double. Row r of q at q + r*q_stride,
 * head h at + h*head_dim; likewise k, v (kv heads) and out. */
void vkpt_ref_encattn(const vkpt_encattn_params *p, const vkpt_encattn_seq *seqs, uint32_t n_seqs,
                      const float *q, size_t q_stride, const float *k, size_t k_stride,
                      const float *v, size_t v_stride, float *out, size_t o_stride);

#endif
