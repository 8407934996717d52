/* auth_verify.c -- auth.verify round trips per second next to a plain NATS request/reply echo.
 *
 *   auth_verify --nats URL --key KEY --name NAME [--seconds S] [--threads T]
 *
 * Forks an echo responder (a separate process with its own connection, as the auth service
 * is, which sends each reply at once), then measures for S seconds each: T threads doing
 * synchronous request/reply on their own connections, first against the echo subject, then against
 * evalbus.v1.auth.verify with a VerifyRequest carrying KEY (every answer must be "allowed", or the
 * run fails). The echo payload is the same packed VerifyRequest, so both paths move the same bytes.
 * Prints BENCH name=NAME value=<verify/s> unit=req/s baseline=<echo/s> ratio=<verify/echo> The
 * caller decides what "cached" means by how the auth service it talks to is configured (bench/run:
 * verify-cache-ttl 30 s for auth_verify_cached, 0 for auth_verify_uncached). */
#include "evalbus/v1/auth.pb-c.h"

#include <nats/nats.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ECHO_SUBJECT "evalbus.bench.echo"
#define MAX_THREADS 32

typedef struct run {
    const char *url;
    const char *subject;
    const uint8_t *payload;
    int len;
    double seconds;
    bool check_allowed;
    atomic_long done;
    atomic_long failed;
} run;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_echo(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)sub;
    (void)closure;
    natsConnection_Publish(nc, natsMsg_GetReply(msg), natsMsg_GetData(msg),
                           natsMsg_GetDataLength(msg));
    natsMsg_Destroy(msg);
}

/* The responder sends each reply at once, as the services' connections do (without "send as
 * soon as possible" the client's flusher thread would hold every reply for up to 1 ms). */
static int echo_server(const char *url)
{
    natsConnection *nc = NULL;
    natsSubscription *sub = NULL;
    natsOptions *opts = NULL;

    if (natsOptions_Create(&opts) != NATS_OK || natsOptions_SetURL(opts, url) != NATS_OK ||
        natsOptions_SetSendAsap(opts, true) != NATS_OK ||
        natsConnection_Connect(&nc, opts) != NATS_OK ||
        natsConnection_QueueSubscribe(&sub, nc, ECHO_SUBJECT, "echo", on_echo, NULL) != NATS_OK ||
        natsConnection_Flush(nc) != NATS_OK) {
        fprintf(stderr, "auth_verify: echo responder cannot connect to %s\n", url);
        return 1;
    }
    natsOptions_Destroy(opts); /* the connection keeps its own copy */
    for (;;)
        pause();
}

static void *worker(void *arg)
{
    run *r = arg;
    natsConnection *nc = NULL;
    double end;

    if (natsConnection_ConnectTo(&nc, r->url) != NATS_OK) {
        atomic_fetch_add(&r->failed, 1);
        return NULL;
    }
    end = now_s() + r->seconds;
    while (now_s() < end) {
        natsMsg *reply = NULL;
        natsStatus s = natsConnection_Request(&reply, nc, r->subject, r->payload, r->len, 2000);
        bool ok = s == NATS_OK;

        if (ok && r->check_allowed) {
            Evalbus__V1__VerifyResponse *vr =
                evalbus__v1__verify_response__unpack(NULL, (size_t)natsMsg_GetDataLength(reply),
                                                     (const uint8_t *)natsMsg_GetData(reply));
            ok = vr && vr->allowed;
            if (vr)
                evalbus__v1__verify_response__free_unpacked(vr, NULL);
        }
        natsMsg_Destroy(reply);
        if (ok)
            atomic_fetch_add(&r->done, 1);
        else
            atomic_fetch_add(&r->failed, 1);
    }
    natsConnection_Destroy(nc);
    return NULL;
}

/* Returns round trips per second, or -1 if any failed. */
static double measure(run *r, int threads)
{
    pthread_t t[MAX_THREADS];
    double start = now_s(), elapsed;

    atomic_store(&r->done, 0);
    atomic_store(&r->failed, 0);
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, r);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    elapsed = now_s() - start;
    if (atomic_load(&r->failed) > 0) {
        fprintf(stderr, "auth_verify: %ld of %ld requests to %s failed\n", atomic_load(&r->failed),
                atomic_load(&r->failed) + atomic_load(&r->done), r->subject);
        return -1;
    }
    return (double)atomic_load(&r->done) / elapsed;
}

int main(int argc, char **argv)
{
    const char *url = NULL, *key = NULL, *name = "auth_verify";
    double seconds = 3;
    int threads = 4;
    Evalbus__V1__VerifyRequest vr = EVALBUS__V1__VERIFY_REQUEST__INIT;
    uint8_t *payload;
    size_t len;
    pid_t echo;
    run r = {0};
    double echo_rate, verify_rate;
    int rc = 1;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--nats"))
            url = argv[i + 1];
        else if (!strcmp(argv[i], "--key"))
            key = argv[i + 1];
        else if (!strcmp(argv[i], "--name"))
            name = argv[i + 1];
        else if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
    }
    if (!url || !key || seconds <= 0 || threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "usage: auth_verify --nats URL --key KEY --name NAME [--seconds S] "
                        "[--threads T]\n");
        return 2;
    }
    vr.credential = (char *)key;
    vr.request_id = (char *)"bench";
    vr.source = (char *)"bench";
    len = evalbus__v1__verify_request__get_packed_size(&vr);
    payload = malloc(len);
    evalbus__v1__verify_request__pack(&vr, payload);

    echo = fork();
    if (echo == 0)
        return echo_server(url);
    usleep(300000);

    r.url = url;
    r.payload = payload;
    r.len = (int)len;
    r.seconds = 0.5; /* warm-up of both paths (fills the auth cache) */
    r.subject = "evalbus.v1.auth.verify";
    r.check_allowed = true;
    if (measure(&r, threads) < 0)
        goto cleanup;
    r.subject = ECHO_SUBJECT;
    r.check_allowed = false;
    if (measure(&r, threads) < 0)
        goto cleanup;

    r.seconds = seconds;
    echo_rate = measure(&r, threads);
    r.subject = "evalbus.v1.auth.verify";
    r.check_allowed = true;
    verify_rate = measure(&r, threads);
    if (echo_rate <= 0 || verify_rate <= 0)
        goto cleanup;
    printf("BENCH name=%s value=%.0f unit=req/s baseline=%.0f ratio=%.3f\n", name, verify_rate,
           echo_rate, verify_rate / echo_rate);
    fflush(stdout);
    rc = 0;
cleanup:
    kill(echo, SIGTERM);
    waitpid(echo, NULL, 0);
    free(payload);
    nats_Close();
    return rc;
}
