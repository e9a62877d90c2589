/* The model registry (include/vkpt/registry.h, server/registry.c): names,
 * SHA-256 checksums of files and folders, registering a real model (what it
 * is comes from its files), the system.ai catalog kept in step with the
 * files, and the data directory's default. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the above first */
#include <cmocka.h>

#include "sha256.h"
#include "vkpt/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORIES VKPT_SOURCE_DIR "/models/stories260K/stories260K.gguf"

static char g_dir[256];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void registry_names_are_three_parts(void **st)
{
    char msg[256];
    assert_true(vkpt_registry_valid_name("main.default.stories", msg, sizeof msg));
    assert_true(vkpt_registry_valid_name("system.ai.Qwen2_5-7B", msg, sizeof msg));
    assert_false(vkpt_registry_valid_name("main.stories", msg, sizeof msg));
    assert_non_null(strstr(msg, "2 parts"));
    assert_false(vkpt_registry_valid_name("a.b.c.d", msg, sizeof msg));
    assert_false(vkpt_registry_valid_name("a..c", msg, sizeof msg));
    assert_false(vkpt_registry_valid_name("a.b.c d", msg, sizeof msg));
    assert_false(vkpt_registry_valid_name("", msg, sizeof msg));
    char long_name[200];
    memset(long_name, 'x', sizeof long_name);
    memcpy(long_name, "a.b.", 4);
    long_name[4 + 65] = 0;
    assert_false(vkpt_registry_valid_name(long_name, msg, sizeof msg));
}

static void registry_sha256_matches_the_standard_vectors(void **st)
{
    static const struct {
        const char *in;
        const char *hex;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        srv_sha256 c;
        uint8_t d[32];
        char hex[65];
        srv_sha256_init(&c);
        /* fed in uneven pieces: the block buffering must not matter */
        size_t n = strlen(v[i].in);
        for (size_t k = 0; k < n; k += 7) srv_sha256_update(&c, v[i].in + k, n - k < 7 ? n - k : 7);
        srv_sha256_final(&c, d);
        srv_sha256_hex(d, hex);
        assert_string_equal(hex, v[i].hex);
    }
    /* one million 'a' */
    srv_sha256 c;
    uint8_t d[32];
    char hex[65], block[1000];
    memset(block, 'a', sizeof block);
    srv_sha256_init(&c);
    for (int i = 0; i < 1000; i++) srv_sha256_update(&c, block, sizeof block);
    srv_sha256_final(&c, d);
    srv_sha256_hex(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void registry_checksums_files_and_folders(void **st)
{
    char sum[72], again[72];
    uint64_t size;
    int64_t mtime;
    /* the bundled model: the value its PROVENANCE.md records */
    assert_int_equal(vkpt_registry_checksum(STORIES, sum, &size, &mtime), 0);
    assert_string_equal(sum,
                        "sha256:270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d");
    assert_int_equal(size, 1185376);
    /* a folder: its files by path; a change anywhere changes the sum */
    char dir[300], p[400];
    snprintf(dir, sizeof dir, "%s/hf", g_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_file(p, "{}");
    snprintf(p, sizeof p, "%s/.hidden", dir);
    write_file(p, "ignored");
    snprintf(p, sizeof p, "%s/sub", dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/sub/a.txt", dir);
    write_file(p, "a");
    assert_int_equal(vkpt_registry_checksum(dir, sum, &size, &mtime), 0);
    assert_int_equal(size, 3);
    snprintf(p, sizeof p, "%s/.hidden", dir);
    write_file(p, "still ignored");
    assert_int_equal(vkpt_registry_checksum(dir, again, &size, &mtime), 0);
    assert_string_equal(sum, again);
    snprintf(p, sizeof p, "%s/sub/a.txt", dir);
    write_file(p, "b");
    assert_int_equal(vkpt_registry_checksum(dir, again, &size, &mtime), 0);
    assert_string_not_equal(sum, again);
    assert_int_equal(vkpt_registry_checksum("/no/such/model.gguf", sum, &size, &mtime), VKPT_EIO);
}

static void registry_registers_what_the_files_say(void **st)
{
    vkpt_store *s;
    assert_int_equal(vkpt_registry_open(g_dir, &s), 0);
    vkpt_register_req r = {.name = "main.default.stories",
                           .source = STORIES,
                           .metadata = "{\"system_prompt\":\"Tell a story.\"}"};
    vkpt_model_version v;
    assert_int_equal(vkpt_registry_register(s, &r, &v), 0);
    assert_int_equal(v.version, 1);
    assert_string_equal(v.task, VKPT_TASK_CHAT);
    assert_string_equal(v.model_type, "llama");
    assert_string_equal(v.format, "gguf");
    assert_int_equal(v.context_length, 2048); /* the GGUF's llama.context_length */
    assert_non_null(strstr(v.metadata, "Tell a story."));
    char *json = vkpt_registry_version_json(&v);
    assert_non_null(strstr(json, "\"version\":1"));
    assert_non_null(strstr(json, "\"metadata\":{\"system_prompt\""));
    vkpt_free(json);
    vkpt_model_version_free(&v);
    /* a second version, a smaller context, completions */
    r.context_length = 512;
    r.task = VKPT_TASK_COMPLETIONS;
    r.metadata = NULL;
    assert_int_equal(vkpt_registry_register(s, &r, &v), 0);
    assert_int_equal(v.version, 2);
    assert_int_equal(v.context_length, 512);
    assert_string_equal(v.metadata, "{}");
    vkpt_model_version_free(&v);
    /* refusals name the problem */
    r.context_length = 4096;
    assert_int_equal(vkpt_registry_register(s, &r, &v), VKPT_EINVAL);
    assert_non_null(strstr(vkpt_errmsg(VKPT_EINVAL), "context_length"));
    r.context_length = 0;
    r.task = VKPT_TASK_EMBEDDINGS;
    assert_int_equal(vkpt_registry_register(s, &r, &v), VKPT_EINVAL);
    assert_non_null(strstr(vkpt_errmsg(VKPT_EINVAL), "generative"));
    r.task = "llm/v2/chat";
    assert_int_equal(vkpt_registry_register(s, &r, &v), VKPT_EINVAL);
    r.task = NULL;
    r.metadata = "{\"pooling\":\"max\"}";
    assert_int_equal(vkpt_registry_register(s, &r, &v), VKPT_EINVAL);
    r.metadata = "[1]";
    assert_int_equal(vkpt_registry_register(s, &r, &v), VKPT_EINVAL);
    r.metadata = NULL;
    r.name = "stories";
    assert_int_equal(vkpt_registry_register(s, &r, &v), VKPT_EINVAL);
    r.name = "main.default.x";
    r.source = "/no/such/file.gguf";
    assert_int_equal(vkpt_registry_register(s, &r, &v), VKPT_EIO);
    vkpt_store_close(s);
}

static void registry_system_catalog_follows_the_files(void **st)
{
    char data[300], models[400], p[500];
    snprintf(data, sizeof data, "%s/sys", g_dir);
    snprintf(models, sizeof models, "%s/models", data);
    vkpt_store *s;
    assert_int_equal(vkpt_registry_open(data, &s), 0);
    assert_int_equal(vkpt_registry_sync_system(s, STORIES, models), 1); /* no models folder yet */
    assert_int_equal(vkpt_registry_sync_system(s, STORIES, models), 0); /* unchanged */
    vkpt_model_version v;
    assert_int_equal(s->ops->model_get(s, "system.ai.stories260K", 0, &v), 0);
    assert_int_equal(v.version, 1);
    vkpt_model_version_free(&v);
    /* a model placed in the folder joins the catalog; a broken one is skipped */
    assert_int_equal(mkdir(models, 0755), 0);
    snprintf(p, sizeof p, "cp '%s' '%s/tiny.v2.gguf'", STORIES, models);
    assert_int_equal(system(p), 0);
    snprintf(p, sizeof p, "%s/broken.gguf", models);
    write_file(p, "not a gguf");
    assert_int_equal(vkpt_registry_sync_system(s, STORIES, models), 1);
    assert_int_equal(s->ops->model_get(s, "system.ai.tiny_v2", 0, &v), 0);
    assert_int_equal(v.version, 1);
    vkpt_model_version_free(&v);
    /* a changed file is a new version */
    snprintf(p, sizeof p, "%s/tiny.v2.gguf", models);
    FILE *f = fopen(p, "ab");
    assert_non_null(f);
    fputc(0, f);
    fclose(f);
    assert_int_equal(vkpt_registry_sync_system(s, STORIES, models), 1);
    assert_int_equal(s->ops->model_get(s, "system.ai.tiny_v2", 0, &v), 0);
    assert_int_equal(v.version, 2);
    vkpt_model_version_free(&v);
    vkpt_store_close(s);
}

static void registry_data_dir_defaults(void **st)
{
    char out[512];
    assert_int_equal(vkpt_registry_data_dir("/x/y/", out, sizeof out), 0);
    assert_string_equal(out, "/x/y");
    setenv("VKPT_DATA_DIR", "/env/dir", 1);
    assert_int_equal(vkpt_registry_data_dir(NULL, out, sizeof out), 0);
    assert_string_equal(out, "/env/dir");
    unsetenv("VKPT_DATA_DIR");
    setenv("XDG_DATA_HOME", "/xdg", 1);
    assert_int_equal(vkpt_registry_data_dir(NULL, out, sizeof out), 0);
    assert_string_equal(out, "/xdg/vkpt");
    unsetenv("XDG_DATA_HOME");
    setenv("HOME", "/home/u", 1);
    assert_int_equal(vkpt_registry_data_dir(NULL, out, sizeof out), 0);
    assert_string_equal(out, "/home/u/.local/share/vkpt");
}

static int setup(void **st)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/vkpt-test-registry-XXXXXX");
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
        cmocka_unit_test(registry_names_are_three_parts),
        cmocka_unit_test(registry_sha256_matches_the_standard_vectors),
        cmocka_unit_test(registry_checksums_files_and_folders),
        cmocka_unit_test(registry_registers_what_the_files_say),
        cmocka_unit_test(registry_system_catalog_follows_the_files),
        cmocka_unit_test(registry_data_dir_defaults),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
