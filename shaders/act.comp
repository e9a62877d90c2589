#version 450
/* Activations over f32 rows (k_act.c).
 *
 * GLU (gated, SwiGLU/GeGLU): y = act(gate) * up, with gate, up and y each a
 * row view (offset, row stride in elements), so one fused [n_rows][2*ff]
 * buffer (gate first) and two separate buffers both work.
 * Unary: y = act(x); SCALE: y = x * a; CLAMP: y = clamp(x, a, b).
 *
 *   ACT_SILU       silu(x) = x / (1 + exp(-x))
 *   ACT_GELU       tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
 *   ACT_GELU_ERF   erf form:  0.5 x (1 + erf(x / sqrt(2)))
 *
 * Elements are grid-strided over n_rows*n, so any size fits the limits.
 */
#extension GL_GOOGLE_include_directive : require
#include "base.glsl"

layout(local_size_x_id = 0) in;
#ifdef GLU
layout(push_constant) uniform PC { vkpt_pc_glu pc; };
layout(std430, binding = 0) readonly buffer G { float g[]; };
layout(std430, binding = 1) readonly buffer U { float u[]; };
layout(std430, binding = 2) buffer Y { float y[]; };
#else
layout(push_constant) uniform PC { vkpt_pc_unary pc; };
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Y { float y[]; };
#endif

/* erfc(z) for z >= 0, relative error < 1.2e-7 everywhere (Chebyshev fit,
 * Numerical Recipes' erfcc); used so both tails of the erf GELU keep their
 * relative precision. */
float erfc_pos(float z)
{
    float t = 1.0 / (1.0 + 0.5 * z);
    float p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
              t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
              t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(-z * z + p);
}

float act(float v)
{
#if defined(ACT_SILU)
    return v / (1.0 + exp(-v));
#elif defined(ACT_GELU)
    /* 0.5 (1 + tanh(y)) = 1 / (1 + exp(-2y)): no cancellation for x < 0,
     * saturates without inf/inf */
    const float k2 = 1.5957691216057308; /* 2 sqrt(2/pi) */
    return v / (1.0 + exp(-k2 * (v + 0.044715 * v * v * v)));
#elif defined(ACT_GELU_ERF)
    /* 1 + erf(v/sqrt2) = 2 - erfc(|v|/sqrt2) for v >= 0, erfc(|v|/sqrt2) below */
    float ec = erfc_pos(abs(v) * 0.7071067811865476);
    return 0.5 * v * (v >= 0.0 ? 2.0 - ec : ec);
#elif defined(ACT_SCALE)
    return v * pc.a;
#elif defined(ACT_CLAMP)
    return clamp(v, pc.a, pc.b);
#else
#error "no ACT_* defined"
#endif
}

void main()
{
    uint n = pc.n;
    uint total = pc.n_rows * n;
    uint step = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < total; i += step) {
        uint r = i / n, c = i - r * n;
#ifdef GLU
        y[pc.y_off + r * pc.y_stride + c] =
            act(g[pc.g_off + r * pc.g_stride + c]) * u[pc.u_off + r * pc.u_stride + c];
#else
        y[pc.y_off + r * pc.y_stride + c] = act(x[pc.x_off + r * pc.x_stride + c]);
#endif
    }
}
