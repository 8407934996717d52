/* authc.h -- the auth client every service uses to learn who a caller is.
 * It asks the auth service over NATS (evalbus.v1.auth.verify, protobuf) and caches allowed
 * answers for a short time, keyed by the SHA-256 of the credential (the credential itself is
 * never stored). It listens on evalbus.v1.auth.revoked and drops a revoked key, or every entry
 * of a team whose roles or tier changed, at once. Denials are not cached.
 * eb_authc_verify() has the eb_authenticate_fn shape, so it plugs into the HTTP server with
 * eb_http_set_authenticator(srv, eb_authc_verify, client).
 * Threading: create, verify and free on the loop thread; the NATS callbacks hand their results
 * back to the loop. */
#ifndef EVALBUS_AUTHC_H
#define EVALBUS_AUTHC_H

#include "evalbus/bus.h"
#include "evalbus/config.h"
#include "evalbus/principal.h"

#include <cjson/cJSON.h>
#include <event2/event.h>

typedef struct eb_authc eb_authc;

/* service: the caller's name, sent in VerifyRequest.source. cache_ttl_ms 0 disables the
 * cache; timeout_ms bounds each request (then done gets EB_ERR_TIMEOUT). */
eb_status eb_authc_new(struct event_base *base, eb_bus *bus, const char *service,
                       long long cache_ttl_ms, long long timeout_ms, eb_authc **out);
/* For shutdown, on the loop thread once the loop has ended, while what the callbacks hand work
 * to still runs: answers that have arrived are delivered, requests still waiting for the auth
 * service are answered EB_ERR_UNAVAILABLE with reason "shutting_down", and so is every later
 * eb_authc_verify that the cache does not answer. Accepts NULL; a second call does nothing. */
void eb_authc_stop(eb_authc *c);
/* Stops it first (eb_authc_stop) if not yet stopped. Should a NATS handler outlive the stop's
 * wait (1 s), c is left allocated: the handler may still use it. */
void eb_authc_free(eb_authc *c);

/* impl is the eb_authc. done runs exactly once on the loop thread (at once on a cache hit). */
void eb_authc_verify(void *impl, const char *credential, const char *request_id, eb_auth_done done,
                     void *arg);

/* Counters for tests and /metrics: answers from the cache, and requests sent over NATS. */
void eb_authc_stats(eb_authc *c, unsigned long long *hits, unsigned long long *misses);

/* The settings rows of a service that verifies credentials through eb_authc: members ttl and
 * timeout (long long, milliseconds) of struct T, for eb_authc_new's cache_ttl_ms and
 * timeout_ms. */
#define EB_AUTHC_SETTINGS(T, ttl, timeout)                                                         \
    {"auth-cache-ttl",                                                                             \
     "EVALBUS_AUTH_CACHE_TTL",                                                                     \
     EB_SET_DURATION,                                                                              \
     "10s",                                                                                        \
     0,                                                                                            \
     3600000,                                                                                      \
     false,                                                                                        \
     offsetof(T, ttl),                                                                             \
     "how long a verified credential is cached here"},                                             \
    {                                                                                              \
        "auth-timeout", "EVALBUS_AUTH_TIMEOUT", EB_SET_DURATION, "2s", 10, 60000, false,           \
            offsetof(T, timeout), "wait for the auth service"                                      \
    }

/* Sends an audit event (who: p; what: action on target, with detail, a JSON object or NULL) to
 * the auth service's audit intake (evalbus.v1.auth.audit). Fire and forget: a failure to send is
 * logged with request_id. source names the reporting service. Any thread. */
void eb_audit_send(eb_bus *bus, const eb_principal *p, const char *request_id, const char *source,
                   const char *action, const char *target, const cJSON *detail);

#endif
