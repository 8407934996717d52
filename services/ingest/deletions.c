/* deletions.c -- when each team last deleted traces, so that a trace sent again after its
 * deletion is stored again.
 *
 * The INGEST stream drops a record whose message id it has seen within its duplicate window
 * (stream-dupe-window, 20 seconds by default), and the message id of a record is its team, its
 * trace id and the hash of its content. A trace deleted and then sent again unchanged within the
 * window would be acknowledged, then dropped as a duplicate of the record that stored it before.
 * So for a window after a deletion of a team's traces, the message ids of that team's records
 * also carry the time of the deletion: a resend after it is a new message, while retries from
 * before it, and everything after the window, are recognised as before. (Nothing is stored
 * twice either way: the writer upserts by team and id; the message id only saves the work.)
 *
 * Every replica learns of deletions from evalbus.v1.traces.deleted.<team slug> (TracesDeleted,
 * published by the replica that deleted, after its COMMIT) and notes its own at once. A replica
 * started after a deletion does not know of it; neither does one that a resend reaches within
 * the milliseconds before the event does: such a resend within the window is dropped as before.
 *
 * Threading: any thread; one mutex over a small table (the teams that deleted most recently). */
#include "evalbus/crypto.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/v1/trace.pb-c.h"
#include "ingest_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define DELETIONS_SLOTS 256
#define DELETED_SUBJECT_PREFIX "evalbus.v1.traces.deleted."

static struct {
    pthread_mutex_t mu;
    atomic_llong window_ms;
    atomic_llong latest_ms; /* the latest deletion noted: most records need no lock */
    struct {
        char team_id[40];
        long long at_ms;
    } slot[DELETIONS_SLOTS];
} deletions = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void note(const char *team_id, long long at_ms)
{
    int use = 0;

    if (!team_id || strlen(team_id) >= sizeof(deletions.slot[0].team_id))
        return;
    pthread_mutex_lock(&deletions.mu);
    for (int i = 0; i < DELETIONS_SLOTS; i++) {
        if (strcmp(deletions.slot[i].team_id, team_id) == 0) {
            use = i;
            break;
        }
        if (deletions.slot[i].at_ms < deletions.slot[use].at_ms)
            use = i; /* the oldest (or an empty) slot */
    }
    if (strcmp(deletions.slot[use].team_id, team_id) != 0 || deletions.slot[use].at_ms < at_ms) {
        snprintf(deletions.slot[use].team_id, sizeof(deletions.slot[use].team_id), "%s", team_id);
        deletions.slot[use].at_ms = at_ms;
    }
    if (atomic_load(&deletions.latest_ms) < at_ms)
        atomic_store(&deletions.latest_ms, at_ms);
    pthread_mutex_unlock(&deletions.mu);
}

long long ingest_deletion_epoch(const char *team_id, long long now_ms)
{
    long long at = 0;

    if (now_ms - atomic_load(&deletions.latest_ms) >= atomic_load(&deletions.window_ms))
        return 0; /* no deletion of any team within the window */
    pthread_mutex_lock(&deletions.mu);
    for (int i = 0; i < DELETIONS_SLOTS; i++)
        if (deletions.slot[i].at_ms && strcmp(deletions.slot[i].team_id, team_id) == 0) {
            at = deletions.slot[i].at_ms;
            break;
        }
    if (at && now_ms - at >= atomic_load(&deletions.window_ms))
        at = 0; /* the window has passed: every record since is after the deletion anyway */
    pthread_mutex_unlock(&deletions.mu);
    return at;
}

static void on_deleted(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *arg)
{
    Evalbus__V1__TracesDeleted *ev = evalbus__v1__traces_deleted__unpack(
        NULL, (size_t)natsMsg_GetDataLength(msg), (const uint8_t *)natsMsg_GetData(msg));

    (void)nc;
    (void)sub;
    (void)arg;
    if (ev && ev->envelope && ev->envelope->team_id && eb_uuid_valid(ev->envelope->team_id))
        note(ev->envelope->team_id, ev->envelope->occurred_at_unix_ms);
    else
        eb_log_warn(NULL, "an undecodable TracesDeleted on %s; ignored", natsMsg_GetSubject(msg));
    if (ev)
        evalbus__v1__traces_deleted__free_unpacked(ev, NULL);
    natsMsg_Destroy(msg);
}

eb_status ingest_deletions_start(ingest_ctx *ctx)
{
    natsStatus s;

    atomic_store(&deletions.window_ms, ctx->cfg->stream_dupe_window_ms);
    s = natsConnection_Subscribe(&ctx->deleted_sub, eb_bus_conn(ctx->svc.bus),
                                 DELETED_SUBJECT_PREFIX ">", on_deleted, NULL);
    return s == NATS_OK ? EB_OK : eb_bus_error(s, "subscribing to " DELETED_SUBJECT_PREFIX ">");
}

void ingest_deletions_stop(ingest_ctx *ctx)
{
    if (ctx->deleted_sub) {
        natsSubscription_Unsubscribe(ctx->deleted_sub);
        natsSubscription_Destroy(ctx->deleted_sub);
        ctx->deleted_sub = NULL;
    }
}

void ingest_deletions_announce(ingest_ctx *ctx, const eb_principal *who, const char *trace_id)
{
    Evalbus__V1__TracesDeleted ev = EVALBUS__V1__TRACES_DELETED__INIT;
    Evalbus__V1__Envelope env = EVALBUS__V1__ENVELOPE__INIT;
    char event_id[37], subject[160], *ids[1] = {(char *)trace_id};
    long long now = ingest_now_ms();
    uint8_t *buf;
    size_t len;

    note(who->team_id, now);
    eb_uuid_v4(event_id);
    env.event_id = event_id;
    env.team_id = (char *)who->team_id;
    env.occurred_at_unix_ms = now;
    env.schema_version = 1;
    ev.envelope = &env;
    if (trace_id) {
        ev.trace_ids = ids;
        ev.n_trace_ids = 1;
    } else {
        ev.has_by_filter = 1;
        ev.by_filter = 1;
    }
    len = evalbus__v1__traces_deleted__get_packed_size(&ev);
    buf = eb_malloc(len ? len : 1);
    evalbus__v1__traces_deleted__pack(&ev, buf);
    snprintf(subject, sizeof(subject), DELETED_SUBJECT_PREFIX "%s", who->team_slug);
    natsConnection_Publish(eb_bus_conn(ctx->svc.bus), subject, buf, (int)len);
    free(buf);
}
