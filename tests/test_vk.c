/* engine/vk: device caps, memory, pipelines from the variant table, the
 * dispatch path end to end (GLSL -> embedded SPIR-V -> pipeline -> dispatch),
 * push-constant layouts vs SPIR-V, the pipeline cache, and failure paths
 * (out of device memory, device lost). */
#define _GNU_SOURCE
#include "vk_fixture.h"
#include "kernels.h"
#include "kernels_ref.h"
#include "vkpt/bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void vk_caps_describe_the_device(void **state)
{
    const vkpt_device_caps *c = vkpt_device_get_caps(vkpt_test_dev(state));
    assert_true(strlen(c->name) > 0);
    assert_true(c->subgroup_size >= 1);
    assert_true(c->subgroup_min <= c->subgroup_size && c->subgroup_size <= c->subgroup_max);
    assert_true(c->max_wg_invocations >= 128);
    assert_true(c->n_heaps >= 1);
    assert_true(c->device_local_bytes > 0);
    assert_true(c->n_compute_queues >= 1);
    assert_true(c->push_descriptor && c->timeline_semaphore);
}

static void vk_buffers_are_aligned_disjoint_and_accounted(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_mem_stats s0, s1, s2;
    vkpt_device_mem_stats(dev, &s0);
    enum { N = 40 };
    vkpt_buf b[N];
    uint64_t sizes[N];
    for (int i = 0; i < N; i++) {
        sizes[i] = 1 + (uint64_t)i * 37777;
        assert_int_equal(vkpt_buf_alloc(dev, sizes[i], VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b[i]), 0);
        assert_int_equal(b[i].off % dev->align, 0);
        assert_true(b[i].size >= sizes[i]);
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            if (b[i].buf == b[j].buf)
                assert_true(b[i].off + b[i].size <= b[j].off || b[j].off + b[j].size <= b[i].off);
    vkpt_device_mem_stats(dev, &s1);
    assert_true(s1.used[VKPT_MEM_SCRATCH] >= s0.used[VKPT_MEM_SCRATCH] + 40 * 37777 / 2);
    for (int i = 0; i < N; i += 2) vkpt_buf_free(dev, &b[i]); /* holes, then refill */
    for (int i = 0; i < N; i += 2)
        assert_int_equal(vkpt_buf_alloc(dev, sizes[i], VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b[i]), 0);
    for (int i = 0; i < N; i++) vkpt_buf_free(dev, &b[i]);
    vkpt_device_mem_stats(dev, &s2);
    assert_int_equal(s2.used[VKPT_MEM_SCRATCH], s0.used[VKPT_MEM_SCRATCH]);
    assert_int_equal(s2.reserved, s0.reserved); /* empty blocks go back */
}

static void vk_upload_download_roundtrip_through_staging(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    /* force the staging path even on unified memory (lavapipe) */
    dev->no_map_device_local = true;
    size_t n = (80u << 20) / 4 + 13; /* larger than one staging half */
    float *x = malloc(n * 4), *y = malloc(n * 4);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 1);
    vkpt_test_fill_f32(&r, x, n, -1, 1);
    vkpt_buf b;
    assert_int_equal(vkpt_buf_alloc(dev, n * 4, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &b), 0);
    assert_null(b.map);
    assert_int_equal(vkpt_buf_upload(dev, &b, 0, x, n * 4), 0);
    memset(y, 0, n * 4);
    assert_int_equal(vkpt_buf_download(dev, &b, 0, y, n * 4), 0);
    assert_memory_equal(x, y, n * 4);
    /* ranges past the end are refused */
    assert_int_equal(vkpt_buf_upload(dev, &b, b.size - 4, x, 8), VKPT_EINVAL);
    vkpt_buf_free(dev, &b);
    dev->no_map_device_local = false;
    free(x);
    free(y);
}

static void vk_add_kernel_matches_reference_at_odd_sizes(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    static const uint32_t sizes[] = {1, 7, 255, 256, 257, 1000, 100003};
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(dev, 0, &c), 0);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 7);
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        uint32_t n = sizes[t];
        float *a = malloc(n * 4), *b = malloc(n * 4), *got = malloc(n * 4), *want = malloc(n * 4);
        vkpt_test_fill_f32(&r, a, n, -10, 10);
        vkpt_test_fill_f32(&r, b, n, -10, 10);
        vkpt_buf ba, bb, bc;
        assert_int_equal(vkpt_buf_alloc(dev, n * 4, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &ba), 0);
        assert_int_equal(vkpt_buf_alloc(dev, n * 4, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &bb), 0);
        assert_int_equal(vkpt_buf_alloc(dev, n * 4 + 64, VKPT_MK_DEVICE, VKPT_MEM_SCRATCH, &bc), 0);
        assert_int_equal(vkpt_buf_upload(dev, &ba, 0, a, n * 4), 0);
        assert_int_equal(vkpt_buf_upload(dev, &bb, 0, b, n * 4), 0);
        /* a sentinel after the end must survive: no out-of-range writes */
        float sentinel[16];
        for (int i = 0; i < 16; i++) sentinel[i] = 12345.0f;
        assert_int_equal(vkpt_buf_upload(dev, &bc, n * 4, sentinel, 64), 0);
        assert_int_equal(vkpt_cmd_begin(&c), 0);
        assert_int_equal(vkpt_k_add_f32(&c, &ba, &bb, &bc, n), 0);
        assert_int_equal(vkpt_cmd_run(&c), 0);
        assert_int_equal(vkpt_buf_download(dev, &bc, 0, got, n * 4), 0);
        float after[16];
        assert_int_equal(vkpt_buf_download(dev, &bc, n * 4, after, 64), 0);
        vkpt_ref_add_f32(a, b, want, n);
        /* one f32 rounding, same operation order: exact */
        assert_memory_equal(got, want, n * 4);
        assert_memory_equal(after, sentinel, 64);
        vkpt_buf_free(dev, &ba);
        vkpt_buf_free(dev, &bb);
        vkpt_buf_free(dev, &bc);
        free(a), free(b), free(got), free(want);
    }
    vkpt_cmd_free(&c);
}

/* C side of every push-constant block (shaders/common/pc.h). */
typedef struct pc_field {
    const char *name;
    uint32_t offset, size;
} pc_field;
typedef struct pc_struct {
    const char *name;
    uint32_t size;
    pc_field fields[VKPT_SPV_MAX_MEMBERS];
    uint32_t n;
} pc_struct;
static pc_struct g_pc[] = {
#define STRUCT_FIELDS(sname, FIELDS) {#sname, (uint32_t)sizeof(sname), {{0}}, 0},
    VKPT_PC_ALL(STRUCT_FIELDS)
#undef STRUCT_FIELDS
};

static void fill_pc_tables(void)
{
    size_t k = 0;
#define ADD_FIELD(t, f)           \
    g_pc[k].fields[g_pc[k].n++] = \
        (pc_field){#f, (uint32_t)offsetof(CUR, f), (uint32_t)sizeof(((CUR *)0)->f)};
#define ONE(sname, FIELDS) \
    {                      \
        typedef sname CUR; \
        FIELDS(ADD_FIELD)  \
        k++;               \
    }
    VKPT_PC_ALL(ONE)
#undef ONE
#undef ADD_FIELD
}

static void vk_push_constant_structs_match_the_spirv(void **state)
{
    (void)state;
    fill_pc_tables();
    int checked = 0;
    for (int v = 0; v < VKPT_V_COUNT; v++) {
        const vkpt_variant *var = &vkpt_variants[v];
        if (!var->spv) continue;
        vkpt_spv_info info;
        assert_int_equal(vkpt_spv_reflect(var->spv->words, var->spv->n, &info), 0);
        if (!info.pc_size) continue;
        pc_struct *cs = NULL;
        for (size_t i = 0; i < sizeof g_pc / sizeof g_pc[0]; i++)
            if (!strcmp(g_pc[i].name, info.pc_struct)) cs = &g_pc[i];
        if (!cs)
            fail_msg("%s: push-constant struct '%s' is not in VKPT_PC_ALL", var->name,
                     info.pc_struct);
        assert_int_equal(info.n_pc_members, cs->n);
        for (uint32_t i = 0; i < cs->n; i++) {
            assert_string_equal(info.pc_members[i].name, cs->fields[i].name);
            if (info.pc_members[i].offset != cs->fields[i].offset ||
                info.pc_members[i].size != cs->fields[i].size)
                fail_msg("%s.%s: SPIR-V offset %u size %u, C offset %u size %u", cs->name,
                         cs->fields[i].name, info.pc_members[i].offset, info.pc_members[i].size,
                         cs->fields[i].offset, cs->fields[i].size);
        }
        assert_true(info.pc_size <= cs->size);
        checked++;
    }
    assert_true(checked >= 2);
}

static void vk_spirv_reflection_rejects_garbage(void **state)
{
    (void)state;
    vkpt_spv_info info;
    uint32_t junk[8] = {0x07230203u, 0x10000, 0, 100, 0, 0xffff0005u, 1, 2};
    assert_int_equal(vkpt_spv_reflect(junk, 8, &info), VKPT_EFORMAT);
    uint32_t notspv[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(vkpt_spv_reflect(notspv, 8, &info), VKPT_EFORMAT);
    /* every truncation of a real module fails cleanly or succeeds, never crashes */
    const vkpt_spv_blob *b = vkpt_variants[VKPT_V_add_f32].spv;
    for (size_t n = 0; n < b->n; n += 3) vkpt_spv_reflect(b->words, n, &info);
}

static void vk_variant_table_reflects_workgroup_spec_ids(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    const vkpt_pipeline *p1, *p2, *p3;
    vkpt_spec s = {.v = {64}, .n = 1};
    assert_int_equal(vkpt_pipeline_get(dev, VKPT_V_add_f32, &s, &p1), 0);
    assert_int_equal(p1->wg[0], 64);
    assert_int_equal(p1->n_bindings, 3);
    assert_int_equal(p1->pc_size, sizeof(vkpt_pc_binary));
    assert_int_equal(vkpt_pipeline_get(dev, VKPT_V_add_f32, &s, &p2), 0);
    assert_ptr_equal(p1, p2); /* cached */
    s.v[0] = 128;
    assert_int_equal(vkpt_pipeline_get(dev, VKPT_V_add_f32, &s, &p3), 0);
    assert_ptr_not_equal(p1, p3);
    s.v[0] = 100000; /* over the device limit: an error, not a crash */
    assert_int_equal(vkpt_pipeline_get(dev, VKPT_V_add_f32, &s, &p3), VKPT_EUNSUPPORTED);
}

/* SPIR-V 1.6 builds express a specialized workgroup size as LocalSizeId:
 * reflection must still find the spec id, and the pipeline must run. */
static void vk_spirv16_local_size_id_is_reflected(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    const vkpt_variant *var = &vkpt_variants[VKPT_V_add_f32_spv16];
    if (!var->spv || !dev->caps.maintenance4) skip();
    vkpt_spv_info info;
    assert_int_equal(vkpt_spv_reflect(var->spv->words, var->spv->n, &info), 0);
    assert_int_equal(info.local_size_spec_id[0], 0);
    const vkpt_pipeline *p;
    vkpt_spec s = {.v = {96}, .n = 1};
    assert_int_equal(vkpt_pipeline_get(dev, VKPT_V_add_f32_spv16, &s, &p), 0);
    assert_int_equal(p->wg[0], 96);
}

static void vk_out_of_device_memory_is_an_error(void **state)
{
    vkpt_device *dev = vkpt_test_dev(state);
    vkpt_buf b;
    vkpt_device_inject_fault(dev, VKPT_FAULT_ALLOC, 1);
    assert_int_equal(vkpt_buf_alloc(dev, 1024, VKPT_MK_DEVICE, VKPT_MEM_WEIGHTS, &b), VKPT_EDEVMEM);
    assert_non_null(strstr(vkpt_errmsg(VKPT_EDEVMEM), "out of device memory"));
    /* the next one works again */
    assert_int_equal(vkpt_buf_alloc(dev, 1024, VKPT_MK_DEVICE, VKPT_MEM_WEIGHTS, &b), 0);
    vkpt_buf_free(dev, &b);
    /* more than the device can give: refused with a message */
    int err =
        vkpt_buf_alloc(dev, dev->caps.device_local_bytes * 4, VKPT_MK_DEVICE, VKPT_MEM_WEIGHTS, &b);
    assert_true(err == VKPT_EDEVMEM || err == VKPT_ETOOBIG);
    assert_true(strlen(vkpt_errmsg(err)) > 20);
}

static void vk_membench_measures_and_verifies(void **state)
{
    vkpt_membench_result r;
    assert_int_equal(vkpt_bench_memory(vkpt_test_dev(state), 8u << 20, 1, &r), 0);
    assert_true(r.copy_verified);
    assert_true(r.read_gbps > 0.01 && r.copy_gbps > 0.01);
    assert_int_equal(r.bytes, 8u << 20);
}

static void vk_pipeline_cache_is_saved_and_reloaded(void **state)
{
    vkpt_test_gpu *g = *state;
    char dir[] = "/tmp/vkpt-pcache-XXXXXX";
    assert_non_null(mkdtemp(dir));
    setenv("VKPT_CACHE_DIR", dir, 1);
    int idx = vkpt_instance_find_device(g->inst, getenv("VKPT_TEST_DEVICE"));
    vkpt_device *d;
    assert_int_equal(vkpt_device_create(g->inst, idx, NULL, &d), 0);
    const vkpt_pipeline *p;
    vkpt_spec s = {.v = {32}, .n = 1};
    assert_int_equal(vkpt_pipeline_get(d, VKPT_V_add_f32, &s, &p), 0);
    char path[1100];
    snprintf(path, sizeof path, "%s", d->pcache_path);
    vkpt_device_destroy(d);
    assert_int_equal(access(path, R_OK), 0);
    /* a corrupt cache file is ignored, not fatal */
    FILE *f = fopen(path, "r+b");
    fseek(f, 60, SEEK_SET);
    fwrite("garbage garbage garbage", 1, 23, f);
    fclose(f);
    assert_int_equal(vkpt_device_create(g->inst, idx, NULL, &d), 0);
    assert_int_equal(vkpt_pipeline_get(d, VKPT_V_add_f32, &s, &p), 0);
    vkpt_device_destroy(d);
    unlink(path);
    rmdir(dir);
    unsetenv("VKPT_CACHE_DIR");
}

static void vk_device_lost_fails_fast_and_stays_failed(void **state)
{
    vkpt_test_gpu *g = *state;
    int idx = vkpt_instance_find_device(g->inst, getenv("VKPT_TEST_DEVICE"));
    vkpt_device_opts o = {.no_pipeline_cache = true};
    vkpt_device *d;
    assert_int_equal(vkpt_device_create(g->inst, idx, &o, &d), 0);
    vkpt_cmd c;
    assert_int_equal(vkpt_cmd_init(d, 0, &c), 0);
    vkpt_device_inject_fault(d, VKPT_FAULT_SUBMIT, 1);
    assert_int_equal(vkpt_cmd_begin(&c), 0);
    assert_int_equal(vkpt_cmd_submit(&c), VKPT_EDEVLOST);
    assert_true(vkpt_device_lost(d));
    assert_int_equal(vkpt_cmd_begin(&c), VKPT_EDEVLOST);
    vkpt_buf b;
    assert_int_equal(vkpt_buf_alloc(d, 16, VKPT_MK_DEVICE, VKPT_MEM_OTHER, &b), VKPT_EDEVLOST);
    vkpt_cmd_free(&c);
    vkpt_device_destroy(d);
}

static void vk_find_device_by_index_name_and_uuid(void **state)
{
    vkpt_test_gpu *g = *state;
    const vkpt_device_caps *c = vkpt_instance_caps(g->inst, 0);
    assert_int_equal(vkpt_instance_find_device(g->inst, "0"), 0);
    char part[8];
    snprintf(part, sizeof part, "%.4s", c->name);
    assert_true(vkpt_instance_find_device(g->inst, part) >= 0);
    char uuid[40];
    for (int i = 0; i < 16; i++) snprintf(uuid + 2 * i, 3, "%02X", c->uuid[i]);
    assert_int_equal(vkpt_instance_find_device(g->inst, uuid), 0);
    assert_int_equal(vkpt_instance_find_device(g->inst, "99"), VKPT_ENODEV);
    assert_int_equal(vkpt_instance_find_device(g->inst, "no such gpu anywhere"), VKPT_ENODEV);
    assert_non_null(strstr(vkpt_errmsg(VKPT_ENODEV), "vkpt devices"));
}

/* The harness itself: a misuse must be seen, or "validation silent" means
 * nothing. vkCreateBuffer with size 0 violates VUID-VkBufferCreateInfo-size-00912. */
static void drop_log(int level, const char *msg, void *ud)
{
    (void)level, (void)msg, (void)ud;
}

static void vk_validation_layer_reports_misuse(void **state)
{
    vkpt_test_gpu *g = *state;
    if (!vkpt_instance_validating(g->inst)) skip();
    int before = vkpt_instance_validation_errors(g->inst);
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                              .size = 0,
                              .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT};
    VkBuffer b = VK_NULL_HANDLE;
    vkpt_log_set_sink(drop_log, NULL); /* the expected message is noise here */
    VkResult r = g->dev->vk.vkCreateBuffer(g->dev->dev, &bci, NULL, &b);
    vkpt_log_set_sink(NULL, NULL);
    if (r == VK_SUCCESS && b) g->dev->vk.vkDestroyBuffer(g->dev->dev, b, NULL);
    int after = vkpt_instance_validation_errors(g->inst);
    assert_true(after > before);
    g->validation_seen = after; /* expected: do not fail this test for it */
}

#define T(fn) cmocka_unit_test_teardown(fn, vkpt_test_check_validation)
int main(void)
{
    const struct CMUnitTest tests[] = {
        T(vk_validation_layer_reports_misuse),
        T(vk_caps_describe_the_device),
        T(vk_buffers_are_aligned_disjoint_and_accounted),
        T(vk_upload_download_roundtrip_through_staging),
        T(vk_add_kernel_matches_reference_at_odd_sizes),
        T(vk_push_constant_structs_match_the_spirv),
        T(vk_spirv_reflection_rejects_garbage),
        T(vk_variant_table_reflects_workgroup_spec_ids),
        T(vk_spirv16_local_size_id_is_reflected),
        T(vk_out_of_device_memory_is_an_error),
        T(vk_membench_measures_and_verifies),
        T(vk_pipeline_cache_is_saved_and_reloaded),
        T(vk_device_lost_fails_fast_and_stays_failed),
        T(vk_find_device_by_index_name_and_uuid),
    };
    return cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown);
}
