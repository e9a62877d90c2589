/* The KV-cache block pool: which fixed-size blocks of the cache are free,
 * with a reference count per block so sequences can share blocks (forked
 * choices, cached prefixes). Host-side bookkeeping only; the cache memory
 * itself lives in the runner. Not thread-safe: owned by one runner. */
#ifndef VKPT_KVPOOL_H
#define VKPT_KVPOOL_H

#include <stdbool.h>
#include <stdint.h>

typedef struct vkpt_kvpool {
    uint32_t n_blocks;
    uint32_t n_free;
    uint32_t *free; /* stack of free block ids */
    uint16_t *ref;  /* [n_blocks] references; 0 = free */
} vkpt_kvpool;

int vkpt_kvpool_init(vkpt_kvpool *p, uint32_t n_blocks);
void vkpt_kvpool_free(vkpt_kvpool *p);
/* A free block with one reference, or -1 when none is left. */
int32_t vkpt_kvpool_alloc(vkpt_kvpool *p);
/* Add a reference to a used block. */
void vkpt_kvpool_ref(vkpt_kvpool *p, uint32_t id);
/* Drop a reference; the block is free again at zero. */
void vkpt_kvpool_unref(vkpt_kvpool *p, uint32_t id);

#endif
