/* vkpt synth: a random-weight model at real shapes, written as a GGUF file
 * llama.cpp loads. How performance is measured without downloading weights. */
#define _GNU_SOURCE
#include "cmd.h"
#include "vkpt/convert.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vkpt synth [--arch llama] (--preset NAME | --dims LIST) --type TYPE -o "
            "FILE.gguf\n\n"
            "Writes a random-weight model with a placeholder vocabulary.\n"
            "  --arch A        llama (default), qwen2, qwen3\n"
            "  --preset NAME   %s\n"
            "  --dims LIST     "
            "vocab=V,embd=E,layers=L,heads=H,kv=K,ff=F[,ctx=C,experts=X,used=U,theta=T]\n"
            "  --type TYPE     %s (default F16)\n"
            "  -o, --output F  output path\n"
            "  --seed S        random seed (default 1)\n"
            "  --threads N     writer threads (default: all cores)\n",
            vkpt_synth_presets(), vkpt_ftype_names());
}

static int parse_dims(const char *s, vkpt_synth_opts *o)
{
    char *copy = strdup(s), *save = NULL;
    int err = 0;
    for (char *kv = strtok_r(copy, ",", &save); kv && !err; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            err = vkpt_fail(VKPT_EINVAL, "--dims: '%s' is not key=value", kv);
            break;
        }
        *eq = 0;
        double v = strtod(eq + 1, NULL);
        if (!strcmp(kv, "vocab"))
            o->n_vocab = (uint32_t)v;
        else if (!strcmp(kv, "embd"))
            o->n_embd = (uint32_t)v;
        else if (!strcmp(kv, "layers"))
            o->n_layer = (uint32_t)v;
        else if (!strcmp(kv, "heads"))
            o->n_head = (uint32_t)v;
        else if (!strcmp(kv, "kv"))
            o->n_head_kv = (uint32_t)v;
        else if (!strcmp(kv, "ff"))
            o->n_ff = (uint32_t)v;
        else if (!strcmp(kv, "ctx"))
            o->n_ctx = (uint32_t)v;
        else if (!strcmp(kv, "experts"))
            o->n_expert = (uint32_t)v;
        else if (!strcmp(kv, "used"))
            o->n_expert_used = (uint32_t)v;
        else if (!strcmp(kv, "theta"))
            o->rope_theta = (float)v;
        else
            err = vkpt_fail(VKPT_EINVAL, "--dims: unknown key '%s'", kv);
    }
    free(copy);
    return err;
}

int cmd_synth(int argc, char **argv)
{
    static const struct option opts[] = {{"arch", required_argument, 0, 'a'},
                                         {"preset", required_argument, 0, 'P'},
                                         {"dims", required_argument, 0, 'D'},
                                         {"type", required_argument, 0, 't'},
                                         {"output", required_argument, 0, 'o'},
                                         {"seed", required_argument, 0, 's'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    vkpt_synth_opts o = {.arch = "llama", .type = "F16", .seed = 1, .progress = true};
    const char *out = NULL, *arch = NULL;
    int ch, err = 0;
    while ((ch = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'a': arch = optarg; break;
        case 'P': err = vkpt_synth_preset(optarg, &o); break;
        case 'D': err = parse_dims(optarg, &o); break;
        case 't': o.type = optarg; break;
        case 'o': out = optarg; break;
        case 's': o.seed = strtoull(optarg, NULL, 10); break;
        case 'j': o.threads = atoi(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (err) return tool_fail(err, "synth");
    }
    if (arch) o.arch = arch;
    if (!out || optind < argc) {
        usage(stderr);
        return 2;
    }
    uint64_t t0 = vkpt_now_ns();
    if ((err = vkpt_synth(&o, out))) return tool_fail(err, "synth");
    fprintf(stderr, "vkpt synth: wrote %s in %.1f s\n", out, (vkpt_now_ns() - t0) / 1e9);
    return 0;
}
