/* safetensors: an 8-byte little-endian header length, a JSON header
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
 * then the data. Offsets are relative to the end of the header.
 *
 * Sharded checkpoints list "weight_map": {tensor: file} in
 * model.safetensors.index.json; each shard is opened once. Tensor names are
 * kept sorted for lookup; a name appearing twice is an error. */
#define _GNU_SOURCE
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct shard {
    const uint8_t *base;
    size_t size;
    bool mapped;
} shard;

struct vkpt_safetensors {
    shard *shards;
    size_t n_shards;
    vkpt_st_tensor *t;
    size_t n, cap;
};

static const struct {
    const char *name;
    uint32_t size;
} k_dtypes[VKPT_ST_COUNT] = {
    [VKPT_ST_F32] = {"F32", 4},   [VKPT_ST_F16] = {"F16", 2}, [VKPT_ST_BF16] = {"BF16", 2},
    [VKPT_ST_F64] = {"F64", 8},   [VKPT_ST_I64] = {"I64", 8}, [VKPT_ST_I32] = {"I32", 4},
    [VKPT_ST_I16] = {"I16", 2},   [VKPT_ST_I8] = {"I8", 1},   [VKPT_ST_U8] = {"U8", 1},
    [VKPT_ST_BOOL] = {"BOOL", 1},
};

uint32_t vkpt_st_dtype_size(int d)
{
    return d >= 0 && d < VKPT_ST_COUNT ? k_dtypes[d].size : 0;
}

const char *vkpt_st_dtype_name(int d)
{
    return d >= 0 && d < VKPT_ST_COUNT ? k_dtypes[d].name : "?";
}

void vkpt_st_close(vkpt_safetensors *st)
{
    if (!st) return;
    for (size_t i = 0; i < st->n; i++) vkpt_free(st->t[i].name);
    vkpt_free(st->t);
    for (size_t i = 0; i < st->n_shards; i++)
        if (st->shards[i].mapped) munmap((void *)st->shards[i].base, st->shards[i].size);
    vkpt_free(st->shards);
    vkpt_free(st);
}

static bool json_u64(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (d < 0 || d > 9007199254740992.0 || d != (double)(uint64_t)d) return false;
    *out = (uint64_t)d;
    return true;
}

/* Parse the header of shard `si` and append its tensors. `label` names the
 * file in messages. */
static int parse_shard(vkpt_safetensors *st, size_t si, const char *label)
{
    const shard *sh = &st->shards[si];
    if (sh->size < 8) return vkpt_fail(VKPT_EFORMAT, "%s: too small for a safetensors file", label);
    uint64_t hlen;
    memcpy(&hlen, sh->base, 8);
    if (hlen < 2 || hlen > sh->size - 8 || hlen > (100u << 20))
        return vkpt_fail(VKPT_EFORMAT, "%s: header length %llu does not fit the file (%zu bytes)",
                         label, (unsigned long long)hlen, sh->size);
    const uint8_t *data = sh->base + 8 + hlen;
    uint64_t data_size = sh->size - 8 - hlen;
    cJSON *root = cJSON_ParseWithLength((const char *)sh->base + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return vkpt_fail(VKPT_EFORMAT, "%s: header is not a JSON object", label);
    }
    int err = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        if (!strcmp(e->string, "__metadata__")) continue;
        const char *nm = e->string;
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *of = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsObject(e) || !cJSON_IsString(dt) || !cJSON_IsArray(sp) || !cJSON_IsArray(of) ||
            cJSON_GetArraySize(of) != 2) {
            err = vkpt_fail(VKPT_EFORMAT,
                            "%s: tensor '%.200s': needs dtype, shape and data_offsets", label, nm);
            break;
        }
        int dtype = -1;
        for (int d = 0; d < VKPT_ST_COUNT; d++)
            if (!strcmp(dt->valuestring, k_dtypes[d].name)) dtype = d;
        if (dtype < 0) {
            err = vkpt_fail(VKPT_EFORMAT, "%s: tensor '%.200s': unsupported dtype %.32s", label, nm,
                            dt->valuestring);
            break;
        }
        int nd = cJSON_GetArraySize(sp);
        if (nd > VKPT_ST_MAX_DIMS) {
            err = vkpt_fail(VKPT_EFORMAT, "%s: tensor '%.200s': %d dimensions", label, nm, nd);
            break;
        }
        vkpt_st_tensor t = {.dtype = dtype, .n_dims = (uint32_t)nd};
        uint64_t n_el = 1;
        for (int d = 0; d < nd && !err; d++) {
            if (!json_u64(cJSON_GetArrayItem(sp, d), &t.shape[d]) ||
                (t.shape[d] && n_el > (1ull << 50) / t.shape[d]))
                err = vkpt_fail(VKPT_EFORMAT, "%s: tensor '%.200s': bad shape", label, nm);
            n_el *= t.shape[d];
        }
        uint64_t b0 = 0, b1 = 0;
        if (!err && (!json_u64(cJSON_GetArrayItem(of, 0), &b0) ||
                     !json_u64(cJSON_GetArrayItem(of, 1), &b1) || b0 > b1 || b1 > data_size))
            err = vkpt_fail(VKPT_EFORMAT,
                            "%s: tensor '%.200s': data_offsets outside the file (truncated?)",
                            label, nm);
        if (!err && b1 - b0 != n_el * k_dtypes[dtype].size)
            err = vkpt_fail(VKPT_EFORMAT,
                            "%s: tensor '%.200s': %llu bytes of data for a shape that needs %llu",
                            label, nm, (unsigned long long)(b1 - b0),
                            (unsigned long long)(n_el * k_dtypes[dtype].size));
        if (err) break;
        t.size = b1 - b0;
        t.data = data + b0;
        if (st->n == st->cap) {
            size_t nc = st->cap ? st->cap * 2 : 64;
            void *np = vkpt_realloc(st->t, nc * sizeof *st->t);
            if (!np) {
                err = vkpt_fail(VKPT_ENOMEM, "safetensors index");
                break;
            }
            st->t = np;
            st->cap = nc;
        }
        if (!(t.name = vkpt_strdup(nm))) {
            err = vkpt_fail(VKPT_ENOMEM, "safetensors index");
            break;
        }
        st->t[st->n++] = t;
    }
    cJSON_Delete(root);
    return err;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const vkpt_st_tensor *)a)->name, ((const vkpt_st_tensor *)b)->name);
}

static int finish(vkpt_safetensors *st)
{
    if (st->n > 1) qsort(st->t, st->n, sizeof *st->t, cmp_name);
    for (size_t i = 1; i < st->n; i++)
        if (!strcmp(st->t[i - 1].name, st->t[i].name))
            return vkpt_fail(VKPT_EFORMAT, "safetensors: tensor '%.200s' appears twice",
                             st->t[i].name);
    return 0;
}

static int add_shard(vkpt_safetensors *st, const void *base, size_t size, bool mapped)
{
    void *np = vkpt_realloc(st->shards, (st->n_shards + 1) * sizeof *st->shards);
    if (!np) return vkpt_fail(VKPT_ENOMEM, "safetensors");
    st->shards = np;
    st->shards[st->n_shards++] = (shard){base, size, mapped};
    return 0;
}

int vkpt_st_open_mem(const void *data, size_t size, vkpt_safetensors **out)
{
    *out = NULL;
    vkpt_safetensors *st = vkpt_calloc(1, sizeof *st);
    if (!st) return vkpt_fail(VKPT_ENOMEM, "safetensors");
    int err = add_shard(st, data, size, false);
    if (!err) err = parse_shard(st, 0, "safetensors");
    if (!err) err = finish(st);
    if (err) {
        vkpt_st_close(st);
        return err;
    }
    *out = st;
    return 0;
}

static int map_file(vkpt_safetensors *st, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vkpt_fail(VKPT_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size < 8) {
        close(fd);
        return vkpt_fail(VKPT_EFORMAT, "%s: not a safetensors file", path);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return vkpt_fail(VKPT_EIO, "%s: mmap: %s", path, strerror(errno));
    int err = add_shard(st, m, (size_t)sb.st_size, true);
    if (err) {
        munmap(m, (size_t)sb.st_size);
        return err;
    }
    return parse_shard(st, st->n_shards - 1, path);
}

static char *read_text(const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = NULL;
    if (n >= 0 && (size_t)n <= max && (b = vkpt_malloc((size_t)n + 1))) {
        if (fread(b, 1, (size_t)n, f) != (size_t)n) {
            vkpt_free(b);
            b = NULL;
        } else {
            b[n] = 0;
        }
    }
    fclose(f);
    return b;
}

static int open_index(vkpt_safetensors *st, const char *index_path)
{
    char *txt = read_text(index_path, 64u << 20);
    if (!txt) return vkpt_fail(VKPT_EIO, "%s: cannot read", index_path);
    cJSON *root = cJSON_Parse(txt);
    vkpt_free(txt);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm)) {
        cJSON_Delete(root);
        return vkpt_fail(VKPT_EFORMAT, "%s: no \"weight_map\" object", index_path);
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", index_path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(dir, sizeof dir, ".");
    /* distinct shard file names, in order of first appearance */
    int err = 0;
    const char **files = NULL;
    size_t nf = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, wm)
    {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || !strcmp(e->valuestring, "..")) {
            err = vkpt_fail(VKPT_EFORMAT, "%s: weight_map entry '%.200s' is not a file name",
                            index_path, e->string);
            break;
        }
        bool seen = false;
        for (size_t i = 0; i < nf; i++)
            if (!strcmp(files[i], e->valuestring)) seen = true;
        if (seen) continue;
        const char **nfp = vkpt_realloc(files, (nf + 1) * sizeof *files);
        if (!nfp) {
            err = vkpt_fail(VKPT_ENOMEM, "safetensors index");
            break;
        }
        files = nfp;
        files[nf++] = e->valuestring;
    }
    for (size_t i = 0; i < nf && !err; i++) {
        char p[PATH_MAX + 256];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        err = map_file(st, p);
    }
    vkpt_free(files);
    cJSON_Delete(root);
    return err;
}

int vkpt_st_open(const char *path, vkpt_safetensors **out)
{
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) return vkpt_fail(VKPT_EIO, "%s: %s", path, strerror(errno));
    vkpt_safetensors *st = vkpt_calloc(1, sizeof *st);
    if (!st) return vkpt_fail(VKPT_ENOMEM, "safetensors");
    int err = 0;
    char p[PATH_MAX];
    if (S_ISDIR(sb.st_mode)) {
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", path);
        if (access(p, R_OK) == 0) {
            err = open_index(st, p);
        } else {
            snprintf(p, sizeof p, "%s/model.safetensors", path);
            if (access(p, R_OK) == 0)
                err = map_file(st, p);
            else
                err = vkpt_fail(VKPT_ENOTFOUND,
                                "%s: no model.safetensors or model.safetensors.index.json", path);
        }
    } else {
        size_t n = strlen(path);
        if (n > 5 && !strcmp(path + n - 5, ".json"))
            err = open_index(st, path);
        else
            err = map_file(st, path);
    }
    if (!err) err = finish(st);
    if (err) {
        vkpt_st_close(st);
        return err;
    }
    *out = st;
    return 0;
}

size_t vkpt_st_count(const vkpt_safetensors *st)
{
    return st->n;
}

const vkpt_st_tensor *vkpt_st_at(const vkpt_safetensors *st, size_t i)
{
    return i < st->n ? &st->t[i] : NULL;
}

const vkpt_st_tensor *vkpt_st_find(const vkpt_safetensors *st, const char *name)
{
    size_t lo = 0, hi = st->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int r = strcmp(st->t[mid].name, name);
        if (!r) return &st->t[mid];
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
