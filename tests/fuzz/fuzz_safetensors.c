/* Fuzz target for the safetensors reader: parse a buffer as one file and,
 * when it opens, touch every tensor's first and last byte and look each up
 * by name. Built as a libFuzzer target with -DVKPT_FUZZ=ON and always as a
 * corpus replay test (tests/fuzz/corpus/safetensors). */
#include "safetensors.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vkpt_safetensors *st;
    if (vkpt_st_open_mem(data, size, &st)) return 0;
    volatile unsigned sink = 0;
    for (size_t i = 0; i < vkpt_st_count(st); i++) {
        const vkpt_st_tensor *t = vkpt_st_at(st, i);
        if (t->size) sink += t->data[0] + t->data[t->size - 1];
        if (vkpt_st_find(st, t->name) != t) __builtin_trap();
        sink += vkpt_st_dtype_size(t->dtype);
    }
    (void)sink;
    vkpt_st_close(st);
    return 0;
}
