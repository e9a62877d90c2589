/* Chat templates: builtins. Global functions (range, namespace, dict,
 * raise_exception, strftime_now), string and dict methods, attribute and
 * item access, filters and tests, with Python Jinja2's behaviour. The names
 * listed here are the ones the parser accepts. */
#define _GNU_SOURCE
#include "jinja_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <utf8proc.h>

typedef vkpt__jctx ctx;
typedef vkpt__jframe frame;
typedef vkpt__jargs args;
typedef vkpt__jjson json_opts;

/* ---- builtins table ------------------------------------------------------------------ */

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

jv *vkpt__jglobal(ctx *c, const char *name, size_t n)
{
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++)
        if (strlen(globals[i].name) == n && !memcmp(globals[i].name, name, n))
            return vkpt__jmk_fn(c, globals[i].id, NULL);
    return NULL;
}

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

jv *vkpt__jmk_fn(ctx *c, int id, const jv *self)
{
    jv *v = vkpt__jmk(c, JV_FUNC);
    if (v) {
        v->u.fn.id = id;
        v->u.fn.self = self;
    }
    return v;
}

jv *vkpt__jget_attr(ctx *c, const jv *obj, const char *name, size_t n)
{
    if (obj->type == JV_DICT) {
        for (size_t i = 0; i < sizeof dict_methods / sizeof dict_methods[0]; i++)
            if (strlen(dict_methods[i].name) == n && !memcmp(dict_methods[i].name, name, n))
                return vkpt__jmk_fn(c, dict_methods[i].id, obj);
        jv *v = vkpt__jdict_gets(obj, name, n);
        return v ? v : UNDEF;
    }
    if (obj->type == JV_NS) {
        jv *v = vkpt__jdict_gets(obj, name, n);
        return v ? v : UNDEF;
    }
    if (obj->type == JV_STR) {
        for (size_t i = 0; i < sizeof str_methods / sizeof str_methods[0]; i++)
            if (strlen(str_methods[i].name) == n && !memcmp(str_methods[i].name, name, n))
                return vkpt__jmk_fn(c, str_methods[i].id, obj);
    }
    return UNDEF;
}

jv *vkpt__jget_item(ctx *c, const jnode *at, const jv *obj, const jv *key)
{
    switch (obj->type) {
    case JV_DICT:
    case JV_NS: {
        jv *v = vkpt__jdict_get(obj, key);
        if (v) return v;
        if (key->type == JV_STR) return vkpt__jget_attr(c, obj, key->u.s.p, key->u.s.n);
        return UNDEF;
    }
    case JV_LIST:
    case JV_STR: {
        if (key->type == JV_STR) return vkpt__jget_attr(c, obj, key->u.s.p, key->u.s.n);
        if (key->type != JV_INT && key->type != JV_BOOL) return UNDEF;
        int64_t i = vkpt__jinum(key);
        size_t len = obj->type == JV_LIST ? obj->u.l.n : vkpt__jn_chars(obj->u.s.p, obj->u.s.n);
        if (i < 0) i += (int64_t)len;
        if (i < 0 || (size_t)i >= len) return UNDEF;
        if (obj->type == JV_LIST) return obj->u.l.v[i];
        size_t o = vkpt__jchar_off(obj->u.s.p, obj->u.s.n, (size_t)i);
        size_t e = vkpt__jchar_off(obj->u.s.p + o, obj->u.s.n - o, 1);
        return vkpt__jmk_str(c, obj->u.s.p + o, e);
    }
    default: (void)at; return UNDEF;
    }
}

/* Builtin functions and methods. */
jv *vkpt__jcall_fn(ctx *c, const jnode *at, const jv *fn, const args *a)
{
    if (fn->u.fn.id < 0) return vkpt__jcall_macro(c, at, fn, a);
    const jv *self = fn->u.fn.self;
    switch (fn->u.fn.id) {
    case F_RANGE: {
        int64_t start = 0, stop, step = 1;
        if (a->np == 1)
            stop = vkpt__jinum(a->pos[0]);
        else if (a->np >= 2) {
            start = vkpt__jinum(a->pos[0]);
            stop = vkpt__jinum(a->pos[1]);
            if (a->np >= 3) step = vkpt__jinum(a->pos[2]);
        } else
            return vkpt__jfailf(c, at, "range() needs an argument");
        if (step == 0) return vkpt__jfailf(c, at, "range() step cannot be zero");
        jv *l = vkpt__jmk_list(c, 0);
        for (int64_t i = start; l && (step > 0 ? i < stop : i > stop);) {
            if (l->u.l.n >= 100000) return vkpt__jfailf(c, at, "range() longer than 100000");
            if (!vkpt__jlist_push(c, l, vkpt__jmk_int(c, i))) return NULL;
            if (__builtin_add_overflow(i, step, &i)) break;
        }
        return l;
    }
    case F_NAMESPACE:
    case F_DICT: {
        jv *d = vkpt__jmk_dict(c, fn->u.fn.id == F_NAMESPACE ? JV_NS : JV_DICT);
        if (!d) return NULL;
        if (a->np > 1)
            return vkpt__jfailf(c, at, "namespace() takes at most one positional argument");
        if (a->np == 1) {
            const jv *src = a->pos[0];
            if (src->type == JV_DICT || src->type == JV_NS) {
                for (size_t i = 0; i < src->u.d.n; i++)
                    if (!vkpt__jdict_set(c, d, src->u.d.k[i], src->u.d.v[i])) return NULL;
            } else if (src->type == JV_LIST) {
                for (size_t i = 0; i < src->u.l.n; i++) {
                    const jv *pair = src->u.l.v[i];
                    if (pair->type != JV_LIST || pair->u.l.n != 2)
                        return vkpt__jfailf(c, at, "namespace() expects (key, value) pairs");
                    if (!vkpt__jdict_set(c, d, pair->u.l.v[0], pair->u.l.v[1])) return NULL;
                }
            } else {
                return vkpt__jfailf(c, at, "'%s' object is not iterable", vkpt__jtype_name(src));
            }
        }
        for (int k = 0; k < a->nk; k++)
            if (!vkpt__jdict_set(c, d, vkpt__jmk_str(c, a->kn[k], a->kl[k]), a->kv[k])) return NULL;
        return d;
    }
    case F_RAISE: {
        vkpt__buf b = {0};
        if (a->np) vkpt__jput_str(c, &b, a->pos[0]);
        vkpt__jfailf(c, at, "raise_exception: %s", b.p ? b.p : "");
        vkpt__buf_free(&b);
        return NULL;
    }
    case F_STRFTIME: {
        if (!a->np || a->pos[0]->type != JV_STR)
            return vkpt__jfailf(c, at, "strftime_now() needs a format string");
        char fmt[256], out[512];
        snprintf(fmt, sizeof fmt, "%.*s", (int)a->pos[0]->u.s.n, a->pos[0]->u.s.p);
        time_t now = time(NULL);
        struct tm tmv;
        localtime_r(&now, &tmv);
        size_t k = strftime(out, sizeof out, fmt, &tmv);
        return vkpt__jmk_str(c, out, k);
    }
    case F_CYCLE: {
        if (!a->np) return vkpt__jfailf(c, at, "loop.cycle() needs arguments");
        const jv *idx = vkpt__jdict_gets(self, "index0", 6);
        return a->pos[idx ? vkpt__jinum(idx) % a->np : 0];
    }
    case M_GET: {
        jv *k = vkpt__jarg(a, 0, "key");
        if (!k) return vkpt__jfailf(c, at, "get() needs a key");
        jv *v = vkpt__jdict_get(self, k);
        if (v) return v;
        jv *d = vkpt__jarg(a, 1, "default");
        return d ? d : NONE;
    }
    case M_ITEMS: return vkpt__jitems_of(c, self);
    case M_KEYS: return vkpt__jas_list(c, at, self);
    case M_VALUES: {
        jv *l = vkpt__jmk_list(c, self->u.d.n);
        for (size_t i = 0; l && i < self->u.d.n; i++)
            if (!vkpt__jlist_push(c, l, self->u.d.v[i])) return NULL;
        return l;
    }
    case M_STRIP:
    case M_LSTRIP:
    case M_RSTRIP: {
        jv *ch = vkpt__jarg(a, 0, "chars");
        if (ch && ch->type == JV_NONE) ch = NULL;
        if (ch && ch->type != JV_STR) return vkpt__jfailf(c, at, "strip arg must be None or str");
        int id = fn->u.fn.id;
        return vkpt__jstrip(c, self, ch, id != M_RSTRIP, id != M_LSTRIP);
    }
    case M_STARTSWITH:
    case M_ENDSWITH: {
        jv *p = vkpt__jarg(a, 0, "prefix");
        if (!p) return vkpt__jfailf(c, at, "startswith()/endswith() need an argument");
        bool end = fn->u.fn.id == M_ENDSWITH;
        size_t cnt = p->type == JV_LIST ? p->u.l.n : 1;
        for (size_t i = 0; i < cnt; i++) {
            const jv *x = p->type == JV_LIST ? p->u.l.v[i] : p;
            if (x->type != JV_STR)
                return vkpt__jfailf(c, at, "startswith()/endswith() arguments must be str");
            if (x->u.s.n > self->u.s.n) continue;
            const char *q = end ? self->u.s.p + self->u.s.n - x->u.s.n : self->u.s.p;
            if (!memcmp(q, x->u.s.p, x->u.s.n)) return BOOLV(true);
        }
        return BOOLV(false);
    }
    case M_SPLIT:
    case M_RSPLIT: {
        jv *sep = vkpt__jarg(a, 0, "sep");
        jv *mx = vkpt__jarg(a, 1, "maxsplit");
        if (sep && sep->type != JV_STR && sep->type != JV_NONE)
            return vkpt__jfailf(c, at, "split() separator must be str or None");
        jv *r = vkpt__jsplit(c, self, sep, mx ? vkpt__jinum(mx) : -1, fn->u.fn.id == M_RSPLIT);
        return r;
    }
    case M_REPLACE: {
        jv *o = vkpt__jarg(a, 0, "old"), *nw = vkpt__jarg(a, 1, "new"),
           *cnt = vkpt__jarg(a, 2, "count");
        if (!o || !nw || o->type != JV_STR || nw->type != JV_STR)
            return vkpt__jfailf(c, at, "replace() needs two strings");
        return vkpt__jstr_replace(c, self, o, nw,
                                  cnt && cnt->type != JV_NONE ? vkpt__jinum(cnt) : -1);
    }
    case M_UPPER: return vkpt__jrecase(c, self, JCASE_UPPER);
    case M_LOWER: return vkpt__jrecase(c, self, JCASE_LOWER);
    case M_TITLE: return vkpt__jrecase(c, self, JCASE_TITLE);
    case M_CAPITALIZE: {
        jv *low = vkpt__jrecase(c, self, JCASE_LOWER);
        return low ? vkpt__jrecase(c, low, JCASE_CAPITALIZE) : NULL;
    }
    case M_FIND:
    case M_RFIND:
    case M_COUNT: {
        jv *x = vkpt__jarg(a, 0, "sub");
        if (!x || x->type != JV_STR) return vkpt__jfailf(c, at, "find()/count() need a string");
        const char *p = self->u.s.p;
        size_t n = self->u.s.n, xn = x->u.s.n;
        if (fn->u.fn.id == M_COUNT) {
            if (!xn) return vkpt__jmk_int(c, (int64_t)vkpt__jn_chars(p, n) + 1);
            int64_t k = 0;
            for (size_t i = 0; i + xn <= n;) {
                const char *h = memmem(p + i, n - i, x->u.s.p, xn);
                if (!h) break;
                k++;
                i = (size_t)(h - p) + xn;
            }
            return vkpt__jmk_int(c, k);
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
        return vkpt__jmk_int(c, hit == SIZE_MAX ? -1 : (int64_t)vkpt__jn_chars(p, hit));
    }
    case M_JOIN: {
        jv *it = vkpt__jarg(a, 0, "iterable");
        if (!it) return vkpt__jfailf(c, at, "join() needs an iterable");
        jv *l = vkpt__jas_list(c, at, it);
        if (!l) return NULL;
        vkpt__buf b = {0};
        int err = 0;
        for (size_t i = 0; i < l->u.l.n && !err; i++) {
            if (l->u.l.v[i]->type != JV_STR) {
                vkpt__buf_free(&b);
                return vkpt__jfailf(c, at, "join(): item %zu is %s, not str", i,
                                    vkpt__jtype_name(l->u.l.v[i]));
            }
            if (i) err = vkpt__buf_put(&b, self->u.s.p, self->u.s.n);
            if (!err) err = vkpt__buf_put(&b, l->u.l.v[i]->u.s.p, l->u.l.v[i]->u.s.n);
        }
        jv *r = err ? vkpt__joom(c) : vkpt__jmk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&b);
        return r;
    }
    case M_SPLITLINES: {
        jv *l = vkpt__jmk_list(c, 0);
        const char *p = self->u.s.p;
        size_t n = self->u.s.n, st = 0;
        for (size_t i = 0; l && i < n; i++) {
            if (p[i] == '\n' || p[i] == '\r') {
                if (!vkpt__jlist_push(c, l, vkpt__jmk_str(c, p + st, i - st))) return NULL;
                if (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n') i++;
                st = i + 1;
            }
        }
        if (l && st < n && !vkpt__jlist_push(c, l, vkpt__jmk_str(c, p + st, n - st))) return NULL;
        return l;
    }
    case M_ISDIGIT:
    case M_ISALPHA:
    case M_ISALNUM:
    case M_ISSPACE:
    case M_ISUPPER:
    case M_ISLOWER: return BOOLV(vkpt__jstr_pred(self, fn->u.fn.id));
    }
    return vkpt__jfailf(c, at, "unknown function");
}

static jv *to_json(ctx *c, const jnode *at, const jv *v, const args *a)
{
    json_opts o = {.indent = -1, .item_sep = ", ", .key_sep = ": "};
    jv *ind = vkpt__jarg(a, 0, "indent");
    if (ind && ind->type != JV_NONE) {
        o.indent = (int)vkpt__jinum(ind);
        o.item_sep = ",";
    }
    jv *ea = vkpt__jarg(a, -1, "ensure_ascii");
    if (ea) o.ensure_ascii = vkpt__jtruthy(ea);
    jv *sk = vkpt__jarg(a, -1, "sort_keys");
    if (sk) o.sort_keys = vkpt__jtruthy(sk);
    jv *sep = vkpt__jarg(a, -1, "separators");
    char *seps[2] = {NULL, NULL};
    if (sep && sep->type == JV_LIST && sep->u.l.n == 2 && sep->u.l.v[0]->type == JV_STR &&
        sep->u.l.v[1]->type == JV_STR) {
        seps[0] = vkpt__arena_strndup(c->a, sep->u.l.v[0]->u.s.p, sep->u.l.v[0]->u.s.n);
        seps[1] = vkpt__arena_strndup(c->a, sep->u.l.v[1]->u.s.p, sep->u.l.v[1]->u.s.n);
        if (!seps[0] || !seps[1]) return vkpt__joom(c);
        o.item_sep = seps[0];
        o.key_sep = seps[1];
    }
    vkpt__buf b = {0};
    int err = vkpt__jput_json(c, &b, v, &o, 0);
    jv *r = err == VKPT_ENOMEM ? vkpt__joom(c)
            : err              ? vkpt__jfailf(c, at, "tojson: %s", vkpt_errmsg(err))
                               : vkpt__jmk_str(c, b.p ? b.p : "", b.n);
    vkpt__buf_free(&b);
    return r;
}

static int cmp_for_sort(ctx *c, const jv *x, const jv *y, bool case_sensitive, bool *ok)
{
    if (!case_sensitive && x->type == JV_STR && y->type == JV_STR) {
        jv *lx = vkpt__jrecase(c, x, JCASE_LOWER), *ly = vkpt__jrecase(c, y, JCASE_LOWER);
        if (!lx || !ly) {
            *ok = false;
            return 0;
        }
        return vkpt__jcmp(lx, ly, ok);
    }
    return vkpt__jcmp(x, y, ok);
}

/* attribute path "a.b.0" of an item */
static jv *attr_path(ctx *c, const jv *item, const jv *attr)
{
    if (attr->type == JV_INT) return vkpt__jget_item(c, NULL, item, attr);
    const char *p = attr->u.s.p;
    size_t n = attr->u.s.n;
    const jv *cur = item;
    while (cur) {
        const char *dot = memchr(p, '.', n);
        size_t k = dot ? (size_t)(dot - p) : n;
        bool digits = k > 0;
        for (size_t i = 0; i < k; i++) digits = digits && p[i] >= '0' && p[i] <= '9';
        jv *key = digits ? vkpt__jmk_int(c, strtoll(p, NULL, 10)) : vkpt__jmk_str(c, p, k);
        if (!key) return NULL;
        cur = vkpt__jget_item(c, NULL, cur, key);
        if (!dot) break;
        p = dot + 1;
        n -= k + 1;
    }
    return (jv *)cur;
}

jv *vkpt__japply_filter(ctx *c, const jnode *at, const jv *v, const args *a)
{
    const char *f = at->str;
    size_t fl = at->str_n;
#define IS(name) (fl == sizeof(name) - 1 && !memcmp(f, name, fl))
    if (IS("safe")) return (jv *)v;
    if (IS("tojson")) return to_json(c, at, v, a);
    if (IS("default") || IS("d")) {
        jv *dv = vkpt__jarg(a, 0, "default_value");
        jv *bo = vkpt__jarg(a, 1, "boolean");
        if (v->type == JV_UNDEF || (bo && vkpt__jtruthy(bo) && !vkpt__jtruthy(v)))
            return dv ? dv : vkpt__jmk_str(c, "", 0);
        return (jv *)v;
    }
    if (IS("string")) return vkpt__jto_str(c, v);
    if (IS("length") || IS("count")) {
        switch (v->type) {
        case JV_STR: return vkpt__jmk_int(c, (int64_t)vkpt__jn_chars(v->u.s.p, v->u.s.n));
        case JV_LIST: return vkpt__jmk_int(c, (int64_t)v->u.l.n);
        case JV_DICT:
        case JV_NS: return vkpt__jmk_int(c, (int64_t)v->u.d.n);
        case JV_UNDEF: return vkpt__jmk_int(c, 0);
        default:
            return vkpt__jfailf(c, at, "object of type '%s' has no len()", vkpt__jtype_name(v));
        }
    }
    if (IS("trim")) {
        if (v->type != JV_STR) v = vkpt__jto_str(c, v);
        jv *ch = vkpt__jarg(a, 0, "chars");
        return v ? vkpt__jstrip(c, v, ch && ch->type == JV_STR ? ch : NULL, true, true) : NULL;
    }
    if (IS("upper") || IS("lower") || IS("title") || IS("capitalize")) {
        jv *s = vkpt__jto_str(c, v);
        if (!s) return NULL;
        if (IS("upper")) return vkpt__jrecase(c, s, JCASE_UPPER);
        if (IS("lower")) return vkpt__jrecase(c, s, JCASE_LOWER);
        if (IS("title")) return vkpt__jrecase(c, s, JCASE_TITLE);
        jv *low = vkpt__jrecase(c, s, JCASE_LOWER);
        return low ? vkpt__jrecase(c, low, JCASE_CAPITALIZE) : NULL;
    }
    if (IS("escape") || IS("e")) {
        jv *s = vkpt__jto_str(c, v);
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
        jv *r = err ? vkpt__joom(c) : vkpt__jmk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&b);
        return r;
    }
    if (IS("replace")) {
        jv *s = vkpt__jto_str(c, v);
        jv *o = vkpt__jarg(a, 0, "old"), *nw = vkpt__jarg(a, 1, "new"),
           *cnt = vkpt__jarg(a, 2, "count");
        if (!s) return NULL;
        if (!o || !nw) return vkpt__jfailf(c, at, "replace needs two arguments");
        o = vkpt__jto_str(c, o);
        nw = vkpt__jto_str(c, nw);
        if (!o || !nw) return NULL;
        return vkpt__jstr_replace(c, s, o, nw, cnt && cnt->type != JV_NONE ? vkpt__jinum(cnt) : -1);
    }
    if (IS("indent")) {
        jv *s = vkpt__jto_str(c, v);
        if (!s) return NULL;
        jv *w = vkpt__jarg(a, 0, "width"), *first = vkpt__jarg(a, 1, "first"),
           *blank = vkpt__jarg(a, 2, "blank");
        vkpt__buf pad = {0}, b = {0};
        int err = 0;
        if (w && w->type == JV_STR)
            err = vkpt__buf_put(&pad, w->u.s.p, w->u.s.n);
        else
            for (int64_t i = 0; i < (w ? vkpt__jinum(w) : 4) && !err; i++)
                err = vkpt__buf_putc(&pad, ' ');
        const char *p = s->u.s.p;
        size_t n = s->u.s.n, st = 0;
        bool first_line = true;
        for (size_t i = 0; i <= n && !err; i++) {
            if (i < n && p[i] != '\n') continue;
            size_t ln = i - st;
            bool do_pad = (!first_line || (first && vkpt__jtruthy(first))) &&
                          (ln > 0 || (blank && vkpt__jtruthy(blank)));
            if (do_pad) err = vkpt__buf_put(&b, pad.p ? pad.p : "", pad.n);
            if (!err) err = vkpt__buf_put(&b, p + st, ln);
            if (!err && i < n) err = vkpt__buf_putc(&b, '\n');
            st = i + 1;
            first_line = false;
        }
        jv *r = err ? vkpt__joom(c) : vkpt__jmk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&pad);
        vkpt__buf_free(&b);
        return r;
    }
    if (IS("int")) {
        jv *dv = vkpt__jarg(a, 0, "default");
        if (v->type == JV_INT) return (jv *)v;
        if (v->type == JV_BOOL) return vkpt__jmk_int(c, v->u.b);
        if (v->type == JV_FLOAT) return vkpt__jmk_int(c, vkpt__jinum(v));
        if (v->type == JV_STR) {
            char tmp[64];
            snprintf(tmp, sizeof tmp, "%.*s", (int)(v->u.s.n < 63 ? v->u.s.n : 63), v->u.s.p);
            char *end;
            long long x = strtoll(tmp, &end, 10);
            while (*end == ' ') end++;
            if (*end == 0 && end != tmp) return vkpt__jmk_int(c, x);
            double d = strtod(tmp, &end);
            while (*end == ' ') end++;
            jv fv = {.type = JV_FLOAT, .u.f = d};
            if (*end == 0 && end != tmp) return vkpt__jmk_int(c, vkpt__jinum(&fv));
        }
        return dv ? dv : vkpt__jmk_int(c, 0);
    }
    if (IS("float")) {
        jv *dv = vkpt__jarg(a, 0, "default");
        if (vkpt__jis_num(v)) return vkpt__jmk_float(c, vkpt__jnum(v));
        if (v->type == JV_STR) {
            char tmp[64], *end;
            snprintf(tmp, sizeof tmp, "%.*s", (int)(v->u.s.n < 63 ? v->u.s.n : 63), v->u.s.p);
            double d = strtod(tmp, &end);
            if (end != tmp && *end == 0) return vkpt__jmk_float(c, d);
        }
        return dv ? dv : vkpt__jmk_float(c, 0.0);
    }
    if (IS("abs")) {
        if (v->type == JV_INT) return vkpt__jmk_int(c, v->u.i < 0 ? -v->u.i : v->u.i);
        if (vkpt__jis_num(v)) return vkpt__jmk_float(c, fabs(vkpt__jnum(v)));
        return vkpt__jfailf(c, at, "bad operand type for abs(): '%s'", vkpt__jtype_name(v));
    }
    if (IS("round")) {
        jv *pr = vkpt__jarg(a, 0, "precision"), *me = vkpt__jarg(a, 1, "method");
        if (!vkpt__jis_num(v)) return vkpt__jfailf(c, at, "round needs a number");
        double x = vkpt__jnum(v), p = pow(10, pr ? (double)vkpt__jinum(pr) : 0);
        const char *m = me && me->type == JV_STR ? me->u.s.p : "common";
        double r = !strncmp(m, "ceil", 4) ? ceil(x * p) / p
                   : !strncmp(m, "floor", 5)
                       ? floor(x * p) / p
                       : nearbyint(x * p) / p; /* common: halves to even, as Python */
        return vkpt__jmk_float(c, r);
    }
    if (IS("wordcount")) {
        jv *s = vkpt__jto_str(c, v);
        if (!s) return NULL;
        jv *w = vkpt__jsplit(c, s, NULL, -1, false);
        return w ? vkpt__jmk_int(c, (int64_t)w->u.l.n) : NULL;
    }
    if (IS("items")) {
        if (v->type == JV_UNDEF) return vkpt__jmk_list(c, 0);
        if (v->type != JV_DICT && v->type != JV_NS)
            return vkpt__jfailf(c, at, "items needs a mapping, got %s", vkpt__jtype_name(v));
        return vkpt__jitems_of(c, v);
    }
    if (IS("dictsort")) {
        if (v->type != JV_DICT) return vkpt__jfailf(c, at, "dictsort needs a mapping");
        jv *cs = vkpt__jarg(a, 0, "case_sensitive"), *by = vkpt__jarg(a, 1, "by"),
           *rev = vkpt__jarg(a, 2, "reverse");
        jv *l = vkpt__jitems_of(c, v);
        if (!l) return NULL;
        int key =
            by && by->type == JV_STR && by->u.s.n == 5 && !memcmp(by->u.s.p, "value", 5) ? 1 : 0;
        for (size_t i = 1; i < l->u.l.n; i++)
            for (size_t j = i; j > 0; j--) {
                bool ok;
                int r = cmp_for_sort(c, l->u.l.v[j - 1]->u.l.v[key], l->u.l.v[j]->u.l.v[key],
                                     cs && vkpt__jtruthy(cs), &ok);
                if (!ok) return vkpt__jfailf(c, at, "dictsort: values cannot be compared");
                if (rev && vkpt__jtruthy(rev)) r = -r;
                if (r <= 0) break;
                jv *t = l->u.l.v[j];
                l->u.l.v[j] = l->u.l.v[j - 1];
                l->u.l.v[j - 1] = t;
            }
        return l;
    }
    /* the rest work on sequences */
    jv *l = vkpt__jas_list(c, at, v);
    if (!l) return NULL;
    if (IS("list")) {
        jv *r = vkpt__jmk_list(c, l->u.l.n);
        for (size_t i = 0; r && i < l->u.l.n; i++) vkpt__jlist_push(c, r, l->u.l.v[i]);
        return r;
    }
    if (IS("first"))
        return v->type == JV_STR ? vkpt__jget_item(c, at, v, vkpt__jmk_int(c, 0))
               : l->u.l.n        ? l->u.l.v[0]
                                 : UNDEF;
    if (IS("last"))
        return v->type == JV_STR ? vkpt__jget_item(c, at, v, vkpt__jmk_int(c, -1))
               : l->u.l.n        ? l->u.l.v[l->u.l.n - 1]
                                 : UNDEF;
    if (IS("reverse")) {
        if (v->type == JV_STR) {
            vkpt__buf b = {0};
            for (size_t i = l->u.l.n; i > 0; i--)
                if (vkpt__buf_put(&b, l->u.l.v[i - 1]->u.s.p, l->u.l.v[i - 1]->u.s.n))
                    vkpt__joom(c);
            jv *r = vkpt__jmk_str(c, b.p ? b.p : "", b.n);
            vkpt__buf_free(&b);
            return r;
        }
        jv *r = vkpt__jmk_list(c, l->u.l.n);
        for (size_t i = l->u.l.n; r && i > 0; i--) vkpt__jlist_push(c, r, l->u.l.v[i - 1]);
        return r;
    }
    if (IS("join")) {
        jv *sep = vkpt__jarg(a, 0, "d"), *attr = vkpt__jarg(a, 1, "attribute");
        vkpt__buf b = {0};
        int err = 0;
        for (size_t i = 0; i < l->u.l.n && !err; i++) {
            if (i && sep && sep->type == JV_STR) err = vkpt__buf_put(&b, sep->u.s.p, sep->u.s.n);
            const jv *x = attr ? attr_path(c, l->u.l.v[i], attr) : l->u.l.v[i];
            if (!err && x) err = vkpt__jput_str(c, &b, x);
        }
        jv *r = err ? vkpt__joom(c) : vkpt__jmk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&b);
        return r;
    }
    if (IS("unique")) {
        jv *r = vkpt__jmk_list(c, 0);
        for (size_t i = 0; r && i < l->u.l.n; i++) {
            bool seen = false;
            for (size_t j = 0; j < r->u.l.n && !seen; j++) {
                const jv *x = l->u.l.v[i], *y = r->u.l.v[j];
                if (x->type == JV_STR && y->type == JV_STR) {
                    bool ok;
                    seen = cmp_for_sort(c, x, y, false, &ok) == 0 && ok;
                } else {
                    seen = vkpt__jeq(x, y);
                }
            }
            if (!seen && !vkpt__jlist_push(c, r, l->u.l.v[i])) return NULL;
        }
        return r;
    }
    if (IS("sort") || IS("min") || IS("max")) {
        bool is_sort = IS("sort");
        jv *rev = is_sort ? vkpt__jarg(a, 0, "reverse") : NULL;
        jv *cs = vkpt__jarg(a, is_sort ? 1 : 0, "case_sensitive");
        jv *attr = vkpt__jarg(a, is_sort ? 2 : 1, "attribute");
        jv *r = vkpt__jmk_list(c, l->u.l.n);
        for (size_t i = 0; r && i < l->u.l.n; i++) vkpt__jlist_push(c, r, l->u.l.v[i]);
        if (!r) return NULL;
        for (size_t i = 1; i < r->u.l.n; i++)
            for (size_t j = i; j > 0; j--) {
                const jv *x = attr ? attr_path(c, r->u.l.v[j - 1], attr) : r->u.l.v[j - 1];
                const jv *y = attr ? attr_path(c, r->u.l.v[j], attr) : r->u.l.v[j];
                bool ok;
                int cr = x && y ? cmp_for_sort(c, x, y, cs && vkpt__jtruthy(cs), &ok) : 0;
                if (!x || !y || !ok)
                    return vkpt__jfailf(c, at, "%.*s: items cannot be compared", (int)fl, f);
                if (rev && vkpt__jtruthy(rev)) cr = -cr;
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
        jv *attr = vkpt__jarg(a, 0, "attribute"), *start = vkpt__jarg(a, 1, "start");
        bool fl_ = start && start->type == JV_FLOAT;
        double df = start ? vkpt__jnum(start) : 0;
        int64_t di = start ? vkpt__jinum(start) : 0;
        for (size_t i = 0; i < l->u.l.n; i++) {
            const jv *x = attr ? attr_path(c, l->u.l.v[i], attr) : l->u.l.v[i];
            if (!x || !vkpt__jis_num(x)) return vkpt__jfailf(c, at, "sum: items must be numbers");
            fl_ = fl_ || x->type == JV_FLOAT;
            df += vkpt__jnum(x);
            di += vkpt__jinum(x);
        }
        return fl_ ? vkpt__jmk_float(c, df) : vkpt__jmk_int(c, di);
    }
    if (IS("map")) {
        jv *attr = vkpt__jarg(a, -1, "attribute"), *dv = vkpt__jarg(a, -1, "default");
        jv *r = vkpt__jmk_list(c, l->u.l.n);
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
                    return vkpt__jfailf(c, at, "map: unknown filter '%.*s'", (int)fake.str_n,
                                        fake.str);
                args sub = *a;
                for (int k = 1; k < sub.np; k++) sub.pos[k - 1] = sub.pos[k];
                sub.np--;
                x = vkpt__japply_filter(c, &fake, l->u.l.v[i], &sub);
            } else {
                return vkpt__jfailf(c, at, "map needs a filter name or attribute=");
            }
            if (!vkpt__jlist_push(c, r, x)) return NULL;
        }
        return r;
    }
    if (IS("select") || IS("reject") || IS("selectattr") || IS("rejectattr")) {
        bool attr_mode = IS("selectattr") || IS("rejectattr");
        bool sel = IS("select") || IS("selectattr");
        int ti = attr_mode ? 1 : 0;
        jv *attr = attr_mode ? vkpt__jarg(a, 0, NULL) : NULL;
        if (attr_mode && (!attr || (attr->type != JV_STR && attr->type != JV_INT)))
            return vkpt__jfailf(c, at, "%.*s needs an attribute name", (int)fl, f);
        jv *test = vkpt__jarg(a, ti, NULL);
        if (test && test->type != JV_STR)
            return vkpt__jfailf(c, at, "%.*s: test name must be a string", (int)fl, f);
        if (test && !vkpt__jinja_test_known(test->u.s.p, test->u.s.n))
            return vkpt__jfailf(c, at, "unknown test '%.*s'", (int)test->u.s.n, test->u.s.p);
        args targs = {0};
        for (int k = ti + 1; k < a->np; k++) targs.pos[targs.np++] = a->pos[k];
        jv *r = vkpt__jmk_list(c, 0);
        for (size_t i = 0; r && i < l->u.l.n; i++) {
            const jv *x = attr ? attr_path(c, l->u.l.v[i], attr) : l->u.l.v[i];
            if (!x) return NULL;
            bool res;
            if (test) {
                if (!vkpt__japply_test(c, at, test->u.s.p, test->u.s.n, x, &targs, &res))
                    return NULL;
            } else {
                res = vkpt__jtruthy(x);
            }
            if (res == sel && !vkpt__jlist_push(c, r, l->u.l.v[i])) return NULL;
        }
        return r;
    }
#undef IS
    return vkpt__jfailf(c, at, "filter '%.*s' is not supported here", (int)fl, f);
}

bool vkpt__japply_test(ctx *c, const jnode *at, const char *t, size_t tl, const jv *v,
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
        *res = vkpt__jis_num(v);
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
            jv *x = vkpt__jrecase(c, v, IS("lower") ? JCASE_LOWER : JCASE_UPPER);
            if (!x) return false;
            *res = vkpt__jeq(x, v);
        }
    } else if (IS("odd") || IS("even") || IS("divisibleby")) {
        if (!vkpt__jis_num(v))
            return vkpt__jfailf(c, at, "test '%.*s' needs a number", (int)tl, t) != NULL;
        int64_t d = IS("divisibleby") ? (o ? vkpt__jinum(o) : 0) : 2;
        if (!d) return vkpt__jfailf(c, at, "divisibleby 0") != NULL;
        int64_t r = vkpt__jinum(v) % d;
        *res = IS("odd") ? r != 0 : r == 0;
    } else if (IS("eq") || IS("equalto") || IS("ne") || IS("sameas")) {
        if (!o) return vkpt__jfailf(c, at, "test '%.*s' needs an argument", (int)tl, t) != NULL;
        *res = IS("ne") ? !vkpt__jeq(v, o)
               : IS("sameas")
                   ? (v == o || (v->type <= JV_BOOL && vkpt__jeq(v, o) && v->type == o->type))
                   : vkpt__jeq(v, o);
    } else if (IS("lt") || IS("le") || IS("gt") || IS("ge") || IS("lessthan") ||
               IS("greaterthan")) {
        if (!o) return vkpt__jfailf(c, at, "test '%.*s' needs an argument", (int)tl, t) != NULL;
        bool ok;
        int r = vkpt__jcmp(v, o, &ok);
        if (!ok)
            return vkpt__jfailf(c, at, "'%.*s' not supported between %s and %s", (int)tl, t,
                                vkpt__jtype_name(v), vkpt__jtype_name(o)) != NULL;
        *res = (IS("lt") || IS("lessthan"))      ? r < 0
               : IS("le")                        ? r <= 0
               : (IS("gt") || IS("greaterthan")) ? r > 0
                                                 : r >= 0;
    } else if (IS("in")) {
        if (!o) return vkpt__jfailf(c, at, "test 'in' needs an argument") != NULL;
        if (o->type == JV_STR && v->type == JV_STR)
            *res = v->u.s.n <= o->u.s.n && memmem(o->u.s.p, o->u.s.n, v->u.s.p, v->u.s.n);
        else if (o->type == JV_DICT)
            *res = vkpt__jdict_get(o, v) != NULL;
        else if (o->type == JV_LIST) {
            *res = false;
            for (size_t i = 0; i < o->u.l.n && !*res; i++) *res = vkpt__jeq(v, o->u.l.v[i]);
        } else
            *res = false;
    } else {
        return vkpt__jfailf(c, at, "unknown test '%.*s'", (int)tl, t) != NULL;
    }
    return true;
#undef IS
}