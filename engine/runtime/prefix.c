/* Prefix cache: an open-addressing table (linear probing, backward-shift
 * deletion) from chain hash to block, plus an LRU list of the blocks only the
 * cache references.
 *
 * Invariants: a cached block has an entry and one reference held by the
 * cache; it is on the LRU list exactly when that is its only reference. An
 * entry's tokens are compared on lookup, so a hash collision is a miss, never
 * wrong KV. */
#include "prefix.h"

#include "vkpt/base.h"

#include <assert.h>
#include <string.h>

int vkpt_prefix_init(vkpt_prefix *pc, vkpt_kvpool *pool)
{
    memset(pc, 0, sizeof *pc);
    pc->pool = pool;
    uint32_t cap = 16;
    while (cap < 2 * pool->n_blocks) cap *= 2;
    pc->cap = cap;
    pc->tab = vkpt_calloc(cap, sizeof *pc->tab);
    uint32_t nb = pool->n_blocks ? pool->n_blocks : 1;
    pc->entry_of = vkpt_malloc(nb * sizeof *pc->entry_of);
    pc->lru_prev = vkpt_malloc(nb * sizeof *pc->lru_prev);
    pc->lru_next = vkpt_malloc(nb * sizeof *pc->lru_next);
    if (!pc->tab || !pc->entry_of || !pc->lru_prev || !pc->lru_next) {
        vkpt_prefix_free(pc);
        return vkpt_fail(VKPT_ENOMEM, "prefix cache for %u blocks", pool->n_blocks);
    }
    for (uint32_t i = 0; i < nb; i++) pc->entry_of[i] = pc->lru_prev[i] = pc->lru_next[i] = -1;
    pc->lru_head = pc->lru_tail = -1;
    return 0;
}

void vkpt_prefix_free(vkpt_prefix *pc)
{
    vkpt_free(pc->tab);
    vkpt_free(pc->entry_of);
    vkpt_free(pc->lru_prev);
    vkpt_free(pc->lru_next);
    memset(pc, 0, sizeof *pc);
}

uint64_t vkpt_prefix_hash(uint64_t parent, const int32_t *tokens)
{
    uint64_t h = parent ^ 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < VKPT_PREFIX_BLOCK; i++) {
        h ^= (uint32_t)tokens[i];
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 33;
    }
    return h ? h : 1; /* 0 marks an empty slot */
}

static uint32_t slot_of(const vkpt_prefix *pc, uint64_t hash)
{
    return (uint32_t)(hash ^ (hash >> 32)) & (pc->cap - 1);
}

static void lru_remove(vkpt_prefix *pc, uint32_t b)
{
    int32_t p = pc->lru_prev[b], n = pc->lru_next[b];
    if (p >= 0)
        pc->lru_next[p] = n;
    else
        pc->lru_head = n;
    if (n >= 0)
        pc->lru_prev[n] = p;
    else
        pc->lru_tail = p;
    pc->lru_prev[b] = pc->lru_next[b] = -1;
    pc->n_lru--;
}

static void lru_push(vkpt_prefix *pc, uint32_t b)
{
    pc->lru_prev[b] = pc->lru_tail;
    pc->lru_next[b] = -1;
    if (pc->lru_tail >= 0)
        pc->lru_next[pc->lru_tail] = (int32_t)b;
    else
        pc->lru_head = (int32_t)b;
    pc->lru_tail = (int32_t)b;
    pc->n_lru++;
}

static bool on_lru(const vkpt_prefix *pc, uint32_t b)
{
    return pc->lru_prev[b] >= 0 || pc->lru_head == (int32_t)b;
}

int32_t vkpt_prefix_find(vkpt_prefix *pc, uint64_t parent, const int32_t *tokens)
{
    pc->lookups++;
    uint64_t h = vkpt_prefix_hash(parent, tokens);
    for (uint32_t i = slot_of(pc, h); pc->tab[i].hash; i = (i + 1) & (pc->cap - 1)) {
        const vkpt_prefix_entry *e = &pc->tab[i];
        if (e->hash == h && e->parent == parent && !memcmp(e->tokens, tokens, sizeof e->tokens)) {
            pc->hits++;
            return (int32_t)e->block;
        }
    }
    return -1;
}

int vkpt_prefix_insert(vkpt_prefix *pc, uint64_t parent, const int32_t *tokens, uint32_t block)
{
    if (pc->entry_of[block] >= 0) return 0; /* this block is cached already */
    uint64_t h = vkpt_prefix_hash(parent, tokens);
    uint32_t i = slot_of(pc, h);
    for (; pc->tab[i].hash; i = (i + 1) & (pc->cap - 1))
        if (pc->tab[i].hash == h && pc->tab[i].parent == parent &&
            !memcmp(pc->tab[i].tokens, tokens, sizeof pc->tab[i].tokens))
            return 0; /* the same content lives in another block */
    if ((pc->n + 1) * 2 > pc->cap)
        return 0; /* full: only with more blocks than the table was sized for */
    vkpt_prefix_entry *e = &pc->tab[i];
    e->hash = h;
    e->parent = parent;
    memcpy(e->tokens, tokens, sizeof e->tokens);
    e->block = block;
    pc->entry_of[block] = (int32_t)i;
    pc->n++;
    vkpt_kvpool_ref(pc->pool, block); /* the cache's own reference */
    return 0;
}

/* Drop block b's entry (backward-shift deletion keeps probe chains whole). */
static void entry_remove(vkpt_prefix *pc, uint32_t b)
{
    uint32_t i = (uint32_t)pc->entry_of[b];
    pc->entry_of[b] = -1;
    pc->n--;
    uint32_t j = i;
    for (;;) {
        pc->tab[i].hash = 0;
        for (;;) {
            j = (j + 1) & (pc->cap - 1);
            if (!pc->tab[j].hash) return;
            uint32_t home = slot_of(pc, pc->tab[j].hash);
            /* can the entry at j move to the hole at i? (i cyclically in [home, j)) */
            bool movable = i <= j ? (home <= i || home > j) : (home <= i && home > j);
            if (movable) break;
        }
        pc->tab[i] = pc->tab[j];
        pc->entry_of[pc->tab[i].block] = (int32_t)i;
        i = j;
    }
}

void vkpt_prefix_ref(vkpt_prefix *pc, uint32_t b)
{
    if (on_lru(pc, b)) lru_remove(pc, b);
    vkpt_kvpool_ref(pc->pool, b);
}

void vkpt_prefix_unref(vkpt_prefix *pc, uint32_t b)
{
    vkpt_kvpool_unref(pc->pool, b);
    /* only the cache's reference left: evictable, newest at the tail */
    if (pc->entry_of[b] >= 0 && pc->pool->ref[b] == 1) lru_push(pc, b);
}

int32_t vkpt_prefix_alloc(vkpt_prefix *pc)
{
    int32_t b = vkpt_kvpool_alloc(pc->pool);
    if (b >= 0 || pc->lru_head < 0) return b;
    uint32_t victim = (uint32_t)pc->lru_head;
    lru_remove(pc, victim);
    entry_remove(pc, victim);
    vkpt_kvpool_unref(pc->pool, victim);
    return vkpt_kvpool_alloc(pc->pool);
}

uint32_t vkpt_prefix_available(const vkpt_prefix *pc)
{
    return pc->pool->n_free + pc->n_lru;
}
