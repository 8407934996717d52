/* http.c -- evhttp-based server with routing, authentication, limits and built-in endpoints.
 *
 * Flow of a request: on_request() wraps the evhttp request in an eb_http_req, assigns the
 * request id, checks the body size, matches the route table, then either answers a built-in
 * endpoint, calls a public handler, or asks the authenticator. The authenticator's callback
 * (on_authenticated) checks role and scope and asks the rate limiter, whose callback
 * (on_rate_checked) finally calls the handler. Every path ends in finish(), which sends the
 * reply, writes the access log line and the metrics, and frees the eb_http_req.
 *
 * The handler of a blocking route (one that waits on PostgreSQL) runs on the worker pool, not on
 * the loop: run_handler submits it, and whatever it answers is kept in the eb_http_req
 * (req->worker) until handler_done, back on the loop, sends it through finish(). So a slow query,
 * or one waiting for a lock, holds up its own request only, never the loop and with it every
 * other request, acknowledgement and health check.
 *
 * Ownership: the eb_http_req lives from on_request() to finish(). If the client goes away
 * meanwhile, evhttp keeps the request until we reply, and then frees it (libevent detaches an
 * unanswered incoming request from its dead connection).
 * Threading: loop thread only, but for a blocking route's handler, which owns its eb_http_req
 * while it runs on a worker thread (the loop does not touch it meanwhile). */
#include "evalbus/clock.h"
#include "evalbus/config.h"
#include "evalbus/http.h"
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/log.h"
#include "evalbus/mem.h"
#include "evalbus/metrics.h"

#include <arpa/inet.h>
#include <assert.h>
#include <sys/queue.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_PARAMS 4
#define MAX_CHECKS 8

/* An answer made on a worker thread, for the loop to send. */
typedef struct worker_reply {
    bool answered;
    int code;
    char *content_type;
    char *data;
    size_t len;
    char **headers; /* name, value, name, value, ... */
    size_t nheaders;
    eb_http_handler loop_fn; /* instead of an answer: goes on on the loop (eb_http_req_on_loop) */
    void *loop_arg;
} worker_reply;

typedef struct ready_check {
    char *name;
    eb_ready_fn fn;
    void *arg;
    bool critical;
} ready_check;

struct eb_http_server {
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *sock;
    eb_http_options opts;
    char *service;
    char *addr;
    const eb_http_route *routes;
    size_t nroutes;
    void *ctx;
    eb_authenticate_fn auth_fn;
    void *auth_impl;
    eb_ratelimit *rl;
    eb_denied_fn denied_fn;
    void *denied_arg;
    eb_pool *workers; /* runs blocking routes' handlers; NULL: the loop runs them */
    ready_check checks[MAX_CHECKS];
    int nchecks;
    int in_flight;
    /* answers handed to libevent and not yet written out (send_reply) */
    int sending;
    /* shutdown */
    struct event *drain_timer;
    long long drain_deadline;
    long long listen_until;
    int idle_ticks;
    void (*drain_done)(void *);
    void *drain_arg;
    bool drained; /* the drain is over: what still comes in on an open connection is refused */
};

struct eb_http_req {
    eb_http_server *srv;
    struct evhttp_request *ev;
    const eb_http_route *route;
    char method[8];
    char *path;
    char *query_str;
    struct evkeyvalq query;
    bool query_parsed; /* query is initialised (parse_query ran) */
    char *param_names[MAX_PARAMS];
    char *param_vals[MAX_PARAMS];
    int nparams;
    int bad_param; /* 1 + the index of a parameter that is not UTF-8 or holds a NUL; 0: none */
    char request_id[136];
    char remote[64];
    char *body;
    size_t body_len;
    eb_principal principal;
    bool authenticated;
    struct timespec start;
    void *data;
    /* a blocking route's handler (or a continuation, eb_http_req_offload) is running on a worker
     * thread: answers are kept here */
    bool on_worker;
    worker_reply worker;
    eb_http_handler work_fn;
    void *work_arg;
    const char *denied_why; /* "role", "scope" or "project": what the credential lacks */
    /* streamed replies */
    int stream_code;
    size_t stream_bytes;
    void (*on_close)(void *arg);
    void *on_close_arg;
};

static void reply_error_text(eb_http_req *req, eb_status st, const char *message);

static const char *method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "OTHER";
}

static bool valid_request_id(const char *s)
{
    size_t n = 0;

    if (!s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= 128 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == ':'))
            return false;
    }
    return n > 0;
}

static void req_free(eb_http_req *req)
{
    for (int i = 0; i < req->nparams; i++) {
        free(req->param_names[i]);
        free(req->param_vals[i]);
    }
    if (req->query_parsed)
        evhttp_clear_headers(&req->query);
    free(req->path);
    free(req->query_str);
    free(req->body);
    free(req->worker.content_type);
    free(req->worker.data);
    for (size_t i = 0; i < req->worker.nheaders; i++)
        free(req->worker.headers[i]);
    free(req->worker.headers);
    free(req);
}

static void add_reply_headers(eb_http_req *req, const char *content_type)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req->ev);

    if (content_type)
        evhttp_add_header(out, "Content-Type", content_type);
    evhttp_add_header(out, "X-Request-Id", req->request_id);
    evhttp_add_header(out, "Cache-Control", "no-store");
}

/* Logs and counts the answered request, then frees it. */
static void account(eb_http_req *req, int code, size_t len)
{
    eb_http_server *srv = req->srv;
    struct timespec now;
    double ms;
    char fields[512], labels[256];
    const char *route = req->route ? req->route->pattern : req->path;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = (double)(now.tv_sec - req->start.tv_sec) * 1000.0 +
         (double)(now.tv_nsec - req->start.tv_nsec) / 1e6;
    snprintf(fields, sizeof(fields),
             "\"http\":{\"method\":\"%s\",\"route\":\"%s\",\"status\":%d,\"duration_ms\":%.3f,"
             "\"bytes\":%zu,\"remote\":\"%s\"}%s%s%s",
             req->method, route && strlen(route) < 200 ? route : "-", code, ms, len, req->remote,
             req->authenticated ? ",\"team_id\":\"" : "",
             req->authenticated ? req->principal.team_id : "", req->authenticated ? "\"" : "");
    if (!req->route || strcmp(req->route->pattern, "/healthz") != 0)
        eb_log_write(code >= 500 ? EB_LOG_ERROR : EB_LOG_INFO, req->request_id, fields, "%s %s %d",
                     req->method, route ? route : "-", code);
    snprintf(labels, sizeof(labels), "service=\"%s\",method=\"%s\",route=\"%s\",code=\"%d\"",
             srv->service, req->method, req->route ? req->route->pattern : "unmatched", code);
    eb_metrics_add("evalbus_http_requests_total", labels, 1);
    snprintf(labels, sizeof(labels), "service=\"%s\",route=\"%s\"", srv->service,
             req->route ? req->route->pattern : "unmatched");
    eb_metrics_add("evalbus_http_request_duration_seconds_sum", labels, ms / 1000.0);
    eb_metrics_add("evalbus_http_request_duration_seconds_count", labels, 1);
    srv->in_flight--;
    req_free(req);
}

/* The reason phrase of a status line (libevent's own is only per class: "207 Success", "429
 * Client Error"). */
static const char *reason_phrase(int code)
{
    static const struct {
        int code;
        const char *phrase;
    } phrases[] = {
        {200, "OK"},
        {201, "Created"},
        {202, "Accepted"},
        {204, "No Content"},
        {206, "Partial Content"},
        {207, "Multi-Status"},
        {304, "Not Modified"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {409, "Conflict"},
        {410, "Gone"},
        {412, "Precondition Failed"},
        {413, "Content Too Large"},
        {415, "Unsupported Media Type"},
        {416, "Range Not Satisfiable"},
        {422, "Unprocessable Content"},
        {429, "Too Many Requests"},
        {500, "Internal Server Error"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
    };

    for (size_t i = 0; i < sizeof(phrases) / sizeof(phrases[0]); i++)
        if (phrases[i].code == code)
            return phrases[i].phrase;
    return NULL; /* libevent's, by class */
}

/* libevent wrote an answer out whole: it is no longer counted, and a later close of its
 * (kept-alive) connection is none of its business. */
static void on_sent(struct evhttp_request *ev, void *arg)
{
    eb_http_server *srv = arg;
    struct evhttp_connection *evcon = evhttp_request_get_connection(ev);

    if (evcon)
        evhttp_connection_set_closecb(evcon, NULL, NULL);
    srv->sending--;
}

/* The connection closed before its answer was written out (the client went away mid-write, a
 * write failed or timed out, or the server is freed): libevent frees the request without
 * calling on_sent. */
static void on_unsent(struct evhttp_connection *evcon, void *arg)
{
    eb_http_server *srv = arg;

    (void)evcon;
    srv->sending--;
}

/* Hands an answer to libevent, which writes it out as the connection takes it; counted in
 * srv->sending until on_sent or on_unsent, whichever comes (one connection writes one answer at
 * a time). A request whose connection is gone already is freed by libevent at once, uncounted. */
static void send_reply(eb_http_req *req, int code, struct evbuffer *buf)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req->ev);

    if (evcon) {
        req->srv->sending++;
        evhttp_request_set_on_complete_cb(req->ev, on_sent, req->srv);
        evhttp_connection_set_closecb(evcon, on_unsent, req->srv);
    }
    evhttp_send_reply(req->ev, code, reason_phrase(code), buf);
}

static void finish(eb_http_req *req, int code, const char *content_type, const void *data,
                   size_t len)
{
    struct evbuffer *buf;

    if (req->on_worker) { /* kept for the loop (handler_done) */
        worker_reply *w = &req->worker;
        if (w->answered || w->loop_fn) {
            eb_log_error(req->request_id, "%s %s answered twice; the second answer (%d) is dropped",
                         req->method, req->path, code);
            return;
        }
        w->answered = true;
        w->code = code;
        w->content_type = content_type ? eb_strdup(content_type) : NULL;
        w->data = eb_malloc(len ? len : 1);
        if (len)
            memcpy(w->data, data, len);
        w->len = len;
        return;
    }
    buf = evbuffer_new();
    add_reply_headers(req, content_type);
    if (data && len)
        evbuffer_add(buf, data, len);
    send_reply(req, code, buf);
    evbuffer_free(buf);
    account(req, code, len);
}

/* The Content-Disposition value that makes a browser save the body as name: the name as a quoted
 * string ('"' and '\\' escaped; control characters and bytes outside ASCII as '_'). The caller
 * frees it. */
static char *attachment_value(const char *name)
{
    eb_buf b = {0};

    eb_buf_puts(&b, "attachment; filename=\"");
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        char c = *p < 0x20 || *p >= 0x7f ? '_' : (char)*p;
        if (c == '"' || c == '\\')
            eb_buf_append(&b, "\\", 1);
        eb_buf_append(&b, &c, 1);
    }
    eb_buf_puts(&b, "\"");
    return b.data;
}

void eb_http_reply_file(eb_http_req *req, int code, const char *content_type,
                        const char *attachment, int fd, size_t size)
{
    struct evbuffer *buf;
    struct stat sb;
    const char *why = NULL;

    assert(!req->on_worker); /* not for blocking routes (http.h) */
    /* checked here, on the loop, as it is sent: libevent maps the file (or reads it, when it
     * cannot be mapped), and a map longer than the file would give the client bytes that are
     * not there */
    if (fstat(fd, &sb) != 0)
        why = "cannot be read";
    else if (!S_ISREG(sb.st_mode))
        why = "is not a regular file";
    else if ((uintmax_t)sb.st_size < (uintmax_t)size)
        why = "is shorter than it was";
    buf = evbuffer_new();
    /* an empty file has nothing to map (libevent would refuse it): an empty body */
    if (!why && size > 0 && evbuffer_add_file(buf, fd, 0, (ev_off_t)size) != 0)
        why = "cannot be mapped or read"; /* (libevent 2.1 leaves fd to us then) */
    if (why || size == 0)
        close(fd); /* else the buffer owns it */
    if (why) {
        char msg[96];
        evbuffer_free(buf);
        snprintf(msg, sizeof(msg), "the file cannot be sent: it %s", why);
        eb_log_error(req->request_id, "%s %s: %s", req->method, req->path, msg);
        /* none of the file's headers: this answer is not the file */
        reply_error_text(req, EB_ERR_IO, msg);
        return;
    }
    add_reply_headers(req, content_type);
    if (attachment) {
        char *disp = attachment_value(attachment);
        eb_http_add_header(req, "Content-Disposition", disp);
        free(disp);
    }
    send_reply(req, code, buf);
    evbuffer_free(buf);
    account(req, code, size);
}

static void stream_closed(struct evhttp_connection *evcon, void *arg)
{
    eb_http_req *req = arg;
    void (*cb)(void *) = req->on_close;

    (void)evcon;
    req->ev = NULL; /* libevent frees the request with its connection */
    req->on_close = NULL;
    if (cb)
        cb(req->on_close_arg);
}

void eb_http_stream_start(eb_http_req *req, int code, const char *content_type,
                          void (*on_close)(void *arg), void *arg)
{
    assert(!req->on_worker); /* not for blocking routes (http.h) */
    add_reply_headers(req, content_type);
    req->stream_code = code;
    req->on_close = on_close;
    req->on_close_arg = arg;
    evhttp_connection_set_closecb(evhttp_request_get_connection(req->ev), stream_closed, req);
    evhttp_send_reply_start(req->ev, code, reason_phrase(code));
}

bool eb_http_stream_write(eb_http_req *req, const void *data, size_t len)
{
    struct evbuffer *buf;

    if (!req->ev)
        return false;
    if (len == 0)
        return true;
    buf = evbuffer_new();
    evbuffer_add(buf, data, len);
    evhttp_send_reply_chunk(req->ev, buf);
    evbuffer_free(buf);
    req->stream_bytes += len;
    return true;
}

size_t eb_http_stream_pending(eb_http_req *req)
{
    struct evhttp_connection *evcon;
    struct bufferevent *bev;

    if (!req->ev)
        return 0;
    evcon = evhttp_request_get_connection(req->ev);
    bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

void eb_http_stream_end(eb_http_req *req)
{
    if (req->ev) {
        evhttp_connection_set_closecb(evhttp_request_get_connection(req->ev), NULL, NULL);
        evhttp_send_reply_end(req->ev);
    }
    account(req, req->stream_code, req->stream_bytes);
}

void eb_http_stream_abort(eb_http_req *req)
{
    if (req->ev) {
        struct evhttp_connection *evcon = evhttp_request_get_connection(req->ev);
        evhttp_connection_set_closecb(evcon, NULL, NULL);
        /* no terminating chunk: the client sees a transfer cut short, not a complete body */
        evhttp_connection_free(evcon); /* frees req->ev with it */
        req->ev = NULL;
    }
    account(req, 500, req->stream_bytes);
}

void eb_http_reply_raw(eb_http_req *req, int code, const char *content_type, const void *data,
                       size_t len)
{
    finish(req, code, content_type, data, len);
}

void eb_http_reply_json(eb_http_req *req, int code, cJSON *body)
{
    char *s = NULL;

    if (body) {
        s = eb_json_print(body);
        cJSON_Delete(body);
    }
    finish(req, code, s ? "application/json" : NULL, s, s ? strlen(s) : 0);
    free(s);
}

static bool has_reply_header(eb_http_req *req, const char *name)
{
    if (req->on_worker) {
        for (size_t i = 0; i < req->worker.nheaders; i += 2)
            if (strcasecmp(req->worker.headers[i], name) == 0)
                return true;
        return false;
    }
    return evhttp_find_header(evhttp_request_get_output_headers(req->ev), name) != NULL;
}

static void reply_error_text(eb_http_req *req, eb_status st, const char *message)
{
    eb_buf b = {0};

    eb_buf_puts(&b, "{\"error\":{\"code\":\"");
    eb_buf_puts(&b, eb_status_str(st));
    eb_buf_puts(&b, "\",\"message\":\"");
    eb_buf_json_escape(&b, message && *message ? message : eb_status_str(st));
    eb_buf_puts(&b, "\",\"request_id\":\"");
    eb_buf_json_escape(&b, req->request_id);
    eb_buf_puts(&b, "\"}}");
    /* every 503 says when to try again (unless the handler said so already) */
    if (st == EB_ERR_UNAVAILABLE && !has_reply_header(req, "Retry-After"))
        eb_http_add_header(req, "Retry-After", "1");
    finish(req, eb_status_http(st), "application/json", b.data, b.len);
    eb_buf_free(&b);
}

void eb_http_reply_error(eb_http_req *req, eb_status st, const char *fmt, ...)
{
    eb_buf msg = {0};
    va_list ap;

    va_start(ap, fmt);
    eb_buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    reply_error_text(req, st, msg.data);
    eb_buf_free(&msg);
}

void eb_http_reply_status(eb_http_req *req, eb_status st)
{
    const char *msg = eb_error_message();

    if (st == EB_ERR_DB || st == EB_ERR_INTERNAL || st == EB_ERR_IO) {
        /* Internal detail goes to the log, not to the caller. */
        eb_log_error(req->request_id, "%s %s failed: %s (%s)", req->method, req->path, msg,
                     eb_error_where());
        reply_error_text(req, st, "internal error; see the service log for this request id");
        return;
    }
    reply_error_text(req, st, msg);
}

void eb_http_add_header(eb_http_req *req, const char *name, const char *value)
{
    if (req->on_worker) { /* added by the loop (handler_done) */
        worker_reply *w = &req->worker;
        w->headers = eb_realloc(w->headers, (w->nheaders + 2) * sizeof(char *));
        w->headers[w->nheaders++] = eb_strdup(name);
        w->headers[w->nheaders++] = eb_strdup(value);
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req->ev), name, value);
}

const char *eb_http_req_method(const eb_http_req *req)
{
    return req->method;
}

const char *eb_http_req_path(const eb_http_req *req)
{
    return req->path;
}

const char *eb_http_req_id(const eb_http_req *req)
{
    return req->request_id;
}

const char *eb_http_req_param(const eb_http_req *req, const char *name)
{
    for (int i = 0; i < req->nparams; i++)
        if (strcmp(req->param_names[i], name) == 0)
            return req->param_vals[i];
    return NULL;
}

/* Parses the query string (once per request, before any handler); false if it is malformed (a
 * parameter without '=', a %00 that would cut a value short, or a name or value that is not
 * UTF-8 once decoded), and then no parameter is kept. */
static bool parse_query(eb_http_req *req)
{
    const struct evkeyval *kv;

    TAILQ_INIT(&req->query);
    req->query_parsed = true;
    if (req->query_str && (strstr(req->query_str, "%00") ||
                           evhttp_parse_query_str(req->query_str, &req->query) != 0)) {
        evhttp_clear_headers(&req->query);
        return false;
    }
    TAILQ_FOREACH(kv, &req->query, next)
    {
        if (!eb_utf8_valid(kv->key, strlen(kv->key)) ||
            !eb_utf8_valid(kv->value, strlen(kv->value))) {
            evhttp_clear_headers(&req->query);
            return false;
        }
    }
    return true;
}

/* The next name of a route's query parameters (eb_http_route.query) from *p on: its length
 * without the '*' that lets it repeat in *len, and whether it had one; NULL after the last. */
static const char *query_name(const char **p, size_t *len, bool *repeatable)
{
    const char *name;
    size_t n;

    if (!*p)
        return NULL;
    name = *p + strspn(*p, " ");
    n = strcspn(name, " ");
    if (n == 0)
        return NULL;
    *p = name + n;
    *repeatable = name[n - 1] == '*';
    *len = n - (*repeatable ? 1 : 0);
    return name;
}

/* Whether name is one of the route's query parameters (taken), and whether it may repeat. */
static bool query_taken(const char *taken, const char *name, bool *repeatable)
{
    size_t len, n = strlen(name);

    for (const char *q; (q = query_name(&taken, &len, repeatable)) != NULL;)
        if (len == n && memcmp(q, name, n) == 0)
            return true;
    return false;
}

/* True if every query parameter is one the route takes, each given once unless it may repeat;
 * else answers 400 naming the parameter and returns false. */
static bool query_ok(eb_http_req *req)
{
    const char *taken = req->route->query;
    const struct evkeyval *kv, *o;
    bool repeatable = false;

    if (taken && strcmp(taken, "*") == 0)
        return true;
    TAILQ_FOREACH(kv, &req->query, next)
    {
        if (!query_taken(taken, kv->key, &repeatable)) {
            eb_buf names = {0};
            const char *p = taken, *q;
            size_t len;
            bool rep;
            while ((q = query_name(&p, &len, &rep)) != NULL)
                eb_buf_printf(&names, "%s%.*s", names.len ? ", " : "", (int)len, q);
            eb_http_reply_error(req, EB_ERR_INVALID,
                                "unknown query parameter '%.64s'; this endpoint takes %s", kv->key,
                                names.data ? names.data : "none");
            eb_buf_free(&names);
            return false;
        }
        if (repeatable)
            continue;
        for (o = TAILQ_NEXT(kv, next); o; o = TAILQ_NEXT(o, next))
            if (strcmp(o->key, kv->key) == 0) {
                eb_http_reply_error(req, EB_ERR_INVALID, "query parameter '%.64s' is given twice",
                                    kv->key);
                return false;
            }
    }
    return true;
}

bool eb_http_parse_count(const char *s, long long min, long long max, long long *out)
{
    long long v = 0;

    if (!s || !*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (max - (*s - '0')) / 10)
            return false; /* not a digit, or beyond max (and so never overflowing) */
        v = v * 10 + (*s - '0');
    }
    if (v < min)
        return false;
    *out = v;
    return true;
}

const char *eb_http_req_query(eb_http_req *req, const char *name)
{
    return evhttp_find_header(&req->query, name);
}

size_t eb_http_req_query_all(eb_http_req *req, const char *name, const char **vals, size_t max)
{
    struct evkeyval *kv;
    size_t n = 0;

    TAILQ_FOREACH(kv, &req->query, next)
    {
        if (strcmp(kv->key, name) != 0)
            continue;
        if (n < max)
            vals[n] = kv->value;
        n++;
    }
    return n;
}

const char *eb_http_req_header(const eb_http_req *req, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(req->ev), name);
}

const char *eb_http_req_remote(const eb_http_req *req)
{
    return req->remote;
}

const char *eb_http_req_body(const eb_http_req *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body;
}

cJSON *eb_http_req_json(eb_http_req *req)
{
    cJSON *root = NULL;
    eb_status st = eb_json_parse_object(req->body, req->body_len, &root);
    const char *twice;

    if (st != EB_OK) {
        eb_http_reply_status(req, st);
        return NULL;
    }
    /* which of the two would count is a guess a typo should not get to make */
    if ((twice = eb_json_repeated_member(root)) != NULL) {
        eb_http_reply_error(req, EB_ERR_INVALID, "the member '%s' appears twice in an object",
                            twice);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

const eb_principal *eb_http_req_principal(const eb_http_req *req)
{
    return req->authenticated ? &req->principal : NULL;
}

void eb_http_req_set_data(eb_http_req *req, void *data)
{
    req->data = data;
}

void *eb_http_req_get_data(const eb_http_req *req)
{
    return req->data;
}

/* Matches path (as sent: still percent-encoded) against pattern; on success stores the {name}
 * captures in req, each decoded once. Matching the raw path keeps an encoded '/' inside a
 * capture ("a%2Fb" is one id) and decodes "%2541" to "%41", never further to "A". */
static bool match_route(eb_http_req *req, const char *pattern, const char *path)
{
    const char *p = pattern, *s = path;
    int n = 0, bad = 0;
    char *names[MAX_PARAMS], *vals[MAX_PARAMS];

    while (*p && *s) {
        if (*p == '{') {
            const char *pe = strchr(p, '}');
            const char *se = strchr(s, '/');
            size_t vlen, dlen = 0;
            char *raw;

            if (!pe || n >= MAX_PARAMS)
                goto fail;
            vlen = se ? (size_t)(se - s) : strlen(s);
            if (vlen == 0)
                goto fail;
            raw = eb_strndup(s, vlen);
            vals[n] = evhttp_uridecode(raw, 0, &dlen);
            free(raw);
            if (!vals[n])
                goto fail;
            /* a %00 inside, or not UTF-8: no id or name of ours can be that; the route matches
             * (so the caller is authenticated first) and run_handler refuses it */
            if (strlen(vals[n]) != dlen || !eb_utf8_valid(vals[n], dlen)) {
                vals[n][0] = '\0';
                if (!bad)
                    bad = n + 1;
            }
            names[n] = eb_strndup(p + 1, (size_t)(pe - p - 1));
            n++;
            p = pe + 1;
            s += vlen;
        } else if (*p == *s) {
            p++;
            s++;
        } else {
            goto fail;
        }
    }
    if (*p || *s)
        goto fail;
    for (int i = 0; i < n; i++) {
        req->param_names[i] = names[i];
        req->param_vals[i] = vals[i];
    }
    req->nparams = n;
    req->bad_param = bad;
    return true;
fail:
    for (int i = 0; i < n; i++) {
        free(names[i]);
        free(vals[i]);
    }
    return false;
}

static void reply_readyz(eb_http_req *req)
{
    eb_http_server *srv = req->srv;
    cJSON *root = cJSON_CreateObject();
    cJSON *checks = cJSON_AddObjectToObject(root, "checks");
    bool critical_fail = false, degraded = false;

    for (int i = 0; i < srv->nchecks; i++) {
        char detail[256] = "";
        bool ok = srv->checks[i].fn(srv->checks[i].arg, detail, sizeof(detail));
        cJSON *c = cJSON_AddObjectToObject(checks, srv->checks[i].name);

        cJSON_AddBoolToObject(c, "ok", ok);
        if (detail[0])
            cJSON_AddStringToObject(c, "detail", detail);
        if (!ok && srv->checks[i].critical)
            critical_fail = true;
        else if (!ok)
            degraded = true;
    }
    if (srv->drain_done)
        critical_fail = true; /* shutting down: take us out of rotation */
    cJSON_AddStringToObject(root, "status",
                            critical_fail ? "not_ready" : (degraded ? "degraded" : "ready"));
    eb_http_reply_json(req, critical_fail ? 503 : 200, root);
}

static void reply_metrics(eb_http_req *req)
{
    eb_buf b = {0};

    eb_metrics_set("evalbus_http_in_flight", NULL, req->srv->in_flight);
    eb_metrics_render(&b);
    finish(req, 200, "text/plain; version=0.0.4", b.data, b.len);
    eb_buf_free(&b);
}

/* A blocking route's handler or an offloaded continuation, on a worker thread. */
static void handler_work(void *arg)
{
    eb_http_req *req = arg;

    req->work_fn(req, req->work_arg);
}

/* Back on the loop: sends what the handler answered, or goes on where it said to. */
static void handler_done(void *arg)
{
    eb_http_req *req = arg;
    worker_reply *w = &req->worker;
    struct evkeyvalq *out = evhttp_request_get_output_headers(req->ev);

    req->on_worker = false;
    for (size_t i = 0; i + 1 < w->nheaders; i += 2)
        evhttp_add_header(out, w->headers[i], w->headers[i + 1]);
    if (w->loop_fn) {
        w->loop_fn(req, w->loop_arg);
        return;
    }
    if (!w->answered) {
        eb_log_error(req->request_id, "%s %s: the handler gave no answer", req->method, req->path);
        reply_error_text(req, EB_ERR_INTERNAL,
                         "internal error; see the service log for this "
                         "request id");
        return;
    }
    /* finish frees req (and w's buffers with it) */
    finish(req, w->code, w->content_type, w->data, w->len);
}

void eb_http_req_on_loop(eb_http_req *req, eb_http_handler fn, void *arg)
{
    if (!req->on_worker) {
        fn(req, arg);
        return;
    }
    assert(!req->worker.answered && !req->worker.loop_fn);
    req->worker.loop_fn = fn;
    req->worker.loop_arg = arg;
}

void eb_http_req_offload(eb_http_req *req, eb_http_handler fn, void *arg)
{
    if (!req->srv->workers) {
        fn(req, arg);
        return;
    }
    req->on_worker = true;
    req->work_fn = fn;
    req->work_arg = arg;
    eb_pool_submit(req->srv->workers, handler_work, handler_done, req);
}

/* Answers 400 (true) for a path segment that is not UTF-8 or holds a NUL: checked once the caller
 * is known, before anything (a denial's audit row, a handler) takes the path or the segment. */
static bool refuse_bad_param(eb_http_req *req)
{
    if (!req->bad_param)
        return false;
    eb_http_reply_error(req, EB_ERR_INVALID,
                        "the path segment {%s} is not valid UTF-8 or holds a NUL (%%00)",
                        req->param_names[req->bad_param - 1]);
    return true;
}

static void run_handler(eb_http_req *req)
{
    if (refuse_bad_param(req) || !query_ok(req))
        return;
    if (req->route->blocking)
        eb_http_req_offload(req, req->route->handler, req->srv->ctx);
    else
        req->route->handler(req, req->srv->ctx);
}

static void on_rate_checked(bool allowed, long long retry_after_ms, void *arg)
{
    eb_http_req *req = arg;

    if (!allowed) {
        char secs[32];
        snprintf(secs, sizeof(secs), "%lld", (retry_after_ms + 999) / 1000);
        eb_http_add_header(req, "Retry-After", secs);
        eb_metrics_add("evalbus_rate_limited_total", NULL, 1);
        eb_http_reply_error(req, EB_ERR_RATE_LIMITED,
                            "rate limit of the %s tier exceeded; retry after %s s",
                            req->principal.tier[0] ? req->principal.tier : "team's", secs);
        return;
    }
    run_handler(req);
}

/* The 403 of a credential without the route's role, scope or whole-team reach, after the denial
 * hook (which runs first, so that what it records is there when the answer is). */
static void reply_denied(eb_http_req *req, void *unused)
{
    eb_http_server *srv = req->srv;
    const eb_principal *p = &req->principal;
    const eb_http_route *r = req->route;

    (void)unused;
    if (srv->denied_fn)
        srv->denied_fn(srv->denied_arg, p, req->method, req->path, req->request_id,
                       req->denied_why);
    if (strcmp(req->denied_why, "project") == 0)
        eb_http_reply_error(req, EB_ERR_FORBIDDEN,
                            "this key is restricted to project '%s', and this acts on the whole"
                            " team: use a key without a project restriction",
                            p->project);
    else if (p->role < r->min_role)
        eb_http_reply_error(req, EB_ERR_FORBIDDEN, "this needs the %s role; you have %s",
                            eb_role_str(r->min_role), eb_role_str(p->role));
    else
        eb_http_reply_error(req, EB_ERR_FORBIDDEN, "this needs the scope %s",
                            eb_scope_name(__builtin_ctz(r->scope)));
}

static void on_authenticated(eb_status st, const eb_principal *p, const char *reason, void *arg)
{
    eb_http_req *req = arg;
    eb_http_server *srv = req->srv;
    const eb_http_route *r = req->route;

    if (st != EB_OK) {
        if (st == EB_ERR_UNAUTHENTICATED)
            eb_http_reply_error(req, st, "credential rejected: %s",
                                reason && *reason ? reason : "invalid");
        else
            eb_http_reply_error(req, EB_ERR_UNAVAILABLE,
                                "cannot verify the credential right now; retry later");
        return;
    }
    req->principal = *p;
    req->authenticated = true;
    if (refuse_bad_param(req))
        return;
    if (p->role < r->min_role || (r->scope && !(p->scopes & r->scope)))
        req->denied_why = p->role < r->min_role ? "role" : "scope";
    else if (r->team_wide && p->project[0])
        req->denied_why = "project";
    if (req->denied_why) {
        /* the hook (auth's audit row) may wait on PostgreSQL: on a worker, the 403 after it */
        if (srv->denied_fn)
            eb_http_req_offload(req, reply_denied, NULL);
        else
            reply_denied(req, NULL);
        return;
    }
    if (srv->rl && !p->unlimited) {
        char kb[96], tb[96];
        const char *buckets[2] = {kb, tb};
        snprintf(kb, sizeof(kb), "%s:%s", p->key_id[0] ? "key" : "user",
                 p->key_id[0] ? p->key_id : p->user_id);
        snprintf(tb, sizeof(tb), "team:%s", p->team_id);
        eb_ratelimit_check(srv->rl, buckets, 2, p->rate_per_sec, p->burst, on_rate_checked, req);
        return;
    }
    run_handler(req);
}

/* Parses item, an address or a network "address/bits" (bits: one to three digits, no more than
 * the family's), into its family, address bytes and prefix length; false if malformed. */
static bool parse_network(const char *item, size_t len, int *family, unsigned char want[16],
                          int *bits)
{
    char text[64];
    char *slash;

    if (len == 0 || len >= sizeof(text))
        return false;
    memcpy(text, item, len);
    text[len] = '\0';
    *family = strchr(text, ':') ? AF_INET6 : AF_INET;
    *bits = *family == AF_INET6 ? 128 : 32;
    slash = strchr(text, '/');
    if (slash) {
        const char *start = slash + 1;
        int n = 0;
        if (*start == '\0')
            return false;
        for (const char *d = start; *d; d++) {
            if (*d < '0' || *d > '9' || d - start >= 3)
                return false;
            n = n * 10 + (*d - '0');
        }
        if (n > *bits)
            return false;
        *bits = n;
        *slash = '\0';
    }
    return inet_pton(*family, text, want) == 1;
}

/* Whether addr (an IPv4 or IPv6 address) falls in item (parse_network). A peer on an IPv6
 * socket that listens for IPv4 too has an IPv4-mapped address (::ffff:a.b.c.d), compared as the
 * IPv4 address it is. A malformed item matches nothing. */
static bool in_network(const char *item, size_t len, const char *addr)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    unsigned char want[16], have[16];
    int family, peer_family = strchr(addr, ':') ? AF_INET6 : AF_INET, bits;
    const unsigned char *peer = have;

    if (!parse_network(item, len, &family, want, &bits) || inet_pton(peer_family, addr, have) != 1)
        return false;
    if (family == AF_INET && peer_family == AF_INET6 && memcmp(have, mapped, sizeof(mapped)) == 0) {
        peer_family = AF_INET;
        peer = have + sizeof(mapped);
    }
    if (family != peer_family)
        return false;
    for (int i = 0; i < bits / 8; i++)
        if (want[i] != peer[i])
            return false;
    if (bits % 8) {
        unsigned char mask = (unsigned char)(0xff << (8 - bits % 8));
        if ((want[bits / 8] & mask) != (peer[bits / 8] & mask))
            return false;
    }
    return true;
}

/* Whether addr is in one of list's comma-separated addresses or networks. */
static bool listed(const char *list, const char *addr)
{
    const char *item;
    size_t len;

    for (const char *p = list && *list ? list : NULL; p;) {
        p = eb_list_item(p, &item, &len);
        if (in_network(item, len, addr))
            return true;
    }
    return false;
}

bool eb_http_proxies_valid(const char *list, char bad[64])
{
    unsigned char want[16];
    const char *item;
    int family, bits;
    size_t len;

    bad[0] = '\0';
    for (const char *p = list && *list ? list : NULL; p;) {
        p = eb_list_item(p, &item, &len);
        if (!parse_network(item, len, &family, want, &bits)) {
            snprintf(bad, 64, "%.*s", (int)(len < 60 ? len : 60), item);
            return false;
        }
    }
    return true;
}

/* Behind a trusted proxy (the edge), the client is the one its X-Real-IP names (an IPv4 or IPv6
 * address; anything else is ignored): per-client rate limits and logs see the client, not the
 * proxy. From any other peer the header is the client's own word, and ignored. */
static void client_address(eb_http_server *srv, eb_http_req *req, struct evkeyvalq *headers)
{
    const char *real = evhttp_find_header(headers, "X-Real-IP");
    size_t n = real ? strlen(real) : 0;
    unsigned char bin[16];

    if (n == 0 || n > 45 || !listed(srv->opts.trusted_proxies, req->remote))
        return;
    if (inet_pton(strchr(real, ':') ? AF_INET6 : AF_INET, real, bin) != 1)
        return;
    snprintf(req->remote, sizeof(req->remote), "%s", real);
}

static void on_request(struct evhttp_request *ev, void *arg)
{
    eb_http_server *srv = arg;
    eb_http_req *req = eb_calloc(1, sizeof(*req));
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *rid = evhttp_find_header(evhttp_request_get_input_headers(ev), "X-Request-Id");
    struct evbuffer *in = evhttp_request_get_input_buffer(ev);
    const char *raw_path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
    struct evhttp_connection *conn = evhttp_request_get_connection(ev);
    const char *auth;
    bool path_matched = false;
    size_t blen;

    srv->in_flight++;
    req->srv = srv;
    req->ev = ev;
    clock_gettime(CLOCK_MONOTONIC, &req->start);
    snprintf(req->method, sizeof(req->method), "%s", method_name(evhttp_request_get_command(ev)));
    if (valid_request_id(rid)) {
        snprintf(req->request_id, sizeof(req->request_id), "%s", rid);
    } else {
        char u[37];
        eb_uuid_v4(u);
        snprintf(req->request_id, sizeof(req->request_id), "%s", u);
    }
    if (conn) {
        const char *host = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(conn, (char **)&host, &port);
        snprintf(req->remote, sizeof(req->remote), "%s", host ? host : "");
        client_address(srv, req, evhttp_request_get_input_headers(ev));
    }
    req->path = raw_path ? evhttp_uridecode(raw_path, 0, NULL) : NULL;
    if (!req->path || !*req->path) {
        free(req->path);
        req->path = eb_strdup("/");
    }
    req->query_str = q ? eb_strdup(q) : NULL;
    if (srv->drained) {
        /* a kept-alive connection after the drain: the process is about to exit */
        eb_http_add_header(req, "Connection", "close");
        eb_http_reply_error(req, EB_ERR_UNAVAILABLE, "the service is shutting down; retry");
        return;
    }
    if (!parse_query(req)) {
        eb_http_reply_error(req, EB_ERR_INVALID,
                            "malformed query string: each parameter must be name=value, "
                            "percent-encoded UTF-8, without %%00");
        return;
    }

    blen = evbuffer_get_length(in);
    if (blen > srv->opts.max_body) {
        eb_http_reply_error(req, EB_ERR_TOO_LARGE,
                            "request body of %zu bytes exceeds the limit "
                            "of %zu bytes",
                            blen, srv->opts.max_body);
        return;
    }
    req->body = eb_malloc(blen + 1);
    evbuffer_copyout(in, req->body, blen);
    req->body[blen] = '\0';
    req->body_len = blen;

    if (strcmp(req->method, "GET") == 0) {
        if (strcmp(req->path, "/healthz") == 0) {
            static const char ok[] = "{\"status\":\"ok\"}";
            finish(req, 200, "application/json", ok, sizeof(ok) - 1);
            return;
        }
        if (strcmp(req->path, "/readyz") == 0) {
            reply_readyz(req);
            return;
        }
        if (strcmp(req->path, "/metrics") == 0) {
            reply_metrics(req);
            return;
        }
    }
    for (size_t i = 0; i < srv->nroutes; i++) {
        if (!match_route(req, srv->routes[i].pattern, raw_path && *raw_path ? raw_path : "/"))
            continue;
        path_matched = true;
        if (strcmp(srv->routes[i].method, req->method) == 0) {
            req->route = &srv->routes[i];
            break;
        }
        for (int k = 0; k < req->nparams; k++) {
            free(req->param_names[k]);
            free(req->param_vals[k]);
        }
        req->nparams = 0;
        req->bad_param = 0;
    }
    if (!req->route) {
        if (path_matched) {
            eb_buf b = {0};
            eb_buf_printf(&b,
                          "{\"error\":{\"code\":\"method_not_allowed\",\"message\":\"method "
                          "%s is not allowed on this path\",\"request_id\":\"%s\"}}",
                          req->method, req->request_id);
            finish(req, 405, "application/json", b.data, b.len);
            eb_buf_free(&b);
        } else {
            eb_http_reply_error(req, EB_ERR_NOT_FOUND, "no such endpoint: %s %s", req->method,
                                req->path);
        }
        return;
    }
    auth = eb_http_req_header(req, "Authorization");
    if (req->route->public_route) {
        run_handler(req);
        return;
    }
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || !auth[7]) {
        eb_http_add_header(req, "WWW-Authenticate", "Bearer");
        eb_http_reply_error(req, EB_ERR_UNAUTHENTICATED,
                            "missing credential: send Authorization: Bearer <API key or token>");
        return;
    }
    if (!srv->auth_fn) {
        eb_http_reply_error(req, EB_ERR_UNAVAILABLE, "no authenticator configured");
        return;
    }
    srv->auth_fn(srv->auth_impl, auth + 7, req->request_id, on_authenticated, req);
}

eb_http_server *eb_http_server_new(struct event_base *base, const eb_http_options *opts,
                                   const eb_http_route *routes, size_t nroutes, void *ctx)
{
    eb_http_server *srv = eb_calloc(1, sizeof(*srv));

    srv->base = base;
    srv->opts = *opts;
    srv->service = eb_strdup(opts->service ? opts->service : "evalbus");
    srv->addr = eb_strdup(opts->addr ? opts->addr : "127.0.0.1");
    srv->opts.service = srv->service;
    srv->opts.addr = srv->addr;
    if (!srv->opts.max_body)
        srv->opts.max_body = 1 << 20;
    srv->routes = routes;
    srv->nroutes = nroutes;
    srv->ctx = ctx;
    srv->http = evhttp_new(base);
    /* evhttp refuses (with its own page) only bodies far over our limit; up to this size we
     * read the body and answer 413 as JSON ourselves. */
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)(srv->opts.max_body * 4 + 65536));
    evhttp_set_max_headers_size(srv->http, 64 * 1024);
    evhttp_set_timeout(srv->http, 60);
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                              EVHTTP_REQ_PATCH | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(srv->http, on_request, srv);
    eb_metrics_describe("evalbus_http_requests_total", "counter", "HTTP requests answered");
    eb_metrics_describe("evalbus_http_request_duration_seconds_sum", "counter",
                        "Total seconds spent answering HTTP requests");
    eb_metrics_describe("evalbus_http_request_duration_seconds_count", "counter",
                        "HTTP requests timed");
    eb_metrics_describe("evalbus_http_in_flight", "gauge", "HTTP requests being answered");
    eb_metrics_describe("evalbus_rate_limited_total", "counter", "Requests refused with 429");
    return srv;
}

void eb_http_server_free(eb_http_server *srv)
{
    if (!srv)
        return;
    if (srv->drain_timer)
        event_free(srv->drain_timer);
    if (srv->http)
        evhttp_free(srv->http);
    for (int i = 0; i < srv->nchecks; i++)
        free(srv->checks[i].name);
    free(srv->service);
    free(srv->addr);
    free(srv);
}

void eb_http_set_authenticator(eb_http_server *srv, eb_authenticate_fn fn, void *impl)
{
    srv->auth_fn = fn;
    srv->auth_impl = impl;
}

void eb_http_set_ratelimit(eb_http_server *srv, eb_ratelimit *rl)
{
    srv->rl = rl;
}

void eb_http_set_denied_hook(eb_http_server *srv, eb_denied_fn fn, void *arg)
{
    srv->denied_fn = fn;
    srv->denied_arg = arg;
}

void eb_http_set_workers(eb_http_server *srv, eb_pool *workers)
{
    srv->workers = workers;
}

void eb_http_add_check(eb_http_server *srv, const char *name, eb_ready_fn fn, void *arg,
                       bool critical)
{
    if (srv->nchecks >= MAX_CHECKS)
        return;
    srv->checks[srv->nchecks].name = eb_strdup(name);
    srv->checks[srv->nchecks].fn = fn;
    srv->checks[srv->nchecks].arg = arg;
    srv->checks[srv->nchecks].critical = critical;
    srv->nchecks++;
}

void eb_http_set_check_critical(eb_http_server *srv, const char *name, bool critical)
{
    for (int i = 0; i < srv->nchecks; i++)
        if (strcmp(srv->checks[i].name, name) == 0)
            srv->checks[i].critical = critical;
}

eb_status eb_http_listen(eb_http_server *srv)
{
    srv->sock =
        evhttp_bind_socket_with_handle(srv->http, srv->opts.addr, (ev_uint16_t)srv->opts.port);
    if (!srv->sock)
        return eb_error(EB_ERR_IO, "cannot listen on %s:%d", srv->opts.addr, srv->opts.port);
    eb_log_info(NULL, "HTTP listening on %s:%d", srv->opts.addr, srv->opts.port);
    return EB_OK;
}

int eb_http_in_flight(const eb_http_server *srv)
{
    return srv->in_flight;
}

int eb_http_sending(const eb_http_server *srv)
{
    return srv ? srv->sending : 0;
}

/* Shutdown runs in two phases on one timer: first the listener stays open for
 * shutdown_delay_ms while /readyz already says not_ready (connections that reached the backlog
 * before the signal get accepted, and load balancers stop sending new ones); then the listener
 * is closed and we wait until no request has been in flight for 100 ms, or the grace ends. */
static void on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    eb_http_server *srv = arg;
    struct timeval tv = {0, 20000};
    long long now = eb_monotonic_ms();

    (void)fd;
    (void)what;
    if (srv->sock && now >= srv->listen_until) {
        evhttp_del_accept_socket(srv->http, srv->sock);
        srv->sock = NULL;
        eb_log_info(NULL, "stopped accepting; draining %d requests in flight", srv->in_flight);
    }
    if (srv->in_flight > 0)
        srv->idle_ticks = 0;
    else
        srv->idle_ticks++;
    if ((srv->sock || srv->idle_ticks < 5) && now < srv->drain_deadline) {
        evtimer_add(srv->drain_timer, &tv);
        return;
    }
    if (srv->in_flight > 0)
        eb_log_warn(NULL, "shutdown grace period over with %d requests in flight", srv->in_flight);
    srv->drained = true;
    srv->drain_done(srv->drain_arg);
}

void eb_http_shutdown(eb_http_server *srv, void (*done)(void *arg), void *arg)
{
    struct timeval tv = {0, 0};
    long long now = eb_monotonic_ms();

    if (srv->drain_done)
        return;
    srv->drain_done = done;
    srv->drain_arg = arg;
    srv->listen_until = now + (srv->opts.shutdown_delay_ms >= 0 ? srv->opts.shutdown_delay_ms : 0);
    srv->drain_deadline = srv->listen_until + srv->opts.shutdown_grace_ms;
    srv->drain_timer = evtimer_new(srv->base, on_drain_tick, srv);
    evtimer_add(srv->drain_timer, &tv);
}
