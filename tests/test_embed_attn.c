/* engine/kernels/k_encattn: the encoders' non-causal f32 attention over a
 * packed batch, against the double-precision reference: sequences of 1 to
 * 300 rows (not multiples of the 64-row tiles or the key tiles) side by
 * side, q/k/v read in place from a fused qkv buffer with an odd row stride,
 * MHA and GQA, head dims 4 to 256 (the key tile shrinks to fit shared
 * memory), and a sentinel check that no row outside the batch is written. */
#include "k_encattn.h"
#include "kernel_util.h"

#include <stdio.h>

/* Bound: 2e-5 relative to the output's largest element. Scores are f32 dot
 * products of head_dim terms (|q.k| ~ 10 here), exp and the running sums in
 * f32 over <= 300 keys: a few 1e-6 of the largest value. Attending to one
 * wrong key row, or one missing, moves outputs by ~1e-2. */
static const double ATTN_REL = 2e-5;

typedef struct attn_case {
    uint32_t n_head, n_kv_head, head_dim;
    uint32_t lens[8];
    uint32_t n_seqs;
} attn_case;

static void run_case(void **state, const attn_case *ac, uint64_t seed)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, seed);
    vkpt_encattn_params p = {ac->n_head, ac->n_kv_head, ac->head_dim, 0};
    vkpt_encattn_seq seqs[8];
    /* rows start at 1: row 0 belongs to nobody and must keep its sentinel */
    uint32_t rows = 1;
    for (uint32_t s = 0; s < ac->n_seqs; s++) {
        seqs[s] = (vkpt_encattn_seq){rows, ac->lens[s]};
        rows += ac->lens[s];
    }
    rows += 1; /* and one after */
    uint32_t Dq = p.n_head * p.head_dim, Dkv = p.n_kv_head * p.head_dim;
    uint32_t W = Dq + 2 * Dkv + 4; /* fused q|k|v plus padding: stride != width */
    float *qkv = kt_randf(&r, (size_t)rows * W, -1.5f, 1.5f);
    uint32_t n_items = vkpt_encattn_items(seqs, ac->n_seqs, NULL, 0);
    uint32_t *items = malloc(n_items * 12);
    assert_int_equal(vkpt_encattn_items(seqs, ac->n_seqs, items, n_items), n_items);
    vkpt_buf bqkv = kt_buf(dev, qkv, (size_t)rows * W * 4);
    vkpt_buf bit = kt_buf(dev, items, n_items * 12);
    vkpt_buf bo = kt_buf(dev, NULL, (size_t)rows * Dq * 4);
    vkpt_rows vq = vkpt_rows_of(&bqkv, 0, W), vk = vkpt_rows_of(&bqkv, Dq, W);
    vkpt_rows vv = vkpt_rows_of(&bqkv, Dq + Dkv, W), vo = vkpt_rows_of(&bo, 0, Dq);
    kt_begin(&c);
    assert_int_equal(vkpt_k_encattn(&c, &p, &bit, n_items, rows, &vq, &vk, &vv, &vo), 0);
    kt_run(&c);
    float *got = malloc((size_t)rows * Dq * 4), *want = malloc((size_t)rows * Dq * 4);
    kt_get(dev, &bo, got, (size_t)rows * Dq * 4);
    memset(want, 0xff, (size_t)rows * Dq * 4);
    vkpt_ref_encattn(&p, seqs, ac->n_seqs, qkv, W, qkv + Dq, W, qkv + Dq + Dkv, W, want, Dq);
    for (uint32_t i = 0; i < Dq; i++) {
        uint32_t w0, w1;
        memcpy(&w0, &got[i], 4);
        memcpy(&w1, &got[(size_t)(rows - 1) * Dq + i], 4);
        assert_int_equal(w0, 0xffffffffu);
        assert_int_equal(w1, 0xffffffffu);
    }
    double m = 0, d = 0;
    size_t at = 0;
    for (size_t i = Dq; i < (size_t)(rows - 1) * Dq; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (e > d || isnan(e)) d = isnan(e) ? INFINITY : e, at = i;
        if (fabs(want[i]) > m) m = fabs(want[i]);
    }
    if (d / m > ATTN_REL)
        fail_msg("heads %u/%u dim %u: row %zu elem %zu got %g want %g (error %.3g of max)",
                 p.n_head, p.n_kv_head, p.head_dim, at / Dq, at % Dq, got[at], want[at], d / m);
    vkpt_buf_free(dev, &bqkv), vkpt_buf_free(dev, &bit), vkpt_buf_free(dev, &bo);
    free(qkv), free(items), free(got), free(want);
    vkpt_cmd_free(&c);
}

static void encattn_matches_reference_over_a_packed_batch(void **state)
{
    static const attn_case cases[] = {
        {4, 4, 16, {3, 16, 61}, 3},          /* the bert fixture's shape */
        {3, 3, 64, {1, 65, 130, 7, 300}, 5}, /* MHA, head_dim 64 */
        {8, 2, 32, {33, 1, 2, 97}, 4},       /* GQA */
        {2, 1, 4, {5, 70}, 2},               /* tiny heads */
        {2, 2, 128, {129, 40}, 2},           /* BK 16 on 16 KiB devices */
        {1, 1, 256, {77, 3}, 2},             /* the largest head */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(state, &cases[i], 40 + i);
}

/* Every query row's output is independent of the other sequences packed
 * with it: a sequence alone and inside a batch give identical bits. */
static void encattn_sequence_alone_equals_packed(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 77);
    vkpt_encattn_params p = {4, 4, 16, 0};
    uint32_t D = 64, W = 3 * D, len = 90, rows = 200;
    float *qkv = kt_randf(&r, (size_t)rows * W, -2, 2);
    vkpt_buf bqkv = kt_buf(dev, qkv, (size_t)rows * W * 4);
    vkpt_rows vq = vkpt_rows_of(&bqkv, 0, W), vk = vkpt_rows_of(&bqkv, D, W);
    vkpt_rows vv = vkpt_rows_of(&bqkv, 2 * D, W);
    float *outs[2];
    for (int packed = 0; packed < 2; packed++) {
        /* the sequence is rows 50..139 in both runs */
        vkpt_encattn_seq seqs[3] = {{0, 50}, {50, len}, {140, 60}};
        vkpt_encattn_seq *sp = packed ? seqs : &seqs[1];
        uint32_t ns = packed ? 3 : 1;
        uint32_t items[64 * 3];
        uint32_t n_items = vkpt_encattn_items(sp, ns, items, 64);
        vkpt_buf bit = kt_buf(dev, items, n_items * 12), bo = kt_buf(dev, NULL, rows * D * 4);
        vkpt_rows vo = vkpt_rows_of(&bo, 0, D);
        kt_begin(&c);
        assert_int_equal(vkpt_k_encattn(&c, &p, &bit, n_items, rows, &vq, &vk, &vv, &vo), 0);
        kt_run(&c);
        outs[packed] = malloc(rows * D * 4);
        kt_get(dev, &bo, outs[packed], rows * D * 4);
        vkpt_buf_free(dev, &bit), vkpt_buf_free(dev, &bo);
    }
    assert_memory_equal(outs[0] + 50 * D, outs[1] + 50 * D, len * D * 4);
    free(outs[0]), free(outs[1]), free(qkv);
    vkpt_buf_free(dev, &bqkv);
    vkpt_cmd_free(&c);
}

static void encattn_refuses_bad_shapes(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_buf b = kt_buf(dev, NULL, 4096), itb = kt_buf(dev, NULL, 12);
    vkpt_buf it = vkpt_buf_view(&itb, 0, 12); /* allocations round up to 256 bytes */
    vkpt_rows v = vkpt_rows_of(&b, 0, 16), odd = vkpt_rows_of(&b, 2, 16);
    vkpt_encattn_params bad_dim = {1, 1, 6, 0}, bad_group = {3, 2, 8, 0}, ok = {2, 2, 8, 0};
    kt_begin(&c);
    assert_int_equal(vkpt_k_encattn(&c, &bad_dim, &it, 1, 4, &v, &v, &v, &v), VKPT_EINVAL);
    assert_int_equal(vkpt_k_encattn(&c, &bad_group, &it, 1, 4, &v, &v, &v, &v), VKPT_EINVAL);
    assert_int_equal(vkpt_k_encattn(&c, &ok, &it, 1, 4, &odd, &v, &v, &v), VKPT_EINVAL);
    /* 100 rows of 16 floats do not fit 4096 bytes */
    assert_int_equal(vkpt_k_encattn(&c, &ok, &it, 1, 100, &v, &v, &v, &v), VKPT_EINVAL);
    /* 2 items need 24 bytes */
    assert_int_equal(vkpt_k_encattn(&c, &ok, &it, 2, 4, &v, &v, &v, &v), VKPT_EINVAL);
    kt_run(&c);
    vkpt_buf_free(dev, &b), vkpt_buf_free(dev, &itb);
    vkpt_cmd_free(&c);
}

#define T(fn) cmocka_unit_test_teardown(fn, vkpt_test_check_validation)
int main(void)
{
    const struct CMUnitTest tests[] = {
        T(encattn_matches_reference_over_a_packed_batch),
        T(encattn_sequence_alone_equals_packed),
        T(encattn_refuses_bad_shapes),
    };
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
