/* The runner: a model's KV cache, scratch buffers and forward pass on one
 * queue, one step at a time over a batch of sequences.
 *
 * A step is one command buffer: embeddings, then per layer norm -> q/k/v
 * projections -> (q/k norm) -> RoPE -> KV write -> paged attention -> output
 * projection + residual -> norm -> gate/up -> SwiGLU -> down + residual, then
 * the output rows are gathered, normed and projected to logits, edited
 * (penalties, biases) and reduced to top candidates and log-sum-exps.
 *
 * Every buffer is allocated at creation for the largest step (max_step_tokens
 * rows, max output rows); steps only write host-visible inputs and record.
 *
 * Replay: a step is padded to its class (rn_class: rows and output rows in
 * buckets, the attention plan made indirect so its counts live in the meta
 * buffer and its grids are powers of two). Padding rows are token 0 at
 * position 0 with their K/V write skipped (slot 0xffffffff) and no
 * attention sequence; padding output rows repeat row 0 without edits. Every
 * kernel is row-wise or works per sequence, so padding never changes a real
 * row. The command buffer recorded for a class is resubmitted for every
 * later step of it (RN_REPLAY_SLOTS of them, least recently used replaced);
 * MoE layers replay too, since their routing, lists and tiles are computed
 * on the GPU from the step's rows.
 * Invariants: a sequence's block list covers its cached tokens; only its
 * last block may be partly filled and that block is never shared (fork copies
 * it), so appends never write a block another sequence reads. */
#define _GNU_SOURCE
#include "vkpt/runner.h"

#include "k_act.h"
#include "k_attn.h"
#include "k_logits.h"
#include "k_matmul.h"
#include "k_norm.h"
#include "k_rope.h"
#include "kernels.h"
#include "kvpool.h"
#include "model_int.h"
#include "runner_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert(sizeof(vkpt_logit_edit) == sizeof(vkpt_logit_adj), "edit layout matches the GPU's");

int vkpt__rn_alloc(vkpt_runner *r, vkpt_buf *b, uint64_t bytes, int kind, int purpose)
{
    return vkpt_buf_alloc(r->dev, bytes ? bytes : 16, kind, purpose, b);
}

void vkpt_runner_destroy(vkpt_runner *r)
{
    if (!r) return;
    for (int i = 0; i < RN_REPLAY_SLOTS; i++) vkpt_cmd_free(&r->replay[i].cmd);
    vkpt_cmd_free(&r->aux_cmd);
    vkpt__moe_free(r);
    vkpt_buf *bufs[] = {&r->qkv,
                        &r->x,
                        &r->h,
                        &r->h2,
                        &r->q,
                        &r->k,
                        &r->v,
                        &r->ao,
                        &r->gu,
                        &r->act,
                        &r->xo,
                        &r->logits,
                        &r->attn_scratch,
                        &r->in_ids,
                        &r->in_pos,
                        &r->in_slots,
                        &r->in_meta,
                        &r->in_bt,
                        &r->in_rows,
                        &r->in_temps,
                        &r->in_ones,
                        &r->in_adj_off,
                        &r->in_adj,
                        &r->out_topv,
                        &r->out_topi,
                        &r->out_lse,
                        &r->out_lset,
                        &r->inv_freq};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) vkpt_buf_free(r->dev, bufs[i]);
    if (r->kc)
        for (uint32_t l = 0; l < r->hp->n_layer; l++) {
            vkpt_buf_free(r->dev, &r->kc[l]);
            vkpt_buf_free(r->dev, &r->vc[l]);
        }
    vkpt_free(r->kc);
    vkpt_free(r->vc);
    vkpt_free(r->seqs);
    vkpt_free(r->seq_blocks);
    vkpt_prefix_free(&r->pc);
    vkpt_kvpool_free(&r->pool);
    vkpt_free(r);
}

const vkpt_model *vkpt_runner_model(const vkpt_runner *r)
{
    return r->m;
}

static int setup_rope(vkpt_runner *r)
{
    const vkpt_hparams *hp = r->hp;
    vkpt_rope_cfg c = {.scaling = hp->rope_scaling,
                       .rot_dim = hp->rot_dim,
                       .theta = hp->rope_theta,
                       .factor = hp->rope_factor,
                       .low_freq_factor = hp->rope_low_freq,
                       .high_freq_factor = hp->rope_high_freq,
                       .orig_ctx = hp->rope_orig_ctx ? hp->rope_orig_ctx : hp->n_ctx_train,
                       .beta_fast = hp->yarn_beta_fast,
                       .beta_slow = hp->yarn_beta_slow,
                       .attn_factor = hp->yarn_attn_factor};
    uint32_t n = hp->rot_dim / 2;
    float *f = vkpt_malloc(n * sizeof(float));
    if (!f) return vkpt_fail(VKPT_ENOMEM, "rope table");
    int err = vkpt_rope_freqs(&c, f, &r->mscale);
    /* GGUF llama3 files carry their scaling as per-frequency divisors */
    if (!err && r->m->rope_freq_factors)
        for (uint32_t i = 0; i < n; i++) f[i] /= r->m->rope_freq_factors[i];
    if (!err)
        err = vkpt__rn_alloc(r, &r->inv_freq, n * sizeof(float), VKPT_MK_DEVICE, VKPT_MEM_OTHER);
    if (!err) err = vkpt_buf_upload(r->dev, &r->inv_freq, 0, f, n * sizeof(float));
    vkpt_free(f);
    r->rope_layout =
        (r->m->arch->flags & VKPT_AF_ROPE_NEOX) ? VKPT_ROPE_NEOX : VKPT_ROPE_INTERLEAVED;
    return err;
}

int vkpt_runner_create(vkpt_model *m, const vkpt_runner_opts *opts, vkpt_runner **out)
{
    if (!m || !out) return vkpt_fail(VKPT_EINVAL, "vkpt_runner_create: NULL");
    *out = NULL;
    if (m->arch->flags & VKPT_AF_ENCODER)
        return vkpt_fail(VKPT_EUNSUPPORTED,
                         "%s: the %s architecture's forward pass is not implemented yet",
                         m->info.name, m->arch->gguf_name);
    vkpt_runner *r = vkpt_calloc(1, sizeof *r);
    if (!r) return vkpt_fail(VKPT_ENOMEM, "runner");
    r->m = m;
    r->dev = m->dev;
    r->hp = &m->hp;
    if (opts) r->o = *opts;
    const vkpt_hparams *hp = r->hp;
    if (!r->o.n_ctx)
        r->o.n_ctx = hp->n_ctx_train && hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (!r->o.max_seqs) r->o.max_seqs = 1;
    if (!r->o.max_step_tokens) r->o.max_step_tokens = 512;
    if (r->o.max_step_tokens < r->o.max_seqs) r->o.max_step_tokens = r->o.max_seqs;
    if (!r->o.kv_tokens) r->o.kv_tokens = r->o.n_ctx * r->o.max_seqs;
    r->T = r->o.max_step_tokens;
    r->R = r->o.all_logits ? r->T : r->o.max_seqs;
    r->max_blocks_seq = (r->o.n_ctx + VKPT_KV_BLOCK - 1) / VKPT_KV_BLOCK;
    r->adj_cap = r->R * (r->o.max_edits_per_row ? r->o.max_edits_per_row : 2048);
    int err = vkpt_cmd_init(r->dev, r->o.queue, &r->aux_cmd);
    for (int i = 0; i < RN_REPLAY_SLOTS && !err; i++)
        err = vkpt_cmd_init(r->dev, r->o.queue, &r->replay[i].cmd);
    if (err) goto fail;
    r->cmd = &r->replay[0].cmd;
    const char *nr = getenv("VKPT_NO_REPLAY");
    r->no_replay = r->o.no_replay || (nr && *nr && strcmp(nr, "0") != 0);

    uint32_t n_blocks = (r->o.kv_tokens + VKPT_KV_BLOCK - 1) / VKPT_KV_BLOCK + r->o.max_seqs;
    uint64_t block_bytes = (uint64_t)hp->n_head_kv * VKPT_KV_BLOCK * hp->head_dim * 2;
    if (n_blocks * block_bytes > r->dev->caps.max_storage_buffer_range) {
        uint32_t cap = (uint32_t)(r->dev->caps.max_storage_buffer_range / block_bytes);
        VKPT_LOGW("KV cache limited to %u tokens per layer by the device's largest buffer binding",
                  cap * VKPT_KV_BLOCK);
        n_blocks = cap;
    }
    if ((err = vkpt_kvpool_init(&r->pool, n_blocks))) goto fail;
    if ((err = vkpt_prefix_init(&r->pc, &r->pool))) goto fail;
    r->kc = vkpt_calloc(hp->n_layer, sizeof *r->kc);
    r->vc = vkpt_calloc(hp->n_layer, sizeof *r->vc);
    r->seqs = vkpt_calloc(r->o.max_seqs, sizeof *r->seqs);
    r->seq_blocks = vkpt_calloc((size_t)r->o.max_seqs * r->max_blocks_seq, sizeof *r->seq_blocks);
    if (!r->kc || !r->vc || !r->seqs || !r->seq_blocks) {
        err = vkpt_fail(VKPT_ENOMEM, "runner tables");
        goto fail;
    }
    for (uint32_t s = 0; s < r->o.max_seqs; s++)
        r->seqs[s].blocks = r->seq_blocks + (size_t)s * r->max_blocks_seq;
    for (uint32_t l = 0; l < hp->n_layer && !err; l++) {
        err = vkpt__rn_alloc(r, &r->kc[l], n_blocks * block_bytes, VKPT_MK_DEVICE, VKPT_MEM_KV);
        if (!err)
            err = vkpt__rn_alloc(r, &r->vc[l], n_blocks * block_bytes, VKPT_MK_DEVICE, VKPT_MEM_KV);
    }
    if (err) {
        err = vkpt_fail(err, "KV cache of %u tokens (%.1f MiB): %s", n_blocks * VKPT_KV_BLOCK,
                        2.0 * hp->n_layer * n_blocks * block_bytes / 1048576.0, vkpt_errmsg(err));
        goto fail;
    }

    uint64_t T = r->T, R = r->R, E = hp->n_embd, V = hp->n_vocab;
    uint64_t Dq = (uint64_t)hp->n_head * hp->head_dim, Dkv = (uint64_t)hp->n_head_kv * hp->head_dim;
    uint64_t FF = hp->n_ff;
    r->ap = (vkpt_attn_params){.n_head = hp->n_head,
                               .n_kv_head = hp->n_head_kv,
                               .head_dim = hp->head_dim,
                               .window = hp->sliding_window,
                               /* a fixed split length: decode reductions then
                                * do not depend on the batch */
                               .split_len = r->o.batch_invariant ? 64 : 0};
    r->meta_cap = vkpt_attn_meta_words_max(r->o.max_seqs, r->T);
    const int D = VKPT_MK_DEVICE, U = VKPT_MK_UPLOAD, H = VKPT_MK_HOST, S = VKPT_MEM_SCRATCH;
    struct {
        vkpt_buf *b;
        uint64_t bytes;
        int kind;
    } plan[] = {
        {&r->x, T * E * 4, D},
        {&r->h, T * (E > Dq ? E : Dq) * 4, D},
        {&r->h2, T * E * 4, D},
        {&r->q, T * Dq * 4, D},
        {&r->k, T * Dkv * 4, D},
        {&r->v, T * Dkv * 4, D},
        {&r->ao, T * Dq * 4, D},
        {&r->qkv, vkpt_tensor_ok(&m->layers[0].wqkv) ? T * (Dq + 2 * Dkv) * 4 : 0, D},
        {&r->gu, T * 2 * FF * 4, D},
        {&r->act, T * FF * 4, D},
        {&r->xo, R * E * 4, D},
        {&r->logits, R * V * 4, D},
        {&r->attn_scratch, vkpt_attn_scratch_bytes_max(&r->ap, r->o.max_seqs), D},
        {&r->in_ids, T * 4, U},
        {&r->in_pos, T * 4, U},
        {&r->in_slots, T * 4, U},
        {&r->in_meta, (r->meta_cap + VKPT_ATTN_HDR_WORDS) * 4, U},
        {&r->in_bt, (uint64_t)r->o.max_seqs * r->max_blocks_seq * 4, U},
        {&r->in_rows, R * 4, U},
        {&r->in_temps, R * 4, U},
        {&r->in_ones, R * 4, U},
        {&r->in_adj_off, (R + 1) * 4, U},
        {&r->in_adj, (uint64_t)r->adj_cap * sizeof(vkpt_logit_adj), U},
        {&r->out_topv, R * VKPT_MAX_CAND * 4, H},
        {&r->out_topi, R * VKPT_MAX_CAND * 4, H},
        {&r->out_lse, R * 2 * 4, H},
        {&r->out_lset, R * 2 * 4, H},
    };
    for (size_t i = 0; i < sizeof plan / sizeof plan[0] && !err; i++)
        err = vkpt__rn_alloc(r, plan[i].b, plan[i].bytes, plan[i].kind, S);
    if (err) goto fail;
    if (!r->in_ids.map || !r->in_meta.map || !r->out_topv.map) {
        err = vkpt_fail(VKPT_EUNSUPPORTED, "%s: host-visible memory is not mappable",
                        r->dev->caps.name);
        goto fail;
    }
    for (uint32_t i = 0; i < R; i++) ((float *)r->in_ones.map)[i] = 1.0f;
    /* the padding rows of a step read attention outputs no sequence wrote:
     * start them at zeros, not whatever the memory held */
    if ((err = vkpt_cmd_begin(&r->aux_cmd))) goto fail;
    vkpt_cmd_fill(&r->aux_cmd, &r->ao, 0);
    if ((err = vkpt_cmd_run(&r->aux_cmd))) goto fail;
    if ((err = setup_rope(r))) goto fail;
    if ((err = vkpt__moe_init(r))) goto fail;
    *out = r;
    return 0;
fail:
    vkpt_runner_destroy(r);
    return err;
}

/* ---- sequences -------------------------------------------------------------------- */

int vkpt_runner_seq_open(vkpt_runner *r)
{
    for (uint32_t s = 0; s < r->o.max_seqs; s++)
        if (!r->seqs[s].open) {
            r->seqs[s].open = true;
            r->seqs[s].len = 0;
            r->seqs[s].n_blocks = 0;
            r->seqs[s].n_registered = 0;
            return (int)s;
        }
    return vkpt_fail(VKPT_EFULL, "all %u sequences are in use", r->o.max_seqs);
}

static seq_state *seq_get(vkpt_runner *r, int seq)
{
    if (seq < 0 || (uint32_t)seq >= r->o.max_seqs || !r->seqs[seq].open) return NULL;
    return &r->seqs[seq];
}

static void seq_release_blocks(vkpt_runner *r, seq_state *s, uint32_t keep)
{
    while (s->n_blocks > keep) vkpt_prefix_unref(&r->pc, s->blocks[--s->n_blocks]);
}

void vkpt_runner_seq_close(vkpt_runner *r, int seq)
{
    seq_state *s = seq_get(r, seq);
    if (!s) return;
    seq_release_blocks(r, s, 0);
    s->open = false;
    s->len = 0;
}

uint32_t vkpt_runner_seq_len(const vkpt_runner *r, int seq)
{
    return seq_get((vkpt_runner *)r, seq) ? r->seqs[seq].len : 0;
}

int vkpt_runner_seq_truncate(vkpt_runner *r, int seq, uint32_t len)
{
    seq_state *s = seq_get(r, seq);
    if (!s || len > s->len) return vkpt_fail(VKPT_EINVAL, "truncate: bad sequence or length");
    uint32_t keep = (len + VKPT_KV_BLOCK - 1) / VKPT_KV_BLOCK;
    if (len % VKPT_KV_BLOCK && keep && r->pool.ref[s->blocks[keep - 1]] > 1)
        return vkpt_fail(VKPT_EINVAL, "truncate into a shared block");
    seq_release_blocks(r, s, keep);
    s->len = len;
    if (s->n_registered > len / VKPT_KV_BLOCK) s->n_registered = len / VKPT_KV_BLOCK;
    return 0;
}

int vkpt_runner_seq_fork(vkpt_runner *r, int src_id, int dst_id)
{
    seq_state *src = seq_get(r, src_id), *dst = seq_get(r, dst_id);
    if (!src || !dst || src == dst || dst->len)
        return vkpt_fail(VKPT_EINVAL, "fork: bad sequences");
    uint32_t full = src->len / VKPT_KV_BLOCK;
    for (uint32_t b = 0; b < full; b++) {
        vkpt_prefix_ref(&r->pc, src->blocks[b]);
        dst->blocks[b] = src->blocks[b];
    }
    dst->n_blocks = full;
    dst->len = full * VKPT_KV_BLOCK;
    dst->n_registered = src->n_registered < full ? src->n_registered : full;
    if (src->len % VKPT_KV_BLOCK) {
        int32_t nb = vkpt_prefix_alloc(&r->pc);
        if (nb < 0) {
            seq_release_blocks(r, dst, 0);
            dst->len = 0;
            return vkpt_fail(VKPT_EFULL, "KV cache full");
        }
        dst->blocks[dst->n_blocks++] = (uint32_t)nb;
        uint64_t bb = r->kc[0].size / r->pool.n_blocks;
        int err = vkpt_cmd_begin(&r->aux_cmd);
        for (uint32_t l = 0; l < r->hp->n_layer && !err; l++) {
            vkpt_cmd_copy(&r->aux_cmd, &r->kc[l], src->blocks[full] * bb, &r->kc[l],
                          (uint64_t)nb * bb, bb);
            vkpt_cmd_copy(&r->aux_cmd, &r->vc[l], src->blocks[full] * bb, &r->vc[l],
                          (uint64_t)nb * bb, bb);
        }
        if (!err) err = vkpt_cmd_run(&r->aux_cmd);
        if (err) {
            seq_release_blocks(r, dst, 0);
            dst->len = 0;
            return err;
        }
        dst->len = src->len;
    }
    return 0;
}

void vkpt_runner_get_stats(const vkpt_runner *r, vkpt_runner_stats *st)
{
    memset(st, 0, sizeof *st);
    st->kv_blocks_total = r->pool.n_blocks;
    st->kv_blocks_used = r->pool.n_blocks - vkpt_prefix_available(&r->pc);
    st->kv_blocks_cached = r->pc.n;
    st->prefix_hits = r->pc.hits;
    st->prefix_lookups = r->pc.lookups;
    for (uint32_t s = 0; s < r->o.max_seqs; s++) st->seqs_open += r->seqs[s].open;
    st->max_seqs = r->o.max_seqs;
    st->n_ctx = r->o.n_ctx;
    st->max_step_tokens = r->T;
    st->steps = r->n_steps;
    st->replay_hits = r->replay_hits;
    st->replay_misses = r->replay_misses;
    st->host_prep_ns = r->host_prep_ns;
    st->host_submit_ns = r->host_submit_ns;
}

/* Token i of the concatenation a[0..na) b[0..nb). */
static int32_t tok_at(const int32_t *a, uint32_t na, const int32_t *b, uint32_t i)
{
    return i < na ? a[i] : b[i - na];
}

uint32_t vkpt_runner_prefix_attach(vkpt_runner *r, int seq, const int32_t *tokens, uint32_t n)
{
    seq_state *s = seq_get(r, seq);
    if (!s || s->len || !tokens) return 0;
    uint64_t chain = 0;
    uint32_t b = 0;
    for (; (b + 1) * VKPT_KV_BLOCK <= n && b < r->max_blocks_seq; b++) {
        int32_t blk = vkpt_prefix_find(&r->pc, chain, tokens + b * VKPT_KV_BLOCK);
        if (blk < 0) break;
        vkpt_prefix_ref(&r->pc, (uint32_t)blk);
        s->blocks[s->n_blocks++] = (uint32_t)blk;
        chain = vkpt_prefix_hash(chain, tokens + b * VKPT_KV_BLOCK);
    }
    s->len = b * VKPT_KV_BLOCK;
    s->n_registered = b;
    return s->len;
}

void vkpt_runner_prefix_register(vkpt_runner *r, int seq, const int32_t *a, uint32_t na,
                                 const int32_t *b, uint32_t nb)
{
    seq_state *s = seq_get(r, seq);
    if (!s) return;
    uint32_t full = s->len / VKPT_KV_BLOCK;
    if (full > (na + nb) / VKPT_KV_BLOCK) full = (na + nb) / VKPT_KV_BLOCK;
    if (s->n_registered >= full) return;
    uint64_t chain = 0;
    int32_t t[VKPT_KV_BLOCK];
    for (uint32_t k = 0; k < full; k++) {
        for (uint32_t i = 0; i < VKPT_KV_BLOCK; i++) t[i] = tok_at(a, na, b, k * VKPT_KV_BLOCK + i);
        if (k >= s->n_registered) vkpt_prefix_insert(&r->pc, chain, t, s->blocks[k]);
        chain = vkpt_prefix_hash(chain, t);
    }
    s->n_registered = full;
}

static uint32_t blocks_needed(const seq_state *s, uint32_t n)
{
    uint32_t want = (s->len + n + VKPT_KV_BLOCK - 1) / VKPT_KV_BLOCK;
    return want > s->n_blocks ? want - s->n_blocks : 0;
}

uint32_t vkpt_runner_blocks_needed(const vkpt_runner *r, int seq, uint32_t n)
{
    const seq_state *s = seq_get((vkpt_runner *)r, seq);
    return s ? blocks_needed(s, n) : 0;
}

uint32_t vkpt_runner_seq_exclusive_blocks(const vkpt_runner *r, int seq)
{
    const seq_state *s = seq_get((vkpt_runner *)r, seq);
    uint32_t n = 0;
    for (uint32_t b = 0; s && b < s->n_blocks; b++) n += r->pool.ref[s->blocks[b]] == 1;
    return n;
}

bool vkpt_runner_can_append(const vkpt_runner *r, int seq, uint32_t n)
{
    const seq_state *s = seq_get((vkpt_runner *)r, seq);
    return s && s->len + n <= r->o.n_ctx && blocks_needed(s, n) <= vkpt_prefix_available(&r->pc);
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

int vkpt__rn_matmul(vkpt_runner *r, const vkpt_tensor *w, const vkpt_buf *x, uint32_t n_tok,
                    const vkpt_buf *y, uint32_t y_stride, const vkpt_tensor *bias)
{
    vkpt_mm_args a = {.wtype = w->type,
                      .w = w->buf,
                      .K = (uint32_t)w->ne[0],
                      .M = (uint32_t)w->ne[1],
                      .n_tok = n_tok,
                      .x = *x,
                      .xq = nullbuf(),
                      .y = *y,
                      .y_stride = y_stride,
                      .bias = bias && vkpt_tensor_ok(bias) ? bias->buf : nullbuf(),
                      /* one kernel for every batch size: a row's result then
                       * does not depend on what else is in the step */
                      .path = r->o.batch_invariant ? VKPT_MM_MATMUL : VKPT_MM_AUTO};
    return vkpt_k_matmul(r->cmd, &a);
}

int vkpt__rn_add(vkpt_runner *r, const vkpt_buf *a, const vkpt_buf *b, uint32_t n)
{
    return vkpt_k_add_f32(r->cmd, a, b, a, n);
}

int vkpt__rn_norm(vkpt_runner *r, const vkpt_rows *x, const vkpt_rows *y, const vkpt_tensor *w,
                  const vkpt_tensor *b, uint32_t n_rows)
{
    const vkpt_hparams *hp = r->hp;
    if (r->m->arch->flags & VKPT_AF_LAYERNORM)
        return vkpt_k_layernorm(r->cmd, x, y, vkpt_tensor_ok(w) ? &w->buf : NULL,
                                b && vkpt_tensor_ok(b) ? &b->buf : NULL, hp->n_embd, n_rows,
                                hp->norm_eps);
    return vkpt_k_rmsnorm(r->cmd, x, y, &w->buf, hp->n_embd, 1, n_rows, hp->norm_eps);
}

/* norm -> q/k/v (fused or not, optional clip and per-head norms) -> RoPE ->
 * KV write -> paged attention -> output projection -> residual */
static int attention_block(vkpt_runner *r, uint32_t l, uint32_t n, const vkpt_attn_plan *plan)
{
    const vkpt_hparams *hp = r->hp;
    const vkpt_layer *L = &r->m->layers[l];
    vkpt_cmd *c = r->cmd;
    uint32_t E = hp->n_embd, Dq = hp->n_head * hp->head_dim, Dkv = hp->n_head_kv * hp->head_dim;
    int err = 0;
    vkpt_rows xr = vkpt_rows_of(&r->x, 0, E), hr = vkpt_rows_of(&r->h, 0, E);
    vkpt_rows qr, kr, vr;
    TRY(vkpt__rn_norm(r, &xr, &hr, &L->attn_norm, &L->attn_norm_b, n));
    vkpt_cmd_barrier(c);
    if (vkpt_tensor_ok(&L->wqkv)) {
        uint32_t W = Dq + 2 * Dkv;
        TRY(vkpt__rn_matmul(r, &L->wqkv, &r->h, n, &r->qkv, W, &L->bqkv));
        qr = vkpt_rows_of(&r->qkv, 0, W);
        kr = vkpt_rows_of(&r->qkv, Dq, W);
        vr = vkpt_rows_of(&r->qkv, Dq + Dkv, W);
        if (hp->clip_qkv > 0) {
            vkpt_cmd_barrier(c);
            vkpt_rows all = vkpt_rows_of(&r->qkv, 0, W);
            TRY(vkpt_k_clamp(c, &all, &all, W, n, -hp->clip_qkv, hp->clip_qkv));
        }
    } else {
        TRY(vkpt__rn_matmul(r, &L->wq, &r->h, n, &r->q, Dq, &L->bq));
        TRY(vkpt__rn_matmul(r, &L->wk, &r->h, n, &r->k, Dkv, &L->bk));
        TRY(vkpt__rn_matmul(r, &L->wv, &r->h, n, &r->v, Dkv, &L->bv));
        qr = vkpt_rows_of(&r->q, 0, Dq);
        kr = vkpt_rows_of(&r->k, 0, Dkv);
        vr = vkpt_rows_of(&r->v, 0, Dkv);
    }
    vkpt_cmd_barrier(c);
    if (vkpt_tensor_ok(&L->q_norm)) {
        TRY(vkpt_k_rmsnorm(c, &qr, &qr, &L->q_norm.buf, hp->head_dim, hp->n_head, n, hp->norm_eps));
        TRY(vkpt_k_rmsnorm(c, &kr, &kr, &L->k_norm.buf, hp->head_dim, hp->n_head_kv, n,
                           hp->norm_eps));
        vkpt_cmd_barrier(c);
    }
    TRY(vkpt_k_rope(c, &qr, &r->in_pos, &r->inv_freq, n, hp->n_head, hp->head_dim, hp->rot_dim,
                    r->rope_layout, r->mscale));
    TRY(vkpt_k_rope(c, &kr, &r->in_pos, &r->inv_freq, n, hp->n_head_kv, hp->head_dim, hp->rot_dim,
                    r->rope_layout, r->mscale));
    vkpt_cmd_barrier(c);
    TRY(vkpt_k_kv_write(c, &kr, &vr, &r->in_slots, n, hp->n_head_kv, hp->head_dim, &r->kc[l],
                        &r->vc[l]));
    vkpt_cmd_barrier(c);
    vkpt_attn_bufs ab = {.meta = r->in_meta,
                         .block_table = r->in_bt,
                         .q = qr,
                         .k_cache = r->kc[l],
                         .v_cache = r->vc[l],
                         .out = r->ao,
                         .scratch = r->attn_scratch};
    TRY(vkpt_k_attn(c, plan, &ab));
    vkpt_cmd_barrier(c);
    TRY(vkpt__rn_matmul(r, &L->wo, &r->ao, n, &r->h2, E, &L->bo));
    vkpt_cmd_barrier(c);
    TRY(vkpt__rn_add(r, &r->x, &r->h2, n * E));
    vkpt_cmd_barrier(c);
    return 0;
fail:
    return err;
}

/* norm -> gate/up -> SwiGLU -> down -> residual */
static int dense_ffn_block(vkpt_runner *r, uint32_t l, uint32_t n)
{
    const vkpt_hparams *hp = r->hp;
    const vkpt_layer *L = &r->m->layers[l];
    vkpt_cmd *c = r->cmd;
    uint32_t E = hp->n_embd, FF = hp->n_ff;
    int err = 0;
    vkpt_rows xr = vkpt_rows_of(&r->x, 0, E), hr = vkpt_rows_of(&r->h, 0, E);
    vkpt_rows gate, up, actr = vkpt_rows_of(&r->act, 0, FF);
    vkpt_glu_split(&r->gu, FF, &gate, &up);
    vkpt_buf up_view = vkpt_buf_view(&r->gu, (uint64_t)FF * 4, r->gu.size - (uint64_t)FF * 4);
    TRY(vkpt__rn_norm(r, &xr, &hr, &L->ffn_norm, &L->ffn_norm_b, n));
    vkpt_cmd_barrier(c);
    TRY(vkpt__rn_matmul(r, &L->w_gate, &r->h, n, &r->gu, 2 * FF, NULL));
    TRY(vkpt__rn_matmul(r, &L->w_up, &r->h, n, &up_view, 2 * FF, NULL));
    vkpt_cmd_barrier(c);
    TRY(vkpt_k_glu(c, VKPT_ACT_SILU, &gate, &up, &actr, FF, n));
    vkpt_cmd_barrier(c);
    TRY(vkpt__rn_matmul(r, &L->w_down, &r->act, n, &r->h2, E, NULL));
    vkpt_cmd_barrier(c);
    TRY(vkpt__rn_add(r, &r->x, &r->h2, n * E));
    vkpt_cmd_barrier(c);
    return 0;
fail:
    return err;
}

/* Rows of a step's class: exact up to 8 (decoding up to 8 sequences, the hot
 * case, where a padding row costs the most relative to the step: on lavapipe
 * a sixth row is a sixth more matvec work), then 12, 16, 24, 32, 48, 64 (at
 * most a third of the rows are padding), then multiples of 32; never past
 * cap (>= n). */
static uint32_t rn_bucket(uint32_t n, uint32_t cap)
{
    uint32_t b = n;
    if (n > 64) {
        b = (n + 31) / 32 * 32;
    } else if (n > 8) {
        b = 8;
        while (b < n) b = (b & (b - 1)) ? b / 3 * 4 : b / 2 * 3;
    }
    return b < cap ? b : cap;
}

static bool class_eq(const rn_class *a, const rn_class *b)
{
    return a->n == b->n && a->n_out == b->n_out && a->pf_items == b->pf_items &&
           a->dec_items == b->dec_items && a->dec_seqs == b->dec_seqs && a->edits == b->edits;
}

/* This thread's CPU time: what recording and submitting cost the host. */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Record a step of class (n, n_out): every dispatch reads its per-step
 * values from the inputs (attention counts from the plan's header), so the
 * recording replays for any step of the class. n_adj bounds the edits. */
static int record(vkpt_runner *r, uint32_t n, uint32_t n_out, const vkpt_attn_plan *plan,
                  uint32_t n_adj)
{
    const vkpt_hparams *hp = r->hp;
    const vkpt_model *m = r->m;
    vkpt_cmd *c = r->cmd;
    uint32_t E = hp->n_embd, V = hp->n_vocab;
    int err = 0;
    TRY(vkpt_k_get_rows(c, m->tok_embd.type, &m->tok_embd.buf, E, (uint32_t)m->tok_embd.ne[1],
                        &r->in_ids, n, &r->x));
    vkpt_cmd_barrier(c);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        TRY(attention_block(r, l, n, plan));
        if (vkpt_tensor_ok(&m->layers[l].gate_inp))
            TRY(vkpt__moe_ffn(r, l, n));
        else
            TRY(dense_ffn_block(r, l, n));
    }
    if (!n_out) return 0;
    /* the output rows: gather, norm, project */
    TRY(vkpt_k_get_rows(c, VKPT_Q_F32, &r->x, E, n, &r->in_rows, n_out, &r->xo));
    vkpt_cmd_barrier(c);
    vkpt_rows xor_ = vkpt_rows_of(&r->xo, 0, E);
    TRY(vkpt__rn_norm(r, &xor_, &xor_, &m->out_norm, &m->out_norm_b, n_out));
    vkpt_cmd_barrier(c);
    TRY(vkpt__rn_matmul(r, &m->output, &r->xo, n_out, &r->logits, V, NULL));
    vkpt_cmd_barrier(c);
    vkpt_rows lr = vkpt_rows_of(&r->logits, 0, V);
    if (n_adj) {
        TRY(vkpt_k_logits_adjust(c, &lr, V, n_out, &r->in_adj_off, &r->in_adj, n_adj));
        vkpt_cmd_barrier(c);
    }
    uint32_t k = V < VKPT_MAX_CAND ? V : VKPT_MAX_CAND;
    TRY(vkpt_k_topk(c, &lr, V, n_out, k, &r->out_topv, &r->out_topi));
    TRY(vkpt_k_logsumexp(c, &lr, V, n_out, &r->in_ones, &r->out_lse));
    TRY(vkpt_k_logsumexp(c, &lr, V, n_out, &r->in_temps, &r->out_lset));
    return 0;
fail:
    return err;
}

int vkpt_runner_step(vkpt_runner *r, const vkpt_step_seq *in, uint32_t n_seqs, vkpt_step_out *out,
                     uint32_t out_cap, uint32_t *n_out_p)
{
    if (!r || (!in && n_seqs) || !n_out_p) return vkpt_fail(VKPT_EINVAL, "vkpt_runner_step: NULL");
    *n_out_p = 0;
    const vkpt_hparams *hp = r->hp;
    if (n_seqs > r->o.max_seqs)
        return vkpt_fail(VKPT_EINVAL, "step: %u sequences, at most %u", n_seqs, r->o.max_seqs);
    /* validate everything before touching any state */
    uint32_t n = 0, n_out = 0, n_adj = 0, new_blocks = 0;
    for (uint32_t i = 0; i < n_seqs; i++) {
        const vkpt_step_seq *e = &in[i];
        seq_state *s = seq_get(r, e->seq);
        if (!s) return vkpt_fail(VKPT_EINVAL, "step: sequence %d is not open", e->seq);
        for (uint32_t j = 0; j < i; j++)
            if (in[j].seq == e->seq)
                return vkpt_fail(VKPT_EINVAL, "step: sequence %d appears twice", e->seq);
        if (!e->n_tokens || !e->tokens)
            return vkpt_fail(VKPT_EINVAL, "step: sequence %d has no tokens", e->seq);
        if (s->len + e->n_tokens > r->o.n_ctx)
            return vkpt_fail(VKPT_ERANGE, "sequence %d would reach %u tokens; the context is %u",
                             e->seq, s->len + e->n_tokens, r->o.n_ctx);
        if (e->want_all_logits && !r->o.all_logits)
            return vkpt_fail(
                VKPT_EINVAL,
                "step: all logits requested but the runner was created without all_logits");
        for (uint32_t t = 0; t < e->n_tokens; t++)
            if (e->tokens[t] < 0 || (uint32_t)e->tokens[t] >= hp->n_vocab)
                return vkpt_fail(VKPT_EINVAL, "token id %d is outside the vocabulary (0..%u)",
                                 e->tokens[t], hp->n_vocab - 1);
        n += e->n_tokens;
        uint32_t rows = e->want_all_logits ? e->n_tokens : e->want_logits ? 1 : 0;
        n_out += rows;
        n_adj += rows * e->n_edits;
        new_blocks += blocks_needed(s, e->n_tokens);
    }
    if (n > r->T) return vkpt_fail(VKPT_EINVAL, "step: %u tokens, at most %u", n, r->T);
    if (n_out > r->R || n_out > out_cap)
        return vkpt_fail(VKPT_EINVAL, "step: %u output rows, room for %u", n_out,
                         r->R < out_cap ? r->R : out_cap);
    if (n_adj > r->adj_cap)
        return vkpt_fail(VKPT_EINVAL, "step: %u logit edits, at most %u", n_adj, r->adj_cap);
    if (new_blocks > vkpt_prefix_available(&r->pc))
        return vkpt_fail(VKPT_EFULL, "KV cache full: the step needs %u blocks, %u are free",
                         new_blocks, vkpt_prefix_available(&r->pc));
    if (!n) return 0;

    /* inputs */
    uint64_t t_start = cpu_ns();
    uint32_t *ids = (uint32_t *)r->in_ids.map, *pos = (uint32_t *)r->in_pos.map,
             *slots = (uint32_t *)r->in_slots.map;
    uint32_t *bt = (uint32_t *)r->in_bt.map, *rows = (uint32_t *)r->in_rows.map;
    float *temps = (float *)r->in_temps.map;
    uint32_t *adj_off = (uint32_t *)r->in_adj_off.map;
    vkpt_logit_adj *adj = (vkpt_logit_adj *)r->in_adj.map;
    vkpt_attn_seq aseq[r->o.max_seqs > 0 ? r->o.max_seqs : 1];
    uint32_t row = 0, orow = 0, a = 0;
    for (uint32_t i = 0; i < n_seqs; i++) {
        const vkpt_step_seq *e = &in[i];
        seq_state *s = &r->seqs[e->seq];
        while (s->n_blocks * VKPT_KV_BLOCK < s->len + e->n_tokens) {
            int32_t b = vkpt_prefix_alloc(&r->pc);
            s->blocks[s->n_blocks++] = (uint32_t)b; /* counted above: cannot fail */
        }
        aseq[i] = (vkpt_attn_seq){.q_start = row,
                                  .q_len = e->n_tokens,
                                  .kv_len = s->len + e->n_tokens,
                                  .bt_start = i * r->max_blocks_seq};
        memcpy(bt + (size_t)i * r->max_blocks_seq, s->blocks, s->n_blocks * sizeof(uint32_t));
        for (uint32_t t = 0; t < e->n_tokens; t++, row++) {
            uint32_t p = s->len + t;
            ids[row] = (uint32_t)e->tokens[t];
            pos[row] = p;
            slots[row] = s->blocks[p / VKPT_KV_BLOCK] * VKPT_KV_BLOCK + p % VKPT_KV_BLOCK;
            bool outp = e->want_all_logits || (e->want_logits && t == e->n_tokens - 1);
            if (!outp) continue;
            rows[orow] = row;
            temps[orow] = e->temperature > 0 ? e->temperature : 1.0f;
            adj_off[orow] = a;
            if (e->n_edits) memcpy(adj + a, e->edits, e->n_edits * sizeof *adj);
            a += e->n_edits;
            orow++;
        }
    }
    adj_off[orow] = a;
    /* pad to the class: inert rows (token 0 at position 0, its K/V write
     * skipped by the 0xffffffff slot, in no attention sequence) and output
     * rows that repeat row 0 without edits; nothing reads their results */
    rn_class key = {
        .n = rn_bucket(n, r->T), .n_out = n_out ? rn_bucket(n_out, r->R) : 0, .edits = a > 0};
    for (uint32_t i = n; i < key.n; i++) {
        ids[i] = 0;
        pos[i] = 0;
        slots[i] = UINT32_MAX;
    }
    for (uint32_t o = n_out; o < key.n_out; o++) {
        rows[o] = 0;
        temps[o] = 1.0f;
        adj_off[o + 1] = a;
    }
    vkpt_attn_plan plan;
    uint32_t *meta = (uint32_t *)r->in_meta.map;
    int err = vkpt_attn_plan_make(r->dev, &r->ap, aseq, n_seqs, meta, r->meta_cap, &plan);
    if (!err)
        err = vkpt_attn_plan_indirect(&plan, meta, r->meta_cap + VKPT_ATTN_HDR_WORDS,
                                      (uint32_t)r->meta_cap, r->attn_scratch.size);
    key.pf_items = plan.prefill.n_items;
    key.dec_items = plan.decode.n_items;
    key.dec_seqs = plan.n_dec_seqs;

    /* the class's recorded command buffer, or record one */
    rn_replay *slot = &r->replay[0];
    bool hit = false;
    if (!r->no_replay) {
        rn_replay *lru = NULL;
        for (int i = 0; i < RN_REPLAY_SLOTS && !hit; i++) {
            rn_replay *c = &r->replay[i];
            if (c->valid && class_eq(&c->key, &key)) {
                slot = c;
                hit = true;
            } else if (!lru || (lru->valid && (!c->valid || c->used < lru->used))) {
                lru = c;
            }
        }
        if (!hit) slot = lru;
    }
    slot->used = ++r->n_steps;
    r->cmd = &slot->cmd;
    uint64_t t_rec = cpu_ns();
    r->host_prep_ns += t_rec - t_start;
    if (!err && hit) {
        err = vkpt_cmd_resubmit(r->cmd);
        r->replay_hits++;
    } else if (!err) {
        slot->valid = false;
        r->replay_misses++;
        err = vkpt_cmd_begin(r->cmd);
        if (!err) err = record(r, key.n, key.n_out, &plan, key.edits ? r->adj_cap : 0);
        if (!err) err = vkpt_cmd_submit(r->cmd);
        if (!err) {
            slot->key = key;
            slot->valid = !r->no_replay;
        }
    }
    r->host_submit_ns += cpu_ns() - t_rec;
    if (!err) err = vkpt_cmd_wait(r->cmd, UINT64_MAX);
    if (err) {
        /* the cache rows of this step may be half-written: roll the lengths
         * back (they were not advanced) and return the new blocks; record
         * this class afresh next time */
        slot->valid = false;
        for (uint32_t i = 0; i < n_seqs; i++) {
            seq_state *s = &r->seqs[in[i].seq];
            seq_release_blocks(r, s, (s->len + VKPT_KV_BLOCK - 1) / VKPT_KV_BLOCK);
        }
        return err;
    }
    for (uint32_t i = 0; i < n_seqs; i++) r->seqs[in[i].seq].len += in[i].n_tokens;
    uint32_t k = hp->n_vocab < VKPT_MAX_CAND ? hp->n_vocab : VKPT_MAX_CAND;
    const float *tv = (const float *)r->out_topv.map, *lse = (const float *)r->out_lse.map,
                *lset = (const float *)r->out_lset.map;
    const uint32_t *ti = (const uint32_t *)r->out_topi.map;
    for (uint32_t o = 0; o < n_out; o++) {
        vkpt_step_out *so = &out[o];
        so->n_cand = k;
        memcpy(so->cand_logit, tv + (size_t)o * k, k * sizeof(float));
        for (uint32_t j = 0; j < k; j++) so->cand_id[j] = (int32_t)ti[(size_t)o * k + j];
        so->lse = lse[2 * o + 1];
        so->lse_temp = lset[2 * o + 1];
        so->row = o;
    }
    r->last_n_out = n_out;
    *n_out_p = n_out;
    return 0;
}

int vkpt_runner_logits_row(vkpt_runner *r, uint32_t row, float *dst)
{
    if (row >= r->last_n_out)
        return vkpt_fail(VKPT_EINVAL, "logits row %u of %u", row, r->last_n_out);
    uint64_t V = r->hp->n_vocab;
    return vkpt_buf_download(r->dev, &r->logits, row * V * 4, dst, V * 4);
}
