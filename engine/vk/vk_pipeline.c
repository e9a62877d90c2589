/* Pipelines from the variant table: shader modules and layouts per variant
 * (bindings and push-constant size reflected from the SPIR-V, so no list is
 * kept in sync by hand), compute pipelines per (variant, specialization)
 * created on first use and kept for the device's life, and a VkPipelineCache
 * persisted on disk keyed by device UUID, driver version and vkpt version.
 *
 * Everything here runs under dev->lock; returned pipelines are immutable. */
#define _GNU_SOURCE
#include "vk_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

uint32_t vkpt_req_missing(const vkpt_device_caps *c, uint32_t req)
{
    uint32_t have = 0;
    if (c->subgroup_arith) have |= VKPT_REQ_SUBGROUP_ARITH;
    if (c->subgroup_shuffle) have |= VKPT_REQ_SUBGROUP_SHUFFLE;
    if (c->fp16) have |= VKPT_REQ_FP16;
    if (c->int8) have |= VKPT_REQ_INT8;
    if (c->int64) have |= VKPT_REQ_INT64;
    if (c->storage16) have |= VKPT_REQ_STORAGE16;
    if (c->storage8) have |= VKPT_REQ_STORAGE8;
    if (c->int_dot) have |= VKPT_REQ_INT_DOT;
    if (c->coopmat_khr) have |= VKPT_REQ_COOPMAT_KHR;
    if (c->coopmat_nv2) have |= VKPT_REQ_COOPMAT_NV2;
    if (c->bf16) have |= VKPT_REQ_BF16;
    return req & ~have;
}

bool vkpt_variant_usable(const vkpt_device *dev, int v)
{
    if (!dev || v < 0 || v >= VKPT_V_COUNT) return false;
    return vkpt_variants[v].spv && vkpt_req_missing(&dev->caps, vkpt_variants[v].req) == 0;
}

/* ---- on-disk pipeline cache ------------------------------------------------ */

#define PCACHE_MAGIC "VKPTPC01"
typedef struct pcache_header {
    char magic[8];
    uint8_t uuid[16];
    uint32_t driver_version;
    uint32_t vendor_id, device_id;
    char vkpt_version[16];
    uint64_t size;
} pcache_header;

static void cache_dir(char *out, size_t cap)
{
    const char *d = getenv("VKPT_CACHE_DIR");
    if (d && *d) {
        snprintf(out, cap, "%s", d);
        return;
    }
    const char *x = getenv("XDG_CACHE_HOME");
    if (x && *x) {
        snprintf(out, cap, "%s/vkpt", x);
        return;
    }
    const char *h = getenv("HOME");
    snprintf(out, cap, "%s/.cache/vkpt", h && *h ? h : "/tmp");
}

static void mkdir_p(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    mkdir(tmp, 0755);
}

static void *load_cache_file(vkpt_device *dev, size_t *size)
{
    *size = 0;
    FILE *f = fopen(dev->pcache_path, "rb");
    if (!f) return NULL;
    pcache_header h;
    void *data = NULL;
    if (fread(&h, sizeof h, 1, f) == 1 && !memcmp(h.magic, PCACHE_MAGIC, 8) &&
        !memcmp(h.uuid, dev->caps.uuid, 16) && h.driver_version == dev->caps.driver_version &&
        !strcmp(h.vkpt_version, VKPT_VERSION_STRING) && h.size > 0 && h.size < (1ull << 30)) {
        data = vkpt_malloc(h.size);
        if (data && fread(data, 1, h.size, f) == h.size) {
            *size = h.size;
        } else {
            vkpt_free(data);
            data = NULL;
        }
    }
    fclose(f);
    return data;
}

static void save_cache_file(vkpt_device *dev)
{
    if (!dev->pcache || !dev->pcache_dirty || !dev->pcache_path[0]) return;
    size_t size = 0;
    if (dev->vk.vkGetPipelineCacheData(dev->dev, dev->pcache, &size, NULL) != VK_SUCCESS || !size)
        return;
    void *data = vkpt_malloc(size);
    if (!data) return;
    if (dev->vk.vkGetPipelineCacheData(dev->dev, dev->pcache, &size, data) == VK_SUCCESS) {
        char dir[1024], tmp[1100];
        cache_dir(dir, sizeof dir);
        mkdir_p(dir);
        snprintf(tmp, sizeof tmp, "%s.%d.tmp", dev->pcache_path, (int)getpid());
        FILE *f = fopen(tmp, "wb");
        if (f) {
            pcache_header h = {.driver_version = dev->caps.driver_version,
                               .vendor_id = dev->caps.vendor_id,
                               .device_id = dev->caps.device_id,
                               .size = size};
            memcpy(h.magic, PCACHE_MAGIC, 8);
            memcpy(h.uuid, dev->caps.uuid, 16);
            snprintf(h.vkpt_version, sizeof h.vkpt_version, "%s", VKPT_VERSION_STRING);
            bool ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(data, 1, size, f) == size;
            ok = (fclose(f) == 0) && ok;
            /* rename is atomic: a concurrent reader sees the old file or the new */
            if (!ok || rename(tmp, dev->pcache_path) != 0) {
                VKPT_LOGD("could not save pipeline cache %s: %s", dev->pcache_path,
                          strerror(errno));
                unlink(tmp);
            }
        }
    }
    vkpt_free(data);
}

int vkpt__pipelines_init(vkpt_device *dev, bool use_disk_cache)
{
    size_t size = 0;
    void *data = NULL;
    if (use_disk_cache) {
        char dir[1024];
        cache_dir(dir, sizeof dir);
        char uuid[33];
        for (int i = 0; i < 16; i++) snprintf(uuid + 2 * i, 3, "%02x", dev->caps.uuid[i]);
        snprintf(dev->pcache_path, sizeof dev->pcache_path, "%.900s/pipelines-%s-%08x.bin", dir,
                 uuid, dev->caps.driver_version);
        data = load_cache_file(dev, &size);
        if (data) VKPT_LOGD("pipeline cache: loaded %zu bytes from %s", size, dev->pcache_path);
    }
    VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
                                    .initialDataSize = size,
                                    .pInitialData = data};
    VkResult r = dev->vk.vkCreatePipelineCache(dev->dev, &ci, NULL, &dev->pcache);
    if (r != VK_SUCCESS && data) {
        /* a stale or corrupt file: start empty */
        ci.initialDataSize = 0;
        ci.pInitialData = NULL;
        r = dev->vk.vkCreatePipelineCache(dev->dev, &ci, NULL, &dev->pcache);
    }
    vkpt_free(data);
    if (r != VK_SUCCESS) return vkpt__vk_err(dev, r, "vkCreatePipelineCache");
    return 0;
}

void vkpt__pipelines_free(vkpt_device *dev)
{
    save_cache_file(dev);
    for (uint32_t i = 0; i < dev->cap_pipes; i++) {
        vkpt_pipeline *p = dev->pipes ? dev->pipes[i] : NULL;
        if (!p) continue;
        dev->vk.vkDestroyPipeline(dev->dev, p->pipe, NULL);
        vkpt_free(p);
    }
    vkpt_free(dev->pipes);
    dev->pipes = NULL;
    for (int v = 0; v < VKPT_V_COUNT; v++) {
        if (dev->layouts[v]) dev->vk.vkDestroyPipelineLayout(dev->dev, dev->layouts[v], NULL);
        if (dev->dsls[v]) dev->vk.vkDestroyDescriptorSetLayout(dev->dev, dev->dsls[v], NULL);
        if (dev->modules[v]) dev->vk.vkDestroyShaderModule(dev->dev, dev->modules[v], NULL);
    }
    if (dev->pcache) dev->vk.vkDestroyPipelineCache(dev->dev, dev->pcache, NULL);
}

/* ---- per-variant objects --------------------------------------------------- */

static int variant_prepare(vkpt_device *dev, int v)
{
    if (dev->layouts[v]) return 0;
    const vkpt_variant *var = &vkpt_variants[v];
    int err = vkpt_spv_reflect(var->spv->words, var->spv->n, &dev->refl[v]);
    if (err) return vkpt_fail(err, "shader %s: %s", var->name, vkpt_errmsg(err));
    const vkpt_spv_info *ri = &dev->refl[v];
    if (ri->pc_size > dev->caps.max_push_constants)
        return vkpt_fail(VKPT_EUNSUPPORTED, "shader %s needs %u bytes of push constants; %s has %u",
                         var->name, ri->pc_size, dev->caps.name, dev->caps.max_push_constants);

    VkShaderModuleCreateInfo smci = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                     .codeSize = var->spv->n * 4,
                                     .pCode = var->spv->words};
    VkResult r = dev->vk.vkCreateShaderModule(dev->dev, &smci, NULL, &dev->modules[v]);
    if (r != VK_SUCCESS) return vkpt__vk_err(dev, r, var->name);

    VkDescriptorSetLayoutBinding b[32];
    uint32_t nb = 0;
    for (uint32_t i = 0; i < ri->n_bindings; i++) {
        if (!(ri->binding_mask & (1u << i))) continue;
        b[nb++] =
            (VkDescriptorSetLayoutBinding){.binding = i,
                                           .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                           .descriptorCount = 1,
                                           .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    }
    VkDescriptorSetLayoutCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR,
        .bindingCount = nb,
        .pBindings = b,
    };
    r = dev->vk.vkCreateDescriptorSetLayout(dev->dev, &dci, NULL, &dev->dsls[v]);
    if (r != VK_SUCCESS) return vkpt__vk_err(dev, r, "vkCreateDescriptorSetLayout");
    VkPushConstantRange pcr = {
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = ri->pc_size};
    VkPipelineLayoutCreateInfo lci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                      .setLayoutCount = 1,
                                      .pSetLayouts = &dev->dsls[v],
                                      .pushConstantRangeCount = ri->pc_size ? 1 : 0,
                                      .pPushConstantRanges = &pcr};
    r = dev->vk.vkCreatePipelineLayout(dev->dev, &lci, NULL, &dev->layouts[v]);
    if (r != VK_SUCCESS) return vkpt__vk_err(dev, r, "vkCreatePipelineLayout");
    return 0;
}

static uint64_t spec_hash(int v, const vkpt_spec *s)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)v;
    const uint8_t *p = (const uint8_t *)s;
    for (size_t i = 0; i < sizeof *s; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int table_insert(vkpt_device *dev, vkpt_pipeline *p)
{
    if ((dev->n_pipes + 1) * 2 > dev->cap_pipes) {
        uint32_t nc = dev->cap_pipes ? dev->cap_pipes * 2 : 64;
        vkpt_pipeline **nt = vkpt_calloc(nc, sizeof *nt);
        if (!nt) return vkpt_fail(VKPT_ENOMEM, "pipeline table");
        for (uint32_t i = 0; i < dev->cap_pipes; i++) {
            vkpt_pipeline *q = dev->pipes[i];
            if (!q) continue;
            uint32_t j = (uint32_t)spec_hash(q->variant, &q->spec) & (nc - 1);
            while (nt[j]) j = (j + 1) & (nc - 1);
            nt[j] = q;
        }
        vkpt_free(dev->pipes);
        dev->pipes = nt;
        dev->cap_pipes = nc;
    }
    uint32_t j = (uint32_t)spec_hash(p->variant, &p->spec) & (dev->cap_pipes - 1);
    while (dev->pipes[j]) j = (j + 1) & (dev->cap_pipes - 1);
    dev->pipes[j] = p;
    dev->n_pipes++;
    return 0;
}

int vkpt_pipeline_get(vkpt_device *dev, int v, const vkpt_spec *spec_in, const vkpt_pipeline **out)
{
    if (!dev || !out || v < 0 || v >= VKPT_V_COUNT)
        return vkpt_fail(VKPT_EINVAL, "vkpt_pipeline_get: bad variant %d", v);
    *out = NULL;
    const vkpt_variant *var = &vkpt_variants[v];
    if (!var->spv)
        return vkpt_fail(VKPT_EUNSUPPORTED,
                         "shader variant %s was not compiled into this build "
                         "(its compiler tier %s was unavailable)",
                         var->name, var->tier);
    uint32_t miss = vkpt_req_missing(&dev->caps, var->req);
    if (miss)
        return vkpt_fail(VKPT_EUNSUPPORTED, "shader variant %s needs features %s lacks (mask 0x%x)",
                         var->name, dev->caps.name, miss);
    vkpt_spec spec;
    memset(&spec, 0, sizeof spec);
    if (spec_in) spec = *spec_in;
    if (spec.n > VKPT_SPEC_MAX)
        return vkpt_fail(VKPT_EINVAL, "%s: %u spec constants", var->name, spec.n);
    for (uint32_t i = spec.n; i < VKPT_SPEC_MAX; i++) spec.v[i] = 0; /* canonical key */
    if (!dev->caps.subgroup_size_control) spec.subgroup_size = 0;

    pthread_mutex_lock(&dev->lock);
    int err = 0;
    if (dev->cap_pipes) {
        uint32_t j = (uint32_t)spec_hash(v, &spec) & (dev->cap_pipes - 1);
        for (vkpt_pipeline *q; (q = dev->pipes[j]); j = (j + 1) & (dev->cap_pipes - 1))
            if (q->variant == v && !memcmp(&q->spec, &spec, sizeof spec)) {
                *out = q;
                goto done;
            }
    }
    if ((err = variant_prepare(dev, v))) goto done;
    const vkpt_spv_info *ri = &dev->refl[v];

    VkSpecializationMapEntry me[VKPT_SPEC_MAX];
    for (uint32_t i = 0; i < spec.n; i++)
        me[i] = (VkSpecializationMapEntry){.constantID = i, .offset = i * 4, .size = 4};
    VkSpecializationInfo si = {
        .mapEntryCount = spec.n, .pMapEntries = me, .dataSize = spec.n * 4, .pData = spec.v};
    uint32_t wg[3];
    for (int i = 0; i < 3; i++) {
        int32_t sid = ri->local_size_spec_id[i];
        wg[i] = (sid >= 0 && (uint32_t)sid < spec.n) ? spec.v[sid] : ri->local_size[i];
        if (wg[i] == 0) wg[i] = 1;
        if (wg[i] > dev->caps.max_wg_size[i]) {
            err = vkpt_fail(VKPT_EUNSUPPORTED, "%s: workgroup size %u exceeds %s's limit %u",
                            var->name, wg[i], dev->caps.name, dev->caps.max_wg_size[i]);
            goto done;
        }
    }
    if (wg[0] * wg[1] * wg[2] > dev->caps.max_wg_invocations) {
        err = vkpt_fail(VKPT_EUNSUPPORTED, "%s: %u invocations per workgroup exceed %s's limit %u",
                        var->name, wg[0] * wg[1] * wg[2], dev->caps.name,
                        dev->caps.max_wg_invocations);
        goto done;
    }
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfo rss = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO,
        .requiredSubgroupSize = spec.subgroup_size};
    VkPipelineShaderStageCreateFlags sflags = 0;
    if (spec.subgroup_size) {
        if (spec.subgroup_size < dev->caps.subgroup_min ||
            spec.subgroup_size > dev->caps.subgroup_max) {
            err = vkpt_fail(VKPT_EUNSUPPORTED, "%s: subgroup size %u outside %s's %u..%u",
                            var->name, spec.subgroup_size, dev->caps.name, dev->caps.subgroup_min,
                            dev->caps.subgroup_max);
            goto done;
        }
        if (wg[0] % spec.subgroup_size == 0)
            sflags |= VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT;
    }
    VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .pNext = spec.subgroup_size ? &rss : NULL,
                  .flags = sflags,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = dev->modules[v],
                  .pName = "main",
                  .pSpecializationInfo = spec.n ? &si : NULL},
        .layout = dev->layouts[v],
    };
    vkpt_pipeline *p = vkpt_calloc(1, sizeof *p);
    if (!p) {
        err = vkpt_fail(VKPT_ENOMEM, "pipeline");
        goto done;
    }
    uint64_t t0 = vkpt_now_ns();
    VkResult r = dev->vk.vkCreateComputePipelines(dev->dev, dev->pcache, 1, &ci, NULL, &p->pipe);
    if (r != VK_SUCCESS) {
        vkpt_free(p);
        err = vkpt__vk_err(dev, r, var->name);
        goto done;
    }
    VKPT_LOGD("pipeline %s created in %.2f ms", var->name, (vkpt_now_ns() - t0) / 1e6);
    dev->pcache_dirty = true;
    p->variant = v;
    p->spec = spec;
    p->layout = dev->layouts[v];
    p->dsl = dev->dsls[v];
    p->n_bindings = ri->n_bindings;
    p->pc_size = ri->pc_size;
    for (int i = 0; i < 3; i++) {
        p->wg[i] = wg[i];
        p->elems[i] = spec.elems[i] ? spec.elems[i] : wg[i];
    }
    if ((err = table_insert(dev, p))) {
        dev->vk.vkDestroyPipeline(dev->dev, p->pipe, NULL);
        vkpt_free(p);
        goto done;
    }
    *out = p;
done:
    pthread_mutex_unlock(&dev->lock);
    return err;
}
