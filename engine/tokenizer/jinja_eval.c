/* Chat templates: values and the interpreter.
 *
 * Values behave as in Python Jinja2 inside transformers'
 * ImmutableSandboxedEnvironment, the environment the models' templates were
 * written for: None prints as "None", True as "True", lists as Python
 * reprs; `~` converts with str(); `+` does not mix strings and numbers;
 * undefined variables are empty and falsy; strip/lstrip/rstrip take a
 * character set; tojson is transformers' json.dumps(ensure_ascii=False).
 * Where Hugging Face's JavaScript Jinja differs from this, docs/TOKENIZER.md
 * lists it.
 *
 * Every render has its own arena; nothing is shared but the read-only tree
 * and a few constant values, so renders run in parallel.
 */
#define _GNU_SOURCE
#include "jinja_int.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <utf8proc.h>

static const jv v_undef = {.type = JV_UNDEF};
static const jv v_none = {.type = JV_NONE};
static const jv v_true = {.type = JV_BOOL, .u.b = true};
static const jv v_false = {.type = JV_BOOL, .u.b = false};

#define UNDEF    ((jv *)&v_undef)
#define NONE     ((jv *)&v_none)
#define BOOLV(x) ((x) ? (jv *)&v_true : (jv *)&v_false)

/* ---- interpreter state ------------------------------------------------------------- */

typedef struct frame {
    struct frame *parent;
    const char **names;
    size_t *name_n;
    jv **vals;
    size_t n, cap;
} frame;

typedef struct ctx {
    vkpt__arena *a;
    vkpt__buf *out;
    frame *global;
    frame *cur;     /* the frame names resolve in */
    uint64_t steps; /* statements run: a budget against runaway templates */
    int err;
    int depth;
} ctx;

static jv *failf(ctx *c, const jnode *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static jv *failf(ctx *c, const jnode *at, const char *fmt, ...)
{
    if (c->err) return NULL;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at)
        c->err =
            vkpt_fail(VKPT_EINVAL, "chat template line %u, column %u: %s", at->line, at->col, msg);
    else
        c->err = vkpt_fail(VKPT_EINVAL, "chat template: %s", msg);
    return NULL;
}

static jv *oom(ctx *c)
{
    if (!c->err) c->err = vkpt_fail(VKPT_ENOMEM, "chat template render");
    return NULL;
}

static jv *mk(ctx *c, int type)
{
    jv *v = vkpt__jv_new(c->a, type);
    return v ? v : oom(c);
}

static jv *mk_int(ctx *c, int64_t i)
{
    jv *v = mk(c, JV_INT);
    if (v) v->u.i = i;
    return v;
}

static jv *mk_float(ctx *c, double f)
{
    jv *v = mk(c, JV_FLOAT);
    if (v) v->u.f = f;
    return v;
}

static jv *mk_str(ctx *c, const char *s, size_t n)
{
    jv *v = vkpt__jv_str(c->a, s, n);
    return v ? v : oom(c);
}

static jv *mk_list(ctx *c, size_t cap)
{
    jv *v = mk(c, JV_LIST);
    if (!v) return NULL;
    if (cap) {
        v->u.l.v = vkpt__arena_alloc(c->a, cap * sizeof(jv *));
        if (!v->u.l.v) return oom(c);
        v->u.l.cap = cap;
    }
    return v;
}

static bool list_push(ctx *c, jv *l, jv *x)
{
    if (!x) return false;
    if (l->u.l.n == l->u.l.cap) {
        size_t cap = l->u.l.cap ? l->u.l.cap * 2 : 8;
        jv **v = vkpt__arena_alloc(c->a, cap * sizeof *v);
        if (!v) return oom(c) != NULL;
        if (l->u.l.n) memcpy(v, l->u.l.v, l->u.l.n * sizeof *v);
        l->u.l.v = v;
        l->u.l.cap = cap;
    }
    l->u.l.v[l->u.l.n++] = x;
    return true;
}

static jv *mk_dict(ctx *c, int type)
{
    return mk(c, type);
}

static bool str_eq(const jv *a, const char *s, size_t n)
{
    return a->type == JV_STR && a->u.s.n == n && !memcmp(a->u.s.p, s, n);
}

static bool jv_eq(const jv *a, const jv *b);

static jv *dict_get(const jv *d, const jv *key)
{
    for (size_t i = 0; i < d->u.d.n; i++)
        if (jv_eq(d->u.d.k[i], key)) return d->u.d.v[i];
    return NULL;
}

static jv *dict_gets(const jv *d, const char *s, size_t n)
{
    for (size_t i = 0; i < d->u.d.n; i++)
        if (str_eq(d->u.d.k[i], s, n)) return d->u.d.v[i];
    return NULL;
}

static bool dict_set(ctx *c, jv *d, jv *key, jv *val)
{
    if (!key || !val) return false;
    for (size_t i = 0; i < d->u.d.n; i++)
        if (jv_eq(d->u.d.k[i], key)) {
            d->u.d.v[i] = val;
            return true;
        }
    if (d->u.d.n == d->u.d.cap) {
        size_t cap = d->u.d.cap ? d->u.d.cap * 2 : 8;
        jv **k = vkpt__arena_alloc(c->a, cap * sizeof *k);
        jv **v = vkpt__arena_alloc(c->a, cap * sizeof *v);
        if (!k || !v) return oom(c) != NULL;
        if (d->u.d.n) {
            memcpy(k, d->u.d.k, d->u.d.n * sizeof *k);
            memcpy(v, d->u.d.v, d->u.d.n * sizeof *v);
        }
        d->u.d.k = k;
        d->u.d.v = v;
        d->u.d.cap = cap;
    }
    d->u.d.k[d->u.d.n] = key;
    d->u.d.v[d->u.d.n++] = val;
    return true;
}

static bool dict_sets(ctx *c, jv *d, const char *k, jv *val)
{
    return dict_set(c, d, mk_str(c, k, strlen(k)), val);
}

/* ---- frames ----------------------------------------------------------------------------- */

static frame *frame_new(ctx *c, frame *parent)
{
    frame *f = vkpt__arena_alloc(c->a, sizeof *f);
    if (!f) return (frame *)oom(c);
    f->parent = parent;
    return f;
}

static bool frame_set(ctx *c, frame *f, const char *name, size_t n, jv *v)
{
    if (!v) return false;
    for (size_t i = 0; i < f->n; i++)
        if (f->name_n[i] == n && !memcmp(f->names[i], name, n)) {
            f->vals[i] = v;
            return true;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        const char **nm = vkpt__arena_alloc(c->a, cap * sizeof *nm);
        size_t *nn = vkpt__arena_alloc(c->a, cap * sizeof *nn);
        jv **vv = vkpt__arena_alloc(c->a, cap * sizeof *vv);
        if (!nm || !nn || !vv) return oom(c) != NULL;
        if (f->n) {
            memcpy(nm, f->names, f->n * sizeof *nm);
            memcpy(nn, f->name_n, f->n * sizeof *nn);
            memcpy(vv, f->vals, f->n * sizeof *vv);
        }
        f->names = nm;
        f->name_n = nn;
        f->vals = vv;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->name_n[f->n] = n;
    f->vals[f->n++] = v;
    return true;
}

/* ---- builtins table ------------------------------------------------------------------ */

enum fn_id {
    F_RANGE,
    F_NAMESPACE,
    F_RAISE,
    F_STRFTIME,
    F_DICT,
    F_CYCLE,
    /* str methods */
    M_STRIP,
    M_LSTRIP,
    M_RSTRIP,
    M_STARTSWITH,
    M_ENDSWITH,
    M_SPLIT,
    M_RSPLIT,
    M_REPLACE,
    M_UPPER,
    M_LOWER,
    M_TITLE,
    M_CAPITALIZE,
    M_FIND,
    M_RFIND,
    M_COUNT,
    M_JOIN,
    M_SPLITLINES,
    M_ISDIGIT,
    M_ISALPHA,
    M_ISALNUM,
    M_ISSPACE,
    M_ISUPPER,
    M_ISLOWER,
    /* dict methods */
    M_GET,
    M_ITEMS,
    M_KEYS,
    M_VALUES,
};

static const struct {
    const char *name;
    int id;
} str_methods[] = {{"strip", M_STRIP},
                   {"lstrip", M_LSTRIP},
                   {"rstrip", M_RSTRIP},
                   {"startswith", M_STARTSWITH},
                   {"endswith", M_ENDSWITH},
                   {"split", M_SPLIT},
                   {"rsplit", M_RSPLIT},
                   {"replace", M_REPLACE},
                   {"upper", M_UPPER},
                   {"lower", M_LOWER},
                   {"title", M_TITLE},
                   {"capitalize", M_CAPITALIZE},
                   {"find", M_FIND},
                   {"rfind", M_RFIND},
                   {"count", M_COUNT},
                   {"join", M_JOIN},
                   {"splitlines", M_SPLITLINES},
                   {"isdigit", M_ISDIGIT},
                   {"isalpha", M_ISALPHA},
                   {"isalnum", M_ISALNUM},
                   {"isspace", M_ISSPACE},
                   {"isupper", M_ISUPPER},
                   {"islower", M_ISLOWER}},
  dict_methods[] = {{"get", M_GET}, {"items", M_ITEMS}, {"keys", M_KEYS}, {"values", M_VALUES}},
  globals[] = {{"range", F_RANGE},
               {"namespace", F_NAMESPACE},
               {"raise_exception", F_RAISE},
               {"strftime_now", F_STRFTIME},
               {"dict", F_DICT}};

static const char *const filter_names[] = {
    "abs",     "capitalize", "count",  "d",      "default",    "dictsort", "e",          "escape",
    "first",   "float",      "indent", "int",    "items",      "join",     "last",       "length",
    "list",    "lower",      "map",    "max",    "min",        "reject",   "rejectattr", "replace",
    "reverse", "round",      "safe",   "select", "selectattr", "sort",     "string",     "sum",
    "title",   "tojson",     "trim",   "unique", "upper",      "wordcount"};

static const char *const test_names[] = {
    "boolean", "callable", "defined",  "divisibleby", "eq",          "equalto",
    "even",    "false",    "float",    "ge",          "greaterthan", "gt",
    "in",      "integer",  "iterable", "le",          "lessthan",    "lower",
    "lt",      "mapping",  "ne",       "none",        "number",      "odd",
    "sameas",  "sequence", "string",   "true",        "undefined",   "upper"};

static bool name_listed(const char *const *list, size_t n_list, const char *s, size_t n)
{
    for (size_t i = 0; i < n_list; i++)
        if (strlen(list[i]) == n && !memcmp(list[i], s, n)) return true;
    return false;
}

bool vkpt__jinja_filter_known(const char *name, size_t n)
{
    return name_listed(filter_names, sizeof filter_names / sizeof filter_names[0], name, n);
}

bool vkpt__jinja_test_known(const char *name, size_t n)
{
    return name_listed(test_names, sizeof test_names / sizeof test_names[0], name, n);
}

static jv *mk_fn(ctx *c, int id, const jv *self)
{
    jv *v = mk(c, JV_FUNC);
    if (v) {
        v->u.fn.id = id;
        v->u.fn.self = self;
    }
    return v;
}

/* ---- conversions ---------------------------------------------------------------------- */

static bool truthy(const jv *v)
{
    switch (v->type) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v->u.b;
    case JV_INT: return v->u.i != 0;
    case JV_FLOAT: return v->u.f != 0;
    case JV_STR: return v->u.s.n > 0;
    case JV_LIST: return v->u.l.n > 0;
    case JV_DICT: return v->u.d.n > 0;
    default: return true;
    }
}

static bool is_num(const jv *v)
{
    return v->type == JV_INT || v->type == JV_FLOAT || v->type == JV_BOOL;
}

static double num(const jv *v)
{
    return v->type == JV_FLOAT ? v->u.f : v->type == JV_INT ? (double)v->u.i : (double)v->u.b;
}

static int64_t inum(const jv *v)
{
    if (v->type == JV_INT) return v->u.i;
    if (v->type == JV_BOOL) return v->u.b;
    double f = v->u.f;
    if (isnan(f)) return 0;
    if (f >= 9.2e18) return INT64_MAX;
    if (f <= -9.2e18) return INT64_MIN;
    return (int64_t)f;
}

/* Python's repr() of a float: the shortest string that reads back the same. */
static void fmt_float(double f, char *buf, size_t cap)
{
    if (isnan(f)) {
        snprintf(buf, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    if (f == 0) {
        snprintf(buf, cap, signbit(f) ? "-0.0" : "0.0");
        return;
    }
    char tmp[48];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f) break;
    }
    /* tmp: [-]d[.ddd]e[+-]XX */
    const char *p = tmp;
    bool neg = *p == '-';
    if (neg) p++;
    char digits[32];
    int nd = 0;
    while (*p && *p != 'e') {
        if (*p != '.' && nd < 31) digits[nd++] = *p;
        p++;
    }
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int exp = *p == 'e' ? atoi(p + 1) : 0;
    char out[64];
    int k = 0;
    if (neg) out[k++] = '-';
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++) out[k++] = i < nd ? digits[i] : '0';
            out[k++] = '.';
            if (nd > exp + 1)
                for (int i = exp + 1; i < nd; i++) out[k++] = digits[i];
            else
                out[k++] = '0';
        } else {
            out[k++] = '0';
            out[k++] = '.';
            for (int i = 0; i < -exp - 1; i++) out[k++] = '0';
            for (int i = 0; i < nd; i++) out[k++] = digits[i];
        }
        out[k] = 0;
    } else {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            for (int i = 1; i < nd; i++) out[k++] = digits[i];
        }
        out[k] = 0;
        snprintf(out + k, sizeof out - (size_t)k, "e%c%02d", exp < 0 ? '-' : '+',
                 exp < 0 ? -exp : exp);
    }
    snprintf(buf, cap, "%s", out);
}

static int put_repr(ctx *c, vkpt__buf *b, const jv *v);

static int put_str_repr(vkpt__buf *b, const char *s, size_t n)
{
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    int err = vkpt__buf_putc(b, q);
    for (size_t i = 0; i < n && !err; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\\')
            err = vkpt__buf_puts(b, "\\\\");
        else if (ch == (unsigned char)q)
            err = q == '\'' ? vkpt__buf_puts(b, "\\'") : vkpt__buf_puts(b, "\\\"");
        else if (ch == '\n')
            err = vkpt__buf_puts(b, "\\n");
        else if (ch == '\r')
            err = vkpt__buf_puts(b, "\\r");
        else if (ch == '\t')
            err = vkpt__buf_puts(b, "\\t");
        else if (ch < 0x20 || ch == 0x7F)
            err = vkpt__buf_printf(b, "\\x%02x", ch);
        else
            err = vkpt__buf_putc(b, (char)ch);
    }
    return err ? err : vkpt__buf_putc(b, q);
}

/* str(v) as Python prints it. */
static int put_str(ctx *c, vkpt__buf *b, const jv *v)
{
    char tmp[64];
    switch (v->type) {
    case JV_UNDEF: return 0;
    case JV_NONE: return vkpt__buf_puts(b, "None");
    case JV_BOOL: return vkpt__buf_puts(b, v->u.b ? "True" : "False");
    case JV_INT: return vkpt__buf_printf(b, "%lld", (long long)v->u.i);
    case JV_FLOAT: fmt_float(v->u.f, tmp, sizeof tmp); return vkpt__buf_puts(b, tmp);
    case JV_STR: return vkpt__buf_put(b, v->u.s.p, v->u.s.n);
    default: return put_repr(c, b, v);
    }
}

static int put_repr(ctx *c, vkpt__buf *b, const jv *v)
{
    int err = 0;
    switch (v->type) {
    case JV_STR: return put_str_repr(b, v->u.s.p, v->u.s.n);
    case JV_UNDEF: return 0;
    case JV_LIST:
        err = vkpt__buf_putc(b, v->tuple ? '(' : '[');
        for (size_t i = 0; i < v->u.l.n && !err; i++) {
            if (i) err = vkpt__buf_puts(b, ", ");
            if (!err) err = put_repr(c, b, v->u.l.v[i]);
        }
        if (!err && v->tuple && v->u.l.n == 1) err = vkpt__buf_putc(b, ',');
        return err ? err : vkpt__buf_putc(b, v->tuple ? ')' : ']');
    case JV_DICT:
    case JV_NS:
        err = vkpt__buf_puts(b, v->type == JV_NS ? "<Namespace {" : "{");
        for (size_t i = 0; i < v->u.d.n && !err; i++) {
            if (i) err = vkpt__buf_puts(b, ", ");
            if (!err) err = put_repr(c, b, v->u.d.k[i]);
            if (!err) err = vkpt__buf_puts(b, ": ");
            if (!err) err = put_repr(c, b, v->u.d.v[i]);
        }
        return err ? err : vkpt__buf_puts(b, v->type == JV_NS ? "}>" : "}");
    case JV_FUNC: return vkpt__buf_puts(b, "<function>");
    default: return put_str(c, b, v);
    }
}

static jv *to_str(ctx *c, const jv *v)
{
    if (v->type == JV_STR) return (jv *)v;
    vkpt__buf b = {0};
    if (put_str(c, &b, v)) {
        vkpt__buf_free(&b);
        return oom(c);
    }
    jv *r = mk_str(c, b.p ? b.p : "", b.n);
    vkpt__buf_free(&b);
    return r;
}

/* ---- JSON (transformers' tojson) ------------------------------------------------------------ */

typedef struct json_opts {
    int indent; /* -1: none */
    bool ensure_ascii, sort_keys;
    const char *item_sep, *key_sep;
} json_opts;

static int json_str(vkpt__buf *b, const char *s, size_t n, bool ascii)
{
    int err = vkpt__buf_putc(b, '"');
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n && !err;) {
        uint8_t ch = u[i];
        if (ch == '"')
            err = vkpt__buf_puts(b, "\\\"");
        else if (ch == '\\')
            err = vkpt__buf_puts(b, "\\\\");
        else if (ch == '\n')
            err = vkpt__buf_puts(b, "\\n");
        else if (ch == '\r')
            err = vkpt__buf_puts(b, "\\r");
        else if (ch == '\t')
            err = vkpt__buf_puts(b, "\\t");
        else if (ch == '\b')
            err = vkpt__buf_puts(b, "\\b");
        else if (ch == '\f')
            err = vkpt__buf_puts(b, "\\f");
        else if (ch < 0x20)
            err = vkpt__buf_printf(b, "\\u%04x", ch);
        else if (ch < 0x80 || !ascii) {
            err = vkpt__buf_putc(b, (char)ch);
        } else {
            uint32_t cp;
            size_t k = vkpt__utf8_next(u + i, n - i, &cp);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                err = vkpt__buf_printf(b, "\\u%04x\\u%04x", 0xD800 + (cp >> 10),
                                       0xDC00 + (cp & 0x3FF));
            } else {
                err = vkpt__buf_printf(b, "\\u%04x", cp);
            }
            i += k;
            continue;
        }
        i++;
    }
    return err ? err : vkpt__buf_putc(b, '"');
}

static int json_newline(vkpt__buf *b, const json_opts *o, int level)
{
    int err = vkpt__buf_putc(b, '\n');
    for (int i = 0; i < o->indent * level && !err; i++) err = vkpt__buf_putc(b, ' ');
    return err;
}

static int cmp_keys(const void *x, const void *y)
{
    const jv *a = *(jv *const *)x, *b = *(jv *const *)y;
    if (a->type != JV_STR || b->type != JV_STR) return 0;
    size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
    int r = memcmp(a->u.s.p, b->u.s.p, n);
    return r ? r : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
}

static int put_json(ctx *c, vkpt__buf *b, const jv *v, const json_opts *o, int level)
{
    char tmp[64];
    int err = 0;
    if (level > 64) return vkpt_fail(VKPT_ERANGE, "tojson: nesting deeper than 64");
    switch (v->type) {
    case JV_UNDEF:
    case JV_NONE: return vkpt__buf_puts(b, "null");
    case JV_BOOL: return vkpt__buf_puts(b, v->u.b ? "true" : "false");
    case JV_INT: return vkpt__buf_printf(b, "%lld", (long long)v->u.i);
    case JV_FLOAT:
        if (isnan(v->u.f)) return vkpt__buf_puts(b, "NaN");
        if (isinf(v->u.f)) return vkpt__buf_puts(b, v->u.f < 0 ? "-Infinity" : "Infinity");
        fmt_float(v->u.f, tmp, sizeof tmp);
        return vkpt__buf_puts(b, tmp);
    case JV_STR: return json_str(b, v->u.s.p, v->u.s.n, o->ensure_ascii);
    case JV_LIST:
        if (!v->u.l.n) return vkpt__buf_puts(b, "[]");
        err = vkpt__buf_putc(b, '[');
        for (size_t i = 0; i < v->u.l.n && !err; i++) {
            if (i) err = vkpt__buf_puts(b, o->item_sep);
            if (!err && o->indent >= 0) err = json_newline(b, o, level + 1);
            if (!err) err = put_json(c, b, v->u.l.v[i], o, level + 1);
        }
        if (!err && o->indent >= 0) err = json_newline(b, o, level);
        return err ? err : vkpt__buf_putc(b, ']');
    case JV_DICT:
    case JV_NS: {
        if (!v->u.d.n) return vkpt__buf_puts(b, "{}");
        size_t n = v->u.d.n;
        jv **order = vkpt__arena_alloc(c->a, n * sizeof *order);
        if (!order) return vkpt_fail(VKPT_ENOMEM, "tojson");
        for (size_t i = 0; i < n; i++) order[i] = (jv *)(uintptr_t)i;
        jv **keys = vkpt__arena_alloc(c->a, n * sizeof *keys);
        if (!keys) return vkpt_fail(VKPT_ENOMEM, "tojson");
        memcpy(keys, v->u.d.k, n * sizeof *keys);
        if (o->sort_keys) qsort(keys, n, sizeof *keys, cmp_keys);
        err = vkpt__buf_putc(b, '{');
        for (size_t i = 0; i < n && !err; i++) {
            const jv *k = keys[i];
            const jv *val = dict_get(v, k);
            if (i) err = vkpt__buf_puts(b, o->item_sep);
            if (!err && o->indent >= 0) err = json_newline(b, o, level + 1);
            if (err) break;
            if (k->type == JV_STR) {
                err = json_str(b, k->u.s.p, k->u.s.n, o->ensure_ascii);
            } else {
                vkpt__buf kb = {0};
                err = k->type == JV_NONE   ? vkpt__buf_puts(&kb, "null")
                      : k->type == JV_BOOL ? vkpt__buf_puts(&kb, k->u.b ? "true" : "false")
                                           : put_json(c, &kb, k, o, level + 1);
                if (!err) err = json_str(b, kb.p ? kb.p : "", kb.n, o->ensure_ascii);
                vkpt__buf_free(&kb);
            }
            if (!err) err = vkpt__buf_puts(b, o->key_sep);
            if (!err) err = put_json(c, b, val ? val : NONE, o, level + 1);
        }
        if (!err && o->indent >= 0) err = json_newline(b, o, level);
        return err ? err : vkpt__buf_putc(b, '}');
    }
    default: return vkpt__buf_puts(b, "null");
    }
}

/* ---- comparisons ------------------------------------------------------------------------ */

static bool jv_eq(const jv *a, const jv *b)
{
    if (is_num(a) && is_num(b)) {
        if (a->type != JV_FLOAT && b->type != JV_FLOAT) return inum(a) == inum(b);
        return num(a) == num(b);
    }
    if (a->type != b->type) return false;
    switch (a->type) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a->u.s.n == b->u.s.n && !memcmp(a->u.s.p, b->u.s.p, a->u.s.n);
    case JV_LIST:
        if (a->u.l.n != b->u.l.n) return false;
        for (size_t i = 0; i < a->u.l.n; i++)
            if (!jv_eq(a->u.l.v[i], b->u.l.v[i])) return false;
        return true;
    case JV_DICT:
        if (a->u.d.n != b->u.d.n) return false;
        for (size_t i = 0; i < a->u.d.n; i++) {
            const jv *o = dict_get(b, a->u.d.k[i]);
            if (!o || !jv_eq(a->u.d.v[i], o)) return false;
        }
        return true;
    default: return a == b;
    }
}

/* <0, 0, >0; sets *ok = false when Python would refuse to compare. */
static int jv_cmp(const jv *a, const jv *b, bool *ok)
{
    *ok = true;
    if (is_num(a) && is_num(b)) {
        double x = num(a), y = num(b);
        return (x > y) - (x < y);
    }
    if (a->type == JV_STR && b->type == JV_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        int r = memcmp(a->u.s.p, b->u.s.p, n);
        return r ? r : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
    }
    if (a->type == JV_LIST && b->type == JV_LIST) {
        for (size_t i = 0; i < a->u.l.n && i < b->u.l.n; i++) {
            int r = jv_cmp(a->u.l.v[i], b->u.l.v[i], ok);
            if (!*ok || r) return r;
        }
        return (a->u.l.n > b->u.l.n) - (a->u.l.n < b->u.l.n);
    }
    *ok = false;
    return 0;
}

static const char *type_name(const jv *v)
{
    switch (v->type) {
    case JV_UNDEF: return "undefined";
    case JV_NONE: return "None";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v->tuple ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    default: return "function";
    }
}

/* ---- string helpers ---------------------------------------------------------------------- */

static size_t n_chars(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((uint8_t)s[i] & 0xC0) != 0x80;
    return k;
}

/* Byte offset of character index `ci` (clamped to n). */
static size_t char_off(const char *s, size_t n, size_t ci)
{
    size_t i = 0;
    while (i < n && ci) {
        i++;
        while (i < n && ((uint8_t)s[i] & 0xC0) == 0x80) i++;
        ci--;
    }
    return i;
}

static bool py_space(uint32_t cp)
{
    return vkpt__u_is_whitespace(cp) || (cp >= 0x1C && cp <= 0x1F);
}

static bool in_chars(uint32_t cp, const jv *chars)
{
    if (!chars) return py_space(cp);
    const uint8_t *s = (const uint8_t *)chars->u.s.p;
    for (size_t i = 0; i < chars->u.s.n;) {
        uint32_t c;
        i += vkpt__utf8_next(s + i, chars->u.s.n - i, &c);
        if (c == cp) return true;
    }
    return false;
}

static jv *strip(ctx *c, const jv *s, const jv *chars, bool left, bool right)
{
    const uint8_t *p = (const uint8_t *)s->u.s.p;
    size_t a = 0, e = s->u.s.n;
    while (left && a < e) {
        uint32_t cp;
        size_t k = vkpt__utf8_next(p + a, e - a, &cp);
        if (!in_chars(cp, chars)) break;
        a += k;
    }
    while (right && e > a) {
        size_t b = e - 1;
        while (b > a && (p[b] & 0xC0) == 0x80) b--;
        uint32_t cp;
        vkpt__utf8_next(p + b, e - b, &cp);
        if (!in_chars(cp, chars)) break;
        e = b;
    }
    return mk_str(c, s->u.s.p + a, e - a);
}

enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAPITALIZE };

static jv *recase(ctx *c, const jv *s, int mode)
{
    vkpt__buf b = {0};
    const uint8_t *p = (const uint8_t *)s->u.s.p;
    bool prev_cased = false, first = true;
    int err = vkpt__buf_reserve(&b, s->u.s.n);
    for (size_t i = 0; i < s->u.s.n && !err;) {
        uint32_t cp;
        i += vkpt__utf8_next(p + i, s->u.s.n - i, &cp);
        utf8proc_int32_t o = (utf8proc_int32_t)cp;
        bool up;
        switch (mode) {
        case CASE_UPPER: up = true; break;
        case CASE_LOWER: up = false; break;
        case CASE_TITLE: up = !prev_cased; break;
        default: up = first;
        }
        utf8proc_int32_t r = up ? utf8proc_toupper(o) : utf8proc_tolower(o);
        if (mode == CASE_TITLE) {
            utf8proc_category_t cat = utf8proc_category(o);
            prev_cased = cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
                         cat == UTF8PROC_CATEGORY_LT;
        }
        first = false;
        err = vkpt__buf_put_cp(&b, (uint32_t)r);
    }
    jv *v = err ? oom(c) : mk_str(c, b.p ? b.p : "", b.n);
    vkpt__buf_free(&b);
    return v;
}

static bool str_pred(const jv *s, int id)
{
    if (!s->u.s.n) return false;
    const uint8_t *p = (const uint8_t *)s->u.s.p;
    bool any_cased = false;
    for (size_t i = 0; i < s->u.s.n;) {
        uint32_t cp;
        i += vkpt__utf8_next(p + i, s->u.s.n - i, &cp);
        utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)cp);
        bool letter = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
        bool digit = cat == UTF8PROC_CATEGORY_ND;
        switch (id) {
        case M_ISDIGIT:
            if (!digit) return false;
            break;
        case M_ISALPHA:
            if (!letter) return false;
            break;
        case M_ISALNUM:
            if (!letter && !digit && cat != UTF8PROC_CATEGORY_NL && cat != UTF8PROC_CATEGORY_NO)
                return false;
            break;
        case M_ISSPACE:
            if (!py_space(cp)) return false;
            break;
        case M_ISUPPER:
            if (cat == UTF8PROC_CATEGORY_LL) return false;
            any_cased = any_cased || cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT;
            break;
        case M_ISLOWER:
            if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT) return false;
            any_cased = any_cased || cat == UTF8PROC_CATEGORY_LL;
            break;
        }
    }
    return (id == M_ISUPPER || id == M_ISLOWER) ? any_cased : true;
}

/* Python str.split / rsplit. */
static jv *split(ctx *c, const jv *s, const jv *sep, int64_t maxsplit, bool from_right)
{
    jv *out = mk_list(c, 0);
    if (!out) return NULL;
    const char *p = s->u.s.p;
    size_t n = s->u.s.n;
    if (!sep || sep->type == JV_NONE) {
        /* runs of whitespace; no empty strings */
        size_t i = 0, splits = 0;
        const uint8_t *u = (const uint8_t *)p;
        if (from_right) {
            /* collect from the right, then reverse */
            jv *tmp = mk_list(c, 0);
            size_t e = n;
            while (e > 0 && tmp) {
                while (e > 0) {
                    size_t b = e - 1;
                    while (b > 0 && (u[b] & 0xC0) == 0x80) b--;
                    uint32_t cp;
                    vkpt__utf8_next(u + b, e - b, &cp);
                    if (!py_space(cp)) break;
                    e = b;
                }
                if (!e) break;
                size_t st = e;
                if (maxsplit >= 0 && (int64_t)splits >= maxsplit) {
                    st = 0;
                } else {
                    while (st > 0) {
                        size_t b = st - 1;
                        while (b > 0 && (u[b] & 0xC0) == 0x80) b--;
                        uint32_t cp;
                        vkpt__utf8_next(u + b, st - b, &cp);
                        if (py_space(cp)) break;
                        st = b;
                    }
                }
                if (!list_push(c, tmp, mk_str(c, p + st, e - st))) return NULL;
                splits++;
                e = st;
            }
            if (!tmp) return NULL;
            for (size_t k = tmp->u.l.n; k > 0; k--)
                if (!list_push(c, out, tmp->u.l.v[k - 1])) return NULL;
            return out;
        }
        while (i < n) {
            while (i < n) {
                uint32_t cp;
                size_t k = vkpt__utf8_next(u + i, n - i, &cp);
                if (!py_space(cp)) break;
                i += k;
            }
            if (i >= n) break;
            size_t st = i;
            if (maxsplit >= 0 && (int64_t)splits >= maxsplit) {
                i = n;
                /* Python keeps trailing whitespace here, but strips nothing else */
            } else {
                while (i < n) {
                    uint32_t cp;
                    size_t k = vkpt__utf8_next(u + i, n - i, &cp);
                    if (py_space(cp)) break;
                    i += k;
                }
            }
            if (!list_push(c, out, mk_str(c, p + st, i - st))) return NULL;
            splits++;
        }
        return out;
    }
    if (sep->type != JV_STR) return NULL;
    if (!sep->u.s.n) return failf(c, NULL, "split(): empty separator");
    const char *sp = sep->u.s.p;
    size_t sn = sep->u.s.n;
    if (!from_right) {
        size_t i = 0;
        int64_t splits = 0;
        for (;;) {
            const char *h = (maxsplit < 0 || splits < maxsplit) && n - i >= sn
                                ? memmem(p + i, n - i, sp, sn)
                                : NULL;
            if (!h) {
                if (!list_push(c, out, mk_str(c, p + i, n - i))) return NULL;
                return out;
            }
            size_t hi = (size_t)(h - p);
            if (!list_push(c, out, mk_str(c, p + i, hi - i))) return NULL;
            i = hi + sn;
            splits++;
        }
    }
    /* rsplit with a separator */
    jv *tmp = mk_list(c, 0);
    if (!tmp) return NULL;
    size_t e = n;
    int64_t splits = 0;
    for (;;) {
        size_t hit = SIZE_MAX;
        if ((maxsplit < 0 || splits < maxsplit) && e >= sn)
            for (size_t k = e - sn + 1; k > 0; k--)
                if (!memcmp(p + k - 1, sp, sn)) {
                    hit = k - 1;
                    break;
                }
        if (hit == SIZE_MAX) {
            if (!list_push(c, tmp, mk_str(c, p, e))) return NULL;
            break;
        }
        if (!list_push(c, tmp, mk_str(c, p + hit + sn, e - hit - sn))) return NULL;
        e = hit;
        splits++;
    }
    for (size_t k = tmp->u.l.n; k > 0; k--)
        if (!list_push(c, out, tmp->u.l.v[k - 1])) return NULL;
    return out;
}

static jv *str_replace(ctx *c, const jv *s, const jv *from, const jv *to, int64_t count)
{
    vkpt__buf b = {0};
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    int64_t done = 0;
    int err = 0;
    if (!from->u.s.n) {
        /* Python inserts `to` between characters (and at both ends) */
        for (size_t k = 0; k <= n && !err;) {
            if (count < 0 || done < count) {
                err = vkpt__buf_put(&b, to->u.s.p, to->u.s.n);
                done++;
            }
            if (k == n) break;
            size_t e = char_off(p + k, n - k, 1);
            err = err ? err : vkpt__buf_put(&b, p + k, e);
            k += e;
        }
    } else {
        while (!err) {
            const char *h = (count < 0 || done < count) && n - i >= from->u.s.n
                                ? memmem(p + i, n - i, from->u.s.p, from->u.s.n)
                                : NULL;
            if (!h) {
                err = vkpt__buf_put(&b, p + i, n - i);
                break;
            }
            size_t hi = (size_t)(h - p);
            if (!(err = vkpt__buf_put(&b, p + i, hi - i)))
                err = vkpt__buf_put(&b, to->u.s.p, to->u.s.n);
            i = hi + from->u.s.n;
            done++;
        }
    }
    jv *r = err ? oom(c) : mk_str(c, b.p ? b.p : "", b.n);
    vkpt__buf_free(&b);
    return r;
}

/* ---- evaluation --------------------------------------------------------------------------- */

static jv *eval(ctx *c, const jnode *n);
static int exec_body(ctx *c, const jnodes *body, frame *f);

typedef struct args {
    jv *pos[16];
    int np;
    const char *kn[16];
    size_t kl[16];
    jv *kv[16];
    int nk;
} args;

static bool eval_args(ctx *c, const jnodes *in, args *a, frame *f)
{
    (void)f;
    a->np = a->nk = 0;
    for (size_t i = 0; i < in->n; i++) {
        const jnode *x = in->v[i];
        if (x->kind == JN_KWARG) {
            if (a->nk >= 16) return failf(c, x, "too many keyword arguments") != NULL;
            jv *v = eval(c, x->a);
            if (!v) return false;
            a->kn[a->nk] = x->str;
            a->kl[a->nk] = x->str_n;
            a->kv[a->nk++] = v;
        } else {
            if (a->np >= 16) return failf(c, x, "too many arguments") != NULL;
            jv *v = eval(c, x);
            if (!v) return false;
            a->pos[a->np++] = v;
        }
    }
    return true;
}

/* Argument `i` or keyword `name`, else NULL. */
static jv *arg(const args *a, int i, const char *name)
{
    if (i >= 0 && i < a->np) return a->pos[i];
    for (int k = 0; k < a->nk; k++)
        if (name && strlen(name) == a->kl[k] && !memcmp(a->kn[k], name, a->kl[k])) return a->kv[k];
    return NULL;
}

static jv *lookup(ctx *c, frame *f, const char *name, size_t n)
{
    for (frame *x = f; x; x = x->parent)
        for (size_t i = x->n; i > 0; i--)
            if (x->name_n[i - 1] == n && !memcmp(x->names[i - 1], name, n)) return x->vals[i - 1];
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++)
        if (strlen(globals[i].name) == n && !memcmp(globals[i].name, name, n))
            return mk_fn(c, globals[i].id, NULL);
    return UNDEF;
}

static jv *get_attr(ctx *c, const jv *obj, const char *name, size_t n)
{
    if (obj->type == JV_DICT) {
        for (size_t i = 0; i < sizeof dict_methods / sizeof dict_methods[0]; i++)
            if (strlen(dict_methods[i].name) == n && !memcmp(dict_methods[i].name, name, n))
                return mk_fn(c, dict_methods[i].id, obj);
        jv *v = dict_gets(obj, name, n);
        return v ? v : UNDEF;
    }
    if (obj->type == JV_NS) {
        jv *v = dict_gets(obj, name, n);
        return v ? v : UNDEF;
    }
    if (obj->type == JV_STR) {
        for (size_t i = 0; i < sizeof str_methods / sizeof str_methods[0]; i++)
            if (strlen(str_methods[i].name) == n && !memcmp(str_methods[i].name, name, n))
                return mk_fn(c, str_methods[i].id, obj);
    }
    return UNDEF;
}

static jv *get_item(ctx *c, const jnode *at, const jv *obj, const jv *key)
{
    switch (obj->type) {
    case JV_DICT:
    case JV_NS: {
        jv *v = dict_get(obj, key);
        if (v) return v;
        if (key->type == JV_STR) return get_attr(c, obj, key->u.s.p, key->u.s.n);
        return UNDEF;
    }
    case JV_LIST:
    case JV_STR: {
        if (key->type == JV_STR) return get_attr(c, obj, key->u.s.p, key->u.s.n);
        if (key->type != JV_INT && key->type != JV_BOOL) return UNDEF;
        int64_t i = inum(key);
        size_t len = obj->type == JV_LIST ? obj->u.l.n : n_chars(obj->u.s.p, obj->u.s.n);
        if (i < 0) i += (int64_t)len;
        if (i < 0 || (size_t)i >= len) return UNDEF;
        if (obj->type == JV_LIST) return obj->u.l.v[i];
        size_t o = char_off(obj->u.s.p, obj->u.s.n, (size_t)i);
        size_t e = char_off(obj->u.s.p + o, obj->u.s.n - o, 1);
        return mk_str(c, obj->u.s.p + o, e);
    }
    default: (void)at; return UNDEF;
    }
}

static jv *slice(ctx *c, const jnode *at, const jv *obj, const jv *a, const jv *b, const jv *s)
{
    if (obj->type != JV_LIST && obj->type != JV_STR)
        return failf(c, at, "cannot slice a %s", type_name(obj));
    int64_t len = (int64_t)(obj->type == JV_LIST ? obj->u.l.n : n_chars(obj->u.s.p, obj->u.s.n));
    int64_t step = s && s->type != JV_NONE ? inum(s) : 1;
    if (step == 0) return failf(c, at, "slice step cannot be zero");
    int64_t start, stop;
    if (!a || a->type == JV_NONE)
        start = step > 0 ? 0 : len - 1;
    else {
        start = inum(a);
        if (start < 0) start += len;
        if (start < 0) start = step > 0 ? 0 : -1;
        if (start >= len) start = step > 0 ? len : len - 1;
    }
    if (!b || b->type == JV_NONE)
        stop = step > 0 ? len : -1;
    else {
        stop = inum(b);
        if (stop < 0) stop += len;
        if (stop < 0) stop = step > 0 ? 0 : -1;
        if (stop >= len) stop = step > 0 ? len : len - 1;
    }
    jv *out = obj->type == JV_LIST ? mk_list(c, 0) : NULL;
    vkpt__buf sb = {0};
    size_t *offs = NULL; /* byte offset of each character, and the end */
    if (obj->type == JV_STR) {
        offs = vkpt__arena_alloc(c->a, ((size_t)len + 1) * sizeof *offs);
        if (!offs) return oom(c);
        size_t k = 0;
        for (size_t q = 0; q < obj->u.s.n; q++)
            if (((uint8_t)obj->u.s.p[q] & 0xC0) != 0x80) offs[k++] = q;
        offs[k] = obj->u.s.n;
    }
    for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
        if (obj->type == JV_LIST) {
            if (!list_push(c, out, obj->u.l.v[i])) return NULL;
        } else if (vkpt__buf_put(&sb, obj->u.s.p + offs[i], offs[i + 1] - offs[i])) {
            vkpt__buf_free(&sb);
            return oom(c);
        }
        if (__builtin_add_overflow(i, step, &i)) break;
    }
    if (obj->type == JV_STR) {
        jv *r = mk_str(c, sb.p ? sb.p : "", sb.n);
        vkpt__buf_free(&sb);
        return r;
    }
    if (out) out->tuple = obj->tuple;
    return out;
}

/* Iterate: lists, dict keys, string characters; undefined is empty. */
static jv *as_list(ctx *c, const jnode *at, const jv *v)
{
    switch (v->type) {
    case JV_LIST: return (jv *)v;
    case JV_UNDEF: return mk_list(c, 0);
    case JV_DICT: {
        jv *l = mk_list(c, v->u.d.n);
        for (size_t i = 0; l && i < v->u.d.n; i++)
            if (!list_push(c, l, v->u.d.k[i])) return NULL;
        return l;
    }
    case JV_STR: {
        jv *l = mk_list(c, 0);
        for (size_t i = 0; l && i < v->u.s.n;) {
            size_t e = char_off(v->u.s.p + i, v->u.s.n - i, 1);
            if (!list_push(c, l, mk_str(c, v->u.s.p + i, e))) return NULL;
            i += e;
        }
        return l;
    }
    default: return failf(c, at, "'%s' object is not iterable", type_name(v));
    }
}

static jv *items_of(ctx *c, const jv *d)
{
    jv *l = mk_list(c, d->u.d.n);
    for (size_t i = 0; l && i < d->u.d.n; i++) {
        jv *t = mk_list(c, 2);
        if (!t) return NULL;
        t->tuple = true;
        list_push(c, t, d->u.d.k[i]);
        list_push(c, t, d->u.d.v[i]);
        if (!list_push(c, l, t)) return NULL;
    }
    return l;
}

static bool apply_test(ctx *c, const jnode *at, const char *name, size_t n, const jv *v,
                       const args *a, bool *res);

static jv *call_macro(ctx *c, const jnode *at, const jv *fn, const args *a);

/* Builtin functions and methods. */
static jv *call_fn(ctx *c, const jnode *at, const jv *fn, const args *a)
{
    if (fn->u.fn.id < 0) return call_macro(c, at, fn, a);
    const jv *self = fn->u.fn.self;
    switch (fn->u.fn.id) {
    case F_RANGE: {
        int64_t start = 0, stop, step = 1;
        if (a->np == 1)
            stop = inum(a->pos[0]);
        else if (a->np >= 2) {
            start = inum(a->pos[0]);
            stop = inum(a->pos[1]);
            if (a->np >= 3) step = inum(a->pos[2]);
        } else
            return failf(c, at, "range() needs an argument");
        if (step == 0) return failf(c, at, "range() step cannot be zero");
        jv *l = mk_list(c, 0);
        for (int64_t i = start; l && (step > 0 ? i < stop : i > stop);) {
            if (l->u.l.n >= 100000) return failf(c, at, "range() longer than 100000");
            if (!list_push(c, l, mk_int(c, i))) return NULL;
            if (__builtin_add_overflow(i, step, &i)) break;
        }
        return l;
    }
    case F_NAMESPACE:
    case F_DICT: {
        jv *d = mk_dict(c, fn->u.fn.id == F_NAMESPACE ? JV_NS : JV_DICT);
        if (!d) return NULL;
        if (a->np > 1) return failf(c, at, "namespace() takes at most one positional argument");
        if (a->np == 1) {
            const jv *src = a->pos[0];
            if (src->type == JV_DICT || src->type == JV_NS) {
                for (size_t i = 0; i < src->u.d.n; i++)
                    if (!dict_set(c, d, src->u.d.k[i], src->u.d.v[i])) return NULL;
            } else if (src->type == JV_LIST) {
                for (size_t i = 0; i < src->u.l.n; i++) {
                    const jv *pair = src->u.l.v[i];
                    if (pair->type != JV_LIST || pair->u.l.n != 2)
                        return failf(c, at, "namespace() expects (key, value) pairs");
                    if (!dict_set(c, d, pair->u.l.v[0], pair->u.l.v[1])) return NULL;
                }
            } else {
                return failf(c, at, "'%s' object is not iterable", type_name(src));
            }
        }
        for (int k = 0; k < a->nk; k++)
            if (!dict_set(c, d, mk_str(c, a->kn[k], a->kl[k]), a->kv[k])) return NULL;
        return d;
    }
    case F_RAISE: {
        vkpt__buf b = {0};
        if (a->np) put_str(c, &b, a->pos[0]);
        failf(c, at, "raise_exception: %s", b.p ? b.p : "");
        vkpt__buf_free(&b);
        return NULL;
    }
    case F_STRFTIME: {
        if (!a->np || a->pos[0]->type != JV_STR)
            return failf(c, at, "strftime_now() needs a format string");
        char fmt[256], out[512];
        snprintf(fmt, sizeof fmt, "%.*s", (int)a->pos[0]->u.s.n, a->pos[0]->u.s.p);
        time_t now = time(NULL);
        struct tm tmv;
        localtime_r(&now, &tmv);
        size_t k = strftime(out, sizeof out, fmt, &tmv);
        return mk_str(c, out, k);
    }
    case F_CYCLE: {
        if (!a->np) return failf(c, at, "loop.cycle() needs arguments");
        const jv *idx = dict_gets(self, "index0", 6);
        return a->pos[idx ? inum(idx) % a->np : 0];
    }
    case M_GET: {
        jv *k = arg(a, 0, "key");
        if (!k) return failf(c, at, "get() needs a key");
        jv *v = dict_get(self, k);
        if (v) return v;
        jv *d = arg(a, 1, "default");
        return d ? d : NONE;
    }
    case M_ITEMS: return items_of(c, self);
    case M_KEYS: return as_list(c, at, self);
    case M_VALUES: {
        jv *l = mk_list(c, self->u.d.n);
        for (size_t i = 0; l && i < self->u.d.n; i++)
            if (!list_push(c, l, self->u.d.v[i])) return NULL;
        return l;
    }
    case M_STRIP:
    case M_LSTRIP:
    case M_RSTRIP: {
        jv *ch = arg(a, 0, "chars");
        if (ch && ch->type == JV_NONE) ch = NULL;
        if (ch && ch->type != JV_STR) return failf(c, at, "strip arg must be None or str");
        int id = fn->u.fn.id;
        return strip(c, self, ch, id != M_RSTRIP, id != M_LSTRIP);
    }
    case M_STARTSWITH:
    case M_ENDSWITH: {
        jv *p = arg(a, 0, "prefix");
        if (!p) return failf(c, at, "startswith()/endswith() need an argument");
        bool end = fn->u.fn.id == M_ENDSWITH;
        size_t cnt = p->type == JV_LIST ? p->u.l.n : 1;
        for (size_t i = 0; i < cnt; i++) {
            const jv *x = p->type == JV_LIST ? p->u.l.v[i] : p;
            if (x->type != JV_STR)
                return failf(c, at, "startswith()/endswith() arguments must be str");
            if (x->u.s.n > self->u.s.n) continue;
            const char *q = end ? self->u.s.p + self->u.s.n - x->u.s.n : self->u.s.p;
            if (!memcmp(q, x->u.s.p, x->u.s.n)) return BOOLV(true);
        }
        return BOOLV(false);
    }
    case M_SPLIT:
    case M_RSPLIT: {
        jv *sep = arg(a, 0, "sep");
        jv *mx = arg(a, 1, "maxsplit");
        if (sep && sep->type != JV_STR && sep->type != JV_NONE)
            return failf(c, at, "split() separator must be str or None");
        jv *r = split(c, self, sep, mx ? inum(mx) : -1, fn->u.fn.id == M_RSPLIT);
        return r;
    }
    case M_REPLACE: {
        jv *o = arg(a, 0, "old"), *nw = arg(a, 1, "new"), *cnt = arg(a, 2, "count");
        if (!o || !nw || o->type != JV_STR || nw->type != JV_STR)
            return failf(c, at, "replace() needs two strings");
        return str_replace(c, self, o, nw, cnt && cnt->type != JV_NONE ? inum(cnt) : -1);
    }
    case M_UPPER: return recase(c, self, CASE_UPPER);
    case M_LOWER: return recase(c, self, CASE_LOWER);
    case M_TITLE: return recase(c, self, CASE_TITLE);
    case M_CAPITALIZE: {
        jv *low = recase(c, self, CASE_LOWER);
        return low ? recase(c, low, CASE_CAPITALIZE) : NULL;
    }
    case M_FIND:
    case M_RFIND:
    case M_COUNT: {
        jv *x = arg(a, 0, "sub");
        if (!x || x->type != JV_STR) return failf(c, at, "find()/count() need a string");
        const char *p = self->u.s.p;
        size_t n = self->u.s.n, xn = x->u.s.n;
        if (fn->u.fn.id == M_COUNT) {
            if (!xn) return mk_int(c, (int64_t)n_chars(p, n) + 1);
            int64_t k = 0;
            for (size_t i = 0; i + xn <= n;) {
                const char *h = memmem(p + i, n - i, x->u.s.p, xn);
                if (!h) break;
                k++;
                i = (size_t)(h - p) + xn;
            }
            return mk_int(c, k);
        }
        size_t hit = SIZE_MAX;
        if (xn <= n) {
            if (fn->u.fn.id == M_FIND) {
                const char *h = memmem(p, n, x->u.s.p, xn);
                if (h) hit = (size_t)(h - p);
            } else {
                for (size_t k = n - xn + 1; k > 0; k--)
                    if (!memcmp(p + k - 1, x->u.s.p, xn)) {
                        hit = k - 1;
                        break;
                    }
            }
        }
        return mk_int(c, hit == SIZE_MAX ? -1 : (int64_t)n_chars(p, hit));
    }
    case M_JOIN: {
        jv *it = arg(a, 0, "iterable");
        if (!it) return failf(c, at, "join() needs an iterable");
        jv *l = as_list(c, at, it);
        if (!l) return NULL;
        vkpt__buf b = {0};
        int err = 0;
        for (size_t i = 0; i < l->u.l.n && !err; i++) {
            if (l->u.l.v[i]->type != JV_STR) {
                vkpt__buf_free(&b);
                return failf(c, at, "join(): item %zu is %s, not str", i, type_name(l->u.l.v[i]));
            }
            if (i) err = vkpt__buf_put(&b, self->u.s.p, self->u.s.n);
            if (!err) err = vkpt__buf_put(&b, l->u.l.v[i]->u.s.p, l->u.l.v[i]->u.s.n);
        }
        jv *r = err ? oom(c) : mk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&b);
        return r;
    }
    case M_SPLITLINES: {
        jv *l = mk_list(c, 0);
        const char *p = self->u.s.p;
        size_t n = self->u.s.n, st = 0;
        for (size_t i = 0; l && i < n; i++) {
            if (p[i] == '\n' || p[i] == '\r') {
                if (!list_push(c, l, mk_str(c, p + st, i - st))) return NULL;
                if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') i++;
                st = i + 1;
            }
        }
        if (l && st < n && !list_push(c, l, mk_str(c, p + st, n - st))) return NULL;
        return l;
    }
    case M_ISDIGIT:
    case M_ISALPHA:
    case M_ISALNUM:
    case M_ISSPACE:
    case M_ISUPPER:
    case M_ISLOWER: return BOOLV(str_pred(self, fn->u.fn.id));
    }
    return failf(c, at, "unknown function");
}

static jv *render_body(ctx *c, const jnodes *body, frame *f)
{
    vkpt__buf b = {0};
    vkpt__buf *saved = c->out;
    c->out = &b;
    int r = exec_body(c, body, f);
    c->out = saved;
    jv *v = r < 0 ? NULL : mk_str(c, b.p ? b.p : "", b.n);
    vkpt__buf_free(&b);
    return v;
}

static jv *call_macro(ctx *c, const jnode *at, const jv *fn, const args *a)
{
    const jnode *m = fn->u.fn.macro;
    frame *f = frame_new(c, c->global);
    if (!f) return NULL;
    if ((size_t)a->np > m->args.n)
        return failf(c, at, "macro '%.*s' takes %zu arguments, got %d", (int)m->str_n, m->str,
                     m->args.n, a->np);
    bool used[16] = {false};
    for (size_t i = 0; i < m->args.n; i++) {
        const jnode *p = m->args.v[i];
        jv *v = NULL;
        if ((int)i < a->np) v = a->pos[i];
        for (int k = 0; !v && k < a->nk; k++)
            if (a->kl[k] == p->str_n && !memcmp(a->kn[k], p->str, p->str_n)) {
                v = a->kv[k];
                used[k] = true;
            }
        if (!frame_set(c, f, p->str, p->str_n, v ? v : UNDEF)) return NULL;
    }
    for (size_t i = 0; i < m->args.n; i++) {
        const jnode *p = m->args.v[i];
        if (p->kind != JN_KWARG || (int)i < a->np) continue;
        bool given = false;
        for (int k = 0; k < a->nk; k++)
            given = given || (a->kl[k] == p->str_n && !memcmp(a->kn[k], p->str, p->str_n));
        if (given) continue;
        frame *saved = c->cur;
        c->cur = f;
        jv *d = eval(c, p->a);
        c->cur = saved;
        if (!d || !frame_set(c, f, p->str, p->str_n, d)) return NULL;
    }
    for (int k = 0; k < a->nk; k++)
        if (!used[k])
            return failf(c, at, "macro '%.*s' has no parameter '%.*s'", (int)m->str_n, m->str,
                         (int)a->kl[k], a->kn[k]);
    if (++c->depth > 64) return failf(c, at, "macros nested deeper than 64");
    jv *r = render_body(c, &m->body, f);
    c->depth--;
    return r;
}

static jv *to_json(ctx *c, const jnode *at, const jv *v, const args *a)
{
    json_opts o = {.indent = -1, .item_sep = ", ", .key_sep = ": "};
    jv *ind = arg(a, 0, "indent");
    if (ind && ind->type != JV_NONE) {
        o.indent = (int)inum(ind);
        o.item_sep = ",";
    }
    jv *ea = arg(a, -1, "ensure_ascii");
    if (ea) o.ensure_ascii = truthy(ea);
    jv *sk = arg(a, -1, "sort_keys");
    if (sk) o.sort_keys = truthy(sk);
    jv *sep = arg(a, -1, "separators");
    char *seps[2] = {NULL, NULL};
    if (sep && sep->type == JV_LIST && sep->u.l.n == 2 && sep->u.l.v[0]->type == JV_STR &&
        sep->u.l.v[1]->type == JV_STR) {
        seps[0] = vkpt__arena_strndup(c->a, sep->u.l.v[0]->u.s.p, sep->u.l.v[0]->u.s.n);
        seps[1] = vkpt__arena_strndup(c->a, sep->u.l.v[1]->u.s.p, sep->u.l.v[1]->u.s.n);
        if (!seps[0] || !seps[1]) return oom(c);
        o.item_sep = seps[0];
        o.key_sep = seps[1];
    }
    vkpt__buf b = {0};
    int err = put_json(c, &b, v, &o, 0);
    jv *r = err == VKPT_ENOMEM ? oom(c)
            : err              ? failf(c, at, "tojson: %s", vkpt_errmsg(err))
                               : mk_str(c, b.p ? b.p : "", b.n);
    vkpt__buf_free(&b);
    return r;
}

static int cmp_for_sort(ctx *c, const jv *x, const jv *y, bool case_sensitive, bool *ok)
{
    if (!case_sensitive && x->type == JV_STR && y->type == JV_STR) {
        jv *lx = recase(c, x, CASE_LOWER), *ly = recase(c, y, CASE_LOWER);
        if (!lx || !ly) {
            *ok = false;
            return 0;
        }
        return jv_cmp(lx, ly, ok);
    }
    return jv_cmp(x, y, ok);
}

/* attribute path "a.b.0" of an item */
static jv *attr_path(ctx *c, const jv *item, const jv *attr)
{
    if (attr->type == JV_INT) return get_item(c, NULL, item, attr);
    const char *p = attr->u.s.p;
    size_t n = attr->u.s.n;
    const jv *cur = item;
    while (cur) {
        const char *dot = memchr(p, '.', n);
        size_t k = dot ? (size_t)(dot - p) : n;
        bool digits = k > 0;
        for (size_t i = 0; i < k; i++) digits = digits && p[i] >= '0' && p[i] <= '9';
        jv *key = digits ? mk_int(c, strtoll(p, NULL, 10)) : mk_str(c, p, k);
        if (!key) return NULL;
        cur = get_item(c, NULL, cur, key);
        if (!dot) break;
        p = dot + 1;
        n -= k + 1;
    }
    return (jv *)cur;
}

static jv *apply_filter(ctx *c, const jnode *at, const jv *v, const args *a)
{
    const char *f = at->str;
    size_t fl = at->str_n;
#define IS(name) (fl == sizeof(name) - 1 && !memcmp(f, name, fl))
    if (IS("safe")) return (jv *)v;
    if (IS("tojson")) return to_json(c, at, v, a);
    if (IS("default") || IS("d")) {
        jv *dv = arg(a, 0, "default_value");
        jv *bo = arg(a, 1, "boolean");
        if (v->type == JV_UNDEF || (bo && truthy(bo) && !truthy(v)))
            return dv ? dv : mk_str(c, "", 0);
        return (jv *)v;
    }
    if (IS("string")) return to_str(c, v);
    if (IS("length") || IS("count")) {
        switch (v->type) {
        case JV_STR: return mk_int(c, (int64_t)n_chars(v->u.s.p, v->u.s.n));
        case JV_LIST: return mk_int(c, (int64_t)v->u.l.n);
        case JV_DICT:
        case JV_NS: return mk_int(c, (int64_t)v->u.d.n);
        case JV_UNDEF: return mk_int(c, 0);
        default: return failf(c, at, "object of type '%s' has no len()", type_name(v));
        }
    }
    if (IS("trim")) {
        if (v->type != JV_STR) v = to_str(c, v);
        jv *ch = arg(a, 0, "chars");
        return v ? strip(c, v, ch && ch->type == JV_STR ? ch : NULL, true, true) : NULL;
    }
    if (IS("upper") || IS("lower") || IS("title") || IS("capitalize")) {
        jv *s = to_str(c, v);
        if (!s) return NULL;
        if (IS("upper")) return recase(c, s, CASE_UPPER);
        if (IS("lower")) return recase(c, s, CASE_LOWER);
        if (IS("title")) return recase(c, s, CASE_TITLE);
        jv *low = recase(c, s, CASE_LOWER);
        return low ? recase(c, low, CASE_CAPITALIZE) : NULL;
    }
    if (IS("escape") || IS("e")) {
        jv *s = to_str(c, v);
        if (!s) return NULL;
        vkpt__buf b = {0};
        int err = 0;
        for (size_t i = 0; i < s->u.s.n && !err; i++) {
            char ch = s->u.s.p[i];
            err = ch == '&'    ? vkpt__buf_puts(&b, "&amp;")
                  : ch == '<'  ? vkpt__buf_puts(&b, "&lt;")
                  : ch == '>'  ? vkpt__buf_puts(&b, "&gt;")
                  : ch == '"'  ? vkpt__buf_puts(&b, "&#34;")
                  : ch == '\'' ? vkpt__buf_puts(&b, "&#39;")
                               : vkpt__buf_putc(&b, ch);
        }
        jv *r = err ? oom(c) : mk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&b);
        return r;
    }
    if (IS("replace")) {
        jv *s = to_str(c, v);
        jv *o = arg(a, 0, "old"), *nw = arg(a, 1, "new"), *cnt = arg(a, 2, "count");
        if (!s) return NULL;
        if (!o || !nw) return failf(c, at, "replace needs two arguments");
        o = to_str(c, o);
        nw = to_str(c, nw);
        if (!o || !nw) return NULL;
        return str_replace(c, s, o, nw, cnt && cnt->type != JV_NONE ? inum(cnt) : -1);
    }
    if (IS("indent")) {
        jv *s = to_str(c, v);
        if (!s) return NULL;
        jv *w = arg(a, 0, "width"), *first = arg(a, 1, "first"), *blank = arg(a, 2, "blank");
        vkpt__buf pad = {0}, b = {0};
        int err = 0;
        if (w && w->type == JV_STR)
            err = vkpt__buf_put(&pad, w->u.s.p, w->u.s.n);
        else
            for (int64_t i = 0; i < (w ? inum(w) : 4) && !err; i++) err = vkpt__buf_putc(&pad, ' ');
        const char *p = s->u.s.p;
        size_t n = s->u.s.n, st = 0;
        bool first_line = true;
        for (size_t i = 0; i <= n && !err; i++) {
            if (i < n && p[i] != '\n') continue;
            size_t ln = i - st;
            bool do_pad =
                (!first_line || (first && truthy(first))) && (ln > 0 || (blank && truthy(blank)));
            if (do_pad) err = vkpt__buf_put(&b, pad.p ? pad.p : "", pad.n);
            if (!err) err = vkpt__buf_put(&b, p + st, ln);
            if (!err && i < n) err = vkpt__buf_putc(&b, '\n');
            st = i + 1;
            first_line = false;
        }
        jv *r = err ? oom(c) : mk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&pad);
        vkpt__buf_free(&b);
        return r;
    }
    if (IS("int")) {
        jv *dv = arg(a, 0, "default");
        if (v->type == JV_INT) return (jv *)v;
        if (v->type == JV_BOOL) return mk_int(c, v->u.b);
        if (v->type == JV_FLOAT) return mk_int(c, inum(v));
        if (v->type == JV_STR) {
            char tmp[64];
            snprintf(tmp, sizeof tmp, "%.*s", (int)(v->u.s.n < 63 ? v->u.s.n : 63), v->u.s.p);
            char *end;
            long long x = strtoll(tmp, &end, 10);
            while (*end == ' ') end++;
            if (*end == 0 && end != tmp) return mk_int(c, x);
            double d = strtod(tmp, &end);
            while (*end == ' ') end++;
            jv fv = {.type = JV_FLOAT, .u.f = d};
            if (*end == 0 && end != tmp) return mk_int(c, inum(&fv));
        }
        return dv ? dv : mk_int(c, 0);
    }
    if (IS("float")) {
        jv *dv = arg(a, 0, "default");
        if (is_num(v)) return mk_float(c, num(v));
        if (v->type == JV_STR) {
            char tmp[64], *end;
            snprintf(tmp, sizeof tmp, "%.*s", (int)(v->u.s.n < 63 ? v->u.s.n : 63), v->u.s.p);
            double d = strtod(tmp, &end);
            if (end != tmp && *end == 0) return mk_float(c, d);
        }
        return dv ? dv : mk_float(c, 0.0);
    }
    if (IS("abs")) {
        if (v->type == JV_INT) return mk_int(c, v->u.i < 0 ? -v->u.i : v->u.i);
        if (is_num(v)) return mk_float(c, fabs(num(v)));
        return failf(c, at, "bad operand type for abs(): '%s'", type_name(v));
    }
    if (IS("round")) {
        jv *pr = arg(a, 0, "precision"), *me = arg(a, 1, "method");
        if (!is_num(v)) return failf(c, at, "round needs a number");
        double x = num(v), p = pow(10, pr ? (double)inum(pr) : 0);
        const char *m = me && me->type == JV_STR ? me->u.s.p : "common";
        double r = !strncmp(m, "ceil", 4) ? ceil(x * p) / p
                   : !strncmp(m, "floor", 5)
                       ? floor(x * p) / p
                       : nearbyint(x * p) / p; /* common: halves to even, as Python */
        return mk_float(c, r);
    }
    if (IS("wordcount")) {
        jv *s = to_str(c, v);
        if (!s) return NULL;
        jv *w = split(c, s, NULL, -1, false);
        return w ? mk_int(c, (int64_t)w->u.l.n) : NULL;
    }
    if (IS("items")) {
        if (v->type == JV_UNDEF) return mk_list(c, 0);
        if (v->type != JV_DICT && v->type != JV_NS)
            return failf(c, at, "items needs a mapping, got %s", type_name(v));
        return items_of(c, v);
    }
    if (IS("dictsort")) {
        if (v->type != JV_DICT) return failf(c, at, "dictsort needs a mapping");
        jv *cs = arg(a, 0, "case_sensitive"), *by = arg(a, 1, "by"), *rev = arg(a, 2, "reverse");
        jv *l = items_of(c, v);
        if (!l) return NULL;
        int key =
            by && by->type == JV_STR && by->u.s.n == 5 && !memcmp(by->u.s.p, "value", 5) ? 1 : 0;
        for (size_t i = 1; i < l->u.l.n; i++)
            for (size_t j = i; j > 0; j--) {
                bool ok;
                int r = cmp_for_sort(c, l->u.l.v[j - 1]->u.l.v[key], l->u.l.v[j]->u.l.v[key],
                                     cs && truthy(cs), &ok);
                if (!ok) return failf(c, at, "dictsort: values cannot be compared");
                if (rev && truthy(rev)) r = -r;
                if (r <= 0) break;
                jv *t = l->u.l.v[j];
                l->u.l.v[j] = l->u.l.v[j - 1];
                l->u.l.v[j - 1] = t;
            }
        return l;
    }
    /* the rest work on sequences */
    jv *l = as_list(c, at, v);
    if (!l) return NULL;
    if (IS("list")) {
        jv *r = mk_list(c, l->u.l.n);
        for (size_t i = 0; r && i < l->u.l.n; i++) list_push(c, r, l->u.l.v[i]);
        return r;
    }
    if (IS("first"))
        return v->type == JV_STR ? get_item(c, at, v, mk_int(c, 0))
               : l->u.l.n        ? l->u.l.v[0]
                                 : UNDEF;
    if (IS("last"))
        return v->type == JV_STR ? get_item(c, at, v, mk_int(c, -1))
               : l->u.l.n        ? l->u.l.v[l->u.l.n - 1]
                                 : UNDEF;
    if (IS("reverse")) {
        if (v->type == JV_STR) {
            vkpt__buf b = {0};
            for (size_t i = l->u.l.n; i > 0; i--)
                if (vkpt__buf_put(&b, l->u.l.v[i - 1]->u.s.p, l->u.l.v[i - 1]->u.s.n)) oom(c);
            jv *r = mk_str(c, b.p ? b.p : "", b.n);
            vkpt__buf_free(&b);
            return r;
        }
        jv *r = mk_list(c, l->u.l.n);
        for (size_t i = l->u.l.n; r && i > 0; i--) list_push(c, r, l->u.l.v[i - 1]);
        return r;
    }
    if (IS("join")) {
        jv *sep = arg(a, 0, "d"), *attr = arg(a, 1, "attribute");
        vkpt__buf b = {0};
        int err = 0;
        for (size_t i = 0; i < l->u.l.n && !err; i++) {
            if (i && sep && sep->type == JV_STR) err = vkpt__buf_put(&b, sep->u.s.p, sep->u.s.n);
            const jv *x = attr ? attr_path(c, l->u.l.v[i], attr) : l->u.l.v[i];
            if (!err && x) err = put_str(c, &b, x);
        }
        jv *r = err ? oom(c) : mk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&b);
        return r;
    }
    if (IS("unique")) {
        jv *r = mk_list(c, 0);
        for (size_t i = 0; r && i < l->u.l.n; i++) {
            bool seen = false;
            for (size_t j = 0; j < r->u.l.n && !seen; j++) {
                const jv *x = l->u.l.v[i], *y = r->u.l.v[j];
                if (x->type == JV_STR && y->type == JV_STR) {
                    bool ok;
                    seen = cmp_for_sort(c, x, y, false, &ok) == 0 && ok;
                } else {
                    seen = jv_eq(x, y);
                }
            }
            if (!seen && !list_push(c, r, l->u.l.v[i])) return NULL;
        }
        return r;
    }
    if (IS("sort") || IS("min") || IS("max")) {
        bool is_sort = IS("sort");
        jv *rev = is_sort ? arg(a, 0, "reverse") : NULL;
        jv *cs = arg(a, is_sort ? 1 : 0, "case_sensitive");
        jv *attr = arg(a, is_sort ? 2 : 1, "attribute");
        jv *r = mk_list(c, l->u.l.n);
        for (size_t i = 0; r && i < l->u.l.n; i++) list_push(c, r, l->u.l.v[i]);
        if (!r) return NULL;
        for (size_t i = 1; i < r->u.l.n; i++)
            for (size_t j = i; j > 0; j--) {
                const jv *x = attr ? attr_path(c, r->u.l.v[j - 1], attr) : r->u.l.v[j - 1];
                const jv *y = attr ? attr_path(c, r->u.l.v[j], attr) : r->u.l.v[j];
                bool ok;
                int cr = x && y ? cmp_for_sort(c, x, y, cs && truthy(cs), &ok) : 0;
                if (!x || !y || !ok)
                    return failf(c, at, "%.*s: items cannot be compared", (int)fl, f);
                if (rev && truthy(rev)) cr = -cr;
                if (cr <= 0) break;
                jv *t = r->u.l.v[j];
                r->u.l.v[j] = r->u.l.v[j - 1];
                r->u.l.v[j - 1] = t;
            }
        if (is_sort) return r;
        if (!r->u.l.n) return UNDEF;
        return IS("min") ? r->u.l.v[0] : r->u.l.v[r->u.l.n - 1];
    }
    if (IS("sum")) {
        jv *attr = arg(a, 0, "attribute"), *start = arg(a, 1, "start");
        bool fl_ = start && start->type == JV_FLOAT;
        double df = start ? num(start) : 0;
        int64_t di = start ? inum(start) : 0;
        for (size_t i = 0; i < l->u.l.n; i++) {
            const jv *x = attr ? attr_path(c, l->u.l.v[i], attr) : l->u.l.v[i];
            if (!x || !is_num(x)) return failf(c, at, "sum: items must be numbers");
            fl_ = fl_ || x->type == JV_FLOAT;
            df += num(x);
            di += inum(x);
        }
        return fl_ ? mk_float(c, df) : mk_int(c, di);
    }
    if (IS("map")) {
        jv *attr = arg(a, -1, "attribute"), *dv = arg(a, -1, "default");
        jv *r = mk_list(c, l->u.l.n);
        for (size_t i = 0; r && i < l->u.l.n; i++) {
            jv *x;
            if (attr) {
                x = attr_path(c, l->u.l.v[i], attr);
                if (x && x->type == JV_UNDEF && dv) x = dv;
            } else if (a->np >= 1 && a->pos[0]->type == JV_STR) {
                /* map('filter', args...) */
                jnode fake = *at;
                fake.str = a->pos[0]->u.s.p;
                fake.str_n = a->pos[0]->u.s.n;
                if (!vkpt__jinja_filter_known(fake.str, fake.str_n))
                    return failf(c, at, "map: unknown filter '%.*s'", (int)fake.str_n, fake.str);
                args sub = *a;
                for (int k = 1; k < sub.np; k++) sub.pos[k - 1] = sub.pos[k];
                sub.np--;
                x = apply_filter(c, &fake, l->u.l.v[i], &sub);
            } else {
                return failf(c, at, "map needs a filter name or attribute=");
            }
            if (!list_push(c, r, x)) return NULL;
        }
        return r;
    }
    if (IS("select") || IS("reject") || IS("selectattr") || IS("rejectattr")) {
        bool attr_mode = IS("selectattr") || IS("rejectattr");
        bool sel = IS("select") || IS("selectattr");
        int ti = attr_mode ? 1 : 0;
        jv *attr = attr_mode ? arg(a, 0, NULL) : NULL;
        if (attr_mode && (!attr || (attr->type != JV_STR && attr->type != JV_INT)))
            return failf(c, at, "%.*s needs an attribute name", (int)fl, f);
        jv *test = arg(a, ti, NULL);
        if (test && test->type != JV_STR)
            return failf(c, at, "%.*s: test name must be a string", (int)fl, f);
        if (test && !vkpt__jinja_test_known(test->u.s.p, test->u.s.n))
            return failf(c, at, "unknown test '%.*s'", (int)test->u.s.n, test->u.s.p);
        args targs = {0};
        for (int k = ti + 1; k < a->np; k++) targs.pos[targs.np++] = a->pos[k];
        jv *r = mk_list(c, 0);
        for (size_t i = 0; r && i < l->u.l.n; i++) {
            const jv *x = attr ? attr_path(c, l->u.l.v[i], attr) : l->u.l.v[i];
            if (!x) return NULL;
            bool res;
            if (test) {
                if (!apply_test(c, at, test->u.s.p, test->u.s.n, x, &targs, &res)) return NULL;
            } else {
                res = truthy(x);
            }
            if (res == sel && !list_push(c, r, l->u.l.v[i])) return NULL;
        }
        return r;
    }
#undef IS
    return failf(c, at, "filter '%.*s' is not supported here", (int)fl, f);
}

static bool apply_test(ctx *c, const jnode *at, const char *t, size_t tl, const jv *v,
                       const args *a, bool *res)
{
#define IS(name) (tl == sizeof(name) - 1 && !memcmp(t, name, tl))
    const jv *o = a->np ? a->pos[0] : NULL;
    if (IS("defined"))
        *res = v->type != JV_UNDEF;
    else if (IS("undefined"))
        *res = v->type == JV_UNDEF;
    else if (IS("none"))
        *res = v->type == JV_NONE;
    else if (IS("boolean"))
        *res = v->type == JV_BOOL;
    else if (IS("true"))
        *res = v->type == JV_BOOL && v->u.b;
    else if (IS("false"))
        *res = v->type == JV_BOOL && !v->u.b;
    else if (IS("integer"))
        *res = v->type == JV_INT;
    else if (IS("float"))
        *res = v->type == JV_FLOAT;
    else if (IS("number"))
        *res = is_num(v);
    else if (IS("string"))
        *res = v->type == JV_STR;
    else if (IS("mapping"))
        *res = v->type == JV_DICT;
    else if (IS("iterable"))
        *res = v->type == JV_LIST || v->type == JV_STR || v->type == JV_DICT;
    else if (IS("sequence"))
        *res = v->type == JV_LIST || v->type == JV_STR || v->type == JV_DICT;
    else if (IS("callable"))
        *res = v->type == JV_FUNC;
    else if (IS("lower") || IS("upper")) {
        if (v->type != JV_STR)
            *res = false;
        else {
            jv *x = recase(c, v, IS("lower") ? CASE_LOWER : CASE_UPPER);
            if (!x) return false;
            *res = jv_eq(x, v);
        }
    } else if (IS("odd") || IS("even") || IS("divisibleby")) {
        if (!is_num(v)) return failf(c, at, "test '%.*s' needs a number", (int)tl, t) != NULL;
        int64_t d = IS("divisibleby") ? (o ? inum(o) : 0) : 2;
        if (!d) return failf(c, at, "divisibleby 0") != NULL;
        int64_t r = inum(v) % d;
        *res = IS("odd") ? r != 0 : r == 0;
    } else if (IS("eq") || IS("equalto") || IS("ne") || IS("sameas")) {
        if (!o) return failf(c, at, "test '%.*s' needs an argument", (int)tl, t) != NULL;
        *res = IS("ne") ? !jv_eq(v, o)
               : IS("sameas")
                   ? (v == o || (v->type <= JV_BOOL && jv_eq(v, o) && v->type == o->type))
                   : jv_eq(v, o);
    } else if (IS("lt") || IS("le") || IS("gt") || IS("ge") || IS("lessthan") ||
               IS("greaterthan")) {
        if (!o) return failf(c, at, "test '%.*s' needs an argument", (int)tl, t) != NULL;
        bool ok;
        int r = jv_cmp(v, o, &ok);
        if (!ok)
            return failf(c, at, "'%.*s' not supported between %s and %s", (int)tl, t, type_name(v),
                         type_name(o)) != NULL;
        *res = (IS("lt") || IS("lessthan"))      ? r < 0
               : IS("le")                        ? r <= 0
               : (IS("gt") || IS("greaterthan")) ? r > 0
                                                 : r >= 0;
    } else if (IS("in")) {
        if (!o) return failf(c, at, "test 'in' needs an argument") != NULL;
        if (o->type == JV_STR && v->type == JV_STR)
            *res = v->u.s.n <= o->u.s.n && memmem(o->u.s.p, o->u.s.n, v->u.s.p, v->u.s.n);
        else if (o->type == JV_DICT)
            *res = dict_get(o, v) != NULL;
        else if (o->type == JV_LIST) {
            *res = false;
            for (size_t i = 0; i < o->u.l.n && !*res; i++) *res = jv_eq(v, o->u.l.v[i]);
        } else
            *res = false;
    } else {
        return failf(c, at, "unknown test '%.*s'", (int)tl, t) != NULL;
    }
    return true;
#undef IS
}

static jv *binop(ctx *c, const jnode *n, jv *l, jv *r)
{
    int op = n->op;
    switch (op) {
    case JOP_EQ: return BOOLV(jv_eq(l, r));
    case JOP_NE: return BOOLV(!jv_eq(l, r));
    case JOP_IN:
    case JOP_NOTIN: {
        bool res;
        args a = {.pos = {r}, .np = 1};
        if (r->type == JV_UNDEF)
            res = false;
        else if (r->type != JV_STR && r->type != JV_LIST && r->type != JV_DICT && r->type != JV_NS)
            return failf(c, n, "argument of type '%s' is not iterable", type_name(r));
        else if (r->type == JV_STR && l->type != JV_STR)
            return failf(c, n, "'in <string>' requires string as left operand, not %s",
                         type_name(l));
        else if (r->type == JV_NS)
            res = dict_get(r, l) != NULL;
        else if (!apply_test(c, n, "in", 2, l, &a, &res))
            return NULL;
        return BOOLV(op == JOP_IN ? res : !res);
    }
    case JOP_CONCAT: {
        vkpt__buf b = {0};
        int err = put_str(c, &b, l);
        if (!err) err = put_str(c, &b, r);
        jv *v = err ? oom(c) : mk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&b);
        return v;
    }
    case JOP_LT:
    case JOP_LE:
    case JOP_GT:
    case JOP_GE: {
        bool ok;
        int x = jv_cmp(l, r, &ok);
        if (!ok)
            return failf(c, n, "comparison not supported between %s and %s", type_name(l),
                         type_name(r));
        return BOOLV(op == JOP_LT ? x < 0 : op == JOP_LE ? x <= 0 : op == JOP_GT ? x > 0 : x >= 0);
    }
    }
    if (l->type == JV_UNDEF || r->type == JV_UNDEF)
        return failf(c, n, "undefined value in an arithmetic expression");
    if (op == JOP_ADD && l->type == JV_STR && r->type == JV_STR) {
        char *p = vkpt__arena_alloc(c->a, l->u.s.n + r->u.s.n + 1);
        if (!p) return oom(c);
        memcpy(p, l->u.s.p, l->u.s.n);
        memcpy(p + l->u.s.n, r->u.s.p, r->u.s.n);
        jv *v = mk(c, JV_STR);
        if (v) {
            v->u.s.p = p;
            v->u.s.n = l->u.s.n + r->u.s.n;
        }
        return v;
    }
    if (op == JOP_ADD && l->type == JV_LIST && r->type == JV_LIST) {
        jv *v = mk_list(c, l->u.l.n + r->u.l.n);
        for (size_t i = 0; v && i < l->u.l.n; i++) list_push(c, v, l->u.l.v[i]);
        for (size_t i = 0; v && i < r->u.l.n; i++) list_push(c, v, r->u.l.v[i]);
        return v;
    }
    if (op == JOP_MUL &&
        ((l->type == JV_STR && r->type == JV_INT) || (l->type == JV_INT && r->type == JV_STR))) {
        const jv *s = l->type == JV_STR ? l : r;
        int64_t k = l->type == JV_INT ? l->u.i : r->u.i;
        if (k > 0 && s->u.s.n * (uint64_t)k > (64u << 20))
            return failf(c, n, "string repetition too long");
        vkpt__buf b = {0};
        for (int64_t i = 0; i < k; i++)
            if (vkpt__buf_put(&b, s->u.s.p, s->u.s.n)) oom(c);
        jv *v = mk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&b);
        return v;
    }
    if (!is_num(l) || !is_num(r))
        return failf(c, n, "unsupported operand types for arithmetic: '%s' and '%s'", type_name(l),
                     type_name(r));
    bool fl = l->type == JV_FLOAT || r->type == JV_FLOAT;
    double a = num(l), b = num(r);
    int64_t ia = inum(l), ib = inum(r);
    int64_t ir;
    switch (op) {
    case JOP_ADD:
        if (fl) return mk_float(c, a + b);
        if (__builtin_add_overflow(ia, ib, &ir)) return failf(c, n, "integer overflow");
        return mk_int(c, ir);
    case JOP_SUB:
        if (fl) return mk_float(c, a - b);
        if (__builtin_sub_overflow(ia, ib, &ir)) return failf(c, n, "integer overflow");
        return mk_int(c, ir);
    case JOP_MUL:
        if (fl) return mk_float(c, a * b);
        if (__builtin_mul_overflow(ia, ib, &ir)) return failf(c, n, "integer overflow");
        return mk_int(c, ir);
    case JOP_DIV:
        if (b == 0) return failf(c, n, "division by zero");
        return mk_float(c, a / b);
    case JOP_FLOORDIV:
        if (b == 0) return failf(c, n, "integer division by zero");
        if (fl) return mk_float(c, floor(a / b));
        if (ia == INT64_MIN && ib == -1) return failf(c, n, "integer overflow");
        return mk_int(c, ia / ib - ((ia % ib != 0) && ((ia < 0) != (ib < 0))));
    case JOP_MOD:
        if (b == 0) return failf(c, n, "modulo by zero");
        if (fl) {
            double m = fmod(a, b);
            if (m != 0 && ((m < 0) != (b < 0))) m += b;
            return mk_float(c, m);
        } else {
            if (ib == -1) return mk_int(c, 0);
            int64_t m = ia % ib;
            if (m != 0 && ((m < 0) != (ib < 0))) m += ib;
            return mk_int(c, m);
        }
    case JOP_POW:
        if (!fl && ib >= 0) {
            int64_t x = 1;
            if (ia == 0 || ia == 1)
                x = ib ? ia : 1;
            else if (ia == -1)
                x = ib % 2 ? -1 : 1;
            else /* |ia| >= 2: overflows within 64 steps */
                for (int64_t i = 0; i < ib; i++)
                    if (__builtin_mul_overflow(x, ia, &x)) return failf(c, n, "integer overflow");
            return mk_int(c, x);
        }
        return mk_float(c, pow(a, b));
    }
    return failf(c, n, "unknown operator");
}

static jv *eval(ctx *c, const jnode *n)
{
    if (c->err) return NULL;
    if (++c->depth > 400) return failf(c, n, "expression nested too deeply");
    jv *r = NULL;
    switch (n->kind) {
    case JN_LIT: r = (jv *)n->value; break;
    case JN_NAME: r = lookup(c, c->cur, n->str, n->str_n); break;
    case JN_ATTR: {
        jv *o = eval(c, n->a);
        if (o) r = get_attr(c, o, n->str, n->str_n);
        break;
    }
    case JN_INDEX: {
        jv *o = eval(c, n->a), *k = o ? eval(c, n->b) : NULL;
        if (k) r = get_item(c, n, o, k);
        break;
    }
    case JN_SLICE: {
        jv *o = eval(c, n->a);
        jv *a = o && n->b ? eval(c, n->b) : NULL;
        jv *b = o && n->c ? eval(c, n->c) : NULL;
        jv *s = o && n->d ? eval(c, n->d) : NULL;
        if (o && !c->err) r = slice(c, n, o, a, b, s);
        break;
    }
    case JN_CALL: {
        jv *fn = eval(c, n->a);
        args a;
        if (!fn || !eval_args(c, &n->args, &a, c->cur)) break;
        if (fn->type != JV_FUNC) {
            r = failf(c, n, "'%s' object is not callable",
                      fn->type == JV_UNDEF ? "undefined" : type_name(fn));
            break;
        }
        r = call_fn(c, n, fn, &a);
        break;
    }
    case JN_FILTER: {
        jv *v = eval(c, n->a);
        args a;
        if (v && eval_args(c, &n->args, &a, c->cur)) r = apply_filter(c, n, v, &a);
        break;
    }
    case JN_TEST: {
        jv *v = eval(c, n->a);
        args a;
        bool res;
        if (v && eval_args(c, &n->args, &a, c->cur) &&
            apply_test(c, n, n->str, n->str_n, v, &a, &res))
            r = BOOLV(n->negate ? !res : res);
        break;
    }
    case JN_UNARY: {
        jv *v = eval(c, n->a);
        if (!v) break;
        if (n->op == JOP_NOT)
            r = BOOLV(!truthy(v));
        else if (!is_num(v))
            r = failf(c, n, "bad operand type for unary %c: '%s'", n->op == JOP_NEG ? '-' : '+',
                      type_name(v));
        else if (n->op == JOP_POS)
            r = v->type == JV_BOOL ? mk_int(c, v->u.b) : v;
        else if (v->type == JV_FLOAT)
            r = mk_float(c, -v->u.f);
        else if (inum(v) == INT64_MIN)
            r = failf(c, n, "integer overflow");
        else
            r = mk_int(c, -inum(v));
        break;
    }
    case JN_BINARY: {
        jv *l = eval(c, n->a);
        if (!l) break;
        if (n->op == JOP_AND) {
            r = truthy(l) ? eval(c, n->b) : l;
            break;
        }
        if (n->op == JOP_OR) {
            r = truthy(l) ? l : eval(c, n->b);
            break;
        }
        jv *rv = eval(c, n->b);
        if (rv) r = binop(c, n, l, rv);
        break;
    }
    case JN_COND: {
        jv *cond = eval(c, n->a);
        if (cond) r = truthy(cond) ? eval(c, n->b) : n->c ? eval(c, n->c) : UNDEF;
        break;
    }
    case JN_LIST:
    case JN_TUPLE: {
        jv *l = mk_list(c, n->args.n);
        for (size_t i = 0; l && i < n->args.n; i++)
            if (!list_push(c, l, eval(c, n->args.v[i]))) {
                l = NULL;
                break;
            }
        if (l) l->tuple = n->kind == JN_TUPLE;
        r = l;
        break;
    }
    case JN_DICT: {
        jv *d = mk_dict(c, JV_DICT);
        for (size_t i = 0; d && i + 1 < n->args.n; i += 2) {
            jv *k = eval(c, n->args.v[i]);
            jv *v = k ? eval(c, n->args.v[i + 1]) : NULL;
            if (!v || !dict_set(c, d, k, v)) {
                d = NULL;
                break;
            }
        }
        r = d;
        break;
    }
    default: r = failf(c, n, "not an expression");
    }
    c->depth--;
    if (!r && !c->err) oom(c); /* a helper ran out of memory without saying so */
    return c->err ? NULL : r;
}

/* ---- statements ---------------------------------------------------------------------------- */

enum { EX_OK = 0, EX_BREAK = 1, EX_CONTINUE = 2, EX_ERR = -1 };

static bool assign(ctx *c, frame *f, const jnode *target, jv *v)
{
    if (target->kind == JN_NAME) return frame_set(c, f, target->str, target->str_n, v);
    if (target->kind == JN_ATTR) {
        jv *o = lookup(c, f, target->a->str, target->a->str_n);
        if (!o || o->type != JV_NS)
            return failf(c, target, "cannot assign attribute on non-namespace object") != NULL;
        return dict_set(c, o, mk_str(c, target->str, target->str_n), v);
    }
    if (target->kind == JN_TUPLE) {
        if (v->type != JV_LIST)
            return failf(c, target, "cannot unpack non-iterable %s", type_name(v)) != NULL;
        if (v->u.l.n != target->args.n)
            return failf(c, target, "expected %zu values to unpack, got %zu", target->args.n,
                         v->u.l.n) != NULL;
        for (size_t i = 0; i < target->args.n; i++)
            if (!assign(c, f, target->args.v[i], v->u.l.v[i])) return false;
        return true;
    }
    return failf(c, target, "cannot assign to this expression") != NULL;
}

static int exec_for(ctx *c, const jnode *n, frame *f)
{
    frame *saved = c->cur;
    c->cur = f;
    jv *it = eval(c, n->b);
    jv *l = it ? as_list(c, n->b, it) : NULL;
    c->cur = saved;
    if (!l) return EX_ERR;
    frame *lf = frame_new(c, f);
    if (!lf) return EX_ERR;
    /* the filter runs before loop.* is known, as in Jinja2 */
    jv *items = l;
    if (n->c) {
        items = mk_list(c, 0);
        if (!items) return EX_ERR;
        for (size_t i = 0; i < l->u.l.n; i++) {
            if (!assign(c, lf, n->a, l->u.l.v[i])) return EX_ERR;
            c->cur = lf;
            jv *ok = eval(c, n->c);
            c->cur = saved;
            if (!ok) return EX_ERR;
            if (truthy(ok) && !list_push(c, items, l->u.l.v[i])) return EX_ERR;
        }
    }
    size_t len = items->u.l.n;
    for (size_t i = 0; i < len; i++) {
        jv *loop = mk_dict(c, JV_DICT);
        if (!loop || !dict_sets(c, loop, "index", mk_int(c, (int64_t)i + 1)) ||
            !dict_sets(c, loop, "index0", mk_int(c, (int64_t)i)) ||
            !dict_sets(c, loop, "revindex", mk_int(c, (int64_t)(len - i))) ||
            !dict_sets(c, loop, "revindex0", mk_int(c, (int64_t)(len - i - 1))) ||
            !dict_sets(c, loop, "first", BOOLV(i == 0)) ||
            !dict_sets(c, loop, "last", BOOLV(i + 1 == len)) ||
            !dict_sets(c, loop, "length", mk_int(c, (int64_t)len)) ||
            !dict_sets(c, loop, "depth", mk_int(c, 1)) ||
            !dict_sets(c, loop, "depth0", mk_int(c, 0)) ||
            !dict_sets(c, loop, "previtem", i > 0 ? items->u.l.v[i - 1] : UNDEF) ||
            !dict_sets(c, loop, "nextitem", i + 1 < len ? items->u.l.v[i + 1] : UNDEF))
            return EX_ERR;
        if (!dict_sets(c, loop, "cycle", mk_fn(c, F_CYCLE, loop))) return EX_ERR;
        if (!frame_set(c, lf, "loop", 4, loop) || !assign(c, lf, n->a, items->u.l.v[i]))
            return EX_ERR;
        int r = exec_body(c, &n->body, lf);
        if (r == EX_ERR) return EX_ERR;
        if (r == EX_BREAK) break;
    }
    if (!len && n->orelse.n) return exec_body(c, &n->orelse, f) == EX_ERR ? EX_ERR : EX_OK;
    return EX_OK;
}

#define MAX_STEPS  20000000u
#define MAX_OUTPUT (256u << 20)

static int exec_body(ctx *c, const jnodes *body, frame *f)
{
    for (size_t i = 0; i < body->n; i++) {
        const jnode *n = body->v[i];
        if (++c->steps > MAX_STEPS || c->out->n > MAX_OUTPUT) {
            if (!c->err)
                c->err = vkpt_fail(VKPT_ETOOBIG,
                                   "chat template line %u, column %u: the template runs more than "
                                   "%u steps or renders more than %u MiB",
                                   n->line, n->col, MAX_STEPS, MAX_OUTPUT >> 20);
            return EX_ERR;
        }
        frame *saved = c->cur;
        c->cur = f;
        int r = EX_OK;
        switch (n->kind) {
        case JN_TEXT:
            if (vkpt__buf_put(c->out, n->str, n->str_n)) {
                oom(c);
                r = EX_ERR;
            }
            break;
        case JN_OUTPUT: {
            jv *v = eval(c, n->a);
            if (!v || put_str(c, c->out, v)) r = EX_ERR;
            break;
        }
        case JN_IF: {
            jv *v = eval(c, n->a);
            if (!v)
                r = EX_ERR;
            else
                r = exec_body(c, truthy(v) ? &n->body : &n->orelse, f);
            break;
        }
        case JN_FOR: r = exec_for(c, n, f); break;
        case JN_SET: {
            jv *v = n->b ? eval(c, n->b) : render_body(c, &n->body, f);
            if (!v || !assign(c, f, n->a, v)) r = EX_ERR;
            break;
        }
        case JN_MACRO: {
            jv *fn = mk(c, JV_FUNC);
            if (!fn) {
                r = EX_ERR;
                break;
            }
            fn->u.fn.id = -1;
            fn->u.fn.macro = n;
            if (!frame_set(c, f, n->str, n->str_n, fn)) r = EX_ERR;
            break;
        }
        case JN_BREAK: r = EX_BREAK; break;
        case JN_CONTINUE: r = EX_CONTINUE; break;
        default: failf(c, n, "not a statement"); r = EX_ERR;
        }
        c->cur = saved;
        if (r == EX_ERR && !c->err) oom(c); /* an output buffer could not grow */
        if (c->err) return EX_ERR;
        if (r) return r;
    }
    return EX_OK;
}

/* ---- input values -------------------------------------------------------------------------------- */

static jv *from_json(ctx *c, const cJSON *j, int depth)
{
    if (depth > 64) return failf(c, NULL, "variables nested deeper than 64");
    if (cJSON_IsNull(j) || !j) return NONE;
    if (cJSON_IsBool(j)) return BOOLV(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0) return mk_int(c, (int64_t)d);
        return mk_float(c, d);
    }
    if (cJSON_IsString(j)) return mk_str(c, j->valuestring, strlen(j->valuestring));
    if (cJSON_IsArray(j)) {
        jv *l = mk_list(c, (size_t)cJSON_GetArraySize(j));
        const cJSON *e;
        cJSON_ArrayForEach(e, j)
        {
            if (!list_push(c, l, from_json(c, e, depth + 1))) return NULL;
        }
        return l;
    }
    if (cJSON_IsObject(j)) {
        jv *d = mk_dict(c, JV_DICT);
        const cJSON *e;
        cJSON_ArrayForEach(e, j)
        {
            if (!d || !dict_set(c, d, mk_str(c, e->string, strlen(e->string)),
                                from_json(c, e, depth + 1)))
                return NULL;
        }
        return d;
    }
    return NONE;
}

int vkpt_chat_template_render(const vkpt_chat_template *tpl, const struct cJSON *vars,
                              char **text_take, size_t *len)
{
    if (!tpl || !text_take) return vkpt_fail(VKPT_EINVAL, "render: NULL argument");
    *text_take = NULL;
    if (vars && !cJSON_IsObject(vars))
        return vkpt_fail(VKPT_EINVAL, "render: variables must be a JSON object");
    vkpt__arena arena = {0};
    vkpt__buf out = {0};
    ctx c = {.a = &arena, .out = &out};
    int err = 0;
    c.global = frame_new(&c, NULL);
    const cJSON *e;
    cJSON_ArrayForEach(e, vars)
    {
        if (!c.global ||
            !frame_set(&c, c.global, e->string, strlen(e->string), from_json(&c, e, 0)))
            break;
    }
    c.cur = c.global;
    if (!c.err) exec_body(&c, &tpl->body, c.global);
    err = c.err;
    if (!err && arena.failed) err = vkpt_fail(VKPT_ENOMEM, "chat template render");
    vkpt__arena_free(&arena);
    if (err) {
        vkpt__buf_free(&out);
        return err;
    }
    *text_take = vkpt__buf_take(&out, len);
    return *text_take ? 0 : vkpt_fail(VKPT_ENOMEM, "chat template render");
}

/* ---- the tokenizer's template ------------------------------------------------------------------ */

int vkpt__tok_set_template(vkpt_tokenizer *t, const char *src, size_t n, bool tools)
{
    vkpt_chat_template *tpl;
    int err = vkpt_chat_template_create(src, n, &tpl);
    if (err) return err;
    vkpt_chat_template **slot = tools ? &t->tpl_tools : &t->tpl;
    vkpt_chat_template_destroy(*slot);
    *slot = tpl;
    return 0;
}

const vkpt_chat_template *vkpt_tokenizer_chat_template(const vkpt_tokenizer *t)
{
    return t->tpl ? t->tpl : t->tpl_tools;
}

int vkpt_tokenizer_apply_chat_template(const vkpt_tokenizer *t, const struct cJSON *vars,
                                       char **text_take, size_t *len)
{
    if (!t || !text_take) return vkpt_fail(VKPT_EINVAL, "apply_chat_template: NULL argument");
    const cJSON *tools = vars ? cJSON_GetObjectItemCaseSensitive(vars, "tools") : NULL;
    const vkpt_chat_template *tpl = tools && !cJSON_IsNull(tools) && t->tpl_tools
                                        ? t->tpl_tools
                                        : vkpt_tokenizer_chat_template(t);
    if (!tpl) return vkpt_fail(VKPT_ENOTFOUND, "this tokenizer has no chat template");
    cJSON *all = vars ? cJSON_Duplicate(vars, true) : cJSON_CreateObject();
    if (!all) return vkpt_fail(VKPT_ENOMEM, "apply_chat_template");
    static const char *const keys[7] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                        "pad_token", "cls_token", "mask_token"};
    for (int i = 0; i < 7; i++)
        if (t->tok_strings[i] && !cJSON_GetObjectItemCaseSensitive(all, keys[i]))
            cJSON_AddStringToObject(all, keys[i], t->tok_strings[i]);
    /* transformers always passes these */
    if (!cJSON_GetObjectItemCaseSensitive(all, "tools")) cJSON_AddNullToObject(all, "tools");
    if (!cJSON_GetObjectItemCaseSensitive(all, "documents"))
        cJSON_AddNullToObject(all, "documents");
    if (!cJSON_GetObjectItemCaseSensitive(all, "add_generation_prompt"))
        cJSON_AddFalseToObject(all, "add_generation_prompt");
    int err = vkpt_chat_template_render(tpl, all, text_take, len);
    cJSON_Delete(all);
    return err;
}
