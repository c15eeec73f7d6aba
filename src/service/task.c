/*
 * Service tasks: scheduling into the task tree, the wrapper every task
 * runs in (errors, daemons, waiting for children, orphans), and the
 * leaves-first cancellation of the tree.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"

struct svc_task *lahja_svc_current(void)
{
    struct lahja_task *t = lahja_tls_task;
    return t != NULL ? t->local : NULL;
}

void lahja_svc_wait_set(lahja_latch_t *e)
{
    /* One wait, no re-check: an uncancellable wait without deadline ends
     * only by the event's set, and the event may be freed by then. */
    if (!e->set)
        lahja_wait(&e->waiters, LAHJA_FOREVER, LAHJA_WAIT_NOCANCEL);
}

static lahja_link_t *children_of(struct lahja_manager *m, struct svc_task *parent,
                                 size_t **count)
{
    if (parent == NULL) {
        *count = &m->nroots;
        return &m->roots;
    }
    *count = &parent->nchildren;
    return &parent->children;
}

/* --------------------------------------------------------- errors */

void lahja_svc_record(struct lahja_manager *m, const char *task_name, int code,
                      const char *message)
{
    size_t nlen = strlen(task_name) + 1, mlen = strlen(message) + 1;
    struct svc_error *e = malloc(sizeof *e + nlen + mlen);
    if (e != NULL) {
        char *name = (char *)(e + 1);
        memcpy(name, task_name, nlen);
        memcpy(name + nlen, message, mlen);
        e->pub = (lahja_service_error_t){ name, code, name + nlen };
        e->allocated = 1;
    } else if (!m->oom.pub.message) {
        /* Out of memory: the failure still counts, with static strings. */
        e = &m->oom;
        e->pub = (lahja_service_error_t){ "?", code, lahja_strerror(code) };
        e->allocated = 0;
    }
    if (e != NULL) {
        e->next = NULL;
        *m->errors_tail = e;
        m->errors_tail = &e->next;
        m->nerrors++;
    }
    lahja_manager_cancel(m);
}

int lahja_service_fail(int code, const char *fmt, ...)
{
    struct svc_task *st = lahja_svc_current();
    if (st == NULL || fmt == NULL)
        return code;
    char *msg = malloc(256);
    if (msg != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, 256, fmt, ap);
        va_end(ap);
        free(st->fail_msg);
        st->fail_msg = msg;
    }
    return code;
}

/* A child service's errors fail the task running it, as one error. */
static void record_child_failure(struct svc_task *st)
{
    struct lahja_manager *c = st->child;
    const lahja_service_error_t *first = lahja_manager_error(c, 0);
    char msg[512];
    int n = snprintf(msg, sizeof msg, "Child service %s failed: %s", st->name, first->message);
    if (c->nerrors > 1 && n > 0 && (size_t)n < sizeof msg)
        snprintf(msg + n, sizeof msg - (size_t)n, " (and %zu more)", c->nerrors - 1);
    lahja_svc_record(st->m, st->name, first->code, msg);
}

static void record_failure(struct svc_task *st, int code)
{
    const char *msg = st->fail_msg != NULL ? st->fail_msg : lahja_strerror(code);
    lahja_svc_record(st->m, st->name, code, msg);
}

static void record_daemon_exit(struct svc_task *st)
{
    char msg[128];
    snprintf(msg, sizeof msg, "Daemon task %s[daemon=True] exited", st->name);
    lahja_svc_record(st->m, st->name, LAHJA_EDAEMONEXIT, msg);
}

/* ----------------------------------------------------- the wrapper */

static int run_body(struct svc_task *st)
{
    switch (st->kind) {
    case SVC_CHILD:
        return lahja_manager_run(st->child);
    case SVC_RUN:
        return st->m->svc->run(st->m, st->m->svc->user);
    default:
        return st->fn(st->arg);
    }
}

/* A task whose function returned is done once its children are; being
 * cancelled ends the wait (the cancel handler is taking them down). */
static void wait_children(struct svc_task *st)
{
    while (!lahja_list_empty(&st->children)) {
        struct svc_task *c = lahja_container_of(st->children.next, struct svc_task, sibling);
        if (lahja_latch_wait(&c->done, LAHJA_FOREVER) != 0)
            return;
    }
}

/* Moves the live children of a finished task to its parent, so that the
 * service-wide cancellation still finds them (no orphans). */
static void adopt_orphans(struct svc_task *st)
{
    size_t *count;
    lahja_link_t *list = children_of(st->m, st->parent, &count);
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&st->children)) != NULL) {
        struct svc_task *c = lahja_container_of(l, struct svc_task, sibling);
        c->parent = st->parent;
        lahja_list_push_back(list, l);
        (*count)++;
    }
    st->nchildren = 0;
}

static void svc_task_unref(struct svc_task *st)
{
    if (--st->refs > 0)
        return;
    free(st->fail_msg);
    free(st);
}

static void finish(struct svc_task *st)
{
    struct lahja_manager *m = st->m;
    size_t *count;
    adopt_orphans(st);
    children_of(m, st->parent, &count);
    lahja_list_remove(&st->sibling);
    (*count)--;
    if (st->kind != SVC_RUN)
        m->ndone++;
    lahja_tls_task->local = NULL;
    st->finished = 1;
    lahja_latch_set(&st->done);
    svc_task_unref(st);
}

static int svc_task_main(void *arg)
{
    struct svc_task *st = arg;
    struct lahja_manager *m = st->m;
    lahja_tls_task->local = st;

    int rc = run_body(st);
    int cancelled = lahja_checkpoint() != 0;

    if (st->kind == SVC_CHILD && st->child->nerrors > 0)
        record_child_failure(st);
    else if (rc != 0 && !(cancelled && (rc == -ECANCELED || rc == -ETIMEDOUT)))
        record_failure(st, rc);
    else if (rc == 0 && st->daemon && !m->cancelled)
        record_daemon_exit(st);
    else if (rc == 0)
        wait_children(st);
    finish(st);
    return 0; /* errors are the manager's, never the runtime nursery's */
}

/* ------------------------------------------------------ scheduling */

struct name_count {
    const char *name;
    size_t count;
};

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int by_count(const void *a, const void *b)
{
    const struct name_count *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return strcmp(x->name, y->name);
}

/* Writes "Tried to add more than 1000 child tasks. Most common tasks:
 * name (count), ..." with the ten most common names among `list`. */
static void too_many_message(struct lahja_manager *m, lahja_link_t *list, size_t n)
{
    const char **names = malloc(n * sizeof *names);
    struct name_count *runs = malloc(n * sizeof *runs);
    int len = snprintf(m->last_msg, sizeof m->last_msg,
                       "Tried to add more than %d child tasks. Most common tasks:",
                       LAHJA_MAX_CHILDREN);
    if (names != NULL && runs != NULL) {
        size_t i = 0, nruns = 0;
        lahja_link_t *l;
        lahja_list_foreach(l, list) names[i++] = lahja_container_of(l, struct svc_task, sibling)->name;
        qsort(names, n, sizeof *names, by_name);
        for (i = 0; i < n; i++) {
            if (nruns > 0 && strcmp(runs[nruns - 1].name, names[i]) == 0)
                runs[nruns - 1].count++;
            else
                runs[nruns++] = (struct name_count){ names[i], 1 };
        }
        qsort(runs, nruns, sizeof *runs, by_count);
        for (i = 0; i < nruns && i < 10 && len > 0 && (size_t)len < sizeof m->last_msg; i++)
            len += snprintf(m->last_msg + len, sizeof m->last_msg - (size_t)len, "%s %s (%zu)",
                            i ? "," : "", runs[i].name, runs[i].count);
    }
    free(names);
    free(runs);
}

int lahja_svc_schedule(struct lahja_manager *m, enum svc_kind kind, lahja_task_fn fn, void *arg,
                       struct lahja_manager *child, unsigned flags, const char *name,
                       struct svc_task **out)
{
    *out = NULL;
    if (!m->started || m->finishing)
        return LAHJA_ELIFECYCLE;
    if (m->cancelled)
        return 0; /* dropped, as async_service does */
    struct svc_task *parent = lahja_svc_current();
    if (parent != NULL && parent->m != m)
        parent = NULL; /* a task of another manager: a root task here */
    size_t *count;
    lahja_link_t *list = children_of(m, parent, &count);
    if (*count >= LAHJA_MAX_CHILDREN) {
        too_many_message(m, list, *count);
        return LAHJA_ETOOMANYCHILDREN;
    }
    struct svc_task *st = calloc(1, sizeof *st);
    if (st == NULL)
        return -ENOMEM;
    st->m = m;
    st->parent = parent;
    lahja_list_init(&st->children);
    st->fn = fn;
    st->arg = arg;
    st->child = child;
    st->kind = (uint8_t)kind;
    st->daemon = (flags & LAHJA_DAEMON) != 0;
    st->refs = 1;
    lahja_latch_init(&st->done);
    snprintf(st->name, sizeof st->name, "%s", name != NULL ? name : "task");
    lahja_task_options_t opts = { .name = st->name };
    int rc = lahja_nursery_spawn_weak(m->tasks, svc_task_main, st, &opts, &st->task);
    if (rc != 0) {
        free(st);
        return rc;
    }
    lahja_list_push_back(list, &st->sibling);
    (*count)++;
    if (kind != SVC_RUN)
        m->total++;
    *out = st;
    return 0;
}

/* ---------------------------------------------------- cancellation */

/* Cancels st's subtree, leaves first, then st, and waits until st has
 * finished (cleanup included).  st may finish by itself meanwhile (a task
 * waiting for the children just cancelled): the reference keeps it. */
static void cancel_tree(struct svc_task *st)
{
    st->refs++;
    while (!lahja_list_empty(&st->children))
        cancel_tree(lahja_container_of(st->children.next, struct svc_task, sibling));
    if (!st->finished) {
        if (st->kind == SVC_CHILD && st->child->started)
            lahja_manager_cancel(st->child); /* it reports cancelled */
        lahja_task_cancel(st->task);
        lahja_svc_wait_set(&st->done);
    }
    svc_task_unref(st);
}

void lahja_svc_cancel_all(struct lahja_manager *m)
{
    while (!lahja_list_empty(&m->roots))
        cancel_tree(lahja_container_of(m->roots.next, struct svc_task, sibling));
}
