/* A logical device: the features vkpt uses enabled, every compute queue of
 * the best compute family opened (each with a timeline semaphore), a volk
 * device table, then memory and pipelines (vk_memory.c, vk_pipeline.c).
 *
 * VkResult is converted to vkpt errors here (vkpt__vk_err) and nowhere else;
 * VK_ERROR_DEVICE_LOST marks the device lost, after which every call on it
 * fails fast with VKPT_EDEVLOST. */
#define _GNU_SOURCE
#include "vk_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *vkpt__vk_result_name(VkResult r)
{
    switch (r) {
#define R(x) \
    case x: return #x;
        R(VK_SUCCESS)
        R(VK_NOT_READY)
        R(VK_TIMEOUT)
        R(VK_INCOMPLETE)
        R(VK_ERROR_OUT_OF_HOST_MEMORY)
        R(VK_ERROR_OUT_OF_DEVICE_MEMORY)
        R(VK_ERROR_INITIALIZATION_FAILED)
        R(VK_ERROR_DEVICE_LOST)
        R(VK_ERROR_MEMORY_MAP_FAILED)
        R(VK_ERROR_LAYER_NOT_PRESENT)
        R(VK_ERROR_EXTENSION_NOT_PRESENT)
        R(VK_ERROR_FEATURE_NOT_PRESENT)
        R(VK_ERROR_INCOMPATIBLE_DRIVER)
        R(VK_ERROR_TOO_MANY_OBJECTS)
        R(VK_ERROR_FORMAT_NOT_SUPPORTED)
        R(VK_ERROR_FRAGMENTED_POOL)
        R(VK_ERROR_OUT_OF_POOL_MEMORY)
        R(VK_ERROR_INVALID_SHADER_NV)
        R(VK_ERROR_UNKNOWN)
#undef R
    default: return "VkResult(?)";
    }
}

int vkpt__vk_err(vkpt_device *dev, VkResult r, const char *what)
{
    switch (r) {
    case VK_SUCCESS: return 0;
    case VK_TIMEOUT: return vkpt_fail(VKPT_ETIMEOUT, "%s: timed out", what);
    case VK_ERROR_OUT_OF_HOST_MEMORY: return vkpt_fail(VKPT_ENOMEM, "%s: out of host memory", what);
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
        return vkpt_fail(VKPT_EDEVMEM, "%s: out of device memory", what);
    case VK_ERROR_DEVICE_LOST:
        if (dev && !atomic_exchange(&dev->lost, true))
            VKPT_LOGE("device %s lost during %s", dev->caps.name, what);
        return vkpt_fail(VKPT_EDEVLOST, "%s: GPU device lost", what);
    default: return vkpt_fail(VKPT_EVULKAN, "%s: %s", what, vkpt__vk_result_name(r));
    }
}

bool vkpt__fault_due(vkpt_device *dev, int kind)
{
    int at = atomic_load(&dev->fault_at[kind]);
    if (at <= 0) return false;
    int n = atomic_fetch_add(&dev->fault_count[kind], 1) + 1;
    if (n != at) return false;
    atomic_store(&dev->fault_at[kind], 0);
    return true;
}

void vkpt_device_inject_fault(vkpt_device *dev, int kind, int nth)
{
    if (!dev || kind < 0 || kind >= VKPT_FAULT_COUNT) return;
    atomic_store(&dev->fault_count[kind], 0);
    atomic_store(&dev->fault_at[kind], nth);
}

static bool dev_has_ext(VkPhysicalDevice pd, const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS || !n) return false;
    VkExtensionProperties *e = vkpt_calloc(n, sizeof *e);
    bool found = false;
    if (e && vkEnumerateDeviceExtensionProperties(pd, NULL, &n, e) == VK_SUCCESS)
        for (uint32_t i = 0; i < n; i++)
            if (!strcmp(e[i].extensionName, name)) found = true;
    vkpt_free(e);
    return found;
}

int vkpt_device_create(vkpt_instance *inst, int index, const vkpt_device_opts *opts,
                       vkpt_device **out)
{
    if (!inst || !out || index < 0 || index >= inst->n_dev)
        return vkpt_fail(VKPT_EINVAL, "vkpt_device_create: bad instance or index %d", index);
    *out = NULL;
    const vkpt_device_caps *caps = &inst->caps[index];
    if (caps->api_version < VK_API_VERSION_1_2)
        return vkpt_fail(VKPT_EUNSUPPORTED, "%s supports Vulkan %u.%u; vkpt needs 1.2", caps->name,
                         VK_API_VERSION_MAJOR(caps->api_version),
                         VK_API_VERSION_MINOR(caps->api_version));
    if (!caps->timeline_semaphore || !caps->push_descriptor)
        return vkpt_fail(VKPT_EUNSUPPORTED, "%s lacks %s", caps->name,
                         !caps->timeline_semaphore ? "timeline semaphores"
                                                   : "VK_KHR_push_descriptor");

    vkpt_device *d = vkpt_calloc(1, sizeof *d);
    if (!d) return vkpt_fail(VKPT_ENOMEM, "device");
    d->inst = inst;
    d->pd = inst->pds[index];
    d->caps = *caps;
    pthread_mutex_init(&d->lock, NULL);
    pthread_mutex_init(&d->staging_lock, NULL);
    pthread_mutex_init(&d->prof_lock, NULL);
    const char *pe = getenv("VKPT_PROFILE");
    d->profile = (opts && opts->profile) || (pe && *pe && strcmp(pe, "0") != 0);
    const char *ce = getenv("VKPT_COOPMAT");
    d->coopmat_auto = (opts && opts->coopmat) || (ce && *ce && strcmp(ce, "0") != 0);
    int err = 0;

    /* the compute family with the most queues */
    int fam = -1;
    for (uint32_t i = 0; i < caps->n_queue_families; i++) {
        const vkpt_queue_family_info *q = &caps->queue_families[i];
        if (q->compute && (fam < 0 || q->count > caps->queue_families[fam].count)) fam = (int)i;
    }
    if (fam < 0) {
        err = vkpt_fail(VKPT_EUNSUPPORTED, "%s has no compute queue", caps->name);
        goto fail;
    }
    d->compute_family = (uint32_t)fam;
    uint32_t nq = caps->queue_families[fam].count;
    uint32_t want = opts && opts->max_compute_queues ? opts->max_compute_queues : 16;
    if (nq > want) nq = want;
    if (nq > 16) nq = 16;
    d->n_queues = nq;
    float prio[16];
    for (uint32_t i = 0; i < 16; i++) prio[i] = 1.0f;
    VkDeviceQueueCreateInfo qci[2] = {{
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = (uint32_t)fam,
        .queueCount = nq,
        .pQueuePriorities = prio,
    }};
    uint32_t n_qci = 1;
    const char *nx = getenv("VKPT_NO_TRANSFER_QUEUE");
    for (uint32_t i = 0; i < caps->n_queue_families && !(nx && *nx && strcmp(nx, "0")); i++) {
        const vkpt_queue_family_info *q = &caps->queue_families[i];
        if (q->transfer && !q->compute && !q->graphics && q->count) {
            d->has_xfer = true;
            d->xfer.family = i;
            qci[n_qci++] =
                (VkDeviceQueueCreateInfo){.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                          .queueFamilyIndex = i,
                                          .queueCount = 1,
                                          .pQueuePriorities = prio};
            break;
        }
    }

    /* features: enable what caps says exists and vkpt uses */
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
        .storageBuffer16BitAccess = caps->storage16};
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .pNext = &f11,
        .shaderFloat16 = caps->fp16,
        .shaderInt8 = caps->int8,
        .storageBuffer8BitAccess = caps->storage8,
        .timelineSemaphore = VK_TRUE,
        /* cooperative-matrix SPIR-V declares the Vulkan memory model */
        .vulkanMemoryModel = caps->vulkan_memory_model,
        /* once the model is on, shaders with device-scope barriers need this too */
        .vulkanMemoryModelDeviceScope = caps->vulkan_memory_model_device_scope,
        /* NV2 decode functions take buffer_reference parameters
         * (PhysicalStorageBufferAddresses); caps only has coopmat_nv2 where
         * the device supports this */
        .bufferDeviceAddress = caps->coopmat_nv2,
    };
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f12};
    f2.features.shaderInt16 = caps->int16;
    f2.features.shaderInt64 = caps->int64;
    void **tail = &f11.pNext;
    const char *exts[16];
    uint32_t n_ext = 0;
    exts[n_ext++] = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
    if (caps->memory_budget) exts[n_ext++] = VK_EXT_MEMORY_BUDGET_EXTENSION_NAME;
    if (dev_has_ext(d->pd, "VK_KHR_portability_subset"))
        exts[n_ext++] = "VK_KHR_portability_subset";

    bool v13 = caps->api_version >= VK_API_VERSION_1_3;
    VkPhysicalDeviceSubgroupSizeControlFeatures sgc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES,
        .subgroupSizeControl = VK_TRUE,
        .computeFullSubgroups = VK_TRUE};
    if (caps->subgroup_size_control) {
        if (!v13) exts[n_ext++] = VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
        *tail = &sgc;
        tail = &sgc.pNext;
    }
    VkPhysicalDeviceShaderIntegerDotProductFeatures dot = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES,
        .shaderIntegerDotProduct = VK_TRUE};
    if (caps->int_dot) {
        if (!v13) exts[n_ext++] = VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME;
        *tail = &dot;
        tail = &dot.pNext;
    }
    VkPhysicalDeviceMaintenance4Features m4 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_FEATURES, .maintenance4 = VK_TRUE};
    if (caps->maintenance4) {
        if (!v13) exts[n_ext++] = VK_KHR_MAINTENANCE_4_EXTENSION_NAME;
        *tail = &m4;
        tail = &m4.pNext;
    }
    VkPhysicalDeviceCooperativeMatrixFeaturesKHR cm = {.sType = VKPT_STYPE_COOPMAT_FEATURES_KHR,
                                                       .cooperativeMatrix = VK_TRUE};
    if (caps->coopmat_khr) {
        exts[n_ext++] = VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME;
        *tail = &cm;
        tail = &cm.pNext;
    }
    VkPhysicalDeviceCooperativeMatrix2FeaturesNV cm2 = {
        .sType = VKPT_STYPE_COOPMAT2_FEATURES_NV,
        .cooperativeMatrixWorkgroupScope = VK_TRUE,
        .cooperativeMatrixFlexibleDimensions = VK_TRUE,
        .cooperativeMatrixReductions = VK_FALSE,
        .cooperativeMatrixConversions = VK_FALSE,
        .cooperativeMatrixPerElementOperations = VK_TRUE,
        .cooperativeMatrixTensorAddressing = VK_TRUE,
        .cooperativeMatrixBlockLoads = VK_TRUE};
    if (caps->coopmat_nv2) {
        exts[n_ext++] = VK_NV_COOPERATIVE_MATRIX_2_EXTENSION_NAME;
        *tail = &cm2;
        tail = &cm2.pNext;
    }
    VkPhysicalDeviceShaderBfloat16FeaturesKHR bf = {.sType = VKPT_STYPE_BF16_FEATURES_KHR,
                                                    .shaderBFloat16Type = VK_TRUE};
    if (caps->bf16) {
        exts[n_ext++] = VK_KHR_SHADER_BFLOAT16_EXTENSION_NAME;
        *tail = &bf;
        tail = &bf.pNext;
    }
    (void)tail;

    VkDeviceCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = &f2,
        .queueCreateInfoCount = n_qci,
        .pQueueCreateInfos = qci,
        .enabledExtensionCount = n_ext,
        .ppEnabledExtensionNames = exts,
    };
    VkResult r = vkCreateDevice(d->pd, &dci, NULL, &d->dev);
    if (r != VK_SUCCESS) {
        err = vkpt__vk_err(NULL, r, "vkCreateDevice");
        goto fail;
    }
    volkLoadDeviceTable(&d->vk, d->dev);
    vkGetPhysicalDeviceMemoryProperties(d->pd, &d->memprops);

    for (uint32_t i = 0; i < nq + d->has_xfer; i++) {
        vkpt_queue *q = i < nq ? &d->queues[i] : &d->xfer;
        if (i < nq) {
            q->family = (uint32_t)fam;
            q->index = i;
        }
        pthread_mutex_init(&q->lock, NULL);
        d->vk.vkGetDeviceQueue(d->dev, q->family, q->index, &q->q);
        VkSemaphoreTypeCreateInfo st = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO,
                                        .semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE};
        VkSemaphoreCreateInfo sci = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO,
                                     .pNext = &st};
        r = d->vk.vkCreateSemaphore(d->dev, &sci, NULL, &q->timeline);
        if (r != VK_SUCCESS) {
            err = vkpt__vk_err(d, r, "vkCreateSemaphore");
            goto fail;
        }
    }

    if ((err = vkpt__mem_init(d))) goto fail;
    const char *nc = getenv("VKPT_NO_PIPELINE_CACHE");
    bool disk = !(opts && opts->no_pipeline_cache) && !(nc && *nc && strcmp(nc, "0"));
    if ((err = vkpt__pipelines_init(d, disk))) goto fail;
    for (int i = 0; i < 2; i++)
        if ((err = vkpt_cmd_init_on(d, d->has_xfer ? &d->xfer : &d->queues[0], &d->staging_cmd[i])))
            goto fail;

    VKPT_LOGD("opened %s: %u compute queue(s) in family %d%s", d->caps.name, nq, fam,
              d->has_xfer ? ", a transfer queue for uploads" : "");
    *out = d;
    return 0;
fail:
    vkpt_device_destroy(d);
    return err;
}

void vkpt_device_destroy(vkpt_device *d)
{
    if (!d) return;
    if (d->dev) d->vk.vkDeviceWaitIdle(d->dev);
    vkpt_cmd_free(&d->staging_cmd[0]);
    vkpt_cmd_free(&d->staging_cmd[1]);
    if (d->dev) vkpt__pipelines_free(d);
    if (d->dev) vkpt__mem_free(d);
    for (uint32_t i = 0; i < d->n_queues; i++) {
        if (d->queues[i].timeline) d->vk.vkDestroySemaphore(d->dev, d->queues[i].timeline, NULL);
        pthread_mutex_destroy(&d->queues[i].lock);
    }
    if (d->has_xfer) {
        if (d->xfer.timeline) d->vk.vkDestroySemaphore(d->dev, d->xfer.timeline, NULL);
        pthread_mutex_destroy(&d->xfer.lock);
    }
    if (d->dev) d->vk.vkDestroyDevice(d->dev, NULL);
    pthread_mutex_destroy(&d->lock);
    pthread_mutex_destroy(&d->staging_lock);
    pthread_mutex_destroy(&d->prof_lock);
    vkpt_free(d);
}

const vkpt_device_caps *vkpt_device_get_caps(const vkpt_device *dev)
{
    return dev ? &dev->caps : NULL;
}

bool vkpt_device_lost(const vkpt_device *dev)
{
    return dev && atomic_load(&dev->lost);
}
