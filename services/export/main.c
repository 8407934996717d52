/* main.c -- evalbus-export: export jobs (API, the JetStream work queue EXPORTS, workers),
 * streamed exports and dataset statistics.
 * Start-up: settings, the service skeleton (loop, NATS, PostgreSQL, Redis, HTTP), migrations
 * of the export schema, the EXPORTS stream and the workers' durable consumer (on a connection
 * of their own), the auth client, the worker threads, the scheduler.
 * Shutdown (SIGTERM): the event streams end and the streamed exports stop (their threads joined
 * before the loop is freed); HTTP drains; workers stop at their next progress tick and put the
 * job they hold back (another replica restarts it cleanly). */
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "export_int.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern const eb_migration eb_migrations_export[];
extern const size_t eb_migrations_export_count;

#define T export_config
static const eb_setting settings[] = {
    EB_SERVICE_SETTINGS(export_config, svc, "8082", "1MiB", "4"),
    EB_AUTHC_SETTINGS(T, auth_cache_ttl_ms, auth_timeout_ms),
    EB_QUERY_TIMEOUT_SETTING(export_config, svc, "30s",
                             "longest a statement of the API's handlers may run (jobs, settings,"
                             " schedules, a download's job lookup), lock waits included (504"
                             " timeout after it; 0: no limit)"),
    EB_API_THREADS_SETTING(export_config, svc, "2",
                           "threads that run the API's endpoints, the event streams' job reads and "
                           "the scheduler's passes (they wait on PostgreSQL and the stream, so the "
                           "loop thread does not); each takes one of db-pool's connections while "
                           "it runs"),
    {"workers", "EVALBUS_EXPORT_WORKERS", EB_SET_INT, "2", 0, 16, false, offsetof(T, workers),
     "export worker threads (0: this replica only answers the API)"},
    {"part-size", "EVALBUS_EXPORT_PART_SIZE", EB_SET_SIZE, "8MiB", 65536, 5368709120.0, false,
     offsetof(T, part_size), "upload part size (S3 needs >= 5 MiB except for the last part)"},
    {"max-active-jobs", "EVALBUS_EXPORT_MAX_ACTIVE_JOBS", EB_SET_INT, "3", 1, 1000, false,
     offsetof(T, max_active_jobs), "queued or running export jobs per team (429 above)"},
    {"max-attempts", "EVALBUS_EXPORT_MAX_ATTEMPTS", EB_SET_INT, "3", 1, 100, false,
     offsetof(T, max_attempts), "attempts of one job before it fails"},
    {"job-ack-wait", "EVALBUS_EXPORT_ACK_WAIT", EB_SET_DURATION, "30s", 2000, 3600000, false,
     offsetof(T, job_ack_wait_ms),
     "a job whose worker stops answering goes to another worker after this long"},
    {"gzip-level", "EVALBUS_EXPORT_GZIP_LEVEL", EB_SET_INT, "1", 1, 9, false,
     offsetof(T, gzip_level), "gzip compression level"},
    {"zstd-level", "EVALBUS_EXPORT_ZSTD_LEVEL", EB_SET_INT, "1", 1, 19, false,
     offsetof(T, zstd_level), "zstd compression level"},
    {"presign-expiry", "EVALBUS_EXPORT_PRESIGN_EXPIRY", EB_SET_DURATION, "15m", 60000, 604800000,
     false, offsetof(T, presign_expiry_ms), "lifetime of presigned download URLs"},
    {"stream-max-rows", "EVALBUS_EXPORT_STREAM_MAX_ROWS", EB_SET_INT, "100000", 1, 100000000, false,
     offsetof(T, stream_max_rows), "rows of one streamed export (GET .../stream)"},
    {"schedule-interval", "EVALBUS_EXPORT_SCHEDULE_INTERVAL", EB_SET_DURATION, "30s", 1000, 3600000,
     false, offsetof(T, schedule_interval_ms), "how often due schedules are looked for"},
    {"schedule-stuck-after", "EVALBUS_EXPORT_SCHEDULE_STUCK_AFTER", EB_SET_DURATION, "5m", 1000,
     86400000, false, offsetof(T, schedule_stuck_after_ms),
     "warn about an ingest transaction open this long (it holds scheduled runs back)"},
    {"object-store", "EVALBUS_OBJECT_STORE", EB_SET_STRING, "file:///var/lib/evalbus/exports", 0, 0,
     false, offsetof(T, object_store), "where exports go: file:///path or s3://bucket/prefix"},
    {"s3-endpoint", "EVALBUS_S3_ENDPOINT", EB_SET_STRING, "", 0, 0, false, offsetof(T, s3_endpoint),
     "S3 endpoint URL (empty: AWS for the region)"},
    {"s3-region", "EVALBUS_S3_REGION", EB_SET_STRING, "us-east-1", 0, 0, false,
     offsetof(T, s3_region), "S3 region"},
    {"s3-access-key-id", "EVALBUS_S3_ACCESS_KEY_ID", EB_SET_STRING, "", 0, 0, true,
     offsetof(T, s3_access_key_id), "S3 access key id"},
    {"s3-secret-access-key", "EVALBUS_S3_SECRET_ACCESS_KEY", EB_SET_STRING, "", 0, 0, true,
     offsetof(T, s3_secret_access_key), "S3 secret access key"},
    {"s3-path-style", "EVALBUS_S3_PATH_STYLE", EB_SET_BOOL, "true", 0, 0, false,
     offsetof(T, s3_path_style), "path-style addressing (false: virtual-host style)"},
    {"stream-replicas", "EVALBUS_STREAM_REPLICAS", EB_SET_INT, "1", 1, 5, false,
     offsetof(T, stream_replicas), "replicas of the EXPORTS stream (3 on a 3-node NATS cluster)"},
    {"s3-retries", "EVALBUS_S3_RETRIES", EB_SET_INT, "3", 0, 20, false, offsetof(T, s3_retries),
     "retries of one S3 request (each part on its own)"},
};
#undef T

#define VIEWER EB_ROLE_VIEWER
#define MEMBER EB_ROLE_MEMBER
/* Exports, datasets and their settings cover the whole team: project-restricted keys get 403
 * (team_wide). Blocking routes wait on PostgreSQL (and creation on the EXPORTS stream) on the api
 * threads (a download's file and an event stream are then sent from the loop); streams and
 * statistics answer from the loop and run their queries on threads of their own. */
/* the filter's query parameters (export_filter_from_query); the lists repeat */
#define FILTER_QUERY                                                                               \
    "since until project* model* provider* status* review_state* tag* score_name score_min"        \
    " score_max successful_only"
static const eb_http_route routes[] = {
    {"POST", "/api/v1/exports", api_exports_create, false, MEMBER, EB_SCOPE_EXPORTS_WRITE, true,
     true, NULL},
    {"GET", "/api/v1/exports", api_exports_list, false, VIEWER, EB_SCOPE_EXPORTS_READ, true, true,
     "state limit cursor"},
    {"GET", "/api/v1/exports/stream", api_exports_stream, false, VIEWER, EB_SCOPE_EXPORTS_READ,
     true, false, "format compression anonymize limit " FILTER_QUERY},
    {"GET", "/api/v1/exports/{id}", api_exports_get, false, VIEWER, EB_SCOPE_EXPORTS_READ, true,
     true, NULL},
    {"DELETE", "/api/v1/exports/{id}", api_exports_cancel, false, MEMBER, EB_SCOPE_EXPORTS_WRITE,
     true, true, NULL},
    {"GET", "/api/v1/exports/{id}/download", api_exports_download, false, VIEWER,
     EB_SCOPE_EXPORTS_READ, true, true, NULL},
    {"GET", "/api/v1/exports/{id}/events", api_exports_events, false, VIEWER, EB_SCOPE_EXPORTS_READ,
     true, true, NULL},
    {"GET", "/api/v1/datasets/statistics", api_datasets_statistics, false, VIEWER,
     EB_SCOPE_EXPORTS_READ, true, false, "format anonymize " FILTER_QUERY},
    {"GET", "/api/v1/export-settings", api_export_settings_get, false, VIEWER,
     EB_SCOPE_EXPORTS_READ, true, true, NULL},
    {"PUT", "/api/v1/export-settings", api_export_settings_put, false, EB_ROLE_ADMIN,
     EB_SCOPE_ADMIN, true, true, NULL},
    {"POST", "/api/v1/export-schedules", api_schedules_create, false, MEMBER,
     EB_SCOPE_EXPORTS_WRITE, true, true, NULL},
    {"GET", "/api/v1/export-schedules", api_schedules_list, false, VIEWER, EB_SCOPE_EXPORTS_READ,
     true, true, NULL},
    {"DELETE", "/api/v1/export-schedules/{id}", api_schedules_delete, false, MEMBER,
     EB_SCOPE_EXPORTS_WRITE, true, true, NULL},
};

eb_status export_store_open(const export_config *cfg, const char *destination, eb_store **out)
{
    eb_store_config sc = {0};

    sc.url = destination ? destination : cfg->object_store;
    sc.endpoint = cfg->s3_endpoint[0] ? cfg->s3_endpoint : NULL;
    sc.region = cfg->s3_region;
    sc.access_key_id = cfg->s3_access_key_id;
    sc.secret_access_key = cfg->s3_secret_access_key;
    sc.path_style = cfg->s3_path_style;
    sc.part_size = (size_t)cfg->part_size;
    sc.retries = (int)cfg->s3_retries;
    sc.timeout_ms = 120000;
    return eb_store_open(&sc, out);
}

static eb_status ensure_streams(eb_bus *bus, const export_config *cfg)
{
    jsStreamConfig sc;
    jsConsumerConfig cc;
    const char *subjects[] = {EXPORTS_SUBJECT_PREFIX ">"};
    eb_status st;

    jsStreamConfig_Init(&sc);
    sc.Name = EXPORTS_STREAM;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Retention = js_WorkQueuePolicy;
    sc.Duplicates = 120LL * 1000000000LL;
    sc.MaxAge = 7LL * 24 * 3600 * 1000000000LL;
    sc.Replicas = cfg->stream_replicas;
    st = eb_bus_ensure_stream(bus, &sc);
    if (st != EB_OK)
        return st;
    jsConsumerConfig_Init(&cc);
    cc.Durable = EXPORTS_WORKER_DURABLE;
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = cfg->job_ack_wait_ms * 1000000LL;
    cc.MaxAckPending = 1000;
    cc.DeliverPolicy = js_DeliverAll;
    return eb_bus_ensure_consumer(bus, EXPORTS_STREAM, &cc);
}

static eb_status ensure_cb(eb_bus *bus, const void *arg)
{
    return ensure_streams(bus, arg);
}

eb_status export_streams_ensure(const export_config *cfg, long long give_up_ms)
{
    return eb_bus_setup(cfg->svc.nats_url, "evalbus-export-setup", ensure_cb, cfg, give_up_ms);
}

/* SIGTERM / SIGINT, before HTTP drains: the event streams end now, and the streamed exports
 * stop, so that the drain does not wait for them (an event stream would last until its job ends,
 * an hour at most; a streamed export as long as its rows). */
static void on_stop(void *arg)
{
    export_events_stop(arg);
    export_pulls_stop(arg);
}

int main(int argc, char **argv)
{
    export_config cfg = {0};
    export_ctx ctx = {0};
    eb_store *probe = NULL;
    int rc = 1;
    eb_status st;

    eb_service_load_config("evalbus-export", settings, sizeof(settings) / sizeof(settings[0]), &cfg,
                           argc, argv);
    ctx.cfg = &cfg;
    export_pipeline_init();
    st = export_store_open(&cfg, NULL, &probe);
    if (st == EB_OK)
        st = eb_store_ensure_bucket(probe);
    eb_store_free(probe);
    if (st == EB_ERR_INVALID) {
        fprintf(stderr, "evalbus-export: object store %s: %s\n", cfg.object_store,
                eb_error_message());
        goto cleanup;
    }
    if (st != EB_OK) /* e.g. no right to create the bucket, or the store is not up yet */
        fprintf(stderr, "evalbus-export: warning: object store %s not checked: %s\n",
                cfg.object_store, eb_error_message());
    st = eb_service_init(&ctx.svc, "export", &cfg.svc, routes, sizeof(routes) / sizeof(routes[0]),
                         &ctx);
    if (st != EB_OK) {
        fprintf(stderr, "evalbus-export: %s\n", eb_error_message());
        goto cleanup;
    }
    st = eb_db_migrate_wait(ctx.svc.db, "export", eb_migrations_export, eb_migrations_export_count,
                            60000);
    if (st == EB_OK)
        st = export_streams_ensure(&cfg, 60000);
    if (st == EB_OK)
        st = eb_bus_connect(NULL, cfg.svc.nats_url, "evalbus-export-queue", 0, &ctx.queue_bus);
    if (st == EB_OK)
        st = eb_authc_new(ctx.svc.base, ctx.svc.bus, "export", cfg.auth_cache_ttl_ms,
                          cfg.auth_timeout_ms, &ctx.authc);
    if (st != EB_OK) {
        eb_log_error(NULL, "start-up failed: %s", eb_error_message());
        goto cleanup;
    }
    eb_http_set_authenticator(ctx.svc.http, eb_authc_verify, ctx.authc);
    if (cfg.workers > 0)
        ctx.workers = export_workers_start(&ctx);
    export_scheduler_start(&ctx);
    ctx.svc.on_stop = on_stop;
    ctx.svc.on_stop_arg = &ctx;
    rc = eb_service_run(&ctx.svc);
    /* the streamed exports' threads stopped at SIGTERM (on_stop): joined here, so that none
     * writes to the loop once it is freed, even when the drain's grace ran out first */
    export_pulls_wait(&ctx);
    /* requests still waiting for their credential are answered now (unavailable, unless a
     * cached entry serves), then those still on the api threads, and the loop turns until
     * these answers are written out; the
     * schedule's timer goes first, so that no pass starts meanwhile (one under way ends there) */
    if (ctx.schedule_timer) {
        event_free(ctx.schedule_timer);
        ctx.schedule_timer = NULL;
    }
    eb_authc_stop(ctx.authc);
    eb_pool_finish(ctx.svc.api);
    eb_service_flush(&ctx.svc, 1000);
cleanup:
    export_workers_stop(ctx.workers);
    if (ctx.schedule_timer)
        event_free(ctx.schedule_timer);
    eb_authc_free(ctx.authc);
    eb_bus_close(ctx.queue_bus);
    eb_service_cleanup(&ctx.svc);
    eb_config_free(settings, sizeof(settings) / sizeof(settings[0]), &cfg);
    return rc;
}
