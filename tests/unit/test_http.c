/* test_http.c -- eb_http_reply_file against a real evhttp server on loopback, asked by libevent's
 * HTTP client on the same loop: a file goes out whole with its type and attachment name (quoted),
 * an empty file as an empty body, and a file that cannot be sent (a directory, or shorter than
 * the size given) as a JSON error carrying none of the file's headers. */
#include "evalbus/http.h"
#include "evalbus/log.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define FILE_TYPE "application/x-ndjson"

typedef struct file_case {
    const char *what;
    const char *content; /* written to the file; NULL: the file is a directory */
    size_t size;         /* given to eb_http_reply_file */
    const char *attachment;
    int want_code;
    const char *want_body;        /* NULL: a JSON error, io_error */
    const char *want_disposition; /* NULL: no Content-Disposition */
} file_case;

static const file_case cases[] = {
    {"a file", "hello, file\n", 12, "data.jsonl", 200, "hello, file\n",
     "attachment; filename=\"data.jsonl\""},
    {"the first bytes of a file", "hello, file\n", 5, "data.jsonl", 200, "hello",
     "attachment; filename=\"data.jsonl\""},
    {"a name to quote", "x", 1, "a\"b\\c\nd\xc3\xa9.csv", 200, "x",
     "attachment; filename=\"a\\\"b\\\\c_d__.csv\""},
    {"no attachment", "x", 1, NULL, 200, "x", NULL},
    {"an empty file", "", 0, "empty.jsonl", 200, "", "attachment; filename=\"empty.jsonl\""},
    {"a file shorter than the size", "short", 100, "data.jsonl", 500, NULL, NULL},
    {"a directory", NULL, 4096, "data.jsonl", 500, NULL, NULL},
};

typedef struct response {
    bool done;
    int code;
    char *body;
    size_t len;
    int n_type, n_disposition, n_request_id;
    char *type, *disposition;
} response;

static struct event_base *base;
static char dir[64];
static const file_case *current;
static char current_path[128];

/* The route's handler: sends the current case's file. */
static void serve_file(eb_http_req *req, void *ctx)
{
    int fd = open(current_path, O_RDONLY | O_CLOEXEC);

    (void)ctx;
    assert_true(fd >= 0);
    eb_http_reply_file(req, 200, FILE_TYPE, current->attachment, fd, current->size);
}

static const eb_http_route routes[] = {
    {"GET", "/file", serve_file, true, EB_ROLE_VIEWER, 0, false, false, NULL},
};

static void on_response(struct evhttp_request *r, void *arg)
{
    response *res = arg;
    struct evkeyval *kv;
    struct evbuffer *b;

    res->done = true;
    event_base_loopbreak(base);
    if (!r)
        return;
    res->code = evhttp_request_get_response_code(r);
    TAILQ_FOREACH(kv, evhttp_request_get_input_headers(r), next)
    {
        if (strcasecmp(kv->key, "Content-Type") == 0) {
            res->n_type++;
            free(res->type);
            res->type = strdup(kv->value);
        } else if (strcasecmp(kv->key, "Content-Disposition") == 0) {
            res->n_disposition++;
            free(res->disposition);
            res->disposition = strdup(kv->value);
        } else if (strcasecmp(kv->key, "X-Request-Id") == 0) {
            res->n_request_id++;
        }
    }
    b = evhttp_request_get_input_buffer(r);
    res->len = evbuffer_get_length(b);
    res->body = calloc(1, res->len + 1);
    evbuffer_remove(b, res->body, res->len);
}

/* A loopback port free a moment ago. */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int s = socket(AF_INET, SOCK_STREAM, 0), port;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &len), 0);
    port = ntohs(a.sin_port);
    close(s);
    return port;
}

static void write_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, strlen(content), f), strlen(content));
    assert_int_equal(fclose(f), 0);
}

static void test_reply_file_table(void **state)
{
    eb_http_options opts = {.service = "test", .addr = "127.0.0.1", .max_body = 1024};
    eb_http_server *srv = NULL;
    int port = 0;

    (void)state;
    base = event_base_new();
    assert_non_null(base);
    snprintf(dir, sizeof(dir), "/tmp/evalbus-test-http-XXXXXX");
    assert_non_null(mkdtemp(dir));
    for (int attempt = 0; attempt < 20 && !srv; attempt++) {
        opts.port = port = free_port();
        srv = eb_http_server_new(base, &opts, routes, 1, NULL);
        if (eb_http_listen(srv) != EB_OK) {
            eb_http_server_free(srv);
            srv = NULL;
        }
    }
    assert_non_null(srv);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const file_case *c = &cases[i];
        struct evhttp_connection *conn =
            evhttp_connection_base_new(base, NULL, "127.0.0.1", (ev_uint16_t)port);
        struct evhttp_request *r;
        struct timeval limit = {5, 0};
        response res = {0};

        current = c;
        snprintf(current_path, sizeof(current_path), "%s/case-%zu", dir, i);
        if (c->content)
            write_file(current_path, c->content);
        else
            assert_int_equal(mkdir(current_path, 0700), 0);
        r = evhttp_request_new(on_response, &res);
        evhttp_add_header(evhttp_request_get_output_headers(r), "Host", "127.0.0.1");
        assert_int_equal(evhttp_make_request(conn, r, EVHTTP_REQ_GET, "/file"), 0);
        event_base_loopexit(base, &limit);
        event_base_dispatch(base);
        if (!res.done)
            fail_msg("%s: no answer within 5 s", c->what);
        if (res.code != c->want_code)
            fail_msg("%s: status %d, want %d: %s", c->what, res.code, c->want_code, res.body);
        if (res.n_type != 1 || res.n_request_id != 1)
            fail_msg("%s: %d Content-Type and %d X-Request-Id headers, want one each", c->what,
                     res.n_type, res.n_request_id);
        if (c->want_body) {
            assert_string_equal(res.type, FILE_TYPE);
            if (res.len != strlen(c->want_body) || memcmp(res.body, c->want_body, res.len) != 0)
                fail_msg("%s: body '%s', want '%s'", c->what, res.body, c->want_body);
        } else {
            assert_string_equal(res.type, "application/json");
            if (!strstr(res.body, "\"code\":\"io_error\""))
                fail_msg("%s: not a JSON io_error: %s", c->what, res.body);
        }
        if (c->want_disposition) {
            if (res.n_disposition != 1 || strcmp(res.disposition, c->want_disposition) != 0)
                fail_msg("%s: Content-Disposition '%s' (%d), want '%s'", c->what,
                         res.disposition ? res.disposition : "", res.n_disposition,
                         c->want_disposition);
        } else if (res.n_disposition != 0) {
            fail_msg("%s: Content-Disposition '%s' on an answer that is not an attachment", c->what,
                     res.disposition);
        }
        evhttp_connection_free(conn);
        if (c->content)
            unlink(current_path);
        else
            rmdir(current_path);
        free(res.body);
        free(res.type);
        free(res.disposition);
    }
    assert_int_equal(eb_http_in_flight(srv), 0);
    eb_http_server_free(srv);
    event_base_free(base);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_file_table),
    };

    eb_log_init("test", "error");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
