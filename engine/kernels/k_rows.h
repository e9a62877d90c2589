/* Row views shared by the norm, rope, activation, attention and logits
 * launchers: a matrix of f32 rows inside a device buffer, addressed by an
 * element offset and a row stride, so a launcher can read or write a slice
 * of a bigger buffer (q inside a fused qkv output, the up half of a fused
 * gate/up output) without a storage-offset-aligned vkpt_buf_view. */
#ifndef VKPT_K_ROWS_H
#define VKPT_K_ROWS_H

#include "kernels.h"

#include <stdbool.h>

/* Element (r, i) of the view is buf's f32 element off + r*stride + i. */
typedef struct vkpt_rows {
    vkpt_buf buf;
    uint32_t off;    /* elements */
    uint32_t stride; /* elements between consecutive rows */
} vkpt_rows;

/* A view of rows of `stride` elements starting at element `off` of b. */
static inline vkpt_rows vkpt_rows_of(const vkpt_buf *b, uint32_t off, uint32_t stride)
{
    vkpt_rows r = {*b, off, stride};
    return r;
}

/* True when rows 0..n_rows-1 of row_len elements lie inside the buffer and
 * every element index fits in 32 bits (the shaders index with uint). */
static inline bool vkpt__rows_fit(const vkpt_rows *v, uint32_t n_rows, uint64_t row_len)
{
    if (!v || !v->buf.buf) return false;
    if (!n_rows || !row_len) return true;
    uint64_t end = (uint64_t)v->off + (uint64_t)(n_rows - 1) * v->stride + row_len;
    return end <= v->buf.size / 4 && end <= UINT32_MAX;
}

/* Element count for a grid-strided 1-D dispatch of `total` items with
 * workgroups of `wg`: all of them, or as many workgroups as the device
 * allows along x (the shader loops over the rest). */
static inline uint32_t vkpt__grid_elems(const vkpt_device *dev, uint64_t total, uint32_t wg)
{
    uint64_t max_groups = dev->caps.max_wg_count[0] < 65535u ? dev->caps.max_wg_count[0] : 65535u;
    uint64_t groups = (total + wg - 1) / wg;
    if (groups > max_groups) groups = max_groups;
    return (uint32_t)(groups * wg);
}

/* Workgroups for one-row-per-workgroup kernels (rows grid-strided). */
static inline uint32_t vkpt__grid_rows(const vkpt_device *dev, uint64_t rows)
{
    uint64_t max_groups = dev->caps.max_wg_count[0] < 65535u ? dev->caps.max_wg_count[0] : 65535u;
    return (uint32_t)(rows < max_groups ? rows : max_groups);
}

#endif
