/* vkpt HTTP server: an OpenAI-compatible API (chat completions, completions,
 * models, tokenize/detokenize) plus /health, /ready and Prometheus /metrics,
 * over engines (include/vkpt/engine.h) that the caller creates.
 *
 * Threads: the server runs one libuv loop on its own thread. That thread does
 * all socket work, HTTP parsing, JSON, tokenization hand-off, detokenization
 * and stop strings; it never touches the GPU. Engine threads only post events
 * into a request's queue and wake the loop (uv_async_send); they never touch
 * sockets.
 *
 * Lifetime: create -> add models -> start -> (serve) -> stop or a signal ->
 * wait -> destroy. Engines must outlive the server (destroy the server
 * first). Stopping is graceful: the listener closes, idle connections close,
 * requests in flight finish (until opts.shutdown_timeout_ms, then they are
 * canceled), and wait() returns.
 */
#ifndef VKPT_SERVER_H
#define VKPT_SERVER_H

#include "vkpt/embed.h"
#include "vkpt/engine.h"
#include "vkpt/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkpt_server vkpt_server;

typedef struct vkpt_server_opts {
    const char *host; /* address to bind (NULL: "127.0.0.1"); IPv4 or IPv6 literal */
    int port;         /* TCP port (0: any free port, see vkpt_server_port; -1: 8080) */
    /* API keys: when any is set, every route except /health needs
     * "Authorization: Bearer KEY" with one of them. Copied. */
    const char *const *api_keys;
    size_t n_api_keys;
    size_t max_body_bytes;      /* request body limit (0: 8 MiB) */
    uint32_t header_timeout_ms; /* request line + headers must arrive within (0: 10 s) */
    uint32_t body_timeout_ms;   /* the body must arrive within, after the headers (0: 30 s) */
    uint32_t idle_timeout_ms;   /* keep-alive connection without a request (0: 30 s) */
    uint32_t
        shutdown_timeout_ms;  /* drain deadline before in-flight requests are canceled (0: 30 s) */
    uint32_t max_connections; /* open connections (0: 1024); more get 503 */
    bool handle_signals;      /* SIGINT/SIGTERM start a graceful stop (a second one cancels) */
    bool quiet;               /* no per-request log line */
} vkpt_server_opts;

/* Validates and copies the options. VKPT_EINVAL names a bad option. */
int vkpt_server_create(const vkpt_server_opts *opts, vkpt_server **out);
/* Stops the loop if it still runs (as vkpt_server_stop + wait), frees
 * everything. Accepts NULL. */
void vkpt_server_destroy(vkpt_server *s);

typedef struct vkpt_server_model_opts {
    /* Jinja chat template source that replaces the tokenizer's (NULL: the
     * tokenizer's; a model without one gets a plain template that joins the
     * message contents with newlines after BOS). Copied and parsed here. */
    const char *chat_template;
    /* A system message put first when a chat request has none (NULL: none).
     * Its tokens count in usage.prompt_tokens. */
    const char *system_prompt;
    uint32_t n_ctx; /* the engine's context length, for validation and max_tokens defaults */
    const char *const *aliases; /* other names that address this model (e.g. the path) */
    size_t n_aliases;
} vkpt_server_model_opts;

/* Serve `engine` under the model id `id` (and its aliases). Before start
 * only. The first model added is the default for requests without "model".
 * VKPT_EEXISTS when a name is taken; VKPT_EPARSE for a bad chat template. */
int vkpt_server_add_model(vkpt_server *s, const char *id, vkpt_engine *engine,
                          const vkpt_server_model_opts *opts);

/* Serve an embedding model's `embedder` under `id` for POST /v1/embeddings
 * (its chat and completion routes answer 400). Same rules as add_model;
 * opts.chat_template and system_prompt are ignored, n_ctx is the
 * embedder's longest input. The embedder must outlive the server. */
int vkpt_server_add_embedder(vkpt_server *s, const char *id, vkpt_embedder *embedder,
                             const vkpt_server_model_opts *opts);

/* Provisioned-throughput endpoints (Databricks' serving-endpoints API,
 * docs/PROVISIONING.md): endpoints and registered models live in `store`;
 * replicas of the endpoints' models are placed on the devices' compute
 * queues (one device arbiter per queue). */
typedef struct vkpt_server_endpoint_opts {
    vkpt_store *store;           /* must outlive the server */
    vkpt_device *const *devices; /* devices replicas may use (must outlive the server) */
    size_t n_devices;
    /* each replica's engine (0: the engine's defaults; n_ctx also capped by the model) */
    uint32_t n_ctx, max_seqs, kv_tokens, max_step_tokens;
    bool no_prefix_cache, batch_invariant;
    double autoscale_interval_s;  /* autoscaler tick (0: 1 s) */
    double scale_down_delay_s;    /* lower demand this long before a replica goes (0: 60 s) */
    double scale_to_zero_delay_s; /* idle this long before scaling to zero (0: 900 s) */
    double calibration_level_s;   /* calibration time per concurrency level (0: 10 s) */
    /* TESTS ONLY: every model's throughput chunk size in tokens/s instead of
     * the measured one (0: measured). Lets a test provision fractions of a
     * slow device; optimization info then reports this value. */
    uint64_t test_chunk_size;
} vkpt_server_endpoint_opts;

/* Enable endpoints (before start). The stored endpoints are restored when
 * the server starts. VKPT_EINVAL without a store or a device. */
int vkpt_server_enable_endpoints(vkpt_server *s, const vkpt_server_endpoint_opts *opts);
/* Endpoints stored in `store` (for vkpt serve's default model choice). */
size_t vkpt_server_stored_endpoints(vkpt_store *store);

/* Bind and listen, then start the loop thread. Fails (and nothing runs) with
 * VKPT_EIO and the reason when the address cannot be bound. */
int vkpt_server_start(vkpt_server *s);
/* The bound port (after start). */
int vkpt_server_port(const vkpt_server *s);
/* Begin a graceful stop; thread-safe and async-signal-safe, idempotent. */
void vkpt_server_stop(vkpt_server *s);
/* Block until the loop has stopped. Returns 0, or the error that stopped it. */
int vkpt_server_wait(vkpt_server *s);

#ifdef __cplusplus
}
#endif
#endif
