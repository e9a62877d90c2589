/* vkpt bench SUBJECT: performance measurements (never timed tests).
 *   memory   device-memory read and copy bandwidth through compute shaders */
#include "cmd.h"
#include "vkpt/bench.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int bench_memory(int argc, char **argv)
{
    static const struct option opts[] = {
        {"device", required_argument, 0, 'd'}, {"size", required_argument, 0, 's'},
        {"reps", required_argument, 0, 'r'},   {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},         {0}};
    const char *device = NULL;
    uint64_t size_mib = 0;
    int reps = 5;
    bool json = false;
    int ch, err;
    while ((ch = getopt_long(argc, argv, "d:s:r:jh", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': device = optarg; break;
        case 's':
            if ((err = tool_parse_size(optarg, &size_mib))) return tool_fail(err, "--size");
            break;
        case 'r': reps = atoi(optarg); break;
        case 'j': json = true; break;
        case 'h':
            printf("usage: vkpt bench memory [--device D] [--size MiB] [--reps N] [--json]\n\n"
                   "Measures device-memory bandwidth with compute shaders: a read kernel\n"
                   "(vec4 loads, grid-stride) and a copy kernel (reported as bytes read +\n"
                   "written per second). The best of N repetitions of 8 passes is shown.\n"
                   "Default size: 1 GiB, less when the device's heap or its largest\n"
                   "storage-buffer binding is smaller.\n");
            return 0;
        default: return 2;
        }
    }
    vkpt_instance *inst;
    vkpt_device *dev;
    if ((err = tool_open_device(device, &inst, &dev))) return tool_fail(err, "bench memory");
    vkpt_membench_result r;
    err = vkpt_bench_memory(dev, size_mib << 20, reps, &r);
    const vkpt_device_caps *c = vkpt_device_get_caps(dev);
    if (!err) {
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "device", c->name);
            cJSON_AddNumberToObject(o, "bytes", (double)r.bytes);
            cJSON_AddNumberToObject(o, "reps", r.reps);
            cJSON_AddNumberToObject(o, "read_gbps", r.read_gbps);
            cJSON_AddNumberToObject(o, "copy_gbps", r.copy_gbps);
            cJSON_AddNumberToObject(o, "read_ms", r.read_ms);
            cJSON_AddNumberToObject(o, "copy_ms", r.copy_ms);
            cJSON_AddBoolToObject(o, "copy_verified", r.copy_verified);
            char *s = cJSON_Print(o);
            printf("%s\n", s);
            cJSON_free(s);
            cJSON_Delete(o);
        } else {
            printf("device: %s\nbuffer: %.0f MiB, best of %d\n", c->name, r.bytes / 1048576.0,
                   r.reps);
            printf("%-6s %10s %10s\n", "kernel", "GB/s", "ms/pass");
            printf("%-6s %10.1f %10.3f\n", "read", r.read_gbps, r.read_ms);
            printf("%-6s %10.1f %10.3f%s\n", "copy", r.copy_gbps, r.copy_ms,
                   r.copy_verified ? "" : "   (copy check FAILED)");
        }
        if (!r.copy_verified)
            err = vkpt_fail(VKPT_EVULKAN, "the copy kernel's output did not match");
    }
    vkpt_device_destroy(dev);
    vkpt_instance_destroy(inst);
    return err ? tool_fail(err, "bench memory") : 0;
}

int cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "memory")) return bench_memory(argc - 1, argv + 1);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: vkpt bench SUBJECT [options]\n\n"
               "subjects:\n"
               "  memory    device-memory read/copy bandwidth (the decode ceiling)\n");
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "vkpt bench: unknown subject '%s' (try vkpt bench --help)\n", argv[1]);
    return 2;
}
