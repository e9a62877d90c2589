/* engine/tokenizer models.
 *
 * BPE (merge ranks): the piece starts as one symbol per byte (byte-level
 * vocabularies) or per character (others, with byte fallback or unk for
 * characters outside the vocabulary); then the adjacent pair with the lowest
 * merge rank is merged, leftmost first on ties, until no pair has a merge.
 * A binary heap of candidate pairs with lazy invalidation makes that
 * O(n log n) in the piece length, so a 1 MB piece with no spaces is fine.
 * This is Hugging Face's and llama.cpp's algorithm.
 *
 * SPM (scores): llama.cpp's SentencePiece-BPE for GGUF "llama" vocabularies:
 * merge the adjacent pair whose concatenation is a token with the highest
 * score, leftmost first on ties; symbols that are not tokens at the end come
 * out as <0xNN> byte tokens.
 *
 * WordPiece: greedy longest match from the start of the word, continuation
 * pieces prefixed (##); a word with an unmatched rest is one unk.
 */
#include "tok_model.h"

#include <stdlib.h>

/* Candidate merges are only their key, (rank or inverted score) << 32 |
 * left position: small entries keep the heap in cache. A popped key is
 * checked against the pair now at that position (same rank, or same score
 * for SentencePiece) and dropped when stale; a pair that looks the same
 * has its own entry with the same key, so merging it now changes nothing. */
static int heap_push(vkpt__model_scratch *s, uint64_t key)
{
    if (s->heap_n == s->heap_cap) {
        size_t cap = s->heap_cap ? s->heap_cap * 2 : 256;
        uint64_t *h = vkpt_realloc(s->heap, cap * sizeof *h);
        if (!h) return vkpt_fail(VKPT_ENOMEM, "BPE heap of %zu", cap);
        s->heap = h;
        s->heap_cap = cap;
    }
    size_t i = s->heap_n++;
    uint64_t *h = s->heap;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= key) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = key;
    return 0;
}

static uint64_t heap_pop(vkpt__model_scratch *s)
{
    uint64_t *h = s->heap;
    uint64_t top = h[0], last = h[--s->heap_n];
    size_t n = s->heap_n, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (h[c] >= last) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = last;
    return top;
}

static int sym_reserve(vkpt__model_scratch *s, size_t n)
{
    if (n <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < n) cap *= 2;
    int32_t *id = vkpt_realloc(s->id, cap * sizeof *id);
    if (id) s->id = id;
    int32_t *prev = vkpt_realloc(s->prev, cap * sizeof *prev);
    if (prev) s->prev = prev;
    int32_t *next = vkpt_realloc(s->next, cap * sizeof *next);
    if (next) s->next = next;
    uint32_t *len = vkpt_realloc(s->len, cap * sizeof *len);
    if (len) s->len = len;
    uint32_t *pos = vkpt_realloc(s->pos, cap * sizeof *pos);
    if (pos) s->pos = pos;
    if (!id || !prev || !next || !len || !pos) return vkpt_fail(VKPT_ENOMEM, "%zu symbols", cap);
    s->cap = cap;
    return 0;
}

#define CACHE_WORD_MAX 48

int vkpt__model_scratch_init(vkpt__model_scratch *s, const vkpt_tokenizer *t, size_t input_len)
{
    memset(s, 0, sizeof *s);
    /* Long inputs repeat their words: remember the ids of short ones. */
    if (t->model != VKPT__M_WORDPIECE && input_len >= 4096) {
        uint32_t n = input_len >= (1u << 20) ? 1u << 15 : 1u << 12;
        s->cache = vkpt_calloc(n, sizeof *s->cache);
        s->cache_text = vkpt_malloc((size_t)n * CACHE_WORD_MAX);
        if (!s->cache || !s->cache_text) {
            vkpt_free(s->cache);
            vkpt_free(s->cache_text);
            s->cache = NULL;
            s->cache_text = NULL;
        } else {
            s->cache_mask = n - 1;
        }
    }
    return 0;
}

void vkpt__model_scratch_free(vkpt__model_scratch *s)
{
    vkpt_free(s->id);
    vkpt_free(s->prev);
    vkpt_free(s->next);
    vkpt_free(s->len);
    vkpt_free(s->pos);
    vkpt_free(s->heap);
    vkpt_free(s->cache);
    vkpt_free(s->cache_text);
    vkpt__buf_free(&s->tmp);
    memset(s, 0, sizeof *s);
}

/* ---- BPE with merge ranks ---------------------------------------------------------- */

static int bpe_try_pair(const vkpt_tokenizer *t, vkpt__model_scratch *s, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return 0;
    const vkpt__merge *m = vkpt__merge_get(t, s->id[l], s->id[r]);
    if (!m) return 0;
    return heap_push(s, (uint64_t)m->rank << 32 | (uint32_t)l);
}

/* Initial symbols of a non-byte-level word: one per character, with the
 * continuation prefix / end-of-word suffix, byte fallback and fused unk
 * exactly as Hugging Face's BPE::merge_word. */
static int bpe_init_chars(const vkpt_tokenizer *t, vkpt__model_scratch *s, const char *p, size_t n,
                          size_t *ns_out)
{
    size_t ns = 0;
    bool pending_unk = false;
    const uint8_t *u = (const uint8_t *)p;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = vkpt__utf8_next(u + i, n - i, &cp);
        bool first = i == 0, last = i + k == n;
        const char *q = p + i;
        size_t qn = k;
        if ((!first && t->cont_prefix_n) || (last && t->eow_suffix_n)) {
            s->tmp.n = 0;
            int err = 0;
            if (!first && t->cont_prefix_n)
                err = vkpt__buf_put(&s->tmp, t->cont_prefix, t->cont_prefix_n);
            if (!err) err = vkpt__buf_put(&s->tmp, p + i, k);
            if (!err && last && t->eow_suffix_n)
                err = vkpt__buf_put(&s->tmp, t->eow_suffix, t->eow_suffix_n);
            if (err) return err;
            q = s->tmp.p;
            qn = s->tmp.n;
        }
        int32_t id = vkpt__vocab_get(t, q, qn);
        i += k;
        if (id >= 0) {
            if (pending_unk) s->id[ns++] = t->unk;
            pending_unk = false;
            s->id[ns++] = id;
            continue;
        }
        if (t->byte_fallback) {
            bool all = true;
            for (size_t b = 0; b < qn; b++) all = all && t->byte_tok[(uint8_t)q[b]] >= 0;
            if (all) {
                if (pending_unk) s->id[ns++] = t->unk;
                pending_unk = false;
                if (sym_reserve(s, ns + qn + (n - i) + 2)) return VKPT_ENOMEM;
                for (size_t b = 0; b < qn; b++) s->id[ns++] = t->byte_tok[(uint8_t)q[b]];
                continue;
            }
        }
        if (t->unk >= 0) {
            if (pending_unk && !t->fuse_unk) s->id[ns++] = t->unk;
            pending_unk = true;
        }
    }
    if (pending_unk) s->id[ns++] = t->unk;
    *ns_out = ns;
    return 0;
}

static int cache_get(vkpt__model_scratch *s, uint64_t h, const char *p, size_t n, vkpt_tokens *out)
{
    vkpt__wcache_ent *e = &s->cache[h & s->cache_mask];
    if (e->hash != h || e->text_n != n || !e->n_ids) return 0;
    if (memcmp(s->cache_text + (size_t)(h & s->cache_mask) * CACHE_WORD_MAX, p, n)) return 0;
    for (uint16_t i = 0; i < e->n_ids; i++)
        if (vkpt_tokens_push(out, e->ids[i])) return -1;
    return 1;
}

static void cache_put(vkpt__model_scratch *s, uint64_t h, const char *p, size_t n,
                      const int32_t *ids, size_t k)
{
    if (k > 12 || n > CACHE_WORD_MAX) return;
    vkpt__wcache_ent *e = &s->cache[h & s->cache_mask];
    e->hash = h;
    e->text_n = (uint16_t)n;
    e->n_ids = (uint16_t)k;
    memcpy(e->ids, ids, k * sizeof *ids);
    memcpy(s->cache_text + (size_t)(h & s->cache_mask) * CACHE_WORD_MAX, p, n);
}

static int bpe_word(const vkpt_tokenizer *t, vkpt__model_scratch *s, const char *p, size_t n,
                    vkpt_tokens *out)
{
    int err = sym_reserve(s, n + 2);
    if (err) return err;
    size_t ns = 0;
    if (t->byte_level) {
        for (size_t i = 0; i < n; i++) {
            int32_t id = t->byte_tok[(uint8_t)p[i]];
            if (id < 0) id = t->unk;
            if (id >= 0) s->id[ns++] = id;
        }
    } else if ((err = bpe_init_chars(t, s, p, n, &ns))) {
        return err;
    }
    for (size_t i = 0; i < ns; i++) {
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < ns ? (int32_t)i + 1 : -1;
    }
    s->heap_n = 0;
    for (size_t i = 0; i + 1 < ns; i++)
        if ((err = bpe_try_pair(t, s, (int32_t)i, (int32_t)i + 1))) return err;
    while (s->heap_n) {
        uint64_t key = heap_pop(s);
        int32_t l = (int32_t)(uint32_t)key, r = s->id[l] >= 0 ? s->next[l] : -1;
        if (r < 0) continue;
        const vkpt__merge *m = vkpt__merge_get(t, s->id[l], s->id[r]);
        if (!m || m->rank != (uint32_t)(key >> 32)) continue;
        s->id[l] = m->id;
        s->id[r] = -1;
        s->next[l] = s->next[r];
        if (s->next[r] >= 0) s->prev[s->next[r]] = l;
        if ((err = bpe_try_pair(t, s, s->prev[l], l))) return err;
        if ((err = bpe_try_pair(t, s, l, s->next[l]))) return err;
    }
    for (int32_t i = ns ? 0 : -1; i >= 0; i = s->next[i])
        if ((err = vkpt_tokens_push(out, s->id[i]))) return err;
    return 0;
}

/* ---- SentencePiece BPE with scores (llama.cpp's SPM) ------------------------------ */

static uint32_t score_key(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending float order */
    return ~u;                                      /* highest score first */
}

static int spm_try_pair(const vkpt_tokenizer *t, vkpt__model_scratch *s, const char *p, int32_t l,
                        int32_t r)
{
    if (l < 0 || r < 0) return 0;
    uint32_t size = s->len[l] + s->len[r];
    int32_t id = vkpt__vocab_get(t, p + s->pos[l], size);
    if (id < 0) return 0;
    return heap_push(s, (uint64_t)score_key(t->scores ? t->scores[id] : 0.0f) << 32 | (uint32_t)l);
}

static int spm_word(const vkpt_tokenizer *t, vkpt__model_scratch *s, const char *p, size_t n,
                    vkpt_tokens *out)
{
    int err = sym_reserve(s, n + 2);
    if (err) return err;
    size_t ns = 0;
    static const uint8_t lens[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    for (size_t i = 0; i < n;) {
        size_t k = lens[(uint8_t)p[i] >> 4];
        if (k > n - i) k = n - i;
        s->pos[ns] = (uint32_t)i;
        s->len[ns] = (uint32_t)k;
        s->prev[ns] = (int32_t)ns - 1;
        ns++;
        i += k;
    }
    for (size_t i = 0; i < ns; i++) s->next[i] = i + 1 < ns ? (int32_t)i + 1 : -1;
    s->heap_n = 0;
    for (size_t i = 1; i < ns; i++)
        if ((err = spm_try_pair(t, s, p, (int32_t)i - 1, (int32_t)i))) return err;
    while (s->heap_n) {
        uint64_t key = heap_pop(s);
        int32_t l = (int32_t)(uint32_t)key, r = s->len[l] ? s->next[l] : -1;
        if (r < 0) continue;
        int32_t id = vkpt__vocab_get(t, p + s->pos[l], s->len[l] + s->len[r]);
        if (id < 0 || score_key(t->scores ? t->scores[id] : 0.0f) != (uint32_t)(key >> 32))
            continue;
        s->len[l] += s->len[r];
        s->len[r] = 0;
        s->next[l] = s->next[r];
        if (s->next[r] >= 0) s->prev[s->next[r]] = l;
        if ((err = spm_try_pair(t, s, p, s->prev[l], l))) return err;
        if ((err = spm_try_pair(t, s, p, l, s->next[l]))) return err;
    }
    for (int32_t i = ns ? 0 : -1; i >= 0 && !err; i = s->next[i]) {
        int32_t id = vkpt__vocab_get(t, p + s->pos[i], s->len[i]);
        if (id >= 0) {
            err = vkpt_tokens_push(out, id);
            continue;
        }
        for (uint32_t b = 0; b < s->len[i] && !err; b++) {
            int32_t bt = t->byte_tok[(uint8_t)p[s->pos[i] + b]];
            if (bt < 0) bt = t->unk;
            if (bt >= 0) err = vkpt_tokens_push(out, bt);
        }
    }
    return err;
}

/* ---- WordPiece ------------------------------------------------------------------------- */

static int wordpiece_encode(const vkpt_tokenizer *t, vkpt__model_scratch *s, const char *p,
                            size_t n, vkpt_tokens *out)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) chars += ((uint8_t)p[i] & 0xC0) != 0x80;
    if (t->wp_max_chars > 0 && chars > (size_t)t->wp_max_chars)
        return t->unk >= 0 ? vkpt_tokens_push(out, t->unk) : 0;
    size_t first = out->n, start = 0;
    int err = 0;
    while (start < n) {
        /* longest token at `start` (with the continuation prefix after the
         * first piece): a walk down the vocabulary trie */
        int32_t found = -1;
        size_t len = vkpt__vocab_longest(t, t->cont_prefix, start > 0 ? t->cont_prefix_n : 0,
                                         p + start, n - start, &found);
        if (!len) {
            out->n = first;
            return t->unk >= 0 ? vkpt_tokens_push(out, t->unk) : 0;
        }
        if ((err = vkpt_tokens_push(out, found))) return err;
        start += len;
    }
    return 0;
}

/* One word through the model, through the word cache when there is one. */
static int encode_word(const vkpt_tokenizer *t, vkpt__model_scratch *s, const char *p, size_t n,
                       vkpt_tokens *out)
{
    uint64_t h = 0;
    bool cacheable = s->cache && n <= CACHE_WORD_MAX;
    if (cacheable) {
        h = vkpt__hash(p, n);
        int r = cache_get(s, h, p, n, out);
        if (r) return r < 0 ? VKPT_ENOMEM : 0;
    }
    size_t first = out->n;
    int err = t->model == VKPT__M_SPM ? spm_word(t, s, p, n, out) : bpe_word(t, s, p, n, out);
    if (!err && cacheable && out->n > first)
        cache_put(s, h, p, n, out->ids + first, out->n - first);
    return err;
}

int vkpt__model_encode(const vkpt_tokenizer *t, vkpt__model_scratch *s, const char *p, size_t n,
                       vkpt_tokens *out)
{
    if (!n) return 0;
    if (t->model == VKPT__M_WORDPIECE) return wordpiece_encode(t, s, p, n, out);
    if (t->model != VKPT__M_BPE && t->model != VKPT__M_SPM)
        return vkpt_fail(VKPT_EINVAL, "tokenizer model %d", t->model);
    if (t->ignore_merges) {
        int32_t id = t->byte_level ? vkpt__raw_get(t, p, n) : vkpt__vocab_get(t, p, n);
        if (id >= 0) return vkpt_tokens_push(out, id);
    }
    if (!t->meta_split) return encode_word(t, s, p, n, out);
    /* No merge crosses a "▁" after a character no token puts before "▁"
     * (tokenizer.c, meta_bounds): words between such "▁"s are encoded apart,
     * and cached, with the same result as the whole piece. */
    size_t start = 0;
    for (size_t i = 1; i + 3 <= n; i++) {
        if (memcmp(p + i, "\xE2\x96\x81", 3)) continue;
        size_t b = i - 1;
        while (b > 0 && ((uint8_t)p[b] & 0xC0) == 0x80) b--;
        uint32_t cp;
        vkpt__utf8_next((const uint8_t *)p + b, i - b, &cp);
        bool unsafe = cp == 0x2581;
        for (int u = 0; u < t->n_meta_unsafe && !unsafe; u++) unsafe = t->meta_unsafe[u] == cp;
        if (unsafe) continue;
        int err = encode_word(t, s, p + start, i - start, out);
        if (err) return err;
        start = i;
        i += 2;
    }
    return encode_word(t, s, p + start, n - start, out);
}
