/* vkpt: the command-line entry point. Dispatches to a subcommand from one
 * table (tools/cmd.h); `vkpt --help` lists them, `vkpt CMD --help` explains
 * one. */
#include "cmd.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
#define X(name, summary) {#name, cmd_##name, summary},
    VKPT_CMD_LIST(X)
#undef X
};

static void usage(FILE *f)
{
    fprintf(f,
            "vkpt %s: LLM inference server on Vulkan compute\n\n"
            "usage: vkpt COMMAND [options]     (vkpt COMMAND --help for its options)\n\n"
            "commands:\n",
            VKPT_VERSION_STRING);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(
        f,
        "\nenvironment:\n"
        "  VKPT_LOG=error|warn|info|debug|trace   log level (default info)\n"
        "  VKPT_VALIDATE=1                        enable the Khronos validation layer\n"
        "  VKPT_PROFILE=1                         per-kernel GPU timestamps\n"
        "  VKPT_CACHE_DIR=DIR                     pipeline cache folder (default ~/.cache/vkpt)\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("vkpt %s\n", VKPT_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "vkpt: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
