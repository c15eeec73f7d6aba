/*
 * Consuming: subscription handlers (B15), streams (B16) and wait_for
 * (B17), and how each one's start and end shows in a peer's view of our
 * subscriptions (B19).
 */
#include "support_events.h"

static int on_fence(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    lahja_latch_set(user);
    return 0;
}

/* Non-zero if this endpoint itself subscribes to `type`. */
static int self_subscribes(const lahja_endpoint_t *ep, const char *type)
{
    const char *types[16];
    size_t n = lahja_subscribed_types(ep, types, 16);
    for (size_t i = 0; i < n && i < 16; i++)
        if (strcmp(types[i], type) == 0)
            return 1;
    return 0;
}

/* ------------------------------------------------------- B15: handlers */

static int main_until_cancelled(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    struct counter first, second;
    counter_init(&first, -1);
    counter_init(&second, -1);
    lahja_subscription_t *s1, *s2;
    assert_int_equal(lahja_subscribe(ep, "Tick", on_count, &first, &s1), 0);
    assert_int_equal(lahja_subscribe(ep, "Tick", on_count, &second, &s2), 0);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(send_event(ep, "Tick", &i, sizeof i, NULL), 0);
    lahja_subscription_cancel(s1);
    for (uint32_t i = 3; i < 5; i++)
        assert_int_equal(send_event(ep, "Tick", &i, sizeof i, NULL), 0);
    assert_int_equal(first.n, 3);
    assert_int_equal(second.n, 5);
    assert_int_equal(second.out_of_order, 0);
    lahja_subscription_cancel(s2);
    assert_false(self_subscribes(ep, "Tick"));
    assert_int_equal(send_event(ep, "Tick", "x", 1, NULL), LAHJA_ENOSUBSCRIBERS);
    ep_finish(ep);
    return 0;
}

static void test_handler_called_for_every_event_until_cancelled(void **state)
{
    (void)state;
    RUN_MAIN(main_until_cancelled, NULL);
}

static int on_fail(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    ++*(int *)user;
    return -EIO;
}

static const struct send_spec send_boom = { "b", { "Boom" }, 2, 0, NULL };

static int main_failing_handler(void *arg)
{
    (void)arg;
    struct log_capture log = { 0 };
    lahja_endpoint_options_t opts = { .log = capture_log, .log_user = &log };
    lahja_endpoint_t *ep = ep_start("a", &opts);
    assert_non_null(ep);
    struct counter before, after;
    counter_init(&before, -1);
    counter_init(&after, -1);
    int failed = 0;
    lahja_latch_t fenced;
    lahja_latch_init(&fenced);
    lahja_subscription_t *s[4];
    assert_int_equal(lahja_subscribe(ep, "Boom", on_count, &before, &s[0]), 0);
    assert_int_equal(lahja_subscribe(ep, "Boom", on_fail, &failed, &s[1]), 0);
    assert_int_equal(lahja_subscribe(ep, "Boom", on_count, &after, &s[2]), 0);
    assert_int_equal(lahja_subscribe(ep, FENCE, on_fence, &fenced, &s[3]), 0);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    assert_int_equal(lahja_latch_wait(&fenced, lahja_deadline_in(GUARD_MS)), 0);

    assert_int_equal(failed, 2);
    assert_int_equal(before.n, 2);
    assert_int_equal(after.n, 2); /* the handler after the failing one still ran */
    assert_int_equal(log.errors, 2);
    assert_non_null(strstr(log.last_error, "Boom"));
    assert_non_null(strstr(log.last_error, lahja_strerror(-EIO)));
    assert_true(lahja_is_connected_to(ep, "b")); /* a handler's failure is not the peer's */
    for (size_t i = 0; i < 4; i++)
        lahja_subscription_cancel(s[i]);
    ep_finish(ep);
    return 0;
}

static void test_failing_handler_is_logged_and_others_run(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_sender, (void *)&send_boom);
    RUN_MAIN(main_failing_handler, NULL);
    fx_expect_exit(b);
}

/*
 * A run of events from a peer to a type with one handler: the handler
 * fails on its second call (logged, the run goes on) and on its third
 * hands over, cancelling itself and subscribing a successor, which gets
 * every later event of the run, in order.
 */
static const struct send_spec send_ticks = { "b", { "Tick" }, 10, 0, NULL };

struct hand_over {
    int calls;
    lahja_subscription_t *self, *next;
    struct counter *successor;
};

static int on_hand_over(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ev;
    struct hand_over *h = user;
    if (++h->calls == 2)
        return -EIO;
    if (h->calls == 3) {
        lahja_subscription_cancel(h->self);
        h->successor->next_seq = 3;
        if (lahja_subscribe(ep, "Tick", on_count, h->successor, &h->next) != 0)
            return -ENOMEM;
    }
    return 0;
}

static int main_hand_over(void *arg)
{
    (void)arg;
    struct log_capture log = { 0 };
    lahja_endpoint_options_t opts = { .log = capture_log, .log_user = &log };
    lahja_endpoint_t *ep = ep_start("a", &opts);
    assert_non_null(ep);
    struct counter successor;
    counter_init(&successor, -1);
    struct hand_over h = { .successor = &successor };
    lahja_latch_t fenced;
    lahja_latch_init(&fenced);
    lahja_subscription_t *fence;
    assert_int_equal(lahja_subscribe(ep, "Tick", on_hand_over, &h, &h.self), 0);
    assert_int_equal(lahja_subscribe(ep, FENCE, on_fence, &fenced, &fence), 0);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    assert_int_equal(lahja_latch_wait(&fenced, lahja_deadline_in(GUARD_MS)), 0);
    assert_int_equal(h.calls, 3);
    assert_int_equal(successor.n, 7);
    assert_int_equal(successor.out_of_order, 0);
    assert_int_equal(log.errors, 1);
    assert_non_null(strstr(log.last_error, "Tick"));
    lahja_subscription_cancel(h.next);
    lahja_subscription_cancel(fence);
    ep_finish(ep);
    return 0;
}

static void test_sole_handler_fails_then_hands_over_mid_run(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_sender, (void *)&send_ticks);
    RUN_MAIN(main_hand_over, NULL);
    fx_expect_exit(b);
}

/* A handler that cancels subscriptions: `victims` on its first call. */
struct canceller {
    int calls;
    lahja_subscription_t *victims[3];
    size_t nvictims;
};

static int on_cancel_victims(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    struct canceller *c = user;
    if (c->calls++ == 0)
        for (size_t i = 0; i < c->nvictims; i++)
            lahja_subscription_cancel(c->victims[i]);
    return 0;
}

static int main_cancel_own(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    struct counter other;
    counter_init(&other, -1);
    struct canceller self = { 0 };
    lahja_subscription_t *keep;
    assert_int_equal(lahja_subscribe(ep, "Tick", on_cancel_victims, &self, &self.victims[0]), 0);
    self.nvictims = 1;
    assert_int_equal(lahja_subscribe(ep, "Tick", on_count, &other, &keep), 0);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(send_event(ep, "Tick", &i, sizeof i, NULL), 0);
    assert_int_equal(self.calls, 1);
    assert_int_equal(other.n, 3); /* the next handler ran for the same event */
    lahja_subscription_cancel(keep);

    /* The only consumer of a type cancelling itself: the type goes. */
    struct canceller alone = { 0 };
    assert_int_equal(lahja_subscribe(ep, "Once", on_cancel_victims, &alone, &alone.victims[0]), 0);
    alone.nvictims = 1;
    assert_int_equal(send_str(ep, "Once", "1"), 0);
    assert_int_equal(alone.calls, 1);
    assert_false(self_subscribes(ep, "Once"));
    assert_int_equal(send_str(ep, "Once", "2"), LAHJA_ENOSUBSCRIBERS);
    ep_finish(ep);
    return 0;
}

static void test_cancel_own_subscription_in_handler(void **state)
{
    (void)state;
    RUN_MAIN(main_cancel_own, NULL);
}

static int main_cancel_other(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    struct counter earlier, later, unrelated;
    counter_init(&earlier, -1);
    counter_init(&later, -1);
    counter_init(&unrelated, -1);
    struct canceller c = { 0 };
    lahja_subscription_t *mine, *keep;
    /* Subscribed in this order: earlier, c's handler, later. */
    assert_int_equal(lahja_subscribe(ep, "Tick", on_count, &earlier, &c.victims[0]), 0);
    assert_int_equal(lahja_subscribe(ep, "Tick", on_cancel_victims, &c, &mine), 0);
    assert_int_equal(lahja_subscribe(ep, "Tick", on_count, &later, &c.victims[1]), 0);
    assert_int_equal(lahja_subscribe(ep, "Other", on_count, &unrelated, &c.victims[2]), 0);
    c.nvictims = 3;
    assert_int_equal(lahja_subscribe(ep, "Other", on_count, &unrelated, &keep), 0);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(send_event(ep, "Tick", &i, sizeof i, NULL), 0);
    assert_int_equal(c.calls, 3);
    assert_int_equal(earlier.n, 1);  /* it ran before it was cancelled */
    assert_int_equal(later.n, 0);    /* cancelled before its turn came */
    assert_int_equal(send_str(ep, "Other", "o"), 0);
    assert_int_equal(unrelated.n, 1); /* only `keep` is left */
    lahja_subscription_cancel(mine);
    lahja_subscription_cancel(keep);
    ep_finish(ep);
    return 0;
}

static void test_cancel_other_subscription_in_handler(void **state)
{
    (void)state;
    RUN_MAIN(main_cancel_other, NULL);
}

/* --------------------------------------------------------- B16: streams */

static const struct send_spec send_five_ticks = { "b", { "Tick" }, 5, 1, "Tick" };

static int main_stream_num_events(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    lahja_latch_t fenced;
    lahja_latch_init(&fenced);
    lahja_subscription_t *fs;
    lahja_stream_t *st;
    assert_int_equal(lahja_subscribe(ep, FENCE, on_fence, &fenced, &fs), 0);
    assert_int_equal(lahja_stream_open(ep, "Tick", 3, NULL, &st), 0);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    /* b sends 5, waits until it sees us drop Tick, then sends Fence. */
    assert_int_equal(lahja_latch_wait(&fenced, lahja_deadline_in(GUARD_MS)), 0);
    assert_false(self_subscribes(ep, "Tick"));
    for (uint32_t i = 0; i < 3; i++) {
        lahja_event_t *ev;
        assert_int_equal(lahja_stream_next(st, lahja_deadline_in(GUARD_MS), &ev), 0);
        assert_int_equal(payload_seq(ev), i);
        assert_string_equal(lahja_event_origin(ev), "b");
        lahja_event_unref(ev);
    }
    lahja_event_t *ev = NULL;
    assert_int_equal(lahja_stream_next(st, lahja_deadline_in(GUARD_MS), &ev), -EPIPE);
    assert_null(ev);
    assert_int_equal(lahja_stream_dropped(st), 0);
    lahja_stream_close(st);
    lahja_subscription_cancel(fs);
    ep_finish(ep);
    return 0;
}

static void test_stream_ends_after_num_events(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_sender, (void *)&send_five_ticks);
    RUN_MAIN(main_stream_num_events, NULL);
    fx_expect_exit(b);
}

/* "b": opens a stream of Only, closes it when told, then waits for Bye. */
static int child_stream_closer(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("b", NULL);
    CHILD_CHECK(ep != NULL);
    CHILD_RC(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    lahja_stream_t *st;
    CHILD_RC(lahja_stream_open(ep, "Only", 0, NULL, &st), 0);
    lahja_event_t *ev;
    CHILD_RC(lahja_wait_for(ep, "Close", lahja_deadline_in(GUARD_MS), &ev), 0);
    lahja_event_unref(ev);
    lahja_stream_close(st);
    CHILD_CHECK(!self_subscribes(ep, "Only"));
    CHILD_RC(lahja_wait_for(ep, "Bye", lahja_deadline_in(GUARD_MS), &ev), 0);
    lahja_event_unref(ev);
    return linger_and_finish(ep);
}

static int main_stream_close(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    assert_int_equal(wait_peer_state(ep, "b", TYPES("Only", "Close"), NULL), 0);
    assert_int_equal(send_str(ep, "Close", ""), 0);
    /* The stream's close and the end of wait_for(Close) both show. */
    assert_int_equal(wait_peer_state(ep, "b", TYPES("Bye"), TYPES("Only", "Close")), 0);
    struct peer_types pt = { .peer = "b" };
    lahja_foreach_peer(ep, collect_peer_types, &pt);
    assert_int_equal(pt.found, 1);
    assert_string_equal(pt.joined, "Bye");
    assert_int_equal(send_str(ep, "Bye", ""), 0);
    ep_finish(ep);
    return 0;
}

static void test_stream_close_unsubscribes_on_peer(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_stream_closer, NULL);
    RUN_MAIN(main_stream_close, NULL);
    fx_expect_exit(b);
}

/* Reads `want` events from a stream in a task of its own. */
struct reader {
    lahja_stream_t *st;
    size_t want;
    uint32_t seqs[16];
    size_t got;
    int rc;
};

static int task_read(void *arg)
{
    struct reader *r = arg;
    r->rc = 0;
    while (r->got < r->want && r->rc == 0) {
        lahja_event_t *ev;
        r->rc = lahja_stream_next(r->st, lahja_deadline_in(GUARD_MS), &ev);
        if (r->rc == 0) {
            r->seqs[r->got++] = payload_seq(ev);
            lahja_event_unref(ev);
        }
    }
    return 0;
}

/* Drains what a stream holds now; asserts the sequence numbers. */
static void expect_queued(lahja_stream_t *st, uint32_t first, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        lahja_event_t *ev;
        assert_int_equal(lahja_stream_next(st, lahja_deadline_in(GUARD_MS), &ev), 0);
        assert_int_equal(payload_seq(ev), first + i);
        lahja_event_unref(ev);
    }
    lahja_event_t *ev = NULL;
    assert_int_equal(lahja_stream_next(st, lahja_now(), &ev), -ETIMEDOUT); /* empty */
}

static const struct send_spec send_ticks_others = { "b", { "Tick", "Other" }, 10, 0, NULL };

static int main_slow_stream(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    lahja_latch_t fenced;
    lahja_latch_init(&fenced);
    struct counter ticks, others;
    counter_init(&ticks, -1);
    counter_init(&others, -1);
    lahja_subscription_t *s[3];
    lahja_stream_t *oldest, *newest, *fast;
    const lahja_stream_options_t keep_newest = { 4, LAHJA_STREAM_DROP_OLDEST };
    const lahja_stream_options_t keep_oldest = { 4, LAHJA_STREAM_DROP_NEWEST };
    /* The two slow streams come first: a stall would show downstream. */
    assert_int_equal(lahja_stream_open(ep, "Tick", 0, &keep_newest, &oldest), 0);
    assert_int_equal(lahja_stream_open(ep, "Tick", 0, &keep_oldest, &newest), 0);
    assert_int_equal(lahja_stream_open(ep, "Tick", 0, NULL, &fast), 0);
    assert_int_equal(lahja_subscribe(ep, "Tick", on_count, &ticks, &s[0]), 0);
    assert_int_equal(lahja_subscribe(ep, "Other", on_count, &others, &s[1]), 0);
    assert_int_equal(lahja_subscribe(ep, FENCE, on_fence, &fenced, &s[2]), 0);
    struct reader r = { .st = fast, .want = 10, .rc = 12345 };
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, task_read, &r, NULL, NULL), 0);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    assert_int_equal(lahja_latch_wait(&fenced, lahja_deadline_in(GUARD_MS)), 0);
    assert_int_equal(lahja_nursery_close(n), 0);

    assert_int_equal(r.rc, 0);
    assert_int_equal(r.got, 10);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(r.seqs[i], i);
    assert_int_equal(ticks.n, 10);
    assert_int_equal(ticks.out_of_order, 0);
    assert_int_equal(others.n, 10);
    assert_int_equal(others.out_of_order, 0);
    assert_int_equal(lahja_stream_dropped(fast), 0);
    assert_int_equal(lahja_stream_dropped(oldest), 6);
    expect_queued(oldest, 6, 4);  /* the 4 newest */
    assert_int_equal(lahja_stream_dropped(newest), 6);
    expect_queued(newest, 0, 4);  /* the 4 oldest */

    lahja_stream_close(oldest);
    lahja_stream_close(newest);
    lahja_stream_close(fast);
    for (size_t i = 0; i < 3; i++)
        lahja_subscription_cancel(s[i]);
    ep_finish(ep);
    return 0;
}

static void test_slow_stream_does_not_stall_others(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_sender, (void *)&send_ticks_others);
    RUN_MAIN(main_slow_stream, NULL);
    fx_expect_exit(b);
}

/* ------------------------------------------------------- B17: wait_for */

static const struct send_spec send_pong_ping = { "b", { "Pong", "Ping" }, 2, 1, NULL };

static int main_wait_for_next(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    lahja_latch_t fenced;
    lahja_latch_init(&fenced);
    struct counter pongs;
    counter_init(&pongs, -1);
    lahja_subscription_t *s[2];
    assert_int_equal(lahja_subscribe(ep, "Pong", on_count, &pongs, &s[0]), 0);
    assert_int_equal(lahja_subscribe(ep, FENCE, on_fence, &fenced, &s[1]), 0);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    lahja_event_t *ev;
    assert_int_equal(lahja_wait_for(ep, "Ping", lahja_deadline_in(GUARD_MS), &ev), 0);
    /* The first Ping, past the Pongs sent before it. */
    assert_string_equal(lahja_event_type(ev), "Ping");
    assert_int_equal(payload_seq(ev), 0);
    assert_string_equal(lahja_event_origin(ev), "b");
    lahja_event_unref(ev);
    assert_false(self_subscribes(ep, "Ping"));
    assert_int_equal(lahja_latch_wait(&fenced, lahja_deadline_in(GUARD_MS)), 0);
    assert_int_equal(pongs.n, 2);
    lahja_subscription_cancel(s[0]);
    lahja_subscription_cancel(s[1]);
    ep_finish(ep);
    return 0;
}

static void test_wait_for_returns_next_matching_event(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_sender, (void *)&send_pong_ping);
    RUN_MAIN(main_wait_for_next, NULL);
    fx_expect_exit(b);
}

static int on_flag(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    *(int *)user = 1;
    return 0;
}

/*
 * "b": waits for Never with a short deadline, again and again until "a"
 * says (Seen) that it saw the subscription; each wait must end with
 * -ETIMEDOUT and leave Never unsubscribed.  Then waits for Bye.
 */
static int child_wait_deadline(void *arg)
{
    (void)arg;
    int seen = 0;
    lahja_endpoint_t *ep = ep_start("b", NULL);
    CHILD_CHECK(ep != NULL);
    lahja_subscription_t *s;
    CHILD_RC(lahja_subscribe(ep, "Seen", on_flag, &seen, &s), 0);
    CHILD_RC(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    while (!seen) {
        lahja_event_t *ev = NULL;
        CHILD_RC(lahja_wait_for(ep, "Never", lahja_deadline_in(200), &ev), -ETIMEDOUT);
        CHILD_CHECK(ev == NULL);
        CHILD_CHECK(!self_subscribes(ep, "Never"));
    }
    lahja_event_t *ev;
    CHILD_RC(lahja_wait_for(ep, "Bye", lahja_deadline_in(GUARD_MS), &ev), 0);
    lahja_event_unref(ev);
    lahja_subscription_cancel(s);
    return linger_and_finish(ep);
}

/* "b": waits for Never until a Cancel event cancels the wait's scope. */
static int on_cancel_scope(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    lahja_scope_cancel(*(lahja_scope_t **)user);
    return 0;
}

static int child_wait_cancel(void *arg)
{
    (void)arg;
    lahja_scope_t *scope = NULL;
    lahja_endpoint_t *ep = ep_start("b", NULL);
    CHILD_CHECK(ep != NULL);
    lahja_subscription_t *s;
    CHILD_RC(lahja_subscribe(ep, "Cancel", on_cancel_scope, &scope, &s), 0);
    CHILD_RC(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    CHILD_RC(lahja_scope_open(LAHJA_FOREVER, 0, &scope), 0);
    lahja_event_t *ev = NULL;
    CHILD_RC(lahja_wait_for(ep, "Never", lahja_deadline_in(GUARD_MS), &ev), -ECANCELED);
    CHILD_RC(lahja_scope_close(scope), -ECANCELED);
    CHILD_CHECK(ev == NULL);
    CHILD_CHECK(!self_subscribes(ep, "Never"));
    CHILD_RC(lahja_wait_for(ep, "Bye", lahja_deadline_in(GUARD_MS), &ev), 0);
    lahja_event_unref(ev);
    lahja_subscription_cancel(s);
    return linger_and_finish(ep);
}

/* The peer's view gains Never, then, after `poke`, loses it for good. */
static int main_wait_for_ends(void *arg)
{
    const char *poke = arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    assert_int_equal(wait_peer_state(ep, "b", TYPES("Never", poke), NULL), 0);
    assert_int_equal(send_str(ep, poke, ""), 0);
    assert_int_equal(wait_peer_state(ep, "b", TYPES("Bye"), TYPES("Never")), 0);
    assert_int_equal(send_str(ep, "Bye", ""), 0);
    ep_finish(ep);
    return 0;
}

static void test_wait_for_deadline_unsubscribes(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_wait_deadline, NULL);
    RUN_MAIN(main_wait_for_ends, "Seen");
    fx_expect_exit(b);
}

static void test_wait_for_cancellation_unsubscribes(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_wait_cancel, NULL);
    RUN_MAIN(main_wait_for_ends, "Cancel");
    fx_expect_exit(b);
}

/* ------------------------------------- consumers ended by a stopped endpoint */

/* One loop iteration: lets whatever the loop runs between polls run
 * (here, a prepare handle that must no longer exist).  Nothing waits on
 * it. */
static void loop_turn(void)
{
    assert_int_equal(lahja_sleep(1), 0);
}

static int main_close_after_stop(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    lahja_subscription_t *s;
    lahja_stream_t *st;
    assert_int_equal(lahja_subscribe(ep, "Tick", on_fence, NULL, &s), 0);
    assert_int_equal(lahja_stream_open(ep, "Tock", 0, NULL, &st), 0);
    assert_int_equal(lahja_endpoint_stop(ep), 0);
    lahja_event_t *ev = NULL;
    assert_int_equal(lahja_stream_next(st, lahja_deadline_in(GUARD_MS), &ev), LAHJA_ELIFECYCLE);
    /* Documented as allowed after stop: cancel once, close. */
    lahja_subscription_cancel(s);
    lahja_stream_close(st);
    assert_int_equal(lahja_endpoint_free(ep), 0);
    loop_turn();
    return 0;
}

static void test_stream_and_subscription_closed_after_stop(void **state)
{
    (void)state;
    RUN_MAIN(main_close_after_stop, NULL);
}

struct stop_waiter {
    lahja_endpoint_t *ep;
    int rc;
};

static int task_wait_until_stop(void *arg)
{
    struct stop_waiter *w = arg;
    lahja_event_t *ev = NULL;
    w->rc = lahja_wait_for(w->ep, "Never", lahja_deadline_in(GUARD_MS), &ev);
    return 0;
}

static int main_wait_for_stopped(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    struct stop_waiter w = { ep, 12345 };
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, task_wait_until_stop, &w, NULL, NULL), 0);
    assert_int_equal(lahja_yield(), 0); /* the waiter runs until it waits */
    assert_true(self_subscribes(ep, "Never"));
    assert_int_equal(lahja_endpoint_stop(ep), 0);
    assert_int_equal(lahja_nursery_close(n), 0);
    assert_int_equal(w.rc, LAHJA_ELIFECYCLE);
    assert_int_equal(lahja_endpoint_free(ep), 0);
    loop_turn();
    return 0;
}

static void test_wait_for_ended_by_stop(void **state)
{
    (void)state;
    RUN_MAIN(main_wait_for_stopped, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BUS_TEST(test_handler_called_for_every_event_until_cancelled),
        BUS_TEST(test_failing_handler_is_logged_and_others_run),
        BUS_TEST(test_cancel_own_subscription_in_handler),
        BUS_TEST(test_sole_handler_fails_then_hands_over_mid_run),
        BUS_TEST(test_cancel_other_subscription_in_handler),
        BUS_TEST(test_stream_ends_after_num_events),
        BUS_TEST(test_stream_close_unsubscribes_on_peer),
        BUS_TEST(test_slow_stream_does_not_stall_others),
        BUS_TEST(test_wait_for_returns_next_matching_event),
        BUS_TEST(test_wait_for_deadline_unsubscribes),
        BUS_TEST(test_wait_for_cancellation_unsubscribes),
        /* Last: under ASan the use-after-free they expose aborts the run. */
        BUS_TEST(test_stream_and_subscription_closed_after_stop),
        BUS_TEST(test_wait_for_ended_by_stop),
    };
    ignore_sigpipe();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
