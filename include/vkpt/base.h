/* vkpt base: error codes, allocation hooks, logging and small value types.
 *
 * Every fallible vkpt function returns int: 0 on success or a negative
 * VKPT_E* code. A human-readable detail for the most recent failure on the
 * calling thread (which key, which tensor, which limit) is kept by
 * vkpt_errmsg(); codes are for programs, the detail is for people.
 */
#ifndef VKPT_BASE_H
#define VKPT_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VKPT_VERSION_MAJOR  0
#define VKPT_VERSION_MINOR  1
#define VKPT_VERSION_PATCH  0
#define VKPT_VERSION_STRING "0.1.0"

/* The one error list. Codes are appended, never reused or renumbered. */
#define VKPT_ERR_MAP(X)                                         \
    X(INVAL, -1, "invalid argument")                            \
    X(NOMEM, -2, "out of host memory")                          \
    X(DEVMEM, -3, "out of device memory")                       \
    X(DEVLOST, -4, "GPU device lost")                           \
    X(VULKAN, -5, "Vulkan call failed")                         \
    X(NODEV, -6, "no matching Vulkan device")                   \
    X(UNSUPPORTED, -7, "not supported on this device or build") \
    X(IO, -8, "input/output error")                             \
    X(FORMAT, -9, "malformed or unsupported file")              \
    X(RANGE, -10, "value out of range")                         \
    X(NOTFOUND, -11, "not found")                               \
    X(EXISTS, -12, "already exists")                            \
    X(BUSY, -13, "resource busy")                               \
    X(TIMEOUT, -14, "timed out")                                \
    X(CANCELED, -15, "canceled")                                \
    X(FULL, -16, "capacity exhausted")                          \
    X(PARSE, -17, "parse error")                                \
    X(STATE, -18, "operation not valid in the current state")   \
    X(TOOBIG, -19, "too large")                                 \
    X(VALIDATION, -20, "Vulkan validation layer reported an error")

enum vkpt_err {
    VKPT_OK = 0,
#define VKPT__ERR_ENUM(name, code, msg) VKPT_E##name = code,
    VKPT_ERR_MAP(VKPT__ERR_ENUM)
#undef VKPT__ERR_ENUM
};

/* "VKPT_EINVAL" for -1; "VKPT_OK" for 0; "VKPT_E?" for unknown codes. */
const char *vkpt_err_name(int err);
/* Static description of a code ("invalid argument"). */
const char *vkpt_strerror(int err);

/* Record a detail for the failure being returned and return `err`, so that
 * error paths read `return vkpt_fail(VKPT_EFORMAT, "tensor %s: ...", name);`.
 * The detail is thread-local and stays until the next vkpt_fail on the thread. */
int vkpt_fail(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The detail recorded by the last vkpt_fail on this thread, or the code's
 * vkpt_strerror() text when none was recorded for it. Never NULL. */
const char *vkpt_errmsg(int err);
/* Forget the recorded detail. */
void vkpt_errclear(void);

/* Allocation. Every heap allocation in vkpt goes through these, so tests can
 * replace them (and fail the Nth one). vkpt_malloc(0) returns a unique
 * pointer; vkpt_free(NULL) is a no-op. */
void *vkpt_malloc(size_t n);
void *vkpt_calloc(size_t count, size_t size);
void *vkpt_realloc(void *p, size_t n);
void vkpt_free(void *p);
char *vkpt_strdup(const char *s);
char *vkpt_strndup(const char *s, size_t n);

typedef struct vkpt_alloc_hooks {
    void *(*malloc_fn)(size_t n);
    void *(*realloc_fn)(void *p, size_t n);
    void (*free_fn)(void *p);
} vkpt_alloc_hooks;
/* Replace the allocator (NULL restores libc's). Call before any other vkpt
 * function; memory must be freed by the allocator that made it. */
void vkpt_set_alloc_hooks(const vkpt_alloc_hooks *hooks);

/* Logging: one chokepoint with levels, to stderr unless a sink is set.
 * The level comes from VKPT_LOG (error|warn|info|debug|trace), default info. */
enum vkpt_log_level {
    VKPT_LOG_ERROR = 0,
    VKPT_LOG_WARN = 1,
    VKPT_LOG_INFO = 2,
    VKPT_LOG_DEBUG = 3,
    VKPT_LOG_TRACE = 4,
};
typedef void (*vkpt_log_sink)(int level, const char *msg, void *ud);
void vkpt_log_set_level(int level);
int vkpt_log_get_level(void);
void vkpt_log_set_sink(vkpt_log_sink sink, void *ud);
void vkpt_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vkpt_logv(int level, const char *fmt, va_list ap);

#define VKPT_LOGE(...) vkpt_log(VKPT_LOG_ERROR, __VA_ARGS__)
#define VKPT_LOGW(...) vkpt_log(VKPT_LOG_WARN, __VA_ARGS__)
#define VKPT_LOGI(...) vkpt_log(VKPT_LOG_INFO, __VA_ARGS__)
#define VKPT_LOGD(...)                                                                     \
    do {                                                                                   \
        if (vkpt_log_get_level() >= VKPT_LOG_DEBUG) vkpt_log(VKPT_LOG_DEBUG, __VA_ARGS__); \
    } while (0)

/* A borrowed byte range. */
typedef struct vkpt_span {
    const char *p;
    size_t n;
} vkpt_span;

/* Monotonic clock in nanoseconds. */
uint64_t vkpt_now_ns(void);

#ifdef __cplusplus
}
#endif
#endif
