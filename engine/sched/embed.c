/* The embedder: one encoder driven by a worker thread that batches every
 * client's inputs into steps (continuous batching for encoders).
 *
 * Requests queue in arrival order. A step takes requests from the head of
 * the queue while they fit its token budget and sequence count; a request is
 * never split (its attention needs all its tokens in the same step), and
 * submit refuses inputs longer than max_seq_len <= the budget, so the head
 * always fits an empty step. Requests canceled while queued are answered
 * (canceled) without running. Each request gets exactly one callback, on
 * the worker thread, then the worker drops its reference.
 *
 * Under a device arbiter (opts.arbiter) each step is one turn: the worker
 * acquires it before the step, releases it with the step's input tokens
 * after, and tells the arbiter it is idle before it sleeps on an empty
 * queue (it gets no credit for idle time), exactly as an engine does.
 *
 * Threading: submit/cancel/release/get_stats take `lock`; the queue is
 * handed to the worker under it; everything else runs on the worker. */
#define _GNU_SOURCE
#include "vkpt/embed.h"

#include "arbiter.h"
#include "encoder.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

struct vkpt_embed_request {
    atomic_int refs; /* submitter + worker */
    atomic_bool cancel;
    int32_t *tokens;
    uint32_t n_tokens;
    uint32_t mode, dims; /* resolved: enum vkpt_pool_kind | VKPT_POOL_NORMALIZE */
    vkpt_embed_cb cb;
    void *ud;
    uint64_t t_submit, t_start;
    struct vkpt_embed_request *next;
};

struct vkpt_embedder {
    vkpt_model *m;
    vkpt_encoder *enc;
    vkpt_embedder_opts o;
    int def_pooling;
    bool def_normalize;
    uint32_t max_seq_len, max_tokens, max_seqs;
    pthread_t thread;
    bool thread_started;
    int arb_id; /* member id under o.arbiter; -1 before joining */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping, lost;                     /* guarded by lock */
    vkpt_embed_request *queue, **queue_tail; /* guarded by lock */
    vkpt_embedder_stats st;                  /* guarded by lock */
    /* worker only */
    vkpt_embed_request **batch; /* [max_seqs] */
    vkpt_enc_seq *seqs;         /* [max_seqs] */
};

const char *vkpt_pooling_name(int p)
{
    switch (p) {
    case VKPT_POOLING_DEFAULT: return "default";
    case VKPT_POOLING_CLS: return "cls";
    case VKPT_POOLING_MEAN: return "mean";
    case VKPT_POOLING_LAST: return "last";
    default: return "?";
    }
}

int vkpt_pooling_by_name(const char *name)
{
    for (int p = VKPT_POOLING_DEFAULT; p <= VKPT_POOLING_LAST; p++)
        if (name && !strcmp(name, vkpt_pooling_name(p))) return p;
    return -1;
}

/* ---- requests ------------------------------------------------------------------ */

static void request_unref(vkpt_embed_request *rq)
{
    if (atomic_fetch_sub(&rq->refs, 1) == 1) {
        vkpt_free(rq->tokens);
        vkpt_free(rq);
    }
}

void vkpt_embed_request_cancel(vkpt_embed_request *rq)
{
    if (rq) atomic_store(&rq->cancel, true);
}

void vkpt_embed_request_release(vkpt_embed_request *rq)
{
    if (!rq) return;
    atomic_store(&rq->cancel, true); /* harmless after the callback */
    request_unref(rq);
}

int vkpt_embedder_submit(vkpt_embedder *e, const int32_t *tokens, uint32_t n_tokens,
                         const vkpt_embed_params *p, vkpt_embed_cb cb, void *ud,
                         vkpt_embed_request **out)
{
    if (!e || !cb || !out || (!tokens && n_tokens))
        return vkpt_fail(VKPT_EINVAL, "embed submit: NULL argument");
    *out = NULL;
    vkpt_embed_params dp = {0};
    if (!p) p = &dp;
    const vkpt_model_info *mi = vkpt_model_get_info(e->m);
    if (!n_tokens) return vkpt_fail(VKPT_EINVAL, "the input is empty");
    if (n_tokens > e->max_seq_len)
        return vkpt_fail(VKPT_ERANGE,
                         "the input has %u tokens; this model embeds at most %u per input",
                         n_tokens, e->max_seq_len);
    if (p->pooling < VKPT_POOLING_DEFAULT || p->pooling > VKPT_POOLING_LAST)
        return vkpt_fail(VKPT_EINVAL, "pooling %d is not one of default, cls, mean, last",
                         p->pooling);
    if (p->normalize < VKPT_NORMALIZE_DEFAULT || p->normalize > VKPT_NORMALIZE_OFF)
        return vkpt_fail(VKPT_EINVAL, "normalize %d is not default, on or off", p->normalize);
    if (p->dims > mi->n_embd)
        return vkpt_fail(VKPT_EINVAL, "dimensions %u: the model's vectors have %u", p->dims,
                         mi->n_embd);
    uint32_t vocab = mi->n_vocab;
    for (uint32_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= vocab)
            return vkpt_fail(VKPT_EINVAL, "token %d is outside the vocabulary (0..%u)", tokens[i],
                             vocab - 1);
    vkpt_embed_request *rq = vkpt_calloc(1, sizeof *rq);
    if (!rq || !(rq->tokens = vkpt_malloc(n_tokens * sizeof *tokens))) {
        vkpt_free(rq);
        return vkpt_fail(VKPT_ENOMEM, "embedding request");
    }
    memcpy(rq->tokens, tokens, n_tokens * sizeof *tokens);
    atomic_init(&rq->refs, 2);
    atomic_init(&rq->cancel, false);
    rq->n_tokens = n_tokens;
    int pooling = p->pooling ? p->pooling : e->def_pooling;
    bool norm = p->normalize ? p->normalize == VKPT_NORMALIZE_ON : e->def_normalize;
    rq->mode = (uint32_t)pooling | (norm ? VKPT_POOL_NORMALIZE : 0u);
    rq->dims = p->dims ? p->dims : mi->n_embd;
    rq->cb = cb;
    rq->ud = ud;
    rq->t_submit = vkpt_now_ns();
    pthread_mutex_lock(&e->lock);
    if (e->stopping || e->lost) {
        bool lost = e->lost;
        pthread_mutex_unlock(&e->lock);
        vkpt_free(rq->tokens);
        vkpt_free(rq);
        return vkpt_fail(VKPT_ESTATE, lost ? "the GPU device was lost; this model cannot serve"
                                           : "the embedder is shutting down");
    }
    *e->queue_tail = rq;
    e->queue_tail = &rq->next;
    e->st.queued++;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->lock);
    *out = rq;
    return 0;
}

/* ---- worker ---------------------------------------------------------------------- */

/* The one callback of a request, then the worker's reference goes. */
static void finish(vkpt_embedder *e, vkpt_embed_request *rq, int err, bool canceled,
                   const float *vec)
{
    vkpt_embed_result r = {.err = err,
                           .canceled = canceled,
                           .vec = vec,
                           .dims = vec ? rq->dims : 0,
                           .n_tokens = rq->n_tokens,
                           .pooling = (int)(rq->mode & 3u),
                           .normalized = (rq->mode & VKPT_POOL_NORMALIZE) != 0};
    uint64_t now = vkpt_now_ns();
    r.queued_ns = (rq->t_start ? rq->t_start : now) - rq->t_submit;
    r.done_ns = now - rq->t_submit;
    pthread_mutex_lock(&e->lock);
    if (err)
        e->st.requests_failed++;
    else if (canceled)
        e->st.requests_canceled++;
    else {
        e->st.requests_done++;
        e->st.tokens += rq->n_tokens;
    }
    pthread_mutex_unlock(&e->lock);
    rq->cb(&r, rq->ud);
    request_unref(rq);
}

/* Take the next step's requests off the queue (under lock). Canceled ones
 * come back through *dropped. */
static uint32_t take_batch(vkpt_embedder *e, vkpt_embed_request **dropped)
{
    uint32_t nb = 0, tokens = 0;
    *dropped = NULL;
    vkpt_embed_request **dtail = dropped;
    while (e->queue) {
        vkpt_embed_request *rq = e->queue;
        if (atomic_load(&rq->cancel)) {
            e->queue = rq->next;
            rq->next = NULL;
            *dtail = rq;
            dtail = &rq->next;
            e->st.queued--;
            continue;
        }
        if (nb == e->max_seqs || tokens + rq->n_tokens > e->max_tokens) break;
        e->queue = rq->next;
        rq->next = NULL;
        e->batch[nb++] = rq;
        tokens += rq->n_tokens;
        e->st.queued--;
    }
    if (!e->queue) e->queue_tail = &e->queue;
    return nb;
}

static void *worker_main(void *arg)
{
    vkpt_embedder *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        if (!e->stopping && !e->queue && e->o.arbiter) {
            /* out of work: no turns are held for us meanwhile */
            pthread_mutex_unlock(&e->lock);
            vkpt__arbiter_idle(e->o.arbiter, e->arb_id);
            pthread_mutex_lock(&e->lock);
        }
        while (!e->stopping && !e->queue) pthread_cond_wait(&e->cond, &e->lock);
        if (e->stopping) {
            pthread_mutex_unlock(&e->lock);
            break;
        }
        vkpt_embed_request *dropped;
        uint32_t nb = take_batch(e, &dropped);
        bool lost = e->lost;
        pthread_mutex_unlock(&e->lock);
        while (dropped) {
            vkpt_embed_request *next = dropped->next;
            finish(e, dropped, 0, true, NULL);
            dropped = next;
        }
        if (!nb) continue;
        uint32_t step_tokens = 0;
        for (uint32_t i = 0; i < nb; i++) {
            vkpt_embed_request *rq = e->batch[i];
            e->seqs[i] = (vkpt_enc_seq){rq->tokens, rq->n_tokens, rq->mode, rq->dims};
            step_tokens += rq->n_tokens;
        }
        bool turn = e->o.arbiter && !lost;
        if (turn) vkpt__arbiter_acquire(e->o.arbiter, e->arb_id);
        /* queue time ends when the step can run (after the arbiter's turn) */
        uint64_t now = vkpt_now_ns();
        for (uint32_t i = 0; i < nb; i++) e->batch[i]->t_start = now;
        int err = lost ? VKPT_EDEVLOST : vkpt_encoder_step(e->enc, e->seqs, nb);
        if (turn) vkpt__arbiter_release(e->o.arbiter, e->arb_id, step_tokens);
        if (err && !lost) VKPT_LOGE("embedder: step failed: %s", vkpt_errmsg(err));
        pthread_mutex_lock(&e->lock);
        e->st.steps++;
        if (err == VKPT_EDEVLOST) e->lost = e->st.device_lost = true;
        pthread_mutex_unlock(&e->lock);
        for (uint32_t i = 0; i < nb; i++)
            finish(e, e->batch[i], err, false, err ? NULL : vkpt_encoder_vec(e->enc, i));
    }
    /* stopping: whatever is still queued is canceled */
    pthread_mutex_lock(&e->lock);
    vkpt_embed_request *rest = e->queue;
    e->queue = NULL;
    e->queue_tail = &e->queue;
    e->st.queued = 0;
    pthread_mutex_unlock(&e->lock);
    while (rest) {
        vkpt_embed_request *next = rest->next;
        finish(e, rest, 0, true, NULL);
        rest = next;
    }
    return NULL;
}

/* ---- create / destroy -------------------------------------------------------------- */

void vkpt_embedder_destroy(vkpt_embedder *e)
{
    if (!e) return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->lock);
        e->stopping = true;
        pthread_cond_signal(&e->cond);
        pthread_mutex_unlock(&e->lock);
        pthread_join(e->thread, NULL);
    }
    if (e->o.arbiter && e->arb_id >= 0) vkpt__arbiter_leave(e->o.arbiter, e->arb_id);
    vkpt_encoder_destroy(e->enc);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->cond);
    vkpt_free(e->batch);
    vkpt_free(e->seqs);
    vkpt_free(e);
}

int vkpt_embedder_create(vkpt_model *m, const vkpt_embedder_opts *opts, vkpt_embedder **out)
{
    if (!m || !out) return vkpt_fail(VKPT_EINVAL, "vkpt_embedder_create: NULL");
    *out = NULL;
    const vkpt_model_info *mi = vkpt_model_get_info(m);
    if (mi->causal)
        return vkpt_fail(VKPT_EUNSUPPORTED,
                         "%s is a generative model (architecture %s); embeddings need an encoder "
                         "(bert, nomic-bert, new)",
                         mi->name, mi->arch);
    vkpt_embedder_opts o = {0};
    if (opts) o = *opts;
    if (o.pooling < VKPT_POOLING_DEFAULT || o.pooling > VKPT_POOLING_LAST ||
        o.normalize < VKPT_NORMALIZE_DEFAULT || o.normalize > VKPT_NORMALIZE_OFF)
        return vkpt_fail(VKPT_EINVAL, "embedder: pooling %d / normalize %d out of range", o.pooling,
                         o.normalize);
    vkpt_embedder *e = vkpt_calloc(1, sizeof *e);
    if (!e) return vkpt_fail(VKPT_ENOMEM, "embedder");
    e->m = m;
    e->o = o;
    e->arb_id = -1;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->cond, NULL);
    e->queue_tail = &e->queue;
    /* defaults: the request's, else the endpoint's (opts), else the model
     * files', else sentence-transformers' own default for a bare transformer
     * (mean pooling) and no normalisation */
    e->def_pooling = o.pooling ? o.pooling : mi->pooling ? mi->pooling : VKPT_POOLING_MEAN;
    e->def_normalize =
        o.normalize ? o.normalize == VKPT_NORMALIZE_ON : mi->normalize == VKPT_NORMALIZE_ON;
    if (!o.pooling && !mi->pooling)
        VKPT_LOGI("%s: its files name no pooling; using mean pooling (sentence-transformers' "
                  "default)",
                  mi->name);
    vkpt_encoder_opts eo = {.max_tokens = o.max_batch_tokens,
                            .max_seqs = o.max_seqs,
                            .max_seq_len = o.max_seq_len,
                            .queue = o.queue,
                            .batch_invariant = o.batch_invariant};
    int err = vkpt_encoder_create(m, &eo, &e->enc);
    if (!err) {
        e->max_seq_len = vkpt_encoder_max_seq_len(e->enc);
        e->max_tokens = vkpt_encoder_max_tokens(e->enc);
        e->max_seqs = vkpt_encoder_max_seqs(e->enc);
        e->batch = vkpt_calloc(e->max_seqs, sizeof *e->batch);
        e->seqs = vkpt_calloc(e->max_seqs, sizeof *e->seqs);
        if (!e->batch || !e->seqs) err = vkpt_fail(VKPT_ENOMEM, "embedder");
    }
    if (!err && o.arbiter) {
        int id = vkpt__arbiter_join(o.arbiter, o.weight);
        if (id < 0)
            err = id;
        else
            e->arb_id = id;
    }
    if (!err) {
        if (pthread_create(&e->thread, NULL, worker_main, e))
            err = vkpt_fail(VKPT_ENOMEM, "embedder thread");
        else
            e->thread_started = true;
    }
    if (err) {
        vkpt_embedder_destroy(e);
        return err;
    }
    *out = e;
    return 0;
}

const vkpt_model *vkpt_embedder_model(const vkpt_embedder *e)
{
    return e->m;
}

uint32_t vkpt_embedder_dim(const vkpt_embedder *e)
{
    return vkpt_model_get_info(e->m)->n_embd;
}

uint32_t vkpt_embedder_max_seq_len(const vkpt_embedder *e)
{
    return e->max_seq_len;
}

void vkpt_embedder_set_weight(vkpt_embedder *e, double weight)
{
    if (e && e->o.arbiter && e->arb_id >= 0)
        vkpt__arbiter_set_weight(e->o.arbiter, e->arb_id, weight);
}

int vkpt_embedder_default_pooling(const vkpt_embedder *e)
{
    return e->def_pooling;
}

bool vkpt_embedder_default_normalize(const vkpt_embedder *e)
{
    return e->def_normalize;
}

void vkpt_embedder_get_stats(vkpt_embedder *e, vkpt_embedder_stats *out)
{
    pthread_mutex_lock(&e->lock);
    *out = e->st;
    pthread_mutex_unlock(&e->lock);
}

/* ---- synchronous helper ------------------------------------------------------------ */

typedef struct run_state {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint32_t pending;
    int err;
    float *out;
    size_t stride;
    uint32_t dims;
} run_state;

typedef struct run_slot {
    run_state *st;
    uint32_t i;
} run_slot;

static void run_cb(const vkpt_embed_result *r, void *ud)
{
    run_slot *sl = ud;
    run_state *st = sl->st;
    pthread_mutex_lock(&st->lock);
    if (r->vec)
        memcpy(st->out + sl->i * st->stride, r->vec, r->dims * sizeof(float));
    else if (!st->err)
        st->err = r->err ? r->err : vkpt_fail(VKPT_ESTATE, "the embedder stopped");
    if (--st->pending == 0) pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->lock);
}

int vkpt_embedder_run(vkpt_embedder *e, const int32_t *const *inputs, const uint32_t *lens,
                      uint32_t n_inputs, const vkpt_embed_params *p, float *out, size_t out_stride)
{
    if (!e || (!inputs && n_inputs) || (!lens && n_inputs) || (!out && n_inputs))
        return vkpt_fail(VKPT_EINVAL, "vkpt_embedder_run: NULL argument");
    if (!n_inputs) return 0;
    run_state st = {.out = out, .stride = out_stride};
    pthread_mutex_init(&st.lock, NULL);
    pthread_cond_init(&st.cond, NULL);
    run_slot *slots = vkpt_calloc(n_inputs, sizeof *slots);
    vkpt_embed_request **rqs = vkpt_calloc(n_inputs, sizeof *rqs);
    int err = slots && rqs ? 0 : vkpt_fail(VKPT_ENOMEM, "embedder run");
    uint32_t submitted = 0;
    for (uint32_t i = 0; i < n_inputs && !err; i++) {
        slots[i] = (run_slot){&st, i};
        pthread_mutex_lock(&st.lock);
        st.pending++;
        pthread_mutex_unlock(&st.lock);
        err = vkpt_embedder_submit(e, inputs[i], lens[i], p, run_cb, &slots[i], &rqs[i]);
        if (err) {
            pthread_mutex_lock(&st.lock);
            st.pending--;
            pthread_mutex_unlock(&st.lock);
        } else {
            submitted++;
        }
    }
    pthread_mutex_lock(&st.lock);
    while (st.pending) pthread_cond_wait(&st.cond, &st.lock);
    if (!err) err = st.err;
    pthread_mutex_unlock(&st.lock);
    for (uint32_t i = 0; rqs && i < submitted; i++) vkpt_embed_request_release(rqs[i]);
    vkpt_free(slots);
    vkpt_free(rqs);
    pthread_mutex_destroy(&st.lock);
    pthread_cond_destroy(&st.cond);
    return err;
}
