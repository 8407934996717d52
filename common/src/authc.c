/* authc.c -- NATS auth client with a short-lived cache.
 *
 * A request gets a sequence number and is published to evalbus.v1.auth.verify with the reply
 * subject <inbox>.<seq>, where one wildcard subscription <inbox>.* receives every answer.
 * Answers arrive on a NATS delivery thread: the handler moves the pending entry from the
 * pending list to the done queue under the mutex and wakes the loop (event_active); the loop
 * drains the done queue, caches allowed answers and calls the callbacks. A per-request timer
 * on the loop answers EB_ERR_TIMEOUT if no reply came; a late reply then finds no pending
 * entry and is dropped.
 *
 * The cache is a fixed-size open-addressing table (credential SHA-256 -> principal, expiry),
 * cleared when half full; revocations mark entries expired, and an answer to a request sent
 * before a revocation arrived is not cached (it may have been read before it). While the auth
 * service does not answer, an expired entry that was not revoked still serves for a while, but
 * never past the credential's own expiry. The table is guarded by the mutex because the revocation
 * handler runs on a NATS thread. */
#include "evalbus/clock.h"
#include "evalbus/authc.h"
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "evalbus/v1/auth.pb-c.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CACHE_SLOTS 16384
/* While the auth service cannot answer (timeout, unavailable), an expired entry that was not
 * revoked is still used for this long: ingestion goes on through an auth or database outage. */
#define STALE_MS (10 * 60 * 1000)
#define MAX_CREDENTIAL 8192

typedef struct pending {
    struct pending *next;
    eb_authc *c;
    uint64_t seq;
    unsigned long long drops; /* eb_authc.drops when the request was sent */
    char hash[65];
    eb_auth_done done;
    void *arg;
    struct event *timer;
    /* filled by the NATS thread */
    bool answered;
    eb_status st;
    eb_principal p;
    char reason[64];
} pending;

typedef struct centry {
    bool used;
    bool revoked;
    char hash[65];
    long long expires_ms;
    eb_principal p;
} centry;

struct eb_authc {
    struct event_base *base;
    eb_bus *bus;
    char *service;
    long long ttl_ms;
    long long timeout_ms;
    char inbox[128];
    eb_sub *reply_sub;
    eb_sub *revoked_sub;
    struct event *wake;
    pthread_mutex_t mu;
    bool stopped;     /* eb_authc_stop ran (loop thread only) */
    bool handlers_on; /* a handler outlived eb_authc_stop's wait: c must stay */
    pending *waiting; /* sent, no answer yet */
    pending *ready;   /* answered, callback not yet run */
    uint64_t next_seq;
    /* revocations seen: an answer to a request sent before one may predate it, so it is not
     * cached */
    unsigned long long drops;
    centry *cache;
    size_t cache_used;
    unsigned long long hits, misses;
};

static size_t slot_of(const char *hash)
{
    uint64_t h = 0;

    for (int i = 0; i < 16; i++)
        h = (h << 4) | (uint64_t)(hash[i] <= '9' ? hash[i] - '0' : hash[i] - 'a' + 10);
    return (size_t)(h & (CACHE_SLOTS - 1));
}

/* Caller holds mu. */
static centry *cache_find(eb_authc *c, const char *hash, bool create)
{
    size_t i;

    if (create && c->cache_used >= CACHE_SLOTS / 2) {
        memset(c->cache, 0, CACHE_SLOTS * sizeof(centry));
        c->cache_used = 0;
    }
    for (i = slot_of(hash); c->cache[i].used; i = (i + 1) & (CACHE_SLOTS - 1))
        if (strcmp(c->cache[i].hash, hash) == 0)
            return &c->cache[i];
    if (!create)
        return NULL;
    c->cache[i].used = true;
    memcpy(c->cache[i].hash, hash, 65);
    c->cache_used++;
    return &c->cache[i];
}

static void finish(pending *pd)
{
    eb_authc *c = pd->c;

    if (pd->timer)
        event_free(pd->timer);
    if ((pd->st == EB_ERR_UNAVAILABLE || pd->st == EB_ERR_TIMEOUT) && c->ttl_ms > 0) {
        centry *e;
        pthread_mutex_lock(&c->mu);
        e = cache_find(c, pd->hash, false);
        /* never past the credential's own expiry (a key's expires_at, a session's exp) */
        if (e && !e->revoked && eb_monotonic_ms() < e->expires_ms + STALE_MS &&
            (e->p.expires_at_ms <= 0 || e->p.expires_at_ms > (long long)time(NULL) * 1000)) {
            pd->p = e->p;
            pd->st = EB_OK;
            c->hits++;
        }
        pthread_mutex_unlock(&c->mu);
        if (pd->st == EB_OK) {
            eb_log_warn(NULL, "auth service unavailable: using an expired cache entry");
            pd->done(pd->st, &pd->p, "", pd->arg);
            free(pd);
            return;
        }
    }
    if (pd->st == EB_OK && c->ttl_ms > 0) {
        long long ttl = c->ttl_ms;
        if (pd->p.expires_at_ms > 0) {
            long long left = pd->p.expires_at_ms - (long long)time(NULL) * 1000;
            ttl = left < ttl ? left : ttl;
        }
        if (ttl > 0) {
            centry *e;
            pthread_mutex_lock(&c->mu);
            if (c->drops == pd->drops) {
                e = cache_find(c, pd->hash, true);
                e->p = pd->p;
                e->revoked = false;
                e->expires_ms = eb_monotonic_ms() + ttl;
            }
            pthread_mutex_unlock(&c->mu);
        }
    }
    pd->done(pd->st, pd->st == EB_OK ? &pd->p : NULL, pd->reason, pd->arg);
    free(pd);
}

/* Loop thread: run the callbacks of answered requests. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    eb_authc *c = arg;
    pending *list;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&c->mu);
    list = c->ready;
    c->ready = NULL;
    pthread_mutex_unlock(&c->mu);
    while (list) {
        pending *next = list->next;
        finish(list);
        list = next;
    }
}

/* Answers pd: the service is shutting down (a stale cache entry may still serve, see
 * finish). */
static void finish_shutting_down(pending *pd)
{
    pd->st = eb_error(EB_ERR_UNAVAILABLE, "the service is shutting down");
    snprintf(pd->reason, sizeof(pd->reason), "shutting_down");
    finish(pd);
}

/* Caller holds mu. Removes seq from the waiting list. */
static pending *take_waiting(eb_authc *c, uint64_t seq)
{
    for (pending **pp = &c->waiting; *pp; pp = &(*pp)->next) {
        if ((*pp)->seq == seq) {
            pending *pd = *pp;
            *pp = pd->next;
            pd->next = NULL;
            return pd;
        }
    }
    return NULL;
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    pending *pd = arg;
    eb_authc *c = pd->c;
    pending *mine;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&c->mu);
    mine = take_waiting(c, pd->seq);
    pthread_mutex_unlock(&c->mu);
    if (!mine)
        return; /* answered meanwhile; on_wake will finish it */
    mine->st =
        eb_error(EB_ERR_TIMEOUT, "the auth service did not answer within %lld ms", c->timeout_ms);
    snprintf(mine->reason, sizeof(mine->reason), "timeout");
    finish(mine);
}

/* NATS thread. */
static void on_reply(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    eb_authc *c = closure;
    const char *subj = natsMsg_GetSubject(msg);
    const char *dot = strrchr(subj, '.');
    uint64_t seq = dot ? strtoull(dot + 1, NULL, 10) : 0;
    Evalbus__V1__VerifyResponse *resp = evalbus__v1__verify_response__unpack(
        NULL, (size_t)natsMsg_GetDataLength(msg), (const uint8_t *)natsMsg_GetData(msg));
    pending *pd;

    (void)nc;
    (void)sub;
    pthread_mutex_lock(&c->mu);
    pd = take_waiting(c, seq);
    if (pd) {
        pd->answered = true;
        if (natsMsg_IsNoResponders(msg) || natsMsg_GetDataLength(msg) == 0) {
            /* no auth replica is subscribed: the server answers for it */
            pd->st = EB_ERR_UNAVAILABLE;
            snprintf(pd->reason, sizeof(pd->reason), "no_auth_service");
        } else if (!resp) {
            pd->st = EB_ERR_UNAVAILABLE;
            snprintf(pd->reason, sizeof(pd->reason), "bad_reply");
        } else if (resp->allowed && resp->principal) {
            pd->st = EB_OK;
            eb_principal_from_pb(resp->principal, &pd->p);
        } else {
            pd->st = strcmp(resp->reason ? resp->reason : "", "unavailable") == 0
                         ? EB_ERR_UNAVAILABLE
                         : EB_ERR_UNAUTHENTICATED;
            snprintf(pd->reason, sizeof(pd->reason), "%s",
                     resp->reason && *resp->reason ? resp->reason : "denied");
        }
        pd->next = c->ready;
        c->ready = pd;
    }
    pthread_mutex_unlock(&c->mu);
    if (pd)
        event_active(c->wake, EV_READ, 0);
    if (resp)
        evalbus__v1__verify_response__free_unpacked(resp, NULL);
    natsMsg_Destroy(msg);
}

/* NATS thread. */
static void on_revoked(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    eb_authc *c = closure;
    Evalbus__V1__KeyRevoked *kr = evalbus__v1__key_revoked__unpack(
        NULL, (size_t)natsMsg_GetDataLength(msg), (const uint8_t *)natsMsg_GetData(msg));

    (void)nc;
    (void)sub;
    if (kr) {
        pthread_mutex_lock(&c->mu);
        c->drops++;
        if (kr->key_hash_hex && strlen(kr->key_hash_hex) == 64) {
            centry *e = cache_find(c, kr->key_hash_hex, false);
            if (e) {
                e->expires_ms = 0;
                e->revoked = true;
            }
        } else if (kr->envelope && kr->envelope->team_id && *kr->envelope->team_id) {
            for (size_t i = 0; i < CACHE_SLOTS; i++)
                if (c->cache[i].used && strcmp(c->cache[i].p.team_id, kr->envelope->team_id) == 0) {
                    c->cache[i].expires_ms = 0;
                    c->cache[i].revoked = true;
                }
        }
        pthread_mutex_unlock(&c->mu);
        evalbus__v1__key_revoked__free_unpacked(kr, NULL);
    }
    natsMsg_Destroy(msg);
}

eb_status eb_authc_new(struct event_base *base, eb_bus *bus, const char *service,
                       long long cache_ttl_ms, long long timeout_ms, eb_authc **out)
{
    eb_authc *c = eb_calloc(1, sizeof(*c));
    char nuid[64], wildcard[160];
    eb_status st = EB_OK;

    *out = NULL;
    c->base = base;
    c->bus = bus;
    c->service = eb_strdup(service);
    c->ttl_ms = cache_ttl_ms;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    c->cache = eb_calloc(CACHE_SLOTS, sizeof(centry));
    c->next_seq = 1;
    pthread_mutex_init(&c->mu, NULL);
    c->wake = event_new(base, -1, 0, on_wake, c);
    eb_uuid_v4(nuid);
    snprintf(c->inbox, sizeof(c->inbox), EB_BUS_INBOX_PREFIX ".authc.%s", nuid);
    snprintf(wildcard, sizeof(wildcard), "%s.*", c->inbox);
    st = eb_sub_open(bus, wildcard, NULL, on_reply, c, &c->reply_sub);
    if (st == EB_OK)
        st = eb_sub_open(bus, "evalbus.v1.auth.revoked", NULL, on_revoked, c, &c->revoked_sub);
    if (st != EB_OK) {
        eb_authc_free(c);
        return st;
    }
    eb_metrics_describe("evalbus_authc_requests_total", "counter",
                        "Credential checks by the auth client, by source (cache or nats)");
    *out = c;
    return EB_OK;
}

void eb_authc_stop(eb_authc *c)
{
    pending *list;

    if (!c || c->stopped)
        return;
    c->stopped = true;
    /* once closed, no NATS thread touches c (a handler still running is waited for; should
     * one outlive the wait, it finds the lists empty, and eb_authc_free leaves c alone) */
    c->handlers_on = !eb_sub_close(c->reply_sub, 1000);
    c->handlers_on |= !eb_sub_close(c->revoked_sub, 1000);
    c->reply_sub = c->revoked_sub = NULL;
    on_wake(-1, 0, c); /* answered: their callbacks */
    pthread_mutex_lock(&c->mu);
    list = c->waiting;
    c->waiting = NULL;
    pthread_mutex_unlock(&c->mu);
    while (list) {
        pending *next = list->next;
        list->next = NULL;
        finish_shutting_down(list);
        list = next;
    }
    on_wake(-1, 0, c); /* one answered while the lists were taken */
}

void eb_authc_free(eb_authc *c)
{
    if (!c)
        return;
    eb_authc_stop(c);
    if (c->handlers_on)
        return; /* a NATS handler may still use c: left to the process's exit */
    if (c->wake)
        event_free(c->wake);
    pthread_mutex_destroy(&c->mu);
    free(c->cache);
    free(c->service);
    free(c);
}

void eb_authc_stats(eb_authc *c, unsigned long long *hits, unsigned long long *misses)
{
    pthread_mutex_lock(&c->mu);
    *hits = c->hits;
    *misses = c->misses;
    pthread_mutex_unlock(&c->mu);
}

void eb_authc_verify(void *impl, const char *credential, const char *request_id, eb_auth_done done,
                     void *arg)
{
    eb_authc *c = impl;
    Evalbus__V1__VerifyRequest vr = EVALBUS__V1__VERIFY_REQUEST__INIT;
    size_t len = credential ? strnlen(credential, MAX_CREDENTIAL + 1) : 0;
    char hash[65], subject[200];
    uint8_t *buf;
    size_t blen;
    pending *pd;
    natsStatus s;
    struct timeval tv;

    if (len == 0 || len > MAX_CREDENTIAL) {
        eb_error(EB_ERR_UNAUTHENTICATED, "credential is empty or too long");
        done(EB_ERR_UNAUTHENTICATED, NULL, "malformed", arg);
        return;
    }
    eb_sha256_hex(credential, len, hash);
    if (c->ttl_ms > 0) {
        eb_principal p;
        bool hit = false;
        centry *e;
        pthread_mutex_lock(&c->mu);
        e = cache_find(c, hash, false);
        if (e && e->expires_ms > eb_monotonic_ms()) {
            p = e->p;
            hit = true;
            c->hits++;
        }
        pthread_mutex_unlock(&c->mu);
        if (hit) {
            eb_metrics_add("evalbus_authc_requests_total", "source=\"cache\"", 1);
            done(EB_OK, &p, "", arg);
            return;
        }
    }
    pd = eb_calloc(1, sizeof(*pd));
    pd->c = c;
    memcpy(pd->hash, hash, 65);
    pd->done = done;
    pd->arg = arg;
    if (c->stopped) { /* nothing could receive the answer: a stale entry or unavailable */
        finish_shutting_down(pd);
        return;
    }
    pthread_mutex_lock(&c->mu);
    pd->seq = c->next_seq++;
    pd->drops = c->drops;
    c->misses++;
    pd->next = c->waiting;
    c->waiting = pd;
    pthread_mutex_unlock(&c->mu);
    pd->timer = evtimer_new(c->base, on_timeout, pd);
    tv.tv_sec = c->timeout_ms / 1000;
    tv.tv_usec = (c->timeout_ms % 1000) * 1000;
    evtimer_add(pd->timer, &tv);

    vr.credential = (char *)credential;
    vr.request_id = (char *)(request_id ? request_id : "");
    vr.source = c->service;
    blen = evalbus__v1__verify_request__get_packed_size(&vr);
    buf = eb_malloc(blen);
    evalbus__v1__verify_request__pack(&vr, buf);
    snprintf(subject, sizeof(subject), "%s.%llu", c->inbox, (unsigned long long)pd->seq);
    eb_metrics_add("evalbus_authc_requests_total", "source=\"nats\"", 1);
    s = natsConnection_PublishRequest(eb_bus_conn(c->bus), "evalbus.v1.auth.verify", subject, buf,
                                      (int)blen);
    free(buf);
    if (s != NATS_OK) {
        pending *mine;
        pthread_mutex_lock(&c->mu);
        mine = take_waiting(c, pd->seq);
        pthread_mutex_unlock(&c->mu);
        if (mine) {
            mine->st = eb_bus_error(s, "sending auth.verify");
            snprintf(mine->reason, sizeof(mine->reason), "unavailable");
            finish(mine);
        }
    }
}

void eb_audit_send(eb_bus *bus, const eb_principal *p, const char *request_id, const char *source,
                   const char *action, const char *target, const cJSON *detail)
{
    Evalbus__V1__AuditEvent ev = EVALBUS__V1__AUDIT_EVENT__INIT;
    char *dj = detail ? eb_json_print(detail) : NULL;
    uint8_t *buf;
    size_t len;

    ev.team_id = (char *)p->team_id;
    ev.actor_user_id = (char *)p->user_id;
    ev.actor_key_id = (char *)p->key_id;
    ev.action = (char *)action;
    ev.target = (char *)(target ? target : "");
    ev.detail_json = dj ? dj : (char *)"{}";
    ev.request_id = (char *)(request_id ? request_id : "");
    ev.source = (char *)source;
    len = evalbus__v1__audit_event__get_packed_size(&ev);
    buf = eb_malloc(len ? len : 1);
    evalbus__v1__audit_event__pack(&ev, buf);
    if (natsConnection_Publish(eb_bus_conn(bus), "evalbus.v1.auth.audit", buf, (int)len) != NATS_OK)
        eb_log_error(request_id, "audit event %s not sent", action);
    free(buf);
    free(dj);
}
