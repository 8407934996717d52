/* http.h -- the HTTP server every service uses, on evhttp and the service's libevent loop.
 *
 * A service gives a route table: method, path pattern with {name} segments, handler, and who
 * may call it (public, or a minimum role and a scope). For each request the server assigns a
 * request id (X-Request-Id, kept from the client or nginx when well-formed), enforces the body
 * limit (413), finds the route (404, or 405 with code "method_not_allowed"), authenticates the
 * Bearer credential through the service's authenticator (401 / 503), checks role and scope (403),
 * applies the principal's rate limit (429 with Retry-After), then calls the handler. Every error
 * body is JSON:
 * {"error": {"code", "message", "request_id"}}. /healthz, /readyz (dependency checks) and
 * /metrics (Prometheus text) are built in. Each request is logged once (access log) and
 * counted in evalbus_http_requests_total.
 *
 * A handler answers exactly once through eb_http_reply_*(), now or later (asynchronously);
 * the eb_http_req is freed by that call. Loop thread only. */
#ifndef EVALBUS_HTTP_H
#define EVALBUS_HTTP_H

#include "evalbus/pool.h"
#include "evalbus/principal.h"
#include "evalbus/ratelimit.h"
#include "evalbus/status.h"

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct eb_http_server eb_http_server;
typedef struct eb_http_req eb_http_req;

typedef void (*eb_http_handler)(eb_http_req *req, void *ctx);

typedef struct eb_http_route {
    const char *method;  /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    const char *pattern; /* "/api/v1/keys/{id}" */
    eb_http_handler handler;
    bool public_route; /* no credential needed */
    eb_role min_role;  /* for non-public routes */
    unsigned scope;    /* required scope bit (EB_SCOPE_*), 0 for none */
    bool team_wide;    /* acts on the whole team: a project-restricted credential gets 403 */
    /* the handler waits (on PostgreSQL): it runs on the server's worker pool
     * (eb_http_set_workers), so that the loop goes on serving everything else meanwhile. Such a
     * handler answers before it returns, by eb_http_reply_json / _raw / _error / _status (not a
     * file or a stream), and touches no loop state (events, the NATS connection's subscriptions);
     * its answer is sent by the loop thread. Without a worker pool it runs on the loop. */
    bool blocking;
    /* the query parameters the route takes, space-separated ("state limit cursor"), a name
     * ending in '*' may be given more than once ("tag*"); NULL: none; "*": any (the handler
     * reads what it wants). Any other, or one given twice, is answered 400 before the handler
     * runs, so that a typo never widens a listing and DELETE ...?dry_run=true deletes nothing. */
    const char *query;
} eb_http_route;

typedef struct eb_http_options {
    const char *service; /* for logs and metrics */
    const char *addr;
    int port;
    size_t max_body;             /* bytes; larger bodies get 413 */
    long long shutdown_delay_ms; /* on shutdown, keep accepting this long (readyz says 503) */
    long long shutdown_grace_ms; /* then wait at most this long for in-flight requests */
    /* comma-separated peer addresses whose X-Real-IP header is the client's address (the edge
     * proxy); NULL or "": none. Kept, not copied. */
    const char *trusted_proxies;
} eb_http_options;

/* A readiness check: returns true when the dependency is usable; writes a short detail. */
typedef bool (*eb_ready_fn)(void *arg, char *detail, size_t detail_len);

/* Called when a request is refused after authentication (403), before the answer is sent, so the
 * service can audit it; it runs on a worker thread when the server has workers, and may wait. */
typedef void (*eb_denied_fn)(void *arg, const eb_principal *p, const char *method, const char *path,
                             const char *request_id, const char *why);

/* Whether every comma-separated item of list (a trusted-proxies value) is an address or a network
 * "address/bits"; if not, bad gets the first that is not. */
bool eb_http_proxies_valid(const char *list, char bad[64]);

eb_http_server *eb_http_server_new(struct event_base *base, const eb_http_options *opts,
                                   const eb_http_route *routes, size_t nroutes, void *ctx);
void eb_http_server_free(eb_http_server *srv);
void eb_http_set_authenticator(eb_http_server *srv, eb_authenticate_fn fn, void *impl);
void eb_http_set_ratelimit(eb_http_server *srv, eb_ratelimit *rl);
void eb_http_set_denied_hook(eb_http_server *srv, eb_denied_fn fn, void *arg);
/* The pool whose threads run the handlers of blocking routes (the caller keeps it, and frees it
 * after the server). */
void eb_http_set_workers(eb_http_server *srv, eb_pool *workers);
/* Goes on with a request on the worker pool: fn(req, arg) runs on a worker thread under the rules
 * of a blocking route's handler (it answers before it returns; the loop sends the answer). For a
 * handler that must first wait on the loop (a rate limit check) and then on PostgreSQL or the
 * CPU (a password hash). Called on the loop, as the request's last step there; without a worker
 * pool, fn runs at once. */
void eb_http_req_offload(eb_http_req *req, eb_http_handler fn, void *arg);
/* The way back: on a worker thread, instead of answering, fn(req, arg) runs on the loop thread
 * once the worker's function returns, under the rules of a non-blocking handler (for the answers
 * only the loop can give: a file, a stream). Headers added on the worker go out with its answer.
 * Called as the worker's last step; on the loop, fn runs at once. */
void eb_http_req_on_loop(eb_http_req *req, eb_http_handler fn, void *arg);
/* critical: a failing critical check makes /readyz answer 503 "not_ready"; a failing
 * non-critical one gives 200 "degraded". */
void eb_http_add_check(eb_http_server *srv, const char *name, eb_ready_fn fn, void *arg,
                       bool critical);

/* Changes whether the named check is critical (e.g. ingest keeps accepting while PostgreSQL is
 * down, so for it PostgreSQL is not). */
void eb_http_set_check_critical(eb_http_server *srv, const char *name, bool critical);

/* Binds and starts accepting. EB_ERR_IO if the address cannot be bound. */
eb_status eb_http_listen(eb_http_server *srv);
/* Graceful stop (a grace of 0 answers nothing more that is in flight): /readyz answers 503 at once;
 * after shutdown_delay_ms the listener closes; then it waits until no request is in flight (or
 * shutdown_grace_ms ends) and calls done(arg) on the loop thread. */
void eb_http_shutdown(eb_http_server *srv, void (*done)(void *arg), void *arg);
/* Number of requests accepted and not yet answered. */
int eb_http_in_flight(const eb_http_server *srv);
/* Answers given and not yet written out whole to their connections (NULL: 0). */
int eb_http_sending(const eb_http_server *srv);

/* Request accessors. Strings are owned by the request. */
const char *eb_http_req_method(const eb_http_req *req);
const char *eb_http_req_path(const eb_http_req *req);
const char *eb_http_req_id(const eb_http_req *req);
/* Decoded path parameter {name}, or NULL. */
const char *eb_http_req_param(const eb_http_req *req, const char *name);
/* Decoded query parameter, or NULL. */
const char *eb_http_req_query(eb_http_req *req, const char *name);
/* Every value of a repeated query parameter (?tag=a&tag=b): stores up to max pointers (owned by
 * req) in vals and returns how many there are (which may exceed max). */
size_t eb_http_req_query_all(eb_http_req *req, const char *name, const char **vals, size_t max);
/* A query parameter's count: decimal digits only (no sign, no spaces), from min to max. */
bool eb_http_parse_count(const char *s, long long min, long long max, long long *out);
const char *eb_http_req_header(const eb_http_req *req, const char *name);
const char *eb_http_req_remote(const eb_http_req *req);
/* The raw body (NUL-terminated, len may be 0). */
const char *eb_http_req_body(const eb_http_req *req, size_t *len);
/* Parses the body as a JSON object (strict UTF-8). On failure answers 400 itself and returns
 * NULL: the handler must just return. The caller frees the result with cJSON_Delete. */
cJSON *eb_http_req_json(eb_http_req *req);
/* The authenticated caller (NULL on public routes without a credential). */
const eb_principal *eb_http_req_principal(const eb_http_req *req);
/* An opaque pointer the handler may attach while it waits asynchronously. */
void eb_http_req_set_data(eb_http_req *req, void *data);
void *eb_http_req_get_data(const eb_http_req *req);

/* Replies. Each frees req. */
/* body: a JSON value, consumed (deleted). NULL sends no body. */
void eb_http_reply_json(eb_http_req *req, int code, cJSON *body);
void eb_http_reply_raw(eb_http_req *req, int code, const char *content_type, const void *data,
                       size_t len);
void eb_http_reply_error(eb_http_req *req, eb_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Error reply with the calling thread's last eb_error() message. */
void eb_http_reply_status(eb_http_req *req, eb_status st);
/* Sends size bytes of the open file fd (from offset 0) as the body, without reading it into
 * memory; takes ownership of fd (closed when sent, or now on failure). attachment (NULL: none):
 * the name to save the body under (Content-Disposition: attachment; filename="..."). The file's
 * headers (Content-Type, Content-Disposition) go out with the file only: when it cannot be sent
 * (not a regular file, shorter than size by now, or libevent can neither map nor read it), the
 * answer is a JSON error (500 io_error) without them, and the reason is logged. Headers added
 * with eb_http_add_header before go out with either answer. An empty file (size 0) is an empty
 * body. */
void eb_http_reply_file(eb_http_req *req, int code, const char *content_type,
                        const char *attachment, int fd, size_t size);

/* Streamed replies (chunked transfer encoding): start sends the status and headers, write sends
 * a chunk (false once the client has gone: stop producing), end finishes and frees req.
 * on_close (may be NULL) is called on the loop thread when the client closes the connection
 * before end; the owner must still call eb_http_stream_end(req) exactly once, which then only
 * accounts for the request. pending tells how many bytes wait in the socket's output buffer
 * (for back-pressure). */
void eb_http_stream_start(eb_http_req *req, int code, const char *content_type,
                          void (*on_close)(void *arg), void *arg);
bool eb_http_stream_write(eb_http_req *req, const void *data, size_t len);
size_t eb_http_stream_pending(eb_http_req *req);
void eb_http_stream_end(eb_http_req *req);
/* Instead of end, when the body cannot be completed (an error after the first chunk): closes
 * the connection without the terminating chunk, so that the client (and a proxy in between)
 * sees an incomplete transfer rather than a complete but short body; frees req. Accounted as a
 * 500. */
void eb_http_stream_abort(eb_http_req *req);

/* Adds a response header before replying. */
void eb_http_add_header(eb_http_req *req, const char *name, const char *value);

#endif
