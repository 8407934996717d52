/* metrics.h -- process-wide counters and gauges rendered in the Prometheus text format.
 * A series is a metric name plus a label set written as Prometheus text ('route="/x",code="200"').
 * Series are created on first use and live until exit. Thread-safe. */
#ifndef EVALBUS_METRICS_H
#define EVALBUS_METRICS_H

#include "evalbus/mem.h"

/* Declares a metric family (type "counter" or "gauge") with its help text; optional but gives
 * # HELP / # TYPE lines. */
void eb_metrics_describe(const char *name, const char *type, const char *help);
/* Adds v to the series (name, labels); labels may be NULL or "". */
void eb_metrics_add(const char *name, const char *labels, double v);
/* Sets a gauge series to v. */
void eb_metrics_set(const char *name, const char *labels, double v);
/* Current value of a series (0 if it does not exist). */
double eb_metrics_get(const char *name, const char *labels);
/* Appends the exposition text of every series to out. */
void eb_metrics_render(eb_buf *out);

#endif
