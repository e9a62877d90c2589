#include "vk_fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vkpt_test_gpu_setup(void **state)
{
    vkpt_test_gpu *g = calloc(1, sizeof *g);
    const char *nv = getenv("VKPT_TEST_NO_VALIDATE");
    vkpt_instance_opts io = {.validate = nv && *nv && strcmp(nv, "0") ? 0 : 1};
    int err = vkpt_instance_create(&io, &g->inst);
    if (err) {
        fprintf(stderr, "test setup: %s\n", vkpt_errmsg(err));
        free(g);
        return -1;
    }
    int idx = vkpt_instance_find_device(g->inst, getenv("VKPT_TEST_DEVICE"));
    if (idx < 0 || (err = vkpt_device_create(g->inst, idx, NULL, &g->dev))) {
        fprintf(stderr, "test setup: %s\n", vkpt_errmsg(idx < 0 ? idx : err));
        vkpt_instance_destroy(g->inst);
        free(g);
        return -1;
    }
    fprintf(stderr, "# device: %s, validation %s\n", g->dev->caps.name,
            vkpt_instance_validating(g->inst) ? "on" : "off");
    *state = g;
    return 0;
}

int vkpt_test_gpu_teardown(void **state)
{
    vkpt_test_gpu *g = *state;
    if (!g) return 0;
    vkpt_device_destroy(g->dev);
    int errs = vkpt_instance_validation_errors(g->inst);
    vkpt_instance_destroy(g->inst);
    int fail = errs > g->validation_seen;
    free(g);
    if (fail) fprintf(stderr, "validation errors during teardown\n");
    return fail ? -1 : 0;
}

int vkpt_test_check_validation(void **state)
{
    vkpt_test_gpu *g = *state;
    int errs = vkpt_instance_validation_errors(g->inst);
    int fresh = errs - g->validation_seen;
    g->validation_seen = errs;
    if (fresh) fail_msg("%d Vulkan validation error(s) in this test (see the log above)", fresh);
    return 0;
}

vkpt_device *vkpt_test_dev(void **state)
{
    return ((vkpt_test_gpu *)*state)->dev;
}

void vkpt_test_rng_init(vkpt_test_rng *r, uint64_t seed)
{
    r->s = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (!r->s) r->s = 1;
}

uint64_t vkpt_test_rng_u64(vkpt_test_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

float vkpt_test_rng_f32(vkpt_test_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((vkpt_test_rng_u64(r) >> 40) / 16777216.0);
}

float vkpt_test_rng_normal(vkpt_test_rng *r)
{
    float s = 0;
    for (int i = 0; i < 12; i++) s += vkpt_test_rng_f32(r, 0, 1);
    return s - 6.0f;
}

void vkpt_test_fill_f32(vkpt_test_rng *r, float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) x[i] = vkpt_test_rng_f32(r, lo, hi);
}

double vkpt_test_max_abs(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || isnan(d)) m = isnan(d) ? INFINITY : d;
    }
    return m;
}

double vkpt_test_nmse(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (isnan(num)) return INFINITY;
    return den > 0 ? num / den : num;
}

void *vkpt_test_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        if (size) *size = (size_t)n;
    }
    return b;
}
