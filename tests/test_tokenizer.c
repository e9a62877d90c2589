/* engine/tokenizer: encoding against llama.cpp's test vectors and an
 * independent llama2.c-style reference, the pipeline pieces of
 * tokenizer.json, streaming decoding, stop strings, errors and allocation
 * failures. (Exactness against Hugging Face's own tokenizers on the real
 * tokenizer files is tests/node/tokenizer_compare.mjs.) */
#define _GNU_SOURCE
#include "vk_fixture.h"

#include "gguf.h"
#include "tok_int.h"
#include "vkpt/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIX VKPT_SOURCE_DIR "/tests/fixtures"

static vkpt_tokenizer *load(const char *path)
{
    vkpt_tokenizer *t = NULL;
    int err = vkpt_tokenizer_create_file(path, &t);
    if (err) fail_msg("loading %s: %s", path, vkpt_errmsg(err));
    return t;
}

static vkpt_tokenizer *load_json(const char *json)
{
    vkpt_tokenizer *t = NULL;
    int err = vkpt_tokenizer_create_json(json, strlen(json), NULL, 0, NULL, 0, &t);
    if (err) fail_msg("tokenizer.json: %s", vkpt_errmsg(err));
    return t;
}

static void encode(const vkpt_tokenizer *t, const char *s, size_t n, unsigned flags,
                   vkpt_tokens *out)
{
    out->n = 0;
    int err = vkpt_tokenizer_encode(t, s, n, flags, out);
    if (err) fail_msg("encode: %s", vkpt_errmsg(err));
}

static void assert_ids(const vkpt_tokenizer *t, const char *text, unsigned flags,
                       const int32_t *want, size_t n)
{
    vkpt_tokens v = {0};
    encode(t, text, strlen(text), flags, &v);
    bool same = v.n == n && (n == 0 || !memcmp(v.ids, want, n * sizeof *want));
    if (!same) {
        char got[512] = "", exp[512] = "";
        for (size_t i = 0; i < v.n && strlen(got) < 480; i++)
            snprintf(got + strlen(got), 16, "%d ", v.ids[i]);
        for (size_t i = 0; i < n && strlen(exp) < 480; i++)
            snprintf(exp + strlen(exp), 16, "%d ", want[i]);
        vkpt_tokens_free(&v);
        fail_msg("'%s': got [%s] want [%s]", text, got, exp);
    }
    vkpt_tokens_free(&v);
}
#define IDS(...) \
    ((const int32_t[]){__VA_ARGS__}), (sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t))

static char *decode_n(const vkpt_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                      size_t *len)
{
    char *s;
    int err = vkpt_tokenizer_decode(t, ids, n, flags, &s, len);
    if (err) fail_msg("decode: %s", vkpt_errmsg(err));
    assert_int_equal(strlen(s) <= *len, 1);
    return s;
}

static char *decode(const vkpt_tokenizer *t, const int32_t *ids, size_t n, unsigned flags)
{
    size_t len;
    return decode_n(t, ids, n, flags, &len);
}

/* ---- llama.cpp's tokenizer test vectors ----------------------------------------- */

static void tokenizer_ggml_vocab_vectors_match_llama_cpp(void **state)
{
    (void)state;
    static const char *const names[] = {"llama-spm", "gpt-2", "bert-bge"};
    for (size_t m = 0; m < 3; m++) {
        char path[512], inp_path[560], out_path[560];
        snprintf(path, sizeof path, FIX "/ggml-vocab/ggml-vocab-%s.gguf", names[m]);
        snprintf(inp_path, sizeof inp_path, "%s.inp", path);
        snprintf(out_path, sizeof out_path, "%s.out", path);
        vkpt_tokenizer *t = load(path);
        size_t inp_n, out_n;
        char *inp = vkpt_test_read_file(inp_path, &inp_n);
        char *out = vkpt_test_read_file(out_path, &out_n);
        assert_non_null(inp);
        assert_non_null(out);
        static const char sep[] = "\n__ggml_vocab_test__\n";
        char *p = inp, *o = out;
        int cases = 0;
        vkpt_tokens v = {0};
        for (;;) {
            char *e = strstr(p, sep);
            if (!e) break;
            char *ol = strchr(o, '\n');
            assert_non_null(ol);
            *ol = 0;
            /* llama.cpp's test: no BOS, special tokens not parsed */
            encode(t, p, (size_t)(e - p), 0, &v);
            int32_t want[1024];
            size_t nw = 0;
            for (char *q = o; *q;) {
                char *end;
                long x = strtol(q, &end, 10);
                if (end == q) break;
                want[nw++] = (int32_t)x;
                q = end;
            }
            if (v.n != nw || memcmp(v.ids, want, nw * sizeof *want))
                fail_msg("%s case %d ('%.*s'): %zu ids, want %zu", names[m], cases, (int)(e - p), p,
                         v.n, nw);
            cases++;
            p = e + sizeof sep - 1;
            o = ol + 1;
        }
        assert_int_equal(cases, 46);
        vkpt_tokens_free(&v);
        free(inp);
        free(out);
        vkpt_tokenizer_destroy(t);
    }
}

/* ---- stories260K: GGUF SentencePiece vs a llama2.c-style reference ------------------ */

typedef struct ref_vocab {
    char *str[512];
    float score[512];
} ref_vocab;

static int ref_lookup(const ref_vocab *rv, const char *s, size_t n)
{
    for (int i = 0; i < 512; i++)
        if (strlen(rv->str[i]) == n && !memcmp(rv->str[i], s, n)) return i;
    return -1;
}

/* llama2.c's encoder: a " " prefix, code points (or raw bytes + 3), then
 * repeatedly merge the adjacent pair whose concatenation scores best
 * (leftmost on ties). Written here from the algorithm, as an oracle. */
static size_t ref_encode(const ref_vocab *rv, const char *text, int32_t *out)
{
    size_t n = 0;
    out[n++] = 1;
    if (text[0]) out[n++] = ref_lookup(rv, " ", 1);
    for (const char *c = text; *c;) {
        size_t k = 1;
        while (c[k] && ((unsigned char)c[k] & 0xC0) == 0x80 && k < 4) k++;
        int id = ref_lookup(rv, c, k);
        if (id >= 0)
            out[n++] = id;
        else
            for (size_t b = 0; b < k; b++) out[n++] = (unsigned char)c[b] + 3;
        c += k;
    }
    for (;;) {
        float best = -1e10f;
        int best_id = -1;
        size_t best_i = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            char buf[256];
            snprintf(buf, sizeof buf, "%s%s", rv->str[out[i]], rv->str[out[i + 1]]);
            int id = ref_lookup(rv, buf, strlen(buf));
            if (id >= 0 && rv->score[id] > best) {
                best = rv->score[id];
                best_id = id;
                best_i = i;
            }
        }
        if (best_id < 0) break;
        out[best_i] = best_id;
        memmove(out + best_i + 1, out + best_i + 2, (n - best_i - 2) * sizeof *out);
        n--;
    }
    return n;
}

static void tokenizer_spm_matches_llama2c_on_stories260k(void **state)
{
    (void)state;
    ref_vocab rv;
    FILE *f = fopen(FIX "/tok512/tok512.bin", "rb");
    assert_non_null(f);
    int max_len;
    assert_int_equal(fread(&max_len, 4, 1, f), 1);
    for (int i = 0; i < 512; i++) {
        int len;
        assert_int_equal(fread(&rv.score[i], 4, 1, f), 1);
        assert_int_equal(fread(&len, 4, 1, f), 1);
        rv.str[i] = calloc(1, (size_t)len + 1);
        assert_int_equal(fread(rv.str[i], 1, (size_t)len, f), (size_t)len);
    }
    fclose(f);
    vkpt_tokenizer *t = load(VKPT_SOURCE_DIR "/models/stories260K/stories260K.gguf");
    assert_ids(t, "Once upon a time", VKPT_TOK_DEFAULT, IDS(1, 403, 407, 261, 378));

    static const char *const texts[] = {"Once upon a time",
                                        "Lily and Ben went to the park.",
                                        " leading space",
                                        "  two spaces",
                                        "trailing space ",
                                        "Hello,  world!\n\nNew paragraph.",
                                        "tabs\tand\nnewlines\r\n",
                                        "123 4567 89",
                                        "naïve café",
                                        "中文",
                                        "😀 emoji",
                                        "He said \"hi\" and she said 'bye'.",
                                        "a",
                                        " ",
                                        "!!!???...",
                                        "The quick brown fox jumps over the lazy dog.",
                                        "supercalifragilisticexpialidocious"};
    int32_t want[4096];
    vkpt_tokens v = {0};
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 42);
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz   ,.!?'\nTHEO0123\xC3\xA9";
    for (int k = 0; k < 217; k++) {
        char buf[200];
        const char *s;
        if (k < (int)(sizeof texts / sizeof texts[0])) {
            s = texts[k];
        } else {
            size_t len = 1 + vkpt_test_rng_u64(&r) % 120, i = 0;
            while (i < len) {
                char c = alphabet[vkpt_test_rng_u64(&r) % (sizeof alphabet - 1)];
                if ((unsigned char)c >= 0x80) { /* keep é whole */
                    buf[i++] = '\xC3';
                    buf[i++] = '\xA9';
                } else {
                    buf[i++] = c;
                }
            }
            buf[i] = 0;
            s = buf;
        }
        size_t nw = ref_encode(&rv, s, want);
        encode(t, s, strlen(s), VKPT_TOK_DEFAULT, &v);
        if (v.n != nw || memcmp(v.ids, want, nw * sizeof *want))
            fail_msg("stories260K '%s': %zu ids, llama2.c reference %zu", s, v.n, nw);
        /* and back: the leading space llama2.c adds is stripped by the decoder */
        char *back = decode(t, v.ids, v.n, VKPT_DETOK_SKIP_SPECIAL);
        assert_string_equal(back, s);
        vkpt_free(back);
    }
    vkpt_tokens_free(&v);
    for (int i = 0; i < 512; i++) free(rv.str[i]);
    vkpt_tokenizer_destroy(t);
}

/* ---- added / special tokens ------------------------------------------------------------- */

static void tokenizer_special_tokens_are_matched_unless_plain(void **state)
{
    (void)state;
    vkpt_tokenizer *t = load(FIX "/ggml-vocab/ggml-vocab-gpt-2.gguf");
    assert_ids(t, "a<|endoftext|>b", VKPT_TOK_PARSE_SPECIAL, IDS(64, 50256, 65));
    /* as plain text it is ordinary BPE over the characters */
    vkpt_tokens v = {0};
    encode(t, "a<|endoftext|>b", 15, 0, &v);
    assert_true(v.n > 3);
    for (size_t i = 0; i < v.n; i++) assert_int_not_equal(v.ids[i], 50256);
    vkpt_tokens_free(&v);
    assert_true(vkpt_tokenizer_is_special(t, 50256));
    assert_false(vkpt_tokenizer_is_special(t, 64));
    vkpt_tokenizer_destroy(t);

    /* the HF fixture: <|eot_id|> is special; BOS comes from no post-processor */
    t = load(VKPT_SOURCE_DIR "/tests/fixtures/hf/llama");
    vkpt_tokens w = {0};
    encode(t, "hi<|eot_id|>", 12, VKPT_TOK_DEFAULT, &w);
    assert_true(w.n >= 2);
    assert_int_equal(w.ids[w.n - 1], 4);
    const vkpt_tokenizer_specials *sp = vkpt_tokenizer_get_specials(t);
    assert_int_equal(sp->bos, 0);
    assert_int_equal(sp->eos, 1);
    assert_true(vkpt_tokenizer_is_eog(t, 1));
    assert_true(vkpt_tokenizer_is_eog(t, 4)); /* <|eot_id|> */
    vkpt_tokens_free(&w);
    vkpt_tokenizer_destroy(t);
}

/* ---- tokenizer.json pipeline pieces (tiny in-memory files) -------------------------- */

/* A BPE over single characters with no merges: ids show the pieces. */
static const char char_vocab[] =
    "\"vocab\":{\"[UNK]\":0,\"a\":1,\"b\":2,\" \":3,\"\\ufeff\":4,\"\\u0085\":5,\"\\u180e\":6,"
    "\"c\":7,\"\\u2581\":8,\"1\":9,\"2\":10,\"3\":11,\"A\":12,\"<x>\":13,\"d\":14},\"merges\":[]";

static vkpt_tokenizer *char_tok(const char *pre, const char *norm, const char *added)
{
    char json[4096];
    snprintf(
        json, sizeof json,
        "{\"added_tokens\":[%s],\"normalizer\":%s,\"pre_tokenizer\":%s,\"post_processor\":null,"
        "\"decoder\":null,\"model\":{\"type\":\"BPE\",\"unk_token\":\"[UNK]\",%s}}",
        added, norm, pre, char_vocab);
    return load_json(json);
}

static void tokenizer_split_regex_whitespace_is_onigurumas(void **state)
{
    (void)state;
    /* Split on \s, removed: U+0085 is whitespace (dropped); U+FEFF and U+180E
     * are not (kept), as in Hugging Face's Rust tokenizers. */
    vkpt_tokenizer *t = char_tok("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s\"},"
                                 "\"behavior\":\"Removed\",\"invert\":false}",
                                 "null", "");
    assert_ids(t,
               "a\xC2\x85"
               "b",
               0, IDS(1, 2));
    assert_ids(t,
               "a\xEF\xBB\xBF"
               "b",
               0, IDS(1, 4, 2));
    assert_ids(t,
               "a\xE1\xA0\x8E"
               "b",
               0, IDS(1, 6, 2));
    assert_ids(t, "a b", 0, IDS(1, 2));
    vkpt_tokenizer_destroy(t);
    /* \S inside and outside classes, \w with marks */
    t = char_tok("{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\S+\"},\"behavior\":\"Isolated\","
                 "\"invert\":false}",
                 "null", "");
    assert_ids(t,
               "ab \xEF\xBB\xBF"
               "c",
               0, IDS(1, 2, 3, 4, 7));
    vkpt_tokenizer_destroy(t);
}

static void tokenizer_split_behaviours_follow_hugging_face(void **state)
{
    (void)state;
    /* pieces are visible through merges: merge "a b" exists, so "ab" is one
     * token only when a and b land in the same piece */
    static const char *const behaviours[] = {"Removed", "Isolated", "MergedWithPrevious",
                                             "MergedWithNext", "Contiguous"};
    static const int32_t want[5][8] = {
        {15, 15, -1},       /* ab ab */
        {15, 3, 15, -1},    /* ab, " ", ab */
        {15, 3, 15, -1},    /* "ab " "ab": space joins the previous piece; no merge across */
        {15, 3, 15, -1},    /* "ab" " ab" */
        {15, 3, 3, 15, -1}, /* ab "  " ab */
    };
    static const char *const texts[] = {"ab ab", "ab ab", "ab ab", "ab ab", "ab  ab"};
    for (int b = 0; b < 5; b++) {
        char json[2048];
        snprintf(
            json, sizeof json,
            "{\"added_tokens\":[],\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Split\","
            "\"pattern\":"
            "{\"String\":\" "
            "\"},\"behavior\":\"%s\",\"invert\":false},\"post_processor\":null,\"decoder\":null,"
            "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1,\"b\":2,\" \":3,\"ab\":15,\"b \":16,\" "
            "a\":17},"
            "\"merges\":[\"a b\"]}}",
            behaviours[b]);
        vkpt_tokenizer *t = load_json(json);
        size_t n = 0;
        while (want[b][n] >= 0) n++;
        assert_ids(t, texts[b], 0, want[b], n);
        vkpt_tokenizer_destroy(t);
    }
}

static void tokenizer_wordpiece_with_bert_normalizer(void **state)
{
    (void)state;
    vkpt_tokenizer *t =
        load_json("{\"added_tokens\":[{\"id\":0,\"content\":\"[PAD]\",\"special\":true},{\"id\":1,"
                  "\"content\":\"[UNK]\","
                  "\"special\":true},{\"id\":2,\"content\":\"[CLS]\",\"special\":true},{\"id\":3,"
                  "\"content\":\"[SEP]\","
                  "\"special\":true}],"
                  "\"normalizer\":{\"type\":\"BertNormalizer\",\"clean_text\":true,\"handle_"
                  "chinese_chars\":true,"
                  "\"strip_accents\":null,\"lowercase\":true},\"pre_tokenizer\":{\"type\":"
                  "\"BertPreTokenizer\"},"
                  "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{"
                  "\"SpecialToken\":{\"id\":\"[CLS]\"}},"
                  "{\"Sequence\":{\"id\":\"A\"}},{\"SpecialToken\":{\"id\":\"[SEP]\"}}],\"special_"
                  "tokens\":{\"[CLS]\":{"
                  "\"id\":\"[CLS]\",\"ids\":[2]},\"[SEP]\":{\"id\":\"[SEP]\",\"ids\":[3]}}},"
                  "\"decoder\":{\"type\":\"WordPiece\",\"prefix\":\"##\",\"cleanup\":true},"
                  "\"model\":{\"type\":\"WordPiece\",\"unk_token\":\"[UNK]\",\"continuing_subword_"
                  "prefix\":\"##\","
                  "\"max_input_chars_per_word\":100,\"vocab\":{\"[PAD]\":0,\"[UNK]\":1,\"[CLS]\":2,"
                  "\"[SEP]\":3,"
                  "\"hello\":4,\"world\":5,\",\":6,\"!\":7,\"un\":8,\"##aff\":9,\"##able\":10,"
                  "\"cafe\":11,\"中\":12,"
                  "\"文\":13,\"'\":14,\"s\":15}}}");
    assert_ids(t, "Hello, WORLD!", VKPT_TOK_DEFAULT, IDS(2, 4, 6, 5, 7, 3));
    assert_ids(t, "unaffable", 0, IDS(8, 9, 10));
    assert_ids(t, "CAFÉ\t中文", 0, IDS(11, 12, 13)); /* accents stripped, CJK split */
    assert_ids(t, "unknownword hello", 0, IDS(1, 4));
    int32_t ids[] = {2, 4, 6, 5, 7, 8, 9, 10, 14, 15, 3};
    char *s = decode(t, ids, 11, VKPT_DETOK_SKIP_SPECIAL | VKPT_DETOK_CLEANUP);
    assert_string_equal(s, "hello, world! unaffable's");
    vkpt_free(s);
    vkpt_tokenizer_destroy(t);
}

static void tokenizer_metaspace_and_byte_fallback(void **state)
{
    (void)state;
    /* Metaspace (prepend "first", split) + byte fallback + Metaspace decoder */
    vkpt_tokenizer *t =
        load_json("{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,"
                  "\"content\":\"<s>\","
                  "\"special\":true}],\"normalizer\":null,"
                  "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_"
                  "scheme\":\"first\","
                  "\"split\":true},\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":["
                  "{\"SpecialToken\":"
                  "{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<s>\":{"
                  "\"id\":\"<s>\",\"ids\":[1]}}},"
                  "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{"
                  "\"type\":\"Metaspace\","
                  "\"replacement\":\"\\u2581\",\"prepend_scheme\":\"first\",\"split\":true}]},"
                  "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"byte_fallback\":true,"
                  "\"fuse_unk\":true,"
                  "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"<0xC3>\":2,\"<0xA9>\":3,\"\\u2581\":4,\"h\":"
                  "5,\"i\":6,\"\\u2581h\":7,"
                  "\"\\u2581hi\":8},\"merges\":[\"\\u2581 h\",\"\\u2581h i\"]}}");
    /* "hi hi" -> "▁hi" "▁hi": split at ▁ keeps merges inside words */
    assert_ids(t, "hi hi", VKPT_TOK_DEFAULT, IDS(1, 8, 8));
    /* é is not in the vocabulary: its UTF-8 bytes */
    assert_ids(t, "hé", 0, IDS(7, 2, 3));
    /* "first": after a special token no ▁ is prepended */
    assert_ids(t, "<s>hi", VKPT_TOK_PARSE_SPECIAL, IDS(1, 5, 6));
    int32_t ids[] = {1, 8, 2, 3, 8};
    char *s = decode(t, ids, 5, VKPT_DETOK_SKIP_SPECIAL);
    assert_string_equal(s, "hi\xC3\xA9 hi"); /* first token's leading space stripped */
    vkpt_free(s);
    vkpt_tokenizer_destroy(t);
}

static void tokenizer_normalizers_and_added_token_flags(void **state)
{
    (void)state;
    /* Lowercase + NFKC; a normalized added token matches after normalization;
     * lstrip/rstrip eat the spaces around "<x>" */
    vkpt_tokenizer *t = char_tok(
        "null",
        "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFKC\"},{\"type\":\"Lowercase\"},"
        "{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"[0-9]+\"},\"content\":\"1\"}]}",
        "{\"id\":13,\"content\":\"<x>\",\"special\":false,\"lstrip\":true,\"rstrip\":true,"
        "\"normalized\":false},"
        "{\"id\":14,\"content\":\"D\",\"special\":false,\"normalized\":true}");
    assert_ids(t, "AB", 0, IDS(1, 2));               /* lowercased */
    assert_ids(t, "\xEF\xBD\x81", 0, IDS(1));        /* fullwidth a -> a (NFKC) */
    assert_ids(t, "a  <x>  b", 0, IDS(1, 13, 2));    /* lstrip + rstrip */
    assert_ids(t, "a 123 b", 0, IDS(1, 3, 9, 3, 2)); /* regex Replace */
    assert_ids(t, "cDc", 0, IDS(7, 14, 7)); /* "D" -> "d" matches the normalized added token */
    vkpt_tokenizer_destroy(t);
}

/* ---- decoding ---------------------------------------------------------------------------- */

static bool valid_utf8(const char *s, size_t n)
{
    return vkpt__utf8_valid_prefix((const uint8_t *)s, n) == n;
}

static void tokenizer_streaming_holds_incomplete_characters(void **state)
{
    (void)state;
    /* SentencePiece byte fallback: 😀 is four <0xNN> tokens */
    vkpt_tokenizer *t = load(FIX "/ggml-vocab/ggml-vocab-llama-spm.gguf");
    vkpt_tokens v = {0};
    encode(t, "I \xF0\x9F\x98\x80 it", 9, VKPT_TOK_DEFAULT, &v);
    vkpt_detok *d;
    assert_int_equal(vkpt_detok_create(t, VKPT_DETOK_SKIP_SPECIAL, &d), 0);
    char all[256] = "";
    int empty = 0;
    for (size_t i = 0; i < v.n; i++) {
        vkpt_span s;
        assert_int_equal(vkpt_detok_push(d, v.ids[i], &s), 0);
        assert_true(valid_utf8(s.p, s.n));
        if (!s.n) empty++;
        strncat(all, s.p, s.n);
    }
    vkpt_span s;
    vkpt_detok_flush(d, &s);
    assert_int_equal(s.n, 0);
    assert_string_equal(all, "I \xF0\x9F\x98\x80 it");
    assert_true(empty >= 3); /* BOS, then three held bytes of the emoji */
    /* an unfinished character at the end comes out as U+FFFD */
    vkpt_detok_reset(d);
    int32_t part[] = {3 + 0xF0, 3 + 0x9F};
    for (int i = 0; i < 2; i++) {
        vkpt_detok_push(d, part[i], &s);
        assert_int_equal(s.n, 0);
    }
    vkpt_detok_flush(d, &s);
    assert_int_equal(s.n, 3);
    assert_memory_equal(s.p, "\xEF\xBF\xBD", 3);
    vkpt_detok_destroy(d);
    vkpt_tokens_free(&v);
    vkpt_tokenizer_destroy(t);

    /* byte-level BPE: a CJK character split across tokens */
    t = load(FIX "/ggml-vocab/ggml-vocab-gpt-2.gguf");
    encode(t, "\xE4\xB8\xAD\xE6\x96\x87 ok", 9, 0, &v);
    assert_int_equal(vkpt_detok_create(t, 0, &d), 0);
    all[0] = 0;
    for (size_t i = 0; i < v.n; i++) {
        vkpt_detok_push(d, v.ids[i], &s);
        assert_true(valid_utf8(s.p, s.n));
        strncat(all, s.p, s.n);
    }
    assert_string_equal(all, "\xE4\xB8\xAD\xE6\x96\x87 ok");
    vkpt_detok_destroy(d);
    vkpt_tokens_free(&v);
    vkpt_tokenizer_destroy(t);
}

static void tokenizer_stream_equals_decode_on_random_ids(void **state)
{
    (void)state;
    static const char *const paths[] = {
        FIX "/ggml-vocab/ggml-vocab-llama-spm.gguf", FIX "/ggml-vocab/ggml-vocab-gpt-2.gguf",
        FIX "/ggml-vocab/ggml-vocab-bert-bge.gguf", VKPT_SOURCE_DIR "/tests/fixtures/hf/llama"};
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 7);
    for (size_t m = 0; m < 4; m++) {
        vkpt_tokenizer *t = load(paths[m]);
        int32_t nv = vkpt_tokenizer_n_vocab(t);
        for (int round = 0; round < 60; round++) {
            int32_t ids[64];
            size_t n = 1 + vkpt_test_rng_u64(&r) % 64;
            for (size_t i = 0; i < n; i++) {
                /* favour low ids: byte tokens, where broken UTF-8 comes from */
                uint64_t x = vkpt_test_rng_u64(&r);
                ids[i] = (int32_t)(x % 3 ? (x >> 8) % (nv < 300 ? nv : 300) : (x >> 8) % nv);
            }
            unsigned flags = round % 2 ? VKPT_DETOK_SKIP_SPECIAL : 0;
            size_t wn;
            char *whole = decode_n(t, ids, n, flags, &wn);
            vkpt_detok *d;
            assert_int_equal(vkpt_detok_create(t, flags, &d), 0);
            vkpt__buf b = {0};
            for (size_t i = 0; i < n; i++) {
                vkpt_span s;
                vkpt_detok_push(d, ids[i], &s);
                assert_true(valid_utf8(s.p, s.n));
                vkpt__buf_put(&b, s.p, s.n);
            }
            vkpt_span s;
            vkpt_detok_flush(d, &s);
            vkpt__buf_put(&b, s.p, s.n);
            /* WordPiece's per-token cleanup and a Strip's tail are the only
             * end-of-text rules; neither applies here without CLEANUP */
            assert_int_equal(b.n, wn);
            assert_memory_equal(b.p ? b.p : "", whole, b.n);
            assert_true(valid_utf8(whole, wn));
            vkpt__buf_free(&b);
            vkpt_free(whole);
            vkpt_detok_destroy(d);
        }
        vkpt_tokenizer_destroy(t);
    }
}

static void tokenizer_decode_replaces_invalid_bytes_like_hugging_face(void **state)
{
    (void)state;
    vkpt_tokenizer *t = load(FIX "/ggml-vocab/ggml-vocab-llama-spm.gguf");
    int32_t a = vkpt_tokenizer_find(t, "a", 1);
    assert_true(a >= 0);
    /* E2 82 then "a": one U+FFFD for the maximal subpart, then "a";
     * a lone continuation byte is its own U+FFFD */
    int32_t ids[] = {3 + 0xE2, 3 + 0x82, a, 3 + 0x80, 3 + 0x80};
    char *s = decode(t, ids, 5, 0);
    assert_string_equal(s, "\xEF\xBF\xBD"
                           "a\xEF\xBF\xBD\xEF\xBF\xBD");
    vkpt_free(s);
    /* the text decoder's U+FFFD for invalid input text */
    vkpt_tokens v = {0};
    encode(t, "x\xFFy", 3, 0, &v);
    char *back = decode(t, v.ids, v.n, 0);
    assert_string_equal(back, "x\xEF\xBF\xBDy");
    vkpt_free(back);
    vkpt_tokens_free(&v);
    /* token strings and pieces */
    vkpt_span tok = vkpt_tokenizer_token(t, 3 + 0x41);
    assert_int_equal(tok.n, 6);
    assert_memory_equal(tok.p, "<0x41>", 6);
    vkpt_span pc = vkpt_tokenizer_piece(t, 3 + 0x41);
    assert_int_equal(pc.n, 1);
    assert_int_equal(pc.p[0], 'A');
    assert_null(vkpt_tokenizer_token(t, 1 << 20).p);
    vkpt_tokenizer_destroy(t);
}

static void tokenizer_stop_strings_are_found_across_tokens(void **state)
{
    (void)state;
    const char *stops[] = {"</answer>", "STOP"};
    vkpt_stop *s;
    assert_int_equal(vkpt_stop_create(stops, 2, &s), 0);
    vkpt_span e;
    assert_int_equal(vkpt_stop_feed(s, "The answer is 4.</an", 20, &e), -1);
    assert_int_equal(e.n, 16); /* "</an" is held back */
    assert_memory_equal(e.p, "The answer is 4.", 16);
    assert_int_equal(vkpt_stop_feed(s, "sw", 2, &e), -1);
    assert_int_equal(e.n, 0);
    assert_int_equal(vkpt_stop_feed(s, "er> tail", 8, &e), 0);
    assert_int_equal(e.n, 0); /* nothing before the stop string was pending */
    assert_int_equal(vkpt_stop_feed(s, "more", 4, &e), -1);
    assert_int_equal(e.n, 0);
    /* a false start is released once it cannot match */
    vkpt_stop_reset(s);
    assert_int_equal(vkpt_stop_feed(s, "</a", 3, &e), -1);
    assert_int_equal(e.n, 0);
    assert_int_equal(vkpt_stop_feed(s, "ble>", 4, &e), -1);
    assert_int_equal(e.n, 7);
    assert_memory_equal(e.p, "</able>", 7);
    assert_int_equal(vkpt_stop_feed(s, "ST", 2, &e), -1);
    e = vkpt_stop_flush(s);
    assert_int_equal(e.n, 2);
    assert_memory_equal(e.p, "ST", 2);
    /* the earliest match wins */
    vkpt_stop_reset(s);
    assert_int_equal(vkpt_stop_feed(s, "xSTOP</answer>", 14, &e), 1);
    assert_int_equal(e.n, 1);
    vkpt_stop_destroy(s);
}

/* ---- long inputs, bad inputs, errors, allocation failures ------------------------------- */

static void tokenizer_long_word_without_spaces_round_trips(void **state)
{
    (void)state;
    /* 1 MB with no spaces: a single pre-token for SentencePiece, long
     * regex runs for byte-level BPE. Quadratic merging would not finish
     * within the test timeout. */
    size_t n = 1 << 20;
    char *text = malloc(n + 1);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 3);
    for (size_t i = 0; i < n; i++) text[i] = "abcdefghij"[vkpt_test_rng_u64(&r) % 10];
    text[n] = 0;
    static const char *const paths[] = {FIX "/ggml-vocab/ggml-vocab-llama-spm.gguf",
                                        FIX "/ggml-vocab/ggml-vocab-gpt-2.gguf"};
    for (int m = 0; m < 2; m++) {
        vkpt_tokenizer *t = load(paths[m]);
        vkpt_tokens v = {0};
        encode(t, text, n, 0, &v);
        assert_true(v.n > n / 8 && v.n < n);
        char *back = decode(t, v.ids, v.n, 0);
        assert_int_equal(strlen(back), n);
        assert_memory_equal(back, text, n);
        vkpt_free(back);
        vkpt_tokens_free(&v);
        vkpt_tokenizer_destroy(t);
    }
    free(text);
}

static void tokenizer_load_errors_say_what_is_wrong(void **state)
{
    (void)state;
    vkpt_tokenizer *t = NULL;
    const char *bad = "{\"model\": 3";
    assert_int_equal(vkpt_tokenizer_create_json(bad, strlen(bad), NULL, 0, NULL, 0, &t),
                     VKPT_EFORMAT);
    assert_null(t);
    const char *uni = "{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}";
    assert_int_equal(vkpt_tokenizer_create_json(uni, strlen(uni), NULL, 0, NULL, 0, &t),
                     VKPT_EUNSUPPORTED);
    assert_non_null(strstr(vkpt_errmsg(VKPT_EUNSUPPORTED), "Unigram"));
    const char *pre =
        "{\"pre_tokenizer\":{\"type\":\"UnicodeScripts\"},\"model\":{\"type\":\"BPE\",\"vocab\":"
        "{\"a\":0},\"merges\":[]}}";
    assert_int_equal(vkpt_tokenizer_create_json(pre, strlen(pre), NULL, 0, NULL, 0, &t),
                     VKPT_EUNSUPPORTED);
    assert_non_null(strstr(vkpt_errmsg(VKPT_EUNSUPPORTED), "UnicodeScripts"));
    const char *rx =
        "{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},\"behavior\":"
        "\"Isolated\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
    assert_int_equal(vkpt_tokenizer_create_json(rx, strlen(rx), NULL, 0, NULL, 0, &t),
                     VKPT_EFORMAT);
    assert_non_null(strstr(vkpt_errmsg(VKPT_EFORMAT), "regex"));
    /* a chat template with a syntax error fails the load, with its position */
    const char *ok = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
    const char *cfg =
        "{\"chat_template\": \"{% for m in messages %}\\n{{ m.content | nosuchfilter }}\"}";
    assert_int_equal(vkpt_tokenizer_create_json(ok, strlen(ok), cfg, strlen(cfg), NULL, 0, &t),
                     VKPT_EPARSE);
    assert_non_null(strstr(vkpt_errmsg(VKPT_EPARSE), "line 2, column 16"));
    assert_non_null(strstr(vkpt_errmsg(VKPT_EPARSE), "nosuchfilter"));
    assert_int_equal(vkpt_tokenizer_create_file("/nonexistent/folder", &t), VKPT_EIO);
    assert_null(t);
}

static int g_fail_at, g_calls;
static void *failing_malloc(size_t n)
{
    return ++g_calls == g_fail_at ? NULL : malloc(n);
}
static void *failing_realloc(void *p, size_t n)
{
    return ++g_calls == g_fail_at ? NULL : realloc(p, n);
}

static void tokenizer_allocation_failures_fail_cleanly(void **state)
{
    (void)state;
    size_t n;
    char *json = vkpt_test_read_file(VKPT_SOURCE_DIR "/tests/fixtures/hf/llama/tokenizer.json", &n);
    char *cfg =
        vkpt_test_read_file(VKPT_SOURCE_DIR "/tests/fixtures/hf/llama/tokenizer_config.json", NULL);
    assert_non_null(json);
    vkpt_alloc_hooks h = {failing_malloc, failing_realloc, free};
    int failures = 0;
    for (g_fail_at = 1;; g_fail_at += 7) {
        g_calls = 0;
        vkpt_set_alloc_hooks(&h);
        vkpt_tokenizer *t = NULL;
        int err = vkpt_tokenizer_create_json(json, n, cfg, strlen(cfg), NULL, 0, &t);
        vkpt_tokens v = {0};
        int err2 =
            err ? 0 : vkpt_tokenizer_encode(t, "Hello world, hello!", 19, VKPT_TOK_DEFAULT, &v);
        vkpt_set_alloc_hooks(NULL);
        vkpt_tokens_free(&v);
        vkpt_tokenizer_destroy(t);
        if (!err && !err2 && g_calls < g_fail_at) break; /* every allocation passed */
        if (err) {
            if (err != VKPT_ENOMEM)
                fail_msg("allocation %d failed: %s", g_fail_at, vkpt_errmsg(err));
            assert_null(t);
            failures++;
        }
    }
    assert_true(failures > 10);
    free(json);
    free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tokenizer_ggml_vocab_vectors_match_llama_cpp),
        cmocka_unit_test(tokenizer_spm_matches_llama2c_on_stories260k),
        cmocka_unit_test(tokenizer_special_tokens_are_matched_unless_plain),
        cmocka_unit_test(tokenizer_split_regex_whitespace_is_onigurumas),
        cmocka_unit_test(tokenizer_split_behaviours_follow_hugging_face),
        cmocka_unit_test(tokenizer_wordpiece_with_bert_normalizer),
        cmocka_unit_test(tokenizer_metaspace_and_byte_fallback),
        cmocka_unit_test(tokenizer_normalizers_and_added_token_flags),
        cmocka_unit_test(tokenizer_streaming_holds_incomplete_characters),
        cmocka_unit_test(tokenizer_stream_equals_decode_on_random_ids),
        cmocka_unit_test(tokenizer_decode_replaces_invalid_bytes_like_hugging_face),
        cmocka_unit_test(tokenizer_stop_strings_are_found_across_tokens),
        cmocka_unit_test(tokenizer_long_word_without_spaces_round_trips),
        cmocka_unit_test(tokenizer_load_errors_say_what_is_wrong),
        cmocka_unit_test(tokenizer_allocation_failures_fail_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
