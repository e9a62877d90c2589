/* Normalization launchers (shaders/norm.comp) and C references. */
#include "k_norm.h"

#include <math.h>

/* Workgroup size for rows of n: enough invocations to keep every one busy
 * with a few elements, a power of two (the shader's tree reduction needs
 * it). Head-dim rows (64..256) get 32..64, hidden-size rows 256. */
static uint32_t norm_wg(uint32_t n)
{
    uint32_t wg = 32;
    while (wg < 256 && wg * 4 < n) wg *= 2;
    return wg;
}

static int norm_launch(vkpt_cmd *c, bool layer, const vkpt_rows *x, const vkpt_rows *y,
                       const vkpt_buf *w, const vkpt_buf *b, uint32_t n, uint32_t n_heads,
                       uint32_t n_rows, float eps)
{
    const char *name = layer ? "layernorm" : "rmsnorm";
    if (!c || !x || !y || !n || !n_heads)
        return vkpt_fail(VKPT_EINVAL, "%s: missing buffer or zero size", name);
    uint64_t row_len = (uint64_t)n * n_heads;
    if (!vkpt__rows_fit(x, n_rows, row_len) || !vkpt__rows_fit(y, n_rows, row_len))
        return vkpt_fail(VKPT_EINVAL, "%s: %u rows of %u x %u do not fit the x/y views", name,
                         n_rows, n_heads, n);
    if ((w && w->size < (uint64_t)n * 4) || (b && b->size < (uint64_t)n * 4))
        return vkpt_fail(VKPT_EINVAL, "%s: weight/bias smaller than %u elements", name, n);
    if (!(eps >= 0.0f)) return vkpt_fail(VKPT_EINVAL, "%s: eps %g", name, (double)eps);
    if (!n_rows) return 0;
    vkpt_device *dev = c->dev;
    int base = layer ? VKPT_V_layernorm_f32 : VKPT_V_rmsnorm_f32;
    int sub = layer ? VKPT_V_layernorm_f32_subgroup : VKPT_V_rmsnorm_f32_subgroup;
    int v = vkpt_variant_usable(dev, sub) ? sub : base;
    uint32_t wg = norm_wg(n);
    vkpt_spec spec = {.v = {wg}, .n = 1, .elems = {1, 1, 1}};
    const vkpt_pipeline *p;
    int err = vkpt_pipeline_get(dev, v, &spec, &p);
    if (err) return err;
    vkpt_pc_norm pc = {.n = n,
                       .n_heads = n_heads,
                       .n_rows = n_rows,
                       .x_off = x->off,
                       .x_stride = x->stride,
                       .y_off = y->off,
                       .y_stride = y->stride,
                       .flags = (w ? 1u : 0u) | (b ? 2u : 0u),
                       .eps = eps};
    /* absent weight/bias: bind x in their place, the shader does not read them */
    vkpt_buf bufs[4] = {x->buf, w ? *w : x->buf, b ? *b : x->buf, y->buf};
    vkpt_cmd_dispatch(c, p, bufs, 4, &pc, sizeof pc,
                      vkpt__grid_rows(dev, (uint64_t)n_rows * n_heads), 1, 1);
    return 0;
}

int vkpt_k_rmsnorm(vkpt_cmd *c, const vkpt_rows *x, const vkpt_rows *y, const vkpt_buf *w,
                   uint32_t n, uint32_t n_heads, uint32_t n_rows, float eps)
{
    return norm_launch(c, false, x, y, w, NULL, n, n_heads, n_rows, eps);
}

int vkpt_k_layernorm(vkpt_cmd *c, const vkpt_rows *x, const vkpt_rows *y, const vkpt_buf *w,
                     const vkpt_buf *b, uint32_t n, uint32_t n_rows, float eps)
{
    return norm_launch(c, true, x, y, w, b, n, 1, n_rows, eps);
}

void vkpt_ref_rmsnorm(const float *x, size_t x_stride, float *y, size_t y_stride, const float *w,
                      uint32_t n, uint32_t n_heads, uint32_t n_rows, float eps)
{
    for (uint32_t t = 0; t < n_rows; t++)
        for (uint32_t h = 0; h < n_heads; h++) {
            const float *xr = x + t * x_stride + (size_t)h * n;
            float *yr = y + t * y_stride + (size_t)h * n;
            double ss = 0;
            for (uint32_t i = 0; i < n; i++) ss += (double)xr[i] * xr[i];
            double inv = 1.0 / sqrt(ss / n + eps);
            for (uint32_t i = 0; i < n; i++) yr[i] = (float)(xr[i] * inv * (w ? w[i] : 1.0f));
        }
}

void vkpt_ref_layernorm(const float *x, size_t x_stride, float *y, size_t y_stride, const float *w,
                        const float *b, uint32_t n, uint32_t n_rows, float eps)
{
    for (uint32_t t = 0; t < n_rows; t++) {
        const float *xr = x + t * x_stride;
        float *yr = y + t * y_stride;
        double mean = 0, var = 0;
        for (uint32_t i = 0; i < n; i++) mean += xr[i];
        mean /= n;
        for (uint32_t i = 0; i < n; i++) var += (xr[i] - mean) * (xr[i] - mean);
        var /= n;
        double inv = 1.0 / sqrt(var + eps);
        for (uint32_t i = 0; i < n; i++) {
            double o = (xr[i] - mean) * inv;
            if (w) o *= w[i];
            if (b) o += b[i];
            yr[i] = (float)o;
        }
    }
}
