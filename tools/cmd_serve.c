/* vkpt serve: load a model onto a device, start its engine and serve the
 * OpenAI-compatible HTTP API until SIGINT/SIGTERM (graceful: requests in
 * flight finish, then exit 0).
 *
 * Settings come from flags and, for those not given as flags, from a JSON
 * config file (--config) whose keys are the long flag names. */
#define _GNU_SOURCE
#include "cmd.h"
#include "vkpt/registry.h"
#include "vkpt/server.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: vkpt serve [-m MODEL] [options]\n\n"
        "Serves a model over HTTP with an OpenAI-compatible API (/v1/chat/completions,\n"
        "/v1/completions, /v1/models, /tokenize, /detokenize, /health, /ready, /metrics;\n"
        "/v1/embeddings when the model is an encoder: bert, nomic-bert, GTE v1.5).\n"
        "SIGINT/SIGTERM stop it gracefully (a second signal cancels requests in flight).\n\n"
        "  -m, --model PATH         a .gguf file or a Hugging Face folder (default: the bundled\n"
        "                           stories260K)\n"
        "      --host ADDR          address to listen on (default 127.0.0.1; 0.0.0.0 for all)\n"
        "      --port N             TCP port (default 8080; 0 picks a free one)\n"
        "      --device D           device index, UUID or name part (see vkpt devices)\n"
        "      --ctx N              context length per sequence (default: the model's, <= 4096)\n"
        "      --parallel N         sequences decoded at once (default 64)\n"
        "      --kv-tokens N        KV-cache capacity in tokens (default: ctx * parallel / 2)\n"
        "      --max-step-tokens N  token budget of one scheduler step (default 512)\n"
        "      --no-prefix-cache    do not reuse KV blocks of identical prompt prefixes\n"
        "      --no-batch-invariant faster decode; results may then depend on the batch\n"
        "      --quantize TYPE      quantize F32/F16/BF16 weights at load: q8_0 or q4_k\n"
        "      --served-model-name NAME  the model id clients use (default: the file name)\n"
        "      --chat-template FILE a Jinja chat template replacing the model's\n"
        "      --system-prompt TEXT a system message for chats that have none\n"
        "      --api-key KEY        require \"Authorization: Bearer KEY\" (repeatable)\n"
        "      --api-key-file FILE  API keys, one per line ('#' comments)\n"
        "      --max-body BYTES     request body limit (default 8M)\n"
        "      --shutdown-timeout S seconds to let requests finish on shutdown (default 30)\n"
        "      --header-timeout S   seconds for a request's line and headers to arrive (default "
        "10)\n"
        "      --body-timeout S     seconds for a request's body to arrive (default 30)\n"
        "      --idle-timeout S     seconds an idle keep-alive connection stays open (default 30)\n"
        "      --config FILE        JSON object of the settings above (keys: long flag names);\n"
        "                           flags given on the command line win\n"
        "      --quiet              no per-request log line\n\n"
        "Embedding models: --ctx is the longest input (default: the model's, <= 8192),\n"
        "--parallel the sequences per step (64), --max-step-tokens the tokens per step (2048).\n"
        "      --pooling P          the endpoint's pooling: cls, mean or last (default: the\n"
        "                           model's files', else mean)\n"
        "      --normalize, --no-normalize  the endpoint's L2 normalisation (default: the\n"
        "                           model's files', else off)\n\n"
        "Provisioned-throughput endpoints (Databricks' /api/2.0/serving-endpoints; see\n"
        "docs/PROVISIONING.md) and registered models live in the data directory; every\n"
        "stored endpoint is served. With no endpoints stored and no -m, the bundled model\n"
        "is served directly.\n"
        "      --data-dir DIR       the data directory (default $VKPT_DATA_DIR, else\n"
        "                           $XDG_DATA_HOME/vkpt, else ~/.local/share/vkpt)\n"
        "      --models-dir DIR     the system.ai catalog's folder (default DATA_DIR/models)\n"
        "      --autoscale-interval S  autoscaler tick (default 1)\n"
        "      --scale-down-delay S    lower demand this long before a replica goes (default 60)\n"
        "      --scale-to-zero-delay S idle this long before scaling to zero (default 900)\n"
        "      --calibration-seconds S time per concurrency level of a calibration (default 10)\n"
        "      --test-chunk-size N  TESTS ONLY: every model's chunk size is N tokens/s instead\n"
        "                           of the measured one\n");
}

enum {
    O_HOST = 256,
    O_PORT,
    O_DEVICE,
    O_CTX,
    O_PARALLEL,
    O_KV,
    O_STEP,
    O_NO_PREFIX,
    O_NO_BI,
    O_QUANT,
    O_NAME,
    O_TEMPLATE,
    O_SYSTEM,
    O_KEY,
    O_KEY_FILE,
    O_MAX_BODY,
    O_SHUTDOWN,
    O_HEADER_TO,
    O_BODY_TO,
    O_IDLE_TO,
    O_POOLING,
    O_NORMALIZE,
    O_NO_NORMALIZE,
    O_DATA_DIR,
    O_MODELS_DIR,
    O_ASI,
    O_SCALE_DOWN,
    O_STZ,
    O_CALIB_S,
    O_TEST_CHUNK,
    O_CONFIG,
    O_QUIET,
};

static const struct option long_opts[] = {{"model", required_argument, 0, 'm'},
                                          {"host", required_argument, 0, O_HOST},
                                          {"port", required_argument, 0, O_PORT},
                                          {"device", required_argument, 0, O_DEVICE},
                                          {"ctx", required_argument, 0, O_CTX},
                                          {"parallel", required_argument, 0, O_PARALLEL},
                                          {"kv-tokens", required_argument, 0, O_KV},
                                          {"max-step-tokens", required_argument, 0, O_STEP},
                                          {"no-prefix-cache", no_argument, 0, O_NO_PREFIX},
                                          {"no-batch-invariant", no_argument, 0, O_NO_BI},
                                          {"quantize", required_argument, 0, O_QUANT},
                                          {"served-model-name", required_argument, 0, O_NAME},
                                          {"chat-template", required_argument, 0, O_TEMPLATE},
                                          {"system-prompt", required_argument, 0, O_SYSTEM},
                                          {"api-key", required_argument, 0, O_KEY},
                                          {"api-key-file", required_argument, 0, O_KEY_FILE},
                                          {"max-body", required_argument, 0, O_MAX_BODY},
                                          {"shutdown-timeout", required_argument, 0, O_SHUTDOWN},
                                          {"header-timeout", required_argument, 0, O_HEADER_TO},
                                          {"body-timeout", required_argument, 0, O_BODY_TO},
                                          {"idle-timeout", required_argument, 0, O_IDLE_TO},
                                          {"pooling", required_argument, 0, O_POOLING},
                                          {"normalize", no_argument, 0, O_NORMALIZE},
                                          {"no-normalize", no_argument, 0, O_NO_NORMALIZE},
                                          {"data-dir", required_argument, 0, O_DATA_DIR},
                                          {"models-dir", required_argument, 0, O_MODELS_DIR},
                                          {"autoscale-interval", required_argument, 0, O_ASI},
                                          {"scale-down-delay", required_argument, 0, O_SCALE_DOWN},
                                          {"scale-to-zero-delay", required_argument, 0, O_STZ},
                                          {"calibration-seconds", required_argument, 0, O_CALIB_S},
                                          {"test-chunk-size", required_argument, 0, O_TEST_CHUNK},
                                          {"config", required_argument, 0, O_CONFIG},
                                          {"quiet", no_argument, 0, O_QUIET},
                                          {"help", no_argument, 0, 'h'},
                                          {0}};

#define MAX_KEYS 64

typedef struct serve_cfg {
    /* strings point into argv, the config JSON or owned buffers below */
    const char *model, *host, *device, *name, *template_file, *system_prompt, *key_file, *quantize;
    long port, ctx, parallel, kv_tokens, step_tokens, shutdown_s;
    long header_s, body_s, idle_s;
    uint64_t max_body;
    bool no_prefix, no_bi, quiet;
    int pooling, normalize; /* embedding models: enum vkpt_pooling, enum vkpt_normalize */
    const char *data_dir, *models_dir;
    double autoscale_s, scale_down_s, scale_zero_s, calib_s;
    long test_chunk;
    const char *keys[MAX_KEYS];
    size_t n_keys;
    bool set[O_QUIET + 1]; /* given as a flag */
} serve_cfg;

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return vkpt_fail(VKPT_EINVAL, "--%s takes an integer from %ld to %ld; got '%s'", flag, lo,
                         hi, s);
    *out = v;
    return 0;
}

static int parse_secs(const char *flag, const char *s, double lo, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo) || v > 864000)
        return vkpt_fail(VKPT_EINVAL, "--%s takes seconds (at least %g); got '%s'", flag, lo, s);
    *out = v;
    return 0;
}

static int add_key(serve_cfg *c, const char *k)
{
    if (!k || !k[0]) return vkpt_fail(VKPT_EINVAL, "an API key is empty");
    if (c->n_keys == MAX_KEYS) return vkpt_fail(VKPT_ERANGE, "at most %d API keys", MAX_KEYS);
    c->keys[c->n_keys++] = k;
    return 0;
}

/* Apply one setting (from a flag, or a config key when the flag was not
 * given). `v` is the value's text; booleans pass NULL. */
static int apply(serve_cfg *c, int id, const char *v)
{
    switch (id) {
    case 'm': c->model = v; return 0;
    case O_HOST: c->host = v; return 0;
    case O_PORT: return parse_long("port", v, 0, 65535, &c->port);
    case O_DEVICE: c->device = v; return 0;
    case O_CTX: return parse_long("ctx", v, 1, 1 << 24, &c->ctx);
    case O_PARALLEL: return parse_long("parallel", v, 1, 4096, &c->parallel);
    case O_KV: return parse_long("kv-tokens", v, 1, 1L << 30, &c->kv_tokens);
    case O_STEP: return parse_long("max-step-tokens", v, 1, 1 << 20, &c->step_tokens);
    case O_NO_PREFIX: c->no_prefix = true; return 0;
    case O_NO_BI: c->no_bi = true; return 0;
    case O_QUANT:
        if (strcasecmp(v, "q8_0") && strcasecmp(v, "q4_k"))
            return vkpt_fail(VKPT_EINVAL, "--quantize takes q8_0 or q4_k; got '%s'", v);
        c->quantize = v;
        return 0;
    case O_NAME: c->name = v; return 0;
    case O_TEMPLATE: c->template_file = v; return 0;
    case O_SYSTEM: c->system_prompt = v; return 0;
    case O_KEY: return add_key(c, v);
    case O_KEY_FILE: c->key_file = v; return 0;
    case O_MAX_BODY: {
        int err = tool_parse_size(v, &c->max_body);
        if (!err && (c->max_body < 1024 || c->max_body > (1ull << 31)))
            err = vkpt_fail(VKPT_EINVAL, "--max-body must be between 1K and 2G");
        return err;
    }
    case O_SHUTDOWN: return parse_long("shutdown-timeout", v, 1, 86400, &c->shutdown_s);
    case O_HEADER_TO: return parse_long("header-timeout", v, 1, 3600, &c->header_s);
    case O_BODY_TO: return parse_long("body-timeout", v, 1, 3600, &c->body_s);
    case O_IDLE_TO: return parse_long("idle-timeout", v, 1, 86400, &c->idle_s);
    case O_QUIET: c->quiet = true; return 0;
    case O_POOLING:
        c->pooling = vkpt_pooling_by_name(v);
        if (c->pooling <= 0)
            return vkpt_fail(VKPT_EINVAL, "--pooling takes cls, mean or last; got '%s'", v);
        return 0;
    case O_NORMALIZE: c->normalize = VKPT_NORMALIZE_ON; return 0;
    case O_DATA_DIR: c->data_dir = v; return 0;
    case O_MODELS_DIR: c->models_dir = v; return 0;
    case O_ASI: return parse_secs("autoscale-interval", v, 0.01, &c->autoscale_s);
    case O_SCALE_DOWN: return parse_secs("scale-down-delay", v, 0.01, &c->scale_down_s);
    case O_STZ: return parse_secs("scale-to-zero-delay", v, 0.01, &c->scale_zero_s);
    case O_CALIB_S: return parse_secs("calibration-seconds", v, 0.1, &c->calib_s);
    case O_TEST_CHUNK: return parse_long("test-chunk-size", v, 1, 1L << 40, &c->test_chunk);
    case O_NO_NORMALIZE: c->normalize = VKPT_NORMALIZE_OFF; return 0;
    }
    return vkpt_fail(VKPT_EINVAL, "unknown setting");
}

/* The whole file, NUL-terminated (free with free()); NULL with a detail. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        vkpt_fail(VKPT_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *nb = realloc(b, cap *= 2);
        if (!nb) {
            free(b);
            b = NULL;
        } else
            b = nb;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!b || bad) {
        free(b);
        vkpt_fail(bad ? VKPT_EIO : VKPT_ENOMEM, "%s: cannot read it", path);
        return NULL;
    }
    b[n] = 0;
    if (len) *len = n;
    return b;
}

static int option_id(const char *name, bool *has_arg)
{
    for (const struct option *o = long_opts; o->name; o++)
        if (!strcmp(o->name, name) && strcmp(name, "config") && strcmp(name, "help")) {
            *has_arg = o->has_arg == required_argument;
            return o->val;
        }
    return -1;
}

/* Settings from a JSON config file, for those not given as flags. */
static int load_config(serve_cfg *c, cJSON *root, const char *path)
{
    if (!cJSON_IsObject(root))
        return vkpt_fail(VKPT_EFORMAT, "%s: the config must be a JSON object", path);
    for (cJSON *kv = root->child; kv; kv = kv->next) {
        bool has_arg = false;
        int id = option_id(kv->string, &has_arg);
        if (id < 0)
            return vkpt_fail(VKPT_EINVAL, "%s: unknown setting \"%s\" (see vkpt serve --help)",
                             path, kv->string);
        if (c->set[id]) continue; /* the flag wins */
        if (!has_arg) {
            if (!cJSON_IsBool(kv))
                return vkpt_fail(VKPT_EINVAL, "%s: \"%s\" must be true or false", path, kv->string);
            if (cJSON_IsTrue(kv)) apply(c, id, NULL);
            continue;
        }
        if (id == O_KEY && cJSON_IsArray(kv)) {
            for (cJSON *k = kv->child; k; k = k->next) {
                if (!cJSON_IsString(k))
                    return vkpt_fail(VKPT_EINVAL, "%s: \"api-key\" must hold strings", path);
                int err = add_key(c, k->valuestring);
                if (err) return err;
            }
            continue;
        }
        char num[64];
        const char *v;
        if (cJSON_IsString(kv)) {
            v = kv->valuestring;
        } else if (cJSON_IsNumber(kv)) {
            snprintf(num, sizeof num, "%.0f", kv->valuedouble);
            if (kv->valuedouble != (double)(long long)kv->valuedouble)
                return vkpt_fail(VKPT_EINVAL, "%s: \"%s\" must be an integer", path, kv->string);
            v = num;
        } else {
            return vkpt_fail(VKPT_EINVAL, "%s: \"%s\" must be a string or a number", path,
                             kv->string);
        }
        /* numbers are copied by apply(); strings stay in the JSON tree */
        int err = apply(c, id, v);
        if (err) return err;
    }
    return 0;
}

/* API keys from a file: one per line, blank lines and '#' comments skipped.
 * The keys point into `text`. */
static int load_key_file(serve_cfg *c, char *text, const char *path)
{
    size_t before = c->n_keys;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        while (*line == ' ' || *line == '\t') line++;
        size_t n = strlen(line);
        while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
            line[--n] = 0;
        if (!n || line[0] == '#') continue;
        int err = add_key(c, line);
        if (err) return err;
    }
    if (c->n_keys == before) return vkpt_fail(VKPT_EINVAL, "%s has no API key", path);
    return 0;
}

/* The model id clients use: the file name without ".gguf", or the folder's
 * name. */
static void model_stem(const char *path, char *out, size_t cap)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t start = n;
    while (start && path[start - 1] != '/') start--;
    size_t len = n - start;
    if (len > 5 && !strncasecmp(path + start + len - 5, ".gguf", 5)) len -= 5;
    if (len >= cap) len = cap - 1;
    memcpy(out, path + start, len);
    out[len] = 0;
}

int cmd_serve(int argc, char **argv)
{
    serve_cfg c = {.port = -1};
    const char *config_path = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "m:h", long_opts, NULL)) != -1) {
        if (ch == 'h') {
            usage(stdout);
            return 0;
        }
        if (ch == '?') {
            usage(stderr);
            return 2;
        }
        if (ch == O_CONFIG) {
            config_path = optarg;
            continue;
        }
        int aerr = apply(&c, ch, optarg);
        if (aerr) {
            fprintf(stderr, "vkpt serve: %s\n", vkpt_errmsg(aerr));
            return 2;
        }
        c.set[ch] = true;
    }
    if (optind < argc) {
        fprintf(stderr, "vkpt serve: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }

    cJSON *config = NULL;
    char *key_text = NULL, *tpl = NULL;
    vkpt_instance *inst = NULL;
    vkpt_device *dev = NULL;
    vkpt_model *m = NULL;
    vkpt_engine *e = NULL;
    vkpt_embedder *emb = NULL;
    vkpt_server *srv = NULL;
    vkpt_store *store = NULL;
    int err = 0, status = 0;
    if (config_path) {
        char *text = read_file(config_path, NULL);
        if (!text) {
            err = VKPT_EIO;
            goto done;
        }
        const char *end = NULL;
        config = cJSON_ParseWithOpts(text, &end, 1);
        size_t at = end ? (size_t)(end - text) : 0;
        free(text);
        if (!config) {
            err = vkpt_fail(VKPT_EPARSE, "%s: not valid JSON (near byte %zu)", config_path, at);
            goto done;
        }
        if ((err = load_config(&c, config, config_path))) goto done;
    }
    if (c.key_file) {
        if (!(key_text = read_file(c.key_file, NULL))) {
            err = VKPT_EIO;
            goto done;
        }
        if ((err = load_key_file(&c, key_text, c.key_file))) goto done;
    }
    if (c.template_file && !(tpl = read_file(c.template_file, NULL))) {
        err = VKPT_EIO;
        goto done;
    }
    const char *model_path = c.model ? c.model : VKPT_DEFAULT_MODEL;
    char id[256];
    if (c.name)
        snprintf(id, sizeof id, "%s", c.name);
    else
        model_stem(model_path, id, sizeof id);

    /* Bind-time errors (port in use) should come before a long model load:
     * create and validate the server first. */
    vkpt_server_opts so = {
        .host = c.host,
        .port = (int)c.port,
        .api_keys = c.keys,
        .n_api_keys = c.n_keys,
        .max_body_bytes = (size_t)c.max_body,
        .shutdown_timeout_ms = (uint32_t)(c.shutdown_s * 1000),
        .header_timeout_ms = (uint32_t)(c.header_s * 1000),
        .body_timeout_ms = (uint32_t)(c.body_s * 1000),
        .idle_timeout_ms = (uint32_t)(c.idle_s * 1000),
        .handle_signals = true,
        .quiet = c.quiet,
    };
    if ((err = vkpt_server_create(&so, &srv))) goto done;

    /* the data directory: registered models (system.ai synced) and endpoints */
    char data_dir[4096], models_dir[4200];
    size_t n_stored = 0;
    err = vkpt_registry_data_dir(c.data_dir, data_dir, sizeof data_dir);
    if (!err) err = vkpt_registry_open(data_dir, &store);
    if (err && !c.data_dir) {
        /* only an explicit --data-dir must work: a read-only home still serves -m */
        VKPT_LOGW("serve: no data directory (%s): serving without endpoints", vkpt_errmsg(err));
        err = 0;
    }
    if (err) goto done;
    if (store) {
        snprintf(models_dir, sizeof models_dir, "%s/models", data_dir);
        int r = vkpt_registry_sync_system(store, VKPT_DEFAULT_MODEL,
                                          c.models_dir ? c.models_dir : models_dir);
        if (r < 0) {
            err = r;
            goto done;
        }
        n_stored = vkpt_server_stored_endpoints(store);
    }

    if ((err = tool_open_device(c.device, &inst, &dev))) goto done;
    if (store) {
        vkpt_server_endpoint_opts eo = {
            .store = store,
            .devices = &dev,
            .n_devices = 1,
            .n_ctx = (uint32_t)c.ctx,
            .max_seqs = (uint32_t)c.parallel,
            .kv_tokens = (uint32_t)c.kv_tokens,
            .max_step_tokens = (uint32_t)c.step_tokens,
            .no_prefix_cache = c.no_prefix,
            .batch_invariant = !c.no_bi,
            .autoscale_interval_s = c.autoscale_s,
            .scale_down_delay_s = c.scale_down_s,
            .scale_to_zero_delay_s = c.scale_zero_s,
            .calibration_level_s = c.calib_s,
            .test_chunk_size = (uint64_t)c.test_chunk,
        };
        if ((err = vkpt_server_enable_endpoints(srv, &eo))) goto done;
    }
    /* the model served directly: -m, or the bundled one when no endpoint is stored */
    if (!c.model && n_stored) {
        VKPT_LOGI("serve: %zu endpoint%s stored in %s; no model served directly (give -m for "
                  "one)",
                  n_stored, n_stored == 1 ? "" : "s", data_dir);
        goto start;
    }
    vkpt_model_opts mo = VKPT_MODEL_OPTS_DEFAULT;
    mo.n_ctx = (uint32_t)c.ctx;
    if (c.quantize) mo.quantize = !strcasecmp(c.quantize, "q8_0") ? 8 : 12;
    if ((err = vkpt_model_load(dev, model_path, &mo, &m))) goto done;
    const char *aliases[] = {model_path};
    vkpt_server_model_opts smo = {
        .chat_template = tpl,
        .system_prompt = c.system_prompt,
        .n_ctx = (uint32_t)c.ctx,
        .aliases = aliases,
        .n_aliases = 1,
    };
    if (!vkpt_model_get_info(m)->causal) {
        /* an encoder: served on /v1/embeddings */
        vkpt_embedder_opts bo = {
            .max_seq_len = (uint32_t)c.ctx,
            .max_seqs = (uint32_t)c.parallel,
            .max_batch_tokens = (uint32_t)c.step_tokens,
            .pooling = c.pooling,
            .normalize = c.normalize,
            .batch_invariant = !c.no_bi,
        };
        if ((err = vkpt_embedder_create(m, &bo, &emb))) goto done;
        if ((err = vkpt_server_add_embedder(srv, id, emb, &smo))) goto done;
        VKPT_LOGI("serve: %s is an embedding model: POST /v1/embeddings (%s pooling%s, %u dims)",
                  id, vkpt_pooling_name(vkpt_embedder_default_pooling(emb)),
                  vkpt_embedder_default_normalize(emb) ? ", L2-normalised" : "",
                  vkpt_embedder_dim(emb));
    } else {
        vkpt_engine_opts eo = {
            .n_ctx = (uint32_t)c.ctx,
            .max_seqs = (uint32_t)c.parallel,
            .max_step_tokens = (uint32_t)c.step_tokens,
            .kv_tokens = (uint32_t)c.kv_tokens,
            .no_prefix_cache = c.no_prefix,
            .batch_invariant = !c.no_bi,
        };
        if ((err = vkpt_engine_create(m, &eo, &e))) goto done;
        if ((err = vkpt_server_add_model(srv, id, e, &smo))) goto done;
    }
start:
    if ((err = vkpt_server_start(srv))) goto done;
    char what[300];
    if (m)
        snprintf(what, sizeof what, "model \"%s\"", id);
    else
        snprintf(what, sizeof what, "%zu stored endpoint%s", n_stored, n_stored == 1 ? "" : "s");
    fprintf(stderr, "vkpt serve: listening on http://%s%s%s:%d (%s%s%s%s)\n",
            c.host && strchr(c.host, ':') ? "[" : "", c.host ? c.host : "127.0.0.1",
            c.host && strchr(c.host, ':') ? "]" : "", vkpt_server_port(srv), what,
            store ? ", endpoints in " : "", store ? data_dir : "",
            c.n_keys ? ", API keys required" : "");
    status = vkpt_server_wait(srv);
done:
    vkpt_server_destroy(srv); /* before the engines: it holds requests on them */
    vkpt_engine_destroy(e);
    vkpt_embedder_destroy(emb);
    vkpt_model_destroy(m);
    vkpt_store_close(store);
    vkpt_device_destroy(dev);
    vkpt_instance_destroy(inst);
    cJSON_Delete(config);
    free(key_text);
    free(tpl);
    if (err) return tool_fail(err, "serve");
    return status ? tool_fail(status, "serve") : 0;
}
