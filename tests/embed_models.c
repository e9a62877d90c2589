/* Random encoder models in vkpt's input layouts, and the reference forward
 * pass (embed_models.h). */
#define _GNU_SOURCE
#include "embed_models.h"

#include "gguf.h"
#include "quant.h"
#include "safetensors.h"
#include "vkpt/base.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- weights ------------------------------------------------------------------------ */

typedef struct rng {
    uint64_t s;
} rng;

static double rng_u(rng *r)
{
    r->s += 0x9E3779B97F4A7C15ull;
    uint64_t z = r->s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (z >> 11) * (1.0 / 9007199254740992.0);
}

/* ~N(0, 1): the sum of four uniforms, rescaled */
static float rng_n(rng *r)
{
    double s = rng_u(r) + rng_u(r) + rng_u(r) + rng_u(r) - 2.0;
    return (float)(s * 1.7320508075688772);
}

static float round16(float v)
{
    return vkpt_f16_to_f32(vkpt_f32_to_f16(v));
}

static float *arr(rng *r, size_t n, float mean, float std, bool f16)
{
    float *a = malloc(n * sizeof *a);
    if (!a) return NULL;
    for (size_t i = 0; i < n; i++) {
        a[i] = mean + std * rng_n(r);
        if (f16) a[i] = round16(a[i]);
    }
    return a;
}

static float *ln_w(rng *r, size_t n, bool f16)
{
    float *a = malloc(n * sizeof *a);
    for (size_t i = 0; a && i < n; i++) {
        a[i] = 0.8f + 0.4f * (float)rng_u(r);
        if (f16) a[i] = round16(a[i]);
    }
    return a;
}

int embt_make(const embt_cfg *c, embt_model *m)
{
    memset(m, 0, sizeof *m);
    m->c = *c;
    rng r = {c->seed * 0x2545F4914F6CDD1Dull + 1};
    size_t E = c->n_embd, FF = c->n_ff;
    bool f = c->f16, bert = c->arch == EMBT_BERT, gte = c->arch == EMBT_GTE;
    bool biases = c->arch != EMBT_NOMIC;
    float se = 1.0f / sqrtf((float)E), sf = 1.0f / sqrtf((float)FF);
    m->tok = arr(&r, (size_t)c->vocab * E, 0, 1, f);
    if (bert) m->pos = arr(&r, (size_t)c->n_pos * E, 0, 1, f);
    if (c->n_types) m->type = arr(&r, (size_t)c->n_types * E, 0, 1, f);
    m->eln_w = ln_w(&r, E, f);
    m->eln_b = arr(&r, E, 0, 0.1f, f);
    m->l = calloc(c->n_layer, sizeof *m->l);
    if (!m->tok || !m->l) return VKPT_ENOMEM;
    for (uint32_t i = 0; i < c->n_layer; i++) {
        embt_layer *L = &m->l[i];
        L->wqkv = arr(&r, 3 * E * E, 0, se, f);
        L->wo = arr(&r, E * E, 0, se, f);
        if (biases) {
            L->bqkv = arr(&r, 3 * E, 0, 0.1f, f);
            L->bo = arr(&r, E, 0, 0.1f, f);
        }
        L->ln1_w = ln_w(&r, E, f);
        L->ln1_b = arr(&r, E, 0, 0.1f, f);
        L->up = arr(&r, FF * E, 0, se, f);
        if (bert) L->b_up = arr(&r, FF, 0, 0.1f, f);
        if (!bert) L->gate = arr(&r, FF * E, 0, se, f);
        L->down = arr(&r, E * FF, 0, sf, f);
        if (bert || gte) L->b_down = arr(&r, E, 0, 0.1f, f);
        L->ln2_w = ln_w(&r, E, f);
        L->ln2_b = arr(&r, E, 0, 0.1f, f);
        if (!L->wqkv || !L->wo || !L->up || !L->down || !L->ln2_b) return VKPT_ENOMEM;
    }
    return 0;
}

void embt_free(embt_model *m)
{
    free(m->tok), free(m->pos), free(m->type), free(m->eln_w), free(m->eln_b);
    for (uint32_t i = 0; m->l && i < m->c.n_layer; i++) {
        embt_layer *L = &m->l[i];
        float *all[] = {L->wqkv, L->bqkv, L->wo,     L->bo,   L->ln1_w,  L->ln1_b, L->up,
                        L->b_up, L->gate, L->b_gate, L->down, L->b_down, L->ln2_w, L->ln2_b};
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) free(all[k]);
    }
    free(m->l);
    memset(m, 0, sizeof *m);
}

/* ---- BERT from a Hugging Face folder ------------------------------------------------- */

static float *st_copy(const vkpt_safetensors *st, const char *name, size_t n)
{
    const vkpt_st_tensor *t = vkpt_st_find(st, name);
    if (!t || t->dtype != VKPT_ST_F32 || t->size != n * 4) return NULL;
    float *a = malloc(n * 4);
    if (a) memcpy(a, t->data, n * 4);
    return a;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) == (size_t)n)
        b[n] = 0;
    else
        free(b), b = NULL;
    fclose(f);
    return b;
}

int embt_load_bert(const char *dir, embt_model *m)
{
    memset(m, 0, sizeof *m);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text = slurp(path);
    cJSON *cfg = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (!cfg) return VKPT_EIO;
#define NUM(k) (uint32_t) cJSON_GetNumberValue(cJSON_GetObjectItem(cfg, k))
    embt_cfg *c = &m->c;
    c->arch = EMBT_BERT;
    c->vocab = NUM("vocab_size");
    c->n_embd = NUM("hidden_size");
    c->n_layer = NUM("num_hidden_layers");
    c->n_head = NUM("num_attention_heads");
    c->n_ff = NUM("intermediate_size");
    c->n_pos = NUM("max_position_embeddings");
    c->n_types = NUM("type_vocab_size");
    c->eps = (float)cJSON_GetNumberValue(cJSON_GetObjectItem(cfg, "layer_norm_eps"));
#undef NUM
    cJSON_Delete(cfg);
    vkpt_safetensors *st;
    int err = vkpt_st_open(dir, &st);
    if (err) return err;
    size_t E = c->n_embd, FF = c->n_ff;
    m->tok = st_copy(st, "embeddings.word_embeddings.weight", c->vocab * E);
    m->pos = st_copy(st, "embeddings.position_embeddings.weight", c->n_pos * E);
    m->type = st_copy(st, "embeddings.token_type_embeddings.weight", c->n_types * E);
    m->eln_w = st_copy(st, "embeddings.LayerNorm.weight", E);
    m->eln_b = st_copy(st, "embeddings.LayerNorm.bias", E);
    m->l = calloc(c->n_layer, sizeof *m->l);
    bool ok = m->tok && m->pos && m->type && m->eln_w && m->eln_b && m->l;
    for (uint32_t i = 0; ok && i < c->n_layer; i++) {
        embt_layer *L = &m->l[i];
        char n[160];
#define GET(dst, suffix, count)                                  \
    do {                                                         \
        snprintf(n, sizeof n, "encoder.layer.%u.%s", i, suffix); \
        if (!((dst) = st_copy(st, n, (count)))) ok = false;      \
    } while (0)
        L->wqkv = malloc(3 * E * E * 4);
        L->bqkv = malloc(3 * E * 4);
        const char *qkv[3] = {"query", "key", "value"};
        for (int k = 0; k < 3 && ok && L->wqkv && L->bqkv; k++) {
            float *w, *b;
            char sw[64], sb[64];
            snprintf(sw, sizeof sw, "attention.self.%s.weight", qkv[k]);
            snprintf(sb, sizeof sb, "attention.self.%s.bias", qkv[k]);
            GET(w, sw, E * E);
            GET(b, sb, E);
            if (ok) {
                memcpy(L->wqkv + k * E * E, w, E * E * 4);
                memcpy(L->bqkv + k * E, b, E * 4);
            }
            free(w), free(b);
        }
        GET(L->wo, "attention.output.dense.weight", E * E);
        GET(L->bo, "attention.output.dense.bias", E);
        GET(L->ln1_w, "attention.output.LayerNorm.weight", E);
        GET(L->ln1_b, "attention.output.LayerNorm.bias", E);
        GET(L->up, "intermediate.dense.weight", FF * E);
        GET(L->b_up, "intermediate.dense.bias", FF);
        GET(L->down, "output.dense.weight", E * FF);
        GET(L->b_down, "output.dense.bias", E);
        GET(L->ln2_w, "output.LayerNorm.weight", E);
        GET(L->ln2_b, "output.LayerNorm.bias", E);
#undef GET
    }
    vkpt_st_close(st);
    if (!ok) {
        embt_free(m);
        return VKPT_EFORMAT;
    }
    return 0;
}

/* ---- writers: the list of tensors of a layout -------------------------------------------- */

typedef struct wtensor {
    char name[96];
    const float *data; /* rows x cols, row-major */
    uint64_t rows, cols;
    const float *data2; /* concatenated below data (GTE's up_gate), or NULL */
    uint64_t rows2;
} wtensor;

typedef struct wlist {
    wtensor *t;
    size_t n, cap;
} wlist;

static void wl_add2(wlist *w, const char *name, const float *d, uint64_t rows, uint64_t cols,
                    const float *d2, uint64_t rows2)
{
    if (!d) return;
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->t = realloc(w->t, w->cap * sizeof *w->t);
    }
    wtensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->data = d;
    t->rows = rows;
    t->cols = cols;
    t->data2 = d2;
    t->rows2 = d2 ? rows2 : 0;
}

static void wl_add(wlist *w, const char *name, const float *d, uint64_t rows, uint64_t cols)
{
    wl_add2(w, name, d, rows, cols, NULL, 0);
}

static void hf_tensors(const embt_model *m, wlist *w)
{
    const embt_cfg *c = &m->c;
    uint64_t E = c->n_embd, FF = c->n_ff;
    bool nomic = c->arch == EMBT_NOMIC;
    wl_add(w, "embeddings.word_embeddings.weight", m->tok, c->vocab, E);
    wl_add(w, "embeddings.position_embeddings.weight", m->pos, c->n_pos, E);
    wl_add(w, "embeddings.token_type_embeddings.weight", m->type, c->n_types, E);
    wl_add(w, nomic ? "emb_ln.weight" : "embeddings.LayerNorm.weight", m->eln_w, 1, E);
    wl_add(w, nomic ? "emb_ln.bias" : "embeddings.LayerNorm.bias", m->eln_b, 1, E);
    for (uint32_t i = 0; i < c->n_layer; i++) {
        const embt_layer *L = &m->l[i];
        char n[128];
#define T(suffix, d, r, cc)                                                                       \
    do {                                                                                          \
        snprintf(n, sizeof n, "%s.%u.%s", nomic ? "encoder.layers" : "encoder.layer", i, suffix); \
        wl_add(w, n, d, r, cc);                                                                   \
    } while (0)
        if (c->arch == EMBT_BERT) {
            T("attention.self.query.weight", L->wqkv, E, E);
            T("attention.self.key.weight", L->wqkv + E * E, E, E);
            T("attention.self.value.weight", L->wqkv + 2 * E * E, E, E);
            T("attention.self.query.bias", L->bqkv, 1, E);
            T("attention.self.key.bias", L->bqkv + E, 1, E);
            T("attention.self.value.bias", L->bqkv + 2 * E, 1, E);
            T("attention.output.dense.weight", L->wo, E, E);
            T("attention.output.dense.bias", L->bo, 1, E);
            T("attention.output.LayerNorm.weight", L->ln1_w, 1, E);
            T("attention.output.LayerNorm.bias", L->ln1_b, 1, E);
            T("intermediate.dense.weight", L->up, FF, E);
            T("intermediate.dense.bias", L->b_up, 1, FF);
            T("output.dense.weight", L->down, E, FF);
            T("output.dense.bias", L->b_down, 1, E);
            T("output.LayerNorm.weight", L->ln2_w, 1, E);
            T("output.LayerNorm.bias", L->ln2_b, 1, E);
        } else if (c->arch == EMBT_GTE) {
            T("attention.qkv_proj.weight", L->wqkv, 3 * E, E);
            T("attention.qkv_proj.bias", L->bqkv, 1, 3 * E);
            T("attention.o_proj.weight", L->wo, E, E);
            T("attention.o_proj.bias", L->bo, 1, E);
            T("attn_ln.weight", L->ln1_w, 1, E);
            T("attn_ln.bias", L->ln1_b, 1, E);
            snprintf(n, sizeof n, "encoder.layer.%u.mlp.up_gate_proj.weight", i);
            wl_add2(w, n, L->up, FF, E, L->gate, FF); /* up rows, then gate rows */
            T("mlp.down_proj.weight", L->down, E, FF);
            T("mlp.down_proj.bias", L->b_down, 1, E);
            T("mlp_ln.weight", L->ln2_w, 1, E);
            T("mlp_ln.bias", L->ln2_b, 1, E);
        } else {
            T("attn.Wqkv.weight", L->wqkv, 3 * E, E);
            T("attn.out_proj.weight", L->wo, E, E);
            T("norm1.weight", L->ln1_w, 1, E);
            T("norm1.bias", L->ln1_b, 1, E);
            T("mlp.fc11.weight", L->up, FF, E);
            T("mlp.fc12.weight", L->gate, FF, E);
            T("mlp.fc2.weight", L->down, E, FF);
            T("norm2.weight", L->ln2_w, 1, E);
            T("norm2.bias", L->ln2_b, 1, E);
        }
#undef T
    }
}

/* Row r of a tensor as f32 (the second part follows the first). */
static const float *wt_row(const wtensor *t, uint64_t r)
{
    return r < t->rows ? t->data + r * t->cols : t->data2 + (r - t->rows) * t->cols;
}

static int write_rows(FILE *f, const wtensor *t, bool f16)
{
    uint64_t rows = t->rows + t->rows2;
    uint16_t *h = f16 ? malloc(t->cols * 2) : NULL;
    if (f16 && !h) return VKPT_ENOMEM;
    for (uint64_t r = 0; r < rows; r++) {
        const float *src = wt_row(t, r);
        size_t ok;
        if (f16) {
            for (uint64_t i = 0; i < t->cols; i++) h[i] = vkpt_f32_to_f16(src[i]);
            ok = fwrite(h, 2, t->cols, f);
        } else {
            ok = fwrite(src, 4, t->cols, f);
        }
        if (ok != t->cols) {
            free(h);
            return VKPT_EIO;
        }
    }
    free(h);
    return 0;
}

static int write_text(const char *dir, const char *name, const char *text)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return VKPT_EIO;
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : VKPT_EIO;
}

static int write_json(const char *dir, const char *name, cJSON *o)
{
    char *t = cJSON_Print(o);
    cJSON_Delete(o);
    if (!t) return VKPT_ENOMEM;
    int err = write_text(dir, name, t);
    cJSON_free(t);
    return err;
}

static int write_safetensors(const embt_model *m, const char *dir)
{
    wlist w = {0};
    hf_tensors(m, &w);
    bool f16 = m->c.f16;
    cJSON *hdr = cJSON_CreateObject();
    uint64_t off = 0;
    for (size_t i = 0; i < w.n; i++) {
        const wtensor *t = &w.t[i];
        uint64_t rows = t->rows + t->rows2, bytes = rows * t->cols * (f16 ? 2 : 4);
        cJSON *o = cJSON_AddObjectToObject(hdr, t->name);
        cJSON_AddStringToObject(o, "dtype", f16 ? "F16" : "F32");
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        if (rows > 1) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)rows));
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->cols));
        cJSON *offs = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    cJSON *meta = cJSON_AddObjectToObject(hdr, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    char *h = cJSON_PrintUnformatted(hdr);
    cJSON_Delete(hdr);
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = h ? fopen(path, "wb") : NULL;
    int err = f ? 0 : VKPT_EIO;
    if (!err) {
        size_t hl = strlen(h), pad = (8 - hl % 8) % 8;
        uint64_t n = hl + pad;
        if (fwrite(&n, 8, 1, f) != 1 || fwrite(h, 1, hl, f) != hl) err = VKPT_EIO;
        for (size_t i = 0; i < pad && !err; i++) err = fputc(' ', f) == EOF ? VKPT_EIO : 0;
        for (size_t i = 0; i < w.n && !err; i++) err = write_rows(f, &w.t[i], f16);
        if (fclose(f) && !err) err = VKPT_EIO;
    }
    cJSON_free(h);
    free(w.t);
    return err;
}

static int write_config(const embt_model *m, const char *dir)
{
    const embt_cfg *c = &m->c;
    cJSON *o = cJSON_CreateObject();
    cJSON *archs = cJSON_AddArrayToObject(o, "architectures");
    if (c->arch == EMBT_NOMIC) {
        cJSON_AddItemToArray(archs, cJSON_CreateString("NomicBertModel"));
        cJSON_AddStringToObject(o, "model_type", "nomic_bert");
        cJSON_AddNumberToObject(o, "vocab_size", c->vocab);
        cJSON_AddNumberToObject(o, "n_embd", c->n_embd);
        cJSON_AddNumberToObject(o, "n_layer", c->n_layer);
        cJSON_AddNumberToObject(o, "n_head", c->n_head);
        cJSON_AddNumberToObject(o, "n_inner", c->n_ff);
        cJSON_AddNumberToObject(o, "n_positions", c->n_pos);
        cJSON_AddNumberToObject(o, "type_vocab_size", c->n_types);
        cJSON_AddNumberToObject(o, "layer_norm_epsilon", c->eps);
        cJSON_AddNumberToObject(o, "rotary_emb_base", c->rope_theta);
        cJSON_AddNumberToObject(o, "rotary_emb_fraction", 1.0);
        cJSON_AddFalseToObject(o, "rotary_emb_interleaved");
        cJSON_AddStringToObject(o, "activation_function", "swiglu");
        cJSON_AddFalseToObject(o, "prenorm");
        cJSON_AddFalseToObject(o, "qkv_proj_bias");
        cJSON_AddFalseToObject(o, "mlp_fc1_bias");
        cJSON_AddFalseToObject(o, "mlp_fc2_bias");
        cJSON_AddFalseToObject(o, "causal");
    } else {
        bool gte = c->arch == EMBT_GTE;
        cJSON_AddItemToArray(archs, cJSON_CreateString(gte ? "NewModel" : "BertModel"));
        cJSON_AddStringToObject(o, "model_type", gte ? "new" : "bert");
        cJSON_AddNumberToObject(o, "vocab_size", c->vocab);
        cJSON_AddNumberToObject(o, "hidden_size", c->n_embd);
        cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layer);
        cJSON_AddNumberToObject(o, "num_attention_heads", c->n_head);
        cJSON_AddNumberToObject(o, "intermediate_size", c->n_ff);
        cJSON_AddNumberToObject(o, "max_position_embeddings", c->n_pos);
        cJSON_AddNumberToObject(o, "type_vocab_size", c->n_types);
        cJSON_AddNumberToObject(o, "layer_norm_eps", c->eps);
        cJSON_AddStringToObject(o, "hidden_act", "gelu");
        if (gte) {
            cJSON_AddStringToObject(o, "position_embedding_type", "rope");
            cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
            if (c->ntk > 0) {
                cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
                cJSON_AddStringToObject(rs, "type", "ntk");
                cJSON_AddNumberToObject(rs, "factor", c->ntk);
            }
            cJSON_AddBoolToObject(o, "unpad_inputs", true);
            cJSON_AddBoolToObject(o, "logn_attention_scale", false);
        } else {
            cJSON_AddStringToObject(o, "position_embedding_type", "absolute");
        }
    }
    return write_json(dir, "config.json", o);
}

int embt_write_tokenizer(const char *dir, uint32_t vocab)
{
    static const char *const specials[] = {"[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"};
    static const char *const words[] = {"the",   "quick", "brown", "fox",   "jumps",  "over",
                                        "lazy",  "dog",   "hello", "world", "vulkan", "embed",
                                        "##ing", "##ed",  "##s",   "once",  "upon",   "time"};
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "version", "1.0");
    cJSON *added = cJSON_AddArrayToObject(o, "added_tokens");
    for (int i = 0; i < 5; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", i);
        cJSON_AddStringToObject(t, "content", specials[i]);
        cJSON_AddFalseToObject(t, "single_word");
        cJSON_AddFalseToObject(t, "lstrip");
        cJSON_AddFalseToObject(t, "rstrip");
        cJSON_AddFalseToObject(t, "normalized");
        cJSON_AddTrueToObject(t, "special");
        cJSON_AddItemToArray(added, t);
    }
    cJSON *norm = cJSON_AddObjectToObject(o, "normalizer");
    cJSON_AddStringToObject(norm, "type", "BertNormalizer");
    cJSON_AddTrueToObject(norm, "clean_text");
    cJSON_AddTrueToObject(norm, "handle_chinese_chars");
    cJSON_AddNullToObject(norm, "strip_accents");
    cJSON_AddTrueToObject(norm, "lowercase");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(o, "pre_tokenizer"), "type",
                            "BertPreTokenizer");
    cJSON *post = cJSON_AddObjectToObject(o, "post_processor");
    cJSON_AddStringToObject(post, "type", "BertProcessing");
    cJSON *sep = cJSON_AddArrayToObject(post, "sep"), *cls = cJSON_AddArrayToObject(post, "cls");
    cJSON_AddItemToArray(sep, cJSON_CreateString("[SEP]"));
    cJSON_AddItemToArray(sep, cJSON_CreateNumber(2));
    cJSON_AddItemToArray(cls, cJSON_CreateString("[CLS]"));
    cJSON_AddItemToArray(cls, cJSON_CreateNumber(1));
    cJSON *dec = cJSON_AddObjectToObject(o, "decoder");
    cJSON_AddStringToObject(dec, "type", "WordPiece");
    cJSON_AddStringToObject(dec, "prefix", "##");
    cJSON_AddTrueToObject(dec, "cleanup");
    cJSON *model = cJSON_AddObjectToObject(o, "model");
    cJSON_AddStringToObject(model, "type", "WordPiece");
    cJSON_AddStringToObject(model, "unk_token", "[UNK]");
    cJSON_AddStringToObject(model, "continuing_subword_prefix", "##");
    cJSON_AddNumberToObject(model, "max_input_chars_per_word", 100);
    cJSON *v = cJSON_AddObjectToObject(model, "vocab");
    uint32_t id = 0;
    char buf[32];
    for (int i = 0; i < 5 && id < vocab; i++) cJSON_AddNumberToObject(v, specials[i], id++);
    for (char ch = 'a'; ch <= 'z' && id < vocab; ch++) {
        snprintf(buf, sizeof buf, "%c", ch);
        cJSON_AddNumberToObject(v, buf, id++);
        snprintf(buf, sizeof buf, "##%c", ch);
        cJSON_AddNumberToObject(v, buf, id++);
    }
    for (char ch = '0'; ch <= '9' && id < vocab; ch++) {
        snprintf(buf, sizeof buf, "%c", ch);
        cJSON_AddNumberToObject(v, buf, id++);
    }
    static const char punct[] = ".,!?;:'\"()-";
    for (size_t i = 0; punct[i] && id < vocab; i++) {
        snprintf(buf, sizeof buf, "%c", punct[i]);
        cJSON_AddNumberToObject(v, buf, id++);
    }
    for (size_t i = 0; i < sizeof words / sizeof words[0] && id < vocab; i++)
        if (!cJSON_GetObjectItemCaseSensitive(v, words[i]))
            cJSON_AddNumberToObject(v, words[i], id++);
    for (uint32_t k = 0; id < vocab; k++) {
        snprintf(buf, sizeof buf, "[unused%u]", k);
        cJSON_AddNumberToObject(v, buf, id++);
    }
    return write_json(dir, "tokenizer.json", o);
}

static int write_st_files(const char *dir, const char *pooling, bool normalize)
{
    cJSON *mods = cJSON_CreateArray();
    const char *types[3] = {"sentence_transformers.models.Transformer",
                            "sentence_transformers.models.Pooling",
                            "sentence_transformers.models.Normalize"};
    const char *paths[3] = {"", "1_Pooling", "2_Normalize"};
    for (int i = 0; i < (normalize ? 3 : 2); i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "idx", i);
        cJSON_AddStringToObject(o, "name", i ? paths[i] : "0");
        cJSON_AddStringToObject(o, "path", paths[i]);
        cJSON_AddStringToObject(o, "type", types[i]);
        cJSON_AddItemToArray(mods, o);
    }
    int err = write_json(dir, "modules.json", mods);
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/1_Pooling", dir);
    if (!err && mkdir(sub, 0755) && errno != EEXIST) err = VKPT_EIO;
    if (err) return err;
    cJSON *p = cJSON_CreateObject();
    cJSON_AddNumberToObject(p, "word_embedding_dimension", 0);
    const char *keys[] = {"cls_token",           "mean_tokens",
                          "max_tokens",          "mean_sqrt_len_tokens",
                          "weightedmean_tokens", "lasttoken"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char k[64];
        snprintf(k, sizeof k, "pooling_mode_%s", keys[i]);
        bool on = !strcmp(pooling, keys[i]) || (!strcmp(pooling, "cls") && i == 0) ||
                  (!strcmp(pooling, "mean") && i == 1) || (!strcmp(pooling, "max") && i == 2);
        cJSON_AddBoolToObject(p, k, on);
    }
    cJSON_AddTrueToObject(p, "include_prompt");
    return write_json(sub, "config.json", p);
}

int embt_write_hf(const embt_model *m, const char *dir, const char *st_pooling, bool normalize)
{
    int err = write_config(m, dir);
    if (!err) err = write_safetensors(m, dir);
    if (!err) err = embt_write_tokenizer(dir, m->c.vocab);
    if (!err && st_pooling) err = write_st_files(dir, st_pooling, normalize);
    return err;
}

/* ---- GGUF (llama.cpp's names) ------------------------------------------------------------ */

static void gguf_tensors(const embt_model *m, wlist *w)
{
    const embt_cfg *c = &m->c;
    uint64_t E = c->n_embd, FF = c->n_ff;
    wl_add(w, "token_embd.weight", m->tok, c->vocab, E);
    wl_add(w, "position_embd.weight", m->pos, c->n_pos, E);
    wl_add(w, "token_types.weight", m->type, c->n_types, E);
    wl_add(w, "token_embd_norm.weight", m->eln_w, 1, E);
    wl_add(w, "token_embd_norm.bias", m->eln_b, 1, E);
    for (uint32_t i = 0; i < c->n_layer; i++) {
        const embt_layer *L = &m->l[i];
        char n[128];
#define T(suffix, d, r, cc)                            \
    do {                                               \
        snprintf(n, sizeof n, "blk.%u.%s", i, suffix); \
        wl_add(w, n, d, r, cc);                        \
    } while (0)
        if (c->arch == EMBT_BERT) {
            T("attn_q.weight", L->wqkv, E, E);
            T("attn_k.weight", L->wqkv + E * E, E, E);
            T("attn_v.weight", L->wqkv + 2 * E * E, E, E);
            T("attn_q.bias", L->bqkv, 1, E);
            T("attn_k.bias", L->bqkv + E, 1, E);
            T("attn_v.bias", L->bqkv + 2 * E, 1, E);
        } else {
            T("attn_qkv.weight", L->wqkv, 3 * E, E);
            T("attn_qkv.bias", L->bqkv, 1, 3 * E);
        }
        T("attn_output.weight", L->wo, E, E);
        T("attn_output.bias", L->bo, 1, E);
        T("attn_output_norm.weight", L->ln1_w, 1, E);
        T("attn_output_norm.bias", L->ln1_b, 1, E);
        T("ffn_up.weight", L->up, FF, E);
        T("ffn_up.bias", L->b_up, 1, FF);
        T("ffn_gate.weight", L->gate, FF, E);
        T("ffn_down.weight", L->down, E, FF);
        T("ffn_down.bias", L->b_down, 1, E);
        T("layer_output_norm.weight", L->ln2_w, 1, E);
        T("layer_output_norm.bias", L->ln2_b, 1, E);
#undef T
    }
}

typedef struct gguf_fill {
    wlist *w;
    bool f16;
} gguf_fill;

static bool gguf_is_f16(const wtensor *t, bool f16)
{
    return f16 && t->rows + t->rows2 > 1; /* norms and biases stay F32, as llama.cpp's */
}

static int gguf_fill_cb(void *ud, uint64_t ti, void *dst, uint64_t size)
{
    gguf_fill *g = ud;
    const wtensor *t = &g->w->t[ti];
    bool h = gguf_is_f16(t, g->f16);
    uint64_t rows = t->rows + t->rows2;
    if (size != rows * t->cols * (h ? 2 : 4)) return VKPT_EINVAL;
    for (uint64_t r = 0; r < rows; r++) {
        const float *src = wt_row(t, r);
        if (h)
            for (uint64_t i = 0; i < t->cols; i++)
                ((uint16_t *)dst)[r * t->cols + i] = vkpt_f32_to_f16(src[i]);
        else
            memcpy((float *)dst + r * t->cols, src, t->cols * 4);
    }
    return 0;
}

static bool not_tokenizer(vkpt_span key, void *ud)
{
    (void)ud;
    return key.n < 10 || memcmp(key.p, "tokenizer.", 10);
}

int embt_write_gguf(const embt_model *m, const char *path, const char *vocab_gguf, int pooling_type)
{
    const embt_cfg *c = &m->c;
    if (c->arch == EMBT_GTE) return VKPT_EUNSUPPORTED;
    const char *a = c->arch == EMBT_BERT ? "bert" : "nomic-bert";
    vkpt_gguf *vg = NULL;
    vkpt_gguf_writer *w = NULL;
    wlist wl = {0};
    int err = vkpt_gguf_open(vocab_gguf, &vg);
    if (!err) err = vkpt_gguf_writer_create(&w);
    char k[128];
#define KEY(suffix) (snprintf(k, sizeof k, "%s." suffix, a), k)
    if (!err) err = vkpt_gguf_writer_set_str(w, "general.architecture", a);
    if (!err) err = vkpt_gguf_writer_set_str(w, "general.name", "embt random");
    if (!err) err = vkpt_gguf_writer_set_u32(w, KEY("context_length"), c->n_pos);
    if (!err) err = vkpt_gguf_writer_set_u32(w, KEY("embedding_length"), c->n_embd);
    if (!err) err = vkpt_gguf_writer_set_u32(w, KEY("block_count"), c->n_layer);
    if (!err) err = vkpt_gguf_writer_set_u32(w, KEY("feed_forward_length"), c->n_ff);
    if (!err) err = vkpt_gguf_writer_set_u32(w, KEY("attention.head_count"), c->n_head);
    if (!err) err = vkpt_gguf_writer_set_f32(w, KEY("attention.layer_norm_epsilon"), c->eps);
    if (!err) err = vkpt_gguf_writer_set_bool(w, KEY("attention.causal"), false);
    if (!err && pooling_type >= 0)
        err = vkpt_gguf_writer_set_u32(w, KEY("pooling_type"), (uint32_t)pooling_type);
    if (!err && c->arch == EMBT_NOMIC)
        err = vkpt_gguf_writer_set_f32(w, KEY("rope.freq_base"), c->rope_theta);
#undef KEY
    if (!err) err = vkpt_gguf_writer_copy_kv(w, vg, not_tokenizer, NULL);
    gguf_tensors(m, &wl);
    for (size_t i = 0; i < wl.n && !err; i++) {
        const wtensor *t = &wl.t[i];
        bool one = t->rows + t->rows2 == 1;
        uint64_t ne[2] = {t->cols, t->rows + t->rows2};
        err = vkpt_gguf_writer_add_tensor(
            w, t->name, gguf_is_f16(t, c->f16) ? VKPT_Q_F16 : VKPT_Q_F32, one ? 1 : 2, ne);
    }
    gguf_fill gf = {&wl, c->f16};
    if (!err) err = vkpt_gguf_writer_write(w, path, gguf_fill_cb, &gf);
    vkpt_gguf_writer_destroy(w);
    vkpt_gguf_close(vg);
    free(wl.t);
    return err;
}

/* ---- the reference forward pass -------------------------------------------------------------- */

/* y[n][M] = x[n][K] W^T (+ b), W [M][K], in double */
static void linear(const double *x, uint32_t n, uint32_t K, const float *w, const float *b,
                   uint32_t M, double *y)
{
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t o = 0; o < M; o++) {
            double s = b ? b[o] : 0;
            const float *wr = w + (size_t)o * K;
            const double *xr = x + (size_t)t * K;
            for (uint32_t i = 0; i < K; i++) s += xr[i] * wr[i];
            y[(size_t)t * M + o] = s;
        }
}

static void layernorm(double *x, uint32_t n, uint32_t E, const float *w, const float *b, double eps)
{
    for (uint32_t t = 0; t < n; t++) {
        double *r = x + (size_t)t * E, mean = 0, var = 0;
        for (uint32_t i = 0; i < E; i++) mean += r[i];
        mean /= E;
        for (uint32_t i = 0; i < E; i++) var += (r[i] - mean) * (r[i] - mean);
        var /= E;
        double inv = 1 / sqrt(var + eps);
        for (uint32_t i = 0; i < E; i++) r[i] = (r[i] - mean) * inv * w[i] + b[i];
    }
}

static double gelu(double v)
{
    return 0.5 * v * (1 + erf(v / sqrt(2.0)));
}

static double silu(double v)
{
    return v / (1 + exp(-v));
}

/* NeoX rotation of the first (and only) rot = head_dim dims, positions 0..n-1 */
static void rope(double *x, uint32_t n, uint32_t stride, uint32_t heads, uint32_t hd, double theta,
                 double ntk)
{
    uint32_t half = hd / 2;
    for (uint32_t t = 0; t < n; t++)
        for (uint32_t h = 0; h < heads; h++) {
            double *v = x + (size_t)t * stride + (size_t)h * hd;
            for (uint32_t k = 0; k < half; k++) {
                double f = ntk > 0 ? pow(theta * ntk, -2.0 * k / hd) / pow(ntk, 2.0 / hd)
                                   : pow(theta, -2.0 * k / hd);
                double a = t * f, c = cos(a), s = sin(a);
                double x0 = v[k], x1 = v[k + half];
                v[k] = x0 * c - x1 * s;
                v[k + half] = x1 * c + x0 * s;
            }
        }
}

int embt_forward(const embt_model *m, const int32_t *ids, uint32_t n, float *out)
{
    const embt_cfg *c = &m->c;
    uint32_t E = c->n_embd, FF = c->n_ff, H = c->n_head, hd = E / H;
    double *x = calloc((size_t)n * E, 8), *qkv = malloc((size_t)n * 3 * E * 8);
    double *a = malloc((size_t)n * E * 8), *h = malloc((size_t)n * E * 8);
    double *u = malloc((size_t)n * FF * 8), *g = malloc((size_t)n * FF * 8);
    double *w = malloc((size_t)n * 8);
    int err = x && qkv && a && h && u && g && w ? 0 : VKPT_ENOMEM;
    for (uint32_t t = 0; t < n && !err; t++) {
        if (ids[t] < 0 || (uint32_t)ids[t] >= c->vocab) err = VKPT_EINVAL;
        for (uint32_t i = 0; i < E && !err; i++) {
            double v = m->tok[(size_t)ids[t] * E + i];
            if (m->type) v += m->type[i];
            if (m->pos) v += m->pos[(size_t)t * E + i];
            x[(size_t)t * E + i] = v;
        }
    }
    if (!err) layernorm(x, n, E, m->eln_w, m->eln_b, c->eps);
    for (uint32_t l = 0; l < c->n_layer && !err; l++) {
        const embt_layer *L = &m->l[l];
        linear(x, n, E, L->wqkv, L->bqkv, 3 * E, qkv);
        if (c->arch != EMBT_BERT) {
            rope(qkv, n, 3 * E, H, hd, c->rope_theta, c->arch == EMBT_GTE ? c->ntk : 0);
            rope(qkv + E, n, 3 * E, H, hd, c->rope_theta, c->arch == EMBT_GTE ? c->ntk : 0);
        }
        double scale = 1 / sqrt((double)hd);
        for (uint32_t hh = 0; hh < H; hh++)
            for (uint32_t t = 0; t < n; t++) {
                const double *q = qkv + (size_t)t * 3 * E + hh * hd;
                double mx = -INFINITY, sum = 0;
                for (uint32_t j = 0; j < n; j++) {
                    const double *k = qkv + (size_t)j * 3 * E + E + hh * hd;
                    double d = 0;
                    for (uint32_t i = 0; i < hd; i++) d += q[i] * k[i];
                    w[j] = d * scale;
                    if (w[j] > mx) mx = w[j];
                }
                for (uint32_t j = 0; j < n; j++) sum += (w[j] = exp(w[j] - mx));
                for (uint32_t i = 0; i < hd; i++) {
                    double s = 0;
                    for (uint32_t j = 0; j < n; j++)
                        s += w[j] * qkv[(size_t)j * 3 * E + 2 * E + hh * hd + i];
                    a[(size_t)t * E + hh * hd + i] = s / sum;
                }
            }
        linear(a, n, E, L->wo, L->bo, E, h);
        for (size_t i = 0; i < (size_t)n * E; i++) x[i] += h[i];
        layernorm(x, n, E, L->ln1_w, L->ln1_b, c->eps);
        linear(x, n, E, L->up, L->b_up, FF, u);
        if (L->gate) {
            linear(x, n, E, L->gate, L->b_gate, FF, g);
            for (size_t i = 0; i < (size_t)n * FF; i++)
                u[i] *= c->arch == EMBT_NOMIC ? silu(g[i]) : gelu(g[i]);
        } else {
            for (size_t i = 0; i < (size_t)n * FF; i++) u[i] = gelu(u[i]);
        }
        linear(u, n, FF, L->down, L->b_down, E, h);
        for (size_t i = 0; i < (size_t)n * E; i++) x[i] += h[i];
        layernorm(x, n, E, L->ln2_w, L->ln2_b, c->eps);
    }
    for (size_t i = 0; !err && i < (size_t)n * E; i++) out[i] = (float)x[i];
    free(x), free(qkv), free(a), free(h), free(u), free(g), free(w);
    return err;
}

/* ---- temporary folders ------------------------------------------------------------------------ */

char *embt_tmpdir(char *buf, size_t cap, const char *tag)
{
    snprintf(buf, cap, "/tmp/vkpt-%s-XXXXXX", tag);
    return mkdtemp(buf);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void embt_rmtree(const char *dir)
{
    if (dir && dir[0]) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
