/* Provisioning arithmetic (include/vkpt/provision.h): chunk rounding, the
 * band checks behind 400 INVALID_PARAMETER_VALUE, the token bucket behind
 * 429 + Retry-After, the autoscaler's decisions; calibration runs of
 * stories260K and of a small BERT encoder on the test device; and
 * embedders sharing a device with an engine under one arbiter, by weight. */
#define _GNU_SOURCE
#include "vk_fixture.h"

#include "embed_models.h"
#include "vkpt/embed.h"
#include "vkpt/model.h"
#include "vkpt/provision.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define SEC 1000000000ull

static void provision_chunk_rounds_down_to_two_figures(void **st)
{
    assert_int_equal(vkpt_chunk_round(1234.5), 1200);
    assert_int_equal(vkpt_chunk_round(987.6), 980);
    assert_int_equal(vkpt_chunk_round(97.6), 97);
    assert_int_equal(vkpt_chunk_round(9.99), 9);
    assert_int_equal(vkpt_chunk_round(100000.5), 100000);
    assert_int_equal(vkpt_chunk_round(0.4), 1);
    assert_int_equal(vkpt_chunk_round(-3), 1);
    for (double x = 1; x < 1e7; x *= 1.37) {
        uint64_t c = vkpt_chunk_round(x);
        assert_true((double)c <= x);
        assert_true((double)c > x * 0.9 - 1); /* two figures: never more than ~10% below */
    }
}

static void provision_band_must_be_whole_chunks(void **st)
{
    char msg[400];
    assert_int_equal(vkpt_provision_check(980, 1960, 2940, false, msg, sizeof msg), 0);
    assert_int_equal(vkpt_provision_check(980, 0, 980, true, msg, sizeof msg), 0);
    assert_int_equal(vkpt_provision_check(980, 1000, 2940, false, msg, sizeof msg), VKPT_EINVAL);
    assert_non_null(strstr(msg, "min_provisioned_throughput 1000"));
    assert_non_null(strstr(msg, "980, 1960, 2940"));
    assert_int_equal(vkpt_provision_check(980, 980, 2000, false, msg, sizeof msg), VKPT_EINVAL);
    assert_non_null(strstr(msg, "max_provisioned_throughput 2000"));
    assert_int_equal(vkpt_provision_check(980, 0, 980, false, msg, sizeof msg), VKPT_EINVAL);
    assert_non_null(strstr(msg, "scale_to_zero_enabled"));
    assert_int_equal(vkpt_provision_check(980, 0, 0, true, msg, sizeof msg), VKPT_EINVAL);
    assert_int_equal(vkpt_provision_check(980, 2940, 1960, false, msg, sizeof msg), VKPT_EINVAL);
    assert_non_null(strstr(msg, "above"));
    assert_int_equal(vkpt_provision_check(980, -980, 980, true, msg, sizeof msg), VKPT_EINVAL);
    assert_int_equal(vkpt_provision_check(0, 0, 980, true, msg, sizeof msg), VKPT_EINVAL);
}

static void provision_bucket_admits_while_positive_and_says_when(void **st)
{
    vkpt_bucket b;
    uint64_t t = 10 * SEC;
    vkpt_bucket_init(&b, 100, 1.0, t); /* 100 tokens/s, 1 s of burst */
    double wait = -1;
    assert_true(vkpt_bucket_take(&b, 63, t, &wait));
    assert_true(vkpt_bucket_take(&b, 63, t, &wait)); /* 37 left: admitted, 26 in debt */
    assert_false(vkpt_bucket_take(&b, 63, t, &wait));
    assert_true(wait > 0.25 && wait < 0.27); /* 26 tokens at 100/s */
    assert_false(vkpt_bucket_take(&b, 63, t + SEC / 5, &wait));
    assert_true(wait > 0.05 && wait < 0.07);
    assert_true(vkpt_bucket_take(&b, 500, t + SEC * 3 / 10, &wait)); /* bigger than the burst */
    assert_false(vkpt_bucket_take(&b, 1, t + SEC, &wait));
    assert_true(wait > 4.25 && wait < 4.27); /* -26 + 30 - 500 + 70 = -426 */
    /* unused tokens come back, never above the burst */
    vkpt_bucket_refund(&b, 10000, t + SEC);
    assert_true(vkpt_bucket_level(&b, t + SEC) == 100);
    assert_true(vkpt_bucket_level(&b, t + 100 * SEC) == 100);
    /* over a long run the rate is what passes: 40 tokens every 0.1 s asked, 100/s granted */
    vkpt_bucket_init(&b, 100, 1.0, 0);
    double passed = 0;
    for (int i = 1; i <= 1000; i++)
        if (vkpt_bucket_take(&b, 40, (uint64_t)i * SEC / 10, &wait)) passed += 40;
    assert_true(passed >= 100 * 100 - 40 && passed <= 100 * 100 + 140);
    /* a rate change keeps the level within the new burst */
    vkpt_bucket_set_rate(&b, 10, 1.0, 200 * SEC);
    assert_true(vkpt_bucket_level(&b, 200 * SEC) <= 10);
}

static vkpt_scale_out decide(uint32_t n, uint32_t lo, uint32_t hi, bool stz, double demand,
                             uint32_t waiting, uint32_t saturated, double below, double idle)
{
    vkpt_scale_in in = {.replicas = n,
                        .min_replicas = lo,
                        .max_replicas = hi,
                        .scale_to_zero = stz,
                        .demand_tps = demand,
                        .chunk_tps = 100,
                        .waiting = waiting,
                        .saturated = saturated,
                        .below_s = below,
                        .idle_s = idle,
                        .scale_down_delay_s = 60,
                        .scale_to_zero_delay_s = 300};
    vkpt_scale_out out;
    vkpt_autoscale_decide(&in, &out);
    return out;
}

static void provision_autoscaler_stays_in_the_band(void **st)
{
    vkpt_scale_out o;
    o = decide(0, 2, 3, false, 0, 0, 0, 0, 0);
    assert_int_equal(o.target, 2);
    assert_string_equal(o.reason, "min");
    o = decide(2, 2, 3, false, 250, 0, 0, 0, 0); /* 250 tokens/s needs 3 chunks of 100 */
    assert_int_equal(o.target, 3);
    assert_string_equal(o.reason, "demand");
    o = decide(3, 2, 3, false, 900, 0, 3, 0, 0); /* never above max */
    assert_int_equal(o.target, 3);
    o = decide(5, 2, 3, false, 0, 0, 0, 0, 0);
    assert_int_equal(o.target, 3);
    assert_string_equal(o.reason, "max");
    o = decide(2, 1, 4, false, 150, 0, 2, 0, 0); /* every batch full: one more */
    assert_int_equal(o.target, 3);
    assert_string_equal(o.reason, "saturated");
    /* down one at a time, after the delay, never below min */
    o = decide(3, 1, 4, false, 50, 0, 0, 59, 0);
    assert_int_equal(o.target, 3);
    o = decide(3, 1, 4, false, 50, 0, 0, 61, 0);
    assert_int_equal(o.target, 2);
    assert_string_equal(o.reason, "low_demand");
    o = decide(2, 2, 4, false, 0, 0, 0, 1000, 1000);
    assert_int_equal(o.target, 2);
    /* scale to zero: only when enabled (min 0), idle long enough */
    o = decide(1, 0, 2, true, 0, 0, 0, 1000, 299);
    assert_int_equal(o.target, 1);
    o = decide(1, 0, 2, true, 0, 0, 0, 1000, 301);
    assert_int_equal(o.target, 0);
    assert_string_equal(o.reason, "idle");
    o = decide(1, 0, 2, false, 0, 0, 0, 1000, 100000);
    assert_int_equal(o.target, 1);
    /* at zero only a waiting request brings a replica (no flapping on decaying demand) */
    o = decide(0, 0, 2, true, 3, 0, 0, 0, 400);
    assert_int_equal(o.target, 0);
    o = decide(0, 0, 2, true, 0, 1, 0, 0, 0);
    assert_int_equal(o.target, 1);
    assert_string_equal(o.reason, "cold_start");
}

/* ---- calibration on the device ------------------------------------------------------------- */

static void calib_progress(void *ud, uint32_t c, double tps)
{
    int *n = ud;
    (*n)++;
    fprintf(stderr, "# calibrate: concurrency %u: %.1f tokens/s\n", c, tps);
}

static void provision_calibration_measures_a_replica(void **state)
{
    vkpt_model *m = NULL;
    vkpt_model_opts mo = VKPT_MODEL_OPTS_DEFAULT;
    mo.progress = false;
    assert_int_equal(vkpt_model_load(vkpt_test_dev(state),
                                     VKPT_SOURCE_DIR "/models/stories260K/stories260K.gguf", &mo,
                                     &m),
                     0);
    int calls = 0;
    vkpt_calib_opts co = {.n_ctx = 96,
                          .max_concurrency = 8,
                          .level_seconds = 0.6,
                          .progress = calib_progress,
                          .ud = &calls};
    vkpt_calib_result r;
    assert_int_equal(vkpt_calibrate(m, &co, &r), 0);
    /* the documented workload, scaled to the context */
    assert_int_equal(r.input_tokens, 72);
    assert_int_equal(r.output_tokens, 12);
    assert_true(r.n_levels >= 2 && r.n_levels <= 4);
    assert_int_equal(calls, (int)r.n_levels);
    for (uint32_t i = 0; i < r.n_levels; i++) {
        assert_int_equal(r.levels[i].concurrency, 1u << i);
        assert_true(r.levels[i].tokens_per_s <= r.tokens_per_s);
    }
    assert_true(r.tokens_per_s > 10);
    assert_int_equal(r.chunk_size, vkpt_chunk_round(r.tokens_per_s));
    assert_true(r.seconds > 0.6 * 2);
    /* an impossible workload is refused before anything runs */
    co.input_tokens = 90;
    co.output_tokens = 10;
    assert_int_equal(vkpt_calibrate(m, &co, &r), VKPT_ERANGE);
    vkpt_model_destroy(m);
}

/* A small random BERT (2 layers, 128 wide, 256 positions, CLS pooling)
 * written as a Hugging Face folder and loaded; *dir is removed by the caller. */
static vkpt_model *load_bert(void **state, char *dir, size_t cap)
{
    embt_cfg c = {.arch = EMBT_BERT,
                  .vocab = 512,
                  .n_embd = 128,
                  .n_layer = 2,
                  .n_head = 4,
                  .n_ff = 256,
                  .n_pos = 256,
                  .n_types = 2,
                  .eps = 1e-12f,
                  .seed = 7};
    embt_model ref;
    assert_int_equal(embt_make(&c, &ref), 0);
    assert_non_null(embt_tmpdir(dir, cap, "prov"));
    assert_int_equal(embt_write_hf(&ref, dir, "cls", true), 0);
    embt_free(&ref);
    vkpt_model_opts mo = VKPT_MODEL_OPTS_DEFAULT;
    mo.progress = false;
    vkpt_model *m = NULL;
    assert_int_equal(vkpt_model_load(vkpt_test_dev(state), dir, &mo, &m), 0);
    return m;
}

/* The encoder workload: inputs of min(512, ctx) tokens, nothing generated,
 * rates in input tokens/s; the same stopping rule. */
static void provision_calibration_measures_an_encoder(void **state)
{
    char dir[256];
    vkpt_model *m = load_bert(state, dir, sizeof dir);
    int calls = 0;
    vkpt_calib_opts co = {
        .max_concurrency = 8, .level_seconds = 0.5, .progress = calib_progress, .ud = &calls};
    vkpt_calib_result r;
    assert_int_equal(vkpt_calibrate(m, &co, &r), 0);
    assert_true(r.encoder);
    assert_int_equal(r.n_ctx, 256); /* the position table */
    assert_int_equal(r.input_tokens, 256);
    assert_int_equal(r.output_tokens, 0);
    assert_true(r.n_levels >= 2 && r.n_levels <= 4);
    assert_int_equal(calls, (int)r.n_levels);
    for (uint32_t i = 0; i < r.n_levels; i++) {
        assert_int_equal(r.levels[i].concurrency, 1u << i);
        assert_true(r.levels[i].tokens_per_s <= r.tokens_per_s);
    }
    assert_true(r.tokens_per_s > 50);
    assert_int_equal(r.chunk_size, vkpt_chunk_round(r.tokens_per_s));
    /* a smaller context: min(512, ctx) follows it */
    co.n_ctx = 64;
    co.max_concurrency = 2;
    assert_int_equal(vkpt_calibrate(m, &co, &r), 0);
    assert_int_equal(r.input_tokens, 64);
    /* encoders generate nothing; inputs must fit */
    co.output_tokens = 4;
    assert_int_equal(vkpt_calibrate(m, &co, &r), VKPT_EINVAL);
    co.output_tokens = 0;
    co.input_tokens = 65;
    assert_int_equal(vkpt_calibrate(m, &co, &r), VKPT_ERANGE);
    vkpt_model_destroy(m);
    embt_rmtree(dir);
}

static void count_vector(const vkpt_embed_result *r, void *ud)
{
    (void)r;
    (void)ud;
}

static void count_event(const vkpt_gen_event *ev, void *ud)
{
    (void)ev;
    (void)ud;
}

/* Two embedders (weights 1 and 3) and an engine (weight 2) flooded on one
 * device under one arbiter process tokens in the ratio 1 : 3 : 2 (within
 * 10%) while all have work: an embedder's steps are turns like an engine's,
 * counted in input tokens. */
static void provision_embedders_share_device_by_weight(void **state)
{
    char dir[256];
    vkpt_model *bert = load_bert(state, dir, sizeof dir);
    vkpt_model *llm = NULL;
    vkpt_model_opts mo = VKPT_MODEL_OPTS_DEFAULT;
    mo.progress = false;
    assert_int_equal(vkpt_model_load(vkpt_test_dev(state),
                                     VKPT_SOURCE_DIR "/models/stories260K/stories260K.gguf", &mo,
                                     &llm),
                     0);
    vkpt_arbiter *arb;
    assert_int_equal(vkpt_arbiter_create(&arb), 0);
    static const double w[3] = {1, 3, 2}; /* embedder, embedder, engine */
    vkpt_embedder *emb[2];
    for (int i = 0; i < 2; i++) {
        /* steps of 4 inputs: many turns in the window */
        vkpt_embedder_opts bo = {
            .max_batch_tokens = 400, .batch_invariant = true, .arbiter = arb, .weight = w[i]};
        assert_int_equal(vkpt_embedder_create(bert, &bo, &emb[i]), 0);
    }
    vkpt_engine *eng;
    vkpt_engine_opts eo = {.n_ctx = 128,
                           .max_seqs = 16,
                           .kv_tokens = 16 * 128,
                           .arbiter = arb,
                           .weight = w[2],
                           .no_prefix_cache = true};
    assert_int_equal(vkpt_engine_create(llm, &eo, &eng), 0);
    /* work in proportion to the weight, so none runs dry early */
    enum { LEN = 100, PER_EMB = 80, PER_ENG = 130 };
    static int32_t in[LEN];
    for (int k = 0; k < LEN; k++) in[k] = 5 + (k * 37) % 500;
    static vkpt_embed_request *erq[2][3 * PER_EMB];
    int n_emb[2];
    for (int i = 0; i < 2; i++) {
        n_emb[i] = PER_EMB * (int)w[i];
        for (int k = 0; k < n_emb[i]; k++)
            assert_int_equal(
                vkpt_embedder_submit(emb[i], in, LEN, NULL, count_vector, NULL, &erq[i][k]), 0);
    }
    /* prompt-heavy requests: the engine's steps are mostly 512-token
     * prefills, so its host time between steps stays small against them */
    static vkpt_request *grq[PER_ENG];
    vkpt_gen_params gp = {.max_tokens = 4, .n = 1, .ignore_eos = true};
    for (int k = 0; k < PER_ENG; k++) {
        in[0] = 1 + k; /* distinct prompts (no prefix sharing) */
        assert_int_equal(vkpt_engine_submit(eng, in, LEN, &gp, count_event, NULL, &grq[k]), 0);
    }
    /* sample token counts until one member drains */
    enum { MAXS = 4000 };
    static double tok[MAXS][3];
    int ns = 0;
    for (; ns < MAXS; ns++) {
        usleep(50000);
        bool drained = false;
        for (int i = 0; i < 2; i++) {
            vkpt_embedder_stats st;
            vkpt_embedder_get_stats(emb[i], &st);
            tok[ns][i] = (double)st.tokens;
            if (st.requests_done == (uint64_t)n_emb[i]) drained = true;
        }
        vkpt_engine_stats es;
        vkpt_engine_get_stats(eng, &es);
        tok[ns][2] = (double)(es.prompt_tokens + es.generated_tokens);
        if (es.requests_done == PER_ENG) drained = true;
        if (drained) break;
    }
    assert_true(ns > 20);
    int a = ns / 5, b = ns * 4 / 5;
    double d[3];
    for (int i = 0; i < 3; i++) d[i] = tok[b][i] - tok[a][i];
    fprintf(stderr,
            "# arbiter: embedder, embedder, engine tokens in the window %.0f : %.0f : %.0f = 1 : "
            "%.3f : %.3f (%d samples)\n",
            d[0], d[1], d[2], d[1] / d[0], d[2] / d[0], ns);
    assert_true(fabs(d[1] / d[0] / 3 - 1) < 0.10);
    assert_true(fabs(d[2] / d[0] / 2 - 1) < 0.10);
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < n_emb[i]; k++) vkpt_embed_request_release(erq[i][k]);
        vkpt_embedder_destroy(emb[i]);
    }
    for (int k = 0; k < PER_ENG; k++) vkpt_request_release(grq[k]);
    vkpt_engine_destroy(eng);
    vkpt_arbiter_destroy(arb);
    vkpt_model_destroy(llm);
    vkpt_model_destroy(bert);
    embt_rmtree(dir);
}

#define T(fn) cmocka_unit_test_teardown(fn, vkpt_test_check_validation)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(provision_chunk_rounds_down_to_two_figures),
        cmocka_unit_test(provision_band_must_be_whole_chunks),
        cmocka_unit_test(provision_bucket_admits_while_positive_and_says_when),
        cmocka_unit_test(provision_autoscaler_stays_in_the_band),
        T(provision_calibration_measures_a_replica),
        T(provision_calibration_measures_an_encoder),
        T(provision_embedders_share_device_by_weight),
    };
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
