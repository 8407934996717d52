/* pool.c -- a few threads that take work off the loop thread.
 *
 * The loop thread submits a job (work, done, arg); a pool thread runs work(arg), then queues the
 * job on the done list and wakes the loop (event_active), which runs done(arg). So work runs on
 * any pool thread, in parallel with the loop and with other jobs, and done always runs on the loop
 * thread, where answering HTTP and publishing to NATS are allowed.
 * Two kinds of work go to pools: CPU-bound work (ingest decodes, validates and packs JSON
 * batches, OTLP requests and NATS TraceBatches on its decode pool: on the loop that capped the
 * service at about one core and made every request wait for the ones before it) and work that
 * waits (handlers of routes marked blocking, which wait on PostgreSQL, run on the HTTP server's
 * worker pool: see http.c).
 * Ownership: the pool owns its job nodes; arg belongs to the caller throughout.
 * Threading: eb_pool_submit and done callbacks on the loop thread only; work must not touch
 * loop state (events, the NATS connection's subscriptions, an HTTP request the loop may touch
 * meanwhile: http.c's blocking routes hand theirs over whole until their done callback). */
#include "evalbus/pool.h"
#include "evalbus/mem.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_POOL_THREADS 16

typedef struct pool_job {
    struct pool_job *next;
    eb_pool_fn work, done;
    void *arg;
} pool_job;

struct eb_pool {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pool_job *head, *tail; /* waiting to run, in submission order */
    pool_job *finished;    /* run, waiting for the loop (any order) */
    size_t outstanding;    /* submitted, done callback not run yet */
    pthread_cond_t finished_cond;
    bool stop;
    int nthreads;
    pthread_t threads[MAX_POOL_THREADS];
    struct event *wake;
};

static void *pool_main(void *arg)
{
    eb_pool *p = arg;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        pool_job *j;
        bool was_empty;

        while (!p->head && !p->stop)
            pthread_cond_wait(&p->cond, &p->mu);
        if (!p->head)
            break; /* stopping and nothing left */
        j = p->head;
        p->head = j->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        j->work(j->arg);
        pthread_mutex_lock(&p->mu);
        was_empty = !p->finished;
        j->next = p->finished;
        p->finished = j;
        if (was_empty) /* else a wake-up is pending already */
            event_active(p->wake, EV_READ, 0);
        pthread_cond_signal(&p->finished_cond);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    eb_pool *p = arg;
    pool_job *list, *rev = NULL;

    (void)fd;
    (void)what;
    pthread_mutex_lock(&p->mu);
    list = p->finished;
    p->finished = NULL;
    pthread_mutex_unlock(&p->mu);
    while (list) { /* oldest first */
        pool_job *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        pool_job *next = rev->next;
        rev->done(rev->arg);
        free(rev);
        rev = next;
        pthread_mutex_lock(&p->mu);
        p->outstanding--;
        pthread_mutex_unlock(&p->mu);
    }
}

void eb_pool_finish(eb_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    while (p->outstanding > 0) {
        while (!p->finished)
            pthread_cond_wait(&p->finished_cond, &p->mu);
        pthread_mutex_unlock(&p->mu);
        on_wake(-1, 0, p); /* the done callbacks, here; they may submit more */
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}

eb_pool *eb_pool_new(struct event_base *base, int nthreads, const char *name)
{
    eb_pool *p = eb_calloc(1, sizeof(*p));

    if (nthreads < 1)
        nthreads = 1;
    if (nthreads > MAX_POOL_THREADS)
        nthreads = MAX_POOL_THREADS;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cond, NULL);
    pthread_cond_init(&p->finished_cond, NULL);
    p->wake = event_new(base, -1, 0, on_wake, p);
    for (int i = 0; i < nthreads; i++) {
        char tname[16]; /* the kernel keeps 15 bytes of a thread name */

        if (pthread_create(&p->threads[i], NULL, pool_main, p) != 0)
            break;
        snprintf(tname, sizeof(tname), "%.12s-%u", name, (unsigned)i % 100u);
        pthread_setname_np(p->threads[i], tname); /* for top -H and perf; best effort */
        p->nthreads++;
    }
    if (p->nthreads == 0) {
        eb_pool_free(p);
        return NULL;
    }
    return p;
}

void eb_pool_submit(eb_pool *p, eb_pool_fn work, eb_pool_fn done, void *arg)
{
    pool_job *j = eb_calloc(1, sizeof(*j));

    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    p->outstanding++;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->mu);
}

void eb_pool_free(eb_pool *p)
{
    pool_job *j;

    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    /* jobs run after the loop stopped: their done callbacks can no longer run */
    while ((j = p->finished) != NULL) {
        p->finished = j->next;
        free(j);
    }
    if (p->wake)
        event_free(p->wake);
    pthread_cond_destroy(&p->cond);
    pthread_cond_destroy(&p->finished_cond);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
