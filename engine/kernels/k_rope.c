/* RoPE: inverse-frequency tables (host), launcher, reference.
 *
 * The tables mirror transformers' f32 arithmetic step by step, including
 * torch's habits: `scalar / tensor` is reciprocal(tensor) * scalar, and a
 * Python scalar meets an f32 tensor as an f32. Only the YaRN correction
 * range is computed in double, as transformers does it in Python floats. */
#include "k_rope.h"

#include <math.h>

#define PI_D 3.14159265358979323846

/* inv_freq[k] = 1 / theta^(2k/dim), f32 as torch computes it */
static void plain_freqs(float theta, uint32_t dim, float *inv)
{
    for (uint32_t k = 0; k < dim / 2; k++) {
        float e = (float)(2 * k) / (float)dim;
        inv[k] = 1.0f / powf(theta, e);
    }
}

static double yarn_get_mscale(double scale, double m)
{
    return scale <= 1 ? 1.0 : 0.1 * m * log(scale) + 1.0;
}

/* dimension index at which a wavelength makes n_rot rotations over ctx */
static double yarn_corr_dim(double n_rot, double dim, double base, double ctx)
{
    return dim * log(ctx / (n_rot * 2 * PI_D)) / (2 * log(base));
}

int vkpt_rope_freqs(const vkpt_rope_cfg *cfg, float *inv, float *mscale)
{
    if (!cfg || !inv || !mscale) return vkpt_fail(VKPT_EINVAL, "rope_freqs: NULL argument");
    uint32_t dim = cfg->rot_dim;
    if (!dim || dim % 2 || dim > 1024)
        return vkpt_fail(VKPT_EINVAL, "rope: rotary dim %u must be even and in 2..1024", dim);
    if (!(cfg->theta > 1.0))
        return vkpt_fail(VKPT_EINVAL, "rope: theta %g must be > 1", cfg->theta);
    bool scaled = cfg->scaling != VKPT_ROPE_PLAIN;
    if (scaled && !(cfg->factor > 0.0))
        return vkpt_fail(VKPT_EINVAL, "rope: scaling factor %g must be > 0", cfg->factor);
    float theta = (float)cfg->theta, factor = (float)cfg->factor;
    *mscale = 1.0f;
    switch (cfg->scaling) {
    case VKPT_ROPE_PLAIN: plain_freqs(theta, dim, inv); return 0;
    case VKPT_ROPE_LINEAR:
        plain_freqs(theta, dim, inv);
        for (uint32_t k = 0; k < dim / 2; k++) inv[k] /= factor;
        return 0;
    case VKPT_ROPE_LLAMA3: {
        double lf = cfg->low_freq_factor, hf = cfg->high_freq_factor;
        if (!(lf > 0) || !(hf > lf) || !cfg->orig_ctx)
            return vkpt_fail(VKPT_EINVAL,
                             "rope llama3: needs high_freq_factor > low_freq_factor > 0 "
                             "(got %g, %g) and original_max_position_embeddings",
                             hf, lf);
        float ctx = (float)cfg->orig_ctx;
        float low_wl = (float)(cfg->orig_ctx / lf);  /* longer wavelengths: divide by factor */
        float high_wl = (float)(cfg->orig_ctx / hf); /* shorter: unchanged */
        float span = (float)(hf - lf);
        plain_freqs(theta, dim, inv);
        for (uint32_t k = 0; k < dim / 2; k++) {
            float wl = (1.0f / inv[k]) * (float)(2 * PI_D);
            float f = wl > low_wl ? inv[k] / factor : inv[k];
            if (!(wl < high_wl) && !(wl > low_wl)) {
                float smooth = ((1.0f / wl) * ctx - (float)lf) / span;
                f = (1.0f - smooth) * f / factor + smooth * f;
            }
            inv[k] = f;
        }
        return 0;
    }
    case VKPT_ROPE_YARN: {
        if (!cfg->orig_ctx)
            return vkpt_fail(VKPT_EINVAL, "rope yarn: original context length missing");
        double fac = cfg->factor;
        double att = cfg->attn_factor;
        if (att == 0.0)
            att =
                cfg->mscale != 0.0 && cfg->mscale_all_dim != 0.0
                    ? yarn_get_mscale(fac, cfg->mscale) / yarn_get_mscale(fac, cfg->mscale_all_dim)
                    : yarn_get_mscale(fac, 1.0);
        double bf = cfg->beta_fast != 0.0 ? cfg->beta_fast : 32.0;
        double bs = cfg->beta_slow != 0.0 ? cfg->beta_slow : 1.0;
        double lo = yarn_corr_dim(bf, dim, cfg->theta, cfg->orig_ctx);
        double hi = yarn_corr_dim(bs, dim, cfg->theta, cfg->orig_ctx);
        if (!cfg->no_truncate) {
            lo = floor(lo);
            hi = ceil(hi);
        }
        if (lo < 0) lo = 0;
        if (hi > dim - 1) hi = dim - 1;
        if (lo == hi) hi += 0.001; /* transformers' guard against a zero-width ramp */
        float flo = (float)lo, fspan = (float)(hi - lo);
        for (uint32_t k = 0; k < dim / 2; k++) {
            float pf = powf(theta, (float)(2 * k) / (float)dim);
            float extra = 1.0f / pf;
            float interp = 1.0f / (factor * pf);
            float ramp = ((float)k - flo) / fspan;
            ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
            float ef = 1.0f - ramp; /* extrapolation weight */
            inv[k] = interp * (1.0f - ef) + extra * ef;
        }
        *mscale = (float)att;
        return 0;
    }
    default: return vkpt_fail(VKPT_EINVAL, "rope: unknown scaling type %d", cfg->scaling);
    }
}

int vkpt_k_rope(vkpt_cmd *c, const vkpt_rows *x, const vkpt_buf *pos, const vkpt_buf *inv_freq,
                uint32_t n_rows, uint32_t n_heads, uint32_t head_dim, uint32_t rot_dim, int layout,
                float mscale)
{
    if (!c || !x || !pos || !inv_freq || !n_heads || !head_dim)
        return vkpt_fail(VKPT_EINVAL, "rope: missing buffer or zero size");
    if (!rot_dim || rot_dim % 2 || rot_dim > head_dim)
        return vkpt_fail(VKPT_EINVAL, "rope: rotary dim %u must be even and <= head_dim %u",
                         rot_dim, head_dim);
    if (layout != VKPT_ROPE_INTERLEAVED && layout != VKPT_ROPE_NEOX)
        return vkpt_fail(VKPT_EINVAL, "rope: unknown layout %d", layout);
    if (!vkpt__rows_fit(x, n_rows, (uint64_t)n_heads * head_dim) ||
        pos->size < (uint64_t)n_rows * 4 || inv_freq->size < (uint64_t)rot_dim / 2 * 4)
        return vkpt_fail(VKPT_EINVAL, "rope: %u rows of %u x %u: buffers too small", n_rows,
                         n_heads, head_dim);
    if (!n_rows) return 0;
    uint64_t total = (uint64_t)n_rows * n_heads * (rot_dim / 2);
    if (total > UINT32_MAX)
        return vkpt_fail(VKPT_ETOOBIG, "rope: %llu pairs", (unsigned long long)total);
    const uint32_t wg = 256;
    vkpt_spec spec = {.v = {wg}, .n = 1};
    const vkpt_pipeline *p;
    int err = vkpt_pipeline_get(c->dev, VKPT_V_rope_f32, &spec, &p);
    if (err) return err;
    vkpt_pc_rope pc = {.n_rows = n_rows,
                       .n_heads = n_heads,
                       .head_dim = head_dim,
                       .rot_half = rot_dim / 2,
                       .x_off = x->off,
                       .x_stride = x->stride,
                       .neox = layout == VKPT_ROPE_NEOX,
                       .mscale = mscale};
    vkpt_buf bufs[3] = {x->buf, *pos, *inv_freq};
    vkpt_cmd_dispatch(c, p, bufs, 3, &pc, sizeof pc, vkpt__grid_elems(c->dev, total, wg), 1, 1);
    return 0;
}

void vkpt_ref_rope(float *x, size_t x_stride, const uint32_t *pos, const float *inv_freq,
                   uint32_t n_rows, uint32_t n_heads, uint32_t head_dim, uint32_t rot_dim,
                   int layout, float mscale)
{
    uint32_t half = rot_dim / 2;
    for (uint32_t t = 0; t < n_rows; t++)
        for (uint32_t h = 0; h < n_heads; h++) {
            float *xh = x + t * x_stride + (size_t)h * head_dim;
            for (uint32_t k = 0; k < half; k++) {
                float a = (float)pos[t] * inv_freq[k]; /* the f32 angle, as transformers */
                double cs = cos((double)a) * mscale, sn = sin((double)a) * mscale;
                uint32_t i0 = layout == VKPT_ROPE_NEOX ? k : 2 * k;
                uint32_t i1 = layout == VKPT_ROPE_NEOX ? k + half : 2 * k + 1;
                double x0 = xh[i0], x1 = xh[i1];
                xh[i0] = (float)(x0 * cs - x1 * sn);
                xh[i1] = (float)(x1 * cs + x0 * sn);
            }
        }
}
