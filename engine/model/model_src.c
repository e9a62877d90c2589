/* Tensor sources: a GGUF file or a Hugging Face folder (config.json +
 * safetensors), indexed under canonical (llama.cpp GGUF) tensor names.
 *
 * Hugging Face names map onto canonical ones through the tables below; an
 * expert stored per expert becomes one stacked tensor (one part per expert),
 * and llama-family q/k projections are marked for the row permutation that
 * llama.cpp's converter applies, so both sources feed the same forward pass. */
#define _GNU_SOURCE
#include "model_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

uint64_t vkpt_src_nelem(const vkpt_src_tensor *t)
{
    return t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
}

void vkpt_src_close(vkpt_src *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) vkpt_free(s->t[i].parts);
    vkpt_free(s->t);
    vkpt_gguf_close(s->gguf);
    vkpt_st_close(s->st);
    vkpt_free(s);
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const vkpt_src_tensor *)a)->name, ((const vkpt_src_tensor *)b)->name);
}

const vkpt_src_tensor *vkpt_src_find(const vkpt_src *s, const char *name)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(s->t[mid].name, name);
        if (!r) return &s->t[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static vkpt_src_tensor *push(vkpt_src *s, size_t *cap)
{
    if (s->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        void *np = vkpt_realloc(s->t, nc * sizeof *s->t);
        if (!np) return NULL;
        s->t = np;
        *cap = nc;
    }
    vkpt_src_tensor *t = &s->t[s->n++];
    memset(t, 0, sizeof *t);
    return t;
}

/* ---- GGUF ------------------------------------------------------------------- */

static int open_gguf(vkpt_src *s)
{
    int err = vkpt_gguf_open(s->path, &s->gguf);
    if (err) return err;
    vkpt_span a;
    if ((err = vkpt_gguf_get_str(s->gguf, "general.architecture", &a))) return err;
    s->arch = vkpt_arch_by_gguf(a.p, a.n);
    if (!s->arch)
        return vkpt_fail(VKPT_EUNSUPPORTED, "%s: architecture '%.*s' is not supported", s->path,
                         (int)a.n, a.p);
    if ((err = vkpt__hparams_gguf(s->gguf, s->arch, &s->hp)))
        return vkpt_fail(err, "%s: %s", s->path, vkpt_errmsg(err));
    vkpt_span nm;
    if (!vkpt_gguf_get_str(s->gguf, "general.name", &nm))
        snprintf(s->name, sizeof s->name, "%.*s", (int)(nm.n > 120 ? 120 : nm.n), nm.p);
    size_t cap = 0;
    for (int64_t i = 0; i < vkpt_gguf_n_tensors(s->gguf); i++) {
        const vkpt_gguf_tensor *g = vkpt_gguf_tensor_at(s->gguf, i);
        if (g->name.n >= sizeof s->t[0].name)
            return vkpt_fail(VKPT_EFORMAT, "%s: tensor name '%.60s...' is too long", s->path,
                             g->name.p);
        vkpt_src_tensor *t = push(s, &cap);
        if (!t || !(t->parts = vkpt_malloc(sizeof *t->parts)))
            return vkpt_fail(VKPT_ENOMEM, "tensor index");
        memcpy(t->name, g->name.p, g->name.n);
        t->name[g->name.n] = 0;
        t->type = g->type;
        t->n_dims = g->n_dims;
        memcpy(t->ne, g->ne, sizeof t->ne);
        t->size = g->size;
        t->n_parts = 1;
        t->parts[0] = (vkpt_src_part){g->data, g->size};
    }
    return 0;
}

/* ---- Hugging Face --------------------------------------------------------------- */

typedef struct hf_map {
    const char *hf;    /* suffix after the layer prefix, or a full name for globals */
    const char *canon; /* canonical suffix ("attn_q.weight") */
} hf_map;

static const hf_map k_hf_global[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
    {"transformer.wte.weight", "token_embd.weight"},
    {"transformer.norm_f.weight", "output_norm.weight"},
    {"embeddings.word_embeddings.weight", "token_embd.weight"},
    {"embeddings.position_embeddings.weight", "position_embd.weight"},
    {"embeddings.token_type_embeddings.weight", "token_types.weight"},
    {"embeddings.LayerNorm.weight", "token_embd_norm.weight"},
    {"embeddings.LayerNorm.bias", "token_embd_norm.bias"},
    {"emb_ln.weight", "token_embd_norm.weight"}, /* nomic-bert */
    {"emb_ln.bias", "token_embd_norm.bias"},
};

static const hf_map k_hf_layer[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.bias", "attn_output.bias"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
    /* MoE routers and shared experts */
    {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.gate.weight", "ffn_gate_inp.weight"},
    {"mlp.shared_expert.gate_proj.weight", "ffn_gate_shexp.weight"},
    {"mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_expert.down_proj.weight", "ffn_down_shexp.weight"},
    {"mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight"},
    /* DBRX */
    {"norm_attn_norm.norm_1.weight", "attn_norm.weight"},
    {"norm_attn_norm.norm_2.weight", "attn_output_norm.weight"},
    {"norm_attn_norm.attn.Wqkv.weight", "attn_qkv.weight"},
    {"norm_attn_norm.attn.out_proj.weight", "attn_output.weight"},
    {"ffn.router.layer.weight", "ffn_gate_inp.weight"},
    {"ffn.experts.mlp.w1", "ffn_gate_exps.weight"},
    {"ffn.experts.mlp.v1", "ffn_up_exps.weight"},
    {"ffn.experts.mlp.w2", "ffn_down_exps.weight"},
    /* BERT */
    {"attention.self.query.weight", "attn_q.weight"},
    {"attention.self.query.bias", "attn_q.bias"},
    {"attention.self.key.weight", "attn_k.weight"},
    {"attention.self.key.bias", "attn_k.bias"},
    {"attention.self.value.weight", "attn_v.weight"},
    {"attention.self.value.bias", "attn_v.bias"},
    {"attention.output.dense.weight", "attn_output.weight"},
    {"attention.output.dense.bias", "attn_output.bias"},
    {"attention.output.LayerNorm.weight", "attn_output_norm.weight"},
    {"attention.output.LayerNorm.bias", "attn_output_norm.bias"},
    {"intermediate.dense.weight", "ffn_up.weight"},
    {"intermediate.dense.bias", "ffn_up.bias"},
    {"output.dense.weight", "ffn_down.weight"},
    {"output.dense.bias", "ffn_down.bias"},
    {"output.LayerNorm.weight", "layer_output_norm.weight"},
    {"output.LayerNorm.bias", "layer_output_norm.bias"},
    /* GTE v1.5 ("new") */
    {"attention.qkv_proj.weight", "attn_qkv.weight"},
    {"attention.qkv_proj.bias", "attn_qkv.bias"},
    {"attention.o_proj.weight", "attn_output.weight"},
    {"attention.o_proj.bias", "attn_output.bias"},
    {"attn_ln.weight", "attn_output_norm.weight"},
    {"attn_ln.bias", "attn_output_norm.bias"},
    {"mlp.up_gate_proj.weight", "ffn_up_gate.weight"},
    {"mlp.up_gate_proj.bias", "ffn_up_gate.bias"},
    {"mlp.down_proj.bias", "ffn_down.bias"},
    {"mlp_ln.weight", "layer_output_norm.weight"},
    {"mlp_ln.bias", "layer_output_norm.bias"},
    /* nomic-bert */
    {"attn.Wqkv.weight", "attn_qkv.weight"},
    {"attn.Wqkv.bias", "attn_qkv.bias"},
    {"attn.out_proj.weight", "attn_output.weight"},
    {"attn.out_proj.bias", "attn_output.bias"},
    {"norm1.weight", "attn_output_norm.weight"},
    {"norm1.bias", "attn_output_norm.bias"},
    {"mlp.fc11.weight", "ffn_up.weight"},
    {"mlp.fc12.weight", "ffn_gate.weight"},
    {"mlp.fc1.weight", "ffn_up.weight"},
    {"mlp.fc1.bias", "ffn_up.bias"},
    {"mlp.fc2.weight", "ffn_down.weight"},
    {"mlp.fc2.bias", "ffn_down.bias"},
    {"norm2.weight", "layer_output_norm.weight"},
    {"norm2.bias", "layer_output_norm.bias"},
};

/* Per-expert tensors: prefix "<layer prefix>" + pre + "<e>." + post. */
static const struct {
    const char *pre, *post, *canon;
} k_hf_expert[] = {
    {"block_sparse_moe.experts.", "w1.weight", "ffn_gate_exps.weight"},
    {"block_sparse_moe.experts.", "w3.weight", "ffn_up_exps.weight"},
    {"block_sparse_moe.experts.", "w2.weight", "ffn_down_exps.weight"},
    {"mlp.experts.", "gate_proj.weight", "ffn_gate_exps.weight"},
    {"mlp.experts.", "up_proj.weight", "ffn_up_exps.weight"},
    {"mlp.experts.", "down_proj.weight", "ffn_down_exps.weight"},
};

static const char *k_layer_prefixes[] = {"model.layers.", "transformer.blocks.", "encoder.layer.",
                                         "encoder.layers."};

/* Encoder checkpoints carry heads and buffers an embedding does not use
 * (the [CLS] pooler, masked-LM and classifier heads, position-id buffers),
 * and some prefix every name with the model's own ("bert.", "new.").
 * Returns the name to map, or NULL to skip the tensor. */
static const char *encoder_name(const char *hf)
{
    static const char *const prefixes[] = {"bert.", "new.", "model."};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i]);
        if (!strncmp(hf, prefixes[i], n) &&
            (!strncmp(hf + n, "embeddings.", 11) || !strncmp(hf + n, "encoder.", 8) ||
             !strncmp(hf + n, "emb_ln.", 7) || !strncmp(hf + n, "pooler.", 7))) {
            hf += n;
            break;
        }
    }
    static const char *const skip[] = {"pooler.", "cls.", "classifier.", "lm_head."};
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (!strncmp(hf, skip[i], strlen(skip[i]))) return NULL;
    if (!strcmp(hf, "embeddings.position_ids")) return NULL;
    return hf;
}

static int hf_type(int dtype, uint32_t *out)
{
    switch (dtype) {
    case VKPT_ST_F32: *out = VKPT_Q_F32; return 0;
    case VKPT_ST_F16: *out = VKPT_Q_F16; return 0;
    case VKPT_ST_BF16: *out = VKPT_Q_BF16; return 0;
    default: return -1;
    }
}

/* Map one HF name: canonical name into `canon`, expert index into *expert
 * (-1 for none). Returns false when the name is unknown. */
static bool hf_map_name(const char *hf, char *canon, size_t cap, int *expert)
{
    *expert = -1;
    for (size_t i = 0; i < sizeof k_hf_global / sizeof k_hf_global[0]; i++)
        if (!strcmp(hf, k_hf_global[i].hf)) {
            snprintf(canon, cap, "%s", k_hf_global[i].canon);
            return true;
        }
    for (size_t p = 0; p < sizeof k_layer_prefixes / sizeof k_layer_prefixes[0]; p++) {
        size_t pl = strlen(k_layer_prefixes[p]);
        if (strncmp(hf, k_layer_prefixes[p], pl)) continue;
        char *end;
        unsigned long layer = strtoul(hf + pl, &end, 10);
        if (end == hf + pl || *end != '.' || layer > 100000) return false;
        const char *rest = end + 1;
        for (size_t i = 0; i < sizeof k_hf_layer / sizeof k_hf_layer[0]; i++)
            if (!strcmp(rest, k_hf_layer[i].hf)) {
                snprintf(canon, cap, "blk.%lu.%s", layer, k_hf_layer[i].canon);
                return true;
            }
        for (size_t i = 0; i < sizeof k_hf_expert / sizeof k_hf_expert[0]; i++) {
            size_t l = strlen(k_hf_expert[i].pre);
            if (strncmp(rest, k_hf_expert[i].pre, l)) continue;
            unsigned long e = strtoul(rest + l, &end, 10);
            if (end == rest + l || *end != '.' || e > 4096 || strcmp(end + 1, k_hf_expert[i].post))
                continue;
            snprintf(canon, cap, "blk.%lu.%s", layer, k_hf_expert[i].canon);
            *expert = (int)e;
            return true;
        }
        return false;
    }
    return false;
}

static char *read_small(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = NULL;
    if (n >= 0 && n < (16 << 20) && (b = vkpt_malloc((size_t)n + 1))) {
        if (fread(b, 1, (size_t)n, f) != (size_t)n) {
            vkpt_free(b);
            b = NULL;
        } else {
            b[n] = 0;
            *len = (size_t)n;
        }
    }
    fclose(f);
    return b;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !memcmp(s + n - m, suffix, m);
}

/* DBRX stores each layer's experts fused, [n_expert * ff][d]: w1 and v1 as
 * Linear weights (gate, up), w2 transposed (down). Give them llama.cpp's
 * shapes: ffn_{gate,up}_exps [d][ff][E] (the same bytes), ffn_down_exps
 * [ff][d][E] (a part per expert, each transposed on read). */
static int fused_experts(const vkpt_src *s, vkpt_src_tensor *t, const vkpt_st_tensor *h)
{
    uint64_t E = s->hp.n_expert, d = t->ne[0];
    if (t->n_dims != 2 || !E || t->ne[1] % E)
        return vkpt_fail(VKPT_EFORMAT, "%s: tensor '%.120s' is not %llu fused experts", s->path,
                         h->name, (unsigned long long)E);
    uint64_t ff = t->ne[1] / E;
    t->n_dims = 3;
    t->ne[2] = E;
    t->ne[3] = 1;
    if (!ends_with(t->name, ".ffn_down_exps.weight")) {
        t->ne[1] = ff;
        return 0;
    }
    vkpt_src_part *parts = vkpt_calloc(E, sizeof *parts);
    if (!parts) return vkpt_fail(VKPT_ENOMEM, "tensor index");
    for (uint64_t e = 0; e < E; e++)
        parts[e] = (vkpt_src_part){h->data + e * (h->size / E), h->size / E};
    vkpt_free(t->parts);
    t->parts = parts;
    t->n_parts = (uint32_t)E;
    t->ne[0] = ff;
    t->ne[1] = d;
    t->xform = VKPT_XF_TRANSPOSE;
    return 0;
}

static int open_hf(vkpt_src *s)
{
    char p[sizeof s->path + 16];
    snprintf(p, sizeof p, "%s/config.json", s->path);
    size_t len = 0;
    char *cfg = read_small(p, &len);
    if (!cfg)
        return vkpt_fail(VKPT_EIO, "%s: cannot read config.json (%s)", s->path, strerror(errno));
    int err = vkpt__hparams_hf(cfg, len, &s->arch, &s->hp);
    vkpt_free(cfg);
    if (err) return vkpt_fail(err, "%s: %s", p, vkpt_errmsg(err));
    const char *base = strrchr(s->path, '/');
    snprintf(s->name, sizeof s->name, "%.120s", base && base[1] ? base + 1 : s->path);
    if ((err = vkpt_st_open(s->path, &s->st))) return err;

    size_t cap = 0;
    bool encoder = (s->arch->flags & VKPT_AF_ENCODER) != 0;
    if (encoder && (err = vkpt__st_pooling(s->path, &s->hp))) return err;
    for (size_t i = 0; i < vkpt_st_count(s->st); i++) {
        const vkpt_st_tensor *h = vkpt_st_at(s->st, i);
        char canon[96];
        int expert;
        const char *hname = encoder ? encoder_name(h->name) : h->name;
        if (!hname) {
            VKPT_LOGD("%s: ignoring tensor %s (not used for embeddings)", s->path, h->name);
            continue;
        }
        if (!hf_map_name(hname, canon, sizeof canon, &expert)) {
            /* rotary caches some checkpoints carry are derived data */
            if (strstr(h->name, "rotary_emb.inv_freq")) continue;
            return vkpt_fail(VKPT_EUNSUPPORTED, "%s: tensor '%.120s' has no meaning vkpt knows",
                             s->path, h->name);
        }
        uint32_t type;
        if (hf_type(h->dtype, &type))
            return vkpt_fail(VKPT_EUNSUPPORTED,
                             "%s: tensor '%.120s' has dtype %s (F32, F16, BF16 supported)", s->path,
                             h->name, vkpt_st_dtype_name(h->dtype));
        if (h->n_dims < 1 || h->n_dims > 3)
            return vkpt_fail(VKPT_EFORMAT, "%s: tensor '%.120s' has %u dimensions", s->path,
                             h->name, h->n_dims);
        vkpt_src_tensor *t = (vkpt_src_tensor *)vkpt_src_find(s, canon);
        if (expert >= 0) {
            if (!s->hp.n_expert || (uint32_t)expert >= s->hp.n_expert)
                return vkpt_fail(VKPT_EFORMAT, "%s: tensor '%.120s': expert %d of %u", s->path,
                                 h->name, expert, s->hp.n_expert);
            if (!t) {
                if (!(t = push(s, &cap)) ||
                    !(t->parts = vkpt_calloc(s->hp.n_expert, sizeof *t->parts)))
                    return vkpt_fail(VKPT_ENOMEM, "tensor index");
                snprintf(t->name, sizeof t->name, "%s", canon);
                t->type = type;
                t->n_dims = 3;
                t->ne[0] = h->shape[h->n_dims - 1];
                t->ne[1] = h->n_dims > 1 ? h->shape[0] : 1;
                t->ne[2] = s->hp.n_expert;
                t->ne[3] = 1;
                t->n_parts = s->hp.n_expert;
                /* keep the index sorted for vkpt_src_find */
                qsort(s->t, s->n, sizeof *s->t, cmp_tensor);
                t = (vkpt_src_tensor *)vkpt_src_find(s, canon);
            }
            if (t->parts[expert].data || t->type != type ||
                h->size * s->hp.n_expert != vkpt_src_nelem(t) * vkpt_qtype_get(type)->block_bytes)
                return vkpt_fail(VKPT_EFORMAT,
                                 "%s: tensor '%.120s' repeats or differs from its sibling experts",
                                 s->path, h->name);
            t->parts[expert] = (vkpt_src_part){h->data, h->size};
            t->size += h->size;
            continue;
        }
        if (t) return vkpt_fail(VKPT_EFORMAT, "%s: two tensors map to '%s'", s->path, canon);
        if (!(t = push(s, &cap)) || !(t->parts = vkpt_malloc(sizeof *t->parts)))
            return vkpt_fail(VKPT_ENOMEM, "tensor index");
        snprintf(t->name, sizeof t->name, "%s", canon);
        t->type = type;
        t->n_dims = h->n_dims;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < h->n_dims; d++) t->ne[d] = h->shape[h->n_dims - 1 - d];
        t->size = h->size;
        t->n_parts = 1;
        t->parts[0] = (vkpt_src_part){h->data, h->size};
        if (s->arch->flags & VKPT_AF_HF_PERMUTE_QK) {
            bool q = ends_with(canon, ".attn_q.weight") || ends_with(canon, ".attn_q.bias");
            bool k = ends_with(canon, ".attn_k.weight") || ends_with(canon, ".attn_k.bias");
            if (q || k) {
                t->xform = VKPT_XF_PERMUTE_QK;
                t->xform_heads = q ? s->hp.n_head : s->hp.n_head_kv;
            }
        }
        if (ends_with(canon, "_exps.weight") && (err = fused_experts(s, t, h))) return err;
        qsort(s->t, s->n, sizeof *s->t, cmp_tensor);
    }
    for (size_t i = 0; i < s->n; i++)
        for (uint32_t e = 0; e < s->t[i].n_parts; e++)
            if (!s->t[i].parts[e].data)
                return vkpt_fail(VKPT_EFORMAT, "%s: '%s' is missing expert %u", s->path,
                                 s->t[i].name, e);
    if (!vkpt_src_find(s, "output.weight") && !s->hp.tie_embeddings &&
        !(s->arch->flags & VKPT_AF_ENCODER))
        return vkpt_fail(VKPT_EFORMAT, "%s: no lm_head.weight and tie_word_embeddings is false",
                         s->path);
    return 0;
}

int vkpt_src_open(const char *path, vkpt_src **out)
{
    *out = NULL;
    struct stat sb;
    if (!path || stat(path, &sb) != 0)
        return vkpt_fail(VKPT_ENOTFOUND,
                         "model '%s' not found: give a .gguf file or a Hugging Face folder",
                         path ? path : "(null)");
    vkpt_src *s = vkpt_calloc(1, sizeof *s);
    if (!s) return vkpt_fail(VKPT_ENOMEM, "model source");
    snprintf(s->path, sizeof s->path, "%s", path);
    size_t pl = strlen(s->path);
    while (pl > 1 && s->path[pl - 1] == '/') s->path[--pl] = 0;
    s->is_gguf = !S_ISDIR(sb.st_mode);
    int err = s->is_gguf ? open_gguf(s) : open_hf(s);
    if (!err && s->n > 1) qsort(s->t, s->n, sizeof *s->t, cmp_tensor);
    if (err) {
        vkpt_src_close(s);
        return err;
    }
    *out = s;
    return 0;
}

/* ---- reading with conversion ---------------------------------------------------------- */

static void to_f32(uint32_t type, const uint8_t *src, float *dst, uint64_t n)
{
    switch (type) {
    case VKPT_Q_F32: memcpy(dst, src, n * 4); break;
    case VKPT_Q_F16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = vkpt_f16_to_f32(h);
        }
        break;
    case VKPT_Q_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = vkpt_bf16_to_f32(h);
        }
        break;
    default: vkpt_dequantize_row(type, src, dst, n);
    }
}

static int from_f32(uint32_t type, const float *src, uint8_t *dst, uint64_t n)
{
    switch (type) {
    case VKPT_Q_F32: memcpy(dst, src, n * 4); return 0;
    case VKPT_Q_F16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = vkpt_f32_to_f16(src[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        return 0;
    case VKPT_Q_BF16:
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = vkpt_f32_to_bf16(src[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
        return 0;
    default: return vkpt_quantize_row(type, src, dst, (size_t)n);
    }
}

/* Row r of the tensor as stored (rows = ne1*ne2*ne3 of ne0 elements). */
static const uint8_t *stored_row(const vkpt_src_tensor *t, uint64_t r, uint64_t row_bytes)
{
    uint64_t rows_per_part = vkpt_src_nelem(t) / t->ne[0] / t->n_parts;
    return t->parts[r / rows_per_part].data + (r % rows_per_part) * row_bytes;
}

int vkpt_src_read(const vkpt_src_tensor *t, uint32_t out_type, void *dst)
{
    return vkpt_src_read_rows(t, out_type, 0, vkpt_src_nelem(t) / t->ne[0], dst);
}

/* Rows of a tensor whose parts are stored transposed: part p is a
 * row-major [ne0][ne1] matrix whose columns are canonical rows p*ne1 ..
 * p*ne1 + ne1 - 1. Plain types only. Rows go in blocks of up to 32, so the
 * gather reads each stored row contiguously. */
static int read_transposed(const vkpt_src_tensor *t, uint32_t out_type, uint64_t row0,
                           uint64_t n_rows, void *dst)
{
    enum { B = 32 };
    const uint64_t ne0 = t->ne[0], ne1 = t->ne[1];
    const uint64_t esz = t->type == VKPT_Q_F32 ? 4 : 2;
    if (t->type != VKPT_Q_F32 && t->type != VKPT_Q_F16 && t->type != VKPT_Q_BF16)
        return vkpt_fail(VKPT_EUNSUPPORTED, "%s: transposing %s data is not supported", t->name,
                         vkpt_qtype_get(t->type)->name);
    if ((uint64_t)t->n_parts * ne1 * ne0 != vkpt_src_nelem(t))
        return vkpt_fail(VKPT_EFORMAT, "%s: parts do not match the shape", t->name);
    const uint64_t out_rb = vkpt_qtype_row_bytes(out_type, ne0);
    float *tmp = vkpt_malloc(B * ne0 * sizeof(float));
    if (!tmp) return vkpt_fail(VKPT_ENOMEM, "conversion buffer");
    int err = 0;
    for (uint64_t r = row0, nb; r < row0 + n_rows && !err; r += nb) {
        uint64_t p = r / ne1, c0 = r % ne1;
        nb = row0 + n_rows - r;
        if (nb > B) nb = B;
        if (nb > ne1 - c0) nb = ne1 - c0; /* within one part */
        float v[B];
        for (uint64_t i = 0; i < ne0; i++) {
            to_f32(t->type, t->parts[p].data + (i * ne1 + c0) * esz, v, nb);
            for (uint64_t j = 0; j < nb; j++) tmp[j * ne0 + i] = v[j];
        }
        for (uint64_t j = 0; j < nb && !err; j++)
            err = from_f32(out_type, tmp + j * ne0, (uint8_t *)dst + (r - row0 + j) * out_rb, ne0);
    }
    vkpt_free(tmp);
    return err;
}

int vkpt_src_read_rows(const vkpt_src_tensor *t, uint32_t out_type, uint64_t row0, uint64_t n_rows,
                       void *dst)
{
    const vkpt_qtype_info *ti = vkpt_qtype_get(t->type), *oi = vkpt_qtype_get(out_type);
    if (!ti || !oi) return vkpt_fail(VKPT_EINVAL, "%s: bad type", t->name);
    uint64_t ne0 = t->ne[0], rows = vkpt_src_nelem(t) / ne0;
    if (row0 > rows || n_rows > rows - row0)
        return vkpt_fail(VKPT_EINVAL, "%s: rows out of range", t->name);
    uint64_t in_rb = vkpt_qtype_row_bytes(t->type, ne0),
             out_rb = vkpt_qtype_row_bytes(out_type, ne0);
    if (!in_rb || !out_rb)
        return vkpt_fail(VKPT_EINVAL, "%s: rows of %llu elements cannot be stored as %s", t->name,
                         (unsigned long long)ne0, oi->name);
    bool plain_in = t->type == VKPT_Q_F32 || t->type == VKPT_Q_F16 || t->type == VKPT_Q_BF16;
    if (out_type != t->type && !plain_in && out_type != VKPT_Q_F32)
        return vkpt_fail(VKPT_EUNSUPPORTED,
                         "%s: converting %s to %s is not supported (requantizing loses "
                         "quality; start from an F16/BF16/F32 model)",
                         t->name, ti->name, oi->name);
    if (t->xform == VKPT_XF_TRANSPOSE) return read_transposed(t, out_type, row0, n_rows, dst);
    /* 1-D tensors under the q/k permutation are permuted element-wise */
    bool perm = t->xform == VKPT_XF_PERMUTE_QK;
    uint64_t perm_unit = 0, heads = t->xform_heads;
    if (perm) {
        perm_unit = t->n_dims == 1 ? 1 : 0;
        if (!heads || (t->n_dims == 1 ? ne0 : rows) % (2 * heads))
            return vkpt_fail(VKPT_EFORMAT, "%s: %llu rows do not split into %llu heads", t->name,
                             (unsigned long long)(t->n_dims == 1 ? ne0 : rows),
                             (unsigned long long)heads);
    }
    float *tmp = NULL;
    if ((out_type != t->type || (perm && perm_unit)) && !(tmp = vkpt_malloc(ne0 * sizeof(float))))
        return vkpt_fail(VKPT_ENOMEM, "conversion buffer");
    int err = 0;
    for (uint64_t r = row0; r < row0 + n_rows && !err; r++) {
        uint64_t src_r = r;
        if (perm && !perm_unit) {
            /* new row (h, i, j) comes from old row (h, j, i); d = rows per head */
            uint64_t d = rows / heads, h = r / d, w = r % d, i = w / 2, j = w % 2;
            src_r = h * d + j * (d / 2) + i;
        }
        const uint8_t *in = stored_row(t, src_r, in_rb);
        uint8_t *o = (uint8_t *)dst + (r - row0) * out_rb;
        if (perm && perm_unit) { /* a bias vector: ne0 elements, one row */
            float *f = vkpt_malloc(ne0 * sizeof(float));
            if (!f) {
                err = vkpt_fail(VKPT_ENOMEM, "conversion buffer");
                break;
            }
            to_f32(t->type, in, f, ne0);
            uint64_t d = ne0 / heads;
            for (uint64_t k = 0; k < ne0; k++) {
                uint64_t h = k / d, w = k % d, i = w / 2, j = w % 2;
                tmp[k] = f[h * d + j * (d / 2) + i];
            }
            vkpt_free(f);
            err = from_f32(out_type, tmp, o, ne0);
        } else if (out_type == t->type) {
            memcpy(o, in, in_rb);
        } else {
            to_f32(t->type, in, tmp, ne0);
            err = from_f32(out_type, tmp, o, ne0);
        }
    }
    vkpt_free(tmp);
    return err;
}
