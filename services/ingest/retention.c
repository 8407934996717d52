/* retention.c -- traces older than their project's retention are removed in the background.
 * Day partitions older than the longest retention in force (the default, or any project's
 * longer setting) are dropped whole; projects with a shorter retention than that have their
 * older rows deleted. Reviews and scores of removed traces go with them. One pass runs 5 s after
 * start and then every retention-interval, under an advisory lock so replicas do not repeat it.
 *
 * Passes run on a thread of their own: a pass may delete many rows and take seconds, and the
 * loop thread, which answers HTTP and publishes every accepted record, must not wait for it.
 * Stopping does not wait for a pass to finish either: its statement is cancelled (PQcancel,
 * repeated every 100 ms until the pass has ended, as long as PostgreSQL takes cancel requests),
 * its transaction rolls back (unless it was already committing), and the next start runs it
 * again; the connection is closed rather than pooled, so a late cancel hits nothing else.
 * Threading: the thread uses the database pool (thread-safe), logs and metrics only; the stop
 * call and the thread share the cancel handle under the mutex. */
#include "evalbus/clock.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "ingest_int.h"

#include <errno.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ingest_retention {
    ingest_ctx *ctx;
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cond; /* signalled to stop, and when a pass ends */
    bool stop;
    PGcancel *cancel; /* the running pass's connection; NULL between passes */
    bool cancelled;   /* a cancel was sent to it */
};

/* Makes the pass's connection cancellable by ingest_retention_stop; false if stopping. */
static bool pass_begin(ingest_retention *rt, PGconn *c)
{
    bool go;

    pthread_mutex_lock(&rt->mu);
    go = !rt->stop;
    if (go) {
        rt->cancel = PQgetCancel(c);
        rt->cancelled = false;
    }
    pthread_mutex_unlock(&rt->mu);
    return go;
}

/* Ends what pass_begin started; true if a cancel was sent to the connection meanwhile. */
static bool pass_end(ingest_retention *rt)
{
    bool cancelled;

    pthread_mutex_lock(&rt->mu);
    PQfreeCancel(rt->cancel);
    rt->cancel = NULL;
    cancelled = rt->cancelled;
    pthread_cond_broadcast(&rt->cond);
    pthread_mutex_unlock(&rt->mu);
    return cancelled;
}

/* One pass: drops expired partitions and deletes expired rows of shorter-lived projects;
 * *cancelled tells whether ingest_retention_stop sent it a cancel. */
static eb_status run_pass(ingest_retention *rt, long long *deleted, bool *cancelled)
{
    ingest_ctx *ctx = rt->ctx;
    PGconn *c = eb_db_get(ctx->svc.db);
    PGresult *r = NULL;
    eb_status st;
    char days[16];
    const char *p1[1] = {days};
    long long max_days = ctx->cfg->retention_days, n = 0;

    *deleted = 0;
    *cancelled = false;
    if (!c)
        return EB_ERR_UNAVAILABLE;
    if (!pass_begin(rt, c)) {
        eb_db_put(ctx->svc.db, c);
        return EB_OK;
    }
    snprintf(days, sizeof(days), "%lld", ctx->cfg->retention_days);
    st = eb_db_begin_system(c);
    /* The row delete below is planned over every day partition and pruned only when it runs,
     * so its estimated cost is high enough for JIT compilation, which then takes longer (about
     * 0.5 s of CPU) than the pruned statement. */
    if (st == EB_OK)
        st = eb_db_exec(c, "SET LOCAL jit = off", 0, NULL, NULL);
    /* Dropping a day's partitions locks ingest.traces exclusively: a pass that would wait more
     * than 5 s for that (behind a long export, say) gives up, so writers and queries never queue
     * behind its wait, and tries again at its next interval. */
    if (st == EB_OK)
        st = eb_db_exec(c, "SET LOCAL lock_timeout = '5s'", 0, NULL, NULL);
    if (st == EB_OK)
        st = eb_db_exec(c, "SELECT pg_try_advisory_xact_lock(7236003, 1)", 0, NULL, &r);
    if (st != EB_OK || strcmp(eb_db_val(r, 0, 0), "t") != 0)
        goto cleanup; /* another replica is at it */
    PQclear(r);
    r = NULL;
    st = eb_db_exec(c, "SELECT coalesce(max(retention_days), 0) FROM ingest.project_settings", 0,
                    NULL, &r);
    if (st != EB_OK)
        goto cleanup;
    if (atoll(eb_db_val(r, 0, 0)) > max_days)
        max_days = atoll(eb_db_val(r, 0, 0));
    PQclear(r);
    r = NULL;
    /* 1. rows past their project's retention; only days older than the shortest retention
     * in force are looked at, so partition pruning keeps this cheap */
    st = eb_db_exec(c,
                    "WITH expired AS (DELETE FROM ingest.traces t WHERE t.part_time < now() -"
                    "  make_interval(days => least($1::int, (SELECT coalesce(min(retention_days),"
                    "  $1::int) FROM ingest.project_settings))) AND t.part_time < now() -"
                    "  make_interval(days => coalesce((SELECT s.retention_days FROM"
                    "  ingest.project_settings s WHERE s.team_id = t.team_id AND s.project ="
                    "  t.project), $1::int)) RETURNING t.team_id, t.part_time, t.id),"
                    " o AS (DELETE FROM ingest.observations o USING expired e WHERE o.team_id ="
                    "  e.team_id AND o.part_time = e.part_time AND o.trace_id = e.id),"
                    " k AS (DELETE FROM ingest.trace_keys k USING expired e WHERE k.team_id ="
                    "  e.team_id AND k.id = e.id),"
                    " rv AS (DELETE FROM ingest.reviews r USING expired e WHERE r.team_id ="
                    "  e.team_id AND r.trace_id = e.id),"
                    " sc AS (DELETE FROM ingest.scores s USING expired e WHERE s.team_id ="
                    "  e.team_id AND s.trace_id = e.id)"
                    " SELECT count(*) FROM expired",
                    1, p1, &r);
    if (st != EB_OK)
        goto cleanup;
    n += atoll(eb_db_val(r, 0, 0));
    PQclear(r);
    r = NULL;
    /* 2. whole day partitions past the longest retention (now empty or nearly) */
    st = eb_db_exec(c,
                    "SELECT substr(c.relname, 9) FROM pg_inherits i JOIN pg_class c ON c.oid ="
                    " i.inhrelid WHERE i.inhparent = 'ingest.traces'::regclass AND c.relname ~"
                    " '^traces_p[0-9]{8}$' ORDER BY 1",
                    0, NULL, &r);
    if (st != EB_OK)
        goto cleanup;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *ymd = eb_db_val(r, i, 0);
        struct tm tm = {0};
        time_t day_end;
        char *sql;
        PGresult *dr;

        if (!strptime(ymd, "%Y%m%d", &tm))
            continue;
        day_end = timegm(&tm) + 86400;
        if (day_end > time(NULL) - max_days * 86400)
            continue;
        /* The day's keys, found through its traces (trace_keys has no part_time index). The
         * partitions are locked first: the DELETE's snapshot then includes every writer
         * transaction that stored into them, so no key outlives its trace. */
        sql = eb_asprintf("LOCK TABLE ingest.traces_p%s, ingest.observations_p%s IN ACCESS"
                          " EXCLUSIVE MODE; DELETE FROM ingest.trace_keys k USING"
                          " ingest.traces_p%s t WHERE k.team_id = t.team_id AND k.id = t.id AND"
                          " k.part_time = t.part_time; DROP TABLE ingest.observations_p%s;"
                          " DROP TABLE ingest.traces_p%s",
                          ymd, ymd, ymd, ymd, ymd);
        dr = PQexec(c, sql);
        free(sql);
        if (PQresultStatus(dr) != PGRES_COMMAND_OK) {
            st = eb_error(EB_ERR_DB, "dropping partition %s: %s", ymd, PQresultErrorMessage(dr));
            PQclear(dr);
            goto cleanup;
        }
        PQclear(dr);
        eb_log_info(NULL, "retention: dropped the partitions of %s", ymd);
    }
    PQclear(r);
    r = NULL;
    /* reviews and scores whose trace went with a partition */
    st = eb_db_exec(c,
                    "WITH rv AS (DELETE FROM ingest.reviews r WHERE NOT EXISTS (SELECT 1 FROM"
                    " ingest.trace_keys k WHERE k.team_id = r.team_id AND k.id = r.trace_id)"
                    " RETURNING 1), sc AS (DELETE FROM ingest.scores s WHERE NOT EXISTS (SELECT"
                    " 1 FROM ingest.trace_keys k WHERE k.team_id = s.team_id AND k.id ="
                    " s.trace_id) RETURNING 1) SELECT (SELECT count(*) FROM rv) + (SELECT"
                    " count(*) FROM sc)",
                    0, NULL, NULL);
cleanup:
    if (st == EB_OK)
        st = eb_db_commit(c);
    else
        eb_db_rollback(c);
    PQclear(r);
    *cancelled = pass_end(rt);
    if (*cancelled)
        eb_db_discard(ctx->svc.db, c);
    else
        eb_db_put(ctx->svc.db, c);
    *deleted = st == EB_OK ? n : 0; /* a rolled-back pass removed nothing */
    return st;
}

/* Waits ms or until stopped; true if stopped. */
static bool wait_or_stop(ingest_retention *rt, long long ms)
{
    struct timespec until = eb_monotonic_after_ms(ms);
    bool stop;

    pthread_mutex_lock(&rt->mu);
    while (!rt->stop && pthread_cond_timedwait(&rt->cond, &rt->mu, &until) != ETIMEDOUT)
        ;
    stop = rt->stop;
    pthread_mutex_unlock(&rt->mu);
    return stop;
}

static void *retention_main(void *arg)
{
    ingest_retention *rt = arg;
    long long wait_ms = 5000;

    pthread_setname_np(pthread_self(), "retention");
    while (!wait_or_stop(rt, wait_ms)) {
        long long deleted = 0;
        bool cancelled;
        eb_status st = run_pass(rt, &deleted, &cancelled);

        if (st != EB_OK && cancelled)
            eb_log_info(NULL,
                        "retention pass cancelled by shutdown (%s); it runs again after the "
                        "next start",
                        eb_error_message());
        else if (st != EB_OK)
            eb_log_warn(NULL, "retention pass failed: %s", eb_error_message());
        else if (deleted)
            eb_log_info(NULL, "retention removed %lld traces", deleted);
        eb_metrics_add("evalbus_ingest_retention_deleted_total", NULL, (double)deleted);
        wait_ms = rt->ctx->cfg->retention_interval_ms;
    }
    return NULL;
}

ingest_retention *ingest_retention_start(ingest_ctx *ctx)
{
    ingest_retention *rt = eb_calloc(1, sizeof(*rt));

    eb_metrics_describe("evalbus_ingest_retention_deleted_total", "counter",
                        "Traces removed by retention (row deletes; dropped partitions aside)");
    rt->ctx = ctx;
    pthread_mutex_init(&rt->mu, NULL);
    eb_cond_init_monotonic(&rt->cond);
    if (pthread_create(&rt->tid, NULL, retention_main, rt) != 0) {
        eb_log_error(NULL, "cannot start the retention thread");
        pthread_cond_destroy(&rt->cond);
        pthread_mutex_destroy(&rt->mu);
        free(rt);
        return NULL;
    }
    return rt;
}

void ingest_retention_stop(ingest_retention *rt)
{
    if (!rt)
        return;
    pthread_mutex_lock(&rt->mu);
    rt->stop = true;
    pthread_cond_broadcast(&rt->cond);
    /* a pass under way: cancel its statement, and the next one it may start, until it ends */
    while (rt->cancel) {
        char err[256];
        struct timespec until;

        if (!PQcancel(rt->cancel, err, sizeof(err)) && !rt->cancelled)
            eb_log_warn(NULL, "cannot cancel the retention pass (trying again until it ends): %s",
                        err);
        rt->cancelled = true;
        until = eb_monotonic_after_ms(100);
        pthread_cond_timedwait(&rt->cond, &rt->mu, &until);
    }
    pthread_mutex_unlock(&rt->mu);
    pthread_join(rt->tid, NULL);
    pthread_cond_destroy(&rt->cond);
    pthread_mutex_destroy(&rt->mu);
    free(rt);
}
