/* engine/base: the error table, error details, allocation hooks, logging. */
#define _GNU_SOURCE
#include "vk_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void base_error_names_and_messages_come_from_one_table(void **state)
{
    (void)state;
    assert_string_equal(vkpt_err_name(0), "VKPT_OK");
    assert_string_equal(vkpt_err_name(VKPT_EINVAL), "VKPT_EINVAL");
    assert_string_equal(vkpt_err_name(VKPT_EDEVLOST), "VKPT_EDEVLOST");
    assert_string_equal(vkpt_strerror(VKPT_EDEVMEM), "out of device memory");
    assert_string_equal(vkpt_err_name(-9999), "VKPT_E?");
    /* codes are distinct and negative */
    int codes[] = {
#define X(name, code, msg) code,
        VKPT_ERR_MAP(X)
#undef X
    };
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        assert_true(codes[i] < 0);
        for (size_t j = i + 1; j < n; j++) assert_int_not_equal(codes[i], codes[j]);
    }
}

static void base_fail_records_a_thread_local_detail(void **state)
{
    (void)state;
    vkpt_errclear();
    assert_string_equal(vkpt_errmsg(VKPT_EFORMAT), "malformed or unsupported file");
    int e = vkpt_fail(VKPT_EFORMAT, "tensor %s: offset %d past the end", "blk.0.attn_q", 42);
    assert_int_equal(e, VKPT_EFORMAT);
    assert_string_equal(vkpt_errmsg(VKPT_EFORMAT), "tensor blk.0.attn_q: offset 42 past the end");
    /* a detail recorded for another code is not returned for this one */
    assert_string_equal(vkpt_errmsg(VKPT_EIO), "input/output error");
}

static int g_fail_at, g_calls;
static void *failing_malloc(size_t n)
{
    if (++g_calls == g_fail_at) return NULL;
    return malloc(n);
}

static void base_alloc_hooks_can_fail_the_nth_allocation(void **state)
{
    (void)state;
    vkpt_alloc_hooks h = {failing_malloc, realloc, free};
    vkpt_set_alloc_hooks(&h);
    g_calls = 0;
    g_fail_at = 2;
    void *a = vkpt_malloc(10);
    void *b = vkpt_malloc(10);
    char *c = vkpt_strdup("abc");
    vkpt_set_alloc_hooks(NULL);
    assert_non_null(a);
    assert_null(b);
    assert_non_null(c);
    assert_string_equal(c, "abc");
    vkpt_free(a);
    vkpt_free(c);
    vkpt_free(NULL);
    assert_null(vkpt_calloc(SIZE_MAX / 2, 4)); /* overflow is caught */
}

static char g_logged[256];
static int g_log_level;
static void sink(int level, const char *msg, void *ud)
{
    (void)ud;
    g_log_level = level;
    snprintf(g_logged, sizeof g_logged, "%s", msg);
}

static void base_log_respects_level_and_sink(void **state)
{
    (void)state;
    vkpt_log_set_sink(sink, NULL);
    vkpt_log_set_level(VKPT_LOG_WARN);
    g_logged[0] = 0;
    VKPT_LOGI("hidden %d", 1);
    assert_string_equal(g_logged, "");
    VKPT_LOGW("shown %d", 2);
    assert_string_equal(g_logged, "shown 2");
    assert_int_equal(g_log_level, VKPT_LOG_WARN);
    vkpt_log_set_sink(NULL, NULL);
    vkpt_log_set_level(VKPT_LOG_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(base_error_names_and_messages_come_from_one_table),
        cmocka_unit_test(base_fail_records_a_thread_local_detail),
        cmocka_unit_test(base_alloc_hooks_can_fail_the_nth_allocation),
        cmocka_unit_test(base_log_respects_level_and_sink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
