/* Binding ranges for launchers whose tensors may exceed one binding (the
 * quantized-weight kernels, the MoE kernels). Every binding starts at an
 * offset aligned to max(minStorageBufferOffsetAlignment, 16) and spans at
 * most k_bind_max bytes; the distance from that start to the data goes in
 * the push constants, so callers' views need only 4-byte alignment. */
#ifndef VKPT_K_BIND_H
#define VKPT_K_BIND_H

#include "vk_int.h"

static inline uint64_t k_bind_align(const vkpt_device *dev)
{
    uint64_t a = dev->caps.min_storage_offset_align;
    return a < 16 ? 16 : a;
}

/* Largest range a launcher binds: the device's limit less the slack of
 * aligning the start down, kept below 4 GiB so byte offsets fit a u32. */
static inline uint64_t k_bind_max(const vkpt_device *dev)
{
    uint64_t r = dev->caps.max_storage_buffer_range;
    if (r > 0xFFFFFFFFull) r = 0xFFFFFFFFull;
    uint64_t slack = k_bind_align(dev) + 16;
    return r > slack ? (r - slack) & ~15ull : 0;
}

/* A binding covering bytes [off, off + n) of b: starts at an aligned offset
 * at or before it (*delta bytes before) and is rounded up to whole words. */
static inline vkpt_buf k_bind_range(const vkpt_device *dev, const vkpt_buf *b, uint64_t off,
                                    uint64_t n, uint32_t *delta)
{
    uint64_t a = k_bind_align(dev), abs = b->off + off, base = abs / a * a;
    vkpt_buf v = *b;
    v.off = base;
    v.size = vkpt_align_up(abs - base + (n ? n : 4), 4);
    v.map = NULL;
    v.block = -1;
    *delta = (uint32_t)(abs - base);
    return v;
}

/* `b` is a buffer of at least `need` bytes at a 4-byte offset. */
static inline int k_check_buf(const char *what, const vkpt_buf *b, uint64_t need)
{
    if (!b->buf) return vkpt_fail(VKPT_EINVAL, "%s: no buffer", what);
    if (b->size < need)
        return vkpt_fail(VKPT_EINVAL, "%s: %llu bytes, needs %llu", what,
                         (unsigned long long)b->size, (unsigned long long)need);
    if (b->off % 4) return vkpt_fail(VKPT_EINVAL, "%s: offset not a multiple of 4", what);
    return 0;
}

#endif
