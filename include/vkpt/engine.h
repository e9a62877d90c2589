/* vkpt serving engine: one replica = one model on one device queue, with a
 * scheduler thread doing continuous batching over the paged KV cache
 * (chunked prefill, preemption when the cache is full, prefix caching).
 *
 * The server hands requests in with vkpt_engine_submit from any thread and
 * receives events through a callback that runs ON THE ENGINE THREAD: it must
 * not block (copy what it needs, wake its own loop, e.g. uv_async_send).
 * The engine never touches sockets; the server never touches the GPU.
 *
 * Request lifetime: submit -> events (TOKEN..., then exactly one DONE per
 * request) -> vkpt_request_release by the submitter, after DONE. Cancel is
 * allowed any time before release; the engine frees the request's KV blocks
 * at its next step and sends DONE with VKPT_FINISH_CANCELED.
 */
#ifndef VKPT_ENGINE_H
#define VKPT_ENGINE_H

#include "vkpt/model.h"
#include "vkpt/sampler.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkpt_engine vkpt_engine;
typedef struct vkpt_request vkpt_request;

/* A device arbiter shares one device between engines in proportion to their
 * weights, counted in tokens processed (input + output): with every engine
 * busy, engine i gets weight_i / sum(weights) of the device's token
 * throughput; an engine with little load is served at once. Engines on the
 * same device and queue should share one arbiter. Destroy it after the
 * engines that use it. */
typedef struct vkpt_arbiter vkpt_arbiter;
int vkpt_arbiter_create(vkpt_arbiter **out);
void vkpt_arbiter_destroy(vkpt_arbiter *a);

typedef struct vkpt_engine_opts {
    uint32_t n_ctx;           /* max tokens per sequence (0: model's, capped at 4096) */
    uint32_t max_seqs;        /* sequences decoding at once (0: 64) */
    uint32_t max_step_tokens; /* token budget of one step (0: 512) */
    uint32_t kv_tokens; /* KV-cache capacity in tokens (0: n_ctx * max_seqs / 2, at least n_ctx) */
    uint32_t queue;     /* device compute queue */
    bool no_prefix_cache;
    bool batch_invariant;  /* results independent of batching (default on in vkpt serve) */
    vkpt_arbiter *arbiter; /* shared with other engines on the device, or NULL */
    double weight;         /* share under the arbiter (> 0; provisioned tokens/s) */
} vkpt_engine_opts;

/* Create the engine over a loaded model and start its thread. The model
 * must outlive the engine. */
int vkpt_engine_create(vkpt_model *m, const vkpt_engine_opts *opts, vkpt_engine **out);
/* Stop the thread: queued and running requests get DONE with
 * VKPT_FINISH_CANCELED first. */
void vkpt_engine_destroy(vkpt_engine *e);
const vkpt_model *vkpt_engine_model(const vkpt_engine *e);
/* The context length the engine serves: prompt + max_tokens must fit it. */
uint32_t vkpt_engine_n_ctx(const vkpt_engine *e);
/* Change the engine's share under its arbiter (e.g. after a config update). */
void vkpt_engine_set_weight(vkpt_engine *e, double weight);

#define VKPT_MAX_CHOICES      5
#define VKPT_MAX_TOP_LOGPROBS 20
#define VKPT_MAX_STOP_IDS     16

typedef struct vkpt_gen_params {
    vkpt_sampling sampling;
    uint32_t max_tokens;   /* >= 1 */
    uint32_t n;            /* choices, 1..VKPT_MAX_CHOICES; they share the prompt's KV */
    bool logprobs;         /* report the chosen token's logprob */
    uint32_t top_logprobs; /* 0..VKPT_MAX_TOP_LOGPROBS alternatives per token */
    int32_t stop_ids[VKPT_MAX_STOP_IDS]; /* extra stop token ids */
    uint32_t n_stop_ids;
    bool ignore_eos; /* do not stop at the tokenizer's end-of-generation ids */
} vkpt_gen_params;

enum vkpt_event_type { VKPT_EV_TOKEN = 1, VKPT_EV_DONE = 2 };
enum vkpt_finish {
    VKPT_FINISH_NONE = 0,
    VKPT_FINISH_STOP = 1,     /* an end-of-generation or stop token (not emitted as text) */
    VKPT_FINISH_LENGTH = 2,   /* max_tokens or the context was reached */
    VKPT_FINISH_CANCELED = 3, /* vkpt_request_cancel or engine shutdown */
    VKPT_FINISH_ERROR = 4,    /* see err */
};

typedef struct vkpt_gen_event {
    int type;        /* enum vkpt_event_type */
    uint32_t choice; /* 0..n-1 */
    /* TOKEN */
    int32_t token;
    float logprob;
    uint32_t n_top;
    int32_t top_ids[VKPT_MAX_TOP_LOGPROBS];
    float top_logprobs[VKPT_MAX_TOP_LOGPROBS];
    /* DONE (one per request, after every choice finished; finish per choice) */
    int finish[VKPT_MAX_CHOICES];
    int err;                    /* VKPT_E* when a choice finished with VKPT_FINISH_ERROR */
    uint32_t prompt_tokens;     /* prompt length */
    uint32_t cached_tokens;     /* prompt tokens served from the prefix cache */
    uint32_t completion_tokens; /* over all choices */
    uint64_t queued_ns, first_token_ns, done_ns; /* since submit */
} vkpt_gen_event;

/* Runs on the engine thread; must not block or call back into the engine
 * (except vkpt_request_cancel). */
typedef void (*vkpt_gen_cb)(const vkpt_gen_event *ev, void *ud);

/* Queue a generation. The prompt is copied. Fails fast (and no event is
 * sent) with VKPT_ERANGE when prompt + max_tokens cannot fit the context,
 * VKPT_EINVAL for bad parameters, VKPT_ESTATE when the engine is stopping or
 * its device was lost. */
int vkpt_engine_submit(vkpt_engine *e, const int32_t *prompt, uint32_t n_prompt,
                       const vkpt_gen_params *p, vkpt_gen_cb cb, void *ud, vkpt_request **out);
/* Ask the engine to stop this request (thread-safe, idempotent). */
void vkpt_request_cancel(vkpt_request *rq);
/* Stop one choice only (e.g. it met a stop string); it finishes with
 * VKPT_FINISH_STOP and its KV blocks are freed at the next step, while the
 * other choices go on. Thread-safe, idempotent; choice >= n is ignored. */
void vkpt_request_cancel_choice(vkpt_request *rq, uint32_t choice);
/* The submitter is done with the handle: after its DONE event, or before to
 * give up (it is then canceled and freed by the engine). */
void vkpt_request_release(vkpt_request *rq);

typedef struct vkpt_engine_stats {
    uint32_t queued;                          /* waiting for their first step */
    uint32_t running;                         /* requests with KV blocks */
    uint32_t kv_blocks_total, kv_blocks_used; /* used: held by requests */
    uint32_t kv_blocks_cached;                /* in the prefix cache (evictable when unused) */
    uint64_t prefix_hits, prefix_lookups;     /* blocks reused / looked up */
    uint64_t prompt_tokens, generated_tokens;
    uint64_t steps, preemptions;
    uint64_t requests_done, requests_canceled, requests_failed;
    bool device_lost;
} vkpt_engine_stats;
void vkpt_engine_get_stats(vkpt_engine *e, vkpt_engine_stats *out);

#ifdef __cplusplus
}
#endif
#endif
