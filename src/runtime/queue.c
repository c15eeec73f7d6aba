/*
 * A bounded FIFO of pointers.  A sender finding a receiver waiting hands
 * the item over directly (through the receiver's wait slot); a receiver
 * taking from a full queue moves the first waiting sender's item in, so
 * that order is kept and a woken sender's item is already queued.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "rt.h"

struct lahja_queue {
    void **ring;
    size_t cap, head, len;
    int closed;
    lahja_link_t senders;   /* tasks blocked in send, their item in wait_data */
    lahja_link_t receivers; /* tasks blocked in recv (queue empty) */
};

int lahja_queue_new(size_t capacity, lahja_queue_t **out)
{
    if (capacity == 0 || capacity > SIZE_MAX / sizeof(void *) || out == NULL)
        return -EINVAL;
    struct lahja_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return -ENOMEM;
    q->ring = malloc(capacity * sizeof *q->ring);
    if (q->ring == NULL) {
        free(q);
        return -ENOMEM;
    }
    q->cap = capacity;
    lahja_list_init(&q->senders);
    lahja_list_init(&q->receivers);
    *out = q;
    return 0;
}

static void ring_push(struct lahja_queue *q, void *item)
{
    q->ring[(q->head + q->len) % q->cap] = item;
    q->len++;
}

static void *ring_pop(struct lahja_queue *q)
{
    void *item = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    q->len--;
    return item;
}

int lahja_queue_try_send(lahja_queue_t *q, void *item)
{
    if (q->closed)
        return -EPIPE;
    if (!lahja_list_empty(&q->receivers)) {
        struct lahja_task *r = lahja_container_of(q->receivers.next, struct lahja_task, wait);
        r->wait_data = item;
        lahja_wake(r, 0);
        return 0;
    }
    if (q->len == q->cap)
        return -EAGAIN;
    ring_push(q, item);
    return 0;
}

int lahja_queue_send(lahja_queue_t *q, void *item, lahja_time_t deadline)
{
    struct lahja_task *t = lahja_tls_task;
    int rc = lahja_checkpoint(); /* LAHJA_ENOTASK outside a task */
    if (rc != 0)
        return rc;
    rc = lahja_queue_try_send(q, item);
    if (rc != -EAGAIN)
        return rc;
    t->wait_data = item;
    rc = lahja_wait(&q->senders, deadline, 0);
    return rc == LAHJA_WAIT_EXPIRED ? -ETIMEDOUT : rc;
}

int lahja_queue_try_recv(lahja_queue_t *q, void **item)
{
    if (q->len == 0)
        return q->closed ? -EPIPE : -EAGAIN;
    *item = ring_pop(q);
    if (!lahja_list_empty(&q->senders)) {
        struct lahja_task *s = lahja_container_of(q->senders.next, struct lahja_task, wait);
        ring_push(q, s->wait_data);
        lahja_wake(s, 0);
    }
    return 0;
}

int lahja_queue_recv(lahja_queue_t *q, void **item, lahja_time_t deadline)
{
    struct lahja_task *t = lahja_tls_task;
    int rc = lahja_checkpoint(); /* LAHJA_ENOTASK outside a task */
    if (rc != 0)
        return rc;
    rc = lahja_queue_try_recv(q, item);
    if (rc != -EAGAIN)
        return rc;
    rc = lahja_wait(&q->receivers, deadline, 0);
    if (rc == 0)
        *item = t->wait_data;
    return rc == LAHJA_WAIT_EXPIRED ? -ETIMEDOUT : rc;
}

void lahja_queue_close(lahja_queue_t *q)
{
    q->closed = 1;
    while (lahja_wake_first(&q->senders, -EPIPE) != NULL)
        ;
    while (lahja_wake_first(&q->receivers, -EPIPE) != NULL)
        ;
}

size_t lahja_queue_len(const lahja_queue_t *q)
{
    return q->len;
}

void lahja_queue_free(lahja_queue_t *q)
{
    if (q == NULL)
        return;
    assert(lahja_list_empty(&q->senders) && lahja_list_empty(&q->receivers));
    free(q->ring);
    free(q);
}
