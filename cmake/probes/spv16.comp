#version 450
/* Probe for the SPV16 tier: a Vulkan 1.3 / SPIR-V 1.6 target, where a
 * specialized workgroup size becomes LocalSizeId. */
layout(local_size_x_id = 0) in;
layout(std430, binding = 0) buffer B { uint b[]; };
void main()
{
    b[gl_GlobalInvocationID.x] = gl_WorkGroupSize.x;
}
