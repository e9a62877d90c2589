/* Mixture-of-experts kernels (shaders/moe_*.comp) and their C references:
 * routing, dispatch lists, expert matmuls over only the routed tokens, and
 * the weighted combine. Everything stays on the GPU: the host never reads
 * the routing back, so a step is still one command buffer.
 *
 * A step of n_rows tokens with k experts each has n_pairs = n_rows * k
 * (token, choice) pairs, pair p = t*k + j. The pipeline:
 *   1. router logits [n_rows][n_expert] (a vkpt_k_matmul with the router)
 *   2. vkpt_k_moe_route: per row, softmax or sigmoid, top-k, optional
 *      p-norm renormalization -> ids u32 [n_pairs], wts f32 [n_pairs]
 *   3. vkpt_k_moe_sort: per-expert counts and their prefix sum; slots = the
 *      pairs grouped by expert (slot_pair, pair_slot) and the tiles (expert,
 *      first slot, count <= tile) that the expert matmuls launch over
 *   4. vkpt_k_moe_matmul: y[slot] = W_e x[row(slot)] for every slot, W the
 *      experts stacked [n_expert][M][K] in any weight format of k_matmul.h;
 *      x rows are per token (gate, up) or per slot (down). Workgroups exist
 *      only for tiles, so a decode step reads only the chosen experts.
 *   5. vkpt_k_moe_combine: y[t] (+)= sum_j wts[p] * d[pair_slot[p]]
 *      (+ sigmoid(gate[t]) * shared[t]).
 * The expert matmul's grid is sized for the worst case (vkpt_moe_max_tiles)
 * and surplus workgroups return at once, so no indirect dispatch or host
 * round trip is needed.
 *
 * Launchers record dispatches only; the caller places barriers between the
 * stages. They return 0, VKPT_EINVAL (sizes, alignment, a type vkpt does not
 * run), VKPT_EUNSUPPORTED (a forced path this device lacks) or VKPT_ETOOBIG
 * (an operand larger than one binding). */
#ifndef VKPT_K_MOE_H
#define VKPT_K_MOE_H

#include "k_rows.h"
#include "quant.h"

#define VKPT_MOE_MAX_EXPERTS 512 /* moe_sort.comp's shared counters */
#define VKPT_MOE_MAX_K       64  /* moe_route.comp's per-row arrays */

enum vkpt_moe_gating {
    VKPT_MOE_SOFTMAX = 0, /* softmax over all experts, then top-k */
    VKPT_MOE_SIGMOID = 1, /* independent sigmoids, then top-k */
};

typedef struct vkpt_moe_route_cfg {
    uint32_t n_expert, k; /* experts, chosen per token (1 <= k <= min(n_expert, 64)) */
    int gating;           /* enum vkpt_moe_gating */
    bool norm;            /* divide the k weights by their p-norm */
    float norm_p;         /* that p (1 = their sum, Mixtral; DBRX's moe_normalize_expert_weights) */
    float scale;          /* multiply the final weights (1 = none) */
} vkpt_moe_route_cfg;

/* ids[o + t*k + j], wts[o + t*k + j] for t < n_rows from logits rows (a row
 * view over [n_rows][n_expert]); ids/wts are u32/f32 buffers of n_rows*k. */
int vkpt_k_moe_route(vkpt_cmd *c, const vkpt_moe_route_cfg *cfg, const vkpt_rows *logits,
                     uint32_t n_rows, const vkpt_buf *ids, const vkpt_buf *wts);

/* The dispatch lists of one step. tiles layout (u32 words): [0] the number
 * of tiles, [1 .. n_expert+1] the exclusive prefix sum of the per-expert
 * counts (the last = n_pairs), then from word vkpt_moe_tiles_hdr(n_expert)
 * 4 words per tile: expert, first slot, slots, 0. */
typedef struct vkpt_moe_lists {
    vkpt_buf slot_pair; /* u32 [n_pairs]: the pair in each slot */
    vkpt_buf pair_slot; /* u32 [n_pairs]: the slot of each pair */
    vkpt_buf tiles;     /* u32 [vkpt_moe_tiles_words(...)] */
    uint32_t n_pairs, n_expert;
    uint32_t tile; /* slots per tile: 1, 2, 4, 8 (matvec paths) or 16, 32, 64 (matmul) */
} vkpt_moe_lists;

uint32_t vkpt_moe_tiles_hdr(uint32_t n_expert);
/* Upper bound of the tile count, sum over experts of ceil(count / tile): the
 * expert matmuls launch this many tile rows (n_pairs when tile is 1). */
uint32_t vkpt_moe_max_tiles(uint32_t n_pairs, uint32_t n_expert, uint32_t tile);
/* Words of the tiles buffer for these sizes (tile 1 gives the most). */
uint64_t vkpt_moe_tiles_words(uint32_t n_pairs, uint32_t n_expert, uint32_t tile);

/* Build l's lists from ids (u32 [l->n_pairs], every id < l->n_expert). */
int vkpt_k_moe_sort(vkpt_cmd *c, const vkpt_buf *ids, const vkpt_moe_lists *l);

enum vkpt_moe_path {
    VKPT_MOE_AUTO = 0,
    VKPT_MOE_MATVEC = 1,          /* few slots per tile, shared-memory reduction: runs everywhere */
    VKPT_MOE_MATVEC_SUBGROUP = 2, /* the same, subgroupAdd reduction */
    VKPT_MOE_MATMUL = 3,          /* tiled, 16..64 slots per tile: prefill on GPUs */
    VKPT_MOE_PATH_COUNT
};
const char *vkpt_moe_path_name(int path);

/* The expert-matmul path for a step of n_tok tokens routed k of n_expert
 * ways with weights of wtype (AUTO: from the device's tuning table and the
 * expected tokens per expert; a forced path is checked), and the tile size
 * the sort must use for it. Returns the path or a negative error. */
int vkpt_k_moe_plan(const vkpt_device *dev, uint32_t wtype, uint32_t n_tok, uint32_t k,
                    uint32_t n_expert, int path, uint32_t *tile);

typedef struct vkpt_moe_mm_args {
    uint32_t wtype; /* enum vkpt_qtype of W */
    vkpt_buf w;     /* W: n_expert experts of M rows of K (Q4_K/Q5_K: offset % 16 == 0) */
    uint32_t K, M, n_expert;
    vkpt_buf x;   /* f32 rows of K: [n_pairs] (x_k = 0) or [n_pairs / x_k] tokens;
                        * offset a multiple of 16 for quantized W */
    uint32_t x_k; /* 0: slot s reads x row s; else x row slot_pair[s] / x_k */
    const vkpt_moe_lists *lists;
    vkpt_buf y;              /* f32 [n_pairs][y_stride], columns [0, M) written */
    uint32_t y_stride;       /* 0 means M */
    int path;                /* the path vkpt_k_moe_plan chose for lists->tile, or AUTO */
    uint32_t mv_wg, mv_rows; /* matvec tuning overrides (tests, benchmarks); 0 = default */
} vkpt_moe_mm_args;

/* y[s][m] = sum_k W_e[m][k] x[row(s)][k] for every slot s of the lists, e
 * its expert. Experts too large for one binding are split into row chunks,
 * stacks too large into expert chunks. f32 accumulation: within a few K ulp
 * of sum |w||x|, as vkpt_k_matmul. */
int vkpt_k_moe_matmul(vkpt_cmd *c, const vkpt_moe_mm_args *a);

typedef struct vkpt_moe_combine_args {
    vkpt_rows y; /* [n_rows][n] */
    uint32_t n_rows, n, k;
    bool accumulate; /* y += result (the residual add), else y = result */
    vkpt_rows d;     /* expert outputs, one row of n per slot */
    vkpt_buf wts;    /* f32 [n_rows * k] */
    vkpt_buf pair_slot;
    vkpt_rows shared; /* optional (.buf.buf NULL if none): shared expert output [n_rows][n] */
    vkpt_rows gate;   /* optional: its gate logit per row (stride = elements between rows);
                        * without it the shared expert is added ungated */
} vkpt_moe_combine_args;

int vkpt_k_moe_combine(vkpt_cmd *c, const vkpt_moe_combine_args *a);

/* ---- scalar references --------------------------------------------------------- */

/* Routing of n_rows rows of logits (row stride l_stride) in double. */
void vkpt_ref_moe_route(const vkpt_moe_route_cfg *cfg, const float *logits, size_t l_stride,
                        uint32_t n_rows, uint32_t *ids, float *wts);
/* The lists of vkpt_k_moe_sort: slot_pair, pair_slot [n_pairs], tiles
 * [vkpt_moe_tiles_words(n_pairs, n_expert, tile)]. Ids >= n_expert are an
 * error (VKPT_EINVAL). */
int vkpt_ref_moe_sort(const uint32_t *ids, uint32_t n_pairs, uint32_t n_expert, uint32_t tile,
                      uint32_t *slot_pair, uint32_t *pair_slot, uint32_t *tiles);
/* The whole expert FFN for one token row x [K]: sum_j wts[j] *
 * down_e(silu(gate_e x) * up_e x) over its k routed experts, from
 * dequantized stacked weights gate/up [n_expert][ff][K] and down
 * [n_expert][K][ff]; in double, rounded once. */
void vkpt_ref_moe_ffn_row(const float *gate, const float *up, const float *down, uint32_t K,
                          uint32_t ff, const float *x, const uint32_t *ids, const float *wts,
                          uint32_t k, float *y);

#endif
