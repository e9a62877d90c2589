#version 450
/* Mixture-of-experts dispatch lists (k_moe.c): from the routed expert id of
 * every (token, choice) pair, the per-expert counts, their exclusive prefix
 * sum, the pairs grouped by expert, and the work tiles of the expert matmuls.
 *
 * Pair p = t*k + j has expert ids[id_off + p]. Slots are the pairs reordered
 * by expert, and by pair index within an expert (deterministic: the order
 * does not depend on timing):
 *   slot_pair[sp_off + s] = p, pair_slot[ps_off + p] = s,
 *   expert e owns slots [off_e, off_e + count_e).
 * The tile list at tiles[tl_off]:
 *   word 0              number of tiles
 *   words 1 .. E+1      off_0 .. off_E (off_E = n_pairs)
 *   from word tl_hdr    4 words per tile: expert, first slot, slots (1..tile), 0
 * Each expert's slots are cut into tiles of at most `tile` slots, experts in
 * index order; experts with no pairs get none, so the expert matmuls launch
 * only for experts some token chose.
 *
 * One workgroup: invocation i counts and places experts i, i + WG, ...,
 * scanning the ids in chunks staged in shared memory; one invocation does
 * the prefix sum and writes the tiles. O(n_expert * n_pairs) comparisons,
 * spread over the workgroup: a few microseconds at serving sizes. */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 0) const uint WG = 256;
layout(push_constant) uniform PC { vkpt_pc_moe_sort pc; };
layout(std430, binding = 0) readonly buffer I { uint ids[]; };
layout(std430, binding = 1) writeonly buffer SP { uint slot_pair[]; };
layout(std430, binding = 2) writeonly buffer PS { uint pair_slot[]; };
layout(std430, binding = 3) buffer T { uint tiles[]; };

const uint MAX_E = 512u; /* VKPT_MOE_MAX_EXPERTS */
const uint CHUNK = 1024u;
shared uint cnt[MAX_E];
shared uint cur[MAX_E + 1u];
shared uint sid[CHUNK];

void main()
{
    const uint tid = gl_LocalInvocationID.x, E = pc.n_expert, NP = pc.n_pairs;
    for (uint e = tid; e < E; e += WG) cnt[e] = 0u;
    for (uint base = 0u; base < NP; base += CHUNK) {
        uint n = min(CHUNK, NP - base);
        barrier();
        for (uint i = tid; i < n; i += WG) sid[i] = ids[pc.id_off + base + i];
        barrier();
        for (uint e = tid; e < E; e += WG) {
            uint c = 0u;
            for (uint i = 0u; i < n; i++) c += sid[i] == e ? 1u : 0u;
            cnt[e] += c;
        }
    }
    barrier();
    if (tid == 0u) {
        uint o = 0u, nt = 0u, rec = pc.tl_off + pc.tl_hdr;
        for (uint e = 0u; e < E; e++) {
            uint c = cnt[e];
            cur[e] = o;
            tiles[pc.tl_off + 1u + e] = o;
            for (uint s = 0u; s < c; s += pc.tile) {
                tiles[rec + 4u * nt] = e;
                tiles[rec + 4u * nt + 1u] = o + s;
                tiles[rec + 4u * nt + 2u] = min(pc.tile, c - s);
                tiles[rec + 4u * nt + 3u] = 0u;
                nt++;
            }
            o += c;
        }
        tiles[pc.tl_off + 1u + E] = o;
        tiles[pc.tl_off] = nt;
    }
    for (uint base = 0u; base < NP; base += CHUNK) {
        uint n = min(CHUNK, NP - base);
        barrier();
        for (uint i = tid; i < n; i += WG) sid[i] = ids[pc.id_off + base + i];
        barrier();
        for (uint e = tid; e < E; e += WG) {
            uint s = cur[e];
            for (uint i = 0u; i < n; i++) {
                if (sid[i] != e) continue;
                slot_pair[pc.sp_off + s] = base + i;
                pair_slot[pc.ps_off + base + i] = s;
                s++;
            }
            cur[e] = s;
        }
    }
}
