/* Fuzz target for the tokenizer.json loader and everything it configures:
 * the input is a tokenizer.json, optionally followed by a NUL byte and text.
 * When the file loads, the text (or a fixed sample) is encoded with and
 * without special tokens and parsing, decoded whole and streamed, and the
 * two decodings must agree. Built as a libFuzzer target with -DVKPT_FUZZ=ON
 * (clang), and always as a replay test over tests/fuzz/corpus/tokenizer_json. */
#include "vkpt/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_decode(const vkpt_tokenizer *t, const vkpt_tokens *v, unsigned flags)
{
    char *whole;
    size_t n;
    if (vkpt_tokenizer_decode(t, v->ids, v->n, flags, &whole, &n)) return;
    vkpt_detok *d;
    if (!vkpt_detok_create(t, flags, &d)) {
        size_t at = 0;
        for (size_t i = 0; i < v->n; i++) {
            vkpt_span s;
            vkpt_detok_push(d, v->ids[i], &s);
            if (at + s.n > n || memcmp(whole + at, s.p, s.n)) abort(); /* stream != decode */
            at += s.n;
        }
        vkpt_span s;
        vkpt_detok_flush(d, &s);
        if (at + s.n > n || memcmp(whole + at, s.p, s.n)) abort();
        vkpt_detok_destroy(d);
    }
    vkpt_free(whole);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20)) return 0;
    const uint8_t *nul = memchr(data, 0, size);
    size_t json_n = nul ? (size_t)(nul - data) : size;
    const char *text = "Hello world! <s> 123 \xC3\xA9\xE4\xB8\xAD \xF0\x9F\x98\x80 \n\n  end";
    size_t text_n = strlen(text);
    if (nul) {
        text = (const char *)nul + 1;
        text_n = size - json_n - 1;
        if (text_n > 4096) text_n = 4096;
    }
    vkpt_tokenizer *t;
    if (vkpt_tokenizer_create_json((const char *)data, json_n, NULL, 0, NULL, 0, &t)) return 0;
    static const unsigned flags[] = {VKPT_TOK_DEFAULT, 0, VKPT_TOK_ADD_SPECIAL};
    vkpt_tokens v = {0};
    for (size_t f = 0; f < 3; f++) {
        v.n = 0;
        if (vkpt_tokenizer_encode(t, text, text_n, flags[f], &v)) continue;
        for (size_t i = 0; i < v.n; i++)
            if (v.ids[i] < 0 || v.ids[i] >= vkpt_tokenizer_n_vocab(t)) abort();
        check_decode(t, &v, 0);
        check_decode(t, &v, VKPT_DETOK_SKIP_SPECIAL);
    }
    /* ids the tokenizer never produced decode safely too */
    v.n = 0;
    for (int32_t i = -2; i < 300; i += 7) vkpt_tokens_push(&v, i);
    check_decode(t, &v, 0);
    vkpt_tokens_free(&v);
    vkpt_tokenizer_destroy(t);
    return 0;
}
