/* engine/tokenizer: building a tokenizer from GGUF metadata.
 *
 * GGUF stores the vocabulary (tokenizer.ggml.tokens/scores/token_type), the
 * merges and a model name; the rest of the pipeline is implied by the model
 * and, for byte-level BPE, by tokenizer.ggml.pre, a name for the
 * pre-tokenizer regexes of the original tokenizer.json. We map them onto the
 * same pipeline Hugging Face files use, matching llama.cpp's tokenizer (the
 * reference for GGUF files):
 *   llama -> "▁" prefix + spaces as "▁", SentencePiece BPE with scores, byte
 *            fallback; BOS by default
 *   gpt2  -> the pre-tokenizer regexes named by `pre`, byte-level BPE with
 *            merge ranks
 *   bert  -> BERT normalizer and pre-tokenizer, WordPiece; [CLS] .. [SEP]
 * The regex table below holds data from the original tokenizer.json files.
 */
#include "tok_int.h"
#include "tok_model.h"

#include "gguf.h"

#include <stdio.h>

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* Pre-tokenizer regexes by tokenizer.ggml.pre, each list applied in turn. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA3                                                                                  \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+" \
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                              \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+" \
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static const struct pre_def {
    const char *names; /* '|'-separated tokenizer.ggml.pre values */
    bool ignore_merges, add_bos;
    const char *re[6];
} pre_defs[] = {
    {"default|gpt-2|gpt2|mpt|olmo|jais|trillion|granite-docling", false, false, {RE_GPT2}},
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2", true, true, {RE_LLAMA3}},
    {"dbrx|smaug-bpe|chatglm-bpe", false, false, {RE_LLAMA3}},
    {"qwen2|stablelm2|hunyuan|deepseek-r1-qwen|megrez|solar-open", false, false, {RE_QWEN2}},
    {"starcoder|refact|command-r|smollm|codeshell|exaone|minerva",
     false,
     false,
     {"\\p{N}", RE_GPT2}},
    {"deepseek-v3|hunyuan-dense",
     false,
     false,
     {"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
      "[!\"#$%&'()*+,\\-./"
      ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
      "?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
    {"deepseek-coder",
     false,
     false,
     {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"}},
    {"falcon",
     false,
     false,
     {"[\\p{P}\\$\\+<=>\\^~\\|`]+",
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
      "[0-9][0-9][0-9]"}},
    {"poro-chat|bloom|gpt3-finnish", false, false, {" ?[^(\\s|.,!?…。，、।۔،)]+"}},
    {"tekken",
     false,
     true,
     {"[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^"
      "\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{"
      "N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
};

static bool name_in(const char *names, vkpt_span pre)
{
    const char *p = names;
    while (*p) {
        const char *e = strchr(p, '|');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == pre.n && !memcmp(p, pre.p, n)) return true;
        if (!e) break;
        p = e + 1;
    }
    return false;
}

static int32_t get_id(const vkpt_gguf *g, const char *key, int32_t n_vocab)
{
    uint32_t v;
    if (vkpt_gguf_get_u32(g, key, &v)) {
        int32_t s;
        if (vkpt_gguf_get_i32(g, key, &s) || s < 0) return -1;
        v = (uint32_t)s;
    }
    return v < (uint32_t)n_vocab ? (int32_t)v : -1;
}

static bool get_bool(const vkpt_gguf *g, const char *key, bool def)
{
    bool b;
    return vkpt_gguf_get_bool(g, key, &b) ? def : b;
}

static int add_norm(vkpt_tokenizer *t, vkpt__norm n)
{
    vkpt__norm *v = vkpt_realloc(t->norm, (size_t)(t->n_norm + 1) * sizeof *v);
    if (!v) return vkpt_fail(VKPT_ENOMEM, "normalizers");
    t->norm = v;
    t->norm[t->n_norm++] = n;
    return 0;
}

static int add_pre(vkpt_tokenizer *t, vkpt__pre p)
{
    vkpt__pre *v = vkpt_realloc(t->pre, (size_t)(t->n_pre + 1) * sizeof *v);
    if (!v) {
        vkpt__re_free(p.re);
        return vkpt_fail(VKPT_ENOMEM, "pre-tokenizers");
    }
    t->pre = v;
    t->pre[t->n_pre++] = p;
    return 0;
}

static int add_dec(vkpt_tokenizer *t, int kind, const char *str, const char *content, int start,
                   int stop, bool cleanup)
{
    vkpt__dec d = {.kind = kind, .start = start, .stop = stop, .cleanup = cleanup};
    if (str && !(d.str = vkpt_strdup(str))) return vkpt_fail(VKPT_ENOMEM, "decoders");
    if (content && !(d.content = vkpt_strdup(content))) {
        vkpt_free(d.str);
        return vkpt_fail(VKPT_ENOMEM, "decoders");
    }
    d.str_n = str ? strlen(str) : 0;
    d.content_n = content ? strlen(content) : 0;
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

static int set_post(vkpt_tokenizer *t, int32_t first, int32_t last)
{
    if (first >= 0) {
        if (!(t->post_prefix = vkpt_malloc(sizeof(int32_t)))) return vkpt_fail(VKPT_ENOMEM, "post");
        t->post_prefix[0] = first;
        t->n_post_prefix = 1;
    }
    if (last >= 0) {
        if (!(t->post_suffix = vkpt_malloc(sizeof(int32_t)))) return vkpt_fail(VKPT_ENOMEM, "post");
        t->post_suffix[0] = last;
        t->n_post_suffix = 1;
    }
    return 0;
}

/* GGUF BERT vocabularies write word-initial pieces as "▁x" and continuations
 * bare; Hugging Face's WordPiece has "x" and "##x". */
static size_t bert_token(const char *s, size_t n, char *buf, size_t cap)
{
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        memcpy(buf, s, n);
        return n;
    }
    if (n >= 3 && !memcmp(s, "\xE2\x96\x81", 3)) {
        memcpy(buf, s + 3, n - 3);
        return n - 3;
    }
    if (n + 2 > cap) return 0;
    memcpy(buf, "##", 2);
    memcpy(buf + 2, s, n);
    return n + 2;
}

int vkpt__tok_load_gguf(vkpt_tokenizer *t, const vkpt_gguf *g)
{
    vkpt_span model;
    int err = vkpt_gguf_get_str(g, "tokenizer.ggml.model", &model);
    if (err == VKPT_ENOTFOUND)
        return vkpt_fail(VKPT_ENOTFOUND, "GGUF file has no tokenizer (tokenizer.ggml.model)");
    if (err) return err;
    bool is_llama = model.n == 5 && !memcmp(model.p, "llama", 5);
    bool is_gpt2 = model.n == 4 && !memcmp(model.p, "gpt2", 4);
    bool is_bert = model.n == 4 && !memcmp(model.p, "bert", 4);
    if (!is_llama && !is_gpt2 && !is_bert)
        return vkpt_fail(VKPT_EUNSUPPORTED, "GGUF tokenizer.ggml.model '%.*s' is not supported",
                         (int)model.n, model.p);
    int et;
    uint64_t n;
    if ((err = vkpt_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n))) return err;
    if (et != VKPT_GGUF_STRING || n == 0 || n > (1u << 30))
        return vkpt_fail(VKPT_EFORMAT,
                         "GGUF tokenizer.ggml.tokens is not a non-empty string array");
    size_t pool = 0;
    for (uint64_t i = 0; i < n; i++) {
        vkpt_span s;
        if ((err = vkpt_gguf_arr_str(g, "tokenizer.ggml.tokens", i, &s))) return err;
        pool += s.n + 3;
    }
    int32_t nv = (int32_t)n;
    if ((err = vkpt__tok_alloc_vocab(t, nv, pool))) return err;
    int tet;
    uint64_t tn = 0;
    bool has_types = !vkpt_gguf_get_arr(g, "tokenizer.ggml.token_type", &tet, &tn) && tn == n;
    size_t used = 0;
    int n_added = 0;
    t->added = vkpt_calloc(n, sizeof *t->added);
    if (!t->added) return vkpt_fail(VKPT_ENOMEM, "added tokens");
    for (int32_t i = 0; i < nv; i++) {
        vkpt_span s;
        vkpt_gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &s);
        int64_t type = TT_NORMAL;
        if (has_types && vkpt_gguf_arr_i64(g, "tokenizer.ggml.token_type", (uint64_t)i, &type))
            type = TT_NORMAL;
        char buf[1024];
        const char *ts = s.p;
        size_t tl = s.n;
        if (is_bert && type == TT_NORMAL && s.n + 2 <= sizeof buf) {
            tl = bert_token(s.p, s.n, buf, sizeof buf);
            ts = buf;
        }
        if ((err = vkpt__tok_set_token(t, i, ts, tl, &used))) return err;
        if (type == TT_CONTROL || type == TT_USER || type == TT_UNKNOWN) {
            vkpt__added *a = &t->added[n_added];
            a->id = i;
            a->content = vkpt_strndup(s.p, s.n);
            a->n = s.n;
            if (!a->content) return vkpt_fail(VKPT_ENOMEM, "added tokens");
            a->special = type != TT_USER;
            n_added++;
            t->n_added = n_added;
            t->pflags[i] |= VKPT__PF_ADDED;
            if (a->special) t->pflags[i] |= VKPT__PF_SPECIAL;
        }
    }
    if ((err = vkpt__tok_index(t))) return err;
    /* scores */
    int set;
    uint64_t sn;
    if (!vkpt_gguf_get_arr(g, "tokenizer.ggml.scores", &set, &sn) && sn == n) {
        if (!(t->scores = vkpt_malloc(n * sizeof *t->scores)))
            return vkpt_fail(VKPT_ENOMEM, "scores");
        for (uint64_t i = 0; i < n; i++)
            if (vkpt_gguf_arr_f32(g, "tokenizer.ggml.scores", i, &t->scores[i])) t->scores[i] = 0;
    }
    /* special ids */
    t->sp.bos = get_id(g, "tokenizer.ggml.bos_token_id", nv);
    t->sp.eos = get_id(g, "tokenizer.ggml.eos_token_id", nv);
    t->sp.unk = get_id(g, "tokenizer.ggml.unknown_token_id", nv);
    t->sp.sep = get_id(g, "tokenizer.ggml.seperator_token_id", nv);
    t->sp.pad = get_id(g, "tokenizer.ggml.padding_token_id", nv);
    t->sp.cls = get_id(g, "tokenizer.ggml.cls_token_id", nv);
    t->sp.mask = get_id(g, "tokenizer.ggml.mask_token_id", nv);
    t->unk = t->sp.unk;
    t->cleanup = false;
    vkpt_span pre = {"default", 7};
    vkpt_gguf_get_str(g, "tokenizer.ggml.pre", &pre);

    if (is_llama) {
        t->model = VKPT__M_SPM;
        t->kind = "spm";
        t->byte_fallback = true;
        bool space = get_bool(g, "tokenizer.ggml.add_space_prefix", true);
        if (space) {
            vkpt__norm p = {
                .kind = VKPT__N_PREPEND, .str = vkpt_strdup("\xE2\x96\x81"), .str_n = 3};
            if (!p.str || (err = add_norm(t, p)))
                return p.str ? err : vkpt_fail(VKPT_ENOMEM, "normalizer");
        }
        vkpt__norm r = {.kind = VKPT__N_REPLACE,
                        .str = vkpt_strdup(" "),
                        .str_n = 1,
                        .content = vkpt_strdup("\xE2\x96\x81"),
                        .content_n = 3};
        if (!r.str || !r.content || (err = add_norm(t, r))) {
            if (!err) {
                vkpt_free(r.str);
                vkpt_free(r.content);
                return vkpt_fail(VKPT_ENOMEM, "normalizer");
            }
            return err;
        }
        if ((err = add_dec(t, VKPT__D_REPLACE, "\xE2\x96\x81", " ", 0, 0, false)) ||
            (err = add_dec(t, VKPT__D_BYTEFALLBACK, NULL, NULL, 0, 0, false)) ||
            (err = add_dec(t, VKPT__D_FUSE, NULL, NULL, 0, 0, false)))
            return err;
        if (space && (err = add_dec(t, VKPT__D_STRIP, NULL, " ", 1, 0, false))) return err;
        bool bos = get_bool(g, "tokenizer.ggml.add_bos_token", true);
        bool eos = get_bool(g, "tokenizer.ggml.add_eos_token", false);
        if ((err = set_post(t, bos ? t->sp.bos : -1, eos ? t->sp.eos : -1))) return err;
    } else if (is_gpt2) {
        const struct pre_def *pd = NULL;
        for (size_t i = 0; i < sizeof pre_defs / sizeof pre_defs[0] && !pd; i++)
            if (name_in(pre_defs[i].names, pre)) pd = &pre_defs[i];
        if (!pd)
            return vkpt_fail(
                VKPT_EUNSUPPORTED,
                "GGUF tokenizer.ggml.pre '%.*s' is not known: its pre-tokenizer regexes "
                "are not in vkpt's table (engine/tokenizer/tok_gguf.c)",
                (int)pre.n, pre.p);
        t->model = VKPT__M_BPE;
        t->kind = "bpe-bytelevel";
        t->byte_level = true;
        t->ignore_merges = pd->ignore_merges;
        for (int i = 0; i < 6 && pd->re[i]; i++) {
            vkpt__pre p = {.kind = VKPT__P_SPLIT, .behaviour = VKPT__SPLIT_ISOLATED};
            if ((err = vkpt__re_compile(pd->re[i], strlen(pd->re[i]), &p.re))) return err;
            if ((err = add_pre(t, p))) return err;
        }
        vkpt__pre bl = {.kind = VKPT__P_BYTELEVEL};
        if ((err = add_pre(t, bl))) return err;
        int met;
        uint64_t mn = 0;
        if (vkpt_gguf_get_arr(g, "tokenizer.ggml.merges", &met, &mn) || met != VKPT_GGUF_STRING)
            return vkpt_fail(VKPT_EFORMAT, "GGUF gpt2 tokenizer without tokenizer.ggml.merges");
        if ((err = vkpt__merges_alloc(t, mn))) return err;
        vkpt__buf cat = {0};
        for (uint64_t i = 0; i < mn && !err; i++) {
            vkpt_span m;
            if ((err = vkpt_gguf_arr_str(g, "tokenizer.ggml.merges", i, &m))) break;
            const char *sp = m.n > 1 ? memchr(m.p + 1, ' ', m.n - 1) : NULL;
            if (!sp) continue;
            size_t an = (size_t)(sp - m.p);
            int32_t l = vkpt__vocab_get(t, m.p, an), r = vkpt__vocab_get(t, sp + 1, m.n - an - 1);
            cat.n = 0;
            if ((err = vkpt__buf_put(&cat, m.p, an)) ||
                (err = vkpt__buf_put(&cat, sp + 1, m.n - an - 1)))
                break;
            int32_t id = vkpt__vocab_get(t, cat.p, cat.n);
            if (l >= 0 && r >= 0 && id >= 0) err = vkpt__add_merge(t, l, r, (uint32_t)i, id);
        }
        vkpt__buf_free(&cat);
        if (err) return err;
        if ((err = add_dec(t, VKPT__D_BYTELEVEL, NULL, NULL, 0, 0, false))) return err;
        bool bos = get_bool(g, "tokenizer.ggml.add_bos_token", pd->add_bos);
        bool eos = get_bool(g, "tokenizer.ggml.add_eos_token", false);
        if ((err = set_post(t, bos ? t->sp.bos : -1, eos ? t->sp.eos : -1))) return err;
    } else {
        t->model = VKPT__M_WORDPIECE;
        t->kind = "wordpiece";
        t->wp_max_chars = 0; /* llama.cpp's WordPiece has no word-length limit */
        if (!(t->cont_prefix = vkpt_strdup("##"))) return vkpt_fail(VKPT_ENOMEM, "model");
        t->cont_prefix_n = 2;
        vkpt__norm b = {.kind = VKPT__N_BERT,
                        .clean = true,
                        .chinese = true,
                        .lowercase = true,
                        .strip_accents = -1};
        if ((err = add_norm(t, b))) return err;
        vkpt__pre p = {.kind = VKPT__P_BERT};
        if ((err = add_pre(t, p))) return err;
        if ((err = add_dec(t, VKPT__D_WORDPIECE, "##", NULL, 0, 0, true))) return err;
        if (t->sp.cls < 0) t->sp.cls = t->sp.bos;
        bool cls = get_bool(g, "tokenizer.ggml.add_bos_token", true);
        bool sep = get_bool(g, "tokenizer.ggml.add_sep_token", true);
        if ((err = set_post(t, cls ? t->sp.cls : -1, sep ? t->sp.sep : -1))) return err;
    }
    /* token strings for chat templates */
    int32_t ids[7] = {t->sp.bos, t->sp.eos, t->sp.unk, t->sp.sep, t->sp.pad, t->sp.cls, t->sp.mask};
    for (int i = 0; i < 7; i++) {
        if (ids[i] < 0) continue;
        vkpt_span s;
        vkpt_gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)ids[i], &s);
        if (!(t->tok_strings[i] = vkpt_strndup(s.p, s.n)))
            return vkpt_fail(VKPT_ENOMEM, "specials");
    }
    if ((err = vkpt__tok_finish(t))) return err;
    vkpt__tok_add_eog(t, get_id(g, "tokenizer.ggml.eot_token_id", nv));
    vkpt__tok_add_eog(t, get_id(g, "tokenizer.ggml.eom_token_id", nv));
    vkpt_span tpl;
    if (!vkpt_gguf_get_str(g, "tokenizer.chat_template", &tpl) &&
        (err = vkpt__tok_set_template(t, tpl.p, tpl.n, false)))
        return err;
    if (!vkpt_gguf_get_str(g, "tokenizer.chat_template.tool_use", &tpl) &&
        (err = vkpt__tok_set_template(t, tpl.p, tpl.n, true)))
        return err;
    return 0;
}

int vkpt__tok_open_gguf_file(const char *path, vkpt_tokenizer **out);
int vkpt__tok_open_gguf_file(const char *path, vkpt_tokenizer **out)
{
    vkpt_gguf *g;
    int err = vkpt_gguf_open(path, &g);
    if (err) return err;
    err = vkpt_tokenizer_create_gguf(g, out);
    vkpt_gguf_close(g);
    return err;
}
