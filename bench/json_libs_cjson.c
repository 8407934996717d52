/* json_libs_cjson.c -- cJSON adapter for the json_libs benchmark.
 * cJSON_ParseWithLengthOpts with the length, then a check that only whitespace follows (cJSON
 * itself ignores trailing bytes unless the length counts the NUL). cJSON does not check UTF-8,
 * accepts raw control bytes in strings and cuts strings at \u0000, so the cjson_checked
 * variant runs jl_precheck() over the body first: what ingest would have to do around cJSON.
 * Numbers are doubles only. Serialising: cJSON_PrintUnformatted, a new string per call.
 * Threading: every parse writes cJSON's global error position; one thread. */
#include "json_libs_int.h"

#include <cJSON.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *cjson_parse(const char *text, size_t len, char *err, size_t errlen)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        jl_set_err(err, errlen, "syntax error at byte %td", end ? end - text : (ptrdiff_t)-1);
        return NULL;
    }
    if (jl_skip_space(text, (size_t)(end - text), len) != len) {
        cJSON_Delete(root);
        jl_set_err(err, errlen, "trailing bytes at %td", end - text);
        return NULL;
    }
    return root;
}

/* cJSON behind jl_precheck(): what ingest would run if it chose cJSON. */
static void *cjson_checked_parse(const char *text, size_t len, char *err, size_t errlen)
{
    const char *why = NULL;
    size_t bad = jl_precheck((const unsigned char *)text, len, &why);
    if (bad != len) {
        jl_set_err(err, errlen, "%s at byte %zu", why, bad);
        return NULL;
    }
    return cjson_parse(text, len, err, errlen);
}

static void cjson_release(void *tree)
{
    cJSON_Delete(tree);
}

static void *cjson_get(void *obj, const char *key)
{
    return cJSON_IsObject((cJSON *)obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

static size_t cjson_each(void *arr, jl_each_fn fn, void *ctx)
{
    size_t n = 0;
    cJSON *item;
    if (!cJSON_IsArray((cJSON *)arr))
        return 0;
    cJSON_ArrayForEach(item, (cJSON *)arr)
    {
        if (fn)
            fn(item, ctx);
        n++;
    }
    return n;
}

static const char *cjson_str(void *v, size_t *len)
{
    if (!cJSON_IsString((cJSON *)v))
        return NULL;
    *len = strlen(((cJSON *)v)->valuestring);
    return ((cJSON *)v)->valuestring;
}

static bool cjson_num(void *v, double *out)
{
    if (!cJSON_IsNumber((cJSON *)v))
        return false;
    *out = ((cJSON *)v)->valuedouble;
    return true;
}

static void cjson_describe_int(void *v, char *buf, size_t n)
{
    if (cJSON_IsNumber((cJSON *)v))
        snprintf(buf, n, "%.17g", ((cJSON *)v)->valuedouble); /* cJSON keeps only a double */
    else
        snprintf(buf, n, "not a number");
}

static void cjson_serialize(void *tree, jl_sink_fn sink, void *ctx)
{
    char *s = cJSON_PrintUnformatted(tree);
    if (!s) {
        fprintf(stderr, "json_libs: cJSON_PrintUnformatted failed\n");
        abort();
    }
    sink(s, strlen(s), ctx);
    cJSON_free(s);
}

const json_ops jl_cjson_ops = {
    .id = "cjson",
    .label = "cJSON",
    .version = cJSON_Version,
    .parse = cjson_parse,
    .release = cjson_release,
    .get = cjson_get,
    .each = cjson_each,
    .str = cjson_str,
    .num = cjson_num,
    .describe_int = cjson_describe_int,
    .serialize = cjson_serialize,
};

const json_ops jl_cjson_checked_ops = {
    .id = "cjson_checked",
    .label = "cJSON+precheck",
    .version = cJSON_Version,
    .parse = cjson_checked_parse,
    .release = cjson_release,
    .get = cjson_get,
    .each = cjson_each,
    .str = cjson_str,
    .num = cjson_num,
    .describe_int = cjson_describe_int,
};
