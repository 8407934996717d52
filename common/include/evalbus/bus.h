/* bus.h -- the NATS connection of a service, driven by the service's libevent loop.
 * The connection reconnects forever (and keeps retrying when NATS is down at start-up), so a
 * service starts and keeps running while NATS is away; eb_bus_connected() feeds /readyz.
 * Message callbacks of subscriptions run on the NATS client's delivery threads, not on the
 * loop thread: hand work back to the loop with event_active() where loop state is touched. */
#ifndef EVALBUS_BUS_H
#define EVALBUS_BUS_H

#include "evalbus/status.h"

#include <event2/event.h>
#include <nats/nats.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct eb_bus eb_bus;

/* Connects to url (comma-separated list allowed) with the client name name. base may be NULL
 * (the NATS client then uses its own threads for I/O, as command-line tools do). With
 * wait_ms <= 0 it returns EB_OK even when NATS is not reachable yet and keeps trying in the
 * background (services); with wait_ms > 0 it must connect now (within the client's connect
 * timeout) or fails with EB_ERR_UNAVAILABLE (tools). Free with eb_bus_close(). */
eb_status eb_bus_connect(struct event_base *base, const char *url, const char *name,
                         long long wait_ms, eb_bus **out);
void eb_bus_close(eb_bus *bus);

natsConnection *eb_bus_conn(eb_bus *bus);
/* The JetStream context of the connection (owned by bus). */
jsCtx *eb_bus_js(eb_bus *bus);
/* On a connection driven by an event loop: hook(arg) runs on the loop thread after each read
 * the library has handled, so that messages it queued for a synchronous subscription can be
 * taken there (natsSubscription_NextMsg with timeout 0), without a delivery thread. NULL
 * removes it. Loop thread. */
void eb_bus_set_read_hook(eb_bus *bus, void (*hook)(void *arg), void *arg);
bool eb_bus_connected(eb_bus *bus);

/* Creates stream cfg->Name, or updates it to cfg if it exists. */
eb_status eb_bus_ensure_stream(eb_bus *bus, jsStreamConfig *cfg);
/* Creates durable consumer cfg->Durable on stream, or updates it. */
eb_status eb_bus_ensure_consumer(eb_bus *bus, const char *stream, jsConsumerConfig *cfg);

/* Start-up set-up (streams, consumers) on a connection of its own, without an event loop (the
 * service's loop is not running yet): connects, runs fn(bus, arg), and retries both every half
 * second until fn succeeds or give_up_ms have passed (logging while it waits). Returns fn's last
 * status. */
eb_status eb_bus_setup(const char *url, const char *name,
                       eb_status (*fn)(eb_bus *bus, const void *arg), const void *arg,
                       long long give_up_ms);

/* An asynchronous subscription whose end can be waited for: once eb_sub_close() has returned
 * true, its handler is not running and will not run again, so what the handler uses may be
 * freed. (natsSubscription_Unsubscribe alone does not promise that: the handler may be running
 * on a delivery thread, or run once more.) */
typedef struct eb_sub eb_sub;
/* Subscribes handler to subject, in queue group queue unless it is NULL. */
eb_status eb_sub_open(eb_bus *bus, const char *subject, const char *queue, natsMsgHandler handler,
                      void *closure, eb_sub **out);
natsSubscription *eb_sub_nats(eb_sub *sub);
/* Unsubscribes (unless the subscription has closed already, as after a drain), waits up to
 * wait_ms for the handler's last return, and frees sub. False when the wait ran out: the
 * handler may still run. Accepts NULL (true). Not from the handler itself. */
bool eb_sub_close(eb_sub *sub, long long wait_ms);

/* Maps a NATS status to an eb_status with a recorded message naming what failed. */
eb_status eb_bus_error(natsStatus s, const char *what);
/* The prefix of every inbox an evalbus process subscribes to (the NATS library's request and
 * JetStream inboxes, the auth client's, the ingest publisher's acknowledgements): a reply
 * subject under it from outside evalbus is refused (eb_bus_reply_allowed_outside), so such a
 * publisher cannot make a service answer into another request's inbox. */
#define EB_BUS_INBOX_PREFIX "_INBOX.evalbus"
/* Whether a service may answer on reply, a subject its publisher chose: not empty, no wildcard,
 * white space or empty token, and none of the NATS server's ($...) or evalbus's (evalbus....). */
bool eb_bus_reply_allowed(const char *reply);
/* The same for a publisher outside evalbus (the ingest NATS intake's): none of evalbus's own
 * inboxes either (EB_BUS_INBOX_PREFIX). */
bool eb_bus_reply_allowed_outside(const char *reply);

#endif
