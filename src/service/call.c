/*
 * Calls into a service from outside it (S17), and services run in the
 * background for the length of a scope (S18).
 */
#include <errno.h>

#include "service.h"

struct call {
    lahja_manager_t *m;
    lahja_task_fn fn;
    void *arg;
    int result;
    int service_finished;
    lahja_nursery_t *n;
};

static int call_body(void *arg)
{
    struct call *c = arg;
    c->result = c->fn(c->arg);
    lahja_nursery_cancel(c->n); /* the watcher is no longer needed */
    return 0;
}

static int call_watch(void *arg)
{
    struct call *c = arg;
    if (lahja_latch_wait(&c->m->finished_ev, LAHJA_FOREVER) == 0) {
        c->service_finished = 1;
        lahja_nursery_cancel(c->n);
    }
    return 0;
}

int lahja_manager_call(lahja_manager_t *m, lahja_task_fn fn, void *arg)
{
    if (m == NULL || fn == NULL)
        return -EINVAL;
    if (lahja_tls_task == NULL)
        return LAHJA_ENOTASK;
    if (!lahja_manager_is_running(m))
        return LAHJA_ELIFECYCLE;
    struct call c = { m, fn, arg, 0, 0, NULL };
    int rc = lahja_nursery_open(&c.n);
    if (rc != 0)
        return rc;
    lahja_task_options_t body = { .name = "external-call" }, watch = { .name = "external-watch" };
    rc = lahja_nursery_spawn(c.n, call_body, &c, &body, NULL);
    if (rc == 0)
        rc = lahja_nursery_spawn(c.n, call_watch, &c, &watch, NULL);
    if (rc != 0)
        lahja_nursery_cancel(c.n);
    int jrc = lahja_nursery_close(c.n);
    if (c.service_finished)
        return LAHJA_ELIFECYCLE;
    if (rc != 0)
        return rc;
    if (jrc != 0)
        return jrc; /* the caller was cancelled */
    return c.result;
}

static int background_main(void *arg)
{
    return lahja_manager_run(arg);
}

/* Waits, not cancellable, for a task to finish, then releases it. */
static void reap(struct lahja_task *t)
{
    while (t->state != LAHJA_TASK_DONE)
        lahja_wait(&t->joiners, LAHJA_FOREVER, LAHJA_WAIT_NOCANCEL);
    lahja_task_detach(t);
}

int lahja_background_start(lahja_service_t *svc, lahja_manager_t **out)
{
    struct lahja_task *self = lahja_tls_task;
    if (svc == NULL || out == NULL)
        return -EINVAL;
    if (self == NULL)
        return LAHJA_ENOTASK;
    lahja_manager_t *m;
    int rc = lahja_manager_new(svc, &m);
    if (rc != 0)
        return rc;
    lahja_task_options_t opts = { .name = svc->name };
    rc = lahja_spawn(self->rt, background_main, m, &opts, &m->bg);
    if (rc != 0) {
        lahja_manager_free(m);
        svc->manager = NULL;
        return rc;
    }
    rc = lahja_manager_wait_started(m, LAHJA_FOREVER);
    if (rc != 0) {
        /* Cancelled before it started: take it down again. */
        lahja_task_cancel(m->bg);
        reap(m->bg);
        lahja_manager_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int lahja_background_end(lahja_manager_t *m)
{
    if (m == NULL || m->bg == NULL)
        return -EINVAL;
    if (lahja_tls_task == NULL)
        return LAHJA_ENOTASK;
    lahja_manager_stop(m);
    reap(m->bg);
    m->bg = NULL;
    return m->nerrors > 0 ? m->errors->pub.code : 0;
}
