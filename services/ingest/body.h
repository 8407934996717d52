/* body.h -- request bodies for ingest (gzip). */
#ifndef EVALBUS_INGEST_BODY_H
#define EVALBUS_INGEST_BODY_H

#include "evalbus/http.h"

/* The request body, inflated when Content-Encoding is gzip (at most max_inflated bytes:
 * EB_ERR_TOO_LARGE beyond). *owned is the buffer to free (NULL when *data points into the
 * request). */
eb_status ingest_body(eb_http_req *req, size_t max_inflated, const char **data, size_t *len,
                      char **owned);

#endif
