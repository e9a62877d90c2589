/* engine/kernels: one host-side launcher per shader family. A launcher picks
 * the variant and specialization for the device (from its caps), fills the
 * push constants and records the dispatch into a vkpt_cmd; it never submits
 * or waits. Each family has a scalar C reference in kernels_ref.h, the oracle
 * its test compares against.
 *
 * Launchers return 0 or a negative VKPT_E* (a variant this device cannot run,
 * an argument out of range). Buffers are views; sizes are element counts. */
#ifndef VKPT_KERNELS_H
#define VKPT_KERNELS_H

#include "vk_int.h"
#include "pc.h"

/* out[i] = a[i] + b[i], i < n (f32). */
int vkpt_k_add_f32(vkpt_cmd *c, const vkpt_buf *a, const vkpt_buf *b, const vkpt_buf *out,
                   uint32_t n);

#endif
