/* engine/runtime: the KV block pool and the prefix cache (host-side
 * bookkeeping, no GPU): reference counts, LRU eviction of blocks only the
 * cache holds, chained lookups, and table deletions under churn checked
 * against a plain model of what must be cached. */
#define _GNU_SOURCE
#include "vk_fixture.h"

#include "kvpool.h"
#include "prefix.h"

#include <stdlib.h>
#include <string.h>

static void kvpool_counts_references(void **state)
{
    (void)state;
    vkpt_kvpool p;
    assert_int_equal(vkpt_kvpool_init(&p, 4), 0);
    int32_t a = vkpt_kvpool_alloc(&p), b = vkpt_kvpool_alloc(&p);
    assert_int_equal(a, 0); /* lowest ids first: deterministic */
    assert_int_equal(b, 1);
    vkpt_kvpool_ref(&p, (uint32_t)a);
    vkpt_kvpool_unref(&p, (uint32_t)a);
    assert_int_equal(p.n_free, 2);
    vkpt_kvpool_unref(&p, (uint32_t)a);
    assert_int_equal(p.n_free, 3);
    assert_int_equal(vkpt_kvpool_alloc(&p), a); /* the freed block comes back first */
    vkpt_kvpool_alloc(&p);
    vkpt_kvpool_alloc(&p);
    assert_int_equal(vkpt_kvpool_alloc(&p), -1);
    vkpt_kvpool_free(&p);
}

static void fill_tokens(int32_t *t, uint32_t seed)
{
    for (int i = 0; i < VKPT_PREFIX_BLOCK; i++)
        t[i] = (int32_t)((seed * 2654435761u + (uint32_t)i * 40503u) % 1000);
}

static void prefix_chain_lookup_and_eviction(void **state)
{
    (void)state;
    vkpt_kvpool p;
    vkpt_prefix pc;
    assert_int_equal(vkpt_kvpool_init(&p, 8), 0);
    assert_int_equal(vkpt_prefix_init(&pc, &p), 0);
    int32_t t0[16], t1[16];
    fill_tokens(t0, 1);
    fill_tokens(t1, 2);
    /* a sequence fills two blocks and registers them */
    int32_t b0 = vkpt_prefix_alloc(&pc), b1 = vkpt_prefix_alloc(&pc);
    uint64_t h0 = vkpt_prefix_hash(0, t0);
    assert_int_equal(vkpt_prefix_insert(&pc, 0, t0, (uint32_t)b0), 0);
    assert_int_equal(vkpt_prefix_insert(&pc, h0, t1, (uint32_t)b1), 0);
    assert_int_equal(vkpt_prefix_find(&pc, 0, t0), b0);
    assert_int_equal(vkpt_prefix_find(&pc, h0, t1), b1);
    assert_int_equal(vkpt_prefix_find(&pc, 0, t1), -1); /* same tokens, other position: miss */
    assert_int_equal(vkpt_prefix_available(&pc), 6);
    /* the sequence closes: its blocks stay cached and become evictable */
    vkpt_prefix_unref(&pc, (uint32_t)b0);
    vkpt_prefix_unref(&pc, (uint32_t)b1);
    assert_int_equal(vkpt_prefix_available(&pc), 8);
    assert_int_equal(pc.n_lru, 2);
    /* a new sequence adopts block 0: no longer evictable */
    vkpt_prefix_ref(&pc, (uint32_t)b0);
    assert_int_equal(pc.n_lru, 1);
    /* take every free block, then one more: the LRU block (b1) is evicted */
    for (int i = 0; i < 6; i++) assert_true(vkpt_prefix_alloc(&pc) >= 0);
    assert_int_equal(vkpt_prefix_alloc(&pc), b1);
    assert_int_equal(vkpt_prefix_find(&pc, h0, t1), -1);
    assert_int_equal(vkpt_prefix_find(&pc, 0, t0), b0); /* the adopted one survives */
    assert_int_equal(vkpt_prefix_alloc(&pc), -1);       /* nothing left */
    vkpt_prefix_free(&pc);
    vkpt_kvpool_free(&p);
}

/* Churn: random register / release / allocate; the cache must always find
 * exactly the contents it still holds, with the right blocks. */
static void prefix_table_survives_churn(void **state)
{
    (void)state;
    enum { NB = 64, ROUNDS = 20000 };
    vkpt_kvpool p;
    vkpt_prefix pc;
    assert_int_equal(vkpt_kvpool_init(&p, NB), 0);
    assert_int_equal(vkpt_prefix_init(&pc, &p), 0);
    uint32_t content[NB];    /* seed registered for each block, 0 = none */
    bool held[NB] = {false}; /* referenced by "a sequence" */
    memset(content, 0, sizeof content);
    vkpt_test_rng r;
    vkpt_test_rng_init(&r, 99);
    int32_t t[16];
    for (int round = 0; round < ROUNDS; round++) {
        uint64_t op = vkpt_test_rng_u64(&r) % 3;
        if (op == 0) { /* a sequence takes a block and registers new content */
            int32_t b = vkpt_prefix_alloc(&pc);
            if (b < 0) continue;
            for (int i = 0; i < NB; i++)
                if (content[i] && pc.entry_of[i] < 0) content[i] = 0; /* evicted meanwhile */
            uint32_t seed = (uint32_t)(vkpt_test_rng_u64(&r) % 5000) + 1;
            fill_tokens(t, seed);
            bool dup = false;
            for (int i = 0; i < NB; i++)
                if (content[i] == seed) dup = true;
            vkpt_prefix_insert(&pc, 0, t, (uint32_t)b);
            content[b] = dup ? 0 : seed;
            held[b] = true;
        } else if (op == 1) { /* a sequence lets a block go */
            int i = (int)(vkpt_test_rng_u64(&r) % NB);
            if (held[i]) {
                vkpt_prefix_unref(&pc, (uint32_t)i);
                held[i] = false;
            }
        } else { /* look everything up */
            for (int i = 0; i < NB; i++) {
                if (content[i] && pc.entry_of[i] < 0) content[i] = 0;
                if (!content[i]) continue;
                fill_tokens(t, content[i]);
                assert_int_equal(vkpt_prefix_find(&pc, 0, t), i);
            }
        }
        /* accounting: every block is free, evictable, or held */
        uint32_t n_held = 0;
        for (int i = 0; i < NB; i++) n_held += held[i];
        assert_int_equal(p.n_free + pc.n_lru + n_held, NB);
    }
    vkpt_prefix_free(&pc);
    vkpt_kvpool_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kvpool_counts_references),
        cmocka_unit_test(prefix_chain_lookup_and_eviction),
        cmocka_unit_test(prefix_table_survives_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
