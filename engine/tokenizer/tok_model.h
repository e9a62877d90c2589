/* engine/tokenizer models: BPE with merge ranks, SentencePiece-style BPE
 * with scores, WordPiece. Each turns one pre-tokenized piece into ids.
 * Scratch memory lives in a per-encode-call struct, so a tokenizer is used
 * by many threads without locks. */
#ifndef VKPT_TOK_MODEL_H
#define VKPT_TOK_MODEL_H

#include "tok_int.h"

/* A word -> ids cache for long inputs (words repeat). Direct-mapped. */
typedef struct vkpt__wcache_ent {
    uint64_t hash;
    uint32_t text_off; /* into text pool */
    uint16_t text_n, n_ids;
    int32_t ids[12];
} vkpt__wcache_ent;

typedef struct vkpt__model_scratch {
    int32_t *id, *prev, *next;
    uint32_t *len; /* SPM: bytes covered by a symbol */
    uint32_t *pos; /* SPM: byte offset of a symbol */
    size_t cap;
    uint64_t *heap; /* candidate merges (tok_model.c) */
    size_t heap_n, heap_cap;
    vkpt__buf tmp;
    vkpt__wcache_ent *cache; /* NULL for short inputs */
    char *cache_text;        /* [n_cache][cache word bytes] */
    uint32_t cache_mask;
} vkpt__model_scratch;

int vkpt__model_scratch_init(vkpt__model_scratch *s, const vkpt_tokenizer *t, size_t input_len);
void vkpt__model_scratch_free(vkpt__model_scratch *s);
/* Append the ids of piece s[0..n) to out. */
int vkpt__model_encode(const vkpt_tokenizer *t, vkpt__model_scratch *s, const char *p, size_t n,
                       vkpt_tokens *out);

int32_t vkpt__raw_get(const vkpt_tokenizer *t, const char *s, size_t n);
const vkpt__merge *vkpt__merge_get(const vkpt_tokenizer *t, int32_t left, int32_t right);
/* tok_decode.c: fill piece_pool/piece_off/piece_len and piece flags. */
int vkpt__tok_build_pieces(vkpt_tokenizer *t);

#endif
