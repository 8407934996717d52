/* test_store.c -- unit tests for common/src/store.c.
 * 1. The pure helpers (store_int.h), table-driven: store URLs, endpoints, key and bucket rules,
 *    the S3 request path (keys encoded once, '/' kept), the XML scanner (element boundaries,
 *    entities, <Error> after a 200's whitespace), S3 error codes to eb_status and what is
 *    retried, ETag cleaning.
 * 2. eb_store_open's refusals of bad settings.
 * 3. The file:// store end to end in a temporary folder: multipart upload in any part order,
 *    nothing under the final name before completion, ETag / tiling / overlap checks, abort,
 *    listing unfinished uploads, no_overwrite, small objects, limits.
 * The s3:// store is tested against a real server in tests/integration/store.test.mjs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "evalbus/crypto.h"
#include "evalbus/mem.h"
#include "evalbus/store.h"
#include "store_int.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- URLs, endpoints, keys ---------------------------------------------------------------- */

static void test_parse_url(void **state)
{
    static const struct {
        const char *url;
        eb_status st;
        eb_store_kind kind;
        const char *a; /* root (file) or bucket (s3) */
        const char *prefix;
    } cases[] = {
        {"file:///var/lib/evalbus", EB_OK, EB_STORE_FILE, "/var/lib/evalbus", NULL},
        {"file:///var/lib/evalbus/", EB_OK, EB_STORE_FILE, "/var/lib/evalbus", NULL},
        {"file:///var//lib///x//", EB_OK, EB_STORE_FILE, "/var/lib/x", NULL},
        {"file://localhost/srv/e", EB_OK, EB_STORE_FILE, "/srv/e", NULL},
        {"FILE:///srv/e", EB_OK, EB_STORE_FILE, "/srv/e", NULL},
        {"file:///srv/my%20exports", EB_OK, EB_STORE_FILE, "/srv/my exports", NULL},
        {"file:///", EB_OK, EB_STORE_FILE, "/", NULL},
        {"file://relative/path", EB_ERR_INVALID, 0, NULL, NULL},
        {"file:///a/../b", EB_ERR_INVALID, 0, NULL, NULL},
        {"file:///a/./b", EB_ERR_INVALID, 0, NULL, NULL},
        {"file:///a%2", EB_ERR_INVALID, 0, NULL, NULL},
        {"file:///a%00b", EB_ERR_INVALID, 0, NULL, NULL},
        {"file:///a\tb", EB_ERR_INVALID, 0, NULL, NULL},
        {"file:///a?x=1", EB_ERR_INVALID, 0, NULL, NULL},
        {"s3://exports", EB_OK, EB_STORE_S3, "exports", ""},
        {"s3://exports/", EB_OK, EB_STORE_S3, "exports", ""},
        {"s3://exports/team/a", EB_OK, EB_STORE_S3, "exports", "team/a/"},
        {"s3://exports//team/a//", EB_OK, EB_STORE_S3, "exports", "team/a/"},
        {"s3://my.bucket-1/p", EB_OK, EB_STORE_S3, "my.bucket-1", "p/"},
        {"s3://exports/a//b", EB_ERR_INVALID, 0, NULL, NULL},
        {"s3://exports/a/../b", EB_ERR_INVALID, 0, NULL, NULL},
        {"s3://Exports", EB_ERR_INVALID, 0, NULL, NULL},
        {"s3://ex", EB_ERR_INVALID, 0, NULL, NULL},
        {"s3://", EB_ERR_INVALID, 0, NULL, NULL},
        {"s3:///prefix", EB_ERR_INVALID, 0, NULL, NULL},
        {"https://bucket.s3.amazonaws.com", EB_ERR_INVALID, 0, NULL, NULL},
        {"/var/lib/evalbus", EB_ERR_INVALID, 0, NULL, NULL},
        {"", EB_ERR_INVALID, 0, NULL, NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        eb_store_location loc;
        eb_status st = eb_store_parse_url(cases[i].url, &loc);
        if (st != cases[i].st)
            fail_msg("%s: status %d, want %d (%s)", cases[i].url, st, cases[i].st,
                     eb_error_message());
        if (st == EB_OK) {
            assert_int_equal(loc.kind, cases[i].kind);
            if (loc.kind == EB_STORE_FILE) {
                assert_string_equal(loc.root, cases[i].a);
            } else {
                assert_string_equal(loc.bucket, cases[i].a);
                assert_string_equal(loc.prefix, cases[i].prefix);
            }
        }
        eb_store_location_free(&loc);
    }
    assert_int_equal(eb_store_parse_url(NULL, &(eb_store_location){0}), EB_ERR_INVALID);
}

static void test_parse_endpoint(void **state)
{
    static const struct {
        const char *endpoint, *region;
        eb_status st;
        bool https;
        const char *host;
        bool ip;
    } cases[] = {
        {NULL, "eu-west-1", EB_OK, true, "s3.eu-west-1.amazonaws.com", false},
        {"", NULL, EB_OK, true, "s3.us-east-1.amazonaws.com", false},
        {"http://127.0.0.1:9000", NULL, EB_OK, false, "127.0.0.1:9000", true},
        {"http://127.0.0.1:9000/", NULL, EB_OK, false, "127.0.0.1:9000", true},
        {"https://S3.EU-West-1.AmazonAWS.com", NULL, EB_OK, true, "s3.eu-west-1.amazonaws.com",
         false},
        {"https://minio.local:443", NULL, EB_OK, true, "minio.local", false},
        {"http://minio.local:80", NULL, EB_OK, false, "minio.local", false},
        {"http://minio.local:8080", NULL, EB_OK, false, "minio.local:8080", false},
        {"http://[::1]:9000", NULL, EB_OK, false, "[::1]:9000", true},
        {"http://localhost:9000", NULL, EB_OK, false, "localhost:9000", false},
        {"ftp://host", NULL, EB_ERR_INVALID, false, NULL, false},
        {"127.0.0.1:9000", NULL, EB_ERR_INVALID, false, NULL, false},
        {"http://", NULL, EB_ERR_INVALID, false, NULL, false},
        {"http://host/path", NULL, EB_ERR_INVALID, false, NULL, false},
        {"http://host?x", NULL, EB_ERR_INVALID, false, NULL, false},
        {"http://user:pw@host", NULL, EB_ERR_INVALID, false, NULL, false},
        {"http://host:0", NULL, EB_ERR_INVALID, false, NULL, false},
        {"http://host:65536", NULL, EB_ERR_INVALID, false, NULL, false},
        {"http://host:", NULL, EB_ERR_INVALID, false, NULL, false},
        {"http://host:+80", NULL, EB_ERR_INVALID, false, NULL, false},
        {"http://::1", NULL, EB_ERR_INVALID, false, NULL, false},
        {"http://[::1", NULL, EB_ERR_INVALID, false, NULL, false},
        {"http://ho st", NULL, EB_ERR_INVALID, false, NULL, false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        eb_store_endpoint ep;
        eb_status st = eb_store_parse_endpoint(cases[i].endpoint, cases[i].region, &ep);
        if (st != cases[i].st)
            fail_msg("%s: status %d, want %d (%s)", cases[i].endpoint ? cases[i].endpoint : "NULL",
                     st, cases[i].st, eb_error_message());
        if (st == EB_OK) {
            assert_int_equal(ep.https, cases[i].https);
            assert_string_equal(ep.host, cases[i].host);
            assert_int_equal(ep.ip_literal, cases[i].ip);
        }
        eb_store_endpoint_free(&ep);
    }
}

static void test_keys(void **state)
{
    static const char *const good[] = {
        "a",
        "exports/2026/11/job-1.jsonl.zst",
        "a b+c=d&e?f#g",
        "caf\xc3\xa9/\xe2\x82\xac.txt",
        "..a",
        "a..",
        "a/.b/c.",
        "trailing space ",
        "~tilde%25",
    };
    static const char *const bad[] = {
        "",       "/leading", "trailing/", "a//b",      "./a",   "a/./b",   "a/.",      "../x",
        "a/../b", "..",       ".",         "tab\there", "nl\nx", "del\x7f", "bad\xc3(", "\xff",
    };
    char long_key[EB_STORE_MAX_KEY + 2];

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (eb_store_check_key(good[i]) != EB_OK)
            fail_msg("key '%s' refused: %s", good[i], eb_error_message());
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (eb_store_check_key(bad[i]) != EB_ERR_INVALID)
            fail_msg("key '%s' accepted", bad[i]);
    assert_int_equal(eb_store_check_key(NULL), EB_ERR_INVALID);
    memset(long_key, 'k', sizeof long_key);
    long_key[EB_STORE_MAX_KEY] = '\0';
    assert_int_equal(eb_store_check_key(long_key), EB_OK);
    long_key[EB_STORE_MAX_KEY] = 'k';
    long_key[EB_STORE_MAX_KEY + 1] = '\0';
    assert_int_equal(eb_store_check_key(long_key), EB_ERR_INVALID);
}

static void test_buckets(void **state)
{
    static const char *const good[] = {"abc",   "exports", "my.bucket",
                                       "a-b-c", "123",     "evalbus-exports-eu-west-1"};
    static const char *const bad[] = {
        "ab",          "ABC",  "a_b",
        "-abc",        "abc-", "a..b",
        "192.168.1.1", ".abc", "abc.",
        "a b",         "",     "a123456789012345678901234567890123456789012345678901234567890123"};

    (void)state;
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (eb_store_check_bucket(good[i]) != EB_OK)
            fail_msg("bucket '%s' refused: %s", good[i], eb_error_message());
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (eb_store_check_bucket(bad[i]) != EB_ERR_INVALID)
            fail_msg("bucket '%s' accepted", bad[i]);
}

static void test_s3_path(void **state)
{
    static const struct {
        const char *bucket, *prefix, *key, *want;
    } cases[] = {
        {"b", "", "k", "/b/k"},
        {NULL, "", "k", "/k"},
        {"b", "team/x/", "a/b.jsonl", "/b/team/x/a/b.jsonl"},
        {"b", "", "a b+c=d&e?f#g", "/b/a%20b%2Bc%3Dd%26e%3Ff%23g"},
        {"b", "", "caf\xc3\xa9~_-.", "/b/caf%C3%A9~_-."},
        {"b", "", "100%", "/b/100%25"},
        {"b", "p q/", "r:s", "/b/p%20q/r%3As"},
        {"b", "", NULL, "/b"},
        {NULL, "", NULL, "/"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        eb_buf b = {0};
        eb_store_s3_path(&b, cases[i].bucket, cases[i].prefix, cases[i].key);
        assert_string_equal(b.data, cases[i].want);
        eb_buf_free(&b);
    }
}

/* ---- XML ---------------------------------------------------------------------------------- */

static void test_xml_text(void **state)
{
    static const struct {
        const char *xml, *tag, *want; /* want NULL: not found or malformed */
    } cases[] = {
        {"<?xml version=\"1.0\"?><InitiateMultipartUploadResult xmlns=\"http://s3\"><Bucket>b"
         "</Bucket><Key>k</Key><UploadId>abc.DEF-_~</UploadId></InitiateMultipartUploadResult>",
         "UploadId", "abc.DEF-_~"},
        {"<R><KeyMarker>m</KeyMarker><Key>real</Key></R>", "Key", "real"},
        {"<R><KeyMarker>m</KeyMarker></R>", "Key", NULL},
        {"<R><Key>a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;</Key></R>", "Key",
         "a & b <c> \"d\" 'e'"},
        {"<R><Key>&#65;&#x42;&#xe9;&#x20AC;&#x1F600;</Key></R>", "Key",
         "AB\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
        {"<R><ETag>\"0123\"</ETag></R>", "ETag", "\"0123\""},
        {"<R><Empty/><x/></R>", "Empty", ""},
        {"<R><Empty></Empty></R>", "Empty", ""},
        {"<R><Key attr=\"1\">v</Key></R>", "Key", "v"},
        {"<R><Key>no end</R>", "Key", NULL},
        {"<R><Key>&bogus;</Key></R>", "Key", NULL},
        {"<R><Key>&amp</Key></R>", "Key", NULL},
        {"<R><Key>&#0;</Key></R>", "Key", NULL},
        {"<R><Key>&#xD800;</Key></R>", "Key", NULL},
        {"<R><Key>&#x110000;</Key></R>", "Key", NULL},
        {"<R><Key>&#;</Key></R>", "Key", NULL},
        {"<R><Key><b>x</b></Key></R>", "Key", NULL},
        {"", "Key", NULL},
        {"<Key", "Key", NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        eb_buf b = {0};
        eb_buf_puts(&b, "pre:");
        bool ok = eb_store_xml_text(cases[i].xml, strlen(cases[i].xml), cases[i].tag, &b);
        if (!cases[i].want) {
            if (ok)
                fail_msg("case %zu: found '%s'", i, b.data);
            assert_string_equal(b.data, "pre:"); /* unchanged */
        } else {
            if (!ok)
                fail_msg("case %zu: not found", i);
            assert_string_equal(b.data + 4, cases[i].want);
        }
        eb_buf_free(&b);
    }
}

static void test_xml_iterate(void **state)
{
    const char *xml = "<ListMultipartUploadsResult><Bucket>b</Bucket><KeyMarker></KeyMarker>"
                      "<UploadIdMarker></UploadIdMarker><NextKeyMarker>p/b</NextKeyMarker>"
                      "<IsTruncated>false</IsTruncated>"
                      "<Upload><Key>p/a</Key><UploadId>id1</UploadId><Initiator><ID>x</ID>"
                      "</Initiator></Upload>"
                      "<Upload><Key>p/b &amp; c</Key><UploadId>id2</UploadId></Upload>"
                      "</ListMultipartUploadsResult>";
    size_t pos = 0, il;
    const char *inner;
    const char *keys[] = {"p/a", "p/b & c"}, *ids[] = {"id1", "id2"};
    int n = 0;

    (void)state;
    while (eb_store_xml_next(xml, strlen(xml), "Upload", &pos, &inner, &il)) {
        eb_buf k = {0}, id = {0};
        assert_true(n < 2);
        assert_true(eb_store_xml_text(inner, il, "Key", &k));
        assert_true(eb_store_xml_text(inner, il, "UploadId", &id));
        assert_string_equal(k.data, keys[n]);
        assert_string_equal(id.data, ids[n]);
        eb_buf_free(&k);
        eb_buf_free(&id);
        n++;
    }
    assert_int_equal(n, 2);
}

static void test_xml_escape(void **state)
{
    eb_buf b = {0};

    (void)state;
    eb_store_xml_escape(&b, "\"e&t<a>g'");
    assert_string_equal(b.data, "&quot;e&amp;t&lt;a&gt;g&apos;");
    eb_buf_reset(&b);
    assert_true(eb_store_xml_text("<E>&quot;e&amp;t&lt;a&gt;g&apos;</E>", 36, "E", &b));
    assert_string_equal(b.data, "\"e&t<a>g'");
    eb_buf_free(&b);
}

static void test_s3_error_body(void **state)
{
    /* S3 completes a large upload under a 200 it has already sent, then reports the outcome:
     * whitespace while it works, then the result or an <Error>. */
    const char *late = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\n   \n  \n"
                       "<Error><Code>InternalError</Code><Message>We encountered an internal "
                       "error &amp; so on.</Message><RequestId>4442587FB7D0A2F9</RequestId>"
                       "</Error>";
    const char *fine = "<?xml version=\"1.0\"?>\n\n<CompleteMultipartUploadResult><Location>x"
                       "</Location><ETag>\"3858f62230ac3c915f300c664312c11f-9\"</ETag>"
                       "</CompleteMultipartUploadResult>";
    eb_buf code = {0}, msg = {0}, rid = {0};

    (void)state;
    assert_true(eb_store_s3_error(late, strlen(late), &code, &msg, &rid));
    assert_string_equal(code.data, "InternalError");
    assert_string_equal(msg.data, "We encountered an internal error & so on.");
    assert_string_equal(rid.data, "4442587FB7D0A2F9");
    assert_true(eb_store_s3_retryable(200, code.data));
    eb_buf_free(&code);
    eb_buf_free(&msg);
    eb_buf_free(&rid);
    assert_false(eb_store_s3_error(fine, strlen(fine), &code, &msg, &rid));
    assert_false(eb_store_s3_error("", 0, &code, &msg, &rid));
    assert_false(eb_store_s3_error(NULL, 0, &code, &msg, &rid));
    eb_buf_free(&code);
    eb_buf_free(&msg);
    eb_buf_free(&rid);
}

static void test_s3_status(void **state)
{
    static const struct {
        long http;
        const char *code;
        eb_status st;
        bool retry;
    } cases[] = {
        {404, "NoSuchKey", EB_ERR_NOT_FOUND, false},
        {404, "NoSuchUpload", EB_ERR_NOT_FOUND, false},
        {404, "NoSuchBucket", EB_ERR_NOT_FOUND, false},
        {404, NULL, EB_ERR_NOT_FOUND, false},
        {400, "InvalidPart", EB_ERR_INVALID, false},
        {400, "InvalidPartOrder", EB_ERR_INVALID, false},
        {400, "EntityTooSmall", EB_ERR_INVALID, false},
        {400, "EntityTooLarge", EB_ERR_TOO_LARGE, false},
        {400, "RequestTimeout", EB_ERR_TIMEOUT, true},
        {400, "", EB_ERR_INVALID, false},
        {403, "SignatureDoesNotMatch", EB_ERR_UNAUTHENTICATED, false},
        {403, "InvalidAccessKeyId", EB_ERR_UNAUTHENTICATED, false},
        {403, "RequestTimeTooSkewed", EB_ERR_UNAUTHENTICATED, false},
        {400, "ExpiredToken", EB_ERR_UNAUTHENTICATED, false},
        {403, "AccessDenied", EB_ERR_FORBIDDEN, false},
        {403, NULL, EB_ERR_FORBIDDEN, false},
        {409, "BucketAlreadyOwnedByYou", EB_ERR_CONFLICT, false},
        {412, "PreconditionFailed", EB_ERR_CONFLICT, false},
        {412, NULL, EB_ERR_CONFLICT, false},
        {412, "InvalidRequest", EB_ERR_CONFLICT, false},
        {408, NULL, EB_ERR_TIMEOUT, true},
        {429, NULL, EB_ERR_RATE_LIMITED, true},
        {503, "SlowDown", EB_ERR_RATE_LIMITED, true},
        {500, "InternalError", EB_ERR_UNAVAILABLE, true},
        {200, "InternalError", EB_ERR_UNAVAILABLE, true},
        {502, NULL, EB_ERR_UNAVAILABLE, true},
        {504, NULL, EB_ERR_TIMEOUT, true},
        {501, "NotImplemented", EB_ERR_INVALID, false},
        {501, NULL, EB_ERR_UNAVAILABLE, false},
        {418, "Teapot", EB_ERR_INVALID, false},
        {302, NULL, EB_ERR_INTERNAL, false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        eb_status st = eb_store_s3_status(cases[i].http, cases[i].code);
        bool retry = eb_store_s3_retryable(cases[i].http, cases[i].code);
        if (st != cases[i].st || retry != cases[i].retry)
            fail_msg("%ld %s: status %s retry %d, want %s %d", cases[i].http,
                     cases[i].code ? cases[i].code : "-", eb_status_str(st), retry,
                     eb_status_str(cases[i].st), cases[i].retry);
    }
}

static void test_etag_clean(void **state)
{
    char out[40];

    (void)state;
    assert_true(eb_store_etag_clean("\"abc\"", out, sizeof out));
    assert_string_equal(out, "abc");
    assert_true(eb_store_etag_clean("  abc \r\n", out, sizeof out));
    assert_string_equal(out, "abc");
    assert_true(eb_store_etag_clean("\"abc-3\"", out, sizeof out));
    assert_string_equal(out, "abc-3");
    assert_false(eb_store_etag_clean("\"\"", out, sizeof out));
    assert_false(eb_store_etag_clean("", out, sizeof out));
    assert_false(eb_store_etag_clean("0123456789", out, 10));
    assert_true(eb_store_etag_clean("012345678", out, 10));
}

/* ---- eb_store_open ------------------------------------------------------------------------ */

static void test_open_refuses(void **state)
{
    static const struct {
        eb_store_config cfg;
        const char *words; /* expected in the message */
    } cases[] = {
        {{.url = "ftp://x"}, "file:// or s3://"},
        {{.url = "s3://bucket"}, "access_key_id"},
        {{.url = "s3://bucket", .access_key_id = "AK"}, "secret_access_key"},
        {{.url = "s3://bucket", .access_key_id = "A K", .secret_access_key = "s"}, "access_key_id"},
        {{.url = "s3://bucket",
          .access_key_id = "AK",
          .secret_access_key = "s",
          .endpoint = "http://127.0.0.1:9000"},
         "path_style"},
        {{.url = "s3://my.bucket", .access_key_id = "AK", .secret_access_key = "s"}, "path_style"},
        {{.url = "s3://bucket",
          .access_key_id = "AK",
          .secret_access_key = "s",
          .region = "EU WEST"},
         "region"},
        {{.url = "s3://bucket",
          .access_key_id = "AK",
          .secret_access_key = "s",
          .session_token = "a b"},
         "session_token"},
        {{.url = "s3://bucket", .access_key_id = "AK", .secret_access_key = "s", .retries = 99},
         "retries"},
        {{.url = "s3://bucket",
          .access_key_id = "AK",
          .secret_access_key = "s",
          .endpoint = "http://h/x"},
         "endpoint"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        eb_store *s = (eb_store *)&cases[i]; /* overwritten with NULL */
        assert_int_equal(eb_store_open(&cases[i].cfg, &s), EB_ERR_INVALID);
        assert_null(s);
        if (!strstr(eb_error_message(), cases[i].words))
            fail_msg("case %zu: '%s' lacks '%s'", i, eb_error_message(), cases[i].words);
    }
}

static void test_open_s3(void **state)
{
    eb_store_config cfg = {.url = "s3://bucket/p",
                           .access_key_id = "AK",
                           .secret_access_key = "secret",
                           .endpoint = "http://127.0.0.1:9"};
    eb_store *s = NULL;
    char *url = NULL;

    (void)state;
    cfg.path_style = true;
    assert_int_equal(eb_store_open(&cfg, &s), EB_OK);
    assert_string_equal(eb_store_scheme(s), "s3");
    assert_int_equal(eb_store_part_size(s), EB_STORE_DEFAULT_PART);
    assert_int_equal(eb_store_url(s, "a b/c", &url), EB_OK);
    assert_string_equal(url, "s3://bucket/p/a b/c");
    free(url);
    assert_int_equal(eb_store_presign_get(s, "a b/c", 60, &url), EB_OK);
    assert_non_null(strstr(url, "http://127.0.0.1:9/bucket/p/a%20b/c?X-Amz-Algorithm="));
    assert_non_null(strstr(url, "X-Amz-Expires=60&"));
    assert_null(strstr(url, "secret"));
    free(url);
    assert_int_equal(eb_store_presign_get(s, "k", 0, &url), EB_ERR_INVALID);
    assert_int_equal(eb_store_presign_get(s, "k", 604801, &url), EB_ERR_INVALID);
    assert_int_equal(eb_store_presign_get(s, "../k", 60, &url), EB_ERR_INVALID);
    assert_int_equal(eb_store_local_path(s, "k", &url), EB_ERR_INVALID);
    assert_null(url);
    eb_store_free(s);

    cfg.path_style = false;
    cfg.endpoint = "https://s3.example.com";
    assert_int_equal(eb_store_open(&cfg, &s), EB_OK);
    assert_int_equal(eb_store_presign_get(s, "k", 60, &url), EB_OK);
    assert_non_null(strstr(url, "https://bucket.s3.example.com/p/k?"));
    free(url);
    eb_store_free(s);
    eb_store_free(NULL);
}

/* ---- the file store ----------------------------------------------------------------------- */

typedef struct fixture {
    char dir[64];
    char *url;
    eb_store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = eb_calloc(1, sizeof *f);

    snprintf(f->dir, sizeof f->dir, "/tmp/test_store.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    f->url = eb_asprintf("file://%s/root", f->dir);
    eb_store_config cfg = {.url = f->url};
    if (eb_store_open(&cfg, &f->s) != EB_OK)
        return -1;
    *state = f;
    return 0;
}

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;

    if (!d) {
        unlink(path);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = eb_asprintf("%s/%s", path, e->d_name);
        rm_rf(p);
        free(p);
    }
    closedir(d);
    rmdir(path);
}

static int teardown(void **state)
{
    fixture *f = *state;

    eb_store_free(f->s);
    rm_rf(f->dir);
    free(f->url);
    free(f);
    return 0;
}

static bool exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Number of entries in dir whose name starts with prefix. */
static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    return n;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 31 + seed * 7 + (i >> 8)) & 0xff);
}

static void test_file_multipart(void **state)
{
    fixture *f = *state;
    enum { PART = 1000, NPARTS = 7, LAST = 333 };
    size_t total = PART * (NPARTS - 1) + LAST;
    unsigned char *data = eb_malloc(total);
    char *id = NULL, *etags[NPARTS] = {0}, *path = NULL;
    eb_store_part parts[NPARTS];
    eb_buf got = {0};
    eb_store_upload *u = NULL;
    size_t nu = 0;

    (void)state;
    fill(data, total, 1);
    assert_string_equal(eb_store_scheme(f->s), "file");
    assert_int_equal(eb_store_local_path(f->s, "exports/x/data.bin", &path), EB_OK);
    assert_int_equal(eb_store_upload_begin(f->s, "exports/x/data.bin", NULL, &id), EB_OK);
    assert_int_equal(strlen(id), 32);
    /* parts in reverse order: each lands at its offset */
    for (int i = NPARTS - 1; i >= 0; i--) {
        size_t off = (size_t)i * PART, len = i == NPARTS - 1 ? LAST : PART;
        char want[65];
        assert_int_equal(eb_store_upload_part(f->s, "exports/x/data.bin", id, i + 1, off,
                                              data + off, len, &etags[i]),
                         EB_OK);
        eb_sha256_hex(data + off, len, want);
        assert_string_equal(etags[i], want);
        parts[i] = (eb_store_part){i + 1, etags[i]};
        assert_false(exists(path)); /* never under the final name before completion */
    }
    assert_int_equal(eb_store_list_uploads(f->s, "exports/", &u, &nu), EB_OK);
    assert_int_equal(nu, 1);
    assert_string_equal(u[0].key, "exports/x/data.bin");
    assert_string_equal(u[0].upload_id, id);
    eb_store_uploads_free(u, nu);
    assert_int_equal(eb_store_list_uploads(f->s, "other/", &u, &nu), EB_OK);
    assert_int_equal(nu, 0);
    assert_null(u);

    /* part 3 sent again with the same bytes: the last upload counts */
    free(etags[2]);
    assert_int_equal(eb_store_upload_part(f->s, "exports/x/data.bin", id, 3, 2 * PART,
                                          data + 2 * PART, PART, &etags[2]),
                     EB_OK);
    parts[2].etag = etags[2];
    assert_int_equal(eb_store_upload_complete(f->s, "exports/x/data.bin", id, parts, NPARTS),
                     EB_OK);
    assert_true(exists(path));
    assert_int_equal(eb_store_get(f->s, "exports/x/data.bin", &got, total), EB_OK);
    assert_int_equal(got.len, total);
    assert_memory_equal(got.data, data, total);
    eb_buf_reset(&got);
    assert_int_equal(eb_store_get(f->s, "exports/x/data.bin", &got, total - 1), EB_ERR_TOO_LARGE);
    assert_int_equal(got.len, 0);
    /* nothing left behind: only the object in its folder */
    char *dir = eb_asprintf("%s/root/exports/x", f->dir);
    assert_int_equal(count_entries(dir, ""), 3); /* ".", "..", data.bin */
    free(dir);
    assert_int_equal(eb_store_list_uploads(f->s, NULL, &u, &nu), EB_OK);
    assert_int_equal(nu, 0);
    /* completing again: the upload is gone */
    assert_int_equal(eb_store_upload_complete(f->s, "exports/x/data.bin", id, parts, NPARTS),
                     EB_ERR_NOT_FOUND);

    for (int i = 0; i < NPARTS; i++)
        free(etags[i]);
    free(id);
    free(path);
    free(data);
    eb_buf_free(&got);
}

static void test_file_complete_checks(void **state)
{
    fixture *f = *state;
    unsigned char a[100], b[100];
    char *id = NULL, *ea = NULL, *eb = NULL, *path = NULL;

    fill(a, sizeof a, 2);
    fill(b, sizeof b, 3);
    assert_int_equal(eb_store_local_path(f->s, "k", &path), EB_OK);
    assert_int_equal(eb_store_upload_begin(f->s, "k", NULL, &id), EB_OK);
    assert_int_equal(eb_store_upload_part(f->s, "k", id, 1, 0, a, sizeof a, &ea), EB_OK);
    assert_int_equal(eb_store_upload_part(f->s, "k", id, 2, 100, b, sizeof b, &eb), EB_OK);

    const char *zero = "0000000000000000000000000000000000000000000000000000000000000000";
    struct {
        eb_store_part parts[3];
        size_t n;
        const char *words;
    } bad[] = {
        {{{1, zero}, {2, eb}}, 2, "ETag does not match"},
        {{{1, ea}, {3, eb}}, 2, "not uploaded"},
        {{{2, eb}, {1, ea}}, 2, "ascending"},
        {{{1, ea}, {1, ea}}, 2, "ascending"},
        {{{2, eb}}, 1, "starts at byte 100"},
        {{{0, ea}}, 1, "part number"},
        {{{1, ""}}, 1, "ETag"},
        {{{1, ea}}, 0, "at least one part"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(eb_store_upload_complete(f->s, "k", id, bad[i].parts, bad[i].n),
                         EB_ERR_INVALID);
        if (!strstr(eb_error_message(), bad[i].words))
            fail_msg("case %zu: '%s' lacks '%s'", i, eb_error_message(), bad[i].words);
        assert_false(exists(path));
    }
    /* quoted ETags are accepted; a prefix of the parts makes a shorter object */
    char quoted[80];
    snprintf(quoted, sizeof quoted, "\"%s\"", ea);
    eb_store_part one[] = {{1, quoted}};
    assert_int_equal(eb_store_upload_complete(f->s, "k", id, one, 1), EB_OK);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, 100);
    free(id);
    free(ea);
    free(eb);

    /* an overlapping write of another part after part 1 is caught */
    id = NULL;
    assert_int_equal(eb_store_upload_begin(f->s, "overlap", NULL, &id), EB_OK);
    assert_int_equal(eb_store_upload_part(f->s, "overlap", id, 1, 0, a, sizeof a, &ea), EB_OK);
    assert_int_equal(eb_store_upload_part(f->s, "overlap", id, 2, 50, b, sizeof b, &eb), EB_OK);
    eb_store_part first[] = {{1, ea}};
    assert_int_equal(eb_store_upload_complete(f->s, "overlap", id, first, 1), EB_ERR_INVALID);
    assert_non_null(strstr(eb_error_message(), "overwritten"));
    assert_int_equal(eb_store_upload_abort(f->s, "overlap", id), EB_OK);
    assert_int_equal(eb_store_upload_abort(f->s, "overlap", id), EB_OK); /* idempotent */
    assert_int_equal(count_entries(f->dir, "overlap"), 0);
    char *root = eb_asprintf("%s/root", f->dir);
    assert_int_equal(count_entries(root, "overlap"), 0);
    free(root);
    char *e2 = NULL;
    assert_int_equal(eb_store_upload_part(f->s, "overlap", id, 1, 0, a, 1, &e2), EB_ERR_NOT_FOUND);
    assert_null(e2);
    free(id);
    free(ea);
    free(eb);
    free(path);
}

static void test_file_no_overwrite(void **state)
{
    fixture *f = *state;
    eb_store_config cfg = {.url = f->url, .no_overwrite = true};
    eb_store *s = NULL;
    char *id = NULL, *etag = NULL;
    eb_buf got = {0};

    assert_int_equal(eb_store_open(&cfg, &s), EB_OK);
    assert_int_equal(eb_store_put(s, "taken", "text/plain", "old", 3), EB_OK);
    assert_int_equal(eb_store_upload_begin(s, "taken", NULL, &id), EB_OK);
    assert_int_equal(eb_store_upload_part(s, "taken", id, 1, 0, "new", 3, &etag), EB_OK);
    eb_store_part p[] = {{1, etag}};
    assert_int_equal(eb_store_upload_complete(s, "taken", id, p, 1), EB_ERR_CONFLICT);
    assert_int_equal(eb_store_get(s, "taken", &got, 10), EB_OK);
    assert_string_equal(got.data, "old");
    assert_int_equal(eb_store_upload_abort(s, "taken", id), EB_OK);
    free(id);
    free(etag);
    /* without no_overwrite, completion replaces */
    id = etag = NULL;
    assert_int_equal(eb_store_upload_begin(f->s, "taken", NULL, &id), EB_OK);
    assert_int_equal(eb_store_upload_part(f->s, "taken", id, 1, 0, "new", 3, &etag), EB_OK);
    p[0].etag = etag;
    assert_int_equal(eb_store_upload_complete(f->s, "taken", id, p, 1), EB_OK);
    eb_buf_reset(&got);
    assert_int_equal(eb_store_get(f->s, "taken", &got, 10), EB_OK);
    assert_string_equal(got.data, "new");
    free(id);
    free(etag);
    eb_buf_free(&got);
    eb_store_free(s);
}

static void test_file_objects(void **state)
{
    fixture *f = *state;
    eb_buf got = {0};
    char *url = NULL, *path = NULL, *id = NULL;

    assert_int_equal(eb_store_ensure_bucket(f->s), EB_OK);
    char *root = eb_asprintf("%s/root", f->dir);
    assert_true(exists(root));
    assert_int_equal(eb_store_put(f->s, "m/manifest.json", "application/json", "{}", 2), EB_OK);
    assert_int_equal(eb_store_put(f->s, "m/manifest.json", NULL, "{\"a\":1}", 7), EB_OK);
    assert_int_equal(eb_store_get(f->s, "m/manifest.json", &got, 100), EB_OK);
    assert_string_equal(got.data, "{\"a\":1}");
    char *m = eb_asprintf("%s/m", root);
    assert_int_equal(count_entries(m, ""), 3); /* no temporary file left */
    free(m);
    assert_int_equal(eb_store_put(f->s, "empty", NULL, NULL, 0), EB_OK);
    eb_buf_reset(&got);
    assert_int_equal(eb_store_get(f->s, "empty", &got, 0), EB_OK);
    assert_int_equal(got.len, 0);
    assert_int_equal(eb_store_get(f->s, "missing", &got, 10), EB_ERR_NOT_FOUND);
    assert_int_equal(eb_store_get(f->s, "m", &got, 10), EB_ERR_NOT_FOUND); /* a folder */
    assert_int_equal(eb_store_get(f->s, "m/manifest.json/x", &got, 10), EB_ERR_NOT_FOUND);
    /* a key and a folder of keys cannot share a name on a file store */
    assert_int_equal(eb_store_put(f->s, "m", NULL, "x", 1), EB_ERR_CONFLICT);
    assert_int_equal(eb_store_delete(f->s, "m/manifest.json"), EB_OK);
    assert_int_equal(eb_store_delete(f->s, "m/manifest.json"), EB_OK); /* missing is fine */
    assert_int_equal(eb_store_get(f->s, "m/manifest.json", &got, 10), EB_ERR_NOT_FOUND);

    assert_int_equal(eb_store_url(f->s, "a b/\xc3\xa9", &url), EB_OK);
    char *want = eb_asprintf("file://%s/root/a%%20b/%%C3%%A9", f->dir);
    assert_string_equal(url, want);
    free(want);
    free(url);
    assert_int_equal(eb_store_presign_get(f->s, "k", 60, &url), EB_ERR_INVALID);
    assert_null(url);
    assert_int_equal(eb_store_local_path(f->s, "a/b", &path), EB_OK);
    want = eb_asprintf("%s/a/b", root);
    assert_string_equal(path, want);
    free(want);
    free(path);

    /* invalid keys are refused by every call before anything is touched */
    static const char *const bad[] = {"../escape", "/abs", "a//b", "a/./b", "x/..", "c\x01", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *etag = NULL;
        assert_int_equal(eb_store_put(f->s, bad[i], NULL, "x", 1), EB_ERR_INVALID);
        assert_int_equal(eb_store_get(f->s, bad[i], &got, 10), EB_ERR_INVALID);
        assert_int_equal(eb_store_delete(f->s, bad[i]), EB_ERR_INVALID);
        assert_int_equal(eb_store_upload_begin(f->s, bad[i], NULL, &id), EB_ERR_INVALID);
        assert_null(id);
        assert_int_equal(eb_store_upload_part(f->s, bad[i], "00000000000000000000000000000000", 1,
                                              0, "x", 1, &etag),
                         EB_ERR_INVALID);
        assert_int_equal(eb_store_local_path(f->s, bad[i], &path), EB_ERR_INVALID);
        assert_int_equal(eb_store_url(f->s, bad[i], &url), EB_ERR_INVALID);
    }
    assert_int_equal(count_entries(f->dir, "escape"), 0);
    /* upload ids that are not ours cannot name other files */
    char *etag = NULL;
    assert_int_equal(eb_store_upload_part(f->s, "k", "../../x", 1, 0, "x", 1, &etag),
                     EB_ERR_NOT_FOUND);
    assert_int_equal(
        eb_store_upload_part(f->s, "k", "00000000000000000000000000000000", 1, 0, "x", 1, &etag),
        EB_ERR_NOT_FOUND);
    assert_int_equal(eb_store_upload_part(f->s, "k", "00000000000000000000000000000000", 10001, 0,
                                          "x", 1, &etag),
                     EB_ERR_INVALID);
    free(root);
    eb_buf_free(&got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_url),
        cmocka_unit_test(test_parse_endpoint),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_s3_path),
        cmocka_unit_test(test_xml_text),
        cmocka_unit_test(test_xml_iterate),
        cmocka_unit_test(test_xml_escape),
        cmocka_unit_test(test_s3_error_body),
        cmocka_unit_test(test_s3_status),
        cmocka_unit_test(test_etag_clean),
        cmocka_unit_test(test_open_refuses),
        cmocka_unit_test(test_open_s3),
        cmocka_unit_test_setup_teardown(test_file_multipart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_complete_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_no_overwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_objects, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
