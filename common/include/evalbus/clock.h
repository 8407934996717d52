/* clock.h -- CLOCK_MONOTONIC, which a wall-clock step does not move: intervals, timed waits. */
#ifndef EVALBUS_CLOCK_H
#define EVALBUS_CLOCK_H

#include <pthread.h>
#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC: for intervals and deadlines, not for dates. */
long long eb_monotonic_ms(void);
/* Initialises cond to time its waits on CLOCK_MONOTONIC. */
void eb_cond_init_monotonic(pthread_cond_t *cond);
/* The CLOCK_MONOTONIC time ms from now: the deadline for pthread_cond_timedwait on such a
 * condition variable. */
struct timespec eb_monotonic_after_ms(long long ms);

#endif
