/* The control-plane store (include/vkpt/store.h, server/store_sqlite.c):
 * model versions numbered per name, endpoint records with their generation
 * (optimistic concurrency), calibrations keyed by (checksum, device, vkpt
 * version), groups, and what a process killed mid-update leaves behind:
 * children write and die by SIGKILL, the parent reopens the file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the above first */
#include <cmocka.h>

#include "vkpt/store.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_dir[256];

static void db_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_dir, name);
}

static vkpt_store *open_store(const char *name)
{
    char p[512];
    db_path(p, sizeof p, name);
    vkpt_store *s = NULL;
    assert_int_equal(vkpt_store_open_sqlite(p, &s), 0);
    return s;
}

static vkpt_model_version mv(const char *name, const char *sum)
{
    vkpt_model_version v = {
        .name = (char *)name,
        .source = (char *)"/models/m.gguf",
        .format = (char *)"gguf",
        .checksum = (char *)sum,
        .size_bytes = 123,
        .mtime = 456,
        .task = (char *)"llm/v1/chat",
        .model_type = (char *)"llama",
        .context_length = 512,
        .metadata = (char *)"{\"system_prompt\":\"hi\"}",
    };
    return v;
}

static void put_ep(vkpt_store *s, vkpt_endpoint_rec *e, const char *name, const char *cfg,
                   const char *pending, const char *state, int64_t expect, int want)
{
    e->name = (char *)name;
    e->config = (char *)cfg;
    e->pending = (char *)pending;
    e->config_update = (char *)state;
    e->message = NULL;
    assert_int_equal(s->ops->endpoint_put(s, e, expect), want);
}

/* ---- models --------------------------------------------------------------------------- */

static void store_model_versions_count_per_name(void **st)
{
    vkpt_store *s = open_store("models.db");
    vkpt_model_version a = mv("main.default.a", "sha256:aa"), b = mv("main.default.b", "sha256:bb");
    assert_int_equal(s->ops->model_add(s, &a), 0);
    assert_int_equal(a.version, 1);
    assert_true(a.created_ms > 1600000000000);
    assert_int_equal(s->ops->model_add(s, &b), 0);
    assert_int_equal(b.version, 1);
    a.checksum = (char *)"sha256:a2";
    assert_int_equal(s->ops->model_add(s, &a), 0);
    assert_int_equal(a.version, 2);

    vkpt_model_version got;
    assert_int_equal(s->ops->model_get(s, "main.default.a", 0, &got), 0); /* latest */
    assert_int_equal(got.version, 2);
    assert_string_equal(got.checksum, "sha256:a2");
    assert_string_equal(got.metadata, "{\"system_prompt\":\"hi\"}");
    assert_int_equal(got.context_length, 512);
    assert_int_equal(got.size_bytes, 123);
    vkpt_model_version_free(&got);
    assert_int_equal(s->ops->model_get(s, "main.default.a", 1, &got), 0);
    assert_string_equal(got.checksum, "sha256:aa");
    vkpt_model_version_free(&got);
    assert_int_equal(s->ops->model_get(s, "main.default.a", 3, &got), VKPT_ENOTFOUND);
    assert_int_equal(s->ops->model_get(s, "main.default.zz", 0, &got), VKPT_ENOTFOUND);

    vkpt_model_version *v;
    size_t n;
    assert_int_equal(s->ops->model_list(s, NULL, &v, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(v[0].name, "main.default.a");
    assert_int_equal(v[1].version, 2);
    assert_string_equal(v[2].name, "main.default.b");
    vkpt_model_versions_free(v, n);
    assert_int_equal(s->ops->model_delete(s, "main.default.a", 1), 0);
    assert_int_equal(s->ops->model_delete(s, "main.default.a", 1), VKPT_ENOTFOUND);
    assert_int_equal(s->ops->model_list(s, "main.default.a", &v, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(v[0].version, 2);
    vkpt_model_versions_free(v, n);
    /* a deleted number is not reused, not even the latest */
    assert_int_equal(s->ops->model_delete(s, "main.default.a", 2), 0);
    assert_int_equal(s->ops->model_add(s, &a), 0);
    assert_int_equal(a.version, 3);
    vkpt_store_close(s);
}

/* ---- endpoints ------------------------------------------------------------------------------ */

static void store_endpoint_generation_guards_writes(void **st)
{
    vkpt_store *s = open_store("ep.db");
    vkpt_endpoint_rec e = {0};
    put_ep(s, &e, "ep", NULL, "{\"v\":1}", "IN_PROGRESS", -1, 0);
    assert_int_equal(e.generation, 1);
    put_ep(s, &e, "ep", NULL, "{\"v\":1}", "IN_PROGRESS", -1, VKPT_EEXISTS);
    /* a writer that read generation 1 wins; one that read it too, later, loses */
    put_ep(s, &e, "ep", "{\"v\":1}", NULL, "NOT_UPDATING", 1, 0);
    assert_int_equal(e.generation, 2);
    put_ep(s, &e, "ep", "{\"v\":9}", NULL, "NOT_UPDATING", 1, VKPT_ESTATE);
    vkpt_endpoint_rec got;
    assert_int_equal(s->ops->endpoint_get(s, "ep", &got), 0);
    assert_string_equal(got.config, "{\"v\":1}");
    assert_null(got.pending);
    assert_string_equal(got.config_update, "NOT_UPDATING");
    assert_int_equal(got.generation, 2);
    assert_true(got.updated_ms >= got.created_ms);
    vkpt_endpoint_rec_free(&got);
    assert_int_equal(s->ops->endpoint_delete(s, "ep", 1), VKPT_ESTATE);
    assert_int_equal(s->ops->endpoint_delete(s, "ep", 2), 0);
    assert_int_equal(s->ops->endpoint_get(s, "ep", &got), VKPT_ENOTFOUND);
    assert_int_equal(s->ops->endpoint_delete(s, "ep", -1), VKPT_ENOTFOUND);
    put_ep(s, &e, "b", "{}", NULL, "NOT_UPDATING", -1, 0);
    put_ep(s, &e, "a", "{}", NULL, "NOT_UPDATING", -1, 0);
    vkpt_endpoint_rec *v;
    size_t n;
    assert_int_equal(s->ops->endpoint_list(s, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].name, "a");
    assert_string_equal(v[1].name, "b");
    vkpt_endpoint_recs_free(v, n);
    vkpt_store_close(s);
}

static void store_group_rolls_back_as_one(void **st)
{
    vkpt_store *s = open_store("group.db");
    vkpt_endpoint_rec e = {0};
    vkpt_model_version a = mv("main.default.g", "sha256:01");
    assert_int_equal(s->ops->begin(s), 0);
    assert_int_equal(s->ops->model_add(s, &a), 0);
    put_ep(s, &e, "g", "{}", NULL, "NOT_UPDATING", -1, 0);
    s->ops->rollback(s);
    vkpt_endpoint_rec got;
    assert_int_equal(s->ops->endpoint_get(s, "g", &got), VKPT_ENOTFOUND);
    vkpt_model_version gv;
    assert_int_equal(s->ops->model_get(s, "main.default.g", 0, &gv), VKPT_ENOTFOUND);
    /* nested groups commit with the outermost */
    assert_int_equal(s->ops->begin(s), 0);
    assert_int_equal(s->ops->begin(s), 0);
    put_ep(s, &e, "g", "{}", NULL, "NOT_UPDATING", -1, 0);
    assert_int_equal(s->ops->commit(s), 0);
    assert_int_equal(s->ops->model_add(s, &a), 0);
    assert_int_equal(s->ops->commit(s), 0);
    assert_int_equal(s->ops->endpoint_get(s, "g", &got), 0);
    vkpt_endpoint_rec_free(&got);
    assert_int_equal(s->ops->model_get(s, "main.default.g", 0, &gv), 0);
    vkpt_model_version_free(&gv);
    assert_int_equal(s->ops->commit(s), VKPT_ESTATE);
    vkpt_store_close(s);
}

/* ---- calibrations ------------------------------------------------------------------------------ */

static void store_calibration_keyed_by_model_device_version(void **st)
{
    vkpt_store *s = open_store("cal.db");
    vkpt_calibration c = {.checksum = (char *)"sha256:m",
                          .device_uuid = (char *)"00112233445566778899aabbccddeeff",
                          .vkpt_version = (char *)"0.1.0",
                          .tokens_per_s = 987.6,
                          .chunk_size = 980,
                          .details = (char *)"{\"levels\":[]}"};
    assert_int_equal(s->ops->calibration_put(s, &c), 0);
    vkpt_calibration got;
    assert_int_equal(s->ops->calibration_get(s, "sha256:m", c.device_uuid, "0.1.0", &got), 0);
    assert_int_equal(got.chunk_size, 980);
    assert_true(got.tokens_per_s > 987.5 && got.tokens_per_s < 987.7);
    assert_string_equal(got.details, "{\"levels\":[]}");
    vkpt_calibration_free(&got);
    assert_int_equal(s->ops->calibration_get(s, "sha256:m", c.device_uuid, "0.2.0", &got),
                     VKPT_ENOTFOUND);
    assert_int_equal(s->ops->calibration_get(s, "sha256:m", "ff", "0.1.0", &got), VKPT_ENOTFOUND);
    /* a rerun replaces it */
    c.chunk_size = 1000;
    assert_int_equal(s->ops->calibration_put(s, &c), 0);
    assert_int_equal(s->ops->calibration_get(s, "sha256:m", c.device_uuid, "0.1.0", &got), 0);
    assert_int_equal(got.chunk_size, 1000);
    vkpt_calibration_free(&got);
    vkpt_store_close(s);
}

/* ---- crashes ------------------------------------------------------------------------------------ */

/* In a child: open the store, run `body`, then die by SIGKILL (no exit
 * handlers, no close: what kill -9 does to vkpt serve). */
static void crash_after(const char *name, void (*body)(vkpt_store *s))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char p[512];
        db_path(p, sizeof p, name);
        vkpt_store *s = NULL;
        if (vkpt_store_open_sqlite(p, &s)) _exit(3);
        body(s);
        kill(getpid(), SIGKILL);
        _exit(4);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
}

static void body_update_uncommitted(vkpt_store *s)
{
    /* a config update that writes the endpoint and registers a model, and
     * dies before its commit */
    vkpt_endpoint_rec e = {.name = (char *)"ep",
                           .config = (char *)"{\"v\":2}",
                           .config_update = (char *)"NOT_UPDATING"};
    vkpt_model_version a = mv("main.default.crash", "sha256:cc");
    if (s->ops->begin(s)) _exit(5);
    if (s->ops->endpoint_put(s, &e, 1)) _exit(6);
    if (s->ops->model_add(s, &a)) _exit(7);
}

static void body_update_committed(vkpt_store *s)
{
    vkpt_endpoint_rec e = {.name = (char *)"ep",
                           .config = (char *)"{\"v\":2}",
                           .config_update = (char *)"NOT_UPDATING"};
    if (s->ops->endpoint_put(s, &e, 1)) _exit(6);
}

static void store_kill9_mid_update_keeps_the_old_record(void **st)
{
    vkpt_store *s = open_store("crash.db");
    vkpt_endpoint_rec e = {0};
    put_ep(s, &e, "ep", "{\"v\":1}", NULL, "NOT_UPDATING", -1, 0);
    vkpt_store_close(s);

    crash_after("crash.db", body_update_uncommitted);
    s = open_store("crash.db");
    vkpt_endpoint_rec got;
    assert_int_equal(s->ops->endpoint_get(s, "ep", &got), 0);
    assert_string_equal(got.config, "{\"v\":1}"); /* nothing half-applied */
    assert_int_equal(got.generation, 1);
    vkpt_endpoint_rec_free(&got);
    vkpt_model_version gv;
    assert_int_equal(s->ops->model_get(s, "main.default.crash", 0, &gv), VKPT_ENOTFOUND);
    vkpt_store_close(s);

    crash_after("crash.db", body_update_committed);
    s = open_store("crash.db");
    assert_int_equal(s->ops->endpoint_get(s, "ep", &got), 0);
    assert_string_equal(got.config, "{\"v\":2}"); /* nothing lost */
    assert_int_equal(got.generation, 2);
    vkpt_endpoint_rec_free(&got);
    vkpt_store_close(s);
}

static void store_refuses_a_newer_schema(void **st)
{
    vkpt_store *s = open_store("new.db");
    vkpt_store_close(s);
    char p[512];
    db_path(p, sizeof p, "new.db");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO schema_version VALUES (99)", 0, 0, 0),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(vkpt_store_open_sqlite(p, &s), VKPT_EUNSUPPORTED);
    assert_non_null(strstr(vkpt_errmsg(VKPT_EUNSUPPORTED), "newer vkpt"));
    /* and a path it cannot create is an I/O error, not a crash */
    assert_int_equal(vkpt_store_open_sqlite("/proc/no/such/dir/x.db", &s), VKPT_EIO);
}

static int setup(void **st)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/vkpt-test-store-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **st)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(store_model_versions_count_per_name),
        cmocka_unit_test(store_endpoint_generation_guards_writes),
        cmocka_unit_test(store_group_rolls_back_as_one),
        cmocka_unit_test(store_calibration_keyed_by_model_device_version),
        cmocka_unit_test(store_kill9_mid_update_keeps_the_old_record),
        cmocka_unit_test(store_refuses_a_newer_schema),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
