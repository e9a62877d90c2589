/* API-key checks. The comparison walks the candidate in full against each
 * key (indexing the key modulo its length), so timing reveals neither a
 * matching prefix nor which key matched. */
#include "auth.h"

#include "server_int.h"

#include <string.h>
#include <strings.h>

bool srv_secret_equal(const char *secret, size_t secret_len, const char *cand, size_t cand_len)
{
    if (secret_len == 0) return false;
    volatile unsigned char diff = (unsigned char)(secret_len != cand_len);
    for (size_t i = 0; i < cand_len; i++) diff |= (unsigned char)(secret[i % secret_len] ^ cand[i]);
    return diff == 0;
}

bool srv_auth_check(const char *const *keys, size_t n_keys, const char *authorization)
{
    if (!authorization) return false;
    const char *p = authorization;
    while (*p == ' ' || *p == '\t') p++;
    if (strncasecmp(p, "Bearer", 6) || (p[6] != ' ' && p[6] != '\t')) return false;
    p += 6;
    while (*p == ' ' || *p == '\t') p++;
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t')) n--;
    if (n == 0) return false;
    bool ok = false;
    for (size_t i = 0; i < n_keys; i++) ok |= srv_secret_equal(keys[i], strlen(keys[i]), p, n);
    return ok;
}

bool srv_auth_ok(const vkpt_server *s, const char *authorization)
{
    return srv_auth_check((const char *const *)s->keys, s->n_keys, authorization);
}
