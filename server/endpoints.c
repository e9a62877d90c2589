/* Provisioned endpoints: Databricks' serving-endpoints REST API, the model
 * registry's routes, configs (parse, validate against the measured chunk
 * size, store) and config updates (docs/PROVISIONING.md).
 *
 * A config change is an operation that runs in steps on the loop thread:
 * parse and check the body; resolve each served entity's model version in
 * the store; get each model's chunk size (the store's calibration cache, or
 * a calibration on the thread pool); check the provisioned bands; write the
 * endpoint to the store with the new config pending (IN_PROGRESS) and answer;
 * start the new entities' replicas. When every new entity has settled, the
 * update commits in one store write (the new config serves, the old one's
 * replicas drain) or fails (UPDATE_FAILED with the message; the old config
 * keeps serving). After a crash the stored endpoint comes back as it was
 * written: its serving config restarts, and a pending config is applied
 * again. */
#include "endpoints_int.h"

#include "openai.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EP_MAX_ENTITIES 8
#define EP_NAME_MAX     63

enum { OP_CREATE, OP_UPDATE, OP_RESTORE };

typedef struct ent_spec {
    char name[128];
    char entity_name[200];
    uint32_t version;
    int64_t min_tps, max_tps;
    bool scale_to_zero;
    int pct;
} ent_spec;

typedef struct cfg_spec {
    ent_spec e[EP_MAX_ENTITIES];
    size_t n;
    bool routes_given;
} cfg_spec;

typedef struct ep_op {
    srv_ep *st;
    srv_conn *conn; /* NULL for a restore, or once the client left */
    int kind;
    char name[EP_NAME_MAX + 1];
    cfg_spec cfg;
    bool pending_cfg; /* restore: this is the stored pending config */
    int version;      /* config_version the config gets */
    vkpt_model_version mv[EP_MAX_ENTITIES];
    uint64_t chunk[EP_MAX_ENTITIES];
    size_t outstanding;
    int status;
    const char *code;
    char msg[700];
} ep_op;

/* ---- errors -------------------------------------------------------------------------------- */

const char *srv_db_error_code(int status)
{
    switch (status) {
    case 400: return "INVALID_PARAMETER_VALUE";
    case 401: return "UNAUTHENTICATED";
    case 403: return "PERMISSION_DENIED";
    case 404: return "RESOURCE_DOES_NOT_EXIST";
    case 409: return "RESOURCE_CONFLICT";
    case 413: return "INVALID_PARAMETER_VALUE";
    case 429: return "REQUEST_LIMIT_EXCEEDED";
    case 503: return "TEMPORARILY_UNAVAILABLE";
    default: return status >= 500 ? "INTERNAL_ERROR" : "BAD_REQUEST";
    }
}

void srv_conn_db_error(srv_conn *c, int status, const char *error_code, const char *extra,
                       const char *fmt, ...)
{
    static const char oom_body[] =
        "{\"error_code\":\"INTERNAL_ERROR\",\"message\":\"out of memory\"}";
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv_buf b = {0};
    const char *code = error_code ? error_code : srv_db_error_code(status);
    srv_buf_puts(&b, "{\"error_code\":");
    srv_buf_json_str(&b, code, strlen(code));
    srv_buf_puts(&b, ",\"message\":");
    srv_buf_json_str(&b, msg, strlen(msg));
    srv_buf_puts(&b, "}");
    if (srv_buf_ok(&b))
        srv_conn_respond(c, status, "application/json", extra, b.p, b.n);
    else
        srv_conn_respond(c, 500, "application/json", NULL, oom_body, sizeof oom_body - 1);
    srv_buf_free(&b);
}

void srv_conn_error_shaped(srv_conn *c, bool db, int status, const char *param, const char *code,
                           const char *msg, const char *hdr)
{
    if (db) {
        srv_conn_db_error(c, status, srv_db_error_code(status), hdr[0] ? hdr : NULL, "%s", msg);
        return;
    }
    if (!hdr[0]) {
        srv_conn_error(c, status, param, code, "%s", msg);
        return;
    }
    srv_buf b = {0};
    srv_error_json(&b, status, param, code, msg);
    if (srv_buf_ok(&b))
        srv_conn_respond(c, status, "application/json", hdr, b.p, b.n);
    else
        srv_conn_error(c, 500, NULL, NULL, "out of memory");
    srv_buf_free(&b);
}

/* the status and Databricks code for a vkpt error */
static int status_of(int err)
{
    switch (err) {
    case VKPT_EINVAL:
    case VKPT_EFORMAT:
    case VKPT_EPARSE:
    case VKPT_ERANGE:
    case VKPT_EUNSUPPORTED: return 400;
    case VKPT_ENOTFOUND: return 404;
    case VKPT_EEXISTS: return 409;
    case VKPT_ESTATE: return 409;
    default: return 500;
    }
}

static void respond_obj(srv_conn *c, int status, cJSON *o)
{
    char *t = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!t) {
        srv_conn_db_error(c, 500, NULL, NULL, "out of memory writing the response");
        return;
    }
    srv_conn_respond(c, status, "application/json", NULL, t, strlen(t));
    cJSON_free(t);
}

static cJSON *parse_body(srv_ctx *ctx)
{
    const srv_buf *b = &ctx->req->body;
    cJSON *root = b->n ? cJSON_ParseWithLength(b->p, b->n) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        srv_conn_db_error(ctx->conn, 400, "MALFORMED_REQUEST", NULL,
                          "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

static bool not_enabled(srv_ctx *ctx)
{
    if (ctx->srv->ep) return false;
    srv_conn_db_error(ctx->conn, 404, "FEATURE_DISABLED", NULL,
                      "this server has no endpoint store (vkpt serve opens one under --data-dir)");
    return true;
}

/* ---- lookups -------------------------------------------------------------------------------- */

ep_endpoint *ep_find(srv_ep *st, const char *name)
{
    for (srv_list *n = st->endpoints.next; n != &st->endpoints; n = n->next) {
        ep_endpoint *ep = srv_container_of(n, ep_endpoint, link);
        if (!strcmp(ep->name, name)) return ep;
    }
    return NULL;
}

bool srv_ep_enabled(const vkpt_server *s)
{
    return s->ep != NULL;
}

/* Smooth weighted round robin over the serving entities by traffic share:
 * exact proportions, evenly interleaved. */
static ep_entity *pick_entity(ep_endpoint *ep)
{
    int total = 0;
    ep_entity *best = NULL;
    for (size_t i = 0; i < ep->n_cur; i++) {
        ep_entity *e = ep->cur[i];
        if (e->traffic_pct <= 0) continue;
        e->wrr += e->traffic_pct;
        total += e->traffic_pct;
        if (!best || e->wrr > best->wrr) best = e;
    }
    if (!best) return ep->n_cur ? ep->cur[0] : NULL;
    best->wrr -= total;
    return best;
}

srv_model *srv_ep_find_model(vkpt_server *s, const char *name)
{
    if (!s->ep || !name) return NULL;
    ep_endpoint *ep = ep_find(s->ep, name);
    ep_entity *e = ep ? pick_entity(ep) : NULL;
    return e ? &e->api : NULL;
}

void srv_ep_list_models(vkpt_server *s, cJSON *data)
{
    if (!s->ep) return;
    for (srv_list *n = s->ep->endpoints.next; n != &s->ep->endpoints; n = n->next) {
        ep_endpoint *ep = srv_container_of(n, ep_endpoint, link);
        if (!ep->n_cur) continue;
        cJSON *o = cJSON_CreateObject();
        if (!o) return;
        cJSON_AddStringToObject(o, "id", ep->name);
        cJSON_AddStringToObject(o, "object", "model");
        cJSON_AddNumberToObject(o, "created", (double)(ep->rec.created_ms / 1000));
        cJSON_AddStringToObject(o, "owned_by", "vkpt-endpoint");
        cJSON_AddNumberToObject(o, "max_model_len", ep->cur[0]->api.n_ctx);
        cJSON_AddItemToArray(data, o);
    }
}

/* ---- config JSON ------------------------------------------------------------------------------ */

static int cfg_bad(ep_op *op, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cfg_bad(ep_op *op, int status, const char *fmt, ...)
{
    op->status = status;
    op->code = srv_db_error_code(status);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->msg, sizeof op->msg, fmt, ap);
    va_end(ap);
    return VKPT_EINVAL;
}

static bool only_keys(ep_op *op, const cJSON *o, const char *where, const char *const *keys)
{
    for (const cJSON *v = o->child; v; v = v->next) {
        bool ok = false;
        for (size_t i = 0; keys[i] && !ok; i++) ok = !strcmp(v->string, keys[i]);
        if (!ok) {
            cfg_bad(op, 400, "%s: unknown field \"%s\"", where, v->string);
            return false;
        }
    }
    return true;
}

static bool json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (d != (double)(int64_t)d || d < (double)lo || d > (double)hi) return false;
    *out = (int64_t)d;
    return true;
}

/* entity_version: an integer or a string of digits */
static bool json_version(const cJSON *v, uint32_t *out)
{
    int64_t x;
    if (json_int(v, 1, UINT32_MAX, &x)) {
        *out = (uint32_t)x;
        return true;
    }
    if (!cJSON_IsString(v) || !v->valuestring[0] || strlen(v->valuestring) > 9) return false;
    for (const char *p = v->valuestring; *p; p++)
        if (!isdigit((unsigned char)*p)) return false;
    long long y = atoll(v->valuestring);
    if (y < 1) return false;
    *out = (uint32_t)y;
    return true;
}

static bool valid_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-') return false;
    return true;
}

/* Parse a "config" object (create's, update's, or one stored). */
static int parse_config(ep_op *op, const cJSON *cfg, cfg_spec *out)
{
    static const char *const cfg_keys[] = {"served_entities", "traffic_config", "config_version",
                                           NULL};
    static const char *const ent_keys[] = {"name",
                                           "entity_name",
                                           "entity_version",
                                           "min_provisioned_throughput",
                                           "max_provisioned_throughput",
                                           "scale_to_zero_enabled",
                                           NULL};
    memset(out, 0, sizeof *out);
    if (!cJSON_IsObject(cfg)) return cfg_bad(op, 400, "config must be an object");
    if (cJSON_GetObjectItemCaseSensitive(cfg, "served_models"))
        return cfg_bad(op, 400,
                       "config.served_models is the legacy field: give config.served_entities");
    if (!only_keys(op, cfg, "config", cfg_keys)) return VKPT_EINVAL;
    const cJSON *ents = cJSON_GetObjectItemCaseSensitive(cfg, "served_entities");
    if (!cJSON_IsArray(ents) || !ents->child)
        return cfg_bad(op, 400, "config.served_entities must be a non-empty array");
    int k = 0;
    for (const cJSON *e = ents->child; e; e = e->next, k++) {
        char where[48];
        snprintf(where, sizeof where, "served_entities[%d]", k);
        if (k >= EP_MAX_ENTITIES)
            return cfg_bad(op, 400, "config.served_entities: at most %d entities", EP_MAX_ENTITIES);
        if (!cJSON_IsObject(e)) return cfg_bad(op, 400, "%s must be an object", where);
        if (cJSON_GetObjectItemCaseSensitive(e, "workload_size") ||
            cJSON_GetObjectItemCaseSensitive(e, "workload_type"))
            return cfg_bad(op, 400,
                           "%s: vkpt serves provisioned throughput: give "
                           "min_provisioned_throughput and max_provisioned_throughput, not "
                           "workload_size/workload_type",
                           where);
        if (!only_keys(op, e, where, ent_keys)) return VKPT_EINVAL;
        ent_spec *s = &out->e[k];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "entity_name");
        if (!cJSON_IsString(v) || strlen(v->valuestring) >= sizeof s->entity_name)
            return cfg_bad(op, 400, "%s.entity_name must be a registered model's name", where);
        snprintf(s->entity_name, sizeof s->entity_name, "%s", v->valuestring);
        v = cJSON_GetObjectItemCaseSensitive(e, "entity_version");
        if (!json_version(v, &s->version))
            return cfg_bad(op, 400,
                           "%s.entity_version must be a version number (an integer >= 1, or a "
                           "string of one)",
                           where);
        v = cJSON_GetObjectItemCaseSensitive(e, "min_provisioned_throughput");
        if (!json_int(v, 0, INT64_C(1) << 40, &s->min_tps))
            return cfg_bad(op, 400,
                           "%s.min_provisioned_throughput must be an integer >= 0 "
                           "(tokens per second)",
                           where);
        v = cJSON_GetObjectItemCaseSensitive(e, "max_provisioned_throughput");
        if (!json_int(v, 0, INT64_C(1) << 40, &s->max_tps))
            return cfg_bad(op, 400,
                           "%s.max_provisioned_throughput must be an integer >= 0 "
                           "(tokens per second)",
                           where);
        v = cJSON_GetObjectItemCaseSensitive(e, "scale_to_zero_enabled");
        if (v && !cJSON_IsNull(v) && !cJSON_IsBool(v))
            return cfg_bad(op, 400, "%s.scale_to_zero_enabled must be true or false", where);
        s->scale_to_zero = cJSON_IsTrue(v);
        v = cJSON_GetObjectItemCaseSensitive(e, "name");
        if (v && !cJSON_IsNull(v)) {
            if (!cJSON_IsString(v) || !valid_name(v->valuestring, 63))
                return cfg_bad(op, 400, "%s.name must have 1 to 63 letters, digits, '_' or '-'",
                               where);
            snprintf(s->name, sizeof s->name, "%s", v->valuestring);
        } else {
            /* Databricks' default: the model's name (its last part) and the version */
            const char *leaf = strrchr(s->entity_name, '.');
            snprintf(s->name, sizeof s->name, "%.100s-%u", leaf ? leaf + 1 : s->entity_name,
                     s->version);
        }
        for (int i = 0; i < k; i++)
            if (!strcmp(out->e[i].name, s->name))
                return cfg_bad(op, 400,
                               "served entity name \"%s\" is used twice; give each a distinct "
                               "name",
                               s->name);
        out->n = (size_t)k + 1;
    }
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(cfg, "traffic_config");
    if (tc && !cJSON_IsNull(tc)) {
        static const char *const tc_keys[] = {"routes", NULL};
        static const char *const rt_keys[] = {"served_model_name", "served_entity_name",
                                              "traffic_percentage", NULL};
        if (!cJSON_IsObject(tc) || !only_keys(op, tc, "traffic_config", tc_keys))
            return op->status ? VKPT_EINVAL
                              : cfg_bad(op, 400, "traffic_config must be an object with routes");
        const cJSON *routes = cJSON_GetObjectItemCaseSensitive(tc, "routes");
        if (!cJSON_IsArray(routes) || !routes->child)
            return cfg_bad(op, 400, "traffic_config.routes must be a non-empty array");
        int sum = 0, r = 0;
        for (const cJSON *rt = routes->child; rt; rt = rt->next, r++) {
            char where[48];
            snprintf(where, sizeof where, "traffic_config.routes[%d]", r);
            if (!cJSON_IsObject(rt) || !only_keys(op, rt, where, rt_keys))
                return op->status ? VKPT_EINVAL : cfg_bad(op, 400, "%s must be an object", where);
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(rt, "served_model_name");
            if (!nm) nm = cJSON_GetObjectItemCaseSensitive(rt, "served_entity_name");
            int64_t pct;
            if (!cJSON_IsString(nm))
                return cfg_bad(op, 400, "%s.served_model_name must be a served entity's name",
                               where);
            if (!json_int(cJSON_GetObjectItemCaseSensitive(rt, "traffic_percentage"), 0, 100, &pct))
                return cfg_bad(op, 400, "%s.traffic_percentage must be an integer from 0 to 100",
                               where);
            ent_spec *hit = NULL;
            for (size_t i = 0; i < out->n && !hit; i++)
                if (!strcmp(out->e[i].name, nm->valuestring)) hit = &out->e[i];
            if (!hit)
                return cfg_bad(op, 400,
                               "%s.served_model_name \"%s\" is not a served entity of "
                               "this config",
                               where, nm->valuestring);
            hit->pct += (int)pct;
            sum += (int)pct;
        }
        if (sum != 100)
            return cfg_bad(op, 400,
                           "traffic_config.routes: the traffic percentages add up to %d, "
                           "not 100",
                           sum);
        out->routes_given = true;
    } else {
        /* no routes: an even split, the rest to the first ones */
        for (size_t i = 0; i < out->n; i++)
            out->e[i].pct = (int)(100 / out->n + (i < 100 % out->n ? 1 : 0));
    }
    return 0;
}

static cJSON *entity_spec_json(const ep_entity *e)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    char ver[16];
    snprintf(ver, sizeof ver, "%u", e->version);
    cJSON_AddStringToObject(o, "name", e->name);
    cJSON_AddStringToObject(o, "entity_name", e->entity_name);
    cJSON_AddStringToObject(o, "entity_version", ver);
    cJSON_AddNumberToObject(o, "min_provisioned_throughput", (double)e->min_tps);
    cJSON_AddNumberToObject(o, "max_provisioned_throughput", (double)e->max_tps);
    cJSON_AddBoolToObject(o, "scale_to_zero_enabled", e->scale_to_zero);
    return o;
}

static cJSON *traffic_json(ep_entity *const *ents, size_t n)
{
    cJSON *tc = cJSON_CreateObject();
    cJSON *routes = cJSON_AddArrayToObject(tc, "routes");
    for (size_t i = 0; routes && i < n; i++) {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "served_model_name", ents[i]->name);
        cJSON_AddNumberToObject(r, "traffic_percentage", ents[i]->traffic_pct);
        cJSON_AddItemToArray(routes, r);
    }
    return tc;
}

/* The config as stored: what a restart parses again. */
static char *config_text(ep_entity *const *ents, size_t n, int version)
{
    cJSON *c = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(c, "served_entities");
    for (size_t i = 0; arr && i < n; i++) cJSON_AddItemToArray(arr, entity_spec_json(ents[i]));
    cJSON_AddItemToObject(c, "traffic_config", traffic_json(ents, n));
    cJSON_AddNumberToObject(c, "config_version", version);
    char *t = cJSON_PrintUnformatted(c);
    cJSON_Delete(c);
    char *r = t ? vkpt_strdup(t) : NULL;
    cJSON_free(t);
    return r;
}

static const char *deploy_name(int d)
{
    switch (d) {
    case EP_DEPLOY_READY: return "DEPLOYMENT_READY";
    case EP_DEPLOY_FAILED: return "DEPLOYMENT_FAILED";
    case EP_DEPLOY_RECOVERING: return "DEPLOYMENT_RECOVERING";
    default: return "DEPLOYMENT_CREATING";
    }
}

static cJSON *entities_json(ep_entity *const *ents, size_t n, int version, int64_t start_ms)
{
    cJSON *c = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(c, "served_entities");
    for (size_t i = 0; arr && i < n; i++) {
        ep_entity *e = ents[i];
        cJSON *o = entity_spec_json(e);
        if (!o) continue;
        cJSON *stt = cJSON_AddObjectToObject(o, "state");
        cJSON_AddStringToObject(stt, "deployment", deploy_name(e->deploy));
        cJSON_AddStringToObject(stt, "deployment_state_message", e->message);
        cJSON_AddNumberToObject(o, "creation_timestamp", (double)e->created_ms);
        cJSON_AddStringToObject(o, "task", e->mv.task ? e->mv.task : "");
        cJSON *x = cJSON_AddObjectToObject(o, "vkpt");
        cJSON_AddNumberToObject(x, "throughput_chunk_size", (double)e->chunk);
        cJSON_AddNumberToObject(x, "replicas", e->n_ready);
        cJSON_AddNumberToObject(x, "replicas_starting", e->n_starting);
        cJSON_AddStringToObject(x, "model_type", e->mv.model_type ? e->mv.model_type : "");
        cJSON_AddNumberToObject(x, "used_tokens_per_second", e->used_tps);
        cJSON_AddItemToArray(arr, o);
    }
    cJSON_AddItemToObject(c, "traffic_config", traffic_json(ents, n));
    cJSON_AddNumberToObject(c, "config_version", version);
    if (start_ms) cJSON_AddNumberToObject(c, "start_time", (double)start_ms);
    return c;
}

static bool ep_ready(const ep_endpoint *ep)
{
    for (size_t i = 0; i < ep->n_cur; i++)
        if (ep_entity_ready(ep->cur[i])) return true;
    return false;
}

static cJSON *endpoint_json(ep_endpoint *ep)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    char id[17];
    uint64_t h = 1469598103934665603ull;
    for (const char *p = ep->name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    snprintf(id, sizeof id, "%016llx", (unsigned long long)h);
    cJSON_AddStringToObject(o, "name", ep->name);
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "creator", "vkpt");
    cJSON_AddNumberToObject(o, "creation_timestamp", (double)ep->rec.created_ms);
    cJSON_AddNumberToObject(o, "last_updated_timestamp", (double)ep->rec.updated_ms);
    cJSON *stt = cJSON_AddObjectToObject(o, "state");
    cJSON_AddStringToObject(stt, "ready", ep_ready(ep) ? "READY" : "NOT_READY");
    cJSON_AddStringToObject(stt, "config_update", ep->rec.config_update);
    if (ep->rec.message) cJSON_AddStringToObject(stt, "update_message", ep->rec.message);
    if (ep->n_cur)
        cJSON_AddItemToObject(o, "config", entities_json(ep->cur, ep->n_cur, ep->cur_version, 0));
    if (ep->n_pend)
        cJSON_AddItemToObject(
            o, "pending_config",
            entities_json(ep->pend, ep->n_pend, ep->pend_version, ep->pend_start_ms));
    cJSON_AddStringToObject(o, "task", ep->task ? ep->task : "");
    cJSON_AddStringToObject(o, "permission_level", "CAN_MANAGE");
    cJSON_AddBoolToObject(o, "route_optimized", false);
    return o;
}

/* ---- endpoints in memory ------------------------------------------------------------------------- */

static void free_entities(ep_entity **v, size_t n, const char *why)
{
    for (size_t i = 0; i < n; i++) ep_entity_retire(v[i], why);
    vkpt_free(v);
}

static void endpoint_free(ep_endpoint *ep)
{
    vkpt_endpoint_rec_free(&ep->rec);
    vkpt_free(ep->name);
    vkpt_free(ep->task);
    vkpt_free(ep);
}

/* A served entity from a checked spec (its model version and chunk size
 * resolved); NULL with op's error set. */
static ep_entity *entity_make(ep_op *op, ep_endpoint *ep, size_t i)
{
    srv_ep *st = op->st;
    const ent_spec *s = &op->cfg.e[i];
    ep_entity *e = vkpt_calloc(1, sizeof *e);
    if (!e) return NULL;
    e->st = st;
    e->ep = ep;
    e->refs = 1;
    e->version = s->version;
    e->min_tps = s->min_tps;
    e->max_tps = s->max_tps;
    e->scale_to_zero = s->scale_to_zero;
    e->traffic_pct = s->pct;
    e->chunk = op->chunk[i];
    e->mv = op->mv[i];
    memset(&op->mv[i], 0, sizeof op->mv[i]);
    e->created_ms = vkpt_store_now_ms();
    srv_list_init(&e->replicas);
    srv_list_init(&e->waiting);
    ep_entity_metrics_init(e);
    vkpt_bucket_init(&e->bucket, (double)e->max_tps, 1.0, vkpt_now_ns());
    e->ep_name = vkpt_strdup(ep->name);
    e->name = vkpt_strdup(s->name);
    e->entity_name = vkpt_strdup(s->entity_name);
    if (!e->ep_name || !e->name || !e->entity_name) goto oom;
    /* the tokenizer stays loaded while the entity exists (scaled to zero too) */
    int err = vkpt_tokenizer_create_file(e->mv.source, &e->tok);
    if (err) {
        cfg_bad(op, 400, "served entity %s: the tokenizer of %s version %u does not load: %s",
                e->name, e->entity_name, e->version, vkpt_errmsg(err));
        goto fail;
    }
    uint32_t ctx = e->mv.context_length ? e->mv.context_length : 4096;
    uint32_t cap = st->o.n_ctx ? st->o.n_ctx : 4096;
    if (ctx > cap) ctx = cap;
    const char *sys = NULL, *tpl = NULL;
    cJSON *meta = cJSON_Parse(e->mv.metadata ? e->mv.metadata : "{}");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, "system_prompt");
    if (cJSON_IsString(v)) sys = v->valuestring;
    /* an embedding model's pooling/normalize (checked when registered) */
    v = cJSON_GetObjectItemCaseSensitive(meta, "pooling");
    if (cJSON_IsString(v) && vkpt_pooling_by_name(v->valuestring) > 0)
        e->pooling = vkpt_pooling_by_name(v->valuestring);
    v = cJSON_GetObjectItemCaseSensitive(meta, "normalize");
    if (cJSON_IsBool(v)) e->normalize = cJSON_IsTrue(v) ? VKPT_NORMALIZE_ON : VKPT_NORMALIZE_OFF;
    v = cJSON_GetObjectItemCaseSensitive(meta, "chat_template");
    if (cJSON_IsString(v)) tpl = v->valuestring;
    err = srv_model_init_fields(&e->api, ep->name, e->tok, ctx, tpl, sys);
    cJSON_Delete(meta);
    if (err) {
        cfg_bad(op, 400, "served entity %s: %s", e->name, vkpt_errmsg(err));
        goto fail;
    }
    e->embed = !strcmp(e->mv.task, VKPT_TASK_EMBEDDINGS);
    e->api.adm = e->embed ? &srv_ep_embed_admission : &srv_ep_admission;
    e->api.adm_ud = e;
    return e;
oom:
    cfg_bad(op, 500, "out of memory");
fail:
    srv_model_free_fields(&e->api);
    vkpt_tokenizer_destroy(e->tok);
    vkpt_model_version_free(&e->mv);
    vkpt_free(e->ep_name);
    vkpt_free(e->name);
    vkpt_free(e->entity_name);
    vkpt_free(e);
    return NULL;
}

static int make_entities(ep_op *op, ep_endpoint *ep, ep_entity ***out)
{
    ep_entity **v = vkpt_calloc(op->cfg.n, sizeof *v);
    if (!v) return cfg_bad(op, 500, "out of memory");
    for (size_t i = 0; i < op->cfg.n; i++) {
        if (!(v[i] = entity_make(op, ep, i))) {
            if (!op->status) cfg_bad(op, 500, "out of memory");
            for (size_t k = 0; k < i; k++) ep_entity_unref(v[k]);
            vkpt_free(v);
            return VKPT_EINVAL;
        }
    }
    *out = v;
    return 0;
}

/* Write the endpoint's record with its current in-memory state. */
static int persist(ep_endpoint *ep)
{
    srv_ep *st = ep->st;
    vkpt_free(ep->rec.config);
    vkpt_free(ep->rec.pending);
    ep->rec.config = ep->n_cur ? config_text(ep->cur, ep->n_cur, ep->cur_version) : NULL;
    ep->rec.pending = ep->n_pend ? config_text(ep->pend, ep->n_pend, ep->pend_version) : NULL;
    if ((ep->n_cur && !ep->rec.config) || (ep->n_pend && !ep->rec.pending))
        return vkpt_fail(VKPT_ENOMEM, "endpoint record");
    int err = st->store->ops->endpoint_put(st->store, &ep->rec, ep->rec.generation);
    if (err) VKPT_LOGE("endpoints: %s: cannot store its state: %s", ep->name, vkpt_errmsg(err));
    return err;
}

static int set_update_state(ep_endpoint *ep, const char *state, const char *message)
{
    char *s = vkpt_strdup(state), *m = message ? vkpt_strdup(message) : NULL;
    if (!s || (message && !m)) {
        vkpt_free(s);
        vkpt_free(m);
        return vkpt_fail(VKPT_ENOMEM, "endpoint state");
    }
    vkpt_free(ep->rec.config_update);
    vkpt_free(ep->rec.message);
    ep->rec.config_update = s;
    ep->rec.message = m;
    return 0;
}

/* Every entity of the pending config started (or one failed): commit or
 * fail the update. */
void ep_on_entity_settled(ep_entity *e)
{
    ep_endpoint *ep = e->ep;
    if (!ep || ep->deleted || !ep->n_pend) return;
    bool mine = false, all = true, failed = false;
    const ep_entity *bad = NULL;
    for (size_t i = 0; i < ep->n_pend; i++) {
        ep_entity *p = ep->pend[i];
        mine |= p == e;
        if (p->n_starting) all = false;
        if (!p->n_starting && !p->n_ready) {
            failed = true;
            if (!bad) bad = p;
        }
    }
    if (!mine || (!all && !failed)) return;
    if (failed) {
        char msg[700];
        snprintf(msg, sizeof msg, "served entity %s: %s", bad->name, bad->message);
        VKPT_LOGE("endpoints: %s: config update failed: %s; the previous config keeps serving",
                  ep->name, msg);
        ep_entity **pend = ep->pend;
        size_t n = ep->n_pend;
        ep->pend = NULL;
        ep->n_pend = 0;
        set_update_state(ep, "UPDATE_FAILED", msg);
        persist(ep);
        free_entities(pend, n, "its config update failed");
        return;
    }
    /* commit: the pending config serves, the old one drains */
    ep_entity **old = ep->cur;
    size_t n_old = ep->n_cur;
    ep->cur = ep->pend;
    ep->n_cur = ep->n_pend;
    ep->cur_version = ep->pend_version;
    ep->pend = NULL;
    ep->n_pend = 0;
    set_update_state(ep, "NOT_UPDATING", NULL);
    persist(ep);
    VKPT_LOGI("endpoints: %s: config version %d is serving", ep->name, ep->cur_version);
    free_entities(old, n_old, "the endpoint's config was updated");
}

/* ---- operations: resolve, chunk sizes, check, commit --------------------------------------------- */

static void op_detach(void *ud)
{
    ((ep_op *)ud)->conn = NULL;
}

static void op_free(ep_op *op)
{
    for (size_t i = 0; i < EP_MAX_ENTITIES; i++) vkpt_model_version_free(&op->mv[i]);
    if (op->conn) op->conn->detach = NULL;
    vkpt_free(op);
}

static void op_fail(ep_op *op)
{
    if (op->kind == OP_UPDATE) {
        ep_endpoint *ep = ep_find(op->st, op->name);
        if (ep) ep->applying = false;
    }
    if (op->conn) {
        srv_conn *c = op->conn;
        c->detach = NULL;
        op->conn = NULL;
        srv_conn_db_error(c, op->status ? op->status : 500, op->code, NULL, "%s", op->msg);
    } else if (op->kind == OP_RESTORE) {
        VKPT_LOGE("endpoints: %s: cannot restore its %s config: %s", op->name,
                  op->pending_cfg ? "pending" : "serving", op->msg);
    }
    op_free(op);
}

static void op_answer(ep_op *op, ep_endpoint *ep)
{
    if (!op->conn) return;
    srv_conn *c = op->conn;
    c->detach = NULL;
    op->conn = NULL;
    respond_obj(c, 200, endpoint_json(ep));
}

/* All chunk sizes are known: check the bands and apply. */
static void op_apply(ep_op *op)
{
    srv_ep *st = op->st;
    for (size_t i = 0; i < op->cfg.n; i++) {
        ent_spec *s = &op->cfg.e[i];
        if (op->kind != OP_RESTORE) {
            char msg[400];
            if (vkpt_provision_check(op->chunk[i], s->min_tps, s->max_tps, s->scale_to_zero, msg,
                                     sizeof msg)) {
                cfg_bad(op, 400, "served_entities[%zu] (%s version %u): %s", i, s->entity_name,
                        s->version, msg);
                op_fail(op);
                return;
            }
        }
    }
    ep_endpoint *ep = ep_find(st, op->name);
    if (op->kind == OP_CREATE) {
        if (ep) {
            cfg_bad(op, 409, "Endpoint with name '%s' already exists", op->name);
            op->code = "RESOURCE_ALREADY_EXISTS";
            op_fail(op);
            return;
        }
        ep = vkpt_calloc(1, sizeof *ep);
        if (!ep || !(ep->name = vkpt_strdup(op->name)) || !(ep->rec.name = vkpt_strdup(op->name)) ||
            set_update_state(ep, "IN_PROGRESS", NULL)) {
            if (ep) endpoint_free(ep);
            cfg_bad(op, 500, "out of memory");
            op_fail(op);
            return;
        }
        ep->st = st;
        ep->rec.generation = -1; /* insert */
    } else if (!ep || ep->deleted) {
        cfg_bad(op, 404, "Endpoint with name '%s' does not exist", op->name);
        op_fail(op);
        return;
    }
    ep_entity **ents = NULL;
    if (make_entities(op, ep, &ents)) {
        if (op->kind == OP_CREATE) endpoint_free(ep);
        op_fail(op);
        return;
    }
    if (!ep->task && !(ep->task = vkpt_strdup(ents[0]->mv.task))) {
        cfg_bad(op, 500, "out of memory");
        goto undo;
    }
    for (size_t i = 0; i < op->cfg.n; i++)
        if (strcmp(ents[i]->mv.task, ep->task)) {
            cfg_bad(op, 400,
                    "served entity %s has task %s but the endpoint serves %s: an endpoint's "
                    "entities share one task",
                    ents[i]->name, ents[i]->mv.task, ep->task);
            goto undo;
        }
    if (op->kind == OP_RESTORE && !op->pending_cfg) {
        ep->cur = ents;
        ep->n_cur = op->cfg.n;
        ep->cur_version = op->version;
    } else {
        ep->pend = ents;
        ep->n_pend = op->cfg.n;
        ep->pend_version = op->version;
        ep->pend_start_ms = vkpt_store_now_ms();
    }
    if (op->kind != OP_RESTORE) {
        /* IN_PROGRESS with the new config pending: what a crash comes back to */
        if (set_update_state(ep, "IN_PROGRESS", NULL)) {
            cfg_bad(op, 500, "out of memory");
            goto unset;
        }
        int err = persist(ep);
        if (err) {
            if (err == VKPT_EEXISTS) {
                cfg_bad(op, 409, "Endpoint with name '%s' already exists", op->name);
                op->code = "RESOURCE_ALREADY_EXISTS";
            } else {
                cfg_bad(op, 500, "cannot store the endpoint: %s", vkpt_errmsg(err));
            }
            goto unset;
        }
        if (op->kind == OP_CREATE) srv_list_push(&st->endpoints, &ep->link);
        ep->applying = false;
        VKPT_LOGI("endpoints: %s: config version %d accepted; starting %zu served entit%s",
                  ep->name, op->version, op->cfg.n, op->cfg.n == 1 ? "y" : "ies");
    }
    op_answer(op, ep);
    for (size_t i = 0; i < op->cfg.n; i++) {
        ep_entity *e = ents[i];
        ep_entity_deploy(e);
        /* deploy may settle (and free) the pending config at once on failure */
        if (ep->pend != ents && ep->cur != ents) break;
    }
    op_free(op);
    return;
unset:
    if (ep->pend == ents) {
        ep->pend = NULL;
        ep->n_pend = 0;
    }
undo:
    for (size_t i = 0; i < op->cfg.n; i++) ep_entity_unref(ents[i]);
    vkpt_free(ents);
    if (op->kind == OP_CREATE) endpoint_free(ep);
    op_fail(op);
}

typedef struct chunk_wait {
    ep_op *op;
    size_t i;
} chunk_wait;

static void op_step(ep_op *op)
{
    if (--op->outstanding > 0) return;
    if (op->status)
        op_fail(op);
    else
        op_apply(op);
}

static void on_chunk(void *ud, uint64_t chunk, const vkpt_calibration *cal, int err,
                     const char *msg)
{
    chunk_wait *w = ud;
    ep_op *op = w->op;
    (void)cal;
    if (err && !op->status)
        cfg_bad(op, err == VKPT_EUNSUPPORTED ? 400 : 500,
                "served_entities[%zu]: the throughput chunk size of %s version %u is unknown: %s",
                w->i, op->cfg.e[w->i].entity_name, op->cfg.e[w->i].version, msg ? msg : "");
    op->chunk[w->i] = chunk;
    vkpt_free(w);
    op_step(op);
}

/* Resolve the model versions, then get their chunk sizes (possibly
 * calibrating: the answer waits for it). */
static void op_start(ep_op *op)
{
    srv_ep *st = op->st;
    for (size_t i = 0; i < op->cfg.n; i++) {
        ent_spec *s = &op->cfg.e[i];
        int err = st->store->ops->model_get(st->store, s->entity_name, s->version, &op->mv[i]);
        if (err) {
            if (err == VKPT_ENOTFOUND)
                cfg_bad(op, 404, "served_entities[%zu]: %s", i, vkpt_errmsg(err));
            else
                cfg_bad(op, 500, "served_entities[%zu]: %s", i, vkpt_errmsg(err));
            op_fail(op);
            return;
        }
    }
    op->outstanding = op->cfg.n + 1;
    for (size_t i = 0; i < op->cfg.n; i++) {
        chunk_wait *w = vkpt_calloc(1, sizeof *w);
        if (!w) {
            cfg_bad(op, 500, "out of memory");
            op->outstanding -= op->cfg.n - i;
            break;
        }
        w->op = op;
        w->i = i;
        ep_chunk_get(st, &op->mv[i], false, on_chunk, w);
    }
    op_step(op);
}

static ep_op *op_new(srv_ctx *ctx, srv_ep *st, int kind, const char *name)
{
    ep_op *op = vkpt_calloc(1, sizeof *op);
    if (!op) return NULL;
    op->st = st;
    op->kind = kind;
    snprintf(op->name, sizeof op->name, "%s", name);
    if (ctx) {
        op->conn = ctx->conn;
        ctx->conn->detach = op_detach;
        ctx->conn->detach_ud = op;
    }
    return op;
}

/* ---- handlers: serving endpoints ------------------------------------------------------------------- */

void srv_h_ep_create(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    srv_ep *st = ctx->srv->ep;
    cJSON *root = parse_body(ctx);
    if (!root) return;
    static const char *const keys[] = {"name", "config", NULL};
    ep_op tmp = {0};
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (!only_keys(&tmp, root, "the request", keys)) {
        srv_conn_db_error(ctx->conn, 400, NULL, NULL, "%s", tmp.msg);
    } else if (!cJSON_IsString(name) || !valid_name(name->valuestring, EP_NAME_MAX)) {
        srv_conn_db_error(ctx->conn, 400, NULL, NULL,
                          "name must have 1 to %d letters, digits, '_' or '-'", EP_NAME_MAX);
    } else if (ep_find(st, name->valuestring)) {
        srv_conn_db_error(ctx->conn, 409, "RESOURCE_ALREADY_EXISTS", NULL,
                          "Endpoint with name '%s' already exists", name->valuestring);
    } else {
        ep_op *op = op_new(ctx, st, OP_CREATE, name->valuestring);
        if (!op) {
            srv_conn_db_error(ctx->conn, 500, NULL, NULL, "out of memory");
        } else if (parse_config(op, cJSON_GetObjectItemCaseSensitive(root, "config"), &op->cfg)) {
            op_fail(op);
        } else {
            op->version = 1;
            op_start(op);
        }
    }
    cJSON_Delete(root);
}

void srv_h_ep_update(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    srv_ep *st = ctx->srv->ep;
    ep_endpoint *ep = ep_find(st, ctx->params[0]);
    if (!ep) {
        srv_conn_db_error(ctx->conn, 404, NULL, NULL, "Endpoint with name '%s' does not exist",
                          ctx->params[0]);
        return;
    }
    if (ep->n_pend || ep->applying) {
        srv_conn_db_error(ctx->conn, 409, "RESOURCE_CONFLICT", NULL,
                          "Endpoint '%s' has a config update in progress (config version %d); "
                          "wait until state.config_update is not IN_PROGRESS",
                          ep->name, ep->pend_version);
        return;
    }
    cJSON *root = parse_body(ctx);
    if (!root) return;
    ep_op *op = op_new(ctx, st, OP_UPDATE, ep->name);
    if (!op) {
        srv_conn_db_error(ctx->conn, 500, NULL, NULL, "out of memory");
    } else if (parse_config(op, root, &op->cfg)) {
        op_fail(op);
    } else {
        int hi = ep->cur_version > ep->pend_version ? ep->cur_version : ep->pend_version;
        op->version = hi + 1;
        ep->applying = true;
        op_start(op);
    }
    cJSON_Delete(root);
}

void srv_h_ep_get(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    ep_endpoint *ep = ep_find(ctx->srv->ep, ctx->params[0]);
    if (!ep)
        srv_conn_db_error(ctx->conn, 404, NULL, NULL, "Endpoint with name '%s' does not exist",
                          ctx->params[0]);
    else
        respond_obj(ctx->conn, 200, endpoint_json(ep));
}

void srv_h_ep_list(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    srv_ep *st = ctx->srv->ep;
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "endpoints");
    for (srv_list *n = st->endpoints.next; arr && n != &st->endpoints; n = n->next)
        cJSON_AddItemToArray(arr, endpoint_json(srv_container_of(n, ep_endpoint, link)));
    respond_obj(ctx->conn, 200, o);
}

void srv_h_ep_delete(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    srv_ep *st = ctx->srv->ep;
    ep_endpoint *ep = ep_find(st, ctx->params[0]);
    if (!ep) {
        srv_conn_db_error(ctx->conn, 404, NULL, NULL, "Endpoint with name '%s' does not exist",
                          ctx->params[0]);
        return;
    }
    if (ep->applying) {
        srv_conn_db_error(ctx->conn, 409, "RESOURCE_CONFLICT", NULL,
                          "Endpoint '%s' is checking a new config; retry in a moment", ep->name);
        return;
    }
    int err = st->store->ops->endpoint_delete(st->store, ep->name, -1);
    if (err && err != VKPT_ENOTFOUND) {
        srv_conn_db_error(ctx->conn, 500, NULL, NULL, "cannot delete the endpoint: %s",
                          vkpt_errmsg(err));
        return;
    }
    ep->deleted = true;
    srv_list_remove(&ep->link);
    VKPT_LOGI("endpoints: %s: deleted", ep->name);
    for (size_t i = 0; i < ep->n_cur; i++) ep->cur[i]->ep = NULL;
    for (size_t i = 0; i < ep->n_pend; i++) ep->pend[i]->ep = NULL;
    free_entities(ep->cur, ep->n_cur, "the endpoint was deleted");
    free_entities(ep->pend, ep->n_pend, "the endpoint was deleted");
    endpoint_free(ep);
    srv_conn_respond(ctx->conn, 200, "application/json", NULL, "{}", 2);
}

void srv_h_ep_metrics(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    if (!ep_find(ctx->srv->ep, ctx->params[0])) {
        srv_conn_db_error(ctx->conn, 404, NULL, NULL, "Endpoint with name '%s' does not exist",
                          ctx->params[0]);
        return;
    }
    srv_buf b = {0};
    srv_ep_metrics(ctx->srv, &b, ctx->params[0]);
    if (srv_buf_ok(&b))
        srv_conn_respond(ctx->conn, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
                         b.p ? b.p : "", b.n);
    else
        srv_conn_db_error(ctx->conn, 500, NULL, NULL, "out of memory rendering metrics");
    srv_buf_free(&b);
}

void srv_h_ep_invoke(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    ep_endpoint *ep = ep_find(ctx->srv->ep, ctx->params[0]);
    if (!ep) {
        srv_conn_db_error(ctx->conn, 404, NULL, NULL, "Endpoint with name '%s' does not exist",
                          ctx->params[0]);
        return;
    }
    if (!ep->n_cur) {
        srv_conn_db_error(ctx->conn, 503, NULL, "Retry-After: 5\r\n",
                          "Endpoint '%s' is not ready: its first config is being applied",
                          ep->name);
        return;
    }
    const srv_buf *body = &ctx->req->body;
    if (!strcmp(ep->task, VKPT_TASK_EMBEDDINGS)) {
        srv_embed_spec es;
        int status = 0;
        char param[64], msg[512];
        const char *code = NULL;
        if (srv_embed_parse(body->p ? body->p : "", body->n, &es, &status, param, sizeof param,
                            &code, msg, sizeof msg)) {
            srv_conn_db_error(ctx->conn, status, srv_db_error_code(status), NULL,
                              "%s (this endpoint's task is llm/v1/embeddings: send {\"input\": "
                              "...})",
                              msg);
            return;
        }
        vkpt_free(es.model);
        es.model = NULL;
        srv_embed_start(ctx, &pick_entity(ep)->api, &es, true);
        return;
    }
    int api = !strcmp(ep->task, VKPT_TASK_COMPLETIONS) ? SRV_API_COMPLETION : SRV_API_CHAT;
    srv_gen_spec spec;
    srv_api_error e;
    if (srv_openai_parse(api, body->p ? body->p : "", body->n, &spec, &e)) {
        srv_conn_db_error(ctx->conn, e.status, srv_db_error_code(e.status), NULL, "%s%s", e.message,
                          api == SRV_API_CHAT ? " (this endpoint's task is llm/v1/chat: send "
                                                "{\"messages\": [...]})"
                                              : " (this endpoint's task is llm/v1/completions: "
                                                "send {\"prompt\": ...})");
        return;
    }
    vkpt_free(spec.model);
    spec.model = vkpt_strdup(ep->name);
    spec.db_errors = true;
    ep_entity *ent = pick_entity(ep);
    srv_model *m = &ent->api;
    if (srv_openai_check_vocab(&spec, m->n_vocab, &e)) {
        srv_conn_db_error(ctx->conn, e.status, srv_db_error_code(e.status), NULL, "%s", e.message);
        srv_gen_spec_free(&spec);
        return;
    }
    srv_gen_start(ctx, m, &spec,
                  api == SRV_API_CHAT ? &srv_openai_chat_ops : &srv_openai_completion_ops);
}

/* ---- optimization info ------------------------------------------------------------------------------ */

typedef struct opt_op {
    srv_conn *conn;
    srv_ep *st;
    vkpt_model_version mv;
} opt_op;

static void opt_detach(void *ud)
{
    ((opt_op *)ud)->conn = NULL;
}

static void on_opt_chunk(void *ud, uint64_t chunk, const vkpt_calibration *cal, int err,
                         const char *msg)
{
    opt_op *op = ud;
    srv_conn *c = op->conn;
    if (c) {
        c->detach = NULL;
        if (err) {
            srv_conn_db_error(c, 500, NULL, NULL, "calibrating %s version %u failed: %s",
                              op->mv.name, op->mv.version, msg ? msg : vkpt_strerror(err));
        } else {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddBoolToObject(o, "optimizable", true);
            cJSON_AddStringToObject(o, "model_type", op->mv.model_type);
            cJSON_AddNumberToObject(o, "throughput_chunk_size", (double)chunk);
            cJSON *x = cJSON_AddObjectToObject(o, "vkpt_calibration");
            if (cal) {
                cJSON_AddStringToObject(x, "source", "measured");
                cJSON_AddNumberToObject(x, "tokens_per_second", cal->tokens_per_s);
                cJSON_AddStringToObject(x, "device_uuid", cal->device_uuid);
                cJSON_AddStringToObject(x, "vkpt_version", cal->vkpt_version);
                cJSON_AddNumberToObject(x, "created_timestamp", (double)cal->created_ms);
                cJSON *d = cal->details ? cJSON_Parse(cal->details) : NULL;
                if (d) cJSON_AddItemToObject(x, "details", d);
            } else {
                cJSON_AddStringToObject(x, "source", "test_override");
            }
            respond_obj(c, 200, o);
        }
    }
    vkpt_model_version_free(&op->mv);
    vkpt_free(op);
}

static bool query_flag(const srv_http_req *r, const char *key)
{
    if (!r->query_off) return false;
    const char *q = r->hbuf.p + r->query_off;
    size_t n = strlen(key);
    for (const char *p = q; p && *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL)
        if (!strncmp(p, key, n) && (p[n] == '=' || p[n] == '&' || !p[n]))
            return p[n] != '=' || !strncmp(p + n + 1, "true", 4) || p[n + 1] == '1';
    return false;
}

void srv_h_ep_optinfo(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    srv_ep *st = ctx->srv->ep;
    const cJSON vjson = {.type = cJSON_String, .valuestring = (char *)ctx->params[1]};
    uint32_t version;
    if (!json_version(&vjson, &version)) {
        srv_conn_db_error(ctx->conn, 400, NULL, NULL, "version \"%s\" is not a version number",
                          ctx->params[1]);
        return;
    }
    opt_op *op = vkpt_calloc(1, sizeof *op);
    if (!op) {
        srv_conn_db_error(ctx->conn, 500, NULL, NULL, "out of memory");
        return;
    }
    int err = st->store->ops->model_get(st->store, ctx->params[0], version, &op->mv);
    if (err) {
        vkpt_free(op);
        srv_conn_db_error(ctx->conn, status_of(err), NULL, NULL, "%s", vkpt_errmsg(err));
        return;
    }
    op->st = st;
    op->conn = ctx->conn;
    ctx->conn->detach = opt_detach;
    ctx->conn->detach_ud = op;
    ep_chunk_get(st, &op->mv, query_flag(ctx->req, "recalibrate"), on_opt_chunk, op);
}

/* ---- registry ------------------------------------------------------------------------------------------- */

static cJSON *version_obj(const vkpt_model_version *v)
{
    char *t = vkpt_registry_version_json(v);
    cJSON *o = t ? cJSON_Parse(t) : NULL;
    vkpt_free(t);
    return o;
}

/* {"name", "latest_version", "versions": [...]} for versions v[0..n) of one name */
static cJSON *model_obj(const vkpt_model_version *v, size_t n)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", v[0].name);
    cJSON_AddNumberToObject(o, "latest_version", v[n - 1].version);
    cJSON *arr = cJSON_AddArrayToObject(o, "versions");
    for (size_t i = 0; arr && i < n; i++) cJSON_AddItemToArray(arr, version_obj(&v[i]));
    return o;
}

void srv_h_reg_list(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    vkpt_store *store = ctx->srv->ep->store;
    vkpt_model_version *v = NULL;
    size_t n = 0;
    int err = store->ops->model_list(store, NULL, &v, &n);
    if (err) {
        srv_conn_db_error(ctx->conn, 500, NULL, NULL, "%s", vkpt_errmsg(err));
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "registered_models");
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && !strcmp(v[j].name, v[i].name)) j++;
        cJSON_AddItemToArray(arr, model_obj(&v[i], j - i));
        i = j;
    }
    vkpt_model_versions_free(v, n);
    respond_obj(ctx->conn, 200, o);
}

void srv_h_reg_get(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    vkpt_store *store = ctx->srv->ep->store;
    vkpt_model_version *v = NULL;
    size_t n = 0;
    int err = store->ops->model_list(store, ctx->params[0], &v, &n);
    if (err || n == 0) {
        vkpt_model_versions_free(v, n);
        if (err)
            srv_conn_db_error(ctx->conn, 500, NULL, NULL, "%s", vkpt_errmsg(err));
        else
            srv_conn_db_error(ctx->conn, 404, NULL, NULL, "Registered model '%s' does not exist",
                              ctx->params[0]);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "registered_model", model_obj(v, n));
    vkpt_model_versions_free(v, n);
    respond_obj(ctx->conn, 200, o);
}

static bool version_param(srv_ctx *ctx, uint32_t *version)
{
    const cJSON vjson = {.type = cJSON_String, .valuestring = (char *)ctx->params[1]};
    if (json_version(&vjson, version)) return true;
    srv_conn_db_error(ctx->conn, 400, NULL, NULL, "version \"%s\" is not a version number",
                      ctx->params[1]);
    return false;
}

void srv_h_reg_version(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    vkpt_store *store = ctx->srv->ep->store;
    uint32_t version;
    if (!version_param(ctx, &version)) return;
    vkpt_model_version v;
    int err = store->ops->model_get(store, ctx->params[0], version, &v);
    if (err) {
        srv_conn_db_error(ctx->conn, status_of(err), NULL, NULL, "%s", vkpt_errmsg(err));
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "model_version", version_obj(&v));
    vkpt_model_version_free(&v);
    respond_obj(ctx->conn, 200, o);
}

void srv_h_reg_delete_version(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    srv_ep *st = ctx->srv->ep;
    uint32_t version;
    if (!version_param(ctx, &version)) return;
    for (srv_list *n = st->endpoints.next; n != &st->endpoints; n = n->next) {
        ep_endpoint *ep = srv_container_of(n, ep_endpoint, link);
        for (int k = 0; k < 2; k++) {
            ep_entity **v = k ? ep->pend : ep->cur;
            size_t m = k ? ep->n_pend : ep->n_cur;
            for (size_t i = 0; i < m; i++)
                if (!strcmp(v[i]->entity_name, ctx->params[0]) && v[i]->version == version) {
                    srv_conn_db_error(ctx->conn, 409, "RESOURCE_CONFLICT", NULL,
                                      "%s version %u is served by endpoint '%s'; change or "
                                      "delete the endpoint first",
                                      ctx->params[0], version, ep->name);
                    return;
                }
        }
    }
    int err = st->store->ops->model_delete(st->store, ctx->params[0], version);
    if (err)
        srv_conn_db_error(ctx->conn, status_of(err), NULL, NULL, "%s", vkpt_errmsg(err));
    else
        srv_conn_respond(ctx->conn, 200, "application/json", NULL, "{}", 2);
}

typedef struct reg_op {
    uv_work_t w;
    srv_conn *conn;
    srv_ep *st;
    char *name, *source, *task, *model_type, *metadata;
    uint32_t context_length;
    vkpt_model_version out;
    int err;
    char msg[700];
} reg_op;

static void reg_detach(void *ud)
{
    ((reg_op *)ud)->conn = NULL;
}

static void reg_work(uv_work_t *w)
{
    reg_op *op = w->data;
    vkpt_register_req r = {.name = op->name,
                           .source = op->source,
                           .task = op->task,
                           .model_type = op->model_type,
                           .context_length = op->context_length,
                           .metadata = op->metadata};
    op->err = vkpt_registry_register(op->st->store, &r, &op->out);
    if (op->err) snprintf(op->msg, sizeof op->msg, "%s", vkpt_errmsg(op->err));
}

static void reg_after(uv_work_t *w, int status)
{
    reg_op *op = w->data;
    (void)status;
    if (op->conn) {
        srv_conn *c = op->conn;
        c->detach = NULL;
        if (op->err) {
            int st = op->err == VKPT_EIO ? 404 : status_of(op->err);
            srv_conn_db_error(c, st, NULL, NULL, "%s", op->msg);
        } else {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToObject(o, "model_version", version_obj(&op->out));
            respond_obj(c, 200, o);
        }
    }
    vkpt_model_version_free(&op->out);
    vkpt_free(op->name);
    vkpt_free(op->source);
    vkpt_free(op->task);
    vkpt_free(op->model_type);
    vkpt_free(op->metadata);
    vkpt_free(op);
}

void srv_h_reg_create(srv_ctx *ctx)
{
    if (not_enabled(ctx)) return;
    cJSON *root = parse_body(ctx);
    if (!root) return;
    static const char *const keys[] = {"name",     "source",         "task", "model_type",
                                       "metadata", "context_length", NULL};
    ep_op tmp = {0};
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    const cJSON *source = cJSON_GetObjectItemCaseSensitive(root, "source");
    const cJSON *task = cJSON_GetObjectItemCaseSensitive(root, "task");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    const cJSON *ctxv = cJSON_GetObjectItemCaseSensitive(root, "context_length");
    int64_t ctxlen = 0;
    char msg[256];
    reg_op *op = NULL;
    if (!only_keys(&tmp, root, "the request", keys)) {
        srv_conn_db_error(ctx->conn, 400, NULL, NULL, "%s", tmp.msg);
    } else if (!cJSON_IsString(name) ||
               !vkpt_registry_valid_name(name->valuestring, msg, sizeof msg)) {
        srv_conn_db_error(ctx->conn, 400, NULL, NULL, "%s",
                          cJSON_IsString(name) ? msg : "name (catalog.schema.model) is required");
    } else if (!cJSON_IsString(source)) {
        srv_conn_db_error(ctx->conn, 400, NULL, NULL,
                          "source must be the path of a .gguf file or a Hugging Face folder on "
                          "the server");
    } else if ((task && !cJSON_IsString(task)) || (type && !cJSON_IsString(type)) ||
               (meta && !cJSON_IsObject(meta)) || (ctxv && !json_int(ctxv, 1, 1 << 24, &ctxlen))) {
        srv_conn_db_error(ctx->conn, 400, NULL, NULL,
                          "task and model_type must be strings, metadata an object, "
                          "context_length a positive integer");
    } else if (!(op = vkpt_calloc(1, sizeof *op))) {
        srv_conn_db_error(ctx->conn, 500, NULL, NULL, "out of memory");
    } else {
        char *mt = meta ? cJSON_PrintUnformatted(meta) : NULL;
        op->st = ctx->srv->ep;
        op->name = vkpt_strdup(name->valuestring);
        op->source = vkpt_strdup(source->valuestring);
        op->task = task ? vkpt_strdup(task->valuestring) : NULL;
        op->model_type = type ? vkpt_strdup(type->valuestring) : NULL;
        op->metadata = mt ? vkpt_strdup(mt) : NULL;
        op->context_length = (uint32_t)ctxlen;
        cJSON_free(mt);
        op->w.data = op;
        op->conn = ctx->conn;
        ctx->conn->detach = reg_detach;
        ctx->conn->detach_ud = op;
        if (uv_queue_work(&ctx->srv->loop, &op->w, reg_work, reg_after)) {
            op->err = VKPT_ENOMEM;
            snprintf(op->msg, sizeof op->msg, "cannot queue the registration");
            reg_after(&op->w, 0);
        }
    }
    cJSON_Delete(root);
}

/* ---- lifecycle -------------------------------------------------------------------------------------------- */

size_t vkpt_server_stored_endpoints(vkpt_store *store)
{
    vkpt_endpoint_rec *v = NULL;
    size_t n = 0;
    if (!store || store->ops->endpoint_list(store, &v, &n)) return 0;
    vkpt_endpoint_recs_free(v, n);
    return n;
}

int vkpt_server_enable_endpoints(vkpt_server *s, const vkpt_server_endpoint_opts *o)
{
    if (!s || !o || !o->store || !o->n_devices || !o->devices)
        return vkpt_fail(VKPT_EINVAL, "endpoints need a store and at least one device");
    if (s->ep || s->state != SRV_NEW)
        return vkpt_fail(VKPT_ESTATE, "endpoints are enabled once, before start");
    srv_ep *st = vkpt_calloc(1, sizeof *st);
    if (!st) return vkpt_fail(VKPT_ENOMEM, "endpoints");
    st->srv = s;
    st->o = *o;
    st->store = o->store;
    if (!st->o.autoscale_interval_s) st->o.autoscale_interval_s = 1;
    if (!st->o.scale_down_delay_s) st->o.scale_down_delay_s = 60;
    if (!st->o.scale_to_zero_delay_s) st->o.scale_to_zero_delay_s = 900;
    if (!st->o.calibration_level_s) st->o.calibration_level_s = 10;
    st->o.devices = NULL;
    srv_list_init(&st->endpoints);
    srv_list_init(&st->calib);
    pthread_mutex_init(&st->cache_mu, NULL);
    pthread_cond_init(&st->cache_cv, NULL);
    size_t nq = 0;
    for (size_t d = 0; d < o->n_devices; d++) {
        uint32_t q = vkpt_device_get_caps(o->devices[d])->n_compute_queues;
        nq += q ? q : 1;
    }
    st->dq = vkpt_calloc(nq, sizeof *st->dq);
    int err = st->dq ? 0 : vkpt_fail(VKPT_ENOMEM, "endpoints");
    for (size_t d = 0; !err && d < o->n_devices; d++) {
        uint32_t q = vkpt_device_get_caps(o->devices[d])->n_compute_queues;
        for (uint32_t k = 0; !err && k < (q ? q : 1); k++) {
            ep_devq *dq = &st->dq[st->n_dq];
            dq->dev = o->devices[d];
            dq->dev_index = (uint32_t)d;
            dq->queue = k;
            err = vkpt_arbiter_create(&dq->arb);
            if (!err) st->n_dq++;
        }
    }
    if (!err) vkpt_registry_uuid_hex(vkpt_device_get_caps(o->devices[0])->uuid, st->device_uuid);
    if (err) {
        s->ep = st;
        srv_ep_destroy(s);
        return err;
    }
    s->ep = st;
    VKPT_LOGI("endpoints: %zu device queue%s for replicas%s", st->n_dq, st->n_dq == 1 ? "" : "s",
              st->o.test_chunk_size ? " (TEST chunk size override in effect)" : "");
    return 0;
}

/* Restore one stored config (serving or pending) of `ep`. */
static void restore_config(srv_ep *st, ep_endpoint *ep, const char *text, bool pending)
{
    ep_op *op = op_new(NULL, st, OP_RESTORE, ep->name);
    if (!op) return;
    op->pending_cfg = pending;
    cJSON *c = cJSON_Parse(text);
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(c, "config_version");
    op->version = cJSON_IsNumber(ver) ? ver->valueint : 1;
    int err = parse_config(op, c, &op->cfg);
    cJSON_Delete(c);
    if (err) {
        op_fail(op);
        return;
    }
    op_start(op);
}

int srv_ep_start(vkpt_server *s)
{
    srv_ep *st = s->ep;
    if (!st) return 0;
    ep_tick_start(st);
    vkpt_endpoint_rec *v = NULL;
    size_t n = 0;
    int err = st->store->ops->endpoint_list(st->store, &v, &n);
    if (err) {
        VKPT_LOGE("endpoints: cannot read the stored endpoints: %s", vkpt_errmsg(err));
        return err;
    }
    for (size_t i = 0; i < n; i++) {
        ep_endpoint *ep = vkpt_calloc(1, sizeof *ep);
        if (!ep || !(ep->name = vkpt_strdup(v[i].name))) {
            vkpt_free(ep);
            continue;
        }
        ep->st = st;
        ep->rec = v[i];
        memset(&v[i], 0, sizeof v[i]);
        srv_list_push(&st->endpoints, &ep->link);
        bool resume = ep->rec.pending && !strcmp(ep->rec.config_update, "IN_PROGRESS");
        VKPT_LOGI("endpoints: restoring %s (%s%s)", ep->name,
                  ep->rec.config ? "serving config" : "no serving config",
                  resume ? ", resuming its config update" : "");
        if (ep->rec.config) restore_config(st, ep, ep->rec.config, false);
        if (resume) restore_config(st, ep, ep->rec.pending, true);
    }
    vkpt_endpoint_recs_free(v, n);
    return 0;
}

void srv_ep_stop(vkpt_server *s)
{
    srv_ep *st = s->ep;
    if (!st) return;
    st->stopping = true;
    if (st->tick_open && !uv_is_closing((uv_handle_t *)&st->tick)) {
        uv_timer_stop(&st->tick);
        uv_close((uv_handle_t *)&st->tick, NULL);
    }
}

void srv_ep_destroy(vkpt_server *s)
{
    srv_ep *st = s->ep;
    if (!st) return;
    while (!srv_list_empty(&st->endpoints)) {
        ep_endpoint *ep = srv_container_of(st->endpoints.next, ep_endpoint, link);
        srv_list_remove(&ep->link);
        for (int k = 0; k < 2; k++) {
            ep_entity **v = k ? ep->pend : ep->cur;
            size_t n = k ? ep->n_pend : ep->n_cur;
            for (size_t i = 0; i < n; i++) {
                v[i]->ep = NULL;
                ep_entity_stop_now(v[i]);
                ep_entity_unref(v[i]);
            }
            vkpt_free(v);
        }
        endpoint_free(ep);
    }
    for (size_t i = 0; i < st->n_dq; i++) vkpt_arbiter_destroy(st->dq[i].arb);
    vkpt_free(st->dq);
    while (st->models) { /* none should be left: every replica released its model */
        ep_model *lm = st->models;
        st->models = lm->next;
        VKPT_LOGW("endpoints: %s was still loaded at shutdown", lm->source);
        vkpt_model_destroy(lm->m);
        vkpt_free(lm->source);
        vkpt_free(lm);
    }
    pthread_mutex_destroy(&st->cache_mu);
    pthread_cond_destroy(&st->cache_cv);
    vkpt_free(st);
    s->ep = NULL;
}
