/* json_libs_jansson.c -- jansson adapter for the json_libs benchmark.
 * json_loadb with the length and default flags: UTF-8 is always checked, trailing bytes and
 * \u0000 are refused. Objects are hash tables (insertion order kept). Serialising: json_dumps
 * with JSON_COMPACT, a new string per call.
 * Lookups use json_object_getn: json-c exports a json_object_get too, and in a program linked
 * with both, which one an unversioned reference binds to depends on link order.
 * Threading: none of its own; one thread. */
#include "json_libs_int.h"

#include <jansson.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *jansson_parse(const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t e;
    json_t *root = json_loadb(text, len, 0, &e);
    if (!root)
        jl_set_err(err, errlen, "%s at byte %d", e.text, e.position);
    return root;
}

static void jansson_release(void *tree)
{
    json_decref(tree);
}

static void *jansson_get(void *obj, const char *key)
{
    return json_object_getn(obj, key, strlen(key));
}

static size_t jansson_each(void *arr, jl_each_fn fn, void *ctx)
{
    if (!json_is_array((json_t *)arr))
        return 0;
    size_t n = json_array_size(arr);
    if (fn)
        for (size_t i = 0; i < n; i++)
            fn(json_array_get(arr, i), ctx);
    return n;
}

static const char *jansson_str(void *v, size_t *len)
{
    if (!json_is_string((json_t *)v))
        return NULL;
    *len = json_string_length(v);
    return json_string_value(v);
}

static bool jansson_num(void *v, double *out)
{
    if (!json_is_number((json_t *)v))
        return false;
    *out = json_number_value(v);
    return true;
}

static void jansson_describe_int(void *v, char *buf, size_t n)
{
    if (json_is_integer((json_t *)v))
        snprintf(buf, n, "%lld", (long long)json_integer_value(v));
    else if (json_is_real((json_t *)v))
        snprintf(buf, n, "real %.17g", json_real_value(v));
    else
        snprintf(buf, n, "not a number");
}

static void jansson_serialize(void *tree, jl_sink_fn sink, void *ctx)
{
    char *s = json_dumps(tree, JSON_COMPACT);
    if (!s) {
        fprintf(stderr, "json_libs: json_dumps failed\n");
        abort();
    }
    sink(s, strlen(s), ctx);
    free(s);
}

const json_ops jl_jansson_ops = {
    .id = "jansson",
    .label = "jansson",
    .version = jansson_version_str,
    .parse = jansson_parse,
    .release = jansson_release,
    .get = jansson_get,
    .each = jansson_each,
    .str = jansson_str,
    .num = jansson_num,
    .describe_int = jansson_describe_int,
    .serialize = jansson_serialize,
};
