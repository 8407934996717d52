/* export_int.h -- private interfaces between the files of the export service. */
#ifndef EVALBUS_EXPORT_INT_H
#define EVALBUS_EXPORT_INT_H

#include "evalbus/authc.h"
#include "evalbus/service.h"
#include "evalbus/store.h"
#include "format.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#define EXPORTS_STREAM "EXPORTS"
#define EXPORTS_SUBJECT_PREFIX "evalbus.v1.exports.jobs."
#define EXPORTS_PROGRESS_PREFIX "evalbus.v1.exports.progress."
#define EXPORTS_WORKER_DURABLE "export-worker"

typedef struct export_config {
    eb_service_config svc;
    long long auth_cache_ttl_ms;
    long long auth_timeout_ms;
    long long workers;
    long long part_size;
    long long max_active_jobs;
    long long max_attempts;
    long long job_ack_wait_ms;
    long long gzip_level;
    long long zstd_level;
    long long presign_expiry_ms;
    long long stream_max_rows;
    long long schedule_interval_ms;
    long long schedule_stuck_after_ms;
    char *object_store; /* file:///path or s3://bucket/prefix */
    char *s3_endpoint;
    char *s3_region;
    char *s3_access_key_id;
    char *s3_secret_access_key;
    bool s3_path_style;
    long long s3_retries;
    long long stream_replicas;
} export_config;

typedef struct export_workers export_workers;
typedef struct sse_watch sse_watch; /* an open event stream (api_exports.c) */
typedef struct pull pull;           /* a streamed export or statistics request (api_stream.c) */

typedef struct export_ctx {
    export_config *cfg;
    eb_service svc;
    eb_authc *authc;
    export_workers *workers;
    /* a NATS connection with the client's own I/O threads (not the loop): job messages are
     * published synchronously (JetStream acknowledgement awaited) from the API threads (job
     * creation) and the loop thread (the scheduler) */
    eb_bus *queue_bus;
    struct event *schedule_timer;
    bool warned_blind; /* the scheduler warned that ingest's sessions are invisible (loop) */
    LIST_HEAD(, sse_watch) watches; /* the open event streams (loop) */
    LIST_HEAD(, pull) pulls; /* the streamed exports and statistics requests running (loop) */
    bool stopping;           /* shutdown began: event streams end, pulls stop (on_stop; loop) */
} export_ctx;

/* ---- jobs.c: the job specification (request body), filters as SQL, job rows as JSON ---- */

/* A parsed, validated export request. Strings are owned by the spec. */
typedef struct export_spec {
    export_format format;
    char *compression; /* "gzip" | "zstd" | "none" */
    bool anonymize;
    cJSON *filter;     /* normalized filter object (owned) */
    cJSON *fields;     /* {"include": [...], "exclude": [...]} (owned) */
    char *destination; /* NULL = the configured store */
} export_spec;

/* Parses body (POST /api/v1/exports, or a schedule's spec) into *spec. EB_ERR_INVALID with a
 * message naming the field. Free with export_spec_clear(). */
eb_status export_spec_parse(const cJSON *body, const export_config *cfg, export_spec *spec);
void export_spec_clear(export_spec *spec);
/* Parses filter query parameters (GET .../statistics, .../stream) into a filter object. */
eb_status export_filter_from_query(eb_http_req *req, cJSON **filter);
/* Checks a destination URL: it must lie inside the configured store (same scheme, bucket or
 * folder; a deeper prefix is allowed). */
eb_status export_destination_check(const export_config *cfg, const char *dest);

/* Sets opt's include / exclude lists from a spec's fields ({"include": [...], "exclude":
 * [...]}); the strings stay fields'. Free the lists with export_options_clear_fields. */
void export_options_set_fields(export_options *opt, const cJSON *fields);
void export_options_clear_fields(export_options *opt);

/* Appends to sql the WHERE conditions (after "WHERE team_id = ...") that a filter selects on
 * the view ingest.export_traces (alias v), with literals escaped for conn. */
eb_status export_filter_sql(PGconn *conn, const cJSON *filter, eb_buf *sql);
/* The whole SELECT for a job's rows, in a stable order: the record's columns
 * (EXPORT_RECORD_COLUMNS, record.h), or for openai-preference one text column, the pair. count_only
 * gives SELECT count(*) of the same rows. */
eb_status export_query_sql(PGconn *conn, const char *team_id, export_format format,
                           const cJSON *filter, bool count_only, eb_buf *sql);

/* Column list and JSON of a job row, for the API (SELECT EXPORT_JOB_COLS FROM export.jobs). */
#define EXPORT_JOB_TIME(c) "to_char(" c " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
#define EXPORT_JOB_COLS                                                                            \
    "id, state, format, compression, anonymize, filter::text, fields::text, "                      \
    "destination, " EXPORT_JOB_TIME("created_at") ", " EXPORT_JOB_TIME(                            \
        "started_at") ", " EXPORT_JOB_TIME("finished_at") ", rows_done, bytes_done, total_rows, "  \
                                                          "rate_rows,"                             \
                                                          " result::text, error::text, "           \
                                                          "cancel_requested, attempts, "           \
                                                          "schedule_id"
cJSON *export_job_json(const PGresult *r, int row);

/* ---- store config ---- */
/* The store of a job: destination (may be NULL) or the configured default. */
eb_status export_store_open(const export_config *cfg, const char *destination, eb_store **out);

/* ---- api_exports.c, api_stream.c, scheduler.c ---- */
void api_exports_create(eb_http_req *req, void *ctx);
void api_exports_list(eb_http_req *req, void *ctx);
void api_exports_get(eb_http_req *req, void *ctx);
void api_exports_cancel(eb_http_req *req, void *ctx);
void api_exports_download(eb_http_req *req, void *ctx);
void api_exports_events(eb_http_req *req, void *ctx);
void api_exports_stream(eb_http_req *req, void *ctx);
void api_datasets_statistics(eb_http_req *req, void *ctx);
/* Loop thread, when shutdown begins: tells every streamed export and statistics request to stop
 * (its thread's next write fails and its statement is cancelled); each then answers 503
 * unavailable if nothing went out yet, else its body is cut short (no terminating chunk), unless
 * it had finished whole. Requests asked for from now on are answered 503 at once. */
void export_pulls_stop(export_ctx *ctx);
/* Loop thread, after the loop's run: turns the loop until every pull's thread is joined and the
 * pull freed (so that none touches the loop after it is freed). */
void export_pulls_wait(export_ctx *ctx);
void api_export_settings_get(eb_http_req *req, void *ctx);
void api_export_settings_put(eb_http_req *req, void *ctx);
void api_schedules_create(eb_http_req *req, void *ctx);
void api_schedules_list(eb_http_req *req, void *ctx);
void api_schedules_delete(eb_http_req *req, void *ctx);
/* Loop thread, when shutdown begins: ends every open event stream (a client gets a complete
 * body, and may reconnect to another replica) and frees its watch; one whose job read is running
 * ends when the read returns (on the loop, or in eb_pool_finish of the API threads). Streams
 * asked for from now on end at once, without an event. */
void export_events_stop(export_ctx *ctx);

/* Creates a job row from spec in the open transaction of conn (team scoped) and returns its id
 * in id_out[37]. */
eb_status export_job_insert(PGconn *conn, const eb_principal *p, const export_spec *spec,
                            const char *schedule_id, char id_out[37]);
/* Publishes the job to the EXPORTS work queue and waits for JetStream's acknowledgement (at most
 * 2 s). bus must not be driven by the calling thread's event loop (use ctx->queue_bus). */
eb_status export_job_enqueue(eb_bus *bus, const char *team_id, const char *team_slug,
                             const char *job_id);

/* ---- scheduler.c ---- */
void export_scheduler_start(export_ctx *ctx);

/* ---- streams ---- */
eb_status export_streams_ensure(const export_config *cfg, long long give_up_ms);

/* ---- worker.c ---- */
export_workers *export_workers_start(export_ctx *ctx);
void export_workers_stop(export_workers *w);

/* ---- pipeline.c: rows out of PostgreSQL, through format, redaction and compression ---- */
typedef struct export_sink {
    /* receives compressed output; returns EB_OK or an error that stops the run */
    eb_status (*write)(void *arg, const void *data, size_t len);
    /* called about once a second with the counts so far; a non-OK status stops the run
     * (EB_ERR_CONFLICT = cancelled) */
    eb_status (*tick)(void *arg, uint64_t rows, uint64_t bytes_out);
    void *arg;
} export_sink;

typedef struct export_run {
    /* in */
    const char *team_id;
    export_format format;
    const cJSON *filter;
    const cJSON *fields;
    const char *compression;
    int level;
    bool anonymize;
    bool stats_only;   /* statistics without output */
    uint64_t max_rows; /* 0 = no limit */
    /* out */
    bool count_rows;     /* count the total alongside (for progress) */
    uint64_t total_rows; /* rows the query selects: counted alongside, exact at the end */
    uint64_t rows;       /* records read */
    uint64_t records;    /* records written (read minus skipped) */
    uint64_t bytes_out;  /* compressed bytes handed to the sink */
    uint64_t bytes_raw;  /* bytes before compression */
    cJSON *statistics;   /* owned by the caller after the run */
} export_run;

/* Installs the pipeline's cJSON allocation hooks (per-row arenas); call once in main() before
 * any thread starts. */
void export_pipeline_init(void);

/* Runs the export in one REPEATABLE READ READ ONLY transaction on conn (a connection of the
 * caller's own, not a pooled one), loading the team's pseudonymization key and patterns through
 * ctl (another connection; NULL = conn before the transaction). */
eb_status export_pipeline_run(PGconn *conn, export_run *run, const export_config *cfg,
                              const export_sink *sink);

/* n redactors (one per thread that redacts) over the team's pseudonymization key (created on
 * first use) and patterns, read once in a transaction of its own on conn. On failure out[] are
 * all NULL. The caller frees each with redact_free(). */
eb_status export_team_redactors(PGconn *conn, const char *team_id, struct redactor **out, size_t n);

#endif
