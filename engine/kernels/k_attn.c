/* Paged attention: batch plan, launchers (shaders/attn.comp,
 * attn_reduce.comp, kv_write.comp) and C references.
 *
 * Metadata layout (u32 words, what the shaders read):
 *   [0, 4*n_seqs)            the vkpt_attn_seq records
 *   prefill.items_off        {seq, t0} per prefill tile
 *   decode.items_off         {seq, k0, k1} per decode split
 *   dec_list_off             {seq, first split, split count} per decode sequence
 * Prefill tiles never cross sequences; a decode split is a key range of
 * one sequence whose partial result sits at its item index in scratch. */
#include "k_attn.h"
#include "quant.h"

#include <math.h>
#include <string.h>

enum {
    ATTN_WG = 128,
    /* below this many workgroups along x*y, decode contexts are split */
    DECODE_TARGET_WGS = 512,
    DECODE_MIN_SPLIT = 64,
    SMEM_CAP = 32768, /* more shared memory per workgroup costs occupancy */
};

/* shared memory of attn.comp for a tile shape */
static uint64_t attn_smem(uint32_t m, uint32_t bk, uint32_t d)
{
    return (uint64_t)m * d * 4 + (uint64_t)bk * (d / 4 + 1) * 8 + (uint64_t)m * bk * 4 +
           3ull * m * 4;
}

static uint32_t smem_budget(const vkpt_device *dev)
{
    uint32_t s = dev->caps.max_shared_memory;
    return s < SMEM_CAP ? s : SMEM_CAP;
}

/* shared memory of attn_cm.comp (padded strides, see the shader) */
static uint64_t attn_cm_smem(uint32_t m, uint32_t bk, uint32_t d)
{
    return (uint64_t)m * (d + 8) * 2 + (uint64_t)bk * (d + 8) * 2 + (uint64_t)m * (bk + 4) * 4 +
           (uint64_t)m * (bk + 8) * 2 + (uint64_t)m * (d + 4) * 4 + 12ull * m;
}

/* The KHR cooperative-matrix prefill runs 16x16x16 f16 x f16 -> f32
 * products in subgroup scope: usable when allowed (params.coopmat or the
 * device's opt-in), this build compiled it and the device lists that shape. Its f32 O tile makes it want more shared memory: up to
 * 48 KiB, what NVIDIA and AMD give a workgroup without opting in. */
static bool coopmat_prefill(const vkpt_device *dev, const vkpt_attn_params *p, uint32_t group,
                            vkpt_attn_path *pp)
{
    uint32_t d = p->head_dim;
    if (!(p->coopmat || dev->coopmat_auto) || d % 16 || !dev->caps.vulkan_memory_model ||
        !vkpt_variant_usable(dev, VKPT_V_attn_prefill_f16kv_coopmat))
        return false;
    bool shape = false;
    for (uint32_t i = 0; i < dev->caps.n_coopmat_shapes; i++) {
        const vkpt_coopmat_shape *c = &dev->caps.coopmat_shapes[i];
        shape |= c->m == 16 && c->n == 16 && c->k == 16 && c->a == VKPT_CT_F16 &&
                 c->b == VKPT_CT_F16 && c->c == VKPT_CT_F32 && c->result == VKPT_CT_F32 &&
                 c->scope == 3 /* subgroup */;
    }
    uint32_t budget = dev->caps.max_shared_memory < 49152 ? dev->caps.max_shared_memory : 49152;
    uint32_t m = 64, bk = 32;
    while (m > 16 && attn_cm_smem(m, bk, d) > budget) m /= 2;
    if (!shape || attn_cm_smem(m, bk, d) > budget) return false;
    pp->variant = VKPT_V_attn_prefill_f16kv_coopmat;
    pp->heads = group < m ? group : m;
    pp->rows = m; /* rows past heads * (m / heads) are idle: m stays a multiple of 16 */
    pp->keys = bk;
    pp->n_hsplit = (group + pp->heads - 1) / pp->heads;
    pp->wg = ATTN_WG;
    return true;
}

/* shared memory of attn_nv2.comp (its matrices are staged by the driver,
 * within what the device reserves for that) */
static uint64_t attn_nv2_smem(uint32_t m, uint32_t bk)
{
    return (uint64_t)m * (bk + 4) * 4 + (uint64_t)m * (bk + 8) * 2 + 12ull * m;
}

/* The NV2 prefill: workgroup-scope f16 x f16 -> f32 matrices of M = 64
 * rows, K = head_dim, N = BK = 32 keys (and M x BK times BK x head_dim), in
 * the largest workgroup (up to 256) the device lists with granularities
 * that divide them. GH is the largest divisor of the group that fits the
 * rows, so a workgroup's heads never cross into the next kv head's. Needs
 * the caller's or the device's coopmat opt-in; unverified on hardware. */
static bool nv2_prefill(const vkpt_device *dev, const vkpt_attn_params *p, uint32_t group,
                        vkpt_attn_path *pp)
{
    const vkpt_device_caps *c = &dev->caps;
    uint32_t d = p->head_dim, m = 64, bk = 32, wg = 0;
    if (!(p->coopmat || dev->coopmat_auto) || p->no_nv2 || d % 16 || !c->maintenance4 ||
        !vkpt_variant_usable(dev, VKPT_V_attn_prefill_f16kv_nv2))
        return false;
    for (uint32_t i = 0; i < c->n_coopmat_flex; i++) {
        const vkpt_coopmat_flex *f = &c->coopmat_flex[i];
        uint32_t w = f->wg_invocations;
        if (f->a != VKPT_CT_F16 || f->b != VKPT_CT_F16 || f->c != VKPT_CT_F32 ||
            f->result != VKPT_CT_F32 || f->scope != 2 /* workgroup */ || !w || w > 256 ||
            w > c->max_wg_invocations || w > c->max_wg_size[0] ||
            (c->coopmat2_max_wg_size && w > c->coopmat2_max_wg_size) || !f->m_gran || !f->n_gran ||
            !f->k_gran || m % f->m_gran || bk % f->n_gran || d % f->n_gran || d % f->k_gran ||
            bk % f->k_gran)
            continue;
        if (w > wg) wg = w;
    }
    uint64_t smem = attn_nv2_smem(m, bk) + c->coopmat2_reserved_smem;
    if (!wg || smem > c->max_shared_memory) return false;
    uint32_t gh = group < m ? group : m;
    while (group % gh) gh--;
    pp->variant = VKPT_V_attn_prefill_f16kv_nv2;
    pp->heads = gh;
    pp->rows = m; /* rows past gh * (m / gh) are idle */
    pp->keys = bk;
    pp->n_hsplit = group / gh;
    pp->wg = wg;
    return true;
}

/* Prefill: BK = 32 keys (two cache blocks; one block on devices with the
 * minimum 16 KiB of shared memory); the most rows that fit, packed as
 * (tokens x heads of one kv group). */
static int choose_prefill(const vkpt_device *dev, const vkpt_attn_params *p, uint32_t group,
                          vkpt_attn_path *pp)
{
    uint32_t d = p->head_dim;
    if (nv2_prefill(dev, p, group, pp) || coopmat_prefill(dev, p, group, pp)) return 0;
    pp->variant = VKPT_V_attn_prefill_f16kv;
    uint32_t bk = 32, mmax = 64;
    while (mmax > 8 && attn_smem(mmax, bk, d) > smem_budget(dev)) mmax /= 2;
    if (attn_smem(mmax, bk, d) > smem_budget(dev)) bk = 16;
    while (mmax > 1 && attn_smem(mmax, bk, d) > smem_budget(dev)) mmax /= 2;
    if (attn_smem(mmax, bk, d) > smem_budget(dev))
        return vkpt_fail(VKPT_EUNSUPPORTED, "attention: head_dim %u needs more shared memory", d);
    uint32_t gh = group < mmax ? group : mmax;
    pp->heads = gh;
    pp->rows = gh * (mmax / gh);
    pp->keys = bk;
    pp->n_hsplit = (group + gh - 1) / gh;
    pp->wg = ATTN_WG;
    return 0;
}

/* Decode: one token, so rows = q heads of the group (up to 16); long key
 * tiles keep the invocations busy when there are few rows. */
static int choose_decode(const vkpt_device *dev, uint32_t d, uint32_t group, vkpt_attn_path *pp)
{
    pp->variant = VKPT_V_attn_decode_f16kv;
    uint32_t gh = group < 16 ? group : 16;
    uint32_t bk = gh <= 2 ? 128 : 64;
    while (bk > 16 && attn_smem(gh, bk, d) > smem_budget(dev)) bk /= 2;
    while (gh > 1 && attn_smem(gh, bk, d) > smem_budget(dev)) gh /= 2;
    if (attn_smem(gh, bk, d) > smem_budget(dev))
        return vkpt_fail(VKPT_EUNSUPPORTED, "attention: head_dim %u needs more shared memory", d);
    pp->heads = gh;
    pp->rows = gh;
    pp->keys = bk;
    pp->n_hsplit = (group + gh - 1) / gh;
    pp->wg = ATTN_WG;
    return 0;
}

size_t vkpt_attn_meta_words_max(uint32_t max_seqs, uint32_t max_rows)
{
    /* records + prefill tiles (<= rows) + splits (<= seqs + target) + decode list */
    return 4 * (size_t)max_seqs + 2 * (size_t)max_rows +
           3 * ((size_t)max_seqs + DECODE_TARGET_WGS) + 3 * (size_t)max_seqs;
}

static uint64_t scratch_bytes(uint32_t n_items, uint32_t n_head, uint32_t d, uint64_t *ml_off)
{
    uint64_t acc = (uint64_t)n_items * n_head * d * 4;
    *ml_off = (acc + 255) / 256 * 256; /* a separately bound view: storage-offset aligned */
    return *ml_off + (uint64_t)n_items * n_head * 8;
}

uint64_t vkpt_attn_scratch_bytes_max(const vkpt_attn_params *p, uint32_t max_seqs)
{
    uint64_t off;
    return scratch_bytes(max_seqs + DECODE_TARGET_WGS, p->n_head, p->head_dim, &off);
}

/* keys a decode row may see: [lo, kv_len) */
static uint32_t decode_lo(const vkpt_attn_params *p, const vkpt_attn_seq *s)
{
    if (p->non_causal || !p->window || s->kv_len <= p->window) return 0;
    return s->kv_len - p->window;
}

int vkpt_attn_plan_make(const vkpt_device *dev, const vkpt_attn_params *p,
                        const vkpt_attn_seq *seqs, uint32_t n_seqs, uint32_t *meta, size_t meta_cap,
                        vkpt_attn_plan *plan)
{
    if (!dev || !p || !plan || (n_seqs && (!seqs || !meta)))
        return vkpt_fail(VKPT_EINVAL, "attn plan: NULL argument");
    memset(plan, 0, sizeof *plan);
    uint32_t d = p->head_dim;
    if (!p->n_head || !p->n_kv_head || p->n_head % p->n_kv_head)
        return vkpt_fail(VKPT_EINVAL, "attention: n_head %u is not a multiple of n_kv_head %u",
                         p->n_head, p->n_kv_head);
    if (!d || d % 4 || d > 256)
        return vkpt_fail(VKPT_EINVAL, "attention: head_dim %u must be a multiple of 4, <= 256", d);
    if (p->split_len % VKPT_KV_BLOCK)
        return vkpt_fail(VKPT_EINVAL, "attention: split_len %u is not a multiple of %u",
                         p->split_len, VKPT_KV_BLOCK);
    if (!(p->scale >= 0.0f) || !(p->softcap >= 0.0f))
        return vkpt_fail(VKPT_EINVAL, "attention: scale %g / softcap %g", (double)p->scale,
                         (double)p->softcap);
    plan->p = *p;
    if (plan->p.scale == 0.0f) plan->p.scale = (float)(1.0 / sqrt((double)d));
    uint32_t group = p->n_head / p->n_kv_head;
    int err = choose_prefill(dev, p, group, &plan->prefill);
    if (!err) err = choose_decode(dev, d, group, &plan->decode);
    if (err) return err;
    plan->n_seqs = n_seqs;

    /* records, and the sizes of what follows */
    size_t w = 4 * (size_t)n_seqs;
    if (w > meta_cap) goto too_small;
    uint32_t bt_tile = plan->prefill.rows / plan->prefill.heads; /* tokens per prefill tile */
    uint64_t n_pf = 0, n_dec = 0, dec_len = 0;
    for (uint32_t s = 0; s < n_seqs; s++) {
        const vkpt_attn_seq *q = &seqs[s];
        if (!q->q_len || q->kv_len < q->q_len)
            return vkpt_fail(VKPT_EINVAL, "attention: sequence %u has q_len %u, kv_len %u", s,
                             q->q_len, q->kv_len);
        uint64_t end = (uint64_t)q->q_start + q->q_len;
        uint64_t bt_end = (uint64_t)q->bt_start + (q->kv_len + VKPT_KV_BLOCK - 1) / VKPT_KV_BLOCK;
        if (end > UINT32_MAX || bt_end > UINT32_MAX)
            return vkpt_fail(VKPT_EINVAL, "attention: sequence %u out of range", s);
        if (end > plan->n_rows) plan->n_rows = (uint32_t)end;
        if (bt_end > plan->bt_words) plan->bt_words = (uint32_t)bt_end;
        meta[4 * s] = q->q_start;
        meta[4 * s + 1] = q->q_len;
        meta[4 * s + 2] = q->kv_len;
        meta[4 * s + 3] = q->bt_start;
        if (q->q_len == 1) {
            n_dec++;
            dec_len += q->kv_len - decode_lo(p, q);
        } else {
            n_pf += (q->q_len + bt_tile - 1) / bt_tile;
        }
    }

    /* prefill tiles */
    plan->prefill.items_off = (uint32_t)w;
    if (w + 2 * n_pf > meta_cap) goto too_small;
    for (uint32_t s = 0; s < n_seqs; s++) {
        if (seqs[s].q_len == 1) continue;
        for (uint32_t t0 = 0; t0 < seqs[s].q_len; t0 += bt_tile) {
            meta[w++] = s;
            meta[w++] = t0;
        }
    }
    plan->prefill.n_items = (uint32_t)n_pf;

    /* decode splits: split only when the sequences alone leave the GPU idle */
    uint64_t split = p->split_len;
    if (!split) {
        uint64_t per_item = (uint64_t)p->n_kv_head * plan->decode.n_hsplit;
        uint64_t want = (DECODE_TARGET_WGS + per_item - 1) / per_item;
        split = UINT32_MAX; /* one split per sequence */
        if (n_dec && want > n_dec) {
            split = (dec_len + want - 1) / want;
            split = (split + VKPT_KV_BLOCK - 1) / VKPT_KV_BLOCK * VKPT_KV_BLOCK;
            if (split < DECODE_MIN_SPLIT) split = DECODE_MIN_SPLIT;
        }
    }
    plan->decode.items_off = (uint32_t)w;
    uint32_t n_items = 0;
    for (uint32_t s = 0; s < n_seqs; s++) {
        const vkpt_attn_seq *q = &seqs[s];
        if (q->q_len != 1) continue;
        uint32_t lo = decode_lo(p, q);
        uint64_t k0 = lo / VKPT_KV_BLOCK * VKPT_KV_BLOCK;
        do {
            if (w + 3 > meta_cap) goto too_small;
            uint64_t k1 = k0 + split < q->kv_len ? k0 + split : q->kv_len;
            meta[w++] = s;
            meta[w++] = (uint32_t)(k0 > lo ? k0 : lo);
            meta[w++] = (uint32_t)k1;
            n_items++;
            k0 = k1;
        } while (k0 < q->kv_len);
    }
    plan->decode.n_items = n_items;
    plan->dec_list_off = (uint32_t)w;
    uint32_t item = 0;
    for (uint32_t s = 0; s < n_seqs; s++) {
        if (seqs[s].q_len != 1) continue;
        if (w + 3 > meta_cap) goto too_small;
        uint32_t first = item;
        while (item < n_items && meta[plan->decode.items_off + 3 * item] == s) item++;
        meta[w++] = s;
        meta[w++] = first;
        meta[w++] = item - first;
        plan->n_dec_seqs++;
    }
    plan->meta_words = (uint32_t)w;
    plan->scratch_bytes = n_items ? scratch_bytes(n_items, p->n_head, d, &plan->scratch_ml_off) : 0;
    return 0;
too_small:
    return vkpt_fail(VKPT_ETOOBIG, "attention: metadata needs more than %zu words for %u sequences",
                     meta_cap, n_seqs);
}

static uint32_t pow2_ceil(uint32_t v)
{
    uint32_t p = 1;
    while (p < v && p < 0x80000000u) p <<= 1;
    return p;
}

int vkpt_attn_plan_indirect(vkpt_attn_plan *plan, uint32_t *meta, size_t meta_cap, uint32_t hdr,
                            uint64_t scratch_size)
{
    if (!plan || !meta || plan->indirect)
        return vkpt_fail(VKPT_EINVAL, "attn plan indirect: NULL argument or already indirect");
    if (hdr < plan->meta_words || (size_t)hdr + VKPT_ATTN_HDR_WORDS > meta_cap)
        return vkpt_fail(VKPT_ETOOBIG, "attention: header at word %u does not fit %zu words", hdr,
                         meta_cap);
    uint32_t *h = meta + hdr;
    h[0] = plan->prefill.n_items;
    h[1] = plan->prefill.items_off;
    h[2] = plan->decode.n_items;
    h[3] = plan->decode.items_off;
    h[4] = plan->n_dec_seqs;
    h[5] = plan->dec_list_off;
    if (plan->prefill.n_items) plan->prefill.n_items = pow2_ceil(plan->prefill.n_items);
    if (plan->n_dec_seqs) plan->n_dec_seqs = pow2_ceil(plan->n_dec_seqs);
    if (plan->decode.n_items) {
        uint32_t n = pow2_ceil(plan->decode.n_items);
        uint64_t off, need = scratch_bytes(n, plan->p.n_head, plan->p.head_dim, &off);
        /* a smaller bound when the rounded one would not fit: still exact */
        while (need > scratch_size && n > plan->decode.n_items) {
            n = n - n / 4 > plan->decode.n_items ? n - n / 4 : plan->decode.n_items;
            need = scratch_bytes(n, plan->p.n_head, plan->p.head_dim, &off);
        }
        if (need > scratch_size)
            return vkpt_fail(VKPT_ETOOBIG, "attention: %u decode splits need %llu scratch bytes", n,
                             (unsigned long long)need);
        plan->decode.n_items = n;
        plan->scratch_bytes = need;
        plan->scratch_ml_off = off;
    }
    plan->meta_words = hdr + VKPT_ATTN_HDR_WORDS;
    plan->indirect = true;
    plan->hdr = hdr;
    return 0;
}

static uint64_t block_bytes(const vkpt_attn_params *p)
{
    return (uint64_t)p->n_kv_head * VKPT_KV_BLOCK * p->head_dim * 2;
}

static int launch_path(vkpt_cmd *c, const vkpt_attn_plan *plan, const vkpt_attn_path *pp,
                       int variant, const vkpt_rows *q, const vkpt_buf *bufs, uint32_t n_bufs,
                       uint32_t n_blocks, uint32_t hdr_word)
{
    const vkpt_attn_params *p = &plan->p;
    vkpt_spec spec = {
        .v = {pp->wg, p->head_dim, pp->rows, pp->keys, pp->heads}, .n = 5, .elems = {1, 1, 1}};
    const vkpt_pipeline *pipe;
    int err = vkpt_pipeline_get(c->dev, variant, &spec, &pipe);
    if (err) return err;
    vkpt_pc_attn pc = {.n_head = p->n_head,
                       .n_kv_head = p->n_kv_head,
                       .group = p->n_head / p->n_kv_head,
                       .n_hsplit = pp->n_hsplit,
                       .q_off = q->off,
                       .q_stride = q->stride,
                       .n_items = plan->indirect ? 0xffffffffu : pp->n_items,
                       .items_off = plan->indirect ? plan->hdr + hdr_word : pp->items_off,
                       .n_blocks = n_blocks,
                       .window = p->non_causal ? 0 : p->window,
                       .causal = !p->non_causal,
                       .scale = p->scale,
                       .softcap = p->softcap};
    vkpt_cmd_dispatch(c, pipe, bufs, n_bufs, &pc, sizeof pc, vkpt__grid_rows(c->dev, pp->n_items),
                      p->n_kv_head * pp->n_hsplit, 1);
    return 0;
}

int vkpt_k_attn(vkpt_cmd *c, const vkpt_attn_plan *plan, const vkpt_attn_bufs *b)
{
    if (!c || !plan || !b) return vkpt_fail(VKPT_EINVAL, "attention: NULL argument");
    const vkpt_attn_params *p = &plan->p;
    uint64_t row = (uint64_t)p->n_head * p->head_dim;
    uint64_t bb = block_bytes(p);
    uint64_t n_blocks = bb ? b->k_cache.size / bb : 0;
    if (!n_blocks || b->v_cache.size / bb < n_blocks)
        return vkpt_fail(VKPT_EINVAL, "attention: caches smaller than one block of %llu bytes",
                         (unsigned long long)bb);
    if (n_blocks > UINT32_MAX / VKPT_KV_BLOCK) n_blocks = UINT32_MAX / VKPT_KV_BLOCK;
    if (!vkpt__rows_fit(&b->q, plan->n_rows, row) || b->out.size < plan->n_rows * row * 4 ||
        b->meta.size < (uint64_t)plan->meta_words * 4 ||
        b->block_table.size < (uint64_t)plan->bt_words * 4 ||
        (plan->scratch_bytes && b->scratch.size < plan->scratch_bytes))
        return vkpt_fail(VKPT_EINVAL,
                         "attention: buffers too small for %u rows (q, out, meta %u words, "
                         "block table %u words or scratch %llu bytes)",
                         plan->n_rows, plan->meta_words, plan->bt_words,
                         (unsigned long long)plan->scratch_bytes);
    if (plan->prefill.n_items) {
        vkpt_buf bufs[6] = {b->meta, b->block_table, b->q.buf, b->k_cache, b->v_cache, b->out};
        int err = launch_path(c, plan, &plan->prefill, plan->prefill.variant, &b->q, bufs, 6,
                              (uint32_t)n_blocks, 0);
        if (err) return err;
    }
    if (plan->decode.n_items) {
        vkpt_buf acc = vkpt_buf_view(&b->scratch, 0, plan->scratch_ml_off);
        vkpt_buf ml = vkpt_buf_view(&b->scratch, plan->scratch_ml_off,
                                    plan->scratch_bytes - plan->scratch_ml_off);
        vkpt_buf bufs[7] = {b->meta, b->block_table, b->q.buf, b->k_cache, b->v_cache, acc, ml};
        int err = launch_path(c, plan, &plan->decode, plan->decode.variant, &b->q, bufs, 7,
                              (uint32_t)n_blocks, 2);
        if (err) return err;
        vkpt_spec spec = {.v = {64}, .n = 1, .elems = {1, 1, 1}};
        const vkpt_pipeline *pipe;
        if ((err = vkpt_pipeline_get(c->dev, VKPT_V_attn_reduce_f32, &spec, &pipe))) return err;
        vkpt_pc_attn_reduce pc = {.n_head = p->n_head,
                                  .head_dim = p->head_dim,
                                  .n_seqs = plan->indirect ? 0xffffffffu : plan->n_dec_seqs,
                                  .list_off = plan->indirect ? plan->hdr + 4 : plan->dec_list_off};
        vkpt_buf rb[4] = {b->meta, acc, ml, b->out};
        vkpt_cmd_barrier(c);
        vkpt_cmd_dispatch(c, pipe, rb, 4, &pc, sizeof pc, vkpt__grid_rows(c->dev, plan->n_dec_seqs),
                          p->n_head, 1);
    }
    return 0;
}

int vkpt_k_kv_write(vkpt_cmd *c, const vkpt_rows *k, const vkpt_rows *v, const vkpt_buf *slots,
                    uint32_t n_rows, uint32_t n_kv_head, uint32_t head_dim, const vkpt_buf *k_cache,
                    const vkpt_buf *v_cache)
{
    if (!c || !k || !v || !slots || !k_cache || !v_cache || !n_kv_head || !head_dim || head_dim % 2)
        return vkpt_fail(VKPT_EINVAL, "kv_write: bad arguments (head_dim %u)", head_dim);
    uint64_t row = (uint64_t)n_kv_head * head_dim;
    if (!vkpt__rows_fit(k, n_rows, row) || !vkpt__rows_fit(v, n_rows, row) ||
        slots->size < (uint64_t)n_rows * 4)
        return vkpt_fail(VKPT_EINVAL, "kv_write: %u rows of %llu: views too small", n_rows,
                         (unsigned long long)row);
    uint64_t bb = row * VKPT_KV_BLOCK * 2;
    uint64_t n_blocks = k_cache->size / bb;
    if (v_cache->size / bb < n_blocks) n_blocks = v_cache->size / bb;
    if (!n_blocks) return vkpt_fail(VKPT_EINVAL, "kv_write: cache smaller than one block");
    if (n_blocks > UINT32_MAX / VKPT_KV_BLOCK) n_blocks = UINT32_MAX / VKPT_KV_BLOCK;
    uint64_t total = (uint64_t)n_rows * row / 2;
    if (!total) return 0;
    if (total > UINT32_MAX) return vkpt_fail(VKPT_ETOOBIG, "kv_write: %u rows", n_rows);
    const uint32_t wg = 256;
    vkpt_spec spec = {.v = {wg}, .n = 1};
    const vkpt_pipeline *pipe;
    int err = vkpt_pipeline_get(c->dev, VKPT_V_kv_write_f16kv, &spec, &pipe);
    if (err) return err;
    vkpt_pc_kvwrite pc = {.n_rows = n_rows,
                          .n_kv_head = n_kv_head,
                          .head_dim = head_dim,
                          .n_blocks = (uint32_t)n_blocks,
                          .k_off = k->off,
                          .k_stride = k->stride,
                          .v_off = v->off,
                          .v_stride = v->stride};
    vkpt_buf bufs[5] = {k->buf, v->buf, *slots, *k_cache, *v_cache};
    vkpt_cmd_dispatch(c, pipe, bufs, 5, &pc, sizeof pc, vkpt__grid_elems(c->dev, total, wg), 1, 1);
    return 0;
}

void vkpt_ref_kv_write(const float *k, size_t k_stride, const float *v, size_t v_stride,
                       const uint32_t *slots, uint32_t n_rows, uint32_t n_kv_head,
                       uint32_t head_dim, uint16_t *k_cache, uint16_t *v_cache, uint32_t n_blocks)
{
    for (uint32_t t = 0; t < n_rows; t++) {
        uint32_t s = slots[t];
        if (s == UINT32_MAX || s / VKPT_KV_BLOCK >= n_blocks) continue;
        for (uint32_t h = 0; h < n_kv_head; h++) {
            size_t dst = (((size_t)(s / VKPT_KV_BLOCK) * n_kv_head + h) * VKPT_KV_BLOCK +
                          s % VKPT_KV_BLOCK) *
                         head_dim;
            for (uint32_t i = 0; i < head_dim; i++) {
                k_cache[dst + i] = vkpt_f32_to_f16(k[t * k_stride + (size_t)h * head_dim + i]);
                v_cache[dst + i] = vkpt_f32_to_f16(v[t * v_stride + (size_t)h * head_dim + i]);
            }
        }
    }
}

/* f16 element i of token `pos` of kv head h of a sequence, through its table */
static float ref_cache(const uint16_t *cache, const uint32_t *bt, uint32_t pos, uint32_t h,
                       uint32_t i, const vkpt_attn_params *p, uint32_t n_blocks)
{
    uint32_t blk = bt[pos / VKPT_KV_BLOCK];
    if (blk >= n_blocks) return 0.0f;
    size_t a =
        (((size_t)blk * p->n_kv_head + h) * VKPT_KV_BLOCK + pos % VKPT_KV_BLOCK) * p->head_dim + i;
    return vkpt_f16_to_f32(cache[a]);
}

int vkpt_ref_attn(const vkpt_attn_params *p, const vkpt_attn_seq *seqs, uint32_t n_seqs,
                  const uint32_t *block_table, const float *q, size_t q_stride,
                  const uint16_t *k_cache, const uint16_t *v_cache, uint32_t n_blocks, float *out)
{
    uint32_t d = p->head_dim, group = p->n_head / p->n_kv_head;
    double scale = p->scale != 0.0f ? p->scale : 1.0 / sqrt((double)d);
    for (uint32_t s = 0; s < n_seqs; s++) {
        const vkpt_attn_seq *sq = &seqs[s];
        const uint32_t *bt = block_table + sq->bt_start;
        double *sc = vkpt_malloc(sizeof(double) * sq->kv_len);
        double *acc = vkpt_malloc(sizeof(double) * d);
        if (!sc || !acc) {
            vkpt_free(sc);
            vkpt_free(acc);
            return vkpt_fail(VKPT_ENOMEM, "ref_attn");
        }
        for (uint32_t t = 0; t < sq->q_len; t++) {
            uint32_t row = sq->q_start + t, pos = sq->kv_len - sq->q_len + t;
            uint32_t lo = 0, hi = sq->kv_len; /* keys [lo, hi) */
            if (!p->non_causal) {
                hi = pos + 1;
                if (p->window && pos + 1 > p->window) lo = pos + 1 - p->window;
            }
            for (uint32_t h = 0; h < p->n_head; h++) {
                uint32_t hk = h / group;
                const float *qh = q + row * q_stride + (size_t)h * d;
                double mx = -INFINITY;
                for (uint32_t j = lo; j < hi; j++) {
                    double dot = 0;
                    for (uint32_t i = 0; i < d; i++)
                        dot += (double)qh[i] * ref_cache(k_cache, bt, j, hk, i, p, n_blocks);
                    dot *= scale;
                    if (p->softcap > 0) dot = p->softcap * tanh(dot / p->softcap);
                    sc[j] = dot;
                    if (dot > mx) mx = dot;
                }
                double sum = 0;
                for (uint32_t i = 0; i < d; i++) acc[i] = 0;
                for (uint32_t j = lo; j < hi; j++) {
                    double w = exp(sc[j] - mx);
                    sum += w;
                    for (uint32_t i = 0; i < d; i++)
                        acc[i] += w * ref_cache(v_cache, bt, j, hk, i, p, n_blocks);
                }
                float *oh = out + ((size_t)row * p->n_head + h) * d;
                for (uint32_t i = 0; i < d; i++) oh[i] = sum > 0 ? (float)(acc[i] / sum) : 0.0f;
            }
        }
        vkpt_free(sc);
        vkpt_free(acc);
    }
    return 0;
}
