/* Provisioning arithmetic: chunk rounding and band checks, the token bucket
 * behind 429s above max, and the autoscaler's per-entity decision. No
 * threads, no clock of its own: callers pass the time. See
 * include/vkpt/provision.h for the contracts. */
#include "vkpt/provision.h"

#include <math.h>
#include <stdio.h>

uint64_t vkpt_chunk_round(double tps)
{
    if (!(tps >= 1.0)) return 1;
    double mag = pow(10.0, floor(log10(tps)) - 1.0); /* two significant figures */
    if (mag < 1.0) mag = 1.0;
    uint64_t r = (uint64_t)(floor(tps / mag) * mag);
    return r ? r : 1;
}

/* "a, 2a, 3a, ..." (the first few multiples) */
static void multiples(uint64_t chunk, bool zero, char *out, size_t cap)
{
    snprintf(out, cap, "%s%llu, %llu, %llu, ...", zero ? "0, " : "", (unsigned long long)chunk,
             (unsigned long long)(2 * chunk), (unsigned long long)(3 * chunk));
}

int vkpt_provision_check(uint64_t chunk, int64_t min_tps, int64_t max_tps, bool scale_to_zero,
                         char *msg, size_t cap)
{
    char valid[96];
    if (!chunk) {
        snprintf(msg, cap, "the model's throughput chunk size is unknown");
        return VKPT_EINVAL;
    }
    int64_t c = (int64_t)chunk;
    if (min_tps < 0 || min_tps % c) {
        multiples(chunk, scale_to_zero, valid, sizeof valid);
        snprintf(msg, cap,
                 "min_provisioned_throughput %lld is not a multiple of the throughput chunk size "
                 "%lld tokens/s; valid values: %s%s",
                 (long long)min_tps, (long long)c, valid,
                 scale_to_zero ? "" : " (0 needs scale_to_zero_enabled)");
        return VKPT_EINVAL;
    }
    if (min_tps == 0 && !scale_to_zero) {
        multiples(chunk, false, valid, sizeof valid);
        snprintf(msg, cap,
                 "min_provisioned_throughput 0 needs scale_to_zero_enabled: true; otherwise valid "
                 "values are %s",
                 valid);
        return VKPT_EINVAL;
    }
    if (max_tps <= 0 || max_tps % c) {
        multiples(chunk, false, valid, sizeof valid);
        snprintf(msg, cap,
                 "max_provisioned_throughput %lld is not a positive multiple of the throughput "
                 "chunk size %lld tokens/s; valid values: %s",
                 (long long)max_tps, (long long)c, valid);
        return VKPT_EINVAL;
    }
    if (min_tps > max_tps) {
        snprintf(msg, cap,
                 "min_provisioned_throughput %lld is above max_provisioned_throughput %lld",
                 (long long)min_tps, (long long)max_tps);
        return VKPT_EINVAL;
    }
    return 0;
}

/* ---- token bucket ------------------------------------------------------------------------ */

static void refill(vkpt_bucket *b, uint64_t now)
{
    if (now > b->t_ns) {
        b->level += b->rate * (double)(now - b->t_ns) / 1e9;
        if (b->level > b->burst) b->level = b->burst;
        b->t_ns = now;
    }
}

void vkpt_bucket_init(vkpt_bucket *b, double rate, double burst_s, uint64_t now)
{
    b->rate = rate > 0 ? rate : 0;
    b->burst = b->rate * (burst_s > 0 ? burst_s : 1.0);
    b->level = b->burst;
    b->t_ns = now;
}

void vkpt_bucket_set_rate(vkpt_bucket *b, double rate, double burst_s, uint64_t now)
{
    refill(b, now);
    b->rate = rate > 0 ? rate : 0;
    b->burst = b->rate * (burst_s > 0 ? burst_s : 1.0);
    if (b->level > b->burst) b->level = b->burst;
}

bool vkpt_bucket_take(vkpt_bucket *b, double tokens, uint64_t now, double *retry_after_s)
{
    refill(b, now);
    if (b->level > 0) {
        b->level -= tokens;
        return true;
    }
    double wait = b->rate > 0 ? (1e-9 - b->level) / b->rate : 3600;
    if (retry_after_s) *retry_after_s = wait > 0.001 ? wait : 0.001;
    return false;
}

void vkpt_bucket_refund(vkpt_bucket *b, double tokens, uint64_t now)
{
    refill(b, now);
    b->level += tokens;
    if (b->level > b->burst) b->level = b->burst;
}

double vkpt_bucket_level(vkpt_bucket *b, uint64_t now)
{
    refill(b, now);
    return b->level;
}

/* ---- autoscaling ------------------------------------------------------------------------------ */

void vkpt_autoscale_decide(const vkpt_scale_in *in, vkpt_scale_out *out)
{
    uint32_t lo = in->min_replicas, hi = in->max_replicas > lo ? in->max_replicas : lo;
    uint32_t n = in->replicas;
    double chunk = in->chunk_tps > 0 ? in->chunk_tps : 1;
    double need_d = ceil(in->demand_tps / chunk - 1e-9);
    uint32_t need = need_d < 0 ? 0 : need_d > hi ? hi : (uint32_t)need_d;
    out->target = n;
    out->reason = "steady";
    if (n < lo) {
        out->target = lo;
        out->reason = "min";
        return;
    }
    if (n > hi) {
        out->target = hi;
        out->reason = "max";
        return;
    }
    if (n == 0) {
        /* only a request that waits brings a replica back (demand decays slowly) */
        if (in->waiting > 0) {
            out->target = need > 1 ? need : 1;
            out->reason = "cold_start";
        }
        return;
    }
    if (need > n) {
        out->target = need;
        out->reason = "demand";
        return;
    }
    if (in->saturated > 0 && in->saturated >= n && n < hi) {
        out->target = n + 1;
        out->reason = "saturated";
        return;
    }
    if (in->scale_to_zero && lo == 0 && in->idle_s >= in->scale_to_zero_delay_s) {
        out->target = 0;
        out->reason = "idle";
        return;
    }
    uint32_t floor_n = lo > 1 ? lo : 1;
    if (n > floor_n && need < n && in->below_s >= in->scale_down_delay_s) {
        out->target = n - 1;
        out->reason = "low_demand";
    }
}
