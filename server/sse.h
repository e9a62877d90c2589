/* Server-sent events framing (text/event-stream) for streamed answers.
 *
 * An event is "data: PAYLOAD\n\n"; a payload with line breaks becomes one
 * "data:" line per line, which the client joins back with "\n". The OpenAI
 * stream ends with the event "data: [DONE]". Writers of compact JSON (no raw
 * line breaks) may frame in place: srv_sse_open, the JSON, srv_sse_close. */
#ifndef VKPT_SERVER_SSE_H
#define VKPT_SERVER_SSE_H

#include "util.h"

static inline void srv_sse_open(srv_buf *o)
{
    srv_buf_puts(o, "data: ");
}
static inline void srv_sse_close(srv_buf *o)
{
    srv_buf_puts(o, "\n\n");
}
/* One event with any payload (CR, LF and CRLF split lines). */
void srv_sse_event(srv_buf *o, const char *data, size_t n);
/* The end of an OpenAI stream. */
void srv_sse_done(srv_buf *o);

#endif
