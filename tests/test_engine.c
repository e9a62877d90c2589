/* engine/sched: continuous batching on stories260K (lavapipe, validation on).
 *   - one greedy request reproduces llama2.c's tokens;
 *   - many concurrent greedy requests each equal the same request alone,
 *     also when the KV cache is so small that requests are preempted;
 *   - n choices share the prompt and are deterministic per seed;
 *   - cancel frees the KV blocks; bad requests fail at submit;
 *   - stop token ids end a choice with finish_reason stop. */
#define _GNU_SOURCE
#include "vk_fixture.h"

#include "vkpt/engine.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORIES VKPT_SOURCE_DIR "/models/stories260K/stories260K.gguf"

typedef struct collect {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int32_t toks[VKPT_MAX_CHOICES][512];
    uint32_t n[VKPT_MAX_CHOICES];
    vkpt_gen_event last;
    uint32_t n_top_seen;
} collect;

static void on_event(const vkpt_gen_event *ev, void *ud)
{
    collect *c = ud;
    pthread_mutex_lock(&c->lock);
    if (ev->type == VKPT_EV_TOKEN) {
        if (c->n[ev->choice] < 512) c->toks[ev->choice][c->n[ev->choice]++] = ev->token;
        if (ev->n_top) c->n_top_seen = ev->n_top;
    } else {
        c->last = *ev;
        c->done = true;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->lock);
}

static collect *collect_new(void)
{
    collect *c = calloc(1, sizeof *c);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    return c;
}

static void collect_wait(collect *c)
{
    pthread_mutex_lock(&c->lock);
    while (!c->done) pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
}

static void collect_free(collect *c)
{
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c);
}

static vkpt_model *g_model;

static int setup(void **state)
{
    if (vkpt_test_gpu_setup(state)) return -1;
    vkpt_model_opts o = VKPT_MODEL_OPTS_DEFAULT;
    o.progress = false;
    int err = vkpt_model_load(vkpt_test_dev(state), STORIES, &o, &g_model);
    if (err) fprintf(stderr, "load: %s\n", vkpt_errmsg(err));
    return err ? -1 : 0;
}

static int teardown(void **state)
{
    vkpt_model_destroy(g_model);
    return vkpt_test_gpu_teardown(state);
}

static vkpt_gen_params greedy_params(uint32_t max_tokens)
{
    vkpt_gen_params p;
    memset(&p, 0, sizeof p);
    p.sampling = (vkpt_sampling)VKPT_SAMPLING_DEFAULT;
    p.sampling.temperature = 0;
    p.max_tokens = max_tokens;
    p.n = 1;
    p.ignore_eos = true;
    return p;
}

static const int32_t k_prompt[] = {1, 403, 407, 261, 378}; /* BOS "Once upon a time" */

static void engine_greedy_matches_llama2c(void **state)
{
    (void)state;
    vkpt_engine *e;
    vkpt_engine_opts eo = {.n_ctx = 256, .max_seqs = 4, .batch_invariant = true};
    assert_int_equal(vkpt_engine_create(g_model, &eo, &e), 0);
    size_t size;
    char *ref =
        vkpt_test_read_file(VKPT_SOURCE_DIR "/models/stories260K/expected-greedy-ids.txt", &size);
    char *p = strstr(ref, "\nIDS ") + 5;
    int32_t want[200];
    for (int i = 0; i < 200; i++) want[i] = (int32_t)strtol(p, &p, 10);
    collect *c = collect_new();
    vkpt_gen_params gp = greedy_params(196);
    vkpt_request *rq;
    assert_int_equal(vkpt_engine_submit(e, k_prompt, 5, &gp, on_event, c, &rq), 0);
    collect_wait(c);
    assert_int_equal(c->last.finish[0], VKPT_FINISH_LENGTH);
    assert_int_equal(c->n[0], 196);
    assert_int_equal(c->last.completion_tokens, 196);
    assert_int_equal(c->last.prompt_tokens, 5);
    /* llama2.c's ids after the 4 forced prompt tokens */
    assert_memory_equal(c->toks[0], want + 4, 196 * sizeof(int32_t));
    vkpt_request_release(rq);
    collect_free(c);
    vkpt_engine_destroy(e);
    free(ref);
}

/* Distinct prompts: prefixes of a story, one token apart. */
static void make_prompt(int i, int32_t *out, uint32_t *n)
{
    static const int32_t story[] = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421,
                                    395, 317, 426, 338, 401, 396, 267, 337, 410, 408, 419, 292};
    *n = 2 + (uint32_t)(i % 20);
    memcpy(out, story, *n * sizeof *out);
}

/* Requests first .. first+n_req-1 submitted at once; waits for all. */
static void run_concurrent(vkpt_engine *e, int first, int n_req, uint32_t max_tokens,
                           int32_t (*outs)[64], uint32_t *lens)
{
    collect *c[64];
    vkpt_request *rq[64];
    for (int i = 0; i < n_req; i++) {
        int32_t pr[32];
        uint32_t np;
        make_prompt(first + i, pr, &np);
        c[i] = collect_new();
        vkpt_gen_params gp = greedy_params(max_tokens);
        int err = vkpt_engine_submit(e, pr, np, &gp, on_event, c[i], &rq[i]);
        if (err) fail_msg("submit %d: %s", i, vkpt_errmsg(err));
    }
    for (int i = 0; i < n_req; i++) {
        collect_wait(c[i]);
        assert_int_equal(c[i]->last.err, 0);
        lens[i] = c[i]->n[0];
        memcpy(outs[i], c[i]->toks[0], lens[i] * sizeof(int32_t));
        vkpt_request_release(rq[i]);
        collect_free(c[i]);
    }
}

static void engine_concurrent_requests_equal_alone(void **state)
{
    (void)state;
    enum { N = 24, T = 40 };
    static int32_t alone[N][64], together[N][64];
    uint32_t la[N], lt[N];
    vkpt_engine *e;
    vkpt_engine_opts eo = {
        .n_ctx = 128, .max_seqs = 32, .max_step_tokens = 64, .batch_invariant = true};
    assert_int_equal(vkpt_engine_create(g_model, &eo, &e), 0);
    for (int i = 0; i < N; i++) run_concurrent(e, i, 1, T, &alone[i], &la[i]);
    run_concurrent(e, 0, N, T, together, lt);
    for (int i = 0; i < N; i++) {
        assert_int_equal(la[i], T);
        assert_int_equal(lt[i], T);
        if (memcmp(alone[i], together[i], T * sizeof(int32_t))) {
            for (int k = 0; k < T; k++) fprintf(stderr, "%d/%d ", alone[i][k], together[i][k]);
            fail_msg("request %d differs when batched", i);
        }
    }
    vkpt_engine_stats st;
    vkpt_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    vkpt_engine_destroy(e);

    /* a cache for ~6 requests: the rest wait or get preempted and recomputed */
    vkpt_engine_opts small = {.n_ctx = 128,
                              .max_seqs = 32,
                              .max_step_tokens = 64,
                              .kv_tokens = 6 * 64,
                              .batch_invariant = true};
    assert_int_equal(vkpt_engine_create(g_model, &small, &e), 0);
    run_concurrent(e, 0, N, T, together, lt);
    vkpt_engine_get_stats(e, &st);
    fprintf(stderr, "# small cache: %llu preemptions over %llu steps\n",
            (unsigned long long)st.preemptions, (unsigned long long)st.steps);
    for (int i = 0; i < N; i++)
        if (lt[i] != T || memcmp(alone[i], together[i], T * sizeof(int32_t)))
            fail_msg("request %d differs under cache pressure", i);
    vkpt_engine_destroy(e);
}

static void engine_choices_share_prompt_and_follow_seed(void **state)
{
    (void)state;
    vkpt_engine *e;
    vkpt_engine_opts eo = {.n_ctx = 128, .max_seqs = 8, .batch_invariant = true};
    assert_int_equal(vkpt_engine_create(g_model, &eo, &e), 0);
    vkpt_gen_params gp = greedy_params(30);
    gp.n = 3;
    gp.sampling.temperature = 1.0f;
    gp.sampling.seed = 1234;
    gp.logprobs = true;
    gp.top_logprobs = 5;
    collect *a = collect_new(), *b = collect_new();
    vkpt_request *ra, *rb;
    assert_int_equal(vkpt_engine_submit(e, k_prompt, 5, &gp, on_event, a, &ra), 0);
    collect_wait(a);
    assert_int_equal(vkpt_engine_submit(e, k_prompt, 5, &gp, on_event, b, &rb), 0);
    collect_wait(b);
    for (int c = 0; c < 3; c++) {
        assert_int_equal(a->n[c], 30);
        assert_memory_equal(a->toks[c], b->toks[c],
                            30 * sizeof(int32_t)); /* same seed, same output */
    }
    /* independent streams: the choices are not all the same */
    assert_true(memcmp(a->toks[0], a->toks[1], 30 * 4) || memcmp(a->toks[0], a->toks[2], 30 * 4));
    assert_int_equal(a->n_top_seen, 5);
    assert_int_equal(a->last.completion_tokens, 90);
    vkpt_request_release(ra);
    vkpt_request_release(rb);
    collect_free(a);
    collect_free(b);
    vkpt_engine_stats st;
    vkpt_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    vkpt_engine_destroy(e);
}

static void engine_cancel_frees_blocks(void **state)
{
    (void)state;
    vkpt_engine *e;
    vkpt_engine_opts eo = {.n_ctx = 256, .max_seqs = 4};
    assert_int_equal(vkpt_engine_create(g_model, &eo, &e), 0);
    collect *c = collect_new();
    vkpt_gen_params gp = greedy_params(200);
    vkpt_request *rq;
    assert_int_equal(vkpt_engine_submit(e, k_prompt, 5, &gp, on_event, c, &rq), 0);
    for (int i = 0; i < 2000; i++) { /* wait for some tokens */
        pthread_mutex_lock(&c->lock);
        uint32_t n = c->n[0];
        pthread_mutex_unlock(&c->lock);
        if (n >= 5) break;
        usleep(1000);
    }
    vkpt_engine_stats st;
    vkpt_engine_get_stats(e, &st);
    assert_true(st.kv_blocks_used > 0);
    vkpt_request_cancel(rq);
    collect_wait(c);
    assert_int_equal(c->last.finish[0], VKPT_FINISH_CANCELED);
    assert_true(c->n[0] < 200);
    vkpt_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.requests_canceled, 1);
    vkpt_request_release(rq);
    collect_free(c);
    vkpt_engine_destroy(e);
}

static void engine_refuses_bad_requests(void **state)
{
    (void)state;
    vkpt_engine *e;
    vkpt_engine_opts eo = {.n_ctx = 64, .max_seqs = 2};
    assert_int_equal(vkpt_engine_create(g_model, &eo, &e), 0);
    vkpt_request *rq = NULL;
    vkpt_gen_params gp = greedy_params(60);
    assert_int_equal(vkpt_engine_submit(e, k_prompt, 5, &gp, on_event, NULL, &rq), VKPT_ERANGE);
    assert_non_null(strstr(vkpt_errmsg(VKPT_ERANGE), "exceeds the context"));
    gp = greedy_params(10);
    gp.n = 6;
    assert_int_equal(vkpt_engine_submit(e, k_prompt, 5, &gp, on_event, NULL, &rq), VKPT_EINVAL);
    gp.n = 1;
    int32_t bad[] = {1, 99999};
    assert_int_equal(vkpt_engine_submit(e, bad, 2, &gp, on_event, NULL, &rq), VKPT_EINVAL);
    assert_int_equal(vkpt_engine_submit(e, k_prompt, 0, &gp, on_event, NULL, &rq), VKPT_EINVAL);
    assert_null(rq);
    vkpt_engine_destroy(e);
}

static void engine_stop_ids_finish_with_stop(void **state)
{
    (void)state;
    vkpt_engine *e;
    vkpt_engine_opts eo = {.n_ctx = 256, .max_seqs = 2};
    assert_int_equal(vkpt_engine_create(g_model, &eo, &e), 0);
    collect *c = collect_new();
    vkpt_gen_params gp = greedy_params(100);
    gp.stop_ids[0] = 298; /* the 6th generated token of the greedy story */
    gp.n_stop_ids = 1;
    vkpt_request *rq;
    assert_int_equal(vkpt_engine_submit(e, k_prompt, 5, &gp, on_event, c, &rq), 0);
    collect_wait(c);
    assert_int_equal(c->last.finish[0], VKPT_FINISH_STOP);
    assert_int_equal(c->n[0], 5); /* the stop token itself is not emitted */
    vkpt_request_release(rq);
    collect_free(c);
    vkpt_engine_destroy(e);
}

/* Stopping one choice leaves the others running to their length. */
static void engine_cancel_one_choice(void **state)
{
    (void)state;
    vkpt_engine *e;
    vkpt_engine_opts eo = {.n_ctx = 256, .max_seqs = 4};
    assert_int_equal(vkpt_engine_create(g_model, &eo, &e), 0);
    assert_int_equal(vkpt_engine_n_ctx(e), 256);
    collect *c = collect_new();
    vkpt_gen_params gp = greedy_params(120);
    gp.n = 2;
    vkpt_request *rq;
    assert_int_equal(vkpt_engine_submit(e, k_prompt, 5, &gp, on_event, c, &rq), 0);
    for (int i = 0; i < 4000; i++) {
        pthread_mutex_lock(&c->lock);
        uint32_t n = c->n[1];
        pthread_mutex_unlock(&c->lock);
        if (n >= 3) break;
        usleep(1000);
    }
    vkpt_request_cancel_choice(rq, 1);
    collect_wait(c);
    assert_int_equal(c->last.finish[0], VKPT_FINISH_LENGTH);
    assert_int_equal(c->n[0], 120);
    assert_int_equal(c->last.finish[1], VKPT_FINISH_STOP);
    assert_true(c->n[1] < 120);
    vkpt_engine_stats st;
    vkpt_engine_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    vkpt_request_release(rq);
    collect_free(c);
    vkpt_engine_destroy(e);
}

/* A repeated prompt reuses its full blocks from the prefix cache and gives
 * the same output; a prompt sharing only a prefix reuses that much. */
static void engine_prefix_cache_reuses_prompt_blocks(void **state)
{
    (void)state;
    vkpt_engine *e;
    vkpt_engine_opts eo = {.n_ctx = 256, .max_seqs = 4, .batch_invariant = true};
    assert_int_equal(vkpt_engine_create(g_model, &eo, &e), 0);
    size_t size;
    char *ref =
        vkpt_test_read_file(VKPT_SOURCE_DIR "/models/stories260K/expected-greedy-ids.txt", &size);
    char *p = strstr(ref, "\nIDS ") + 5;
    int32_t prompt[41];
    prompt[0] = 1;
    for (int i = 1; i < 41; i++)
        prompt[i] = (int32_t)strtol(p, &p, 10); /* 41 tokens of the story */
    collect *a = collect_new(), *b = collect_new(), *c = collect_new();
    vkpt_gen_params gp = greedy_params(20);
    vkpt_request *ra, *rb, *rc;
    assert_int_equal(vkpt_engine_submit(e, prompt, 41, &gp, on_event, a, &ra), 0);
    collect_wait(a);
    assert_int_equal(a->last.cached_tokens, 0);
    assert_int_equal(vkpt_engine_submit(e, prompt, 41, &gp, on_event, b, &rb), 0);
    collect_wait(b);
    assert_int_equal(b->last.cached_tokens,
                     32); /* two whole blocks of the 40 before the last token */
    assert_memory_equal(a->toks[0], b->toks[0], 20 * sizeof(int32_t));
    int32_t other[41];
    memcpy(other, prompt, sizeof other);
    other[20] = (other[20] + 1) % 500; /* differs inside the second block */
    assert_int_equal(vkpt_engine_submit(e, other, 41, &gp, on_event, c, &rc), 0);
    collect_wait(c);
    assert_int_equal(c->last.cached_tokens, 16);
    vkpt_engine_stats st;
    vkpt_engine_get_stats(e, &st);
    assert_true(st.prefix_hits >= 3);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_true(st.kv_blocks_cached >= 2);
    vkpt_request_release(ra);
    vkpt_request_release(rb);
    vkpt_request_release(rc);
    collect_free(a);
    collect_free(b);
    collect_free(c);
    vkpt_engine_destroy(e);
    free(ref);
}

static void on_event_counting(const vkpt_gen_event *ev, void *ud)
{
    (void)ev;
    (void)ud;
}

/* Three engines flooded on one device under an arbiter with weights 1:2:4
 * process tokens in that ratio (within 10%) while all three have work. */
static void engine_arbiter_shares_device_by_weight(void **state)
{
    (void)state;
    static const double w[3] = {1, 2, 4};
    vkpt_arbiter *arb;
    assert_int_equal(vkpt_arbiter_create(&arb), 0);
    vkpt_engine *e[3];
    enum { PER = 12 };
    vkpt_request *rq[3][4 * PER];
    int n_req[3];
    for (int i = 0; i < 3; i++) {
        /* batches big enough that device time dominates each engine's host
         * time: a work-conserving share cannot exceed what an engine can
         * consume alone */
        vkpt_engine_opts eo = {
            .n_ctx = 128, .max_seqs = 48, .kv_tokens = 48 * 128, .arbiter = arb, .weight = w[i]};
        assert_int_equal(vkpt_engine_create(g_model, &eo, &e[i]), 0);
    }
    /* work in proportion to the weight, so no engine runs dry early */
    for (int i = 0; i < 3; i++) {
        n_req[i] = PER * (int)w[i];
        for (int k = 0; k < n_req[i]; k++) {
            vkpt_gen_params gp = greedy_params(110);
            assert_int_equal(
                vkpt_engine_submit(e[i], k_prompt, 5, &gp, on_event_counting, NULL, &rq[i][k]), 0);
        }
    }
    /* sample token counts until the first engine drains */
    enum { MAXS = 4000 };
    static double tok[MAXS][3];
    int ns = 0;
    for (; ns < MAXS; ns++) {
        usleep(50000);
        bool drained = false;
        for (int i = 0; i < 3; i++) {
            vkpt_engine_stats st;
            vkpt_engine_get_stats(e[i], &st);
            tok[ns][i] = (double)(st.prompt_tokens + st.generated_tokens);
            if (st.requests_done == (uint64_t)n_req[i]) drained = true;
        }
        if (drained) break;
    }
    assert_true(ns > 20);
    /* the middle of the run: after start-up, before anyone drains */
    int a = ns / 5, b = ns * 4 / 5;
    double d[3];
    for (int i = 0; i < 3; i++) d[i] = tok[b][i] - tok[a][i];
    fprintf(stderr, "# arbiter: tokens in the window %.0f : %.0f : %.0f = 1 : %.3f : %.3f\n", d[0],
            d[1], d[2], d[1] / d[0], d[2] / d[0]);
    assert_true(fabs(d[1] / d[0] / 2 - 1) < 0.10);
    assert_true(fabs(d[2] / d[0] / 4 - 1) < 0.10);
    for (int i = 0; i < 3; i++) {
        for (int k = 0; k < n_req[i]; k++) vkpt_request_release(rq[i][k]);
        vkpt_engine_destroy(e[i]);
    }
    vkpt_arbiter_destroy(arb);
}

#define T(fn) cmocka_unit_test_teardown(fn, vkpt_test_check_validation)
int main(void)
{
    const struct CMUnitTest tests[] = {
        T(engine_greedy_matches_llama2c),
        T(engine_concurrent_requests_equal_alone),
        T(engine_choices_share_prompt_and_follow_seed),
        T(engine_cancel_frees_blocks),
        T(engine_refuses_bad_requests),
        T(engine_stop_ids_finish_with_stop),
        T(engine_prefix_cache_reuses_prompt_blocks),
        T(engine_cancel_one_choice),
        T(engine_arbiter_shares_device_by_weight),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
