/* test_sigv4.c -- unit tests for common/src/sigv4.c.
 * 1. The AWS SigV4 test suite (tests/data/aws-sigv4/, see its README.md): every folder there is
 *    run in header mode (canonical request, string to sign, signature, Authorization value and the
 *    added headers, byte for byte) and in query mode (canonical request, string to sign,
 *    signature, and the presigned request target compared parameter by parameter, since the
 *    suite lists the X-Amz-* parameters unsorted). A small loader parses request.txt (request
 *    line, headers with folded continuation lines, body) and context.json.
 * 2. The S3 API reference's worked examples (Signature Calculations for the Authorization Header,
 *    and the presigned URL of "Authenticating Requests: Using Query Parameters"): GET object with
 *    a range, PUT object, GET bucket lifecycle, list objects, presigned GET, with the published
 *    canonical requests, string-to-sign hashes and signatures.
 * 3. Encoding, path rules, header folding, session tokens and the refusal of malformed input. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "evalbus/crypto.h"
#include "evalbus/mem.h"
#include "evalbus/sigv4.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define VEC_DIR EVALBUS_TEST_DATA "/aws-sigv4"

/* Every folder in VEC_DIR; test_every_vector_is_listed checks that none is missed. */
static const char *const vector_names[] = {
    "get-header-key-duplicate",
    "get-header-value-multiline",
    "get-header-value-order",
    "get-header-value-trim",
    "get-relative-normalized",
    "get-relative-relative-normalized",
    "get-relative-relative-unnormalized",
    "get-relative-unnormalized",
    "get-slash-dot-slash-normalized",
    "get-slash-dot-slash-unnormalized",
    "get-slash-normalized",
    "get-slash-pointless-dot-normalized",
    "get-slash-pointless-dot-unnormalized",
    "get-slash-unnormalized",
    "get-slashes-normalized",
    "get-slashes-unnormalized",
    "get-space-normalized",
    "get-space-unnormalized",
    "get-unreserved",
    "get-utf8",
    "get-vanilla",
    "get-vanilla-empty-query-key",
    "get-vanilla-query",
    "get-vanilla-query-order-encoded",
    "get-vanilla-query-order-key-case",
    "get-vanilla-query-unreserved",
    "get-vanilla-utf8-query",
    "get-vanilla-with-session-token",
    "post-header-key-case",
    "post-header-key-sort",
    "post-header-value-case",
    "post-sts-header-after",
    "post-sts-header-before",
    "post-vanilla",
    "post-vanilla-empty-query-value",
    "post-vanilla-query",
    "post-x-www-form-urlencoded",
    "post-x-www-form-urlencoded-parameters",
};
#define NVECTORS (sizeof vector_names / sizeof *vector_names)

/* ---- loader ------------------------------------------------------------------------------ */

#define MAX_PAIRS 32

typedef struct vector {
    eb_sigv4_request req;
    eb_sigv4_pair headers[MAX_PAIRS];
    eb_sigv4_pair query[MAX_PAIRS];
    char payload_hash[65];
    char *owned[4 * MAX_PAIRS + 16]; /* every string the pairs and req point into */
    size_t nowned;
} vector;

static char *keep(vector *v, char *s)
{
    assert_true(v->nowned < sizeof v->owned / sizeof *v->owned);
    v->owned[v->nowned++] = s;
    return s;
}

static void vector_free(vector *v)
{
    for (size_t i = 0; i < v->nowned; i++)
        free(v->owned[i]);
    v->nowned = 0;
}

static bool read_file(const char *dir, const char *name, eb_buf *out)
{
    char path[512];
    char chunk[4096];
    size_t n;
    FILE *f;

    snprintf(path, sizeof path, "%s/%s/%s", VEC_DIR, dir, name);
    f = fopen(path, "rb");
    if (!f)
        return false;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        eb_buf_append(out, chunk, n);
    fclose(f);
    eb_buf_append(out, "", 0); /* allocated and terminated even if empty */
    return true;
}

static char *slurp(const char *dir, const char *name)
{
    eb_buf b = {0};

    if (!read_file(dir, name, &b)) {
        print_error("cannot read %s/%s\n", dir, name);
        fail();
    }
    return eb_buf_steal(&b);
}

/* Percent-decodes s[0..n) into a new string. */
static char *pct_decode(const char *s, size_t n)
{
    eb_buf b = {0};

    eb_buf_reserve(&b, n);
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && eb_hex_digit(s[i + 1]) >= 0 &&
            eb_hex_digit(s[i + 2]) >= 0) {
            eb_buf_putc(&b, (char)(eb_hex_digit(s[i + 1]) * 16 + eb_hex_digit(s[i + 2])));
            i += 2;
        } else {
            eb_buf_putc(&b, s[i]);
        }
    }
    return eb_buf_steal(&b);
}

static time_t parse_utc(const char *s)
{
    struct tm tm = {0};

    assert_int_equal(sscanf(s, "%d-%d-%dT%d:%d:%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                            &tm.tm_hour, &tm.tm_min, &tm.tm_sec),
                     6);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

/* Splits "a=b&c" into decoded pairs. */
static void parse_query(vector *v, const char *q)
{
    size_t *n = &v->req.nquery;

    while (*q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        const char *eq = memchr(q, '=', len);
        size_t nlen = eq ? (size_t)(eq - q) : len;
        assert_true(*n < MAX_PAIRS);
        v->query[*n].name = keep(v, pct_decode(q, nlen));
        v->query[*n].value = keep(v, eq ? pct_decode(eq + 1, len - nlen - 1) : eb_strdup(""));
        (*n)++;
        q += len;
        if (*q == '&')
            q++;
    }
}

/* Parses request.txt: "METHOD target HTTP/1.1", header lines ("Name:value", continuation lines
 * starting with a blank are unfolded into the previous value with one space), a blank line and
 * the body. Returns the body (owned by v). */
static const char *parse_request(vector *v, char *text)
{
    char *line = text;
    char *nl = strchr(line, '\n');
    char *sp1, *sp2, *qm;
    const char *body = "";

    assert_non_null(nl);
    *nl = '\0';
    sp1 = strchr(line, ' ');
    sp2 = strrchr(line, ' '); /* the path may hold spaces */
    assert_true(sp1 && sp2 && sp2 > sp1);
    v->req.method = keep(v, eb_strndup(line, (size_t)(sp1 - line)));
    *sp2 = '\0';
    qm = strchr(sp1 + 1, '?');
    if (qm) {
        *qm = '\0';
        parse_query(v, qm + 1);
    }
    v->req.path = keep(v, eb_strdup(sp1 + 1));

    for (line = nl + 1; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (*line == '\0') {
            body = nl ? nl + 1 : "";
            break;
        }
        if (*line == ' ' || *line == '\t') {
            size_t h = v->req.nheaders;
            assert_true(h > 0);
            v->headers[h - 1].value = keep(v, eb_asprintf("%s %s", v->headers[h - 1].value, line));
        } else {
            char *colon = strchr(line, ':');
            size_t h = v->req.nheaders++;
            assert_non_null(colon);
            assert_true(h < MAX_PAIRS);
            v->headers[h].name = keep(v, eb_strndup(line, (size_t)(colon - line)));
            v->headers[h].value = keep(v, eb_strdup(colon + 1));
        }
        if (!nl)
            break;
    }
    return body;
}

static void load_vector(vector *v, const char *name)
{
    char *req_text = slurp(name, "request.txt");
    char *ctx_text = slurp(name, "context.json");
    cJSON *ctx = cJSON_Parse(ctx_text);
    const cJSON *creds, *token, *omit;
    const char *body;

    memset(v, 0, sizeof *v);
    keep(v, req_text);
    assert_non_null(ctx);
    body = parse_request(v, req_text);
    v->req.headers = v->headers;
    v->req.query = v->query;

    creds = cJSON_GetObjectItemCaseSensitive(ctx, "credentials");
    v->req.access_key =
        keep(v, eb_strdup(cJSON_GetObjectItemCaseSensitive(creds, "access_key_id")->valuestring));
    v->req.secret_key = keep(
        v, eb_strdup(cJSON_GetObjectItemCaseSensitive(creds, "secret_access_key")->valuestring));
    token = cJSON_GetObjectItemCaseSensitive(creds, "token");
    if (cJSON_IsString(token))
        v->req.session_token = keep(v, eb_strdup(token->valuestring));
    omit = cJSON_GetObjectItemCaseSensitive(ctx, "omit_session_token");
    v->req.omit_session_token = cJSON_IsTrue(omit);
    v->req.region =
        keep(v, eb_strdup(cJSON_GetObjectItemCaseSensitive(ctx, "region")->valuestring));
    v->req.service =
        keep(v, eb_strdup(cJSON_GetObjectItemCaseSensitive(ctx, "service")->valuestring));
    v->req.time = parse_utc(cJSON_GetObjectItemCaseSensitive(ctx, "timestamp")->valuestring);
    v->req.expires =
        (unsigned)cJSON_GetObjectItemCaseSensitive(ctx, "expiration_in_seconds")->valueint;
    v->req.path_rule = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ctx, "normalize"))
                           ? EB_SIGV4_PATH_NORMALIZE
                           : EB_SIGV4_PATH_ENCODE;
    /* The suite always hashes the body; "sign_body" adds the x-amz-content-sha256 header. */
    v->req.content_sha256_header = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(ctx, "sign_body"));
    eb_sha256_hex(body, strlen(body), v->payload_hash);
    v->req.payload_hash = v->payload_hash;

    cJSON_Delete(ctx);
    free(ctx_text);
}

/* ---- the suite, header mode ---------------------------------------------------------------- */

static void check_file_equal(const char *name, const char *file, const eb_buf *got)
{
    char *want = slurp(name, file);
    bool same = strcmp(want, got->data) == 0;

    if (!same)
        print_error("%s/%s differs\n--- want\n%s\n--- got\n%s\n", name, file, want, got->data);
    free(want);
    assert_true(same);
}

/* The header lines of a signed-request file ("Name:value", each cut at its end), continuation
 * lines dropped. */
static size_t signed_header_lines(char *text, char **lines, size_t max)
{
    size_t n = 0;
    char *line = strchr(text, '\n');

    assert_non_null(line);
    for (line++; *line && *line != '\n';) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        if (*line != ' ' && *line != '\t') {
            assert_true(n < max);
            lines[n++] = line;
        }
        line = nl + 1;
    }
    return n;
}

static void test_vector_header(void **state)
{
    const char *name = *state;
    vector v;
    eb_buf got = {0};
    char sig[65];
    char *signed_req, *auth_line, *lines[MAX_PAIRS + 8], *p;
    size_t nlines, nadded = 0;

    load_vector(&v, name);

    assert_int_equal(eb_sigv4_canonical_request(&v.req, EB_SIGV4_HEADER, &got), EB_OK);
    check_file_equal(name, "header-canonical-request.txt", &got);
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_string_to_sign(&v.req, EB_SIGV4_HEADER, &got), EB_OK);
    check_file_equal(name, "header-string-to-sign.txt", &got);
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_signature(&v.req, EB_SIGV4_HEADER, sig), EB_OK);
    eb_buf_puts(&got, sig);
    check_file_equal(name, "header-signature.txt", &got);

    /* Authorization value, byte for byte, from the signed request. */
    signed_req = slurp(name, "header-signed-request.txt");
    auth_line = strstr(signed_req, "\nAuthorization:");
    assert_non_null(auth_line);
    auth_line += strlen("\nAuthorization:");
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_authorization(&v.req, &got), EB_OK);
    assert_memory_equal(got.data, auth_line, got.len);
    assert_int_equal(auth_line[got.len], '\n');

    /* Each header the signer adds is in the signed request with the same value, and the signed
     * request holds nothing else beyond the original headers. */
    nlines = signed_header_lines(signed_req, lines, sizeof lines / sizeof *lines);
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_sign_headers(&v.req, &got), EB_OK);
    for (p = got.data; *p; nadded++) {
        char *crlf = strstr(p, "\r\n");
        char *colon = strchr(p, ':');
        size_t nlen;
        bool found = false;
        assert_non_null(crlf);
        assert_true(colon && colon < crlf && colon[1] == ' ');
        nlen = (size_t)(colon - p);
        for (size_t i = 0; i < nlines && !found; i++)
            found = !strncasecmp(lines[i], p, nlen) && lines[i][nlen] == ':' &&
                    strlen(lines[i] + nlen + 1) == (size_t)(crlf - colon - 2) &&
                    !memcmp(lines[i] + nlen + 1, colon + 2, (size_t)(crlf - colon - 2));
        if (!found) {
            print_error("%s: added header not in the signed request: %.*s\n", name, (int)(crlf - p),
                        p);
            fail();
        }
        p = crlf + 2;
    }
    assert_int_equal(nlines, v.req.nheaders + nadded);

    free(signed_req);
    eb_buf_free(&got);
    vector_free(&v);
}

/* ---- the suite, query mode ----------------------------------------------------------------- */

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Splits a query ("a=b&c=d") into its parameters, percent-decoded (the suite writes some raw,
 * as the request had them), and sorted. The caller frees each string. */
static size_t sorted_params(char *query, char **out, size_t max)
{
    size_t n = 0;
    char *save = NULL;

    for (char *tok = strtok_r(query, "&", &save); tok; tok = strtok_r(NULL, "&", &save)) {
        assert_true(n < max);
        out[n++] = pct_decode(tok, strlen(tok));
    }
    qsort(out, n, sizeof *out, str_cmp);
    return n;
}

static void test_vector_query(void **state)
{
    const char *name = *state;
    vector v;
    eb_buf got = {0};
    char sig[65];
    char *signed_req, *target, *sp, *want_q, *got_q;
    char *want_params[MAX_PAIRS + 8] = {0}, *got_params[MAX_PAIRS + 8] = {0};
    size_t nwant, ngot;

    load_vector(&v, name);

    assert_int_equal(eb_sigv4_canonical_request(&v.req, EB_SIGV4_QUERY, &got), EB_OK);
    check_file_equal(name, "query-canonical-request.txt", &got);
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_string_to_sign(&v.req, EB_SIGV4_QUERY, &got), EB_OK);
    check_file_equal(name, "query-string-to-sign.txt", &got);
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_signature(&v.req, EB_SIGV4_QUERY, sig), EB_OK);
    eb_buf_puts(&got, sig);
    check_file_equal(name, "query-signature.txt", &got);

    /* The presigned target: same path, same set of parameters as the signed request. */
    signed_req = slurp(name, "query-signed-request.txt");
    target = strchr(signed_req, ' ') + 1;
    sp = strstr(target, " HTTP/1.1\n");
    assert_non_null(sp);
    *sp = '\0';
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_presign(&v.req, NULL, &got), EB_OK);
    want_q = strchr(target, '?');
    got_q = strchr(got.data, '?');
    assert_true(want_q && got_q);
    *want_q++ = '\0';
    *got_q++ = '\0';
    assert_string_equal(got.data, target);
    nwant = sorted_params(want_q, want_params, sizeof want_params / sizeof *want_params);
    ngot = sorted_params(got_q, got_params, sizeof got_params / sizeof *got_params);
    assert_int_equal(ngot, nwant);
    for (size_t i = 0; i < nwant; i++)
        assert_string_equal(got_params[i], want_params[i]);
    for (size_t i = 0; i < nwant; i++) {
        free(want_params[i]);
        free(got_params[i]);
    }

    free(signed_req);
    eb_buf_free(&got);
    vector_free(&v);
}

static void test_every_vector_is_listed(void **state)
{
    DIR *d = opendir(VEC_DIR);
    struct dirent *e;
    size_t seen = 0;

    (void)state;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        bool listed = false;
        if (e->d_name[0] == '.' || strchr(e->d_name, '.'))
            continue; /* ".", "..", README.md */
        for (size_t i = 0; i < NVECTORS && !listed; i++)
            listed = !strcmp(e->d_name, vector_names[i]);
        if (!listed) {
            print_error("vector folder %s is not in vector_names\n", e->d_name);
            fail();
        }
        seen++;
    }
    closedir(d);
    assert_int_equal(seen, NVECTORS);
}

/* ---- S3 API reference examples ------------------------------------------------------------- */

/* Shared by every example: the documented credentials, time, region and bucket. */
#define S3_AK "AKIAIOSFODNN7EXAMPLE"
#define S3_SK "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define S3_HOST "examplebucket.s3.amazonaws.com"
#define S3_TIME ((time_t)1369353600) /* 2013-05-24T00:00:00Z */
#define S3_SCOPE "20130524/us-east-1/s3/aws4_request"

static eb_sigv4_request s3_request(const char *method, const char *path)
{
    eb_sigv4_request r = {0};

    r.method = method;
    r.path = path;
    r.path_rule = EB_SIGV4_PATH_S3;
    r.region = "us-east-1";
    r.service = "s3";
    r.access_key = S3_AK;
    r.secret_key = S3_SK;
    r.time = S3_TIME;
    r.content_sha256_header = true;
    return r;
}

/* Checks the canonical request, the string to sign (with the published hash of the canonical
 * request), the signature, and the Authorization value. */
static void check_s3(const eb_sigv4_request *r, const char *creq, const char *creq_hash,
                     const char *signed_headers, const char *signature)
{
    eb_buf got = {0};
    char sig[65];
    char *want;

    assert_int_equal(eb_sigv4_canonical_request(r, EB_SIGV4_HEADER, &got), EB_OK);
    assert_string_equal(got.data, creq);
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_string_to_sign(r, EB_SIGV4_HEADER, &got), EB_OK);
    want = eb_asprintf("AWS4-HMAC-SHA256\n20130524T000000Z\n" S3_SCOPE "\n%s", creq_hash);
    assert_string_equal(got.data, want);
    free(want);
    assert_int_equal(eb_sigv4_signature(r, EB_SIGV4_HEADER, sig), EB_OK);
    assert_string_equal(sig, signature);
    /* The documentation prints the header without spaces after the commas; S3 accepts both, and
     * the generic suite (checked byte for byte above) has them. */
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_authorization(r, &got), EB_OK);
    want = eb_asprintf("AWS4-HMAC-SHA256 Credential=" S3_AK "/" S3_SCOPE
                       ", SignedHeaders=%s, Signature=%s",
                       signed_headers, signature);
    assert_string_equal(got.data, want);
    free(want);
    eb_buf_free(&got);
}

static void test_s3_get_object_range(void **state)
{
    const eb_sigv4_pair headers[] = {{"Host", S3_HOST}, {"Range", "bytes=0-9"}};
    eb_sigv4_request r = s3_request("GET", "/test.txt");

    (void)state;
    r.headers = headers;
    r.nheaders = 2;
    r.payload_hash = EB_SIGV4_EMPTY_SHA256;
    check_s3(&r,
             "GET\n/test.txt\n\nhost:" S3_HOST "\nrange:bytes=0-9\n"
             "x-amz-content-sha256:" EB_SIGV4_EMPTY_SHA256 "\n"
             "x-amz-date:20130524T000000Z\n\n"
             "host;range;x-amz-content-sha256;x-amz-date\n" EB_SIGV4_EMPTY_SHA256,
             "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972",
             "host;range;x-amz-content-sha256;x-amz-date",
             "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

static void test_s3_put_object(void **state)
{
    static const char body[] = "Welcome to Amazon S3.";
    const eb_sigv4_pair headers[] = {{"Date", "Fri, 24 May 2013 00:00:00 GMT"},
                                     {"Host", S3_HOST},
                                     {"x-amz-storage-class", "REDUCED_REDUNDANCY"}};
    char hash[65];
    eb_buf path = {0};
    eb_sigv4_request r;

    (void)state;
    /* The key "test$file.text" goes on the request line encoded once, and is signed so. */
    eb_buf_putc(&path, '/');
    eb_sigv4_uri_encode(&path, "test$file.text", strlen("test$file.text"), true);
    assert_string_equal(path.data, "/test%24file.text");
    eb_sha256_hex(body, strlen(body), hash);
    assert_string_equal(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");

    r = s3_request("PUT", path.data);
    r.headers = headers;
    r.nheaders = 3;
    r.payload_hash = hash;
    check_s3(
        &r,
        "PUT\n/test%24file.text\n\n"
        "date:Fri, 24 May 2013 00:00:00 GMT\nhost:" S3_HOST "\n"
        "x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
        "x-amz-date:20130524T000000Z\nx-amz-storage-class:REDUCED_REDUNDANCY\n\n"
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072",
        "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d",
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    eb_buf_free(&path);
}

static void test_s3_get_bucket_lifecycle(void **state)
{
    const eb_sigv4_pair headers[] = {{"Host", S3_HOST}};
    const eb_sigv4_pair query[] = {{"lifecycle", NULL}}; /* "?lifecycle" signs as "lifecycle=" */
    eb_sigv4_request r = s3_request("GET", "/");

    (void)state;
    r.headers = headers;
    r.nheaders = 1;
    r.query = query;
    r.nquery = 1;
    check_s3(&r,
             "GET\n/\nlifecycle=\nhost:" S3_HOST "\n"
             "x-amz-content-sha256:" EB_SIGV4_EMPTY_SHA256 "\n"
             "x-amz-date:20130524T000000Z\n\n"
             "host;x-amz-content-sha256;x-amz-date\n" EB_SIGV4_EMPTY_SHA256,
             "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca",
             "host;x-amz-content-sha256;x-amz-date",
             "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

static void test_s3_list_objects(void **state)
{
    const eb_sigv4_pair headers[] = {{"Host", S3_HOST}};
    const eb_sigv4_pair query[] = {{"prefix", "J"}, {"max-keys", "2"}}; /* signer sorts */
    eb_sigv4_request r = s3_request("GET", "/");

    (void)state;
    r.headers = headers;
    r.nheaders = 1;
    r.query = query;
    r.nquery = 2;
    check_s3(&r,
             "GET\n/\nmax-keys=2&prefix=J\nhost:" S3_HOST "\n"
             "x-amz-content-sha256:" EB_SIGV4_EMPTY_SHA256 "\n"
             "x-amz-date:20130524T000000Z\n\n"
             "host;x-amz-content-sha256;x-amz-date\n" EB_SIGV4_EMPTY_SHA256,
             "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7",
             "host;x-amz-content-sha256;x-amz-date",
             "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

static void test_s3_presigned_get(void **state)
{
    const eb_sigv4_pair headers[] = {{"Host", S3_HOST}};
    eb_sigv4_request r = s3_request("GET", "/test.txt");
    eb_buf got = {0};
    char sig[65];

    (void)state;
    r.headers = headers;
    r.nheaders = 1;
    r.payload_hash = EB_SIGV4_UNSIGNED_PAYLOAD;
    r.content_sha256_header = false;
    r.expires = 86400;

    assert_int_equal(eb_sigv4_canonical_request(&r, EB_SIGV4_QUERY, &got), EB_OK);
    assert_string_equal(got.data,
                        "GET\n/test.txt\n"
                        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
                        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%"
                        "2Faws4_request"
                        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400"
                        "&X-Amz-SignedHeaders=host\n"
                        "host:" S3_HOST "\n\nhost\nUNSIGNED-PAYLOAD");
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_string_to_sign(&r, EB_SIGV4_QUERY, &got), EB_OK);
    assert_string_equal(got.data,
                        "AWS4-HMAC-SHA256\n20130524T000000Z\n" S3_SCOPE "\n"
                        "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04");
    assert_int_equal(eb_sigv4_signature(&r, EB_SIGV4_QUERY, sig), EB_OK);
    assert_string_equal(sig, "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_presign(&r, "https://" S3_HOST, &got), EB_OK);
    assert_string_equal(
        got.data,
        "https://examplebucket.s3.amazonaws.com/test.txt"
        "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature="
        "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
    eb_buf_free(&got);
}

/* ---- building blocks ----------------------------------------------------------------------- */

static void test_signing_key(void **state)
{
    /* The IAM documentation's key-derivation example. */
    unsigned char key[32];
    char hex[65];

    (void)state;
    eb_sigv4_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam",
                         key);
    eb_hex_encode(key, sizeof key, hex);
    assert_string_equal(hex, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

static void test_uri_encode(void **state)
{
    static const struct {
        const char *in;
        bool keep_slash;
        const char *out;
    } cases[] = {
        {"", false, ""},
        {"AZaz09-._~", false, "AZaz09-._~"},
        {"a b+c", false, "a%20b%2Bc"},
        {"a/b", false, "a%2Fb"},
        {"a/b", true, "a/b"},
        {"100%", true, "100%25"},
        {"!'()*=&?#$", false, "%21%27%28%29%2A%3D%26%3F%23%24"},
        {"\xe1\x88\xb4", false, "%E1%88%B4"},
        {"exports/2024 01/part-0001.jsonl.gz", true, "exports/2024%2001/part-0001.jsonl.gz"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        eb_buf b = {0};
        eb_sigv4_uri_encode(&b, cases[i].in, strlen(cases[i].in), cases[i].keep_slash);
        assert_string_equal(b.data, cases[i].out);
        eb_buf_free(&b);
    }
}

static void test_amz_date(void **state)
{
    char out[17];

    (void)state;
    assert_int_equal(eb_sigv4_amz_date(0, out), EB_OK);
    assert_string_equal(out, "19700101T000000Z");
    assert_int_equal(eb_sigv4_amz_date(S3_TIME, out), EB_OK);
    assert_string_equal(out, "20130524T000000Z");
    assert_int_equal(eb_sigv4_amz_date(951782400, out), EB_OK); /* leap day */
    assert_string_equal(out, "20000229T000000Z");
    assert_int_equal(eb_sigv4_amz_date(-1, out), EB_ERR_INVALID);
}

/* The second line of the canonical request, the canonical URI. */
static char *canonical_uri_of(const char *path, eb_sigv4_path_rule rule)
{
    const eb_sigv4_pair headers[] = {{"Host", "h"}};
    eb_sigv4_request r = s3_request("GET", path);
    eb_buf got = {0};
    char *start, *end, *uri;

    r.path_rule = rule;
    r.headers = headers;
    r.nheaders = 1;
    assert_int_equal(eb_sigv4_canonical_request(&r, EB_SIGV4_HEADER, &got), EB_OK);
    start = strchr(got.data, '\n') + 1;
    end = strchr(start, '\n');
    uri = eb_strndup(start, (size_t)(end - start));
    eb_buf_free(&got);
    return uri;
}

static void test_path_rules(void **state)
{
    static const struct {
        const char *path;
        const char *s3, *encode, *normalize;
    } cases[] = {
        /* S3 signs the path as sent; other services encode it once more. */
        {"/a%20b", "/a%20b", "/a%2520b", "/a%2520b"},
        {"/test%24file.text", "/test%24file.text", "/test%2524file.text", "/test%2524file.text"},
        /* S3 keys may hold "//", "." and ".."; only the generic rule removes them. */
        {"/bucket//a/./b/../c", "/bucket//a/./b/../c", "/bucket//a/./b/../c", "/bucket/a/c"},
        {"/a/b/..", "/a/b/..", "/a/b/..", "/a/"},
        {"/a/b/../", "/a/b/../", "/a/b/../", "/a/"},
        {"/a/./", "/a/./", "/a/./", "/a/"},
        {"/../..", "/../..", "/../..", "/"},
        {"", "/", "/", "/"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *s3 = canonical_uri_of(cases[i].path, EB_SIGV4_PATH_S3);
        char *enc = canonical_uri_of(cases[i].path, EB_SIGV4_PATH_ENCODE);
        char *norm = canonical_uri_of(cases[i].path, EB_SIGV4_PATH_NORMALIZE);
        assert_string_equal(s3, cases[i].s3);
        assert_string_equal(enc, cases[i].encode);
        assert_string_equal(norm, cases[i].normalize);
        free(s3);
        free(enc);
        free(norm);
    }
}

static void test_headers_and_query_canonical_form(void **state)
{
    const eb_sigv4_pair headers[] = {
        {"Host", "h"}, {"X-B", "  a   b\t\tc  "}, {"x-b", "d"}, {"X-A", "\tz\t"}, {"X-Empty", ""},
    };
    const eb_sigv4_pair query[] = {
        {"b", "2"}, {"a", "x y"}, {"a", "w"}, {"k/ey", "v=1&2"}, {"empty", NULL},
    };
    eb_sigv4_request r = s3_request("GET", "/k");
    eb_buf got = {0};

    (void)state;
    r.headers = headers;
    r.nheaders = sizeof headers / sizeof *headers;
    r.query = query;
    r.nquery = sizeof query / sizeof *query;
    r.content_sha256_header = false;
    assert_int_equal(eb_sigv4_canonical_request(&r, EB_SIGV4_HEADER, &got), EB_OK);
    assert_string_equal(got.data, "GET\n/k\n"
                                  "a=w&a=x%20y&b=2&empty=&k%2Fey=v%3D1%262\n"
                                  "host:h\nx-a:z\nx-amz-date:20130524T000000Z\nx-b:a b c,d\n"
                                  "x-empty:\n\n"
                                  "host;x-a;x-amz-date;x-b;x-empty\n" EB_SIGV4_EMPTY_SHA256);
    eb_buf_free(&got);
}

static void test_s3_session_token(void **state)
{
    const eb_sigv4_pair headers[] = {{"Host", S3_HOST}};
    eb_sigv4_request r = s3_request("PUT", "/exports/job-1/part-1");
    eb_buf got = {0};
    const char *sh;

    (void)state;
    r.headers = headers;
    r.nheaders = 1;
    r.session_token = "FwoGZXIvYXdzE/token+with=chars";
    r.payload_hash = EB_SIGV4_UNSIGNED_PAYLOAD;

    /* Header mode: the token is sent and signed. */
    assert_int_equal(eb_sigv4_sign_headers(&r, &got), EB_OK);
    assert_non_null(strstr(got.data, "X-Amz-Date: 20130524T000000Z\r\n"));
    assert_non_null(strstr(got.data, "X-Amz-Content-SHA256: UNSIGNED-PAYLOAD\r\n"));
    assert_non_null(strstr(got.data, "X-Amz-Security-Token: FwoGZXIvYXdzE/token+with=chars\r\n"));
    sh = strstr(got.data, "SignedHeaders=host;x-amz-content-sha256;x-amz-date;"
                          "x-amz-security-token, ");
    assert_non_null(sh);

    /* Query mode: the token is a signed parameter of the URL. */
    r.expires = 600;
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_canonical_request(&r, EB_SIGV4_QUERY, &got), EB_OK);
    assert_non_null(strstr(got.data, "&X-Amz-Security-Token=FwoGZXIvYXdzE%2Ftoken%2Bwith%3Dchars"
                                     "&X-Amz-SignedHeaders=host\n"));
    eb_buf_reset(&got);
    assert_int_equal(eb_sigv4_presign(&r, NULL, &got), EB_OK);
    assert_non_null(strstr(got.data, "&X-Amz-Security-Token=FwoGZXIvYXdzE%2Ftoken%2Bwith%3Dchars"
                                     "&X-Amz-SignedHeaders=host&X-Amz-Signature="));
    eb_buf_free(&got);
}

/* A malformed request is refused with EB_ERR_INVALID and the output buffer left as it was. */
static void test_refusals(void **state)
{
    enum {
        NO_HOST,
        LOWER_METHOD,
        RELATIVE_PATH,
        PATH_QUESTION,
        EXPIRES_ZERO,
        EXPIRES_LONG,
        BAD_HASH,
        TOKEN_CRLF,
        VALUE_CRLF,
        BAD_NAME,
        REGION_SLASH,
        NO_SECRET,
        NEGATIVE_TIME,
        OWN_DATE_HEADER,
        OWN_SIGNATURE_PARAM,
        NCASES
    };
    (void)state;
    for (int c = 0; c < NCASES; c++) {
        eb_sigv4_pair headers[] = {{"Host", S3_HOST}, {"X-Ok", "v"}};
        eb_sigv4_pair query[] = {{"uploads", NULL}};
        eb_sigv4_request r = s3_request("GET", "/k");
        eb_sigv4_mode mode = EB_SIGV4_HEADER;
        eb_buf out = {0};
        char sig[65] = "untouched";

        r.expires = 60;
        switch (c) {
        case NO_HOST:
            headers[0].name = "X-Host";
            break;
        case LOWER_METHOD:
            r.method = "get";
            break;
        case RELATIVE_PATH:
            r.path = "k";
            break;
        case PATH_QUESTION:
            r.path = "/k?x=1";
            break;
        case EXPIRES_ZERO:
            r.expires = 0;
            mode = EB_SIGV4_QUERY;
            break;
        case EXPIRES_LONG:
            r.expires = EB_SIGV4_MAX_EXPIRES + 1;
            mode = EB_SIGV4_QUERY;
            break;
        case BAD_HASH:
            r.payload_hash = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
            break;
        case TOKEN_CRLF:
            r.session_token = "tok\r\nX-Evil: 1";
            break;
        case VALUE_CRLF:
            headers[1].value = "v\r\nX-Evil: 1";
            break;
        case BAD_NAME:
            headers[1].name = "X Bad";
            break;
        case REGION_SLASH:
            r.region = "us-east-1/x";
            break;
        case NO_SECRET:
            r.secret_key = NULL;
            break;
        case NEGATIVE_TIME:
            r.time = -1;
            break;
        case OWN_DATE_HEADER:
            headers[1].name = "X-Amz-Date";
            break;
        case OWN_SIGNATURE_PARAM:
            query[0].name = "X-Amz-Signature";
            mode = EB_SIGV4_QUERY;
            break;
        }
        r.headers = headers; /* after the switch, which may change them */
        r.nheaders = 2;
        r.query = query;
        r.nquery = 1;
        eb_buf_puts(&out, "kept");
        assert_int_equal(eb_sigv4_canonical_request(&r, mode, &out), EB_ERR_INVALID);
        assert_int_equal(eb_sigv4_string_to_sign(&r, mode, &out), EB_ERR_INVALID);
        assert_int_equal(eb_sigv4_signature(&r, mode, sig), EB_ERR_INVALID);
        if (mode == EB_SIGV4_HEADER) {
            assert_int_equal(eb_sigv4_authorization(&r, &out), EB_ERR_INVALID);
            assert_int_equal(eb_sigv4_sign_headers(&r, &out), EB_ERR_INVALID);
        } else {
            assert_int_equal(eb_sigv4_presign(&r, "https://h", &out), EB_ERR_INVALID);
        }
        assert_string_equal(out.data, "kept");
        assert_string_equal(sig, "untouched");
        eb_buf_free(&out);
    }
}

/* ---- main ---------------------------------------------------------------------------------- */

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_every_vector_is_listed),
        cmocka_unit_test(test_s3_get_object_range),
        cmocka_unit_test(test_s3_put_object),
        cmocka_unit_test(test_s3_get_bucket_lifecycle),
        cmocka_unit_test(test_s3_list_objects),
        cmocka_unit_test(test_s3_presigned_get),
        cmocka_unit_test(test_signing_key),
        cmocka_unit_test(test_uri_encode),
        cmocka_unit_test(test_amz_date),
        cmocka_unit_test(test_path_rules),
        cmocka_unit_test(test_headers_and_query_canonical_form),
        cmocka_unit_test(test_s3_session_token),
        cmocka_unit_test(test_refusals),
    };
    size_t nfixed = sizeof fixed / sizeof *fixed;
    size_t n = nfixed + 2 * NVECTORS;
    struct CMUnitTest *tests = eb_calloc(n, sizeof *tests);
    char **names = eb_calloc(2 * NVECTORS, sizeof *names);
    int failed;

    memcpy(tests, fixed, sizeof fixed);
    for (size_t i = 0; i < NVECTORS; i++) {
        names[2 * i] = eb_asprintf("header/%s", vector_names[i]);
        names[2 * i + 1] = eb_asprintf("query/%s", vector_names[i]);
        tests[nfixed + 2 * i] = (struct CMUnitTest){names[2 * i], test_vector_header, NULL, NULL,
                                                    (void *)vector_names[i]};
        tests[nfixed + 2 * i + 1] = (struct CMUnitTest){names[2 * i + 1], test_vector_query, NULL,
                                                        NULL, (void *)vector_names[i]};
    }
    failed = _cmocka_run_group_tests("test_sigv4", tests, n, NULL, NULL);
    for (size_t i = 0; i < 2 * NVECTORS; i++)
        free(names[i]);
    free(names);
    free(tests);
    return failed;
}
