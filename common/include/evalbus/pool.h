/* pool.h -- a few threads that run work off the loop thread and report back to it. */
#ifndef EVALBUS_POOL_H
#define EVALBUS_POOL_H

struct event_base;

typedef struct eb_pool eb_pool;
typedef void (*eb_pool_fn)(void *arg);

/* A pool of nthreads (1 to 16) threads named "<name>-<i>" that report to base's loop. NULL if no
 * thread could be started. */
eb_pool *eb_pool_new(struct event_base *base, int nthreads, const char *name);
/* Runs work(arg) on a pool thread, then done(arg) on the loop thread (done callbacks run in the
 * order their work finished). arg stays the caller's. Loop thread. */
void eb_pool_submit(eb_pool *p, eb_pool_fn work, eb_pool_fn done, void *arg);
/* Loop thread, after the loop ended: waits for every job submitted (also those submitted by the
 * done callbacks it runs) and runs their done callbacks here. NULL is ignored. */
void eb_pool_finish(eb_pool *p);
/* Runs the jobs still queued, joins the threads (their done callbacks no longer run). NULL is
 * ignored. */
void eb_pool_free(eb_pool *p);

#endif
