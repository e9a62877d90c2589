/* engine/model internals: architecture descriptions (data, not code), the
 * hyperparameters every architecture is reduced to, a tensor source that
 * presents GGUF files and Hugging Face folders under one naming scheme, and
 * the loaded model's device tensors.
 *
 * Canonical tensor names are llama.cpp's GGUF names ("blk.3.attn_q.weight").
 * Hugging Face names are mapped onto them when a folder is opened, and
 * llama-family Q/K projections from Hugging Face are permuted to the GGUF
 * convention, so one forward pass (interleaved RoPE for those architectures)
 * serves both sources. */
#ifndef VKPT_MODEL_INT_H
#define VKPT_MODEL_INT_H

#include "gguf.h"
#include "k_rope.h"
#include "quant.h"
#include "safetensors.h"
#include "vk_int.h"
#include "vkpt/model.h"

enum vkpt_arch_id {
    VKPT_ARCH_LLAMA = 0, /* Llama 1-3, Mistral, Mixtral (llama + experts), TinyLlama, SmolLM */
    VKPT_ARCH_QWEN2,
    VKPT_ARCH_QWEN3,
    VKPT_ARCH_QWEN2MOE,
    VKPT_ARCH_QWEN3MOE,
    VKPT_ARCH_DBRX,
    VKPT_ARCH_BERT,
    VKPT_ARCH_NOMIC_BERT, /* nomic-embed-text: RoPE, fused Wqkv, SwiGLU, post-LayerNorm */
    VKPT_ARCH_GTE,        /* GTE v1.5 ("new"): RoPE with NTK scaling, fused qkv, GeGLU */
    VKPT_ARCH_COUNT
};

enum vkpt_arch_flags {
    VKPT_AF_QKV_BIAS = 1u << 0,      /* q/k/v projections have biases */
    VKPT_AF_QK_NORM = 1u << 1,       /* per-head RMSNorm on q and k (Qwen3) */
    VKPT_AF_ROPE_NEOX = 1u << 2,     /* RoPE on halves; else interleaved pairs */
    VKPT_AF_HF_PERMUTE_QK = 1u << 3, /* HF q/k rows are permuted to GGUF order on load */
    VKPT_AF_MOE = 1u << 4,
    VKPT_AF_ENCODER = 1u << 5,   /* non-causal, pooled output */
    VKPT_AF_LAYERNORM = 1u << 6, /* LayerNorm instead of RMSNorm */
    VKPT_AF_SHARED_EXPERT = 1u << 7,
    VKPT_AF_FUSED_QKV = 1u << 8,
    VKPT_AF_ROPE = 1u << 9, /* encoders: rotary positions (decoders always rotate) */
};

typedef struct vkpt_arch_desc {
    int id;
    const char *gguf_name;     /* general.architecture */
    const char *hf_model_type; /* config.json model_type values, comma-separated */
    unsigned flags;
} vkpt_arch_desc;

const vkpt_arch_desc *vkpt_arch_by_gguf(const char *name, size_t n);
const vkpt_arch_desc *vkpt_arch_by_hf(const char *model_type);
const vkpt_arch_desc *vkpt_arch_get(int id);

typedef struct vkpt_hparams {
    uint32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx_train;
    float norm_eps;
    /* RoPE */
    float rope_theta;
    uint32_t rot_dim;
    int rope_scaling; /* enum vkpt_rope_scaling (k_rope.h) */
    float rope_factor, rope_low_freq, rope_high_freq, yarn_beta_fast, yarn_beta_slow,
        yarn_attn_factor;
    uint32_t rope_orig_ctx;
    bool tie_embeddings;
    /* MoE */
    uint32_t n_expert, n_expert_used, n_ff_exp, n_ff_shexp;
    bool norm_topk;      /* divide the k routing weights by their p-norm */
    float expert_norm_p; /* that p: 1 (their sum) but for DBRX's moe_normalize_expert_weights */
    float clip_qkv;      /* 0 = none */
    uint32_t sliding_window;
    int32_t bos_id, eos_id;
    /* encoders (engine/runtime/encoder.c) */
    int pooling;    /* enum vkpt_pooling (vkpt/embed.h) from the model's files; 0 unknown */
    int normalize;  /* enum vkpt_normalize likewise; 0 unknown */
    int ffn_act;    /* enum vkpt_act (k_act.h) of the FFN: GELU erf, GELU tanh, SiLU */
    float rope_ntk; /* GTE's fixed NTK scaling factor (rope type "ntk"); 0 none */
} vkpt_hparams;

/* ---- tensor source ----------------------------------------------------------- */

enum vkpt_src_xform {
    VKPT_XF_NONE = 0,
    VKPT_XF_PERMUTE_QK, /* rows (h, 2, d/2) -> (h, d/2, 2) per head: HF -> GGUF RoPE order */
    VKPT_XF_TRANSPOSE,  /* each part is stored [ne0][ne1] row-major: transpose it */
};

/* A stored piece of a tensor: most tensors are one part; experts stored one
 * tensor per expert in Hugging Face folders become one stacked tensor with a
 * part per expert (ne[2] = experts). */
typedef struct vkpt_src_part {
    const uint8_t *data;
    uint64_t size;
} vkpt_src_part;

typedef struct vkpt_src_tensor {
    char name[96]; /* canonical name */
    uint32_t type; /* enum vkpt_qtype of the stored data */
    uint32_t n_dims;
    uint64_t ne[4]; /* ne[0] contiguous */
    uint64_t size;  /* bytes, all parts */
    uint32_t n_parts;
    vkpt_src_part *parts; /* [n_parts], equal sizes, in order */
    int xform;
    uint32_t xform_heads; /* heads for VKPT_XF_PERMUTE_QK */
} vkpt_src_tensor;

typedef struct vkpt_src {
    bool is_gguf;
    vkpt_gguf *gguf;
    vkpt_safetensors *st;
    char path[4096]; /* the file or folder */
    const vkpt_arch_desc *arch;
    vkpt_hparams hp;
    char name[128];
    vkpt_src_tensor *t;
    size_t n;
} vkpt_src;

/* Open a GGUF file or an HF folder, read its hyperparameters and index its
 * tensors under canonical names. Unknown HF tensors are an error naming them. */
int vkpt_src_open(const char *path, vkpt_src **out);
void vkpt_src_close(vkpt_src *s);
const vkpt_src_tensor *vkpt_src_find(const vkpt_src *s, const char *name);
/* Copy tensor `t` into `dst` converted to `out_type` (its own type, or F32 /
 * F16 / BF16 / a quantized type when the source is F32/F16/BF16), applying
 * its transform. `dst` holds vkpt_qtype_row_bytes(out_type, ne0) * rows. */
int vkpt_src_read(const vkpt_src_tensor *t, uint32_t out_type, void *dst);
/* The same for rows [row0, row0 + n_rows) (rows of ne0 elements across all
 * higher dimensions); `dst` receives just those rows. Thread-safe. */
int vkpt_src_read_rows(const vkpt_src_tensor *t, uint32_t out_type, uint64_t row0, uint64_t n_rows,
                       void *dst);
/* Element count. */
uint64_t vkpt_src_nelem(const vkpt_src_tensor *t);

/* ---- the loaded model ---------------------------------------------------------- */

typedef struct vkpt_tensor {
    uint32_t type;
    uint32_t n_dims;
    uint64_t ne[4];
    vkpt_buf buf;
} vkpt_tensor;

static inline bool vkpt_tensor_ok(const vkpt_tensor *t)
{
    return t->buf.buf != VK_NULL_HANDLE;
}

typedef struct vkpt_layer {
    vkpt_tensor attn_norm, attn_norm_b;
    vkpt_tensor wq, wk, wv, wqkv, bq, bk, bv, bqkv, wo, bo;
    vkpt_tensor q_norm, k_norm;
    vkpt_tensor ffn_norm, ffn_norm_b, post_norm, post_norm_b;
    vkpt_tensor w_gate, w_up, w_down, b_up, b_down;
    vkpt_tensor w_up_gate, b_up_gate; /* GTE: [2*n_ff][n_embd], up rows then gate rows */
    /* experts (MoE): [n_expert][...] stacked */
    vkpt_tensor gate_inp, gate_exps, up_exps, down_exps;
    vkpt_tensor gate_shexp, up_shexp, down_shexp, gate_inp_shexp;
} vkpt_layer;

struct vkpt_model {
    vkpt_device *dev;
    const vkpt_arch_desc *arch;
    vkpt_hparams hp;
    vkpt_model_info info;
    vkpt_tokenizer *tok;
    vkpt_tensor tok_embd, pos_embd, type_embd, embd_norm, embd_norm_b;
    vkpt_tensor out_norm, out_norm_b, output;
    vkpt_layer *layers;
    float *rope_freq_factors; /* [rot_dim/2] from GGUF rope_freqs.weight, or NULL */
};

/* Read the hyperparameters of a GGUF file / an HF config.json text. */
int vkpt__hparams_gguf(const vkpt_gguf *g, const vkpt_arch_desc *arch, vkpt_hparams *hp);
int vkpt__hparams_hf(const char *config_json, size_t len, const vkpt_arch_desc **arch,
                     vkpt_hparams *hp);
/* Pooling and normalisation from a sentence-transformers folder (modules.json,
 * its Pooling module's config.json) into hp->pooling / hp->normalize; a
 * folder without modules.json leaves them unknown. VKPT_EUNSUPPORTED names a
 * pooling mode or module vkpt does not compute (max, weighted mean, Dense). */
int vkpt__st_pooling(const char *dir, vkpt_hparams *hp);

#endif
