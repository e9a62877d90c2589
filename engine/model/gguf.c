/* GGUF reader and writer (format versions 2 and 3, little-endian).
 *
 * Reader invariants: after vkpt_gguf_open* succeeds, every key, value,
 * string, array element and tensor byte range recorded here lies inside the
 * mapping; keys and tensor names are unique; tensor shapes are non-empty,
 * products do not overflow, rows are whole blocks of a known type, and data
 * offsets are aligned and inside the data section. Parsing is a single
 * bounds-checked cursor; nothing is dereferenced before it is checked.
 *
 * The writer buffers metadata in memory and streams tensor data through a
 * callback into a temporary file renamed into place when complete. */
#define _GNU_SOURCE
#include "gguf.h"

#include "quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC             0x46554747u /* "GGUF" */
#define GGUF_DEFAULT_ALIGNMENT 32
#define MAX_ARRAY_DEPTH        8

typedef struct gguf_kv {
    vkpt_span key;
    uint32_t type;
    uint64_t off;       /* value offset in the file (for arrays: first element) */
    uint32_t elem_type; /* arrays */
    uint64_t n;         /* arrays: element count */
    uint64_t *str_off;  /* arrays of strings: offset of each element's length field */
} gguf_kv;

struct vkpt_gguf {
    const uint8_t *base;
    size_t size;
    bool mapped;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_off;
    int64_t n_kv;
    gguf_kv *kv;
    int64_t *kv_sorted; /* indices sorted by key */
    int64_t n_tensors;
    vkpt_gguf_tensor *tensors;
    int64_t *t_sorted;
};

/* ---- cursor ------------------------------------------------------------------ */

typedef struct cur {
    const uint8_t *p;
    size_t size, off;
} cur;

static bool rd(cur *c, void *dst, size_t n)
{
    if (n > c->size - c->off) return false;
    memcpy(dst, c->p + c->off, n);
    c->off += n;
    return true;
}

static bool skip(cur *c, uint64_t n)
{
    if (n > c->size - c->off) return false;
    c->off += (size_t)n;
    return true;
}

static bool rd_str(cur *c, vkpt_span *s)
{
    uint64_t n;
    if (!rd(c, &n, 8) || n > c->size - c->off) return false;
    s->p = (const char *)c->p + c->off;
    s->n = (size_t)n;
    c->off += (size_t)n;
    return true;
}

static const uint32_t k_scalar_size[VKPT_GGUF_VTYPE_COUNT] = {
    [VKPT_GGUF_U8] = 1,  [VKPT_GGUF_I8] = 1,  [VKPT_GGUF_U16] = 2, [VKPT_GGUF_I16] = 2,
    [VKPT_GGUF_U32] = 4, [VKPT_GGUF_I32] = 4, [VKPT_GGUF_F32] = 4, [VKPT_GGUF_BOOL] = 1,
    [VKPT_GGUF_U64] = 8, [VKPT_GGUF_I64] = 8, [VKPT_GGUF_F64] = 8,
};

static const char *vtype_name(uint32_t t)
{
    static const char *names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return t < VKPT_GGUF_VTYPE_COUNT ? names[t] : "unknown";
}

static int key_fail(vkpt_span key, const char *what)
{
    return vkpt_fail(VKPT_EFORMAT, "GGUF key '%.*s': %s", (int)(key.n > 200 ? 200 : key.n), key.p,
                     what);
}

/* Skip one value of type t (validating it); depth bounds nested arrays. */
static int skip_value(cur *c, uint32_t t, vkpt_span key, int depth)
{
    if (t >= VKPT_GGUF_VTYPE_COUNT) return key_fail(key, "unknown value type");
    if (t == VKPT_GGUF_STRING) {
        vkpt_span s;
        return rd_str(c, &s) ? 0 : key_fail(key, "string runs past the end of the file");
    }
    if (t != VKPT_GGUF_ARRAY) {
        if (t == VKPT_GGUF_BOOL) {
            uint8_t b;
            if (!rd(c, &b, 1)) return key_fail(key, "value runs past the end of the file");
            if (b > 1) return key_fail(key, "bool is neither 0 nor 1");
            return 0;
        }
        return skip(c, k_scalar_size[t]) ? 0 : key_fail(key, "value runs past the end of the file");
    }
    if (depth >= MAX_ARRAY_DEPTH) return key_fail(key, "arrays nested too deeply");
    uint32_t et;
    uint64_t n;
    if (!rd(c, &et, 4) || !rd(c, &n, 8)) return key_fail(key, "array header runs past the end");
    if (et >= VKPT_GGUF_VTYPE_COUNT) return key_fail(key, "array of unknown element type");
    if (et != VKPT_GGUF_STRING && et != VKPT_GGUF_ARRAY) {
        uint64_t es = k_scalar_size[et];
        if (n > (c->size - c->off) / es)
            return key_fail(key, "array runs past the end of the file");
        if (et == VKPT_GGUF_BOOL) {
            for (uint64_t i = 0; i < n; i++)
                if (c->p[c->off + i] > 1)
                    return key_fail(key, "bool array holds a value other than 0/1");
        }
        c->off += (size_t)(n * es);
        return 0;
    }
    /* each element takes at least 8 bytes: bounds n before looping */
    if (n > (c->size - c->off) / 8) return key_fail(key, "array runs past the end of the file");
    for (uint64_t i = 0; i < n; i++) {
        int err = skip_value(c, et, key, depth + 1);
        if (err) return err;
    }
    return 0;
}

static int span_cmp(vkpt_span a, vkpt_span b)
{
    size_t n = a.n < b.n ? a.n : b.n;
    int r = memcmp(a.p, b.p, n);
    if (r) return r;
    return a.n < b.n ? -1 : a.n > b.n;
}

/* qsort_r is a GNU extension with a stable signature on glibc: use it so
 * concurrent opens do not share a global. */
static int cmp_kv_r(const void *a, const void *b, void *g)
{
    const vkpt_gguf *gg = g;
    return span_cmp(gg->kv[*(const int64_t *)a].key, gg->kv[*(const int64_t *)b].key);
}
static int cmp_t_r(const void *a, const void *b, void *g)
{
    const vkpt_gguf *gg = g;
    return span_cmp(gg->tensors[*(const int64_t *)a].name, gg->tensors[*(const int64_t *)b].name);
}

static int parse(vkpt_gguf *g)
{
    cur c = {g->base, g->size, 0};
    uint32_t magic, version;
    uint64_t n_tensors, n_kv;
    if (!rd(&c, &magic, 4) || magic != GGUF_MAGIC)
        return vkpt_fail(VKPT_EFORMAT, "not a GGUF file (bad magic)");
    if (!rd(&c, &version, 4)) return vkpt_fail(VKPT_EFORMAT, "GGUF header truncated");
    if (version == 1)
        return vkpt_fail(VKPT_EFORMAT, "GGUF version 1 is obsolete; convert the model again");
    if (version != 2 && version != 3) {
        if ((version & 0xffff) == 0 && (version >> 16))
            return vkpt_fail(VKPT_EFORMAT, "big-endian GGUF files are not supported");
        return vkpt_fail(VKPT_EFORMAT, "unsupported GGUF version %u", version);
    }
    g->version = version;
    if (!rd(&c, &n_tensors, 8) || !rd(&c, &n_kv, 8))
        return vkpt_fail(VKPT_EFORMAT, "GGUF header truncated");
    /* each KV takes >= 13 bytes, each tensor info >= 24: bound counts by the file */
    if (n_kv > (c.size - c.off) / 13)
        return vkpt_fail(VKPT_EFORMAT,
                         "GGUF header claims %llu metadata keys; the file is too small",
                         (unsigned long long)n_kv);
    if (n_tensors > (c.size - c.off) / 24)
        return vkpt_fail(VKPT_EFORMAT, "GGUF header claims %llu tensors; the file is too small",
                         (unsigned long long)n_tensors);
    g->n_kv = (int64_t)n_kv;
    g->kv = vkpt_calloc(n_kv ? n_kv : 1, sizeof *g->kv);
    g->kv_sorted = vkpt_calloc(n_kv ? n_kv : 1, sizeof *g->kv_sorted);
    if (!g->kv || !g->kv_sorted) return vkpt_fail(VKPT_ENOMEM, "GGUF metadata table");

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        if (!rd_str(&c, &kv->key))
            return vkpt_fail(VKPT_EFORMAT, "GGUF metadata key %llu runs past the end of the file",
                             (unsigned long long)i);
        if (!rd(&c, &kv->type, 4)) return key_fail(kv->key, "type runs past the end of the file");
        if (kv->type >= VKPT_GGUF_VTYPE_COUNT) return key_fail(kv->key, "unknown value type");
        if (kv->type == VKPT_GGUF_ARRAY) {
            size_t hdr = c.off;
            if (!rd(&c, &kv->elem_type, 4) || !rd(&c, &kv->n, 8))
                return key_fail(kv->key, "array header runs past the end");
            kv->off = c.off;
            c.off = hdr;
            int err = skip_value(&c, VKPT_GGUF_ARRAY, kv->key, 0);
            if (err) return err;
            if (kv->elem_type == VKPT_GGUF_STRING) {
                kv->str_off = vkpt_malloc((kv->n ? kv->n : 1) * sizeof *kv->str_off);
                if (!kv->str_off) return vkpt_fail(VKPT_ENOMEM, "GGUF string array index");
                cur s = {g->base, g->size, kv->off};
                for (uint64_t j = 0; j < kv->n; j++) {
                    kv->str_off[j] = s.off;
                    vkpt_span tmp;
                    rd_str(&s, &tmp); /* validated by skip_value */
                }
            }
        } else {
            kv->off = c.off;
            int err = skip_value(&c, kv->type, kv->key, 0);
            if (err) return err;
        }
        g->kv_sorted[i] = (int64_t)i;
    }
    qsort_r(g->kv_sorted, n_kv, sizeof *g->kv_sorted, cmp_kv_r, g);
    for (uint64_t i = 1; i < n_kv; i++)
        if (!span_cmp(g->kv[g->kv_sorted[i - 1]].key, g->kv[g->kv_sorted[i]].key))
            return key_fail(g->kv[g->kv_sorted[i]].key, "appears twice");

    int64_t ai = vkpt_gguf_find(g, "general.alignment");
    if (ai >= 0) {
        uint32_t a;
        int err = vkpt_gguf_get_u32(g, "general.alignment", &a);
        if (err) return err;
        if (a == 0 || (a & (a - 1)) || a > (1u << 24))
            return vkpt_fail(VKPT_EFORMAT,
                             "GGUF key 'general.alignment' = %u is not a power of two", a);
        g->alignment = a;
    }

    g->n_tensors = (int64_t)n_tensors;
    g->tensors = vkpt_calloc(n_tensors ? n_tensors : 1, sizeof *g->tensors);
    g->t_sorted = vkpt_calloc(n_tensors ? n_tensors : 1, sizeof *g->t_sorted);
    if (!g->tensors || !g->t_sorted) return vkpt_fail(VKPT_ENOMEM, "GGUF tensor table");
    for (uint64_t i = 0; i < n_tensors; i++) {
        vkpt_gguf_tensor *t = &g->tensors[i];
        if (!rd_str(&c, &t->name))
            return vkpt_fail(VKPT_EFORMAT, "GGUF tensor %llu: name runs past the end of the file",
                             (unsigned long long)i);
        int nl = (int)(t->name.n > 200 ? 200 : t->name.n);
        if (!rd(&c, &t->n_dims, 4) || t->n_dims == 0 || t->n_dims > VKPT_GGUF_MAX_DIMS)
            return vkpt_fail(VKPT_EFORMAT, "GGUF tensor '%.*s': %u dimensions (1..%d allowed)", nl,
                             t->name.p, t->n_dims, VKPT_GGUF_MAX_DIMS);
        uint64_t n_el = 1;
        for (int d = 0; d < VKPT_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            if (!rd(&c, &t->ne[d], 8))
                return vkpt_fail(VKPT_EFORMAT, "GGUF tensor '%.*s': shape runs past the end", nl,
                                 t->name.p);
            if (t->ne[d] == 0 || t->ne[d] > (1ull << 40) || n_el > (1ull << 62) / t->ne[d])
                return vkpt_fail(VKPT_EFORMAT, "GGUF tensor '%.*s': dimension %u = %llu is invalid",
                                 nl, t->name.p, d, (unsigned long long)t->ne[d]);
            n_el *= t->ne[d];
        }
        if (!rd(&c, &t->type, 4) || !rd(&c, &t->offset, 8))
            return vkpt_fail(VKPT_EFORMAT, "GGUF tensor '%.*s': info runs past the end", nl,
                             t->name.p);
        const vkpt_qtype_info *qi = vkpt_qtype_get(t->type);
        if (!qi)
            return vkpt_fail(VKPT_EFORMAT, "GGUF tensor '%.*s': unknown or unsupported type id %u",
                             nl, t->name.p, t->type);
        if (t->ne[0] % qi->block_elems)
            return vkpt_fail(VKPT_EFORMAT,
                             "GGUF tensor '%.*s': row of %llu elements is not a whole "
                             "number of %s blocks (%u)",
                             nl, t->name.p, (unsigned long long)t->ne[0], qi->name,
                             qi->block_elems);
        t->size = n_el / qi->block_elems * qi->block_bytes;
        g->t_sorted[i] = (int64_t)i;
    }
    qsort_r(g->t_sorted, n_tensors, sizeof *g->t_sorted, cmp_t_r, g);
    for (uint64_t i = 1; i < n_tensors; i++) {
        vkpt_span n = g->tensors[g->t_sorted[i]].name;
        if (!span_cmp(g->tensors[g->t_sorted[i - 1]].name, n))
            return vkpt_fail(VKPT_EFORMAT, "GGUF tensor '%.*s' appears twice",
                             (int)(n.n > 200 ? 200 : n.n), n.p);
    }

    uint64_t data = (c.off + g->alignment - 1) / g->alignment * g->alignment;
    if (n_tensors && data > g->size)
        return vkpt_fail(VKPT_EFORMAT, "GGUF file ends before its tensor data begins");
    g->data_off = data;
    uint64_t avail = g->size > data ? g->size - data : 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        vkpt_gguf_tensor *t = &g->tensors[i];
        int nl = (int)(t->name.n > 200 ? 200 : t->name.n);
        if (t->offset % g->alignment)
            return vkpt_fail(
                VKPT_EFORMAT, "GGUF tensor '%.*s': data offset %llu is not aligned to %llu", nl,
                t->name.p, (unsigned long long)t->offset, (unsigned long long)g->alignment);
        if (t->offset > avail || t->size > avail - t->offset)
            return vkpt_fail(
                VKPT_EFORMAT,
                "GGUF tensor '%.*s': data [%llu, +%llu) lies beyond the end of the file "
                "(truncated download?)",
                nl, t->name.p, (unsigned long long)t->offset, (unsigned long long)t->size);
        t->data = g->base + data + t->offset;
    }
    return 0;
}

static int open_common(vkpt_gguf *g, vkpt_gguf **out)
{
    int err = parse(g);
    if (err) {
        vkpt_gguf_close(g);
        return err;
    }
    *out = g;
    return 0;
}

int vkpt_gguf_open_mem(const void *data, size_t size, vkpt_gguf **out)
{
    if (!out || (!data && size)) return vkpt_fail(VKPT_EINVAL, "vkpt_gguf_open_mem: NULL");
    *out = NULL;
    vkpt_gguf *g = vkpt_calloc(1, sizeof *g);
    if (!g) return vkpt_fail(VKPT_ENOMEM, "GGUF");
    g->base = data;
    g->size = size;
    return open_common(g, out);
}

int vkpt_gguf_open(const char *path, vkpt_gguf **out)
{
    if (!path || !out) return vkpt_fail(VKPT_EINVAL, "vkpt_gguf_open: NULL");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vkpt_fail(VKPT_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return vkpt_fail(VKPT_EIO, "%s: not a regular file", path);
    }
    if (st.st_size < 24) {
        close(fd);
        return vkpt_fail(VKPT_EFORMAT, "%s: %lld bytes is too small for a GGUF file", path,
                         (long long)st.st_size);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return vkpt_fail(VKPT_EIO, "%s: mmap: %s", path, strerror(errno));
    vkpt_gguf *g = vkpt_calloc(1, sizeof *g);
    if (!g) {
        munmap(m, (size_t)st.st_size);
        return vkpt_fail(VKPT_ENOMEM, "GGUF");
    }
    g->base = m;
    g->size = (size_t)st.st_size;
    g->mapped = true;
    int err = open_common(g, out);
    if (err) return vkpt_fail(err, "%s: %s", path, vkpt_errmsg(err));
    return 0;
}

void vkpt_gguf_close(vkpt_gguf *g)
{
    if (!g) return;
    if (g->kv)
        for (int64_t i = 0; i < g->n_kv; i++) vkpt_free(g->kv[i].str_off);
    vkpt_free(g->kv);
    vkpt_free(g->kv_sorted);
    vkpt_free(g->tensors);
    vkpt_free(g->t_sorted);
    if (g->mapped) munmap((void *)g->base, g->size);
    vkpt_free(g);
}

uint32_t vkpt_gguf_version(const vkpt_gguf *g)
{
    return g->version;
}
uint64_t vkpt_gguf_alignment(const vkpt_gguf *g)
{
    return g->alignment;
}
size_t vkpt_gguf_file_size(const vkpt_gguf *g)
{
    return g->size;
}
int64_t vkpt_gguf_n_kv(const vkpt_gguf *g)
{
    return g->n_kv;
}

int64_t vkpt_gguf_find(const vkpt_gguf *g, const char *key)
{
    vkpt_span k = {key, strlen(key)};
    int64_t lo = 0, hi = g->n_kv - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int r = span_cmp(g->kv[g->kv_sorted[mid]].key, k);
        if (!r) return g->kv_sorted[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

vkpt_span vkpt_gguf_key_at(const vkpt_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? g->kv[i].key : (vkpt_span){"", 0};
}

int vkpt_gguf_type_at(const vkpt_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? (int)g->kv[i].type : -1;
}

/* Read a scalar of type t at offset off as int64/uint64/double. */
typedef struct num {
    bool is_int, is_signed;
    int64_t i;
    uint64_t u;
    double f;
} num;

static bool read_num(const uint8_t *p, uint32_t t, num *n)
{
    memset(n, 0, sizeof *n);
    n->is_int = true;
    switch (t) {
    case VKPT_GGUF_U8: n->u = p[0]; break;
    case VKPT_GGUF_BOOL: n->u = p[0]; break;
    case VKPT_GGUF_I8: n->i = (int8_t)p[0], n->is_signed = true; break;
    case VKPT_GGUF_U16: {
        uint16_t v;
        memcpy(&v, p, 2);
        n->u = v;
        break;
    }
    case VKPT_GGUF_I16: {
        int16_t v;
        memcpy(&v, p, 2);
        n->i = v, n->is_signed = true;
        break;
    }
    case VKPT_GGUF_U32: {
        uint32_t v;
        memcpy(&v, p, 4);
        n->u = v;
        break;
    }
    case VKPT_GGUF_I32: {
        int32_t v;
        memcpy(&v, p, 4);
        n->i = v, n->is_signed = true;
        break;
    }
    case VKPT_GGUF_U64: memcpy(&n->u, p, 8); break;
    case VKPT_GGUF_I64: memcpy(&n->i, p, 8), n->is_signed = true; break;
    case VKPT_GGUF_F32: {
        float v;
        memcpy(&v, p, 4);
        n->f = v, n->is_int = false;
        break;
    }
    case VKPT_GGUF_F64: memcpy(&n->f, p, 8), n->is_int = false; break;
    default: return false;
    }
    if (n->is_int) {
        if (n->is_signed)
            n->f = (double)n->i;
        else
            n->f = (double)n->u, n->i = (int64_t)n->u;
    }
    return true;
}

static int get_num(const vkpt_gguf *g, const char *key, num *n)
{
    int64_t i = vkpt_gguf_find(g, key);
    if (i < 0) return vkpt_fail(VKPT_ENOTFOUND, "GGUF key '%s' is missing", key);
    const gguf_kv *kv = &g->kv[i];
    if (!read_num(g->base + kv->off, kv->type, n))
        return vkpt_fail(VKPT_EFORMAT, "GGUF key '%s' is a %s, expected a number", key,
                         vtype_name(kv->type));
    return 0;
}

static int int_in_range(const char *key, const num *n, int64_t lo, uint64_t hi, int64_t *out)
{
    if (!n->is_int)
        return vkpt_fail(VKPT_EFORMAT, "GGUF key '%s' is a float, expected an integer", key);
    if (n->is_signed ? (n->i < lo || (n->i >= 0 && (uint64_t)n->i > hi)) : n->u > hi)
        return vkpt_fail(VKPT_EFORMAT, "GGUF key '%s' = %lld is out of range", key,
                         n->is_signed ? (long long)n->i : (long long)n->u);
    *out = n->is_signed ? n->i : (int64_t)n->u;
    return 0;
}

int vkpt_gguf_get_u32(const vkpt_gguf *g, const char *key, uint32_t *out)
{
    num n;
    int64_t v = 0;
    int err = get_num(g, key, &n);
    if (!err) err = int_in_range(key, &n, 0, UINT32_MAX, &v);
    if (!err) *out = (uint32_t)v;
    return err;
}

int vkpt_gguf_get_i32(const vkpt_gguf *g, const char *key, int32_t *out)
{
    num n;
    int64_t v = 0;
    int err = get_num(g, key, &n);
    if (!err) err = int_in_range(key, &n, INT32_MIN, INT32_MAX, &v);
    if (!err) *out = (int32_t)v;
    return err;
}

int vkpt_gguf_get_u64(const vkpt_gguf *g, const char *key, uint64_t *out)
{
    num n;
    int err = get_num(g, key, &n);
    if (err) return err;
    if (!n.is_int || (n.is_signed && n.i < 0))
        return vkpt_fail(VKPT_EFORMAT, "GGUF key '%s' is not a non-negative integer", key);
    *out = n.is_signed ? (uint64_t)n.i : n.u;
    return 0;
}

int vkpt_gguf_get_f32(const vkpt_gguf *g, const char *key, float *out)
{
    num n;
    int err = get_num(g, key, &n);
    if (!err) *out = (float)n.f;
    return err;
}

int vkpt_gguf_get_bool(const vkpt_gguf *g, const char *key, bool *out)
{
    int64_t i = vkpt_gguf_find(g, key);
    if (i < 0) return vkpt_fail(VKPT_ENOTFOUND, "GGUF key '%s' is missing", key);
    if (g->kv[i].type != VKPT_GGUF_BOOL)
        return vkpt_fail(VKPT_EFORMAT, "GGUF key '%s' is a %s, expected a bool", key,
                         vtype_name(g->kv[i].type));
    *out = g->base[g->kv[i].off] != 0;
    return 0;
}

int vkpt_gguf_get_str(const vkpt_gguf *g, const char *key, vkpt_span *out)
{
    int64_t i = vkpt_gguf_find(g, key);
    if (i < 0) return vkpt_fail(VKPT_ENOTFOUND, "GGUF key '%s' is missing", key);
    if (g->kv[i].type != VKPT_GGUF_STRING)
        return vkpt_fail(VKPT_EFORMAT, "GGUF key '%s' is a %s, expected a string", key,
                         vtype_name(g->kv[i].type));
    cur c = {g->base, g->size, g->kv[i].off};
    rd_str(&c, out);
    return 0;
}

static int get_arr_kv(const vkpt_gguf *g, const char *key, const gguf_kv **out)
{
    int64_t i = vkpt_gguf_find(g, key);
    if (i < 0) return vkpt_fail(VKPT_ENOTFOUND, "GGUF key '%s' is missing", key);
    if (g->kv[i].type != VKPT_GGUF_ARRAY)
        return vkpt_fail(VKPT_EFORMAT, "GGUF key '%s' is a %s, expected an array", key,
                         vtype_name(g->kv[i].type));
    *out = &g->kv[i];
    return 0;
}

int vkpt_gguf_get_arr(const vkpt_gguf *g, const char *key, int *elem_type, uint64_t *n)
{
    const gguf_kv *kv;
    int err = get_arr_kv(g, key, &kv);
    if (err) return err;
    if (elem_type) *elem_type = (int)kv->elem_type;
    if (n) *n = kv->n;
    return 0;
}

int vkpt_gguf_arr_str(const vkpt_gguf *g, const char *key, uint64_t i, vkpt_span *out)
{
    const gguf_kv *kv;
    int err = get_arr_kv(g, key, &kv);
    if (err) return err;
    if (kv->elem_type != VKPT_GGUF_STRING)
        return vkpt_fail(VKPT_EFORMAT, "GGUF key '%s' is an array of %s, expected strings", key,
                         vtype_name(kv->elem_type));
    if (i >= kv->n)
        return vkpt_fail(VKPT_ERANGE, "GGUF key '%s': index %llu of %llu", key,
                         (unsigned long long)i, (unsigned long long)kv->n);
    cur c = {g->base, g->size, kv->str_off[i]};
    rd_str(&c, out);
    return 0;
}

static int arr_num(const vkpt_gguf *g, const char *key, uint64_t i, num *n)
{
    const gguf_kv *kv;
    int err = get_arr_kv(g, key, &kv);
    if (err) return err;
    if (kv->elem_type >= VKPT_GGUF_VTYPE_COUNT || kv->elem_type == VKPT_GGUF_STRING ||
        kv->elem_type == VKPT_GGUF_ARRAY)
        return vkpt_fail(VKPT_EFORMAT, "GGUF key '%s' is an array of %s, expected numbers", key,
                         vtype_name(kv->elem_type));
    if (i >= kv->n)
        return vkpt_fail(VKPT_ERANGE, "GGUF key '%s': index %llu of %llu", key,
                         (unsigned long long)i, (unsigned long long)kv->n);
    read_num(g->base + kv->off + i * k_scalar_size[kv->elem_type], kv->elem_type, n);
    return 0;
}

int vkpt_gguf_arr_i64(const vkpt_gguf *g, const char *key, uint64_t i, int64_t *out)
{
    num n;
    int err = arr_num(g, key, i, &n);
    if (err) return err;
    if (!n.is_int)
        return vkpt_fail(VKPT_EFORMAT, "GGUF key '%s' holds floats, expected integers", key);
    *out = n.i;
    return 0;
}

int vkpt_gguf_arr_f32(const vkpt_gguf *g, const char *key, uint64_t i, float *out)
{
    num n;
    int err = arr_num(g, key, i, &n);
    if (!err) *out = (float)n.f;
    return err;
}

const void *vkpt_gguf_arr_data(const vkpt_gguf *g, const char *key, int *elem_type, uint64_t *n)
{
    int64_t i = vkpt_gguf_find(g, key);
    if (i < 0 || g->kv[i].type != VKPT_GGUF_ARRAY) return NULL;
    const gguf_kv *kv = &g->kv[i];
    if (kv->elem_type == VKPT_GGUF_STRING || kv->elem_type == VKPT_GGUF_ARRAY) return NULL;
    if (elem_type) *elem_type = (int)kv->elem_type;
    if (n) *n = kv->n;
    return g->base + kv->off;
}

int64_t vkpt_gguf_n_tensors(const vkpt_gguf *g)
{
    return g->n_tensors;
}

const vkpt_gguf_tensor *vkpt_gguf_tensor_at(const vkpt_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const vkpt_gguf_tensor *vkpt_gguf_find_tensor(const vkpt_gguf *g, const char *name)
{
    vkpt_span k = {name, strlen(name)};
    int64_t lo = 0, hi = g->n_tensors - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int r = span_cmp(g->tensors[g->t_sorted[mid]].name, k);
        if (!r) return &g->tensors[g->t_sorted[mid]];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* ---- writer ---------------------------------------------------------------- */

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
} wbuf;

static int wb_put(wbuf *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->n + n) nc *= 2;
        void *np = vkpt_realloc(b->p, nc);
        if (!np) return vkpt_fail(VKPT_ENOMEM, "GGUF writer");
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
    return 0;
}

static int wb_str(wbuf *b, const char *s, size_t n)
{
    uint64_t len = n;
    int err = wb_put(b, &len, 8);
    return err ? err : wb_put(b, s, n);
}

typedef struct wtensor {
    char *name;
    uint32_t type, n_dims;
    uint64_t ne[VKPT_GGUF_MAX_DIMS];
    uint64_t size, offset;
} wtensor;

struct vkpt_gguf_writer {
    wbuf kv;
    uint64_t n_kv;
    char **keys;
    uint64_t cap_keys;
    wtensor *t;
    uint64_t n_t, cap_t;
    uint64_t alignment;
};

int vkpt_gguf_writer_create(vkpt_gguf_writer **out)
{
    *out = vkpt_calloc(1, sizeof **out);
    if (!*out) return vkpt_fail(VKPT_ENOMEM, "GGUF writer");
    (*out)->alignment = GGUF_DEFAULT_ALIGNMENT;
    return 0;
}

void vkpt_gguf_writer_destroy(vkpt_gguf_writer *w)
{
    if (!w) return;
    vkpt_free(w->kv.p);
    for (uint64_t i = 0; i < w->n_kv; i++) vkpt_free(w->keys[i]);
    vkpt_free(w->keys);
    for (uint64_t i = 0; i < w->n_t; i++) vkpt_free(w->t[i].name);
    vkpt_free(w->t);
    vkpt_free(w);
}

static int w_key(vkpt_gguf_writer *w, const char *key, uint32_t type)
{
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key))
            return vkpt_fail(VKPT_EEXISTS, "GGUF writer: key '%s' set twice", key);
    if (w->n_kv == w->cap_keys) {
        uint64_t nc = w->cap_keys ? w->cap_keys * 2 : 32;
        void *nk = vkpt_realloc(w->keys, nc * sizeof *w->keys);
        if (!nk) return vkpt_fail(VKPT_ENOMEM, "GGUF writer");
        w->keys = nk;
        w->cap_keys = nc;
    }
    if (!(w->keys[w->n_kv] = vkpt_strdup(key))) return vkpt_fail(VKPT_ENOMEM, "GGUF writer");
    w->n_kv++;
    int err = wb_str(&w->kv, key, strlen(key));
    return err ? err : wb_put(&w->kv, &type, 4);
}

#define W_SCALAR(fn, ctype, vt)                           \
    int fn(vkpt_gguf_writer *w, const char *key, ctype v) \
    {                                                     \
        int err = w_key(w, key, vt);                      \
        return err ? err : wb_put(&w->kv, &v, sizeof v);  \
    }
W_SCALAR(vkpt_gguf_writer_set_i32, int32_t, VKPT_GGUF_I32)
W_SCALAR(vkpt_gguf_writer_set_u64, uint64_t, VKPT_GGUF_U64)
W_SCALAR(vkpt_gguf_writer_set_f32, float, VKPT_GGUF_F32)
#undef W_SCALAR

int vkpt_gguf_writer_set_u32(vkpt_gguf_writer *w, const char *key, uint32_t v)
{
    if (!strcmp(key, "general.alignment") && (v == 0 || (v & (v - 1))))
        return vkpt_fail(VKPT_EINVAL, "GGUF writer: alignment %u is not a power of two", v);
    int err = w_key(w, key, VKPT_GGUF_U32);
    if (!err && !strcmp(key, "general.alignment")) w->alignment = v;
    return err ? err : wb_put(&w->kv, &v, sizeof v);
}

int vkpt_gguf_writer_set_bool(vkpt_gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v;
    int err = w_key(w, key, VKPT_GGUF_BOOL);
    return err ? err : wb_put(&w->kv, &b, 1);
}

int vkpt_gguf_writer_set_str(vkpt_gguf_writer *w, const char *key, const char *v)
{
    int err = w_key(w, key, VKPT_GGUF_STRING);
    return err ? err : wb_str(&w->kv, v, strlen(v));
}

int vkpt_gguf_writer_set_arr_str(vkpt_gguf_writer *w, const char *key, const char *const *strs,
                                 uint64_t n)
{
    int err = w_key(w, key, VKPT_GGUF_ARRAY);
    uint32_t et = VKPT_GGUF_STRING;
    if (!err) err = wb_put(&w->kv, &et, 4);
    if (!err) err = wb_put(&w->kv, &n, 8);
    for (uint64_t i = 0; i < n && !err; i++) err = wb_str(&w->kv, strs[i], strlen(strs[i]));
    return err;
}

int vkpt_gguf_writer_set_arr(vkpt_gguf_writer *w, const char *key, int elem_type, const void *data,
                             uint64_t n)
{
    if (elem_type < 0 || elem_type >= VKPT_GGUF_VTYPE_COUNT || elem_type == VKPT_GGUF_STRING ||
        elem_type == VKPT_GGUF_ARRAY)
        return vkpt_fail(VKPT_EINVAL,
                         "GGUF writer: '%s': arrays of type %d are written another way", key,
                         elem_type);
    int err = w_key(w, key, VKPT_GGUF_ARRAY);
    uint32_t et = (uint32_t)elem_type;
    if (!err) err = wb_put(&w->kv, &et, 4);
    if (!err) err = wb_put(&w->kv, &n, 8);
    if (!err) err = wb_put(&w->kv, data, n * k_scalar_size[elem_type]);
    return err;
}

int vkpt_gguf_writer_copy_kv(vkpt_gguf_writer *w, const vkpt_gguf *src,
                             bool (*skipfn)(vkpt_span, void *), void *ud)
{
    for (int64_t i = 0; i < src->n_kv; i++) {
        const gguf_kv *kv = &src->kv[i];
        if (skipfn && skipfn(kv->key, ud)) continue;
        char *key = vkpt_strndup(kv->key.p, kv->key.n);
        if (!key) return vkpt_fail(VKPT_ENOMEM, "GGUF writer");
        int err = w_key(w, key, kv->type);
        vkpt_free(key);
        if (err) return err;
        /* copy the value's bytes verbatim: from its start to its end */
        size_t start = kv->type == VKPT_GGUF_ARRAY ? kv->off - 12 : kv->off;
        cur c = {src->base, src->size, start};
        skip_value(&c, kv->type, kv->key, 0);
        if ((err = wb_put(&w->kv, src->base + start, c.off - start))) return err;
        if (!strcmp(w->keys[w->n_kv - 1], "general.alignment")) {
            uint32_t a;
            if (!vkpt_gguf_get_u32(src, "general.alignment", &a)) w->alignment = a;
        }
    }
    return 0;
}

int vkpt_gguf_writer_add_tensor(vkpt_gguf_writer *w, const char *name, uint32_t type,
                                uint32_t n_dims, const uint64_t *ne)
{
    const vkpt_qtype_info *qi = vkpt_qtype_get(type);
    if (!qi || n_dims == 0 || n_dims > VKPT_GGUF_MAX_DIMS || ne[0] % qi->block_elems)
        return vkpt_fail(VKPT_EINVAL, "GGUF writer: tensor '%s': bad type or shape", name);
    for (uint64_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name))
            return vkpt_fail(VKPT_EEXISTS, "GGUF writer: tensor '%s' added twice", name);
    if (w->n_t == w->cap_t) {
        uint64_t nc = w->cap_t ? w->cap_t * 2 : 64;
        void *nt = vkpt_realloc(w->t, nc * sizeof *w->t);
        if (!nt) return vkpt_fail(VKPT_ENOMEM, "GGUF writer");
        w->t = nt;
        w->cap_t = nc;
    }
    wtensor *t = &w->t[w->n_t];
    memset(t, 0, sizeof *t);
    if (!(t->name = vkpt_strdup(name))) return vkpt_fail(VKPT_ENOMEM, "GGUF writer");
    t->type = type;
    t->n_dims = n_dims;
    uint64_t n_el = 1;
    for (uint32_t d = 0; d < VKPT_GGUF_MAX_DIMS; d++) {
        t->ne[d] = d < n_dims ? ne[d] : 1;
        n_el *= t->ne[d];
    }
    t->size = n_el / qi->block_elems * qi->block_bytes;
    w->n_t++;
    return 0;
}

static int fwrite_all(FILE *f, const void *p, size_t n, const char *path)
{
    if (n && fwrite(p, 1, n, f) != n)
        return vkpt_fail(VKPT_EIO, "%s: write failed: %s", path, strerror(errno));
    return 0;
}

int vkpt_gguf_writer_write(vkpt_gguf_writer *w, const char *path, vkpt_gguf_fill_fn fill, void *ud)
{
    wbuf hdr = {0};
    uint32_t magic = GGUF_MAGIC, version = 3;
    int err = wb_put(&hdr, &magic, 4);
    if (!err) err = wb_put(&hdr, &version, 4);
    if (!err) err = wb_put(&hdr, &w->n_t, 8);
    if (!err) err = wb_put(&hdr, &w->n_kv, 8);
    if (!err) err = wb_put(&hdr, w->kv.p, w->kv.n);
    uint64_t off = 0, max_size = 0;
    for (uint64_t i = 0; i < w->n_t && !err; i++) {
        wtensor *t = &w->t[i];
        t->offset = off;
        off = (off + t->size + w->alignment - 1) / w->alignment * w->alignment;
        if (t->size > max_size) max_size = t->size;
        err = wb_str(&hdr, t->name, strlen(t->name));
        if (!err) err = wb_put(&hdr, &t->n_dims, 4);
        if (!err) err = wb_put(&hdr, t->ne, 8 * t->n_dims);
        if (!err) err = wb_put(&hdr, &t->type, 4);
        if (!err) err = wb_put(&hdr, &t->offset, 8);
    }
    static const uint8_t zeros[64] = {0};
    while (!err && hdr.n % w->alignment) err = wb_put(&hdr, zeros, 1);
    if (err) {
        vkpt_free(hdr.p);
        return err;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        vkpt_free(hdr.p);
        return vkpt_fail(VKPT_EIO, "%s: %s", tmp, strerror(errno));
    }
    err = fwrite_all(f, hdr.p, hdr.n, path);
    vkpt_free(hdr.p);
    uint8_t *buf = NULL;
    if (!err && max_size && !(buf = vkpt_malloc(max_size)))
        err = vkpt_fail(VKPT_ENOMEM, "tensor buffer");
    uint64_t pos = 0;
    for (uint64_t i = 0; i < w->n_t && !err; i++) {
        wtensor *t = &w->t[i];
        while (!err && pos < t->offset) {
            size_t k = t->offset - pos < sizeof zeros ? (size_t)(t->offset - pos) : sizeof zeros;
            err = fwrite_all(f, zeros, k, path);
            pos += k;
        }
        if (!err)
            err =
                fill ? fill(ud, i, buf, t->size) : vkpt_fail(VKPT_EINVAL, "no tensor data source");
        if (!err) err = fwrite_all(f, buf, t->size, path);
        pos += t->size;
    }
    vkpt_free(buf);
    if (fclose(f) != 0 && !err) err = vkpt_fail(VKPT_EIO, "%s: %s", tmp, strerror(errno));
    if (!err && rename(tmp, path) != 0) err = vkpt_fail(VKPT_EIO, "%s: %s", path, strerror(errno));
    if (err) unlink(tmp);
    return err;
}
