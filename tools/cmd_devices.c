/* vkpt devices [--json]: every Vulkan device with its caps and queues. */
#include "cmd.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char *ctype_name(int32_t t)
{
    switch (t) {
    case VKPT_CT_F16: return "f16";
    case VKPT_CT_F32: return "f32";
    case VKPT_CT_F64: return "f64";
    case VKPT_CT_S8: return "s8";
    case VKPT_CT_S16: return "s16";
    case VKPT_CT_S32: return "s32";
    case VKPT_CT_S64: return "s64";
    case VKPT_CT_U8: return "u8";
    case VKPT_CT_U16: return "u16";
    case VKPT_CT_U32: return "u32";
    case VKPT_CT_U64: return "u64";
    case VKPT_CT_BF16: return "bf16";
    default: return "?";
    }
}

static void uuid_str(const uint8_t u[16], char out[37])
{
    int k = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[k++] = '-';
        k += snprintf(out + k, 3, "%02x", u[i]);
    }
    out[k] = 0;
}

static cJSON *caps_json(int index, const vkpt_device_caps *c)
{
    char uuid[37];
    uuid_str(c->uuid, uuid);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", index);
    cJSON_AddStringToObject(o, "name", c->name);
    cJSON_AddStringToObject(o, "type", vkpt_device_type_name(c->type));
    cJSON_AddStringToObject(o, "vendor", vkpt_vendor_name(c->vendor_id));
    cJSON_AddNumberToObject(o, "vendor_id", c->vendor_id);
    cJSON_AddNumberToObject(o, "device_id", c->device_id);
    cJSON_AddNumberToObject(o, "driver_id", c->driver_id);
    cJSON_AddStringToObject(o, "driver_name", c->driver_name);
    cJSON_AddStringToObject(o, "driver_info", c->driver_info);
    cJSON_AddNumberToObject(o, "driver_version", c->driver_version);
    char api[32];
    snprintf(api, sizeof api, "%u.%u.%u", VKPT_VK_MAJOR(c->api_version),
             VKPT_VK_MINOR(c->api_version), VKPT_VK_PATCH(c->api_version));
    cJSON_AddStringToObject(o, "api_version", api);
    cJSON_AddStringToObject(o, "uuid", uuid);

    cJSON *sg = cJSON_AddObjectToObject(o, "subgroup");
    cJSON_AddNumberToObject(sg, "size", c->subgroup_size);
    cJSON_AddNumberToObject(sg, "min", c->subgroup_min);
    cJSON_AddNumberToObject(sg, "max", c->subgroup_max);
    cJSON_AddBoolToObject(sg, "size_control", c->subgroup_size_control);
    cJSON_AddBoolToObject(sg, "arithmetic", c->subgroup_arith);
    cJSON_AddBoolToObject(sg, "shuffle", c->subgroup_shuffle);
    cJSON_AddBoolToObject(sg, "ballot", c->subgroup_ballot);

    cJSON *f = cJSON_AddObjectToObject(o, "features");
    cJSON_AddBoolToObject(f, "fp16", c->fp16);
    cJSON_AddBoolToObject(f, "int8", c->int8);
    cJSON_AddBoolToObject(f, "int16", c->int16);
    cJSON_AddBoolToObject(f, "int64", c->int64);
    cJSON_AddBoolToObject(f, "storage_8bit", c->storage8);
    cJSON_AddBoolToObject(f, "storage_16bit", c->storage16);
    cJSON_AddBoolToObject(f, "integer_dot_product", c->int_dot);
    cJSON_AddBoolToObject(f, "integer_dot_product_accelerated", c->int_dot_accel);
    cJSON_AddBoolToObject(f, "cooperative_matrix_khr", c->coopmat_khr);
    cJSON_AddBoolToObject(f, "cooperative_matrix2_nv", c->coopmat_nv2);
    cJSON_AddBoolToObject(f, "bfloat16", c->bf16);
    cJSON_AddBoolToObject(f, "push_descriptor", c->push_descriptor);
    cJSON_AddBoolToObject(f, "memory_budget", c->memory_budget);
    cJSON_AddBoolToObject(f, "timeline_semaphore", c->timeline_semaphore);
    cJSON_AddBoolToObject(f, "buffer_device_address", c->buffer_device_address);
    cJSON_AddBoolToObject(f, "vulkan_memory_model", c->vulkan_memory_model);
    cJSON_AddBoolToObject(f, "maintenance4", c->maintenance4);
    cJSON *shapes = cJSON_AddArrayToObject(o, "cooperative_matrix_shapes");
    for (uint32_t i = 0; i < c->n_coopmat_shapes; i++) {
        const vkpt_coopmat_shape *s = &c->coopmat_shapes[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "m", s->m);
        cJSON_AddNumberToObject(e, "n", s->n);
        cJSON_AddNumberToObject(e, "k", s->k);
        cJSON_AddStringToObject(e, "a", ctype_name(s->a));
        cJSON_AddStringToObject(e, "b", ctype_name(s->b));
        cJSON_AddStringToObject(e, "c", ctype_name(s->c));
        cJSON_AddStringToObject(e, "result", ctype_name(s->result));
        cJSON_AddStringToObject(e, "scope",
                                s->scope == 3   ? "subgroup"
                                : s->scope == 2 ? "workgroup"
                                                : "other");
        cJSON_AddItemToArray(shapes, e);
    }
    if (c->coopmat_nv2) {
        cJSON_AddNumberToObject(o, "cooperative_matrix2_max_workgroup_size",
                                c->coopmat2_max_wg_size);
        cJSON *flex = cJSON_AddArrayToObject(o, "cooperative_matrix2_flexible_dimensions");
        for (uint32_t i = 0; i < c->n_coopmat_flex; i++) {
            const vkpt_coopmat_flex *x = &c->coopmat_flex[i];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "m_granularity", x->m_gran);
            cJSON_AddNumberToObject(e, "n_granularity", x->n_gran);
            cJSON_AddNumberToObject(e, "k_granularity", x->k_gran);
            cJSON_AddStringToObject(e, "a", ctype_name(x->a));
            cJSON_AddStringToObject(e, "b", ctype_name(x->b));
            cJSON_AddStringToObject(e, "c", ctype_name(x->c));
            cJSON_AddStringToObject(e, "result", ctype_name(x->result));
            cJSON_AddStringToObject(e, "scope", x->scope == 2 ? "workgroup" : "other");
            cJSON_AddNumberToObject(e, "workgroup_invocations", x->wg_invocations);
            cJSON_AddItemToArray(flex, e);
        }
    }

    cJSON *l = cJSON_AddObjectToObject(o, "limits");
    cJSON_AddNumberToObject(l, "max_workgroup_invocations", c->max_wg_invocations);
    cJSON_AddItemToObject(
        l, "max_workgroup_size",
        cJSON_CreateIntArray(
            (const int[]){(int)c->max_wg_size[0], (int)c->max_wg_size[1], (int)c->max_wg_size[2]},
            3));
    cJSON_AddItemToObject(
        l, "max_workgroup_count",
        cJSON_CreateDoubleArray(
            (const double[]){c->max_wg_count[0], c->max_wg_count[1], c->max_wg_count[2]}, 3));
    cJSON_AddNumberToObject(l, "max_push_constants", c->max_push_constants);
    cJSON_AddNumberToObject(l, "max_shared_memory", c->max_shared_memory);
    cJSON_AddNumberToObject(l, "max_storage_buffer_range", (double)c->max_storage_buffer_range);
    cJSON_AddNumberToObject(l, "min_storage_offset_alignment", (double)c->min_storage_offset_align);
    cJSON_AddNumberToObject(l, "max_allocation_size", (double)c->max_alloc_size);
    cJSON_AddNumberToObject(l, "max_buffer_size", (double)c->max_buffer_size);
    cJSON_AddNumberToObject(l, "timestamp_period_ns", c->timestamp_period_ns);

    cJSON *m = cJSON_AddObjectToObject(o, "memory");
    cJSON_AddNumberToObject(m, "device_local_bytes", (double)c->device_local_bytes);
    cJSON_AddBoolToObject(m, "unified", c->unified_memory);
    cJSON *heaps = cJSON_AddArrayToObject(m, "heaps");
    for (uint32_t i = 0; i < c->n_heaps; i++) {
        cJSON *h = cJSON_CreateObject();
        cJSON_AddNumberToObject(h, "size", (double)c->heaps[i].size);
        cJSON_AddNumberToObject(h, "budget", (double)c->heaps[i].budget);
        cJSON_AddNumberToObject(h, "usage", (double)c->heaps[i].usage);
        cJSON_AddBoolToObject(h, "device_local", c->heaps[i].device_local);
        cJSON_AddItemToArray(heaps, h);
    }
    cJSON *qs = cJSON_AddArrayToObject(o, "queue_families");
    for (uint32_t i = 0; i < c->n_queue_families; i++) {
        const vkpt_queue_family_info *q = &c->queue_families[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "index", q->index);
        cJSON_AddNumberToObject(e, "count", q->count);
        cJSON_AddBoolToObject(e, "compute", q->compute);
        cJSON_AddBoolToObject(e, "graphics", q->graphics);
        cJSON_AddBoolToObject(e, "transfer", q->transfer);
        cJSON_AddNumberToObject(e, "timestamp_bits", q->timestamp_bits);
        cJSON_AddItemToArray(qs, e);
    }
    cJSON_AddNumberToObject(o, "compute_queues", c->n_compute_queues);
    cJSON_AddBoolToObject(o, "dedicated_transfer_queue", c->has_transfer_queue);
    return o;
}

static void print_text(int index, const vkpt_device_caps *c)
{
    char uuid[37];
    uuid_str(c->uuid, uuid);
    printf("[%d] %s (%s, %s)\n", index, c->name, vkpt_vendor_name(c->vendor_id),
           vkpt_device_type_name(c->type));
    printf("    driver      %s %s, Vulkan %u.%u.%u\n", c->driver_name, c->driver_info,
           VKPT_VK_MAJOR(c->api_version), VKPT_VK_MINOR(c->api_version),
           VKPT_VK_PATCH(c->api_version));
    printf("    uuid        %s\n", uuid);
    printf("    memory      %.2f GiB device-local%s", c->device_local_bytes / 1073741824.0,
           c->unified_memory ? " (unified)" : "");
    for (uint32_t i = 0; i < c->n_heaps; i++)
        printf("%s heap%u %.2f GiB%s", i ? "," : ";", i, c->heaps[i].size / 1073741824.0,
               c->heaps[i].device_local ? " local" : "");
    printf("\n    subgroup    %u (%u..%u)%s%s\n", c->subgroup_size, c->subgroup_min,
           c->subgroup_max, c->subgroup_size_control ? ", size control" : "",
           c->subgroup_arith ? ", arithmetic" : "");
    printf("    features   %s%s%s%s%s%s%s%s\n", c->fp16 ? " fp16" : "", c->int8 ? " int8" : "",
           c->storage16 ? " storage16" : "", c->storage8 ? " storage8" : "",
           c->int_dot ? (c->int_dot_accel ? " int-dot(accelerated)" : " int-dot") : "",
           c->coopmat_khr ? " coopmat-khr" : "", c->coopmat_nv2 ? " coopmat2-nv" : "",
           c->bf16 ? " bf16" : "");
    if (c->n_coopmat_shapes) {
        printf("    coopmat    ");
        for (uint32_t i = 0; i < c->n_coopmat_shapes; i++) {
            const vkpt_coopmat_shape *s = &c->coopmat_shapes[i];
            printf(" %ux%ux%u:%s*%s+%s", s->m, s->n, s->k, ctype_name(s->a), ctype_name(s->b),
                   ctype_name(s->c));
        }
        printf("\n");
    }
    printf("    queues      %u compute", c->n_compute_queues);
    for (uint32_t i = 0; i < c->n_queue_families; i++) {
        const vkpt_queue_family_info *q = &c->queue_families[i];
        printf("%s family%u x%u %s%s%s", i ? "," : ";", q->index, q->count, q->graphics ? "G" : "",
               q->compute ? "C" : "", q->transfer ? "T" : "");
    }
    printf("\n    limits      wg %u invocations, shared %u KiB, push %u B, binding %.0f MiB\n",
           c->max_wg_invocations, c->max_shared_memory / 1024, c->max_push_constants,
           c->max_storage_buffer_range / 1048576.0);
}

int cmd_devices(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0}};
    bool json = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
        switch (ch) {
        case 'j': json = true; break;
        case 'h':
            printf("usage: vkpt devices [--json]\n\n"
                   "Lists every Vulkan device (GPUs, and lavapipe on the CPU) with the\n"
                   "capabilities vkpt chooses kernels by. Use its index, UUID or a part of its\n"
                   "name as --device for other commands.\n");
            return 0;
        default: return 2;
        }
    }
    vkpt_instance *inst;
    vkpt_instance_opts io = {.validate = -1};
    int err = vkpt_instance_create(&io, &inst);
    if (err) return tool_fail(err, "devices");
    int n = vkpt_instance_device_count(inst);
    if (json) {
        cJSON *arr = cJSON_CreateArray();
        for (int i = 0; i < n; i++)
            cJSON_AddItemToArray(arr, caps_json(i, vkpt_instance_caps(inst, i)));
        char *s = cJSON_Print(arr);
        printf("%s\n", s);
        cJSON_free(s);
        cJSON_Delete(arr);
    } else {
        for (int i = 0; i < n; i++) print_text(i, vkpt_instance_caps(inst, i));
    }
    vkpt_instance_destroy(inst);
    return 0;
}
