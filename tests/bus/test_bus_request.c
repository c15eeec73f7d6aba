/*
 * Requests and responses (B18): the round trip across processes, the
 * expected response type, deadlines and cancellation, several responders,
 * and what lahja_respond refuses.
 */
#include "support_events.h"

/* ---------------------------------------------------- the responder child */

/*
 * A responder child.  Question: answers Answer "re:<payload>", or, with
 * `hold`, keeps the request.  BadQuestion: answers with the type Wrong.
 * SlowQuestion: keeps it.  RespondNow: answers every kept request with
 * Answer "late", then broadcasts Responded "<name>".  Plain (not a
 * request): tries to answer it and reports the result as PlainResult.
 */
struct responder_spec {
    const char *name;
    int hold;
};

#define MAX_HELD 8

struct responder {
    const struct responder_spec *spec;
    lahja_event_t *held[MAX_HELD];
    size_t nheld;
};

/* What every request from "a" must look like on arrival.  (Its response
 * type is not on the wire: the responder knows what it answers.) */
static void check_request(const lahja_event_t *ev)
{
    CHILD_CHECK(lahja_event_id(ev) != 0);
    CHILD_CHECK(strcmp(lahja_event_origin(ev), "a") == 0);
}

static int answer(lahja_endpoint_t *ep, const lahja_event_t *req, const char *type,
                  const char *prefix)
{
    char buf[128];
    size_t len;
    const char *p = lahja_event_payload(req, &len);
    int n = snprintf(buf, sizeof buf, "%s%.*s", prefix, (int)len, p);
    return lahja_respond_bytes(ep, req, type, buf, (size_t)n);
}

static void hold(struct responder *r, lahja_event_t *ev)
{
    CHILD_CHECK(r->nheld < MAX_HELD);
    r->held[r->nheld] = lahja_event_ref(ev);
    CHILD_CHECK(r->held[r->nheld] != NULL);
    r->nheld++;
}

static int on_question(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct responder *r = user;
    check_request(ev);
    if (r->spec->hold) {
        hold(r, ev);
        return 0;
    }
    CHILD_RC(answer(ep, ev, "Answer", "re:"), 0);
    return 0;
}

static int on_bad_question(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)user;
    check_request(ev);
    CHILD_RC(answer(ep, ev, "Wrong", "wrong:"), 0);
    return 0;
}

static int on_slow_question(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    check_request(ev);
    hold(user, ev);
    return 0;
}

static int on_respond_now(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ev;
    struct responder *r = user;
    for (size_t i = 0; i < r->nheld; i++) {
        /* The requester gave up: the response still goes out. */
        CHILD_RC(answer(ep, r->held[i], "Answer", "late:"), 0);
        lahja_event_unref(r->held[i]);
    }
    r->nheld = 0;
    CHILD_RC(send_nowait(ep, "Responded", r->spec->name, strlen(r->spec->name), NULL), 0);
    return 0;
}

static int on_plain(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)user;
    int32_t rc = answer(ep, ev, "Answer", "plain:");
    CHILD_RC(send_nowait(ep, "PlainResult", &rc, sizeof rc, NULL), 0);
    return 0;
}

static int child_responder(void *arg)
{
    struct responder r = { .spec = arg };
    lahja_endpoint_t *ep = ep_start(r.spec->name, NULL);
    CHILD_CHECK(ep != NULL);
    static const struct {
        const char *type;
        lahja_handler_fn fn;
    } handlers[] = {
        { "Question", on_question },      { "BadQuestion", on_bad_question },
        { "SlowQuestion", on_slow_question }, { "RespondNow", on_respond_now },
        { "Plain", on_plain },
    };
    lahja_subscription_t *subs[5];
    for (size_t i = 0; i < 5; i++)
        CHILD_RC(lahja_subscribe(ep, handlers[i].type, handlers[i].fn, &r, &subs[i]), 0);
    CHILD_RC(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    linger_and_finish(ep);
    for (size_t i = 0; i < r.nheld; i++)
        lahja_event_unref(r.held[i]);
    return 0;
}

static const struct responder_spec answering_b = { "b", 0 };
static const struct responder_spec holding_c = { "c", 1 };

/* ------------------------------------------------------------ the parent */

#define RESPONDER_TYPES TYPES("Question", "BadQuestion", "SlowQuestion", "RespondNow", "Plain")

/* Requests `type` expecting Answer; returns the request's result and,
 * on success, its id and the response in *resp. */
static int ask(lahja_endpoint_t *ep, const char *type, const char *payload,
               const lahja_broadcast_config_t *cfg, lahja_time_t deadline, uint64_t *id,
               lahja_event_t **resp)
{
    lahja_event_t *req;
    int rc = lahja_request_new(type, "Answer", payload, strlen(payload), &req);
    if (rc != 0)
        return rc;
    rc = lahja_request(ep, req, cfg, deadline, resp);
    if (id != NULL)
        *id = lahja_event_id(req);
    lahja_event_unref(req);
    return rc;
}

/* Asserts a response: Answer, from `origin`, to request `id`, `payload`. */
static void expect_answer(lahja_event_t *resp, const char *origin, uint64_t id,
                          const char *payload)
{
    assert_string_equal(lahja_event_type(resp), "Answer");
    assert_string_equal(lahja_event_origin(resp), origin);
    assert_true(id != 0);
    assert_int_equal(lahja_event_id(resp), id);
    size_t len;
    const char *p = lahja_event_payload(resp, &len);
    assert_int_equal(len, strlen(payload));
    assert_memory_equal(p, payload, len);
}

/* A request made from a task of its own. */
struct asker {
    lahja_endpoint_t *ep;
    const char *type;
    const char *payload;
    int rc;
    uint64_t id;
    lahja_event_t *resp;
};

static int task_ask(void *arg)
{
    struct asker *a = arg;
    a->rc = ask(a->ep, a->type, a->payload, NULL, lahja_deadline_in(GUARD_MS), &a->id, &a->resp);
    return 0;
}

static lahja_endpoint_t *parent_start(const char *const *peers)
{
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    assert_int_equal(ep_connect(ep, peers), 0);
    for (size_t i = 0; peers[i] != NULL; i++)
        assert_int_equal(wait_peer_state(ep, peers[i], RESPONDER_TYPES, NULL), 0);
    return ep;
}

static int main_round_trip(void *arg)
{
    (void)arg;
    lahja_stream_t *results;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    assert_int_equal(lahja_stream_open(ep, "PlainResult", 1, NULL, &results), 0);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    assert_int_equal(wait_peer_state(ep, "b", RESPONDER_TYPES, NULL), 0);

    uint64_t last_id = 0;
    const char *payloads[] = { "one", "two", "three" };
    for (size_t i = 0; i < 3; i++) {
        uint64_t id = 0;
        lahja_event_t *resp;
        char want[16];
        assert_int_equal(ask(ep, "Question", payloads[i], NULL, lahja_deadline_in(GUARD_MS), &id,
                             &resp), 0);
        snprintf(want, sizeof want, "re:%s", payloads[i]);
        expect_answer(resp, "b", id, want);
        assert_true(id != last_id); /* every request its own id */
        last_id = id;
        lahja_event_unref(resp);
    }

    /* The bytes form: no event to make. */
    lahja_event_t *resp;
    assert_int_equal(lahja_request_bytes(ep, "Question", "Answer", "four", 4, NULL,
                                         lahja_deadline_in(GUARD_MS), &resp), 0);
    expect_answer(resp, "b", lahja_event_id(resp), "re:four");
    lahja_event_unref(resp);

    /* Two at once: each gets the answer to its own question. */
    struct asker t1 = { ep, "Question", "t1", 12345, 0, NULL };
    struct asker t2 = { ep, "Question", "t2", 12345, 0, NULL };
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, task_ask, &t1, NULL, NULL), 0);
    assert_int_equal(lahja_nursery_spawn(n, task_ask, &t2, NULL, NULL), 0);
    assert_int_equal(lahja_nursery_close(n), 0);
    assert_int_equal(t1.rc, 0);
    assert_int_equal(t2.rc, 0);
    expect_answer(t1.resp, "b", t1.id, "re:t1");
    expect_answer(t2.resp, "b", t2.id, "re:t2");
    lahja_event_unref(t1.resp);
    lahja_event_unref(t2.resp);
    assert_true(lahja_list_empty(&ep->pending)); /* white-box: nothing left waiting */

    /* b answering an event that is not a request is refused. */
    assert_int_equal(send_str(ep, "Plain", "p"), 0);
    lahja_event_t *ev;
    assert_int_equal(lahja_stream_next(results, lahja_deadline_in(GUARD_MS), &ev), 0);
    assert_int_equal((int)payload_seq(ev), -EINVAL);
    lahja_event_unref(ev);
    lahja_stream_close(results);
    ep_finish(ep);
    return 0;
}

static void test_request_round_trip_across_processes(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_responder, (void *)&answering_b);
    RUN_MAIN(main_round_trip, NULL);
    fx_expect_exit(b);
}

static int main_wrong_type(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = parent_start(TYPES("b"));
    lahja_event_t *resp = NULL;
    assert_int_equal(ask(ep, "BadQuestion", "x", NULL, lahja_deadline_in(GUARD_MS), NULL, &resp),
                     LAHJA_EUNEXPECTEDRESPONSE);
    assert_null(resp);
    assert_string_equal(lahja_endpoint_last_error(ep),
                        "request BadQuestion expected a response of type Answer, got Wrong from b");
    assert_true(lahja_list_empty(&ep->pending));
    /* Nothing broken: the next request gets its answer. */
    uint64_t id = 0;
    assert_int_equal(ask(ep, "Question", "y", NULL, lahja_deadline_in(GUARD_MS), &id, &resp), 0);
    expect_answer(resp, "b", id, "re:y");
    lahja_event_unref(resp);
    /* A request that takes any response type gets the Wrong one. */
    assert_int_equal(lahja_request_bytes(ep, "BadQuestion", LAHJA_ANY_RESPONSE, "z", 1, NULL,
                                         lahja_deadline_in(GUARD_MS), &resp), 0);
    assert_string_equal(lahja_event_type(resp), "Wrong");
    lahja_event_unref(resp);
    lahja_event_t *bad;
    assert_int_equal(lahja_request_new("Question", "Any*", "", 0, &bad), -EINVAL);
    ep_finish(ep);
    return 0;
}

static void test_wrong_response_type_is_unexpected_response(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_responder, (void *)&answering_b);
    RUN_MAIN(main_wrong_type, NULL);
    fx_expect_exit(b);
}

/* --------------------------------------------- deadline and cancellation */

static int main_give_up(void *arg)
{
    (void)arg;
    lahja_stream_t *responded;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    /* Opened now so that b knows of it long before it answers. */
    assert_int_equal(lahja_stream_open(ep, "Responded", 0, NULL, &responded), 0);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    assert_int_equal(wait_peer_state(ep, "b", RESPONDER_TYPES, NULL), 0);

    /* b keeps SlowQuestion: the deadline ends the wait. */
    lahja_event_t *resp = NULL;
    uint64_t timed_out_id = 0;
    assert_int_equal(ask(ep, "SlowQuestion", "1", NULL, lahja_deadline_in(300), &timed_out_id,
                         &resp), -ETIMEDOUT);
    assert_null(resp);
    assert_true(lahja_list_empty(&ep->pending)); /* white-box: the request is gone */

    /* A second one, from a task that is cancelled while it waits. */
    struct asker t = { ep, "SlowQuestion", "2", 12345, 0, NULL };
    lahja_nursery_t *n;
    assert_int_equal(lahja_nursery_open(&n), 0);
    assert_int_equal(lahja_nursery_spawn(n, task_ask, &t, NULL, NULL), 0);
    assert_int_equal(lahja_yield(), 0); /* the task runs until it waits */
    assert_false(lahja_list_empty(&ep->pending));
    lahja_nursery_cancel(n);
    assert_int_equal(lahja_nursery_close(n), 0);
    assert_int_equal(t.rc, -ECANCELED);
    assert_null(t.resp);
    assert_true(lahja_list_empty(&ep->pending));

    /* b now answers both; Responded comes after the late answers. */
    assert_int_equal(send_str(ep, "RespondNow", ""), 0);
    lahja_event_t *ev;
    assert_int_equal(lahja_stream_next(responded, lahja_deadline_in(GUARD_MS), &ev), 0);
    assert_true(payload_is(ev, "b"));
    lahja_event_unref(ev);
    assert_true(lahja_is_connected_to(ep, "b"));

    /* The late answers were dropped, not kept for the next request. */
    uint64_t id = 0;
    assert_int_equal(ask(ep, "Question", "3", NULL, lahja_deadline_in(GUARD_MS), &id, &resp), 0);
    expect_answer(resp, "b", id, "re:3");
    assert_true(id != timed_out_id && id != t.id);
    lahja_event_unref(resp);
    lahja_stream_close(responded);
    ep_finish(ep);
    return 0;
}

static void test_deadline_and_cancel_remove_pending_request(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_responder, (void *)&answering_b);
    RUN_MAIN(main_give_up, NULL);
    fx_expect_exit(b);
}

/* ---------------------------------------------------- several responders */

static int main_two_peers(void *arg)
{
    (void)arg;
    lahja_stream_t *responded;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    assert_int_equal(lahja_stream_open(ep, "Responded", 0, NULL, &responded), 0);
    assert_int_equal(ep_connect(ep, TYPES("b", "c")), 0);
    assert_int_equal(wait_peer_state(ep, "b", RESPONDER_TYPES, NULL), 0);
    assert_int_equal(wait_peer_state(ep, "c", RESPONDER_TYPES, NULL), 0);

    /* Both get it; b answers at once, c keeps it. */
    uint64_t id = 0;
    lahja_event_t *resp;
    assert_int_equal(ask(ep, "Question", "x", NULL, lahja_deadline_in(GUARD_MS), &id, &resp), 0);
    expect_answer(resp, "b", id, "re:x");

    /* c answers the same request now: too late, ignored. */
    lahja_broadcast_config_t to_c = { .filter_endpoint = "c" };
    assert_int_equal(send_event(ep, "RespondNow", NULL, 0, &to_c), 0);
    lahja_event_t *ev;
    assert_int_equal(lahja_stream_next(responded, lahja_deadline_in(GUARD_MS), &ev), 0);
    assert_true(payload_is(ev, "c"));
    lahja_event_unref(ev);
    expect_answer(resp, "b", id, "re:x"); /* the response we hold is untouched */
    lahja_event_unref(resp);

    lahja_broadcast_config_t to_b = { .filter_endpoint = "b" };
    uint64_t id2 = 0;
    assert_int_equal(ask(ep, "Question", "y", &to_b, lahja_deadline_in(GUARD_MS), &id2, &resp), 0);
    expect_answer(resp, "b", id2, "re:y");
    lahja_event_unref(resp);
    assert_true(lahja_is_connected_to(ep, "c"));
    lahja_stream_close(responded);
    ep_finish(ep);
    return 0;
}

static void test_first_response_wins_later_ignored(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_responder, (void *)&answering_b);
    pid_t c = fx_spawn(child_responder, (void *)&holding_c);
    RUN_MAIN(main_two_peers, NULL);
    fx_expect_exit(b);
    fx_expect_exit(c);
}

/* Answers with its own payload; records lahja_respond's result. */
struct local_responder {
    const char *payload;
    int rc;
};

static int on_local_answer(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct local_responder *r = user;
    lahja_event_t *resp;
    if (lahja_event_new("Answer", r->payload, strlen(r->payload), &resp) != 0)
        return -ENOMEM;
    r->rc = lahja_respond(ep, ev, resp);
    lahja_event_unref(resp);
    return 0;
}

static int main_local_two(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    struct local_responder first = { "first", 12345 }, second = { "second", 12345 };
    lahja_subscription_t *s1, *s2;
    assert_int_equal(lahja_subscribe(ep, "Q", on_local_answer, &first, &s1), 0);
    assert_int_equal(lahja_subscribe(ep, "Q", on_local_answer, &second, &s2), 0);
    /* Both answer while the request is still pending: the first wins. */
    uint64_t id = 0;
    lahja_event_t *resp;
    assert_int_equal(ask(ep, "Q", "?", NULL, lahja_deadline_in(GUARD_MS), &id, &resp), 0);
    expect_answer(resp, "a", id, "first");
    assert_int_equal(first.rc, 0);
    assert_int_equal(second.rc, 0); /* a responder cannot know it came second */
    lahja_event_unref(resp);
    assert_true(lahja_list_empty(&ep->pending));
    lahja_subscription_cancel(s1);
    lahja_subscription_cancel(s2);
    ep_finish(ep);
    return 0;
}

static void test_first_of_two_local_responses_wins(void **state)
{
    (void)state;
    RUN_MAIN(main_local_two, NULL);
}

/* Answers with a copy of its payload, n times over, by the bytes form. */
static int on_bytes_answer(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    size_t n = *(size_t *)user, len;
    const char *p = lahja_event_payload(ev, &len);
    char *buf = malloc(n * len + 1);
    if (buf == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        memcpy(buf + i * len, p, len);
    int rc = lahja_respond_bytes(ep, ev, "Answer", buf, n * len);
    free(buf);
    return rc;
}

static int main_bytes_forms(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    size_t times = 1;
    lahja_subscription_t *s;
    assert_int_equal(lahja_subscribe(ep, "Q", on_bytes_answer, &times, &s), 0);
    /* Small answers go without an event; over 64 KiB with one. */
    size_t sizes[] = { 1, 100 * 1024 };
    for (size_t k = 0; k < 2; k++) {
        times = sizes[k];
        lahja_event_t *resp = NULL;
        assert_int_equal(lahja_request_bytes(ep, "Q", "Answer", "z", 1, NULL,
                                             lahja_deadline_in(GUARD_MS), &resp), 0);
        size_t len;
        const char *p = lahja_event_payload(resp, &len);
        assert_int_equal(len, sizes[k]);
        for (size_t i = 0; i < len; i++)
            assert_int_equal(p[i], 'z');
        assert_string_equal(lahja_event_origin(resp), "a");
        lahja_event_unref(resp);
    }
    /* What the bytes forms refuse. */
    lahja_event_t *resp = NULL;
    assert_int_equal(lahja_request_bytes(ep, "", "Answer", "z", 1, NULL, LAHJA_FOREVER, &resp),
                     -EINVAL);
    assert_int_equal(lahja_request_bytes(ep, "Q", NULL, "z", 1, NULL, LAHJA_FOREVER, &resp),
                     -EINVAL);
    lahja_event_t *plain;
    assert_int_equal(lahja_event_new("Q", "x", 1, &plain), 0);
    assert_int_equal(lahja_respond_bytes(ep, plain, "Answer", "x", 1), -EINVAL);
    assert_int_equal(lahja_respond_bytes(ep, plain, "", "x", 1), -EINVAL);
    lahja_event_unref(plain);
    assert_true(lahja_list_empty(&ep->pending));
    lahja_subscription_cancel(s);
    ep_finish(ep);
    return 0;
}

static void test_bytes_forms(void **state)
{
    (void)state;
    RUN_MAIN(main_bytes_forms, NULL);
}

/* ------------------------------------------------ what respond refuses */

static int main_respond_refuses(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    struct local_responder plain = { "p", 12345 };
    lahja_subscription_t *s;
    assert_int_equal(lahja_subscribe(ep, "Plain", on_local_answer, &plain, &s), 0);
    assert_int_equal(send_str(ep, "Plain", "not a request"), 0);
    assert_int_equal(plain.rc, -EINVAL);

    lahja_event_t *req, *resp;
    assert_int_equal(lahja_request_new("Q", "Answer", "?", 1, &req), 0);
    assert_int_equal(lahja_event_new("Answer", "!", 1, &resp), 0);
    /* A request never broadcast has no origin to answer to. */
    assert_int_equal(lahja_respond(ep, req, resp), -EINVAL);
    assert_int_equal(lahja_respond(ep, req, NULL), -EINVAL);
    assert_int_equal(lahja_respond(ep, NULL, resp), -EINVAL);
    assert_null(lahja_event_origin(resp)); /* refused: not bound */
    lahja_event_unref(req);
    lahja_event_unref(resp);

    /* lahja_request refuses what is not a request. */
    lahja_event_t *ev, *out = NULL;
    assert_int_equal(lahja_event_new("Plain", "x", 1, &ev), 0);
    assert_int_equal(lahja_request(ep, ev, NULL, lahja_deadline_in(GUARD_MS), &out), -EINVAL);
    assert_null(out);
    lahja_event_unref(ev);
    lahja_subscription_cancel(s);
    ep_finish(ep);
    return 0;
}

static void test_respond_refuses_non_requests(void **state)
{
    (void)state;
    RUN_MAIN(main_respond_refuses, NULL);
}

/* ------------------------------------ the response goes to the requester */

/* "b": asks "a" a Question once "a" can answer, checks the answer. */
static int child_requester(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("b", NULL);
    CHILD_CHECK(ep != NULL);
    CHILD_RC(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    CHILD_RC(lahja_wait_until_endpoint_subscribed_to(ep, "a", "Question",
                                                     lahja_deadline_in(GUARD_MS)), 0);
    lahja_event_t *req, *resp;
    CHILD_RC(lahja_request_new("Question", "Answer", "who", 3, &req), 0);
    CHILD_RC(lahja_request(ep, req, NULL, lahja_deadline_in(GUARD_MS), &resp), 0);
    CHILD_CHECK(strcmp(lahja_event_type(resp), "Answer") == 0);
    CHILD_CHECK(strcmp(lahja_event_origin(resp), "a") == 0);
    CHILD_CHECK(lahja_event_id(resp) == lahja_event_id(req));
    CHILD_CHECK(payload_is(resp, "re:who"));
    lahja_event_unref(req);
    lahja_event_unref(resp);
    return linger_and_finish(ep);
}

static const struct collect_spec collect_c_answers = { "c", { "Answer" } };

/* Answers, then fences c: an answer that reached c would precede it. */
static int on_answer_then_fence(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    int *rc = user;
    rc[0] = answer(ep, ev, "Answer", "re:");
    rc[1] = send_nowait(ep, FENCE, NULL, 0, NULL);
    return 0;
}

static int main_only_requester(void *arg)
{
    (void)arg;
    lahja_stream_t *reports;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    assert_int_equal(lahja_stream_open(ep, REPORT, 0, NULL, &reports), 0);
    assert_int_equal(ep_connect(ep, TYPES("b", "c")), 0);
    assert_int_equal(wait_peer_state(ep, "c", TYPES("Answer", FENCE), NULL), 0);
    int rcs[2] = { 12345, 12345 };
    lahja_subscription_t *s;
    assert_int_equal(lahja_subscribe(ep, "Question", on_answer_then_fence, rcs, &s), 0);
    char report[MAX_CHILDREN][512];
    read_reports(reports, 1, report);
    assert_int_equal(rcs[0], 0);
    assert_int_equal(rcs[1], 0);
    assert_string_equal(report[1], "c:Fence"); /* c subscribes to Answer, got none */
    lahja_subscription_cancel(s);
    lahja_stream_close(reports);
    ep_finish(ep);
    return 0;
}

static void test_response_goes_only_to_requester(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_requester, NULL);
    pid_t c = fx_spawn(child_collect, (void *)&collect_c_answers);
    RUN_MAIN(main_only_requester, NULL);
    fx_expect_exit(b);
    fx_expect_exit(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_forms),
        BUS_TEST(test_request_round_trip_across_processes),
        BUS_TEST(test_wrong_response_type_is_unexpected_response),
        BUS_TEST(test_deadline_and_cancel_remove_pending_request),
        BUS_TEST(test_first_response_wins_later_ignored),
        BUS_TEST(test_first_of_two_local_responses_wins),
        BUS_TEST(test_respond_refuses_non_requests),
        BUS_TEST(test_response_goes_only_to_requester),
    };
    ignore_sigpipe();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
