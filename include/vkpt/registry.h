/* vkpt registry: registered models ("catalog.schema.model", integer
 * versions) kept in the control-plane store (vkpt/store.h), and where that
 * store lives.
 *
 * Registering a version records the model's files (a GGUF file or a Hugging
 * Face folder) with a SHA-256 over their contents, what it is (task,
 * model_type, context length, from the files: vkpt_model_probe) and free
 * metadata. The `system.ai` catalog holds the models that ship with vkpt and
 * those placed in a models folder; vkpt_registry_sync_system keeps it in step
 * with the files (a changed file becomes a new version).
 *
 * These calls read whole model files to hash them: run them off any event
 * loop. Used by `vkpt register`, `vkpt models`, `vkpt calibrate` and the
 * server's /api/2.0/vkpt/registered-models routes.
 */
#ifndef VKPT_REGISTRY_H
#define VKPT_REGISTRY_H

#include "vkpt/device.h"
#include "vkpt/provision.h"
#include "vkpt/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VKPT_TASK_CHAT        "llm/v1/chat"
#define VKPT_TASK_COMPLETIONS "llm/v1/completions"
#define VKPT_TASK_EMBEDDINGS  "llm/v1/embeddings"
#define VKPT_SYSTEM_CATALOG   "system.ai"

/* The data directory: `given` when not NULL, else $VKPT_DATA_DIR, else
 * $XDG_DATA_HOME/vkpt, else $HOME/.local/share/vkpt. */
int vkpt_registry_data_dir(const char *given, char *out, size_t cap);
/* Open the store of a data directory (<dir>/vkpt.db, created when missing). */
int vkpt_registry_open(const char *data_dir, vkpt_store **out);

/* Is `name` a registered-model name: three dot-separated parts of letters,
 * digits, '_' and '-' (each 1..64 bytes)? When not, `msg` says why. */
bool vkpt_registry_valid_name(const char *name, char *msg, size_t cap);

typedef struct vkpt_register_req {
    const char *name;        /* catalog.schema.model */
    const char *source;      /* a .gguf file or a Hugging Face folder */
    const char *task;        /* NULL: llm/v1/embeddings for encoders, else llm/v1/chat */
    const char *model_type;  /* NULL: from the architecture (mixtral for llama with experts) */
    uint32_t context_length; /* 0: the model's training context; else at most that */
    const char *metadata;    /* a JSON object's text, or NULL. Known keys are checked:
                               system_prompt (string), chat_template (string),
                               pooling ("cls", "mean", "last"), normalize (bool) */
} vkpt_register_req;

/* Register a new version of req->name. `out` receives it (free with
 * vkpt_model_version_free). VKPT_EINVAL names the bad field; the model's own
 * errors (VKPT_EFORMAT, VKPT_EIO...) come from reading it. */
int vkpt_registry_register(vkpt_store *st, const vkpt_register_req *req, vkpt_model_version *out);

/* SHA-256 over the model at `path` ("sha256:" + 64 hex digits): a file's
 * bytes, or for a folder each regular file's relative path, size and bytes in
 * path order (hidden entries skipped). Also the total size and the newest
 * modification time. */
int vkpt_registry_checksum(const char *path, char out[72], uint64_t *size, int64_t *mtime);

/* Register system.ai.<stem> for `bundled` (may be NULL) and for each *.gguf
 * file and folder with a config.json in `models_dir` (may be NULL or
 * missing), unless the latest version already has the same source, size and
 * modification time. Files that fail to load are skipped with a warning.
 * Returns the number of versions added, or an error of the store. */
int vkpt_registry_sync_system(vkpt_store *st, const char *bundled, const char *models_dir);

/* A model version as the API's JSON object text (vkpt_free it). */
char *vkpt_registry_version_json(const vkpt_model_version *v);

/* 32 lower-case hex digits of a device UUID. */
void vkpt_registry_uuid_hex(const uint8_t uuid[16], char out[33]);
/* Store a calibration of the model with `checksum` on the device `caps`
 * describes, for this vkpt version (replacing an earlier one); `out` (may be
 * NULL) receives the record. */
int vkpt_registry_save_calibration(vkpt_store *st, const char *checksum,
                                   const vkpt_device_caps *caps, const vkpt_calib_result *r,
                                   double level_seconds, vkpt_calibration *out);

#ifdef __cplusplus
}
#endif
#endif
