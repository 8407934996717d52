/* test_ratelimit.c -- token-bucket math, the local fallback when there is no Redis, and a Redis
 * that never answers (a listening socket that accepts and stays silent). */
#include "evalbus/ratelimit.h"
#include "evalbus/redis.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static void test_new_bucket_is_full(void **state)
{
    double tokens = 0;
    long long last = -1;

    (void)state;
    assert_int_equal(eb_bucket_refill(&tokens, &last, 20, 100, 1000), 0);
    assert_true(tokens > 99.99 && tokens < 100.01);
    assert_int_equal(last, 1000);
}

typedef struct refill_case {
    double rate, burst, tokens_before;
    long long elapsed_ms;
    double tokens_after;
    long long wait_ms;
} refill_case;

static void test_refill_table(void **state)
{
    static const refill_case cases[] = {
        {20, 100, 0, 50, 1, 0},         /* 50 ms at 20/s gives exactly one token */
        {20, 100, 0, 25, 0.5, 25},      /* half a token: 25 ms more */
        {20, 100, 99.5, 1000, 100, 0},  /* capped at burst */
        {1, 5, 0, 0, 0, 1000},          /* empty, 1/s: a second to wait */
        {0.5, 20, 0.25, 0, 0.25, 1500}, /* login limiter: 0.75 token at 0.5/s */
        {200, 1000, 0, 4, 0.8, 1},      /* fractional wait rounds up */
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const refill_case *c = &cases[i];
        double tokens = c->tokens_before;
        long long last = 10000;
        long long wait = eb_bucket_refill(&tokens, &last, c->rate, c->burst, 10000 + c->elapsed_ms);
        if (tokens < c->tokens_after - 1e-9 || tokens > c->tokens_after + 1e-9 ||
            wait != c->wait_ms)
            fail_msg("case %zu: tokens %.6f (want %.6f), wait %lld (want %lld)", i, tokens,
                     c->tokens_after, wait, c->wait_ms);
    }
}

static void test_clock_going_back_adds_nothing(void **state)
{
    double tokens = 3;
    long long last = 5000;

    (void)state;
    eb_bucket_refill(&tokens, &last, 10, 10, 4000);
    assert_true(tokens > 2.99 && tokens < 3.01);
}

typedef struct tally {
    int allowed, denied;
    long long last_retry;
} tally;

static void count(bool allowed, long long retry_after_ms, void *arg)
{
    tally *t = arg;

    if (allowed) {
        t->allowed++;
    } else {
        t->denied++;
        t->last_retry = retry_after_ms;
    }
}

static void test_local_limiter_enforces_burst(void **state)
{
    struct event_base *base = event_base_new();
    eb_ratelimit *rl = eb_ratelimit_new(base, NULL, 100);
    const char *key_a[2] = {"key:a", "team:t"};
    const char *key_b[2] = {"key:b", "team:t"};
    tally t = {0};

    (void)state;
    assert_true(eb_ratelimit_degraded(rl));
    /* burst 10 at a negligible rate: key a gets 10, then nothing */
    for (int i = 0; i < 15; i++)
        eb_ratelimit_check(rl, key_a, 2, 0.001, 10, count, &t);
    assert_int_equal(t.allowed, 10);
    assert_int_equal(t.denied, 5);
    assert_true(t.last_retry >= 1);
    /* the shared team bucket is empty too, so key b is refused although its own is full */
    memset(&t, 0, sizeof(t));
    eb_ratelimit_check(rl, key_b, 2, 0.001, 10, count, &t);
    assert_int_equal(t.denied, 1);
    /* a refused check takes nothing: key b alone still has its full bucket */
    memset(&t, 0, sizeof(t));
    eb_ratelimit_check(rl, key_b, 1, 0.001, 10, count, &t);
    assert_int_equal(t.allowed, 1);
    eb_ratelimit_free(rl);
    event_base_free(base);
}

/* A listening socket on a free loopback port: connections complete (the kernel's backlog) and
 * nothing is ever answered, as with a hung Redis. */
static int silent_server(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void run_for(struct event_base *base, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* A limiter with timeout_ms on a Redis connection to a silent server, connected. */
static eb_ratelimit *silent_limiter(struct event_base *base, long long timeout_ms, eb_redis **redis,
                                    int *fd)
{
    char url[64];
    int port;
    eb_ratelimit *rl;

    *fd = silent_server(&port);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    assert_int_equal(eb_redis_new(base, url, redis), EB_OK);
    rl = eb_ratelimit_new(base, *redis, timeout_ms);
    run_for(base, 50); /* connected: the kernel completed the handshake */
    assert_true(eb_redis_connected(*redis));
    return rl;
}

/* A silent Redis: the check is decided locally when its timeout fires, once. */
static void test_silent_redis_times_out_to_local(void **state)
{
    struct event_base *base = event_base_new();
    const char *keys[1] = {"key:slow"};
    eb_redis *redis = NULL;
    tally t = {0};
    int fd;
    eb_ratelimit *rl = silent_limiter(base, 50, &redis, &fd);

    (void)state;
    eb_ratelimit_check(rl, keys, 1, 0.001, 10, count, &t);
    assert_int_equal(t.allowed + t.denied, 0);
    run_for(base, 200);
    assert_int_equal(t.allowed, 1);
    assert_int_equal(t.denied, 0);
    assert_true(eb_ratelimit_degraded(rl));
    eb_ratelimit_free(rl);
    eb_redis_free(redis);
    assert_int_equal(t.allowed + t.denied, 1);
    event_base_free(base);
    close(fd);
}

/* Checks still waiting on Redis when the limiter is freed (a shutdown whose grace ran out) are
 * answered by hiredis when the connection is freed after it: nobody may be called then, since
 * the requests they were for are gone, and nothing freed may be touched (ASan). */
static void test_free_with_checks_waiting_on_redis(void **state)
{
    struct event_base *base = event_base_new();
    const char *keys[2] = {"key:x", "team:y"};
    eb_redis *redis = NULL;
    tally t = {0};
    int fd;
    eb_ratelimit *rl = silent_limiter(base, 10000, &redis, &fd);

    (void)state;
    for (int i = 0; i < 3; i++)
        eb_ratelimit_check(rl, keys, 2, 0.001, 10, count, &t);
    run_for(base, 20); /* the commands go out; no answer comes */
    assert_int_equal(t.allowed + t.denied, 0);
    eb_ratelimit_free(rl);
    eb_redis_free(redis); /* hiredis answers the three pending commands NULL here */
    assert_int_equal(t.allowed + t.denied, 0);
    event_base_free(base);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_bucket_is_full),
        cmocka_unit_test(test_refill_table),
        cmocka_unit_test(test_clock_going_back_adds_nothing),
        cmocka_unit_test(test_local_limiter_enforces_burst),
        cmocka_unit_test(test_silent_redis_times_out_to_local),
        cmocka_unit_test(test_free_with_checks_waiting_on_redis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
