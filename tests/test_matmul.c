/* engine/kernels/k_matmul.c on the GPU against the C references: get_rows
 * bit for bit, matvec on every path the device has (portable, subgroup,
 * int8 dot), the tiled matmul, the cooperative-matrix matmuls (KHR and
 * VK_NV_cooperative_matrix2, where the device has them; each missing one is
 * reported skipped), activation quantization, output slices with
 * bias, and the splitting of tensors larger than one binding. Shapes are
 * deliberately not multiples of any workgroup or tile size.
 *
 * Error bound of the f32-accumulated products, per output y[t][m]:
 *   |y - ref| <= 4 K eps * sum_k |w_mk| |x_tk| + tiny,   eps = 2^-24.
 * A sum of K products in any order is off by at most (K - 1) eps times the
 * sum of magnitudes; the kernels also factor each 16-element segment as
 * scale * sum(q x) + offset * sum(x), whose two terms can each reach a few
 * times |w| before they cancel (K-quant mins): hence the factor 4. The
 * reference accumulates in double. For K = 768 the bound is 1.8e-4 of the
 * magnitude sum, while one wrong weight moves y by ~1/K = 1.3e-3 of it. */
#include "vk_fixture.h"
#include "k_matmul.h"
#include "gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint32_t k_types[] = {VKPT_Q_F32,  VKPT_Q_F16,  VKPT_Q_BF16, VKPT_Q_Q4_0,
                                   VKPT_Q_Q4_1, VKPT_Q_Q5_0, VKPT_Q_Q5_1, VKPT_Q_Q8_0,
                                   VKPT_Q_Q4_K, VKPT_Q_Q5_K, VKPT_Q_Q6_K};
#define N_TYPES (sizeof k_types / sizeof k_types[0])
static const uint32_t k_rows[] = {1, 7, 33, 100, 257};

static const char *tname(uint32_t t)
{
    return vkpt_qtype_get(t)->name;
}

static bool is_quant(uint32_t t)
{
    return vkpt_qtype_get(t)->block_elems > 1;
}

/* K for a type: 3 super-blocks, 5 legacy blocks; an odd length for the
 * plain types (element-wise path) unless `aligned`. */
static uint32_t test_k(uint32_t t, bool aligned)
{
    uint32_t be = vkpt_qtype_get(t)->block_elems;
    if (be == 256) return 256 * 3;
    if (be == 32) return 32 * 5;
    return aligned ? 200 : 173;
}

/* ---- host/device helpers ------------------------------------------------------- */

typedef struct mat {
    uint32_t type, K, M;
    uint8_t *q;   /* quantized rows */
    float *deq;   /* dequantized rows (what the GPU must multiply by) */
    vkpt_buf buf; /* q on the device */
} mat;

static vkpt_buf dev_buf(vkpt_device *dev, uint64_t bytes)
{
    vkpt_buf b;
    assert_int_equal(vkpt_buf_alloc(dev, bytes ? bytes : 4, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b),
                     0);
    return b;
}

static vkpt_buf upload(vkpt_device *dev, const void *p, uint64_t bytes)
{
    vkpt_buf b = dev_buf(dev, bytes);
    assert_int_equal(vkpt_buf_upload(dev, &b, 0, p, bytes), 0);
    return b;
}

/* Weights ~ N(0, 0.5) with the occasional f16-subnormal value (below
 * 6.1e-5) so the F16 conversion is checked there too; from `src` when
 * given (real model values, recycled). */
static void mat_make(vkpt_device *dev, vkpt_test_rng *r, uint32_t type, uint32_t K, uint32_t M,
                     const float *src, size_t n_src, mat *m)
{
    size_t n = (size_t)K * M;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        x[i] = src ? src[i % n_src] : 0.5f * vkpt_test_rng_normal(r);
        if (!src && vkpt_test_rng_u64(r) % 97 == 0) x[i] *= 1e-5f;
    }
    m->type = type;
    m->K = K;
    m->M = M;
    uint64_t rb = vkpt_qtype_row_bytes(type, K);
    m->q = malloc(rb * M);
    m->deq = malloc(n * sizeof *m->deq);
    for (uint32_t i = 0; i < M; i++)
        assert_int_equal(vkpt_quantize_row(type, x + (size_t)i * K, m->q + i * rb, K), 0);
    for (uint32_t i = 0; i < M; i++)
        assert_int_equal(vkpt_dequantize_row(type, m->q + i * rb, m->deq + (size_t)i * K, K), 0);
    m->buf = upload(dev, m->q, rb * M);
    free(x);
}

static void mat_free(vkpt_device *dev, mat *m)
{
    vkpt_buf_free(dev, &m->buf);
    free(m->q);
    free(m->deq);
}

static float *rand_x(vkpt_test_rng *r, size_t n)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = vkpt_test_rng_normal(r);
    return x;
}

/* Checks got against want (both [n_tok][stride], M used columns) with the
 * bound above; x is what the weights were multiplied with. */
static void check_products(const char *what, const mat *m, const float *x, uint32_t n_tok,
                           const float *got, const float *want, uint32_t stride, double c)
{
    for (uint32_t t = 0; t < n_tok; t++) {
        for (uint32_t i = 0; i < m->M; i++) {
            double mag = 0;
            for (uint32_t k = 0; k < m->K; k++)
                mag += fabs((double)m->deq[(size_t)i * m->K + k] * x[(size_t)t * m->K + k]);
            double err = fabs((double)got[(size_t)t * stride + i] - want[(size_t)t * stride + i]);
            double lim = c * m->K * 0x1p-24 * mag + 1e-30;
            if (!(err <= lim))
                fail_msg("%s %s K %u M %u n_tok %u: y[%u][%u] = %.9g, want %.9g (err %.3g > %.3g)",
                         what, tname(m->type), m->K, m->M, n_tok, t, i, got[t * stride + i],
                         want[t * stride + i], err, lim);
        }
    }
}

/* The cooperative-matrix matmuls (KHR, NV2) multiply f16 copies of the
 * dequantized weights and of the activations. */
static bool rounds_to_f16(int path)
{
    return path == VKPT_MM_MATMUL_COOPMAT || path == VKPT_MM_MATMUL_NV2;
}

/* The reference for a run that took `path` (resolved, not AUTO) into want
 * ([n_tok][stride]), then the check of got against it. For the f16 paths
 * the reference takes the same f16-rounded inputs (x is rounded in place),
 * so only the f32 accumulation differs and the same bound holds. */
static void ref_and_check(const char *what, int path, const mat *m, float *x, uint32_t n_tok,
                          const float *got, float *want, uint32_t stride, const float *bias)
{
    uint32_t K = m->K, M = m->M;
    if (!rounds_to_f16(path)) {
        assert_int_equal(vkpt_ref_matmul(m->type, m->q, K, M, x, n_tok, want, stride, bias), 0);
        check_products(what, m, x, n_tok, got, want, stride, 4);
        return;
    }
    mat h = *m; /* the f16-rounded problem, as F32 */
    h.type = VKPT_Q_F32;
    h.deq = malloc((size_t)K * M * 4);
    for (size_t i = 0; i < (size_t)K * M; i++)
        h.deq[i] = vkpt_f16_to_f32(vkpt_f32_to_f16(m->deq[i]));
    for (size_t i = 0; i < (size_t)n_tok * K; i++) x[i] = vkpt_f16_to_f32(vkpt_f32_to_f16(x[i]));
    assert_int_equal(vkpt_ref_matmul(VKPT_Q_F32, h.deq, K, M, x, n_tok, want, stride, bias), 0);
    check_products(what, &h, x, n_tok, got, want, stride, 4);
    free(h.deq);
}

/* Run y = W x (+bias) on `path` (matvec tuning wg/rows, 0 = default) and
 * compare with the reference. */
static void run_tuned(vkpt_device *dev, vkpt_cmd *c, const mat *m, uint32_t n_tok, int path,
                      vkpt_test_rng *r, bool with_bias, uint32_t wg, uint32_t rows)
{
    uint32_t K = m->K, M = m->M;
    float *x = rand_x(r, (size_t)n_tok * K);
    float *bias = with_bias ? rand_x(r, M) : NULL;
    float *got = malloc((size_t)n_tok * M * 4), *want = malloc((size_t)n_tok * M * 4);
    vkpt_buf bx = upload(dev, x, (uint64_t)n_tok * K * 4),
             by = dev_buf(dev, (uint64_t)n_tok * M * 4);
    vkpt_buf bb = {.block = -1};
    if (bias) bb = upload(dev, bias, M * 4ull);
    vkpt_mm_args a = {.wtype = m->type,
                      .w = m->buf,
                      .K = K,
                      .M = M,
                      .n_tok = n_tok,
                      .x = bx,
                      .y = by,
                      .bias = bb,
                      .path = path,
                      .mv_wg = wg,
                      .mv_rows = rows};
    int took = vkpt_k_matmul_choose(dev, &a); /* AUTO may take an f16 path (VKPT_COOPMAT=1) */
    assert_int_equal(vkpt_cmd_begin(c), 0);
    int err = vkpt_k_matmul(c, &a);
    if (err) fail_msg("%s %s: %s", vkpt_mm_path_name(path), tname(m->type), vkpt_errmsg(err));
    assert_int_equal(vkpt_cmd_run(c), 0);
    assert_int_equal(vkpt_buf_download(dev, &by, 0, got, (uint64_t)n_tok * M * 4), 0);
    ref_and_check(vkpt_mm_path_name(took), took, m, x, n_tok, got, want, M, bias);
    vkpt_buf_free(dev, &bx);
    vkpt_buf_free(dev, &by);
    vkpt_buf_free(dev, &bb);
    free(x), free(bias), free(got), free(want);
}

static void run_case(vkpt_device *dev, vkpt_cmd *c, const mat *m, uint32_t n_tok, int path,
                     vkpt_test_rng *r, bool with_bias)
{
    run_tuned(dev, c, m, n_tok, path, r, with_bias, 0, 0);
}

/* ---- tests ---------------------------------------------------------------------------- */

static void get_rows_case(vkpt_device *dev, vkpt_cmd *c, const mat *m, const uint32_t *ids,
                          uint32_t n)
{
    uint32_t K = m->K;
    vkpt_buf bi = upload(dev, ids, n * 4ull), bo = dev_buf(dev, (uint64_t)n * K * 4);
    float *got = malloc((size_t)n * K * 4);
    assert_int_equal(vkpt_cmd_begin(c), 0);
    assert_int_equal(vkpt_k_get_rows(c, m->type, &m->buf, K, m->M, &bi, n, &bo), 0);
    assert_int_equal(vkpt_cmd_run(c), 0);
    assert_int_equal(vkpt_buf_download(dev, &bo, 0, got, (uint64_t)n * K * 4), 0);
    for (uint32_t i = 0; i < n; i++) {
        const float *row = got + (size_t)i * K;
        if (ids[i] >= m->M) {
            for (uint32_t k = 0; k < K; k++) assert_true(row[k] == 0.0f);
            continue;
        }
        /* the dequantization is the same f32 expressions, unfused: exact */
        if (memcmp(row, m->deq + (size_t)ids[i] * K, K * 4)) {
            uint32_t k = 0, bits;
            while (row[k] == m->deq[(size_t)ids[i] * K + k]) k++;
            memcpy(&bits, &row[k], 4);
            fail_msg("get_rows %s K %u: row %u elem %u = %.9g (0x%08x), want %.9g", tname(m->type),
                     K, ids[i], k, row[k], bits, m->deq[(size_t)ids[i] * K + k]);
        }
    }
    vkpt_buf_free(dev, &bi);
    vkpt_buf_free(dev, &bo);
    free(got);
}

static void matmul_get_rows_is_bit_exact_for_every_format(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 21);
    /* repeats, the first and last row, and ids past the end (zeros) */
    static const uint32_t ids[] = {0, 36, 5, 5, 17, 40, 1, 0xFFFFFFFFu, 36};
    for (size_t t = 0; t < N_TYPES; t++) {
        for (int al = 0; al < (is_quant(k_types[t]) ? 1 : 2); al++) {
            mat m;
            mat_make(dev, &r, k_types[t], test_k(k_types[t], al), 37, NULL, 0, &m);
            get_rows_case(dev, &c, &m, ids, sizeof ids / sizeof ids[0]);
            mat_free(dev, &m);
        }
    }
    vkpt_cmd_free(&c);
}

static void matmul_matvec_matches_reference_on_every_path(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 22);
    static const int paths[] = {VKPT_MM_MATVEC, VKPT_MM_MATVEC_SUBGROUP};
    int ran_subgroup = 0;
    for (size_t t = 0; t < N_TYPES; t++) {
        for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
            if (paths[p] == VKPT_MM_MATVEC_SUBGROUP && !dev->caps.subgroup_arith) continue;
            ran_subgroup += paths[p] == VKPT_MM_MATVEC_SUBGROUP;
            for (uint32_t nt = 1; nt <= VKPT_MATVEC_MAX_TOK; nt++) {
                mat m;
                uint32_t M = k_rows[(nt + t + p) % 5];
                bool aligned = !is_quant(k_types[t]) && nt % 2;
                mat_make(dev, &r, k_types[t], test_k(k_types[t], aligned), M, NULL, 0, &m);
                /* even token counts: 3 rows per workgroup of 64 (the
                 * defaults vary by vendor; lavapipe's is 1 row) */
                uint32_t rows = nt % 2 ? 0 : 3, wg = nt % 2 ? 0 : 64;
                run_tuned(dev, &c, &m, nt, paths[p], &r, nt % 3 == 0, wg, rows);
                mat_free(dev, &m);
            }
        }
    }
    /* lavapipe has subgroups of 8 with arithmetic: CI runs that path */
    if (dev->caps.subgroup_arith) assert_true(ran_subgroup > 0);
    vkpt_cmd_free(&c);
}

static void matmul_tiled_matches_reference(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 23);
    static const uint32_t toks[] = {1, 17, 64, 130};
    for (size_t t = 0; t < N_TYPES; t++) {
        for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
            mat m;
            uint32_t M = k_rows[(i + t) % 5 == 0 ? 2 : (i + t) % 5];
            mat_make(dev, &r, k_types[t], test_k(k_types[t], i % 2), M, NULL, 0, &m);
            run_case(dev, &c, &m, toks[i], VKPT_MM_MATMUL, &r, i == 2);
            mat_free(dev, &m);
        }
    }
    vkpt_cmd_free(&c);
}

/* The cooperative-matrix matmuls (KHR subgroup-scope, NV2 workgroup-scope)
 * multiply f16 copies of the dequantized weights and the activations: their
 * reference takes the same f16-rounded inputs, so only the f32 accumulation
 * differs (the bound above). The output is a column slice [col, col + M) of
 * rows `width` wide, as a fused QKV projection writes it; the columns
 * around it must keep their sentinel. Runs only where the device has the
 * matrices (never on lavapipe). */
static void coopmat_case(vkpt_device *dev, vkpt_cmd *c, const mat *m, uint32_t n_tok, int path,
                         uint32_t col, uint32_t width, vkpt_test_rng *r)
{
    uint32_t K = m->K, M = m->M;
    size_t ny = (size_t)n_tok * width;
    float *x = rand_x(r, (size_t)n_tok * K), *bias = rand_x(r, M);
    float *got = malloc(ny * 4), *want = malloc(ny * 4);
    for (size_t i = 0; i < ny; i++) got[i] = want[i] = -777.0f;
    vkpt_buf bx = upload(dev, x, (uint64_t)n_tok * K * 4), by = upload(dev, got, ny * 4);
    vkpt_buf bb = upload(dev, bias, M * 4ull);
    vkpt_mm_args a = {.wtype = m->type,
                      .w = m->buf,
                      .K = K,
                      .M = M,
                      .n_tok = n_tok,
                      .x = bx,
                      .y = vkpt_buf_view(&by, col * 4ull, ((uint64_t)(n_tok - 1) * width + M) * 4),
                      .y_stride = width,
                      .bias = bb,
                      .path = path};
    assert_int_equal(vkpt_cmd_begin(c), 0);
    int err = vkpt_k_matmul(c, &a);
    if (err) fail_msg("%s %s: %s", vkpt_mm_path_name(path), tname(m->type), vkpt_errmsg(err));
    assert_int_equal(vkpt_cmd_run(c), 0);
    assert_int_equal(vkpt_buf_download(dev, &by, 0, got, ny * 4), 0);
    for (uint32_t t = 0; t < n_tok; t++)
        for (uint32_t j = 0; j < width; j++)
            if ((j < col || j >= col + M) && got[(size_t)t * width + j] != -777.0f)
                fail_msg("%s %s: y[%u][%u] outside the slice [%u, %u) was written",
                         vkpt_mm_path_name(path), tname(m->type), t, j, col, col + M);
    ref_and_check(vkpt_mm_path_name(path), path, m, x, n_tok, got + col, want + col, width, bias);
    vkpt_buf_free(dev, &bx);
    vkpt_buf_free(dev, &by);
    vkpt_buf_free(dev, &bb);
    free(x), free(bias), free(got), free(want);
}

/* Every cooperative-matrix path the device has, against the reference;
 * each path the device lacks says so in the output, and the test is
 * reported skipped when it has none. */
static void matmul_coopmat_matches_reference_where_available(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    static const int paths[] = {VKPT_MM_MATMUL_COOPMAT, VKPT_MM_MATMUL_NV2};
    static const uint32_t toks[] = {1, 17, 64, 130, 300};
    /* output slices: {column, extra width}; 1 and 3 put y off 16-byte alignment */
    static const uint32_t slices[][2] = {{0, 0}, {3, 5}, {1, 1}, {0, 7}, {2, 2}};
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 31);
    int ran = 0;
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
        vkpt_mm_args probe = {.wtype = VKPT_Q_Q4_K, .n_tok = 64, .path = paths[p]};
        if (vkpt_k_matmul_choose(dev, &probe) != paths[p]) {
            fprintf(stderr, "# %s: not available on %s (%s): skipped\n",
                    vkpt_mm_path_name(paths[p]), dev->caps.name,
                    paths[p] == VKPT_MM_MATMUL_NV2 ? "needs VK_NV_cooperative_matrix2"
                                                   : "needs VK_KHR_cooperative_matrix");
            continue;
        }
        fprintf(stderr, "# %s: running on %s\n", vkpt_mm_path_name(paths[p]), dev->caps.name);
        ran++;
        for (size_t t = 0; t < N_TYPES; t++) {
            for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++) {
                mat m;
                uint32_t M = k_rows[(i + t) % 5];
                mat_make(dev, &r, k_types[t], test_k(k_types[t], i % 2), M, NULL, 0, &m);
                const uint32_t *sl = slices[(i + t) % 5];
                coopmat_case(dev, &c, &m, toks[i], paths[p], sl[0], sl[0] + M + sl[1], &r);
                mat_free(dev, &m);
            }
        }
    }
    vkpt_cmd_free(&c);
    if (!ran) skip();
}

/* Which matmul AUTO picks on a device with NV2: the NV2 kernel only with
 * the coopmat opt-in, only with a workgroup-scope f16 -> f32 configuration
 * whose granularity fits its tiles; plans only (lavapipe's caps are
 * dressed up as an NVIDIA GPU's here, nothing is run). */
static void matmul_nv2_chosen_only_with_caps_and_opt_in(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_device_caps saved = dev->caps;
    bool saved_auto = dev->coopmat_auto;
    vkpt_mm_args a = {.wtype = VKPT_Q_Q4_K, .K = 512, .M = 300, .n_tok = 64};
    a.path = VKPT_MM_MATMUL_NV2;
    if (!dev->caps.coopmat_nv2) assert_int_equal(vkpt_k_matmul_choose(dev, &a), VKPT_EUNSUPPORTED);
    bool compiled = vkpt_variants[VKPT_V_matmul_q4k_f32_nv2].spv != NULL;
    dev->caps.vendor_id = 0x10de; /* NVIDIA's tuning: the tiled matmul from 9 tokens */
    dev->caps.type = VKPT_DEVICE_DISCRETE;
    dev->caps.coopmat_khr = dev->caps.coopmat_nv2 = dev->caps.fp16 = true;
    dev->caps.maintenance4 = dev->caps.vulkan_memory_model = true;
    dev->caps.n_coopmat_shapes = 0;
    dev->caps.coopmat2_max_wg_size = 256;
    dev->caps.max_wg_invocations = 1024;
    dev->caps.max_wg_size[0] = 1024;
    dev->caps.n_coopmat_flex = 1;
    dev->caps.coopmat_flex[0] =
        (vkpt_coopmat_flex){16, 16, 16, VKPT_CT_F16, VKPT_CT_F16, VKPT_CT_F32, VKPT_CT_F32, 2, 256};
    int nv2 = compiled ? VKPT_MM_MATMUL_NV2 : VKPT_EUNSUPPORTED;
    assert_int_equal(vkpt_k_matmul_choose(dev, &a), nv2); /* forced: no opt-in needed */
    a.path = VKPT_MM_AUTO;
    dev->coopmat_auto = false;
    assert_int_equal(vkpt_k_matmul_choose(dev, &a), VKPT_MM_MATMUL);
    dev->coopmat_auto = true;
    assert_int_equal(vkpt_k_matmul_choose(dev, &a), compiled ? VKPT_MM_MATMUL_NV2 : VKPT_MM_MATMUL);
    a.n_tok = 4; /* decode stays on matvec */
    int mv = dev->caps.subgroup_arith ? VKPT_MM_MATVEC_SUBGROUP : VKPT_MM_MATVEC;
    assert_int_equal(vkpt_k_matmul_choose(dev, &a), mv);
    a.n_tok = 64;
    dev->caps.coopmat_flex[0].m_gran = 48; /* does not divide the tiles */
    assert_int_equal(vkpt_k_matmul_choose(dev, &a), VKPT_MM_MATMUL);
    dev->caps.coopmat_flex[0].m_gran = 16;
    dev->caps.coopmat_flex[0].c = dev->caps.coopmat_flex[0].result = VKPT_CT_F16; /* f16 sums */
    assert_int_equal(vkpt_k_matmul_choose(dev, &a), VKPT_MM_MATMUL);
    dev->caps.coopmat_flex[0].c = dev->caps.coopmat_flex[0].result = VKPT_CT_F32;
    dev->caps.maintenance4 = false; /* its workgroup size is a specialization constant */
    assert_int_equal(vkpt_k_matmul_choose(dev, &a), VKPT_MM_MATMUL);
    dev->caps.maintenance4 = true;
    dev->caps.coopmat_nv2 = false;
    assert_int_equal(vkpt_k_matmul_choose(dev, &a), VKPT_MM_MATMUL);
    dev->caps = saved;
    dev->coopmat_auto = saved_auto;
}

static void matmul_auto_runs_prefill_and_decode(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 24);
    mat m;
    mat_make(dev, &r, VKPT_Q_Q4_K, 512, 45, NULL, 0, &m);
    vkpt_mm_args a = {.wtype = VKPT_Q_Q4_K, .K = 512, .M = 45, .n_tok = 1};
    int want_mv = dev->caps.subgroup_arith ? VKPT_MM_MATVEC_SUBGROUP : VKPT_MM_MATVEC;
    assert_int_equal(vkpt_k_matmul_choose(dev, &a), want_mv);
    a.n_tok = 9;
    /* prefill: the tiled matmul, except on lavapipe where the vendor table
     * keeps matvec (8 tokens per dispatch), which is faster there; with the
     * coopmat opt-in (VKPT_COOPMAT=1), NV2's or KHR's where the device has them */
    bool lavapipe = dev->caps.vendor_id == 0x10005 && dev->caps.type == VKPT_DEVICE_CPU;
    int want_mm = VKPT_MM_MATMUL;
    static const int cm_paths[] = {VKPT_MM_MATMUL_NV2, VKPT_MM_MATMUL_COOPMAT};
    for (int i = 1; i >= 0; i--) {
        vkpt_mm_args probe = a;
        probe.path = cm_paths[i];
        if (dev->coopmat_auto && vkpt_k_matmul_choose(dev, &probe) == cm_paths[i])
            want_mm = cm_paths[i];
    }
    assert_int_equal(vkpt_k_matmul_choose(dev, &a), lavapipe ? want_mv : want_mm);
    run_case(dev, &c, &m, 1, VKPT_MM_AUTO, &r, false);
    run_case(dev, &c, &m, 9, VKPT_MM_AUTO, &r, true);
    /* forced matvec over more than 8 tokens runs 8 at a time */
    run_case(dev, &c, &m, 19, VKPT_MM_MATVEC, &r, true);
    mat_free(dev, &m);
    vkpt_cmd_free(&c);
}

static void matmul_writes_a_slice_of_a_wider_output_with_bias(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 25);
    /* a fused QKV output: [n_tok][W] with this projection in columns
     * [col, col + M); everything else must keep its sentinel */
    const uint32_t K = 160, M = 21, W = 70, col = 29;
    static const uint32_t toks[] = {3, 40};
    for (size_t i = 0; i < 2; i++) {
        uint32_t nt = toks[i];
        mat m;
        mat_make(dev, &r, VKPT_Q_Q5_1, K, M, NULL, 0, &m);
        float *x = rand_x(&r, (size_t)nt * K), *bias = rand_x(&r, M);
        float *ybig = malloc((size_t)nt * W * 4), *want = malloc((size_t)nt * W * 4);
        for (size_t j = 0; j < (size_t)nt * W; j++) ybig[j] = want[j] = -777.0f;
        vkpt_buf bx = upload(dev, x, (uint64_t)nt * K * 4), bb = upload(dev, bias, M * 4);
        vkpt_buf by = upload(dev, ybig, (uint64_t)nt * W * 4);
        vkpt_mm_args a = {.wtype = m.type,
                          .w = m.buf,
                          .K = K,
                          .M = M,
                          .n_tok = nt,
                          .x = bx,
                          .y = vkpt_buf_view(&by, col * 4, ((uint64_t)(nt - 1) * W + M) * 4),
                          .y_stride = W,
                          .bias = bb};
        int took = vkpt_k_matmul_choose(dev, &a);
        assert_int_equal(vkpt_cmd_begin(&c), 0);
        assert_int_equal(vkpt_k_matmul(&c, &a), 0);
        assert_int_equal(vkpt_cmd_run(&c), 0);
        assert_int_equal(vkpt_buf_download(dev, &by, 0, ybig, (uint64_t)nt * W * 4), 0);
        for (uint32_t t = 0; t < nt; t++)
            for (uint32_t j = 0; j < W; j++)
                if (j < col || j >= col + M) assert_true(ybig[t * W + j] == -777.0f);
        ref_and_check("slice", took, &m, x, nt, ybig + col, want + col, W, bias);
        vkpt_buf_free(dev, &bx);
        vkpt_buf_free(dev, &bb);
        vkpt_buf_free(dev, &by);
        free(x), free(bias), free(ybig), free(want);
        mat_free(dev, &m);
    }
    vkpt_cmd_free(&c);
}

/* GPU activation quantization against the C one: the scales agree bit for
 * bit (max and one multiply by 1/127); q may differ by one where x / d
 * lands within an ulp of a rounding tie (the GPU's 1/d is not correctly
 * rounded), which must stay rare. */
static void matmul_quantize_act_matches_reference(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 26);
    const uint32_t nt = 5, K = 32 * 37;
    size_t n = (size_t)nt * K;
    float *x = rand_x(&r, n), *dref = malloc(n / 32 * 4), *dgot = malloc(n / 32 * 4);
    for (size_t i = 0; i < 32; i++) x[64 + i] = 0; /* an all-zero block */
    int8_t *qref = malloc(n), *qgot = malloc(n);
    vkpt_buf bx = upload(dev, x, n * 4), bq = dev_buf(dev, vkpt_k_quantize_act_bytes(nt, K));
    assert_int_equal(vkpt_cmd_begin(&c), 0);
    assert_int_equal(vkpt_k_quantize_act(&c, &bx, nt, K, &bq), 0);
    assert_int_equal(vkpt_cmd_run(&c), 0);
    assert_int_equal(vkpt_buf_download(dev, &bq, 0, qgot, n), 0);
    assert_int_equal(vkpt_buf_download(dev, &bq, n, dgot, n / 32 * 4), 0);
    vkpt_ref_quantize_act(x, n, qref, dref);
    assert_memory_equal(dgot, dref, n / 32 * 4);
    size_t off_by_one = 0;
    for (size_t i = 0; i < n; i++) {
        int d = qgot[i] - qref[i];
        assert_true(d >= -1 && d <= 1);
        off_by_one += d != 0;
    }
    assert_true(off_by_one * 1000 <= n); /* under 0.1% */
    for (size_t i = 0; i < 32; i++) assert_int_equal(qgot[64 + i], 0);
    vkpt_buf_free(dev, &bx);
    vkpt_buf_free(dev, &bq);
    free(x), free(qref), free(qgot), free(dref), free(dgot);
    vkpt_cmd_free(&c);
}

/* The int8-dot matvec against the reference fed the GPU's own q8
 * activations: the integer dot products are exact, so only the f32 scaling
 * and accumulation differ. */
static void matmul_intdot_matches_q8_reference(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    if (!vkpt_variant_usable(dev, VKPT_V_matvec_q4k_q8_intdot)) {
        fprintf(stderr, "# int8 dot products unavailable here: skipped\n");
        skip();
    }
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 27);
    for (size_t t = 0; t < N_TYPES; t++) {
        if (!is_quant(k_types[t])) continue;
        for (uint32_t nt = 1; nt <= VKPT_MATVEC_MAX_TOK; nt++) {
            uint32_t K = test_k(k_types[t], true), M = k_rows[(nt + t) % 5];
            mat m;
            mat_make(dev, &r, k_types[t], K, M, NULL, 0, &m);
            size_t n = (size_t)nt * K;
            float *x = rand_x(&r, n), *bias = nt % 2 ? rand_x(&r, M) : NULL;
            float *got = malloc((size_t)nt * M * 4), *want = malloc((size_t)nt * M * 4);
            float *xd = malloc(n * 4), *d = malloc(n / 32 * 4);
            int8_t *q = malloc(n);
            vkpt_buf bx = upload(dev, x, n * 4), by = dev_buf(dev, (uint64_t)nt * M * 4);
            vkpt_buf bq = dev_buf(dev, vkpt_k_quantize_act_bytes(nt, K)), bb = {.block = -1};
            if (bias) bb = upload(dev, bias, M * 4);
            vkpt_mm_args a = {.wtype = m.type,
                              .w = m.buf,
                              .K = K,
                              .M = M,
                              .n_tok = nt,
                              .x = bx,
                              .xq = bq,
                              .y = by,
                              .bias = bb,
                              .path = VKPT_MM_MATVEC_INTDOT};
            assert_int_equal(vkpt_cmd_begin(&c), 0);
            assert_int_equal(vkpt_k_quantize_act(&c, &bx, nt, K, &bq), 0);
            vkpt_cmd_barrier(&c);
            assert_int_equal(vkpt_k_matmul(&c, &a), 0);
            assert_int_equal(vkpt_cmd_run(&c), 0);
            assert_int_equal(vkpt_buf_download(dev, &by, 0, got, (uint64_t)nt * M * 4), 0);
            assert_int_equal(vkpt_buf_download(dev, &bq, 0, q, n), 0);
            assert_int_equal(vkpt_buf_download(dev, &bq, n, d, n / 32 * 4), 0);
            assert_int_equal(vkpt_ref_matmul_q8(m.type, m.q, K, M, q, d, nt, want, M, bias), 0);
            for (size_t i = 0; i < n; i++) xd[i] = (float)q[i] * d[i / 32];
            check_products("intdot", &m, xd, nt, got, want, M, 4);
            vkpt_buf_free(dev, &bx);
            vkpt_buf_free(dev, &by);
            vkpt_buf_free(dev, &bq);
            vkpt_buf_free(dev, &bb);
            free(x), free(bias), free(got), free(want), free(xd), free(d), free(q);
            mat_free(dev, &m);
        }
    }
    vkpt_cmd_free(&c);
}

/* Lower the device's binding and grid limits so that small tensors need
 * many chunks: every kernel must still match (and vkpt_cmd_dispatch asserts
 * that no grid exceeds the limits). */
static void matmul_splits_tensors_larger_than_a_binding(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 28);
    vkpt_device_caps saved = dev->caps;
    dev->caps.max_storage_buffer_range = 4096;
    dev->caps.max_wg_count[0] = 5;
    dev->caps.max_wg_count[1] = 3;
    static const uint32_t types[] = {VKPT_Q_Q4_K, VKPT_Q_Q4_0, VKPT_Q_F16, VKPT_Q_Q6_K};
    for (size_t t = 0; t < 4; t++) {
        mat m;
        uint32_t K = test_k(types[t], false);
        mat_make(dev, &r, types[t], K, 53, NULL, 0, &m);
        uint32_t ids[40];
        for (int i = 0; i < 40; i++) ids[i] = (uint32_t)(vkpt_test_rng_u64(&r) % 60);
        get_rows_case(dev, &c, &m, ids, 40);
        run_case(dev, &c, &m, 3, VKPT_MM_MATVEC, &r, true);
        if (saved.subgroup_arith) run_case(dev, &c, &m, 8, VKPT_MM_MATVEC_SUBGROUP, &r, false);
        run_case(dev, &c, &m, 50, VKPT_MM_MATMUL, &r, true);
        mat_free(dev, &m);
    }
    dev->caps = saved;
    vkpt_cmd_free(&c);
}

/* A real tensor past the binding limit (128 MiB on lavapipe): an F16
 * matrix of 135 MB, as big embeddings are. get_rows and matvec must split it
 * by rows without the test lowering any limit. */
static void matmul_handles_a_tensor_larger_than_one_binding(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    const uint32_t K = 1024;
    uint32_t M = (uint32_t)(dev->caps.max_storage_buffer_range / (K * 2)) + 1000;
    uint64_t bytes = (uint64_t)M * K * 2;
    if (bytes > (1ull << 30) || bytes > dev->caps.device_local_bytes / 4) {
        fprintf(stderr, "# binding limit %llu too large to exceed here: skipped\n",
                (unsigned long long)dev->caps.max_storage_buffer_range);
        skip();
    }
    uint16_t *w = malloc(bytes);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 30);
    for (size_t i = 0; i < (size_t)M * K; i++) w[i] = vkpt_f32_to_f16(vkpt_test_rng_f32(&r, -1, 1));
    vkpt_buf bw = upload(dev, w, bytes);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    /* get_rows: rows from both ends and the middle */
    uint32_t ids[4] = {0, M - 1, M / 2 + 7, M};
    vkpt_buf bi = upload(dev, ids, sizeof ids), bo = dev_buf(dev, 4ull * K * 4);
    float *x = rand_x(&r, K), *got = malloc((size_t)M * 4), row[1024];
    vkpt_buf bx = upload(dev, x, K * 4), by = dev_buf(dev, (uint64_t)M * 4);
    vkpt_mm_args a = {.wtype = VKPT_Q_F16, .w = bw, .K = K, .M = M, .n_tok = 1, .x = bx, .y = by};
    assert_int_equal(vkpt_cmd_begin(&c), 0);
    assert_int_equal(vkpt_k_get_rows(&c, VKPT_Q_F16, &bw, K, M, &bi, 4, &bo), 0);
    assert_int_equal(vkpt_k_matmul(&c, &a), 0);
    assert_int_equal(vkpt_cmd_run(&c), 0);
    float out[4][1024];
    assert_int_equal(vkpt_buf_download(dev, &bo, 0, out, sizeof out), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(vkpt_dequantize_row(VKPT_Q_F16, w + (size_t)ids[i] * K, row, K), 0);
        assert_memory_equal(out[i], row, sizeof row);
    }
    for (uint32_t k = 0; k < K; k++) assert_true(out[3][k] == 0.0f);
    assert_int_equal(vkpt_buf_download(dev, &by, 0, got, (uint64_t)M * 4), 0);
    for (uint32_t m = 0; m < M; m += (m < 100 || m > M - 100) ? 1 : 997) {
        assert_int_equal(vkpt_dequantize_row(VKPT_Q_F16, w + (size_t)m * K, row, K), 0);
        double ref = 0, mag = 0;
        for (uint32_t k = 0; k < K; k++) ref += (double)row[k] * x[k], mag += fabs(row[k] * x[k]);
        if (!(fabs(got[m] - ref) <= 4.0 * K * 0x1p-24 * mag))
            fail_msg("row %u of %u: %.9g, want %.9g", m, M, got[m], ref);
    }
    vkpt_buf_free(dev, &bw);
    vkpt_buf_free(dev, &bi);
    vkpt_buf_free(dev, &bo);
    vkpt_buf_free(dev, &bx);
    vkpt_buf_free(dev, &by);
    free(w), free(x), free(got);
    vkpt_cmd_free(&c);
}

/* Real weights: stories260K's F32 ffn_down (K = 172, not a multiple of 8)
 * as the runtime will run it, and its token embedding values requantized
 * into each format (reshaped to K = 256 rows where the format needs it). */
static void matmul_runs_real_model_weights(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_gguf *g;
    int err = vkpt_gguf_open(VKPT_SOURCE_DIR "/models/stories260K/stories260K.gguf", &g);
    if (err) fail_msg("stories260K.gguf: %s", vkpt_errmsg(err));
    const vkpt_gguf_tensor *down = vkpt_gguf_find_tensor(g, "blk.0.ffn_down.weight");
    const vkpt_gguf_tensor *emb = vkpt_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(down);
    assert_non_null(emb);
    assert_int_equal(down->type, VKPT_Q_F32);
    assert_int_equal(down->ne[0], 172);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 29);
    size_t n_down = down->ne[0] * down->ne[1], n_emb = emb->ne[0] * emb->ne[1];
    float *wd = malloc(n_down * 4), *we = malloc(n_emb * 4);
    memcpy(wd, down->data, n_down * 4); /* the mapping may be unaligned for floats */
    memcpy(we, emb->data, n_emb * 4);
    mat m;
    mat_make(dev, &r, VKPT_Q_F32, 172, (uint32_t)down->ne[1], wd, n_down, &m);
    assert_memory_equal(m.deq, wd, n_down * 4);
    for (uint32_t nt = 1; nt <= 2; nt++) run_case(dev, &c, &m, nt, VKPT_MM_AUTO, &r, false);
    run_case(dev, &c, &m, 12, VKPT_MM_AUTO, &r, false);
    mat_free(dev, &m);
    for (size_t t = 0; t < N_TYPES; t++) {
        uint32_t K = vkpt_qtype_get(k_types[t])->block_elems == 256 ? 256 : 64;
        mat_make(dev, &r, k_types[t], K, (uint32_t)(n_emb / K), we, n_emb, &m);
        run_case(dev, &c, &m, 2, VKPT_MM_AUTO, &r, false);
        mat_free(dev, &m);
    }
    free(wd);
    free(we);
    vkpt_gguf_close(g);
    vkpt_cmd_free(&c);
}

static void matmul_rejects_bad_arguments(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_buf w = dev_buf(dev, 4096), x = dev_buf(dev, 4096), y = dev_buf(dev, 4096);
    vkpt_mm_args a = {.wtype = VKPT_Q_Q4_K, .w = w, .K = 256, .M = 20, .n_tok = 1, .x = x, .y = y};
    assert_int_equal(vkpt_cmd_begin(&c), 0);
    assert_int_equal(vkpt_k_matmul(&c, &a), 0);
    a.K = 100; /* not whole super-blocks */
    assert_int_equal(vkpt_k_matmul(&c, &a), VKPT_EINVAL);
    a.K = 256;
    a.M = 40; /* W holds 28 rows */
    assert_int_equal(vkpt_k_matmul(&c, &a), VKPT_EINVAL);
    a.M = 20;
    a.y_stride = 10; /* < M */
    assert_int_equal(vkpt_k_matmul(&c, &a), VKPT_EINVAL);
    a.y_stride = 0;
    a.wtype = VKPT_Q_Q2_K;
    assert_int_equal(vkpt_k_matmul(&c, &a), VKPT_EINVAL);
    a.wtype = VKPT_Q_Q4_K;
    a.path = VKPT_MM_MATVEC_INTDOT; /* without xq */
    assert_int_equal(vkpt_k_matmul(&c, &a), VKPT_EINVAL);
    a.path = VKPT_MM_MATMUL_COOPMAT;
    if (!dev->caps.coopmat_khr) assert_int_equal(vkpt_k_matmul(&c, &a), VKPT_EUNSUPPORTED);
    a.path = VKPT_MM_MATMUL_NV2;
    if (!dev->caps.coopmat_nv2) assert_int_equal(vkpt_k_matmul(&c, &a), VKPT_EUNSUPPORTED);
    a.path = 99;
    assert_int_equal(vkpt_k_matmul(&c, &a), VKPT_EINVAL);
    a.path = VKPT_MM_AUTO;
    a.x = vkpt_buf_view(&x, 4, 1024); /* quantized weights need 16-byte aligned x */
    assert_int_equal(vkpt_k_matmul(&c, &a), VKPT_EINVAL);
    vkpt_buf ids = dev_buf(dev, 64);
    /* ids hold garbage: out-of-range ids are safe by design (zeros) */
    assert_int_equal(vkpt_k_get_rows(&c, VKPT_Q_Q4_K, &w, 256, 20, &ids, 4, &y), 0);
    assert_int_equal(vkpt_k_get_rows(&c, VKPT_Q_Q4_K, &w, 256, 20, &ids, 5, &y), VKPT_EINVAL);
    assert_int_equal(vkpt_k_quantize_act(&c, &x, 1, 100, &y), VKPT_EINVAL);
    assert_int_equal(vkpt_cmd_run(&c), 0);
    vkpt_buf_free(dev, &ids);
    vkpt_buf_free(dev, &w);
    vkpt_buf_free(dev, &x);
    vkpt_buf_free(dev, &y);
    vkpt_cmd_free(&c);
}

int main(void)
{
#define T(f) cmocka_unit_test_teardown(f, vkpt_test_check_validation)
    const struct CMUnitTest tests[] = {
        T(matmul_get_rows_is_bit_exact_for_every_format),
        T(matmul_matvec_matches_reference_on_every_path),
        T(matmul_tiled_matches_reference),
        T(matmul_coopmat_matches_reference_where_available),
        T(matmul_nv2_chosen_only_with_caps_and_opt_in),
        T(matmul_auto_runs_prefill_and_decode),
        T(matmul_writes_a_slice_of_a_wider_output_with_bias),
        T(matmul_quantize_act_matches_reference),
        T(matmul_intdot_matches_q8_reference),
        T(matmul_splits_tensors_larger_than_a_binding),
        T(matmul_handles_a_tensor_larger_than_one_binding),
        T(matmul_runs_real_model_weights),
        T(matmul_rejects_bad_arguments),
    };
#undef T
    /* VKPT_TEST_FILTER=pattern runs matching tests only (cmocka's * and ? globs) */
    const char *filter = getenv("VKPT_TEST_FILTER");
    if (filter && *filter) cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
