/* Tool calls in generated text (see toolcall.h). */
#include "toolcall.h"

#include <string.h>

static const char TAG_OPEN[] = "<tool_call>";
static const char TAG_CLOSE[] = "</tool_call>";
/* prefixes a JSON-shaped call may carry when they come out as text */
static const char *const JSON_PREFIX[] = {"<|python_tag|>", "[TOOL_CALLS]"};

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static const char *find(const char *p, size_t n, const char *s)
{
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(p + i, s, k)) return p + i;
    return NULL;
}

/* The longest suffix of p[0..n) that is a proper prefix of `s`. */
static size_t partial_suffix(const char *p, size_t n, const char *s)
{
    size_t k = strlen(s);
    for (size_t len = k - 1 < n ? k - 1 : n; len > 0; len--)
        if (!memcmp(p + n - len, s, len)) return len;
    return 0;
}

static void feed_tags(srv_tool_filter *f, const char *p, size_t n, srv_buf *out)
{
    srv_buf_append(&f->held, p, n);
    if (!f->held.n) return;
    const char *m = find(f->held.p, f->held.n, TAG_OPEN);
    if (m) {
        size_t i = (size_t)(m - f->held.p);
        srv_buf_append(out, f->held.p, i);
        srv_buf_consume(&f->held, i);
        f->state = SRV_TF_HELD;
        return;
    }
    size_t keep = partial_suffix(f->held.p, f->held.n, TAG_OPEN);
    srv_buf_append(out, f->held.p, f->held.n - keep);
    srv_buf_consume(&f->held, f->held.n - keep);
}

/* JSON: undecided while the answer is spaces or a prefix of a call prefix;
 * held once it starts like a call; content for good otherwise. */
static void feed_json(srv_tool_filter *f, const char *p, size_t n, srv_buf *out)
{
    srv_buf_append(&f->held, p, n);
    size_t i = 0;
    while (i < f->held.n && is_space(f->held.p[i])) i++;
    if (i == f->held.n) return;
    const char *s = f->held.p + i;
    size_t rest = f->held.n - i;
    if (*s == '{' || *s == '[') {
        f->state = SRV_TF_HELD;
        return;
    }
    for (size_t k = 0; k < sizeof JSON_PREFIX / sizeof JSON_PREFIX[0]; k++) {
        size_t len = strlen(JSON_PREFIX[k]);
        if (!memcmp(s, JSON_PREFIX[k], rest < len ? rest : len)) {
            if (rest >= len) f->state = SRV_TF_HELD;
            return; /* the prefix, or a beginning of it: keep holding */
        }
    }
    f->state = SRV_TF_TEXT;
    srv_buf_append(out, f->held.p, f->held.n);
    srv_buf_reset(&f->held);
}

void srv_tool_filter_feed(srv_tool_filter *f, const char *p, size_t n, srv_buf *out)
{
    if (f->state == SRV_TF_HELD) {
        srv_buf_append(&f->held, p, n);
    } else if (f->state == SRV_TF_TEXT && f->fmt == SRV_TOOLS_JSON) {
        srv_buf_append(out, p, n);
    } else if (f->fmt == SRV_TOOLS_TAGS) {
        feed_tags(f, p, n, out);
    } else {
        feed_json(f, p, n, out);
    }
}

void srv_tool_filter_free(srv_tool_filter *f)
{
    srv_buf_free(&f->held);
}

void srv_tool_calls_free(srv_tool_calls *c)
{
    for (size_t i = 0; i < c->n; i++) {
        vkpt_free(c->v[i].name);
        vkpt_free(c->v[i].arguments);
    }
    vkpt_free(c->v);
    c->v = NULL;
    c->n = 0;
}

/* ---- parsing -------------------------------------------------------------------------- */

static bool tool_declared(const cJSON *tools, const char *name)
{
    for (const cJSON *t = tools ? tools->child : NULL; t; t = t->next) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (cJSON_IsString(nm) && !strcmp(nm->valuestring, name)) return true;
    }
    return false;
}

/* One call object: {"name", "arguments"|"parameters"} or {"function": {...}}. */
static int add_call(const cJSON *o, const cJSON *tools, srv_tool_calls *out)
{
    if (!cJSON_IsObject(o)) return VKPT_ENOTFOUND;
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(o, "function");
    if (cJSON_IsObject(fn)) o = fn;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, "arguments");
    if (!args) args = cJSON_GetObjectItemCaseSensitive(o, "parameters");
    if (!cJSON_IsString(name) || !tool_declared(tools, name->valuestring)) return VKPT_ENOTFOUND;
    cJSON *parsed = NULL;
    if (cJSON_IsString(args)) { /* arguments already as JSON text */
        parsed = cJSON_Parse(args->valuestring);
        if (!cJSON_IsObject(parsed)) {
            cJSON_Delete(parsed);
            return VKPT_ENOTFOUND;
        }
        args = parsed;
    } else if (args && !cJSON_IsObject(args)) {
        return VKPT_ENOTFOUND;
    }
    char *printed = args ? cJSON_PrintUnformatted(args) : NULL;
    char *text = vkpt_strdup(printed ? printed : "{}");
    if (printed) cJSON_free(printed);
    cJSON_Delete(parsed);
    srv_tool_call *v = vkpt_realloc(out->v, (out->n + 1) * sizeof *v);
    if (v) out->v = v;
    char *nm = vkpt_strdup(name->valuestring);
    if ((args && !printed) || !text || !v || !nm) {
        vkpt_free(text);
        vkpt_free(nm);
        return VKPT_ENOMEM;
    }
    out->v = v;
    out->v[out->n++] = (srv_tool_call){.name = nm, .arguments = text};
    return 0;
}

/* Parse one JSON value from p[0..n); *used gets how many bytes it took. */
static cJSON *parse_value(const char *p, size_t n, size_t *used)
{
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(p, n, &end, 0);
    if (v) *used = (size_t)(end - p);
    return v;
}

static int parse_json_calls(const char *p, size_t n, const cJSON *tools, srv_tool_calls *out)
{
    while (n && is_space(*p)) p++, n--;
    for (size_t k = 0; k < sizeof JSON_PREFIX / sizeof JSON_PREFIX[0]; k++) {
        size_t len = strlen(JSON_PREFIX[k]);
        if (n >= len && !memcmp(p, JSON_PREFIX[k], len)) {
            p += len;
            n -= len;
            break;
        }
    }
    int err = VKPT_ENOTFOUND;
    while (n) {
        while (n && (is_space(*p) || *p == ';')) p++, n--;
        if (!n) break;
        size_t used = 0;
        cJSON *v = parse_value(p, n, &used);
        if (!v) return VKPT_ENOTFOUND;
        if (cJSON_IsArray(v)) {
            err = v->child ? 0 : VKPT_ENOTFOUND;
            for (const cJSON *c = v->child; c && !err; c = c->next) err = add_call(c, tools, out);
        } else {
            err = add_call(v, tools, out);
        }
        cJSON_Delete(v);
        if (err) return err;
        p += used;
        n -= used;
    }
    return err;
}

/* Append p[0..n) trimmed, if anything is left. */
static void append_trimmed(srv_buf *b, const char *p, size_t n)
{
    while (n && is_space(*p)) p++, n--;
    while (n && is_space(p[n - 1])) n--;
    if (!n) return;
    if (b->n) srv_buf_puts(b, "\n");
    srv_buf_append(b, p, n);
}

static int parse_tag_calls(const char *p, size_t n, const cJSON *tools, srv_tool_calls *out,
                           srv_buf *content)
{
    const char *m = find(p, n, TAG_OPEN);
    if (!m) return VKPT_ENOTFOUND;
    while (m) {
        append_trimmed(content, p, (size_t)(m - p));
        size_t skip = (size_t)(m - p) + strlen(TAG_OPEN);
        p += skip;
        n -= skip;
        const char *close = find(p, n, TAG_CLOSE);
        size_t body = close ? (size_t)(close - p) : n; /* the last may be unclosed */
        size_t used = 0;
        const char *b = p;
        size_t bn = body;
        while (bn && is_space(*b)) b++, bn--;
        cJSON *v = parse_value(b, bn, &used);
        int err = v ? add_call(v, tools, out) : VKPT_ENOTFOUND;
        cJSON_Delete(v);
        if (err) return err;
        for (size_t i = used; i < bn; i++)
            if (!is_space(b[i])) return VKPT_ENOTFOUND; /* text after the JSON */
        if (close) body += strlen(TAG_CLOSE);
        p += body;
        n -= body;
        m = find(p, n, TAG_OPEN);
    }
    append_trimmed(content, p, n);
    return 0;
}

int srv_tool_parse(int fmt, const char *text, size_t n, const cJSON *tools, srv_tool_calls *out,
                   srv_buf *content)
{
    srv_tool_calls calls = {0};
    srv_buf outside = {0};
    int err = fmt == SRV_TOOLS_TAGS ? parse_tag_calls(text, n, tools, &calls, &outside)
                                    : parse_json_calls(text, n, tools, &calls);
    if (!err && !srv_buf_ok(&outside)) err = VKPT_ENOMEM;
    if (err) {
        srv_tool_calls_free(&calls);
        srv_buf_free(&outside);
        return err;
    }
    srv_buf_append(content, outside.p, outside.n);
    srv_buf_free(&outside);
    *out = calls;
    return 0;
}
