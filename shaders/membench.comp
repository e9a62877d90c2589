#version 450
/* Memory-bandwidth kernels: READ streams src once (grid-stride, vec4 loads)
 * and keeps the sum alive by comparing it to a value it never equals; COPY
 * streams src into dst. The figure these give is the ceiling decode speed is
 * measured against. */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
layout(push_constant) uniform PC { vkpt_pc_membench pc; };
layout(std430, binding = 0) readonly buffer Src { vec4 src[]; };
layout(std430, binding = 1) writeonly buffer Dst { vec4 dst[]; };

void main()
{
    uint total = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint i = gl_GlobalInvocationID.x;
#ifdef COPY
    for (; i < pc.n4; i += total) dst[i] = src[i];
#else
    vec4 acc = vec4(0.0);
    for (; i < pc.n4; i += total) acc += src[i];
    if (acc.x + acc.y + acc.z + acc.w == pc.magic) dst[0] = acc;
#endif
}
