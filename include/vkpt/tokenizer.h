/* vkpt tokenizers and chat templates, exact to Hugging Face.
 *
 * A vkpt_tokenizer turns text into token ids and back the way the model's
 * training tokenizer did: SentencePiece-style BPE with scores and byte
 * fallback (Llama 2, Mistral, Gemma), byte-level BPE with merge ranks (GPT-2,
 * Llama 3, Qwen, DeepSeek, SmolLM) and WordPiece (BERT, BGE, GTE). It is built
 * from a GGUF file's tokenizer.ggml.* metadata or from a Hugging Face
 * tokenizer.json (+ tokenizer_config.json), whose normalizer, pre-tokenizer
 * (Split regexes run by PCRE2), model, post-processor, decoder and added
 * tokens it follows.
 *
 * Thread safety: a tokenizer is immutable after creation; encode, decode,
 * token lookups and chat-template rendering may run on many threads at once.
 * A vkpt_detok (streaming decoder) and a vkpt_stop belong to one request.
 *
 * Ownership: functions named _take hand a heap string to the caller, who
 * frees it with vkpt_free(). Spans returned by lookups live as long as the
 * tokenizer.
 */
#ifndef VKPT_TOKENIZER_H
#define VKPT_TOKENIZER_H

#include "vkpt/base.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkpt_tokenizer vkpt_tokenizer;
typedef struct vkpt_gguf vkpt_gguf; /* engine/model/gguf.h */
struct cJSON;

/* ---- creation ---------------------------------------------------------------- */

/* From a GGUF file's tokenizer metadata (tokenizer.ggml.model llama|gpt2|bert,
 * tokens, scores, token_type, merges, pre, special ids, add_bos/add_eos,
 * tokenizer.chat_template). The tokenizer copies what it needs: `g` may be
 * closed afterwards. VKPT_EFORMAT names the key at fault; VKPT_EPARSE gives
 * the chat template's line and column. */
int vkpt_tokenizer_create_gguf(const vkpt_gguf *g, vkpt_tokenizer **out);

/* From a path: a tokenizer.json file, a folder holding tokenizer.json (and
 * optionally tokenizer_config.json, generation_config.json), or a .gguf
 * file. */
int vkpt_tokenizer_create_file(const char *path, vkpt_tokenizer **out);

/* From the contents of tokenizer.json and (optional, may be NULL)
 * tokenizer_config.json and generation_config.json. */
int vkpt_tokenizer_create_json(const char *tokenizer_json, size_t tokenizer_len,
                               const char *config_json, size_t config_len,
                               const char *generation_json, size_t generation_len,
                               vkpt_tokenizer **out);

void vkpt_tokenizer_destroy(vkpt_tokenizer *t);

/* ---- encoding ------------------------------------------------------------------ */

enum vkpt_tok_flags {
    /* Add the post-processor's special tokens (BOS, CLS/SEP, ...), as Hugging
     * Face's encode(text) does; without it, as encode(text,
     * add_special_tokens=False). */
    VKPT_TOK_ADD_SPECIAL = 1u << 0,
    /* Match special added tokens ("<|im_start|>", "<s>") written in the text.
     * Without it they are tokenized as plain text: use that for untrusted
     * content. Non-special added tokens are always matched, as in Hugging
     * Face's and llama.cpp's tokenizers. */
    VKPT_TOK_PARSE_SPECIAL = 1u << 1,
};
#define VKPT_TOK_DEFAULT (VKPT_TOK_ADD_SPECIAL | VKPT_TOK_PARSE_SPECIAL)

/* A growable array of token ids, owned by the caller: zero-initialise it,
 * free it with vkpt_tokens_free(). */
typedef struct vkpt_tokens {
    int32_t *ids;
    size_t n, cap;
} vkpt_tokens;
void vkpt_tokens_free(vkpt_tokens *v);
int vkpt_tokens_push(vkpt_tokens *v, int32_t id);

/* Encode `len` bytes of UTF-8 text and append the ids to `out`. Invalid UTF-8
 * is read as U+FFFD per maximal invalid subsequence. Linear in the input
 * (BPE merges use a heap, no quadratic passes). Fails only on VKPT_ENOMEM. */
int vkpt_tokenizer_encode(const vkpt_tokenizer *t, const char *text, size_t len, unsigned flags,
                          vkpt_tokens *out);

/* ---- decoding ------------------------------------------------------------------ */

enum vkpt_detok_flags {
    VKPT_DETOK_SKIP_SPECIAL = 1u << 0, /* leave special tokens out */
    /* Apply the tokenizer's clean_up_tokenization_spaces (" ." -> "." ...) when
     * its config asks for it, as Hugging Face's decode() does. Never applied
     * by the streaming decoder. */
    VKPT_DETOK_CLEANUP = 1u << 1,
};

/* Decode ids to text into a new string (*text_take, NUL-terminated,
 * *len bytes). Ids outside the vocabulary decode as the unknown token (or
 * nothing when there is none). Incomplete or invalid UTF-8 byte sequences
 * become U+FFFD, as in Hugging Face's decoders. */
int vkpt_tokenizer_decode(const vkpt_tokenizer *t, const int32_t *ids, size_t n, unsigned flags,
                          char **text_take, size_t *len);

/* Streaming decoder for one generation: push ids one at a time, get back the
 * text they complete. Never returns a broken UTF-8 sequence: bytes of an
 * incomplete character (byte-fallback tokens, byte-level pieces) are held
 * until the character completes. Allocates only at creation. */
typedef struct vkpt_detok vkpt_detok;
int vkpt_detok_create(const vkpt_tokenizer *t, unsigned flags, vkpt_detok **out);
void vkpt_detok_destroy(vkpt_detok *d);
/* Forget everything (start of a new sequence). */
void vkpt_detok_reset(vkpt_detok *d);
/* Feed one id; *text is the new text (possibly empty), valid until the next
 * call on `d`. */
int vkpt_detok_push(vkpt_detok *d, int32_t id, vkpt_span *text);
/* End of the sequence: held bytes of an unfinished character come out as
 * U+FFFD. */
int vkpt_detok_flush(vkpt_detok *d, vkpt_span *text);

/* Stop strings over streamed text: feed the decoder's output; text that could
 * still be the start of a stop string is held back, so a stop string split
 * across tokens is found and never sent. */
typedef struct vkpt_stop vkpt_stop;
int vkpt_stop_create(const char *const *stops, size_t n_stops, vkpt_stop **out);
void vkpt_stop_destroy(vkpt_stop *s);
void vkpt_stop_reset(vkpt_stop *s);
/* Feed `n` bytes. *emit is the text that is now safe to send (valid until the
 * next call). Returns the index of the stop string that matched (the text
 * before it is in *emit; everything after it is dropped and further feeds
 * emit nothing), or -1. */
int vkpt_stop_feed(vkpt_stop *s, const char *text, size_t n, vkpt_span *emit);
/* End of generation without a match: the held-back text. */
vkpt_span vkpt_stop_flush(vkpt_stop *s);

/* ---- vocabulary ----------------------------------------------------------------- */

int32_t vkpt_tokenizer_n_vocab(const vkpt_tokenizer *t);
/* The vocabulary string of `id` as the model file writes it ("Ġthe", "▁the",
 * "<0x0A>", "<|eot_id|>"); {NULL, 0} when out of range. */
vkpt_span vkpt_tokenizer_token(const vkpt_tokenizer *t, int32_t id);
/* The bytes `id` stands for in decoded text (byte-level and byte-fallback
 * tokens unmapped, "▁" as a space), without the decoder's context rules (no
 * leading-space stripping); may be part of a UTF-8 character. */
vkpt_span vkpt_tokenizer_piece(const vkpt_tokenizer *t, int32_t id);
/* The id of the exact vocabulary string, or -1. */
int32_t vkpt_tokenizer_find(const vkpt_tokenizer *t, const char *s, size_t n);
/* True for special tokens (control tokens, added tokens marked special). */
bool vkpt_tokenizer_is_special(const vkpt_tokenizer *t, int32_t id);

typedef struct vkpt_tokenizer_specials {
    int32_t bos, eos, unk, pad, sep, cls, mask; /* -1 when the model has none */
} vkpt_tokenizer_specials;
const vkpt_tokenizer_specials *vkpt_tokenizer_get_specials(const vkpt_tokenizer *t);
/* Ids that end a generation: eos, eot/eom, the end-of-turn tokens of the chat
 * format the vocabulary has ("<|eot_id|>", "<|im_end|>", "<end_of_turn>",
 * ...) and generation_config.json's eos_token_id list. */
size_t vkpt_tokenizer_eog(const vkpt_tokenizer *t, const int32_t **ids);
bool vkpt_tokenizer_is_eog(const vkpt_tokenizer *t, int32_t id);
/* "bpe-bytelevel", "bpe-spm", "spm", "wordpiece": the model family in words. */
const char *vkpt_tokenizer_kind(const vkpt_tokenizer *t);

/* ---- chat templates --------------------------------------------------------------
 * A Jinja subset interpreter for Hugging Face chat templates: if/elif/else,
 * for (loop.*, else, filters), set (namespace(), block set), macros,
 * break/continue, filters and tests used by real templates, string and dict
 * methods, slicing, whitespace control with trim_blocks and lstrip_blocks on
 * (as transformers sets them), raise_exception. Values follow Python Jinja2
 * (what the models were trained with); see docs/TOKENIZER.md. */
typedef struct vkpt_chat_template vkpt_chat_template;

/* Parse `src`. Syntax errors, unknown filters or tests and unclosed blocks
 * fail here with VKPT_EPARSE and "line L, column C: ..." in the detail. */
int vkpt_chat_template_create(const char *src, size_t len, vkpt_chat_template **out);
void vkpt_chat_template_destroy(vkpt_chat_template *tpl);
/* Render with the variables of a JSON object (messages, tools,
 * add_generation_prompt, bos_token, ..., any extra such as enable_thinking).
 * Errors (raise_exception, type errors) are VKPT_EINVAL with the message and
 * the template position. */
int vkpt_chat_template_render(const vkpt_chat_template *tpl, const struct cJSON *vars,
                              char **text_take, size_t *len);

/* The tokenizer's own template (tokenizer_config.json chat_template or GGUF
 * tokenizer.chat_template), or NULL when it has none. */
const vkpt_chat_template *vkpt_tokenizer_chat_template(const vkpt_tokenizer *t);
/* Render the tokenizer's template as Hugging Face's apply_chat_template(...,
 * tokenize=False) does: the special-token strings (bos_token, eos_token,
 * unk_token, pad_token, ...) are added to `vars` unless `vars` sets them.
 * VKPT_ENOTFOUND when the tokenizer has no template. */
int vkpt_tokenizer_apply_chat_template(const vkpt_tokenizer *t, const struct cJSON *vars,
                                       char **text_take, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
