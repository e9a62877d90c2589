/* vkpt bench SUBJECT: performance measurements (never timed tests).
 *   memory   device-memory read and copy bandwidth through compute shaders
 *   kernels  the quantized-weight kernels per weight format and path */
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

/* ---- kernels: the quantized-weight kernels (engine/kernels/k_bench.c) ---- */

typedef struct kb_print {
    bool json;
    double read_gbps; /* the device's measured read bandwidth, 0 if unknown */
    cJSON *rows;
    int n, bad;
} kb_print;

static void kernels_row(const vkpt_kbench_row *r, void *ud)
{
    kb_print *p = ud;
    p->n++;
    p->bad += !r->ok;
    if (p->json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", r->name);
        cJSON_AddNumberToObject(o, "K", r->K);
        cJSON_AddNumberToObject(o, "M", r->M);
        cJSON_AddNumberToObject(o, "n_tok", r->n_tok);
        cJSON_AddNumberToObject(o, "us", r->us);
        cJSON_AddNumberToObject(o, "gbps", r->gbps);
        cJSON_AddNumberToObject(o, "gflops", r->gflops);
        cJSON_AddNumberToObject(o, "check", r->check);
        cJSON_AddBoolToObject(o, "ok", r->ok);
        cJSON_AddItemToArray(p->rows, o);
        return;
    }
    char bw[16] = "-";
    if (p->read_gbps > 0) snprintf(bw, sizeof bw, "%.0f%%", 100 * r->gbps / p->read_gbps);
    printf("%-34s %5u %11.1f %9.1f %6s %9.1f  %s\n", r->name, r->n_tok, r->us, r->gbps, bw,
           r->gflops, r->ok ? "ok" : "WRONG");
    fflush(stdout);
}

static int bench_kernels(int argc, char **argv)
{
    static const struct option opts[] = {{"device", required_argument, 0, 'd'},
                                         {"filter", required_argument, 0, 'f'},
                                         {"size", required_argument, 0, 's'},
                                         {"tokens", required_argument, 0, 't'},
                                         {"reps", required_argument, 0, 'r'},
                                         {"no-memory", no_argument, 0, 'n'},
                                         {"json", no_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *device = NULL;
    vkpt_kbench_opts ko = {0};
    bool json = false, memory = true;
    int ch, err;
    while ((ch = getopt_long(argc, argv, "d:f:s:t:r:njh", opts, NULL)) != -1) {
        switch (ch) {
        case 'd': device = optarg; break;
        case 'f': ko.filter = optarg; break;
        case 's':
            if (sscanf(optarg, "%ux%u", &ko.K, &ko.M) != 2 || !ko.K || !ko.M || ko.K % 256)
                return tool_fail(VKPT_EINVAL, "--size wants KxM with K a multiple of 256");
            break;
        case 't': ko.n_tok = (uint32_t)atoi(optarg); break;
        case 'r': ko.reps = atoi(optarg); break;
        case 'n': memory = false; break;
        case 'j': json = true; break;
        case 'h':
            printf("usage: vkpt bench kernels [--device D] [--filter TEXT] [--size KxM]\n"
                   "                          [--tokens N] [--reps N] [--no-memory] [--json]\n\n"
                   "Times the quantized-weight kernels for every weight format: matvec at\n"
                   "1 token on each path the device has (matvec, matvec_subgroup,\n"
                   "matvec_intdot), the tiled matmul and get_rows at N tokens, and the\n"
                   "activation quantization. Rows are named op/type/path; --filter keeps\n"
                   "those containing TEXT (e.g. q4_k, matvec/, intdot). Each row's sampled\n"
                   "outputs are checked against the C reference (ok / WRONG).\n"
                   "GB/s counts the bytes a kernel must move (weights once, activations,\n"
                   "output); %%bw compares it with the device's read bandwidth (measured\n"
                   "first, 256 MiB, unless --no-memory).\n"
                   "Defaults: K x M = 4096 x 14336 and N = 512 on GPUs; 2048 x 2048 and\n"
                   "32 on CPU devices (lavapipe).\n");
            return 0;
        default: return 2;
        }
    }
    vkpt_instance *inst;
    vkpt_device *dev;
    if ((err = tool_open_device(device, &inst, &dev))) return tool_fail(err, "bench kernels");
    const vkpt_device_caps *c = vkpt_device_get_caps(dev);
    kb_print p = {.json = json};
    if (memory) {
        vkpt_membench_result mr;
        if (!vkpt_bench_memory(dev, 256ull << 20, 3, &mr)) p.read_gbps = mr.read_gbps;
    }
    if (json) {
        p.rows = cJSON_CreateArray();
    } else {
        printf("device: %s\n", c->name);
        if (p.read_gbps > 0) printf("memory read bandwidth: %.1f GB/s\n", p.read_gbps);
        printf("%-34s %5s %11s %9s %6s %9s  %s\n", "kernel (op/type/path)", "tok", "us/call",
               "GB/s", "%bw", "GFLOP/s", "check");
    }
    err = vkpt_bench_kernels(dev, &ko, kernels_row, &p);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "device", c->name);
        cJSON_AddNumberToObject(o, "read_gbps", p.read_gbps);
        cJSON_AddItemToObject(o, "rows", p.rows);
        char *s = cJSON_Print(o);
        printf("%s\n", s);
        cJSON_free(s);
        cJSON_Delete(o);
    }
    if (!err && p.bad)
        err = vkpt_fail(VKPT_EVULKAN, "%d kernel(s) gave results outside their error bound", p.bad);
    if (!err && !p.n) err = vkpt_fail(VKPT_ENOTFOUND, "no kernel matches the filter");
    vkpt_device_destroy(dev);
    vkpt_instance_destroy(inst);
    return err ? tool_fail(err, "bench kernels") : 0;
}

int cmd_bench(int argc, char **argv)
{
    if (argc >= 2 && argv[1][0] == '-' && strcmp(argv[1], "-h") && strcmp(argv[1], "--help"))
        return bench_model(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "memory")) return bench_memory(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "kernels")) return bench_kernels(argc - 1, argv + 1);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: vkpt bench SUBJECT [options]\n\n"
               "subjects:\n"
               "  memory    device-memory read/copy bandwidth (the decode ceiling)\n"
               "  kernels   quantized-weight matvec/matmul/get_rows per format and path\n"
               "  -m MODEL  whole-model prefill/decode speed (pp/tg, or --batched); see\n"
               "            vkpt bench -m x --help\n");
        return argc < 2 ? 2 : 0;
    }
    fprintf(stderr, "vkpt bench: unknown subject '%s' (try vkpt bench --help)\n", argv[1]);
    return 2;
}
