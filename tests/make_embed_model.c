/* make_embed_model: write a random-weight encoder at a real model's shape as
 * a Hugging Face folder (config.json, model.safetensors, tokenizer.json and
 * the sentence-transformers pooling files), for the embedding benchmarks:
 *
 *   build/tests/make_embed_model bge-large /tmp/bge-large
 *   build/tools/vkpt embed -m /tmp/bge-large --bench 8 --bench-len 512
 *
 * Presets are the shapes of BAAI/bge-large-en-v1.5 (BERT), Alibaba-NLP/
 * gte-large-en-v1.5 (GTE v1.5, "new"), nomic-ai/nomic-embed-text-v1.5
 * (nomic-bert), plus small ones for tests. Weights are F16 (as those models
 * ship), random with fan-in scaling: right for timing, meaningless as
 * embeddings. */
#include "embed_models.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const struct preset {
    const char *name;
    embt_cfg c;
    const char *pooling;
    bool normalize;
} presets[] = {
    {"bge-large",
     {EMBT_BERT, 30522, 1024, 24, 16, 4096, 512, 2, 1e-12f, 0, 0, true, 1},
     "cls",
     true},
    {"gte-large",
     {EMBT_GTE, 30528, 1024, 24, 16, 4096, 8192, 2, 1e-12f, 160000.0f, 2.0f, true, 2},
     "cls",
     false},
    {"nomic-embed",
     {EMBT_NOMIC, 30528, 768, 12, 12, 3072, 8192, 2, 1e-12f, 1000.0f, 0, true, 3},
     "mean",
     true},
    {"bge-tiny", {EMBT_BERT, 1000, 64, 2, 4, 128, 512, 2, 1e-12f, 0, 0, true, 4}, "cls", true},
    {"gte-tiny",
     {EMBT_GTE, 1000, 64, 2, 4, 128, 2048, 2, 1e-12f, 160000.0f, 2.0f, true, 5},
     "cls",
     false},
};

int main(int argc, char **argv)
{
    const struct preset *p = NULL;
    for (size_t i = 0; argc == 3 && i < sizeof presets / sizeof presets[0]; i++)
        if (!strcmp(argv[1], presets[i].name)) p = &presets[i];
    if (!p) {
        fprintf(stderr, "usage: make_embed_model PRESET OUT_DIR\npresets:");
        for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
            fprintf(stderr, " %s", presets[i].name);
        fprintf(stderr, "\n");
        return 2;
    }
    if (mkdir(argv[2], 0755) && errno != EEXIST) {
        fprintf(stderr, "make_embed_model: %s: %s\n", argv[2], strerror(errno));
        return 1;
    }
    embt_model m;
    int err = embt_make(&p->c, &m);
    if (!err) err = embt_write_hf(&m, argv[2], p->pooling, p->normalize);
    embt_free(&m);
    if (err) {
        fprintf(stderr, "make_embed_model: %s: error %d\n", argv[2], err);
        return 1;
    }
    fprintf(stderr, "make_embed_model: wrote %s (%s shape)\n", argv[2], p->name);
    return 0;
}
