/* Chat templates: lexer and parser for the Jinja subset.
 *
 * Whitespace follows what transformers configures (trim_blocks and
 * lstrip_blocks on, one trailing newline of the source dropped) and the
 * "-" markers: lstrip_blocks removes spaces and tabs between the start of a
 * line and a {% or {# tag; trim_blocks removes the newline right after %}
 * or #}; {%- / -%} (and {{- -}} {#- -#}) remove all whitespace on that side.
 *
 * Everything that can be checked without data is checked here, so a bad
 * template fails when the model loads: syntax, unclosed blocks, unknown
 * tags, filters and tests. Messages give the line and column.
 */
#define _GNU_SOURCE
#include "jinja_int.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- arena ------------------------------------------------------------------------ */

struct vkpt__arena_blk {
    vkpt__arena_blk *next;
    size_t cap;
    max_align_t data[];
};

void *vkpt__arena_alloc(vkpt__arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->used + n > a->cap) {
        size_t cap = n > 16384 ? n : 16384;
        vkpt__arena_blk *b = vkpt_malloc(sizeof *b + cap);
        if (!b) {
            a->failed = true;
            return NULL;
        }
        b->next = a->head;
        b->cap = cap;
        a->head = b;
        a->used = 0;
        a->cap = cap;
    }
    void *p = (char *)a->head->data + a->used;
    a->used += n;
    memset(p, 0, n);
    return p;
}

char *vkpt__arena_strndup(vkpt__arena *a, const char *s, size_t n)
{
    char *p = vkpt__arena_alloc(a, n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void vkpt__arena_free(vkpt__arena *a)
{
    vkpt__arena_blk *b = a->head;
    while (b) {
        vkpt__arena_blk *n = b->next;
        vkpt_free(b);
        b = n;
    }
    memset(a, 0, sizeof *a);
}

jv *vkpt__jv_new(vkpt__arena *a, int type)
{
    jv *v = vkpt__arena_alloc(a, sizeof *v);
    if (v) v->type = (uint8_t)type;
    return v;
}

jv *vkpt__jv_str(vkpt__arena *a, const char *s, size_t n)
{
    jv *v = vkpt__jv_new(a, JV_STR);
    if (!v) return NULL;
    char *p = vkpt__arena_strndup(a, s, n);
    if (!p) return NULL;
    v->u.s.p = p;
    v->u.s.n = n;
    return v;
}

/* ---- lexer --------------------------------------------------------------------------- */

enum tk {
    TK_EOF,
    TK_TEXT,
    TK_OPEN_EXPR,
    TK_CLOSE_EXPR,
    TK_OPEN_STMT,
    TK_CLOSE_STMT,
    TK_NAME,
    TK_STRING,
    TK_INT,
    TK_FLOAT,
    TK_OP,
};

typedef struct tok {
    uint8_t type;
    uint32_t off;  /* source offset, for line/column */
    const char *s; /* text, name, operator or unescaped string (arena) */
    size_t n;
    int64_t i;
    double f;
} tok;

typedef struct lexer {
    const char *src;
    size_t n;
    vkpt__arena *arena;
    tok *v;
    size_t nt, cap;
    uint32_t *lines; /* offsets of line starts */
    size_t n_lines;
    int err;
} lexer;

static void pos_of(const lexer *lx, size_t off, uint32_t *line, uint32_t *col)
{
    size_t lo = 0, hi = lx->n_lines;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (lx->lines[mid] <= off)
            lo = mid;
        else
            hi = mid;
    }
    *line = (uint32_t)lo + 1;
    /* column in characters, 1-based */
    uint32_t c = 1;
    for (size_t i = lx->lines[lo]; i < off && i < lx->n; i++)
        c += ((uint8_t)lx->src[i] & 0xC0) != 0x80;
    *col = c;
}

static int lex_fail(lexer *lx, size_t off, const char *fmt, const char *arg)
{
    uint32_t l, c;
    pos_of(lx, off, &l, &c);
    char msg[200];
    snprintf(msg, sizeof msg, fmt, arg ? arg : "");
    lx->err = vkpt_fail(VKPT_EPARSE, "chat template line %u, column %u: %s", l, c, msg);
    return lx->err;
}

static int push_tok(lexer *lx, tok t)
{
    if (lx->nt == lx->cap) {
        size_t cap = lx->cap ? lx->cap * 2 : 256;
        tok *v = vkpt_realloc(lx->v, cap * sizeof *v);
        if (!v) return lx->err = vkpt_fail(VKPT_ENOMEM, "template tokens");
        lx->v = v;
        lx->cap = cap;
    }
    lx->v[lx->nt++] = t;
    return 0;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static size_t rtrim_js(const char *s, size_t n)
{
    while (n > 0) {
        size_t b = n - 1;
        while (b > 0 && ((uint8_t)s[b] & 0xC0) == 0x80) b--;
        uint32_t cp;
        vkpt__utf8_next((const uint8_t *)s + b, n - b, &cp);
        if (!vkpt__u_is_js_space(cp)) break;
        n = b;
    }
    return n;
}

static size_t ltrim_js(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = vkpt__utf8_next((const uint8_t *)s + i, n - i, &cp);
        if (!vkpt__u_is_js_space(cp)) break;
        i += k;
    }
    return i;
}

static bool is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

static int lex_string(lexer *lx, size_t *pos)
{
    const char *s = lx->src;
    size_t i = *pos, start = i;
    char q = s[i++];
    vkpt__buf b = {0};
    int err = 0;
    for (;;) {
        if (i >= lx->n) {
            vkpt__buf_free(&b);
            return lex_fail(lx, start, "unterminated string literal%s", NULL);
        }
        char c = s[i];
        if (c == q) {
            i++;
            break;
        }
        if (c != '\\') {
            err = vkpt__buf_putc(&b, c);
            i++;
        } else {
            if (i + 1 >= lx->n) {
                vkpt__buf_free(&b);
                return lex_fail(lx, start, "unterminated string literal%s", NULL);
            }
            char e = s[i + 1];
            i += 2;
            switch (e) {
            case 'n': err = vkpt__buf_putc(&b, '\n'); break;
            case 't': err = vkpt__buf_putc(&b, '\t'); break;
            case 'r': err = vkpt__buf_putc(&b, '\r'); break;
            case 'b': err = vkpt__buf_putc(&b, '\b'); break;
            case 'f': err = vkpt__buf_putc(&b, '\f'); break;
            case 'v': err = vkpt__buf_putc(&b, '\v'); break;
            case '0': err = vkpt__buf_putc(&b, '\0'); break;
            case '\\':
            case '\'':
            case '"': err = vkpt__buf_putc(&b, e); break;
            case 'x':
            case 'u':
            case 'U': {
                int len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
                uint32_t cp = 0;
                for (int k = 0; k < len; k++) {
                    char h = i < lx->n ? s[i] : 0;
                    int v = (h >= '0' && h <= '9')   ? h - '0'
                            : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                            : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                                     : -1;
                    if (v < 0) {
                        vkpt__buf_free(&b);
                        return lex_fail(lx, i, "bad \\%s escape in a string literal",
                                        e == 'x' ? "x" : "u");
                    }
                    cp = cp * 16 + (uint32_t)v;
                    i++;
                }
                if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = 0xFFFD;
                err = vkpt__buf_put_cp(&b, cp);
                break;
            }
            case '\n': break; /* line continuation */
            default:
                /* Python keeps unknown escapes as written */
                if (!(err = vkpt__buf_putc(&b, '\\'))) err = vkpt__buf_putc(&b, e);
            }
        }
        if (err) {
            vkpt__buf_free(&b);
            return lx->err = err;
        }
    }
    tok t = {.type = TK_STRING, .off = (uint32_t)start};
    t.s = vkpt__arena_strndup(lx->arena, b.p ? b.p : "", b.n);
    t.n = b.n;
    vkpt__buf_free(&b);
    if (!t.s) return lx->err = vkpt_fail(VKPT_ENOMEM, "template");
    *pos = i;
    return push_tok(lx, t);
}

static const char *const ops2[] = {"**", "//", "==", "!=", "<=", ">="};
static const char ops1[] = "+-*/%~<>=()[]{},.:|";

static int lex(lexer *lx)
{
    const char *s = lx->src;
    size_t n = lx->n, pos = 0;
    bool strip_next = false; /* a "-" closed the last tag */
    while (pos < n) {
        /* text up to the next tag */
        size_t i = pos;
        const char *tag = NULL;
        while (i + 1 < n) {
            const char *p = memchr(s + i, '{', n - i - 1);
            if (!p) break;
            i = (size_t)(p - s);
            if (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#') {
                tag = s + i;
                break;
            }
            i++;
        }
        size_t text_end = tag ? i : n;
        size_t ts = pos, te = text_end;
        if (strip_next) ts += ltrim_js(s + ts, te - ts);
        strip_next = false;
        if (tag) {
            char kind = tag[1];
            char mod = i + 2 < n ? tag[2] : 0;
            if (mod == '-') {
                te = ts + rtrim_js(s + ts, te - ts);
            } else if ((kind == '%' || kind == '#') && mod != '+') {
                /* lstrip_blocks: spaces and tabs from the line start to the tag */
                size_t k = te;
                while (k > ts && (s[k - 1] == ' ' || s[k - 1] == '\t')) k--;
                if (k == 0 || s[k - 1] == '\n') te = k < ts ? ts : k;
            }
        }
        if (te > ts) {
            tok t = {.type = TK_TEXT, .off = (uint32_t)ts, .s = s + ts, .n = te - ts};
            if (push_tok(lx, t)) return lx->err;
        }
        if (!tag) break;
        char kind = tag[1];
        size_t open = i;
        pos = i + 2;
        if (pos < n && (s[pos] == '-' || s[pos] == '+')) pos++;
        if (kind == '#') {
            const char *e = NULL;
            for (size_t k = pos; k + 1 < n; k++)
                if (s[k] == '#' && s[k + 1] == '}') {
                    e = s + k;
                    break;
                }
            if (!e) return lex_fail(lx, open, "comment is not closed with #}%s", NULL);
            size_t k = (size_t)(e - s);
            strip_next = k > pos && s[k - 1] == '-';
            pos = k + 2;
            if (pos < n && s[pos] == '\n') pos++; /* trim_blocks */
            continue;
        }
        bool stmt = kind == '%';
        tok ot = {.type = stmt ? TK_OPEN_STMT : TK_OPEN_EXPR, .off = (uint32_t)open};
        if (push_tok(lx, ot)) return lx->err;
        int depth = 0;
        for (;;) {
            while (pos < n && is_space(s[pos])) pos++;
            if (pos >= n) return lex_fail(lx, open, "%s is not closed", stmt ? "{%" : "{{");
            const char *close = stmt ? "%}" : "}}";
            bool dash = s[pos] == '-' && pos + 3 <= n && !memcmp(s + pos + 1, close, 2) &&
                        (stmt || depth == 0);
            if (dash || ((stmt || depth == 0) && pos + 2 <= n && !memcmp(s + pos, close, 2))) {
                tok ct = {.type = stmt ? TK_CLOSE_STMT : TK_CLOSE_EXPR, .off = (uint32_t)pos};
                if (push_tok(lx, ct)) return lx->err;
                pos += dash ? 3 : 2;
                strip_next = dash;
                if (stmt && pos < n && s[pos] == '\n') pos++; /* trim_blocks */
                break;
            }
            if (!stmt && s[pos] == '%' && pos + 1 < n && s[pos + 1] == '}')
                return lex_fail(lx, pos, "expected }} to close {{, found %%}%s", NULL);
            char c = s[pos];
            if (c == '\'' || c == '"') {
                if (lex_string(lx, &pos)) return lx->err;
                continue;
            }
            if (c >= '0' && c <= '9') {
                size_t st = pos;
                while (pos < n && ((s[pos] >= '0' && s[pos] <= '9') || s[pos] == '_')) pos++;
                bool fl = false;
                if (pos + 1 < n && s[pos] == '.' && s[pos + 1] >= '0' && s[pos + 1] <= '9' &&
                    !(lx->nt && lx->v[lx->nt - 1].type == TK_OP && lx->v[lx->nt - 1].s[0] == '.')) {
                    fl = true;
                    pos++;
                    while (pos < n && s[pos] >= '0' && s[pos] <= '9') pos++;
                }
                if (pos < n && (s[pos] == 'e' || s[pos] == 'E') && pos + 1 < n &&
                    ((s[pos + 1] >= '0' && s[pos + 1] <= '9') || s[pos + 1] == '-' ||
                     s[pos + 1] == '+')) {
                    fl = true;
                    pos += 2;
                    while (pos < n && s[pos] >= '0' && s[pos] <= '9') pos++;
                }
                char num[64];
                size_t k = 0;
                for (size_t q = st; q < pos && k < sizeof num - 1; q++)
                    if (s[q] != '_') num[k++] = s[q];
                num[k] = 0;
                tok t = {.type = fl ? TK_FLOAT : TK_INT, .off = (uint32_t)st};
                if (fl)
                    t.f = strtod(num, NULL);
                else
                    t.i = strtoll(num, NULL, 10);
                if (push_tok(lx, t)) return lx->err;
                continue;
            }
            if (is_name_start(c)) {
                size_t st = pos;
                while (pos < n && is_name_char(s[pos])) pos++;
                tok t = {.type = TK_NAME, .off = (uint32_t)st, .s = s + st, .n = pos - st};
                if (push_tok(lx, t)) return lx->err;
                continue;
            }
            size_t len = 0;
            for (size_t k = 0; k < sizeof ops2 / sizeof ops2[0]; k++)
                if (pos + 1 < n && !memcmp(s + pos, ops2[k], 2)) len = 2;
            if (!len && strchr(ops1, c) && c) len = 1;
            if (!len) {
                char ch[8] = {0};
                uint32_t cp;
                size_t kk = vkpt__utf8_next((const uint8_t *)s + pos, n - pos, &cp);
                memcpy(ch, s + pos, kk < 7 ? kk : 7);
                return lex_fail(lx, pos, "unexpected character '%s'", ch);
            }
            if (c == '{') depth++;
            if (c == '}') depth--;
            tok t = {.type = TK_OP, .off = (uint32_t)pos, .s = s + pos, .n = len};
            if (push_tok(lx, t)) return lx->err;
            pos += len;
        }
    }
    tok e = {.type = TK_EOF, .off = (uint32_t)n};
    return push_tok(lx, e);
}

/* ---- parser ---------------------------------------------------------------------------- */

typedef struct parser {
    lexer *lx;
    size_t i;
    vkpt__arena *arena;
    int err;
    int depth;
} parser;

static tok *peek(parser *p)
{
    return &p->lx->v[p->i];
}

static tok *peek2(parser *p)
{
    return &p->lx->v[p->i + 1 < p->lx->nt ? p->i + 1 : p->i];
}

static bool is_op(const tok *t, const char *op)
{
    return t->type == TK_OP && t->n == strlen(op) && !memcmp(t->s, op, t->n);
}

static bool is_name(const tok *t, const char *name)
{
    return t->type == TK_NAME && t->n == strlen(name) && !memcmp(t->s, name, t->n);
}

static const char *tok_desc(const tok *t, char *buf, size_t cap)
{
    switch (t->type) {
    case TK_EOF: return "the end of the template";
    case TK_TEXT: return "text";
    case TK_OPEN_EXPR: return "'{{'";
    case TK_CLOSE_EXPR: return "'}}'";
    case TK_OPEN_STMT: return "'{%'";
    case TK_CLOSE_STMT: return "'%}'";
    case TK_STRING: return "a string";
    case TK_INT:
    case TK_FLOAT: return "a number";
    default: snprintf(buf, cap, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s); return buf;
    }
}

static void *fail_at(parser *p, const tok *t, const char *fmt, const char *a)
{
    if (p->err) return NULL;
    uint32_t l, c;
    pos_of(p->lx, t->off, &l, &c);
    char msg[256], d[64];
    snprintf(msg, sizeof msg, fmt, a ? a : tok_desc(t, d, sizeof d));
    p->err = vkpt_fail(VKPT_EPARSE, "chat template line %u, column %u: %s", l, c, msg);
    return NULL;
}

static jnode *node(parser *p, int kind, const tok *at)
{
    jnode *nd = vkpt__arena_alloc(p->arena, sizeof *nd);
    if (!nd) {
        if (!p->err) p->err = vkpt_fail(VKPT_ENOMEM, "template");
        return NULL;
    }
    nd->kind = (uint8_t)kind;
    pos_of(p->lx, at->off, &nd->line, &nd->col);
    return nd;
}

/* Growable node list in the arena (grown by copying; lists are short). */
typedef struct nlist {
    jnode **v;
    size_t n, cap;
} nlist;

static bool nl_push(parser *p, nlist *l, jnode *nd)
{
    if (!nd) return false;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        jnode **v = vkpt__arena_alloc(p->arena, cap * sizeof *v);
        if (!v) {
            if (!p->err) p->err = vkpt_fail(VKPT_ENOMEM, "template");
            return false;
        }
        if (l->n) memcpy(v, l->v, l->n * sizeof *v);
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = nd;
    return true;
}

static jnodes nl_done(nlist *l)
{
    return (jnodes){l->v, l->n};
}

static bool expect_op(parser *p, const char *op)
{
    if (!is_op(peek(p), op)) {
        char m[64];
        snprintf(m, sizeof m, "expected '%s', found %%s", op);
        fail_at(p, peek(p), m, NULL);
        return false;
    }
    p->i++;
    return true;
}

static jnode *parse_expr(parser *p, bool condexpr);
static jnode *parse_unary(parser *p, bool with_filter);
static jnode *parse_or(parser *p);

static jnode *literal(parser *p, const tok *at, jv *v)
{
    if (!v) {
        if (!p->err) p->err = vkpt_fail(VKPT_ENOMEM, "template");
        return NULL;
    }
    jnode *nd = node(p, JN_LIT, at);
    if (nd) nd->value = v;
    return nd;
}

/* Call arguments: positional expressions and name=value pairs, until ')'. */
static bool parse_args(parser *p, nlist *args)
{
    while (!is_op(peek(p), ")")) {
        tok *t = peek(p);
        if (t->type == TK_NAME && is_op(peek2(p), "=")) {
            jnode *kw = node(p, JN_KWARG, t);
            if (!kw) return false;
            kw->str = t->s;
            kw->str_n = t->n;
            p->i += 2;
            kw->a = parse_expr(p, true);
            if (!kw->a || !nl_push(p, args, kw)) return false;
        } else {
            if (is_op(t, "*")) return fail_at(p, t, "*args in calls is not supported", "") != NULL;
            if (!nl_push(p, args, parse_expr(p, true))) return false;
        }
        if (is_op(peek(p), ",")) {
            p->i++;
            continue;
        }
        if (!is_op(peek(p), ")"))
            return fail_at(p, peek(p), "expected ',' or ')' in arguments, found %s", NULL);
    }
    p->i++;
    return true;
}

static jnode *parse_primary(parser *p)
{
    tok *t = peek(p);
    if (++p->depth > 200) return fail_at(p, t, "expression nested too deeply%s", "");
    jnode *r = NULL;
    switch (t->type) {
    case TK_STRING: {
        /* adjacent string literals concatenate */
        vkpt__buf b = {0};
        while (peek(p)->type == TK_STRING) {
            if (vkpt__buf_put(&b, peek(p)->s, peek(p)->n)) {
                vkpt__buf_free(&b);
                p->err = vkpt_fail(VKPT_ENOMEM, "template");
                p->depth--;
                return NULL;
            }
            p->i++;
        }
        r = literal(p, t, vkpt__jv_str(p->arena, b.p ? b.p : "", b.n));
        vkpt__buf_free(&b);
        break;
    }
    case TK_INT: {
        p->i++;
        jv *v = vkpt__jv_new(p->arena, JV_INT);
        if (v) v->u.i = t->i;
        r = literal(p, t, v);
        break;
    }
    case TK_FLOAT: {
        p->i++;
        jv *v = vkpt__jv_new(p->arena, JV_FLOAT);
        if (v) v->u.f = t->f;
        r = literal(p, t, v);
        break;
    }
    case TK_NAME: {
        p->i++;
        if (is_name(t, "true") || is_name(t, "True") || is_name(t, "false") ||
            is_name(t, "False")) {
            jv *v = vkpt__jv_new(p->arena, JV_BOOL);
            if (v) v->u.b = t->s[0] == 't' || t->s[0] == 'T';
            r = literal(p, t, v);
        } else if (is_name(t, "none") || is_name(t, "None")) {
            r = literal(p, t, vkpt__jv_new(p->arena, JV_NONE));
        } else {
            r = node(p, JN_NAME, t);
            if (r) {
                r->str = t->s;
                r->str_n = t->n;
            }
        }
        break;
    }
    case TK_OP:
        if (is_op(t, "(")) {
            p->i++;
            if (is_op(peek(p), ")")) {
                p->i++;
                r = node(p, JN_TUPLE, t);
                break;
            }
            jnode *first = parse_expr(p, true);
            if (!first) break;
            if (is_op(peek(p), ",")) {
                nlist items = {0};
                nl_push(p, &items, first);
                while (is_op(peek(p), ",")) {
                    p->i++;
                    if (is_op(peek(p), ")")) break;
                    if (!nl_push(p, &items, parse_expr(p, true))) break;
                }
                r = node(p, JN_TUPLE, t);
                if (r) r->args = nl_done(&items);
            } else {
                r = first;
            }
            if (!p->err && !expect_op(p, ")")) r = NULL;
        } else if (is_op(t, "[")) {
            p->i++;
            nlist items = {0};
            while (!p->err && !is_op(peek(p), "]")) {
                if (!nl_push(p, &items, parse_expr(p, true))) break;
                if (is_op(peek(p), ","))
                    p->i++;
                else if (!is_op(peek(p), "]"))
                    fail_at(p, peek(p), "expected ',' or ']' in a list, found %s", NULL);
            }
            if (!p->err) {
                p->i++;
                r = node(p, JN_LIST, t);
                if (r) r->args = nl_done(&items);
            }
        } else if (is_op(t, "{")) {
            p->i++;
            nlist items = {0};
            while (!p->err && !is_op(peek(p), "}")) {
                if (!nl_push(p, &items, parse_expr(p, true))) break;
                if (!expect_op(p, ":")) break;
                if (!nl_push(p, &items, parse_expr(p, true))) break;
                if (is_op(peek(p), ","))
                    p->i++;
                else if (!is_op(peek(p), "}"))
                    fail_at(p, peek(p), "expected ',' or '}' in a dict, found %s", NULL);
            }
            if (!p->err) {
                p->i++;
                r = node(p, JN_DICT, t);
                if (r) r->args = nl_done(&items);
            }
        } else {
            fail_at(p, t, "unexpected %s in an expression", NULL);
        }
        break;
    default: fail_at(p, t, "expected an expression, found %s", NULL);
    }
    p->depth--;
    return p->err ? NULL : r;
}

static jnode *parse_postfix(parser *p, jnode *nd)
{
    while (nd && !p->err) {
        tok *t = peek(p);
        if (is_op(t, ".")) {
            p->i++;
            tok *a = peek(p);
            if (a->type == TK_NAME) {
                jnode *x = node(p, JN_ATTR, a);
                if (!x) return NULL;
                x->a = nd;
                x->str = a->s;
                x->str_n = a->n;
                p->i++;
                nd = x;
            } else if (a->type == TK_INT) {
                jnode *x = node(p, JN_INDEX, a);
                jv *v = vkpt__jv_new(p->arena, JV_INT);
                if (!x || !v) return NULL;
                v->u.i = a->i;
                x->a = nd;
                x->b = literal(p, a, v);
                p->i++;
                nd = x;
            } else {
                return fail_at(p, a, "expected an attribute name after '.', found %s", NULL);
            }
        } else if (is_op(t, "[")) {
            p->i++;
            jnode *parts[3] = {NULL, NULL, NULL};
            int k = 0;
            bool slice = false;
            for (;;) {
                if (is_op(peek(p), ":")) {
                    slice = true;
                    p->i++;
                    if (++k > 2) return fail_at(p, peek(p), "too many ':' in a slice%s", "");
                    continue;
                }
                if (is_op(peek(p), "]")) break;
                if (parts[k]) return fail_at(p, peek(p), "expected ':' or ']', found %s", NULL);
                if (!(parts[k] = parse_expr(p, true))) return NULL;
            }
            p->i++;
            jnode *x = node(p, slice ? JN_SLICE : JN_INDEX, t);
            if (!x) return NULL;
            x->a = nd;
            if (slice) {
                x->b = parts[0];
                x->c = parts[1];
                x->d = parts[2];
            } else {
                if (!parts[0]) return fail_at(p, t, "empty subscript%s", "");
                x->b = parts[0];
            }
            nd = x;
        } else if (is_op(t, "(")) {
            p->i++;
            jnode *x = node(p, JN_CALL, t);
            if (!x) return NULL;
            x->line = nd->line; /* errors point at the callee */
            x->col = nd->col;
            nlist args = {0};
            if (!parse_args(p, &args)) return NULL;
            x->a = nd;
            x->args = nl_done(&args);
            nd = x;
        } else {
            break;
        }
    }
    return p->err ? NULL : nd;
}

static jnode *parse_filter_or_test(parser *p, jnode *nd)
{
    while (nd && !p->err) {
        tok *t = peek(p);
        if (is_op(t, "|")) {
            p->i++;
            tok *nm = peek(p);
            if (nm->type != TK_NAME)
                return fail_at(p, nm, "expected a filter name after '|', found %s", NULL);
            if (!vkpt__jinja_filter_known(nm->s, nm->n)) {
                char name[64];
                snprintf(name, sizeof name, "%.*s", (int)(nm->n > 60 ? 60 : nm->n), nm->s);
                return fail_at(p, nm, "unknown filter '%s'", name);
            }
            p->i++;
            jnode *x = node(p, JN_FILTER, nm);
            if (!x) return NULL;
            x->a = nd;
            x->str = nm->s;
            x->str_n = nm->n;
            if (is_op(peek(p), "(")) {
                p->i++;
                nlist args = {0};
                if (!parse_args(p, &args)) return NULL;
                x->args = nl_done(&args);
            }
            nd = x;
        } else if (is_name(t, "is")) {
            p->i++;
            bool neg = false;
            if (is_name(peek(p), "not")) {
                neg = true;
                p->i++;
            }
            tok *nm = peek(p);
            if (nm->type != TK_NAME)
                return fail_at(p, nm, "expected a test name after 'is', found %s", NULL);
            if (!vkpt__jinja_test_known(nm->s, nm->n)) {
                char name[64];
                snprintf(name, sizeof name, "%.*s", (int)(nm->n > 60 ? 60 : nm->n), nm->s);
                return fail_at(p, nm, "unknown test '%s'", name);
            }
            p->i++;
            jnode *x = node(p, JN_TEST, nm);
            if (!x) return NULL;
            x->a = nd;
            x->str = nm->s;
            x->str_n = nm->n;
            x->negate = neg;
            tok *nx = peek(p);
            if (is_op(nx, "(")) {
                p->i++;
                nlist args = {0};
                if (!parse_args(p, &args)) return NULL;
                x->args = nl_done(&args);
            } else if (nx->type == TK_STRING || nx->type == TK_INT || nx->type == TK_FLOAT ||
                       (nx->type == TK_NAME && !is_name(nx, "and") && !is_name(nx, "or") &&
                        !is_name(nx, "else") && !is_name(nx, "if") && !is_name(nx, "in") &&
                        !is_name(nx, "is") && !is_name(nx, "not"))) {
                /* `is divisibleby 3`, `is sameas none`: one argument without parentheses */
                nlist args = {0};
                if (!nl_push(p, &args, parse_unary(p, false))) return NULL;
                x->args = nl_done(&args);
            }
            nd = x;
        } else {
            break;
        }
    }
    return p->err ? NULL : nd;
}

static jnode *parse_unary(parser *p, bool with_filter)
{
    tok *t = peek(p);
    jnode *nd;
    if (is_op(t, "-") || is_op(t, "+")) {
        p->i++;
        if (++p->depth > 200) return fail_at(p, t, "expression nested too deeply%s", "");
        jnode *a = parse_unary(p, false);
        p->depth--;
        if (!a) return NULL;
        nd = node(p, JN_UNARY, t);
        if (!nd) return NULL;
        nd->op = is_op(t, "-") ? JOP_NEG : JOP_POS;
        nd->a = a;
    } else {
        nd = parse_postfix(p, parse_primary(p));
    }
    if (nd && with_filter) nd = parse_filter_or_test(p, nd);
    return nd;
}

static jnode *binary(parser *p, const tok *at, int op, jnode *a, jnode *b)
{
    if (!a || !b) return NULL;
    jnode *nd = node(p, JN_BINARY, at);
    if (!nd) return NULL;
    nd->op = (uint8_t)op;
    nd->a = a;
    nd->b = b;
    return nd;
}

static jnode *parse_pow(parser *p)
{
    jnode *l = parse_unary(p, true);
    while (l && is_op(peek(p), "**")) {
        tok *t = peek(p);
        p->i++;
        l = binary(p, t, JOP_POW, l, parse_unary(p, true));
    }
    return l;
}

static jnode *parse_math2(parser *p)
{
    jnode *l = parse_pow(p);
    for (;;) {
        tok *t = peek(p);
        int op = is_op(t, "*")    ? JOP_MUL
                 : is_op(t, "/")  ? JOP_DIV
                 : is_op(t, "//") ? JOP_FLOORDIV
                 : is_op(t, "%")  ? JOP_MOD
                                  : 0;
        if (!l || !op) return l;
        p->i++;
        l = binary(p, t, op, l, parse_pow(p));
    }
}

static jnode *parse_concat(parser *p)
{
    jnode *l = parse_math2(p);
    while (l && is_op(peek(p), "~")) {
        tok *t = peek(p);
        p->i++;
        l = binary(p, t, JOP_CONCAT, l, parse_math2(p));
    }
    return l;
}

static jnode *parse_math1(parser *p)
{
    jnode *l = parse_concat(p);
    for (;;) {
        tok *t = peek(p);
        int op = is_op(t, "+") ? JOP_ADD : is_op(t, "-") ? JOP_SUB : 0;
        if (!l || !op) return l;
        p->i++;
        l = binary(p, t, op, l, parse_concat(p));
    }
}

static jnode *parse_compare(parser *p)
{
    jnode *l = parse_math1(p);
    for (;;) {
        tok *t = peek(p);
        int op = is_op(t, "==")                                   ? JOP_EQ
                 : is_op(t, "!=")                                 ? JOP_NE
                 : is_op(t, "<")                                  ? JOP_LT
                 : is_op(t, "<=")                                 ? JOP_LE
                 : is_op(t, ">")                                  ? JOP_GT
                 : is_op(t, ">=")                                 ? JOP_GE
                 : is_name(t, "in")                               ? JOP_IN
                 : (is_name(t, "not") && is_name(peek2(p), "in")) ? JOP_NOTIN
                                                                  : 0;
        if (!l || !op) return l;
        p->i += op == JOP_NOTIN ? 2 : 1;
        l = binary(p, t, op, l, parse_math1(p));
    }
}

static jnode *parse_not(parser *p)
{
    tok *t = peek(p);
    if (is_name(t, "not")) {
        p->i++;
        if (++p->depth > 200) return fail_at(p, t, "expression nested too deeply%s", "");
        jnode *a = parse_not(p);
        p->depth--;
        if (!a) return NULL;
        jnode *nd = node(p, JN_UNARY, t);
        if (!nd) return NULL;
        nd->op = JOP_NOT;
        nd->a = a;
        return nd;
    }
    return parse_compare(p);
}

static jnode *parse_and(parser *p)
{
    jnode *l = parse_not(p);
    while (l && is_name(peek(p), "and")) {
        tok *t = peek(p);
        p->i++;
        l = binary(p, t, JOP_AND, l, parse_not(p));
    }
    return l;
}

static jnode *parse_or(parser *p)
{
    jnode *l = parse_and(p);
    while (l && is_name(peek(p), "or")) {
        tok *t = peek(p);
        p->i++;
        l = binary(p, t, JOP_OR, l, parse_and(p));
    }
    return l;
}

static jnode *parse_expr(parser *p, bool condexpr)
{
    if (++p->depth > 200) return fail_at(p, peek(p), "expression nested too deeply%s", "");
    jnode *e = parse_or(p);
    while (e && condexpr && is_name(peek(p), "if")) {
        tok *t = peek(p);
        p->i++;
        jnode *c = node(p, JN_COND, t);
        if (!c) return NULL;
        c->b = e;
        c->a = parse_or(p);
        if (!c->a) return NULL;
        if (is_name(peek(p), "else")) {
            p->i++;
            c->c = parse_expr(p, true);
            if (!c->c) return NULL;
        }
        e = c;
    }
    p->depth--;
    return p->err ? NULL : e;
}

/* expr [, expr ...] -> a tuple when there is a comma */
static jnode *parse_tuple(parser *p, bool condexpr)
{
    tok *t = peek(p);
    jnode *first = parse_expr(p, condexpr);
    if (!first || !is_op(peek(p), ",")) return first;
    nlist items = {0};
    nl_push(p, &items, first);
    while (is_op(peek(p), ",")) {
        p->i++;
        tok *nx = peek(p);
        if (nx->type == TK_CLOSE_STMT || nx->type == TK_CLOSE_EXPR || is_name(nx, "in")) break;
        if (!nl_push(p, &items, parse_expr(p, condexpr))) return NULL;
    }
    jnode *nd = node(p, JN_TUPLE, t);
    if (nd) nd->args = nl_done(&items);
    return nd;
}

/* Assignment targets: name, name.attr, or a, b (tuple of names). */
static jnode *parse_target(parser *p, bool allow_attr)
{
    tok *t = peek(p);
    nlist items = {0};
    bool paren = is_op(t, "(");
    if (paren) p->i++;
    for (;;) {
        tok *nm = peek(p);
        if (nm->type != TK_NAME) return fail_at(p, nm, "expected a variable name, found %s", NULL);
        p->i++;
        jnode *x = node(p, JN_NAME, nm);
        if (!x) return NULL;
        x->str = nm->s;
        x->str_n = nm->n;
        if (allow_attr && is_op(peek(p), ".")) {
            p->i++;
            tok *a = peek(p);
            if (a->type != TK_NAME)
                return fail_at(p, a, "expected an attribute name, found %s", NULL);
            p->i++;
            jnode *y = node(p, JN_ATTR, a);
            if (!y) return NULL;
            y->a = x;
            y->str = a->s;
            y->str_n = a->n;
            x = y;
        }
        if (!nl_push(p, &items, x)) return NULL;
        if (!is_op(peek(p), ",")) break;
        p->i++;
    }
    if (paren && !expect_op(p, ")")) return NULL;
    if (items.n == 1) return items.v[0];
    jnode *nd = node(p, JN_TUPLE, t);
    if (nd) nd->args = nl_done(&items);
    return nd;
}

static bool expect_close(parser *p)
{
    if (peek(p)->type != TK_CLOSE_STMT) {
        fail_at(p, peek(p), "expected '%%}', found %s", NULL);
        return false;
    }
    p->i++;
    return true;
}

/* Parse statements until {% NAME %} with NAME in `ends` ('|'-separated);
 * returns the index of the end tag's name in `ends`, or -1 on error. The
 * end tag's name has been consumed (not its arguments or '%}'). */
static int parse_body(parser *p, const char *ends, nlist *out, const tok *opener);

static int end_index(const char *ends, const tok *t)
{
    int idx = 0;
    const char *e = ends;
    while (e && *e) {
        const char *bar = strchr(e, '|');
        size_t n = bar ? (size_t)(bar - e) : strlen(e);
        if (t->type == TK_NAME && t->n == n && !memcmp(t->s, e, n)) return idx;
        idx++;
        e = bar ? bar + 1 : NULL;
    }
    return -1;
}

static jnode *parse_stmt(parser *p)
{
    tok *open = peek(p);
    p->i++;
    tok *t = peek(p);
    if (t->type != TK_NAME) return fail_at(p, t, "expected a tag name after '{%%', found %s", NULL);
    p->i++;
    if (is_name(t, "if")) {
        jnode *nd = node(p, JN_IF, t);
        if (!nd || !(nd->a = parse_tuple(p, true)) || !expect_close(p)) return NULL;
        nlist body = {0};
        int e = parse_body(p, "elif|else|endif", &body, t);
        if (e < 0) return NULL;
        nd->body = nl_done(&body);
        jnode *cur = nd;
        while (e == 0) { /* elif */
            tok *et = &p->lx->v[p->i - 1];
            jnode *x = node(p, JN_IF, et);
            if (!x || !(x->a = parse_tuple(p, true)) || !expect_close(p)) return NULL;
            nlist b = {0};
            e = parse_body(p, "elif|else|endif", &b, t);
            if (e < 0) return NULL;
            x->body = nl_done(&b);
            nlist one = {0};
            if (!nl_push(p, &one, x)) return NULL;
            cur->orelse = nl_done(&one);
            cur = x;
        }
        if (e == 1) { /* else */
            if (!expect_close(p)) return NULL;
            nlist b = {0};
            if (parse_body(p, "endif", &b, t) < 0) return NULL;
            cur->orelse = nl_done(&b);
        }
        return expect_close(p) ? nd : NULL;
    }
    if (is_name(t, "for")) {
        jnode *nd = node(p, JN_FOR, t);
        if (!nd || !(nd->a = parse_target(p, false))) return NULL;
        if (!is_name(peek(p), "in"))
            return fail_at(p, peek(p), "expected 'in' in a for loop, found %s", NULL);
        p->i++;
        if (!(nd->b = parse_tuple(p, false))) return NULL;
        if (is_name(peek(p), "if")) {
            p->i++;
            if (!(nd->c = parse_expr(p, false))) return NULL;
        }
        if (is_name(peek(p), "recursive"))
            return fail_at(p, peek(p), "recursive for loops are not supported%s", "");
        if (!expect_close(p)) return NULL;
        nlist body = {0};
        int e = parse_body(p, "else|endfor", &body, t);
        if (e < 0) return NULL;
        nd->body = nl_done(&body);
        if (e == 0) {
            if (!expect_close(p)) return NULL;
            nlist b = {0};
            if (parse_body(p, "endfor", &b, t) < 0) return NULL;
            nd->orelse = nl_done(&b);
        }
        return expect_close(p) ? nd : NULL;
    }
    if (is_name(t, "set")) {
        jnode *nd = node(p, JN_SET, t);
        if (!nd || !(nd->a = parse_target(p, true))) return NULL;
        if (is_op(peek(p), "=")) {
            p->i++;
            if (!(nd->b = parse_tuple(p, true))) return NULL;
            return expect_close(p) ? nd : NULL;
        }
        if (!expect_close(p)) return NULL;
        nlist body = {0};
        if (parse_body(p, "endset", &body, t) < 0) return NULL;
        nd->body = nl_done(&body);
        return expect_close(p) ? nd : NULL;
    }
    if (is_name(t, "macro")) {
        tok *nm = peek(p);
        if (nm->type != TK_NAME) return fail_at(p, nm, "expected a macro name, found %s", NULL);
        p->i++;
        jnode *nd = node(p, JN_MACRO, t);
        if (!nd) return NULL;
        nd->str = nm->s;
        nd->str_n = nm->n;
        if (!expect_op(p, "(")) return NULL;
        nlist params = {0};
        while (!is_op(peek(p), ")")) {
            tok *pn = peek(p);
            if (pn->type != TK_NAME)
                return fail_at(p, pn, "expected a parameter name, found %s", NULL);
            p->i++;
            jnode *x = node(p, is_op(peek(p), "=") ? JN_KWARG : JN_NAME, pn);
            if (!x) return NULL;
            x->str = pn->s;
            x->str_n = pn->n;
            if (x->kind == JN_KWARG) {
                p->i++;
                if (!(x->a = parse_expr(p, true))) return NULL;
            }
            if (!nl_push(p, &params, x)) return NULL;
            if (is_op(peek(p), ","))
                p->i++;
            else if (!is_op(peek(p), ")"))
                return fail_at(p, peek(p), "expected ',' or ')', found %s", NULL);
        }
        p->i++;
        nd->args = nl_done(&params);
        if (!expect_close(p)) return NULL;
        nlist body = {0};
        if (parse_body(p, "endmacro", &body, t) < 0) return NULL;
        nd->body = nl_done(&body);
        if (peek(p)->type == TK_NAME) p->i++; /* {% endmacro name %} */
        return expect_close(p) ? nd : NULL;
    }
    if (is_name(t, "break") || is_name(t, "continue")) {
        jnode *nd = node(p, is_name(t, "break") ? JN_BREAK : JN_CONTINUE, t);
        return nd && expect_close(p) ? nd : NULL;
    }
    if (is_name(t, "generation") || is_name(t, "endgeneration")) {
        /* transformers' assistant-mask markers: no output */
        jnode *nd = node(p, JN_TEXT, t);
        if (nd) nd->str = "";
        return nd && expect_close(p) ? nd : NULL;
    }
    (void)open;
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(t->n > 60 ? 60 : t->n), t->s);
    if (!strncmp(name, "end", 3) || !strcmp(name, "else") || !strcmp(name, "elif"))
        return fail_at(p, t, "'%s' without a matching block", name);
    return fail_at(p, t, "unknown or unsupported tag '%s'", name);
}

static int parse_body(parser *p, const char *ends, nlist *out, const tok *opener)
{
    for (;;) {
        if (p->err) return -1;
        tok *t = peek(p);
        switch (t->type) {
        case TK_EOF:
            if (ends) {
                char m[96];
                snprintf(m, sizeof m, "'%.*s' block is never closed", (int)opener->n, opener->s);
                fail_at(p, opener, "%s", m);
                return -1;
            }
            return 0;
        case TK_TEXT: {
            jnode *nd = node(p, JN_TEXT, t);
            if (!nd) return -1;
            nd->str = t->s;
            nd->str_n = t->n;
            p->i++;
            if (!nl_push(p, out, nd)) return -1;
            break;
        }
        case TK_OPEN_EXPR: {
            p->i++;
            jnode *nd = node(p, JN_OUTPUT, t);
            if (!nd || !(nd->a = parse_tuple(p, true))) return -1;
            if (peek(p)->type != TK_CLOSE_EXPR) {
                fail_at(p, peek(p), "expected '}}', found %s", NULL);
                return -1;
            }
            p->i++;
            if (!nl_push(p, out, nd)) return -1;
            break;
        }
        case TK_OPEN_STMT: {
            tok *nm = peek2(p);
            int e = ends ? end_index(ends, nm) : -1;
            if (e >= 0) {
                p->i += 2;
                return e;
            }
            if (!nl_push(p, out, parse_stmt(p))) return -1;
            break;
        }
        default: fail_at(p, t, "unexpected %s", NULL); return -1;
        }
    }
}

int vkpt_chat_template_create(const char *src, size_t len, vkpt_chat_template **out)
{
    if (!src || !out) return vkpt_fail(VKPT_EINVAL, "chat template: NULL argument");
    *out = NULL;
    vkpt_chat_template *tpl = vkpt_calloc(1, sizeof *tpl);
    if (!tpl) return vkpt_fail(VKPT_ENOMEM, "chat template");
    /* the tree points into the source: keep a copy in the template's arena */
    char *copy = vkpt__arena_strndup(&tpl->arena, src, len);
    if (!copy) {
        vkpt_chat_template_destroy(tpl);
        return vkpt_fail(VKPT_ENOMEM, "chat template");
    }
    src = copy;
    lexer lx = {.src = src, .n = len, .arena = &tpl->arena};
    if (len && src[len - 1] == '\n') lx.n--; /* keep_trailing_newline=False */
    size_t nl = 1;
    for (size_t i = 0; i < lx.n; i++) nl += src[i] == '\n';
    lx.lines = vkpt_malloc(nl * sizeof *lx.lines);
    int err = 0;
    if (!lx.lines) {
        err = vkpt_fail(VKPT_ENOMEM, "chat template");
        goto out;
    }
    lx.lines[0] = 0;
    lx.n_lines = 1;
    for (size_t i = 0; i < lx.n; i++)
        if (src[i] == '\n') lx.lines[lx.n_lines++] = (uint32_t)(i + 1);
    if (len > UINT32_MAX / 2) {
        err = vkpt_fail(VKPT_ETOOBIG, "chat template of %zu bytes", len);
        goto out;
    }
    if ((err = lex(&lx))) goto out;
    parser p = {.lx = &lx, .arena = &tpl->arena};
    nlist body = {0};
    if (parse_body(&p, NULL, &body, NULL) < 0 || p.err) {
        err = p.err ? p.err : vkpt_fail(VKPT_EPARSE, "chat template");
        goto out;
    }
    tpl->body = nl_done(&body);
    if (tpl->arena.failed) err = vkpt_fail(VKPT_ENOMEM, "chat template");
out:
    vkpt_free(lx.v);
    vkpt_free(lx.lines);
    if (err) {
        vkpt_chat_template_destroy(tpl);
        return err;
    }
    *out = tpl;
    return 0;
}

void vkpt_chat_template_destroy(vkpt_chat_template *tpl)
{
    if (!tpl) return;
    vkpt__arena_free(&tpl->arena);
    vkpt_free(tpl);
}
