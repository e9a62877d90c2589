/* Prometheus metrics: counters and histograms the server updates on the loop
 * thread, and the text exposition (format 0.0.4) rendered at scrape time
 * together with the engines' and devices' gauges. */
#ifndef VKPT_SERVER_METRICS_H
#define VKPT_SERVER_METRICS_H

#include "util.h"

#include <stdint.h>

#define SRV_HIST_MAX_BUCKETS 24

typedef struct srv_hist {
    const double *le; /* upper bounds, ascending; +Inf implied */
    uint32_t n;
    uint64_t bucket[SRV_HIST_MAX_BUCKETS]; /* non-cumulative counts; [n] is +Inf */
    uint64_t count;
    double sum;
} srv_hist;

void srv_hist_init(srv_hist *h, const double *le, uint32_t n);
void srv_hist_observe(srv_hist *h, double v);
/* Append "name_bucket{labels,le=..} N" ... "name_sum" "name_count" lines.
 * `labels` is "" or `key="value"` pairs without braces. */
void srv_hist_write(srv_buf *out, const char *name, const char *labels, const srv_hist *h);

/* Bucket bounds in seconds for time to first token and per-token latency. */
extern const double srv_ttft_buckets[];
extern const uint32_t srv_n_ttft_buckets;
extern const double srv_tpot_buckets[];
extern const uint32_t srv_n_tpot_buckets;
extern const double srv_e2e_buckets[];
extern const uint32_t srv_n_e2e_buckets;

/* Per model (engine), loop thread only. */
typedef struct srv_model_metrics {
    uint64_t prompt_tokens, completion_tokens, cached_tokens;
    uint64_t finished_stop, finished_length, finished_abort, finished_error;
    srv_hist ttft, tpot, e2e;
} srv_model_metrics;
void srv_model_metrics_init(srv_model_metrics *m);

/* HTTP requests by route and status. */
typedef struct srv_http_count {
    int route; /* -1: no route matched */
    int status;
    uint64_t n;
} srv_http_count;

typedef struct srv_http_metrics {
    srv_http_count *c;
    size_t n, cap;
} srv_http_metrics;
void srv_http_metrics_add(srv_http_metrics *m, int route, int status);
void srv_http_metrics_free(srv_http_metrics *m);

/* Escape a label value ("\\", "\"", "\n"). */
void srv_prom_label(srv_buf *out, const char *v);

typedef struct vkpt_server vkpt_server;
/* The whole exposition for GET /metrics. */
void srv_metrics_render(vkpt_server *s, srv_buf *out);

#endif
