/* ratelimit.h -- token buckets, in Redis when it is up, in process memory when it is not.
 * A check names one or more buckets (e.g. "key:<id>" and "team:<id>"); the request passes only
 * if every bucket holds a token, and then takes one from each, atomically (one Lua script in
 * Redis). A bucket refills at rate tokens per second up to burst. When Redis is down or slow
 * (no answer within the timeout), the same math runs on a local table per replica: the limit
 * still applies, but per replica instead of cluster-wide. Loop thread only. */
#ifndef EVALBUS_RATELIMIT_H
#define EVALBUS_RATELIMIT_H

#include "evalbus/redis.h"

#include <stdbool.h>

typedef struct eb_ratelimit eb_ratelimit;

/* allowed false: retry_after_ms says when a token will be there (>= 1). */
typedef void (*eb_ratelimit_cb)(bool allowed, long long retry_after_ms, void *arg);

/* redis may be NULL (local limits only). timeout_ms bounds the wait for Redis. */
eb_ratelimit *eb_ratelimit_new(struct event_base *base, eb_redis *redis, long long timeout_ms);
void eb_ratelimit_free(eb_ratelimit *rl);

/* Checks and takes a token from each of the nbuckets buckets (at most 4). cb runs exactly once,
 * possibly before this function returns. */
void eb_ratelimit_check(eb_ratelimit *rl, const char *const *buckets, int nbuckets, double rate,
                        double burst, eb_ratelimit_cb cb, void *arg);

/* True while decisions are local because Redis is unavailable. */
bool eb_ratelimit_degraded(const eb_ratelimit *rl);

/* The bucket math, shared by the local table and the unit tests (the Lua script mirrors it):
 * refills *tokens (a full bucket when *last_ms < 0) for the time since *last_ms, sets
 * *last_ms = now_ms, and returns the milliseconds until one token is available (0 if one is). */
long long eb_bucket_refill(double *tokens, long long *last_ms, double rate, double burst,
                           long long now_ms);

#endif
