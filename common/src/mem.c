/* mem.c -- aborting allocators and eb_buf.
 * eb_buf grows geometrically and keeps a NUL after its content so it can be used as a C string. */
#include "evalbus/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t n)
{
    fprintf(stderr, "evalbus: out of memory allocating %zu bytes\n", n);
    abort();
}

void *eb_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *eb_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        oom(count * size);
    return p;
}

void *eb_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *eb_strdup(const char *s)
{
    return s ? eb_strndup(s, strlen(s)) : NULL;
}

char *eb_strndup(const char *s, size_t n)
{
    char *p;

    if (!s)
        return NULL;
    p = eb_malloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *eb_asprintf(const char *fmt, ...)
{
    eb_buf b = {0};
    va_list ap;

    va_start(ap, fmt);
    eb_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return eb_buf_steal(&b);
}

void eb_buf_reserve(eb_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    size_t cap;

    if (need <= b->cap)
        return;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = eb_realloc(b->data, cap);
    b->cap = cap;
    b->data[b->len] = '\0'; /* a buffer reserved and not yet written to is "" */
}

void eb_buf_append(eb_buf *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) /* the common case (room left) costs one comparison */
        eb_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void eb_buf_puts(eb_buf *b, const char *s)
{
    eb_buf_append(b, s, strlen(s));
}

void eb_buf_putc(eb_buf *b, char c)
{
    if (b->len + 2 > b->cap)
        eb_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void eb_buf_vprintf(eb_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;

    va_copy(ap2, ap);
    eb_buf_reserve(b, 64);
    n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n >= 0 && (size_t)n >= b->cap - b->len) {
        eb_buf_reserve(b, (size_t)n);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    if (n > 0)
        b->len += (size_t)n;
}

void eb_buf_printf(eb_buf *b, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    eb_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void eb_buf_reset(eb_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

char *eb_buf_steal(eb_buf *b)
{
    char *p = b->data;

    if (!p)
        p = eb_strdup("");
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

void eb_buf_free(eb_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
