/*
 * The scheduler: the runtime object, the ready queue, and the suspend /
 * wake core that every suspending call is built on.
 *
 * Tasks run from two libuv handles on the loop's own stack: an idle
 * handle, active only while the ready queue is not empty (an active idle
 * handle also makes the loop poll without blocking), and a check handle,
 * so that tasks woken by I/O callbacks run in the same loop iteration
 * rather than after another poll.  A task suspends by switching back to
 * the scheduler, never directly to another task: every switch goes
 * through one place, which keeps the sanitizer annotations simple.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rt.h"

#ifdef LAHJA_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

__thread struct lahja_rt *lahja_tls_rt;
__thread struct lahja_task *lahja_tls_task;

/* How many tasks one scheduler pass may resume before the loop gets to
 * poll for I/O again: tasks that keep yielding cannot starve I/O. */
#define SCHED_BUDGET 4096

void lahja_forget_inherited(void)
{
    if (lahja_tls_rt != NULL && lahja_tls_rt->pid != getpid()) {
        lahja_tls_rt = NULL;
        lahja_tls_task = NULL;
    }
}

int lahja_rt_wrong_thread(const struct lahja_rt *rt)
{
    return !pthread_equal(rt->thread, pthread_self());
}

/* -------------------------------------------------------- switching */

static void switch_to_task(struct lahja_rt *rt, struct lahja_task *t)
{
#ifdef LAHJA_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, t->stack.lo, t->stack.size);
#endif
    lahja_ctx_switch(&rt->sched_ctx, &t->ctx);
#ifdef LAHJA_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
    (void)rt;
}

/* Leaves a task's stack for the scheduler's; `dying` when it never
 * comes back (ASan then frees the task's fake stack). */
void lahja_switch_to_sched(struct lahja_task *t, int dying)
{
    struct lahja_rt *rt = t->rt;
#ifdef LAHJA_ASAN
    __sanitizer_start_switch_fiber(dying ? NULL : &t->asan_fake, rt->main_lo, rt->main_size);
#endif
    (void)dying;
    lahja_ctx_switch(&t->ctx, &rt->sched_ctx);
#ifdef LAHJA_ASAN
    __sanitizer_finish_switch_fiber(t->asan_fake, &rt->main_lo, &rt->main_size);
#endif
}

/* First code on a new task's stack, after its first switch. */
void lahja_task_started(struct lahja_task *t)
{
#ifdef LAHJA_ASAN
    __sanitizer_finish_switch_fiber(NULL, &t->rt->main_lo, &t->rt->main_size);
#endif
    (void)t;
}

/* -------------------------------------------------------- scheduling */

static void run_ready(struct lahja_rt *rt)
{
    if (rt->in_sched || lahja_tls_task != NULL)
        return;
    rt->in_sched = 1;
    for (unsigned budget = SCHED_BUDGET; budget > 0; budget--) {
        lahja_link_t *l = lahja_list_pop_front(&rt->ready);
        if (l == NULL)
            break;
        struct lahja_task *t = lahja_container_of(l, struct lahja_task, ready);
        t->state = LAHJA_TASK_RUNNING;
        lahja_tls_task = t;
        switch_to_task(rt, t);
        lahja_tls_task = NULL;
        if (t->state == LAHJA_TASK_DONE)
            lahja_task_unref(t); /* the runner's reference: off its stack now */
    }
    rt->in_sched = 0;
    if (lahja_list_empty(&rt->ready))
        uv_idle_stop(&rt->idle);
}

static void on_idle(uv_idle_t *h)
{
    run_ready(h->data);
}

static void on_check(uv_check_t *h)
{
    run_ready(h->data);
}

void lahja_ready_push(struct lahja_task *t)
{
    struct lahja_rt *rt = t->rt;
    t->state = LAHJA_TASK_READY;
    lahja_list_push_back(&rt->ready, &t->ready);
    if (!uv_is_active((uv_handle_t *)&rt->idle))
        uv_idle_start(&rt->idle, on_idle);
}

/* ------------------------------------------------------ suspend/wake */

static void on_deadline(uv_timer_t *h)
{
    struct lahja_task *t = h->data;
    if (t->state == LAHJA_TASK_SUSPENDED && t->wake == LAHJA_WAKE_NONE) {
        t->wake = LAHJA_WAKE_TIMER;
        lahja_ready_push(t);
    }
}

int lahja_wait(lahja_link_t *waiters, lahja_time_t deadline, unsigned flags)
{
    struct lahja_task *t = lahja_tls_task;
    uv_loop_t *loop = t->rt->loop;
    int cancellable = !(flags & LAHJA_WAIT_NOCANCEL);
    int rc;

    for (;;) {
        lahja_time_t now = uv_now(loop);
        lahja_time_t eff = deadline;
        if (cancellable && (rc = lahja_scope_status(t->scope, now, &eff)) != 0)
            break;
        if (deadline <= now) {
            rc = LAHJA_WAIT_EXPIRED;
            break;
        }
        /* A scope deadline at or before now was turned into a
         * cancellation above, so eff > now here. */
        if (waiters != NULL && !lahja_link_linked(&t->wait))
            lahja_list_push_back(waiters, &t->wait);
        if (eff != LAHJA_FOREVER)
            uv_timer_start(&t->timer, on_deadline, eff - now, 0);
        t->wake = LAHJA_WAKE_NONE;
        t->cancellable = (uint8_t)cancellable;
        t->state = LAHJA_TASK_SUSPENDED;
        lahja_switch_to_sched(t, 0);
        if (eff != LAHJA_FOREVER)
            uv_timer_stop(&t->timer);
        if (t->wake == LAHJA_WAKE_RESULT) {
            t->wake = LAHJA_WAKE_NONE;
            return t->wake_result;
        }
        /* Timer or recheck: go round; still linked in `waiters`, so FIFO
         * order among waiters is kept. */
    }
    t->wake = LAHJA_WAKE_NONE;
    lahja_list_remove(&t->wait);
    return rc;
}

void lahja_wake(struct lahja_task *t, int result)
{
    assert(t->state == LAHJA_TASK_SUSPENDED || t->state == LAHJA_TASK_READY);
    lahja_list_remove(&t->wait);
    t->wake_result = result;
    if (t->wake == LAHJA_WAKE_NONE)
        lahja_ready_push(t); /* else it is queued already (timer, recheck) */
    t->wake = LAHJA_WAKE_RESULT;
}

struct lahja_task *lahja_wake_first(lahja_link_t *waiters, int result)
{
    if (lahja_list_empty(waiters))
        return NULL;
    struct lahja_task *t = lahja_container_of(waiters->next, struct lahja_task, wait);
    lahja_wake(t, result);
    return t;
}

void lahja_task_recheck(struct lahja_task *t)
{
    if (t->state == LAHJA_TASK_SUSPENDED && t->cancellable && t->wake == LAHJA_WAKE_NONE) {
        t->wake = LAHJA_WAKE_RECHECK;
        lahja_ready_push(t);
    }
}

int lahja_yield(void)
{
    struct lahja_task *t = lahja_tls_task;
    if (t == NULL)
        return -EPERM;
    int rc = lahja_scope_status(t->scope, uv_now(t->rt->loop), NULL);
    if (rc != 0)
        return rc;
    lahja_ready_push(t);
    lahja_switch_to_sched(t, 0);
    return 0;
}

int lahja_checkpoint(void)
{
    struct lahja_task *t = lahja_tls_task;
    if (t == NULL)
        return -EPERM;
    return lahja_scope_status(t->scope, uv_now(t->rt->loop), NULL);
}

/* -------------------------------------------------------------- time */

lahja_time_t lahja_now(void)
{
    struct lahja_rt *rt = lahja_tls_rt;
    if (rt == NULL)
        return 0;
    uv_update_time(rt->loop);
    return uv_now(rt->loop);
}

lahja_time_t lahja_deadline_in(uint64_t ms)
{
    lahja_time_t now = lahja_now();
    return ms >= LAHJA_FOREVER - now ? LAHJA_FOREVER : now + ms;
}

/* ----------------------------------------------------------- runtime */

int lahja_rt_new(uv_loop_t *loop, const lahja_rt_options_t *opts, lahja_rt_t **out)
{
    if (loop == NULL || out == NULL)
        return -EINVAL;
    lahja_forget_inherited();
    if (lahja_tls_rt != NULL)
        return -EBUSY;
    struct lahja_rt *rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        return -ENOMEM;
    rt->loop = loop;
    rt->thread = pthread_self();
    rt->pid = getpid();
    rt->stack_size = opts && opts->stack_size ? opts->stack_size : 256 * 1024;
    size_t page = lahja_page_size();
    rt->stack_size = (rt->stack_size + page - 1) & ~(page - 1);
    rt->pool_max = opts && opts->pool_size ? opts->pool_size : 64;
    lahja_list_init(&rt->ready);
    lahja_list_init(&rt->pool);
    lahja_scope_init(&rt->root, NULL, NULL, LAHJA_FOREVER, 0);
    uv_idle_init(loop, &rt->idle);
    rt->idle.data = rt;
    uv_check_init(loop, &rt->check);
    rt->check.data = rt;
    uv_check_start(&rt->check, on_check);
    uv_unref((uv_handle_t *)&rt->check); /* only tasks keep the loop alive */
    lahja_tls_rt = rt;
    *out = rt;
    return 0;
}

static void rt_maybe_free(struct lahja_rt *rt)
{
    if (rt->closing && rt->nclosing == 0 && rt->nobjects == 0)
        free(rt);
}

static void on_rt_handle_closed(uv_handle_t *h)
{
    struct lahja_rt *rt = h->data;
    rt->nclosing--;
    rt_maybe_free(rt);
}

void lahja_rt_object_freed(struct lahja_rt *rt)
{
    rt_maybe_free(rt);
}

int lahja_rt_close(lahja_rt_t *rt)
{
    if (rt == NULL)
        return 0;
    if (lahja_rt_wrong_thread(rt))
        return LAHJA_EWRONGTHREAD;
    if (rt->closing)
        return LAHJA_ELIFECYCLE;
    if (rt->nobjects != rt->npool)
        return -EBUSY;
    rt->closing = 1;
    if (lahja_tls_rt == rt)
        lahja_tls_rt = NULL;
    rt->nclosing += 2;
    uv_close((uv_handle_t *)&rt->idle, on_rt_handle_closed);
    uv_close((uv_handle_t *)&rt->check, on_rt_handle_closed);
    lahja_task_pool_drain(rt);
    return 0;
}

void lahja_rt_cancel(lahja_rt_t *rt)
{
    lahja_scope_cancel_as(&rt->root, 0);
}

uv_loop_t *lahja_rt_loop(const lahja_rt_t *rt)
{
    return rt->loop;
}

lahja_rt_t *lahja_rt_current(void)
{
    return lahja_tls_rt;
}

size_t lahja_rt_ntasks(const lahja_rt_t *rt)
{
    return rt->ntasks;
}
