/* The serving engine: one runner driven by a scheduler thread that batches
 * every request's work into steps (continuous batching).
 *
 * Model of a request: n choices, each with a target sequence (prompt + the
 * tokens it generated). The KV cache holds a prefix of each target; a step
 * appends what is missing (a prompt chunk, or the one token sampled last
 * step) and asks for logits when the append reaches the target's end, so
 * prefill, decode and recompute after preemption are the same operation.
 * Choices share the prompt: choice 0 prefills it, the others fork from it
 * (whole blocks shared by reference count) before anything else is appended.
 *
 * A step spends its token budget on decodes first (one token per running
 * choice: streaming users are never stalled by long prompts), then on prompt
 * chunks in arrival order. When the cache cannot hold the decodes, the newest
 * running request is preempted: its blocks are freed and it is recomputed
 * later from its prompt and generated tokens; its samplers keep their state,
 * so the output continues exactly as it would have.
 *
 * Threading: submit/cancel/release/get_stats take `lock`; everything else
 * runs on the engine thread. Callbacks run on the engine thread. */
#define _GNU_SOURCE
#include "vkpt/engine.h"

#include "arbiter.h"
#include "vkpt/runner.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

enum { RQ_QUEUED = 0, RQ_RUNNING = 1, RQ_DONE = 2 };

typedef struct choice {
    int seq; /* runner sequence, -1 when none */
    vkpt_sampler *smp;
    int32_t *gen; /* generated tokens [max_tokens] */
    uint32_t n_gen;
    int finish;        /* enum vkpt_finish; NONE while running */
    bool want_pending; /* logits were asked for in the current step */
} choice;

struct vkpt_request {
    atomic_int refs; /* submitter + engine */
    atomic_bool cancel;
    atomic_uint cancel_choices; /* bit c: stop choice c */
    vkpt_engine *e;
    int32_t *prompt;
    uint32_t n_prompt;
    vkpt_gen_params p;
    vkpt_gen_cb cb;
    void *ud;
    /* engine thread only */
    int state;
    bool forked; /* choices 1..n-1 share choice 0's prompt */
    choice ch[VKPT_MAX_CHOICES];
    uint64_t t_submit, t_first, t_start;
    uint32_t cached_tokens;
    struct vkpt_request *next;
};

struct vkpt_engine {
    vkpt_model *m;
    vkpt_runner *r;
    const vkpt_tokenizer *tok;
    vkpt_engine_opts o;
    int arb_id; /* member id under o.arbiter */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stopping;                           /* guarded by lock */
    bool lost;                               /* guarded by lock */
    vkpt_request *incoming, **incoming_tail; /* guarded by lock */
    /* engine thread */
    vkpt_request **running; /* [max_seqs], arrival order */
    uint32_t n_running;
    vkpt_request *waiting, **waiting_tail;
    vkpt_step_seq *batch;
    vkpt_step_out *outs;
    struct {
        vkpt_request *rq;
        uint32_t c;
    } * slot_of;         /* batch entry -> (request, choice) */
    uint32_t *blocks_of; /* batch entry -> new KV blocks it takes */
    vkpt_logit_edit *edits;
    uint32_t edits_cap;
    vkpt_engine_stats st; /* guarded by lock */
};

/* ---- request lifetime ---------------------------------------------------------- */

static void request_free(vkpt_request *rq)
{
    for (uint32_t c = 0; c < VKPT_MAX_CHOICES; c++) {
        vkpt_sampler_destroy(rq->ch[c].smp);
        vkpt_free(rq->ch[c].gen);
    }
    vkpt_free(rq->prompt);
    vkpt_free(rq);
}

static void request_unref(vkpt_request *rq)
{
    if (atomic_fetch_sub(&rq->refs, 1) == 1) request_free(rq);
}

void vkpt_request_cancel(vkpt_request *rq)
{
    if (rq) atomic_store(&rq->cancel, true);
}

void vkpt_request_cancel_choice(vkpt_request *rq, uint32_t idx)
{
    if (rq && idx < VKPT_MAX_CHOICES) atomic_fetch_or(&rq->cancel_choices, 1u << idx);
}

void vkpt_request_release(vkpt_request *rq)
{
    if (!rq) return;
    atomic_store(&rq->cancel, true); /* harmless after DONE */
    request_unref(rq);
}

/* ---- submit ------------------------------------------------------------------------ */

int vkpt_engine_submit(vkpt_engine *e, const int32_t *prompt, uint32_t n_prompt,
                       const vkpt_gen_params *p, vkpt_gen_cb cb, void *ud, vkpt_request **out)
{
    if (!e || !p || !cb || !out || (!prompt && n_prompt))
        return vkpt_fail(VKPT_EINVAL, "submit: NULL argument");
    *out = NULL;
    const vkpt_model_info *mi = vkpt_model_get_info(e->m);
    vkpt_runner_stats rs;
    vkpt_runner_get_stats(e->r, &rs);
    if (!n_prompt) return vkpt_fail(VKPT_EINVAL, "the prompt is empty");
    if (p->n < 1 || p->n > VKPT_MAX_CHOICES)
        return vkpt_fail(VKPT_EINVAL, "n = %u: between 1 and %d choices", p->n, VKPT_MAX_CHOICES);
    if (p->max_tokens < 1) return vkpt_fail(VKPT_EINVAL, "max_tokens must be at least 1");
    if (p->top_logprobs > VKPT_MAX_TOP_LOGPROBS)
        return vkpt_fail(VKPT_EINVAL, "top_logprobs = %u: at most %d", p->top_logprobs,
                         VKPT_MAX_TOP_LOGPROBS);
    if (p->n_stop_ids > VKPT_MAX_STOP_IDS)
        return vkpt_fail(VKPT_EINVAL, "at most %d stop token ids", VKPT_MAX_STOP_IDS);
    for (uint32_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || (uint32_t)prompt[i] >= mi->n_vocab)
            return vkpt_fail(VKPT_EINVAL, "prompt token %d is outside the vocabulary (0..%u)",
                             prompt[i], mi->n_vocab - 1);
    if ((uint64_t)n_prompt + p->max_tokens > rs.n_ctx)
        return vkpt_fail(
            VKPT_ERANGE,
            "the prompt (%u tokens) plus max_tokens (%u) exceeds the context of %u tokens; shorten "
            "the prompt or lower max_tokens",
            n_prompt, p->max_tokens, rs.n_ctx);
    uint32_t kv_cap = rs.kv_blocks_total * 16;
    if (n_prompt + p->max_tokens * p->n > kv_cap)
        return vkpt_fail(VKPT_ERANGE,
                         "the request needs up to %u tokens of KV cache; this engine has %u",
                         n_prompt + p->max_tokens * p->n, kv_cap);
    vkpt_request *rq = vkpt_calloc(1, sizeof *rq);
    if (!rq) return vkpt_fail(VKPT_ENOMEM, "request");
    atomic_init(&rq->refs, 2);
    atomic_init(&rq->cancel, false);
    atomic_init(&rq->cancel_choices, 0);
    rq->e = e;
    rq->p = *p;
    rq->cb = cb;
    rq->ud = ud;
    rq->n_prompt = n_prompt;
    rq->prompt = vkpt_malloc(n_prompt * sizeof *rq->prompt);
    int err = rq->prompt ? 0 : vkpt_fail(VKPT_ENOMEM, "request");
    if (!err) memcpy(rq->prompt, prompt, n_prompt * sizeof *prompt);
    for (uint32_t c = 0; c < p->n && !err; c++) {
        rq->ch[c].seq = -1;
        vkpt_sampling s = p->sampling;
        s.seed = p->sampling.seed + c * 0x9E3779B97F4A7C15ull; /* independent streams per choice */
        err = vkpt_sampler_create(&s, mi->n_vocab, prompt, n_prompt, &rq->ch[c].smp);
        if (!err && !(rq->ch[c].gen = vkpt_malloc(p->max_tokens * sizeof(int32_t))))
            err = vkpt_fail(VKPT_ENOMEM, "request");
    }
    if (err) {
        request_free(rq);
        return err;
    }
    rq->t_submit = vkpt_now_ns();
    pthread_mutex_lock(&e->lock);
    if (e->stopping || e->lost) {
        pthread_mutex_unlock(&e->lock);
        request_free(rq);
        return vkpt_fail(VKPT_ESTATE, e->lost ? "the GPU device was lost; this model cannot serve"
                                              : "the engine is shutting down");
    }
    rq->next = NULL;
    *e->incoming_tail = rq;
    e->incoming_tail = &rq->next;
    e->st.queued++;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->lock);
    *out = rq;
    return 0;
}

/* ---- engine thread ---------------------------------------------------------------- */

static void close_seqs(vkpt_engine *e, vkpt_request *rq)
{
    for (uint32_t c = 0; c < rq->p.n; c++)
        if (rq->ch[c].seq >= 0) {
            vkpt_runner_seq_close(e->r, rq->ch[c].seq);
            rq->ch[c].seq = -1;
        }
    rq->forked = false;
}

static void finish_request(vkpt_engine *e, vkpt_request *rq, int finish_all, int err)
{
    close_seqs(e, rq);
    vkpt_gen_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = VKPT_EV_DONE;
    uint32_t gen = 0;
    for (uint32_t c = 0; c < rq->p.n; c++) {
        if (!rq->ch[c].finish || finish_all == VKPT_FINISH_ERROR) rq->ch[c].finish = finish_all;
        ev.finish[c] = rq->ch[c].finish;
        gen += rq->ch[c].n_gen;
    }
    ev.err = err;
    ev.prompt_tokens = rq->n_prompt;
    ev.cached_tokens = rq->cached_tokens;
    ev.completion_tokens = gen;
    uint64_t now = vkpt_now_ns();
    ev.queued_ns = (rq->t_start ? rq->t_start : now) - rq->t_submit;
    ev.first_token_ns = rq->t_first ? rq->t_first - rq->t_submit : 0;
    ev.done_ns = now - rq->t_submit;
    rq->state = RQ_DONE;
    pthread_mutex_lock(&e->lock);
    bool canceled = finish_all == VKPT_FINISH_CANCELED;
    if (err)
        e->st.requests_failed++;
    else if (canceled)
        e->st.requests_canceled++;
    else
        e->st.requests_done++;
    pthread_mutex_unlock(&e->lock);
    rq->cb(&ev, rq->ud);
    request_unref(rq);
}

static bool all_finished(const vkpt_request *rq)
{
    for (uint32_t c = 0; c < rq->p.n; c++)
        if (!rq->ch[c].finish) return false;
    return true;
}

static void remove_running(vkpt_engine *e, uint32_t i)
{
    memmove(&e->running[i], &e->running[i + 1], (e->n_running - i - 1) * sizeof *e->running);
    e->n_running--;
}

/* Move a running request back to the front of the waiting list. */
static void preempt(vkpt_engine *e, uint32_t i)
{
    vkpt_request *rq = e->running[i];
    close_seqs(e, rq);
    remove_running(e, i);
    rq->state = RQ_QUEUED;
    rq->next = e->waiting;
    e->waiting = rq;
    if (e->waiting_tail == &e->waiting) e->waiting_tail = &rq->next;
    pthread_mutex_lock(&e->lock);
    e->st.preemptions++;
    pthread_mutex_unlock(&e->lock);
    VKPT_LOGD("engine: preempted a request (%u prompt tokens) to free KV blocks", rq->n_prompt);
}

static uint32_t target_len(const vkpt_request *rq, uint32_t c)
{
    return rq->n_prompt + rq->ch[c].n_gen;
}

static const int32_t *target_at(const vkpt_request *rq, uint32_t c, uint32_t pos)
{
    return pos < rq->n_prompt ? &rq->prompt[pos] : &rq->ch[c].gen[pos - rq->n_prompt];
}

static bool is_stop(const vkpt_engine *e, const vkpt_request *rq, int32_t tok)
{
    if (!rq->p.ignore_eos && vkpt_tokenizer_is_eog(e->tok, tok)) return true;
    for (uint32_t i = 0; i < rq->p.n_stop_ids; i++)
        if (rq->p.stop_ids[i] == tok) return true;
    return false;
}

static int fetch_row(void *ud, uint32_t row, float *dst)
{
    return vkpt_runner_logits_row(ud, row, dst);
}

/* Sample choice c of rq from output o; emit its token or finish it. */
static int sample_choice(vkpt_engine *e, vkpt_request *rq, uint32_t c, const vkpt_step_out *o)
{
    choice *ch = &rq->ch[c];
    vkpt_sample s;
    int err = vkpt_sampler_pick(ch->smp, o, fetch_row, e->r, &s);
    if (err) return err;
    if (is_stop(e, rq, s.token)) {
        ch->finish = VKPT_FINISH_STOP;
        return 0;
    }
    ch->gen[ch->n_gen++] = s.token;
    if (!rq->t_first) rq->t_first = vkpt_now_ns();
    vkpt_gen_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = VKPT_EV_TOKEN;
    ev.choice = c;
    ev.token = s.token;
    ev.logprob = s.logprob;
    if (rq->p.top_logprobs) {
        uint32_t k = rq->p.top_logprobs < o->n_cand ? rq->p.top_logprobs : o->n_cand;
        for (uint32_t i = 0; i < k; i++) {
            ev.top_ids[i] = o->cand_id[i];
            ev.top_logprobs[i] = o->cand_logit[i] - o->lse;
        }
        ev.n_top = k;
    }
    rq->cb(&ev, rq->ud);
    vkpt_runner_stats rs;
    vkpt_runner_get_stats(e->r, &rs);
    if (ch->n_gen >= rq->p.max_tokens || target_len(rq, c) >= rs.n_ctx)
        ch->finish = VKPT_FINISH_LENGTH;
    return 0;
}

/* Ensure choices 1..n-1 exist once choice 0 holds exactly the prompt. */
static int fork_choices(vkpt_engine *e, vkpt_request *rq)
{
    for (uint32_t c = 1; c < rq->p.n; c++) {
        if (rq->ch[c].finish) continue;
        int s = vkpt_runner_seq_open(e->r);
        if (s < 0) return s;
        rq->ch[c].seq = s;
        int err = vkpt_runner_seq_fork(e->r, rq->ch[0].seq, s);
        if (err) return err;
    }
    rq->forked = true;
    return 0;
}

static uint32_t seqs_needed(const vkpt_request *rq)
{
    uint32_t n = 0;
    for (uint32_t c = 0; c < rq->p.n; c++) n += !rq->ch[c].finish;
    return n;
}

/* Take back the batch entries already planned for rq this step (it is being
 * preempted): they are the last ones, as requests are planned in order. */
static void drop_planned(vkpt_engine *e, vkpt_request *rq, uint32_t *nb, uint32_t *budget,
                         uint32_t *edits_used, uint32_t *free_blocks)
{
    while (*nb && e->slot_of[*nb - 1].rq == rq) {
        (*nb)--;
        *budget += e->batch[*nb].n_tokens;
        *edits_used -= e->batch[*nb].n_edits;
        *free_blocks += e->blocks_of[*nb];
    }
}

/* Blocks that preempting rq surely gives back: those referenced by one
 * sequence only (blocks its choices share are not counted: conservative). */
static uint32_t release_count(vkpt_engine *e, const vkpt_request *rq)
{
    uint32_t n = 0;
    for (uint32_t c = 0; c < rq->p.n; c++)
        if (rq->ch[c].seq >= 0) n += vkpt_runner_seq_exclusive_blocks(e->r, rq->ch[c].seq);
    return n;
}

/* Plan and run one step. Returns 0 or a device error (which fails every
 * running request). */
static int engine_step(vkpt_engine *e)
{
    vkpt_runner_stats rs;
    vkpt_runner_get_stats(e->r, &rs);
    uint32_t budget = rs.max_step_tokens, nb = 0, edits_used = 0;

    /* cancellations: whole requests, and single choices (a stop string) */
    for (uint32_t i = 0; i < e->n_running; i++) {
        vkpt_request *rq = e->running[i];
        unsigned cc = atomic_load(&rq->cancel_choices);
        if (!rq->forked) continue; /* choice 0 still prefills the shared prompt: later */
        for (uint32_t c = 0; cc && c < rq->p.n; c++)
            if ((cc >> c & 1) && !rq->ch[c].finish) {
                rq->ch[c].finish = VKPT_FINISH_STOP;
                /* after the fork nothing reads another choice's blocks */
                if (rq->forked && rq->ch[c].seq >= 0) {
                    vkpt_runner_seq_close(e->r, rq->ch[c].seq);
                    rq->ch[c].seq = -1;
                }
            }
    }
    for (uint32_t i = 0; i < e->n_running;) {
        vkpt_request *rq = e->running[i];
        if (!atomic_load(&rq->cancel) && all_finished(rq)) {
            remove_running(e, i);
            finish_request(e, rq, VKPT_FINISH_NONE, 0);
            continue;
        }
        if (atomic_load(&rq->cancel)) {
            remove_running(e, i);
            finish_request(e, rq, VKPT_FINISH_CANCELED, 0);
        } else {
            i++;
        }
    }
    for (vkpt_request **pp = &e->waiting; *pp;) {
        vkpt_request *rq = *pp;
        if (atomic_load(&rq->cancel)) {
            *pp = rq->next;
            if (e->waiting_tail == &rq->next) e->waiting_tail = pp;
            finish_request(e, rq, VKPT_FINISH_CANCELED, 0);
        } else {
            pp = &rq->next;
        }
    }

    /* decodes: running choices whose KV is one token short of their target.
     * free_blocks counts what this step's planned appends have not taken. */
    bool preempted_any = false;
    uint32_t free_blocks = rs.kv_blocks_total - rs.kv_blocks_used;
    for (uint32_t i = 0; i < e->n_running;) {
        vkpt_request *rq = e->running[i];
        bool preempted = false;
        for (uint32_t c = 0; c < rq->p.n && !preempted; c++) {
            choice *ch = &rq->ch[c];
            if (ch->finish || ch->seq < 0 || !rq->forked) continue;
            uint32_t have = vkpt_runner_seq_len(e->r, ch->seq), want = target_len(rq, c);
            if (want - have != 1) continue;
            uint32_t nbk = vkpt_runner_blocks_needed(e->r, ch->seq, 1);
            if (nbk > free_blocks) {
                /* free blocks: preempt the newest request (possibly this one) */
                uint32_t victim = e->n_running - 1;
                if (victim == 0) {
                    /* alone and out of cache: it cannot grow any further */
                    drop_planned(e, rq, &nb, &budget, &edits_used, &free_blocks);
                    remove_running(e, i);
                    finish_request(e, rq, VKPT_FINISH_LENGTH, 0);
                    preempted = true;
                    break;
                }
                if (victim == i) drop_planned(e, rq, &nb, &budget, &edits_used, &free_blocks);
                free_blocks += release_count(e, e->running[victim]);
                preempt(e, victim);
                preempted_any = true;
                if (victim == i) {
                    preempted = true;
                    break;
                }
                c--; /* retry this choice with the freed blocks (wraps to 0 for c == 0) */
                continue;
            }
            if (budget < 1 || nb >= rs.max_seqs) break;
            free_blocks -= nbk;
            e->blocks_of[nb] = nbk;
            uint32_t ne =
                vkpt_sampler_edits(ch->smp, e->edits + edits_used, e->edits_cap - edits_used);
            e->batch[nb] = (vkpt_step_seq){.seq = ch->seq,
                                           .tokens = target_at(rq, c, have),
                                           .n_tokens = 1,
                                           .want_logits = true,
                                           .temperature = vkpt_sampler_temperature(ch->smp),
                                           .edits = e->edits + edits_used,
                                           .n_edits = ne};
            edits_used += ne;
            e->slot_of[nb].rq = rq;
            e->slot_of[nb].c = c;
            nb++;
            budget--;
        }
        if (!preempted) i++;
    }

    /* admit waiting requests while sequence slots and blocks allow, keeping
     * one free block per running choice for growth; never in a step that had
     * to preempt (re-admitting at once would only thrash) */
    vkpt_runner_get_stats(e->r, &rs);
    uint32_t seqs_free = rs.max_seqs - rs.seqs_open;
    uint32_t growing = 0;
    for (uint32_t i = 0; i < e->n_running; i++) growing += seqs_needed(e->running[i]);
    while (!preempted_any && e->waiting && e->n_running < rs.max_seqs) {
        vkpt_request *rq = e->waiting;
        uint32_t need = seqs_needed(rq);
        if (need > seqs_free) break;
        uint32_t prompt_blocks = (rq->n_prompt + 15) / 16 + need;
        if (prompt_blocks + growing > free_blocks) break;
        e->waiting = rq->next;
        if (!e->waiting) e->waiting_tail = &e->waiting;
        int s = vkpt_runner_seq_open(e->r);
        if (s < 0) break; /* cannot happen: seqs_free counted it */
        rq->ch[0].seq = s;
        if (!e->o.no_prefix_cache) {
            /* reuse cached blocks of the prompt; the last prompt token is
             * always computed (its logits are needed) */
            uint32_t got = vkpt_runner_prefix_attach(e->r, s, rq->prompt, rq->n_prompt - 1);
            if (!rq->t_start) rq->cached_tokens = got;
        }
        rq->state = RQ_RUNNING;
        if (!rq->t_start) rq->t_start = vkpt_now_ns();
        e->running[e->n_running++] = rq;
        seqs_free -= need;
        growing += need;
        /* its prompt chunks below take their blocks from free_blocks */
        pthread_mutex_lock(&e->lock);
        if (e->st.queued) e->st.queued--;
        pthread_mutex_unlock(&e->lock);
    }

    /* prompt (and recompute) chunks, in arrival order */
    for (uint32_t i = 0; i < e->n_running && budget > 0 && nb < rs.max_seqs; i++) {
        vkpt_request *rq = e->running[i];
        for (uint32_t c = 0; c < rq->p.n && budget > 0 && nb < rs.max_seqs; c++) {
            choice *ch = &rq->ch[c];
            if (ch->finish || ch->seq < 0) continue;
            uint32_t have = vkpt_runner_seq_len(e->r, ch->seq), want = target_len(rq, c);
            if (rq->forked && want - have <= 1) continue; /* decodes were planned above */
            /* before the fork, choice 0 stops at the end of the prompt */
            uint32_t end = rq->forked ? want - 1 : rq->n_prompt;
            if (!rq->forked && ch->n_gen == 0) end = rq->n_prompt;
            if (have >= end) continue;
            uint32_t k = end - have < budget ? end - have : budget;
            if (e->o.batch_invariant) {
                /* chunks on fixed boundaries (multiples of the step budget),
                 * whole or not at all: each prompt row then meets the same
                 * kernels whatever else is in the batch */
                uint32_t cb = rs.max_step_tokens, next = (have / cb + 1) * cb;
                uint32_t whole = (next < end ? next : end) - have;
                if (whole > budget) continue;
                k = whole;
            }
            uint32_t nbk = vkpt_runner_blocks_needed(e->r, ch->seq, k);
            if (nbk > free_blocks) continue; /* wait for blocks */
            free_blocks -= nbk;
            e->blocks_of[nb] = nbk;
            bool logits = !rq->forked && have + k == rq->n_prompt && rq->ch[0].n_gen == 0;
            uint32_t ne = 0;
            if (logits) {
                ne = vkpt_sampler_edits(ch->smp, e->edits + edits_used, e->edits_cap - edits_used);
            }
            e->batch[nb] = (vkpt_step_seq){.seq = ch->seq,
                                           .tokens = target_at(rq, c, have),
                                           .n_tokens = k,
                                           .want_logits = logits,
                                           .temperature = vkpt_sampler_temperature(ch->smp),
                                           .edits = e->edits + edits_used,
                                           .n_edits = ne};
            edits_used += ne;
            e->slot_of[nb].rq = rq;
            e->slot_of[nb].c = c;
            nb++;
            budget -= k;
        }
    }
    if (!nb) {
        /* nothing could run: the running requests wait on each other for
         * blocks (partial prompts filled the cache). Give the cache back from
         * the newest; the oldest then proceeds. */
        if (e->n_running > 1)
            preempt(e, e->n_running - 1);
        else if (e->n_running == 1) {
            vkpt_request *rq = e->running[0];
            remove_running(e, 0);
            finish_request(e, rq, VKPT_FINISH_ERROR,
                           vkpt_fail(VKPT_EFULL, "the KV cache cannot hold the request"));
        }
        return 0;
    }

    uint32_t n_out = 0, step_tokens = 0;
    for (uint32_t b = 0; b < nb; b++) step_tokens += e->batch[b].n_tokens;
    if (e->o.arbiter) vkpt__arbiter_acquire(e->o.arbiter, e->arb_id);
    int err = vkpt_runner_step(e->r, e->batch, nb, e->outs, rs.max_seqs, &n_out);
    if (e->o.arbiter) vkpt__arbiter_release(e->o.arbiter, e->arb_id, step_tokens);
    if (err) return err; /* planning counted blocks: EFULL here would be a bug */
    uint32_t n_tok = 0;
    for (uint32_t b = 0; b < nb; b++) n_tok += e->batch[b].n_tokens;
    pthread_mutex_lock(&e->lock);
    e->st.steps++;
    e->st.prompt_tokens += n_tok; /* refined below: decodes are not prompt */
    pthread_mutex_unlock(&e->lock);

    /* outputs, in batch order */
    uint32_t o = 0, decoded = 0;
    for (uint32_t b = 0; b < nb; b++) {
        vkpt_request *rq = e->slot_of[b].rq;
        uint32_t c = e->slot_of[b].c;
        /* a choice-0 prompt chunk that ended exactly at the prompt: fork now */
        if (!rq->forked && c == 0 && vkpt_runner_seq_len(e->r, rq->ch[0].seq) == rq->n_prompt) {
            int ferr = fork_choices(e, rq);
            if (ferr) {
                /* no room for the other choices right now: retry from scratch later */
                if (e->batch[b].want_logits) o++;
                for (uint32_t i = 0; i < e->n_running; i++)
                    if (e->running[i] == rq) preempt(e, i);
                continue;
            }
        }
        if (!e->batch[b].want_logits) continue;
        const vkpt_step_out *so = &e->outs[o++];
        if (e->batch[b].n_tokens == 1 && rq->forked) decoded++;
        if (rq->forked && rq->ch[0].n_gen == 0 && c == 0 && e->batch[b].n_tokens >= 1 &&
            vkpt_runner_seq_len(e->r, rq->ch[0].seq) == rq->n_prompt) {
            /* the prompt's logits: every choice samples its first token */
            for (uint32_t k = 0; k < rq->p.n && !err; k++) err = sample_choice(e, rq, k, so);
        } else {
            err = sample_choice(e, rq, c, so);
        }
        if (err) return err;
    }
    pthread_mutex_lock(&e->lock);
    e->st.prompt_tokens -= decoded;
    e->st.generated_tokens += decoded;
    pthread_mutex_unlock(&e->lock);

    /* offer newly filled blocks to the prefix cache */
    if (!e->o.no_prefix_cache)
        for (uint32_t i = 0; i < e->n_running; i++) {
            vkpt_request *rq = e->running[i];
            for (uint32_t c = 0; c < rq->p.n; c++)
                if (rq->ch[c].seq >= 0)
                    vkpt_runner_prefix_register(e->r, rq->ch[c].seq, rq->prompt, rq->n_prompt,
                                                rq->ch[c].gen, rq->ch[c].n_gen);
        }

    /* requests whose choices all finished */
    for (uint32_t i = 0; i < e->n_running;) {
        vkpt_request *rq = e->running[i];
        if (all_finished(rq)) {
            remove_running(e, i);
            finish_request(e, rq, VKPT_FINISH_NONE, 0);
        } else {
            /* choices that finished free their sequences early (after the
             * fork nothing reads another choice's blocks) */
            for (uint32_t c = 0; c < rq->p.n && rq->forked; c++)
                if (rq->ch[c].finish && rq->ch[c].seq >= 0) {
                    vkpt_runner_seq_close(e->r, rq->ch[c].seq);
                    rq->ch[c].seq = -1;
                }
            i++;
        }
    }
    return 0;
}

static void fail_all(vkpt_engine *e, int finish, int err)
{
    while (e->n_running) {
        vkpt_request *rq = e->running[--e->n_running];
        finish_request(e, rq, finish, err);
    }
    while (e->waiting) {
        vkpt_request *rq = e->waiting;
        e->waiting = rq->next;
        finish_request(e, rq, finish, err);
    }
    e->waiting_tail = &e->waiting;
}

static void *engine_main(void *arg)
{
    vkpt_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        if (!e->stopping && !e->incoming && !e->n_running && !e->waiting && e->o.arbiter) {
            /* out of work: no turns are held for us meanwhile */
            pthread_mutex_unlock(&e->lock);
            vkpt__arbiter_idle(e->o.arbiter, e->arb_id);
            pthread_mutex_lock(&e->lock);
        }
        while (!e->stopping && !e->incoming && !e->n_running && !e->waiting)
            pthread_cond_wait(&e->cond, &e->lock);
        bool stop = e->stopping;
        vkpt_request *in = e->incoming;
        e->incoming = NULL;
        e->incoming_tail = &e->incoming;
        pthread_mutex_unlock(&e->lock);
        while (in) {
            vkpt_request *next = in->next;
            in->next = NULL;
            *e->waiting_tail = in;
            e->waiting_tail = &in->next;
            in = next;
        }
        if (stop) break;
        int err = engine_step(e);
        if (err) {
            VKPT_LOGE("engine: step failed: %s", vkpt_errmsg(err));
            bool lost = err == VKPT_EDEVLOST;
            fail_all(e, VKPT_FINISH_ERROR, err);
            if (lost) {
                pthread_mutex_lock(&e->lock);
                e->lost = true;
                e->st.device_lost = true;
                pthread_mutex_unlock(&e->lock);
            }
        }
    }
    fail_all(e, VKPT_FINISH_CANCELED, 0);
    return NULL;
}

/* ---- create / destroy ------------------------------------------------------------ */

void vkpt_engine_destroy(vkpt_engine *e)
{
    if (!e) return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->lock);
        e->stopping = true;
        pthread_cond_signal(&e->cond);
        pthread_mutex_unlock(&e->lock);
        pthread_join(e->thread, NULL);
    }
    /* anything submitted after the thread's last look */
    while (e->incoming) {
        vkpt_request *rq = e->incoming;
        e->incoming = rq->next;
        finish_request(e, rq, VKPT_FINISH_CANCELED, 0);
    }
    vkpt_runner_destroy(e->r);
    if (e->o.arbiter && e->arb_id >= 0) vkpt__arbiter_leave(e->o.arbiter, e->arb_id);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->cond);
    vkpt_free(e->running);
    vkpt_free(e->batch);
    vkpt_free(e->outs);
    vkpt_free(e->slot_of);
    vkpt_free(e->blocks_of);
    vkpt_free(e->edits);
    vkpt_free(e);
}

int vkpt_engine_create(vkpt_model *m, const vkpt_engine_opts *opts, vkpt_engine **out)
{
    if (!m || !out) return vkpt_fail(VKPT_EINVAL, "vkpt_engine_create: NULL");
    *out = NULL;
    vkpt_engine *e = vkpt_calloc(1, sizeof *e);
    if (!e) return vkpt_fail(VKPT_ENOMEM, "engine");
    e->m = m;
    e->tok = vkpt_model_tokenizer(m);
    if (opts) e->o = *opts;
    e->arb_id = -1;
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->cond, NULL);
    e->incoming_tail = &e->incoming;
    e->waiting_tail = &e->waiting;
    const vkpt_model_info *mi = vkpt_model_get_info(m);
    uint32_t ctx = e->o.n_ctx
                       ? e->o.n_ctx
                       : (mi->n_ctx_train && mi->n_ctx_train < 4096 ? mi->n_ctx_train : 4096);
    uint32_t seqs = e->o.max_seqs ? e->o.max_seqs : 64;
    uint32_t kv = e->o.kv_tokens ? e->o.kv_tokens : ctx * seqs / 2;
    if (kv < ctx) kv = ctx;
    uint32_t edits_row = 2048;
    vkpt_runner_opts ro = {.n_ctx = ctx,
                           .max_seqs = seqs,
                           .max_step_tokens = e->o.max_step_tokens ? e->o.max_step_tokens : 512,
                           .kv_tokens = kv,
                           .queue = e->o.queue,
                           .batch_invariant = e->o.batch_invariant,
                           .max_edits_per_row = edits_row};
    int err = vkpt_runner_create(m, &ro, &e->r);
    if (!err && e->o.arbiter) {
        int id = vkpt__arbiter_join(e->o.arbiter, e->o.weight);
        if (id < 0)
            err = id;
        else
            e->arb_id = id;
    }
    if (!err) {
        e->running = vkpt_calloc(seqs, sizeof *e->running);
        e->batch = vkpt_calloc(seqs, sizeof *e->batch);
        e->outs = vkpt_calloc(seqs, sizeof *e->outs);
        e->slot_of = vkpt_calloc(seqs, sizeof *e->slot_of);
        e->blocks_of = vkpt_calloc(seqs, sizeof *e->blocks_of);
        e->edits_cap = seqs * edits_row;
        e->edits = vkpt_calloc(e->edits_cap, sizeof *e->edits);
        if (!e->running || !e->batch || !e->outs || !e->slot_of || !e->blocks_of || !e->edits)
            err = vkpt_fail(VKPT_ENOMEM, "engine");
    }
    if (!err) {
        vkpt_runner_stats rs;
        vkpt_runner_get_stats(e->r, &rs);
        e->st.kv_blocks_total = rs.kv_blocks_total;
        if (pthread_create(&e->thread, NULL, engine_main, e))
            err = vkpt_fail(VKPT_ENOMEM, "engine thread");
        else
            e->thread_started = true;
    }
    if (err) {
        vkpt_engine_destroy(e);
        return err;
    }
    *out = e;
    return 0;
}

void vkpt_engine_set_weight(vkpt_engine *e, double weight)
{
    if (e && e->o.arbiter && e->arb_id >= 0)
        vkpt__arbiter_set_weight(e->o.arbiter, e->arb_id, weight);
}

uint32_t vkpt_engine_n_ctx(const vkpt_engine *e)
{
    vkpt_runner_stats rs;
    vkpt_runner_get_stats(e->r, &rs);
    return rs.n_ctx;
}

const vkpt_model *vkpt_engine_model(const vkpt_engine *e)
{
    return e->m;
}

void vkpt_engine_get_stats(vkpt_engine *e, vkpt_engine_stats *out)
{
    pthread_mutex_lock(&e->lock);
    *out = e->st;
    pthread_mutex_unlock(&e->lock);
    /* the runner's block counts are read racily: two integers, for metrics */
    vkpt_runner_stats rs;
    vkpt_runner_get_stats(e->r, &rs);
    out->kv_blocks_total = rs.kv_blocks_total;
    out->kv_blocks_used = rs.kv_blocks_used;
    out->kv_blocks_cached = rs.kv_blocks_cached;
    out->prefix_hits = rs.prefix_hits;
    out->prefix_lookups = rs.prefix_lookups;
    out->running = rs.seqs_open;
}
