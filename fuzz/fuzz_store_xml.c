/* fuzz_store_xml.c -- libFuzzer target for the object store's parsers of untrusted text
 * (common/src/store.c): S3's XML answers (element search and entity decoding), store URLs and
 * endpoints, and object keys. The first byte picks the parser; the rest is its input. Checked
 * beyond "no crash, leak or sanitizer report": text found inside an element never extends past
 * the input, and a key that passes the check has no "..", no control characters and no leading
 * or trailing "/". */
#include "store_int.h"

#include "evalbus/mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const tags[] = {"UploadId", "ETag", "Code", "Message", "Key", "Upload"};
    char *s;
    eb_buf out = {0};

    if (size < 1)
        return 0;
    s = eb_strndup((const char *)data + 1, size - 1);
    switch (data[0] % 4) {
    case 0: {
        size_t pos = 0, len = strlen(s), inner_len = 0;
        const char *inner = NULL;
        const char *tag = tags[data[0] / 4 % 6];
        while (eb_store_xml_next(s, len, tag, &pos, &inner, &inner_len)) {
            if (inner < s || inner + inner_len > s + len || pos > len)
                abort();
        }
        eb_store_xml_text(s, len, tag, &out);
        break;
    }
    case 1: {
        eb_store_location loc;
        memset(&loc, 0, sizeof(loc));
        if (eb_store_parse_url(s, &loc) == EB_OK)
            eb_store_location_free(&loc);
        break;
    }
    case 2: {
        eb_store_endpoint ep;
        memset(&ep, 0, sizeof(ep));
        if (eb_store_parse_endpoint(s, "us-east-1", &ep) == EB_OK)
            eb_store_endpoint_free(&ep);
        break;
    }
    default:
        if (eb_store_check_key(s) == EB_OK) {
            size_t n = strlen(s);
            if (n == 0 || s[0] == '/' || s[n - 1] == '/' || strstr(s, "/../") ||
                strncmp(s, "../", 3) == 0)
                abort();
            for (size_t i = 0; i < n; i++)
                if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                    abort();
            eb_store_s3_path(&out, "bucket", "prefix", s);
        }
        break;
    }
    eb_buf_free(&out);
    free(s);
    return 0;
}
