/* db.h -- PostgreSQL access: a thread-safe connection pool, checked queries, team-scoped
 * transactions for row-level security, and migrations under an advisory lock.
 *
 * Connections are made lazily and remade when they break, so a service starts and keeps
 * running while PostgreSQL is down; eb_db_get() then answers NULL with EB_ERR_UNAVAILABLE.
 * Queries run synchronously on the calling thread; a connection belongs to one thread between
 * eb_db_get() and eb_db_put(). */
#ifndef EVALBUS_DB_H
#define EVALBUS_DB_H

#include "evalbus/status.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

/* One embedded migration (generated from services/<service>/migrations/NNN_name.sql). */
typedef struct eb_migration {
    const char *name;
    const char *sql;
} eb_migration;

typedef struct eb_db eb_db;

/* Creates a pool of at most size connections to url (a libpq URI or key=value string).
 * Does not connect yet. app_name is reported to PostgreSQL. idle_tx_timeout_ms > 0 sets
 * idle_in_transaction_session_timeout on every connection (a session left idle inside a
 * transaction is ended by the server, and its transaction rolled back); 0 leaves the server's
 * setting. Free with eb_db_close(). */
eb_db *eb_db_open(const char *url, int size, const char *app_name, long long idle_tx_timeout_ms);
void eb_db_close(eb_db *db);
/* Bounds every statement of the transactions that HTTP requests begin (eb_req_db_begin and
 * eb_req_db_begin_read) to ms, lock waits included (statement_timeout, set for the
 * transaction); 0, the default, leaves the server's setting. A statement stopped by it fails
 * with EB_ERR_TIMEOUT. Set before the pool is used. */
void eb_db_set_request_timeout(eb_db *db, long long ms);
/* The transaction of an HTTP request has begun on conn: applies the request timeout, if any. */
eb_status eb_db_request_limits(eb_db *db, PGconn *conn);

/* Takes a healthy connection (waits while all are in use; connects or reconnects as needed).
 * Returns NULL and records EB_ERR_UNAVAILABLE if PostgreSQL cannot be reached. Give it back with
 * eb_db_put(); a connection left inside a transaction is rolled back there. */
PGconn *eb_db_get(eb_db *db);
/* Like eb_db_get, but answers NULL (EB_ERR_UNAVAILABLE) at once when every connection is in use
 * instead of waiting for one. */
PGconn *eb_db_try_get(eb_db *db);
void eb_db_put(eb_db *db, PGconn *conn);
/* Closes a connection taken with eb_db_get instead of giving it back (its slot reconnects when
 * next taken): for one that a cancel request (PQcancel) may still reach, so that the cancel
 * cannot hit the next user's statement. */
void eb_db_discard(eb_db *db, PGconn *conn);

/* The readiness check: true if PostgreSQL answered SELECT 1 at the last check. The checks run
 * once a second on a thread of their own, with a connection of their own outside the pool (a
 * pool all in use says nothing either way), started by the first call (which waits up to 0.5 s
 * for the first answer); a call never waits on PostgreSQL otherwise, since readiness probes
 * call it on the loop thread. A check left unanswered for 2 s counts as a failure at once (a
 * PostgreSQL that takes connections but does not answer). detail (may be NULL) gets a short
 * reason. */
bool eb_db_ping(eb_db *db, char *detail, size_t detail_len);

/* Runs sql with text parameters (NULL entries are SQL NULL). On success *res (if res is not
 * NULL) gets the result, which the caller frees with PQclear. Errors: EB_ERR_CONFLICT for unique
 * and exclusion violations, EB_ERR_INVALID for bad input values (SQLSTATE class 22, 23502,
 * 23514), EB_ERR_FORBIDDEN for row-level security refusals (42501), EB_ERR_UNAVAILABLE when the
 * connection is lost, a lock_timeout ran out (55P03), the transaction was rolled back for
 * another's sake (class 40) or the server cannot do the work now (eb_db_state_unavailable),
 * EB_ERR_TIMEOUT when a statement_timeout ran out (57014), EB_ERR_DB otherwise; the message is
 * recorded with eb_error(). */
eb_status eb_db_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
                     PGresult **res);
/* True for a SQLSTATE that tells of the server's state rather than of the statement or its data:
 * a connection exception (class 08), a read-only transaction (25006: a standby, or writes
 * turned off), insufficient resources (class 53: disk full, out of memory, too many
 * connections), an operator's intervention other than a cancelled statement (57P*: shutdown,
 * cannot connect now), a system error (class 58: I/O). The same work may succeed later. */
bool eb_db_state_unavailable(const char *sqlstate);

/* BEGIN and scope the transaction to one team: sets evalbus.team_id, which the row-level
 * security policies of every team-owned table check. */
eb_status eb_db_begin_team(PGconn *conn, const char *team_id);
/* Like eb_db_begin_team, for a read-only transaction whose statements all see one snapshot
 * (REPEATABLE READ): a reading made of several statements is consistent with itself. */
eb_status eb_db_begin_team_snapshot(PGconn *conn, const char *team_id);
/* BEGIN a transaction that may see every team's rows (evalbus.system = on): credential lookups
 * and operator commands only. */
eb_status eb_db_begin_system(PGconn *conn);
eb_status eb_db_commit(PGconn *conn);
void eb_db_rollback(PGconn *conn);

/* Applies, in order, each migration of schema not yet recorded in <schema>.schema_migrations,
 * each in its own transaction, holding an advisory lock so that replicas starting together do
 * not race. *applied (may be NULL) gets the number applied now. */
eb_status eb_db_migrate(PGconn *conn, const char *schema, const eb_migration *migrations,
                        size_t count, int *applied);

/* eb_db_migrate on a pooled connection, retried every 500 ms while PostgreSQL is unreachable
 * (a service may start before its database), for at most give_up_ms. */
eb_status eb_db_migrate_wait(eb_db *db, const char *schema, const eb_migration *migrations,
                             size_t count, long long give_up_ms);

/* Value of row r, column c of res as a string ("" for NULL). */
const char *eb_db_val(const PGresult *res, int r, int c);
bool eb_db_isnull(const PGresult *res, int r, int c);

#endif
