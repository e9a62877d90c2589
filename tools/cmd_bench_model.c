/* vkpt bench -m MODEL: whole-model speed, with llama-bench's and
 * llama-batched-bench's meanings so figures compare directly.
 *
 *   vkpt bench -m MODEL -p 512,2048 -n 128 [-r N]
 *       pp N: process an N-token prompt in one sequence (chunks of --ubatch
 *             tokens), tokens/s; tg N: generate N tokens one at a time from an
 *             empty context, tokens/s. Mean and standard deviation over N
 *             repetitions after one warm-up run.
 *   vkpt bench -m MODEL --batched -npp 512 -ntg 128 -npl 1,8,32,64
 *       per npl: prefill npl sequences of npp tokens together, then decode ntg
 *       tokens for each at once; prefill, decode and total tokens/s.
 *
 * Token ids are random (fixed seed); every step computes the last rows'
 * logits and their top candidates, as serving does. VKPT_PROFILE=1 adds the
 * per-kernel GPU time.
 *
 * Host cost per step (the runner thread's CPU time, vkpt_runner_stats): "prep
 * us" fills the inputs and plans attention, "rec+sub us" records (on a replay
 * miss) and submits, "replay" is the share of steps that replayed a recorded
 * command buffer. VKPT_NO_REPLAY=1 records every step, the way to compare. */
#define _GNU_SOURCE
#include "cmd.h"
#include "vkpt/model.h"
#include "vkpt/runner.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LIST 16

static int parse_list(const char *s, uint32_t *out, int *n)
{
    *n = 0;
    while (*s) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v > (1u << 20) || *n >= MAX_LIST)
            return vkpt_fail(VKPT_EINVAL, "'%s' is not a comma-separated list of counts", s);
        out[(*n)++] = (uint32_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return vkpt_fail(VKPT_EINVAL, "'%s': unexpected character", end);
    }
    return 0;
}

typedef struct bench_ctx {
    vkpt_runner *r;
    uint32_t vocab;
    uint64_t rng;
    int32_t *toks;
    vkpt_step_seq *batch;
    vkpt_step_out *outs;
    uint32_t max_seqs, ubatch;
} bench_ctx;

static int32_t rnd_tok(bench_ctx *b)
{
    b->rng = b->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (int32_t)((b->rng >> 33) % b->vocab);
}

/* Prefill `n` tokens into each of `nseq` open sequences, ubatch tokens per
 * step across sequences. */
static int prefill(bench_ctx *b, const int *seqs, uint32_t nseq, uint32_t n)
{
    uint32_t done[256] = {0};
    for (;;) {
        uint32_t nb = 0, budget = b->ubatch, used = 0;
        for (uint32_t s = 0; s < nseq && budget; s++) {
            if (done[s] >= n) continue;
            uint32_t k = n - done[s] < budget ? n - done[s] : budget;
            int32_t *t = b->toks + used;
            for (uint32_t i = 0; i < k; i++) t[i] = rnd_tok(b);
            b->batch[nb++] = (vkpt_step_seq){.seq = seqs[s],
                                             .tokens = t,
                                             .n_tokens = k,
                                             .want_logits = done[s] + k == n,
                                             .temperature = 1};
            done[s] += k;
            budget -= k;
            used += k;
        }
        if (!nb) return 0;
        uint32_t n_out;
        int err = vkpt_runner_step(b->r, b->batch, nb, b->outs, b->max_seqs, &n_out);
        if (err) return err;
    }
}

static int decode(bench_ctx *b, const int *seqs, uint32_t nseq, uint32_t n)
{
    for (uint32_t t = 0; t < n; t++) {
        for (uint32_t s = 0; s < nseq; s++) {
            b->toks[s] = rnd_tok(b);
            b->batch[s] = (vkpt_step_seq){.seq = seqs[s],
                                          .tokens = &b->toks[s],
                                          .n_tokens = 1,
                                          .want_logits = true,
                                          .temperature = 1};
        }
        uint32_t n_out;
        int err = vkpt_runner_step(b->r, b->batch, nseq, b->outs, b->max_seqs, &n_out);
        if (err) return err;
    }
    return 0;
}

/* Host figures between two snapshots of the runner's counters. */
typedef struct host_cost {
    double prep_us, submit_us, replay; /* per step; replayed share of steps */
} host_cost;

static host_cost host_between(const vkpt_runner_stats *a, const vkpt_runner_stats *b)
{
    host_cost h = {0, 0, 0};
    double n = (double)(b->steps - a->steps);
    if (n <= 0) return h;
    h.prep_us = (double)(b->host_prep_ns - a->host_prep_ns) / 1e3 / n;
    h.submit_us = (double)(b->host_submit_ns - a->host_submit_ns) / 1e3 / n;
    h.replay = (double)(b->replay_hits - a->replay_hits) / n;
    return h;
}

static void host_json(cJSON *o, const host_cost *h)
{
    cJSON_AddNumberToObject(o, "host_prep_us_per_step", h->prep_us);
    cJSON_AddNumberToObject(o, "host_record_submit_us_per_step", h->submit_us);
    cJSON_AddNumberToObject(o, "replay_hit_rate", h->replay);
}

static void stats(const double *v, int n, double *mean, double *sd)
{
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++) q += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(q / (n - 1)) : 0;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: vkpt bench -m MODEL [-p 512,2048] [-n 128] [-r 5] [--ubatch 512] [--json]\n"
        "       vkpt bench -m MODEL --batched [-npp 512] [-ntg 128] [-npl 1,8,32,64] [--json]\n\n"
        "Whole-model speed with llama-bench's pp/tg and llama-batched-bench's meanings.\n"
        "  -m, --model PATH   .gguf file or Hugging Face folder\n"
        "  -p LIST            prompt lengths to time (pp), default 512\n"
        "  -n LIST            generation lengths to time (tg), default 128\n"
        "  -r N               repetitions after a warm-up (default 5)\n"
        "      --ubatch N     tokens per step in prefill (default 512)\n"
        "      --batched      llama-batched-bench mode\n"
        "  -npp N, -ntg N     prompt and generated tokens per sequence (batched)\n"
        "  -npl LIST          parallel sequence counts (batched)\n"
        "      --device D     device index, UUID or name part\n"
        "      --quantize T   quantize F32/F16/BF16 weights at load: q8_0 or q4_k\n"
        "      --json         machine-readable output\n"
        "Host CPU time per step (prep: inputs and plan; rec+sub: recording and submitting)\n"
        "and the share of steps that replayed a recorded command buffer are printed beside\n"
        "the speeds; VKPT_NO_REPLAY=1 records every step. VKPT_PROFILE=1 prints per-kernel\n"
        "GPU time after the runs.\n");
}

int bench_model(int argc, char **argv)
{
    /* llama-batched-bench spells its options with one dash: accept both */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-npp") || !strcmp(argv[i], "-ntg") || !strcmp(argv[i], "-npl")) {
            static char buf[MAX_LIST][8];
            snprintf(buf[i % MAX_LIST], sizeof buf[0], "-%s", argv[i]);
            argv[i] = buf[i % MAX_LIST];
        }
    enum { O_UBATCH = 256, O_BATCHED, O_NPP, O_NTG, O_NPL, O_DEVICE, O_JSON, O_QUANT };
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"ubatch", required_argument, 0, O_UBATCH},
                                         {"batched", no_argument, 0, O_BATCHED},
                                         {"npp", required_argument, 0, O_NPP},
                                         {"ntg", required_argument, 0, O_NTG},
                                         {"npl", required_argument, 0, O_NPL},
                                         {"device", required_argument, 0, O_DEVICE},
                                         {"json", no_argument, 0, O_JSON},
                                         {"quantize", required_argument, 0, O_QUANT},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *model = NULL, *device = NULL;
    uint32_t pp[MAX_LIST] = {512}, tg[MAX_LIST] = {128}, npl[MAX_LIST] = {1, 8, 32, 64};
    int n_pp = 1, n_tg = 1, n_npl = 4, reps = 5, quantize = -1;
    uint32_t ubatch = 512, npp = 512, ntg = 128;
    bool batched = false, json = false;
    int ch, err = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "m:p:n:r:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model = optarg; break;
        case 'p': err = parse_list(optarg, pp, &n_pp); break;
        case 'n': err = parse_list(optarg, tg, &n_tg); break;
        case 'r': reps = atoi(optarg); break;
        case O_UBATCH: ubatch = (uint32_t)strtoul(optarg, NULL, 10); break;
        case O_BATCHED: batched = true; break;
        case O_NPP: npp = (uint32_t)strtoul(optarg, NULL, 10); break;
        case O_NTG: ntg = (uint32_t)strtoul(optarg, NULL, 10); break;
        case O_NPL: err = parse_list(optarg, npl, &n_npl); break;
        case O_DEVICE: device = optarg; break;
        case O_JSON: json = true; break;
        case O_QUANT:
            quantize = !strcasecmp(optarg, "q8_0") ? 8 : !strcasecmp(optarg, "q4_k") ? 12 : -2;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (err) return tool_fail(err, "bench");
    }
    if (!model || reps < 1 || !ubatch || quantize == -2 || (batched && (!npp || !ntg))) {
        usage(stderr);
        return 2;
    }
    vkpt_instance *inst = NULL;
    vkpt_device *dev = NULL;
    vkpt_model *m = NULL;
    bench_ctx b = {.rng = 0x5eed};
    cJSON *jarr = json ? cJSON_CreateArray() : NULL;
    if ((err = tool_open_device(device, &inst, &dev))) return tool_fail(err, "bench");
    vkpt_model_opts mo = VKPT_MODEL_OPTS_DEFAULT;
    mo.quantize = quantize;
    if ((err = vkpt_model_load(dev, model, &mo, &m))) goto done;
    const vkpt_model_info *mi = vkpt_model_get_info(m);
    b.vocab = mi->n_vocab;
    uint32_t max_pp = 0, max_tg = 0, max_npl = 1;
    for (int i = 0; i < n_pp; i++) max_pp = pp[i] > max_pp ? pp[i] : max_pp;
    for (int i = 0; i < n_tg; i++) max_tg = tg[i] > max_tg ? tg[i] : max_tg;
    for (int i = 0; batched && i < n_npl; i++) max_npl = npl[i] > max_npl ? npl[i] : max_npl;
    if (max_npl > 256) {
        err = vkpt_fail(VKPT_EINVAL, "-npl: at most 256 sequences");
        goto done;
    }
    uint32_t ctx = batched ? npp + ntg : (max_pp > max_tg ? max_pp : max_tg);
    vkpt_runner_opts ro = {.n_ctx = ctx + 16,
                           .max_seqs = max_npl,
                           .max_step_tokens = ubatch > max_npl ? ubatch : max_npl,
                           .kv_tokens = (ctx + 16) * max_npl};
    b.max_seqs = max_npl;
    b.ubatch = ro.max_step_tokens;
    if ((err = vkpt_runner_create(m, &ro, &b.r))) goto done;
    b.toks = malloc((size_t)(b.ubatch > max_npl ? b.ubatch : max_npl) * sizeof *b.toks);
    b.batch = calloc(max_npl, sizeof *b.batch);
    b.outs = calloc(max_npl, sizeof *b.outs);
    int seqs[256];
    if (!b.toks || !b.batch || !b.outs) {
        err = vkpt_fail(VKPT_ENOMEM, "bench");
        goto done;
    }
    const vkpt_device_caps *caps = vkpt_device_get_caps(dev);
    if (!json)
        printf("model: %s (%s, %.2f GB of weights)\ndevice: %s\n", mi->name, mi->arch,
               mi->weight_bytes / 1e9, caps->name);
    if (!batched) {
        if (!json)
            printf("%-8s %12s %10s %9s %11s %7s\n", "test", "tok/s", "± sd", "prep us",
                   "rec+sub us", "replay");
        for (int kind = 0; kind < 2 && !err; kind++) {
            int cnt = kind ? n_tg : n_pp;
            for (int i = 0; i < cnt && !err; i++) {
                uint32_t n = kind ? tg[i] : pp[i];
                double v[64];
                int R = reps < 64 ? reps : 64;
                vkpt_runner_stats st0, st1;
                for (int rep = -1; rep < R && !err; rep++) {
                    if (rep == 0) vkpt_runner_get_stats(b.r, &st0);
                    seqs[0] = vkpt_runner_seq_open(b.r);
                    uint64_t t0 = vkpt_now_ns();
                    if (kind) {
                        /* tg from an empty context: the first token is a
                         * one-token prefill, as llama-bench's tg */
                        err = decode(&b, seqs, 1, n);
                    } else {
                        err = prefill(&b, seqs, 1, n);
                    }
                    double s = (vkpt_now_ns() - t0) / 1e9;
                    vkpt_runner_seq_close(b.r, seqs[0]);
                    if (rep >= 0) v[rep] = n / s;
                }
                if (err) break;
                vkpt_runner_get_stats(b.r, &st1);
                host_cost hc = host_between(&st0, &st1);
                double mean, sd;
                stats(v, R, &mean, &sd);
                char name[32];
                snprintf(name, sizeof name, "%s%u", kind ? "tg" : "pp", n);
                if (json) {
                    cJSON *o = cJSON_CreateObject();
                    cJSON_AddStringToObject(o, "test", name);
                    cJSON_AddNumberToObject(o, "tokens_per_s", mean);
                    cJSON_AddNumberToObject(o, "stddev", sd);
                    cJSON_AddNumberToObject(o, "reps", R);
                    host_json(o, &hc);
                    cJSON_AddItemToArray(jarr, o);
                } else {
                    printf("%-8s %12.2f %10.2f %9.1f %11.1f %6.0f%%\n", name, mean, sd, hc.prep_us,
                           hc.submit_us, 100 * hc.replay);
                }
            }
        }
    } else {
        if (!json)
            printf("%6s %6s %6s %12s %12s %12s %10s %9s %11s %7s\n", "npp", "ntg", "npl",
                   "S_PP tok/s", "S_TG tok/s", "S tok/s", "T s", "prep us", "rec+sub us", "replay");
        for (int i = 0; i < n_npl && !err; i++) {
            uint32_t P = npl[i];
            for (uint32_t s = 0; s < P; s++) seqs[s] = vkpt_runner_seq_open(b.r);
            uint64_t t0 = vkpt_now_ns();
            err = prefill(&b, seqs, P, npp);
            uint64_t t1 = vkpt_now_ns();
            /* host figures of the decode phase: the steps serving repeats */
            vkpt_runner_stats st0, st1;
            vkpt_runner_get_stats(b.r, &st0);
            if (!err) err = decode(&b, seqs, P, ntg);
            uint64_t t2 = vkpt_now_ns();
            vkpt_runner_get_stats(b.r, &st1);
            host_cost hc = host_between(&st0, &st1);
            for (uint32_t s = 0; s < P; s++) vkpt_runner_seq_close(b.r, seqs[s]);
            if (err) break;
            double pp_s = (t1 - t0) / 1e9, tg_s = (t2 - t1) / 1e9;
            double spp = P * npp / pp_s, stg = P * ntg / tg_s, st = P * (npp + ntg) / (pp_s + tg_s);
            if (json) {
                cJSON *o = cJSON_CreateObject();
                cJSON_AddNumberToObject(o, "npp", npp);
                cJSON_AddNumberToObject(o, "ntg", ntg);
                cJSON_AddNumberToObject(o, "npl", P);
                cJSON_AddNumberToObject(o, "prefill_tokens_per_s", spp);
                cJSON_AddNumberToObject(o, "decode_tokens_per_s", stg);
                cJSON_AddNumberToObject(o, "total_tokens_per_s", st);
                cJSON_AddNumberToObject(o, "seconds", pp_s + tg_s);
                host_json(o, &hc);
                cJSON_AddItemToArray(jarr, o);
            } else {
                printf("%6u %6u %6u %12.2f %12.2f %12.2f %10.3f %9.1f %11.1f %6.0f%%\n", npp, ntg,
                       P, spp, stg, st, pp_s + tg_s, hc.prep_us, hc.submit_us, 100 * hc.replay);
            }
        }
    }
    if (!err && json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", mi->name);
        cJSON_AddStringToObject(o, "device", caps->name);
        cJSON_AddNumberToObject(o, "weight_bytes", (double)mi->weight_bytes);
        cJSON_AddItemToObject(o, "results", jarr);
        jarr = NULL;
        char *s = cJSON_Print(o);
        printf("%s\n", s);
        cJSON_free(s);
        cJSON_Delete(o);
    }
    if (!err) vkpt_device_profile_dump(dev, stderr);
done:
    cJSON_Delete(jarr);
    free(b.toks);
    free(b.batch);
    free(b.outs);
    vkpt_runner_destroy(b.r);
    vkpt_model_destroy(m);
    vkpt_device_destroy(dev);
    vkpt_instance_destroy(inst);
    return err ? tool_fail(err, "bench") : 0;
}
