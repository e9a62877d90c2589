/* engine/tokenizer: the encoding pipeline and the tokenizer object.
 *
 * encode(text) runs Hugging Face's steps in order:
 *   1. split the text at added tokens (longest match first, left to right,
 *      over the contents that are not normalized), honouring lstrip/rstrip;
 *   2. normalize each text section; split again at normalized added tokens;
 *   3. pre-tokenize (regex splits through PCRE2, byte-level, metaspace, ...);
 *   4. run the model (tok_model.c) on each piece;
 *   5. add the post-processor's special tokens when asked.
 * Every step keeps text as UTF-8 bytes; the input is made valid UTF-8 first
 * (U+FFFD for invalid sequences) so PCRE2 can skip its own checks.
 */
#define _GNU_SOURCE
#include "tok_int.h"
#include "tok_model.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <utf8proc.h>

/* ---- vocabulary and maps ---------------------------------------------------------- */

int vkpt__tok_alloc_vocab(vkpt_tokenizer *t, int32_t n_vocab, size_t pool_bytes)
{
    if (n_vocab <= 0 || n_vocab > (1 << 30))
        return vkpt_fail(VKPT_EFORMAT, "vocabulary of %d tokens", (int)n_vocab);
    t->n_vocab = n_vocab;
    t->tok_off = vkpt_calloc((size_t)n_vocab, sizeof *t->tok_off);
    t->tok_len = vkpt_calloc((size_t)n_vocab, sizeof *t->tok_len);
    t->pflags = vkpt_calloc((size_t)n_vocab, 1);
    t->tok_pool = vkpt_malloc(pool_bytes + 1);
    if (!t->tok_off || !t->tok_len || !t->pflags || !t->tok_pool)
        return vkpt_fail(VKPT_ENOMEM, "vocabulary of %d tokens", (int)n_vocab);
    for (int32_t i = 0; i < n_vocab; i++) t->pflags[i] = VKPT__PF_UNUSED;
    return 0;
}

int vkpt__tok_set_token(vkpt_tokenizer *t, int32_t id, const char *s, size_t n, size_t *pool_used)
{
    if (id < 0 || id >= t->n_vocab) return vkpt_fail(VKPT_EFORMAT, "token id %d out of range", id);
    if (n > UINT32_MAX / 2) return vkpt_fail(VKPT_EFORMAT, "token %d is too long", id);
    memcpy(t->tok_pool + *pool_used, s, n);
    t->tok_pool[*pool_used + n] = 0;
    t->tok_off[id] = (uint32_t)*pool_used;
    t->tok_len[id] = (uint32_t)n;
    t->pflags[id] &= (uint8_t)~VKPT__PF_UNUSED;
    *pool_used += n + 1;
    return 0;
}

static int strmap_init(vkpt__strmap *m, size_t n)
{
    size_t cap = 16;
    while (cap < n * 2 + 1) cap *= 2;
    m->slots = vkpt_calloc(cap, sizeof *m->slots);
    if (!m->slots) return vkpt_fail(VKPT_ENOMEM, "string map of %zu entries", n);
    m->mask = (uint32_t)(cap - 1);
    m->count = 0;
    return 0;
}

/* Insert (last wins for equal strings). */
static void strmap_put(vkpt__strmap *m, const char *pool, const uint32_t *off, const uint32_t *len,
                       int32_t id)
{
    const char *s = pool + off[id];
    size_t n = len[id];
    uint32_t i = (uint32_t)vkpt__hash(s, n) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        uint32_t v = m->slots[i];
        if (!v) {
            m->slots[i] = (uint32_t)id + 1;
            m->count++;
            return;
        }
        uint32_t o = v - 1;
        if (len[o] == n && !memcmp(pool + off[o], s, n)) {
            m->slots[i] = (uint32_t)id + 1;
            return;
        }
    }
}

static int32_t strmap_get(const vkpt__strmap *m, const char *pool, const uint32_t *off,
                          const uint32_t *len, const char *s, size_t n)
{
    if (!m->slots) return -1;
    uint32_t i = (uint32_t)vkpt__hash(s, n) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        uint32_t v = m->slots[i];
        if (!v) return -1;
        uint32_t o = v - 1;
        if (len[o] == n && !memcmp(pool + off[o], s, n)) return (int32_t)o;
    }
}

int32_t vkpt__vocab_get(const vkpt_tokenizer *t, const char *s, size_t n)
{
    return strmap_get(&t->vocab, t->tok_pool, t->tok_off, t->tok_len, s, n);
}

int32_t vkpt__raw_get(const vkpt_tokenizer *t, const char *s, size_t n)
{
    return strmap_get(&t->raw, t->raw_pool, t->raw_off, t->raw_len, s, n);
}

int vkpt__merges_alloc(vkpt_tokenizer *t, size_t n)
{
    size_t cap = 16;
    while (cap < n * 2 + 1) cap *= 2;
    t->merges = vkpt_malloc(cap * sizeof *t->merges);
    if (!t->merges) return vkpt_fail(VKPT_ENOMEM, "merge table of %zu entries", n);
    for (size_t i = 0; i < cap; i++) t->merges[i].key = UINT64_MAX;
    t->merge_mask = cap - 1;
    return 0;
}

static uint64_t mix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

/* First rank wins: a repeated merge keeps its earliest (highest) priority. */
int vkpt__add_merge(vkpt_tokenizer *t, int32_t left, int32_t right, uint32_t rank, int32_t id)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (uint64_t i = mix64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        vkpt__merge *m = &t->merges[i];
        if (m->key == key) return 0;
        if (m->key == UINT64_MAX) {
            m->key = key;
            m->rank = rank;
            m->id = id;
            t->n_merges++;
            return 0;
        }
    }
}

const vkpt__merge *vkpt__merge_get(const vkpt_tokenizer *t, int32_t left, int32_t right)
{
    if (!t->merges) return NULL;
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (uint64_t i = mix64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const vkpt__merge *m = &t->merges[i];
        if (m->key == key) return m;
        if (m->key == UINT64_MAX) return NULL;
    }
}

/* ---- added-token tries ---------------------------------------------------------- */

typedef struct bnode {
    int32_t child, sibling, added;
    uint8_t byte;
} bnode;

typedef struct trie_item {
    const uint8_t *s;
    size_t n;
    int32_t val;
} trie_item;

static int cmp_edge(const void *a, const void *b)
{
    return (int)((const vkpt__trie_edge *)a)->byte - (int)((const vkpt__trie_edge *)b)->byte;
}

/* Build a byte trie of `items` (a later duplicate wins, like Hugging Face's
 * maps); node values are the items' `val`. Edges are sorted per node. */
static int trie_build_items(vkpt__trie *tr, const trie_item *items, size_t count)
{
    size_t n = 1, cap = 256;
    int err = 0;
    bnode *nodes = vkpt_malloc(cap * sizeof *nodes);
    if (!nodes) return vkpt_fail(VKPT_ENOMEM, "token trie");
    nodes[0] = (bnode){-1, -1, -1, 0};
    for (size_t a = 0; a < count; a++) {
        const uint8_t *s = items[a].s;
        int32_t cur = 0;
        for (size_t i = 0; i < items[a].n; i++) {
            int32_t c = nodes[cur].child;
            while (c >= 0 && nodes[c].byte != s[i]) c = nodes[c].sibling;
            if (c < 0) {
                if (n == cap) {
                    bnode *p = vkpt_realloc(nodes, cap * 2 * sizeof *nodes);
                    if (!p) {
                        err = vkpt_fail(VKPT_ENOMEM, "token trie");
                        goto out;
                    }
                    nodes = p;
                    cap *= 2;
                }
                c = (int32_t)n++;
                nodes[c] = (bnode){-1, nodes[cur].child, -1, s[i]};
                nodes[cur].child = c;
            }
            cur = c;
        }
        if (cur) nodes[cur].added = items[a].val;
    }
    tr->n_nodes = (uint32_t)n;
    tr->nodes = vkpt_calloc(n, sizeof *tr->nodes);
    tr->edges = vkpt_calloc(n, sizeof *tr->edges);
    if (!tr->nodes || !tr->edges) {
        err = vkpt_fail(VKPT_ENOMEM, "token trie");
        goto out;
    }
    uint32_t ne = 0;
    for (size_t i = 0; i < n; i++) {
        tr->nodes[i].added = nodes[i].added;
        tr->nodes[i].first_edge = ne;
        uint32_t k = 0;
        for (int32_t c = nodes[i].child; c >= 0; c = nodes[c].sibling) {
            tr->edges[ne++] = (vkpt__trie_edge){nodes[c].byte, (uint32_t)c};
            k++;
        }
        tr->nodes[i].n_edges = (uint16_t)k;
        qsort(tr->edges + tr->nodes[i].first_edge, k, sizeof *tr->edges, cmp_edge);
    }
    tr->n_edges = ne;
    memset(tr->root_child, 0, sizeof tr->root_child);
    for (int32_t c = nodes[0].child; c >= 0; c = nodes[c].sibling)
        tr->root_child[nodes[c].byte] = (uint32_t)c;
    tr->any = nodes[0].child >= 0;
out:
    vkpt_free(nodes);
    return err;
}

static int trie_build(vkpt__trie *tr, const vkpt_tokenizer *t, bool normalized)
{
    trie_item *items = vkpt_malloc(((size_t)t->n_added + 1) * sizeof *items);
    if (!items) return vkpt_fail(VKPT_ENOMEM, "added-token trie");
    size_t k = 0;
    for (int a = 0; a < t->n_added; a++) {
        const vkpt__added *ad = &t->added[a];
        if ((ad->norm != NULL) != normalized) continue;
        size_t len = normalized ? ad->norm_n : ad->n;
        if (len)
            items[k++] =
                (trie_item){(const uint8_t *)(normalized ? ad->norm : ad->content), len, a};
    }
    int err = trie_build_items(tr, items, k);
    vkpt_free(items);
    return err;
}

/* WordPiece: every token string -> id, for longest-match lookups. */
static int trie_build_vocab(vkpt_tokenizer *t)
{
    trie_item *items = vkpt_malloc(((size_t)t->n_vocab + 1) * sizeof *items);
    if (!items) return vkpt_fail(VKPT_ENOMEM, "vocabulary trie");
    size_t k = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (!(t->pflags[i] & VKPT__PF_UNUSED) && t->tok_len[i])
            items[k++] =
                (trie_item){(const uint8_t *)t->tok_pool + t->tok_off[i], t->tok_len[i], i};
    int err = trie_build_items(&t->vocab_trie, items, k);
    vkpt_free(items);
    return err;
}

static uint32_t trie_step(const vkpt__trie *tr, uint32_t node, uint8_t b)
{
    const vkpt__trie_node *nd = &tr->nodes[node];
    const vkpt__trie_edge *e = &tr->edges[nd->first_edge];
    size_t lo = 0, hi = nd->n_edges;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (e[mid].byte < b)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < nd->n_edges && e[lo].byte == b ? e[lo].node : 0;
}

size_t vkpt__vocab_longest(const vkpt_tokenizer *t, const char *prefix, size_t prefix_n,
                           const char *s, size_t n, int32_t *id)
{
    const vkpt__trie *tr = &t->vocab_trie;
    uint32_t node = 0;
    for (size_t i = 0; i < prefix_n; i++) {
        node = node ? trie_step(tr, node, (uint8_t)prefix[i]) : tr->root_child[(uint8_t)prefix[i]];
        if (!node) return 0;
    }
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        node = node ? trie_step(tr, node, (uint8_t)s[i]) : tr->root_child[(uint8_t)s[i]];
        if (!node) break;
        if (tr->nodes[node].added >= 0) {
            best = i + 1;
            *id = tr->nodes[node].added;
        }
    }
    return best;
}

static void trie_free(vkpt__trie *tr)
{
    vkpt_free(tr->nodes);
    vkpt_free(tr->edges);
    memset(tr, 0, sizeof *tr);
}

/* Longest allowed added token starting at s; returns its length (0: none). */
static size_t trie_match(const vkpt_tokenizer *t, const vkpt__trie *tr, const uint8_t *s, size_t n,
                         bool parse_special, int *added)
{
    uint32_t node = tr->root_child[s[0]];
    if (!node) return 0;
    size_t best = 0;
    for (size_t i = 1;; i++) {
        const vkpt__trie_node *nd = &tr->nodes[node];
        if (nd->added >= 0 && (parse_special || !t->added[nd->added].special)) {
            best = i;
            *added = nd->added;
        }
        if (i >= n || !nd->n_edges) break;
        uint32_t next = trie_step(tr, node, s[i]);
        if (!next) break;
        node = next;
    }
    return best;
}

/* ---- regexes ---------------------------------------------------------------------- */

/* Hugging Face's tokenizers run these regexes with Oniguruma, whose \s is
 * [\t-\r\x{85}\p{Z}] (PCRE2's UCP \s also matches U+180E) and whose \w is
 * [\p{L}\p{M}\p{Nd}\p{Pc}] (PCRE2's lacks marks). Spell \s and \w (and \S,
 * \W outside classes) out so both engines split the same text alike. */
static int re_rewrite_classes(const char *p, size_t n, vkpt__buf *out)
{
    static const char sp[] = "\\t-\\r\\x{85}\\p{Z}", wd[] = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";
    int depth = 0, err = 0; /* inside [...] */
    for (size_t i = 0; i < n && !err; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char e = p[i + 1];
            const char *cls = e == 's' || e == 'S' ? sp : e == 'w' || e == 'W' ? wd : NULL;
            if (cls && (e == 's' || e == 'w'))
                err = depth ? vkpt__buf_puts(out, cls) : vkpt__buf_printf(out, "[%s]", cls);
            else if (cls && !depth)
                err = vkpt__buf_printf(out, "[^%s]", cls);
            else
                err = vkpt__buf_put(out, p + i, 2);
            i++;
            continue;
        }
        if (c == '[' && depth && i + 1 < n && p[i + 1] == ':') { /* POSIX class [:alpha:] */
            const char *e = memmem(p + i, n - i, ":]", 2);
            size_t k = e ? (size_t)(e - p) + 2 : i + 1;
            err = vkpt__buf_put(out, p + i, k - i);
            i = k - 1;
            continue;
        }
        if (c == '[' && !depth) {
            err = vkpt__buf_putc(out, c);
            if (i + 1 < n && p[i + 1] == '^') err = err ? err : vkpt__buf_putc(out, p[++i]);
            if (i + 1 < n && p[i + 1] == ']') err = err ? err : vkpt__buf_putc(out, p[++i]);
            depth = 1;
            continue;
        }
        if (c == ']' && depth) depth = 0;
        err = vkpt__buf_putc(out, c);
    }
    return err;
}

int vkpt__re_compile(const char *pattern, size_t n, vkpt__pcre **out)
{
    int ec;
    PCRE2_SIZE eo;
    vkpt__buf rw = {0};
    int err = re_rewrite_classes(pattern, n, &rw);
    if (err) {
        vkpt__buf_free(&rw);
        return err;
    }
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)(rw.p ? rw.p : ""), rw.n, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    vkpt__buf_free(&rw);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return vkpt_fail(VKPT_EFORMAT, "pre-tokenizer regex /%.*s/ at offset %zu: %s",
                         (int)(n > 200 ? 200 : n), pattern, (size_t)eo, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
    *out = (vkpt__pcre *)re;
    return 0;
}

void vkpt__re_free(vkpt__pcre *re)
{
    if (re) pcre2_code_free((pcre2_code *)re);
}

/* Find the next non-empty match at or after `start` in s[0..n). */
static bool re_next(vkpt__pcre *re, void *md, const char *s, size_t n, size_t start, size_t *ms,
                    size_t *me)
{
    while (start <= n) {
        int rc = pcre2_match((pcre2_code *)re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK,
                             (pcre2_match_data *)md, NULL);
        if (rc < 0) return false;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer((pcre2_match_data *)md);
        if (ov[1] > ov[0]) {
            *ms = ov[0];
            *me = ov[1];
            return true;
        }
        /* empty match: step over one character */
        start = ov[0] + 1;
        while (start < n && ((uint8_t)s[start] & 0xC0) == 0x80) start++;
    }
    return false;
}

/* ---- normalizers ----------------------------------------------------------------- */

static int norm_utf8proc(const char *s, size_t n, int opts, vkpt__buf *out)
{
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      (utf8proc_option_t)opts);
    if (r < 0) return vkpt_fail(VKPT_EINVAL, "unicode normalization: %s", utf8proc_errmsg(r));
    int err = vkpt__buf_put(out, dst, (size_t)r);
    free(dst); /* utf8proc allocates with malloc */
    return err;
}

static bool is_cased(uint32_t cp)
{
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT ||
           utf8proc_tolower((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp ||
           utf8proc_toupper((utf8proc_int32_t)cp) != (utf8proc_int32_t)cp;
}

static bool is_case_ignorable(uint32_t cp)
{
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_ME || c == UTF8PROC_CATEGORY_CF ||
           c == UTF8PROC_CATEGORY_LM || c == UTF8PROC_CATEGORY_SK || cp == '\'' || cp == '.' ||
           cp == ':' || cp == 0xB7 || cp == 0x2019;
}

/* Full lowercase mapping as JavaScript's toLowerCase() and Rust's
 * to_lowercase() do: simple mappings plus U+0130 and the final sigma. */
static int norm_lower(const char *s, size_t n, vkpt__buf *out)
{
    const uint8_t *u = (const uint8_t *)s;
    int err = vkpt__buf_reserve(out, n);
    for (size_t i = 0; i < n && !err;) {
        uint32_t cp;
        size_t k = vkpt__utf8_next(u + i, n - i, &cp);
        if (cp < 0x80) {
            err = vkpt__buf_putc(out, (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
        } else if (cp == 0x130) {
            err = vkpt__buf_put(out, "i\xCC\x87", 3);
        } else if (cp == 0x3A3) {
            /* final sigma: preceded by a cased letter, not followed by one */
            bool before = false, after = false;
            size_t j = i;
            while (j > 0) {
                size_t b = j - 1;
                while (b > 0 && (u[b] & 0xC0) == 0x80) b--;
                uint32_t pc;
                vkpt__utf8_next(u + b, n - b, &pc);
                j = b;
                if (is_case_ignorable(pc)) continue;
                before = is_cased(pc);
                break;
            }
            for (size_t f = i + k; f < n;) {
                uint32_t nc;
                f += vkpt__utf8_next(u + f, n - f, &nc);
                if (is_case_ignorable(nc)) continue;
                after = is_cased(nc);
                break;
            }
            err = vkpt__buf_put_cp(out, before && !after ? 0x3C2 : 0x3C3);
        } else {
            err = vkpt__buf_put_cp(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp));
        }
        i += k;
    }
    return err;
}

static int norm_filter_marks(const char *s, size_t n, bool nonspacing_only, vkpt__buf *out)
{
    const uint8_t *u = (const uint8_t *)s;
    int err = vkpt__buf_reserve(out, n);
    for (size_t i = 0; i < n && !err;) {
        uint32_t cp;
        size_t k = vkpt__utf8_next(u + i, n - i, &cp);
        bool drop = nonspacing_only
                        ? utf8proc_category((utf8proc_int32_t)cp) == UTF8PROC_CATEGORY_MN
                        : vkpt__u_is_mark(cp);
        if (!drop) err = vkpt__buf_put(out, u + i, k);
        i += k;
    }
    return err;
}

static int norm_replace_lit(const char *s, size_t n, const char *pat, size_t pn, const char *rep,
                            size_t rn, vkpt__buf *out)
{
    int err = vkpt__buf_reserve(out, n);
    if (!pn) return err ? err : vkpt__buf_put(out, s, n);
    size_t i = 0;
    while (i < n && !err) {
        const char *hit = pn <= n - i ? memmem(s + i, n - i, pat, pn) : NULL;
        if (!hit) {
            err = vkpt__buf_put(out, s + i, n - i);
            break;
        }
        size_t h = (size_t)(hit - s);
        if (!(err = vkpt__buf_put(out, s + i, h - i))) err = vkpt__buf_put(out, rep, rn);
        i = h + pn;
    }
    return err;
}

static int norm_replace_re(const vkpt__norm *nm, const char *s, size_t n, vkpt__buf *out)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern((pcre2_code *)nm->re, NULL);
    if (!md) return vkpt_fail(VKPT_ENOMEM, "regex match data");
    int err = vkpt__buf_reserve(out, n);
    size_t i = 0, ms, me;
    while (!err && re_next(nm->re, md, s, n, i, &ms, &me)) {
        if (!(err = vkpt__buf_put(out, s + i, ms - i)))
            err = vkpt__buf_put(out, nm->content, nm->content_n);
        i = me;
    }
    if (!err) err = vkpt__buf_put(out, s + i, n - i);
    pcre2_match_data_free(md);
    return err;
}

static int norm_bert(const vkpt__norm *nm, const char *s, size_t n, vkpt__buf *out)
{
    const uint8_t *u = (const uint8_t *)s;
    vkpt__buf tmp = {0};
    int err = vkpt__buf_reserve(&tmp, n);
    for (size_t i = 0; i < n && !err;) {
        uint32_t cp;
        size_t k = vkpt__utf8_next(u + i, n - i, &cp);
        i += k;
        if (nm->clean) {
            if (cp == 0 || cp == 0xFFFD || vkpt__u_is_control(cp)) continue;
            if (cp == '\t' || cp == '\n' || cp == '\r' || vkpt__u_is_whitespace(cp)) {
                err = vkpt__buf_putc(&tmp, ' ');
                continue;
            }
        }
        if (nm->chinese && vkpt__u_is_cjk(cp)) {
            if (!(err = vkpt__buf_putc(&tmp, ' ')) && !(err = vkpt__buf_put_cp(&tmp, cp)))
                err = vkpt__buf_putc(&tmp, ' ');
            continue;
        }
        err = vkpt__buf_put_cp(&tmp, cp);
    }
    bool strip = nm->strip_accents < 0 ? nm->lowercase : nm->strip_accents > 0;
    if (!err && nm->lowercase) {
        vkpt__buf low = {0};
        err = norm_lower(tmp.p, tmp.n, &low);
        vkpt__buf_free(&tmp);
        tmp = low;
    }
    if (!err && strip) {
        vkpt__buf nfd = {0};
        err = norm_utf8proc(tmp.p ? tmp.p : "", tmp.n, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE, &nfd);
        if (!err) err = norm_filter_marks(nfd.p ? nfd.p : "", nfd.n, true, out);
        vkpt__buf_free(&nfd);
    } else if (!err) {
        err = vkpt__buf_put(out, tmp.p ? tmp.p : "", tmp.n);
    }
    vkpt__buf_free(&tmp);
    return err;
}

/* Hugging Face JS's reading of SentencePiece's precompiled charsmap: drop
 * control characters, map odd spaces to ' ', NFKC (not across U+FF5E). */
static int norm_precompiled(const char *s, size_t n, vkpt__buf *out)
{
    const uint8_t *u = (const uint8_t *)s;
    vkpt__buf tmp = {0};
    int err = vkpt__buf_reserve(&tmp, n);
    for (size_t i = 0; i < n && !err;) {
        uint32_t cp;
        size_t k = vkpt__utf8_next(u + i, n - i, &cp);
        i += k;
        if ((cp >= 1 && cp <= 8) || cp == 0xB || (cp >= 0xE && cp <= 0x1F) || cp == 0x7F ||
            cp == 0x8F || cp == 0x9F)
            continue;
        if (cp == 9 || cp == 0xA || cp == 0xC || cp == 0xD || cp == 0xA0 || cp == 0x1680 ||
            (cp >= 0x2000 && cp <= 0x200F) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
            cp == 0x205F || cp == 0x2581 || cp == 0x3000 || cp == 0xFEFF || cp == 0xFFFD)
            err = vkpt__buf_putc(&tmp, ' ');
        else
            err = vkpt__buf_put(&tmp, u + i - k, k);
    }
    const char *p = tmp.p ? tmp.p : "";
    size_t i = 0;
    while (!err && i <= tmp.n) {
        const char *hit = memmem(p + i, tmp.n - i, "\xEF\xBD\x9E", 3);
        size_t end = hit ? (size_t)(hit - p) : tmp.n;
        err = norm_utf8proc(p + i, end - i, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT,
                            out);
        if (!hit) break;
        if (!err) err = vkpt__buf_put(out, "\xEF\xBD\x9E", 3);
        i = end + 3;
    }
    vkpt__buf_free(&tmp);
    return err;
}

static size_t trim_left_len(const char *s, size_t n, bool js)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = vkpt__utf8_next((const uint8_t *)s + i, n - i, &cp);
        if (!(js ? vkpt__u_is_js_space(cp) : vkpt__u_is_whitespace(cp))) break;
        i += k;
    }
    return i;
}

static size_t trim_right_len(const char *s, size_t n, bool js)
{
    size_t e = n;
    while (e > 0) {
        size_t b = e - 1;
        while (b > 0 && ((uint8_t)s[b] & 0xC0) == 0x80) b--;
        uint32_t cp;
        vkpt__utf8_next((const uint8_t *)s + b, e - b, &cp);
        if (!(js ? vkpt__u_is_js_space(cp) : vkpt__u_is_whitespace(cp))) break;
        e = b;
    }
    return n - e;
}

static bool max_cp_below(const char *s, size_t n, uint32_t limit)
{
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        i += vkpt__utf8_next(u + i, n - i, &cp);
        if (cp >= limit) return false;
    }
    return true;
}

static int norm_one(const vkpt__norm *nm, const char *s, size_t n, vkpt__buf *out)
{
    switch (nm->kind) {
    case VKPT__N_NFC:
        /* text below U+0300 has no combining marks and nothing to compose or
         * decompose: already NFC (most English text takes this path) */
        if (max_cp_below(s, n, 0x300)) return vkpt__buf_put(out, s, n);
        return norm_utf8proc(s, n, UTF8PROC_STABLE | UTF8PROC_COMPOSE, out);
    case VKPT__N_NFD: return norm_utf8proc(s, n, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE, out);
    case VKPT__N_NFKC:
        return norm_utf8proc(s, n, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT, out);
    case VKPT__N_NFKD:
        return norm_utf8proc(s, n, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, out);
    case VKPT__N_LOWER: return norm_lower(s, n, out);
    case VKPT__N_STRIP_ACCENTS: return norm_filter_marks(s, n, false, out);
    case VKPT__N_REPLACE:
        if (nm->re) return norm_replace_re(nm, s, n, out);
        return norm_replace_lit(s, n, nm->str, nm->str_n, nm->content, nm->content_n, out);
    case VKPT__N_PREPEND: {
        int err = n ? vkpt__buf_put(out, nm->str, nm->str_n) : 0;
        return err ? err : vkpt__buf_put(out, s, n);
    }
    case VKPT__N_STRIP: {
        size_t l = nm->left ? trim_left_len(s, n, false) : 0;
        size_t r = nm->right ? trim_right_len(s + l, n - l, false) : 0;
        return vkpt__buf_put(out, s + l, n - l - r);
    }
    case VKPT__N_BERT: return norm_bert(nm, s, n, out);
    case VKPT__N_PRECOMP: return norm_precompiled(s, n, out);
    }
    return vkpt_fail(VKPT_EINVAL, "normalizer kind %d", nm->kind);
}

int vkpt__normalize(const vkpt_tokenizer *t, const char *s, size_t n, vkpt__buf *out)
{
    out->n = 0;
    if (!t->n_norm) return vkpt__buf_put(out, s, n);
    vkpt__buf a = {0};
    int err = vkpt__buf_put(&a, s, n);
    for (int i = 0; i < t->n_norm && !err; i++) {
        out->n = 0;
        if ((err = vkpt__buf_reserve(out, a.n))) break;
        err = norm_one(&t->norm[i], a.p, a.n, out);
        if (!err && i + 1 < t->n_norm) {
            a.n = 0;
            err = vkpt__buf_put(&a, out->p, out->n);
        }
    }
    vkpt__buf_free(&a);
    return err;
}

/* ---- pre-tokenizers ------------------------------------------------------------------
 * Pieces are (offset, length) spans into one text arena; steps that change
 * text (metaspace, prefix spaces) append new text to the arena. */

typedef struct span {
    size_t off, n;
} span;

typedef struct pieces {
    span *v;
    size_t n, cap;
} pieces;

static int pieces_push(pieces *p, size_t off, size_t n)
{
    if (!n) return 0;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        span *v = vkpt_realloc(p->v, cap * sizeof *v);
        if (!v) return vkpt_fail(VKPT_ENOMEM, "pre-tokenizer pieces");
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = (span){off, n};
    return 0;
}

typedef struct seg {
    size_t off, n;
    bool match;
} seg;

/* Emit the segments of one piece following a split behaviour. */
static int emit_segments(pieces *out, const seg *sg, size_t ns, int behaviour)
{
    int err = 0;
    switch (behaviour) {
    case VKPT__SPLIT_REMOVED:
        for (size_t i = 0; i < ns && !err; i++)
            if (!sg[i].match) err = pieces_push(out, sg[i].off, sg[i].n);
        return err;
    case VKPT__SPLIT_ISOLATED:
        for (size_t i = 0; i < ns && !err; i++) err = pieces_push(out, sg[i].off, sg[i].n);
        return err;
    case VKPT__SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < ns && !err;) {
            size_t j = i + 1, end = sg[i].off + sg[i].n;
            if (sg[i].match)
                for (; j < ns && sg[j].match; j++) end = sg[j].off + sg[j].n;
            err = pieces_push(out, sg[i].off, end - sg[i].off);
            i = j;
        }
        return err;
    case VKPT__SPLIT_MERGED_PREV: {
        size_t start = SIZE_MAX, end = 0;
        for (size_t i = 0; i < ns && !err; i++) {
            if (sg[i].match && start != SIZE_MAX) {
                err = pieces_push(out, start, sg[i].off + sg[i].n - start);
                start = SIZE_MAX;
            } else if (sg[i].match) {
                err = pieces_push(out, sg[i].off, sg[i].n);
            } else {
                if (start != SIZE_MAX) err = pieces_push(out, start, end - start);
                start = sg[i].off;
                end = sg[i].off + sg[i].n;
            }
        }
        if (!err && start != SIZE_MAX) err = pieces_push(out, start, end - start);
        return err;
    }
    case VKPT__SPLIT_MERGED_NEXT: {
        size_t start = SIZE_MAX;
        for (size_t i = 0; i < ns && !err; i++) {
            if (sg[i].match) {
                if (start != SIZE_MAX) err = pieces_push(out, start, sg[i].off - start);
                start = sg[i].off;
            } else if (start == SIZE_MAX) {
                start = sg[i].off;
            }
        }
        if (!err && ns && start != SIZE_MAX)
            err = pieces_push(out, start, sg[ns - 1].off + sg[ns - 1].n - start);
        return err;
    }
    }
    return vkpt_fail(VKPT_EINVAL, "split behaviour %d", behaviour);
}

typedef struct segs {
    seg *v;
    size_t n, cap;
} segs;

static int segs_push(segs *s, size_t off, size_t n, bool match)
{
    if (!n) return 0;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        seg *v = vkpt_realloc(s->v, cap * sizeof *v);
        if (!v) return vkpt_fail(VKPT_ENOMEM, "pre-tokenizer segments");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (seg){off, n, match};
    return 0;
}

/* Character-class splitters (punctuation, digits, BERT, whitespace). */
enum { CC_OTHER, CC_SPACE, CC_PUNCT, CC_DIGIT };

static int classify(int kind, uint32_t cp)
{
    switch (kind) {
    case VKPT__P_BERT:
        if (vkpt__u_is_whitespace(cp)) return CC_SPACE;
        return vkpt__u_is_bert_punct(cp) ? CC_PUNCT : CC_OTHER;
    case VKPT__P_PUNCT: return vkpt__u_is_bert_punct(cp) ? CC_PUNCT : CC_OTHER;
    case VKPT__P_DIGITS: {
        utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
        return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO
                   ? CC_DIGIT
                   : CC_OTHER;
    }
    case VKPT__P_WSPLIT: return vkpt__u_is_whitespace(cp) ? CC_SPACE : CC_OTHER;
    }
    return CC_OTHER;
}

typedef struct pre_ctx {
    vkpt__buf *text;
    void *md; /* pcre2 match data, sized for the largest pattern */
    segs sg;
    int section;
} pre_ctx;

static int pre_step(const vkpt__pre *p, pre_ctx *cx, const pieces *in, pieces *out)
{
    int err = 0;
    out->n = 0;
    for (size_t pi = 0; pi < in->n && !err; pi++) {
        span sp = in->v[pi];
        cx->sg.n = 0;
        switch (p->kind) {
        case VKPT__P_SPLIT:
        case VKPT__P_WHITESPACE: {
            const char *s = cx->text->p + sp.off;
            size_t i = 0, ms = 0, me = 0;
            bool invert = p->kind == VKPT__P_SPLIT && p->invert;
            int beh = p->kind == VKPT__P_WHITESPACE ? VKPT__SPLIT_REMOVED : p->behaviour;
            bool ws = p->kind == VKPT__P_WHITESPACE;
            for (;;) {
                bool found;
                if (p->re) {
                    found = re_next(p->re, cx->md, s, sp.n, i, &ms, &me);
                } else {
                    const char *h =
                        p->lit_n && i < sp.n ? memmem(s + i, sp.n - i, p->lit, p->lit_n) : NULL;
                    found = h != NULL;
                    if (found) {
                        ms = (size_t)(h - s);
                        me = ms + p->lit_n;
                    }
                }
                if (!found) break;
                /* Whitespace keeps the matches of \w+|[^\w\s]+ and drops the rest */
                if ((err = segs_push(&cx->sg, sp.off + i, ms - i, ws ? true : invert))) break;
                if ((err = segs_push(&cx->sg, sp.off + ms, me - ms, ws ? false : !invert))) break;
                i = me;
            }
            if (!err) err = segs_push(&cx->sg, sp.off + i, sp.n - i, ws ? true : invert);
            if (!err) err = emit_segments(out, cx->sg.v, cx->sg.n, beh);
            break;
        }
        case VKPT__P_BYTELEVEL: {
            size_t off = sp.off, n = sp.n;
            if (p->add_prefix_space && !(n && cx->text->p[off] == ' ')) {
                size_t noff = cx->text->n;
                if ((err = vkpt__buf_reserve(cx->text, n + 1))) break;
                cx->text->p[cx->text->n++] = ' ';
                memcpy(cx->text->p + cx->text->n, cx->text->p + off, n);
                cx->text->n += n;
                off = noff;
                n++;
            }
            if (!p->re) {
                err = pieces_push(out, off, n);
                break;
            }
            const char *s = cx->text->p + off;
            size_t i = 0, ms, me;
            while (!err && re_next(p->re, cx->md, s, n, i, &ms, &me)) {
                if (ms > i) err = pieces_push(out, off + i, ms - i);
                if (!err) err = pieces_push(out, off + ms, me - ms);
                i = me;
            }
            if (!err && i < n) err = pieces_push(out, off + i, n - i);
            break;
        }
        case VKPT__P_METASPACE: {
            /* replace ' ' by the replacement, maybe prepend it, maybe split */
            size_t noff = cx->text->n;
            bool prepend = p->prepend == VKPT__PREPEND_ALWAYS ||
                           (p->prepend == VKPT__PREPEND_FIRST && cx->section == 0 && pi == 0);
            const char *s = cx->text->p + sp.off;
            bool starts = sp.n >= p->repl_n && !memcmp(s, p->repl, p->repl_n);
            if ((err = vkpt__buf_reserve(cx->text, sp.n * p->repl_n + p->repl_n))) break;
            s = cx->text->p + sp.off;
            char *o = cx->text->p + cx->text->n;
            size_t k = 0;
            if (prepend && !(starts || (sp.n && s[0] == ' '))) {
                memcpy(o, p->repl, p->repl_n);
                k += p->repl_n;
            }
            for (size_t i = 0; i < sp.n; i++) {
                if (s[i] == ' ') {
                    memcpy(o + k, p->repl, p->repl_n);
                    k += p->repl_n;
                } else {
                    o[k++] = s[i];
                }
            }
            cx->text->n += k;
            if (!p->split) {
                err = pieces_push(out, noff, k);
                break;
            }
            size_t start = 0;
            const char *q = cx->text->p + noff;
            for (size_t i = 0; i + p->repl_n <= k; i++) {
                if (i > start && !memcmp(q + i, p->repl, p->repl_n)) {
                    if ((err = pieces_push(out, noff + start, i - start))) break;
                    start = i;
                }
            }
            if (!err) err = pieces_push(out, noff + start, k - start);
            break;
        }
        case VKPT__P_BERT:
        case VKPT__P_PUNCT:
        case VKPT__P_DIGITS:
        case VKPT__P_WSPLIT: {
            const uint8_t *s = (const uint8_t *)cx->text->p + sp.off;
            size_t i = 0, run = 0;
            int run_cc = -1;
            while (i < sp.n && !err) {
                uint32_t cp;
                size_t k = vkpt__utf8_next(s + i, sp.n - i, &cp);
                int cc = classify(p->kind, cp);
                bool single =
                    (p->kind == VKPT__P_BERT || p->kind == VKPT__P_PUNCT) && cc == CC_PUNCT;
                single = single || (p->kind == VKPT__P_DIGITS && p->individual && cc == CC_DIGIT);
                if (cc != run_cc || single) {
                    if (run_cc >= 0 && run_cc != CC_SPACE)
                        err = segs_push(&cx->sg, sp.off + run, i - run, run_cc != CC_OTHER);
                    run = i;
                    run_cc = cc;
                }
                if (single) {
                    err = err ? err : segs_push(&cx->sg, sp.off + i, k, true);
                    run = i + k;
                    run_cc = -1;
                }
                i += k;
            }
            if (!err && run_cc >= 0 && run_cc != CC_SPACE)
                err = segs_push(&cx->sg, sp.off + run, sp.n - run, run_cc != CC_OTHER);
            int beh = p->kind == VKPT__P_PUNCT ? p->behaviour : VKPT__SPLIT_ISOLATED;
            if (!err) err = emit_segments(out, cx->sg.v, cx->sg.n, beh);
            break;
        }
        default: err = vkpt_fail(VKPT_EINVAL, "pre-tokenizer kind %d", p->kind);
        }
    }
    return err;
}

/* ---- encode ------------------------------------------------------------------------ */

void vkpt_tokens_free(vkpt_tokens *v)
{
    if (!v) return;
    vkpt_free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

int vkpt_tokens_push(vkpt_tokens *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = vkpt_realloc(v->ids, cap * sizeof *p);
        if (!p) return vkpt_fail(VKPT_ENOMEM, "token array of %zu", cap);
        v->ids = p;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

typedef struct enc_ctx {
    const vkpt_tokenizer *t;
    unsigned flags;
    pieces pa, pb;
    pre_ctx pc;
    vkpt__buf norm;
    vkpt__model_scratch ms;
    vkpt_tokens *out;
} enc_ctx;

/* One text section (between added tokens), after normalization. */
static int encode_text(enc_ctx *c, const char *s, size_t n, int section)
{
    const vkpt_tokenizer *t = c->t;
    vkpt__buf *text = c->pc.text;
    text->n = 0;
    int err = vkpt__buf_put(text, s, n);
    if (err) return err;
    c->pa.n = 0;
    if ((err = pieces_push(&c->pa, 0, n))) return err;
    c->pc.section = section;
    pieces *in = &c->pa, *out = &c->pb;
    for (int i = 0; i < t->n_pre; i++) {
        if ((err = pre_step(&t->pre[i], &c->pc, in, out))) return err;
        pieces *tmp = in;
        in = out;
        out = tmp;
    }
    for (size_t i = 0; i < in->n && !err; i++)
        err = vkpt__model_encode(t, &c->ms, text->p + in->v[i].off, in->v[i].n, c->out);
    return err;
}

typedef struct sect {
    size_t off, n;
    int added; /* index into t->added, or -1 for text */
} sect;

typedef struct sects {
    sect *v;
    size_t n, cap;
} sects;

static int sects_push(sects *s, size_t off, size_t n, int added)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        sect *v = vkpt_realloc(s->v, cap * sizeof *v);
        if (!v) return vkpt_fail(VKPT_ENOMEM, "sections");
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (sect){off, n, added};
    return 0;
}

/* Split s at added tokens of `tr`, then apply lstrip/rstrip to neighbours. */
static int split_added(const vkpt_tokenizer *t, const vkpt__trie *tr, const char *s, size_t n,
                       bool parse_special, sects *out)
{
    out->n = 0;
    size_t start = 0;
    int err = 0;
    if (tr->any) {
        for (size_t i = 0; i < n && !err;) {
            int a = -1;
            size_t len = trie_match(t, tr, (const uint8_t *)s + i, n - i, parse_special, &a);
            if (!len) {
                i++;
                continue;
            }
            if (i > start) err = sects_push(out, start, i - start, -1);
            if (!err) err = sects_push(out, i, len, a);
            i += len;
            start = i;
        }
    }
    if (!err && start < n) err = sects_push(out, start, n - start, -1);
    if (err) return err;
    for (size_t i = 0; i < out->n; i++) {
        if (out->v[i].added < 0) continue;
        const vkpt__added *ad = &t->added[out->v[i].added];
        if (ad->lstrip && i > 0 && out->v[i - 1].added < 0) {
            sect *p = &out->v[i - 1];
            p->n -= trim_right_len(s + p->off, p->n, true);
        }
        if (ad->rstrip && i + 1 < out->n && out->v[i + 1].added < 0) {
            sect *q = &out->v[i + 1];
            size_t l = trim_left_len(s + q->off, q->n, true);
            q->off += l;
            q->n -= l;
        }
    }
    return 0;
}

int vkpt_tokenizer_encode(const vkpt_tokenizer *t, const char *text, size_t len, unsigned flags,
                          vkpt_tokens *out)
{
    if (!t || (!text && len) || !out) return vkpt_fail(VKPT_EINVAL, "encode: NULL argument");
    enc_ctx c = {.t = t, .flags = flags, .out = out};
    vkpt__buf clean = {0}, ptext = {0};
    sects top = {0}, sub = {0};
    int err = 0;
    c.pc.text = &ptext;
    if (vkpt__utf8_valid_prefix((const uint8_t *)text, len) != len) {
        if ((err = vkpt__utf8_sanitize(&clean, text, len))) goto out;
        text = clean.p;
        len = clean.n;
    }
    size_t max_groups = 1;
    for (int i = 0; i < t->n_pre; i++)
        if (t->pre[i].re) {
            uint32_t cnt = 0;
            pcre2_pattern_info((pcre2_code *)t->pre[i].re, PCRE2_INFO_CAPTURECOUNT, &cnt);
            if (cnt + 1 > max_groups) max_groups = cnt + 1;
        }
    c.pc.md = pcre2_match_data_create((uint32_t)max_groups, NULL);
    if (!c.pc.md) {
        err = vkpt_fail(VKPT_ENOMEM, "regex match data");
        goto out;
    }
    if ((err = vkpt__model_scratch_init(&c.ms, t, len))) goto out;
    if (flags & VKPT_TOK_ADD_SPECIAL)
        for (int i = 0; i < t->n_post_prefix && !err; i++)
            err = vkpt_tokens_push(out, t->post_prefix[i]);
    bool ps = (flags & VKPT_TOK_PARSE_SPECIAL) != 0;
    if (!err) err = split_added(t, &t->trie_raw, text, len, ps, &top);
    for (size_t i = 0; i < top.n && !err; i++) {
        sect sc = top.v[i];
        if (sc.added >= 0) {
            err = vkpt_tokens_push(out, t->added[sc.added].id);
            continue;
        }
        if (!sc.n) continue;
        if (!t->n_norm) {
            err = encode_text(&c, text + sc.off, sc.n, (int)i);
            continue;
        }
        if ((err = vkpt__normalize(t, text + sc.off, sc.n, &c.norm))) break;
        if (!c.norm.n) continue;
        if ((err = split_added(t, &t->trie_norm, c.norm.p, c.norm.n, ps, &sub))) break;
        /* encode_text reuses the arena, so copy the normalized text aside */
        vkpt__buf nt = c.norm;
        c.norm = (vkpt__buf){0};
        for (size_t j = 0; j < sub.n && !err; j++) {
            if (sub.v[j].added >= 0)
                err = vkpt_tokens_push(out, t->added[sub.v[j].added].id);
            else if (sub.v[j].n)
                err = encode_text(&c, nt.p + sub.v[j].off, sub.v[j].n, (int)i);
        }
        vkpt__buf_free(&nt);
    }
    if (flags & VKPT_TOK_ADD_SPECIAL)
        for (int i = 0; i < t->n_post_suffix && !err; i++)
            err = vkpt_tokens_push(out, t->post_suffix[i]);
out:
    if (c.pc.md) pcre2_match_data_free((pcre2_match_data *)c.pc.md);
    vkpt__model_scratch_free(&c.ms);
    vkpt_free(c.pa.v);
    vkpt_free(c.pb.v);
    vkpt_free(c.pc.sg.v);
    vkpt_free(top.v);
    vkpt_free(sub.v);
    vkpt__buf_free(&c.norm);
    vkpt__buf_free(&ptext);
    vkpt__buf_free(&clean);
    return err;
}

/* ---- finishing a loaded tokenizer -------------------------------------------------- */

static bool added_is(const vkpt_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && (t->pflags[id] & VKPT__PF_ADDED);
}

static void eog_add(vkpt_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab || t->n_eog >= VKPT__MAX_EOG) return;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    t->eog[t->n_eog++] = id;
}

int vkpt__tok_index(vkpt_tokenizer *t)
{
    if (t->vocab.slots) return 0;
    /* model tokens first, then added tokens (they win) */
    int err = strmap_init(&t->vocab, (size_t)t->n_vocab);
    if (err) return err;
    for (int32_t i = 0; i < t->n_vocab; i++)
        if (!(t->pflags[i] & (VKPT__PF_UNUSED | VKPT__PF_ADDED)))
            strmap_put(&t->vocab, t->tok_pool, t->tok_off, t->tok_len, i);
    for (int a = 0; a < t->n_added; a++) {
        int32_t id = t->added[a].id;
        if (id >= 0 && id < t->n_vocab && !(t->pflags[id] & VKPT__PF_UNUSED))
            strmap_put(&t->vocab, t->tok_pool, t->tok_off, t->tok_len, id);
    }
    return 0;
}

/* Byte-level vocabularies: raw bytes -> id, for ignore_merges lookups. */
static int build_raw_map(vkpt_tokenizer *t)
{
    size_t n = (size_t)t->n_vocab;
    t->raw_off = vkpt_calloc(n, sizeof *t->raw_off);
    t->raw_len = vkpt_calloc(n, sizeof *t->raw_len);
    vkpt__buf pool = {0};
    int err = !t->raw_off || !t->raw_len ? vkpt_fail(VKPT_ENOMEM, "raw vocabulary") : 0;
    if (!err) err = strmap_init(&t->raw, n);
    for (size_t i = 0; i < n && !err; i++) {
        t->raw_off[i] = (uint32_t)pool.n;
        if (t->pflags[i] & (VKPT__PF_UNUSED | VKPT__PF_ADDED)) continue;
        const uint8_t *s = (const uint8_t *)t->tok_pool + t->tok_off[i];
        size_t len = t->tok_len[i], start = pool.n;
        bool ok = len > 0;
        for (size_t k = 0; k < len && ok && !err;) {
            uint32_t cp;
            k += vkpt__utf8_next(s + k, len - k, &cp);
            int b = vkpt__cp_to_byte(cp);
            if (b < 0)
                ok = false;
            else
                err = vkpt__buf_putc(&pool, (char)b);
        }
        if (!ok) pool.n = start;
        t->raw_len[i] = (uint32_t)(pool.n - start);
    }
    if (!err) {
        t->raw_pool = vkpt__buf_take(&pool, NULL);
        if (!t->raw_pool) err = vkpt_fail(VKPT_ENOMEM, "raw vocabulary");
    }
    for (size_t i = 0; i < n && !err; i++)
        if (t->raw_len[i]) strmap_put(&t->raw, t->raw_pool, t->raw_off, t->raw_len, (int32_t)i);
    vkpt__buf_free(&pool);
    return err;
}

/* Merges cannot cross a "▁" that follows a character c unless some token
 * holds c"▁": collect those c (few or none in SentencePiece vocabularies;
 * Gemma 3 has one, ">▁</"). Words split at the other "▁"s encode exactly as
 * the whole piece does. Not for vocabularies where word ends matter
 * (prefix/suffix rules, ignore_merges) or where "▁" is not a token. */
static void meta_bounds(vkpt_tokenizer *t)
{
    t->meta_split = false;
    t->n_meta_unsafe = 0;
    if (t->byte_level || t->model == VKPT__M_WORDPIECE || t->cont_prefix_n || t->eow_suffix_n ||
        t->ignore_merges || vkpt__vocab_get(t, "\xE2\x96\x81", 3) < 0)
        return;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (t->pflags[i] & VKPT__PF_UNUSED) continue;
        const char *s = t->tok_pool + t->tok_off[i];
        size_t n = t->tok_len[i];
        for (size_t k = 1; k + 3 <= n; k++) {
            if (memcmp(s + k, "\xE2\x96\x81", 3)) continue;
            size_t b = k - 1;
            while (b > 0 && ((uint8_t)s[b] & 0xC0) == 0x80) b--;
            uint32_t cp;
            vkpt__utf8_next((const uint8_t *)s + b, k - b, &cp);
            if (cp == 0x2581) continue;
            bool known = false;
            for (int u = 0; u < t->n_meta_unsafe; u++) known = known || t->meta_unsafe[u] == cp;
            if (known) continue;
            if (t->n_meta_unsafe == VKPT__MAX_META_UNSAFE) return;
            t->meta_unsafe[t->n_meta_unsafe++] = cp;
        }
    }
    t->meta_split = true;
}

int vkpt__tok_finish(vkpt_tokenizer *t)
{
    int err;
    if ((err = vkpt__tok_index(t))) return err;
    if (t->byte_level && t->ignore_merges && (err = build_raw_map(t))) return err;
    if (t->model == VKPT__M_WORDPIECE && (err = trie_build_vocab(t))) return err;
    /* normalized contents of added tokens */
    for (int a = 0; a < t->n_added; a++) {
        vkpt__added *ad = &t->added[a];
        if (!ad->normalized || !t->n_norm) continue;
        vkpt__buf b = {0};
        if ((err = vkpt__normalize(t, ad->content, ad->n, &b))) {
            vkpt__buf_free(&b);
            return err;
        }
        ad->norm = vkpt__buf_take(&b, &ad->norm_n);
        if (!ad->norm) return vkpt_fail(VKPT_ENOMEM, "added token");
    }
    if ((err = trie_build(&t->trie_raw, t, false))) return err;
    if ((err = trie_build(&t->trie_norm, t, true))) return err;
    /* byte tables */
    for (int b = 0; b < 256; b++) {
        char tmp[8];
        if (t->byte_level) {
            size_t k = vkpt__utf8_put(vkpt__byte_to_cp((uint8_t)b), tmp);
            t->byte_tok[b] = vkpt__vocab_get(t, tmp, k);
        } else {
            snprintf(tmp, sizeof tmp, "<0x%02X>", b);
            t->byte_tok[b] = vkpt__vocab_get(t, tmp, 6);
        }
    }
    if ((err = vkpt__tok_build_pieces(t))) return err;
    meta_bounds(t);
    /* end-of-generation ids */
    eog_add(t, t->sp.eos);
    static const char *const ends[] = {
        "<|eot_id|>", "<|im_end|>",    "<end_of_turn>",   "<|eom_id|>",
        "<|end|>",    "<|endoftext|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>",
        "<|return|>", "<|call|>",      "<eos>",           "<EOT>"};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++) {
        int32_t id = vkpt__vocab_get(t, ends[i], strlen(ends[i]));
        if (added_is(t, id) && (t->pflags[id] & VKPT__PF_SPECIAL)) eog_add(t, id);
    }
    return 0;
}

void vkpt__tok_add_eog(vkpt_tokenizer *t, int32_t id)
{
    eog_add(t, id);
}

/* ---- accessors ------------------------------------------------------------------------ */

int32_t vkpt_tokenizer_n_vocab(const vkpt_tokenizer *t)
{
    return t->n_vocab;
}

vkpt_span vkpt_tokenizer_token(const vkpt_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab || (t->pflags[id] & VKPT__PF_UNUSED))
        return (vkpt_span){NULL, 0};
    return (vkpt_span){t->tok_pool + t->tok_off[id], t->tok_len[id]};
}

vkpt_span vkpt_tokenizer_piece(const vkpt_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab || (t->pflags[id] & VKPT__PF_UNUSED))
        return (vkpt_span){NULL, 0};
    return (vkpt_span){t->piece_pool + t->piece_off[id], t->piece_len[id]};
}

int32_t vkpt_tokenizer_find(const vkpt_tokenizer *t, const char *s, size_t n)
{
    return vkpt__vocab_get(t, s, n);
}

bool vkpt_tokenizer_is_special(const vkpt_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && (t->pflags[id] & VKPT__PF_SPECIAL);
}

const vkpt_tokenizer_specials *vkpt_tokenizer_get_specials(const vkpt_tokenizer *t)
{
    return &t->sp;
}

size_t vkpt_tokenizer_eog(const vkpt_tokenizer *t, const int32_t **ids)
{
    *ids = t->eog;
    return (size_t)t->n_eog;
}

bool vkpt_tokenizer_is_eog(const vkpt_tokenizer *t, int32_t id)
{
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

const char *vkpt_tokenizer_kind(const vkpt_tokenizer *t)
{
    return t->kind ? t->kind : "unknown";
}

/* ---- creation and destruction ------------------------------------------------------------ */

void vkpt_tokenizer_destroy(vkpt_tokenizer *t)
{
    if (!t) return;
    vkpt_free(t->tok_pool);
    vkpt_free(t->tok_off);
    vkpt_free(t->tok_len);
    vkpt_free(t->scores);
    vkpt_free(t->piece_pool);
    vkpt_free(t->piece_off);
    vkpt_free(t->piece_len);
    vkpt_free(t->pflags);
    vkpt_free(t->vocab.slots);
    vkpt_free(t->raw.slots);
    vkpt_free(t->raw_pool);
    vkpt_free(t->raw_off);
    vkpt_free(t->raw_len);
    vkpt_free(t->merges);
    vkpt_free(t->cont_prefix);
    vkpt_free(t->eow_suffix);
    for (int i = 0; i < t->n_norm; i++) {
        vkpt_free(t->norm[i].str);
        vkpt_free(t->norm[i].content);
        vkpt__re_free(t->norm[i].re);
    }
    vkpt_free(t->norm);
    for (int i = 0; i < t->n_pre; i++) {
        vkpt__re_free(t->pre[i].re);
        vkpt_free(t->pre[i].lit);
    }
    vkpt_free(t->pre);
    vkpt_free(t->post_prefix);
    vkpt_free(t->post_suffix);
    for (int i = 0; i < t->n_dec; i++) {
        vkpt_free(t->dec[i].str);
        vkpt_free(t->dec[i].content);
    }
    vkpt_free(t->dec);
    for (int i = 0; i < t->n_added; i++) {
        vkpt_free(t->added[i].content);
        vkpt_free(t->added[i].norm);
    }
    vkpt_free(t->added);
    trie_free(&t->trie_raw);
    trie_free(&t->trie_norm);
    trie_free(&t->vocab_trie);
    for (int i = 0; i < 7; i++) vkpt_free(t->tok_strings[i]);
    for (int i = 0; i < t->n_extra_special; i++) vkpt_free(t->extra_special[i]);
    vkpt_free(t->extra_special);
    vkpt_chat_template_destroy(t->tpl);
    vkpt_chat_template_destroy(t->tpl_tools);
    vkpt_free(t);
}

static vkpt_tokenizer *tok_new(void)
{
    vkpt_tokenizer *t = vkpt_calloc(1, sizeof *t);
    if (!t) return NULL;
    t->unk = -1;
    t->sp = (vkpt_tokenizer_specials){-1, -1, -1, -1, -1, -1, -1};
    t->wp_max_chars = 100;
    return t;
}

int vkpt_tokenizer_create_json(const char *tokenizer_json, size_t tokenizer_len,
                               const char *config_json, size_t config_len,
                               const char *generation_json, size_t generation_len,
                               vkpt_tokenizer **out)
{
    if (!tokenizer_json || !out) return vkpt_fail(VKPT_EINVAL, "tokenizer: NULL argument");
    *out = NULL;
    vkpt_tokenizer *t = tok_new();
    if (!t) return vkpt_fail(VKPT_ENOMEM, "tokenizer");
    int err = vkpt__tok_load_hf(t, tokenizer_json, tokenizer_len, config_json, config_len,
                                generation_json, generation_len);
    if (err) {
        vkpt_tokenizer_destroy(t);
        return err;
    }
    *out = t;
    return 0;
}

int vkpt_tokenizer_create_gguf(const vkpt_gguf *g, vkpt_tokenizer **out)
{
    if (!g || !out) return vkpt_fail(VKPT_EINVAL, "tokenizer: NULL argument");
    *out = NULL;
    vkpt_tokenizer *t = tok_new();
    if (!t) return vkpt_fail(VKPT_ENOMEM, "tokenizer");
    int err = vkpt__tok_load_gguf(t, g);
    if (err) {
        vkpt_tokenizer_destroy(t);
        return err;
    }
    *out = t;
    return 0;
}
