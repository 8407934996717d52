/* retention.c -- traces older than their project's retention are removed in the background.
 * Day partitions older than the longest retention in force (the default, or any project's
 * longer setting) are dropped whole; projects with a shorter retention than that have their
 * older rows deleted. Reviews and scores of removed traces go with them. One pass runs 5 s after
 * start and then every retention-interval, under an advisory lock so replicas do not repeat it.
 * A pass is several short transactions (the rows, then each day's partitions, then the reviews
 * and scores left behind), so the exclusive lock on ingest.traces that dropping a partition
 * takes is held for one day's drop, not for the whole pass.
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

/* True once ingest_retention_stop has sent the pass a cancel: it goes no further. */
static bool pass_cancelled(ingest_retention *rt)
{
    bool cancelled;

    pthread_mutex_lock(&rt->mu);
    cancelled = rt->cancelled;
    pthread_mutex_unlock(&rt->mu);
    return cancelled;
}

/* Ends one of a pass's transactions: COMMIT if st is EB_OK, else ROLLBACK; the outcome. */
static eb_status pass_tx_end(PGconn *c, eb_status st)
{
    if (st == EB_OK)
        return eb_db_commit(c);
    eb_db_rollback(c);
    return st;
}

/* BEGIN one of a pass's transactions. The row delete is planned over every day partition and
 * pruned only when it runs, so its estimated cost is high enough for JIT compilation, which
 * then takes longer (about 0.5 s of CPU) than the pruned statement. Dropping a day's partitions
 * locks ingest.traces exclusively: a pass that would wait more than 5 s for a lock (behind a long
 * export, say) gives up, so that writers and queries never queue long behind its wait, and tries
 * again at its next interval. */
static eb_status pass_tx_begin(PGconn *c)
{
    eb_status st = eb_db_begin_system(c);

    if (st == EB_OK)
        st = eb_db_exec(c, "SET LOCAL jit = off", 0, NULL, NULL);
    if (st == EB_OK)
        st = eb_db_exec(c, "SET LOCAL lock_timeout = '5s'", 0, NULL, NULL);
    return st;
}

/* The longest retention in force (default_days, or any project's longer setting), read in the
 * transaction that acts on it, with ingest.project_settings locked in SHARE mode until that
 * transaction ends: a setting raised meanwhile waits for it (and then applies to what is left)
 * rather than being answered while the transaction removes what the new setting keeps. */
static eb_status longest_retention(PGconn *c, long long default_days, long long *max_days)
{
    PGresult *r = NULL;
    eb_status st = eb_db_exec(c, "LOCK TABLE ingest.project_settings IN SHARE MODE", 0, NULL, NULL);

    if (st == EB_OK)
        st = eb_db_exec(c, "SELECT coalesce(max(retention_days), 0) FROM ingest.project_settings",
                        0, NULL, &r);
    *max_days = default_days;
    if (st == EB_OK && atoll(eb_db_val(r, 0, 0)) > default_days)
        *max_days = atoll(eb_db_val(r, 0, 0));
    PQclear(r);
    return st;
}

/* Step 1, in its own transaction: the rows past their project's retention that no partition
 * drop removes (those of days newer than the longest retention in force), with their
 * observations, keys, reviews and scores. Two kinds: the traces of a project whose own setting
 * is shorter than the longest (found through the settings, per project, by the (team, project,
 * time) index), and, when some project keeps its traces longer than the default, the traces of
 * projects without a setting older than the default. A short setting of one team makes no
 * other team's rows be looked at. The traces kept the longest go with their day's partitions
 * (step 2), once the whole day is past their retention: up to a day after it, rather than
 * deleting the bulk of all traces row by row every pass. Adds the number removed to *n. */
/* The traces of step 1, as conditions on t (ingest.traces) and, for SHORT_EXPIRED, s
 * (ingest.project_settings); max is the parameter of the longest retention in force, $1 the
 * default retention and $2 the longest. */
#define SHORT_EXPIRED(max)                                                                         \
    "s.retention_days < " max "::int AND t.team_id = s.team_id AND t.project = s.project AND"      \
    " t.part_time < now() - make_interval(days => s.retention_days)"
#define DEFAULT_EXPIRED                                                                            \
    "$1::int < $2::int AND t.part_time < now() - make_interval(days => $1::int) AND NOT EXISTS"    \
    " (SELECT 1 FROM ingest.project_settings s WHERE s.team_id = t.team_id AND s.project ="        \
    " t.project)"

static eb_status delete_expired_rows(PGconn *c, long long default_days, long long *n)
{
    char d[16], m[16];
    const char *params[2] = {d, m};
    PGresult *r = NULL;
    long long max_days = default_days;
    eb_status st;

    st = pass_tx_begin(c);
    if (st == EB_OK)
        st = longest_retention(c, default_days, &max_days);
    snprintf(d, sizeof(d), "%lld", default_days);
    snprintf(m, sizeof(m), "%lld", max_days);
    /* the keys first, each in a statement of its own, as a deletion by id or filter does: the
     * DELETE's snapshot, taken once they are locked, holds every review and score that held a
     * key (FOR KEY SHARE) meanwhile, and they go with their trace */
    if (st == EB_OK)
        st = eb_db_exec(c,
                        "SELECT count(*) FROM (SELECT 1 FROM ingest.trace_keys k JOIN"
                        " ingest.traces t ON k.team_id = t.team_id AND k.id = t.id JOIN"
                        " ingest.project_settings s ON " SHORT_EXPIRED("$1") " FOR UPDATE OF k) x",
                        1, params + 1, NULL);
    if (st == EB_OK)
        st = eb_db_exec(
            c,
            "SELECT count(*) FROM (SELECT 1 FROM ingest.trace_keys k JOIN"
            " ingest.traces t ON k.team_id = t.team_id AND k.id = t.id WHERE " DEFAULT_EXPIRED
            " FOR UPDATE OF k) x",
            2, params, NULL);
    if (st == EB_OK)
        st = eb_db_exec(
            c,
            "WITH short AS (DELETE FROM ingest.traces t USING"
            "  ingest.project_settings s WHERE " SHORT_EXPIRED(
                "$2") "  RETURNING t.team_id, t.part_time, t.id),"
                      " dflt AS (DELETE FROM ingest.traces t WHERE " DEFAULT_EXPIRED
                      "  RETURNING t.team_id, t.part_time, t.id),"
                      " expired AS (SELECT * FROM short UNION ALL SELECT * FROM dflt),"
                      " o AS (DELETE FROM ingest.observations o USING expired e WHERE"
                      "  o.team_id = e.team_id AND o.part_time = e.part_time AND o.trace_id ="
                      "  e.id),"
                      " k AS (DELETE FROM ingest.trace_keys k USING expired e WHERE k.team_id ="
                      "  e.team_id AND k.id = e.id),"
                      " rv AS (DELETE FROM ingest.reviews r USING expired e WHERE r.team_id ="
                      "  e.team_id AND r.trace_id = e.id),"
                      " sc AS (DELETE FROM ingest.scores s USING expired e WHERE s.team_id ="
                      "  e.team_id AND s.trace_id = e.id)"
                      " SELECT count(*) FROM expired",
            2, params, &r);
    st = pass_tx_end(c, st);
    if (st == EB_OK)
        *n += atoll(eb_db_val(r, 0, 0));
    PQclear(r);
    return st;
}

/* Step 2 for one day (YYYYMMDD), in its own transaction, so that the exclusive lock a
 * partition's DROP takes on ingest.traces is held for that day only: the day's keys, found
 * through its traces (trace_keys has no part_time index), with their reviews and scores, then
 * its partitions. The partitions are locked first: the DELETE's snapshot then includes every
 * writer transaction that stored into them, so no key outlives its trace. The reviews and
 * scores go in the same transaction as the keys: left to step 3, a trace sent again with the
 * same id before it ran (a pass that fails or is cancelled after its drops skips step 3) would
 * take them on as its own. */
/* Whether the day ymd (YYYYMMDD) ends within max_days of now (or cannot be read): kept. */
static bool day_kept(const char *ymd, long long max_days)
{
    struct tm tm = {0};

    return !strptime(ymd, "%Y%m%d", &tm) || timegm(&tm) + 86400 > time(NULL) - max_days * 86400;
}

static eb_status drop_day(PGconn *c, const char *ymd, long long default_days, bool *dropped)
{
    eb_status st = pass_tx_begin(c);
    long long max_days = default_days;
    bool have_traces, have_obs;
    eb_buf q = {0};
    PGresult *r;

    *dropped = false;
    /* the longest retention again, as it is now: one raised since the pass began keeps the day */
    if (st == EB_OK)
        st = longest_retention(c, default_days, &max_days);
    if (st == EB_OK && day_kept(ymd, max_days))
        return pass_tx_end(c, EB_OK); /* kept: nothing done */
    if (st != EB_OK)
        return pass_tx_end(c, st);
    /* which of the day's two partitions there are: one dropped by hand leaves the other, which
     * goes alone (the keys are found through the traces' one) */
    st = eb_db_exec(c,
                    "SELECT to_regclass('ingest.traces_p' || $1) IS NOT NULL,"
                    " to_regclass('ingest.observations_p' || $1) IS NOT NULL",
                    1, &ymd, &r);
    if (st != EB_OK)
        return pass_tx_end(c, st);
    have_traces = eb_db_val(r, 0, 0)[0] == 't';
    have_obs = eb_db_val(r, 0, 1)[0] == 't';
    PQclear(r);
    if (!have_traces && !have_obs)
        return pass_tx_end(c, EB_OK);
    /* one statement at a time, each with a snapshot of its own: the keys are locked before
     * the DELETE (as in step 1). The parents are locked before the day's partitions, in the
     * order every query takes them: a drop holding a partition while it waited for a parent a
     * reader held, the reader then waiting for that partition, was a deadlock (the reader's
     * answer a 503, or the pass lost). */
    eb_buf_puts(&q, "LOCK TABLE ONLY ingest.traces, ONLY ingest.observations IN ACCESS EXCLUSIVE"
                    " MODE;");
    if (have_traces)
        eb_buf_printf(&q, " LOCK TABLE ingest.traces_p%s IN ACCESS EXCLUSIVE MODE;", ymd);
    if (have_obs)
        eb_buf_printf(&q, " LOCK TABLE ingest.observations_p%s IN ACCESS EXCLUSIVE MODE;", ymd);
    if (have_traces)
        eb_buf_printf(&q,
                      " SELECT count(*) FROM (SELECT 1 FROM ingest.trace_keys k"
                      " JOIN ingest.traces_p%s t ON k.team_id = t.team_id AND k.id = t.id AND"
                      " k.part_time = t.part_time FOR UPDATE OF k) x;"
                      " WITH k AS (DELETE FROM ingest.trace_keys k USING"
                      " ingest.traces_p%s t WHERE k.team_id = t.team_id AND k.id = t.id AND"
                      " k.part_time = t.part_time RETURNING k.team_id, k.id),"
                      " rv AS (DELETE FROM ingest.reviews r USING k WHERE r.team_id = k.team_id"
                      " AND r.trace_id = k.id), sc AS (DELETE FROM ingest.scores s USING k WHERE"
                      " s.team_id = k.team_id AND s.trace_id = k.id) SELECT count(*) FROM k;",
                      ymd, ymd);
    if (have_obs)
        eb_buf_printf(&q, " DROP TABLE ingest.observations_p%s;", ymd);
    if (have_traces)
        eb_buf_printf(&q, " DROP TABLE ingest.traces_p%s;", ymd);
    r = PQexec(c, q.data);
    eb_buf_free(&q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        st = eb_error(EB_ERR_DB, "dropping partition %s: %s", ymd, PQresultErrorMessage(r));
    PQclear(r);
    st = pass_tx_end(c, st);
    *dropped = st == EB_OK;
    return st;
}

/* Step 3: the reviews and scores whose trace is gone. Steps 1 and 2 lock the keys before they
 * delete (as deletions by id and filter do), which takes every review and score written
 * meanwhile with its trace; this sweep is what remains should one be left all the same (rows
 * from before that lock, or written by hand). And the deletions' tombstones (migration 006)
 * once the stream can hold no record they stop: INGEST keeps records INGEST_RECORD_DAYS (7)
 * days (streams.c), a tombstone one day more. Every pass. */
static eb_status delete_orphans(PGconn *c)
{
    eb_status st = pass_tx_begin(c);

    if (st == EB_OK)
        st = eb_db_exec(c,
                        "WITH rv AS (DELETE FROM ingest.reviews r WHERE NOT EXISTS (SELECT 1"
                        " FROM ingest.trace_keys k WHERE k.team_id = r.team_id AND k.id ="
                        " r.trace_id) RETURNING 1), sc AS (DELETE FROM ingest.scores s WHERE NOT"
                        " EXISTS (SELECT 1 FROM ingest.trace_keys k WHERE k.team_id = s.team_id"
                        " AND k.id = s.trace_id) RETURNING 1) SELECT (SELECT count(*) FROM rv) +"
                        " (SELECT count(*) FROM sc)",
                        0, NULL, NULL);
    if (st == EB_OK) {
        char days[16];
        const char *params[1] = {days};
        snprintf(days, sizeof(days), "%d", INGEST_RECORD_DAYS + 1);
        st = eb_db_exec(c,
                        "DELETE FROM ingest.trace_tombstones WHERE deleted_at < now() -"
                        " make_interval(days => $1::int)",
                        1, params, NULL);
    }
    st = pass_tx_end(c, st);
    return st;
}

/* One pass: deletes expired rows of projects kept shorter than the longest retention, drops
 * the day partitions past the longest retention, and then the reviews and scores left without
 * their trace. Each step commits on its own (a failed one leaves the earlier ones done; the next
 * pass does the rest), under a session advisory lock so that replicas do not run passes at
 * once. *cancelled tells whether ingest_retention_stop sent it a cancel. */
static eb_status run_pass(ingest_retention *rt, long long *deleted, bool *cancelled)
{
    ingest_ctx *ctx = rt->ctx;
    PGconn *c = eb_db_get(ctx->svc.db);
    PGresult *r = NULL;
    eb_status st;
    long long max_days = ctx->cfg->retention_days;
    bool locked = false;

    *deleted = 0;
    *cancelled = false;
    if (!c)
        return EB_ERR_UNAVAILABLE;
    if (!pass_begin(rt, c)) {
        eb_db_put(ctx->svc.db, c);
        return EB_OK;
    }
    st = eb_db_exec(c, "SELECT pg_try_advisory_lock(7236003, 1)", 0, NULL, &r);
    if (st != EB_OK)
        goto cleanup;
    locked = strcmp(eb_db_val(r, 0, 0), "t") == 0;
    PQclear(r);
    r = NULL;
    if (!locked)
        goto cleanup; /* another replica is at it */
    /* the longest retention in force: days older than it go whole (step 2; each day's drop
     * reads it again, under the settings' lock, before it drops) */
    st = pass_tx_begin(c);
    if (st == EB_OK)
        st = longest_retention(c, ctx->cfg->retention_days, &max_days);
    st = pass_tx_end(c, st);
    if (st != EB_OK)
        goto cleanup;
    /* 1. */
    st = delete_expired_rows(c, ctx->cfg->retention_days, deleted);
    if (st != EB_OK || pass_cancelled(rt))
        goto cleanup;
    /* 2. */
    /* the days of either table: one whose other partition was dropped by hand goes too */
    st = eb_db_exec(c,
                    "SELECT DISTINCT substring(c.relname from '[0-9]{8}$') FROM pg_inherits i"
                    " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent IN"
                    " ('ingest.traces'::regclass, 'ingest.observations'::regclass) AND"
                    " c.relname ~ '^(traces|observations)_p[0-9]{8}$' ORDER BY 1",
                    0, NULL, &r);
    if (st != EB_OK)
        goto cleanup;
    for (int i = 0; i < PQntuples(r) && !pass_cancelled(rt); i++) {
        const char *ymd = eb_db_val(r, i, 0);
        bool dropped;

        if (day_kept(ymd, max_days))
            continue;
        if ((st = drop_day(c, ymd, ctx->cfg->retention_days, &dropped)) != EB_OK)
            goto cleanup;
        if (dropped)
            eb_log_info(NULL, "retention: dropped the partitions of %s", ymd);
    }
    /* 3. */
    if (!pass_cancelled(rt))
        st = delete_orphans(c);
cleanup:
    PQclear(r);
    *cancelled = pass_end(rt);
    /* a cancelled pass's connection is closed (which also releases its lock), since a late
     * cancel could still reach it; so is one that cannot release the lock */
    if (!*cancelled && locked &&
        eb_db_exec(c, "SELECT pg_advisory_unlock(7236003, 1)", 0, NULL, NULL) != EB_OK) {
        eb_db_discard(ctx->svc.db, c);
        return st;
    }
    if (*cancelled)
        eb_db_discard(ctx->svc.db, c);
    else
        eb_db_put(ctx->svc.db, c);
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
