/*
 * The bounded FIFO queue between tasks: order, capacity, senders
 * suspending while full, hand-off to waiting receivers, close, and a
 * many-producer many-consumer stress.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>
#include <lahja/lahja.h>

#include "support_sync.h"

static lahja_queue_t *new_queue(size_t cap)
{
    lahja_queue_t *q = NULL;
    assert_int_equal(lahja_queue_new(cap, &q), 0);
    assert_non_null(q);
    return q;
}

/* Takes one item without waiting and checks it. */
static void expect_item(lahja_queue_t *q, uintptr_t want)
{
    void *item = NULL;
    assert_int_equal(lahja_queue_try_recv(q, &item), 0);
    assert_int_equal(ITEM_VAL(item), want);
}

/* ---------------------------------------------- without suspending */

static void test_new_rejects_zero_capacity(void **state)
{
    (void)state;
    lahja_queue_t *q = ITEM(0x1234);
    assert_int_equal(lahja_queue_new(0, &q), -EINVAL);
    assert_ptr_equal(q, ITEM(0x1234)); /* output untouched on error */
    assert_int_equal(lahja_queue_new(1, NULL), -EINVAL);
    lahja_queue_free(NULL);
}

static void test_fifo_order(void **state)
{
    (void)state;
    lahja_queue_t *q = new_queue(5);
    for (uintptr_t i = 1; i <= 5; i++)
        assert_int_equal(lahja_queue_try_send(q, ITEM(i)), 0);
    assert_int_equal(lahja_queue_len(q), 5);
    for (uintptr_t i = 1; i <= 5; i++)
        expect_item(q, i);
    assert_int_equal(lahja_queue_len(q), 0);
    lahja_queue_free(q);
}

static void test_fifo_order_across_wraparound(void **state)
{
    (void)state;
    lahja_queue_t *q = new_queue(3);
    uintptr_t next_in = 1, next_out = 1;
    /* Two in, two out, many times: the ring's head goes round. */
    for (int round = 0; round < 10; round++) {
        assert_int_equal(lahja_queue_try_send(q, ITEM(next_in++)), 0);
        assert_int_equal(lahja_queue_try_send(q, ITEM(next_in++)), 0);
        expect_item(q, next_out++);
        expect_item(q, next_out++);
        if (round % 3 == 0) { /* and sometimes fill it up */
            assert_int_equal(lahja_queue_try_send(q, ITEM(next_in++)), 0);
            assert_int_equal(lahja_queue_try_send(q, ITEM(next_in++)), 0);
            assert_int_equal(lahja_queue_try_send(q, ITEM(next_in++)), 0);
            for (int k = 0; k < 3; k++)
                expect_item(q, next_out++);
        }
    }
    assert_int_equal(lahja_queue_len(q), 0);
    lahja_queue_free(q);
}

static void test_capacity_honoured(void **state)
{
    (void)state;
    lahja_queue_t *q = new_queue(3);
    void *item = ITEM(0x77);
    assert_int_equal(lahja_queue_try_recv(q, &item), -EAGAIN);
    assert_ptr_equal(item, ITEM(0x77));
    for (uintptr_t i = 1; i <= 3; i++)
        assert_int_equal(lahja_queue_try_send(q, ITEM(i)), 0);
    assert_int_equal(lahja_queue_try_send(q, ITEM(4)), -EAGAIN);
    assert_int_equal(lahja_queue_len(q), 3);
    for (uintptr_t i = 1; i <= 3; i++)
        expect_item(q, i); /* the refused item is not among them */
    assert_int_equal(lahja_queue_try_recv(q, &item), -EAGAIN);
    lahja_queue_free(q);
}

static void test_suspending_calls_outside_task(void **state)
{
    (void)state;
    lahja_queue_t *q = new_queue(1);
    void *item = NULL;
    assert_int_equal(lahja_queue_send(q, ITEM(1), LAHJA_FOREVER), LAHJA_ENOTASK);
    assert_int_equal(lahja_queue_recv(q, &item, LAHJA_FOREVER), LAHJA_ENOTASK);
    assert_int_equal(lahja_queue_len(q), 0);
    lahja_queue_free(q);
}

/* --------------------------------------------------- blocked tasks */

/* A task blocked in send or recv, and what it got. */
struct peer {
    lahja_queue_t *q;
    counter_t *blocked;  /* bumped right before the call */
    counter_t *returned; /* bumped when it returned */
    uintptr_t item;      /* sent, or received */
    lahja_time_t deadline;
    int rc;
};

static int sender(void *arg)
{
    struct peer *p = arg;
    counter_bump(p->blocked);
    p->rc = lahja_queue_send(p->q, ITEM(p->item), p->deadline);
    counter_bump(p->returned);
    return 0;
}

static int receiver(void *arg)
{
    struct peer *p = arg;
    void *item = NULL;
    counter_bump(p->blocked);
    p->rc = lahja_queue_recv(p->q, &item, p->deadline);
    if (p->rc == 0)
        p->item = ITEM_VAL(item);
    counter_bump(p->returned);
    return 0;
}

struct peers {
    lahja_queue_t *q;
    counter_t blocked, returned;
    struct peer p[3];
    lahja_nursery_t *nursery;
};

/* Starts n peers running fn, in order, and waits until all are blocked. */
static void start_peers(struct peers *ps, int n, lahja_task_fn fn, uintptr_t first_item)
{
    counter_init(&ps->blocked);
    counter_init(&ps->returned);
    assert_int_equal(lahja_nursery_open(&ps->nursery), 0);
    for (int i = 0; i < n; i++) {
        ps->p[i] = (struct peer){ ps->q, &ps->blocked, &ps->returned,
                                  first_item + (uintptr_t)i, LAHJA_FOREVER, 1 };
        assert_int_equal(lahja_nursery_spawn(ps->nursery, fn, &ps->p[i], NULL, NULL), 0);
    }
    assert_int_equal(counter_wait(&ps->blocked, n), 0);
    assert_int_equal(ps->returned.n, 0);
}

static int main_send_suspends_while_full(void *arg)
{
    (void)arg;
    struct peers ps = { .q = new_queue(2) };
    assert_int_equal(lahja_queue_try_send(ps.q, ITEM(1)), 0);
    assert_int_equal(lahja_queue_try_send(ps.q, ITEM(2)), 0);
    start_peers(&ps, 2, sender, 3); /* sending 3, then 4 */
    void *item = NULL;

    assert_int_equal(lahja_queue_recv(ps.q, &item, LAHJA_FOREVER), 0);
    assert_int_equal(ITEM_VAL(item), 1);
    /* Taking made room for the first waiting sender only. */
    assert_int_equal(counter_wait(&ps.returned, 1), 0);
    assert_int_equal(ps.p[0].rc, 0);
    assert_int_equal(ps.p[1].rc, 1);
    assert_int_equal(lahja_queue_len(ps.q), 2);

    assert_int_equal(lahja_queue_recv(ps.q, &item, LAHJA_FOREVER), 0);
    assert_int_equal(ITEM_VAL(item), 2);
    assert_int_equal(counter_wait(&ps.returned, 2), 0);
    assert_int_equal(ps.p[1].rc, 0);

    /* The waiting senders' items follow, in the order they waited. */
    expect_item(ps.q, 3);
    expect_item(ps.q, 4);
    assert_int_equal(lahja_queue_try_recv(ps.q, &item), -EAGAIN);
    assert_int_equal(lahja_nursery_close(ps.nursery), 0);
    lahja_queue_free(ps.q);
    return 0;
}

static void test_send_suspends_while_full_fifo(void **state)
{
    (void)state;
    RUN_MAIN(main_send_suspends_while_full, NULL);
}

static int main_handoff(void *arg)
{
    (void)arg;
    struct peers ps = { .q = new_queue(1) };
    start_peers(&ps, 2, receiver, 0);
    /* Each item goes straight to a waiting receiver, oldest first,
     * without occupying the queue. */
    assert_int_equal(lahja_queue_try_send(ps.q, ITEM(9)), 0);
    assert_int_equal(lahja_queue_len(ps.q), 0);
    assert_int_equal(lahja_queue_send(ps.q, ITEM(10), LAHJA_FOREVER), 0);
    assert_int_equal(lahja_queue_len(ps.q), 0);
    /* No receiver waits any more: the next item is queued. */
    assert_int_equal(lahja_queue_try_send(ps.q, ITEM(11)), 0);
    assert_int_equal(lahja_queue_len(ps.q), 1);
    assert_int_equal(lahja_nursery_close(ps.nursery), 0);
    assert_int_equal(ps.p[0].rc, 0);
    assert_int_equal(ps.p[0].item, 9);
    assert_int_equal(ps.p[1].rc, 0);
    assert_int_equal(ps.p[1].item, 10);
    expect_item(ps.q, 11);
    lahja_queue_free(ps.q);
    return 0;
}

static void test_direct_handoff_to_waiting_receiver(void **state)
{
    (void)state;
    RUN_MAIN(main_handoff, NULL);
}

static int main_close_wakes_senders(void *arg)
{
    (void)arg;
    struct peers ps = { .q = new_queue(1) };
    assert_int_equal(lahja_queue_try_send(ps.q, ITEM(1)), 0);
    start_peers(&ps, 3, sender, 2);
    lahja_queue_close(ps.q);
    assert_int_equal(lahja_nursery_close(ps.nursery), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ps.p[i].rc, -EPIPE);
    /* None of their items got in; later sends fail too. */
    assert_int_equal(lahja_queue_len(ps.q), 1);
    assert_int_equal(lahja_queue_try_send(ps.q, ITEM(5)), -EPIPE);
    assert_int_equal(lahja_queue_send(ps.q, ITEM(5), LAHJA_FOREVER), -EPIPE);
    expect_item(ps.q, 1);
    lahja_queue_free(ps.q);
    return 0;
}

static void test_close_wakes_every_sender(void **state)
{
    (void)state;
    RUN_MAIN(main_close_wakes_senders, NULL);
}

static int main_close_wakes_receivers(void *arg)
{
    (void)arg;
    struct peers ps = { .q = new_queue(4) };
    start_peers(&ps, 3, receiver, 0);
    lahja_queue_close(ps.q);
    assert_int_equal(lahja_nursery_close(ps.nursery), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ps.p[i].rc, -EPIPE);
    void *item = NULL;
    assert_int_equal(lahja_queue_recv(ps.q, &item, LAHJA_FOREVER), -EPIPE);
    lahja_queue_free(ps.q);
    return 0;
}

static void test_close_wakes_every_receiver(void **state)
{
    (void)state;
    RUN_MAIN(main_close_wakes_receivers, NULL);
}

static int main_drain_after_close(void *arg)
{
    (void)arg;
    lahja_queue_t *q = new_queue(3);
    assert_int_equal(lahja_queue_try_send(q, ITEM(1)), 0);
    assert_int_equal(lahja_queue_try_send(q, ITEM(2)), 0);
    lahja_queue_close(q);
    lahja_queue_close(q); /* idempotent */
    void *item = NULL;
    assert_int_equal(lahja_queue_recv(q, &item, LAHJA_FOREVER), 0);
    assert_int_equal(ITEM_VAL(item), 1);
    assert_int_equal(lahja_queue_recv(q, &item, LAHJA_FOREVER), 0);
    assert_int_equal(ITEM_VAL(item), 2);
    item = ITEM(0x77);
    assert_int_equal(lahja_queue_recv(q, &item, LAHJA_FOREVER), -EPIPE);
    assert_int_equal(lahja_queue_try_recv(q, &item), -EPIPE);
    assert_ptr_equal(item, ITEM(0x77));
    lahja_queue_free(q);
    return 0;
}

static void test_receivers_drain_after_close(void **state)
{
    (void)state;
    RUN_MAIN(main_drain_after_close, NULL);
}

static int main_timed_out_sender(void *arg)
{
    (void)arg;
    struct peers ps = { .q = new_queue(1) };
    assert_int_equal(lahja_queue_try_send(ps.q, ITEM(1)), 0);
    lahja_time_t t0 = lahja_now();
    /* The first sender gives up after SHORT_MS; the second waits on. */
    counter_init(&ps.blocked);
    counter_init(&ps.returned);
    assert_int_equal(lahja_nursery_open(&ps.nursery), 0);
    ps.p[0] = (struct peer){ ps.q, &ps.blocked, &ps.returned, 2, t0 + SHORT_MS, 1 };
    ps.p[1] = (struct peer){ ps.q, &ps.blocked, &ps.returned, 3, LAHJA_FOREVER, 1 };
    for (int i = 0; i < 2; i++)
        assert_int_equal(lahja_nursery_spawn(ps.nursery, sender, &ps.p[i], NULL, NULL), 0);
    assert_int_equal(counter_wait(&ps.returned, 1), 0);
    assert_int_equal(ps.p[0].rc, -ETIMEDOUT);
    assert_true(elapsed_since(t0) >= SHORT_MS);
    assert_int_equal(lahja_queue_len(ps.q), 1);
    /* Room made now goes to the sender still waiting, not to item 2. */
    expect_item(ps.q, 1);
    expect_item(ps.q, 3);
    void *item = NULL;
    assert_int_equal(lahja_queue_try_recv(ps.q, &item), -EAGAIN);
    assert_int_equal(lahja_nursery_close(ps.nursery), 0);
    assert_int_equal(ps.p[1].rc, 0);
    lahja_queue_free(ps.q);
    return 0;
}

static void test_timed_out_sender_did_not_enqueue(void **state)
{
    (void)state;
    RUN_MAIN(main_timed_out_sender, NULL);
}

/* -------------------------------------------------------------- stress */

#define STRESS_ITEMS 100000
#define STRESS_PRODUCERS 4
#define STRESS_CONSUMERS 3
#define PER_PRODUCER (STRESS_ITEMS / STRESS_PRODUCERS)

struct stress {
    lahja_queue_t *q;
    unsigned char *seen;  /* by item value - 1 */
    long received;
    int bad_order;        /* a producer's items arrived out of order */
};

struct stress_worker {
    struct stress *s;
    int id;
};

/* Mostly suspending sends, sometimes try_send first: both paths race. */
static int stress_producer(void *arg)
{
    struct stress_worker *w = arg;
    for (uintptr_t i = 0; i < PER_PRODUCER; i++) {
        uintptr_t v = (uintptr_t)w->id * PER_PRODUCER + i + 1;
        int rc = i % 5 == 0 ? lahja_queue_try_send(w->s->q, ITEM(v)) : -EAGAIN;
        if (rc == -EAGAIN)
            rc = lahja_queue_send(w->s->q, ITEM(v), LAHJA_FOREVER);
        if (rc != 0)
            return rc;
        if (i % 97 == 0 && (rc = lahja_yield()) != 0)
            return rc;
    }
    return 0;
}

static int stress_consumer(void *arg)
{
    struct stress_worker *w = arg;
    struct stress *s = w->s;
    uintptr_t last[STRESS_PRODUCERS] = { 0 };
    for (unsigned long n = 0;; n++) {
        void *item = NULL;
        int rc = n % 7 == 0 ? lahja_queue_try_recv(s->q, &item) : -EAGAIN;
        if (rc == -EAGAIN)
            rc = lahja_queue_recv(s->q, &item, LAHJA_FOREVER);
        if (rc == -EPIPE)
            return 0;
        if (rc != 0)
            return rc;
        uintptr_t v = ITEM_VAL(item);
        if (v == 0 || v > STRESS_ITEMS)
            return -ERANGE;
        /* The queue is FIFO, so one consumer sees each producer's items
         * in the order they were sent. */
        size_t p = (v - 1) / PER_PRODUCER;
        if (v <= last[p])
            s->bad_order = 1;
        last[p] = v;
        s->seen[v - 1]++;
        s->received++;
    }
}

static int main_stress(void *arg)
{
    struct stress *s = arg;
    struct stress_worker prod[STRESS_PRODUCERS], cons[STRESS_CONSUMERS];
    lahja_nursery_t *consumers, *producers;
    assert_int_equal(lahja_nursery_open(&consumers), 0);
    for (int i = 0; i < STRESS_CONSUMERS; i++) {
        cons[i] = (struct stress_worker){ s, i };
        assert_int_equal(lahja_nursery_spawn(consumers, stress_consumer, &cons[i], NULL, NULL), 0);
    }
    assert_int_equal(lahja_nursery_open(&producers), 0);
    for (int i = 0; i < STRESS_PRODUCERS; i++) {
        prod[i] = (struct stress_worker){ s, i };
        assert_int_equal(lahja_nursery_spawn(producers, stress_producer, &prod[i], NULL, NULL), 0);
    }
    assert_int_equal(lahja_nursery_close(producers), 0);
    /* Everything is sent: consumers drain the rest, then see -EPIPE. */
    lahja_queue_close(s->q);
    return lahja_nursery_close(consumers);
}

static void run_stress(size_t capacity)
{
    struct stress s = { .q = new_queue(capacity) };
    s.seen = calloc(STRESS_ITEMS, 1);
    assert_non_null(s.seen);
    RUN_MAIN(main_stress, &s);
    assert_int_equal(s.received, STRESS_ITEMS);
    assert_int_equal(s.bad_order, 0);
    for (size_t i = 0; i < STRESS_ITEMS; i++) {
        if (s.seen[i] != 1)
            fail_msg("item %zu arrived %d times", i + 1, s.seen[i]);
    }
    assert_int_equal(lahja_queue_len(s.q), 0);
    free(s.seen);
    lahja_queue_free(s.q);
}

static void test_stress_capacity_1(void **state)
{
    (void)state;
    run_stress(1);
}

static void test_stress_capacity_64(void **state)
{
    (void)state;
    run_stress(64);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TEST(test_new_rejects_zero_capacity),
        TEST(test_fifo_order),
        TEST(test_fifo_order_across_wraparound),
        TEST(test_capacity_honoured),
        TEST(test_suspending_calls_outside_task),
        TEST(test_send_suspends_while_full_fifo),
        TEST(test_direct_handoff_to_waiting_receiver),
        TEST(test_close_wakes_every_sender),
        TEST(test_close_wakes_every_receiver),
        TEST(test_receivers_drain_after_close),
        TEST(test_timed_out_sender_did_not_enqueue),
        TEST(test_stress_capacity_1),
        TEST(test_stress_capacity_64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
