/* Fuzz target for the GGUF reader: open a buffer, and when it opens, touch
 * every key through every getter and every tensor's bytes. Built as a
 * libFuzzer target with -DVKPT_FUZZ=ON (clang), and always as a replay test
 * that runs the committed corpus (tests/fuzz/corpus/gguf) through the same
 * function. */
#include "gguf.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vkpt_gguf *g;
    if (vkpt_gguf_open_mem(data, size, &g)) return 0;
    volatile uint64_t sink = 0;
    for (int64_t i = 0; i < vkpt_gguf_n_kv(g); i++) {
        vkpt_span k = vkpt_gguf_key_at(g, i);
        char key[512];
        size_t n = k.n < sizeof key - 1 ? k.n : sizeof key - 1;
        memcpy(key, k.p, n);
        key[n] = 0;
        uint32_t u;
        int32_t s;
        uint64_t u64;
        float f;
        bool b;
        vkpt_span str;
        int et;
        uint64_t cnt;
        vkpt_gguf_get_u32(g, key, &u);
        vkpt_gguf_get_i32(g, key, &s);
        vkpt_gguf_get_u64(g, key, &u64);
        vkpt_gguf_get_f32(g, key, &f);
        vkpt_gguf_get_bool(g, key, &b);
        if (!vkpt_gguf_get_str(g, key, &str) && str.n) sink += (uint8_t)str.p[str.n - 1];
        if (!vkpt_gguf_get_arr(g, key, &et, &cnt)) {
            for (uint64_t j = 0; j < cnt && j < 64; j++) {
                int64_t iv;
                float fv;
                if (!vkpt_gguf_arr_str(g, key, j, &str) && str.n) sink += (uint8_t)str.p[0];
                if (!vkpt_gguf_arr_i64(g, key, j, &iv)) sink += (uint64_t)iv;
                if (!vkpt_gguf_arr_f32(g, key, j, &fv)) sink += (uint64_t)(fv != 0);
            }
            vkpt_gguf_arr_str(g, key, cnt, &str); /* one past the end: an error */
        }
    }
    for (int64_t i = 0; i < vkpt_gguf_n_tensors(g); i++) {
        const vkpt_gguf_tensor *t = vkpt_gguf_tensor_at(g, i);
        if (t->size) sink += t->data[0] + t->data[t->size - 1];
        char name[512];
        size_t n = t->name.n < sizeof name - 1 ? t->name.n : sizeof name - 1;
        memcpy(name, t->name.p, n);
        name[n] = 0;
        if (vkpt_gguf_find_tensor(g, name) == NULL && memchr(t->name.p, 0, t->name.n) == NULL)
            __builtin_trap();
    }
    (void)sink;
    vkpt_gguf_close(g);
    return 0;
}
