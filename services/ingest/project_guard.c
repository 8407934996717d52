/* project_guard.c -- a project-restricted key may not replace or merge into a trace that its team
 * stores in another project.
 *
 * The writer refuses such a record before it stores anything (check_projects in writer.c), but
 * by then the sender has had its 2xx and the record goes to a dead letter. This guard asks
 * PostgreSQL at the intake, so that the sender is told at once, per item (forbidden). It is
 * best effort: a trace made by another key between this question and the writer is still
 * refused by the writer; when PostgreSQL cannot be asked, records go on as before (the stream
 * buffers them during an outage) and for GUARD_PAUSE_MS the guard does not ask again, so that
 * a PostgreSQL that does not answer slows nothing down.
 * Threading: ingest_projects_elsewhere blocks on PostgreSQL and runs on pool threads;
 * ingest_guard_projects runs on the loop thread and hands the question to the pool. */
#include "evalbus/db.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "ingest_int.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define GUARD_PAUSE_MS 5000

static atomic_llong pause_until_ms;

char *ingest_project_refusal(const char *id, const char *stored_in, const char *only)
{
    return eb_asprintf("trace %s is stored in project '%s'; the sending key may only write to"
                       " project '%s'",
                       id, stored_in, only);
}

char **ingest_projects_elsewhere(ingest_ctx *ctx, const eb_principal *who,
                                 Evalbus__V1__Trace *const *traces, size_t n)
{
    eb_buf ids = {0};
    const char *params[3];
    char **found = NULL;
    PGconn *c;
    PGresult *r = NULL;
    eb_status st;

    if (!who->project[0] || n == 0 || ingest_now_ms() < atomic_load(&pause_until_ms))
        return NULL;
    c = eb_db_get(ctx->svc.db);
    if (!c) {
        st = EB_ERR_UNAVAILABLE;
        goto done;
    }
    eb_buf_putc(&ids, '[');
    for (size_t i = 0; i < n; i++) {
        eb_buf_puts(&ids, i ? ",\"" : "\"");
        eb_buf_json_escape(&ids, traces[i]->id ? traces[i]->id : "");
        eb_buf_putc(&ids, '"');
    }
    eb_buf_putc(&ids, ']');
    params[0] = ids.data;
    params[1] = who->team_id;
    params[2] = who->project;
    st = eb_db_begin_team(c, who->team_id);
    if (st == EB_OK)
        st = eb_db_exec(c,
                        "SELECT u.ord, t.project"
                        " FROM json_array_elements_text($1::json) WITH ORDINALITY AS u(id, ord)"
                        " JOIN ingest.trace_keys k ON k.team_id = $2::uuid AND k.id = u.id"
                        " JOIN ingest.traces t ON t.team_id = k.team_id"
                        " AND t.part_time = k.part_time AND t.id = k.id"
                        " WHERE t.project <> $3",
                        3, params, &r);
    eb_db_rollback(c);
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
        eb_log_warn(NULL, "cannot check the projects of a restricted key's traces now: %s",
                    eb_error_message());
        atomic_store(&pause_until_ms, ingest_now_ms() + GUARD_PAUSE_MS);
    }
    PQclear(r);
    eb_buf_free(&ids);
    return found;
}

void ingest_projects_free(char **found, size_t n)
{
    if (!found)
        return;
    for (size_t i = 0; i < n; i++)
        free(found[i]);
    free(found);
}

typedef struct guard_job {
    ingest_ctx *ctx;
    eb_principal who;
    Evalbus__V1__Trace *const *traces;
    size_t n;
    char **found;
    ingest_guard_done done;
    void *arg;
} guard_job;

static void guard_work(void *arg)
{
    guard_job *g = arg;

    g->found = ingest_projects_elsewhere(g->ctx, &g->who, g->traces, g->n);
}

static void guard_done(void *arg)
{
    guard_job *g = arg;

    g->done(g->arg, g->found);
    ingest_projects_free(g->found, g->n);
    free(g);
}

void ingest_guard_projects(ingest_ctx *ctx, const eb_principal *who,
                           Evalbus__V1__Trace *const *traces, size_t n, ingest_guard_done done,
                           void *arg)
{
    guard_job *g;

    if (!who->project[0] || n == 0) {
        done(arg, NULL);
        return;
    }
    g = eb_calloc(1, sizeof(*g));
    g->ctx = ctx;
    g->who = *who;
    g->traces = traces;
    g->n = n;
    g->done = done;
    g->arg = arg;
    ingest_pool_submit(ctx->pool, guard_work, guard_done, g);
}
