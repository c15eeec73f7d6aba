/*
 * lahja_run, the embedded entry point: its result, what it does with
 * tasks and handles left behind, deadlock detection, misuse, and the
 * clock.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lahja/lahja.h>

#include "runtime/rt.h"
#include "support_sync.h"

/* ----------------------------------------------------------- results */

static int return_arg(void *arg)
{
    return *(int *)arg;
}

static void test_returns_main_result(void **state)
{
    (void)state;
    int values[] = { 0, 42, -ENOENT, LAHJA_ELIFECYCLE };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        assert_int_equal(lahja_run(return_arg, &values[i], NULL), values[i]);
    /* Each run tears its runtime down. */
    assert_null(lahja_rt_current());
}

struct named {
    char name[64];
    int in_task;
};

static int report_name(void *arg)
{
    struct named *n = arg;
    lahja_task_t *self = lahja_task_current();
    n->in_task = self != NULL;
    if (self != NULL)
        strcpy(n->name, lahja_task_name(self));
    return 0;
}

static void test_main_task_gets_options(void **state)
{
    (void)state;
    struct named n = { "", 0 };
    lahja_task_options_t opts = { .name = "the-main" };
    assert_int_equal(lahja_run(report_name, &n, &opts), 0);
    assert_true(n.in_task);
    assert_string_equal(n.name, "the-main");
}

static void test_null_fn_is_einval(void **state)
{
    (void)state;
    assert_int_equal(lahja_run(NULL, NULL, NULL), -EINVAL);
    assert_null(lahja_rt_current());
}

static int never_called(void *arg)
{
    *(int *)arg = 1;
    return 0;
}

static int nested_main(void *arg)
{
    int *called = arg;
    return lahja_run(never_called, called, NULL);
}

static void test_nested_run_is_ebusy(void **state)
{
    (void)state;
    int called = 0;
    assert_int_equal(lahja_run(nested_main, &called, NULL), -EBUSY);
    assert_int_equal(called, 0);
}

static void test_run_beside_thread_runtime_is_ebusy(void **state)
{
    (void)state;
    uv_loop_t loop;
    lahja_rt_t *rt;
    int called = 0;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(lahja_rt_new(&loop, NULL, &rt), 0);
    assert_int_equal(lahja_run(never_called, &called, NULL), -EBUSY);
    assert_int_equal(called, 0);
    assert_ptr_equal(lahja_rt_current(), rt); /* left as it was */
    assert_int_equal(lahja_rt_close(rt), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Each thread has a runtime of its own: they run side by side. */
struct per_thread {
    int id;
    int result;
};

static int thread_main(void *arg)
{
    struct per_thread *pt = arg;
    lahja_queue_t *q;
    void *item = NULL;
    if (lahja_queue_new(1, &q) != 0)
        return -ENOMEM;
    int rc = lahja_queue_send(q, ITEM(pt->id), LAHJA_FOREVER);
    if (rc == 0)
        rc = lahja_sleep(SHORT_MS);
    if (rc == 0)
        rc = lahja_queue_recv(q, &item, LAHJA_FOREVER);
    lahja_queue_free(q);
    return rc == 0 ? (int)ITEM_VAL(item) : rc;
}

static void run_on_thread(void *arg)
{
    struct per_thread *pt = arg;
    pt->result = lahja_run(thread_main, pt, NULL);
}

static void test_runs_on_two_threads_at_once(void **state)
{
    (void)state;
    struct per_thread pts[2] = { { 11, 0 }, { 22, 0 } };
    uv_thread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(uv_thread_create(&th[i], run_on_thread, &pts[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(uv_thread_join(&th[i]), 0);
    assert_int_equal(pts[0].result, 11);
    assert_int_equal(pts[1].result, 22);
}

/* -------------------------------------- root tasks left behind by main */

struct leftover {
    counter_t started;
    int rc[3];
    int cleaned[3];
};

struct leftover_arg {
    struct leftover *l;
    int id;
};

/* Blocks until cancelled, then cleans up with a suspending call in a
 * shielded scope. */
static int leftover_task(void *arg)
{
    struct leftover_arg *a = arg;
    struct leftover *l = a->l;
    counter_bump(&l->started);
    l->rc[a->id] = lahja_sleep_until(LAHJA_FOREVER);
    lahja_scope_t *shield;
    if (lahja_scope_open(LAHJA_FOREVER, LAHJA_SCOPE_SHIELD, &shield) != 0)
        return -ENOMEM;
    if (lahja_sleep(1) == 0 && lahja_yield() == 0)
        l->cleaned[a->id] = 1;
    lahja_scope_close(shield);
    return l->rc[a->id];
}

/* A root task whose own nursery child is also left behind. */
static int leftover_parent(void *arg)
{
    struct leftover_arg *a = arg;
    lahja_nursery_t *n;
    if (lahja_nursery_open(&n) != 0)
        return -ENOMEM;
    int rc = lahja_nursery_spawn(n, leftover_task, &a[1], NULL, NULL);
    if (rc == 0)
        rc = leftover_task(&a[0]);
    int jrc = lahja_nursery_close(n);
    return rc != 0 ? rc : jrc;
}

static int leftover_main(void *arg)
{
    struct leftover *l = arg;
    static struct leftover_arg args[3];
    for (int i = 0; i < 3; i++)
        args[i] = (struct leftover_arg){ l, i };
    lahja_rt_t *rt = lahja_rt_current();
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(rt, leftover_task, &args[2], NULL, NULL), 0);
    assert_int_equal(lahja_spawn(rt, leftover_parent, &args[0], NULL, &t), 0);
    lahja_task_detach(t);
    assert_int_equal(counter_wait(&l->started, 3), 0);
    return 7;
}

static void test_leftover_root_tasks_cancelled_and_awaited(void **state)
{
    (void)state;
    struct leftover l = { .rc = { 1, 1, 1 } };
    counter_init(&l.started);
    assert_int_equal(lahja_run(leftover_main, &l, NULL), 7);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(l.rc[i], -ECANCELED);
        assert_int_equal(l.cleaned[i], 1);
    }
}

/* Leaves a handle to a finished root task unreleased, as an error path
 * that returns early easily does. */
static int keep_handle_main(void *arg)
{
    lahja_task_t **t = arg;
    int three = 3;
    int rc = lahja_spawn(lahja_rt_current(), return_arg, &three, NULL, t);
    if (rc == 0)
        rc = lahja_yield(); /* the task runs and finishes */
    return rc == 0 && lahja_task_done(*t) ? 4 : -1;
}

static void test_unreleased_handle_does_not_outlive_run(void **state)
{
    (void)state;
    lahja_task_t *t = NULL;
    assert_int_equal(lahja_run(keep_handle_main, &t, NULL), 4);
    /* "Then everything is closed and freed": no runtime is left on the
     * thread (its loop was lahja_run's own), and the next run works. */
    lahja_rt_t *left = lahja_rt_current();
    lahja_tls_rt = NULL; /* contain a failure to this case */
    assert_null(left);
    int seven = 7;
    assert_int_equal(lahja_run(return_arg, &seven, NULL), 7);
}

/* ------------------------------------------------------------ deadlock */

struct stuck {
    int rc;
    int other_rc;
    int finished;
};

static int stuck_other(void *arg)
{
    struct stuck *s = arg;
    lahja_cond_t c;
    lahja_cond_init(&c);
    s->other_rc = lahja_cond_wait(&c, LAHJA_FOREVER);
    return s->other_rc;
}

static int stuck_main(void *arg)
{
    struct stuck *s = arg;
    lahja_latch_t never;
    lahja_latch_init(&never);
    lahja_spawn(lahja_rt_current(), stuck_other, s, NULL, NULL);
    s->rc = lahja_latch_wait(&never, LAHJA_FOREVER);
    s->finished = 1;
    return s->rc;
}

static void test_deadlock_is_reported(void **state)
{
    (void)state;
    struct stuck s = { 1, 1, 0 };
    assert_int_equal(lahja_run(stuck_main, &s, NULL), LAHJA_EDEADLOCK);
    /* The blocked tasks were cancelled and ran to their end. */
    assert_int_equal(s.rc, -ECANCELED);
    assert_int_equal(s.other_rc, -ECANCELED);
    assert_int_equal(s.finished, 1);
}

static int stuck_child(void *arg)
{
    struct stuck *s = arg;
    lahja_latch_t never;
    lahja_latch_init(&never);
    s->other_rc = lahja_latch_wait(&never, LAHJA_FOREVER);
    return s->other_rc;
}

/* The main task waits, not cancellable, in a nursery whose child waits
 * on nothing: cancelling the child is what lets the main task finish. */
static int stuck_nursery_main(void *arg)
{
    struct stuck *s = arg;
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, stuck_child, s, NULL, NULL), 0);
    s->rc = lahja_nursery_close(n);
    s->finished = 1;
    return s->rc;
}

static void test_deadlock_in_nursery_is_reported(void **state)
{
    (void)state;
    struct stuck s = { 1, 1, 0 };
    assert_int_equal(lahja_run(stuck_nursery_main, &s, NULL), LAHJA_EDEADLOCK);
    assert_int_equal(s.other_rc, -ECANCELED);
    assert_int_equal(s.rc, -ECANCELED);
    assert_int_equal(s.finished, 1);
}

static int sleep_main(void *arg)
{
    (void)arg;
    /* Waiting on a timer is not a deadlock. */
    return lahja_sleep(SHORT_MS);
}

static void test_sleeping_is_not_deadlock(void **state)
{
    (void)state;
    assert_int_equal(lahja_run(sleep_main, NULL, NULL), 0);
}

/* ------------------------------------------ a deadline's timer, reused */

/* Signals c once the other task waits on it. */
static int signal_soon(void *arg)
{
    lahja_cond_t *c = arg;
    while (lahja_list_empty(&c->waiters))
        lahja_yield();
    lahja_cond_signal(c);
    return 0;
}

/* Waits on c with a deadline `ms` away, signalled at once: the timer of
 * that deadline is left armed. */
static void woken_before(lahja_cond_t *c, uint64_t ms)
{
    assert_int_equal(lahja_spawn(lahja_rt_current(), signal_soon, c, NULL, NULL), 0);
    assert_int_equal(lahja_cond_wait(c, lahja_deadline_in(ms)), 0);
}

struct timed {
    uint64_t early_ms, late_ms;
};

static int stuck_after_deadline_main(void *arg)
{
    (void)arg;
    lahja_cond_t c;
    lahja_cond_init(&c);
    woken_before(&c, 60000);
    lahja_latch_t never;
    lahja_latch_init(&never);
    return lahja_latch_wait(&never, LAHJA_FOREVER);
}

/* A timer left armed by a wait that ended early does not keep the
 * runtime alive: every task waiting on nothing is still a deadlock, seen
 * at once, not when the old deadline comes. */
static void test_deadlock_seen_with_an_old_deadline_armed(void **state)
{
    (void)state;
    uint64_t t0 = uv_hrtime();
    assert_int_equal(lahja_run(stuck_after_deadline_main, NULL, NULL), LAHJA_EDEADLOCK);
    assert_true(uv_hrtime() - t0 < 10000000000ull);
}

static int deadlines_main(void *arg)
{
    struct timed *r = arg;
    lahja_cond_t c, never;
    lahja_cond_init(&c);
    lahja_cond_init(&never);
    /* A later deadline than the armed one: it holds until its own time. */
    woken_before(&c, 2 * SHORT_MS);
    lahja_time_t t0 = lahja_now();
    assert_int_equal(lahja_cond_wait(&never, lahja_deadline_in(6 * SHORT_MS)), -ETIMEDOUT);
    r->late_ms = lahja_now() - t0;
    /* An earlier one than the armed one: it is not put off to it. */
    woken_before(&c, 60000);
    t0 = lahja_now();
    assert_int_equal(lahja_cond_wait(&never, lahja_deadline_in(SHORT_MS)), -ETIMEDOUT);
    r->early_ms = lahja_now() - t0;
    return 0;
}

static void test_each_wait_ends_at_its_own_deadline(void **state)
{
    (void)state;
    struct timed r = { 0, 0 };
    assert_int_equal(lahja_run(deadlines_main, &r, NULL), 0);
    assert_true(r.late_ms >= 6 * SHORT_MS);
    assert_true(r.early_ms >= SHORT_MS && r.early_ms < 10000);
}

/* --------------------------------------------------------- small blocks */

static int blocks_main(void *arg)
{
    (void)arg;
    /* A block given back is the next one given: no allocator call. */
    void *a = lahja_block_get();
    assert_non_null(a);
    memset(a, 0x5a, LAHJA_BLOCK_SIZE); /* all of it is ours */
    lahja_block_put(a);
    assert_ptr_equal(lahja_block_get(), a);
    /* More than the runtime keeps: the rest go back to the C library
     * (AddressSanitizer and valgrind see none of them lost). */
    void *many[LAHJA_BLOCKS_MAX + 8];
    for (size_t i = 0; i < LAHJA_BLOCKS_MAX + 8; i++)
        assert_non_null(many[i] = lahja_block_get());
    for (size_t i = 0; i < LAHJA_BLOCKS_MAX + 8; i++)
        lahja_block_put(many[i]);
    assert_int_equal(lahja_tls_rt->nblocks, LAHJA_BLOCKS_MAX);
    lahja_block_put(a);
    assert_int_equal(lahja_tls_rt->nblocks, LAHJA_BLOCKS_MAX);
    return 0;
}

/* Blocks kept by a runtime are freed with it; without a runtime a block
 * is plain memory. */
static void test_small_blocks_are_reused_and_freed(void **state)
{
    (void)state;
    assert_int_equal(lahja_run(blocks_main, NULL, NULL), 0);
    void *b = lahja_block_get(); /* no runtime here */
    assert_non_null(b);
    memset(b, 0, LAHJA_BLOCK_SIZE);
    lahja_block_put(b);
}

/* ------------------------------------------------- user handles left open */

static uv_timer_t left_timer;
static uv_idle_t left_idle;
static int ticks;

static void on_left_tick(uv_timer_t *h)
{
    (void)h;
    ticks++;
}

static void on_left_idle(uv_idle_t *h)
{
    (void)h;
}

static int leave_handles_main(void *arg)
{
    (void)arg;
    uv_loop_t *loop = lahja_rt_loop(lahja_rt_current());
    assert_int_equal(uv_timer_init(loop, &left_timer), 0);
    assert_int_equal(uv_timer_start(&left_timer, on_left_tick, 1, 1), 0);
    assert_int_equal(uv_idle_init(loop, &left_idle), 0);
    assert_int_equal(uv_idle_start(&left_idle, on_left_idle), 0);
    /* Let the timer tick, so that the loop has really been running it. */
    while (ticks < 2)
        assert_int_equal(lahja_sleep(1), 0);
    return 5;
}

static void test_open_user_handles_do_not_block_return(void **state)
{
    (void)state;
    ticks = 0;
    assert_int_equal(lahja_run(leave_handles_main, NULL, NULL), 5);
    assert_true(ticks >= 2);
    /* lahja_run closed them before freeing the loop. */
    assert_true(uv_is_closing((uv_handle_t *)&left_timer));
    assert_true(uv_is_closing((uv_handle_t *)&left_idle));
}

/* ------------------------------------------------------ outside a task */

/* Every suspending call refuses, with LAHJA_ENOTASK, a caller that is no task. */
static void expect_notask_outside_task(lahja_task_t *some_task)
{
    lahja_latch_t ev;
    lahja_cond_t cond;
    lahja_completion_t comp;
    lahja_queue_t *q;
    lahja_nursery_t *n = NULL;
    lahja_scope_t *s = NULL;
    void *item = NULL;
    lahja_latch_init(&ev);
    lahja_cond_init(&cond);
    lahja_completion_init(&comp);
    assert_int_equal(lahja_queue_new(1, &q), 0);

    assert_null(lahja_task_current());
    assert_int_equal(lahja_sleep(1), LAHJA_ENOTASK);
    assert_int_equal(lahja_sleep_until(LAHJA_FOREVER), LAHJA_ENOTASK);
    assert_int_equal(lahja_latch_wait(&ev, LAHJA_FOREVER), LAHJA_ENOTASK);
    assert_int_equal(lahja_cond_wait(&cond, LAHJA_FOREVER), LAHJA_ENOTASK);
    assert_int_equal(lahja_queue_recv(q, &item, LAHJA_FOREVER), LAHJA_ENOTASK);
    assert_int_equal(lahja_queue_send(q, ITEM(1), LAHJA_FOREVER), LAHJA_ENOTASK);
    assert_int_equal(lahja_completion_wait(&comp, LAHJA_FOREVER), LAHJA_ENOTASK);
    assert_int_equal(lahja_yield(), LAHJA_ENOTASK);
    assert_int_equal(lahja_checkpoint(), LAHJA_ENOTASK);
    assert_int_equal(lahja_nursery_open(&n), LAHJA_ENOTASK);
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), LAHJA_ENOTASK);
    assert_null(n);
    assert_null(s);
    if (some_task != NULL)
        assert_int_equal(lahja_task_join(some_task, LAHJA_FOREVER, NULL), LAHJA_ENOTASK);
    assert_int_equal(lahja_queue_len(q), 0);
    lahja_queue_free(q);
}

static void test_suspending_calls_without_runtime(void **state)
{
    (void)state;
    assert_null(lahja_rt_current());
    expect_notask_outside_task(NULL);
}

struct from_callback {
    lahja_latch_t checked;
    lahja_task_t *task;
    int ran;
};

/* A libuv callback runs on the loop's stack, with a runtime but no task. */
static void on_check_timer(uv_timer_t *h)
{
    struct from_callback *fc = h->data;
    expect_notask_outside_task(fc->task);
    fc->ran = 1;
    lahja_latch_set(&fc->checked);
}

static int callback_main(void *arg)
{
    struct from_callback *fc = arg;
    lahja_latch_init(&fc->checked);
    fc->task = lahja_task_current();
    uv_timer_t timer;
    uv_timer_init(lahja_rt_loop(lahja_rt_current()), &timer);
    timer.data = fc;
    uv_timer_start(&timer, on_check_timer, 0, 0);
    int rc = lahja_latch_wait(&fc->checked, LAHJA_FOREVER);
    lahja_uv_close((uv_handle_t *)&timer);
    return rc;
}

static void test_suspending_calls_from_libuv_callback(void **state)
{
    (void)state;
    struct from_callback fc = { .ran = 0 };
    RUN_MAIN(callback_main, &fc);
    assert_int_equal(fc.ran, 1);
}

/* --------------------------------------------------------------- clock */

static void test_clock_without_runtime(void **state)
{
    (void)state;
    assert_int_equal(lahja_now(), 0);
    assert_int_equal(lahja_deadline_in(7), 7);
    assert_true(lahja_deadline_in(UINT64_MAX) == LAHJA_FOREVER);
}

struct clock_seen {
    lahja_time_t t0, t1, in0, in_big, in_max, in_edge, edge_now;
    lahja_time_t before_ten, in_ten, after_ten;
};

static int clock_main(void *arg)
{
    struct clock_seen *c = arg;
    c->t0 = lahja_now();
    c->in0 = lahja_deadline_in(0);
    c->before_ten = lahja_now();
    c->in_ten = lahja_deadline_in(10);
    c->after_ten = lahja_now();
    if (lahja_sleep(SHORT_MS) != 0)
        return -1;
    c->t1 = lahja_now();
    c->in_big = lahja_deadline_in(UINT64_MAX - 1); /* overflows: now >= 1 */
    c->in_max = lahja_deadline_in(UINT64_MAX);
    c->edge_now = lahja_now();
    /* Exactly what is left before LAHJA_FOREVER, and one more. */
    c->in_edge = lahja_deadline_in(LAHJA_FOREVER - c->edge_now + 1);
    return 0;
}

static void test_clock_advances_and_saturates(void **state)
{
    (void)state;
    struct clock_seen c;
    memset(&c, 0, sizeof c);
    RUN_MAIN(clock_main, &c);
    assert_true(c.t0 > 0);
    assert_true(c.in0 >= c.t0);
    assert_true(c.in_ten >= c.before_ten + 10);
    assert_true(c.in_ten <= c.after_ten + 10);
    assert_true(c.t1 >= c.t0 + SHORT_MS);
    assert_true(c.in_big == LAHJA_FOREVER);
    assert_true(c.in_max == LAHJA_FOREVER);
    assert_true(c.in_edge == LAHJA_FOREVER);
}

int main(void)
{
    /* Several cases are about lahja_run returning instead of hanging: a
     * hang ends the binary (SIGALRM) well before the test timeout. */
    alarm(60);
    const struct CMUnitTest tests[] = {
        TEST(test_returns_main_result),
        TEST(test_main_task_gets_options),
        TEST(test_null_fn_is_einval),
        TEST(test_nested_run_is_ebusy),
        TEST(test_run_beside_thread_runtime_is_ebusy),
        TEST(test_runs_on_two_threads_at_once),
        TEST(test_leftover_root_tasks_cancelled_and_awaited),
        TEST(test_deadlock_is_reported),
        TEST(test_deadlock_in_nursery_is_reported),
        TEST(test_sleeping_is_not_deadlock),
        TEST(test_deadlock_seen_with_an_old_deadline_armed),
        TEST(test_each_wait_ends_at_its_own_deadline),
        TEST(test_small_blocks_are_reused_and_freed),
        TEST(test_open_user_handles_do_not_block_return),
        TEST(test_suspending_calls_without_runtime),
        TEST(test_suspending_calls_from_libuv_callback),
        TEST(test_clock_without_runtime),
        TEST(test_clock_advances_and_saturates),
        TEST(test_unreleased_handle_does_not_outlive_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
