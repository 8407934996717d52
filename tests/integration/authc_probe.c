/* authc_probe.c -- drives the common auth client (eb_authc) against a real auth service, for
 * the integration tests (authc.test.mjs).
 *
 *   authc_probe --nats URL [--ttl MS] [--timeout MS] verify CRED...
 *       verifies each credential twice, in order, and prints one JSON line per answer:
 *       {"i":N,"round":R,"status":"ok|unauthenticated|...","reason":"...","team":"...",
 *        "role":"...","hits":H,"misses":M}
 *   authc_probe --nats URL [--ttl MS] watch CRED SECONDS
 *       verifies CRED every 20 ms for SECONDS and prints a line each time the answer changes
 *       ({"t_ms":T,"status":"..."}), so a test can revoke the key meanwhile and see how soon
 *       this client's cache lets go. */
#include "evalbus/authc.h"
#include "evalbus/bus.h"
#include "evalbus/log.h"

#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct probe {
    struct event_base *base;
    eb_authc *authc;
    char **creds;
    int ncreds;
    int i, round;
    /* watch mode */
    bool watch;
    double deadline;
    double start;
    char last[32];
    struct event *tick;
} probe;

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void next(probe *p);

static void on_done(eb_status st, const eb_principal *pr, const char *reason, void *arg)
{
    probe *p = arg;
    unsigned long long hits, misses;

    eb_authc_stats(p->authc, &hits, &misses);
    if (p->watch) {
        const char *s = eb_status_str(st);
        if (strcmp(s, p->last) != 0) {
            printf("{\"t_ms\":%.0f,\"status\":\"%s\",\"reason\":\"%s\"}\n", now_ms() - p->start, s,
                   reason ? reason : "");
            fflush(stdout);
            snprintf(p->last, sizeof(p->last), "%s", s);
        }
        return;
    }
    printf("{\"i\":%d,\"round\":%d,\"status\":\"%s\",\"reason\":\"%s\",\"team\":\"%s\","
           "\"role\":\"%s\",\"hits\":%llu,\"misses\":%llu}\n",
           p->i, p->round, eb_status_str(st), reason ? reason : "", pr ? pr->team_slug : "",
           pr ? eb_role_str(pr->role) : "", hits, misses);
    fflush(stdout);
    p->i++;
    next(p);
}

static void next(probe *p)
{
    if (p->i >= p->ncreds) {
        if (++p->round > 1) {
            event_base_loopexit(p->base, NULL);
            return;
        }
        p->i = 0;
    }
    eb_authc_verify(p->authc, p->creds[p->i], "probe", on_done, p);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    probe *p = arg;
    struct timeval tv = {0, 20000};

    (void)fd;
    (void)what;
    if (now_ms() > p->deadline) {
        event_base_loopexit(p->base, NULL);
        return;
    }
    eb_authc_verify(p->authc, p->creds[0], "probe", on_done, p);
    evtimer_add(p->tick, &tv);
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    long long ttl = 30000, timeout = 2000;
    eb_bus *bus = NULL;
    probe p = {0};
    int i = 1, rc = 1;

    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (!strcmp(argv[i], "--nats"))
            url = argv[i + 1];
        else if (!strcmp(argv[i], "--ttl"))
            ttl = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--timeout"))
            timeout = atoll(argv[i + 1]);
    }
    if (!url || i >= argc) {
        fprintf(stderr, "usage: authc_probe --nats URL [--ttl MS] verify CRED... | watch CRED S\n");
        return 2;
    }
    eb_log_init("authc_probe", "warn");
    evthread_use_pthreads();
    p.base = event_base_new();
    if (eb_bus_connect(p.base, url, "authc_probe", 0, &bus) != EB_OK ||
        eb_authc_new(p.base, bus, "authc_probe", ttl, timeout, &p.authc) != EB_OK) {
        fprintf(stderr, "authc_probe: %s\n", eb_error_message());
        goto cleanup;
    }
    if (!strcmp(argv[i], "verify") && i + 1 < argc) {
        p.creds = argv + i + 1;
        p.ncreds = argc - i - 1;
        next(&p);
    } else if (!strcmp(argv[i], "watch") && i + 2 < argc) {
        p.watch = true;
        p.creds = argv + i + 1;
        p.start = now_ms();
        p.deadline = p.start + atof(argv[i + 2]) * 1000.0;
        p.tick = evtimer_new(p.base, on_tick, &p);
        on_tick(-1, 0, &p);
    } else {
        fprintf(stderr, "authc_probe: unknown mode %s\n", argv[i]);
        goto cleanup;
    }
    event_base_dispatch(p.base);
    rc = 0;
cleanup:
    if (p.tick)
        event_free(p.tick);
    eb_authc_free(p.authc);
    eb_bus_close(bus);
    if (p.base)
        event_base_free(p.base);
    return rc;
}
