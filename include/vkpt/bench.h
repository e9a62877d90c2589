/* vkpt benchmarks that need the engine's internals (kernel timing); the
 * `vkpt bench` command prints what these return. */
#ifndef VKPT_BENCH_H
#define VKPT_BENCH_H

#include "vkpt/device.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkpt_membench_result {
    uint64_t bytes;     /* buffer size used */
    int reps;           /* timed repetitions (best one reported) */
    double read_gbps;   /* bytes read per second / 1e9 by the read kernel */
    double copy_gbps;   /* (bytes read + bytes written) per second / 1e9 */
    double read_ms;     /* best time of one full read pass */
    double copy_ms;     /* best time of one full copy pass */
    bool copy_verified; /* the copied data was read back and matched */
} vkpt_membench_result;

/* Measure device-memory read and copy bandwidth with compute shaders over a
 * buffer of `bytes` (0 = a default sized for the device: 1 GiB, less when
 * the heap or the largest storage-buffer binding is smaller). */
int vkpt_bench_memory(vkpt_device *dev, uint64_t bytes, int reps, vkpt_membench_result *out);

#ifdef __cplusplus
}
#endif
#endif
