/* writer.c -- the INGEST stream's writer: JetStream -> PostgreSQL, exactly once in effect.
 *
 * Each writer thread pulls batches from the durable consumer "ingest-writer" (any number of
 * threads and replicas share it) and stores a batch in one transaction:
 *   1. part_time of every trace: the one already in ingest.trace_keys, else the trace's start
 *      (or the arrival time when the start is far off); the day partitions are created first,
 *      in their own transaction, under an advisory lock;
 *   2. trace_keys rows (a plain INSERT when every key is new, else ON CONFLICT DO NOTHING) and
 *      the authoritative part_time read back;
 *   2b. records of traces deleted after the stream took them are left out (drop_deleted);
 *   3. traces and observations COPYed into temporary tables, then upserted by key: a record
 *      replaces the row only if it came later in the stream (stream sequence), so redelivered
 *      or resent records change nothing; OTLP fragments merge (coalesce, least/greatest) and
 *      their trace totals are recomputed from the observations;
 *   4. COMMIT, then ack every message, then publish evalbus.v1.traces.stored.<team>.
 * A trace that appears twice in one batch splits the batch into passes (one transaction each,
 * in stream order), since one upsert statement may not touch a row twice; messages are acked
 * only after the last pass commits, and a pass that is redelivered changes nothing.
 * If PostgreSQL is unavailable the batch is nak'ed with a delay and the stream keeps
 * everything; when a batch fails for another reason its records are retried one by one and a
 * record that still fails is terminated and copied to the dead-letter subject.
 * Memory: the records of a fetch are unpacked into the thread's arena and freed together.
 * Threading: each thread owns its subscription, its arena and, per batch, one pooled
 * connection. */
#include "evalbus/arena.h"
#include "evalbus/bus.h"
#include "evalbus/clock.h"
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"
#include "ingest_int.h"
#include "trace_json.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_WRITER_THREADS 8
#define DAY_NS (86400LL * 1000000000LL)
#define COPY_PIECE (64 * 1024)
/* failed fetches in a row (200 ms apart) after which a writer binds to its consumer anew */
#define WRITER_REBIND_AFTER 10
/* the writer threads' nice value (the intake's threads keep 0) */
#define WRITER_NICE 10
/* empty fetches (250 ms each) between two lookups of the consumer while idle */
#define WRITER_IDLE_CHECK 20

typedef struct writer_thread {
    struct ingest_writer *w;
    pthread_t tid;
    int index;
    eb_bus *bus; /* a NATS connection of its own, without the event loop */
    /* the batch being stored, for the heartbeat (under hb_mu; the writer touches none of its
     * messages meanwhile) */
    pthread_mutex_t hb_mu;
    struct rec *hb_recs;
    size_t hb_n;
    long long hb_start_ms, hb_at_ms; /* when the batch began; its last heartbeat (monotonic) */
    int hb_beats;
} writer_thread;

struct ingest_writer {
    ingest_ctx *ctx;
    atomic_bool stop;
    int nthreads;
    writer_thread threads[MAX_WRITER_THREADS];
    pthread_t heartbeat;
    bool heartbeat_on;
    pthread_mutex_t mu;
    atomic_int plain_keys_skip; /* passes left that go straight to INSERT ... ON CONFLICT */
    long long known_days[512];  /* day numbers whose partitions exist */
    int nknown;
    atomic_llong last_error_ms;
    char last_error[256];
};

typedef struct rec {
    natsMsg *msg; /* NULL once acknowledged, terminated or put back */
    bool existed; /* the trace was stored before this pass */
    bool direct;  /* new in this pass: COPYed straight into its day's partitions */
    Evalbus__V1__IngestRecord *r;
    unsigned long long seq;
    long long part_ns; /* partition time, ns */
    bool skip;         /* stored by an earlier pass of this batch, or gone */
    bool gone;         /* its trace was deleted after the stream took it: not stored */
    bool stored;       /* committed and acknowledged: announced in TracesStored */
} rec;

static long long now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* --- COPY text format --- */

static void copy_text(eb_buf *b, const char *s)
{
    if (!s) {
        eb_buf_puts(b, "\\N");
        return;
    }
    /* append runs of ordinary bytes at once; escape the four that COPY treats specially */
    while (*s) {
        size_t run = strcspn(s, "\\\t\n\r");
        eb_buf_append(b, s, run);
        s += run;
        if (!*s)
            break;
        eb_buf_putc(b, '\\');
        eb_buf_putc(b, *s == '\\' ? '\\' : *s == '\t' ? 't' : *s == '\n' ? 'n' : 'r');
        s++;
    }
}

static void copy_time(eb_buf *b, long long ns)
{
    char t[48];

    if (ns <= 0) {
        eb_buf_puts(b, "\\N");
        return;
    }
    ingest_time_text(ns, t, sizeof(t));
    eb_buf_puts(b, t);
}

/* Decimal text of v (what %llu prints), without printf: several per row. */
static void put_ull(eb_buf *b, unsigned long long v)
{
    char buf[24], *p = buf + sizeof buf;

    do
        *--p = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    eb_buf_append(b, p, (size_t)(buf + sizeof buf - p));
}

static void copy_int(eb_buf *b, bool has, long long v)
{
    if (!has) {
        eb_buf_puts(b, "\\N");
        return;
    }
    if (v < 0) {
        eb_buf_putc(b, '-');
        put_ull(b, 0ULL - (unsigned long long)v);
    } else {
        put_ull(b, (unsigned long long)v);
    }
}

static void copy_double(eb_buf *b, bool has, double v)
{
    if (has)
        eb_buf_printf(b, "%.17g", v);
    else
        eb_buf_puts(b, "\\N");
}

/* The writer thread's buffers, kept from row to row and batch to batch so that they grow once
 * rather than from 64 bytes again for every column of every row (what realloc then copies cost
 * the writer more than writing the rows): scratch holds the JSON of one column (messages, tool
 * calls, tags) before it is escaped into the COPY data, rows_traces and rows_obs a pass's COPY
 * data. writer_keep_buffers frees them when a batch of large traces left them over 2 MiB (so an
 * idle writer keeps at most 6 MiB), writer_main when the thread ends. */
static _Thread_local eb_buf scratch, rows_traces, rows_obs;
#define WRITER_KEEP_BYTES (2u << 20) /* a default batch's COPY data is about 1 MB */

static void writer_keep_buffers(size_t keep)
{
    eb_buf *all[] = {&scratch, &rows_traces, &rows_obs};

    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]->cap > keep)
            eb_buf_free(all[i]);
}

/* {"messages": [...]}, {"messages": [...], "text": "..."}, {"text": "..."} or NULL, as COPY
 * text. */
static void copy_io(eb_buf *b, Evalbus__V1__Message *const *msgs, size_t n, const char *text)
{
    eb_buf *j = &scratch;

    if (!n && !text) {
        eb_buf_puts(b, "\\N");
        return;
    }
    eb_buf_reset(j);
    if (n) {
        eb_buf_puts(j, "{\"messages\":");
        ingest_messages_json(msgs, n, j);
        if (text) {
            eb_buf_puts(j, ",\"text\":\"");
            eb_buf_json_escape(j, text);
            eb_buf_putc(j, '"');
        }
        eb_buf_putc(j, '}');
    } else {
        eb_buf_puts(j, "{\"text\":\"");
        eb_buf_json_escape(j, text);
        eb_buf_puts(j, "\"}");
    }
    copy_text(b, j->data);
}

static void copy_tool_calls(eb_buf *b, Evalbus__V1__ToolCall *const *calls, size_t n)
{
    if (!n) {
        eb_buf_puts(b, "\\N");
        return;
    }
    eb_buf_reset(&scratch);
    ingest_tool_calls_json(calls, n, &scratch);
    copy_text(b, scratch.data);
}

/* text[] literal: {"a","b"} with quotes and backslashes escaped inside elements. */
static void copy_tags(eb_buf *b, char *const *tags, size_t n)
{
    eb_buf *a = &scratch;

    eb_buf_reset(a);
    eb_buf_putc(a, '{');
    for (size_t i = 0; i < n; i++) {
        if (i)
            eb_buf_putc(a, ',');
        eb_buf_putc(a, '"');
        for (const char *p = tags[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                eb_buf_putc(a, '\\');
            eb_buf_putc(a, *p);
        }
        eb_buf_putc(a, '"');
    }
    eb_buf_putc(a, '}');
    copy_text(b, a->data);
}

static void trace_row(eb_buf *b, const rec *x)
{
    const Evalbus__V1__IngestRecord *r = x->r;
    const Evalbus__V1__Trace *t = r->trace;
    long long latency_has = t->has_latency_ms;
    double latency = t->latency_ms;

    if (!latency_has && t->start_time_unix_nano > 0 &&
        t->end_time_unix_nano >= t->start_time_unix_nano) {
        latency_has = 1;
        latency = (double)(t->end_time_unix_nano - t->start_time_unix_nano) / 1e6;
    }
    copy_text(b, r->envelope->team_id);
    eb_buf_putc(b, '\t');
    copy_time(b, x->part_ns);
    eb_buf_putc(b, '\t');
    copy_text(b, t->id);
    eb_buf_putc(b, '\t');
    copy_text(b, t->project && *t->project ? t->project : "default");
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(t->name));
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(t->model));
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(t->provider));
    eb_buf_putc(b, '\t');
    copy_text(b, t->status && *t->status ? t->status : "unset");
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(t->status_message));
    eb_buf_putc(b, '\t');
    copy_time(b, t->start_time_unix_nano);
    eb_buf_putc(b, '\t');
    copy_time(b, t->end_time_unix_nano);
    eb_buf_putc(b, '\t');
    copy_double(b, latency_has, latency);
    eb_buf_putc(b, '\t');
    copy_int(b, t->has_input_tokens, t->input_tokens);
    eb_buf_putc(b, '\t');
    copy_int(b, t->has_output_tokens, t->output_tokens);
    eb_buf_putc(b, '\t');
    if (t->has_total_tokens)
        copy_int(b, true, t->total_tokens);
    else
        copy_int(b, t->has_input_tokens && t->has_output_tokens,
                 t->input_tokens + t->output_tokens);
    eb_buf_putc(b, '\t');
    copy_double(b, t->has_cost_usd, t->cost_usd);
    eb_buf_putc(b, '\t');
    copy_io(b, t->input_messages, t->n_input_messages, ingest_or_null(t->input_text));
    eb_buf_putc(b, '\t');
    copy_io(b, t->output_messages, t->n_output_messages, ingest_or_null(t->output_text));
    eb_buf_putc(b, '\t');
    copy_tool_calls(b, t->tool_calls, t->n_tool_calls);
    eb_buf_putc(b, '\t');
    copy_text(b, t->metadata_json && *t->metadata_json ? t->metadata_json : "{}");
    eb_buf_putc(b, '\t');
    copy_tags(b, t->tags, t->n_tags);
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(t->session_id));
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(t->user_id));
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(t->environment));
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(t->release));
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(t->attributes_json));
    eb_buf_putc(b, '\t');
    copy_text(b, r->source && *r->source ? r->source : "json");
    eb_buf_putc(b, '\t');
    put_ull(b, x->seq);
    eb_buf_putc(b, '\t');
    /* replaced_seq (see upsert_traces): this record's, unless it is an OTLP fragment */
    put_ull(b, r->source && strcmp(r->source, "otlp") == 0 ? 0 : x->seq);
    eb_buf_putc(b, '\n');
}

static void observation_row(eb_buf *b, const rec *x, const Evalbus__V1__Observation *o)
{
    const Evalbus__V1__IngestRecord *r = x->r;

    copy_text(b, r->envelope->team_id);
    eb_buf_putc(b, '\t');
    copy_time(b, x->part_ns);
    eb_buf_putc(b, '\t');
    copy_text(b, r->trace->id);
    eb_buf_putc(b, '\t');
    copy_text(b, o->id);
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(o->parent_id));
    eb_buf_putc(b, '\t');
    copy_text(b, o->type && *o->type ? o->type : "span");
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(o->name));
    eb_buf_putc(b, '\t');
    copy_time(b, o->start_time_unix_nano);
    eb_buf_putc(b, '\t');
    copy_time(b, o->end_time_unix_nano);
    eb_buf_putc(b, '\t');
    copy_text(b, o->status && *o->status ? o->status : "unset");
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(o->status_message));
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(o->model));
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(o->provider));
    eb_buf_putc(b, '\t');
    copy_int(b, o->has_input_tokens, o->input_tokens);
    eb_buf_putc(b, '\t');
    copy_int(b, o->has_output_tokens, o->output_tokens);
    eb_buf_putc(b, '\t');
    copy_double(b, o->has_cost_usd, o->cost_usd);
    eb_buf_putc(b, '\t');
    copy_io(b, o->input_messages, o->n_input_messages, ingest_or_null(o->input_text));
    eb_buf_putc(b, '\t');
    copy_io(b, o->output_messages, o->n_output_messages, ingest_or_null(o->output_text));
    eb_buf_putc(b, '\t');
    copy_tool_calls(b, o->tool_calls, o->n_tool_calls);
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(o->attributes_json));
    eb_buf_putc(b, '\t');
    copy_text(b, ingest_or_null(o->metadata_json));
    eb_buf_putc(b, '\t');
    put_ull(b, x->seq);
    eb_buf_putc(b, '\n');
}

/* --- SQL --- */

static const char tmp_sql[] =
    "CREATE TEMP TABLE IF NOT EXISTS tmp_traces (team_id uuid, part_time timestamptz, id text,"
    " project text, name text, model text, provider text, status text, status_message text,"
    " start_time timestamptz, end_time timestamptz, latency_ms double precision,"
    " input_tokens bigint, output_tokens bigint, total_tokens bigint, cost_usd double precision,"
    " input jsonb, output jsonb, tool_calls jsonb, metadata jsonb, tags text[], session_id text,"
    " user_id text, environment text, release text, attributes jsonb, source text,"
    " stream_seq bigint, replaced_seq bigint) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS tmp_observations (team_id uuid, part_time timestamptz,"
    " trace_id text, id text, parent_id text, type text, name text, start_time timestamptz,"
    " end_time timestamptz, status text, status_message text, model text, provider text,"
    " input_tokens bigint, output_tokens bigint, cost_usd double precision, input jsonb,"
    " output jsonb, tool_calls jsonb, attributes jsonb, metadata jsonb, stream_seq bigint)"
    " ON COMMIT DELETE ROWS";

#define TRACE_COLS                                                                                 \
    "team_id, part_time, id, project, name, model, provider, status, status_message, start_time,"  \
    " end_time, latency_ms, input_tokens, output_tokens, total_tokens, cost_usd, input, output,"   \
    " tool_calls, metadata, tags, session_id, user_id, environment, release, attributes, source,"  \
    " stream_seq, replaced_seq"
#define OBS_COLS                                                                                   \
    "team_id, part_time, trace_id, id, parent_id, type, name, start_time, end_time, status,"       \
    " status_message, model, provider, input_tokens, output_tokens, cost_usd, input, output,"      \
    " tool_calls, attributes, metadata, stream_seq"

/* OTLP fragments merge; everything else replaces when it is newer in the stream (each a SET item
 * with its comma). */
#define M(col)                                                                                     \
#col " = CASE WHEN excluded.source = 'otlp' THEN coalesce(excluded." #col ", t." #col          \
         ") ELSE excluded." #col " END, "
/* ... except that a trace made by the JSON API or NATS keeps what it was sent with: a
 * fragment's value fills only a column it lacks (as the recompute does, see DERIVED) */
#define M_SENT(col)                                                                                \
#col " = CASE WHEN excluded.source <> 'otlp' THEN excluded." #col                              \
         " WHEN t.source = 'otlp' THEN"                                                            \
         " coalesce(excluded." #col ", t." #col ") ELSE coalesce(t." #col ", excluded." #col       \
         ") END, "
/* ... and an OTLP fragment never moves its trace to another project (the first one stored
 * names it): spans of several services, or of a project-restricted key, join the trace as it is. */
#define KEEP_OTLP(col)                                                                             \
#col " = CASE WHEN excluded.source = 'otlp' THEN t." #col " ELSE excluded." #col " END, "
/* The columns an upsert replaces, or merges for OTLP. */
#define TRACE_MERGE_SET                                                                            \
    KEEP_OTLP(project)                                                                             \
    M(name)                                                                                        \
    M_SENT(model)                                                                                  \
    M_SENT(provider)                                                                               \
    M(status_message)                                                                              \
    M(latency_ms)                                                                                  \
    M(input_tokens)                                                                                \
    M(output_tokens)                                                                               \
    M(total_tokens)                                                                                \
    M(cost_usd)                                                                                    \
    M_SENT(input)                                                                                  \
    M_SENT(output)                                                                                 \
    M(tool_calls)                                                                                  \
    M(session_id)                                                                                  \
    M(user_id)                                                                                     \
    M(environment)                                                                                 \
    M(release)
/* Two writers (or replicas) commit the records of one trace in any order; the outcome must be
 * that of stream order. A trace's replaced_seq is the stream sequence of the record that last
 * replaced (or made) it, JSON API or NATS; 0 for a trace made by an OTLP fragment, which never
 * moves it; NULL for rows stored before the column came (migration 005), which keep the rules
 * they were stored under (stream_seq, the highest sequence merged in, decides; but fragments no
 * longer raise it, so that a JSON resend sent before a fragment and stored after it replaces).
 * Then:
 *   - a replacing record applies only if it is later than the last replacement (and keeps the
 *     spans of fragments sent after it and stored first: drop_replaced_observations; the
 *     totals are taken again from them: recompute_sql);
 *   - a fragment merges only if it is later than the last replacement (one sent before it is
 *     part of what the replacement replaced), its spans likewise (upsert_observations).
 * The statements that read or change ingest.traces or ingest.observations beyond the rows
 * they insert take $1, the distinct part_time values of the pass's records (pass_days), and
 * name it on every scan of those tables (every row of the temporary tables has one of those
 * values, so no row is left out): PostgreSQL then plans, locks and reads only those days'
 * partitions, where it took every day's partitions and their indexes (after a backfill over
 * a thousand days a resend took most of a minute). The two INSERTs that only read the
 * temporary tables need none: a row is routed to its day's partition as it is inserted. */
static const char upsert_traces[] =
    "INSERT INTO ingest.traces AS t (" TRACE_COLS ") SELECT " TRACE_COLS " FROM tmp_traces"
    " ON CONFLICT (team_id, part_time, id) DO UPDATE SET " TRACE_MERGE_SET
    "status = CASE WHEN excluded.source <> 'otlp' THEN excluded.status WHEN 'error' IN"
    " (excluded.status, t.status) THEN 'error' WHEN excluded.status <> 'unset' THEN"
    " excluded.status ELSE t.status END,"
    " start_time = CASE WHEN excluded.source = 'otlp' THEN least(excluded.start_time,"
    " t.start_time) ELSE excluded.start_time END,"
    " end_time = CASE WHEN excluded.source = 'otlp' THEN greatest(excluded.end_time, t.end_time)"
    " ELSE excluded.end_time END,"
    " metadata = CASE WHEN excluded.source = 'otlp' THEN t.metadata || excluded.metadata ELSE"
    " excluded.metadata END,"
    " tags = CASE WHEN excluded.source = 'otlp' THEN ARRAY(SELECT x.tag FROM unnest(t.tags ||"
    " excluded.tags) WITH ORDINALITY x(tag, n) GROUP BY x.tag ORDER BY min(x.n)) ELSE"
    " excluded.tags END,"
    " attributes = CASE WHEN excluded.source = 'otlp' THEN coalesce(excluded.attributes, '{}')"
    " || coalesce(t.attributes, '{}') ELSE excluded.attributes END,"
    " source = CASE WHEN excluded.source = 'otlp' THEN t.source ELSE excluded.source END,"
    /* a fragment moves a row from before replaced_seq no more: a JSON resend sent before it
     * and stored after it still replaces */
    " stream_seq = CASE WHEN excluded.source = 'otlp' AND t.replaced_seq IS NULL THEN"
    " t.stream_seq ELSE greatest(t.stream_seq, excluded.stream_seq) END,"
    " replaced_seq = CASE WHEN excluded.source = 'otlp' THEN t.replaced_seq ELSE"
    " excluded.replaced_seq END,"
    " updated_at = now() WHERE CASE WHEN excluded.source = 'otlp' THEN t.replaced_seq IS NULL OR"
    " excluded.stream_seq > t.replaced_seq ELSE excluded.stream_seq > coalesce(t.replaced_seq,"
    " t.stream_seq) END";
#undef TRACE_MERGE_SET
#undef KEEP_OTLP
#undef M_SENT
#undef M

/* Observations of a record are written only if the trace was not replaced by a later record
 * (an old record redelivered after a newer version must not bring back observations the newer
 * one dropped; nor a fragment sent before a replacement but stored after it). */
static const char upsert_observations[] =
    "INSERT INTO ingest.observations AS o (" OBS_COLS ") SELECT DISTINCT ON (x.team_id,"
    " x.part_time, x.trace_id, x.id) x.team_id, x.part_time, x.trace_id, x.id, x.parent_id,"
    " x.type, x.name, x.start_time, x.end_time, x.status, x.status_message, x.model,"
    " x.provider, x.input_tokens, x.output_tokens, x.cost_usd, x.input, x.output, x.tool_calls,"
    " x.attributes, x.metadata, x.stream_seq FROM tmp_observations x JOIN tmp_traces r ON"
    " r.team_id = x.team_id AND r.part_time = x.part_time AND r.id = x.trace_id JOIN"
    " ingest.traces t ON t.team_id = x.team_id AND t.part_time = x.part_time AND t.id ="
    " x.trace_id AND t.part_time = ANY ($1::timestamptz[]) WHERE CASE WHEN t.replaced_seq"
    " IS NULL THEN r.source = 'otlp' OR x.stream_seq >= t.stream_seq ELSE x.stream_seq >="
    " t.replaced_seq END"
    " ORDER BY x.team_id, x.part_time, x.trace_id, x.id, x.stream_seq DESC"
    " ON CONFLICT (team_id, part_time, trace_id, id) DO UPDATE SET parent_id ="
    " excluded.parent_id, type = excluded.type, name = excluded.name, start_time ="
    " excluded.start_time, end_time = excluded.end_time, status = excluded.status,"
    " status_message = excluded.status_message, model = excluded.model, provider ="
    " excluded.provider, input_tokens = excluded.input_tokens, output_tokens ="
    " excluded.output_tokens, cost_usd = excluded.cost_usd, input = excluded.input, output ="
    " excluded.output, tool_calls = excluded.tool_calls, attributes = excluded.attributes,"
    " metadata = excluded.metadata, stream_seq = excluded.stream_seq"
    " WHERE o.stream_seq <= excluded.stream_seq";

/* All traces of the pass are new: their observations go straight in (ids may repeat within
 * one trace's record only if the client repeated them; the newest record's copy wins). */
static const char insert_observations[] =
    "INSERT INTO ingest.observations (" OBS_COLS ") SELECT DISTINCT ON (team_id, part_time,"
    " trace_id, id) " OBS_COLS " FROM tmp_observations ORDER BY team_id, part_time, trace_id,"
    " id, stream_seq DESC ON CONFLICT (team_id, part_time, trace_id, id) DO NOTHING";

/* A replaced (non-OTLP) trace keeps the observations of the record that replaced it, and of
 * fragments sent after it (stored first); older ones go. */
static const char drop_replaced_observations[] =
    "DELETE FROM ingest.observations o USING tmp_traces x, ingest.traces t WHERE x.source <>"
    " 'otlp' AND t.part_time = ANY ($1::timestamptz[]) AND o.part_time = ANY"
    " ($1::timestamptz[]) AND t.team_id = x.team_id AND t.part_time = x.part_time AND"
    " t.id = x.id AND t.replaced_seq = x.stream_seq AND o.team_id = x.team_id AND"
    " o.part_time = x.part_time AND o.trace_id = x.id AND o.stream_seq < x.stream_seq";

/* Totals of merged (OTLP) traces, from their observations (sums are numeric: they are capped
 * rather than let a bigint overflow fail the batch; a total no observation has keeps the trace's
 * own, as sent with it: least() would take a NULL sum for the cap), and the fields that depend on
 * which spans came in which request: model and provider of the trace's earliest generation, and
 * input and output of the root span, else of the earliest / latest generation. A trace made by
 * the JSON API or NATS (its source stays when spans merge in) keeps the model, provider, input
 * and output it was sent with: those come from its observations only where it has none (its
 * top-level observations are not a root span). */
#define BIGINT_MAX "9223372036854775807"
/* A trace's cost is the sum of its observations' costs, each a finite double: two near the
 * largest double add up to more than float8 holds, and PostgreSQL raises an error rather than
 * give infinity (the record could never be stored). So the sum is taken of the costs times
 * 2^-64, held to the largest double times 2^-64 and multiplied back: a sum above the largest
 * double is stored as it. A power of two scales a double exactly (the sum rounds as the plain
 * one would), except a cost below about 1e-288, which loses precision far below a cent. */
#define TWO_POW_M64 "5.421010862427522e-20::float8"
#define TWO_POW_64 "18446744073709551616::float8"
#define DOUBLE_MAX_SCALED "9.745314011399998e288::float8"
/* (null when no observation has a cost; CASE rather than least(), which skips a null) */
#define COST_SUM_SCALED                                                                            \
    "coalesce(sum(o.cost_usd * " TWO_POW_M64 ") FILTER (WHERE NOT coalesce(u.cost, false)),"       \
    " sum(o.cost_usd * " TWO_POW_M64 "))"
/* col of the trace's first generation with one, by order, from its observations o (an aggregate
 * of the recompute's grouping) */
#define FIRST_GENERATION(col, order)                                                               \
    "(array_agg(o." col " ORDER BY o." order " NULLS LAST, o.id) FILTER (WHERE o.type ="           \
    " 'generation' AND o." col " IS NOT NULL))[1]"
/* col of the root span's observation (the first, should there be several) */
#define ROOT_SPAN(col)                                                                             \
    "(array_agg(o." col " ORDER BY o.start_time NULLS LAST, o.id) FILTER (WHERE o.parent_id IS"    \
    " NULL AND o." col " IS NOT NULL))[1]"
#define GEN_MODEL FIRST_GENERATION("model", "start_time")
#define GEN_PROVIDER FIRST_GENERATION("provider", "start_time")
#define GEN_INPUT FIRST_GENERATION("input", "start_time")
#define GEN_OUTPUT FIRST_GENERATION("output", "end_time DESC")
#define ROOT_INPUT ROOT_SPAN("input")
#define ROOT_OUTPUT ROOT_SPAN("output")
/* col of the trace: from its spans if it was made over OTLP, else its own unless it has none */
#define DERIVED(col)                                                                               \
    " " col " = CASE WHEN t.source = 'otlp' THEN coalesce(s." col ", t." col                       \
    ") ELSE coalesce(t." col ", s." col ") END"
/* ... input and output from its root span first; a trace made by the JSON API or NATS has no
 * root span among its observations (its top-level ones have no parent either), so it takes
 * what it lacks from its generations (a root span merged in gave its own in the upsert) */
#define DERIVED_IO(col)                                                                            \
    " " col " = CASE WHEN t.source = 'otlp' THEN coalesce(s.root_" col ", s." col ", t." col       \
    ") ELSE coalesce(t." col ", s." col ") END"
#define DERIVED_FIELDS                                                                             \
    DERIVED("model") "," DERIVED("provider") "," DERIVED_IO("input") "," DERIVED_IO("output")
/* An OTLP trace's totals come from its observations. An observation whose descendants carry
 * token counts (or a cost) of their own, such as an agent or chain span that reports the usage
 * of the model calls under it, does not add its own: that usage would be counted twice.
 * `above` holds every ancestor of an observation with usage (tok) or a cost (cost), walked
 * once per (ancestor, kind): linear in the observations, and UNION ends the walk at a cycle
 * of parent ids. A span that names itself as its parent is not its own ancestor. Spans on a
 * longer cycle are each other's ancestors and so left out; when that leaves no usage at all,
 * the sum over every observation is taken instead (parent ids that go round are malformed
 * data: they must not cost more than a tree, nor drop every figure).
 * The traces are those of the pass's fragments (keys: seq is the fragment's) and those that a
 * record of the pass replaced while keeping spans of fragments sent after it (seq: the latest
 * of those); a fragment older than the last replacement merged nothing and changes nothing. */
static const char recompute_sql[] =
    "WITH RECURSIVE keys(team_id, part_time, id, seq) AS ("
    " SELECT team_id, part_time, id, stream_seq FROM tmp_traces WHERE source = 'otlp'"
    " UNION ALL"
    " SELECT x.team_id, x.part_time, x.id, max(o.stream_seq) FROM tmp_traces x JOIN"
    "  ingest.traces t ON t.team_id = x.team_id AND t.part_time = x.part_time AND t.id = x.id"
    "  AND t.replaced_seq = x.stream_seq AND t.part_time = ANY ($1::timestamptz[])"
    "  JOIN ingest.observations o ON o.team_id = x.team_id AND o.part_time = x.part_time"
    "  AND o.trace_id = x.id AND o.stream_seq > x.stream_seq"
    "  AND o.part_time = ANY ($1::timestamptz[])"
    "  WHERE x.source <> 'otlp' GROUP BY 1, 2, 3),"
    " above(team_id, part_time, trace_id, id, tok, cost) AS ("
    " SELECT o.team_id, o.part_time, o.trace_id, o.parent_id, o.input_tokens IS NOT NULL OR"
    "  o.output_tokens IS NOT NULL, o.cost_usd IS NOT NULL"
    "  FROM ingest.observations o JOIN keys k ON o.team_id ="
    "  k.team_id AND o.part_time = k.part_time AND o.trace_id = k.id"
    "  WHERE o.part_time = ANY ($1::timestamptz[])"
    "  AND o.parent_id IS NOT NULL AND o.parent_id <> o.id AND (o.input_tokens IS NOT NULL"
    "  OR o.output_tokens IS NOT NULL OR o.cost_usd IS NOT NULL)"
    " UNION"
    " SELECT p.team_id, p.part_time, p.trace_id, p.parent_id, a.tok, a.cost FROM above a JOIN"
    "  ingest.observations p ON p.team_id = a.team_id AND p.part_time = a.part_time AND"
    "  p.trace_id = a.trace_id AND p.id = a.id WHERE p.part_time = ANY ($1::timestamptz[])"
    "  AND p.parent_id IS NOT NULL)"
    " UPDATE ingest.traces t SET input_tokens = CASE WHEN s.i IS NULL THEN t.input_tokens ELSE"
    " least(s.i, " BIGINT_MAX ") END, output_tokens = CASE WHEN s.o IS NULL THEN t.output_tokens"
    " ELSE least(s.o, " BIGINT_MAX ") END, total_tokens = CASE WHEN s.i IS NULL AND s.o IS NULL"
    " THEN t.total_tokens ELSE least(coalesce(s.i, t.input_tokens, 0) + coalesce(s.o,"
    " t.output_tokens, 0), " BIGINT_MAX
    ") END, cost_usd = coalesce(s.c, t.cost_usd)," DERIVED_FIELDS
    ", start_time = least(t.start_time, s.st), end_time ="
    " greatest(t.end_time, s.et), latency_ms = CASE WHEN greatest(t.end_time, s.et) >="
    " least(t.start_time, s.st) THEN extract(epoch FROM greatest(t.end_time, s.et) -"
    " least(t.start_time, s.st)) * 1000 END, status = CASE WHEN s.err THEN 'error' ELSE"
    " t.status END"
    " FROM (SELECT o.team_id, o.part_time, o.trace_id,"
    "  coalesce(sum(o.input_tokens) FILTER (WHERE NOT coalesce(u.tok, false)),"
    "   sum(o.input_tokens)) i,"
    "  coalesce(sum(o.output_tokens) FILTER (WHERE NOT coalesce(u.tok, false)),"
    "   sum(o.output_tokens)) o,"
    "  CASE WHEN " COST_SUM_SCALED " > " DOUBLE_MAX_SCALED " THEN " DOUBLE_MAX_SCALED " ELSE"
    "  " COST_SUM_SCALED " END * " TWO_POW_64 " c,"
    "  min(o.start_time) st, max(o.end_time) et,"
    "  bool_or(o.status = 'error') err, " GEN_MODEL " model, " GEN_PROVIDER " provider, " GEN_INPUT
    " input, " GEN_OUTPUT " output, " ROOT_INPUT " root_input, " ROOT_OUTPUT " root_output,"
    "  max(k.seq) kseq"
    "  FROM ingest.observations o JOIN keys k ON o.team_id ="
    "  k.team_id AND o.part_time = k.part_time AND o.trace_id = k.id"
    "  AND o.part_time = ANY ($1::timestamptz[])"
    "  LEFT JOIN (SELECT team_id, part_time, trace_id, id, bool_or(tok) tok, bool_or(cost) cost"
    "   FROM above GROUP BY 1, 2, 3, 4) u ON u.team_id = o.team_id AND u.part_time ="
    "   o.part_time AND u.trace_id = o.trace_id AND u.id = o.id"
    "  GROUP BY 1, 2, 3) s"
    " WHERE t.team_id = s.team_id AND t.part_time = s.part_time AND t.id = s.trace_id"
    " AND t.part_time = ANY ($1::timestamptz[]) AND s.kseq > coalesce(t.replaced_seq, -1)";

/* The status of a statement that failed with r: EB_ERR_UNAVAILABLE when the connection is
 * lost, EB_ERR_NOT_FOUND when its SQLSTATE is no_partition (how a day partition that does not
 * exist shows in that statement: the batch is tried again, the partition made anew),
 * EB_ERR_UNAVAILABLE too when PostgreSQL rolled the transaction back for another's sake
 * (class 40: deadlock, serialization failure) or cannot do the work now (read-only, disk full:
 * eb_db_state_unavailable), as eb_db_exec does: never the records' fault, so the batch is tried
 * again at once and, should that keep failing, put back for later (never dead-lettered); else
 * EB_ERR_DB. */
static eb_status statement_error(PGconn *c, const PGresult *r, const char *no_partition,
                                 const char *what)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    eb_status code = EB_ERR_DB;

    if (PQstatus(c) != CONNECTION_OK)
        code = EB_ERR_UNAVAILABLE;
    else if (state && strcmp(state, no_partition) == 0)
        code = EB_ERR_NOT_FOUND;
    else if (state && strncmp(state, "40", 2) == 0)
        code = EB_ERR_UNAVAILABLE;
    else if (eb_db_state_unavailable(state))
        code = EB_ERR_UNAVAILABLE;
    return eb_error(code, "%s%s", what, PQresultErrorMessage(r));
}

/* Runs one of the upsert path's statements into ingest.traces or ingest.observations, days
 * (pass_days) as $1: an unnamed statement, planned with that value, so that only those days'
 * partitions are. These tables have no CHECK constraints, so a check violation (23514) there
 * means that no partition takes a row: the day's partition was dropped after this process made
 * it. */
static eb_status exec_upsert(PGconn *c, const char *sql, const char *days)
{
    const char *params[1] = {days};
    PGresult *r = PQexecParams(c, sql, days ? 1 : 0, NULL, params, NULL, NULL, 0);
    ExecStatusType rs = PQresultStatus(r);
    eb_status st = EB_OK;

    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK)
        st = statement_error(c, r, "23514", "");
    PQclear(r);
    return st;
}

static eb_status copy_in(PGconn *c, const char *sql, const eb_buf *data)
{
    PGresult *r = PQexec(c, sql);
    eb_status st = EB_OK;

    if (PQresultStatus(r) != PGRES_COPY_IN) {
        /* the day partition COPYed into by name does not exist: undefined_table */
        st = statement_error(c, r, "42P01", "COPY: ");
        PQclear(r);
        return st;
    }
    PQclear(r);
    /* in pieces: libpq holds a message it is given whole in its output buffer, which then keeps
     * that size for the connection's life (a batch's COPY data is megabytes, on every pooled
     * connection a writer used) */
    for (size_t off = 0; off < data->len && st == EB_OK;) {
        size_t piece = data->len - off < COPY_PIECE ? data->len - off : COPY_PIECE;
        if (PQputCopyData(c, data->data + off, (int)piece) != 1)
            st = eb_error(EB_ERR_UNAVAILABLE, "COPY data: %s", PQerrorMessage(c));
        off += piece;
    }
    if (PQputCopyEnd(c, st == EB_OK ? NULL : "aborted") != 1 && st == EB_OK)
        st = eb_error(EB_ERR_UNAVAILABLE, "COPY end: %s", PQerrorMessage(c));
    while ((r = PQgetResult(c)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && st == EB_OK)
            st = statement_error(c, r, "", "COPY: ");
        PQclear(r);
    }
    return st;
}

/* Caller holds mu. */
static bool day_known_locked(const ingest_writer *w, long long day)
{
    for (int i = 0; i < w->nknown; i++)
        if (w->known_days[i] == day)
            return true;
    return false;
}

static bool partition_known(ingest_writer *w, long long part_ns)
{
    bool known;

    pthread_mutex_lock(&w->mu);
    known = day_known_locked(w, part_ns / DAY_NS);
    pthread_mutex_unlock(&w->mu);
    return known;
}

/* Forgets every day: their partitions are checked (CREATE IF NOT EXISTS) again when used. */
static void forget_days(ingest_writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->nknown = 0;
    pthread_mutex_unlock(&w->mu);
}

/* Records that the partitions of part_ns's day exist. */
static void remember_day(ingest_writer *w, long long part_ns)
{
    long long day = part_ns / DAY_NS;

    pthread_mutex_lock(&w->mu);
    if (!day_known_locked(w, day)) {
        if (w->nknown == (int)(sizeof(w->known_days) / sizeof(w->known_days[0])))
            w->nknown = 0; /* full: forget and re-check, CREATE IF NOT EXISTS is cheap enough */
        w->known_days[w->nknown++] = day;
    }
    pthread_mutex_unlock(&w->mu);
}

/* Creates the day partitions of traces and observations for part_ns, once per process. Each is
 * made as a table of its own and then attached: CREATE TABLE ... PARTITION OF would take the
 * parent's exclusive lock, and so wait behind any long reader of the parent (an export), with
 * every query and writer then queued behind it; ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE,
 * which lets readers and writers of the parent go on (the new table is empty: nothing to
 * check). Both in one transaction, under the advisory lock: a day is made whole or not at
 * all. */
static eb_status ensure_partition(ingest_writer *w, PGconn *c, long long part_ns)
{
    long long day = part_ns / DAY_NS;
    time_t t0 = (time_t)(day * 86400), t1 = t0 + 86400;
    struct tm a, b;
    char from[16], to[16], name[16], *sql;
    eb_status st;

    if (partition_known(w, part_ns))
        return EB_OK;
    gmtime_r(&t0, &a);
    gmtime_r(&t1, &b);
    strftime(from, sizeof(from), "%Y-%m-%d", &a);
    strftime(to, sizeof(to), "%Y-%m-%d", &b);
    strftime(name, sizeof(name), "%Y%m%d", &a);
    /* the bounds name their zone: a bare date would be read in the session's time zone */
#define MAKE_DAY(parent)                                                                           \
    " IF to_regclass('ingest." parent "_p%s') IS NULL THEN CREATE TABLE ingest." parent "_p%s"     \
    " (LIKE ingest." parent " INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE);"        \
    " ALTER TABLE ingest." parent " ATTACH PARTITION ingest." parent "_p%s FOR VALUES FROM"        \
    " ('%s 00:00:00+00') TO ('%s 00:00:00+00'); END IF;"
    sql = eb_asprintf("SELECT pg_advisory_xact_lock(7236002, 1);"
                      "DO $$BEGIN" MAKE_DAY("traces") MAKE_DAY("observations") " END$$",
                      name, name, name, from, to, name, name, name, from, to);
#undef MAKE_DAY
    st = eb_db_exec(c, "BEGIN", 0, NULL, NULL);
    if (st == EB_OK) {
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            char what[48];
            snprintf(what, sizeof(what), "creating partition %s: ", name);
            st = statement_error(c, r, "", what);
        }
        PQclear(r);
    }
    if (st == EB_OK)
        st = eb_db_commit(c);
    else
        eb_db_rollback(c);
    free(sql);
    if (st == EB_OK)
        remember_day(w, part_ns);
    return st;
}

/* Adds a quoted literal to an array literal buffer. */
static void array_item(eb_buf *a, const char *s)
{
    eb_buf_putc(a, a->len > 1 ? ',' : '{');
    eb_buf_putc(a, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            eb_buf_putc(a, '\\');
        eb_buf_putc(a, *s);
    }
    eb_buf_putc(a, '"');
}

/* The key order of a batch (handle_batch sorts it so): team, then trace id. */
static int key_cmp(const rec *x, const char *team, const char *id)
{
    int c = strcmp(x->r->envelope->team_id, team);

    return c ? c : strcmp(x->r->trace->id, id);
}

/* The index of this pass's record (not skipped) with key (team, id), or SIZE_MAX: a binary
 * search, recs[0..n) being in key order. */
static size_t pass_record(const rec *recs, size_t n, const char *team, const char *id)
{
    size_t lo = 0, hi = n;

    while (lo < hi) { /* the first record whose key is not below (team, id) */
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(&recs[mid], team, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < n && key_cmp(&recs[lo], team, id) == 0; lo++)
        if (!recs[lo].skip)
            return lo;
    return SIZE_MAX;
}

/* Closes an array literal begun by array_item and returns its text. */
static const char *array_end(eb_buf *a)
{
    eb_buf_putc(a, '}');
    return a->data;
}

/* The time a new trace is filed under (its partition, for good): its start; else, for an OTLP
 * fragment without its root span, the earliest start of its spans (the root, when it comes,
 * starts about then: a time window around the trace's start must find it); else its arrival.
 * A time more than ten years back or a day ahead counts as none. */
static long long file_time(const Evalbus__V1__IngestRecord *r, long long now)
{
    const Evalbus__V1__Trace *t = r->trace;
    long long start = t->start_time_unix_nano;

#define PLAUSIBLE(ns) ((ns) > 0 && (ns) >= now - 3650 * DAY_NS && (ns) <= now + DAY_NS)
    if (!PLAUSIBLE(start)) {
        start = 0;
        for (size_t k = 0; k < t->n_observations; k++) {
            long long s = t->observations[k]->start_time_unix_nano;
            if (PLAUSIBLE(s) && (start == 0 || s < start))
                start = s;
        }
    }
#undef PLAUSIBLE
    if (start <= 0)
        start = r->received_at_unix_ms * 1000000LL;
    if (start <= 0)
        start = now;
    return start;
}

/* The record a result row names: its column 0 is the 1-based ordinal of an array the statement
 * unnested WITH ORDINALITY from map[0..n) (record indexes). */
static eb_status row_record(const PGresult *r, int row, const size_t *map, size_t n,
                            const char *what, size_t *i)
{
    long long ord = atoll(eb_db_val(r, row, 0));

    if (ord < 1 || (size_t)ord > n)
        return eb_error(EB_ERR_INTERNAL, "%s: bad ordinal", what);
    *i = map[ord - 1];
    return EB_OK;
}

/* Assigns part_ns to every record of the pass, and opens the pass's transaction: new keys are
 * stored with their own day (whose partitions are created first, outside the transaction);
 * existing keys keep theirs (their partitions exist since they were first stored). One plain
 * INSERT ... ON CONFLICT DO NOTHING RETURNING stores the new keys (cheap to plan, one index
 * probe per key); only when some key was there already does a second statement read those
 * keys' days. recs is in key order (pass_record).
 *
 * Most passes hold only new traces, so the keys first go in by a plain INSERT (no ON CONFLICT,
 * no RETURNING), which costs PostgreSQL about two thirds as much (measured: 4.6-5.5 against
 * 7.2-7.9 us a key), as the transaction's first statement: if a key is stored already, it fails
 * with a unique violation (which PostgreSQL logs), the transaction, which holds nothing else, is
 * rolled back, and the pass takes the INSERT ... ON CONFLICT. Passes with OTLP records (whose
 * spans often add to a stored trace) take it directly, and so do the writer's next passes after
 * a plain INSERT failed. */
static eb_status resolve_part_times(ingest_writer *w, PGconn *c, rec *recs, size_t n)
{
    eb_buf teams = {0}, ids = {0}, times = {0};
    PGresult *r = NULL;
    eb_status st = EB_OK;
    long long now = now_ns();
    const char *params[3];
    size_t *old = NULL, n_old = 0;
    bool plain = true; /* every key new: try the plain INSERT first */

    for (size_t i = 0; i < n; i++) {
        const Evalbus__V1__Trace *t = recs[i].r->trace;
        long long start;
        char tt[48];
        if (recs[i].skip)
            continue;
        if (recs[i].r->source && strcmp(recs[i].r->source, "otlp") == 0)
            plain = false;
        start = file_time(recs[i].r, now);
        /* PostgreSQL keeps microseconds (it would round 23:59:59.9999996 up to the next day,
         * away from the partition the day is computed for here) */
        start -= start % 1000;
        recs[i].part_ns = start;
        recs[i].existed = true; /* until the INSERT returns its key */
        st = ensure_partition(w, c, start);
        if (st != EB_OK)
            goto cleanup;
        ingest_time_text(start, tt, sizeof(tt));
        array_item(&teams, recs[i].r->envelope->team_id);
        array_item(&ids, t->id);
        array_item(&times, tt);
    }
    st = eb_db_begin_system(c);
    if (st != EB_OK || teams.len == 0)
        goto cleanup;
    params[0] = array_end(&teams);
    params[1] = array_end(&ids);
    params[2] = array_end(&times);
    if (plain) {
        /* a pass that could go the plain way uses up one of the passes to skip, if any */
        int left = atomic_load(&w->plain_keys_skip);
        while (left > 0 && !atomic_compare_exchange_weak(&w->plain_keys_skip, &left, left - 1))
            ;
        plain = left <= 0;
    }
    if (plain) {
        st = eb_db_exec(c,
                        "INSERT INTO ingest.trace_keys (team_id, id, part_time)"
                        " SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])",
                        3, params, NULL);
        if (st == EB_OK) {
            for (size_t i = 0; i < n; i++)
                if (!recs[i].skip)
                    recs[i].existed = false; /* every key is new: its day is the one proposed */
            goto cleanup;
        }
        if (st != EB_ERR_CONFLICT)
            goto cleanup;
        atomic_store(&w->plain_keys_skip, 16);
        eb_db_rollback(c);
        st = eb_db_begin_system(c);
        if (st != EB_OK)
            goto cleanup;
    }
    st = eb_db_exec(c,
                    "INSERT INTO ingest.trace_keys (team_id, id, part_time)"
                    " SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])"
                    " ON CONFLICT DO NOTHING RETURNING team_id::text, id",
                    3, params, &r);
    if (st != EB_OK)
        goto cleanup;
    for (int row = 0; row < PQntuples(r); row++) {
        size_t i = pass_record(recs, n, eb_db_val(r, row, 0), eb_db_val(r, row, 1));
        if (i != SIZE_MAX)
            recs[i].existed = false; /* new: its day is the one proposed */
    }
    PQclear(r);
    r = NULL;
    /* keys stored before (or by another writer meanwhile): read their days */
    eb_buf_reset(&teams);
    eb_buf_reset(&ids);
    old = eb_malloc(n * sizeof(*old));
    for (size_t i = 0; i < n; i++) {
        if (recs[i].skip || !recs[i].existed)
            continue;
        old[n_old++] = i;
        array_item(&teams, recs[i].r->envelope->team_id);
        array_item(&ids, recs[i].r->trace->id);
    }
    if (n_old == 0)
        goto cleanup;
    params[0] = array_end(&teams);
    params[1] = array_end(&ids);
    /* FOR KEY SHARE: a deletion (which locks the key FOR UPDATE) cannot remove the trace
     * between this read and the upsert, which would leave a trace row without its key; one
     * under way is waited for, and its key is then missing here */
    st = eb_db_exec(c,
                    "SELECT u.ord, (extract(epoch FROM k.part_time)::numeric * 1000000000)::bigint"
                    " FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS u(team_id, id, ord)"
                    " JOIN ingest.trace_keys k ON k.team_id = u.team_id AND k.id = u.id"
                    " FOR KEY SHARE OF k",
                    2, params, &r);
    if (st != EB_OK)
        goto cleanup;
    if ((size_t)PQntuples(r) != n_old) {
        /* a key another writer is inserting, or a deletion removed, right now: retry the
         * pass */
        st = eb_error(EB_ERR_UNAVAILABLE, "trace key is being stored concurrently");
        goto cleanup;
    }
    for (int row = 0; row < PQntuples(r); row++) {
        size_t i;
        if ((st = row_record(r, row, old, n_old, "trace key lookup", &i)) != EB_OK)
            goto cleanup;
        recs[i].part_ns = atoll(eb_db_val(r, row, 1));
        /* a stored key's day has its partitions: whoever stored the key (this process before
         * a restart, another replica, a start time since changed) made them first, and
         * retention drops a day's keys with its partitions */
        remember_day(w, recs[i].part_ns);
    }
cleanup:
    PQclear(r);
    free(old);
    eb_buf_free(&teams);
    eb_buf_free(&ids);
    eb_buf_free(&times);
    return st;
}

/* Stores recs[0..n) (skipping those marked) inside the open transaction: one pass. */
static int cmp_obs_id(const void *a, const void *b)
{
    const Evalbus__V1__Observation *const *x = a, *const *y = b;

    return strcmp((*x)->id ? (*x)->id : "", (*y)->id ? (*y)->id : "");
}

/* True if the record's observations have distinct ids (COPY would refuse a repeated key). */
static bool observation_ids_distinct(const Evalbus__V1__Trace *t)
{
    Evalbus__V1__Observation **sorted;
    bool ok = true;

    if (t->n_observations < 2)
        return true;
    sorted = eb_malloc(t->n_observations * sizeof(*sorted));
    memcpy(sorted, t->observations, t->n_observations * sizeof(*sorted));
    qsort(sorted, t->n_observations, sizeof(*sorted), cmp_obs_id);
    for (size_t i = 1; i < t->n_observations && ok; i++)
        ok = cmp_obs_id(&sorted[i - 1], &sorted[i]) != 0;
    free(sorted);
    return ok;
}

/* Traces stored for the first time in this pass (their keys were inserted by this
 * transaction, so no row can conflict) go with COPY straight into their day's partitions, the
 * cheapest way into PostgreSQL. The day partitions carry no row-level security policies of
 * their own (the parent's apply to every query, which goes through the parent); that is what
 * lets this writer COPY into them. OTLP fragments and replaced traces take the upsert path. */
static eb_status copy_new(PGconn *c, rec *recs, size_t n)
{
    eb_status st = EB_OK;
    bool any = false;

    for (size_t i = 0; i < n; i++) {
        recs[i].direct = !recs[i].skip && !recs[i].existed &&
                         !(recs[i].r->source && strcmp(recs[i].r->source, "otlp") == 0) &&
                         observation_ids_distinct(recs[i].r->trace);
        any |= recs[i].direct;
    }
    /* the parents first, as every query and a retention pass's drop take them: a COPY into a
     * partition locks the partition and then its parent, and a drop of that day that took the
     * parents between the two waited for the partition while the COPY waited for the parents
     * (a deadlock, one side rolled back). A weak lock, compatible with every writer and reader. */
    if (any)
        st = eb_db_exec(c,
                        "LOCK TABLE ONLY ingest.traces, ONLY ingest.observations IN ROW EXCLUSIVE"
                        " MODE",
                        0, NULL, NULL);
    for (size_t i = 0; i < n && st == EB_OK; i++) {
        long long day;
        eb_buf *traces = &rows_traces, *obs = &rows_obs;
        char name[16], *sql;
        time_t t0;
        struct tm tm;

        if (!recs[i].direct)
            continue;
        day = recs[i].part_ns / DAY_NS;
        for (size_t j = 0; j < i; j++) /* this day was copied already */
            if (recs[j].direct && recs[j].part_ns / DAY_NS == day)
                goto next;
        eb_buf_reset(traces);
        eb_buf_reset(obs);
        for (size_t j = i; j < n; j++) {
            if (!recs[j].direct || recs[j].part_ns / DAY_NS != day)
                continue;
            trace_row(traces, &recs[j]);
            for (size_t k = 0; k < recs[j].r->trace->n_observations; k++)
                observation_row(obs, &recs[j], recs[j].r->trace->observations[k]);
        }
        t0 = (time_t)(day * 86400);
        gmtime_r(&t0, &tm);
        strftime(name, sizeof(name), "%Y%m%d", &tm);
        sql = eb_asprintf("COPY ingest.traces_p%s (" TRACE_COLS ") FROM STDIN", name);
        st = copy_in(c, sql, traces);
        free(sql);
        if (st == EB_OK && obs->len) {
            sql = eb_asprintf("COPY ingest.observations_p%s (" OBS_COLS ") FROM STDIN", name);
            st = copy_in(c, sql, obs);
            free(sql);
        }
    next:;
    }
    return st;
}

/* A record from a project-restricted key may change a stored trace of its project only: another
 * project's trace is not that key's to replace or merge into (EB_ERR_FORBIDDEN, so the batch is
 * retried one by one and this record dead-lettered with the reason). */
static eb_status check_projects(PGconn *c, const rec *recs, size_t n)
{
    eb_status st = EB_OK;

    for (size_t i = 0; i < n && st == EB_OK; i++) {
        const char *only = recs[i].r->restricted_project;
        char day[48];
        const char *p[4] = {recs[i].r->envelope->team_id, recs[i].r->trace->id, only, day};
        PGresult *r = NULL;

        if (recs[i].skip || !recs[i].existed || !only || !*only)
            continue;
        /* the key's part_time (read by resolve_part_times) as a constant: only that day's
         * partition is planned */
        ingest_time_text(recs[i].part_ns, day, sizeof(day));
        st = eb_db_exec(c,
                        "SELECT t.project FROM ingest.trace_keys k JOIN ingest.traces t ON"
                        " t.team_id = k.team_id AND t.part_time = k.part_time AND t.id = k.id"
                        " WHERE k.team_id = $1::uuid AND k.id = $2 AND t.project <> $3"
                        " AND t.part_time = $4::timestamptz",
                        4, p, &r);
        if (st == EB_OK && PQntuples(r) > 0) {
            char *why = ingest_project_refusal(recs[i].r->trace->id, eb_db_val(r, 0, 0), only);
            st = eb_error(EB_ERR_FORBIDDEN, "%s", why);
            free(why);
        }
        PQclear(r);
    }
    return st;
}

/* Step 2b: the pass's records of traces deleted since the stream took them. A deletion leaves
 * a tombstone with the stream's position at the time (ingest.trace_tombstones, api_delete.c);
 * a record at or below it is not stored (marked gone and skipped, and acknowledged with the
 * rest), so that records on their way when their trace was deleted, and records delivered again
 * (a batch whose acknowledgement was lost, a consumer made again), do not bring it back; a
 * record sent after the deletion is later in the stream and is stored. The keys are in by now
 * (resolve_part_times): a deletion committed before this statement is seen here, and one not
 * yet committed locks the key after this pass (it waits for the key share, or for the key this
 * pass inserts) and then deletes what the pass stores. The keys this pass made for such records
 * go again. The statement is one index probe per record, on a table holding only the last few
 * days' deletions. */
static eb_status drop_deleted(PGconn *c, rec *recs, size_t n)
{
    eb_buf teams = {0}, ids = {0}, seqs = {0};
    size_t *at = eb_malloc((n ? n : 1) * sizeof(*at)), m = 0, made = 0, some = 0;
    const char *params[3];
    PGresult *r = NULL;
    eb_status st = EB_OK;

    for (size_t i = 0; i < n; i++) {
        char seq[24];
        if (recs[i].skip)
            continue;
        snprintf(seq, sizeof(seq), "%llu", recs[i].seq);
        at[m++] = i;
        array_item(&teams, recs[i].r->envelope->team_id);
        array_item(&ids, recs[i].r->trace->id);
        array_item(&seqs, seq);
    }
    if (m == 0)
        goto cleanup;
    params[0] = array_end(&teams);
    params[1] = array_end(&ids);
    params[2] = array_end(&seqs);
    st = eb_db_exec(c,
                    "SELECT u.ord FROM unnest($1::uuid[], $2::text[], $3::bigint[]) WITH"
                    " ORDINALITY AS u(team_id, id, seq, ord) JOIN ingest.trace_tombstones x ON"
                    " x.team_id = u.team_id AND x.id = u.id AND x.deleted_seq >= u.seq",
                    3, params, &r);
    if (st != EB_OK || PQntuples(r) == 0)
        goto cleanup;
    eb_buf_reset(&teams);
    eb_buf_reset(&ids);
    for (int row = 0; row < PQntuples(r); row++) {
        size_t i;
        if ((st = row_record(r, row, at, m, "tombstone lookup", &i)) != EB_OK)
            goto cleanup;
        some = i;
        recs[i].gone = true;
        recs[i].skip = true;
        if (!recs[i].existed) {
            array_item(&teams, recs[i].r->envelope->team_id);
            array_item(&ids, recs[i].r->trace->id);
            made++;
        }
    }
    eb_log_info(NULL,
                "writer: %d records of traces deleted after the stream took them (trace %s of "
                "team %s among them) are not stored",
                PQntuples(r), recs[some].r->trace->id, recs[some].r->envelope->team_id);
    if (made > 0) {
        params[0] = array_end(&teams);
        params[1] = array_end(&ids);
        st = eb_db_exec(c,
                        "DELETE FROM ingest.trace_keys k USING unnest($1::uuid[], $2::text[]) AS"
                        " u(team_id, id) WHERE k.team_id = u.team_id AND k.id = u.id",
                        2, params, NULL);
    }
cleanup:
    PQclear(r);
    free(at);
    eb_buf_free(&teams);
    eb_buf_free(&ids);
    eb_buf_free(&seqs);
    return st;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;

    return (x > y) - (x < y);
}

/* The distinct part_time values of the pass's records that take the upsert path, as an array
 * literal in days (the upsert statements' $1: see upsert_traces). */
static void pass_days(eb_buf *days, const rec *recs, size_t n)
{
    long long *t = eb_malloc((n ? n : 1) * sizeof(*t));
    size_t m = 0;

    for (size_t i = 0; i < n; i++)
        if (!recs[i].skip && !recs[i].direct)
            t[m++] = recs[i].part_ns;
    qsort(t, m, sizeof(*t), cmp_ll);
    eb_buf_reset(days);
    for (size_t i = 0; i < m; i++) {
        char tt[48];
        if (i > 0 && t[i] == t[i - 1])
            continue;
        ingest_time_text(t[i], tt, sizeof(tt));
        array_item(days, tt);
    }
    if (days->len == 0)
        eb_buf_putc(days, '{');
    array_end(days);
    free(t);
}

static eb_status store_pass(PGconn *c, rec *recs, size_t n)
{
    eb_buf *traces = &rows_traces, *obs = &rows_obs, days = {0};
    const char *day_list; /* the upsert statements' $1 (pass_days) */
    eb_status st;
    bool existing = false, merges = false;

    st = check_projects(c, recs, n);
    if (st == EB_OK)
        st = copy_new(c, recs, n);
    eb_buf_reset(traces);
    eb_buf_reset(obs);
    for (size_t i = 0; i < n && st == EB_OK; i++) {
        if (recs[i].skip || recs[i].direct)
            continue;
        existing |= recs[i].existed;
        merges |= recs[i].r->source && strcmp(recs[i].r->source, "otlp") == 0;
        trace_row(traces, &recs[i]);
        for (size_t k = 0; k < recs[i].r->trace->n_observations; k++)
            observation_row(obs, &recs[i], recs[i].r->trace->observations[k]);
    }
    if (st != EB_OK || traces->len == 0)
        return st; /* everything went in directly */
    pass_days(&days, recs, n);
    day_list = days.data;
    {
        /* the upsert path's temporary tables (once per session; inside the transaction, so a
         * rollback takes them away and the next pass makes them again) */
        PGresult *tr = PQexec(c, tmp_sql);
        st = PQresultStatus(tr) == PGRES_COMMAND_OK
                 ? EB_OK
                 : statement_error(c, tr, "", "temporary tables: ");
        PQclear(tr);
    }
    if (st == EB_OK)
        st = copy_in(c, "COPY tmp_traces (" TRACE_COLS ") FROM STDIN", traces);
    if (st == EB_OK)
        st = exec_upsert(c, upsert_traces, NULL);
    if (st == EB_OK && obs->len)
        st = copy_in(c, "COPY tmp_observations (" OBS_COLS ") FROM STDIN", obs);
    /* only traces stored before can have stale observations; only OTLP traces merge */
    if (st == EB_OK && obs->len)
        st = existing || merges ? exec_upsert(c, upsert_observations, day_list)
                                : exec_upsert(c, insert_observations, NULL);
    if (st == EB_OK && existing)
        st = eb_db_exec(c, drop_replaced_observations, 1, &day_list, NULL);
    if (st == EB_OK && (merges || existing))
        st = eb_db_exec(c, recompute_sql, 1, &day_list, NULL);
    /* the temporary tables empty themselves at COMMIT (ON COMMIT DELETE ROWS) */
    eb_buf_free(&days);
    return st;
}

/* Marks recs[i].skip for records that are done or whose key an earlier record of this pass
 * already has: recs is in key order (cmp_rec_key), so records of one key are next to each
 * other, the earliest in the stream first. */
static void plan_pass(rec *recs, size_t n, const bool *done)
{
    const rec *taken = NULL; /* this pass's record of the key at hand */

    for (size_t i = 0; i < n; i++) {
        if (!done[i])
            recs[i].gone = false; /* drop_deleted decides again */
        recs[i].skip = done[i] || (taken && key_cmp(taken, recs[i].r->envelope->team_id,
                                                    recs[i].r->trace->id) == 0);
        if (!recs[i].skip)
            taken = &recs[i];
    }
}

/* By team, trace id, then stream order (so a pass still takes a key's earliest record). */
static int cmp_rec_key(const void *a, const void *b)
{
    const rec *x = a, *y = b;
    int c = key_cmp(x, y->r->envelope->team_id, y->r->trace->id);

    return c ? c : (x->seq > y->seq) - (x->seq < y->seq);
}

/* Stores a batch, in key order (cmp_rec_key), in one transaction per pass without repeated
 * keys. */
static eb_status store_batch(ingest_writer *w, PGconn *c, rec *recs, size_t n)
{
    eb_status st = EB_OK;
    bool *done = eb_calloc(n ? n : 1, sizeof(bool));
    size_t left = n;

    while (st == EB_OK && left > 0) {
        /* a pass: the first not-done record of each key, in stream order */
        plan_pass(recs, n, done);
        st = resolve_part_times(w, c, recs, n); /* opens the pass's transaction */
        if (st == EB_OK)
            st = drop_deleted(c, recs, n);
        if (st == EB_OK)
            st = store_pass(c, recs, n);
        if (st == EB_OK)
            st = eb_db_commit(c);
        if (st != EB_OK)
            break;
        for (size_t i = 0; i < n; i++)
            if (!done[i] && (!recs[i].skip || recs[i].gone)) {
                done[i] = true;
                left--;
            }
    }
    if (st != EB_OK)
        eb_db_rollback(c);
    if (st == EB_ERR_NOT_FOUND) {
        /* a day partition this process made was dropped since (retention, or by hand): forget
         * the days it knows, and let the batch come back; the next pass makes the day again.
         * The failed pass's days are made here, those of stored keys too: a key that outlived
         * its day (partitions dropped by hand) names a day no new trace would make again */
        forget_days(w);
        for (size_t i = 0; i < n; i++)
            if (!recs[i].skip && recs[i].part_ns > 0 &&
                ensure_partition(w, c, recs[i].part_ns) != EB_OK)
                break; /* PostgreSQL failed: the batch comes back later */
        st = eb_error(EB_ERR_UNAVAILABLE, "a day partition was dropped meanwhile; trying again");
    }
    free(done);
    return st;
}

static void dead_letter(eb_bus *bus, natsMsg *msg, const char *team, const char *reason)
{
    char subject[200];

    snprintf(subject, sizeof(subject), INGEST_DEAD_PREFIX "%s", team && *team ? team : "unknown");
    ingest_dead_letter(eb_bus_conn(bus), subject, msg, "writer", reason, NULL);
    eb_metrics_add("evalbus_ingest_dead_letters_total", "stage=\"writer\"", 1);
}

/* TracesStored events of one team for ids[0..n) (sorted, each once), as many as the server's
 * max_payload asks for. */
static void publish_stored_ids(eb_bus *bus, const char *team_id, const char *subject, char **ids,
                               size_t n)
{
    natsConnection *nc = eb_bus_conn(bus);
    int64_t room = natsConnection_GetMaxPayload(nc) - 512; /* the envelope and the framing */

    for (size_t from = 0; from < n;) {
        Evalbus__V1__TracesStored ev = EVALBUS__V1__TRACES_STORED__INIT;
        Evalbus__V1__Envelope env = EVALBUS__V1__ENVELOPE__INIT;
        char event_id[37];
        size_t to = from, len;
        int64_t bytes = 0;
        uint8_t *buf;
        struct timeval tv;
        natsStatus s;

        /* an id takes its bytes plus a tag and a length of at most 3 bytes */
        while (to < n && (to == from || bytes + (int64_t)strlen(ids[to]) + 4 <= room))
            bytes += (int64_t)strlen(ids[to++]) + 4;
        eb_uuid_v4(event_id);
        gettimeofday(&tv, NULL);
        env.event_id = event_id;
        env.team_id = (char *)team_id;
        env.occurred_at_unix_ms = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
        env.schema_version = 1;
        ev.envelope = &env;
        ev.trace_ids = ids + from;
        ev.n_trace_ids = to - from;
        len = evalbus__v1__traces_stored__get_packed_size(&ev);
        buf = eb_malloc(len);
        evalbus__v1__traces_stored__pack(&ev, buf);
        s = natsConnection_Publish(nc, subject, buf, (int)len);
        if (s != NATS_OK)
            eb_log_warn(NULL, "writer: stored event of %zu traces on %s not sent: %s", to - from,
                        subject, natsStatus_GetText(s));
        free(buf);
        from = to;
    }
}

static void publish_stored(eb_bus *bus, rec *recs, size_t n)
{
    /* one event per team in the batch (more if it would not fit a message), each trace once
     * however many of its records the batch had: recs are in key order (team, then trace id),
     * so a team's records are next to each other and its ids come sorted */
    char **ids = eb_malloc((n ? n : 1) * sizeof(char *));

    for (size_t i = 0, j; i < n; i = j) {
        const char *team = recs[i].r->envelope->team_id, *slug = NULL;
        char subject[160];
        size_t nids = 0;

        for (j = i; j < n && strcmp(recs[j].r->envelope->team_id, team) == 0; j++) {
            if (!recs[j].stored || recs[j].gone)
                continue;
            if (nids == 0 || strcmp(ids[nids - 1], recs[j].r->trace->id) != 0)
                ids[nids++] = recs[j].r->trace->id;
            if (!slug)
                slug = recs[j].r->team_slug;
        }
        if (nids == 0)
            continue;
        snprintf(subject, sizeof(subject), STORED_SUBJECT_PREFIX "%s", slug ? slug : "unknown");
        publish_stored_ids(bus, team, subject, ids, nids);
    }
    free(ids);
}

/* The heartbeat: once a batch has been in store_batch for half the consumer's AckWait, its
 * messages are told "in progress" (+WPI, which starts their AckWait again), and again every half
 * AckWait until it is done. A batch that waits for a lock or a slow PostgreSQL is then not
 * delivered to another writer while it runs (which would only wait behind the same lock and
 * store it again); a writer that dies stops its heartbeat, and its batch comes back after the
 * AckWait as before. One thread for all the writer threads, ticking every 250 ms. */
#define HEARTBEAT_MS (INGEST_WRITER_ACK_WAIT_MS / 2)

static void heartbeat_begin(writer_thread *t, rec *recs, size_t n)
{
    pthread_mutex_lock(&t->hb_mu);
    t->hb_recs = recs;
    t->hb_n = n;
    t->hb_start_ms = t->hb_at_ms = eb_monotonic_ms();
    t->hb_beats = 0;
    pthread_mutex_unlock(&t->hb_mu);
}

static void heartbeat_end(writer_thread *t)
{
    pthread_mutex_lock(&t->hb_mu);
    if (t->hb_beats > 0)
        eb_log_info(NULL,
                    "writer %d: a batch of %zu records took %lld ms, kept in progress %d times",
                    t->index, t->hb_n, eb_monotonic_ms() - t->hb_start_ms, t->hb_beats);
    t->hb_recs = NULL;
    t->hb_n = 0;
    pthread_mutex_unlock(&t->hb_mu);
}

static void *heartbeat_main(void *arg)
{
    ingest_writer *w = arg;

    pthread_setname_np(pthread_self(), "writer-beat");
    while (!atomic_load(&w->stop)) {
        usleep(250000);
        for (int i = 0; i < w->nthreads; i++) {
            writer_thread *t = &w->threads[i];
            long long now = eb_monotonic_ms();
            pthread_mutex_lock(&t->hb_mu);
            if (t->hb_recs && now - t->hb_at_ms >= HEARTBEAT_MS) {
                for (size_t k = 0; k < t->hb_n; k++)
                    if (t->hb_recs[k].msg)
                        natsMsg_InProgress(t->hb_recs[k].msg, NULL);
                t->hb_at_ms = now;
                if (t->hb_beats++ == 0)
                    eb_log_info(NULL,
                                "writer %d: a batch of %zu records is taking longer than %d ms;"
                                " keeping it in progress",
                                t->index, t->hb_n, HEARTBEAT_MS);
            }
            pthread_mutex_unlock(&t->hb_mu);
        }
    }
    return NULL;
}

static void handle_batch(writer_thread *t, natsMsgList *list, eb_arena *arena)
{
    ingest_writer *w = t->w;
    eb_bus *bus = t->bus;
    ingest_ctx *ctx = w->ctx;
    rec *recs = eb_calloc((size_t)list->Count, sizeof(rec));
    size_t n = 0;
    PGconn *c = NULL;
    eb_status st = EB_OK; /* a fetch of undecodable records only stores nothing */
    /* the batch's records die together: unpacked into one arena, freed in one call */
    ProtobufCAllocator al = eb_arena_pb_allocator(arena);

    for (int i = 0; i < list->Count; i++) {
        natsMsg *m = list->Msgs[i];
        jsMsgMetaData *meta = NULL;
        Evalbus__V1__IngestRecord *r = evalbus__v1__ingest_record__unpack(
            &al, (size_t)natsMsg_GetDataLength(m), (const uint8_t *)natsMsg_GetData(m));

        if (!r || !r->envelope || !r->envelope->team_id || !eb_uuid_valid(r->envelope->team_id) ||
            !r->trace || !r->trace->id || !*r->trace->id ||
            natsMsg_GetMetaData(&meta, m) != NATS_OK) {
            eb_log_error(NULL, "writer: undecodable record on %s; dead-lettered",
                         natsMsg_GetSubject(m));
            dead_letter(bus, m, NULL, "undecodable IngestRecord");
            natsMsg_Term(m, NULL);
            jsMsgMetaData_Destroy(meta);
            continue;
        }
        recs[n].msg = m;
        recs[n].r = r;
        recs[n].seq = (unsigned long long)meta->Sequence.Stream;
        jsMsgMetaData_Destroy(meta);
        n++;
    }
    if (n == 0)
        goto cleanup;
    /* every writer takes its rows' locks in (team, trace id) order, so two writers storing
     * fragments of the same traces wait for each other instead of deadlocking */
    qsort(recs, n, sizeof(*recs), cmp_rec_key);
    c = eb_db_get(ctx->svc.db);
    if (!c) {
        st = EB_ERR_UNAVAILABLE;
    } else {
        heartbeat_begin(t, recs, n);
        st = store_batch(w, c, recs, n);
        /* rolled back while the connection is fine (a deadlock or serialization failure, a
         * key stored concurrently, a partition dropped meanwhile): again at once, a few times
         * (what a pass committed is stored again unchanged: upserts by stream sequence) */
        for (int again = 0; again < 3 && (st == EB_ERR_CONFLICT || st == EB_ERR_UNAVAILABLE) &&
                            PQstatus(c) == CONNECTION_OK;
             again++) {
            eb_log_info(NULL, "writer: batch of %zu rolled back (%s); storing it again", n,
                        eb_error_message());
            st = store_batch(w, c, recs, n);
        }
        if (st != EB_OK && st != EB_ERR_UNAVAILABLE) {
            /* isolate the record that fails: one by one (still kept in progress: each record
             * is settled under the heartbeat's lock) */
            eb_log_warn(NULL, "writer: batch of %zu failed (%s); retrying one by one", n,
                        eb_error_message());
            st = EB_OK;
            for (size_t i = 0; i < n; i++) {
                eb_status one = store_batch(w, c, &recs[i], 1);
                if (one == EB_ERR_UNAVAILABLE) {
                    st = one;
                    break;
                }
                if (one != EB_OK) {
                    eb_log_error(NULL, "writer: trace %s of team %s cannot be stored: %s",
                                 recs[i].r->trace->id, recs[i].r->envelope->team_id,
                                 eb_error_message());
                    dead_letter(bus, recs[i].msg, recs[i].r->team_slug, eb_error_message());
                }
                pthread_mutex_lock(&t->hb_mu);
                if (one != EB_OK) {
                    natsMsg_Term(recs[i].msg, NULL);
                } else {
                    natsMsg_Ack(recs[i].msg, NULL);
                    recs[i].stored = true;
                }
                recs[i].msg = NULL;
                pthread_mutex_unlock(&t->hb_mu);
            }
            heartbeat_end(t);
        } else {
            heartbeat_end(t); /* the messages are the writer's again: acknowledged or put back */
            for (size_t i = 0; i < n && st == EB_OK; i++) {
                natsMsg_Ack(recs[i].msg, NULL);
                recs[i].msg = NULL;
                recs[i].stored = true;
            }
        }
    }
    {
        /* what was committed is counted and announced, also when PostgreSQL went away in the
         * middle of a one-by-one retry */
        size_t stored = 0;
        size_t gone = 0;
        for (size_t i = 0; i < n; i++) {
            stored += recs[i].stored && !recs[i].gone;
            gone += recs[i].stored && recs[i].gone;
        }
        if (gone > 0)
            eb_metrics_add("evalbus_ingest_deleted_records_total", NULL, (double)gone);
        if (stored > 0) {
            eb_metrics_add("evalbus_ingest_traces_stored_total", NULL, (double)stored);
            publish_stored(bus, recs, n);
        }
    }
    if (st != EB_OK) {
        size_t waiting = 0;
        pthread_mutex_lock(&w->mu);
        snprintf(w->last_error, sizeof(w->last_error), "%s", eb_error_message());
        pthread_mutex_unlock(&w->mu);
        atomic_store(&w->last_error_ms, now_ns() / 1000000);
        for (size_t i = 0; i < n; i++)
            if (recs[i].msg) {
                natsMsg_NakWithDelay(recs[i].msg, 1000, NULL);
                waiting++;
            }
        eb_log_warn(NULL, "writer: %zu records wait for PostgreSQL: %s", waiting,
                    eb_error_message());
        eb_metrics_add("evalbus_ingest_writer_retries_total", NULL, 1);
    }
cleanup:
    if (c)
        eb_db_put(ctx->svc.db, c);
    eb_arena_reset(arena); /* every record of the batch */
    free(recs);
    if (st != EB_OK && n > 0)
        sleep(1); /* back off while PostgreSQL is away */
}

/* Whether the writer consumer, or its stream, is known to be gone (not a lookup that failed
 * otherwise). A fetch from a deleted stream times out like an idle one, so this lookup is what
 * finds either. */
static bool consumer_missing(eb_bus *bus)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s =
        js_GetConsumerInfo(&ci, eb_bus_js(bus), INGEST_STREAM, INGEST_WRITER_DURABLE, NULL, &jerr);

    jsConsumerInfo_Destroy(ci);
    return s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr || jerr == JSConsumerNotFoundErr;
}

static void *writer_main(void *arg)
{
    writer_thread *t = arg;
    ingest_writer *w = t->w;
    ingest_ctx *ctx = w->ctx;
    natsSubscription *sub = NULL;
    jsSubOptions so;
    jsErrCode jerr = 0;
    natsStatus s;
    char name[64];
    int failures = 0, idle = 0;
    bool remake = false; /* make the stream and consumer again before binding */
    eb_arena *arena = eb_arena_new();

    /* Each writer pulls on a connection of its own: pulls of several threads never share
     * one connection's state, and the service's loop never waits on a writer. */
    snprintf(name, sizeof(name), "writer-%d", t->index);
    /* named before connecting: nats.c's threads for this connection inherit the name */
    pthread_setname_np(pthread_self(), name);
    /* the writers yield the CPU to the intake (the loop and decode threads, whose waits are a
     * caller's latency): what they are behind, the stream holds. Linux nice values are per
     * thread; raising one needs no privilege. */
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), WRITER_NICE);
    snprintf(name, sizeof(name), "evalbus-ingest-writer-%d", t->index);
    while (!atomic_load(&w->stop) &&
           eb_bus_connect(NULL, ctx->cfg->svc.nats_url, name, 0, &t->bus) != EB_OK)
        sleep(1);
    jsSubOptions_Init(&so);
    so.Stream = INGEST_STREAM;
    so.Consumer = INGEST_WRITER_DURABLE;
    while (!atomic_load(&w->stop) && t->bus) {
        natsMsgList list = {0};
        if (!sub) {
            /* a consumer (or stream) gone since start-up, deleted by hand, is made again */
            if (remake)
                ingest_streams_ensure_on(t->bus, ctx->cfg);
            s = js_PullSubscribe(&sub, eb_bus_js(t->bus), INGEST_SUBJECT_PREFIX ">",
                                 INGEST_WRITER_DURABLE, NULL, &so, &jerr);
            if (s != NATS_OK) {
                eb_log_warn(NULL, "writer %d: cannot bind to %s/%s yet: %s", t->index,
                            INGEST_STREAM, INGEST_WRITER_DURABLE, natsStatus_GetText(s));
                sub = NULL;
                remake = true;
                sleep(1);
                continue;
            }
            remake = false;
            failures = 0;
        }
        s = natsSubscription_Fetch(&list, sub, (int)ctx->cfg->writer_batch, 250, &jerr);
        if (s == NATS_OK && list.Count > 0) {
            failures = 0;
            idle = 0;
            handle_batch(t, &list, arena);
            writer_keep_buffers(WRITER_KEEP_BYTES);
        } else if (s == NATS_OK || s == NATS_TIMEOUT) {
            /* nothing to fetch; a deleted consumer looks the same, so it is looked up now and
             * then while idle */
            failures = 0;
            if (++idle % WRITER_IDLE_CHECK == 0 && consumer_missing(t->bus)) {
                eb_log_warn(NULL, "writer %d: stream or consumer %s/%s is gone; making it again",
                            t->index, INGEST_STREAM, INGEST_WRITER_DURABLE);
                remake = true;
            }
        } else if (++failures >= WRITER_REBIND_AFTER) {
            /* the consumer (or the stream) was deleted, or NATS is away: bind anew */
            eb_log_warn(NULL, "writer %d: fetching from %s/%s keeps failing (%s); binding again",
                        t->index, INGEST_STREAM, INGEST_WRITER_DURABLE, natsStatus_GetText(s));
            remake = true;
        } else {
            usleep(200000);
        }
        if (remake) {
            natsSubscription_Unsubscribe(sub);
            natsSubscription_Destroy(sub);
            sub = NULL;
        }
        natsMsgList_Destroy(&list);
    }
    if (sub) {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
    }
    eb_bus_close(t->bus);
    t->bus = NULL;
    eb_arena_free(arena);
    writer_keep_buffers(0);
    return NULL;
}

ingest_writer *ingest_writer_start(ingest_ctx *ctx)
{
    ingest_writer *w = eb_calloc(1, sizeof(*w));

    w->ctx = ctx;
    pthread_mutex_init(&w->mu, NULL);
    w->nthreads = (int)ctx->cfg->writer_threads;
    if (w->nthreads > MAX_WRITER_THREADS)
        w->nthreads = MAX_WRITER_THREADS;
    eb_metrics_describe("evalbus_ingest_traces_stored_total", "counter",
                        "Trace records committed to PostgreSQL");
    eb_metrics_describe("evalbus_ingest_writer_retries_total", "counter",
                        "Writer batches put back because PostgreSQL was unavailable");
    eb_metrics_describe("evalbus_ingest_deleted_records_total", "counter",
                        "Records not stored because their trace was deleted after the stream "
                        "took them");
    eb_metrics_describe("evalbus_ingest_dead_letters_total", "counter",
                        "Messages moved to evalbus.v1.ingest.dead.<team>, by stage");
    for (int i = 0; i < w->nthreads; i++) {
        w->threads[i].w = w;
        w->threads[i].index = i;
        pthread_mutex_init(&w->threads[i].hb_mu, NULL);
        pthread_create(&w->threads[i].tid, NULL, writer_main, &w->threads[i]);
    }
    w->heartbeat_on =
        w->nthreads > 0 && pthread_create(&w->heartbeat, NULL, heartbeat_main, w) == 0;
    return w;
}

void ingest_writer_stop(ingest_writer *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, true);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i].tid, NULL);
    if (w->heartbeat_on)
        pthread_join(w->heartbeat, NULL);
    for (int i = 0; i < w->nthreads; i++)
        pthread_mutex_destroy(&w->threads[i].hb_mu);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

bool ingest_writer_healthy(ingest_writer *w, char *detail, size_t len)
{
    long long last = atomic_load(&w->last_error_ms);
    bool ok = last == 0 || now_ns() / 1000000 - last > 5000;

    if (!ok) {
        pthread_mutex_lock(&w->mu);
        snprintf(detail, len, "writer is waiting for PostgreSQL: %s", w->last_error);
        pthread_mutex_unlock(&w->mu);
    }
    return ok;
}
