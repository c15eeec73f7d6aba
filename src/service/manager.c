/*
 * Managers: creating, running and freeing them, their flags, stats and
 * errors.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"

/* What a service's manager pointer becomes once its manager is freed:
 * still "has a manager" (a service runs once), never dereferenced. */
static struct lahja_manager retired;

void lahja_service_init(lahja_service_t *svc, const char *name, lahja_service_fn run, void *user)
{
    memset(svc, 0, sizeof *svc);
    svc->name = name;
    svc->run = run;
    svc->user = user;
}

static int run_plain(lahja_manager_t *m, void *user)
{
    (void)m;
    lahja_service_t *svc = user;
    return svc->plain_fn(svc->plain_arg);
}

void lahja_as_service(lahja_service_t *svc, const char *name, lahja_task_fn fn, void *arg)
{
    lahja_service_init(svc, name, run_plain, svc);
    svc->plain_fn = fn;
    svc->plain_arg = arg;
}

static const char *service_name(const struct lahja_manager *m)
{
    return m->svc->name != NULL ? m->svc->name : "service";
}

int lahja_manager_new(lahja_service_t *svc, lahja_manager_t **out)
{
    if (svc == NULL || svc->run == NULL || out == NULL)
        return -EINVAL;
    if (svc->manager != NULL)
        return LAHJA_ELIFECYCLE;
    struct lahja_manager *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -ENOMEM;
    m->svc = svc;
    lahja_list_init(&m->roots);
    lahja_list_init(&m->owned);
    m->errors_tail = &m->errors;
    lahja_latch_init(&m->started_ev);
    lahja_latch_init(&m->cancel_ev);
    lahja_latch_init(&m->finished_ev);
    svc->manager = m;
    *out = m;
    return 0;
}

int lahja_manager_free(lahja_manager_t *m)
{
    if (m == NULL)
        return 0;
    if (m->started && !m->finished)
        return -EBUSY;
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&m->owned)) != NULL)
        lahja_manager_free(lahja_container_of(l, struct lahja_manager, owned_link));
    lahja_list_remove(&m->owned_link);
    struct svc_error *e = m->errors;
    while (e != NULL) {
        struct svc_error *next = e->next;
        if (e->allocated)
            free(e);
        e = next;
    }
    m->svc->manager = &retired;
    free(m);
    return 0;
}

/* Waits for the cancellation request, or for the cancellation of the
 * task running the manager, and then takes the tree down leaves first.
 * When the service finishes by itself, lahja_manager_run cancels this
 * handler: `finishing` tells the two apart. */
static int cancel_handler(void *arg)
{
    struct lahja_manager *m = arg;
    if (lahja_latch_wait(&m->cancel_ev, LAHJA_FOREVER) != 0) {
        if (m->finishing)
            return 0;
        m->cancelled = 1; /* the runner's caller was cancelled */
    }
    struct lahja_scope shield;
    lahja_scope_push(lahja_tls_task, &shield, LAHJA_FOREVER, LAHJA_SCOPE_SHIELD);
    lahja_svc_cancel_all(m);
    lahja_scope_pop(lahja_tls_task, &shield);
    return 0;
}

static int service_run_task(struct lahja_manager *m)
{
    struct svc_task *st;
    int rc = lahja_svc_schedule(m, SVC_RUN, NULL, NULL, NULL, 0, service_name(m), &st);
    if (rc != 0)
        lahja_svc_record(m, service_name(m), rc, lahja_strerror(rc));
    return rc;
}

int lahja_manager_run(lahja_manager_t *m)
{
    struct lahja_task *self = lahja_tls_task;
    if (m == NULL)
        return -EINVAL;
    if (self == NULL)
        return LAHJA_ENOTASK;
    if (m->started)
        return LAHJA_ELIFECYCLE;

    lahja_nursery_t *sys;
    int rc = lahja_nursery_open(&sys);
    if (rc != 0)
        return rc;
    lahja_task_options_t opts = { .name = "cancel-handler" };
    rc = lahja_nursery_spawn(sys, cancel_handler, m, &opts, NULL);
    if (rc == 0)
        rc = lahja_nursery_open(&m->tasks);
    if (rc != 0) {
        lahja_nursery_cancel(sys);
        lahja_nursery_close(sys);
        return rc;
    }
    /* The service tasks' nursery is a shield: a cancellation from outside
     * reaches only the cancel handler, which cancels them in order. */
    m->tasks->scope.shield = 1;

    m->started = 1;
    lahja_latch_set(&m->started_ev);
    service_run_task(m);
    lahja_nursery_join(m->tasks);

    m->finishing = 1;
    lahja_nursery_cancel(sys);
    lahja_nursery_close(sys);
    lahja_nursery_free(m->tasks);
    m->tasks = NULL;
    m->finished = 1;
    lahja_latch_set(&m->finished_ev);
    return m->nerrors > 0 ? m->errors->pub.code : 0;
}

int lahja_service_run(lahja_service_t *svc)
{
    lahja_manager_t *m;
    int rc = lahja_manager_new(svc, &m);
    if (rc != 0)
        return rc;
    rc = lahja_manager_run(m);
    lahja_manager_free(m);
    return rc;
}

lahja_manager_t *lahja_manager_current(void)
{
    struct svc_task *st = lahja_svc_current();
    return st != NULL ? st->m : NULL;
}

/* ------------------------------------------------------ scheduling */

int lahja_manager_run_task(lahja_manager_t *m, lahja_task_fn fn, void *arg, unsigned flags,
                           const char *name)
{
    if (m == NULL || fn == NULL)
        return -EINVAL;
    struct svc_task *st;
    return lahja_svc_schedule(m, SVC_FUNCTION, fn, arg, NULL, flags, name, &st);
}

int lahja_manager_run_daemon_task(lahja_manager_t *m, lahja_task_fn fn, void *arg,
                                  const char *name)
{
    return lahja_manager_run_task(m, fn, arg, LAHJA_DAEMON, name);
}

int lahja_manager_run_child_service(lahja_manager_t *m, lahja_service_t *child, unsigned flags,
                                    const char *name, lahja_manager_t **out)
{
    if (out != NULL)
        *out = NULL;
    if (m == NULL || child == NULL)
        return -EINVAL;
    if (!m->started || m->finishing)
        return LAHJA_ELIFECYCLE;
    lahja_manager_t *cm;
    int rc = lahja_manager_new(child, &cm); /* LAHJA_ELIFECYCLE if it has one */
    if (rc != 0)
        return rc;
    struct svc_task *st;
    if (name == NULL)
        name = child->name;
    rc = lahja_svc_schedule(m, SVC_CHILD, NULL, NULL, cm, flags, name, &st);
    if (rc != 0 || st == NULL) {
        lahja_manager_free(cm);
        child->manager = NULL; /* never ran: it may be started elsewhere */
        return rc;
    }
    cm->parent = m;
    lahja_list_push_back(&m->owned, &cm->owned_link);
    if (out != NULL)
        *out = cm;
    return 0;
}

int lahja_manager_run_daemon_child_service(lahja_manager_t *m, lahja_service_t *child,
                                           const char *name, lahja_manager_t **out)
{
    return lahja_manager_run_child_service(m, child, LAHJA_DAEMON, name, out);
}

/* --------------------------------------------------------- control */

int lahja_manager_cancel(lahja_manager_t *m)
{
    if (m == NULL)
        return -EINVAL;
    if (!m->started)
        return LAHJA_ELIFECYCLE;
    if (m->finished || m->cancelled)
        return 0;
    m->cancelled = 1;
    lahja_latch_set(&m->cancel_ev);
    return 0;
}

/* Non-zero if the calling task belongs to m or to a service m runs
 * (directly or not): waiting there for m to finish would wait forever. */
static int called_from_inside(const struct lahja_manager *m)
{
    struct svc_task *st = lahja_svc_current();
    for (const struct lahja_manager *x = st != NULL ? st->m : NULL; x != NULL; x = x->parent)
        if (x == m)
            return 1;
    return 0;
}

int lahja_manager_stop(lahja_manager_t *m)
{
    int rc = lahja_manager_cancel(m);
    if (rc != 0)
        return rc;
    if (lahja_tls_task == NULL)
        return LAHJA_ENOTASK;
    if (called_from_inside(m))
        return lahja_checkpoint(); /* this task is being cancelled too */
    lahja_svc_wait_set(&m->finished_ev);
    return 0;
}

int lahja_manager_wait_started(lahja_manager_t *m, lahja_time_t deadline)
{
    return lahja_latch_wait(&m->started_ev, deadline);
}

int lahja_manager_wait_finished(lahja_manager_t *m, lahja_time_t deadline)
{
    return lahja_latch_wait(&m->finished_ev, deadline);
}

int lahja_manager_is_started(const lahja_manager_t *m)
{
    return m->started;
}

int lahja_manager_is_running(const lahja_manager_t *m)
{
    return m->started && !m->finished;
}

int lahja_manager_is_cancelled(const lahja_manager_t *m)
{
    return m->cancelled;
}

int lahja_manager_is_finished(const lahja_manager_t *m)
{
    return m->finished;
}

int lahja_manager_did_error(const lahja_manager_t *m)
{
    return m->nerrors > 0;
}

void lahja_manager_stats(const lahja_manager_t *m, lahja_manager_stats_t *out)
{
    out->total = m->total;
    out->finished = m->ndone;
    out->pending = m->total - m->ndone;
}

size_t lahja_manager_nerrors(const lahja_manager_t *m)
{
    return m->nerrors;
}

const lahja_service_error_t *lahja_manager_error(const lahja_manager_t *m, size_t i)
{
    const struct svc_error *e = m->errors;
    while (e != NULL && i-- > 0)
        e = e->next;
    return e != NULL ? &e->pub : NULL;
}

int lahja_manager_describe(const lahja_manager_t *m, char *buf, size_t len)
{
    return snprintf(buf, len, "<Manager[%s] flags=%c%c%c%c%c>", service_name(m),
                    m->started ? 'S' : 's', lahja_manager_is_running(m) ? 'R' : 'r',
                    m->cancelled ? 'C' : 'c', m->finished ? 'F' : 'f',
                    m->nerrors ? 'E' : 'e');
}

const char *lahja_manager_last_message(const lahja_manager_t *m)
{
    return m->last_msg;
}
