/* api_stream.c -- exports answered in the HTTP response itself: GET /api/v1/exports/stream
 * (any format, chunked transfer encoding, for small and medium pulls) and
 * GET /api/v1/datasets/statistics (the statistics of what an export would hold, without
 * writing it).
 *
 * The export pipeline blocks (COPY, compression), so each request runs it on a thread of its
 * own with a PostgreSQL connection of its own, at most MAX_STREAMS at a time per process (429
 * above). The thread hands output to the loop thread through a queue under a mutex and wakes
 * the loop (event_active); the loop writes it to the client. The queue is bounded (4 MiB): the
 * thread waits while the client reads slowly, so memory stays flat. A client that goes away
 * stops the thread at its next write.
 * Errors before the first byte are ordinary JSON errors; after it the response ends early
 * (the client sees an incomplete chunked body).
 * Shutdown (export_pulls_stop, at SIGTERM): each thread is told to stop (its next write or tick
 * fails, and the statement it waits on is cancelled); what it had not finished is answered 503
 * before the first byte, or cut short after it, so that no cut export looks complete. The loop
 * turns until every thread is joined (export_pulls_wait), before it is freed.
 * Ownership: a pull is the loop's (listed in ctx->pulls from its start to its free); the fields
 * under mu (queue, finished, gone, stopping, cancel, st, errmsg) are shared with its thread; run
 * is the thread's until finished. */
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "export_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum {
    QUEUE_MAX = 4 * 1024 * 1024,
    MAX_STREAMS = 4,
};

static atomic_int active_pulls;

struct pull {
    export_ctx *ctx;
    eb_http_req *req;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct event *wake;
    LIST_ENTRY(pull) link; /* ctx->pulls (loop) */
    eb_buf queue;
    bool started, finished, gone, replied;
    bool stopping;    /* the service shuts down: the thread stops (set by the loop) */
    PGcancel *cancel; /* cancels the thread's statement (the thread's, lent under mu) */
    eb_status st;
    char *errmsg;
    export_run run;
    cJSON *filter;
    char team_id[41];
};

/* Under mu: why the thread must stop producing (an error recorded), or EB_OK. */
static eb_status must_stop(const pull *pl)
{
    if (pl->gone)
        return eb_error(EB_ERR_CONFLICT, "the client went away");
    if (pl->stopping)
        return eb_error(EB_ERR_UNAVAILABLE, "the service is shutting down; ask again");
    return EB_OK;
}

static eb_status pull_write(void *arg, const void *data, size_t len)
{
    pull *pl = arg;
    eb_status st;

    pthread_mutex_lock(&pl->mu);
    while (pl->queue.len > QUEUE_MAX && !pl->gone && !pl->stopping)
        pthread_cond_wait(&pl->cv, &pl->mu);
    st = must_stop(pl);
    if (st == EB_OK)
        eb_buf_append(&pl->queue, data, len);
    pthread_mutex_unlock(&pl->mu);
    event_active(pl->wake, EV_READ, 0);
    return st;
}

static eb_status pull_tick(void *arg, uint64_t rows, uint64_t bytes)
{
    pull *pl = arg;
    eb_status st;

    (void)rows;
    (void)bytes;
    pthread_mutex_lock(&pl->mu);
    st = must_stop(pl);
    pthread_mutex_unlock(&pl->mu);
    return st;
}

static void *pull_main(void *arg)
{
    pull *pl = arg;
    export_sink sink = {pull_write, pull_tick, pl};
    PGconn *c = PQconnectdb(pl->ctx->cfg->svc.database_url);
    PGcancel *cancel = NULL;
    eb_status st;

    if (PQstatus(c) != CONNECTION_OK) {
        st = eb_error(EB_ERR_UNAVAILABLE, "PostgreSQL is unavailable");
    } else {
        /* lent to the loop, which cancels the statement under way at shutdown (a COPY waiting
         * on a lock, or a sort before the first row, would not see the stop for long) */
        cancel = PQgetCancel(c);
        pthread_mutex_lock(&pl->mu);
        pl->cancel = cancel;
        st = must_stop(pl);
        pthread_mutex_unlock(&pl->mu);
        if (st == EB_OK)
            st = export_pipeline_run(c, &pl->run, pl->ctx->cfg, &sink);
        pthread_mutex_lock(&pl->mu);
        pl->cancel = NULL;
        pthread_mutex_unlock(&pl->mu);
        PQfreeCancel(cancel);
    }
    PQfinish(c);
    pthread_mutex_lock(&pl->mu);
    pl->st = st;
    if (st != EB_OK)
        pl->errmsg = eb_strdup(eb_error_message());
    pl->finished = true;
    pthread_mutex_unlock(&pl->mu);
    event_active(pl->wake, EV_READ, 0);
    return NULL;
}

/* Loop thread, once the thread has finished: joins it, takes the pull off ctx->pulls, frees it. */
static void pull_free(pull *pl)
{
    pthread_join(pl->tid, NULL);
    LIST_REMOVE(pl, link);
    event_free(pl->wake);
    pthread_mutex_destroy(&pl->mu);
    pthread_cond_destroy(&pl->cv);
    eb_buf_free(&pl->queue);
    free(pl->errmsg);
    cJSON_Delete(pl->filter);
    cJSON_Delete(pl->run.statistics);
    free(pl);
    atomic_fetch_sub(&active_pulls, 1);
}

static void pull_closed(void *arg)
{
    pull *pl = arg;

    pthread_mutex_lock(&pl->mu);
    pl->gone = true;
    pthread_cond_signal(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
}

/* Loop thread: moves queued output to the client; finishes the reply when the thread is done. */
static void pull_wake(evutil_socket_t fd, short what, void *arg)
{
    pull *pl = arg;
    eb_buf chunk = {0};
    bool finished, stopped;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&pl->mu);
    chunk = pl->queue;
    memset(&pl->queue, 0, sizeof(pl->queue));
    finished = pl->finished;
    pthread_cond_signal(&pl->cv);
    pthread_mutex_unlock(&pl->mu);
    /* stopped by the shutdown (whatever error that caused: the write's, or the cancelled
     * statement's), unless the client had gone; a run that finished whole is answered whole */
    stopped = finished && pl->st != EB_OK && pl->stopping && pl->st != EB_ERR_CONFLICT;
    if (stopped) {
        free(pl->errmsg);
        pl->errmsg = eb_strdup("the service is shutting down; ask again");
        pl->st = EB_ERR_UNAVAILABLE;
        if (!pl->started)
            eb_buf_free(&chunk); /* nothing went out yet: a 503, not the start of a body */
    }

    if (pl->run.stats_only) {
        if (finished) {
            if (pl->st != EB_OK) {
                eb_http_reply_error(pl->req, pl->st, "%s", pl->errmsg);
            } else {
                cJSON *root = cJSON_CreateObject();
                cJSON_AddItemToObject(root, "filter", cJSON_Duplicate(pl->filter, true));
                cJSON_AddNumberToObject(root, "rows", (double)pl->run.rows);
                cJSON_AddItemToObject(root, "statistics", pl->run.statistics);
                pl->run.statistics = NULL;
                eb_http_reply_json(pl->req, 200, root);
            }
            pull_free(pl);
        }
        eb_buf_free(&chunk);
        return;
    }
    if (!pl->started && (chunk.len > 0 || (finished && pl->st == EB_OK))) {
        const char *ct = strcmp(pl->run.compression, "gzip") == 0 ? "application/gzip"
                         : strcmp(pl->run.compression, "zstd") == 0
                             ? "application/zstd"
                             : export_format_content_type(pl->run.format);
        eb_http_add_header(pl->req, "X-Accel-Buffering", "no");
        eb_http_stream_start(pl->req, 200, ct, pull_closed, pl);
        pl->started = true;
    }
    if (chunk.len > 0)
        eb_http_stream_write(pl->req, chunk.data, chunk.len);
    eb_buf_free(&chunk);
    if (!finished)
        return;
    if (!pl->started)
        eb_http_reply_error(pl->req, pl->st, "%s", pl->errmsg ? pl->errmsg : "export failed");
    else if (pl->st != EB_OK && pl->st != EB_ERR_CONFLICT) {
        /* the status line went out with the first chunk: cut the transfer short instead */
        eb_log_write(stopped ? EB_LOG_WARN : EB_LOG_ERROR, eb_http_req_id(pl->req), NULL,
                     "streamed export ended early: %s", pl->errmsg);
        eb_http_stream_abort(pl->req);
    } else {
        eb_http_stream_end(pl->req);
    }
    pull_free(pl);
}

static void start_pull(eb_http_req *req, export_ctx *ctx, bool stats_only)
{
    const eb_principal *p = eb_http_req_principal(req);
    const char *fmt = eb_http_req_query(req, "format"),
               *comp = eb_http_req_query(req, "compression");
    const char *anon = eb_http_req_query(req, "anonymize"), *lim = eb_http_req_query(req, "limit");
    pull *pl;
    cJSON *filter = NULL;
    export_format format = EXPORT_JSONL;
    long long limit = ctx->cfg->stream_max_rows;
    bool anonymize = true;
    eb_status st;

    if (fmt && (st = export_format_parse(fmt, &format)) != EB_OK) {
        eb_http_reply_status(req, st);
        return;
    }
    if (!comp)
        comp = "none";
    if (strcmp(comp, "none") && strcmp(comp, "gzip") && strcmp(comp, "zstd")) {
        eb_http_reply_error(req, EB_ERR_INVALID, "compression must be gzip, zstd or none");
        return;
    }
    if (anon) {
        if (strcmp(anon, "true") && strcmp(anon, "false")) {
            eb_http_reply_error(req, EB_ERR_INVALID, "anonymize must be true or false");
            return;
        }
        anonymize = strcmp(anon, "true") == 0;
    }
    if (!anonymize && p->role < EB_ROLE_ADMIN) {
        eb_http_reply_error(req, EB_ERR_FORBIDDEN,
                            "turning anonymization off needs the admin role");
        return;
    }
    if (lim && !stats_only) {
        long long v;
        if (!eb_http_parse_count(lim, 1, ctx->cfg->stream_max_rows, &v)) {
            eb_http_reply_error(req, EB_ERR_INVALID,
                                "limit must be from 1 to %lld (stream-max-rows)",
                                ctx->cfg->stream_max_rows);
            return;
        }
        limit = v;
    }
    st = export_filter_from_query(req, &filter);
    if (st != EB_OK) {
        eb_http_reply_status(req, st);
        return;
    }
    if (atomic_fetch_add(&active_pulls, 1) >= MAX_STREAMS) {
        atomic_fetch_sub(&active_pulls, 1);
        cJSON_Delete(filter);
        eb_http_add_header(req, "Retry-After", "5");
        eb_http_reply_error(req, EB_ERR_RATE_LIMITED,
                            "too many streamed exports at once; use POST /api/v1/exports");
        return;
    }
    if (ctx->stopping) { /* asked for during the shutdown delay: another replica will answer */
        atomic_fetch_sub(&active_pulls, 1);
        cJSON_Delete(filter);
        eb_http_reply_error(req, EB_ERR_UNAVAILABLE, "the service is shutting down; ask again");
        return;
    }
    pl = eb_calloc(1, sizeof(*pl));
    pl->ctx = ctx;
    pl->req = req;
    pl->filter = filter;
    snprintf(pl->team_id, sizeof(pl->team_id), "%s", p->team_id);
    pl->run.team_id = pl->team_id;
    pl->run.format = format;
    pl->run.filter = filter;
    pl->run.compression = comp;
    pl->run.level = (int)(strcmp(comp, "zstd") == 0 ? ctx->cfg->zstd_level : ctx->cfg->gzip_level);
    pl->run.anonymize = anonymize;
    pl->run.stats_only = stats_only;
    pl->run.max_rows = stats_only ? 0 : (uint64_t)limit;
    pthread_mutex_init(&pl->mu, NULL);
    pthread_cond_init(&pl->cv, NULL);
    pl->wake = event_new(ctx->svc.base, -1, 0, pull_wake, pl);
    eb_audit_send(ctx->svc.bus, p, eb_http_req_id(req), "export",
                  stats_only ? "statistics_read" : "export_streamed", export_format_name(format),
                  filter);
    LIST_INSERT_HEAD(&ctx->pulls, pl, link);
    pthread_create(&pl->tid, NULL, pull_main, pl);
}

void export_pulls_stop(export_ctx *ctx)
{
    char err[256];
    pull *pl;

    ctx->stopping = true;
    LIST_FOREACH(pl, &ctx->pulls, link)
    {
        pthread_mutex_lock(&pl->mu);
        pl->stopping = true;
        pthread_cond_signal(&pl->cv);
        /* under mu: the thread frees the handle under it, once its statements are done */
        if (pl->cancel && !PQcancel(pl->cancel, err, sizeof(err)))
            eb_log_warn(NULL, "cannot cancel a streamed export's statement: %s", err);
        pthread_mutex_unlock(&pl->mu);
    }
}

void export_pulls_wait(export_ctx *ctx)
{
    if (!LIST_EMPTY(&ctx->pulls))
        eb_log_info(NULL, "waiting for the streamed exports to stop");
    while (!LIST_EMPTY(&ctx->pulls))
        event_base_loop(ctx->svc.base, EVLOOP_ONCE);
}

void api_exports_stream(eb_http_req *req, void *ctx)
{
    start_pull(req, ctx, false);
}

void api_datasets_statistics(eb_http_req *req, void *ctx)
{
    start_pull(req, ctx, true);
}
