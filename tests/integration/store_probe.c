/* store_probe.c -- drives the object store client (eb_store) for the integration tests
 * (store.test.mjs), against a file:// folder or a real S3 endpoint (Swift s3api).
 *
 *   store_probe URL ENDPOINT COMMAND [ARGS...]
 *
 * ENDPOINT is "-" for none (file:// stores, or AWS's default). Settings from the environment:
 * STORE_ACCESS_KEY_ID, STORE_SECRET_ACCESS_KEY, STORE_SESSION_TOKEN, STORE_REGION,
 * STORE_PATH_STYLE (1 = path-style, the default; 0 = virtual-host), STORE_RETRIES,
 * STORE_TIMEOUT_MS, STORE_NO_OVERWRITE (1 = completion refuses to replace).
 *
 * Commands (each prints JSON lines; the last is {"status":"ok"|"<eb_status name>",
 * "message":"...", ...results}; exit 0 when ok, 1 on a store error, 2 on bad usage):
 *   ensure-bucket
 *   begin KEY [CONTENT_TYPE]                  -> "upload_id"
 *   part KEY UPLOAD_ID PART_NO OFFSET FILE    -> "etag" (FILE's bytes are the part)
 *   complete KEY UPLOAD_ID PART_NO:ETAG...
 *   abort KEY UPLOAD_ID
 *   upload KEY FILE PART_SIZE [--reverse] [--wait]
 *       a whole multipart upload of FILE in parts of PART_SIZE (the last one shorter), sent in
 *       part order or in reverse. With --wait, after the last part it prints
 *       {"event":"parts_done","upload_id":"..."} and reads one line from stdin: "abort" aborts,
 *       anything else completes. -> "upload_id", "parts", "etags"
 *   put KEY FILE [CONTENT_TYPE]
 *   get KEY OUTFILE [MAX]                     -> "size", "sha256" (bytes written to OUTFILE)
 *   delete KEY
 *   presign KEY EXPIRES_S                     -> "url"
 *   local-path KEY                            -> "path"
 *   url KEY                                   -> "url"
 *   list-uploads [KEY_PREFIX]                 -> "uploads": [{"key","upload_id"}...] */
#include "evalbus/crypto.h"
#include "evalbus/json.h"
#include "evalbus/mem.h"
#include "evalbus/status.h"
#include "evalbus/store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static eb_buf result; /* extra JSON members of the final line, each starting with ',' */

static void add_str(const char *name, const char *value)
{
    eb_buf_printf(&result, ",\"%s\":\"", name);
    eb_buf_json_escape(&result, value ? value : "");
    eb_buf_putc(&result, '"');
}

static int finish(eb_status st)
{
    eb_buf line = {0};

    eb_buf_printf(&line, "{\"status\":\"%s\",\"message\":\"", eb_status_str(st));
    eb_buf_json_escape(&line, st == EB_OK ? "" : eb_error_message());
    eb_buf_putc(&line, '"');
    if (result.len)
        eb_buf_append(&line, result.data, result.len);
    eb_buf_puts(&line, "}\n");
    fputs(line.data, stdout);
    fflush(stdout);
    eb_buf_free(&line);
    eb_buf_free(&result);
    return st == EB_OK ? 0 : 1;
}

static int usage(void)
{
    fputs("usage: store_probe URL ENDPOINT|- COMMAND [ARGS...] (see store_probe.c)\n", stderr);
    return 2;
}

static eb_status read_file(const char *path, eb_buf *out)
{
    FILE *f = fopen(path, "rb");
    char chunk[65536];
    size_t n;

    if (!f)
        return eb_error(EB_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        eb_buf_append(out, chunk, n);
    fclose(f);
    return EB_OK;
}

static eb_status write_file(const char *path, const eb_buf *b)
{
    FILE *f = fopen(path, "wb");

    if (!f)
        return eb_error(EB_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    if (b->len && fwrite(b->data, 1, b->len, f) != b->len) {
        fclose(f);
        return eb_error(EB_ERR_IO, "cannot write %s", path);
    }
    if (fclose(f) != 0)
        return eb_error(EB_ERR_IO, "cannot write %s", path);
    return EB_OK;
}

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

static eb_status cmd_upload(eb_store *s, int argc, char **argv)
{
    eb_status st = EB_OK;
    eb_buf data = {0};
    char *id = NULL;
    eb_store_part *parts = NULL;
    char **etags = NULL;
    size_t nparts = 0;
    bool reverse = false, wait = false;
    const char *key = argv[0];
    long long part_size = atoll(argv[2]);

    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--reverse") == 0)
            reverse = true;
        else if (strcmp(argv[i], "--wait") == 0)
            wait = true;
        else
            return eb_error(EB_ERR_INVALID, "unknown option %s", argv[i]);
    }
    if (part_size < 1)
        return eb_error(EB_ERR_INVALID, "PART_SIZE must be positive");
    if ((st = read_file(argv[1], &data)) != EB_OK)
        return st;
    nparts = data.len ? (data.len + (size_t)part_size - 1) / (size_t)part_size : 1;
    parts = eb_calloc(nparts, sizeof *parts);
    etags = eb_calloc(nparts, sizeof *etags);
    if ((st = eb_store_upload_begin(s, key, "application/octet-stream", &id)) != EB_OK)
        goto cleanup;
    add_str("upload_id", id);
    for (size_t k = 0; k < nparts; k++) {
        size_t i = reverse ? nparts - 1 - k : k;
        size_t off = i * (size_t)part_size;
        size_t len = data.len - off < (size_t)part_size ? data.len - off : (size_t)part_size;
        st = eb_store_upload_part(s, key, id, (int)i + 1, off, data.data + off, len, &etags[i]);
        if (st != EB_OK)
            goto cleanup;
        parts[i].part_no = (int)i + 1;
        parts[i].etag = etags[i];
    }
    if (wait) {
        char line[64] = "";
        eb_buf ev = {0};
        eb_buf_puts(&ev, "{\"event\":\"parts_done\",\"upload_id\":\"");
        eb_buf_json_escape(&ev, id);
        eb_buf_puts(&ev, "\"}\n");
        fputs(ev.data, stdout);
        fflush(stdout);
        eb_buf_free(&ev);
        if (!fgets(line, sizeof line, stdin))
            line[0] = '\0';
        if (strncmp(line, "abort", 5) == 0) {
            st = eb_store_upload_abort(s, key, id);
            eb_buf_puts(&result, ",\"aborted\":true");
            goto cleanup;
        }
    }
    if ((st = eb_store_upload_complete(s, key, id, parts, nparts)) != EB_OK)
        goto cleanup;
    eb_buf_printf(&result, ",\"parts\":%zu,\"etags\":[", nparts);
    for (size_t i = 0; i < nparts; i++) {
        eb_buf_puts(&result, i ? ",\"" : "\"");
        eb_buf_json_escape(&result, etags[i]);
        eb_buf_putc(&result, '"');
    }
    eb_buf_putc(&result, ']');
cleanup:
    if (st != EB_OK && id && !wait) {
        eb_status keep = st;
        char msg[512];
        snprintf(msg, sizeof msg, "%s", eb_error_message());
        eb_store_upload_abort(s, key, id); /* best effort, as a real caller would */
        st = eb_error(keep, "%s", msg);
    }
    for (size_t i = 0; i < nparts; i++)
        free(etags[i]);
    free(etags);
    free(parts);
    free(id);
    eb_buf_free(&data);
    return st;
}

static eb_status run(eb_store *s, const char *cmd, int argc, char **argv)
{
    eb_status st = EB_OK;
    char *out = NULL;
    eb_buf data = {0};

#define NEED(n)                                                                                    \
    do {                                                                                           \
        if (argc < (n))                                                                            \
            return eb_error(EB_ERR_INVALID, "%s needs %d argument(s)", cmd, (n));                  \
    } while (0)

    if (strcmp(cmd, "ensure-bucket") == 0) {
        st = eb_store_ensure_bucket(s);
    } else if (strcmp(cmd, "begin") == 0) {
        NEED(1);
        if ((st = eb_store_upload_begin(s, argv[0], argc > 1 ? argv[1] : NULL, &out)) == EB_OK)
            add_str("upload_id", out);
    } else if (strcmp(cmd, "part") == 0) {
        NEED(5);
        if ((st = read_file(argv[4], &data)) == EB_OK &&
            (st = eb_store_upload_part(s, argv[0], argv[1], atoi(argv[2]),
                                       (uint64_t)strtoull(argv[3], NULL, 10), data.data, data.len,
                                       &out)) == EB_OK)
            add_str("etag", out);
    } else if (strcmp(cmd, "complete") == 0) {
        NEED(3);
        int n = argc - 2;
        eb_store_part *parts = eb_calloc((size_t)n, sizeof *parts);
        for (int i = 0; i < n; i++) {
            char *arg = argv[2 + i];
            char *colon = strchr(arg, ':');
            parts[i].part_no = atoi(arg);
            parts[i].etag = colon ? colon + 1 : "";
        }
        st = eb_store_upload_complete(s, argv[0], argv[1], parts, (size_t)n);
        free(parts);
    } else if (strcmp(cmd, "abort") == 0) {
        NEED(2);
        st = eb_store_upload_abort(s, argv[0], argv[1]);
    } else if (strcmp(cmd, "upload") == 0) {
        NEED(3);
        st = cmd_upload(s, argc, argv);
    } else if (strcmp(cmd, "put") == 0) {
        NEED(2);
        if ((st = read_file(argv[1], &data)) == EB_OK)
            st = eb_store_put(s, argv[0], argc > 2 ? argv[2] : NULL, data.data, data.len);
    } else if (strcmp(cmd, "get") == 0) {
        NEED(2);
        size_t max = argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : (size_t)64 << 20;
        if ((st = eb_store_get(s, argv[0], &data, max)) == EB_OK &&
            (st = write_file(argv[1], &data)) == EB_OK) {
            char hex[65];
            eb_sha256_hex(data.data ? data.data : "", data.len, hex);
            eb_buf_printf(&result, ",\"size\":%zu", data.len);
            add_str("sha256", hex);
        }
    } else if (strcmp(cmd, "delete") == 0) {
        NEED(1);
        st = eb_store_delete(s, argv[0]);
    } else if (strcmp(cmd, "presign") == 0) {
        NEED(2);
        if ((st = eb_store_presign_get(s, argv[0], atoi(argv[1]), &out)) == EB_OK)
            add_str("url", out);
    } else if (strcmp(cmd, "local-path") == 0) {
        NEED(1);
        if ((st = eb_store_local_path(s, argv[0], &out)) == EB_OK)
            add_str("path", out);
    } else if (strcmp(cmd, "url") == 0) {
        NEED(1);
        if ((st = eb_store_url(s, argv[0], &out)) == EB_OK)
            add_str("url", out);
    } else if (strcmp(cmd, "list-uploads") == 0) {
        eb_store_upload *u = NULL;
        size_t n = 0;
        if ((st = eb_store_list_uploads(s, argc > 0 ? argv[0] : NULL, &u, &n)) == EB_OK) {
            eb_buf_puts(&result, ",\"uploads\":[");
            for (size_t i = 0; i < n; i++) {
                eb_buf_puts(&result, i ? ",{\"key\":\"" : "{\"key\":\"");
                eb_buf_json_escape(&result, u[i].key);
                eb_buf_puts(&result, "\",\"upload_id\":\"");
                eb_buf_json_escape(&result, u[i].upload_id);
                eb_buf_puts(&result, "\"}");
            }
            eb_buf_putc(&result, ']');
            eb_store_uploads_free(u, n);
        }
    } else {
        st = eb_error(EB_ERR_INVALID, "unknown command %s", cmd);
    }
#undef NEED
    free(out);
    eb_buf_free(&data);
    return st;
}

int main(int argc, char **argv)
{
    eb_store *s = NULL;
    eb_status st;
    int rc;

    if (argc < 4)
        return usage();
    const char *region = getenv("STORE_REGION");
    eb_store_config cfg = {
        .url = argv[1],
        .endpoint = strcmp(argv[2], "-") == 0 ? NULL : argv[2],
        .region = region,
        .access_key_id = getenv("STORE_ACCESS_KEY_ID"),
        .secret_access_key = getenv("STORE_SECRET_ACCESS_KEY"),
        .session_token = getenv("STORE_SESSION_TOKEN"),
        .path_style = env_int("STORE_PATH_STYLE", 1) != 0,
        .retries = env_int("STORE_RETRIES", 0),
        .timeout_ms = env_int("STORE_TIMEOUT_MS", 0),
        .no_overwrite = env_int("STORE_NO_OVERWRITE", 0) != 0,
    };
    if ((st = eb_store_open(&cfg, &s)) != EB_OK)
        return finish(st);
    add_str("scheme", eb_store_scheme(s));
    st = run(s, argv[3], argc - 4, argv + 4);
    rc = finish(st);
    eb_store_free(s);
    return rc;
}
