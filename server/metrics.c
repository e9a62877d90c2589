/* Prometheus text exposition. Counters and histograms live in the server
 * (loop thread); gauges come from vkpt_engine_get_stats and
 * vkpt_device_mem_stats at scrape time, so a scrape never waits on a step. */
#include "metrics.h"

#include "endpoints.h"
#include "router.h"
#include "server_int.h"

#include <stdio.h>
#include <string.h>

const double srv_ttft_buckets[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
                                   0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
const uint32_t srv_n_ttft_buckets = sizeof srv_ttft_buckets / sizeof srv_ttft_buckets[0];
const double srv_tpot_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                   0.3,   0.4,    0.5,   0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0};
const uint32_t srv_n_tpot_buckets = sizeof srv_tpot_buckets / sizeof srv_tpot_buckets[0];
const double srv_e2e_buckets[] = {0.1,  0.3,  0.5,  0.8,  1.0,  1.5,   2.0,   2.5,   5.0,  10.0,
                                  15.0, 20.0, 30.0, 40.0, 60.0, 120.0, 240.0, 480.0, 960.0};
const uint32_t srv_n_e2e_buckets = sizeof srv_e2e_buckets / sizeof srv_e2e_buckets[0];

void srv_hist_init(srv_hist *h, const double *le, uint32_t n)
{
    memset(h, 0, sizeof *h);
    h->le = le;
    h->n = n < SRV_HIST_MAX_BUCKETS ? n : SRV_HIST_MAX_BUCKETS - 1;
}

void srv_hist_observe(srv_hist *h, double v)
{
    uint32_t i = 0;
    while (i < h->n && v > h->le[i]) i++;
    h->bucket[i]++;
    h->count++;
    h->sum += v;
}

void srv_prom_label(srv_buf *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            srv_buf_puts(out, "\\\\");
        else if (*v == '"')
            srv_buf_puts(out, "\\\"");
        else if (*v == '\n')
            srv_buf_puts(out, "\\n");
        else
            srv_buf_append(out, v, 1);
    }
}

void srv_hist_write(srv_buf *out, const char *name, const char *labels, const srv_hist *h)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        cum += h->bucket[i];
        srv_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->le[i],
                       (unsigned long long)cum);
    }
    cum += h->bucket[h->n];
    srv_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                   (unsigned long long)cum);
    srv_buf_printf(out, "%s_sum{%s} %.9g\n", name, labels, h->sum);
    srv_buf_printf(out, "%s_count{%s} %llu\n", name, labels, (unsigned long long)h->count);
}

void srv_model_metrics_init(srv_model_metrics *m)
{
    memset(m, 0, sizeof *m);
    srv_hist_init(&m->ttft, srv_ttft_buckets, srv_n_ttft_buckets);
    srv_hist_init(&m->tpot, srv_tpot_buckets, srv_n_tpot_buckets);
    srv_hist_init(&m->e2e, srv_e2e_buckets, srv_n_e2e_buckets);
}

void srv_http_metrics_add(srv_http_metrics *m, int route, int status)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->c[i].route == route && m->c[i].status == status) {
            m->c[i].n++;
            return;
        }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        srv_http_count *c = vkpt_realloc(m->c, cap * sizeof *c);
        if (!c) return; /* the count is lost, not the request */
        m->c = c;
        m->cap = cap;
    }
    m->c[m->n++] = (srv_http_count){.route = route, .status = status, .n = 1};
}

void srv_http_metrics_free(srv_http_metrics *m)
{
    vkpt_free(m->c);
    memset(m, 0, sizeof *m);
}

static void help(srv_buf *o, const char *name, const char *type, const char *text)
{
    srv_buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

typedef struct model_snap {
    const srv_model *m;
    vkpt_engine_stats st;
    char label[256]; /* model="..." */
} model_snap;

/* One metric line per model: `name{model="..."} value`. */
#define PER_MODEL(o, snaps, n, name, type, text, fmt, expr)               \
    do {                                                                  \
        help(o, name, type, text);                                        \
        for (size_t i_ = 0; i_ < (n); i_++) {                             \
            const model_snap *s_ = &(snaps)[i_];                          \
            (void)s_;                                                     \
            srv_buf_printf(o, "%s{%s} " fmt "\n", name, s_->label, expr); \
        }                                                                 \
    } while (0)

void srv_metrics_render(vkpt_server *s, srv_buf *o)
{
    help(o, "vkpt_http_requests_total", "counter", "HTTP requests answered, by route and status.");
    for (size_t i = 0; i < s->http_metrics.n; i++) {
        const srv_http_count *c = &s->http_metrics.c[i];
        const char *route = c->route >= 0 ? srv_routes[c->route].pattern : "other";
        srv_buf_puts(o, "vkpt_http_requests_total{route=\"");
        srv_prom_label(o, route);
        srv_buf_printf(o, "\",status=\"%d\"} %llu\n", c->status, (unsigned long long)c->n);
    }
    help(o, "vkpt_http_connections", "gauge", "Open HTTP connections.");
    srv_buf_printf(o, "vkpt_http_connections %zu\n", s->n_conns);
    help(o, "vkpt_requests_in_flight", "gauge",
         "Generation requests accepted by the server and not yet finished.");
    srv_buf_printf(o, "vkpt_requests_in_flight %zu\n", s->n_gens);
    help(o, "vkpt_server_draining", "gauge", "1 while the server is shutting down.");
    srv_buf_printf(o, "vkpt_server_draining %d\n", s->state == SRV_DRAINING);

    model_snap snaps[16];
    size_t n = s->n_models < 16 ? s->n_models : 16;
    for (size_t i = 0; i < n; i++) {
        snaps[i].m = &s->models[i];
        memset(&snaps[i].st, 0, sizeof snaps[i].st);
        if (s->models[i].engine) {
            vkpt_engine_get_stats(s->models[i].engine, &snaps[i].st);
        } else { /* an embedding model: its queue and device state */
            vkpt_embedder_stats es;
            vkpt_embedder_get_stats(s->models[i].embedder, &es);
            snaps[i].st.queued = es.queued;
            snaps[i].st.steps = es.steps;
            snaps[i].st.device_lost = es.device_lost;
        }
        srv_buf lb = {0};
        srv_buf_puts(&lb, "model=\"");
        srv_prom_label(&lb, s->models[i].id);
        srv_buf_puts(&lb, "\"");
        snprintf(snaps[i].label, sizeof snaps[i].label, "%s", lb.p ? lb.p : "");
        srv_buf_free(&lb);
    }
#define LLU(x) (unsigned long long)(x)
    PER_MODEL(o, snaps, n, "vkpt_prompt_tokens_total", "counter",
              "Prompt tokens of finished requests (rendered template included).", "%llu",
              LLU(s_->m->m.prompt_tokens));
    PER_MODEL(o, snaps, n, "vkpt_prompt_tokens_cached_total", "counter",
              "Prompt tokens served from the prefix cache.", "%llu", LLU(s_->m->m.cached_tokens));
    PER_MODEL(o, snaps, n, "vkpt_generation_tokens_total", "counter",
              "Generated tokens of finished requests.", "%llu", LLU(s_->m->m.completion_tokens));
    help(o, "vkpt_requests_finished_total", "counter",
         "Finished generation requests by reason (stop, length, abort, error).");
    for (size_t i = 0; i < n; i++) {
        const srv_model_metrics *mm = &snaps[i].m->m;
        srv_buf_printf(o, "vkpt_requests_finished_total{%s,reason=\"stop\"} %llu\n", snaps[i].label,
                       LLU(mm->finished_stop));
        srv_buf_printf(o, "vkpt_requests_finished_total{%s,reason=\"length\"} %llu\n",
                       snaps[i].label, LLU(mm->finished_length));
        srv_buf_printf(o, "vkpt_requests_finished_total{%s,reason=\"abort\"} %llu\n",
                       snaps[i].label, LLU(mm->finished_abort));
        srv_buf_printf(o, "vkpt_requests_finished_total{%s,reason=\"error\"} %llu\n",
                       snaps[i].label, LLU(mm->finished_error));
    }
    help(o, "vkpt_time_to_first_token_seconds", "histogram",
         "Time from a request's arrival to its first generated token.");
    for (size_t i = 0; i < n; i++)
        srv_hist_write(o, "vkpt_time_to_first_token_seconds", snaps[i].label, &snaps[i].m->m.ttft);
    help(o, "vkpt_time_per_output_token_seconds", "histogram",
         "Time between consecutive tokens of a choice.");
    for (size_t i = 0; i < n; i++)
        srv_hist_write(o, "vkpt_time_per_output_token_seconds", snaps[i].label,
                       &snaps[i].m->m.tpot);
    help(o, "vkpt_e2e_request_latency_seconds", "histogram",
         "Time from a request's arrival to its last token.");
    for (size_t i = 0; i < n; i++)
        srv_hist_write(o, "vkpt_e2e_request_latency_seconds", snaps[i].label, &snaps[i].m->m.e2e);

    PER_MODEL(o, snaps, n, "vkpt_queue_depth", "gauge",
              "Requests waiting in the engine for their first step.", "%u", s_->st.queued);
    PER_MODEL(o, snaps, n, "vkpt_running_sequences", "gauge",
              "Requests holding KV-cache blocks in the engine.", "%u", s_->st.running);
    PER_MODEL(o, snaps, n, "vkpt_kv_blocks_total", "gauge", "KV-cache blocks.", "%u",
              s_->st.kv_blocks_total);
    PER_MODEL(o, snaps, n, "vkpt_kv_blocks_used", "gauge", "KV-cache blocks in use.", "%u",
              s_->st.kv_blocks_used);
    PER_MODEL(o, snaps, n, "vkpt_kv_blocks_free", "gauge", "KV-cache blocks free.", "%u",
              s_->st.kv_blocks_total - s_->st.kv_blocks_used);
    PER_MODEL(o, snaps, n, "vkpt_prefix_cache_hits_total", "counter",
              "KV blocks reused from the prefix cache.", "%llu", LLU(s_->st.prefix_hits));
    PER_MODEL(o, snaps, n, "vkpt_prefix_cache_queries_total", "counter",
              "KV blocks looked up in the prefix cache.", "%llu", LLU(s_->st.prefix_lookups));
    PER_MODEL(o, snaps, n, "vkpt_engine_steps_total", "counter", "Scheduler steps.", "%llu",
              LLU(s_->st.steps));
    PER_MODEL(o, snaps, n, "vkpt_preemptions_total", "counter",
              "Sequences preempted because the KV cache was full.", "%llu",
              LLU(s_->st.preemptions));
    PER_MODEL(o, snaps, n, "vkpt_engine_requests_canceled_total", "counter",
              "Requests the engine canceled (client gone, stop string, shutdown).", "%llu",
              LLU(s_->st.requests_canceled));
    PER_MODEL(o, snaps, n, "vkpt_device_lost", "gauge", "1 when the model's GPU was lost.", "%d",
              s_->st.device_lost ? 1 : 0);

    /* device memory, once per device */
    struct {
        vkpt_device *dev;
        vkpt_mem_stats ms;
        char label[320];
    } devs[16];
    size_t n_devs = 0;
    for (size_t i = 0; i < n; i++) {
        vkpt_device *dev = vkpt_model_device(snaps[i].m->model);
        bool dup = false;
        for (size_t k = 0; k < n_devs; k++) dup |= devs[k].dev == dev;
        if (!dev || dup || n_devs == 16) continue;
        devs[n_devs].dev = dev;
        vkpt_device_mem_stats(dev, &devs[n_devs].ms);
        srv_buf dl = {0};
        srv_buf_printf(&dl, "device=\"%zu\",device_name=\"", n_devs);
        srv_prom_label(&dl, vkpt_device_get_caps(dev)->name);
        srv_buf_puts(&dl, "\"");
        snprintf(devs[n_devs].label, sizeof devs[n_devs].label, "%s", dl.p ? dl.p : "");
        srv_buf_free(&dl);
        n_devs++;
    }
    help(o, "vkpt_device_memory_used_bytes", "gauge", "Device memory in use, by purpose.");
    for (size_t d = 0; d < n_devs; d++)
        for (int p = 0; p < VKPT_MEM_PURPOSE_COUNT; p++)
            srv_buf_printf(o, "vkpt_device_memory_used_bytes{%s,purpose=\"%s\"} %llu\n",
                           devs[d].label, vkpt_mem_purpose_name(p), LLU(devs[d].ms.used[p]));
    help(o, "vkpt_device_memory_reserved_bytes", "gauge",
         "Device memory allocated from the driver.");
    for (size_t d = 0; d < n_devs; d++)
        srv_buf_printf(o, "vkpt_device_memory_reserved_bytes{%s} %llu\n", devs[d].label,
                       LLU(devs[d].ms.reserved));
    help(o, "vkpt_device_memory_budget_bytes", "gauge", "Device-local memory budget.");
    for (size_t d = 0; d < n_devs; d++)
        srv_buf_printf(o, "vkpt_device_memory_budget_bytes{%s} %llu\n", devs[d].label,
                       LLU(devs[d].ms.budget));
#undef LLU
    srv_ep_metrics(s, o, NULL);
}
