/* engine/model/gguf: reading the real stories260K file, writer round trips,
 * and hostile input: every truncation, random corruption, and crafted
 * headers each get a clean VKPT_EFORMAT naming what is wrong. */
#define _GNU_SOURCE
#include "vk_fixture.h"

#include "gguf.h"
#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STORIES VKPT_SOURCE_DIR "/models/stories260K/stories260K.gguf"

static void gguf_reads_the_real_stories260k_file(void **state)
{
    (void)state;
    vkpt_gguf *g;
    assert_int_equal(vkpt_gguf_open(STORIES, &g), 0);
    assert_int_equal(vkpt_gguf_version(g), 3);
    assert_int_equal(vkpt_gguf_n_tensors(g), 48);
    vkpt_span s;
    assert_int_equal(vkpt_gguf_get_str(g, "general.architecture", &s), 0);
    assert_int_equal(s.n, 5);
    assert_memory_equal(s.p, "llama", 5);
    uint32_t u;
    assert_int_equal(vkpt_gguf_get_u32(g, "llama.embedding_length", &u), 0);
    assert_int_equal(u, 64);
    assert_int_equal(vkpt_gguf_get_u32(g, "llama.attention.head_count_kv", &u), 0);
    assert_int_equal(u, 4);
    float eps;
    assert_int_equal(vkpt_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps), 0);
    assert_true(eps == 1e-5f);
    int et;
    uint64_t n;
    assert_int_equal(vkpt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n), 0);
    assert_int_equal(et, VKPT_GGUF_STRING);
    assert_int_equal(n, 512);
    assert_int_equal(vkpt_gguf_arr_str(g, "tokenizer.ggml.tokens", 1, &s), 0);
    assert_int_equal(s.n, 3);
    assert_memory_equal(s.p, "<s>", 3);
    float score;
    assert_int_equal(vkpt_gguf_arr_f32(g, "tokenizer.ggml.scores", 0, &score), 0);
    /* wrong types and missing keys are errors that name the key */
    assert_int_equal(vkpt_gguf_get_str(g, "llama.block_count", &s), VKPT_EFORMAT);
    assert_non_null(strstr(vkpt_errmsg(VKPT_EFORMAT), "llama.block_count"));
    assert_int_equal(vkpt_gguf_get_u32(g, "no.such.key", &u), VKPT_ENOTFOUND);
    assert_int_equal(vkpt_gguf_arr_str(g, "tokenizer.ggml.tokens", 512, &s), VKPT_ERANGE);

    const vkpt_gguf_tensor *t = vkpt_gguf_find_tensor(g, "blk.0.ffn_down.weight");
    assert_non_null(t);
    assert_int_equal(t->type, VKPT_Q_F32);
    assert_int_equal(t->ne[0], 172);
    assert_int_equal(t->ne[1], 64);
    assert_int_equal(t->size, 172 * 64 * 4);
    assert_null(vkpt_gguf_find_tensor(g, "blk.9.ffn_down.weight"));
    /* token_embd and output hold the same (tied) table in this file */
    const vkpt_gguf_tensor *e = vkpt_gguf_find_tensor(g, "token_embd.weight");
    const vkpt_gguf_tensor *o = vkpt_gguf_find_tensor(g, "output.weight");
    assert_non_null(e);
    assert_non_null(o);
    assert_memory_equal(e->data, o->data, e->size);
    vkpt_gguf_close(g);
}

/* A small file with every value type, nested arrays and three tensors. */
static int fill_pattern(void *ud, uint64_t ti, void *dst, uint64_t size)
{
    (void)ud;
    for (uint64_t i = 0; i < size; i++) ((uint8_t *)dst)[i] = (uint8_t)(ti * 31 + i * 7);
    return 0;
}

static char *write_sample(uint32_t alignment)
{
    vkpt_gguf_writer *w;
    assert_int_equal(vkpt_gguf_writer_create(&w), 0);
    assert_int_equal(vkpt_gguf_writer_set_str(w, "general.architecture", "llama"), 0);
    if (alignment) assert_int_equal(vkpt_gguf_writer_set_u32(w, "general.alignment", alignment), 0);
    assert_int_equal(vkpt_gguf_writer_set_u32(w, "a.u32", 4000000000u), 0);
    assert_int_equal(vkpt_gguf_writer_set_i32(w, "a.i32", -7), 0);
    assert_int_equal(vkpt_gguf_writer_set_u64(w, "a.u64", 1ull << 40), 0);
    assert_int_equal(vkpt_gguf_writer_set_f32(w, "a.f32", 0.25f), 0);
    assert_int_equal(vkpt_gguf_writer_set_bool(w, "a.bool", true), 0);
    const char *strs[] = {"zero", "", "two \xe2\x96\x81"};
    assert_int_equal(vkpt_gguf_writer_set_arr_str(w, "a.strs", strs, 3), 0);
    int32_t ints[] = {5, -6, 7};
    assert_int_equal(vkpt_gguf_writer_set_arr(w, "a.ints", VKPT_GGUF_I32, ints, 3), 0);
    assert_int_equal(vkpt_gguf_writer_set_u32(w, "a.u32", 1), VKPT_EEXISTS);
    uint64_t ne1[] = {64, 3}, ne2[] = {256, 2}, ne3[] = {5};
    assert_int_equal(vkpt_gguf_writer_add_tensor(w, "t.f16", VKPT_Q_F16, 2, ne1), 0);
    assert_int_equal(vkpt_gguf_writer_add_tensor(w, "t.q4k", VKPT_Q_Q4_K, 2, ne2), 0);
    assert_int_equal(vkpt_gguf_writer_add_tensor(w, "t.f32", VKPT_Q_F32, 1, ne3), 0);
    uint64_t bad[] = {100};
    assert_int_equal(vkpt_gguf_writer_add_tensor(w, "t.bad", VKPT_Q_Q8_0, 1, bad), VKPT_EINVAL);
    char *path = strdup("/tmp/vkpt-gguf-XXXXXX");
    int fd = mkstemp(path);
    close(fd);
    assert_int_equal(vkpt_gguf_writer_write(w, path, fill_pattern, NULL), 0);
    vkpt_gguf_writer_destroy(w);
    return path;
}

static void gguf_writer_round_trips_every_type(void **state)
{
    (void)state;
    static const uint32_t aligns[] = {0, 64, 4096};
    for (int a = 0; a < 3; a++) {
        char *path = write_sample(aligns[a]);
        vkpt_gguf *g;
        assert_int_equal(vkpt_gguf_open(path, &g), 0);
        assert_int_equal(vkpt_gguf_alignment(g), aligns[a] ? aligns[a] : 32);
        uint32_t u;
        int32_t i;
        uint64_t u64;
        float f;
        bool b;
        vkpt_span s;
        assert_int_equal(vkpt_gguf_get_u32(g, "a.u32", &u), 0);
        assert_int_equal(u, 4000000000u);
        assert_int_equal(vkpt_gguf_get_i32(g, "a.u32", &i), VKPT_EFORMAT); /* does not fit */
        assert_int_equal(vkpt_gguf_get_i32(g, "a.i32", &i), 0);
        assert_int_equal(i, -7);
        assert_int_equal(vkpt_gguf_get_u32(g, "a.i32", &u), VKPT_EFORMAT); /* negative */
        assert_int_equal(vkpt_gguf_get_u64(g, "a.u64", &u64), 0);
        assert_int_equal(u64, 1ull << 40);
        assert_int_equal(vkpt_gguf_get_f32(g, "a.f32", &f), 0);
        assert_true(f == 0.25f);
        assert_int_equal(vkpt_gguf_get_bool(g, "a.bool", &b), 0);
        assert_true(b);
        assert_int_equal(vkpt_gguf_arr_str(g, "a.strs", 2, &s), 0);
        assert_int_equal(s.n, 7);
        assert_memory_equal(s.p, "two \xe2\x96\x81", 7);
        assert_int_equal(vkpt_gguf_arr_str(g, "a.strs", 1, &s), 0);
        assert_int_equal(s.n, 0);
        int64_t iv;
        assert_int_equal(vkpt_gguf_arr_i64(g, "a.ints", 1, &iv), 0);
        assert_int_equal(iv, -6);
        const vkpt_gguf_tensor *t = vkpt_gguf_find_tensor(g, "t.q4k");
        assert_non_null(t);
        assert_int_equal(t->size, 2 * 144);
        assert_int_equal((t->data - (const uint8_t *)NULL) % vkpt_gguf_alignment(g), 0);
        for (uint64_t k = 0; k < t->size; k++)
            assert_int_equal(t->data[k], (uint8_t)(1 * 31 + k * 7));
        vkpt_gguf_close(g);
        unlink(path);
        free(path);
    }
}

static void gguf_every_truncation_is_a_clean_error(void **state)
{
    (void)state;
    char *path = write_sample(0);
    size_t size;
    uint8_t *data = vkpt_test_read_file(path, &size);
    assert_non_null(data);
    for (size_t n = 0; n < size; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees any overread */
        memcpy(copy, data, n);
        vkpt_gguf *g = NULL;
        int err = vkpt_gguf_open_mem(copy, n, &g);
        if (err != VKPT_EFORMAT)
            fail_msg("truncated to %zu of %zu bytes: got %d (%s)", n, size, err, vkpt_errmsg(err));
        assert_null(g);
        free(copy);
    }
    unlink(path);
    free(path);
    free(data);
}

static void gguf_random_corruption_never_crashes(void **state)
{
    (void)state;
    char *path = write_sample(0);
    size_t size;
    uint8_t *data = vkpt_test_read_file(path, &size);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 42);
    int opened = 0, failed = 0;
    for (int it = 0; it < 20000; it++) {
        uint8_t *copy = malloc(size);
        memcpy(copy, data, size);
        int flips = 1 + (int)(vkpt_test_rng_u64(&r) % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = vkpt_test_rng_u64(&r) % size;
            uint64_t kind = vkpt_test_rng_u64(&r) % 3;
            copy[at] = kind == 0 ? (uint8_t)vkpt_test_rng_u64(&r) : kind == 1 ? 0xff : 0;
        }
        vkpt_gguf *g;
        int err = vkpt_gguf_open_mem(copy, size, &g);
        if (!err) {
            opened++;
            /* what opened must be consistent: tensors inside the buffer */
            for (int64_t i = 0; i < vkpt_gguf_n_tensors(g); i++) {
                const vkpt_gguf_tensor *t = vkpt_gguf_tensor_at(g, i);
                assert_true(t->data >= copy && t->data + t->size <= copy + size);
            }
            vkpt_gguf_close(g);
        } else {
            assert_int_equal(err, VKPT_EFORMAT);
            failed++;
        }
        free(copy);
    }
    assert_true(failed > 1000); /* corruption is mostly caught */
    unlink(path);
    free(path);
    free(data);
}

/* Hand-built headers for the specific lies a hostile file can tell. */
typedef struct hb {
    uint8_t b[512];
    size_t n;
} hb;
static void put(hb *h, const void *p, size_t n)
{
    memcpy(h->b + h->n, p, n);
    h->n += n;
}
static void put_u32(hb *h, uint32_t v)
{
    put(h, &v, 4);
}
static void put_u64(hb *h, uint64_t v)
{
    put(h, &v, 8);
}
static void put_str(hb *h, const char *s)
{
    put_u64(h, strlen(s));
    put(h, s, strlen(s));
}
static void header(hb *h, uint64_t n_tensors, uint64_t n_kv)
{
    h->n = 0;
    put_u32(h, 0x46554747u);
    put_u32(h, 3);
    put_u64(h, n_tensors);
    put_u64(h, n_kv);
}
static void expect_fail(hb *h, const char *fragment)
{
    vkpt_gguf *g;
    /* 64 trailing zero bytes, so checks past the counts' plausibility bound run */
    uint8_t *copy = calloc(1, h->n + 64);
    memcpy(copy, h->b, h->n);
    int err = vkpt_gguf_open_mem(copy, h->n + 64, &g);
    free(copy);
    if (err != VKPT_EFORMAT) fail_msg("expected EFORMAT mentioning '%s', got %d", fragment, err);
    if (!strstr(vkpt_errmsg(err), fragment))
        fail_msg("message '%s' does not mention '%s'", vkpt_errmsg(err), fragment);
}

static void gguf_hostile_headers_are_named_errors(void **state)
{
    (void)state;
    hb h;
    header(&h, 0, 1ull << 60);
    expect_fail(&h, "metadata keys");
    header(&h, 1ull << 60, 0);
    expect_fail(&h, "tensors");
    header(&h, 0, 1);
    put_u64(&h, 1ull << 62); /* key length */
    expect_fail(&h, "key 0");
    header(&h, 0, 1);
    put_str(&h, "k.str");
    put_u32(&h, VKPT_GGUF_STRING);
    put_u64(&h, 1000);
    expect_fail(&h, "k.str");
    header(&h, 0, 1);
    put_str(&h, "k.arr");
    put_u32(&h, VKPT_GGUF_ARRAY);
    put_u32(&h, VKPT_GGUF_U32);
    put_u64(&h, 1ull << 61);
    expect_fail(&h, "k.arr");
    header(&h, 0, 1);
    put_str(&h, "k.type");
    put_u32(&h, 99);
    expect_fail(&h, "unknown value type");
    header(&h, 0, 1);
    put_str(&h, "k.bool");
    put_u32(&h, VKPT_GGUF_BOOL);
    uint8_t two = 2;
    put(&h, &two, 1);
    expect_fail(&h, "k.bool");
    /* nested arrays deeper than the limit */
    header(&h, 0, 1);
    put_str(&h, "k.deep");
    put_u32(&h, VKPT_GGUF_ARRAY);
    for (int d = 0; d < 10; d++) {
        put_u32(&h, VKPT_GGUF_ARRAY);
        put_u64(&h, 1);
    }
    put_u32(&h, VKPT_GGUF_U8);
    put_u64(&h, 0);
    expect_fail(&h, "nested");
    header(&h, 0, 2);
    put_str(&h, "k.dup");
    put_u32(&h, VKPT_GGUF_U32);
    put_u32(&h, 1);
    put_str(&h, "k.dup");
    put_u32(&h, VKPT_GGUF_U32);
    put_u32(&h, 2);
    expect_fail(&h, "twice");
    header(&h, 0, 1);
    put_str(&h, "general.alignment");
    put_u32(&h, VKPT_GGUF_U32);
    put_u32(&h, 48);
    expect_fail(&h, "power of two");

    /* tensor infos */
    header(&h, 1, 0);
    put_str(&h, "t");
    put_u32(&h, 5);
    expect_fail(&h, "dimensions");
    header(&h, 1, 0);
    put_str(&h, "t");
    put_u32(&h, 2);
    put_u64(&h, 1ull << 35);
    put_u64(&h, 1ull << 35);
    put_u32(&h, VKPT_Q_F32);
    put_u64(&h, 0);
    expect_fail(&h, "dimension 1");
    header(&h, 1, 0);
    put_str(&h, "t");
    put_u32(&h, 1);
    put_u64(&h, 4);
    put_u32(&h, 77);
    put_u64(&h, 0);
    expect_fail(&h, "type id 77");
    header(&h, 1, 0);
    put_str(&h, "t.q8");
    put_u32(&h, 1);
    put_u64(&h, 31);
    put_u32(&h, VKPT_Q_Q8_0);
    put_u64(&h, 0);
    expect_fail(&h, "whole number");
    header(&h, 1, 0);
    put_str(&h, "t.mis");
    put_u32(&h, 1);
    put_u64(&h, 4);
    put_u32(&h, VKPT_Q_F32);
    put_u64(&h, 3);
    while (h.n % 32) put(&h, "", 1);
    put(&h, "0123456789abcdef0123456789abcdef", 32);
    expect_fail(&h, "not aligned");
    header(&h, 1, 0);
    put_str(&h, "t.past");
    put_u32(&h, 1);
    put_u64(&h, 64);
    put_u32(&h, VKPT_Q_F32);
    put_u64(&h, 0);
    while (h.n % 32) put(&h, "", 1);
    put(&h, "0123456789abcdef", 16);
    expect_fail(&h, "beyond the end");
    header(&h, 2, 0);
    for (int k = 0; k < 2; k++) {
        put_str(&h, "t.same");
        put_u32(&h, 1);
        put_u64(&h, 4);
        put_u32(&h, VKPT_Q_F32);
        put_u64(&h, 0);
    }
    while (h.n % 32) put(&h, "", 1);
    put(&h, "0123456789abcdef", 16);
    expect_fail(&h, "twice");
    /* version 1, wrong magic, big-endian */
    header(&h, 0, 0);
    h.b[4] = 1;
    expect_fail(&h, "version 1");
    header(&h, 0, 0);
    h.b[0] = 'X';
    expect_fail(&h, "magic");
    header(&h, 0, 0);
    h.b[4] = 0, h.b[7] = 3;
    expect_fail(&h, "big-endian");
}

static void gguf_copy_kv_preserves_values(void **state)
{
    (void)state;
    vkpt_gguf *src;
    assert_int_equal(vkpt_gguf_open(STORIES, &src), 0);
    vkpt_gguf_writer *w;
    assert_int_equal(vkpt_gguf_writer_create(&w), 0);
    assert_int_equal(vkpt_gguf_writer_copy_kv(w, src, NULL, NULL), 0);
    char path[] = "/tmp/vkpt-gguf-copy-XXXXXX";
    close(mkstemp(path));
    assert_int_equal(vkpt_gguf_writer_write(w, path, NULL, NULL), 0);
    vkpt_gguf_writer_destroy(w);
    vkpt_gguf *g;
    assert_int_equal(vkpt_gguf_open(path, &g), 0);
    assert_int_equal(vkpt_gguf_n_kv(g), vkpt_gguf_n_kv(src));
    vkpt_span a, b;
    for (uint64_t i = 0; i < 512; i += 37) {
        assert_int_equal(vkpt_gguf_arr_str(g, "tokenizer.ggml.tokens", i, &a), 0);
        assert_int_equal(vkpt_gguf_arr_str(src, "tokenizer.ggml.tokens", i, &b), 0);
        assert_int_equal(a.n, b.n);
        assert_memory_equal(a.p, b.p, a.n);
    }
    vkpt_gguf_close(g);
    vkpt_gguf_close(src);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gguf_reads_the_real_stories260k_file),
        cmocka_unit_test(gguf_writer_round_trips_every_type),
        cmocka_unit_test(gguf_every_truncation_is_a_clean_error),
        cmocka_unit_test(gguf_random_corruption_never_crashes),
        cmocka_unit_test(gguf_hostile_headers_are_named_errors),
        cmocka_unit_test(gguf_copy_kv_preserves_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
