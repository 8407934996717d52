/* record.h -- a trace's record built from the columns of ingest.export_traces (binary COPY). */
#ifndef EVALBUS_EXPORT_RECORD_H
#define EVALBUS_EXPORT_RECORD_H

#include "evalbus/status.h"
#include "evalbus/mem.h"

#include <cjson/cJSON.h>
#include <stddef.h>

/* The select list (view alias v) whose rows export_record_from_row() turns into the record: the
 * record's keys in order, each column cast to the type whose binary form is read here. */
#define EXPORT_RECORD_COLUMNS                                                                      \
    "v.id::text, v.project::text, v.name::text, v.model::text, v.provider::text,"                  \
    " v.status::text, v.status_message::text, v.start_time::timestamptz,"                          \
    " v.end_time::timestamptz, v.latency_ms::float8, v.input_tokens::int8,"                        \
    " v.output_tokens::int8, v.total_tokens::int8, v.cost_usd::float8, v.input::jsonb,"            \
    " v.output::jsonb, v.tool_calls::jsonb, v.metadata::jsonb, v.tags::text[],"                    \
    " v.session_id::text, v.user_id::text, v.environment::text, v.release::text,"                  \
    " v.review_state::text, v.source::text, v.attributes::jsonb, v.observations::json,"            \
    " v.reviews::json, v.scores::json"
#define EXPORT_RECORD_NCOLS 29

/* Builds the record of one binary COPY row (row: the tuple from its 16-bit field count on, len
 * bytes) into *out: with EXPORT_RECORD_NCOLS columns, from the columns above; with one column,
 * by parsing it as JSON text (a record, or a preference pair). scratch is working space kept by
 * the caller between rows. EB_ERR_INTERNAL when the row does not have the expected form. */
eb_status export_record_from_row(const char *row, size_t len, eb_buf *scratch, cJSON **out);

#endif
