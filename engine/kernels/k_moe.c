/* Launchers for the mixture-of-experts kernels (shaders/moe_route.comp,
 * moe_sort.comp, moe_matvec.comp, moe_matmul.comp, moe_combine.comp) and
 * their C references.
 *
 * Invariants: weight bindings start at an offset aligned to
 * max(minStorageBufferOffsetAlignment, 16) at or before the data (the
 * distance goes in the push constants) and stay within k_bind_max bytes (k_bind.h); the
 * expert matmul's grid covers vkpt_moe_max_tiles tiles, workgroups past the
 * sort's tile count return at once. */
#include "k_moe.h"

#include "k_bind.h"
#include "k_matmul.h"

#include <math.h>
#include <string.h>

/* ---- variants per weight format ------------------------------------------------ */

typedef struct moe_fmt {
    uint32_t type;
    int mv, mv_subgroup, mm;
} moe_fmt;

#define FMT(T, n)                                                                      \
    {                                                                                  \
        VKPT_Q_##T, VKPT_V_moe_matvec_##n##_f32, VKPT_V_moe_matvec_##n##_f32_subgroup, \
            VKPT_V_moe_matmul_##n##_f32                                                \
    }
static const moe_fmt k_fmts[] = {
    FMT(F32, f32),   FMT(F16, f16),   FMT(BF16, bf16), FMT(Q4_0, q4_0),
    FMT(Q4_1, q4_1), FMT(Q5_0, q5_0), FMT(Q5_1, q5_1), FMT(Q8_0, q8_0),
    FMT(Q4_K, q4k),  FMT(Q5_K, q5k),  FMT(Q6_K, q6k),
};
#undef FMT

static const moe_fmt *fmt_get(uint32_t type)
{
    for (size_t i = 0; i < sizeof k_fmts / sizeof k_fmts[0]; i++)
        if (k_fmts[i].type == type) return &k_fmts[i];
    return NULL;
}

static bool is_float_type(uint32_t t)
{
    return t == VKPT_Q_F32 || t == VKPT_Q_F16 || t == VKPT_Q_BF16;
}

/* ---- tuning: starting points per vendor (as k_matmul.c's), not yet measured ---- */

typedef struct moe_tune {
    uint32_t vendor_id;  /* 0: any other */
    uint32_t mv_wg;      /* matvec invocations per workgroup (power of two) */
    uint32_t mv_rows;    /* matvec rows per workgroup at 1..4 slots per tile (halved above) */
    uint32_t mm_bm;      /* tiled kernel: weight rows per workgroup (multiple of 16) */
    uint32_t mm_bn;      /* tiled kernel: slots per tile (16, 32 or 64) */
    uint32_t mm_min_tok; /* AUTO tiles from this many expected tokens per expert (0: never) */
} moe_tune;

static const moe_tune k_tune[] = {
    {0x10de, 128, 4, 64, 64, 16}, /* NVIDIA */
    {0x1002, 64, 4, 64, 64, 16},  /* AMD */
    {0x8086, 32, 4, 64, 32, 16},  /* Intel */
    /* Mesa lavapipe: barriers are coroutine switches, so the tiled kernel
     * loses to the matvec one at every size (as for dense weights) */
    {0x10005, 32, 1, 64, 32, 0},
    {0, 64, 4, 64, 32, 16},
};

static const moe_tune *tune_for(const vkpt_device *dev)
{
    size_t n = sizeof k_tune / sizeof k_tune[0];
    for (size_t i = 0; i + 1 < n; i++)
        if (k_tune[i].vendor_id == dev->caps.vendor_id) return &k_tune[i];
    return &k_tune[n - 1];
}

const char *vkpt_moe_path_name(int path)
{
    static const char *names[VKPT_MOE_PATH_COUNT] = {"auto", "matvec", "matvec_subgroup", "matmul"};
    return path >= 0 && path < VKPT_MOE_PATH_COUNT ? names[path] : "?";
}

/* ---- route ------------------------------------------------------------------------ */

static int check_cfg(const vkpt_moe_route_cfg *cfg)
{
    if (!cfg->n_expert || cfg->n_expert > VKPT_MOE_MAX_EXPERTS)
        return vkpt_fail(VKPT_EINVAL, "moe: %u experts (1..%d supported)", cfg->n_expert,
                         VKPT_MOE_MAX_EXPERTS);
    if (!cfg->k || cfg->k > cfg->n_expert || cfg->k > VKPT_MOE_MAX_K)
        return vkpt_fail(VKPT_EINVAL, "moe: %u experts per token of %u (at most %d)", cfg->k,
                         cfg->n_expert, VKPT_MOE_MAX_K);
    if (cfg->gating != VKPT_MOE_SOFTMAX && cfg->gating != VKPT_MOE_SIGMOID)
        return vkpt_fail(VKPT_EINVAL, "moe: unknown gating %d", cfg->gating);
    if (cfg->norm && !(cfg->norm_p >= 0.0f))
        return vkpt_fail(VKPT_EINVAL, "moe: normalization power %g", (double)cfg->norm_p);
    return 0;
}

int vkpt_k_moe_route(vkpt_cmd *c, const vkpt_moe_route_cfg *cfg, const vkpt_rows *logits,
                     uint32_t n_rows, const vkpt_buf *ids, const vkpt_buf *wts)
{
    if (!c || !cfg || !logits || !ids || !wts) return vkpt_fail(VKPT_EINVAL, "moe_route: NULL");
    int err = check_cfg(cfg);
    if (err) return err;
    uint64_t np = (uint64_t)n_rows * cfg->k;
    if (!vkpt__rows_fit(logits, n_rows, cfg->n_expert))
        return vkpt_fail(VKPT_EINVAL, "moe_route: %u rows of %u logits do not fit the view", n_rows,
                         cfg->n_expert);
    if ((err = k_check_buf("moe_route ids", ids, np * 4)) ||
        (err = k_check_buf("moe_route wts", wts, np * 4)))
        return err;
    if (!n_rows) return 0;
    const uint32_t wg = 64;
    vkpt_spec spec = {.v = {wg}, .n = 1, .elems = {wg, 1, 1}};
    const vkpt_pipeline *p;
    if ((err = vkpt_pipeline_get(c->dev, VKPT_V_moe_route_f32, &spec, &p))) return err;
    uint32_t di, dw;
    vkpt_buf bufs[3] = {logits->buf, k_bind_range(c->dev, ids, 0, np * 4, &di),
                        k_bind_range(c->dev, wts, 0, np * 4, &dw)};
    vkpt_pc_moe_route pc = {.n_rows = n_rows,
                            .n_expert = cfg->n_expert,
                            .k = cfg->k,
                            .l_off = logits->off,
                            .l_stride = logits->stride,
                            .i_off = di / 4,
                            .w_off = dw / 4,
                            .flags =
                                (cfg->gating == VKPT_MOE_SIGMOID ? 1u : 0u) | (cfg->norm ? 2u : 0u),
                            .norm_p = cfg->norm_p > 0 ? cfg->norm_p : 1.0f,
                            .scale = cfg->scale != 0 ? cfg->scale : 1.0f};
    vkpt_cmd_dispatch(c, p, bufs, 3, &pc, sizeof pc, vkpt__grid_elems(c->dev, n_rows, wg), 1, 1);
    return 0;
}

/* ---- sort ------------------------------------------------------------------------- */

uint32_t vkpt_moe_tiles_hdr(uint32_t n_expert)
{
    return (n_expert + 2 + 3) / 4 * 4;
}

uint32_t vkpt_moe_max_tiles(uint32_t n_pairs, uint32_t n_expert, uint32_t tile)
{
    /* sum over the experts with pairs of ceil(c_e / tile) <= (n_pairs + nz (tile - 1)) / tile,
     * nz <= min(n_expert, n_pairs) of them: exactly n_pairs for tiles of 1 (decode) */
    if (!tile) tile = 1;
    uint64_t nz = n_pairs < n_expert ? n_pairs : n_expert;
    return (uint32_t)(((uint64_t)n_pairs + nz * (tile - 1)) / tile);
}

uint64_t vkpt_moe_tiles_words(uint32_t n_pairs, uint32_t n_expert, uint32_t tile)
{
    return vkpt_moe_tiles_hdr(n_expert) + 4ull * vkpt_moe_max_tiles(n_pairs, n_expert, tile);
}

static int check_lists(const char *op, const vkpt_moe_lists *l)
{
    if (!l) return vkpt_fail(VKPT_EINVAL, "%s: no lists", op);
    if (!l->n_expert || l->n_expert > VKPT_MOE_MAX_EXPERTS)
        return vkpt_fail(VKPT_EINVAL, "%s: %u experts (1..%d supported)", op, l->n_expert,
                         VKPT_MOE_MAX_EXPERTS);
    if (!l->tile || l->tile > 64 || (l->tile & (l->tile - 1)))
        return vkpt_fail(VKPT_EINVAL, "%s: tile of %u slots (1, 2, 4, .. 64)", op, l->tile);
    int err;
    if ((err = k_check_buf("moe slot_pair", &l->slot_pair, (uint64_t)l->n_pairs * 4)) ||
        (err = k_check_buf("moe pair_slot", &l->pair_slot, (uint64_t)l->n_pairs * 4)) ||
        (err = k_check_buf("moe tiles", &l->tiles,
                           vkpt_moe_tiles_words(l->n_pairs, l->n_expert, l->tile) * 4)))
        return err;
    return 0;
}

int vkpt_k_moe_sort(vkpt_cmd *c, const vkpt_buf *ids, const vkpt_moe_lists *l)
{
    if (!c || !ids) return vkpt_fail(VKPT_EINVAL, "moe_sort: NULL");
    int err = check_lists("moe_sort", l);
    if (!err) err = k_check_buf("moe_sort ids", ids, (uint64_t)l->n_pairs * 4);
    if (err) return err;
    vkpt_device *dev = c->dev;
    uint64_t bmax = k_bind_max(dev);
    if ((uint64_t)l->n_pairs * 4 > bmax ||
        vkpt_moe_tiles_words(l->n_pairs, l->n_expert, l->tile) * 4 > bmax)
        return vkpt_fail(VKPT_ETOOBIG, "moe_sort: %u pairs exceed one binding", l->n_pairs);
    uint32_t wg = 256;
    while (wg > dev->caps.max_wg_invocations) wg /= 2;
    vkpt_spec spec = {.v = {wg}, .n = 1, .elems = {1, 1, 1}};
    const vkpt_pipeline *p;
    if ((err = vkpt_pipeline_get(dev, VKPT_V_moe_sort_u32, &spec, &p))) return err;
    uint32_t d0, d1, d2, d3;
    uint64_t pb = (uint64_t)l->n_pairs * 4;
    vkpt_buf bufs[4] = {
        k_bind_range(dev, ids, 0, pb, &d0), k_bind_range(dev, &l->slot_pair, 0, pb, &d1),
        k_bind_range(dev, &l->pair_slot, 0, pb, &d2),
        k_bind_range(dev, &l->tiles, 0, vkpt_moe_tiles_words(l->n_pairs, l->n_expert, l->tile) * 4,
                     &d3)};
    vkpt_pc_moe_sort pc = {.n_pairs = l->n_pairs,
                           .n_expert = l->n_expert,
                           .tile = l->tile,
                           .id_off = d0 / 4,
                           .sp_off = d1 / 4,
                           .ps_off = d2 / 4,
                           .tl_off = d3 / 4,
                           .tl_hdr = vkpt_moe_tiles_hdr(l->n_expert)};
    vkpt_cmd_dispatch(c, p, bufs, 4, &pc, sizeof pc, 1, 1, 1);
    return 0;
}

/* ---- expert matmul ------------------------------------------------------------------- */

static bool usable(const vkpt_device *dev, int v)
{
    return v >= 0 && vkpt_variant_usable(dev, v);
}

static uint32_t matvec_tile(uint32_t n_tok)
{
    /* a token picks an expert at most once: at most n_tok slots per expert */
    return n_tok <= 1 ? 1 : n_tok <= 2 ? 2 : n_tok <= 4 ? 4 : 8;
}

int vkpt_k_moe_plan(const vkpt_device *dev, uint32_t wtype, uint32_t n_tok, uint32_t k,
                    uint32_t n_expert, int path, uint32_t *tile)
{
    if (!dev || !tile) return vkpt_fail(VKPT_EINVAL, "moe_plan: NULL");
    const moe_fmt *f = fmt_get(wtype);
    if (!f) return vkpt_fail(VKPT_EINVAL, "moe: weight type %u is not one vkpt runs", wtype);
    if (!n_tok || !k || !n_expert) return vkpt_fail(VKPT_EINVAL, "moe_plan: empty step");
    const moe_tune *tn = tune_for(dev);
    if (path == VKPT_MOE_AUTO) {
        /* tokens an expert gets on average when routing is balanced */
        uint64_t per_expert = ((uint64_t)n_tok * k + n_expert - 1) / n_expert;
        if (tn->mm_min_tok && per_expert >= tn->mm_min_tok && usable(dev, f->mm))
            path = VKPT_MOE_MATMUL;
        else
            path = usable(dev, f->mv_subgroup) ? VKPT_MOE_MATVEC_SUBGROUP : VKPT_MOE_MATVEC;
    }
    int v = path == VKPT_MOE_MATVEC            ? f->mv
            : path == VKPT_MOE_MATVEC_SUBGROUP ? f->mv_subgroup
            : path == VKPT_MOE_MATMUL          ? f->mm
                                               : -1;
    if (v < 0) return vkpt_fail(VKPT_EINVAL, "moe: unknown path %d", path);
    if (!usable(dev, v))
        return vkpt_fail(VKPT_EUNSUPPORTED, "moe: path %s for %s is not available here",
                         vkpt_moe_path_name(path), vkpt_qtype_get(wtype)->name);
    *tile = path == VKPT_MOE_MATMUL ? tn->mm_bn : matvec_tile(n_tok);
    return path;
}

int vkpt_k_moe_matmul(vkpt_cmd *c, const vkpt_moe_mm_args *a)
{
    if (!c || !a) return vkpt_fail(VKPT_EINVAL, "moe_matmul: NULL");
    vkpt_device *dev = c->dev;
    const moe_fmt *f = fmt_get(a->wtype);
    const vkpt_qtype_info *qi = vkpt_qtype_get(a->wtype);
    if (!f || !qi)
        return vkpt_fail(VKPT_EINVAL, "moe_matmul: weight type %s is not one vkpt runs",
                         qi ? qi->name : "unknown");
    const vkpt_moe_lists *l = a->lists;
    int err = check_lists("moe_matmul", l);
    if (err) return err;
    const uint32_t K = a->K, M = a->M, E = a->n_expert;
    if (!K || !M || E != l->n_expert)
        return vkpt_fail(VKPT_EINVAL, "moe_matmul: K %u, M %u, %u experts (lists: %u)", K, M, E,
                         l->n_expert);
    if (K % qi->block_elems)
        return vkpt_fail(VKPT_EINVAL, "moe_matmul: K = %u is not a multiple of %s's block of %u", K,
                         qi->name, qi->block_elems);
    if (a->x_k && l->n_pairs % a->x_k)
        return vkpt_fail(VKPT_EINVAL, "moe_matmul: %u pairs are not whole tokens of %u", l->n_pairs,
                         a->x_k);
    const uint64_t rb = vkpt_qtype_row_bytes(a->wtype, K), eb = rb * M;
    const uint32_t ys = a->y_stride ? a->y_stride : M;
    const uint64_t x_rows = a->x_k ? l->n_pairs / a->x_k : l->n_pairs;
    if (ys < M) return vkpt_fail(VKPT_EINVAL, "moe_matmul: y_stride %u < M %u", ys, M);
    if ((err = k_check_buf("moe_matmul w", &a->w, eb * E)) ||
        (err = k_check_buf("moe_matmul x", &a->x, x_rows * K * 4)) ||
        (err = k_check_buf("moe_matmul y", &a->y,
                           l->n_pairs ? ((uint64_t)(l->n_pairs - 1) * ys + M) * 4 : 0)))
        return err;
    if ((a->wtype == VKPT_Q_Q4_K || a->wtype == VKPT_Q_Q5_K) && a->w.off % 16)
        return vkpt_fail(VKPT_EINVAL, "moe_matmul: %s weights must start 16-byte aligned",
                         qi->name);
    if (!is_float_type(a->wtype) && a->x.off % 16)
        return vkpt_fail(VKPT_EINVAL, "moe_matmul: x must start 16-byte aligned for quantized W");
    if (!l->n_pairs) return 0;

    /* path: the one the tile size was planned for */
    int path = a->path;
    const bool tiled_lists = l->tile >= 16;
    if (path == VKPT_MOE_AUTO)
        path = tiled_lists                   ? VKPT_MOE_MATMUL
               : usable(dev, f->mv_subgroup) ? VKPT_MOE_MATVEC_SUBGROUP
                                             : VKPT_MOE_MATVEC;
    if ((path == VKPT_MOE_MATMUL) != tiled_lists)
        return vkpt_fail(VKPT_EINVAL, "moe_matmul: path %s with tiles of %u slots",
                         vkpt_moe_path_name(path), l->tile);
    int variant = path == VKPT_MOE_MATVEC            ? f->mv
                  : path == VKPT_MOE_MATVEC_SUBGROUP ? f->mv_subgroup
                  : path == VKPT_MOE_MATMUL          ? f->mm
                                                     : -1;
    if (variant < 0) return vkpt_fail(VKPT_EINVAL, "moe_matmul: unknown path %d", path);
    if (!usable(dev, variant))
        return vkpt_fail(VKPT_EUNSUPPORTED, "moe_matmul: path %s is not available here",
                         vkpt_moe_path_name(path));
    const bool matvec = path != VKPT_MOE_MATMUL;
    const moe_tune *tn = tune_for(dev);
    const uint32_t fu = a->wtype == VKPT_Q_F32 ? 4 : 8;
    const bool aligned = matvec ? !is_float_type(a->wtype) ||
                                      (K % fu == 0 && a->w.off % 16 == 0 && a->x.off % 16 == 0)
                                : K % 4 == 0 && a->x.off % 16 == 0;
    uint32_t mv_wg = a->mv_wg ? a->mv_wg : tn->mv_wg;
    uint32_t mv_rows = a->mv_rows ? a->mv_rows : l->tile > 4 ? (tn->mv_rows + 1) / 2 : tn->mv_rows;
    if (!mv_rows || (mv_wg & (mv_wg - 1)))
        return vkpt_fail(VKPT_EINVAL, "moe_matmul: workgroup %u x %u rows", mv_wg, mv_rows);
    while (mv_wg > 1 && (mv_wg > dev->caps.max_wg_invocations ||
                         (uint64_t)mv_wg * mv_rows * l->tile * 4 > dev->caps.max_shared_memory))
        mv_wg /= 2;
    const uint32_t bm = tn->mm_bm, wg_rows = matvec ? mv_rows : bm;
    vkpt_spec spec = {.v = {mv_wg, mv_rows, l->tile, aligned}, .n = 4, .elems = {mv_rows, 1, 1}};
    if (!matvec) spec = (vkpt_spec){.v = {bm, l->tile, aligned}, .n = 3, .elems = {bm, 1, 1}};
    const vkpt_pipeline *p;
    if ((err = vkpt_pipeline_get(dev, variant, &spec, &p))) return err;

    /* chunks: rows of one expert within the grid and a binding, then as
     * many experts as fit beside them, then tiles within the grid */
    const uint64_t bmax = k_bind_max(dev);
    uint64_t rows_c = (uint64_t)dev->caps.max_wg_count[0] * wg_rows;
    if (bmax / rb < rows_c) rows_c = bmax / rb;
    if (rows_c > M) rows_c = M;
    const uint64_t xb = x_rows * K * 4, yb = ((uint64_t)(l->n_pairs - 1) * ys + M) * 4;
    if (!rows_c || xb > bmax || yb > bmax)
        return vkpt_fail(VKPT_ETOOBIG,
                         "moe_matmul: operands exceed one binding (rows of %llu B, x %llu B, y "
                         "%llu B; limit %llu B): use fewer tokens per step",
                         (unsigned long long)rb, (unsigned long long)xb, (unsigned long long)yb,
                         (unsigned long long)bmax);
    const uint32_t n_tiles = vkpt_moe_max_tiles(l->n_pairs, E, l->tile);
    const uint32_t tiles_c =
        dev->caps.max_wg_count[1] < n_tiles ? dev->caps.max_wg_count[1] : n_tiles;
    const uint64_t tw = vkpt_moe_tiles_words(l->n_pairs, E, l->tile) * 4;
    uint32_t dx, dy, dsp, dtl;
    vkpt_buf bufs[5];
    bufs[1] = k_bind_range(dev, &a->x, 0, xb, &dx);
    bufs[2] = k_bind_range(dev, &a->y, 0, yb, &dy);
    bufs[3] = k_bind_range(dev, &l->slot_pair, 0, (uint64_t)l->n_pairs * 4, &dsp);
    bufs[4] = k_bind_range(dev, &l->tiles, 0, tw, &dtl);
    for (uint64_t r0 = 0; r0 < M; r0 += rows_c) {
        uint32_t nr = (uint32_t)(M - r0 < rows_c ? M - r0 : rows_c);
        /* experts whose rows [r0, r0 + nr) one binding covers */
        uint64_t ec = 1 + (bmax - nr * rb) / eb;
        if (ec > E) ec = E;
        for (uint64_t e0 = 0; e0 < E; e0 += ec) {
            uint32_t ne = (uint32_t)(E - e0 < ec ? E - e0 : ec), dw;
            bufs[0] = k_bind_range(dev, &a->w, e0 * eb + r0 * rb, (ne - 1) * eb + nr * rb, &dw);
            for (uint32_t t0 = 0; t0 < n_tiles; t0 += tiles_c) {
                uint32_t nt = n_tiles - t0 < tiles_c ? n_tiles - t0 : tiles_c;
                vkpt_pc_moe_mm pc = {.K = K,
                                     .M = nr,
                                     .w_off = dw,
                                     .e_stride = (uint32_t)(ne > 1 ? eb : 0),
                                     .e0 = (uint32_t)e0,
                                     .n_e = ne,
                                     .x_off = dx / 4,
                                     .x_k = a->x_k,
                                     .y_off = dy / 4 + (uint32_t)r0,
                                     .y_stride = ys,
                                     .sp_off = dsp / 4,
                                     .tl_off = dtl / 4,
                                     .tl_hdr = vkpt_moe_tiles_hdr(E),
                                     .tile0 = t0};
                vkpt_cmd_dispatch(c, p, bufs, 5, &pc, sizeof pc, nr, nt, 1);
            }
        }
    }
    return 0;
}

/* ---- combine ------------------------------------------------------------------------ */

int vkpt_k_moe_combine(vkpt_cmd *c, const vkpt_moe_combine_args *a)
{
    if (!c || !a) return vkpt_fail(VKPT_EINVAL, "moe_combine: NULL");
    if (!a->k || a->k > VKPT_MOE_MAX_K) return vkpt_fail(VKPT_EINVAL, "moe_combine: k = %u", a->k);
    uint64_t np = (uint64_t)a->n_rows * a->k;
    if (!vkpt__rows_fit(&a->y, a->n_rows, a->n) || !vkpt__rows_fit(&a->d, (uint32_t)np, a->n))
        return vkpt_fail(VKPT_EINVAL, "moe_combine: %u rows of %u do not fit the views", a->n_rows,
                         a->n);
    bool shared = a->shared.buf.buf != VK_NULL_HANDLE, gated = a->gate.buf.buf != VK_NULL_HANDLE;
    if (shared && !vkpt__rows_fit(&a->shared, a->n_rows, a->n))
        return vkpt_fail(VKPT_EINVAL, "moe_combine: the shared expert view is too small");
    if (shared && gated && !vkpt__rows_fit(&a->gate, a->n_rows, 1))
        return vkpt_fail(VKPT_EINVAL, "moe_combine: the shared gate view is too small");
    int err;
    if ((err = k_check_buf("moe_combine wts", &a->wts, np * 4)) ||
        (err = k_check_buf("moe_combine pair_slot", &a->pair_slot, np * 4)))
        return err;
    uint64_t total = (uint64_t)a->n_rows * a->n;
    if (total > UINT32_MAX)
        return vkpt_fail(VKPT_ETOOBIG, "moe_combine: %llu elements", (unsigned long long)total);
    if (!total) return 0;
    const uint32_t wg = 256;
    vkpt_spec spec = {.v = {wg}, .n = 1, .elems = {wg, 1, 1}};
    const vkpt_pipeline *p;
    if ((err = vkpt_pipeline_get(c->dev, VKPT_V_moe_combine_f32, &spec, &p))) return err;
    uint32_t dw, dp;
    vkpt_buf bufs[6] = {a->y.buf,
                        a->d.buf,
                        k_bind_range(c->dev, &a->wts, 0, np * 4, &dw),
                        k_bind_range(c->dev, &a->pair_slot, 0, np * 4, &dp),
                        shared ? a->shared.buf : a->y.buf,
                        shared && gated ? a->gate.buf : a->y.buf};
    vkpt_pc_moe_combine pc = {.n_rows = a->n_rows,
                              .n = a->n,
                              .k = a->k,
                              .y_off = a->y.off,
                              .y_stride = a->y.stride,
                              .d_off = a->d.off,
                              .d_stride = a->d.stride,
                              .w_off = dw / 4,
                              .ps_off = dp / 4,
                              .s_off = shared ? a->shared.off : 0,
                              .s_stride = shared ? a->shared.stride : 0,
                              .g_off = shared && gated ? a->gate.off : 0,
                              .g_stride = shared && gated ? a->gate.stride : 0,
                              .flags = (a->accumulate ? 1u : 0u) | (shared ? 2u : 0u) |
                                       (shared && !gated ? 4u : 0u)};
    vkpt_cmd_dispatch(c, p, bufs, 6, &pc, sizeof pc, vkpt__grid_elems(c->dev, total, wg), 1, 1);
    return 0;
}

/* ---- references ------------------------------------------------------------------------ */

void vkpt_ref_moe_route(const vkpt_moe_route_cfg *cfg, const float *logits, size_t l_stride,
                        uint32_t n_rows, uint32_t *ids, float *wts)
{
    uint32_t E = cfg->n_expert, K = cfg->k;
    double p[VKPT_MOE_MAX_EXPERTS], v[VKPT_MOE_MAX_K];
    bool taken[VKPT_MOE_MAX_EXPERTS];
    for (uint32_t t = 0; t < n_rows; t++) {
        const float *l = logits + t * l_stride;
        double mx = -INFINITY, s = 0;
        for (uint32_t e = 0; e < E; e++) mx = fmax(mx, l[e]);
        for (uint32_t e = 0; e < E; e++) {
            p[e] = cfg->gating == VKPT_MOE_SIGMOID ? 1.0 / (1.0 + exp(-(double)l[e]))
                                                   : exp((double)l[e] - mx);
            if (isnan(p[e])) p[e] = -INFINITY;
            s += p[e];
            taken[e] = false;
        }
        for (uint32_t e = 0; cfg->gating == VKPT_MOE_SOFTMAX && e < E; e++) p[e] /= s;
        for (uint32_t j = 0; j < K; j++) {
            uint32_t bi = E;
            for (uint32_t e = 0; e < E; e++)
                if (!taken[e] && (bi == E || p[e] > p[bi])) bi = e;
            taken[bi] = true;
            ids[t * K + j] = bi;
            v[j] = p[bi];
        }
        double norm = 1;
        if (cfg->norm) {
            double pw = cfg->norm_p > 0 ? cfg->norm_p : 1.0, acc = 0;
            for (uint32_t j = 0; j < K; j++) acc += pow(fabs(v[j]), pw);
            norm = pow(acc, 1.0 / pw);
        }
        double scale = cfg->scale != 0 ? cfg->scale : 1.0;
        for (uint32_t j = 0; j < K; j++) wts[t * K + j] = (float)(v[j] / norm * scale);
    }
}

int vkpt_ref_moe_sort(const uint32_t *ids, uint32_t n_pairs, uint32_t n_expert, uint32_t tile,
                      uint32_t *slot_pair, uint32_t *pair_slot, uint32_t *tiles)
{
    if (!tile || !n_expert || n_expert > VKPT_MOE_MAX_EXPERTS)
        return vkpt_fail(VKPT_EINVAL, "moe sort reference: tile %u, %u experts", tile, n_expert);
    for (uint32_t p = 0; p < n_pairs; p++)
        if (ids[p] >= n_expert)
            return vkpt_fail(VKPT_EINVAL, "moe sort reference: pair %u has expert %u of %u", p,
                             ids[p], n_expert);
    uint32_t hdr = vkpt_moe_tiles_hdr(n_expert), s = 0, nt = 0;
    memset(tiles, 0, vkpt_moe_tiles_words(n_pairs, n_expert, tile) * 4);
    for (uint32_t e = 0; e < n_expert; e++) {
        uint32_t first = s;
        tiles[1 + e] = s;
        for (uint32_t p = 0; p < n_pairs; p++)
            if (ids[p] == e) {
                slot_pair[s] = p;
                pair_slot[p] = s++;
            }
        for (uint32_t o = first; o < s; o += tile, nt++) {
            tiles[hdr + 4 * nt] = e;
            tiles[hdr + 4 * nt + 1] = o;
            tiles[hdr + 4 * nt + 2] = s - o < tile ? s - o : tile;
        }
    }
    tiles[1 + n_expert] = s;
    tiles[0] = nt;
    return 0;
}

void vkpt_ref_moe_ffn_row(const float *gate, const float *up, const float *down, uint32_t K,
                          uint32_t ff, const float *x, const uint32_t *ids, const float *wts,
                          uint32_t k, float *y)
{
    for (uint32_t i = 0; i < K; i++) y[i] = 0;
    double *act = vkpt_malloc(ff * sizeof *act), *acc = vkpt_calloc(K, sizeof *acc);
    if (!act || !acc) {
        vkpt_free(act);
        vkpt_free(acc);
        for (uint32_t i = 0; i < K; i++) y[i] = NAN;
        return;
    }
    for (uint32_t j = 0; j < k; j++) {
        size_t e = ids[j];
        for (uint32_t f = 0; f < ff; f++) {
            double g = 0, u = 0;
            const float *gr = gate + (e * ff + f) * K, *ur = up + (e * ff + f) * K;
            for (uint32_t i = 0; i < K; i++) {
                g += (double)gr[i] * x[i];
                u += (double)ur[i] * x[i];
            }
            act[f] = g / (1.0 + exp(-g)) * u;
        }
        for (uint32_t i = 0; i < K; i++) {
            const float *dr = down + (e * K + i) * ff;
            double s = 0;
            for (uint32_t f = 0; f < ff; f++) s += dr[f] * act[f];
            acc[i] += wts[j] * s;
        }
    }
    for (uint32_t i = 0; i < K; i++) y[i] = (float)acc[i];
    vkpt_free(act);
    vkpt_free(acc);
}
