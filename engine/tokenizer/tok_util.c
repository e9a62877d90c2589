/* engine/tokenizer utilities: growable buffers, UTF-8 decoding with U+FFFD
 * substitution of maximal subparts (the rule Hugging Face's decoders and
 * WHATWG's TextDecoder follow), Unicode properties from utf8proc, and the
 * GPT-2 byte <-> character table. */
#define _GNU_SOURCE
#include "tok_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <utf8proc.h>

/* ---- buffers ------------------------------------------------------------------- */

int vkpt__buf_reserve(vkpt__buf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) {
        if (cap > SIZE_MAX / 2) return vkpt_fail(VKPT_ENOMEM, "buffer of %zu bytes", b->n + extra);
        cap *= 2;
    }
    char *p = vkpt_realloc(b->p, cap);
    if (!p) return vkpt_fail(VKPT_ENOMEM, "buffer of %zu bytes", cap);
    b->p = p;
    b->cap = cap;
    return 0;
}

int vkpt__buf_put(vkpt__buf *b, const void *p, size_t n)
{
    int err = vkpt__buf_reserve(b, n);
    if (err) return err;
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int vkpt__buf_putc(vkpt__buf *b, char c)
{
    return vkpt__buf_put(b, &c, 1);
}

int vkpt__buf_puts(vkpt__buf *b, const char *s)
{
    return vkpt__buf_put(b, s, strlen(s));
}

int vkpt__buf_printf(vkpt__buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[256];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return vkpt_fail(VKPT_EINVAL, "format '%s'", fmt);
    if ((size_t)n < sizeof tmp) return vkpt__buf_put(b, tmp, (size_t)n);
    int err = vkpt__buf_reserve(b, (size_t)n);
    if (err) return err;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
    return 0;
}

char *vkpt__buf_take(vkpt__buf *b, size_t *len)
{
    if (!b->p && vkpt__buf_reserve(b, 0)) return NULL;
    b->p[b->n] = 0;
    char *p = b->p;
    if (len) *len = b->n;
    b->p = NULL;
    b->n = b->cap = 0;
    return p;
}

void vkpt__buf_free(vkpt__buf *b)
{
    vkpt_free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* ---- UTF-8 ------------------------------------------------------------------------ */

size_t vkpt__utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    uint32_t v;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        v = c & 0x0F;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        v = c & 0x07;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *cp = 0xFFFD;
        return 1;
    }
    size_t i = 1;
    for (; i <= need; i++) {
        if (i >= n) break;
        uint8_t d = s[i];
        if (d < lo || d > hi) break;
        lo = 0x80;
        hi = 0xBF;
        v = (v << 6) | (d & 0x3F);
    }
    if (i <= need) {
        *cp = 0xFFFD;
        return i;
    }
    *cp = v;
    return need + 1;
}

size_t vkpt__utf8_put(uint32_t cp, char *out)
{
    uint8_t *o = (uint8_t *)out;
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xC0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

int vkpt__buf_put_cp(vkpt__buf *b, uint32_t cp)
{
    char tmp[4];
    return vkpt__buf_put(b, tmp, vkpt__utf8_put(cp, tmp));
}

size_t vkpt__utf8_valid_prefix(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = vkpt__utf8_next(s + i, n - i, &cp);
        if (cp == 0xFFFD && !(k == 3 && s[i] == 0xEF && s[i + 1] == 0xBF && s[i + 2] == 0xBD))
            return i;
        i += k;
    }
    return n;
}

int vkpt__utf8_sanitize(vkpt__buf *b, const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0;
    int err = vkpt__buf_reserve(b, n);
    if (err) return err;
    while (i < n) {
        size_t ok = vkpt__utf8_valid_prefix(u + i, n - i);
        if ((err = vkpt__buf_put(b, u + i, ok))) return err;
        i += ok;
        if (i < n) {
            uint32_t cp;
            i += vkpt__utf8_next(u + i, n - i, &cp);
            if ((err = vkpt__buf_put(b, "\xEF\xBF\xBD", 3))) return err;
        }
    }
    return 0;
}

/* ---- Unicode properties ------------------------------------------------------------- */

bool vkpt__u_is_whitespace(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

bool vkpt__u_is_js_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
}

bool vkpt__u_is_punct(uint32_t cp)
{
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO: return true;
    default: return false;
    }
}

bool vkpt__u_is_bert_punct(uint32_t cp)
{
    if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
        (cp >= 123 && cp <= 126))
        return true;
    return vkpt__u_is_punct(cp);
}

bool vkpt__u_is_control(uint32_t cp)
{
    if (cp == '\t' || cp == '\n' || cp == '\r') return false;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CS: return true;
    default: return false;
    }
}

bool vkpt__u_is_cjk(uint32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

bool vkpt__u_is_mark(uint32_t cp)
{
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME: return true;
    default: return false;
    }
}

bool vkpt__u_is_alnum(uint32_t cp)
{
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO: return true;
    default: return false;
    }
}

/* ---- GPT-2 byte table ------------------------------------------------------------------
 * Bytes that are printable Latin-1 (! .. ~, ¡ .. ¬, ® .. ÿ) stand for
 * themselves; the other 68 get U+0100 + n in byte order. */

static bool byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

/* The 68 others, in byte order: 0x00-0x20, 0x7F-0xA0, 0xAD. */
uint32_t vkpt__byte_to_cp(uint8_t b)
{
    if (byte_is_printable(b)) return b;
    if (b <= 0x20) return 0x100u + b;
    if (b >= 0x7F && b <= 0xA0) return 0x100u + 33 + (b - 0x7Fu);
    return 0x100u + 67; /* 0xAD */
}

int vkpt__cp_to_byte(uint32_t cp)
{
    if (cp < 0x100) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    unsigned n = cp - 0x100;
    return n < 33 ? (int)n : n < 67 ? (int)(0x7F + n - 33) : 0xAD;
}
