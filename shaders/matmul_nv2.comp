#version 450
/* Prefill matmul on VK_NV_cooperative_matrix2 workgroup-scope matrices:
 * y[t][m] = sum_k W[m][k] x[t][k] (+ bias[m]), f16 products, f32 sums.
 *
 * UNVERIFIED ON HARDWARE: compiled and validated (spirv-val) at build time
 * only; k_matmul.c runs it when forced, and AUTO picks it only behind
 * VKPT_COOPMAT=1 (see docs/ARCHITECTURE.md for how to check it on a GPU).
 *
 * One workgroup computes C = X W^T for a tile of BN tokens x BM weight rows:
 *   A = X[t0 .. t0+BN)[k0 .. k0+BK)        f16, gl_MatrixUseA    (BN x BK)
 *   B = W[m0 .. m0+BM)[k0 .. k0+BK)^T      f16, gl_MatrixUseB    (BK x BM)
 *   C += A B                               f32, accumulator      (BN x BM)
 * so C's rows are tokens and its columns weight rows: the layout of y.
 * The matrices are workgroup-scope; the driver stages them through shared
 * memory and spreads the products over the subgroups.
 *
 * Both operands come through coopMatLoadTensorNV with a decode function
 * (cooperativeMatrixBlockLoads): tensor layouts describe X as n_tok x K
 * elements and W^T as K x M elements in blocks of QK x 1 (one GGUF block
 * per row segment), slice out the tile, and clamp it at the edges (K,
 * n_tok, M need not be multiples of the tile: elements outside read as 0
 * and the decode function is not called for them). The decode function
 * gets each element's block coordinates and position inside the block and
 * returns it as f16: for W, quant.glsl's dq1, the exact f32 value the C
 * reference dequantizes to, rounded to f16 once; for x, the f32 activation
 * rounded to f16.
 *
 * The decode functions address the bindings from those coordinates, not
 * through the buffer_reference pointer NV2 passes them: that pointer is
 * &buf[elementOffset] + block index * sizeof(pointee) with a 16-byte-aligned
 * base, which cannot land on vkpt's blocks (a tensor starts at any 4-byte
 * offset of its binding, w_off, and rows are whole blocks of 18..210 bytes).
 * The pointer is never dereferenced.
 *
 * The bias is added by coopMatPerElementNV; the store goes through a 1-D
 * tensor layout over y (its base rounded down to 16 bytes, the remainder
 * in the slice offset) with a tensor view giving the row stride and
 * clipping the tile to n_tok x M, so a slice of a wider output (fused QKV)
 * is written without touching its neighbours.
 *
 * Bindings: 0 W, 1 X (f32 [n_tok][K]), 2 Y (f32), 3 bias (f32): those of
 * matmul.comp, with the same push constants.
 * Specialization: 0 WG invocations (one the device lists for workgroup-scope
 * matrices), 1 BM weight rows, 2 BN tokens, 3 BK (multiples of the device's
 * granularity, 16 on NVIDIA). */
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_NV_cooperative_matrix2 : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_EXT_buffer_reference : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(constant_id = 1) const uint BM = 128;
layout(constant_id = 2) const uint BN = 128;
layout(constant_id = 3) const uint BK = 32;

layout(push_constant) uniform PC { vkpt_pc_mm pc; };
layout(std430, binding = 0) readonly buffer Wq { uint wq[]; };
layout(std430, binding = 0) readonly buffer Wq4 { uvec4 wq4[]; };
layout(std430, binding = 1) readonly buffer X1 { float x1[]; };
layout(std430, binding = 2) buffer Y { float y[]; };
layout(std430, binding = 3) readonly buffer B { float bias[]; };

#include "quant.glsl"

/* the pointee type decode functions must name (unused, see above) */
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Unused { uint u; };

/* X element (t, k) = blockCoords (t, k) (blocks of 1 x 1) */
float16_t decode_x(const in Unused p, const in uint bc[2], const in uint ib[2])
{
    return float16_t(x1[pc.x_off + bc[0] * pc.K + bc[1]]);
}

/* W^T element (k, m): blockCoords (k / QK, m), coordInBlock (k % QK, 0) */
float16_t decode_w(const in Unused p, const in uint bc[2], const in uint ib[2])
{
#if defined(WT_FLOAT)
    return float16_t(w_elem(pc.w_off + bc[1] * (pc.K * QB), bc[0]));
#else
    return float16_t(dq1(pc.w_off + bc[1] * ((pc.K / QK) * QB) + bc[0] * QB, ib[0]));
#endif
}

/* C element (token row, weight column) + bias[m0 + col] */
float add_bias(const in uint row, const in uint col, const in float v)
{
    uint m = gl_WorkGroupID.x * BM + col;
    return m < pc.M ? v + bias[pc.b_off + m] : v;
}

#define TL2 tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV>
#define TL1 tensorLayoutNV<1, gl_CooperativeMatrixClampModeConstantNV>

void main()
{
    const uint m0 = gl_WorkGroupID.x * BM, t0 = gl_WorkGroupID.y * BN;
    const uint K = pc.K;

    TL2 lx = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
    lx = setTensorLayoutDimensionNV(lx, pc.n_tok, K);
    TL2 lw = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
    lw = setTensorLayoutBlockSizeNV(lw, QK, 1);
    lw = setTensorLayoutDimensionNV(lw, K, pc.M);

    coopmat<float, gl_ScopeWorkgroup, BN, BM, gl_MatrixUseAccumulator> acc =
        coopmat<float, gl_ScopeWorkgroup, BN, BM, gl_MatrixUseAccumulator>(0.0);
    for (uint k0 = 0u; k0 < K; k0 += BK) {
        coopmat<float16_t, gl_ScopeWorkgroup, BN, BK, gl_MatrixUseA> a;
        coopmat<float16_t, gl_ScopeWorkgroup, BK, BM, gl_MatrixUseB> b;
        coopMatLoadTensorNV(a, x1, 0, sliceTensorLayoutNV(lx, t0, BN, k0, BK), decode_x);
        coopMatLoadTensorNV(b, wq, 0, sliceTensorLayoutNV(lw, k0, BK, m0, BM), decode_w);
        acc = coopMatMulAdd(a, b, acc);
    }
    if ((pc.flags & 1u) != 0u) coopMatPerElementNV(acc, acc, add_bias);

    /* y[y_off + t * y_stride + m]: elementOffset y_off rounded down to 16
     * bytes (y_off is a multiple of 4 bytes), the rest (o1) in the slice */
    const uint o1 = pc.y_off & 3u;
    const uint rows = min(BN, pc.n_tok - t0), cols = min(BM, pc.M - m0);
    const uint total = o1 + (pc.n_tok - 1u) * pc.y_stride + pc.M;
    const uint first = o1 + t0 * pc.y_stride + m0;
    TL1 ly = createTensorLayoutNV(1, gl_CooperativeMatrixClampModeConstantNV);
    ly = setTensorLayoutDimensionNV(ly, total);
    ly = sliceTensorLayoutNV(ly, first, total - first);
    /* the tile as rows of `cols` elements, y_stride apart; elements past
     * `rows` x `cols` are clipped (not stored) */
    tensorViewNV<2, true> vy = createTensorViewNV(2, true);
    vy = setTensorViewDimensionsNV(vy, BN, cols);
    vy = setTensorViewStrideNV(vy, pc.y_stride, 1);
    vy = setTensorViewClipNV(vy, 0, rows, 0, cols);
    coopMatStoreTensorNV(acc, y, pc.y_off - o1, ly, vy);
}
