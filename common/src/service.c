/* service.c -- the shared skeleton of an evalbus service process.
 * Start-up order: settings, logging, libevent with pthreads support (NATS callbacks run on
 * other threads and may wake the loop), NATS (retrying in the background), PostgreSQL pool
 * (lazy), Redis (optional, reconnecting), rate limiter, HTTP server. Shutdown: the first SIGTERM
 * or SIGINT starts eb_http_shutdown(); when it has drained, the loop exits. */
#include "evalbus/service.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"

#include <event2/thread.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void eb_service_load_config(const char *program, const eb_setting *tab, size_t n, void *cfg,
                            int argc, char **argv)
{
    bool help = false;

    if (eb_config_load(tab, n, cfg, argc, argv, &help) != EB_OK) {
        fprintf(stderr, "%s: %s\n", program, eb_error_message());
        exit(2);
    }
    if (help) {
        eb_config_print_help(tab, n, program, stdout);
        exit(0);
    }
}

static PGconn *req_db_begin(eb_db *db, eb_http_req *req, bool system, bool snapshot)
{
    PGconn *c = eb_db_get(db);
    const char *team = system ? NULL : eb_http_req_principal(req)->team_id;
    eb_status st;

    if (!c) {
        eb_http_reply_error(req, EB_ERR_UNAVAILABLE, "the database is unavailable; retry later");
        return NULL;
    }
    st = system     ? eb_db_begin_system(c)
         : snapshot ? eb_db_begin_team_snapshot(c, team)
                    : eb_db_begin_team(c, team);
    if (st == EB_OK && (st = eb_db_request_limits(db, c)) != EB_OK)
        eb_db_rollback(c);
    if (st != EB_OK) {
        eb_db_put(db, c);
        eb_http_reply_status(req, st);
        return NULL;
    }
    return c;
}

PGconn *eb_req_db_begin(eb_db *db, eb_http_req *req, bool system)
{
    return req_db_begin(db, req, system, false);
}

PGconn *eb_req_db_begin_read(eb_db *db, eb_http_req *req)
{
    return req_db_begin(db, req, false, true);
}

bool eb_req_db_commit(eb_db *db, eb_http_req *req, PGconn *conn)
{
    eb_status st = eb_db_commit(conn);

    eb_db_put(db, conn);
    if (st != EB_OK) {
        eb_http_reply_status(req, st);
        return false;
    }
    return true;
}

void eb_req_db_fail(eb_db *db, eb_http_req *req, PGconn *conn, eb_status st)
{
    eb_db_rollback(conn);
    eb_db_put(db, conn);
    eb_http_reply_status(req, st);
}

static bool check_db(void *arg, char *detail, size_t len)
{
    return eb_db_ping(arg, detail, len);
}

static bool check_nats(void *arg, char *detail, size_t len)
{
    bool ok = eb_bus_connected(arg);

    if (!ok)
        snprintf(detail, len, "not connected to NATS");
    return ok;
}

static bool check_redis(void *arg, char *detail, size_t len)
{
    eb_service *svc = arg;
    bool ok = eb_redis_connected(svc->redis);

    if (!ok)
        snprintf(detail, len, "%s; rate limits are applied locally per replica",
                 svc->redis ? "Redis unreachable" : "Redis not configured");
    return ok;
}

static void on_drained(void *arg)
{
    eb_service *svc = arg;

    eb_log_info(NULL, "drained; exiting");
    event_base_loopexit(svc->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    eb_service *svc = arg;

    (void)what;
    eb_log_info(NULL, "received %s; shutting down gracefully",
                sig == SIGTERM ? "SIGTERM" : "SIGINT");
    if (svc->on_stop)
        svc->on_stop(svc->on_stop_arg);
    eb_http_shutdown(svc->http, on_drained, svc);
}

eb_status eb_service_init(eb_service *svc, const char *name, const eb_service_config *cfg,
                          const eb_http_route *routes, size_t nroutes, void *ctx)
{
    eb_status st;
    eb_http_options ho = {0};
    char bad[64];

    memset(svc, 0, sizeof(*svc));
    svc->name = name;
    if (eb_log_init(name, cfg->log_level) != 0)
        return eb_error(EB_ERR_INVALID,
                        "setting log-level (EVALBUS_LOG_LEVEL): '%s' is not one "
                        "of debug, info, warn, error",
                        cfg->log_level);
    signal(SIGPIPE, SIG_IGN);
    /* NATS delivery threads and worker threads would each get a malloc arena of their own;
     * two keep the resident size small at the same speed for these services */
    mallopt(M_ARENA_MAX, 2);
    if (evthread_use_pthreads() != 0)
        return eb_error(EB_ERR_INTERNAL, "libevent has no pthreads support");
    svc->base = event_base_new();
    if (!svc->base)
        return eb_error(EB_ERR_INTERNAL, "cannot create the event loop");
    st = eb_bus_connect(svc->base, cfg->nats_url, name, 0, &svc->bus);
    if (st != EB_OK)
        return st;
    svc->db = eb_db_open(cfg->database_url, (int)cfg->db_pool, name, cfg->db_idle_tx_timeout_ms);
    eb_db_set_request_timeout(svc->db, cfg->query_timeout_ms);
    if (cfg->redis_url && *cfg->redis_url) {
        st = eb_redis_new(svc->base, cfg->redis_url, &svc->redis);
        if (st != EB_OK)
            return eb_error(st, "setting redis-url (EVALBUS_REDIS_URL): %s", eb_error_message());
    }
    svc->rl = eb_ratelimit_new(svc->base, svc->redis, cfg->redis_timeout_ms);
    if (!eb_http_proxies_valid(cfg->trusted_proxies, bad))
        return eb_error(EB_ERR_INVALID,
                        "setting trusted-proxies (EVALBUS_TRUSTED_PROXIES): '%s' is neither an"
                        " address nor a network (address/bits)",
                        bad);
    ho.service = name;
    ho.addr = cfg->http_addr;
    ho.port = (int)cfg->http_port;
    ho.max_body = (size_t)cfg->max_body;
    ho.shutdown_delay_ms = cfg->shutdown_delay_ms;
    ho.shutdown_grace_ms = cfg->shutdown_grace_ms;
    ho.trusted_proxies = cfg->trusted_proxies;
    svc->http = eb_http_server_new(svc->base, &ho, routes, nroutes, ctx);
    eb_http_set_ratelimit(svc->http, svc->rl);
    if (cfg->api_threads > 0) {
        svc->api = eb_pool_new(svc->base, (int)cfg->api_threads, "api");
        if (!svc->api)
            return eb_error(EB_ERR_INTERNAL, "cannot start the API threads");
        eb_http_set_workers(svc->http, svc->api);
    }
    eb_http_add_check(svc->http, "postgres", check_db, svc->db, true);
    eb_http_add_check(svc->http, "nats", check_nats, svc->bus, true);
    eb_http_add_check(svc->http, "redis", check_redis, svc, false);
    svc->sig_term = evsignal_new(svc->base, SIGTERM, on_signal, svc);
    svc->sig_int = evsignal_new(svc->base, SIGINT, on_signal, svc);
    event_add(svc->sig_term, NULL);
    event_add(svc->sig_int, NULL);
    return EB_OK;
}

int eb_service_run(eb_service *svc)
{
    if (eb_http_listen(svc->http) != EB_OK) {
        eb_log_error(NULL, "%s", eb_error_message());
        return 1;
    }
    eb_log_info(NULL, "%s ready to serve", svc->name);
    event_base_dispatch(svc->base);
    return svc->exit_code;
}

void eb_service_flush(eb_service *svc, int limit_ms)
{
    natsConnection *nc = svc->bus ? eb_bus_conn(svc->bus) : NULL;
    const struct timeval tick = {0, 5000};

    event_base_loop(svc->base, EVLOOP_NONBLOCK);
    for (int waited = 0;
         ((nc && natsConnection_Buffered(nc) > 0) || eb_http_sending(svc->http) > 0) &&
         waited < limit_ms;
         waited += 5) {
        event_base_loopexit(svc->base, &tick);
        event_base_dispatch(svc->base);
    }
    if (eb_http_sending(svc->http) > 0)
        eb_log_warn(NULL, "shutdown: %d HTTP answers not written out whole after %d ms; cut off",
                    eb_http_sending(svc->http), limit_ms);
}

void eb_service_cleanup(eb_service *svc)
{
    if (svc->sig_term)
        event_free(svc->sig_term);
    if (svc->sig_int)
        event_free(svc->sig_int);
    eb_pool_finish(svc->api);
    eb_pool_free(svc->api);
    eb_http_server_free(svc->http);
    eb_ratelimit_free(svc->rl);
    eb_redis_free(svc->redis);
    eb_bus_close(svc->bus);
    eb_db_close(svc->db);
    if (svc->base)
        event_base_free(svc->base);
    memset(svc, 0, sizeof(*svc));
}
