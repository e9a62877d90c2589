#version 450
#extension GL_EXT_integer_dot_product : require
layout(local_size_x = 32) in;
layout(std430, binding = 0) buffer B { int b[]; };
void main()
{
    uint i = gl_GlobalInvocationID.x;
    b[i] = dotPacked4x8AccSatEXT(b[i], b[i + 1], b[i + 2]);
}
