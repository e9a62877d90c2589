/* vkpt base: the error table, the thread-local error detail, replaceable
 * allocation hooks, the logging chokepoint and the clock.
 *
 * Invariants: nothing here allocates through anything but the hooks; the log
 * level and sink are process-wide settings written before threads start (a
 * racing write is benign: an int and a pointer pair, read per call). */
#define _GNU_SOURCE
#include "vkpt/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- errors ---------------------------------------------------------------- */

const char *vkpt_err_name(int err)
{
    switch (err) {
    case 0: return "VKPT_OK";
#define X(name, code, msg) \
    case code: return "VKPT_E" #name;
        VKPT_ERR_MAP(X)
#undef X
    default: return "VKPT_E?";
    }
}

const char *vkpt_strerror(int err)
{
    switch (err) {
    case 0: return "success";
#define X(name, code, msg) \
    case code: return msg;
        VKPT_ERR_MAP(X)
#undef X
    default: return "unknown error";
    }
}

static _Thread_local char tls_msg[1024];
static _Thread_local int tls_code;

int vkpt_fail(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_msg, sizeof tls_msg, fmt, ap);
    va_end(ap);
    tls_code = err;
    return err;
}

const char *vkpt_errmsg(int err)
{
    if (tls_code == err && tls_msg[0]) return tls_msg;
    return vkpt_strerror(err);
}

void vkpt_errclear(void)
{
    tls_msg[0] = 0;
    tls_code = 0;
}

/* ---- allocation ------------------------------------------------------------ */

static vkpt_alloc_hooks g_hooks = {malloc, realloc, free};

void vkpt_set_alloc_hooks(const vkpt_alloc_hooks *hooks)
{
    if (hooks)
        g_hooks = *hooks;
    else
        g_hooks = (vkpt_alloc_hooks){malloc, realloc, free};
}

void *vkpt_malloc(size_t n)
{
    return g_hooks.malloc_fn(n ? n : 1);
}

void *vkpt_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size) return NULL;
    size_t n = count * size;
    void *p = g_hooks.malloc_fn(n ? n : 1);
    if (p) memset(p, 0, n);
    return p;
}

void *vkpt_realloc(void *p, size_t n)
{
    return g_hooks.realloc_fn(p, n ? n : 1);
}

void vkpt_free(void *p)
{
    if (p) g_hooks.free_fn(p);
}

char *vkpt_strndup(const char *s, size_t n)
{
    char *d = vkpt_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

char *vkpt_strdup(const char *s)
{
    return s ? vkpt_strndup(s, strlen(s)) : NULL;
}

/* ---- logging --------------------------------------------------------------- */

static int g_level = -1;
static vkpt_log_sink g_sink;
static void *g_sink_ud;

int vkpt_log_get_level(void)
{
    if (g_level < 0) {
        const char *e = getenv("VKPT_LOG");
        int lvl = VKPT_LOG_INFO;
        if (e) {
            static const char *names[] = {"error", "warn", "info", "debug", "trace"};
            for (int i = 0; i < 5; i++)
                if (!strcasecmp(e, names[i])) lvl = i;
        }
        g_level = lvl;
    }
    return g_level;
}

void vkpt_log_set_level(int level)
{
    g_level = level;
}

void vkpt_log_set_sink(vkpt_log_sink sink, void *ud)
{
    g_sink = sink;
    g_sink_ud = ud;
}

void vkpt_logv(int level, const char *fmt, va_list ap)
{
    if (level > vkpt_log_get_level()) return;
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    if (g_sink) {
        g_sink(level, buf, g_sink_ud);
        return;
    }
    static const char *tags[] = {"error", "warn", "info", "debug", "trace"};
    fprintf(stderr, "vkpt %s: %s\n", tags[level < 0 ? 0 : level > 4 ? 4 : level], buf);
}

void vkpt_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vkpt_logv(level, fmt, ap);
    va_end(ap);
}

uint64_t vkpt_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
