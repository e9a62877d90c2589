/* Attention over a paged KV cache (shaders/attn.comp, attn_reduce.comp,
 * kv_write.comp): the host-side plan, launchers and the C reference.
 *
 * Cache, per layer: k and v, each [n_blocks][n_kv_head][VKPT_KV_BLOCK tok]
 * [head_dim] f16. A sequence's tokens live in blocks listed by its block
 * table (u32 block ids, in a shared block-table buffer at bt_start); slot
 * = block*16 + offset. Blocks may be anywhere and in any order.
 *
 * One step of the serving engine batches many sequences: prefills (q_len >
 * 1, chunked or not) and decodes (q_len == 1) with different lengths. The
 * host describes them with vkpt_attn_seq records and calls
 * vkpt_attn_plan_make, which picks the kernels' tile shapes for the device
 * and writes the metadata words (the records, then work lists) into a
 * caller array; the caller uploads those words (a mapped buffer, no
 * allocation per step) and calls vkpt_k_attn, which records
 *   - attn_prefill_f16kv over every prefill sequence (tiles of query rows
 *     x the q heads of one kv head), one dispatch; on devices with KHR
 *     cooperative matrices (a 16x16x16 f16 -> f32 subgroup shape) and
 *     head_dim % 16 == 0, attn_prefill_f16kv_coopmat instead when
 *     params.coopmat allows it (Q and P rounded to f16: ~1e-3 less
 *     accurate; not yet run on hardware); attn_prefill_f16kv_nv2 before
 *     it on devices with VK_NV_cooperative_matrix2 (workgroup-scope
 *     matrices, K/V read through tensor layouts with decode functions;
 *     same accuracy, equally unverified);
 *   - attn_decode_f16kv over every decode sequence, split-K over its context
 *     into partial (max, sum, acc) results, one dispatch; a barrier; and
 *     attn_reduce_f32 combining the splits, one dispatch.
 * Query row r of sequence s is at absolute position
 * kv_len - q_len + (r - q_start); causal rows see cache positions <= their
 * own (and > pos - window with a sliding window); non-causal rows see all
 * kv_len positions. GQA/MQA: n_head is a multiple of n_kv_head, q head h
 * reads kv head h / (n_head / n_kv_head). head_dim: a multiple of 4, <= 256.
 *
 * Ordering: vkpt_k_kv_write and vkpt_k_attn of the same step need a
 * vkpt_cmd_barrier between them (the caller's); vkpt_k_attn places its own
 * barrier between the decode splits and their reduction. */
#ifndef VKPT_K_ATTN_H
#define VKPT_K_ATTN_H

#include "k_rows.h"

#define VKPT_KV_BLOCK 16 /* tokens per cache block */

/* One sequence of the batch (also the GPU record: 4 u32 in this order). */
typedef struct vkpt_attn_seq {
    uint32_t q_start;  /* first row of the sequence in q and out */
    uint32_t q_len;    /* query rows this step, >= 1 */
    uint32_t kv_len;   /* tokens in the cache after this step's write, >= q_len */
    uint32_t bt_start; /* offset of its block table in the block-table buffer (u32 words) */
} vkpt_attn_seq;

typedef struct vkpt_attn_params {
    uint32_t n_head, n_kv_head, head_dim;
    float scale;        /* score scale; 0 means 1/sqrt(head_dim) */
    float softcap;      /* 0: off; else s = softcap * tanh(s / softcap) (Gemma 2) */
    uint32_t window;    /* 0: off; causal rows see only the last `window` positions */
    bool non_causal;    /* encoders: every row sees all kv_len positions */
    uint32_t split_len; /* decode keys per split (multiple of 16); 0: chosen by the plan */
    /* Allow the cooperative-matrix prefills where the caps permit them
     * (NV2's first, then KHR's); the device's coopmat opt-in
     * (vkpt_device_opts.coopmat, VKPT_COOPMAT=1) allows them too. Opt-in
     * while they have not run on hardware; they also need the device
     * created with the vulkanMemoryModel feature (their SPIR-V uses it). */
    bool coopmat;
    bool no_nv2; /* tests: never the NV2 prefill (to reach the KHR one) */
} vkpt_attn_params;

/* Kernel shape chosen for one path (prefill or decode). */
typedef struct vkpt_attn_path {
    int variant;        /* VKPT_V_attn_* the path runs */
    uint32_t n_items;   /* work items (prefill: query tiles; decode: splits) */
    uint32_t items_off; /* u32 offset of the item list in the metadata */
    uint32_t wg;        /* invocations per workgroup */
    uint32_t rows;      /* M: (token, head) rows per workgroup */
    uint32_t keys;      /* BK: keys per shared-memory tile */
    uint32_t heads;     /* GH: q heads per workgroup (rows = tokens * heads) */
    uint32_t n_hsplit;  /* workgroups per kv head along y: ceil(group / heads) */
} vkpt_attn_path;

/* What vkpt_attn_plan_make decided; pass it to vkpt_k_attn unchanged. */
typedef struct vkpt_attn_plan {
    vkpt_attn_params p; /* with scale resolved */
    uint32_t n_seqs;
    uint32_t n_rows;     /* rows of q/out the batch covers: max(q_start + q_len) */
    uint32_t bt_words;   /* block-table words read: max(bt_start + blocks of kv_len) */
    uint32_t meta_words; /* u32 words written to meta */
    vkpt_attn_path prefill, decode;
    uint32_t n_dec_seqs;    /* decode sequences */
    uint32_t dec_list_off;  /* u32 offset of the per-decode-sequence list {seq, first, count} */
    uint64_t scratch_bytes; /* decode partials: [items][n_head][head_dim] f32, then (m, l) pairs */
    uint64_t scratch_ml_off;
    /* vkpt_attn_plan_indirect: the per-step counts and offsets are read from
     * meta[hdr .. hdr + VKPT_ATTN_HDR_WORDS); n_items / n_dec_seqs above are
     * then the grid sizes (bucketed upper bounds), not the counts */
    bool indirect;
    uint32_t hdr;
} vkpt_attn_plan;

/* Words of an indirect plan's header: {prefill n_items, items_off, decode
 * n_items, items_off, decode sequences, dec_list_off}. */
#define VKPT_ATTN_HDR_WORDS 6

/* Upper bound of the metadata words for any batch of at most max_seqs
 * sequences and max_rows query rows with automatic split lengths. */
size_t vkpt_attn_meta_words_max(uint32_t max_seqs, uint32_t max_rows);
/* Upper bound of plan.scratch_bytes for such a batch. */
uint64_t vkpt_attn_scratch_bytes_max(const vkpt_attn_params *p, uint32_t max_seqs);

/* Plan a batch: choose tile shapes for dev, write the metadata into
 * meta[0..meta_cap) (the n_seqs records first, exactly as vkpt_attn_seq)
 * and fill *plan. No allocation. VKPT_EINVAL with a message for bad
 * parameters or records (q_len 0, kv_len < q_len, head_dim unsupported, ...);
 * VKPT_ETOOBIG when meta_cap is too small. */
int vkpt_attn_plan_make(const vkpt_device *dev, const vkpt_attn_params *p,
                        const vkpt_attn_seq *seqs, uint32_t n_seqs, uint32_t *meta, size_t meta_cap,
                        vkpt_attn_plan *plan);

/* Make a plan replayable: a command buffer vkpt_k_attn records from it
 * stays valid for every later plan of the same batch class. Writes the
 * step's counts and item offsets at meta[hdr .. hdr + VKPT_ATTN_HDR_WORDS)
 * (hdr >= plan->meta_words, a fixed place for the caller's recordings) and
 * turns the plan's item and sequence counts into grid bounds: each rounded
 * up to a power of two, the decode scratch laid out for the rounded split
 * count. Shaders loop over their grid, so the rounding only changes how many
 * workgroups find nothing to do, never a result. For the same params,
 * device and buffers, plans whose prefill.n_items, decode.n_items and
 * n_dec_seqs agree after this call record identical commands. VKPT_ETOOBIG when
 * the header does not fit meta_cap or the rounded decode partials do not
 * fit scratch_size bytes. */
int vkpt_attn_plan_indirect(vkpt_attn_plan *plan, uint32_t *meta, size_t meta_cap, uint32_t hdr,
                            uint64_t scratch_size);

typedef struct vkpt_attn_bufs {
    vkpt_buf meta;             /* plan.meta_words u32, as vkpt_attn_plan_make wrote them */
    vkpt_buf block_table;      /* u32 block ids */
    vkpt_rows q;               /* [n_rows][n_head][head_dim] f32; stride between rows */
    vkpt_buf k_cache, v_cache; /* [n_blocks][n_kv_head][16][head_dim] f16 */
    vkpt_buf out;              /* [n_rows][n_head][head_dim] f32 */
    vkpt_buf scratch;          /* >= plan.scratch_bytes (unused when that is 0) */
} vkpt_attn_bufs;

/* Record the attention of a planned batch. Rows of out not covered by a
 * sequence are left alone. A block id >= n_blocks in a table is read as
 * zeros (a safe wrong answer, not a fault). */
int vkpt_k_attn(vkpt_cmd *c, const vkpt_attn_plan *plan, const vkpt_attn_bufs *b);

/* Write k, v rows ([n_rows][n_kv_head][head_dim] f32 views) into the cache
 * at slots[n_rows] (u32 buffer; 0xffffffff or a slot past the cache skips
 * the row). f32 -> f16 rounds to nearest even. */
int vkpt_k_kv_write(vkpt_cmd *c, const vkpt_rows *k, const vkpt_rows *v, const vkpt_buf *slots,
                    uint32_t n_rows, uint32_t n_kv_head, uint32_t head_dim, const vkpt_buf *k_cache,
                    const vkpt_buf *v_cache);

/* References. Caches hold f16 bits; scores, softmax and sums in double.
 * vkpt_ref_attn returns 0 or VKPT_ENOMEM. */
void vkpt_ref_kv_write(const float *k, size_t k_stride, const float *v, size_t v_stride,
                       const uint32_t *slots, uint32_t n_rows, uint32_t n_kv_head,
                       uint32_t head_dim, uint16_t *k_cache, uint16_t *v_cache, uint32_t n_blocks);
int vkpt_ref_attn(const vkpt_attn_params *p, const vkpt_attn_seq *seqs, uint32_t n_seqs,
                  const uint32_t *block_table, const float *q, size_t q_stride,
                  const uint16_t *k_cache, const uint16_t *v_cache, uint32_t n_blocks, float *out);

#endif
