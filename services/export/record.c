/* record.c -- the record of a trace, built from the columns of ingest.export_traces as a binary
 * COPY delivers them.
 *
 * The view's `record` column is the trace as JSON in the documented shape; asking PostgreSQL
 * for it costs json_build_object and the text of every timestamp on the server, for every row,
 * and this service parses the text again anyway. Selecting the columns themselves (binary
 * COPY: jsonb and json as their text, timestamps as microseconds, numbers as IEEE / big-endian
 * integers, text[] as an array structure) and building the same tree here takes that work off
 * the database: the export's rows come out of PostgreSQL about twice as fast.
 * EXPORT_RECORD_COLUMNS and the table below are the one place that knows the record's shape on
 * this side; tests compare the result with the view's `record` key for key.
 *
 * Threading: pure functions; cJSON allocations go wherever the calling thread's hooks send
 * them (an arena during an export). */
#include "evalbus/json.h"
#include "evalbus/status.h"
#include "record.h"

#include <arpa/inet.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef enum col_kind { K_TEXT, K_TIME, K_F8, K_I8, K_JSONB, K_JSON, K_LIST, K_TAGS } col_kind;

typedef struct col_def {
    const char *key; /* key in the record (usage.* go into the usage object) */
    col_kind kind;
} col_def;

/* In the order of EXPORT_RECORD_COLUMNS, which is the order of the record's keys. */
static const col_def cols[] = {
    {"id", K_TEXT},
    {"project", K_TEXT},
    {"name", K_TEXT},
    {"model", K_TEXT},
    {"provider", K_TEXT},
    {"status", K_TEXT},
    {"status_message", K_TEXT},
    {"start_time", K_TIME},
    {"end_time", K_TIME},
    {"latency_ms", K_F8},
    {"input_tokens", K_I8}, /* usage */
    {"output_tokens", K_I8},
    {"total_tokens", K_I8},
    {"cost_usd", K_F8},
    {"input", K_JSONB},
    {"output", K_JSONB},
    {"tool_calls", K_JSONB},
    {"metadata", K_JSONB},
    {"tags", K_TAGS},
    {"session_id", K_TEXT},
    {"user_id", K_TEXT},
    {"environment", K_TEXT},
    {"release", K_TEXT},
    {"review_state", K_TEXT},
    {"source", K_TEXT},
    {"attributes", K_JSONB},
    {"observations", K_LIST},
    {"reviews", K_LIST},
    {"scores", K_LIST},
};
enum { N_COLS = sizeof(cols) / sizeof(cols[0]), USAGE_FIRST = 10, USAGE_LAST = 12 };

_Static_assert(N_COLS == EXPORT_RECORD_NCOLS, "EXPORT_RECORD_COLUMNS and cols[] differ");

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return ntohl(v);
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

/* A string item from n bytes (not NUL-terminated); scratch holds the copy cJSON takes from. */
static cJSON *text_item(const unsigned char *v, size_t n, eb_buf *scratch)
{
    scratch->len = 0;
    eb_buf_append(scratch, v, n);
    eb_buf_putc(scratch, '\0');
    return cJSON_CreateString(scratch->data);
}

/* PostgreSQL's timestamptz: microseconds since 2000-01-01 UTC -> the view's
 * YYYY-MM-DDTHH:MM:SS.uuuuuuZ (ingest.iso). Infinite values have no such text: null. */
static cJSON *time_item(int64_t us)
{
    const int64_t epoch_shift = 946684800; /* 2000-01-01 in Unix seconds */
    int64_t secs, frac;
    time_t t;
    struct tm tm;
    char text[80];

    if (us == INT64_MAX || us == INT64_MIN)
        return cJSON_CreateNull();
    secs = us / 1000000;
    frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs--;
    }
    t = (time_t)(secs + epoch_shift);
    if (!gmtime_r(&t, &tm))
        return cJSON_CreateNull();
    snprintf(text, sizeof(text), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
    return cJSON_CreateString(text);
}

/* text[] in binary form: ndim, has-null flag, element type, (size, lower bound) per dimension,
 * then (length, bytes) per element. Elements of every dimension in order; NULL elements as
 * null. */
static eb_status tags_item(const unsigned char *v, size_t n, eb_buf *scratch, cJSON **out)
{
    cJSON *arr = cJSON_CreateArray();
    size_t off = 12, count = 1;
    uint32_t ndim;

    *out = arr;
    if (n < 12)
        return eb_error(EB_ERR_INTERNAL, "record: a text[] column is too short");
    ndim = get_u32(v);
    if (ndim == 0)
        return EB_OK;
    if (ndim > 6 || n < 12 + (size_t)ndim * 8 || get_u32(v + 8) != 25 /* text */)
        return eb_error(EB_ERR_INTERNAL, "record: a text[] column is malformed");
    for (uint32_t d = 0; d < ndim; d++, off += 8) {
        uint32_t size = get_u32(v + off);
        /* every element takes 4 bytes at least: a larger count cannot be in n bytes */
        if (size > (n - 12) / 4 || (size && count > (n - 12) / 4 / size))
            return eb_error(EB_ERR_INTERNAL, "record: a text[] column is malformed");
        count *= size;
    }
    for (size_t i = 0; i < count; i++) {
        int32_t len;
        if (n - off < 4)
            return eb_error(EB_ERR_INTERNAL, "record: a text[] column is truncated");
        len = (int32_t)get_u32(v + off);
        off += 4;
        if (len < 0) {
            cJSON_AddItemToArray(arr, cJSON_CreateNull());
            continue;
        }
        if ((size_t)len > n - off)
            return eb_error(EB_ERR_INTERNAL, "record: a text[] column is truncated");
        cJSON_AddItemToArray(arr, text_item(v + off, (size_t)len, scratch));
        off += (size_t)len;
    }
    if (off != n)
        return eb_error(EB_ERR_INTERNAL, "record: a text[] column has bytes left over");
    return EB_OK;
}

/* One column's value (v, n; NULL when len < 0) as an item of the record. */
static eb_status col_item(const col_def *c, const unsigned char *v, int32_t len, eb_buf *scratch,
                          cJSON **out)
{
    size_t n = (size_t)len;
    double d;
    uint64_t u;

    *out = NULL;
    if (len < 0) {
        *out = c->kind == K_LIST || c->kind == K_TAGS ? cJSON_CreateArray() : cJSON_CreateNull();
        return EB_OK;
    }
    switch (c->kind) {
    case K_TEXT:
        *out = text_item(v, n, scratch);
        return EB_OK;
    case K_TIME:
        if (n != 8)
            break;
        *out = time_item((int64_t)get_u64(v));
        return EB_OK;
    case K_F8:
        if (n != 8)
            break;
        u = get_u64(v);
        memcpy(&d, &u, sizeof(d));
        *out = isfinite(d) ? cJSON_CreateNumber(d) : cJSON_CreateNull();
        return EB_OK;
    case K_I8:
        if (n != 8)
            break;
        *out = cJSON_CreateNumber((double)(int64_t)get_u64(v));
        return EB_OK;
    case K_JSONB:
        if (n < 1 || v[0] != 1) /* jsonb's binary form: version 1, then the text */
            break;
        v++;
        n--;
        /* fall through */
    case K_JSON:
    case K_LIST:
        *out = eb_json_parse_text((const char *)v, n);
        if (!*out)
            return eb_error(EB_ERR_INTERNAL, "record: column %s is not JSON", c->key);
        return EB_OK;
    case K_TAGS:
        return tags_item(v, n, scratch, out);
    }
    return eb_error(EB_ERR_INTERNAL, "record: column %s has an unexpected binary form", c->key);
}

eb_status export_record_from_row(const char *row, size_t len, eb_buf *scratch, cJSON **out)
{
    const unsigned char *p = (const unsigned char *)row, *end = p + len;
    cJSON *rec = NULL, *usage = NULL;
    uint16_t nf;
    eb_status st = EB_OK;

    *out = NULL;
    if (len < 2)
        return eb_error(EB_ERR_INTERNAL, "record: short row");
    nf = (uint16_t)(p[0] << 8 | p[1]);
    p += 2;
    if (nf == 1) { /* one column: the record (or a pair of them) as text */
        int32_t fl;
        if (end - p < 4 || (fl = (int32_t)get_u32(p)) < 0 || fl > end - p - 4)
            return eb_error(EB_ERR_INTERNAL, "record: bad field length");
        *out = eb_json_parse_text((const char *)p + 4, (size_t)fl);
        return *out ? EB_OK : eb_error(EB_ERR_INTERNAL, "a record is not JSON");
    }
    if (nf != N_COLS)
        return eb_error(EB_ERR_INTERNAL, "record: expected %d columns, got %u", N_COLS, nf);
    rec = cJSON_CreateObject();
    for (int i = 0; i < N_COLS; i++) {
        int32_t fl;
        cJSON *item;
        if (end - p < 4) {
            st = eb_error(EB_ERR_INTERNAL, "record: short row");
            break;
        }
        fl = (int32_t)get_u32(p);
        p += 4;
        if (fl > end - p) {
            st = eb_error(EB_ERR_INTERNAL, "record: bad field length");
            break;
        }
        st = col_item(&cols[i], p, fl, scratch, &item);
        if (st != EB_OK) {
            cJSON_Delete(item);
            break;
        }
        if (fl > 0)
            p += fl;
        if (i >= USAGE_FIRST && i <= USAGE_LAST) {
            if (!usage)
                usage = cJSON_AddObjectToObject(rec, "usage");
            cJSON_AddItemToObjectCS(usage, cols[i].key, item);
        } else {
            cJSON_AddItemToObjectCS(rec, cols[i].key, item);
        }
    }
    if (st == EB_OK && p != end)
        st = eb_error(EB_ERR_INTERNAL, "record: bytes left over after the last column");
    if (st != EB_OK) {
        cJSON_Delete(rec);
        return st;
    }
    *out = rec;
    return EB_OK;
}
