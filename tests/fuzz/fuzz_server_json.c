/* Fuzz target for the server's OpenAI request validation: the first byte picks the
 * API (chat or completions), the rest is the JSON body. Whatever is accepted
 * must satisfy the engine's parameter contract (include/vkpt/engine.h), and
 * nothing may leak or crash. */
#include "openai.h"

#include <math.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int api = data[0] & 1;
    srv_gen_spec s;
    srv_api_error e;
    if (srv_openai_parse(api, (const char *)data + 1, size - 1, &s, &e)) {
        if (e.status < 400 || e.status > 599 || !e.message[0]) __builtin_trap();
        return 0;
    }
    const vkpt_gen_params *p = &s.gp;
    const vkpt_sampling *sp = &p->sampling;
    if (p->n < 1 || p->n > VKPT_MAX_CHOICES) __builtin_trap();
    if (p->top_logprobs > VKPT_MAX_TOP_LOGPROBS || p->n_stop_ids > VKPT_MAX_STOP_IDS)
        __builtin_trap();
    if (s.max_tokens_set && p->max_tokens < 1) __builtin_trap();
    if (!(sp->temperature >= 0 && sp->temperature <= SRV_MAX_TEMPERATURE)) __builtin_trap();
    if (!(sp->top_p > 0 && sp->top_p <= 1) || !(sp->min_p >= 0 && sp->min_p <= 1)) __builtin_trap();
    if (!(sp->repetition_penalty > 0) || !isfinite(sp->presence_penalty)) __builtin_trap();
    if (s.n_stops > SRV_MAX_STOPS) __builtin_trap();
    if (api == SRV_API_CHAT && !s.messages) __builtin_trap();
    if (api == SRV_API_COMPLETION && !s.prompt && !s.prompt_ids) __builtin_trap();
    srv_openai_check_vocab(&s, 512, &e);
    srv_gen_spec_free(&s);
    return 0;
}
