/* Small helpers shared by the server's modules: a growable byte buffer and
 * an intrusive doubly-linked list.
 *
 * srv_buf: a failed allocation sets `oom` and makes further appends no-ops,
 * so a long run of appends is checked once at the end (srv_buf_ok). */
#ifndef VKPT_SERVER_UTIL_H
#define VKPT_SERVER_UTIL_H

#include "vkpt/base.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct srv_buf {
    char *p; /* NUL-terminated when n > 0 or after srv_buf_reserve */
    size_t n, cap;
    bool oom;
} srv_buf;

int srv_buf_reserve(srv_buf *b, size_t extra);
void srv_buf_append(srv_buf *b, const void *data, size_t n);
void srv_buf_puts(srv_buf *b, const char *s);
void srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append `s` as a JSON string literal (quotes included); invalid UTF-8 becomes U+FFFD. */
void srv_buf_json_str(srv_buf *b, const char *s, size_t n);
/* Remove the first `n` bytes. */
void srv_buf_consume(srv_buf *b, size_t n);
void srv_buf_reset(srv_buf *b);
void srv_buf_free(srv_buf *b);
static inline bool srv_buf_ok(const srv_buf *b)
{
    return !b->oom;
}

/* Copy `n` bytes of possibly invalid UTF-8 into `out` as valid UTF-8 (each
 * maximal invalid subsequence becomes U+FFFD). */
void srv_utf8_sanitize(srv_buf *out, const char *s, size_t n);

/* Intrusive list: a head is a node whose next/prev point at itself. */
typedef struct srv_list {
    struct srv_list *next, *prev;
} srv_list;
static inline void srv_list_init(srv_list *h)
{
    h->next = h->prev = h;
}
static inline bool srv_list_empty(const srv_list *h)
{
    return h->next == h;
}
static inline void srv_list_push(srv_list *h, srv_list *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}
static inline void srv_list_remove(srv_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}
#define srv_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif
