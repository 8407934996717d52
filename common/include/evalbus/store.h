/* store.h -- the object store: a folder (file://) or an S3-compatible bucket (s3://).
 * Exports and their manifests go through one interface whatever holds them: multipart uploads
 * cut by the caller into parts, small whole objects, presigned download URLs (S3 only) and
 * local paths (file only). docs/object-store.md describes configuration and semantics.
 *
 * Keys are relative to the store's root (file) or bucket prefix (s3) and are the same on both:
 * 1 to 1024 bytes of UTF-8, segments separated by '/', none of them empty, "." or ".."; no
 * leading or trailing '/'; no control characters (NUL cannot be passed in a C string at all).
 * Every function that takes a key refuses another with EB_ERR_INVALID.
 *
 * Errors: every function returns an eb_status and records a message with eb_error() (for S3,
 * the HTTP status, S3's error Code and Message and the request id); nothing here logs errors,
 * the caller does that once. Retries are logged at warn level. Secrets are never logged or put
 * in a message.
 *
 * Ownership: strings returned through char ** are the caller's to free(); inputs are borrowed
 * for the duration of the call. eb_store_free() releases everything the store holds.
 *
 * Threading: an eb_store is used by one thread at a time (it owns one libcurl handle, which
 * keeps its connections alive between requests). Opening one does no I/O and is cheap, so give
 * each thread its own. Different stores may be used from different threads at once. */
#ifndef EVALBUS_STORE_H
#define EVALBUS_STORE_H

#include "evalbus/mem.h"
#include "evalbus/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EB_STORE_MAX_KEY 1024                /* bytes, prefix included (S3's limit) */
#define EB_STORE_MAX_PARTS 10000             /* part numbers are 1 .. EB_STORE_MAX_PARTS */
#define EB_STORE_MIN_PART (5u * 1024 * 1024) /* S3's minimum for every part but the last */
#define EB_STORE_MAX_PART (5ull * 1024 * 1024 * 1024)
#define EB_STORE_DEFAULT_PART (8u * 1024 * 1024)
#define EB_STORE_DEFAULT_RETRIES 3
#define EB_STORE_DEFAULT_TIMEOUT_MS 60000L

typedef struct eb_store_config {
    const char *url;      /* "file:///abs/path" or "s3://bucket[/prefix]" */
    const char *endpoint; /* s3: "http://127.0.0.1:9000", "https://s3.eu-west-1.amazonaws.com";
                             NULL or "" = https://s3.<region>.amazonaws.com */
    const char *region;   /* s3: default "us-east-1" */
    const char *access_key_id, *secret_access_key; /* s3: required */
    const char *session_token;                     /* s3: temporary credentials; NULL for none */
    bool path_style; /* s3: https://host/bucket/key; else https://bucket.host/key */
    /* Informative: callers cut parts of this size (0 = EB_STORE_DEFAULT_PART). S3 wants
     * >= EB_STORE_MIN_PART for every part but the last. */
    size_t part_size;
    int retries;     /* s3: retries per request after the first try; 0 = default 3, < 0 = none */
    long timeout_ms; /* s3: whole-request limit; 0 = default 60000 */
    /* Completion refuses to replace an existing object (EB_ERR_CONFLICT): s3 sends
     * If-None-Match: * (AWS and Swift s3api answer 412; a store without conditional writes
     * would ignore it); file renames with RENAME_NOREPLACE. */
    bool no_overwrite;
} eb_store_config;

typedef struct eb_store eb_store;

/* Checks cfg (URL, endpoint, bucket name, credentials) and makes a store; no I/O. Bad settings
 * give EB_ERR_INVALID with a message naming the setting. cfg is copied. *out is freed with
 * eb_store_free(). */
eb_status eb_store_open(const eb_store_config *cfg, eb_store **out);
/* Frees the store and wipes the credentials it copied. NULL is fine. */
void eb_store_free(eb_store *s);

/* "file" or "s3". Static string. */
const char *eb_store_scheme(const eb_store *s);
/* The configured (or default) part size. */
size_t eb_store_part_size(const eb_store *s);

/* Creates what the store writes into: s3: PUT Bucket (an existing bucket of ours is fine);
 * file: mkdir -p of the root. */
eb_status eb_store_ensure_bucket(eb_store *s);

/* ---- multipart uploads ---------------------------------------------------------------------
 * begin, then parts (any order, a part may be sent again and the last one counts), then
 * complete with the list of parts in ascending part order -- or abort. Nothing is visible under
 * the key before complete succeeds. */

/* Starts an upload. s3: CreateMultipartUpload (content_type NULL = application/octet-stream);
 * file: creates "<root>/<key>.<upload_id>.partial" (and its parent folders), content_type is
 * ignored. *upload_id is the caller's to free. */
eb_status eb_store_upload_begin(eb_store *s, const char *key, const char *content_type,
                                char **upload_id);

/* Sends part part_no (1 .. EB_STORE_MAX_PARTS) of len bytes, which lies at byte offset of the
 * final object. s3: UploadPart, signed with the part's SHA-256 (offset unused), retried;
 * *etag is the server's ETag without quotes. file: written at offset into the partial file and
 * fdatasync'ed, *etag is the hex SHA-256 of the part. When this returns EB_OK the part is
 * durable. *etag is the caller's to free. */
eb_status eb_store_upload_part(eb_store *s, const char *key, const char *upload_id, int part_no,
                               uint64_t offset, const void *data, size_t len, char **etag);

typedef struct eb_store_part {
    int part_no;
    const char *etag; /* as eb_store_upload_part gave it (surrounding quotes are accepted) */
} eb_store_part;

/* Makes the object from parts[0..n) (ascending part_no, n >= 1), which must each match the
 * ETag of the last upload of that part: EB_ERR_INVALID otherwise (S3's InvalidPart,
 * InvalidPartOrder, EntityTooSmall). s3: CompleteMultipartUpload; a 200 answer whose body is an
 * <Error> is a failure; a retry that finds the upload already completed into the same object
 * succeeds. file: checks that the parts tile the object from offset 0 in part order and that
 * the bytes on disk still hash to their ETags, trims what lies beyond, fsyncs, renames the
 * partial file to the key and fsyncs the folder: a reader sees the whole object or nothing. */
eb_status eb_store_upload_complete(eb_store *s, const char *key, const char *upload_id,
                                   const eb_store_part *parts, size_t n);

/* Drops an upload and its parts. s3: AbortMultipartUpload; an upload that is already gone
 * (NoSuchUpload) is fine. file: removes the partial file. */
eb_status eb_store_upload_abort(eb_store *s, const char *key, const char *upload_id);

/* An unfinished upload. */
typedef struct eb_store_upload {
    char *key; /* relative to the store's prefix */
    char *upload_id;
} eb_store_upload;

/* Lists the unfinished uploads whose key starts with key_prefix (NULL or "" for all), at most
 * 100000. s3: ListMultipartUploads (every page); file: the partial files under the root.
 * *out (an array of *n, NULL when empty) is freed with eb_store_uploads_free(). */
eb_status eb_store_list_uploads(eb_store *s, const char *key_prefix, eb_store_upload **out,
                                size_t *n);
void eb_store_uploads_free(eb_store_upload *u, size_t n);

/* ---- whole objects ------------------------------------------------------------------------ */

/* Writes a small object (a manifest) in one request, replacing what was there. s3: PutObject
 * (content_type NULL = application/octet-stream); file: a temporary file, fsync, rename. */
eb_status eb_store_put(eb_store *s, const char *key, const char *content_type, const void *data,
                       size_t len);

/* Appends the object to out. EB_ERR_NOT_FOUND if there is none, EB_ERR_TOO_LARGE if it is
 * larger than max bytes (out is then left as it was). */
eb_status eb_store_get(eb_store *s, const char *key, eb_buf *out, size_t max);

/* Deletes the object; a missing one is not an error (as in S3). */
eb_status eb_store_delete(eb_store *s, const char *key);

/* ---- addresses ---------------------------------------------------------------------------- */

/* s3: a presigned GET URL valid for expires_s seconds (1 .. 604800) that anyone can fetch
 * without credentials. file: EB_ERR_INVALID (no URL to hand out). *url is the caller's. */
eb_status eb_store_presign_get(eb_store *s, const char *key, int expires_s, char **url);

/* file: the absolute path of the final object (it may not exist yet). s3: EB_ERR_INVALID.
 * *path is the caller's. */
eb_status eb_store_local_path(eb_store *s, const char *key, char **path);

/* A URL for display and logs: "s3://bucket/prefix/key" or "file:///root/key" (percent-encoded).
 * Holds no credentials. *url is the caller's. */
eb_status eb_store_url(eb_store *s, const char *key, char **url);

#endif
