/* main.c -- evalbus-ingest: traces in (JSON batch API, OTLP/HTTP, NATS TraceBatch), durable
 * in the JetStream stream INGEST, stored in PostgreSQL by the writer; reviews, scores, the
 * query API, deletion and retention.
 * Start-up: settings, the service skeleton (loop, NATS, PostgreSQL, Redis, HTTP), migrations
 * of the ingest schema, the streams and the writer's consumer (created with a connection of
 * their own), the auth client, the publisher, the decode pool (threads that turn JSON batches,
 * OTLP requests and NATS TraceBatches into records), NATS intake, writer threads, retention
 * thread.
 * Shutdown (SIGTERM): NATS intake leaves its queue group, HTTP drains; then a retention pass
 * under way is cancelled (it rolls back, unless already committing, and runs again after the
 * next start), and the writer finishes the batch in hand (anything not acknowledged stays in
 * the stream). Before that, records still waiting for JetStream's acknowledgement get it or
 * fail (publish-timeout at most), and their callers are answered. */
#include "evalbus/arena.h"
#include "evalbus/log.h"
#include "evalbus/metrics.h"
#include "evalbus/mem.h"
#include "ingest_int.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const eb_migration eb_migrations_ingest[];
extern const size_t eb_migrations_ingest_count;

#define T ingest_config
static const eb_setting settings[] = {
    /* db-pool: the writer threads (2), the API threads (2), a retention pass, the project guard
     * and a readiness probe each take one while they work */
    EB_SERVICE_SETTINGS(ingest_config, svc, "8081", "16MiB", "8"),
    EB_DB_IDLE_TX_SETTING(ingest_config, svc, "60s"),
    EB_AUTHC_SETTINGS(T, auth_cache_ttl_ms, auth_timeout_ms),
    {"publish-timeout", "EVALBUS_PUBLISH_TIMEOUT", EB_SET_DURATION, "5s", 100, 60000, false,
     offsetof(T, publish_timeout_ms), "wait for JetStream to acknowledge accepted traces"},
    {"max-batch-items", "EVALBUS_MAX_BATCH_ITEMS", EB_SET_INT, "1000", 1, 100000, false,
     offsetof(T, max_batch_items), "traces per batch (413 above)"},
    {"max-field-bytes", "EVALBUS_MAX_FIELD_BYTES", EB_SET_SIZE, "1MiB", 64, 67108864, false,
     offsetof(T, max_field_bytes), "one text field: content, arguments, input/output text"},
    {"max-observations", "EVALBUS_MAX_OBSERVATIONS", EB_SET_INT, "5000", 1, 1000000, false,
     offsetof(T, max_observations), "observations per trace"},
    {"max-messages", "EVALBUS_MAX_MESSAGES", EB_SET_INT, "1000", 1, 100000, false,
     offsetof(T, max_messages), "messages in one input or output"},
    {"max-trace-bytes", "EVALBUS_MAX_TRACE_BYTES", EB_SET_SIZE, "4MiB", 1024, 8000000, false,
     offsetof(T, max_trace_bytes),
     "one trace (it travels as one NATS message: keep it under the server's max_payload)"},
    {"stream-replicas", "EVALBUS_STREAM_REPLICAS", EB_SET_INT, "1", 1, 5, false,
     offsetof(T, stream_replicas), "replicas of the INGEST stream (3 on a 3-node NATS cluster)"},
    {"max-metadata-bytes", "EVALBUS_MAX_METADATA_BYTES", EB_SET_SIZE, "64KiB", 16, 16777216, false,
     offsetof(T, max_metadata_bytes), "metadata / attributes of one trace, as JSON"},
    {"writer-threads", "EVALBUS_WRITER_THREADS", EB_SET_INT, "2", 0, 8, false,
     offsetof(T, writer_threads),
     "writer threads, each with its own NATS connection (0: this replica only accepts)"},
    {"decode-threads", "EVALBUS_DECODE_THREADS", EB_SET_INT, "2", 1, 16, false,
     offsetof(T, decode_threads),
     "threads that inflate, parse, validate and pack JSON batches, OTLP requests and NATS"
     " TraceBatches (the loop thread only answers)"},
    EB_API_THREADS_SETTING(
        ingest_config, svc, "2",
        "threads that run the query, review, score, deletion and settings endpoints (they wait on"
        " PostgreSQL, so the loop thread does not); each takes one of db-pool's connections while"
        " it runs"),
    EB_QUERY_TIMEOUT_SETTING(ingest_config, svc, "30s",
                             "longest a statement of those endpoints may run, lock waits included"
                             " (504 after it; 0: no limit); a deletion is bounded in its lock"
                             " waits only (503 after it)"),
    {"writer-batch", "EVALBUS_WRITER_BATCH", EB_SET_INT, "500", 1, 5000, false,
     offsetof(T, writer_batch), "records per writer transaction at most"},
    {"stream-max-bytes", "EVALBUS_STREAM_MAX_BYTES", EB_SET_SIZE, "4GiB", 1048576, 1e15, false,
     offsetof(T, stream_max_bytes), "size of the INGEST stream (full, it refuses new records)"},
    {"stream-high-water", "EVALBUS_STREAM_HIGH_WATER", EB_SET_INT, "90", 20, 99, false,
     offsetof(T, stream_high_water),
     "percent of stream-max-bytes that records not yet stored may fill before new ones are "
     "refused (accepted again 10 points below)"},
    {"stream-purge-slice", "EVALBUS_STREAM_PURGE_SLICE", EB_SET_INT, "5000", 100, 1000000, false,
     offsetof(T, stream_purge_slice),
     "stored records purged from INGEST at a time when it needs room (a purge holds the "
     "stream's publishes: 5,000 records take a few milliseconds)"},
    /* nats-server keeps every message id of the window in memory and its garbage collector
     * walks them all: with a 2 min window and 200,000-300,000 ids a cycle took both cores for
     * 40-60 ms about once a second, and the intake's p99 with it (services/ingest/README.md) */
    {"stream-dupe-window", "EVALBUS_STREAM_DUPE_WINDOW", EB_SET_DURATION, "20s", 1000, 86400000,
     false, offsetof(T, stream_dupe_window_ms),
     "JetStream duplicate window of INGEST (at least publish-timeout)"},
    {"retention-days", "EVALBUS_RETENTION_DAYS", EB_SET_INT, "90", 1, 36500, false,
     offsetof(T, retention_days), "default retention of a project's traces"},
    {"retention-interval", "EVALBUS_RETENTION_INTERVAL", EB_SET_DURATION, "1h", 1000, 86400000,
     false, offsetof(T, retention_interval_ms), "how often retention runs"},
    {"delete-wait", "EVALBUS_DELETE_WAIT", EB_SET_DURATION, "10s", 0, 60000, false,
     offsetof(T, delete_wait_ms),
     "longest a deletion waits for the writers to store what was accepted before it (503 after"
     " it; 0: no wait, a trace none of whose records is stored yet is not found)"},
    {"review-reasons", "EVALBUS_REVIEW_REASONS", EB_SET_STRING,
     "incorrect,incomplete,hallucination,unsafe,off_topic,formatting,tool_misuse,other", 0, 0,
     false, offsetof(T, review_reasons),
     "reasons a reject may give (comma-separated; spaces around each are dropped)"},
};
#undef T

#define MEMBER EB_ROLE_MEMBER
#define VIEWER EB_ROLE_VIEWER
/* the listing's query parameters (api_traces_list); every other route takes none but OTLP,
 * whose exporters are configured with a URL and may keep a query string on it */
#define LIST_QUERY                                                                                 \
    "project from to model provider status review tag q score score_min score_max limit cursor"
const eb_http_route ingest_routes[] = {
    /* blocking: the handler waits on PostgreSQL, on the api pool (api-threads) */
    {"POST", "/api/v1/traces", api_traces_post, false, MEMBER, EB_SCOPE_TRACES_WRITE, false, false,
     NULL},
    {"GET", "/api/v1/traces", api_traces_list, false, VIEWER, EB_SCOPE_TRACES_READ, false, true,
     LIST_QUERY},
    {"POST", "/api/v1/traces/delete", api_traces_delete_by_filter, false, EB_ROLE_ADMIN,
     EB_SCOPE_ADMIN, false, true, NULL},
    {"GET", "/api/v1/traces/{id}", api_trace_get, false, VIEWER, EB_SCOPE_TRACES_READ, false, true,
     NULL},
    {"DELETE", "/api/v1/traces/{id}", api_trace_delete, false, EB_ROLE_ADMIN, EB_SCOPE_ADMIN, false,
     true, NULL},
    {"POST", "/api/v1/traces/{id}/review", api_review_post, false, MEMBER, EB_SCOPE_TRACES_WRITE,
     false, true, NULL},
    {"POST", "/api/v1/scores", api_score_post, false, MEMBER, EB_SCOPE_TRACES_WRITE, false, true,
     NULL},
    {"PUT", "/api/v1/projects/{project}/settings", api_project_settings_put, false, EB_ROLE_ADMIN,
     EB_SCOPE_ADMIN, false, true, NULL},
    {"GET", "/api/v1/projects/{project}/settings", api_project_settings_get, false, VIEWER,
     EB_SCOPE_TRACES_READ, false, true, NULL},
    {"POST", "/otlp/v1/traces", api_otlp_post, false, MEMBER, EB_SCOPE_TRACES_WRITE, false, false,
     "*"},
};
const size_t ingest_nroutes = sizeof(ingest_routes) / sizeof(ingest_routes[0]);

static bool check_writer(void *arg, char *detail, size_t len)
{
    ingest_ctx *ctx = arg;

    return !ctx->writer || ingest_writer_healthy(ctx->writer, detail, len);
}

static void on_stop(void *arg)
{
    ingest_nats_drain(arg);
}

int main(int argc, char **argv)
{
    ingest_config cfg = {0};
    ingest_ctx ctx = {0};
    int rc = 1;
    eb_status st;

    eb_arena_cjson_init(); /* before any thread: cJSON's hooks are global */
    eb_service_load_config("evalbus-ingest", settings, sizeof(settings) / sizeof(settings[0]), &cfg,
                           argc, argv);
    {
        char why[96];
        char *reasons = ingest_reasons_normalize(cfg.review_reasons, why, sizeof(why));
        if (!reasons) {
            fprintf(stderr, "evalbus-ingest: setting review-reasons: %s\n", why);
            eb_config_free(settings, sizeof(settings) / sizeof(settings[0]), &cfg);
            return 2;
        }
        free(cfg.review_reasons);
        cfg.review_reasons = reasons;
    }
    if (cfg.stream_dupe_window_ms < cfg.publish_timeout_ms) {
        /* a record whose acknowledgement timed out may still be stored: the caller's resend
         * must fall within the window to be recognised */
        fprintf(stderr,
                "evalbus-ingest: setting stream-dupe-window (%lld ms) must be at least "
                "publish-timeout (%lld ms)\n",
                (long long)cfg.stream_dupe_window_ms, (long long)cfg.publish_timeout_ms);
        eb_config_free(settings, sizeof(settings) / sizeof(settings[0]), &cfg);
        return 2;
    }
    ctx.cfg = &cfg;
    ctx.limits = INGEST_LIMITS_DEFAULT;
    ctx.limits.max_batch_items = (size_t)cfg.max_batch_items;
    ctx.limits.max_field_bytes = (size_t)cfg.max_field_bytes;
    ctx.limits.max_observations = (size_t)cfg.max_observations;
    ctx.limits.max_messages = (size_t)cfg.max_messages;
    ctx.limits.max_metadata_bytes = (size_t)cfg.max_metadata_bytes;
    ctx.limits.max_trace_bytes = (size_t)cfg.max_trace_bytes;
    st = eb_service_init(&ctx.svc, "ingest", &cfg.svc, ingest_routes, ingest_nroutes, &ctx);
    if (st != EB_OK) {
        fprintf(stderr, "evalbus-ingest: %s\n", eb_error_message());
        goto cleanup;
    }
    st = eb_db_migrate_wait(ctx.svc.db, "ingest", eb_migrations_ingest, eb_migrations_ingest_count,
                            60000);
    if (st == EB_OK)
        st = ingest_streams_ensure(&cfg, 60000);
    if (st == EB_OK)
        st = eb_authc_new(ctx.svc.base, ctx.svc.bus, "ingest", cfg.auth_cache_ttl_ms,
                          cfg.auth_timeout_ms, &ctx.authc);
    if (st == EB_OK)
        ctx.pub = ingest_publisher_new(ctx.svc.base, ctx.svc.bus, cfg.publish_timeout_ms, &st);
    if (st == EB_OK && !(ctx.pool = eb_pool_new(ctx.svc.base, (int)cfg.decode_threads, "decode")))
        st = eb_error(EB_ERR_INTERNAL, "cannot start the decode threads");
    if (st == EB_OK && !(ctx.guard_pool = eb_pool_new(ctx.svc.base, 1, "guard")))
        st = eb_error(EB_ERR_INTERNAL, "cannot start the project guard's thread");
    eb_metrics_describe("evalbus_ingest_project_checks_total", "counter",
                        "Questions whether a project-restricted key's trace ids are another"
                        " project's, by result (checked, failed, skipped)");
    eb_metrics_describe("evalbus_ingest_traces_accepted_total", "counter",
                        "Traces acknowledged by the stream, by source (json, nats)");
    eb_metrics_describe("evalbus_ingest_traces_rejected_total", "counter",
                        "Traces not accepted (JSON) or refused by validation (NATS), by source");
    eb_metrics_describe("evalbus_ingest_spans_accepted_total", "counter",
                        "OTLP spans acknowledged by the stream");
    eb_metrics_describe("evalbus_ingest_spans_rejected_total", "counter",
                        "OTLP spans rejected (partial_success)");
    eb_metrics_describe("evalbus_ingest_reviews_total", "counter", "Reviews written");
    if (st == EB_OK)
        st = ingest_deletions_start(&ctx);
    if (st == EB_OK)
        st = ingest_nats_start(&ctx);
    if (st != EB_OK) {
        eb_log_error(NULL, "start-up failed: %s", eb_error_message());
        goto cleanup;
    }
    eb_http_set_authenticator(ctx.svc.http, eb_authc_verify, ctx.authc);
    eb_http_add_check(ctx.svc.http, "writer", check_writer, &ctx, false);
    /* accepted traces wait in the stream while PostgreSQL is away: stay in rotation */
    eb_http_set_check_critical(ctx.svc.http, "postgres", false);
    if (cfg.writer_threads > 0)
        ctx.writer = ingest_writer_start(&ctx);
    ctx.watch = ingest_watch_start(&ctx);
    ctx.retention = ingest_retention_start(&ctx);
    ctx.svc.on_stop = on_stop;
    ctx.svc.on_stop_arg = &ctx;
    rc = eb_service_run(&ctx.svc);
    /* credentials still being verified are answered now, while the pools and the stream take
     * what follows; NATS batches not yet taken are answered unavailable from here on */
    ctx.stopping = true;
    eb_authc_stop(ctx.authc);
    /* what the threads still work on is answered too: decoded batches (HTTP requests, and NATS
     * batches whose credential was verified, also by eb_authc_stop from its cache) go on to the
     * guard and the stream, whose answers ingest_publisher_finish waits for */
    eb_pool_finish(ctx.pool);
    eb_pool_finish(ctx.guard_pool);
    ingest_publisher_finish(ctx.pub);
    /* NATS batches whose credential was verified meanwhile went to the decode threads and the
     * guard: their records are refused now (the publisher is closed) and answered; NATS batches
     * not yet taken are answered unavailable; then the loop turns until the answers that did
     * not wait for the stream (a 400, a batch refused whole, those) are written out */
    eb_pool_finish(ctx.pool);
    eb_pool_finish(ctx.guard_pool);
    ingest_nats_finish(&ctx);
    /* queries, reviews and deletions still running are answered last (a query runs up to
     * query-timeout; a large deletion by filter may run longer, and a process stopped by force
     * meanwhile rolls it back whole): also those whose credential or rate limit was settled in
     * the turns of the loop above */
    eb_pool_finish(ctx.svc.api);
    eb_service_flush(&ctx.svc, 1000);
cleanup:
    ingest_retention_stop(ctx.retention);
    ingest_watch_stop(ctx.watch);
    ingest_writer_stop(ctx.writer);
    ingest_nats_stop(&ctx);
    ingest_deletions_stop(&ctx);
    eb_pool_free(ctx.pool);
    eb_pool_free(ctx.guard_pool);
    eb_authc_free(ctx.authc);
    ingest_publisher_free(ctx.pub);
    eb_service_cleanup(&ctx.svc);
    eb_config_free(settings, sizeof(settings) / sizeof(settings[0]), &cfg);
    return rc;
}
