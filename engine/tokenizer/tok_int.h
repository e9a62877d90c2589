/* Internals of engine/tokenizer, shared by its files and its tests.
 *
 * One vkpt_tokenizer holds a pipeline in Hugging Face's shape, whichever file
 * it came from:
 *   added-token split -> normalizer -> pre-tokenizer -> model -> post-processor
 * and, backwards, a decoder. Loaders (tok_hf.c for tokenizer.json, tok_gguf.c
 * for GGUF metadata) fill the structures below; tokenizer.c runs them.
 *
 * Invariants after creation: every token id in [0, n_vocab) has a string
 * (possibly empty for holes in an HF vocabulary) and a decoded piece; the
 * string map, the merge table and the added-token tries are read-only, so
 * encoding and decoding need no locks.
 */
#ifndef VKPT_TOK_INT_H
#define VKPT_TOK_INT_H

#include "vkpt/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef struct pcre2_real_code_8 vkpt__pcre;

/* ---- small utilities (tok_util.c) ---------------------------------------------- */

/* A growable byte buffer; zero-initialise. */
typedef struct vkpt__buf {
    char *p;
    size_t n, cap;
} vkpt__buf;
int vkpt__buf_reserve(vkpt__buf *b, size_t extra);
int vkpt__buf_put(vkpt__buf *b, const void *p, size_t n);
int vkpt__buf_putc(vkpt__buf *b, char c);
int vkpt__buf_puts(vkpt__buf *b, const char *s);
int vkpt__buf_printf(vkpt__buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* NUL-terminate (not counted in n) and hand the memory over. */
char *vkpt__buf_take(vkpt__buf *b, size_t *len);
void vkpt__buf_free(vkpt__buf *b);

/* Decode one code point at s[0..n) (n >= 1). Returns the bytes consumed; an
 * invalid sequence gives U+FFFD and the length of its maximal subpart (the
 * WHATWG / Unicode "substitution of maximal subparts" rule). */
size_t vkpt__utf8_next(const uint8_t *s, size_t n, uint32_t *cp);
/* Encode `cp` (<= 0x10FFFF, not a surrogate) into out[4]; returns length. */
size_t vkpt__utf8_put(uint32_t cp, char *out);
int vkpt__buf_put_cp(vkpt__buf *b, uint32_t cp);
/* Length of the valid UTF-8 prefix of s[0..n). */
size_t vkpt__utf8_valid_prefix(const uint8_t *s, size_t n);
/* Copy s[0..n) into b replacing invalid sequences with U+FFFD. */
int vkpt__utf8_sanitize(vkpt__buf *b, const char *s, size_t n);

/* Unicode properties (utf8proc's tables). */
bool vkpt__u_is_whitespace(uint32_t cp); /* White_Space: Rust char::is_whitespace */
bool vkpt__u_is_js_space(uint32_t cp);   /* JavaScript's String.prototype.trim set */
bool vkpt__u_is_punct(uint32_t cp);      /* \p{P} */
bool vkpt__u_is_bert_punct(uint32_t cp); /* \p{P} or ASCII symbols (BERT) */
bool vkpt__u_is_control(uint32_t cp);    /* Cc/Cf/Co/Cs, not \t \n \r (BERT) */
bool vkpt__u_is_cjk(uint32_t cp);        /* the CJK blocks BERT pads with spaces */
bool vkpt__u_is_mark(uint32_t cp);       /* \p{M} */
bool vkpt__u_is_alnum(uint32_t cp);      /* \p{L} \p{N} (and marks, for \w) */

/* 64-bit hash of a byte string. */
static inline uint64_t vkpt__hash(const void *p, size_t n)
{
    const uint8_t *s = (const uint8_t *)p;
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

/* String -> id map over strings stored elsewhere (open addressing, linear
 * probing; slot holds id + 1). `get_str` reads the string of an id. */
typedef struct vkpt__strmap {
    uint32_t *slots;
    uint32_t mask;
    uint32_t count;
} vkpt__strmap;

/* Pair (left id, right id) -> merge (rank, result id). */
typedef struct vkpt__merge {
    uint64_t key; /* left << 32 | right; 0 slot empty means key==UINT64_MAX */
    uint32_t rank;
    int32_t id;
} vkpt__merge;

/* ---- the pipeline ------------------------------------------------------------------ */

enum vkpt__norm_kind {
    VKPT__N_NFC,
    VKPT__N_NFD,
    VKPT__N_NFKC,
    VKPT__N_NFKD,
    VKPT__N_LOWER,
    VKPT__N_STRIP_ACCENTS,
    VKPT__N_REPLACE, /* str -> content (literal, or regex when re != NULL) */
    VKPT__N_PREPEND, /* str */
    VKPT__N_STRIP,   /* left/right */
    VKPT__N_BERT,    /* clean_text, chinese, strip_accents, lowercase */
    VKPT__N_PRECOMP, /* SentencePiece precompiled charsmap, as Hugging Face's JS reads it */
};

typedef struct vkpt__norm {
    int kind;
    char *str, *content;
    size_t str_n, content_n;
    vkpt__pcre *re;
    bool left, right;               /* strip */
    bool clean, chinese, lowercase; /* bert */
    int strip_accents;              /* bert: -1 = follow lowercase */
} vkpt__norm;

enum vkpt__pre_kind {
    VKPT__P_SPLIT,      /* regex or literal; behaviour; invert */
    VKPT__P_BYTELEVEL,  /* add_prefix_space; use_regex (GPT-2 regex in re) */
    VKPT__P_METASPACE,  /* replacement; prepend scheme; split */
    VKPT__P_WHITESPACE, /* \w+|[^\w\s]+ */
    VKPT__P_WSPLIT,     /* split on whitespace, drop it */
    VKPT__P_BERT,       /* whitespace (dropped) and punctuation (isolated) */
    VKPT__P_PUNCT,      /* punctuation; behaviour */
    VKPT__P_DIGITS,     /* individual or runs */
};

enum vkpt__split_behaviour {
    VKPT__SPLIT_REMOVED,
    VKPT__SPLIT_ISOLATED,
    VKPT__SPLIT_MERGED_PREV,
    VKPT__SPLIT_MERGED_NEXT,
    VKPT__SPLIT_CONTIGUOUS,
};

enum vkpt__prepend { VKPT__PREPEND_ALWAYS, VKPT__PREPEND_FIRST, VKPT__PREPEND_NEVER };

typedef struct vkpt__pre {
    int kind;
    vkpt__pcre *re; /* SPLIT (regex), BYTELEVEL (use_regex), WHITESPACE */
    char *lit;      /* SPLIT with a String pattern */
    size_t lit_n;
    int behaviour;
    bool invert;
    bool add_prefix_space; /* BYTELEVEL */
    char repl[8];          /* METASPACE replacement, UTF-8 */
    size_t repl_n;
    int prepend;     /* METASPACE */
    bool split;      /* METASPACE */
    bool individual; /* DIGITS */
} vkpt__pre;

enum vkpt__model_kind {
    VKPT__M_BPE,       /* merge ranks (Hugging Face BPE, GGUF gpt2) */
    VKPT__M_SPM,       /* scores (GGUF llama: llama.cpp's SentencePiece BPE) */
    VKPT__M_WORDPIECE, /* greedy longest match with a continuation prefix */
};

/* Decoded form of every token, precomputed at load (see tok_piece.c). */
enum vkpt__piece_flag {
    VKPT__PF_ADDED = 1,   /* an added token: inserted verbatim by byte-level decoders */
    VKPT__PF_SPECIAL = 2, /* skipped by VKPT_DETOK_SKIP_SPECIAL */
    VKPT__PF_BYTE = 4,    /* a <0xNN> byte-fallback token */
    VKPT__PF_CONT = 8,    /* WordPiece continuation ("##x"): no space before */
    VKPT__PF_UNUSED = 16, /* hole in the vocabulary */
};

typedef struct vkpt__added {
    int32_t id;
    char *content;
    size_t n;
    char *norm; /* normalized content when `normalized` and there is a normalizer */
    size_t norm_n;
    bool special, lstrip, rstrip, normalized, single_word;
} vkpt__added;

/* Byte trie over added-token contents: longest match at a position. */
typedef struct vkpt__trie_node {
    uint32_t first_edge; /* index into edges */
    uint16_t n_edges;
    int32_t added; /* index into t->added (or a token id), or -1 */
} vkpt__trie_node;
typedef struct vkpt__trie_edge {
    uint8_t byte;
    uint32_t node;
} vkpt__trie_edge;
typedef struct vkpt__trie {
    vkpt__trie_node *nodes;
    vkpt__trie_edge *edges;
    uint32_t n_nodes, n_edges;
    uint32_t root_child[256]; /* direct table for the first byte; 0 = none */
    bool any;
} vkpt__trie;

/* Decoder steps, applied in Hugging Face's order. */
enum vkpt__dec_kind {
    VKPT__D_BYTELEVEL,
    VKPT__D_REPLACE, /* literal str -> content, per token */
    VKPT__D_BYTEFALLBACK,
    VKPT__D_FUSE,
    VKPT__D_STRIP,     /* content char, start, stop */
    VKPT__D_METASPACE, /* replacement; strip the first token's leading space */
    VKPT__D_WORDPIECE, /* prefix; cleanup */
    VKPT__D_BPE,       /* suffix */
};

typedef struct vkpt__dec {
    int kind;
    char *str, *content; /* REPLACE, WORDPIECE prefix, BPE suffix, STRIP content */
    size_t str_n, content_n;
    int start, stop;
    bool cleanup;
    bool strip_first; /* METASPACE */
} vkpt__dec;

#define VKPT__MAX_EOG         16
#define VKPT__MAX_META_UNSAFE 32
#define VKPT__MAX_META_UNSAFE 32

struct vkpt_tokenizer {
    /* vocabulary */
    int32_t n_vocab;
    char *tok_pool;      /* token strings, NUL-separated */
    uint32_t *tok_off;   /* [n_vocab] */
    uint32_t *tok_len;   /* [n_vocab] */
    float *scores;       /* [n_vocab] (SPM) or NULL */
    char *piece_pool;    /* decoded pieces */
    uint32_t *piece_off; /* [n_vocab] */
    uint32_t *piece_len; /* [n_vocab] */
    uint8_t *pflags;     /* [n_vocab] enum vkpt__piece_flag */
    size_t max_piece;    /* longest piece, bytes */
    vkpt__strmap vocab;  /* token string -> id */

    /* model */
    int model;
    bool byte_level;       /* model input is raw bytes, vocab is GPT-2 byte-mapped */
    int32_t byte_tok[256]; /* byte-level: id of each byte's char; byte fallback: <0xNN> */
    vkpt__strmap raw;      /* byte-level: raw bytes -> id (for ignore_merges) */
    char *raw_pool;
    uint32_t *raw_off, *raw_len;
    vkpt__merge *merges;
    uint64_t merge_mask;
    uint32_t n_merges;
    int32_t unk; /* model unk id or -1 */
    bool byte_fallback, fuse_unk, ignore_merges;
    bool meta_split; /* "▁" after another character bounds merges ... */
    uint32_t meta_unsafe[VKPT__MAX_META_UNSAFE]; /* ... unless it is one of these */
    int n_meta_unsafe;
    char *cont_prefix; /* BPE continuing_subword_prefix / WordPiece "##" */
    size_t cont_prefix_n;
    char *eow_suffix; /* BPE end_of_word_suffix */
    size_t eow_suffix_n;
    int wp_max_chars; /* WordPiece max_input_chars_per_word */

    /* pipeline */
    vkpt__norm *norm;
    int n_norm;
    vkpt__pre *pre;
    int n_pre;
    int32_t *post_prefix, *post_suffix; /* ids added with VKPT_TOK_ADD_SPECIAL */
    int n_post_prefix, n_post_suffix;
    vkpt__dec *dec;
    int n_dec;
    bool dec_join_space; /* no decoder: tokens joined with " " */
    bool cleanup;        /* clean_up_tokenization_spaces */

    /* added tokens */
    vkpt__added *added;
    int n_added;
    vkpt__trie trie_raw;   /* contents matched before normalization */
    vkpt__trie trie_norm;  /* normalized contents, matched after */
    vkpt__trie vocab_trie; /* WordPiece: token strings, values are ids */

    /* specials */
    vkpt_tokenizer_specials sp;
    int32_t eog[VKPT__MAX_EOG];
    int n_eog;
    char *tok_strings[7]; /* bos, eos, unk, sep, pad, cls, mask strings for templates */
    char **extra_special; /* additional_special_tokens (decode skip list) */
    int n_extra_special;
    const char *kind;

    /* chat templates */
    vkpt_chat_template *tpl;
    vkpt_chat_template *tpl_tools; /* "tool_use" when the config names several */
};

/* tokenizer.c */
int vkpt__tok_alloc_vocab(vkpt_tokenizer *t, int32_t n_vocab, size_t pool_bytes);
int vkpt__tok_set_token(vkpt_tokenizer *t, int32_t id, const char *s, size_t n, size_t *pool_used);
/* Build the string -> id map (after all tokens and added tokens are set). */
int vkpt__tok_index(vkpt_tokenizer *t);
int vkpt__tok_finish(vkpt_tokenizer *t); /* maps, pieces, tries, eog list */
void vkpt__tok_add_eog(vkpt_tokenizer *t, int32_t id);
int32_t vkpt__vocab_get(const vkpt_tokenizer *t, const char *s, size_t n);
/* WordPiece: the longest token that is `prefix` + a prefix of s[0..n); returns
 * its length in s (0: none) and its id. */
size_t vkpt__vocab_longest(const vkpt_tokenizer *t, const char *prefix, size_t prefix_n,
                           const char *s, size_t n, int32_t *id);
int vkpt__add_merge(vkpt_tokenizer *t, int32_t left, int32_t right, uint32_t rank, int32_t id);
int vkpt__merges_alloc(vkpt_tokenizer *t, size_t n);
int vkpt__normalize(const vkpt_tokenizer *t, const char *s, size_t n, vkpt__buf *out);
/* Compile a pre-tokenizer regex (UTF + UCP, JIT when available). */
int vkpt__re_compile(const char *pattern, size_t n, vkpt__pcre **out);
void vkpt__re_free(vkpt__pcre *re);
/* The GPT-2 byte <-> char table. */
uint32_t vkpt__byte_to_cp(uint8_t b);
int vkpt__cp_to_byte(uint32_t cp); /* -1 when not in the table */
/* Set a template on `t` from source (errors carry the position). */
int vkpt__tok_set_template(vkpt_tokenizer *t, const char *src, size_t n, bool tools);

/* tok_hf.c / tok_gguf.c */
int vkpt__tok_load_hf(vkpt_tokenizer *t, const char *tok_json, size_t tok_n, const char *cfg_json,
                      size_t cfg_n, const char *gen_json, size_t gen_n);
int vkpt__tok_load_gguf(vkpt_tokenizer *t, const vkpt_gguf *g);

#endif
