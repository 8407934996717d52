/* ingest_int.h -- private interfaces between the files of the ingest service. */
#ifndef EVALBUS_INGEST_INT_H
#define EVALBUS_INGEST_INT_H

#include "evalbus/authc.h"
#include "evalbus/pool.h"
#include "evalbus/service.h"
#include "evalbus/v1/trace.pb-c.h"
#include "ingest_limits.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define INGEST_STREAM "INGEST"
#define INGEST_SUBJECT_PREFIX "evalbus.v1.ingest.records."
/* the writer consumer's AckWait: a dead writer's batch comes back this soon (streams.c); a live
 * writer's batch that takes longer is kept in progress (writer.c, the heartbeat) */
#define INGEST_WRITER_ACK_WAIT_MS 10000
/* days INGEST keeps a record (streams.c, MaxAge); a deletion's tombstone is kept one day more
 * (retention.c), so that no record it stops can still be delivered */
#define INGEST_RECORD_DAYS 7
#define INGEST_NATS_SUBJECT_PREFIX "evalbus.v1.ingest.traces."
#define INGEST_DEAD_PREFIX "evalbus.v1.ingest.dead."
#define EVENTS_STREAM "EVENTS"
#define STORED_SUBJECT_PREFIX "evalbus.v1.traces.stored."
#define INGEST_WRITER_DURABLE "ingest-writer"

typedef struct ingest_config {
    eb_service_config svc;
    long long auth_cache_ttl_ms;
    long long auth_timeout_ms;
    long long publish_timeout_ms;
    long long max_batch_items;
    long long max_field_bytes;
    long long max_observations;
    long long max_messages;
    long long max_metadata_bytes;
    long long max_trace_bytes;
    long long stream_replicas;
    long long writer_threads;
    long long writer_batch;
    long long decode_threads;
    long long stream_max_bytes;
    long long stream_high_water;  /* percent */
    long long stream_purge_slice; /* records */
    long long stream_dupe_window_ms;
    long long retention_days;
    long long retention_interval_ms;
    long long delete_wait_ms; /* 0: a deletion does not wait for the writers */
    char *review_reasons;     /* comma-separated */
} ingest_config;

typedef struct ingest_publisher ingest_publisher;
typedef struct ingest_writer ingest_writer;
typedef struct ingest_watch ingest_watch;
typedef struct ingest_retention ingest_retention;

typedef struct ingest_ctx {
    ingest_config *cfg;
    ingest_limits limits;
    eb_service svc;
    eb_authc *authc;
    ingest_publisher *pub;
    eb_pool *pool;
    eb_pool *guard_pool; /* one thread: the project guard's questions (project_guard.c) */
    ingest_writer *writer;
    ingest_watch *watch;
    eb_sub *nats_sub;
    bool nats_handler_on; /* on_msg outlived the wait of ingest_nats_finish */
    struct event *nats_wake;
    pthread_mutex_t nats_mu;
    struct nats_item *nats_queue;
    /* batches taken from the NATS client and not yet answered, and their bytes: on_msg waits
     * for room above the bound (nats_in.c), under nats_mu */
    size_t nats_held, nats_held_bytes;
    pthread_cond_t nats_room;
    bool nats_unbounded; /* shutting down: on_msg no longer waits */
    /* NATS batches on the decode pool, in the order they go on to the stream (nats_in.c) */
    struct nats_item *nats_order, *nats_order_tail;
    bool stopping; /* the loop has ended: NATS batches not yet taken are answered unavailable */
    ingest_retention *retention;
    natsSubscription *deleted_sub; /* evalbus.v1.traces.deleted.> (deletions.c) */
    atomic_int deleting;           /* deletions under way, each on an API thread (api_delete.c) */
} ingest_ctx;

/* --- publishing records to the INGEST stream (publish.c) --- */
/* results[i] is EB_OK when the stream has record i, else why not: EB_ERR_TIMEOUT when it was
 * sent and not acknowledged in time (it may still be stored), EB_ERR_TOO_LARGE when it is larger
 * than the NATS server takes, else (EB_ERR_UNAVAILABLE) it was refused or never sent. Called on
 * the loop thread. */
typedef void (*ingest_publish_done)(void *arg, const eb_status *results, size_t n);
/* The message that tells a caller about a record that failed with result. */
static inline const char *ingest_publish_message(eb_status result)
{
    if (result == EB_ERR_TOO_LARGE)
        return "the trace is larger as a stream record than the NATS server takes (max_payload)";
    if (result == EB_ERR_RATE_LIMITED)
        return "the ingest stream is full of traces not yet stored; retry in a few seconds";
    return result == EB_ERR_TIMEOUT ? "the ingest stream did not acknowledge it in time; it may "
                                      "still be stored: send it again with the same id"
                                    : "the ingest stream did not take it; retry";
}

ingest_publisher *ingest_publisher_new(struct event_base *base, eb_bus *bus, long long timeout_ms,
                                       eb_status *st);
/* At shutdown, after the loop has ended: refuses new records and runs the loop until every
 * batch in flight has its answer (acknowledged, or failed after timeout_ms), so that callers
 * get a reply and nothing is left behind. Loop thread. */
void ingest_publisher_finish(ingest_publisher *p);
/* Closes the NATS connection (no acknowledgement can then arrive) and frees the publisher. */
void ingest_publisher_free(ingest_publisher *p);
/* Publishing is in two halves, so that the CPU-heavy one stays off the loop thread.
 * ingest_record_pack turns one trace into the IngestRecord message for the stream (subject,
 * Nats-Msg-Id header, payload, and a reply subject of p's for JetStream's acknowledgement); it
 * touches no shared state but an atomic counter of p's, so any thread may call it (the decode
 * pool's threads do). The caller owns the message (natsMsg_Destroy) until it hands it to
 * ingest_publish_packed of the same p.
 * EB_OK, or why the message could not be made (*out is then NULL): EB_ERR_TOO_LARGE when it
 * would be larger than max_payload (the NATS server's limit; 0: not checked). */
eb_status ingest_record_pack(ingest_publisher *p, const eb_principal *who, const char *source,
                             bool merge, long long now_ms, const Evalbus__V1__Trace *t,
                             long long max_payload, natsMsg **out);
/* The largest message the NATS server takes (0 while not connected). Any thread. */
long long ingest_publisher_max_payload(ingest_publisher *p);

/* Publishes a copy of msg's payload to subject (a dead-letter subject) with the headers
 * Evalbus-Reason, Evalbus-Stage and (when not NULL) Evalbus-Subject. A payload that fits
 * max_payload alone but not with those headers goes cut to its first bytes, with
 * Evalbus-Payload-Cut giving its whole length. False (and logged) when nothing could be published
 * (nats_in.c). */
bool ingest_dead_letter(natsConnection *nc, const char *subject, natsMsg *msg, const char *stage,
                        const char *reason, const char *orig_subject);
/* Publishes msgs[0..n) (taking every message and setting the entries to NULL; a NULL entry
 * counts as failed with unmade[i], the status its packing gave, or EB_ERR_UNAVAILABLE when
 * unmade is NULL; unmade is copied). done runs once, on the loop thread, when every record is
 * acknowledged by JetStream or has failed (inside this call when all are refused at once); a
 * record refused because the stream is full of records not yet stored (above
 * stream-high-water, or full itself) fails with EB_ERR_RATE_LIMITED. The
 * records go out in slices of a few hundred, one per turn of the loop, so that a large batch does
 * not hold the loop; the wait for the acknowledgements (timeout_ms at most) starts once the last
 * one is handed over. The slices of batches handed over one after the other may go out
 * between each other's, but for in_order batches: one goes out only once every in_order batch
 * handed over before it has gone out whole, so their records are in the stream in that order.
 * Loop thread. */
void ingest_publish_packed(ingest_publisher *p, natsMsg **msgs, size_t n, const eb_status *unmade,
                           bool in_order, ingest_publish_done done, void *arg);
/* While full is set, every record handed to the publisher fails at once with
 * EB_ERR_UNAVAILABLE (the stream watch sets it; any thread). */
void ingest_publisher_set_full(ingest_publisher *p, bool full);
/* Milliseconds since the epoch (received_at of the records). */
long long ingest_now_ms(void);

/* --- deletions of a team's traces, as the message ids need them (deletions.c) --- */
/* The time (ms) of the team's last deletion if it is within the stream's duplicate window, else
 * 0: ingest_record_pack puts it in the message ids of the team's records. Any thread. */
long long ingest_deletion_epoch(const char *team_id, long long now_ms);
/* Subscribes to evalbus.v1.traces.deleted.> (every replica's deletions); stop unsubscribes. */
eb_status ingest_deletions_start(ingest_ctx *ctx);
void ingest_deletions_stop(ingest_ctx *ctx);
/* Notes a deletion of who's team's traces (trace_id, or NULL for a deletion by filter) that has
 * committed, and tells the other replicas (TracesDeleted). */
void ingest_deletions_announce(ingest_ctx *ctx, const eb_principal *who, const char *trace_id);

/* --- the stream watch: refuses new records before unstored ones could be pushed out of the
 * stream (stream_watch.c) --- */
ingest_watch *ingest_watch_start(ingest_ctx *ctx);
void ingest_watch_stop(ingest_watch *w); /* NULL is ignored */
/* The INGEST stream's last position (sequence) now, read on the watch's connection: every
 * record acknowledged before the call is at or below it. EB_ERR_UNAVAILABLE when NATS cannot be
 * asked. Any thread; it waits for NATS (the JetStream request's timeout at most). */
eb_status ingest_stream_position(ingest_ctx *ctx, unsigned long long *seq);
/* Waits until the writers have stored (or dropped) every record the stream took before the
 * call: until the writer consumer's acknowledgement floor reaches the stream's last position,
 * read first. EB_ERR_UNAVAILABLE when NATS cannot be asked, when wait_ms passes first (the
 * message says how far behind the writers are), or at once when the writers are behind and
 * max_waiting calls already wait. Any thread; it polls NATS, sleeping between reads. */
eb_status ingest_writers_catch_up(ingest_ctx *ctx, long long wait_ms);

/* --- project-restricted keys and traces stored in another project (project_guard.c) --- */
/* Why a record of id from a key restricted to project only is refused: the team stores that
 * trace in project stored_in. Free the text. */
char *ingest_project_refusal(const char *id, const char *stored_in, const char *only);
/* found[i] is the project in which the team stores trace ids[i] when that is not the key's,
 * else NULL; found itself is NULL when no id is (or nothing could be asked). Owned by the
 * guard, valid during the call. */
typedef void (*ingest_guard_done)(void *arg, char *const *found);
/* Loop thread: for a key restricted to a project (who->project), asks PostgreSQL on the guard
 * thread which of ids[0..n) its team stores in another project, then calls done on the loop
 * thread (the strings must stay valid until then; the array is copied). Without a restriction,
 * or with n 0, calls done at once with found NULL. */
void ingest_guard_projects(ingest_ctx *ctx, const eb_principal *who, const char *const *ids,
                           size_t n, ingest_guard_done done, void *arg);
/* Like ingest_guard_projects for the ids of traces[0..n) (which must stay valid until done). */
void ingest_guard_traces(ingest_ctx *ctx, const eb_principal *who,
                         Evalbus__V1__Trace *const *traces, size_t n, ingest_guard_done done,
                         void *arg);

/* --- the writer: INGEST stream -> PostgreSQL (writer.c) --- */
ingest_writer *ingest_writer_start(ingest_ctx *ctx);
/* Stops fetching, finishes the batch in hand, joins the threads. */
void ingest_writer_stop(ingest_writer *w);
bool ingest_writer_healthy(ingest_writer *w, char *detail, size_t len);

/* --- streams (streams.c) --- */
/* Creates or updates INGEST and EVENTS and the writer's durable consumer, with a connection of
 * its own (no event loop), retrying until NATS answers or give_up_ms passes. */
eb_status ingest_streams_ensure(const ingest_config *cfg, long long give_up_ms);
/* The same on a connection of the caller's (synchronous calls: not on a loop's connection). */
eb_status ingest_streams_ensure_on(eb_bus *bus, const ingest_config *cfg);

/* --- NATS TraceBatch intake (nats_in.c) --- */
eb_status ingest_nats_start(ingest_ctx *ctx);
/* Leaves the queue group on shutdown: messages already here are still handled. */
void ingest_nats_drain(ingest_ctx *ctx);
/* Once the loop has ended (ctx->stopping): waits up to 500 ms for the drain to hand over what
 * the library holds, leaves the subject, and answers every batch not taken `unavailable` (no
 * dead letter); the answers go out with the loop's next turns. */
void ingest_nats_finish(ingest_ctx *ctx);
/* ingest_nats_finish, then frees the intake's state. */
void ingest_nats_stop(ingest_ctx *ctx);

/* --- retention (retention.c) --- */
/* Starts the retention thread (NULL if it cannot be started); stop cancels a pass under way
 * (it rolls back, unless already committing) and waits for the thread. */
ingest_retention *ingest_retention_start(ingest_ctx *ctx);
void ingest_retention_stop(ingest_retention *rt); /* NULL is ignored */

/* --- HTTP API --- */
extern const eb_http_route ingest_routes[];
extern const size_t ingest_nroutes;

void api_traces_post(eb_http_req *req, void *ctx);
void api_traces_list(eb_http_req *req, void *ctx);
void api_trace_get(eb_http_req *req, void *ctx);
void api_trace_delete(eb_http_req *req, void *ctx);
void api_traces_delete_by_filter(eb_http_req *req, void *ctx);
void api_otlp_post(eb_http_req *req, void *ctx);
void api_review_post(eb_http_req *req, void *ctx);
/* The review-reasons setting as the API checks it: its items without the spaces around them, in
 * a new string; NULL (with why) when an item is empty, has a control character or is not UTF-8. */
char *ingest_reasons_normalize(const char *list, char *why, size_t why_len);
void api_score_post(eb_http_req *req, void *ctx);
void api_project_settings_put(eb_http_req *req, void *ctx);
void api_project_settings_get(eb_http_req *req, void *ctx);

/* The filters of listing and of deletion by filter on traces t that both know: the project $2
 * and the window from $3 to $4 (each NULL for none; to exclusive). One text for both, so that a
 * list previews a deletion. A trace's time is its start time, else its partition time; part_time
 * must also lie within a day of a bound, so only the partitions in range are read (a trace whose
 * start is more than a day from its partition time falls outside: README). */
#define INGEST_PROJECT_WINDOW_SQL                                                                  \
    "($2::text IS NULL OR t.project = $2) AND ($3::timestamptz IS NULL OR (t.part_time >="         \
    " $3::timestamptz - interval '1 day' AND coalesce(t.start_time, t.part_time) >="               \
    " $3::timestamptz)) AND ($4::timestamptz IS NULL OR (t.part_time < $4::timestamptz + interval" \
    " '1 day' AND coalesce(t.start_time, t.part_time) < $4::timestamptz))"

/* Checks the bounds of INGEST_PROJECT_WINDOW_SQL (each NULL for none): RFC 3339 timestamps,
 * from not after to. Else answers 400 itself and returns false. */
bool ingest_window_ok(eb_http_req *req, const char *from, const char *to);

/* The project a request may see: the one asked for (NULL: every one), confined to the key's
 * project when the key is restricted. Answers 403 itself (another project, verb as in "may only
 * read project 'p'") and returns false. */
bool ingest_project_scope(eb_http_req *req, const char **project, const char *verb);

/* Turns a principal's project restriction into a check: EB_OK or EB_ERR_FORBIDDEN. */
eb_status ingest_check_project(const eb_principal *p, const char *project);

#endif
