/* Fuzz target for tool calls in model answers (toolcall.h): byte 0 picks
 * the format (bit 0) and how the answer is cut into streamed pieces (the
 * rest), the remaining bytes are the answer. Invariants: what the filter
 * shows plus what it holds is the answer, byte for byte, however it is cut;
 * a parse either finds calls of the declared tools whose arguments are JSON
 * objects, or reports none and leaves the content alone; nothing leaks. */
#include "toolcall.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const int fmt = data[0] & 1 ? SRV_TOOLS_TAGS : SRV_TOOLS_JSON;
    const size_t step = 1 + (data[0] >> 1);
    const char *text = (const char *)data + 1;
    const size_t n = size - 1;
    cJSON *tools = cJSON_Parse("[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}},"
                               "{\"type\":\"function\",\"function\":{\"name\":\"search\"}},"
                               "{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]");
    if (!tools) return 0;
    srv_tool_filter f = {.fmt = fmt};
    srv_buf shown = {0};
    for (size_t i = 0; i < n; i += step)
        srv_tool_filter_feed(&f, text + i, n - i < step ? n - i : step, &shown);
    if (!srv_buf_ok(&shown) || !srv_buf_ok(&f.held)) __builtin_trap();
    if (shown.n + f.held.n != n) __builtin_trap();
    if ((shown.n && memcmp(shown.p, text, shown.n)) ||
        (f.held.n && memcmp(f.held.p, text + shown.n, f.held.n)))
        __builtin_trap();
    srv_tool_calls calls = {0};
    srv_buf content = {0};
    int err = srv_tool_parse(fmt, f.held.p ? f.held.p : "", f.held.n, tools, &calls, &content);
    if (err && (calls.n || content.n)) __builtin_trap();
    if (!err && !calls.n) __builtin_trap();
    for (size_t i = 0; i < calls.n; i++) {
        cJSON *a = cJSON_Parse(calls.v[i].arguments);
        if (!cJSON_IsObject(a)) __builtin_trap();
        cJSON_Delete(a);
        if (strcmp(calls.v[i].name, "get_weather") && strcmp(calls.v[i].name, "search") &&
            strcmp(calls.v[i].name, "f"))
            __builtin_trap();
    }
    srv_tool_calls_free(&calls);
    srv_buf_free(&content);
    srv_buf_free(&shown);
    srv_tool_filter_free(&f);
    cJSON_Delete(tools);
    return 0;
}
