/* status.c -- eb_status names, HTTP mapping and the thread-local error detail.
 * The name table is indexed by the enum and checked against EB_STATUS_COUNT at compile time. */
#include "evalbus/status.h"
#include "evalbus/json.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const status_names[] = {
    [EB_OK] = "ok",
    [EB_ERR_INVALID] = "invalid_argument",
    [EB_ERR_NOT_FOUND] = "not_found",
    [EB_ERR_CONFLICT] = "conflict",
    [EB_ERR_UNAUTHENTICATED] = "unauthenticated",
    [EB_ERR_FORBIDDEN] = "forbidden",
    [EB_ERR_RATE_LIMITED] = "rate_limited",
    [EB_ERR_TOO_LARGE] = "too_large",
    [EB_ERR_UNAVAILABLE] = "unavailable",
    [EB_ERR_TIMEOUT] = "timeout",
    [EB_ERR_IO] = "io_error",
    [EB_ERR_DB] = "database_error",
    [EB_ERR_INTERNAL] = "internal",
};
_Static_assert(sizeof(status_names) / sizeof(status_names[0]) == EB_STATUS_COUNT,
               "status_names must name every eb_status");

static const short status_http[] = {
    [EB_OK] = 200,
    [EB_ERR_INVALID] = 400,
    [EB_ERR_NOT_FOUND] = 404,
    [EB_ERR_CONFLICT] = 409,
    [EB_ERR_UNAUTHENTICATED] = 401,
    [EB_ERR_FORBIDDEN] = 403,
    [EB_ERR_RATE_LIMITED] = 429,
    [EB_ERR_TOO_LARGE] = 413,
    [EB_ERR_UNAVAILABLE] = 503,
    [EB_ERR_TIMEOUT] = 504,
    [EB_ERR_IO] = 500,
    [EB_ERR_DB] = 500,
    [EB_ERR_INTERNAL] = 500,
};
_Static_assert(sizeof(status_http) / sizeof(status_http[0]) == EB_STATUS_COUNT,
               "status_http must map every eb_status");

static _Thread_local char err_msg[512];
static _Thread_local char err_where[128];

const char *eb_status_str(eb_status st)
{
    if ((unsigned)st >= EB_STATUS_COUNT)
        return "unknown";
    return status_names[st];
}

int eb_status_http(eb_status st)
{
    if ((unsigned)st >= EB_STATUS_COUNT)
        return 500;
    return status_http[st];
}

eb_status eb_error_at(const char *file, int line, eb_status code, const char *fmt, ...)
{
    va_list ap;
    const char *base = file;

    for (const char *p = file; *p; p++)
        if (*p == '/')
            base = p + 1;
    snprintf(err_where, sizeof(err_where), "%s:%d", base, line);
    va_start(ap, fmt);
    if (vsnprintf(err_msg, sizeof(err_msg), fmt, ap) >= (int)sizeof(err_msg))
        eb_utf8_trim_cut(err_msg); /* messages reach JSON answers: whole characters only */
    va_end(ap);
    return code;
}

const char *eb_error_message(void)
{
    return err_msg;
}

const char *eb_error_where(void)
{
    return err_where;
}

void eb_error_clear(void)
{
    err_msg[0] = '\0';
    err_where[0] = '\0';
}
