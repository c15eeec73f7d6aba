/*
 * Tasks: spawn, join, detach, cancel, names, the current task, yield
 * order, checkpoints, runtimes hosted on a caller's loop, calls from
 * other threads, many tasks alive at once, and error names.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "support_task.h"

/* ------------------------------------------------------ task bodies */

/* Records that it ran and returns a chosen code. */
struct code_arg {
    int code;
    int ran;
};

static int run_and_return(void *arg)
{
    struct code_arg *a = arg;
    a->ran = 1;
    return a->code;
}

static int wait_event(void *arg)
{
    return lahja_latch_wait(arg, LAHJA_FOREVER);
}

static int set_flag(void *arg)
{
    *(int *)arg = 1;
    return 0;
}

/* ---------------------------------------------------- spawn and join */

static int main_spawn_join_result(void *unused)
{
    (void)unused;
    lahja_rt_t *rt = lahja_rt_current();
    struct code_arg fail = { -EIO, 0 }, ok = { 0, 0 };
    lahja_task_t *tf, *tok;
    assert_int_equal(lahja_spawn(rt, run_and_return, &fail, NULL, &tf), 0);
    assert_int_equal(lahja_spawn(rt, run_and_return, &ok, NULL, &tok), 0);
    /* Spawning only queues the task: it runs once the caller suspends. */
    assert_int_equal(fail.ran, 0);
    assert_int_equal(lahja_task_done(tf), 0);

    int res = PENDING;
    assert_int_equal(lahja_task_join(tf, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, -EIO);
    assert_int_equal(fail.ran, 1);
    res = PENDING;
    assert_int_equal(lahja_task_join(tok, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, 0);

    lahja_task_t *untouched = NULL;
    assert_int_equal(lahja_spawn(rt, NULL, NULL, NULL, &untouched), -EINVAL);
    assert_int_equal(lahja_spawn(NULL, run_and_return, &ok, NULL, &untouched), -EINVAL);
    assert_null(untouched); /* output set only on success */
    return 0;
}
MAIN_TEST(spawn_join_result)

static int main_join_deadline(void *unused)
{
    (void)unused;
    lahja_latch_t ev;
    lahja_latch_init(&ev);
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), wait_event, &ev, NULL, &t), 0);

    lahja_time_t d = lahja_deadline_in(20);
    int res = PENDING;
    assert_int_equal(lahja_task_join(t, d, &res), -ETIMEDOUT);
    assert_not_before(lahja_now(), d);
    assert_int_equal(res, PENDING);
    /* A failed join leaves the handle to the caller. */
    assert_int_equal(lahja_task_done(t), 0);

    assert_int_equal(lahja_latch_set(&ev), 0);
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, 0);
    return 0;
}
MAIN_TEST(join_deadline)

/* Joins `target`, first telling the main task it is about to block. */
struct joiner {
    lahja_task_t *target;
    struct gate *gate;
    int rc;
};

static int join_target(void *arg)
{
    struct joiner *j = arg;
    gate_arrive(j->gate);
    j->rc = lahja_task_join(j->target, LAHJA_FOREVER, NULL);
    return j->rc;
}

/* Spawns tasks into `n` that would be given `t`'s object had its handle
 * been released, and checks `t` is still the finished task `name`. */
static void assert_not_recycled(lahja_task_t *t, const char *name, lahja_nursery_t *n,
                                lahja_latch_t *hold)
{
    for (int i = 0; i < 4; i++)
        assert_int_equal(lahja_nursery_spawn(n, wait_event, hold, NAMED("reuser"), NULL), 0);
    assert_int_equal(lahja_task_done(t), 1);
    assert_string_equal(lahja_task_name(t), name);
}

static int main_cancelled_join_keeps_handle(void *unused)
{
    (void)unused;
    lahja_rt_t *rt = lahja_rt_current();
    lahja_latch_t ev;
    lahja_latch_init(&ev);
    lahja_task_t *target, *jt;
    assert_int_equal(lahja_spawn(rt, wait_event, &ev, NAMED("target"), &target), 0);
    struct gate g;
    gate_init(&g, 1);
    struct joiner j = { target, &g, PENDING };
    assert_int_equal(lahja_spawn(rt, join_target, &j, NULL, &jt), 0);
    gate_wait(&g);

    lahja_task_cancel(jt);
    int res = PENDING;
    assert_int_equal(lahja_task_join(jt, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, -ECANCELED);
    assert_int_equal(j.rc, -ECANCELED);

    /* The cancelled join did not release the target's handle. */
    assert_int_equal(lahja_task_done(target), 0);
    assert_int_equal(lahja_latch_set(&ev), 0);
    assert_int_equal(lahja_yield(), 0); /* the target finishes */
    lahja_latch_t hold;
    lahja_latch_init(&hold);
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_not_recycled(target, "target", n, &hold);
    res = PENDING;
    assert_int_equal(lahja_task_join(target, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, 0);
    assert_int_equal(lahja_latch_set(&hold), 0);
    assert_int_equal(lahja_nursery_close(n), 0);
    return 0;
}
MAIN_TEST(cancelled_join_keeps_handle)

static int join_self(void *unused)
{
    (void)unused;
    int res = PENDING;
    assert_int_equal(lahja_task_join(lahja_task_current(), LAHJA_FOREVER, &res), -EDEADLK);
    assert_int_equal(res, PENDING);
    return 0;
}

static int main_join_self(void *unused)
{
    (void)unused;
    lahja_task_t *t;
    assert_int_equal(join_self(NULL), 0);
    /* Also for a task whose handle is held elsewhere. */
    assert_int_equal(lahja_spawn(lahja_rt_current(), join_self, NULL, NULL, &t), 0);
    int res = PENDING;
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, 0);
    return 0;
}
MAIN_TEST(join_self)

/* ---------------------------------------- runtimes on a caller's loop */

static lahja_rt_t *open_runtime(uv_loop_t *loop, const lahja_rt_options_t *opts)
{
    lahja_rt_t *rt = NULL;
    assert_int_equal(uv_loop_init(loop), 0);
    assert_int_equal(lahja_rt_new(loop, opts, &rt), 0);
    assert_ptr_equal(lahja_rt_current(), rt);
    return rt;
}

/* Closes an idle runtime and its loop, as the header prescribes. */
static void close_runtime(lahja_rt_t *rt, uv_loop_t *loop)
{
    assert_int_equal(lahja_rt_close(rt), 0);
    assert_null(lahja_rt_current());
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void test_join_outside_task(void **state)
{
    (void)state;
    uv_loop_t loop;
    lahja_rt_t *rt = open_runtime(&loop, NULL);
    struct code_arg a = { -EIO, 0 };
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(rt, run_and_return, &a, NULL, &t), 0);

    int res = PENDING;
    assert_null(lahja_task_current());
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, &res), LAHJA_ENOTASK);
    assert_int_equal(res, PENDING);
    assert_int_equal(lahja_yield(), LAHJA_ENOTASK);
    assert_int_equal(lahja_checkpoint(), LAHJA_ENOTASK);
    assert_int_equal(lahja_sleep(1), LAHJA_ENOTASK);

    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(lahja_task_done(t), 1);
    assert_int_equal(lahja_task_result(t), -EIO);
    lahja_task_detach(t);
    close_runtime(rt, &loop);
}

/* Spawns a task from a libuv callback, outside any task. */
struct from_callback {
    lahja_rt_t *rt;
    lahja_latch_t ev;
    int spawn_rc;
    int cb_in_task;
    int waiter_rc;
};

static int set_event_task(void *arg)
{
    return lahja_latch_set(arg);
}

static void on_timer_spawn(uv_timer_t *h)
{
    struct from_callback *c = h->data;
    c->cb_in_task = lahja_task_current() != NULL;
    c->spawn_rc = lahja_spawn(c->rt, set_event_task, &c->ev, NULL, NULL);
    uv_close((uv_handle_t *)h, NULL);
}

static int wait_event_record(void *arg)
{
    struct from_callback *c = arg;
    c->waiter_rc = lahja_latch_wait(&c->ev, LAHJA_FOREVER);
    return c->waiter_rc;
}

static void test_rt_on_caller_loop(void **state)
{
    (void)state;
    uv_loop_t loop;
    lahja_rt_options_t opts = { .stack_size = 64 * 1024, .pool_size = 2 };
    lahja_rt_t *rt = open_runtime(&loop, &opts);
    assert_ptr_equal(lahja_rt_loop(rt), &loop);
    /* The runtime's own handles do not keep an idle loop running. */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);

    struct from_callback c = { .rt = rt, .spawn_rc = PENDING, .cb_in_task = PENDING,
                               .waiter_rc = PENDING };
    lahja_latch_init(&c.ev);
    assert_int_equal(lahja_spawn(rt, wait_event_record, &c, NULL, NULL), 0);
    assert_int_equal(lahja_rt_ntasks(rt), 1);
    uv_timer_t timer;
    assert_int_equal(uv_timer_init(&loop, &timer), 0);
    timer.data = &c;
    assert_int_equal(uv_timer_start(&timer, on_timer_spawn, 0, 0), 0);

    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(c.spawn_rc, 0);
    assert_int_equal(c.cb_in_task, 0);
    assert_int_equal(c.waiter_rc, 0);
    assert_int_equal(lahja_rt_ntasks(rt), 0);
    close_runtime(rt, &loop);
}

static void test_rt_close_busy(void **state)
{
    (void)state;
    uv_loop_t loop;
    lahja_rt_t *rt = open_runtime(&loop, NULL);
    lahja_latch_t ev;
    lahja_latch_init(&ev);
    assert_int_equal(lahja_spawn(rt, wait_event, &ev, NULL, NULL), 0);
    /* The task blocks on an event nothing in the loop can set: uv_run
     * returns with the task alive. */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(lahja_rt_ntasks(rt), 1);

    assert_int_equal(lahja_rt_close(rt), -EBUSY);
    assert_ptr_equal(lahja_rt_current(), rt); /* nothing was done */

    /* The owner thread may wake tasks from outside any task. */
    assert_int_equal(lahja_latch_set(&ev), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(lahja_rt_ntasks(rt), 0);
    close_runtime(rt, &loop);
}

static void test_one_runtime_per_thread(void **state)
{
    (void)state;
    uv_loop_t loop1, loop2;
    lahja_rt_t *rt = open_runtime(&loop1, NULL);
    assert_int_equal(uv_loop_init(&loop2), 0);
    lahja_rt_t *second = NULL;
    assert_int_equal(lahja_rt_new(&loop2, NULL, &second), -EBUSY);
    assert_null(second); /* output set only on success */
    int ran = 0;
    assert_int_equal(lahja_run(set_flag, &ran, NULL), -EBUSY);
    assert_int_equal(ran, 0);
    close_runtime(rt, &loop1);

    /* Once closed, the thread may start another. */
    assert_int_equal(lahja_rt_new(&loop2, NULL, &second), 0);
    close_runtime(second, &loop2);
}

static int main_one_runtime_per_task_thread(void *unused)
{
    (void)unused;
    int ran = 0;
    assert_int_equal(lahja_run(set_flag, &ran, NULL), -EBUSY);
    assert_int_equal(ran, 0);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    lahja_rt_t *rt = NULL;
    assert_int_equal(lahja_rt_new(&loop, NULL, &rt), -EBUSY);
    assert_null(rt);
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}
MAIN_TEST(one_runtime_per_task_thread)

/* Root tasks blocked three ways; when all are blocked, an async handle
 * lets a loop callback cancel the runtime, as a signal watcher would. */
struct rt_cancel {
    lahja_rt_t *rt;
    uv_async_t async;
    lahja_latch_t never;
    int blocked;
    int rc_event, rc_sleep, rc_child, rc_nursery;
};

static void arrive_blocked(struct rt_cancel *c)
{
    if (++c->blocked == 3)
        assert_int_equal(uv_async_send(&c->async), 0);
}

static void on_async_cancel(uv_async_t *h)
{
    struct rt_cancel *c = h->data;
    lahja_rt_cancel(c->rt);
    uv_close((uv_handle_t *)h, NULL);
}

static int rtc_event(void *arg)
{
    struct rt_cancel *c = arg;
    arrive_blocked(c);
    c->rc_event = lahja_latch_wait(&c->never, LAHJA_FOREVER);
    return c->rc_event;
}

static int rtc_sleep(void *arg)
{
    struct rt_cancel *c = arg;
    arrive_blocked(c);
    c->rc_sleep = lahja_sleep_until(LAHJA_FOREVER);
    return c->rc_sleep;
}

static int rtc_child(void *arg)
{
    struct rt_cancel *c = arg;
    arrive_blocked(c);
    c->rc_child = lahja_latch_wait(&c->never, LAHJA_FOREVER);
    return c->rc_child;
}

static int rtc_parent(void *arg)
{
    struct rt_cancel *c = arg;
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, rtc_child, c, NULL, NULL), 0);
    c->rc_nursery = lahja_nursery_close(n);
    return c->rc_nursery;
}

static void test_rt_cancel(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct rt_cancel c = { .rc_event = PENDING, .rc_sleep = PENDING,
                           .rc_child = PENDING, .rc_nursery = PENDING };
    c.rt = open_runtime(&loop, NULL);
    lahja_latch_init(&c.never);
    assert_int_equal(uv_async_init(&loop, &c.async, on_async_cancel), 0);
    c.async.data = &c;
    assert_int_equal(lahja_spawn(c.rt, rtc_event, &c, NULL, NULL), 0);
    assert_int_equal(lahja_spawn(c.rt, rtc_sleep, &c, NULL, NULL), 0);
    assert_int_equal(lahja_spawn(c.rt, rtc_parent, &c, NULL, NULL), 0);

    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(c.blocked, 3);
    assert_int_equal(c.rc_event, -ECANCELED);
    assert_int_equal(c.rc_sleep, -ECANCELED);
    assert_int_equal(c.rc_child, -ECANCELED);  /* descendants too */
    assert_int_equal(c.rc_nursery, -ECANCELED);
    assert_int_equal(lahja_rt_ntasks(c.rt), 0);
    close_runtime(c.rt, &loop);
}

/* ------------------------------------------------------------ detach */

struct detached {
    lahja_latch_t go;
    int ran;
};

static int detached_body(void *arg)
{
    struct detached *d = arg;
    int rc = lahja_latch_wait(&d->go, LAHJA_FOREVER);
    d->ran = rc == 0;
    return rc;
}

/* On a caller's loop, where lahja_rt_close tells whether every handle
 * was released. */
static void test_detach(void **state)
{
    (void)state;
    uv_loop_t loop;
    lahja_rt_t *rt = open_runtime(&loop, NULL);
    struct detached d = { .ran = 0 };
    lahja_latch_init(&d.go);
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(rt, detached_body, &d, NULL, &t), 0);
    lahja_task_detach(t); /* before it even started */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(lahja_rt_ntasks(rt), 1);
    assert_int_equal(d.ran, 0);

    /* Released, the task still runs to its end. */
    assert_int_equal(lahja_latch_set(&d.go), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(d.ran, 1);
    assert_int_equal(lahja_rt_ntasks(rt), 0);

    /* Detaching a finished task releases it at once: close_runtime
     * could not close the runtime otherwise. */
    int flag = 0;
    assert_int_equal(lahja_spawn(rt, set_flag, &flag, NULL, &t), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(lahja_task_done(t), 1);
    assert_int_equal(flag, 1);
    lahja_task_detach(t);
    close_runtime(rt, &loop);
}

/* ------------------------------------------------------------ cancel */

enum block_kind { BLOCK_SLEEP, BLOCK_EVENT, BLOCK_JOIN };

struct blocker {
    enum block_kind kind;
    lahja_latch_t never;
    lahja_task_t *other; /* joined by BLOCK_JOIN */
    struct gate gate;
    int rc_first, rc_again;
};

static int block_once(struct blocker *b)
{
    switch (b->kind) {
    case BLOCK_SLEEP:
        return lahja_sleep_until(LAHJA_FOREVER);
    case BLOCK_EVENT:
        return lahja_latch_wait(&b->never, LAHJA_FOREVER);
    case BLOCK_JOIN:
        return lahja_task_join(b->other, LAHJA_FOREVER, NULL);
    }
    return -EINVAL;
}

static int blocked_body(void *arg)
{
    struct blocker *b = arg;
    gate_arrive(&b->gate);
    b->rc_first = block_once(b);
    /* Level-triggered: blocking again fails at once, no deadlock. */
    b->rc_again = block_once(b);
    return b->rc_first;
}

static int main_cancel_blocked(void *arg)
{
    lahja_rt_t *rt = lahja_rt_current();
    struct blocker b = { .kind = *(enum block_kind *)arg, .other = NULL,
                         .rc_first = PENDING, .rc_again = PENDING };
    lahja_latch_init(&b.never);
    gate_init(&b.gate, 1);
    if (b.kind == BLOCK_JOIN)
        assert_int_equal(lahja_spawn(rt, wait_event, &b.never, NULL, &b.other), 0);
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(rt, blocked_body, &b, NULL, &t), 0);
    gate_wait(&b.gate);
    assert_int_equal(b.rc_first, PENDING);

    lahja_task_cancel(t);
    int res = PENDING;
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, -ECANCELED);
    assert_int_equal(b.rc_first, -ECANCELED);
    assert_int_equal(b.rc_again, -ECANCELED);
    if (b.other != NULL) {
        /* Cancelling the joiner does not touch the joined task. */
        assert_int_equal(lahja_task_done(b.other), 0);
        lahja_task_cancel(b.other);
        assert_int_equal(lahja_task_join(b.other, LAHJA_FOREVER, &res), 0);
        assert_int_equal(res, -ECANCELED);
    }
    return 0;
}

static void cancel_blocked(enum block_kind kind)
{
    assert_int_equal(lahja_run(main_cancel_blocked, &kind, NULL), 0);
}

static void test_cancel_in_sleep(void **state)
{
    (void)state;
    cancel_blocked(BLOCK_SLEEP);
}

static void test_cancel_in_event_wait(void **state)
{
    (void)state;
    cancel_blocked(BLOCK_EVENT);
}

static void test_cancel_in_join(void **state)
{
    (void)state;
    cancel_blocked(BLOCK_JOIN);
}

/* Records its first checkpoint. */
static int first_checkpoint(void *arg)
{
    *(int *)arg = lahja_checkpoint();
    return 0;
}

static int main_cancel_before_start_and_after_end(void *unused)
{
    (void)unused;
    lahja_rt_t *rt = lahja_rt_current();
    int rc = PENDING;
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(rt, first_checkpoint, &rc, NULL, &t), 0);
    lahja_task_cancel(t); /* not started yet: it starts cancelled */
    int res = PENDING;
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, &res), 0);
    assert_int_equal(rc, -ECANCELED);
    assert_int_equal(res, 0);

    struct code_arg a = { -EIO, 0 };
    assert_int_equal(lahja_spawn(rt, run_and_return, &a, NULL, &t), 0);
    assert_int_equal(lahja_yield(), 0);
    assert_int_equal(lahja_task_done(t), 1);
    lahja_task_cancel(t); /* finished: nothing happens */
    assert_int_equal(lahja_task_result(t), -EIO);
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, -EIO);
    return 0;
}
MAIN_TEST(cancel_before_start_and_after_end)

/* A task cancelled while it waits in lahja_yield: S2 says the suspending
 * call it is in returns the cancellation. */
struct yielder {
    int rc;
};

static int yield_once(void *arg)
{
    struct yielder *y = arg;
    y->rc = lahja_yield();
    return 0;
}

static int main_cancel_in_yield(void *arg)
{
    struct yielder *y = arg;
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), yield_once, y, NULL, &t), 0);
    /* Let it enter lahja_yield: it is then queued behind this task. */
    assert_int_equal(lahja_yield(), 0);
    assert_int_equal(y->rc, PENDING);
    lahja_task_cancel(t);
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, NULL), 0);
    return 0;
}

static void test_cancel_in_yield(void **state)
{
    (void)state;
    struct yielder y = { PENDING };
    run_main(main_cancel_in_yield, &y);
    assert_int_equal(y.rc, -ECANCELED);
}

/* ------------------------------------------------- names and current */

struct probe {
    char name[80];
    lahja_task_t *self;
};

static int probe_self(void *arg)
{
    struct probe *p = arg;
    p->self = lahja_task_current();
    strcpy(p->name, lahja_task_name(p->self));
    return 0;
}

/* Spawns probe_self with `opts` and returns what it saw. */
static struct probe spawn_probe(const lahja_task_options_t *opts, lahja_task_t **handle,
                                char *rename)
{
    struct probe p = { "", NULL };
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), probe_self, &p, opts, &t), 0);
    if (rename != NULL) /* the name was copied at spawn */
        memset(rename, 'X', strlen(rename));
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, NULL), 0);
    if (handle != NULL)
        *handle = t;
    return p;
}

static int main_names(void *unused)
{
    (void)unused;
    assert_string_equal(lahja_task_name(lahja_task_current()), "main-task");
    assert_string_equal(spawn_probe(NULL, NULL, NULL).name, "task");
    assert_string_equal(spawn_probe(&(lahja_task_options_t){ 0 }, NULL, NULL).name, "task");

    char buf[] = "worker-1";
    assert_string_equal(spawn_probe(NAMED(buf), NULL, buf).name, "worker-1");

    char longname[101];
    memset(longname, 'n', 100);
    longname[100] = '\0';
    struct probe p = spawn_probe(NAMED(longname), NULL, NULL);
    assert_int_equal(strlen(p.name), 63);
    assert_memory_equal(p.name, longname, 63);
    return 0;
}

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(lahja_run(main_names, NULL, NAMED("main-task")), 0);
}

static int main_current(void *unused)
{
    (void)unused;
    lahja_task_t *me = lahja_task_current();
    assert_non_null(me);
    lahja_task_t *t;
    struct probe p = spawn_probe(NULL, &t, NULL);
    assert_ptr_equal(p.self, t); /* compared as values: t is released */
    assert_ptr_not_equal(p.self, me);
    assert_ptr_equal(lahja_task_current(), me);
    return 0;
}

static void test_current(void **state)
{
    (void)state;
    assert_null(lahja_task_current());
    run_main(main_current, NULL);
    assert_null(lahja_task_current());
}

/* --------------------------------------------- yield and checkpoint */

#define RR_TASKS 3
#define RR_ROUNDS 4

struct round_robin {
    int order[RR_TASKS * RR_ROUNDS];
    int n;
};

struct rr_arg {
    struct round_robin *rr;
    int id;
};

static int rr_body(void *arg)
{
    struct rr_arg *a = arg;
    for (int i = 0; i < RR_ROUNDS; i++) {
        a->rr->order[a->rr->n++] = a->id;
        assert_int_equal(lahja_yield(), 0);
    }
    return 0;
}

static int main_yield_round_robin(void *unused)
{
    (void)unused;
    struct round_robin rr = { { 0 }, 0 };
    struct rr_arg args[RR_TASKS];
    lahja_task_t *t[RR_TASKS];
    for (int i = 0; i < RR_TASKS; i++) {
        args[i] = (struct rr_arg){ &rr, i };
        assert_int_equal(lahja_spawn(lahja_rt_current(), rr_body, &args[i], NULL, &t[i]), 0);
    }
    for (int i = 0; i < RR_TASKS; i++)
        assert_int_equal(lahja_task_join(t[i], LAHJA_FOREVER, NULL), 0);
    assert_int_equal(rr.n, RR_TASKS * RR_ROUNDS);
    for (int i = 0; i < rr.n; i++)
        assert_int_equal(rr.order[i], i % RR_TASKS);
    return 0;
}
MAIN_TEST(yield_round_robin)

static int main_checkpoint(void *unused)
{
    (void)unused;
    int flag = 0;
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), set_flag, &flag, NULL, &t), 0);
    assert_int_equal(lahja_checkpoint(), 0);
    assert_int_equal(flag, 0); /* the ready task did not get to run */
    assert_int_equal(lahja_yield(), 0);
    assert_int_equal(flag, 1); /* yield let it run */
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, NULL), 0);
    return 0;
}

static void test_checkpoint(void **state)
{
    (void)state;
    assert_int_equal(lahja_checkpoint(), LAHJA_ENOTASK); /* no runtime at all */
    run_main(main_checkpoint, NULL);
}

/* ---------------------------------------------------- other threads */

/* What a foreign thread got back from each call. */
struct foreign {
    lahja_rt_t *rt;
    lahja_nursery_t *n;
    lahja_latch_t with_waiter, without_waiter;
    int flag;
    int rc_spawn, rc_set_waiter, rc_set_nowaiter, rc_nspawn, rc_close;
};

/* Every call here can tell the caller is not the runtime's thread. */
static void refused_calls(struct foreign *f)
{
    f->rc_spawn = lahja_spawn(f->rt, set_flag, &f->flag, NULL, NULL);
    f->rc_set_waiter = lahja_latch_set(&f->with_waiter);
    f->rc_nspawn = lahja_nursery_spawn(f->n, set_flag, &f->flag, NULL, NULL);
    f->rc_close = lahja_rt_close(f->rt);
}

static void *foreign_calls(void *arg)
{
    struct foreign *f = arg;
    refused_calls(f);
    /* Without waiters the event belongs to no runtime, but a thread
     * without a runtime cannot own one. */
    f->rc_set_nowaiter = lahja_latch_set(&f->without_waiter);
    return NULL;
}

/* From a thread that has a runtime of its own: still refused. */
static void *foreign_calls_own_runtime(void *arg)
{
    uv_loop_t loop;
    lahja_rt_t *own;
    if (uv_loop_init(&loop) != 0 || lahja_rt_new(&loop, NULL, &own) != 0)
        return arg; /* reported as a failure by the joiner */
    refused_calls(arg);
    lahja_rt_close(own);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return NULL;
}

/* Which thread body to run, and what it should get for the event
 * without waiters. */
struct foreign_case {
    void *(*fn)(void *);
    int rc_set_nowaiter;
};

struct waiter {
    lahja_latch_t *ev;
    struct gate *gate;
};

static int gated_wait(void *arg)
{
    struct waiter *w = arg;
    gate_arrive(w->gate);
    return lahja_latch_wait(w->ev, LAHJA_FOREVER);
}

static int main_foreign_thread(void *arg)
{
    const struct foreign_case *fc = arg;
    struct foreign f = { .rt = lahja_rt_current(), .rc_set_nowaiter = PENDING };
    lahja_latch_init(&f.with_waiter);
    lahja_latch_init(&f.without_waiter);
    assert_int_equal(lahja_nursery_open(&f.n), 0);
    struct gate g;
    gate_init(&g, 1);
    struct waiter w = { &f.with_waiter, &g };
    lahja_task_t *wt;
    assert_int_equal(lahja_nursery_spawn(f.n, gated_wait, &w, NULL, &wt), 0);
    gate_wait(&g);
    size_t ntasks = lahja_rt_ntasks(f.rt);

    /* The thread needs nothing from the loop: joining it here is safe. */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fc->fn, &f), 0);
    void *failed = &f;
    assert_int_equal(pthread_join(th, &failed), 0);
    assert_null(failed);
    assert_int_equal(f.rc_spawn, LAHJA_EWRONGTHREAD);
    assert_int_equal(f.rc_set_waiter, LAHJA_EWRONGTHREAD);
    assert_int_equal(f.rc_set_nowaiter, fc->rc_set_nowaiter);
    assert_int_equal(f.rc_nspawn, LAHJA_EWRONGTHREAD);
    assert_int_equal(f.rc_close, LAHJA_EWRONGTHREAD);

    /* Nothing was done on their behalf. */
    assert_int_equal(lahja_latch_is_set(&f.with_waiter), 0);
    assert_int_equal(lahja_latch_is_set(&f.without_waiter), 0);
    assert_int_equal(lahja_rt_ntasks(f.rt), ntasks);
    assert_int_equal(lahja_yield(), 0);
    assert_int_equal(f.flag, 0);
    assert_int_equal(lahja_task_done(wt), 0);

    assert_int_equal(lahja_latch_set(&f.with_waiter), 0);
    assert_int_equal(lahja_nursery_close(f.n), 0);
    return 0;
}

static void test_foreign_thread_refused(void **state)
{
    (void)state;
    struct foreign_case fc = { foreign_calls, LAHJA_EWRONGTHREAD };
    assert_int_equal(lahja_run(main_foreign_thread, &fc, NULL), 0);
}

static void test_foreign_thread_with_runtime_refused(void **state)
{
    (void)state;
    struct foreign_case fc = { foreign_calls_own_runtime, PENDING };
    assert_int_equal(lahja_run(main_foreign_thread, &fc, NULL), 0);
}

struct close_attempt {
    lahja_rt_t *rt;
    int rc;
};

static void *close_from_thread(void *arg)
{
    struct close_attempt *c = arg;
    c->rc = lahja_rt_close(c->rt);
    return NULL;
}

static void test_rt_close_foreign_thread(void **state)
{
    (void)state;
    uv_loop_t loop;
    struct close_attempt c = { open_runtime(&loop, NULL), PENDING };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, close_from_thread, &c), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(c.rc, LAHJA_EWRONGTHREAD);

    /* The runtime is untouched: it still runs tasks. */
    int flag = 0;
    assert_int_equal(lahja_spawn(c.rt, set_flag, &flag, NULL, NULL), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(flag, 1);
    close_runtime(c.rt, &loop);
}

/* --------------------------------------------------------- many tasks */

#define NMANY 10000

struct many {
    lahja_latch_t release;
    struct gate gate;
    int finished;
};

static int many_body(void *arg)
{
    struct many *m = arg;
    gate_arrive(&m->gate);
    int rc = lahja_latch_wait(&m->release, LAHJA_FOREVER);
    if (rc == 0)
        m->finished++;
    return rc;
}

static int main_ten_thousand_tasks(void *unused)
{
    (void)unused;
    lahja_rt_t *rt = lahja_rt_current();
    struct many m;
    lahja_latch_init(&m.release);
    gate_init(&m.gate, NMANY);
    m.finished = 0;
    /* Small stacks: 10,000 default ones are fine too, but cost more
     * address space under the sanitizers. */
    lahja_task_options_t opts = { .name = "many", .stack_size = 64 * 1024 };
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    for (int i = 0; i < NMANY; i++)
        assert_int_equal(lahja_nursery_spawn(n, many_body, &m, &opts, NULL), 0);
    gate_wait(&m.gate);

    /* All alive and blocked at once, plus this task. */
    assert_int_equal(lahja_rt_ntasks(rt), NMANY + 1);
    assert_int_equal(m.finished, 0);
    assert_int_equal(lahja_latch_set(&m.release), 0);
    assert_int_equal(lahja_nursery_close(n), 0);
    assert_int_equal(m.finished, NMANY);
    assert_int_equal(lahja_rt_ntasks(rt), 1);
    return 0;
}
MAIN_TEST(ten_thousand_tasks)

/* ------------------------------------------------------------ errors */

/* The version compiled against is the library's, in both forms. */
static void test_version(void **state)
{
    (void)state;
    assert_int_equal(lahja_version(), LAHJA_VERSION);
    assert_int_equal(LAHJA_VERSION >> 16, LAHJA_VERSION_MAJOR);
    assert_int_equal((LAHJA_VERSION >> 8) & 0xff, LAHJA_VERSION_MINOR);
    assert_int_equal(LAHJA_VERSION & 0xff, LAHJA_VERSION_PATCH);
    char s[32];
    snprintf(s, sizeof s, "%d.%d.%d", LAHJA_VERSION_MAJOR, LAHJA_VERSION_MINOR,
             LAHJA_VERSION_PATCH);
    assert_string_equal(lahja_version_string(), s);
    assert_string_equal(LAHJA_VERSION_STRING, s);
}

static void test_error_names(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *name;
    } own[] = {
        { LAHJA_ENOSUBSCRIBERS, "LAHJA_ENOSUBSCRIBERS" },
        { LAHJA_EUNEXPECTEDRESPONSE, "LAHJA_EUNEXPECTEDRESPONSE" },
        { LAHJA_EBIND, "LAHJA_EBIND" },
        { LAHJA_ECONNREJECTED, "LAHJA_ECONNREJECTED" },
        { LAHJA_ELIFECYCLE, "LAHJA_ELIFECYCLE" },
        { LAHJA_EREMOTEDISCONNECTED, "LAHJA_EREMOTEDISCONNECTED" },
        { LAHJA_EDAEMONEXIT, "LAHJA_EDAEMONEXIT" },
        { LAHJA_ETOOMANYCHILDREN, "LAHJA_ETOOMANYCHILDREN" },
        { LAHJA_EWRONGTHREAD, "LAHJA_EWRONGTHREAD" },
        { LAHJA_EDEADLOCK, "LAHJA_EDEADLOCK" },
        { LAHJA_ENOTASK, "LAHJA_ENOTASK" },
        { LAHJA_ENORUNTIME, "LAHJA_ENORUNTIME" },
    };
    size_t n = sizeof own / sizeof own[0];
    /* The table covers every code between the bounds. */
    assert_int_equal(n, LAHJA_EBASE - LAHJA_ELAST - 1);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(lahja_err_name(own[i].code), own[i].name);
        const char *msg = lahja_strerror(own[i].code);
        assert_non_null(msg);
        assert_true(strlen(msg) > 0);
        assert_string_not_equal(msg, "Unknown error");
        for (size_t j = 0; j < i; j++) /* each message says something of its own */
            assert_string_not_equal(msg, lahja_strerror(own[j].code));
    }
}

static void test_errno_names(void **state)
{
    (void)state;
    assert_string_equal(lahja_err_name(-ECANCELED), "ECANCELED");
    assert_string_equal(lahja_err_name(-ETIMEDOUT), "ETIMEDOUT");
    assert_string_equal(lahja_err_name(-ENOMEM), "ENOMEM");
    /* The C locale's messages, as strerror gives them. */
    assert_string_equal(lahja_strerror(-ECANCELED), strerror(ECANCELED));
    assert_string_equal(lahja_strerror(-ETIMEDOUT), strerror(ETIMEDOUT));
    assert_string_equal(lahja_strerror(-ENOMEM), strerror(ENOMEM));

    const int unknown[] = { LAHJA_EBASE, LAHJA_ELAST, -99999 };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        assert_string_equal(lahja_err_name(unknown[i]), "UNKNOWN");
        assert_string_equal(lahja_strerror(unknown[i]), "Unknown error");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spawn_join_result),
        cmocka_unit_test(test_join_deadline),
        cmocka_unit_test(test_cancelled_join_keeps_handle),
        cmocka_unit_test(test_join_self),
        cmocka_unit_test(test_join_outside_task),
        cmocka_unit_test(test_detach),
        cmocka_unit_test(test_cancel_in_sleep),
        cmocka_unit_test(test_cancel_in_event_wait),
        cmocka_unit_test(test_cancel_in_join),
        cmocka_unit_test(test_cancel_before_start_and_after_end),
        cmocka_unit_test(test_cancel_in_yield),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_current),
        cmocka_unit_test(test_yield_round_robin),
        cmocka_unit_test(test_checkpoint),
        cmocka_unit_test(test_rt_on_caller_loop),
        cmocka_unit_test(test_rt_close_busy),
        cmocka_unit_test(test_one_runtime_per_thread),
        cmocka_unit_test(test_one_runtime_per_task_thread),
        cmocka_unit_test(test_rt_cancel),
        cmocka_unit_test(test_foreign_thread_refused),
        cmocka_unit_test(test_foreign_thread_with_runtime_refused),
        cmocka_unit_test(test_rt_close_foreign_thread),
        cmocka_unit_test(test_ten_thousand_tasks),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_errno_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
