/* The route table and dispatch. */
#include "router.h"

#include "auth.h"
#include "endpoints.h"
#include "server_int.h"

#include <stdio.h>
#include <string.h>

const srv_route srv_routes[] = {
    {HTTP_POST, "/v1/chat/completions", srv_h_chat_completions, 0},
    {HTTP_POST, "/v1/completions", srv_h_completions, 0},
    {HTTP_POST, "/v1/embeddings", srv_h_embeddings, 0},
    {HTTP_GET, "/v1/models", srv_h_models, 0},
    {HTTP_GET, "/v1/models/{model*}", srv_h_model, 0},
    {HTTP_POST, "/tokenize", srv_h_tokenize, 0},
    {HTTP_POST, "/detokenize", srv_h_detokenize, 0},
    {HTTP_GET, "/health", srv_h_health, SRV_ROUTE_PUBLIC | SRV_ROUTE_DRAIN_OK},
    {HTTP_GET, "/ready", srv_h_ready, SRV_ROUTE_DRAIN_OK},
    {HTTP_GET, "/metrics", srv_h_metrics, SRV_ROUTE_DRAIN_OK},
    /* Databricks' serving-endpoints API (endpoints.c, docs/PROVISIONING.md) */
    {HTTP_POST, "/api/2.0/serving-endpoints", srv_h_ep_create, 0},
    {HTTP_GET, "/api/2.0/serving-endpoints", srv_h_ep_list, 0},
    {HTTP_GET, "/api/2.0/serving-endpoints/get-model-optimization-info/{model}/{version}",
     srv_h_ep_optinfo, 0},
    {HTTP_GET, "/api/2.0/serving-endpoints/{name}", srv_h_ep_get, 0},
    {HTTP_DELETE, "/api/2.0/serving-endpoints/{name}", srv_h_ep_delete, 0},
    {HTTP_PUT, "/api/2.0/serving-endpoints/{name}/config", srv_h_ep_update, 0},
    {HTTP_GET, "/api/2.0/serving-endpoints/{name}/metrics", srv_h_ep_metrics, SRV_ROUTE_DRAIN_OK},
    {HTTP_POST, "/serving-endpoints/{name}/invocations", srv_h_ep_invoke, 0},
    /* Databricks' OpenAI-compatible base URL: model = an endpoint name */
    {HTTP_POST, "/serving-endpoints/chat/completions", srv_h_chat_completions, 0},
    {HTTP_POST, "/serving-endpoints/completions", srv_h_completions, 0},
    {HTTP_POST, "/serving-endpoints/embeddings", srv_h_embeddings, 0},
    /* the model registry */
    {HTTP_GET, "/api/2.0/vkpt/registered-models", srv_h_reg_list, 0},
    {HTTP_POST, "/api/2.0/vkpt/registered-models", srv_h_reg_create, 0},
    {HTTP_GET, "/api/2.0/vkpt/registered-models/{model}", srv_h_reg_get, 0},
    {HTTP_GET, "/api/2.0/vkpt/registered-models/{model}/versions/{version}", srv_h_reg_version, 0},
    {HTTP_DELETE, "/api/2.0/vkpt/registered-models/{model}/versions/{version}",
     srv_h_reg_delete_version, 0},
};
const size_t srv_n_routes = sizeof srv_routes / sizeof srv_routes[0];

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decode [p, p+n) into ctx->param_buf as the next parameter. */
static bool add_param(srv_ctx *ctx, size_t *used, const char *p, size_t n)
{
    if (ctx->n_params == SRV_MAX_PARAMS) return false;
    char *dst = ctx->param_buf + *used;
    size_t room = sizeof ctx->param_buf - *used, k = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
            ch = (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
            i += 2;
        }
        if (ch == 0 || k + 1 >= room) return false;
        dst[k++] = ch;
    }
    dst[k] = 0;
    ctx->params[ctx->n_params++] = dst;
    *used += k + 1;
    return true;
}

/* Does `path` match `pat`? Parameters go to ctx. */
static bool match(const char *pat, const char *path, srv_ctx *ctx)
{
    size_t used = 0;
    ctx->n_params = 0;
    while (*pat && *path) {
        if (*pat == '{') {
            const char *close = strchr(pat, '}');
            if (!close) return false;
            bool rest = close[-1] == '*';
            size_t n = rest ? strlen(path) : strcspn(path, "/");
            if (n == 0 || !add_param(ctx, &used, path, n)) return false;
            path += n;
            pat = close + 1;
            continue;
        }
        if (*pat != *path) return false;
        pat++;
        path++;
    }
    return *pat == 0 && *path == 0;
}

int srv_route_match(int method, const char *path, srv_ctx *ctx, char *allow, size_t allow_cap)
{
    bool path_seen = false;
    size_t used = 0;
    if (allow_cap) allow[0] = 0;
    for (size_t i = 0; i < srv_n_routes; i++) {
        if (!match(srv_routes[i].pattern, path, ctx)) continue;
        if (srv_routes[i].method == method) return (int)i;
        path_seen = true;
        const char *m = http_method_str((enum http_method)srv_routes[i].method);
        size_t n = strlen(m);
        if (used + n + 3 < allow_cap && !strstr(allow, m)) {
            if (used) {
                memcpy(allow + used, ", ", 2);
                used += 2;
            }
            memcpy(allow + used, m, n + 1);
            used += n;
        }
    }
    ctx->n_params = 0;
    return path_seen ? -2 : -1;
}

void srv_dispatch(srv_conn *c)
{
    srv_ctx ctx = {.srv = c->srv, .conn = c, .req = &c->in.req};
    char allow[64];
    const char *path = srv_http_path(&c->in.req);
    int r = srv_route_match(c->in.req.method, path, &ctx, allow, sizeof allow);
    if (r == -1) {
        srv_conn_error(c, 404, NULL, "not_found", "no route for %s %s",
                       http_method_str((enum http_method)c->in.req.method), path);
        return;
    }
    if (r == -2) {
        char hdr[96];
        snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
        srv_buf b = {0};
        char msg[160];
        snprintf(msg, sizeof msg, "%s does not accept %s; use %s", path,
                 http_method_str((enum http_method)c->in.req.method), allow);
        srv_error_json(&b, 405, NULL, "method_not_allowed", msg);
        srv_conn_respond(c, 405, "application/json", hdr, b.p ? b.p : "", b.n);
        srv_buf_free(&b);
        return;
    }
    c->route = r;
    if (!(srv_routes[r].flags & SRV_ROUTE_PUBLIC) && c->srv->n_keys &&
        !srv_auth_ok(c->srv, srv_http_header_get(&c->in.req, "authorization"))) {
        srv_conn_error(c, 401, NULL, "invalid_api_key",
                       "missing or invalid API key: send \"Authorization: Bearer KEY\" with one "
                       "of the server's keys");
        return;
    }
    if (c->srv->state != SRV_RUNNING && !(srv_routes[r].flags & SRV_ROUTE_DRAIN_OK)) {
        srv_conn_error(c, 503, NULL, "server_shutting_down",
                       "the server is shutting down; retry on another instance");
        return;
    }
    srv_routes[r].fn(&ctx);
}
