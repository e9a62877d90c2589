/* Registered models (include/vkpt/registry.h): names, checksums, what a model
 * is from its files, the system.ai catalog, and where the store lives. */
#include "vkpt/registry.h"

#include "sha256.h"
#include "vkpt/embed.h"
#include "vkpt/model.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- where ----------------------------------------------------------------------- */

int vkpt_registry_data_dir(const char *given, char *out, size_t cap)
{
    const char *env = getenv("VKPT_DATA_DIR"), *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    int n;
    if (given && given[0])
        n = snprintf(out, cap, "%s", given);
    else if (env && env[0])
        n = snprintf(out, cap, "%s", env);
    else if (xdg && xdg[0])
        n = snprintf(out, cap, "%s/vkpt", xdg);
    else if (home && home[0])
        n = snprintf(out, cap, "%s/.local/share/vkpt", home);
    else
        return vkpt_fail(VKPT_EINVAL, "no data directory: give --data-dir or set $HOME");
    if (n < 0 || (size_t)n >= cap)
        return vkpt_fail(VKPT_ERANGE, "the data directory path is too long");
    while (n > 1 && out[n - 1] == '/') out[--n] = 0;
    return 0;
}

int vkpt_registry_open(const char *data_dir, vkpt_store **out)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/vkpt.db", data_dir) >= sizeof path)
        return vkpt_fail(VKPT_ERANGE, "the data directory path is too long");
    return vkpt_store_open_sqlite(path, out);
}

/* ---- names ----------------------------------------------------------------------- */

static bool name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

bool vkpt_registry_valid_name(const char *name, char *msg, size_t cap)
{
    if (!name || !name[0]) {
        snprintf(msg, cap, "the model name is empty; use catalog.schema.model");
        return false;
    }
    int parts = 1;
    size_t len = 0;
    for (const char *p = name;; p++) {
        if (*p == '.' || *p == 0) {
            if (len == 0 || len > 64) {
                snprintf(msg, cap,
                         "\"%s\" is not catalog.schema.model: each part must have 1 to 64 "
                         "characters",
                         name);
                return false;
            }
            if (!*p) break;
            parts++;
            len = 0;
            continue;
        }
        if (!name_char(*p)) {
            snprintf(msg, cap,
                     "\"%s\" is not catalog.schema.model: parts take letters, digits, '_' and "
                     "'-'",
                     name);
            return false;
        }
        len++;
    }
    if (parts != 3) {
        snprintf(msg, cap, "\"%s\" has %d part%s; a registered model is catalog.schema.model", name,
                 parts, parts == 1 ? "" : "s");
        return false;
    }
    return true;
}

/* ---- checksums --------------------------------------------------------------------- */

static int hash_file(srv_sha256 *h, const char *path, uint64_t *size, int64_t *mtime)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vkpt_fail(VKPT_EIO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb)) {
        close(fd);
        return vkpt_fail(VKPT_EIO, "%s: %s", path, strerror(errno));
    }
    enum { BUF = 1 << 20 };
    uint8_t *buf = vkpt_malloc(BUF);
    if (!buf) {
        close(fd);
        return vkpt_fail(VKPT_ENOMEM, "checksum buffer");
    }
    int err = 0;
    for (;;) {
        ssize_t k = read(fd, buf, BUF);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            err = vkpt_fail(VKPT_EIO, "%s: %s", path, strerror(errno));
            break;
        }
        if (k == 0) break;
        srv_sha256_update(h, buf, (size_t)k);
    }
    vkpt_free(buf);
    close(fd);
    *size += (uint64_t)sb.st_size;
    if (sb.st_mtime > *mtime) *mtime = sb.st_mtime;
    return err;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Relative paths of the regular files under root/rel, appended to *list. */
static int list_files(const char *root, const char *rel, char ***list, size_t *n, size_t *cap,
                      int depth)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(dir);
    if (!d) return vkpt_fail(VKPT_EIO, "%s: %s", dir, strerror(errno));
    int err = 0;
    struct dirent *de;
    while (!err && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char sub[PATH_MAX], full[PATH_MAX + 256];
        if ((size_t)snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", de->d_name) >=
            sizeof sub)
            continue;
        snprintf(full, sizeof full, "%s/%s", root, sub);
        struct stat sb;
        if (stat(full, &sb)) continue;
        if (S_ISDIR(sb.st_mode)) {
            if (depth < 4) err = list_files(root, sub, list, n, cap, depth + 1);
            continue;
        }
        if (!S_ISREG(sb.st_mode)) continue;
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 32;
            char **nl = vkpt_realloc(*list, nc * sizeof *nl);
            if (!nl) {
                err = vkpt_fail(VKPT_ENOMEM, "file list");
                break;
            }
            *list = nl;
            *cap = nc;
        }
        if (!((*list)[*n] = vkpt_strdup(sub)))
            err = vkpt_fail(VKPT_ENOMEM, "file list");
        else
            (*n)++;
    }
    closedir(d);
    return err;
}

int vkpt_registry_checksum(const char *path, char out[72], uint64_t *size, int64_t *mtime)
{
    struct stat sb;
    if (stat(path, &sb)) return vkpt_fail(VKPT_EIO, "%s: %s", path, strerror(errno));
    srv_sha256 h;
    srv_sha256_init(&h);
    *size = 0;
    *mtime = 0;
    int err = 0;
    if (S_ISDIR(sb.st_mode)) {
        char **files = NULL;
        size_t n = 0, cap = 0;
        err = list_files(path, "", &files, &n, &cap, 0);
        if (!err && n == 0) err = vkpt_fail(VKPT_EFORMAT, "%s: the folder has no files", path);
        if (!err) qsort(files, n, sizeof *files, cmp_str);
        for (size_t i = 0; !err && i < n; i++) {
            char full[PATH_MAX];
            snprintf(full, sizeof full, "%s/%s", path, files[i]);
            struct stat fs;
            if (stat(full, &fs)) {
                err = vkpt_fail(VKPT_EIO, "%s: %s", full, strerror(errno));
                break;
            }
            uint8_t len[8];
            for (int k = 0; k < 8; k++) len[k] = (uint8_t)((uint64_t)fs.st_size >> (8 * k));
            srv_sha256_update(&h, files[i], strlen(files[i]) + 1);
            srv_sha256_update(&h, len, sizeof len);
            err = hash_file(&h, full, size, mtime);
        }
        for (size_t i = 0; i < n; i++) vkpt_free(files[i]);
        vkpt_free(files);
    } else {
        err = hash_file(&h, path, size, mtime);
    }
    if (err) return err;
    uint8_t d[32];
    char hex[65];
    srv_sha256_final(&h, d);
    srv_sha256_hex(d, hex);
    snprintf(out, 72, "sha256:%s", hex);
    return 0;
}

/* ---- registering ----------------------------------------------------------------------- */

static bool valid_task(const char *t)
{
    return !strcmp(t, VKPT_TASK_CHAT) || !strcmp(t, VKPT_TASK_COMPLETIONS) ||
           !strcmp(t, VKPT_TASK_EMBEDDINGS);
}

static int check_metadata(const char *text, char **canonical)
{
    *canonical = NULL;
    cJSON *m = cJSON_Parse(text ? text : "{}");
    if (!cJSON_IsObject(m)) {
        cJSON_Delete(m);
        return vkpt_fail(VKPT_EINVAL, "metadata must be a JSON object");
    }
    int err = 0;
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(m, "system_prompt")) && !cJSON_IsString(v))
        err = vkpt_fail(VKPT_EINVAL, "metadata.system_prompt must be a string");
    if ((v = cJSON_GetObjectItemCaseSensitive(m, "chat_template")) && !cJSON_IsString(v))
        err = vkpt_fail(VKPT_EINVAL, "metadata.chat_template must be a string");
    if ((v = cJSON_GetObjectItemCaseSensitive(m, "pooling")) &&
        (!cJSON_IsString(v) || vkpt_pooling_by_name(v->valuestring) <= 0))
        err = vkpt_fail(VKPT_EINVAL, "metadata.pooling must be \"cls\", \"mean\" or \"last\"");
    if ((v = cJSON_GetObjectItemCaseSensitive(m, "normalize")) && !cJSON_IsBool(v))
        err = vkpt_fail(VKPT_EINVAL, "metadata.normalize must be true or false");
    if (!err) {
        char *t = cJSON_PrintUnformatted(m);
        if (!t)
            err = vkpt_fail(VKPT_ENOMEM, "metadata");
        else if (!(*canonical = vkpt_strdup(t)))
            err = vkpt_fail(VKPT_ENOMEM, "metadata");
        cJSON_free(t);
    }
    cJSON_Delete(m);
    return err;
}

/* model_type from the architecture: Databricks' names where they differ. */
static void model_type_of(const vkpt_model_info *mi, const char *source, char *out, size_t cap)
{
    if (!strcmp(mi->arch, "llama") && mi->n_expert > 0)
        snprintf(out, cap, "mixtral");
    else if (!strcmp(mi->arch, "bert") && strcasestr(source, "bge"))
        snprintf(out, cap, "bge");
    else
        snprintf(out, cap, "%s", mi->arch);
}

int vkpt_registry_register(vkpt_store *st, const vkpt_register_req *r, vkpt_model_version *out)
{
    memset(out, 0, sizeof *out);
    char msg[256];
    if (!st || !r || !r->source) return vkpt_fail(VKPT_EINVAL, "register: a model path is needed");
    if (!vkpt_registry_valid_name(r->name, msg, sizeof msg))
        return vkpt_fail(VKPT_EINVAL, "%s", msg);
    if (r->task && !valid_task(r->task))
        return vkpt_fail(VKPT_EINVAL,
                         "task \"%s\" is not one of llm/v1/chat, llm/v1/completions, "
                         "llm/v1/embeddings",
                         r->task);
    if (r->model_type && (!r->model_type[0] || strlen(r->model_type) > 32))
        return vkpt_fail(VKPT_EINVAL, "model_type must have 1 to 32 characters");
    char *meta = NULL;
    int err = check_metadata(r->metadata, &meta);
    if (err) return err;
    char abs[PATH_MAX];
    if (!realpath(r->source, abs)) {
        vkpt_free(meta);
        return vkpt_fail(VKPT_EIO, "%s: %s", r->source, strerror(errno));
    }
    vkpt_model_info mi;
    if ((err = vkpt_model_probe(abs, &mi))) {
        vkpt_free(meta);
        return err;
    }
    const char *task = r->task ? r->task : mi.causal ? VKPT_TASK_CHAT : VKPT_TASK_EMBEDDINGS;
    if (mi.causal == !strcmp(task, VKPT_TASK_EMBEDDINGS)) {
        vkpt_free(meta);
        return vkpt_fail(VKPT_EINVAL, "task %s does not fit %s, %s", task, abs,
                         mi.causal ? "a generative model (use llm/v1/chat or llm/v1/completions)"
                                   : "an embedding model (use llm/v1/embeddings)");
    }
    uint32_t ctx = mi.n_ctx_train ? mi.n_ctx_train : 4096;
    if (r->context_length) {
        if (r->context_length > ctx) {
            vkpt_free(meta);
            return vkpt_fail(VKPT_EINVAL, "context_length %u is above the model's %u",
                             r->context_length, ctx);
        }
        ctx = r->context_length;
    }
    char sum[72], type[40];
    uint64_t size = 0;
    int64_t mtime = 0;
    if ((err = vkpt_registry_checksum(abs, sum, &size, &mtime))) {
        vkpt_free(meta);
        return err;
    }
    if (r->model_type)
        snprintf(type, sizeof type, "%s", r->model_type);
    else
        model_type_of(&mi, abs, type, sizeof type);
    vkpt_model_version v = {
        .name = vkpt_strdup(r->name),
        .source = vkpt_strdup(abs),
        .format = vkpt_strdup(mi.source),
        .checksum = vkpt_strdup(sum),
        .size_bytes = size,
        .mtime = mtime,
        .task = vkpt_strdup(task),
        .model_type = vkpt_strdup(type),
        .context_length = ctx,
        .metadata = meta,
    };
    if (!v.name || !v.source || !v.format || !v.checksum || !v.task || !v.model_type)
        err = vkpt_fail(VKPT_ENOMEM, "register");
    if (!err) err = st->ops->model_add(st, &v);
    if (err) {
        vkpt_model_version_free(&v);
        return err;
    }
    *out = v;
    return 0;
}

/* ---- system.ai ------------------------------------------------------------------------------ */

/* "system.ai." + the file's stem (".gguf" dropped) with other characters as '_'. */
static void system_name(const char *path, char *out, size_t cap)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t s = n;
    while (s && path[s - 1] != '/') s--;
    size_t len = n - s;
    if (len > 5 && !strncasecmp(path + s + len - 5, ".gguf", 5)) len -= 5;
    if (len > 64) len = 64;
    int k = snprintf(out, cap, "%s.", VKPT_SYSTEM_CATALOG);
    for (size_t i = 0; i < len && (size_t)k + 1 < cap; i++) {
        char c = path[s + i];
        out[k++] = name_char(c) ? c : '_';
    }
    out[k] = 0;
}

static int sync_one(vkpt_store *st, const char *path)
{
    char name[96], abs[PATH_MAX], msg[256];
    if (!realpath(path, abs)) return 0;
    system_name(abs, name, sizeof name);
    if (!vkpt_registry_valid_name(name, msg, sizeof msg)) return 0;
    vkpt_model_version cur;
    int err = st->ops->model_get(st, name, 0, &cur);
    if (err && err != VKPT_ENOTFOUND) return err;
    if (!err) {
        /* unchanged when its newest file and total size are the same */
        struct stat sb;
        bool same = !strcmp(cur.source, abs) && !stat(abs, &sb);
        if (same && S_ISREG(sb.st_mode))
            same = (uint64_t)sb.st_size == cur.size_bytes && (int64_t)sb.st_mtime == cur.mtime;
        else if (same) {
            /* a folder: compare by size and time of its files without hashing */
            char **files = NULL;
            size_t n = 0, cap = 0;
            uint64_t size = 0;
            int64_t mtime = 0;
            same = list_files(abs, "", &files, &n, &cap, 0) == 0;
            for (size_t i = 0; i < n; i++) {
                char full[PATH_MAX];
                struct stat fs;
                int len = snprintf(full, sizeof full, "%s/%s", abs, files[i]);
                if (len > 0 && (size_t)len < sizeof full && !stat(full, &fs)) {
                    size += (uint64_t)fs.st_size;
                    if (fs.st_mtime > mtime) mtime = fs.st_mtime;
                }
                vkpt_free(files[i]);
            }
            vkpt_free(files);
            same = same && size == cur.size_bytes && mtime == cur.mtime;
        }
        vkpt_model_version_free(&cur);
        if (same) return 0;
    }
    vkpt_register_req req = {.name = name, .source = abs};
    vkpt_model_version v;
    err = vkpt_registry_register(st, &req, &v);
    if (err) {
        if (err == VKPT_EIO && strstr(vkpt_errmsg(err), "vkpt.db")) return err; /* the store */
        VKPT_LOGW("registry: %s not added to %s: %s", abs, VKPT_SYSTEM_CATALOG, vkpt_errmsg(err));
        return 0;
    }
    VKPT_LOGI("registry: %s version %u is %s", v.name, v.version, abs);
    vkpt_model_version_free(&v);
    return 1;
}

int vkpt_registry_sync_system(vkpt_store *st, const char *bundled, const char *models_dir)
{
    int added = 0, r;
    if (bundled) {
        if ((r = sync_one(st, bundled)) < 0) return r;
        added += r;
    }
    DIR *d = models_dir ? opendir(models_dir) : NULL;
    if (!d) return added;
    char **paths = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char full[PATH_MAX], cfg[PATH_MAX + 16];
        snprintf(full, sizeof full, "%s/%s", models_dir, de->d_name);
        snprintf(cfg, sizeof cfg, "%s/config.json", full);
        size_t len = strlen(de->d_name);
        struct stat sb;
        bool gguf = len > 5 && !strcasecmp(de->d_name + len - 5, ".gguf");
        bool hf = !stat(full, &sb) && S_ISDIR(sb.st_mode) && !access(cfg, R_OK);
        if (!gguf && !hf) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **np = vkpt_realloc(paths, cap * sizeof *np);
            if (!np) break;
            paths = np;
        }
        if ((paths[n] = vkpt_strdup(full))) n++;
    }
    closedir(d);
    qsort(paths, n, sizeof *paths, cmp_str);
    int err = 0;
    for (size_t i = 0; i < n; i++) {
        if (!err && (r = sync_one(st, paths[i])) < 0) err = r;
        if (!err) added += r;
        vkpt_free(paths[i]);
    }
    vkpt_free(paths);
    return err ? err : added;
}

/* ---- JSON ---------------------------------------------------------------------------------- */

char *vkpt_registry_version_json(const vkpt_model_version *v)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "name", v->name);
    cJSON_AddNumberToObject(o, "version", v->version);
    cJSON_AddStringToObject(o, "source", v->source);
    cJSON_AddStringToObject(o, "format", v->format);
    cJSON_AddStringToObject(o, "checksum", v->checksum);
    cJSON_AddNumberToObject(o, "size_bytes", (double)v->size_bytes);
    cJSON_AddStringToObject(o, "task", v->task);
    cJSON_AddStringToObject(o, "model_type", v->model_type);
    cJSON_AddNumberToObject(o, "context_length", v->context_length);
    cJSON *meta = cJSON_Parse(v->metadata ? v->metadata : "{}");
    cJSON_AddItemToObject(o, "metadata", meta ? meta : cJSON_CreateObject());
    cJSON_AddNumberToObject(o, "creation_timestamp", (double)v->created_ms);
    char *t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char *r = t ? vkpt_strdup(t) : NULL;
    cJSON_free(t);
    return r;
}

void vkpt_registry_uuid_hex(const uint8_t uuid[16], char out[33])
{
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hx[uuid[i] >> 4];
        out[2 * i + 1] = hx[uuid[i] & 15];
    }
    out[32] = 0;
}

int vkpt_registry_save_calibration(vkpt_store *st, const char *checksum,
                                   const vkpt_device_caps *caps, const vkpt_calib_result *r,
                                   double level_seconds, vkpt_calibration *out)
{
    char uuid[33];
    vkpt_registry_uuid_hex(caps->uuid, uuid);
    cJSON *d = cJSON_CreateObject();
    if (!d) return vkpt_fail(VKPT_ENOMEM, "calibration");
    cJSON_AddStringToObject(d, "device", caps->name);
    cJSON_AddStringToObject(d, "driver", caps->driver_name);
    cJSON *w = cJSON_AddObjectToObject(d, "workload");
    /* generation: prompt + output tokens per request; embeddings: inputs only */
    cJSON_AddStringToObject(w, "kind", r->encoder ? "embeddings" : "generation");
    cJSON_AddNumberToObject(w, "input_tokens", r->input_tokens);
    cJSON_AddNumberToObject(w, "output_tokens", r->output_tokens);
    cJSON_AddNumberToObject(w, "context", r->n_ctx);
    cJSON_AddNumberToObject(w, "level_seconds", level_seconds > 0 ? level_seconds : 10);
    cJSON *lv = cJSON_AddArrayToObject(d, "levels");
    for (uint32_t i = 0; i < r->n_levels; i++) {
        cJSON *l = cJSON_CreateObject();
        cJSON_AddNumberToObject(l, "concurrency", r->levels[i].concurrency);
        cJSON_AddNumberToObject(l, "tokens_per_s", r->levels[i].tokens_per_s);
        cJSON_AddItemToArray(lv, l);
    }
    cJSON_AddNumberToObject(d, "saturating_concurrency", r->concurrency);
    cJSON_AddNumberToObject(d, "seconds", r->seconds);
    char *txt = cJSON_PrintUnformatted(d);
    cJSON_Delete(d);
    vkpt_calibration c = {
        .checksum = vkpt_strdup(checksum),
        .device_uuid = vkpt_strdup(uuid),
        .vkpt_version = vkpt_strdup(VKPT_VERSION_STRING),
        .tokens_per_s = r->tokens_per_s,
        .chunk_size = r->chunk_size,
        .details = txt ? vkpt_strdup(txt) : NULL,
    };
    cJSON_free(txt);
    int err = 0;
    if (!c.checksum || !c.device_uuid || !c.vkpt_version || !c.details)
        err = vkpt_fail(VKPT_ENOMEM, "calibration");
    if (!err) err = st->ops->calibration_put(st, &c);
    if (!err && out)
        *out = c;
    else
        vkpt_calibration_free(&c);
    return err;
}
