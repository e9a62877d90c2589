/* Unit tests of the server's pure parts: HTTP request parsing with limits,
 * routing, API-key checks, SSE framing, JSON string output, OpenAI request
 * validation and the Prometheus histogram text. The whole server (sockets,
 * engine, streaming, disconnects) is tested end to end in tests/node and
 * tests/test_server_errors.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the above first */
#include <cmocka.h>

#include "auth.h"
#include "http_parse.h"
#include "metrics.h"
#include "openai.h"
#include "router.h"
#include "sse.h"
#include "toolcall.h"

#include <stdlib.h>
#include <string.h>

static const srv_http_limits lim = {
    .max_url = 64, .max_header_bytes = 256, .max_headers = 8, .max_body = 100};

/* Parse `s` whole; returns the state. */
static int parse_all(srv_http_in *in, const char *s, size_t *consumed)
{
    size_t k = srv_http_in_feed(in, s, strlen(s));
    if (consumed) *consumed = k;
    return in->state;
}

/* ---- http_parse ----------------------------------------------------------------- */

static void http_parse_simple_get(void **st)
{
    srv_http_in in;
    srv_http_in_init(&in, &lim);
    assert_int_equal(parse_all(&in, "GET /health?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", NULL),
                     SRV_IN_DONE);
    assert_int_equal(in.req.method, HTTP_GET);
    assert_string_equal(srv_http_path(&in.req), "/health");
    assert_string_equal(in.req.hbuf.p + in.req.query_off, "x=1");
    assert_string_equal(srv_http_header_get(&in.req, "host"), "a");
    assert_true(in.req.keep_alive);
    assert_int_equal(in.req.body.n, 0);
    srv_http_in_free(&in);
}

static void http_parse_headers_lowercase_and_body(void **st)
{
    srv_http_in in;
    srv_http_in_init(&in, &lim);
    const char *r = "POST /v1/completions HTTP/1.1\r\nContent-Type: application/json\r\n"
                    "AUTHORIZATION: Bearer k\r\nX-Empty:\r\nContent-Length: 4\r\n\r\n{\"a\"";
    assert_int_equal(parse_all(&in, r, NULL), SRV_IN_DONE);
    assert_int_equal(in.req.method, HTTP_POST);
    assert_string_equal(srv_http_header_get(&in.req, "authorization"), "Bearer k");
    assert_string_equal(srv_http_header_get(&in.req, "content-type"), "application/json");
    assert_string_equal(srv_http_header_get(&in.req, "x-empty"), "");
    assert_null(srv_http_header_get(&in.req, "Authorization")); /* lookups are lower-case */
    assert_int_equal(in.req.body.n, 4);
    assert_memory_equal(in.req.body.p, "{\"a\"", 4);
    srv_http_in_free(&in);
}

static void http_parse_byte_by_byte(void **st)
{
    const char *r = "POST /tokenize HTTP/1.1\r\nHost: example\r\nX-Long-Header-Name: some value\r\n"
                    "Content-Length: 11\r\n\r\nhello world";
    srv_http_in in;
    srv_http_in_init(&in, &lim);
    size_t n = strlen(r), used = 0;
    for (size_t i = 0; i < n && in.state != SRV_IN_DONE; i++)
        used += srv_http_in_feed(&in, r + i, 1);
    assert_int_equal(in.state, SRV_IN_DONE);
    assert_int_equal(used, n);
    assert_string_equal(srv_http_path(&in.req), "/tokenize");
    assert_string_equal(srv_http_header_get(&in.req, "host"), "example");
    assert_string_equal(srv_http_header_get(&in.req, "x-long-header-name"), "some value");
    assert_int_equal(in.req.body.n, 11);
    assert_memory_equal(in.req.body.p, "hello world", 11);
    srv_http_in_free(&in);
}

static void http_parse_chunked_body(void **st)
{
    srv_http_in in;
    srv_http_in_init(&in, &lim);
    const char *r = "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    assert_int_equal(parse_all(&in, r, NULL), SRV_IN_DONE);
    assert_int_equal(in.req.body.n, 11);
    assert_memory_equal(in.req.body.p, "hello world", 11);
    srv_http_in_free(&in);
}

static void http_parse_pipelined_requests_one_at_a_time(void **st)
{
    srv_http_in in;
    srv_http_in_init(&in, &lim);
    const char *r = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
    size_t k;
    assert_int_equal(parse_all(&in, r, &k), SRV_IN_DONE);
    assert_string_equal(srv_http_path(&in.req), "/a");
    assert_int_equal(k, strlen("GET /a HTTP/1.1\r\n\r\n"));
    /* nothing more is consumed until reset */
    assert_int_equal(srv_http_in_feed(&in, r + k, strlen(r + k)), 0);
    srv_http_in_reset(&in);
    assert_int_equal(parse_all(&in, r + k, NULL), SRV_IN_DONE);
    assert_string_equal(srv_http_path(&in.req), "/b");
    assert_false(in.req.keep_alive);
    srv_http_in_free(&in);
}

static void http_parse_limits_give_the_right_status(void **st)
{
    static const struct {
        const char *req;
        int status;
    } cases[] = {
        {"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa "
         "HTTP/1.1\r\n\r\n",
         414},
        {"GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\nf: 1\r\ng: 1\r\nh: 1\r\ni: "
         "1\r\n\r\n",
         431},
        {"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n", 413},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n",
         0}, /* 100 bytes: fine so far */
        {"GARBAGE\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv_http_in in;
        srv_http_in_init(&in, &lim);
        parse_all(&in, cases[i].req, NULL);
        if (cases[i].status) {
            assert_int_equal(in.state, SRV_IN_ERROR);
            assert_int_equal(in.err_status, cases[i].status);
            assert_non_null(in.err_msg);
        } else {
            assert_int_equal(in.state, SRV_IN_BODY);
        }
        srv_http_in_free(&in);
    }
    /* header bytes over the limit */
    char big[600];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nx: %0300d\r\n\r\n", 0);
    srv_http_in in;
    srv_http_in_init(&in, &lim);
    parse_all(&in, big, NULL);
    assert_int_equal(in.err_status, 431);
    srv_http_in_free(&in);
    /* a chunked body past the limit */
    srv_http_in_init(&in, &lim);
    parse_all(&in, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", NULL);
    char body[110];
    memset(body, 'a', sizeof body);
    srv_http_in_feed(&in, body, sizeof body);
    assert_int_equal(in.state, SRV_IN_ERROR);
    assert_int_equal(in.err_status, 413);
    srv_http_in_free(&in);
}

static void http_parse_expect_continue_and_http10(void **st)
{
    srv_http_in in;
    srv_http_in_init(&in, &lim);
    parse_all(&in, "POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", NULL);
    assert_int_equal(in.state, SRV_IN_BODY);
    assert_true(in.req.expect_continue);
    srv_http_in_free(&in);
    srv_http_in_init(&in, &lim);
    parse_all(&in, "GET / HTTP/1.0\r\n\r\n", NULL);
    assert_int_equal(in.state, SRV_IN_DONE);
    assert_false(in.req.keep_alive);
    assert_int_equal(in.req.minor, 0);
    srv_http_in_reset(&in);
    parse_all(&in, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", NULL);
    assert_true(in.req.keep_alive);
    srv_http_in_free(&in);
}

/* ---- router ----------------------------------------------------------------------- */

static void router_matches_routes_params_and_methods(void **st)
{
    srv_ctx ctx = {0};
    char allow[64];
    int r = srv_route_match(HTTP_POST, "/v1/chat/completions", &ctx, allow, sizeof allow);
    assert_true(r >= 0);
    assert_ptr_equal(srv_routes[r].fn, srv_h_chat_completions);
    r = srv_route_match(HTTP_GET, "/v1/models/org%2Fname/with/slash", &ctx, allow, sizeof allow);
    assert_true(r >= 0);
    assert_ptr_equal(srv_routes[r].fn, srv_h_model);
    assert_int_equal(ctx.n_params, 1);
    assert_string_equal(ctx.params[0], "org/name/with/slash");
    r = srv_route_match(HTTP_GET, "/health", &ctx, allow, sizeof allow);
    assert_true(srv_routes[r].flags & SRV_ROUTE_PUBLIC);
    assert_int_equal(srv_route_match(HTTP_GET, "/v1/chat/completions", &ctx, allow, sizeof allow),
                     -2);
    assert_string_equal(allow, "POST");
    assert_int_equal(srv_route_match(HTTP_GET, "/v1/chat", &ctx, allow, sizeof allow), -1);
    assert_int_equal(srv_route_match(HTTP_GET, "/v1/models/", &ctx, allow, sizeof allow), -1);
    assert_int_equal(srv_route_match(HTTP_GET, "/healthz", &ctx, allow, sizeof allow), -1);
    /* only /health is public */
    for (size_t i = 0; i < srv_n_routes; i++)
        assert_int_equal(!!(srv_routes[i].flags & SRV_ROUTE_PUBLIC),
                         !strcmp(srv_routes[i].pattern, "/health"));
}

/* ---- auth ------------------------------------------------------------------------------- */

static void auth_checks_bearer_keys(void **st)
{
    const char *keys[] = {"alpha-key", "b"};
    assert_true(srv_secret_equal("abc", 3, "abc", 3));
    assert_false(srv_secret_equal("abc", 3, "abd", 3));
    assert_false(srv_secret_equal("abc", 3, "abcabc", 6)); /* not fooled by the modulo */
    assert_false(srv_secret_equal("abc", 3, "ab", 2));
    assert_false(srv_secret_equal("", 0, "", 0));
    assert_true(srv_auth_check(keys, 2, "Bearer alpha-key"));
    assert_true(srv_auth_check(keys, 2, "bearer   b  "));
    assert_false(srv_auth_check(keys, 2, "Bearer alpha-ke"));
    assert_false(srv_auth_check(keys, 2, "Bearer alpha-keyy"));
    assert_false(srv_auth_check(keys, 2, "Basic alpha-key"));
    assert_false(srv_auth_check(keys, 2, "Bearer"));
    assert_false(srv_auth_check(keys, 2, "Bearer "));
    assert_false(srv_auth_check(keys, 2, "Beareralpha-key"));
    assert_false(srv_auth_check(keys, 2, NULL));
}

/* ---- SSE and JSON text ----------------------------------------------------------------- */

static void sse_frames_events(void **st)
{
    srv_buf b = {0};
    srv_sse_event(&b, "{\"a\":1}", 7);
    srv_sse_event(&b, "two\nlines\r\nthree", 16);
    srv_sse_done(&b);
    assert_string_equal(b.p, "data: {\"a\":1}\n\ndata: two\ndata: lines\ndata: three\n\n"
                             "data: [DONE]\n\n");
    srv_buf_free(&b);
}

static void util_json_strings_escape_and_repair_utf8(void **st)
{
    srv_buf b = {0};
    const char in[] = "q\"\\\n\t\x01 \xc3\xa9 \xe2\x82 \xff x";
    srv_buf_json_str(&b, in, sizeof in - 1);
    assert_string_equal(b.p, "\"q\\\"\\\\\\n\\t\\u0001 \xc3\xa9 \xef\xbf\xbd \xef\xbf\xbd x\"");
    srv_buf_reset(&b);
    srv_utf8_sanitize(&b,
                      "\xed\xa0\x80"
                      "a",
                      4); /* a surrogate is invalid */
    assert_string_equal(b.p, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                             "a");
    srv_buf_free(&b);
}

/* ---- OpenAI validation ------------------------------------------------------------------- */

static int parse(int api, const char *body, srv_gen_spec *s, srv_api_error *e)
{
    return srv_openai_parse(api, body, strlen(body), s, e);
}

static void openai_chat_defaults_and_fields(void **st)
{
    srv_gen_spec s;
    srv_api_error e;
    assert_int_equal(
        parse(SRV_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", &s, &e), 0);
    assert_null(s.model);
    assert_false(s.stream);
    assert_int_equal(s.gp.n, 1);
    assert_true(s.gp.sampling.temperature == 1.0f);
    assert_true(s.gp.sampling.top_p == 1.0f);
    assert_false(s.max_tokens_set);
    assert_true(s.add_generation_prompt);
    assert_int_equal(cJSON_GetArraySize(s.messages), 1);
    srv_gen_spec_free(&s);

    const char *all =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\","
        "\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null}],"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"temperature\":0.5,"
        "\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,\"presence_penalty\":0.5,"
        "\"frequency_penalty\":-0.5,\"repetition_penalty\":1.1,\"seed\":42,"
        "\"logit_bias\":{\"7\":-100,\"9\":2.5},\"stop\":[\"x\",\"yz\"],\"stop_token_ids\":[3,4],"
        "\"max_tokens\":5,\"max_completion_tokens\":7,\"n\":3,\"logprobs\":true,\"top_logprobs\":"
        "20,\"ignore_eos\":true,\"user\":\"u\",\"response_format\":{\"type\":\"text\"},"
        "\"tools\":[],\"tool_choice\":\"none\",\"chat_template_kwargs\":{\"enable_thinking\":false}"
        "}";
    assert_int_equal(parse(SRV_API_CHAT, all, &s, &e), 0);
    assert_string_equal(s.model, "m");
    assert_true(s.stream && s.include_usage);
    assert_true(s.gp.sampling.temperature == 0.5f);
    assert_true(s.gp.sampling.top_p == 0.9f);
    assert_int_equal(s.gp.sampling.top_k, 40);
    assert_true(s.gp.sampling.min_p == 0.05f);
    assert_true(s.gp.sampling.presence_penalty == 0.5f);
    assert_true(s.gp.sampling.frequency_penalty == -0.5f);
    assert_true(s.gp.sampling.repetition_penalty == 1.1f);
    assert_true(s.seed_set);
    assert_int_equal(s.gp.sampling.seed, 42);
    assert_int_equal(s.gp.sampling.n_bias, 2);
    assert_int_equal(s.gp.sampling.bias[0].id, 7);
    assert_true(s.gp.sampling.bias[0].delta == -100.0f);
    assert_true(s.gp.sampling.bias[1].rep == 1.0f);
    assert_int_equal(s.n_stops, 2);
    assert_string_equal(s.stops[1], "yz");
    assert_int_equal(s.gp.n_stop_ids, 2);
    assert_int_equal(s.gp.stop_ids[1], 4);
    assert_int_equal(s.gp.max_tokens, 7); /* max_completion_tokens wins */
    assert_true(s.max_tokens_set);
    assert_int_equal(s.gp.n, 3);
    assert_true(s.gp.logprobs);
    assert_int_equal(s.gp.top_logprobs, 20);
    assert_true(s.gp.ignore_eos);
    assert_non_null(s.template_kwargs);
    /* messages normalized: developer -> system, parts joined, null content */
    cJSON *m0 = cJSON_GetArrayItem(s.messages, 0), *m1 = cJSON_GetArrayItem(s.messages, 1),
          *m2 = cJSON_GetArrayItem(s.messages, 2);
    assert_string_equal(cJSON_GetObjectItem(m0, "role")->valuestring, "system");
    assert_string_equal(cJSON_GetObjectItem(m1, "content")->valuestring, "a\nb");
    assert_string_equal(cJSON_GetObjectItem(m2, "content")->valuestring, "");
    srv_gen_spec_free(&s);
}

static void openai_rejects_bad_requests_with_a_param(void **st)
{
    static const struct {
        int api;
        const char *body;
        int status;
        const char *param, *code;
    } cases[] = {
#define CHAT(x) "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]" x "}"
        {SRV_API_CHAT, "", 400, "", "invalid_json"},
        {SRV_API_CHAT, "{", 400, "", "invalid_json"},
        {SRV_API_CHAT, "[]", 400, "", "invalid_json"},
        {SRV_API_CHAT, "{}", 400, "messages", "missing_required_parameter"},
        {SRV_API_CHAT, CHAT(",\"temperature\":-0.1"), 400, "temperature", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"temperature\":2.5"), 400, "temperature", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"temperature\":\"1\""), 400, "temperature", "invalid_type"},
        {SRV_API_CHAT, CHAT(",\"top_p\":0"), 400, "top_p", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"min_p\":1.5"), 400, "min_p", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"top_k\":1.5"), 400, "top_k", "invalid_type"},
        {SRV_API_CHAT, CHAT(",\"presence_penalty\":3"), 400, "presence_penalty", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"repetition_penalty\":0"), 400, "repetition_penalty",
         "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"n\":6"), 400, "n", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"n\":0"), 400, "n", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"max_tokens\":0"), 400, "max_tokens", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"max_tokens\":-5"), 400, "max_tokens", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"logprobs\":true,\"top_logprobs\":21"), 400, "top_logprobs",
         "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"top_logprobs\":2"), 400, "top_logprobs", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"logprobs\":1"), 400, "logprobs", "invalid_type"},
        {SRV_API_CHAT, CHAT(",\"stream_options\":{\"include_usage\":true}"), 400, "stream_options",
         "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"stop\":[\"\"]"), 400, "stop", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"stop\":3"), 400, "stop", "invalid_type"},
        {SRV_API_CHAT, CHAT(",\"logit_bias\":{\"x\":1}"), 400, "logit_bias", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"logit_bias\":{\"1\":101}"), 400, "logit_bias", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"stop_token_ids\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]"), 400,
         "stop_token_ids", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"seed\":1.5"), 400, "seed", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"tools\":[{\"type\":\"function\"}]"), 400, "tools[0]",
         "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"tools\":{}"), 400, "tools", "invalid_type"},
        {SRV_API_CHAT, CHAT(",\"tools\":[{\"type\":\"x\",\"function\":{\"name\":\"f\"}}]"), 400,
         "tools[0]", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]"),
         400, "tools[0]", "invalid_value"},
        {SRV_API_CHAT,
         CHAT(
             ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":3}}]"),
         400, "tools[0]", "invalid_type"},
        {SRV_API_CHAT,
         CHAT(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},{\"type\":"
              "\"function\",\"function\":{\"name\":\"f\"}}]"),
         400, "tools[1]", "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"functions\":[{\"name\":\"\"}]"), 400, "functions[0]",
         "invalid_value"},
        {SRV_API_CHAT, CHAT(",\"tool_choice\":\"required\""), 400, "tool_choice",
         "unsupported_parameter"},
        {SRV_API_CHAT,
         CHAT(",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}"), 400,
         "tool_choice", "unsupported_parameter"},
        {SRV_API_CHAT, CHAT(",\"tool_choice\":\"always\""), 400, "tool_choice", "invalid_value"},
        {SRV_API_CHAT,
         "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[{\"function\":{"
         "\"name\":\"f\"}}]}]}",
         400, "messages[0].tool_calls", "invalid_value"},
        {SRV_API_CHAT,
         "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"type\":\"function\"}]}]}", 400,
         "messages[0].tool_calls[0]", "invalid_value"},
        {SRV_API_CHAT,
         "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"f\","
         "\"arguments\":5}}]}]}",
         400, "messages[0].tool_calls[0]", "invalid_type"},
        {SRV_API_CHAT, CHAT(",\"response_format\":{\"type\":\"json_object\"}"), 400,
         "response_format", "unsupported_parameter"},
        {SRV_API_CHAT, CHAT(",\"prompt\":\"x\""), 400, "prompt", "unknown_parameter"},
        {SRV_API_CHAT, CHAT(",\"temprature\":1"), 400, "temprature", "unknown_parameter"},
        {SRV_API_CHAT, "{\"messages\":[]}", 400, "messages", "invalid_value"},
        {SRV_API_CHAT, "{\"messages\":{}}", 400, "messages", "invalid_type"},
        {SRV_API_CHAT, "{\"messages\":[1]}", 400, "messages[0]", "invalid_type"},
        {SRV_API_CHAT, "{\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}", 400,
         "messages[0].role", "invalid_value"},
        {SRV_API_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content",
         "invalid_value"},
        {SRV_API_CHAT,
         "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400,
         "messages[0].content[0]", "unsupported_content"},
        {SRV_API_CHAT, "{\"model\":5,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", 400,
         "model", "invalid_type"},
        {SRV_API_CHAT, CHAT(",\"n\":1,\"n\":2"), 400, "n", "invalid_value"},
        {SRV_API_COMPLETION, "{\"prompt\":[1],\"prompt\":\"\"}", 400, "prompt", "invalid_value"},
        {SRV_API_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", 400, "prompt", "invalid_value"},
        {SRV_API_COMPLETION, "{\"prompt\":[1,-2]}", 400, "prompt", "invalid_value"},
        {SRV_API_COMPLETION, "{\"prompt\":{}}", 400, "prompt", "invalid_type"},
        {SRV_API_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":21}", 400, "logprobs",
         "invalid_value"},
        {SRV_API_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":true}", 400, "logprobs",
         "invalid_type"},
        {SRV_API_COMPLETION, "{\"prompt\":\"x\",\"echo\":true,\"logprobs\":1}", 400, "echo",
         "unsupported_parameter"},
        {SRV_API_COMPLETION, "{\"prompt\":\"x\",\"best_of\":3}", 400, "best_of",
         "unsupported_parameter"},
        {SRV_API_COMPLETION, "{\"prompt\":\"x\",\"suffix\":\"y\"}", 400, "suffix",
         "unsupported_parameter"},
        {SRV_API_COMPLETION, "{\"prompt\":\"x\",\"messages\":[]}", 400, "messages",
         "unknown_parameter"},
#undef CHAT
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv_gen_spec s;
        srv_api_error e;
        int err = parse(cases[i].api, cases[i].body, &s, &e);
        if (!err) fail_msg("accepted: %s", cases[i].body);
        assert_int_equal(e.status, cases[i].status);
        if (strcmp(e.param, cases[i].param))
            fail_msg("%s: param '%s', want '%s' (%s)", cases[i].body, e.param, cases[i].param,
                     e.message);
        assert_non_null(e.code);
        if (strcmp(e.code, cases[i].code))
            fail_msg("%s: code %s, want %s (%s)", cases[i].body, e.code, cases[i].code, e.message);
        assert_true(strlen(e.message) > 10);
        assert_null(s.messages); /* nothing is left to free */
    }
}

static void openai_completion_prompt_forms(void **st)
{
    srv_gen_spec s;
    srv_api_error e;
    assert_int_equal(parse(SRV_API_COMPLETION, "{\"prompt\":\"abc\",\"echo\":true}", &s, &e), 0);
    assert_string_equal(s.prompt, "abc");
    assert_int_equal(s.prompt_len, 3);
    assert_true(s.echo);
    srv_gen_spec_free(&s);
    assert_int_equal(parse(SRV_API_COMPLETION, "{\"prompt\":[\"abc\"]}", &s, &e), 0);
    assert_string_equal(s.prompt, "abc");
    srv_gen_spec_free(&s);
    assert_int_equal(parse(SRV_API_COMPLETION, "{\"prompt\":[1,2,3],\"logprobs\":3}", &s, &e), 0);
    assert_int_equal(s.n_prompt_ids, 3);
    assert_int_equal(s.prompt_ids[2], 3);
    assert_true(s.gp.logprobs);
    assert_int_equal(s.gp.top_logprobs, 3);
    assert_int_equal(srv_openai_check_vocab(&s, 4, &e), 0);
    assert_int_not_equal(srv_openai_check_vocab(&s, 3, &e), 0);
    assert_string_equal(e.param, "prompt");
    srv_gen_spec_free(&s);
    assert_int_equal(
        parse(SRV_API_COMPLETION, "{\"prompt\":[[5,6]],\"logit_bias\":{\"9\":1}}", &s, &e), 0);
    assert_int_equal(s.n_prompt_ids, 2);
    assert_int_not_equal(srv_openai_check_vocab(&s, 9, &e), 0);
    assert_string_equal(e.param, "logit_bias");
    srv_gen_spec_free(&s);
}

/* ---- allocation failures ------------------------------------------------------------------ */

static long fail_at = -1, n_allocs, live;

static void *count_malloc(size_t n)
{
    if (n_allocs++ == fail_at) return NULL;
    void *p = malloc(n ? n : 1);
    if (p) live++;
    return p;
}

static void *count_realloc(void *p, size_t n)
{
    if (n_allocs++ == fail_at) return NULL;
    void *q = realloc(p, n ? n : 1);
    if (q && !p) live++;
    return q;
}

static void count_free(void *p)
{
    if (p) live--;
    free(p);
}

/* Fail the 1st, 2nd, ... allocation of parsing a request and validating
 * it (cJSON's too): each run ends in an error or a success, and frees
 * everything it allocated. */
static void openai_tools_and_tool_messages(void **st)
{
    (void)st;
    static const char body[] =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\","
        "\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
        "\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"21 C\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"description\":\"d\",\"parameters\":{\"type\":\"object\"}}}]}";
    srv_gen_spec s;
    srv_api_error e;
    assert_int_equal(srv_openai_parse(SRV_API_CHAT, body, strlen(body), &s, &e), 0);
    assert_true(s.tools_on);
    char *tools = cJSON_PrintUnformatted(s.tools);
    assert_string_equal(tools, "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                               "\"description\":\"d\",\"parameters\":{\"type\":\"object\"}}}]");
    cJSON_free(tools);
    /* the call's arguments reach the template as the object they spell */
    char *msgs = cJSON_PrintUnformatted(s.messages);
    assert_string_equal(
        msgs, "[{\"role\":\"user\",\"content\":\"Weather?\"},{\"tool_calls\":[{\"function\":"
              "{\"arguments\":{\"city\":\"Paris\"},\"name\":\"get_weather\"},\"type\":"
              "\"function\",\"id\":\"call_1\"}],\"role\":\"assistant\",\"content\":\"\"},"
              "{\"role\":\"tool\",\"content\":\"21 C\",\"tool_call_id\":\"call_1\"}]");
    cJSON_free(msgs);
    srv_gen_spec_free(&s);

    /* tool_choice "none": the tools are neither rendered nor looked for */
    static const char none[] = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                               "\"functions\":[{\"name\":\"f\"}],\"function_call\":\"none\"}";
    assert_int_equal(srv_openai_parse(SRV_API_CHAT, none, strlen(none), &s, &e), 0);
    assert_non_null(s.tools);
    assert_false(s.tools_on);
    srv_gen_spec_free(&s);
}

static cJSON *weather_tools(void)
{
    return cJSON_Parse("[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}},"
                       "{\"type\":\"function\",\"function\":{\"name\":\"search\"}}]");
}

/* Feed `text` in pieces of `step` bytes; return the content shown. */
static char *filter_run(srv_tool_filter *f, const char *text, size_t step)
{
    srv_buf out = {0};
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i += step)
        srv_tool_filter_feed(f, text + i, n - i < step ? n - i : step, &out);
    srv_buf_puts(&out, "");
    return out.p;
}

static void toolcall_tags_found_in_a_stream(void **st)
{
    (void)st;
    cJSON *tools = weather_tools();
    static const char text[] =
        "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
        "\"Paris\", \"days\": [1, 2]}}\n</tool_call>\n<tool_call>\n{\"name\": \"search\", "
        "\"arguments\": \"{\\\"q\\\": \\\"rain\\\"}\"}";
    /* whatever the pieces, the same content is shown and the same is held */
    for (size_t step = 1; step <= sizeof text; step++) {
        srv_tool_filter f = {.fmt = SRV_TOOLS_TAGS};
        char *shown = filter_run(&f, text, step);
        assert_string_equal(shown, "Let me check.\n");
        assert_int_equal(f.state, SRV_TF_HELD);
        assert_int_equal(f.held.n, strlen(text) - strlen("Let me check.\n"));
        srv_tool_calls calls = {0};
        srv_buf content = {0};
        assert_int_equal(srv_tool_parse(f.fmt, f.held.p, f.held.n, tools, &calls, &content), 0);
        assert_int_equal(calls.n, 2);
        assert_string_equal(calls.v[0].name, "get_weather");
        assert_string_equal(calls.v[0].arguments, "{\"city\":\"Paris\",\"days\":[1,2]}");
        assert_string_equal(calls.v[1].name, "search"); /* unclosed at the end: still a call */
        assert_string_equal(calls.v[1].arguments, "{\"q\":\"rain\"}");
        assert_int_equal(content.n, 0);
        srv_tool_calls_free(&calls);
        srv_buf_free(&content);
        srv_tool_filter_free(&f);
        free(shown);
    }
    /* a partial tag is held only while it can still become one */
    srv_tool_filter f = {.fmt = SRV_TOOLS_TAGS};
    srv_buf out = {0};
    srv_tool_filter_feed(&f, "a <tool_", 8, &out);
    assert_int_equal(out.n, 2);
    srv_tool_filter_feed(&f, "cal", 3, &out);
    assert_int_equal(out.n, 2);
    srv_tool_filter_feed(&f, "x>", 2, &out);
    srv_buf_puts(&out, "");
    assert_string_equal(out.p, "a <tool_calx>");
    assert_int_equal(f.held.n, 0);
    srv_buf_free(&out);
    srv_tool_filter_free(&f);
    cJSON_Delete(tools);
}

static void toolcall_json_answers(void **st)
{
    (void)st;
    cJSON *tools = weather_tools();
    static const struct {
        const char *text;
        size_t n_calls;
        const char *args0, *name1;
    } cases[] = {
        {"{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}", 1,
         "{\"city\":\"Oslo\"}", NULL},
        {"  <|python_tag|>{\"name\": \"get_weather\", \"arguments\": {}}", 1, "{}", NULL},
        {"[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}, "
         "{\"name\": \"search\", \"arguments\": {\"q\": \"x\"}}]",
         2, "{\"city\":\"Rome\"}", "search"},
        {"{\"name\": \"get_weather\"}; {\"type\": \"function\", \"function\": {\"name\": "
         "\"search\", \"arguments\": {\"q\": 1}}}\n",
         2, "{}", "search"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (size_t step = 1; step <= 7; step += 6) {
            srv_tool_filter f = {.fmt = SRV_TOOLS_JSON};
            char *shown = filter_run(&f, cases[i].text, step);
            assert_string_equal(shown, ""); /* all held */
            srv_tool_calls calls = {0};
            srv_buf content = {0};
            assert_int_equal(srv_tool_parse(f.fmt, f.held.p, f.held.n, tools, &calls, &content), 0);
            assert_int_equal(calls.n, cases[i].n_calls);
            assert_string_equal(calls.v[0].arguments, cases[i].args0);
            if (cases[i].name1) assert_string_equal(calls.v[1].name, cases[i].name1);
            assert_int_equal(content.n, 0);
            srv_tool_calls_free(&calls);
            srv_buf_free(&content);
            srv_tool_filter_free(&f);
            free(shown);
        }
    }
    cJSON_Delete(tools);
}

static void toolcall_what_is_not_a_call_stays_text(void **st)
{
    (void)st;
    cJSON *tools = weather_tools();
    /* JSON: an answer that does not start like a call is shown as it comes */
    srv_tool_filter f = {.fmt = SRV_TOOLS_JSON};
    char *shown = filter_run(&f, "  The weather {is} fine", 1);
    assert_string_equal(shown, "  The weather {is} fine");
    assert_int_equal(f.state, SRV_TF_TEXT);
    free(shown);
    srv_tool_filter_free(&f);
    /* held, then found not to be a call: not parsed (the caller shows it) */
    static const char *const not_calls[] = {
        "{\"name\": \"delete_all\", \"arguments\": {}}",          /* not a declared tool */
        "{\"name\": \"get_weather\", \"arguments\": {\"city\": ", /* cut short */
        "{\"name\": \"get_weather\"} and more words",             /* text after it */
        "{\"name\": \"get_weather\", \"arguments\": [1]}",        /* not an object */
        "{\"name\": \"get_weather\", \"arguments\": \"{oops\"}",  /* arguments not JSON */
        "[]",
        "<|python_tag|>",
    };
    for (size_t i = 0; i < sizeof not_calls / sizeof not_calls[0]; i++) {
        srv_tool_calls calls = {0};
        srv_buf content = {0};
        assert_int_equal(srv_tool_parse(SRV_TOOLS_JSON, not_calls[i], strlen(not_calls[i]), tools,
                                        &calls, &content),
                         VKPT_ENOTFOUND);
        assert_int_equal(calls.n, 0);
        assert_int_equal(content.n, 0);
    }
    static const char *const not_tags[] = {
        "<tool_call>\n{\"name\": \"search\", \"arguments\": {}}\nextra</tool_call>",
        "<tool_call>not json</tool_call>",
        "<tool_",
        "no call here",
    };
    for (size_t i = 0; i < sizeof not_tags / sizeof not_tags[0]; i++) {
        srv_tool_calls calls = {0};
        srv_buf content = {0};
        assert_int_equal(srv_tool_parse(SRV_TOOLS_TAGS, not_tags[i], strlen(not_tags[i]), tools,
                                        &calls, &content),
                         VKPT_ENOTFOUND);
        assert_int_equal(calls.n, 0);
    }
    /* text around tag blocks is content */
    static const char mixed[] = "<tool_call>{\"name\": \"search\"}</tool_call>\n Done. ";
    srv_tool_calls calls = {0};
    srv_buf content = {0};
    assert_int_equal(srv_tool_parse(SRV_TOOLS_TAGS, mixed, strlen(mixed), tools, &calls, &content),
                     0);
    assert_int_equal(calls.n, 1);
    srv_buf_puts(&content, "");
    assert_string_equal(content.p, "Done.");
    srv_tool_calls_free(&calls);
    srv_buf_free(&content);
    cJSON_Delete(tools);
}

static void alloc_failures_end_in_errors_without_leaks(void **st)
{
    static const char req[] =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\nf\r\n{\"messages\":[{\"\r\n"
        "92\r\nrole\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]}],\"stop\":[\"a\","
        "\"b\"],\"logit_bias\":{\"1\":2},\"model\":\"m\",\"chat_template_kwargs\":{\"x\":[1,2]},"
        "\"n\":2}\r\n0\r\n\r\n";
    const vkpt_alloc_hooks hooks = {count_malloc, count_realloc, count_free};
    cJSON_Hooks ch = {.malloc_fn = count_malloc, .free_fn = count_free};
    int successes = 0, failures = 0;
    for (fail_at = 0; fail_at < 1000; fail_at++) {
        n_allocs = live = 0;
        vkpt_set_alloc_hooks(&hooks);
        cJSON_InitHooks(&ch);
        srv_http_in in;
        srv_http_in_init(&in, &(srv_http_limits){.max_url = 1024,
                                                 .max_header_bytes = 4096,
                                                 .max_headers = 16,
                                                 .max_body = 4096});
        srv_http_in_feed(&in, req, sizeof req - 1);
        bool ok = false;
        int http_status = in.state == SRV_IN_ERROR ? in.err_status : 0, api_status = 0;
        if (in.state == SRV_IN_DONE) {
            srv_gen_spec s;
            srv_api_error e;
            if (!srv_openai_parse(SRV_API_CHAT, in.req.body.p, in.req.body.n, &s, &e)) {
                ok = true;
                assert_int_equal(s.n_stops, 2);
                assert_int_equal(s.gp.sampling.n_bias, 1);
                srv_gen_spec_free(&s);
            } else {
                api_status = e.status;
            }
        }
        const char *http_msg = in.err_msg;
        srv_http_in_free(&in);
        long allocs = n_allocs;
        cJSON_InitHooks(NULL);
        vkpt_set_alloc_hooks(NULL);
        if (!ok && http_status != 500 && api_status != 400 && api_status != 500)
            fail_msg("failing allocation %ld: HTTP %d (%s), API %d", fail_at, http_status,
                     http_msg ? http_msg : "", api_status);
        if (live != 0) fail_msg("failing allocation %ld leaks %ld blocks", fail_at, live);
        if (ok)
            successes++;
        else
            failures++;
        if (allocs <= fail_at) break; /* nothing failed: every point was tried */
    }
    assert_true(fail_at < 1000);
    assert_int_equal(successes, 1); /* only the run where nothing failed succeeds */
    assert_true(failures > 20);
}

/* The same for tools, tool messages and parsing an answer's tool calls. */
static void tool_alloc_failures_end_in_errors_without_leaks(void **st)
{
    (void)st;
    static const char body[] =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"W?\"},{\"role\":\"assistant\","
        "\"tool_calls\":[{\"id\":\"c\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":1}"
        "\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c\",\"content\":\"1\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
        "{\"type\":\"function\",\"function\":{\"name\":\"g\",\"parameters\":{}}}]}";
    static const char answer[] = "x<tool_call>{\"name\":\"f\",\"arguments\":{\"a\":[1,2]}}"
                                 "</tool_call><tool_call>{\"name\":\"g\"}</tool_call> y";
    const vkpt_alloc_hooks hooks = {count_malloc, count_realloc, count_free};
    cJSON_Hooks ch = {.malloc_fn = count_malloc, .free_fn = count_free};
    int successes = 0, failures = 0;
    for (fail_at = 0; fail_at < 1000; fail_at++) {
        n_allocs = live = 0;
        vkpt_set_alloc_hooks(&hooks);
        cJSON_InitHooks(&ch);
        srv_gen_spec s;
        srv_api_error e;
        bool ok = false;
        int err = srv_openai_parse(SRV_API_CHAT, body, sizeof body - 1, &s, &e);
        if (!err) {
            srv_tool_calls calls = {0};
            srv_buf content = {0};
            int perr = srv_tool_parse(SRV_TOOLS_TAGS, answer, sizeof answer - 1, s.tools, &calls,
                                      &content);
            ok = !perr && srv_buf_ok(&content) && calls.n == 2;
            /* cJSON cannot tell a failed allocation from bad JSON: either
             * way the answer is then shown as text (ENOTFOUND) */
            if (perr && perr != VKPT_ENOMEM && perr != VKPT_ENOTFOUND)
                fail_msg("allocation %ld: parse error %d", fail_at, perr);
            srv_tool_calls_free(&calls);
            srv_buf_free(&content);
            srv_gen_spec_free(&s);
        } else if (e.status != 500 && e.status != 400) {
            fail_msg("failing allocation %ld: API %d", fail_at, e.status);
        }
        long allocs = n_allocs;
        cJSON_InitHooks(NULL);
        vkpt_set_alloc_hooks(NULL);
        if (live != 0) fail_msg("failing allocation %ld leaks %ld blocks", fail_at, live);
        successes += ok;
        failures += !ok;
        if (allocs <= fail_at) {
            assert_true(ok); /* nothing failed: the whole answer parses */
            break;
        }
    }
    assert_true(fail_at < 1000);
    /* a few failures are absorbed: arguments text that cannot be parsed
     * (no memory) reaches the template as the string it is */
    assert_true(successes >= 1 && failures > 50);
}

/* ---- metrics --------------------------------------------------------------------------------- */

static void metrics_histogram_is_cumulative(void **st)
{
    static const double le[] = {0.1, 1.0};
    srv_hist h;
    srv_hist_init(&h, le, 2);
    srv_hist_observe(&h, 0.05);
    srv_hist_observe(&h, 0.1); /* le is inclusive */
    srv_hist_observe(&h, 0.5);
    srv_hist_observe(&h, 7.0);
    srv_buf b = {0};
    srv_hist_write(&b, "t", "model=\"m\"", &h);
    assert_string_equal(b.p, "t_bucket{model=\"m\",le=\"0.1\"} 2\n"
                             "t_bucket{model=\"m\",le=\"1\"} 3\n"
                             "t_bucket{model=\"m\",le=\"+Inf\"} 4\n"
                             "t_sum{model=\"m\"} 7.65\n"
                             "t_count{model=\"m\"} 4\n");
    srv_buf_reset(&b);
    srv_prom_label(&b, "a\"b\\c\nd");
    assert_string_equal(b.p, "a\\\"b\\\\c\\nd");
    srv_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(http_parse_simple_get),
        cmocka_unit_test(http_parse_headers_lowercase_and_body),
        cmocka_unit_test(http_parse_byte_by_byte),
        cmocka_unit_test(http_parse_chunked_body),
        cmocka_unit_test(http_parse_pipelined_requests_one_at_a_time),
        cmocka_unit_test(http_parse_limits_give_the_right_status),
        cmocka_unit_test(http_parse_expect_continue_and_http10),
        cmocka_unit_test(router_matches_routes_params_and_methods),
        cmocka_unit_test(auth_checks_bearer_keys),
        cmocka_unit_test(sse_frames_events),
        cmocka_unit_test(util_json_strings_escape_and_repair_utf8),
        cmocka_unit_test(openai_chat_defaults_and_fields),
        cmocka_unit_test(openai_rejects_bad_requests_with_a_param),
        cmocka_unit_test(openai_completion_prompt_forms),
        cmocka_unit_test(openai_tools_and_tool_messages),
        cmocka_unit_test(toolcall_tags_found_in_a_stream),
        cmocka_unit_test(toolcall_json_answers),
        cmocka_unit_test(toolcall_what_is_not_a_call_stays_text),
        cmocka_unit_test(alloc_failures_end_in_errors_without_leaks),
        cmocka_unit_test(tool_alloc_failures_end_in_errors_without_leaks),
        cmocka_unit_test(metrics_histogram_is_cumulative),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
