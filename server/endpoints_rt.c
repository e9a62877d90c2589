/* Provisioned endpoints at run time: replicas and where they go, admission
 * (the token bucket above max, the choice of a replica, cold starts), the
 * autoscaler, calibrations, metrics. See endpoints_int.h for ownership and
 * docs/PROVISIONING.md for the model.
 *
 * Fair sharing of a device happens in the engines' arbiter (stride
 * scheduling over tokens processed): an entity's weight is its provisioned
 * share, max(min_provisioned_throughput, one chunk) tokens/s, split evenly
 * over its replicas, so an endpoint gets the same share however many
 * replicas carry it.
 *
 * An embedding model's entity (task llm/v1/embeddings) runs the same way
 * with embedders for replicas: they take their steps under the same
 * arbiter, its tokens are input tokens (charged, counted, weighted), and
 * its requests come through the embed_* admission hooks. */
#include "endpoints_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BURST_S 1.0 /* the bucket holds one second of max_provisioned_throughput */

enum { JOB_START, JOB_STOP, JOB_CALIBRATE };

typedef struct ep_job {
    uv_work_t w;
    srv_ep *st;
    int kind;
    ep_replica *rep;
    struct ep_calib *cal;
    int err;
    char msg[512];
} ep_job;

typedef struct ep_calib_waiter {
    struct ep_calib_waiter *next;
    ep_chunk_cb cb;
    void *ud;
} ep_calib_waiter;

typedef struct ep_calib {
    srv_list link; /* st->calib */
    vkpt_model_version mv;
    ep_calib_waiter *waiters;
    vkpt_calib_result res;
    vkpt_calibration cal;
} ep_calib;

static void replica_stop(ep_replica *r);
static void entity_reweight(ep_entity *e);

const char *ep_device_uuid(srv_ep *st)
{
    return st->device_uuid;
}

static uint32_t min_replicas(const ep_entity *e)
{
    return e->chunk ? (uint32_t)((e->min_tps + (int64_t)e->chunk - 1) / (int64_t)e->chunk) : 0;
}

static uint32_t max_replicas(const ep_entity *e)
{
    uint32_t n = e->chunk ? (uint32_t)(e->max_tps / (int64_t)e->chunk) : 1;
    return n ? n : 1;
}

/* ---- loaded models (shared; thread pool and loop) -------------------------------- */

static int model_acquire(srv_ep *st, const char *source, vkpt_device *dev, uint32_t n_ctx,
                         ep_model **out)
{
    pthread_mutex_lock(&st->cache_mu);
    for (;;) {
        ep_model *lm = st->models;
        while (lm && (lm->dev != dev || strcmp(lm->source, source))) lm = lm->next;
        if (!lm) break;
        if (lm->loading) {
            pthread_cond_wait(&st->cache_cv, &st->cache_mu);
            continue;
        }
        lm->refs++;
        pthread_mutex_unlock(&st->cache_mu);
        *out = lm;
        return 0;
    }
    ep_model *lm = vkpt_calloc(1, sizeof *lm);
    if (!lm || !(lm->source = vkpt_strdup(source))) {
        vkpt_free(lm);
        pthread_mutex_unlock(&st->cache_mu);
        return vkpt_fail(VKPT_ENOMEM, "model cache");
    }
    lm->dev = dev;
    lm->refs = 1;
    lm->loading = true;
    lm->next = st->models;
    st->models = lm;
    pthread_mutex_unlock(&st->cache_mu);
    vkpt_model_opts mo = VKPT_MODEL_OPTS_DEFAULT;
    mo.progress = false;
    mo.n_ctx = n_ctx;
    uint64_t t0 = vkpt_now_ns();
    vkpt_model *m = NULL;
    int err = vkpt_model_load(dev, source, &mo, &m);
    pthread_mutex_lock(&st->cache_mu);
    lm->loading = false;
    if (err) {
        for (ep_model **pp = &st->models; *pp; pp = &(*pp)->next)
            if (*pp == lm) {
                *pp = lm->next;
                break;
            }
        vkpt_free(lm->source);
        vkpt_free(lm);
        lm = NULL;
    } else {
        lm->m = m;
    }
    pthread_cond_broadcast(&st->cache_cv);
    pthread_mutex_unlock(&st->cache_mu);
    if (err) return err;
    VKPT_LOGI("endpoints: loaded %s in %.2f s", source, (double)(vkpt_now_ns() - t0) / 1e9);
    *out = lm;
    return 0;
}

static void model_release(srv_ep *st, ep_model *lm)
{
    if (!lm) return;
    pthread_mutex_lock(&st->cache_mu);
    bool last = --lm->refs == 0;
    if (last)
        for (ep_model **pp = &st->models; *pp; pp = &(*pp)->next)
            if (*pp == lm) {
                *pp = lm->next;
                break;
            }
    pthread_mutex_unlock(&st->cache_mu);
    if (!last) return;
    VKPT_LOGI("endpoints: unloaded %s", lm->source);
    vkpt_model_destroy(lm->m);
    vkpt_free(lm->source);
    vkpt_free(lm);
}

/* ---- entities --------------------------------------------------------------------------- */

void ep_entity_ref(ep_entity *e)
{
    e->refs++;
}

static void entity_free(ep_entity *e)
{
    vkpt_free(e->ep_name);
    srv_model_free_fields(&e->api);
    vkpt_tokenizer_destroy(e->tok);
    vkpt_model_version_free(&e->mv);
    vkpt_free(e->name);
    vkpt_free(e->entity_name);
    vkpt_free(e);
}

void ep_entity_unref(ep_entity *e)
{
    if (--e->refs > 0) return;
    /* every replica holds a reference: none is left */
    entity_free(e);
}

/* Tokens a replica processed: prompt + generated, or input tokens embedded. */
static uint64_t replica_tokens(ep_replica *r)
{
    if (r->embedder) {
        vkpt_embedder_stats st;
        vkpt_embedder_get_stats(r->embedder, &st);
        return st.tokens;
    }
    if (r->engine) {
        vkpt_engine_stats st;
        vkpt_engine_get_stats(r->engine, &st);
        return st.prompt_tokens + st.generated_tokens;
    }
    return 0;
}

/* Requests queued inside the replica (its batch is full). */
static uint32_t replica_queued(ep_replica *r)
{
    if (r->embedder) {
        vkpt_embedder_stats st;
        vkpt_embedder_get_stats(r->embedder, &st);
        return st.queued;
    }
    if (r->engine) {
        vkpt_engine_stats st;
        vkpt_engine_get_stats(r->engine, &st);
        return st.queued;
    }
    return 0;
}

uint64_t ep_entity_tokens(ep_entity *e)
{
    uint64_t t = e->tokens_retired;
    for (srv_list *n = e->replicas.next; n != &e->replicas; n = n->next)
        t += replica_tokens(srv_container_of(n, ep_replica, link));
    return t;
}

bool ep_entity_ready(const ep_entity *e)
{
    return e->deploy == EP_DEPLOY_READY || e->deploy == EP_DEPLOY_RECOVERING;
}

/* Requests waiting for a replica get an error (their replica cannot come). */
static void fail_waiting(ep_entity *e, int status, const char *msg)
{
    while (!srv_list_empty(&e->waiting)) {
        srv_list *l = e->waiting.next;
        srv_list_remove(l);
        e->n_waiting--;
        const char *code = status == 503 ? "engine_unavailable" : NULL;
        const char *hdr = status == 503 ? "Retry-After: 1\r\n" : NULL;
        if (e->embed)
            srv_embed_fail(srv_container_of(l, srv_embed_adm, link)->req, status, code, msg, hdr);
        else
            srv_gen_fail(srv_container_of(l, srv_gen, adm_link), status, NULL, code, msg, hdr);
    }
    e->cold_t0 = 0;
}

void ep_entity_retire(ep_entity *e, const char *why)
{
    if (e->retired) return;
    e->retired = true;
    char msg[600];
    snprintf(msg, sizeof msg, "served entity %s is no longer serving: %s; retry", e->name, why);
    fail_waiting(e, 503, msg);
    for (srv_list *n = e->replicas.next; n != &e->replicas;) {
        ep_replica *r = srv_container_of(n, ep_replica, link);
        n = n->next;
        if (r->state == EP_REP_READY) {
            r->state = EP_REP_DRAINING;
            e->n_ready--;
            e->n_draining++;
            if (!r->in_flight) replica_stop(r);
        }
    }
    ep_entity_unref(e); /* the config's reference */
}

/* ---- placement ------------------------------------------------------------------------------- */

#define ARBITER_MEMBERS 64 /* engine/sched/arbiter.c MAX_MEMBERS */

/* Which device queue gets the next replica of `e`: the queue with the least
 * provisioned weight among those with room, preferring a device that holds
 * the model already (its weights are shared). The one placement decision of
 * the server: a multi-node deployment replaces it. NULL when every queue is
 * full. */
static ep_devq *place_replica(srv_ep *st, const ep_entity *e)
{
    ep_devq *best = NULL;
    bool best_has = false;
    for (size_t i = 0; i < st->n_dq; i++) {
        ep_devq *q = &st->dq[i];
        if (q->n_replicas >= ARBITER_MEMBERS || vkpt_device_lost(q->dev)) continue;
        bool has = false;
        pthread_mutex_lock(&st->cache_mu);
        for (ep_model *lm = st->models; lm && !has; lm = lm->next)
            has = lm->dev == q->dev && !strcmp(lm->source, e->mv.source);
        pthread_mutex_unlock(&st->cache_mu);
        if (!best || (has && !best_has) || (has == best_has && q->weight < best->weight)) {
            best = q;
            best_has = has;
        }
    }
    return best;
}

/* ---- jobs ------------------------------------------------------------------------------------- */

static void job_work(uv_work_t *w)
{
    ep_job *j = w->data;
    srv_ep *st = j->st;
    if (j->kind == JOB_START) {
        ep_replica *r = j->rep;
        const ep_entity *e = r->ent;
        /* TESTS ONLY (fault injection, docs/PROVISIONING.md): replica starts of the served
         * entity named by VKPT_TEST_FAIL_REPLICA fail; every start takes
         * VKPT_TEST_REPLICA_DELAY_MS longer */
        const char *fail = getenv("VKPT_TEST_FAIL_REPLICA"),
                   *delay = getenv("VKPT_TEST_REPLICA_DELAY_MS");
        if (delay) usleep((useconds_t)(atoi(delay) * 1000));
        if (fail && !strcmp(fail, e->name)) {
            j->err = VKPT_EIO;
            snprintf(j->msg, sizeof j->msg, "fault injected by VKPT_TEST_FAIL_REPLICA");
            return;
        }
        int err = model_acquire(st, e->mv.source, r->dq->dev, e->api.n_ctx, &r->lm);
        if (!err && e->embed) {
            /* the embedder vkpt_calibrate measured (its defaults, batch
             * invariant), inputs up to the entity's context */
            vkpt_embedder_opts bo = {
                .max_seq_len = e->api.n_ctx,
                .queue = r->dq->queue,
                .pooling = e->pooling,
                .normalize = e->normalize,
                .batch_invariant = st->o.batch_invariant,
                .arbiter = r->dq->arb,
                .weight = r->weight,
            };
            err = vkpt_embedder_create(r->lm->m, &bo, &r->embedder);
            if (err) {
                snprintf(j->msg, sizeof j->msg, "%s", vkpt_errmsg(err));
                model_release(st, r->lm);
                r->lm = NULL;
            }
        } else if (!err) {
            vkpt_engine_opts eo = {
                .n_ctx = e->api.n_ctx,
                .max_seqs = st->o.max_seqs,
                .kv_tokens = st->o.kv_tokens,
                .max_step_tokens = st->o.max_step_tokens,
                .queue = r->dq->queue,
                .no_prefix_cache = st->o.no_prefix_cache,
                .batch_invariant = st->o.batch_invariant,
                .arbiter = r->dq->arb,
                .weight = r->weight,
            };
            err = vkpt_engine_create(r->lm->m, &eo, &r->engine);
            if (err) {
                snprintf(j->msg, sizeof j->msg, "%s", vkpt_errmsg(err));
                model_release(st, r->lm);
                r->lm = NULL;
            }
        } else {
            snprintf(j->msg, sizeof j->msg, "%s", vkpt_errmsg(err));
        }
        j->err = err;
    } else if (j->kind == JOB_STOP) {
        ep_replica *r = j->rep;
        r->tokens_final = replica_tokens(r);
        vkpt_engine_destroy(r->engine);
        r->engine = NULL;
        vkpt_embedder_destroy(r->embedder);
        r->embedder = NULL;
        model_release(st, r->lm);
        r->lm = NULL;
    } else {
        struct ep_calib *c = j->cal;
        ep_devq *q = &st->dq[0];
        ep_model *lm = NULL;
        uint32_t ctx = c->mv.context_length;
        if (st->o.n_ctx && st->o.n_ctx < ctx) ctx = st->o.n_ctx;
        if (ctx > 4096) ctx = 4096;
        int err = model_acquire(st, c->mv.source, q->dev, ctx, &lm);
        if (!err) {
            vkpt_calib_opts co = {
                .n_ctx = ctx, .level_seconds = st->o.calibration_level_s, .queue = q->queue};
            VKPT_LOGI("endpoints: calibrating %s version %u on %s", c->mv.name, c->mv.version,
                      vkpt_device_get_caps(q->dev)->name);
            err = vkpt_calibrate(lm->m, &co, &c->res);
            model_release(st, lm);
        }
        if (!err)
            err = vkpt_registry_save_calibration(st->store, c->mv.checksum,
                                                 vkpt_device_get_caps(q->dev), &c->res,
                                                 st->o.calibration_level_s, &c->cal);
        if (err) snprintf(j->msg, sizeof j->msg, "%s", vkpt_errmsg(err));
        j->err = err;
    }
}

static void after_start(ep_job *j);
static void after_stop(ep_job *j);
static void after_calibrate(ep_job *j);

static void job_after(uv_work_t *w, int status)
{
    ep_job *j = w->data;
    (void)status; /* jobs are never canceled (uv_cancel is not used) */
    if (j->kind == JOB_START)
        after_start(j);
    else if (j->kind == JOB_STOP)
        after_stop(j);
    else
        after_calibrate(j);
    vkpt_free(j);
}

static int queue_job(srv_ep *st, int kind, ep_replica *r, struct ep_calib *c)
{
    ep_job *j = vkpt_calloc(1, sizeof *j);
    if (!j) return vkpt_fail(VKPT_ENOMEM, "endpoint job");
    j->st = st;
    j->kind = kind;
    j->rep = r;
    j->cal = c;
    j->w.data = j;
    if (uv_queue_work(&st->srv->loop, &j->w, job_work, job_after)) {
        vkpt_free(j);
        return vkpt_fail(VKPT_ENOMEM, "cannot queue an endpoint job");
    }
    return 0;
}

/* ---- replicas ---------------------------------------------------------------------------------- */

/* Start one more replica of `e` (asynchronously). */
static int replica_start(ep_entity *e, bool cold)
{
    srv_ep *st = e->st;
    ep_devq *q = place_replica(st, e);
    if (!q) {
        snprintf(e->message, sizeof e->message,
                 "no device queue has room for another replica (%d engines each at most)",
                 ARBITER_MEMBERS);
        return vkpt_fail(VKPT_EFULL, "%s", e->message);
    }
    ep_replica *r = vkpt_calloc(1, sizeof *r);
    if (!r) return vkpt_fail(VKPT_ENOMEM, "replica");
    r->ent = e;
    r->dq = q;
    r->state = EP_REP_STARTING;
    r->t_start_ns = vkpt_now_ns();
    r->cold_start = cold;
    q->n_replicas++;
    srv_list_push(&e->replicas, &r->link);
    e->n_starting++;
    ep_entity_ref(e);
    entity_reweight(e);
    int err = queue_job(st, JOB_START, r, NULL);
    if (err) {
        srv_list_remove(&r->link);
        e->n_starting--;
        q->n_replicas--;
        q->weight -= r->weight;
        vkpt_free(r);
        entity_reweight(e);
        ep_entity_unref(e);
    }
    return err;
}

/* Stop a replica with nothing in flight (asynchronously). */
static void replica_stop(ep_replica *r)
{
    ep_entity *e = r->ent;
    if (r->state == EP_REP_DRAINING) e->n_draining--;
    r->state = EP_REP_STOPPING;
    if (queue_job(e->st, JOB_STOP, r, NULL)) {
        /* cannot queue (out of memory): stop it here, on the loop */
        ep_job j = {.st = e->st, .kind = JOB_STOP, .rep = r};
        j.w.data = &j;
        job_work(&j.w);
        after_stop(&j);
    }
}

/* A ready replica stops taking requests; stopped once idle. */
static void replica_drain(ep_replica *r)
{
    ep_entity *e = r->ent;
    if (r->state != EP_REP_READY) return;
    r->state = EP_REP_DRAINING;
    e->n_ready--;
    e->n_draining++;
    entity_reweight(e);
    if (!r->in_flight) replica_stop(r);
}

/* Each replica's arbiter weight: the entity's provisioned share over its
 * replicas that serve or start. */
static void entity_reweight(ep_entity *e)
{
    uint32_t n = e->n_ready + e->n_starting;
    double share = (double)(e->min_tps > (int64_t)e->chunk ? (uint64_t)e->min_tps : e->chunk);
    if (share <= 0) share = 1;
    for (srv_list *l = e->replicas.next; l != &e->replicas; l = l->next) {
        ep_replica *r = srv_container_of(l, ep_replica, link);
        if (r->state != EP_REP_READY && r->state != EP_REP_STARTING) continue;
        double w = share / (n ? n : 1);
        r->dq->weight += w - r->weight;
        r->weight = w;
        if (r->engine) vkpt_engine_set_weight(r->engine, w);
        if (r->embedder) vkpt_embedder_set_weight(r->embedder, w);
    }
}

static ep_replica *pick_replica(ep_entity *e)
{
    ep_replica *best = NULL;
    for (srv_list *l = e->replicas.next; l != &e->replicas; l = l->next) {
        ep_replica *r = srv_container_of(l, ep_replica, link);
        if (r->state != EP_REP_READY) continue;
        if (!best || r->in_flight < best->in_flight) best = r;
    }
    return best;
}

static void after_start(ep_job *j)
{
    srv_ep *st = j->st;
    ep_replica *r = j->rep;
    ep_entity *e = r->ent;
    e->n_starting--;
    double secs = (double)(vkpt_now_ns() - r->t_start_ns) / 1e9;
    if (j->err) {
        VKPT_LOGE("endpoints: %s/%s: a replica failed to start: %s", e->ep_name, e->name, j->msg);
        srv_list_remove(&r->link);
        r->dq->n_replicas--;
        r->dq->weight -= r->weight;
        vkpt_free(r);
        entity_reweight(e);
        snprintf(e->message, sizeof e->message, "a replica failed to start: %.480s", j->msg);
        if (e->n_ready == 0 && e->n_starting == 0) {
            e->deploy = EP_DEPLOY_FAILED;
            if (e->n_waiting) e->cold_start_failures++;
            char msg[700];
            snprintf(msg, sizeof msg, "endpoint %s: the replica for %s failed to start: %s",
                     e->ep_name, e->name, j->msg);
            fail_waiting(e, 503, msg);
        } else if (e->n_ready) {
            e->deploy = EP_DEPLOY_RECOVERING;
        }
        if (!e->retired) ep_on_entity_settled(e);
        ep_entity_unref(e);
        return;
    }
    if (e->retired || st->stopping) {
        r->state = EP_REP_DRAINING;
        e->n_draining++;
        replica_stop(r);
        if (st->stopping && !e->retired)
            fail_waiting(e, 503,
                         "the server is shutting down; the replica this request waited "
                         "for was stopped");
        return;
    }
    r->state = EP_REP_READY;
    e->n_ready++;
    e->deploy = EP_DEPLOY_READY;
    snprintf(e->message, sizeof e->message, "%u replica%s serving", e->n_ready,
             e->n_ready == 1 ? "" : "s");
    entity_reweight(e);
    VKPT_LOGI("endpoints: %s/%s: replica ready on device %u queue %u in %.2f s (%u serving)",
              e->ep_name, e->name, r->dq->dev_index, r->dq->queue, secs, e->n_ready);
    if (e->n_waiting) {
        /* a cold start: the requests that waited for it go now */
        uint64_t now = vkpt_now_ns();
        double cold = e->cold_t0 ? (double)(now - e->cold_t0) / 1e9 : secs;
        e->cold_starts++;
        e->cold_start_last_s = cold;
        srv_hist_observe(&e->cold_start_time, cold);
        VKPT_LOGI("endpoints: %s/%s: cold start took %.2f s; %u requests waited", e->ep_name,
                  e->name, cold, e->n_waiting);
        e->cold_t0 = 0;
        while (!srv_list_empty(&e->waiting)) {
            srv_list *l = e->waiting.next;
            srv_list_remove(l);
            e->n_waiting--;
            ep_replica *to = pick_replica(e);
            to->in_flight++;
            if (e->embed) {
                srv_embed_adm *a = srv_container_of(l, srv_embed_adm, link);
                a->replica = to;
                a->wait_ns = now - a->wait_ns; /* from here on: the time it waited */
                size_t used = strlen(a->extra_headers);
                snprintf(a->extra_headers + used, sizeof a->extra_headers - used,
                         "x-vkpt-cold-start-ms: %.0f\r\n", (double)a->wait_ns / 1e6);
                srv_embed_resume(a->req, to->embedder);
                continue;
            }
            srv_gen *g = srv_container_of(l, srv_gen, adm_link);
            g->adm_replica = to;
            uint64_t waited = now - g->adm_wait_ns;
            g->adm_wait_ns = waited; /* from here on: the time it waited */
            size_t used = strlen(g->extra_headers);
            snprintf(g->extra_headers + used, sizeof g->extra_headers - used,
                     "x-vkpt-cold-start-ms: %.0f\r\n", (double)waited / 1e6);
            srv_gen_resume(g, to->engine);
        }
    }
    ep_on_entity_settled(e);
}

static void after_stop(ep_job *j)
{
    ep_replica *r = j->rep;
    ep_entity *e = r->ent;
    e->tokens_retired += r->tokens_final;
    srv_list_remove(&r->link);
    r->dq->n_replicas--;
    r->dq->weight -= r->weight;
    VKPT_LOGI("endpoints: %s/%s: replica stopped (%u serving)", e->ep_name, e->name, e->n_ready);
    vkpt_free(r);
    ep_entity_unref(e);
}

void ep_entity_stop_now(ep_entity *e)
{
    for (srv_list *l = e->replicas.next; l != &e->replicas;) {
        ep_replica *r = srv_container_of(l, ep_replica, link);
        l = l->next;
        if (r->state == EP_REP_READY) e->n_ready--;
        if (r->state == EP_REP_DRAINING) e->n_draining--;
        r->state = EP_REP_STOPPING;
        ep_job j = {.st = e->st, .kind = JOB_STOP, .rep = r};
        j.w.data = &j;
        job_work(&j.w);
        after_stop(&j);
    }
}

void ep_entity_deploy(ep_entity *e)
{
    uint32_t n = min_replicas(e);
    if (n < 1) n = 1; /* one replica shows the config loads; scale to zero comes after */
    e->deploy = EP_DEPLOY_CREATING;
    snprintf(e->message, sizeof e->message, "starting %u replica%s", n, n == 1 ? "" : "s");
    e->last_busy_ns = vkpt_now_ns();
    for (uint32_t i = 0; i < n; i++)
        if (replica_start(e, false)) {
            if (e->n_starting == 0 && e->n_ready == 0) {
                e->deploy = EP_DEPLOY_FAILED;
                snprintf(e->message, sizeof e->message, "cannot start a replica: %s",
                         vkpt_errmsg(VKPT_EFULL));
                ep_on_entity_settled(e);
            }
            break;
        }
}

/* ---- admission ---------------------------------------------------------------------------------- */

static void adm_start(srv_gen *g)
{
    ep_entity *e = g->model->adm_ud;
    ep_entity_ref(e);
    e->last_busy_ns = vkpt_now_ns();
}

enum { ADM_GO, ADM_WAIT, ADM_RETIRED, ADM_THROTTLED, ADM_NO_REPLICA };

/* The admission decision of a request that may use `charge` tokens, for
 * generations and embeddings alike: ADM_GO with *rep (its in_flight
 * counted), ADM_WAIT (pushed on the entity's waiting list through
 * `wait_link`, *wait_ns set; a cold start is begun if none is), or a
 * refusal: the config changed (RETIRED), over max (THROTTLED, *retry_s),
 * a replica cannot start (NO_REPLICA). Admitted requests are charged. */
static int admit_core(ep_entity *e, double charge, srv_list *wait_link, uint64_t *wait_ns,
                      ep_replica **rep, double *retry_s)
{
    if (e->retired) return ADM_RETIRED;
    uint64_t now = vkpt_now_ns();
    if (!vkpt_bucket_take(&e->bucket, charge, now, retry_s)) {
        e->throttled++;
        return ADM_THROTTLED;
    }
    e->charged_since_tick += (uint64_t)charge;
    e->requests++;
    e->in_flight++;
    e->last_busy_ns = now;
    ep_replica *r = pick_replica(e);
    if (r) {
        r->in_flight++;
        *rep = r;
        return ADM_GO;
    }
    if (e->deploy == EP_DEPLOY_FAILED && e->n_starting == 0) {
        /* try again: a failed replica start may have been transient */
        e->deploy = EP_DEPLOY_CREATING;
    }
    /* no replica: wait for one (scaled to zero, or all are starting) */
    srv_list_push(&e->waiting, wait_link);
    e->n_waiting++;
    *wait_ns = now;
    if (!e->cold_t0) e->cold_t0 = now;
    if (e->n_starting == 0) {
        VKPT_LOGI("endpoints: %s/%s: cold start (a request arrived with no replica)", e->ep_name,
                  e->name);
        snprintf(e->last_scale_reason, sizeof e->last_scale_reason, "cold_start");
        e->scale_ups++;
        e->st->scaling_actions++;
        if (replica_start(e, true)) {
            srv_list_remove(wait_link);
            e->n_waiting--;
            e->cold_start_failures++;
            return ADM_NO_REPLICA; /* it stays charged and in flight until finish */
        }
    }
    return ADM_WAIT;
}

/* The answer of a refusal: status, code, message and header lines. */
static int refusal(const ep_entity *e, int how, double retry_s, char *msg, size_t cap, char *hdr,
                   size_t hcap, const char **code)
{
    hdr[0] = 0;
    if (how == ADM_THROTTLED) {
        long secs = (long)ceil(retry_s);
        if (secs < 1) secs = 1;
        snprintf(hdr, hcap, "Retry-After: %ld\r\n", secs);
        snprintf(msg, cap,
                 "endpoint %s is over its max_provisioned_throughput of %lld tokens/s (%s are "
                 "counted when a request arrives%s); retry after %ld s",
                 e->ep_name, (long long)e->max_tps,
                 e->embed ? "input tokens" : "prompt + max_tokens",
                 e->embed ? "" : ", unused tokens are given back", secs);
        *code = "rate_limit_exceeded";
        return 429;
    }
    snprintf(hdr, hcap, "Retry-After: 1\r\n");
    *code = "engine_unavailable";
    if (how == ADM_RETIRED)
        snprintf(msg, cap, "endpoint %s changed its config while the request waited; retry",
                 e->ep_name);
    else
        snprintf(msg, cap, "endpoint %s cannot start a replica: %s", e->ep_name,
                 vkpt_errmsg(VKPT_EFULL));
    return 503;
}

static int adm_admit(srv_gen *g, vkpt_engine **engine)
{
    ep_entity *e = g->model->adm_ud;
    snprintf(g->extra_headers, sizeof g->extra_headers, "served-model-name: %s\r\n", e->name);
    double charge = (double)g->prompt.n + (double)g->spec.gp.max_tokens * g->spec.gp.n;
    double retry = 0;
    ep_replica *r = NULL;
    int how = admit_core(e, charge, &g->adm_link, &g->adm_wait_ns, &r, &retry);
    if (how == ADM_GO || how == ADM_WAIT || how == ADM_NO_REPLICA) g->adm_charged = charge;
    if (how == ADM_GO) {
        g->adm_replica = r;
        *engine = r->engine;
        return SRV_ADMIT_GO;
    }
    if (how == ADM_WAIT) return SRV_ADMIT_WAIT;
    char msg[512], hdr[64];
    const char *code;
    int status = refusal(e, how, retry, msg, sizeof msg, hdr, sizeof hdr, &code);
    srv_gen_fail(g, status, NULL, code, msg, hdr);
    return SRV_ADMIT_REFUSED;
}

/* A request on an entity leaves: its replica may stop (draining), unused
 * tokens go back to the bucket, its queue time is observed when it ran. */
static void leave(ep_entity *e, srv_list *wait_link, ep_replica *r, double charged, double used,
                  bool ran, uint64_t wait_ns, uint64_t queue_ns)
{
    uint64_t now = vkpt_now_ns();
    if (!srv_list_empty(wait_link)) {
        srv_list_remove(wait_link);
        e->n_waiting--;
        if (!e->n_waiting) e->cold_t0 = 0;
    }
    if (r && --r->in_flight == 0 && r->state == EP_REP_DRAINING) replica_stop(r);
    if (charged > 0) {
        if (charged > used) vkpt_bucket_refund(&e->bucket, charged - used, now);
        e->in_flight--;
        /* queue time: waiting for a replica (a duration once resumed) + in the replica */
        if (ran) srv_hist_observe(&e->queue_time, (double)(wait_ns + queue_ns) / 1e9);
    }
    e->last_busy_ns = now;
    ep_entity_unref(e);
}

static void adm_finish(srv_gen *g)
{
    ep_entity *e = g->model->adm_ud;
    ep_replica *r = g->adm_replica;
    g->adm_replica = NULL;
    /* it ran when DONE came with its prompt counted */
    leave(e, &g->adm_link, r, g->adm_charged, (double)g->prompt_tokens + g->completion_tokens,
          g->prompt_tokens != 0, g->adm_wait_ns, g->adm_queue_ns);
}

/* An embedding endpoint's model answers no generation. */
static int adm_admit_no_generation(srv_gen *g, vkpt_engine **engine)
{
    ep_entity *e = g->model->adm_ud;
    char msg[400];
    (void)engine;
    snprintf(g->extra_headers, sizeof g->extra_headers, "served-model-name: %s\r\n", e->name);
    snprintf(msg, sizeof msg,
             "endpoint %s serves llm/v1/embeddings (%s): send {\"input\": ...} to its "
             "invocations or to /v1/embeddings",
             e->ep_name, e->entity_name);
    srv_gen_fail(g, 400, "model", "invalid_value", msg, NULL);
    return SRV_ADMIT_REFUSED;
}

static void adm_embed_start(srv_embed_adm *a)
{
    ep_entity *e = a->model->adm_ud;
    ep_entity_ref(e);
    e->last_busy_ns = vkpt_now_ns();
}

static int adm_embed_admit(srv_embed_adm *a, vkpt_embedder **embedder)
{
    ep_entity *e = a->model->adm_ud;
    snprintf(a->extra_headers, sizeof a->extra_headers, "served-model-name: %s\r\n", e->name);
    double charge = (double)a->tokens, retry = 0;
    ep_replica *r = NULL;
    int how = admit_core(e, charge, &a->link, &a->wait_ns, &r, &retry);
    if (how == ADM_GO || how == ADM_WAIT || how == ADM_NO_REPLICA) a->charged = charge;
    if (how == ADM_GO) {
        a->replica = r;
        *embedder = r->embedder;
        return SRV_ADMIT_GO;
    }
    if (how == ADM_WAIT) return SRV_ADMIT_WAIT;
    char msg[512], hdr[64];
    const char *code;
    int status = refusal(e, how, retry, msg, sizeof msg, hdr, sizeof hdr, &code);
    srv_embed_fail(a->req, status, code, msg, hdr);
    return SRV_ADMIT_REFUSED;
}

static void adm_embed_finish(srv_embed_adm *a)
{
    ep_entity *e = a->model->adm_ud;
    ep_replica *r = a->replica;
    a->replica = NULL;
    leave(e, &a->link, r, a->charged, (double)a->tokens_done, a->tokens_done != 0, a->wait_ns,
          a->queue_ns);
}

const srv_admission srv_ep_admission = {
    .start = adm_start,
    .admit = adm_admit,
    .finish = adm_finish,
};

const srv_admission srv_ep_embed_admission = {
    .start = adm_start,
    .admit = adm_admit_no_generation,
    .finish = adm_finish,
    .embed_start = adm_embed_start,
    .embed_admit = adm_embed_admit,
    .embed_finish = adm_embed_finish,
};

/* ---- autoscaler --------------------------------------------------------------------------------- */

static void scale_entity(srv_ep *st, ep_entity *e, double dt, uint64_t now)
{
    double inst = dt > 0 ? (double)e->charged_since_tick / dt : 0;
    e->charged_since_tick = 0;
    e->demand_tps = 0.5 * e->demand_tps + 0.5 * inst;
    if (e->demand_tps < 0.01) e->demand_tps = 0;
    uint64_t tok = ep_entity_tokens(e);
    double used = dt > 0 && tok >= e->tokens_prev ? (double)(tok - e->tokens_prev) / dt : 0;
    e->tokens_prev = tok;
    e->used_tps = 0.5 * e->used_tps + 0.5 * used;
    if (e->in_flight || e->n_waiting) e->last_busy_ns = now;
    if (e->deploy == EP_DEPLOY_CREATING || e->deploy == EP_DEPLOY_FAILED) return;
    uint32_t saturated = 0;
    for (srv_list *l = e->replicas.next; l != &e->replicas; l = l->next) {
        ep_replica *r = srv_container_of(l, ep_replica, link);
        if (r->state != EP_REP_READY) continue;
        saturated += replica_queued(r) > 0;
    }
    uint32_t n = e->n_ready + e->n_starting;
    double need = ceil(e->demand_tps / (double)e->chunk - 1e-9);
    if (need < n) {
        if (!e->below_since_ns) e->below_since_ns = now;
    } else {
        e->below_since_ns = 0;
    }
    vkpt_scale_in in = {
        .replicas = n,
        .min_replicas = min_replicas(e),
        .max_replicas = max_replicas(e),
        .scale_to_zero = e->scale_to_zero,
        .demand_tps = e->demand_tps,
        .chunk_tps = (double)e->chunk,
        .waiting = e->n_waiting,
        .saturated = saturated,
        .below_s = e->below_since_ns ? (double)(now - e->below_since_ns) / 1e9 : 0,
        .idle_s = (double)(now - e->last_busy_ns) / 1e9,
        .scale_down_delay_s = st->o.scale_down_delay_s,
        .scale_to_zero_delay_s = st->o.scale_to_zero_delay_s,
    };
    vkpt_scale_out out;
    vkpt_autoscale_decide(&in, &out);
    if (out.target == n) return;
    snprintf(e->last_scale_reason, sizeof e->last_scale_reason, "%s", out.reason);
    st->scaling_actions++;
    VKPT_LOGI("endpoints: %s/%s: scale %u -> %u replicas (%s: demand %.0f tokens/s, chunk %llu, "
              "band %lld..%lld)",
              e->ep_name, e->name, n, out.target, out.reason, e->demand_tps,
              (unsigned long long)e->chunk, (long long)e->min_tps, (long long)e->max_tps);
    if (out.target > n) {
        e->scale_ups++;
        for (uint32_t i = n; i < out.target; i++)
            if (replica_start(e, e->n_waiting > 0)) break;
        return;
    }
    if (out.target == 0) {
        e->scale_to_zero_count++;
        e->scale_downs++;
        for (srv_list *l = e->replicas.next; l != &e->replicas;) {
            ep_replica *r = srv_container_of(l, ep_replica, link);
            l = l->next;
            replica_drain(r);
        }
        snprintf(e->message, sizeof e->message,
                 "scaled to zero after %.0f s idle; the next request starts a replica (cold start)",
                 in.idle_s);
        return;
    }
    e->scale_downs++;
    ep_replica *victim = NULL;
    for (srv_list *l = e->replicas.next; l != &e->replicas; l = l->next) {
        ep_replica *r = srv_container_of(l, ep_replica, link);
        if (r->state == EP_REP_READY && (!victim || r->in_flight < victim->in_flight)) victim = r;
    }
    if (victim) replica_drain(victim);
    e->below_since_ns = 0;
}

static void on_tick(uv_timer_t *t)
{
    srv_ep *st = t->data;
    uint64_t now = vkpt_now_ns();
    double dt = st->last_tick_ns ? (double)(now - st->last_tick_ns) / 1e9 : 0;
    st->last_tick_ns = now;
    for (srv_list *n = st->endpoints.next; n != &st->endpoints; n = n->next) {
        ep_endpoint *ep = srv_container_of(n, ep_endpoint, link);
        for (size_t i = 0; i < ep->n_cur; i++) scale_entity(st, ep->cur[i], dt, now);
    }
}

void ep_tick_start(srv_ep *st)
{
    uv_timer_init(&st->srv->loop, &st->tick);
    st->tick.data = st;
    st->tick_open = true;
    uint64_t ms = (uint64_t)(st->o.autoscale_interval_s * 1000);
    if (ms < 10) ms = 10;
    st->last_tick_ns = vkpt_now_ns();
    uv_timer_start(&st->tick, on_tick, ms, ms);
}

/* ---- calibration ---------------------------------------------------------------------------------- */

void ep_chunk_get(srv_ep *st, const vkpt_model_version *mv, bool force, ep_chunk_cb cb, void *ud)
{
    if (st->o.test_chunk_size) {
        cb(ud, st->o.test_chunk_size, NULL, 0, NULL);
        return;
    }
    if (!force) {
        vkpt_calibration cal;
        int err = st->store->ops->calibration_get(st->store, mv->checksum, st->device_uuid,
                                                  VKPT_VERSION_STRING, &cal);
        if (!err) {
            cb(ud, cal.chunk_size, &cal, 0, NULL);
            vkpt_calibration_free(&cal);
            return;
        }
        if (err != VKPT_ENOTFOUND) {
            cb(ud, 0, NULL, err, vkpt_errmsg(err));
            return;
        }
    }
    ep_calib_waiter *w = vkpt_calloc(1, sizeof *w);
    if (!w) {
        cb(ud, 0, NULL, VKPT_ENOMEM, "out of memory");
        return;
    }
    w->cb = cb;
    w->ud = ud;
    for (srv_list *n = st->calib.next; n != &st->calib; n = n->next) {
        ep_calib *c = srv_container_of(n, ep_calib, link);
        if (!strcmp(c->mv.checksum, mv->checksum)) {
            w->next = c->waiters;
            c->waiters = w;
            return;
        }
    }
    ep_calib *c = vkpt_calloc(1, sizeof *c);
    bool ok = c && (c->mv.name = vkpt_strdup(mv->name)) &&
              (c->mv.source = vkpt_strdup(mv->source)) &&
              (c->mv.checksum = vkpt_strdup(mv->checksum)) && (c->mv.task = vkpt_strdup(mv->task));
    if (ok) {
        c->mv.version = mv->version;
        c->mv.context_length = mv->context_length;
        c->waiters = w;
        srv_list_push(&st->calib, &c->link);
        if (queue_job(st, JOB_CALIBRATE, NULL, c)) {
            srv_list_remove(&c->link);
            ok = false;
        }
    }
    if (!ok) {
        if (c) vkpt_model_version_free(&c->mv);
        vkpt_free(c);
        vkpt_free(w);
        cb(ud, 0, NULL, VKPT_ENOMEM, "cannot start the calibration");
    }
}

static void after_calibrate(ep_job *j)
{
    ep_calib *c = j->cal;
    srv_list_remove(&c->link);
    if (!j->err)
        VKPT_LOGI("endpoints: %s version %u: %.1f tokens/s at concurrency %u -> chunk %llu "
                  "tokens/s (%.1f s)",
                  c->mv.name, c->mv.version, c->res.tokens_per_s, c->res.concurrency,
                  (unsigned long long)c->res.chunk_size, c->res.seconds);
    else
        VKPT_LOGE("endpoints: calibrating %s version %u failed: %s", c->mv.name, c->mv.version,
                  j->msg);
    ep_calib_waiter *w = c->waiters;
    while (w) {
        ep_calib_waiter *next = w->next;
        w->cb(w->ud, j->err ? 0 : c->res.chunk_size, j->err ? NULL : &c->cal, j->err,
              j->err ? j->msg : NULL);
        vkpt_free(w);
        w = next;
    }
    vkpt_calibration_free(&c->cal);
    vkpt_model_version_free(&c->mv);
    vkpt_free(c);
}

/* ---- metrics ------------------------------------------------------------------------------------------ */

static const double queue_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,  0.25, 0.5,
                                       1.0,   2.5,   5.0,  10.0,  20.0, 40.0, 80.0};
static const double cold_buckets[] = {0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0};

void ep_entity_metrics_init(ep_entity *e)
{
    srv_hist_init(&e->queue_time, queue_buckets, sizeof queue_buckets / sizeof queue_buckets[0]);
    srv_hist_init(&e->cold_start_time, cold_buckets, sizeof cold_buckets / sizeof cold_buckets[0]);
}

typedef struct ent_ref {
    ep_entity *e;
    char label[320];
} ent_ref;

static void help(srv_buf *o, const char *name, const char *type, const char *text)
{
    srv_buf_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

void srv_ep_metrics(vkpt_server *s, srv_buf *o, const char *only)
{
    srv_ep *st = s->ep;
    if (!st) return;
    size_t n = 0, cap = 0;
    ent_ref *v = NULL;
    for (srv_list *l = st->endpoints.next; l != &st->endpoints; l = l->next) {
        ep_endpoint *ep = srv_container_of(l, ep_endpoint, link);
        if (only && strcmp(ep->name, only)) continue;
        for (size_t i = 0; i < ep->n_cur; i++) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                ent_ref *nv = vkpt_realloc(v, cap * sizeof *nv);
                if (!nv) {
                    o->oom = true;
                    vkpt_free(v);
                    return;
                }
                v = nv;
            }
            srv_buf lb = {0};
            srv_buf_puts(&lb, "endpoint=\"");
            srv_prom_label(&lb, ep->name);
            srv_buf_puts(&lb, "\",served_entity=\"");
            srv_prom_label(&lb, ep->cur[i]->name);
            srv_buf_puts(&lb, "\"");
            v[n].e = ep->cur[i];
            snprintf(v[n].label, sizeof v[n].label, "%s", lb.p ? lb.p : "");
            srv_buf_free(&lb);
            n++;
        }
    }
#define EACH(name, type, text, fmt, expr)                                   \
    do {                                                                    \
        help(o, name, type, text);                                          \
        for (size_t i_ = 0; i_ < n; i_++) {                                 \
            ep_entity *e = v[i_].e;                                         \
            srv_buf_printf(o, "%s{%s} " fmt "\n", name, v[i_].label, expr); \
        }                                                                   \
    } while (0)
#define LLU(x) (unsigned long long)(x)
    help(o, "vkpt_endpoint_provisioned_tokens_per_second", "gauge",
         "Provisioned throughput: the band (min, max) and what the replicas now carry "
         "(current = replicas x chunk).");
    for (size_t i = 0; i < n; i++) {
        ep_entity *e = v[i].e;
        srv_buf_printf(o, "vkpt_endpoint_provisioned_tokens_per_second{%s,bound=\"min\"} %lld\n",
                       v[i].label, (long long)e->min_tps);
        srv_buf_printf(o, "vkpt_endpoint_provisioned_tokens_per_second{%s,bound=\"max\"} %lld\n",
                       v[i].label, (long long)e->max_tps);
        srv_buf_printf(o,
                       "vkpt_endpoint_provisioned_tokens_per_second{%s,bound=\"current\"} %llu\n",
                       v[i].label, LLU((uint64_t)e->n_ready * e->chunk));
    }
    EACH("vkpt_endpoint_throughput_chunk_size", "gauge",
         "Tokens/s of one chunk (one replica) of the served model on this device.", "%llu",
         LLU(e->chunk));
    EACH("vkpt_endpoint_used_tokens_per_second", "gauge",
         "Tokens (prompt + generated; input tokens for embeddings) the replicas processed per "
         "second, smoothed over the autoscaler's ticks.",
         "%.3f", e->used_tps);
    EACH("vkpt_endpoint_demand_tokens_per_second", "gauge",
         "Tokens per second asked for (prompt + max_tokens, or input tokens, of admitted "
         "requests), smoothed.",
         "%.3f", e->demand_tps);
    EACH("vkpt_endpoint_tokens_total", "counter",
         "Tokens (prompt + generated; input tokens for embeddings) the endpoint's replicas "
         "processed.",
         "%llu", LLU(ep_entity_tokens(e)));
    EACH("vkpt_endpoint_requests_total", "counter", "Requests admitted.", "%llu", LLU(e->requests));
    EACH("vkpt_endpoint_throttled_requests_total", "counter",
         "Requests refused with 429 above max_provisioned_throughput.", "%llu", LLU(e->throttled));
    EACH("vkpt_endpoint_requests_in_flight", "gauge", "Admitted requests not finished.", "%u",
         e->in_flight);
    EACH("vkpt_endpoint_requests_waiting", "gauge", "Requests waiting for a replica to start.",
         "%u", e->n_waiting);
    help(o, "vkpt_endpoint_replicas", "gauge", "Replicas by state.");
    for (size_t i = 0; i < n; i++) {
        ep_entity *e = v[i].e;
        srv_buf_printf(o, "vkpt_endpoint_replicas{%s,state=\"ready\"} %u\n", v[i].label,
                       e->n_ready);
        srv_buf_printf(o, "vkpt_endpoint_replicas{%s,state=\"starting\"} %u\n", v[i].label,
                       e->n_starting);
        srv_buf_printf(o, "vkpt_endpoint_replicas{%s,state=\"draining\"} %u\n", v[i].label,
                       e->n_draining);
    }
    help(o, "vkpt_endpoint_scaling_actions_total", "counter",
         "Autoscaler actions: up (including cold starts), down, to zero.");
    for (size_t i = 0; i < n; i++) {
        ep_entity *e = v[i].e;
        srv_buf_printf(o, "vkpt_endpoint_scaling_actions_total{%s,direction=\"up\"} %llu\n",
                       v[i].label, LLU(e->scale_ups));
        srv_buf_printf(o, "vkpt_endpoint_scaling_actions_total{%s,direction=\"down\"} %llu\n",
                       v[i].label, LLU(e->scale_downs - e->scale_to_zero_count));
        srv_buf_printf(o, "vkpt_endpoint_scaling_actions_total{%s,direction=\"to_zero\"} %llu\n",
                       v[i].label, LLU(e->scale_to_zero_count));
    }
    help(o, "vkpt_endpoint_last_scaling_reason", "gauge",
         "1 for the reason of the entity's last scaling action.");
    for (size_t i = 0; i < n; i++)
        if (v[i].e->last_scale_reason[0])
            srv_buf_printf(o, "vkpt_endpoint_last_scaling_reason{%s,reason=\"%s\"} 1\n", v[i].label,
                           v[i].e->last_scale_reason);
    EACH("vkpt_endpoint_cold_starts_total", "counter",
         "Replicas started for requests that arrived with none (scale from zero).", "%llu",
         LLU(e->cold_starts));
    EACH("vkpt_endpoint_cold_start_failures_total", "counter",
         "Cold starts whose replica failed to start.", "%llu", LLU(e->cold_start_failures));
    EACH("vkpt_endpoint_last_cold_start_seconds", "gauge",
         "Time the last cold start made its first request wait.", "%.3f", e->cold_start_last_s);
    help(o, "vkpt_endpoint_cold_start_seconds", "histogram",
         "Time from the first request that found no replica to the replica being ready.");
    for (size_t i = 0; i < n; i++)
        srv_hist_write(o, "vkpt_endpoint_cold_start_seconds", v[i].label, &v[i].e->cold_start_time);
    help(o, "vkpt_endpoint_queue_time_seconds", "histogram",
         "Time a request waited: for a replica (cold start) plus in the engine's queue.");
    for (size_t i = 0; i < n; i++)
        srv_hist_write(o, "vkpt_endpoint_queue_time_seconds", v[i].label, &v[i].e->queue_time);
    EACH("vkpt_endpoint_ready", "gauge", "1 when the served entity can serve.", "%d",
         ep_entity_ready(e) ? 1 : 0);
#undef EACH
#undef LLU
    vkpt_free(v);
}
