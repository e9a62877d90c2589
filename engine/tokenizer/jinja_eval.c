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
#include <stdio.h>
#include <stdlib.h>

typedef vkpt__jctx ctx;
typedef vkpt__jframe frame;
typedef vkpt__jargs args;

static jv *eval(ctx *c, const jnode *n);
static int exec_body(ctx *c, const jnodes *body, frame *f);

/* ---- frames ----------------------------------------------------------------------------- */

static frame *frame_new(ctx *c, frame *parent)
{
    frame *f = vkpt__arena_alloc(c->a, sizeof *f);
    if (!f) return (frame *)vkpt__joom(c);
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
        if (!nm || !nn || !vv) return vkpt__joom(c) != NULL;
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

static bool eval_args(ctx *c, const jnodes *in, args *a, frame *f)
{
    (void)f;
    a->np = a->nk = 0;
    for (size_t i = 0; i < in->n; i++) {
        const jnode *x = in->v[i];
        if (x->kind == JN_KWARG) {
            if (a->nk >= 16) return vkpt__jfailf(c, x, "too many keyword arguments") != NULL;
            jv *v = eval(c, x->a);
            if (!v) return false;
            a->kn[a->nk] = x->str;
            a->kl[a->nk] = x->str_n;
            a->kv[a->nk++] = v;
        } else {
            if (a->np >= 16) return vkpt__jfailf(c, x, "too many arguments") != NULL;
            jv *v = eval(c, x);
            if (!v) return false;
            a->pos[a->np++] = v;
        }
    }
    return true;
}

/* Argument `i` or keyword `name`, else NULL. */
jv *vkpt__jarg(const args *a, int i, const char *name)
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
    jv *g = vkpt__jglobal(c, name, n);
    return g ? g : UNDEF;
}

static jv *render_body(ctx *c, const jnodes *body, frame *f)
{
    vkpt__buf b = {0};
    vkpt__buf *saved = c->out;
    c->out = &b;
    int r = exec_body(c, body, f);
    c->out = saved;
    jv *v = r < 0 ? NULL : vkpt__jmk_str(c, b.p ? b.p : "", b.n);
    vkpt__buf_free(&b);
    return v;
}

jv *vkpt__jcall_macro(ctx *c, const jnode *at, const jv *fn, const args *a)
{
    const jnode *m = fn->u.fn.macro;
    frame *f = frame_new(c, c->global);
    if (!f) return NULL;
    if ((size_t)a->np > m->args.n)
        return vkpt__jfailf(c, at, "macro '%.*s' takes %zu arguments, got %d", (int)m->str_n,
                            m->str, m->args.n, a->np);
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
            return vkpt__jfailf(c, at, "macro '%.*s' has no parameter '%.*s'", (int)m->str_n,
                                m->str, (int)a->kl[k], a->kn[k]);
    if (++c->depth > 64) return vkpt__jfailf(c, at, "macros nested deeper than 64");
    jv *r = render_body(c, &m->body, f);
    c->depth--;
    return r;
}

static jv *binop(ctx *c, const jnode *n, jv *l, jv *r)
{
    int op = n->op;
    switch (op) {
    case JOP_EQ: return BOOLV(vkpt__jeq(l, r));
    case JOP_NE: return BOOLV(!vkpt__jeq(l, r));
    case JOP_IN:
    case JOP_NOTIN: {
        bool res;
        args a = {.pos = {r}, .np = 1};
        if (r->type == JV_UNDEF)
            res = false;
        else if (r->type != JV_STR && r->type != JV_LIST && r->type != JV_DICT && r->type != JV_NS)
            return vkpt__jfailf(c, n, "argument of type '%s' is not iterable", vkpt__jtype_name(r));
        else if (r->type == JV_STR && l->type != JV_STR)
            return vkpt__jfailf(c, n, "'in <string>' requires string as left operand, not %s",
                                vkpt__jtype_name(l));
        else if (r->type == JV_NS)
            res = vkpt__jdict_get(r, l) != NULL;
        else if (!vkpt__japply_test(c, n, "in", 2, l, &a, &res))
            return NULL;
        return BOOLV(op == JOP_IN ? res : !res);
    }
    case JOP_CONCAT: {
        vkpt__buf b = {0};
        int err = vkpt__jput_str(c, &b, l);
        if (!err) err = vkpt__jput_str(c, &b, r);
        jv *v = err ? vkpt__joom(c) : vkpt__jmk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&b);
        return v;
    }
    case JOP_LT:
    case JOP_LE:
    case JOP_GT:
    case JOP_GE: {
        bool ok;
        int x = vkpt__jcmp(l, r, &ok);
        if (!ok)
            return vkpt__jfailf(c, n, "comparison not supported between %s and %s",
                                vkpt__jtype_name(l), vkpt__jtype_name(r));
        return BOOLV(op == JOP_LT ? x < 0 : op == JOP_LE ? x <= 0 : op == JOP_GT ? x > 0 : x >= 0);
    }
    }
    if (l->type == JV_UNDEF || r->type == JV_UNDEF)
        return vkpt__jfailf(c, n, "undefined value in an arithmetic expression");
    if (op == JOP_ADD && l->type == JV_STR && r->type == JV_STR) {
        char *p = vkpt__arena_alloc(c->a, l->u.s.n + r->u.s.n + 1);
        if (!p) return vkpt__joom(c);
        memcpy(p, l->u.s.p, l->u.s.n);
        memcpy(p + l->u.s.n, r->u.s.p, r->u.s.n);
        jv *v = vkpt__jmk(c, JV_STR);
        if (v) {
            v->u.s.p = p;
            v->u.s.n = l->u.s.n + r->u.s.n;
        }
        return v;
    }
    if (op == JOP_ADD && l->type == JV_LIST && r->type == JV_LIST) {
        jv *v = vkpt__jmk_list(c, l->u.l.n + r->u.l.n);
        for (size_t i = 0; v && i < l->u.l.n; i++) vkpt__jlist_push(c, v, l->u.l.v[i]);
        for (size_t i = 0; v && i < r->u.l.n; i++) vkpt__jlist_push(c, v, r->u.l.v[i]);
        return v;
    }
    if (op == JOP_MUL &&
        ((l->type == JV_STR && r->type == JV_INT) || (l->type == JV_INT && r->type == JV_STR))) {
        const jv *s = l->type == JV_STR ? l : r;
        int64_t k = l->type == JV_INT ? l->u.i : r->u.i;
        if (k <= 0 || !s->u.s.n) return vkpt__jmk_str(c, "", 0);
        if ((uint64_t)k > (64u << 20) / s->u.s.n)
            return vkpt__jfailf(c, n, "string repetition too long");
        vkpt__buf b = {0};
        for (int64_t i = 0; i < k; i++)
            if (vkpt__buf_put(&b, s->u.s.p, s->u.s.n)) vkpt__joom(c);
        jv *v = vkpt__jmk_str(c, b.p ? b.p : "", b.n);
        vkpt__buf_free(&b);
        return v;
    }
    if (!vkpt__jis_num(l) || !vkpt__jis_num(r))
        return vkpt__jfailf(c, n, "unsupported operand types for arithmetic: '%s' and '%s'",
                            vkpt__jtype_name(l), vkpt__jtype_name(r));
    bool fl = l->type == JV_FLOAT || r->type == JV_FLOAT;
    double a = vkpt__jnum(l), b = vkpt__jnum(r);
    int64_t ia = vkpt__jinum(l), ib = vkpt__jinum(r);
    int64_t ir;
    switch (op) {
    case JOP_ADD:
        if (fl) return vkpt__jmk_float(c, a + b);
        if (__builtin_add_overflow(ia, ib, &ir)) return vkpt__jfailf(c, n, "integer overflow");
        return vkpt__jmk_int(c, ir);
    case JOP_SUB:
        if (fl) return vkpt__jmk_float(c, a - b);
        if (__builtin_sub_overflow(ia, ib, &ir)) return vkpt__jfailf(c, n, "integer overflow");
        return vkpt__jmk_int(c, ir);
    case JOP_MUL:
        if (fl) return vkpt__jmk_float(c, a * b);
        if (__builtin_mul_overflow(ia, ib, &ir)) return vkpt__jfailf(c, n, "integer overflow");
        return vkpt__jmk_int(c, ir);
    case JOP_DIV:
        if (b == 0) return vkpt__jfailf(c, n, "division by zero");
        return vkpt__jmk_float(c, a / b);
    case JOP_FLOORDIV:
        if (b == 0) return vkpt__jfailf(c, n, "integer division by zero");
        if (fl) return vkpt__jmk_float(c, floor(a / b));
        if (ia == INT64_MIN && ib == -1) return vkpt__jfailf(c, n, "integer overflow");
        return vkpt__jmk_int(c, ia / ib - ((ia % ib != 0) && ((ia < 0) != (ib < 0))));
    case JOP_MOD:
        if (b == 0) return vkpt__jfailf(c, n, "modulo by zero");
        if (fl) {
            double m = fmod(a, b);
            if (m != 0 && ((m < 0) != (b < 0))) m += b;
            return vkpt__jmk_float(c, m);
        } else {
            if (ib == -1) return vkpt__jmk_int(c, 0);
            int64_t m = ia % ib;
            if (m != 0 && ((m < 0) != (ib < 0))) m += ib;
            return vkpt__jmk_int(c, m);
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
                    if (__builtin_mul_overflow(x, ia, &x))
                        return vkpt__jfailf(c, n, "integer overflow");
            return vkpt__jmk_int(c, x);
        }
        return vkpt__jmk_float(c, pow(a, b));
    }
    return vkpt__jfailf(c, n, "unknown operator");
}

static jv *eval(ctx *c, const jnode *n)
{
    if (c->err) return NULL;
    if (++c->depth > 400) return vkpt__jfailf(c, n, "expression nested too deeply");
    jv *r = NULL;
    switch (n->kind) {
    case JN_LIT: r = (jv *)n->value; break;
    case JN_NAME: r = lookup(c, c->cur, n->str, n->str_n); break;
    case JN_ATTR: {
        jv *o = eval(c, n->a);
        if (o) r = vkpt__jget_attr(c, o, n->str, n->str_n);
        break;
    }
    case JN_INDEX: {
        jv *o = eval(c, n->a), *k = o ? eval(c, n->b) : NULL;
        if (k) r = vkpt__jget_item(c, n, o, k);
        break;
    }
    case JN_SLICE: {
        jv *o = eval(c, n->a);
        jv *a = o && n->b ? eval(c, n->b) : NULL;
        jv *b = o && n->c ? eval(c, n->c) : NULL;
        jv *s = o && n->d ? eval(c, n->d) : NULL;
        if (o && !c->err) r = vkpt__jslice(c, n, o, a, b, s);
        break;
    }
    case JN_CALL: {
        jv *fn = eval(c, n->a);
        args a;
        if (!fn || !eval_args(c, &n->args, &a, c->cur)) break;
        if (fn->type != JV_FUNC) {
            r = vkpt__jfailf(c, n, "'%s' object is not callable",
                             fn->type == JV_UNDEF ? "undefined" : vkpt__jtype_name(fn));
            break;
        }
        r = vkpt__jcall_fn(c, n, fn, &a);
        break;
    }
    case JN_FILTER: {
        jv *v = eval(c, n->a);
        args a;
        if (v && eval_args(c, &n->args, &a, c->cur)) r = vkpt__japply_filter(c, n, v, &a);
        break;
    }
    case JN_TEST: {
        jv *v = eval(c, n->a);
        args a;
        bool res;
        if (v && eval_args(c, &n->args, &a, c->cur) &&
            vkpt__japply_test(c, n, n->str, n->str_n, v, &a, &res))
            r = BOOLV(n->negate ? !res : res);
        break;
    }
    case JN_UNARY: {
        jv *v = eval(c, n->a);
        if (!v) break;
        if (n->op == JOP_NOT)
            r = BOOLV(!vkpt__jtruthy(v));
        else if (!vkpt__jis_num(v))
            r = vkpt__jfailf(c, n, "bad operand type for unary %c: '%s'",
                             n->op == JOP_NEG ? '-' : '+', vkpt__jtype_name(v));
        else if (n->op == JOP_POS)
            r = v->type == JV_BOOL ? vkpt__jmk_int(c, v->u.b) : v;
        else if (v->type == JV_FLOAT)
            r = vkpt__jmk_float(c, -v->u.f);
        else if (vkpt__jinum(v) == INT64_MIN)
            r = vkpt__jfailf(c, n, "integer overflow");
        else
            r = vkpt__jmk_int(c, -vkpt__jinum(v));
        break;
    }
    case JN_BINARY: {
        jv *l = eval(c, n->a);
        if (!l) break;
        if (n->op == JOP_AND) {
            r = vkpt__jtruthy(l) ? eval(c, n->b) : l;
            break;
        }
        if (n->op == JOP_OR) {
            r = vkpt__jtruthy(l) ? l : eval(c, n->b);
            break;
        }
        jv *rv = eval(c, n->b);
        if (rv) r = binop(c, n, l, rv);
        break;
    }
    case JN_COND: {
        jv *cond = eval(c, n->a);
        if (cond) r = vkpt__jtruthy(cond) ? eval(c, n->b) : n->c ? eval(c, n->c) : UNDEF;
        break;
    }
    case JN_LIST:
    case JN_TUPLE: {
        jv *l = vkpt__jmk_list(c, n->args.n);
        for (size_t i = 0; l && i < n->args.n; i++)
            if (!vkpt__jlist_push(c, l, eval(c, n->args.v[i]))) {
                l = NULL;
                break;
            }
        if (l) l->tuple = n->kind == JN_TUPLE;
        r = l;
        break;
    }
    case JN_DICT: {
        jv *d = vkpt__jmk_dict(c, JV_DICT);
        for (size_t i = 0; d && i + 1 < n->args.n; i += 2) {
            jv *k = eval(c, n->args.v[i]);
            jv *v = k ? eval(c, n->args.v[i + 1]) : NULL;
            if (!v || !vkpt__jdict_set(c, d, k, v)) {
                d = NULL;
                break;
            }
        }
        r = d;
        break;
    }
    default: r = vkpt__jfailf(c, n, "not an expression");
    }
    c->depth--;
    if (!r && !c->err) vkpt__joom(c); /* a helper ran out of memory without saying so */
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
            return vkpt__jfailf(c, target, "cannot assign attribute on non-namespace object") !=
                   NULL;
        return vkpt__jdict_set(c, o, vkpt__jmk_str(c, target->str, target->str_n), v);
    }
    if (target->kind == JN_TUPLE) {
        if (v->type != JV_LIST)
            return vkpt__jfailf(c, target, "cannot unpack non-iterable %s", vkpt__jtype_name(v)) !=
                   NULL;
        if (v->u.l.n != target->args.n)
            return vkpt__jfailf(c, target, "expected %zu values to unpack, got %zu", target->args.n,
                                v->u.l.n) != NULL;
        for (size_t i = 0; i < target->args.n; i++)
            if (!assign(c, f, target->args.v[i], v->u.l.v[i])) return false;
        return true;
    }
    return vkpt__jfailf(c, target, "cannot assign to this expression") != NULL;
}

static int exec_for(ctx *c, const jnode *n, frame *f)
{
    frame *saved = c->cur;
    c->cur = f;
    jv *it = eval(c, n->b);
    jv *l = it ? vkpt__jas_list(c, n->b, it) : NULL;
    c->cur = saved;
    if (!l) return EX_ERR;
    frame *lf = frame_new(c, f);
    if (!lf) return EX_ERR;
    /* the filter runs before loop.* is known, as in Jinja2 */
    jv *items = l;
    if (n->c) {
        items = vkpt__jmk_list(c, 0);
        if (!items) return EX_ERR;
        for (size_t i = 0; i < l->u.l.n; i++) {
            if (!assign(c, lf, n->a, l->u.l.v[i])) return EX_ERR;
            c->cur = lf;
            jv *ok = eval(c, n->c);
            c->cur = saved;
            if (!ok) return EX_ERR;
            if (vkpt__jtruthy(ok) && !vkpt__jlist_push(c, items, l->u.l.v[i])) return EX_ERR;
        }
    }
    size_t len = items->u.l.n;
    for (size_t i = 0; i < len; i++) {
        jv *loop = vkpt__jmk_dict(c, JV_DICT);
        if (!loop || !vkpt__jdict_sets(c, loop, "index", vkpt__jmk_int(c, (int64_t)i + 1)) ||
            !vkpt__jdict_sets(c, loop, "index0", vkpt__jmk_int(c, (int64_t)i)) ||
            !vkpt__jdict_sets(c, loop, "revindex", vkpt__jmk_int(c, (int64_t)(len - i))) ||
            !vkpt__jdict_sets(c, loop, "revindex0", vkpt__jmk_int(c, (int64_t)(len - i - 1))) ||
            !vkpt__jdict_sets(c, loop, "first", BOOLV(i == 0)) ||
            !vkpt__jdict_sets(c, loop, "last", BOOLV(i + 1 == len)) ||
            !vkpt__jdict_sets(c, loop, "length", vkpt__jmk_int(c, (int64_t)len)) ||
            !vkpt__jdict_sets(c, loop, "depth", vkpt__jmk_int(c, 1)) ||
            !vkpt__jdict_sets(c, loop, "depth0", vkpt__jmk_int(c, 0)) ||
            !vkpt__jdict_sets(c, loop, "previtem", i > 0 ? items->u.l.v[i - 1] : UNDEF) ||
            !vkpt__jdict_sets(c, loop, "nextitem", i + 1 < len ? items->u.l.v[i + 1] : UNDEF))
            return EX_ERR;
        if (!vkpt__jdict_sets(c, loop, "cycle", vkpt__jmk_fn(c, F_CYCLE, loop))) return EX_ERR;
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
                vkpt__joom(c);
                r = EX_ERR;
            }
            break;
        case JN_OUTPUT: {
            jv *v = eval(c, n->a);
            if (!v || vkpt__jput_str(c, c->out, v)) r = EX_ERR;
            break;
        }
        case JN_IF: {
            jv *v = eval(c, n->a);
            if (!v)
                r = EX_ERR;
            else
                r = exec_body(c, vkpt__jtruthy(v) ? &n->body : &n->orelse, f);
            break;
        }
        case JN_FOR: r = exec_for(c, n, f); break;
        case JN_SET: {
            jv *v = n->b ? eval(c, n->b) : render_body(c, &n->body, f);
            if (!v || !assign(c, f, n->a, v)) r = EX_ERR;
            break;
        }
        case JN_MACRO: {
            jv *fn = vkpt__jmk(c, JV_FUNC);
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
        default: vkpt__jfailf(c, n, "not a statement"); r = EX_ERR;
        }
        c->cur = saved;
        if (r == EX_ERR && !c->err) vkpt__joom(c); /* an output buffer could not grow */
        if (c->err) return EX_ERR;
        if (r) return r;
    }
    return EX_OK;
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
            !frame_set(&c, c.global, e->string, strlen(e->string), vkpt__jfrom_json(&c, e, 0)))
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
