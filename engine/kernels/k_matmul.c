/* Launchers for the quantized-weight kernels (shaders/matvec.comp,
 * matmul.comp, get_rows.comp, quantize_act.comp): variant choice from the
 * device caps, tuning from a per-vendor table, and splitting of tensors
 * that exceed one binding or one dispatch into chunks.
 *
 * Invariants: every binding is a range starting at an offset aligned to
 * max(minStorageBufferOffsetAlignment, 16) and at most `k_bind_max` bytes (k_bind.h); the
 * distance from that start to the data is passed in the push constants, so
 * callers' views need only 4-byte alignment. */
#include "k_matmul.h"

#include "k_bind.h"

#include <string.h>

/* ---- variants per weight format ---------------------------------------------- */

typedef struct fmt_variants {
    uint32_t type;
    int get_rows, mv, mv_subgroup, mv_intdot, mm, mm_coopmat, mm_nv2;
} fmt_variants;

#define FMT(T, n)                                                              \
    {                                                                          \
        VKPT_Q_##T, VKPT_V_get_rows_##n##_f32, VKPT_V_matvec_##n##_f32,        \
            VKPT_V_matvec_##n##_f32_subgroup, ID_##n, VKPT_V_matmul_##n##_f32, \
            VKPT_V_matmul_##n##_f32_coopmat, VKPT_V_matmul_##n##_f32_nv2       \
    }
#define ID_f32  -1
#define ID_f16  -1
#define ID_bf16 -1
#define ID_q4_0 VKPT_V_matvec_q4_0_q8_intdot
#define ID_q4_1 VKPT_V_matvec_q4_1_q8_intdot
#define ID_q5_0 VKPT_V_matvec_q5_0_q8_intdot
#define ID_q5_1 VKPT_V_matvec_q5_1_q8_intdot
#define ID_q8_0 VKPT_V_matvec_q8_0_q8_intdot
#define ID_q4k  VKPT_V_matvec_q4k_q8_intdot
#define ID_q5k  VKPT_V_matvec_q5k_q8_intdot
#define ID_q6k  VKPT_V_matvec_q6k_q8_intdot
static const fmt_variants k_fmts[] = {
    FMT(F32, f32),   FMT(F16, f16),   FMT(BF16, bf16), FMT(Q4_0, q4_0),
    FMT(Q4_1, q4_1), FMT(Q5_0, q5_0), FMT(Q5_1, q5_1), FMT(Q8_0, q8_0),
    FMT(Q4_K, q4k),  FMT(Q5_K, q5k),  FMT(Q6_K, q6k),
};
#undef FMT

static const fmt_variants *fmt_get(uint32_t type)
{
    for (size_t i = 0; i < sizeof k_fmts / sizeof k_fmts[0]; i++)
        if (k_fmts[i].type == type) return &k_fmts[i];
    return NULL;
}

static bool is_float_type(uint32_t t)
{
    return t == VKPT_Q_F32 || t == VKPT_Q_F16 || t == VKPT_Q_BF16;
}

/* ---- tuning: starting points per vendor, not yet measured on hardware -------- */

typedef struct mm_tune {
    uint32_t vendor_id;  /* 0: any other */
    uint32_t mv_wg;      /* matvec invocations per workgroup (power of two) */
    uint32_t mv_rows;    /* matvec rows per workgroup at 1..4 tokens (halved above) */
    uint32_t mm_bm;      /* matmul tile: weight rows (multiple of 16) */
    uint32_t mm_bn;      /* matmul tile: tokens (multiple of 16) */
    uint32_t mm_min_tok; /* AUTO runs the tiled matmul from this many tokens (0: never) */
    bool mm_coopmat;     /* AUTO may pick the cooperative-matrix matmuls without the
                          * device's coopmat opt-in: off until they have been verified
                          * on the vendor's hardware (and the device enables
                          * vulkanMemoryModel, which their SPIR-V uses) */
} mm_tune;

static const mm_tune k_tune[] = {
    {0x10de, 128, 4, 64, 64, 9, false}, /* NVIDIA: 4 warps stream 4 rows each */
    {0x1002, 64, 4, 64, 64, 9, false},  /* AMD: one wave64 */
    {0x8086, 32, 4, 64, 64, 9, false},  /* Intel */
    /* Mesa lavapipe: a workgroup is one CPU thread's loop, and each barrier
     * a coroutine switch per invocation: the tiled matmul (two barriers per
     * 32 of K) runs 2-3x slower than matvec 8 tokens at a time */
    {0x10005, 32, 1, 64, 32, 0, false},
    {0, 64, 4, 64, 64, 9, false},
};

static const mm_tune *tune_for(const vkpt_device *dev)
{
    size_t n = sizeof k_tune / sizeof k_tune[0];
    for (size_t i = 0; i + 1 < n; i++)
        if (k_tune[i].vendor_id == dev->caps.vendor_id) return &k_tune[i];
    return &k_tune[n - 1];
}

const char *vkpt_mm_path_name(int path)
{
    static const char *names[VKPT_MM_PATH_COUNT] = {"auto",          "matvec", "matvec_subgroup",
                                                    "matvec_intdot", "matmul", "matmul_coopmat",
                                                    "matmul_nv2"};
    return path >= 0 && path < VKPT_MM_PATH_COUNT ? names[path] : "?";
}

/* ---- argument checks and path choice --------------------------------------------- */

static int check_weights(const char *op, uint32_t wtype, const vkpt_buf *w, uint32_t K, uint32_t M,
                         const fmt_variants **fv, uint64_t *row_bytes)
{
    const vkpt_qtype_info *qi = vkpt_qtype_get(wtype);
    *fv = fmt_get(wtype);
    if (!qi || !*fv)
        return vkpt_fail(VKPT_EINVAL, "%s: weight type %s is not one vkpt runs", op,
                         qi ? qi->name : "unknown");
    if (!K || !M) return vkpt_fail(VKPT_EINVAL, "%s: empty matrix (K %u, M %u)", op, K, M);
    if (K % qi->block_elems)
        return vkpt_fail(VKPT_EINVAL, "%s: K = %u is not a multiple of %s's block of %u", op, K,
                         qi->name, qi->block_elems);
    *row_bytes = vkpt_qtype_row_bytes(wtype, K);
    int err = k_check_buf(op, w, *row_bytes * M);
    if (err) return err;
    if ((wtype == VKPT_Q_Q4_K || wtype == VKPT_Q_Q5_K) && w->off % 16)
        return vkpt_fail(VKPT_EINVAL, "%s: %s weights must start 16-byte aligned", op, qi->name);
    return 0;
}

static bool usable(const vkpt_device *dev, int v)
{
    return v >= 0 && vkpt_variant_usable(dev, v);
}

/* matmul_coopmat.comp needs 16x16x16 f16 x f16 -> f32 subgroup matrices,
 * subgroups of exactly 32 invocations and the Vulkan memory model. */
static bool coopmat_ok(const vkpt_device *dev)
{
    const vkpt_device_caps *c = &dev->caps;
    bool sg32 = c->subgroup_size == 32 ||
                (c->subgroup_size_control && c->subgroup_min <= 32 && 32 <= c->subgroup_max);
    if (!c->coopmat_khr || !sg32 || !c->vulkan_memory_model) return false;
    for (uint32_t i = 0; i < c->n_coopmat_shapes; i++) {
        const vkpt_coopmat_shape *sh = &c->coopmat_shapes[i];
        if (sh->m == 16 && sh->n == 16 && sh->k == 16 && sh->a == VKPT_CT_F16 &&
            sh->b == VKPT_CT_F16 && sh->c == VKPT_CT_F32 && sh->result == VKPT_CT_F32 &&
            sh->scope == 3)
            return true;
    }
    return false;
}

/* NV2 matmul tile: workgroup size and C = A B dimensions (BN tokens x BM
 * weight rows, BK of K per step). */
typedef struct nv2_tile {
    uint32_t wg, bm, bn, bk;
} nv2_tile;

/* matmul_nv2.comp's shape for n_tok tokens: 128 weight rows x 128 tokens
 * (64 for short prompts), BK 32, in the largest workgroup the device lists
 * for f16 x f16 -> f32 workgroup-scope matrices (up to 256) whose
 * granularities divide the tile. False when there is none, or the device
 * lacks what the variant needs (its workgroup size is a specialization
 * constant: LocalSizeId, maintenance4). Starting points, not measured. */
static bool nv2_tile_for(const vkpt_device *dev, uint32_t n_tok, nv2_tile *t)
{
    const vkpt_device_caps *c = &dev->caps;
    if (!c->coopmat_nv2 || !c->maintenance4 || !c->vulkan_memory_model) return false;
    nv2_tile best = {0, 128, n_tok <= 64 ? 64 : 128, 32};
    for (uint32_t i = 0; i < c->n_coopmat_flex; i++) {
        const vkpt_coopmat_flex *f = &c->coopmat_flex[i];
        uint32_t wg = f->wg_invocations;
        if (f->a != VKPT_CT_F16 || f->b != VKPT_CT_F16 || f->c != VKPT_CT_F32 ||
            f->result != VKPT_CT_F32 || f->scope != 2 /* workgroup */ || !wg || wg > 256 ||
            wg > c->max_wg_invocations || wg > c->max_wg_size[0] ||
            (c->coopmat2_max_wg_size && wg > c->coopmat2_max_wg_size) || !f->m_gran || !f->n_gran ||
            !f->k_gran || best.bn % f->m_gran || best.bm % f->n_gran || best.bk % f->k_gran)
            continue;
        if (wg > best.wg) best.wg = wg;
    }
    *t = best;
    return best.wg != 0;
}

/* The variant for a resolved path, or -1. */
static int path_variant(const fmt_variants *fv, int path)
{
    switch (path) {
    case VKPT_MM_MATVEC: return fv->mv;
    case VKPT_MM_MATVEC_SUBGROUP: return fv->mv_subgroup;
    case VKPT_MM_MATVEC_INTDOT: return fv->mv_intdot;
    case VKPT_MM_MATMUL: return fv->mm;
    case VKPT_MM_MATMUL_COOPMAT: return fv->mm_coopmat;
    case VKPT_MM_MATMUL_NV2: return fv->mm_nv2;
    default: return -1;
    }
}

static bool is_matvec(int path)
{
    return path == VKPT_MM_MATVEC || path == VKPT_MM_MATVEC_SUBGROUP ||
           path == VKPT_MM_MATVEC_INTDOT;
}

static int choose(const vkpt_device *dev, const fmt_variants *fv, const vkpt_mm_args *a)
{
    if (a->path != VKPT_MM_AUTO) {
        if (a->path < 0 || a->path >= VKPT_MM_PATH_COUNT)
            return vkpt_fail(VKPT_EINVAL, "matmul: unknown path %d", a->path);
        if (a->path == VKPT_MM_MATVEC_INTDOT && !a->xq.buf)
            return vkpt_fail(VKPT_EINVAL, "matmul: the intdot path needs quantized activations");
        int v = path_variant(fv, a->path);
        nv2_tile nt;
        if (!usable(dev, v) || (a->path == VKPT_MM_MATMUL_COOPMAT && !coopmat_ok(dev)) ||
            (a->path == VKPT_MM_MATMUL_NV2 && !nv2_tile_for(dev, a->n_tok, &nt)))
            return vkpt_fail(VKPT_EUNSUPPORTED, "matmul: path %s for %s is not %s",
                             vkpt_mm_path_name(a->path), vkpt_qtype_get(fv->type)->name,
                             v < 0 ? "implemented" : "available on this device/build");
        return a->path;
    }
    const mm_tune *tn = tune_for(dev);
    if (a->n_tok <= VKPT_MATVEC_MAX_TOK || !tn->mm_min_tok || a->n_tok < tn->mm_min_tok) {
        if (a->n_tok <= VKPT_MATVEC_MAX_TOK && a->xq.buf && dev->caps.int_dot_accel &&
            usable(dev, fv->mv_intdot))
            return VKPT_MM_MATVEC_INTDOT;
        if (usable(dev, fv->mv_subgroup)) return VKPT_MM_MATVEC_SUBGROUP;
        return VKPT_MM_MATVEC;
    }
    /* the cooperative-matrix matmuls only with the opt-in until verified
     * on hardware (docs/ARCHITECTURE.md: how to check them) */
    bool cm = tn->mm_coopmat || dev->coopmat_auto;
    nv2_tile nt;
    if (cm && usable(dev, fv->mm_nv2) && nv2_tile_for(dev, a->n_tok, &nt))
        return VKPT_MM_MATMUL_NV2;
    if (cm && usable(dev, fv->mm_coopmat) && coopmat_ok(dev)) return VKPT_MM_MATMUL_COOPMAT;
    return VKPT_MM_MATMUL;
}

int vkpt_k_matmul_choose(const vkpt_device *dev, const vkpt_mm_args *a)
{
    if (!dev || !a) return vkpt_fail(VKPT_EINVAL, "matmul: NULL");
    const fmt_variants *fv = fmt_get(a->wtype);
    if (!fv) return vkpt_fail(VKPT_EINVAL, "matmul: weight type %u is not one vkpt runs", a->wtype);
    return choose(dev, fv, a);
}

/* ---- matvec / matmul ----------------------------------------------------------------- */

static int check_mm(vkpt_device *dev, const vkpt_mm_args *a, const fmt_variants **fv,
                    uint64_t *row_bytes, uint32_t *y_stride)
{
    int err = check_weights("matmul", a->wtype, &a->w, a->K, a->M, fv, row_bytes);
    if (err) return err;
    if (!a->n_tok) return vkpt_fail(VKPT_EINVAL, "matmul: n_tok is 0");
    *y_stride = a->y_stride ? a->y_stride : a->M;
    if (*y_stride < a->M)
        return vkpt_fail(VKPT_EINVAL, "matmul: y_stride %u < M %u", *y_stride, a->M);
    uint64_t nt = a->n_tok;
    if ((err = k_check_buf("matmul x", &a->x, nt * a->K * 4))) return err;
    if ((err = k_check_buf("matmul y", &a->y, ((nt - 1) * *y_stride + a->M) * 4))) return err;
    if (a->bias.buf && (err = k_check_buf("matmul bias", &a->bias, (uint64_t)a->M * 4))) return err;
    if (!is_float_type(a->wtype) && a->x.off % 16)
        return vkpt_fail(VKPT_EINVAL, "matmul: x must start 16-byte aligned for quantized weights");
    if (a->xq.buf) {
        if (a->K % 32) return vkpt_fail(VKPT_EINVAL, "matmul: q8 activations need K %% 32 == 0");
        if ((err = k_check_buf("matmul xq", &a->xq, vkpt_k_quantize_act_bytes(a->n_tok, a->K))))
            return err;
        if (a->xq.off % 16) return vkpt_fail(VKPT_EINVAL, "matmul: xq must start 16-byte aligned");
    }
    (void)dev;
    return 0;
}

int vkpt_k_matmul(vkpt_cmd *c, const vkpt_mm_args *a)
{
    if (!c || !a) return vkpt_fail(VKPT_EINVAL, "matmul: NULL");
    vkpt_device *dev = c->dev;
    const fmt_variants *fv;
    uint64_t rb = 0;
    uint32_t ys = 0;
    int err = check_mm(dev, a, &fv, &rb, &ys);
    if (err) return err;
    int path = choose(dev, fv, a);
    if (path < 0) return path;
    int variant = path_variant(fv, path);
    const mm_tune *tn = tune_for(dev);
    const uint32_t K = a->K, M = a->M;
    const bool matvec = is_matvec(path);
    const bool intdot = path == VKPT_MM_MATVEC_INTDOT;
    /* matvec: one pipeline per token count; more than 8 run 8 at a time */
    const uint32_t mv_tok = a->n_tok < VKPT_MATVEC_MAX_TOK ? a->n_tok : VKPT_MATVEC_MAX_TOK;
    /* float rows as uvec4 (matvec) / x rows as vec4 (matmul): whole units,
     * 16-byte aligned starts */
    const uint32_t fu = a->wtype == VKPT_Q_F32 ? 4 : 8;
    const bool aligned = matvec ? !is_float_type(a->wtype) ||
                                      (K % fu == 0 && a->w.off % 16 == 0 && a->x.off % 16 == 0)
                                : K % 4 == 0 && a->x.off % 16 == 0;
    /* the intdot variants have a fixed workgroup of 64 (WG_FIXED) */
    uint32_t mv_wg = intdot ? 64 : a->mv_wg ? a->mv_wg : tn->mv_wg;
    uint32_t mv_rows = a->mv_rows ? a->mv_rows : mv_tok > 4 ? (tn->mv_rows + 1) / 2 : tn->mv_rows;
    if (mv_wg & (mv_wg - 1))
        return vkpt_fail(VKPT_EINVAL, "matmul: workgroup size %u is not a power of two", mv_wg);
    while (mv_wg > 1 && (mv_wg > dev->caps.max_wg_invocations ||
                         (uint64_t)mv_wg * mv_rows * 8 * 4 > dev->caps.max_shared_memory))
        mv_wg /= 2;
    /* matmul tiles: the coopmat kernel's are fixed at 64 x 64, the NV2
     * kernel's from nv2_tile_for */
    const bool coopmat = path == VKPT_MM_MATMUL_COOPMAT;
    const bool nv2 = path == VKPT_MM_MATMUL_NV2;
    nv2_tile t2 = {0, 0, 0, 0};
    if (nv2) nv2_tile_for(dev, a->n_tok, &t2); /* choose() checked it succeeds */
    const uint32_t bm = nv2 ? t2.bm : coopmat ? 64 : tn->mm_bm;
    const uint32_t bn = nv2 ? t2.bn : coopmat ? 64 : tn->mm_bn;
    const uint32_t wg_rows = matvec ? mv_rows : bm;

    /* chunks: every binding within bind_max, every grid within max_wg_count */
    const uint64_t bmax = k_bind_max(dev);
    const uint64_t xrow = intdot ? K : (uint64_t)K * 4;
    uint64_t rows_c = bmax / rb;
    if ((uint64_t)dev->caps.max_wg_count[0] * wg_rows < rows_c)
        rows_c = (uint64_t)dev->caps.max_wg_count[0] * wg_rows;
    if (bmax / 4 < rows_c) rows_c = bmax / 4;
    if (rows_c > M) rows_c = M;
    uint64_t tok_c = bmax / xrow;
    if (matvec && tok_c > mv_tok) tok_c = mv_tok;
    if (!matvec && (uint64_t)dev->caps.max_wg_count[1] * bn < tok_c)
        tok_c = (uint64_t)dev->caps.max_wg_count[1] * bn;
    if (tok_c > a->n_tok) tok_c = a->n_tok;
    if (tok_c > 1 && ((tok_c - 1) * ys + rows_c) * 4 > bmax) tok_c = (bmax / 4 - rows_c) / ys + 1;
    if (!rows_c || !tok_c || xrow * tok_c > bmax)
        return vkpt_fail(VKPT_ETOOBIG, "matmul: a row of %u elements exceeds one binding", K);

    for (uint64_t t0 = 0; t0 < a->n_tok; t0 += tok_c) {
        uint32_t nt = (uint32_t)(a->n_tok - t0 < tok_c ? a->n_tok - t0 : tok_c), d;
        /* matvec token slots rounded up to 1, 2, 4, 8: fewer pipelines */
        uint32_t slots = nt <= 2 ? nt : nt <= 4 ? 4 : 8;
        vkpt_spec spec = {.v = {mv_wg, mv_rows, slots, aligned}, .n = 4, .elems = {mv_rows, 1, 1}};
        if (nv2)
            spec = (vkpt_spec){.v = {t2.wg, t2.bm, t2.bn, t2.bk}, .n = 4, .elems = {bm, bn, 1}};
        else if (coopmat) /* subgroups of 32 (coopmat_ok checked they can be had) */
            spec = (vkpt_spec){.v = {aligned},
                               .n = 1,
                               .subgroup_size = dev->caps.subgroup_size_control ? 32 : 0,
                               .elems = {bm, bn, 1}};
        else if (!matvec)
            spec = (vkpt_spec){.v = {bm, bn, aligned}, .n = 3, .elems = {bm, bn, 1}};
        const vkpt_pipeline *p;
        if ((err = vkpt_pipeline_get(dev, variant, &spec, &p))) return err;
        vkpt_pc_mm pc = {.K = K, .n_tok = nt, .y_stride = ys};
        vkpt_buf bufs[5];
        if (intdot) { /* q8 values [n_tok][K] bytes, then scales [n_tok][K/32] f32 */
            uint64_t nq = (uint64_t)a->n_tok * K;
            bufs[1] = k_bind_range(dev, &a->xq, t0 * K, (uint64_t)nt * K, &d);
            pc.x_off = d / 4;
            bufs[4] =
                k_bind_range(dev, &a->xq, nq + t0 * (K / 32) * 4, (uint64_t)nt * (K / 32) * 4, &d);
            pc.xd_off = d / 4;
        } else {
            bufs[1] = k_bind_range(dev, &a->x, t0 * K * 4, (uint64_t)nt * K * 4, &d);
            pc.x_off = d / 4;
            bufs[4] = bufs[1]; /* unused binding slot */
        }
        for (uint64_t r0 = 0; r0 < M; r0 += rows_c) {
            uint32_t nr = (uint32_t)(M - r0 < rows_c ? M - r0 : rows_c);
            bufs[0] = k_bind_range(dev, &a->w, r0 * rb, nr * rb, &d);
            pc.w_off = d;
            pc.M = nr;
            bufs[2] = k_bind_range(dev, &a->y, (t0 * ys + r0) * 4,
                                   ((nt - 1) * (uint64_t)ys + nr) * 4, &d);
            pc.y_off = d / 4;
            pc.flags = a->bias.buf ? 1u : 0u;
            pc.b_off = 0;
            bufs[3] = bufs[2]; /* bound but unread without a bias */
            if (a->bias.buf) {
                bufs[3] = k_bind_range(dev, &a->bias, r0 * 4, nr * 4ull, &d);
                pc.b_off = d / 4;
            }
            vkpt_cmd_dispatch(c, p, bufs, 5, &pc, sizeof pc, nr, matvec ? 1 : nt, 1);
        }
    }
    return 0;
}

/* ---- get_rows ------------------------------------------------------------------------- */

int vkpt_k_get_rows(vkpt_cmd *c, uint32_t wtype, const vkpt_buf *w, uint32_t K, uint32_t M,
                    const vkpt_buf *ids, uint32_t n, const vkpt_buf *out)
{
    if (!c || !w || !ids || !out) return vkpt_fail(VKPT_EINVAL, "get_rows: NULL");
    vkpt_device *dev = c->dev;
    const fmt_variants *fv;
    uint64_t rb;
    int err = check_weights("get_rows", wtype, w, K, M, &fv, &rb);
    if (err) return err;
    if (!n) return 0;
    if ((err = k_check_buf("get_rows ids", ids, (uint64_t)n * 4))) return err;
    if ((err = k_check_buf("get_rows out", out, (uint64_t)n * K * 4))) return err;
    const uint32_t wg = 64;
    vkpt_spec spec = {.v = {wg}, .n = 1, .elems = {wg, 1, 1}};
    const vkpt_pipeline *p;
    if ((err = vkpt_pipeline_get(dev, fv->get_rows, &spec, &p))) return err;

    const uint64_t bmax = k_bind_max(dev);
    const uint32_t groups = (K + 7) / 8;
    if ((uint64_t)vkpt_ceil_div(groups, wg) > dev->caps.max_wg_count[0] || rb > bmax ||
        (uint64_t)K * 4 > bmax)
        return vkpt_fail(VKPT_ETOOBIG, "get_rows: a row of %u elements is too large", K);
    uint64_t rows_c = bmax / rb < M ? bmax / rb : M;
    uint64_t ids_c = dev->caps.max_wg_count[1];
    if (bmax / ((uint64_t)K * 4) < ids_c) ids_c = bmax / ((uint64_t)K * 4);
    if (ids_c > n) ids_c = n;

    for (uint64_t i0 = 0; i0 < n; i0 += ids_c) {
        uint32_t ni = (uint32_t)(n - i0 < ids_c ? n - i0 : ids_c);
        uint32_t d_ids, d_out;
        vkpt_buf bufs[3];
        bufs[1] = k_bind_range(dev, ids, i0 * 4, ni * 4ull, &d_ids);
        bufs[2] = k_bind_range(dev, out, i0 * K * 4, (uint64_t)ni * K * 4, &d_out);
        for (uint64_t r0 = 0; r0 < M; r0 += rows_c) {
            uint32_t nr = (uint32_t)(M - r0 < rows_c ? M - r0 : rows_c), d_w;
            bufs[0] = k_bind_range(dev, w, r0 * rb, nr * rb, &d_w);
            vkpt_pc_get_rows pc = {.K = K,
                                   .n = ni,
                                   .row0 = (uint32_t)r0,
                                   .rows = nr,
                                   .w_off = d_w,
                                   .ids_off = d_ids / 4,
                                   .out_off = d_out / 4,
                                   .flags = r0 + nr == M ? 1u : 0u};
            vkpt_cmd_dispatch(c, p, bufs, 3, &pc, sizeof pc, groups, ni, 1);
        }
    }
    return 0;
}

/* ---- activation quantization --------------------------------------------------------- */

uint64_t vkpt_k_quantize_act_bytes(uint32_t n_tok, uint32_t K)
{
    uint64_t n = (uint64_t)n_tok * K;
    return n + n / 32 * 4;
}

int vkpt_k_quantize_act(vkpt_cmd *c, const vkpt_buf *x, uint32_t n_tok, uint32_t K,
                        const vkpt_buf *xq)
{
    if (!c || !x || !xq) return vkpt_fail(VKPT_EINVAL, "quantize_act: NULL");
    vkpt_device *dev = c->dev;
    if (!n_tok || !K || K % 32)
        return vkpt_fail(VKPT_EINVAL, "quantize_act: K = %u must be a positive multiple of 32", K);
    uint64_t n = (uint64_t)n_tok * K;
    int err = k_check_buf("quantize_act x", x, n * 4);
    if (!err) err = k_check_buf("quantize_act xq", xq, vkpt_k_quantize_act_bytes(n_tok, K));
    if (err) return err;
    if (x->off % 16 || xq->off % 16)
        return vkpt_fail(VKPT_EINVAL, "quantize_act: x and xq must start 16-byte aligned");
    const uint32_t wg = 64;
    vkpt_spec spec = {.v = {wg}, .n = 1, .elems = {wg, 1, 1}};
    const vkpt_pipeline *p;
    if ((err = vkpt_pipeline_get(dev, VKPT_V_quantize_q8_f32, &spec, &p))) return err;
    /* chunks of blocks: x (128 B per block) is the largest binding */
    const uint64_t bmax = k_bind_max(dev);
    uint64_t blocks = n / 32, chunk = bmax / 128;
    if ((uint64_t)dev->caps.max_wg_count[0] * wg < chunk)
        chunk = (uint64_t)dev->caps.max_wg_count[0] * wg;
    for (uint64_t b0 = 0; b0 < blocks; b0 += chunk) {
        uint32_t nb = (uint32_t)(blocks - b0 < chunk ? blocks - b0 : chunk), dx, dq, dd;
        vkpt_buf bufs[3];
        bufs[0] = k_bind_range(dev, x, b0 * 128, nb * 128ull, &dx);
        bufs[1] = k_bind_range(dev, xq, b0 * 32, nb * 32ull, &dq);
        bufs[2] = k_bind_range(dev, xq, n + b0 * 4, nb * 4ull, &dd);
        vkpt_pc_quant_act pc = {.n_blocks = nb, .x_off = dx / 4, .q_off = dq / 4, .d_off = dd / 4};
        vkpt_cmd_dispatch(c, p, bufs, 3, &pc, sizeof pc, nb, 1, 1);
    }
    return 0;
}
