#version 450
/* Prefill matmul on cooperative matrices (VK_KHR_cooperative_matrix):
 * y[t][m] = sum_k W[m][k] x[t][k] (+ bias[m]), f16 products, f32 sums.
 *
 * UNTESTED ON HARDWARE: compiled and validated (spirv-val) at build time;
 * the launcher offers it only where the device reports 16x16x16
 * f16 x f16 -> f32 subgroup-scope matrices and subgroups of 32.
 *
 * A workgroup of 128 invocations (4 subgroups of 32) computes a 64 x 64
 * tile: 64 weight rows by 64 tokens, each subgroup a 32 x 32 quarter as
 * 2 x 2 accumulators. Per 32 of K, the weight slice is dequantized (dq8, as
 * in matmul.comp) to f16 in shared memory, the activation slice converted
 * to f16 beside it, and each subgroup does 2 (k) x 2 x 2 coopMatMulAdd.
 * The accumulators go through shared memory on the way out so edges (M,
 * n_tok) are masked and the bias is added in f32.
 *
 * Bindings: 0 W, 1 X (f32 [n_tok][K]), 2 Y (f32), 3 bias (f32). */
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#include "base.glsl"

/* a fixed size: a specialized one would be LocalSizeId in Vulkan 1.3 SPIR-V,
 * which needs the maintenance4 feature */
layout(local_size_x = 128) in;
/* float formats: x rows can be read as vec4 (K % 4 == 0, x_off % 4 == 0) */
layout(constant_id = 0) const bool ALIGNED = true;
const uint BM = 64u, BN = 64u, BK = 32u, LD = BK + 8u; /* LD: padded row, f16 */

layout(push_constant) uniform PC { vkpt_pc_mm pc; };
layout(std430, binding = 0) readonly buffer Wq { uint wq[]; };
layout(std430, binding = 0) readonly buffer Wq4 { uvec4 wq4[]; };
layout(std430, binding = 1) readonly buffer X4 { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer X1 { float x1[]; };
layout(std430, binding = 2) buffer Y { float y[]; };
layout(std430, binding = 3) readonly buffer B { float bias[]; };

#include "quant.glsl"

shared float16_t ws[BM * LD]; /* [m][k] */
shared float16_t xs[BN * LD]; /* [t][k] */
shared float cs[4u * 32u * 32u]; /* per subgroup [t][m] of its 32 x 32 quarter */

#define CM_A coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseA>
#define CM_B coopmat<float16_t, gl_ScopeSubgroup, 16, 16, gl_MatrixUseB>
#define CM_C coopmat<float, gl_ScopeSubgroup, 16, 16, gl_MatrixUseAccumulator>

void main()
{
    const uint tid = gl_LocalInvocationIndex;
    const uint sg = tid / 32u; /* subgroups of 32 (the launcher requires it) */
    const uint sm = sg & 1u, sn = sg >> 1;
    const uint m0 = gl_WorkGroupID.x * BM, t0 = gl_WorkGroupID.y * BN;
    const uint K = pc.K;
#if defined(WT_FLOAT)
    const uint rbytes = K * QB;
#else
    const uint rbytes = (K / QK) * QB;
#endif
    CM_C acc[2][2];
    for (uint i = 0u; i < 2u; i++)
        for (uint j = 0u; j < 2u; j++) acc[i][j] = CM_C(0.0);

    for (uint k0 = 0u; k0 < K; k0 += BK) {
        /* weights: 64 rows x 4 groups of 8 */
        for (uint g = tid; g < BM * 4u; g += 128u) {
            uint r = g >> 2, kk = (g & 3u) * 8u;
            uint row = min(m0 + r, pc.M - 1u);
            vec4 v0, v1;
#if defined(WT_FLOAT)
            uint rb = pc.w_off + row * rbytes;
            for (uint e = 0u; e < 4u; e++) {
                uint k = k0 + kk + e;
                v0[e] = k < K ? w_elem(rb, k) : 0.0;
                v1[e] = k + 4u < K ? w_elem(rb, k + 4u) : 0.0;
            }
#else
            uint k = k0 + kk;
            dq8(pc.w_off + row * rbytes + (k / QK) * QB, (k % QK) / 8u, v0, v1);
#endif
            for (uint e = 0u; e < 4u; e++) {
                ws[r * LD + kk + e] = float16_t(v0[e]);
                ws[r * LD + kk + 4u + e] = float16_t(v1[e]);
            }
        }
        /* activations: 64 tokens x 8 vec4 */
        for (uint g = tid; g < BN * 8u; g += 128u) {
            uint t = g >> 3, kk = (g & 7u) * 4u;
            uint tok = min(t0 + t, pc.n_tok - 1u);
            uint xb = pc.x_off + tok * K + k0 + kk;
            vec4 v;
            if (ALIGNED) {
                v = k0 + kk < K ? x4[xb >> 2] : vec4(0.0);
            } else {
                for (uint e = 0u; e < 4u; e++) v[e] = k0 + kk + e < K ? x1[xb + e] : 0.0;
            }
            for (uint e = 0u; e < 4u; e++) xs[t * LD + kk + e] = float16_t(v[e]);
        }
        barrier();
        for (uint kk = 0u; kk < BK; kk += 16u) {
            CM_A a[2];
            CM_B b[2];
            for (uint i = 0u; i < 2u; i++)
                coopMatLoad(a[i], ws, (32u * sm + 16u * i) * LD + kk, LD,
                            gl_CooperativeMatrixLayoutRowMajor);
            /* B[k][t] = xs[t][k]: column-major */
            for (uint j = 0u; j < 2u; j++)
                coopMatLoad(b[j], xs, (32u * sn + 16u * j) * LD + kk, LD,
                            gl_CooperativeMatrixLayoutColumnMajor);
            for (uint i = 0u; i < 2u; i++)
                for (uint j = 0u; j < 2u; j++) acc[i][j] = coopMatMulAdd(a[i], b[j], acc[i][j]);
        }
        barrier();
    }

    /* C[m][t] -> cs as [t][m] (column-major C), then masked stores */
    for (uint i = 0u; i < 2u; i++)
        for (uint j = 0u; j < 2u; j++)
            coopMatStore(acc[i][j], cs, sg * 1024u + (16u * j) * 32u + 16u * i, 32u,
                         gl_CooperativeMatrixLayoutColumnMajor);
    barrier();
    for (uint e = tid; e < 4u * 1024u; e += 128u) {
        uint s = e >> 10, t = (e >> 5) & 31u, m = e & 31u;
        uint row = m0 + 32u * (s & 1u) + m, tok = t0 + 32u * (s >> 1) + t;
        if (row >= pc.M || tok >= pc.n_tok) continue;
        float b = (pc.flags & 1u) != 0u ? bias[pc.b_off + row] : 0.0;
        y[pc.y_off + tok * pc.y_stride + row] = cs[e] + b;
    }
}
