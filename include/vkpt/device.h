/* vkpt devices: Vulkan instance, device enumeration and capabilities.
 *
 * A vkpt_instance owns the Vulkan instance (with the Khronos validation layer
 * when asked) and a snapshot of every physical device's capabilities. A
 * vkpt_device is one logical device opened from it: its queues, memory,
 * pipelines. Devices are independent: nothing here is process-global except
 * the Vulkan loader itself.
 */
#ifndef VKPT_DEVICE_H
#define VKPT_DEVICE_H

#include "vkpt/base.h"

#include <stdbool.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Parts of a packed Vulkan version number (api_version). */
#define VKPT_VK_MAJOR(v) (((uint32_t)(v) >> 22) & 0x7fu)
#define VKPT_VK_MINOR(v) (((uint32_t)(v) >> 12) & 0x3ffu)
#define VKPT_VK_PATCH(v) ((uint32_t)(v)&0xfffu)

typedef struct vkpt_instance vkpt_instance;
typedef struct vkpt_device vkpt_device;

enum vkpt_device_type {
    VKPT_DEVICE_OTHER = 0,
    VKPT_DEVICE_INTEGRATED = 1,
    VKPT_DEVICE_DISCRETE = 2,
    VKPT_DEVICE_VIRTUAL = 3,
    VKPT_DEVICE_CPU = 4,
};

/* Component types of cooperative-matrix shapes (VkComponentTypeKHR values). */
enum vkpt_ctype {
    VKPT_CT_F16 = 0,
    VKPT_CT_F32 = 1,
    VKPT_CT_F64 = 2,
    VKPT_CT_S8 = 3,
    VKPT_CT_S16 = 4,
    VKPT_CT_S32 = 5,
    VKPT_CT_S64 = 6,
    VKPT_CT_U8 = 7,
    VKPT_CT_U16 = 8,
    VKPT_CT_U32 = 9,
    VKPT_CT_U64 = 10,
    VKPT_CT_BF16 = 1000141000,
};

typedef struct vkpt_coopmat_shape {
    uint32_t m, n, k;
    int32_t a, b, c, result; /* enum vkpt_ctype */
    uint32_t scope;          /* VkScopeKHR: 3 = subgroup, 2 = workgroup */
} vkpt_coopmat_shape;

/* A workgroup-scope matrix configuration of VK_NV_cooperative_matrix2
 * (VkCooperativeMatrixFlexibleDimensionsPropertiesNV): M, N, K may be any
 * multiples of the granularities, in workgroups of `wg_invocations`. */
typedef struct vkpt_coopmat_flex {
    uint32_t m_gran, n_gran, k_gran;
    int32_t a, b, c, result; /* enum vkpt_ctype */
    uint32_t scope;          /* VkScopeKHR */
    uint32_t wg_invocations;
} vkpt_coopmat_flex;

typedef struct vkpt_heap_info {
    uint64_t size;   /* bytes */
    uint64_t budget; /* bytes available to this process (VK_EXT_memory_budget), else size */
    uint64_t usage;  /* bytes in use by this process, when known */
    bool device_local;
} vkpt_heap_info;

typedef struct vkpt_queue_family_info {
    uint32_t index;
    uint32_t count;
    bool compute, graphics, transfer;
    uint32_t timestamp_bits;
} vkpt_queue_family_info;

#define VKPT_MAX_COOPMAT_SHAPES 32
#define VKPT_MAX_COOPMAT_FLEX   16
#define VKPT_MAX_HEAPS          16
#define VKPT_MAX_QUEUE_FAMILIES 16

/* What a device can do, probed once. Kernels choose variants from this. */
typedef struct vkpt_device_caps {
    char name[256];
    char driver_name[256];
    char driver_info[256];
    uint8_t uuid[16];
    uint32_t vendor_id, device_id, driver_id;
    uint32_t api_version, driver_version;
    int type; /* enum vkpt_device_type */

    /* subgroups */
    uint32_t subgroup_size, subgroup_min, subgroup_max;
    bool subgroup_size_control; /* can require a size per pipeline */
    bool subgroup_arith;        /* subgroupAdd/Max... in compute */
    bool subgroup_shuffle;
    bool subgroup_ballot;

    /* arithmetic and storage */
    bool fp16, int8, int16, int64;
    bool storage8, storage16;
    bool int_dot;       /* VK_KHR_shader_integer_dot_product feature */
    bool int_dot_accel; /* 4x8-bit packed signed dot is hardware accelerated */
    bool coopmat_khr;   /* VK_KHR_cooperative_matrix */
    bool coopmat_nv2;   /* VK_NV_cooperative_matrix2 with what vkpt's NV2 kernels use:
                         * workgroup scope, flexible dimensions, tensor addressing,
                         * block loads (decode functions), per-element operations,
                         * plus KHR matrices, bufferDeviceAddress (decode functions
                         * take buffer_reference parameters) and the Vulkan memory
                         * model, all enabled at device creation */
    bool bf16;          /* VK_KHR_shader_bfloat16 */
    bool push_descriptor;
    bool memory_budget;
    bool timeline_semaphore;
    bool buffer_device_address;
    bool vulkan_memory_model; /* needed by cooperative-matrix shaders */
    bool vulkan_memory_model_device_scope;
    bool maintenance4; /* LocalSizeId (spec-constant workgroup size in SPIR-V 1.6) */
    uint32_t n_coopmat_shapes;
    vkpt_coopmat_shape coopmat_shapes[VKPT_MAX_COOPMAT_SHAPES];
    uint32_t coopmat2_max_wg_size;   /* workgroup-scope limit (NV2), 0 if none */
    uint32_t coopmat2_reserved_smem; /* shared memory NV2 keeps for workgroup-scope staging */
    uint32_t n_coopmat_flex;
    vkpt_coopmat_flex coopmat_flex[VKPT_MAX_COOPMAT_FLEX]; /* NV2 flexible dimensions */

    /* limits */
    uint32_t max_wg_invocations;
    uint32_t max_wg_size[3];
    uint32_t max_wg_count[3];
    uint32_t max_push_constants;
    uint32_t max_shared_memory;
    uint64_t max_storage_buffer_range;
    uint64_t min_storage_offset_align;
    uint64_t max_alloc_size;
    uint64_t max_buffer_size;
    float timestamp_period_ns;

    /* memory */
    uint32_t n_heaps;
    vkpt_heap_info heaps[VKPT_MAX_HEAPS];
    uint64_t device_local_bytes; /* sum of device-local heaps */
    bool unified_memory;         /* every device-local type is also host-visible */

    /* queues */
    uint32_t n_queue_families;
    vkpt_queue_family_info queue_families[VKPT_MAX_QUEUE_FAMILIES];
    uint32_t n_compute_queues; /* in the family the engine uses for compute */
    bool has_transfer_queue;   /* a dedicated transfer family exists */
} vkpt_device_caps;

typedef struct vkpt_instance_opts {
    /* 1: enable VK_LAYER_KHRONOS_validation and count its messages;
     * 0: never; -1: from the environment (VKPT_VALIDATE=1). */
    int validate;
    /* When validating, also count warnings as failures (tests do). */
    bool validation_warnings_fail;
} vkpt_instance_opts;

/* Create the instance and probe every device. Fails with VKPT_EUNSUPPORTED
 * when no Vulkan loader/driver is installed, VKPT_ENODEV when no device. */
int vkpt_instance_create(const vkpt_instance_opts *opts, vkpt_instance **out);
void vkpt_instance_destroy(vkpt_instance *inst);
int vkpt_instance_device_count(const vkpt_instance *inst);
const vkpt_device_caps *vkpt_instance_caps(const vkpt_instance *inst, int index);
/* Resolve a --device argument: a decimal index, a UUID (32 hex digits,
 * dashes allowed) or a case-insensitive substring of the device name. NULL
 * or "" picks the default: the first discrete GPU, else integrated, else any.
 * Returns the index or a negative error (VKPT_ENODEV with a message). */
int vkpt_instance_find_device(const vkpt_instance *inst, const char *spec);
/* Validation-layer messages counted as errors so far (0 when not validating). */
int vkpt_instance_validation_errors(const vkpt_instance *inst);
/* True when the validation layer is active. */
bool vkpt_instance_validating(const vkpt_instance *inst);

typedef struct vkpt_device_opts {
    /* Compute queues to open (0 = all the family has, capped at 16). */
    uint32_t max_compute_queues;
    /* Do not load or save the on-disk pipeline cache. */
    bool no_pipeline_cache;
    /* Per-dispatch GPU timestamps (also VKPT_PROFILE=1). */
    bool profile;
    /* Let automatic kernel choice use the cooperative-matrix kernels
     * (VK_NV_cooperative_matrix2 first, then VK_KHR_cooperative_matrix)
     * where the device has them; also VKPT_COOPMAT=1. Off by default: they
     * have not yet been verified on hardware. Forcing a path in a kernel's
     * arguments works without it. */
    bool coopmat;
} vkpt_device_opts;

/* Open device `index` of `inst` (which must outlive it). */
int vkpt_device_create(vkpt_instance *inst, int index, const vkpt_device_opts *opts,
                       vkpt_device **out);
/* Waits for the GPU to finish, saves the pipeline cache, frees everything.
 * Accepts NULL and half-built devices. */
void vkpt_device_destroy(vkpt_device *dev);
const vkpt_device_caps *vkpt_device_get_caps(const vkpt_device *dev);
/* True once the device reported VK_ERROR_DEVICE_LOST: every later call on it
 * fails with VKPT_EDEVLOST. */
bool vkpt_device_lost(const vkpt_device *dev);

/* Device memory by purpose, for metrics and load-time estimates. */
enum vkpt_mem_purpose {
    VKPT_MEM_WEIGHTS = 0,
    VKPT_MEM_KV = 1,
    VKPT_MEM_SCRATCH = 2,
    VKPT_MEM_STAGING = 3,
    VKPT_MEM_OTHER = 4,
    VKPT_MEM_PURPOSE_COUNT
};
const char *vkpt_mem_purpose_name(int purpose);
typedef struct vkpt_mem_stats {
    uint64_t used[VKPT_MEM_PURPOSE_COUNT]; /* bytes handed out per purpose */
    uint64_t reserved;                     /* bytes of VkDeviceMemory held */
    uint64_t budget;                       /* device-local budget, bytes */
    uint32_t blocks;                       /* VkDeviceMemory allocations */
} vkpt_mem_stats;
void vkpt_device_mem_stats(vkpt_device *dev, vkpt_mem_stats *out);

/* With profiling on (VKPT_PROFILE=1 or opts.profile): write the GPU time per
 * shader variant accumulated so far as a table to f, largest first, and
 * reset the counters. Writes nothing when profiling is off. */
void vkpt_device_profile_dump(vkpt_device *dev, FILE *f);

const char *vkpt_device_type_name(int type);
const char *vkpt_vendor_name(uint32_t vendor_id);

#ifdef __cplusplus
}
#endif
#endif
