/* A small SPIR-V reader: the push-constant block's layout (names, offsets,
 * sizes), the descriptor bindings, and the workgroup size with its
 * specialization ids. Pipelines use it to build layouts without hand-kept
 * lists; a test uses it to check the C push-constant structs against the
 * compiled shaders.
 *
 * Every index read from the module is bounds-checked: a malformed module is
 * VKPT_EFORMAT, never an out-of-bounds read. */
#include "vk_int.h"

#include <stdio.h>
#include <string.h>

enum {
    OP_NAME = 5,
    OP_MEMBER_NAME = 6,
    OP_EXECUTION_MODE = 16,
    OP_TYPE_BOOL = 20,
    OP_TYPE_INT = 21,
    OP_TYPE_FLOAT = 22,
    OP_TYPE_VECTOR = 23,
    OP_TYPE_MATRIX = 24,
    OP_TYPE_ARRAY = 28,
    OP_TYPE_RUNTIME_ARRAY = 29,
    OP_TYPE_STRUCT = 30,
    OP_TYPE_POINTER = 32,
    OP_CONSTANT = 43,
    OP_CONSTANT_COMPOSITE = 44,
    OP_SPEC_CONSTANT = 50,
    OP_SPEC_CONSTANT_COMPOSITE = 51,
    OP_VARIABLE = 59,
    OP_DECORATE = 71,
    OP_MEMBER_DECORATE = 72,
    OP_EXECUTION_MODE_ID = 331,
};
enum {
    DEC_SPEC_ID = 1,
    DEC_ARRAY_STRIDE = 6,
    DEC_BUILTIN = 11,
    DEC_BINDING = 33,
    DEC_SET = 34,
    DEC_OFFSET = 35
};
enum { SC_UNIFORM = 2, SC_PUSH_CONSTANT = 9, SC_STORAGE_BUFFER = 12 };
enum { EM_LOCAL_SIZE = 17, EM_LOCAL_SIZE_ID = 38, BUILTIN_WORKGROUP_SIZE = 25 };

typedef struct id_info {
    uint32_t op;       /* defining opcode */
    uint32_t at;       /* word index of the defining instruction */
    uint32_t n;        /* its word count */
    int32_t spec_id;   /* SpecId decoration or -1 */
    int32_t binding;   /* Binding decoration or -1 */
    int32_t set;       /* DescriptorSet or -1 */
    uint32_t stride;   /* ArrayStride */
    bool wg_builtin;   /* decorated BuiltIn WorkgroupSize */
    const char *name;  /* OpName string (points into the module) */
    uint32_t name_max; /* bytes available for name */
} id_info;

static void copy_str(char *dst, size_t cap, const char *src, uint32_t max)
{
    size_t i = 0;
    if (src)
        for (; i + 1 < cap && i < max && src[i]; i++) dst[i] = src[i];
    dst[i] = 0;
}

/* Byte size of type `t`, or 0 if unknown. Depth-limited against cycles. */
static uint32_t type_size(const uint32_t *w, const id_info *ids, uint32_t bound, uint32_t t,
                          int depth)
{
    if (t >= bound || depth > 16) return 0;
    const id_info *d = &ids[t];
    const uint32_t *ins = w + d->at;
    switch (d->op) {
    case OP_TYPE_BOOL: return 4;
    case OP_TYPE_INT:
    case OP_TYPE_FLOAT: return d->n >= 3 ? ins[2] / 8 : 0;
    case OP_TYPE_VECTOR:
    case OP_TYPE_MATRIX:
        return d->n >= 4 ? type_size(w, ids, bound, ins[2], depth + 1) * ins[3] : 0;
    case OP_TYPE_ARRAY: {
        if (d->n < 4 || ins[3] >= bound) return 0;
        const id_info *len = &ids[ins[3]];
        if ((len->op != OP_CONSTANT && len->op != OP_SPEC_CONSTANT) || len->n < 4) return 0;
        uint32_t count = w[len->at + 3];
        uint32_t stride = d->stride ? d->stride : type_size(w, ids, bound, ins[2], depth + 1);
        return count * stride;
    }
    default: return 0;
    }
}

int vkpt_spv_reflect(const uint32_t *w, size_t nw, vkpt_spv_info *out)
{
    if (!w || !out) return vkpt_fail(VKPT_EINVAL, "vkpt_spv_reflect: NULL");
    memset(out, 0, sizeof *out);
    for (int i = 0; i < 3; i++) out->local_size_spec_id[i] = -1;
    if (nw < 5 || w[0] != 0x07230203u) return vkpt_fail(VKPT_EFORMAT, "not a SPIR-V module");
    uint32_t bound = w[3];
    if (bound == 0 || bound > (1u << 22))
        return vkpt_fail(VKPT_EFORMAT, "SPIR-V id bound %u", bound);
    id_info *ids = vkpt_calloc(bound, sizeof *ids);
    if (!ids) return vkpt_fail(VKPT_ENOMEM, "SPIR-V reflection");
    for (uint32_t i = 0; i < bound; i++) ids[i].spec_id = ids[i].binding = ids[i].set = -1;

    int err = 0;
    uint32_t pc_var_type = 0;
    uint32_t local_size_ids[3] = {0, 0, 0};
    uint32_t member_offset[VKPT_SPV_MAX_MEMBERS];
    /* pass 1: definitions, names, decorations */
    for (size_t at = 5; at < nw;) {
        uint32_t n = w[at] >> 16, op = w[at] & 0xffff;
        if (n == 0 || at + n > nw) {
            err = vkpt_fail(VKPT_EFORMAT, "SPIR-V instruction at word %zu overruns the module", at);
            goto done;
        }
        const uint32_t *ins = w + at;
        uint32_t result = 0;
        switch (op) {
        case OP_TYPE_BOOL:
        case OP_TYPE_INT:
        case OP_TYPE_FLOAT:
        case OP_TYPE_VECTOR:
        case OP_TYPE_MATRIX:
        case OP_TYPE_ARRAY:
        case OP_TYPE_RUNTIME_ARRAY:
        case OP_TYPE_STRUCT:
        case OP_TYPE_POINTER:
            if (n >= 2) result = ins[1];
            break;
        case OP_CONSTANT:
        case OP_CONSTANT_COMPOSITE:
        case OP_SPEC_CONSTANT:
        case OP_SPEC_CONSTANT_COMPOSITE:
        case OP_VARIABLE:
            if (n >= 3) result = ins[2];
            break;
        case OP_NAME:
            if (n >= 3 && ins[1] < bound) {
                ids[ins[1]].name = (const char *)(ins + 2);
                ids[ins[1]].name_max = (n - 2) * 4;
            }
            break;
        case OP_DECORATE:
            if (n >= 3 && ins[1] < bound) {
                id_info *d = &ids[ins[1]];
                uint32_t dec = ins[2];
                if (n >= 4) {
                    if (dec == DEC_SPEC_ID) d->spec_id = (int32_t)ins[3];
                    if (dec == DEC_BINDING) d->binding = (int32_t)ins[3];
                    if (dec == DEC_SET) d->set = (int32_t)ins[3];
                    if (dec == DEC_ARRAY_STRIDE) d->stride = ins[3];
                    if (dec == DEC_BUILTIN && ins[3] == BUILTIN_WORKGROUP_SIZE)
                        d->wg_builtin = true;
                }
            }
            break;
        case OP_EXECUTION_MODE:
            if (n >= 6 && ins[2] == EM_LOCAL_SIZE)
                for (int i = 0; i < 3; i++) out->local_size[i] = ins[3 + i];
            break;
        case OP_EXECUTION_MODE_ID:
            /* LocalSizeId: the operands are ids of (spec) constants, resolved
             * after all definitions are known (pass 2) */
            if (n >= 6 && ins[2] == EM_LOCAL_SIZE_ID)
                for (int i = 0; i < 3; i++) local_size_ids[i] = ins[3 + i];
            break;
        default: break;
        }
        if (result) {
            if (result >= bound) {
                err = vkpt_fail(VKPT_EFORMAT, "SPIR-V id %u beyond bound %u", result, bound);
                goto done;
            }
            ids[result].op = op;
            ids[result].at = (uint32_t)at;
            ids[result].n = n;
        }
        at += n;
    }

    /* pass 2: variables (bindings, push constants), workgroup size, ids
     * defined after their use in OpExecutionModeId */
    for (uint32_t id = 1; id < bound; id++) {
        id_info *d = &ids[id];
        const uint32_t *ins = w + d->at;
        if (d->op == OP_VARIABLE && d->n >= 4) {
            uint32_t sc = ins[3];
            if ((sc == SC_STORAGE_BUFFER || sc == SC_UNIFORM) && d->binding >= 0 && d->set <= 0 &&
                d->binding < 32) {
                out->binding_mask |= 1u << d->binding;
                if ((uint32_t)d->binding + 1 > out->n_bindings)
                    out->n_bindings = (uint32_t)d->binding + 1;
            }
            if (sc == SC_PUSH_CONSTANT) {
                uint32_t pt = ins[1];
                if (pt < bound && ids[pt].op == OP_TYPE_POINTER && ids[pt].n >= 4)
                    pc_var_type = w[ids[pt].at + 3];
            }
        }
        if (d->wg_builtin &&
            (d->op == OP_SPEC_CONSTANT_COMPOSITE || d->op == OP_CONSTANT_COMPOSITE) && d->n >= 6) {
            for (int i = 0; i < 3; i++) {
                uint32_t c = ins[3 + i];
                if (c >= bound) continue;
                if ((ids[c].op == OP_CONSTANT || ids[c].op == OP_SPEC_CONSTANT) && ids[c].n >= 4)
                    out->local_size[i] = w[ids[c].at + 3];
                if (ids[c].op == OP_SPEC_CONSTANT) out->local_size_spec_id[i] = ids[c].spec_id;
            }
        }
    }

    for (int i = 0; i < 3; i++) {
        uint32_t c = local_size_ids[i];
        if (!c || c >= bound) continue;
        if ((ids[c].op == OP_CONSTANT || ids[c].op == OP_SPEC_CONSTANT) && ids[c].n >= 4)
            out->local_size[i] = w[ids[c].at + 3];
        if (ids[c].op == OP_SPEC_CONSTANT) out->local_size_spec_id[i] = ids[c].spec_id;
    }

    /* the push-constant struct: the block itself, or its only member when
     * that is a struct (shaders/common/pc.h declares blocks that way) */
    uint32_t st = pc_var_type;
    if (st && st < bound && ids[st].op == OP_TYPE_STRUCT) {
        if (ids[st].n == 3) {
            uint32_t inner = w[ids[st].at + 2];
            if (inner < bound && ids[inner].op == OP_TYPE_STRUCT) st = inner;
        }
        uint32_t nm = ids[st].n - 2;
        if (nm > VKPT_SPV_MAX_MEMBERS) {
            err = vkpt_fail(VKPT_EFORMAT, "push-constant struct has %u members (max %d)", nm,
                            VKPT_SPV_MAX_MEMBERS);
            goto done;
        }
        out->n_pc_members = nm;
        copy_str(out->pc_struct, sizeof out->pc_struct, ids[st].name, ids[st].name_max);
        for (uint32_t i = 0; i < nm; i++) member_offset[i] = UINT32_MAX;
        for (size_t at = 5; at < nw; at += w[at] >> 16) {
            uint32_t n = w[at] >> 16, op = w[at] & 0xffff;
            const uint32_t *ins = w + at;
            if (op == OP_MEMBER_DECORATE && n >= 5 && ins[1] == st && ins[2] < nm &&
                ins[3] == DEC_OFFSET)
                member_offset[ins[2]] = ins[4];
            if (op == OP_MEMBER_NAME && n >= 4 && ins[1] == st && ins[2] < nm)
                copy_str(out->pc_members[ins[2]].name, sizeof out->pc_members[0].name,
                         (const char *)(ins + 3), (n - 3) * 4);
        }
        for (uint32_t i = 0; i < nm; i++) {
            vkpt_spv_member *m = &out->pc_members[i];
            m->offset = member_offset[i];
            m->size = type_size(w, ids, bound, w[ids[st].at + 2 + i], 0);
            if (m->offset == UINT32_MAX || m->size == 0) {
                err = vkpt_fail(VKPT_EFORMAT, "push-constant member %u has no offset or size", i);
                goto done;
            }
            if (m->offset + m->size > out->pc_size) out->pc_size = m->offset + m->size;
        }
    }
done:
    vkpt_free(ids);
    return err;
}
