/* Scalar C references for every kernel family: written for clarity, not
 * speed; the oracle of the kernel tests. */
#ifndef VKPT_KERNELS_REF_H
#define VKPT_KERNELS_REF_H

#include <stddef.h>
#include <stdint.h>

void vkpt_ref_add_f32(const float *a, const float *b, float *out, size_t n);

#endif
