/* engine/runtime internals: the runner's state and the pieces of the
 * decoder forward pass, shared by runner.c (dense layers, steps) and the
 * architecture-specific blocks (moe.c for expert FFNs).
 *
 * A forward step records, per layer, an attention block then an FFN block;
 * each reads the residual stream x [n][n_embd] and adds its output to it.
 * Blocks only record into r->cmd and place the barriers their reads need.
 *
 * Replay: a step is padded to its shape class (rn_class: token rows and
 * output rows rounded up to a few buckets, the attention plan's grids to
 * powers of two) and everything else that changes between steps is read by
 * the shaders from the host-visible inputs, so the command buffer recorded
 * for one step of a class is valid for every step of it. r->replay keeps the
 * recent classes' command buffers (least recently used replaced). */
#ifndef VKPT_RUNNER_INT_H
#define VKPT_RUNNER_INT_H

#include "k_attn.h"
#include "kvpool.h"
#include "prefix.h"
#include "model_int.h"
#include "vkpt/runner.h"

/* What a step's recorded commands depend on besides the runner itself. */
typedef struct rn_class {
    uint32_t n, n_out; /* token rows and output rows, padded to buckets */
    uint32_t pf_items; /* attention grid bounds (vkpt_attn_plan_indirect) */
    uint32_t dec_items, dec_seqs;
    uint32_t edits; /* 1 when output rows carry logit edits */
} rn_class;

#define RN_REPLAY_SLOTS 8

typedef struct rn_replay {
    vkpt_cmd cmd;
    rn_class key;
    bool valid;    /* cmd holds a complete recording of key's class */
    uint64_t used; /* step counter at its last use, for LRU replacement */
} rn_replay;

typedef struct seq_state {
    bool open;
    uint32_t len;          /* tokens in the cache */
    uint32_t n_blocks;     /* blocks held */
    uint32_t *blocks;      /* [max_blocks_seq] */
    uint32_t n_registered; /* leading blocks offered to the prefix cache */
} seq_state;

struct vkpt_runner {
    vkpt_model *m;
    vkpt_device *dev;
    const vkpt_hparams *hp;
    vkpt_runner_opts o;
    uint32_t T;              /* max rows per step */
    uint32_t R;              /* max output rows per step */
    uint32_t max_blocks_seq; /* ceil(n_ctx / 16) */
    uint32_t adj_cap;        /* logit edits per step */
    vkpt_kvpool pool;
    vkpt_prefix pc;    /* every block reference change goes through it */
    vkpt_buf *kc, *vc; /* [n_layer] */
    seq_state *seqs;
    uint32_t *seq_blocks; /* backing store of every seq's block list */

    /* device scratch */
    vkpt_buf x, h, h2, q, k, v, ao, gu, act, xo, logits, attn_scratch;
    vkpt_buf qkv; /* fused q|k|v projections [T][Dq + 2 Dkv], when the model has Wqkv */
    /* host-visible inputs */
    vkpt_buf in_ids, in_pos, in_slots, in_meta, in_bt, in_rows, in_temps, in_ones, in_adj_off,
        in_adj;
    /* host-visible outputs */
    vkpt_buf out_topv, out_topi, out_lse, out_lset;
    vkpt_buf inv_freq;
    float mscale;
    size_t meta_cap;
    vkpt_attn_params ap;
    int rope_layout;
    vkpt_cmd *cmd;    /* the step being recorded: one of replay[] */
    vkpt_cmd aux_cmd; /* one-off copies (fork) */
    rn_replay replay[RN_REPLAY_SLOTS];
    bool no_replay; /* record every step (opts.no_replay or VKPT_NO_REPLAY=1) */
    uint64_t n_steps, replay_hits, replay_misses;
    uint64_t host_prep_ns;   /* inputs, attention plan */
    uint64_t host_submit_ns; /* recording (on a miss) + queue submission */
    uint32_t last_n_out;
    /* mixture-of-experts state (moe.c), NULL for dense models */
    struct vkpt_moe *moe;
};

int vkpt__rn_alloc(vkpt_runner *r, vkpt_buf *b, uint64_t bytes, int kind, int purpose);
/* y = W x (+ bias) over n_tok rows, y rows y_stride apart (kernels' matmul
 * with the runner's path policy). bias may be NULL. */
int vkpt__rn_matmul(vkpt_runner *r, const vkpt_tensor *w, const vkpt_buf *x, uint32_t n_tok,
                    const vkpt_buf *y, uint32_t y_stride, const vkpt_tensor *bias);
/* a += b over n floats */
int vkpt__rn_add(vkpt_runner *r, const vkpt_buf *a, const vkpt_buf *b, uint32_t n);
/* The architecture's normalization (RMSNorm, or LayerNorm with optional
 * bias) of n_rows rows of n_embd. */
int vkpt__rn_norm(vkpt_runner *r, const vkpt_rows *x, const vkpt_rows *y, const vkpt_tensor *w,
                  const vkpt_tensor *b, uint32_t n_rows);

/* Expert FFN blocks (moe.c): scratch for max_step_tokens rows, and the
 * block itself (reads r->x, adds to it). */
int vkpt__moe_init(vkpt_runner *r);
void vkpt__moe_free(vkpt_runner *r);
int vkpt__moe_ffn(vkpt_runner *r, uint32_t layer, uint32_t n);

#endif
