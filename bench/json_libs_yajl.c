/* json_libs_yajl.c -- yajl (tree API) adapter for the json_libs benchmark.
 * yajl_tree_parse() takes a NUL-terminated string (so it runs strlen first) and fixes its own
 * configuration: UTF-8 checked, comments allowed. Objects are arrays of keys and values, found
 * by linear search. Every number keeps its text, and yajl also tries strtoll and strtod on it.
 * Serialising walks the tree into one reused yajl_gen (yajl has no tree serialiser); numbers
 * are written back from their original text.
 * Threading: the generator is a file global; one thread. */
#include "json_libs_int.h"

#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>
#include <yajl/yajl_version.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static yajl_gen yajl_out;

static void *yajl_parse_doc(const char *text, size_t len, char *err, size_t errlen)
{
    (void)len;
    yajl_val root = yajl_tree_parse(text, err, errlen);
    if (!root) {
        char *nl = strchr(err, '\n'); /* keep the first line, not the excerpt */
        if (nl)
            *nl = '\0';
        if (!err[0])
            jl_set_err(err, errlen, "parse error");
    }
    return root;
}

static void yajl_release(void *tree)
{
    yajl_tree_free(tree);
}

static void *yajl_get(void *obj, const char *key)
{
    yajl_val v = obj;
    if (!YAJL_IS_OBJECT(v))
        return NULL;
    for (size_t i = 0; i < v->u.object.len; i++)
        if (strcmp(v->u.object.keys[i], key) == 0)
            return v->u.object.values[i];
    return NULL;
}

static size_t yajl_each(void *arr, jl_each_fn fn, void *ctx)
{
    yajl_val v = arr;
    if (!YAJL_IS_ARRAY(v))
        return 0;
    if (fn)
        for (size_t i = 0; i < v->u.array.len; i++)
            fn(v->u.array.values[i], ctx);
    return v->u.array.len;
}

static const char *yajl_str(void *v, size_t *len)
{
    const char *s = YAJL_GET_STRING((yajl_val)v);
    if (s)
        *len = strlen(s);
    return s;
}

static bool yajl_num(void *v, double *out)
{
    yajl_val y = v;
    if (YAJL_IS_DOUBLE(y))
        *out = y->u.number.d;
    else if (YAJL_IS_INTEGER(y))
        *out = (double)y->u.number.i;
    else
        return false;
    return true;
}

static void yajl_describe_int(void *v, char *buf, size_t n)
{
    yajl_val y = v;
    if (YAJL_IS_INTEGER(y))
        snprintf(buf, n, "%lld", y->u.number.i);
    else if (YAJL_IS_NUMBER(y))
        snprintf(buf, n, "no int; text %s", y->u.number.r);
    else
        snprintf(buf, n, "not a number");
}

/* Writes v into g; true if the generator refused something. */
static bool yajl_emit(yajl_gen g, yajl_val v)
{
    bool bad = false;
    switch (v->type) {
    case yajl_t_string:
        bad |= yajl_gen_string(g, (const unsigned char *)v->u.string, strlen(v->u.string)) !=
               yajl_gen_status_ok;
        break;
    case yajl_t_number:
        bad |= yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r)) != yajl_gen_status_ok;
        break;
    case yajl_t_object:
        bad |= yajl_gen_map_open(g) != yajl_gen_status_ok;
        for (size_t i = 0; i < v->u.object.len; i++) {
            const char *k = v->u.object.keys[i];
            bad |= yajl_gen_string(g, (const unsigned char *)k, strlen(k)) != yajl_gen_status_ok;
            bad |= yajl_emit(g, v->u.object.values[i]);
        }
        bad |= yajl_gen_map_close(g) != yajl_gen_status_ok;
        break;
    case yajl_t_array:
        bad |= yajl_gen_array_open(g) != yajl_gen_status_ok;
        for (size_t i = 0; i < v->u.array.len; i++)
            bad |= yajl_emit(g, v->u.array.values[i]);
        bad |= yajl_gen_array_close(g) != yajl_gen_status_ok;
        break;
    case yajl_t_true:
    case yajl_t_false:
        bad |= yajl_gen_bool(g, v->type == yajl_t_true) != yajl_gen_status_ok;
        break;
    case yajl_t_null:
    case yajl_t_any:
        bad |= yajl_gen_null(g) != yajl_gen_status_ok;
        break;
    }
    return bad;
}

static void yajl_serialize(void *tree, jl_sink_fn sink, void *ctx)
{
    const unsigned char *s = NULL;
    size_t n = 0;
    yajl_gen_reset(yajl_out, NULL);
    yajl_gen_clear(yajl_out);
    if (yajl_emit(yajl_out, tree) || yajl_gen_get_buf(yajl_out, &s, &n) != yajl_gen_status_ok) {
        fprintf(stderr, "json_libs: yajl_gen failed\n");
        abort();
    }
    sink((const char *)s, n, ctx);
}

static bool yajl_init(void)
{
    yajl_out = yajl_gen_alloc(NULL);
    return yajl_out != NULL;
}

static void yajl_fini(void)
{
    if (yajl_out)
        yajl_gen_free(yajl_out);
    yajl_out = NULL;
}

static const char *yajl_version_str(void)
{
    static char text[32];
    int v = yajl_version();
    snprintf(text, sizeof text, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
    return text;
}

const json_ops jl_yajl_ops = {
    .id = "yajl",
    .label = "yajl tree",
    .version = yajl_version_str,
    .init = yajl_init,
    .fini = yajl_fini,
    .parse = yajl_parse_doc,
    .release = yajl_release,
    .get = yajl_get,
    .each = yajl_each,
    .str = yajl_str,
    .num = yajl_num,
    .describe_int = yajl_describe_int,
    .serialize = yajl_serialize,
};
