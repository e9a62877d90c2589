/* vkpt embed: embed text or token ids with an encoder model and print each
 * vector as a JSON array (one line per input); or, with --bench, time the
 * embedder on inputs of a fixed length and print embeddings per second.
 * stdout gets only the vectors (or the benchmark's result); details go to
 * stderr. */
#define _GNU_SOURCE
#include "cmd.h"
#include "vkpt/embed.h"
#include "vkpt/model.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void usage(FILE *f)
{
    fprintf(
        f, "usage: vkpt embed -m MODEL [-p TEXT | --tokens 1,2,3]... [options]\n"
           "       vkpt embed -m MODEL --bench N [--bench-len L] [options]\n\n"
           "Prints each input's embedding as a JSON array of floats, one line per input.\n\n"
           "  -m, --model PATH      an encoder: a .gguf file (bert, nomic-bert) or a Hugging Face\n"
           "                        folder (bert, nomic_bert, GTE v1.5 \"new\")\n"
           "  -p, --prompt TEXT     text to embed (tokenized with the model's special tokens);\n"
           "                        repeat for several inputs\n"
           "      --tokens IDS      comma-separated token ids instead of text (repeatable)\n"
           "      --pooling P       cls, mean or last (default: the model's files', else mean)\n"
           "      --normalize       L2-normalise the vector (default: the model's files')\n"
           "      --no-normalize    do not\n"
           "      --dims N          keep the first N dims (Matryoshka models), normalised after\n"
           "      --device D        device index, UUID or name part (see vkpt devices)\n"
           "      --quantize TYPE   quantize F32/F16/BF16 weights at load: q8_0 or q4_k\n"
           "      --batch-tokens N  tokens per step (default 2048, at least the longest input)\n"
           "      --max-seqs N      sequences per step (default 64)\n"
           "      --batch-invariant the tiled matmul at every batch size (as vkpt serve): a\n"
           "                        vector then does not depend on what it was batched with\n"
           "      --bench N         embed N inputs of --bench-len random tokens (default 512),\n"
           "                        all submitted at once, and report embeddings per second\n"
           "      --bench-len L     tokens per benchmark input\n"
           "      --json            benchmark result as JSON\n");
}

/* The shortest decimal that reads back as the same float. */
static void print_float(FILE *f, float v)
{
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    fputs(buf, f);
}

typedef struct input {
    int32_t *ids;
    uint32_t n;
} input;

static int bench(vkpt_embedder *e, vkpt_device *dev, const vkpt_model_info *mi, uint32_t n_inputs,
                 uint32_t len, const vkpt_embed_params *p, bool json)
{
    if (len > vkpt_embedder_max_seq_len(e))
        return vkpt_fail(VKPT_ERANGE, "--bench-len %u: the model embeds at most %u tokens", len,
                         vkpt_embedder_max_seq_len(e));
    uint32_t dim = p->dims ? p->dims : vkpt_embedder_dim(e);
    int32_t **in = calloc(n_inputs, sizeof *in);
    uint32_t *lens = calloc(n_inputs, sizeof *lens);
    float *out = malloc((size_t)n_inputs * dim * sizeof(float));
    int err = in && lens && out ? 0 : vkpt_fail(VKPT_ENOMEM, "benchmark inputs");
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (uint32_t i = 0; i < n_inputs && !err; i++) {
        if (!(in[i] = malloc(len * sizeof(int32_t)))) {
            err = vkpt_fail(VKPT_ENOMEM, "benchmark inputs");
            break;
        }
        lens[i] = len;
        for (uint32_t t = 0; t < len; t++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            in[i][t] = (int32_t)((s >> 33) % mi->n_vocab);
        }
    }
    /* one warm-up input: pipelines are created on first use (its profile,
     * if any, is dropped) */
    if (!err) err = vkpt_embedder_run(e, (const int32_t *const *)in, lens, 1, p, out, dim);
    FILE *devnull = fopen("/dev/null", "w");
    if (devnull) {
        vkpt_device_profile_dump(dev, devnull);
        fclose(devnull);
    }
    uint64_t t0 = vkpt_now_ns();
    if (!err) err = vkpt_embedder_run(e, (const int32_t *const *)in, lens, n_inputs, p, out, dim);
    double secs = (vkpt_now_ns() - t0) / 1e9;
    /* VKPT_PROFILE=1: per-kernel GPU time of the timed run */
    if (!err) vkpt_device_profile_dump(dev, stderr);
    if (!err) {
        vkpt_embedder_stats st;
        vkpt_embedder_get_stats(e, &st);
        double eps = n_inputs / secs, tps = (double)n_inputs * len / secs;
        if (json)
            printf("{\"model\":\"%s\",\"arch\":\"%s\",\"inputs\":%u,\"tokens_per_input\":%u,"
                   "\"seconds\":%.3f,\"embeddings_per_s\":%.4g,\"tokens_per_s\":%.4g,"
                   "\"steps\":%llu}\n",
                   mi->name, mi->arch, n_inputs, len, secs, eps, tps,
                   (unsigned long long)st.steps - 1);
        else
            printf("%s (%s, %u layers, %u dims): %u inputs of %u tokens in %.2f s: %.3g "
                   "embeddings/s, %.4g tokens/s\n",
                   mi->name, mi->arch, mi->n_layer, mi->n_embd, n_inputs, len, secs, eps, tps);
    }
    for (uint32_t i = 0; in && i < n_inputs; i++) free(in[i]);
    free(in), free(lens), free(out);
    return err;
}

int cmd_embed(int argc, char **argv)
{
    enum {
        O_TOKENS = 256,
        O_POOLING,
        O_NORM,
        O_NO_NORM,
        O_DIMS,
        O_DEVICE,
        O_QUANT,
        O_BATCH,
        O_SEQS,
        O_BENCH,
        O_BENCH_LEN,
        O_JSON,
        O_BI,
    };
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"prompt", required_argument, 0, 'p'},
                                         {"tokens", required_argument, 0, O_TOKENS},
                                         {"pooling", required_argument, 0, O_POOLING},
                                         {"normalize", no_argument, 0, O_NORM},
                                         {"no-normalize", no_argument, 0, O_NO_NORM},
                                         {"dims", required_argument, 0, O_DIMS},
                                         {"device", required_argument, 0, O_DEVICE},
                                         {"quantize", required_argument, 0, O_QUANT},
                                         {"batch-tokens", required_argument, 0, O_BATCH},
                                         {"max-seqs", required_argument, 0, O_SEQS},
                                         {"bench", required_argument, 0, O_BENCH},
                                         {"bench-len", required_argument, 0, O_BENCH_LEN},
                                         {"json", no_argument, 0, O_JSON},
                                         {"batch-invariant", no_argument, 0, O_BI},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *device = NULL, *quant = NULL;
    const char *texts[64];
    char *id_lists[64];
    int kinds[64]; /* 0 text, 1 ids, in order given */
    uint32_t n_in = 0, n_texts = 0, n_ids = 0;
    vkpt_embed_params p = {0};
    vkpt_embedder_opts eo = {0};
    uint32_t bench_n = 0, bench_len = 512;
    bool json = false;
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "m:p:h", opts, NULL)) != -1) {
        char *end = NULL;
        long v = 0;
        if (ch == O_DIMS || ch == O_BATCH || ch == O_SEQS || ch == O_BENCH || ch == O_BENCH_LEN) {
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno || !*optarg || *end || v <= 0 || v > 1 << 24) {
                fprintf(stderr, "vkpt embed: %s needs a positive number, not '%s'\n",
                        argv[optind - 1], optarg);
                return 2;
            }
        }
        switch (ch) {
        case 'm': model = optarg; break;
        case 'p':
        case O_TOKENS:
            if (n_in == 64) {
                fprintf(stderr, "vkpt embed: at most 64 inputs\n");
                return 2;
            }
            kinds[n_in++] = ch == 'p' ? 0 : 1;
            if (ch == 'p')
                texts[n_texts++] = optarg;
            else
                id_lists[n_ids++] = optarg;
            break;
        case O_POOLING:
            p.pooling = vkpt_pooling_by_name(optarg);
            if (p.pooling <= 0) {
                fprintf(stderr, "vkpt embed: --pooling is cls, mean or last, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_NORM: p.normalize = VKPT_NORMALIZE_ON; break;
        case O_NO_NORM: p.normalize = VKPT_NORMALIZE_OFF; break;
        case O_DIMS: p.dims = (uint32_t)v; break;
        case O_DEVICE: device = optarg; break;
        case O_QUANT: quant = optarg; break;
        case O_BATCH: eo.max_batch_tokens = (uint32_t)v; break;
        case O_SEQS: eo.max_seqs = (uint32_t)v; break;
        case O_BENCH: bench_n = (uint32_t)v; break;
        case O_BENCH_LEN: bench_len = (uint32_t)v; break;
        case O_JSON: json = true; break;
        case O_BI: eo.batch_invariant = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vkpt embed: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!model || (!n_in && !bench_n) || (n_in && bench_n)) {
        usage(stderr);
        return 2;
    }
    if (quant && strcasecmp(quant, "q8_0") && strcasecmp(quant, "q4_k")) {
        fprintf(stderr, "vkpt embed: --quantize is q8_0 or q4_k\n");
        return 2;
    }

    vkpt_instance *inst = NULL;
    vkpt_device *dev = NULL;
    vkpt_model *m = NULL;
    vkpt_embedder *e = NULL;
    input in[64] = {{0}};
    float *vec = NULL;
    int err = tool_open_device(device, &inst, &dev);
    if (err) goto done;
    vkpt_model_opts mo = VKPT_MODEL_OPTS_DEFAULT;
    if (quant) mo.quantize = !strcasecmp(quant, "q8_0") ? 8 : 12;
    if ((err = vkpt_model_load(dev, model, &mo, &m))) goto done;
    const vkpt_model_info *mi = vkpt_model_get_info(m);
    if ((err = vkpt_embedder_create(m, &eo, &e))) goto done;
    if (p.dims > mi->n_embd) {
        err = vkpt_fail(VKPT_EINVAL, "--dims %u: the model's vectors have %u", p.dims, mi->n_embd);
        goto done;
    }
    if (bench_n) {
        err = bench(e, dev, mi, bench_n, bench_len, &p, json);
        goto done;
    }
    /* inputs in the order given */
    uint32_t ti = 0, ii = 0;
    for (uint32_t i = 0; i < n_in && !err; i++) {
        if (kinds[i] == 0) {
            const char *t = texts[ti++];
            vkpt_tokens toks = {0};
            err = vkpt_tokenizer_encode(vkpt_model_tokenizer(m), t, strlen(t), VKPT_TOK_DEFAULT,
                                        &toks);
            in[i].ids = toks.ids;
            in[i].n = (uint32_t)toks.n;
        } else {
            err = tool_parse_ids(id_lists[ii++], &in[i].ids, &in[i].n);
        }
    }
    if (err) goto done;
    uint32_t dim = p.dims ? p.dims : mi->n_embd;
    const int32_t *ptrs[64];
    uint32_t lens[64];
    for (uint32_t i = 0; i < n_in; i++) ptrs[i] = in[i].ids, lens[i] = in[i].n;
    if (!(vec = malloc((size_t)n_in * dim * sizeof(float)))) {
        err = vkpt_fail(VKPT_ENOMEM, "vectors");
        goto done;
    }
    if ((err = vkpt_embedder_run(e, ptrs, lens, n_in, &p, vec, dim))) goto done;
    int pooling = p.pooling ? p.pooling : vkpt_embedder_default_pooling(e);
    bool norm = p.normalize ? p.normalize == VKPT_NORMALIZE_ON : vkpt_embedder_default_normalize(e);
    for (uint32_t i = 0; i < n_in; i++) {
        fprintf(stderr, "vkpt embed: input %u: %u tokens, %s pooling%s, %u dims\n", i + 1, in[i].n,
                vkpt_pooling_name(pooling), norm ? ", L2-normalised" : "", dim);
        putchar('[');
        for (uint32_t k = 0; k < dim; k++) {
            if (k) putchar(',');
            print_float(stdout, vec[(size_t)i * dim + k]);
        }
        puts("]");
    }
    if (fflush(stdout)) err = vkpt_fail(VKPT_EIO, "writing the vectors");
done:
    for (uint32_t i = 0; i < n_in; i++) kinds[i] == 0 ? vkpt_free(in[i].ids) : free(in[i].ids);
    free(vec);
    vkpt_embedder_destroy(e);
    vkpt_model_destroy(m);
    vkpt_device_destroy(dev);
    vkpt_instance_destroy(inst);
    return err ? tool_fail(err, "embed") : 0;
}
