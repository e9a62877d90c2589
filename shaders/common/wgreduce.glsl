/* Workgroup-wide float reductions for one-row-per-workgroup kernels.
 *
 * The includer declares `layout(constant_id = 0) const uint WG` (the
 * workgroup size, a power of two) before including this file. Call the
 * functions from uniform control flow: every invocation of the workgroup
 * must reach them, and every invocation gets the result.
 *
 * With SUBGROUP defined (variants that require VKPT_REQ_SUBGROUP_ARITH) the
 * reduction is subgroupAdd/Max within a subgroup plus one shared slot per
 * subgroup; otherwise a shared-memory tree. The two orders of summation
 * differ, so results may differ in the last bits.
 */
#ifdef SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

shared float wgr_f[WG];

float wg_sum(float v)
{
#ifdef SUBGROUP
    v = subgroupAdd(v);
    barrier(); /* earlier readers of wgr_f are done */
    if (subgroupElect()) wgr_f[gl_SubgroupID] = v;
    barrier();
    float s = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; i++) s += wgr_f[i];
    return s;
#else
    uint lid = gl_LocalInvocationID.x;
    barrier();
    wgr_f[lid] = v;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) {
        if (lid < h) wgr_f[lid] += wgr_f[lid + h];
        barrier();
    }
    return wgr_f[0];
#endif
}

float wg_max(float v)
{
#ifdef SUBGROUP
    v = subgroupMax(v);
    barrier();
    if (subgroupElect()) wgr_f[gl_SubgroupID] = v;
    barrier();
    float m = wgr_f[0];
    for (uint i = 1; i < gl_NumSubgroups; i++) m = max(m, wgr_f[i]);
    return m;
#else
    uint lid = gl_LocalInvocationID.x;
    barrier();
    wgr_f[lid] = v;
    barrier();
    for (uint h = WG / 2; h > 0; h >>= 1) {
        if (lid < h) wgr_f[lid] = max(wgr_f[lid], wgr_f[lid + h]);
        barrier();
    }
    return wgr_f[0];
#endif
}
