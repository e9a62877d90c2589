/* vkpt tokenize: text to token ids (and back) with a model's tokenizer.
 *
 *   vkpt tokenize -m MODEL [--no-special] [--plain-special]
 *       reads one JSON string per line on stdin, writes one JSON array of ids
 *       per line; by default special tokens are added as Hugging Face's
 *       encode(text) adds them
 *   vkpt tokenize -m MODEL --decode [--skip-special] [--no-cleanup]
 *       reads one JSON array of ids per line, writes one JSON string per line
 *   vkpt tokenize -m MODEL --bench FILE [--reps N]
 *       encoding speed on the file's text, in MB/s on one core
 *   vkpt tokenize -m MODEL --info
 *
 * MODEL is a .gguf file, a tokenizer.json file, or a folder holding one.
 */
#define _GNU_SOURCE
#include "cmd.h"
#include "vkpt/tokenizer.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: vkpt tokenize -m MODEL [--no-special] [--plain-special]\n"
               "       vkpt tokenize -m MODEL --decode [--skip-special] [--no-cleanup]\n"
               "       vkpt tokenize -m MODEL --bench FILE [--reps N]\n"
               "       vkpt tokenize -m MODEL --info\n\n"
               "Reads one JSON string per line on stdin and writes one JSON array of token\n"
               "ids per line. MODEL is a .gguf file, a tokenizer.json file or a folder\n"
               "holding tokenizer.json (and tokenizer_config.json).\n\n"
               "  --no-special      do not add BOS/EOS/CLS/SEP (Hugging Face's\n"
               "                    add_special_tokens=False)\n"
               "  --plain-special   read special tokens written in the text as plain text\n"
               "  --decode          read JSON arrays of ids, write JSON strings\n"
               "  --skip-special    (--decode) leave special tokens out\n"
               "  --no-cleanup      (--decode) no clean_up_tokenization_spaces\n"
               "  --bench FILE      encoding speed over FILE's text\n"
               "  --reps N          (--bench) repetitions, best is reported (default 5)\n"
               "  --info            the tokenizer's kind, size and special tokens\n");
}

/* Print s[0..n) as a JSON string literal and a newline (NUL bytes included,
 * which cJSON's strings cannot hold). */
static void print_json_string(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (c < 0x20)
                printf("\\u%04x", c);
            else
                putchar(c);
        }
    }
    fputs("\"\n", stdout);
}

static int hex4(const char *p, const char *end, uint32_t *v)
{
    *v = 0;
    if (end - p < 4) return -1;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        *v = *v * 16 + (uint32_t)d;
    }
    return 0;
}

static size_t put_utf8(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decode one JSON string literal (the whole line) into `out` in place of
 * cJSON, which stops at \u0000. Lone surrogates become U+FFFD, as
 * JavaScript's TextEncoder makes them. Returns the length or -1. */
static ssize_t json_string(const char *s, size_t n, char *out)
{
    const char *p = s, *end = s + n;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    while (end > p && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ')) end--;
    if (end - p < 2 || *p != '"' || end[-1] != '"') return -1;
    p++;
    end--;
    size_t k = 0;
    while (p < end) {
        char c = *p++;
        if (c != '\\') {
            out[k++] = c;
            continue;
        }
        if (p >= end) return -1;
        char e = *p++;
        switch (e) {
        case '"':
        case '\\':
        case '/': out[k++] = e; break;
        case 'b': out[k++] = '\b'; break;
        case 'f': out[k++] = '\f'; break;
        case 'n': out[k++] = '\n'; break;
        case 'r': out[k++] = '\r'; break;
        case 't': out[k++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if (hex4(p, end, &cp)) return -1;
            p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u' &&
                !hex4(p + 2, end, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else if (cp >= 0xD800 && cp < 0xE000) {
                cp = 0xFFFD;
            }
            k += put_utf8(cp, out + k);
            break;
        }
        default: return -1;
        }
    }
    return (ssize_t)k;
}

static int do_encode(vkpt_tokenizer *t, unsigned flags)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    vkpt_tokens ids = {0};
    int err = 0, lineno = 0;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        char *text = malloc((size_t)len + 1);
        ssize_t tn = text ? json_string(line, (size_t)len, text) : -1;
        if (tn < 0) {
            free(text);
            fprintf(stderr, "vkpt tokenize: line %d is not a JSON string\n", lineno);
            err = 1;
            break;
        }
        ids.n = 0;
        int e = vkpt_tokenizer_encode(t, text, (size_t)tn, flags, &ids);
        free(text);
        if (e) {
            err = tool_fail(e, "tokenize");
            break;
        }
        fputc('[', stdout);
        for (size_t i = 0; i < ids.n; i++) printf(i ? ",%d" : "%d", ids.ids[i]);
        fputs("]\n", stdout);
    }
    free(line);
    vkpt_tokens_free(&ids);
    return err;
}

static int do_decode(vkpt_tokenizer *t, unsigned flags)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    vkpt_tokens ids = {0};
    int err = 0, lineno = 0;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)len), *e;
        if (!cJSON_IsArray(j)) {
            cJSON_Delete(j);
            fprintf(stderr, "vkpt tokenize --decode: line %d is not a JSON array\n", lineno);
            err = 1;
            break;
        }
        ids.n = 0;
        cJSON_ArrayForEach(e, j)
        {
            if (cJSON_IsNumber(e)) vkpt_tokens_push(&ids, (int32_t)e->valuedouble);
        }
        cJSON_Delete(j);
        char *text;
        size_t n;
        int r = vkpt_tokenizer_decode(t, ids.ids, ids.n, flags, &text, &n);
        if (r) {
            err = tool_fail(r, "decode");
            break;
        }
        print_json_string(text, n);
        vkpt_free(text);
    }
    free(line);
    vkpt_tokens_free(&ids);
    return err;
}

static int do_bench(vkpt_tokenizer *t, const char *path, int reps)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "vkpt tokenize: cannot open %s\n", path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc(n > 0 ? (size_t)n : 1);
    size_t got = text && n > 0 ? fread(text, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!text) return tool_fail(VKPT_ENOMEM, "bench");
    vkpt_tokens ids = {0};
    double best = 1e30, best_cpu = 1e30;
    int err = 0;
    for (int r = 0; r < reps && !err; r++) {
        ids.n = 0;
        struct timespec c0, c1;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
        uint64_t t0 = vkpt_now_ns();
        err = vkpt_tokenizer_encode(t, text, got, VKPT_TOK_DEFAULT, &ids);
        double s = (double)(vkpt_now_ns() - t0) / 1e9;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
        double cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
        if (s < best) best = s;
        if (cpu < best_cpu) best_cpu = cpu;
    }
    /* CPU time of the encoding thread: one core, whatever else the machine runs */
    if (!err)
        printf("tokenizer %s, %zu bytes, %zu tokens: best of %d %.3f s = %.1f MB/s; cpu %.3f s = "
               "%.1f MB/s\n",
               vkpt_tokenizer_kind(t), got, ids.n, reps, best, (double)got / 1e6 / best, best_cpu,
               (double)got / 1e6 / best_cpu);
    free(text);
    vkpt_tokens_free(&ids);
    return err ? tool_fail(err, "bench") : 0;
}

static void print_tok(const vkpt_tokenizer *t, const char *what, int32_t id)
{
    if (id < 0) return;
    vkpt_span s = vkpt_tokenizer_token(t, id);
    printf("  %-5s %d %.*s\n", what, id, (int)s.n, s.p ? s.p : "");
}

static int do_info(const vkpt_tokenizer *t)
{
    const vkpt_tokenizer_specials *sp = vkpt_tokenizer_get_specials(t);
    printf("kind %s, %d tokens, chat template: %s\n", vkpt_tokenizer_kind(t),
           vkpt_tokenizer_n_vocab(t), vkpt_tokenizer_chat_template(t) ? "yes" : "no");
    print_tok(t, "bos", sp->bos);
    print_tok(t, "eos", sp->eos);
    print_tok(t, "unk", sp->unk);
    print_tok(t, "pad", sp->pad);
    print_tok(t, "sep", sp->sep);
    print_tok(t, "cls", sp->cls);
    print_tok(t, "mask", sp->mask);
    const int32_t *eog;
    size_t n = vkpt_tokenizer_eog(t, &eog);
    for (size_t i = 0; i < n; i++) print_tok(t, "eog", eog[i]);
    return 0;
}

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"no-special", no_argument, 0, 'n'},
                                         {"plain-special", no_argument, 0, 'p'},
                                         {"decode", no_argument, 0, 'd'},
                                         {"skip-special", no_argument, 0, 's'},
                                         {"no-cleanup", no_argument, 0, 'c'},
                                         {"bench", required_argument, 0, 'b'},
                                         {"reps", required_argument, 0, 'r'},
                                         {"info", no_argument, 0, 'i'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *model = NULL, *bench = NULL;
    unsigned flags = VKPT_TOK_DEFAULT, dflags = VKPT_DETOK_CLEANUP;
    bool decode = false, info = false;
    int reps = 5, ch;
    while ((ch = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model = optarg; break;
        case 'n': flags &= ~(unsigned)VKPT_TOK_ADD_SPECIAL; break;
        case 'p': flags &= ~(unsigned)VKPT_TOK_PARSE_SPECIAL; break;
        case 'd': decode = true; break;
        case 's': dflags |= VKPT_DETOK_SKIP_SPECIAL; break;
        case 'c': dflags &= ~(unsigned)VKPT_DETOK_CLEANUP; break;
        case 'b': bench = optarg; break;
        case 'r': reps = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
        case 'i': info = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    vkpt_tokenizer *t;
    int err = vkpt_tokenizer_create_file(model, &t);
    if (err) return tool_fail(err, model);
    int rc;
    if (info)
        rc = do_info(t);
    else if (bench)
        rc = do_bench(t, bench, reps);
    else if (decode)
        rc = do_decode(t, dflags);
    else
        rc = do_encode(t, flags);
    vkpt_tokenizer_destroy(t);
    fflush(stdout);
    return rc;
}
