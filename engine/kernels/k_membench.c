/* Memory-bandwidth benchmark (shaders/membench.comp): the ceiling that
 * decode speed is measured against. Times whole command buffers of several
 * passes on the host clock and reports the best repetition. */
#include "kernels.h"
#include "vkpt/bench.h"

#include <string.h>

#define PASSES 8

static int time_passes(vkpt_device *dev, vkpt_cmd *c, const vkpt_pipeline *p, vkpt_buf *src,
                       vkpt_buf *dst, uint32_t n4, bool barrier, double *best_ms, int reps)
{
    vkpt_pc_membench pc = {.n4 = n4, .magic = -1.2345e-30f};
    vkpt_buf bufs[2] = {*src, *dst};
    /* ~16 vec4 per invocation: enough in flight, few loop trips */
    uint32_t threads = n4 / 16 < 256 ? 256 : n4 / 16;
    *best_ms = 1e30;
    for (int r = 0; r < reps + 1; r++) { /* first one warms up */
        int err = vkpt_cmd_begin(c);
        if (err) return err;
        for (int i = 0; i < PASSES; i++) {
            vkpt_cmd_dispatch(c, p, bufs, 2, &pc, sizeof pc, threads, 1, 1);
            if (barrier) vkpt_cmd_barrier(c);
        }
        uint64_t t0 = vkpt_now_ns();
        if ((err = vkpt_cmd_run(c))) return err;
        double ms = (vkpt_now_ns() - t0) / 1e6 / PASSES;
        if (r > 0 && ms < *best_ms) *best_ms = ms;
    }
    (void)dev;
    return 0;
}

int vkpt_bench_memory(vkpt_device *dev, uint64_t bytes, int reps, vkpt_membench_result *out)
{
    if (!dev || !out) return vkpt_fail(VKPT_EINVAL, "vkpt_bench_memory: NULL");
    memset(out, 0, sizeof *out);
    const vkpt_device_caps *caps = &dev->caps;
    if (!bytes) {
        bytes = 1ull << 30;
        uint64_t heap = 0;
        for (uint32_t i = 0; i < caps->n_heaps; i++)
            if (caps->heaps[i].device_local && caps->heaps[i].size > heap)
                heap = caps->heaps[i].size;
        if (heap && bytes > heap / 8) bytes = heap / 8;
    }
    if (bytes > caps->max_storage_buffer_range) bytes = caps->max_storage_buffer_range;
    bytes &= ~(uint64_t)4095;
    if (bytes < 4096 || bytes / 16 > UINT32_MAX)
        return vkpt_fail(VKPT_ERANGE, "memory bench size %llu bytes is out of range",
                         (unsigned long long)bytes);
    if (reps < 1) reps = 5;
    uint32_t n4 = (uint32_t)(bytes / 16);

    vkpt_buf src = {.block = -1}, dst = {.block = -1};
    vkpt_cmd c;
    memset(&c, 0, sizeof c);
    const vkpt_pipeline *pread, *pcopy;
    vkpt_spec spec = {.v = {256}, .n = 1};
    int err = vkpt_pipeline_get(dev, VKPT_V_membench_read, &spec, &pread);
    if (!err) err = vkpt_pipeline_get(dev, VKPT_V_membench_copy, &spec, &pcopy);
    if (!err) err = vkpt_buf_alloc(dev, bytes, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &src);
    if (!err) err = vkpt_buf_alloc(dev, bytes, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &dst);
    if (!err) err = vkpt_cmd_init(dev, 0, &c);
    if (err) goto done;
    vkpt_buf s = vkpt_buf_view(&src, 0, bytes), d = vkpt_buf_view(&dst, 0, bytes);

    /* a recognisable pattern to check the copy with */
    if ((err = vkpt_cmd_begin(&c))) goto done;
    vkpt_cmd_fill(&c, &s, 0x3f800000u); /* 1.0f */
    vkpt_cmd_fill(&c, &d, 0);
    if ((err = vkpt_cmd_run(&c))) goto done;

    if ((err = time_passes(dev, &c, pread, &s, &d, n4, false, &out->read_ms, reps))) goto done;
    if ((err = time_passes(dev, &c, pcopy, &s, &d, n4, true, &out->copy_ms, reps))) goto done;
    out->bytes = bytes;
    out->reps = reps;
    out->read_gbps = bytes / (out->read_ms * 1e6);
    out->copy_gbps = 2.0 * bytes / (out->copy_ms * 1e6);

    float probe[4] = {0};
    uint64_t offs[3] = {0, bytes / 2, bytes - 16};
    out->copy_verified = true;
    for (int i = 0; i < 3 && !err; i++) {
        err = vkpt_buf_download(dev, &d, offs[i], probe, sizeof probe);
        for (int k = 0; k < 4; k++)
            if (probe[k] != 1.0f) out->copy_verified = false;
    }
done:
    vkpt_cmd_free(&c);
    vkpt_buf_free(dev, &src);
    vkpt_buf_free(dev, &dst);
    return err;
}
