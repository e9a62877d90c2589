/* engine/sched internals: the device arbiter's member interface, used by the
 * engine around each step. The public handle is in include/vkpt/engine.h. */
#ifndef VKPT_ARBITER_H
#define VKPT_ARBITER_H

#include "vkpt/engine.h"

/* Join with a weight (> 0); returns a member id or a negative error. */
int vkpt__arbiter_join(vkpt_arbiter *a, double weight);
void vkpt__arbiter_leave(vkpt_arbiter *a, int id);
void vkpt__arbiter_set_weight(vkpt_arbiter *a, int id, double weight);
/* Block until it is this member's turn to run a step. */
void vkpt__arbiter_acquire(vkpt_arbiter *a, int id);
/* The member has no work for now (it gets no credit while idle). */
void vkpt__arbiter_idle(vkpt_arbiter *a, int id);
/* The step processed `tokens` tokens; let the next member run. */
void vkpt__arbiter_release(vkpt_arbiter *a, int id, uint32_t tokens);

#endif
