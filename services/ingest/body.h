/* body.h -- request bodies for ingest (gzip). */
#ifndef EVALBUS_INGEST_BODY_H
#define EVALBUS_INGEST_BODY_H

#include "evalbus/http.h"

/* The request body, inflated when Content-Encoding is gzip (at most max_inflated bytes:
 * EB_ERR_TOO_LARGE beyond). *owned is the buffer to free (NULL when *data points into the
 * request). */
eb_status ingest_body(eb_http_req *req, size_t max_inflated, const char **data, size_t *len,
                      char **owned);
/* The same for a body already taken from its request: raw[0..raw_len) with the request's
 * Content-Encoding enc (NULL when absent). *data points into raw unless it was inflated. */
eb_status ingest_body_decode(const char *raw, size_t raw_len, const char *enc, size_t max_inflated,
                             const char **data, size_t *len, char **owned);

#endif
