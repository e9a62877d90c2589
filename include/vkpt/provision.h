/* vkpt provisioning: the arithmetic of provisioned throughput, kept apart
 * from any server so it can be tested alone (docs/PROVISIONING.md).
 *
 *  - chunks: a model's throughput_chunk_size is the tokens/s one replica
 *    sustains on a device, measured by vkpt_calibrate and rounded down by
 *    vkpt_chunk_round; an endpoint's min/max provisioned throughput are
 *    whole multiples of it (vkpt_provision_check);
 *  - the rate limit above max: a token bucket in tokens/s that admits a
 *    request while its level is positive and then debits the request's whole
 *    charge, so a request larger than the burst still passes, at the cost of
 *    a debt the next requests wait out (Retry-After is that wait);
 *  - the autoscaler's decision for one served entity, from its demand, its
 *    band and how long it has been quiet (vkpt_autoscale_decide).
 */
#ifndef VKPT_PROVISION_H
#define VKPT_PROVISION_H

#include "vkpt/engine.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- chunks ------------------------------------------------------------------------ */

/* Tokens/s rounded down to two significant figures (1234.5 -> 1200, 97.6 ->
 * 97, 0.4 -> 1): a clean number below what was measured. At least 1. */
uint64_t vkpt_chunk_round(double tokens_per_s);

/* Check an entity's band against the chunk size: min and max whole
 * multiples of `chunk`, max >= chunk, min <= max, min 0 only with scale to
 * zero. 0, or VKPT_EINVAL with `msg` naming the field and the valid values. */
int vkpt_provision_check(uint64_t chunk, int64_t min_tps, int64_t max_tps, bool scale_to_zero,
                         char *msg, size_t cap);

/* ---- token bucket ------------------------------------------------------------------ */

typedef struct vkpt_bucket {
    double rate;   /* tokens/s refilled: the max provisioned throughput */
    double burst;  /* the level's cap, tokens */
    double level;  /* tokens; negative while in debt */
    uint64_t t_ns; /* last refill */
} vkpt_bucket;

/* A full bucket of `rate` tokens/s holding `burst_s` seconds of it. */
void vkpt_bucket_init(vkpt_bucket *b, double rate, double burst_s, uint64_t now_ns);
/* Change the rate (a config update); the level is kept, capped at the new burst. */
void vkpt_bucket_set_rate(vkpt_bucket *b, double rate, double burst_s, uint64_t now_ns);
/* Admit a request that may use `tokens` (prompt + max_tokens): true when the
 * level is positive (then debited by all of it), false with *retry_after_s
 * the seconds until the level is positive again (>= 0.001). */
bool vkpt_bucket_take(vkpt_bucket *b, double tokens, uint64_t now_ns, double *retry_after_s);
/* Give back tokens charged but not used (max_tokens not generated). */
void vkpt_bucket_refund(vkpt_bucket *b, double tokens, uint64_t now_ns);
/* The level now (refilled). */
double vkpt_bucket_level(vkpt_bucket *b, uint64_t now_ns);

/* ---- autoscaling ----------------------------------------------------------------------- */

typedef struct vkpt_scale_in {
    uint32_t replicas;     /* serving or starting */
    uint32_t min_replicas; /* min_provisioned_throughput / chunk */
    uint32_t max_replicas; /* max_provisioned_throughput / chunk */
    bool scale_to_zero;
    double demand_tps;  /* tokens/s asked for (admitted charges, smoothed) */
    double chunk_tps;   /* what one replica sustains */
    uint32_t waiting;   /* requests waiting for a replica (cold start); at zero
                               replicas only these bring one back */
    uint32_t saturated; /* replicas whose batch is full (requests queued inside) */
    double below_s;     /* seconds the demand has needed fewer replicas than there are */
    double idle_s;      /* seconds without a request in flight or arriving */
    double scale_down_delay_s;
    double scale_to_zero_delay_s;
} vkpt_scale_in;

typedef struct vkpt_scale_out {
    uint32_t target;    /* replicas wanted */
    const char *reason; /* "min", "max", "cold_start", "demand", "saturated", "low_demand",
                           "idle", "steady" */
} vkpt_scale_out;

/* Replicas wanted: never below min (0 only after scale_to_zero_delay_s idle
 * with scale to zero on), never above max; up at once when demand exceeds
 * what the replicas sustain (or a replica's batch is full, or requests wait
 * for a cold start); down one at a time after scale_down_delay_s of lower
 * demand. */
void vkpt_autoscale_decide(const vkpt_scale_in *in, vkpt_scale_out *out);

/* ---- calibration ------------------------------------------------------------------------- */

typedef struct vkpt_calib_opts {
    /* The workload: requests of input_tokens prompt tokens generating exactly
     * output_tokens (0: min(2048, ctx * 3/4) and min(256, ctx / 8)). For an
     * encoder (embedding model): inputs of input_tokens (0: min(512, ctx))
     * and no output (output_tokens must be 0). */
    uint32_t input_tokens, output_tokens;
    /* The engine's context (0: the model's, at most 4096); for an encoder
     * the longest input (0: its position table, at most 8192). */
    uint32_t n_ctx;
    /* An encoder's embedder (vkpt_embedder_opts max_seqs, max_batch_tokens;
     * 0: its defaults), as the replicas that will serve it run. */
    uint32_t embed_max_seqs, embed_max_batch_tokens;
    uint32_t max_concurrency; /* highest level tried (0: 64) */
    double level_seconds;     /* time per concurrency level (0: 10) */
    uint32_t queue;           /* device queue */
    /* Called after each level (may be NULL). */
    void (*progress)(void *ud, uint32_t concurrency, double tokens_per_s);
    void *ud;
} vkpt_calib_opts;

#define VKPT_CALIB_MAX_LEVELS 12

typedef struct vkpt_calib_result {
    double tokens_per_s;  /* the best level's input + output tokens per second */
    bool encoder;         /* an embedding model: input tokens embedded per second */
    uint32_t concurrency; /* that level */
    uint64_t chunk_size;  /* vkpt_chunk_round(tokens_per_s) */
    uint32_t input_tokens, output_tokens, n_ctx;
    double seconds; /* the whole run */
    uint32_t n_levels;
    struct {
        uint32_t concurrency;
        double tokens_per_s;
    } levels[VKPT_CALIB_MAX_LEVELS];
} vkpt_calib_result;

/* Measure the tokens/s one replica of `m` sustains on its device: an engine
 * (no prefix cache) is kept busy with `c` requests of the workload (each
 * replaced as it finishes) at c = 1, 2, 4, ... while the KV cache holds them
 * all; a level's rate is the engine's prompt + generated tokens between its
 * first and last completion (level_seconds at least, up to 6x that until
 * the window spans half of it); levels stop when two in a row gain less than
 * 5% over the best. An encoder (vkpt_model_info.causal false) is measured
 * the same way on an embedder (batch-invariant, as vkpt serve runs it) with
 * `c` inputs in flight, counting input tokens embedded, up to
 * max_concurrency. Blocks for the whole run. VKPT_ERANGE for a workload
 * that does not fit the context. */
int vkpt_calibrate(vkpt_model *m, const vkpt_calib_opts *opts, vkpt_calib_result *out);

#ifdef __cplusplus
}
#endif
#endif
