/* format.h -- the export formats: traces in, dataset files out.
 * A writer turns trace records (cJSON objects in the GET /api/v1/traces/{id} shape) into one of
 * the export formats, appending bytes to a caller's buffer: begin, then one call per record, then
 * end. It pseudonymizes text first when given a redactor, counts what it exports (and what it
 * skips, by reason) in an export_stats, and does no I/O. Each format is a contract documented in
 * docs/export-formats.md.
 * Threading: a writer (and its redactor) is used by one thread at a time; run one writer per
 * worker thread and merge their statistics. */
#ifndef EVALBUS_EXPORT_FORMAT_H
#define EVALBUS_EXPORT_FORMAT_H

#include "redact.h"
#include "stats.h"

#include "evalbus/mem.h"
#include "evalbus/status.h"

#include <cjson/cJSON.h>
#include <stddef.h>

typedef enum export_format {
    EXPORT_JSONL,
    EXPORT_JSON,
    EXPORT_CSV,
    EXPORT_OPENAI_CHAT,
    EXPORT_OPENAI_PREFERENCE,
    EXPORT_ANTHROPIC,
    EXPORT_SQL_PAIRS,
    EXPORT_FORMAT_COUNT
} export_format;

enum {
    EXPORT_FIELDS_MAX = 256,    /* include + exclude entries */
    EXPORT_FIELD_PATH_MAX = 256 /* bytes of one dotted path */
};

/* Parses a format name: "jsonl", "json", "csv", "openai-chat", "openai-preference", "anthropic",
 * "sql-pairs". EB_ERR_INVALID (message listing the valid names) for anything else. */
eb_status export_format_parse(const char *name, export_format *out);
/* The name export_format_parse() accepts; "" for a value out of range. */
const char *export_format_name(export_format f);
/* File extension without the dot: "jsonl", "json" or "csv". */
const char *export_format_extension(export_format f);
/* "application/x-ndjson", "application/json" or "text/csv; charset=utf-8". */
const char *export_format_content_type(export_format f);

/* Everything is copied by export_writer_new(), except redact, which must outlive the writer. */
typedef struct export_options {
    export_format format;
    /* Field selection, for json, jsonl and csv only: top-level names or dotted paths
     * ("metadata.customer_tier", "usage.input_tokens"). For csv, include chooses and orders the
     * columns (default column names or paths) and exclude removes columns. */
    const char *const *include;
    size_t n_include;
    const char *const *exclude;
    size_t n_exclude;
    redactor *redact;        /* NULL = anonymization off */
    const char *exported_at; /* RFC 3339, for the json document header; NULL gives null */
    const char *filter_json; /* the job's filter as JSON, echoed by json; NULL gives null */
} export_options;

typedef struct export_writer export_writer;

/* Creates a writer. EB_ERR_INVALID, with a message naming the field, for an unknown format, a
 * path that is empty, malformed or does not start with a field of the trace, a csv column listed
 * twice, an exclude that names no csv column, no csv column left, field selection for a format
 * that has none, or filter_json that is not JSON. *out is freed with export_writer_free(). */
eb_status export_writer_new(const export_options *opt, export_writer **out);
/* NULL is ignored. */
void export_writer_free(export_writer *w);

/* Appends what comes before the first record: the csv header row; for json
 * {"format_version":1,"exported_at":...,"filter":...,"records":[ ; nothing for the others. */
eb_status export_writer_begin(export_writer *w, eb_buf *out);

/* Converts one record and appends it to out (0..n bytes). In order: every string value of the
 * record is pseudonymized in place (when a redactor is set), the format checks and writes the
 * record, and stats (may be NULL) count it: as exported (with its replacements per kind), or as
 * skipped under a reason (docs/export-formats.md lists them) when the format cannot use it, in
 * which case nothing is appended. The record stays the caller's; it may be modified.
 * Errors: EB_ERR_INVALID when a team pattern of the redactor exceeds its match limit (nothing
 * appended, nothing counted; the record may be half-redacted and must not be used), or for NULL
 * arguments. */
eb_status export_writer_record(export_writer *w, cJSON *record, eb_buf *out, export_stats *stats);

/* Appends what comes after the last record: for json ],"statistics":{...}} (statistics null when
 * stats is NULL); nothing for the others. */
eb_status export_writer_end(export_writer *w, const export_stats *stats, eb_buf *out);

/* Records exported (not skipped) by this writer so far. */
uint64_t export_writer_count(const export_writer *w);

#endif
