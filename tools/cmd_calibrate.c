/* vkpt calibrate: measure a model's throughput chunk size on this device
 * (the documented workload, docs/PROVISIONING.md) and store it in the data
 * directory, where vkpt serve's get-model-optimization-info and endpoint
 * checks find it. Always runs: this is how a calibration is redone. */
#define _GNU_SOURCE
#include "cmd.h"
#include "vkpt/provision.h"
#include "vkpt/registry.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vkpt calibrate MODEL [options]\n\n"
            "MODEL is a registered model (catalog.schema.model, latest version unless --version)\n"
            "or a .gguf file / Hugging Face folder. Runs requests of min(2048, ctx*3/4) input +\n"
            "min(256, ctx/8) output tokens at concurrency 1, 2, 4, ... until throughput stops\n"
            "growing; the best tokens/s, rounded down to two significant figures, is the chunk\n"
            "size. An embedding model (encoder) is measured with inputs of min(512, ctx) tokens\n"
            "(input tokens embedded per second) the same way. The result is stored for (model\n"
            "checksum, device, vkpt version).\n\n"
            "  --version N          the registered model's version (default: latest)\n"
            "  --device D           device index, UUID or name part (see vkpt devices)\n"
            "  --level-seconds S    time per concurrency level (default 10)\n"
            "  --input-tokens N     override the workload's prompt length\n"
            "  --output-tokens N    override the workload's output length (not for encoders)\n"
            "  --max-concurrency N  highest level (default 64)\n"
            "  --ctx N              context length (default: the model's, at most 4096)\n"
            "  --data-dir DIR       the data directory (see vkpt register)\n"
            "  --no-store           measure only\n"
            "  --json               print the result as JSON\n");
}

static void progress(void *ud, uint32_t c, double tps)
{
    (void)ud;
    fprintf(stderr, "vkpt calibrate: concurrency %3u: %10.1f tokens/s\n", c, tps);
}

int cmd_calibrate(int argc, char **argv)
{
    enum { O_VER = 256, O_DEV, O_LEVEL, O_IN, O_OUT, O_MAXC, O_CTX, O_DATA, O_NOSTORE, O_JSON };
    static const struct option opts[] = {{"version", required_argument, 0, O_VER},
                                         {"device", required_argument, 0, O_DEV},
                                         {"level-seconds", required_argument, 0, O_LEVEL},
                                         {"input-tokens", required_argument, 0, O_IN},
                                         {"output-tokens", required_argument, 0, O_OUT},
                                         {"max-concurrency", required_argument, 0, O_MAXC},
                                         {"ctx", required_argument, 0, O_CTX},
                                         {"data-dir", required_argument, 0, O_DATA},
                                         {"no-store", no_argument, 0, O_NOSTORE},
                                         {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *device = NULL, *data = NULL;
    long version = 0;
    vkpt_calib_opts co = {.progress = progress};
    bool store = true, json = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case O_VER: version = strtol(optarg, NULL, 10); break;
        case O_DEV: device = optarg; break;
        case O_LEVEL: co.level_seconds = strtod(optarg, NULL); break;
        case O_IN: co.input_tokens = (uint32_t)strtoul(optarg, NULL, 10); break;
        case O_OUT: co.output_tokens = (uint32_t)strtoul(optarg, NULL, 10); break;
        case O_MAXC: co.max_concurrency = (uint32_t)strtoul(optarg, NULL, 10); break;
        case O_CTX: co.n_ctx = (uint32_t)strtoul(optarg, NULL, 10); break;
        case O_DATA: data = optarg; break;
        case O_NOSTORE: store = false; break;
        case O_JSON: json = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind + 1 != argc || version < 0 || co.level_seconds < 0) {
        usage(stderr);
        return 2;
    }
    const char *arg = argv[optind];
    char dir[4096], sum[72];
    const char *source = arg, *name = NULL;
    vkpt_store *st = NULL;
    vkpt_model_version mv = {0};
    vkpt_instance *inst = NULL;
    vkpt_device *dev = NULL;
    vkpt_model *m = NULL;
    vkpt_calib_result r;
    struct stat sb;
    int err = 0;
    bool is_path = stat(arg, &sb) == 0;
    if (store || !is_path) {
        err = vkpt_registry_data_dir(data, dir, sizeof dir);
        if (!err) err = vkpt_registry_open(dir, &st);
    }
    if (!err && !is_path) {
        err = st->ops->model_get(st, arg, (uint32_t)version, &mv);
        if (!err) {
            source = mv.source;
            name = mv.name;
            snprintf(sum, sizeof sum, "%s", mv.checksum);
            /* the registered context (it may be below the file's) */
            if (!co.n_ctx) co.n_ctx = mv.context_length < 4096 ? mv.context_length : 4096;
        }
    } else if (!err) {
        uint64_t size;
        int64_t mtime;
        err = vkpt_registry_checksum(arg, sum, &size, &mtime);
    }
    if (!err) err = tool_open_device(device, &inst, &dev);
    if (!err) {
        vkpt_model_opts mo = VKPT_MODEL_OPTS_DEFAULT;
        mo.n_ctx = co.n_ctx;
        err = vkpt_model_load(dev, source, &mo, &m);
    }
    const vkpt_device_caps *caps = dev ? vkpt_device_get_caps(dev) : NULL;
    if (!err) {
        fprintf(stderr, "vkpt calibrate: %s on %s\n", name ? name : source, caps->name);
        err = vkpt_calibrate(m, &co, &r);
    }
    if (!err && store)
        err = vkpt_registry_save_calibration(st, sum, caps, &r, co.level_seconds, NULL);
    if (!err) {
        char uuid[33];
        vkpt_registry_uuid_hex(caps->uuid, uuid);
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "model", name ? name : source);
            if (name) cJSON_AddNumberToObject(o, "version", mv.version);
            cJSON_AddStringToObject(o, "checksum", sum);
            cJSON_AddStringToObject(o, "device", caps->name);
            cJSON_AddStringToObject(o, "device_uuid", uuid);
            cJSON_AddStringToObject(o, "workload", r.encoder ? "embeddings" : "generation");
            cJSON_AddNumberToObject(o, "tokens_per_second", r.tokens_per_s);
            cJSON_AddNumberToObject(o, "throughput_chunk_size", (double)r.chunk_size);
            cJSON_AddNumberToObject(o, "concurrency", r.concurrency);
            cJSON_AddNumberToObject(o, "input_tokens", r.input_tokens);
            cJSON_AddNumberToObject(o, "output_tokens", r.output_tokens);
            cJSON_AddNumberToObject(o, "seconds", r.seconds);
            cJSON *lv = cJSON_AddArrayToObject(o, "levels");
            for (uint32_t i = 0; i < r.n_levels; i++) {
                cJSON *l = cJSON_CreateObject();
                cJSON_AddNumberToObject(l, "concurrency", r.levels[i].concurrency);
                cJSON_AddNumberToObject(l, "tokens_per_second", r.levels[i].tokens_per_s);
                cJSON_AddItemToArray(lv, l);
            }
            cJSON_AddBoolToObject(o, "stored", store);
            char *t = cJSON_Print(o);
            printf("%s\n", t);
            cJSON_free(t);
            cJSON_Delete(o);
        } else if (r.encoder) {
            printf("%s: %.1f input tokens/s at concurrency %u (inputs of %u tokens) -> "
                   "throughput_chunk_size %llu%s\n",
                   name ? name : source, r.tokens_per_s, r.concurrency, r.input_tokens,
                   (unsigned long long)r.chunk_size, store ? " (stored)" : "");
        } else {
            printf("%s: %.1f tokens/s at concurrency %u (requests of %u + %u tokens) -> "
                   "throughput_chunk_size %llu%s\n",
                   name ? name : source, r.tokens_per_s, r.concurrency, r.input_tokens,
                   r.output_tokens, (unsigned long long)r.chunk_size, store ? " (stored)" : "");
        }
    }
    vkpt_model_destroy(m);
    vkpt_device_destroy(dev);
    vkpt_instance_destroy(inst);
    vkpt_model_version_free(&mv);
    vkpt_store_close(st);
    return err ? tool_fail(err, "calibrate") : 0;
}
