/* Helpers for the kernel tests (test_norm, test_rope, test_act, test_attn,
 * test_logits): device buffers from host arrays, readback, and running
 * one recorded command buffer. Failures fail the calling test. */
#ifndef VKPT_TEST_KERNEL_UTIL_H
#define VKPT_TEST_KERNEL_UTIL_H

#include "vk_fixture.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A device buffer of `bytes` (at least 4), filled from `src` when given,
 * else with 0xffffffff words (a pattern a kernel must overwrite or leave). */
static inline vkpt_buf kt_buf(vkpt_device *dev, const void *src, size_t bytes)
{
    vkpt_buf b;
    size_t n = bytes < 4 ? 4 : (bytes + 3) / 4 * 4;
    assert_int_equal(vkpt_buf_alloc(dev, n, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b), 0);
    if (src) {
        assert_int_equal(vkpt_buf_upload(dev, &b, 0, src, bytes), 0);
    } else {
        uint32_t *fill = malloc(n);
        memset(fill, 0xff, n);
        assert_int_equal(vkpt_buf_upload(dev, &b, 0, fill, n), 0);
        free(fill);
    }
    return b;
}

static inline void kt_get(vkpt_device *dev, const vkpt_buf *b, void *dst, size_t bytes)
{
    assert_int_equal(vkpt_buf_download(dev, b, 0, dst, bytes), 0);
}

/* Begin a command buffer on c (vkpt_cmd_init'ed by the caller). */
static inline void kt_begin(vkpt_cmd *c)
{
    assert_int_equal(vkpt_cmd_begin(c), 0);
}

static inline void kt_run(vkpt_cmd *c)
{
    assert_int_equal(vkpt_cmd_run(c), 0);
}

static inline float *kt_randf(vkpt_test_rng *r, size_t n, float lo, float hi)
{
    float *x = malloc(n * sizeof *x + 4);
    vkpt_test_fill_f32(r, x, n, lo, hi);
    return x;
}

/* Largest |a - b| / (abs_tol + rel * |b|) over n; <= 1 passes. NaN where
 * the reference is not NaN counts as a failure (infinity). */
static inline double kt_err_ratio(const float *a, const float *b, size_t n, double abs_tol,
                                  double rel, size_t *worst)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d;
        if (isnan(b[i]) || isinf(b[i]))
            d = (a[i] == b[i] || (isnan(a[i]) && isnan(b[i]))) ? 0 : INFINITY;
        else
            d = fabs((double)a[i] - b[i]) / (abs_tol + rel * fabs((double)b[i]));
        if (isnan(d)) d = INFINITY;
        if (d > m) {
            m = d;
            if (worst) *worst = i;
        }
    }
    return m;
}

#endif
