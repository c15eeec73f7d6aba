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

/*
 * A child of fork() inherits its thread's runtime in TLS, but must not
 * use it: the loop's epoll fd and sockets are shared with the parent.
 * The child handler forgets it, leaking its memory (closing it would
 * close kernel objects the parent still uses), so that in the child
 * lahja_rt_current() is NULL, lahja_endpoint_new() finds no runtime
 * instead of the parent's, and lahja_rt_new() can make a new one.  The
 * pid check of lahja_forget_inherited stays for a child made without
 * the atfork handlers running (a raw clone()).
 */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void forget_in_child(void)
{
    lahja_tls_rt = NULL;
    lahja_tls_task = NULL;
}

static void register_atfork(void)
{
    /* Can fail only with ENOMEM; the pid check then still covers
     * lahja_rt_new and lahja_run. */
    (void)pthread_atfork(NULL, NULL, forget_in_child);
}

void lahja_forget_inherited(void)
{
    if (lahja_tls_rt != NULL && lahja_tls_rt->pid != getpid()) {
        lahja_tls_rt = NULL;
        lahja_tls_task = NULL;
    }
}

int lahja_rt_wrong_thread(const struct lahja_rt *rt)
{
    /* The owner thread has it in its TLS: the common case costs no call. */
    return rt != lahja_tls_rt && !pthread_equal(rt->thread, pthread_self());
}

/* -------------------------------------------------------- switching */

/*
 * A suspending task switches straight to the next ready task when there
 * is one, and to the scheduler (the loop's stack) only when none is ready
 * or the pass's budget is spent: half the switches of going through the
 * scheduler every time.  A finished task cannot release its own stack
 * while running on it, so it leaves itself in rt->dead, and whoever runs
 * next drops its runner reference (reap_dead).
 *
 * AddressSanitizer must be told of every stack change: the side leaving
 * names the stack it goes to, the side arriving confirms.  The loop
 * stack's bounds are learnt when a task is entered from the scheduler
 * (rt->from_sched tells the arriving side that this was the case).
 */

static void reap_dead(struct lahja_rt *rt)
{
    struct lahja_task *d = rt->dead;
    if (d != NULL) {
        rt->dead = NULL;
        lahja_task_unref(d);
    }
}

static void asan_leave(struct lahja_task *t, int dying, const void *lo, size_t size)
{
#ifdef LAHJA_ASAN
    __sanitizer_start_switch_fiber(dying ? NULL : &t->asan_fake, lo, size);
#endif
    (void)t, (void)dying, (void)lo, (void)size;
}

/* On arrival on a task's stack; `fake` is what it saved when leaving. */
static void asan_arrive(struct lahja_rt *rt, void *fake)
{
#ifdef LAHJA_ASAN
    const void *lo;
    size_t size;
    __sanitizer_finish_switch_fiber(fake, &lo, &size);
    if (rt->from_sched) {
        rt->main_lo = lo;
        rt->main_size = size;
    }
#endif
    (void)fake;
    rt->from_sched = 0;
}

/* The scheduler's side: runs `t` until some task switches back here. */
static void switch_to_task(struct lahja_rt *rt, struct lahja_task *t)
{
#ifdef LAHJA_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, t->stack.lo, t->stack.size);
#endif
    rt->from_sched = 1;
    lahja_ctx_switch(&rt->sched_ctx, &t->ctx);
#ifdef LAHJA_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

/* Pops the next ready task within the pass's budget, or NULL. */
static struct lahja_task *next_ready(struct lahja_rt *rt)
{
    if (rt->budget == 0)
        return NULL;
    lahja_link_t *l = lahja_list_pop_front(&rt->ready);
    if (l == NULL)
        return NULL;
    rt->budget--;
    struct lahja_task *t = lahja_container_of(l, struct lahja_task, ready);
    t->state = LAHJA_TASK_RUNNING;
    return t;
}

void lahja_switch_away(struct lahja_task *t, int dying)
{
    struct lahja_rt *rt = t->rt;
    struct lahja_task *next = rt->in_sched ? next_ready(rt) : NULL;
    if (next == t)
        return; /* a yield with nothing else ready */
    if (dying)
        rt->dead = t;
    if (next != NULL) {
        lahja_tls_task = next;
        asan_leave(t, dying, next->stack.lo, next->stack.size);
        lahja_ctx_switch(&t->ctx, &next->ctx);
    } else {
        lahja_tls_task = NULL;
#ifdef LAHJA_ASAN
        asan_leave(t, dying, rt->main_lo, rt->main_size);
#endif
        lahja_ctx_switch(&t->ctx, &rt->sched_ctx);
    }
#ifdef LAHJA_ASAN
    asan_arrive(rt, t->asan_fake);
#else
    rt->from_sched = 0;
#endif
    reap_dead(rt);
}

void lahja_task_started(struct lahja_task *t)
{
    asan_arrive(t->rt, NULL);
    reap_dead(t->rt);
}

/* -------------------------------------------------------- scheduling */

static void run_ready(struct lahja_rt *rt)
{
    if (rt->in_sched || lahja_tls_task != NULL)
        return;
    rt->in_sched = 1;
    rt->budget = SCHED_BUDGET;
    struct lahja_task *t;
    while ((t = next_ready(rt)) != NULL) {
        lahja_tls_task = t;
        switch_to_task(rt, t);
        lahja_tls_task = NULL;
        reap_dead(rt);
    }
    rt->in_sched = 0;
    if (lahja_list_empty(&rt->ready)) {
        uv_idle_stop(&rt->idle);
        rt->idle_on = 0;
    }
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
    if (!rt->idle_on) {
        uv_idle_start(&rt->idle, on_idle);
        rt->idle_on = 1;
    }
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

/*
 * Arms t's timer for a wait until eff.  Starting and stopping a libuv
 * timer costs two heap operations among all of the loop's timers, and a
 * task typically waits again soon with a deadline no earlier: so the
 * timer is left armed after a wait, only unreferenced (it does not keep
 * the loop alive, and a runtime whose tasks all wait on nothing still
 * ends, LAHJA_EDEADLOCK), and kept by the next wait if it fires no
 * later than that wait's deadline.  Firing early only wakes the task to
 * arm it again (LAHJA_WAKE_TIMER: the wait goes round).
 */
static void arm_deadline(struct lahja_task *t, lahja_time_t eff, lahja_time_t now)
{
    if (!uv_is_active((uv_handle_t *)&t->timer) || t->timer_due > eff) {
        uv_timer_start(&t->timer, on_deadline, eff - now, 0);
        t->timer_due = eff;
    }
    uv_ref((uv_handle_t *)&t->timer);
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
            arm_deadline(t, eff, now);
        t->wake = LAHJA_WAKE_NONE;
        t->cancellable = (uint8_t)cancellable;
        t->state = LAHJA_TASK_SUSPENDED;
        lahja_switch_away(t, 0);
        if (eff != LAHJA_FOREVER)
            uv_unref((uv_handle_t *)&t->timer);
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
        return LAHJA_ENOTASK;
    int rc = lahja_scope_status(t->scope, uv_now(t->rt->loop), NULL);
    if (rc != 0)
        return rc;
    lahja_ready_push(t);
    lahja_switch_away(t, 0);
    /* Cancelled while queued: the call it was in reports it. */
    return lahja_scope_status(t->scope, uv_now(t->rt->loop), NULL);
}

int lahja_checkpoint(void)
{
    struct lahja_task *t = lahja_tls_task;
    if (t == NULL)
        return LAHJA_ENOTASK;
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
    pthread_once(&atfork_once, register_atfork);
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
    lahja_list_init(&rt->objects);
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
    if (rt->closing && rt->nclosing == 0 && rt->nobjects == 0) {
        void *b;
        while ((b = rt->blocks) != NULL) {
            rt->blocks = *(void **)b;
            free(b);
        }
        free(rt);
    }
}

void *lahja_block_get(void)
{
    struct lahja_rt *rt = lahja_tls_rt;
    if (rt == NULL || rt->blocks == NULL)
        return malloc(LAHJA_BLOCK_SIZE);
    void *b = rt->blocks;
    rt->blocks = *(void **)b;
    rt->nblocks--;
    return b;
}

void lahja_block_put(void *block)
{
    struct lahja_rt *rt = lahja_tls_rt;
    if (rt == NULL || rt->closing || rt->nblocks >= LAHJA_BLOCKS_MAX) {
        free(block);
        return;
    }
    *(void **)block = rt->blocks;
    rt->blocks = block;
    rt->nblocks++;
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
