#version 450
/* Pooling of an encoder's hidden states into one vector per sequence, with
 * optional L2 normalisation (k_pool.c).
 *
 * The batch is packed: sequence s owns rows start .. start+len-1 of x (row r
 * at x[x_off + r*x_stride]). Its record, four u32 at seq_off + 4s:
 *   {start, len, mode, dims}
 *   mode bits 0-1: 1 = CLS (row start), 2 = mean over the len rows,
 *                  3 = last token (row start+len-1); bit 2: L2-normalise.
 * The first `dims` elements of the pooled vector (Matryoshka truncation)
 * go to o[o_off + s*o_stride + i]; normalisation is over those dims, so a
 * truncated vector has unit length too:
 *   o = v / max(||v[0:dims]||_2, 1e-12)   (torch.nn.functional.normalize)
 * The mean sums rows in f32 with Kahan compensation (`precise` keeps the
 * compiler from folding the compensation away), so long sequences stay
 * within a few ulp of the exact mean; it divides by len as torch's mean does.
 *
 * One workgroup per sequence (grid-strided); each invocation owns the
 * columns i = lid, lid + WG, ...: it writes them, and for the normalisation
 * scales the same ones again, so no other invocation's writes are read.
 */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(push_constant) uniform PC { vkpt_pc_pool pc; };
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer S { uint seqs[]; };
layout(std430, binding = 2) buffer O { float o[]; };

#include "wgreduce.glsl"

void main()
{
    uint lid = gl_LocalInvocationID.x;
    for (uint s = gl_WorkGroupID.x; s < pc.n_seqs; s += gl_NumWorkGroups.x) {
        uint rec = pc.seq_off + 4u * s;
        uint start = seqs[rec], len = seqs[rec + 1u], mode = seqs[rec + 2u];
        uint dims = seqs[rec + 3u];
        uint kind = mode & 3u;
        uint ob = pc.o_off + s * pc.o_stride;
        float ss = 0.0;
        for (uint i = lid; i < dims; i += WG) {
            float v;
            if (kind == 2u) {
                precise float sum = 0.0, comp = 0.0;
                for (uint r = 0u; r < len; r++) {
                    precise float y = x[pc.x_off + (start + r) * pc.x_stride + i] - comp;
                    precise float t = sum + y;
                    comp = (t - sum) - y;
                    sum = t;
                }
                v = sum / float(len);
            } else {
                uint r = kind == 1u ? start : start + len - 1u;
                v = x[pc.x_off + r * pc.x_stride + i];
            }
            o[ob + i] = v;
            ss += v * v;
        }
        /* mode is the same for the whole workgroup: wg_sum runs in uniform flow */
        if ((mode & 4u) != 0u) {
            float nrm = max(sqrt(wg_sum(ss)), 1e-12);
            for (uint i = lid; i < dims; i += WG) o[ob + i] = o[ob + i] / nrm;
        }
    }
}
