/* Encoder models for the embedding tests and benchmarks: random weights in
 * the three layouts vkpt reads (Hugging Face BERT, GTE v1.5 "new" and
 * nomic-bert folders; llama.cpp GGUF for bert and nomic-bert), written from
 * one set of host weights, and a plain C reference of the same math.
 *
 * The reference reads the weights by meaning (query, key, up, gate ...),
 * not through vkpt's name mapping, so a tensor mapped to the wrong slot or
 * a gate/up swap shows as a mismatch. It follows the Hugging Face modules
 * (BertModel; Alibaba-NLP/new-impl NewModel; nomic-ai's NomicBertModel) in
 * double precision: a test of vkpt's math against an independent statement
 * of the same math, for the two families no torch here can produce
 * transformers outputs for. For BERT it is itself checked against
 * transformers' golden vectors (tests/fixtures/hf/bert). */
#ifndef VKPT_TEST_EMBED_MODELS_H
#define VKPT_TEST_EMBED_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum embt_arch { EMBT_BERT = 0, EMBT_GTE = 1, EMBT_NOMIC = 2 };

typedef struct embt_cfg {
    int arch; /* enum embt_arch */
    uint32_t vocab, n_embd, n_layer, n_head, n_ff;
    uint32_t n_pos;   /* BERT: position table rows; others: the context */
    uint32_t n_types; /* token-type rows (0: none) */
    float eps;
    float rope_theta, ntk; /* GTE: NTK factor (0 none) */
    bool f16;              /* store weights (2-D) as F16 (values rounded so) */
    uint64_t seed;
} embt_cfg;

typedef struct embt_layer {
    float *wqkv, *bqkv; /* [3E][E] q, k, v rows; bias [3E] or NULL */
    float *wo, *bo;     /* [E][E], [E] or NULL */
    float *ln1_w, *ln1_b;
    float *up, *b_up;     /* [FF][E], bias or NULL */
    float *gate, *b_gate; /* gated FFNs: [FF][E] (act on gate) or NULL */
    float *down, *b_down; /* [E][FF], bias or NULL */
    float *ln2_w, *ln2_b;
} embt_layer;

typedef struct embt_model {
    embt_cfg c;
    float *tok, *pos, *type; /* [V][E], [P][E] or NULL, [T][E] or NULL */
    float *eln_w, *eln_b;
    embt_layer *l;
} embt_model;

/* Random weights for cfg (fan-in scaled, deterministic per seed). */
int embt_make(const embt_cfg *c, embt_model *m);
/* BERT weights from a Hugging Face folder's model.safetensors (F32), read
 * by their Hugging Face names; c gets the dims from config.json. */
int embt_load_bert(const char *dir, embt_model *m);
void embt_free(embt_model *m);

/* Write a Hugging Face folder: config.json, model.safetensors, a WordPiece
 * tokenizer.json ([PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3, [MASK] 4, then
 * letters, pieces and fillers up to the vocabulary size), and with
 * st_pooling non-NULL ("cls", "mean", "lasttoken", "max") the
 * sentence-transformers files (modules.json, 1_Pooling/config.json, a
 * Normalize module when normalize). */
int embt_write_hf(const embt_model *m, const char *dir, const char *st_pooling, bool normalize);
/* Only the tokenizer.json above, into dir (for a folder made elsewhere). */
int embt_write_tokenizer(const char *dir, uint32_t vocab);
/* Write a llama.cpp GGUF (bert or nomic-bert) with <arch>.pooling_type =
 * pooling_type (llama.cpp's enum; <0 to leave it out). The vocabulary (and
 * tokenizer) is copied from vocab_gguf, whose token count must equal
 * cfg.vocab. */
int embt_write_gguf(const embt_model *m, const char *path, const char *vocab_gguf,
                    int pooling_type);

/* Reference: final hidden states of one sequence, [n][E] into out. */
int embt_forward(const embt_model *m, const int32_t *ids, uint32_t n, float *out);

/* A fresh directory under /tmp (mkdtemp) into buf; returns buf or NULL. */
char *embt_tmpdir(char *buf, size_t cap, const char *tag);
/* rm -r of a directory tree made by these helpers. */
void embt_rmtree(const char *dir);

#endif
