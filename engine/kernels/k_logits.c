/* Logits launchers (shaders/logits.comp) and C references. */
#include "k_logits.h"

#include <math.h>

enum { LOGITS_WG = 256 };

static int logits_check(const char *name, const vkpt_rows *x, uint32_t n, uint32_t n_rows)
{
    if (!x || !n || n > VKPT_LOGITS_MAXN)
        return vkpt_fail(VKPT_EINVAL, "%s: row length %u outside 1..%u", name, n, VKPT_LOGITS_MAXN);
    if (!vkpt__rows_fit(x, n_rows, n))
        return vkpt_fail(VKPT_EINVAL, "%s: %u rows of %u do not fit the view", name, n_rows, n);
    if ((uint64_t)n_rows * n > UINT32_MAX)
        return vkpt_fail(VKPT_ETOOBIG, "%s: %u x %u logits", name, n_rows, n);
    return 0;
}

static int logits_launch(vkpt_cmd *c, int variant, const vkpt_rows *x, uint32_t n, uint32_t n_rows,
                         uint32_t k, const vkpt_buf *b1, const vkpt_buf *b2, uint32_t nx,
                         bool per_row)
{
    vkpt_spec spec = {.v = {LOGITS_WG}, .n = 1};
    if (per_row) spec.elems[0] = 1;
    const vkpt_pipeline *p;
    int err = vkpt_pipeline_get(c->dev, variant, &spec, &p);
    if (err) return err;
    vkpt_pc_logits pc = {.n_rows = n_rows, .n = n, .x_off = x->off, .x_stride = x->stride, .k = k};
    vkpt_buf bufs[3] = {x->buf, *b1, b2 ? *b2 : *b1};
    vkpt_cmd_dispatch(c, p, bufs, b2 ? 3 : 2, &pc, sizeof pc, nx, 1, 1);
    return 0;
}

int vkpt_k_argmax(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, uint32_t n_rows,
                  const vkpt_buf *out_idx, const vkpt_buf *out_val)
{
    int err = logits_check("argmax", x, n, n_rows);
    if (err) return err;
    if (!c || !out_idx || !out_val || out_idx->size < (uint64_t)n_rows * 4 ||
        out_val->size < (uint64_t)n_rows * 4)
        return vkpt_fail(VKPT_EINVAL, "argmax: outputs smaller than %u rows", n_rows);
    if (!n_rows) return 0;
    int v = vkpt_variant_usable(c->dev, VKPT_V_argmax_f32_subgroup) ? VKPT_V_argmax_f32_subgroup
                                                                    : VKPT_V_argmax_f32;
    return logits_launch(c, v, x, n, n_rows, 0, out_idx, out_val, vkpt__grid_rows(c->dev, n_rows),
                         true);
}

int vkpt_k_topk(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, uint32_t n_rows, uint32_t k,
                const vkpt_buf *out_val, const vkpt_buf *out_idx)
{
    int err = logits_check("topk", x, n, n_rows);
    if (err) return err;
    if (!k || k > VKPT_TOPK_MAX || k > n)
        return vkpt_fail(VKPT_EINVAL, "topk: k %u outside 1..min(%u, row length %u)", k,
                         VKPT_TOPK_MAX, n);
    if (!c || !out_idx || !out_val || out_idx->size < (uint64_t)n_rows * k * 4 ||
        out_val->size < (uint64_t)n_rows * k * 4)
        return vkpt_fail(VKPT_EINVAL, "topk: outputs smaller than %u rows of %u", n_rows, k);
    if (!n_rows) return 0;
    return logits_launch(c, VKPT_V_topk_f32, x, n, n_rows, k, out_val, out_idx,
                         vkpt__grid_rows(c->dev, n_rows), true);
}

int vkpt_k_logsumexp(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, uint32_t n_rows,
                     const vkpt_buf *temps, const vkpt_buf *out)
{
    int err = logits_check("logsumexp", x, n, n_rows);
    if (err) return err;
    if (!c || !temps || !out || temps->size < (uint64_t)n_rows * 4 ||
        out->size < (uint64_t)n_rows * 8)
        return vkpt_fail(VKPT_EINVAL, "logsumexp: temps/out smaller than %u rows", n_rows);
    if (!n_rows) return 0;
    int v = vkpt_variant_usable(c->dev, VKPT_V_lse_f32_subgroup) ? VKPT_V_lse_f32_subgroup
                                                                 : VKPT_V_lse_f32;
    return logits_launch(c, v, x, n, n_rows, 0, temps, out, vkpt__grid_rows(c->dev, n_rows), true);
}

int vkpt_k_logits_temp(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, uint32_t n_rows,
                       const vkpt_buf *temps)
{
    int err = logits_check("logits_temp", x, n, n_rows);
    if (err) return err;
    if (!c || !temps || temps->size < (uint64_t)n_rows * 4)
        return vkpt_fail(VKPT_EINVAL, "logits_temp: temps smaller than %u rows", n_rows);
    if (!n_rows) return 0;
    return logits_launch(c, VKPT_V_logits_temp_f32, x, n, n_rows, 0, temps, NULL,
                         vkpt__grid_elems(c->dev, (uint64_t)n_rows * n, LOGITS_WG), false);
}

int vkpt_k_logits_adjust(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, uint32_t n_rows,
                         const vkpt_buf *offsets, const vkpt_buf *entries, uint32_t n_entries)
{
    int err = logits_check("logits_adjust", x, n, n_rows);
    if (err) return err;
    if (!c || !offsets || !entries || offsets->size < ((uint64_t)n_rows + 1) * 4 ||
        entries->size < (uint64_t)n_entries * sizeof(vkpt_logit_adj))
        return vkpt_fail(VKPT_EINVAL, "logits_adjust: offsets/entries too small");
    if (!n_rows || !n_entries) return 0;
    vkpt_spec spec = {.v = {64}, .n = 1, .elems = {1, 1, 1}};
    const vkpt_pipeline *p;
    if ((err = vkpt_pipeline_get(c->dev, VKPT_V_logits_adjust_f32, &spec, &p))) return err;
    vkpt_pc_logits pc = {
        .n_rows = n_rows, .n = n, .x_off = x->off, .x_stride = x->stride, .k = n_entries};
    vkpt_buf bufs[3] = {x->buf, *offsets, *entries};
    vkpt_cmd_dispatch(c, p, bufs, 3, &pc, sizeof pc, vkpt__grid_rows(c->dev, n_rows), 1, 1);
    return 0;
}

/* ---- references ---- */

/* the order of the header: a ranks before b (larger first, NaN last, ties
 * by the lower index) */
static bool ref_before(float a, uint32_t ia, float b, uint32_t ib)
{
    bool na = isnan(a), nb = isnan(b);
    if (na != nb) return nb;
    if (!na && a != b) return a > b;
    return ia < ib;
}

void vkpt_ref_argmax(const float *x, size_t x_stride, uint32_t n, uint32_t n_rows, uint32_t *idx,
                     float *val)
{
    for (uint32_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * x_stride;
        uint32_t bi = UINT32_MAX;
        float bv = -INFINITY;
        for (uint32_t i = 0; i < n; i++)
            if (!isnan(xr[i]) && (bi == UINT32_MAX || ref_before(xr[i], i, bv, bi))) {
                bv = xr[i];
                bi = i;
            }
        idx[r] = bi;
        val[r] = bv;
    }
}

void vkpt_ref_topk(const float *x, size_t x_stride, uint32_t n, uint32_t n_rows, uint32_t k,
                   float *val, uint32_t *idx)
{
    /* k rounds of selection: the best element after the previous pick */
    for (uint32_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * x_stride;
        uint32_t prev = UINT32_MAX;
        for (uint32_t j = 0; j < k; j++) {
            uint32_t best = UINT32_MAX;
            for (uint32_t i = 0; i < n; i++) {
                if (prev != UINT32_MAX && !ref_before(xr[prev], prev, xr[i], i)) continue;
                if (best == UINT32_MAX || ref_before(xr[i], i, xr[best], best)) best = i;
            }
            val[r * k + j] = best == UINT32_MAX ? NAN : xr[best];
            idx[r * k + j] = best;
            prev = best;
        }
    }
}

void vkpt_ref_logsumexp(const float *x, size_t x_stride, uint32_t n, uint32_t n_rows,
                        const float *temps, float *out)
{
    for (uint32_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * x_stride;
        double t = temps[r], m = -INFINITY, s = 0;
        for (uint32_t i = 0; i < n; i++)
            if (xr[i] / t > m) m = xr[i] / t;
        if (m != -INFINITY)
            for (uint32_t i = 0; i < n; i++) s += exp(xr[i] / t - m);
        out[2 * r] = (float)m;
        out[2 * r + 1] = m == -INFINITY ? -INFINITY : (float)(m + log(s));
    }
}

void vkpt_ref_logits_temp(float *x, size_t x_stride, uint32_t n, uint32_t n_rows,
                          const float *temps)
{
    for (uint32_t r = 0; r < n_rows; r++)
        for (uint32_t i = 0; i < n; i++) x[r * x_stride + i] /= temps[r];
}

void vkpt_ref_logits_adjust(float *x, size_t x_stride, uint32_t n, uint32_t n_rows,
                            const uint32_t *offsets, const vkpt_logit_adj *entries)
{
    for (uint32_t r = 0; r < n_rows; r++)
        for (uint32_t e = offsets[r]; e < offsets[r + 1]; e++) {
            const vkpt_logit_adj *a = &entries[e];
            if (a->id >= n) continue;
            float *v = &x[r * x_stride + a->id];
            *v = (*v < 0 ? *v * a->rep : *v / a->rep) + a->delta;
        }
}
