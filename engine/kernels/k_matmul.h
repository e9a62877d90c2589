/* Quantized-weight kernels: the matmul every projection runs (a matvec
 * kernel for decode, a tiled kernel for prefill), get_rows (embedding
 * lookup) and activation quantization for the integer-dot path, plus their
 * scalar C references (k_matmul_ref.c).
 *
 * Weights are GGUF tensors kept in their file format on the GPU: ne0 = K
 * elements per row (contiguous), ne1 = M rows, of type F32, F16, BF16, Q4_0,
 * Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K or Q6_K (K a multiple of the block
 * size). Activations and results are f32.
 *
 * Launchers only record dispatches into a vkpt_cmd, no barriers: the
 * caller orders them against producers and consumers with vkpt_cmd_barrier. A tensor larger than one descriptor binding
 * (caps.max_storage_buffer_range) or one dispatch (caps.max_wg_count) is
 * split into row (and token) chunks, one dispatch each, transparently.
 *
 * Buffers are vkpt_buf views; offsets into them may be any multiple of 4
 * bytes (the launcher binds an aligned range around them) except where
 * noted. Word reads may touch up to 3 bytes past the end of W, which must
 * still lie inside W's VkBuffer: true of every vkpt_buf_alloc allocation
 * (sizes are multiples of 256) and of tensors inside one. */
#ifndef VKPT_K_MATMUL_H
#define VKPT_K_MATMUL_H

#include "vk_int.h"
#include "pc.h"
#include "quant.h"

/* Which kernel runs. AUTO picks the best the device and build offer; the
 * others force one (tests, benchmarks) and fail with VKPT_EUNSUPPORTED when
 * it cannot run here. The matvec kernels take up to VKPT_MATVEC_MAX_TOK
 * tokens per dispatch (more run as several dispatches). */
enum vkpt_mm_path {
    VKPT_MM_AUTO = 0,
    VKPT_MM_MATVEC = 1,          /* matvec, shared-memory reduction: runs everywhere */
    VKPT_MM_MATVEC_SUBGROUP = 2, /* matvec, subgroupAdd reduction */
    VKPT_MM_MATVEC_INTDOT = 3,   /* matvec, packed int8 dots against q8 activations (xq) */
    VKPT_MM_MATMUL = 4,          /* tiled matmul, f32 shared-memory tiles: runs everywhere */
    VKPT_MM_MATMUL_COOPMAT = 5,  /* tiled matmul on KHR cooperative matrices (subgroup scope) */
    VKPT_MM_MATMUL_NV2 = 6,      /* tiled matmul on NV2 workgroup-scope matrices, tensor
                                  * layouts and decode functions */
    VKPT_MM_PATH_COUNT
};
/* "auto", "matvec", "matvec_subgroup", ...; "?" for others. */
const char *vkpt_mm_path_name(int path);

/* Token rows one matvec dispatch takes; AUTO runs matvec up to here. */
#define VKPT_MATVEC_MAX_TOK 8

typedef struct vkpt_mm_args {
    uint32_t wtype;    /* enum vkpt_qtype of W */
    vkpt_buf w;        /* W: M rows of K elements; Q4_K/Q5_K: offset a multiple of 16 */
    uint32_t K, M;     /* row length (elements), rows */
    uint32_t n_tok;    /* token rows of x and y, >= 1 */
    vkpt_buf x;        /* f32 [n_tok][K]; offset a multiple of 16 for quantized W */
    vkpt_buf xq;       /* optional (.buf NULL if none): x through vkpt_k_quantize_act
                        * with the same n_tok and K; offset a multiple of 16 */
    vkpt_buf y;        /* f32 [n_tok][y_stride]: elements [0, M) of each row written */
    uint32_t y_stride; /* elements between token rows of y, >= M; 0 means M */
    vkpt_buf bias;     /* optional (.buf NULL if none): f32 [M], added to every row */
    int path;          /* enum vkpt_mm_path, normally VKPT_MM_AUTO */
    /* tuning overrides for benchmarks and tests, 0 = the device's default:
     * matvec workgroup size (a power of two; not the intdot kernels, fixed
     * at 64) and rows per workgroup */
    uint32_t mv_wg, mv_rows;
} vkpt_mm_args;

/* y[t][m] = sum_k W[m][k] * x[t][k] (+ bias[m]) for t < n_tok, m < M.
 * Under AUTO, n_tok <= VKPT_MATVEC_MAX_TOK runs a matvec kernel (INTDOT when
 * xq is given and the device accelerates int8 dots, else SUBGROUP where
 * available), larger n_tok the tiled matmul (except on devices where the
 * per-vendor table says matvec in 8-token steps is faster: lavapipe); with
 * the device's coopmat opt-in (vkpt_device_opts.coopmat, VKPT_COOPMAT=1) the
 * NV2 matmul where the device has it, else the KHR one (both round W and x
 * to f16 and accumulate in f32; unverified on hardware). Results are f32-accumulated:
 * within a few K ulp of sum |w||x| of the exact value (INTDOT: of the exact
 * value with x replaced by its q8 rounding). Returns 0, VKPT_EINVAL (sizes,
 * alignment, a type vkpt does not run), VKPT_EUNSUPPORTED (a forced path
 * this device or build lacks), VKPT_ETOOBIG (one row exceeds a binding). */
int vkpt_k_matmul(vkpt_cmd *c, const vkpt_mm_args *a);

/* The path vkpt_k_matmul would take for these arguments (never AUTO), or a
 * negative error when none can run them. */
int vkpt_k_matmul_choose(const vkpt_device *dev, const vkpt_mm_args *a);

/* out[i][k] = dequant(W[ids[i]])[k] for i < n, k < K, f32, bit-identical to
 * vkpt_dequantize_row. ids: u32 [n] (device buffer, read by the GPU); ids
 * >= M give rows of zeros. out: f32 [n][K]. */
int vkpt_k_get_rows(vkpt_cmd *c, uint32_t wtype, const vkpt_buf *w, uint32_t K, uint32_t M,
                    const vkpt_buf *ids, uint32_t n, const vkpt_buf *out);

/* Bytes of the q8 activation buffer for n_tok rows of K (K % 32 == 0):
 * int8 [n_tok][K] (4 per word, element k of a row in byte k % 4 of word
 * k / 4), then f32 scales [n_tok][K / 32]. */
uint64_t vkpt_k_quantize_act_bytes(uint32_t n_tok, uint32_t K);
/* Quantize f32 x [n_tok][K] into xq for the INTDOT matvec: per 32 elements
 * d = amax * (1/127), q = round-half-even(x / d). Offsets of x and xq must
 * be multiples of 16. */
int vkpt_k_quantize_act(vkpt_cmd *c, const vkpt_buf *x, uint32_t n_tok, uint32_t K,
                        const vkpt_buf *xq);

/* ---- scalar references (k_matmul_ref.c) ------------------------------------- */

/* y[t * y_stride + m] = sum_k deq(W)[m][k] x[t][k] (+ bias[m]), accumulated
 * in double. w: M rows in wtype's layout. bias may be NULL. Returns 0 or
 * vkpt_dequantize_row's error. */
int vkpt_ref_matmul(uint32_t wtype, const void *w, uint32_t K, uint32_t M, const float *x,
                    uint32_t n_tok, float *y, uint32_t y_stride, const float *bias);
/* The activation quantization of vkpt_k_quantize_act on the host: q int8
 * [n][...], d one f32 per 32 elements; n % 32 == 0. */
void vkpt_ref_quantize_act(const float *x, size_t n, int8_t *q, float *d);
/* Like vkpt_ref_matmul with x given as q8 (q [n_tok][K], d [n_tok][K/32]):
 * the oracle of the INTDOT path. */
int vkpt_ref_matmul_q8(uint32_t wtype, const void *w, uint32_t K, uint32_t M, const int8_t *q,
                       const float *d, uint32_t n_tok, float *y, uint32_t y_stride,
                       const float *bias);

#endif
