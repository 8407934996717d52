/* ratelimit.c -- token buckets in Redis (one Lua script) with a local fallback.
 * A check sends EVAL with the bucket names as KEYS and arms a timer; whichever comes first,
 * the reply or the timer, decides (the timer and a failed reply decide locally), and the
 * other is ignored. The request context is freed when both have happened.
 * The local table is a fixed-size open-addressing hash of bucket name -> (tokens, last_ms);
 * when it fills up it is cleared, which errs on the side of letting requests through. */
#include "evalbus/clock.h"
#include "evalbus/ratelimit.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOCAL_SLOTS 8192
#define MAX_BUCKETS 4

/* KEYS: buckets; ARGV[1] rate per second, ARGV[2] burst. Returns {allowed, retry_after_ms}.
 * Time comes from the Redis server so that replicas with skewed clocks agree. */
static const char bucket_script[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local rate = tonumber(ARGV[1])\n"
    "local burst = tonumber(ARGV[2])\n"
    "local ttl = math.ceil(burst / rate * 1000) + 1000\n"
    "local tokens = {}\n"
    "local wait = 0\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local v = redis.call('HMGET', k, 't', 'ts')\n"
    "  local tok = tonumber(v[1])\n"
    "  local ts = tonumber(v[2])\n"
    "  if tok == nil or ts == nil then tok = burst; ts = now end\n"
    "  tok = math.min(burst, tok + math.max(0, now - ts) * rate / 1000)\n"
    "  tokens[i] = tok\n"
    "  if tok < 1 then\n"
    "    local w = math.ceil((1 - tok) * 1000 / rate)\n"
    "    if w > wait then wait = w end\n"
    "  end\n"
    "end\n"
    "local allowed = 0\n"
    "if wait == 0 then allowed = 1 end\n"
    "for i, k in ipairs(KEYS) do\n"
    "  local tok = tokens[i]\n"
    "  if allowed == 1 then tok = tok - 1 end\n"
    "  redis.call('HSET', k, 't', tostring(tok), 'ts', tostring(now))\n"
    "  redis.call('PEXPIRE', k, ttl)\n"
    "end\n"
    "return {allowed, wait}\n";

typedef struct local_bucket {
    char *name;
    double tokens;
    long long last_ms;
} local_bucket;

struct eb_ratelimit {
    struct event_base *base;
    eb_redis *redis;
    long long timeout_ms;
    bool degraded;
    local_bucket *slots;
    size_t used;
    struct check_ctx *inflight; /* checks sent to Redis and not yet answered by it */
};

typedef struct check_ctx {
    eb_ratelimit *rl; /* NULL once the limiter is freed: the reply then only frees the check */
    struct check_ctx *prev, *next;
    char *buckets[MAX_BUCKETS];
    int n;
    double rate, burst;
    eb_ratelimit_cb cb;
    void *arg;
    struct event *timer;
    bool decided;
} check_ctx;

long long eb_bucket_refill(double *tokens, long long *last_ms, double rate, double burst,
                           long long now_ms)
{
    if (*last_ms < 0) {
        *tokens = burst;
    } else if (now_ms > *last_ms) {
        *tokens += (double)(now_ms - *last_ms) * rate / 1000.0;
        if (*tokens > burst)
            *tokens = burst;
    }
    *last_ms = now_ms;
    if (*tokens >= 1.0)
        return 0;
    return (long long)ceil((1.0 - *tokens) * 1000.0 / rate);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void local_clear(eb_ratelimit *rl)
{
    for (size_t i = 0; i < LOCAL_SLOTS; i++) {
        free(rl->slots[i].name);
        rl->slots[i].name = NULL;
    }
    rl->used = 0;
}

static local_bucket *local_find(eb_ratelimit *rl, const char *name)
{
    size_t i;

    if (rl->used >= LOCAL_SLOTS / 2)
        local_clear(rl);
    i = hash_str(name) & (LOCAL_SLOTS - 1);
    while (rl->slots[i].name && strcmp(rl->slots[i].name, name) != 0)
        i = (i + 1) & (LOCAL_SLOTS - 1);
    if (!rl->slots[i].name) {
        rl->slots[i].name = eb_strdup(name);
        rl->slots[i].last_ms = -1;
        rl->slots[i].tokens = 0;
        rl->used++;
    }
    return &rl->slots[i];
}

static void decide_local(check_ctx *c)
{
    local_bucket *b[MAX_BUCKETS];
    long long wait = 0, t = eb_monotonic_ms();

    for (int i = 0; i < c->n; i++) {
        long long w;
        b[i] = local_find(c->rl, c->buckets[i]);
        w = eb_bucket_refill(&b[i]->tokens, &b[i]->last_ms, c->rate, c->burst, t);
        if (w > wait)
            wait = w;
    }
    if (wait == 0)
        for (int i = 0; i < c->n; i++)
            b[i]->tokens -= 1.0;
    c->decided = true;
    c->cb(wait == 0, wait, c->arg);
}

static void set_degraded(eb_ratelimit *rl, bool degraded)
{
    if (degraded && !rl->degraded)
        eb_log_warn(NULL, "Redis unavailable: applying local rate limits per replica");
    else if (!degraded && rl->degraded)
        eb_log_info(NULL, "Redis available again: rate limits are shared again");
    rl->degraded = degraded;
}

static void inflight_remove(check_ctx *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->rl->inflight = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void check_free(check_ctx *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->buckets[i]);
    if (c->timer)
        event_free(c->timer);
    free(c);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    check_ctx *c = arg;

    (void)fd;
    (void)what;
    if (!c->decided) {
        set_degraded(c->rl, true);
        decide_local(c);
    }
}

static void on_script_reply(redisReply *reply, void *arg)
{
    check_ctx *c = arg;

    if (!c->rl) { /* the limiter, and the caller with it, are gone: answer nobody */
        check_free(c);
        return;
    }
    inflight_remove(c);
    if (!c->decided) {
        if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
            reply->element[0]->type == REDIS_REPLY_INTEGER &&
            reply->element[1]->type == REDIS_REPLY_INTEGER) {
            bool allowed = reply->element[0]->integer == 1;
            long long wait = reply->element[1]->integer;
            set_degraded(c->rl, false);
            c->decided = true;
            c->cb(allowed, allowed ? 0 : (wait > 0 ? wait : 1), c->arg);
        } else {
            if (reply && reply->type == REDIS_REPLY_ERROR)
                eb_log_error(NULL, "rate-limit script failed: %s", reply->str);
            set_degraded(c->rl, true);
            decide_local(c);
        }
    }
    /* hiredis answers every command exactly once, so the reply side frees c; a timer that
     * already fired left it to us. */
    if (c->timer)
        evtimer_del(c->timer);
    check_free(c);
}

eb_ratelimit *eb_ratelimit_new(struct event_base *base, eb_redis *redis, long long timeout_ms)
{
    eb_ratelimit *rl = eb_calloc(1, sizeof(*rl));

    rl->base = base;
    rl->redis = redis;
    rl->timeout_ms = timeout_ms > 0 ? timeout_ms : 250;
    rl->slots = eb_calloc(LOCAL_SLOTS, sizeof(local_bucket));
    rl->degraded = redis == NULL;
    return rl;
}

/* Checks still waiting on Redis outlive the limiter: hiredis answers them (NULL) when the
 * connection is freed, after the limiter and the requests they were for. Their timers are
 * freed now, with the event base still there, and their replies then only free them. */
void eb_ratelimit_free(eb_ratelimit *rl)
{
    if (!rl)
        return;
    for (check_ctx *c = rl->inflight, *next; c; c = next) {
        next = c->next;
        c->rl = NULL;
        c->prev = c->next = NULL;
        if (c->timer) {
            event_free(c->timer);
            c->timer = NULL;
        }
    }
    local_clear(rl);
    free(rl->slots);
    free(rl);
}

bool eb_ratelimit_degraded(const eb_ratelimit *rl)
{
    return rl->degraded || !eb_redis_connected(rl->redis);
}

void eb_ratelimit_check(eb_ratelimit *rl, const char *const *buckets, int nbuckets, double rate,
                        double burst, eb_ratelimit_cb cb, void *arg)
{
    check_ctx *c = eb_calloc(1, sizeof(*c));
    const char *argv[3 + MAX_BUCKETS + 2];
    char nkeys[16], srate[32], sburst[32];
    struct timeval tv;
    int argc = 0;

    if (nbuckets > MAX_BUCKETS)
        nbuckets = MAX_BUCKETS;
    c->rl = rl;
    c->n = nbuckets;
    c->rate = rate > 0 ? rate : 1e-9;
    c->burst = burst >= 1 ? burst : 1;
    c->cb = cb;
    c->arg = arg;
    for (int i = 0; i < nbuckets; i++)
        c->buckets[i] = eb_asprintf("evalbus:rl:%s", buckets[i]);

    if (!eb_redis_connected(rl->redis)) {
        set_degraded(rl, true);
        decide_local(c);
        check_free(c);
        return;
    }
    snprintf(nkeys, sizeof(nkeys), "%d", nbuckets);
    snprintf(srate, sizeof(srate), "%.6f", c->rate);
    snprintf(sburst, sizeof(sburst), "%.6f", c->burst);
    argv[argc++] = "EVAL";
    argv[argc++] = bucket_script;
    argv[argc++] = nkeys;
    for (int i = 0; i < nbuckets; i++)
        argv[argc++] = c->buckets[i];
    argv[argc++] = srate;
    argv[argc++] = sburst;
    c->timer = evtimer_new(rl->base, on_timeout, c);
    c->next = rl->inflight;
    if (c->next)
        c->next->prev = c;
    rl->inflight = c;
    tv.tv_sec = rl->timeout_ms / 1000;
    tv.tv_usec = (rl->timeout_ms % 1000) * 1000;
    evtimer_add(c->timer, &tv);
    eb_redis_command(rl->redis, argc, argv, NULL, on_script_reply, c);
}
