/*
 * arena.c — request-scoped memory (as nginx pools): a request allocates from
 * a list of chunks with a bump pointer and frees them all in one go when its
 * reply has been written, so handlers never track small strings.
 */
#include "kn_http.h"

#include <stdlib.h>
#include <string.h>

struct kn_arena_chunk {
    kn_arena_chunk *next;
    size_t size;
    /* followed by the chunk's bytes, 16-aligned */
    max_align_t align[];
};

#define ARENA_CHUNK 4096

static size_t align16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

void *kn_arena_alloc(kn_arena *a, size_t size)
{
    size = align16(size ? size : 1);
    if (a->ptr == NULL || (size_t)(a->end - a->ptr) < size) {
        size_t want = size > ARENA_CHUNK / 2 ? size : ARENA_CHUNK;
        kn_arena_chunk *c = malloc(sizeof(*c) + want);
        if (c == NULL)
            return NULL;
        c->size = want;
        if (size > ARENA_CHUNK / 2 && a->head != NULL) {
            /* A big block gets its own chunk behind the head so the head's
             * free space stays usable for small allocations. */
            c->next = a->head->next;
            a->head->next = c;
            memset(c->align, 0, size);
            return c->align;
        }
        c->next = a->head;
        a->head = c;
        a->ptr = (char *)c->align;
        a->end = a->ptr + want;
    }
    void *p = a->ptr;
    a->ptr += size;
    memset(p, 0, size);
    return p;
}

void *kn_arena_realloc(kn_arena *a, void *old, size_t oldsize, size_t newsize)
{
    if (newsize <= oldsize)
        return old;
    /* Grow in place when old is the last allocation of the head chunk. */
    if (old != NULL && (char *)old + align16(oldsize) == a->ptr &&
        (size_t)(a->end - (char *)old) >= align16(newsize)) {
        memset((char *)old + oldsize, 0, newsize - oldsize);
        a->ptr = (char *)old + align16(newsize);
        return old;
    }
    void *p = kn_arena_alloc(a, newsize);
    if (p != NULL && old != NULL)
        memcpy(p, old, oldsize);
    return p;
}

char *kn_arena_strndup(kn_arena *a, const char *s, size_t n)
{
    char *p = kn_arena_alloc(a, n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

void kn_arena_free(kn_arena *a)
{
    kn_arena_chunk *c = a->head;
    while (c != NULL) {
        kn_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->ptr = a->end = NULL;
}
