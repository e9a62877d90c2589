/* Activation launchers (shaders/act.comp) and C references. */
#include "k_act.h"

#include <math.h>

static const int glu_variant[] = {VKPT_V_glu_f32_silu, VKPT_V_glu_f32_gelu,
                                  VKPT_V_glu_f32_gelu_erf};
static const int unary_variant[] = {VKPT_V_unary_f32_silu, VKPT_V_unary_f32_gelu,
                                    VKPT_V_unary_f32_gelu_erf};

enum { ACT_WG = 256 };

static int get_pipe(vkpt_cmd *c, int variant, const vkpt_pipeline **p)
{
    vkpt_spec spec = {.v = {ACT_WG}, .n = 1};
    return vkpt_pipeline_get(c->dev, variant, &spec, p);
}

int vkpt_k_glu(vkpt_cmd *c, int act, const vkpt_rows *gate, const vkpt_rows *up, const vkpt_rows *y,
               uint32_t n, uint32_t n_rows)
{
    if (!c || act < 0 || act > VKPT_ACT_GELU_ERF)
        return vkpt_fail(VKPT_EINVAL, "glu: unknown activation %d", act);
    if (!vkpt__rows_fit(gate, n_rows, n) || !vkpt__rows_fit(up, n_rows, n) ||
        !vkpt__rows_fit(y, n_rows, n))
        return vkpt_fail(VKPT_EINVAL, "glu: %u rows of %u do not fit the views", n_rows, n);
    uint64_t total = (uint64_t)n_rows * n;
    if (total > UINT32_MAX) return vkpt_fail(VKPT_ETOOBIG, "glu: %u x %u elements", n_rows, n);
    if (!total) return 0;
    const vkpt_pipeline *p;
    int err = get_pipe(c, glu_variant[act], &p);
    if (err) return err;
    vkpt_pc_glu pc = {.n_rows = n_rows,
                      .n = n,
                      .g_off = gate->off,
                      .g_stride = gate->stride,
                      .u_off = up->off,
                      .u_stride = up->stride,
                      .y_off = y->off,
                      .y_stride = y->stride};
    vkpt_buf bufs[3] = {gate->buf, up->buf, y->buf};
    vkpt_cmd_dispatch(c, p, bufs, 3, &pc, sizeof pc, vkpt__grid_elems(c->dev, total, ACT_WG), 1, 1);
    return 0;
}

static int unary(vkpt_cmd *c, int variant, const char *name, const vkpt_rows *x, const vkpt_rows *y,
                 uint32_t n, uint32_t n_rows, float a, float b)
{
    if (!c || !vkpt__rows_fit(x, n_rows, n) || !vkpt__rows_fit(y, n_rows, n))
        return vkpt_fail(VKPT_EINVAL, "%s: %u rows of %u do not fit the views", name, n_rows, n);
    uint64_t total = (uint64_t)n_rows * n;
    if (total > UINT32_MAX) return vkpt_fail(VKPT_ETOOBIG, "%s: %u x %u elements", name, n_rows, n);
    if (!total) return 0;
    const vkpt_pipeline *p;
    int err = get_pipe(c, variant, &p);
    if (err) return err;
    vkpt_pc_unary pc = {.n_rows = n_rows,
                        .n = n,
                        .x_off = x->off,
                        .x_stride = x->stride,
                        .y_off = y->off,
                        .y_stride = y->stride,
                        .a = a,
                        .b = b};
    vkpt_buf bufs[2] = {x->buf, y->buf};
    vkpt_cmd_dispatch(c, p, bufs, 2, &pc, sizeof pc, vkpt__grid_elems(c->dev, total, ACT_WG), 1, 1);
    return 0;
}

int vkpt_k_act(vkpt_cmd *c, int act, const vkpt_rows *x, const vkpt_rows *y, uint32_t n,
               uint32_t n_rows)
{
    if (act < 0 || act > VKPT_ACT_GELU_ERF)
        return vkpt_fail(VKPT_EINVAL, "act: unknown activation %d", act);
    return unary(c, unary_variant[act], "act", x, y, n, n_rows, 0, 0);
}

int vkpt_k_scale(vkpt_cmd *c, const vkpt_rows *x, const vkpt_rows *y, uint32_t n, uint32_t n_rows,
                 float s)
{
    return unary(c, VKPT_V_unary_f32_scale, "scale", x, y, n, n_rows, s, 0);
}

int vkpt_k_clamp(vkpt_cmd *c, const vkpt_rows *x, const vkpt_rows *y, uint32_t n, uint32_t n_rows,
                 float lo, float hi)
{
    if (!(lo <= hi)) return vkpt_fail(VKPT_EINVAL, "clamp: lo %g > hi %g", (double)lo, (double)hi);
    return unary(c, VKPT_V_unary_f32_clamp, "clamp", x, y, n, n_rows, lo, hi);
}

static double ref_act(int act, double x)
{
    switch (act) {
    case VKPT_ACT_SILU: return x / (1.0 + exp(-x));
    case VKPT_ACT_GELU_TANH: {
        /* 0.5 (1 + tanh(y)) written as 1 / (1 + exp(-2y)): no cancellation for x << 0 */
        double y = sqrt(2.0 / 3.14159265358979323846) * (x + 0.044715 * x * x * x);
        return x / (1.0 + exp(-2.0 * y));
    }
    case VKPT_ACT_GELU_ERF: return 0.5 * x * erfc(-x / sqrt(2.0));
    default: return NAN;
    }
}

float vkpt_ref_act1(int act, float v)
{
    return (float)ref_act(act, v);
}

void vkpt_ref_glu(int act, const float *gate, size_t g_stride, const float *up, size_t u_stride,
                  float *y, size_t y_stride, uint32_t n, uint32_t n_rows)
{
    for (uint32_t t = 0; t < n_rows; t++)
        for (uint32_t i = 0; i < n; i++)
            y[t * y_stride + i] =
                (float)(ref_act(act, gate[t * g_stride + i]) * up[t * u_stride + i]);
}
