/* The chat-template interpreter's internals: the syntax tree that
 * jinja_parse.c builds and jinja_eval.c runs.
 *
 * The tree lives in the template's arena and is read-only after parsing, so
 * one template renders on many threads at once; each render has its own
 * arena for values, freed in one call at the end.
 */
#ifndef VKPT_JINJA_INT_H
#define VKPT_JINJA_INT_H

#include "tok_int.h"

/* Bump allocator: blocks of memory freed together. */
typedef struct vkpt__arena_blk vkpt__arena_blk;
typedef struct vkpt__arena {
    vkpt__arena_blk *head;
    size_t used, cap; /* in the head block */
    bool failed;
} vkpt__arena;
void *vkpt__arena_alloc(vkpt__arena *a, size_t n); /* zeroed; NULL when out of memory */
char *vkpt__arena_strndup(vkpt__arena *a, const char *s, size_t n);
void vkpt__arena_free(vkpt__arena *a);

enum jn_kind {
    /* statements */
    JN_TEXT,
    JN_OUTPUT, /* a: expr */
    JN_IF,     /* a: cond, body, orelse */
    JN_FOR,    /* a: target, b: iterable, c: filter cond, body, orelse */
    JN_SET,    /* a: target, b: value (or body) */
    JN_MACRO,  /* str: name, params (NAME or KWARG nodes), body */
    JN_BREAK,
    JN_CONTINUE,
    /* expressions */
    JN_LIT,    /* value */
    JN_NAME,   /* str */
    JN_ATTR,   /* a: object, str: name */
    JN_INDEX,  /* a: object, b: index */
    JN_SLICE,  /* a: object, b, c, d: start, stop, step (NULL when omitted) */
    JN_CALL,   /* a: callee, args */
    JN_FILTER, /* a: operand (NULL in a filter block), str: name, args */
    JN_TEST,   /* a: operand, str: name, args, negate */
    JN_UNARY,  /* op, a */
    JN_BINARY, /* op, a, b */
    JN_COND,   /* a: cond, b: then, c: else (NULL -> undefined) */
    JN_LIST,   /* args: items */
    JN_TUPLE,  /* args: items */
    JN_DICT,   /* args: key, value, key, value, ... */
    JN_KWARG,  /* str: name, a: value (in call arguments and macro parameters) */
};

enum jn_op {
    JOP_ADD = 1,
    JOP_SUB,
    JOP_MUL,
    JOP_DIV,
    JOP_FLOORDIV,
    JOP_MOD,
    JOP_POW,
    JOP_CONCAT,
    JOP_EQ,
    JOP_NE,
    JOP_LT,
    JOP_LE,
    JOP_GT,
    JOP_GE,
    JOP_IN,
    JOP_NOTIN,
    JOP_AND,
    JOP_OR,
    JOP_NOT,
    JOP_NEG,
    JOP_POS,
};

typedef struct jv jv;
typedef struct jnode jnode;

/* A list of nodes. */
typedef struct jnodes {
    jnode **v;
    size_t n;
} jnodes;

struct jnode {
    uint8_t kind, op;
    bool negate;
    uint32_t line, col;
    const char *str;
    size_t str_n;
    jnode *a, *b, *c, *d;
    jnodes args;         /* call/filter/test arguments, list items, macro params */
    jnodes body, orelse; /* statement lists */
    const jv *value;     /* JN_LIT */
};

struct vkpt_chat_template {
    vkpt__arena arena;
    jnodes body;
};

/* ---- values (jinja_eval.c) ---------------------------------------------------------- */

enum jv_type {
    JV_UNDEF,
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST,
    JV_DICT,
    JV_NS,
    JV_FUNC
};

struct jv {
    uint8_t type;
    bool tuple; /* JV_LIST displayed as a tuple */
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        struct {
            jv **v;
            size_t n, cap;
        } l;
        struct {
            jv **k, **v;
            size_t n, cap;
        } d; /* JV_DICT and JV_NS (keys are strings for NS) */
        struct {
            int id;         /* builtin id, or -1 for a macro */
            const jv *self; /* bound object of a method, or the loop for cycle */
            const jnode *macro;
        } fn;
    } u;
};

/* Constant values made at parse time (literals) live in the template arena. */
jv *vkpt__jv_new(vkpt__arena *a, int type);
jv *vkpt__jv_str(vkpt__arena *a, const char *s, size_t n);

/* ---- rendering (jinja_value.c, jinja_builtins.c, jinja_eval.c) ----------------------
 * Variables live in frames: the globals, one per for loop, one per macro
 * call. Every value of a render is allocated in the render's arena. Functions
 * return NULL (or false, or a negative code) after recording the error in
 * the context, so an error travels up without being dropped. */

typedef struct vkpt__jframe {
    struct vkpt__jframe *parent;
    const char **names;
    size_t *name_n;
    jv **vals;
    size_t n, cap;
} vkpt__jframe;

typedef struct vkpt__jctx {
    vkpt__arena *a;
    vkpt__buf *out;
    vkpt__jframe *global;
    vkpt__jframe *cur; /* the frame names resolve in */
    uint64_t steps;    /* statements run: a budget against runaway templates */
    int err;
    int depth;
} vkpt__jctx;

/* Evaluated call arguments: positional, then keyword. */
typedef struct vkpt__jargs {
    jv *pos[16];
    int np;
    const char *kn[16];
    size_t kl[16];
    jv *kv[16];
    int nk;
} vkpt__jargs;

/* tojson's options */
typedef struct vkpt__jjson {
    int indent; /* -1: none */
    bool ensure_ascii, sort_keys;
    const char *item_sep, *key_sep;
} vkpt__jjson;

enum { JCASE_UPPER, JCASE_LOWER, JCASE_TITLE, JCASE_CAPITALIZE };

/* Builtin functions and methods (jinja_builtins.c). */
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

extern const jv vkpt__jundef, vkpt__jnone, vkpt__jtrue, vkpt__jfalse;
#define UNDEF    ((jv *)&vkpt__jundef)
#define NONE     ((jv *)&vkpt__jnone)
#define BOOLV(x) ((x) ? (jv *)&vkpt__jtrue : (jv *)&vkpt__jfalse)

/* jinja_value.c */
jv *vkpt__jfailf(vkpt__jctx *c, const jnode *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
jv *vkpt__joom(vkpt__jctx *c);
jv *vkpt__jmk(vkpt__jctx *c, int type);
jv *vkpt__jmk_int(vkpt__jctx *c, int64_t i);
jv *vkpt__jmk_float(vkpt__jctx *c, double f);
jv *vkpt__jmk_str(vkpt__jctx *c, const char *s, size_t n);
jv *vkpt__jmk_list(vkpt__jctx *c, size_t cap);
bool vkpt__jlist_push(vkpt__jctx *c, jv *l, jv *x);
jv *vkpt__jmk_dict(vkpt__jctx *c, int type);
jv *vkpt__jdict_get(const jv *d, const jv *key);
jv *vkpt__jdict_gets(const jv *d, const char *s, size_t n);
bool vkpt__jdict_set(vkpt__jctx *c, jv *d, jv *key, jv *val);
bool vkpt__jdict_sets(vkpt__jctx *c, jv *d, const char *k, jv *val);
bool vkpt__jtruthy(const jv *v);
bool vkpt__jis_num(const jv *v);
double vkpt__jnum(const jv *v);
int64_t vkpt__jinum(const jv *v);
int vkpt__jput_str(vkpt__jctx *c, vkpt__buf *b, const jv *v);
jv *vkpt__jto_str(vkpt__jctx *c, const jv *v);
int vkpt__jput_json(vkpt__jctx *c, vkpt__buf *b, const jv *v, const vkpt__jjson *o, int level);
bool vkpt__jeq(const jv *a, const jv *b);
int vkpt__jcmp(const jv *a, const jv *b, bool *ok);
const char *vkpt__jtype_name(const jv *v);
size_t vkpt__jn_chars(const char *s, size_t n);
size_t vkpt__jchar_off(const char *s, size_t n, size_t ci);
jv *vkpt__jstrip(vkpt__jctx *c, const jv *s, const jv *chars, bool left, bool right);
jv *vkpt__jrecase(vkpt__jctx *c, const jv *s, int mode);
bool vkpt__jstr_pred(const jv *s, int id);
jv *vkpt__jsplit(vkpt__jctx *c, const jv *s, const jv *sep, int64_t maxsplit, bool from_right);
jv *vkpt__jstr_replace(vkpt__jctx *c, const jv *s, const jv *from, const jv *to, int64_t count);
jv *vkpt__jslice(vkpt__jctx *c, const jnode *at, const jv *obj, const jv *a, const jv *b,
                 const jv *s);
jv *vkpt__jas_list(vkpt__jctx *c, const jnode *at, const jv *v);
jv *vkpt__jitems_of(vkpt__jctx *c, const jv *d);
jv *vkpt__jfrom_json(vkpt__jctx *c, const struct cJSON *j, int depth);

/* jinja_builtins.c */
/* A global function (range, namespace, ...) by name, or NULL. */
jv *vkpt__jglobal(vkpt__jctx *c, const char *name, size_t n);
jv *vkpt__jmk_fn(vkpt__jctx *c, int id, const jv *self);
jv *vkpt__jget_attr(vkpt__jctx *c, const jv *obj, const char *name, size_t n);
jv *vkpt__jget_item(vkpt__jctx *c, const jnode *at, const jv *obj, const jv *key);
jv *vkpt__jcall_fn(vkpt__jctx *c, const jnode *at, const jv *fn, const vkpt__jargs *a);
jv *vkpt__japply_filter(vkpt__jctx *c, const jnode *at, const jv *v, const vkpt__jargs *a);
bool vkpt__japply_test(vkpt__jctx *c, const jnode *at, const char *t, size_t tl, const jv *v,
                       const vkpt__jargs *a, bool *res);

/* jinja_eval.c */
jv *vkpt__jarg(const vkpt__jargs *a, int i, const char *name);
jv *vkpt__jcall_macro(vkpt__jctx *c, const jnode *at, const jv *fn, const vkpt__jargs *a);

/* Known filter and test names (checked at parse time). */
bool vkpt__jinja_filter_known(const char *name, size_t n);
bool vkpt__jinja_test_known(const char *name, size_t n);

#endif
