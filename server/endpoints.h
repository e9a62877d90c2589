/* Provisioned-throughput serving endpoints (Databricks' serving-endpoints
 * API) and the model registry's REST routes: what the rest of the server
 * sees of them. The endpoints themselves live in endpoints.c (REST, configs,
 * persistence) and endpoints_rt.c (replicas, admission, autoscaling); see
 * docs/PROVISIONING.md.
 *
 * Everything here runs on the loop thread. */
#ifndef VKPT_SERVER_ENDPOINTS_H
#define VKPT_SERVER_ENDPOINTS_H

#include "router.h"
#include "vkpt/embed.h"
#include "vkpt/engine.h"

struct srv_gen;
struct srv_embed_adm;
struct cJSON;

/* Admission of generation requests for a model that is a provisioned
 * endpoint's served entity (srv_model.adm). The request layer calls:
 *   start  when a request is accepted for the model (it holds the model
 *          until finish);
 *   admit  once the prompt is tokenized: SRV_ADMIT_GO with *engine set
 *          (submit now), SRV_ADMIT_WAIT (it is parked; srv_gen_resume
 *          follows, or srv_gen_fail), or SRV_ADMIT_REFUSED (already answered
 *          with srv_gen_fail, e.g. 429);
 *   finish exactly once when the request closes (after DONE, or before it
 *          was submitted), with g->prompt_tokens/completion_tokens final.
 * Embeddings requests (embeddings.c) go through the embed_* hooks the same
 * way, on their srv_embed_adm: admit charges a->tokens (the inputs' tokens)
 * and sets *embedder; WAIT ends in srv_embed_resume or srv_embed_fail;
 * finish has a->tokens_done (embedded) and a->queue_ns. A model whose
 * admission has no embed hooks generates text; one whose generation hooks
 * refuse every request (400) embeds. */
enum { SRV_ADMIT_GO = 0, SRV_ADMIT_WAIT = 1, SRV_ADMIT_REFUSED = 2 };
typedef struct srv_admission {
    void (*start)(struct srv_gen *g);
    int (*admit)(struct srv_gen *g, vkpt_engine **engine);
    void (*finish)(struct srv_gen *g);
    void (*embed_start)(struct srv_embed_adm *a);
    int (*embed_admit)(struct srv_embed_adm *a, vkpt_embedder **embedder);
    void (*embed_finish)(struct srv_embed_adm *a);
} srv_admission;

/* The served entity behind endpoint `name` for one request (chosen by the
 * endpoint's traffic split), or NULL when no endpoint has that name or it
 * has no serving config yet. */
struct srv_model *srv_ep_find_model(vkpt_server *s, const char *name);
/* Append the endpoints as OpenAI model objects to `data` (a cJSON array). */
void srv_ep_list_models(vkpt_server *s, struct cJSON *data);
/* True when endpoints are enabled (vkpt_server_enable_endpoints). */
bool srv_ep_enabled(const vkpt_server *s);
/* Lifecycle hooks of server.c: start (handles on the loop, restore stored
 * endpoints; before the loop thread runs), stop (the drain is over: close
 * handles), destroy (after the loop: replicas, models, arbiters). */
int srv_ep_start(vkpt_server *s);
void srv_ep_stop(vkpt_server *s);
void srv_ep_destroy(vkpt_server *s);
/* Per-endpoint metrics for GET /metrics (`only` NULL: every endpoint). */
void srv_ep_metrics(vkpt_server *s, srv_buf *o, const char *only);

/* A Databricks-shaped error, {"error_code": "...", "message": "..."}, with
 * `extra_headers` (NULL or "Name: value\r\n" lines). Ends the request. */
void srv_conn_db_error(srv_conn *c, int status, const char *error_code, const char *extra_headers,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* An error in the route's shape: Databricks' when `db` (its code from the
 * status), else OpenAI's with `param` and `code`; `hdr` is "" or header
 * lines (served-model-name, Retry-After). Ends the request. */
void srv_conn_error_shaped(srv_conn *c, bool db, int status, const char *param, const char *code,
                           const char *msg, const char *hdr);
/* The Databricks error code for an HTTP status (INVALID_PARAMETER_VALUE,
 * RESOURCE_DOES_NOT_EXIST, REQUEST_LIMIT_EXCEEDED, ...). */
const char *srv_db_error_code(int status);

/* Handlers (router.h's table). */
void srv_h_ep_create(srv_ctx *ctx);
void srv_h_ep_list(srv_ctx *ctx);
void srv_h_ep_get(srv_ctx *ctx);
void srv_h_ep_delete(srv_ctx *ctx);
void srv_h_ep_update(srv_ctx *ctx);
void srv_h_ep_metrics(srv_ctx *ctx);
void srv_h_ep_optinfo(srv_ctx *ctx);
void srv_h_ep_invoke(srv_ctx *ctx);
void srv_h_reg_list(srv_ctx *ctx);
void srv_h_reg_create(srv_ctx *ctx);
void srv_h_reg_get(srv_ctx *ctx);
void srv_h_reg_version(srv_ctx *ctx);
void srv_h_reg_delete_version(srv_ctx *ctx);

#endif
