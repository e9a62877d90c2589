/* Device memory: few large VkDeviceMemory blocks, each with one VkBuffer
 * spanning it, sub-allocated first-fit with coalescing free lists; a
 * double-buffered staging area for uploads and readbacks of memory the host
 * cannot map; per-purpose accounting for metrics and load estimates.
 *
 * Invariants: a block's free list is sorted by offset with no two ranges
 * adjacent; every handed-out range is aligned to dev->align; allocations
 * larger than half a block get a dedicated block that is released when freed.
 * All of it is guarded by dev->lock (staging by dev->staging_lock). */
#define _GNU_SOURCE
#include "vk_int.h"

#include <stdio.h>
#include <string.h>

typedef struct vkpt_range {
    uint64_t off, size;
} vkpt_range;

struct vkpt_mem_block {
    VkDeviceMemory mem;
    VkBuffer buf;
    uint8_t *map;
    uint64_t size;
    int kind;
    bool dedicated;
    bool live;
    vkpt_range *free;
    uint32_t n_free, cap_free;
};

#define STAGING_BYTES (64ull << 20)

const char *vkpt_mem_purpose_name(int purpose)
{
    static const char *names[] = {"weights", "kv_cache", "scratch", "staging", "other"};
    return purpose >= 0 && purpose < VKPT_MEM_PURPOSE_COUNT ? names[purpose] : "?";
}

static int pick_type(const VkPhysicalDeviceMemoryProperties *mp, uint32_t bits,
                     VkMemoryPropertyFlags need, VkMemoryPropertyFlags prefer,
                     VkMemoryPropertyFlags avoid)
{
    int best = -1, best_score = -1;
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
        if (!(bits & (1u << i)) || (f & need) != need) continue;
        int score = __builtin_popcount(f & prefer) * 2 + !(f & avoid);
        if (score > best_score) {
            best = (int)i;
            best_score = score;
        }
    }
    return best;
}

static const VkBufferUsageFlags k_usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                          VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                          VK_BUFFER_USAGE_TRANSFER_DST_BIT;

int vkpt__mem_init(vkpt_device *dev)
{
    /* Memory-type bits of a storage buffer. */
    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = 4096, .usage = k_usage};
    VkBuffer probe;
    VkResult r = dev->vk.vkCreateBuffer(dev->dev, &bci, NULL, &probe);
    if (r != VK_SUCCESS) return vkpt__vk_err(dev, r, "vkCreateBuffer (probe)");
    VkMemoryRequirements req;
    dev->vk.vkGetBufferMemoryRequirements(dev->dev, probe, &req);
    dev->vk.vkDestroyBuffer(dev->dev, probe, NULL);
    const VkPhysicalDeviceMemoryProperties *mp = &dev->memprops;
    const VkMemoryPropertyFlags DL = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT,
                                HV = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT,
                                HC = VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                CA = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
    dev->mem_type[VKPT_MK_DEVICE] = pick_type(mp, req.memoryTypeBits, DL, 0, 0);
    if (dev->mem_type[VKPT_MK_DEVICE] < 0)
        dev->mem_type[VKPT_MK_DEVICE] = pick_type(mp, req.memoryTypeBits, 0, 0, 0);
    dev->mem_type[VKPT_MK_HOST] = pick_type(mp, req.memoryTypeBits, HV | HC, CA, 0);
    dev->mem_type[VKPT_MK_UPLOAD] = pick_type(mp, req.memoryTypeBits, HV | HC, DL, 0);
    if (dev->mem_type[VKPT_MK_DEVICE] < 0 || dev->mem_type[VKPT_MK_HOST] < 0)
        return vkpt_fail(VKPT_EUNSUPPORTED, "%s: no usable memory type for storage buffers",
                         dev->caps.name);
    dev->align = req.alignment;
    if (dev->align < dev->caps.min_storage_offset_align)
        dev->align = dev->caps.min_storage_offset_align;
    if (dev->align < 256) dev->align = 256;
    uint64_t bs = 256ull << 20;
    if (dev->caps.max_alloc_size && bs > dev->caps.max_alloc_size) bs = dev->caps.max_alloc_size;
    if (dev->caps.max_buffer_size && bs > dev->caps.max_buffer_size) bs = dev->caps.max_buffer_size;
    dev->block_size = bs;
    return 0;
}

static void block_release(vkpt_device *dev, struct vkpt_mem_block *b)
{
    if (!b->live) return;
    if (b->buf) dev->vk.vkDestroyBuffer(dev->dev, b->buf, NULL);
    if (b->map) dev->vk.vkUnmapMemory(dev->dev, b->mem);
    if (b->mem) dev->vk.vkFreeMemory(dev->dev, b->mem, NULL);
    dev->reserved -= b->size;
    vkpt_free(b->free);
    memset(b, 0, sizeof *b);
}

void vkpt__mem_free(vkpt_device *dev)
{
    vkpt_buf_free(dev, &dev->staging);
    for (uint32_t i = 0; i < dev->n_blocks; i++) block_release(dev, &dev->blocks[i]);
    vkpt_free(dev->blocks);
    dev->blocks = NULL;
    dev->n_blocks = dev->cap_blocks = 0;
}

static uint32_t heap_of_kind(vkpt_device *dev, int kind)
{
    return dev->memprops.memoryTypes[dev->mem_type[kind]].heapIndex;
}

/* Create a block of `size` bytes; returns its index or a negative error. */
static int block_create(vkpt_device *dev, uint64_t size, int kind, bool dedicated)
{
    uint32_t slot = dev->n_blocks;
    for (uint32_t i = 0; i < dev->n_blocks; i++)
        if (!dev->blocks[i].live) {
            slot = i;
            break;
        }
    if (slot == dev->n_blocks) {
        if (dev->n_blocks == dev->cap_blocks) {
            uint32_t nc = dev->cap_blocks ? dev->cap_blocks * 2 : 16;
            void *nb = vkpt_realloc(dev->blocks, nc * sizeof *dev->blocks);
            if (!nb) return vkpt_fail(VKPT_ENOMEM, "memory block table");
            dev->blocks = nb;
            dev->cap_blocks = nc;
        }
        dev->n_blocks++;
    }
    struct vkpt_mem_block *b = &dev->blocks[slot];
    memset(b, 0, sizeof *b);

    uint32_t heap = heap_of_kind(dev, kind);
    const vkpt_heap_info *hi = &dev->caps.heaps[heap];
    uint64_t heap_used = 0;
    for (uint32_t i = 0; i < dev->n_blocks; i++)
        if (i != slot && dev->blocks[i].live && heap_of_kind(dev, dev->blocks[i].kind) == heap)
            heap_used += dev->blocks[i].size;
    if (dev->caps.memory_budget) {
        VkPhysicalDeviceMemoryBudgetPropertiesEXT bud = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
        VkPhysicalDeviceMemoryProperties2 mp = {
            .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2, .pNext = &bud};
        vkGetPhysicalDeviceMemoryProperties2(dev->pd, &mp);
        if (bud.heapBudget[heap] && bud.heapUsage[heap] + size > bud.heapBudget[heap]) {
            if (slot == dev->n_blocks - 1) dev->n_blocks--;
            return vkpt_fail(VKPT_EDEVMEM,
                             "%s: allocating %.1f MiB would exceed heap %u's budget (%.1f MiB used "
                             "of %.1f MiB available)",
                             dev->caps.name, size / 1048576.0, heap,
                             bud.heapUsage[heap] / 1048576.0, bud.heapBudget[heap] / 1048576.0);
        }
    }

    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size, .usage = k_usage};
    uint32_t families[2] = {dev->compute_family, dev->xfer.family};
    if (dev->has_xfer) {
        /* copied by the transfer queue, used by the compute queues */
        bci.sharingMode = VK_SHARING_MODE_CONCURRENT;
        bci.queueFamilyIndexCount = 2;
        bci.pQueueFamilyIndices = families;
    }
    VkResult r = dev->vk.vkCreateBuffer(dev->dev, &bci, NULL, &b->buf);
    VkMemoryRequirements req = {0};
    if (r == VK_SUCCESS) {
        dev->vk.vkGetBufferMemoryRequirements(dev->dev, b->buf, &req);
        VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                    .allocationSize = req.size,
                                    .memoryTypeIndex = (uint32_t)dev->mem_type[kind]};
        r = dev->vk.vkAllocateMemory(dev->dev, &mai, NULL, &b->mem);
    }
    if (r == VK_SUCCESS) r = dev->vk.vkBindBufferMemory(dev->dev, b->buf, b->mem, 0);
    VkMemoryPropertyFlags flags = dev->memprops.memoryTypes[dev->mem_type[kind]].propertyFlags;
    if (r == VK_SUCCESS && (flags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
        r = dev->vk.vkMapMemory(dev->dev, b->mem, 0, VK_WHOLE_SIZE, 0, (void **)&b->map);
    b->live = true;
    b->size = size;
    b->kind = kind;
    b->dedicated = dedicated;
    dev->reserved += size;
    if (r != VK_SUCCESS) {
        block_release(dev, b);
        if (slot == dev->n_blocks - 1) dev->n_blocks--;
        if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
            return vkpt_fail(VKPT_EDEVMEM,
                             "%s: out of device memory allocating %.1f MiB (heap %u: %.1f MiB, "
                             "%.1f MiB already held by vkpt)",
                             dev->caps.name, size / 1048576.0, heap, hi->size / 1048576.0,
                             heap_used / 1048576.0);
        return vkpt__vk_err(dev, r, "allocating device memory");
    }
    b->free = vkpt_malloc(4 * sizeof *b->free);
    if (!b->free) {
        block_release(dev, b);
        return vkpt_fail(VKPT_ENOMEM, "free list");
    }
    b->cap_free = 4;
    b->n_free = 1;
    b->free[0] = (vkpt_range){0, size};
    return (int)slot;
}

/* First fit in block b; returns the offset or UINT64_MAX. */
static uint64_t block_take(struct vkpt_mem_block *b, uint64_t size)
{
    for (uint32_t i = 0; i < b->n_free; i++) {
        vkpt_range *f = &b->free[i];
        if (f->size < size) continue;
        uint64_t off = f->off;
        f->off += size;
        f->size -= size;
        if (f->size == 0) {
            memmove(f, f + 1, (b->n_free - i - 1) * sizeof *f);
            b->n_free--;
        }
        return off;
    }
    return UINT64_MAX;
}

static int block_give(struct vkpt_mem_block *b, uint64_t off, uint64_t size)
{
    uint32_t i = 0;
    while (i < b->n_free && b->free[i].off < off) i++;
    bool merge_prev = i > 0 && b->free[i - 1].off + b->free[i - 1].size == off;
    bool merge_next = i < b->n_free && off + size == b->free[i].off;
    if (merge_prev && merge_next) {
        b->free[i - 1].size += size + b->free[i].size;
        memmove(&b->free[i], &b->free[i + 1], (b->n_free - i - 1) * sizeof *b->free);
        b->n_free--;
    } else if (merge_prev) {
        b->free[i - 1].size += size;
    } else if (merge_next) {
        b->free[i].off = off;
        b->free[i].size += size;
    } else {
        if (b->n_free == b->cap_free) {
            uint32_t nc = b->cap_free * 2;
            void *nf = vkpt_realloc(b->free, nc * sizeof *b->free);
            if (!nf) return VKPT_ENOMEM; /* the range leaks until the block goes */
            b->free = nf;
            b->cap_free = nc;
        }
        memmove(&b->free[i + 1], &b->free[i], (b->n_free - i) * sizeof *b->free);
        b->free[i] = (vkpt_range){off, size};
        b->n_free++;
    }
    return 0;
}

int vkpt_buf_alloc(vkpt_device *dev, uint64_t size, int kind, int purpose, vkpt_buf *out)
{
    if (!dev || !out || kind < 0 || kind >= VKPT_MK_COUNT || purpose < 0 ||
        purpose >= VKPT_MEM_PURPOSE_COUNT)
        return vkpt_fail(VKPT_EINVAL, "vkpt_buf_alloc: bad arguments");
    memset(out, 0, sizeof *out);
    out->block = -1;
    if (atomic_load(&dev->lost)) return vkpt_fail(VKPT_EDEVLOST, "%s: device lost", dev->caps.name);
    if (vkpt__fault_due(dev, VKPT_FAULT_ALLOC))
        return vkpt_fail(VKPT_EDEVMEM, "%s: out of device memory allocating %.1f MiB (injected)",
                         dev->caps.name, size / 1048576.0);
    if (dev->mem_type[kind] < 0) kind = VKPT_MK_HOST;
    uint64_t sz = vkpt_align_up(size ? size : 1, dev->align);
    if (dev->caps.max_buffer_size && sz > dev->caps.max_buffer_size)
        return vkpt_fail(VKPT_ETOOBIG,
                         "%s: a %.1f MiB buffer exceeds the device's maximum of %.1f MiB",
                         dev->caps.name, sz / 1048576.0, dev->caps.max_buffer_size / 1048576.0);

    pthread_mutex_lock(&dev->lock);
    int err = 0;
    int bi = -1;
    uint64_t off = UINT64_MAX;
    bool dedicated = sz > dev->block_size / 2;
    if (!dedicated) {
        for (uint32_t i = 0; i < dev->n_blocks && off == UINT64_MAX; i++) {
            struct vkpt_mem_block *b = &dev->blocks[i];
            if (!b->live || b->dedicated || b->kind != kind) continue;
            off = block_take(b, sz);
            if (off != UINT64_MAX) bi = (int)i;
        }
    }
    if (off == UINT64_MAX) {
        bi = block_create(dev, dedicated ? sz : dev->block_size, kind, dedicated);
        if (bi < 0) {
            err = bi;
            goto done;
        }
        off = block_take(&dev->blocks[bi], sz);
    }
    struct vkpt_mem_block *b = &dev->blocks[bi];
    out->buf = b->buf;
    out->off = off;
    out->size = sz;
    out->map =
        b->map && !(kind == VKPT_MK_DEVICE && dev->no_map_device_local) ? b->map + off : NULL;
    out->block = bi;
    out->purpose = (uint8_t)purpose;
    out->kind = (uint8_t)kind;
    dev->used[purpose] += sz;
done:
    pthread_mutex_unlock(&dev->lock);
    return err;
}

void vkpt_buf_free(vkpt_device *dev, vkpt_buf *b)
{
    if (!dev || !b || b->block < 0 || !b->buf) {
        if (b) memset(b, 0, sizeof *b), b->block = -1;
        return;
    }
    pthread_mutex_lock(&dev->lock);
    struct vkpt_mem_block *blk = &dev->blocks[b->block];
    if (blk->live && blk->buf == b->buf) {
        block_give(blk, b->off, b->size);
        dev->used[b->purpose] -= b->size;
        if (blk->n_free == 1 && blk->free[0].size == blk->size) block_release(dev, blk);
    }
    pthread_mutex_unlock(&dev->lock);
    memset(b, 0, sizeof *b);
    b->block = -1;
}

vkpt_buf vkpt_buf_view(const vkpt_buf *b, uint64_t off, uint64_t size)
{
    vkpt_buf v = *b;
    v.off = b->off + off;
    v.size = size;
    v.map = b->map ? b->map + off : NULL;
    v.block = -1;
    return v;
}

void vkpt_device_mem_stats(vkpt_device *dev, vkpt_mem_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!dev) return;
    pthread_mutex_lock(&dev->lock);
    memcpy(out->used, dev->used, sizeof out->used);
    out->reserved = dev->reserved;
    for (uint32_t i = 0; i < dev->n_blocks; i++) out->blocks += dev->blocks[i].live;
    pthread_mutex_unlock(&dev->lock);
    uint32_t heap = heap_of_kind(dev, VKPT_MK_DEVICE);
    out->budget = dev->caps.heaps[heap].budget;
}

/* ---- staging -------------------------------------------------------------- */

static int staging_ready(vkpt_device *dev)
{
    if (dev->staging.buf) return 0;
    return vkpt_buf_alloc(dev, STAGING_BYTES, VKPT_MK_HOST, VKPT_MEM_STAGING, &dev->staging);
}

int vkpt_buf_upload(vkpt_device *dev, const vkpt_buf *dst, uint64_t off, const void *src,
                    uint64_t n)
{
    if (!dev || !dst || (n && !src) || off + n > dst->size)
        return vkpt_fail(VKPT_EINVAL, "upload of %llu bytes at %llu into a %llu-byte buffer",
                         (unsigned long long)n, (unsigned long long)off,
                         (unsigned long long)dst->size);
    if (n == 0) return 0;
    if (atomic_load(&dev->lost)) return vkpt_fail(VKPT_EDEVLOST, "%s: device lost", dev->caps.name);
    if (dst->map) {
        memcpy(dst->map + off, src, n);
        return 0;
    }
    pthread_mutex_lock(&dev->staging_lock);
    int err = staging_ready(dev);
    /* Two halves, each with its own command buffer: the CPU fills one half
     * while the GPU copies from the other. */
    uint64_t half = STAGING_BYTES / 2;
    uint64_t done = 0;
    int h = 0;
    bool pending[2] = {false, false};
    while (!err && done < n) {
        uint64_t k = n - done < half ? n - done : half;
        vkpt_cmd *c = &dev->staging_cmd[h];
        if (pending[h]) {
            pending[h] = false;
            if ((err = vkpt_cmd_wait(c, UINT64_MAX))) break;
        }
        memcpy(dev->staging.map + h * half, (const uint8_t *)src + done, k);
        if ((err = vkpt_cmd_begin(c))) break;
        vkpt_cmd_copy(c, &dev->staging, h * half, dst, off + done, k);
        err = vkpt_cmd_submit(c);
        pending[h] = !err;
        done += k;
        h ^= 1;
    }
    for (int i = 0; i < 2; i++) {
        if (!pending[i]) continue;
        int e2 = vkpt_cmd_wait(&dev->staging_cmd[i], UINT64_MAX);
        if (!err) err = e2;
    }
    pthread_mutex_unlock(&dev->staging_lock);
    return err;
}

int vkpt_buf_download(vkpt_device *dev, const vkpt_buf *src, uint64_t off, void *dst, uint64_t n)
{
    if (!dev || !src || (n && !dst) || off + n > src->size)
        return vkpt_fail(VKPT_EINVAL, "download of %llu bytes at %llu from a %llu-byte buffer",
                         (unsigned long long)n, (unsigned long long)off,
                         (unsigned long long)src->size);
    if (n == 0) return 0;
    if (atomic_load(&dev->lost)) return vkpt_fail(VKPT_EDEVLOST, "%s: device lost", dev->caps.name);
    if (src->map) {
        memcpy(dst, src->map + off, n);
        return 0;
    }
    pthread_mutex_lock(&dev->staging_lock);
    int err = staging_ready(dev);
    uint64_t done = 0;
    while (!err && done < n) {
        uint64_t k = n - done < STAGING_BYTES ? n - done : STAGING_BYTES;
        if ((err = vkpt_cmd_begin(&dev->staging_cmd[0]))) break;
        vkpt_cmd_copy(&dev->staging_cmd[0], src, off + done, &dev->staging, 0, k);
        if ((err = vkpt_cmd_run(&dev->staging_cmd[0]))) break;
        memcpy((uint8_t *)dst + done, dev->staging.map, k);
        done += k;
    }
    pthread_mutex_unlock(&dev->staging_lock);
    return err;
}
