/* Chat templates: values. Constructors, Python's str() and repr(), tojson,
 * comparisons, the string methods' work, iteration and slicing, and JSON
 * input. Values follow Python Jinja2 in transformers'
 * ImmutableSandboxedEnvironment (see jinja_eval.c). */
#define _GNU_SOURCE
#include "jinja_int.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <utf8proc.h>

typedef vkpt__jctx ctx;
typedef vkpt__jframe frame;
typedef vkpt__jargs args;
typedef vkpt__jjson json_opts;

const jv vkpt__jundef = {.type = JV_UNDEF};
const jv vkpt__jnone = {.type = JV_NONE};
const jv vkpt__jtrue = {.type = JV_BOOL, .u.b = true};
const jv vkpt__jfalse = {.type = JV_BOOL, .u.b = false};

jv *vkpt__jfailf(ctx *c, const jnode *at, const char *fmt, ...)
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

jv *vkpt__joom(ctx *c)
{
    if (!c->err) c->err = vkpt_fail(VKPT_ENOMEM, "chat template render");
    return NULL;
}

jv *vkpt__jmk(ctx *c, int type)
{
    jv *v = vkpt__jv_new(c->a, type);
    return v ? v : vkpt__joom(c);
}

jv *vkpt__jmk_int(ctx *c, int64_t i)
{
    jv *v = vkpt__jmk(c, JV_INT);
    if (v) v->u.i = i;
    return v;
}

jv *vkpt__jmk_float(ctx *c, double f)
{
    jv *v = vkpt__jmk(c, JV_FLOAT);
    if (v) v->u.f = f;
    return v;
}

jv *vkpt__jmk_str(ctx *c, const char *s, size_t n)
{
    jv *v = vkpt__jv_str(c->a, s, n);
    return v ? v : vkpt__joom(c);
}

jv *vkpt__jmk_list(ctx *c, size_t cap)
{
    jv *v = vkpt__jmk(c, JV_LIST);
    if (!v) return NULL;
    if (cap) {
        v->u.l.v = vkpt__arena_alloc(c->a, cap * sizeof(jv *));
        if (!v->u.l.v) return vkpt__joom(c);
        v->u.l.cap = cap;
    }
    return v;
}

bool vkpt__jlist_push(ctx *c, jv *l, jv *x)
{
    if (!x) return false;
    if (l->u.l.n == l->u.l.cap) {
        size_t cap = l->u.l.cap ? l->u.l.cap * 2 : 8;
        jv **v = vkpt__arena_alloc(c->a, cap * sizeof *v);
        if (!v) return vkpt__joom(c) != NULL;
        if (l->u.l.n) memcpy(v, l->u.l.v, l->u.l.n * sizeof *v);
        l->u.l.v = v;
        l->u.l.cap = cap;
    }
    l->u.l.v[l->u.l.n++] = x;
    return true;
}

jv *vkpt__jmk_dict(ctx *c, int type)
{
    return vkpt__jmk(c, type);
}

static bool str_eq(const jv *a, const char *s, size_t n)
{
    return a->type == JV_STR && a->u.s.n == n && !memcmp(a->u.s.p, s, n);
}

jv *vkpt__jdict_get(const jv *d, const jv *key)
{
    for (size_t i = 0; i < d->u.d.n; i++)
        if (vkpt__jeq(d->u.d.k[i], key)) return d->u.d.v[i];
    return NULL;
}

jv *vkpt__jdict_gets(const jv *d, const char *s, size_t n)
{
    for (size_t i = 0; i < d->u.d.n; i++)
        if (str_eq(d->u.d.k[i], s, n)) return d->u.d.v[i];
    return NULL;
}

bool vkpt__jdict_set(ctx *c, jv *d, jv *key, jv *val)
{
    if (!key || !val) return false;
    for (size_t i = 0; i < d->u.d.n; i++)
        if (vkpt__jeq(d->u.d.k[i], key)) {
            d->u.d.v[i] = val;
            return true;
        }
    if (d->u.d.n == d->u.d.cap) {
        size_t cap = d->u.d.cap ? d->u.d.cap * 2 : 8;
        jv **k = vkpt__arena_alloc(c->a, cap * sizeof *k);
        jv **v = vkpt__arena_alloc(c->a, cap * sizeof *v);
        if (!k || !v) return vkpt__joom(c) != NULL;
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

bool vkpt__jdict_sets(ctx *c, jv *d, const char *k, jv *val)
{
    return vkpt__jdict_set(c, d, vkpt__jmk_str(c, k, strlen(k)), val);
}

/* ---- conversions ---------------------------------------------------------------------- */

bool vkpt__jtruthy(const jv *v)
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

bool vkpt__jis_num(const jv *v)
{
    return v->type == JV_INT || v->type == JV_FLOAT || v->type == JV_BOOL;
}

double vkpt__jnum(const jv *v)
{
    return v->type == JV_FLOAT ? v->u.f : v->type == JV_INT ? (double)v->u.i : (double)v->u.b;
}

int64_t vkpt__jinum(const jv *v)
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
int vkpt__jput_str(ctx *c, vkpt__buf *b, const jv *v)
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
    default: return vkpt__jput_str(c, b, v);
    }
}

jv *vkpt__jto_str(ctx *c, const jv *v)
{
    if (v->type == JV_STR) return (jv *)v;
    vkpt__buf b = {0};
    if (vkpt__jput_str(c, &b, v)) {
        vkpt__buf_free(&b);
        return vkpt__joom(c);
    }
    jv *r = vkpt__jmk_str(c, b.p ? b.p : "", b.n);
    vkpt__buf_free(&b);
    return r;
}

/* ---- JSON (transformers' tojson) ------------------------------------------------------------ */

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

int vkpt__jput_json(ctx *c, vkpt__buf *b, const jv *v, const json_opts *o, int level)
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
            if (!err) err = vkpt__jput_json(c, b, v->u.l.v[i], o, level + 1);
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
            const jv *val = vkpt__jdict_get(v, k);
            if (i) err = vkpt__buf_puts(b, o->item_sep);
            if (!err && o->indent >= 0) err = json_newline(b, o, level + 1);
            if (err) break;
            if (k->type == JV_STR) {
                err = json_str(b, k->u.s.p, k->u.s.n, o->ensure_ascii);
            } else {
                vkpt__buf kb = {0};
                err = k->type == JV_NONE   ? vkpt__buf_puts(&kb, "null")
                      : k->type == JV_BOOL ? vkpt__buf_puts(&kb, k->u.b ? "true" : "false")
                                           : vkpt__jput_json(c, &kb, k, o, level + 1);
                if (!err) err = json_str(b, kb.p ? kb.p : "", kb.n, o->ensure_ascii);
                vkpt__buf_free(&kb);
            }
            if (!err) err = vkpt__buf_puts(b, o->key_sep);
            if (!err) err = vkpt__jput_json(c, b, val ? val : NONE, o, level + 1);
        }
        if (!err && o->indent >= 0) err = json_newline(b, o, level);
        return err ? err : vkpt__buf_putc(b, '}');
    }
    default: return vkpt__buf_puts(b, "null");
    }
}

/* ---- comparisons ------------------------------------------------------------------------ */

bool vkpt__jeq(const jv *a, const jv *b)
{
    if (vkpt__jis_num(a) && vkpt__jis_num(b)) {
        if (a->type != JV_FLOAT && b->type != JV_FLOAT) return vkpt__jinum(a) == vkpt__jinum(b);
        return vkpt__jnum(a) == vkpt__jnum(b);
    }
    if (a->type != b->type) return false;
    switch (a->type) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a->u.s.n == b->u.s.n && !memcmp(a->u.s.p, b->u.s.p, a->u.s.n);
    case JV_LIST:
        if (a->u.l.n != b->u.l.n) return false;
        for (size_t i = 0; i < a->u.l.n; i++)
            if (!vkpt__jeq(a->u.l.v[i], b->u.l.v[i])) return false;
        return true;
    case JV_DICT:
        if (a->u.d.n != b->u.d.n) return false;
        for (size_t i = 0; i < a->u.d.n; i++) {
            const jv *o = vkpt__jdict_get(b, a->u.d.k[i]);
            if (!o || !vkpt__jeq(a->u.d.v[i], o)) return false;
        }
        return true;
    default: return a == b;
    }
}

/* <0, 0, >0; sets *ok = false when Python would refuse to compare. */
int vkpt__jcmp(const jv *a, const jv *b, bool *ok)
{
    *ok = true;
    if (vkpt__jis_num(a) && vkpt__jis_num(b)) {
        double x = vkpt__jnum(a), y = vkpt__jnum(b);
        return (x > y) - (x < y);
    }
    if (a->type == JV_STR && b->type == JV_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        int r = memcmp(a->u.s.p, b->u.s.p, n);
        return r ? r : (a->u.s.n > b->u.s.n) - (a->u.s.n < b->u.s.n);
    }
    if (a->type == JV_LIST && b->type == JV_LIST) {
        for (size_t i = 0; i < a->u.l.n && i < b->u.l.n; i++) {
            int r = vkpt__jcmp(a->u.l.v[i], b->u.l.v[i], ok);
            if (!*ok || r) return r;
        }
        return (a->u.l.n > b->u.l.n) - (a->u.l.n < b->u.l.n);
    }
    *ok = false;
    return 0;
}

const char *vkpt__jtype_name(const jv *v)
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

size_t vkpt__jn_chars(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((uint8_t)s[i] & 0xC0) != 0x80;
    return k;
}

/* Byte offset of character index `ci` (clamped to n). */
size_t vkpt__jchar_off(const char *s, size_t n, size_t ci)
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

jv *vkpt__jstrip(ctx *c, const jv *s, const jv *chars, bool left, bool right)
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
    return vkpt__jmk_str(c, s->u.s.p + a, e - a);
}

jv *vkpt__jrecase(ctx *c, const jv *s, int mode)
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
        case JCASE_UPPER: up = true; break;
        case JCASE_LOWER: up = false; break;
        case JCASE_TITLE: up = !prev_cased; break;
        default: up = first;
        }
        utf8proc_int32_t r = up ? utf8proc_toupper(o) : utf8proc_tolower(o);
        if (mode == JCASE_TITLE) {
            utf8proc_category_t cat = utf8proc_category(o);
            prev_cased = cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
                         cat == UTF8PROC_CATEGORY_LT;
        }
        first = false;
        err = vkpt__buf_put_cp(&b, (uint32_t)r);
    }
    jv *v = err ? vkpt__joom(c) : vkpt__jmk_str(c, b.p ? b.p : "", b.n);
    vkpt__buf_free(&b);
    return v;
}

bool vkpt__jstr_pred(const jv *s, int id)
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
jv *vkpt__jsplit(ctx *c, const jv *s, const jv *sep, int64_t maxsplit, bool from_right)
{
    jv *out = vkpt__jmk_list(c, 0);
    if (!out) return NULL;
    const char *p = s->u.s.p;
    size_t n = s->u.s.n;
    if (!sep || sep->type == JV_NONE) {
        /* runs of whitespace; no empty strings */
        size_t i = 0, splits = 0;
        const uint8_t *u = (const uint8_t *)p;
        if (from_right) {
            /* collect from the right, then reverse */
            jv *tmp = vkpt__jmk_list(c, 0);
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
                if (!vkpt__jlist_push(c, tmp, vkpt__jmk_str(c, p + st, e - st))) return NULL;
                splits++;
                e = st;
            }
            if (!tmp) return NULL;
            for (size_t k = tmp->u.l.n; k > 0; k--)
                if (!vkpt__jlist_push(c, out, tmp->u.l.v[k - 1])) return NULL;
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
            if (!vkpt__jlist_push(c, out, vkpt__jmk_str(c, p + st, i - st))) return NULL;
            splits++;
        }
        return out;
    }
    if (sep->type != JV_STR) return NULL;
    if (!sep->u.s.n) return vkpt__jfailf(c, NULL, "split(): empty separator");
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
                if (!vkpt__jlist_push(c, out, vkpt__jmk_str(c, p + i, n - i))) return NULL;
                return out;
            }
            size_t hi = (size_t)(h - p);
            if (!vkpt__jlist_push(c, out, vkpt__jmk_str(c, p + i, hi - i))) return NULL;
            i = hi + sn;
            splits++;
        }
    }
    /* rsplit with a separator */
    jv *tmp = vkpt__jmk_list(c, 0);
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
            if (!vkpt__jlist_push(c, tmp, vkpt__jmk_str(c, p, e))) return NULL;
            break;
        }
        if (!vkpt__jlist_push(c, tmp, vkpt__jmk_str(c, p + hit + sn, e - hit - sn))) return NULL;
        e = hit;
        splits++;
    }
    for (size_t k = tmp->u.l.n; k > 0; k--)
        if (!vkpt__jlist_push(c, out, tmp->u.l.v[k - 1])) return NULL;
    return out;
}

jv *vkpt__jstr_replace(ctx *c, const jv *s, const jv *from, const jv *to, int64_t count)
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
            size_t e = vkpt__jchar_off(p + k, n - k, 1);
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
    jv *r = err ? vkpt__joom(c) : vkpt__jmk_str(c, b.p ? b.p : "", b.n);
    vkpt__buf_free(&b);
    return r;
}

jv *vkpt__jslice(ctx *c, const jnode *at, const jv *obj, const jv *a, const jv *b, const jv *s)
{
    if (obj->type != JV_LIST && obj->type != JV_STR)
        return vkpt__jfailf(c, at, "cannot slice a %s", vkpt__jtype_name(obj));
    int64_t len =
        (int64_t)(obj->type == JV_LIST ? obj->u.l.n : vkpt__jn_chars(obj->u.s.p, obj->u.s.n));
    int64_t step = s && s->type != JV_NONE ? vkpt__jinum(s) : 1;
    if (step == 0) return vkpt__jfailf(c, at, "slice step cannot be zero");
    int64_t start, stop;
    if (!a || a->type == JV_NONE)
        start = step > 0 ? 0 : len - 1;
    else {
        start = vkpt__jinum(a);
        if (start < 0) start += len;
        if (start < 0) start = step > 0 ? 0 : -1;
        if (start >= len) start = step > 0 ? len : len - 1;
    }
    if (!b || b->type == JV_NONE)
        stop = step > 0 ? len : -1;
    else {
        stop = vkpt__jinum(b);
        if (stop < 0) stop += len;
        if (stop < 0) stop = step > 0 ? 0 : -1;
        if (stop >= len) stop = step > 0 ? len : len - 1;
    }
    jv *out = obj->type == JV_LIST ? vkpt__jmk_list(c, 0) : NULL;
    vkpt__buf sb = {0};
    size_t *offs = NULL; /* byte offset of each character, and the end */
    if (obj->type == JV_STR) {
        offs = vkpt__arena_alloc(c->a, ((size_t)len + 1) * sizeof *offs);
        if (!offs) return vkpt__joom(c);
        size_t k = 0;
        for (size_t q = 0; q < obj->u.s.n; q++)
            if (((uint8_t)obj->u.s.p[q] & 0xC0) != 0x80) offs[k++] = q;
        offs[k] = obj->u.s.n;
    }
    for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
        if (obj->type == JV_LIST) {
            if (!vkpt__jlist_push(c, out, obj->u.l.v[i])) return NULL;
        } else if (vkpt__buf_put(&sb, obj->u.s.p + offs[i], offs[i + 1] - offs[i])) {
            vkpt__buf_free(&sb);
            return vkpt__joom(c);
        }
        if (__builtin_add_overflow(i, step, &i)) break;
    }
    if (obj->type == JV_STR) {
        jv *r = vkpt__jmk_str(c, sb.p ? sb.p : "", sb.n);
        vkpt__buf_free(&sb);
        return r;
    }
    if (out) out->tuple = obj->tuple;
    return out;
}

/* Iterate: lists, dict keys, string characters; undefined is empty. */
jv *vkpt__jas_list(ctx *c, const jnode *at, const jv *v)
{
    switch (v->type) {
    case JV_LIST: return (jv *)v;
    case JV_UNDEF: return vkpt__jmk_list(c, 0);
    case JV_DICT: {
        jv *l = vkpt__jmk_list(c, v->u.d.n);
        for (size_t i = 0; l && i < v->u.d.n; i++)
            if (!vkpt__jlist_push(c, l, v->u.d.k[i])) return NULL;
        return l;
    }
    case JV_STR: {
        jv *l = vkpt__jmk_list(c, 0);
        for (size_t i = 0; l && i < v->u.s.n;) {
            size_t e = vkpt__jchar_off(v->u.s.p + i, v->u.s.n - i, 1);
            if (!vkpt__jlist_push(c, l, vkpt__jmk_str(c, v->u.s.p + i, e))) return NULL;
            i += e;
        }
        return l;
    }
    default: return vkpt__jfailf(c, at, "'%s' object is not iterable", vkpt__jtype_name(v));
    }
}

jv *vkpt__jitems_of(ctx *c, const jv *d)
{
    jv *l = vkpt__jmk_list(c, d->u.d.n);
    for (size_t i = 0; l && i < d->u.d.n; i++) {
        jv *t = vkpt__jmk_list(c, 2);
        if (!t) return NULL;
        t->tuple = true;
        vkpt__jlist_push(c, t, d->u.d.k[i]);
        vkpt__jlist_push(c, t, d->u.d.v[i]);
        if (!vkpt__jlist_push(c, l, t)) return NULL;
    }
    return l;
}

/* ---- input values -------------------------------------------------------------------------------- */

jv *vkpt__jfrom_json(ctx *c, const struct cJSON *j, int depth)
{
    if (depth > 64) return vkpt__jfailf(c, NULL, "variables nested deeper than 64");
    if (cJSON_IsNull(j) || !j) return NONE;
    if (cJSON_IsBool(j)) return BOOLV(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0) return vkpt__jmk_int(c, (int64_t)d);
        return vkpt__jmk_float(c, d);
    }
    if (cJSON_IsString(j)) return vkpt__jmk_str(c, j->valuestring, strlen(j->valuestring));
    if (cJSON_IsArray(j)) {
        jv *l = vkpt__jmk_list(c, (size_t)cJSON_GetArraySize(j));
        const cJSON *e;
        cJSON_ArrayForEach(e, j)
        {
            if (!vkpt__jlist_push(c, l, vkpt__jfrom_json(c, e, depth + 1))) return NULL;
        }
        return l;
    }
    if (cJSON_IsObject(j)) {
        jv *d = vkpt__jmk_dict(c, JV_DICT);
        const cJSON *e;
        cJSON_ArrayForEach(e, j)
        {
            if (!d || !vkpt__jdict_set(c, d, vkpt__jmk_str(c, e->string, strlen(e->string)),
                                       vkpt__jfrom_json(c, e, depth + 1)))
                return NULL;
        }
        return d;
    }
    return NONE;
}