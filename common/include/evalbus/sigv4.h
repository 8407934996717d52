/* sigv4.h -- AWS Signature Version 4 (AWS4-HMAC-SHA256) for S3-compatible object stores.
 * One request description (eb_sigv4_request) feeds every step: the canonical request, the string
 * to sign, the signature, the Authorization header value, the headers the signer adds, and a
 * presigned URL. Nothing here does I/O; the S3 client builds the HTTP request from the output.
 * Ownership: every input is borrowed for the duration of the call only. Outputs are appended to
 * the caller's eb_buf, which the caller owns and frees; a call that fails leaves the buffer as it
 * was. Secrets: the secret key and derived keys are wiped from the memory this module uses.
 * Threading: every function is reentrant. */
#ifndef EVALBUS_SIGV4_H
#define EVALBUS_SIGV4_H

#include "evalbus/mem.h"
#include "evalbus/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define EB_SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
/* Payload hash for a body that is not signed (S3 accepts it; presigned URLs use it). */
#define EB_SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
/* Hex SHA-256 of the empty string: the payload hash of a request without a body. */
#define EB_SIGV4_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/* Longest lifetime of a presigned URL that AWS accepts: seven days. */
#define EB_SIGV4_MAX_EXPIRES 604800u

/* A name and a value: a header, or a query parameter (decoded, not yet percent-encoded). */
typedef struct eb_sigv4_pair {
    const char *name;
    const char *value; /* NULL is the same as "" */
} eb_sigv4_pair;

/* How the path becomes the canonical URI. The path given is always the path as it goes on the
 * request line, already percent-encoded (build it with eb_sigv4_uri_encode(..., keep_slash)). */
typedef enum eb_sigv4_path_rule {
    /* S3: the path is used exactly as sent -- encoded once, never normalized, so "//", "." and
     * ".." in an object key stay what they are. */
    EB_SIGV4_PATH_S3 = 0,
    /* Other AWS services: the path is URI-encoded a second time, without normalization. */
    EB_SIGV4_PATH_ENCODE,
    /* Other AWS services, the usual case: "." and ".." segments and empty segments are removed
     * (RFC 3986 section 5.2.4), then the path is URI-encoded a second time. */
    EB_SIGV4_PATH_NORMALIZE,
} eb_sigv4_path_rule;

/* Where the signature travels. */
typedef enum eb_sigv4_mode {
    EB_SIGV4_HEADER, /* Authorization header, with X-Amz-Date and friends as headers */
    EB_SIGV4_QUERY,  /* presigned URL: X-Amz-* query parameters */
} eb_sigv4_mode;

/* One request to sign. Zero-initialise, then fill in. All strings are NUL-terminated UTF-8 or
 * ASCII and borrowed by each call. */
typedef struct eb_sigv4_request {
    const char *method; /* "GET", "PUT", ... (upper-case letters) */
    const char *path;   /* request-line path, percent-encoded, starting with '/'; "" means "/" */
    eb_sigv4_path_rule path_rule;
    const eb_sigv4_pair *query; /* decoded names and values, any order, duplicates allowed */
    size_t nquery;
    /* The request's own headers, any case and order; duplicates are joined with ','. Must hold
     * Host. Every header given is signed. In header mode do not pass the headers the signer adds
     * itself (X-Amz-Date, Authorization, X-Amz-Security-Token when a token is set,
     * X-Amz-Content-SHA256 when content_sha256_header is set). */
    const eb_sigv4_pair *headers;
    size_t nheaders;
    /* Lowercase hex SHA-256 of the body, or EB_SIGV4_UNSIGNED_PAYLOAD; NULL means the empty
     * body (EB_SIGV4_EMPTY_SHA256). */
    const char *payload_hash;
    /* Header mode: add and sign X-Amz-Content-SHA256 with payload_hash (S3 requires it). */
    bool content_sha256_header;
    const char *region;  /* "us-east-1"; S3-compatible stores often accept any */
    const char *service; /* "s3" */
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* temporary credentials (STS); NULL or "" for none */
    /* Send the session token but leave it out of the signature (a few services want this;
     * S3 does not). */
    bool omit_session_token;
    time_t time;      /* signing time, seconds since the epoch (UTC) */
    unsigned expires; /* query mode: lifetime in seconds, 1 .. EB_SIGV4_MAX_EXPIRES */
} eb_sigv4_request;

/* Appends s[0..n) percent-encoded as AWS requires (RFC 3986): A-Z a-z 0-9 - . _ ~ stay, every
 * other byte becomes %XX with upper-case hex; '/' stays too when keep_slash (for paths). */
void eb_sigv4_uri_encode(eb_buf *out, const char *s, size_t n, bool keep_slash);

/* Writes t as ISO 8601 basic UTC time ("20130524T000000Z") into out. EB_ERR_INVALID for a time
 * outside the years 1970 .. 9999. */
eb_status eb_sigv4_amz_date(time_t t, char out[17]);

/* Derives the signing key HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 * "aws4_request") for date ("20130524"); the caller should eb_cleanse() out when done. */
void eb_sigv4_signing_key(const char *secret_key, const char *date, const char *region,
                          const char *service, unsigned char out[32]);

/* Appends the canonical request for mode. EB_ERR_INVALID (with detail) on a malformed request. */
eb_status eb_sigv4_canonical_request(const eb_sigv4_request *r, eb_sigv4_mode mode, eb_buf *out);

/* Appends the string to sign: algorithm, time, scope (date/region/service/aws4_request) and the
 * hex SHA-256 of the canonical request, on four lines. */
eb_status eb_sigv4_string_to_sign(const eb_sigv4_request *r, eb_sigv4_mode mode, eb_buf *out);

/* Writes the lowercase hex signature (64 characters and a NUL) for mode. */
eb_status eb_sigv4_signature(const eb_sigv4_request *r, eb_sigv4_mode mode, char out[65]);

/* Appends the value of the Authorization header (header mode):
 * "AWS4-HMAC-SHA256 Credential=AK/scope, SignedHeaders=a;b, Signature=hex". */
eb_status eb_sigv4_authorization(const eb_sigv4_request *r, eb_buf *out);

/* Appends every header the signer adds to the request, one "Name: value\r\n" line each, ready
 * for curl_slist_append once split: X-Amz-Date, X-Amz-Content-SHA256 (if content_sha256_header),
 * X-Amz-Security-Token (if a token is set) and Authorization. */
eb_status eb_sigv4_sign_headers(const eb_sigv4_request *r, eb_buf *out);

/* Appends a presigned URL: base (e.g. "https://bucket.s3.amazonaws.com", NULL for none), the
 * path as given, '?' and the signed query -- the request's own parameters and the X-Amz-*
 * parameters, encoded and sorted exactly as signed -- then X-Amz-Signature. The headers in r are
 * signed and must be sent with the URL unchanged (Host at least). */
eb_status eb_sigv4_presign(const eb_sigv4_request *r, const char *base, eb_buf *out);

#endif
