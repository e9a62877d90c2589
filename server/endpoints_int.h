/* Provisioned endpoints, internals shared by endpoints.c (REST, configs,
 * persistence, config updates) and endpoints_rt.c (replicas, placement,
 * admission, autoscaling, metrics).
 *
 * Ownership: the server owns one srv_ep; it owns the endpoints; an endpoint
 * owns the served entities of its serving config (cur) and of the config
 * being applied (pend). An entity is reference-counted: its config holds
 * one reference, every request on it one, every job on it one; when it
 * leaves its config it is "retired" (its replicas drain) and it is freed
 * when the last reference goes. A replica is one engine (an embedder for
 * an llm/v1/embeddings model) on one device queue; loaded models are shared by every replica of the same
 * files on the same device and unloaded with the last one.
 *
 * Threads: everything here is loop-thread state except the model cache
 * (ep_model, under srv_ep.cache_mu), which the start/stop jobs use on
 * libuv's thread pool. */
#ifndef VKPT_SERVER_ENDPOINTS_INT_H
#define VKPT_SERVER_ENDPOINTS_INT_H

#include "embeddings.h"
#include "endpoints.h"
#include "request.h"
#include "server_int.h"
#include "vkpt/provision.h"
#include "vkpt/registry.h"

#include <cjson/cJSON.h>
#include <pthread.h>

/* Served entity deployment states (Databricks' ServedModelState.deployment). */
enum ep_deploy {
    EP_DEPLOY_CREATING = 0,
    EP_DEPLOY_READY,
    EP_DEPLOY_FAILED,
    EP_DEPLOY_RECOVERING, /* a replica failed; the others serve */
};

enum ep_replica_state {
    EP_REP_STARTING = 0, /* its start job runs */
    EP_REP_READY,        /* serving */
    EP_REP_DRAINING,     /* no new requests; stopped when its last one finishes */
    EP_REP_STOPPING,     /* its stop job runs */
};

/* One device queue replicas are placed on; its engines share the arbiter. */
typedef struct ep_devq {
    vkpt_device *dev;
    uint32_t dev_index, queue;
    vkpt_arbiter *arb;
    uint32_t n_replicas; /* placed here (members of arb) */
    double weight;       /* sum of their arbiter weights */
} ep_devq;

/* A loaded model shared by replicas (cache_mu guards every field). */
typedef struct ep_model {
    struct ep_model *next;
    char *source;
    vkpt_device *dev;
    vkpt_model *m;
    int refs;
    bool loading;
} ep_model;

typedef struct ep_replica {
    srv_list link; /* entity->replicas */
    struct ep_entity *ent;
    ep_devq *dq;
    ep_model *lm;
    vkpt_engine *engine;     /* generative models */
    vkpt_embedder *embedder; /* embedding models (entity->embed) */
    int state;               /* enum ep_replica_state */
    uint32_t in_flight;
    double weight;
    uint64_t t_start_ns;   /* start job queued */
    uint64_t tokens_final; /* engine tokens when it stopped */
    bool cold_start;       /* started while requests waited for it */
    bool lost;             /* its device was lost */
} ep_replica;

typedef struct ep_entity {
    struct srv_ep *st;
    struct ep_endpoint *ep; /* valid while not retired */
    char *ep_name;
    int refs;
    bool retired; /* out of its config: drains, then freed */
    /* config */
    char *name;        /* served entity name */
    char *entity_name; /* the registered model */
    uint32_t version;
    int64_t min_tps, max_tps;
    bool scale_to_zero;
    int traffic_pct;
    int wrr; /* smooth weighted round robin state */
    vkpt_model_version mv;
    bool embed;             /* task llm/v1/embeddings: replicas are embedders */
    int pooling, normalize; /* embedders' defaults from the version's metadata (0: the model's) */
    uint64_t chunk;         /* tokens/s of a chunk (the serving device's, or the test override) */
    int64_t created_ms;
    /* the request layer's view (tokenizer, template, context, metrics) */
    srv_model api;
    vkpt_tokenizer *tok;
    /* replicas */
    srv_list replicas;
    uint32_t n_ready, n_starting, n_draining;
    int deploy;        /* enum ep_deploy */
    char message[512]; /* deployment_state_message */
    /* admission */
    vkpt_bucket bucket;
    srv_list waiting; /* srv_gen.adm_link (srv_embed_adm.link when embed) of requests
                         waiting for a replica */
    uint32_t n_waiting;
    uint64_t cold_t0; /* first request waiting for the current cold start */
    /* autoscaling */
    double demand_tps, used_tps;
    uint64_t charged_since_tick; /* tokens charged at admission since the last tick */
    uint64_t tokens_prev;        /* tokens_total at the last tick */
    uint64_t below_since_ns, last_busy_ns;
    uint32_t in_flight;
    /* metrics */
    uint64_t tokens_retired; /* of replicas already stopped */
    uint64_t requests, throttled, cold_starts, cold_start_failures;
    uint64_t scale_ups, scale_downs, scale_to_zero_count;
    double cold_start_last_s;
    srv_hist queue_time, cold_start_time;
    char last_scale_reason[32];
} ep_entity;

typedef struct ep_endpoint {
    srv_list link;
    struct srv_ep *st;
    char *name;
    vkpt_endpoint_rec rec; /* as stored (generation for the next write) */
    char *task;
    ep_entity **cur; /* serving config */
    size_t n_cur;
    int cur_version;
    ep_entity **pend; /* config being applied */
    size_t n_pend;
    int pend_version;
    int64_t pend_start_ms;
    bool deleted;
    bool applying; /* a config op is validating (chunk sizes) */
} ep_endpoint;

typedef struct srv_ep {
    vkpt_server *srv;
    vkpt_server_endpoint_opts o;
    vkpt_store *store;
    ep_devq *dq;
    size_t n_dq;
    char device_uuid[33]; /* the first device: calibrations and chunk sizes are its */
    srv_list endpoints;
    pthread_mutex_t cache_mu;
    pthread_cond_t cache_cv;
    ep_model *models;
    uv_timer_t tick;
    bool tick_open, stopping;
    srv_list calib; /* pending calibrations (ep_calib) */
    uint64_t last_tick_ns;
    uint64_t scaling_actions;
} srv_ep;

/* ---- endpoints_rt.c ---------------------------------------------------------------- */

extern const srv_admission srv_ep_admission;       /* generative entities */
extern const srv_admission srv_ep_embed_admission; /* embedding entities */

/* Entity lifetime. */
void ep_entity_ref(ep_entity *e);
void ep_entity_unref(ep_entity *e);
/* Take the entity out of service: its replicas drain and stop, requests
 * waiting for a replica get 503; freed with its last reference. */
void ep_entity_retire(ep_entity *e, const char *why);
/* Start the replicas an entity needs when its config is applied (at least
 * one, so the config is known to load). */
void ep_entity_deploy(ep_entity *e);
/* Replicas ready (or scaled to zero with scale_to_zero) vs. still starting vs. failed. */
bool ep_entity_ready(const ep_entity *e);
uint64_t ep_entity_tokens(ep_entity *e);

/* The config's entities all deployed (or one failed): endpoints.c decides. */
void ep_on_entity_settled(ep_entity *e);

/* Calibration of a model version (cached in the store, or run once on the
 * thread pool for every waiter). cb runs on the loop thread with the chunk
 * size (0 and err on failure). */
typedef void (*ep_chunk_cb)(void *ud, uint64_t chunk, const vkpt_calibration *cal, int err,
                            const char *msg);
void ep_chunk_get(srv_ep *st, const vkpt_model_version *mv, bool force, ep_chunk_cb cb, void *ud);
/* The device calibrations are keyed by (32 hex digits). */
const char *ep_device_uuid(srv_ep *st);

/* Autoscaler tick. */
void ep_tick_start(srv_ep *st);
/* Histograms of a new entity. */
void ep_entity_metrics_init(ep_entity *e);
/* Stop every replica of `e` now, on this thread (server shutdown). */
void ep_entity_stop_now(ep_entity *e);

/* ---- endpoints.c ------------------------------------------------------------------- */

/* The endpoint by name, NULL when none. */
ep_endpoint *ep_find(srv_ep *st, const char *name);

#endif
