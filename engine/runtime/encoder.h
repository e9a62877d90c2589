/* The encoder forward pass (BERT/BGE, GTE v1.5, nomic-bert) over a packed
 * batch of sequences, with pooling on the GPU: one step embeds several
 * whole sequences of different lengths at once.
 *
 * Internal to the engine; the public face is include/vkpt/embed.h (the
 * embedder's worker thread calls vkpt_encoder_step). An encoder belongs to
 * one thread; nothing is allocated inside a step (every buffer is sized at
 * creation for max_tokens rows and max_seqs sequences).
 *
 * Which weights it reads (vkpt_model fields, see model.c's name table):
 *   tok_embd, pos_embd (BERT), type_embd (row 0: every token is segment A),
 *   embd_norm(_b); per layer wqkv(+bqkv) or wq/wk/wv(+biases), wo(+bo),
 *   post_norm(_b) = attn_output_norm (after attention + residual),
 *   w_up(+b_up) [BERT], w_up_gate(+b) [GTE] or w_gate + w_up [nomic],
 *   w_down(+b_down), ffn_norm(_b) = layer_output_norm (after FFN + residual).
 * Post-LayerNorm throughout: x = LN(x + attn(x)); x = LN(x + ffn(x)). */
#ifndef VKPT_ENCODER_H
#define VKPT_ENCODER_H

#include "k_pool.h"
#include "model_int.h"

typedef struct vkpt_encoder vkpt_encoder;

typedef struct vkpt_encoder_opts {
    uint32_t max_tokens;  /* rows per step (0: 2048); lowered to what one binding holds */
    uint32_t max_seqs;    /* sequences per step (0: 64) */
    uint32_t max_seq_len; /* longest sequence (0: the model's, at most 8192, <= max_tokens) */
    uint32_t queue;       /* device compute queue */
    bool batch_invariant; /* one matmul kernel whatever the step's size */
} vkpt_encoder_opts;

/* One sequence of a step. */
typedef struct vkpt_enc_seq {
    const int32_t *tokens;
    uint32_t n_tokens; /* 1..max_seq_len */
    uint32_t mode;     /* enum vkpt_pool_kind | VKPT_POOL_NORMALIZE */
    uint32_t dims;     /* leading dims of the vector, 1..n_embd */
} vkpt_enc_seq;

/* Create over a loaded encoder model (VKPT_EUNSUPPORTED for others). The
 * model must outlive it. Fails with VKPT_EDEVMEM when the scratch does not
 * fit. */
int vkpt_encoder_create(vkpt_model *m, const vkpt_encoder_opts *o, vkpt_encoder **out);
void vkpt_encoder_destroy(vkpt_encoder *e);
/* The limits it was created with (after defaults and device caps). */
uint32_t vkpt_encoder_max_tokens(const vkpt_encoder *e);
uint32_t vkpt_encoder_max_seqs(const vkpt_encoder *e);
uint32_t vkpt_encoder_max_seq_len(const vkpt_encoder *e);

/* Embed the sequences in one step (one command buffer). VKPT_EINVAL for a
 * bad batch (too many tokens or sequences, a token id outside the
 * vocabulary, a bad mode or dims), or the device's error (VKPT_EDEVLOST). */
int vkpt_encoder_step(vkpt_encoder *e, const vkpt_enc_seq *seqs, uint32_t n_seqs);
/* Sequence i's vector (its dims floats) from the last step; valid until the
 * next step. */
const float *vkpt_encoder_vec(const vkpt_encoder *e, uint32_t i);
/* Rows [row, row + n) of the last step's final hidden states (packed in
 * the step's sequence order), n_embd floats each, into dst (tests). */
int vkpt_encoder_hidden(vkpt_encoder *e, uint32_t row, uint32_t n, float *dst);

#endif
