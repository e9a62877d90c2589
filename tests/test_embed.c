/* Encoder models and the embedder, on the device (lavapipe in CI,
 * validation on):
 *   - the bert fixture (BertModel, transformers 5.17 f32): CLS, mean and
 *     their L2-normalised forms within 1e-4 of transformers' golden vectors,
 *     each case alone and all packed into one step;
 *   - GTE v1.5 ("new": RoPE with NTK scaling, fused qkv, GeGLU) and
 *     nomic-bert (RoPE, Wqkv without biases, SwiGLU) random models, F32 and
 *     F16, against the host reference in embed_models.c (no torch here to
 *     make transformers vectors for them: the reference is the oracle, and
 *     the reference itself is checked against transformers on BERT);
 *   - the same weights as a Hugging Face folder and as a llama.cpp GGUF give
 *     the same vectors; pooling defaults come from modules.json /
 *     1_Pooling/config.json and GGUF <arch>.pooling_type;
 *   - the embedder: requests from several threads batch into fewer steps and
 *     get exactly the vectors they get alone; bad inputs fail at submit;
 *     cancel and release-before-callback are clean. */
#define _GNU_SOURCE
#include "embed_models.h"
#include "encoder.h"
#include "vk_fixture.h"

#include "vkpt/embed.h"
#include "vkpt/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HF          VKPT_SOURCE_DIR "/tests/fixtures/hf"
#define VOCAB       VKPT_SOURCE_DIR "/../shared/models/ggml-vocab/ggml-vocab-bert-bge.gguf"
#define VOCAB_LOCAL VKPT_SOURCE_DIR "/tests/fixtures/ggml-vocab/ggml-vocab-bert-bge.gguf"

/* The criterion: max |got - want| / max |want| per vector. */
static const double EMB_REL = 1e-4;

static double rel_err(const float *got, const float *want, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (e > d || isnan(e)) d = isnan(e) ? INFINITY : e;
        if (fabs(want[i]) > m) m = fabs(want[i]);
    }
    return m > 0 ? d / m : d;
}

static const char *bge_vocab(void)
{
    return access(VOCAB, R_OK) == 0 ? VOCAB : VOCAB_LOCAL;
}

static vkpt_model *load(void **state, const char *path)
{
    vkpt_model_opts o = VKPT_MODEL_OPTS_DEFAULT;
    o.progress = false;
    vkpt_model *m = NULL;
    int err = vkpt_model_load(vkpt_test_dev(state), path, &o, &m);
    if (err) fail_msg("loading %s: %s", path, vkpt_errmsg(err));
    return m;
}

static vkpt_encoder *encoder(vkpt_model *m, uint32_t max_tokens)
{
    vkpt_encoder_opts eo = {.max_tokens = max_tokens, .max_seqs = 16};
    vkpt_encoder *e = NULL;
    int err = vkpt_encoder_create(m, &eo, &e);
    if (err) fail_msg("encoder: %s", vkpt_errmsg(err));
    return e;
}

/* ---- the bert fixture against transformers ------------------------------------------------ */

typedef struct golden {
    int32_t ids[128];
    uint32_t n;
    float vec[4][64]; /* cls, mean, cls_l2, mean_l2 */
} golden;

static uint32_t read_golden(golden *g, uint32_t cap)
{
    size_t size;
    char *text = vkpt_test_read_file(HF "/bert/golden.json", &size);
    assert_non_null(text);
    cJSON *root = cJSON_Parse(text);
    free(text);
    assert_non_null(root);
    cJSON *cases = cJSON_GetObjectItem(root, "cases"), *c;
    static const char *keys[4] = {"cls", "mean", "cls_l2", "mean_l2"};
    uint32_t n = 0;
    cJSON_ArrayForEach(c, cases)
    {
        assert_true(n < cap);
        golden *gc = &g[n++];
        cJSON *ids = cJSON_GetObjectItem(c, "input_ids"), *v;
        gc->n = 0;
        cJSON_ArrayForEach(v, ids) gc->ids[gc->n++] = (int32_t)v->valuedouble;
        for (int k = 0; k < 4; k++) {
            int i = 0;
            cJSON_ArrayForEach(v, cJSON_GetObjectItem(c, keys[k])) gc->vec[k][i++] =
                (float)v->valuedouble;
            assert_int_equal(i, 64);
        }
    }
    cJSON_Delete(root);
    return n;
}

/* The fixture folder has no tokenizer (the loader wants one): link its files
 * into a temporary folder beside a WordPiece tokenizer.json. */
static void bert_fixture_dir(char *dir, size_t cap)
{
    assert_non_null(embt_tmpdir(dir, cap, "bert"));
    char a[4200], b[4200];
    const char *files[2] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/bert/%s", HF, files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        assert_int_equal(symlink(a, b), 0);
    }
    assert_int_equal(embt_write_tokenizer(dir, 512), 0);
}

static void embed_bert_fixture_matches_transformers(void **state)
{
    golden g[8];
    uint32_t n_cases = read_golden(g, 8);
    assert_int_equal(n_cases, 3);
    char dir[256];
    bert_fixture_dir(dir, sizeof dir);
    vkpt_model *m = load(state, dir);
    const vkpt_model_info *mi = vkpt_model_get_info(m);
    assert_false(mi->causal);
    assert_string_equal(mi->arch, "bert");
    vkpt_encoder *e = encoder(m, 512);
    static const uint32_t modes[4] = {VKPT_POOL_KIND_CLS, VKPT_POOL_KIND_MEAN,
                                      VKPT_POOL_KIND_CLS | VKPT_POOL_NORMALIZE,
                                      VKPT_POOL_KIND_MEAN | VKPT_POOL_NORMALIZE};
    static const char *names[4] = {"cls", "mean", "cls_l2", "mean_l2"};
    /* alone: every case, every pooling */
    float alone[3][4][64];
    double worst[4] = {0};
    for (uint32_t c = 0; c < n_cases; c++) {
        vkpt_enc_seq s[4];
        for (int k = 0; k < 4; k++) s[k] = (vkpt_enc_seq){g[c].ids, g[c].n, modes[k], 64};
        assert_int_equal(vkpt_encoder_step(e, s, 4), 0);
        for (int k = 0; k < 4; k++) {
            memcpy(alone[c][k], vkpt_encoder_vec(e, k), sizeof alone[c][k]);
            double err = rel_err(alone[c][k], g[c].vec[k], 64);
            if (err > worst[k]) worst[k] = err;
            if (err > EMB_REL)
                fail_msg("case %u (%u tokens) %s: error %.3g > %g", c, g[c].n, names[k], err,
                         EMB_REL);
        }
    }
    printf("# bert fixture vs transformers (max |d| / max |ref|): cls %.2e  mean %.2e  cls_l2 "
           "%.2e  mean_l2 %.2e\n",
           worst[0], worst[1], worst[2], worst[3]);
    /* packed: the three cases in one step give the same bits as alone */
    vkpt_enc_seq s[12];
    for (uint32_t c = 0; c < n_cases; c++)
        for (int k = 0; k < 4; k++) s[c * 4 + k] = (vkpt_enc_seq){g[c].ids, g[c].n, modes[k], 64};
    assert_int_equal(vkpt_encoder_step(e, s, 12), 0);
    for (uint32_t c = 0; c < n_cases; c++)
        for (int k = 0; k < 4; k++)
            assert_memory_equal(vkpt_encoder_vec(e, c * 4 + k), alone[c][k], 64 * 4);
    vkpt_encoder_destroy(e);
    vkpt_model_destroy(m);
    embt_rmtree(dir);
}

/* The host reference on the fixture's own weights against transformers:
 * the oracle the GTE and nomic tests rely on. */
static void embed_reference_matches_transformers_on_bert(void **state)
{
    (void)state;
    golden g[8];
    uint32_t n_cases = read_golden(g, 8);
    embt_model m;
    assert_int_equal(embt_load_bert(HF "/bert", &m), 0);
    for (uint32_t c = 0; c < n_cases; c++) {
        float *h = malloc((size_t)g[c].n * 64 * 4), cls[64], mean[64] = {0};
        assert_int_equal(embt_forward(&m, g[c].ids, g[c].n, h), 0);
        memcpy(cls, h, sizeof cls);
        for (uint32_t t = 0; t < g[c].n; t++)
            for (int i = 0; i < 64; i++) mean[i] += h[t * 64 + i] / g[c].n;
        double e1 = rel_err(cls, g[c].vec[0], 64), e2 = rel_err(mean, g[c].vec[1], 64);
        if (e1 > 2e-5 || e2 > 2e-5) fail_msg("case %u: reference off by %.3g / %.3g", c, e1, e2);
        free(h);
    }
    embt_free(&m);
}

/* ---- random GTE / nomic / BERT models against the reference ---------------------------------- */

static void random_ids(vkpt_test_rng *r, int32_t *ids, uint32_t n, uint32_t vocab)
{
    for (uint32_t i = 0; i < n; i++) ids[i] = (int32_t)(5 + vkpt_test_rng_u64(r) % (vocab - 5));
    ids[0] = 1;
    if (n > 1) ids[n - 1] = 2;
}

/* Run sequences of these lengths packed in one step; compare every row's
 * hidden state and the CLS / mean / last vectors with the reference. */
static void check_against_reference(vkpt_model *vm, const embt_model *ref, uint64_t seed,
                                    const char *what)
{
    static const uint32_t lens[] = {1, 5, 70, 130, 3};
    const uint32_t ns = sizeof lens / sizeof lens[0];
    uint32_t E = ref->c.n_embd, total = 0;
    for (uint32_t i = 0; i < ns; i++) total += lens[i];
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, seed);
    int32_t *ids[5];
    vkpt_enc_seq s[15];
    for (uint32_t i = 0; i < ns; i++) {
        ids[i] = malloc(lens[i] * 4);
        random_ids(&r, ids[i], lens[i], ref->c.vocab);
        s[i] = (vkpt_enc_seq){ids[i], lens[i], VKPT_POOL_KIND_CLS, E};
        s[ns + i] = (vkpt_enc_seq){ids[i], lens[i], VKPT_POOL_KIND_MEAN | VKPT_POOL_NORMALIZE, E};
        s[2 * ns + i] = (vkpt_enc_seq){ids[i], lens[i], VKPT_POOL_KIND_LAST, E};
    }
    vkpt_encoder *e = encoder(vm, 1024);
    assert_int_equal(vkpt_encoder_step(e, s, 3 * ns), 0);
    float *hid = malloc((size_t)3 * total * E * 4), *want = malloc((size_t)130 * E * 4);
    assert_int_equal(vkpt_encoder_hidden(e, 0, 3 * total, hid), 0);
    double worst_h = 0, worst_v = 0;
    uint32_t row = 0;
    for (uint32_t i = 0; i < ns; i++) {
        assert_int_equal(embt_forward(ref, ids[i], lens[i], want), 0);
        for (uint32_t t = 0; t < lens[i]; t++) {
            double err = rel_err(hid + (size_t)(row + t) * E, want + (size_t)t * E, E);
            if (err > worst_h) worst_h = err;
            if (err > EMB_REL)
                fail_msg("%s: sequence %u (%u tokens) row %u: error %.3g", what, i, lens[i], t,
                         err);
        }
        row += lens[i];
        /* pooled vectors from the reference's rows */
        float cls[1024], mean[1024], last[1024];
        double ss = 0;
        for (uint32_t k = 0; k < E; k++) {
            double acc = 0;
            for (uint32_t t = 0; t < lens[i]; t++) acc += want[(size_t)t * E + k];
            mean[k] = (float)(acc / lens[i]);
            ss += (double)mean[k] * mean[k];
            cls[k] = want[k];
            last[k] = want[(size_t)(lens[i] - 1) * E + k];
        }
        for (uint32_t k = 0; k < E; k++) mean[k] = (float)(mean[k] / sqrt(ss));
        double e1 = rel_err(vkpt_encoder_vec(e, i), cls, E);
        double e2 = rel_err(vkpt_encoder_vec(e, ns + i), mean, E);
        double e3 = rel_err(vkpt_encoder_vec(e, 2 * ns + i), last, E);
        double ev = e1 > e2 ? (e1 > e3 ? e1 : e3) : (e2 > e3 ? e2 : e3);
        if (ev > worst_v) worst_v = ev;
        if (ev > EMB_REL)
            fail_msg("%s: sequence %u: cls %.3g mean_l2 %.3g last %.3g", what, i, e1, e2, e3);
    }
    printf("# %s vs the host reference: hidden rows %.2e, pooled %.2e\n", what, worst_h, worst_v);
    vkpt_encoder_destroy(e);
    for (uint32_t i = 0; i < ns; i++) free(ids[i]);
    free(hid), free(want);
}

static embt_cfg small_cfg(int arch, bool f16, uint64_t seed)
{
    embt_cfg c = {.arch = arch,
                  .vocab = 300,
                  .n_embd = 64,
                  .n_layer = 2,
                  .n_head = 4,
                  .n_ff = 96,
                  .n_pos = 256,
                  .n_types = 2,
                  .eps = 1e-12f,
                  .rope_theta = arch == EMBT_NOMIC ? 1000.0f : 160000.0f,
                  .ntk = arch == EMBT_GTE ? 2.0f : 0.0f,
                  .f16 = f16,
                  .seed = seed};
    return c;
}

static void hf_case(void **state, int arch, bool f16, const char *what)
{
    embt_cfg c = small_cfg(arch, f16, 7 + arch * 2 + f16);
    embt_model ref;
    assert_int_equal(embt_make(&c, &ref), 0);
    char dir[256];
    assert_non_null(embt_tmpdir(dir, sizeof dir, "enc"));
    assert_int_equal(embt_write_hf(&ref, dir, "cls", false), 0);
    vkpt_model *m = load(state, dir);
    const vkpt_model_info *mi = vkpt_model_get_info(m);
    assert_false(mi->causal);
    assert_int_equal(mi->pooling, VKPT_POOLING_CLS);
    assert_int_equal(mi->normalize, VKPT_NORMALIZE_OFF);
    check_against_reference(m, &ref, 100 + arch, what);
    vkpt_model_destroy(m);
    embt_free(&ref);
    embt_rmtree(dir);
}

static void embed_gte_matches_reference(void **state)
{
    hf_case(state, EMBT_GTE, false, "gte (new, f32)");
    hf_case(state, EMBT_GTE, true, "gte (new, f16 weights)");
}

static void embed_nomic_matches_reference(void **state)
{
    hf_case(state, EMBT_NOMIC, false, "nomic-bert (f32)");
    hf_case(state, EMBT_NOMIC, true, "nomic-bert (f16 weights)");
}

static void embed_random_bert_matches_reference(void **state)
{
    hf_case(state, EMBT_BERT, true, "bert (f16 weights)");
}

/* One set of weights as an HF folder and as a llama.cpp GGUF (with the BGE
 * vocabulary): the same vectors, the reference's, and the GGUF's
 * pooling_type as the default. */
static void gguf_vs_hf(void **state, int arch, int pooling_type, int want_pooling)
{
    embt_cfg c = small_cfg(arch, false, 31 + arch);
    c.vocab = 30522; /* the BGE vocabulary's size */
    c.n_pos = 512;
    embt_model ref;
    assert_int_equal(embt_make(&c, &ref), 0);
    char dir[256], gguf[300];
    assert_non_null(embt_tmpdir(dir, sizeof dir, "gguf"));
    snprintf(gguf, sizeof gguf, "%s/model.gguf", dir);
    char hf[300];
    snprintf(hf, sizeof hf, "%s/hf", dir);
    assert_int_equal(mkdir(hf, 0755), 0);
    assert_int_equal(embt_write_hf(&ref, hf, NULL, false), 0);
    assert_int_equal(embt_write_gguf(&ref, gguf, bge_vocab(), pooling_type), 0);
    vkpt_model *mh = load(state, hf), *mg = load(state, gguf);
    assert_int_equal(vkpt_model_get_info(mh)->pooling, 0); /* no modules.json: unknown */
    assert_int_equal(vkpt_model_get_info(mg)->pooling, want_pooling);
    assert_string_equal(vkpt_model_get_info(mg)->arch, arch == EMBT_BERT ? "bert" : "nomic-bert");
    /* the GGUF's tokenizer is BGE's: [CLS] hello world [SEP] */
    vkpt_tokens tk = {0};
    assert_int_equal(
        vkpt_tokenizer_encode(vkpt_model_tokenizer(mg), "Hello world", 11, VKPT_TOK_DEFAULT, &tk),
        0);
    int32_t want_ids[4] = {101, 7592, 2088, 102};
    assert_int_equal(tk.n, 4);
    assert_memory_equal(tk.ids, want_ids, sizeof want_ids);
    vkpt_encoder *eh = encoder(mh, 512), *eg = encoder(mg, 512);
    vkpt_enc_seq s = {tk.ids, 4, VKPT_POOL_KIND_MEAN, c.n_embd};
    assert_int_equal(vkpt_encoder_step(eh, &s, 1), 0);
    assert_int_equal(vkpt_encoder_step(eg, &s, 1), 0);
    assert_memory_equal(vkpt_encoder_vec(eh, 0), vkpt_encoder_vec(eg, 0), c.n_embd * 4);
    vkpt_encoder_destroy(eh);
    vkpt_encoder_destroy(eg);
    check_against_reference(mg, &ref, 200 + arch, arch == EMBT_BERT ? "bert gguf" : "nomic gguf");
    vkpt_tokens_free(&tk);
    vkpt_model_destroy(mh);
    vkpt_model_destroy(mg);
    embt_free(&ref);
    embt_rmtree(dir);
}

static void embed_gguf_and_hf_layouts_agree(void **state)
{
    gguf_vs_hf(state, EMBT_BERT, 2, VKPT_POOLING_CLS);
    gguf_vs_hf(state, EMBT_NOMIC, 1, VKPT_POOLING_MEAN);
}

/* ---- pooling defaults from the model's files ---------------------------------------------------- */

static void embed_pooling_comes_from_sentence_transformers_files(void **state)
{
    embt_cfg c = small_cfg(EMBT_BERT, false, 5);
    embt_model ref;
    assert_int_equal(embt_make(&c, &ref), 0);
    static const struct {
        const char *mode;
        bool norm;
        int err, pooling, normalize;
    } cases[] = {
        {"mean", true, 0, VKPT_POOLING_MEAN, VKPT_NORMALIZE_ON},
        {"lasttoken", false, 0, VKPT_POOLING_LAST, VKPT_NORMALIZE_OFF},
        {"max", false, VKPT_EUNSUPPORTED, 0, 0},
        {NULL, false, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[256];
        assert_non_null(embt_tmpdir(dir, sizeof dir, "pool"));
        assert_int_equal(embt_write_hf(&ref, dir, cases[i].mode, cases[i].norm), 0);
        vkpt_model_opts o = VKPT_MODEL_OPTS_DEFAULT;
        o.progress = false;
        vkpt_model *m = NULL;
        int err = vkpt_model_load(vkpt_test_dev(state), dir, &o, &m);
        assert_int_equal(err, cases[i].err);
        if (!err) {
            const vkpt_model_info *mi = vkpt_model_get_info(m);
            assert_int_equal(mi->pooling, cases[i].pooling);
            assert_int_equal(mi->normalize, cases[i].normalize);
            /* the embedder's defaults: the files', else mean without norm;
             * options override them */
            vkpt_embedder *e;
            assert_int_equal(vkpt_embedder_create(m, NULL, &e), 0);
            assert_int_equal(vkpt_embedder_default_pooling(e),
                             cases[i].pooling ? cases[i].pooling : VKPT_POOLING_MEAN);
            assert_int_equal(vkpt_embedder_default_normalize(e),
                             cases[i].normalize == VKPT_NORMALIZE_ON);
            vkpt_embedder_destroy(e);
            vkpt_embedder_opts eo = {.pooling = VKPT_POOLING_CLS, .normalize = VKPT_NORMALIZE_ON};
            assert_int_equal(vkpt_embedder_create(m, &eo, &e), 0);
            assert_int_equal(vkpt_embedder_default_pooling(e), VKPT_POOLING_CLS);
            assert_true(vkpt_embedder_default_normalize(e));
            vkpt_embedder_destroy(e);
            vkpt_model_destroy(m);
        } else {
            assert_non_null(strstr(vkpt_errmsg(err), "pooling_mode_max_tokens"));
        }
        embt_rmtree(dir);
    }
    embt_free(&ref);
}

/* ---- the embedder ---------------------------------------------------------------------------- */

typedef struct client {
    vkpt_embedder *e;
    uint32_t id, n_req;
    int32_t *ids[16];
    uint32_t lens[16];
    vkpt_embed_params p[16];
    float got[16][64];
    uint32_t got_dims[16];
    int n_done;
    pthread_mutex_t lock;
    pthread_cond_t cond;
} client;

typedef struct slot {
    client *c;
    uint32_t i;
} slot;

static void client_cb(const vkpt_embed_result *r, void *ud)
{
    slot *s = ud;
    client *c = s->c;
    pthread_mutex_lock(&c->lock);
    if (r->vec) {
        memcpy(c->got[s->i], r->vec, r->dims * 4);
        c->got_dims[s->i] = r->dims;
    } else {
        c->got_dims[s->i] = 0xffffffffu;
    }
    c->n_done++;
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void *client_main(void *arg)
{
    client *c = arg;
    slot slots[16];
    vkpt_embed_request *rq[16];
    for (uint32_t i = 0; i < c->n_req; i++) {
        slots[i] = (slot){c, i};
        if (vkpt_embedder_submit(c->e, c->ids[i], c->lens[i], &c->p[i], client_cb, &slots[i],
                                 &rq[i]))
            return (void *)1;
    }
    pthread_mutex_lock(&c->lock);
    while ((uint32_t)c->n_done < c->n_req) pthread_cond_wait(&c->cond, &c->lock);
    pthread_mutex_unlock(&c->lock);
    for (uint32_t i = 0; i < c->n_req; i++) vkpt_embed_request_release(rq[i]);
    return NULL;
}

static void embed_embedder_batches_clients_and_matches_alone(void **state)
{
    embt_cfg cfg = small_cfg(EMBT_GTE, false, 77);
    embt_model ref;
    assert_int_equal(embt_make(&cfg, &ref), 0);
    char dir[256];
    assert_non_null(embt_tmpdir(dir, sizeof dir, "emb"));
    assert_int_equal(embt_write_hf(&ref, dir, "cls", true), 0);
    vkpt_model *m = load(state, dir);
    vkpt_embedder_opts eo = {
        .max_batch_tokens = 384, .max_seqs = 8, .max_seq_len = 200, .batch_invariant = true};
    vkpt_embedder *e;
    assert_int_equal(vkpt_embedder_create(m, &eo, &e), 0);
    assert_int_equal(vkpt_embedder_dim(e), 64);
    assert_int_equal(vkpt_embedder_max_seq_len(e), 200);
    enum { N_CLIENTS = 4 };
    client cl[N_CLIENTS];
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 99);
    uint32_t total = 0;
    for (int k = 0; k < N_CLIENTS; k++) {
        client *c = &cl[k];
        memset(c, 0, sizeof *c);
        c->e = e;
        c->id = k;
        c->n_req = 12;
        pthread_mutex_init(&c->lock, NULL);
        pthread_cond_init(&c->cond, NULL);
        for (uint32_t i = 0; i < c->n_req; i++) {
            c->lens[i] = 1 + (uint32_t)(vkpt_test_rng_u64(&r) % 200);
            c->ids[i] = malloc(c->lens[i] * 4);
            random_ids(&r, c->ids[i], c->lens[i], cfg.vocab);
            c->p[i] = (vkpt_embed_params){.pooling = (int)(i % 4),
                                          .normalize = (int)((i / 4) % 3),
                                          .dims = i % 5 == 4 ? 48 : 0};
        }
        total += c->n_req;
    }
    pthread_t th[N_CLIENTS];
    for (int k = 0; k < N_CLIENTS; k++)
        assert_int_equal(pthread_create(&th[k], NULL, client_main, &cl[k]), 0);
    for (int k = 0; k < N_CLIENTS; k++) {
        void *ret;
        pthread_join(th[k], &ret);
        assert_null(ret);
    }
    vkpt_embedder_stats st;
    vkpt_embedder_get_stats(e, &st);
    printf("# embedder: %u requests from %d threads in %llu steps\n", total, N_CLIENTS,
           (unsigned long long)st.steps);
    assert_int_equal(st.requests_done, total);
    assert_true(st.steps < total); /* batched */
    assert_int_equal(st.queued, 0);
    /* alone, through the synchronous helper: the same bits */
    for (int k = 0; k < N_CLIENTS; k++)
        for (uint32_t i = 0; i < cl[k].n_req; i++) {
            client *c = &cl[k];
            uint32_t dims = c->p[i].dims ? c->p[i].dims : 64;
            assert_int_equal(c->got_dims[i], dims);
            float alone[64];
            const int32_t *in = c->ids[i];
            assert_int_equal(vkpt_embedder_run(e, &in, &c->lens[i], 1, &c->p[i], alone, 64), 0);
            assert_memory_equal(alone, c->got[i], dims * 4);
            /* and the pooling the request asked for (default: the file's cls + norm) */
            if (c->p[i].normalize != VKPT_NORMALIZE_OFF) {
                double ss = 0;
                for (uint32_t d = 0; d < dims; d++) ss += (double)alone[d] * alone[d];
                assert_true(fabs(ss - 1) < 1e-5);
            }
            free(c->ids[i]);
        }
    for (int k = 0; k < N_CLIENTS; k++) {
        pthread_mutex_destroy(&cl[k].lock);
        pthread_cond_destroy(&cl[k].cond);
    }
    vkpt_embedder_destroy(e);
    vkpt_model_destroy(m);
    embt_free(&ref);
    embt_rmtree(dir);
}

static void count_cb(const vkpt_embed_result *r, void *ud)
{
    int *n = ud;
    __atomic_add_fetch(&n[r->canceled ? 1 : r->vec ? 0 : 2], 1, __ATOMIC_SEQ_CST);
}

static void embed_embedder_refuses_bad_input_and_cancels_cleanly(void **state)
{
    embt_cfg cfg = small_cfg(EMBT_BERT, false, 3);
    cfg.n_pos = 64;
    embt_model ref;
    assert_int_equal(embt_make(&cfg, &ref), 0);
    char dir[256];
    assert_non_null(embt_tmpdir(dir, sizeof dir, "bad"));
    assert_int_equal(embt_write_hf(&ref, dir, NULL, false), 0);
    vkpt_model *m = load(state, dir);
    vkpt_embedder *e;
    assert_int_equal(vkpt_embedder_create(m, NULL, &e), 0);
    /* BERT's position table caps the input length */
    assert_int_equal(vkpt_embedder_max_seq_len(e), 64);
    int32_t ids[65];
    for (int i = 0; i < 65; i++) ids[i] = 7;
    int counts[3] = {0};
    vkpt_embed_request *rq;
    vkpt_embed_params p = {0};
    assert_int_equal(vkpt_embedder_submit(e, ids, 0, &p, count_cb, counts, &rq), VKPT_EINVAL);
    assert_int_equal(vkpt_embedder_submit(e, ids, 65, &p, count_cb, counts, &rq), VKPT_ERANGE);
    ids[3] = 300; /* vocabulary is 300 */
    assert_int_equal(vkpt_embedder_submit(e, ids, 5, &p, count_cb, counts, &rq), VKPT_EINVAL);
    ids[3] = 7;
    p.dims = 65;
    assert_int_equal(vkpt_embedder_submit(e, ids, 5, &p, count_cb, counts, &rq), VKPT_EINVAL);
    p.dims = 0;
    p.pooling = 9;
    assert_int_equal(vkpt_embedder_submit(e, ids, 5, &p, count_cb, counts, &rq), VKPT_EINVAL);
    p.pooling = 0;
    assert_int_equal(counts[0] + counts[1] + counts[2], 0); /* no callback for refusals */
    /* 30 requests: cancel every third right away, release a few before their
     * callback; each still gets exactly one callback */
    vkpt_embed_request *rqs[30];
    for (int i = 0; i < 30; i++) {
        assert_int_equal(vkpt_embedder_submit(e, ids, 1 + i * 2, &p, count_cb, counts, &rqs[i]), 0);
        if (i % 3 == 0) vkpt_embed_request_cancel(rqs[i]);
        if (i % 7 == 6) {
            vkpt_embed_request_release(rqs[i]);
            rqs[i] = NULL;
        }
    }
    vkpt_embedder_destroy(e); /* anything still queued is answered canceled */
    assert_int_equal(counts[0] + counts[1], 30);
    assert_int_equal(counts[2], 0);
    /* the canceled requests queued behind the first step (milliseconds on
     * any device; the submit loop takes microseconds) never ran */
    assert_true(counts[1] >= 1);
    for (int i = 0; i < 30; i++) vkpt_embed_request_release(rqs[i]);
    /* a generative model is refused */
    vkpt_model *llm = load(state, VKPT_SOURCE_DIR "/models/stories260K/stories260K.gguf");
    assert_int_equal(vkpt_embedder_create(llm, NULL, &e), VKPT_EUNSUPPORTED);
    vkpt_model_destroy(llm);
    vkpt_model_destroy(m);
    embt_free(&ref);
    embt_rmtree(dir);
}

#define T(fn) cmocka_unit_test_teardown(fn, vkpt_test_check_validation)
int main(void)
{
    const struct CMUnitTest tests[] = {
        T(embed_bert_fixture_matches_transformers),
        T(embed_reference_matches_transformers_on_bert),
        T(embed_gte_matches_reference),
        T(embed_nomic_matches_reference),
        T(embed_random_bert_matches_reference),
        T(embed_gguf_and_hf_layouts_agree),
        T(embed_pooling_comes_from_sentence_transformers_files),
        T(embed_embedder_batches_clients_and_matches_alone),
        T(embed_embedder_refuses_bad_input_and_cancels_cleanly),
    };
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
