/*
 * Events and broadcasting: what an event carries (B8), who receives a
 * broadcast (B10, B11) and when nobody does (B12).
 */
#include "support_events.h"

/* ------------------------------------------------------------ B8: events */

static int on_ignore(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev, (void)user;
    return 0;
}

/* A request handler's view of the request it was lent. */
struct seen_request {
    uint64_t id;
    char response_type[64];
    char origin[64];
};

static int on_seen_request(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct seen_request *s = user;
    s->id = lahja_event_id(ev);
    const char *rt = lahja_event_response_type(ev);
    snprintf(s->response_type, sizeof s->response_type, "%s", rt != NULL ? rt : "(null)");
    snprintf(s->origin, sizeof s->origin, "%s", lahja_event_origin(ev));
    return 0;
}

static int main_accessors(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    lahja_event_t *ev;
    const char payload[] = { 'p', 0, 'q', (char)0xff };
    assert_int_equal(lahja_event_new("Ping", payload, sizeof payload, &ev), 0);
    size_t len = 0;
    const void *p = lahja_event_payload(ev, &len);
    assert_string_equal(lahja_event_type(ev), "Ping");
    assert_int_equal(len, sizeof payload);
    assert_memory_equal(p, payload, sizeof payload);
    /* Not broadcast yet: no origin, no id, not a request. */
    assert_null(lahja_event_origin(ev));
    assert_int_equal(lahja_event_id(ev), 0);
    assert_null(lahja_event_response_type(ev));

    lahja_subscription_t *s;
    assert_int_equal(lahja_subscribe(ep, "Ping", on_ignore, NULL, &s), 0);
    assert_int_equal(lahja_broadcast(ep, ev, NULL, lahja_deadline_in(GUARD_MS)), 0);
    assert_string_equal(lahja_event_origin(ev), "a");
    assert_int_equal(lahja_event_id(ev), 0); /* ids are for requests */
    lahja_event_unref(ev);

    lahja_event_t *empty;
    assert_int_equal(lahja_event_new("Empty", NULL, 0, &empty), 0);
    lahja_event_payload(empty, &len);
    assert_int_equal(len, 0);
    lahja_event_unref(empty);

    /* A request broadcast as such gets an id; its handler sees it. */
    struct seen_request seen = { 0 };
    lahja_subscription_t *sq;
    assert_int_equal(lahja_subscribe(ep, "Question", on_seen_request, &seen, &sq), 0);
    lahja_event_t *req;
    assert_int_equal(lahja_request_new("Question", "Answer", "?", 1, &req), 0);
    assert_string_equal(lahja_event_response_type(req), "Answer");
    assert_int_equal(lahja_event_id(req), 0);
    assert_int_equal(lahja_broadcast(ep, req, NULL, lahja_deadline_in(GUARD_MS)), 0);
    assert_true(lahja_event_id(req) != 0);
    assert_int_equal(seen.id, lahja_event_id(req));
    assert_string_equal(seen.response_type, "Answer");
    assert_string_equal(seen.origin, "a");
    lahja_event_unref(req);

    lahja_subscription_cancel(s);
    lahja_subscription_cancel(sq);
    ep_finish(ep);
    return 0;
}

static void test_event_accessors(void **state)
{
    (void)state;
    RUN_MAIN(main_accessors, NULL);
}

/* lahja_broadcast_bytes: no event is made for a small payload, yet every
 * consumer that keeps one gets a copy of its own that outlives the call
 * and the caller's buffer. */
static int on_keep_last(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    lahja_event_t **slot = user;
    lahja_event_unref(*slot);
    *slot = lahja_event_ref(ev);
    return *slot != NULL ? 0 : -ENOMEM;
}

static int main_broadcast_bytes(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    lahja_event_t *kept = NULL;
    lahja_subscription_t *s;
    assert_int_equal(lahja_subscribe(ep, "Bytes", on_keep_last, &kept, &s), 0);
    lahja_stream_t *st;
    assert_int_equal(lahja_stream_open(ep, "Bytes", 0, NULL, &st), 0);

    enum { BIG = 70000 }; /* over what goes without an event */
    char *buf = malloc(BIG);
    assert_non_null(buf);
    memcpy(buf, "hello", 5);
    assert_int_equal(lahja_broadcast_bytes(ep, "Bytes", buf, 5, NULL, lahja_deadline_in(GUARD_MS)), 0);
    memset(buf, 'x', BIG); /* the caller's buffer is its own again */
    assert_non_null(kept);
    assert_string_equal(lahja_event_type(kept), "Bytes");
    assert_string_equal(lahja_event_origin(kept), "a");
    size_t len;
    const void *p = lahja_event_payload(kept, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(p, "hello", 5);
    lahja_event_t *ev;
    assert_int_equal(lahja_stream_next(st, lahja_deadline_in(GUARD_MS), &ev), 0);
    p = lahja_event_payload(ev, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(p, "hello", 5);
    lahja_event_unref(ev);

    /* Larger than what is sent without an event: the same, through one. */
    for (size_t i = 0; i < BIG; i++)
        buf[i] = (char)(i * 7);
    assert_int_equal(lahja_broadcast_bytes(ep, "Bytes", buf, BIG, NULL,
                                           lahja_deadline_in(GUARD_MS)), 0);
    assert_int_equal(lahja_stream_next(st, lahja_deadline_in(GUARD_MS), &ev), 0);
    p = lahja_event_payload(ev, &len);
    assert_int_equal(len, BIG);
    assert_memory_equal(p, buf, BIG);
    lahja_event_unref(ev);
    p = lahja_event_payload(kept, &len);
    assert_int_equal(len, BIG);

    /* Errors, and nothing delivered for them. */
    assert_int_equal(lahja_broadcast_bytes(ep, "", buf, 1, NULL, LAHJA_FOREVER), -EINVAL);
    assert_int_equal(lahja_broadcast_bytes(ep, "Bytes", NULL, 1, NULL, LAHJA_FOREVER), -EINVAL);
    assert_int_equal(lahja_broadcast_bytes(NULL, "Bytes", buf, 1, NULL, LAHJA_FOREVER), -EINVAL);
    assert_int_equal(lahja_broadcast_bytes(ep, "Nobody", buf, 1, NULL, LAHJA_FOREVER),
                     LAHJA_ENOSUBSCRIBERS);
    lahja_broadcast_config_t quiet = { .allow_no_subscribers = 1 };
    assert_int_equal(lahja_broadcast_bytes(ep, "Nobody", buf, 1, &quiet, LAHJA_FOREVER), 0);
    assert_int_equal(lahja_stream_next(st, lahja_deadline_in(10), &ev), -ETIMEDOUT);

    free(buf);
    lahja_event_unref(kept);
    lahja_subscription_cancel(s);
    lahja_stream_close(st);
    ep_finish(ep);
    return 0;
}

static void test_broadcast_bytes_copies_for_whoever_keeps_it(void **state)
{
    (void)state;
    RUN_MAIN(main_broadcast_bytes, NULL);
}

static void test_event_new_rejects_bad_arguments(void **state)
{
    (void)state;
    lahja_event_t *ev = NULL;
    char long_type[LAHJA_NAME_MAX + 2];
    memset(long_type, 'T', sizeof long_type - 1);
    long_type[sizeof long_type - 1] = '\0';
    assert_int_equal(lahja_event_new(NULL, "x", 1, &ev), -EINVAL);
    assert_int_equal(lahja_event_new("", "x", 1, &ev), -EINVAL);
    assert_int_equal(lahja_event_new(long_type, "x", 1, &ev), -EINVAL);
    assert_int_equal(lahja_event_new("Ping", NULL, 1, &ev), -EINVAL);
    assert_int_equal(lahja_request_new("Question", NULL, "x", 1, &ev), -EINVAL);
    assert_int_equal(lahja_request_new("Question", "", "x", 1, &ev), -EINVAL);
    assert_null(ev); /* outputs are set only on success */
}

/* Counts events and keeps their payloads' first bytes, in order. */
struct origins {
    char list[256];
    int n;
    int bad_payload;
    lahja_latch_t two;
};

static int on_origin(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct origins *o = user;
    if (o->list[0] != '\0')
        strncat(o->list, ",", sizeof o->list - strlen(o->list) - 1);
    strncat(o->list, lahja_event_origin(ev), sizeof o->list - strlen(o->list) - 1);
    if (!payload_is(ev, "hello"))
        o->bad_payload++;
    if (++o->n == 2)
        lahja_latch_set(&o->two);
    return 0;
}

static int main_bind(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    struct origins o = { .list = "" };
    lahja_latch_init(&o.two);
    lahja_subscription_t *s;
    assert_int_equal(lahja_subscribe(ep, "Ping", on_origin, &o, &s), 0);

    lahja_event_t *ev, *copy;
    assert_int_equal(lahja_event_new("Ping", "hello", 5, &ev), 0);
    assert_int_equal(lahja_broadcast(ep, ev, NULL, lahja_deadline_in(GUARD_MS)), 0);
    assert_int_equal(lahja_broadcast(ep, ev, NULL, lahja_deadline_in(GUARD_MS)), LAHJA_EBIND);
    assert_int_equal(lahja_broadcast_nowait(ep, ev, NULL), LAHJA_EBIND);
    assert_int_equal(o.n, 1); /* the refused ones reached nobody */

    /* A copy is unbound: no origin, no id, same type and payload. */
    assert_int_equal(lahja_event_copy(ev, &copy), 0);
    assert_null(lahja_event_origin(copy));
    assert_int_equal(lahja_event_id(copy), 0);
    assert_string_equal(lahja_event_type(copy), "Ping");
    assert_true(payload_is(copy, "hello"));
    assert_int_equal(lahja_broadcast_nowait(ep, copy, NULL), 0);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.bad_payload, 0);

    lahja_event_unref(copy);
    lahja_event_unref(ev);
    lahja_subscription_cancel(s);
    ep_finish(ep);
    return 0;
}

static void test_broadcast_twice_is_bind_error_copy_is_not(void **state)
{
    (void)state;
    RUN_MAIN(main_bind, NULL);
}

static int main_failed_not_bound(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    lahja_event_t *ev;
    assert_int_equal(lahja_event_new("Late", "x", 1, &ev), 0);
    assert_int_equal(lahja_broadcast(ep, ev, NULL, lahja_deadline_in(GUARD_MS)),
                     LAHJA_ENOSUBSCRIBERS);
    assert_null(lahja_event_origin(ev)); /* not bound by the failure */
    struct counter c;
    counter_init(&c, 1);
    lahja_subscription_t *s;
    assert_int_equal(lahja_subscribe(ep, "Late", on_count, &c, &s), 0);
    assert_int_equal(lahja_broadcast(ep, ev, NULL, lahja_deadline_in(GUARD_MS)), 0);
    assert_int_equal(c.n, 1);
    lahja_event_unref(ev);
    lahja_subscription_cancel(s);
    ep_finish(ep);
    return 0;
}

static void test_failed_broadcast_leaves_event_unbound(void **state)
{
    (void)state;
    RUN_MAIN(main_failed_not_bound, NULL);
}

/* ---------------------------------- B8: an event kept beyond its handler */

struct keeper {
    lahja_event_t *kept;
    int kept_is_lent;   /* lahja_event_ref returned the lent event itself */
    int lent_bind_rc;   /* broadcasting the lent event */
    int lent_ok;        /* the accessors, inside the handler */
    lahja_latch_t got;
};

static int on_keep(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct keeper *k = user;
    if (k->kept != NULL)
        return -EEXIST; /* only the first is kept */
    k->lent_ok = strcmp(lahja_event_type(ev), "Ping") == 0 && payload_is(ev, "hello") &&
                 strcmp(lahja_event_origin(ev), "a") == 0 && lahja_event_id(ev) == 0 &&
                 lahja_event_response_type(ev) == NULL;
    k->kept = lahja_event_ref(ev);
    k->kept_is_lent = k->kept == ev;
    k->lent_bind_rc = lahja_broadcast_nowait(ep, ev, NULL);
    lahja_latch_set(&k->got);
    return 0;
}

/* "b": keeps the first Ping past its handler, then sends a copy back. */
static int child_keeper(void *arg)
{
    (void)arg;
    struct keeper k = { 0 };
    lahja_latch_init(&k.got);
    lahja_endpoint_t *ep = ep_start("b", NULL);
    CHILD_CHECK(ep != NULL);
    lahja_subscription_t *s;
    CHILD_RC(lahja_subscribe(ep, "Ping", on_keep, &k, &s), 0);
    CHILD_RC(lahja_latch_wait(&k.got, lahja_deadline_in(GUARD_MS)), 0);
    lahja_subscription_cancel(s); /* the handler's frame and read buffer are long gone */
    CHILD_CHECK(k.lent_ok);
    CHILD_CHECK(k.kept != NULL && !k.kept_is_lent);
    CHILD_RC(k.lent_bind_rc, LAHJA_EBIND);
    CHILD_CHECK(strcmp(lahja_event_type(k.kept), "Ping") == 0);
    CHILD_CHECK(payload_is(k.kept, "hello"));
    CHILD_CHECK(strcmp(lahja_event_origin(k.kept), "a") == 0);
    /* The kept copy is still the received, bound event. */
    CHILD_RC(lahja_broadcast(ep, k.kept, NULL, lahja_deadline_in(GUARD_MS)), LAHJA_EBIND);
    lahja_event_t *copy;
    CHILD_RC(lahja_event_copy(k.kept, &copy), 0);
    CHILD_CHECK(lahja_event_origin(copy) == NULL);
    CHILD_RC(lahja_broadcast(ep, copy, NULL, lahja_deadline_in(GUARD_MS)), 0);
    CHILD_CHECK(strcmp(lahja_event_origin(copy), "b") == 0);
    lahja_event_unref(copy);
    lahja_event_unref(k.kept);
    return linger_and_finish(ep);
}

static int main_kept(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    struct origins o = { .list = "" };
    lahja_latch_init(&o.two);
    lahja_subscription_t *s;
    assert_int_equal(lahja_subscribe(ep, "Ping", on_origin, &o, &s), 0);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    assert_int_equal(wait_peer_state(ep, "b", TYPES("Ping"), NULL), 0);
    assert_int_equal(send_str(ep, "Ping", "hello"), 0);
    assert_int_equal(lahja_latch_wait(&o.two, lahja_deadline_in(GUARD_MS)), 0);
    /* Our own first (delivered during the broadcast), then b's copy. */
    assert_string_equal(o.list, "a,b");
    assert_int_equal(o.bad_payload, 0);
    lahja_subscription_cancel(s);
    ep_finish(ep);
    return 0;
}

static void test_event_ref_in_handler_outlives_it(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_keeper, NULL);
    RUN_MAIN(main_kept, NULL);
    fx_expect_exit(b);
}

/* --------------------------------------------- B10, B11: who receives */

static const struct collect_spec collect_b_ping = { "b", { "Ping" } };
static const struct collect_spec collect_c_ping = { "c", { "Ping" } };

/* Parent side of the collector tests: its endpoint, a local Ping
 * handler, and the stream the children report on. */
struct parent {
    lahja_endpoint_t *ep;
    lahja_stream_t *reports;
    struct counter local;
    lahja_subscription_t *local_sub;
    char report[MAX_CHILDREN][512];
};

/* Starts "a" with a local handler for `local_type` (if any), connects
 * to the children and waits until each subscribes to `types` and Fence. */
static void parent_begin(struct parent *p, const char *local_type, const char *const *children,
                         const char *const *types)
{
    memset(p, 0, sizeof *p);
    counter_init(&p->local, -1);
    p->ep = ep_start("a", NULL);
    assert_non_null(p->ep);
    if (local_type != NULL)
        assert_int_equal(lahja_subscribe(p->ep, local_type, on_count, &p->local, &p->local_sub),
                         0);
    /* Before connecting: the children learn of it in the handshake. */
    assert_int_equal(lahja_stream_open(p->ep, REPORT, 0, NULL, &p->reports), 0);
    assert_int_equal(ep_connect(p->ep, children), 0);
    expect_peers_ready(p->ep, children, types);
    expect_peers_ready(p->ep, children, TYPES(FENCE));
}

/* Sends Fence and collects the n children's reports. */
static void parent_fence(struct parent *p, size_t n)
{
    assert_int_equal(send_event(p->ep, FENCE, NULL, 0, NULL), 0);
    read_reports(p->reports, n, p->report);
}

static void parent_end(struct parent *p)
{
    lahja_stream_close(p->reports);
    lahja_subscription_cancel(p->local_sub);
    ep_finish(p->ep);
}

static int main_every_subscriber(void *arg)
{
    (void)arg;
    struct parent p;
    parent_begin(&p, "Ping", TYPES("b", "c"), TYPES("Ping"));
    assert_int_equal(send_str(p.ep, "Ping", "all"), 0);
    parent_fence(&p, 2);
    assert_string_equal(p.report[0], "b:Ping,Fence");
    assert_string_equal(p.report[1], "c:Ping,Fence");
    assert_int_equal(p.local.n, 1); /* itself included */
    assert_string_equal(p.local.last_origin, "a");
    parent_end(&p);
    return 0;
}

static void test_broadcast_reaches_every_subscriber_and_self(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_collect, (void *)&collect_b_ping);
    pid_t c = fx_spawn(child_collect, (void *)&collect_c_ping);
    RUN_MAIN(main_every_subscriber, NULL);
    fx_expect_exit(b);
    fx_expect_exit(c);
}

static const struct collect_spec collect_c_near = { "c", { "Ping2", "ping" } };

static int main_exact_type(void *arg)
{
    (void)arg;
    struct parent p;
    parent_begin(&p, NULL, TYPES("b", "c"), NULL);
    assert_int_equal(wait_peer_state(p.ep, "c", TYPES("Ping2", "ping"), NULL), 0);
    assert_int_equal(wait_peer_state(p.ep, "b", TYPES("Ping"), NULL), 0);
    assert_int_equal(send_str(p.ep, "Ping", "1"), 0);
    assert_int_equal(send_str(p.ep, "Ping2", "2"), 0);
    assert_int_equal(send_str(p.ep, "ping", "3"), 0);
    /* A prefix of a subscribed type is not subscribed. */
    assert_int_equal(send_str(p.ep, "Pin", "4"), LAHJA_ENOSUBSCRIBERS);
    parent_fence(&p, 2);
    assert_string_equal(p.report[0], "b:Ping,Fence");
    assert_string_equal(p.report[1], "c:Ping2,ping,Fence");
    parent_end(&p);
    return 0;
}

static void test_type_match_is_exact(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_collect, (void *)&collect_b_ping);
    pid_t c = fx_spawn(child_collect, (void *)&collect_c_near);
    RUN_MAIN(main_exact_type, NULL);
    fx_expect_exit(b);
    fx_expect_exit(c);
}

static int main_filter_endpoint(void *arg)
{
    (void)arg;
    struct parent p;
    parent_begin(&p, "Ping", TYPES("b", "c"), TYPES("Ping"));
    lahja_broadcast_config_t to_c = { .filter_endpoint = "c" };
    lahja_broadcast_config_t to_self = { .filter_endpoint = "a" };
    assert_int_equal(send_event(p.ep, "Ping", "c", 1, &to_c), 0);
    assert_int_equal(p.local.n, 0); /* filtered out here too */
    assert_int_equal(send_event(p.ep, "Ping", "a", 1, &to_self), 0);
    assert_int_equal(p.local.n, 1);
    parent_fence(&p, 2);
    assert_string_equal(p.report[0], "b:Fence");
    assert_string_equal(p.report[1], "c:Ping,Fence");
    assert_int_equal(p.local.n, 1);
    parent_end(&p);
    return 0;
}

static void test_filter_endpoint_reaches_exactly_one(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_collect, (void *)&collect_b_ping);
    pid_t c = fx_spawn(child_collect, (void *)&collect_c_ping);
    RUN_MAIN(main_filter_endpoint, NULL);
    fx_expect_exit(b);
    fx_expect_exit(c);
}

static int main_internal(void *arg)
{
    (void)arg;
    struct parent p;
    parent_begin(&p, "Ping", TYPES("b"), TYPES("Ping"));
    lahja_broadcast_config_t internal = { .internal = 1 };
    assert_int_equal(send_event(p.ep, "Ping", "i", 1, &internal), 0);
    assert_int_equal(p.local.n, 1);
    assert_int_equal(send_nowait(p.ep, "Ping", "j", 1, &internal), 0);
    assert_int_equal(p.local.n, 2);

    /* internal together with filter_endpoint is contradictory. */
    lahja_broadcast_config_t both = { .internal = 1, .filter_endpoint = "b" };
    assert_int_equal(send_event(p.ep, "Ping", "x", 1, &both), -EINVAL);
    assert_int_equal(send_nowait(p.ep, "Ping", "x", 1, &both), -EINVAL);
    lahja_event_t *req, *resp = NULL;
    assert_int_equal(lahja_request_new("Ping", "Pong", "x", 1, &req), 0);
    assert_int_equal(lahja_request(p.ep, req, &both, lahja_deadline_in(GUARD_MS), &resp), -EINVAL);
    assert_null(resp);
    lahja_event_unref(req);
    assert_int_equal(p.local.n, 2);

    parent_fence(&p, 1);
    assert_string_equal(p.report[0], "b:Fence"); /* b subscribes, yet got none */
    parent_end(&p);
    return 0;
}

static void test_internal_stays_local(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_collect, (void *)&collect_b_ping);
    RUN_MAIN(main_internal, NULL);
    fx_expect_exit(b);
}

/* ------------------------------------- B10: to itself, every consumer */

struct self_waiter {
    lahja_endpoint_t *ep;
    int rc;
    lahja_event_t *got;
};

static int task_wait_self(void *arg)
{
    struct self_waiter *w = arg;
    w->rc = lahja_wait_for(w->ep, "Self", lahja_deadline_in(GUARD_MS), &w->got);
    return 0;
}

static int on_answer_self(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    int *rc = user;
    lahja_event_t *resp;
    if (lahja_event_new("SelfA", "answer", 6, &resp) != 0)
        return -ENOMEM;
    *rc = lahja_respond(ep, ev, resp);
    lahja_event_unref(resp);
    return 0;
}

static int main_self(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep;
    assert_int_equal(lahja_endpoint_new("a", NULL, &ep), 0);
    assert_int_equal(lahja_endpoint_start(ep, NULL), 0); /* not even serving */

    /* wait_for first, alone, so that its subscription is seen alone. */
    struct self_waiter w = { .ep = ep, .rc = 12345 };
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, task_wait_self, &w, NULL, NULL), 0);
    assert_int_equal(lahja_yield(), 0); /* the waiter runs until it waits */
    assert_true(lahja_is_any_endpoint_subscribed_to(ep, "Self"));

    struct counter c;
    counter_init(&c, 1);
    lahja_subscription_t *s;
    lahja_stream_t *st;
    assert_int_equal(lahja_subscribe(ep, "Self", on_count, &c, &s), 0);
    assert_int_equal(lahja_stream_open(ep, "Self", 0, NULL, &st), 0);
    assert_int_equal(send_str(ep, "Self", "x"), 0);

    assert_int_equal(lahja_nursery_close(n), 0);
    assert_int_equal(w.rc, 0);
    assert_true(payload_is(w.got, "x"));
    assert_string_equal(lahja_event_origin(w.got), "a");
    lahja_event_unref(w.got);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.last_origin, "a");
    lahja_event_t *ev;
    assert_int_equal(lahja_stream_next(st, lahja_deadline_in(GUARD_MS), &ev), 0);
    assert_true(payload_is(ev, "x"));
    lahja_event_unref(ev);

    /* A request answered by a handler of the same endpoint. */
    int respond_rc = 12345;
    lahja_subscription_t *sq;
    assert_int_equal(lahja_subscribe(ep, "SelfQ", on_answer_self, &respond_rc, &sq), 0);
    lahja_event_t *req, *resp;
    assert_int_equal(lahja_request_new("SelfQ", "SelfA", "q", 1, &req), 0);
    assert_int_equal(lahja_request(ep, req, NULL, lahja_deadline_in(GUARD_MS), &resp), 0);
    assert_int_equal(respond_rc, 0);
    assert_string_equal(lahja_event_type(resp), "SelfA");
    assert_true(payload_is(resp, "answer"));
    assert_string_equal(lahja_event_origin(resp), "a");
    assert_true(lahja_event_id(req) != 0);
    assert_int_equal(lahja_event_id(resp), lahja_event_id(req));
    lahja_event_unref(resp);
    lahja_event_unref(req);

    lahja_stream_close(st);
    lahja_subscription_cancel(s);
    lahja_subscription_cancel(sq);
    ep_finish(ep);
    return 0;
}

static void test_broadcast_to_self_reaches_every_consumer(void **state)
{
    (void)state;
    RUN_MAIN(main_self, NULL);
}

/* ------------------------------------------------ B12: NoSubscribers */

/*
 * With b subscribed to Ping only and a to nothing, every one of these
 * reaches nobody: each fails with NoSubscribers, or with `allow` is
 * silently dropped (0).
 */
static void expect_nobody(lahja_endpoint_t *ep, int allow)
{
    int want = allow ? 0 : LAHJA_ENOSUBSCRIBERS;
    const lahja_broadcast_config_t cfgs[] = {
        { .allow_no_subscribers = allow },                             /* nobody at all */
        { .filter_endpoint = "b", .allow_no_subscribers = allow },     /* b, for Nobody */
        { .filter_endpoint = "a", .allow_no_subscribers = allow },     /* a, for Ping */
        { .filter_endpoint = "zzz", .allow_no_subscribers = allow },   /* unknown name */
        { .internal = 1, .allow_no_subscribers = allow },              /* a, for Ping */
    };
    const char *types[] = { "Nobody", "Nobody", "Ping", "Ping", "Ping" };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        assert_int_equal(send_event(ep, types[i], "n", 1, &cfgs[i]), want);
        assert_int_equal(send_nowait(ep, types[i], "n", 1, &cfgs[i]), want);
    }
    /* The default config too, and NULL meaning it. */
    if (!allow)
        assert_int_equal(send_event(ep, "Nobody", "n", 1, NULL), LAHJA_ENOSUBSCRIBERS);
    if (!allow)
        return;
    /* Dropped into the void, an event is broadcast all the same (B8):
     * bound, so that broadcasting it again is a BindError; a request
     * too, with its id, waiting for an answer nobody will give. */
    const lahja_broadcast_config_t drop = { .allow_no_subscribers = 1 };
    lahja_event_t *ev;
    assert_int_equal(lahja_event_new("Nobody", "n", 1, &ev), 0);
    assert_int_equal(lahja_broadcast(ep, ev, &drop, lahja_deadline_in(GUARD_MS)), 0);
    assert_string_equal(lahja_event_origin(ev), "a");
    assert_int_equal(lahja_broadcast(ep, ev, &drop, lahja_deadline_in(GUARD_MS)), LAHJA_EBIND);
    assert_int_equal(lahja_broadcast_nowait(ep, ev, &drop), LAHJA_EBIND);
    lahja_event_unref(ev);
    lahja_event_t *req, *resp = NULL;
    assert_int_equal(lahja_request_new("NobodyQ", "Pong", "q", 1, &req), 0);
    assert_int_equal(lahja_request(ep, req, &drop, lahja_deadline_in(50), &resp), -ETIMEDOUT);
    assert_null(resp);
    assert_string_equal(lahja_event_origin(req), "a");
    assert_true(lahja_event_id(req) != 0);
    lahja_event_unref(req);
}

/* Requests that reach nobody fail the same way (not allowed to drop). */
static void expect_nobody_requests(lahja_endpoint_t *ep)
{
    const lahja_broadcast_config_t cfgs[] = {
        { 0 },
        { .filter_endpoint = "zzz" },
        { .internal = 1 },
    };
    const char *types[] = { "NobodyQ", "Ping", "Ping" };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        lahja_event_t *req, *resp = NULL;
        assert_int_equal(lahja_request_new(types[i], "Pong", "q", 1, &req), 0);
        assert_int_equal(lahja_request(ep, req, &cfgs[i], lahja_deadline_in(GUARD_MS), &resp),
                         LAHJA_ENOSUBSCRIBERS);
        assert_null(resp);
        assert_true(lahja_list_empty(&ep->pending)); /* white-box: nothing left waiting */
        lahja_event_unref(req);
    }
}

static int main_no_subscribers(void *arg)
{
    int allow = *(int *)arg;
    struct parent p;
    parent_begin(&p, NULL, TYPES("b"), TYPES("Ping"));
    expect_nobody(p.ep, allow);
    if (!allow)
        expect_nobody_requests(p.ep);
    parent_fence(&p, 1);
    assert_string_equal(p.report[0], "b:Fence"); /* nothing leaked to b */
    parent_end(&p);
    return 0;
}

static void test_no_subscribers_for_every_config(void **state)
{
    (void)state;
    int allow = 0;
    pid_t b = fx_spawn(child_collect, (void *)&collect_b_ping);
    RUN_MAIN(main_no_subscribers, &allow);
    fx_expect_exit(b);
}

static void test_allow_no_subscribers_drops_silently(void **state)
{
    (void)state;
    int allow = 1;
    pid_t b = fx_spawn(child_collect, (void *)&collect_b_ping);
    RUN_MAIN(main_no_subscribers, &allow);
    fx_expect_exit(b);
}

/* ------------------------------ a run of broadcast_bytes, routes changing */

/*
 * A run of small events of one type is queued down the route the first
 * one found, until something that decides the route changes: these
 * check that every change takes effect at the next event.
 */
struct route_spec {
    const char *name;
    uint32_t first;  /* the first sequence number it will see */
    int drop;        /* drops Ping on Drop, takes it again on Again */
};

static int child_route(void *arg)
{
    const struct route_spec *s = arg;
    lahja_endpoint_t *ep = ep_start(s->name, NULL);
    CHILD_CHECK(ep != NULL);
    struct counter pings;
    counter_init(&pings, -1);
    pings.next_seq = s->first;
    lahja_subscription_t *sub;
    CHILD_RC(lahja_subscribe(ep, "Ping", on_count, &pings, &sub), 0);
    lahja_stream_t *fence;
    CHILD_RC(lahja_stream_open(ep, FENCE, 0, NULL, &fence), 0);
    CHILD_RC(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    lahja_event_t *ev;
    if (s->drop) {
        CHILD_RC(lahja_wait_for(ep, "Drop", lahja_deadline_in(GUARD_MS), &ev), 0);
        lahja_event_unref(ev);
        lahja_subscription_cancel(sub);
        CHILD_RC(lahja_wait_for(ep, "Again", lahja_deadline_in(GUARD_MS), &ev), 0);
        lahja_event_unref(ev);
        CHILD_RC(lahja_subscribe(ep, "Ping", on_count, &pings, &sub), 0);
    }
    CHILD_RC(lahja_stream_next(fence, lahja_deadline_in(GUARD_MS), &ev), 0);
    lahja_event_unref(ev);
    char report[64];
    snprintf(report, sizeof report, "%s:n=%d,ooo=%d", s->name, pings.n, pings.out_of_order);
    CHILD_RC(send_str(ep, REPORT, report), 0);
    lahja_stream_close(fence);
    lahja_subscription_cancel(sub);
    return linger_and_finish(ep);
}

static const struct route_spec route_b = { "b", 0, 1 };
static const struct route_spec route_c = { "c", 300, 0 };

/* Pings seq [from, to) with lahja_broadcast_bytes. */
static int ping_run(lahja_endpoint_t *ep, uint32_t from, uint32_t to)
{
    for (uint32_t i = from; i < to; i++) {
        int rc = lahja_broadcast_bytes(ep, "Ping", &i, sizeof i, NULL,
                                       lahja_deadline_in(GUARD_MS));
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int main_bytes_route(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    lahja_stream_t *reports;
    assert_int_equal(lahja_stream_open(ep, REPORT, 0, NULL, &reports), 0);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    assert_int_equal(wait_peer_state(ep, "b", TYPES("Ping", "Drop", FENCE), NULL), 0);
    assert_int_equal(ping_run(ep, 0, 100), 0);

    /* A consumer of our own comes: it gets the next one, then none once gone. */
    struct counter local;
    counter_init(&local, -1);
    lahja_subscription_t *sub;
    assert_int_equal(lahja_subscribe(ep, "Ping", on_count, &local, &sub), 0);
    local.next_seq = 100;
    assert_int_equal(ping_run(ep, 100, 101), 0);
    assert_int_equal(local.n, 1);
    lahja_subscription_cancel(sub);
    assert_int_equal(ping_run(ep, 101, 200), 0);
    assert_int_equal(local.n, 1);

    /* The peer drops the type: nobody takes the next one. */
    assert_int_equal(send_str(ep, "Drop", ""), 0);
    assert_int_equal(wait_peer_state(ep, "b", TYPES("Again"), TYPES("Ping")), 0);
    uint32_t lost = 999;
    assert_int_equal(lahja_broadcast_bytes(ep, "Ping", &lost, sizeof lost, NULL,
                                           lahja_deadline_in(GUARD_MS)),
                     LAHJA_ENOSUBSCRIBERS);
    /* It takes it again; then a second peer comes. */
    assert_int_equal(send_str(ep, "Again", ""), 0);
    assert_int_equal(wait_peer_state(ep, "b", TYPES("Ping"), NULL), 0);
    assert_int_equal(ping_run(ep, 200, 300), 0);
    assert_int_equal(ep_connect(ep, TYPES("c")), 0);
    assert_int_equal(wait_peer_state(ep, "c", TYPES("Ping", FENCE), NULL), 0);
    assert_int_equal(ping_run(ep, 300, 400), 0);

    /* The type in a buffer the caller rewrites between calls: each call
     * goes by what the buffer says then, a prefix or an extension of the
     * route's type not taken for it. */
    char type[8] = "Ping";
    for (uint32_t i = 400; i < 402; i++) {
        assert_int_equal(lahja_broadcast_bytes(ep, type, &i, sizeof i, NULL,
                                               lahja_deadline_in(GUARD_MS)), 0);
        strcpy(type, "Pin");
        assert_int_equal(lahja_broadcast_bytes(ep, type, &lost, sizeof lost, NULL,
                                               lahja_deadline_in(GUARD_MS)),
                         LAHJA_ENOSUBSCRIBERS);
        strcpy(type, "PingX");
        assert_int_equal(lahja_broadcast_bytes(ep, type, &lost, sizeof lost, NULL,
                                               lahja_deadline_in(GUARD_MS)),
                         LAHJA_ENOSUBSCRIBERS);
        strcpy(type, "Ping");
    }

    assert_int_equal(send_event(ep, FENCE, NULL, 0, NULL), 0);
    char report[MAX_CHILDREN][512];
    read_reports(reports, 2, report);
    assert_string_equal(report[0], "b:n=402,ooo=0");
    assert_string_equal(report[1], "c:n=102,ooo=0");
    lahja_stream_close(reports);
    ep_finish(ep);
    return 0;
}

static void test_bytes_run_follows_route_changes(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_route, (void *)&route_b);
    pid_t c = fx_spawn(child_route, (void *)&route_c);
    RUN_MAIN(main_bytes_route, NULL);
    fx_expect_exit(b);
    fx_expect_exit(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BUS_TEST(test_event_accessors),
        BUS_TEST(test_event_new_rejects_bad_arguments),
        BUS_TEST(test_broadcast_bytes_copies_for_whoever_keeps_it),
        BUS_TEST(test_broadcast_twice_is_bind_error_copy_is_not),
        BUS_TEST(test_failed_broadcast_leaves_event_unbound),
        BUS_TEST(test_event_ref_in_handler_outlives_it),
        BUS_TEST(test_broadcast_reaches_every_subscriber_and_self),
        BUS_TEST(test_type_match_is_exact),
        BUS_TEST(test_filter_endpoint_reaches_exactly_one),
        BUS_TEST(test_internal_stays_local),
        BUS_TEST(test_broadcast_to_self_reaches_every_consumer),
        BUS_TEST(test_no_subscribers_for_every_config),
        BUS_TEST(test_allow_no_subscribers_drops_silently),
        BUS_TEST(test_bytes_run_follows_route_changes),
    };
    ignore_sigpipe();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
