/* ingest.c -- end-to-end ingest throughput (HTTP JSON and NATS protobuf) next to a raw COPY.
 *
 *   ingest --http-team SLUG --nats-team SLUG [--traces N] [--batch B] [--inflight F]
 *          [--pid INGEST_PID] [--nats-pid PID] [--pg-pid POSTMASTER_PID] [--paced-seconds S]
 *          [--timeout SECONDS] [--sustained N]
 *
 * Addresses and credentials come from the environment, never the command line (where ps shows
 * them): EVALBUS_INGEST_URL, EVALBUS_NATS_URL, EVALBUS_DATABASE_URL (as scripts/stack writes them
 * to stack.env), and the API keys of the two teams in BENCH_INGEST_HTTP_KEY and
 * BENCH_INGEST_NATS_KEY (traces:write; a tier without a rate limit). N defaults to
 * BENCH_INGEST_TRACES or 50000, B to 100, F to 8, S to 15 (about 1,000 requests, so that p99 is
 * not one unlucky request), the timeout of each phase to 60 s.
 *
 * --sustained N runs phases 1, 2 and 4 only, with N traces each (whatever --traces says), names
 * the figures ingest_http_sustained and ingest_nats_sustained, and gives each phase at least
 * N / 1000 seconds. The default size (50,000 traces, about 75 MB of trace rows) makes a COPY of
 * about a second into a table that the checkpoint before it left clean and that fits in
 * shared_buffers: a burst, and the baseline's fastest case. bench/run's sustained run (200,000
 * traces, about 300 MB of rows, more than the stack's 256 MB of shared_buffers) takes PostgreSQL
 * past that, for the pipeline and the COPY alike: what sustained ingest meets.
 *
 * Every trace is generated from (run tag, phase, index) by one generator, so the HTTP JSON
 * body, the NATS TraceBatch and the COPY row of trace i carry the same content: a system, a user
 * and an assistant message, one tool call (in the assistant message and at the trace level, with
 * its result), metadata, tags, and one or two observations (a generation, sometimes a tool span);
 * about 2 KB as JSON. Ids are fresh in every run. Each phase makes all its bodies (JSON or packed
 * TraceBatch) before its clock starts, as the baseline makes its rows before its COPY: what is
 * measured is the service, not the client's generating and encoding.
 *
 * Phases, one after the other, each ending when all its traces are committed:
 *   1. ingest_http: N traces in batches of B POSTed to INGEST_URL/api/v1/traces with F requests
 *      in flight (libcurl multi, one thread); every answer must be 202. The clock runs from the
 *      first send until the team's rows in ingest.traces number N more than before the phase
 *      (SELECT count(*) FROM ingest.traces WHERE team_id = $1, with libpq). The writer's
 *      evalbus.v1.traces.stored.<team> events say when to count, and the last of them when the
 *      last COMMIT happened (see wait_committed); BENCH_INGEST_POLL_TRACES=1 polls the count
 *      every 50 ms instead.
 *   2. ingest_nats: the same N traces as TraceBatch messages to evalbus.v1.ingest.traces.<slug>,
 *      F threads doing request/reply on one connection; every IngestAck must accept all B.
 *   After each of 1 and 2 a line gives the CPU time per trace of the ingest service (--pid),
 *   nats-server (--nats-pid), PostgreSQL (--pg-pid: the postmaster with all its children) and
 *   this client, and how busy the machine was, from the first send until all were counted
 *   (see cpu_now): where the cost of a trace goes, which the rate alone does not say.
 *   3. ingest_rss: VmHWM of the ingest process (its peak RSS since start, which covers 1 and 2).
 *   4. baseline: N rows like phase 1's COPYed straight into ingest.traces (the writer's column
 *      set and text format) under a random team id, in one transaction, timed from BEGIN to the
 *      end of COMMIT; three times (own ids each time), the median is the figure (a single ~2 s
 *      COPY moved by +-15 % between runs here). Run as the PostgreSQL superuser (see
 *      baseline_copy): PostgreSQL refuses COPY FROM into a table under row-level security,
 *      which ingest.traces forces.
 *   5. ingest_http_p99: batches sent at a fixed rate of half the ingest_http figure for S seconds
 *      (after 2 s at that rate that are not measured);
 *      a request's latency runs from its scheduled send time (so a stall is not hidden) to the
 *      end of its answer. ingest_visible_p99, in the same phase: from a batch's 202 until the
 *      writer's stored event for the last of its traces arrived (published after the COMMIT, so
 *      an upper bound of when a read finds them: read-your-writes).
 * Each phase starts with a warm-up of two batches (credential cache, partitions, connections).
 * Before each measured phase (and each baseline COPY) the database is quiesced: a CHECKPOINT,
 * then a wait until no autovacuum worker is busy (see quiesce), so that no phase pays for the
 * writes and the vacuuming left by the one before it.
 * Any error (a non-202 answer, a refused NATS batch, a timeout, rows that never arrive) stops the
 * run with a message on stderr and exit status 1; a figure is printed only once measured.
 * Afterwards the rows of the teams used here are deleted and the tables vacuumed, so repeated
 * runs start alike.
 *
 * Ownership: buffers are per phase and per thread; nothing is shared between NATS threads except
 * the connection and atomics. */
#include "evalbus/v1/trace.pb-c.h"

#include <curl/curl.h>
#include <libpq-fe.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <grp.h>
#include <pwd.h>
#include <sys/types.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>

#define MAX_INFLIGHT 64
#define POLL_MS 50
#define MAX_OBS 2

/* ---------------------------------------------------------------------------------------------
 * Small helpers: clock, growable buffer, escaping. */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long long wall_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_reserve(sbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    b->cap = (b->len + more + 1) * 2;
    b->p = realloc(b->p, b->cap);
    if (!b->p) {
        fputs("ingest: out of memory\n", stderr);
        abort();
    }
}

static void sb_put(sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_putc(sbuf *b, char c)
{
    sb_put(b, &c, 1);
}

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    sb_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void sb_free(sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* A JSON string literal of s (UTF-8 passes through). */
static void sb_json(sbuf *b, const char *s)
{
    sb_putc(b, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            sb_putc(b, '\\');
            sb_putc(b, (char)c);
        } else if (c < 0x20) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_putc(b, (char)c);
        }
    }
    sb_putc(b, '"');
}

/* s in COPY text format (backslash, tab, newline, carriage return escaped). */
static void sb_copy(sbuf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\\':
            sb_put(b, "\\\\", 2);
            break;
        case '\t':
            sb_put(b, "\\t", 2);
            break;
        case '\n':
            sb_put(b, "\\n", 2);
            break;
        case '\r':
            sb_put(b, "\\r", 2);
            break;
        default:
            sb_putc(b, *s);
        }
    }
}

/* RFC 3339 UTC with milliseconds. */
static void time_text(long long ns, char *out, size_t len)
{
    time_t secs = (time_t)(ns / 1000000000LL);
    struct tm tm;
    char base[32];

    gmtime_r(&secs, &tm);
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, len, "%s.%03lldZ", base, ns / 1000000LL % 1000);
}

/* ---------------------------------------------------------------------------------------------
 * The trace generator. */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ULL;
}

static int rng_range(rng *r, int lo, int hi)
{
    return lo + (int)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

static const char *const words[] = {
    "the",      "customer", "asked",    "about",   "refund",  "policy",  "for",
    "an",       "order",    "that",     "arrived", "damaged", "please",  "check",
    "shipment", "status",   "and",      "explain", "next",    "steps",   "clearly",
    "we",       "can",      "offer",    "a",       "voucher", "or",      "replacement",
    "within",   "five",     "business", "days",    "café",    "Zürich",  "naïve",
    "invoice",  "account",  "billing",  "address", "support", "ticket",  "escalate",
    "agent",    "summary",  "tracking", "number",  "carrier", "delayed", "warehouse",
    "confirm",  "identity", "politely", "concise", "answer",  "in",      "English",
    "use",      "tools",    "when",     "needed",  "never",   "invent",  "facts"};
#define NWORDS (sizeof words / sizeof words[0])

/* Fills out with words up to about len bytes (never more than cap - 1). */
static void words_text(rng *r, char *out, size_t cap, int len)
{
    size_t n = 0;

    while (n < (size_t)len && n + 16 < cap) {
        const char *w = words[rng_next(r) % NWORDS];
        size_t wl = strlen(w);
        if (n)
            out[n++] = ' ';
        memcpy(out + n, w, wl);
        n += wl;
    }
    if (n + 1 < cap)
        out[n++] = '.';
    out[n] = '\0';
}

static const char *const projects[] = {"support-bot", "search", "checkout-assistant", "triage"};
static const char *const models[] = {"gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b"};
static const char *const providers[] = {"openai", "openai", "anthropic", "together"};
static const char *const tools[] = {"lookup_order", "search_kb", "create_ticket", "get_weather"};
static const char *const tag_pool[] = {"prod", "beta", "eu", "us", "vip", "retry", "mobile", "web"};
static const char *const envs[] = {"production", "staging"};

typedef struct gen_trace {
    char id[64], call_id[48], gen_id[80], tool_id[80], session_id[48], user_id[48];
    const char *project, *name, *model, *provider, *tool, *env, *release, *tags[3];
    int ntags, nobs;
    long long start_ns, end_ns, gen_end_ns, tool_start_ns, tool_end_ns;
    long long in_tok, out_tok;
    double cost;
    char system[512], user[640], assistant[768], args[256], result[384], metadata[384];
    char gen_in[256], gen_out[256];
} gen_trace;

/* Trace index i of the phase named tag; base_ns is about "now". */
static void gen_make(gen_trace *t, const char *tag, long i, long long base_ns)
{
    rng r = {0x9e3779b97f4a7c15ULL ^ ((uint64_t)i * 0xbf58476d1ce4e5b9ULL)};
    int m;

    for (const char *p = tag; *p; p++)
        r.s = (r.s ^ (uint64_t)(unsigned char)*p) * 0x100000001b3ULL;
    if (!r.s)
        r.s = 1;
    rng_next(&r);
    m = rng_range(&r, 0, 3);
    snprintf(t->id, sizeof t->id, "%s-%08ld", tag, i);
    snprintf(t->call_id, sizeof t->call_id, "call_%016llx", (unsigned long long)rng_next(&r));
    snprintf(t->gen_id, sizeof t->gen_id, "%s-gen", t->id);
    snprintf(t->tool_id, sizeof t->tool_id, "%s-tool", t->id);
    snprintf(t->session_id, sizeof t->session_id, "sess-%04d", rng_range(&r, 0, 9999));
    snprintf(t->user_id, sizeof t->user_id, "user-%05d", rng_range(&r, 0, 99999));
    t->project = projects[rng_range(&r, 0, 3)];
    t->name = "chat-turn";
    t->model = models[m];
    t->provider = providers[m];
    t->tool = tools[rng_range(&r, 0, 3)];
    t->env = envs[rng_range(&r, 0, 1)];
    t->release = "2026.11.3";
    t->ntags = rng_range(&r, 1, 3);
    for (int k = 0; k < t->ntags; k++)
        t->tags[k] = tag_pool[(k * 3 + rng_range(&r, 0, 2)) % 8];
    t->nobs = rng_range(&r, 1, 2);
    t->start_ns = base_ns - (long long)rng_range(&r, 1000, 120000) * 1000000LL;
    t->gen_end_ns = t->start_ns + (long long)rng_range(&r, 200, 4000) * 1000000LL;
    t->tool_start_ns = t->gen_end_ns + 1000000LL;
    t->tool_end_ns = t->tool_start_ns + (long long)rng_range(&r, 5, 400) * 1000000LL;
    t->end_ns = t->nobs == 2 ? t->tool_end_ns : t->gen_end_ns;
    t->in_tok = rng_range(&r, 200, 1800);
    t->out_tok = rng_range(&r, 40, 600);
    t->cost = (double)(t->in_tok * 15 + t->out_tok * 60) / 1e8;
    words_text(&r, t->system, sizeof t->system, rng_range(&r, 80, 180));
    words_text(&r, t->user, sizeof t->user, rng_range(&r, 100, 220));
    words_text(&r, t->assistant, sizeof t->assistant, rng_range(&r, 120, 240));
    {
        char q[96];
        words_text(&r, q, sizeof q, rng_range(&r, 10, 40));
        snprintf(t->args, sizeof t->args, "{\"query\":\"%s\",\"order_id\":\"A%07d\",\"limit\":5}",
                 q, rng_range(&r, 0, 9999999));
    }
    words_text(&r, t->result, sizeof t->result, rng_range(&r, 50, 110));
    snprintf(t->metadata, sizeof t->metadata,
             "{\"customer\":\"acme-%d\",\"region\":\"eu-west-%d\",\"request_id\":\"req-%016llx\","
             "\"feature\":\"%s\",\"ab_bucket\":%d,\"latency_budget_ms\":%d}",
             rng_range(&r, 1, 500), rng_range(&r, 1, 3), (unsigned long long)rng_next(&r),
             t->project, rng_range(&r, 0, 9), rng_range(&r, 1, 20) * 500);
    words_text(&r, t->gen_in, sizeof t->gen_in, rng_range(&r, 20, 60));
    words_text(&r, t->gen_out, sizeof t->gen_out, rng_range(&r, 20, 60));
}

/* --- the three encodings --- */

static void json_time(sbuf *b, const char *key, long long ns)
{
    char t[48];

    time_text(ns, t, sizeof t);
    sb_printf(b, ",\"%s\":\"%s\"", key, t);
}

static void json_trace(sbuf *b, const gen_trace *t)
{
    sb_puts(b, "{\"id\":");
    sb_json(b, t->id);
    sb_printf(b,
              ",\"project\":\"%s\",\"name\":\"%s\",\"model\":\"%s\",\"provider\":\"%s\","
              "\"status\":\"ok\"",
              t->project, t->name, t->model, t->provider);
    json_time(b, "start_time", t->start_ns);
    json_time(b, "end_time", t->end_ns);
    sb_printf(b, ",\"usage\":{\"input_tokens\":%lld,\"output_tokens\":%lld},\"cost_usd\":%.8f",
              t->in_tok, t->out_tok, t->cost);
    sb_puts(b, ",\"input\":[{\"role\":\"system\",\"content\":");
    sb_json(b, t->system);
    sb_puts(b, "},{\"role\":\"user\",\"content\":");
    sb_json(b, t->user);
    sb_puts(b, "}],\"output\":[{\"role\":\"assistant\",\"content\":");
    sb_json(b, t->assistant);
    sb_printf(b,
              ",\"tool_calls\":[{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":\"%s\","
              "\"arguments\":",
              t->call_id, t->tool);
    sb_json(b, t->args);
    sb_printf(b,
              "}}]}],\"tool_calls\":[{\"id\":\"%s\",\"type\":\"function\",\"name\":\"%s\","
              "\"arguments\":",
              t->call_id, t->tool);
    sb_json(b, t->args);
    sb_puts(b, ",\"result\":");
    sb_json(b, t->result);
    sb_printf(b, "}],\"metadata\":%s,\"tags\":[", t->metadata);
    for (int k = 0; k < t->ntags; k++)
        sb_printf(b, "%s\"%s\"", k ? "," : "", t->tags[k]);
    sb_printf(b,
              "],\"session_id\":\"%s\",\"user_id\":\"%s\",\"environment\":\"%s\","
              "\"release\":\"%s\",\"observations\":[{\"id\":",
              t->session_id, t->user_id, t->env, t->release);
    sb_json(b, t->gen_id);
    sb_puts(b, ",\"type\":\"generation\",\"name\":\"chat.completions\"");
    json_time(b, "start_time", t->start_ns);
    json_time(b, "end_time", t->gen_end_ns);
    sb_printf(b,
              ",\"model\":\"%s\",\"provider\":\"%s\",\"usage\":{\"input_tokens\":%lld,"
              "\"output_tokens\":%lld},\"cost_usd\":%.8f,\"status\":\"ok\",\"input\":",
              t->model, t->provider, t->in_tok, t->out_tok, t->cost);
    sb_json(b, t->gen_in);
    sb_puts(b, ",\"output\":");
    sb_json(b, t->gen_out);
    sb_putc(b, '}');
    if (t->nobs == 2) {
        sb_puts(b, ",{\"id\":");
        sb_json(b, t->tool_id);
        sb_puts(b, ",\"parent_id\":");
        sb_json(b, t->gen_id);
        sb_printf(b, ",\"type\":\"tool\",\"name\":\"%s\",\"status\":\"ok\"", t->tool);
        json_time(b, "start_time", t->tool_start_ns);
        json_time(b, "end_time", t->tool_end_ns);
        sb_puts(b, ",\"input\":");
        sb_json(b, t->args);
        sb_puts(b, ",\"output\":");
        sb_json(b, t->result);
        sb_putc(b, '}');
    }
    sb_puts(b, "]}");
}

/* protobuf-c structures pointing into a gen_trace (which must outlive them). */
typedef struct pb_trace {
    Evalbus__V1__Trace t;
    Evalbus__V1__Message msg[3], *in[2], *out[1];
    Evalbus__V1__ToolCall call_msg, call_trace, *msg_calls[1], *trace_calls[1];
    Evalbus__V1__Observation obs[MAX_OBS], *obsp[MAX_OBS];
    char *tags[3];
} pb_trace;

#define S(x) ((char *)(x))

static void pb_fill(pb_trace *p, const gen_trace *g)
{
    Evalbus__V1__Trace *t = &p->t;
    Evalbus__V1__Observation *o;

    evalbus__v1__trace__init(t);
    t->id = S(g->id);
    t->project = S(g->project);
    t->name = S(g->name);
    t->model = S(g->model);
    t->provider = S(g->provider);
    t->status = S("ok");
    t->has_start_time_unix_nano = t->has_end_time_unix_nano = 1;
    t->start_time_unix_nano = g->start_ns / 1000000 * 1000000; /* ms, as the JSON carries */
    t->end_time_unix_nano = g->end_ns / 1000000 * 1000000;
    t->has_input_tokens = t->has_output_tokens = t->has_cost_usd = 1;
    t->input_tokens = g->in_tok;
    t->output_tokens = g->out_tok;
    t->cost_usd = g->cost;
    for (int k = 0; k < 3; k++)
        evalbus__v1__message__init(&p->msg[k]);
    p->msg[0].role = S("system");
    p->msg[0].content = S(g->system);
    p->msg[1].role = S("user");
    p->msg[1].content = S(g->user);
    p->msg[2].role = S("assistant");
    p->msg[2].content = S(g->assistant);
    evalbus__v1__tool_call__init(&p->call_msg);
    p->call_msg.id = S(g->call_id);
    p->call_msg.type = S("function");
    p->call_msg.name = S(g->tool);
    p->call_msg.arguments = S(g->args);
    p->call_trace = p->call_msg;
    p->call_trace.result = S(g->result);
    p->msg_calls[0] = &p->call_msg;
    p->trace_calls[0] = &p->call_trace;
    p->msg[2].tool_calls = p->msg_calls;
    p->msg[2].n_tool_calls = 1;
    p->in[0] = &p->msg[0];
    p->in[1] = &p->msg[1];
    p->out[0] = &p->msg[2];
    t->input_messages = p->in;
    t->n_input_messages = 2;
    t->output_messages = p->out;
    t->n_output_messages = 1;
    t->tool_calls = p->trace_calls;
    t->n_tool_calls = 1;
    t->metadata_json = S(g->metadata);
    for (int k = 0; k < g->ntags; k++)
        p->tags[k] = S(g->tags[k]);
    t->tags = p->tags;
    t->n_tags = (size_t)g->ntags;
    t->session_id = S(g->session_id);
    t->user_id = S(g->user_id);
    t->environment = S(g->env);
    t->release = S(g->release);

    o = &p->obs[0];
    evalbus__v1__observation__init(o);
    o->id = S(g->gen_id);
    o->type = S("generation");
    o->name = S("chat.completions");
    o->has_start_time_unix_nano = o->has_end_time_unix_nano = 1;
    o->start_time_unix_nano = g->start_ns / 1000000 * 1000000;
    o->end_time_unix_nano = g->gen_end_ns / 1000000 * 1000000;
    o->status = S("ok");
    o->model = S(g->model);
    o->provider = S(g->provider);
    o->has_input_tokens = o->has_output_tokens = o->has_cost_usd = 1;
    o->input_tokens = g->in_tok;
    o->output_tokens = g->out_tok;
    o->cost_usd = g->cost;
    o->input_text = S(g->gen_in);
    o->output_text = S(g->gen_out);
    if (g->nobs == 2) {
        o = &p->obs[1];
        evalbus__v1__observation__init(o);
        o->id = S(g->tool_id);
        o->parent_id = S(g->gen_id);
        o->type = S("tool");
        o->name = S(g->tool);
        o->has_start_time_unix_nano = o->has_end_time_unix_nano = 1;
        o->start_time_unix_nano = g->tool_start_ns / 1000000 * 1000000;
        o->end_time_unix_nano = g->tool_end_ns / 1000000 * 1000000;
        o->status = S("ok");
        o->input_text = S(g->args);
        o->output_text = S(g->result);
    }
    for (int k = 0; k < g->nobs; k++)
        p->obsp[k] = &p->obs[k];
    t->observations = p->obsp;
    t->n_observations = (size_t)g->nobs;
}

/* One row of ingest.traces in COPY text format, as the writer fills it (source "json"). */
#define TRACE_COLS                                                                                 \
    "team_id, part_time, id, project, name, model, provider, status, status_message, start_time,"  \
    " end_time, latency_ms, input_tokens, output_tokens, total_tokens, cost_usd, input, output,"   \
    " tool_calls, metadata, tags, session_id, user_id, environment, release, attributes, source,"  \
    " stream_seq, replaced_seq"

static void copy_row(sbuf *b, const gen_trace *g, const char *team_id, long long seq)
{
    char st[48], et[48];
    sbuf j = {0};
    long long start = g->start_ns / 1000000 * 1000000, end = g->end_ns / 1000000 * 1000000;

    time_text(start, st, sizeof st);
    time_text(end, et, sizeof et);
    sb_printf(b, "%s\t%s\t", team_id, st);
    sb_copy(b, g->id);
    sb_printf(b, "\t%s\t%s\t%s\t%s\tok\t\\N\t%s\t%s\t%.17g\t%lld\t%lld\t%lld\t%.17g\t", g->project,
              g->name, g->model, g->provider, st, et, (double)(end - start) / 1e6, g->in_tok,
              g->out_tok, g->in_tok + g->out_tok, g->cost);
    sb_puts(&j, "{\"messages\":[{\"role\":\"system\",\"content\":");
    sb_json(&j, g->system);
    sb_puts(&j, "},{\"role\":\"user\",\"content\":");
    sb_json(&j, g->user);
    sb_puts(&j, "}]}");
    sb_copy(b, j.p);
    sb_putc(b, '\t');
    j.len = 0;
    sb_puts(&j, "{\"messages\":[{\"role\":\"assistant\",\"content\":");
    sb_json(&j, g->assistant);
    sb_printf(&j,
              ",\"tool_calls\":[{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":"
              "\"%s\",\"arguments\":",
              g->call_id, g->tool);
    sb_json(&j, g->args);
    sb_puts(&j, "}}]}]}");
    sb_copy(b, j.p);
    sb_putc(b, '\t');
    j.len = 0;
    sb_printf(&j,
              "[{\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":\"%s\",\"arguments\":",
              g->call_id, g->tool);
    sb_json(&j, g->args);
    sb_puts(&j, "},\"result\":");
    sb_json(&j, g->result);
    sb_puts(&j, "}]");
    sb_copy(b, j.p);
    sb_putc(b, '\t');
    sb_copy(b, g->metadata);
    sb_puts(b, "\t{");
    for (int k = 0; k < g->ntags; k++)
        sb_printf(b, "%s\"%s\"", k ? "," : "", g->tags[k]);
    sb_printf(b, "}\t%s\t%s\t%s\t%s\t\\N\tjson\t%lld\t%lld\n", g->session_id, g->user_id, g->env,
              g->release, seq, seq);
    sb_free(&j);
}

/* ---------------------------------------------------------------------------------------------
 * PostgreSQL: the evalbus role sees every team only with evalbus.system on (row-level security). */

static PGconn *db_connect(const char *url)
{
    PGconn *c = PQconnectdb(url);
    PGresult *r;

    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "ingest: cannot connect to PostgreSQL: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    r = PQexec(c, "SET evalbus.system = 'on'; SET client_min_messages = warning");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "ingest: SET evalbus.system: %s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        return NULL;
    }
    PQclear(r);
    return c;
}

static bool db_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;

    if (!ok)
        fprintf(stderr, "ingest: %.60s...: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return ok;
}

/* count(*) of the team's rows in ingest.traces, or -1. *query_ms gets the time the query took. */
static long long db_count(PGconn *c, const char *team_id, double *query_ms)
{
    const char *p[1] = {team_id};
    double t0 = now_s();
    PGresult *r = PQexecParams(c, "SELECT count(*) FROM ingest.traces WHERE team_id = $1::uuid", 1,
                               NULL, p, NULL, NULL, 0);
    long long n = -1;

    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        n = atoll(PQgetvalue(r, 0, 0));
    else
        fprintf(stderr, "ingest: count of traces: %s", PQerrorMessage(c));
    PQclear(r);
    if (query_ms)
        *query_ms = (now_s() - t0) * 1000;
    return n;
}

/* The ids of one phase ("<tag>-<index>") announced in evalbus.v1.traces.stored.<team>, which the
 * writer publishes after each COMMIT: a bit per index, so redeliveries count once. */
typedef struct stored_watch {
    char prefix[64];
    size_t plen;
    long n;
    unsigned char *bits;
    pthread_mutex_t mu;
    long distinct;   /* under mu */
    double last_new; /* when the latest new id arrived, under mu */
    double *seen_at; /* [n] when each id was first announced, when not NULL; under mu */
} stored_watch;

static void on_stored(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    stored_watch *w = closure;
    Evalbus__V1__TracesStored *ev = evalbus__v1__traces_stored__unpack(
        NULL, (size_t)natsMsg_GetDataLength(msg), (const uint8_t *)natsMsg_GetData(msg));
    double t = now_s();

    (void)nc;
    (void)sub;
    if (ev) {
        pthread_mutex_lock(&w->mu);
        for (size_t i = 0; i < ev->n_trace_ids; i++) {
            const char *id = ev->trace_ids[i];
            char *end;
            long k;
            if (!id || strncmp(id, w->prefix, w->plen) != 0)
                continue;
            k = strtol(id + w->plen, &end, 10);
            if (*end || k < 0 || k >= w->n || (w->bits[k / 8] & (1u << (k % 8))))
                continue;
            w->bits[k / 8] |= (unsigned char)(1u << (k % 8));
            if (w->seen_at)
                w->seen_at[k] = t;
            w->distinct++;
            w->last_new = t;
        }
        pthread_mutex_unlock(&w->mu);
        evalbus__v1__traces_stored__free_unpacked(ev, NULL);
    }
    natsMsg_Destroy(msg);
}

typedef struct poll_stats {
    int polls;       /* count(*) queries */
    double total_ms; /* time they took */
    double last_ms;  /* the last one */
} poll_stats;

/* Waits until ingest.traces holds target rows of the team; returns the time they were all
 * committed, or -1 after the deadline (with the count reached in *seen).
 * With a watch, the writer's stored events tell when all ids of the phase are committed; one
 * SELECT count(*) FROM ingest.traces WHERE team_id = $1 then confirms it, and the time is that of
 * the last event (published after its COMMIT). The count is polled otherwise only while the
 * events stall (no new id for a second: once a second), and every POLL_MS once the events are
 * complete but the count is not (should an event be lost or early). A count(*) reads every heap
 * page of the team's rows (25-50 ms at 50,000 rows of 2 KB, 200 ms at 200,000): polled every
 * POLL_MS from the start it would take half a core from the writer it measures, 10-20 % of the
 * figure on 2 cores, and even once a second, 5 % of a sustained run. Without a watch, the count
 * is polled every POLL_MS (BENCH_INGEST_POLL_TRACES=1). */
static double wait_committed(PGconn *c, const char *team_id, long long target, stored_watch *w,
                             double deadline, long long *seen, poll_stats *ps)
{
    const double stall = 1.0; /* seconds without a new id before the count is asked */
    double since = now_s(), asked = 0;

    for (;;) {
        long distinct = 0;
        double last = 0, t = now_s();

        if (w) {
            pthread_mutex_lock(&w->mu);
            distinct = w->distinct;
            last = w->last_new;
            pthread_mutex_unlock(&w->mu);
        }
        if (!w || distinct >= w->n ||
            (t - (last > since ? last : since) >= stall && t - asked >= stall)) {
            long long n = db_count(c, team_id, &ps->last_ms);
            asked = now_s();
            ps->polls++;
            ps->total_ms += ps->last_ms;
            *seen = n;
            if (n < 0)
                return -1;
            if (n >= target)
                return w && distinct >= w->n ? last : now_s();
        }
        if (now_s() > deadline)
            return -1;
        usleep(POLL_MS * 1000);
    }
}

static bool team_id_of(PGconn *c, const char *slug, char *out, size_t len)
{
    const char *p[1] = {slug};
    PGresult *r =
        PQexecParams(c, "SELECT id FROM auth.teams WHERE slug = $1", 1, NULL, p, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;

    if (ok)
        snprintf(out, len, "%s", PQgetvalue(r, 0, 0));
    else
        fprintf(stderr, "ingest: team '%s' not found: %s", slug, PQerrorMessage(c));
    PQclear(r);
    return ok;
}

/* ---------------------------------------------------------------------------------------------
 * HTTP: libcurl multi, a fixed number of requests in flight, optionally paced. */

typedef struct http_slot {
    CURL *h;
    char resp[300];
    size_t rlen;
    long batch;
    double t_sched;
    bool busy;
} http_slot;

typedef struct http_run {
    const char *url; /* .../api/v1/traces */
    struct curl_slist *hdrs;
    const sbuf *bodies; /* [nbatches], made before the clock starts */
    long nbatches;
    int inflight;
    double rate;      /* batches per second; 0: as fast as the slots allow */
    double *lat_ms;   /* [nbatches], filled when not NULL */
    double *answered; /* [nbatches] when each 202 came, filled when not NULL */
    double deadline;  /* monotonic */
    size_t bytes;     /* body bytes sent */
} http_run;

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    http_slot *s = arg;
    size_t len = size * n, room = sizeof s->resp - 1 - s->rlen;

    if (room > len)
        room = len;
    memcpy(s->resp + s->rlen, data, room);
    s->rlen += room;
    s->resp[s->rlen] = '\0';
    return len;
}

/* The JSON body of batch number `batch` (traces batch * size ... + size - 1) of phase tag. */
static void http_body(sbuf *b, const char *tag, long batch, long size, long long base_ns)
{
    gen_trace g;

    b->len = 0;
    sb_puts(b, "{\"traces\":[");
    for (long k = 0; k < size; k++) {
        gen_make(&g, tag, batch * size + k, base_ns);
        if (k)
            sb_putc(b, ',');
        json_trace(b, &g);
    }
    sb_puts(b, "]}");
}

/* Sends r->nbatches batches; returns true when every answer was 202. */
static bool http_send(http_run *r)
{
    CURLM *m = curl_multi_init();
    http_slot slots[MAX_INFLIGHT];
    long next = 0, done = 0;
    double t0 = now_s();
    bool ok = true;

    memset(slots, 0, sizeof slots);
    for (int i = 0; i < r->inflight; i++) {
        slots[i].h = curl_easy_init();
        curl_easy_setopt(slots[i].h, CURLOPT_URL, r->url);
        curl_easy_setopt(slots[i].h, CURLOPT_HTTPHEADER, r->hdrs);
        curl_easy_setopt(slots[i].h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(slots[i].h, CURLOPT_WRITEDATA, &slots[i]);
        curl_easy_setopt(slots[i].h, CURLOPT_PRIVATE, &slots[i]);
        curl_easy_setopt(slots[i].h, CURLOPT_TIMEOUT_MS, 30000L);
        curl_easy_setopt(slots[i].h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(slots[i].h, CURLOPT_TCP_NODELAY, 1L);
    }
    while (ok && done < r->nbatches) {
        int running = 0, q = 0;
        long wait_ms = 100;
        CURLMsg *msg;

        for (int i = 0; i < r->inflight && next < r->nbatches; i++) {
            double due = r->rate > 0 ? t0 + (double)next / r->rate : 0;
            if (slots[i].busy)
                continue;
            if (r->rate > 0 && now_s() < due)
                break;
            r->bytes += r->bodies[next].len;
            slots[i].rlen = 0;
            slots[i].resp[0] = '\0';
            slots[i].batch = next++;
            slots[i].t_sched = r->rate > 0 ? due : now_s();
            slots[i].busy = true;
            curl_easy_setopt(slots[i].h, CURLOPT_POSTFIELDSIZE_LARGE,
                             (curl_off_t)r->bodies[slots[i].batch].len);
            curl_easy_setopt(slots[i].h, CURLOPT_POSTFIELDS, r->bodies[slots[i].batch].p);
            curl_multi_add_handle(m, slots[i].h);
        }
        curl_multi_perform(m, &running);
        while ((msg = curl_multi_info_read(m, &q)) != NULL) {
            http_slot *s = NULL;
            long code = 0;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
            if (msg->data.result != CURLE_OK) {
                fprintf(stderr, "ingest: HTTP batch %ld: %s\n", s->batch,
                        curl_easy_strerror(msg->data.result));
                ok = false;
            } else if (code != 202) {
                fprintf(stderr, "ingest: HTTP batch %ld answered %ld: %s\n", s->batch, code,
                        s->resp);
                ok = false;
            } else {
                double t = now_s();
                if (r->lat_ms)
                    r->lat_ms[s->batch] = (t - s->t_sched) * 1000;
                if (r->answered)
                    r->answered[s->batch] = t;
            }
            curl_multi_remove_handle(m, s->h);
            s->busy = false;
            done++;
        }
        if (now_s() > r->deadline) {
            fprintf(stderr, "ingest: HTTP: only %ld of %ld batches answered before the deadline\n",
                    done, r->nbatches);
            ok = false;
        }
        if (r->rate > 0 && next < r->nbatches) {
            /* rounded up: a wait cut to 0 ms would spin until the batch is due and take CPU
             * from the service measured; sending up to 1 ms late counts in its latency */
            double until = (t0 + (double)next / r->rate - now_s()) * 1000;
            wait_ms = until <= 0 ? 0 : until >= 100 ? 100 : (long)until + 1;
        }
        if (ok && done < r->nbatches)
            curl_multi_poll(m, NULL, 0, (int)wait_ms, NULL);
    }
    for (int i = 0; i < r->inflight; i++) {
        if (slots[i].busy)
            curl_multi_remove_handle(m, slots[i].h);
        curl_easy_cleanup(slots[i].h);
    }
    curl_multi_cleanup(m);
    return ok;
}

/* ---------------------------------------------------------------------------------------------
 * NATS: F threads, each doing request/reply with one TraceBatch at a time, on one connection. */

typedef struct nats_run {
    natsConnection *nc;
    const char *subject, *key;
    const sbuf *bodies; /* [nbatches] packed TraceBatch messages, made before the clock starts */
    long nbatches, batch;
    atomic_long next;
    atomic_bool failed;
    atomic_llong bytes;
    double deadline;
} nats_run;

/* The packed TraceBatch of batch number `batch` of phase tag (as http_body). */
static void nats_body(sbuf *b, const char *tag, long batch, long size, long long base_ns)
{
    gen_trace *g = calloc((size_t)size, sizeof *g);
    pb_trace *p = calloc((size_t)size, sizeof *p);
    Evalbus__V1__Trace **tp = calloc((size_t)size, sizeof *tp);
    Evalbus__V1__TraceBatch tb = EVALBUS__V1__TRACE_BATCH__INIT;
    size_t len;

    for (long k = 0; k < size; k++) {
        gen_make(&g[k], tag, batch * size + k, base_ns);
        pb_fill(&p[k], &g[k]);
        tp[k] = &p[k].t;
    }
    tb.traces = tp;
    tb.n_traces = (size_t)size;
    len = evalbus__v1__trace_batch__get_packed_size(&tb);
    b->len = 0;
    sb_reserve(b, len);
    evalbus__v1__trace_batch__pack(&tb, (uint8_t *)b->p);
    b->len = len;
    free(tp);
    free(p);
    free(g);
}

static void *nats_worker(void *arg)
{
    nats_run *r = arg;

    for (;;) {
        long b = atomic_fetch_add(&r->next, 1);
        Evalbus__V1__IngestAck *ack = NULL;
        natsMsg *msg = NULL, *reply = NULL;
        natsStatus s;
        size_t len;

        if (b >= r->nbatches || atomic_load(&r->failed))
            break;
        if (now_s() > r->deadline) {
            fprintf(stderr, "ingest: NATS: batch %ld not sent before the deadline\n", b);
            atomic_store(&r->failed, true);
            break;
        }
        len = r->bodies[b].len;
        atomic_fetch_add(&r->bytes, (long long)len);
        s = natsMsg_Create(&msg, r->subject, NULL, r->bodies[b].p, (int)len);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(msg, "Evalbus-Api-Key", r->key);
        if (s == NATS_OK)
            s = natsConnection_RequestMsg(&reply, r->nc, msg, 30000);
        if (s != NATS_OK) {
            fprintf(stderr, "ingest: NATS batch %ld: %s\n", b, natsStatus_GetText(s));
            atomic_store(&r->failed, true);
        } else {
            ack = evalbus__v1__ingest_ack__unpack(NULL, (size_t)natsMsg_GetDataLength(reply),
                                                  (const uint8_t *)natsMsg_GetData(reply));
            if (!ack) {
                fprintf(stderr, "ingest: NATS batch %ld: the reply is not an IngestAck\n", b);
                atomic_store(&r->failed, true);
            } else if (ack->error || ack->n_rejected || ack->n_accepted_ids != (size_t)r->batch) {
                fprintf(stderr, "ingest: NATS batch %ld: %zu accepted, %zu rejected%s%s%s%s\n", b,
                        ack->n_accepted_ids, ack->n_rejected, ack->error ? ": " : "",
                        ack->error ? ack->error : "", ack->n_rejected ? ": " : "",
                        ack->n_rejected && ack->rejected[0]->message ? ack->rejected[0]->message
                                                                     : "");
                atomic_store(&r->failed, true);
            }
            if (ack)
                evalbus__v1__ingest_ack__free_unpacked(ack, NULL);
        }
        natsMsg_Destroy(reply);
        natsMsg_Destroy(msg);
    }
    return NULL;
}

static bool nats_send(nats_run *r, int threads)
{
    pthread_t t[MAX_INFLIGHT];

    atomic_store(&r->next, 0);
    atomic_store(&r->failed, false);
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, nats_worker, r);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    return !atomic_load(&r->failed);
}

/* ---------------------------------------------------------------------------------------------
 * The phases. */

/* --- CPU time by process ---------------------------------------------------------------------
 * The rate alone does not say where a trace's cost goes; each measured phase also prints the
 * CPU time that the ingest service, nats-server, PostgreSQL (the postmaster and all its
 * children: the writer's backends, autovacuum, the WAL writer, the checkpointer) and this
 * client spent per trace, and how busy the whole machine was. Read from /proc: utime + stime of
 * each process (all its threads); children of the postmaster that exited in between are in its
 * cutime + cstime once reaped. */

typedef struct cpu_use {
    double ingest, nats, pg, client;  /* CPU seconds; < 0: not known */
    double busy, total;               /* the machine's CPU seconds, all CPUs */
    double switches, ingest_switches; /* context switches: the machine's, the ingest service's */
} cpu_use;

typedef struct cfg {
    const char *url, *nats_url, *db_url, *http_key, *http_team, *nats_key, *nats_team;
    long traces, batch;
    int inflight;
    int pid, nats_pid, pg_pid; /* ingest, nats-server, the postmaster (0: not given) */
    double paced_seconds, timeout;
    bool sustained;    /* --sustained N: the throughput phases only, figures named *_sustained */
    const char *label; /* what the summary lines on stderr start with */
    char run_tag[24];
    char http_team_id[64], nats_team_id[64], base_team_id[64];
    struct curl_slist *hdrs;
    char traces_url[512];
    PGconn *db;
    natsConnection *nc;
} cfg;

/* Fields of /proc/<pid>/stat after the command name: [0] is field 3 (state), [1] the parent
 * pid, [11] .. [14] utime, stime, cutime, cstime in clock ticks. */
static bool proc_stat(int pid, long long f[15])
{
    char path[64], buf[1024], *p, *end;
    size_t n;
    FILE *fp;

    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    fp = fopen(path, "r");
    if (!fp)
        return false;
    n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
    if (!p || p[1] != ' ')
        return false;
    p += 2;
    for (int i = 0; i < 15; i++) {
        if (i == 0) {
            f[0] = *p; /* the state letter */
            p++;
            continue;
        }
        f[i] = strtoll(p, &end, 10);
        if (end == p)
            return false;
        p = end;
    }
    return true;
}

/* CPU seconds of process pid, with its reaped children's if children; -1 if it is gone. */
static double proc_cpu(int pid, bool children)
{
    long long f[15];
    double tick = (double)sysconf(_SC_CLK_TCK);

    if (pid <= 0 || !proc_stat(pid, f))
        return -1;
    return (double)(f[11] + f[12] + (children ? f[13] + f[14] : 0)) / tick;
}

/* The postmaster's CPU seconds with those of every child, living or reaped. */
static double pg_cpu(int postmaster)
{
    double sum = proc_cpu(postmaster, true);
    DIR *d;
    struct dirent *e;

    if (sum < 0 || !(d = opendir("/proc")))
        return -1;
    while ((e = readdir(d))) {
        long long f[15];
        int pid = atoi(e->d_name);
        if (pid > 0 && pid != postmaster && proc_stat(pid, f) && f[1] == postmaster)
            sum += (double)(f[11] + f[12]) / (double)sysconf(_SC_CLK_TCK);
    }
    closedir(d);
    return sum;
}

/* Context switches of process pid: the sum over its threads (those still there) of
 * voluntary_ctxt_switches and nonvoluntary_ctxt_switches; -1 if it is gone. */
static double proc_switches(int pid)
{
    char path[300], line[128];
    double sum = 0;
    struct dirent *e;
    DIR *d;

    snprintf(path, sizeof path, "/proc/%d/task", pid);
    if (pid <= 0 || !(d = opendir(path)))
        return -1;
    while ((e = readdir(d))) {
        FILE *fp;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%s/status", pid, e->d_name);
        if (!(fp = fopen(path, "r")))
            continue; /* the thread ended meanwhile */
        while (fgets(line, sizeof line, fp)) {
            unsigned long long n;
            if (sscanf(line, "voluntary_ctxt_switches: %llu", &n) == 1 ||
                sscanf(line, "nonvoluntary_ctxt_switches: %llu", &n) == 1)
                sum += (double)n;
        }
        fclose(fp);
    }
    closedir(d);
    return sum;
}

static void cpu_now(const cfg *c, cpu_use *u)
{
    struct rusage ru;
    unsigned long long v[8] = {0};
    FILE *fp = fopen("/proc/stat", "r");
    char line[512];

    u->ingest = proc_cpu(c->pid, false);
    u->nats = proc_cpu(c->nats_pid, false);
    u->pg = c->pg_pid > 0 ? pg_cpu(c->pg_pid) : -1;
    getrusage(RUSAGE_SELF, &ru);
    u->client = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    u->busy = u->total = -1;
    /* cpu  user nice system idle iowait irq softirq steal */
    if (fp && fscanf(fp, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                     &v[4], &v[5], &v[6], &v[7]) == 8) {
        double tick = (double)sysconf(_SC_CLK_TCK), all = 0;
        for (int i = 0; i < 8; i++)
            all += (double)v[i];
        u->total = all / tick;
        u->busy = (all - (double)v[3] - (double)v[4]) / tick;
    }
    u->switches = -1;
    while (fp && fgets(line, sizeof line, fp)) {
        unsigned long long n;
        if (sscanf(line, "ctxt %llu", &n) == 1)
            u->switches = (double)n;
    }
    if (fp)
        fclose(fp);
    u->ingest_switches = proc_switches(c->pid);
}

/* after - before, part by part (unknown stays unknown) */
static cpu_use cpu_since(const cpu_use *before, const cpu_use *after)
{
    cpu_use d;
#define EB_CPU_DIFF(f) d.f = before->f >= 0 && after->f >= 0 ? after->f - before->f : -1
    EB_CPU_DIFF(ingest);
    EB_CPU_DIFF(nats);
    EB_CPU_DIFF(pg);
    EB_CPU_DIFF(client);
    EB_CPU_DIFF(busy);
    EB_CPU_DIFF(total);
    EB_CPU_DIFF(switches);
    EB_CPU_DIFF(ingest_switches);
#undef EB_CPU_DIFF
    return d;
}

/* "ingest service 34.1 us, ..." per unit (a trace or a row) into buf */
static void cpu_text(const cpu_use *u, double units, char *buf, size_t len)
{
    const struct {
        const char *name;
        double s;
    } part[] = {{"ingest service", u->ingest},
                {"nats-server", u->nats},
                {"PostgreSQL", u->pg},
                {"this client", u->client}};
    size_t off = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < sizeof part / sizeof part[0] && off < len; i++)
        if (part[i].s >= 0)
            off += (size_t)snprintf(buf + off, len - off, "%s%s %.1f us", off ? ", " : "",
                                    part[i].name, part[i].s * 1e6 / units);
    if (u->total > 0 && off < len)
        off += (size_t)snprintf(buf + off, len - off, "; the machine %.0f %% busy",
                                100 * u->busy / u->total);
    /* a wake-up of another thread costs more than its instructions (a system call, often an
     * interrupt to the other core, a context switch): counted, they show hand-offs */
    if (u->switches >= 0 && off < len)
        off += (size_t)snprintf(buf + off, len - off, "; context switches per trace: %.2f",
                                u->switches / units);
    if (u->ingest_switches >= 0 && off < len)
        snprintf(buf + off, len - off, " (the ingest service %.2f)", u->ingest_switches / units);
}

typedef struct phase_result {
    double rate;      /* traces per second, first send to last commit */
    double send_s;    /* first send to last acceptance */
    double commit_s;  /* first send to all committed */
    double bytes;     /* wire payload */
    poll_stats polls; /* the commit polls */
    cpu_use cpu;      /* first send until all committed (and counted) */
    /* paced HTTP with the stored events: [nbatches] ms from each batch's 202 until the stored
     * event of its last trace arrived (published after the COMMIT: read-your-writes at the
     * latest then); malloc'ed, the caller frees it */
    double *visible_ms;
} phase_result;

/* Sends nbatches of the phase named tag over HTTP or NATS, ending when all are committed. */
static bool phase(cfg *c, bool nats, const char *tag, long nbatches, double rate, double *lat_ms,
                  phase_result *out)
{
    const char *team_id = nats ? c->nats_team_id : c->http_team_id;
    long long before, seen = 0, n = nbatches * c->batch;
    double t0, t_sent, t_done;
    cpu_use cpu0, cpu1;
    long long base_ns = wall_ns();
    stored_watch w = {.n = n};
    natsSubscription *sub = NULL;
    char subject[200], stored[200];
    sbuf *bodies = calloc((size_t)nbatches, sizeof *bodies);
    double *answered = NULL;
    bool ok = false;

    /* Every body is made before the clock starts, as the baseline's rows are: the client's
     * generating and encoding is not what is measured, and must not take CPU from the service
     * while it is. */
    for (long b = 0; b < nbatches; b++)
        (nats ? nats_body : http_body)(&bodies[b], tag, b, c->batch, base_ns);

    before = db_count(c->db, team_id, NULL);
    if (before < 0)
        goto cleanup;
    if (!getenv("BENCH_INGEST_POLL_TRACES")) {
        snprintf(w.prefix, sizeof w.prefix, "%s-", tag);
        w.plen = strlen(w.prefix);
        w.bits = calloc((size_t)n / 8 + 1, 1);
        if (!nats && lat_ms) {
            w.seen_at = calloc((size_t)n, sizeof *w.seen_at);
            answered = calloc((size_t)nbatches, sizeof *answered);
        }
        pthread_mutex_init(&w.mu, NULL);
        snprintf(stored, sizeof stored, "evalbus.v1.traces.stored.%s",
                 nats ? c->nats_team : c->http_team);
        if (natsConnection_Subscribe(&sub, c->nc, stored, on_stored, &w) != NATS_OK ||
            natsConnection_Flush(c->nc) != NATS_OK) {
            fprintf(stderr, "ingest: cannot subscribe to %s\n", stored);
            goto cleanup;
        }
    }
    cpu_now(c, &cpu0);
    t0 = now_s();
    if (!nats) {
        http_run r = {.url = c->traces_url,
                      .hdrs = c->hdrs,
                      .bodies = bodies,
                      .nbatches = nbatches,
                      .inflight = rate > 0 ? MAX_INFLIGHT : c->inflight,
                      .rate = rate,
                      .lat_ms = lat_ms,
                      .answered = answered,
                      .deadline = t0 + c->timeout};
        ok = http_send(&r);
        out->bytes = (double)r.bytes;
    } else {
        nats_run r = {.nc = c->nc,
                      .subject = subject,
                      .key = c->nats_key,
                      .bodies = bodies,
                      .nbatches = nbatches,
                      .batch = c->batch,
                      .deadline = t0 + c->timeout};
        snprintf(subject, sizeof subject, "evalbus.v1.ingest.traces.%s", c->nats_team);
        ok = nats_send(&r, c->inflight);
        out->bytes = (double)atomic_load(&r.bytes);
    }
    t_sent = now_s();
    if (!ok)
        goto cleanup;
    ok = false;
    t_done = wait_committed(c->db, team_id, before + n, sub ? &w : NULL, t_sent + c->timeout, &seen,
                            &out->polls);
    cpu_now(c, &cpu1);
    out->cpu = cpu_since(&cpu0, &cpu1);
    if (t_done < 0) {
        fprintf(stderr,
                "ingest: %s: %lld of %lld traces committed %.0f s after the last was accepted; "
                "the writer did not keep up or lost traces (see the ingest log)\n",
                tag, seen - before, n, c->timeout);
        goto cleanup;
    }
    if (seen != before + n) {
        fprintf(stderr, "ingest: %s: %lld traces committed, %lld sent\n", tag, seen - before, n);
        goto cleanup;
    }
    out->send_s = t_sent - t0;
    out->commit_s = t_done - t0;
    out->rate = (double)n / out->commit_s;
    if (answered) {
        /* every id was announced (wait_committed saw them all), so seen_at is complete; a batch
         * committed before its 202 reached the client counts 0 */
        out->visible_ms = calloc((size_t)nbatches, sizeof *out->visible_ms);
        pthread_mutex_lock(&w.mu);
        for (long b = 0; b < nbatches; b++) {
            double last = 0;
            for (long k = b * c->batch; k < (b + 1) * c->batch; k++)
                last = w.seen_at[k] > last ? w.seen_at[k] : last;
            out->visible_ms[b] = last > answered[b] ? (last - answered[b]) * 1000 : 0;
        }
        pthread_mutex_unlock(&w.mu);
    }
    ok = true;
cleanup:
    if (sub) {
        /* drained, so no callback still uses w */
        if (natsSubscription_Drain(sub) == NATS_OK)
            natsSubscription_WaitForDrainCompletion(sub, 5000);
        natsSubscription_Destroy(sub);
    }
    if (w.bits) {
        pthread_mutex_destroy(&w.mu);
        free(w.bits);
        free(w.seen_at);
    }
    free(answered);
    for (long b = 0; b < nbatches; b++)
        sb_free(&bodies[b]);
    free(bodies);
    return ok;
}

/* A random version-4 UUID (the baseline's team id). */
static void uuid_v4(char *out, size_t len)
{
    unsigned char b[16];
    FILE *f = fopen("/dev/urandom", "rb");

    if (!f || fread(b, 1, sizeof b, f) != sizeof b) {
        for (size_t i = 0; i < sizeof b; i++)
            b[i] = (unsigned char)(rand() & 0xff);
    }
    if (f)
        fclose(f);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, len, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* Creates the day partitions covering [from_ns, to_ns] as writer.c does (under its lock). */
static bool ensure_partitions(PGconn *db, long long from_ns, long long to_ns)
{
    for (long long day = from_ns / 86400000000000LL; day <= to_ns / 86400000000000LL; day++) {
        time_t t0 = (time_t)(day * 86400), t1 = t0 + 86400;
        struct tm a, b;
        char from[16], to[16], name[16], sql[640];
        bool ok;

        gmtime_r(&t0, &a);
        gmtime_r(&t1, &b);
        strftime(from, sizeof from, "%Y-%m-%d", &a);
        strftime(to, sizeof to, "%Y-%m-%d", &b);
        strftime(name, sizeof name, "%Y%m%d", &a);
        snprintf(sql, sizeof sql,
                 "BEGIN; SELECT pg_advisory_xact_lock(7236002, 1);"
                 "CREATE TABLE IF NOT EXISTS ingest.traces_p%s PARTITION OF ingest.traces"
                 " FOR VALUES FROM ('%s 00:00:00+00') TO ('%s 00:00:00+00');"
                 "CREATE TABLE IF NOT EXISTS ingest.observations_p%s PARTITION OF"
                 " ingest.observations FOR VALUES FROM ('%s 00:00:00+00') TO"
                 " ('%s 00:00:00+00'); COMMIT",
                 name, from, to, name, from, to);
        ok = db_exec(db, sql);
        if (!ok) {
            db_exec(db, "ROLLBACK");
            return false;
        }
    }
    return true;
}

/* The COPY itself (the --copy-baseline child): rows tag-0 .. tag-(n-1) for team, generated
 * before the clock starts, COPYed in one transaction over conninfo. Prints "<seconds> <bytes>"
 * on stdout; exit status 0 on success. */
static int copy_child(const char *conninfo, const char *tag, long long base_ns, const char *team,
                      long n)
{
    sbuf data = {0};
    gen_trace g;
    PGconn *db = PQconnectdb(conninfo);
    PGresult *r;
    double t0, elapsed;
    bool ok;

    if (PQstatus(db) != CONNECTION_OK) {
        fprintf(stderr, "ingest: baseline: cannot connect as the PostgreSQL superuser (%s): %s",
                conninfo, PQerrorMessage(db));
        PQfinish(db);
        return 1;
    }
    for (long i = 0; i < n; i++) {
        gen_make(&g, tag, i, base_ns);
        copy_row(&data, &g, team, i + 1);
    }
    t0 = now_s();
    ok = db_exec(db, "BEGIN");
    if (ok) {
        r = PQexec(db, "COPY ingest.traces (" TRACE_COLS ") FROM STDIN");
        ok = PQresultStatus(r) == PGRES_COPY_IN;
        if (!ok)
            fprintf(stderr, "ingest: baseline COPY: %s", PQerrorMessage(db));
        PQclear(r);
    }
    for (size_t off = 0; ok && off < data.len;) {
        size_t len = data.len - off > (1 << 20) ? (1 << 20) : data.len - off;
        ok = PQputCopyData(db, data.p + off, (int)len) == 1;
        off += len;
    }
    if (PQputCopyEnd(db, ok ? NULL : "aborted") != 1)
        ok = false;
    while ((r = PQgetResult(db)) != NULL) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK && ok) {
            fprintf(stderr, "ingest: baseline COPY: %s", PQresultErrorMessage(r));
            ok = false;
        }
        PQclear(r);
    }
    ok = ok && db_exec(db, "COMMIT");
    elapsed = now_s() - t0;
    if (ok)
        printf("%.6f %zu\n", elapsed, data.len);
    PQfinish(db);
    sb_free(&data);
    return ok ? 0 : 1;
}

/* Runs this program again as the cluster's superuser (EVALBUS_STACK_PG_SUPERUSER over the socket
 * in EVALBUS_STACK_PG_SOCKET_DIR, peer authentication) with `mode` and the arguments after it,
 * conninfo first: a child process which first takes that user's identity when we are root, as
 * scripts/stack does. The child's first line of output goes to out; true if it exited with 0. */
static bool as_superuser(cfg *c, const char *mode, const char *const *more, int nmore, char *out,
                         size_t outlen)
{
    const char *sock = getenv("EVALBUS_STACK_PG_SOCKET_DIR");
    const char *su = getenv("EVALBUS_STACK_PG_SUPERUSER");
    char exe[4096], conninfo[1024];
    char *const envp[] = {(char *)"PATH=/usr/bin:/bin", NULL};
    struct passwd *pw = NULL;
    ssize_t len;
    int fd[2], status = 0;
    pid_t pid;
    FILE *f;

    out[0] = '\0';
    if (!sock || !*sock || !su || !*su) {
        fprintf(stderr, "ingest: EVALBUS_STACK_PG_SOCKET_DIR and EVALBUS_STACK_PG_SUPERUSER are "
                        "not set (stack.env of scripts/stack)\n");
        return false;
    }
    if (geteuid() == 0 && strcmp(su, "root") != 0 && !(pw = getpwnam(su))) {
        fprintf(stderr, "ingest: no user %s\n", su);
        return false;
    }
    len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0 || nmore > 8)
        return false;
    exe[len] = '\0';
    snprintf(conninfo, sizeof conninfo, "host=%s port=%s dbname=%s user=%s", sock, PQport(c->db),
             PQdb(c->db), su);
    /* close-on-exec: the child gets its stdout (dup2 clears the flag), not our sockets */
    if (pipe2(fd, O_CLOEXEC) != 0)
        return false;
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return false;
    }
    if (pid == 0) {
        char *args[12] = {exe, (char *)mode, conninfo};
        for (int i = 0; i < nmore; i++)
            args[3 + i] = (char *)more[i];
        args[3 + nmore] = NULL;
        dup2(fd[1], STDOUT_FILENO);
        close(fd[0]);
        close(fd[1]);
        if (pw && (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0))
            _exit(126);
        execve(exe, args, envp);
        _exit(127);
    }
    close(fd[1]);
    f = fdopen(fd[0], "r");
    if (f) {
        if (!fgets(out, (int)outlen, f))
            out[0] = '\0';
        fclose(f);
    } else {
        close(fd[0]);
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "ingest: %s as %s: waitpid: %s\n", mode, su, strerror(errno));
            return false;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "ingest: %s as %s failed (status %d)\n", mode, su, status);
        return false;
    }
    return true;
}

/* The --quiesce child: a CHECKPOINT (so that a phase does not pay for writing out the dirty
 * buffers of the one before), then waits (up to 60 s) until no autovacuum worker is busy in
 * this database (autovacuum starts on tables that just took many rows). */
static int quiesce_child(const char *conninfo)
{
    PGconn *db = PQconnectdb(conninfo);
    bool ok = PQstatus(db) == CONNECTION_OK && db_exec(db, "CHECKPOINT"), idle = false;

    for (int i = 0; ok && !idle && i < 600; i++) {
        PGresult *r = PQexec(db, "SELECT count(*) FROM pg_stat_activity WHERE backend_type ="
                                 " 'autovacuum worker' AND datname = current_database()");
        ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        idle = ok && strcmp(PQgetvalue(r, 0, 0), "0") == 0;
        PQclear(r);
        if (ok && !idle)
            usleep(100000);
    }
    if (!ok)
        fprintf(stderr, "ingest: quiesce: %s", PQerrorMessage(db));
    else if (!idle)
        fprintf(stderr, "ingest: quiesce: autovacuum still busy after 60 s; measuring anyway\n");
    PQfinish(db);
    return ok ? 0 : 1;
}

/* Before each measured phase: the database starts it as the one before it left it, written out
 * and without autovacuum at work. */
static bool quiesce(cfg *c)
{
    char out[16];

    return as_superuser(c, "--quiesce", NULL, 0, out, sizeof out);
}

/* Raw COPY of N rows like the HTTP phase's (same generator, own ids) under a random team id;
 * returns traces per second or -1. The evalbus role cannot COPY into ingest.traces (row-level
 * security is forced, and PostgreSQL refuses COPY FROM under it), so the COPY runs as the
 * cluster's superuser (as_superuser). The day partitions are created beforehand by the evalbus
 * role, as the writer would, so their owner does not change. */
static double baseline_copy(cfg *c, int run, double *bytes)
{
    char tag[48], base[32], n[32], out[128];
    const char *more[4] = {tag, base, c->base_team_id, n};
    long long base_ns = wall_ns();
    double elapsed = 0, data_bytes = 0;

    snprintf(tag, sizeof tag, "%s-c%d", c->run_tag, run);
    snprintf(base, sizeof base, "%lld", base_ns);
    snprintf(n, sizeof n, "%ld", c->traces);
    if (!c->base_team_id[0])
        uuid_v4(c->base_team_id, sizeof c->base_team_id);
    /* start times lie up to 2 minutes before base_ns */
    if (!ensure_partitions(c->db, base_ns - 121000000000LL, base_ns) || !quiesce(c))
        return -1;
    if (!as_superuser(c, "--copy-baseline", more, 4, out, sizeof out) ||
        sscanf(out, "%lf %lf", &elapsed, &data_bytes) != 2 || elapsed <= 0) {
        fprintf(stderr, "ingest: the baseline COPY failed\n");
        return -1;
    }
    *bytes = data_bytes;
    return (double)c->traces / elapsed;
}

#define BASELINE_RUNS 3

static double vm_kib(int pid, const char *field)
{
    char path[64], line[256];
    FILE *f;
    double v = -1;
    size_t n = strlen(field);

    snprintf(path, sizeof path, "/proc/%d/status", pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = atof(line + n + 1);
    fclose(f);
    return v;
}

static bool is_ingest(int pid)
{
    char path[64], name[64] = "";
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    f = fopen(path, "r");
    if (!f)
        return false;
    if (!fgets(name, sizeof name, f))
        name[0] = '\0';
    fclose(f);
    name[strcspn(name, "\n")] = '\0';
    return strcmp(name, "evalbus-ingest") == 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void cleanup_rows(cfg *c)
{
    char sql[1024];
    double t0 = now_s();

    snprintf(sql, sizeof sql,
             "DELETE FROM ingest.observations WHERE team_id IN ('%s', '%s');"
             "DELETE FROM ingest.trace_keys WHERE team_id IN ('%s', '%s');"
             "DELETE FROM ingest.traces WHERE team_id IN ('%s', '%s', '%s')",
             c->http_team_id, c->nats_team_id, c->http_team_id, c->nats_team_id, c->http_team_id,
             c->nats_team_id, c->base_team_id[0] ? c->base_team_id : c->http_team_id);
    if (!db_exec(c->db, sql))
        return;
    /* and their dead tuples, which a run after this one (the sustained one) would otherwise
     * wade through in every index it inserts into */
    if (db_exec(c->db, "VACUUM ingest.observations, ingest.trace_keys, ingest.traces"))
        fprintf(stderr, "ingest: deleted this run's rows and vacuumed in %.1f s\n", now_s() - t0);
}

static long env_long(const char *name, long def)
{
    const char *v = getenv(name);

    return v && *v ? atol(v) : def;
}

int main(int argc, char **argv)
{
    cfg c = {0};
    phase_result http = {0}, nats = {0}, warm = {0}, paced = {0};
    double base_rate = -1, base_bytes = 0, hwm = -1, *lat = NULL;
    long nbatches, paced_batches = 0;
    char tag[64], auth[600], cpu[512];
    int rc = 1;
    bool rows = false;
    long sustained_traces = 0;

    if (argc == 7 && strcmp(argv[1], "--copy-baseline") == 0)
        return copy_child(argv[2], argv[3], atoll(argv[4]), argv[5], atol(argv[6]));
    if (argc == 3 && strcmp(argv[1], "--quiesce") == 0)
        return quiesce_child(argv[2]);
    c.url = getenv("EVALBUS_INGEST_URL");
    c.nats_url = getenv("EVALBUS_NATS_URL");
    c.db_url = getenv("EVALBUS_DATABASE_URL");
    c.http_key = getenv("BENCH_INGEST_HTTP_KEY");
    c.nats_key = getenv("BENCH_INGEST_NATS_KEY");
    c.traces = env_long("BENCH_INGEST_TRACES", 50000);
    c.batch = 100;
    c.inflight = 8;
    c.paced_seconds = 15;
    c.timeout = 60;
    c.label = "ingest:";
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--http-team"))
            c.http_team = v;
        else if (!strcmp(a, "--nats-team"))
            c.nats_team = v;
        else if (!strcmp(a, "--traces"))
            c.traces = atol(v);
        else if (!strcmp(a, "--batch"))
            c.batch = atol(v);
        else if (!strcmp(a, "--inflight"))
            c.inflight = atoi(v);
        else if (!strcmp(a, "--pid"))
            c.pid = atoi(v);
        else if (!strcmp(a, "--nats-pid"))
            c.nats_pid = atoi(v);
        else if (!strcmp(a, "--pg-pid"))
            c.pg_pid = atoi(v);
        else if (!strcmp(a, "--paced-seconds"))
            c.paced_seconds = atof(v);
        else if (!strcmp(a, "--timeout"))
            c.timeout = atof(v);
        else if (!strcmp(a, "--sustained")) {
            c.sustained = true;
            sustained_traces = atol(v);
            c.label = "ingest sustained:";
        }
    }
    if (c.sustained) {
        c.traces = sustained_traces;
        if (c.timeout < (double)c.traces / 1000)
            c.timeout = (double)c.traces / 1000;
    }
    if (!c.url || !c.nats_url || !c.db_url || !c.http_key || !c.http_team || !c.nats_key ||
        !c.nats_team || c.batch < 1 || c.batch > 1000 || c.traces < c.batch || c.inflight < 1 ||
        c.inflight > MAX_INFLIGHT || c.paced_seconds <= 0 || c.timeout <= 0) {
        fprintf(stderr,
                "usage: ingest --http-team SLUG --nats-team SLUG [--traces N] "
                "[--batch B<=1000] [--inflight F<=%d] [--pid PID] [--nats-pid PID] "
                "[--pg-pid POSTMASTER_PID] [--paced-seconds S] "
                "[--timeout S] [--sustained N]\n"
                "with EVALBUS_INGEST_URL, EVALBUS_NATS_URL, EVALBUS_DATABASE_URL, "
                "BENCH_INGEST_HTTP_KEY and BENCH_INGEST_NATS_KEY set\n",
                MAX_INFLIGHT);
        return 2;
    }
    nbatches = c.traces / c.batch;
    c.traces = nbatches * c.batch;
    snprintf(c.run_tag, sizeof c.run_tag, "b%lx%x", (long)time(NULL) & 0xffffff,
             (unsigned)getpid() & 0xffff);
    snprintf(c.traces_url, sizeof c.traces_url, "%s/api/v1/traces", c.url);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", c.http_key);
    c.hdrs = curl_slist_append(c.hdrs, auth);
    c.hdrs = curl_slist_append(c.hdrs, "Content-Type: application/json");
    c.hdrs = curl_slist_append(c.hdrs, "Expect:");
    curl_global_init(CURL_GLOBAL_DEFAULT);

    c.db = db_connect(c.db_url);
    if (!c.db)
        goto cleanup;
    if (!team_id_of(c.db, c.http_team, c.http_team_id, sizeof c.http_team_id) ||
        !team_id_of(c.db, c.nats_team, c.nats_team_id, sizeof c.nats_team_id))
        goto cleanup;
    if (natsConnection_ConnectTo(&c.nc, c.nats_url) != NATS_OK) {
        fprintf(stderr, "ingest: cannot connect to NATS at %s\n", c.nats_url);
        goto cleanup;
    }
    rows = true;
    fprintf(stderr, "%s %ld traces in batches of %ld, %d in flight, run %s\n", c.label, c.traces,
            c.batch, c.inflight, c.run_tag);

    /* 1. HTTP */
    snprintf(tag, sizeof tag, "%s-hw", c.run_tag);
    if (!phase(&c, false, tag, 2, 0, NULL, &warm))
        goto cleanup;
    snprintf(tag, sizeof tag, "%s-h", c.run_tag);
    if (!quiesce(&c) || !phase(&c, false, tag, nbatches, 0, NULL, &http))
        goto cleanup;
    fprintf(stderr,
            "%s HTTP  %8.0f traces/s  (all accepted %.2f s, all committed %.2f s, "
            "%.0f B JSON per trace; %d count(*) took %.0f ms, the last %.1f ms)\n",
            c.label, http.rate, http.send_s, http.commit_s, http.bytes / (double)c.traces,
            http.polls.polls, http.polls.total_ms, http.polls.last_ms);
    cpu_text(&http.cpu, (double)c.traces, cpu, sizeof cpu);
    fprintf(stderr, "%s HTTP  CPU per trace: %s\n", c.label, cpu);

    /* 2. NATS */
    snprintf(tag, sizeof tag, "%s-nw", c.run_tag);
    if (!phase(&c, true, tag, 2, 0, NULL, &warm))
        goto cleanup;
    snprintf(tag, sizeof tag, "%s-n", c.run_tag);
    if (!quiesce(&c) || !phase(&c, true, tag, nbatches, 0, NULL, &nats))
        goto cleanup;
    fprintf(stderr,
            "%s NATS  %8.0f traces/s  (all acked    %.2f s, all committed %.2f s, "
            "%.0f B protobuf per trace; %d count(*) took %.0f ms, the last %.1f ms)\n",
            c.label, nats.rate, nats.send_s, nats.commit_s, nats.bytes / (double)c.traces,
            nats.polls.polls, nats.polls.total_ms, nats.polls.last_ms);
    cpu_text(&nats.cpu, (double)c.traces, cpu, sizeof cpu);
    fprintf(stderr, "%s NATS  CPU per trace: %s\n", c.label, cpu);

    /* 3. peak RSS of the ingest service so far (the run with the default size says it) */
    if (c.pid > 0 && !c.sustained) {
        if (!is_ingest(c.pid)) {
            fprintf(stderr, "ingest: process %d is not evalbus-ingest\n", c.pid);
            goto cleanup;
        }
        hwm = vm_kib(c.pid, "VmHWM");
        if (hwm < 0) {
            fprintf(stderr, "ingest: cannot read /proc/%d/status (is the ingest pid right?)\n",
                    c.pid);
            goto cleanup;
        }
        fprintf(stderr, "ingest: ingest service pid %d: peak RSS %.1f MiB, now %.1f MiB\n", c.pid,
                hwm / 1024, vm_kib(c.pid, "VmRSS") / 1024);
    }

    /* 4. baseline: the median of BASELINE_RUNS COPYs (one ~2 s COPY alone moved by +-15 %
     * between runs on a shared machine) */
    {
        double rates[BASELINE_RUNS], sorted[BASELINE_RUNS];
        for (int k = 0; k < BASELINE_RUNS; k++) {
            rates[k] = sorted[k] = baseline_copy(&c, k, &base_bytes);
            if (rates[k] <= 0)
                goto cleanup;
        }
        qsort(sorted, BASELINE_RUNS, sizeof *sorted, cmp_double);
        base_rate = sorted[BASELINE_RUNS / 2];
        fprintf(stderr,
                "%s COPY  %8.0f traces/s  (median of %d COPYs: %.0f, %.0f, %.0f; %.2f s, "
                "%.0f B per row; each one COPY into ingest.traces as the superuser: no "
                "trace_keys, observations, upsert or row-level security)\n",
                c.label, base_rate, BASELINE_RUNS, rates[0], rates[1], rates[2],
                (double)c.traces / base_rate, base_bytes / (double)c.traces);
    }
    {
        const char *suffix = c.sustained ? "_sustained" : "";
        printf("BENCH name=ingest_http%s value=%.0f unit=traces/s baseline=%.0f ratio=%.3f\n",
               suffix, http.rate, base_rate, http.rate / base_rate);
        printf("BENCH name=ingest_nats%s value=%.0f unit=traces/s baseline=%.0f ratio=%.3f\n",
               suffix, nats.rate, base_rate, nats.rate / base_rate);
    }
    if (c.sustained) { /* latency: the run with the default size says it */
        fflush(stdout);
        rc = 0;
        goto cleanup;
    }
    if (hwm >= 0)
        printf("BENCH name=ingest_rss value=%.1f unit=MiB baseline=- ratio=-\n", hwm / 1024);
    fflush(stdout);

    /* 5. HTTP latency at half the measured rate */
    {
        double rate = http.rate / 2 / (double)c.batch; /* batches per second */
        paced_batches = (long)(rate * c.paced_seconds);
        if (paced_batches < 20)
            paced_batches = 20;
        lat = calloc((size_t)paced_batches, sizeof *lat);
        /* 2 s at the same rate first, not measured: the latency asked for is that of a steady
         * half load, not of the seconds in which the previous phase's bulk COPY is still being
         * flushed and analyzed by PostgreSQL */
        snprintf(tag, sizeof tag, "%s-pw", c.run_tag);
        if (!quiesce(&c) || !phase(&c, false, tag, (long)(rate * 2) + 1, rate, NULL, &warm))
            goto cleanup;
        snprintf(tag, sizeof tag, "%s-p", c.run_tag);
        if (!phase(&c, false, tag, paced_batches, rate, lat, &paced))
            goto cleanup;
        qsort(lat, (size_t)paced_batches, sizeof *lat, cmp_double);
#define PCT(p) lat[(size_t)((double)(paced_batches - 1) * (p) + 0.5)]
        fprintf(stderr,
                "ingest: HTTP paced at %.0f traces/s (%.1f batches/s) for %.1f s: "
                "latency p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms "
                "(%ld requests, all committed %.2f s after the first)\n",
                rate * (double)c.batch, rate, paced.send_s, PCT(0.50), PCT(0.90), PCT(0.99),
                lat[paced_batches - 1], paced_batches, paced.commit_s);
        printf("BENCH name=ingest_http_p99 value=%.1f unit=ms baseline=- ratio=-\n", PCT(0.99));
        if (paced.visible_ms) {
            /* read-your-writes: from a batch's 202 until all its traces are committed */
            memcpy(lat, paced.visible_ms, (size_t)paced_batches * sizeof *lat);
            qsort(lat, (size_t)paced_batches, sizeof *lat, cmp_double);
            fprintf(stderr,
                    "ingest: stored after the 202 (until the stored event of a batch's last "
                    "trace): p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
                    PCT(0.50), PCT(0.99), lat[paced_batches - 1]);
            printf("BENCH name=ingest_visible_p99 value=%.1f unit=ms baseline=- ratio=-\n",
                   PCT(0.99));
            free(paced.visible_ms);
        }
#undef PCT
        fflush(stdout);
    }
    rc = 0;
cleanup:
    if (rows && c.db)
        cleanup_rows(&c);
    free(lat);
    if (c.db)
        PQfinish(c.db);
    natsConnection_Destroy(c.nc);
    nats_Close();
    curl_slist_free_all(c.hdrs);
    curl_global_cleanup();
    return rc;
}
