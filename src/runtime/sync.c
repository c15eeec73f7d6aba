/*
 * Synchronization between tasks, and waiting from a task on libuv:
 * sleep, one-shot events, conditions, completions.
 */
#include <errno.h>

#include "rt.h"

/* Maps lahja_wait's "own deadline passed" to the public error. */
static int timed(int rc)
{
    return rc == LAHJA_WAIT_EXPIRED ? -ETIMEDOUT : rc;
}

int lahja_sleep_until(lahja_time_t deadline)
{
    if (lahja_tls_task == NULL)
        return LAHJA_ENOTASK;
    int rc = lahja_wait(NULL, deadline, 0);
    return rc == LAHJA_WAIT_EXPIRED ? 0 : rc;
}

int lahja_sleep(uint64_t ms)
{
    return lahja_sleep_until(lahja_deadline_in(ms));
}

/* Waking from a thread other than the runtime's would corrupt its
 * queues: refuse.  Without waiters there is nothing to corrupt, but a
 * thread with no runtime at all is certainly not the owner. */
static int check_waker(const lahja_link_t *waiters)
{
    if (lahja_tls_rt == NULL)
        return LAHJA_EWRONGTHREAD;
    if (!lahja_list_empty(waiters)) {
        struct lahja_task *t = lahja_container_of(waiters->next, struct lahja_task, wait);
        if (t->rt != lahja_tls_rt)
            return LAHJA_EWRONGTHREAD;
    }
    return 0;
}

/* ------------------------------------------------------------ event */

void lahja_latch_init(lahja_latch_t *e)
{
    lahja_list_init(&e->waiters);
    e->set = 0;
}

int lahja_latch_set(lahja_latch_t *e)
{
    int rc = check_waker(&e->waiters);
    if (rc != 0)
        return rc;
    e->set = 1;
    while (lahja_wake_first(&e->waiters, 0) != NULL)
        ;
    return 0;
}

int lahja_latch_is_set(const lahja_latch_t *e)
{
    return e->set;
}

int lahja_latch_wait(lahja_latch_t *e, lahja_time_t deadline)
{
    if (lahja_tls_task == NULL)
        return LAHJA_ENOTASK;
    if (e->set)
        return lahja_checkpoint();
    return timed(lahja_wait(&e->waiters, deadline, 0));
}

/* ------------------------------------------------------------- cond */

void lahja_cond_init(lahja_cond_t *c)
{
    lahja_list_init(&c->waiters);
}

int lahja_cond_wait(lahja_cond_t *c, lahja_time_t deadline)
{
    if (lahja_tls_task == NULL)
        return LAHJA_ENOTASK;
    return timed(lahja_wait(&c->waiters, deadline, 0));
}

int lahja_cond_signal(lahja_cond_t *c)
{
    int rc = check_waker(&c->waiters);
    if (rc == 0)
        lahja_wake_first(&c->waiters, 0);
    return rc;
}

int lahja_cond_broadcast(lahja_cond_t *c)
{
    int rc = check_waker(&c->waiters);
    if (rc == 0)
        while (lahja_wake_first(&c->waiters, 0) != NULL)
            ;
    return rc;
}

/* ------------------------------------------------------- completion */

void lahja_completion_init(lahja_completion_t *c)
{
    c->task = NULL;
    c->done = 0;
    c->status = 0;
}

void lahja_complete(lahja_completion_t *c, int status)
{
    if (c->done)
        return;
    c->done = 1;
    c->status = status;
    struct lahja_task *t = c->task;
    if (t != NULL) {
        c->task = NULL;
        lahja_wake(t, status);
    }
}

/* Waits for lahja_complete, with or without cancellation. */
static int completion_wait(lahja_completion_t *c, lahja_time_t deadline, unsigned flags)
{
    struct lahja_task *t = lahja_tls_task;
    c->task = t;
    int rc = lahja_wait(NULL, deadline, flags);
    if (c->task == t)
        c->task = NULL; /* not completed: forget the waiter */
    return timed(rc);
}

int lahja_completion_wait(lahja_completion_t *c, lahja_time_t deadline)
{
    if (lahja_tls_task == NULL)
        return LAHJA_ENOTASK;
    /* A completed operation's status is returned even when cancelled:
     * it may carry a resource (an fd) the caller must not lose. */
    if (c->done)
        return c->status;
    return completion_wait(c, deadline, 0);
}

int lahja_uv_req_wait(uv_req_t *req, lahja_completion_t *c, lahja_time_t deadline)
{
    if (lahja_tls_task == NULL)
        return LAHJA_ENOTASK;
    int rc = lahja_completion_wait(c, deadline);
    if (c->done)
        return c->status;
    uv_cancel(req); /* may fail (already running): then it just finishes */
    while (!c->done)
        completion_wait(c, LAHJA_FOREVER, LAHJA_WAIT_NOCANCEL);
    /* Cancelled in time: report why.  Completed anyway: report that, so
     * that what it produced is not lost. */
    return c->status == UV_ECANCELED ? rc : c->status;
}

static void on_closed(uv_handle_t *h)
{
    lahja_complete(h->data, 0);
}

int lahja_uv_close(uv_handle_t *h)
{
    if (h == NULL)
        return -EINVAL;
    if (lahja_tls_task == NULL)
        return LAHJA_ENOTASK;
    if (uv_is_closing(h))
        return -EALREADY;
    lahja_completion_t c;
    lahja_completion_init(&c);
    h->data = &c;
    uv_close(h, on_closed);
    while (!c.done)
        completion_wait(&c, LAHJA_FOREVER, LAHJA_WAIT_NOCANCEL);
    return 0;
}
