#version 450
/* Per-row kernels over logits [n_rows][n] f32 (rows x_stride apart from
 * x_off), so only a few values per sequence go back to the host (k_logits.c).
 *
 * ARGMAX  idx[r], val[r] of the row's maximum. Ties: the lowest index wins.
 *         NaN is never selected (a row of NaN only gives idx 0xffffffff).
 * TOPK    the k (<= 64) largest, sorted: val[r][0..k), idx[r][0..k).
 *         Order: by value descending (-0 == +0), ties by lower index first;
 *         NaN ranks below -inf. Exact radix select on an order-preserving
 *         u32 key (3 passes of 11/11/10 bits over the row), then, only when
 *         the k-th value is tied with values that do not all fit, a select of
 *         the lowest indices among those ties (2 passes of 11 bits: n < 2^22).
 * LSE     with z = x / temp[r]: out[r] = (max z, log sum exp z), online in
 *         one pass. -inf logits contribute nothing.
 * TEMP    x[r][i] = x[r][i] / temp[r], in place.
 * ADJUST  sparse per-row edits, in place: entries e in [offs[r], offs[r+1])
 *         are {id, rep, delta} (u32, f32, f32):
 *            x[id] = (x[id] < 0 ? x[id]*rep : x[id]/rep) + delta
 *         (repetition penalty as transformers applies it, then an additive
 *         delta for logit_bias and presence/frequency penalties). Ids within
 *         a row must be distinct; ids >= n are ignored; pc.k is the number
 *         of entries in the buffer (a bad offset cannot read past it).
 * One workgroup per row (rows grid-strided), except TEMP (elementwise).
 */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(push_constant) uniform PC { vkpt_pc_logits pc; };

#define NEG_INF uintBitsToFloat(0xff800000u)

#if defined(ARGMAX)
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer OI { uint out_i[]; };
layout(std430, binding = 2) writeonly buffer OV { float out_v[]; };
#ifdef SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
shared float s_v[WG];
shared uint s_i[WG];

bool better(float v, uint i, float bv, uint bi)
{
    return v > bv || (v == bv && i < bi);
}

void main()
{
    uint lid = gl_LocalInvocationID.x;
    for (uint r = gl_WorkGroupID.x; r < pc.n_rows; r += gl_NumWorkGroups.x) {
        uint xo = pc.x_off + r * pc.x_stride;
        float bv = NEG_INF;
        uint bi = 0xffffffffu;
        for (uint i = lid; i < pc.n; i += WG) {
            float v = x[xo + i];
            if (better(v, i, bv, bi)) {
                bv = v;
                bi = i;
            }
        }
#ifdef SUBGROUP
        float m = subgroupMax(bv);
        uint mi = subgroupMin(bv == m ? bi : 0xffffffffu);
        barrier();
        /* the winning lane stores its own value: subgroupMax may give +0 for -0 */
        if (mi == 0xffffffffu ? subgroupElect() : bi == mi) {
            s_v[gl_SubgroupID] = mi == 0xffffffffu ? m : bv;
            s_i[gl_SubgroupID] = mi;
        }
        barrier();
        if (lid == 0u) {
            m = s_v[0];
            mi = s_i[0];
            for (uint k = 1; k < gl_NumSubgroups; k++)
                if (better(s_v[k], s_i[k], m, mi)) {
                    m = s_v[k];
                    mi = s_i[k];
                }
            out_i[r] = mi;
            out_v[r] = m;
        }
#else
        barrier();
        s_v[lid] = bv;
        s_i[lid] = bi;
        barrier();
        for (uint h = WG / 2; h > 0; h >>= 1) {
            if (lid < h && better(s_v[lid + h], s_i[lid + h], s_v[lid], s_i[lid])) {
                s_v[lid] = s_v[lid + h];
                s_i[lid] = s_i[lid + h];
            }
            barrier();
        }
        if (lid == 0u) {
            out_i[r] = s_i[0];
            out_v[r] = s_v[0];
        }
#endif
    }
}

#elif defined(TOPK)
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer OV { float out_v[]; };
layout(std430, binding = 2) writeonly buffer OI { uint out_i[]; };

shared uint hist[2048];
shared uint csum[WG];
shared uint s_bin, s_before, s_eq, cand_n;
shared float cand_v[64];
shared uint cand_i[64];
shared uint cand_k[64];

/* order-preserving key: a > b as floats <=> key(a) > key(b); NaN lowest */
uint okey(float v)
{
    if (isnan(v)) return 0u;
    uint u = v == 0.0 ? 0u : floatBitsToUint(v);
    return (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
}

/* One radix pass. Counts the digit (bits at `shift`) of the value key
 * (by_index false: elements whose key matches prefix under mask) or of the
 * index (by_index true: elements with key == vkey whose index matches),
 * then finds the bin holding the need-th element counting from the top
 * (values) or the bottom (indices). Uniform: every invocation calls it. */
void radix_pass(uint xo, bool by_index, uint shift, uint bits, uint prefix, uint mask, uint vkey,
                uint need)
{
    uint lid = gl_LocalInvocationID.x;
    uint nb = 1u << bits, dmask = nb - 1u;
    for (uint b = lid; b < nb; b += WG) hist[b] = 0u;
    barrier();
    for (uint i = lid; i < pc.n; i += WG) {
        uint key = okey(x[xo + i]);
        if (!by_index) {
            if ((key & mask) == prefix) atomicAdd(hist[(key >> shift) & dmask], 1u);
        } else if (key == vkey && (i & mask) == prefix) {
            atomicAdd(hist[(i >> shift) & dmask], 1u);
        }
    }
    barrier();
    uint per = nb / WG; /* WG <= 1024 <= nb */
    uint sum = 0u;
    for (uint c = 0; c < per; c++) {
        uint b = by_index ? lid * per + c : nb - 1u - (lid * per + c);
        sum += hist[b];
    }
    csum[lid] = sum;
    barrier();
    if (lid == 0u) {
        uint before = 0u, t = 0u;
        for (; t < WG - 1u; t++) {
            if (before + csum[t] >= need) break;
            before += csum[t];
        }
        uint b = 0u;
        for (uint c = 0; c < per; c++) {
            b = by_index ? t * per + c : nb - 1u - (t * per + c);
            if (before + hist[b] >= need) break;
            before += hist[b];
        }
        s_bin = b;
        s_before = before;
        s_eq = hist[b];
    }
    barrier();
}

void main()
{
    uint lid = gl_LocalInvocationID.x;
    uint k = pc.k;
    for (uint r = gl_WorkGroupID.x; r < pc.n_rows; r += gl_NumWorkGroups.x) {
        uint xo = pc.x_off + r * pc.x_stride;
        uint prefix = 0u, mask = 0u, need = k, eq = 0u;
        const uint shifts[3] = uint[3](21u, 10u, 0u);
        const uint widths[3] = uint[3](11u, 11u, 10u);
        for (uint p = 0; p < 3u; p++) {
            radix_pass(xo, false, shifts[p], widths[p], prefix, mask, 0u, need);
            uint dm = (1u << widths[p]) - 1u;
            prefix |= s_bin << shifts[p];
            mask |= dm << shifts[p];
            need -= s_before;
            eq = s_eq;
        }
        uint vkey = prefix; /* the k-th largest key; take `need` of its `eq` ties */
        bool all_ties = need == eq;
        uint iprefix = 0u;
        if (!all_ties) {
            uint imask = 0u;
            for (uint p = 0; p < 2u; p++) {
                uint sh = p == 0u ? 11u : 0u;
                radix_pass(xo, true, sh, 11u, iprefix, imask, vkey, need);
                iprefix |= s_bin << sh;
                imask |= 2047u << sh;
                need -= s_before;
            }
        }
        if (lid == 0u) cand_n = 0u;
        barrier();
        for (uint i = lid; i < pc.n; i += WG) {
            float v = x[xo + i];
            uint key = okey(v);
            if (key > vkey || (key == vkey && (all_ties || i <= iprefix))) {
                uint slot = atomicAdd(cand_n, 1u);
                if (slot < 64u) {
                    cand_v[slot] = v;
                    cand_i[slot] = i;
                    cand_k[slot] = key;
                }
            }
        }
        barrier();
        for (uint t = lid; t < k; t += WG) {
            uint rank = 0u;
            for (uint j = 0; j < k; j++)
                if (cand_k[j] > cand_k[t] || (cand_k[j] == cand_k[t] && cand_i[j] < cand_i[t]))
                    rank++;
            out_v[r * k + rank] = cand_v[t];
            out_i[r * k + rank] = cand_i[t];
        }
        barrier();
    }
}

#elif defined(LSE)
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer T { float temp[]; };
layout(std430, binding = 2) writeonly buffer O { vec2 o[]; };
#include "wgreduce.glsl"

void main()
{
    uint lid = gl_LocalInvocationID.x;
    for (uint r = gl_WorkGroupID.x; r < pc.n_rows; r += gl_NumWorkGroups.x) {
        uint xo = pc.x_off + r * pc.x_stride;
        float t = temp[r];
        float m = NEG_INF, s = 0.0;
        for (uint i = lid; i < pc.n; i += WG) {
            float z = x[xo + i] / t;
            if (z == NEG_INF) continue;
            if (z > m) {
                s = s * exp(m - z) + 1.0;
                m = z;
            } else {
                s += exp(z - m);
            }
        }
        float mx = wg_max(m);
        float tot = wg_sum(m == NEG_INF ? 0.0 : s * exp(m - mx));
        if (lid == 0u) o[r] = vec2(mx, mx == NEG_INF ? NEG_INF : mx + log(tot));
    }
}

#elif defined(TEMP)
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer T { float temp[]; };

void main()
{
    uint total = pc.n_rows * pc.n;
    uint step = gl_NumWorkGroups.x * WG;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += step) {
        uint r = i / pc.n, c = i - r * pc.n;
        uint a = pc.x_off + r * pc.x_stride + c;
        x[a] = x[a] / temp[r];
    }
}

#elif defined(ADJUST)
layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Off { uint offs[]; };
layout(std430, binding = 2) readonly buffer E { uint ent[]; };

void main()
{
    for (uint r = gl_WorkGroupID.x; r < pc.n_rows; r += gl_NumWorkGroups.x) {
        uint xo = pc.x_off + r * pc.x_stride;
        uint e1 = min(offs[r + 1u], pc.k); /* k: entries in the buffer */
        for (uint e = offs[r] + gl_LocalInvocationID.x; e < e1; e += WG) {
            uint id = ent[3u * e];
            if (id >= pc.n) continue;
            float rep = uintBitsToFloat(ent[3u * e + 1u]);
            float delta = uintBitsToFloat(ent[3u * e + 2u]);
            float v = x[xo + id];
            x[xo + id] = (v < 0.0 ? v * rep : v / rep) + delta;
        }
    }
}
#else
#error "no kernel selected"
#endif
