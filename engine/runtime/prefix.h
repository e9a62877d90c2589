/* Prefix cache: full KV blocks indexed by the content of the tokens they hold
 * and of everything before them (a hash chain over 16-token blocks), so a new
 * sequence that starts with the same tokens (a system prompt, few-shot
 * examples, chat history) adopts those blocks instead of recomputing them.
 *
 * The cache holds one reference on each registered block; a block only the
 * cache references is evictable, kept on an LRU list and given back when
 * the pool runs dry. Registered blocks are full and never written again.
 * Not thread-safe: owned by one runner. */
#ifndef VKPT_PREFIX_H
#define VKPT_PREFIX_H

#include "kvpool.h"

#include <stdbool.h>
#include <stdint.h>

#define VKPT_PREFIX_BLOCK 16

typedef struct vkpt_prefix_entry {
    uint64_t hash;   /* chain hash; 0 = empty slot */
    uint64_t parent; /* chain hash of the block before (0 for the first) */
    int32_t tokens[VKPT_PREFIX_BLOCK];
    uint32_t block;
} vkpt_prefix_entry;

typedef struct vkpt_prefix {
    vkpt_kvpool *pool;
    vkpt_prefix_entry *tab;
    uint32_t cap; /* power of two >= 2 * blocks */
    uint32_t n;
    int32_t *entry_of;            /* [blocks] entry index, -1 when not cached */
    int32_t *lru_prev, *lru_next; /* evictable blocks, oldest at head */
    int32_t lru_head, lru_tail;
    uint32_t n_lru;
    uint64_t hits, lookups;
} vkpt_prefix;

int vkpt_prefix_init(vkpt_prefix *pc, vkpt_kvpool *pool);
void vkpt_prefix_free(vkpt_prefix *pc);

/* Chain hash of the block after `parent` holding tokens[0..16). */
uint64_t vkpt_prefix_hash(uint64_t parent, const int32_t *tokens);
/* The cached block following `parent` with these tokens, or -1. Counts a
 * lookup, and a hit when found. */
int32_t vkpt_prefix_find(vkpt_prefix *pc, uint64_t parent, const int32_t *tokens);
/* Register `block` (full, referenced by a sequence) under (parent, tokens).
 * No-op when the content is already cached (in this or another block). */
int vkpt_prefix_insert(vkpt_prefix *pc, uint64_t parent, const int32_t *tokens, uint32_t block);

/* Reference-count changes go through these so the LRU list stays right. */
void vkpt_prefix_ref(vkpt_prefix *pc, uint32_t block);
void vkpt_prefix_unref(vkpt_prefix *pc, uint32_t block);
/* A free block, evicting the least recently used cached one when the pool
 * is empty; -1 when nothing is free or evictable. */
int32_t vkpt_prefix_alloc(vkpt_prefix *pc);
/* Blocks the pool can hand out now: free + evictable. */
uint32_t vkpt_prefix_available(const vkpt_prefix *pc);

#endif
