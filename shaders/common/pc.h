/* Push-constant blocks, defined once for both C and GLSL.
 *
 * Each block is an X-macro list of (type, name) fields. In GLSL it becomes a
 * plain struct that a shader wraps as its push-constant block:
 *     layout(push_constant) uniform PC { vkpt_pc_add pc; };
 * In C it becomes a typedef'd struct. Fields are 4-byte scalars, so std430
 * and C layouts agree; tests/test_vk.c checks every compiled shader's block
 * against these structs (names, offsets, size) through SPIR-V reflection.
 * Add a block here and to VKPT_PC_ALL below.
 */
#ifndef VKPT_SHADERS_PC_H
#define VKPT_SHADERS_PC_H

#ifdef VKPT_GLSL
#define VKPT_T_u32             uint
#define VKPT_T_i32             int
#define VKPT_T_f32             float
#define VKPT_PC_FIELD(t, name) VKPT_T_##t name;
#define VKPT_PC_STRUCT(sname, FIELDS) \
    struct sname {                    \
        FIELDS(VKPT_PC_FIELD)         \
    };
#else
#include <stdint.h>
#define VKPT_T_u32             uint32_t
#define VKPT_T_i32             int32_t
#define VKPT_T_f32             float
#define VKPT_PC_FIELD(t, name) VKPT_T_##t name;
#define VKPT_PC_STRUCT(sname, FIELDS) \
    typedef struct sname {            \
        FIELDS(VKPT_PC_FIELD)         \
    } sname;
#endif

/* memory bandwidth: n4 = vec4 elements, magic = a value never produced */
#define VKPT_PC_MEMBENCH(F) F(u32, n4) F(f32, magic)
VKPT_PC_STRUCT(vkpt_pc_membench, VKPT_PC_MEMBENCH)

/* elementwise binary op over n elements */
#define VKPT_PC_BINARY(F) F(u32, n)
VKPT_PC_STRUCT(vkpt_pc_binary, VKPT_PC_BINARY)

/* Every block, for the C-vs-SPIR-V layout test. */
#define VKPT_PC_ALL(X)                    \
    X(vkpt_pc_membench, VKPT_PC_MEMBENCH) \
    X(vkpt_pc_binary, VKPT_PC_BINARY)

#endif
