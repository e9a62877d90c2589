/* vkpt register: add a version of a registered model (catalog.schema.model)
 * to the data directory's store: its files' checksum, task, model_type,
 * context length and metadata (include/vkpt/registry.h). */
#define _GNU_SOURCE
#include "cmd.h"
#include "vkpt/registry.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vkpt register PATH --name CATALOG.SCHEMA.MODEL [options]\n\n"
            "Registers PATH (a .gguf file or a Hugging Face folder) as the next version of a\n"
            "model, for serving endpoints (vkpt serve, /api/2.0/serving-endpoints).\n\n"
            "  --name NAME          catalog.schema.model (letters, digits, '_' and '-' per part)\n"
            "  --task TASK          llm/v1/chat, llm/v1/completions or llm/v1/embeddings\n"
            "                       (default: embeddings for encoders, else chat)\n"
            "  --model-type TYPE    e.g. llama, mixtral, dbrx, bge (default: from the files)\n"
            "  --context-length N   the context to serve and calibrate with (default: the\n"
            "                       model's training context; at most that)\n"
            "  --metadata K=V       metadata entry (repeatable; true/false are booleans). Known\n"
            "                       keys: system_prompt, chat_template, pooling, normalize\n"
            "  --data-dir DIR       the data directory (default $VKPT_DATA_DIR, else\n"
            "                       $XDG_DATA_HOME/vkpt, else ~/.local/share/vkpt)\n"
            "  --json               print the version as JSON\n");
}

int cmd_register(int argc, char **argv)
{
    enum { O_NAME = 256, O_TASK, O_TYPE, O_META, O_DATA, O_JSON, O_CTX };
    static const struct option opts[] = {{"name", required_argument, 0, O_NAME},
                                         {"task", required_argument, 0, O_TASK},
                                         {"model-type", required_argument, 0, O_TYPE},
                                         {"metadata", required_argument, 0, O_META},
                                         {"data-dir", required_argument, 0, O_DATA},
                                         {"json", no_argument, 0, O_JSON},
                                         {"context-length", required_argument, 0, O_CTX},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *name = NULL, *task = NULL, *type = NULL, *data = NULL;
    bool json = false;
    long ctx = 0;
    cJSON *meta = cJSON_CreateObject();
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case O_NAME: name = optarg; break;
        case O_TASK: task = optarg; break;
        case O_TYPE: type = optarg; break;
        case O_DATA: data = optarg; break;
        case O_JSON: json = true; break;
        case O_CTX:
            ctx = strtol(optarg, NULL, 10);
            if (ctx < 1 || ctx > 1 << 24) {
                fprintf(stderr, "vkpt register: --context-length takes a positive integer\n");
                cJSON_Delete(meta);
                return 2;
            }
            break;
        case O_META: {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg) {
                fprintf(stderr, "vkpt register: --metadata takes KEY=VALUE; got '%s'\n", optarg);
                cJSON_Delete(meta);
                return 2;
            }
            *eq = 0;
            const char *v = eq + 1;
            cJSON_DeleteItemFromObjectCaseSensitive(meta, optarg);
            if (!strcmp(v, "true") || !strcmp(v, "false"))
                cJSON_AddBoolToObject(meta, optarg, !strcmp(v, "true"));
            else
                cJSON_AddStringToObject(meta, optarg, v);
            break;
        }
        case 'h':
            usage(stdout);
            cJSON_Delete(meta);
            return 0;
        default:
            usage(stderr);
            cJSON_Delete(meta);
            return 2;
        }
    }
    if (optind + 1 != argc || !name) {
        fprintf(stderr, "vkpt register: give one PATH and --name\n");
        usage(stderr);
        cJSON_Delete(meta);
        return 2;
    }
    char dir[4096];
    vkpt_store *st = NULL;
    char *mtext = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    int err = vkpt_registry_data_dir(data, dir, sizeof dir);
    if (!err) err = vkpt_registry_open(dir, &st);
    vkpt_model_version v = {0};
    if (!err) {
        vkpt_register_req r = {
            .name = name,
            .source = argv[optind],
            .task = task,
            .model_type = type,
            .context_length = (uint32_t)ctx,
            .metadata = mtext,
        };
        err = vkpt_registry_register(st, &r, &v);
    }
    cJSON_free(mtext);
    if (err) {
        vkpt_store_close(st);
        return tool_fail(err, "register");
    }
    if (json) {
        char *t = vkpt_registry_version_json(&v);
        printf("%s\n", t ? t : "{}");
        vkpt_free(t);
    } else {
        printf("registered %s version %u: %s, %s, context %u, %s\n  %s\n", v.name, v.version,
               v.model_type, v.task, v.context_length, v.checksum, v.source);
    }
    vkpt_model_version_free(&v);
    vkpt_store_close(st);
    return 0;
}
