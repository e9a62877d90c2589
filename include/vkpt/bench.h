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

/* ---- quantized-weight kernels (engine/kernels/k_bench.c) ---- */

typedef struct vkpt_kbench_opts {
    const char *filter; /* run rows whose name contains this, NULL = all */
    uint32_t K, M;      /* weight shape (K a multiple of 256); 0 = device default:
                         * 4096 x 14336 on GPUs, 2048 x 2048 on CPU devices */
    uint32_t n_tok;     /* tokens of the matmul and get_rows rows; 0 = 512 (CPU: 32) */
    int reps;           /* timed repetitions, best reported; 0 = 3 */
} vkpt_kbench_opts;

typedef struct vkpt_kbench_row {
    char name[48]; /* "<op>/<type>/<path>", e.g. "matvec/q4_k/matvec_subgroup" */
    uint32_t K, M, n_tok;
    double us;     /* best time of one call, microseconds */
    double gbps;   /* bytes the kernel must move (weights, activations, output) / s / 1e9 */
    double gflops; /* 2 K M n_tok / s / 1e9 (0 for get_rows) */
    double check;  /* worst |gpu - reference| / sum|w||x| over sampled outputs */
    bool ok;       /* check within the kernels' documented bound */
} vkpt_kbench_row;

/* Time matvec (1 token; every path the device has: matvec,
 * matvec_subgroup, matvec_intdot), the tiled matmul (n_tok tokens), get_rows,
 * activation quantization and the expert matmuls (moe_matvec: 1 token routed
 * to 2 of 8 experts of M/4 rows, reading only those two; moe_prefill: n_tok
 * tokens), for each weight format, on random weights quantized by the
 * reference quantizer. `cb` gets each row as it completes.
 * Returns 0 or the first error (VKPT_EDEVMEM when the shape does not fit). */
int vkpt_bench_kernels(vkpt_device *dev, const vkpt_kbench_opts *opts,
                       void (*cb)(const vkpt_kbench_row *row, void *ud), void *ud);

#ifdef __cplusplus
}
#endif
#endif
