/* vkpt template: render a model's chat template.
 *
 *   vkpt template -m MODEL < request.json
 *       request.json is a JSON object {messages, tools?, add_generation_prompt?,
 *       ...}; prints the rendered prompt exactly, with no newline added
 *   vkpt template -m MODEL --jsonl
 *       one object per line in, one JSON string per line out ({"error": ...}
 *       for a conversation the template refuses)
 *   --template FILE renders FILE's template instead of the model's.
 */
#define _GNU_SOURCE
#include "cmd.h"
#include "vkpt/tokenizer.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: vkpt template -m MODEL [--jsonl] [--template FILE]\n\n"
               "Reads a JSON object {messages, tools?, add_generation_prompt?, ...} on stdin\n"
               "and prints the prompt the model's chat template renders, exactly (no\n"
               "newline added). The tokenizer's bos_token, eos_token, ... are passed as\n"
               "Hugging Face's apply_chat_template passes them.\n\n"
               "  --jsonl          one object per line; one JSON string per line out, or\n"
               "                   {\"error\": MESSAGE} when rendering fails\n"
               "  --template FILE  render this template file (MODEL then only supplies\n"
               "                   the special-token strings, and may be omitted)\n");
}

static char *read_stream(FILE *f, size_t *n)
{
    size_t cap = 65536, len = 0;
    char *b = malloc(cap);
    while (b) {
        size_t k = fread(b + len, 1, cap - len - 1, f);
        len += k;
        if (k == 0) break;
        if (len + 1 == cap) {
            char *p = realloc(b, cap * 2);
            if (!p) {
                free(b);
                return NULL;
            }
            b = p;
            cap *= 2;
        }
    }
    if (b) b[len] = 0;
    *n = len;
    return b;
}

static int render(const vkpt_tokenizer *t, const vkpt_chat_template *tpl, const cJSON *vars,
                  char **out, size_t *n)
{
    if (!tpl) return vkpt_tokenizer_apply_chat_template(t, vars, out, n);
    return vkpt_chat_template_render(tpl, vars, out, n);
}

int cmd_template(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"jsonl", no_argument, 0, 'j'},
                                         {"template", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0}};
    const char *model = NULL, *tfile = NULL;
    bool jsonl = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm': model = optarg; break;
        case 'j': jsonl = true; break;
        case 't': tfile = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!model && !tfile) {
        usage(stderr);
        return 2;
    }
    vkpt_tokenizer *t = NULL;
    vkpt_chat_template *tpl = NULL;
    int err;
    if (model && (err = vkpt_tokenizer_create_file(model, &t))) return tool_fail(err, model);
    if (tfile) {
        FILE *f = fopen(tfile, "rb");
        size_t n = 0;
        char *src = f ? read_stream(f, &n) : NULL;
        if (f) fclose(f);
        if (!src) {
            vkpt_tokenizer_destroy(t);
            fprintf(stderr, "vkpt template: cannot read %s\n", tfile);
            return 1;
        }
        err = vkpt_chat_template_create(src, n, &tpl);
        free(src);
        if (err) {
            vkpt_tokenizer_destroy(t);
            return tool_fail(err, tfile);
        }
    }
    int rc = 0;
    if (!jsonl) {
        size_t n;
        char *in = read_stream(stdin, &n);
        cJSON *vars = in ? cJSON_ParseWithLength(in, n) : NULL;
        free(in);
        if (!cJSON_IsObject(vars)) {
            fprintf(stderr, "vkpt template: stdin is not a JSON object\n");
            rc = 1;
        } else {
            char *out;
            size_t len;
            if ((err = render(t, tpl, vars, &out, &len))) {
                rc = tool_fail(err, "template");
            } else {
                fwrite(out, 1, len, stdout);
                vkpt_free(out);
            }
        }
        cJSON_Delete(vars);
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        while ((len = getline(&line, &cap, stdin)) >= 0) {
            if (len <= 1) continue;
            cJSON *vars = cJSON_ParseWithLength(line, (size_t)len);
            cJSON *res = NULL;
            char *out = NULL;
            size_t on;
            if (!cJSON_IsObject(vars)) {
                res = cJSON_CreateObject();
                cJSON_AddStringToObject(res, "error", "line is not a JSON object");
            } else if ((err = render(t, tpl, vars, &out, &on))) {
                res = cJSON_CreateObject();
                cJSON_AddStringToObject(res, "error", vkpt_errmsg(err));
            } else {
                res = cJSON_CreateString(out);
            }
            vkpt_free(out);
            char *s = res ? cJSON_PrintUnformatted(res) : NULL;
            if (s) printf("%s\n", s);
            cJSON_free(s);
            cJSON_Delete(res);
            cJSON_Delete(vars);
        }
        free(line);
    }
    vkpt_chat_template_destroy(tpl);
    vkpt_tokenizer_destroy(t);
    fflush(stdout);
    return rc;
}
