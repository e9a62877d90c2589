/* Scalar references for the quantized-weight kernels (k_matmul.h): the
 * oracles of tests/test_matmul.c. Written for clarity: rows are
 * dequantized with vkpt_dequantize_row and dotted in double. */
#include "k_matmul.h"

#include <math.h>
#include <string.h>

int vkpt_ref_matmul(uint32_t wtype, const void *w, uint32_t K, uint32_t M, const float *x,
                    uint32_t n_tok, float *y, uint32_t y_stride, const float *bias)
{
    uint64_t rb = vkpt_qtype_row_bytes(wtype, K);
    float *row = vkpt_malloc((size_t)K * sizeof *row);
    if (!row) return vkpt_fail(VKPT_ENOMEM, "ref matmul: %u floats", K);
    for (uint32_t m = 0; m < M; m++) {
        int err = vkpt_dequantize_row(wtype, (const uint8_t *)w + m * rb, row, K);
        if (err) {
            vkpt_free(row);
            return err;
        }
        for (uint32_t t = 0; t < n_tok; t++) {
            double s = bias ? bias[m] : 0.0;
            for (uint32_t k = 0; k < K; k++) s += (double)row[k] * x[(size_t)t * K + k];
            y[(size_t)t * y_stride + m] = (float)s;
        }
    }
    vkpt_free(row);
    return 0;
}

void vkpt_ref_quantize_act(const float *x, size_t n, int8_t *q, float *d)
{
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(xb[j]));
        float db = amax * (1.0f / 127.0f);
        float id = db != 0 ? 1.0f / db : 0.0f;
        for (int j = 0; j < 32; j++) {
            float v = rintf(xb[j] * id); /* the default rounding: half to even */
            q[32 * b + j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
        }
        d[b] = db;
    }
}

int vkpt_ref_matmul_q8(uint32_t wtype, const void *w, uint32_t K, uint32_t M, const int8_t *q,
                       const float *d, uint32_t n_tok, float *y, uint32_t y_stride,
                       const float *bias)
{
    float *x = vkpt_malloc((size_t)n_tok * K * sizeof *x);
    if (!x) return vkpt_fail(VKPT_ENOMEM, "ref matmul q8: %u x %u floats", n_tok, K);
    for (size_t i = 0; i < (size_t)n_tok * K; i++) x[i] = (float)q[i] * d[i / 32];
    int err = vkpt_ref_matmul(wtype, w, K, M, x, n_tok, y, y_stride, bias);
    vkpt_free(x);
    return err;
}
