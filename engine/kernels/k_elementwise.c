/* Elementwise kernels (shaders/add.comp, ...) and their C references. */
#include "kernels.h"
#include "kernels_ref.h"

int vkpt_k_add_f32(vkpt_cmd *c, const vkpt_buf *a, const vkpt_buf *b, const vkpt_buf *out,
                   uint32_t n)
{
    if (a->size < (uint64_t)n * 4 || b->size < (uint64_t)n * 4 || out->size < (uint64_t)n * 4)
        return vkpt_fail(VKPT_EINVAL, "add_f32: buffers smaller than %u elements", n);
    const vkpt_pipeline *p;
    vkpt_spec spec = {.v = {256}, .n = 1};
    int err = vkpt_pipeline_get(c->dev, VKPT_V_add_f32, &spec, &p);
    if (err) return err;
    vkpt_pc_binary pc = {.n = n};
    vkpt_buf bufs[3] = {*a, *b, *out};
    vkpt_cmd_dispatch(c, p, bufs, 3, &pc, sizeof pc, n, 1, 1);
    return 0;
}

void vkpt_ref_add_f32(const float *a, const float *b, float *out, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}
