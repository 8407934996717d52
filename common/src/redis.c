/* redis.c -- hiredis async connection with reconnect on a libevent loop.
 * hiredis frees its context after the disconnect callback; r->ac is cleared there and a timer
 * reconnects one second later. Every command gets exactly one callback: hiredis calls pending
 * callbacks with a NULL reply when the connection drops, and commands issued while
 * disconnected are answered NULL at once. */
#include "evalbus/redis.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <stdlib.h>
#include <string.h>

struct eb_redis {
    struct event_base *base;
    char *host;
    int port;
    char *password;
    int db;
    redisAsyncContext *ac;
    bool connected;
    bool was_connected;
    bool closing;
    struct event *retry;
};

typedef struct cmd_ctx {
    eb_redis_cb cb;
    void *arg;
} cmd_ctx;

static void start_connect(eb_redis *r);

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_connect(arg);
}

static void schedule_retry(eb_redis *r)
{
    struct timeval tv = {1, 0};

    if (!r->closing)
        evtimer_add(r->retry, &tv);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    eb_redis *r = ac->data;

    if (status != REDIS_OK) {
        if (r->was_connected)
            eb_log_warn(NULL, "Redis connect failed: %s", ac->errstr);
        r->was_connected = false;
        r->ac = NULL; /* hiredis frees the context after this callback */
        r->connected = false;
        schedule_retry(r);
        return;
    }
    r->connected = true;
    r->was_connected = true;
    eb_log_info(NULL, "Redis connected to %s:%d", r->host, r->port);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    eb_redis *r = ac->data;

    if (status != REDIS_OK)
        eb_log_warn(NULL, "Redis connection lost: %s", ac->errstr);
    r->ac = NULL;
    r->connected = false;
    schedule_retry(r);
}

static void start_connect(eb_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);

    if (!ac || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(r);
        return;
    }
    ac->data = r;
    redisLibeventAttach(ac, r->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    if (r->password && *r->password) {
        const char *argv[2] = {"AUTH", r->password};
        redisAsyncCommandArgv(ac, NULL, NULL, 2, argv, NULL);
    }
    if (r->db > 0) {
        char dbs[16];
        const char *argv[2] = {"SELECT", dbs};
        snprintf(dbs, sizeof(dbs), "%d", r->db);
        redisAsyncCommandArgv(ac, NULL, NULL, 2, argv, NULL);
    }
}

eb_status eb_redis_new(struct event_base *base, const char *url, eb_redis **out)
{
    const char *p = url, *at, *colon, *slash;
    eb_redis *r;
    char *end;
    long port = 6379;

    *out = NULL;
    if (strncmp(p, "redis://", 8) != 0)
        return eb_error(EB_ERR_INVALID, "Redis URL must start with redis://");
    p += 8;
    r = eb_calloc(1, sizeof(*r));
    at = strrchr(p, '@');
    if (at) {
        const char *pw = memchr(p, ':', (size_t)(at - p));
        r->password = pw ? eb_strndup(pw + 1, (size_t)(at - pw - 1)) : eb_strndup(p, 0);
        p = at + 1;
    }
    slash = strchr(p, '/');
    colon = strchr(p, ':');
    if (colon && (!slash || colon < slash)) {
        r->host = eb_strndup(p, (size_t)(colon - p));
        port = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || (*end && *end != '/') || port <= 0 || port > 65535) {
            eb_redis_free(r);
            return eb_error(EB_ERR_INVALID, "Redis URL has a bad port");
        }
    } else {
        r->host = slash ? eb_strndup(p, (size_t)(slash - p)) : eb_strdup(p);
    }
    if (slash && slash[1])
        r->db = atoi(slash + 1);
    if (!*r->host) {
        eb_redis_free(r);
        return eb_error(EB_ERR_INVALID, "Redis URL has no host");
    }
    r->port = (int)port;
    r->base = base;
    r->retry = evtimer_new(base, on_retry, r);
    start_connect(r);
    *out = r;
    return EB_OK;
}

void eb_redis_free(eb_redis *r)
{
    if (!r)
        return;
    r->closing = true;
    if (r->ac) {
        redisAsyncContext *ac = r->ac;
        r->ac = NULL;
        redisAsyncFree(ac);
    }
    if (r->retry)
        event_free(r->retry);
    free(r->host);
    free(r->password);
    free(r);
}

bool eb_redis_connected(const eb_redis *r)
{
    return r && r->connected && r->ac;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    cmd_ctx *c = privdata;

    (void)ac;
    c->cb(reply, c->arg);
    free(c);
}

void eb_redis_command(eb_redis *r, int argc, const char **argv, const size_t *argvlen,
                      eb_redis_cb cb, void *arg)
{
    cmd_ctx *c;

    if (!eb_redis_connected(r)) {
        cb(NULL, arg);
        return;
    }
    c = eb_malloc(sizeof(*c));
    c->cb = cb;
    c->arg = arg;
    if (redisAsyncCommandArgv(r->ac, on_reply, c, argc, argv, argvlen) != REDIS_OK) {
        free(c);
        cb(NULL, arg);
    }
}
