/* Device arbiter: engines that share a device (queue) take turns running
 * steps, in proportion to their weights, measured in tokens processed.
 *
 * Stride scheduling: each member has a virtual time advanced by tokens /
 * weight after each of its steps; among members waiting to step, the one
 * with the smallest virtual time goes next, one at a time. A member that was
 * idle rejoins at the current minimum (no credit saved up while idle), so a
 * lightly loaded endpoint is served at once and a flooded one gets exactly
 * its share. Provisioned throughput rides on this: weights are the
 * endpoints' provisioned tokens/s.
 *
 * A member that is behind but busy on the host (sampling, planning its next
 * step) is waited for briefly (HOLD_NS) before a member further ahead may
 * take the device: otherwise the heavier members, which step more often,
 * lose their turns to whoever happens to be queued. */
#define _GNU_SOURCE
#include "arbiter.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>
#include <string.h>

typedef struct member {
    bool used, waiting, running;
    bool active; /* has work: between its first acquire and vkpt__arbiter_idle */
    double weight, vtime;
} member;

#define MAX_MEMBERS 64
#define HOLD_NS     20000000ll /* 20 ms */

struct vkpt_arbiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    member m[MAX_MEMBERS];
    bool busy;
};

int vkpt_arbiter_create(vkpt_arbiter **out)
{
    vkpt_arbiter *a = vkpt_calloc(1, sizeof *a);
    if (!a) return vkpt_fail(VKPT_ENOMEM, "arbiter");
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    *out = a;
    return 0;
}

void vkpt_arbiter_destroy(vkpt_arbiter *a)
{
    if (!a) return;
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->cond);
    vkpt_free(a);
}

/* Smallest virtual time among members with work. */
static double min_vtime(const vkpt_arbiter *a, int except)
{
    double v = -1;
    for (int i = 0; i < MAX_MEMBERS; i++)
        if (i != except && a->m[i].used && a->m[i].active && (v < 0 || a->m[i].vtime < v))
            v = a->m[i].vtime;
    return v;
}

int vkpt__arbiter_join(vkpt_arbiter *a, double weight)
{
    pthread_mutex_lock(&a->lock);
    int id = -1;
    for (int i = 0; i < MAX_MEMBERS && id < 0; i++)
        if (!a->m[i].used) id = i;
    if (id >= 0) {
        memset(&a->m[id], 0, sizeof a->m[id]);
        a->m[id].used = true;
        a->m[id].weight = weight > 0 ? weight : 1;
    }
    pthread_mutex_unlock(&a->lock);
    return id >= 0
               ? id
               : vkpt_fail(VKPT_EFULL, "the device arbiter has %d engines already", MAX_MEMBERS);
}

void vkpt__arbiter_leave(vkpt_arbiter *a, int id)
{
    pthread_mutex_lock(&a->lock);
    a->m[id].used = false;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

void vkpt__arbiter_set_weight(vkpt_arbiter *a, int id, double weight)
{
    pthread_mutex_lock(&a->lock);
    if (weight > 0) a->m[id].weight = weight;
    pthread_mutex_unlock(&a->lock);
}

void vkpt__arbiter_acquire(vkpt_arbiter *a, int id)
{
    pthread_mutex_lock(&a->lock);
    member *me = &a->m[id];
    /* no credit for idle time: a member that had no work rejoins at the
     * minimum. One with work keeps its virtual time: raising it at every
     * turn would cost a member with small steps (an engine's decode) its
     * share against members with large ones (an embedder's batch), since
     * it would lose every tie it reaches after one step. */
    if (!me->active) {
        double floor = min_vtime(a, id);
        if (floor > me->vtime) me->vtime = floor;
    }
    me->waiting = true;
    me->active = true;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += HOLD_NS;
    if (until.tv_nsec >= 1000000000) until.tv_sec++, until.tv_nsec -= 1000000000;
    bool held_long_enough = false;
    for (;;) {
        bool mine = !a->busy, behind_busy = false;
        for (int i = 0; i < MAX_MEMBERS && mine; i++) {
            const member *o = &a->m[i];
            if (i == id || !o->used || !o->active) continue;
            bool before = o->vtime < me->vtime || (o->vtime == me->vtime && i < id);
            if (!before) continue;
            if (o->waiting)
                mine = false;
            else
                behind_busy = true;
        }
        if (mine && (!behind_busy || held_long_enough)) break;
        if (mine) {
            /* only a member busy on the host is ahead of us: wait for it a little */
            if (pthread_cond_timedwait(&a->cond, &a->lock, &until) == ETIMEDOUT)
                held_long_enough = true;
        } else {
            pthread_cond_wait(&a->cond, &a->lock);
        }
    }
    me->waiting = false;
    me->running = true;
    a->busy = true;
    pthread_mutex_unlock(&a->lock);
}

void vkpt__arbiter_idle(vkpt_arbiter *a, int id)
{
    pthread_mutex_lock(&a->lock);
    a->m[id].active = false;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

void vkpt__arbiter_release(vkpt_arbiter *a, int id, uint32_t tokens)
{
    pthread_mutex_lock(&a->lock);
    member *me = &a->m[id];
    me->vtime += (double)tokens / me->weight;
    me->running = false;
    a->busy = false;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
}
