/* vkpt models: load a GGUF file or a Hugging Face folder onto a device.
 *
 * A vkpt_model owns the weights on one device and the model's tokenizer. It
 * is immutable after loading, so several runners (sequences, replicas on
 * other queues of the same device) may share it.
 */
#ifndef VKPT_MODEL_H
#define VKPT_MODEL_H

#include "vkpt/device.h"
#include "vkpt/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkpt_model vkpt_model;

typedef struct vkpt_model_opts {
    /* Quantize 2-D weights at load to this GGUF type (VKPT_Q_Q8_0 = 8,
     * VKPT_Q_Q4_K = 12), or -1 to keep the file's types. F32/F16/BF16 weights
     * only; weights already quantized are kept. */
    int quantize;
    /* Progress bar on stderr while uploading (only when stderr is a terminal;
     * otherwise one log line). */
    bool progress;
    /* Context length to plan memory for (0: the model's training context,
     * capped at 4096). */
    uint32_t n_ctx;
    /* KV-cache budget as a fraction of free device memory after weights
     * (0: 0.9). Used only for the estimate printed before loading. */
    float kv_fraction;
} vkpt_model_opts;

#define VKPT_MODEL_OPTS_DEFAULT          \
    {                                    \
        .quantize = -1, .progress = true \
    }

typedef struct vkpt_model_info {
    char arch[32];   /* "llama", "qwen2", "qwen3", ... */
    char name[128];  /* general.name or the folder's name */
    char source[16]; /* "gguf" or "hf" */
    uint32_t n_vocab;
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim;
    uint32_t n_ff;
    uint32_t n_ctx_train;
    uint32_t n_expert, n_expert_used;
    uint64_t n_params;
    uint64_t weight_bytes; /* on the device */
    bool causal;           /* false for encoders (embedding models) */
    /* Encoders: the pooling and normalisation the model's files ask for
     * (sentence-transformers modules.json + 1_Pooling/config.json, GGUF
     * <arch>.pooling_type): enum vkpt_pooling / enum vkpt_normalize
     * (vkpt/embed.h), 0 when the files do not say. */
    int pooling;
    int normalize;
} vkpt_model_info;

/* Load `path` (a .gguf file or a folder with config.json + safetensors) onto
 * `dev`. Refuses with VKPT_EDEVMEM and the numbers when the weights plus a
 * minimal KV cache cannot fit the device. */
int vkpt_model_load(vkpt_device *dev, const char *path, const vkpt_model_opts *opts,
                    vkpt_model **out);
void vkpt_model_destroy(vkpt_model *m);
/* Describe the model at `path` from its files alone (no device, no weights
 * read): the vkpt_model_info a load would give, less weight_bytes (0) and
 * with n_params counting every tensor. Fails as loading would on a file it
 * cannot read (VKPT_EFORMAT, VKPT_EUNSUPPORTED, VKPT_EIO). */
int vkpt_model_probe(const char *path, vkpt_model_info *out);
const vkpt_model_info *vkpt_model_get_info(const vkpt_model *m);
/* The model's tokenizer (owned by the model). */
const vkpt_tokenizer *vkpt_model_tokenizer(const vkpt_model *m);
vkpt_device *vkpt_model_device(const vkpt_model *m);
/* Bytes of KV cache one token takes across all layers (f16 K and V). */
uint64_t vkpt_model_kv_bytes_per_token(const vkpt_model *m);

#ifdef __cplusplus
}
#endif
#endif
