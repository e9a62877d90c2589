/* Push-constant blocks, defined once for both C and GLSL.
 *
 * Each block is an X-macro list of (type, name) fields. In GLSL it becomes a
 * plain struct that a shader wraps as its push-constant block:
 *     layout(push_constant) uniform PC { vkpt_pc_add pc; };
 * In C it becomes a typedef'd struct. Fields are 4-byte scalars, so std430
 * and C layouts agree; tests/test_vk.c checks every compiled shader's block
 * against these structs (names, offsets, size) through SPIR-V reflection.
 * Add a block here and to VKPT_PC_ALL below.
 */
#ifndef VKPT_SHADERS_PC_H
#define VKPT_SHADERS_PC_H

#ifdef VKPT_GLSL
#define VKPT_T_u32             uint
#define VKPT_T_i32             int
#define VKPT_T_f32             float
#define VKPT_PC_FIELD(t, name) VKPT_T_##t name;
#define VKPT_PC_STRUCT(sname, FIELDS) \
    struct sname {                    \
        FIELDS(VKPT_PC_FIELD)         \
    };
#else
#include <stdint.h>
#define VKPT_T_u32             uint32_t
#define VKPT_T_i32             int32_t
#define VKPT_T_f32             float
#define VKPT_PC_FIELD(t, name) VKPT_T_##t name;
#define VKPT_PC_STRUCT(sname, FIELDS) \
    typedef struct sname {            \
        FIELDS(VKPT_PC_FIELD)         \
    } sname;
#endif

/* memory bandwidth: n4 = vec4 elements, magic = a value never produced */
#define VKPT_PC_MEMBENCH(F) F(u32, n4) F(f32, magic)
VKPT_PC_STRUCT(vkpt_pc_membench, VKPT_PC_MEMBENCH)

/* elementwise binary op over n elements */
#define VKPT_PC_BINARY(F) F(u32, n)
VKPT_PC_STRUCT(vkpt_pc_binary, VKPT_PC_BINARY)

/* --- quantized weights: matvec, matmul, get_rows (engine/kernels/k_matmul.c) ---
 * matvec/matmul: y[y_off + t*y_stride + m] = W[m][:] . x[t][:] (+ bias[b_off + m])
 * for m < M, t < n_tok. w_off: byte offset of W's row 0 in its binding;
 * x_off: f32 element offset of x (INTDOT: word offset of the q8 values);
 * xd_off: INTDOT's f32 offset of the q8 scales; flags bit 0: add bias. */
/* clang-format off */
#define VKPT_PC_MM(F) \
    F(u32, K) F(u32, M) F(u32, n_tok) F(u32, w_off) F(u32, x_off) F(u32, xd_off) \
    F(u32, y_off) F(u32, y_stride) F(u32, b_off) F(u32, flags)
/* clang-format on */
VKPT_PC_STRUCT(vkpt_pc_mm, VKPT_PC_MM)
/* get_rows: out[out_off + i*K + k] = W[ids[ids_off + i] - row0][k] for ids in
 * [row0, row0 + rows) (W bound from row0); flags bit 0: this is the last
 * row chunk, so ids >= row0 + rows write zeros. */
/* clang-format off */
#define VKPT_PC_GET_ROWS(F) \
    F(u32, K) F(u32, n) F(u32, row0) F(u32, rows) F(u32, w_off) F(u32, ids_off) \
    F(u32, out_off) F(u32, flags)
/* clang-format on */
VKPT_PC_STRUCT(vkpt_pc_get_rows, VKPT_PC_GET_ROWS)
/* activation quantization to q8: n_blocks blocks of 32 f32 from x_off
 * (elements) to int8 words from q_off and f32 scales from d_off */
#define VKPT_PC_QUANT_ACT(F) F(u32, n_blocks) F(u32, x_off) F(u32, q_off) F(u32, d_off)
VKPT_PC_STRUCT(vkpt_pc_quant_act, VKPT_PC_QUANT_ACT)
/* --- end quantized weights --- */

/* --- norm, rope, activations, attention, logits (k_norm.c ... k_logits.c) --- */
/* clang-format off */
/* rows (t, h) of n elements at x_off + t*x_stride + h*n; flags: 1 weight, 2 bias */
#define VKPT_PC_NORM(F) \
    F(u32, n) F(u32, n_heads) F(u32, n_rows) F(u32, x_off) F(u32, x_stride) \
    F(u32, y_off) F(u32, y_stride) F(u32, flags) F(f32, eps)
VKPT_PC_STRUCT(vkpt_pc_norm, VKPT_PC_NORM)
/* in place on [n_rows][n_heads][head_dim] at x_off, rows x_stride apart */
#define VKPT_PC_ROPE(F) \
    F(u32, n_rows) F(u32, n_heads) F(u32, head_dim) F(u32, rot_half) \
    F(u32, x_off) F(u32, x_stride) F(u32, neox) F(f32, mscale)
VKPT_PC_STRUCT(vkpt_pc_rope, VKPT_PC_ROPE)
/* y = act(gate) * up over [n_rows][n]; each operand a row view (offset, stride) */
#define VKPT_PC_GLU(F) \
    F(u32, n_rows) F(u32, n) F(u32, g_off) F(u32, g_stride) \
    F(u32, u_off) F(u32, u_stride) F(u32, y_off) F(u32, y_stride)
VKPT_PC_STRUCT(vkpt_pc_glu, VKPT_PC_GLU)
/* y = op(x) over [n_rows][n]; a, b: the op's parameters (scale; clamp bounds) */
#define VKPT_PC_UNARY(F) \
    F(u32, n_rows) F(u32, n) F(u32, x_off) F(u32, x_stride) \
    F(u32, y_off) F(u32, y_stride) F(f32, a) F(f32, b)
VKPT_PC_STRUCT(vkpt_pc_unary, VKPT_PC_UNARY)
/* K/V rows -> paged f16 cache slots */
#define VKPT_PC_KVWRITE(F) \
    F(u32, n_rows) F(u32, n_kv_head) F(u32, head_dim) F(u32, n_blocks) \
    F(u32, k_off) F(u32, k_stride) F(u32, v_off) F(u32, v_stride)
VKPT_PC_STRUCT(vkpt_pc_kvwrite, VKPT_PC_KVWRITE)
/* paged attention work items (prefill tiles or decode splits) */
#define VKPT_PC_ATTN(F) \
    F(u32, n_head) F(u32, n_kv_head) F(u32, group) F(u32, n_hsplit) \
    F(u32, q_off) F(u32, q_stride) F(u32, n_items) F(u32, items_off) \
    F(u32, n_blocks) F(u32, window) F(u32, causal) F(f32, scale) F(f32, softcap)
VKPT_PC_STRUCT(vkpt_pc_attn, VKPT_PC_ATTN)
#define VKPT_PC_ATTN_REDUCE(F) F(u32, n_head) F(u32, head_dim) F(u32, n_seqs) F(u32, list_off)
VKPT_PC_STRUCT(vkpt_pc_attn_reduce, VKPT_PC_ATTN_REDUCE)
/* per-row logits kernels over [n_rows][n] at x_off, rows x_stride apart */
#define VKPT_PC_LOGITS(F) F(u32, n_rows) F(u32, n) F(u32, x_off) F(u32, x_stride) F(u32, k)
VKPT_PC_STRUCT(vkpt_pc_logits, VKPT_PC_LOGITS)
#define VKPT_PC_OPS(X) \
    X(vkpt_pc_norm, VKPT_PC_NORM) \
    X(vkpt_pc_rope, VKPT_PC_ROPE) \
    X(vkpt_pc_glu, VKPT_PC_GLU) \
    X(vkpt_pc_unary, VKPT_PC_UNARY) \
    X(vkpt_pc_kvwrite, VKPT_PC_KVWRITE) \
    X(vkpt_pc_attn, VKPT_PC_ATTN) \
    X(vkpt_pc_attn_reduce, VKPT_PC_ATTN_REDUCE) \
    X(vkpt_pc_logits, VKPT_PC_LOGITS)
/* clang-format on */
/* --- end norm ... logits --- */

/* --- encoders: pooling, encoder attention (k_pool.c, k_encattn.c) --- */
/* clang-format off */
/* one pooled vector per sequence record {start row, len, mode, dims} at seq_off;
 * rows of x at x_off + r*x_stride, outputs at o_off + s*o_stride */
#define VKPT_PC_POOL(F) \
    F(u32, n_seqs) F(u32, seq_off) F(u32, x_off) F(u32, x_stride) F(u32, o_off) F(u32, o_stride)
VKPT_PC_STRUCT(vkpt_pc_pool, VKPT_PC_POOL)
/* non-causal f32 attention over packed sequences: work items {start, len, t0};
 * q/k/v rows at *_off + r*stride (vec4 units), out rows o_stride apart */
#define VKPT_PC_ATTN_ENC(F) \
    F(u32, n_items) F(u32, n_head) F(u32, n_kv_head) F(u32, q_off) F(u32, q_stride) \
    F(u32, k_off) F(u32, k_stride) F(u32, v_off) F(u32, v_stride) F(u32, o_off) \
    F(u32, o_stride) F(f32, scale)
VKPT_PC_STRUCT(vkpt_pc_attn_enc, VKPT_PC_ATTN_ENC)
#define VKPT_PC_ENC(X) \
    X(vkpt_pc_pool, VKPT_PC_POOL) \
    X(vkpt_pc_attn_enc, VKPT_PC_ATTN_ENC)
/* clang-format on */
/* --- end encoders --- */

/* --- mixture of experts (engine/kernels/k_moe.c) ---
 * route: n_rows rows of n_expert router logits at l_off (rows l_stride
 * apart) -> k (expert id, weight) pairs per row at i_off / w_off; flags bit 0
 * sigmoid (else softmax), bit 1 divide by the p-norm (norm_p) of the k
 * weights; weights then times scale. */
/* clang-format off */
#define VKPT_PC_MOE_ROUTE(F) \
    F(u32, n_rows) F(u32, n_expert) F(u32, k) F(u32, l_off) F(u32, l_stride) \
    F(u32, i_off) F(u32, w_off) F(u32, flags) F(f32, norm_p) F(f32, scale)
VKPT_PC_STRUCT(vkpt_pc_moe_route, VKPT_PC_MOE_ROUTE)
/* sort: n_pairs expert ids at id_off -> slot_pair (sp_off), pair_slot
 * (ps_off) and the tile list at tl_off (records from word tl_hdr), tiles of
 * at most `tile` slots */
#define VKPT_PC_MOE_SORT(F) \
    F(u32, n_pairs) F(u32, n_expert) F(u32, tile) F(u32, id_off) F(u32, sp_off) \
    F(u32, ps_off) F(u32, tl_off) F(u32, tl_hdr)
VKPT_PC_STRUCT(vkpt_pc_moe_sort, VKPT_PC_MOE_SORT)
/* expert matmul: y[y_off + s*y_stride + m] = W_e[m] . x[x_off + row(s)*K]
 * for the slots s of tiles tile0 + workgroup y; W_e at byte w_off +
 * (e - e0)*e_stride for bound experts e0 <= e < e0 + n_e, M rows of K;
 * row(s) = s (x_k = 0) or slot_pair[sp_off + s] / x_k */
#define VKPT_PC_MOE_MM(F) \
    F(u32, K) F(u32, M) F(u32, w_off) F(u32, e_stride) F(u32, e0) F(u32, n_e) \
    F(u32, x_off) F(u32, x_k) F(u32, y_off) F(u32, y_stride) F(u32, sp_off) \
    F(u32, tl_off) F(u32, tl_hdr) F(u32, tile0)
VKPT_PC_STRUCT(vkpt_pc_moe_mm, VKPT_PC_MOE_MM)
/* combine: y (+)= sum_j wts * d[pair_slot] (+ gate * shared); flags bit 0
 * accumulate into y, bit 1 add the shared expert, bit 2 without its gate */
#define VKPT_PC_MOE_COMBINE(F) \
    F(u32, n_rows) F(u32, n) F(u32, k) F(u32, y_off) F(u32, y_stride) F(u32, d_off) \
    F(u32, d_stride) F(u32, w_off) F(u32, ps_off) F(u32, s_off) F(u32, s_stride) \
    F(u32, g_off) F(u32, g_stride) F(u32, flags)
VKPT_PC_STRUCT(vkpt_pc_moe_combine, VKPT_PC_MOE_COMBINE)
#define VKPT_PC_MOE(X) \
    X(vkpt_pc_moe_route, VKPT_PC_MOE_ROUTE) \
    X(vkpt_pc_moe_sort, VKPT_PC_MOE_SORT) \
    X(vkpt_pc_moe_mm, VKPT_PC_MOE_MM) \
    X(vkpt_pc_moe_combine, VKPT_PC_MOE_COMBINE)
/* clang-format on */
/* --- end mixture of experts --- */

/* Every block, for the C-vs-SPIR-V layout test. */
#define VKPT_PC_ALL(X)                      \
    X(vkpt_pc_membench, VKPT_PC_MEMBENCH)   \
    X(vkpt_pc_binary, VKPT_PC_BINARY)       \
    X(vkpt_pc_mm, VKPT_PC_MM)               \
    X(vkpt_pc_get_rows, VKPT_PC_GET_ROWS)   \
    X(vkpt_pc_quant_act, VKPT_PC_QUANT_ACT) \
    VKPT_PC_OPS(X)                          \
    VKPT_PC_MOE(X)                          \
    VKPT_PC_ENC(X)

#endif
