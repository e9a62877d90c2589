/* vkpt models: the registered models of a data directory, the system.ai
 * catalog included (the bundled model and the models folder, synced first). */
#define _GNU_SOURCE
#include "cmd.h"
#include "vkpt/registry.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: vkpt models [--data-dir DIR] [--models-dir DIR] [--json]\n\n"
               "Lists every version of every registered model. The system.ai catalog is the\n"
               "model bundled with vkpt and each .gguf file or Hugging Face folder in the models\n"
               "folder (default DATA_DIR/models); it is brought up to date first.\n");
}

int cmd_models(int argc, char **argv)
{
    enum { O_DATA = 256, O_MODELS, O_JSON };
    static const struct option opts[] = {{"data-dir", required_argument, 0, O_DATA},
                                         {"models-dir", required_argument, 0, O_MODELS},
                                         {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *data = NULL, *models = NULL;
    bool json = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case O_DATA: data = optarg; break;
        case O_MODELS: models = optarg; break;
        case O_JSON: json = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    char dir[4096], mdir[4200];
    vkpt_store *st = NULL;
    int err = vkpt_registry_data_dir(data, dir, sizeof dir);
    if (!err) err = vkpt_registry_open(dir, &st);
    if (!err) {
        snprintf(mdir, sizeof mdir, "%s/models", dir);
        int r = vkpt_registry_sync_system(st, VKPT_DEFAULT_MODEL, models ? models : mdir);
        if (r < 0) err = r;
    }
    vkpt_model_version *v = NULL;
    size_t n = 0;
    if (!err) err = st->ops->model_list(st, NULL, &v, &n);
    if (err) {
        vkpt_store_close(st);
        return tool_fail(err, "models");
    }
    if (json) {
        printf("[");
        for (size_t i = 0; i < n; i++) {
            char *t = vkpt_registry_version_json(&v[i]);
            printf("%s%s", i ? ",\n " : "", t ? t : "{}");
            vkpt_free(t);
        }
        printf("]\n");
    } else {
        printf("%-40s %7s %-20s %-10s %7s  %s\n", "NAME", "VERSION", "TASK", "TYPE", "CONTEXT",
               "SOURCE");
        for (size_t i = 0; i < n; i++)
            printf("%-40s %7u %-20s %-10s %7u  %s\n", v[i].name, v[i].version, v[i].task,
                   v[i].model_type, v[i].context_length, v[i].source);
    }
    vkpt_model_versions_free(v, n);
    vkpt_store_close(st);
    return 0;
}
