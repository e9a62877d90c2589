/* API keys: "Authorization: Bearer KEY" against the server's keys, compared
 * in constant time. */
#ifndef VKPT_SERVER_AUTH_H
#define VKPT_SERVER_AUTH_H

#include <stdbool.h>
#include <stddef.h>

typedef struct vkpt_server vkpt_server;

/* Constant-time equality: the time depends on the candidate's length only,
 * never on where the first difference is or on the secret's length. */
bool srv_secret_equal(const char *secret, size_t secret_len, const char *cand, size_t cand_len);
/* Does the Authorization header value (NULL when absent) carry one of the
 * keys? Every key is compared, whichever matches. */
bool srv_auth_check(const char *const *keys, size_t n_keys, const char *authorization);
bool srv_auth_ok(const vkpt_server *s, const char *authorization);

#endif
