/* Calibration: the tokens/s one replica of a model sustains on its device
 * under a fixed workload, which becomes the model's throughput chunk size
 * (include/vkpt/provision.h, docs/PROVISIONING.md).
 *
 * One replica is kept busy with `c` requests: each finished request is
 * replaced at once, so the batch stays full. A generative model's replica
 * is an engine (no prefix cache: every prompt is distinct anyway) and its
 * rate counts prompt tokens prefilled + tokens generated; an encoder's is an
 * embedder and its rate counts the input tokens embedded. Either way the
 * rate is the replica's own token counter between two completions (see
 * run_level). Levels double c until two in a row gain less than 5% over the
 * best. */
#define _GNU_SOURCE
#include "vkpt/provision.h"

#include "vkpt/embed.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#define MAX_INFLIGHT 256

typedef struct calib_slot {
    struct calib_run *run;
    vkpt_request *rq;        /* engine */
    vkpt_embed_request *erq; /* embedder */
    bool busy;
    bool done;
} calib_slot;

/* The replica under test (one of engine, embedder) and its workload. */
typedef struct calib_run {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    calib_slot slots[MAX_INFLIGHT];
    uint32_t finished; /* DONE events since the last look */
    int err;           /* a request that failed */
    vkpt_engine *engine;
    vkpt_embedder *embedder;
    const vkpt_gen_params *gp; /* engine requests */
    int32_t *prompt;           /* [n_in] scratch for the next request's tokens */
    uint32_t n_in, n_vocab;
} calib_run;

static void slot_done(calib_slot *s, int err)
{
    calib_run *r = s->run;
    pthread_mutex_lock(&r->mu);
    s->done = true;
    r->finished++;
    if (err && !r->err) r->err = err;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void on_event(const vkpt_gen_event *ev, void *ud)
{
    if (ev->type != VKPT_EV_DONE) return;
    int err = 0;
    for (uint32_t c = 0; c < VKPT_MAX_CHOICES; c++)
        if (ev->finish[c] == VKPT_FINISH_ERROR && !err) err = ev->err ? ev->err : VKPT_EIO;
    slot_done(ud, err);
}

/* The embedder's callback (worker thread): a canceled input is no error. */
static void on_vector(const vkpt_embed_result *res, void *ud)
{
    slot_done(ud, res->vec || res->canceled ? 0 : res->err ? res->err : VKPT_EIO);
}

static uint64_t tokens_done(calib_run *r)
{
    if (r->embedder) {
        vkpt_embedder_stats st;
        vkpt_embedder_get_stats(r->embedder, &st);
        return st.tokens;
    }
    vkpt_engine_stats st;
    vkpt_engine_get_stats(r->engine, &st);
    return st.prompt_tokens + st.generated_tokens;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    return x ^ (x >> 33);
}

/* A distinct prompt per request: pseudo-random ids in the upper three
 * quarters of the vocabulary (clear of the specials at its start). */
static void make_prompt(int32_t *p, uint32_t n, uint32_t n_vocab, uint64_t seq)
{
    uint32_t lo = n_vocab / 4, span = n_vocab - lo;
    for (uint32_t i = 0; i < n; i++)
        p[i] = (int32_t)(lo + mix(seq * 0x9E3779B97F4A7C15ull + i) % span);
}

static int submit(calib_run *r, calib_slot *s, uint64_t seq)
{
    make_prompt(r->prompt, r->n_in, r->n_vocab, seq);
    s->done = false;
    s->busy = true;
    int err =
        r->embedder
            ? vkpt_embedder_submit(r->embedder, r->prompt, r->n_in, NULL, on_vector, s, &s->erq)
            : vkpt_engine_submit(r->engine, r->prompt, r->n_in, r->gp, on_event, s, &s->rq);
    if (err) s->busy = false;
    return err;
}

static void slot_cancel(calib_slot *s)
{
    if (s->rq) vkpt_request_cancel(s->rq);
    if (s->erq) vkpt_embed_request_cancel(s->erq);
}

static void slot_release(calib_slot *s)
{
    vkpt_request_release(s->rq);
    vkpt_embed_request_release(s->erq);
    s->rq = NULL;
    s->erq = NULL;
    s->busy = false;
}

static void abs_after(struct timespec *ts, uint64_t ns_from_now)
{
    clock_gettime(CLOCK_REALTIME, ts);
    uint64_t t = (uint64_t)ts->tv_nsec + ns_from_now % 1000000000ull;
    ts->tv_sec += (time_t)(ns_from_now / 1000000000ull + t / 1000000000ull);
    ts->tv_nsec = (long)(t % 1000000000ull);
}

/* One level: c requests in flight, each replaced as it finishes, for at
 * least `secs`. The rate is the engine's token count between the first and
 * the last completion of the level, so the window starts in steady state and
 * ends on a request boundary (at c = 1 it holds whole requests only); the
 * level goes on (up to 6 x secs) until that window spans half of secs. When
 * requests are too long for that (high concurrency on a slow device), the
 * count runs from a third of the way in to the end instead. (The counters
 * move by whole steps, so a window should hold many of them.) */
static int run_level(calib_run *r, uint32_t c, double secs, uint64_t *seq, double *tps)
{
    int err = 0;
    for (uint32_t i = 0; i < c && !err; i++) err = submit(r, &r->slots[i], (*seq)++);
    uint64_t t0 = vkpt_now_ns(), t_end = t0 + (uint64_t)(secs * 1e9),
             t_hard = t0 + (uint64_t)(6 * secs * 1e9), min_win = (uint64_t)(secs / 2 * 1e9);
    uint64_t t_third = t0 + (uint64_t)(secs / 3 * 1e9), third_tok = 0;
    uint64_t first_t = 0, first_tok = 0, last_t = 0, last_tok = 0;
    pthread_mutex_lock(&r->mu);
    while (!err && !r->err) {
        uint32_t finished = 0;
        for (uint32_t i = 0; i < c && !err; i++) {
            calib_slot *s = &r->slots[i];
            if (!s->busy || !s->done) continue;
            finished++;
            pthread_mutex_unlock(&r->mu);
            slot_release(s);
            err = submit(r, s, (*seq)++);
            pthread_mutex_lock(&r->mu);
        }
        r->finished = 0;
        uint64_t now = vkpt_now_ns();
        if (!third_tok && now >= t_third) {
            t_third = now;
            third_tok = tokens_done(r) + 1; /* +1: taken (0 is "not yet") */
        }
        if (finished) {
            uint64_t tok = tokens_done(r);
            if (!first_t) {
                first_t = now;
                first_tok = tok;
            } else {
                last_t = now;
                last_tok = tok;
            }
        }
        if (err || now >= t_hard || (now >= t_end && last_t && last_t - first_t >= min_win)) break;
        uint64_t wake = now < t_third && !third_tok ? t_third : now < t_end ? t_end : t_hard;
        if (r->finished == 0) {
            struct timespec ts;
            abs_after(&ts, wake - now);
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        }
    }
    if (!err) err = r->err;
    uint64_t t_stop = vkpt_now_ns(), tok_stop = tokens_done(r);
    pthread_mutex_unlock(&r->mu);
    /* stop this level: cancel what is still running, wait for every DONE */
    for (uint32_t i = 0; i < c; i++)
        if (r->slots[i].busy) slot_cancel(&r->slots[i]);
    pthread_mutex_lock(&r->mu);
    for (uint32_t i = 0; i < c; i++)
        while (r->slots[i].busy && !r->slots[i].done) pthread_cond_wait(&r->cv, &r->mu);
    r->finished = 0;
    pthread_mutex_unlock(&r->mu);
    for (uint32_t i = 0; i < c; i++)
        if (r->slots[i].busy) slot_release(&r->slots[i]);
    if (err) return err;
    VKPT_LOGD("calibrate: c=%u: first completion at %.2f s (%llu tokens), last at %.2f s (%llu), "
              "stop at %.2f s (%llu)",
              c, first_t ? (double)(first_t - t0) / 1e9 : -1.0, (unsigned long long)first_tok,
              last_t ? (double)(last_t - t0) / 1e9 : -1.0, (unsigned long long)last_tok,
              (double)(t_stop - t0) / 1e9, (unsigned long long)tok_stop);
    if (last_t && last_t - first_t >= min_win) {
        *tps = (double)(last_tok - first_tok) / ((double)(last_t - first_t) / 1e9);
    } else {
        *tps = third_tok && t_stop > t_third
                   ? (double)(tok_stop - (third_tok - 1)) / ((double)(t_stop - t_third) / 1e9)
                   : 0;
    }
    return 0;
}

int vkpt_calibrate(vkpt_model *m, const vkpt_calib_opts *opts, vkpt_calib_result *out)
{
    if (!m || !out) return vkpt_fail(VKPT_EINVAL, "vkpt_calibrate: NULL");
    memset(out, 0, sizeof *out);
    vkpt_calib_opts o = {0};
    if (opts) o = *opts;
    const vkpt_model_info *mi = vkpt_model_get_info(m);
    bool encoder = !mi->causal;
    uint32_t ctx, in, outn;
    if (encoder) {
        /* an encoder's input is at most its position table (capped like
         * vkpt_embedder_opts.max_seq_len); the workload is one input of
         * min(512, ctx) tokens per request, nothing generated */
        uint32_t cap = mi->n_ctx_train && mi->n_ctx_train < 8192 ? mi->n_ctx_train : 8192;
        ctx = o.n_ctx && o.n_ctx < cap ? o.n_ctx : cap;
        in = o.input_tokens ? o.input_tokens : (ctx < 512 ? ctx : 512);
        outn = 0;
        if (o.output_tokens)
            return vkpt_fail(VKPT_EINVAL,
                             "%s is an embedding model: its workload has no output "
                             "tokens",
                             mi->name);
        if (in < 1) in = 1;
        if (in > ctx)
            return vkpt_fail(VKPT_ERANGE, "calibration inputs of %u tokens exceed the encoder's %u",
                             in, ctx);
    } else {
        ctx = o.n_ctx ? o.n_ctx
                      : (mi->n_ctx_train && mi->n_ctx_train < 4096 ? mi->n_ctx_train : 4096);
        in = o.input_tokens ? o.input_tokens : (ctx * 3 / 4 < 2048 ? ctx * 3 / 4 : 2048);
        outn = o.output_tokens ? o.output_tokens : (ctx / 8 < 256 ? ctx / 8 : 256);
        if (in < 1) in = 1;
        if (outn < 1) outn = 1;
        if (in + outn > ctx)
            return vkpt_fail(VKPT_ERANGE,
                             "calibration requests of %u + %u tokens exceed the context %u", in,
                             outn, ctx);
    }
    uint32_t max_c = o.max_concurrency ? o.max_concurrency : 64;
    if (max_c > MAX_INFLIGHT) max_c = MAX_INFLIGHT;
    double secs = o.level_seconds > 0 ? o.level_seconds : 10;
    calib_run *r = vkpt_calloc(1, sizeof *r);
    int32_t *prompt = vkpt_malloc(in * sizeof *prompt);
    if (!prompt || !r) {
        vkpt_free(prompt);
        vkpt_free(r);
        return vkpt_fail(VKPT_ENOMEM, "calibration");
    }
    int err;
    if (encoder) {
        /* the embedder a provisioned replica runs (server/endpoints_rt.c) */
        vkpt_embedder_opts bo = {.max_seq_len = ctx,
                                 .max_seqs = o.embed_max_seqs,
                                 .max_batch_tokens = o.embed_max_batch_tokens,
                                 .queue = o.queue,
                                 .batch_invariant = true};
        err = vkpt_embedder_create(m, &bo, &r->embedder);
    } else {
        vkpt_engine_opts eo = {
            .n_ctx = ctx,
            .max_seqs = max_c,
            .queue = o.queue,
            .no_prefix_cache = true,
            .batch_invariant = true,
        };
        err = vkpt_engine_create(m, &eo, &r->engine);
    }
    if (err) {
        vkpt_free(prompt);
        vkpt_free(r);
        return err;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    for (uint32_t i = 0; i < MAX_INFLIGHT; i++) r->slots[i].run = r;
    if (!encoder) {
        /* levels stop where the KV cache could no longer hold every request whole */
        vkpt_engine_stats st;
        vkpt_engine_get_stats(r->engine, &st);
        uint32_t fit = st.kv_blocks_total / ((in + outn + 15) / 16);
        if (fit < 1) fit = 1;
        if (max_c > fit) max_c = fit;
    }
    vkpt_gen_params gp = {.max_tokens = outn, .n = 1, .ignore_eos = true};
    gp.sampling.temperature = 0;
    r->gp = &gp;
    r->prompt = prompt;
    r->n_in = in;
    r->n_vocab = mi->n_vocab;
    uint64_t t_start = vkpt_now_ns(), seq = 1;
    uint32_t flat = 0;
    out->input_tokens = in;
    out->output_tokens = outn;
    out->n_ctx = ctx;
    out->encoder = encoder;
    for (uint32_t c = 1; c <= max_c && out->n_levels < VKPT_CALIB_MAX_LEVELS; c *= 2) {
        double tps = 0;
        err = run_level(r, c, secs, &seq, &tps);
        if (err) break;
        out->levels[out->n_levels].concurrency = c;
        out->levels[out->n_levels].tokens_per_s = tps;
        out->n_levels++;
        if (o.progress) o.progress(o.ud, c, tps);
        VKPT_LOGD("calibrate: %s concurrency %u: %.1f tokens/s", mi->name, c, tps);
        if (tps >= out->tokens_per_s * 1.05) {
            flat = 0;
        } else if (++flat >= 2) {
            if (tps > out->tokens_per_s) out->tokens_per_s = tps, out->concurrency = c;
            break;
        }
        if (tps > out->tokens_per_s) {
            out->tokens_per_s = tps;
            out->concurrency = c;
        }
    }
    out->seconds = (double)(vkpt_now_ns() - t_start) / 1e9;
    out->chunk_size = vkpt_chunk_round(out->tokens_per_s);
    vkpt_engine_destroy(r->engine);
    vkpt_embedder_destroy(r->embedder);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    vkpt_free(r);
    vkpt_free(prompt);
    if (!err && out->tokens_per_s <= 0)
        err = vkpt_fail(VKPT_EIO, "calibration measured no throughput (levels of %.1f s)", secs);
    return err;
}
