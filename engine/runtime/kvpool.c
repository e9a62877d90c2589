/* KV block pool: a stack of free ids and per-block reference counts.
 * Invariant: a block is on the free stack exactly when its count is 0. */
#include "kvpool.h"

#include "vkpt/base.h"

#include <assert.h>

int vkpt_kvpool_init(vkpt_kvpool *p, uint32_t n_blocks)
{
    p->n_blocks = n_blocks;
    p->free = vkpt_malloc((n_blocks ? n_blocks : 1) * sizeof *p->free);
    p->ref = vkpt_calloc(n_blocks ? n_blocks : 1, sizeof *p->ref);
    if (!p->free || !p->ref) {
        vkpt_kvpool_free(p);
        return vkpt_fail(VKPT_ENOMEM, "KV block pool of %u blocks", n_blocks);
    }
    /* lowest ids on top: allocation order is deterministic */
    for (uint32_t i = 0; i < n_blocks; i++) p->free[i] = n_blocks - 1 - i;
    p->n_free = n_blocks;
    return 0;
}

void vkpt_kvpool_free(vkpt_kvpool *p)
{
    vkpt_free(p->free);
    vkpt_free(p->ref);
    p->free = NULL;
    p->ref = NULL;
    p->n_free = p->n_blocks = 0;
}

int32_t vkpt_kvpool_alloc(vkpt_kvpool *p)
{
    if (!p->n_free) return -1;
    uint32_t id = p->free[--p->n_free];
    assert(p->ref[id] == 0);
    p->ref[id] = 1;
    return (int32_t)id;
}

void vkpt_kvpool_ref(vkpt_kvpool *p, uint32_t id)
{
    assert(id < p->n_blocks && p->ref[id] > 0 && p->ref[id] < UINT16_MAX);
    p->ref[id]++;
}

void vkpt_kvpool_unref(vkpt_kvpool *p, uint32_t id)
{
    assert(id < p->n_blocks && p->ref[id] > 0);
    if (--p->ref[id] == 0) p->free[p->n_free++] = id;
}
