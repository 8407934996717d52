/* status.h -- the one error type of evalbus.
 * Every fallible function returns an eb_status. eb_error() records a detail message (file, line,
 * text) in thread-local storage and returns the code, so that the place that handles a request
 * can log or answer it once. */
#ifndef EVALBUS_STATUS_H
#define EVALBUS_STATUS_H

typedef enum eb_status {
    EB_OK = 0,
    EB_ERR_INVALID,         /* bad input: malformed, wrong type, out of range */
    EB_ERR_NOT_FOUND,       /* no such object (or not visible to the caller's team) */
    EB_ERR_CONFLICT,        /* already exists / state does not allow it */
    EB_ERR_UNAUTHENTICATED, /* no credential, or one that does not verify */
    EB_ERR_FORBIDDEN,       /* a valid credential without the role or scope */
    EB_ERR_RATE_LIMITED,    /* a bucket is empty */
    EB_ERR_TOO_LARGE,       /* a size limit was exceeded */
    EB_ERR_UNAVAILABLE,     /* a dependency (NATS, PostgreSQL, Redis) is down */
    EB_ERR_TIMEOUT,         /* a dependency did not answer in time */
    EB_ERR_IO,              /* file or socket error */
    EB_ERR_DB,              /* PostgreSQL answered with an error */
    EB_ERR_INTERNAL,        /* a bug or an impossible state */
    EB_STATUS_COUNT
} eb_status;

/* Stable snake_case name of a status ("not_found"); used as the JSON error code. */
const char *eb_status_str(eb_status st);

/* HTTP status code that fits a status (EB_ERR_NOT_FOUND -> 404). */
int eb_status_http(eb_status st);

/* Records a formatted detail for the calling thread and returns code. Use through eb_error(). */
eb_status eb_error_at(const char *file, int line, eb_status code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define eb_error(code, ...) eb_error_at(__FILE__, __LINE__, (code), __VA_ARGS__)

/* The calling thread's last detail message ("" if none). Valid until the next eb_error(). */
const char *eb_error_message(void);
/* "file.c:123" of the last eb_error() on this thread. */
const char *eb_error_where(void);
void eb_error_clear(void);

#endif
