/* Host-side sampling over the GPU's candidates, exact by construction: the
 * candidate list is the top of the distribution and lse_temp normalizes over
 * the whole vocabulary, so a draw that lands inside the candidates needs
 * nothing else; a draw (or a top-p / min-p cut) that reaches past them uses
 * the full row.
 *
 * Token counts live in a small open-addressing table, preallocated for the
 * prompt plus 1024 distinct output tokens and grown by doubling after. */
#define _GNU_SOURCE
#include "vkpt/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    int32_t id; /* -1 empty */
    uint32_t count;
    bool in_prompt;
} slot;

struct vkpt_sampler {
    vkpt_sampling s;
    uint32_t n_vocab;
    uint64_t rng[2];
    slot *tab;
    uint32_t cap, used;
    vkpt_logit_edit *bias;
    uint32_t n_bias;
    float *row;      /* full-row fallback buffer, allocated on first need */
    uint32_t *order; /* its sort order */
};

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* xorshift128+: a uniform double in [0, 1) from 53 bits */
static double uniform(vkpt_sampler *s)
{
    uint64_t a = s->rng[0], b = s->rng[1];
    s->rng[0] = b;
    a ^= a << 23;
    s->rng[1] = a ^ b ^ (a >> 17) ^ (b >> 26);
    return (double)((s->rng[1] + b) >> 11) * (1.0 / 9007199254740992.0);
}

static slot *find(vkpt_sampler *s, int32_t id)
{
    uint32_t h = (uint32_t)id * 2654435761u & (s->cap - 1);
    while (s->tab[h].id != -1 && s->tab[h].id != id) h = (h + 1) & (s->cap - 1);
    return &s->tab[h];
}

static int grow(vkpt_sampler *s)
{
    uint32_t oc = s->cap, nc = oc * 2;
    slot *old = s->tab, *nt = vkpt_malloc(nc * sizeof *nt);
    if (!nt) return vkpt_fail(VKPT_ENOMEM, "sampler table");
    for (uint32_t i = 0; i < nc; i++) nt[i].id = -1;
    s->tab = nt;
    s->cap = nc;
    for (uint32_t i = 0; i < oc; i++)
        if (old[i].id != -1) *find(s, old[i].id) = old[i];
    vkpt_free(old);
    return 0;
}

static int note(vkpt_sampler *s, int32_t id, bool prompt)
{
    if ((s->used + 1) * 2 > s->cap) {
        int err = grow(s);
        if (err) return err;
    }
    slot *e = find(s, id);
    if (e->id == -1) {
        e->id = id;
        e->count = 0;
        e->in_prompt = false;
        s->used++;
    }
    if (prompt)
        e->in_prompt = true;
    else
        e->count++;
    return 0;
}

void vkpt_sampler_destroy(vkpt_sampler *s)
{
    if (!s) return;
    vkpt_free(s->tab);
    vkpt_free(s->bias);
    vkpt_free(s->row);
    vkpt_free(s->order);
    vkpt_free(s);
}

int vkpt_sampler_create(const vkpt_sampling *cfg, uint32_t n_vocab, const int32_t *prompt,
                        uint32_t n_prompt, vkpt_sampler **out)
{
    *out = NULL;
    vkpt_sampler *s = vkpt_calloc(1, sizeof *s);
    if (!s) return vkpt_fail(VKPT_ENOMEM, "sampler");
    s->s = *cfg;
    s->n_vocab = n_vocab;
    if (s->s.top_p <= 0 || s->s.top_p > 1) s->s.top_p = 1;
    if (s->s.repetition_penalty <= 0) s->s.repetition_penalty = 1;
    uint64_t seed = cfg->seed;
    s->rng[0] = splitmix(&seed);
    s->rng[1] = splitmix(&seed);
    uint32_t want = 16;
    while (want < 2 * (n_prompt + 1024)) want *= 2;
    s->cap = want;
    s->tab = vkpt_malloc(want * sizeof *s->tab);
    if (cfg->n_bias) s->bias = vkpt_malloc(cfg->n_bias * sizeof *s->bias);
    if (!s->tab || (cfg->n_bias && !s->bias)) {
        vkpt_sampler_destroy(s);
        return vkpt_fail(VKPT_ENOMEM, "sampler");
    }
    for (uint32_t i = 0; i < want; i++) s->tab[i].id = -1;
    for (uint32_t i = 0; i < cfg->n_bias; i++) {
        if (cfg->bias[i].id >= n_vocab) {
            vkpt_sampler_destroy(s);
            return vkpt_fail(VKPT_EINVAL, "logit_bias: token %u is outside the vocabulary",
                             cfg->bias[i].id);
        }
        s->bias[s->n_bias++] = cfg->bias[i];
    }
    s->s.bias = s->bias;
    if (s->s.repetition_penalty != 1)
        for (uint32_t i = 0; i < n_prompt; i++)
            if (prompt[i] >= 0 && (uint32_t)prompt[i] < n_vocab) {
                int err = note(s, prompt[i], true);
                if (err) {
                    vkpt_sampler_destroy(s);
                    return err;
                }
            }
    *out = s;
    return 0;
}

float vkpt_sampler_temperature(const vkpt_sampler *s)
{
    return s->s.temperature > 0 ? s->s.temperature : 1.0f;
}

uint32_t vkpt_sampler_max_edits(const vkpt_sampler *s)
{
    bool pen =
        s->s.presence_penalty != 0 || s->s.frequency_penalty != 0 || s->s.repetition_penalty != 1;
    return s->n_bias + (pen ? s->used : 0);
}

uint32_t vkpt_sampler_edits(const vkpt_sampler *s, vkpt_logit_edit *out, uint32_t cap)
{
    uint32_t n = 0;
    bool pen =
        s->s.presence_penalty != 0 || s->s.frequency_penalty != 0 || s->s.repetition_penalty != 1;
    if (pen)
        for (uint32_t i = 0; i < s->cap && n < cap; i++) {
            const slot *e = &s->tab[i];
            if (e->id == -1) continue;
            float rep = s->s.repetition_penalty;
            float delta = 0;
            if (e->count) delta -= s->s.presence_penalty + s->s.frequency_penalty * (float)e->count;
            out[n++] = (vkpt_logit_edit){(uint32_t)e->id, rep, delta};
        }
    /* logit_bias: merged into an existing edit of the same id (ids must be
     * distinct within a row) */
    for (uint32_t b = 0; b < s->n_bias; b++) {
        bool merged = false;
        for (uint32_t i = 0; i < n && !merged; i++)
            if (out[i].id == s->bias[b].id) {
                out[i].delta += s->bias[b].delta;
                merged = true;
            }
        if (!merged && n < cap) out[n++] = s->bias[b];
    }
    return n;
}

static int by_logit_desc(const void *a, const void *b, void *row)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    float x = ((const float *)row)[i], y = ((const float *)row)[j];
    if (x != y) return x > y ? -1 : 1;
    return i < j ? -1 : i > j; /* ties: lower id first, as the GPU top-k */
}

/* The exact path over the whole row: sort, cut by top-k/min-p/top-p, draw. */
static int pick_full(vkpt_sampler *s, const vkpt_step_out *o, vkpt_row_fetch fetch, void *ud,
                     double u, int32_t *tok)
{
    uint32_t V = s->n_vocab;
    if (!s->row) {
        s->row = vkpt_malloc(V * sizeof(float));
        s->order = vkpt_malloc(V * sizeof(uint32_t));
        if (!s->row || !s->order) return vkpt_fail(VKPT_ENOMEM, "sampler row");
    }
    int err = fetch(ud, o->row, s->row);
    if (err) return err;
    for (uint32_t i = 0; i < V; i++) s->order[i] = i;
    qsort_r(s->order, V, sizeof *s->order, by_logit_desc, s->row);
    double T = s->s.temperature;
    double lz = o->lse_temp;
    uint32_t n = s->s.top_k ? (s->s.top_k < V ? s->s.top_k : V) : V;
    double p0 = exp(s->row[s->order[0]] / T - lz);
    double cum = 0;
    uint32_t keep = 0;
    for (; keep < n; keep++) {
        double p = exp(s->row[s->order[keep]] / T - lz);
        if (s->s.min_p > 0 && p < s->s.min_p * p0) break;
        cum += p;
        if (cum >= s->s.top_p) {
            keep++;
            break;
        }
    }
    if (!keep) keep = 1;
    double total = 0;
    for (uint32_t i = 0; i < keep; i++) total += exp(s->row[s->order[i]] / T - lz);
    double target = u * total, acc = 0;
    for (uint32_t i = 0; i < keep; i++) {
        acc += exp(s->row[s->order[i]] / T - lz);
        if (target < acc) {
            *tok = (int32_t)s->order[i];
            return 0;
        }
    }
    *tok = (int32_t)s->order[keep - 1];
    return 0;
}

int vkpt_sampler_pick(vkpt_sampler *s, const vkpt_step_out *o, vkpt_row_fetch fetch, void *ud,
                      vkpt_sample *out)
{
    if (!o->n_cand) return vkpt_fail(VKPT_EINVAL, "sampler: no candidates");
    int32_t tok = o->cand_id[0];
    if (s->s.temperature > 0) {
        double T = s->s.temperature, lz = o->lse_temp;
        double u = uniform(s);
        uint32_t nc = o->n_cand;
        bool complete = nc >= s->n_vocab; /* every token is a candidate */
        uint32_t n = nc;
        if (s->s.top_k && s->s.top_k <= nc) {
            n = s->s.top_k;
            complete = true;
        }
        double p0 = exp(o->cand_logit[0] / T - lz);
        uint32_t keep = 0;
        double cum = 0;
        bool cut = false;
        for (; keep < n; keep++) {
            double p = exp(o->cand_logit[keep] / T - lz);
            if (s->s.min_p > 0 && p < s->s.min_p * p0) {
                cut = true;
                break;
            }
            cum += p;
            if (cum >= s->s.top_p) {
                keep++;
                cut = true;
                break;
            }
        }
        bool filtered = s->s.top_k || s->s.min_p > 0 || s->s.top_p < 1;
        if (!keep) keep = 1;
        if (cut || complete) {
            /* the kept set lies inside the candidates: renormalize there */
            double total = 0;
            for (uint32_t i = 0; i < keep; i++) total += exp(o->cand_logit[i] / T - lz);
            double target = u * total, acc = 0;
            tok = o->cand_id[keep - 1];
            for (uint32_t i = 0; i < keep; i++) {
                acc += exp(o->cand_logit[i] / T - lz);
                if (target < acc) {
                    tok = o->cand_id[i];
                    break;
                }
            }
        } else if (!filtered && u < cum) {
            /* plain sampling that lands inside the candidates */
            double acc = 0;
            tok = o->cand_id[nc - 1];
            for (uint32_t i = 0; i < nc; i++) {
                acc += exp(o->cand_logit[i] / T - lz);
                if (u < acc) {
                    tok = o->cand_id[i];
                    break;
                }
            }
        } else {
            int err = pick_full(s, o, fetch, ud, u, &tok);
            if (err) return err;
        }
    }
    /* log p at temperature 1: the candidate's logit, or the full row's */
    float logit = NAN;
    for (uint32_t i = 0; i < o->n_cand; i++)
        if (o->cand_id[i] == tok) logit = o->cand_logit[i];
    if (isnan(logit) && s->row) logit = s->row[tok];
    out->token = tok;
    out->logprob = isnan(logit) ? -INFINITY : logit - o->lse;
    bool pen =
        s->s.presence_penalty != 0 || s->s.frequency_penalty != 0 || s->s.repetition_penalty != 1;
    return pen ? note(s, tok, false) : 0;
}
