/* body.h -- request bodies for ingest (gzip, the memory a JSON body takes parsed). */
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

/* EB_OK if the JSON text data[0..n) can be parsed in bounded memory: EB_ERR_TOO_LARGE when it
 * may hold so many values (cJSON makes a node of every one, whatever its size: a body of
 * "0,0,0,..." takes 32 times its size) that parsed it would take more than 16 times its size
 * (and 1 MiB). Works on bytes only, so a pool thread may run it. */
eb_status ingest_body_json_fits(const char *data, size_t n);

#endif
