/* vkpt store: the control plane's durable state (registered models and their
 * versions, serving endpoints with their config and update state, calibration
 * results) behind one small interface, so that a multi-node deployment can
 * put it in PostgreSQL without touching its callers. SQLite is the default
 * implementation (vkpt_store_open_sqlite: one database file, WAL mode).
 *
 * Contract of every implementation:
 *   - each write is atomic: after a crash (kill -9, power loss) a record is
 *     either wholly the old one or wholly the new one;
 *   - begin/commit group several calls into one atomic unit (nested calls
 *     inside it do not commit on their own); rollback undoes the group;
 *   - endpoint records carry a generation that every write bumps; a write
 *     names the generation it read (or -1: the record must not exist yet) and
 *     fails with VKPT_ESTATE when another writer got there first;
 *   - calls are thread-safe (a group holds the store for its thread until
 *     commit or rollback).
 *
 * Records returned are owned by the caller: free them with the matching
 * vkpt_store_*_free (which accepts zeroed records). Errors: VKPT_ENOTFOUND,
 * VKPT_EEXISTS, VKPT_ESTATE (generation), VKPT_EIO (the database, with its
 * message), VKPT_ENOMEM.
 */
#ifndef VKPT_STORE_H
#define VKPT_STORE_H

#include "vkpt/base.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkpt_store vkpt_store;

/* One version of a registered model. */
typedef struct vkpt_model_version {
    char *name;              /* "catalog.schema.model" */
    uint32_t version;        /* 1, 2, ... per name; assigned by model_add */
    char *source;            /* the GGUF file or Hugging Face folder (absolute path) */
    char *format;            /* "gguf" or "hf" */
    char *checksum;          /* "sha256:<64 hex>" over the model's files */
    uint64_t size_bytes;     /* bytes of the files hashed */
    int64_t mtime;           /* newest modification time of those files (unix seconds) */
    char *task;              /* "llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings" */
    char *model_type;        /* "llama", "mixtral", "dbrx", "bert", "gte", ... */
    uint32_t context_length; /* tokens the model was trained for */
    char *metadata;          /* a JSON object ("{}" when none) */
    int64_t created_ms;      /* unix milliseconds; assigned by model_add */
} vkpt_model_version;

/* A serving endpoint as stored: its configs as JSON text (the API's
 * "config" objects), and where its last update stands. */
typedef struct vkpt_endpoint_rec {
    char *name;
    char *config;        /* the config serving now; NULL until the first one was ready */
    char *pending;       /* the config being applied; NULL when none */
    char *config_update; /* "NOT_UPDATING", "IN_PROGRESS" or "UPDATE_FAILED" */
    char *message;       /* why the last update failed, or NULL */
    int64_t generation;  /* bumped by every write; assigned by endpoint_put */
    int64_t created_ms, updated_ms;
} vkpt_endpoint_rec;

/* A calibration result: tokens/s one replica of a model sustains on a device
 * under the documented workload (docs/PROVISIONING.md). */
typedef struct vkpt_calibration {
    char *checksum;     /* the model version's checksum */
    char *device_uuid;  /* 32 hex digits */
    char *vkpt_version; /* VKPT_VERSION_STRING of the run */
    double tokens_per_s;
    uint64_t chunk_size; /* tokens/s, rounded down (vkpt_chunk_round) */
    char *details;       /* JSON: workload, levels, device name */
    int64_t created_ms;
} vkpt_calibration;

typedef struct vkpt_store_ops {
    const char *name; /* "sqlite" */
    void (*close)(vkpt_store *s);
    int (*begin)(vkpt_store *s);
    int (*commit)(vkpt_store *s);
    void (*rollback)(vkpt_store *s);
    /* Register a new version of v->name: v->version becomes the next number
     * (never one used before, deleted or not) and v->created_ms now. */
    int (*model_add)(vkpt_store *s, vkpt_model_version *v);
    /* version 0: the latest. */
    int (*model_get)(vkpt_store *s, const char *name, uint32_t version, vkpt_model_version *out);
    /* Every version of `name` (NULL: of every model), by name then version. */
    int (*model_list)(vkpt_store *s, const char *name, vkpt_model_version **out, size_t *n);
    int (*model_delete)(vkpt_store *s, const char *name, uint32_t version);
    /* Insert (expect_generation -1: VKPT_EEXISTS if present) or replace (the
     * stored generation must equal expect_generation). Sets e->generation and
     * e->updated_ms (and e->created_ms on insert). */
    int (*endpoint_put)(vkpt_store *s, vkpt_endpoint_rec *e, int64_t expect_generation);
    int (*endpoint_get)(vkpt_store *s, const char *name, vkpt_endpoint_rec *out);
    /* Every endpoint, by name. */
    int (*endpoint_list)(vkpt_store *s, vkpt_endpoint_rec **out, size_t *n);
    /* expect_generation < 0: whatever it is. */
    int (*endpoint_delete)(vkpt_store *s, const char *name, int64_t expect_generation);
    /* Insert or replace (keyed by checksum, device_uuid, vkpt_version); sets created_ms. */
    int (*calibration_put)(vkpt_store *s, vkpt_calibration *c);
    int (*calibration_get)(vkpt_store *s, const char *checksum, const char *device_uuid,
                           const char *vkpt_version, vkpt_calibration *out);
} vkpt_store_ops;

/* Every implementation's handle starts with this. */
struct vkpt_store {
    const vkpt_store_ops *ops;
};

/* Open (creating it and its folder's database file when missing) the SQLite
 * store at `path`: WAL journal, synchronous=FULL, foreign keys on, a schema
 * version table (a database from a newer vkpt is refused with
 * VKPT_EUNSUPPORTED). */
int vkpt_store_open_sqlite(const char *path, vkpt_store **out);

/* Accepts NULL. */
static inline void vkpt_store_close(vkpt_store *s)
{
    if (s) s->ops->close(s);
}

void vkpt_model_version_free(vkpt_model_version *v);
void vkpt_model_versions_free(vkpt_model_version *v, size_t n);
void vkpt_endpoint_rec_free(vkpt_endpoint_rec *e);
void vkpt_endpoint_recs_free(vkpt_endpoint_rec *e, size_t n);
void vkpt_calibration_free(vkpt_calibration *c);

/* Unix time in milliseconds. */
int64_t vkpt_store_now_ms(void);

#ifdef __cplusplus
}
#endif
#endif
