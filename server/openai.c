/* The OpenAI-compatible API: validation, answer formats, handlers.
 *
 * Validation rejects what it does not understand rather than ignoring it:
 * an unknown parameter, a wrong type or a value out of range is a 400 that
 * names the parameter and the accepted values. Parameters that do not change
 * the output (user, metadata, store, service_tier) are accepted and ignored;
 * features vkpt does not have (forced tool calls, JSON mode, several
 * prompts at once) are refused by name. Tools are rendered by the model's
 * chat template and its answer is parsed for calls (toolcall.h). */
#include "openai.h"

#include "endpoints.h"
#include "sse.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors --------------------------------------------------------------------- */

static int bad(srv_api_error *e, int status, const char *param, const char *code, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));
static int bad(srv_api_error *e, int status, const char *param, const char *code, const char *fmt,
               ...)
{
    e->status = status;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return VKPT_EINVAL;
}

static int bad_type(srv_api_error *e, const char *param, const char *want)
{
    return bad(e, 400, param, "invalid_type", "%s must be %s", param, want);
}

static const char *json_type(const cJSON *v)
{
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsArray(v)) return "an array";
    return "an object";
}

/* ---- typed getters (null means "not given": the default stays) -------------------- */

static int get_num(srv_api_error *e, const cJSON *v, const char *name, double lo, double hi,
                   bool lo_open, float *out)
{
    if (cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v))
        return bad(e, 400, name, "invalid_type", "%s must be a number, not %s", name, json_type(v));
    double x = v->valuedouble;
    if (!isfinite(x) || x < lo || x > hi || (lo_open && x == lo)) {
        if (lo_open)
            return bad(e, 400, name, "invalid_value",
                       "%s must be greater than %g and at most %g; got %g", name, lo, hi, x);
        return bad(e, 400, name, "invalid_value", "%s must be between %g and %g; got %g", name, lo,
                   hi, x);
    }
    *out = (float)x;
    return 0;
}

static int get_int(srv_api_error *e, const cJSON *v, const char *name, double lo, double hi,
                   int64_t *out)
{
    if (!cJSON_IsNumber(v))
        return bad(e, 400, name, "invalid_type", "%s must be an integer, not %s", name,
                   json_type(v));
    double x = v->valuedouble;
    if (!isfinite(x) || x != floor(x))
        return bad(e, 400, name, "invalid_type", "%s must be an integer; got %g", name, x);
    if (x < lo || x > hi)
        return bad(e, 400, name, "invalid_value", "%s must be between %.0f and %.0f; got %.0f",
                   name, lo, hi, x);
    *out = (int64_t)x;
    return 0;
}

static int get_bool(srv_api_error *e, const cJSON *v, const char *name, bool *out)
{
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsBool(v))
        return bad(e, 400, name, "invalid_type", "%s must be true or false, not %s", name,
                   json_type(v));
    *out = cJSON_IsTrue(v);
    return 0;
}

static int oom(srv_api_error *e)
{
    return bad(e, 500, NULL, NULL, "out of memory reading the request");
}

/* ---- fields ----------------------------------------------------------------------- */

enum {
    A_CHAT = 1u << SRV_API_CHAT,
    A_COMP = 1u << SRV_API_COMPLETION,
    A_BOTH = A_CHAT | A_COMP,
};

enum field_id {
    F_MODEL,
    F_MESSAGES,
    F_PROMPT,
    F_STREAM,
    F_STREAM_OPTIONS,
    F_TEMPERATURE,
    F_TOP_P,
    F_TOP_K,
    F_MIN_P,
    F_PRESENCE,
    F_FREQUENCY,
    F_REPETITION,
    F_SEED,
    F_LOGIT_BIAS,
    F_STOP,
    F_STOP_TOKEN_IDS,
    F_MAX_TOKENS,
    F_MAX_COMPLETION_TOKENS,
    F_N,
    F_LOGPROBS,
    F_TOP_LOGPROBS,
    F_IGNORE_EOS,
    F_ECHO,
    F_SUFFIX,
    F_BEST_OF,
    F_IGNORED, /* accepted, no effect on the output */
    F_RESPONSE_FORMAT,
    F_TOOLS,
    F_TOOL_CHOICE,
    F_TEMPLATE_KWARGS,
    F_ADD_GENERATION_PROMPT,
};

_Static_assert(F_ADD_GENERATION_PROMPT < 64, "field ids are bits of a uint64_t");

static const struct {
    const char *name;
    int id;
    unsigned apis;
} fields[] = {
    {"model", F_MODEL, A_BOTH},
    {"messages", F_MESSAGES, A_CHAT},
    {"prompt", F_PROMPT, A_COMP},
    {"stream", F_STREAM, A_BOTH},
    {"stream_options", F_STREAM_OPTIONS, A_BOTH},
    {"temperature", F_TEMPERATURE, A_BOTH},
    {"top_p", F_TOP_P, A_BOTH},
    {"top_k", F_TOP_K, A_BOTH},
    {"min_p", F_MIN_P, A_BOTH},
    {"presence_penalty", F_PRESENCE, A_BOTH},
    {"frequency_penalty", F_FREQUENCY, A_BOTH},
    {"repetition_penalty", F_REPETITION, A_BOTH},
    {"seed", F_SEED, A_BOTH},
    {"logit_bias", F_LOGIT_BIAS, A_BOTH},
    {"stop", F_STOP, A_BOTH},
    {"stop_token_ids", F_STOP_TOKEN_IDS, A_BOTH},
    {"max_tokens", F_MAX_TOKENS, A_BOTH},
    {"max_completion_tokens", F_MAX_COMPLETION_TOKENS, A_CHAT},
    {"n", F_N, A_BOTH},
    {"logprobs", F_LOGPROBS, A_BOTH},
    {"top_logprobs", F_TOP_LOGPROBS, A_CHAT},
    {"ignore_eos", F_IGNORE_EOS, A_BOTH},
    {"echo", F_ECHO, A_COMP},
    {"suffix", F_SUFFIX, A_COMP},
    {"best_of", F_BEST_OF, A_COMP},
    {"user", F_IGNORED, A_BOTH},
    {"metadata", F_IGNORED, A_BOTH},
    {"store", F_IGNORED, A_CHAT},
    {"service_tier", F_IGNORED, A_BOTH},
    {"parallel_tool_calls", F_IGNORED, A_CHAT},
    {"response_format", F_RESPONSE_FORMAT, A_CHAT},
    {"tools", F_TOOLS, A_CHAT},
    {"functions", F_TOOLS, A_CHAT},
    {"tool_choice", F_TOOL_CHOICE, A_CHAT},
    {"function_call", F_TOOL_CHOICE, A_CHAT},
    {"chat_template_kwargs", F_TEMPLATE_KWARGS, A_CHAT},
    {"add_generation_prompt", F_ADD_GENERATION_PROMPT, A_CHAT},
};

static int field_id(const char *name, int api)
{
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!strcmp(fields[i].name, name))
            return (fields[i].apis & (1u << api)) ? fields[i].id : -2;
    return -1;
}

/* ---- messages ----------------------------------------------------------------------- */

/* Join a content-part array's text parts ("\n" between them). */
static int content_text(srv_api_error *e, const cJSON *content, const char *where, srv_buf *out)
{
    if (cJSON_IsString(content)) {
        srv_buf_puts(out, content->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(content)) {
        char p[64];
        snprintf(p, sizeof p, "%s.content", where);
        return bad(e, 400, p, "invalid_type",
                   "%s must be a string or an array of text parts, not %s", p, json_type(content));
    }
    int k = 0;
    for (const cJSON *part = content->child; part; part = part->next, k++) {
        char p[64];
        snprintf(p, sizeof p, "%s.content[%d]", where, k);
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type))
            return bad(e, 400, p, "invalid_type", "%s must be an object with a \"type\"", p);
        if (strcmp(type->valuestring, "text"))
            return bad(e, 400, p, "unsupported_content",
                       "%s has type \"%s\"; this server takes only \"text\" parts", p,
                       type->valuestring);
        if (!cJSON_IsString(text))
            return bad(e, 400, p, "invalid_type", "%s.text must be a string", p);
        if (k) srv_buf_puts(out, "\n");
        srv_buf_puts(out, text->valuestring);
    }
    return 0;
}

/* A function name as OpenAI allows them: [A-Za-z0-9_-], 1..64. */
static bool function_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (!n || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* An assistant message's tool_calls, [{id?, type?, function: {name,
 * arguments}}], for the template: arguments given as JSON text become the
 * object they spell (templates write them with tojson). */
static int parse_message_calls(srv_api_error *e, const cJSON *calls, const char *where, cJSON **out)
{
    if (!cJSON_IsArray(calls)) return bad_type(e, where, "an array of tool calls");
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return oom(e);
    int k = 0;
    for (const cJSON *c = calls->child; c; c = c->next, k++) {
        char p[96];
        snprintf(p, sizeof p, "%s[%d]", where, k);
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(c, "id");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(c, "type");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        int err = 0;
        if (!cJSON_IsObject(c) || !cJSON_IsObject(fn) || !cJSON_IsString(name))
            err = bad(e, 400, p, "invalid_value",
                      "%s must be {\"id\", \"type\": \"function\", \"function\": {\"name\", "
                      "\"arguments\"}}",
                      p);
        else if (type && !(cJSON_IsString(type) && !strcmp(type->valuestring, "function")))
            err = bad(e, 400, p, "invalid_value", "%s.type must be \"function\"", p);
        else if (id && !cJSON_IsString(id))
            err = bad(e, 400, p, "invalid_type", "%s.id must be a string", p);
        else if (args && !cJSON_IsString(args) && !cJSON_IsObject(args))
            err = bad(e, 400, p, "invalid_type",
                      "%s.function.arguments must be a string of JSON (or an object)", p);
        if (err) {
            cJSON_Delete(arr);
            return err;
        }
        cJSON *o = cJSON_CreateObject(), *f = cJSON_CreateObject();
        cJSON *a = cJSON_IsString(args) ? cJSON_Parse(args->valuestring) : NULL;
        if (a && !cJSON_IsObject(a)) {
            cJSON_Delete(a);
            a = NULL;
        }
        if (!a)
            a = cJSON_IsObject(args)   ? cJSON_Duplicate(args, 1)
                : cJSON_IsString(args) ? cJSON_CreateString(args->valuestring)
                                       : cJSON_CreateObject();
        if (!o || !f || !a) {
            cJSON_Delete(o);
            cJSON_Delete(f);
            cJSON_Delete(a);
            cJSON_Delete(arr);
            return oom(e);
        }
        cJSON_AddItemToArray(arr, o);
        if (!cJSON_AddItemToObject(o, "function", f)) {
            cJSON_Delete(f);
            cJSON_Delete(a);
            cJSON_Delete(arr);
            return oom(e);
        }
        if (!cJSON_AddItemToObject(f, "arguments", a)) {
            cJSON_Delete(a);
            cJSON_Delete(arr);
            return oom(e);
        }
        if (!cJSON_AddStringToObject(f, "name", name->valuestring) ||
            !cJSON_AddStringToObject(o, "type", "function") ||
            (id && !cJSON_AddStringToObject(o, "id", id->valuestring))) {
            cJSON_Delete(arr);
            return oom(e);
        }
    }
    *out = arr;
    return 0;
}

/* tools: [{type: "function", function: {name, description?, parameters?}}];
 * the older functions: [{name, description?, parameters?}]. Kept in the
 * first form; an empty list is no tools. */
static int parse_tools(srv_api_error *e, const cJSON *v, const char *name, srv_gen_spec *s)
{
    if (cJSON_IsNull(v)) return 0;
    if (!cJSON_IsArray(v)) return bad_type(e, name, "an array of tools");
    bool legacy = !strcmp(name, "functions");
    cJSON *out = cJSON_CreateArray();
    if (!out) return oom(e);
    int k = 0, err = 0;
    for (const cJSON *t = v->child; t && !err; t = t->next, k++) {
        char p[64];
        snprintf(p, sizeof p, "%s[%d]", name, k);
        const cJSON *fn = legacy ? t : cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(t, "type");
        const cJSON *fname = cJSON_GetObjectItemCaseSensitive(fn, "name");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(fn, "description");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
        if (!legacy && !(cJSON_IsString(type) && !strcmp(type->valuestring, "function")))
            err = bad(e, 400, p, "invalid_value",
                      "%s must be {\"type\": \"function\", \"function\": {\"name\", "
                      "\"description\", \"parameters\"}}",
                      p);
        else if (!cJSON_IsObject(fn) || !cJSON_IsString(fname) ||
                 !function_name_ok(fname->valuestring))
            err = bad(e, 400, p, "invalid_value",
                      "%s needs a function name of 1 to 64 letters, digits, '_' or '-'", p);
        else if (desc && !cJSON_IsNull(desc) && !cJSON_IsString(desc))
            err = bad(e, 400, p, "invalid_type", "%s: description must be a string", p);
        else if (params && !cJSON_IsNull(params) && !cJSON_IsObject(params))
            err = bad(e, 400, p, "invalid_type", "%s: parameters must be a JSON Schema object", p);
        for (const cJSON *o = out->child; o && !err; o = o->next) {
            const cJSON *on = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(o, "function"), "name");
            if (!strcmp(on->valuestring, fname->valuestring))
                err = bad(e, 400, p, "invalid_value", "%s: the function name \"%s\" is used twice",
                          p, fname->valuestring);
        }
        if (err) break;
        cJSON *w = cJSON_CreateObject(), *f = cJSON_Duplicate(fn, 1);
        if (!w || !f || !cJSON_AddStringToObject(w, "type", "function")) {
            cJSON_Delete(w);
            cJSON_Delete(f);
            err = oom(e);
            break;
        }
        cJSON_AddItemToArray(out, w);
        if (!cJSON_AddItemToObject(w, "function", f)) {
            cJSON_Delete(f);
            err = oom(e);
            break;
        }
    }
    if (err || !out->child) {
        cJSON_Delete(out);
        return err;
    }
    cJSON_Delete(s->tools);
    s->tools = out;
    return 0;
}

/* tool_choice / function_call: "auto" (default) or "none". Forcing a call
 * ("required", or a named function) needs constrained decoding. */
static int parse_tool_choice(srv_api_error *e, const cJSON *v, const char *name, bool *none)
{
    if (cJSON_IsNull(v)) return 0;
    if (cJSON_IsString(v) && (!strcmp(v->valuestring, "none") || !strcmp(v->valuestring, "auto"))) {
        *none = !strcmp(v->valuestring, "none");
        return 0;
    }
    if (cJSON_IsString(v) && strcmp(v->valuestring, "required"))
        return bad(e, 400, name, "invalid_value", "%s must be \"auto\", \"none\" or \"required\"",
                   name);
    return bad(e, 400, name, "unsupported_parameter",
               "%s: forcing a tool call (\"required\" or a named function) is not supported; "
               "use \"auto\" (the model decides) or \"none\"",
               name);
}

static int parse_messages(srv_api_error *e, const cJSON *v, srv_gen_spec *s)
{
    if (!cJSON_IsArray(v)) return bad_type(e, "messages", "an array of messages");
    if (!v->child)
        return bad(e, 400, "messages", "invalid_value", "messages must have at least one message");
    cJSON *out = cJSON_CreateArray();
    if (!out) return oom(e);
    s->messages = out;
    int i = 0;
    srv_buf text = {0};
    for (const cJSON *m = v->child; m; m = m->next, i++) {
        char where[32];
        snprintf(where, sizeof where, "messages[%d]", i);
        if (!cJSON_IsObject(m)) {
            srv_buf_free(&text);
            return bad(e, 400, where, "invalid_type", "%s must be an object with role and content",
                       where);
        }
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
        const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
        const cJSON *call_id = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
        char p[64];
        snprintf(p, sizeof p, "%s.role", where);
        if (!cJSON_IsString(role)) {
            srv_buf_free(&text);
            return bad(e, 400, p, "invalid_type",
                       "%s must be one of \"system\", \"developer\", \"user\", \"assistant\", "
                       "\"tool\"",
                       p);
        }
        const char *r = role->valuestring;
        if (!strcmp(r, "developer")) r = "system"; /* templates know "system" */
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") &&
            strcmp(r, "tool")) {
            srv_buf_free(&text);
            return bad(e, 400, p, "invalid_value",
                       "%s is \"%s\"; use \"system\", \"developer\", \"user\", \"assistant\" or "
                       "\"tool\"",
                       p, role->valuestring);
        }
        cJSON *tcalls = NULL;
        if (calls && !cJSON_IsNull(calls) && !(cJSON_IsArray(calls) && !calls->child)) {
            snprintf(p, sizeof p, "%s.tool_calls", where);
            if (strcmp(r, "assistant")) {
                srv_buf_free(&text);
                return bad(e, 400, p, "invalid_value",
                           "%s: only assistant messages make tool calls", p);
            }
            if (parse_message_calls(e, calls, p, &tcalls)) {
                srv_buf_free(&text);
                return VKPT_EINVAL;
            }
        }
        srv_buf_reset(&text);
        if (!content || cJSON_IsNull(content)) {
            if (strcmp(r, "assistant")) {
                srv_buf_free(&text);
                snprintf(p, sizeof p, "%s.content", where);
                return bad(e, 400, p, "invalid_value", "%s is required for a %s message", p, r);
            }
        } else if (content_text(e, content, where, &text)) {
            cJSON_Delete(tcalls);
            srv_buf_free(&text);
            return VKPT_EINVAL;
        }
        if (name && !cJSON_IsNull(name) && !cJSON_IsString(name)) {
            cJSON_Delete(tcalls);
            srv_buf_free(&text);
            snprintf(p, sizeof p, "%s.name", where);
            return bad_type(e, p, "a string");
        }
        cJSON *o = cJSON_CreateObject();
        if (!o || !srv_buf_ok(&text)) {
            cJSON_Delete(o);
            cJSON_Delete(tcalls);
            srv_buf_free(&text);
            return oom(e);
        }
        cJSON_AddItemToArray(out, o);
        if (tcalls && !cJSON_AddItemToObject(o, "tool_calls", tcalls)) {
            cJSON_Delete(tcalls);
            srv_buf_free(&text);
            return oom(e);
        }
        if (!cJSON_AddStringToObject(o, "role", r) ||
            !cJSON_AddStringToObject(o, "content", text.p ? text.p : "") ||
            (cJSON_IsString(name) && !cJSON_AddStringToObject(o, "name", name->valuestring)) ||
            (cJSON_IsString(call_id) &&
             !cJSON_AddStringToObject(o, "tool_call_id", call_id->valuestring))) {
            srv_buf_free(&text);
            return oom(e);
        }
    }
    srv_buf_free(&text);
    return 0;
}

/* ---- completions prompt ---------------------------------------------------------------- */

static int token_array(srv_api_error *e, const cJSON *a, const char *name, int32_t **ids, size_t *n)
{
    size_t k = (size_t)cJSON_GetArraySize(a);
    if (k == 0) return bad(e, 400, name, "invalid_value", "%s must not be empty", name);
    int32_t *v = vkpt_malloc(k * sizeof *v);
    if (!v) return oom(e);
    size_t i = 0;
    for (const cJSON *t = a->child; t; t = t->next, i++) {
        int64_t x;
        if (get_int(e, t, name, 0, INT32_MAX, &x)) {
            vkpt_free(v);
            return VKPT_EINVAL;
        }
        v[i] = (int32_t)x;
    }
    *ids = v;
    *n = k;
    return 0;
}

static int parse_prompt(srv_api_error *e, const cJSON *v, srv_gen_spec *s)
{
    const char *multi = "one prompt per request is supported: send the prompts as separate "
                        "requests";
    if (cJSON_IsString(v)) {
        s->prompt_len = strlen(v->valuestring);
        s->prompt = vkpt_strdup(v->valuestring);
        return s->prompt ? 0 : oom(e);
    }
    if (!cJSON_IsArray(v) || !v->child)
        return bad(e, 400, "prompt", cJSON_IsArray(v) ? "invalid_value" : "invalid_type",
                   "prompt must be a string, an array of token ids, or a one-element array of "
                   "either");
    if (cJSON_IsNumber(v->child))
        return token_array(e, v, "prompt", &s->prompt_ids, &s->n_prompt_ids);
    if (v->child->next) return bad(e, 400, "prompt", "invalid_value", "%s", multi);
    if (cJSON_IsString(v->child)) return parse_prompt(e, v->child, s);
    if (cJSON_IsArray(v->child) && cJSON_IsNumber(v->child->child))
        return token_array(e, v->child, "prompt", &s->prompt_ids, &s->n_prompt_ids);
    return bad(e, 400, "prompt", "invalid_type",
               "prompt must be a string, an array of token ids, or a one-element array of either");
}

/* ---- other structured fields ------------------------------------------------------------ */

static int parse_stop(srv_api_error *e, const cJSON *v, srv_gen_spec *s)
{
    if (cJSON_IsNull(v)) return 0;
    size_t n = cJSON_IsString(v) ? 1 : cJSON_IsArray(v) ? (size_t)cJSON_GetArraySize(v) : 0;
    if (!cJSON_IsString(v) && !cJSON_IsArray(v))
        return bad_type(e, "stop", "a string or an array of strings");
    if (n > SRV_MAX_STOPS)
        return bad(e, 400, "stop", "invalid_value", "stop takes at most %d strings; got %zu",
                   SRV_MAX_STOPS, n);
    if (n == 0) return 0;
    s->stops = vkpt_calloc(n, sizeof *s->stops);
    if (!s->stops) return oom(e);
    const cJSON *it = cJSON_IsString(v) ? v : v->child;
    for (size_t i = 0; i < n; i++, it = it->next) {
        if (!cJSON_IsString(it)) return bad_type(e, "stop", "a string or an array of strings");
        size_t len = strlen(it->valuestring);
        if (len == 0 || len > SRV_MAX_STOP_LEN)
            return bad(e, 400, "stop", "invalid_value",
                       "each stop string must have 1 to %d bytes; got %zu", SRV_MAX_STOP_LEN, len);
        if (!(s->stops[i] = vkpt_strdup(it->valuestring))) return oom(e);
        s->n_stops = i + 1;
    }
    return 0;
}

static int parse_logit_bias(srv_api_error *e, const cJSON *v, srv_gen_spec *s)
{
    if (cJSON_IsNull(v)) return 0;
    if (!cJSON_IsObject(v))
        return bad_type(e, "logit_bias", "an object mapping token ids to biases (-100..100)");
    size_t n = (size_t)cJSON_GetArraySize(v);
    if (n > SRV_MAX_LOGIT_BIAS)
        return bad(e, 400, "logit_bias", "invalid_value",
                   "logit_bias takes at most %d entries; got %zu", SRV_MAX_LOGIT_BIAS, n);
    if (n == 0) return 0;
    s->bias = vkpt_calloc(n, sizeof *s->bias);
    if (!s->bias) return oom(e);
    size_t i = 0;
    for (const cJSON *kv = v->child; kv; kv = kv->next, i++) {
        char *end = NULL;
        long id = strtol(kv->string, &end, 10);
        if (!kv->string[0] || *end || id < 0 || id > INT32_MAX)
            return bad(e, 400, "logit_bias", "invalid_value",
                       "logit_bias keys must be token ids; got \"%s\"", kv->string);
        float bias = 0;
        if (cJSON_IsNull(kv)) return bad_type(e, "logit_bias", "an object of numbers");
        if (get_num(e, kv, "logit_bias", -100, 100, false, &bias)) return VKPT_EINVAL;
        s->bias[i] = (vkpt_logit_edit){.id = (uint32_t)id, .rep = 1.0f, .delta = bias};
    }
    s->gp.sampling.bias = s->bias;
    s->gp.sampling.n_bias = (uint32_t)n;
    return 0;
}

static int parse_stop_ids(srv_api_error *e, const cJSON *v, srv_gen_spec *s)
{
    if (cJSON_IsNull(v)) return 0;
    if (!cJSON_IsArray(v)) return bad_type(e, "stop_token_ids", "an array of token ids");
    size_t n = (size_t)cJSON_GetArraySize(v);
    if (n > VKPT_MAX_STOP_IDS)
        return bad(e, 400, "stop_token_ids", "invalid_value",
                   "stop_token_ids takes at most %d ids; got %zu", VKPT_MAX_STOP_IDS, n);
    size_t i = 0;
    for (const cJSON *t = v->child; t; t = t->next, i++) {
        int64_t x;
        if (get_int(e, t, "stop_token_ids", 0, INT32_MAX, &x)) return VKPT_EINVAL;
        s->gp.stop_ids[i] = (int32_t)x;
    }
    s->gp.n_stop_ids = (uint32_t)n;
    return 0;
}

static int parse_stream_options(srv_api_error *e, const cJSON *v, srv_gen_spec *s, bool *given)
{
    if (cJSON_IsNull(v)) return 0;
    if (!cJSON_IsObject(v)) return bad_type(e, "stream_options", "an object");
    *given = true;
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(v, "include_usage");
    if (iu) return get_bool(e, iu, "stream_options.include_usage", &s->include_usage);
    return 0;
}

static int parse_unsupported(srv_api_error *e, const cJSON *v, int id, const char *name)
{
    if (cJSON_IsNull(v)) return 0;
    switch (id) {
    case F_RESPONSE_FORMAT: {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(v, "type");
        if (cJSON_IsObject(v) && cJSON_IsString(t) && !strcmp(t->valuestring, "text")) return 0;
        return bad(e, 400, name, "unsupported_parameter",
                   "response_format: only {\"type\": \"text\"} is supported");
    }
    case F_SUFFIX:
        if (cJSON_IsString(v) && !v->valuestring[0]) return 0;
        return bad(e, 400, name, "unsupported_parameter", "suffix (insertion) is not supported");
    }
    return 0;
}

/* ---- the request ------------------------------------------------------------------------ */

int srv_openai_parse(int api, const char *body, size_t n, srv_gen_spec *s, srv_api_error *e)
{
    memset(s, 0, sizeof *s);
    memset(e, 0, sizeof *e);
    s->api = api;
    s->gp.sampling = (vkpt_sampling)VKPT_SAMPLING_DEFAULT;
    s->gp.n = 1;
    s->add_generation_prompt = true;
    if (n == 0)
        return bad(e, 400, NULL, "invalid_json", "the request body is empty: send a JSON object");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, n, &end, 0);
    if (!root) {
        size_t at = end && end >= body && end <= body + n ? (size_t)(end - body) : 0;
        return bad(e, 400, NULL, "invalid_json",
                   "the request body is not valid JSON (error near byte %zu of %zu)", at, n);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return bad(e, 400, NULL, "invalid_json", "the request body must be a JSON object");
    }
    int err = 0;
    bool have_prompt = false, stream_options = false, max_completion = false, tools_none = false;
    const cJSON *logprobs_v = NULL, *top_logprobs_v = NULL, *best_of_v = NULL;
    uint64_t seen = 0; /* field ids given: a repeated key is refused */
    for (const cJSON *v = root->child; v && !err; v = v->next) {
        const char *name = v->string;
        int id = field_id(name, api);
        if (id == -1) {
            err = bad(e, 400, name, "unknown_parameter",
                      "Unrecognized request argument supplied: %s", name);
            break;
        }
        if (id == -2) {
            err = bad(e, 400, name, "unknown_parameter", "%s is not a parameter of %s", name,
                      api == SRV_API_CHAT ? "/v1/chat/completions" : "/v1/completions");
            break;
        }
        if (id != F_IGNORED && (seen & (1ull << id))) {
            err = bad(e, 400, name, "invalid_value", "%s is given twice", name);
            break;
        }
        seen |= 1ull << id;
        vkpt_sampling *sp = &s->gp.sampling;
        int64_t x;
        switch (id) {
        case F_MODEL:
            if (cJSON_IsNull(v)) break;
            if (!cJSON_IsString(v)) {
                err = bad_type(e, "model", "a string (see GET /v1/models)");
                break;
            }
            vkpt_free(s->model);
            if (!(s->model = vkpt_strdup(v->valuestring))) err = oom(e);
            break;
        case F_MESSAGES:
            cJSON_Delete(s->messages);
            s->messages = NULL;
            err = parse_messages(e, v, s);
            have_prompt = true;
            break;
        case F_PROMPT:
            vkpt_free(s->prompt);
            vkpt_free(s->prompt_ids);
            s->prompt = NULL;
            s->prompt_ids = NULL;
            err = parse_prompt(e, v, s);
            have_prompt = true;
            break;
        case F_STREAM: err = get_bool(e, v, name, &s->stream); break;
        case F_STREAM_OPTIONS: err = parse_stream_options(e, v, s, &stream_options); break;
        case F_TEMPERATURE:
            err = get_num(e, v, name, 0, SRV_MAX_TEMPERATURE, false, &sp->temperature);
            break;
        case F_TOP_P: err = get_num(e, v, name, 0, 1, true, &sp->top_p); break;
        case F_MIN_P: err = get_num(e, v, name, 0, 1, false, &sp->min_p); break;
        case F_PRESENCE: err = get_num(e, v, name, -2, 2, false, &sp->presence_penalty); break;
        case F_FREQUENCY: err = get_num(e, v, name, -2, 2, false, &sp->frequency_penalty); break;
        case F_REPETITION: err = get_num(e, v, name, 0, 10, true, &sp->repetition_penalty); break;
        case F_TOP_K:
            if (cJSON_IsNull(v)) break;
            /* -1 is "off" in vLLM's API, 0 in vkpt's */
            if (!(err = get_int(e, v, name, -1, INT32_MAX, &x)))
                sp->top_k = x < 0 ? 0 : (uint32_t)x;
            break;
        case F_SEED: {
            if (cJSON_IsNull(v)) break;
            double d = v->valuedouble;
            if (!cJSON_IsNumber(v) || !isfinite(d) || d != floor(d) || d < -9.2233720368547758e18 ||
                d >= 1.8446744073709552e19) {
                err = bad(e, 400, name, cJSON_IsNumber(v) ? "invalid_value" : "invalid_type",
                          "seed must be a 64-bit integer");
                break;
            }
            sp->seed = d < 0 ? (uint64_t)(int64_t)d : (uint64_t)d;
            s->seed_set = true;
            break;
        }
        case F_LOGIT_BIAS:
            vkpt_free(s->bias);
            s->bias = NULL;
            err = parse_logit_bias(e, v, s);
            break;
        case F_STOP:
            for (size_t i = 0; i < s->n_stops; i++) vkpt_free(s->stops[i]);
            vkpt_free(s->stops);
            s->stops = NULL;
            s->n_stops = 0;
            err = parse_stop(e, v, s);
            break;
        case F_STOP_TOKEN_IDS: err = parse_stop_ids(e, v, s); break;
        case F_MAX_TOKENS:
        case F_MAX_COMPLETION_TOKENS:
            if (cJSON_IsNull(v)) break;
            if (!(err = get_int(e, v, name, 1, 1 << 30, &x))) {
                /* max_completion_tokens is the newer name: it wins */
                if (id == F_MAX_COMPLETION_TOKENS || !max_completion)
                    s->gp.max_tokens = (uint32_t)x;
                if (id == F_MAX_COMPLETION_TOKENS) max_completion = true;
                s->max_tokens_set = true;
            }
            break;
        case F_N:
            if (cJSON_IsNull(v)) break;
            if (!(err = get_int(e, v, name, 1, VKPT_MAX_CHOICES, &x))) s->gp.n = (uint32_t)x;
            break;
        case F_LOGPROBS: logprobs_v = v; break;
        case F_TOP_LOGPROBS: top_logprobs_v = v; break;
        case F_IGNORE_EOS: err = get_bool(e, v, name, &s->gp.ignore_eos); break;
        case F_ECHO: err = get_bool(e, v, name, &s->echo); break;
        case F_BEST_OF: best_of_v = v; break;
        case F_TEMPLATE_KWARGS:
            if (cJSON_IsNull(v)) break;
            if (!cJSON_IsObject(v)) {
                err = bad_type(e, name, "an object of template variables");
                break;
            }
            cJSON_Delete(s->template_kwargs);
            if (!(s->template_kwargs = cJSON_Duplicate(v, 1))) err = oom(e);
            break;
        case F_ADD_GENERATION_PROMPT: err = get_bool(e, v, name, &s->add_generation_prompt); break;
        case F_TOOLS:
            if (s->tools && !cJSON_IsNull(v))
                err = bad(e, 400, name, "invalid_value", "give tools or functions, not both");
            else
                err = parse_tools(e, v, name, s);
            break;
        case F_TOOL_CHOICE: err = parse_tool_choice(e, v, name, &tools_none); break;
        case F_IGNORED: break;
        default: err = parse_unsupported(e, v, id, name); break;
        }
    }
    /* logprobs: a boolean (+ top_logprobs) in chat, a count in completions */
    if (!err && logprobs_v && !cJSON_IsNull(logprobs_v)) {
        if (api == SRV_API_CHAT) {
            err = get_bool(e, logprobs_v, "logprobs", &s->gp.logprobs);
        } else {
            int64_t x;
            if (cJSON_IsBool(logprobs_v))
                err = bad(e, 400, "logprobs", "invalid_type",
                          "logprobs in /v1/completions is the number of alternatives (0..%d), "
                          "not a boolean",
                          VKPT_MAX_TOP_LOGPROBS);
            else if (!(err = get_int(e, logprobs_v, "logprobs", 0, VKPT_MAX_TOP_LOGPROBS, &x))) {
                s->gp.logprobs = true;
                s->gp.top_logprobs = (uint32_t)x;
            }
        }
    }
    if (!err && top_logprobs_v && !cJSON_IsNull(top_logprobs_v)) {
        int64_t x;
        if (!(err = get_int(e, top_logprobs_v, "top_logprobs", 0, VKPT_MAX_TOP_LOGPROBS, &x))) {
            s->gp.top_logprobs = (uint32_t)x;
            if (x > 0 && !s->gp.logprobs)
                err = bad(e, 400, "top_logprobs", "invalid_value",
                          "top_logprobs needs \"logprobs\": true");
        }
    }
    if (!err && best_of_v && !cJSON_IsNull(best_of_v)) {
        int64_t x;
        if (!(err = get_int(e, best_of_v, "best_of", 1, VKPT_MAX_CHOICES, &x)) &&
            (uint32_t)x != s->gp.n)
            err = bad(e, 400, "best_of", "unsupported_parameter",
                      "best_of must equal n (choosing the best of several is not supported)");
    }
    s->tools_on = s->tools && !tools_none;
    if (!err && !have_prompt)
        err = bad(e, 400, api == SRV_API_CHAT ? "messages" : "prompt", "missing_required_parameter",
                  "%s is required", api == SRV_API_CHAT ? "messages" : "prompt");
    if (!err && stream_options && !s->stream)
        err = bad(e, 400, "stream_options", "invalid_value",
                  "stream_options is only allowed when stream is true");
    if (!err && s->echo && s->gp.logprobs)
        err = bad(e, 400, "echo", "unsupported_parameter",
                  "echo with logprobs (prompt logprobs) is not supported");
    cJSON_Delete(root);
    if (err) srv_gen_spec_free(s);
    return err;
}

int srv_openai_check_vocab(const srv_gen_spec *s, uint32_t n_vocab, srv_api_error *e)
{
    for (uint32_t i = 0; i < s->gp.sampling.n_bias; i++)
        if (s->gp.sampling.bias[i].id >= n_vocab)
            return bad(e, 400, "logit_bias", "invalid_value",
                       "logit_bias: token id %u is outside the vocabulary (0..%u)",
                       s->gp.sampling.bias[i].id, n_vocab - 1);
    for (uint32_t i = 0; i < s->gp.n_stop_ids; i++)
        if ((uint32_t)s->gp.stop_ids[i] >= n_vocab)
            return bad(e, 400, "stop_token_ids", "invalid_value",
                       "stop_token_ids: token id %d is outside the vocabulary (0..%u)",
                       s->gp.stop_ids[i], n_vocab - 1);
    for (size_t i = 0; i < s->n_prompt_ids; i++)
        if ((uint32_t)s->prompt_ids[i] >= n_vocab)
            return bad(e, 400, "prompt", "invalid_value",
                       "prompt: token id %d is outside the vocabulary (0..%u)", s->prompt_ids[i],
                       n_vocab - 1);
    return 0;
}

/* ---- answers ------------------------------------------------------------------------------ */

static void json_float(srv_buf *o, float x)
{
    /* OpenAI writes -9999.0 for impossible tokens; JSON has no infinities */
    if (!isfinite(x)) x = -9999.0f;
    srv_buf_printf(o, "%.9g", (double)x);
}

static vkpt_span token_text(const srv_gen *g, int32_t id)
{
    const vkpt_tokenizer *t = g->model->tok;
    vkpt_span s = vkpt_tokenizer_piece(t, id);
    if (!s.n && vkpt_tokenizer_is_special(t, id)) s = vkpt_tokenizer_token(t, id);
    if (!s.p) s = (vkpt_span){"", 0};
    return s;
}

static void head(const srv_gen *g, srv_buf *o, const char *object)
{
    srv_buf_printf(o, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", g->id, object,
                   (long long)g->created);
    srv_buf_json_str(o, g->model->id, strlen(g->model->id));
    srv_buf_puts(o, ",\"system_fingerprint\":\"vkpt-" VKPT_VERSION_STRING "\"");
}

static void usage(const srv_gen *g, srv_buf *o)
{
    srv_buf_printf(o,
                   "{\"prompt_tokens\":%u,\"completion_tokens\":%u,\"total_tokens\":%u,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":%u}}",
                   g->prompt_tokens, g->completion_tokens, g->prompt_tokens + g->completion_tokens,
                   g->cached_tokens);
}

static const char *finish_name(int f)
{
    switch (f) {
    case SRV_FINISH_STOP: return "\"stop\"";
    case SRV_FINISH_LENGTH: return "\"length\"";
    case SRV_FINISH_TOOL_CALLS: return "\"tool_calls\"";
    default: return "null";
    }
}

static void bytes_array(srv_buf *o, vkpt_span s)
{
    srv_buf_puts(o, "[");
    for (size_t i = 0; i < s.n; i++) srv_buf_printf(o, i ? ",%u" : "%u", (unsigned char)s.p[i]);
    srv_buf_puts(o, "]");
}

/* Chat format: {"content": [{token, logprob, bytes, top_logprobs}], "refusal": null} */
static void chat_logprobs(const srv_gen *g, const srv_lp *lps, size_t n, srv_buf *o)
{
    srv_buf_puts(o, "{\"content\":[");
    for (size_t i = 0; i < n; i++) {
        const srv_lp *lp = &lps[i];
        vkpt_span t = token_text(g, lp->id);
        srv_buf_puts(o, i ? ",{\"token\":" : "{\"token\":");
        srv_buf_json_str(o, t.p, t.n);
        srv_buf_puts(o, ",\"logprob\":");
        json_float(o, lp->logprob);
        srv_buf_puts(o, ",\"bytes\":");
        bytes_array(o, t);
        srv_buf_puts(o, ",\"top_logprobs\":[");
        for (uint32_t k = 0; k < lp->n_top; k++) {
            vkpt_span tt = token_text(g, lp->top_ids[k]);
            srv_buf_puts(o, k ? ",{\"token\":" : "{\"token\":");
            srv_buf_json_str(o, tt.p, tt.n);
            srv_buf_puts(o, ",\"logprob\":");
            json_float(o, lp->top_lp[k]);
            srv_buf_puts(o, ",\"bytes\":");
            bytes_array(o, tt);
            srv_buf_puts(o, "}");
        }
        srv_buf_puts(o, "]}");
    }
    srv_buf_puts(o, "],\"refusal\":null}");
}

/* Completions format: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset} */
static void completion_logprobs(const srv_gen *g, const srv_lp *lps, size_t n, srv_buf *o)
{
    srv_buf_puts(o, "{\"tokens\":[");
    for (size_t i = 0; i < n; i++) {
        vkpt_span t = token_text(g, lps[i].id);
        if (i) srv_buf_puts(o, ",");
        srv_buf_json_str(o, t.p, t.n);
    }
    srv_buf_puts(o, "],\"token_logprobs\":[");
    for (size_t i = 0; i < n; i++) {
        if (i) srv_buf_puts(o, ",");
        json_float(o, lps[i].logprob);
    }
    srv_buf_puts(o, "],\"top_logprobs\":[");
    for (size_t i = 0; i < n; i++) {
        srv_buf_puts(o, i ? ",{" : "{");
        for (uint32_t k = 0; k < lps[i].n_top; k++) {
            vkpt_span tt = token_text(g, lps[i].top_ids[k]);
            if (k) srv_buf_puts(o, ",");
            srv_buf_json_str(o, tt.p, tt.n);
            srv_buf_puts(o, ":");
            json_float(o, lps[i].top_lp[k]);
        }
        srv_buf_puts(o, "}");
    }
    srv_buf_puts(o, "],\"text_offset\":[");
    for (size_t i = 0; i < n; i++) srv_buf_printf(o, i ? ",%u" : "%u", lps[i].text_offset);
    srv_buf_puts(o, "]}");
}

/* A call's id: "call_" and 24 hex digits from the response id, the choice
 * and the call's index (unique per response, stable for a given one). */
static void tool_call_id(const srv_gen *g, uint32_t choice, size_t k, srv_buf *o)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a over the id */
    for (const char *p = g->id; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    uint64_t a = h ^ (choice * 0x9E3779B97F4A7C15ull), b = a * 0xBF58476D1CE4E5B9ull + k;
    b ^= b >> 31;
    srv_buf_printf(o, "\"call_%016llx%08llx\"", (unsigned long long)a,
                   (unsigned long long)(b & 0xffffffffull));
}

/* choice i's tool calls: [{id, type, function: {name, arguments}}]; in a
 * stream's delta each also carries its index. */
static void tool_calls_json(const srv_gen *g, uint32_t i, bool delta, srv_buf *o)
{
    const srv_tool_calls *tc = &g->ch[i].calls;
    srv_buf_puts(o, "[");
    for (size_t k = 0; k < tc->n; k++) {
        if (k) srv_buf_puts(o, ",");
        if (delta)
            srv_buf_printf(o, "{\"index\":%zu,\"id\":", k);
        else
            srv_buf_puts(o, "{\"id\":");
        tool_call_id(g, i, k, o);
        srv_buf_puts(o, ",\"type\":\"function\",\"function\":{\"name\":");
        srv_buf_json_str(o, tc->v[k].name, strlen(tc->v[k].name));
        srv_buf_puts(o, ",\"arguments\":");
        srv_buf_json_str(o, tc->v[k].arguments, strlen(tc->v[k].arguments));
        srv_buf_puts(o, "}}");
    }
    srv_buf_puts(o, "]");
}

static void sse_begin(srv_buf *o)
{
    srv_sse_open(o);
}

/* Close a chunk object and its event; with include_usage every chunk but the
 * last carries "usage": null, as OpenAI's do. */
static void sse_end(const srv_gen *g, srv_buf *o)
{
    if (g->spec.include_usage) srv_buf_puts(o, ",\"usage\":null");
    srv_buf_puts(o, "}");
    srv_sse_close(o);
}

static void chat_chunk(srv_gen *g, uint32_t i, bool final, srv_buf *o)
{
    srv_choice *c = &g->ch[i];
    if (!c->started) {
        c->started = true;
        sse_begin(o);
        head(g, o, "chat.completion.chunk");
        srv_buf_printf(o,
                       ",\"choices\":[{\"index\":%u,\"delta\":{\"role\":\"assistant\","
                       "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]",
                       i);
        sse_end(g, o);
    }
    if (c->text.n || c->n_lps) {
        sse_begin(o);
        head(g, o, "chat.completion.chunk");
        srv_buf_printf(o, ",\"choices\":[{\"index\":%u,\"delta\":{\"content\":", i);
        srv_buf_json_str(o, c->text.p ? c->text.p : "", c->text.n);
        srv_buf_puts(o, "},\"logprobs\":");
        if (g->spec.gp.logprobs)
            chat_logprobs(g, c->lps, c->n_lps, o);
        else
            srv_buf_puts(o, "null");
        srv_buf_puts(o, ",\"finish_reason\":null}]");
        sse_end(g, o);
    }
    if (final && c->calls.n) {
        sse_begin(o);
        head(g, o, "chat.completion.chunk");
        srv_buf_printf(o, ",\"choices\":[{\"index\":%u,\"delta\":{\"tool_calls\":", i);
        tool_calls_json(g, i, true, o);
        srv_buf_puts(o, "},\"logprobs\":null,\"finish_reason\":null}]");
        sse_end(g, o);
    }
    if (final) {
        sse_begin(o);
        head(g, o, "chat.completion.chunk");
        srv_buf_printf(o,
                       ",\"choices\":[{\"index\":%u,\"delta\":{},\"logprobs\":null,"
                       "\"finish_reason\":%s}]",
                       i, finish_name(c->finish));
        sse_end(g, o);
    }
}

static void completion_chunk(srv_gen *g, uint32_t i, bool final, srv_buf *o)
{
    srv_choice *c = &g->ch[i];
    c->started = true;
    if (!final && !c->text.n) return;
    sse_begin(o);
    head(g, o, "text_completion");
    srv_buf_puts(o, ",\"choices\":[{\"text\":");
    srv_buf_json_str(o, c->text.p ? c->text.p : "", c->text.n);
    srv_buf_printf(o, ",\"index\":%u,\"logprobs\":", i);
    if (g->spec.gp.logprobs)
        completion_logprobs(g, c->lps, c->n_lps, o);
    else
        srv_buf_puts(o, "null");
    srv_buf_printf(o, ",\"finish_reason\":%s}]", final ? finish_name(c->finish) : "null");
    sse_end(g, o);
}

static void usage_chunk(srv_gen *g, srv_buf *o, const char *object)
{
    sse_begin(o);
    head(g, o, object);
    srv_buf_puts(o, ",\"choices\":[],\"usage\":");
    usage(g, o);
    srv_buf_puts(o, "}");
    srv_sse_close(o);
}

static void chat_usage_chunk(srv_gen *g, srv_buf *o)
{
    usage_chunk(g, o, "chat.completion.chunk");
}

static void completion_usage_chunk(srv_gen *g, srv_buf *o)
{
    usage_chunk(g, o, "text_completion");
}

static void chat_body(srv_gen *g, srv_buf *o)
{
    head(g, o, "chat.completion");
    srv_buf_puts(o, ",\"choices\":[");
    for (uint32_t i = 0; i < g->n_choices; i++) {
        srv_choice *c = &g->ch[i];
        srv_buf_printf(
            o, "%s{\"index\":%u,\"message\":{\"role\":\"assistant\",\"content\":", i ? "," : "", i);
        if (c->calls.n && !c->text.n)
            srv_buf_puts(o, "null"); /* as OpenAI answers a call without text */
        else
            srv_buf_json_str(o, c->text.p ? c->text.p : "", c->text.n);
        if (c->calls.n) {
            srv_buf_puts(o, ",\"tool_calls\":");
            tool_calls_json(g, i, false, o);
        }
        srv_buf_puts(o, ",\"refusal\":null},\"logprobs\":");
        if (g->spec.gp.logprobs)
            chat_logprobs(g, c->lps, c->n_lps, o);
        else
            srv_buf_puts(o, "null");
        srv_buf_printf(o, ",\"finish_reason\":%s}", finish_name(c->finish));
    }
    srv_buf_puts(o, "],\"usage\":");
    usage(g, o);
    srv_buf_puts(o, "}");
}

static void completion_body(srv_gen *g, srv_buf *o)
{
    head(g, o, "text_completion");
    srv_buf_puts(o, ",\"choices\":[");
    for (uint32_t i = 0; i < g->n_choices; i++) {
        srv_choice *c = &g->ch[i];
        srv_buf_puts(o, i ? ",{\"text\":" : "{\"text\":");
        srv_buf_json_str(o, c->text.p ? c->text.p : "", c->text.n);
        srv_buf_printf(o, ",\"index\":%u,\"logprobs\":", i);
        if (g->spec.gp.logprobs)
            completion_logprobs(g, c->lps, c->n_lps, o);
        else
            srv_buf_puts(o, "null");
        srv_buf_printf(o, ",\"finish_reason\":%s}", finish_name(c->finish));
    }
    srv_buf_puts(o, "],\"usage\":");
    usage(g, o);
    srv_buf_puts(o, "}");
}

const srv_gen_ops srv_openai_chat_ops = {
    .id_prefix = "chatcmpl-",
    .chunk = chat_chunk,
    .usage_chunk = chat_usage_chunk,
    .body = chat_body,
};

const srv_gen_ops srv_openai_completion_ops = {
    .id_prefix = "cmpl-",
    .chunk = completion_chunk,
    .usage_chunk = completion_usage_chunk,
    .body = completion_body,
};

/* ---- handlers ------------------------------------------------------------------------------ */

static void answer_api_error(srv_conn *c, const srv_api_error *e)
{
    srv_conn_error(c, e->status, e->param[0] ? e->param : NULL, e->code, "%s", e->message);
}

static void model_not_found(srv_ctx *ctx, const char *name)
{
    vkpt_server *s = ctx->srv;
    char list[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < s->n_models && used < sizeof list - 1; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "",
                                 s->models[i].id);
    srv_conn_error(ctx->conn, 404, "model", "model_not_found",
                   "The model \"%s\" does not exist; this server serves %s (see GET /v1/models)",
                   name, list);
}

static void generate(srv_ctx *ctx, int api)
{
    srv_gen_spec spec;
    srv_api_error e;
    const srv_buf *body = &ctx->req->body;
    if (srv_openai_parse(api, body->p ? body->p : "", body->n, &spec, &e)) {
        answer_api_error(ctx->conn, &e);
        return;
    }
    srv_model *m = srv_model_find(ctx->srv, spec.model);
    if (!m) {
        model_not_found(ctx, spec.model);
        srv_gen_spec_free(&spec);
        return;
    }
    if (!m->engine && !m->adm) {
        srv_conn_error(ctx->conn, 400, "model", "invalid_value",
                       "The model \"%s\" is an embedding model; it does not generate text. Use "
                       "POST /v1/embeddings",
                       m->id);
        srv_gen_spec_free(&spec);
        return;
    }
    if (srv_openai_check_vocab(&spec, m->n_vocab, &e)) {
        answer_api_error(ctx->conn, &e);
        srv_gen_spec_free(&spec);
        return;
    }
    srv_gen_start(ctx, m, &spec,
                  api == SRV_API_CHAT ? &srv_openai_chat_ops : &srv_openai_completion_ops);
}

void srv_h_chat_completions(srv_ctx *ctx)
{
    generate(ctx, SRV_API_CHAT);
}

void srv_h_completions(srv_ctx *ctx)
{
    generate(ctx, SRV_API_COMPLETION);
}

static void respond_json(srv_conn *c, int status, cJSON *obj)
{
    char *txt = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!txt) {
        srv_conn_error(c, 500, NULL, NULL, "out of memory writing the response");
        return;
    }
    srv_conn_respond(c, status, "application/json", NULL, txt, strlen(txt));
    cJSON_free(txt);
}

static cJSON *model_object(const srv_model *m)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "id", m->id);
    cJSON_AddStringToObject(o, "object", "model");
    cJSON_AddNumberToObject(o, "created", (double)m->created);
    cJSON_AddStringToObject(o, "owned_by", "vkpt");
    cJSON_AddNumberToObject(o, "max_model_len", m->n_ctx);
    return o;
}

void srv_h_models(srv_ctx *ctx)
{
    vkpt_server *s = ctx->srv;
    cJSON *o = cJSON_CreateObject();
    cJSON *data = cJSON_CreateArray();
    if (o && data) {
        cJSON_AddStringToObject(o, "object", "list");
        for (size_t i = 0; i < s->n_models; i++) {
            cJSON *m = model_object(&s->models[i]);
            if (m) cJSON_AddItemToArray(data, m);
        }
        srv_ep_list_models(s, data);
        cJSON_AddItemToObject(o, "data", data);
        data = NULL;
    }
    cJSON_Delete(data);
    respond_json(ctx->conn, 200, o);
}

void srv_h_model(srv_ctx *ctx)
{
    srv_model *m = srv_model_find(ctx->srv, ctx->params[0]);
    if (!m) {
        model_not_found(ctx, ctx->params[0]);
        return;
    }
    respond_json(ctx->conn, 200, model_object(m));
}

/* Parse a small JSON object body for /tokenize and /detokenize. */
static cJSON *parse_object(srv_ctx *ctx)
{
    const srv_buf *b = &ctx->req->body;
    cJSON *root = b->n ? cJSON_ParseWithLength(b->p, b->n) : NULL;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        srv_conn_error(ctx->conn, 400, NULL, "invalid_json",
                       "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

static srv_model *body_model(srv_ctx *ctx, const cJSON *root)
{
    const cJSON *mv = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (mv && !cJSON_IsNull(mv) && !cJSON_IsString(mv)) {
        srv_conn_error(ctx->conn, 400, "model", "invalid_type", "model must be a string");
        return NULL;
    }
    const char *name = cJSON_IsString(mv) ? mv->valuestring : NULL;
    srv_model *m = srv_model_find(ctx->srv, name);
    if (!m) model_not_found(ctx, name ? name : "");
    return m;
}

static bool only_keys(srv_ctx *ctx, const cJSON *root, const char *const *keys, size_t n)
{
    for (const cJSON *v = root->child; v; v = v->next) {
        bool ok = false;
        for (size_t i = 0; i < n && !ok; i++) ok = !strcmp(v->string, keys[i]);
        if (!ok) {
            srv_conn_error(ctx->conn, 400, v->string, "unknown_parameter",
                           "Unrecognized request argument supplied: %s", v->string);
            return false;
        }
    }
    return true;
}

void srv_h_tokenize(srv_ctx *ctx)
{
    static const char *const keys[] = {"model",
                                       "prompt",
                                       "messages",
                                       "add_special_tokens",
                                       "add_generation_prompt",
                                       "chat_template_kwargs",
                                       "tools",
                                       "return_token_strs"};
    cJSON *root = parse_object(ctx);
    if (!root) return;
    srv_model *m = NULL;
    srv_gen_spec spec = {0};
    srv_api_error e = {0};
    vkpt_tokens toks = {0};
    char *msg = NULL;
    cJSON *out = NULL;
    if (!only_keys(ctx, root, keys, sizeof keys / sizeof keys[0])) goto done;
    if (!(m = body_model(ctx, root))) goto done;
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    bool add_special = true, strs = false;
    spec.add_generation_prompt = true;
    if (get_bool(&e, cJSON_GetObjectItemCaseSensitive(root, "add_special_tokens"),
                 "add_special_tokens", &add_special) ||
        get_bool(&e, cJSON_GetObjectItemCaseSensitive(root, "add_generation_prompt"),
                 "add_generation_prompt", &spec.add_generation_prompt) ||
        get_bool(&e, cJSON_GetObjectItemCaseSensitive(root, "return_token_strs"),
                 "return_token_strs", &strs)) {
        answer_api_error(ctx->conn, &e);
        goto done;
    }
    if (!!prompt == !!msgs) {
        srv_conn_error(ctx->conn, 400, "prompt", "invalid_value",
                       "give either \"prompt\" (a string) or \"messages\" (a chat)");
        goto done;
    }
    int err;
    if (prompt) {
        if (!cJSON_IsString(prompt)) {
            srv_conn_error(ctx->conn, 400, "prompt", "invalid_type", "prompt must be a string");
            goto done;
        }
        unsigned flags = VKPT_TOK_PARSE_SPECIAL | (add_special ? VKPT_TOK_ADD_SPECIAL : 0);
        err = vkpt_tokenizer_encode(m->tok, prompt->valuestring, strlen(prompt->valuestring), flags,
                                    &toks);
        if (err) msg = vkpt_strdup(vkpt_errmsg(err));
    } else {
        spec.api = SRV_API_CHAT;
        const cJSON *tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
        if (parse_messages(&e, msgs, &spec) || (tools && parse_tools(&e, tools, "tools", &spec))) {
            answer_api_error(ctx->conn, &e);
            goto done;
        }
        spec.tools_on = spec.tools != NULL;
        const cJSON *kw = cJSON_GetObjectItemCaseSensitive(root, "chat_template_kwargs");
        if (cJSON_IsObject(kw)) spec.template_kwargs = cJSON_Duplicate(kw, 1);
        err = srv_gen_tokenize(m, &spec, &toks, &msg);
    }
    if (err) {
        srv_conn_error(ctx->conn, err == VKPT_ENOMEM ? 500 : 400, prompt ? "prompt" : "messages",
                       NULL, "%s", msg ? msg : vkpt_strerror(err));
        goto done;
    }
    out = cJSON_CreateObject();
    cJSON *ids = cJSON_CreateArray();
    if (!out || !ids) {
        cJSON_Delete(ids);
        goto oom;
    }
    cJSON_AddNumberToObject(out, "count", (double)toks.n);
    cJSON_AddNumberToObject(out, "max_model_len", m->n_ctx);
    cJSON_AddItemToObject(out, "tokens", ids);
    for (size_t i = 0; i < toks.n; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(toks.ids[i]));
    if (strs) {
        cJSON *ts = cJSON_AddArrayToObject(out, "token_strs");
        srv_buf b = {0};
        for (size_t i = 0; ts && i < toks.n; i++) {
            vkpt_span t = vkpt_tokenizer_token(m->tok, toks.ids[i]);
            srv_buf_reset(&b);
            srv_utf8_sanitize(&b, t.p ? t.p : "", t.n);
            cJSON_AddItemToArray(ts, cJSON_CreateString(b.p ? b.p : ""));
        }
        srv_buf_free(&b);
    }
    respond_json(ctx->conn, 200, out);
    out = NULL;
    goto done;
oom:
    srv_conn_error(ctx->conn, 500, NULL, NULL, "out of memory");
done:
    cJSON_Delete(out);
    vkpt_free(msg);
    vkpt_tokens_free(&toks);
    srv_gen_spec_free(&spec);
    cJSON_Delete(root);
}

void srv_h_detokenize(srv_ctx *ctx)
{
    static const char *const keys[] = {"model", "tokens"};
    cJSON *root = parse_object(ctx);
    if (!root) return;
    srv_model *m;
    srv_api_error e = {0};
    int32_t *ids = NULL;
    size_t n = 0;
    char *text = NULL;
    size_t len = 0;
    if (!only_keys(ctx, root, keys, 2) || !(m = body_model(ctx, root))) goto done;
    const cJSON *tv = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    if (!cJSON_IsArray(tv)) {
        srv_conn_error(ctx->conn, 400, "tokens", "invalid_type",
                       "tokens must be an array of token ids");
        goto done;
    }
    if (tv->child && token_array(&e, tv, "tokens", &ids, &n)) {
        answer_api_error(ctx->conn, &e);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if ((uint32_t)ids[i] >= m->n_vocab) {
            srv_conn_error(ctx->conn, 400, "tokens", "invalid_value",
                           "tokens: id %d is outside the vocabulary (0..%u)", ids[i],
                           m->n_vocab - 1);
            goto done;
        }
    int err = vkpt_tokenizer_decode(m->tok, ids, n, VKPT_DETOK_CLEANUP, &text, &len);
    if (err) {
        srv_conn_error(ctx->conn, 500, NULL, NULL, "%s", vkpt_errmsg(err));
        goto done;
    }
    srv_buf b = {0};
    srv_buf_puts(&b, "{\"prompt\":");
    srv_buf_json_str(&b, text ? text : "", len);
    srv_buf_puts(&b, "}");
    if (srv_buf_ok(&b))
        srv_conn_respond(ctx->conn, 200, "application/json", NULL, b.p, b.n);
    else
        srv_conn_error(ctx->conn, 500, NULL, NULL, "out of memory");
    srv_buf_free(&b);
done:
    vkpt_free(text);
    vkpt_free(ids);
    cJSON_Delete(root);
}
