/* log.h -- JSON-lines logging.
 * One line per event on stderr: {"ts":"...","level":"info","service":"auth","msg":"...",
 * "request_id":"...", ...}. Thread-safe (one write(2) per line). Secrets must never be passed. */
#ifndef EVALBUS_LOG_H
#define EVALBUS_LOG_H

typedef enum eb_log_level {
    EB_LOG_DEBUG = 0,
    EB_LOG_INFO,
    EB_LOG_WARN,
    EB_LOG_ERROR,
} eb_log_level;

/* Sets the service name and minimum level ("debug", "info", "warn", "error"). Returns -1 for
 * an unknown level name. Call once at start-up, before threads start. */
int eb_log_init(const char *service, const char *level);
eb_log_level eb_log_get_level(void);

/* Logs msg with optional request id (NULL for none) and optional extra JSON members
 * (fields: a string of already-encoded members such as "\"status\":200", or NULL). */
void eb_log_write(eb_log_level lvl, const char *request_id, const char *fields, const char *fmt,
                  ...) __attribute__((format(printf, 4, 5)));

#define eb_log_debug(rid, ...) eb_log_write(EB_LOG_DEBUG, (rid), NULL, __VA_ARGS__)
#define eb_log_info(rid, ...) eb_log_write(EB_LOG_INFO, (rid), NULL, __VA_ARGS__)
#define eb_log_warn(rid, ...) eb_log_write(EB_LOG_WARN, (rid), NULL, __VA_ARGS__)
#define eb_log_error(rid, ...) eb_log_write(EB_LOG_ERROR, (rid), NULL, __VA_ARGS__)

#endif
