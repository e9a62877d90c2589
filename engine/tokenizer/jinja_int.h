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

/* Known filter and test names (checked at parse time). */
bool vkpt__jinja_filter_known(const char *name, size_t n);
bool vkpt__jinja_test_known(const char *name, size_t n);

#endif
