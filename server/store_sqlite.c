/* The SQLite implementation of the control-plane store (include/vkpt/store.h).
 *
 * Durability: WAL journal with synchronous=FULL. In WAL mode a transaction is
 * committed once its commit frame is in the -wal file, so a process killed
 * (kill -9) at any point loses nothing committed and leaves nothing half
 * applied with NORMAL already; FULL adds an fsync of the WAL at every commit,
 * so a committed update also survives an OS crash or power loss. Control-plane
 * writes are a handful per endpoint change, so the fsync costs nothing that
 * matters.
 *
 * Every call runs inside a transaction: its own (BEGIN IMMEDIATE ... COMMIT),
 * or the caller's group (begin ... commit). One connection serves all threads
 * under a recursive mutex; a group holds the mutex from begin to commit or
 * rollback. Statements are prepared once at open. Another process on the
 * same file (vkpt calibrate beside vkpt serve) waits up to busy_timeout. */
#include "vkpt/store.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define SCHEMA_VERSION  1
#define BUSY_TIMEOUT_MS 10000

enum {
    Q_MODEL_NAME,
    Q_MODEL_NEXT,
    Q_MODEL_BUMP,
    Q_MODEL_INSERT,
    Q_MODEL_GET,
    Q_MODEL_LATEST,
    Q_MODEL_LIST_ALL,
    Q_MODEL_LIST_ONE,
    Q_MODEL_DELETE,
    Q_EP_GET,
    Q_EP_INSERT,
    Q_EP_UPDATE,
    Q_EP_LIST,
    Q_EP_DELETE,
    Q_EP_DELETE_ANY,
    Q_CAL_PUT,
    Q_CAL_GET,
    Q_COUNT
};

#define MODEL_COLS                                                                   \
    "name, version, source, format, checksum, size_bytes, mtime, task, model_type, " \
    "context_length, metadata, created_ms"
#define EP_COLS "name, config, pending, config_update, message, generation, created_ms, updated_ms"

static const char *const sql[Q_COUNT] = {
    /* version numbers come from a per-name counter: a deleted one is never reused */
    [Q_MODEL_NAME] = "INSERT OR IGNORE INTO model_names (name, next_version) VALUES (?1, 1)",
    [Q_MODEL_NEXT] = "SELECT next_version FROM model_names WHERE name = ?1",
    [Q_MODEL_BUMP] = "UPDATE model_names SET next_version = next_version + 1 WHERE name = ?1",
    [Q_MODEL_INSERT] = "INSERT INTO model_versions (" MODEL_COLS
                       ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [Q_MODEL_GET] = "SELECT " MODEL_COLS " FROM model_versions WHERE name = ?1 AND version = ?2",
    [Q_MODEL_LATEST] =
        "SELECT " MODEL_COLS " FROM model_versions WHERE name = ?1 ORDER BY version DESC LIMIT 1",
    [Q_MODEL_LIST_ALL] = "SELECT " MODEL_COLS " FROM model_versions ORDER BY name, version",
    [Q_MODEL_LIST_ONE] =
        "SELECT " MODEL_COLS " FROM model_versions WHERE name = ?1 ORDER BY version",
    [Q_MODEL_DELETE] = "DELETE FROM model_versions WHERE name = ?1 AND version = ?2",
    [Q_EP_GET] = "SELECT " EP_COLS " FROM endpoints WHERE name = ?1",
    [Q_EP_INSERT] = "INSERT INTO endpoints (" EP_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)",
    [Q_EP_UPDATE] = "UPDATE endpoints SET config = ?2, pending = ?3, config_update = ?4, "
                    "message = ?5, generation = generation + 1, updated_ms = ?6 "
                    "WHERE name = ?1 AND generation = ?7",
    [Q_EP_LIST] = "SELECT " EP_COLS " FROM endpoints ORDER BY name",
    [Q_EP_DELETE] = "DELETE FROM endpoints WHERE name = ?1 AND generation = ?2",
    [Q_EP_DELETE_ANY] = "DELETE FROM endpoints WHERE name = ?1",
    [Q_CAL_PUT] = "INSERT OR REPLACE INTO calibrations (checksum, device_uuid, vkpt_version, "
                  "tokens_per_s, chunk_size, details, created_ms) "
                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [Q_CAL_GET] = "SELECT checksum, device_uuid, vkpt_version, tokens_per_s, chunk_size, details, "
                  "created_ms FROM calibrations WHERE checksum = ?1 AND device_uuid = ?2 AND "
                  "vkpt_version = ?3",
};

static const char schema_v1[] =
    "CREATE TABLE model_names (name TEXT PRIMARY KEY, next_version INTEGER NOT NULL);"
    "CREATE TABLE model_versions ("
    "  name TEXT NOT NULL, version INTEGER NOT NULL, source TEXT NOT NULL,"
    "  format TEXT NOT NULL, checksum TEXT NOT NULL, size_bytes INTEGER NOT NULL,"
    "  mtime INTEGER NOT NULL, task TEXT NOT NULL, model_type TEXT NOT NULL,"
    "  context_length INTEGER NOT NULL, metadata TEXT NOT NULL DEFAULT '{}',"
    "  created_ms INTEGER NOT NULL, PRIMARY KEY (name, version));"
    "CREATE TABLE endpoints ("
    "  name TEXT PRIMARY KEY, config TEXT, pending TEXT, config_update TEXT NOT NULL,"
    "  message TEXT, generation INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL);"
    "CREATE TABLE calibrations ("
    "  checksum TEXT NOT NULL, device_uuid TEXT NOT NULL, vkpt_version TEXT NOT NULL,"
    "  tokens_per_s REAL NOT NULL, chunk_size INTEGER NOT NULL, details TEXT,"
    "  created_ms INTEGER NOT NULL, PRIMARY KEY (checksum, device_uuid, vkpt_version));";

typedef struct sql_store {
    vkpt_store base;
    sqlite3 *db;
    sqlite3_stmt *q[Q_COUNT];
    sqlite3_stmt *begin, *commit, *rollback;
    pthread_mutex_t mu; /* recursive */
    int depth;          /* open groups (begin without commit/rollback) */
    char path[4096];
} sql_store;

int64_t vkpt_store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- record helpers ------------------------------------------------------------ */

void vkpt_model_version_free(vkpt_model_version *v)
{
    if (!v) return;
    vkpt_free(v->name);
    vkpt_free(v->source);
    vkpt_free(v->format);
    vkpt_free(v->checksum);
    vkpt_free(v->task);
    vkpt_free(v->model_type);
    vkpt_free(v->metadata);
    memset(v, 0, sizeof *v);
}

void vkpt_model_versions_free(vkpt_model_version *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) vkpt_model_version_free(&v[i]);
    vkpt_free(v);
}

void vkpt_endpoint_rec_free(vkpt_endpoint_rec *e)
{
    if (!e) return;
    vkpt_free(e->name);
    vkpt_free(e->config);
    vkpt_free(e->pending);
    vkpt_free(e->config_update);
    vkpt_free(e->message);
    memset(e, 0, sizeof *e);
}

void vkpt_endpoint_recs_free(vkpt_endpoint_rec *e, size_t n)
{
    for (size_t i = 0; e && i < n; i++) vkpt_endpoint_rec_free(&e[i]);
    vkpt_free(e);
}

void vkpt_calibration_free(vkpt_calibration *c)
{
    if (!c) return;
    vkpt_free(c->checksum);
    vkpt_free(c->device_uuid);
    vkpt_free(c->vkpt_version);
    vkpt_free(c->details);
    memset(c, 0, sizeof *c);
}

/* ---- SQLite plumbing ------------------------------------------------------------- */

static int db_fail(sql_store *s, const char *what)
{
    return vkpt_fail(VKPT_EIO, "%s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static sqlite3_stmt *stmt(sql_store *s, int id)
{
    sqlite3_stmt *st = s->q[id];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* A copy of column i (NULL for SQL NULL); *oom set when a copy failed. */
static char *col_text(sqlite3_stmt *st, int i, bool *oom)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    if (!t) return NULL;
    char *c = vkpt_strdup((const char *)t);
    if (!c) *oom = true;
    return c;
}

static int run_simple(sql_store *s, sqlite3_stmt *st, const char *what)
{
    sqlite3_reset(st);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : db_fail(s, what);
}

/* Every call: lock, and open a transaction unless inside a group. */
static int enter(sql_store *s)
{
    pthread_mutex_lock(&s->mu);
    if (s->depth) return 0;
    int err = run_simple(s, s->begin, "BEGIN");
    if (err) pthread_mutex_unlock(&s->mu);
    return err;
}

/* ...and commit (err == 0) or roll back, unless inside a group. */
static int leave(sql_store *s, int err)
{
    for (int i = 0; i < Q_COUNT; i++) sqlite3_reset(s->q[i]);
    if (!s->depth) {
        if (!err)
            err = run_simple(s, s->commit, "COMMIT");
        else
            run_simple(s, s->rollback, "ROLLBACK");
        if (err && sqlite3_get_autocommit(s->db) == 0) run_simple(s, s->rollback, "ROLLBACK");
    }
    pthread_mutex_unlock(&s->mu);
    return err;
}

/* ---- groups --------------------------------------------------------------------------- */

static int op_begin(vkpt_store *base)
{
    sql_store *s = (sql_store *)base;
    pthread_mutex_lock(&s->mu);
    if (s->depth == 0) {
        int err = run_simple(s, s->begin, "BEGIN");
        if (err) {
            pthread_mutex_unlock(&s->mu);
            return err;
        }
    }
    s->depth++; /* the mutex stays held until commit/rollback */
    return 0;
}

static int op_commit(vkpt_store *base)
{
    sql_store *s = (sql_store *)base;
    if (s->depth <= 0) return vkpt_fail(VKPT_ESTATE, "store: commit without begin");
    int err = 0;
    if (--s->depth == 0) {
        err = run_simple(s, s->commit, "COMMIT");
        if (err) run_simple(s, s->rollback, "ROLLBACK");
    }
    pthread_mutex_unlock(&s->mu);
    return err;
}

static void op_rollback(vkpt_store *base)
{
    sql_store *s = (sql_store *)base;
    if (s->depth <= 0) return;
    /* a rollback anywhere in a nested group undoes the whole group */
    s->depth--;
    if (sqlite3_get_autocommit(s->db) == 0) run_simple(s, s->rollback, "ROLLBACK");
    pthread_mutex_unlock(&s->mu);
}

/* ---- models ------------------------------------------------------------------------------ */

static int read_model(sqlite3_stmt *st, vkpt_model_version *v)
{
    bool oom = false;
    memset(v, 0, sizeof *v);
    v->name = col_text(st, 0, &oom);
    v->version = (uint32_t)sqlite3_column_int64(st, 1);
    v->source = col_text(st, 2, &oom);
    v->format = col_text(st, 3, &oom);
    v->checksum = col_text(st, 4, &oom);
    v->size_bytes = (uint64_t)sqlite3_column_int64(st, 5);
    v->mtime = sqlite3_column_int64(st, 6);
    v->task = col_text(st, 7, &oom);
    v->model_type = col_text(st, 8, &oom);
    v->context_length = (uint32_t)sqlite3_column_int64(st, 9);
    v->metadata = col_text(st, 10, &oom);
    v->created_ms = sqlite3_column_int64(st, 11);
    if (oom) {
        vkpt_model_version_free(v);
        return vkpt_fail(VKPT_ENOMEM, "store: model version");
    }
    return 0;
}

static int op_model_add(vkpt_store *base, vkpt_model_version *v)
{
    sql_store *s = (sql_store *)base;
    if (!v || !v->name || !v->source || !v->format || !v->checksum || !v->task || !v->model_type)
        return vkpt_fail(VKPT_EINVAL, "store: model version with a missing field");
    int err = enter(s);
    if (err) return err;
    sqlite3_stmt *st = stmt(s, Q_MODEL_NAME);
    bind_text(st, 1, v->name);
    if (sqlite3_step(st) != SQLITE_DONE) return leave(s, db_fail(s, "register a model name"));
    st = stmt(s, Q_MODEL_NEXT);
    bind_text(st, 1, v->name);
    if (sqlite3_step(st) != SQLITE_ROW) return leave(s, db_fail(s, "next model version"));
    uint32_t version = (uint32_t)sqlite3_column_int64(st, 0);
    st = stmt(s, Q_MODEL_BUMP);
    bind_text(st, 1, v->name);
    if (sqlite3_step(st) != SQLITE_DONE) return leave(s, db_fail(s, "next model version"));
    int64_t now = vkpt_store_now_ms();
    st = stmt(s, Q_MODEL_INSERT);
    bind_text(st, 1, v->name);
    sqlite3_bind_int64(st, 2, version);
    bind_text(st, 3, v->source);
    bind_text(st, 4, v->format);
    bind_text(st, 5, v->checksum);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)v->size_bytes);
    sqlite3_bind_int64(st, 7, v->mtime);
    bind_text(st, 8, v->task);
    bind_text(st, 9, v->model_type);
    sqlite3_bind_int64(st, 10, v->context_length);
    bind_text(st, 11, v->metadata ? v->metadata : "{}");
    sqlite3_bind_int64(st, 12, now);
    if (sqlite3_step(st) != SQLITE_DONE) err = db_fail(s, "add a model version");
    err = leave(s, err);
    if (!err) {
        v->version = version;
        v->created_ms = now;
    }
    return err;
}

static int op_model_get(vkpt_store *base, const char *name, uint32_t version,
                        vkpt_model_version *out)
{
    sql_store *s = (sql_store *)base;
    memset(out, 0, sizeof *out);
    int err = enter(s);
    if (err) return err;
    sqlite3_stmt *st = stmt(s, version ? Q_MODEL_GET : Q_MODEL_LATEST);
    bind_text(st, 1, name);
    if (version) sqlite3_bind_int64(st, 2, version);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = read_model(st, out);
    else if (rc == SQLITE_DONE)
        err = version ? vkpt_fail(VKPT_ENOTFOUND, "model %s has no version %u", name, version)
                      : vkpt_fail(VKPT_ENOTFOUND, "no registered model is named %s", name);
    else
        err = db_fail(s, "read a model version");
    return leave(s, err);
}

static int op_model_list(vkpt_store *base, const char *name, vkpt_model_version **out, size_t *n)
{
    sql_store *s = (sql_store *)base;
    *out = NULL;
    *n = 0;
    int err = enter(s);
    if (err) return err;
    sqlite3_stmt *st = stmt(s, name ? Q_MODEL_LIST_ONE : Q_MODEL_LIST_ALL);
    if (name) bind_text(st, 1, name);
    vkpt_model_version *v = NULL;
    size_t k = 0, cap = 0;
    int rc;
    while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (k == cap) {
            size_t nc = cap ? cap * 2 : 8;
            vkpt_model_version *nv = vkpt_realloc(v, nc * sizeof *nv);
            if (!nv) {
                err = vkpt_fail(VKPT_ENOMEM, "store: model list");
                break;
            }
            v = nv;
            cap = nc;
        }
        err = read_model(st, &v[k]);
        if (!err) k++;
    }
    if (!err && rc != SQLITE_DONE) err = db_fail(s, "list model versions");
    err = leave(s, err);
    if (err) {
        vkpt_model_versions_free(v, k);
        return err;
    }
    *out = v;
    *n = k;
    return 0;
}

static int op_model_delete(vkpt_store *base, const char *name, uint32_t version)
{
    sql_store *s = (sql_store *)base;
    int err = enter(s);
    if (err) return err;
    sqlite3_stmt *st = stmt(s, Q_MODEL_DELETE);
    bind_text(st, 1, name);
    sqlite3_bind_int64(st, 2, version);
    if (sqlite3_step(st) != SQLITE_DONE)
        err = db_fail(s, "delete a model version");
    else if (sqlite3_changes(s->db) == 0)
        err = vkpt_fail(VKPT_ENOTFOUND, "model %s has no version %u", name, version);
    return leave(s, err);
}

/* ---- endpoints ------------------------------------------------------------------------------- */

static int read_endpoint(sqlite3_stmt *st, vkpt_endpoint_rec *e)
{
    bool oom = false;
    memset(e, 0, sizeof *e);
    e->name = col_text(st, 0, &oom);
    e->config = col_text(st, 1, &oom);
    e->pending = col_text(st, 2, &oom);
    e->config_update = col_text(st, 3, &oom);
    e->message = col_text(st, 4, &oom);
    e->generation = sqlite3_column_int64(st, 5);
    e->created_ms = sqlite3_column_int64(st, 6);
    e->updated_ms = sqlite3_column_int64(st, 7);
    if (oom) {
        vkpt_endpoint_rec_free(e);
        return vkpt_fail(VKPT_ENOMEM, "store: endpoint");
    }
    return 0;
}

static int op_endpoint_put(vkpt_store *base, vkpt_endpoint_rec *e, int64_t expect)
{
    sql_store *s = (sql_store *)base;
    if (!e || !e->name || !e->config_update)
        return vkpt_fail(VKPT_EINVAL, "store: endpoint without a name or update state");
    int err = enter(s);
    if (err) return err;
    int64_t now = vkpt_store_now_ms();
    sqlite3_stmt *st = stmt(s, expect < 0 ? Q_EP_INSERT : Q_EP_UPDATE);
    bind_text(st, 1, e->name);
    bind_text(st, 2, e->config);
    bind_text(st, 3, e->pending);
    bind_text(st, 4, e->config_update);
    bind_text(st, 5, e->message);
    sqlite3_bind_int64(st, 6, now);
    if (expect >= 0) sqlite3_bind_int64(st, 7, expect);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT)
        err = vkpt_fail(VKPT_EEXISTS, "endpoint %s already exists", e->name);
    else if (rc != SQLITE_DONE)
        err = db_fail(s, "write an endpoint");
    else if (expect >= 0 && sqlite3_changes(s->db) == 0)
        err = vkpt_fail(VKPT_ESTATE,
                        "endpoint %s changed since it was read (generation %lld) or was deleted",
                        e->name, (long long)expect);
    err = leave(s, err);
    if (!err) {
        e->generation = expect < 0 ? 1 : expect + 1;
        e->updated_ms = now;
        if (expect < 0) e->created_ms = now;
    }
    return err;
}

static int op_endpoint_get(vkpt_store *base, const char *name, vkpt_endpoint_rec *out)
{
    sql_store *s = (sql_store *)base;
    memset(out, 0, sizeof *out);
    int err = enter(s);
    if (err) return err;
    sqlite3_stmt *st = stmt(s, Q_EP_GET);
    bind_text(st, 1, name);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = read_endpoint(st, out);
    else if (rc == SQLITE_DONE)
        err = vkpt_fail(VKPT_ENOTFOUND, "no endpoint is named %s", name);
    else
        err = db_fail(s, "read an endpoint");
    return leave(s, err);
}

static int op_endpoint_list(vkpt_store *base, vkpt_endpoint_rec **out, size_t *n)
{
    sql_store *s = (sql_store *)base;
    *out = NULL;
    *n = 0;
    int err = enter(s);
    if (err) return err;
    sqlite3_stmt *st = stmt(s, Q_EP_LIST);
    vkpt_endpoint_rec *v = NULL;
    size_t k = 0, cap = 0;
    int rc;
    while (!err && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (k == cap) {
            size_t nc = cap ? cap * 2 : 8;
            vkpt_endpoint_rec *nv = vkpt_realloc(v, nc * sizeof *nv);
            if (!nv) {
                err = vkpt_fail(VKPT_ENOMEM, "store: endpoint list");
                break;
            }
            v = nv;
            cap = nc;
        }
        err = read_endpoint(st, &v[k]);
        if (!err) k++;
    }
    if (!err && rc != SQLITE_DONE) err = db_fail(s, "list endpoints");
    err = leave(s, err);
    if (err) {
        vkpt_endpoint_recs_free(v, k);
        return err;
    }
    *out = v;
    *n = k;
    return 0;
}

static int op_endpoint_delete(vkpt_store *base, const char *name, int64_t expect)
{
    sql_store *s = (sql_store *)base;
    int err = enter(s);
    if (err) return err;
    sqlite3_stmt *st = stmt(s, expect < 0 ? Q_EP_DELETE_ANY : Q_EP_DELETE);
    bind_text(st, 1, name);
    if (expect >= 0) sqlite3_bind_int64(st, 2, expect);
    if (sqlite3_step(st) != SQLITE_DONE)
        err = db_fail(s, "delete an endpoint");
    else if (sqlite3_changes(s->db) == 0)
        err = expect < 0 ? vkpt_fail(VKPT_ENOTFOUND, "no endpoint is named %s", name)
                         : vkpt_fail(VKPT_ESTATE, "endpoint %s changed since it was read", name);
    return leave(s, err);
}

/* ---- calibrations ---------------------------------------------------------------------------- */

static int op_calibration_put(vkpt_store *base, vkpt_calibration *c)
{
    sql_store *s = (sql_store *)base;
    if (!c || !c->checksum || !c->device_uuid || !c->vkpt_version)
        return vkpt_fail(VKPT_EINVAL, "store: calibration without its key");
    int err = enter(s);
    if (err) return err;
    int64_t now = vkpt_store_now_ms();
    sqlite3_stmt *st = stmt(s, Q_CAL_PUT);
    bind_text(st, 1, c->checksum);
    bind_text(st, 2, c->device_uuid);
    bind_text(st, 3, c->vkpt_version);
    sqlite3_bind_double(st, 4, c->tokens_per_s);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)c->chunk_size);
    bind_text(st, 6, c->details);
    sqlite3_bind_int64(st, 7, now);
    if (sqlite3_step(st) != SQLITE_DONE) err = db_fail(s, "write a calibration");
    err = leave(s, err);
    if (!err) c->created_ms = now;
    return err;
}

static int op_calibration_get(vkpt_store *base, const char *checksum, const char *device_uuid,
                              const char *version, vkpt_calibration *out)
{
    sql_store *s = (sql_store *)base;
    memset(out, 0, sizeof *out);
    int err = enter(s);
    if (err) return err;
    sqlite3_stmt *st = stmt(s, Q_CAL_GET);
    bind_text(st, 1, checksum);
    bind_text(st, 2, device_uuid);
    bind_text(st, 3, version);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        bool oom = false;
        out->checksum = col_text(st, 0, &oom);
        out->device_uuid = col_text(st, 1, &oom);
        out->vkpt_version = col_text(st, 2, &oom);
        out->tokens_per_s = sqlite3_column_double(st, 3);
        out->chunk_size = (uint64_t)sqlite3_column_int64(st, 4);
        out->details = col_text(st, 5, &oom);
        out->created_ms = sqlite3_column_int64(st, 6);
        if (oom) {
            vkpt_calibration_free(out);
            err = vkpt_fail(VKPT_ENOMEM, "store: calibration");
        }
    } else if (rc == SQLITE_DONE) {
        err = vkpt_fail(VKPT_ENOTFOUND, "no calibration for this model on this device");
    } else {
        err = db_fail(s, "read a calibration");
    }
    return leave(s, err);
}

/* ---- open / close ------------------------------------------------------------------------------- */

static void op_close(vkpt_store *base)
{
    sql_store *s = (sql_store *)base;
    if (!s) return;
    for (int i = 0; i < Q_COUNT; i++) sqlite3_finalize(s->q[i]);
    sqlite3_finalize(s->begin);
    sqlite3_finalize(s->commit);
    sqlite3_finalize(s->rollback);
    if (s->db) sqlite3_close(s->db);
    pthread_mutex_destroy(&s->mu);
    vkpt_free(s);
}

static const vkpt_store_ops sqlite_ops = {
    .name = "sqlite",
    .close = op_close,
    .begin = op_begin,
    .commit = op_commit,
    .rollback = op_rollback,
    .model_add = op_model_add,
    .model_get = op_model_get,
    .model_list = op_model_list,
    .model_delete = op_model_delete,
    .endpoint_put = op_endpoint_put,
    .endpoint_get = op_endpoint_get,
    .endpoint_list = op_endpoint_list,
    .endpoint_delete = op_endpoint_delete,
    .calibration_put = op_calibration_put,
    .calibration_get = op_calibration_get,
};

static int exec(sql_store *s, const char *q)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, q, NULL, NULL, &msg) == SQLITE_OK) return 0;
    int err = vkpt_fail(VKPT_EIO, "%s: %s", s->path, msg ? msg : sqlite3_errmsg(s->db));
    sqlite3_free(msg);
    return err;
}

/* Create or check the schema, in one transaction. */
static int migrate(sql_store *s)
{
    int err = exec(s, "BEGIN IMMEDIATE");
    if (err) return err;
    err = exec(s, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    sqlite3_stmt *st = NULL;
    int version = 0;
    if (!err && sqlite3_prepare_v2(s->db, "SELECT MAX(version) FROM schema_version", -1, &st,
                                   NULL) != SQLITE_OK)
        err = db_fail(s, "read the schema version");
    if (!err && sqlite3_step(st) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (!err && version > SCHEMA_VERSION)
        err = vkpt_fail(VKPT_EUNSUPPORTED,
                        "%s has schema version %d, written by a newer vkpt (this one knows %d)",
                        s->path, version, SCHEMA_VERSION);
    if (!err && version < 1) {
        err = exec(s, schema_v1);
        if (!err) err = exec(s, "INSERT INTO schema_version (version) VALUES (1)");
    }
    /* later versions: if (version < 2) ALTER TABLE ...; INSERT 2 */
    if (!err) return exec(s, "COMMIT");
    exec(s, "ROLLBACK");
    return err;
}

/* mkdir -p of the folder holding `path`. */
static int make_parent(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return 0;
    *slash = 0;
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(dir, 0755) && errno != EEXIST)
            return vkpt_fail(VKPT_EIO, "cannot create %s: %s", dir, strerror(errno));
        *p = '/';
    }
    if (mkdir(dir, 0755) && errno != EEXIST)
        return vkpt_fail(VKPT_EIO, "cannot create %s: %s", dir, strerror(errno));
    return 0;
}

int vkpt_store_open_sqlite(const char *path, vkpt_store **out)
{
    if (!path || !out) return vkpt_fail(VKPT_EINVAL, "vkpt_store_open_sqlite: NULL");
    *out = NULL;
    int err = make_parent(path);
    if (err) return err;
    sql_store *s = vkpt_calloc(1, sizeof *s);
    if (!s) return vkpt_fail(VKPT_ENOMEM, "store");
    s->base.ops = &sqlite_ops;
    snprintf(s->path, sizeof s->path, "%s", path);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&s->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    int rc = sqlite3_open_v2(
        path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        err = vkpt_fail(VKPT_EIO, "cannot open %s: %s", path,
                        s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    /* journal_mode answers with a row; read it to know WAL is on */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW ||
        strcmp((const char *)sqlite3_column_text(st, 0), "wal") != 0) {
        sqlite3_finalize(st);
        err = vkpt_fail(VKPT_EIO, "%s: cannot switch to WAL mode: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    sqlite3_finalize(st);
    if ((err = exec(s, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON"))) goto fail;
    if ((err = migrate(s))) goto fail;
    for (int i = 0; i < Q_COUNT; i++)
        if (sqlite3_prepare_v3(s->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->q[i], NULL) !=
            SQLITE_OK) {
            err = db_fail(s, sql[i]);
            goto fail;
        }
    if (sqlite3_prepare_v2(s->db, "BEGIN IMMEDIATE", -1, &s->begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "COMMIT", -1, &s->commit, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "ROLLBACK", -1, &s->rollback, NULL) != SQLITE_OK) {
        err = db_fail(s, "prepare transactions");
        goto fail;
    }
    *out = &s->base;
    return 0;
fail:
    op_close(&s->base);
    return err;
}
