/*
 * Events: a type, a payload, and once broadcast an origin and an id.
 * An owned event is one allocation (strings and payload after the
 * struct); an event lent to handlers points into the read buffer.
 *
 * Reference counts (of events and of the names they carry as origin)
 * are atomic, so that an event may be handed to another thread (posted
 * from a worker, kept by a handler and given to one) and released
 * there.  Relaxed increments suffice (a new reference is taken from an
 * existing one); the decrement that frees orders every earlier use of
 * the object before the free.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint.h"

lahja_name_t *lahja_name_new(const char *s, size_t len)
{
    lahja_name_t *n = malloc(sizeof *n + len + 1);
    if (n == NULL)
        return NULL;
    n->refs = 1;
    n->len = len;
    memcpy(n->s, s, len);
    n->s[len] = '\0';
    return n;
}

lahja_name_t *lahja_name_ref(lahja_name_t *n)
{
    if (n != NULL)
        __atomic_fetch_add(&n->refs, 1, __ATOMIC_RELAXED);
    return n;
}

void lahja_name_unref(lahja_name_t *n)
{
    if (n != NULL && __atomic_sub_fetch(&n->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(n);
}

int lahja_event_make(const char *type, size_t type_len, const char *response_type,
                     const void *payload, size_t len, lahja_event_t **out)
{
    size_t rlen = response_type != NULL ? strlen(response_type) : 0;
    if (len > UINT32_MAX)
        return -EMSGSIZE;
    size_t size = sizeof(lahja_event_t) + type_len + 1 + rlen + 1 + len;
    int block = size <= LAHJA_BLOCK_SIZE; /* small: from the runtime's blocks */
    lahja_event_t *ev = block ? lahja_block_get() : malloc(size);
    if (ev == NULL)
        return -ENOMEM;
    lahja_event_blank(ev);
    ev->block = (uint8_t)block;
    char *p = (char *)(ev + 1);
    memcpy(p, type, type_len);
    p[type_len] = '\0';
    ev->type = p;
    ev->type_len = type_len;
    p += type_len + 1;
    if (response_type != NULL) {
        memcpy(p, response_type, rlen + 1);
        ev->response_type = p;
        ev->is_request = 1;
    }
    p += rlen + 1;
    if (len > 0)
        memcpy(p, payload, len);
    ev->payload = (const uint8_t *)p;
    ev->len = len;
    ev->refs = 1;
    *out = ev;
    return 0;
}

int lahja_event_new(const char *type, const void *payload, size_t len, lahja_event_t **out)
{
    if (type == NULL || out == NULL || (payload == NULL && len > 0))
        return -EINVAL;
    size_t tlen = strlen(type);
    if (!lahja_event_type_valid(type, tlen))
        return -EINVAL;
    return lahja_event_make(type, tlen, NULL, payload, len, out);
}

int lahja_event_wrap(const char *type, void *payload, size_t len, lahja_free_fn free_fn,
                     void *user, lahja_event_t **out)
{
    if (type == NULL || out == NULL || (payload == NULL && len > 0))
        return -EINVAL;
    size_t tlen = strlen(type);
    if (!lahja_event_type_valid(type, tlen))
        return -EINVAL;
    if (len > UINT32_MAX)
        return -EMSGSIZE;
    lahja_event_t *ev;
    int rc = lahja_event_make(type, tlen, NULL, NULL, 0, &ev);
    if (rc != 0)
        return rc;
    ev->payload = payload;
    ev->len = len;
    ev->free_fn = free_fn;
    ev->free_user = user;
    *out = ev;
    return 0;
}

int lahja_request_new(const char *type, const char *response_type, const void *payload,
                      size_t len, lahja_event_t **out)
{
    if (type == NULL || response_type == NULL || out == NULL || (payload == NULL && len > 0))
        return -EINVAL;
    size_t tlen = strlen(type);
    if (!lahja_event_type_valid(type, tlen) ||
        (strcmp(response_type, LAHJA_ANY_RESPONSE) != 0 &&
         !lahja_event_type_valid(response_type, strlen(response_type))))
        return -EINVAL;
    return lahja_event_make(type, tlen, response_type, payload, len, out);
}

/* An owned copy of any event, bound state included (origin, id). */
static lahja_event_t *clone(const lahja_event_t *ev)
{
    lahja_event_t *c;
    if (lahja_event_make(ev->type, ev->type_len, ev->response_type, ev->payload, ev->len, &c) != 0)
        return NULL;
    c->bound = ev->bound;
    c->is_request = ev->is_request;
    c->id = ev->id;
    c->origin = lahja_name_ref(ev->origin);
    return c;
}

lahja_event_t *lahja_event_ref(lahja_event_t *ev)
{
    if (ev == NULL)
        return NULL;
    if (ev->borrowed || ev->on_stack)
        return clone(ev);
    __atomic_fetch_add(&ev->refs, 1, __ATOMIC_RELAXED);
    return ev;
}

void lahja_event_unref(lahja_event_t *ev)
{
    if (ev == NULL || ev->borrowed || ev->on_stack ||
        __atomic_sub_fetch(&ev->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    lahja_name_unref(ev->origin);
    free(ev->lz4);
    if (ev->lent != NULL)
        lahja_lent_drop(ev->lent);
    if (ev->free_fn != NULL)
        ev->free_fn((void *)ev->payload, ev->free_user);
    if (ev->block)
        lahja_block_put(ev);
    else
        free(ev);
}

int lahja_event_copy(const lahja_event_t *ev, lahja_event_t **out)
{
    if (ev == NULL || out == NULL)
        return -EINVAL;
    return lahja_event_make(ev->type, ev->type_len, ev->response_type, ev->payload, ev->len, out);
}

const char *lahja_event_type(const lahja_event_t *ev)
{
    return ev->type;
}

const void *lahja_event_payload(const lahja_event_t *ev, size_t *len)
{
    if (len != NULL)
        *len = ev->len;
    return ev->payload;
}

const char *lahja_event_origin(const lahja_event_t *ev)
{
    return ev->origin != NULL ? ev->origin->s : NULL;
}

uint64_t lahja_event_id(const lahja_event_t *ev)
{
    return ev->id;
}

const char *lahja_event_response_type(const lahja_event_t *ev)
{
    return ev->response_type;
}
