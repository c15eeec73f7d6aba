/*
 * B23: stopping wakes every task waiting in the endpoint's calls, and
 * returns only once they have left them, so that the endpoint can be
 * freed right after stop while those tasks have not yet run again.
 * Under ASan and valgrind a task touching the freed endpoint shows.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>
#include <lahja/lahja.h>

#define GUARD_MS 10000

struct waits {
    lahja_endpoint_t *ep;
    lahja_stream_t *stream;
    int in;       /* waiting tasks that reached their call */
    lahja_latch_t all_in;
    int rc[3];
};

static void arrived(struct waits *w)
{
    if (++w->in == 3)
        lahja_latch_set(&w->all_in);
}

static int in_wait_for(void *arg)
{
    struct waits *w = arg;
    lahja_event_t *ev = NULL;
    arrived(w);
    w->rc[0] = lahja_wait_for(w->ep, "Never", lahja_deadline_in(GUARD_MS), &ev);
    return 0;
}

static int in_stream(void *arg)
{
    struct waits *w = arg;
    lahja_event_t *ev = NULL;
    arrived(w);
    w->rc[1] = lahja_stream_next(w->stream, lahja_deadline_in(GUARD_MS), &ev);
    return 0;
}

static int answer_never(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev, (void)user;
    return 0;
}

static int in_request(void *arg)
{
    struct waits *w = arg;
    lahja_event_t *req, *resp = NULL;
    assert_int_equal(lahja_request_new("Ask", "Answer", NULL, 0, &req), 0);
    arrived(w);
    w->rc[2] = lahja_request(w->ep, req, NULL, lahja_deadline_in(GUARD_MS), &resp);
    lahja_event_unref(req);
    return 0;
}

static int main_task(void *arg)
{
    struct waits *w = arg;
    assert_int_equal(lahja_endpoint_new("alone", NULL, &w->ep), 0);
    assert_int_equal(lahja_endpoint_start(w->ep, NULL), 0);
    lahja_subscription_t *s;
    assert_int_equal(lahja_subscribe(w->ep, "Ask", answer_never, NULL, &s), 0);
    assert_int_equal(lahja_stream_open(w->ep, "Stream", 0, NULL, &w->stream), 0);
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, in_wait_for, w, NULL, NULL), 0);
    assert_int_equal(lahja_nursery_spawn(n, in_stream, w, NULL, NULL), 0);
    assert_int_equal(lahja_nursery_spawn(n, in_request, w, NULL, NULL), 0);
    assert_int_equal(lahja_latch_wait(&w->all_in, lahja_deadline_in(GUARD_MS)), 0);
    assert_int_equal(lahja_yield(), 0); /* all three are suspended now */
    assert_int_equal(lahja_endpoint_stop(w->ep), 0);
    /* The stream and the subscription are left to the endpoint. */
    assert_int_equal(lahja_endpoint_free(w->ep), 0);
    w->ep = NULL;
    return lahja_nursery_close(n);
}

static void test_free_right_after_stop(void **state)
{
    (void)state;
    struct waits w = { .rc = { 1, 1, 1 } };
    lahja_latch_init(&w.all_in);
    assert_int_equal(lahja_run(main_task, &w, NULL), 0);
    assert_int_equal(w.rc[0], LAHJA_ELIFECYCLE);
    assert_int_equal(w.rc[1], LAHJA_ELIFECYCLE);
    assert_int_equal(w.rc[2], LAHJA_ELIFECYCLE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_free_right_after_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
