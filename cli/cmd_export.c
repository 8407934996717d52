/* cmd_export.c -- `evalbus export`: dataset exports through the export API, and the dataset
 * filter options that `evalbus stats` (cmd_stats.c) shares.
 *
 * `export --format FMT ...` POSTs a job to /api/v1/exports, then polls GET /api/v1/exports/{id}
 * every 500 ms until the job ends, showing its progress on stderr: a bar redrawn in place on a
 * terminal, otherwise a plain line every 2 s or when the state changes. A succeeded job's file is
 * downloaded only when --out names a local file or directory. The download endpoint answers the
 * bytes or a redirect to a presigned URL; libcurl is not let follow it: the Location is requested
 * again without the API key, so the key never leaves for the object store. The bytes stream into
 * a temporary file beside the target and are hashed as they come; the file is renamed into place
 * only if its length and SHA-256 match the job's result, else it is removed.
 * Ctrl-C while waiting cancels the job (DELETE) and exits 130; during a download it removes the
 * partial file and exits 130 (the job stays succeeded). The handler is one-shot
 * (SA_RESETHAND): a second Ctrl-C kills the process at once.
 * Ownership: each cJSON tree is freed by the function that parsed or built it; helpers returning
 * strings say who frees them. Threading: single-threaded; the SIGINT handler only sets a flag. */
#include "cli.h"
#include "evalbus/clock.h"
#include "evalbus/crypto.h"
#include "evalbus/json.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

enum {
    POLL_INTERVAL_MS = 500,   /* GET /api/v1/exports/{id} this often while waiting */
    PLAIN_PROGRESS_MS = 2000, /* a plain progress line at most this often (same state) */
    DRAW_INTERVAL_MS = 200,   /* download bar redraws */
    POLL_MAX_FAILURES = 10,   /* consecutive unreachable polls before giving up */
    MAX_REDIRECTS = 3,        /* hops after the API's own answer */
    LIST_DEFAULT = 20,        /* export list --limit */
    LIST_MAX = 1000,
    ERROR_BODY_MAX = 64 * 1024, /* kept of an error answer to a download */
};

static const char export_usage[] =
    "usage: evalbus export --format FMT [filters] [options]\n"
    "       evalbus export list [--state STATE] [--limit N]\n"
    "       evalbus export status ID | cancel ID | download ID [--out PATH]\n"
    "\n"
    "Exports traces as a data set (EVALBUS_URL, EVALBUS_API_KEY with scope exports:write;\n"
    "list, status and download need exports:read), waits for the job and shows its progress.\n"
    "\n"
    "formats: jsonl json csv openai-chat openai-preference anthropic sql-pairs\n"
    "filters (lists repeat the option: --model a --model b):\n"
    "  --since T, --until T   7d, 24h, 30m, 90s, 2w (back from now), YYYY-MM-DD, or RFC 3339\n"
    "  --project P  --model M  --provider P  --tag T\n"
    "  --status ok|error  --review accepted|rejected|needs_review|unreviewed\n"
    "  --score NAME:MIN:MAX   a score within bounds; either bound may be empty (quality:0.8:)\n"
    "  --successful-only\n"
    "options:\n"
    "  --fields a,b           only these fields      --exclude-fields c,d   all but these\n"
    "  --no-anonymize         keep PII (needs the admin role)\n"
    "  --compression gzip|zstd|none   default gzip\n"
    "  --out FILE|DIR         download the result there (checked against its SHA-256)\n"
    "  --out s3://bucket/prefix   write the result to this destination instead\n"
    "  --no-wait              print the job and return at once\n"
    "  --json                 print the final job as JSON\n"
    "Ctrl-C while waiting cancels the export and exits 130.\n";

/* ---- values the API accepts ---- */

typedef struct export_format_info {
    const char *name;
    const char *ext; /* of a generated file name */
} export_format_info;

static const export_format_info export_formats[] = {
    {"jsonl", ".jsonl"},
    {"json", ".json"},
    {"csv", ".csv"},
    {"openai-chat", ".jsonl"},
    {"openai-preference", ".jsonl"},
    {"anthropic", ".jsonl"},
    {"sql-pairs", ".jsonl"},
};

static const char *const compressions[] = {"gzip", "zstd", "none", NULL};
static const char *const statuses[] = {"ok", "error", NULL};
static const char *const review_states[] = {"accepted", "rejected", "needs_review", "unreviewed",
                                            NULL};
static const char *const job_states[] = {"queued", "running",   "succeeded",
                                         "failed", "cancelled", NULL};

static bool one_of(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (strcmp(*list, s) == 0)
            return true;
    return false;
}

/* "evalbus: --opt must be one of a, b, c, not 'x'" */
static int bad_choice(const char *option, const char *const *list, const char *value)
{
    fprintf(stderr, "evalbus: --%s must be one of ", option);
    for (const char *const *p = list; *p; p++)
        fprintf(stderr, "%s%s", p == list ? "" : ", ", *p);
    fprintf(stderr, "; not '%s'\n", value);
    return CLI_USAGE;
}

bool cli_export_format_valid(const char *format)
{
    for (size_t i = 0; i < ARRAY_LEN(export_formats); i++)
        if (strcmp(export_formats[i].name, format) == 0)
            return true;
    return false;
}

static int bad_format(const char *format)
{
    fprintf(stderr, "evalbus: --format must be one of ");
    for (size_t i = 0; i < ARRAY_LEN(export_formats); i++)
        fprintf(stderr, "%s%s", i ? ", " : "", export_formats[i].name);
    fprintf(stderr, "; not '%s'\n", format);
    return CLI_USAGE;
}

/* ---- small JSON readers (NULL objects allowed) ---- */

static const char *jstr(const cJSON *o, const char *name, const char *dflt)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(it) ? it->valuestring : dflt;
}

static bool jnum(const cJSON *o, const char *name, double *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);

    if (!cJSON_IsNumber(it))
        return false;
    *out = it->valuedouble;
    return true;
}

static const cJSON *jobj(const cJSON *o, const char *name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsObject(it) ? it : NULL;
}

static void print_json(const cJSON *o)
{
    char *s = cJSON_Print(o);
    puts(s ? s : "null");
    free(s);
}

/* ---- filters ---- */

bool cli_time_arg(const char *arg, time_t now, char out[CLI_TIME_LEN])
{
    static const struct {
        char unit;
        long long seconds;
    } units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}, {'w', 7LL * 86400}};
    const long long max_back = 100LL * 366 * 86400; /* a century is surely a typo beyond */
    size_t n = arg ? strlen(arg) : 0, digits = 0;
    struct tm tm;

    if (n == 0)
        return false;
    while (digits < n && arg[digits] >= '0' && arg[digits] <= '9')
        digits++;
    if (digits > 0 && digits == n - 1) { /* a duration: digits and one unit */
        long long v = 0;
        time_t t;

        if (digits > 10)
            return false;
        for (size_t i = 0; i < digits; i++)
            v = v * 10 + (arg[i] - '0');
        for (size_t u = 0; u < ARRAY_LEN(units); u++) {
            if (arg[n - 1] != units[u].unit)
                continue;
            if (v > max_back / units[u].seconds)
                return false;
            t = now - (time_t)(v * units[u].seconds);
            if (!gmtime_r(&t, &tm))
                return false;
            return strftime(out, CLI_TIME_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm) > 0;
        }
        return false;
    }
    if (n == 10 && digits == 4 && arg[4] == '-') { /* YYYY-MM-DD: midnight UTC */
        snprintf(out, CLI_TIME_LEN, "%.10sT00:00:00Z", arg);
        return eb_rfc3339_valid(out);
    }
    if (!eb_rfc3339_valid(arg)) /* also bounds the length to 40 */
        return false;
    memcpy(out, arg, n + 1);
    return true;
}

/* The repeatable filter options: option, member of the JSON filter, query parameter of
 * GET /api/v1/datasets/statistics, allowed values (NULL: any). */
typedef struct filter_list {
    int opt;
    const char *option;
    const char *key;
    const char *param;
    const char *const *values;
} filter_list;

static const filter_list filter_lists[] = {
    {CLI_OPT_PROJECT, "project", "projects", "project", NULL},
    {CLI_OPT_MODEL, "model", "models", "model", NULL},
    {CLI_OPT_PROVIDER, "provider", "providers", "provider", NULL},
    {CLI_OPT_STATUS, "status", "statuses", "status", statuses},
    {CLI_OPT_REVIEW, "review", "review_states", "review_state", review_states},
    {CLI_OPT_TAG, "tag", "tags", "tag", NULL},
};

static int add_list_value(cJSON *filter, const filter_list *fl, const char *arg)
{
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(filter, fl->key), *it;

    if (!*arg) {
        fprintf(stderr, "evalbus: --%s needs a value\n", fl->option);
        return CLI_USAGE;
    }
    if (fl->values && !one_of(fl->values, arg))
        return bad_choice(fl->option, fl->values, arg);
    if (!arr)
        arr = cJSON_AddArrayToObject(filter, fl->key);
    cJSON_ArrayForEach(it, arr)
    {
        if (cJSON_IsString(it) && strcmp(it->valuestring, arg) == 0)
            return CLI_OK; /* given twice: the set is the same */
    }
    cJSON_AddItemToArray(arr, cJSON_CreateString(arg));
    return CLI_OK;
}

/* One bound of --score: empty (absent) or a finite number. */
static bool score_bound(const char *s, size_t n, bool *has, double *v)
{
    char buf[64], *end;

    *has = n > 0;
    if (!n)
        return true;
    if (n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    errno = 0;
    *v = strtod(buf, &end);
    return end != buf && *end == '\0' && errno == 0 && isfinite(*v);
}

/* NAME:MIN:MAX, split at the last two colons so that NAME may hold colons. */
static int add_score(cJSON *filter, const char *arg)
{
    const char *c2 = strrchr(arg, ':'), *c1 = NULL;
    bool has_min, has_max;
    double min = 0, max = 0;
    cJSON *score;
    char *name;

    if (cJSON_GetObjectItemCaseSensitive(filter, "score")) {
        fprintf(stderr, "evalbus: --score may be given once\n");
        return CLI_USAGE;
    }
    for (const char *p = c2; p && p > arg;)
        if (*--p == ':') {
            c1 = p;
            break;
        }
    if (!c1 || c1 == arg || !score_bound(c1 + 1, (size_t)(c2 - c1 - 1), &has_min, &min) ||
        !score_bound(c2 + 1, strlen(c2 + 1), &has_max, &max) || (!has_min && !has_max)) {
        fprintf(stderr,
                "evalbus: --score wants NAME:MIN:MAX with a number for MIN, MAX or both "
                "(quality:0.8: or quality::0.2), not '%s'\n",
                arg);
        return CLI_USAGE;
    }
    if (has_min && has_max && min > max) {
        fprintf(stderr, "evalbus: --score %s: MIN is above MAX\n", arg);
        return CLI_USAGE;
    }
    name = eb_strndup(arg, (size_t)(c1 - arg));
    score = cJSON_AddObjectToObject(filter, "score");
    cJSON_AddStringToObject(score, "name", name);
    if (has_min)
        cJSON_AddNumberToObject(score, "min", min);
    if (has_max)
        cJSON_AddNumberToObject(score, "max", max);
    free(name);
    return CLI_OK;
}

int cli_filter_option(cJSON *filter, int opt, const char *arg, time_t now)
{
    char t[CLI_TIME_LEN];
    const char *key;

    switch (opt) {
    case CLI_OPT_SINCE:
    case CLI_OPT_UNTIL:
        key = opt == CLI_OPT_SINCE ? "since" : "until";
        if (!cli_time_arg(arg, now, t)) {
            fprintf(stderr,
                    "evalbus: --%s wants a duration back from now (7d, 24h, 30m, 90s, 2w), a "
                    "date (2025-01-31) or an RFC 3339 time (2025-01-31T12:00:00Z), not '%s'\n",
                    key, arg);
            return CLI_USAGE;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(filter, key); /* the last one given counts */
        cJSON_AddStringToObject(filter, key, t);
        return CLI_OK;
    case CLI_OPT_SCORE:
        return add_score(filter, arg);
    case CLI_OPT_SUCCESSFUL_ONLY:
        cJSON_DeleteItemFromObjectCaseSensitive(filter, "successful_only");
        cJSON_AddTrueToObject(filter, "successful_only");
        return CLI_OK;
    default:
        for (size_t i = 0; i < ARRAY_LEN(filter_lists); i++)
            if (filter_lists[i].opt == opt)
                return add_list_value(filter, &filter_lists[i], arg);
        fprintf(stderr, "evalbus: unknown filter option %d\n", opt); /* a bug */
        return CLI_USAGE;
    }
}

/* Appends name=value (value percent-encoded, RFC 3986 unreserved bytes kept) to a query. */
static void put_param(eb_buf *q, const char *name, const char *value)
{
    if (q->len)
        eb_buf_putc(q, '&');
    eb_buf_puts(q, name);
    eb_buf_putc(q, '=');
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~')
            eb_buf_putc(q, (char)*p);
        else
            eb_buf_printf(q, "%%%02X", *p);
    }
}

char *cli_filter_query(const cJSON *filter, const char *format)
{
    eb_buf q = {0};
    const char *s;

    if ((s = jstr(filter, "since", NULL)))
        put_param(&q, "since", s);
    if ((s = jstr(filter, "until", NULL)))
        put_param(&q, "until", s);
    for (size_t i = 0; i < ARRAY_LEN(filter_lists); i++) {
        const cJSON *it, *arr = cJSON_GetObjectItemCaseSensitive(filter, filter_lists[i].key);
        cJSON_ArrayForEach(it, arr)
        {
            if (cJSON_IsString(it))
                put_param(&q, filter_lists[i].param, it->valuestring);
        }
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(filter, "successful_only")))
        put_param(&q, "successful_only", "true");
    if (format)
        put_param(&q, "format", format);
    return q.data ? eb_buf_steal(&q) : eb_strdup("");
}

/* ---- progress ---- */

/* 1234567 -> "1,234,567"; "?" for what is not a count. */
static void fmt_count(double v, char *out, size_t cap)
{
    char digits[32];
    size_t n, j = 0;

    if (!(v >= 0 && v < 1e18)) {
        snprintf(out, cap, "?");
        return;
    }
    n = (size_t)snprintf(digits, sizeof(digits), "%llu", (unsigned long long)(v + 0.5));
    for (size_t i = 0; i < n && j + 2 < cap; i++) {
        if (i > 0 && (n - i) % 3 == 0)
            out[j++] = ',';
        out[j++] = digits[i];
    }
    out[j] = '\0';
}

/* Bytes in SI units: "999 B", "1.2 kB", "123.4 MB". */
static void fmt_bytes(double v, char *out, size_t cap)
{
    static const char *const units[] = {"kB", "MB", "GB", "TB", "PB"};
    size_t u = 0;

    if (!(v >= 0 && v < 1e20)) {
        snprintf(out, cap, "?");
        return;
    }
    if (v < 1000) {
        snprintf(out, cap, "%.0f B", v);
        return;
    }
    v /= 1000;
    while (v >= 999.95 && u + 1 < ARRAY_LEN(units)) {
        v /= 1000;
        u++;
    }
    snprintf(out, cap, "%.1f %s", v, units[u]);
}

/* Seconds as "45s", "1m05s", "2h03m", "3d04h". */
static void fmt_duration(double s, char *out, size_t cap)
{
    long long t;

    if (!(s >= 0 && s < 1e9)) {
        snprintf(out, cap, "?");
        return;
    }
    t = (long long)(s + 0.5);
    if (t < 60)
        snprintf(out, cap, "%llds", t);
    else if (t < 3600)
        snprintf(out, cap, "%lldm%02llds", t / 60, t % 60);
    else if (t < 86400)
        snprintf(out, cap, "%lldh%02lldm", t / 3600, t % 3600 / 60);
    else
        snprintf(out, cap, "%lldd%02lldh", t / 86400, t % 86400 / 3600);
}

void cli_export_progress_line(const cJSON *job, int width, char *out, size_t cap)
{
    const cJSON *p = jobj(job, "progress");
    const char *state = jstr(job, "state", "?");
    bool running = strcmp(state, "running") == 0;
    double rows = 0, bytes = 0, total = 0, pct = 0, rate = 0, eta = 0;
    bool has_rows = jnum(p, "rows", &rows), has_pct = running && jnum(p, "percent", &pct);
    char parts[4][48], num[32], rest[256] = "", bar[40] = "";
    size_t n = 0, used = 0;

    if (cap == 0)
        return;
    if (running && !has_pct && has_rows && jnum(p, "total_rows", &total) && total > 0) {
        pct = 100.0 * rows / total;
        has_pct = true;
    }
    if (has_pct)
        pct = pct < 0 ? 0 : pct > 100 ? 100 : pct;
    if (strcmp(state, "queued") != 0) {
        if (has_rows) {
            fmt_count(rows, num, sizeof(num));
            snprintf(parts[n++], sizeof(parts[0]), "%s rows", num);
        }
        if (jnum(p, "bytes", &bytes))
            fmt_bytes(bytes, parts[n++], sizeof(parts[0]));
        if (running && jnum(p, "rows_per_second", &rate) && rate >= 0) {
            fmt_count(rate, num, sizeof(num));
            snprintf(parts[n++], sizeof(parts[0]), "%s rows/s", num);
        }
        if (running && jnum(p, "eta_seconds", &eta) && eta >= 0) { /* -1: unknown */
            fmt_duration(eta, num, sizeof(num));
            snprintf(parts[n++], sizeof(parts[0]), "ETA %s", num);
        }
    }
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(rest + used, sizeof(rest) - used, "%s%s",
                                 i ? (width > 0 ? "  " : ", ") : "", parts[i]);
    if (width <= 0) {
        char pct_text[16] = "";
        if (has_pct)
            snprintf(pct_text, sizeof(pct_text), "%.1f%%", pct);
        snprintf(out, cap, "%s%s%s%s%s", state, has_pct || n ? ": " : "", pct_text,
                 has_pct && n ? ", " : "", rest);
        return;
    }
    if (has_pct) {
        /* "[bar]" in place of the state (a bar means running), "  " and "%5.1f%%" (6), then
         * "  " and the rest. The bar takes the widest of a few sizes that fits, so it keeps
         * its size while the numbers grow; none if even 10 does not fit. */
        static const int sizes[] = {30, 20, 15, 10};
        int room = width - 1 - 2 - 8 - (n ? 2 + (int)used : 0), bw = 0;
        for (size_t i = 0; i < ARRAY_LEN(sizes) && !bw; i++)
            if (room >= sizes[i])
                bw = sizes[i];
        if (bw) {
            int filled = (int)(pct * bw / 100);
            bar[0] = '[';
            for (int i = 0; i < bw; i++)
                bar[1 + i] = (char)(i < filled ? '=' : i == filled ? '>' : ' ');
            bar[1 + bw] = ']';
            bar[2 + bw] = '\0';
        }
        snprintf(out, cap, "%s  %5.1f%%%s%s", bw ? bar : state, pct, n ? "  " : "", rest);
    } else {
        snprintf(out, cap, "%s%s%s", state, n ? "  " : "", rest);
    }
    if (strlen(out) > (size_t)(width - 1))
        out[width > 1 ? width - 1 : 0] = '\0';
}

/* The progress display on stderr: at most one open (newline-less) line at a time. */
static bool line_open;

static void end_line(void)
{
    if (line_open) {
        fputc('\n', stderr);
        line_open = false;
    }
}

static void draw_line(const char *text)
{
    fprintf(stderr, "\r%s\033[K", text);
    fflush(stderr);
    line_open = true;
}

static int term_width(void)
{
    struct winsize ws;

    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

/* ---- Ctrl-C ---- */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void catch_sigint(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* one-shot: a second Ctrl-C kills */
    sigaction(SIGINT, &sa, NULL);
}

/* Sleeps ms milliseconds, less if Ctrl-C comes. */
static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !interrupted)
        ;
}

/* ---- jobs ---- */

static bool job_finished(const cJSON *job)
{
    const char *s = jstr(job, "state", "");
    return strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 || strcmp(s, "cancelled") == 0;
}

/* Reads an ID argument into id (canonical lowercase UUID). */
static int parse_id(const char *arg, char id[37])
{
    size_t n = strlen(arg);

    for (size_t i = 0; i < n && i < 36; i++)
        id[i] = (char)(arg[i] >= 'A' && arg[i] <= 'F' ? arg[i] - 'A' + 'a' : arg[i]);
    id[n < 36 ? n : 36] = '\0';
    if (n != 36 || !eb_uuid_valid(id)) {
        fprintf(stderr, "evalbus: '%s' is not an export id (see evalbus export list)\n", arg);
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* One line "label: k1 n1, k2 n2, ..." of a {key: count} object (largest first, at most 6). */
static void print_counts(const char *label, const cJSON *obj)
{
    const cJSON *r, *best[6] = {0};
    char num[32];
    int n = 0;

    if (!cJSON_IsObject(obj) || !obj->child)
        return;
    cJSON_ArrayForEach(r, obj)
    {
        if (!cJSON_IsNumber(r) || r->valuedouble <= 0)
            continue;
        for (int i = 0; i < 6; i++) {
            if (!best[i] || r->valuedouble > best[i]->valuedouble) {
                for (int k = 5; k > i; k--)
                    best[k] = best[k - 1];
                best[i] = r;
                break;
            }
        }
    }
    for (int i = 0; i < 6 && best[i]; i++) {
        fmt_count(best[i]->valuedouble, num, sizeof(num));
        printf("%s%s %s", n++ ? ", " : label, best[i]->string, num);
    }
    if (n)
        printf("\n");
}

/* The job's statistics highlights: records and skipped records by reason. */
static void print_statistics(const cJSON *stats)
{
    const cJSON *reasons = cJSON_GetObjectItemCaseSensitive(stats, "skipped_by_reason");
    const cJSON *skipped = cJSON_GetObjectItemCaseSensitive(stats, "skipped");
    const cJSON *red = cJSON_GetObjectItemCaseSensitive(stats, "redactions");
    char num[32];
    double v;

    if (jnum(stats, "records", &v)) {
        fmt_count(v, num, sizeof(num));
        printf("records:   %s\n", num);
    }
    if (cJSON_IsNumber(skipped)) {
        fmt_count(skipped->valuedouble, num, sizeof(num));
        printf("skipped:   %s\n", num);
    }
    print_counts("  reasons: ", reasons);
    print_counts("models:    ", cJSON_GetObjectItemCaseSensitive(stats, "by_model"));
    print_counts("projects:  ", cJSON_GetObjectItemCaseSensitive(stats, "by_project"));
    print_counts("reviews:   ", cJSON_GetObjectItemCaseSensitive(stats, "by_review_state"));
    if (jnum(red, "total", &v) && v > 0)
        print_counts("redacted:  ", cJSON_GetObjectItemCaseSensitive(red, "by_kind"));
}

/* A human summary of a job; saved is the local file it was downloaded to, or NULL. */
static void print_job(const cJSON *job, const char *saved)
{
    const cJSON *result = jobj(job, "result"), *err = jobj(job, "error");
    const cJSON *anon = cJSON_GetObjectItemCaseSensitive(job, "anonymize");
    const char *id = jstr(job, "id", "-"), *url = jstr(result, "url", NULL);
    char num[32], line[256];
    double v;

    printf("id:        %s\n", id);
    printf("state:     %s\n", jstr(job, "state", "-"));
    printf("format:    %s, %s, %s\n", jstr(job, "format", "-"), jstr(job, "compression", "-"),
           cJSON_IsFalse(anon) ? "not anonymized" : "anonymized");
    printf("created:   %s\n", jstr(job, "created_at", "-"));
    if (jstr(job, "finished_at", NULL))
        printf("finished:  %s\n", jstr(job, "finished_at", NULL));
    if (!job_finished(job)) {
        cli_export_progress_line(job, 0, line, sizeof(line));
        printf("progress:  %s\n", line);
    }
    if (result) {
        if (jnum(result, "rows", &v)) {
            fmt_count(v, num, sizeof(num));
            printf("rows:      %s\n", num);
        }
        if (jnum(result, "bytes", &v)) {
            fmt_bytes(v, num, sizeof(num));
            printf("bytes:     %.0f (%s)\n", v, num);
        }
        printf("sha256:    %s\n", jstr(result, "sha256", "-"));
        if (saved)
            printf("saved to:  %s\n", saved);
        else if (url)
            printf("url:       %s\n", url);
        print_statistics(jobj(result, "statistics"));
        if (!saved)
            printf("download:  evalbus export download %s --out FILE\n", id);
    }
    if (err)
        printf("error:     %s (%s)\n", jstr(err, "message", "-"), jstr(err, "code", "-"));
}

/* Polls the job until it finishes; *job is replaced by each answer. CLI_INTERRUPTED on Ctrl-C. */
static int wait_job(const cli_env *env, const char *id, cJSON **job)
{
    bool tty = isatty(STDERR_FILENO);
    char *path = eb_asprintf("/api/v1/exports/%s", id);
    char line[512], last_state[16] = "";
    long long last_plain = 0;
    int rc = CLI_OK, failures = 0;

    cli_set_error_hook(end_line);
    for (;;) {
        const char *state = jstr(*job, "state", "?");
        cJSON *next = NULL;

        if (tty) {
            cli_export_progress_line(*job, term_width(), line, sizeof(line));
            draw_line(line);
        } else if (strcmp(state, last_state) != 0 ||
                   eb_monotonic_ms() - last_plain >= PLAIN_PROGRESS_MS) {
            cli_export_progress_line(*job, 0, line, sizeof(line));
            fprintf(stderr, "export %s: %s\n", id, line);
            last_plain = eb_monotonic_ms();
        }
        snprintf(last_state, sizeof(last_state), "%s", state);
        if (job_finished(*job))
            break;
        if (!interrupted)
            sleep_ms(POLL_INTERVAL_MS);
        if (interrupted) {
            rc = CLI_INTERRUPTED;
            break;
        }
        rc = cli_api(env, "GET", path, NULL, &next);
        if (rc == CLI_UNAVAILABLE && ++failures < POLL_MAX_FAILURES) {
            rc = CLI_OK; /* the message is printed; try again */
            continue;
        }
        if (rc == CLI_OK && !cJSON_IsObject(next)) {
            fprintf(stderr, "evalbus: the server answered an empty job\n");
            rc = CLI_FAILURE;
        }
        if (rc != CLI_OK) {
            cJSON_Delete(next);
            break;
        }
        failures = 0;
        cJSON_Delete(*job);
        *job = next;
    }
    end_line();
    cli_set_error_hook(NULL);
    free(path);
    return rc;
}

/* After Ctrl-C: cancels the job and returns CLI_INTERRUPTED whatever the answer. */
static int cancel_interrupted(const cli_env *env, const char *id)
{
    char *path = eb_asprintf("/api/v1/exports/%s", id);
    cJSON *out = NULL;

    fprintf(stderr, "evalbus: interrupted; cancelling export %s\n", id);
    if (cli_api(env, "DELETE", path, NULL, &out) == CLI_OK)
        fprintf(stderr, "evalbus: export %s %s\n", id, jstr(out, "state", "cancelled"));
    cJSON_Delete(out);
    free(path);
    return CLI_INTERRUPTED;
}

/* ---- download ---- */

typedef struct download {
    CURL *curl;
    FILE *file;
    const char *path; /* of file, for messages */
    EVP_MD_CTX *md;
    eb_buf err;              /* body of an answer other than 200 (its start) */
    long code;               /* status of the current answer, read at its first body byte */
    unsigned long long got;  /* bytes written to file */
    unsigned long long want; /* result.bytes */
    bool has_want, too_long, write_failed, tty;
    int write_errno;
    long long last_draw;
} download;

static size_t dl_write(char *p, size_t size, size_t nmemb, void *ud)
{
    download *d = ud;
    size_t len = size * nmemb;

    if (!d->code)
        curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &d->code);
    if (d->code != 200) {
        if (d->err.len < ERROR_BODY_MAX)
            eb_buf_append(&d->err, p, len < ERROR_BODY_MAX ? len : ERROR_BODY_MAX);
        return len;
    }
    if (d->has_want && d->got + len > d->want) {
        d->too_long = true;
        return 0;
    }
    if (fwrite(p, 1, len, d->file) != len) {
        d->write_failed = true;
        d->write_errno = errno;
        return 0;
    }
    EVP_DigestUpdate(d->md, p, len);
    d->got += len;
    return len;
}

static int dl_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    download *d = ud;
    char got[32], total[32], line[128];

    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    if (interrupted)
        return 1;
    if (d->tty && d->code == 200 && eb_monotonic_ms() - d->last_draw >= DRAW_INTERVAL_MS) {
        fmt_bytes((double)d->got, got, sizeof(got));
        if (d->has_want && d->want > 0) {
            fmt_bytes((double)d->want, total, sizeof(total));
            snprintf(line, sizeof(line), "downloading  %5.1f%%  %s of %s",
                     100.0 * (double)d->got / (double)d->want, got, total);
        } else {
            snprintf(line, sizeof(line), "downloading  %s", got);
        }
        draw_line(line);
        d->last_draw = eb_monotonic_ms();
    }
    return 0;
}

/* GETs url into d, with the header auth unless it is NULL. CLI_OK after a 200, or after a
 * redirect with *location set (the caller frees); otherwise prints why and returns an exit
 * code. from_api: the answer is the API's (JSON errors), else the object store's. */
static int dl_get(download *d, const char *url, const char *auth, bool from_api, char **location)
{
    struct curl_slist *hdrs = NULL;
    const char *where = from_api ? "the API" : "the object store";
    char *redirect = NULL;
    long code = 0;
    CURLcode cc;
    int rc = CLI_FAILURE;

    *location = NULL;
    d->code = 0;
    eb_buf_reset(&d->err);
    d->curl = curl_easy_init();
    if (!d->curl) {
        fprintf(stderr, "evalbus: cannot initialise libcurl\n");
        return CLI_FAILURE;
    }
    if (auth)
        hdrs = curl_slist_append(hdrs, auth);
    curl_easy_setopt(d->curl, CURLOPT_URL, url);
    curl_easy_setopt(d->curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(d->curl, CURLOPT_FOLLOWLOCATION, 0L); /* redirects: without the key */
    curl_easy_setopt(d->curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(d->curl, CURLOPT_WRITEFUNCTION, dl_write);
    curl_easy_setopt(d->curl, CURLOPT_WRITEDATA, d);
    curl_easy_setopt(d->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(d->curl, CURLOPT_XFERINFOFUNCTION, dl_progress);
    curl_easy_setopt(d->curl, CURLOPT_XFERINFODATA, d);
    curl_easy_setopt(d->curl, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(d->curl, CURLOPT_LOW_SPEED_LIMIT, 1L); /* stalled 60 s: give up */
    curl_easy_setopt(d->curl, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(d->curl, CURLOPT_USERAGENT, "evalbus-cli/0.1");
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(d->curl, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(d->curl, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    cc = curl_easy_perform(d->curl);
    end_line();
    if (interrupted) {
        rc = CLI_INTERRUPTED;
    } else if (d->too_long) {
        fprintf(stderr, "evalbus: the download is longer than the export's %llu bytes\n", d->want);
    } else if (d->write_failed) {
        fprintf(stderr, "evalbus: cannot write %s: %s\n", d->path, strerror(d->write_errno));
    } else if (cc != CURLE_OK) {
        fprintf(stderr, "evalbus: download from %s failed: %s\n", where, curl_easy_strerror(cc));
        rc = CLI_UNAVAILABLE;
    } else {
        curl_easy_getinfo(d->curl, CURLINFO_RESPONSE_CODE, &code);
        if (code == 200) {
            rc = CLI_OK;
        } else if (code == 301 || code == 302 || code == 303 || code == 307 || code == 308) {
            curl_easy_getinfo(d->curl, CURLINFO_REDIRECT_URL, &redirect); /* absolute */
            if (redirect) {
                *location = eb_strdup(redirect);
                rc = CLI_OK;
            } else {
                fprintf(stderr, "evalbus: %s answered %ld without a usable Location\n", where,
                        code);
            }
        } else if (from_api) {
            cli_print_api_error(code, d->err.data, d->err.len);
            rc = cli_exit_for_http(code);
        } else {
            fprintf(stderr, "evalbus: the object store answered %ld\n", code);
            rc = code >= 500 ? CLI_UNAVAILABLE : CLI_FAILURE;
        }
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(d->curl);
    d->curl = NULL;
    return rc;
}

/* Downloads the file of job id (succeeded) to target through a temporary file beside it,
 * checking length and SHA-256 against job.result; target is replaced only if both match. */
static int download_result(const cli_env *env, const char *id, const cJSON *job, const char *target)
{
    const cJSON *result = jobj(job, "result");
    const char *want_sha = jstr(result, "sha256", NULL);
    download d = {0};
    char *tmp = NULL, *url = NULL, *auth = NULL, *location = NULL;
    unsigned char digest[32];
    char hex[65];
    double bytes;
    int fd, rc = CLI_FAILURE;

    if (!env->api_key || !*env->api_key) {
        fprintf(stderr, "evalbus: no API key: set EVALBUS_API_KEY or pass --api-key\n");
        return CLI_USAGE;
    }
    if (!want_sha || strlen(want_sha) != 64) {
        fprintf(stderr, "evalbus: export %s has no SHA-256 to check a download against\n", id);
        return CLI_FAILURE;
    }
    if (jnum(result, "bytes", &bytes) && bytes >= 0 && bytes < 1e19) {
        d.want = (unsigned long long)bytes;
        d.has_want = true;
    }
    tmp = eb_asprintf("%s.part-XXXXXX", target);
    fd = mkstemp(tmp);
    if (fd < 0) {
        fprintf(stderr, "evalbus: cannot create %s: %s\n", tmp, strerror(errno));
        free(tmp);
        tmp = NULL;
        goto cleanup;
    }
    d.file = fdopen(fd, "wb");
    if (!d.file) {
        fprintf(stderr, "evalbus: cannot open %s: %s\n", tmp, strerror(errno));
        close(fd);
        goto cleanup;
    }
    d.path = tmp;
    d.tty = isatty(STDERR_FILENO);
    d.md = EVP_MD_CTX_new();
    if (!d.md || EVP_DigestInit_ex(d.md, EVP_sha256(), NULL) != 1) {
        fprintf(stderr, "evalbus: cannot start SHA-256\n");
        goto cleanup;
    }
    url = eb_asprintf("%s/api/v1/exports/%s/download", env->url, id);
    auth = eb_asprintf("Authorization: Bearer %s", env->api_key);
    rc = dl_get(&d, url, auth, true, &location);
    for (int hop = 0; rc == CLI_OK && location; hop++) {
        if (hop == MAX_REDIRECTS) {
            fprintf(stderr, "evalbus: the download redirects more than %d times\n", MAX_REDIRECTS);
            rc = CLI_FAILURE;
            break;
        }
        free(url);
        url = location;
        rc = dl_get(&d, url, NULL, false, &location); /* never the key to another host */
    }
    if (rc != CLI_OK)
        goto cleanup;
    rc = CLI_FAILURE;
    if (fflush(d.file) != 0 || fsync(fileno(d.file)) != 0) {
        fprintf(stderr, "evalbus: cannot write %s: %s\n", tmp, strerror(errno));
        goto cleanup;
    }
    if (fclose(d.file) != 0) {
        d.file = NULL;
        fprintf(stderr, "evalbus: cannot write %s: %s\n", tmp, strerror(errno));
        goto cleanup;
    }
    d.file = NULL;
    EVP_DigestFinal_ex(d.md, digest, NULL);
    eb_hex_encode(digest, sizeof(digest), hex);
    if (d.has_want && d.got != d.want) {
        fprintf(stderr, "evalbus: downloaded %llu bytes but the export has %llu; not saved\n",
                d.got, d.want);
        goto cleanup;
    }
    if (strcasecmp(hex, want_sha) != 0) {
        fprintf(stderr, "evalbus: the download's SHA-256 is %s but the export's is %s; not saved\n",
                hex, want_sha);
        goto cleanup;
    }
    if (rename(tmp, target) != 0) {
        fprintf(stderr, "evalbus: cannot rename %s to %s: %s\n", tmp, target, strerror(errno));
        goto cleanup;
    }
    free(tmp);
    tmp = NULL;
    rc = CLI_OK;
cleanup:
    if (d.file)
        fclose(d.file);
    if (tmp) {
        unlink(tmp);
        free(tmp);
    }
    if (rc == CLI_INTERRUPTED)
        fprintf(stderr, "evalbus: interrupted; the partial download was removed\n");
    if (auth)
        eb_cleanse(auth, strlen(auth));
    EVP_MD_CTX_free(d.md);
    eb_buf_free(&d.err);
    free(url);
    free(auth);
    free(location);
    return rc;
}

static bool safe_file_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 255 || s[0] == '.')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '/' || *p == '\\')
            return false;
    return true;
}

char *cli_export_target_path(const char *out, bool out_is_dir, const cJSON *job)
{
    const char *name = jstr(jobj(job, "result"), "file_name", NULL);
    const char *id = jstr(job, "id", ""), *format = jstr(job, "format", "");
    const char *compression = jstr(job, "compression", ""), *ext = "";
    size_t n = strlen(out);
    char *generated = NULL, *path;

    if (!out_is_dir)
        return eb_strdup(out);
    if (!safe_file_name(name)) {
        for (size_t i = 0; i < ARRAY_LEN(export_formats); i++)
            if (strcmp(export_formats[i].name, format) == 0)
                ext = export_formats[i].ext;
        generated = eb_asprintf("export-%s%s%s", eb_uuid_valid(id) ? id : "unknown", ext,
                                strcmp(compression, "gzip") == 0   ? ".gz"
                                : strcmp(compression, "zstd") == 0 ? ".zst"
                                                                   : "");
        name = generated;
    }
    path = eb_asprintf("%s%s%s", out, n && out[n - 1] == '/' ? "" : "/", name);
    free(generated);
    return path;
}

/* Checks a local --out before anything runs: an existing directory (*is_dir), or a file whose
 * directory exists and is writable. */
static int check_local_out(const char *out, bool *is_dir)
{
    struct stat st;
    size_t n = strlen(out);
    const char *slash = strrchr(out, '/');
    char *dir;
    int rc = CLI_OK;

    *is_dir = stat(out, &st) == 0 && S_ISDIR(st.st_mode);
    if (!*is_dir && n && out[n - 1] == '/') {
        fprintf(stderr, "evalbus: --out %s: no such directory\n", out);
        return CLI_USAGE;
    }
    if (*is_dir)
        dir = eb_strdup(out);
    else if (!slash)
        dir = eb_strdup(".");
    else
        dir = slash == out ? eb_strdup("/") : eb_strndup(out, (size_t)(slash - out));
    if (access(dir, W_OK) != 0) {
        fprintf(stderr, "evalbus: --out %s: cannot write in %s: %s\n", out, dir, strerror(errno));
        rc = CLI_USAGE;
    }
    free(dir);
    return rc;
}

/* Adds the comma-separated names of list to fields[key] (created on first use). */
static int add_fields(cJSON *fields, const char *key, const char *option, const char *list)
{
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(fields, key);
    char *copy = eb_strdup(list), *tok, *save = NULL;
    int added = 0;

    if (!arr)
        arr = cJSON_AddArrayToObject(fields, key);
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok) {
            cJSON_AddItemToArray(arr, cJSON_CreateString(tok));
            added++;
        }
    }
    free(copy);
    if (!added) {
        fprintf(stderr, "evalbus: --%s needs field names: a,b,c\n", option);
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* ---- commands ---- */

static int export_create(const cli_env *env, int argc, char **argv)
{
    static const struct option opts[] = {CLI_FILTER_OPTIONS,
                                         {"format", required_argument, NULL, 'f'},
                                         {"fields", required_argument, NULL, 'i'},
                                         {"exclude-fields", required_argument, NULL, 'x'},
                                         {"no-anonymize", no_argument, NULL, 'A'},
                                         {"compression", required_argument, NULL, 'c'},
                                         {"out", required_argument, NULL, 'o'},
                                         {"no-wait", no_argument, NULL, 'W'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    cJSON *filter = cJSON_CreateObject(), *fields = cJSON_CreateObject(), *body = NULL;
    cJSON *job = NULL;
    const char *format = NULL, *compression = NULL, *out = NULL, *state;
    bool anonymize = true, no_wait = false, out_is_dir = false, to_store;
    char id[37], *target = NULL;
    time_t now = time(NULL);
    int o, rc = CLI_OK;

    optind = 0;
    while (rc == CLI_OK && (o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (o >= CLI_OPT_SINCE && o < CLI_OPT_FILTER_END) {
            rc = cli_filter_option(filter, o, optarg, now);
            continue;
        }
        switch (o) {
        case 'f':
            format = optarg;
            if (!cli_export_format_valid(format))
                rc = bad_format(format);
            break;
        case 'i':
            rc = add_fields(fields, "include", "fields", optarg);
            break;
        case 'x':
            rc = add_fields(fields, "exclude", "exclude-fields", optarg);
            break;
        case 'A':
            anonymize = false;
            break;
        case 'c':
            compression = optarg;
            if (!one_of(compressions, compression))
                rc = bad_choice("compression", compressions, compression);
            break;
        case 'o':
            out = optarg;
            break;
        case 'W':
            no_wait = true;
            break;
        case 'h':
            fputs(export_usage, stdout);
            goto cleanup;
        default:
            fputs(export_usage, stderr);
            rc = CLI_USAGE;
        }
    }
    if (rc != CLI_OK)
        goto cleanup;
    if (optind < argc) {
        fprintf(stderr, "evalbus: unexpected argument '%s'\n%s", argv[optind], export_usage);
        rc = CLI_USAGE;
        goto cleanup;
    }
    if (!format) {
        fprintf(stderr, "evalbus: export needs --format\n%s", export_usage);
        rc = CLI_USAGE;
        goto cleanup;
    }
    to_store = out && strncmp(out, "s3://", 5) == 0;
    if (out && !*out) {
        fprintf(stderr, "evalbus: --out needs a file, a directory or s3://bucket/prefix\n");
        rc = CLI_USAGE;
    } else if (to_store && (out[5] == '\0' || out[5] == '/')) {
        fprintf(stderr, "evalbus: --out %s: no bucket (s3://bucket/prefix)\n", out);
        rc = CLI_USAGE;
    } else if (out && !to_store && no_wait) {
        fprintf(stderr,
                "evalbus: --no-wait cannot download to %s; later run: evalbus export "
                "download ID --out %s\n",
                out, out);
        rc = CLI_USAGE;
    } else if (out && !to_store) {
        rc = check_local_out(out, &out_is_dir);
    }
    if (rc != CLI_OK)
        goto cleanup;

    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "format", format);
    cJSON_AddItemToObject(body, "filter", filter);
    filter = NULL;
    if (fields->child) {
        cJSON_AddItemToObject(body, "fields", fields);
        fields = NULL;
    }
    cJSON_AddBoolToObject(body, "anonymize", anonymize);
    if (compression)
        cJSON_AddStringToObject(body, "compression", compression);
    if (to_store)
        cJSON_AddStringToObject(body, "destination", out);

    catch_sigint(); /* from here Ctrl-C cancels the job, once it has an id */
    rc = cli_api(env, "POST", "/api/v1/exports", body, &job);
    if (rc != CLI_OK)
        goto cleanup;
    if (!eb_uuid_valid(jstr(job, "id", NULL))) {
        fprintf(stderr, "evalbus: the server answered a job without an id\n");
        rc = CLI_FAILURE;
        goto cleanup;
    }
    memcpy(id, jstr(job, "id", NULL), sizeof(id));
    if (interrupted) {
        rc = cancel_interrupted(env, id);
        goto cleanup;
    }
    if (no_wait) {
        if (env->json)
            print_json(job);
        else
            printf("export %s %s\nfollow it with: evalbus export status %s\n", id,
                   jstr(job, "state", "queued"), id);
        goto cleanup;
    }
    fprintf(stderr, "export %s created; Ctrl-C cancels it\n", id);
    rc = wait_job(env, id, &job);
    if (rc == CLI_INTERRUPTED) {
        rc = cancel_interrupted(env, id);
        goto cleanup;
    }
    if (rc != CLI_OK) {
        fprintf(stderr, "evalbus: export %s may still be running: evalbus export status %s\n", id,
                id);
        goto cleanup;
    }
    state = jstr(job, "state", "?");
    if (strcmp(state, "succeeded") == 0 && out && !to_store) {
        target = cli_export_target_path(out, out_is_dir, job);
        rc = download_result(env, id, job, target);
        if (rc != CLI_OK)
            goto cleanup;
    }
    if (env->json)
        print_json(job);
    else
        print_job(job, rc == CLI_OK ? target : NULL);
    if (strcmp(state, "failed") == 0) {
        const cJSON *e = jobj(job, "error");
        fprintf(stderr, "evalbus: export %s failed: %s (%s)\n", id, jstr(e, "message", "-"),
                jstr(e, "code", "-"));
        rc = CLI_FAILURE;
    } else if (strcmp(state, "cancelled") == 0) {
        fprintf(stderr, "evalbus: export %s was cancelled\n", id);
        rc = CLI_FAILURE;
    }
cleanup:
    cJSON_Delete(filter);
    cJSON_Delete(fields);
    cJSON_Delete(body);
    cJSON_Delete(job);
    free(target);
    return rc;
}

static int export_list(const cli_env *env, int argc, char **argv)
{
    static const struct option opts[] = {{"state", required_argument, NULL, 's'},
                                         {"limit", required_argument, NULL, 'l'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *state = NULL;
    char *cursor = NULL, *end, num[32], rows[32], bytes[32];
    cJSON *all = cJSON_CreateArray(), *page = NULL;
    const cJSON *j;
    long limit = LIST_DEFAULT;
    int o, got = 0, rc = CLI_OK;

    optind = 0;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 's':
            state = optarg;
            if (!one_of(job_states, state)) {
                rc = bad_choice("state", job_states, state);
                goto cleanup;
            }
            break;
        case 'l':
            errno = 0;
            limit = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || limit < 1 || limit > LIST_MAX) {
                fprintf(stderr, "evalbus: --limit wants 1 to %d, not '%s'\n", LIST_MAX, optarg);
                rc = CLI_USAGE;
                goto cleanup;
            }
            break;
        case 'h':
            fputs(export_usage, stdout);
            goto cleanup;
        default:
            fputs(export_usage, stderr);
            rc = CLI_USAGE;
            goto cleanup;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "evalbus: unexpected argument '%s'\n", argv[optind]);
        rc = CLI_USAGE;
        goto cleanup;
    }
    /* pages until the limit: the server may answer fewer than asked per page */
    while (got < limit) {
        eb_buf path = {0}, q = {0};
        cJSON *exports;
        const cJSON *next;
        int before = got;

        snprintf(num, sizeof(num), "%ld", limit - got);
        put_param(&q, "limit", num);
        if (state)
            put_param(&q, "state", state);
        if (cursor)
            put_param(&q, "cursor", cursor);
        eb_buf_printf(&path, "/api/v1/exports?%s", q.data);
        cJSON_Delete(page);
        page = NULL;
        rc = cli_api(env, "GET", path.data, NULL, &page);
        eb_buf_free(&path);
        eb_buf_free(&q);
        if (rc != CLI_OK)
            goto cleanup;
        exports = cJSON_GetObjectItemCaseSensitive(page, "exports");
        while (got < limit && cJSON_GetArraySize(exports) > 0) {
            cJSON_AddItemToArray(all, cJSON_DetachItemFromArray(exports, 0));
            got++;
        }
        next = cJSON_GetObjectItemCaseSensitive(page, "next_cursor");
        free(cursor);
        cursor = cJSON_IsString(next) && *next->valuestring ? eb_strdup(next->valuestring) : NULL;
        if (!cursor || got == before)
            break;
    }
    if (env->json) {
        cJSON *answer = cJSON_CreateObject();
        cJSON_AddItemToObject(answer, "exports", all);
        all = NULL;
        if (cursor)
            cJSON_AddStringToObject(answer, "next_cursor", cursor);
        else
            cJSON_AddNullToObject(answer, "next_cursor");
        print_json(answer);
        cJSON_Delete(answer);
        goto cleanup;
    }
    printf("%-36s  %-9s  %-17s  %13s  %10s  %s\n", "ID", "STATE", "FORMAT", "ROWS", "BYTES",
           "CREATED_AT");
    cJSON_ArrayForEach(j, all)
    {
        const cJSON *src = jobj(j, "result") ? jobj(j, "result") : jobj(j, "progress");
        double v;

        if (jnum(src, "rows", &v))
            fmt_count(v, rows, sizeof(rows));
        else
            snprintf(rows, sizeof(rows), "-");
        if (jnum(src, "bytes", &v))
            fmt_bytes(v, bytes, sizeof(bytes));
        else
            snprintf(bytes, sizeof(bytes), "-");
        printf("%-36s  %-9s  %-17s  %13s  %10s  %s\n", jstr(j, "id", "-"), jstr(j, "state", "-"),
               jstr(j, "format", "-"), rows, bytes, jstr(j, "created_at", "-"));
    }
    if (cursor)
        fprintf(stderr, "(more exports: raise --limit, up to %d)\n", LIST_MAX);
cleanup:
    cJSON_Delete(all);
    cJSON_Delete(page);
    free(cursor);
    return rc;
}

/* `export status|cancel ID`: exactly one argument, the id. */
static int one_id(int argc, char **argv, char id[37])
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(export_usage, stdout);
        id[0] = '\0';
        return CLI_OK;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "evalbus: export %s needs one export id\n", argv[0]);
        return CLI_USAGE;
    }
    return parse_id(argv[1], id);
}

static int export_status(const cli_env *env, int argc, char **argv)
{
    char id[37], *path;
    cJSON *job = NULL;
    int rc = one_id(argc, argv, id);

    if (rc != CLI_OK || !id[0])
        return rc;
    path = eb_asprintf("/api/v1/exports/%s", id);
    rc = cli_api(env, "GET", path, NULL, &job);
    if (rc == CLI_OK) {
        if (env->json)
            print_json(job);
        else
            print_job(job, NULL);
    }
    cJSON_Delete(job);
    free(path);
    return rc;
}

static int export_cancel(const cli_env *env, int argc, char **argv)
{
    char id[37], *path;
    cJSON *job = NULL;
    int rc = one_id(argc, argv, id);

    if (rc != CLI_OK || !id[0])
        return rc;
    path = eb_asprintf("/api/v1/exports/%s", id);
    rc = cli_api(env, "DELETE", path, NULL, &job); /* 409 (exit 3): it had finished */
    if (rc == CLI_OK) {
        if (env->json)
            print_json(job);
        else
            printf("export %s %s\n", id, jstr(job, "state", "cancelled"));
    }
    cJSON_Delete(job);
    free(path);
    return rc;
}

static int export_download(const cli_env *env, int argc, char **argv)
{
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *out = ".";
    char id[37], *path = NULL, *target = NULL;
    cJSON *job = NULL;
    bool out_is_dir = false;
    int o, rc;

    optind = 0;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'o':
            out = optarg;
            break;
        case 'h':
            fputs(export_usage, stdout);
            return CLI_OK;
        default:
            fputs(export_usage, stderr);
            return CLI_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "evalbus: export download needs one export id\n");
        return CLI_USAGE;
    }
    if ((rc = parse_id(argv[optind], id)) != CLI_OK)
        return rc;
    if (!*out || strncmp(out, "s3://", 5) == 0) {
        fprintf(stderr, "evalbus: --out needs a local file or directory\n");
        return CLI_USAGE;
    }
    if ((rc = check_local_out(out, &out_is_dir)) != CLI_OK)
        return rc;
    path = eb_asprintf("/api/v1/exports/%s", id);
    rc = cli_api(env, "GET", path, NULL, &job);
    if (rc != CLI_OK)
        goto cleanup;
    if (strcmp(jstr(job, "state", "?"), "succeeded") != 0) {
        fprintf(stderr, "evalbus: export %s is %s; only a succeeded export has a file\n", id,
                jstr(job, "state", "?"));
        rc = CLI_CONFLICT;
        goto cleanup;
    }
    target = cli_export_target_path(out, out_is_dir, job);
    catch_sigint();
    rc = download_result(env, id, job, target);
    if (rc != CLI_OK)
        goto cleanup;
    if (env->json)
        print_json(job);
    else
        printf("saved %s (SHA-256 %s verified)\n", target,
               jstr(jobj(job, "result"), "sha256", "-"));
cleanup:
    cJSON_Delete(job);
    free(path);
    free(target);
    return rc;
}

typedef struct export_command {
    const char *name;
    int (*run)(const cli_env *env, int argc, char **argv);
} export_command;

static const export_command export_commands[] = {
    {"list", export_list},
    {"status", export_status},
    {"cancel", export_cancel},
    {"download", export_download},
};

int cmd_export(const cli_env *env, int argc, char **argv)
{
    if (argc < 2) {
        fputs(export_usage, stderr);
        return CLI_USAGE;
    }
    for (size_t i = 0; i < ARRAY_LEN(export_commands); i++)
        if (strcmp(argv[1], export_commands[i].name) == 0)
            return export_commands[i].run(env, argc - 1, argv + 1);
    if (argv[1][0] != '-') {
        fprintf(stderr, "evalbus: unknown export command '%s'\n%s", argv[1], export_usage);
        return CLI_USAGE;
    }
    return export_create(env, argc, argv);
}
