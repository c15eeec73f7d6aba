/*
 * Tasks: creation (from a pool of finished task objects, whose stacks
 * and timers are reused), the entry and exit path, join, detach, cancel.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

static void task_entry(void *arg)
{
    struct lahja_task *t = arg;
    struct lahja_rt *rt = t->rt;
    lahja_task_started(t);

    int result = t->fn(t->arg);

    /* Returning with a scope or nursery still open would leave its
     * children running on a finished task: a programmer error. */
    assert(t->scope == &t->root && "task returned with a scope or nursery open");
    t->result = result;
    int failed = result != 0;
    if (failed && (result == -ECANCELED || result == -ETIMEDOUT))
        failed = lahja_scope_status(&t->root, uv_now(rt->loop), NULL) == 0;
    lahja_scope_unlink(&t->root);
    uv_timer_stop(&t->timer); /* left armed by its last wait */
    t->state = LAHJA_TASK_DONE;
    rt->ntasks--;
    while (lahja_wake_first(&t->joiners, 0) != NULL)
        ;
    if (t->nursery != NULL)
        lahja_nursery_child_done(t->nursery, t, failed);
    lahja_switch_away(t, 1);
    abort(); /* a finished task is never resumed */
}

static void on_timer_closed(uv_handle_t *h)
{
    struct lahja_task *t = h->data;
    struct lahja_rt *rt = t->rt;
    lahja_list_remove(&t->obj);
    lahja_stack_free(&t->stack);
    free(t);
    rt->nobjects--;
    rt->nclosing--;
    lahja_rt_object_freed(rt);
}

static void task_destroy(struct lahja_task *t)
{
    t->rt->nclosing++;
    uv_close((uv_handle_t *)&t->timer, on_timer_closed);
}

void lahja_task_release_all(struct lahja_rt *rt)
{
    lahja_link_t *l, *tmp;
    lahja_list_foreach_safe(l, tmp, &rt->objects) {
        struct lahja_task *t = lahja_container_of(l, struct lahja_task, obj);
        if (t->state != LAHJA_TASK_DONE || t->refs == 0 || lahja_link_linked(&t->pool))
            continue;
        lahja_list_remove(&t->sibling); /* from a nursery never freed */
        t->has_handle = 0;
        t->refs = 1;
        lahja_task_unref(t);
    }
}

void lahja_task_pool_drain(struct lahja_rt *rt)
{
    lahja_link_t *l;
    while ((l = lahja_list_pop_front(&rt->pool)) != NULL) {
        rt->npool--;
        task_destroy(lahja_container_of(l, struct lahja_task, pool));
    }
}

void lahja_task_unref(struct lahja_task *t)
{
    assert(t->refs > 0);
    if (--t->refs > 0)
        return;
    struct lahja_rt *rt = t->rt;
    if (t->stack.size == rt->stack_size && rt->npool < rt->pool_max && !rt->closing) {
        lahja_list_push_back(&rt->pool, &t->pool);
        rt->npool++;
    } else {
        task_destroy(t);
    }
}

static struct lahja_task *task_alloc(struct lahja_rt *rt, size_t stack_size, int *err)
{
    if (stack_size == rt->stack_size) {
        lahja_link_t *l = lahja_list_pop_front(&rt->pool);
        if (l != NULL) {
            rt->npool--;
            return lahja_container_of(l, struct lahja_task, pool);
        }
    }
    struct lahja_task *t = calloc(1, sizeof *t);
    if (t == NULL) {
        *err = -ENOMEM;
        return NULL;
    }
    *err = lahja_stack_alloc(&t->stack, stack_size);
    if (*err != 0) {
        free(t);
        return NULL;
    }
    t->rt = rt;
    uv_timer_init(rt->loop, &t->timer);
    t->timer.data = t;
    lahja_list_push_back(&rt->objects, &t->obj);
    rt->nobjects++;
    return t;
}

int lahja_task_create(struct lahja_rt *rt, lahja_task_fn fn, void *arg,
                      const lahja_task_options_t *opts, struct lahja_scope *parent,
                      struct lahja_task **out)
{
    size_t stack_size = rt->stack_size; /* already whole pages */
    if (opts != NULL && opts->stack_size != 0) {
        size_t page = lahja_page_size();
        if (opts->stack_size > ((size_t)1 << 40))
            return -EINVAL;
        stack_size = (opts->stack_size + page - 1) & ~(page - 1);
    }
    int err;
    struct lahja_task *t = task_alloc(rt, stack_size, &err);
    if (t == NULL)
        return err;

    t->fn = fn;
    t->arg = arg;
    t->result = 0;
    t->wake = LAHJA_WAKE_NONE;
    t->cancellable = 0;
    t->has_handle = 0;
    t->refs = 1;
    t->wait_data = NULL;
    t->ready.prev = t->ready.next = NULL;
    t->wait.prev = t->wait.next = NULL;
    t->pool.prev = t->pool.next = NULL;
    t->sibling.prev = t->sibling.next = NULL;
    lahja_list_init(&t->joiners);
    t->nursery = NULL;
    t->local = NULL;
    if (opts != NULL && opts->name != NULL) {
        size_t n = strnlen(opts->name, sizeof t->name - 1);
        memcpy(t->name, opts->name, n);
        t->name[n] = '\0';
    } else {
        memcpy(t->name, "task", sizeof "task");
    }
    lahja_scope_init(&t->root, parent, t, LAHJA_FOREVER, 0);
    t->scope = &t->root;
    lahja_ctx_make(&t->ctx, t->stack.lo, t->stack.size, task_entry, t);
    rt->ntasks++;
    lahja_ready_push(t);
    *out = t;
    return 0;
}

int lahja_spawn(lahja_rt_t *rt, lahja_task_fn fn, void *arg,
                const lahja_task_options_t *opts, lahja_task_t **out)
{
    if (rt == NULL || fn == NULL)
        return -EINVAL;
    if (lahja_rt_wrong_thread(rt))
        return LAHJA_EWRONGTHREAD;
    if (rt->closing)
        return LAHJA_ELIFECYCLE;
    struct lahja_task *t;
    int rc = lahja_task_create(rt, fn, arg, opts, &rt->root, &t);
    if (rc != 0)
        return rc;
    if (out != NULL) {
        t->refs++;
        t->has_handle = 1;
        *out = t;
    }
    return 0;
}

int lahja_task_join(lahja_task_t *t, lahja_time_t deadline, int *result)
{
    struct lahja_task *self = lahja_tls_task;
    if (t == NULL)
        return -EINVAL;
    if (self == NULL)
        return LAHJA_ENOTASK;
    if (t == self)
        return -EDEADLK;
    int rc = 0;
    if (t->state == LAHJA_TASK_DONE)
        rc = lahja_checkpoint(); /* a checkpoint even when t is done */
    if (rc != 0)
        return rc;
    while (t->state != LAHJA_TASK_DONE) {
        rc = lahja_wait(&t->joiners, deadline, 0);
        if (rc == LAHJA_WAIT_EXPIRED)
            return -ETIMEDOUT;
        if (rc != 0)
            return rc;
    }
    if (result != NULL)
        *result = t->result;
    lahja_task_detach(t);
    return 0;
}

void lahja_task_detach(lahja_task_t *t)
{
    if (t != NULL && t->has_handle) {
        t->has_handle = 0;
        lahja_task_unref(t);
    }
}

void lahja_task_cancel(lahja_task_t *t)
{
    if (t != NULL && t->state != LAHJA_TASK_DONE)
        lahja_scope_cancel_as(&t->root, 0);
}

int lahja_task_done(const lahja_task_t *t)
{
    return t->state == LAHJA_TASK_DONE;
}

int lahja_task_result(const lahja_task_t *t)
{
    return t->result;
}

const char *lahja_task_name(const lahja_task_t *t)
{
    return t->name;
}

lahja_task_t *lahja_task_current(void)
{
    return lahja_tls_task;
}

void lahja_task_stack_bounds(const struct lahja_task *t, void **lo, size_t *size)
{
    *lo = t->stack.lo;
    *size = t->stack.size;
}
