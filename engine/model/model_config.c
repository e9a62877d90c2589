/* Architecture table and hyperparameters.
 *
 * What differs between architectures is data in k_archs (flags); the forward
 * pass reads the flags. Hyperparameters come from GGUF keys
 * ("<arch>.embedding_length", ...) or from config.json in both the
 * transformers 4 form (rope_theta / rope_scaling at the top level) and the
 * transformers 5 form (rope_parameters). */
#define _GNU_SOURCE
#include "model_int.h"

#include "k_act.h"
#include "vkpt/embed.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const vkpt_arch_desc k_archs[VKPT_ARCH_COUNT] = {
    [VKPT_ARCH_LLAMA] = {VKPT_ARCH_LLAMA, "llama", "llama,mistral,mixtral", VKPT_AF_HF_PERMUTE_QK},
    [VKPT_ARCH_QWEN2] = {VKPT_ARCH_QWEN2, "qwen2", "qwen2", VKPT_AF_QKV_BIAS | VKPT_AF_ROPE_NEOX},
    [VKPT_ARCH_QWEN3] = {VKPT_ARCH_QWEN3, "qwen3", "qwen3", VKPT_AF_QK_NORM | VKPT_AF_ROPE_NEOX},
    [VKPT_ARCH_QWEN2MOE] = {VKPT_ARCH_QWEN2MOE, "qwen2moe", "qwen2_moe",
                            VKPT_AF_QKV_BIAS | VKPT_AF_ROPE_NEOX | VKPT_AF_MOE |
                                VKPT_AF_SHARED_EXPERT},
    [VKPT_ARCH_QWEN3MOE] = {VKPT_ARCH_QWEN3MOE, "qwen3moe", "qwen3_moe",
                            VKPT_AF_QK_NORM | VKPT_AF_ROPE_NEOX | VKPT_AF_MOE},
    [VKPT_ARCH_DBRX] = {VKPT_ARCH_DBRX, "dbrx", "dbrx",
                        VKPT_AF_ROPE_NEOX | VKPT_AF_MOE | VKPT_AF_LAYERNORM | VKPT_AF_FUSED_QKV},
    [VKPT_ARCH_BERT] = {VKPT_ARCH_BERT, "bert", "bert", VKPT_AF_ENCODER | VKPT_AF_LAYERNORM},
    [VKPT_ARCH_NOMIC_BERT] = {VKPT_ARCH_NOMIC_BERT, "nomic-bert", "nomic_bert",
                              VKPT_AF_ENCODER | VKPT_AF_LAYERNORM | VKPT_AF_ROPE |
                                  VKPT_AF_ROPE_NEOX | VKPT_AF_FUSED_QKV},
    /* GTE v1.5 (Alibaba-NLP/new-impl). llama.cpp has no GGUF form of it; the
     * name only labels vkpt's own files. */
    [VKPT_ARCH_GTE] = {VKPT_ARCH_GTE, "new", "new",
                       VKPT_AF_ENCODER | VKPT_AF_LAYERNORM | VKPT_AF_ROPE | VKPT_AF_ROPE_NEOX |
                           VKPT_AF_FUSED_QKV},
};

/* The FFN activation an encoder architecture uses unless its config says
 * otherwise: BERT and GTE GELU (erf; GTE gated), nomic-bert SwiGLU. */
static int encoder_act(const vkpt_arch_desc *arch)
{
    return arch->id == VKPT_ARCH_NOMIC_BERT ? VKPT_ACT_SILU : VKPT_ACT_GELU_ERF;
}

const vkpt_arch_desc *vkpt_arch_get(int id)
{
    return id >= 0 && id < VKPT_ARCH_COUNT ? &k_archs[id] : NULL;
}

const vkpt_arch_desc *vkpt_arch_by_gguf(const char *name, size_t n)
{
    for (int i = 0; i < VKPT_ARCH_COUNT; i++)
        if (strlen(k_archs[i].gguf_name) == n && !memcmp(k_archs[i].gguf_name, name, n))
            return &k_archs[i];
    return NULL;
}

const vkpt_arch_desc *vkpt_arch_by_hf(const char *model_type)
{
    size_t n = strlen(model_type);
    for (int i = 0; i < VKPT_ARCH_COUNT; i++) {
        const char *p = k_archs[i].hf_model_type;
        while (p && *p) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            if (len == n && !memcmp(p, model_type, n)) return &k_archs[i];
            p = e ? e + 1 : NULL;
        }
    }
    return NULL;
}

/* Fill what both sources leave implicit and check the result is usable. */
static int finish(vkpt_hparams *hp, const char *src)
{
    if (!hp->n_head_kv) hp->n_head_kv = hp->n_head;
    if (!hp->head_dim && hp->n_head) hp->head_dim = hp->n_embd / hp->n_head;
    if (!hp->rot_dim) hp->rot_dim = hp->head_dim;
    if (hp->rope_theta <= 0) hp->rope_theta = 10000.0f;
    if (hp->norm_eps <= 0) hp->norm_eps = 1e-5f;
    if (hp->rope_scaling == VKPT_ROPE_YARN) {
        if (hp->yarn_beta_fast <= 0) hp->yarn_beta_fast = 32;
        if (hp->yarn_beta_slow <= 0) hp->yarn_beta_slow = 1;
    }
    if (!hp->n_embd || !hp->n_layer || !hp->n_head || !hp->n_vocab || !hp->head_dim)
        return vkpt_fail(
            VKPT_EFORMAT,
            "%s: missing model dimensions (embedding %u, layers %u, heads %u, vocab %u)", src,
            hp->n_embd, hp->n_layer, hp->n_head, hp->n_vocab);
    if (hp->n_head % hp->n_head_kv)
        return vkpt_fail(VKPT_EFORMAT, "%s: %u attention heads is not a multiple of %u KV heads",
                         src, hp->n_head, hp->n_head_kv);
    if (hp->rot_dim > hp->head_dim || hp->rot_dim % 2)
        return vkpt_fail(VKPT_EFORMAT, "%s: rotary dimension %u does not fit head dimension %u",
                         src, hp->rot_dim, hp->head_dim);
    if (hp->n_layer > 1024 || hp->n_head > 1024 || hp->head_dim > 1024 || hp->n_embd > (1u << 20) ||
        hp->n_vocab > (1u << 24))
        return vkpt_fail(VKPT_EFORMAT, "%s: implausible model dimensions", src);
    if (hp->n_expert &&
        (hp->n_expert_used == 0 || hp->n_expert_used > hp->n_expert || hp->n_expert > 512))
        return vkpt_fail(VKPT_EFORMAT, "%s: %u experts with %u used per token", src, hp->n_expert,
                         hp->n_expert_used);
    return 0;
}

/* ---- GGUF ------------------------------------------------------------------ */

static void g_u32(const vkpt_gguf *g, const char *arch, const char *suffix, uint32_t *out)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint32_t v;
    if (!vkpt_gguf_get_u32(g, key, &v)) *out = v;
}

static void g_f32(const vkpt_gguf *g, const char *arch, const char *suffix, float *out)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    float v;
    if (!vkpt_gguf_get_f32(g, key, &v)) *out = v;
}

int vkpt__hparams_gguf(const vkpt_gguf *g, const vkpt_arch_desc *arch, vkpt_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    const char *a = arch->gguf_name;
    hp->bos_id = hp->eos_id = -1;
    g_u32(g, a, "context_length", &hp->n_ctx_train);
    g_u32(g, a, "embedding_length", &hp->n_embd);
    g_u32(g, a, "block_count", &hp->n_layer);
    g_u32(g, a, "feed_forward_length", &hp->n_ff);
    g_u32(g, a, "attention.head_count", &hp->n_head);
    g_u32(g, a, "attention.head_count_kv", &hp->n_head_kv);
    g_u32(g, a, "attention.key_length", &hp->head_dim);
    g_u32(g, a, "rope.dimension_count", &hp->rot_dim);
    g_u32(g, a, "vocab_size", &hp->n_vocab);
    g_f32(g, a, "attention.layer_norm_rms_epsilon", &hp->norm_eps);
    g_f32(g, a, "attention.layer_norm_epsilon", &hp->norm_eps);
    g_f32(g, a, "rope.freq_base", &hp->rope_theta);
    g_u32(g, a, "expert_count", &hp->n_expert);
    g_u32(g, a, "expert_used_count", &hp->n_expert_used);
    g_u32(g, a, "expert_feed_forward_length", &hp->n_ff_exp);
    g_u32(g, a, "expert_shared_feed_forward_length", &hp->n_ff_shexp);
    g_f32(g, a, "attention.clamp_kqv", &hp->clip_qkv);
    g_u32(g, a, "attention.sliding_window", &hp->sliding_window);
    /* llama.cpp renormalizes the top-k weights of Mixtral (llama), Qwen3-MoE
     * and DBRX, not Qwen2-MoE's */
    bool norm =
        arch->id == VKPT_ARCH_LLAMA || arch->id == VKPT_ARCH_QWEN3MOE || arch->id == VKPT_ARCH_DBRX;
    char key[160];
    snprintf(key, sizeof key, "%s.expert_weights_norm", a);
    vkpt_gguf_get_bool(g, key, &norm);
    hp->norm_topk = norm;
    hp->expert_norm_p = 1.0f;
    vkpt_span st;
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    if (!vkpt_gguf_get_str(g, key, &st)) {
        if (st.n == 6 && !memcmp(st.p, "linear", 6))
            hp->rope_scaling = VKPT_ROPE_LINEAR;
        else if (st.n == 4 && !memcmp(st.p, "yarn", 4))
            hp->rope_scaling = VKPT_ROPE_YARN;
    }
    g_f32(g, a, "rope.scaling.factor", &hp->rope_factor);
    g_u32(g, a, "rope.scaling.original_context_length", &hp->rope_orig_ctx);
    g_f32(g, a, "rope.scaling.attn_factor", &hp->yarn_attn_factor);
    g_f32(g, a, "rope.scaling.yarn_beta_fast", &hp->yarn_beta_fast);
    g_f32(g, a, "rope.scaling.yarn_beta_slow", &hp->yarn_beta_slow);
    if (hp->rope_scaling == VKPT_ROPE_LINEAR && hp->rope_factor <= 0)
        hp->rope_scaling = VKPT_ROPE_PLAIN;
    if (!hp->n_vocab) {
        uint64_t n;
        if (!vkpt_gguf_get_arr(g, "tokenizer.ggml.tokens", NULL, &n) && n < (1u << 24))
            hp->n_vocab = (uint32_t)n;
    }
    uint32_t id;
    if (!vkpt_gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &id)) hp->bos_id = (int32_t)id;
    if (!vkpt_gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &id)) hp->eos_id = (int32_t)id;
    hp->tie_embeddings = vkpt_gguf_find_tensor(g, "output.weight") == NULL;
    if (arch->flags & VKPT_AF_ENCODER) {
        hp->ffn_act = encoder_act(arch);
        /* llama.cpp's enum llama_pooling_type: 1 mean, 2 cls, 3 last (0 none,
         * 4 rank: no default here) */
        uint32_t pt = 0;
        g_u32(g, a, "pooling_type", &pt);
        hp->pooling = pt == 1   ? VKPT_POOLING_MEAN
                      : pt == 2 ? VKPT_POOLING_CLS
                      : pt == 3 ? VKPT_POOLING_LAST
                                : 0;
    }
    return finish(hp, "GGUF");
}

/* ---- Hugging Face config.json ------------------------------------------------------ */

static bool j_num(const cJSON *o, const char *k, double *out)
{
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    if (!cJSON_IsNumber(v)) return false;
    *out = v->valuedouble;
    return true;
}

static void j_u32(const cJSON *o, const char *k, uint32_t *out)
{
    double d;
    if (j_num(o, k, &d) && d >= 0 && d < 4294967296.0) *out = (uint32_t)d;
}

static void j_f32(const cJSON *o, const char *k, float *out)
{
    double d;
    if (j_num(o, k, &d)) *out = (float)d;
}

static void j_id(const cJSON *o, const char *k, int32_t *out)
{
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    if (cJSON_IsNumber(v))
        *out = (int32_t)v->valuedouble;
    else if (cJSON_IsArray(v) && cJSON_IsNumber(cJSON_GetArrayItem(v, 0)))
        *out = (int32_t)cJSON_GetArrayItem(v, 0)->valuedouble;
}

static int rope_from(const cJSON *rp, vkpt_hparams *hp)
{
    if (!cJSON_IsObject(rp)) return 0;
    j_f32(rp, "rope_theta", &hp->rope_theta);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
    if (!cJSON_IsString(t)) t = cJSON_GetObjectItemCaseSensitive(rp, "type");
    const char *type = cJSON_IsString(t) ? t->valuestring : "default";
    if (!strcmp(type, "default"))
        hp->rope_scaling = VKPT_ROPE_PLAIN;
    else if (!strcmp(type, "linear"))
        hp->rope_scaling = VKPT_ROPE_LINEAR;
    else if (!strcmp(type, "llama3"))
        hp->rope_scaling = VKPT_ROPE_LLAMA3;
    else if (!strcmp(type, "yarn"))
        hp->rope_scaling = VKPT_ROPE_YARN;
    else if (!strcmp(type, "ntk")) {
        /* GTE v1.5's fixed NTK scaling: base * factor and every frequency
         * divided by factor^(2/rot_dim), at every length (the encoder applies
         * it to the plain table) */
        hp->rope_scaling = VKPT_ROPE_PLAIN;
        double f;
        if (j_num(rp, "factor", &f) && f > 0) hp->rope_ntk = (float)f;
        return 0;
    } else
        return vkpt_fail(VKPT_EUNSUPPORTED, "config.json: rope type '%.40s' is not supported",
                         type);
    j_f32(rp, "factor", &hp->rope_factor);
    j_f32(rp, "low_freq_factor", &hp->rope_low_freq);
    j_f32(rp, "high_freq_factor", &hp->rope_high_freq);
    j_u32(rp, "original_max_position_embeddings", &hp->rope_orig_ctx);
    j_f32(rp, "beta_fast", &hp->yarn_beta_fast);
    j_f32(rp, "beta_slow", &hp->yarn_beta_slow);
    j_f32(rp, "attention_factor", &hp->yarn_attn_factor);
    return 0;
}

int vkpt__hparams_hf(const char *text, size_t len, const vkpt_arch_desc **arch_out,
                     vkpt_hparams *hp)
{
    memset(hp, 0, sizeof *hp);
    hp->bos_id = hp->eos_id = -1;
    cJSON *c = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(c)) {
        cJSON_Delete(c);
        return vkpt_fail(VKPT_EFORMAT, "config.json is not a JSON object");
    }
    int err = 0;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(c, "model_type");
    const vkpt_arch_desc *arch = cJSON_IsString(mt) ? vkpt_arch_by_hf(mt->valuestring) : NULL;
    if (!arch) {
        err = vkpt_fail(VKPT_EUNSUPPORTED,
                        "config.json: model_type '%.60s' is not supported (llama, mistral, "
                        "mixtral, qwen2, qwen3, qwen2_moe, qwen3_moe, dbrx, bert, nomic_bert, new)",
                        cJSON_IsString(mt) ? mt->valuestring : "(missing)");
        goto done;
    }
    *arch_out = arch;
    const cJSON *attn = cJSON_GetObjectItemCaseSensitive(c, "attn_config");
    const cJSON *ffn = cJSON_GetObjectItemCaseSensitive(c, "ffn_config");
    j_u32(c, "vocab_size", &hp->n_vocab);
    j_u32(c, "hidden_size", &hp->n_embd);
    j_u32(c, "d_model", &hp->n_embd);
    j_u32(c, "num_hidden_layers", &hp->n_layer);
    j_u32(c, "n_layers", &hp->n_layer);
    j_u32(c, "num_attention_heads", &hp->n_head);
    j_u32(c, "n_heads", &hp->n_head);
    j_u32(c, "num_key_value_heads", &hp->n_head_kv);
    j_u32(attn, "kv_n_heads", &hp->n_head_kv);
    j_u32(c, "head_dim", &hp->head_dim);
    j_u32(c, "intermediate_size", &hp->n_ff);
    j_u32(ffn, "ffn_hidden_size", &hp->n_ff);
    j_u32(c, "max_position_embeddings", &hp->n_ctx_train);
    j_u32(c, "max_seq_len", &hp->n_ctx_train);
    j_f32(c, "rms_norm_eps", &hp->norm_eps);
    j_f32(c, "layer_norm_eps", &hp->norm_eps);
    j_f32(c, "rope_theta", &hp->rope_theta);
    /* DBRX's (transformers 4); rope_parameters below wins where both exist,
     * as in transformers 5 (the dbrx fixture's logits say so) */
    j_f32(attn, "rope_theta", &hp->rope_theta);
    j_f32(attn, "clip_qkv", &hp->clip_qkv);
    double prf;
    if (j_num(c, "partial_rotary_factor", &prf) && prf > 0 && prf <= 1 && hp->n_head) {
        uint32_t hd = hp->head_dim ? hp->head_dim : hp->n_embd / hp->n_head;
        hp->rot_dim = (uint32_t)(hd * prf);
    }
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(c, "tie_word_embeddings");
    hp->tie_embeddings = cJSON_IsBool(tie) ? cJSON_IsTrue(tie) : arch->id == VKPT_ARCH_BERT;
    /* transformers 4: rope_scaling at the top; transformers 5: rope_parameters */
    if ((err = rope_from(cJSON_GetObjectItemCaseSensitive(c, "rope_scaling"), hp))) goto done;
    if ((err = rope_from(cJSON_GetObjectItemCaseSensitive(c, "rope_parameters"), hp))) goto done;
    j_u32(c, "num_local_experts", &hp->n_expert);
    j_u32(c, "num_experts", &hp->n_expert);
    j_u32(ffn, "moe_num_experts", &hp->n_expert);
    j_u32(c, "num_experts_per_tok", &hp->n_expert_used);
    j_u32(ffn, "moe_top_k", &hp->n_expert_used);
    j_u32(c, "moe_intermediate_size", &hp->n_ff_exp);
    j_u32(c, "shared_expert_intermediate_size", &hp->n_ff_shexp);
    hp->norm_topk = arch->id == VKPT_ARCH_LLAMA || arch->id == VKPT_ARCH_DBRX;
    const cJSON *ntp = cJSON_GetObjectItemCaseSensitive(c, "norm_topk_prob");
    if (cJSON_IsBool(ntp)) hp->norm_topk = cJSON_IsTrue(ntp);
    hp->expert_norm_p = 1.0f;
    /* DBRX: top-k weights divided by their p-norm, p = this (null: none) */
    const cJSON *nw = cJSON_GetObjectItemCaseSensitive(ffn, "moe_normalize_expert_weights");
    if (cJSON_IsNull(nw)) hp->norm_topk = false;
    if (cJSON_IsNumber(nw)) {
        if (!(nw->valuedouble > 0 && nw->valuedouble < 1e6)) {
            err = vkpt_fail(VKPT_EUNSUPPORTED,
                            "config.json: moe_normalize_expert_weights %g is not a usable norm",
                            nw->valuedouble);
            goto done;
        }
        hp->norm_topk = true;
        hp->expert_norm_p = (float)nw->valuedouble;
    }
    const cJSON *usw = cJSON_GetObjectItemCaseSensitive(c, "use_sliding_window");
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(c, "sliding_window");
    if (cJSON_IsNumber(sw) && sw->valuedouble > 0 && !(cJSON_IsBool(usw) && cJSON_IsFalse(usw)))
        hp->sliding_window = (uint32_t)sw->valuedouble;
    j_id(c, "bos_token_id", &hp->bos_id);
    j_id(c, "eos_token_id", &hp->eos_id);
    if (hp->n_expert && !hp->n_ff_exp) hp->n_ff_exp = hp->n_ff;
    if (arch->flags & VKPT_AF_ENCODER) {
        /* nomic-bert writes GPT-2 style names */
        j_u32(c, "n_embd", &hp->n_embd);
        j_u32(c, "n_head", &hp->n_head);
        j_u32(c, "n_layer", &hp->n_layer);
        j_u32(c, "n_inner", &hp->n_ff);
        j_u32(c, "n_positions", &hp->n_ctx_train);
        j_f32(c, "layer_norm_epsilon", &hp->norm_eps);
        j_f32(c, "rotary_emb_base", &hp->rope_theta);
        double frac;
        if (j_num(c, "rotary_emb_fraction", &frac) && frac > 0 && frac <= 1 && hp->n_head)
            hp->rot_dim = (uint32_t)(hp->n_embd / hp->n_head * frac);
        if (hp->n_ff == 0 && arch->id == VKPT_ARCH_NOMIC_BERT) hp->n_ff = 4 * hp->n_embd;
        hp->ffn_act = encoder_act(arch);
        const cJSON *act = cJSON_GetObjectItemCaseSensitive(c, "hidden_act");
        if (!cJSON_IsString(act)) act = cJSON_GetObjectItemCaseSensitive(c, "activation_function");
        if (cJSON_IsString(act)) {
            const char *an = act->valuestring;
            if (!strcmp(an, "gelu") || !strcmp(an, "geglu"))
                hp->ffn_act = VKPT_ACT_GELU_ERF;
            else if (!strcmp(an, "gelu_new") || !strcmp(an, "gelu_pytorch_tanh") ||
                     !strcmp(an, "gelu_fast"))
                hp->ffn_act = VKPT_ACT_GELU_TANH;
            else if (!strcmp(an, "silu") || !strcmp(an, "swiglu") || !strcmp(an, "swish"))
                hp->ffn_act = VKPT_ACT_SILU;
            else {
                err = vkpt_fail(VKPT_EUNSUPPORTED,
                                "config.json: activation '%.40s' is not supported (gelu, "
                                "gelu_new, gelu_pytorch_tanh, silu, swiglu)",
                                an);
                goto done;
            }
        }
        const cJSON *prenorm = cJSON_GetObjectItemCaseSensitive(c, "prenorm");
        const cJSON *causal = cJSON_GetObjectItemCaseSensitive(c, "causal");
        double moe_every = 0;
        if (cJSON_IsTrue(prenorm) || cJSON_IsTrue(causal) ||
            (j_num(c, "moe_every_n_layers", &moe_every) && moe_every > 0)) {
            err = vkpt_fail(VKPT_EUNSUPPORTED, "config.json: %s encoders are not supported",
                            cJSON_IsTrue(prenorm)  ? "pre-LayerNorm"
                            : cJSON_IsTrue(causal) ? "causal"
                                                   : "mixture-of-experts");
            goto done;
        }
        if (arch->id == VKPT_ARCH_GTE || arch->id == VKPT_ARCH_NOMIC_BERT) {
            const cJSON *pe = cJSON_GetObjectItemCaseSensitive(c, "position_embedding_type");
            if (cJSON_IsString(pe) && strcmp(pe->valuestring, "rope") &&
                strcmp(pe->valuestring, "rotary")) {
                err = vkpt_fail(VKPT_EUNSUPPORTED,
                                "config.json: position_embedding_type '%.40s' (only rope)",
                                pe->valuestring);
                goto done;
            }
        }
    }
    err = finish(hp, "config.json");
done:
    cJSON_Delete(c);
    return err;
}

/* ---- sentence-transformers pooling ------------------------------------------------------ */

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = NULL;
    if (!fseek(f, 0, SEEK_END)) {
        long n = ftell(f);
        if (n >= 0 && n < (1 << 20) && !fseek(f, 0, SEEK_SET) && (b = vkpt_malloc((size_t)n + 1))) {
            if (fread(b, 1, (size_t)n, f) == (size_t)n) {
                b[n] = 0;
                *len = (size_t)n;
            } else {
                vkpt_free(b);
                b = NULL;
            }
        }
    }
    fclose(f);
    return b;
}

static bool ends_with_str(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* A Pooling module's config.json: exactly one mode vkpt computes. */
static int st_pooling_config(const char *dir, const char *sub, vkpt_hparams *hp)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s/config.json", dir, sub);
    size_t len = 0;
    char *text = read_text(path, &len);
    if (!text) return vkpt_fail(VKPT_EIO, "%s: cannot read it", path);
    cJSON *c = cJSON_ParseWithLength(text, len);
    vkpt_free(text);
    int err = 0;
    if (!cJSON_IsObject(c)) {
        err = vkpt_fail(VKPT_EFORMAT, "%s is not a JSON object", path);
        goto done;
    }
    static const struct {
        const char *key;
        int pooling; /* 0: not computed by vkpt */
    } modes[] = {
        {"pooling_mode_cls_token", VKPT_POOLING_CLS},
        {"pooling_mode_mean_tokens", VKPT_POOLING_MEAN},
        {"pooling_mode_lasttoken", VKPT_POOLING_LAST},
        {"pooling_mode_max_tokens", 0},
        {"pooling_mode_mean_sqrt_len_tokens", 0},
        {"pooling_mode_weightedmean_tokens", 0},
    };
    int found = 0, n_on = 0;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, modes[i].key))) continue;
        n_on++;
        if (!modes[i].pooling) {
            err = vkpt_fail(VKPT_EUNSUPPORTED, "%s: %s is not supported (cls, mean, last token)",
                            path, modes[i].key);
            goto done;
        }
        found = modes[i].pooling;
    }
    if (n_on > 1) {
        err = vkpt_fail(VKPT_EUNSUPPORTED,
                        "%s: %d pooling modes concatenated; vkpt pools one way (cls, mean or last "
                        "token)",
                        path, n_on);
        goto done;
    }
    hp->pooling = found;
done:
    cJSON_Delete(c);
    return err;
}

int vkpt__st_pooling(const char *dir, vkpt_hparams *hp)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/modules.json", dir);
    size_t len = 0;
    char *text = read_text(path, &len);
    if (!text) return 0; /* not a sentence-transformers folder: nothing said */
    cJSON *mods = cJSON_ParseWithLength(text, len);
    vkpt_free(text);
    int err = 0;
    bool pooled = false, normalized = false;
    if (!cJSON_IsArray(mods)) {
        err = vkpt_fail(VKPT_EFORMAT, "%s is not a JSON array", path);
        goto done;
    }
    for (const cJSON *m = mods->child; m && !err; m = m->next) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(m, "type");
        const cJSON *sub = cJSON_GetObjectItemCaseSensitive(m, "path");
        const char *t = cJSON_IsString(type) ? type->valuestring : "";
        if (ends_with_str(t, ".Transformer")) continue;
        if (ends_with_str(t, ".Pooling")) {
            err = st_pooling_config(dir, cJSON_IsString(sub) ? sub->valuestring : "1_Pooling", hp);
            pooled = true;
        } else if (ends_with_str(t, ".Normalize")) {
            normalized = true;
        } else {
            err = vkpt_fail(VKPT_EUNSUPPORTED,
                            "%s: module '%.80s' is not supported (Transformer, Pooling, Normalize)",
                            path, t);
        }
    }
    if (!err && (pooled || normalized))
        hp->normalize = normalized ? VKPT_NORMALIZE_ON : VKPT_NORMALIZE_OFF;
done:
    cJSON_Delete(mods);
    return err;
}
