/* vkpt run: generate text from a prompt with one model, on one device.
 * stdout gets the prompt and the generated text only; timings go to stderr. */
#define _GNU_SOURCE
#include "cmd.h"
#include "vkpt/model.h"
#include "vkpt/runner.h"
#include "vkpt/sampler.h"

#include <errno.h>
#include <unistd.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(
        f, "usage: vkpt run [-m MODEL] [-p PROMPT | --tokens 1,2,3] [options]\n\n"
           "Generates text and prints the prompt followed by the generated text.\n\n"
           "  -m, --model PATH      a .gguf file or a Hugging Face folder (default: the bundled\n"
           "                        stories260K)\n"
           "  -p, --prompt TEXT     prompt text (default: empty; the model's BOS is added)\n"
           "      --tokens IDS      comma-separated input token ids instead of a prompt\n"
           "  -n, --n-predict N     tokens to generate (default 128; stops early at end of text)\n"
           "      --temp T          temperature, 0 = greedy (default 0.8)\n"
           "      --top-k K         keep the K most likely tokens (default 40; 0 = off)\n"
           "      --top-p P         nucleus sampling (default 0.95; 1 = off)\n"
           "      --min-p P         drop tokens below P times the best (default 0.05; 0 = off)\n"
           "      --repeat-penalty R  repetition penalty (default 1 = off)\n"
           "      --seed S          random seed (default: from the clock)\n"
           "      --ctx N           context length (default: the model's, at most 4096)\n"
           "      --device D        device index, UUID or name part (see vkpt devices)\n"
           "      --quantize TYPE   quantize F32/F16/BF16 weights at load: q8_0 or q4_k\n"
           "      --logits-out FILE write every prompt position's logits (f32, [n_prompt][vocab])\n"
           "                        and exit\n"
           "      --ignore-eos      keep generating past the end-of-text token\n");
}

static int fetch_row(void *ud, uint32_t row, float *dst)
{
    return vkpt_runner_logits_row(ud, row, dst);
}

int cmd_run(int argc, char **argv)
{
    enum {
        O_TOKENS = 256,
        O_TEMP,
        O_TOPK,
        O_TOPP,
        O_MINP,
        O_SEED,
        O_CTX,
        O_DEVICE,
        O_LOGITS,
        O_QUANT,
        O_REP,
        O_IGNEOS
    };
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"prompt", required_argument, 0, 'p'},
                                         {"n-predict", required_argument, 0, 'n'},
                                         {"tokens", required_argument, 0, O_TOKENS},
                                         {"temp", required_argument, 0, O_TEMP},
                                         {"top-k", required_argument, 0, O_TOPK},
                                         {"top-p", required_argument, 0, O_TOPP},
                                         {"min-p", required_argument, 0, O_MINP},
                                         {"repeat-penalty", required_argument, 0, O_REP},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"ctx", required_argument, 0, O_CTX},
                                         {"device", required_argument, 0, O_DEVICE},
                                         {"logits-out", required_argument, 0, O_LOGITS},
                                         {"quantize", required_argument, 0, O_QUANT},
                                         {"ignore-eos", no_argument, 0, O_IGNEOS},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *model = VKPT_DEFAULT_MODEL, *prompt = NULL, *tokens_arg = NULL, *device = NULL,
               *logits_out = NULL;
    long n_predict = 128;
    vkpt_sampling sp = VKPT_SAMPLING_DEFAULT;
    sp.temperature = 0.8f;
    sp.top_k = 40;
    sp.top_p = 0.95f;
    sp.min_p = 0.05f;
    sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    uint32_t ctx = 0;
    int quantize = -1;
    bool ignore_eos = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "m:p:n:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'n': n_predict = strtol(optarg, NULL, 10); break;
        case O_TOKENS: tokens_arg = optarg; break;
        case O_TEMP: sp.temperature = strtof(optarg, NULL); break;
        case O_TOPK: sp.top_k = (uint32_t)strtoul(optarg, NULL, 10); break;
        case O_TOPP: sp.top_p = strtof(optarg, NULL); break;
        case O_MINP: sp.min_p = strtof(optarg, NULL); break;
        case O_REP: sp.repetition_penalty = strtof(optarg, NULL); break;
        case O_SEED: sp.seed = strtoull(optarg, NULL, 10); break;
        case O_CTX: ctx = (uint32_t)strtoul(optarg, NULL, 10); break;
        case O_DEVICE: device = optarg; break;
        case O_LOGITS: logits_out = optarg; break;
        case O_IGNEOS: ignore_eos = true; break;
        case O_QUANT:
            if (!strcasecmp(optarg, "q8_0"))
                quantize = 8;
            else if (!strcasecmp(optarg, "q4_k"))
                quantize = 12;
            else {
                fprintf(stderr, "vkpt run: --quantize takes q8_0 or q4_k\n");
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "vkpt run: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (sp.temperature < 0 || n_predict < 0) {
        fprintf(stderr, "vkpt run: --temp and -n must not be negative\n");
        return 2;
    }
    if (prompt && tokens_arg) {
        fprintf(stderr, "vkpt run: give -p or --tokens, not both\n");
        return 2;
    }

    vkpt_instance *inst = NULL;
    vkpt_device *dev = NULL;
    vkpt_model *m = NULL;
    vkpt_runner *r = NULL;
    vkpt_sampler *smp = NULL;
    vkpt_detok *dt = NULL;
    vkpt_tokens toks = {0};
    int32_t *ids = NULL;
    uint32_t n_ids = 0;
    float *row = NULL;
    FILE *lf = NULL;
    int err = tool_open_device(device, &inst, &dev);
    if (err) return tool_fail(err, "run");
    vkpt_model_opts mo = VKPT_MODEL_OPTS_DEFAULT;
    mo.quantize = quantize;
    mo.n_ctx = ctx;
    if ((err = vkpt_model_load(dev, model, &mo, &m))) goto done;
    const vkpt_model_info *mi = vkpt_model_get_info(m);
    const vkpt_tokenizer *tk = vkpt_model_tokenizer(m);
    if (!mi->causal) {
        err = vkpt_fail(VKPT_EUNSUPPORTED, "%s is an embedding model: use vkpt embed", model);
        goto done;
    }
    if (tokens_arg) {
        if ((err = tool_parse_ids(tokens_arg, &ids, &n_ids))) goto done;
    } else {
        const char *text = prompt ? prompt : "";
        if ((err = vkpt_tokenizer_encode(tk, text, strlen(text), VKPT_TOK_DEFAULT, &toks)))
            goto done;
        ids = toks.ids;
        n_ids = (uint32_t)toks.n;
    }
    if (!n_ids) {
        err =
            vkpt_fail(VKPT_EINVAL, "the prompt is empty and the model adds no BOS token: give -p");
        goto done;
    }
    vkpt_runner_opts ro = {
        .n_ctx = ctx, .max_seqs = 1, .max_step_tokens = 256, .all_logits = logits_out != NULL};
    if ((err = vkpt_runner_create(m, &ro, &r))) goto done;
    vkpt_runner_stats st;
    vkpt_runner_get_stats(r, &st);
    if (n_ids > st.n_ctx) {
        err = vkpt_fail(VKPT_ERANGE, "the prompt has %u tokens; the context is %u (--ctx)", n_ids,
                        st.n_ctx);
        goto done;
    }
    int seq = vkpt_runner_seq_open(r);
    if ((err = vkpt_sampler_create(&sp, mi->n_vocab, ids, n_ids, &smp))) goto done;
    uint32_t max_edits = 4096;
    vkpt_logit_edit *edits = calloc(max_edits, sizeof *edits);
    vkpt_step_out *outs = calloc(st.max_step_tokens, sizeof *outs);
    if (logits_out) {
        row = malloc((size_t)mi->n_vocab * sizeof(float));
        if (!(lf = fopen(logits_out, "wb"))) {
            err = vkpt_fail(VKPT_EIO, "%s: %s", logits_out, strerror(errno));
            goto done_buf;
        }
    }
    if (!edits || !outs || (logits_out && !row)) {
        err = vkpt_fail(VKPT_ENOMEM, "run buffers");
        goto done_buf;
    }

    /* prefill in chunks */
    uint64_t t0 = vkpt_now_ns();
    uint32_t n_out = 0;
    for (uint32_t done_n = 0; done_n < n_ids && !err;) {
        uint32_t k = n_ids - done_n < st.max_step_tokens ? n_ids - done_n : st.max_step_tokens;
        bool last = done_n + k == n_ids;
        vkpt_step_seq s = {.seq = seq,
                           .tokens = ids + done_n,
                           .n_tokens = k,
                           .want_logits = last && !logits_out,
                           .want_all_logits = logits_out != NULL,
                           .temperature = vkpt_sampler_temperature(smp),
                           .edits = edits,
                           .n_edits = logits_out ? 0 : vkpt_sampler_edits(smp, edits, max_edits)};
        err = vkpt_runner_step(r, &s, 1, outs, st.max_step_tokens, &n_out);
        for (uint32_t i = 0; !err && logits_out && i < n_out; i++) {
            err = vkpt_runner_logits_row(r, i, row);
            if (!err && fwrite(row, sizeof(float), mi->n_vocab, lf) != mi->n_vocab)
                err = vkpt_fail(VKPT_EIO, "%s: write failed", logits_out);
        }
        done_n += k;
    }
    uint64_t t1 = vkpt_now_ns();
    if (err || logits_out) goto report;

    if ((err = vkpt_detok_create(tk, VKPT_DETOK_SKIP_SPECIAL, &dt))) goto done_buf;
    vkpt_span piece;
    for (uint32_t i = 0; i < n_ids && !err; i++) err = vkpt_detok_push(dt, ids[i], &piece);
    if (prompt) fputs(prompt, stdout);
    fflush(stdout);
    long generated = 0;
    vkpt_step_out cur = outs[0];
    while (!err && generated < n_predict) {
        vkpt_sample pick;
        if ((err = vkpt_sampler_pick(smp, &cur, fetch_row, r, &pick))) break;
        generated++;
        if (!ignore_eos && vkpt_tokenizer_is_eog(tk, pick.token)) break;
        if ((err = vkpt_detok_push(dt, pick.token, &piece))) break;
        fwrite(piece.p, 1, piece.n, stdout);
        fflush(stdout);
        if (generated == n_predict || vkpt_runner_seq_len(r, seq) >= st.n_ctx) break;
        vkpt_step_seq s = {.seq = seq,
                           .tokens = &pick.token,
                           .n_tokens = 1,
                           .want_logits = true,
                           .temperature = vkpt_sampler_temperature(smp),
                           .edits = edits,
                           .n_edits = vkpt_sampler_edits(smp, edits, max_edits)};
        if ((err = vkpt_runner_step(r, &s, 1, outs, 1, &n_out))) break;
        cur = outs[0];
    }
    if (!err && !vkpt_detok_flush(dt, &piece)) fwrite(piece.p, 1, piece.n, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    uint64_t t2 = vkpt_now_ns();
    fprintf(stderr,
            "vkpt run: prompt %u tokens in %.1f ms (%.1f tok/s); generated %ld tokens in %.1f ms "
            "(%.1f tok/s)\n",
            n_ids, (t1 - t0) / 1e6, n_ids / ((t1 - t0) / 1e9), generated, (t2 - t1) / 1e6,
            generated > 1 ? (generated - 1) / ((t2 - t1) / 1e9) : 0.0);
    goto done_buf;
report:
    if (!err && logits_out)
        fprintf(stderr, "vkpt run: wrote %u x %u logits to %s in %.1f ms\n", n_ids, mi->n_vocab,
                logits_out, (t1 - t0) / 1e6);
done_buf:
    free(edits);
    free(outs);
done:
    if (lf && fclose(lf) != 0 && !err)
        err = vkpt_fail(VKPT_EIO, "%s: %s", logits_out, strerror(errno));
    free(row);
    vkpt_detok_destroy(dt);
    vkpt_sampler_destroy(smp);
    if (ids != toks.ids) free(ids);
    vkpt_tokens_free(&toks);
    vkpt_runner_destroy(r);
    vkpt_model_destroy(m);
    vkpt_device_destroy(dev);
    vkpt_instance_destroy(inst);
    return err ? tool_fail(err, "run") : 0;
}
