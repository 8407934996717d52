/* service.h -- what every evalbus service does the same way: common settings, one libevent
 * loop, the NATS connection, the PostgreSQL pool, Redis and rate limits, the HTTP server with
 * its readiness checks, and graceful shutdown on SIGTERM / SIGINT.
 *
 * A service embeds eb_service_config in its own config struct, lists EB_SERVICE_SETTINGS(...)
 * in its settings table, then calls eb_service_init() and eb_service_run(). */
#ifndef EVALBUS_SERVICE_H
#define EVALBUS_SERVICE_H

#include "evalbus/bus.h"
#include "evalbus/config.h"
#include "evalbus/db.h"
#include "evalbus/http.h"
#include "evalbus/pool.h"
#include "evalbus/ratelimit.h"
#include "evalbus/redis.h"

#include <stddef.h>

typedef struct eb_service_config {
    char *http_addr;
    long long http_port;
    char *nats_url;
    char *database_url;
    char *redis_url;
    char *log_level;
    long long max_body;
    long long db_pool;
    long long redis_timeout_ms;
    long long shutdown_delay_ms;
    long long shutdown_grace_ms;
    char *trusted_proxies;           /* peers whose X-Real-IP names the client (comma-separated) */
    long long db_idle_tx_timeout_ms; /* 0: PostgreSQL's own setting (EB_DB_IDLE_TX_SETTING) */
    long long api_threads;      /* 0: every handler runs on the loop (EB_API_THREADS_SETTING) */
    long long query_timeout_ms; /* 0: no limit (EB_QUERY_TIMEOUT_SETTING) */
} eb_service_config;

/* Settings rows for the eb_service_config member `m` of struct `T`; port is the default port,
 * body the default body limit and pool the default db-pool, as string literals ("8085",
 * "64KiB", "4"). */
#define EB_SERVICE_SETTINGS(T, m, port, body, pool)                                                \
    {"http-addr",                                                                                  \
     "EVALBUS_HTTP_ADDR",                                                                          \
     EB_SET_STRING,                                                                                \
     "127.0.0.1",                                                                                  \
     0,                                                                                            \
     0,                                                                                            \
     false,                                                                                        \
     offsetof(T, m.http_addr),                                                                     \
     "address the HTTP server binds"},                                                             \
        {"http-port", "EVALBUS_HTTP_PORT",      EB_SET_INT, port, 1, 65535,                        \
         false,       offsetof(T, m.http_port), "HTTP port"},                                      \
        {"nats-url",                                                                               \
         "EVALBUS_NATS_URL",                                                                       \
         EB_SET_STRING,                                                                            \
         "nats://127.0.0.1:8086",                                                                  \
         0,                                                                                        \
         0,                                                                                        \
         false,                                                                                    \
         offsetof(T, m.nats_url),                                                                  \
         "NATS server URL(s), comma-separated"},                                                   \
        {"database-url",                                                                           \
         "EVALBUS_DATABASE_URL",                                                                   \
         EB_SET_STRING,                                                                            \
         "postgresql://evalbus@127.0.0.1:8087/evalbus",                                            \
         0,                                                                                        \
         0,                                                                                        \
         true,                                                                                     \
         offsetof(T, m.database_url),                                                              \
         "PostgreSQL connection URI"},                                                             \
        {"redis-url",                                                                              \
         "EVALBUS_REDIS_URL",                                                                      \
         EB_SET_STRING,                                                                            \
         "redis://127.0.0.1:8088",                                                                 \
         0,                                                                                        \
         0,                                                                                        \
         true,                                                                                     \
         offsetof(T, m.redis_url),                                                                 \
         "Redis URL (rate limits, caches); empty disables Redis"},                                 \
        {"log-level",                                                                              \
         "EVALBUS_LOG_LEVEL",                                                                      \
         EB_SET_STRING,                                                                            \
         "info",                                                                                   \
         0,                                                                                        \
         0,                                                                                        \
         false,                                                                                    \
         offsetof(T, m.log_level),                                                                 \
         "debug | info | warn | error"},                                                           \
        {"max-body",                                                                               \
         "EVALBUS_MAX_BODY",                                                                       \
         EB_SET_SIZE,                                                                              \
         body,                                                                                     \
         1,                                                                                        \
         1073741824.0,                                                                             \
         false,                                                                                    \
         offsetof(T, m.max_body),                                                                  \
         "largest accepted HTTP request body (413 above)"},                                        \
        {"db-pool",                                                                                \
         "EVALBUS_DB_POOL",                                                                        \
         EB_SET_INT,                                                                               \
         pool,                                                                                     \
         1,                                                                                        \
         256,                                                                                      \
         false,                                                                                    \
         offsetof(T, m.db_pool),                                                                   \
         "PostgreSQL connections per process"},                                                    \
        {"redis-timeout",                                                                          \
         "EVALBUS_REDIS_TIMEOUT",                                                                  \
         EB_SET_DURATION,                                                                          \
         "250ms",                                                                                  \
         1,                                                                                        \
         60000,                                                                                    \
         false,                                                                                    \
         offsetof(T, m.redis_timeout_ms),                                                          \
         "wait for Redis before deciding a rate limit locally"},                                   \
        {"shutdown-delay",                                                                         \
         "EVALBUS_SHUTDOWN_DELAY",                                                                 \
         EB_SET_DURATION,                                                                          \
         "250ms",                                                                                  \
         0,                                                                                        \
         600000,                                                                                   \
         false,                                                                                    \
         offsetof(T, m.shutdown_delay_ms),                                                         \
         "after SIGTERM, keep accepting this long while /readyz says 503"},                        \
        {"shutdown-grace",                                                                         \
         "EVALBUS_SHUTDOWN_GRACE",                                                                 \
         EB_SET_DURATION,                                                                          \
         "10s",                                                                                    \
         0,                                                                                        \
         3600000,                                                                                  \
         false,                                                                                    \
         offsetof(T, m.shutdown_grace_ms),                                                         \
         "then wait this long for requests in flight"},                                            \
    {                                                                                              \
        "trusted-proxies", "EVALBUS_TRUSTED_PROXIES", EB_SET_STRING, "127.0.0.1,::1", 0, 0, false, \
            offsetof(T, m.trusted_proxies),                                                        \
            "addresses of the proxies (the edge) whose X-Real-IP header names the client, for "    \
            "per-client rate limits and logs (comma-separated; empty: none)"                       \
    }

/* The settings row that ends a PostgreSQL session idle inside a transaction this long
 * (idle_in_transaction_session_timeout, set on each pooled connection), for services whose
 * transactions never wait on anything but their own statements; dflt as a string ("60s").
 * A service without the row leaves PostgreSQL's setting alone. */
#define EB_DB_IDLE_TX_SETTING(T, m, dflt)                                                          \
    {                                                                                              \
        "db-idle-tx-timeout", "EVALBUS_DB_IDLE_TX_TIMEOUT", EB_SET_DURATION, dflt, 0, 86400000,    \
            false, offsetof(T, m.db_idle_tx_timeout_ms),                                           \
            "PostgreSQL ends a session of this service idle in a transaction this long (0: the "   \
            "server's setting)"                                                                    \
    }

/* The settings row for the threads that run the handlers of blocking routes (http.h), those
 * that wait on PostgreSQL or the CPU, so that the loop thread never does; dflt as a string ("2"),
 * help says what runs there. A service without the row runs every handler on its loop. */
#define EB_API_THREADS_SETTING(T, m, dflt, help)                                                   \
    {                                                                                              \
        "api-threads", "EVALBUS_API_THREADS", EB_SET_INT, dflt, 1, 16, false,                      \
            offsetof(T, m.api_threads), help                                                       \
    }

/* The settings row that bounds every statement of an HTTP handler's transaction
 * (eb_req_db_begin: statement_timeout, lock waits included; 504 timeout after it), so that a query
 * waiting on a lock does not hold an API thread for good; dflt as a string ("30s"), help says
 * what it covers. A service without the row leaves PostgreSQL's setting alone. */
#define EB_QUERY_TIMEOUT_SETTING(T, m, dflt, help)                                                 \
    {                                                                                              \
        "query-timeout", "EVALBUS_QUERY_TIMEOUT", EB_SET_DURATION, dflt, 0, 3600000, false,        \
            offsetof(T, m.query_timeout_ms), help                                                  \
    }

typedef struct eb_service {
    const char *name;
    struct event_base *base;
    eb_bus *bus;
    eb_db *db;
    eb_redis *redis;
    eb_ratelimit *rl;
    eb_http_server *http;
    eb_pool *api; /* runs the handlers of blocking routes (api-threads); NULL without the setting */
    struct event *sig_term;
    struct event *sig_int;
    int exit_code;
    void (*on_stop)(void *arg); /* optional: called when shutdown starts */
    void *on_stop_arg;
} eb_service;

/* Database access from an HTTP handler. eb_req_db_begin takes a pooled connection and opens
 * a transaction scoped to the caller's team (system = false) or to every team (system = true:
 * credential lookups and the like); it answers 503 itself and returns NULL when it cannot.
 * eb_req_db_commit commits and returns the connection; on failure it answers the error and
 * returns false. eb_req_db_fail rolls back, returns the connection and answers st with the last
 * error message. After any of the three the connection belongs to the pool again. */
PGconn *eb_req_db_begin(eb_db *db, eb_http_req *req, bool system);
/* Like eb_req_db_begin (the caller's team) for a read-only transaction whose statements all see
 * one snapshot (eb_db_begin_team_snapshot): for answers read with several statements. */
PGconn *eb_req_db_begin_read(eb_db *db, eb_http_req *req);
bool eb_req_db_commit(eb_db *db, eb_http_req *req, PGconn *conn);
void eb_req_db_fail(eb_db *db, eb_http_req *req, PGconn *conn, eb_status st);

/* Loads settings. Ends the process (the only place outside main that does, since nothing has
 * started yet): status 2 on a bad value, 0 after printing --help. */
void eb_service_load_config(const char *program, const eb_setting *tab, size_t n, void *cfg,
                            int argc, char **argv);

/* Creates the loop, connects NATS / PostgreSQL / Redis (none needs to be up yet), and builds
 * the HTTP server (not yet listening) with readiness checks for each. */
eb_status eb_service_init(eb_service *svc, const char *name, const eb_service_config *cfg,
                          const eb_http_route *routes, size_t nroutes, void *ctx);
/* Listens, runs the loop until SIGTERM/SIGINT has drained the server; returns the exit code.
 * Handlers still running on the api threads then are answered by eb_pool_finish(svc->api)
 * (which the service calls where its shutdown wants them; eb_service_cleanup does otherwise). */
int eb_service_run(eb_service *svc);
/* After eb_service_run, for answers given since the loop ended (callbacks run at shutdown, the
 * API threads' last answers) and answers still being written: turns the loop until every HTTP
 * answer is written out whole and the NATS connection has written what it holds, limit_ms at
 * most (an answer to a client that stopped reading is cut off then, with a warning). Timers
 * that are due run too: free those that must not before calling it. */
void eb_service_flush(eb_service *svc, int limit_ms);
/* Answers what the api threads still run (eb_pool_finish), then frees everything
 * eb_service_init made. */
void eb_service_cleanup(eb_service *svc);

#endif
