/* json_libs_jsonc.c -- json-c adapter for the json_libs benchmark.
 * One reused json_tokener per configuration: json-c's defaults (no UTF-8 check, lenient
 * syntax) and the strict one ingest would use (JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8).
 * json_tokener_parse_ex with the length, then json_tokener_get_parse_end() to refuse trailing
 * bytes. Objects are hash tables. Serialising: json_object_to_json_string_length, whose text
 * lives in a buffer owned by the root and reused by the next call.
 * Threading: the tokeners are file globals; one thread. */
#include "json_libs_int.h"

#include <json-c/json.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

static json_tokener *jsonc_tok;        /* defaults: no UTF-8 check, lenient syntax */
static json_tokener *jsonc_strict_tok; /* JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8 */

static void *jsonc_parse_with(json_tokener *tok, const char *text, size_t len, char *err,
                              size_t errlen)
{
    if (len > INT_MAX) {
        jl_set_err(err, errlen, "document too large");
        return NULL;
    }
    json_tokener_reset(tok);
    json_object *root = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    if (!root || e != json_tokener_success) {
        jl_set_err(err, errlen, "%s",
                   e == json_tokener_continue ? "truncated document" : json_tokener_error_desc(e));
        json_object_put(root);
        return NULL;
    }
    size_t end = json_tokener_get_parse_end(tok);
    if (jl_skip_space(text, end, len) != len) {
        json_object_put(root);
        jl_set_err(err, errlen, "trailing bytes at %zu", end);
        return NULL;
    }
    return root;
}

static void *jsonc_parse(const char *text, size_t len, char *err, size_t errlen)
{
    return jsonc_parse_with(jsonc_tok, text, len, err, errlen);
}

static void *jsonc_strict_parse(const char *text, size_t len, char *err, size_t errlen)
{
    return jsonc_parse_with(jsonc_strict_tok, text, len, err, errlen);
}

static void jsonc_release(void *tree)
{
    json_object_put(tree);
}

static void *jsonc_get(void *obj, const char *key)
{
    json_object *v = NULL;
    if (!json_object_is_type(obj, json_type_object) || !json_object_object_get_ex(obj, key, &v))
        return NULL;
    return v;
}

static size_t jsonc_each(void *arr, jl_each_fn fn, void *ctx)
{
    if (!json_object_is_type(arr, json_type_array))
        return 0;
    size_t n = json_object_array_length(arr);
    if (fn)
        for (size_t i = 0; i < n; i++)
            fn(json_object_array_get_idx(arr, i), ctx);
    return n;
}

static const char *jsonc_str(void *v, size_t *len)
{
    if (!json_object_is_type(v, json_type_string))
        return NULL;
    *len = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

static bool jsonc_num(void *v, double *out)
{
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        return false;
    *out = json_object_get_double(v);
    return true;
}

static void jsonc_describe_int(void *v, char *buf, size_t n)
{
    if (json_object_is_type(v, json_type_int)) {
        errno = 0;
        long long i = (long long)json_object_get_int64(v);
        snprintf(buf, n, "%lld%s", i, errno ? " (errno set)" : "");
    } else if (json_object_is_type(v, json_type_double)) {
        snprintf(buf, n, "double %.17g", json_object_get_double(v));
    } else {
        snprintf(buf, n, "not a number");
    }
}

/* The text lives in a buffer owned by the root object and is reused by the next call. */
static void jsonc_serialize(void *tree, jl_sink_fn sink, void *ctx)
{
    size_t n = 0;
    const char *s = json_object_to_json_string_length(
        tree, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    if (!s) {
        fprintf(stderr, "json_libs: json_object_to_json_string_length failed\n");
        abort();
    }
    sink(s, n, ctx);
}

static bool jsonc_init(void)
{
    jsonc_tok = json_tokener_new();
    jsonc_strict_tok = json_tokener_new();
    if (!jsonc_tok || !jsonc_strict_tok)
        return false;
    json_tokener_set_flags(jsonc_strict_tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    return true;
}

static void jsonc_fini(void)
{
    if (jsonc_tok)
        json_tokener_free(jsonc_tok);
    if (jsonc_strict_tok)
        json_tokener_free(jsonc_strict_tok);
    jsonc_tok = jsonc_strict_tok = NULL;
}

const json_ops jl_jsonc_ops = {
    .id = "jsonc",
    .label = "json-c",
    .version = json_c_version,
    .init = jsonc_init,
    .fini = jsonc_fini,
    .parse = jsonc_parse,
    .release = jsonc_release,
    .get = jsonc_get,
    .each = jsonc_each,
    .str = jsonc_str,
    .num = jsonc_num,
    .describe_int = jsonc_describe_int,
    .serialize = jsonc_serialize,
};

const json_ops jl_jsonc_strict_ops = {
    .id = "jsonc_strict",
    .label = "json-c strict",
    .version = json_c_version,
    .parse = jsonc_strict_parse,
    .release = jsonc_release,
    .get = jsonc_get,
    .each = jsonc_each,
    .str = jsonc_str,
    .num = jsonc_num,
    .describe_int = jsonc_describe_int,
};
