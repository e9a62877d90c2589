/* Pooling launcher (shaders/pool.comp) and its C reference. */
#include "k_pool.h"

#include <math.h>

_Static_assert(sizeof(vkpt_pool_seq) == 16, "pool records are four u32 on the GPU");

int vkpt_k_pool(vkpt_cmd *c, const vkpt_rows *x, uint32_t n, const vkpt_buf *seqs, uint32_t n_seqs,
                const vkpt_rows *o)
{
    if (!c || !x || !seqs || !o || !n) return vkpt_fail(VKPT_EINVAL, "pool: missing buffer");
    if (!n_seqs) return 0;
    if (!vkpt__rows_fit(x, 1, n) || !vkpt__rows_fit(o, n_seqs, 1) ||
        seqs->size < (uint64_t)n_seqs * sizeof(vkpt_pool_seq))
        return vkpt_fail(VKPT_EINVAL, "pool: %u sequences of %u do not fit the views", n_seqs, n);
    vkpt_device *dev = c->dev;
    int v = vkpt_variant_usable(dev, VKPT_V_pool_f32_subgroup) ? VKPT_V_pool_f32_subgroup
                                                               : VKPT_V_pool_f32;
    uint32_t wg = 64;
    while (wg < 256 && wg * 4 < n) wg *= 2;
    vkpt_spec spec = {.v = {wg}, .n = 1, .elems = {1, 1, 1}};
    const vkpt_pipeline *p;
    int err = vkpt_pipeline_get(dev, v, &spec, &p);
    if (err) return err;
    vkpt_pc_pool pc = {.n_seqs = n_seqs,
                       .seq_off = 0,
                       .x_off = x->off,
                       .x_stride = x->stride,
                       .o_off = o->off,
                       .o_stride = o->stride};
    vkpt_buf bufs[3] = {x->buf, *seqs, o->buf};
    vkpt_cmd_dispatch(c, p, bufs, 3, &pc, sizeof pc, vkpt__grid_rows(dev, n_seqs), 1, 1);
    return 0;
}

/* Element i of sequence q's pooled vector, in double. */
static double pooled(const float *x, size_t x_stride, const vkpt_pool_seq *q, uint32_t i)
{
    uint32_t kind = q->mode & 3u;
    if (kind != VKPT_POOL_KIND_MEAN) {
        uint32_t r = kind == VKPT_POOL_KIND_CLS ? q->start : q->start + q->len - 1;
        return x[r * x_stride + i];
    }
    double sum = 0;
    for (uint32_t r = 0; r < q->len; r++) sum += x[(q->start + r) * x_stride + i];
    return sum / q->len;
}

int vkpt_ref_pool(const float *x, size_t x_stride, uint32_t n, const vkpt_pool_seq *seqs,
                  uint32_t n_seqs, float *o, size_t o_stride)
{
    for (uint32_t s = 0; s < n_seqs; s++) {
        const vkpt_pool_seq *q = &seqs[s];
        if (!q->len || !q->dims || q->dims > n || !(q->mode & 3u))
            return vkpt_fail(VKPT_EINVAL, "pool reference: bad record %u", s);
        double nrm = 1;
        if (q->mode & VKPT_POOL_NORMALIZE) {
            double ss = 0;
            for (uint32_t i = 0; i < q->dims; i++) {
                double v = pooled(x, x_stride, q, i);
                ss += v * v;
            }
            nrm = sqrt(ss) < 1e-12 ? 1e-12 : sqrt(ss);
        }
        for (uint32_t i = 0; i < q->dims; i++)
            o[s * o_stride + i] = (float)(pooled(x, x_stride, q, i) / nrm);
    }
    return 0;
}
