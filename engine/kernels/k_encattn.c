/* Encoder attention launcher (shaders/attn_enc.comp) and C reference. */
#include "k_encattn.h"

#include <math.h>

uint32_t vkpt_encattn_items(const vkpt_encattn_seq *seqs, uint32_t n_seqs, uint32_t *items,
                            uint32_t cap)
{
    uint32_t n = 0;
    for (uint32_t s = 0; s < n_seqs; s++)
        for (uint32_t t0 = 0; t0 < seqs[s].len; t0 += VKPT_ENCATTN_ROWS, n++)
            if (items && n < cap) {
                items[3 * n] = seqs[s].start;
                items[3 * n + 1] = seqs[s].len;
                items[3 * n + 2] = t0;
            }
    return n;
}

static bool aligned_view(const vkpt_rows *r)
{
    return r->off % 4 == 0 && r->stride % 4 == 0;
}

int vkpt_k_encattn(vkpt_cmd *c, const vkpt_encattn_params *p, const vkpt_buf *items,
                   uint32_t n_items, uint32_t n_rows, const vkpt_rows *q, const vkpt_rows *k,
                   const vkpt_rows *v, const vkpt_rows *out)
{
    if (!c || !p || !items || !q || !k || !v || !out)
        return vkpt_fail(VKPT_EINVAL, "encoder attention: missing argument");
    uint32_t hd = p->head_dim;
    if (!p->n_head || !p->n_kv_head || p->n_head % p->n_kv_head || !hd || hd % 4 || hd > 256)
        return vkpt_fail(VKPT_EINVAL,
                         "encoder attention: %u heads, %u kv heads, head_dim %u (a multiple of 4 "
                         "up to 256)",
                         p->n_head, p->n_kv_head, hd);
    if (!aligned_view(q) || !aligned_view(k) || !aligned_view(v) || !aligned_view(out))
        return vkpt_fail(VKPT_EINVAL, "encoder attention: views must be 16-byte aligned");
    uint64_t qlen = (uint64_t)p->n_head * hd, kvlen = (uint64_t)p->n_kv_head * hd;
    if (!vkpt__rows_fit(q, n_rows, qlen) || !vkpt__rows_fit(k, n_rows, kvlen) ||
        !vkpt__rows_fit(v, n_rows, kvlen) || !vkpt__rows_fit(out, n_rows, qlen) ||
        items->size < (uint64_t)n_items * 12)
        return vkpt_fail(VKPT_EINVAL, "encoder attention: %u rows do not fit the views", n_rows);
    if (!n_items) return 0;
    vkpt_device *dev = c->dev;
    /* two K/V tiles of BK rows in shared memory: 16 KiB, the minimum every
     * device has, at head_dim 64 with BK 32 */
    uint32_t bk = 32;
    uint32_t shm = dev->caps.max_shared_memory ? dev->caps.max_shared_memory : 16384;
    while (bk > 4 && 2ull * bk * hd * 4 > shm) bk /= 2;
    vkpt_spec spec = {.v = {VKPT_ENCATTN_ROWS, hd, bk}, .n = 3, .elems = {1, 1, 1}};
    const vkpt_pipeline *pl;
    int err = vkpt_pipeline_get(dev, VKPT_V_attn_enc_f32, &spec, &pl);
    if (err) return err;
    vkpt_pc_attn_enc pc = {.n_items = n_items,
                           .n_head = p->n_head,
                           .n_kv_head = p->n_kv_head,
                           .q_off = q->off / 4,
                           .q_stride = q->stride / 4,
                           .k_off = k->off / 4,
                           .k_stride = k->stride / 4,
                           .v_off = v->off / 4,
                           .v_stride = v->stride / 4,
                           .o_off = out->off / 4,
                           .o_stride = out->stride / 4,
                           .scale = p->scale > 0 ? p->scale : 1.0f / sqrtf((float)hd)};
    vkpt_buf bufs[5] = {*items, q->buf, k->buf, v->buf, out->buf};
    vkpt_cmd_dispatch(c, pl, bufs, 5, &pc, sizeof pc, vkpt__grid_rows(dev, n_items), p->n_head, 1);
    return 0;
}

void vkpt_ref_encattn(const vkpt_encattn_params *p, const vkpt_encattn_seq *seqs, uint32_t n_seqs,
                      const float *q, size_t q_stride, const float *k, size_t k_stride,
                      const float *v, size_t v_stride, float *out, size_t o_stride)
{
    uint32_t hd = p->head_dim, group = p->n_head / p->n_kv_head;
    double scale = p->scale > 0 ? p->scale : 1.0 / sqrt((double)hd);
    for (uint32_t s = 0; s < n_seqs; s++) {
        uint32_t st = seqs[s].start, len = seqs[s].len;
        double *w = vkpt_malloc(len * sizeof *w);
        if (!w) return;
        for (uint32_t t = 0; t < len; t++)
            for (uint32_t h = 0; h < p->n_head; h++) {
                const float *qr = q + (st + t) * q_stride + (size_t)h * hd;
                uint32_t hk = h / group;
                double mx = -INFINITY, sum = 0;
                for (uint32_t j = 0; j < len; j++) {
                    const float *kr = k + (st + j) * k_stride + (size_t)hk * hd;
                    double d = 0;
                    for (uint32_t i = 0; i < hd; i++) d += (double)qr[i] * kr[i];
                    w[j] = d * scale;
                    if (w[j] > mx) mx = w[j];
                }
                for (uint32_t j = 0; j < len; j++) sum += (w[j] = exp(w[j] - mx));
                float *o = out + (st + t) * o_stride + (size_t)h * hd;
                for (uint32_t i = 0; i < hd; i++) {
                    double a = 0;
                    for (uint32_t j = 0; j < len; j++)
                        a += w[j] * v[(st + j) * v_stride + (size_t)hk * hd + i];
                    o[i] = (float)(a / sum);
                }
            }
        vkpt_free(w);
    }
}
