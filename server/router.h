/* Routing: one static table {method, path pattern, handler, flags}. A
 * pattern is literal segments and `{name}` (one segment) or `{name*}` (the
 * rest of the path, slashes included) parameters, so API families that
 * address resources by path (/v1/models/{model},
 * /serving-endpoints/{name}/invocations) are table rows, not code.
 *
 * Dispatch checks the API key (auth.h) unless the route is public, then
 * calls the handler, which must eventually answer through http.h. */
#ifndef VKPT_SERVER_ROUTER_H
#define VKPT_SERVER_ROUTER_H

#include "http.h"

#define SRV_MAX_PARAMS 4

typedef struct srv_ctx {
    vkpt_server *srv;
    srv_conn *conn;
    const srv_http_req *req;
    const char *params[SRV_MAX_PARAMS]; /* decoded, NUL-terminated, in pattern order */
    size_t n_params;
    char param_buf[1024];
} srv_ctx;

typedef void (*srv_handler)(srv_ctx *ctx);

enum srv_route_flags {
    SRV_ROUTE_PUBLIC = 1u << 0,   /* no API key needed */
    SRV_ROUTE_DRAIN_OK = 1u << 1, /* still served while the server shuts down */
};

typedef struct srv_route {
    int method; /* enum http_method */
    const char *pattern;
    srv_handler fn;
    unsigned flags;
} srv_route;

extern const srv_route srv_routes[];
extern const size_t srv_n_routes;

/* Match `path` (no query) against the table. Returns the route index and
 * fills ctx->params, or -1 when no pattern matches the path (404), or -2
 * when patterns match but not with this method (405; `allow` gets the
 * methods, comma-separated). */
int srv_route_match(int method, const char *path, srv_ctx *ctx, char *allow, size_t allow_cap);

/* Route, authenticate and handle the connection's complete request. */
void srv_dispatch(srv_conn *c);

/* Handlers (openai.c, server.c). */
void srv_h_chat_completions(srv_ctx *ctx);
void srv_h_completions(srv_ctx *ctx);
void srv_h_models(srv_ctx *ctx);
void srv_h_model(srv_ctx *ctx);
void srv_h_tokenize(srv_ctx *ctx);
void srv_h_detokenize(srv_ctx *ctx);
void srv_h_health(srv_ctx *ctx);
void srv_h_ready(srv_ctx *ctx);
void srv_h_metrics(srv_ctx *ctx);
void srv_h_embeddings(srv_ctx *ctx); /* embeddings.c */

#endif
