/* engine/tokenizer decoding: ids back to text, whole or streamed, and stop
 * strings over streamed text.
 *
 * At load every token gets its decoded piece (tok_build_pieces): the bytes
 * of a byte-level token, "▁" replaced by a space, <0xNN> byte-fallback tokens
 * as one raw byte, WordPiece continuations without their "##". Decoding then
 * concatenates pieces with the few context rules Hugging Face's decoders
 * have (strip the leading space of the text, a space before non-continuation
 * WordPiece tokens, an end-of-word suffix) and assembles UTF-8 with the
 * WHATWG decoder, so incomplete characters wait for their next byte and
 * invalid ones become U+FFFD exactly where Hugging Face's decoders put them.
 * decode() is the streaming decoder run over all ids, plus the end-of-text
 * rules, so the two cannot disagree.
 */
#define _GNU_SOURCE
#include "tok_model.h"

#include <stdio.h>

/* ---- pieces ------------------------------------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "<0xNN>" -> byte, or -1. */
static int byte_token(const char *s, size_t n)
{
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Apply the per-token decoder steps (everything before a Fuse) to token `id`,
 * writing its piece to `b`. */
static int piece_of(const vkpt_tokenizer *t, int32_t id, vkpt__buf *b, uint8_t *flags)
{
    const char *s = t->tok_pool + t->tok_off[id];
    size_t n = t->tok_len[id];
    b->n = 0;
    int err = vkpt__buf_put(b, s, n);
    vkpt__buf tmp = {0};
    for (int i = 0; i < t->n_dec && !err; i++) {
        const vkpt__dec *d = &t->dec[i];
        if (d->kind == VKPT__D_FUSE) break;
        switch (d->kind) {
        case VKPT__D_BYTELEVEL: {
            if (*flags & VKPT__PF_ADDED) break;
            tmp.n = 0;
            bool ok = true;
            for (size_t k = 0; k < b->n && ok;) {
                uint32_t cp;
                k += vkpt__utf8_next((const uint8_t *)b->p + k, b->n - k, &cp);
                int by = vkpt__cp_to_byte(cp);
                if (by < 0)
                    ok = false;
                else
                    err = vkpt__buf_putc(&tmp, (char)by);
            }
            if (ok && !err) {
                b->n = 0;
                err = vkpt__buf_put(b, tmp.p, tmp.n);
            }
            break;
        }
        case VKPT__D_REPLACE:
        case VKPT__D_METASPACE: {
            const char *from = d->kind == VKPT__D_REPLACE ? d->str : d->content;
            size_t fn = d->kind == VKPT__D_REPLACE ? d->str_n : d->content_n;
            const char *to = d->kind == VKPT__D_REPLACE ? d->content : " ";
            size_t tn = d->kind == VKPT__D_REPLACE ? d->content_n : 1;
            if (!fn) break;
            tmp.n = 0;
            for (size_t k = 0; k < b->n && !err;) {
                if (k + fn <= b->n && !memcmp(b->p + k, from, fn)) {
                    err = vkpt__buf_put(&tmp, to, tn);
                    k += fn;
                } else {
                    err = vkpt__buf_putc(&tmp, b->p[k++]);
                }
            }
            b->n = 0;
            if (!err) err = vkpt__buf_put(b, tmp.p ? tmp.p : "", tmp.n);
            break;
        }
        case VKPT__D_BYTEFALLBACK: {
            int by = byte_token(b->p, b->n);
            if (by >= 0) {
                b->p[0] = (char)by;
                b->n = 1;
                *flags |= VKPT__PF_BYTE;
            }
            break;
        }
        case VKPT__D_WORDPIECE:
            if (d->str_n && b->n >= d->str_n && !memcmp(b->p, d->str, d->str_n)) {
                memmove(b->p, b->p + d->str_n, b->n - d->str_n);
                b->n -= d->str_n;
                *flags |= VKPT__PF_CONT;
            }
            break;
        case VKPT__D_STRIP: {
            /* before a Fuse, Strip works per token */
            size_t a = 0, e = b->n;
            for (int k = 0; k < d->start && a < e && (size_t)(e - a) >= d->content_n &&
                            !memcmp(b->p + a, d->content, d->content_n);
                 k++)
                a += d->content_n;
            for (int k = 0; k < d->stop && e - a >= d->content_n &&
                            !memcmp(b->p + e - d->content_n, d->content, d->content_n);
                 k++)
                e -= d->content_n;
            memmove(b->p, b->p + a, e - a);
            b->n = e - a;
            break;
        }
        default: break;
        }
    }
    vkpt__buf_free(&tmp);
    return err;
}

int vkpt__tok_build_pieces(vkpt_tokenizer *t)
{
    size_t n = (size_t)t->n_vocab;
    t->piece_off = vkpt_calloc(n, sizeof *t->piece_off);
    t->piece_len = vkpt_calloc(n, sizeof *t->piece_len);
    if (!t->piece_off || !t->piece_len) return vkpt_fail(VKPT_ENOMEM, "token pieces");
    vkpt__buf pool = {0}, b = {0};
    int err = 0;
    t->max_piece = 0;
    for (size_t i = 0; i < n && !err; i++) {
        if (t->pflags[i] & VKPT__PF_UNUSED) {
            t->piece_off[i] = (uint32_t)pool.n;
            continue;
        }
        if ((err = piece_of(t, (int32_t)i, &b, &t->pflags[i]))) break;
        if (pool.n + b.n > UINT32_MAX) {
            err = vkpt_fail(VKPT_ETOOBIG, "token pieces exceed 4 GiB");
            break;
        }
        t->piece_off[i] = (uint32_t)pool.n;
        t->piece_len[i] = (uint32_t)b.n;
        if (b.n > t->max_piece) t->max_piece = b.n;
        err = vkpt__buf_put(&pool, b.p ? b.p : "", b.n);
    }
    vkpt__buf_free(&b);
    if (err) {
        vkpt__buf_free(&pool);
        return err;
    }
    t->piece_pool = vkpt__buf_take(&pool, NULL);
    return t->piece_pool ? 0 : vkpt_fail(VKPT_ENOMEM, "token pieces");
}

/* ---- the streaming decoder --------------------------------------------------------- */

struct vkpt_detok {
    const vkpt_tokenizer *t;
    unsigned flags;
    /* WHATWG UTF-8 decoder state */
    uint32_t cp;
    int need, seen;
    uint8_t lo, hi;
    uint8_t held[4];
    /* context */
    size_t index;    /* tokens decoded so far */
    int strip_left;  /* leading `strip` chars still to drop from the text */
    bool started;    /* some text came out */
    bool pending_sp; /* BPE decoder: a suffix-space waiting for a next token */
    const vkpt__dec *strip, *wordpiece, *bpe, *meta;
    vkpt__buf wp; /* WordPiece token being cleaned up (grown once) */
    /* output */
    char *out;
    size_t out_n, out_cap;
};

static const vkpt__dec *dec_find(const vkpt_tokenizer *t, int kind, bool after_fuse)
{
    bool fused = false;
    for (int i = 0; i < t->n_dec; i++) {
        if (t->dec[i].kind == VKPT__D_FUSE) fused = true;
        if (t->dec[i].kind == kind && fused == after_fuse) return &t->dec[i];
    }
    return NULL;
}

void vkpt_detok_reset(vkpt_detok *d)
{
    d->cp = 0;
    d->need = d->seen = 0;
    d->lo = 0x80;
    d->hi = 0xBF;
    d->index = 0;
    d->started = false;
    d->pending_sp = false;
    d->strip_left = d->strip ? d->strip->start : 0;
    d->out_n = 0;
}

int vkpt_detok_create(const vkpt_tokenizer *t, unsigned flags, vkpt_detok **out)
{
    if (!t || !out) return vkpt_fail(VKPT_EINVAL, "detok: NULL argument");
    vkpt_detok *d = vkpt_calloc(1, sizeof *d);
    if (!d) return vkpt_fail(VKPT_ENOMEM, "detok");
    d->t = t;
    d->flags = flags;
    d->strip = dec_find(t, VKPT__D_STRIP, true);
    d->wordpiece = dec_find(t, VKPT__D_WORDPIECE, false);
    d->bpe = dec_find(t, VKPT__D_BPE, false);
    d->meta = dec_find(t, VKPT__D_METASPACE, false);
    d->out_cap = 3 * t->max_piece + 64;
    d->out = vkpt_malloc(d->out_cap);
    if (!d->out || vkpt__buf_reserve(&d->wp, t->max_piece + 64)) {
        vkpt__buf_free(&d->wp);
        vkpt_free(d->out);
        vkpt_free(d);
        return vkpt_fail(VKPT_ENOMEM, "detok buffer");
    }
    vkpt_detok_reset(d);
    *out = d;
    return 0;
}

void vkpt_detok_destroy(vkpt_detok *d)
{
    if (!d) return;
    vkpt_free(d->out);
    vkpt__buf_free(&d->wp);
    vkpt_free(d);
}

static void emit(vkpt_detok *d, const char *p, size_t n)
{
    /* the leading Strip of the whole text */
    const vkpt__dec *s = d->strip;
    while (!d->started && d->strip_left > 0 && n >= s->content_n && s->content_n &&
           !memcmp(p, s->content, s->content_n)) {
        p += s->content_n;
        n -= s->content_n;
        d->strip_left--;
    }
    if (!n) return;
    d->started = true;
    memcpy(d->out + d->out_n, p, n);
    d->out_n += n;
}

static void emit_fffd(vkpt_detok *d)
{
    emit(d, "\xEF\xBF\xBD", 3);
}

/* Feed bytes through the WHATWG UTF-8 decoder. */
static void feed(vkpt_detok *d, const uint8_t *p, size_t n)
{
    size_t run = 0; /* start of a run of complete ASCII/valid bytes to copy at once */
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (!d->need) {
            if (c < 0x80) continue;
            if (i > run) emit(d, (const char *)p + run, i - run);
            run = i + 1;
            if (c >= 0xC2 && c <= 0xDF) {
                d->need = 1;
                d->cp = c & 0x1F;
            } else if (c >= 0xE0 && c <= 0xEF) {
                if (c == 0xE0) d->lo = 0xA0;
                if (c == 0xED) d->hi = 0x9F;
                d->need = 2;
                d->cp = c & 0xF;
            } else if (c >= 0xF0 && c <= 0xF4) {
                if (c == 0xF0) d->lo = 0x90;
                if (c == 0xF4) d->hi = 0x8F;
                d->need = 3;
                d->cp = c & 0x7;
            } else {
                emit_fffd(d);
                continue;
            }
            d->held[0] = c;
            d->seen = 0;
            continue;
        }
        if (c < d->lo || c > d->hi) {
            /* invalid continuation: replace what was held, reprocess c */
            d->need = d->seen = 0;
            d->lo = 0x80;
            d->hi = 0xBF;
            emit_fffd(d);
            run = i;
            i--;
            continue;
        }
        d->lo = 0x80;
        d->hi = 0xBF;
        d->cp = (d->cp << 6) | (c & 0x3F);
        d->held[++d->seen] = c;
        run = i + 1;
        if (d->seen == d->need) {
            emit(d, (const char *)d->held, (size_t)d->need + 1);
            d->need = d->seen = 0;
        }
    }
    if (run < n && !d->need) emit(d, (const char *)p + run, n - run);
}

static void flush_utf8(vkpt_detok *d)
{
    if (d->need) {
        d->need = d->seen = 0;
        d->lo = 0x80;
        d->hi = 0xBF;
        emit_fffd(d);
    }
}

static const char *const cleanup_from[] = {" .",   " ?",  " !",  " ,",   " ' ",
                                           " n't", " 'm", " 's", " 've", " 're"};
static const char *const cleanup_to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};

/* Hugging Face's clean_up_tokenization: the replacements one after another.
 * Every replacement is shorter than what it replaces, so it runs in place
 * (no allocation in the token loop). */
static int cleanup_text(vkpt__buf *b)
{
    for (size_t r = 0; r < sizeof cleanup_from / sizeof cleanup_from[0]; r++) {
        size_t fn = strlen(cleanup_from[r]), tn = strlen(cleanup_to[r]);
        if (!b->n || !memmem(b->p, b->n, cleanup_from[r], fn)) continue;
        size_t w = 0;
        for (size_t k = 0; k < b->n;) {
            if (k + fn <= b->n && !memcmp(b->p + k, cleanup_from[r], fn)) {
                memcpy(b->p + w, cleanup_to[r], tn);
                w += tn;
                k += fn;
            } else {
                b->p[w++] = b->p[k++];
            }
        }
        b->n = w;
        b->p[w] = 0;
    }
    return 0;
}

/* Decode one token into d->out (appending). */
static void step(vkpt_detok *d, int32_t id)
{
    const vkpt_tokenizer *t = d->t;
    if (id < 0 || id >= t->n_vocab || (t->pflags[id] & VKPT__PF_UNUSED)) {
        if (t->unk < 0) return;
        id = t->unk;
    }
    uint8_t f = t->pflags[id];
    if ((d->flags & VKPT_DETOK_SKIP_SPECIAL) && (f & VKPT__PF_SPECIAL)) return;
    const char *p = t->piece_pool + t->piece_off[id];
    size_t n = t->piece_len[id];
    size_t i = d->index++;
    if (d->pending_sp) {
        feed(d, (const uint8_t *)" ", 1);
        d->pending_sp = false;
    }
    if (t->dec_join_space && i > 0) feed(d, (const uint8_t *)" ", 1);
    if (d->meta && i == 0 && n && p[0] == ' ') {
        p++;
        n--;
    }
    if (d->wordpiece) {
        /* Hugging Face's WordPiece decoder: the first token is kept as is
         * (prefix included), later ones lose the prefix or gain a space; then
         * each token is cleaned up on its own. */
        vkpt__buf *w = &d->wp;
        w->n = 0;
        if (i == 0 && (f & VKPT__PF_CONT))
            vkpt__buf_put(w, d->wordpiece->str, d->wordpiece->str_n);
        else if (i > 0 && !(f & VKPT__PF_CONT))
            vkpt__buf_putc(w, ' ');
        vkpt__buf_put(w, p, n);
        if (d->wordpiece->cleanup) cleanup_text(w);
        p = w->p;
        n = w->n;
    }
    if (d->bpe && d->bpe->str_n && n >= d->bpe->str_n &&
        !memcmp(p + n - d->bpe->str_n, d->bpe->str, d->bpe->str_n)) {
        n -= d->bpe->str_n;
        d->pending_sp = true;
    }
    if (f & VKPT__PF_ADDED) flush_utf8(d);
    feed(d, (const uint8_t *)p, n);
}

int vkpt_detok_push(vkpt_detok *d, int32_t id, vkpt_span *text)
{
    d->out_n = 0;
    step(d, id);
    text->p = d->out;
    text->n = d->out_n;
    return 0;
}

int vkpt_detok_flush(vkpt_detok *d, vkpt_span *text)
{
    d->out_n = 0;
    flush_utf8(d);
    d->pending_sp = false;
    text->p = d->out;
    text->n = d->out_n;
    return 0;
}

int vkpt_tokenizer_decode(const vkpt_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                          char **text_take, size_t *len)
{
    if (!t || (!ids && n) || !text_take) return vkpt_fail(VKPT_EINVAL, "decode: NULL argument");
    *text_take = NULL;
    vkpt_detok *d;
    int err = vkpt_detok_create(t, flags, &d);
    if (err) return err;
    vkpt__buf b = {0};
    err = vkpt__buf_reserve(&b, n * 4);
    for (size_t i = 0; i < n && !err; i++) {
        d->out_n = 0;
        step(d, ids[i]);
        err = vkpt__buf_put(&b, d->out, d->out_n);
    }
    if (!err) {
        d->out_n = 0;
        flush_utf8(d);
        err = vkpt__buf_put(&b, d->out, d->out_n);
    }
    /* the trailing part of a Strip after Fuse */
    if (!err && d->strip && d->strip->content_n) {
        for (int k = 0;
             k < d->strip->stop && b.n >= d->strip->content_n &&
             !memcmp(b.p + b.n - d->strip->content_n, d->strip->content, d->strip->content_n);
             k++)
            b.n -= d->strip->content_n;
    }
    if (!err && (flags & VKPT_DETOK_CLEANUP) && t->cleanup) err = cleanup_text(&b);
    vkpt_detok_destroy(d);
    if (err) {
        vkpt__buf_free(&b);
        return err;
    }
    *text_take = vkpt__buf_take(&b, len);
    return *text_take ? 0 : vkpt_fail(VKPT_ENOMEM, "decoded text");
}

/* ---- stop strings -------------------------------------------------------------------------- */

struct vkpt_stop {
    char **stops;
    size_t *lens;
    size_t n, max_len;
    vkpt__buf held; /* text not yet released */
    vkpt__buf out;
    bool done;
};

int vkpt_stop_create(const char *const *stops, size_t n_stops, vkpt_stop **out)
{
    if (!out || (!stops && n_stops)) return vkpt_fail(VKPT_EINVAL, "stop: NULL argument");
    vkpt_stop *s = vkpt_calloc(1, sizeof *s);
    if (!s) return vkpt_fail(VKPT_ENOMEM, "stop strings");
    s->stops = vkpt_calloc(n_stops ? n_stops : 1, sizeof *s->stops);
    s->lens = vkpt_calloc(n_stops ? n_stops : 1, sizeof *s->lens);
    if (!s->stops || !s->lens) goto nomem;
    for (size_t i = 0; i < n_stops; i++) {
        if (!stops[i]) continue;
        s->stops[s->n] = vkpt_strdup(stops[i]);
        if (!s->stops[s->n]) goto nomem;
        s->lens[s->n] = strlen(stops[i]);
        if (!s->lens[s->n]) {
            vkpt_free(s->stops[s->n]);
            continue; /* an empty stop string never matches */
        }
        if (s->lens[s->n] > s->max_len) s->max_len = s->lens[s->n];
        s->n++;
    }
    *out = s;
    return 0;
nomem:
    vkpt_stop_destroy(s);
    return vkpt_fail(VKPT_ENOMEM, "stop strings");
}

void vkpt_stop_destroy(vkpt_stop *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) vkpt_free(s->stops[i]);
    vkpt_free(s->stops);
    vkpt_free(s->lens);
    vkpt__buf_free(&s->held);
    vkpt__buf_free(&s->out);
    vkpt_free(s);
}

void vkpt_stop_reset(vkpt_stop *s)
{
    s->held.n = 0;
    s->out.n = 0;
    s->done = false;
}

int vkpt_stop_feed(vkpt_stop *s, const char *text, size_t n, vkpt_span *emit_out)
{
    s->out.n = 0;
    *emit_out = (vkpt_span){"", 0};
    if (s->done) return -1;
    int err = vkpt__buf_put(&s->held, text, n);
    if (err) return err;
    /* earliest match of any stop string */
    size_t best = SIZE_MAX;
    int which = -1;
    for (size_t i = 0; i < s->n; i++) {
        const char *h =
            s->held.n >= s->lens[i] ? memmem(s->held.p, s->held.n, s->stops[i], s->lens[i]) : NULL;
        if (h && (size_t)(h - s->held.p) < best) {
            best = (size_t)(h - s->held.p);
            which = (int)i;
        }
    }
    if (which >= 0) {
        if ((err = vkpt__buf_put(&s->out, s->held.p, best))) return err;
        s->held.n = 0;
        s->done = true;
        *emit_out = (vkpt_span){s->out.p, s->out.n};
        return which;
    }
    /* hold back the longest suffix that starts some stop string */
    size_t keep = 0;
    size_t lim = s->held.n < s->max_len ? s->held.n : s->max_len - 1;
    for (size_t k = lim; k > 0 && !keep; k--) {
        const char *suf = s->held.p + s->held.n - k;
        for (size_t i = 0; i < s->n; i++)
            if (s->lens[i] > k && !memcmp(s->stops[i], suf, k)) {
                keep = k;
                break;
            }
    }
    size_t rel = s->held.n - keep;
    if ((err = vkpt__buf_put(&s->out, s->held.p, rel))) return err;
    memmove(s->held.p, s->held.p + rel, keep);
    s->held.n = keep;
    *emit_out = (vkpt_span){s->out.p, s->out.n};
    return -1;
}

vkpt_span vkpt_stop_flush(vkpt_stop *s)
{
    s->out.n = 0;
    if (!s->done && s->held.n && !vkpt__buf_put(&s->out, s->held.p, s->held.n)) s->held.n = 0;
    return (vkpt_span){s->out.p ? s->out.p : "", s->out.n};
}
