/* metrics.c -- a small registry of Prometheus series.
 * Series sit in an array sorted by insertion and found through an open-addressing hash on
 * "name{labels}"; one mutex guards both. Families keep their HELP/TYPE text. Rendering groups
 * series by family name. */
#include "evalbus/metrics.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERIES 4096
#define HASH_SLOTS 8192

typedef struct series {
    char *name;
    char *labels;
    double value;
} series;

typedef struct family {
    char *name;
    char *type;
    char *help;
} family;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static series all[MAX_SERIES];
static int nseries;
static int slots[HASH_SLOTS]; /* index + 1 into all, 0 = empty */
static family families[256];
static int nfamilies;

static uint64_t hash2(const char *a, const char *b)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *a; a++)
        h = (h ^ (unsigned char)*a) * 1099511628211ULL;
    h = (h ^ '{') * 1099511628211ULL;
    for (; *b; b++)
        h = (h ^ (unsigned char)*b) * 1099511628211ULL;
    return h;
}

/* Caller holds mu. Returns NULL when the registry is full. */
static series *lookup(const char *name, const char *labels, int create)
{
    size_t i = hash2(name, labels) & (HASH_SLOTS - 1);

    while (slots[i]) {
        series *s = &all[slots[i] - 1];
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0)
            return s;
        i = (i + 1) & (HASH_SLOTS - 1);
    }
    if (!create || nseries >= MAX_SERIES)
        return NULL;
    all[nseries].name = eb_strdup(name);
    all[nseries].labels = eb_strdup(labels);
    all[nseries].value = 0;
    slots[i] = ++nseries;
    return &all[nseries - 1];
}

void eb_metrics_describe(const char *name, const char *type, const char *help)
{
    pthread_mutex_lock(&mu);
    for (int i = 0; i < nfamilies; i++) {
        if (strcmp(families[i].name, name) == 0) {
            pthread_mutex_unlock(&mu);
            return;
        }
    }
    if (nfamilies < (int)(sizeof(families) / sizeof(families[0]))) {
        families[nfamilies].name = eb_strdup(name);
        families[nfamilies].type = eb_strdup(type);
        families[nfamilies].help = eb_strdup(help);
        nfamilies++;
    }
    pthread_mutex_unlock(&mu);
}

void eb_metrics_add(const char *name, const char *labels, double v)
{
    series *s;

    pthread_mutex_lock(&mu);
    s = lookup(name, labels ? labels : "", 1);
    if (s)
        s->value += v;
    pthread_mutex_unlock(&mu);
}

void eb_metrics_set(const char *name, const char *labels, double v)
{
    series *s;

    pthread_mutex_lock(&mu);
    s = lookup(name, labels ? labels : "", 1);
    if (s)
        s->value = v;
    pthread_mutex_unlock(&mu);
}

double eb_metrics_get(const char *name, const char *labels)
{
    series *s;
    double v = 0;

    pthread_mutex_lock(&mu);
    s = lookup(name, labels ? labels : "", 0);
    if (s)
        v = s->value;
    pthread_mutex_unlock(&mu);
    return v;
}

static void render_family(eb_buf *out, const char *name)
{
    for (int i = 0; i < nseries; i++) {
        if (strcmp(all[i].name, name) != 0)
            continue;
        if (all[i].labels[0])
            eb_buf_printf(out, "%s{%s} %.17g\n", all[i].name, all[i].labels, all[i].value);
        else
            eb_buf_printf(out, "%s %.17g\n", all[i].name, all[i].value);
    }
}

void eb_metrics_render(eb_buf *out)
{
    pthread_mutex_lock(&mu);
    for (int f = 0; f < nfamilies; f++) {
        eb_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", families[f].name, families[f].help,
                      families[f].name, families[f].type);
        render_family(out, families[f].name);
    }
    for (int i = 0; i < nseries; i++) {
        bool described = false;
        bool first = true;
        for (int f = 0; f < nfamilies && !described; f++)
            described = strcmp(families[f].name, all[i].name) == 0;
        for (int j = 0; j < i && first; j++)
            first = strcmp(all[j].name, all[i].name) != 0;
        if (!described && first)
            render_family(out, all[i].name);
    }
    pthread_mutex_unlock(&mu);
}
