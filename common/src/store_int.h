/* store_int.h -- the pure helpers of store.c, declared for its unit tests
 * (tests/unit/test_store.c). Nothing here does I/O. Not part of the public interface. */
#ifndef EVALBUS_STORE_INT_H
#define EVALBUS_STORE_INT_H

#include "evalbus/mem.h"
#include "evalbus/status.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum eb_store_kind {
    EB_STORE_FILE = 1,
    EB_STORE_S3,
} eb_store_kind;

/* Where a store URL points. */
typedef struct eb_store_location {
    eb_store_kind kind;
    char *root;   /* file: absolute path, percent-decoded, no trailing '/' (unless it is "/") */
    char *bucket; /* s3 */
    char *prefix; /* s3: "" or a valid key followed by '/' */
} eb_store_location;

/* Parses "file:///abs/path" (also "file://localhost/abs/path"; %XX decoded) or
 * "s3://bucket[/prefix]" (prefix: a valid key; leading and trailing '/' dropped).
 * EB_ERR_INVALID with a message otherwise. Free *out with eb_store_location_free(). */
eb_status eb_store_parse_url(const char *url, eb_store_location *out);
void eb_store_location_free(eb_store_location *loc);

/* An S3 endpoint split for use: scheme, and host[:port] for the Host header. */
typedef struct eb_store_endpoint {
    bool https;
    char *host;      /* lowercase; the port only when not the scheme's default */
    bool ip_literal; /* host is an IPv4 or [IPv6] address (no virtual-host addressing) */
} eb_store_endpoint;

/* Parses "http[s]://host[:port][/]" (no user, path, query or fragment); NULL or "" gives
 * https://s3.<region>.amazonaws.com. Free with eb_store_endpoint_free(). */
eb_status eb_store_parse_endpoint(const char *endpoint, const char *region, eb_store_endpoint *out);
void eb_store_endpoint_free(eb_store_endpoint *ep);

/* EB_OK if key follows the rules in store.h, else EB_ERR_INVALID saying which it breaks. */
eb_status eb_store_check_key(const char *key);
/* EB_OK for an S3 bucket name (3-63 of a-z 0-9 . -, alphanumeric at both ends, no "..", not
 * an IPv4 address). */
eb_status eb_store_check_bucket(const char *bucket);

/* Appends the request path of an S3 object: "/bucket/prefix+key" (path-style, bucket given) or
 * "/prefix+key" (virtual-host, bucket NULL), prefix and key URI-encoded once with '/' kept.
 * key NULL addresses the bucket itself ("/bucket", or "/"). */
void eb_store_s3_path(eb_buf *out, const char *bucket, const char *prefix, const char *key);

/* XML (S3's answers): finds the next element <tag>...</tag> (exact name; attributes allowed on
 * the start tag; <tag/> is empty) in xml[0..len) at or after *pos. On success sets
 * *inner and *inner_len to its raw content and moves *pos past it. */
bool eb_store_xml_next(const char *xml, size_t len, const char *tag, size_t *pos,
                       const char **inner, size_t *inner_len);
/* Appends the text of the first element tag, with entities (&lt; &gt; &amp; &quot; &apos;
 * &#N; &#xH;) decoded. false if there is none or its text is malformed (out unchanged). */
bool eb_store_xml_text(const char *xml, size_t len, const char *tag, eb_buf *out);
/* Appends s with & < > " ' escaped. */
void eb_store_xml_escape(eb_buf *out, const char *s);

/* True if body holds an S3 <Error> document (also after the whitespace S3 sends while it
 * completes an upload under a 200); appends its Code, Message and RequestId (each if present). */
bool eb_store_s3_error(const char *body, size_t len, eb_buf *code, eb_buf *message,
                       eb_buf *request_id);

/* The eb_status for an S3 error answer: 412 is EB_ERR_CONFLICT whatever the code; otherwise by
 * S3 error code first (NoSuchKey, SignatureDoesNotMatch, ...), then by HTTP status. code may be
 * NULL or "". */
eb_status eb_store_s3_status(long http, const char *code);
/* True for answers worth retrying: 5xx (but 501), 408, 429, and the codes RequestTimeout,
 * SlowDown, InternalError, ServiceUnavailable, TooManyRequests whatever their status. */
bool eb_store_s3_retryable(long http, const char *code);

/* ETag without surrounding quotes and blanks, into out (size outsz); false if it does not fit
 * or is empty. */
bool eb_store_etag_clean(const char *etag, char *out, size_t outsz);

#endif
