/* Loading a model onto a device: open the source, estimate memory and refuse
 * clearly when it will not fit, build the tokenizer, then upload every weight
 * once (converted or quantized on the host when asked) with a progress bar.
 *
 * Ownership: the model owns every vkpt_tensor buffer except `output` when the
 * embeddings are tied (then output aliases tok_embd and is not freed twice). */
#define _GNU_SOURCE
#include "model_int.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Canonical suffix -> field of vkpt_layer. */
static const struct {
    const char *suffix;
    size_t off;
} k_layer_fields[] = {
#define F(s, f)                    \
    {                              \
        s, offsetof(vkpt_layer, f) \
    }
    F("attn_norm.weight", attn_norm),
    F("attn_norm.bias", attn_norm_b),
    F("attn_q.weight", wq),
    F("attn_k.weight", wk),
    F("attn_v.weight", wv),
    F("attn_qkv.weight", wqkv),
    F("attn_q.bias", bq),
    F("attn_k.bias", bk),
    F("attn_v.bias", bv),
    F("attn_qkv.bias", bqkv),
    F("attn_output.weight", wo),
    F("attn_output.bias", bo),
    F("attn_q_norm.weight", q_norm),
    F("attn_k_norm.weight", k_norm),
    F("ffn_norm.weight", ffn_norm),
    F("ffn_norm.bias", ffn_norm_b),
    F("attn_output_norm.weight", post_norm),
    F("attn_output_norm.bias", post_norm_b),
    F("layer_output_norm.weight", ffn_norm),
    F("layer_output_norm.bias", ffn_norm_b),
    F("ffn_gate.weight", w_gate),
    F("ffn_up.weight", w_up),
    F("ffn_down.weight", w_down),
    F("ffn_up.bias", b_up),
    F("ffn_down.bias", b_down),
    F("ffn_up_gate.weight", w_up_gate),
    F("ffn_up_gate.bias", b_up_gate),
    F("ffn_gate_inp.weight", gate_inp),
    F("ffn_gate_exps.weight", gate_exps),
    F("ffn_up_exps.weight", up_exps),
    F("ffn_down_exps.weight", down_exps),
    F("ffn_gate_shexp.weight", gate_shexp),
    F("ffn_up_shexp.weight", up_shexp),
    F("ffn_down_shexp.weight", down_shexp),
    F("ffn_gate_inp_shexp.weight", gate_inp_shexp),
#undef F
};

static const struct {
    const char *name;
    size_t off;
} k_global_fields[] = {
#define F(s, f)                           \
    {                                     \
        s, offsetof(struct vkpt_model, f) \
    }
    F("token_embd.weight", tok_embd),       F("position_embd.weight", pos_embd),
    F("token_types.weight", type_embd),     F("token_embd_norm.weight", embd_norm),
    F("token_embd_norm.bias", embd_norm_b), F("output_norm.weight", out_norm),
    F("output_norm.bias", out_norm_b),      F("output.weight", output),
#undef F
};

/* Where tensor `name` goes in the model, or NULL for tensors vkpt does not
 * keep on the device. */
static vkpt_tensor *slot_of(struct vkpt_model *m, const char *name)
{
    for (size_t i = 0; i < sizeof k_global_fields / sizeof k_global_fields[0]; i++)
        if (!strcmp(name, k_global_fields[i].name))
            return (vkpt_tensor *)((char *)m + k_global_fields[i].off);
    unsigned layer;
    int n = 0;
    if (sscanf(name, "blk.%u.%n", &layer, &n) != 1 || !n || layer >= m->hp.n_layer) return NULL;
    for (size_t i = 0; i < sizeof k_layer_fields / sizeof k_layer_fields[0]; i++)
        if (!strcmp(name + n, k_layer_fields[i].suffix))
            return (vkpt_tensor *)((char *)&m->layers[layer] + k_layer_fields[i].off);
    return NULL;
}

/* The device type a source tensor is stored as. */
static uint32_t device_type(const vkpt_src_tensor *t, int quantize)
{
    if (t->n_dims == 1 || (t->ne[1] == 1 && t->ne[2] == 1)) return VKPT_Q_F32; /* norms, biases */
    bool plain = t->type == VKPT_Q_F32 || t->type == VKPT_Q_F16 || t->type == VKPT_Q_BF16;
    if (quantize >= 0 && plain && vkpt_qtype_row_bytes((uint32_t)quantize, t->ne[0]))
        return (uint32_t)quantize;
    const vkpt_qtype_info *qi = vkpt_qtype_get(t->type);
    if (qi && qi->weight) return t->type;
    return VKPT_Q_F32; /* formats kernels do not take (F64, I32, ...) */
}

static uint64_t tensor_bytes(uint32_t type, const vkpt_src_tensor *t)
{
    return vkpt_qtype_row_bytes(type, t->ne[0]) * (vkpt_src_nelem(t) / t->ne[0]);
}

/* ---- progress --------------------------------------------------------------------- */

typedef struct progress {
    bool tty, on;
    uint64_t total, done, t0, last;
} progress;

static void progress_draw(progress *p, bool final)
{
    if (!p->on) return;
    uint64_t now = vkpt_now_ns();
    if (!p->tty) {
        if (final)
            VKPT_LOGI("loaded %.2f GB of weights in %.1f s (%.2f GB/s)", p->done / 1e9,
                      (now - p->t0) / 1e9, p->done / (double)(now - p->t0 + 1));
        return;
    }
    if (!final && now - p->last < 100000000ull) return;
    p->last = now;
    double frac = p->total ? (double)p->done / p->total : 1;
    double secs = (now - p->t0) / 1e9, gbps = secs > 0 ? p->done / 1e9 / secs : 0;
    double eta = gbps > 0 ? (p->total - p->done) / 1e9 / gbps : 0;
    char bar[31];
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    fprintf(stderr, "\rloading weights [%s] %6.2f/%.2f GB  %5.2f GB/s  ETA %3.0fs%s", bar,
            p->done / 1e9, p->total / 1e9, gbps, eta, final ? "\n" : "");
    fflush(stderr);
}

/* ---- estimate ----------------------------------------------------------------------- */

uint64_t vkpt_model_kv_bytes_per_token(const vkpt_model *m)
{
    return 2ull * m->hp.n_layer * m->hp.n_head_kv * m->hp.head_dim * sizeof(uint16_t);
}

static int check_fits(vkpt_model *m, uint64_t weight_bytes, const vkpt_model_opts *o)
{
    const vkpt_device_caps *c = &m->dev->caps;
    vkpt_mem_stats st;
    vkpt_device_mem_stats(m->dev, &st);
    uint64_t budget = st.budget, used = st.reserved;
    uint32_t ctx = o && o->n_ctx
                       ? o->n_ctx
                       : (m->hp.n_ctx_train && m->hp.n_ctx_train < 4096 ? m->hp.n_ctx_train : 4096);
    uint64_t kv = vkpt_model_kv_bytes_per_token(m) * ctx;
    /* activations of a 512-token step in f32, a few buffers deep, plus logits */
    uint64_t scratch =
        512ull *
            (4 * m->hp.n_embd + 2 * (m->hp.n_ff > m->hp.n_ff_exp ? m->hp.n_ff : m->hp.n_ff_exp)) *
            4 +
        64ull * m->hp.n_vocab * 4;
    uint64_t need = weight_bytes + kv + scratch;
    VKPT_LOGI("memory estimate for %s on %s: weights %.2f GiB + KV cache %.2f GiB (%u tokens) + "
              "scratch %.2f GiB "
              "= %.2f GiB of %.2f GiB available",
              m->info.name, c->name, weight_bytes / 1073741824.0, kv / 1073741824.0, ctx,
              scratch / 1073741824.0, need / 1073741824.0,
              (budget > used ? budget - used : 0) / 1073741824.0);
    if (used + weight_bytes + scratch > budget)
        return vkpt_fail(
            VKPT_EDEVMEM,
            "%s does not fit %s: its weights need %.2f GiB plus %.2f GiB of scratch, but only %.2f "
            "GiB of device memory is available (try a smaller quantization: --quantize q4_k)",
            m->info.name, c->name, weight_bytes / 1073741824.0, scratch / 1073741824.0,
            (budget > used ? budget - used : 0) / 1073741824.0);
    if (used + need > budget)
        VKPT_LOGW("the KV cache for %u tokens will not fit beside the weights; the context will be "
                  "smaller",
                  ctx);
    return 0;
}

/* ---- load --------------------------------------------------------------------------- */

static int upload_tensor(vkpt_model *m, const vkpt_src_tensor *t, uint32_t type, vkpt_tensor *dst,
                         uint8_t **host, uint64_t *host_cap, progress *pg)
{
    uint64_t bytes = tensor_bytes(type, t);
    int err = vkpt_buf_alloc(m->dev, bytes, VKPT_MK_DEVICE, VKPT_MEM_WEIGHTS, &dst->buf);
    if (err) return vkpt_fail(err, "tensor %s: %s", t->name, vkpt_errmsg(err));
    dst->type = type;
    dst->n_dims = t->n_dims;
    memcpy(dst->ne, t->ne, sizeof dst->ne);
    bool direct = type == t->type && t->xform == VKPT_XF_NONE;
    if (direct) {
        /* straight from the mapping, part by part */
        uint64_t off = 0;
        for (uint32_t p = 0; p < t->n_parts && !err; p++) {
            err = vkpt_buf_upload(m->dev, &dst->buf, off, t->parts[p].data, t->parts[p].size);
            off += t->parts[p].size;
        }
    } else {
        uint8_t *target = dst->buf.map;
        if (!target) {
            if (bytes > *host_cap) {
                void *nh = vkpt_realloc(*host, bytes);
                if (!nh)
                    return vkpt_fail(VKPT_ENOMEM, "tensor %s: %.1f MiB conversion buffer", t->name,
                                     bytes / 1048576.0);
                *host = nh;
                *host_cap = bytes;
            }
            target = *host;
        }
        err = vkpt_src_read(t, type, target);
        if (!err && !dst->buf.map) err = vkpt_buf_upload(m->dev, &dst->buf, 0, target, bytes);
    }
    if (err) return vkpt_fail(err, "tensor %s: %s", t->name, vkpt_errmsg(err));
    pg->done += bytes;
    progress_draw(pg, false);
    return 0;
}

void vkpt_model_destroy(vkpt_model *m)
{
    if (!m) return;
    bool tied = m->output.buf.buf == m->tok_embd.buf.buf;
    if (!tied) vkpt_buf_free(m->dev, &m->output.buf);
    vkpt_tensor *globals[] = {&m->tok_embd,    &m->pos_embd, &m->type_embd, &m->embd_norm,
                              &m->embd_norm_b, &m->out_norm, &m->out_norm_b};
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++)
        vkpt_buf_free(m->dev, &globals[i]->buf);
    if (m->layers)
        for (uint32_t l = 0; l < m->hp.n_layer; l++)
            for (size_t f = 0; f < sizeof k_layer_fields / sizeof k_layer_fields[0]; f++) {
                vkpt_tensor *t = (vkpt_tensor *)((char *)&m->layers[l] + k_layer_fields[f].off);
                vkpt_buf_free(m->dev, &t->buf);
            }
    vkpt_free(m->layers);
    vkpt_free(m->rope_freq_factors);
    vkpt_tokenizer_destroy(m->tok);
    vkpt_free(m);
}

int vkpt_model_load(vkpt_device *dev, const char *path, const vkpt_model_opts *opts,
                    vkpt_model **out)
{
    if (!dev || !out) return vkpt_fail(VKPT_EINVAL, "vkpt_model_load: NULL");
    *out = NULL;
    vkpt_model_opts o = VKPT_MODEL_OPTS_DEFAULT;
    if (opts) o = *opts;
    vkpt_src *src = NULL;
    int err = vkpt_src_open(path, &src);
    if (err) return err;
    vkpt_model *m = vkpt_calloc(1, sizeof *m);
    uint8_t *host = NULL;
    uint64_t host_cap = 0;
    if (!m || !(m->layers = vkpt_calloc(src->hp.n_layer, sizeof *m->layers))) {
        err = vkpt_fail(VKPT_ENOMEM, "model");
        goto fail;
    }
    m->dev = dev;
    m->arch = src->arch;
    m->hp = src->hp;
    vkpt_model_info *mi = &m->info;
    snprintf(mi->arch, sizeof mi->arch, "%s", src->arch->gguf_name);
    snprintf(mi->name, sizeof mi->name, "%s", src->name[0] ? src->name : path);
    snprintf(mi->source, sizeof mi->source, "%s", src->is_gguf ? "gguf" : "hf");
    mi->n_vocab = m->hp.n_vocab;
    mi->n_embd = m->hp.n_embd;
    mi->n_layer = m->hp.n_layer;
    mi->n_head = m->hp.n_head;
    mi->n_head_kv = m->hp.n_head_kv;
    mi->head_dim = m->hp.head_dim;
    mi->n_ff = m->hp.n_ff;
    mi->n_ctx_train = m->hp.n_ctx_train;
    mi->n_expert = m->hp.n_expert;
    mi->n_expert_used = m->hp.n_expert_used;
    mi->causal = !(m->arch->flags & VKPT_AF_ENCODER);
    mi->pooling = m->hp.pooling;
    mi->normalize = m->hp.normalize;

    /* tokenizer first: a model whose tokenizer cannot load is not usable */
    err = src->is_gguf ? vkpt_tokenizer_create_gguf(src->gguf, &m->tok)
                       : vkpt_tokenizer_create_file(path, &m->tok);
    if (err) {
        err = vkpt_fail(err, "%s: tokenizer: %s", path, vkpt_errmsg(err));
        goto fail;
    }

    uint64_t total = 0;
    for (size_t i = 0; i < src->n; i++) {
        const vkpt_src_tensor *t = &src->t[i];
        if (!slot_of(m, t->name)) continue;
        total += tensor_bytes(device_type(t, o.quantize), t);
        mi->n_params += vkpt_src_nelem(t);
    }
    if ((err = check_fits(m, total, &o))) goto fail;

    progress pg = {.tty = isatty(2), .on = o.progress, .total = total, .t0 = vkpt_now_ns()};
    for (size_t i = 0; i < src->n; i++) {
        const vkpt_src_tensor *t = &src->t[i];
        if (!strcmp(t->name, "rope_freqs.weight")) {
            uint64_t n = vkpt_src_nelem(t);
            if (n != m->hp.rot_dim / 2) {
                err = vkpt_fail(VKPT_EFORMAT, "%s: rope_freqs.weight has %llu values, expected %u",
                                path, (unsigned long long)n, m->hp.rot_dim / 2);
                goto fail;
            }
            if (!(m->rope_freq_factors = vkpt_malloc(n * sizeof(float))) ||
                (err = vkpt_src_read(t, VKPT_Q_F32, m->rope_freq_factors))) {
                if (!err) err = vkpt_fail(VKPT_ENOMEM, "rope_freqs");
                goto fail;
            }
            continue;
        }
        vkpt_tensor *slot = slot_of(m, t->name);
        if (!slot) {
            VKPT_LOGD("%s: ignoring tensor %s", path, t->name);
            continue;
        }
        if ((err = upload_tensor(m, t, device_type(t, o.quantize), slot, &host, &host_cap, &pg)))
            goto fail;
        mi->weight_bytes += slot->buf.size;
    }
    progress_draw(&pg, true);
    if (m->arch->id == VKPT_ARCH_DBRX)
        for (uint32_t l = 0; l < m->hp.n_layer; l++) {
            /* DBRX's attn_output_norm (llama.cpp's name for HF norm_2)
             * normalizes the FFN's input: it is the FFN pre-norm */
            vkpt_layer *L = &m->layers[l];
            if (vkpt_tensor_ok(&L->ffn_norm) || !vkpt_tensor_ok(&L->post_norm)) continue;
            L->ffn_norm = L->post_norm;
            L->ffn_norm_b = L->post_norm_b;
            memset(&L->post_norm, 0, sizeof L->post_norm);
            memset(&L->post_norm_b, 0, sizeof L->post_norm_b);
        }
    if (!vkpt_tensor_ok(&m->output)) {
        if (!vkpt_tensor_ok(&m->tok_embd)) {
            err = vkpt_fail(VKPT_EFORMAT, "%s: no token embedding (token_embd.weight)", path);
            goto fail;
        }
        m->output = m->tok_embd; /* tied: aliased, freed once */
        m->hp.tie_embeddings = true;
    }
    vkpt_free(host);
    vkpt_src_close(src);
    *out = m;
    return 0;
fail:
    vkpt_free(host);
    vkpt_src_close(src);
    vkpt_model_destroy(m);
    return err;
}

const vkpt_model_info *vkpt_model_get_info(const vkpt_model *m)
{
    return &m->info;
}

const vkpt_tokenizer *vkpt_model_tokenizer(const vkpt_model *m)
{
    return m->tok;
}

vkpt_device *vkpt_model_device(const vkpt_model *m)
{
    return m->dev;
}
