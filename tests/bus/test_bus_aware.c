/*
 * Subscription awareness: what a peer's view of our subscriptions shows
 * (B19), the queries (B20), the waits and what wakes them (B21), and an
 * endpoint counting itself (B22).
 */
#include "support_events.h"

static int on_ignore(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev, (void)user;
    return 0;
}

/* The types this endpoint's peer `name` subscribes to, sorted, joined. */
static void expect_view(lahja_endpoint_t *ep, const char *name, const char *joined)
{
    struct peer_types pt = { .peer = name };
    lahja_foreach_peer(ep, collect_peer_types, &pt);
    assert_int_equal(pt.found, 1);
    assert_string_equal(pt.joined, joined);
}

/* Subscribes to `type` from a task of its own: started before the
 * caller suspends in a wait, it runs once the caller waits. */
struct sub_task {
    lahja_endpoint_t *ep;
    const char *type;
    lahja_subscription_t *s;
    int rc;
};

static int task_subscribe(void *arg)
{
    struct sub_task *t = arg;
    t->rc = lahja_subscribe(t->ep, t->type, on_ignore, NULL, &t->s);
    return 0;
}

/* -------------------------------------------------------- the puppet */

/*
 * A puppet child: subscribes to Cmd and to `initial`, connects to "a" if
 * `connect` (else waits for "a" to connect), and obeys Cmd events:
 * "sub <type>", "unsub <type>", "quit" (stop now).  Otherwise it stays
 * until "a" has gone.
 */
struct puppet_spec {
    const char *name;
    int connect;
    const char *initial[4];
};

#define PUPPET_MAX 16

struct puppet {
    char types[PUPPET_MAX][64];
    lahja_subscription_t *subs[PUPPET_MAX];
    lahja_scope_t *scope; /* cancelled by "quit" */
};

static void puppet_sub(lahja_endpoint_t *ep, struct puppet *p, const char *type)
{
    for (size_t i = 0; i < PUPPET_MAX; i++) {
        if (p->subs[i] == NULL) {
            CHILD_RC(lahja_subscribe(ep, type, on_ignore, NULL, &p->subs[i]), 0);
            /* Types here are short test names; cut at the slot's size. */
            snprintf(p->types[i], sizeof p->types[i], "%.*s", (int)sizeof p->types[i] - 1, type);
            return;
        }
    }
    CHILD_CHECK(!"too many subscriptions");
}

static void puppet_unsub(struct puppet *p, const char *type)
{
    for (size_t i = 0; i < PUPPET_MAX; i++) {
        if (p->subs[i] != NULL && strcmp(p->types[i], type) == 0) {
            lahja_subscription_cancel(p->subs[i]);
            p->subs[i] = NULL;
            return;
        }
    }
    CHILD_CHECK(!"unsub of a type not subscribed");
}

static int on_cmd(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct puppet *p = user;
    char cmd[80];
    size_t len;
    const char *s = lahja_event_payload(ev, &len);
    CHILD_CHECK(len < sizeof cmd);
    memcpy(cmd, s, len);
    cmd[len] = '\0';
    if (strncmp(cmd, "sub ", 4) == 0)
        puppet_sub(ep, p, cmd + 4);
    else if (strncmp(cmd, "unsub ", 6) == 0)
        puppet_unsub(p, cmd + 6);
    else if (strcmp(cmd, "quit") == 0)
        lahja_scope_cancel(p->scope);
    else
        CHILD_CHECK(!"unknown command");
    return 0;
}

static int child_puppet(void *arg)
{
    const struct puppet_spec *spec = arg;
    struct puppet p = { .scope = NULL };
    CHILD_RC(lahja_scope_open(LAHJA_FOREVER, 0, &p.scope), 0); /* before any "quit" */
    lahja_endpoint_t *ep = ep_start(spec->name, NULL);
    CHILD_CHECK(ep != NULL);
    lahja_subscription_t *cmd;
    CHILD_RC(lahja_subscribe(ep, "Cmd", on_cmd, &p, &cmd), 0);
    for (size_t i = 0; spec->initial[i] != NULL; i++)
        puppet_sub(ep, &p, spec->initial[i]);
    if (spec->connect)
        CHILD_RC(ep_connect(ep, TYPES("a")), 0);
    else
        CHILD_RC(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    int rc = 0;
    while (rc == 0 && lahja_is_connected_to(ep, "a"))
        rc = lahja_wait_until_connections_change(ep, lahja_deadline_in(GUARD_MS));
    CHILD_CHECK(rc == 0 || rc == -ECANCELED);
    lahja_scope_close(p.scope);
    for (size_t i = 0; i < PUPPET_MAX; i++)
        lahja_subscription_cancel(p.subs[i]);
    lahja_subscription_cancel(cmd);
    ep_finish(ep);
    return 0;
}

/* Sends a command to one puppet. */
static void cmd(lahja_endpoint_t *ep, const char *who, const char *text)
{
    lahja_broadcast_config_t cfg = { .filter_endpoint = who };
    assert_int_equal(send_event(ep, "Cmd", text, strlen(text), &cfg), 0);
}

/* Connects "a" to the puppets and waits until each obeys commands. */
static lahja_endpoint_t *parent_with_puppets(const char *const *names)
{
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    assert_int_equal(ep_connect(ep, names), 0);
    expect_peers_ready(ep, names, TYPES("Cmd"));
    return ep;
}

/* ------------------------------------------------------------ B19, B20 */

/* "b": subscribes, opens a stream, waits for an event, then undoes each,
 * one step per Next event from "a". */
static int task_wait_s3(void *arg)
{
    lahja_endpoint_t *ep = arg;
    lahja_event_t *ev;
    CHILD_RC(lahja_wait_for(ep, "S3", lahja_deadline_in(GUARD_MS), &ev), 0);
    lahja_event_unref(ev);
    return 0;
}

static void next_step(lahja_endpoint_t *ep)
{
    lahja_event_t *ev;
    CHILD_RC(lahja_wait_for(ep, "Next", lahja_deadline_in(GUARD_MS), &ev), 0);
    lahja_event_unref(ev);
}

static int child_steps(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("b", NULL);
    CHILD_CHECK(ep != NULL);
    CHILD_RC(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    lahja_subscription_t *s;
    lahja_stream_t *st;
    CHILD_RC(lahja_subscribe(ep, "S1", on_ignore, NULL, &s), 0);
    next_step(ep);
    CHILD_RC(lahja_stream_open(ep, "S2", 0, NULL, &st), 0);
    next_step(ep);
    lahja_nursery_t *n;
    CHILD_RC(lahja_nursery_open(&n), 0);
    CHILD_RC(lahja_nursery_spawn(n, task_wait_s3, ep, NULL, NULL), 0);
    next_step(ep); /* "a" sends S3 first: the waiter is done by then */
    CHILD_RC(lahja_nursery_close(n), 0);
    lahja_subscription_cancel(s);
    next_step(ep);
    lahja_stream_close(st);
    next_step(ep);
    return linger_and_finish(ep);
}

static int main_view(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    /* Next is there whenever b waits for the next step. */
    assert_int_equal(wait_peer_state(ep, "b", TYPES("S1", "Next"), NULL), 0);
    expect_view(ep, "b", "Next,S1");
    assert_int_equal(send_str(ep, "Next", ""), 0);
    assert_int_equal(wait_peer_state(ep, "b", TYPES("S1", "S2", "Next"), NULL), 0);
    expect_view(ep, "b", "Next,S1,S2");
    assert_int_equal(send_str(ep, "Next", ""), 0);
    assert_int_equal(wait_peer_state(ep, "b", TYPES("S1", "S2", "S3", "Next"), NULL), 0);
    expect_view(ep, "b", "Next,S1,S2,S3");
    assert_int_equal(send_str(ep, "S3", ""), 0); /* ends b's wait_for */
    assert_int_equal(wait_peer_state(ep, "b", TYPES("S1", "S2", "Next"), TYPES("S3")), 0);
    expect_view(ep, "b", "Next,S1,S2");
    assert_int_equal(send_str(ep, "Next", ""), 0); /* b cancels S1 */
    assert_int_equal(wait_peer_state(ep, "b", TYPES("S2", "Next"), TYPES("S1")), 0);
    expect_view(ep, "b", "Next,S2");
    assert_int_equal(send_str(ep, "Next", ""), 0); /* b closes S2 */
    assert_int_equal(wait_peer_state(ep, "b", TYPES("Next"), TYPES("S2")), 0);
    expect_view(ep, "b", "Next");
    assert_false(lahja_is_endpoint_subscribed_to(ep, "b", "S1"));
    assert_true(lahja_is_endpoint_subscribed_to(ep, "b", "Next"));
    assert_false(lahja_is_endpoint_subscribed_to(ep, "nobody", "Next"));
    assert_int_equal(send_str(ep, "Next", ""), 0);
    ep_finish(ep);
    return 0;
}

static void test_peer_view_follows_subscribe_stream_and_wait_for(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_steps, NULL);
    RUN_MAIN(main_view, NULL);
    fx_expect_exit(b);
}

static int main_own_types(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    const char *types[4] = { NULL };
    assert_int_equal(lahja_subscribed_types(ep, types, 4), 0);
    lahja_subscription_t *s1, *s2;
    lahja_stream_t *st;
    assert_int_equal(lahja_subscribe(ep, "T1", on_ignore, NULL, &s1), 0);
    assert_int_equal(lahja_subscribe(ep, "T1", on_ignore, NULL, &s2), 0);
    assert_int_equal(lahja_stream_open(ep, "T2", 0, NULL, &st), 0);
    /* Each type once, however many consumers it has. */
    assert_int_equal(lahja_subscribed_types(ep, types, 4), 2);
    assert_true((strcmp(types[0], "T1") == 0 && strcmp(types[1], "T2") == 0) ||
                (strcmp(types[0], "T2") == 0 && strcmp(types[1], "T1") == 0));
    /* A short array: the count is still the whole. */
    types[1] = NULL;
    assert_int_equal(lahja_subscribed_types(ep, types, 1), 2);
    assert_null(types[1]);
    lahja_subscription_cancel(s1);
    assert_int_equal(lahja_subscribed_types(ep, types, 4), 2); /* s2 keeps T1 */
    lahja_subscription_cancel(s2);
    assert_int_equal(lahja_subscribed_types(ep, types, 4), 1);
    assert_string_equal(types[0], "T2");
    assert_true(lahja_is_endpoint_subscribed_to(ep, "a", "T2"));
    assert_false(lahja_is_endpoint_subscribed_to(ep, "a", "T1"));
    lahja_stream_close(st);
    assert_int_equal(lahja_subscribed_types(ep, types, 4), 0);
    ep_finish(ep);
    return 0;
}

static void test_subscribed_types_lists_own_types(void **state)
{
    (void)state;
    RUN_MAIN(main_own_types, NULL);
}

/* ----------------------------------------------------------------- B22 */

static const struct puppet_spec puppet_b_x = { "b", 0, { "X" } };
static const struct puppet_spec puppet_c = { "c", 0, { NULL } };

static int main_counts_self(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = parent_with_puppets(TYPES("b", "c"));
    assert_int_equal(wait_peer_state(ep, "b", TYPES("X"), NULL), 0);
    assert_true(lahja_is_any_endpoint_subscribed_to(ep, "X")); /* b */
    assert_false(lahja_are_all_endpoints_subscribed_to(ep, "X", 0)); /* not c */
    assert_false(lahja_are_all_endpoints_subscribed_to(ep, "X", 1));
    assert_false(lahja_is_endpoint_subscribed_to(ep, "a", "X"));

    cmd(ep, "c", "sub X");
    assert_int_equal(wait_peer_state(ep, "c", TYPES("X"), NULL), 0);
    assert_true(lahja_are_all_endpoints_subscribed_to(ep, "X", 0));
    assert_false(lahja_are_all_endpoints_subscribed_to(ep, "X", 1)); /* not a itself */
    lahja_subscription_t *sx, *sy;
    assert_int_equal(lahja_subscribe(ep, "X", on_ignore, NULL, &sx), 0);
    assert_true(lahja_are_all_endpoints_subscribed_to(ep, "X", 1));
    assert_true(lahja_is_endpoint_subscribed_to(ep, "a", "X"));

    /* Only a itself subscribes to Y: that is "any", and not "all". */
    assert_false(lahja_is_any_endpoint_subscribed_to(ep, "Y"));
    assert_int_equal(lahja_subscribe(ep, "Y", on_ignore, NULL, &sy), 0);
    assert_true(lahja_is_any_endpoint_subscribed_to(ep, "Y"));
    assert_false(lahja_are_all_endpoints_subscribed_to(ep, "Y", 1));
    assert_false(lahja_are_all_endpoints_subscribed_to(ep, "Y", 0));
    lahja_subscription_cancel(sx);
    lahja_subscription_cancel(sy);
    ep_finish(ep);
    return 0;
}

static void test_any_counts_self_and_all_honours_include_self(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_puppet, (void *)&puppet_b_x);
    pid_t c = fx_spawn(child_puppet, (void *)&puppet_c);
    RUN_MAIN(main_counts_self, NULL);
    fx_expect_exit(b);
    fx_expect_exit(c);
}

/* ----------------------------------------------------------------- B21 */

static const struct puppet_spec puppet_b_connects = { "b", 1, { NULL } };
static const struct puppet_spec puppet_c_connects = { "c", 1, { NULL } };

static int main_connections(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    /* Nothing can have been accepted before this task first suspends. */
    assert_false(lahja_is_connected_to(ep, "b"));
    assert_false(lahja_is_connected_to(ep, "c"));
    assert_int_equal(lahja_wait_until_connections_change(ep, lahja_deadline_in(GUARD_MS)), 0);
    assert_true(lahja_is_connected_to(ep, "b") || lahja_is_connected_to(ep, "c"));
    assert_int_equal(lahja_wait_until_connected_to(ep, "c", lahja_deadline_in(GUARD_MS)), 0);
    assert_true(lahja_is_connected_to(ep, "c"));
    assert_int_equal(lahja_wait_until_connected_to(ep, "b", lahja_deadline_in(GUARD_MS)), 0);
    assert_true(lahja_is_connected_to(ep, "b"));
    expect_peers_ready(ep, TYPES("b", "c"), TYPES("Cmd"));

    cmd(ep, "b", "quit");
    assert_int_equal(lahja_wait_until_connections_change(ep, lahja_deadline_in(GUARD_MS)), 0);
    assert_false(lahja_is_connected_to(ep, "b"));
    assert_true(lahja_is_connected_to(ep, "c"));
    struct peer_types gone = { .peer = "b" };
    lahja_foreach_peer(ep, collect_peer_types, &gone);
    assert_int_equal(gone.found, 0);
    assert_false(lahja_is_endpoint_subscribed_to(ep, "b", "Cmd"));

    cmd(ep, "c", "quit");
    assert_int_equal(lahja_wait_until_connections_change(ep, lahja_deadline_in(GUARD_MS)), 0);
    assert_false(lahja_is_connected_to(ep, "c"));
    /* Nobody is coming: the wait ends at its deadline. */
    assert_int_equal(lahja_wait_until_connected_to(ep, "b", lahja_deadline_in(100)), -ETIMEDOUT);
    ep_finish(ep);
    return 0;
}

static void test_wait_until_connected_to_and_connections_change(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_puppet, (void *)&puppet_b_connects);
    pid_t c = fx_spawn(child_puppet, (void *)&puppet_c_connects);
    RUN_MAIN(main_connections, NULL);
    fx_expect_exit(b);
    fx_expect_exit(c);
}

static const struct puppet_spec puppet_b = { "b", 0, { NULL } };

/* A wait_until_* call from a task, cancelled by its nursery. */
struct cancelled_wait {
    lahja_endpoint_t *ep;
    int rc;
};

static int task_wait_never(void *arg)
{
    struct cancelled_wait *w = arg;
    w->rc = lahja_wait_until_endpoint_subscribed_to(w->ep, "b", "Never",
                                                    lahja_deadline_in(GUARD_MS));
    return 0;
}

static int main_subscription_waits(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = parent_with_puppets(TYPES("b"));

    /* Any change of b's set wakes it: here b's new type. */
    assert_false(lahja_is_endpoint_subscribed_to(ep, "b", "Y"));
    cmd(ep, "b", "sub Y");
    assert_int_equal(lahja_wait_until_endpoint_subscriptions_change(ep,
                                                                    lahja_deadline_in(GUARD_MS)),
                     0);
    assert_true(lahja_is_endpoint_subscribed_to(ep, "b", "Y"));

    /* Waiting for Z is not ended by W. */
    cmd(ep, "b", "sub W");
    assert_int_equal(lahja_wait_until_endpoint_subscribed_to(ep, "b", "Z", lahja_deadline_in(300)),
                     -ETIMEDOUT);
    assert_int_equal(wait_peer_state(ep, "b", TYPES("W"), TYPES("Z")), 0);
    cmd(ep, "b", "sub Z");
    assert_int_equal(lahja_wait_until_endpoint_subscribed_to(ep, "b", "Z",
                                                             lahja_deadline_in(GUARD_MS)), 0);
    assert_true(lahja_is_endpoint_subscribed_to(ep, "b", "Z"));

    /* "Any" by a peer, then by this endpoint alone. */
    cmd(ep, "b", "sub V");
    assert_int_equal(lahja_wait_until_any_endpoint_subscribed_to(ep, "V",
                                                                 lahja_deadline_in(GUARD_MS)), 0);
    assert_true(lahja_is_endpoint_subscribed_to(ep, "b", "V"));
    struct sub_task local = { ep, "L", NULL, 12345 };
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, task_subscribe, &local, NULL, NULL), 0);
    assert_int_equal(lahja_wait_until_any_endpoint_subscribed_to(ep, "L",
                                                                 lahja_deadline_in(GUARD_MS)), 0);
    assert_int_equal(lahja_nursery_close(n), 0);
    assert_int_equal(local.rc, 0);
    assert_false(lahja_is_endpoint_subscribed_to(ep, "b", "L"));
    lahja_subscription_cancel(local.s);

    /* Removal shows too. */
    cmd(ep, "b", "unsub Y");
    assert_int_equal(wait_peer_state(ep, "b", TYPES("W", "Z", "V"), TYPES("Y")), 0);

    /* Deadlines and cancellation end the waits. */
    assert_int_equal(lahja_wait_until_any_endpoint_subscribed_to(ep, "Never",
                                                                 lahja_deadline_in(100)),
                     -ETIMEDOUT);
    assert_int_equal(lahja_wait_until_endpoint_subscriptions_change(ep, lahja_deadline_in(100)),
                     -ETIMEDOUT);
    struct cancelled_wait w = { ep, 12345 };
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, task_wait_never, &w, NULL, NULL), 0);
    assert_int_equal(lahja_yield(), 0); /* the task runs until it waits */
    lahja_nursery_cancel(n);
    assert_int_equal(lahja_nursery_close(n), 0);
    assert_int_equal(w.rc, -ECANCELED);
    ep_finish(ep);
    return 0;
}

static void test_subscription_waits_woken_by_their_change(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_puppet, (void *)&puppet_b);
    RUN_MAIN(main_subscription_waits, NULL);
    fx_expect_exit(b);
}

static int main_all_waits(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = parent_with_puppets(TYPES("b", "c"));
    assert_int_equal(wait_peer_state(ep, "b", TYPES("X"), NULL), 0);

    /* Without a itself: c's subscription completes it. */
    assert_false(lahja_are_all_endpoints_subscribed_to(ep, "X", 0));
    cmd(ep, "c", "sub X");
    assert_int_equal(lahja_wait_until_all_endpoints_subscribed_to(ep, "X", 0,
                                                                  lahja_deadline_in(GUARD_MS)),
                     0);
    assert_true(lahja_is_endpoint_subscribed_to(ep, "c", "X"));

    /* With a itself: the peers are not enough... */
    assert_int_equal(lahja_wait_until_all_endpoints_subscribed_to(ep, "X", 1,
                                                                  lahja_deadline_in(100)),
                     -ETIMEDOUT);
    /* ...until a subscribes (from a task that runs once we wait). */
    struct sub_task local = { ep, "X", NULL, 12345 };
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, task_subscribe, &local, NULL, NULL), 0);
    assert_int_equal(lahja_wait_until_all_endpoints_subscribed_to(ep, "X", 1,
                                                                  lahja_deadline_in(GUARD_MS)),
                     0);
    assert_int_equal(lahja_nursery_close(n), 0);
    assert_int_equal(local.rc, 0);

    /* a itself and b are not all while c lacks it. */
    lahja_subscription_t *sz;
    assert_int_equal(lahja_subscribe(ep, "Z", on_ignore, NULL, &sz), 0);
    cmd(ep, "b", "sub Z");
    assert_int_equal(wait_peer_state(ep, "b", TYPES("Z"), NULL), 0);
    assert_int_equal(lahja_wait_until_all_endpoints_subscribed_to(ep, "Z", 1,
                                                                  lahja_deadline_in(100)),
                     -ETIMEDOUT);
    cmd(ep, "c", "sub Z");
    assert_int_equal(lahja_wait_until_all_endpoints_subscribed_to(ep, "Z", 1,
                                                                  lahja_deadline_in(GUARD_MS)),
                     0);
    assert_true(lahja_is_endpoint_subscribed_to(ep, "c", "Z"));
    lahja_subscription_cancel(local.s);
    lahja_subscription_cancel(sz);
    ep_finish(ep);
    return 0;
}

static void test_wait_until_all_honours_include_self(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_puppet, (void *)&puppet_b_x);
    pid_t c = fx_spawn(child_puppet, (void *)&puppet_c);
    RUN_MAIN(main_all_waits, NULL);
    fx_expect_exit(b);
    fx_expect_exit(c);
}

/* -------------------------------- B19 with B14: updates keep their place */

/* "b": on Ask, reports whether it knows "a" subscribes to Reply, and the
 * result of broadcasting Reply. */
static int on_ask(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ev, (void)user;
    int32_t result[2];
    result[0] = lahja_is_endpoint_subscribed_to(ep, "a", "Reply");
    result[1] = send_nowait(ep, "Reply", NULL, 0, NULL);
    CHILD_RC(send_nowait(ep, REPORT, result, sizeof result, NULL), 0);
    return 0;
}

static int child_asked(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("b", NULL);
    CHILD_CHECK(ep != NULL);
    lahja_subscription_t *s;
    CHILD_RC(lahja_subscribe(ep, "Ask", on_ask, NULL, &s), 0);
    CHILD_RC(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    return linger_and_finish(ep); /* frees the subscription with the endpoint */
}

static int main_update_order(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    lahja_stream_t *reports;
    assert_int_equal(lahja_stream_open(ep, REPORT, 1, NULL, &reports), 0);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    assert_int_equal(wait_peer_state(ep, "b", TYPES("Ask"), NULL), 0);

    /* Subscribe, then ask: b must learn of Reply before it sees Ask. */
    struct counter replies;
    counter_init(&replies, 1);
    lahja_subscription_t *s;
    assert_int_equal(lahja_subscribe(ep, "Reply", on_count, &replies, &s), 0);
    assert_int_equal(send_str(ep, "Ask", ""), 0);

    lahja_event_t *ev;
    assert_int_equal(lahja_stream_next(reports, lahja_deadline_in(GUARD_MS), &ev), 0);
    int32_t result[2];
    size_t len;
    const void *p = lahja_event_payload(ev, &len);
    assert_int_equal(len, sizeof result);
    memcpy(result, p, sizeof result);
    lahja_event_unref(ev);
    assert_int_equal(result[0], 1);             /* b knew */
    assert_int_equal(result[1], 0);             /* and its Reply went out */
    assert_int_equal(lahja_latch_wait(&replies.reached, lahja_deadline_in(GUARD_MS)), 0);
    lahja_subscription_cancel(s);
    lahja_stream_close(reports);
    ep_finish(ep);
    return 0;
}

static void test_subscription_reaches_peer_before_later_broadcast(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_asked, NULL);
    RUN_MAIN(main_update_order, NULL);
    fx_expect_exit(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BUS_TEST(test_peer_view_follows_subscribe_stream_and_wait_for),
        BUS_TEST(test_subscribed_types_lists_own_types),
        BUS_TEST(test_any_counts_self_and_all_honours_include_self),
        BUS_TEST(test_wait_until_connected_to_and_connections_change),
        BUS_TEST(test_subscription_waits_woken_by_their_change),
        BUS_TEST(test_wait_until_all_honours_include_self),
        BUS_TEST(test_subscription_reaches_peer_before_later_broadcast),
    };
    ignore_sigpipe();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
