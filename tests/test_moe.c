/* engine/kernels/k_moe.c on the GPU against the C references: routing
 * (softmax and sigmoid, top-k, p-norm renormalization), the dispatch lists
 * (counts, prefix sum, slots, tiles), the expert matmuls for every weight
 * format on every path, the combine with and without a shared expert, the
 * whole expert FFN chained as the runtime chains it, and the property that
 * makes MoE decode fast: only the chosen experts' weights are read.
 *
 * Error bound of the expert matmuls: tests/test_matmul.c's,
 *   |y - ref| <= 4 K eps * sum_k |w_mk| |x_k|,  eps = 2^-24,
 * per output, the reference accumulating in double. Routing weights are
 * f32 softmax/sigmoid arithmetic: within 1e-5 relative of the double
 * reference (a few ulp of exp, the sums and one division). */
#include "kernel_util.h"
#include "k_act.h"
#include "k_moe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint32_t k_types[] = {VKPT_Q_F32,  VKPT_Q_F16,  VKPT_Q_BF16, VKPT_Q_Q4_0,
                                   VKPT_Q_Q4_1, VKPT_Q_Q5_0, VKPT_Q_Q5_1, VKPT_Q_Q8_0,
                                   VKPT_Q_Q4_K, VKPT_Q_Q5_K, VKPT_Q_Q6_K};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

static const char *tname(uint32_t t)
{
    return vkpt_qtype_get(t)->name;
}

static vkpt_buf dev_buf(vkpt_device *dev, uint64_t bytes)
{
    vkpt_buf b;
    assert_int_equal(vkpt_buf_alloc(dev, bytes ? bytes : 4, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b),
                     0);
    return b;
}

static vkpt_buf upload(vkpt_device *dev, const void *p, uint64_t bytes)
{
    vkpt_buf b = dev_buf(dev, bytes);
    assert_int_equal(vkpt_buf_upload(dev, &b, 0, p, bytes), 0);
    return b;
}

/* k distinct experts per token, uniformly at random (or all from `only`
 * when it is not NULL: a skewed routing). */
static void rand_route(vkpt_test_rng *r, uint32_t n_tok, uint32_t k, uint32_t E, uint32_t *ids)
{
    for (uint32_t t = 0; t < n_tok; t++)
        for (uint32_t j = 0; j < k; j++) {
            uint32_t e;
            bool again;
            do {
                e = (uint32_t)(vkpt_test_rng_u64(r) % E);
                again = false;
                for (uint32_t i = 0; i < j; i++) again |= ids[t * k + i] == e;
            } while (again);
            ids[t * k + j] = e;
        }
}

/* ---- routing ---------------------------------------------------------------------- */

static void route_case(vkpt_device *dev, vkpt_cmd *c, vkpt_test_rng *r, vkpt_moe_route_cfg cfg,
                       uint32_t n_rows, uint32_t stride, uint32_t off)
{
    uint32_t E = cfg.n_expert, K = cfg.k;
    size_t nl = (size_t)off + (size_t)n_rows * stride;
    float *l = malloc(nl * 4);
    for (size_t i = 0; i < nl; i++) l[i] = 2.0f * vkpt_test_rng_normal(r);
    uint32_t *ids = malloc(n_rows * K * 4), *want_ids = malloc(n_rows * K * 4);
    float *w = malloc(n_rows * K * 4), *want_w = malloc(n_rows * K * 4);
    vkpt_buf bl = upload(dev, l, nl * 4), bi = dev_buf(dev, n_rows * K * 4ull),
             bw = dev_buf(dev, n_rows * K * 4ull);
    vkpt_rows lr = vkpt_rows_of(&bl, off, stride);
    kt_begin(c);
    int err = vkpt_k_moe_route(c, &cfg, &lr, n_rows, &bi, &bw);
    if (err) fail_msg("route: %s", vkpt_errmsg(err));
    kt_run(c);
    kt_get(dev, &bi, ids, n_rows * K * 4);
    kt_get(dev, &bw, w, n_rows * K * 4);
    vkpt_ref_moe_route(&cfg, l + off, stride, n_rows, want_ids, want_w);
    for (uint32_t i = 0; i < n_rows * K; i++) {
        if (ids[i] != want_ids[i])
            fail_msg("route E %u k %u gating %d: row %u choice %u: expert %u, want %u", E, K,
                     cfg.gating, i / K, i % K, ids[i], want_ids[i]);
        if (!(fabs(w[i] - want_w[i]) <= 1e-5 * fabs(want_w[i]) + 1e-30))
            fail_msg("route E %u k %u gating %d norm %d: row %u choice %u: weight %.9g, want %.9g",
                     E, K, cfg.gating, cfg.norm, i / K, i % K, w[i], want_w[i]);
    }
    vkpt_buf_free(dev, &bl);
    vkpt_buf_free(dev, &bi);
    vkpt_buf_free(dev, &bw);
    free(l), free(ids), free(want_ids), free(w), free(want_w);
}

static void moe_route_matches_reference(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 1);
    static const vkpt_moe_route_cfg cfgs[] = {
        {4, 2, VKPT_MOE_SOFTMAX, true, 1, 1},     /* Mixtral fixture */
        {8, 2, VKPT_MOE_SOFTMAX, true, 1, 1},     /* Mixtral 8x7B */
        {60, 4, VKPT_MOE_SOFTMAX, false, 1, 1},   /* Qwen1.5-MoE: no renormalization */
        {128, 8, VKPT_MOE_SOFTMAX, true, 1, 1},   /* Qwen3-MoE */
        {16, 4, VKPT_MOE_SOFTMAX, true, 2.0f, 1}, /* DBRX with a p = 2 normalization */
        {64, 6, VKPT_MOE_SIGMOID, true, 1, 2.5f}, /* sigmoid gating with a routed scale */
        {256, 8, VKPT_MOE_SIGMOID, false, 1, 1},  /* sigmoid without renormalization */
        {512, 64, VKPT_MOE_SOFTMAX, true, 1, 1},  /* the limits */
        {5, 5, VKPT_MOE_SOFTMAX, true, 1, 1},     /* every expert */
    };
    static const uint32_t rows[] = {1, 37, 200};
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++)
        for (size_t n = 0; n < 3; n++)
            route_case(dev, &c, &r, cfgs[i], rows[n], cfgs[i].n_expert, 0);
    /* a row view inside a wider buffer: offset and stride */
    route_case(dev, &c, &r, cfgs[1], 37, 13, 5);
    vkpt_cmd_free(&c);
}

/* Ties go to the lower expert index, NaN ranks lowest (as the logits kernels). */
static void moe_route_breaks_ties_by_index(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    /* softmax: three equal maxima; sigmoid: the same with a NaN below them */
    float ls[8] = {1, 3, 0, 3, 0.5f, 3, -1, 2}, lg[8] = {1, 3, NAN, 3, 0.5f, 3, -1, 2};
    const uint32_t want[4] = {1, 3, 5, 7};
    vkpt_buf bl = kt_buf(dev, NULL, 64), bi = dev_buf(dev, 16), bw = dev_buf(dev, 16);
    for (int g = 0; g < 2; g++) {
        assert_int_equal(vkpt_buf_upload(dev, &bl, 0, g ? lg : ls, sizeof ls), 0);
        vkpt_moe_route_cfg cfg = {8, 4, g ? VKPT_MOE_SIGMOID : VKPT_MOE_SOFTMAX, false, 1, 1};
        vkpt_rows lr = vkpt_rows_of(&bl, 0, 8);
        kt_begin(&c);
        assert_int_equal(vkpt_k_moe_route(&c, &cfg, &lr, 1, &bi, &bw), 0);
        kt_run(&c);
        uint32_t ids[4];
        float w[4];
        kt_get(dev, &bi, ids, sizeof ids);
        kt_get(dev, &bw, w, sizeof w);
        assert_memory_equal(ids, want, sizeof ids);
        assert_true(w[0] == w[1] && w[1] == w[2] && w[2] > w[3]);
    }
    vkpt_buf_free(dev, &bl);
    vkpt_buf_free(dev, &bi);
    vkpt_buf_free(dev, &bw);
    vkpt_cmd_free(&c);
}

/* ---- dispatch lists ------------------------------------------------------------------- */

typedef struct lists_host {
    uint32_t *slot_pair, *pair_slot, *tiles;
    uint64_t tile_words;
} lists_host;

static void lists_make(vkpt_device *dev, uint32_t n_pairs, uint32_t E, uint32_t tile,
                       vkpt_moe_lists *l)
{
    memset(l, 0, sizeof *l);
    l->n_pairs = n_pairs;
    l->n_expert = E;
    l->tile = tile;
    l->slot_pair = kt_buf(dev, NULL, n_pairs * 4ull);
    l->pair_slot = kt_buf(dev, NULL, n_pairs * 4ull);
    l->tiles = kt_buf(dev, NULL, vkpt_moe_tiles_words(n_pairs, E, tile) * 4);
}

static void lists_free(vkpt_device *dev, vkpt_moe_lists *l)
{
    vkpt_buf_free(dev, &l->slot_pair);
    vkpt_buf_free(dev, &l->pair_slot);
    vkpt_buf_free(dev, &l->tiles);
}

/* The reference lists of ids, uploaded into l. */
static void lists_upload_ref(vkpt_device *dev, const uint32_t *ids, vkpt_moe_lists *l)
{
    uint64_t tw = vkpt_moe_tiles_words(l->n_pairs, l->n_expert, l->tile);
    uint32_t *sp = malloc(l->n_pairs * 4ull + 4), *ps = malloc(l->n_pairs * 4ull + 4),
             *tl = malloc(tw * 4);
    assert_int_equal(vkpt_ref_moe_sort(ids, l->n_pairs, l->n_expert, l->tile, sp, ps, tl), 0);
    assert_int_equal(vkpt_buf_upload(dev, &l->slot_pair, 0, sp, l->n_pairs * 4ull), 0);
    assert_int_equal(vkpt_buf_upload(dev, &l->pair_slot, 0, ps, l->n_pairs * 4ull), 0);
    assert_int_equal(vkpt_buf_upload(dev, &l->tiles, 0, tl, tw * 4), 0);
    free(sp), free(ps), free(tl);
}

static void sort_case(vkpt_device *dev, vkpt_cmd *c, const uint32_t *ids, uint32_t n_pairs,
                      uint32_t E, uint32_t tile)
{
    vkpt_moe_lists l;
    lists_make(dev, n_pairs, E, tile, &l);
    vkpt_buf bi = upload(dev, ids, n_pairs * 4ull);
    kt_begin(c);
    int err = vkpt_k_moe_sort(c, &bi, &l);
    if (err) fail_msg("sort: %s", vkpt_errmsg(err));
    kt_run(c);
    uint64_t tw = vkpt_moe_tiles_words(n_pairs, E, tile);
    uint32_t *sp = malloc(n_pairs * 4ull), *ps = malloc(n_pairs * 4ull), *tl = malloc(tw * 4);
    uint32_t *wsp = malloc(n_pairs * 4ull), *wps = malloc(n_pairs * 4ull), *wtl = malloc(tw * 4);
    assert_int_equal(vkpt_ref_moe_sort(ids, n_pairs, E, tile, wsp, wps, wtl), 0);
    kt_get(dev, &l.slot_pair, sp, n_pairs * 4ull);
    kt_get(dev, &l.pair_slot, ps, n_pairs * 4ull);
    kt_get(dev, &l.tiles, tl, tw * 4);
    for (uint32_t i = 0; i < n_pairs; i++) {
        if (sp[i] != wsp[i])
            fail_msg("sort %u pairs E %u: slot %u holds pair %u, want %u", n_pairs, E, i, sp[i],
                     wsp[i]);
        if (ps[i] != wps[i])
            fail_msg("sort %u pairs E %u: pair %u in slot %u, want %u", n_pairs, E, i, ps[i],
                     wps[i]);
    }
    /* the count, the prefix sums, then every tile record */
    for (uint32_t i = 0; i <= E + 1; i++)
        if (tl[i] != wtl[i])
            fail_msg("sort %u pairs E %u tile %u: header word %u = %u, want %u", n_pairs, E, tile,
                     i, tl[i], wtl[i]);
    assert_true(wtl[0] <= vkpt_moe_max_tiles(n_pairs, E, tile));
    uint32_t hdr = vkpt_moe_tiles_hdr(E);
    for (uint32_t t = 0; t < wtl[0]; t++)
        for (uint32_t w = 0; w < 3; w++)
            if (tl[hdr + 4 * t + w] != wtl[hdr + 4 * t + w])
                fail_msg("sort %u pairs E %u tile %u: tile %u word %u = %u, want %u", n_pairs, E,
                         tile, t, w, tl[hdr + 4 * t + w], wtl[hdr + 4 * t + w]);
    lists_free(dev, &l);
    vkpt_buf_free(dev, &bi);
    free(sp), free(ps), free(tl), free(wsp), free(wps), free(wtl);
}

static void moe_sort_matches_reference(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 2);
    static const struct {
        uint32_t n_tok, k, E;
    } shapes[] = {{1, 1, 1},    {1, 2, 8},     {3, 2, 4},     {37, 2, 8},
                  {200, 4, 60}, {512, 8, 128}, {300, 8, 512}, {700, 2, 8}};
    static const uint32_t tiles[] = {1, 2, 8, 32};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        uint32_t np = shapes[s].n_tok * shapes[s].k;
        uint32_t *ids = malloc(np * 4);
        rand_route(&r, shapes[s].n_tok, shapes[s].k, shapes[s].E, ids);
        for (size_t t = 0; t < 4; t++) sort_case(dev, &c, ids, np, shapes[s].E, tiles[t]);
        free(ids);
    }
    /* skewed: every token to experts 3 and 5 of 8 (tiles split one expert's
     * slots), past the shader's 1024-id staging chunk */
    uint32_t np = 1500 * 2, *ids = malloc(np * 4);
    for (uint32_t i = 0; i < np; i++) ids[i] = i % 2 ? 3 : 5;
    for (size_t t = 0; t < 4; t++) sort_case(dev, &c, ids, np, 8, tiles[t]);
    free(ids);
    vkpt_cmd_free(&c);
}

/* ---- expert matmuls --------------------------------------------------------------------- */

typedef struct experts {
    uint32_t type, K, M, E;
    uint8_t *q;   /* [E][M] rows in type's layout */
    float *deq;   /* [E][M][K] */
    vkpt_buf buf; /* q on the device */
} experts;

static uint32_t test_k(uint32_t t, bool aligned)
{
    uint32_t be = vkpt_qtype_get(t)->block_elems;
    if (be == 256) return 256 * 2;
    if (be == 32) return 32 * 5;
    return aligned ? 200 : 173;
}

static void experts_make(vkpt_device *dev, vkpt_test_rng *r, uint32_t type, uint32_t K, uint32_t M,
                         uint32_t E, experts *x)
{
    x->type = type, x->K = K, x->M = M, x->E = E;
    uint64_t rb = vkpt_qtype_row_bytes(type, K), rows = (uint64_t)M * E;
    float *src = malloc(K * 4);
    x->q = malloc(rb * rows);
    x->deq = malloc(rows * K * 4);
    for (uint64_t i = 0; i < rows; i++) {
        for (uint32_t k = 0; k < K; k++) src[k] = 0.5f * vkpt_test_rng_normal(r);
        assert_int_equal(vkpt_quantize_row(type, src, x->q + i * rb, K), 0);
        assert_int_equal(vkpt_dequantize_row(type, x->q + i * rb, x->deq + i * K, K), 0);
    }
    x->buf = upload(dev, x->q, rb * rows);
    free(src);
}

static void experts_free(vkpt_device *dev, experts *x)
{
    vkpt_buf_free(dev, &x->buf);
    free(x->q), free(x->deq);
}

/* y (n_pairs rows of y_stride) against W_e x[row] per slot, test_matmul's bound. */
static void check_slots(const char *what, const experts *w, const uint32_t *ids, uint32_t n_pairs,
                        const uint32_t *pair_slot, const float *x, uint32_t x_k, const float *y,
                        uint32_t y_stride)
{
    uint32_t K = w->K;
    for (uint32_t p = 0; p < n_pairs; p++) {
        uint32_t s = pair_slot[p];
        const float *xr = x + (size_t)(x_k ? p / x_k : s) * K;
        for (uint32_t m = 0; m < w->M; m++) {
            const float *wr = w->deq + ((size_t)ids[p] * w->M + m) * K;
            double ref = 0, mag = 0;
            for (uint32_t k = 0; k < K; k++) {
                ref += (double)wr[k] * xr[k];
                mag += fabs((double)wr[k] * xr[k]);
            }
            double got = y[(size_t)s * y_stride + m], err = fabs(got - ref);
            double lim = 4.0 * K * 0x1p-24 * mag + 1e-30;
            if (!(err <= lim))
                fail_msg("%s %s K %u M %u: pair %u (expert %u, slot %u) row %u = %.9g, want %.9g "
                         "(err %.3g > %.3g)",
                         what, tname(w->type), K, w->M, p, ids[p], s, m, got, ref, err, lim);
        }
    }
}

/* One expert matmul on `path` for n_tok tokens routed k of E ways, as gate
 * (x per token) and as down (x per slot, into a wider y). */
static void mm_case(vkpt_device *dev, vkpt_cmd *c, vkpt_test_rng *r, const experts *w,
                    uint32_t n_tok, uint32_t k, int path)
{
    uint32_t tile, np = n_tok * k, K = w->K, M = w->M;
    int p = vkpt_k_moe_plan(dev, w->type, n_tok, k, w->E, path, &tile);
    if (p < 0) fail_msg("plan %s: %s", vkpt_moe_path_name(path), vkpt_errmsg(p));
    assert_int_equal(p, path);
    uint32_t *ids = malloc(np * 4), *ps = malloc(np * 4), *sp = malloc(np * 4);
    uint32_t *tl = malloc(vkpt_moe_tiles_words(np, w->E, tile) * 4);
    rand_route(r, n_tok, k, w->E, ids);
    assert_int_equal(vkpt_ref_moe_sort(ids, np, w->E, tile, sp, ps, tl), 0);
    vkpt_moe_lists l;
    lists_make(dev, np, w->E, tile, &l);
    lists_upload_ref(dev, ids, &l);
    for (int down = 0; down < 2; down++) {
        uint32_t x_rows = down ? np : n_tok, ys = down ? M + 3 : M;
        float *x = kt_randf(r, (size_t)x_rows * K, -1, 1);
        float *y = malloc((size_t)np * ys * 4);
        vkpt_buf bx = upload(dev, x, (uint64_t)x_rows * K * 4),
                 by = kt_buf(dev, NULL, (uint64_t)np * ys * 4);
        vkpt_moe_mm_args a = {.wtype = w->type,
                              .w = w->buf,
                              .K = K,
                              .M = M,
                              .n_expert = w->E,
                              .x = bx,
                              .x_k = down ? 0 : k,
                              .lists = &l,
                              .y = by,
                              .y_stride = ys,
                              .path = path};
        kt_begin(c);
        int err = vkpt_k_moe_matmul(c, &a);
        if (err)
            fail_msg("moe_matmul %s %s: %s", vkpt_moe_path_name(path), tname(w->type),
                     vkpt_errmsg(err));
        kt_run(c);
        kt_get(dev, &by, y, (size_t)np * ys * 4);
        char what[64];
        snprintf(what, sizeof what, "%s %s n_tok %u k %u tile %u", vkpt_moe_path_name(path),
                 down ? "down" : "gate", n_tok, k, tile);
        check_slots(what, w, ids, np, ps, x, down ? 0 : k, y, ys);
        if (down) /* the columns past M are untouched */
            for (uint32_t s = 0; s < np; s++)
                for (uint32_t m = M; m < ys; m++) {
                    uint32_t bits;
                    memcpy(&bits, &y[(size_t)s * ys + m], 4);
                    assert_int_equal(bits, 0xffffffffu);
                }
        vkpt_buf_free(dev, &bx);
        vkpt_buf_free(dev, &by);
        free(x), free(y);
    }
    lists_free(dev, &l);
    free(ids), free(ps), free(sp), free(tl);
}

static void moe_matmul_matches_reference_on_every_path(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 3);
    static const int paths[] = {VKPT_MOE_MATVEC, VKPT_MOE_MATVEC_SUBGROUP, VKPT_MOE_MATMUL};
    /* token counts that give tiles of 1, 2, 4 and 8 slots on the matvec paths */
    static const uint32_t toks[] = {1, 2, 3, 13};
    for (size_t t = 0; t < N_TYPES; t++) {
        for (int aligned = 0; aligned < 2; aligned++) {
            if (aligned && vkpt_qtype_get(k_types[t])->block_elems > 1) continue;
            experts w;
            experts_make(dev, &r, k_types[t], test_k(k_types[t], aligned), 33, 5, &w);
            for (size_t p = 0; p < 3; p++) {
                uint32_t tile;
                if (vkpt_k_moe_plan(dev, w.type, 1, 2, 5, paths[p], &tile) < 0) {
                    assert_int_equal(paths[p], VKPT_MOE_MATVEC_SUBGROUP); /* optional */
                    continue;
                }
                for (size_t n = 0; n < 4; n++) mm_case(dev, &c, &r, &w, toks[n], 2, paths[p]);
            }
            experts_free(dev, &w);
        }
    }
    /* k = 1 and k = E, and more tokens than one matvec tile holds */
    experts w;
    experts_make(dev, &r, VKPT_Q_Q4_K, 256, 20, 4, &w);
    mm_case(dev, &c, &r, &w, 9, 1, VKPT_MOE_MATVEC);
    mm_case(dev, &c, &r, &w, 40, 4, VKPT_MOE_MATVEC);
    mm_case(dev, &c, &r, &w, 40, 4, VKPT_MOE_MATMUL);
    experts_free(dev, &w);
    vkpt_cmd_free(&c);
}

/* Decode reads only the chosen experts: the others hold NaN weights (F16
 * NaN; Q4_K with a NaN scale), which would poison any sum they entered. */
static void moe_decode_reads_only_chosen_experts(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 4);
    static const uint32_t types[] = {VKPT_Q_F16, VKPT_Q_Q4_K};
    static const int paths[] = {VKPT_MOE_MATVEC, VKPT_MOE_MATVEC_SUBGROUP, VKPT_MOE_MATMUL};
    const uint32_t E = 8, K = 256, M = 40, k = 2;
    uint32_t ids[2] = {6, 1};
    for (size_t t = 0; t < 2; t++) {
        experts w;
        experts_make(dev, &r, types[t], K, M, E, &w);
        uint64_t rb = vkpt_qtype_row_bytes(types[t], K);
        for (uint32_t e = 0; e < E; e++) {
            if (e == ids[0] || e == ids[1]) continue;
            for (uint64_t i = 0; i < (uint64_t)M * rb; i += 2) {
                /* F16: every element; Q4_K: d of every block (bytes 0..1 of 144) */
                if (types[t] == VKPT_Q_Q4_K && i % 144) continue;
                uint16_t nan = 0x7E00;
                memcpy(w.q + e * M * rb + i, &nan, 2);
            }
        }
        assert_int_equal(vkpt_buf_upload(dev, &w.buf, 0, w.q, E * M * rb), 0);
        for (size_t p = 0; p < 3; p++) {
            uint32_t tile;
            if (vkpt_k_moe_plan(dev, w.type, 1, k, E, paths[p], &tile) < 0) continue;
            vkpt_moe_lists l;
            lists_make(dev, k, E, tile, &l);
            lists_upload_ref(dev, ids, &l);
            float *x = kt_randf(&r, K, -1, 1), y[2 * 40];
            vkpt_buf bx = upload(dev, x, K * 4), by = kt_buf(dev, NULL, sizeof y);
            vkpt_moe_mm_args a = {.wtype = w.type,
                                  .w = w.buf,
                                  .K = K,
                                  .M = M,
                                  .n_expert = E,
                                  .x = bx,
                                  .x_k = k,
                                  .lists = &l,
                                  .y = by,
                                  .path = paths[p]};
            kt_begin(&c);
            assert_int_equal(vkpt_k_moe_matmul(&c, &a), 0);
            kt_run(&c);
            kt_get(dev, &by, y, sizeof y);
            uint32_t ps[2] = {1, 0}; /* expert 1 sorts first */
            check_slots(vkpt_moe_path_name(paths[p]), &w, ids, 2, ps, x, k, y, M);
            vkpt_buf_free(dev, &bx);
            vkpt_buf_free(dev, &by);
            lists_free(dev, &l);
            free(x);
        }
        experts_free(dev, &w);
    }
    vkpt_cmd_free(&c);
}

/* Stacked experts larger than one binding (lavapipe: 128 MiB): 10 F16
 * experts of 16 MiB run as expert chunks, with chosen experts on both
 * sides of the chunk boundary. */
static void moe_matmul_splits_experts_across_bindings(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    const uint32_t E = 10, K = 4096, M = 2048, k = 2, n_tok = 4;
    uint64_t rb = (uint64_t)K * 2, bytes = rb * M * E;
    if (bytes <= dev->caps.max_storage_buffer_range) {
        fprintf(stderr, "# %s: bindings of %llu bytes hold all experts; nothing to split\n",
                dev->caps.name, (unsigned long long)dev->caps.max_storage_buffer_range);
        return;
    }
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 5);
    uint16_t *q = malloc(bytes);
    for (uint64_t i = 0; i < bytes / 2; i++) q[i] = vkpt_f32_to_f16(vkpt_test_rng_f32(&r, -1, 1));
    vkpt_buf bw = upload(dev, q, bytes);
    uint32_t ids[8] = {0, 9, 7, 8, 2, 6, 9, 1}, ps[8], sp[8], tile;
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    assert_int_equal(vkpt_k_moe_plan(dev, VKPT_Q_F16, n_tok, k, E, VKPT_MOE_MATVEC, &tile),
                     VKPT_MOE_MATVEC);
    uint32_t *tl = malloc(vkpt_moe_tiles_words(8, E, tile) * 4);
    assert_int_equal(vkpt_ref_moe_sort(ids, 8, E, tile, sp, ps, tl), 0);
    vkpt_moe_lists l;
    lists_make(dev, 8, E, tile, &l);
    lists_upload_ref(dev, ids, &l);
    float *x = kt_randf(&r, (size_t)n_tok * K, -1, 1), *y = malloc(8ull * M * 4);
    vkpt_buf bx = upload(dev, x, (uint64_t)n_tok * K * 4), by = kt_buf(dev, NULL, 8ull * M * 4);
    vkpt_moe_mm_args a = {.wtype = VKPT_Q_F16,
                          .w = bw,
                          .K = K,
                          .M = M,
                          .n_expert = E,
                          .x = bx,
                          .x_k = k,
                          .lists = &l,
                          .y = by,
                          .path = VKPT_MOE_MATVEC};
    kt_begin(&c);
    assert_int_equal(vkpt_k_moe_matmul(&c, &a), 0);
    kt_run(&c);
    kt_get(dev, &by, y, 8ull * M * 4);
    for (uint32_t p = 0; p < 8; p++)
        for (uint32_t m = 0; m < M; m += 13) {
            const uint16_t *wr = q + ((uint64_t)ids[p] * M + m) * K;
            const float *xr = x + (size_t)(p / k) * K;
            double ref = 0, mag = 0;
            for (uint32_t kk = 0; kk < K; kk++) {
                double v = (double)vkpt_f16_to_f32(wr[kk]) * xr[kk];
                ref += v, mag += fabs(v);
            }
            double got = y[(size_t)ps[p] * M + m];
            if (!(fabs(got - ref) <= 4.0 * K * 0x1p-24 * mag))
                fail_msg("pair %u expert %u row %u: %.9g, want %.9g", p, ids[p], m, got, ref);
        }
    vkpt_buf_free(dev, &bw);
    vkpt_buf_free(dev, &bx);
    vkpt_buf_free(dev, &by);
    lists_free(dev, &l);
    free(q), free(x), free(y), free(tl);
    vkpt_cmd_free(&c);
}

/* ---- combine -------------------------------------------------------------------------------- */

static void moe_combine_matches_reference(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 6);
    const uint32_t n_rows = 37, n = 70, k = 3, np = n_rows * k, ys = 75;
    for (int mode = 0; mode < 4; mode++) { /* 0 plain, 1 accumulate, 2 + gated shared, 3 ungated */
        float *d = kt_randf(&r, (size_t)np * n, -1, 1), *w = kt_randf(&r, np, 0, 1);
        float *y0 = kt_randf(&r, (size_t)n_rows * ys, -1, 1),
              *sh = kt_randf(&r, (size_t)n_rows * n, -1, 1);
        float *g = kt_randf(&r, (size_t)n_rows * 2, -4, 4), *y = malloc((size_t)n_rows * ys * 4);
        uint32_t *ps = malloc(np * 4), *ids = malloc(np * 4), *sp = malloc(np * 4);
        uint32_t *tl = malloc(vkpt_moe_tiles_words(np, 5, 1) * 4);
        rand_route(&r, n_rows, k, 5, ids);
        assert_int_equal(vkpt_ref_moe_sort(ids, np, 5, 1, sp, ps, tl), 0);
        vkpt_buf bd = upload(dev, d, (size_t)np * n * 4), bw = upload(dev, w, np * 4);
        vkpt_buf by = upload(dev, y0, (size_t)n_rows * ys * 4), bp = upload(dev, ps, np * 4);
        vkpt_buf bs = upload(dev, sh, (size_t)n_rows * n * 4), bg = upload(dev, g, n_rows * 8);
        vkpt_moe_combine_args a = {.y = vkpt_rows_of(&by, 2, ys),
                                   .n_rows = n_rows,
                                   .n = n,
                                   .k = k,
                                   .accumulate = mode >= 1,
                                   .d = vkpt_rows_of(&bd, 0, n),
                                   .wts = bw,
                                   .pair_slot = bp};
        if (mode >= 2) a.shared = vkpt_rows_of(&bs, 0, n);
        if (mode == 2) a.gate = vkpt_rows_of(&bg, 1, 2); /* every other logit */
        kt_begin(&c);
        assert_int_equal(vkpt_k_moe_combine(&c, &a), 0);
        kt_run(&c);
        kt_get(dev, &by, y, (size_t)n_rows * ys * 4);
        for (uint32_t t = 0; t < n_rows; t++)
            for (uint32_t i = 0; i < ys; i++) {
                double want = y0[(size_t)t * ys + i], mag = fabs(want);
                if (i >= 2 && i < n + 2) {
                    double s = 0;
                    for (uint32_t j = 0; j < k; j++) {
                        double v = (double)w[t * k + j] * d[(size_t)ps[t * k + j] * n + i - 2];
                        s += v, mag += fabs(v);
                    }
                    if (mode >= 2) {
                        double gv = mode == 2 ? 1.0 / (1.0 + exp(-(double)g[t * 2 + 1])) : 1.0;
                        s += gv * sh[(size_t)t * n + i - 2];
                        mag += fabs(gv * sh[(size_t)t * n + i - 2]);
                    }
                    want = mode >= 1 ? want + s : s;
                }
                double got = y[(size_t)t * ys + i];
                if (!(fabs(got - want) <= 8 * 0x1p-24 * mag + 1e-30))
                    fail_msg("combine mode %d row %u col %u: %.9g, want %.9g", mode, t, i, got,
                             want);
            }
        vkpt_buf_free(dev, &bd), vkpt_buf_free(dev, &bw), vkpt_buf_free(dev, &by);
        vkpt_buf_free(dev, &bp), vkpt_buf_free(dev, &bs), vkpt_buf_free(dev, &bg);
        free(d), free(w), free(y0), free(sh), free(g), free(y), free(ps), free(ids), free(sp),
            free(tl);
    }
    vkpt_cmd_free(&c);
}

/* ---- the whole expert FFN, chained as the runtime does ----------------------------------------- */

static void ffn_case(vkpt_device *dev, vkpt_cmd *c, vkpt_test_rng *r, uint32_t type, uint32_t n_tok,
                     int path)
{
    const uint32_t E = 8, k = 2, K = 256, F = 96, np = n_tok * k;
    experts wg, wu, wd;
    experts_make(dev, r, type, K, F, E, &wg);
    experts_make(dev, r, type, K, F, E, &wu);
    experts_make(dev, r, VKPT_Q_F32, F, K, E, &wd); /* K of down = F: not a block multiple */
    float *router = kt_randf(r, (size_t)E * K, -0.2f, 0.2f),
          *x = kt_randf(r, (size_t)n_tok * K, -1, 1);
    float *logits = malloc((size_t)n_tok * E * 4);
    for (uint32_t t = 0; t < n_tok; t++)
        for (uint32_t e = 0; e < E; e++) {
            double s = 0;
            for (uint32_t i = 0; i < K; i++) s += (double)router[e * K + i] * x[t * K + i];
            logits[t * E + e] = (float)s;
        }
    uint32_t tile;
    int planned = vkpt_k_moe_plan(dev, type, n_tok, k, E, path, &tile);
    assert_true(planned > 0);
    if (path != VKPT_MOE_AUTO) assert_int_equal(planned, path);
    vkpt_moe_route_cfg cfg = {E, k, VKPT_MOE_SOFTMAX, true, 1, 1};
    vkpt_buf bl = upload(dev, logits, (size_t)n_tok * E * 4),
             bx = upload(dev, x, (size_t)n_tok * K * 4);
    vkpt_buf bi = dev_buf(dev, np * 4), bw = dev_buf(dev, np * 4);
    vkpt_buf gu = dev_buf(dev, (size_t)np * 2 * F * 4), act = dev_buf(dev, (size_t)np * F * 4);
    vkpt_buf dn = dev_buf(dev, (size_t)np * K * 4);
    float *y0 = kt_randf(r, (size_t)n_tok * K, -1, 1);
    vkpt_buf by = upload(dev, y0, (size_t)n_tok * K * 4);
    vkpt_moe_lists l;
    lists_make(dev, np, E, tile, &l);
    vkpt_rows lr = vkpt_rows_of(&bl, 0, E), gate, up, ar = vkpt_rows_of(&act, 0, F);
    vkpt_glu_split(&gu, F, &gate, &up);
    vkpt_buf up_view = vkpt_buf_view(&gu, (uint64_t)F * 4, gu.size - (uint64_t)F * 4);
    kt_begin(c);
    assert_int_equal(vkpt_k_moe_route(c, &cfg, &lr, n_tok, &bi, &bw), 0);
    vkpt_cmd_barrier(c);
    assert_int_equal(vkpt_k_moe_sort(c, &bi, &l), 0);
    vkpt_cmd_barrier(c);
    vkpt_moe_mm_args a = {.wtype = type,
                          .K = K,
                          .M = F,
                          .n_expert = E,
                          .x = bx,
                          .x_k = k,
                          .lists = &l,
                          .y_stride = 2 * F,
                          .path = path};
    a.w = wg.buf, a.y = gu;
    assert_int_equal(vkpt_k_moe_matmul(c, &a), 0);
    a.w = wu.buf, a.y = up_view;
    assert_int_equal(vkpt_k_moe_matmul(c, &a), 0);
    vkpt_cmd_barrier(c);
    assert_int_equal(vkpt_k_glu(c, VKPT_ACT_SILU, &gate, &up, &ar, F, np), 0);
    vkpt_cmd_barrier(c);
    vkpt_moe_mm_args d = {.wtype = VKPT_Q_F32,
                          .w = wd.buf,
                          .K = F,
                          .M = K,
                          .n_expert = E,
                          .x = act,
                          .x_k = 0,
                          .lists = &l,
                          .y = dn,
                          .path = path};
    assert_int_equal(vkpt_k_moe_matmul(c, &d), 0);
    vkpt_cmd_barrier(c);
    vkpt_moe_combine_args cb = {.y = vkpt_rows_of(&by, 0, K),
                                .n_rows = n_tok,
                                .n = K,
                                .k = k,
                                .accumulate = true,
                                .d = vkpt_rows_of(&dn, 0, K),
                                .wts = bw,
                                .pair_slot = l.pair_slot};
    assert_int_equal(vkpt_k_moe_combine(c, &cb), 0);
    kt_run(c);
    float *y = malloc((size_t)n_tok * K * 4), *want = malloc(K * 4);
    kt_get(dev, &by, y, (size_t)n_tok * K * 4);
    uint32_t *ids = malloc(np * 4);
    float *wts = malloc(np * 4);
    vkpt_ref_moe_route(&cfg, logits, E, n_tok, ids, wts);
    /* relative to the row's largest output (~100 here): the f32 chain (two
     * K = 256 dots, silu, an F = 96 dot, the weighted sum) is good to a few
     * 1e-7 of it; a wrong expert or weight is off by O(1) */
    double worst = 0;
    for (uint32_t t = 0; t < n_tok; t++) {
        vkpt_ref_moe_ffn_row(wg.deq, wu.deq, wd.deq, K, F, x + (size_t)t * K, ids + t * k,
                             wts + t * k, k, want);
        double mag = 0;
        for (uint32_t i = 0; i < K; i++) mag = fmax(mag, fabs(want[i]));
        for (uint32_t i = 0; i < K; i++) {
            double e = fabs(y[(size_t)t * K + i] - (y0[(size_t)t * K + i] + want[i])) / mag;
            if (e > worst) worst = e;
        }
    }
    if (!(worst < 4e-6))
        fail_msg("expert FFN %s %s n_tok %u: max error %.3g of the largest output", tname(type),
                 vkpt_moe_path_name(path), n_tok, worst);
    vkpt_buf_free(dev, &bl), vkpt_buf_free(dev, &bx), vkpt_buf_free(dev, &bi);
    vkpt_buf_free(dev, &bw), vkpt_buf_free(dev, &gu), vkpt_buf_free(dev, &act);
    vkpt_buf_free(dev, &dn), vkpt_buf_free(dev, &by);
    lists_free(dev, &l);
    experts_free(dev, &wg), experts_free(dev, &wu), experts_free(dev, &wd);
    free(router), free(x), free(logits), free(y0), free(y), free(want), free(ids), free(wts);
}

static void moe_ffn_chain_matches_reference(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 7);
    static const uint32_t toks[] = {1, 5, 40};
    for (size_t n = 0; n < 3; n++) {
        ffn_case(dev, &c, &r, VKPT_Q_Q8_0, toks[n], VKPT_MOE_AUTO);
        ffn_case(dev, &c, &r, VKPT_Q_F16, toks[n], VKPT_MOE_MATVEC);
        ffn_case(dev, &c, &r, VKPT_Q_Q4_K, toks[n], VKPT_MOE_MATMUL);
    }
    vkpt_cmd_free(&c);
}

/* ---- errors ------------------------------------------------------------------------------------ */

static void moe_rejects_bad_arguments(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_buf b = dev_buf(dev, 1 << 16), s = dev_buf(dev, 1 << 16);
    vkpt_rows lr = vkpt_rows_of(&b, 0, 8);
    uint32_t tile;
    kt_begin(&c);
    vkpt_moe_route_cfg cfg = {8, 9, VKPT_MOE_SOFTMAX, true, 1, 1}; /* k > n_expert */
    assert_int_equal(vkpt_k_moe_route(&c, &cfg, &lr, 4, &s, &s), VKPT_EINVAL);
    cfg = (vkpt_moe_route_cfg){600, 2, VKPT_MOE_SOFTMAX, true, 1, 1}; /* too many experts */
    assert_int_equal(vkpt_k_moe_route(&c, &cfg, &lr, 4, &s, &s), VKPT_EINVAL);
    cfg = (vkpt_moe_route_cfg){8, 2, 7, true, 1, 1}; /* unknown gating */
    assert_int_equal(vkpt_k_moe_route(&c, &cfg, &lr, 4, &s, &s), VKPT_EINVAL);
    cfg.gating = VKPT_MOE_SOFTMAX;
    assert_int_equal(vkpt_k_moe_route(&c, &cfg, &lr, 1 << 14, &s, &s), VKPT_EINVAL); /* rows */
    assert_int_equal(vkpt_k_moe_plan(dev, VKPT_Q_Q2_K, 1, 2, 8, VKPT_MOE_AUTO, &tile), VKPT_EINVAL);
    assert_int_equal(vkpt_k_moe_plan(dev, VKPT_Q_F16, 1, 2, 8, 9, &tile), VKPT_EINVAL);
    vkpt_moe_lists l = {
        .slot_pair = s, .pair_slot = s, .tiles = s, .n_pairs = 8, .n_expert = 8, .tile = 3};
    assert_int_equal(vkpt_k_moe_sort(&c, &b, &l), VKPT_EINVAL); /* tile not a power of two */
    l.tile = 1;
    assert_int_equal(vkpt_k_moe_sort(&c, &b, &l), 0);
    vkpt_moe_mm_args a = {.wtype = VKPT_Q_Q4_K,
                          .w = b,
                          .K = 256,
                          .M = 4,
                          .n_expert = 8,
                          .x = b,
                          .x_k = 2,
                          .lists = &l,
                          .y = s,
                          .path = VKPT_MOE_MATMUL};
    assert_int_equal(vkpt_k_moe_matmul(&c, &a), VKPT_EINVAL); /* matmul path, matvec tiles */
    a.path = VKPT_MOE_AUTO;
    a.K = 100; /* not whole super-blocks */
    assert_int_equal(vkpt_k_moe_matmul(&c, &a), VKPT_EINVAL);
    a.K = 256;
    a.M = 80; /* 8 experts of 80 Q4_K rows: 92 KB, W holds 64 KB */
    assert_int_equal(vkpt_k_moe_matmul(&c, &a), VKPT_EINVAL);
    a.M = 4;
    a.x_k = 3; /* 8 pairs are not whole tokens of 3 */
    assert_int_equal(vkpt_k_moe_matmul(&c, &a), VKPT_EINVAL);
    a.x_k = 2;
    a.x = vkpt_buf_view(&b, 4, 4096); /* quantized weights need 16-byte aligned x */
    assert_int_equal(vkpt_k_moe_matmul(&c, &a), VKPT_EINVAL);
    kt_run(&c);
    vkpt_buf_free(dev, &b);
    vkpt_buf_free(dev, &s);
    vkpt_cmd_free(&c);
}

int main(void)
{
#define T(f) cmocka_unit_test_teardown(f, vkpt_test_check_validation)
    const struct CMUnitTest tests[] = {
        T(moe_route_matches_reference),
        T(moe_route_breaks_ties_by_index),
        T(moe_sort_matches_reference),
        T(moe_matmul_matches_reference_on_every_path),
        T(moe_decode_reads_only_chosen_experts),
        T(moe_matmul_splits_experts_across_bindings),
        T(moe_combine_matches_reference),
        T(moe_ffn_chain_matches_reference),
        T(moe_rejects_bad_arguments),
    };
#undef T
    const char *filter = getenv("VKPT_TEST_FILTER");
    if (filter && *filter) cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
