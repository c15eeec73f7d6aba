/*
 * Nurseries: a scope that owns child tasks and does not close before
 * they have all finished.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

int lahja_nursery_open(lahja_nursery_t **out)
{
    struct lahja_task *t = lahja_tls_task;
    if (out == NULL)
        return -EINVAL;
    if (t == NULL)
        return LAHJA_ENOTASK;
    struct lahja_nursery *n = calloc(1, sizeof *n);
    if (n == NULL)
        return -ENOMEM;
    n->rt = t->rt;
    lahja_list_init(&n->handles);
    lahja_list_init(&n->joinq);
    lahja_scope_push(t, &n->scope, LAHJA_FOREVER, 0);
    *out = n;
    return 0;
}

/* Only live children can fail, so room for nfailures + live failures is
 * made at spawn, where -ENOMEM can still be returned: recording a
 * failure then never fails. */
static int reserve_failure(struct lahja_nursery *n)
{
    size_t need = n->nfailures + n->live + 1;
    if (need <= n->capfailures)
        return 0;
    size_t cap = n->capfailures ? n->capfailures * 2 : 4;
    while (cap < need)
        cap *= 2;
    struct lahja_failure_rec *f = realloc(n->failures, cap * sizeof *f);
    if (f == NULL)
        return -ENOMEM;
    n->failures = f;
    n->capfailures = cap;
    return 0;
}

int lahja_nursery_spawn_weak(struct lahja_nursery *n, lahja_task_fn fn, void *arg,
                             const lahja_task_options_t *opts, struct lahja_task **out)
{
    if (n == NULL || fn == NULL)
        return -EINVAL;
    if (lahja_rt_wrong_thread(n->rt))
        return LAHJA_EWRONGTHREAD;
    if (n->joined)
        return LAHJA_ELIFECYCLE;
    int rc = reserve_failure(n);
    if (rc != 0)
        return rc;
    struct lahja_task *t;
    rc = lahja_task_create(n->rt, fn, arg, opts, &n->scope, &t);
    if (rc != 0)
        return rc;
    t->nursery = n;
    n->live++;
    if (out != NULL)
        *out = t;
    return 0;
}

int lahja_nursery_spawn(lahja_nursery_t *n, lahja_task_fn fn, void *arg,
                        const lahja_task_options_t *opts, lahja_task_t **out)
{
    struct lahja_task *t;
    int rc = lahja_nursery_spawn_weak(n, fn, arg, opts, &t);
    if (rc != 0 || out == NULL)
        return rc;
    t->refs++;
    lahja_list_push_back(&n->handles, &t->sibling);
    *out = t;
    return 0;
}

void lahja_nursery_child_done(struct lahja_nursery *n, struct lahja_task *t, int failed)
{
    if (failed) {
        struct lahja_failure_rec *f = &n->failures[n->nfailures++];
        memcpy(f->name, t->name, sizeof f->name);
        f->pub.code = t->result;
        lahja_scope_cancel_as(&n->scope, 0);
    }
    t->nursery = NULL;
    if (--n->live == 0)
        lahja_wake_first(&n->joinq, 0);
}

void lahja_nursery_cancel(lahja_nursery_t *n)
{
    if (n != NULL)
        lahja_scope_cancel_as(&n->scope, 0);
}

int lahja_nursery_join(lahja_nursery_t *n)
{
    struct lahja_task *t = lahja_tls_task;
    if (n == NULL)
        return -EINVAL;
    if (t == NULL)
        return LAHJA_ENOTASK;
    assert(!n->joined && t->scope == &n->scope && "nursery joined out of scope order");
    /* Not cancellable: cancellation reaches the children through the
     * scope tree, and the nursery must outlive them all. */
    while (n->live > 0)
        lahja_wait(&n->joinq, LAHJA_FOREVER, LAHJA_WAIT_NOCANCEL);
    n->joined = 1;
    lahja_scope_pop(t, &n->scope);
    if (n->nfailures > 0)
        return n->failures[0].pub.code;
    return lahja_scope_status(t->scope, uv_now(t->rt->loop), NULL);
}

size_t lahja_nursery_nfailures(const lahja_nursery_t *n)
{
    return n->nfailures;
}

const lahja_failure_t *lahja_nursery_failure(const lahja_nursery_t *n, size_t i)
{
    if (i >= n->nfailures)
        return NULL;
    /* The records move when the array grows: point the name at its
     * copy now, when it is handed out. */
    struct lahja_failure_rec *f = &((struct lahja_nursery *)n)->failures[i];
    f->pub.task_name = f->name;
    return &f->pub;
}

void lahja_nursery_free(lahja_nursery_t *n)
{
    if (n == NULL)
        return;
    assert(n->joined && "nursery freed before join");
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&n->handles)) != NULL)
        lahja_task_unref(lahja_container_of(l, struct lahja_task, sibling));
    free(n->failures);
    free(n);
}

int lahja_nursery_close(lahja_nursery_t *n)
{
    if (n == NULL)
        return -EINVAL;
    if (lahja_tls_task == NULL)
        return LAHJA_ENOTASK;
    int rc = lahja_nursery_join(n);
    lahja_nursery_free(n);
    return rc;
}
