/* json_libs_int.h -- what json_libs.c needs from each library adapter, and what the adapters
 * share. One adapter per library in its own file: json-c's and jansson's headers declare
 * json_object_get() with different signatures, so they cannot meet in one translation unit. */
#ifndef EVALBUS_BENCH_JSON_LIBS_INT_H
#define EVALBUS_BENCH_JSON_LIBS_INT_H

#include <stdbool.h>
#include <stddef.h>

typedef void (*jl_each_fn)(void *item, void *ctx);
typedef void (*jl_sink_fn)(const char *s, size_t n, void *ctx);

/* One library, called the way ingest would call it. Trees and values are the library's own
 * types behind void *. get, str and num return NULL / false when the value has another type;
 * none of them is given NULL. */
typedef struct json_ops {
    const char *id;    /* BENCH name part: json_parse_<id>_<case> */
    const char *label; /* table heading */
    /* Library version, for the report. */
    const char *(*version)(void);
    /* Sets up the library's reusable state; NULL if it has none. Returns false on failure.
     * fini (may be NULL) releases it and is safe to call after a failed or absent init. */
    bool (*init)(void);
    void (*fini)(void);
    /* Parses text[0..len) (text[len] is NUL) as one document; bytes other than whitespace
     * after it are an error. Returns the tree, which release() frees, or NULL with a one-line
     * message in err. */
    void *(*parse)(const char *text, size_t len, char *err, size_t errlen);
    void (*release)(void *tree);
    void *(*get)(void *obj, const char *key);
    /* Calls fn (if not NULL) on each element in order; returns the count (0 if not an array). */
    size_t (*each)(void *arr, jl_each_fn fn, void *ctx);
    /* The decoded bytes of a string and their count; they stay owned by the tree. */
    const char *(*str)(void *v, size_t *len);
    bool (*num)(void *v, double *out);
    /* Writes into buf what a caller reads as an integer from v. */
    void (*describe_int)(void *v, char *buf, size_t n);
    /* Hands the compact text of tree to sink, then releases it; aborts if the library fails.
     * NULL for variants that share their base library's serialiser. */
    void (*serialize)(void *tree, jl_sink_fn sink, void *ctx);
} json_ops;

extern const json_ops jl_cjson_ops;
extern const json_ops jl_cjson_checked_ops; /* cJSON behind jl_precheck() */
extern const json_ops jl_yajl_ops;
extern const json_ops jl_jsonc_ops;        /* json-c defaults */
extern const json_ops jl_jsonc_strict_ops; /* JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8 */
extern const json_ops jl_jansson_ops;

/* snprintf into err. */
void jl_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The first position at or after pos in text[0..len) that is not JSON whitespace. */
size_t jl_skip_space(const char *text, size_t pos, size_t len);
/* What ingest must check before cJSON, which checks none of it: the JSON body s[0..n) is
 * well-formed UTF-8 (RFC 3629), has no raw control byte inside a string (cJSON accepts them)
 * and no \u0000 escape (cJSON cuts the string there). Returns the offset of the first offending
 * byte with *why set to a short reason, or n if there is none. */
size_t jl_precheck(const unsigned char *s, size_t n, const char **why);

#endif
