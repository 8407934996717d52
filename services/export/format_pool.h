/* format_pool.h -- rows formatted on several threads, output kept in row order (format_pool.c). */
#ifndef EVALBUS_EXPORT_FORMAT_POOL_H
#define EVALBUS_EXPORT_FORMAT_POOL_H

#include "evalbus/arena.h"
#include "format.h"
#include "redact.h"
#include "stats.h"

#include <stdbool.h>

typedef struct format_pool format_pool;

/* Formats one row (a binary COPY row, see export_record_from_row) with w into out and adds it to
 * stats: the record is built in arena, bound to this thread for the call and reset after it, so
 * the tree dies with the row; scratch is the builder's working space. With discard the output
 * is dropped (statistics only). The step every format thread, and the json format's single
 * thread, takes for each row. */
eb_status export_format_row(export_writer *w, eb_arena *arena, eb_buf *scratch, const char *row,
                            size_t len, bool discard, eb_buf *out, export_stats *stats);

/* Starts nthreads threads, each with a writer made from opt but with redactors[i] (NULL array:
 * no redaction); the redactors stay the caller's and must outlive the pool. With discard the
 * formatted output is dropped (statistics only). Only for formats whose records stand alone
 * (not EXPORT_JSON). Free with format_pool_free(). */
eb_status format_pool_new(int nthreads, const export_options *opt, redactor *const *redactors,
                          bool discard, format_pool **out);
/* Adds one row (a binary COPY row, copied; see export_record_from_row). Appends to out the
 * formatted output of every batch that is complete, in row order; may wait for the oldest batch
 * when all are busy. An error of a batch (a row not of the expected form, a redaction pattern
 * over its limit) is returned here. */
eb_status format_pool_add(format_pool *pool, const char *row, size_t len, eb_buf *out);
/* Formats what is left and appends the rest of the output, in order. */
eb_status format_pool_finish(format_pool *pool, eb_buf *out);
/* Adds every thread's statistics to dst (after finish). */
void format_pool_merge_stats(format_pool *pool, export_stats *dst);
/* Stops the threads (after the batch in hand) and frees everything. NULL is ignored. */
void format_pool_free(format_pool *pool);

#endif
