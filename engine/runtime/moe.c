/* Mixture-of-experts FFN blocks (Mixtral, Qwen2-MoE, Qwen3-MoE, DBRX): the
 * runner's FFN for layers that have a router (ffn_gate_inp).
 *
 *   h = norm(x)
 *   logits = router h                       [n][n_expert]
 *   ids, wts = top-k of softmax(logits) (renormalized where configured)
 *   lists = slots grouped by expert, tiles  (prefix-sum kernel)
 *   gu[slot] = (gate_e | up_e) h[token]     only the chosen experts
 *   dn[slot] = down_e silu(gate) * up
 *   x += sum_j wts * dn[slot(t, j)] (+ sigmoid(gate_shexp . h) * shared(h))
 *
 * All on the GPU in the step's command buffer: no host round trip per
 * layer. Scratch is allocated once at runner creation for max_step_tokens
 * rows (routing lists and per-slot activations for k slots per token);
 * nothing is allocated per step.
 *
 * Invariants: every MoE layer's experts have the same count (hp->n_expert);
 * expert FF widths may differ between layers (scratch takes the largest). */
#include "k_act.h"
#include "k_moe.h"
#include "k_norm.h"
#include "runner_int.h"

#include <string.h>

struct vkpt_moe {
    uint32_t k, E;  /* experts used per token, experts */
    uint32_t F, Fs; /* largest expert / shared-expert FF width */
    vkpt_moe_route_cfg route;
    vkpt_buf logits;      /* f32 [T][E] router logits */
    vkpt_buf ids, wts;    /* u32 / f32 [T*k] routing */
    vkpt_moe_lists lists; /* slot_pair, pair_slot [T*k], tiles */
    vkpt_buf gu;          /* f32 [T*k][2F]: gate | up per slot */
    vkpt_buf act;         /* f32 [T*k][F] */
    vkpt_buf dn;          /* f32 [T*k][n_embd]: expert outputs per slot */
    vkpt_buf sh_gu;       /* f32 [T][2Fs] shared expert gate | up */
    vkpt_buf sh_act;      /* f32 [T][Fs] */
    vkpt_buf sh_out;      /* f32 [T][n_embd] */
    vkpt_buf sh_gate;     /* f32 [T] shared expert gate logits */
};

void vkpt__moe_free(vkpt_runner *r)
{
    struct vkpt_moe *m = r ? r->moe : NULL;
    if (!m) return;
    vkpt_buf *bufs[] = {
        &m->logits, &m->ids, &m->wts, &m->lists.slot_pair, &m->lists.pair_slot, &m->lists.tiles,
        &m->gu,     &m->act, &m->dn,  &m->sh_gu,           &m->sh_act,          &m->sh_out,
        &m->sh_gate};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) vkpt_buf_free(r->dev, bufs[i]);
    vkpt_free(m);
    r->moe = NULL;
}

static bool dims_are(const vkpt_tensor *t, uint64_t ne0, uint64_t ne1, uint64_t ne2)
{
    return vkpt_tensor_ok(t) && t->ne[0] == ne0 && t->ne[1] == ne1 && t->ne[2] == ne2;
}

/* Check one MoE layer's tensors against each other; its FF widths out. */
static int check_layer(const vkpt_runner *r, uint32_t l, uint32_t *F, uint32_t *Fs)
{
    const vkpt_hparams *hp = r->hp;
    const vkpt_layer *L = &r->m->layers[l];
    const uint64_t D = hp->n_embd, E = hp->n_expert;
    const char *name = r->m->info.name;
    if (!dims_are(&L->gate_inp, D, E, 1))
        return vkpt_fail(VKPT_EFORMAT, "%s: layer %u: the router is not [%llu x %llu]", name, l,
                         (unsigned long long)D, (unsigned long long)E);
    *F = vkpt_tensor_ok(&L->gate_exps) ? (uint32_t)L->gate_exps.ne[1] : 0;
    if (!*F || !dims_are(&L->gate_exps, D, *F, E) || !dims_are(&L->up_exps, D, *F, E) ||
        !dims_are(&L->down_exps, *F, D, E))
        return vkpt_fail(VKPT_EFORMAT,
                         "%s: layer %u: expert tensors missing or not [%llu x FF x %llu] / [FF x "
                         "%llu x %llu]",
                         name, l, (unsigned long long)D, (unsigned long long)E,
                         (unsigned long long)D, (unsigned long long)E);
    *Fs = 0;
    if (vkpt_tensor_ok(&L->gate_shexp) || vkpt_tensor_ok(&L->up_shexp) ||
        vkpt_tensor_ok(&L->down_shexp)) {
        *Fs = vkpt_tensor_ok(&L->gate_shexp) ? (uint32_t)L->gate_shexp.ne[1] : 0;
        if (!*Fs || !dims_are(&L->gate_shexp, D, *Fs, 1) || !dims_are(&L->up_shexp, D, *Fs, 1) ||
            !dims_are(&L->down_shexp, *Fs, D, 1))
            return vkpt_fail(VKPT_EFORMAT, "%s: layer %u: shared expert tensors are incomplete",
                             name, l);
        if (vkpt_tensor_ok(&L->gate_inp_shexp) && !dims_are(&L->gate_inp_shexp, D, 1, 1))
            return vkpt_fail(VKPT_EFORMAT, "%s: layer %u: the shared expert gate is not [%llu]",
                             name, l, (unsigned long long)D);
    }
    if (!vkpt_tensor_ok(&L->ffn_norm))
        return vkpt_fail(VKPT_EFORMAT, "%s: layer %u has no FFN norm", name, l);
    return 0;
}

int vkpt__moe_init(vkpt_runner *r)
{
    const vkpt_hparams *hp = r->hp;
    uint32_t F = 0, Fs = 0, n_moe = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const vkpt_layer *L = &r->m->layers[l];
        if (!vkpt_tensor_ok(&L->gate_inp)) {
            if (!vkpt_tensor_ok(&L->w_gate) || !vkpt_tensor_ok(&L->w_up) ||
                !vkpt_tensor_ok(&L->w_down))
                return vkpt_fail(VKPT_EFORMAT, "%s: layer %u has neither a router nor an FFN",
                                 r->m->info.name, l);
            continue;
        }
        uint32_t f = 0, fs = 0;
        int err = check_layer(r, l, &f, &fs);
        if (err) return err;
        F = f > F ? f : F;
        Fs = fs > Fs ? fs : Fs;
        n_moe++;
    }
    if (!n_moe) return 0;
    if (!hp->n_expert || hp->n_expert > VKPT_MOE_MAX_EXPERTS || !hp->n_expert_used ||
        hp->n_expert_used > hp->n_expert || hp->n_expert_used > VKPT_MOE_MAX_K)
        return vkpt_fail(VKPT_EUNSUPPORTED,
                         "%s: %u experts with %u per token (vkpt runs up to %d experts, %d per "
                         "token)",
                         r->m->info.name, hp->n_expert, hp->n_expert_used, VKPT_MOE_MAX_EXPERTS,
                         VKPT_MOE_MAX_K);
    struct vkpt_moe *m = vkpt_calloc(1, sizeof *m);
    if (!m) return vkpt_fail(VKPT_ENOMEM, "moe state");
    r->moe = m;
    m->k = hp->n_expert_used;
    m->E = hp->n_expert;
    m->F = F;
    m->Fs = Fs;
    m->route = (vkpt_moe_route_cfg){.n_expert = m->E,
                                    .k = m->k,
                                    .gating = VKPT_MOE_SOFTMAX,
                                    .norm = hp->norm_topk,
                                    .norm_p = hp->expert_norm_p > 0 ? hp->expert_norm_p : 1.0f,
                                    .scale = 1.0f};
    const uint64_t T = r->T, P = T * m->k, D = hp->n_embd;
    m->lists.n_expert = m->E;
    const int Dv = VKPT_MK_DEVICE;
    struct {
        vkpt_buf *b;
        uint64_t bytes;
    } plan[] = {
        {&m->logits, T * m->E * 4},
        {&m->ids, P * 4},
        {&m->wts, P * 4},
        {&m->lists.slot_pair, P * 4},
        {&m->lists.pair_slot, P * 4},
        {&m->lists.tiles, vkpt_moe_tiles_words((uint32_t)P, m->E, 1) * 4},
        {&m->gu, P * 2 * F * 4},
        {&m->act, P * F * 4},
        {&m->dn, P * D * 4},
        {&m->sh_gu, Fs ? T * 2 * Fs * 4 : 0},
        {&m->sh_act, Fs ? T * Fs * 4 : 0},
        {&m->sh_out, Fs ? T * D * 4 : 0},
        {&m->sh_gate, Fs ? T * 4 : 0},
    };
    for (size_t i = 0; i < sizeof plan / sizeof plan[0]; i++) {
        int err = vkpt__rn_alloc(r, plan[i].b, plan[i].bytes, Dv, VKPT_MEM_SCRATCH);
        if (err)
            return vkpt_fail(err, "%s: expert scratch for %u tokens per step: %s", r->m->info.name,
                             r->T, vkpt_errmsg(err));
    }
    return 0;
}

#define TRY(x)                      \
    do {                            \
        if ((err = (x))) goto fail; \
    } while (0)

int vkpt__moe_ffn(vkpt_runner *r, uint32_t l, uint32_t n)
{
    const vkpt_hparams *hp = r->hp;
    const vkpt_layer *L = &r->m->layers[l];
    struct vkpt_moe *m = r->moe;
    vkpt_cmd *c = r->cmd;
    if (!m) return vkpt_fail(VKPT_EINVAL, "moe: layer %u has a router but no expert scratch", l);
    const uint32_t D = hp->n_embd, E = m->E, k = m->k, np = n * k;
    const uint32_t F = (uint32_t)L->gate_exps.ne[1];
    const bool shared = vkpt_tensor_ok(&L->gate_shexp);
    const uint32_t Fs = shared ? (uint32_t)L->gate_shexp.ne[1] : 0;
    int err = 0;
    /* one kernel for every batch size when asked: a slot's result from the
     * matvec kernels does not depend on its tile's other slots */
    int path = VKPT_MOE_AUTO;
    if (r->o.batch_invariant)
        path = vkpt_variant_usable(r->dev, VKPT_V_moe_matvec_f32_f32_subgroup)
                   ? VKPT_MOE_MATVEC_SUBGROUP
                   : VKPT_MOE_MATVEC;
    uint32_t tile;
    int p = vkpt_k_moe_plan(r->dev, L->gate_exps.type, n, k, E, path, &tile);
    if (p < 0) return p;
    vkpt_moe_lists lists = m->lists;
    lists.n_pairs = np;
    lists.tile = tile;

    vkpt_rows xr = vkpt_rows_of(&r->x, 0, D), hr = vkpt_rows_of(&r->h, 0, D);
    TRY(vkpt__rn_norm(r, &xr, &hr, &L->ffn_norm, &L->ffn_norm_b, n));
    vkpt_cmd_barrier(c);
    TRY(vkpt__rn_matmul(r, &L->gate_inp, &r->h, n, &m->logits, E, NULL));
    vkpt_buf sh_up = m->sh_gu;
    if (shared) {
        sh_up = vkpt_buf_view(&m->sh_gu, (uint64_t)Fs * 4, m->sh_gu.size - (uint64_t)Fs * 4);
        TRY(vkpt__rn_matmul(r, &L->gate_shexp, &r->h, n, &m->sh_gu, 2 * Fs, NULL));
        TRY(vkpt__rn_matmul(r, &L->up_shexp, &r->h, n, &sh_up, 2 * Fs, NULL));
        if (vkpt_tensor_ok(&L->gate_inp_shexp))
            TRY(vkpt__rn_matmul(r, &L->gate_inp_shexp, &r->h, n, &m->sh_gate, 1, NULL));
    }
    vkpt_cmd_barrier(c);
    vkpt_rows lr = vkpt_rows_of(&m->logits, 0, E);
    TRY(vkpt_k_moe_route(c, &m->route, &lr, n, &m->ids, &m->wts));
    if (shared) {
        vkpt_rows sg, su, sa = vkpt_rows_of(&m->sh_act, 0, Fs);
        vkpt_glu_split(&m->sh_gu, Fs, &sg, &su);
        TRY(vkpt_k_glu(c, VKPT_ACT_SILU, &sg, &su, &sa, Fs, n));
    }
    vkpt_cmd_barrier(c);
    TRY(vkpt_k_moe_sort(c, &m->ids, &lists));
    if (shared) TRY(vkpt__rn_matmul(r, &L->down_shexp, &m->sh_act, n, &m->sh_out, D, NULL));
    vkpt_cmd_barrier(c);
    vkpt_buf up = vkpt_buf_view(&m->gu, (uint64_t)F * 4, m->gu.size - (uint64_t)F * 4);
    vkpt_moe_mm_args a = {.wtype = L->gate_exps.type,
                          .w = L->gate_exps.buf,
                          .K = D,
                          .M = F,
                          .n_expert = E,
                          .x = r->h,
                          .x_k = k,
                          .lists = &lists,
                          .y = m->gu,
                          .y_stride = 2 * F,
                          .path = p};
    TRY(vkpt_k_moe_matmul(c, &a));
    a.wtype = L->up_exps.type;
    a.w = L->up_exps.buf;
    a.y = up;
    TRY(vkpt_k_moe_matmul(c, &a));
    vkpt_cmd_barrier(c);
    vkpt_rows gate, upr, actr = vkpt_rows_of(&m->act, 0, F);
    vkpt_glu_split(&m->gu, F, &gate, &upr);
    TRY(vkpt_k_glu(c, VKPT_ACT_SILU, &gate, &upr, &actr, F, np));
    vkpt_cmd_barrier(c);
    vkpt_moe_mm_args d = {.wtype = L->down_exps.type,
                          .w = L->down_exps.buf,
                          .K = F,
                          .M = D,
                          .n_expert = E,
                          .x = m->act,
                          .x_k = 0,
                          .lists = &lists,
                          .y = m->dn,
                          .y_stride = D,
                          .path = p};
    TRY(vkpt_k_moe_matmul(c, &d));
    vkpt_cmd_barrier(c);
    vkpt_moe_combine_args cb = {.y = xr,
                                .n_rows = n,
                                .n = D,
                                .k = k,
                                .accumulate = true,
                                .d = vkpt_rows_of(&m->dn, 0, D),
                                .wts = m->wts,
                                .pair_slot = m->lists.pair_slot};
    if (shared) {
        cb.shared = vkpt_rows_of(&m->sh_out, 0, D);
        if (vkpt_tensor_ok(&L->gate_inp_shexp)) cb.gate = vkpt_rows_of(&m->sh_gate, 0, 1);
    }
    TRY(vkpt_k_moe_combine(c, &cb));
    vkpt_cmd_barrier(c);
    return 0;
fail:
    return err;
}
