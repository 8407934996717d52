/* test_ratelimit.c -- token-bucket math, and the local fallback when there is no Redis. */
#include "evalbus/ratelimit.h"

#include <setjmp.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_bucket_is_full),
        cmocka_unit_test(test_refill_table),
        cmocka_unit_test(test_clock_going_back_adds_nothing),
        cmocka_unit_test(test_local_limiter_enforces_burst),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
