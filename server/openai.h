/* The OpenAI-compatible API: request validation (JSON body -> srv_gen_spec,
 * or an error that says what to fix), the answers' JSON (chat.completion,
 * chat.completion.chunk, text_completion, logprobs in both formats, usage),
 * and the handlers of /v1/chat/completions, /v1/completions, /v1/models,
 * /tokenize and /detokenize.
 *
 * Validation is pure (no engine, no model beyond the vocabulary size), so
 * unit tests and the fuzzer drive it directly. */
#ifndef VKPT_SERVER_OPENAI_H
#define VKPT_SERVER_OPENAI_H

#include "request.h"

typedef struct srv_api_error {
    int status;       /* HTTP status */
    char param[64];   /* the offending parameter ("messages[1].content"), or "" */
    const char *code; /* "invalid_value", "invalid_type", ... or NULL */
    char message[512];
} srv_api_error;

/* Limits of the API (OpenAI's where it has one). */
#define SRV_MAX_STOPS       16
#define SRV_MAX_STOP_LEN    1024
#define SRV_MAX_LOGIT_BIAS  1024
#define SRV_MAX_TEMPERATURE 2.0

/* Validate a request body for `api` (enum srv_api). On success `out` holds
 * the request (free with srv_gen_spec_free) and 0 is returned; otherwise
 * `err` is filled and a negative code returned (out is left empty). */
int srv_openai_parse(int api, const char *body, size_t n, srv_gen_spec *out, srv_api_error *err);
/* Checks that need the model: token ids (logit_bias, stop_token_ids, a
 * tokenized prompt) inside the vocabulary. */
int srv_openai_check_vocab(const srv_gen_spec *spec, uint32_t n_vocab, srv_api_error *err);

extern const srv_gen_ops srv_openai_chat_ops;
extern const srv_gen_ops srv_openai_completion_ops;

#endif
