/* api.c -- the CLI's HTTP client (libcurl): JSON in, JSON out, API errors to exit codes. */
#include "cli.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_exit_for(eb_status st)
{
    switch (st) {
    case EB_OK:
        return CLI_OK;
    case EB_ERR_CONFLICT:
        return CLI_CONFLICT;
    case EB_ERR_NOT_FOUND:
        return CLI_NOT_FOUND;
    case EB_ERR_UNAUTHENTICATED:
    case EB_ERR_FORBIDDEN:
        return CLI_DENIED;
    case EB_ERR_UNAVAILABLE:
    case EB_ERR_TIMEOUT:
        return CLI_UNAVAILABLE;
    default:
        return CLI_FAILURE;
    }
}

int cli_exit_for_http(long code)
{
    if (code >= 200 && code < 300)
        return CLI_OK;
    if (code == 401 || code == 403)
        return CLI_DENIED;
    if (code == 404)
        return CLI_NOT_FOUND;
    if (code == 409)
        return CLI_CONFLICT;
    if (code == 502 || code == 503 || code == 504)
        return CLI_UNAVAILABLE;
    return CLI_FAILURE;
}

static void (*error_hook)(void);

void cli_set_error_hook(void (*hook)(void))
{
    error_hook = hook;
}

static void before_error(void)
{
    if (error_hook)
        error_hook();
}

void cli_print_api_error(long code, const char *body, size_t len)
{
    cJSON *err = body && len ? cJSON_ParseWithLength(body, len) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(err, "error");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
    const cJSON *ecode = cJSON_GetObjectItemCaseSensitive(e, "code");

    before_error();
    if (cJSON_IsString(msg))
        fprintf(stderr, "evalbus: %s (%ld %s)\n", msg->valuestring, code,
                cJSON_IsString(ecode) ? ecode->valuestring : "");
    else
        fprintf(stderr, "evalbus: the server answered %ld\n", code);
    cJSON_Delete(err);
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    eb_buf *b = userdata;

    if (b->len + size * nmemb > 64u * 1024 * 1024)
        return 0; /* refuse absurd answers */
    eb_buf_append(b, ptr, size * nmemb);
    return size * nmemb;
}

int cli_api(const cli_env *env, const char *method, const char *path, const cJSON *body,
            cJSON **out)
{
    CURL *curl = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    eb_buf resp = {0};
    char *url = NULL, *auth = NULL, *payload = NULL;
    long code = 0;
    CURLcode cc;
    int rc = CLI_FAILURE;

    *out = NULL;
    if (!curl) {
        fprintf(stderr, "evalbus: cannot initialise libcurl\n");
        return CLI_FAILURE;
    }
    if (!env->api_key || !*env->api_key) {
        fprintf(stderr, "evalbus: no API key: set EVALBUS_API_KEY or pass --api-key\n");
        curl_easy_cleanup(curl);
        return CLI_USAGE;
    }
    url = eb_asprintf("%s%s", env->url, path);
    auth = eb_asprintf("Authorization: Bearer %s", env->api_key);
    hdrs = curl_slist_append(hdrs, auth);
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    if (body) {
        payload = cJSON_PrintUnformatted(body);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "evalbus-cli/0.1");
    cc = curl_easy_perform(curl);
    if (cc != CURLE_OK) {
        before_error();
        fprintf(stderr, "evalbus: cannot reach %s: %s\n", env->url, curl_easy_strerror(cc));
        rc = CLI_UNAVAILABLE;
        goto cleanup;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    rc = cli_exit_for_http(code);
    if (rc == CLI_OK) {
        if (resp.len) {
            *out = cJSON_ParseWithLength(resp.data, resp.len);
            if (!*out) {
                before_error();
                fprintf(stderr, "evalbus: the server answered %ld with a body that is not JSON\n",
                        code);
                rc = CLI_FAILURE;
            }
        }
    } else {
        cli_print_api_error(code, resp.data, resp.len);
    }
cleanup:
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
    eb_buf_free(&resp);
    free(url);
    free(auth);
    free(payload);
    return rc;
}
