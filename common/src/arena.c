/* arena.c -- bump allocation in chunks (see arena.h).
 * Chunks of 256 KiB (or one chunk of its own for a larger request) in a list; reset keeps the
 * first chunk, so a thread that reuses its arena allocates nothing in the steady state.
 * Threading: an arena belongs to one thread at a time; the cJSON binding is thread-local. */
#include "evalbus/arena.h"

#include "evalbus/mem.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>

#define CHUNK_SIZE (256 * 1024)
#define ALIGN 16

typedef struct chunk {
    struct chunk *next;
    size_t cap, used;
    _Alignas(ALIGN) unsigned char data[];
} chunk;

struct eb_arena {
    chunk *head; /* the chunk being filled; older ones follow */
};

static _Thread_local eb_arena *bound;

eb_arena *eb_arena_new(void)
{
    return eb_calloc(1, sizeof(eb_arena));
}

static chunk *chunk_new(size_t cap)
{
    chunk *c = eb_malloc(sizeof(chunk) + cap);

    c->cap = cap;
    c->used = 0;
    c->next = NULL;
    return c;
}

void *eb_arena_alloc(eb_arena *a, size_t size)
{
    chunk *c = a->head;
    size_t need = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);

    if (need < size)
        abort(); /* overflow */
    if (!c || c->cap - c->used < need) {
        if (need > CHUNK_SIZE / 4) { /* large: a chunk of its own, behind the current one */
            chunk *big = chunk_new(need);
            big->used = need;
            if (c) {
                big->next = c->next;
                c->next = big;
            } else {
                a->head = big;
            }
            return big->data;
        }
        c = chunk_new(CHUNK_SIZE);
        c->next = a->head;
        a->head = c;
    }
    c->used += need;
    return c->data + c->used - need;
}

void eb_arena_reset(eb_arena *a)
{
    chunk *keep = NULL, *c = a->head;

    while (c) {
        chunk *next = c->next;
        if (!keep && c->cap == CHUNK_SIZE) {
            keep = c;
            keep->used = 0;
            keep->next = NULL;
        } else {
            free(c);
        }
        c = next;
    }
    a->head = keep;
}

void eb_arena_free(eb_arena *a)
{
    if (!a)
        return;
    eb_arena_reset(a);
    free(a->head);
    free(a);
}

static void *pb_alloc(void *data, size_t size)
{
    return eb_arena_alloc(data, size);
}

static void pb_free(void *data, void *ptr)
{
    (void)data;
    (void)ptr;
}

ProtobufCAllocator eb_arena_pb_allocator(eb_arena *a)
{
    ProtobufCAllocator al = {pb_alloc, pb_free, a};

    return al;
}

static void *cjson_malloc(size_t size)
{
    return bound ? eb_arena_alloc(bound, size) : malloc(size);
}

/* True when p lies in one of a's chunks. */
static bool arena_owns(const eb_arena *a, const void *p)
{
    for (const chunk *c = a->head; c; c = c->next)
        if ((const unsigned char *)p >= c->data && (const unsigned char *)p < c->data + c->cap)
            return true;
    return false;
}

static void cjson_free(void *ptr)
{
    if (!bound || !arena_owns(bound, ptr))
        free(ptr);
}

void eb_arena_cjson_init(void)
{
    cJSON_Hooks hooks = {cjson_malloc, cjson_free};

    cJSON_InitHooks(&hooks);
}

void eb_arena_cjson_bind(eb_arena *a)
{
    bound = a;
}
