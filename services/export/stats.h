/* stats.h -- dataset statistics of an export, and the record analysis they share with the
 * format writers (text lengths, SQL found in a trace, its tables and query type).
 * The statistics use bounded memory whatever the number of records: counters per key are capped
 * at EXPORT_STATS_KEYS_MAX distinct keys, lengths go to log-linear histograms (about 1% error on
 * percentiles), distinct tables beyond the name cap are estimated (HyperLogLog). Statistics of
 * parts of an export (one per worker) merge into one with export_stats_merge().
 * The JSON shape is documented in docs/export-formats.md ("Statistics").
 * Threading: an export_stats is used by one thread at a time. */
#ifndef EVALBUS_EXPORT_STATS_H
#define EVALBUS_EXPORT_STATS_H

#include "redact.h"

#include "evalbus/mem.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    EXPORT_STATS_KEYS_MAX = 1000,   /* distinct keys per counter map; the rest go to "(other)" */
    EXPORT_STATS_TABLES_MAX = 1000, /* table names listed; the count is estimated beyond */
    EXPORT_SQL_TABLES_MAX = 64,     /* tables taken from one statement */
    EXPORT_SQL_NAME_MAX = 256,      /* bytes of one table name (schema.table), longer ones cut */
};

/* ------------------------------------------------------------------ record analysis */

typedef enum export_query_type {
    EXPORT_QUERY_SELECT,
    EXPORT_QUERY_INSERT,
    EXPORT_QUERY_UPDATE,
    EXPORT_QUERY_DELETE,
    EXPORT_QUERY_OTHER,
    EXPORT_QUERY_TYPE_COUNT
} export_query_type;

/* "SELECT", "INSERT", "UPDATE", "DELETE" or "OTHER". */
const char *export_query_type_name(export_query_type t);

/* The kind of statement sql is, from its first keyword (comments and opening parentheses
 * skipped); for WITH, the first SELECT / INSERT / UPDATE / DELETE outside the parentheses of the
 * common table expressions. Anything else (MERGE, CREATE, EXPLAIN, VALUES, "") is OTHER. */
export_query_type export_sql_query_type(const char *sql);

/* Appends to names, as NUL-terminated strings one after the other, the distinct tables sql reads
 * or writes: the names after FROM, JOIN, INTO, UPDATE and USING (comma lists after FROM too),
 * lower-case, schema-qualified as written (a."B".c gives a.b.c), quotes removed. String
 * literals, comments, function calls (EXTRACT(x FROM y), FROM generate_series(...)), subqueries
 * and the names of common table expressions are not tables. At most EXPORT_SQL_TABLES_MAX names,
 * each at most EXPORT_SQL_NAME_MAX bytes. Returns how many names were appended. names is the
 * caller's. */
size_t export_sql_tables(const char *sql, eb_buf *names);

/* SQL found in a trace by export_sql_find(). Zero-initialise once and reuse it for many records
 * (its buffers are kept); release it with export_sql_info_release(). The strings point into the
 * record or into the info's buffers: valid until the next export_sql_find() on this info or
 * until the record is changed or freed. */
typedef struct export_sql_info {
    const char *sql;
    const char *question;      /* NULL when the trace has none */
    const char *database_type; /* NULL when unknown */
    const char *database;      /* the database name (hash it before writing it anywhere) */
    bool failed;               /* the tool call or metadata says the statement failed */
    bool has_execution_ms;
    double execution_ms;
    eb_buf sql_buf, question_buf; /* scratch */
} export_sql_info;

/* Looks for an SQL statement and its question in a trace record (the query output shape), as
 * docs/export-formats.md ("sql-pairs") describes (a statement in a Markdown code fence is taken
 * from inside it): metadata.sql (a string, or an object with
 * "query"), else the first tool call named like *sql* or *query* whose JSON arguments hold a
 * "sql" or "query" string that starts like an SQL statement (trace tool_calls, then the tool
 * calls of output messages, then observations of type tool). Returns true when a non-empty
 * statement was found; *info is filled either way (sql NULL when none). */
bool export_sql_find(const cJSON *record, export_sql_info *info);
/* Frees the buffers of info and zeroes it. NULL is ignored. */
void export_sql_info_release(export_sql_info *info);

/* Characters (Unicode code points, counted on UTF-8) of the text of an input / output value:
 * a string, or {"messages": [...]} (the text content of every message: string content and text
 * parts, without roles or separators), or {"text": ...}. Returns false (and *out = 0) when the
 * value holds no text form at all (null, no messages and no text). */
bool export_io_text_length(const cJSON *io, uint64_t *out);

/* Code points in s[0..n) (bytes that do not continue a UTF-8 sequence). */
uint64_t export_utf8_length(const char *s, size_t n);

/* An RFC 3339 timestamp as nanoseconds since 1970-01-01T00:00:00Z (offsets applied; fraction
 * digits beyond 9 ignored). False for text that is not a timestamp or falls outside 1970..2262. */
bool export_time_ns(const char *s, int64_t *out);

/* ------------------------------------------------------------------ statistics */

typedef struct export_stats export_stats;

/* A new, empty set of statistics: about 130 KB, growing with distinct keys to a few MB at most
 * (9 maps of EXPORT_STATS_KEYS_MAX keys), however many records are added. The caller frees it
 * with export_stats_free(). */
export_stats *export_stats_new(void);
/* NULL is ignored. */
void export_stats_free(export_stats *s);

/* Counts one exported record (a trace in the query output shape; for a preference pair, pass the
 * preferred trace). Looks for SQL in it with export_sql_find(). The record is only read. */
void export_stats_add(export_stats *s, const cJSON *record);
/* As export_stats_add(), with the SQL already found by the caller (sql NULL, or sql->sql NULL:
 * the record has none). */
void export_stats_add_sql(export_stats *s, const cJSON *record, const export_sql_info *sql);
/* Counts a record the format could not use, under reason (copied; at most
 * EXPORT_STATS_KEYS_MAX distinct reasons). */
void export_stats_skip(export_stats *s, const char *reason);
/* Adds the replacement counts of rs, named by the kinds of r (rs indexes r's kinds). */
void export_stats_add_redactions(export_stats *s, const redact_stats *rs, const redactor *r);
/* Adds everything counted in src to dst (histograms and estimators merge exactly as if dst had
 * seen src's records; capped maps send keys past the cap to "(other)"). */
void export_stats_merge(export_stats *dst, const export_stats *src);

/* Records counted by export_stats_add(), and by export_stats_skip(). */
uint64_t export_stats_records(const export_stats *s);
uint64_t export_stats_skipped(const export_stats *s);

/* The statistics as a JSON object (docs/export-formats.md). The caller frees it with
 * cJSON_Delete(). */
cJSON *export_stats_json(const export_stats *s);

#endif
