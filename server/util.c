/* Growable buffers, JSON string escaping and UTF-8 repair for the server. */
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int srv_buf_reserve(srv_buf *b, size_t extra)
{
    if (b->oom) return VKPT_ENOMEM;
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = vkpt_realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return VKPT_ENOMEM;
    }
    b->p = p;
    b->cap = cap;
    b->p[b->n] = 0;
    return 0;
}

void srv_buf_append(srv_buf *b, const void *data, size_t n)
{
    if (srv_buf_reserve(b, n)) return;
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = 0;
}

void srv_buf_puts(srv_buf *b, const char *s)
{
    srv_buf_append(b, s, strlen(s));
}

void srv_buf_printf(srv_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int k = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if ((size_t)k < sizeof small) {
        srv_buf_append(b, small, (size_t)k);
        return;
    }
    if (srv_buf_reserve(b, (size_t)k)) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

void srv_buf_consume(srv_buf *b, size_t n)
{
    if (n >= b->n) {
        b->n = 0;
        if (b->p) b->p[0] = 0;
        return;
    }
    memmove(b->p, b->p + n, b->n - n);
    b->n -= n;
    b->p[b->n] = 0;
}

void srv_buf_reset(srv_buf *b)
{
    b->n = 0;
    b->oom = false;
    if (b->p) b->p[0] = 0;
}

void srv_buf_free(srv_buf *b)
{
    vkpt_free(b->p);
    memset(b, 0, sizeof *b);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is invalid or
 * truncated. */
static size_t utf8_valid_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        min = 0x10000;
    } else
        return 0;
    if (n < len) return 0;
    unsigned cp = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

/* Bytes of a maximal invalid subsequence starting at s (>= 1). */
static size_t utf8_invalid_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 1;
    if (want == 1) return 1;
    size_t i = 1;
    while (i < want && i < n && (s[i] & 0xC0) == 0x80) {
        /* The second byte's allowed range depends on the lead byte. */
        if (i == 1) {
            unsigned lo = 0x80, hi = 0xBF;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
            if (s[1] < lo || s[1] > hi) break;
        }
        i++;
    }
    return i;
}

void srv_utf8_sanitize(srv_buf *out, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_valid_len(u + i, n - i);
        if (k) {
            srv_buf_append(out, s + i, k);
            i += k;
        } else {
            srv_buf_append(out, "\xEF\xBF\xBD", 3);
            i += utf8_invalid_len(u + i, n - i);
        }
    }
}

void srv_buf_json_str(srv_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    srv_buf_append(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        if (c >= 0x80) {
            size_t k = utf8_valid_len(u + i, n - i);
            if (k) {
                srv_buf_append(b, s + i, k);
                i += k;
            } else {
                srv_buf_append(b, "\xEF\xBF\xBD", 3);
                i += utf8_invalid_len(u + i, n - i);
            }
            continue;
        }
        i++;
        switch (c) {
        case '"': srv_buf_append(b, "\\\"", 2); break;
        case '\\': srv_buf_append(b, "\\\\", 2); break;
        case '\n': srv_buf_append(b, "\\n", 2); break;
        case '\r': srv_buf_append(b, "\\r", 2); break;
        case '\t': srv_buf_append(b, "\\t", 2); break;
        case '\b': srv_buf_append(b, "\\b", 2); break;
        case '\f': srv_buf_append(b, "\\f", 2); break;
        default:
            if (c < 0x20 || c == 0x7F) {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                srv_buf_append(b, e, 6);
            } else {
                char ch = (char)c;
                srv_buf_append(b, &ch, 1);
            }
        }
    }
    srv_buf_append(b, "\"", 1);
}
