/*
 * Latches (one-shot events), conditions, sleep, and how every blocking primitive
 * ends on cancellation, on its own deadline and on a scope's deadline
 * (S2, S3).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <lahja/lahja.h>

#include "runtime/rt.h"
#include "support_sync.h"

/* ------------------------------------------------------------- events */

/* Non-zero if a primitive's list of waiting tasks is empty. */
static int waiters_empty(const struct lahja__link *head)
{
    return head->next == head && head->prev == head;
}

struct ev_waiters {
    lahja_latch_t ev;
    counter_t waiting;
    int rc[3];
};

static int ev_waiter(void *arg)
{
    struct ev_waiters *w = arg;
    int id = w->waiting.n;
    counter_bump(&w->waiting);
    w->rc[id] = lahja_latch_wait(&w->ev, LAHJA_FOREVER);
    return 0;
}

/* Starts `n` waiters in a nursery and returns once all are blocked. */
static lahja_nursery_t *start_ev_waiters(struct ev_waiters *w, int n)
{
    lahja_nursery_t *nur;
    assert_int_equal(lahja_nursery_open(&nur), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(lahja_nursery_spawn(nur, ev_waiter, w, NULL, NULL), 0);
    assert_int_equal(counter_wait(&w->waiting, n), 0);
    return nur;
}

static void ev_waiters_init(struct ev_waiters *w)
{
    lahja_latch_init(&w->ev);
    counter_init(&w->waiting);
    for (int i = 0; i < 3; i++)
        w->rc[i] = 1; /* not yet returned */
}

static int main_event_wait_before_set(void *arg)
{
    (void)arg;
    struct ev_waiters w;
    ev_waiters_init(&w);
    lahja_nursery_t *nur = start_ev_waiters(&w, 1);
    /* The waiter is blocked: nothing returned yet. */
    assert_int_equal(w.rc[0], 1);
    assert_false(lahja_latch_is_set(&w.ev));
    assert_int_equal(lahja_latch_set(&w.ev), 0);
    assert_int_equal(lahja_nursery_close(nur), 0);
    assert_int_equal(w.rc[0], 0);
    return 0;
}

static void test_event_wait_before_set(void **state)
{
    (void)state;
    RUN_MAIN(main_event_wait_before_set, NULL);
}

static int main_event_wait_after_set(void *arg)
{
    (void)arg;
    lahja_latch_t ev;
    lahja_latch_init(&ev);
    assert_int_equal(lahja_latch_set(&ev), 0);
    assert_true(lahja_latch_is_set(&ev));
    assert_int_equal(lahja_latch_wait(&ev, LAHJA_FOREVER), 0);
    /* It stays set: later waits, and setting again, change nothing. */
    assert_int_equal(lahja_latch_wait(&ev, LAHJA_FOREVER), 0);
    assert_int_equal(lahja_latch_set(&ev), 0);
    assert_true(lahja_latch_is_set(&ev));
    assert_int_equal(lahja_latch_wait(&ev, lahja_deadline_in(SHORT_MS)), 0);
    return 0;
}

static void test_event_wait_after_set_stays_set(void **state)
{
    (void)state;
    RUN_MAIN(main_event_wait_after_set, NULL);
}

static int main_event_set_wakes_all(void *arg)
{
    (void)arg;
    struct ev_waiters w;
    ev_waiters_init(&w);
    lahja_nursery_t *nur = start_ev_waiters(&w, 3);
    assert_int_equal(lahja_latch_set(&w.ev), 0);
    assert_int_equal(lahja_nursery_close(nur), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(w.rc[i], 0);
    return 0;
}

static void test_event_set_wakes_all_waiters(void **state)
{
    (void)state;
    RUN_MAIN(main_event_set_wakes_all, NULL);
}

static int main_event_set_cancelled(void *arg)
{
    (void)arg;
    lahja_latch_t ev;
    lahja_latch_init(&ev);
    lahja_latch_set(&ev);
    lahja_scope_t *s;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), 0);
    lahja_scope_cancel(s);
    /* Waiting on a set event is still a checkpoint. */
    assert_int_equal(lahja_latch_wait(&ev, LAHJA_FOREVER), -ECANCELED);
    assert_int_equal(lahja_scope_close(s), -ECANCELED);
    return 0;
}

static int main_event_past_deadline(void *arg)
{
    (void)arg;
    lahja_latch_t ev;
    lahja_latch_init(&ev);
    lahja_time_t t0 = lahja_now();
    assert_int_equal(lahja_latch_wait(&ev, 0), -ETIMEDOUT);
    assert_int_equal(lahja_latch_wait(&ev, t0), -ETIMEDOUT);
    assert_true(elapsed_since(t0) < 1000);
    assert_true(waiters_empty(&ev.waiters));
    return 0;
}

static void test_event_wait_past_deadline_times_out_at_once(void **state)
{
    (void)state;
    RUN_MAIN(main_event_past_deadline, NULL);
}

static void test_event_wait_on_set_event_is_checkpoint(void **state)
{
    (void)state;
    RUN_MAIN(main_event_set_cancelled, NULL);
}

static void set_event_cb(uv_timer_t *h)
{
    lahja_latch_set(h->data);
}

static int main_event_set_from_callback(void *arg)
{
    (void)arg;
    lahja_latch_t ev;
    lahja_latch_init(&ev);
    uv_timer_t timer;
    uv_timer_init(lahja_rt_loop(lahja_rt_current()), &timer);
    timer.data = &ev;
    uv_timer_start(&timer, set_event_cb, 1, 0);
    int rc = lahja_latch_wait(&ev, LAHJA_FOREVER);
    lahja_uv_close((uv_handle_t *)&timer);
    assert_int_equal(rc, 0);
    return 0;
}

static void test_event_set_from_libuv_callback(void **state)
{
    (void)state;
    RUN_MAIN(main_event_set_from_callback, NULL);
}

/* Results of waking calls made from a thread that has no runtime. */
struct foreign {
    lahja_latch_t ev;
    lahja_cond_t cond;
    int ev_rc, signal_rc, broadcast_rc;
};

static void foreign_thread(void *arg)
{
    struct foreign *f = arg;
    f->ev_rc = lahja_latch_set(&f->ev);
    f->signal_rc = lahja_cond_signal(&f->cond);
    f->broadcast_rc = lahja_cond_broadcast(&f->cond);
}

static void test_wakers_refuse_other_threads(void **state)
{
    (void)state;
    struct foreign f;
    lahja_latch_init(&f.ev);
    lahja_cond_init(&f.cond);
    uv_thread_t th;
    assert_int_equal(uv_thread_create(&th, foreign_thread, &f), 0);
    assert_int_equal(uv_thread_join(&th), 0);
    assert_int_equal(f.ev_rc, LAHJA_EWRONGTHREAD);
    assert_int_equal(f.signal_rc, LAHJA_EWRONGTHREAD);
    assert_int_equal(f.broadcast_rc, LAHJA_EWRONGTHREAD);
    assert_false(lahja_latch_is_set(&f.ev));
}

/* --------------------------------------------------------- conditions */

struct cond_waiters {
    lahja_cond_t cond;
    counter_t waiting;  /* bumped right before each waiter suspends */
    counter_t woken;
    int order[4];       /* ids in the order they started waiting */
    int log[4];         /* ids in the order they woke, nlog of them */
    int nlog;
    int rc[4];
    lahja_time_t deadline[4];
    lahja_scope_t *scope; /* opened by a scoped waiter */
};

struct cond_waiter_arg {
    struct cond_waiters *w;
    int id;
};

static int cond_waiter(void *arg)
{
    struct cond_waiter_arg *a = arg;
    struct cond_waiters *w = a->w;
    w->order[w->waiting.n] = a->id;
    counter_bump(&w->waiting);
    w->rc[a->id] = lahja_cond_wait(&w->cond, w->deadline[a->id]);
    if (w->rc[a->id] == 0)
        w->log[w->nlog++] = a->id;
    counter_bump(&w->woken);
    return 0;
}

static void cond_waiters_init(struct cond_waiters *w)
{
    lahja_cond_init(&w->cond);
    counter_init(&w->waiting);
    counter_init(&w->woken);
    w->nlog = 0;
    for (int i = 0; i < 4; i++) {
        w->order[i] = w->log[i] = -1;
        w->rc[i] = 1;
        w->deadline[i] = LAHJA_FOREVER;
    }
}

static lahja_nursery_t *start_cond_waiters(struct cond_waiters *w,
                                           struct cond_waiter_arg *args, int n)
{
    lahja_nursery_t *nur;
    assert_int_equal(lahja_nursery_open(&nur), 0);
    for (int i = 0; i < n; i++) {
        args[i].w = w;
        args[i].id = i;
        assert_int_equal(lahja_nursery_spawn(nur, cond_waiter, &args[i], NULL, NULL), 0);
    }
    assert_int_equal(counter_wait(&w->waiting, n), 0);
    return nur;
}

static int main_cond_signal_fifo(void *arg)
{
    (void)arg;
    struct cond_waiters w;
    struct cond_waiter_arg args[3];
    cond_waiters_init(&w);
    lahja_nursery_t *nur = start_cond_waiters(&w, args, 3);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(lahja_cond_signal(&w.cond), 0);
        assert_int_equal(counter_wait(&w.woken, k + 1), 0);
        /* Give any task woken by mistake the chance to run too. */
        assert_int_equal(lahja_yield(), 0);
        assert_int_equal(w.nlog, k + 1);
        assert_int_equal(w.log[k], w.order[k]);
    }
    assert_int_equal(lahja_nursery_close(nur), 0);
    return 0;
}

static void test_cond_signal_wakes_longest_waiter(void **state)
{
    (void)state;
    RUN_MAIN(main_cond_signal_fifo, NULL);
}

static int main_cond_broadcast(void *arg)
{
    (void)arg;
    struct cond_waiters w;
    struct cond_waiter_arg args[3];
    cond_waiters_init(&w);
    lahja_nursery_t *nur = start_cond_waiters(&w, args, 3);
    assert_int_equal(lahja_cond_broadcast(&w.cond), 0);
    assert_int_equal(lahja_nursery_close(nur), 0);
    assert_int_equal(w.nlog, 3);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(w.rc[k], 0);
        assert_int_equal(w.log[k], w.order[k]);
    }
    return 0;
}

static void test_cond_broadcast_wakes_all(void **state)
{
    (void)state;
    RUN_MAIN(main_cond_broadcast, NULL);
}

static int main_cond_signal_not_remembered(void *arg)
{
    (void)arg;
    lahja_cond_t c;
    lahja_cond_init(&c);
    assert_int_equal(lahja_cond_signal(&c), 0);
    assert_int_equal(lahja_cond_broadcast(&c), 0);
    assert_int_equal(lahja_cond_wait(&c, lahja_deadline_in(SHORT_MS)), -ETIMEDOUT);
    return 0;
}

static void test_cond_signal_without_waiter_is_lost(void **state)
{
    (void)state;
    RUN_MAIN(main_cond_signal_not_remembered, NULL);
}

static int main_cond_timed_out_waiter_leaves(void *arg)
{
    (void)arg;
    struct cond_waiters w;
    struct cond_waiter_arg args[2];
    cond_waiters_init(&w);
    w.deadline[0] = lahja_deadline_in(SHORT_MS);
    lahja_nursery_t *nur = start_cond_waiters(&w, args, 2);
    assert_int_equal(w.order[0], 0); /* the one with the deadline waits first */
    assert_int_equal(counter_wait(&w.woken, 1), 0);
    assert_int_equal(w.rc[0], -ETIMEDOUT);
    /* The signal goes to the remaining waiter, not to the one that left. */
    assert_int_equal(lahja_cond_signal(&w.cond), 0);
    assert_int_equal(lahja_nursery_close(nur), 0);
    assert_int_equal(w.rc[1], 0);
    assert_int_equal(w.nlog, 1);
    assert_int_equal(w.log[0], 1);
    return 0;
}

static void test_cond_timed_out_waiter_leaves_queue(void **state)
{
    (void)state;
    RUN_MAIN(main_cond_timed_out_waiter_leaves, NULL);
}

/* The first waiter waits inside a scope of its own, whose deadline the
 * main task moves while it waits: it re-evaluates, and must keep its
 * place at the head of the queue. */
static int scoped_cond_waiter(void *arg)
{
    struct cond_waiter_arg *a = arg;
    int rc = lahja_scope_open(LAHJA_FOREVER, 0, &a->w->scope);
    if (rc != 0)
        return rc;
    rc = cond_waiter(arg);
    lahja_scope_close(a->w->scope);
    return rc;
}

static int main_cond_fifo_across_recheck(void *arg)
{
    (void)arg;
    struct cond_waiters w;
    struct cond_waiter_arg args[3];
    cond_waiters_init(&w);
    lahja_nursery_t *nur;
    lahja_task_t *first;
    assert_int_equal(lahja_nursery_open(&nur), 0);
    for (int i = 0; i < 3; i++) {
        args[i] = (struct cond_waiter_arg){ &w, i };
        lahja_task_fn fn = i == 0 ? scoped_cond_waiter : cond_waiter;
        assert_int_equal(lahja_nursery_spawn(nur, fn, &args[i], NULL, i == 0 ? &first : NULL), 0);
    }
    assert_int_equal(counter_wait(&w.waiting, 3), 0);
    assert_int_equal(w.order[0], 0);
    /* A later deadline: no timeout, but the waiter re-arms its timer. */
    lahja_scope_set_deadline(w.scope, lahja_deadline_in(60 * 1000));
    while (!uv_is_active((uv_handle_t *)&first->timer))
        assert_int_equal(lahja_yield(), 0);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(lahja_cond_signal(&w.cond), 0);
        assert_int_equal(counter_wait(&w.woken, k + 1), 0);
        assert_int_equal(w.log[k], w.order[k]);
    }
    assert_int_equal(lahja_nursery_close(nur), 0);
    return 0;
}

static void test_cond_fifo_kept_across_recheck(void **state)
{
    (void)state;
    RUN_MAIN(main_cond_fifo_across_recheck, NULL);
}

/* -------------------------------------------------------------- sleep */

static int main_sleep_not_before(void *arg)
{
    (void)arg;
    lahja_time_t t0 = lahja_now();
    assert_int_equal(lahja_sleep(SHORT_MS), 0);
    assert_true(lahja_now() >= t0 + SHORT_MS);
    lahja_time_t until = lahja_now() + SHORT_MS;
    assert_int_equal(lahja_sleep_until(until), 0);
    assert_true(lahja_now() >= until);
    return 0;
}

static void test_sleep_returns_at_deadline_not_before(void **state)
{
    (void)state;
    RUN_MAIN(main_sleep_not_before, NULL);
}

static int main_sleep_past(void *arg)
{
    (void)arg;
    lahja_time_t t0 = lahja_now();
    assert_int_equal(lahja_sleep_until(0), 0);
    assert_int_equal(lahja_sleep_until(t0), 0);
    assert_int_equal(lahja_sleep(0), 0);
    /* "At once": far less than any sleep would take on a loaded machine. */
    assert_true(elapsed_since(t0) < 1000);
    return 0;
}

static void test_sleep_until_past_deadline_returns_at_once(void **state)
{
    (void)state;
    RUN_MAIN(main_sleep_past, NULL);
}

static int main_sleep_past_cancelled(void *arg)
{
    (void)arg;
    lahja_scope_t *s;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), 0);
    lahja_scope_cancel(s);
    /* A checkpoint: cancellation wins over a deadline already passed. */
    assert_int_equal(lahja_sleep_until(0), -ECANCELED);
    assert_int_equal(lahja_sleep(0), -ECANCELED);
    assert_int_equal(lahja_scope_close(s), -ECANCELED);
    return 0;
}

static void test_sleep_past_deadline_while_cancelled(void **state)
{
    (void)state;
    RUN_MAIN(main_sleep_past_cancelled, NULL);
}

struct sleepers {
    int log[3];
    int n;
};

struct sleeper_arg {
    struct sleepers *s;
    uint64_t ms;
};

static int sleeper(void *arg)
{
    struct sleeper_arg *a = arg;
    int rc = lahja_sleep(a->ms);
    a->s->log[a->s->n++] = (int)a->ms;
    return rc;
}

static int main_sleepers_in_order(void *arg)
{
    struct sleepers *s = arg;
    struct sleeper_arg args[3] = { { s, 3 * SHORT_MS }, { s, SHORT_MS }, { s, 2 * SHORT_MS } };
    lahja_nursery_t *nur;
    assert_int_equal(lahja_nursery_open(&nur), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(lahja_nursery_spawn(nur, sleeper, &args[i], NULL, NULL), 0);
    return lahja_nursery_close(nur);
}

static void test_sleepers_wake_in_deadline_order(void **state)
{
    (void)state;
    struct sleepers s = { { 0 }, 0 };
    RUN_MAIN(main_sleepers_in_order, &s);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.log[0], SHORT_MS);
    assert_int_equal(s.log[1], 2 * SHORT_MS);
    assert_int_equal(s.log[2], 3 * SHORT_MS);
}

static void set_flag_cb(uv_timer_t *h)
{
    *(int *)h->data = 1;
}

static int main_yield_does_not_starve_timers(void *arg)
{
    (void)arg;
    int fired = 0;
    uv_timer_t timer;
    uv_timer_init(lahja_rt_loop(lahja_rt_current()), &timer);
    timer.data = &fired;
    uv_timer_start(&timer, set_flag_cb, 1, 0);
    /* Only yields, never sleeps: the loop must still run its timers.
     * The bound keeps a broken runtime from spinning forever. */
    long spins = 0;
    while (!fired && spins < 10L * 1000 * 1000) {
        assert_int_equal(lahja_yield(), 0);
        spins++;
    }
    lahja_uv_close((uv_handle_t *)&timer);
    assert_true(fired);
    return 0;
}

static void test_yielding_task_does_not_starve_timers(void **state)
{
    (void)state;
    RUN_MAIN(main_yield_does_not_starve_timers, NULL);
}

/* ------------------------------------- every primitive, three endings */

enum how { BY_CANCEL, BY_CALL_DEADLINE, BY_SCOPE_DEADLINE };

/* What a blocking primitive needs: set up in the main task, blocked in
 * by a runner task. */
struct prim_ctx {
    lahja_latch_t ev;
    lahja_cond_t cond;
    lahja_queue_t *q;
    lahja_completion_t comp;
    lahja_task_t *joinee;
    lahja_latch_t release; /* ends the joinee */
};

struct prim {
    const char *name;
    void (*setup)(struct prim_ctx *);
    int (*block)(struct prim_ctx *, lahja_time_t deadline);
    /* After the blocked call returned: the primitive holds no trace of
     * the waiter, then is released. */
    void (*check)(struct prim_ctx *);
    /* What the call returns when its own deadline passes. */
    int own_deadline_rc;
};

static void setup_none(struct prim_ctx *c)
{
    (void)c;
}

static void check_none(struct prim_ctx *c)
{
    (void)c;
}

static int block_sleep(struct prim_ctx *c, lahja_time_t deadline)
{
    (void)c;
    return lahja_sleep_until(deadline);
}

static void setup_event(struct prim_ctx *c)
{
    lahja_latch_init(&c->ev);
}

static int block_event(struct prim_ctx *c, lahja_time_t deadline)
{
    return lahja_latch_wait(&c->ev, deadline);
}

static void check_event(struct prim_ctx *c)
{
    assert_true(waiters_empty(&c->ev.waiters));
    assert_false(lahja_latch_is_set(&c->ev));
}

static void setup_cond(struct prim_ctx *c)
{
    lahja_cond_init(&c->cond);
}

static int block_cond(struct prim_ctx *c, lahja_time_t deadline)
{
    return lahja_cond_wait(&c->cond, deadline);
}

static void check_cond(struct prim_ctx *c)
{
    assert_true(waiters_empty(&c->cond.waiters));
}

static void setup_queue_full(struct prim_ctx *c)
{
    assert_int_equal(lahja_queue_new(1, &c->q), 0);
    assert_int_equal(lahja_queue_try_send(c->q, ITEM(1)), 0);
}

static int block_send(struct prim_ctx *c, lahja_time_t deadline)
{
    return lahja_queue_send(c->q, ITEM(2), deadline);
}

static void check_send(struct prim_ctx *c)
{
    /* The sender's item was not queued: only the first one is there. */
    void *item = NULL;
    assert_int_equal(lahja_queue_len(c->q), 1);
    assert_int_equal(lahja_queue_try_recv(c->q, &item), 0);
    assert_int_equal(ITEM_VAL(item), 1);
    assert_int_equal(lahja_queue_try_recv(c->q, &item), -EAGAIN);
    lahja_queue_free(c->q);
}

static void setup_queue_empty(struct prim_ctx *c)
{
    assert_int_equal(lahja_queue_new(1, &c->q), 0);
}

static int block_recv(struct prim_ctx *c, lahja_time_t deadline)
{
    void *item = NULL;
    return lahja_queue_recv(c->q, &item, deadline);
}

static void check_recv(struct prim_ctx *c)
{
    /* No receiver is left to take a hand-off: the item gets queued. */
    void *item = NULL;
    assert_int_equal(lahja_queue_try_send(c->q, ITEM(3)), 0);
    assert_int_equal(lahja_queue_len(c->q), 1);
    assert_int_equal(lahja_queue_try_recv(c->q, &item), 0);
    assert_int_equal(ITEM_VAL(item), 3);
    lahja_queue_free(c->q);
}

static int joinee(void *arg)
{
    struct prim_ctx *c = arg;
    return lahja_latch_wait(&c->release, LAHJA_FOREVER) == 0 ? 7 : -1;
}

static void setup_join(struct prim_ctx *c)
{
    lahja_latch_init(&c->release);
    assert_int_equal(lahja_spawn(lahja_rt_current(), joinee, c, NULL, &c->joinee), 0);
}

static int block_join(struct prim_ctx *c, lahja_time_t deadline)
{
    int result = 0;
    return lahja_task_join(c->joinee, deadline, &result);
}

static void check_join(struct prim_ctx *c)
{
    /* The failed join left the handle valid: it can be joined now. */
    assert_false(lahja_task_done(c->joinee));
    assert_true(waiters_empty(&c->joinee->joiners));
    lahja_latch_set(&c->release);
    int result = 0;
    assert_int_equal(lahja_task_join(c->joinee, LAHJA_FOREVER, &result), 0);
    assert_int_equal(result, 7);
}

static void setup_completion(struct prim_ctx *c)
{
    lahja_completion_init(&c->comp);
}

static int block_completion(struct prim_ctx *c, lahja_time_t deadline)
{
    return lahja_completion_wait(&c->comp, deadline);
}

static void check_completion(struct prim_ctx *c)
{
    /* Still pending, and no waiter left to wake. */
    assert_null(c->comp.task);
    assert_int_equal(c->comp.done, 0);
    lahja_complete(&c->comp, 5);
    assert_int_equal(lahja_completion_wait(&c->comp, LAHJA_FOREVER), 5);
}

static const struct prim prims[] = {
    /* A sleep reaching its own deadline has done what it was asked. */
    { "sleep", setup_none, block_sleep, check_none, 0 },
    { "event_wait", setup_event, block_event, check_event, -ETIMEDOUT },
    { "cond_wait", setup_cond, block_cond, check_cond, -ETIMEDOUT },
    { "queue_send_full", setup_queue_full, block_send, check_send, -ETIMEDOUT },
    { "queue_recv_empty", setup_queue_empty, block_recv, check_recv, -ETIMEDOUT },
    { "task_join", setup_join, block_join, check_join, -ETIMEDOUT },
    { "completion_wait", setup_completion, block_completion, check_completion, -ETIMEDOUT },
};
#define NPRIMS (sizeof prims / sizeof prims[0])

struct prim_case {
    const struct prim *p;
    enum how how;
    char name[64];
};

struct runner {
    const struct prim_case *pc;
    struct prim_ctx ctx;
    lahja_latch_t blocking; /* set right before the runner blocks */
    lahja_time_t start, end;
    int rc, scope_rc;
};

static int runner(void *arg)
{
    struct runner *r = arg;
    lahja_scope_t *s = NULL;
    lahja_time_t deadline = LAHJA_FOREVER;
    r->start = lahja_now();
    if (r->pc->how == BY_CALL_DEADLINE)
        deadline = r->start + SHORT_MS;
    if (r->pc->how == BY_SCOPE_DEADLINE && lahja_scope_open(r->start + SHORT_MS, 0, &s) != 0)
        return -ENOMEM;
    lahja_latch_set(&r->blocking);
    r->rc = r->pc->p->block(&r->ctx, deadline);
    r->end = lahja_now();
    if (s != NULL)
        r->scope_rc = lahja_scope_close(s);
    return 0;
}

static int main_blocked(void *arg)
{
    struct runner *r = arg;
    r->pc->p->setup(&r->ctx);
    lahja_latch_init(&r->blocking);
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), runner, r, NULL, &t), 0);
    assert_int_equal(lahja_latch_wait(&r->blocking, LAHJA_FOREVER), 0);
    /* The runner set the event and then suspended in the primitive. */
    assert_false(lahja_task_done(t));
    if (r->pc->how == BY_CANCEL)
        lahja_task_cancel(t);
    int result = -1;
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, &result), 0);
    assert_int_equal(result, 0);
    r->pc->p->check(&r->ctx);
    return 0;
}

static void test_blocked_primitive(void **state)
{
    const struct prim_case *pc = *state;
    struct runner r = { .pc = pc, .rc = 1, .scope_rc = 1 };
    RUN_MAIN(main_blocked, &r);
    switch (pc->how) {
    case BY_CANCEL:
        assert_int_equal(r.rc, -ECANCELED);
        break;
    case BY_CALL_DEADLINE:
        assert_int_equal(r.rc, pc->p->own_deadline_rc);
        assert_true(r.end - r.start >= SHORT_MS);
        break;
    case BY_SCOPE_DEADLINE:
        assert_int_equal(r.rc, -ETIMEDOUT);
        assert_int_equal(r.scope_rc, -ETIMEDOUT);
        assert_true(r.end - r.start >= SHORT_MS);
        break;
    }
}

/* ---------------------------------------------------------------- main */

static const struct CMUnitTest fixed_tests[] = {
    TEST(test_event_wait_before_set),
    TEST(test_event_wait_after_set_stays_set),
    TEST(test_event_set_wakes_all_waiters),
    TEST(test_event_wait_past_deadline_times_out_at_once),
    TEST(test_event_wait_on_set_event_is_checkpoint),
    TEST(test_event_set_from_libuv_callback),
    TEST(test_wakers_refuse_other_threads),
    TEST(test_cond_signal_wakes_longest_waiter),
    TEST(test_cond_broadcast_wakes_all),
    TEST(test_cond_signal_without_waiter_is_lost),
    TEST(test_cond_timed_out_waiter_leaves_queue),
    TEST(test_cond_fifo_kept_across_recheck),
    TEST(test_sleep_returns_at_deadline_not_before),
    TEST(test_sleep_until_past_deadline_returns_at_once),
    TEST(test_sleep_past_deadline_while_cancelled),
    TEST(test_sleepers_wake_in_deadline_order),
    TEST(test_yielding_task_does_not_starve_timers),
};
#define NFIXED (sizeof fixed_tests / sizeof fixed_tests[0])
#define NCASES (NPRIMS * 3)

int main(void)
{
    static const char *const how_names[] = { "cancelled", "call_deadline", "scope_deadline" };
    static struct prim_case cases[NCASES];
    static struct CMUnitTest tests[NFIXED + NCASES];

    for (size_t i = 0; i < NFIXED; i++)
        tests[i] = fixed_tests[i];
    for (size_t i = 0; i < NCASES; i++) {
        struct prim_case *pc = &cases[i];
        pc->p = &prims[i / 3];
        pc->how = (enum how)(i % 3);
        snprintf(pc->name, sizeof pc->name, "blocked_in_%s_%s", pc->p->name, how_names[i % 3]);
        tests[NFIXED + i] = (struct CMUnitTest){
            .name = pc->name,
            .test_func = test_blocked_primitive,
            .setup_func = no_runtime_left,
            .initial_state = pc,
        };
    }
    return _cmocka_run_group_tests("test_sync", tests, NFIXED + NCASES, NULL, NULL);
}
