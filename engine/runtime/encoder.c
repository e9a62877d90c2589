/* The encoder forward pass over a packed batch, pooled on the GPU.
 *
 * A step is one command buffer:
 *   x = tok_embd[ids] (+ pos_embd[pos]) (+ type_embd[0]);  x = LN(x)
 *   per layer:
 *     qkv = x Wqkv + b (fused, or three projections into one buffer)
 *     (RoPE on q, k: GTE, nomic-bert)
 *     a = attention of every row over its own sequence's rows (f32, k_encattn)
 *     x = LN(x + a Wo + bo)
 *     f = act(x Wup + b) Wdown + b      (BERT: GELU)
 *       | act(x Wgate) * (x Wup) ...    (gated: GTE GeGLU, nomic SwiGLU)
 *     x = LN(x + f)
 *   vectors = pool(x rows of each sequence)  (+ L2 norm, truncation)
 * Rows of one sequence are contiguous and sequences follow each other; the
 * attention's work items keep every sequence to itself, so one sequence's
 * vector does not depend on what else is in the step (every other kernel is
 * row-wise; with batch_invariant the projections are too).
 *
 * Buffers are allocated at creation for max_tokens rows; each fits one
 * storage binding, which caps max_tokens (lavapipe: 128 MiB per binding). */
#define _GNU_SOURCE
#include "encoder.h"

#include "k_act.h"
#include "k_encattn.h"
#include "k_matmul.h"
#include "k_norm.h"
#include "k_rope.h"
#include "kernels.h"

#include <math.h>
#include <string.h>

struct vkpt_encoder {
    vkpt_model *m;
    vkpt_device *dev;
    const vkpt_hparams *hp;
    vkpt_encoder_opts o;
    uint32_t T, S, max_items;
    uint32_t Dq, Dkv, W, FF;
    bool gated, rope;
    int rope_layout;
    vkpt_encattn_params ap;
    vkpt_cmd cmd;
    /* device scratch */
    vkpt_buf x, h, h2, qkv, ao, gu, act, inv_freq;
    /* host-visible inputs and the output */
    vkpt_buf in_ids, in_pos, in_types, in_items, in_pool, out_vec;
    uint32_t last_rows, last_seqs;
};

uint32_t vkpt_encoder_max_tokens(const vkpt_encoder *e)
{
    return e->T;
}

uint32_t vkpt_encoder_max_seqs(const vkpt_encoder *e)
{
    return e->S;
}

uint32_t vkpt_encoder_max_seq_len(const vkpt_encoder *e)
{
    return e->o.max_seq_len;
}

void vkpt_encoder_destroy(vkpt_encoder *e)
{
    if (!e) return;
    vkpt_cmd_free(&e->cmd);
    vkpt_buf *bufs[] = {&e->x,        &e->h,        &e->h2,       &e->qkv,    &e->ao,
                        &e->gu,       &e->act,      &e->inv_freq, &e->in_ids, &e->in_pos,
                        &e->in_types, &e->in_items, &e->in_pool,  &e->out_vec};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) vkpt_buf_free(e->dev, bufs[i]);
    vkpt_free(e);
}

/* The rotary table: plain frequencies, with GTE's fixed NTK scaling
 * (base * f, then every frequency / f^(2/rot_dim)) when the config asks. */
static int setup_rope(vkpt_encoder *e)
{
    const vkpt_hparams *hp = e->hp;
    uint32_t n = hp->rot_dim / 2;
    float ntk = hp->rope_ntk > 0 ? hp->rope_ntk : 1.0f;
    vkpt_rope_cfg c = {
        .scaling = VKPT_ROPE_PLAIN, .rot_dim = hp->rot_dim, .theta = (double)hp->rope_theta * ntk};
    float *f = vkpt_malloc(n * sizeof(float)), mscale;
    if (!f) return vkpt_fail(VKPT_ENOMEM, "rope table");
    int err = vkpt_rope_freqs(&c, f, &mscale);
    if (!err && hp->rope_ntk > 0) {
        float div = (float)pow(ntk, 2.0 / hp->rot_dim);
        for (uint32_t i = 0; i < n; i++) f[i] /= div;
    }
    if (!err)
        err =
            vkpt_buf_alloc(e->dev, n * sizeof(float), VKPT_MK_DEVICE, VKPT_MEM_OTHER, &e->inv_freq);
    if (!err) err = vkpt_buf_upload(e->dev, &e->inv_freq, 0, f, n * sizeof(float));
    vkpt_free(f);
    return err;
}

/* What the loader gave us is enough for the forward pass? */
static int check_weights(const vkpt_model *m)
{
    const vkpt_hparams *hp = &m->hp;
    const char *miss = NULL;
    if (!vkpt_tensor_ok(&m->tok_embd)) miss = "token_embd";
    if (!vkpt_tensor_ok(&m->embd_norm)) miss = "token_embd_norm";
    bool rope = (m->arch->flags & VKPT_AF_ROPE) != 0;
    if (!rope && !vkpt_tensor_ok(&m->pos_embd)) miss = "position_embd";
    for (uint32_t l = 0; l < hp->n_layer && !miss; l++) {
        const vkpt_layer *L = &m->layers[l];
        if (!vkpt_tensor_ok(&L->wqkv) &&
            (!vkpt_tensor_ok(&L->wq) || !vkpt_tensor_ok(&L->wk) || !vkpt_tensor_ok(&L->wv)))
            miss = "attn_qkv (or attn_q/k/v)";
        else if (!vkpt_tensor_ok(&L->wo))
            miss = "attn_output";
        else if (!vkpt_tensor_ok(&L->post_norm))
            miss = "attn_output_norm";
        else if (!vkpt_tensor_ok(&L->ffn_norm))
            miss = "layer_output_norm";
        else if (!vkpt_tensor_ok(&L->w_down))
            miss = "ffn_down";
        else if (!vkpt_tensor_ok(&L->w_up_gate) && !vkpt_tensor_ok(&L->w_up))
            miss = "ffn_up";
    }
    if (miss)
        return vkpt_fail(VKPT_EFORMAT, "%s: the %s encoder has no %s weights", m->info.name,
                         m->arch->gguf_name, miss);
    return 0;
}

int vkpt_encoder_create(vkpt_model *m, const vkpt_encoder_opts *opts, vkpt_encoder **out)
{
    if (!m || !out) return vkpt_fail(VKPT_EINVAL, "vkpt_encoder_create: NULL");
    *out = NULL;
    if (!(m->arch->flags & VKPT_AF_ENCODER))
        return vkpt_fail(VKPT_EUNSUPPORTED, "%s is not an embedding model (architecture %s)",
                         m->info.name, m->arch->gguf_name);
    int err = check_weights(m);
    if (err) return err;
    vkpt_encoder *e = vkpt_calloc(1, sizeof *e);
    if (!e) return vkpt_fail(VKPT_ENOMEM, "encoder");
    e->m = m;
    e->dev = m->dev;
    e->hp = &m->hp;
    if (opts) e->o = *opts;
    const vkpt_hparams *hp = e->hp;
    const vkpt_layer *L0 = &m->layers[0];
    uint32_t E = hp->n_embd;
    e->Dq = hp->n_head * hp->head_dim;
    e->Dkv = hp->n_head_kv * hp->head_dim;
    e->W = e->Dq + 2 * e->Dkv;
    e->gated = vkpt_tensor_ok(&L0->w_up_gate) || vkpt_tensor_ok(&L0->w_gate);
    e->FF = vkpt_tensor_ok(&L0->w_up_gate) ? (uint32_t)L0->w_up_gate.ne[1] / 2
                                           : (uint32_t)L0->w_up.ne[1];
    e->rope = (m->arch->flags & VKPT_AF_ROPE) != 0;
    e->rope_layout = (m->arch->flags & VKPT_AF_ROPE_NEOX) ? VKPT_ROPE_NEOX : VKPT_ROPE_INTERLEAVED;
    e->ap = (vkpt_encattn_params){hp->n_head, hp->n_head_kv, hp->head_dim, 0};
    if (hp->head_dim % 4 || hp->head_dim > 256) {
        err = vkpt_fail(VKPT_EUNSUPPORTED, "%s: head_dim %u (a multiple of 4 up to 256)",
                        m->info.name, hp->head_dim);
        goto fail;
    }

    /* limits: every scratch buffer must fit one binding */
    uint64_t widest = E;
    if (e->W > widest) widest = e->W;
    if ((uint64_t)(e->gated ? 2 : 1) * e->FF > widest)
        widest = (uint64_t)(e->gated ? 2 : 1) * e->FF;
    uint64_t bind = e->dev->caps.max_storage_buffer_range;
    if (bind > 0xFFFFFFFFull) bind = 0xFFFFFFFFull;
    uint64_t t_cap = bind / (widest * 4);
    uint32_t train = hp->n_ctx_train ? hp->n_ctx_train : 512;
    if (!e->o.max_seq_len) e->o.max_seq_len = train < 8192 ? train : 8192;
    /* absolute positions stop where the position table does */
    if (vkpt_tensor_ok(&m->pos_embd) && e->o.max_seq_len > m->pos_embd.ne[1])
        e->o.max_seq_len = (uint32_t)m->pos_embd.ne[1];
    if (!e->o.max_tokens) e->o.max_tokens = 2048;
    if (e->o.max_tokens < e->o.max_seq_len) e->o.max_tokens = e->o.max_seq_len;
    if (e->o.max_tokens > t_cap) {
        VKPT_LOGW("%s: steps limited to %llu tokens by the device's largest buffer binding",
                  m->info.name, (unsigned long long)t_cap);
        e->o.max_tokens = (uint32_t)t_cap;
        if (e->o.max_seq_len > t_cap) e->o.max_seq_len = (uint32_t)t_cap;
    }
    if (!e->o.max_seqs) e->o.max_seqs = 64;
    e->T = e->o.max_tokens;
    e->S = e->o.max_seqs;
    e->max_items = e->T / VKPT_ENCATTN_ROWS + e->S;

    if ((err = vkpt_cmd_init(e->dev, e->o.queue, &e->cmd))) goto fail;
    uint64_t T = e->T;
    const int D = VKPT_MK_DEVICE, U = VKPT_MK_UPLOAD, H = VKPT_MK_HOST;
    struct {
        vkpt_buf *b;
        uint64_t bytes;
        int kind;
    } plan[] = {
        {&e->x, T * E * 4, D},
        {&e->h, T * E * 4, D},
        {&e->h2, T * E * 4, D},
        {&e->qkv, T * e->W * 4, D},
        {&e->ao, T * e->Dq * 4, D},
        {&e->gu, T * (e->gated ? 2 : 1) * e->FF * 4, D},
        {&e->act, e->gated ? T * e->FF * 4 : 16, D},
        {&e->in_ids, T * 4, U},
        {&e->in_pos, T * 4, U},
        {&e->in_types, T * 4, U},
        {&e->in_items, (uint64_t)e->max_items * 12, U},
        {&e->in_pool, (uint64_t)e->S * sizeof(vkpt_pool_seq), U},
        {&e->out_vec, (uint64_t)e->S * E * 4, H},
    };
    for (size_t i = 0; i < sizeof plan / sizeof plan[0] && !err; i++)
        err = vkpt_buf_alloc(e->dev, plan[i].bytes, plan[i].kind, VKPT_MEM_SCRATCH, plan[i].b);
    if (err) {
        err = vkpt_fail(err, "%s: encoder scratch for %u tokens: %s", m->info.name, e->T,
                        vkpt_errmsg(err));
        goto fail;
    }
    if (!e->in_ids.map || !e->in_items.map || !e->out_vec.map) {
        err = vkpt_fail(VKPT_EUNSUPPORTED, "%s: host-visible memory is not mappable",
                        e->dev->caps.name);
        goto fail;
    }
    /* every token is segment A (token type 0) */
    memset(e->in_types.map, 0, T * 4);
    if (e->rope && (err = setup_rope(e))) goto fail;
    *out = e;
    return 0;
fail:
    vkpt_encoder_destroy(e);
    return err;
}

/* ---- the step ---------------------------------------------------------------------- */

#define TRY(x)                      \
    do {                            \
        if ((err = (x))) goto fail; \
    } while (0)

static vkpt_buf nullbuf(void)
{
    vkpt_buf b;
    memset(&b, 0, sizeof b);
    b.block = -1;
    return b;
}

/* y (rows y_stride apart, starting y_off elements in) = x W (+ bias). */
static int matmul(vkpt_encoder *e, const vkpt_tensor *w, const vkpt_buf *x, uint32_t n,
                  const vkpt_buf *y, uint32_t y_off, uint32_t y_stride, const vkpt_tensor *bias)
{
    vkpt_buf yv = vkpt_buf_view(y, (uint64_t)y_off * 4, y->size - (uint64_t)y_off * 4);
    vkpt_mm_args a = {.wtype = w->type,
                      .w = w->buf,
                      .K = (uint32_t)w->ne[0],
                      .M = (uint32_t)w->ne[1],
                      .n_tok = n,
                      .x = *x,
                      .xq = nullbuf(),
                      .y = yv,
                      .y_stride = y_stride,
                      .bias = bias && vkpt_tensor_ok(bias) ? bias->buf : nullbuf(),
                      .path = e->o.batch_invariant ? VKPT_MM_MATMUL : VKPT_MM_AUTO};
    return vkpt_k_matmul(&e->cmd, &a);
}

static int layernorm(vkpt_encoder *e, const vkpt_buf *x, const vkpt_tensor *w, const vkpt_tensor *b,
                     uint32_t n)
{
    vkpt_rows r = vkpt_rows_of(x, 0, e->hp->n_embd);
    return vkpt_k_layernorm(&e->cmd, &r, &r, vkpt_tensor_ok(w) ? &w->buf : NULL,
                            vkpt_tensor_ok(b) ? &b->buf : NULL, e->hp->n_embd, n, e->hp->norm_eps);
}

/* x = LN(x + attention(x)) */
static int attention_block(vkpt_encoder *e, const vkpt_layer *L, uint32_t n, uint32_t n_items)
{
    const vkpt_hparams *hp = e->hp;
    vkpt_cmd *c = &e->cmd;
    uint32_t E = hp->n_embd, Dq = e->Dq, Dkv = e->Dkv, W = e->W;
    int err = 0;
    if (vkpt_tensor_ok(&L->wqkv)) {
        TRY(matmul(e, &L->wqkv, &e->x, n, &e->qkv, 0, W, &L->bqkv));
    } else {
        TRY(matmul(e, &L->wq, &e->x, n, &e->qkv, 0, W, &L->bq));
        TRY(matmul(e, &L->wk, &e->x, n, &e->qkv, Dq, W, &L->bk));
        TRY(matmul(e, &L->wv, &e->x, n, &e->qkv, Dq + Dkv, W, &L->bv));
    }
    vkpt_cmd_barrier(c);
    vkpt_rows q = vkpt_rows_of(&e->qkv, 0, W), k = vkpt_rows_of(&e->qkv, Dq, W);
    vkpt_rows v = vkpt_rows_of(&e->qkv, Dq + Dkv, W), o = vkpt_rows_of(&e->ao, 0, Dq);
    if (e->rope) {
        TRY(vkpt_k_rope(c, &q, &e->in_pos, &e->inv_freq, n, hp->n_head, hp->head_dim, hp->rot_dim,
                        e->rope_layout, 1.0f));
        TRY(vkpt_k_rope(c, &k, &e->in_pos, &e->inv_freq, n, hp->n_head_kv, hp->head_dim,
                        hp->rot_dim, e->rope_layout, 1.0f));
        vkpt_cmd_barrier(c);
    }
    TRY(vkpt_k_encattn(c, &e->ap, &e->in_items, n_items, n, &q, &k, &v, &o));
    vkpt_cmd_barrier(c);
    TRY(matmul(e, &L->wo, &e->ao, n, &e->h, 0, E, &L->bo));
    vkpt_cmd_barrier(c);
    TRY(vkpt_k_add_f32(c, &e->x, &e->h, &e->x, n * E));
    vkpt_cmd_barrier(c);
    TRY(layernorm(e, &e->x, &L->post_norm, &L->post_norm_b, n));
    vkpt_cmd_barrier(c);
    return 0;
fail:
    return err;
}

/* x = LN(x + ffn(x)) */
static int ffn_block(vkpt_encoder *e, const vkpt_layer *L, uint32_t n)
{
    const vkpt_hparams *hp = e->hp;
    vkpt_cmd *c = &e->cmd;
    uint32_t E = hp->n_embd, FF = e->FF;
    int err = 0;
    const vkpt_buf *down_in = &e->gu;
    if (vkpt_tensor_ok(&L->w_up_gate)) {
        /* GTE: one projection, up rows first, then gate rows */
        TRY(matmul(e, &L->w_up_gate, &e->x, n, &e->gu, 0, 2 * FF, &L->b_up_gate));
    } else if (e->gated) {
        /* nomic-bert: gate into the first half, up into the second */
        TRY(matmul(e, &L->w_gate, &e->x, n, &e->gu, FF, 2 * FF, NULL));
        TRY(matmul(e, &L->w_up, &e->x, n, &e->gu, 0, 2 * FF, &L->b_up));
    } else {
        TRY(matmul(e, &L->w_up, &e->x, n, &e->gu, 0, FF, &L->b_up));
    }
    vkpt_cmd_barrier(c);
    if (e->gated) {
        vkpt_rows up = vkpt_rows_of(&e->gu, 0, 2 * FF), gate = vkpt_rows_of(&e->gu, FF, 2 * FF);
        vkpt_rows y = vkpt_rows_of(&e->act, 0, FF);
        TRY(vkpt_k_glu(c, hp->ffn_act, &gate, &up, &y, FF, n));
        down_in = &e->act;
    } else {
        vkpt_rows g = vkpt_rows_of(&e->gu, 0, FF);
        TRY(vkpt_k_act(c, hp->ffn_act, &g, &g, FF, n));
    }
    vkpt_cmd_barrier(c);
    TRY(matmul(e, &L->w_down, down_in, n, &e->h, 0, E, &L->b_down));
    vkpt_cmd_barrier(c);
    TRY(vkpt_k_add_f32(c, &e->x, &e->h, &e->x, n * E));
    vkpt_cmd_barrier(c);
    TRY(layernorm(e, &e->x, &L->ffn_norm, &L->ffn_norm_b, n));
    vkpt_cmd_barrier(c);
    return 0;
fail:
    return err;
}

static int record(vkpt_encoder *e, uint32_t n, uint32_t n_seqs, uint32_t n_items)
{
    const vkpt_model *m = e->m;
    const vkpt_hparams *hp = e->hp;
    vkpt_cmd *c = &e->cmd;
    uint32_t E = hp->n_embd;
    int err = 0;
    TRY(vkpt_k_get_rows(c, m->tok_embd.type, &m->tok_embd.buf, E, (uint32_t)m->tok_embd.ne[1],
                        &e->in_ids, n, &e->x));
    if (vkpt_tensor_ok(&m->pos_embd))
        TRY(vkpt_k_get_rows(c, m->pos_embd.type, &m->pos_embd.buf, E, (uint32_t)m->pos_embd.ne[1],
                            &e->in_pos, n, &e->h));
    if (vkpt_tensor_ok(&m->type_embd))
        TRY(vkpt_k_get_rows(c, m->type_embd.type, &m->type_embd.buf, E,
                            (uint32_t)m->type_embd.ne[1], &e->in_types, n, &e->h2));
    vkpt_cmd_barrier(c);
    /* x + pos + type, summed in that order as transformers does */
    if (vkpt_tensor_ok(&m->type_embd)) {
        TRY(vkpt_k_add_f32(c, &e->x, &e->h2, &e->x, n * E));
        vkpt_cmd_barrier(c);
    }
    if (vkpt_tensor_ok(&m->pos_embd)) {
        TRY(vkpt_k_add_f32(c, &e->x, &e->h, &e->x, n * E));
        vkpt_cmd_barrier(c);
    }
    TRY(layernorm(e, &e->x, &m->embd_norm, &m->embd_norm_b, n));
    vkpt_cmd_barrier(c);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        TRY(attention_block(e, &m->layers[l], n, n_items));
        TRY(ffn_block(e, &m->layers[l], n));
    }
    vkpt_rows xr = vkpt_rows_of(&e->x, 0, E), o = vkpt_rows_of(&e->out_vec, 0, E);
    TRY(vkpt_k_pool(c, &xr, E, &e->in_pool, n_seqs, &o));
    return 0;
fail:
    return err;
}

int vkpt_encoder_step(vkpt_encoder *e, const vkpt_enc_seq *seqs, uint32_t n_seqs)
{
    if (!e || (!seqs && n_seqs)) return vkpt_fail(VKPT_EINVAL, "encoder step: NULL");
    const vkpt_hparams *hp = e->hp;
    if (n_seqs > e->S)
        return vkpt_fail(VKPT_EINVAL, "encoder step: %u sequences, at most %u", n_seqs, e->S);
    uint32_t n = 0;
    for (uint32_t i = 0; i < n_seqs; i++) {
        const vkpt_enc_seq *s = &seqs[i];
        if (!s->n_tokens || !s->tokens)
            return vkpt_fail(VKPT_EINVAL, "encoder step: sequence %u is empty", i);
        if (s->n_tokens > e->o.max_seq_len)
            return vkpt_fail(VKPT_ERANGE, "encoder step: sequence %u has %u tokens, at most %u", i,
                             s->n_tokens, e->o.max_seq_len);
        uint32_t kind = s->mode & 3u;
        if (!kind || (s->mode & ~7u) || !s->dims || s->dims > hp->n_embd)
            return vkpt_fail(VKPT_EINVAL, "encoder step: sequence %u: mode %u, dims %u of %u", i,
                             s->mode, s->dims, hp->n_embd);
        for (uint32_t t = 0; t < s->n_tokens; t++)
            if (s->tokens[t] < 0 || (uint32_t)s->tokens[t] >= (uint32_t)e->m->tok_embd.ne[1])
                return vkpt_fail(VKPT_EINVAL, "token id %d is outside the vocabulary (0..%u)",
                                 s->tokens[t], (uint32_t)e->m->tok_embd.ne[1] - 1);
        n += s->n_tokens;
        if (n > e->T) return vkpt_fail(VKPT_EINVAL, "encoder step: more than %u tokens", e->T);
    }
    e->last_rows = e->last_seqs = 0;
    if (!n) return 0;
    uint32_t *ids = (uint32_t *)e->in_ids.map, *pos = (uint32_t *)e->in_pos.map;
    vkpt_pool_seq *pool = (vkpt_pool_seq *)e->in_pool.map;
    uint32_t *items = (uint32_t *)e->in_items.map, n_items = 0, row = 0;
    for (uint32_t i = 0; i < n_seqs; i++) {
        const vkpt_enc_seq *s = &seqs[i];
        for (uint32_t t = 0; t < s->n_tokens; t++) {
            ids[row + t] = (uint32_t)s->tokens[t];
            pos[row + t] = t;
        }
        pool[i] = (vkpt_pool_seq){row, s->n_tokens, s->mode, s->dims};
        vkpt_encattn_seq as = {row, s->n_tokens};
        n_items += vkpt_encattn_items(&as, 1, items + 3 * n_items, e->max_items - n_items);
        row += s->n_tokens;
    }
    /* Recorded afresh every step, unlike the decoder runner's replayed
     * classes: an embedding step packs whole inputs, so its rows, sequences
     * and attention items (push constants here) change with every request
     * mix and nothing repeats step after step the way decoding does; the
     * recording is a small share of a step that runs a whole prompt. */
    int err = vkpt_cmd_begin(&e->cmd);
    if (!err) err = record(e, n, n_seqs, n_items);
    if (!err) err = vkpt_cmd_run(&e->cmd);
    if (err) return err;
    e->last_rows = n;
    e->last_seqs = n_seqs;
    return 0;
}

const float *vkpt_encoder_vec(const vkpt_encoder *e, uint32_t i)
{
    if (i >= e->last_seqs) return NULL;
    return (const float *)e->out_vec.map + (size_t)i * e->hp->n_embd;
}

int vkpt_encoder_hidden(vkpt_encoder *e, uint32_t row, uint32_t n, float *dst)
{
    if (row > e->last_rows || n > e->last_rows - row)
        return vkpt_fail(VKPT_EINVAL, "hidden rows %u..%u of %u", row, row + n, e->last_rows);
    uint64_t E = e->hp->n_embd;
    return vkpt_buf_download(e->dev, &e->x, row * E * 4, dst, n * E * 4);
}
