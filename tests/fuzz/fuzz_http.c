/* Fuzz target for the server's HTTP request parser and what runs on each
 * parsed request before a handler: header lookups, routing and, for a body,
 * the OpenAI request validation of both APIs. The first byte picks how the
 * rest is split into reads (1..32 bytes), so requests split at every place
 * are explored; pipelined requests are parsed one after another. */
#include "http_parse.h"
#include "openai.h"
#include "router.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t step = (size_t)(data[0] % 32) + 1;
    const char *p = (const char *)data + 1;
    size_t n = size - 1, off = 0;
    const srv_http_limits lim = {
        .max_url = 512, .max_header_bytes = 4096, .max_headers = 32, .max_body = 1 << 16};
    srv_http_in in;
    srv_http_in_init(&in, &lim);
    for (int requests = 0; off < n && requests < 64;) {
        size_t chunk = n - off < step ? n - off : step;
        size_t k = srv_http_in_feed(&in, p + off, chunk);
        if (k > chunk) __builtin_trap();
        off += k;
        if (in.state == SRV_IN_ERROR) {
            if (in.err_status < 400 || in.err_status > 599 || !in.err_msg) __builtin_trap();
            break;
        }
        if (in.state != SRV_IN_DONE) {
            if (k == 0) break; /* cannot happen: a non-final state consumes its input */
            continue;
        }
        const srv_http_req *r = &in.req;
        const char *path = srv_http_path(r);
        if (strlen(path) != r->path_len) __builtin_trap();
        for (size_t i = 0; i < r->n_headers; i++) {
            const char *name = r->hbuf.p + r->headers[i].name;
            const char *v = srv_http_header_get(r, name);
            if (!v) __builtin_trap();
        }
        srv_ctx ctx = {0};
        char allow[64];
        srv_route_match(r->method, path, &ctx, allow, sizeof allow);
        if (r->body.n) {
            for (int api = 0; api < 2; api++) {
                srv_gen_spec s;
                srv_api_error e;
                if (!srv_openai_parse(api, r->body.p, r->body.n, &s, &e)) {
                    srv_openai_check_vocab(&s, 512, &e);
                    srv_gen_spec_free(&s);
                }
            }
        }
        srv_http_in_reset(&in);
        requests++;
    }
    srv_http_in_free(&in);
    return 0;
}
