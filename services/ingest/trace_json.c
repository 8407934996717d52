/* trace_json.c -- the JSON batch API's trace objects -> evalbus.v1.Trace, the same rules for
 * traces that arrive as protobuf, and the JSON text of messages, tool calls, observations and
 * whole traces for the query API.
 *
 * Parsing walks each object's members once (scan_members): a member whose name the format
 * knows is remembered by field index, a name seen twice is refused, a null member counts as
 * absent, and any other member is copied into the owner's "extras" object, which becomes the
 * trace's (or observation's) attributes_json, so nothing a client sends is silently dropped.
 * Unknown members of the owner itself keep their names; unknown members of nested objects are
 * grouped under their path relative to the owner ("usage", "input.messages[0]", ...).
 * Errors name the field path ("observations[2].input.messages[0].role ..."), built in a fixed
 * buffer as the walk descends; only field names of the format and indices enter the path.
 *
 * Validation of a protobuf Trace (ingest_trace_validate) walks the tree with the same path and
 * the same checks (check_text, check_enum, ...), so JSON and NATS errors read alike.
 *
 * Output functions write JSON by hand into an eb_buf: strings are escaped with invalid UTF-8
 * replaced by U+FFFD, numbers are printed without the locale's decimal point, and stored JSON
 * texts (metadata, attributes, content parts) are parsed and re-printed, or written as strings
 * when they are not valid JSON, so that the output is valid JSON for any tree.
 *
 * Ownership: trees built here are heap trees (malloc'd strings, arrays and sub-messages) freed
 * with evalbus__v1__trace__free_unpacked(t, NULL); on error the partial tree is freed here.
 * Repeated fields are allocated at their final size and their count grows as elements are
 * filled, so a partial tree is always freeable. Threading: no shared state; eb_error() detail is
 * per thread. */
#include "trace_json.h"

#include "evalbus/crypto.h"
#include "evalbus/json.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SAFE_INT 9007199254740992.0 /* 2^53: integers a double holds exactly */
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---------------------------------------------------------------------------------------------
 * Walk context: the field path for errors and the owner's unknown members. */

typedef struct walk_ctx {
    const ingest_limits *lim;
    char path[512];
    size_t len;
    size_t owner_base; /* path offset where names relative to the owner begin */
    cJSON *extras;     /* unknown members of the current owner, or NULL */
} walk_ctx;

enum text_kind {
    TEXT_FREE,  /* any UTF-8, up to max_field_bytes */
    TEXT_LABEL, /* no control characters, up to max_id_bytes */
    TEXT_ID     /* a label that must not be empty */
};

static void *need(void *p)
{
    if (!p) {
        fputs("evalbus: out of memory in cJSON\n", stderr);
        abort();
    }
    return p;
}

/* Appends n bytes of s to the path, cut where the buffer ends (the path stays terminated). */
static void path_put(walk_ctx *c, const char *s, size_t n)
{
    size_t room = sizeof c->path - c->len - 1;

    if (n > room)
        n = room;
    memcpy(c->path + c->len, s, n);
    c->len += n;
    c->path[c->len] = '\0';
}

static size_t path_push_key(walk_ctx *c, const char *key)
{
    size_t old = c->len;

    if (c->len)
        path_put(c, ".", 1);
    path_put(c, key, strlen(key));
    return old;
}

static size_t path_push_index(walk_ctx *c, size_t i)
{
    size_t old = c->len;
    char buf[24], *p = buf + sizeof buf;

    *--p = ']';
    do
        *--p = (char)('0' + i % 10);
    while ((i /= 10) != 0);
    *--p = '[';
    path_put(c, p, (size_t)(buf + sizeof buf - p));
    return old;
}

static void path_pop(walk_ctx *c, size_t old)
{
    c->len = old;
    c->path[old] = '\0';
}

static eb_status fail(walk_ctx *c, eb_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records "<path> <message>" as the eb_error detail and returns code. */
static eb_status fail(walk_ctx *c, eb_status code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof msg, fmt, ap) >= (int)sizeof msg)
        eb_utf8_trim_cut(msg);
    va_end(ap);
    return eb_error(code, "%s %s", c->len ? c->path : "trace", msg);
}

/* ---------------------------------------------------------------------------------------------
 * Checks shared by the JSON parser and the protobuf validator. */

size_t ingest_control_len(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;

    if (n > 0 && (p[0] < 0x20 || p[0] == 0x7f))
        return 1;
    if (n > 1 && p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f)
        return 2; /* C1 controls U+0080..U+009F */
    return 0;
}

bool ingest_has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ingest_control_len(s + i, n - i))
            return true;
    return false;
}

/* s is the value at the current path. */
static eb_status check_text(walk_ctx *c, const char *s, enum text_kind kind)
{
    size_t n = strlen(s);
    size_t max = kind == TEXT_FREE ? c->lim->max_field_bytes : c->lim->max_id_bytes;

    if (n > max)
        return fail(c, EB_ERR_TOO_LARGE, "is longer than %zu bytes (%s)", max,
                    kind == TEXT_FREE ? "max-field-bytes" : "max-id-bytes");
    if (!eb_utf8_valid(s, n))
        return fail(c, EB_ERR_INVALID, "is not valid UTF-8");
    if (kind == TEXT_ID && n == 0)
        return fail(c, EB_ERR_INVALID, "must not be empty");
    if (kind != TEXT_FREE && ingest_has_control(s, n))
        return fail(c, EB_ERR_INVALID, "must not contain control characters");
    return EB_OK;
}

/* A trace id is read at /api/v1/traces/{id}, where "/" in it may be written %2F: the edge
 * decodes that and resolves "." and ".." segments before it routes ("../x" would be asked
 * for at /api/v1/x), so an id with such a segment could never be read through it. */
static eb_status check_trace_id(walk_ctx *c, const char *id)
{
    for (const char *seg = id; seg; seg = strchr(seg, '/') ? strchr(seg, '/') + 1 : NULL) {
        size_t n = strcspn(seg, "/");

        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return fail(c, EB_ERR_INVALID,
                        "id must not be '.' or '..', nor have such a segment between slashes (no "
                        "URL can name it)");
    }
    return EB_OK;
}

static const char *const status_values[] = {"ok", "error", "unset", NULL};
static const char *const role_values[] = {"system",    "user",     "assistant", "tool",
                                          "developer", "function", NULL};
static const char *const obs_type_values[] = {"span", "generation", "event", "tool", NULL};

static eb_status check_enum(walk_ctx *c, const char *s, const char *const *values)
{
    char list[128] = "";

    for (size_t i = 0; values[i]; i++)
        if (strcmp(s, values[i]) == 0)
            return EB_OK;
    for (size_t i = 0; values[i]; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, values[i], sizeof list - strlen(list) - 1);
    }
    return fail(c, EB_ERR_INVALID, "must be one of %s", list);
}

/* The path is the owner of the two times. */
static eb_status check_order(walk_ctx *c, bool has_start, long long start, bool has_end,
                             long long end)
{
    eb_status st = EB_OK;
    size_t mark = c->len;

    if (has_start && has_end && start != 0 && end != 0 && end < start) {
        path_push_key(c, "end_time");
        st = fail(c, EB_ERR_INVALID, "is before start_time");
        path_pop(c, mark);
    }
    return st;
}

/* Whether s is the text of a JSON object; if not, why[] says what is wrong with it ("" when it
 * is JSON of another kind). */
static bool json_text_is_object(const char *s, char *why, size_t len)
{
    cJSON *o = NULL;
    eb_status st = eb_json_parse_object(s, strlen(s), &o);
    const char *twice = st == EB_OK ? eb_json_repeated_member(o) : NULL;

    why[0] = '\0';
    if (twice) /* PostgreSQL would keep one of the two: refused, as the JSON API does */
        snprintf(why, len, ": the member '%.*s' appears twice in an object",
                 eb_utf8_prefix_len(twice, 100), twice);
    else if (st != EB_OK && !strstr(eb_error_message(), "must be a JSON object"))
        snprintf(why, len, ": %s", eb_error_message());
    cJSON_Delete(o);
    eb_error_clear();
    return st == EB_OK && !twice;
}

/* ---------------------------------------------------------------------------------------------
 * Time. Days from 1970-01-01 by the proleptic Gregorian calendar, in 400-year eras. */

static long long days_from_civil(long long y, unsigned m, unsigned d)
{
    long long era;
    unsigned yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static void civil_from_days(long long z, long long *y, unsigned *m, unsigned *d)
{
    long long era;
    unsigned doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (long long)yoe + era * 400 + (*m <= 2);
}

static unsigned num(const char *s, int n)
{
    unsigned v = 0;

    for (int i = 0; i < n; i++)
        v = v * 10 + (unsigned)(s[i] - '0');
    return v;
}

bool ingest_time_instant(const char *s, long long *secs, long long *nanos)
{
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    long long y, t, frac = 0;
    unsigned mo, d, dim;
    const char *p;
    int digits = 0;

    if (!s || !eb_rfc3339_valid(s))
        return false;
    y = num(s, 4);
    mo = num(s + 5, 2);
    d = num(s + 8, 2);
    dim = mdays[mo - 1] + (mo == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0));
    if (d > dim)
        return false;
    t = days_from_civil(y, mo, d) * 86400 + num(s + 11, 2) * 3600LL + num(s + 14, 2) * 60LL +
        num(s + 17, 2);
    p = s + 19;
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++)
            if (digits < 9) {
                frac = frac * 10 + (*p - '0');
                digits++;
            }
        for (; digits < 9; digits++)
            frac *= 10;
    }
    if (*p == '+' || *p == '-') {
        long long off = num(p + 1, 2) * 3600LL + num(p + 4, 2) * 60LL;
        t += *p == '+' ? -off : off;
    }
    *secs = t;
    *nanos = frac;
    return true;
}

bool ingest_time_parse(const char *s, long long *unix_nano)
{
    long long secs, frac;

    if (!ingest_time_instant(s, &secs, &frac))
        return false;
    /* nanoseconds must fit int64, and 0 means "unknown" in trace.proto */
    if (secs < 0 || secs > INT64_MAX / 1000000000LL - 1)
        return false;
    if (secs == 0 && frac < 1000) /* kept to the microsecond: it would read back as 0 */
        return false;
    *unix_nano = secs * 1000000000LL + frac;
    return true;
}

/* Writes v as exactly width decimal digits (v < 10^width). */
static char *put_digits(char *p, long long v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

void ingest_time_text(long long unix_nano, char *buf, size_t len)
{
    long long secs, nanos, days, rem, y;
    unsigned mo, d;
    char *p = buf;

    if (len == 0)
        return;
    buf[0] = '\0';
    if (unix_nano == 0)
        return;
    secs = unix_nano / 1000000000LL;
    nanos = unix_nano % 1000000000LL;
    if (nanos < 0) {
        nanos += 1000000000LL;
        secs--;
    }
    days = secs / 86400;
    rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    civil_from_days(days, &y, &mo, &d);
    /* nanoseconds in a long long reach the years 1677 to 2262: four digits always do; the
     * writer formats several times per row: by hand, not through printf */
    if (len < 40)
        return;
    p = put_digits(p, y, 4);
    *p++ = '-';
    p = put_digits(p, mo, 2);
    *p++ = '-';
    p = put_digits(p, d, 2);
    *p++ = 'T';
    p = put_digits(p, rem / 3600, 2);
    *p++ = ':';
    p = put_digits(p, rem / 60 % 60, 2);
    *p++ = ':';
    p = put_digits(p, rem % 60, 2);
    /* microseconds, as PostgreSQL keeps them (and as every time the API returns is written):
     * the nanoseconds below are cut off, never rounded into the next second */
    *p++ = '.';
    p = put_digits(p, nanos / 1000, 6);
    *p++ = 'Z';
    *p = '\0';
}

/* ---------------------------------------------------------------------------------------------
 * JSON input: member scanning and typed fields. */

/* The bytes a number takes as printed: its exact text when it has one, the digits of an
 * integer, else at most 24 ("-1.2345678901234567e-308"). */
static size_t number_size(const cJSON *v)
{
    double d = fabs(v->valuedouble);
    size_t n = v->valuedouble < 0 ? 2 : 1;

    if (v->valuestring)
        return strlen(v->valuestring);
    if (d != floor(d) || d >= 1e15)
        return 24;
    for (; d >= 10; d /= 10)
        n++;
    return n;
}

/* Lower bound of the compact JSON size of v (string bytes counted unescaped); stops counting
 * once the total passes limit. */
static size_t json_size(const cJSON *v, size_t limit)
{
    size_t n = 0;
    const cJSON *e;

    if (cJSON_IsString(v))
        return strlen(v->valuestring) + 2;
    if (cJSON_IsNumber(v))
        return number_size(v);
    if (cJSON_IsTrue(v) || cJSON_IsNull(v))
        return 4;
    if (cJSON_IsFalse(v))
        return 5;
    n = 2;
    for (e = v->child; e && n <= limit; e = e->next) {
        n += json_size(e, limit) + 1;
        if (e->string)
            n += strlen(e->string) + 3;
    }
    return n;
}

/* Adds unknown member m to the owner's extras: directly when the current path is the owner,
 * else under the key of the path relative to the owner. */
static eb_status add_extra(walk_ctx *c, const cJSON *m)
{
    cJSON *dst;

    if (!c->extras)
        c->extras = need(cJSON_CreateObject());
    if (c->len <= c->owner_base) {
        dst = c->extras;
    } else {
        const char *rel = c->path + c->owner_base;
        dst = cJSON_GetObjectItemCaseSensitive(c->extras, rel);
        if (!dst) {
            dst = need(cJSON_CreateObject());
            cJSON_AddItemToObject(c->extras, rel, dst);
        } else if (!cJSON_IsObject(dst)) {
            return fail(c, EB_ERR_INVALID,
                        "cannot be kept in attributes: a member of the same "
                        "name was sent");
        }
    }
    if (cJSON_GetObjectItemCaseSensitive(dst, m->string)) {
        return fail(c, EB_ERR_INVALID, "has the member '%.*s' twice",
                    eb_utf8_prefix_len(m->string, 64), m->string);
    }
    cJSON_AddItemToObject(dst, m->string, need(cJSON_Duplicate(m, true)));
    return EB_OK;
}

/* Reads the members of obj (the value at the current path): vals[i] gets the member named
 * names[i] (NULL when absent or null); unknown non-null members go to the extras when
 * keep_extras is set. A known name given twice is refused. */
static eb_status scan_members(walk_ctx *c, const cJSON *obj, const char *const *names, size_t n,
                              const cJSON **vals, bool keep_extras)
{
    uint64_t seen = 0;
    const cJSON *m;

    for (size_t i = 0; i < n; i++)
        vals[i] = NULL;
    cJSON_ArrayForEach(m, obj)
    {
        size_t i = 0;

        if (!m->string)
            continue;
        /* the first byte settles most comparisons without a call */
        while (i < n && (m->string[0] != names[i][0] || strcmp(m->string, names[i]) != 0))
            i++;
        if (i < n) {
            if (seen & ((uint64_t)1 << i))
                return fail(c, EB_ERR_INVALID, "has the member '%s' twice", names[i]);
            seen |= (uint64_t)1 << i;
            vals[i] = cJSON_IsNull(m) ? NULL : m;
        } else if (keep_extras && !cJSON_IsNull(m)) {
            eb_status st = add_extra(c, m);
            if (st != EB_OK)
                return st;
        }
    }
    return EB_OK;
}

static eb_status str_field(walk_ctx *c, const cJSON *v, const char *key, enum text_kind kind,
                           char **out)
{
    eb_status st = EB_OK;
    size_t mark;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, key);
    if (!cJSON_IsString(v)) {
        st = fail(c, EB_ERR_INVALID, "must be a string");
        goto cleanup;
    }
    st = check_text(c, v->valuestring, kind);
    if (st != EB_OK)
        goto cleanup;
    *out = eb_strdup(v->valuestring);
cleanup:
    path_pop(c, mark);
    return st;
}

static eb_status enum_field(walk_ctx *c, const cJSON *v, const char *key, const char *const *values,
                            const char *dflt, char **out)
{
    eb_status st = EB_OK;
    size_t mark = path_push_key(c, key);

    if (!v) {
        *out = dflt ? eb_strdup(dflt) : NULL;
        goto cleanup;
    }
    if (!cJSON_IsString(v)) {
        st = check_enum(c, "", values);
        goto cleanup;
    }
    st = check_enum(c, v->valuestring, values);
    if (st == EB_OK)
        *out = eb_strdup(v->valuestring);
cleanup:
    path_pop(c, mark);
    return st;
}

/* A JSON value stored as compact text (metadata, object arguments, non-string results). */
static eb_status json_text_field(walk_ctx *c, const cJSON *v, size_t max, const char *limit_name,
                                 char **out)
{
    const char *twice = eb_json_repeated_member(v);
    char *s;
    size_t n;

    if (twice)
        return fail(c, EB_ERR_INVALID, "has an object with the member '%s' twice", twice);
    s = eb_json_print(v);
    n = strlen(s);

    if (n > max) {
        free(s);
        return fail(c, EB_ERR_TOO_LARGE, "is larger than %zu bytes as JSON (%s)", max, limit_name);
    }
    if (!eb_utf8_valid(s, n)) { /* only when the tree was not parsed with eb_json_parse_object */
        free(s);
        return fail(c, EB_ERR_INVALID, "is not valid UTF-8");
    }
    *out = s;
    return EB_OK;
}

static eb_status metadata_field(walk_ctx *c, const cJSON *v, char **out)
{
    eb_status st = EB_OK;
    size_t mark;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, "metadata");
    if (!cJSON_IsObject(v))
        st = fail(c, EB_ERR_INVALID, "must be an object");
    else
        st = json_text_field(c, v, c->lim->max_metadata_bytes, "max-metadata-bytes", out);
    path_pop(c, mark);
    return st;
}

static eb_status count_field(walk_ctx *c, const cJSON *v, const char *key, protobuf_c_boolean *has,
                             int64_t *out)
{
    eb_status st = EB_OK;
    size_t mark;
    double d;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, key);
    d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    /* a fraction a double cannot hold (4503599627370496.5, 1.0000000000000001) reads as an
     * integer: the text kept for such a number tells */
    if (!isfinite(d) || d < 0 || d != floor(d) ||
        (v->valuestring && !eb_json_number_whole(v->valuestring))) {
        st = fail(c, EB_ERR_INVALID, "must be a non-negative integer");
    } else if (d >= MAX_SAFE_INT) {
        /* 2^53 + 1 reads as 2^53: from 2^53 on, the number sent may not be the one parsed */
        st = fail(c, EB_ERR_INVALID, "must be below 2^53");
    } else {
        *out = (int64_t)d;
        *has = 1;
    }
    path_pop(c, mark);
    return st;
}

static eb_status amount_field(walk_ctx *c, const cJSON *v, const char *key, protobuf_c_boolean *has,
                              double *out)
{
    eb_status st = EB_OK;
    size_t mark;
    double d;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, key);
    d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!isfinite(d) || d < 0) {
        st = fail(c, EB_ERR_INVALID, "must be a non-negative number");
    } else if (eb_json_number_underflows(v)) {
        st = fail(c, EB_ERR_INVALID, "is too close to 0 to be stored (a double holds it as 0)");
    } else {
        *out = d;
        *has = 1;
    }
    path_pop(c, mark);
    return st;
}

static eb_status time_field(walk_ctx *c, const cJSON *v, const char *key, protobuf_c_boolean *has,
                            int64_t *out)
{
    eb_status st = EB_OK;
    size_t mark;
    long long ns = 0;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, key);
    if (!cJSON_IsString(v) || !ingest_time_parse(v->valuestring, &ns)) {
        st = fail(c, EB_ERR_INVALID,
                  "must be an RFC 3339 timestamp such as 2026-11-22T10:00:00Z (years 1970 to "
                  "2262)");
    } else {
        *out = ns;
        *has = 1;
    }
    path_pop(c, mark);
    return st;
}

/* v must be an array of at most max items; *n gets its size. The path is the array. */
static eb_status check_array(walk_ctx *c, const cJSON *v, size_t max, const char *limit_name,
                             size_t *n)
{
    size_t count = 0;
    const cJSON *e;

    if (!cJSON_IsArray(v))
        return fail(c, EB_ERR_INVALID, "must be an array");
    cJSON_ArrayForEach(e, v)
    {
        if (++count > max)
            return fail(c, EB_ERR_TOO_LARGE, "has more than %zu items (%s)", max, limit_name);
    }
    *n = count;
    return EB_OK;
}

/* ---------------------------------------------------------------------------------------------
 * JSON input: tool calls, content parts, messages, input / output, usage. */

static const char *const tool_call_fields[] = {"id",        "type",   "function",   "name",
                                               "arguments", "result", "start_time", "end_time"};
enum { TC_ID, TC_TYPE, TC_FUNCTION, TC_NAME, TC_ARGUMENTS, TC_RESULT, TC_START, TC_END, TC_N };
_Static_assert(ARRAY_LEN(tool_call_fields) == TC_N, "tool_call_fields");

static const char *const function_fields[] = {"name", "arguments"};

static eb_status arguments_field(walk_ctx *c, const cJSON *v, char **out)
{
    eb_status st = EB_OK;
    size_t mark;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, "arguments");
    if (cJSON_IsString(v)) {
        st = check_text(c, v->valuestring, TEXT_FREE);
        if (st == EB_OK)
            *out = eb_strdup(v->valuestring);
    } else if (cJSON_IsObject(v)) {
        st = json_text_field(c, v, c->lim->max_field_bytes, "max-field-bytes", out);
    } else {
        st = fail(c, EB_ERR_INVALID, "must be a string or an object");
    }
    path_pop(c, mark);
    return st;
}

/* The path is the tool call. */
static eb_status parse_tool_call(walk_ctx *c, const cJSON *v, Evalbus__V1__ToolCall *tc)
{
    const cJSON *f[TC_N], *fn[2] = {NULL, NULL}, *result;
    eb_status st = EB_OK;
    size_t mark = c->len;

    if (!cJSON_IsObject(v))
        return fail(c, EB_ERR_INVALID, "must be an object");
    st = scan_members(c, v, tool_call_fields, TC_N, f, true);
    if (st != EB_OK)
        goto cleanup;
    if (f[TC_FUNCTION]) {
        path_push_key(c, "function");
        if (!cJSON_IsObject(f[TC_FUNCTION])) {
            st = fail(c, EB_ERR_INVALID, "must be an object");
            goto cleanup;
        }
        st = scan_members(c, f[TC_FUNCTION], function_fields, 2, fn, true);
        if (st != EB_OK)
            goto cleanup;
        if ((fn[0] && f[TC_NAME]) || (fn[1] && f[TC_ARGUMENTS])) {
            path_pop(c, mark);
            st = fail(c, EB_ERR_INVALID, "gives %s both in function and beside it",
                      fn[0] && f[TC_NAME] ? "name" : "arguments");
            goto cleanup;
        }
        st = str_field(c, fn[0], "name", TEXT_LABEL, &tc->name);
        if (st == EB_OK)
            st = arguments_field(c, fn[1], &tc->arguments);
        path_pop(c, mark);
        if (st != EB_OK)
            goto cleanup;
    }
    if ((st = str_field(c, f[TC_ID], "id", TEXT_ID, &tc->id)) != EB_OK ||
        (st = str_field(c, f[TC_TYPE], "type", TEXT_LABEL, &tc->type)) != EB_OK ||
        (st = str_field(c, f[TC_NAME], "name", TEXT_LABEL, &tc->name)) != EB_OK ||
        (st = arguments_field(c, f[TC_ARGUMENTS], &tc->arguments)) != EB_OK ||
        (st = time_field(c, f[TC_START], "start_time", &tc->has_start_time_unix_nano,
                         &tc->start_time_unix_nano)) != EB_OK ||
        (st = time_field(c, f[TC_END], "end_time", &tc->has_end_time_unix_nano,
                         &tc->end_time_unix_nano)) != EB_OK)
        goto cleanup;
    st = check_order(c, tc->has_start_time_unix_nano, tc->start_time_unix_nano,
                     tc->has_end_time_unix_nano, tc->end_time_unix_nano);
    if (st != EB_OK)
        goto cleanup;
    result = f[TC_RESULT];
    if (result) {
        path_push_key(c, "result");
        if (cJSON_IsString(result)) {
            st = check_text(c, result->valuestring, TEXT_FREE);
            if (st == EB_OK)
                tc->result = eb_strdup(result->valuestring);
        } else {
            st =
                json_text_field(c, result, c->lim->max_field_bytes, "max-field-bytes", &tc->result);
        }
        path_pop(c, mark);
    }
cleanup:
    path_pop(c, mark);
    return st;
}

/* v is the array at key (already checked non-NULL by the caller's scan). */
static eb_status parse_tool_calls(walk_ctx *c, const cJSON *v, const char *key,
                                  Evalbus__V1__ToolCall ***calls, size_t *ncalls)
{
    eb_status st = EB_OK;
    size_t mark, n = 0, i = 0;
    const cJSON *e;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, key);
    st = check_array(c, v, c->lim->max_messages, "max-messages", &n);
    if (st != EB_OK || n == 0)
        goto cleanup;
    *calls = eb_calloc(n, sizeof **calls);
    cJSON_ArrayForEach(e, v)
    {
        size_t at = path_push_index(c, i++);
        Evalbus__V1__ToolCall *tc = eb_malloc(sizeof *tc);

        evalbus__v1__tool_call__init(tc);
        (*calls)[(*ncalls)++] = tc;
        st = parse_tool_call(c, e, tc);
        path_pop(c, at);
        if (st != EB_OK)
            goto cleanup;
    }
cleanup:
    path_pop(c, mark);
    return st;
}

static bool is_text_part(const char *type)
{
    return strcmp(type, "text") == 0 || strcmp(type, "input_text") == 0 ||
           strcmp(type, "output_text") == 0;
}

/* One element of a content array (the path is the element): a string is a text part; an object
 * needs a type. Text parts add their text to joined; any part that is more than
 * {"type", "text"} is also kept whole in json; image_url parts get url. */
static eb_status parse_part(walk_ctx *c, const cJSON *v, Evalbus__V1__ContentPart *p,
                            eb_buf *joined, size_t *ntext)
{
    const cJSON *type, *text = NULL, *img, *url;
    eb_status st = EB_OK;
    size_t mark = c->len;

    if (cJSON_IsString(v)) {
        st = check_text(c, v->valuestring, TEXT_FREE);
        if (st != EB_OK)
            goto cleanup;
        text = v;
        p->type = eb_strdup("text");
    } else if (cJSON_IsObject(v)) {
        type = cJSON_GetObjectItemCaseSensitive(v, "type");
        path_push_key(c, "type");
        if (!cJSON_IsString(type))
            st = fail(c, EB_ERR_INVALID, "is required and must be a string");
        else
            st = check_text(c, type->valuestring, TEXT_ID);
        path_pop(c, mark);
        if (st != EB_OK)
            goto cleanup;
        p->type = eb_strdup(type->valuestring);
        if (is_text_part(type->valuestring)) {
            text = cJSON_GetObjectItemCaseSensitive(v, "text");
            path_push_key(c, "text");
            if (!cJSON_IsString(text))
                st = fail(c, EB_ERR_INVALID, "is required and must be a string");
            else
                st = check_text(c, text->valuestring, TEXT_FREE);
            path_pop(c, mark);
            if (st != EB_OK)
                goto cleanup;
        }
        if (!text || cJSON_GetArraySize(v) != 2) {
            st = json_text_field(c, v, c->lim->max_field_bytes, "max-field-bytes", &p->json);
            if (st != EB_OK)
                goto cleanup;
        }
        img = cJSON_GetObjectItemCaseSensitive(v, "image_url");
        url = cJSON_IsObject(img) ? cJSON_GetObjectItemCaseSensitive(img, "url") : img;
        if (strcmp(type->valuestring, "image_url") == 0 && cJSON_IsString(url)) {
            path_push_key(c, "image_url");
            st = check_text(c, url->valuestring, TEXT_FREE);
            path_pop(c, mark);
            if (st != EB_OK)
                goto cleanup;
            p->url = eb_strdup(url->valuestring);
        }
    } else {
        st = fail(c, EB_ERR_INVALID, "must be an object or a string");
        goto cleanup;
    }
    if (text) {
        p->text = eb_strdup(text->valuestring);
        if ((*ntext)++)
            eb_buf_putc(joined, '\n');
        eb_buf_puts(joined, text->valuestring);
    }
cleanup:
    path_pop(c, mark);
    return st;
}

/* The value of "content" (path: the message). */
static eb_status parse_content(walk_ctx *c, const cJSON *v, Evalbus__V1__Message *m)
{
    eb_status st = EB_OK;
    size_t mark, n = 0, i = 0, ntext = 0;
    eb_buf joined = {0};
    const cJSON *e;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, "content");
    if (cJSON_IsString(v)) {
        st = check_text(c, v->valuestring, TEXT_FREE);
        if (st == EB_OK)
            m->content = eb_strdup(v->valuestring);
        goto cleanup;
    }
    if (!cJSON_IsArray(v)) {
        st = fail(c, EB_ERR_INVALID, "must be a string, an array of content parts or null");
        goto cleanup;
    }
    st = check_array(c, v, c->lim->max_messages, "max-messages", &n);
    if (st != EB_OK || n == 0)
        goto cleanup;
    m->parts = eb_calloc(n, sizeof *m->parts);
    cJSON_ArrayForEach(e, v)
    {
        size_t at = path_push_index(c, i++);
        Evalbus__V1__ContentPart *p = eb_malloc(sizeof *p);

        evalbus__v1__content_part__init(p);
        m->parts[m->n_parts++] = p;
        st = parse_part(c, e, p, &joined, &ntext);
        path_pop(c, at);
        if (st != EB_OK)
            goto cleanup;
        if (joined.len > c->lim->max_field_bytes) {
            st = fail(c, EB_ERR_TOO_LARGE, "text is longer than %zu bytes (max-field-bytes)",
                      c->lim->max_field_bytes);
            goto cleanup;
        }
    }
    if (ntext)
        m->content = eb_buf_steal(&joined);
cleanup:
    eb_buf_free(&joined);
    path_pop(c, mark);
    return st;
}

static const char *const message_fields[] = {"role", "content", "name", "tool_call_id",
                                             "tool_calls"};
enum { MF_ROLE, MF_CONTENT, MF_NAME, MF_TOOL_CALL_ID, MF_TOOL_CALLS, MF_N };
_Static_assert(ARRAY_LEN(message_fields) == MF_N, "message_fields");

/* The path is the message. */
static eb_status parse_message(walk_ctx *c, const cJSON *v, Evalbus__V1__Message *m)
{
    const cJSON *f[MF_N];
    eb_status st;
    size_t mark = c->len;

    if (!cJSON_IsObject(v))
        return fail(c, EB_ERR_INVALID, "must be an object");
    st = scan_members(c, v, message_fields, MF_N, f, true);
    if (st != EB_OK)
        return st;
    if (!f[MF_ROLE]) {
        path_push_key(c, "role");
        st = fail(c, EB_ERR_INVALID, "is required");
        path_pop(c, mark);
        return st;
    }
    if ((st = enum_field(c, f[MF_ROLE], "role", role_values, NULL, &m->role)) != EB_OK ||
        (st = parse_content(c, f[MF_CONTENT], m)) != EB_OK ||
        (st = str_field(c, f[MF_NAME], "name", TEXT_LABEL, &m->name)) != EB_OK ||
        (st = str_field(c, f[MF_TOOL_CALL_ID], "tool_call_id", TEXT_ID, &m->tool_call_id)) != EB_OK)
        return st;
    return parse_tool_calls(c, f[MF_TOOL_CALLS], "tool_calls", &m->tool_calls, &m->n_tool_calls);
}

/* The path is the messages array. */
static eb_status parse_messages(walk_ctx *c, const cJSON *v, Evalbus__V1__Message ***msgs,
                                size_t *nmsgs)
{
    eb_status st;
    size_t n = 0, i = 0;
    const cJSON *e;

    st = check_array(c, v, c->lim->max_messages, "max-messages", &n);
    if (st != EB_OK || n == 0)
        return st;
    *msgs = eb_calloc(n, sizeof **msgs);
    cJSON_ArrayForEach(e, v)
    {
        size_t at = path_push_index(c, i++);
        Evalbus__V1__Message *m = eb_malloc(sizeof *m);

        evalbus__v1__message__init(m);
        (*msgs)[(*nmsgs)++] = m;
        st = parse_message(c, e, m);
        path_pop(c, at);
        if (st != EB_OK)
            return st;
    }
    return EB_OK;
}

static const char *const io_fields[] = {"messages", "text"};

/* True for the {"messages": [...], "text": "..."} form: an object whose "messages" is an array
 * or whose "text" is a string, or one of those two members alone. Any other object, such as
 * {"text": null, "q": 1}, is a JSON value of its own (kept as its JSON text). */
static bool is_io_object(const cJSON *v)
{
    const cJSON *m, *t;
    bool others = false;

    if (!cJSON_IsObject(v))
        return false;
    m = cJSON_GetObjectItemCaseSensitive(v, "messages");
    t = cJSON_GetObjectItemCaseSensitive(v, "text");
    if (!m && !t)
        return false;
    if (cJSON_IsArray(m) || cJSON_IsString(t))
        return true;
    for (const cJSON *e = v->child; e && !others; e = e->next)
        others = !e->string || (strcmp(e->string, "messages") && strcmp(e->string, "text"));
    return !others;
}

/* "input" or "output": a string, an array of messages, {"messages": [...], "text": "..."}, or
 * any other JSON value, kept as its JSON text. */
static eb_status parse_io(walk_ctx *c, const cJSON *v, const char *key,
                          Evalbus__V1__Message ***msgs, size_t *nmsgs, char **text)
{
    const cJSON *f[2];
    eb_status st = EB_OK;
    size_t mark, at;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, key);
    if (cJSON_IsString(v)) {
        st = check_text(c, v->valuestring, TEXT_FREE);
        if (st == EB_OK)
            *text = eb_strdup(v->valuestring);
    } else if (cJSON_IsArray(v)) {
        st = parse_messages(c, v, msgs, nmsgs);
    } else if (is_io_object(v)) {
        st = scan_members(c, v, io_fields, 2, f, true);
        if (st == EB_OK && f[0]) {
            at = path_push_key(c, "messages");
            st = parse_messages(c, f[0], msgs, nmsgs);
            path_pop(c, at);
        }
        if (st == EB_OK)
            st = str_field(c, f[1], "text", TEXT_FREE, text);
    } else {
        st = json_text_field(c, v, c->lim->max_field_bytes, "max-field-bytes", text);
    }
    path_pop(c, mark);
    return st;
}

static const char *const usage_fields[] = {"input_tokens", "output_tokens", "prompt_tokens",
                                           "completion_tokens", "total_tokens"};
enum { UF_INPUT, UF_OUTPUT, UF_PROMPT, UF_COMPLETION, UF_TOTAL };

typedef struct usage_out {
    protobuf_c_boolean *has_in, *has_out, *has_total;
    int64_t *in, *out, *total;
} usage_out;

/* "usage"; total_tokens is read only when u->total is set (observations have none). */
static eb_status parse_usage(walk_ctx *c, const cJSON *v, const usage_out *u)
{
    const cJSON *f[ARRAY_LEN(usage_fields)];
    eb_status st = EB_OK;
    size_t mark;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, "usage");
    if (!cJSON_IsObject(v)) {
        st = fail(c, EB_ERR_INVALID, "must be an object");
        goto cleanup;
    }
    st = scan_members(c, v, usage_fields, u->total ? 5 : 4, f, true);
    if (st != EB_OK)
        goto cleanup;
    if ((f[UF_INPUT] && f[UF_PROMPT]) || (f[UF_OUTPUT] && f[UF_COMPLETION])) {
        st = fail(c, EB_ERR_INVALID, "gives %s twice (also as %s)",
                  f[UF_INPUT] && f[UF_PROMPT] ? "input_tokens" : "output_tokens",
                  f[UF_INPUT] && f[UF_PROMPT] ? "prompt_tokens" : "completion_tokens");
        goto cleanup;
    }
    if ((st = count_field(c, f[UF_INPUT], "input_tokens", u->has_in, u->in)) != EB_OK ||
        (st = count_field(c, f[UF_PROMPT], "prompt_tokens", u->has_in, u->in)) != EB_OK ||
        (st = count_field(c, f[UF_OUTPUT], "output_tokens", u->has_out, u->out)) != EB_OK ||
        (st = count_field(c, f[UF_COMPLETION], "completion_tokens", u->has_out, u->out)) != EB_OK)
        goto cleanup;
    if (u->total)
        st = count_field(c, f[UF_TOTAL], "total_tokens", u->has_total, u->total);
cleanup:
    path_pop(c, mark);
    return st;
}

/* Prints the owner's extras into *out (attributes_json) and resets them. Path: the owner. */
static eb_status take_extras(walk_ctx *c, char **out)
{
    eb_status st = EB_OK;

    if (!c->extras)
        return EB_OK;
    if (eb_json_repeated_member(c->extras)) {
        st = fail(c, EB_ERR_INVALID, "has an object with the member '%s' twice",
                  eb_json_repeated_member(c->extras));
        cJSON_Delete(c->extras);
        c->extras = NULL;
        return st;
    }
    *out = eb_json_print(c->extras);
    if (strlen(*out) > c->lim->max_metadata_bytes)
        st = fail(c, EB_ERR_TOO_LARGE,
                  "has unknown fields (kept in attributes) larger than %zu bytes as JSON "
                  "(max-metadata-bytes)",
                  c->lim->max_metadata_bytes);
    cJSON_Delete(c->extras);
    c->extras = NULL;
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * JSON input: observations and the trace. */

static const char *const obs_fields[] = {"id",         "parent_id", "type",           "name",
                                         "start_time", "end_time",  "model",          "provider",
                                         "usage",      "cost_usd",  "input",          "output",
                                         "tool_calls", "status",    "status_message", "metadata"};
enum {
    OF_ID,
    OF_PARENT,
    OF_TYPE,
    OF_NAME,
    OF_START,
    OF_END,
    OF_MODEL,
    OF_PROVIDER,
    OF_USAGE,
    OF_COST,
    OF_INPUT,
    OF_OUTPUT,
    OF_TOOL_CALLS,
    OF_STATUS,
    OF_STATUS_MSG,
    OF_METADATA,
    OF_N
};
_Static_assert(ARRAY_LEN(obs_fields) == OF_N, "obs_fields");

/* A stable id for an observation sent without one: a UUID (version 8, RFC 9562) from
 * SHA-256 of the trace id and the index, so that a resent trace gets the same ids. */
static char *derived_obs_id(const char *trace_id, size_t index)
{
    eb_buf in = {0};
    unsigned char h[32];
    char hex[33];
    char *id;

    eb_buf_printf(&in, "evalbus.observation:%s:%zu", trace_id, index);
    eb_sha256(in.data, in.len, h);
    h[6] = (unsigned char)((h[6] & 0x0f) | 0x80);
    h[8] = (unsigned char)((h[8] & 0x3f) | 0x80);
    eb_hex_encode(h, 16, hex);
    id = eb_asprintf("%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
    eb_buf_free(&in);
    return id;
}

/* The path is the observation; it is the owner of its unknown members. */
static eb_status parse_observation(walk_ctx *c, const cJSON *v, const char *trace_id, size_t index,
                                   Evalbus__V1__Observation *o)
{
    const cJSON *f[OF_N];
    eb_status st;
    usage_out u = {&o->has_input_tokens, &o->has_output_tokens, NULL,
                   &o->input_tokens,     &o->output_tokens,     NULL};

    if (!cJSON_IsObject(v))
        return fail(c, EB_ERR_INVALID, "must be an object");
    st = scan_members(c, v, obs_fields, OF_N, f, true);
    if (st != EB_OK)
        return st;
    if ((st = str_field(c, f[OF_ID], "id", TEXT_ID, &o->id)) != EB_OK ||
        (st = str_field(c, f[OF_PARENT], "parent_id", TEXT_ID, &o->parent_id)) != EB_OK ||
        (st = enum_field(c, f[OF_TYPE], "type", obs_type_values, "span", &o->type)) != EB_OK ||
        (st = str_field(c, f[OF_NAME], "name", TEXT_LABEL, &o->name)) != EB_OK ||
        (st = time_field(c, f[OF_START], "start_time", &o->has_start_time_unix_nano,
                         &o->start_time_unix_nano)) != EB_OK ||
        (st = time_field(c, f[OF_END], "end_time", &o->has_end_time_unix_nano,
                         &o->end_time_unix_nano)) != EB_OK ||
        (st = check_order(c, o->has_start_time_unix_nano, o->start_time_unix_nano,
                          o->has_end_time_unix_nano, o->end_time_unix_nano)) != EB_OK ||
        (st = str_field(c, f[OF_MODEL], "model", TEXT_LABEL, &o->model)) != EB_OK ||
        (st = str_field(c, f[OF_PROVIDER], "provider", TEXT_LABEL, &o->provider)) != EB_OK ||
        (st = parse_usage(c, f[OF_USAGE], &u)) != EB_OK ||
        (st = amount_field(c, f[OF_COST], "cost_usd", &o->has_cost_usd, &o->cost_usd)) != EB_OK ||
        (st = parse_io(c, f[OF_INPUT], "input", &o->input_messages, &o->n_input_messages,
                       &o->input_text)) != EB_OK ||
        (st = parse_io(c, f[OF_OUTPUT], "output", &o->output_messages, &o->n_output_messages,
                       &o->output_text)) != EB_OK ||
        (st = parse_tool_calls(c, f[OF_TOOL_CALLS], "tool_calls", &o->tool_calls,
                               &o->n_tool_calls)) != EB_OK ||
        (st = enum_field(c, f[OF_STATUS], "status", status_values, "unset", &o->status)) != EB_OK ||
        (st = str_field(c, f[OF_STATUS_MSG], "status_message", TEXT_FREE, &o->status_message)) !=
            EB_OK ||
        (st = metadata_field(c, f[OF_METADATA], &o->metadata_json)) != EB_OK)
        return st;
    if (!o->id)
        o->id = derived_obs_id(trace_id, index);
    return take_extras(c, &o->attributes_json);
}

typedef struct id_at {
    const char *id;
    size_t index;
} id_at;

static int id_at_cmp(const void *a, const void *b)
{
    const id_at *x = a, *y = b;
    int r = strcmp(x->id, y->id);

    return r ? r : (x->index > y->index) - (x->index < y->index);
}

/* Refuses two observations with one id (the writer keys observations by id). Path: trace. */
static eb_status check_unique_obs(walk_ctx *c, Evalbus__V1__Observation *const *obs, size_t n)
{
    eb_status st = EB_OK;
    id_at *ids;
    size_t m = 0;

    if (n < 2)
        return EB_OK;
    ids = eb_malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        if (obs[i] && obs[i]->id)
            ids[m++] = (id_at){obs[i]->id, i};
    qsort(ids, m, sizeof *ids, id_at_cmp);
    for (size_t i = 1; i < m; i++)
        if (strcmp(ids[i - 1].id, ids[i].id) == 0) {
            size_t mark = path_push_key(c, "observations");
            path_push_index(c, ids[i].index);
            path_push_key(c, "id");
            st = fail(c, EB_ERR_INVALID, "repeats the id of observations[%zu]", ids[i - 1].index);
            path_pop(c, mark);
            break;
        }
    free(ids);
    return st;
}

/* The last four are what the query output adds (review state, source, reviews, scores): known,
 * so that a trace read back and sent again does not keep them as unknown members, and ignored
 * (they are the store's, not the sender's). */
static const char *const trace_fields[] = {
    "id",       "project",        "name",         "model",    "provider",
    "status",   "status_message", "start_time",   "end_time", "latency_ms",
    "usage",    "cost_usd",       "input",        "output",   "tool_calls",
    "metadata", "tags",           "session_id",   "user_id",  "environment",
    "release",  "observations",   "review_state", "source",   "reviews",
    "scores"};
enum {
    TF_ID,
    TF_PROJECT,
    TF_NAME,
    TF_MODEL,
    TF_PROVIDER,
    TF_STATUS,
    TF_STATUS_MSG,
    TF_START,
    TF_END,
    TF_LATENCY,
    TF_USAGE,
    TF_COST,
    TF_INPUT,
    TF_OUTPUT,
    TF_TOOL_CALLS,
    TF_METADATA,
    TF_TAGS,
    TF_SESSION,
    TF_USER,
    TF_ENV,
    TF_RELEASE,
    TF_OBSERVATIONS,
    TF_REVIEW_STATE, /* ignored */
    TF_SOURCE,       /* ignored */
    TF_REVIEWS,      /* ignored */
    TF_SCORES,       /* ignored */
    TF_N
};
_Static_assert(ARRAY_LEN(trace_fields) == TF_N, "trace_fields");

static eb_status parse_tags(walk_ctx *c, const cJSON *v, Evalbus__V1__Trace *t)
{
    eb_status st = EB_OK;
    size_t mark, n = 0, i = 0;
    const cJSON *e;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, "tags");
    st = check_array(c, v, c->lim->max_tags, "max-tags", &n);
    if (st != EB_OK || n == 0)
        goto cleanup;
    t->tags = eb_calloc(n, sizeof *t->tags);
    cJSON_ArrayForEach(e, v)
    {
        size_t at = path_push_index(c, i++);

        if (!cJSON_IsString(e))
            st = fail(c, EB_ERR_INVALID, "must be a string");
        else
            st = check_text(c, e->valuestring, TEXT_ID);
        path_pop(c, at);
        if (st != EB_OK)
            goto cleanup;
        t->tags[t->n_tags++] = eb_strdup(e->valuestring);
    }
cleanup:
    path_pop(c, mark);
    return st;
}

static eb_status parse_observations(walk_ctx *c, const cJSON *v, Evalbus__V1__Trace *t)
{
    eb_status st = EB_OK;
    size_t mark, n = 0, i = 0;
    const cJSON *e;
    cJSON *trace_extras = c->extras;
    size_t trace_base = c->owner_base;

    if (!v)
        return EB_OK;
    mark = path_push_key(c, "observations");
    st = check_array(c, v, c->lim->max_observations, "max-observations", &n);
    if (st != EB_OK || n == 0)
        goto cleanup;
    t->observations = eb_calloc(n, sizeof *t->observations);
    c->extras = NULL;
    cJSON_ArrayForEach(e, v)
    {
        size_t at = path_push_index(c, i);
        Evalbus__V1__Observation *o = eb_malloc(sizeof *o);

        evalbus__v1__observation__init(o);
        t->observations[t->n_observations++] = o;
        c->owner_base = c->len + 1;
        st = parse_observation(c, e, t->id, i++, o);
        cJSON_Delete(c->extras);
        c->extras = NULL;
        path_pop(c, at);
        if (st != EB_OK)
            goto cleanup;
    }
    path_pop(c, mark);
    st = check_unique_obs(c, t->observations, t->n_observations);
cleanup:
    c->extras = trace_extras;
    c->owner_base = trace_base;
    path_pop(c, mark);
    return st;
}

/* Without a total the writer stores input + output as one: it must be below 2^53 as well. */
static eb_status v_token_sum(walk_ctx *c, const Evalbus__V1__Trace *t)
{
    if (!t->has_total_tokens && t->has_input_tokens && t->has_output_tokens &&
        t->input_tokens >= 0 && t->output_tokens >= 0 &&
        t->input_tokens + t->output_tokens >= (int64_t)MAX_SAFE_INT)
        return fail(c, EB_ERR_INVALID,
                    "has input_tokens + output_tokens of 2^53 or more; their total must be "
                    "below 2^53");
    return EB_OK;
}

eb_status ingest_trace_from_json(const cJSON *item, const ingest_limits *lim,
                                 Evalbus__V1__Trace **out)
{
    walk_ctx c = {.lim = lim};
    const cJSON *f[TF_N];
    Evalbus__V1__Trace *t = NULL;
    eb_status st = EB_OK;
    usage_out u;

    *out = NULL;
    if (!cJSON_IsObject(item)) {
        st = fail(&c, EB_ERR_INVALID, "must be a JSON object");
        goto cleanup;
    }
    if (json_size(item, lim->max_trace_bytes) > lim->max_trace_bytes) {
        st = fail(&c, EB_ERR_TOO_LARGE, "is larger than %zu bytes as JSON (max-trace-bytes)",
                  lim->max_trace_bytes);
        goto cleanup;
    }
    t = eb_malloc(sizeof *t);
    evalbus__v1__trace__init(t);
    u = (usage_out){&t->has_input_tokens, &t->has_output_tokens, &t->has_total_tokens,
                    &t->input_tokens,     &t->output_tokens,     &t->total_tokens};
    st = scan_members(&c, item, trace_fields, TF_N, f, true);
    if (st != EB_OK)
        goto cleanup;
    if ((st = str_field(&c, f[TF_ID], "id", TEXT_ID, &t->id)) != EB_OK ||
        (st = check_trace_id(&c, t->id)) != EB_OK ||
        (st = str_field(&c, f[TF_PROJECT], "project", TEXT_LABEL, &t->project)) != EB_OK ||
        (st = str_field(&c, f[TF_NAME], "name", TEXT_LABEL, &t->name)) != EB_OK ||
        (st = str_field(&c, f[TF_MODEL], "model", TEXT_LABEL, &t->model)) != EB_OK ||
        (st = str_field(&c, f[TF_PROVIDER], "provider", TEXT_LABEL, &t->provider)) != EB_OK ||
        (st = enum_field(&c, f[TF_STATUS], "status", status_values, "unset", &t->status)) !=
            EB_OK ||
        (st = str_field(&c, f[TF_STATUS_MSG], "status_message", TEXT_FREE, &t->status_message)) !=
            EB_OK ||
        (st = time_field(&c, f[TF_START], "start_time", &t->has_start_time_unix_nano,
                         &t->start_time_unix_nano)) != EB_OK ||
        (st = time_field(&c, f[TF_END], "end_time", &t->has_end_time_unix_nano,
                         &t->end_time_unix_nano)) != EB_OK ||
        (st = check_order(&c, t->has_start_time_unix_nano, t->start_time_unix_nano,
                          t->has_end_time_unix_nano, t->end_time_unix_nano)) != EB_OK ||
        (st = amount_field(&c, f[TF_LATENCY], "latency_ms", &t->has_latency_ms, &t->latency_ms)) !=
            EB_OK ||
        (st = parse_usage(&c, f[TF_USAGE], &u)) != EB_OK ||
        (st = amount_field(&c, f[TF_COST], "cost_usd", &t->has_cost_usd, &t->cost_usd)) != EB_OK ||
        (st = parse_io(&c, f[TF_INPUT], "input", &t->input_messages, &t->n_input_messages,
                       &t->input_text)) != EB_OK ||
        (st = parse_io(&c, f[TF_OUTPUT], "output", &t->output_messages, &t->n_output_messages,
                       &t->output_text)) != EB_OK ||
        (st = parse_tool_calls(&c, f[TF_TOOL_CALLS], "tool_calls", &t->tool_calls,
                               &t->n_tool_calls)) != EB_OK ||
        (st = metadata_field(&c, f[TF_METADATA], &t->metadata_json)) != EB_OK ||
        (st = parse_tags(&c, f[TF_TAGS], t)) != EB_OK ||
        (st = str_field(&c, f[TF_SESSION], "session_id", TEXT_ID, &t->session_id)) != EB_OK ||
        (st = str_field(&c, f[TF_USER], "user_id", TEXT_ID, &t->user_id)) != EB_OK ||
        (st = str_field(&c, f[TF_ENV], "environment", TEXT_LABEL, &t->environment)) != EB_OK ||
        (st = str_field(&c, f[TF_RELEASE], "release", TEXT_LABEL, &t->release)) != EB_OK)
        goto cleanup;
    if (!t->id) {
        t->id = eb_malloc(37);
        eb_uuid_v4(t->id);
    }
    st = parse_observations(&c, f[TF_OBSERVATIONS], t);
    if (st != EB_OK)
        goto cleanup;
    st = take_extras(&c, &t->attributes_json);
    if (st != EB_OK)
        goto cleanup;
    if (!t->has_latency_ms && t->has_start_time_unix_nano && t->has_end_time_unix_nano) {
        t->latency_ms = (double)(t->end_time_unix_nano - t->start_time_unix_nano) / 1e6;
        t->has_latency_ms = 1;
    }
    if ((st = v_token_sum(&c, t)) != EB_OK)
        goto cleanup;
    if (!t->has_total_tokens && t->has_input_tokens && t->has_output_tokens) {
        t->total_tokens = t->input_tokens + t->output_tokens;
        t->has_total_tokens = 1;
    }
    *out = t;
    t = NULL;
cleanup:
    cJSON_Delete(c.extras);
    if (t)
        evalbus__v1__trace__free_unpacked(t, NULL);
    return st;
}

/* ---------------------------------------------------------------------------------------------
 * Validation of a protobuf Trace. Every v_* function is called with the path at the owner of
 * the field it checks. */

static eb_status v_text(walk_ctx *c, const char *s, const char *key, enum text_kind kind,
                        bool required)
{
    eb_status st = EB_OK;
    size_t mark;

    if (!s && !required)
        return EB_OK;
    mark = path_push_key(c, key);
    st = s ? check_text(c, s, kind) : fail(c, EB_ERR_INVALID, "is required");
    path_pop(c, mark);
    return st;
}

static eb_status v_enum(walk_ctx *c, const char *s, const char *key, const char *const *values,
                        bool required)
{
    eb_status st = EB_OK;
    size_t mark;

    if (!s && !required)
        return EB_OK;
    mark = path_push_key(c, key);
    if (!s)
        st = fail(c, EB_ERR_INVALID, "is required");
    else if (!eb_utf8_valid(s, strlen(s)))
        st = fail(c, EB_ERR_INVALID, "is not valid UTF-8");
    else
        st = check_enum(c, s, values);
    path_pop(c, mark);
    return st;
}

static eb_status v_count(walk_ctx *c, protobuf_c_boolean has, int64_t v, const char *key)
{
    eb_status st = EB_OK;
    size_t mark;

    if (!has)
        return EB_OK;
    mark = path_push_key(c, key);
    if (v < 0)
        st = fail(c, EB_ERR_INVALID, "must be a non-negative integer");
    else if ((double)v >= MAX_SAFE_INT)
        st = fail(c, EB_ERR_INVALID, "must be below 2^53");
    path_pop(c, mark);
    return st;
}

static eb_status v_amount(walk_ctx *c, protobuf_c_boolean has, double v, const char *key)
{
    eb_status st = EB_OK;
    size_t mark;

    if (!has)
        return EB_OK;
    mark = path_push_key(c, key);
    if (!isfinite(v) || v < 0)
        st = fail(c, EB_ERR_INVALID, "must be a non-negative number");
    path_pop(c, mark);
    return st;
}

static eb_status v_times(walk_ctx *c, protobuf_c_boolean has_start, int64_t start,
                         protobuf_c_boolean has_end, int64_t end)
{
    eb_status st = EB_OK;
    size_t mark = c->len;

    if ((has_start && start < 0) || (has_end && end < 0)) {
        path_push_key(c, has_start && start < 0 ? "start_time" : "end_time");
        st = fail(c, EB_ERR_INVALID, "must not be before 1970");
        path_pop(c, mark);
        return st;
    }
    return check_order(c, has_start, start, has_end, end);
}

static eb_status v_json_object(walk_ctx *c, const char *s, const char *key)
{
    eb_status st = EB_OK;
    size_t mark, n;
    char why[160];

    if (!s)
        return EB_OK;
    mark = path_push_key(c, key);
    n = strlen(s);
    if (n > c->lim->max_metadata_bytes)
        st = fail(c, EB_ERR_TOO_LARGE, "is larger than %zu bytes (max-metadata-bytes)",
                  c->lim->max_metadata_bytes);
    else if (!eb_utf8_valid(s, n))
        st = fail(c, EB_ERR_INVALID, "is not valid UTF-8");
    else if (!json_text_is_object(s, why, sizeof why))
        st = fail(c, EB_ERR_INVALID, "must be the text of a JSON object%s", why);
    path_pop(c, mark);
    return st;
}

/* Count and presence of a repeated field; the path is its owner. */
static eb_status v_repeated(walk_ctx *c, size_t n, const void *arr, const char *key, size_t max,
                            const char *limit_name)
{
    eb_status st = EB_OK;
    size_t mark;

    if (n == 0)
        return EB_OK;
    mark = path_push_key(c, key);
    if (!arr)
        st = fail(c, EB_ERR_INVALID, "is missing its items");
    else if (n > max)
        st = fail(c, EB_ERR_TOO_LARGE, "has more than %zu items (%s)", max, limit_name);
    path_pop(c, mark);
    return st;
}

static eb_status v_tool_calls(walk_ctx *c, Evalbus__V1__ToolCall *const *calls, size_t n)
{
    eb_status st = v_repeated(c, n, calls, "tool_calls", c->lim->max_messages, "max-messages");
    size_t mark = c->len;

    for (size_t i = 0; st == EB_OK && i < n; i++) {
        const Evalbus__V1__ToolCall *tc = calls[i];

        path_push_key(c, "tool_calls");
        path_push_index(c, i);
        if (!tc)
            st = fail(c, EB_ERR_INVALID, "is missing");
        else if ((st = v_text(c, tc->id, "id", TEXT_ID, false)) == EB_OK &&
                 (st = v_text(c, tc->type, "type", TEXT_LABEL, false)) == EB_OK &&
                 (st = v_text(c, tc->name, "name", TEXT_LABEL, false)) == EB_OK &&
                 (st = v_text(c, tc->arguments, "arguments", TEXT_FREE, false)) == EB_OK &&
                 (st = v_text(c, tc->result, "result", TEXT_FREE, false)) == EB_OK)
            st = v_times(c, tc->has_start_time_unix_nano, tc->start_time_unix_nano,
                         tc->has_end_time_unix_nano, tc->end_time_unix_nano);
        path_pop(c, mark);
    }
    return st;
}

static eb_status v_part(walk_ctx *c, const Evalbus__V1__ContentPart *p)
{
    eb_status st = EB_OK;
    size_t mark = c->len;
    char why[160];

    if (!p)
        return fail(c, EB_ERR_INVALID, "is missing");
    if ((st = v_text(c, p->type, "type", TEXT_LABEL, false)) != EB_OK ||
        (st = v_text(c, p->text, "text", TEXT_FREE, false)) != EB_OK ||
        (st = v_text(c, p->url, "url", TEXT_FREE, false)) != EB_OK ||
        (st = v_text(c, p->json, "json", TEXT_FREE, false)) != EB_OK)
        return st;
    if (p->json && !json_text_is_object(p->json, why, sizeof why)) {
        path_push_key(c, "json");
        st = fail(c, EB_ERR_INVALID, "must be the text of a JSON object%s", why);
        path_pop(c, mark);
    }
    return st;
}

static eb_status v_messages(walk_ctx *c, Evalbus__V1__Message *const *msgs, size_t n,
                            const char *key)
{
    eb_status st = v_repeated(c, n, msgs, key, c->lim->max_messages, "max-messages");
    size_t mark = c->len;

    for (size_t i = 0; st == EB_OK && i < n; i++) {
        const Evalbus__V1__Message *m = msgs[i];

        path_push_key(c, key);
        path_push_index(c, i);
        if (!m) {
            st = fail(c, EB_ERR_INVALID, "is missing");
        } else if ((st = v_enum(c, m->role, "role", role_values, true)) == EB_OK &&
                   (st = v_text(c, m->content, "content", TEXT_FREE, false)) == EB_OK &&
                   (st = v_text(c, m->name, "name", TEXT_LABEL, false)) == EB_OK &&
                   (st = v_text(c, m->tool_call_id, "tool_call_id", TEXT_ID, false)) == EB_OK &&
                   (st = v_repeated(c, m->n_parts, m->parts, "content", c->lim->max_messages,
                                    "max-messages")) == EB_OK) {
            for (size_t k = 0; st == EB_OK && k < m->n_parts; k++) {
                size_t at = path_push_key(c, "content");
                path_push_index(c, k);
                st = v_part(c, m->parts[k]);
                path_pop(c, at);
            }
            if (st == EB_OK)
                st = v_tool_calls(c, m->tool_calls, m->n_tool_calls);
        }
        path_pop(c, mark);
    }
    return st;
}

static eb_status v_observation(walk_ctx *c, const Evalbus__V1__Observation *o)
{
    eb_status st;

    if (!o)
        return fail(c, EB_ERR_INVALID, "is missing");
    if ((st = v_text(c, o->id, "id", TEXT_ID, true)) != EB_OK ||
        (st = v_text(c, o->parent_id, "parent_id", TEXT_ID, false)) != EB_OK ||
        (st = v_enum(c, o->type, "type", obs_type_values, false)) != EB_OK ||
        (st = v_text(c, o->name, "name", TEXT_LABEL, false)) != EB_OK ||
        (st = v_times(c, o->has_start_time_unix_nano, o->start_time_unix_nano,
                      o->has_end_time_unix_nano, o->end_time_unix_nano)) != EB_OK ||
        (st = v_enum(c, o->status, "status", status_values, false)) != EB_OK ||
        (st = v_text(c, o->status_message, "status_message", TEXT_FREE, false)) != EB_OK ||
        (st = v_text(c, o->model, "model", TEXT_LABEL, false)) != EB_OK ||
        (st = v_text(c, o->provider, "provider", TEXT_LABEL, false)) != EB_OK ||
        (st = v_count(c, o->has_input_tokens, o->input_tokens, "usage.input_tokens")) != EB_OK ||
        (st = v_count(c, o->has_output_tokens, o->output_tokens, "usage.output_tokens")) != EB_OK ||
        (st = v_amount(c, o->has_cost_usd, o->cost_usd, "cost_usd")) != EB_OK ||
        (st = v_messages(c, o->input_messages, o->n_input_messages, "input.messages")) != EB_OK ||
        (st = v_messages(c, o->output_messages, o->n_output_messages, "output.messages")) !=
            EB_OK ||
        (st = v_text(c, o->input_text, "input.text", TEXT_FREE, false)) != EB_OK ||
        (st = v_text(c, o->output_text, "output.text", TEXT_FREE, false)) != EB_OK ||
        (st = v_tool_calls(c, o->tool_calls, o->n_tool_calls)) != EB_OK ||
        (st = v_json_object(c, o->attributes_json, "attributes")) != EB_OK)
        return st;
    return v_json_object(c, o->metadata_json, "metadata");
}

/* *text (a JSON object cJSON parses: validated) as cJSON prints it, copied into arena. */
static void canonical_json(char **text, eb_arena *arena)
{
    cJSON *o = NULL;
    char *printed;
    size_t n;

    if (!*text || eb_json_parse_object(*text, strlen(*text), &o) != EB_OK) {
        eb_error_clear();
        return;
    }
    printed = eb_json_print(o);
    cJSON_Delete(o);
    n = strlen(printed) + 1;
    *text = memcpy(eb_arena_alloc(arena, n), printed, n);
    free(printed);
}

void ingest_trace_canonical_json(Evalbus__V1__Trace *t, eb_arena *arena)
{
    canonical_json(&t->metadata_json, arena);
    canonical_json(&t->attributes_json, arena);
    for (size_t i = 0; i < t->n_observations; i++) {
        canonical_json(&t->observations[i]->metadata_json, arena);
        canonical_json(&t->observations[i]->attributes_json, arena);
    }
}

eb_status ingest_trace_validate(const Evalbus__V1__Trace *t, const ingest_limits *lim)
{
    walk_ctx c = {.lim = lim};
    eb_status st = EB_OK;
    size_t packed;

    if (!t)
        return fail(&c, EB_ERR_INVALID, "is missing");
    if ((st = v_text(&c, t->id, "id", TEXT_ID, true)) != EB_OK ||
        (st = check_trace_id(&c, t->id)) != EB_OK ||
        (st = v_text(&c, t->project, "project", TEXT_LABEL, false)) != EB_OK ||
        (st = v_text(&c, t->name, "name", TEXT_LABEL, false)) != EB_OK ||
        (st = v_text(&c, t->model, "model", TEXT_LABEL, false)) != EB_OK ||
        (st = v_text(&c, t->provider, "provider", TEXT_LABEL, false)) != EB_OK ||
        (st = v_enum(&c, t->status, "status", status_values, false)) != EB_OK ||
        (st = v_text(&c, t->status_message, "status_message", TEXT_FREE, false)) != EB_OK ||
        (st = v_times(&c, t->has_start_time_unix_nano, t->start_time_unix_nano,
                      t->has_end_time_unix_nano, t->end_time_unix_nano)) != EB_OK ||
        (st = v_amount(&c, t->has_latency_ms, t->latency_ms, "latency_ms")) != EB_OK ||
        (st = v_count(&c, t->has_input_tokens, t->input_tokens, "usage.input_tokens")) != EB_OK ||
        (st = v_count(&c, t->has_output_tokens, t->output_tokens, "usage.output_tokens")) !=
            EB_OK ||
        (st = v_count(&c, t->has_total_tokens, t->total_tokens, "usage.total_tokens")) != EB_OK ||
        (st = v_token_sum(&c, t)) != EB_OK ||
        (st = v_amount(&c, t->has_cost_usd, t->cost_usd, "cost_usd")) != EB_OK ||
        (st = v_messages(&c, t->input_messages, t->n_input_messages, "input.messages")) != EB_OK ||
        (st = v_messages(&c, t->output_messages, t->n_output_messages, "output.messages")) !=
            EB_OK ||
        (st = v_text(&c, t->input_text, "input.text", TEXT_FREE, false)) != EB_OK ||
        (st = v_text(&c, t->output_text, "output.text", TEXT_FREE, false)) != EB_OK ||
        (st = v_tool_calls(&c, t->tool_calls, t->n_tool_calls)) != EB_OK ||
        (st = v_json_object(&c, t->metadata_json, "metadata")) != EB_OK ||
        (st = v_json_object(&c, t->attributes_json, "attributes")) != EB_OK ||
        (st = v_repeated(&c, t->n_tags, t->tags, "tags", lim->max_tags, "max-tags")) != EB_OK)
        return st;
    for (size_t i = 0; i < t->n_tags; i++) {
        size_t mark = path_push_key(&c, "tags");
        path_push_index(&c, i);
        st = t->tags[i] ? check_text(&c, t->tags[i], TEXT_ID)
                        : fail(&c, EB_ERR_INVALID, "is missing");
        path_pop(&c, mark);
        if (st != EB_OK)
            return st;
    }
    if ((st = v_text(&c, t->session_id, "session_id", TEXT_ID, false)) != EB_OK ||
        (st = v_text(&c, t->user_id, "user_id", TEXT_ID, false)) != EB_OK ||
        (st = v_text(&c, t->environment, "environment", TEXT_LABEL, false)) != EB_OK ||
        (st = v_text(&c, t->release, "release", TEXT_LABEL, false)) != EB_OK ||
        (st = v_repeated(&c, t->n_observations, t->observations, "observations",
                         lim->max_observations, "max-observations")) != EB_OK)
        return st;
    for (size_t i = 0; i < t->n_observations; i++) {
        size_t mark = path_push_key(&c, "observations");
        path_push_index(&c, i);
        st = v_observation(&c, t->observations[i]);
        path_pop(&c, mark);
        if (st != EB_OK)
            return st;
    }
    st = check_unique_obs(&c, t->observations, t->n_observations);
    if (st != EB_OK)
        return st;
    packed = evalbus__v1__trace__get_packed_size(t);
    if (packed > lim->max_trace_bytes)
        return fail(&c, EB_ERR_TOO_LARGE, "is larger than %zu bytes (max-trace-bytes)",
                    lim->max_trace_bytes);
    return EB_OK;
}

/* ---------------------------------------------------------------------------------------------
 * JSON output. */

static void put_str(eb_buf *b, const char *s)
{
    if (!s) {
        eb_buf_puts(b, "null");
        return;
    }
    eb_buf_putc(b, '"');
    eb_buf_json_escape(b, s);
    eb_buf_putc(b, '"');
}

static void put_key(eb_buf *b, const char *key)
{
    if (b->len && b->data[b->len - 1] != '{')
        eb_buf_putc(b, ',');
    eb_buf_putc(b, '"');
    eb_buf_puts(b, key);
    eb_buf_puts(b, "\":");
}

static void put_member_str(eb_buf *b, const char *key, const char *s)
{
    put_key(b, key);
    put_str(b, s);
}

static void put_member_double(eb_buf *b, const char *key, protobuf_c_boolean has, double v)
{
    put_key(b, key);
    if (has)
        eb_buf_json_number(b, v);
    else
        eb_buf_puts(b, "null");
}

static void put_member_int(eb_buf *b, const char *key, protobuf_c_boolean has, int64_t v)
{
    put_key(b, key);
    if (has)
        eb_buf_printf(b, "%lld", (long long)v);
    else
        eb_buf_puts(b, "null");
}

static void put_member_time(eb_buf *b, const char *key, protobuf_c_boolean has, int64_t v)
{
    char text[48];

    put_key(b, key);
    if (has && v != 0) {
        ingest_time_text(v, text, sizeof text);
        put_str(b, text);
    } else {
        eb_buf_puts(b, "null");
    }
}

/* Stored JSON text: re-printed when it is a valid JSON value (an object if want_object), else
 * written as a string, so that the output stays valid JSON. */
static void put_json_text(eb_buf *b, const char *s, bool want_object)
{
    cJSON *v = NULL;
    char *printed;

    if (!s) {
        eb_buf_puts(b, "null");
        return;
    }
    if (eb_utf8_valid(s, strlen(s)))
        v = eb_json_parse_text(s, strlen(s));
    if (!v || (want_object && !cJSON_IsObject(v))) {
        put_str(b, s);
    } else {
        printed = eb_json_print(v);
        eb_buf_puts(b, printed);
        free(printed);
    }
    cJSON_Delete(v);
}

static void put_tool_call(eb_buf *b, const Evalbus__V1__ToolCall *tc)
{
    if (!tc) {
        eb_buf_puts(b, "null");
        return;
    }
    eb_buf_putc(b, '{');
    put_member_str(b, "id", tc->id);
    put_member_str(b, "type", ingest_or_null(tc->type) ? tc->type : "function");
    put_key(b, "function");
    eb_buf_putc(b, '{');
    put_member_str(b, "name", ingest_or_null(tc->name));
    put_member_str(b, "arguments", ingest_or_null(tc->arguments));
    eb_buf_putc(b, '}');
    if (ingest_or_null(tc->result))
        put_member_str(b, "result", tc->result);
    if (tc->has_start_time_unix_nano && tc->start_time_unix_nano)
        put_member_time(b, "start_time", 1, tc->start_time_unix_nano);
    if (tc->has_end_time_unix_nano && tc->end_time_unix_nano)
        put_member_time(b, "end_time", 1, tc->end_time_unix_nano);
    eb_buf_putc(b, '}');
}

void ingest_tool_calls_json(Evalbus__V1__ToolCall *const *calls, size_t n, eb_buf *out)
{
    eb_buf_putc(out, '[');
    for (size_t i = 0; calls && i < n; i++) {
        if (i)
            eb_buf_putc(out, ',');
        put_tool_call(out, calls[i]);
    }
    eb_buf_putc(out, ']');
}

static void put_part(eb_buf *b, const Evalbus__V1__ContentPart *p)
{
    if (!p) {
        eb_buf_puts(b, "null");
        return;
    }
    if (p->json) {
        put_json_text(b, p->json, true);
        return;
    }
    eb_buf_putc(b, '{');
    put_member_str(b, "type", p->type ? p->type : "text");
    if (p->text)
        put_member_str(b, "text", p->text);
    if (p->url && p->type && strcmp(p->type, "image_url") == 0) {
        put_key(b, "image_url");
        eb_buf_putc(b, '{');
        put_member_str(b, "url", p->url);
        eb_buf_putc(b, '}');
    } else if (p->url) {
        put_member_str(b, "url", p->url);
    }
    eb_buf_putc(b, '}');
}

static void put_message(eb_buf *b, const Evalbus__V1__Message *m)
{
    if (!m) {
        eb_buf_puts(b, "null");
        return;
    }
    eb_buf_putc(b, '{');
    put_member_str(b, "role", m->role);
    put_key(b, "content");
    if (m->n_parts && m->parts) {
        eb_buf_putc(b, '[');
        for (size_t i = 0; i < m->n_parts; i++) {
            if (i)
                eb_buf_putc(b, ',');
            put_part(b, m->parts[i]);
        }
        eb_buf_putc(b, ']');
    } else {
        put_str(b, ingest_or_null(m->content));
    }
    if (ingest_or_null(m->name))
        put_member_str(b, "name", m->name);
    if (ingest_or_null(m->tool_call_id))
        put_member_str(b, "tool_call_id", m->tool_call_id);
    if (m->n_tool_calls && m->tool_calls) {
        put_key(b, "tool_calls");
        ingest_tool_calls_json(m->tool_calls, m->n_tool_calls, b);
    }
    eb_buf_putc(b, '}');
}

void ingest_messages_json(Evalbus__V1__Message *const *msgs, size_t n, eb_buf *out)
{
    eb_buf_putc(out, '[');
    for (size_t i = 0; msgs && i < n; i++) {
        if (i)
            eb_buf_putc(out, ',');
        put_message(out, msgs[i]);
    }
    eb_buf_putc(out, ']');
}

/* input / output: {"messages": [...]} with "text" when there is both, a string for text only,
 * null for neither. */
static void put_io(eb_buf *b, const char *key, Evalbus__V1__Message *const *msgs, size_t n,
                   const char *text)
{
    put_key(b, key);
    if (n && msgs) {
        eb_buf_puts(b, "{\"messages\":");
        ingest_messages_json(msgs, n, b);
        if (text)
            put_member_str(b, "text", text);
        eb_buf_putc(b, '}');
    } else {
        put_str(b, text);
    }
}

static void put_latency(eb_buf *b, protobuf_c_boolean has_latency, double latency,
                        protobuf_c_boolean has_start, int64_t start, protobuf_c_boolean has_end,
                        int64_t end)
{
    if (!has_latency && has_start && has_end && start && end && end >= start) {
        latency = (double)(end - start) / 1e6;
        has_latency = 1;
    }
    put_member_double(b, "latency_ms", has_latency, latency);
}

void ingest_observation_json(const Evalbus__V1__Observation *o, eb_buf *out)
{
    if (!o) {
        eb_buf_puts(out, "null");
        return;
    }
    eb_buf_putc(out, '{');
    put_member_str(out, "id", o->id);
    put_member_str(out, "parent_id", o->parent_id);
    put_member_str(out, "type", o->type ? o->type : "span");
    put_member_str(out, "name", o->name);
    put_member_time(out, "start_time", o->has_start_time_unix_nano, o->start_time_unix_nano);
    put_member_time(out, "end_time", o->has_end_time_unix_nano, o->end_time_unix_nano);
    put_member_str(out, "status", o->status ? o->status : "unset");
    put_member_str(out, "status_message", o->status_message);
    put_member_str(out, "model", o->model);
    put_member_str(out, "provider", o->provider);
    put_key(out, "usage");
    eb_buf_putc(out, '{');
    put_member_int(out, "input_tokens", o->has_input_tokens, o->input_tokens);
    put_member_int(out, "output_tokens", o->has_output_tokens, o->output_tokens);
    eb_buf_putc(out, '}');
    put_member_double(out, "cost_usd", o->has_cost_usd, o->cost_usd);
    put_io(out, "input", o->input_messages, o->n_input_messages, o->input_text);
    put_io(out, "output", o->output_messages, o->n_output_messages, o->output_text);
    put_key(out, "tool_calls");
    ingest_tool_calls_json(o->tool_calls, o->n_tool_calls, out);
    put_key(out, "metadata");
    put_json_text(out, o->metadata_json, true);
    put_key(out, "attributes");
    put_json_text(out, o->attributes_json, true);
    eb_buf_putc(out, '}');
}

void ingest_trace_json(const Evalbus__V1__Trace *t, eb_buf *out)
{
    if (!t) {
        eb_buf_puts(out, "null");
        return;
    }
    eb_buf_putc(out, '{');
    put_member_str(out, "id", t->id);
    put_member_str(out, "project", t->project);
    put_member_str(out, "name", t->name);
    put_member_str(out, "model", t->model);
    put_member_str(out, "provider", t->provider);
    put_member_str(out, "status", t->status ? t->status : "unset");
    put_member_str(out, "status_message", t->status_message);
    put_member_time(out, "start_time", t->has_start_time_unix_nano, t->start_time_unix_nano);
    put_member_time(out, "end_time", t->has_end_time_unix_nano, t->end_time_unix_nano);
    put_latency(out, t->has_latency_ms, t->latency_ms, t->has_start_time_unix_nano,
                t->start_time_unix_nano, t->has_end_time_unix_nano, t->end_time_unix_nano);
    put_key(out, "usage");
    eb_buf_putc(out, '{');
    put_member_int(out, "input_tokens", t->has_input_tokens, t->input_tokens);
    put_member_int(out, "output_tokens", t->has_output_tokens, t->output_tokens);
    put_member_int(out, "total_tokens", t->has_total_tokens, t->total_tokens);
    eb_buf_putc(out, '}');
    put_member_double(out, "cost_usd", t->has_cost_usd, t->cost_usd);
    put_io(out, "input", t->input_messages, t->n_input_messages, t->input_text);
    put_io(out, "output", t->output_messages, t->n_output_messages, t->output_text);
    put_key(out, "tool_calls");
    ingest_tool_calls_json(t->tool_calls, t->n_tool_calls, out);
    put_key(out, "metadata");
    put_json_text(out, t->metadata_json, true);
    put_key(out, "tags");
    eb_buf_putc(out, '[');
    for (size_t i = 0; t->tags && i < t->n_tags; i++) {
        if (i)
            eb_buf_putc(out, ',');
        put_str(out, t->tags[i]);
    }
    eb_buf_putc(out, ']');
    put_member_str(out, "session_id", t->session_id);
    put_member_str(out, "user_id", t->user_id);
    put_member_str(out, "environment", t->environment);
    put_member_str(out, "release", t->release);
    put_key(out, "attributes");
    put_json_text(out, t->attributes_json, true);
    put_key(out, "observations");
    eb_buf_putc(out, '[');
    for (size_t i = 0; t->observations && i < t->n_observations; i++) {
        if (i)
            eb_buf_putc(out, ',');
        ingest_observation_json(t->observations[i], out);
    }
    eb_buf_putc(out, ']');
    eb_buf_putc(out, '}');
}
