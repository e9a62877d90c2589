/* Chat templates: the Jinja subset with Python Jinja2's semantics (what
 * transformers renders with), whitespace control, errors with positions,
 * allocation failures and parallel renders. (Byte-identical rendering of
 * the real templates against Hugging Face's @huggingface/jinja is
 * tests/node/template_compare.mjs.) */
#define _GNU_SOURCE
#include "vk_fixture.h"

#include "vkpt/tokenizer.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *render_str(const char *src, const char *vars_json, int *err_out)
{
    vkpt_chat_template *tpl;
    int err = vkpt_chat_template_create(src, strlen(src), &tpl);
    if (err) {
        if (err_out) {
            *err_out = err;
            return NULL;
        }
        fail_msg("parse '%s': %s", src, vkpt_errmsg(err));
    }
    cJSON *vars = cJSON_Parse(vars_json ? vars_json : "{}");
    assert_non_null(vars);
    char *out = NULL;
    size_t n;
    err = vkpt_chat_template_render(tpl, vars, &out, &n);
    cJSON_Delete(vars);
    vkpt_chat_template_destroy(tpl);
    if (err_out)
        *err_out = err;
    else if (err)
        fail_msg("render '%s': %s", src, vkpt_errmsg(err));
    if (!err) assert_int_equal(strlen(out), n);
    return out;
}

static void check(const char *src, const char *vars, const char *want)
{
    char *got = render_str(src, vars, NULL);
    if (strcmp(got, want)) {
        char msg[2048];
        snprintf(msg, sizeof msg, "template:\n%s\ngot:  [%s]\nwant: [%s]", src, got, want);
        vkpt_free(got);
        fail_msg("%s", msg);
    }
    vkpt_free(got);
}

static void check_error(const char *src, const char *vars, int code, const char *needle)
{
    int err = 0;
    char *got = render_str(src, vars, &err);
    vkpt_free(got);
    if (err != code)
        fail_msg("'%s': error %s, want %s", src, vkpt_err_name(err), vkpt_err_name(code));
    if (!strstr(vkpt_errmsg(err), needle))
        fail_msg("'%s': message '%s' lacks '%s'", src, vkpt_errmsg(err), needle);
}

static void template_whitespace_control_matches_transformers(void **state)
{
    (void)state;
    /* trim_blocks: the newline after a block tag goes; one trailing newline of
     * the source goes */
    check("{% if true %}\n  yes\n{% endif %}\n", NULL, "  yes\n");
    /* lstrip_blocks: spaces before a block tag at the start of a line go ... */
    check("  {% if true %}x{% endif %}", NULL, "x");
    check("line\n\t  {% if true %}x\n    {% endif %}end", NULL, "line\nx\nend");
    /* ... but not when text precedes the tag on its line, nor before {{ */
    check("x  {% if true %}y{% endif %}", NULL, "x  y");
    check("  {{ 'v' }}", NULL, "  v");
    /* "-" strips all whitespace on its side, newlines included */
    check("a  \n {%- if true %} b {%- endif %}  c", NULL, "a b  c");
    check("[ \n {{- 'x' -}} \n ]", NULL, "[x]");
    check("a{# comment #}b", NULL, "ab");
    check("a {#- comment -#} b", NULL, "ab");
    check("{% if true %}  \n{% endif %}", NULL, "  \n");
    check("{%+ if true %}x{% endif %}", NULL, "x");
    check("{% generation %}kept{% endgeneration %}", NULL, "kept");
    check("no trailing newline kept\n\n", NULL, "no trailing newline kept\n");
}

static void template_values_print_like_python(void **state)
{
    (void)state;
    check("{{ none }}|{{ true }}|{{ False }}|{{ 1 }}|{{ 1.0 }}|{{ 0.1 }}|{{ 1e20 }}|{{ 2.5e-7 "
          "}}|{{ -0.0 }}",
          NULL, "None|True|False|1|1.0|0.1|1e+20|2.5e-07|-0.0");
    check("{{ [1, 'a', none, true] }}|{{ {'k': 'v', 'n': 1} }}|{{ (1,) }}|{{ (1, 2) }}|{{ x }}|{{ "
          "[\"it's\"] }}",
          NULL, "[1, 'a', None, True]|{'k': 'v', 'n': 1}|(1,)|(1, 2)||[\"it's\"]");
    check("{{ 'a\\tb\\\\c\\x41\\u00e9' }}", NULL, "a\tb\\cA\xC3\xA9");
    check("{{ m.content }}{{ m.missing }}{{ m['content'] }}{{ m.get('missing', 'dflt') }}",
          "{\"m\": {\"content\": \"hi\"}}", "hihidflt");
    check("{{ n }} {{ f }} {{ b }} {{ s }} {{ l|length }}",
          "{\"n\": 3, \"f\": 2.5, \"b\": false, \"s\": \"x\", \"l\": [1,2]}", "3 2.5 False x 2");
}

static void template_string_methods_follow_python(void **state)
{
    (void)state;
    check("{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\\n\\nhi\\n'.lstrip('\\n') }}|{{ "
          "'hi..'.rstrip('.') }}",
          NULL, "a b|a|hi\n|hi");
    check("{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ "
          "'a/b/c'.rsplit('/', 1) }}",
          NULL, "['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']|['a/b', 'c']");
    check("{{ 'Hello'.upper() }}|{{ 'hello wORLD'.title() }}|{{ 'hELLO'.capitalize() }}|{{ "
          "'ABC'.lower() }}",
          NULL, "HELLO|Hello World|Hello|abc");
    check("{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'a-b-c'.replace('-', "
          "'+', 1) }}",
          NULL, "True|True|a+b-c");
    check("{{ 'abc'[1:] }}|{{ 'abc'[::-1] }}|{{ 'h\xC3\xA9llo'[1] }}|{{ 'h\xC3\xA9llo'|length "
          "}}|{{ 'abc'[-1] }}",
          NULL, "bc|cba|\xC3\xA9|5|c");
    check("{{ ', '.join(['x', 'y']) }}|{{ 'hello'.find('l') }}|{{ 'hello'.rfind('l') }}|{{ "
          "'hello'.count('l') }}",
          NULL, "x, y|2|3|2");
    check("{{ '12'.isdigit() }}|{{ 'a1'.isalpha() }}|{{ ' '.isspace() }}", NULL, "True|False|True");
    /* the splits real templates do (Qwen3's reasoning) */
    check("{% set c = '<think>\\nr\\n</think>\\n\\nanswer' %}{{ "
          "c.split('</think>')[-1].lstrip('\\n') }}|"
          "{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}",
          NULL, "answer|r");
}

static void template_filters_follow_jinja2(void **state)
{
    (void)state;
    const char *users = "{\"users\": [{\"name\": \"ann\", \"admin\": true, \"n\": 2}, "
                        "{\"name\": \"bob\", \"admin\": false, \"n\": 1}]}";
    check("{{ [3, 1, 2]|sort }}|{{ ['b', 'A', 'c']|sort }}|{{ [3, 1, 2]|sort(reverse=true) }}|"
          "{{ users|sort(attribute='n')|map(attribute='name')|join(',') }}",
          users, "[1, 2, 3]|['A', 'b', 'c']|[3, 2, 1]|bob,ann");
    check("{{ [1, 2, 3]|join(', ') }}|{{ 'abc'|length }}|{{ [1, 2]|count }}|{{ x|default('d') }}|"
          "{{ ''|default('d', true) }}|{{ ''|d('e') }}|{{ '  t  '|trim }}|{{ 'Ab'|lower }}|{{ "
          "'ab'|upper }}",
          NULL, "1, 2, 3|3|2|d|d||t|ab|AB");
    check("{{ [1, 2, 3]|first }}|{{ [1, 2, 3]|last }}|{{ [1, 2, 2, 3]|unique|list }}|{{ [1, 2, "
          "3]|reverse|list }}|"
          "{{ 'ab'|reverse }}|{{ 'ab'|list }}",
          NULL, "1|3|[1, 2, 3]|[3, 2, 1]|ba|['a', 'b']");
    check("{{ '3'|int + 1 }}|{{ 'x'|int }}|{{ '2.5'|float }}|{{ 2.5|round }}|{{ 3.5|round }}|{{ "
          "2.567|round(2) }}|"
          "{{ [1, 2, 3]|sum }}|{{ -3|abs }}|{{ [4, 9, 1]|max }}|{{ [4, 9, 1]|min }}",
          NULL, "4|0|2.5|2.0|4.0|2.57|6|3|9|1");
    check("{{ {'a': 1, 'b': 2}|items|list }}|{{ users|map(attribute='name')|join(',') }}|"
          "{{ users|selectattr('admin')|map(attribute='name')|list }}|{{ "
          "users|rejectattr('admin')|list|length }}|"
          "{{ users|selectattr('name', 'equalto', 'bob')|map(attribute='n')|first }}|"
          "{{ [1, 2, 3, 4]|select('even')|list }}|{{ [1, 2, 3, 4]|reject('odd')|list }}|{{ ['a', "
          "'b']|map('upper')|list }}",
          users, "[('a', 1), ('b', 2)]|ann,bob|['ann']|1|1|[2, 4]|[2, 4]|['A', 'B']");
    check(
        "{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 5|string }}|{{ '<&>'|e }}|"
        "{{ 'a b  c'|wordcount }}|{{ 'hello world'|title }}|{{ 'x-y'|replace('-', '=') }}",
        NULL, "a\n  b\n\n  c|  a\n  b|5|&lt;&amp;&gt;|3|Hello World|x=y");
    check("{{ {'b': [1, 'x', none, true], 'a': 1.5}|tojson }}", NULL,
          "{\"b\": [1, \"x\", null, true], \"a\": 1.5}");
    check("{{ {'b': [1, {}], 'a': []}|tojson(indent=2) }}", NULL,
          "{\n  \"b\": [\n    1,\n    {}\n  ],\n  \"a\": []\n}");
    check("{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}|{{ '\xC3\xA9\"\\n\\u0001'|tojson }}|"
          "{{ '\xC3\xA9'|tojson(ensure_ascii=true) }}|{{ [1, 2]|tojson(separators=(',', ':')) }}",
          NULL, "{\"a\": 2, \"b\": 1}|\"\xC3\xA9\\\"\\n\\u0001\"|\"\\u00e9\"|[1,2]");
    check("{{ tools|tojson }}",
          "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"x\": 1e-3}}]}",
          "[{\"type\": \"function\", \"function\": {\"name\": \"f\", \"x\": 0.001}}]");
}

static void template_tests_and_operators_follow_python(void **state)
{
    (void)state;
    check("{{ x is defined }}|{{ none is none }}|{{ 'a' is string }}|{{ {} is mapping }}|{{ 3 is "
          "odd }}|"
          "{{ 4 is divisibleby 2 }}|{{ 4 is divisibleby(3) }}|{{ x is not defined }}|{{ [] is "
          "iterable }}|"
          "{{ 1 is number }}|{{ true is boolean }}|{{ false is false }}|{{ 'ab' is lower }}|{{ 2 "
          "is eq 2 }}",
          NULL, "False|True|True|True|True|True|False|True|True|True|True|True|True|True");
    check("{{ 'a' in 'cat' }}|{{ 2 in [1, 2] }}|{{ 'k' in {'k': 1} }}|{{ 1 not in [1] }}|{{ 'x' in "
          "none_list }}",
          "{}", "True|True|True|False|False");
    check("{{ 'a' ~ 1 ~ none ~ true }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 2 ** "
          "10 }}|{{ 7 / 2 }}|"
          "{{ 1 == 1.0 }}|{{ 'a' < 'b' }}|{{ [1, 2] + [3] }}|{{ 'ab' * 2 }}|{{ 1 if false else 2 "
          "}}|{{ 'x' if false }}|"
          "{{ not 0 }}|{{ 0 or 'y' }}|{{ 1 and 2 }}|{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 10 - 2 - "
          "3 }}|{{ 'a' + 'b' ~ 'c' }}",
          NULL, "a1NoneTrue|3|-4|1|2|1024|3.5|True|True|[1, 2, 3]|abab|2||True|y|2|7|9|5|abc");
    check("{{ [1, 2, 3, 4][1:3] }}|{{ [1, 2, 3, 4][-2:] }}|{{ [1, 2, 3, 4][::2] }}|{{ [1, 2, 3, "
          "4][::-1][0] }}|"
          "{{ messages[1:]|length }}|{{ messages[-1].role }}",
          "{\"messages\": [{\"role\": \"system\"}, {\"role\": \"user\"}]}",
          "[2, 3]|[3, 4]|[1, 3]|4|1|user");
    check("{{ a == b }}|{{ a != c }}|{{ none == none }}|{{ x == none }}",
          "{\"a\": [1, {\"k\": 2}], \"b\": [1, {\"k\": 2}], "
          "\"c\": [1]}",
          "True|True|True|False");
}

static void template_loops_and_scopes_follow_jinja2(void **state)
{
    (void)state;
    check("{% for x in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ "
          "loop.first }}"
          "{{ loop.last }}{{ loop.length }}{{ loop.previtem }}{{ x }};{% endfor %}",
          NULL, "103TrueFalse3a;212FalseFalse3ab;321FalseTrue3bc;");
    check("{% for x in [] %}x{% else %}empty{% endfor %}", NULL, "empty");
    check("{% for x in range(10) if x is odd %}{{ x }}{% if loop.last %}!{% endif %}{% endfor %}",
          NULL, "13579!");
    check("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break "
          "%}{% endif %}"
          "{{ x }}{% endfor %}",
          NULL, "0134");
    check("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }},{% endfor %}|{% for k in "
          "{'x': 1} %}{{ k }}{% endfor %}",
          NULL, "a=1,b=2,|x");
    check("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}", NULL, "21");
    check("{% set ns = namespace(n=0, s='') %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% "
          "endfor %}{{ ns.n }}",
          NULL, "6");
    check("{% if true %}{% set y = 5 %}{% endif %}{{ y }}", NULL, "5");
    check("{% for i in range(3) %}{{ loop.cycle('a', 'b') }}{% endfor %}", NULL, "aba");
    check("{% for a in [1, 2] %}{% for b in [3, 4] %}{{ loop.index }}{% endfor %}{{ loop.index "
          "}}{% endfor %}",
          NULL, "121122");
    check(
        "{% for m in messages %}{{ m.role[0] }}{% endfor %}{% for c in 'ab' %}{{ c }}{% endfor %}",
        "{\"messages\": [{\"role\": \"user\"}, {\"role\": \"assistant\"}]}", "uaab");
    check("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = [3, 4] %}{% set c, d = t %}{{ c + d }}",
          NULL, "127");
    check("{% set s %}a{{ 1 + 1 }}b{% endset %}{{ s|upper }}", NULL, "A2B");
}

static void template_macros_work_like_jinja2(void **state)
{
    (void)state;
    check("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
          "{{ greet('Ann') }} {{ greet('Bob', '?') }} {{ greet(name='Cy', punct='.') }}",
          NULL, "Hi Ann! Hi Bob? Hi Cy.");
    check("{% set sfx = '~' %}{% macro a(x) %}[{{ x }}{{ sfx }}]{% endmacro %}"
          "{% macro b(y) %}{{ a(y) }}{{ a(y) }}{% endmacro %}{{ b(1) }}",
          NULL, "[1~][1~]");
    check("{%- macro render(v) -%}{%- if v is mapping -%}{{ '{' }}"
          "{%- for k, x in v.items() %}{{ k }}:{{ render(x) }}{% if not loop.last %},{% endif %}{% "
          "endfor -%}"
          "{{ '}' }}{%- else -%}{{ v }}{%- endif -%}{%- endmacro -%}{{ render({'a': 1, 'b': {'c': "
          "2}}) }}",
          NULL, "{a:1,b:{c:2}}");
    check_error("{% macro f(a) %}{% endmacro %}{{ f(1, 2) }}", NULL, VKPT_EINVAL,
                "takes 1 arguments");
}

static void template_runtime_errors_are_clear(void **state)
{
    (void)state;
    check_error("line one\n{{ raise_exception('Conversation roles must alternate') }}", NULL,
                VKPT_EINVAL,
                "line 2, column 4: raise_exception: Conversation roles must alternate");
    check_error("{{ 1 + 'a' }}", NULL, VKPT_EINVAL, "unsupported operand");
    check_error("{{ nosuchfunction() }}", NULL, VKPT_EINVAL, "not callable");
    check_error("{{ 1 // 0 }}", NULL, VKPT_EINVAL, "division by zero");
    check_error("{% set x.y = 1 %}", NULL, VKPT_EINVAL, "non-namespace");
}

static void template_parse_errors_give_line_and_column(void **state)
{
    (void)state;
    check_error("{% for x in y %}\n{{ x }}", NULL, VKPT_EPARSE,
                "line 1, column 4: 'for' block is never closed");
    check_error("text\n  {{ x | nope }}", NULL, VKPT_EPARSE,
                "line 2, column 10: unknown filter 'nope'");
    check_error("{% if x %}{% endfor %}", NULL, VKPT_EPARSE,
                "line 1, column 14: 'endfor' without a matching block");
    check_error("{{ 'unterminated }}", NULL, VKPT_EPARSE, "unterminated string literal");
    check_error("{% frobnicate %}", NULL, VKPT_EPARSE, "unknown or unsupported tag 'frobnicate'");
    check_error("{{ x is nosuchtest }}", NULL, VKPT_EPARSE, "unknown test 'nosuchtest'");
    check_error("{{ x ", NULL, VKPT_EPARSE, "is not closed");
    check_error("{{ (1, 2 }}", NULL, VKPT_EPARSE, "expected ')'");
    check_error("{# never closed", NULL, VKPT_EPARSE, "comment is not closed");
    check_error("\xC3\xA9\xC3\xA9{{ @ }}", NULL, VKPT_EPARSE,
                "line 1, column 6: unexpected character '@'");
}

static void template_tokenizer_applies_hugging_face_defaults(void **state)
{
    (void)state;
    vkpt_tokenizer *t;
    assert_int_equal(vkpt_tokenizer_create_file(VKPT_SOURCE_DIR "/tests/fixtures/hf/llama", &t), 0);
    assert_non_null(vkpt_tokenizer_chat_template(t));
    cJSON *vars = cJSON_Parse("{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], "
                              "\"add_generation_prompt\": true}");
    char *out;
    size_t n;
    assert_int_equal(vkpt_tokenizer_apply_chat_template(t, vars, &out, &n), 0);
    assert_string_equal(out, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                             "<|start_header_id|>assistant<|end_header_id|>\n\n");
    vkpt_free(out);
    cJSON_Delete(vars);
    vkpt_tokenizer_destroy(t);
    /* no template: a clear error */
    assert_int_equal(vkpt_tokenizer_create_file(
                         VKPT_SOURCE_DIR "/tests/fixtures/ggml-vocab/ggml-vocab-gpt-2.gguf", &t),
                     0);
    vars = cJSON_Parse("{\"messages\": []}");
    assert_int_equal(vkpt_tokenizer_apply_chat_template(t, vars, &out, &n), VKPT_ENOTFOUND);
    cJSON_Delete(vars);
    vkpt_tokenizer_destroy(t);
}

static const char qwen_like[] =
    "{%- set ns = namespace(last=-1) %}{%- for m in messages[::-1] %}{%- if m.role == 'user' and "
    "ns.last < 0 %}"
    "{%- set ns.last = (messages|length - 1) - loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}"
    "{%- if m.tool_calls %}{%- for c in m.tool_calls %}\n<tool_call>{{ c.function | tojson "
    "}}</tool_call>"
    "{%- endfor %}{%- endif %}<|im_end|>\n{%- if loop.index0 == ns.last %}<!-- last user -->{% "
    "endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}";
static const char qwen_vars[] =
    "{\"messages\": [{\"role\": \"user\", \"content\": \" What's the weather? \"}, {\"role\": "
    "\"assistant\", "
    "\"content\": \"\", \"tool_calls\": [{\"function\": {\"name\": \"w\", \"arguments\": "
    "{\"city\": \"Paris\"}}}]}, "
    "{\"role\": \"user\", \"content\": \"thanks\"}], \"add_generation_prompt\": true}";
/* trim_blocks eats the newline after "{%- for c ... %}", and "{%-" the one
 * after "<|im_end|>" and "assistant": written that way on purpose */
static const char qwen_want[] =
    "<|im_start|>user\nWhat's the weather?<|im_end|><|im_start|>assistant\n<tool_call>{\"name\": "
    "\"w\", "
    "\"arguments\": {\"city\": \"Paris\"}}</tool_call><|im_end|><|im_start|>user\nthanks<|im_end|>"
    "<!-- last user --><|im_start|>assistant";

static void template_renders_a_tool_calling_template(void **state)
{
    (void)state;
    check(qwen_like, qwen_vars, qwen_want);
}

static int g_fail_at, g_calls;
static void *failing_malloc(size_t n)
{
    return ++g_calls == g_fail_at ? NULL : malloc(n);
}
static void *failing_realloc(void *p, size_t n)
{
    return ++g_calls == g_fail_at ? NULL : realloc(p, n);
}

static void template_allocation_failures_fail_cleanly(void **state)
{
    (void)state;
    cJSON *vars = cJSON_Parse(qwen_vars);
    vkpt_alloc_hooks h = {failing_malloc, failing_realloc, free};
    int failures = 0;
    for (g_fail_at = 1;; g_fail_at++) {
        g_calls = 0;
        vkpt_set_alloc_hooks(&h);
        vkpt_chat_template *tpl = NULL;
        char *out = NULL;
        size_t n;
        int err = vkpt_chat_template_create(qwen_like, sizeof qwen_like - 1, &tpl);
        int err2 = err ? 0 : vkpt_chat_template_render(tpl, vars, &out, &n);
        vkpt_set_alloc_hooks(NULL);
        if (!err && !err2) assert_string_equal(out, qwen_want);
        vkpt_free(out);
        vkpt_chat_template_destroy(tpl);
        if (!err && !err2 && g_calls < g_fail_at) break;
        if (err || err2) {
            if ((err ? err : err2) != VKPT_ENOMEM)
                fail_msg("allocation %d failed: %s", g_fail_at, vkpt_errmsg(err ? err : err2));
            failures++;
        }
    }
    assert_true(failures > 5);
    cJSON_Delete(vars);
}

typedef struct par {
    const vkpt_chat_template *tpl;
    const cJSON *vars;
    int ok;
} par;

static void *render_many(void *arg)
{
    par *p = arg;
    for (int i = 0; i < 200; i++) {
        char *out;
        size_t n;
        if (vkpt_chat_template_render(p->tpl, p->vars, &out, &n)) return NULL;
        p->ok += !strcmp(out, qwen_want);
        vkpt_free(out);
    }
    return NULL;
}

static void template_renders_in_parallel(void **state)
{
    (void)state;
    vkpt_chat_template *tpl;
    assert_int_equal(vkpt_chat_template_create(qwen_like, sizeof qwen_like - 1, &tpl), 0);
    cJSON *vars = cJSON_Parse(qwen_vars);
    pthread_t th[4];
    par p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = (par){tpl, vars, 0};
        pthread_create(&th[i], NULL, render_many, &p[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(p[i].ok, 200);
    }
    cJSON_Delete(vars);
    vkpt_chat_template_destroy(tpl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(template_whitespace_control_matches_transformers),
        cmocka_unit_test(template_values_print_like_python),
        cmocka_unit_test(template_string_methods_follow_python),
        cmocka_unit_test(template_filters_follow_jinja2),
        cmocka_unit_test(template_tests_and_operators_follow_python),
        cmocka_unit_test(template_loops_and_scopes_follow_jinja2),
        cmocka_unit_test(template_macros_work_like_jinja2),
        cmocka_unit_test(template_runtime_errors_are_clear),
        cmocka_unit_test(template_parse_errors_give_line_and_column),
        cmocka_unit_test(template_tokenizer_applies_hugging_face_defaults),
        cmocka_unit_test(template_renders_a_tool_calling_template),
        cmocka_unit_test(template_allocation_failures_fail_cleanly),
        cmocka_unit_test(template_renders_in_parallel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
