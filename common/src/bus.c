/* bus.c -- NATS connection setup on a libevent loop, readiness, JetStream stream/consumer
 * bootstrap. Reconnection is left to the client library (unlimited attempts, 500 ms apart);
 * state changes are logged.
 * A connection on a loop is driven by the loop: the library's event-loop callbacks (attach,
 * read, write, detach) are ours, so that after the library has read and parsed what came in, a
 * read hook may take the messages it queued for a synchronous subscription on the loop thread
 * itself (eb_bus_set_read_hook), without a delivery thread and the wake-ups it costs. */
#include "evalbus/bus.h"
#include "evalbus/clock.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

struct eb_bus {
    natsConnection *nc;
    jsCtx *js;
    char *name;
    struct event_base *base;
    void (*read_hook)(void *arg); /* loop thread */
    void *read_hook_arg;
};

static pthread_once_t adapter_once = PTHREAD_ONCE_INIT;

static void adapter_init(void)
{
    evthread_use_pthreads(); /* the library attaches from its reconnect thread */
}

/* --- the library's own threads --- */

/* The NATS library starts three threads of its own when first used (timers, connection
 * callbacks, and a collector that frees every message given to natsMsg_Destroy), and they
 * inherit the nice value of the thread that used it first. The collector is woken whenever a
 * message is destroyed while it sleeps: at nice 0, on a busy machine, it ran at once for each
 * of the two or so messages of every record (a publish and its acknowledgement), preempting the
 * loop thread each time (measured on ingest with 2 cores: 1.0-1.8 context switches a trace).
 * Opened from a short-lived thread at LIB_NICE, the library's threads still get the CPU they
 * need (a small share: what they do is small) but wait for a busy thread's turn, and a woken
 * collector frees many messages at once (0.33-0.44 switches a trace, 10 % less CPU a trace).
 * Per-connection threads (reader, flusher) are started by the connecting thread and keep its
 * value. Raising a nice value needs no privilege; setpriority failing only loses the gain. */
#define LIB_NICE 10

static void *lib_open_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "nats-lib"); /* the library's threads inherit it */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), LIB_NICE);
    /* should it fail, the first natsOptions_Create opens the library and reports why */
    (void)nats_Open(-1);
    return NULL;
}

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void lib_open(void)
{
    pthread_t t;

    if (pthread_create(&t, NULL, lib_open_main, NULL) == 0)
        pthread_join(t, NULL);
}

/* --- the connection's socket on the loop --- */

typedef struct bus_io {
    eb_bus *bus;
    natsConnection *nc;
    struct event *read, *write;
    struct event *keep; /* a timer far off: the loop does not end while the socket is away */
} bus_io;

static void io_ready(evutil_socket_t fd, short what, void *arg)
{
    bus_io *io = arg;
    eb_bus *bus = io->bus; /* io may be gone once the library has handled the event */

    (void)fd;
    if (what & EV_READ) {
        natsConnection_ProcessReadEvent(io->nc);
        if (bus->read_hook)
            bus->read_hook(bus->read_hook_arg);
    }
    if (what & EV_WRITE)
        natsConnection_ProcessWriteEvent(io->nc);
}

static void keep_fired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static natsStatus io_interest(struct event *ev, bool add)
{
    if (!ev) /* a re-attach that failed */
        return NATS_ERR;
    return (add ? event_add(ev, NULL) : event_del_noblock(ev)) == 0 ? NATS_OK : NATS_ERR;
}

static natsStatus io_read(void *user, bool add)
{
    return io_interest(((bus_io *)user)->read, add);
}

static natsStatus io_write(void *user, bool add)
{
    return io_interest(((bus_io *)user)->write, add);
}

static natsStatus io_detach(void *user)
{
    bus_io *io = user;

    if (io->read)
        event_free(io->read);
    if (io->write)
        event_free(io->write);
    if (io->keep) {
        event_active(io->keep, 0, 0); /* wakes the loop, should this be another thread */
        event_free(io->keep);
    }
    free(io);
    return NATS_OK;
}

/* Called on connecting and on every reconnect (then with the previous state in *user). */
static natsStatus io_attach(void **user, void *loop, natsConnection *nc, natsSock sock)
{
    eb_bus *bus = loop;
    bus_io *io = *user;
    struct timeval far = {100000, 0};

    if (!io) {
        io = calloc(1, sizeof(*io));
        if (!io)
            return NATS_NO_MEMORY;
        io->bus = bus;
        io->nc = nc;
        io->keep = event_new(bus->base, -1, EV_PERSIST, keep_fired, NULL);
        if (!io->keep || event_add(io->keep, &far) != 0) {
            io_detach(io);
            return NATS_ERR;
        }
    } else {
        if (io->read)
            event_free(io->read);
        if (io->write)
            event_free(io->write);
        io->read = io->write = NULL;
    }
    io->read = event_new(bus->base, sock, EV_READ | EV_PERSIST, io_ready, io);
    io->write = event_new(bus->base, sock, EV_WRITE | EV_PERSIST, io_ready, io);
    if (!io->read || !io->write || io_read(io, true) != NATS_OK) {
        if (!*user)
            io_detach(io);
        return NATS_ERR;
    }
    *user = io;
    return NATS_OK;
}

void eb_bus_set_read_hook(eb_bus *bus, void (*hook)(void *arg), void *arg)
{
    bus->read_hook_arg = arg;
    bus->read_hook = hook;
}

eb_status eb_bus_error(natsStatus s, const char *what)
{
    eb_status code = EB_ERR_UNAVAILABLE;

    if (s == NATS_TIMEOUT)
        code = EB_ERR_TIMEOUT;
    else if (s == NATS_NOT_FOUND)
        code = EB_ERR_NOT_FOUND;
    else if (s == NATS_INVALID_ARG || s == NATS_INVALID_SUBJECT)
        code = EB_ERR_INVALID;
    return eb_error(code, "%s: %s (%s)", what, natsStatus_GetText(s), nats_GetLastError(NULL));
}

/* Connection callbacks run on the client's own thread, possibly after eb_bus_close() has
 * returned, so they take no closure. */
static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)closure;
    if (natsConnection_IsClosed(nc))
        return; /* closed on purpose */
    eb_log_warn(NULL, "NATS disconnected; reconnecting");
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    char url[256] = "";

    (void)closure;
    natsConnection_GetConnectedUrl(nc, url, sizeof(url));
    eb_log_info(NULL, "NATS connected to %s", url);
}

eb_status eb_bus_connect(struct event_base *base, const char *url, const char *name,
                         long long wait_ms, eb_bus **out)
{
    eb_status st = EB_OK;
    natsOptions *opts = NULL;
    natsStatus s;
    eb_bus *bus = eb_calloc(1, sizeof(*bus));

    *out = NULL;
    bus->name = eb_strdup(name);
    bus->base = base;
    pthread_once(&lib_once, lib_open);
    if (base)
        pthread_once(&adapter_once, adapter_init);
    s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetServers(opts, NULL, 0);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, url);
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, name);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, 500);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, 2000);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(opts, on_disconnected, NULL);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(opts, on_reconnected, NULL);
    if (s == NATS_OK && wait_ms <= 0)
        s = natsOptions_SetRetryOnFailedConnect(opts, true, on_reconnected, NULL);
    if (s == NATS_OK && base)
        s = natsOptions_SetEventLoop(opts, bus, io_attach, io_read, io_write, io_detach);
    /* On a loop, "send as soon as possible" only asks the loop for a write event (at once
     * from the loop thread, through libevent's notification from another): without it the
     * library keeps a flusher thread that, woken by every publish, waits 1 ms and then asks
     * for the same event, a thread hand-off and a millisecond on every answer published. */
    if (s == NATS_OK && base)
        s = natsOptions_SetSendAsap(opts, true);
    /* the library's own inboxes (requests, JetStream pulls) under evalbus's, which no reply
     * subject a publisher outside evalbus chooses may name (eb_bus_reply_allowed_outside) */
    if (s == NATS_OK)
        s = natsOptions_SetCustomInboxPrefix(opts, EB_BUS_INBOX_PREFIX);
    if (s != NATS_OK) {
        st = eb_bus_error(s, "NATS options");
        goto cleanup;
    }
    s = natsConnection_Connect(&bus->nc, opts);
    if (s == NATS_NOT_YET_CONNECTED)
        s = NATS_OK; /* retrying in the background */
    if (s != NATS_OK) {
        st = eb_bus_error(s, "NATS connect");
        goto cleanup;
    }
    s = natsConnection_JetStream(&bus->js, bus->nc, NULL);
    if (s != NATS_OK) {
        st = eb_bus_error(s, "JetStream context");
        goto cleanup;
    }
    *out = bus;
    bus = NULL;
cleanup:
    natsOptions_Destroy(opts);
    eb_bus_close(bus);
    return st;
}

void eb_bus_close(eb_bus *bus)
{
    if (!bus)
        return;
    jsCtx_Destroy(bus->js);
    if (bus->nc) {
        natsConnection_Close(bus->nc);
        natsConnection_Destroy(bus->nc);
    }
    free(bus->name);
    free(bus);
}

natsConnection *eb_bus_conn(eb_bus *bus)
{
    return bus->nc;
}

jsCtx *eb_bus_js(eb_bus *bus)
{
    return bus->js;
}

bool eb_bus_connected(eb_bus *bus)
{
    return bus && bus->nc && natsConnection_Status(bus->nc) == NATS_CONN_STATUS_CONNECTED;
}

eb_status eb_bus_ensure_stream(eb_bus *bus, jsStreamConfig *cfg)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, bus->js, cfg->Name, NULL, &jerr);

    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        si = NULL;
        s = js_UpdateStream(&si, bus->js, cfg, NULL, &jerr);
    } else if (s == NATS_NOT_FOUND) {
        s = js_AddStream(&si, bus->js, cfg, NULL, &jerr);
    }
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK)
        return eb_bus_error(s, cfg->Name);
    return EB_OK;
}

eb_status eb_bus_ensure_consumer(eb_bus *bus, const char *stream, jsConsumerConfig *cfg)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, bus->js, stream, cfg->Durable, NULL, &jerr);

    if (s == NATS_OK) {
        jsConsumerInfo_Destroy(ci);
        ci = NULL;
        s = js_UpdateConsumer(&ci, bus->js, stream, cfg, NULL, &jerr);
    } else if (s == NATS_NOT_FOUND) {
        s = js_AddConsumer(&ci, bus->js, stream, cfg, NULL, &jerr);
    }
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK)
        return eb_bus_error(s, cfg->Durable ? cfg->Durable : stream);
    return EB_OK;
}

eb_status eb_bus_setup(const char *url, const char *name,
                       eb_status (*fn)(eb_bus *bus, const void *arg), const void *arg,
                       long long give_up_ms)
{
    eb_status st = EB_ERR_UNAVAILABLE;

    for (long long waited = 0; waited <= give_up_ms; waited += 500) {
        eb_bus *bus = NULL;
        st = eb_bus_connect(NULL, url, name, 2000, &bus);
        if (st == EB_OK)
            st = fn(bus, arg);
        eb_bus_close(bus);
        if (st == EB_OK)
            return EB_OK;
        if (waited % 5000 == 0)
            eb_log_warn(NULL, "waiting for NATS JetStream: %s", eb_error_message());
        usleep(500000);
    }
    return st;
}

struct eb_sub {
    natsSubscription *sub;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done; /* the handler has returned for the last time */
    int refs;  /* eb_sub_close's and the completion callback's */
};

static void sub_release(eb_sub *s)
{
    bool last;

    pthread_mutex_lock(&s->mu);
    last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last)
        return;
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* A delivery thread, after the handler's last call. */
static void sub_complete(void *closure)
{
    eb_sub *s = closure;

    pthread_mutex_lock(&s->mu);
    s->done = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    sub_release(s);
}

eb_status eb_sub_open(eb_bus *bus, const char *subject, const char *queue, natsMsgHandler handler,
                      void *closure, eb_sub **out)
{
    eb_sub *s = eb_calloc(1, sizeof(*s));
    natsStatus ns;

    *out = NULL;
    pthread_mutex_init(&s->mu, NULL);
    eb_cond_init_monotonic(&s->cond);
    s->refs = 1;
    ns = queue ? natsConnection_QueueSubscribe(&s->sub, bus->nc, subject, queue, handler, closure)
               : natsConnection_Subscribe(&s->sub, bus->nc, subject, handler, closure);
    if (ns == NATS_OK) {
        s->refs = 2;
        ns = natsSubscription_SetOnCompleteCB(s->sub, sub_complete, s);
        if (ns != NATS_OK) {
            s->refs = 1;
            natsSubscription_Unsubscribe(s->sub);
            natsSubscription_Destroy(s->sub);
            s->sub = NULL;
        }
    }
    if (ns != NATS_OK) {
        char what[300];

        snprintf(what, sizeof(what), "subscribing to %s", subject);
        sub_release(s);
        return eb_bus_error(ns, what);
    }
    *out = s;
    return EB_OK;
}

natsSubscription *eb_sub_nats(eb_sub *sub)
{
    return sub->sub;
}

bool eb_sub_close(eb_sub *s, long long wait_ms)
{
    struct timespec until;
    bool done;

    if (!s)
        return true;
    natsSubscription_Unsubscribe(s->sub); /* fails harmlessly when closed already */
    until = eb_monotonic_after_ms(wait_ms);
    pthread_mutex_lock(&s->mu);
    while (!s->done && pthread_cond_timedwait(&s->cond, &s->mu, &until) == 0)
        ;
    done = s->done;
    pthread_mutex_unlock(&s->mu);
    if (!done)
        eb_log_warn(NULL, "a NATS subscription's handler did not finish within %lld ms", wait_ms);
    natsSubscription_Destroy(s->sub);
    sub_release(s);
    return done;
}

/* The publisher chooses a reply subject, and the answer goes out with the service's NATS
 * permissions, so it must be a plain subject outside the server's own ($JS.API..., $SYS...) and
 * the platform's (evalbus....): an empty answer on $JS.API.STREAM.PURGE.INGEST would purge every
 * team's records not yet stored, one on evalbus.v1.traces.stored.<team> would be an event of
 * another team. */
bool eb_bus_reply_allowed(const char *reply)
{
    size_t token = 0;

    if (!reply || reply[0] == '$' || strncmp(reply, "evalbus.", 8) == 0)
        return false;
    for (const char *c = reply;; c++) {
        if (*c == '.' || *c == '\0') {
            if (token == 0)
                return false; /* an empty token */
            if (*c == '\0')
                return true;
            token = 0;
            continue;
        }
        if (*c == '*' || *c == '>' || (unsigned char)*c <= ' ' || *c == 0x7f)
            return false; /* a wildcard, white space or a control character */
        token++;
    }
}

bool eb_bus_reply_allowed_outside(const char *reply)
{
    return eb_bus_reply_allowed(reply) &&
           strncmp(reply, EB_BUS_INBOX_PREFIX ".", sizeof(EB_BUS_INBOX_PREFIX ".") - 1) != 0;
}
