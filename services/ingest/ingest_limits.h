/* ingest_limits.h -- the size limits ingest applies to what it accepts (settings, but for
 * max_id_bytes and max_tags, which are fixed). */
#ifndef EVALBUS_INGEST_INGEST_LIMITS_H
#define EVALBUS_INGEST_INGEST_LIMITS_H

#include <stddef.h>

typedef struct ingest_limits {
    size_t max_batch_items;    /* traces per JSON batch or TraceBatch (default 1000) */
    size_t max_field_bytes;    /* one string field: content, arguments, input/output text (1 MiB) */
    size_t max_id_bytes;       /* ids, names, project, model, ... (256) */
    size_t max_messages;       /* messages in one input or output (1000) */
    size_t max_observations;   /* observations of one trace (5000) */
    size_t max_tags;           /* tags of one trace (64) */
    size_t max_metadata_bytes; /* metadata / attributes, as compact JSON (64 KiB) */
    size_t max_trace_bytes;    /* one trace, as JSON (4 MiB) */
} ingest_limits;

#define INGEST_LIMITS_DEFAULT ((ingest_limits){1000, 1048576, 256, 1000, 5000, 64, 65536, 4194304})

#endif
