/* Kernel benchmark for the quantized-weight kernels (`vkpt bench kernels`):
 * times each kernel path on each weight format at a model-like shape and
 * checks a sample of its outputs against the C reference, so a fast but
 * wrong kernel cannot pass unnoticed.
 *
 * Weights are random N(0,1) rows quantized by the reference quantizer; only
 * 64 distinct rows are quantized (the K-quant search is slow on the host)
 * and repeated down the M rows, which the kernels cannot tell apart from a
 * real matrix. Times are host-measured over command buffers of several
 * calls separated by barriers (each call runs alone, as in a forward pass);
 * the best of `reps` is reported.
 *
 * Expert matmuls (moe_matvec, moe_prefill rows): MOE_EXPERTS experts of M/4
 * rows each, MOE_K chosen per token; decode reads the 2 chosen experts'
 * weights only, so its GB/s compares with the dense matvec's. */
#include "k_matmul.h"
#include "k_moe.h"
#include "vkpt/bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define DISTINCT_ROWS 64
#define SAMPLE_ROWS   16
#define MOE_EXPERTS   8
#define MOE_K         2

static const uint32_t k_bench_types[] = {VKPT_Q_F32,  VKPT_Q_F16,  VKPT_Q_BF16, VKPT_Q_Q8_0,
                                         VKPT_Q_Q6_K, VKPT_Q_Q5_K, VKPT_Q_Q5_0, VKPT_Q_Q5_1,
                                         VKPT_Q_Q4_K, VKPT_Q_Q4_0, VKPT_Q_Q4_1};

typedef struct bench {
    vkpt_device *dev;
    vkpt_cmd c;
    int reps;
    uint32_t K, M, n_tok, type;
    uint64_t rb; /* bytes per weight row */
    float *deq;  /* [DISTINCT_ROWS][K] dequantized distinct rows */
    float *x;    /* [n_tok][K] */
    vkpt_buf w, bx, by, bxq, bids;
    /* experts: MOE_EXPERTS x (M / 4) rows from the same distinct rows */
    vkpt_buf wm, sp, ps, tl, my;
} bench;

/* deterministic normal-ish numbers (sum of uniforms), no global state */
static float rnd_normal(uint64_t *s)
{
    float acc = 0;
    for (int i = 0; i < 4; i++) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        acc += (float)(*s >> 40) / 16777216.0f;
    }
    return (acc - 2.0f) * 1.7320508f;
}

typedef int (*record_fn)(bench *b, const void *arg);

/* Best time of one call: a warm-up call (pipeline creation), then `reps`
 * command buffers of `passes` calls each, sized to ~50 ms per buffer. */
static int time_calls(bench *b, record_fn rec, const void *arg, double *us)
{
    int err;
    uint64_t t0 = vkpt_now_ns();
    if ((err = vkpt_cmd_begin(&b->c)) || (err = rec(b, arg)) || (err = vkpt_cmd_run(&b->c)))
        return err;
    double first = (vkpt_now_ns() - t0) / 1e3;
    if ((err = vkpt_cmd_begin(&b->c)) || (err = rec(b, arg)) || (err = vkpt_cmd_run(&b->c)))
        return err;
    double second = (vkpt_now_ns() - t0) / 1e3 - first;
    int passes = second > 0 ? (int)(50000.0 / second) : 50;
    passes = passes < 1 ? 1 : passes > 50 ? 50 : passes;
    *us = 1e30;
    for (int r = 0; r < b->reps; r++) {
        if ((err = vkpt_cmd_begin(&b->c))) return err;
        for (int p = 0; p < passes; p++) {
            if ((err = rec(b, arg))) return err;
            vkpt_cmd_barrier(&b->c);
        }
        t0 = vkpt_now_ns();
        if ((err = vkpt_cmd_run(&b->c))) return err;
        double t = (vkpt_now_ns() - t0) / 1e3 / passes;
        if (t < *us) *us = t;
    }
    return 0;
}

static int rec_matmul(bench *b, const void *arg)
{
    return vkpt_k_matmul(&b->c, arg);
}

static int rec_get_rows(bench *b, const void *arg)
{
    (void)arg;
    return vkpt_k_get_rows(&b->c, b->type, &b->w, b->K, b->M, &b->bids, b->n_tok, &b->by);
}

static int rec_quantize(bench *b, const void *arg)
{
    (void)arg;
    return vkpt_k_quantize_act(&b->c, &b->bx, b->n_tok, b->K, &b->bxq);
}

/* Worst |y - ref| / sum|w||x| over sampled rows and up to 4 tokens, with x
 * given as floats (xd) for the reference. */
static double check_rows(const bench *b, const float *xd, uint32_t n_tok, const float *y)
{
    double worst = 0;
    for (uint32_t s = 0; s < SAMPLE_ROWS; s++) {
        uint32_t m = (uint32_t)((uint64_t)(b->M - 1) * s / (SAMPLE_ROWS - 1));
        const float *w = b->deq + (size_t)(m % DISTINCT_ROWS) * b->K;
        for (uint32_t t = 0; t < n_tok && t < 4; t++) {
            double ref = 0, mag = 0;
            for (uint32_t k = 0; k < b->K; k++) {
                ref += (double)w[k] * xd[(size_t)t * b->K + k];
                mag += fabs((double)w[k] * xd[(size_t)t * b->K + k]);
            }
            double e = fabs(y[(size_t)t * b->M + m] - ref) / (mag > 0 ? mag : 1);
            if (!(e <= worst)) worst = isnan(e) ? INFINITY : e;
        }
    }
    return worst;
}

static bool want(const vkpt_kbench_opts *o, const char *name)
{
    return !o->filter || !*o->filter || strstr(name, o->filter);
}

static void type_slug(uint32_t t, char *out, size_t cap)
{
    const char *n = vkpt_qtype_get(t)->name;
    size_t i = 0;
    for (; n[i] && i + 1 < cap; i++) out[i] = (char)(n[i] >= 'A' && n[i] <= 'Z' ? n[i] + 32 : n[i]);
    out[i] = 0;
}

static void bench_release(bench *b)
{
    vkpt_buf_free(b->dev, &b->wm);
    vkpt_buf_free(b->dev, &b->sp);
    vkpt_buf_free(b->dev, &b->ps);
    vkpt_buf_free(b->dev, &b->tl);
    vkpt_buf_free(b->dev, &b->my);
    vkpt_buf_free(b->dev, &b->w);
    vkpt_buf_free(b->dev, &b->bx);
    vkpt_buf_free(b->dev, &b->by);
    vkpt_buf_free(b->dev, &b->bxq);
    vkpt_buf_free(b->dev, &b->bids);
    vkpt_free(b->deq);
    vkpt_free(b->x);
    b->deq = b->x = NULL;
}

/* Weights, activations and outputs of one type on the device. */
static int bench_setup(bench *b, uint32_t type)
{
    b->type = type;
    b->rb = vkpt_qtype_row_bytes(type, b->K);
    uint32_t K = b->K, R = DISTINCT_ROWS;
    uint64_t s = 0x9E3779B97F4A7C15ull ^ type;
    uint8_t *q = vkpt_malloc(b->rb * R);
    float *src = vkpt_malloc((size_t)K * sizeof *src);
    b->deq = vkpt_malloc((size_t)R * K * sizeof *b->deq);
    b->x = vkpt_malloc((size_t)b->n_tok * K * sizeof *b->x);
    int err = q && src && b->deq && b->x ? 0 : vkpt_fail(VKPT_ENOMEM, "bench buffers");
    for (uint32_t r = 0; r < R && !err; r++) {
        for (uint32_t k = 0; k < K; k++) src[k] = rnd_normal(&s);
        err = vkpt_quantize_row(type, src, q + r * b->rb, K);
        if (!err) err = vkpt_dequantize_row(type, q + r * b->rb, b->deq + (size_t)r * K, K);
    }
    for (size_t i = 0; !err && i < (size_t)b->n_tok * K; i++) b->x[i] = rnd_normal(&s);
    uint64_t wbytes = b->rb * b->M;
    if (!err) err = vkpt_buf_alloc(b->dev, wbytes, VKPT_MK_DEVICE, VKPT_MEM_WEIGHTS, &b->w);
    /* the distinct rows, repeated: upload in slices of whole groups */
    for (uint64_t r0 = 0; r0 < b->M && !err; r0 += R) {
        uint64_t n = b->M - r0 < R ? b->M - r0 : R;
        err = vkpt_buf_upload(b->dev, &b->w, r0 * b->rb, q, n * b->rb);
    }
    uint64_t xb = (uint64_t)b->n_tok * K * 4;
    if (!err) err = vkpt_buf_alloc(b->dev, xb, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b->bx);
    if (!err) err = vkpt_buf_upload(b->dev, &b->bx, 0, b->x, xb);
    uint64_t yb = (uint64_t)b->n_tok * (K > b->M ? K : b->M) * 4; /* also get_rows' output */
    if (!err) err = vkpt_buf_alloc(b->dev, yb, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b->by);
    uint64_t qb = vkpt_k_quantize_act_bytes(b->n_tok, K);
    if (!err) err = vkpt_buf_alloc(b->dev, qb, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b->bxq);
    if (!err)
        err = vkpt_buf_alloc(b->dev, b->n_tok * 4ull, VKPT_MK_UPLOAD, VKPT_MEM_SCRATCH, &b->bids);
    for (uint32_t i = 0; !err && i < b->n_tok; i++) {
        uint32_t id = (uint32_t)((uint64_t)i * 2654435761u % b->M);
        err = vkpt_buf_upload(b->dev, &b->bids, i * 4ull, &id, 4);
    }
    vkpt_free(q);
    vkpt_free(src);
    return err;
}

/* ---- expert matmuls ---------------------------------------------------------------- */

static int rec_moe(bench *b, const void *arg)
{
    return vkpt_k_moe_matmul(&b->c, arg);
}

/* Expert j of token t (deterministic, k distinct per token). */
static uint32_t moe_expert(uint32_t t, uint32_t j)
{
    return (uint32_t)((t * 5u + 1u + j * 3u) % MOE_EXPERTS);
}

/* Stacked experts (once per type), the routing lists of n_tok tokens, time
 * the expert matmul on `path` and check sampled slots. */
static int run_moe(bench *b, int path, uint32_t n_tok, const char *name,
                   void (*cb)(const vkpt_kbench_row *, void *), void *ud)
{
    const uint32_t Me = b->M / 4 ? b->M / 4 : 1, E = MOE_EXPERTS, np = n_tok * MOE_K;
    int err = 0;
    /* rows of the dense weights repeat the distinct rows: copying chunks of
     * a multiple of DISTINCT_ROWS keeps row i of the experts distinct row
     * i % DISTINCT_ROWS (all of W when it has fewer rows: then i % M) */
    const uint64_t chunk = b->M >= DISTINCT_ROWS ? b->M / DISTINCT_ROWS * DISTINCT_ROWS : b->M;
    if (!b->wm.buf) {
        err = vkpt_buf_alloc(b->dev, b->rb * Me * E, VKPT_MK_DEVICE, VKPT_MEM_WEIGHTS, &b->wm);
        if (!err) err = vkpt_cmd_begin(&b->c);
        for (uint64_t r0 = 0; r0 < (uint64_t)Me * E && !err; r0 += chunk) {
            uint64_t n = (uint64_t)Me * E - r0 < chunk ? (uint64_t)Me * E - r0 : chunk;
            vkpt_cmd_copy(&b->c, &b->w, 0, &b->wm, r0 * b->rb, n * b->rb);
        }
        if (!err) err = vkpt_cmd_run(&b->c);
    }
    uint32_t tile;
    int p = err ? err : vkpt_k_moe_plan(b->dev, b->type, n_tok, MOE_K, E, path, &tile);
    if (p < 0) return p;
    uint64_t tw = vkpt_moe_tiles_words(np, E, tile);
    uint32_t *ids = vkpt_malloc(np * 4ull), *sp = vkpt_malloc(np * 4ull),
             *ps = vkpt_malloc(np * 4ull), *tl = vkpt_malloc(tw * 4);
    float *y = vkpt_malloc((size_t)np * Me * 4);
    if (!ids || !sp || !ps || !tl || !y) err = vkpt_fail(VKPT_ENOMEM, "bench moe");
    for (uint32_t i = 0; !err && i < np; i++) ids[i] = moe_expert(i / MOE_K, i % MOE_K);
    if (!err) err = vkpt_ref_moe_sort(ids, np, E, tile, sp, ps, tl);
    vkpt_buf_free(b->dev, &b->sp);
    vkpt_buf_free(b->dev, &b->ps);
    vkpt_buf_free(b->dev, &b->tl);
    vkpt_buf_free(b->dev, &b->my);
    if (!err) err = vkpt_buf_alloc(b->dev, np * 4ull, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b->sp);
    if (!err) err = vkpt_buf_alloc(b->dev, np * 4ull, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b->ps);
    if (!err) err = vkpt_buf_alloc(b->dev, tw * 4, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b->tl);
    if (!err)
        err =
            vkpt_buf_alloc(b->dev, (uint64_t)np * Me * 4, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b->my);
    if (!err) err = vkpt_buf_upload(b->dev, &b->sp, 0, sp, np * 4ull);
    if (!err) err = vkpt_buf_upload(b->dev, &b->ps, 0, ps, np * 4ull);
    if (!err) err = vkpt_buf_upload(b->dev, &b->tl, 0, tl, tw * 4);
    vkpt_moe_lists l = {.slot_pair = b->sp,
                        .pair_slot = b->ps,
                        .tiles = b->tl,
                        .n_pairs = np,
                        .n_expert = E,
                        .tile = tile};
    vkpt_moe_mm_args a = {.wtype = b->type,
                          .w = b->wm,
                          .K = b->K,
                          .M = Me,
                          .n_expert = E,
                          .x = b->bx,
                          .x_k = MOE_K,
                          .lists = &l,
                          .y = b->my,
                          .path = p};
    vkpt_kbench_row row = {.K = b->K, .M = Me, .n_tok = n_tok};
    snprintf(row.name, sizeof row.name, "%s", name);
    if (!err) err = time_calls(b, rec_moe, &a, &row.us);
    if (!err) {
        uint32_t hit = 0;
        for (uint32_t e = 0; e < E; e++) hit += tl[1 + e + 1] > tl[1 + e];
        uint64_t bytes = (uint64_t)hit * Me * b->rb + (uint64_t)n_tok * b->K * 4 + np * Me * 4ull;
        row.gbps = bytes / (row.us * 1e3);
        row.gflops = 2.0 * b->K * Me * np / (row.us * 1e3);
        err = vkpt_buf_download(b->dev, &b->my, 0, y, (uint64_t)np * Me * 4);
    }
    for (uint32_t s = 0; !err && s < SAMPLE_ROWS; s++) { /* sampled (pair, row) */
        uint32_t pr = (uint32_t)((uint64_t)(np - 1) * s / (SAMPLE_ROWS - 1));
        uint32_t m = (uint32_t)((uint64_t)(Me - 1) * s / (SAMPLE_ROWS - 1));
        const float *w =
            b->deq + (size_t)((ids[pr] * (uint64_t)Me + m) % chunk % DISTINCT_ROWS) * b->K;
        const float *x = b->x + (size_t)(pr / MOE_K) * b->K;
        double ref = 0, mag = 0;
        for (uint32_t k = 0; k < b->K; k++)
            ref += (double)w[k] * x[k], mag += fabs((double)w[k] * x[k]);
        double e = fabs(y[(size_t)ps[pr] * Me + m] - ref) / (mag > 0 ? mag : 1);
        if (!(e <= row.check)) row.check = isnan(e) ? INFINITY : e;
    }
    if (!err) {
        row.ok = row.check <= 4.0 * b->K * 0x1p-24;
        cb(&row, ud);
    }
    vkpt_free(ids), vkpt_free(sp), vkpt_free(ps), vkpt_free(tl), vkpt_free(y);
    return err;
}

/* One matvec/matmul row: time it, then check sampled outputs. */
static int run_mm(bench *b, int path, uint32_t n_tok, const char *name,
                  void (*cb)(const vkpt_kbench_row *, void *), void *ud)
{
    vkpt_device *dev = b->dev;
    vkpt_mm_args a = {.wtype = b->type,
                      .w = b->w,
                      .K = b->K,
                      .M = b->M,
                      .n_tok = n_tok,
                      .x = b->bx,
                      .y = b->by,
                      .path = path};
    int err;
    const bool intdot = path == VKPT_MM_MATVEC_INTDOT;
    if (intdot) { /* the q8 activations, made once, outside the timing */
        a.xq = b->bxq;
        if ((err = vkpt_cmd_begin(&b->c)) ||
            (err = vkpt_k_quantize_act(&b->c, &b->bx, n_tok, b->K, &b->bxq)) ||
            (err = vkpt_cmd_run(&b->c)))
            return err;
    }
    vkpt_kbench_row row = {.K = b->K, .M = b->M, .n_tok = n_tok};
    snprintf(row.name, sizeof row.name, "%s", name);
    if ((err = time_calls(b, rec_matmul, &a, &row.us))) return err;
    uint64_t bytes = b->rb * b->M + (uint64_t)n_tok * b->M * 4 +
                     (intdot ? vkpt_k_quantize_act_bytes(n_tok, b->K) : (uint64_t)n_tok * b->K * 4);
    row.gbps = bytes / (row.us * 1e3);
    row.gflops = 2.0 * b->K * b->M * n_tok / (row.us * 1e3);

    /* check: the reference gets the activations the kernel saw */
    size_t nx = (size_t)n_tok * b->K;
    float *y = vkpt_malloc((size_t)n_tok * b->M * 4), *xd = vkpt_malloc(nx * 4);
    int8_t *q = intdot ? vkpt_malloc(nx) : NULL;
    float *d = intdot ? vkpt_malloc(nx / 32 * 4) : NULL;
    if (!y || !xd || (intdot && (!q || !d))) err = vkpt_fail(VKPT_ENOMEM, "bench check");
    if (!err) err = vkpt_buf_download(dev, &b->by, 0, y, (uint64_t)n_tok * b->M * 4);
    if (!err && intdot) err = vkpt_buf_download(dev, &b->bxq, 0, q, nx);
    if (!err && intdot) err = vkpt_buf_download(dev, &b->bxq, nx, d, nx / 32 * 4);
    for (size_t i = 0; !err && i < nx; i++) xd[i] = intdot ? (float)q[i] * d[i / 32] : b->x[i];
    if (!err) {
        row.check = check_rows(b, xd, n_tok, y);
        /* the bound tests/test_matmul.c uses; the coopmat kernels also round
         * weights and activations to f16 (2^-11 relative each) */
        bool f16 = path == VKPT_MM_MATMUL_COOPMAT || path == VKPT_MM_MATMUL_NV2;
        double bound = 4.0 * b->K * 0x1p-24 + (f16 ? 0x1p-10 : 0);
        row.ok = row.check <= bound;
        cb(&row, ud);
    }
    vkpt_free(y);
    vkpt_free(xd);
    vkpt_free(q);
    vkpt_free(d);
    return err;
}

static int run_get_rows(bench *b, const char *name, void (*cb)(const vkpt_kbench_row *, void *),
                        void *ud)
{
    vkpt_kbench_row row = {.K = b->K, .M = b->M, .n_tok = b->n_tok};
    snprintf(row.name, sizeof row.name, "%s", name);
    int err = time_calls(b, rec_get_rows, NULL, &row.us);
    if (err) return err;
    row.gbps = (double)b->n_tok * (b->rb + b->K * 4ull) / (row.us * 1e3);
    float *out = vkpt_malloc((size_t)b->n_tok * b->K * 4);
    if (!out) return vkpt_fail(VKPT_ENOMEM, "bench check");
    err = vkpt_buf_download(b->dev, &b->by, 0, out, (uint64_t)b->n_tok * b->K * 4);
    row.ok = !err;
    for (uint32_t i = 0; !err && i < b->n_tok; i++) {
        uint32_t id = (uint32_t)((uint64_t)i * 2654435761u % b->M);
        if (memcmp(out + (size_t)i * b->K, b->deq + (size_t)(id % DISTINCT_ROWS) * b->K, b->K * 4))
            row.ok = false, row.check = 1;
    }
    vkpt_free(out);
    if (!err) cb(&row, ud);
    return err;
}

int vkpt_bench_kernels(vkpt_device *dev, const vkpt_kbench_opts *opts_in,
                       void (*cb)(const vkpt_kbench_row *row, void *ud), void *ud)
{
    if (!dev || !cb) return vkpt_fail(VKPT_EINVAL, "vkpt_bench_kernels: NULL");
    vkpt_kbench_opts o = opts_in ? *opts_in : (vkpt_kbench_opts){0};
    bool cpu = dev->caps.type == VKPT_DEVICE_CPU;
    if (!o.K) o.K = cpu ? 2048 : 4096;
    if (!o.M) o.M = cpu ? 2048 : 14336;
    if (!o.n_tok) o.n_tok = cpu ? 32 : 512;
    if (o.reps < 1) o.reps = 3;
    if (o.K % 256)
        return vkpt_fail(VKPT_EINVAL, "bench kernels: K = %u must be a multiple of 256", o.K);
    bench b = {.dev = dev, .reps = o.reps, .K = o.K, .M = o.M, .n_tok = o.n_tok};
    int err = vkpt_cmd_init(dev, 0, &b.c);
    if (err) return err;
    static const int mv_paths[] = {VKPT_MM_MATVEC, VKPT_MM_MATVEC_SUBGROUP, VKPT_MM_MATVEC_INTDOT};
    bool quant_done = false;
    for (size_t t = 0; t < sizeof k_bench_types / sizeof k_bench_types[0] && !err; t++) {
        char slug[8], name[48];
        type_slug(k_bench_types[t], slug, sizeof slug);
        /* skip formats the filter excludes before paying for their setup */
        bool any = !quant_done && want(&o, "quantize_act/f32/q8");
        for (size_t p = 0; p < 3; p++) {
            snprintf(name, sizeof name, "matvec/%s/%s", slug, vkpt_mm_path_name(mv_paths[p]));
            any |= want(&o, name);
        }
        snprintf(name, sizeof name, "matmul/%s/matmul_coopmat", slug);
        any |= want(&o, name); /* also matches "matmul/<type>/matmul" */
        snprintf(name, sizeof name, "matmul/%s/matmul_nv2", slug);
        any |= want(&o, name);
        snprintf(name, sizeof name, "moe_matvec/%s/matvec_subgroup", slug);
        any |= want(&o, name); /* also matches "moe_matvec/<type>/matvec" */
        snprintf(name, sizeof name, "moe_prefill/%s/matvec_subgroup", slug);
        any |= want(&o, name);
        snprintf(name, sizeof name, "moe_prefill/%s/matmul", slug);
        any |= want(&o, name);
        snprintf(name, sizeof name, "get_rows/%s/-", slug);
        if (!(any |= want(&o, name))) continue;
        if ((err = bench_setup(&b, k_bench_types[t]))) break;
        for (size_t p = 0; p < 3 && !err; p++) {
            snprintf(name, sizeof name, "matvec/%s/%s", slug, vkpt_mm_path_name(mv_paths[p]));
            vkpt_mm_args probe = {.wtype = b.type, .n_tok = 1, .path = mv_paths[p], .xq = b.bxq};
            if (!want(&o, name) || vkpt_k_matmul_choose(dev, &probe) < 0) continue;
            err = run_mm(&b, mv_paths[p], 1, name, cb, ud);
        }
        /* the cooperative-matrix rows appear where the device has them */
        static const int mm_paths[] = {VKPT_MM_MATMUL, VKPT_MM_MATMUL_COOPMAT, VKPT_MM_MATMUL_NV2};
        for (size_t p = 0; p < 3 && !err; p++) {
            snprintf(name, sizeof name, "matmul/%s/%s", slug, vkpt_mm_path_name(mm_paths[p]));
            vkpt_mm_args probe = {.wtype = b.type, .n_tok = b.n_tok, .path = mm_paths[p]};
            if (!want(&o, name) || vkpt_k_matmul_choose(dev, &probe) < 0) continue;
            err = run_mm(&b, mm_paths[p], b.n_tok, name, cb, ud);
        }
        /* expert matmuls: decode (1 token) on the matvec paths, prefill
         * (n_tok tokens) on the matvec and tiled paths */
        static const struct {
            const char *op;
            int path;
            bool prefill;
        } moe_rows[] = {{"moe_matvec", VKPT_MOE_MATVEC, false},
                        {"moe_matvec", VKPT_MOE_MATVEC_SUBGROUP, false},
                        {"moe_prefill", VKPT_MOE_MATVEC_SUBGROUP, true},
                        {"moe_prefill", VKPT_MOE_MATMUL, true}};
        for (size_t i = 0; i < sizeof moe_rows / sizeof moe_rows[0] && !err; i++) {
            uint32_t nt = moe_rows[i].prefill ? b.n_tok : 1, tile;
            snprintf(name, sizeof name, "%s/%s/%s", moe_rows[i].op, slug,
                     vkpt_moe_path_name(moe_rows[i].path));
            if (!want(&o, name) ||
                vkpt_k_moe_plan(dev, b.type, nt, MOE_K, MOE_EXPERTS, moe_rows[i].path, &tile) < 0)
                continue;
            err = run_moe(&b, moe_rows[i].path, nt, name, cb, ud);
        }
        snprintf(name, sizeof name, "get_rows/%s/-", slug);
        if (!err && want(&o, name)) err = run_get_rows(&b, name, cb, ud);
        if (!err && !quant_done && want(&o, "quantize_act/f32/q8")) {
            vkpt_kbench_row row = {.K = b.K, .M = 0, .n_tok = b.n_tok, .ok = true};
            snprintf(row.name, sizeof row.name, "quantize_act/f32/q8");
            if (!(err = time_calls(&b, rec_quantize, NULL, &row.us))) {
                row.gbps = (double)(b.n_tok * (uint64_t)b.K * 4 +
                                    vkpt_k_quantize_act_bytes(b.n_tok, b.K)) /
                           (row.us * 1e3);
                cb(&row, ud);
            }
            quant_done = true;
        }
        bench_release(&b);
    }
    bench_release(&b);
    vkpt_cmd_free(&b.c);
    return err;
}
