/* log.c -- JSON-lines logger.
 * Builds each line in a local buffer and emits it with a single write(2) so that lines from
 * several threads never interleave. Level and service name are set once at start-up. */
#include "evalbus/log.h"
#include "evalbus/json.h"
#include "evalbus/mem.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *log_service = "evalbus";
static eb_log_level log_level = EB_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

int eb_log_init(const char *service, const char *level)
{
    if (service)
        log_service = service;
    if (!level)
        return 0;
    for (int i = 0; i < 4; i++) {
        if (strcmp(level, level_names[i]) == 0) {
            log_level = (eb_log_level)i;
            return 0;
        }
    }
    return -1;
}

eb_log_level eb_log_get_level(void)
{
    return log_level;
}

void eb_log_write(eb_log_level lvl, const char *request_id, const char *fields, const char *fmt,
                  ...)
{
    eb_buf line = {0};
    eb_buf msg = {0};
    struct timeval tv;
    struct tm tm;
    char ts[40];
    va_list ap;

    if (lvl < log_level)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    va_start(ap, fmt);
    eb_buf_vprintf(&msg, fmt, ap);
    va_end(ap);

    eb_buf_printf(&line, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"service\":\"", ts,
                  (long)(tv.tv_usec / 1000), level_names[lvl]);
    eb_buf_json_escape(&line, log_service);
    eb_buf_puts(&line, "\",\"msg\":\"");
    eb_buf_json_escape(&line, msg.data ? msg.data : "");
    eb_buf_putc(&line, '"');
    if (request_id && *request_id) {
        eb_buf_puts(&line, ",\"request_id\":\"");
        eb_buf_json_escape(&line, request_id);
        eb_buf_putc(&line, '"');
    }
    if (fields && *fields) {
        eb_buf_putc(&line, ',');
        eb_buf_puts(&line, fields);
    }
    eb_buf_puts(&line, "}\n");
    if (write(STDERR_FILENO, line.data, line.len) < 0) {
        /* nowhere left to report it */
    }
    eb_buf_free(&line);
    eb_buf_free(&msg);
}
