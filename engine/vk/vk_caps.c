/* Capability probe: one pass over a physical device's properties, features,
 * extensions, memory heaps and queue families into vkpt_device_caps. Kernels
 * pick variants from the result; nothing else queries Vulkan features.
 *
 * Also the vendor/driver quirk table (one place for driver-specific facts). */
#define _GNU_SOURCE
#include "vk_int.h"

#include <stdio.h>
#include <string.h>

static bool has_ext(const VkExtensionProperties *e, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(e[i].extensionName, name)) return true;
    return false;
}

static void probe_coopmat_shapes(VkInstance inst, VkPhysicalDevice pd, vkpt_device_caps *c)
{
    PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR fn =
        (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR)vkGetInstanceProcAddr(
            inst, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR");
    if (!fn) return;
    uint32_t n = 0;
    if (fn(pd, &n, NULL) != VK_SUCCESS || n == 0) return;
    VkCooperativeMatrixPropertiesKHR *p = vkpt_calloc(n, sizeof *p);
    if (!p) return;
    for (uint32_t i = 0; i < n; i++) p[i].sType = VKPT_STYPE_COOPMAT_PROPERTIES_KHR;
    if (fn(pd, &n, p) == VK_SUCCESS) {
        for (uint32_t i = 0; i < n && c->n_coopmat_shapes < VKPT_MAX_COOPMAT_SHAPES; i++) {
            vkpt_coopmat_shape *s = &c->coopmat_shapes[c->n_coopmat_shapes++];
            s->m = p[i].MSize;
            s->n = p[i].NSize;
            s->k = p[i].KSize;
            s->a = (int32_t)p[i].AType;
            s->b = (int32_t)p[i].BType;
            s->c = (int32_t)p[i].CType;
            s->result = (int32_t)p[i].ResultType;
            s->scope = (uint32_t)p[i].scope;
        }
    }
    vkpt_free(p);
}

/* NV2's workgroup-scope configurations: granularities of M, N, K per
 * component types and workgroup size. */
static void probe_coopmat_flex(VkInstance inst, VkPhysicalDevice pd, vkpt_device_caps *c)
{
    PFN_vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV fn =
        (PFN_vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV)
            vkGetInstanceProcAddr(
                inst, "vkGetPhysicalDeviceCooperativeMatrixFlexibleDimensionsPropertiesNV");
    if (!fn) return;
    uint32_t n = 0;
    if (fn(pd, &n, NULL) != VK_SUCCESS || n == 0) return;
    VkCooperativeMatrixFlexibleDimensionsPropertiesNV *p = vkpt_calloc(n, sizeof *p);
    if (!p) return;
    for (uint32_t i = 0; i < n; i++) p[i].sType = VKPT_STYPE_COOPMAT_FLEX_PROPERTIES_NV;
    if (fn(pd, &n, p) == VK_SUCCESS) {
        for (uint32_t i = 0; i < n && c->n_coopmat_flex < VKPT_MAX_COOPMAT_FLEX; i++) {
            vkpt_coopmat_flex *f = &c->coopmat_flex[c->n_coopmat_flex++];
            f->m_gran = p[i].MGranularity;
            f->n_gran = p[i].NGranularity;
            f->k_gran = p[i].KGranularity;
            f->a = (int32_t)p[i].AType;
            f->b = (int32_t)p[i].BType;
            f->c = (int32_t)p[i].CType;
            f->result = (int32_t)p[i].ResultType;
            f->scope = (uint32_t)p[i].scope;
            f->wg_invocations = p[i].workgroupInvocations;
        }
    }
    vkpt_free(p);
}

void vkpt__probe_caps(VkInstance inst, VkPhysicalDevice pd, vkpt_device_caps *c)
{
    memset(c, 0, sizeof *c);

    uint32_t n_ext = 0;
    VkExtensionProperties *ext = NULL;
    if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, NULL) == VK_SUCCESS && n_ext) {
        ext = vkpt_calloc(n_ext, sizeof *ext);
        if (!ext || vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, ext) != VK_SUCCESS)
            n_ext = 0;
    }

    VkPhysicalDeviceProperties base;
    vkGetPhysicalDeviceProperties(pd, &base);
    bool v13 = base.apiVersion >= VK_API_VERSION_1_3;

    /* properties chain */
    VkPhysicalDeviceDriverProperties drv = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceSubgroupProperties sg = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, .pNext = &drv};
    VkPhysicalDeviceSubgroupSizeControlProperties sgc = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES, .pNext = &sg};
    VkPhysicalDeviceIDProperties idp = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES,
                                        .pNext = &sgc};
    VkPhysicalDeviceShaderIntegerDotProductProperties dotp = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES,
        .pNext = &idp};
    bool has_sgc = v13 || has_ext(ext, n_ext, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    bool has_dot = v13 || has_ext(ext, n_ext, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME);
    VkPhysicalDeviceCooperativeMatrix2PropertiesNV cm2p = {.sType =
                                                               VKPT_STYPE_COOPMAT2_PROPERTIES_NV};
    bool has_cm2 = has_ext(ext, n_ext, VK_NV_COOPERATIVE_MATRIX_2_EXTENSION_NAME);
    VkPhysicalDeviceProperties2 props = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    void *chain = &drv;
    sg.pNext = &drv;
    chain = &sg;
    if (has_sgc) {
        sgc.pNext = chain;
        chain = &sgc;
    }
    idp.pNext = chain;
    chain = &idp;
    if (has_dot) {
        dotp.pNext = chain;
        chain = &dotp;
    }
    if (has_cm2) {
        cm2p.pNext = chain;
        chain = &cm2p;
    }
    props.pNext = chain;
    vkGetPhysicalDeviceProperties2(pd, &props);

    /* features chain */
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = &f11};
    VkPhysicalDeviceMaintenance4Features m4f = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_FEATURES};
    VkPhysicalDeviceShaderIntegerDotProductFeatures dotf = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
    VkPhysicalDeviceSubgroupSizeControlFeatures sgcf = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES};
    VkPhysicalDeviceCooperativeMatrixFeaturesKHR cmf = {.sType = VKPT_STYPE_COOPMAT_FEATURES_KHR};
    VkPhysicalDeviceCooperativeMatrix2FeaturesNV cm2f = {.sType = VKPT_STYPE_COOPMAT2_FEATURES_NV};
    VkPhysicalDeviceShaderBfloat16FeaturesKHR bf = {.sType = VKPT_STYPE_BF16_FEATURES_KHR};
    bool has_cm = has_ext(ext, n_ext, VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME);
    bool has_bf = has_ext(ext, n_ext, VK_KHR_SHADER_BFLOAT16_EXTENSION_NAME);
    VkPhysicalDeviceFeatures2 feats = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                       .pNext = &f12};
    chain = &f12;
    if (has_dot) {
        dotf.pNext = chain;
        chain = &dotf;
    }
    bool has_m4 = v13 || has_ext(ext, n_ext, VK_KHR_MAINTENANCE_4_EXTENSION_NAME);
    if (has_m4) {
        m4f.pNext = chain;
        chain = &m4f;
    }
    if (has_sgc) {
        sgcf.pNext = chain;
        chain = &sgcf;
    }
    if (has_cm) {
        cmf.pNext = chain;
        chain = &cmf;
    }
    if (has_cm2) {
        cm2f.pNext = chain;
        chain = &cm2f;
    }
    if (has_bf) {
        bf.pNext = chain;
        chain = &bf;
    }
    feats.pNext = chain;
    vkGetPhysicalDeviceFeatures2(pd, &feats);

    snprintf(c->name, sizeof c->name, "%s", base.deviceName);
    snprintf(c->driver_name, sizeof c->driver_name, "%s", drv.driverName);
    snprintf(c->driver_info, sizeof c->driver_info, "%s", drv.driverInfo);
    memcpy(c->uuid, idp.deviceUUID, 16);
    c->vendor_id = base.vendorID;
    c->device_id = base.deviceID;
    c->driver_id = (uint32_t)drv.driverID;
    c->api_version = base.apiVersion;
    c->driver_version = base.driverVersion;
    switch (base.deviceType) {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: c->type = VKPT_DEVICE_INTEGRATED; break;
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: c->type = VKPT_DEVICE_DISCRETE; break;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: c->type = VKPT_DEVICE_VIRTUAL; break;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: c->type = VKPT_DEVICE_CPU; break;
    default: c->type = VKPT_DEVICE_OTHER;
    }

    c->subgroup_size = sg.subgroupSize;
    c->subgroup_min = has_sgc ? sgc.minSubgroupSize : sg.subgroupSize;
    c->subgroup_max = has_sgc ? sgc.maxSubgroupSize : sg.subgroupSize;
    c->subgroup_size_control = has_sgc && sgcf.subgroupSizeControl && sgcf.computeFullSubgroups &&
                               (sgc.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT);
    bool sg_compute = sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT;
    c->subgroup_arith = sg_compute && (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    c->subgroup_shuffle = sg_compute && (sg.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
    c->subgroup_ballot = sg_compute && (sg.supportedOperations & VK_SUBGROUP_FEATURE_BALLOT_BIT);

    c->fp16 = f12.shaderFloat16;
    c->int8 = f12.shaderInt8;
    c->int16 = feats.features.shaderInt16;
    c->int64 = feats.features.shaderInt64;
    c->storage8 = f12.storageBuffer8BitAccess;
    c->storage16 = f11.storageBuffer16BitAccess;
    c->int_dot = has_dot && dotf.shaderIntegerDotProduct;
    c->int_dot_accel = c->int_dot && dotp.integerDotProduct4x8BitPackedSignedAccelerated;
    c->coopmat_khr = has_cm && cmf.cooperativeMatrix;
    /* NV2 only counts with everything its kernels' SPIR-V declares, so that
     * vk_device.c enables all of it or none (a device without the extension
     * never sees its feature struct) */
    c->coopmat_nv2 = has_cm2 && c->coopmat_khr && cm2f.cooperativeMatrixWorkgroupScope &&
                     cm2f.cooperativeMatrixFlexibleDimensions &&
                     cm2f.cooperativeMatrixTensorAddressing && cm2f.cooperativeMatrixBlockLoads &&
                     cm2f.cooperativeMatrixPerElementOperations && f12.bufferDeviceAddress &&
                     f12.vulkanMemoryModel;
    c->coopmat2_max_wg_size =
        c->coopmat_nv2 ? cm2p.cooperativeMatrixWorkgroupScopeMaxWorkgroupSize : 0;
    c->coopmat2_reserved_smem =
        c->coopmat_nv2 ? cm2p.cooperativeMatrixWorkgroupScopeReservedSharedMemory : 0;
    c->bf16 = has_bf && bf.shaderBFloat16Type;
    c->push_descriptor = has_ext(ext, n_ext, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
    c->memory_budget = has_ext(ext, n_ext, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
    c->timeline_semaphore = f12.timelineSemaphore;
    c->buffer_device_address = f12.bufferDeviceAddress;
    c->vulkan_memory_model = f12.vulkanMemoryModel;
    c->vulkan_memory_model_device_scope = f12.vulkanMemoryModelDeviceScope;
    c->maintenance4 = has_m4 && m4f.maintenance4;
    if (c->coopmat_khr) probe_coopmat_shapes(inst, pd, c);
    if (c->coopmat_nv2) probe_coopmat_flex(inst, pd, c);

    const VkPhysicalDeviceLimits *l = &base.limits;
    c->max_wg_invocations = l->maxComputeWorkGroupInvocations;
    for (int i = 0; i < 3; i++) {
        c->max_wg_size[i] = l->maxComputeWorkGroupSize[i];
        c->max_wg_count[i] = l->maxComputeWorkGroupCount[i];
    }
    c->max_push_constants = l->maxPushConstantsSize;
    c->max_shared_memory = l->maxComputeSharedMemorySize;
    c->max_storage_buffer_range = l->maxStorageBufferRange;
    c->min_storage_offset_align = l->minStorageBufferOffsetAlignment;
    c->timestamp_period_ns = l->timestampPeriod;
    VkPhysicalDeviceMaintenance3Properties m3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
    VkPhysicalDeviceMaintenance4Properties m4 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES, .pNext = &m3};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = v13 ? (void *)&m4 : (void *)&m3};
    vkGetPhysicalDeviceProperties2(pd, &p2);
    c->max_alloc_size = m3.maxMemoryAllocationSize;
    c->max_buffer_size = v13 ? m4.maxBufferSize : m3.maxMemoryAllocationSize;

    /* memory heaps, with the budget where the driver reports it */
    VkPhysicalDeviceMemoryBudgetPropertiesEXT bud = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
    VkPhysicalDeviceMemoryProperties2 mp = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
        .pNext = c->memory_budget ? &bud : NULL};
    vkGetPhysicalDeviceMemoryProperties2(pd, &mp);
    const VkPhysicalDeviceMemoryProperties *m = &mp.memoryProperties;
    c->n_heaps = m->memoryHeapCount < VKPT_MAX_HEAPS ? m->memoryHeapCount : VKPT_MAX_HEAPS;
    for (uint32_t i = 0; i < c->n_heaps; i++) {
        vkpt_heap_info *h = &c->heaps[i];
        h->size = m->memoryHeaps[i].size;
        h->device_local = m->memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT;
        h->budget = c->memory_budget && bud.heapBudget[i] ? bud.heapBudget[i] : h->size;
        h->usage = c->memory_budget ? bud.heapUsage[i] : 0;
        if (h->device_local) c->device_local_bytes += h->size;
    }
    c->unified_memory = true;
    for (uint32_t i = 0; i < m->memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = m->memoryTypes[i].propertyFlags;
        if ((f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) && !(f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
            c->unified_memory = false;
    }

    /* queue families */
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    VkQueueFamilyProperties qf[VKPT_MAX_QUEUE_FAMILIES];
    if (nq > VKPT_MAX_QUEUE_FAMILIES) nq = VKPT_MAX_QUEUE_FAMILIES;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    c->n_queue_families = nq;
    int best = -1;
    for (uint32_t i = 0; i < nq; i++) {
        vkpt_queue_family_info *q = &c->queue_families[i];
        q->index = i;
        q->count = qf[i].queueCount;
        q->compute = qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT;
        q->graphics = qf[i].queueFlags & VK_QUEUE_GRAPHICS_BIT;
        q->transfer = qf[i].queueFlags & VK_QUEUE_TRANSFER_BIT;
        q->timestamp_bits = qf[i].timestampValidBits;
        if (q->compute && (best < 0 || qf[i].queueCount > c->queue_families[best].count))
            best = (int)i;
        if (q->transfer && !q->compute && !q->graphics) c->has_transfer_queue = true;
    }
    c->n_compute_queues = best >= 0 ? c->queue_families[best].count : 0;
    vkpt_free(ext);
}

const char *vkpt_device_type_name(int type)
{
    switch (type) {
    case VKPT_DEVICE_INTEGRATED: return "integrated";
    case VKPT_DEVICE_DISCRETE: return "discrete";
    case VKPT_DEVICE_VIRTUAL: return "virtual";
    case VKPT_DEVICE_CPU: return "cpu";
    default: return "other";
    }
}

const char *vkpt_vendor_name(uint32_t vendor_id)
{
    switch (vendor_id) {
    case 0x10de: return "NVIDIA";
    case 0x1002: return "AMD";
    case 0x8086: return "Intel";
    case 0x106b: return "Apple";
    case 0x13b5: return "ARM";
    case 0x5143: return "Qualcomm";
    case 0x10005: return "Mesa";
    default: return "unknown";
    }
}
