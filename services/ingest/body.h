/* body.h -- request bodies for ingest (gzip). */
#ifndef EVALBUS_INGEST_BODY_H
#define EVALBUS_INGEST_BODY_H

#include "evalbus/status.h"

#include <stddef.h>

/* A request body raw[0..raw_len), inflated when its Content-Encoding enc (NULL when absent) is
 * gzip (at most max_inflated bytes: EB_ERR_TOO_LARGE beyond). *data points into raw unless it
 * was inflated; *owned is the buffer to free (NULL when not inflated). Works on bytes and a
 * header value only, so a pool thread may run it. */
eb_status ingest_body_decode(const char *raw, size_t raw_len, const char *enc, size_t max_inflated,
                             const char **data, size_t *len, char **owned);

#endif
