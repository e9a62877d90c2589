/* Shared test fixture: a Vulkan device with the Khronos validation layer on,
 * where any validation error fails the test that caused it, plus a small
 * deterministic RNG and float comparison helpers.
 *
 * Use as cmocka group setup/teardown and per-test teardown:
 *   cmocka_unit_test_teardown(fn, vkpt_test_check_validation)
 *   cmocka_run_group_tests(tests, vkpt_test_gpu_setup, vkpt_test_gpu_teardown)
 * VKPT_TEST_DEVICE picks the device (default: vkpt's default choice);
 * VKPT_TEST_NO_VALIDATE=1 turns validation off (e.g. for quick local runs). */
#ifndef VKPT_TEST_FIXTURE_H
#define VKPT_TEST_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the above first */
#include <cmocka.h>

#include "vk_int.h"

typedef struct vkpt_test_gpu {
    vkpt_instance *inst;
    vkpt_device *dev;
    int validation_seen; /* errors already accounted for */
} vkpt_test_gpu;

int vkpt_test_gpu_setup(void **state);
int vkpt_test_gpu_teardown(void **state);
/* Per-test teardown: fails the test if validation errors appeared. */
int vkpt_test_check_validation(void **state);
vkpt_device *vkpt_test_dev(void **state);

/* xorshift64*: deterministic per seed */
typedef struct vkpt_test_rng {
    uint64_t s;
} vkpt_test_rng;
void vkpt_test_rng_init(vkpt_test_rng *r, uint64_t seed);
uint64_t vkpt_test_rng_u64(vkpt_test_rng *r);
/* uniform in [lo, hi) */
float vkpt_test_rng_f32(vkpt_test_rng *r, float lo, float hi);
/* approximately N(0, 1) */
float vkpt_test_rng_normal(vkpt_test_rng *r);
void vkpt_test_fill_f32(vkpt_test_rng *r, float *x, size_t n, float lo, float hi);

/* max |a-b| and normalized mean squared error sum((a-b)^2)/sum(b^2) */
double vkpt_test_max_abs(const float *a, const float *b, size_t n);
double vkpt_test_nmse(const float *a, const float *ref, size_t n);

/* Read a whole file into a malloc'd buffer (NUL-terminated); NULL on error. */
void *vkpt_test_read_file(const char *path, size_t *size);

#endif
