/* The `vkpt` command's subcommands: each is `int cmd_NAME(int argc, char
 * **argv)` with argv[0] = the subcommand name, returning the exit status. */
#ifndef VKPT_TOOLS_CMD_H
#define VKPT_TOOLS_CMD_H

#include "vkpt/base.h"
#include "vkpt/device.h"

#define VKPT_CMD_LIST(X)                                     \
    X(devices, "list Vulkan devices and their capabilities") \
    X(run, "generate text from a prompt")                    \
    X(synth, "write a random-weight model at real shapes")   \
    X(quantize, "quantize a GGUF file or HF folder to GGUF") \
    X(serve, "serve a model over HTTP (OpenAI API)")         \
    X(register, "register a model version (catalog.schema)") \
    X(models, "list registered models (system.ai included)") \
    X(calibrate, "measure a model's throughput chunk size")  \
    X(embed, "embed text with an encoder model (vectors)")   \
    X(loadgen, "load-test an OpenAI-compatible endpoint")    \
    X(bench, "benchmarks: memory, kernels, model pp/tg")     \
    X(tokenize, "text to token ids and back (JSON lines)")   \
    X(template, "render a model's chat template")

#define X(name, summary) int cmd_##name(int argc, char **argv);
VKPT_CMD_LIST(X)
#undef X

/* vkpt bench -m MODEL ... (tools/cmd_bench_model.c), argv[0] = "bench". */
int bench_model(int argc, char **argv);

/* Shared helpers (tools/util.c). */
/* Print "vkpt: <what>: <detail>" for error `err` to stderr; returns 1. */
int tool_fail(int err, const char *what);
/* Open the instance (validation per VKPT_VALIDATE) and the device named by
 * `spec` (index, UUID or name substring; NULL for the default). */
int tool_open_device(const char *spec, vkpt_instance **inst, vkpt_device **dev);
/* Parse a decimal or 0x number with an optional K/M/G suffix (powers of 2). */
int tool_parse_size(const char *s, uint64_t *out);
/* Parse "1,2,3" (commas or spaces) into token ids (malloc'd; free() them). */
int tool_parse_ids(const char *s, int32_t **ids, uint32_t *n);

#endif
