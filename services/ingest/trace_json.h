/* trace_json.h -- the JSON batch API's trace objects <-> evalbus.v1.Trace, and the JSON text
 * the writer stores for messages, tool calls and observations.
 *
 * Trees built here are heap trees (every string, array and sub-message from malloc) so that
 * evalbus__v1__trace__free_unpacked(trace, NULL) frees them. Strings are NULL when absent
 * (trace.proto is proto2). */
#ifndef EVALBUS_INGEST_TRACE_JSON_H
#define EVALBUS_INGEST_TRACE_JSON_H

#include "evalbus/arena.h"
#include "evalbus/mem.h"
#include "evalbus/status.h"
#include "evalbus/v1/trace.pb-c.h"
#include "ingest_limits.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

/* Parses one trace object of POST /api/v1/traces (format: docs/api/traces.md). A missing id
 * gets a new UUID. Errors: EB_ERR_INVALID or EB_ERR_TOO_LARGE with an eb_error message that
 * names the field path, e.g. "observations[2].start_time must be an RFC 3339 timestamp".
 * *out is NULL on error. */
eb_status ingest_trace_from_json(const cJSON *item, const ingest_limits *lim,
                                 Evalbus__V1__Trace **out);

/* The bytes of the control character (C0, DEL or C1) that s[0..n) starts with: 1, 2, or 0 when
 * it starts with none. Labels (project, model, tags, ids) must not hold them. */
size_t ingest_control_len(const char *s, size_t n);
/* True if s[0..n) holds a control character (ingest_control_len). */
bool ingest_has_control(const char *s, size_t n);

/* Checks a trace that arrived as protobuf (NATS) against the same rules and limits as JSON
 * ones (required id, sizes, status values, UTF-8 in every string). A missing id is an error
 * here (the publisher must choose ids so that resends are recognised). */
eb_status ingest_trace_validate(const Evalbus__V1__Trace *t, const ingest_limits *lim);

/* Replaces the JSON texts of a validated protobuf trace (metadata_json and attributes_json of
 * the trace and its observations) by cJSON's printing of them, in memory from arena. They were
 * checked with cJSON, which takes what PostgreSQL's jsonb refuses (leading zeros, "1.", raw
 * control characters inside strings, form feeds as white space): printed again, they are what
 * the JSON batch API stores for the same object, and the writer can store them. */
void ingest_trace_canonical_json(Evalbus__V1__Trace *t, eb_arena *arena);

/* JSON text of parts of a trace, appended to out, in the shape the query API returns them:
 * messages as an array of OpenAI-style message objects, tool calls as an array of
 * {"id","type","function":{"name","arguments"},"result"?, "start_time"?, "end_time"?}, and an
 * observation as an object (see docs/api/traces.md). */
void ingest_messages_json(Evalbus__V1__Message *const *msgs, size_t n, eb_buf *out);
void ingest_tool_calls_json(Evalbus__V1__ToolCall *const *calls, size_t n, eb_buf *out);
void ingest_observation_json(const Evalbus__V1__Observation *o, eb_buf *out);
/* The whole trace as one JSON object (the shape of GET /api/v1/traces/{id} without reviews and
 * scores), appended to out. It ends with '}': a caller that adds members removes that last byte
 * and appends ",\"reviews\":[...]}". Valid JSON for any tree, like the functions above. */
void ingest_trace_json(const Evalbus__V1__Trace *t, eb_buf *out);
/* s, or NULL when it is empty: a string field sent as "" is the same as an absent one, in what
 * is printed and in what is stored. */
static inline const char *ingest_or_null(const char *s)
{
    return s && *s ? s : NULL;
}

/* RFC 3339 text of a time in nanoseconds since the epoch ("" for 0), into buf (>= 40 bytes):
 * UTC ("Z"), with 6 fraction digits (microseconds: finer digits are cut off). */
void ingest_time_text(long long unix_nano, char *buf, size_t len);
/* Parses an RFC 3339 timestamp into nanoseconds since the epoch (fraction digits beyond 9 are
 * cut). False for anything else, for impossible dates (02-30), and for times outside
 * (1970-01-01T00:00:00Z, 2262-04-11T23:47:15Z] (0 means "unknown"; int64 nanoseconds). */
bool ingest_time_parse(const char *s, long long *unix_nano);
/* Any RFC 3339 timestamp (years 0001-9999, as eb_rfc3339_valid takes it) as the instant it
 * names: seconds since the epoch (negative before 1970) and nanoseconds (fraction digits beyond
 * 9 are cut), so that two times compare as (secs, nanos). False for anything else. */
bool ingest_time_instant(const char *s, long long *secs, long long *nanos);

#endif
