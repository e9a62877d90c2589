/* safetensors reader: one file or a sharded set (model.safetensors.index.json).
 *
 * Files are mapped read-only; the JSON header of each is validated (dtype
 * known, shape sane, data_offsets inside the file and equal to the shape's
 * byte size) before any tensor is handed out. A bad file is VKPT_EFORMAT
 * naming the file and tensor. */
#ifndef VKPT_SAFETENSORS_H
#define VKPT_SAFETENSORS_H

#include "vkpt/base.h"

#include <stdbool.h>

enum vkpt_st_dtype {
    VKPT_ST_F32 = 0,
    VKPT_ST_F16,
    VKPT_ST_BF16,
    VKPT_ST_F64,
    VKPT_ST_I64,
    VKPT_ST_I32,
    VKPT_ST_I16,
    VKPT_ST_I8,
    VKPT_ST_U8,
    VKPT_ST_BOOL,
    VKPT_ST_COUNT
};

#define VKPT_ST_MAX_DIMS 8

typedef struct vkpt_st_tensor {
    char *name;
    int dtype; /* enum vkpt_st_dtype */
    uint32_t n_dims;
    uint64_t shape[VKPT_ST_MAX_DIMS]; /* row-major: shape[n_dims-1] is contiguous */
    uint64_t size;                    /* bytes */
    const uint8_t *data;
} vkpt_st_tensor;

typedef struct vkpt_safetensors vkpt_safetensors;

/* Open `path`: a .safetensors file, a model.safetensors.index.json, or a
 * folder holding either (model.safetensors or the index). */
int vkpt_st_open(const char *path, vkpt_safetensors **out);
/* Parse one file's bytes (caller keeps them alive): for tests and fuzzing. */
int vkpt_st_open_mem(const void *data, size_t size, vkpt_safetensors **out);
void vkpt_st_close(vkpt_safetensors *st);
size_t vkpt_st_count(const vkpt_safetensors *st);
const vkpt_st_tensor *vkpt_st_at(const vkpt_safetensors *st, size_t i);
const vkpt_st_tensor *vkpt_st_find(const vkpt_safetensors *st, const char *name);
/* Element size of a dtype in bytes (0 if unknown). */
uint32_t vkpt_st_dtype_size(int dtype);
const char *vkpt_st_dtype_name(int dtype);

#endif
