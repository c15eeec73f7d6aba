/*
 * Cancel scopes: level-triggered cancellation, scope and call deadlines,
 * nesting, shields, moving deadlines, and deadlines reaching the tasks
 * of nurseries opened inside a scope.
 */
#include <errno.h>

#include "support_task.h"

static int wait_event(void *arg)
{
    return lahja_latch_wait(arg, LAHJA_FOREVER);
}

static int set_flag(void *arg)
{
    *(int *)arg = 1;
    return 0;
}

/* ------------------------------------------------ level-triggered */

/* Every kind of suspending call, inside a cancelled scope, fails at
 * once and keeps failing: none of them blocks (which would deadlock). */
static void expect_all_cancelled(lahja_task_t *blocked, int code)
{
    lahja_latch_t unset, set;
    lahja_latch_init(&unset);
    lahja_latch_init(&set);
    assert_int_equal(lahja_latch_set(&set), 0);
    lahja_cond_t cond;
    lahja_cond_init(&cond);
    lahja_queue_t *q;
    assert_int_equal(lahja_queue_new(1, &q), 0);
    void *item = NULL;

    for (int round = 0; round < 2; round++) {
        assert_int_equal(lahja_checkpoint(), code);
        assert_int_equal(lahja_sleep(GUARD_MS), code);
        assert_int_equal(lahja_sleep_until(0), code); /* even if already due */
        assert_int_equal(lahja_yield(), code);
        assert_int_equal(lahja_latch_wait(&unset, LAHJA_FOREVER), code);
        assert_int_equal(lahja_latch_wait(&set, LAHJA_FOREVER), code); /* a checkpoint */
        assert_int_equal(lahja_cond_wait(&cond, LAHJA_FOREVER), code);
        assert_int_equal(lahja_queue_recv(q, &item, LAHJA_FOREVER), code);
        assert_int_equal(lahja_task_join(blocked, LAHJA_FOREVER, NULL), code);
    }
    assert_int_equal(lahja_queue_len(q), 0);
    assert_int_equal(lahja_queue_send(q, &item, LAHJA_FOREVER), code);
    assert_int_equal(lahja_queue_len(q), 0); /* the item was not queued */
    lahja_queue_free(q);
}

static int main_cancel_is_level_triggered(void *unused)
{
    (void)unused;
    lahja_latch_t ev;
    lahja_latch_init(&ev);
    lahja_task_t *blocked;
    assert_int_equal(lahja_spawn(lahja_rt_current(), wait_event, &ev, NULL, &blocked), 0);

    lahja_scope_t *s;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), 0);
    assert_int_equal(lahja_checkpoint(), 0);
    lahja_scope_cancel(s);
    lahja_scope_cancel(s); /* idempotent */
    expect_all_cancelled(blocked, -ECANCELED);
    assert_int_equal(lahja_scope_close(s), -ECANCELED);

    /* Closing the scope ends it. */
    assert_int_equal(lahja_checkpoint(), 0);
    assert_int_equal(lahja_yield(), 0);
    assert_int_equal(lahja_sleep(1), 0);
    assert_int_equal(lahja_latch_set(&ev), 0);
    int res = PENDING;
    assert_int_equal(lahja_task_join(blocked, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, 0);
    return 0;
}
MAIN_TEST(cancel_is_level_triggered)

/* A scope cancelled by another task while its owner is blocked. */
struct victim {
    struct gate gate;
    lahja_latch_t never;
    lahja_scope_t *scope;
    int rc_wait, rc_again, rc_close, rc_after;
};

static void victim_init(struct victim *v)
{
    gate_init(&v->gate, 1);
    lahja_latch_init(&v->never);
    v->scope = NULL;
    v->rc_wait = v->rc_again = v->rc_close = v->rc_after = PENDING;
}

static int victim_in_scope(void *arg)
{
    struct victim *v = arg;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &v->scope), 0);
    gate_arrive(&v->gate);
    v->rc_wait = lahja_latch_wait(&v->never, LAHJA_FOREVER);
    v->rc_again = lahja_sleep(GUARD_MS);
    v->rc_close = lahja_scope_close(v->scope);
    v->rc_after = lahja_checkpoint();
    return 0;
}

static int main_cancel_wakes_blocked_call(void *unused)
{
    (void)unused;
    struct victim v;
    victim_init(&v);
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), victim_in_scope, &v, NULL, &t), 0);
    gate_wait(&v.gate);
    assert_int_equal(v.rc_wait, PENDING);
    lahja_scope_cancel(v.scope);
    int res = PENDING;
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, &res), 0);
    assert_int_equal(res, 0);
    assert_int_equal(v.rc_wait, -ECANCELED);
    assert_int_equal(v.rc_again, -ECANCELED);
    assert_int_equal(v.rc_close, -ECANCELED);
    assert_int_equal(v.rc_after, 0);
    return 0;
}
MAIN_TEST(cancel_wakes_blocked_call)

/* A finished task's join is a suspending call like any other: inside a
 * cancelled scope it reports the cancellation (header: "every call
 * documented as suspending is a checkpoint"; lahja_latch_wait on a set
 * event does the same). */
struct join_done {
    int rc_join;
    int res;
};

static int main_join_finished_in_cancelled_scope(void *arg)
{
    struct join_done *j = arg;
    int flag = 0;
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), set_flag, &flag, NULL, &t), 0);
    assert_int_equal(lahja_yield(), 0);
    assert_int_equal(lahja_task_done(t), 1);

    lahja_scope_t *s;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), 0);
    lahja_scope_cancel(s);
    j->rc_join = lahja_task_join(t, LAHJA_FOREVER, &j->res);
    assert_int_equal(lahja_scope_close(s), -ECANCELED);
    if (j->rc_join != 0) /* the handle is still ours */
        assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, NULL), 0);
    return 0;
}

static void test_join_finished_in_cancelled_scope(void **state)
{
    (void)state;
    struct join_done j = { PENDING, PENDING };
    run_main(main_join_finished_in_cancelled_scope, &j);
    assert_int_equal(j.rc_join, -ECANCELED);
    assert_int_equal(j.res, PENDING);
}

/* --------------------------------------------------------- deadlines */

static int main_scope_deadline(void *unused)
{
    (void)unused;
    lahja_latch_t never;
    lahja_latch_init(&never);
    lahja_scope_t *s;
    lahja_time_t d = lahja_deadline_in(20);
    assert_int_equal(lahja_scope_open(d, 0, &s), 0);
    assert_int_equal(lahja_latch_wait(&never, LAHJA_FOREVER), -ETIMEDOUT);
    assert_not_before(lahja_now(), d);
    /* Level-triggered like a cancellation. */
    assert_int_equal(lahja_checkpoint(), -ETIMEDOUT);
    assert_int_equal(lahja_sleep(1), -ETIMEDOUT);
    assert_int_equal(lahja_yield(), -ETIMEDOUT);
    assert_int_equal(lahja_scope_close(s), -ETIMEDOUT);
    assert_int_equal(lahja_checkpoint(), 0);
    return 0;
}
MAIN_TEST(scope_deadline)

static int main_scope_close_codes(void *unused)
{
    (void)unused;
    lahja_scope_t *s;
    /* Neither cancelled nor due: 0, even after suspending inside. */
    assert_int_equal(lahja_scope_open(lahja_deadline_in(GUARD_MS), 0, &s), 0);
    assert_int_equal(lahja_sleep(1), 0);
    assert_int_equal(lahja_scope_close(s), 0);

    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), 0);
    lahja_scope_cancel(s);
    assert_int_equal(lahja_scope_close(s), -ECANCELED);

    /* A deadline already due is noticed at the first checkpoint. */
    assert_int_equal(lahja_scope_open(lahja_now(), 0, &s), 0);
    assert_int_equal(lahja_checkpoint(), -ETIMEDOUT);
    assert_int_equal(lahja_scope_close(s), -ETIMEDOUT);

    /* Cancelled first, then due: it stays cancelled. */
    assert_int_equal(lahja_scope_open(lahja_deadline_in(1), 0, &s), 0);
    lahja_scope_cancel(s);
    assert_int_equal(lahja_sleep(GUARD_MS), -ECANCELED);
    assert_int_equal(lahja_scope_close(s), -ECANCELED);
    return 0;
}
MAIN_TEST(scope_close_codes)

/* The call's deadline comes first: the call times out, the scope not. */
static int main_call_deadline_before_scope_deadline(void *unused)
{
    (void)unused;
    lahja_latch_t never;
    lahja_latch_init(&never);
    lahja_scope_t *s;
    assert_int_equal(lahja_scope_open(lahja_deadline_in(GUARD_MS), 0, &s), 0);
    lahja_time_t d = lahja_deadline_in(20);
    assert_int_equal(lahja_latch_wait(&never, d), -ETIMEDOUT);
    assert_not_before(lahja_now(), d);
    assert_int_equal(lahja_checkpoint(), 0);
    /* For sleep, reaching its own deadline is success. */
    d = lahja_deadline_in(20);
    assert_int_equal(lahja_sleep_until(d), 0);
    assert_not_before(lahja_now(), d);
    assert_int_equal(lahja_scope_close(s), 0);
    return 0;
}
MAIN_TEST(call_deadline_before_scope_deadline)

/* The scope's deadline comes first: the call and the scope time out. */
static int main_scope_deadline_before_call_deadline(void *unused)
{
    (void)unused;
    lahja_latch_t never;
    lahja_latch_init(&never);
    lahja_scope_t *s;
    lahja_time_t d = lahja_deadline_in(20);
    assert_int_equal(lahja_scope_open(d, 0, &s), 0);
    lahja_time_t guard = lahja_deadline_in(GUARD_MS);
    assert_int_equal(lahja_sleep_until(guard), -ETIMEDOUT);
    assert_in_range(lahja_now(), d, guard - 1);
    assert_int_equal(lahja_latch_wait(&never, lahja_deadline_in(GUARD_MS)), -ETIMEDOUT);
    assert_int_equal(lahja_scope_close(s), -ETIMEDOUT);
    return 0;
}
MAIN_TEST(scope_deadline_before_call_deadline)

/* -------------------------------------------------------------- nesting */

struct nested {
    struct gate gate;
    lahja_latch_t never;
    lahja_scope_t *outer;
    int rc_wait, rc_inner_call, rc_inner_close, rc_between, rc_outer_close, rc_after;
};

static int nested_victim(void *arg)
{
    struct nested *v = arg;
    lahja_scope_t *inner;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &v->outer), 0);
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &inner), 0);
    gate_arrive(&v->gate);
    v->rc_wait = lahja_latch_wait(&v->never, LAHJA_FOREVER);
    v->rc_inner_call = lahja_yield();
    v->rc_inner_close = lahja_scope_close(inner);
    v->rc_between = lahja_sleep(GUARD_MS);
    v->rc_outer_close = lahja_scope_close(v->outer);
    v->rc_after = lahja_checkpoint();
    return 0;
}

static int main_nested_outer_cancelled(void *unused)
{
    (void)unused;
    struct nested v = { .rc_wait = PENDING };
    gate_init(&v.gate, 1);
    lahja_latch_init(&v.never);
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), nested_victim, &v, NULL, &t), 0);
    gate_wait(&v.gate);
    lahja_scope_cancel(v.outer);
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, NULL), 0);
    assert_int_equal(v.rc_wait, -ECANCELED);
    assert_int_equal(v.rc_inner_call, -ECANCELED);
    assert_int_equal(v.rc_inner_close, 0);           /* not its own */
    assert_int_equal(v.rc_between, -ECANCELED);      /* outer still is */
    assert_int_equal(v.rc_outer_close, -ECANCELED);
    assert_int_equal(v.rc_after, 0);
    return 0;
}
MAIN_TEST(nested_outer_cancelled)

static int main_nested_inner_cancelled(void *unused)
{
    (void)unused;
    lahja_scope_t *outer, *inner;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &outer), 0);
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &inner), 0);
    lahja_scope_cancel(inner);
    assert_int_equal(lahja_sleep(GUARD_MS), -ECANCELED);
    assert_int_equal(lahja_scope_close(inner), -ECANCELED);
    /* The outer scope never saw it. */
    assert_int_equal(lahja_sleep(1), 0);
    assert_int_equal(lahja_scope_close(outer), 0);
    return 0;
}
MAIN_TEST(nested_inner_cancelled)

/* ----------------------------------------------------------- shields */

/* A cancelled task's cleanup, in a shield, suspends in every way. */
struct cleanup {
    struct gate gate;
    lahja_queue_t *to_main, *from_main;
    lahja_latch_t ev;
    int rc_cancelled, rc_sleep, rc_send, rc_wait, rc_recv, rc_shield_close, rc_after;
    void *reply;
};

static int cancelled_cleanup(void *arg)
{
    struct cleanup *c = arg;
    gate_arrive(&c->gate);
    c->rc_cancelled = lahja_sleep_until(LAHJA_FOREVER);
    lahja_scope_t *shield;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, LAHJA_SCOPE_SHIELD, &shield), 0);
    c->rc_sleep = lahja_sleep(2);
    c->rc_send = lahja_queue_send(c->to_main, c, LAHJA_FOREVER);
    c->rc_wait = lahja_latch_wait(&c->ev, lahja_deadline_in(GUARD_MS));
    c->rc_recv = lahja_queue_recv(c->from_main, &c->reply, lahja_deadline_in(GUARD_MS));
    c->rc_shield_close = lahja_scope_close(shield);
    c->rc_after = lahja_checkpoint();
    return c->rc_cancelled;
}

static int main_shield_cleanup_suspends(void *unused)
{
    (void)unused;
    struct cleanup c = { .reply = NULL };
    gate_init(&c.gate, 1);
    lahja_latch_init(&c.ev);
    assert_int_equal(lahja_queue_new(1, &c.to_main), 0);
    assert_int_equal(lahja_queue_new(1, &c.from_main), 0);
    lahja_nursery_t *n;
    lahja_task_t *t;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, cancelled_cleanup, &c, NULL, &t), 0);
    gate_wait(&c.gate);

    lahja_task_cancel(t);
    void *item = NULL;
    assert_int_equal(lahja_queue_recv(c.to_main, &item, lahja_deadline_in(GUARD_MS)), 0);
    assert_ptr_equal(item, &c);
    assert_int_equal(lahja_latch_set(&c.ev), 0);
    assert_int_equal(lahja_queue_send(c.from_main, &item, LAHJA_FOREVER), 0);
    assert_int_equal(lahja_nursery_join(n), 0);
    assert_int_equal(lahja_nursery_nfailures(n), 0); /* cancelled, not failed */
    lahja_nursery_free(n);

    assert_int_equal(c.rc_cancelled, -ECANCELED);
    assert_int_equal(c.rc_sleep, 0);
    assert_int_equal(c.rc_send, 0);
    assert_int_equal(c.rc_wait, 0);
    assert_int_equal(c.rc_recv, 0);
    assert_ptr_equal(c.reply, &item);
    assert_int_equal(c.rc_shield_close, 0);
    assert_int_equal(c.rc_after, -ECANCELED); /* back under the cancellation */
    lahja_queue_free(c.to_main);
    lahja_queue_free(c.from_main);
    return 0;
}
MAIN_TEST(shield_cleanup_suspends)

static int main_shield_own_deadline(void *unused)
{
    (void)unused;
    lahja_scope_t *outer, *shield;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &outer), 0);
    lahja_scope_cancel(outer);
    assert_int_equal(lahja_checkpoint(), -ECANCELED);

    lahja_latch_t never;
    lahja_latch_init(&never);
    lahja_time_t d = lahja_deadline_in(20);
    assert_int_equal(lahja_scope_open(d, LAHJA_SCOPE_SHIELD, &shield), 0);
    assert_int_equal(lahja_checkpoint(), 0);
    assert_int_equal(lahja_latch_wait(&never, LAHJA_FOREVER), -ETIMEDOUT);
    assert_not_before(lahja_now(), d);
    assert_int_equal(lahja_scope_close(shield), -ETIMEDOUT);
    assert_int_equal(lahja_checkpoint(), -ECANCELED);
    assert_int_equal(lahja_scope_close(outer), -ECANCELED);
    return 0;
}
MAIN_TEST(shield_own_deadline)

/* A shield also hides an outer deadline. */
static int main_shield_hides_outer_deadline(void *unused)
{
    (void)unused;
    lahja_scope_t *outer, *shield;
    lahja_time_t d = lahja_deadline_in(10);
    assert_int_equal(lahja_scope_open(d, 0, &outer), 0);
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, LAHJA_SCOPE_SHIELD, &shield), 0);
    lahja_time_t d2 = d + 20;
    assert_int_equal(lahja_sleep_until(d2), 0);
    assert_not_before(lahja_now(), d2);
    assert_int_equal(lahja_scope_close(shield), 0);
    assert_int_equal(lahja_checkpoint(), -ETIMEDOUT);
    assert_int_equal(lahja_scope_close(outer), -ETIMEDOUT);
    return 0;
}
MAIN_TEST(shield_hides_outer_deadline)

struct unshield {
    struct gate gate;
    lahja_latch_t never;
    lahja_scope_t *shield;
    int rc_wait, rc_close, rc_after;
    lahja_time_t guard, woke;
};

static int shielded_waiter(void *arg)
{
    struct unshield *u = arg;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, LAHJA_SCOPE_SHIELD, &u->shield), 0);
    gate_arrive(&u->gate);
    u->guard = lahja_deadline_in(GUARD_MS);
    u->rc_wait = lahja_latch_wait(&u->never, u->guard);
    u->woke = lahja_now();
    u->rc_close = lahja_scope_close(u->shield);
    u->rc_after = lahja_checkpoint();
    return 0;
}

static int main_shield_off_wakes(void *unused)
{
    (void)unused;
    struct unshield u = { .rc_wait = PENDING };
    gate_init(&u.gate, 1);
    lahja_latch_init(&u.never);
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), shielded_waiter, &u, NULL, &t), 0);
    gate_wait(&u.gate);

    lahja_task_cancel(t);
    /* Give the cancellation every chance to get through: it must not. */
    assert_int_equal(lahja_yield(), 0);
    assert_int_equal(lahja_yield(), 0);
    assert_int_equal(u.rc_wait, PENDING);

    lahja_scope_set_shield(u.shield, 0);
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, NULL), 0);
    assert_int_equal(u.rc_wait, -ECANCELED);
    /* Woken by the change, not by its guard deadline. */
    assert_true(u.woke < u.guard);
    assert_int_equal(u.rc_close, 0); /* the scope itself was not cancelled */
    assert_int_equal(u.rc_after, -ECANCELED);
    return 0;
}
MAIN_TEST(shield_off_wakes)

/* ---------------------------------------------------- moving deadlines */

struct mover {
    struct gate gate;
    lahja_time_t initial;
    lahja_scope_t *scope;
    int rc_sleep, rc_close;
    lahja_time_t guard, woke;
};

static int sleep_in_scope(void *arg)
{
    struct mover *m = arg;
    assert_int_equal(lahja_scope_open(m->initial, 0, &m->scope), 0);
    gate_arrive(&m->gate);
    /* A long own deadline: the sleep must end well before it. */
    m->guard = lahja_deadline_in(GUARD_MS);
    m->rc_sleep = lahja_sleep_until(m->guard);
    m->woke = lahja_now();
    m->rc_close = lahja_scope_close(m->scope);
    return 0;
}

/* Runs sleep_in_scope with `initial`, then moves the deadline to now +
 * `ms` and checks the sleeper woke at the new deadline, not before. */
static void move_deadline(lahja_time_t initial, uint64_t ms)
{
    struct mover m = { .initial = initial, .rc_sleep = PENDING };
    gate_init(&m.gate, 1);
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), sleep_in_scope, &m, NULL, &t), 0);
    gate_wait(&m.gate);
    lahja_time_t d = lahja_deadline_in(ms);
    lahja_scope_set_deadline(m.scope, d);
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, NULL), 0);
    assert_int_equal(m.rc_sleep, -ETIMEDOUT);
    assert_in_range(m.woke, d, m.guard - 1);
    assert_int_equal(m.rc_close, -ETIMEDOUT);
}

static int main_set_deadline_earlier(void *unused)
{
    (void)unused;
    move_deadline(LAHJA_FOREVER, 20);
    return 0;
}
MAIN_TEST(set_deadline_earlier)

static int main_set_deadline_later(void *unused)
{
    (void)unused;
    /* The sleeper cannot run between its suspension and the move (this
     * task runs first), so the 20 ms deadline never gets to fire. */
    move_deadline(lahja_deadline_in(20), 80);
    return 0;
}
MAIN_TEST(set_deadline_later)

static int main_set_deadline_past(void *unused)
{
    (void)unused;
    move_deadline(LAHJA_FOREVER, 0);
    return 0;
}
MAIN_TEST(set_deadline_past)

/* ------------------------------------- deadlines reaching nurseries */

struct reach {
    lahja_latch_t never;
    int rc_child[2], rc_grandchild, rc_inner_close;
    lahja_time_t woke[2];
};

static int reach_grandchild(void *arg)
{
    struct reach *r = arg;
    r->rc_grandchild = lahja_latch_wait(&r->never, LAHJA_FOREVER);
    return r->rc_grandchild;
}

static int reach_child0(void *arg)
{
    struct reach *r = arg;
    r->rc_child[0] = lahja_latch_wait(&r->never, LAHJA_FOREVER);
    r->woke[0] = lahja_now();
    return r->rc_child[0];
}

/* Waits in its own nursery, whose child waits forever. */
static int reach_child1(void *arg)
{
    struct reach *r = arg;
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, reach_grandchild, r, NULL, NULL), 0);
    r->rc_inner_close = lahja_nursery_close(n);
    r->rc_child[1] = r->rc_inner_close;
    r->woke[1] = lahja_now();
    return r->rc_child[1];
}

static int main_deadline_reaches_nursery(void *unused)
{
    (void)unused;
    struct reach r = { .rc_grandchild = PENDING };
    lahja_latch_init(&r.never);
    lahja_scope_t *s;
    lahja_time_t d = lahja_deadline_in(20);
    assert_int_equal(lahja_scope_open(d, 0, &s), 0);
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, reach_child0, &r, NAMED("child0"), NULL), 0);
    assert_int_equal(lahja_nursery_spawn(n, reach_child1, &r, NAMED("child1"), NULL), 0);
    assert_int_equal(lahja_nursery_join(n), -ETIMEDOUT);
    /* Ending on the deadline of an enclosing scope is not a failure. */
    assert_int_equal(lahja_nursery_nfailures(n), 0);
    lahja_nursery_free(n);
    assert_int_equal(lahja_scope_close(s), -ETIMEDOUT);

    assert_int_equal(r.rc_child[0], -ETIMEDOUT);
    assert_int_equal(r.rc_grandchild, -ETIMEDOUT);
    assert_int_equal(r.rc_inner_close, -ETIMEDOUT);
    assert_not_before(r.woke[0], d);
    assert_not_before(r.woke[1], d);
    return 0;
}
MAIN_TEST(deadline_reaches_nursery)

/* Moving a deadline earlier reaches the nursery's children too. */
struct early_child {
    struct gate *gate;
    lahja_time_t guard, woke;
    int rc;
};

static int sleep_until_guard(void *arg)
{
    struct early_child *c = arg;
    c->guard = lahja_deadline_in(GUARD_MS);
    gate_arrive(c->gate);
    c->rc = lahja_sleep_until(c->guard);
    c->woke = lahja_now();
    return c->rc;
}

static int main_set_deadline_reaches_nursery(void *unused)
{
    (void)unused;
    struct gate g;
    gate_init(&g, 2);
    struct early_child c[2] = { { &g, 0, 0, PENDING }, { &g, 0, 0, PENDING } };
    lahja_scope_t *s;
    lahja_nursery_t *n;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), 0);
    assert_int_equal(lahja_nursery_open(&n), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(lahja_nursery_spawn(n, sleep_until_guard, &c[i], NULL, NULL), 0);
    gate_wait(&g);
    lahja_time_t d = lahja_deadline_in(20);
    lahja_scope_set_deadline(s, d);
    assert_int_equal(lahja_nursery_close(n), -ETIMEDOUT);
    assert_int_equal(lahja_scope_close(s), -ETIMEDOUT);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(c[i].rc, -ETIMEDOUT);
        assert_in_range(c[i].woke, d, c[i].guard - 1);
    }
    return 0;
}
MAIN_TEST(set_deadline_reaches_nursery)

/* ------------------------------------------------------- checkpoint */

static int main_checkpoint_does_not_suspend(void *unused)
{
    (void)unused;
    int flag = 0;
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), set_flag, &flag, NULL, &t), 0);
    lahja_scope_t *s;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), 0);
    assert_int_equal(lahja_checkpoint(), 0);
    lahja_scope_cancel(s);
    assert_int_equal(lahja_checkpoint(), -ECANCELED);
    assert_int_equal(lahja_checkpoint(), -ECANCELED);
    assert_int_equal(lahja_scope_close(s), -ECANCELED);
    assert_int_equal(lahja_checkpoint(), 0);
    /* None of these let the ready task run. */
    assert_int_equal(flag, 0);
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, NULL), 0);
    assert_int_equal(flag, 1);
    return 0;
}
MAIN_TEST(checkpoint_does_not_suspend)

static void test_outside_task(void **state)
{
    (void)state;
    uv_loop_t loop;
    lahja_rt_t *rt;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(lahja_rt_new(&loop, NULL, &rt), 0);
    lahja_scope_t *s = NULL;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), LAHJA_ENOTASK);
    assert_null(s);
    assert_int_equal(lahja_checkpoint(), LAHJA_ENOTASK);
    assert_int_equal(lahja_rt_close(rt), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_is_level_triggered),
        cmocka_unit_test(test_cancel_wakes_blocked_call),
        cmocka_unit_test(test_join_finished_in_cancelled_scope),
        cmocka_unit_test(test_scope_deadline),
        cmocka_unit_test(test_scope_close_codes),
        cmocka_unit_test(test_call_deadline_before_scope_deadline),
        cmocka_unit_test(test_scope_deadline_before_call_deadline),
        cmocka_unit_test(test_nested_outer_cancelled),
        cmocka_unit_test(test_nested_inner_cancelled),
        cmocka_unit_test(test_shield_cleanup_suspends),
        cmocka_unit_test(test_shield_own_deadline),
        cmocka_unit_test(test_shield_hides_outer_deadline),
        cmocka_unit_test(test_shield_off_wakes),
        cmocka_unit_test(test_set_deadline_earlier),
        cmocka_unit_test(test_set_deadline_later),
        cmocka_unit_test(test_set_deadline_past),
        cmocka_unit_test(test_deadline_reaches_nursery),
        cmocka_unit_test(test_set_deadline_reaches_nursery),
        cmocka_unit_test(test_checkpoint_does_not_suspend),
        cmocka_unit_test(test_outside_task),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
