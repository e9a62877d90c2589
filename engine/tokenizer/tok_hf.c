/* engine/tokenizer: loading Hugging Face tokenizer.json (+ tokenizer_config.json,
 * generation_config.json) with cJSON.
 *
 * Every component type the file may name is either read into the pipeline
 * or refused with a message naming it (VKPT_EUNSUPPORTED), so a tokenizer
 * either loads and encodes exactly or does not load. This is file parsing
 * at model load, not request parsing.
 */
#define _GNU_SOURCE
#include "tok_int.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ---- JSON helpers -------------------------------------------------------------------- */

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool jbool(const cJSON *o, const char *key, bool def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return def;
}

static bool jnum(const cJSON *o, const char *key, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return false;
    *out = v->valuedouble;
    return true;
}

static char *dupn(const char *s, size_t *n)
{
    *n = s ? strlen(s) : 0;
    return vkpt_strndup(s ? s : "", *n);
}

/* A pattern object {"String": s} or {"Regex": r}. */
static int read_pattern(const cJSON *pat, const char *what, char **lit, size_t *lit_n,
                        vkpt__pcre **re)
{
    const char *s = jstr(pat, "String");
    const char *r = jstr(pat, "Regex");
    if (s) {
        *lit = dupn(s, lit_n);
        return *lit ? 0 : vkpt_fail(VKPT_ENOMEM, "%s pattern", what);
    }
    if (r) return vkpt__re_compile(r, strlen(r), re);
    return vkpt_fail(VKPT_EFORMAT, "%s: pattern is neither String nor Regex", what);
}

/* ---- normalizers ---------------------------------------------------------------------- */

static int push_norm(vkpt_tokenizer *t, vkpt__norm n)
{
    vkpt__norm *v = vkpt_realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *v);
    if (!v) return vkpt_fail(VKPT_ENOMEM, "normalizers");
    t->norm = v;
    t->norm[t->n_norm++] = n;
    return 0;
}

static int read_normalizer(vkpt_tokenizer *t, const cJSON *o, int depth)
{
    if (!o || cJSON_IsNull(o)) return 0;
    const char *type = jstr(o, "type");
    if (!type || depth > 8)
        return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: normalizer without a type");
    vkpt__norm n = {.strip_accents = -1};
    if (!strcmp(type, "Sequence")) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "normalizers"), *e;
        cJSON_ArrayForEach(e, a)
        {
            int err = read_normalizer(t, e, depth + 1);
            if (err) return err;
        }
        return 0;
    }
    if (!strcmp(type, "NFC"))
        n.kind = VKPT__N_NFC;
    else if (!strcmp(type, "NFD"))
        n.kind = VKPT__N_NFD;
    else if (!strcmp(type, "NFKC"))
        n.kind = VKPT__N_NFKC;
    else if (!strcmp(type, "NFKD"))
        n.kind = VKPT__N_NFKD;
    else if (!strcmp(type, "Lowercase"))
        n.kind = VKPT__N_LOWER;
    else if (!strcmp(type, "StripAccents"))
        n.kind = VKPT__N_STRIP_ACCENTS;
    else if (!strcmp(type, "Precompiled"))
        n.kind = VKPT__N_PRECOMP;
    else if (!strcmp(type, "Strip")) {
        n.kind = VKPT__N_STRIP;
        n.left = jbool(o, "strip_left", true);
        n.right = jbool(o, "strip_right", true);
    } else if (!strcmp(type, "Prepend")) {
        n.kind = VKPT__N_PREPEND;
        n.str = dupn(jstr(o, "prepend"), &n.str_n);
        if (!n.str) return vkpt_fail(VKPT_ENOMEM, "normalizer");
    } else if (!strcmp(type, "Replace")) {
        n.kind = VKPT__N_REPLACE;
        int err = read_pattern(cJSON_GetObjectItemCaseSensitive(o, "pattern"), "Replace normalizer",
                               &n.str, &n.str_n, &n.re);
        if (err) return err;
        n.content = dupn(jstr(o, "content"), &n.content_n);
        if (!n.content) return vkpt_fail(VKPT_ENOMEM, "normalizer");
    } else if (!strcmp(type, "BertNormalizer")) {
        n.kind = VKPT__N_BERT;
        n.clean = jbool(o, "clean_text", true);
        n.chinese = jbool(o, "handle_chinese_chars", true);
        n.lowercase = jbool(o, "lowercase", true);
        const cJSON *sa = cJSON_GetObjectItemCaseSensitive(o, "strip_accents");
        n.strip_accents = cJSON_IsBool(sa) ? cJSON_IsTrue(sa) : -1;
    } else {
        return vkpt_fail(VKPT_EUNSUPPORTED, "tokenizer.json: normalizer type '%s' is not supported",
                         type);
    }
    int err = push_norm(t, n);
    if (err) {
        vkpt_free(n.str);
        vkpt_free(n.content);
        vkpt__re_free(n.re);
    }
    return err;
}

/* ---- pre-tokenizers ---------------------------------------------------------------------- */

/* GPT-2's regex, which ByteLevel(use_regex=true) splits with. */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int push_pre(vkpt_tokenizer *t, vkpt__pre p)
{
    vkpt__pre *v = vkpt_realloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *v);
    if (!v) {
        vkpt__re_free(p.re);
        vkpt_free(p.lit);
        return vkpt_fail(VKPT_ENOMEM, "pre-tokenizers");
    }
    t->pre = v;
    t->pre[t->n_pre++] = p;
    return 0;
}

static int behaviour(const char *s, int *out)
{
    if (!s) s = "Isolated";
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                        "MergedWithNext", "Contiguous"};
    for (int i = 0; i < 5; i++)
        if (!strcasecmp(s, names[i])) {
            *out = i;
            return 0;
        }
    return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: split behavior '%s'", s);
}

static int prepend_scheme(const cJSON *o)
{
    const char *s = jstr(o, "prepend_scheme");
    if (s && !strcmp(s, "first")) return VKPT__PREPEND_FIRST;
    if (s && !strcmp(s, "never")) return VKPT__PREPEND_NEVER;
    if (s) return VKPT__PREPEND_ALWAYS;
    return jbool(o, "add_prefix_space", true) ? VKPT__PREPEND_ALWAYS : VKPT__PREPEND_NEVER;
}

static int metaspace_repl(const cJSON *o, char *repl, size_t *n)
{
    const char *r = jstr(o, "replacement");
    if (!r) r = "\xE2\x96\x81";
    size_t len = strlen(r);
    if (!len || len > 4)
        return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: Metaspace replacement '%s'", r);
    memcpy(repl, r, len);
    *n = len;
    return 0;
}

static int read_pre(vkpt_tokenizer *t, const cJSON *o, int depth)
{
    if (!o || cJSON_IsNull(o)) return 0;
    const char *type = jstr(o, "type");
    if (!type || depth > 8)
        return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: pre_tokenizer without a type");
    if (t->byte_level)
        return vkpt_fail(VKPT_EUNSUPPORTED,
                         "tokenizer.json: pre-tokenizer '%s' after ByteLevel is not supported",
                         type);
    vkpt__pre p = {.behaviour = VKPT__SPLIT_ISOLATED};
    int err = 0;
    if (!strcmp(type, "Sequence")) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers"), *e;
        cJSON_ArrayForEach(e, a)
        {
            if ((err = read_pre(t, e, depth + 1))) return err;
        }
        return 0;
    } else if (!strcmp(type, "Split")) {
        p.kind = VKPT__P_SPLIT;
        if ((err = behaviour(jstr(o, "behavior"), &p.behaviour))) return err;
        p.invert = jbool(o, "invert", false);
        err = read_pattern(cJSON_GetObjectItemCaseSensitive(o, "pattern"), "Split pre-tokenizer",
                           &p.lit, &p.lit_n, &p.re);
    } else if (!strcmp(type, "ByteLevel")) {
        p.kind = VKPT__P_BYTELEVEL;
        p.add_prefix_space = jbool(o, "add_prefix_space", false);
        if (jbool(o, "use_regex", true))
            err = vkpt__re_compile(gpt2_regex, sizeof gpt2_regex - 1, &p.re);
        t->byte_level = true;
    } else if (!strcmp(type, "Metaspace")) {
        p.kind = VKPT__P_METASPACE;
        err = metaspace_repl(o, p.repl, &p.repl_n);
        p.prepend = prepend_scheme(o);
        p.split = jbool(o, "split", true);
    } else if (!strcmp(type, "Whitespace")) {
        p.kind = VKPT__P_WHITESPACE;
        /* \w+|[^\w\s]+ with the Rust regex crate's Unicode \w */
        static const char ws[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_C}]+|"
                                 "[^\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_C}\\s]+";
        err = vkpt__re_compile(ws, sizeof ws - 1, &p.re);
    } else if (!strcmp(type, "WhitespaceSplit")) {
        p.kind = VKPT__P_WSPLIT;
    } else if (!strcmp(type, "BertPreTokenizer")) {
        p.kind = VKPT__P_BERT;
    } else if (!strcmp(type, "Punctuation")) {
        p.kind = VKPT__P_PUNCT;
        err = behaviour(jstr(o, "behavior"), &p.behaviour);
    } else if (!strcmp(type, "Digits")) {
        p.kind = VKPT__P_DIGITS;
        p.individual = jbool(o, "individual_digits", false);
    } else {
        return vkpt_fail(VKPT_EUNSUPPORTED,
                         "tokenizer.json: pre_tokenizer type '%s' is not supported", type);
    }
    if (err) {
        vkpt__re_free(p.re);
        vkpt_free(p.lit);
        return err;
    }
    return push_pre(t, p);
}

/* ---- decoders -------------------------------------------------------------------------- */

static int push_dec(vkpt_tokenizer *t, vkpt__dec d)
{
    vkpt__dec *v = vkpt_realloc(t->dec, (size_t)(t->n_dec + 1) * sizeof *v);
    if (!v) {
        vkpt_free(d.str);
        vkpt_free(d.content);
        return vkpt_fail(VKPT_ENOMEM, "decoders");
    }
    t->dec = v;
    t->dec[t->n_dec++] = d;
    return 0;
}

static int read_decoder(vkpt_tokenizer *t, const cJSON *o, int depth)
{
    if (!o || cJSON_IsNull(o)) {
        if (depth == 0) t->dec_join_space = true;
        return 0;
    }
    const char *type = jstr(o, "type");
    if (!type || depth > 8)
        return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: decoder without a type");
    vkpt__dec d = {0};
    if (!strcmp(type, "Sequence")) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "decoders"), *e;
        cJSON_ArrayForEach(e, a)
        {
            int err = read_decoder(t, e, depth + 1);
            if (err) return err;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel"))
        d.kind = VKPT__D_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback"))
        d.kind = VKPT__D_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse"))
        d.kind = VKPT__D_FUSE;
    else if (!strcmp(type, "Replace")) {
        d.kind = VKPT__D_REPLACE;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        if (!jstr(pat, "String"))
            return vkpt_fail(VKPT_EUNSUPPORTED,
                             "tokenizer.json: Replace decoder with a regex pattern");
        d.str = dupn(jstr(pat, "String"), &d.str_n);
        d.content = dupn(jstr(o, "content"), &d.content_n);
    } else if (!strcmp(type, "Strip")) {
        d.kind = VKPT__D_STRIP;
        d.content = dupn(jstr(o, "content"), &d.content_n);
        double v;
        d.start = jnum(o, "start", &v) ? (int)v : 0;
        d.stop = jnum(o, "stop", &v) ? (int)v : 0;
    } else if (!strcmp(type, "Metaspace")) {
        d.kind = VKPT__D_METASPACE;
        char r[8];
        size_t rn;
        int err = metaspace_repl(o, r, &rn);
        if (err) return err;
        d.content = vkpt_strndup(r, rn);
        d.content_n = rn;
        d.strip_first = prepend_scheme(o) != VKPT__PREPEND_NEVER;
    } else if (!strcmp(type, "WordPiece")) {
        d.kind = VKPT__D_WORDPIECE;
        d.str = dupn(jstr(o, "prefix") ? jstr(o, "prefix") : "##", &d.str_n);
        d.cleanup = jbool(o, "cleanup", true);
    } else if (!strcmp(type, "BPEDecoder")) {
        d.kind = VKPT__D_BPE;
        d.str = dupn(jstr(o, "suffix") ? jstr(o, "suffix") : "</w>", &d.str_n);
    } else {
        return vkpt_fail(VKPT_EUNSUPPORTED, "tokenizer.json: decoder type '%s' is not supported",
                         type);
    }
    if ((d.kind == VKPT__D_REPLACE && (!d.str || !d.content)) ||
        ((d.kind == VKPT__D_STRIP || d.kind == VKPT__D_METASPACE) && !d.content) ||
        ((d.kind == VKPT__D_WORDPIECE || d.kind == VKPT__D_BPE) && !d.str)) {
        vkpt_free(d.str);
        vkpt_free(d.content);
        return vkpt_fail(VKPT_ENOMEM, "decoder");
    }
    return push_dec(t, d);
}

/* ---- post-processors --------------------------------------------------------------------- */

static int ids_append(int32_t **v, int *n, const int32_t *add, int k)
{
    if (!k) return 0;
    int32_t *p = vkpt_realloc(*v, (size_t)(*n + k) * sizeof *p);
    if (!p) return vkpt_fail(VKPT_ENOMEM, "post-processor");
    memcpy(p + *n, add, (size_t)k * sizeof *p);
    *v = p;
    *n += k;
    return 0;
}

static int ids_prepend(int32_t **v, int *n, const int32_t *add, int k)
{
    if (!k) return 0;
    int32_t *p = vkpt_realloc(*v, (size_t)(*n + k) * sizeof *p);
    if (!p) return vkpt_fail(VKPT_ENOMEM, "post-processor");
    memmove(p + k, p, (size_t)*n * sizeof *p);
    memcpy(p, add, (size_t)k * sizeof *p);
    *v = p;
    *n += k;
    return 0;
}

/* A [token, id] pair of Bert/RobertaProcessing. */
static int32_t pair_id(const vkpt_tokenizer *t, const cJSON *pair)
{
    const cJSON *tok = cJSON_GetArrayItem(pair, 0), *id = cJSON_GetArrayItem(pair, 1);
    if (cJSON_IsNumber(id)) return (int32_t)id->valuedouble;
    if (cJSON_IsString(tok)) return vkpt__vocab_get(t, tok->valuestring, strlen(tok->valuestring));
    return -1;
}

static int read_post(vkpt_tokenizer *t, const cJSON *o, int depth)
{
    if (!o || cJSON_IsNull(o)) return 0;
    const char *type = jstr(o, "type");
    if (!type || depth > 8)
        return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: post_processor without a type");
    int err = 0;
    if (!strcmp(type, "Sequence")) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "processors"), *e;
        cJSON_ArrayForEach(e, a)
        {
            if ((err = read_post(t, e, depth + 1))) return err;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) return 0; /* offsets only */
    int32_t pre[64], suf[64];
    int np = 0, ns = 0;
    if (!strcmp(type, "BertProcessing") || !strcmp(type, "RobertaProcessing")) {
        int32_t cls = pair_id(t, cJSON_GetObjectItemCaseSensitive(o, "cls"));
        int32_t sep = pair_id(t, cJSON_GetObjectItemCaseSensitive(o, "sep"));
        if (cls < 0 || sep < 0)
            return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: %s without cls/sep ids", type);
        pre[np++] = cls;
        suf[ns++] = sep;
    } else if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(o, "single"), *item;
        const cJSON *specials = cJSON_GetObjectItemCaseSensitive(o, "special_tokens");
        bool seen_a = false;
        cJSON_ArrayForEach(item, single)
        {
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(item, "SpecialToken");
            if (cJSON_GetObjectItemCaseSensitive(item, "Sequence")) {
                seen_a = true;
                continue;
            }
            const char *name = jstr(sp, "id");
            if (!name) return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: TemplateProcessing item");
            const cJSON *def = cJSON_GetObjectItemCaseSensitive(specials, name);
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids"), *idv;
            int32_t one = vkpt__vocab_get(t, name, strlen(name));
            int32_t tmp[64];
            int k = 0;
            if (cJSON_IsArray(ids)) {
                cJSON_ArrayForEach(idv, ids)
                {
                    if (k < 64 && cJSON_IsNumber(idv)) tmp[k++] = (int32_t)idv->valuedouble;
                }
            } else if (one >= 0) {
                tmp[k++] = one;
            } else {
                return vkpt_fail(VKPT_EFORMAT,
                                 "tokenizer.json: TemplateProcessing token '%s' unknown", name);
            }
            for (int i = 0; i < k; i++) {
                if (!seen_a && np < 64)
                    pre[np++] = tmp[i];
                else if (seen_a && ns < 64)
                    suf[ns++] = tmp[i];
            }
        }
    } else {
        return vkpt_fail(VKPT_EUNSUPPORTED,
                         "tokenizer.json: post_processor type '%s' is not supported", type);
    }
    for (int i = 0; i < np + ns; i++) {
        int32_t id = i < np ? pre[i] : suf[i - np];
        if (id < 0 || id >= t->n_vocab)
            return vkpt_fail(VKPT_EFORMAT,
                             "tokenizer.json: %s adds token id %d, outside the vocabulary", type,
                             id);
    }
    /* a later processor wraps what the earlier ones produced */
    if ((err = ids_prepend(&t->post_prefix, &t->n_post_prefix, pre, np))) return err;
    return ids_append(&t->post_suffix, &t->n_post_suffix, suf, ns);
}

/* ---- model -------------------------------------------------------------------------------- */

static int read_vocab(vkpt_tokenizer *t, const cJSON *model, const cJSON *added)
{
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab"), *e;
    if (!cJSON_IsObject(vocab))
        return vkpt_fail(
            VKPT_EUNSUPPORTED,
            "tokenizer.json: model.vocab is not an object (Unigram models are not supported)");
    double max_id = -1;
    size_t pool = 0;
    cJSON_ArrayForEach(e, vocab)
    {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 30))
            return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: vocab entry '%.64s' has a bad id",
                             e->string);
        if (e->valuedouble > max_id) max_id = e->valuedouble;
        pool += strlen(e->string) + 1;
    }
    cJSON_ArrayForEach(e, added)
    {
        double id;
        const char *c = jstr(e, "content");
        if (!jnum(e, "id", &id) || !c || id < 0 || id >= (1 << 30))
            return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: added token without id/content");
        if (id > max_id) max_id = id;
        pool += strlen(c) + 1;
    }
    if (max_id < 0) return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: empty vocabulary");
    int err = vkpt__tok_alloc_vocab(t, (int32_t)max_id + 1, pool);
    if (err) return err;
    size_t used = 0;
    cJSON_ArrayForEach(e, vocab)
    {
        if ((err = vkpt__tok_set_token(t, (int32_t)e->valuedouble, e->string, strlen(e->string),
                                       &used)))
            return err;
    }
    int n_added = cJSON_GetArraySize(added);
    t->added = vkpt_calloc(n_added ? (size_t)n_added : 1, sizeof *t->added);
    if (!t->added) return vkpt_fail(VKPT_ENOMEM, "added tokens");
    cJSON_ArrayForEach(e, added)
    {
        double id = 0;
        jnum(e, "id", &id);
        const char *c = jstr(e, "content");
        vkpt__added *a = &t->added[t->n_added];
        a->id = (int32_t)id;
        a->content = dupn(c, &a->n);
        if (!a->content) return vkpt_fail(VKPT_ENOMEM, "added tokens");
        a->special = jbool(e, "special", false);
        a->lstrip = jbool(e, "lstrip", false);
        a->rstrip = jbool(e, "rstrip", false);
        a->single_word = jbool(e, "single_word", false);
        a->normalized = jbool(e, "normalized", !a->special);
        t->n_added++;
        if ((err = vkpt__tok_set_token(t, a->id, c, a->n, &used))) return err;
        t->pflags[a->id] |= VKPT__PF_ADDED;
        if (a->special) t->pflags[a->id] |= VKPT__PF_SPECIAL;
    }
    return 0;
}

static int read_model(vkpt_tokenizer *t, const cJSON *model)
{
    const char *type = jstr(model, "type");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!type) type = merges ? "BPE" : "WordPiece";
    const char *unk = jstr(model, "unk_token");
    if (unk) t->unk = vkpt__vocab_get(t, unk, strlen(unk));
    if (!strcmp(type, "WordPiece")) {
        t->model = VKPT__M_WORDPIECE;
        t->kind = "wordpiece";
        const char *pfx = jstr(model, "continuing_subword_prefix");
        t->cont_prefix = dupn(pfx ? pfx : "##", &t->cont_prefix_n);
        double v;
        if (jnum(model, "max_input_chars_per_word", &v)) t->wp_max_chars = (int)v;
        return t->cont_prefix ? 0 : vkpt_fail(VKPT_ENOMEM, "model");
    }
    if (strcmp(type, "BPE"))
        return vkpt_fail(VKPT_EUNSUPPORTED, "tokenizer.json: model type '%s' is not supported",
                         type);
    t->model = VKPT__M_BPE;
    t->byte_fallback = jbool(model, "byte_fallback", false);
    t->fuse_unk = jbool(model, "fuse_unk", false);
    t->ignore_merges = jbool(model, "ignore_merges", false);
    const char *pfx = jstr(model, "continuing_subword_prefix");
    const char *sfx = jstr(model, "end_of_word_suffix");
    if (pfx && *pfx && !(t->cont_prefix = dupn(pfx, &t->cont_prefix_n)))
        return vkpt_fail(VKPT_ENOMEM, "model");
    if (sfx && *sfx && !(t->eow_suffix = dupn(sfx, &t->eow_suffix_n)))
        return vkpt_fail(VKPT_ENOMEM, "model");
    t->kind = t->byte_level ? "bpe-bytelevel" : "bpe";
    int n = cJSON_GetArraySize(merges);
    int err = vkpt__merges_alloc(t, (size_t)n);
    if (err) return err;
    vkpt__buf cat = {0};
    const cJSON *m;
    uint32_t rank = 0;
    cJSON_ArrayForEach(m, merges)
    {
        const char *a, *b;
        size_t an, bn;
        if (cJSON_IsString(m)) {
            /* "left right": split at the first space after the first byte */
            const char *s = m->valuestring;
            const char *sp = *s ? strchr(s + 1, ' ') : NULL;
            if (!sp) {
                rank++;
                continue;
            }
            a = s;
            an = (size_t)(sp - s);
            b = sp + 1;
            bn = strlen(b);
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
            a = cJSON_GetArrayItem(m, 0)->valuestring;
            b = cJSON_GetArrayItem(m, 1)->valuestring;
            an = strlen(a);
            bn = strlen(b);
        } else {
            vkpt__buf_free(&cat);
            return vkpt_fail(VKPT_EFORMAT, "tokenizer.json: merge %u is malformed", rank);
        }
        int32_t l = vkpt__vocab_get(t, a, an), r = vkpt__vocab_get(t, b, bn);
        cat.n = 0;
        if ((err = vkpt__buf_put(&cat, a, an)) || (err = vkpt__buf_put(&cat, b, bn))) break;
        int32_t id = vkpt__vocab_get(t, cat.p, cat.n);
        if (l >= 0 && r >= 0 && id >= 0) err = vkpt__add_merge(t, l, r, rank, id);
        rank++;
        if (err) break;
    }
    vkpt__buf_free(&cat);
    return err;
}

/* ---- tokenizer_config.json ---------------------------------------------------------------- */

static const char *token_content(const cJSON *v)
{
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return jstr(v, "content");
    return NULL;
}

static const char *const special_keys[7] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                            "pad_token", "cls_token", "mask_token"};

static int read_config(vkpt_tokenizer *t, const cJSON *cfg)
{
    int32_t *dst[7] = {&t->sp.bos, &t->sp.eos, &t->sp.unk, &t->sp.sep,
                       &t->sp.pad, &t->sp.cls, &t->sp.mask};
    for (int i = 0; i < 7; i++) {
        const char *c = token_content(cJSON_GetObjectItemCaseSensitive(cfg, special_keys[i]));
        if (!c || !*c) continue;
        if (!(t->tok_strings[i] = vkpt_strdup(c))) return vkpt_fail(VKPT_ENOMEM, "config");
        *dst[i] = vkpt__vocab_get(t, c, strlen(c));
    }
    if (t->sp.unk < 0) t->sp.unk = t->unk;
    t->cleanup = jbool(cfg, "clean_up_tokenization_spaces", true);
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens"), *e;
    int n = cJSON_GetArraySize(extra);
    if (n > 0) {
        t->extra_special = vkpt_calloc((size_t)n, sizeof *t->extra_special);
        if (!t->extra_special) return vkpt_fail(VKPT_ENOMEM, "config");
        cJSON_ArrayForEach(e, extra)
        {
            const char *c = token_content(e);
            if (!c) continue;
            if (!(t->extra_special[t->n_extra_special] = vkpt_strdup(c)))
                return vkpt_fail(VKPT_ENOMEM, "config");
            t->n_extra_special++;
            int32_t id = vkpt__vocab_get(t, c, strlen(c));
            if (id >= 0)
                t->pflags[id] |= VKPT__PF_SPECIAL; /* skipped like Hugging Face's special_tokens */
        }
    }
    /* chat_template: a string, or a list of {name, template} */
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
    int err = 0;
    if (cJSON_IsString(ct)) {
        err = vkpt__tok_set_template(t, ct->valuestring, strlen(ct->valuestring), false);
    } else if (cJSON_IsArray(ct)) {
        cJSON_ArrayForEach(e, ct)
        {
            const char *name = jstr(e, "name"), *src = jstr(e, "template");
            if (!name || !src)
                return vkpt_fail(VKPT_EFORMAT, "tokenizer_config.json: chat_template entry");
            if (!strcmp(name, "default"))
                err = vkpt__tok_set_template(t, src, strlen(src), false);
            else if (!strcmp(name, "tool_use"))
                err = vkpt__tok_set_template(t, src, strlen(src), true);
            if (err) return err;
        }
    }
    return err;
}

static void read_generation(vkpt_tokenizer *t, const cJSON *gen)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(gen, "eos_token_id"), *x;
    if (cJSON_IsNumber(e)) vkpt__tok_add_eog(t, (int32_t)e->valuedouble);
    if (!cJSON_IsArray(e)) return;
    cJSON_ArrayForEach(x, e)
    {
        if (cJSON_IsNumber(x)) vkpt__tok_add_eog(t, (int32_t)x->valuedouble);
    }
}

/* ---- entry points ----------------------------------------------------------------------------- */

int vkpt__tok_load_hf(vkpt_tokenizer *t, const char *tok_json, size_t tok_n, const char *cfg_json,
                      size_t cfg_n, const char *gen_json, size_t gen_n)
{
    cJSON *tj = cJSON_ParseWithLength(tok_json, tok_n);
    cJSON *cj = cfg_json ? cJSON_ParseWithLength(cfg_json, cfg_n) : NULL;
    cJSON *gj = gen_json ? cJSON_ParseWithLength(gen_json, gen_n) : NULL;
    int err = 0;
    if (!cJSON_IsObject(tj)) {
        err = vkpt_fail(VKPT_EFORMAT, "tokenizer.json is not a JSON object");
        goto out;
    }
    if (cfg_json && !cJSON_IsObject(cj)) {
        err = vkpt_fail(VKPT_EFORMAT, "tokenizer_config.json is not a JSON object");
        goto out;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    if (!cJSON_IsObject(model)) {
        err = vkpt_fail(VKPT_EFORMAT, "tokenizer.json has no model");
        goto out;
    }
    if ((err = read_vocab(t, model, cJSON_GetObjectItemCaseSensitive(tj, "added_tokens"))))
        goto out;
    if ((err = vkpt__tok_index(t))) goto out;
    if ((err = read_normalizer(t, cJSON_GetObjectItemCaseSensitive(tj, "normalizer"), 0))) goto out;
    if ((err = read_pre(t, cJSON_GetObjectItemCaseSensitive(tj, "pre_tokenizer"), 0))) goto out;
    if ((err = read_model(t, model))) goto out;
    if ((err = read_post(t, cJSON_GetObjectItemCaseSensitive(tj, "post_processor"), 0))) goto out;
    if ((err = read_decoder(t, cJSON_GetObjectItemCaseSensitive(tj, "decoder"), 0))) goto out;
    t->cleanup = true; /* Hugging Face's default when the config says nothing */
    if (cj && (err = read_config(t, cj))) goto out;
    if (t->sp.unk < 0) t->sp.unk = t->unk;
    if ((err = vkpt__tok_finish(t))) goto out;
    if (gj) read_generation(t, gj);
out:
    cJSON_Delete(tj);
    cJSON_Delete(cj);
    cJSON_Delete(gj);
    return err;
}

static int read_all(const char *path, char **data, size_t *n, bool optional)
{
    *data = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return optional ? 0 : vkpt_fail(VKPT_EIO, "cannot open %s", path);
    vkpt__buf b = {0};
    char tmp[65536];
    size_t k;
    int err = 0;
    while (!err && (k = fread(tmp, 1, sizeof tmp, f)) > 0) err = vkpt__buf_put(&b, tmp, k);
    if (!err && ferror(f)) err = vkpt_fail(VKPT_EIO, "reading %s", path);
    fclose(f);
    if (err) {
        vkpt__buf_free(&b);
        return err;
    }
    *data = vkpt__buf_take(&b, n);
    return *data ? 0 : vkpt_fail(VKPT_ENOMEM, "reading %s", path);
}

int vkpt__tok_open_gguf_file(const char *path, vkpt_tokenizer **out);

int vkpt_tokenizer_create_file(const char *path, vkpt_tokenizer **out)
{
    if (!path || !out) return vkpt_fail(VKPT_EINVAL, "tokenizer: NULL argument");
    *out = NULL;
    struct stat st;
    if (stat(path, &st)) return vkpt_fail(VKPT_EIO, "cannot open %s", path);
    size_t pn = strlen(path);
    if (!S_ISDIR(st.st_mode) && pn >= 5 && !strcmp(path + pn - 5, ".gguf"))
        return vkpt__tok_open_gguf_file(path, out);
    char *dir = NULL, *tok_path = NULL, *cfg_path = NULL, *gen_path = NULL;
    char *tj = NULL, *cj = NULL, *gj = NULL;
    size_t tn, cn, gn;
    int err = 0;
    if (S_ISDIR(st.st_mode)) {
        dir = vkpt_strdup(path);
    } else {
        const char *slash = strrchr(path, '/');
        dir = slash ? vkpt_strndup(path, (size_t)(slash - path)) : vkpt_strdup(".");
    }
    if (!dir) return vkpt_fail(VKPT_ENOMEM, "path");
    size_t dn = strlen(dir) + 32;
    tok_path = vkpt_malloc(dn + pn);
    cfg_path = vkpt_malloc(dn);
    gen_path = vkpt_malloc(dn);
    if (!tok_path || !cfg_path || !gen_path) {
        err = vkpt_fail(VKPT_ENOMEM, "path");
        goto out;
    }
    if (S_ISDIR(st.st_mode))
        snprintf(tok_path, dn + pn, "%s/tokenizer.json", dir);
    else
        snprintf(tok_path, dn + pn, "%s", path);
    snprintf(cfg_path, dn, "%s/tokenizer_config.json", dir);
    snprintf(gen_path, dn, "%s/generation_config.json", dir);
    if ((err = read_all(tok_path, &tj, &tn, false))) {
        if (S_ISDIR(st.st_mode)) err = vkpt_fail(VKPT_ENOTFOUND, "%s has no tokenizer.json", path);
        goto out;
    }
    if ((err = read_all(cfg_path, &cj, &cn, true))) goto out;
    if ((err = read_all(gen_path, &gj, &gn, true))) goto out;
    err = vkpt_tokenizer_create_json(tj, tn, cj, cn, gj, gn, out);
out:
    vkpt_free(dir);
    vkpt_free(tok_path);
    vkpt_free(cfg_path);
    vkpt_free(gen_path);
    vkpt_free(tj);
    vkpt_free(cj);
    vkpt_free(gj);
    return err;
}
