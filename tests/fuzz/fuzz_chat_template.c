/* Fuzz target for the chat-template lexer, parser and interpreter: the input
 * is a template, optionally followed by a NUL byte and a JSON object of
 * variables (default: a small conversation with tools). A template that
 * parses is rendered; errors are fine, crashes and leaks are not. Built as a
 * libFuzzer target with -DVKPT_FUZZ=ON (clang), and always as a replay test
 * over tests/fuzz/corpus/chat_template. */
#include "vkpt/tokenizer.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char default_vars[] = "{\"messages\": [{\"role\": \"system\", \"content\": \"Be "
                                   "brief.\"}, {\"role\": \"user\", \"content\": "
                                   "\" Hi \\u00e9 \"}, {\"role\": \"assistant\", \"content\": "
                                   "\"<think>x</think>ok\", \"tool_calls\": "
                                   "[{\"type\": \"function\", \"function\": {\"name\": \"f\", "
                                   "\"arguments\": {\"a\": [1, 2.5, null]}}}]}, "
                                   "{\"role\": \"tool\", \"content\": \"{}\"}], \"tools\": "
                                   "[{\"type\": \"function\", \"function\": "
                                   "{\"name\": \"f\", \"parameters\": {}}}], "
                                   "\"add_generation_prompt\": true, \"bos_token\": \"<s>\", "
                                   "\"eos_token\": \"</s>\", \"enable_thinking\": false}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 16)) return 0;
    const uint8_t *nul = memchr(data, 0, size);
    size_t src_n = nul ? (size_t)(nul - data) : size;
    vkpt_chat_template *tpl;
    if (vkpt_chat_template_create((const char *)data, src_n, &tpl)) return 0;
    cJSON *vars = NULL;
    if (nul) vars = cJSON_ParseWithLength((const char *)nul + 1, size - src_n - 1);
    if (!vars) vars = cJSON_Parse(default_vars);
    char *out;
    size_t n;
    if (!vkpt_chat_template_render(tpl, vars, &out, &n)) {
        if (strlen(out) > n) abort();
        vkpt_free(out);
    }
    cJSON_Delete(vars);
    vkpt_chat_template_destroy(tpl);
    return 0;
}
