/* GGUF reader (v2 and v3) and writer.
 *
 * The reader maps the file read-only and validates everything before anyone
 * uses it: every length, count, string, array, tensor shape, type, offset
 * and size is checked against the file, so a truncated, corrupt or hostile
 * file is a VKPT_EFORMAT with a message naming the key or tensor at fault,
 * never a crash or an out-of-bounds read. After a successful open every
 * accessor below is safe and O(1) or O(log n).
 *
 * Strings returned are spans into the mapping (not NUL-terminated); they live
 * as long as the vkpt_gguf. Numeric array data may be unaligned: read it with
 * memcpy or the typed element getters.
 */
#ifndef VKPT_GGUF_H
#define VKPT_GGUF_H

#include "vkpt/base.h"

#include <stdbool.h>

/* Metadata value types, as numbered by the GGUF format. */
enum vkpt_gguf_vtype {
    VKPT_GGUF_U8 = 0,
    VKPT_GGUF_I8 = 1,
    VKPT_GGUF_U16 = 2,
    VKPT_GGUF_I16 = 3,
    VKPT_GGUF_U32 = 4,
    VKPT_GGUF_I32 = 5,
    VKPT_GGUF_F32 = 6,
    VKPT_GGUF_BOOL = 7,
    VKPT_GGUF_STRING = 8,
    VKPT_GGUF_ARRAY = 9,
    VKPT_GGUF_U64 = 10,
    VKPT_GGUF_I64 = 11,
    VKPT_GGUF_F64 = 12,
    VKPT_GGUF_VTYPE_COUNT
};

typedef struct vkpt_gguf vkpt_gguf;

#define VKPT_GGUF_MAX_DIMS 4

typedef struct vkpt_gguf_tensor {
    vkpt_span name;
    uint32_t n_dims;
    uint64_t ne[VKPT_GGUF_MAX_DIMS]; /* ne[0] is the contiguous dimension; unused dims are 1 */
    uint32_t type;                   /* enum vkpt_qtype (GGUF tensor type id) */
    uint64_t offset;                 /* from the start of the data section */
    uint64_t size;                   /* bytes */
    const uint8_t *data;             /* into the mapping */
} vkpt_gguf_tensor;

/* Open and validate `path`. */
int vkpt_gguf_open(const char *path, vkpt_gguf **out);
/* Same over a caller-owned buffer that must outlive the result (fuzzing,
 * tests). */
int vkpt_gguf_open_mem(const void *data, size_t size, vkpt_gguf **out);
void vkpt_gguf_close(vkpt_gguf *g);

uint32_t vkpt_gguf_version(const vkpt_gguf *g);
uint64_t vkpt_gguf_alignment(const vkpt_gguf *g);
size_t vkpt_gguf_file_size(const vkpt_gguf *g);

/* Metadata. Keys are looked up by exact name. */
int64_t vkpt_gguf_n_kv(const vkpt_gguf *g);
/* Index of `key`, or -1. */
int64_t vkpt_gguf_find(const vkpt_gguf *g, const char *key);
vkpt_span vkpt_gguf_key_at(const vkpt_gguf *g, int64_t i);
int vkpt_gguf_type_at(const vkpt_gguf *g, int64_t i);

/* Typed getters: 0, VKPT_ENOTFOUND when the key is absent, VKPT_EFORMAT
 * (message names the key) when its type does not convert. Integers convert
 * between widths when the value fits; get_f32 accepts F32, F64 and integers. */
int vkpt_gguf_get_u32(const vkpt_gguf *g, const char *key, uint32_t *out);
int vkpt_gguf_get_i32(const vkpt_gguf *g, const char *key, int32_t *out);
int vkpt_gguf_get_u64(const vkpt_gguf *g, const char *key, uint64_t *out);
int vkpt_gguf_get_f32(const vkpt_gguf *g, const char *key, float *out);
int vkpt_gguf_get_bool(const vkpt_gguf *g, const char *key, bool *out);
int vkpt_gguf_get_str(const vkpt_gguf *g, const char *key, vkpt_span *out);

/* Arrays: element type and count; then elements by index. */
int vkpt_gguf_get_arr(const vkpt_gguf *g, const char *key, int *elem_type, uint64_t *n);
int vkpt_gguf_arr_str(const vkpt_gguf *g, const char *key, uint64_t i, vkpt_span *out);
/* Numeric element i converted like the scalar getters. */
int vkpt_gguf_arr_i64(const vkpt_gguf *g, const char *key, uint64_t i, int64_t *out);
int vkpt_gguf_arr_f32(const vkpt_gguf *g, const char *key, uint64_t i, float *out);
/* Raw packed data of a numeric array (possibly unaligned), or NULL. */
const void *vkpt_gguf_arr_data(const vkpt_gguf *g, const char *key, int *elem_type, uint64_t *n);

/* Tensors. */
int64_t vkpt_gguf_n_tensors(const vkpt_gguf *g);
const vkpt_gguf_tensor *vkpt_gguf_tensor_at(const vkpt_gguf *g, int64_t i);
/* By exact name, or NULL. */
const vkpt_gguf_tensor *vkpt_gguf_find_tensor(const vkpt_gguf *g, const char *name);

/* ---- writer ----------------------------------------------------------------
 * Collects metadata and tensor descriptions, then streams the file: header,
 * metadata, tensor infos, aligned data. Tensor data comes from a callback so
 * writing a 40 GB file needs no 40 GB buffer. */
typedef struct vkpt_gguf_writer vkpt_gguf_writer;

int vkpt_gguf_writer_create(vkpt_gguf_writer **out);
void vkpt_gguf_writer_destroy(vkpt_gguf_writer *w);
int vkpt_gguf_writer_set_u32(vkpt_gguf_writer *w, const char *key, uint32_t v);
int vkpt_gguf_writer_set_i32(vkpt_gguf_writer *w, const char *key, int32_t v);
int vkpt_gguf_writer_set_u64(vkpt_gguf_writer *w, const char *key, uint64_t v);
int vkpt_gguf_writer_set_f32(vkpt_gguf_writer *w, const char *key, float v);
int vkpt_gguf_writer_set_bool(vkpt_gguf_writer *w, const char *key, bool v);
int vkpt_gguf_writer_set_str(vkpt_gguf_writer *w, const char *key, const char *v);
/* Arrays of strings (`strs`, n) or of numbers (`data` of elem_type, n). */
int vkpt_gguf_writer_set_arr_str(vkpt_gguf_writer *w, const char *key, const char *const *strs,
                                 uint64_t n);
int vkpt_gguf_writer_set_arr(vkpt_gguf_writer *w, const char *key, int elem_type, const void *data,
                             uint64_t n);
/* Copy every metadata key of `src` except those for which skip(key) is true. */
int vkpt_gguf_writer_copy_kv(vkpt_gguf_writer *w, const vkpt_gguf *src,
                             bool (*skip)(vkpt_span key, void *ud), void *ud);

/* Fills `dst` (size bytes) with tensor data; returns 0 or a negative error. */
typedef int (*vkpt_gguf_fill_fn)(void *ud, uint64_t tensor_index, void *dst, uint64_t size);
int vkpt_gguf_writer_add_tensor(vkpt_gguf_writer *w, const char *name, uint32_t type,
                                uint32_t n_dims, const uint64_t *ne);
/* Write everything to `path` (atomically: a temporary file renamed into
 * place). `fill` is called once per tensor, in the order they were added. */
int vkpt_gguf_writer_write(vkpt_gguf_writer *w, const char *path, vkpt_gguf_fill_fn fill, void *ud);

#endif
