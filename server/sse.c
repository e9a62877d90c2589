/* Server-sent events framing. */
#include "sse.h"

void srv_sse_event(srv_buf *o, const char *data, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && data[i] != '\n' && data[i] != '\r') continue;
        srv_buf_puts(o, "data: ");
        srv_buf_append(o, data + start, i - start);
        srv_buf_puts(o, "\n");
        if (i < n && data[i] == '\r' && i + 1 < n && data[i + 1] == '\n') i++;
        start = i + 1;
    }
    srv_buf_puts(o, "\n");
}

void srv_sse_done(srv_buf *o)
{
    srv_buf_puts(o, "data: [DONE]\n\n");
}
