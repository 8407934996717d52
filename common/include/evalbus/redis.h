/* redis.h -- a hiredis asynchronous connection on the service's libevent loop.
 * Redis holds only what can be lost (rate-limit buckets, caches), so the connection is
 * optional: when Redis is down commands fail at once (the callback gets reply NULL) and the
 * connection is retried every second in the background. Loop thread only. */
#ifndef EVALBUS_REDIS_H
#define EVALBUS_REDIS_H

#include "evalbus/status.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct eb_redis eb_redis;

/* reply is NULL when the command could not be run (Redis down or disconnected meanwhile).
 * reply is owned by hiredis and valid only during the call. */
typedef void (*eb_redis_cb)(redisReply *reply, void *arg);

/* Parses url (redis://[:password@]host:port[/db]) and starts connecting. EB_ERR_INVALID for a
 * malformed URL. Free with eb_redis_free(). */
eb_status eb_redis_new(struct event_base *base, const char *url, eb_redis **out);
void eb_redis_free(eb_redis *r);

bool eb_redis_connected(const eb_redis *r);

/* Sends a command; cb is always called exactly once, on the loop thread. */
void eb_redis_command(eb_redis *r, int argc, const char **argv, const size_t *argvlen,
                      eb_redis_cb cb, void *arg);

#endif
