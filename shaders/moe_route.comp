#version 450
/* Mixture-of-experts routing (k_moe.c): router logits -> per-token expert
 * ids and weights.
 *
 * Row t of the logits is n_expert f32 at l[l_off + t*l_stride]. Each
 * invocation routes one row (rows grid-strided): probabilities
 *   softmax:  p_e = exp(l_e - max) / sum exp(l - max)     (flags bit 0 clear)
 *   sigmoid:  p_e = 1 / (1 + exp(-l_e))                    (flags bit 0 set)
 * then the k largest (descending; a tie goes to the lower expert index, NaN
 * ranks lowest), then, with flags bit 1, division by their p-norm
 * (sum p^norm_p)^(1/norm_p) (norm_p = 1: the plain sum, Mixtral's
 * renormalization; DBRX's moe_normalize_expert_weights), then times scale.
 * Writes ids[i_off + t*k + j] (u32) and wts[w_off + t*k + j] (f32), j < k.
 *
 * One invocation per row keeps this barrier-free: routing is O(k * n_expert)
 * per token, tiny next to the expert matmuls it feeds. */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 64;
layout(push_constant) uniform PC { vkpt_pc_moe_route pc; };
layout(std430, binding = 0) readonly buffer L { float l[]; };
layout(std430, binding = 1) buffer I { uint ids[]; };
layout(std430, binding = 2) buffer W { float wts[]; };

#define NEG_INF uintBitsToFloat(0xFF800000u)

float prob(uint lo, uint e, float mx, float inv)
{
    float v = l[lo + e];
    float p = (pc.flags & 1u) != 0u ? 1.0 / (1.0 + exp(-v)) : exp(v - mx) * inv;
    return isnan(p) ? NEG_INF : p;
}

/* No per-row arrays: the k picks walk the total order (p descending, index
 * ascending), each pick the first element after the previous one, so what
 * is taken needs no bookkeeping; the weights are renormalized in place
 * (an invocation reads its own writes in program order). Large private
 * arrays also miscompile on Mesa 22's llvmpipe. */
void main()
{
    const uint E = pc.n_expert, K = pc.k;
    for (uint t = gl_GlobalInvocationID.x; t < pc.n_rows; t += gl_NumWorkGroups.x * WG) {
        uint lo = pc.l_off + t * pc.l_stride;
        float mx = NEG_INF, inv = 1.0;
        if ((pc.flags & 1u) == 0u) {
            for (uint e = 0u; e < E; e++) mx = max(mx, l[lo + e]);
            float s = 0.0;
            for (uint e = 0u; e < E; e++) s += exp(l[lo + e] - mx);
            inv = 1.0 / s;
        }
        const uint io = pc.i_off + t * K, wo = pc.w_off + t * K;
        float prev = 0.0, norm = 0.0;
        uint prev_i = 0u;
        for (uint j = 0u; j < K; j++) {
            float best = 0.0;
            uint bi = 0xFFFFFFFFu;
            for (uint e = 0u; e < E; e++) {
                float p = prob(lo, e, mx, inv);
                bool after = j == 0u || p < prev || (p == prev && e > prev_i);
                if (after && (bi == 0xFFFFFFFFu || p > best)) {
                    best = p;
                    bi = e;
                }
            }
            prev = best;
            prev_i = bi;
            ids[io + j] = bi;
            wts[wo + j] = best;
            norm += pc.norm_p == 1.0 ? abs(best) : pow(abs(best), pc.norm_p);
        }
        float d = 1.0;
        if ((pc.flags & 2u) != 0u) d = pc.norm_p == 1.0 ? norm : pow(norm, 1.0 / pc.norm_p);
        for (uint j = 0u; j < K; j++) wts[wo + j] = wts[wo + j] / d * pc.scale;
    }
}
