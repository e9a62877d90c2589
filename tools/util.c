/* Helpers shared by the vkpt subcommands. */
#include "cmd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int tool_fail(int err, const char *what)
{
    fprintf(stderr, "vkpt: %s: %s\n", what, vkpt_errmsg(err));
    return 1;
}

int tool_open_device(const char *spec, vkpt_instance **inst, vkpt_device **dev)
{
    *inst = NULL;
    *dev = NULL;
    vkpt_instance_opts io = {.validate = -1};
    int err = vkpt_instance_create(&io, inst);
    if (err) return err;
    int idx = vkpt_instance_find_device(*inst, spec);
    if (idx < 0) {
        err = idx;
        goto fail;
    }
    if ((err = vkpt_device_create(*inst, idx, NULL, dev))) goto fail;
    return 0;
fail:
    vkpt_instance_destroy(*inst);
    *inst = NULL;
    return err;
}

int tool_parse_size(const char *s, uint64_t *out)
{
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s) return vkpt_fail(VKPT_EINVAL, "'%s' is not a number", s);
    switch (*end) {
    case 0: break;
    case 'k':
    case 'K':
        v <<= 10;
        end++;
        break;
    case 'm':
    case 'M':
        v <<= 20;
        end++;
        break;
    case 'g':
    case 'G':
        v <<= 30;
        end++;
        break;
    default: return vkpt_fail(VKPT_EINVAL, "'%s': unknown suffix", s);
    }
    if (*end == 'i' || *end == 'B') end++;
    if (*end == 'B') end++;
    if (*end) return vkpt_fail(VKPT_EINVAL, "'%s': trailing characters", s);
    *out = v;
    return 0;
}

int tool_parse_ids(const char *s, int32_t **ids, uint32_t *n)
{
    uint32_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) return vkpt_fail(VKPT_ENOMEM, "tokens");
    while (*s) {
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (end == s || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return vkpt_fail(VKPT_EINVAL, "--tokens: '%s' is not a list of token ids", s);
        }
        if (k == cap) {
            int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                return vkpt_fail(VKPT_ENOMEM, "tokens");
            }
            v = nv;
        }
        v[k++] = (int32_t)x;
        s = end;
        while (*s == ',' || *s == ' ') s++;
    }
    *ids = v;
    *n = k;
    return 0;
}
