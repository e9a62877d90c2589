/* engine/kernels/k_attn: the KV-cache write and paged attention (prefill
 * tiles, split-K decode + reduction) against the double reference, on
 * batches that mix prefills, chunked prefills and decodes of lengths 1, 5,
 * 16, 17, 100, 300, with block tables scattered out of order, cache slots
 * that no sequence owns filled with NaN, GQA ratios 1..20 and every head
 * dim vkpt supports. */
#include "kernel_util.h"
#include "k_attn.h"
#include "quant.h"

#include <stdio.h>

/* Bound for attention against the reference on the same f16 cache:
 * max |got - ref| <= 2e-5 (outputs are averages of |v| <= 1). Both sides read
 * identical K/V; the GPU's f32 dot products (<= 256 terms, |q.k| <~ 30) are
 * off by ~1e-6 in the logit, its exp and running sums (<= 300 keys, online
 * rescaling, split merges) by a few ulp: ~1e-6 in the output. A key or block
 * too many or too few, a wrong mask edge or a wrong head moves outputs by
 * >= 1e-3. */
static const double ATTN_TOL = 2e-5;
/* The cooperative-matrix prefill (GPUs only) rounds Q and P to f16: each
 * adds ~2^-11 relative to the logits and weights, ~1e-3 in the output. */
static const double ATTN_TOL_COOPMAT = 4e-3;

typedef struct batch {
    vkpt_attn_params p;
    uint32_t n_seqs, n_rows, n_blocks, bt_words;
    vkpt_attn_seq seqs[32];
    uint32_t *bt;
    uint16_t *kc, *vc;
    float *q;
    uint32_t q_stride;
} batch;

static const uint16_t F16_NAN = 0x7e00;

/* Sequences (q_len, kv_len) laid out in rows in order, with one unused row
 * after the third; blocks handed out from a shuffled pool with spare blocks
 * left over; block tables spaced apart. */
static void batch_make(batch *b, vkpt_test_rng *r, const vkpt_attn_params *p,
                       const uint32_t (*lens)[2], uint32_t n, uint32_t q_extra)
{
    memset(b, 0, sizeof *b);
    b->p = *p;
    b->n_seqs = n;
    uint32_t need = 0, row = 0, bt = 3;
    for (uint32_t s = 0; s < n; s++) {
        vkpt_attn_seq *q = &b->seqs[s];
        q->q_len = lens[s][0];
        q->kv_len = lens[s][1];
        q->q_start = row;
        row += q->q_len + (s == 2); /* a gap row nobody owns */
        q->bt_start = bt;
        uint32_t nb = (q->kv_len + VKPT_KV_BLOCK - 1) / VKPT_KV_BLOCK;
        bt += nb + 2;
        need += nb;
    }
    b->n_rows = row;
    b->bt_words = bt;
    b->n_blocks = need + 5;
    uint32_t *pool = malloc(b->n_blocks * 4);
    for (uint32_t i = 0; i < b->n_blocks; i++) pool[i] = i;
    for (uint32_t i = b->n_blocks - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(vkpt_test_rng_u64(r) % (i + 1)), t = pool[i];
        pool[i] = pool[j];
        pool[j] = t;
    }
    b->bt = malloc(bt * 4);
    for (uint32_t i = 0; i < bt; i++) b->bt[i] = 0xdeadbeefu; /* between tables: never read */
    size_t per_block = (size_t)p->n_kv_head * VKPT_KV_BLOCK * p->head_dim;
    size_t cache_n = b->n_blocks * per_block;
    b->kc = malloc(cache_n * 2);
    b->vc = malloc(cache_n * 2);
    for (size_t i = 0; i < cache_n; i++) b->kc[i] = b->vc[i] = F16_NAN;
    uint32_t next = 0;
    for (uint32_t s = 0; s < n; s++) {
        const vkpt_attn_seq *q = &b->seqs[s];
        for (uint32_t i = 0; i < (q->kv_len + VKPT_KV_BLOCK - 1) / VKPT_KV_BLOCK; i++)
            b->bt[q->bt_start + i] = pool[next++];
        for (uint32_t pos = 0; pos < q->kv_len; pos++)
            for (uint32_t h = 0; h < p->n_kv_head; h++) {
                uint32_t blk = b->bt[q->bt_start + pos / VKPT_KV_BLOCK];
                size_t a = ((size_t)blk * p->n_kv_head + h) * VKPT_KV_BLOCK * p->head_dim +
                           (size_t)(pos % VKPT_KV_BLOCK) * p->head_dim;
                for (uint32_t i = 0; i < p->head_dim; i++) {
                    b->kc[a + i] = vkpt_f32_to_f16(vkpt_test_rng_f32(r, -2, 2));
                    b->vc[a + i] = vkpt_f32_to_f16(vkpt_test_rng_f32(r, -1, 1));
                }
            }
    }
    free(pool);
    b->q_stride = p->n_head * p->head_dim + q_extra;
    b->q = kt_randf(r, (size_t)b->n_rows * b->q_stride, -2, 2);
}

static void batch_free(batch *b)
{
    free(b->bt), free(b->kc), free(b->vc), free(b->q);
}

/* Plan, upload, run, compare with the reference; rows nobody owns must keep
 * their sentinel. Returns the plan for extra checks. */
static vkpt_attn_plan batch_run(vkpt_device *dev, vkpt_cmd *c, const batch *b, const char *what)
{
    const vkpt_attn_params *p = &b->p;
    size_t cap = vkpt_attn_meta_words_max(b->n_seqs, b->n_rows) + 4096;
    uint32_t *meta = malloc(cap * 4);
    vkpt_attn_plan plan;
    assert_int_equal(vkpt_attn_plan_make(dev, p, b->seqs, b->n_seqs, meta, cap, &plan), 0);
    if (!p->split_len) { /* automatic splits stay inside the advertised bounds */
        assert_true(plan.meta_words <= vkpt_attn_meta_words_max(b->n_seqs, b->n_rows));
        assert_true(plan.scratch_bytes <= vkpt_attn_scratch_bytes_max(p, b->n_seqs));
    }
    assert_int_equal(memcmp(meta, b->seqs, sizeof(vkpt_attn_seq) * b->n_seqs), 0);
    size_t row = (size_t)p->n_head * p->head_dim, out_n = (size_t)b->n_rows * row;
    size_t cache_bytes = (size_t)b->n_blocks * p->n_kv_head * VKPT_KV_BLOCK * p->head_dim * 2;
    vkpt_attn_bufs bufs = {
        .meta = kt_buf(dev, meta, plan.meta_words * 4),
        .block_table = kt_buf(dev, b->bt, b->bt_words * 4),
        .k_cache = kt_buf(dev, b->kc, cache_bytes),
        .v_cache = kt_buf(dev, b->vc, cache_bytes),
        .out = kt_buf(dev, NULL, out_n * 4),
        .scratch = kt_buf(dev, NULL, plan.scratch_bytes ? plan.scratch_bytes : 4),
    };
    vkpt_buf bq = kt_buf(dev, b->q, (size_t)b->n_rows * b->q_stride * 4);
    bufs.q = vkpt_rows_of(&bq, 0, b->q_stride);
    kt_begin(c);
    assert_int_equal(vkpt_k_attn(c, &plan, &bufs), 0);
    kt_run(c);
    float *got = malloc(out_n * 4), *want = malloc(out_n * 4);
    kt_get(dev, &bufs.out, got, out_n * 4);
    memset(want, 0xff, out_n * 4); /* the sentinel kt_buf filled out with */
    assert_int_equal(vkpt_ref_attn(p, b->seqs, b->n_seqs, b->bt, b->q, b->q_stride, b->kc, b->vc,
                                   b->n_blocks, want),
                     0);
    for (size_t i = 0; i < out_n; i++) {
        uint32_t r = (uint32_t)(i / row), h = (uint32_t)(i % row / p->head_dim);
        bool owned = false;
        for (uint32_t s = 0; s < b->n_seqs; s++)
            owned |= r >= b->seqs[s].q_start && r < b->seqs[s].q_start + b->seqs[s].q_len;
        if (!owned) {
            if (memcmp(&got[i], &want[i], 4)) fail_msg("%s: row %u (no sequence) written", what, r);
            continue;
        }
        bool prefill_row = false;
        for (uint32_t s = 0; s < b->n_seqs; s++)
            prefill_row |= b->seqs[s].q_len > 1 && r >= b->seqs[s].q_start &&
                           r < b->seqs[s].q_start + b->seqs[s].q_len;
        bool f16 = plan.prefill.variant == VKPT_V_attn_prefill_f16kv_coopmat ||
                   plan.prefill.variant == VKPT_V_attn_prefill_f16kv_nv2;
        double tol = prefill_row && f16 ? ATTN_TOL_COOPMAT : ATTN_TOL;
        if (!(fabs((double)got[i] - want[i]) <= tol))
            fail_msg("%s (heads %u/%u, d %u): row %u head %u dim %u: got %.7g want %.7g", what,
                     p->n_head, p->n_kv_head, p->head_dim, r, h, (uint32_t)(i % p->head_dim),
                     got[i], want[i]);
    }
    vkpt_buf_free(dev, &bufs.meta), vkpt_buf_free(dev, &bufs.block_table);
    vkpt_buf_free(dev, &bufs.k_cache), vkpt_buf_free(dev, &bufs.v_cache);
    vkpt_buf_free(dev, &bufs.out), vkpt_buf_free(dev, &bufs.scratch), vkpt_buf_free(dev, &bq);
    free(meta), free(got), free(want);
    return plan;
}

/* prefills, a chunked prefill (100 new rows over 300), decodes of 1..300 */
static const uint32_t mixed[][2] = {{5, 5},   {1, 1},  {16, 16}, {17, 17}, {1, 100}, {100, 300},
                                    {1, 300}, {1, 17}, {3, 16},  {1, 16},  {30, 47}};
static const uint32_t small[][2] = {{5, 5}, {1, 1}, {17, 17}, {1, 100}, {20, 40}, {1, 33}};

static void attn_mixed_batch_across_gqa_ratios(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 100);
    static const uint32_t cfg[][4] = {
        /* n_head, n_kv_head, head_dim, q row padding */
        {4, 4, 8, 0},   /* GQA 1, stories260K's head dim */
        {8, 2, 16, 0},  /* GQA 4 */
        {16, 2, 32, 5}, /* GQA 8, q rows in a wider buffer */
        {8, 1, 64, 0},  /* MQA 8 */
        {6, 2, 128, 0}, /* GQA 3: a group that does not divide the tile */
        {20, 1, 16, 0}, /* MQA 20: more heads than one workgroup takes */
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        vkpt_attn_params p = {.n_head = cfg[i][0], .n_kv_head = cfg[i][1], .head_dim = cfg[i][2]};
        batch b;
        batch_make(&b, &r, &p, mixed, sizeof mixed / sizeof mixed[0], cfg[i][3]);
        batch_run(dev, &c, &b, "mixed");
        batch_free(&b);
    }
    vkpt_cmd_free(&c);
}

static void attn_every_supported_head_dim(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 200);
    static const uint32_t dims[] = {48, 80, 96, 112, 256, 12};
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        vkpt_attn_params p = {.n_head = 4, .n_kv_head = 2, .head_dim = dims[i]};
        batch b;
        batch_make(&b, &r, &p, small, sizeof small / sizeof small[0], 0);
        batch_run(dev, &c, &b, "head dims");
        batch_free(&b);
    }
    /* a device with Vulkan's minimum 16 KiB of shared memory gets smaller tiles */
    uint32_t had = dev->caps.max_shared_memory;
    dev->caps.max_shared_memory = 16384;
    static const uint32_t dims16[] = {256, 128};
    for (size_t i = 0; i < 2; i++) {
        vkpt_attn_params p = {.n_head = 8, .n_kv_head = 1, .head_dim = dims16[i]};
        batch b;
        batch_make(&b, &r, &p, small, sizeof small / sizeof small[0], 0);
        vkpt_attn_plan plan = batch_run(dev, &c, &b, "16 KiB shared memory");
        assert_true(plan.prefill.keys * plan.prefill.rows < 32 * 64);
        batch_free(&b);
    }
    dev->caps.max_shared_memory = had;
    vkpt_cmd_free(&c);
}

static void attn_window_non_causal_softcap_and_scale(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 300);
    vkpt_attn_params ps[] = {
        {.n_head = 8, .n_kv_head = 2, .head_dim = 32, .window = 7},
        {.n_head = 8, .n_kv_head = 2, .head_dim = 32, .window = 40},
        {.n_head = 4, .n_kv_head = 4, .head_dim = 16, .non_causal = true},
        {.n_head = 8, .n_kv_head = 2, .head_dim = 64, .softcap = 3.0f, .scale = 0.3f},
    };
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        batch b;
        batch_make(&b, &r, &ps[i], mixed, sizeof mixed / sizeof mixed[0], 0);
        batch_run(dev, &c, &b, "options");
        batch_free(&b);
    }
    vkpt_cmd_free(&c);
}

/* Decode contexts split into several partials and merged: forced split
 * lengths, and the automatic choice for a few long decodes. */
static void attn_decode_splits_merge_exactly(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 400);
    static const uint32_t splits[] = {16, 48, 128};
    for (size_t i = 0; i < 3; i++) {
        vkpt_attn_params p = {.n_head = 8, .n_kv_head = 2, .head_dim = 32, .split_len = splits[i]};
        batch b;
        batch_make(&b, &r, &p, mixed, sizeof mixed / sizeof mixed[0], 0);
        vkpt_attn_plan plan = batch_run(dev, &c, &b, "forced splits");
        assert_true(plan.decode.n_items > plan.n_dec_seqs); /* splits did happen */
        batch_free(&b);
    }
    /* automatic: 3 long decodes (one windowed) on 2 kv heads want more parallelism */
    static const uint32_t longd[][2] = {{1, 1000}, {1, 700}, {1, 1}, {1, 1500}};
    vkpt_attn_params p = {.n_head = 8, .n_kv_head = 2, .head_dim = 16};
    batch b;
    batch_make(&b, &r, &p, longd, 4, 0);
    vkpt_attn_plan plan = batch_run(dev, &c, &b, "auto splits");
    assert_true(plan.decode.n_items > 3 * plan.n_dec_seqs);
    batch_free(&b);
    p.window = 100;
    batch_make(&b, &r, &p, longd, 4, 0);
    batch_run(dev, &c, &b, "auto splits, window");
    batch_free(&b);
    vkpt_cmd_free(&c);
}

/* The cache write: rows from a fused qkv buffer into scattered slots;
 * padding rows (slot ~0) and slots past the cache are skipped. */
static void attn_kv_write_fills_the_right_slots(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 500);
    uint32_t nh = 4, nkv = 2, d = 16, rows = 37, n_blocks = 9;
    uint32_t stride = (nh + 2 * nkv) * d;
    float *qkv = kt_randf(&r, (size_t)rows * stride, -3, 3);
    for (size_t i = 0; i < (size_t)rows * stride; i += 17) qkv[i] *= 70000.0f; /* f16 overflow */
    uint32_t slots[37];
    for (uint32_t t = 0; t < rows; t++) /* distinct slots, some skipped */
        slots[t] = t % 9 == 4 ? 0xffffffffu
                   : t == 20  ? n_blocks * 16 + 3
                              : (t * 7 + 5) % (n_blocks * 16);
    size_t cache_n = (size_t)n_blocks * nkv * 16 * d;
    uint16_t *kc = malloc(cache_n * 2), *vc = malloc(cache_n * 2), *gk = malloc(cache_n * 2),
             *gv = malloc(cache_n * 2);
    for (size_t i = 0; i < cache_n; i++) kc[i] = vc[i] = (uint16_t)(0x1234 + i);
    vkpt_buf bqkv = kt_buf(dev, qkv, (size_t)rows * stride * 4), bs = kt_buf(dev, slots, rows * 4);
    vkpt_buf bk = kt_buf(dev, kc, cache_n * 2), bv = kt_buf(dev, vc, cache_n * 2);
    vkpt_rows vk = vkpt_rows_of(&bqkv, nh * d, stride),
              vv = vkpt_rows_of(&bqkv, (nh + nkv) * d, stride);
    kt_begin(&c);
    assert_int_equal(vkpt_k_kv_write(&c, &vk, &vv, &bs, rows, nkv, d, &bk, &bv), 0);
    kt_run(&c);
    kt_get(dev, &bk, gk, cache_n * 2);
    kt_get(dev, &bv, gv, cache_n * 2);
    vkpt_ref_kv_write(qkv + nh * d, stride, qkv + (nh + nkv) * d, stride, slots, rows, nkv, d, kc,
                      vc, n_blocks);
    /* f32 -> f16 is exact rounding (to nearest even) on both sides */
    for (size_t i = 0; i < cache_n; i++)
        if (gk[i] != kc[i] || gv[i] != vc[i])
            fail_msg("kv_write: cache element %zu: got %04x/%04x want %04x/%04x", i, gk[i], gv[i],
                     kc[i], vc[i]);
    vkpt_buf_free(dev, &bqkv), vkpt_buf_free(dev, &bs), vkpt_buf_free(dev, &bk),
        vkpt_buf_free(dev, &bv);
    free(qkv), free(kc), free(vc), free(gk), free(gv);
    vkpt_cmd_free(&c);
}

/* One engine step end to end: new K/V rows written, a barrier, attention;
 * against attention in double on the f32 K/V before rounding to f16.
 * Bound 2e-3: K/V are stored as f16 (relative 2^-11 each), which moves
 * scores by up to ~|q||k| 2^-11 and outputs by about as much. */
static void attn_step_end_to_end_against_f32_kv(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 600);
    uint32_t nh = 8, nkv = 2, d = 32, g = nh / nkv;
    /* two sequences: a 40-token prompt, and a decode at position 20 whose
     * first 20 tokens are written in the same step (all rows are new) */
    uint32_t rows = 41, n_blocks = 8;
    vkpt_attn_seq seqs[2] = {{0, 40, 40, 0}, {40, 1, 21, 4}};
    uint32_t bt[6] = {5, 0, 7, 2, 6, 3};
    /* every cache token comes from some row: the decode's history rows are
     * written too, so give the step K/V for 40 + 21 tokens */
    uint32_t kv_rows = 61;
    float *k = kt_randf(&r, (size_t)kv_rows * nkv * d, -2, 2);
    float *v = kt_randf(&r, (size_t)kv_rows * nkv * d, -1, 1);
    float *q = kt_randf(&r, (size_t)rows * nh * d, -2, 2);
    uint32_t slots[61];
    for (uint32_t t = 0; t < 40; t++) slots[t] = bt[t / 16] * 16 + t % 16;
    for (uint32_t t = 0; t < 21; t++) slots[40 + t] = bt[4 + t / 16] * 16 + t % 16;
    size_t cache_bytes = (size_t)n_blocks * nkv * 16 * d * 2;
    vkpt_buf bk = kt_buf(dev, k, (size_t)kv_rows * nkv * d * 4);
    vkpt_buf bv = kt_buf(dev, v, (size_t)kv_rows * nkv * d * 4);
    vkpt_buf bs = kt_buf(dev, slots, sizeof slots), bq = kt_buf(dev, q, (size_t)rows * nh * d * 4);
    vkpt_buf kc = kt_buf(dev, NULL, cache_bytes), vc = kt_buf(dev, NULL, cache_bytes);
    vkpt_attn_params p = {.n_head = nh, .n_kv_head = nkv, .head_dim = d};
    uint32_t meta[256];
    vkpt_attn_plan plan;
    assert_int_equal(vkpt_attn_plan_make(dev, &p, seqs, 2, meta, 256, &plan), 0);
    vkpt_attn_bufs bufs = {.meta = kt_buf(dev, meta, plan.meta_words * 4),
                           .block_table = kt_buf(dev, bt, sizeof bt),
                           .q = vkpt_rows_of(&bq, 0, nh * d),
                           .k_cache = kc,
                           .v_cache = vc,
                           .out = kt_buf(dev, NULL, (size_t)rows * nh * d * 4),
                           .scratch = kt_buf(dev, NULL, plan.scratch_bytes + 4)};
    vkpt_rows vk = vkpt_rows_of(&bk, 0, nkv * d), vv = vkpt_rows_of(&bv, 0, nkv * d);
    kt_begin(&c);
    assert_int_equal(vkpt_k_kv_write(&c, &vk, &vv, &bs, kv_rows, nkv, d, &kc, &vc), 0);
    vkpt_cmd_barrier(&c);
    assert_int_equal(vkpt_k_attn(&c, &plan, &bufs), 0);
    kt_run(&c);
    float *got = malloc((size_t)rows * nh * d * 4);
    kt_get(dev, &bufs.out, got, (size_t)rows * nh * d * 4);
    double worst = 0;
    for (uint32_t s = 0; s < 2; s++)
        for (uint32_t t = 0; t < seqs[s].q_len; t++) {
            uint32_t row = seqs[s].q_start + t, pos = seqs[s].kv_len - seqs[s].q_len + t;
            uint32_t kv0 = s == 0 ? 0 : 40; /* first K/V row of the sequence */
            for (uint32_t h = 0; h < nh; h++) {
                double sc[64], mx = -INFINITY, sum = 0, o[32] = {0};
                for (uint32_t j = 0; j <= pos; j++) {
                    double dot = 0;
                    for (uint32_t i = 0; i < d; i++)
                        dot += (double)q[((size_t)row * nh + h) * d + i] *
                               k[((size_t)(kv0 + j) * nkv + h / g) * d + i];
                    sc[j] = dot / sqrt((double)d);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (uint32_t j = 0; j <= pos; j++) {
                    double w = exp(sc[j] - mx);
                    sum += w;
                    for (uint32_t i = 0; i < d; i++)
                        o[i] += w * v[((size_t)(kv0 + j) * nkv + h / g) * d + i];
                }
                for (uint32_t i = 0; i < d; i++) {
                    double e = fabs(got[((size_t)row * nh + h) * d + i] - o[i] / sum);
                    worst = e > worst ? e : worst;
                }
            }
        }
    /* plus the f16 rounding of Q and P where the device's coopmat opt-in
     * (VKPT_COOPMAT=1) gave the prefill to a cooperative-matrix kernel */
    double bound = 2e-3;
    if (plan.prefill.variant == VKPT_V_attn_prefill_f16kv_coopmat ||
        plan.prefill.variant == VKPT_V_attn_prefill_f16kv_nv2)
        bound += ATTN_TOL_COOPMAT;
    if (!(worst <= bound)) fail_msg("end to end: max error %g > %g", worst, bound);
    vkpt_buf_free(dev, &bk), vkpt_buf_free(dev, &bv), vkpt_buf_free(dev, &bs),
        vkpt_buf_free(dev, &bq);
    vkpt_buf_free(dev, &kc), vkpt_buf_free(dev, &vc), vkpt_buf_free(dev, &bufs.meta);
    vkpt_buf_free(dev, &bufs.block_table), vkpt_buf_free(dev, &bufs.out);
    vkpt_buf_free(dev, &bufs.scratch);
    free(k), free(v), free(q), free(got);
    vkpt_cmd_free(&c);
}

static void attn_plan_rejects_bad_batches(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    uint32_t meta[64];
    vkpt_attn_plan plan;
    vkpt_attn_params p = {.n_head = 8, .n_kv_head = 2, .head_dim = 64};
    vkpt_attn_seq ok = {0, 4, 10, 0};
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &ok, 1, meta, 64, &plan), 0);
    assert_true(plan.prefill.n_items >= 1 && plan.decode.n_items == 0);
    assert_true(fabsf(plan.p.scale - 0.125f) < 1e-7f);
    vkpt_attn_seq bad_q = {0, 0, 10, 0}, bad_kv = {0, 11, 10, 0};
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &bad_q, 1, meta, 64, &plan), VKPT_EINVAL);
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &bad_kv, 1, meta, 64, &plan), VKPT_EINVAL);
    vkpt_attn_params bp = p;
    bp.n_kv_head = 3;
    assert_int_equal(vkpt_attn_plan_make(dev, &bp, &ok, 1, meta, 64, &plan), VKPT_EINVAL);
    bp = p;
    bp.head_dim = 6;
    assert_int_equal(vkpt_attn_plan_make(dev, &bp, &ok, 1, meta, 64, &plan), VKPT_EINVAL);
    bp.head_dim = 512;
    assert_int_equal(vkpt_attn_plan_make(dev, &bp, &ok, 1, meta, 64, &plan), VKPT_EINVAL);
    bp = p;
    bp.split_len = 20;
    assert_int_equal(vkpt_attn_plan_make(dev, &bp, &ok, 1, meta, 64, &plan), VKPT_EINVAL);
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &ok, 1, meta, 5, &plan), VKPT_ETOOBIG);
    assert_non_null(strstr(vkpt_errmsg(VKPT_ETOOBIG), "metadata"));
    /* launching with buffers that are too small is refused, not recorded */
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &ok, 1, meta, 64, &plan), 0);
    vkpt_buf tiny = kt_buf(dev, NULL, 256);
    vkpt_attn_bufs bufs = {tiny, tiny, vkpt_rows_of(&tiny, 0, 512), tiny, tiny, tiny, tiny};
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    kt_begin(&c);
    assert_int_equal(vkpt_k_attn(&c, &plan, &bufs), VKPT_EINVAL);
    kt_run(&c);
    vkpt_buf_free(dev, &tiny);
    vkpt_cmd_free(&c);
}

/* The cooperative-matrix prefill is chosen exactly when it is allowed, the
 * device has the shape it needs and head_dim suits it. Lavapipe has no
 * cooperative matrices: its caps are dressed up here, and only plans are
 * made. */
static void attn_plan_picks_coopmat_only_when_caps_say_so(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_device_caps saved = dev->caps;
    bool saved_auto = dev->coopmat_auto;
    dev->coopmat_auto = false; /* VKPT_COOPMAT=1 would allow it without params.coopmat */
    vkpt_attn_seq seq = {0, 40, 40, 0};
    uint32_t meta[256];
    vkpt_attn_plan plan;
    vkpt_attn_params p = {
        .n_head = 8, .n_kv_head = 2, .head_dim = 128, .coopmat = true, .no_nv2 = true};
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    assert_int_equal(plan.prefill.variant, VKPT_V_attn_prefill_f16kv);
    bool compiled = vkpt_variants[VKPT_V_attn_prefill_f16kv_coopmat].spv != NULL;
    dev->caps.coopmat_khr = true;
    dev->caps.fp16 = true;
    dev->caps.vulkan_memory_model = true;
    dev->caps.max_shared_memory = 49152;
    dev->caps.n_coopmat_shapes = 1;
    dev->caps.coopmat_shapes[0] =
        (vkpt_coopmat_shape){16, 16, 16, VKPT_CT_F16, VKPT_CT_F16, VKPT_CT_F32, VKPT_CT_F32, 3};
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    assert_int_equal(plan.prefill.variant,
                     compiled ? VKPT_V_attn_prefill_f16kv_coopmat : VKPT_V_attn_prefill_f16kv);
    if (compiled) {
        assert_int_equal(plan.prefill.rows % 16, 0);
        assert_int_equal(plan.prefill.n_items, (40 + plan.prefill.rows / plan.prefill.heads - 1) /
                                                   (plan.prefill.rows / plan.prefill.heads));
    }
    assert_int_equal(plan.decode.variant, VKPT_V_attn_decode_f16kv);
    p.coopmat = false; /* not allowed */
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    assert_int_equal(plan.prefill.variant, VKPT_V_attn_prefill_f16kv);
    p.coopmat = true;
    p.head_dim = 8; /* not a multiple of 16 */
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    assert_int_equal(plan.prefill.variant, VKPT_V_attn_prefill_f16kv);
    p.head_dim = 128; /* only an f16 -> f16 shape: not usable */
    dev->caps.coopmat_shapes[0].c = dev->caps.coopmat_shapes[0].result = VKPT_CT_F16;
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    assert_int_equal(plan.prefill.variant, VKPT_V_attn_prefill_f16kv);
    dev->caps = saved;
    dev->coopmat_auto = saved_auto;
}

/* The NV2 prefill: chosen before the KHR one when allowed and the device
 * lists a workgroup-scope f16 -> f32 configuration that fits; its heads per
 * workgroup divide the group. Plans only, on dressed-up caps. */
static void attn_plan_picks_nv2_only_when_caps_say_so(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_device_caps saved = dev->caps;
    bool saved_auto = dev->coopmat_auto;
    dev->coopmat_auto = false;
    vkpt_attn_seq seq = {0, 40, 40, 0};
    uint32_t meta[256];
    vkpt_attn_plan plan;
    vkpt_attn_params p = {.n_head = 20, .n_kv_head = 2, .head_dim = 128, .coopmat = true};
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    if (!saved.coopmat_nv2)
        assert_int_not_equal(plan.prefill.variant, VKPT_V_attn_prefill_f16kv_nv2);
    bool compiled = vkpt_variants[VKPT_V_attn_prefill_f16kv_nv2].spv != NULL;
    dev->caps.coopmat_khr = dev->caps.coopmat_nv2 = dev->caps.fp16 = true;
    dev->caps.maintenance4 = dev->caps.vulkan_memory_model = true;
    dev->caps.max_shared_memory = 49152;
    dev->caps.max_wg_invocations = 1024;
    dev->caps.max_wg_size[0] = 1024;
    dev->caps.coopmat2_max_wg_size = 256;
    dev->caps.n_coopmat_shapes = 0;
    dev->caps.n_coopmat_flex = 1;
    dev->caps.coopmat_flex[0] =
        (vkpt_coopmat_flex){16, 16, 16, VKPT_CT_F16, VKPT_CT_F16, VKPT_CT_F32, VKPT_CT_F32, 2, 128};
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    if (compiled) {
        assert_int_equal(plan.prefill.variant, VKPT_V_attn_prefill_f16kv_nv2);
        assert_int_equal(plan.prefill.wg, 128);
        assert_int_equal(10 % plan.prefill.heads, 0); /* group 10 */
        assert_int_equal(plan.prefill.heads, 10);
        assert_int_equal(plan.prefill.n_hsplit, 1);
        assert_int_equal(plan.prefill.n_items, (40 + 6 - 1) / 6); /* 64 / 10 = 6 tokens */
    }
    assert_int_equal(plan.decode.variant, VKPT_V_attn_decode_f16kv);
    p.n_head = 14; /* group 7: 7 heads, 9 tokens per workgroup */
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    if (compiled) assert_int_equal(plan.prefill.heads, 7);
    p.coopmat = false; /* not allowed... */
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    assert_int_equal(plan.prefill.variant, VKPT_V_attn_prefill_f16kv);
    dev->coopmat_auto = true; /* ...unless the device opted in */
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    assert_int_equal(plan.prefill.variant,
                     compiled ? VKPT_V_attn_prefill_f16kv_nv2 : VKPT_V_attn_prefill_f16kv);
    dev->caps.coopmat_flex[0].k_gran = 32; /* head_dim 80 is not a multiple */
    p.head_dim = 80;
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    assert_int_equal(plan.prefill.variant, VKPT_V_attn_prefill_f16kv);
    p.head_dim = 128;
    dev->caps.coopmat_flex[0].k_gran = 16;
    dev->caps.coopmat_flex[0].scope = 3; /* subgroup scope: not NV2's workgroup matrices */
    assert_int_equal(vkpt_attn_plan_make(dev, &p, &seq, 1, meta, 256, &plan), 0);
    assert_int_equal(plan.prefill.variant, VKPT_V_attn_prefill_f16kv);
    dev->caps = saved;
    dev->coopmat_auto = saved_auto;
}

/* On a device with cooperative matrices, each cooperative prefill it has
 * (NV2's, KHR's) against the reference (bound ATTN_TOL_COOPMAT for its
 * rows); each one the device lacks is reported, and the test is skipped
 * when it has none. */
static void attn_coopmat_prefill_matches_reference(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    static const struct {
        const char *name;
        int variant;
        bool no_nv2;
    } paths[] = {{"attn_prefill_f16kv_nv2", VKPT_V_attn_prefill_f16kv_nv2, false},
                 {"attn_prefill_f16kv_coopmat", VKPT_V_attn_prefill_f16kv_coopmat, true}};
    int ran = 0;
    for (size_t k = 0; k < sizeof paths / sizeof paths[0]; k++) {
        vkpt_attn_params probe = {.n_head = 8,
                                  .n_kv_head = 2,
                                  .head_dim = 64,
                                  .coopmat = true,
                                  .no_nv2 = paths[k].no_nv2};
        vkpt_attn_seq seq = {0, 40, 40, 0};
        uint32_t meta[256];
        vkpt_attn_plan plan;
        assert_int_equal(vkpt_attn_plan_make(dev, &probe, &seq, 1, meta, 256, &plan), 0);
        if (plan.prefill.variant != paths[k].variant) {
            fprintf(stderr, "# %s: not available on %s: skipped\n", paths[k].name, dev->caps.name);
            continue;
        }
        fprintf(stderr, "# %s: running on %s\n", paths[k].name, dev->caps.name);
        ran++;
        vkpt_cmd c;
        assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
        vkpt_test_rng r;
        vkpt_test_rng_init(&r, 700);
        static const uint32_t cfg[][3] = {{8, 2, 64}, {4, 4, 128}, {16, 2, 16}, {6, 2, 256},
                                          {8, 1, 80}, {20, 1, 64}, {14, 2, 96}};
        for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
            vkpt_attn_params p = {.n_head = cfg[i][0],
                                  .n_kv_head = cfg[i][1],
                                  .head_dim = cfg[i][2],
                                  .coopmat = true,
                                  .no_nv2 = paths[k].no_nv2};
            batch b;
            batch_make(&b, &r, &p, mixed, sizeof mixed / sizeof mixed[0], 0);
            vkpt_attn_plan pl = batch_run(dev, &c, &b, paths[k].name);
            assert_int_equal(pl.prefill.variant, paths[k].variant);
            batch_free(&b);
            /* a sliding window and softcap on the same path */
            vkpt_attn_params pw = p;
            pw.window = 7;
            pw.softcap = 3.0f;
            batch_make(&b, &r, &pw, mixed, sizeof mixed / sizeof mixed[0], 0);
            batch_run(dev, &c, &b, paths[k].name);
            batch_free(&b);
        }
        vkpt_cmd_free(&c);
    }
    if (!ran) skip();
}

#define T(fn) cmocka_unit_test_teardown(fn, vkpt_test_check_validation)
int main(void)
{
    const struct CMUnitTest tests[] = {
        T(attn_kv_write_fills_the_right_slots),
        T(attn_mixed_batch_across_gqa_ratios),
        T(attn_every_supported_head_dim),
        T(attn_window_non_causal_softcap_and_scale),
        T(attn_decode_splits_merge_exactly),
        T(attn_step_end_to_end_against_f32_kv),
        T(attn_plan_rejects_bad_batches),
        T(attn_plan_picks_coopmat_only_when_caps_say_so),
        T(attn_plan_picks_nv2_only_when_caps_say_so),
        T(attn_coopmat_prefill_matches_reference),
    };
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
