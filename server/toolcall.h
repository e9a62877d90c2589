/* Tool calls in generated text: finding them while streaming and parsing
 * them into OpenAI's tool_calls.
 *
 * Models write tool calls as text in one of two shapes (what their chat
 * templates teach them):
 *   TAGS  <tool_call>{"name": ..., "arguments": {...}}</tool_call>, anywhere
 *         in the answer, one block per call (Qwen 2.5/3, Hermes, and others
 *         whose vocabulary has a <tool_call> token);
 *   JSON  the whole answer is the call: {"name": ..., "parameters"|
 *         "arguments": {...}}, several separated by ";" or new lines, or a
 *         JSON array of them, optionally after <|python_tag|> or
 *         [TOOL_CALLS] (Llama 3.1+, Mistral, and the fallback).
 * A call counts only when its JSON parses and names one of the request's
 * tools; otherwise the text stays content, as the model wrote it. */
#ifndef VKPT_SERVER_TOOLCALL_H
#define VKPT_SERVER_TOOLCALL_H

#include "util.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

enum srv_tool_format { SRV_TOOLS_JSON = 0, SRV_TOOLS_TAGS = 1 };

/* What a streamed answer has shown so far. */
enum { SRV_TF_START = 0, SRV_TF_TEXT, SRV_TF_HELD };

/* Splits streamed text into content that may be sent now and text held
 * back because it is, or may become, a tool call. Zero-initialize, set fmt. */
typedef struct srv_tool_filter {
    int fmt;   /* enum srv_tool_format */
    int state; /* SRV_TF_*: JSON starts undecided while only spaces came */
    srv_buf held;
} srv_tool_filter;

/* Feed generated text; what can be shown as content is appended to `out`. */
void srv_tool_filter_feed(srv_tool_filter *f, const char *p, size_t n, srv_buf *out);
void srv_tool_filter_free(srv_tool_filter *f);

typedef struct srv_tool_call {
    char *name;
    char *arguments; /* a JSON object's text, as OpenAI sends it */
} srv_tool_call;

typedef struct srv_tool_calls {
    srv_tool_call *v;
    size_t n;
} srv_tool_calls;
void srv_tool_calls_free(srv_tool_calls *c);

/* Parse `text` (what the filter held, or a whole answer) as tool calls of
 * the names in `tools` (the request's [{type, function: {name}}]). On
 * success returns 0 with the calls and appends the text outside them (TAGS)
 * to `content`; when the text is not tool calls returns VKPT_ENOTFOUND and
 * leaves both alone; VKPT_ENOMEM. */
int srv_tool_parse(int fmt, const char *text, size_t n, const cJSON *tools, srv_tool_calls *out,
                   srv_buf *content);

#endif
