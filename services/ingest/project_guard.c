/* project_guard.c -- a project-restricted key may not replace or merge into a trace that its team
 * stores in another project.
 *
 * The writer refuses such a record before it stores anything (check_projects in writer.c), but
 * by then the sender has had its 2xx and the record goes to a dead letter. This guard asks
 * PostgreSQL at the intake, so that the sender is told at once, per item (forbidden). It is
 * best effort and never holds up intake for long: the question runs on a thread of its own
 * (only restricted keys' batches wait for it, never the decode threads), takes a pooled
 * connection only if one is free, and gives up after GUARD_TIMEOUT_MS without an answer (the
 * connection is then closed; making a new connection, when none is idle, may take libpq's
 * connect timeout of 3 s first); a batch that waited GUARD_TIMEOUT_MS behind others goes on
 * unchecked. When PostgreSQL cannot be asked, the records go on (the stream buffers them during
 * an outage) and for GUARD_PAUSE_MS the guard does not ask again. The writer still refuses what
 * went through, and an id that another key stores between the two checks.
 * Threading: ingest_guard_projects on the loop thread; the question on the guard thread. */
#include "evalbus/db.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "ingest_int.h"

#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define GUARD_TIMEOUT_MS 1000
#define GUARD_PAUSE_MS 5000

static atomic_llong pause_until_ms;

char *ingest_project_refusal(const char *id, const char *stored_in, const char *only)
{
    return eb_asprintf("trace %s is stored in project '%s'; the sending key may only write to"
                       " project '%s'",
                       id, stored_in, only);
}

/* Waits until the connection's socket is ready for events, at most until deadline_ms. */
static bool wait_socket(PGconn *c, short events, long long deadline_ms)
{
    struct pollfd pfd = {.fd = PQsocket(c), .events = events};
    long long left = deadline_ms - ingest_now_ms();

    return left > 0 && poll(&pfd, 1, (int)left) > 0;
}

/* Sends sql (several statements) and collects its results until deadline_ms: *rows gets the
 * result that has rows (the caller frees it). Any failure leaves the connection in a state
 * only fit to be closed (EB_ERR_TIMEOUT: PostgreSQL did not answer in time, and a statement may
 * still be running there). */
static eb_status run_within(PGconn *c, const char *sql, long long deadline_ms, PGresult **rows)
{
    eb_status st = EB_OK;
    int flushed;

    *rows = NULL;
    /* non-blocking, so that sending cannot wait on a server that reads nothing */
    if (PQsetnonblocking(c, 1) != 0 || !PQsendQuery(c, sql))
        return eb_error(EB_ERR_UNAVAILABLE, "sending the question: %.200s", PQerrorMessage(c));
    while ((flushed = PQflush(c)) == 1)
        if (!wait_socket(c, POLLOUT | POLLIN, deadline_ms) ||
            (PQconsumeInput(c) == 0 && PQstatus(c) != CONNECTION_OK))
            return eb_error(EB_ERR_TIMEOUT, "PostgreSQL took no question within %d ms",
                            GUARD_TIMEOUT_MS);
    if (flushed < 0)
        return eb_error(EB_ERR_UNAVAILABLE, "sending the question: %.200s", PQerrorMessage(c));
    for (;;) {
        PGresult *r;
        while (PQisBusy(c)) {
            if (!wait_socket(c, POLLIN, deadline_ms))
                return eb_error(EB_ERR_TIMEOUT, "PostgreSQL did not answer within %d ms",
                                GUARD_TIMEOUT_MS);
            if (!PQconsumeInput(c))
                return eb_error(EB_ERR_UNAVAILABLE, "%.200s", PQerrorMessage(c));
        }
        r = PQgetResult(c);
        if (!r)
            break;
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQnfields(r) == 2 && !*rows) {
            *rows = r;
            continue;
        }
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK &&
            st == EB_OK)
            st = eb_error(EB_ERR_DB, "%.200s", PQresultErrorMessage(r));
        PQclear(r);
    }
    if (st != EB_OK) {
        PQclear(*rows);
        *rows = NULL;
    }
    if (st == EB_OK && PQsetnonblocking(c, 0) != 0)
        st = eb_error(EB_ERR_UNAVAILABLE, "%.200s", PQerrorMessage(c));
    return st;
}

/* The team's traces among ids[0..n) stored in another project than who's: found[i] gets that
 * project. Guard thread. */
static char **ask(ingest_ctx *ctx, const eb_principal *who, const char *const *ids, size_t n,
                  long long asked_ms)
{
    eb_buf list = {0}, sql = {0};
    char *lit_ids = NULL, *lit_team = NULL, *lit_project = NULL, **found = NULL;
    PGresult *r = NULL;
    PGconn *c;
    eb_status st;
    long long deadline;

    /* paused, or this batch waited its limit behind others already: it goes on unchecked */
    if (ingest_now_ms() < atomic_load(&pause_until_ms) ||
        ingest_now_ms() - asked_ms > GUARD_TIMEOUT_MS) {
        eb_metrics_add("evalbus_ingest_project_checks_total", "result=\"skipped\"", 1);
        return NULL;
    }
    c = eb_db_try_get(ctx->svc.db);
    if (!c) {
        st = EB_ERR_UNAVAILABLE;
        goto done;
    }
    /* from here: a connection just made (which may take libpq's connect timeout) still has
     * the whole limit for the question */
    deadline = ingest_now_ms() + GUARD_TIMEOUT_MS;
    eb_buf_putc(&list, '[');
    for (size_t i = 0; i < n; i++) {
        eb_buf_puts(&list, i ? ",\"" : "\"");
        eb_buf_json_escape(&list, ids[i] ? ids[i] : "");
        eb_buf_putc(&list, '"');
    }
    eb_buf_putc(&list, ']');
    lit_ids = PQescapeLiteral(c, list.data, list.len);
    lit_team = PQescapeLiteral(c, who->team_id, strlen(who->team_id));
    lit_project = PQescapeLiteral(c, who->project, strlen(who->project));
    if (!lit_ids || !lit_team || !lit_project) {
        st = eb_error(EB_ERR_UNAVAILABLE, "%.200s", PQerrorMessage(c));
        eb_db_put(ctx->svc.db, c);
        goto done;
    }
    /* one round trip, so that one deadline bounds it; the team's row-level security applies */
    eb_buf_printf(&sql,
                  "BEGIN READ ONLY; SELECT set_config('evalbus.team_id', %s, true);"
                  " SELECT u.ord, t.project"
                  " FROM json_array_elements_text(%s::json) WITH ORDINALITY AS u(id, ord)"
                  " JOIN ingest.trace_keys k ON k.team_id = %s::uuid AND k.id = u.id"
                  " JOIN ingest.traces t ON t.team_id = k.team_id"
                  " AND t.part_time = k.part_time AND t.id = k.id"
                  " WHERE t.project <> %s; ROLLBACK",
                  lit_team, lit_ids, lit_team, lit_project);
    st = run_within(c, sql.data, deadline, &r);
    if (st != EB_OK)
        eb_db_discard(ctx->svc.db, c); /* the question may still be running there */
    else
        eb_db_put(ctx->svc.db, c);
    if (st != EB_OK)
        goto done;
    for (int row = 0; row < PQntuples(r); row++) {
        long long ord = atoll(eb_db_val(r, row, 0));
        if (ord < 1 || (size_t)ord > n)
            continue;
        if (!found)
            found = eb_calloc(n, sizeof(*found));
        free(found[ord - 1]);
        found[ord - 1] = eb_strdup(eb_db_val(r, row, 1));
    }
done:
    if (st != EB_OK) {
        /* the writer still checks before it stores */
        eb_log_warn(NULL,
                    "cannot check the projects of a restricted key's traces now (not asking again"
                    " for %d s): %s",
                    GUARD_PAUSE_MS / 1000, eb_error_message());
        atomic_store(&pause_until_ms, ingest_now_ms() + GUARD_PAUSE_MS);
    }
    eb_metrics_add("evalbus_ingest_project_checks_total",
                   st == EB_OK ? "result=\"checked\"" : "result=\"failed\"", 1);
    PQclear(r);
    PQfreemem(lit_ids);
    PQfreemem(lit_team);
    PQfreemem(lit_project);
    eb_buf_free(&list);
    eb_buf_free(&sql);
    return found;
}

typedef struct guard_job {
    ingest_ctx *ctx;
    eb_principal who;
    const char **ids; /* the caller's strings */
    size_t n;
    long long asked_ms; /* when the loop asked */
    char **found;
    ingest_guard_done done;
    void *arg;
} guard_job;

static void guard_work(void *arg)
{
    guard_job *g = arg;

    g->found = ask(g->ctx, &g->who, g->ids, g->n, g->asked_ms);
}

static void guard_done(void *arg)
{
    guard_job *g = arg;

    g->done(g->arg, g->found);
    if (g->found)
        for (size_t i = 0; i < g->n; i++)
            free(g->found[i]);
    free(g->found);
    free(g->ids);
    free(g);
}

/* The job for n ids (to be filled in by the caller), or NULL when who is not restricted or n is
 * 0: done has then been called already. */
static guard_job *new_job(ingest_ctx *ctx, const eb_principal *who, size_t n,
                          ingest_guard_done done, void *arg)
{
    guard_job *g;

    if (!who->project[0] || n == 0) {
        done(arg, NULL);
        return NULL;
    }
    g = eb_calloc(1, sizeof(*g));
    g->ctx = ctx;
    g->who = *who;
    g->ids = eb_malloc(n * sizeof(*g->ids));
    g->n = n;
    g->asked_ms = ingest_now_ms();
    g->done = done;
    g->arg = arg;
    return g;
}

void ingest_guard_projects(ingest_ctx *ctx, const eb_principal *who, const char *const *ids,
                           size_t n, ingest_guard_done done, void *arg)
{
    guard_job *g = new_job(ctx, who, n, done, arg);

    if (!g)
        return;
    memcpy(g->ids, ids, n * sizeof(*g->ids));
    eb_pool_submit(ctx->guard_pool, guard_work, guard_done, g);
}

void ingest_guard_traces(ingest_ctx *ctx, const eb_principal *who,
                         Evalbus__V1__Trace *const *traces, size_t n, ingest_guard_done done,
                         void *arg)
{
    guard_job *g = new_job(ctx, who, n, done, arg);

    if (!g)
        return;
    for (size_t i = 0; i < n; i++)
        g->ids[i] = traces[i]->id;
    eb_pool_submit(ctx->guard_pool, guard_work, guard_done, g);
}
