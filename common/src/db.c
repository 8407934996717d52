/* db.c -- libpq connection pool, checked queries, team-scoped transactions, migrations.
 * The pool counts the connections handed out (at most size) and keeps the idle ones on a stack,
 * guarded by one mutex and a condition variable. A connection is made when none is idle, and
 * made again when PQstatus reports the idle one broken; get, put, discard and a failed connect
 * each move the count by one, so no failure path can lose a place in the pool.
 * Threading: any thread may get/put; a PGconn is used by one thread at a time. */
#include "evalbus/db.h"
#include "evalbus/clock.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct eb_db {
    char *url;
    char *app_name;
    long long idle_tx_timeout_ms; /* 0: the server's setting */
    long long request_timeout_ms; /* 0: the server's setting (eb_db_set_request_timeout) */
    int size;
    int out;       /* connections handed out, or being made for a caller */
    PGconn **idle; /* [size] stack of idle connections */
    int nidle;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* the readiness check (eb_db_ping), kept by a thread of its own once asked for: guarded by
     * hmu, the thread woken early (to stop) by hcv */
    pthread_mutex_t hmu;
    pthread_cond_t hcv;
    pthread_t htid;
    bool hstarted, hstop, hdone; /* hdone: a check has finished */
    bool hok;
    char hdetail[256];
    long long hbegan_ms; /* when the check under way began; 0: none */
};

/* How often the readiness check asks PostgreSQL, and how long a question may go unanswered
 * before PostgreSQL counts as not answering (and the connection asked is given up). */
#define DB_CHECK_EVERY_MS 1000
#define DB_CHECK_LIMIT_MS 2000
/* How long a new connection's first statements (the session's SETs) may take. */
#define DB_CONNECT_LIMIT_MS 3000

eb_db *eb_db_open(const char *url, int size, const char *app_name, long long idle_tx_timeout_ms)
{
    eb_db *db = eb_calloc(1, sizeof(*db));

    db->url = eb_strdup(url);
    db->app_name = eb_strdup(app_name ? app_name : "evalbus");
    db->idle_tx_timeout_ms = idle_tx_timeout_ms > 0 ? idle_tx_timeout_ms : 0;
    db->size = size > 0 ? size : 1;
    db->idle = eb_calloc((size_t)db->size, sizeof(PGconn *));
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv, NULL);
    pthread_mutex_init(&db->hmu, NULL);
    eb_cond_init_monotonic(&db->hcv);
    return db;
}

void eb_db_close(eb_db *db)
{
    if (!db)
        return;
    pthread_mutex_lock(&db->hmu);
    db->hstop = true;
    pthread_cond_broadcast(&db->hcv);
    pthread_mutex_unlock(&db->hmu);
    if (db->hstarted)
        pthread_join(db->htid, NULL);
    pthread_mutex_destroy(&db->hmu);
    pthread_cond_destroy(&db->hcv);
    for (int i = 0; i < db->nidle; i++)
        PQfinish(db->idle[i]);
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->cv);
    free(db->idle);
    free(db->url);
    free(db->app_name);
    free(db);
}

static void on_notice(void *arg, const char *message)
{
    (void)arg;
    eb_log_debug(NULL, "PostgreSQL: %.*s", (int)strcspn(message, "\n"), message);
}

/* The first line of a libpq message into detail. */
static void first_line(char *detail, size_t len, const char *msg)
{
    snprintf(detail, len, "%.*s", (int)strcspn(msg, "\n"), msg);
}

/* Runs sql (no parameters, any number of statements) on c, waiting at most ms for the answer:
 * false with detail when a statement fails, the connection does, or the time runs out (c is then
 * left with a question unanswered: the caller closes it). */
static bool exec_within(PGconn *c, const char *sql, int ms, char *detail, size_t len)
{
    long long deadline = eb_monotonic_ms() + ms;
    bool ok = true;

    detail[0] = '\0';
    if (!PQsendQuery(c, sql)) {
        first_line(detail, len, PQerrorMessage(c));
        return false;
    }
    while (PQisBusy(c)) {
        struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN};
        long long left = deadline - eb_monotonic_ms();

        if (left <= 0) {
            snprintf(detail, len, "PostgreSQL did not answer within %d ms", ms);
            return false;
        }
        if (poll(&pfd, 1, (int)left) < 0 || !PQconsumeInput(c))
            break; /* the connection failed: PQgetResult says how */
    }
    for (PGresult *r; (r = PQgetResult(c)) != NULL; PQclear(r)) {
        ExecStatusType rs = PQresultStatus(r);
        if (ok && rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
            ok = false;
            first_line(detail, len, PQresultErrorMessage(r));
        }
    }
    if (ok && PQstatus(c) != CONNECTION_OK) {
        ok = false;
        first_line(detail, len, PQerrorMessage(c));
    }
    return ok;
}

static PGconn *connect_db(eb_db *db)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {db->url, "3", db->app_name, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);

    if (PQstatus(c) != CONNECTION_OK) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
        msg[strcspn(msg, "\n")] = '\0';
        eb_error(EB_ERR_UNAVAILABLE, "PostgreSQL unreachable: %s", msg);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, on_notice, NULL);
    {
        /* SETs, not the startup packet's options: those would replace any the URL has. Every
         * session works in UTC, whatever the server's, database's or role's time zone: day
         * partitions, retention and every time PostgreSQL prints are UTC. */
        char sql[160], why[256];
        int n = snprintf(sql, sizeof(sql), "SET TimeZone = 'UTC'");
        if (db->idle_tx_timeout_ms > 0)
            snprintf(sql + n, sizeof(sql) - (size_t)n,
                     "; SET idle_in_transaction_session_timeout = %lld", db->idle_tx_timeout_ms);
        /* bounded as the connection itself is (connect_timeout): a server that finishes the
         * handshake and then answers nothing must not hold the caller for ever */
        if (!exec_within(c, sql, DB_CONNECT_LIMIT_MS, why, sizeof(why))) {
            eb_error(PQstatus(c) == CONNECTION_OK ? EB_ERR_DB : EB_ERR_UNAVAILABLE,
                     "setting the session's time zone and timeouts: %s", why);
            PQfinish(c);
            return NULL;
        }
    }
    return c;
}

/* Whether an idle connection is still open: one the server closed meanwhile (a restart, a
 * terminated backend) has its farewell and the end of the stream waiting on its socket, which
 * reading what is there finds (the message, then the end: two reads), without waiting. */
static bool still_open(PGconn *c)
{
    return PQconsumeInput(c) && PQconsumeInput(c) && PQstatus(c) == CONNECTION_OK;
}

/* Gives back a place in the pool; keep (when not NULL) goes on the idle stack. */
static void release(eb_db *db, PGconn *keep)
{
    pthread_mutex_lock(&db->mu);
    if (keep && db->nidle < db->size)
        db->idle[db->nidle++] = keep;
    else if (keep)
        PQfinish(keep); /* cannot happen: at most size are out */
    db->out--;
    pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mu);
}

/* A connection, waiting for one if wait (else NULL at once when all are out). */
static PGconn *take(eb_db *db, bool wait)
{
    PGconn *conn = NULL;

    pthread_mutex_lock(&db->mu);
    while (wait && db->out >= db->size)
        pthread_cond_wait(&db->cv, &db->mu);
    if (db->out >= db->size) {
        pthread_mutex_unlock(&db->mu);
        eb_error(EB_ERR_UNAVAILABLE, "every PostgreSQL connection of the pool is in use");
        return NULL;
    }
    db->out++;
    if (db->nidle > 0)
        conn = db->idle[--db->nidle];
    pthread_mutex_unlock(&db->mu);

    if (conn && !still_open(conn)) {
        PQfinish(conn);
        conn = NULL;
    }
    if (!conn)
        conn = connect_db(db);
    if (!conn)
        release(db, NULL);
    return conn;
}

PGconn *eb_db_get(eb_db *db)
{
    return take(db, true);
}

PGconn *eb_db_try_get(eb_db *db)
{
    return take(db, false);
}

void eb_db_put(eb_db *db, PGconn *conn)
{
    if (!conn)
        return;
    if (PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) != PQTRANS_IDLE) {
        PGresult *r = PQexec(conn, "ROLLBACK");
        PQclear(r);
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        PQfinish(conn);
        conn = NULL;
    }
    release(db, conn);
}

void eb_db_discard(eb_db *db, PGconn *conn)
{
    if (!conn)
        return;
    PQfinish(conn);
    release(db, NULL);
}

/* One readiness question: SELECT 1 on the check's own connection (*own, outside the pool, so
 * that a pool all in use, its users perhaps stuck on a PostgreSQL that stopped answering, does
 * not hide the answer), made when there is none, answered within DB_CHECK_LIMIT_MS or the
 * connection is given up. */
static bool check_once(eb_db *db, PGconn **own, char *detail, size_t len)
{
    if (*own && !still_open(*own)) {
        PQfinish(*own);
        *own = NULL;
    }
    if (!*own && !(*own = connect_db(db))) {
        snprintf(detail, len, "%s", eb_error_message());
        return false;
    }
    if (!exec_within(*own, "SELECT 1", DB_CHECK_LIMIT_MS, detail, len)) {
        PQfinish(*own); /* a question left unanswered, or a broken connection */
        *own = NULL;
        return false;
    }
    return true;
}

static void *check_main(void *arg)
{
    eb_db *db = arg;
    PGconn *own = NULL;

    pthread_mutex_lock(&db->hmu);
    while (!db->hstop) {
        char detail[sizeof(db->hdetail)];
        bool ok;

        db->hbegan_ms = eb_monotonic_ms();
        pthread_mutex_unlock(&db->hmu);
        ok = check_once(db, &own, detail, sizeof(detail));
        pthread_mutex_lock(&db->hmu);
        db->hbegan_ms = 0;
        db->hok = ok;
        db->hdone = true;
        snprintf(db->hdetail, sizeof(db->hdetail), "%s", detail);
        pthread_cond_broadcast(&db->hcv);
        if (!db->hstop) {
            struct timespec at = eb_monotonic_after_ms(DB_CHECK_EVERY_MS);
            pthread_cond_timedwait(&db->hcv, &db->hmu, &at);
        }
    }
    pthread_mutex_unlock(&db->hmu);
    PQfinish(own);
    return NULL;
}

bool eb_db_ping(eb_db *db, char *detail, size_t detail_len)
{
    char buf[sizeof(db->hdetail)];
    bool ok;

    pthread_mutex_lock(&db->hmu);
    if (!db->hstarted && !db->hstop) {
        /* the first call starts the checks and waits a little for the first answer */
        struct timespec at = eb_monotonic_after_ms(500);
        db->hstarted = pthread_create(&db->htid, NULL, check_main, db) == 0;
        while (db->hstarted && !db->hdone && pthread_cond_timedwait(&db->hcv, &db->hmu, &at) == 0) {
        }
    }
    if (db->hbegan_ms && eb_monotonic_ms() - db->hbegan_ms >= DB_CHECK_LIMIT_MS) {
        ok = false;
        snprintf(buf, sizeof(buf), "PostgreSQL has not answered for %lld ms",
                 eb_monotonic_ms() - db->hbegan_ms);
    } else if (!db->hdone) {
        ok = false;
        snprintf(buf, sizeof(buf), "%s",
                 db->hstarted ? "PostgreSQL has not answered yet" : "cannot start the check");
    } else {
        ok = db->hok;
        snprintf(buf, sizeof(buf), "%s", db->hdetail);
    }
    pthread_mutex_unlock(&db->hmu);
    if (detail && detail_len)
        snprintf(detail, detail_len, "%s", buf);
    return ok;
}

bool eb_db_state_unavailable(const char *sqlstate)
{
    if (!sqlstate || strlen(sqlstate) != 5)
        return false;
    return strncmp(sqlstate, "08", 2) == 0 || strcmp(sqlstate, "25006") == 0 ||
           strncmp(sqlstate, "53", 2) == 0 || strncmp(sqlstate, "57P", 3) == 0 ||
           strncmp(sqlstate, "58", 2) == 0;
}

static eb_status map_error(PGconn *conn, PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    char text[400];
    eb_status code = EB_ERR_DB;

    snprintf(text, sizeof(text), "%s", msg && *msg ? msg : "unknown database error");
    text[strcspn(text, "\n")] = '\0';
    if (PQstatus(conn) != CONNECTION_OK)
        code = EB_ERR_UNAVAILABLE;
    else if (state && (strcmp(state, "23505") == 0 || strcmp(state, "23P01") == 0))
        code = EB_ERR_CONFLICT;
    else if (state && (strncmp(state, "22", 2) == 0 || strcmp(state, "23502") == 0 ||
                       strcmp(state, "23514") == 0 || strcmp(state, "23503") == 0))
        code = EB_ERR_INVALID;
    else if (state && strcmp(state, "42501") == 0)
        code = EB_ERR_FORBIDDEN;
    else if (state && strcmp(state, "57014") == 0 && strstr(text, "statement timeout"))
        return eb_error(EB_ERR_TIMEOUT,
                        "the query ran longer than this service allows (query-timeout) and was "
                        "stopped; narrow it (a shorter time range, a project) or retry later");
    else if (state && strcmp(state, "55P03") == 0)
        code = EB_ERR_UNAVAILABLE; /* lock_not_available: lock_timeout ran out, try later */
    else if (eb_db_state_unavailable(state))
        code = EB_ERR_UNAVAILABLE;
    else if (state && strncmp(state, "40", 2) == 0) {
        /* transaction rollback (deadlock, serialization failure): PostgreSQL gave this side up
         * so that another could go on; the same request again will most likely succeed */
        return eb_error(EB_ERR_UNAVAILABLE, "%s; the transaction was rolled back, retry", text);
    }
    return eb_error(code, "%s", text);
}

void eb_db_set_request_timeout(eb_db *db, long long ms)
{
    db->request_timeout_ms = ms > 0 ? ms : 0;
}

eb_status eb_db_request_limits(eb_db *db, PGconn *conn)
{
    char ms[32];
    const char *p[1] = {ms};

    if (db->request_timeout_ms <= 0)
        return EB_OK;
    snprintf(ms, sizeof(ms), "%lld", db->request_timeout_ms);
    return eb_db_exec(conn, "SELECT set_config('statement_timeout', $1, true)", 1, p, NULL);
}

eb_status eb_db_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
                     PGresult **res)
{
    PGresult *r;
    ExecStatusType rs;

    if (res)
        *res = NULL;
    r = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    rs = PQresultStatus(r);
    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
        eb_status st = map_error(conn, r);
        PQclear(r);
        return st;
    }
    if (res)
        *res = r;
    else
        PQclear(r);
    return EB_OK;
}

static eb_status begin_team(PGconn *conn, const char *begin, const char *team_id)
{
    const char *p[1] = {team_id};
    eb_status st = eb_db_exec(conn, begin, 0, NULL, NULL);

    if (st == EB_OK)
        st = eb_db_exec(conn, "SELECT set_config('evalbus.team_id', $1, true)", 1, p, NULL);
    if (st != EB_OK)
        eb_db_rollback(conn);
    return st;
}

eb_status eb_db_begin_team(PGconn *conn, const char *team_id)
{
    return begin_team(conn, "BEGIN", team_id);
}

eb_status eb_db_begin_team_snapshot(PGconn *conn, const char *team_id)
{
    return begin_team(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", team_id);
}

eb_status eb_db_begin_system(PGconn *conn)
{
    eb_status st = eb_db_exec(conn, "BEGIN", 0, NULL, NULL);

    if (st == EB_OK)
        st = eb_db_exec(conn, "SELECT set_config('evalbus.system', 'on', true)", 0, NULL, NULL);
    if (st != EB_OK)
        eb_db_rollback(conn);
    return st;
}

eb_status eb_db_commit(PGconn *conn)
{
    return eb_db_exec(conn, "COMMIT", 0, NULL, NULL);
}

void eb_db_rollback(PGconn *conn)
{
    if (PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) != PQTRANS_IDLE) {
        PGresult *r = PQexec(conn, "ROLLBACK");
        PQclear(r);
    }
}

static bool valid_schema_name(const char *s)
{
    if (!*s || strlen(s) > 40)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || *s == '_'))
            return false;
    return true;
}

eb_status eb_db_migrate(PGconn *conn, const char *schema, const eb_migration *migrations,
                        size_t count, int *applied)
{
    eb_status st = EB_OK;
    char *sql = NULL;
    const char *p[1] = {schema};
    bool locked = false;
    int n = 0;

    if (!valid_schema_name(schema))
        return eb_error(EB_ERR_INVALID, "bad schema name '%s'", schema);
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    st = eb_db_exec(conn, "SELECT pg_advisory_lock(7236001, hashtext($1))", 1, p, NULL);
    if (st != EB_OK)
        goto cleanup;
    locked = true;
    sql = eb_asprintf("CREATE SCHEMA IF NOT EXISTS %s;"
                      "CREATE TABLE IF NOT EXISTS %s.schema_migrations ("
                      " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                      schema, schema);
    {
        PGresult *r = PQexec(conn, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            st = map_error(conn, r);
            PQclear(r);
            goto cleanup;
        }
        PQclear(r);
    }
    free(sql);
    sql = eb_asprintf("SELECT 1 FROM %s.schema_migrations WHERE name = $1", schema);
    for (size_t i = 0; i < count; i++) {
        PGresult *r = NULL;
        const char *mp[1] = {migrations[i].name};
        char *record;
        bool done;

        st = eb_db_exec(conn, sql, 1, mp, &r);
        if (st != EB_OK)
            goto cleanup;
        done = PQntuples(r) > 0;
        PQclear(r);
        if (done)
            continue;
        st = eb_db_exec(conn, "BEGIN", 0, NULL, NULL);
        if (st != EB_OK)
            goto cleanup;
        r = PQexec(conn, migrations[i].sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            st = map_error(conn, r);
            PQclear(r);
            eb_db_rollback(conn);
            st = eb_error(st, "migration %s/%s failed: %s", schema, migrations[i].name,
                          eb_error_message());
            goto cleanup;
        }
        PQclear(r);
        record = eb_asprintf("INSERT INTO %s.schema_migrations (name) VALUES ($1)", schema);
        st = eb_db_exec(conn, record, 1, mp, NULL);
        free(record);
        if (st == EB_OK)
            st = eb_db_commit(conn);
        if (st != EB_OK) {
            eb_db_rollback(conn);
            goto cleanup;
        }
        eb_log_info(NULL, "applied migration %s/%s", schema, migrations[i].name);
        n++;
    }
cleanup:
    if (locked) {
        PGresult *r = PQexecParams(conn, "SELECT pg_advisory_unlock(7236001, hashtext($1))", 1,
                                   NULL, p, NULL, NULL, 0);
        PQclear(r);
    }
    free(sql);
    if (applied)
        *applied = n;
    return st;
}

eb_status eb_db_migrate_wait(eb_db *db, const char *schema, const eb_migration *migrations,
                             size_t count, long long give_up_ms)
{
    for (long long waited = 0;; waited += 500) {
        PGconn *c = eb_db_get(db);
        eb_status st;
        if (c) {
            st = eb_db_migrate(c, schema, migrations, count, NULL);
            eb_db_put(db, c);
            if (st != EB_ERR_UNAVAILABLE)
                return st;
        }
        if (waited % 5000 == 0)
            eb_log_warn(NULL, "waiting for PostgreSQL to apply the %s migrations: %s", schema,
                        eb_error_message());
        if (waited >= give_up_ms)
            return eb_error(EB_ERR_UNAVAILABLE, "PostgreSQL did not answer for %lld s: %s",
                            give_up_ms / 1000, eb_error_message());
        usleep(500000);
    }
}

const char *eb_db_val(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) ? "" : PQgetvalue(res, r, c);
}

bool eb_db_isnull(const PGresult *res, int r, int c)
{
    return PQgetisnull(res, r, c) != 0;
}
