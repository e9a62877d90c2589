/* `vkpt synth` and `vkpt quantize`: GGUF files llama.cpp can load.
 *
 * Both describe a model as a list of tensors with canonical (llama.cpp)
 * names and a type chosen by one policy (choose_type: the quantization mix
 * of llama.cpp's recipes, with its fallbacks for rows that do not split into
 * blocks), then stream the data through the GGUF writer, filling each tensor
 * with several threads. Synthetic weights are random bytes in valid blocks
 * (f16 scales set to sane values), so an 8B model writes at disk speed. */
#define _GNU_SOURCE
#include "vkpt/convert.h"

#include "model_int.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- recipes ---------------------------------------------------------------------- */

static const vkpt_ftype_info k_ftypes[] = {
    {"F32", 0, VKPT_Q_F32},      {"F16", 1, VKPT_Q_F16},      {"BF16", 32, VKPT_Q_BF16},
    {"Q8_0", 7, VKPT_Q_Q8_0},    {"Q4_0", 2, VKPT_Q_Q4_0},    {"Q4_1", 3, VKPT_Q_Q4_1},
    {"Q5_0", 8, VKPT_Q_Q5_0},    {"Q5_1", 9, VKPT_Q_Q5_1},    {"Q4_K_M", 15, VKPT_Q_Q4_K},
    {"Q4_K_S", 14, VKPT_Q_Q4_K}, {"Q5_K_M", 17, VKPT_Q_Q5_K}, {"Q5_K_S", 16, VKPT_Q_Q5_K},
    {"Q6_K", 18, VKPT_Q_Q6_K},
};

const vkpt_ftype_info *vkpt_ftype_by_name(const char *name)
{
    for (size_t i = 0; i < sizeof k_ftypes / sizeof k_ftypes[0]; i++)
        if (!strcasecmp(name, k_ftypes[i].name)) return &k_ftypes[i];
    return NULL;
}

const char *vkpt_ftype_names(void)
{
    return "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K";
}

static bool ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* llama.cpp gives more bits to the first and last eighth of the layers and
 * every third layer between (its use_more_bits). */
static bool more_bits(int layer, int n_layer)
{
    return layer < n_layer / 8 || layer >= 7 * n_layer / 8 || (layer - n_layer / 8) % 3 == 2;
}

/* The type a tensor of shape ne is written as under recipe f. */
static uint32_t choose_type(const vkpt_ftype_info *f, const char *name, const uint64_t *ne,
                            uint32_t n_dims, int n_layer)
{
    bool vector = n_dims == 1 || (ne[1] == 1 && ne[2] == 1);
    if (vector || ends_with(name, "_norm.weight") || ends_with(name, ".bias") ||
        !strcmp(name, "rope_freqs.weight") || strstr(name, "ffn_gate_inp"))
        return VKPT_Q_F32; /* norms, biases, routers: small and precision-sensitive */
    uint32_t t = f->base;
    bool kquant = t == VKPT_Q_Q4_K || t == VKPT_Q_Q5_K || t == VKPT_Q_Q6_K;
    int layer = -1;
    sscanf(name, "blk.%d.", &layer);
    if (!strcmp(name, "output.weight") && t != VKPT_Q_F32 && t != VKPT_Q_F16 && t != VKPT_Q_BF16 &&
        t != VKPT_Q_Q8_0)
        t = VKPT_Q_Q6_K;
    else if (kquant && (f->ftype == 15 || f->ftype == 17) && layer >= 0 &&
             (ends_with(name, "attn_v.weight") || ends_with(name, "ffn_down.weight") ||
              ends_with(name, "ffn_down_exps.weight")) &&
             more_bits(layer, n_layer))
        t = VKPT_Q_Q6_K;
    /* fall back when rows do not split into blocks */
    while (!vkpt_qtype_row_bytes(t, ne[0])) {
        switch (t) {
        case VKPT_Q_Q4_K: t = VKPT_Q_Q5_0; break;
        case VKPT_Q_Q5_K: t = VKPT_Q_Q5_1; break;
        case VKPT_Q_Q6_K: t = VKPT_Q_Q8_0; break;
        default: t = VKPT_Q_F16; break;
        }
    }
    return t;
}

/* ---- parallel tensor filling ---------------------------------------------------------------- */

typedef int (*rows_fn)(void *ud, uint64_t tensor, uint64_t row0, uint64_t n_rows, void *dst);

typedef struct fill_job {
    rows_fn fn;
    void *ud;
    uint64_t tensor, rows, row_bytes;
    uint8_t *dst;
    int n_threads;
    int err;
    pthread_mutex_t lock;
    uint64_t next;
} fill_job;

static void *fill_worker(void *arg)
{
    fill_job *j = arg;
    const uint64_t chunk = 64;
    for (;;) {
        pthread_mutex_lock(&j->lock);
        uint64_t r0 = j->next;
        j->next += chunk;
        bool stop = j->err != 0;
        pthread_mutex_unlock(&j->lock);
        if (stop || r0 >= j->rows) break;
        uint64_t n = j->rows - r0 < chunk ? j->rows - r0 : chunk;
        int err = j->fn(j->ud, j->tensor, r0, n, j->dst + r0 * j->row_bytes);
        if (err) {
            pthread_mutex_lock(&j->lock);
            if (!j->err) j->err = err;
            pthread_mutex_unlock(&j->lock);
        }
    }
    return NULL;
}

static int fill_parallel(rows_fn fn, void *ud, uint64_t tensor, uint64_t rows, uint64_t row_bytes,
                         void *dst, int threads)
{
    fill_job j = {
        .fn = fn, .ud = ud, .tensor = tensor, .rows = rows, .row_bytes = row_bytes, .dst = dst};
    pthread_mutex_init(&j.lock, NULL);
    int n = threads;
    if (rows < 256) n = 1;
    pthread_t th[64];
    int started = 0;
    for (int i = 1; i < n && i < 64; i++)
        if (!pthread_create(&th[started], NULL, fill_worker, &j)) started++;
    fill_worker(&j);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    pthread_mutex_destroy(&j.lock);
    return j.err;
}

static int n_threads_default(int t)
{
    if (t > 0) return t > 64 ? 64 : t;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

/* ---- metadata ----------------------------------------------------------------------------- */

typedef struct out_tensor {
    char name[96];
    uint32_t type;
    uint32_t n_dims;
    uint64_t ne[4];
    const vkpt_src_tensor *src; /* quantize: where the data comes from */
} out_tensor;

typedef struct plan {
    out_tensor *t;
    size_t n, cap;
    int threads;
    bool progress;
    uint64_t total, done, t0;
    /* synth */
    uint64_t seed;
} plan;

static int plan_add(plan *p, const char *name, uint32_t type, uint32_t n_dims, uint64_t ne0,
                    uint64_t ne1, uint64_t ne2)
{
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 256;
        void *np = vkpt_realloc(p->t, nc * sizeof *p->t);
        if (!np) return vkpt_fail(VKPT_ENOMEM, "tensor plan");
        p->t = np;
        p->cap = nc;
    }
    out_tensor *t = &p->t[p->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type;
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    t->ne[3] = 1;
    p->total += vkpt_qtype_row_bytes(type, ne0) * ne1 * ne2;
    return 0;
}

static void progress(plan *p, const char *what, bool final)
{
    if (!p->progress) return;
    double secs = (vkpt_now_ns() - p->t0) / 1e9;
    if (isatty(2))
        fprintf(stderr, "\r%s %6.2f/%.2f GB  %5.2f GB/s%s", what, p->done / 1e9, p->total / 1e9,
                secs > 0 ? p->done / 1e9 / secs : 0.0, final ? "\n" : "");
    else if (final)
        fprintf(stderr, "%s %.2f GB in %.1f s\n", what, p->total / 1e9, secs);
}

/* Architecture keys for a model described by hparams (synth, HF input). */
static int write_hparams(vkpt_gguf_writer *w, const char *arch, const vkpt_hparams *hp,
                         const char *name, uint32_t ftype)
{
    char k[128];
    int err = 0;
#define U32(suffix, v)                                       \
    do {                                                     \
        snprintf(k, sizeof k, "%s." suffix, arch);           \
        if (!err) err = vkpt_gguf_writer_set_u32(w, k, (v)); \
    } while (0)
#define F32(suffix, v)                                       \
    do {                                                     \
        snprintf(k, sizeof k, "%s." suffix, arch);           \
        if (!err) err = vkpt_gguf_writer_set_f32(w, k, (v)); \
    } while (0)
    err = vkpt_gguf_writer_set_str(w, "general.architecture", arch);
    if (!err) err = vkpt_gguf_writer_set_str(w, "general.name", name);
    if (!err) err = vkpt_gguf_writer_set_u32(w, "general.file_type", ftype);
    if (!err) err = vkpt_gguf_writer_set_u32(w, "general.quantization_version", 2);
    U32("vocab_size", hp->n_vocab);
    U32("context_length", hp->n_ctx_train ? hp->n_ctx_train : 4096);
    U32("embedding_length", hp->n_embd);
    U32("block_count", hp->n_layer);
    U32("feed_forward_length", hp->n_ff);
    U32("attention.head_count", hp->n_head);
    U32("attention.head_count_kv", hp->n_head_kv);
    U32("rope.dimension_count", hp->rot_dim);
    if (hp->head_dim != hp->n_embd / hp->n_head) {
        U32("attention.key_length", hp->head_dim);
        U32("attention.value_length", hp->head_dim);
    }
    F32("rope.freq_base", hp->rope_theta);
    const vkpt_arch_desc *ad = vkpt_arch_by_gguf(arch, strlen(arch));
    if (ad && (ad->flags & VKPT_AF_LAYERNORM)) /* DBRX: llama.cpp requires this key */
        F32("attention.layer_norm_epsilon", hp->norm_eps);
    else
        F32("attention.layer_norm_rms_epsilon", hp->norm_eps);
    if (hp->n_expert) {
        U32("expert_count", hp->n_expert);
        U32("expert_used_count", hp->n_expert_used);
        /* llama.cpp's qwen2moe/qwen3moe take the expert width from this key
         * only; its llama (Mixtral) uses feed_forward_length */
        if (hp->n_ff_exp && (hp->n_ff_exp != hp->n_ff || strcmp(arch, "llama")))
            U32("expert_feed_forward_length", hp->n_ff_exp);
        if (hp->n_ff_shexp) U32("expert_shared_feed_forward_length", hp->n_ff_shexp);
        /* whether the top-k routing weights are renormalized (vkpt reads it;
         * llama.cpp reads it where the architecture leaves it open) */
        snprintf(k, sizeof k, "%s.expert_weights_norm", arch);
        if (!err) err = vkpt_gguf_writer_set_bool(w, k, hp->norm_topk);
    }
    if (hp->rope_scaling == VKPT_ROPE_LINEAR) {
        snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
        if (!err) err = vkpt_gguf_writer_set_str(w, k, "linear");
        F32("rope.scaling.factor", hp->rope_factor);
    } else if (hp->rope_scaling == VKPT_ROPE_YARN) {
        snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
        if (!err) err = vkpt_gguf_writer_set_str(w, k, "yarn");
        F32("rope.scaling.factor", hp->rope_factor);
        U32("rope.scaling.original_context_length", hp->rope_orig_ctx);
    }
    if (hp->clip_qkv > 0) F32("attention.clamp_kqv", hp->clip_qkv);
#undef U32
#undef F32
    return err;
}

/* llama3 scaling lives in a rope_freqs.weight tensor of per-frequency
 * divisors in llama.cpp's files. */
static int llama3_factors(const vkpt_hparams *hp, float *out)
{
    uint32_t n = hp->rot_dim / 2;
    float *plain = vkpt_malloc(n * sizeof(float)), *l3 = vkpt_malloc(n * sizeof(float));
    int err = plain && l3 ? 0 : vkpt_fail(VKPT_ENOMEM, "rope factors");
    vkpt_rope_cfg c = {.scaling = VKPT_ROPE_PLAIN, .rot_dim = hp->rot_dim, .theta = hp->rope_theta};
    float ms;
    if (!err) err = vkpt_rope_freqs(&c, plain, &ms);
    c.scaling = VKPT_ROPE_LLAMA3;
    c.factor = hp->rope_factor;
    c.low_freq_factor = hp->rope_low_freq;
    c.high_freq_factor = hp->rope_high_freq;
    c.orig_ctx = hp->rope_orig_ctx;
    if (!err) err = vkpt_rope_freqs(&c, l3, &ms);
    for (uint32_t i = 0; !err && i < n; i++) out[i] = plain[i] / l3[i];
    vkpt_free(plain);
    vkpt_free(l3);
    return err;
}

/* ---- synth -------------------------------------------------------------------------------- */

typedef struct preset {
    const char *name, *arch;
    uint32_t vocab, embd, layers, heads, kv, ff, ctx, experts, used;
    float theta;
    int scaling; /* llama3 rope */
    bool tied;
} preset;

static const preset k_presets[] = {
    {"llama3.2-1b", "llama", 128256, 2048, 16, 32, 8, 8192, 131072, 0, 0, 500000, VKPT_ROPE_LLAMA3,
     true},
    {"llama3.2-3b", "llama", 128256, 3072, 28, 24, 8, 8192, 131072, 0, 0, 500000, VKPT_ROPE_LLAMA3,
     true},
    {"llama3.1-8b", "llama", 128256, 4096, 32, 32, 8, 14336, 131072, 0, 0, 500000, VKPT_ROPE_LLAMA3,
     false},
    {"llama3.1-70b", "llama", 128256, 8192, 80, 64, 8, 28672, 131072, 0, 0, 500000,
     VKPT_ROPE_LLAMA3, false},
    {"mistral-7b", "llama", 32768, 4096, 32, 32, 8, 14336, 32768, 0, 0, 1000000, VKPT_ROPE_PLAIN,
     false},
    {"qwen2.5-7b", "qwen2", 152064, 3584, 28, 28, 4, 18944, 32768, 0, 0, 1000000, VKPT_ROPE_PLAIN,
     false},
    {"qwen3-8b", "qwen3", 151936, 4096, 36, 32, 8, 12288, 40960, 0, 0, 1000000, VKPT_ROPE_PLAIN,
     false},
    {"mixtral-8x7b", "llama", 32000, 4096, 32, 32, 8, 14336, 32768, 8, 2, 1000000, VKPT_ROPE_PLAIN,
     false},
    {"tiny", "llama", 512, 64, 2, 4, 2, 256, 512, 0, 0, 10000, VKPT_ROPE_PLAIN, false},
};

const char *vkpt_synth_presets(void)
{
    return "llama3.2-1b, llama3.2-3b, llama3.1-8b, llama3.1-70b, mistral-7b, qwen2.5-7b, qwen3-8b, "
           "mixtral-8x7b, tiny";
}

int vkpt_synth_preset(const char *name, vkpt_synth_opts *o)
{
    for (size_t i = 0; i < sizeof k_presets / sizeof k_presets[0]; i++) {
        const preset *p = &k_presets[i];
        if (strcmp(name, p->name)) continue;
        o->preset = p->name;
        o->arch = p->arch;
        o->n_vocab = p->vocab;
        o->n_embd = p->embd;
        o->n_layer = p->layers;
        o->n_head = p->heads;
        o->n_head_kv = p->kv;
        o->n_ff = p->ff;
        o->n_ctx = p->ctx;
        o->n_expert = p->experts;
        o->n_expert_used = p->used;
        o->rope_theta = p->theta;
        return 0;
    }
    return vkpt_fail(VKPT_ENOTFOUND, "unknown preset '%s' (presets: %s)", name,
                     vkpt_synth_presets());
}

static const preset *preset_of(const char *name)
{
    for (size_t i = 0; name && i < sizeof k_presets / sizeof k_presets[0]; i++)
        if (!strcmp(name, k_presets[i].name)) return &k_presets[i];
    return NULL;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

typedef struct synth_ctx {
    plan *p;
    const float *rope_factors;
} synth_ctx;

static void put_f16(uint8_t *p, float v)
{
    uint16_t h = vkpt_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* Random rows of tensor ti: values of std ~ 1/sqrt(ne0) for matrices, 1 +
 * noise for norms; quantized types get random quants with scales chosen for
 * about that std. Deterministic per (seed, tensor, row). */
static int synth_rows(void *ud, uint64_t ti, uint64_t row0, uint64_t n_rows, void *dst)
{
    synth_ctx *s = ud;
    const out_tensor *t = &s->p->t[ti];
    uint64_t ne0 = t->ne[0], rb = vkpt_qtype_row_bytes(t->type, ne0);
    float std = 1.0f / sqrtf((float)ne0);
    bool norm = ends_with(t->name, "_norm.weight");
    const vkpt_qtype_info *qi = vkpt_qtype_get(t->type);
    for (uint64_t r = row0; r < row0 + n_rows; r++) {
        uint64_t st = mix64(s->p->seed ^ mix64(ti * 0x9E3779B97F4A7C15ull + r + 1));
        uint8_t *o = (uint8_t *)dst + (r - row0) * rb;
        if (!strcmp(t->name, "rope_freqs.weight")) {
            memcpy(o, s->rope_factors, rb);
            continue;
        }
        if (t->type == VKPT_Q_F32 || t->type == VKPT_Q_F16 || t->type == VKPT_Q_BF16) {
            for (uint64_t i = 0; i < ne0; i++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                /* sum of two uniforms: a cheap bell shape, std ~ 0.41 */
                float u = ((st >> 40) & 0xffffff) / 16777216.0f +
                          ((st >> 16) & 0xffffff) / 16777216.0f - 1.0f;
                float v = norm ? 1.0f + 0.1f * u : u * std * 2.45f;
                if (t->type == VKPT_Q_F32)
                    memcpy(o + 4 * i, &v, 4);
                else if (t->type == VKPT_Q_F16)
                    put_f16(o + 2 * i, v);
                else {
                    uint16_t h = vkpt_f32_to_bf16(v);
                    memcpy(o + 2 * i, &h, 2);
                }
            }
            continue;
        }
        for (uint64_t i = 0; i < rb; i += 8) {
            st = mix64(st + 0x9E3779B97F4A7C15ull);
            size_t k = rb - i < 8 ? rb - i : 8;
            memcpy(o + i, &st, k);
        }
        for (uint64_t b = 0; b < rb; b += qi->block_bytes) {
            uint8_t *blk = o + b;
            switch (t->type) {
            case VKPT_Q_Q8_0: put_f16(blk, std / 74.0f); break;
            case VKPT_Q_Q4_0: put_f16(blk, std / 4.6f); break;
            case VKPT_Q_Q5_0: put_f16(blk, std / 9.2f); break;
            case VKPT_Q_Q4_1:
                put_f16(blk, std / 4.6f);
                put_f16(blk + 2, -7.5f * std / 4.6f);
                break;
            case VKPT_Q_Q5_1:
                put_f16(blk, std / 9.2f);
                put_f16(blk + 2, -15.5f * std / 9.2f);
                break;
            case VKPT_Q_Q4_K:
                put_f16(blk, std / 200.0f);
                put_f16(blk + 2, 7.5f * std / 200.0f);
                break;
            case VKPT_Q_Q5_K:
                put_f16(blk, std / 400.0f);
                put_f16(blk + 2, 15.5f * std / 400.0f);
                break;
            case VKPT_Q_Q6_K: put_f16(blk + 208, std / 1300.0f); break;
            default: return vkpt_fail(VKPT_EUNSUPPORTED, "synth: type %s", qi->name);
            }
        }
    }
    return 0;
}

typedef struct fill_ud {
    plan *p;
    rows_fn fn;
    void *ud;
    const char *what;
} fill_ud;

static int plan_fill_cb(void *ud, uint64_t ti, void *dst, uint64_t size)
{
    fill_ud *f = ud;
    const out_tensor *t = &f->p->t[ti];
    uint64_t rb = vkpt_qtype_row_bytes(t->type, t->ne[0]);
    int err = fill_parallel(f->fn, f->ud, ti, size / rb, rb, dst, f->p->threads);
    f->p->done += size;
    progress(f->p, f->what, false);
    return err;
}

static int placeholder_vocab(vkpt_gguf_writer *w, uint32_t n)
{
    if (n < 260)
        return vkpt_fail(VKPT_EINVAL, "synth: vocabulary of %u is too small (at least 260)", n);
    char **tok = vkpt_calloc(n, sizeof *tok);
    float *score = vkpt_malloc(n * sizeof(float));
    int32_t *type = vkpt_malloc(n * sizeof(int32_t));
    int err = tok && score && type ? 0 : vkpt_fail(VKPT_ENOMEM, "vocab");
    for (uint32_t i = 0; i < n && !err; i++) {
        char buf[32];
        if (i == 0)
            snprintf(buf, sizeof buf, "<unk>"), type[i] = 2;
        else if (i == 1)
            snprintf(buf, sizeof buf, "<s>"), type[i] = 3;
        else if (i == 2)
            snprintf(buf, sizeof buf, "</s>"), type[i] = 3;
        else if (i < 259)
            snprintf(buf, sizeof buf, "<0x%02X>", i - 3), type[i] = 6;
        else
            snprintf(buf, sizeof buf, "\xe2\x96\x81t%u", i), type[i] = 1;
        score[i] = i < 259 ? 0.0f : -(float)(i - 259);
        if (!(tok[i] = vkpt_strdup(buf))) err = vkpt_fail(VKPT_ENOMEM, "vocab");
    }
    if (!err) err = vkpt_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    if (!err) err = vkpt_gguf_writer_set_str(w, "tokenizer.ggml.pre", "default");
    if (!err)
        err = vkpt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, n);
    if (!err) err = vkpt_gguf_writer_set_arr(w, "tokenizer.ggml.scores", VKPT_GGUF_F32, score, n);
    if (!err)
        err = vkpt_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", VKPT_GGUF_I32, type, n);
    if (!err) err = vkpt_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    if (!err) err = vkpt_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    if (!err) err = vkpt_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    if (!err) err = vkpt_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    if (!err) err = vkpt_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false);
    for (uint32_t i = 0; tok && i < n; i++) vkpt_free(tok[i]);
    vkpt_free(tok);
    vkpt_free(score);
    vkpt_free(type);
    return err;
}

/* The tensors of a dense or MoE decoder, by architecture flags. */
static int plan_decoder(plan *p, const vkpt_ftype_info *f, const vkpt_arch_desc *a,
                        const vkpt_hparams *hp)
{
    int err = 0;
    int nl = (int)hp->n_layer;
    uint64_t E = hp->n_embd, Dq = (uint64_t)hp->n_head * hp->head_dim,
             Dkv = (uint64_t)hp->n_head_kv * hp->head_dim;
#define ADD(nm, nd, a0, a1, a2)                                                           \
    do {                                                                                  \
        uint64_t ne_[4] = {a0, a1, a2, 1};                                                \
        if (!err) err = plan_add(p, nm, choose_type(f, nm, ne_, nd, nl), nd, a0, a1, a2); \
    } while (0)
    ADD("token_embd.weight", 2, E, hp->n_vocab, 1);
    if (hp->rope_scaling == VKPT_ROPE_LLAMA3) ADD("rope_freqs.weight", 1, hp->rot_dim / 2, 1, 1);
    ADD("output_norm.weight", 1, E, 1, 1);
    if (!hp->tie_embeddings) ADD("output.weight", 2, E, hp->n_vocab, 1);
    char nm[96];
    for (int l = 0; l < nl && !err; l++) {
#define L(suffix, nd, a0, a1, a2)                     \
    do {                                              \
        snprintf(nm, sizeof nm, "blk.%d." suffix, l); \
        ADD(nm, nd, a0, a1, a2);                      \
    } while (0)
        L("attn_norm.weight", 1, E, 1, 1);
        L("attn_q.weight", 2, E, Dq, 1);
        L("attn_k.weight", 2, E, Dkv, 1);
        L("attn_v.weight", 2, E, Dkv, 1);
        if (a->flags & VKPT_AF_QKV_BIAS) {
            L("attn_q.bias", 1, Dq, 1, 1);
            L("attn_k.bias", 1, Dkv, 1, 1);
            L("attn_v.bias", 1, Dkv, 1, 1);
        }
        if (a->flags & VKPT_AF_QK_NORM) {
            L("attn_q_norm.weight", 1, hp->head_dim, 1, 1);
            L("attn_k_norm.weight", 1, hp->head_dim, 1, 1);
        }
        L("attn_output.weight", 2, Dq, E, 1);
        L("ffn_norm.weight", 1, E, 1, 1);
        if (hp->n_expert) {
            uint64_t ff = hp->n_ff_exp ? hp->n_ff_exp : hp->n_ff;
            L("ffn_gate_inp.weight", 2, E, hp->n_expert, 1);
            L("ffn_gate_exps.weight", 3, E, ff, hp->n_expert);
            L("ffn_up_exps.weight", 3, E, ff, hp->n_expert);
            L("ffn_down_exps.weight", 3, ff, E, hp->n_expert);
            if (a->flags & VKPT_AF_SHARED_EXPERT) { /* Qwen2-MoE: a gated shared expert */
                uint64_t sff = hp->n_ff_shexp ? hp->n_ff_shexp : hp->n_ff;
                L("ffn_gate_inp_shexp.weight", 1, E, 1, 1);
                L("ffn_gate_shexp.weight", 2, E, sff, 1);
                L("ffn_up_shexp.weight", 2, E, sff, 1);
                L("ffn_down_shexp.weight", 2, sff, E, 1);
            }
        } else {
            L("ffn_gate.weight", 2, E, hp->n_ff, 1);
            L("ffn_up.weight", 2, E, hp->n_ff, 1);
            L("ffn_down.weight", 2, hp->n_ff, E, 1);
        }
#undef L
    }
#undef ADD
    return err;
}

int vkpt_synth(const vkpt_synth_opts *o, const char *path)
{
    if (!o || !path) return vkpt_fail(VKPT_EINVAL, "synth: no options or output path");
    const vkpt_ftype_info *f = vkpt_ftype_by_name(o->type ? o->type : "F16");
    if (!f)
        return vkpt_fail(VKPT_EINVAL, "synth: unknown type '%s' (types: %s)", o->type,
                         vkpt_ftype_names());
    const vkpt_arch_desc *a =
        vkpt_arch_by_gguf(o->arch ? o->arch : "llama", strlen(o->arch ? o->arch : "llama"));
    bool moe_arch = a && (a->flags & VKPT_AF_MOE);
    if (!a || (a->flags & (VKPT_AF_ENCODER | VKPT_AF_FUSED_QKV)) ||
        (o->n_expert && a->id != VKPT_ARCH_LLAMA && !moe_arch) || (moe_arch && !o->n_expert))
        return vkpt_fail(VKPT_EUNSUPPORTED,
                         "synth: architecture '%s' is not supported (llama, qwen2, qwen3; "
                         "experts with llama, qwen2moe, qwen3moe)",
                         o->arch ? o->arch : "(null)");
    vkpt_hparams hp = {0};
    hp.n_vocab = o->n_vocab;
    hp.n_embd = o->n_embd;
    hp.n_layer = o->n_layer;
    hp.n_head = o->n_head;
    hp.n_head_kv = o->n_head_kv ? o->n_head_kv : o->n_head;
    hp.n_ff = o->n_ff;
    hp.n_ctx_train = o->n_ctx ? o->n_ctx : 4096;
    hp.n_expert = o->n_expert;
    hp.n_expert_used = o->n_expert_used;
    /* experts as wide as n_ff (and Qwen2-MoE's shared expert); top-k
     * renormalized as llama.cpp does it for Mixtral and Qwen3-MoE */
    hp.n_ff_exp = o->n_expert ? o->n_ff : 0;
    hp.n_ff_shexp = a->flags & VKPT_AF_SHARED_EXPERT ? o->n_ff : 0;
    hp.norm_topk = o->n_expert > 0 && a->id != VKPT_ARCH_QWEN2MOE;
    hp.rope_theta = o->rope_theta > 0 ? o->rope_theta : 10000.0f;
    hp.norm_eps = 1e-5f;
    if (!hp.n_vocab || !hp.n_embd || !hp.n_layer || !hp.n_head || !hp.n_ff ||
        hp.n_embd % hp.n_head || hp.n_head % hp.n_head_kv ||
        (hp.n_expert && (!hp.n_expert_used || hp.n_expert_used > hp.n_expert)))
        return vkpt_fail(
            VKPT_EINVAL,
            "synth: inconsistent dimensions (vocab %u, embd %u, layers %u, heads %u/%u, "
            "ff %u, experts %u/%u)",
            hp.n_vocab, hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv, hp.n_ff, hp.n_expert,
            hp.n_expert_used);
    hp.head_dim = hp.n_embd / hp.n_head;
    hp.rot_dim = hp.head_dim;
    const preset *pr = preset_of(o->preset);
    if (pr) {
        hp.tie_embeddings = pr->tied;
        if (pr->scaling == VKPT_ROPE_LLAMA3) {
            hp.rope_scaling = VKPT_ROPE_LLAMA3;
            hp.rope_factor = pr->layers >= 32 ? 8.0f : 32.0f;
            hp.rope_low_freq = 1.0f;
            hp.rope_high_freq = 4.0f;
            hp.rope_orig_ctx = 8192;
        }
    }
    plan p = {.threads = n_threads_default(o->threads),
              .progress = o->progress,
              .seed = o->seed ? o->seed : 1};
    float *factors = NULL;
    vkpt_gguf_writer *w = NULL;
    int err = plan_decoder(&p, f, a, &hp);
    if (!err && hp.rope_scaling == VKPT_ROPE_LLAMA3) {
        factors = vkpt_malloc(hp.rot_dim / 2 * sizeof(float));
        err = factors ? llama3_factors(&hp, factors) : vkpt_fail(VKPT_ENOMEM, "rope factors");
    }
    if (!err) err = vkpt_gguf_writer_create(&w);
    char name[160];
    snprintf(name, sizeof name, "vkpt synth %s %s", o->preset ? o->preset : a->gguf_name, f->name);
    if (!err) err = write_hparams(w, a->gguf_name, &hp, name, f->ftype);
    if (!err) err = placeholder_vocab(w, hp.n_vocab);
    for (size_t i = 0; i < p.n && !err; i++)
        err = vkpt_gguf_writer_add_tensor(w, p.t[i].name, p.t[i].type, p.t[i].n_dims, p.t[i].ne);
    synth_ctx sc = {&p, factors};
    fill_ud fu = {&p, synth_rows, &sc, "writing"};
    p.t0 = vkpt_now_ns();
    if (!err) err = vkpt_gguf_writer_write(w, path, plan_fill_cb, &fu);
    if (!err) progress(&p, "writing", true);
    vkpt_gguf_writer_destroy(w);
    vkpt_free(factors);
    vkpt_free(p.t);
    return err;
}

/* ---- quantize ----------------------------------------------------------------------------- */

/* Rows of a planned tensor: from its source when it has one (quantize),
 * else computed (the rope factors table, random synthetic weights). */
static int plan_rows(void *ud, uint64_t ti, uint64_t row0, uint64_t n_rows, void *dst)
{
    synth_ctx *s = ud;
    const out_tensor *t = &s->p->t[ti];
    if (t->src) return vkpt_src_read_rows(t->src, t->type, row0, n_rows, dst);
    return synth_rows(ud, ti, row0, n_rows, dst);
}

static bool skip_ftype_keys(vkpt_span key, void *ud)
{
    (void)ud;
    static const char *drop[] = {"general.file_type", "general.quantization_version",
                                 "general.alignment"};
    for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
        if (key.n == strlen(drop[i]) && !memcmp(key.p, drop[i], key.n)) return true;
    return false;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 && n < (256 << 20) ? vkpt_malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        vkpt_free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        *len = (size_t)n;
    }
    return b;
}

/* Tokenizer metadata for a Hugging Face folder: llama.cpp's fields (vocab,
 * types, merges) so llama.cpp loads the file, and the original tokenizer.json
 * / tokenizer_config.json under vkpt.* keys so vkpt tokenizes exactly as
 * Hugging Face does. */
static int hf_tokenizer_meta(vkpt_gguf_writer *w, const char *dir, uint32_t model_vocab)
{
    char path[4200];
    size_t len = 0, clen = 0;
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    char *tj = slurp(path, &len);
    if (!tj) return vkpt_fail(VKPT_ENOTFOUND, "%s: no tokenizer.json", dir);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    char *tc = slurp(path, &clen);
    vkpt_tokenizer *tok = NULL;
    int err = vkpt_tokenizer_create_json(tj, len, tc, tc ? clen : 0, NULL, 0, &tok);
    cJSON *root = err ? NULL : cJSON_ParseWithLength(tj, len);
    const cJSON *model = root ? cJSON_GetObjectItemCaseSensitive(root, "model") : NULL;
    const cJSON *mtype = model ? cJSON_GetObjectItemCaseSensitive(model, "type") : NULL;
    const cJSON *merges = model ? cJSON_GetObjectItemCaseSensitive(model, "merges") : NULL;
    bool bpe = cJSON_IsString(mtype) && !strcmp(mtype->valuestring, "BPE") &&
               cJSON_IsArray(merges) && cJSON_GetArraySize(merges) > 0;
    /* llama.cpp wants one vocabulary entry per embedding row: pad as its
     * converter does ("[PAD<i>]", unused) */
    int32_t n_tok = tok ? vkpt_tokenizer_n_vocab(tok) : 0;
    int32_t n = n_tok > (int32_t)model_vocab ? n_tok : (int32_t)model_vocab;
    char **toks = n > 0 ? vkpt_calloc((size_t)n, sizeof *toks) : NULL;
    int32_t *types = n > 0 ? vkpt_malloc((size_t)n * sizeof *types) : NULL;
    if (!err && (!toks || !types)) err = vkpt_fail(VKPT_ENOMEM, "vocab");
    for (int32_t i = 0; !err && i < n; i++) {
        vkpt_span s = i < n_tok ? vkpt_tokenizer_token(tok, i) : (vkpt_span){NULL, 0};
        char tmp[32];
        types[i] = i < n_tok && vkpt_tokenizer_is_special(tok, i) ? 3 : 1;
        if (!s.p) { /* a hole or padding: llama.cpp needs a string */
            snprintf(tmp, sizeof tmp, "[PAD%d]", i);
            s = (vkpt_span){tmp, strlen(tmp)};
            types[i] = 5; /* unused */
        }
        if (!(toks[i] = vkpt_strndup(s.p, s.n))) err = vkpt_fail(VKPT_ENOMEM, "vocab");
    }
    if (!err) err = vkpt_gguf_writer_set_str(w, "tokenizer.ggml.model", bpe ? "gpt2" : "llama");
    if (!err) err = vkpt_gguf_writer_set_str(w, "tokenizer.ggml.pre", "default");
    if (!err)
        err = vkpt_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks,
                                           (uint64_t)n);
    if (!err)
        err = vkpt_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", VKPT_GGUF_I32, types,
                                       (uint64_t)n);
    if (!err && bpe) {
        int nm = cJSON_GetArraySize(merges);
        char **ms = vkpt_calloc((size_t)nm, sizeof *ms);
        if (!ms) err = vkpt_fail(VKPT_ENOMEM, "merges");
        for (int i = 0; !err && i < nm; i++) {
            const cJSON *m = cJSON_GetArrayItem(merges, i);
            if (cJSON_IsString(m))
                ms[i] = vkpt_strdup(m->valuestring);
            else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 &&
                     cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                     cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
                const char *a = cJSON_GetArrayItem(m, 0)->valuestring,
                           *b = cJSON_GetArrayItem(m, 1)->valuestring;
                size_t la = strlen(a), lb = strlen(b);
                if ((ms[i] = vkpt_malloc(la + lb + 2))) {
                    memcpy(ms[i], a, la);
                    ms[i][la] = ' ';
                    memcpy(ms[i] + la + 1, b, lb + 1);
                }
            } else {
                err = vkpt_fail(VKPT_EFORMAT, "%s/tokenizer.json: merge %d is malformed", dir, i);
            }
            if (!err && !ms[i]) err = vkpt_fail(VKPT_ENOMEM, "merges");
        }
        if (!err)
            err = vkpt_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)ms,
                                               (uint64_t)nm);
        for (int i = 0; ms && i < nm; i++) vkpt_free(ms[i]);
        vkpt_free(ms);
    }
    if (!err) err = vkpt_gguf_writer_set_str(w, "vkpt.tokenizer_json", tj);
    if (!err && tc) err = vkpt_gguf_writer_set_str(w, "vkpt.tokenizer_config_json", tc);
    if (!err && tc) {
        cJSON *cfg = cJSON_ParseWithLength(tc, clen);
        const cJSON *tmpl = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "chat_template") : NULL;
        if (cJSON_IsString(tmpl))
            err = vkpt_gguf_writer_set_str(w, "tokenizer.chat_template", tmpl->valuestring);
        cJSON_Delete(cfg);
    }
    for (int32_t i = 0; toks && i < n; i++) vkpt_free(toks[i]);
    vkpt_free(toks);
    vkpt_free(types);
    cJSON_Delete(root);
    vkpt_tokenizer_destroy(tok);
    vkpt_free(tj);
    vkpt_free(tc);
    return err;
}

int vkpt_quantize_file(const char *in, const char *out, const char *type, int threads,
                       bool show_progress)
{
    const vkpt_ftype_info *f = type ? vkpt_ftype_by_name(type) : NULL;
    if (!f)
        return vkpt_fail(VKPT_EINVAL, "quantize: unknown type '%s' (types: %s)", type ? type : "",
                         vkpt_ftype_names());
    vkpt_src *src;
    int err = vkpt_src_open(in, &src);
    if (err) return err;
    plan p = {.threads = n_threads_default(threads), .progress = show_progress};
    vkpt_gguf_writer *w = NULL;
    float *factors = NULL;
    int nl = (int)src->hp.n_layer;
    for (size_t i = 0; i < src->n && !err; i++) {
        const vkpt_src_tensor *t = &src->t[i];
        uint32_t ty = choose_type(f, t->name, t->ne, t->n_dims, nl);
        bool plain = t->type == VKPT_Q_F32 || t->type == VKPT_Q_F16 || t->type == VKPT_Q_BF16;
        if (!plain && ty != t->type) {
            VKPT_LOGW("%s is already %s: kept as is (requantizing loses quality)", t->name,
                      vkpt_qtype_get(t->type)->name);
            ty = t->type;
        }
        err = plan_add(&p, t->name, ty, t->n_dims, t->ne[0], t->ne[1], t->ne[2] * t->ne[3]);
        if (!err) p.t[p.n - 1].src = t;
    }
    if (!err) err = vkpt_gguf_writer_create(&w);
    if (!err && src->is_gguf) {
        err = vkpt_gguf_writer_copy_kv(w, src->gguf, skip_ftype_keys, NULL);
        if (!err) err = vkpt_gguf_writer_set_u32(w, "general.file_type", f->ftype);
        if (!err) err = vkpt_gguf_writer_set_u32(w, "general.quantization_version", 2);
    } else if (!err) {
        err = write_hparams(w, src->arch->gguf_name, &src->hp, src->name, f->ftype);
        if (!err && src->hp.bos_id >= 0)
            err = vkpt_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id",
                                           (uint32_t)src->hp.bos_id);
        if (!err && src->hp.eos_id >= 0)
            err = vkpt_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id",
                                           (uint32_t)src->hp.eos_id);
        if (!err) err = hf_tokenizer_meta(w, src->path, src->hp.n_vocab);
        if (!err && src->hp.rope_scaling == VKPT_ROPE_LLAMA3) {
            /* llama.cpp reads llama3 scaling from this tensor */
            factors = vkpt_malloc(src->hp.rot_dim / 2 * sizeof(float));
            err = factors ? llama3_factors(&src->hp, factors)
                          : vkpt_fail(VKPT_ENOMEM, "rope factors");
            if (!err)
                err = plan_add(&p, "rope_freqs.weight", VKPT_Q_F32, 1, src->hp.rot_dim / 2, 1, 1);
        }
    }
    for (size_t i = 0; i < p.n && !err; i++)
        err = vkpt_gguf_writer_add_tensor(w, p.t[i].name, p.t[i].type, p.t[i].n_dims, p.t[i].ne);
    synth_ctx sc = {&p, factors};
    fill_ud fu = {&p, plan_rows, &sc, "quantizing"};
    p.t0 = vkpt_now_ns();
    if (!err) err = vkpt_gguf_writer_write(w, out, plan_fill_cb, &fu);
    if (!err) progress(&p, "quantizing", true);
    vkpt_gguf_writer_destroy(w);
    vkpt_free(factors);
    vkpt_free(p.t);
    vkpt_src_close(src);
    return err;
}
