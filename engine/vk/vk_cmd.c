/* Command recording and submission. The dispatch function is the single
 * chokepoint for GPU work: it does the ceil-division from elements to
 * workgroups, checks the device limits, binds buffers with push descriptors
 * and, when profiling, writes a timestamp after each dispatch so per-kernel
 * GPU time can be reported.
 *
 * Each vkpt_cmd owns a command pool with one command buffer, used by one
 * thread at a time. Completion is tracked with the queue's timeline
 * semaphore: a submission signals the next value and waiting means waiting
 * for that value. */
#define _GNU_SOURCE
#include "vk_int.h"

#include <assert.h>
#include <string.h>

enum { CMD_IDLE = 0, CMD_RECORDING = 1, CMD_SUBMITTED = 2 };

int vkpt_cmd_init(vkpt_device *dev, uint32_t queue_index, vkpt_cmd *c)
{
    if (!dev || !dev->n_queues) {
        memset(c, 0, sizeof *c);
        return vkpt_fail(VKPT_EINVAL, "vkpt_cmd_init: no device");
    }
    return vkpt_cmd_init_on(dev, &dev->queues[queue_index % dev->n_queues], c);
}

int vkpt_cmd_init_on(vkpt_device *dev, vkpt_queue *q, vkpt_cmd *c)
{
    memset(c, 0, sizeof *c);
    if (!dev || !q) return vkpt_fail(VKPT_EINVAL, "vkpt_cmd_init_on: no device or queue");
    c->dev = dev;
    c->q = q;
    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .queueFamilyIndex = c->q->family};
    VkResult r = dev->vk.vkCreateCommandPool(dev->dev, &pci, NULL, &c->pool);
    if (r != VK_SUCCESS) return vkpt__vk_err(dev, r, "vkCreateCommandPool");
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = c->pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    r = dev->vk.vkAllocateCommandBuffers(dev->dev, &ai, &c->cb);
    if (r != VK_SUCCESS) {
        int err = vkpt__vk_err(dev, r, "vkAllocateCommandBuffers");
        vkpt_cmd_free(c);
        return err;
    }
    if (dev->profile && dev->caps.queue_families[c->q->family].timestamp_bits) {
        VkQueryPoolCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
                                     .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                     .queryCount = VKPT_PROFILE_MAX_QUERIES};
        c->query_variant = vkpt_calloc(VKPT_PROFILE_MAX_QUERIES, sizeof *c->query_variant);
        r = c->query_variant ? dev->vk.vkCreateQueryPool(dev->dev, &qci, NULL, &c->qp)
                             : VK_ERROR_OUT_OF_HOST_MEMORY;
        if (r != VK_SUCCESS) {
            int err = vkpt__vk_err(dev, r, "vkCreateQueryPool");
            vkpt_cmd_free(c);
            return err;
        }
    }
    return 0;
}

void vkpt_cmd_free(vkpt_cmd *c)
{
    if (!c || !c->dev) return;
    vkpt_device *dev = c->dev;
    if (c->state == CMD_SUBMITTED) vkpt_cmd_wait(c, UINT64_MAX);
    if (c->qp) dev->vk.vkDestroyQueryPool(dev->dev, c->qp, NULL);
    if (c->pool) dev->vk.vkDestroyCommandPool(dev->dev, c->pool, NULL);
    vkpt_free(c->query_variant);
    memset(c, 0, sizeof *c);
}

int vkpt_cmd_begin(vkpt_cmd *c)
{
    vkpt_device *dev = c->dev;
    if (c->state == CMD_SUBMITTED) {
        int err = vkpt_cmd_wait(c, UINT64_MAX);
        if (err) return err;
    }
    if (atomic_load(&dev->lost)) return vkpt_fail(VKPT_EDEVLOST, "%s: device lost", dev->caps.name);
    VkResult r = dev->vk.vkResetCommandPool(dev->dev, c->pool, 0);
    if (r != VK_SUCCESS) return vkpt__vk_err(dev, r, "vkResetCommandPool");
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    r = dev->vk.vkBeginCommandBuffer(c->cb, &bi);
    if (r != VK_SUCCESS) return vkpt__vk_err(dev, r, "vkBeginCommandBuffer");
    c->state = CMD_RECORDING;
    c->n_queries = 0;
    if (c->qp) {
        dev->vk.vkCmdResetQueryPool(c->cb, c->qp, 0, VKPT_PROFILE_MAX_QUERIES);
        dev->vk.vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, c->qp, 0);
        c->query_variant[0] = 0xffff;
        c->n_queries = 1;
    }
    return 0;
}

void vkpt_cmd_dispatch(vkpt_cmd *c, const vkpt_pipeline *p, const vkpt_buf *bufs, uint32_t n_bufs,
                       const void *pc, uint32_t pc_size, uint32_t nx, uint32_t ny, uint32_t nz)
{
    vkpt_device *dev = c->dev;
    assert(c->state == CMD_RECORDING);
    assert(n_bufs <= 32 && n_bufs >= p->n_bindings);
    assert(pc_size == p->pc_size);
    uint32_t g[3] = {vkpt_ceil_div(nx, p->elems[0]), vkpt_ceil_div(ny, p->elems[1]),
                     vkpt_ceil_div(nz, p->elems[2])};
    if (!g[0] || !g[1] || !g[2]) return;
    for (int i = 0; i < 3; i++) {
        if (g[i] > dev->caps.max_wg_count[i]) {
            /* a launcher bug: it must split work that exceeds the limit */
            VKPT_LOGE("%s: %u workgroups on axis %d exceed the device limit %u",
                      vkpt_variants[p->variant].name, g[i], i, dev->caps.max_wg_count[i]);
            assert(!"workgroup count over the device limit");
            return;
        }
    }
    dev->vk.vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipe);
    VkDescriptorBufferInfo bi[32];
    VkWriteDescriptorSet w[32];
    uint32_t nw = 0;
    const vkpt_spv_info *ri = &dev->refl[p->variant];
    for (uint32_t i = 0; i < p->n_bindings; i++) {
        if (!(ri->binding_mask & (1u << i))) continue;
        assert(bufs[i].buf && bufs[i].size);
        bi[nw] = (VkDescriptorBufferInfo){
            .buffer = bufs[i].buf, .offset = bufs[i].off, .range = bufs[i].size};
        w[nw] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                       .dstBinding = i,
                                       .descriptorCount = 1,
                                       .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                       .pBufferInfo = &bi[nw]};
        nw++;
    }
    if (nw)
        dev->vk.vkCmdPushDescriptorSetKHR(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, nw,
                                          w);
    if (pc_size)
        dev->vk.vkCmdPushConstants(c->cb, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, pc_size, pc);
    dev->vk.vkCmdDispatch(c->cb, g[0], g[1], g[2]);
    if (c->qp && c->n_queries < VKPT_PROFILE_MAX_QUERIES) {
        dev->vk.vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, c->qp,
                                    c->n_queries);
        c->query_variant[c->n_queries++] = (uint16_t)p->variant;
    }
}

void vkpt_cmd_barrier(vkpt_cmd *c)
{
    assert(c->state == CMD_RECORDING);
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                         VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT};
    VkPipelineStageFlags st = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
    c->dev->vk.vkCmdPipelineBarrier(c->cb, st, st, 0, 1, &mb, 0, NULL, 0, NULL);
}

void vkpt_cmd_copy(vkpt_cmd *c, const vkpt_buf *src, uint64_t src_off, const vkpt_buf *dst,
                   uint64_t dst_off, uint64_t n)
{
    assert(c->state == CMD_RECORDING);
    assert(src_off + n <= src->size && dst_off + n <= dst->size);
    if (!n) return;
    VkBufferCopy r = {.srcOffset = src->off + src_off, .dstOffset = dst->off + dst_off, .size = n};
    c->dev->vk.vkCmdCopyBuffer(c->cb, src->buf, dst->buf, 1, &r);
}

void vkpt_cmd_fill(vkpt_cmd *c, const vkpt_buf *dst, uint32_t value)
{
    assert(c->state == CMD_RECORDING);
    c->dev->vk.vkCmdFillBuffer(c->cb, dst->buf, dst->off, dst->size & ~3ull, value);
}

static int submit(vkpt_cmd *c)
{
    vkpt_device *dev = c->dev;
    if (atomic_load(&dev->lost)) return vkpt_fail(VKPT_EDEVLOST, "%s: device lost", dev->caps.name);
    if (vkpt__fault_due(dev, VKPT_FAULT_SUBMIT)) {
        c->state = CMD_IDLE;
        return vkpt__vk_err(dev, VK_ERROR_DEVICE_LOST, "vkQueueSubmit (injected)");
    }
    vkpt_queue *q = c->q;
    pthread_mutex_lock(&q->lock);
    uint64_t value = ++q->next_value;
    VkTimelineSemaphoreSubmitInfo ts = {.sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
                                        .signalSemaphoreValueCount = 1,
                                        .pSignalSemaphoreValues = &value};
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                       .pNext = &ts,
                       .commandBufferCount = 1,
                       .pCommandBuffers = &c->cb,
                       .signalSemaphoreCount = 1,
                       .pSignalSemaphores = &q->timeline};
    VkResult r = dev->vk.vkQueueSubmit(q->q, 1, &si, VK_NULL_HANDLE);
    if (r != VK_SUCCESS) q->next_value--;
    pthread_mutex_unlock(&q->lock);
    if (r != VK_SUCCESS) {
        c->state = CMD_IDLE;
        return vkpt__vk_err(dev, r, "vkQueueSubmit");
    }
    c->wait_value = value;
    c->state = CMD_SUBMITTED;
    return 0;
}

int vkpt_cmd_submit(vkpt_cmd *c)
{
    assert(c->state == CMD_RECORDING);
    VkResult r = c->dev->vk.vkEndCommandBuffer(c->cb);
    if (r != VK_SUCCESS) {
        c->state = CMD_IDLE;
        return vkpt__vk_err(c->dev, r, "vkEndCommandBuffer");
    }
    return submit(c);
}

int vkpt_cmd_resubmit(vkpt_cmd *c)
{
    if (c->state == CMD_SUBMITTED) {
        int err = vkpt_cmd_wait(c, UINT64_MAX);
        if (err) return err;
    }
    if (c->state != CMD_IDLE)
        return vkpt_fail(VKPT_ESTATE, "resubmit of a command buffer being recorded");
    return submit(c);
}

static void profile_collect(vkpt_cmd *c)
{
    vkpt_device *dev = c->dev;
    if (!c->qp || c->n_queries < 2) return;
    uint64_t ts[VKPT_PROFILE_MAX_QUERIES];
    VkResult r = dev->vk.vkGetQueryPoolResults(dev->dev, c->qp, 0, c->n_queries, sizeof ts, ts,
                                               sizeof ts[0], VK_QUERY_RESULT_64_BIT);
    if (r != VK_SUCCESS) return;
    double period = dev->caps.timestamp_period_ns;
    pthread_mutex_lock(&dev->prof_lock);
    for (uint32_t i = 1; i < c->n_queries; i++) {
        uint16_t v = c->query_variant[i];
        if (v >= VKPT_V_COUNT || ts[i] < ts[i - 1]) continue;
        dev->prof[v].ns += (uint64_t)((double)(ts[i] - ts[i - 1]) * period);
        dev->prof[v].count++;
    }
    pthread_mutex_unlock(&dev->prof_lock);
}

int vkpt_cmd_wait(vkpt_cmd *c, uint64_t timeout_ns)
{
    if (c->state != CMD_SUBMITTED) return 0;
    vkpt_device *dev = c->dev;
    VkSemaphoreWaitInfo wi = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO,
                              .semaphoreCount = 1,
                              .pSemaphores = &c->q->timeline,
                              .pValues = &c->wait_value};
    VkResult r = dev->vk.vkWaitSemaphores(dev->dev, &wi, timeout_ns);
    if (r == VK_TIMEOUT) return vkpt_fail(VKPT_ETIMEOUT, "GPU work did not finish in time");
    c->state = CMD_IDLE;
    if (r != VK_SUCCESS) return vkpt__vk_err(dev, r, "vkWaitSemaphores");
    profile_collect(c);
    return 0;
}

int vkpt_cmd_run(vkpt_cmd *c)
{
    int err = vkpt_cmd_submit(c);
    return err ? err : vkpt_cmd_wait(c, UINT64_MAX);
}

void vkpt_device_profile_read(vkpt_device *dev, vkpt_profile_entry out[VKPT_V_COUNT])
{
    pthread_mutex_lock(&dev->prof_lock);
    memcpy(out, dev->prof, sizeof dev->prof);
    pthread_mutex_unlock(&dev->prof_lock);
}

void vkpt_device_profile_reset(vkpt_device *dev)
{
    pthread_mutex_lock(&dev->prof_lock);
    memset(dev->prof, 0, sizeof dev->prof);
    pthread_mutex_unlock(&dev->prof_lock);
}

bool vkpt_device_profiling(const vkpt_device *dev)
{
    return dev && dev->profile;
}

void vkpt_device_profile_dump(vkpt_device *dev, FILE *f)
{
    if (!dev || !dev->profile || !f) return;
    vkpt_profile_entry e[VKPT_V_COUNT];
    vkpt_device_profile_read(dev, e);
    vkpt_device_profile_reset(dev);
    int order[VKPT_V_COUNT], n = 0;
    uint64_t total = 0;
    for (int v = 0; v < VKPT_V_COUNT; v++)
        if (e[v].count) {
            order[n++] = v;
            total += e[v].ns;
        }
    /* insertion sort by time, largest first: n is small */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && e[order[j]].ns > e[order[j - 1]].ns; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    fprintf(f, "GPU time per kernel (%s, timestamps after each dispatch):\n", dev->caps.name);
    fprintf(f, "  %-36s %10s %12s %10s %6s\n", "variant", "calls", "total ms", "avg us", "%");
    for (int i = 0; i < n; i++) {
        const vkpt_profile_entry *p = &e[order[i]];
        fprintf(f, "  %-36s %10llu %12.3f %10.2f %6.1f\n", vkpt_variants[order[i]].name,
                (unsigned long long)p->count, p->ns / 1e6, p->ns / 1e3 / p->count,
                total ? 100.0 * p->ns / total : 0.0);
    }
    fprintf(f, "  %-36s %10s %12.3f\n", "total", "", total / 1e6);
}
