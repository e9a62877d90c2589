/* vkpt_model_probe: what a model is (architecture, context, encoder or not)
 * from its files alone, without a device: the registry records this when a
 * model is registered. It opens the model as loading does (GGUF metadata or
 * config.json, tensor index) and fills the same vkpt_model_info fields. */
#include "model_int.h"

#include <stdio.h>
#include <string.h>

int vkpt_model_probe(const char *path, vkpt_model_info *out)
{
    if (!path || !out) return vkpt_fail(VKPT_EINVAL, "vkpt_model_probe: NULL");
    memset(out, 0, sizeof *out);
    vkpt_src *src = NULL;
    int err = vkpt_src_open(path, &src);
    if (err) return err;
    const vkpt_hparams *hp = &src->hp;
    snprintf(out->arch, sizeof out->arch, "%s", src->arch->gguf_name);
    snprintf(out->name, sizeof out->name, "%s", src->name[0] ? src->name : path);
    snprintf(out->source, sizeof out->source, "%s", src->is_gguf ? "gguf" : "hf");
    out->n_vocab = hp->n_vocab;
    out->n_embd = hp->n_embd;
    out->n_layer = hp->n_layer;
    out->n_head = hp->n_head;
    out->n_head_kv = hp->n_head_kv;
    out->head_dim = hp->head_dim;
    out->n_ff = hp->n_ff;
    out->n_ctx_train = hp->n_ctx_train;
    out->n_expert = hp->n_expert;
    out->n_expert_used = hp->n_expert_used;
    out->causal = !(src->arch->flags & VKPT_AF_ENCODER);
    out->pooling = hp->pooling;
    out->normalize = hp->normalize;
    for (size_t i = 0; i < src->n; i++) out->n_params += vkpt_src_nelem(&src->t[i]);
    vkpt_src_close(src);
    return 0;
}
