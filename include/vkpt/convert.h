/* Model files: random-weight models at real shapes (`vkpt synth`) and
 * quantization (`vkpt quantize`). Both write GGUF v3 files that llama.cpp
 * loads: its tensor names and metadata keys, its quantization mixes. */
#ifndef VKPT_CONVERT_H
#define VKPT_CONVERT_H

#include "vkpt/base.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A quantization recipe: the file type llama.cpp names and the per-tensor
 * types it implies. */
typedef struct vkpt_ftype_info {
    const char *name; /* "Q4_K_M" */
    uint32_t ftype;   /* general.file_type (llama.cpp's LLAMA_FTYPE_*) */
    uint32_t base;    /* main weight type (enum vkpt_qtype) */
} vkpt_ftype_info;

/* By name, case-insensitive ("q4_k_m", "F16"); NULL when unknown. */
const vkpt_ftype_info *vkpt_ftype_by_name(const char *name);
/* Comma-separated list of the names, for help texts. */
const char *vkpt_ftype_names(void);

typedef struct vkpt_synth_opts {
    const char *arch;   /* "llama", "qwen2", "qwen3", "mixtral" */
    const char *preset; /* "llama3.1-8b", ...; NULL to use the dims below */
    uint32_t n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx;
    uint32_t n_expert, n_expert_used;
    float rope_theta;
    const char *type; /* ftype name: F32, F16, BF16, Q8_0, Q4_0, Q4_K_M, Q5_K_M, Q6_K */
    uint64_t seed;
    int threads; /* 0: all cores */
    bool progress;
} vkpt_synth_opts;

/* Names of the presets, comma-separated. */
const char *vkpt_synth_presets(void);
/* Fill opts' dims from a preset name; VKPT_ENOTFOUND lists the presets. */
int vkpt_synth_preset(const char *name, vkpt_synth_opts *opts);
/* Write a random-weight model with a placeholder SentencePiece-style
 * vocabulary to `path`. */
int vkpt_synth(const vkpt_synth_opts *opts, const char *path);

/* Quantize `in` (a GGUF file or a Hugging Face folder) to GGUF `out` with
 * recipe `type`. Tensors whose rows do not split into the type's blocks fall
 * back as llama.cpp does (Q4_K -> Q5_0 -> Q8_0 -> F16, ...). */
int vkpt_quantize_file(const char *in, const char *out, const char *type, int threads,
                       bool progress);

#ifdef __cplusplus
}
#endif
#endif
