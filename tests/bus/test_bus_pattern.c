/*
 * Pattern subscriptions and origin filters (B34): what a pattern gets
 * and what the publisher sends for it, `*`, origin-limited consumers and
 * what the other publishers send them (nothing), NoSubscribers and the
 * waits with patterns, local dispatch (each consumer once), and a peer
 * of the version before patterns (a raw client) still served.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include "support_events.h"

/* The events sent to peer `name` so far, as the publisher counts them. */
static uint64_t sent_to(const lahja_endpoint_t *ep, const char *name)
{
    lahja_delivery_t d;
    assert_int_equal(lahja_delivery_stats(ep, name, &d), 0);
    return d.sent;
}

/* ------------------------------------------------ share of a burst */

static const struct collect_spec collect_b_block = { "b", { "block.*" } };
static const struct collect_spec collect_c_all = { "c", { "*" } };

static const char *const burst[] = { "block.new", "tx", "block", "block.x.y", "blocks" };
#define ROUNDS 3

static int main_share(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    lahja_stream_t *reports;
    assert_int_equal(lahja_stream_open(ep, REPORT, 0, NULL, &reports), 0);
    assert_int_equal(ep_connect(ep, TYPES("b", "c")), 0);
    /* A pattern is announced like a type: the queries match types with it. */
    expect_peers_ready(ep, TYPES("b"), TYPES("block.new", "block.x.y", FENCE));
    expect_peers_ready(ep, TYPES("c"), TYPES("tx", "anything", FENCE));
    assert_false(lahja_is_endpoint_subscribed_to(ep, "b", "block"));
    assert_false(lahja_is_endpoint_subscribed_to(ep, "b", "blocks"));
    uint64_t b0 = sent_to(ep, "b"), c0 = sent_to(ep, "c");

    for (int r = 0; r < ROUNDS; r++)
        for (size_t i = 0; i < sizeof burst / sizeof burst[0]; i++)
            assert_int_equal(send_str(ep, burst[i], "x"), 0);
    assert_int_equal(send_str(ep, FENCE, ""), 0);
    /* Routing is the publisher's: "b" was sent its share and nothing else. */
    assert_int_equal(sent_to(ep, "b") - b0, 2 * ROUNDS + 1);
    assert_int_equal(sent_to(ep, "c") - c0, 5 * ROUNDS + 1);

    char rep[2][512];
    read_reports(reports, 2, rep);
    /* Events come in order per connection: Fence last, nothing unmatched
     * before it.  "c" has `*` and Fence: the Fence reaches both, once each. */
    assert_string_equal(rep[0], "b:block.new,block.x.y,block.new,block.x.y,block.new,block.x.y,"
                                "Fence");
    assert_string_equal(rep[1], "c:block.new,tx,block,block.x.y,blocks,"
                                "block.new,tx,block,block.x.y,blocks,"
                                "block.new,tx,block,block.x.y,blocks,Fence,Fence");
    lahja_stream_close(reports);
    ep_finish(ep);
    return 0;
}

static void test_pattern_gets_its_share_and_star_everything(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_collect, (void *)&collect_b_block);
    pid_t c = fx_spawn(child_collect, (void *)&collect_c_all);
    RUN_MAIN(main_share, NULL);
    fx_expect_exit(b);
    fx_expect_exit(c);
}

/* ------------------------------------------------------ origin filter */

#define TICKS 5

/* A publisher "b" or "c": "a" takes ticks from "b" only.  Each sends
 * TICKS ticks all the same and reports what it sent to "a". */
static int child_publisher(void *arg)
{
    const char *name = arg;
    int chosen = strcmp(name, "b") == 0;
    lahja_endpoint_t *ep = ep_start(name, NULL);
    CHILD_CHECK(ep != NULL);
    CHILD_RC(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    /* "a" subscribed before connecting: one SUBS holds Fence and tick. */
    CHILD_RC(lahja_wait_until_endpoint_subscribed_to(ep, "a", FENCE, lahja_deadline_in(GUARD_MS)),
             0);
    CHILD_CHECK(lahja_is_endpoint_subscribed_to(ep, "a", "tick") == chosen);
    CHILD_CHECK(lahja_is_endpoint_subscribed_to(ep, "a", "tock") == chosen);
    if (!chosen)
        CHILD_RC(send_str(ep, "tick", "refused"), LAHJA_ENOSUBSCRIBERS);
    lahja_delivery_t d0, d1;
    CHILD_RC(lahja_delivery_stats(ep, "a", &d0), 0);
    lahja_broadcast_config_t cfg = { .allow_no_subscribers = 1 };
    for (uint32_t i = 0; i < TICKS; i++)
        CHILD_RC(send_event(ep, "tick", &i, sizeof i, &cfg), 0);
    CHILD_RC(lahja_delivery_stats(ep, "a", &d1), 0);
    CHILD_CHECK(d1.sent - d0.sent == (chosen ? TICKS : 0));
    CHILD_RC(send_str(ep, FENCE, name), 0);
    return linger_and_finish(ep);
}

static int on_count_local(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    ++*(int *)user;
    return 0;
}

static int main_origins(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    static const char *const only_b[] = { "b" };
    static const char *const only_a[] = { "a" };
    lahja_stream_t *ticks, *fences;
    assert_int_equal(lahja_stream_open_from(ep, "tick", only_b, 1, 0, NULL, &ticks), 0);
    /* A pattern limited to an origin: "b" sends tock too, "c" does not. */
    int tocks = 0;
    lahja_subscription_t *tock;
    assert_int_equal(lahja_subscribe_from(ep, "to*", only_b, 1, on_count_local, &tocks, &tock),
                     0);
    assert_int_equal(lahja_stream_open(ep, FENCE, 0, NULL, &fences), 0);
    /* Our own events count as from our own name. */
    int own = 0, from_b = 0;
    lahja_subscription_t *s_own, *s_b;
    assert_int_equal(lahja_subscribe_from(ep, "local", only_a, 1, on_count_local, &own, &s_own),
                     0);
    assert_int_equal(lahja_subscribe_from(ep, "local", only_b, 1, on_count_local, &from_b, &s_b),
                     0);
    assert_int_equal(send_str(ep, "local", ""), 0);
    assert_int_equal(own, 1);
    assert_int_equal(from_b, 0);
    lahja_subscription_cancel(s_own);
    /* Only "b" is named: our own is refused as nobody's. */
    assert_int_equal(send_str(ep, "local", ""), LAHJA_ENOSUBSCRIBERS);
    assert_int_equal(send_str(ep, "tick", ""), LAHJA_ENOSUBSCRIBERS);

    assert_int_equal(ep_connect(ep, TYPES("b", "c")), 0);
    for (uint32_t i = 0; i < TICKS; i++) {
        lahja_event_t *ev;
        assert_int_equal(lahja_stream_next(ticks, lahja_deadline_in(GUARD_MS), &ev), 0);
        assert_string_equal(lahja_event_origin(ev), "b");
        assert_int_equal(payload_seq(ev), i);
        lahja_event_unref(ev);
    }
    for (int i = 0; i < 2; i++) {
        lahja_event_t *ev;
        assert_int_equal(lahja_stream_next(fences, lahja_deadline_in(GUARD_MS), &ev), 0);
        lahja_event_unref(ev);
    }
    /* Both fences are in: whatever "c" sent before its own is too. */
    lahja_event_t *ev = NULL;
    assert_int_equal(lahja_stream_next(ticks, lahja_deadline_in(0), &ev), -ETIMEDOUT);
    assert_int_equal(tocks, 0);
    lahja_subscription_cancel(tock);
    lahja_subscription_cancel(s_b);
    lahja_stream_close(ticks);
    lahja_stream_close(fences);
    ep_finish(ep);
    return 0;
}

static void test_origin_filter_other_publisher_sends_nothing(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_publisher, "b");
    pid_t c = fx_spawn(child_publisher, "c");
    RUN_MAIN(main_origins, NULL);
    fx_expect_exit(b);
    fx_expect_exit(c);
}

/* ------------------------------------- NoSubscribers and the waits */

static int main_nosubs(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    lahja_stream_t *reports;
    assert_int_equal(lahja_stream_open(ep, REPORT, 0, NULL, &reports), 0);
    assert_int_equal(send_str(ep, "block.new", ""), LAHJA_ENOSUBSCRIBERS);
    assert_int_equal(ep_connect(ep, TYPES("b")), 0);
    assert_int_equal(lahja_wait_until_endpoint_subscribed_to(ep, "b", "block.new",
                                                             lahja_deadline_in(GUARD_MS)),
                     0);
    assert_int_equal(lahja_wait_until_any_endpoint_subscribed_to(ep, "block.x.y",
                                                                 lahja_deadline_in(GUARD_MS)),
                     0);
    assert_true(lahja_are_all_endpoints_subscribed_to(ep, "block.z", 0));
    assert_false(lahja_are_all_endpoints_subscribed_to(ep, "block.z", 1));
    assert_false(lahja_is_any_endpoint_subscribed_to(ep, "block"));
    assert_true(lahja_is_endpoint_subscribed_to(ep, "b", "block.*")); /* the pattern itself */
    struct peer_types pt = { .peer = "b" };
    lahja_foreach_peer(ep, collect_peer_types, &pt);
    assert_int_equal(pt.found, 1);
    assert_string_equal(pt.joined, "Fence,block.*"); /* as given */
    assert_int_equal(send_str(ep, "tx", ""), LAHJA_ENOSUBSCRIBERS);
    assert_int_equal(send_str(ep, "block.new", ""), 0);

    /* `*` here: subscribed to everything, ourselves included. */
    lahja_stream_t *all;
    assert_int_equal(lahja_stream_open(ep, "*", 0, NULL, &all), 0);
    assert_true(lahja_is_endpoint_subscribed_to(ep, "a", "tx"));
    assert_true(lahja_are_all_endpoints_subscribed_to(ep, "block.z", 1));
    const char *types[4];
    assert_int_equal(lahja_subscribed_types(ep, types, 4), 2);
    assert_true(strcmp(types[0], "*") == 0 || strcmp(types[1], "*") == 0);
    assert_int_equal(send_str(ep, "tx", "mine"), 0);
    lahja_event_t *ev;
    assert_int_equal(lahja_stream_next(all, lahja_deadline_in(GUARD_MS), &ev), 0);
    assert_string_equal(lahja_event_type(ev), "tx");
    lahja_event_unref(ev);
    lahja_stream_close(all);
    assert_int_equal(send_str(ep, "tx", ""), LAHJA_ENOSUBSCRIBERS);

    assert_int_equal(send_str(ep, FENCE, ""), 0);
    char rep[1][512];
    read_reports(reports, 1, rep);
    assert_string_equal(rep[0], "b:block.new,Fence");
    lahja_stream_close(reports);
    ep_finish(ep);
    return 0;
}

static void test_nosubscribers_and_waits_count_patterns(void **state)
{
    (void)state;
    pid_t b = fx_spawn(child_collect, (void *)&collect_b_block);
    RUN_MAIN(main_nosubs, NULL);
    fx_expect_exit(b);
}

/* --------------------------------------------------- local dispatch */

struct local {
    int n[5];
    lahja_subscription_t *s[5];
};

static int on_local(lahja_endpoint_t *ep, lahja_event_t *ev, void *user, int i)
{
    (void)ep, (void)ev;
    struct local *l = user;
    l->n[i]++;
    if (i == 0 && l->s[4] != NULL) { /* the last consumer of a later pattern */
        lahja_subscription_cancel(l->s[4]);
        l->s[4] = NULL;
    }
    return 0;
}

static int on_l0(lahja_endpoint_t *ep, lahja_event_t *ev, void *u) { return on_local(ep, ev, u, 0); }
static int on_l1(lahja_endpoint_t *ep, lahja_event_t *ev, void *u) { return on_local(ep, ev, u, 1); }
static int on_l2(lahja_endpoint_t *ep, lahja_event_t *ev, void *u) { return on_local(ep, ev, u, 2); }
static int on_l3(lahja_endpoint_t *ep, lahja_event_t *ev, void *u) { return on_local(ep, ev, u, 3); }
static int on_l4(lahja_endpoint_t *ep, lahja_event_t *ev, void *u) { return on_local(ep, ev, u, 4); }

static int main_local(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    struct local l;
    memset(&l, 0, sizeof l);
    /* s[4] "x*" comes after s[0]'s pattern and is cancelled by it. */
    assert_int_equal(lahja_subscribe(ep, "x.*", on_l0, &l, &l.s[0]), 0);
    assert_int_equal(lahja_subscribe(ep, "*", on_l1, &l, &l.s[1]), 0);
    assert_int_equal(lahja_subscribe(ep, "x.y", on_l2, &l, &l.s[2]), 0);
    assert_int_equal(lahja_subscribe(ep, "x.*", on_l3, &l, &l.s[3]), 0);
    assert_int_equal(lahja_subscribe(ep, "x*", on_l4, &l, &l.s[4]), 0);
    assert_int_equal(send_str(ep, "x.y", ""), 0);
    assert_int_equal(l.n[0], 1);
    assert_int_equal(l.n[1], 1);
    assert_int_equal(l.n[2], 1);
    assert_int_equal(l.n[3], 1);
    assert_int_equal(l.n[4], 0);
    assert_int_equal(send_str(ep, "x.z", ""), 0);
    assert_int_equal(l.n[0], 2);
    assert_int_equal(l.n[2], 1);
    assert_int_equal(l.n[3], 2);
    /* `a*b` is an exact type; no event type may end in '*'. */
    lahja_subscription_t *ab;
    int n_ab = 0;
    assert_int_equal(lahja_subscribe(ep, "a*b", on_count_local, &n_ab, &ab), 0);
    assert_int_equal(send_str(ep, "a*b", ""), 0);
    assert_int_equal(send_str(ep, "axb", ""), 0); /* "*" only */
    assert_int_equal(n_ab, 1);
    lahja_event_t *ev = NULL;
    assert_int_equal(lahja_event_new("a*", "", 0, &ev), -EINVAL);
    assert_int_equal(lahja_broadcast_bytes(ep, "a.*", "", 0, NULL, lahja_deadline_in(GUARD_MS)),
                     -EINVAL);
    static const char *const bad[] = { "a/b" };
    assert_int_equal(lahja_subscribe_from(ep, "x", bad, 1, on_count_local, &n_ab, NULL), -EINVAL);
    assert_int_equal(lahja_subscribe_from(ep, "x", NULL, 1, on_count_local, &n_ab, NULL), -EINVAL);
    /* wait_for with a pattern and an origin. */
    static const char *const only_a[] = { "a" };
    lahja_subscription_cancel(l.s[1]);
    lahja_event_t *got = NULL;
    assert_int_equal(lahja_wait_for_from(ep, "w.*", only_a, 1, lahja_deadline_in(0), &got),
                     -ETIMEDOUT);
    lahja_subscription_cancel(ab);
    for (int i = 0; i < 4; i++)
        if (i != 1)
            lahja_subscription_cancel(l.s[i]);
    ep_finish(ep);
    return 0;
}

static void test_local_dispatch_reaches_each_consumer_once(void **state)
{
    (void)state;
    RUN_MAIN(main_local, NULL);
}

/* ------------------------------------------------------ an old peer */

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int read_full(int fd, uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * A peer of the version before patterns, written by hand: HELLO with no
 * feature bits and a plain SUBS of "r.t".  It must get a plain SUBS of
 * what it can act on ("lim", limited to it, and "old.x"; not the pattern
 * nor "lim2", limited to another) and then the "r.t" event.
 */
static int old_peer(void)
{
    lahja_conn_config_t cfg;
    CHILD_RC(lahja_conn_config_from_name(&cfg, "a", g_base), 0);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHILD_CHECK(fd >= 0);
    struct timeval tv = { GUARD_MS / 1000, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", cfg.path);
    CHILD_CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    uint8_t out[128], *p = out;
    /* HELLO: magic, version 1, features 0, max frame, name */
    p = put_u32(p, 15 + 3);
    *p++ = 1, *p++ = 0, *p++ = 0, *p++ = 0;
    memcpy(p, "LAHJA\1", 6), p += 6;
    p = put_u32(p, 0);
    p = put_u32(p, 1 << 20);
    *p++ = 3;
    memcpy(p, "raw", 3), p += 3;
    /* SUBS 1: "r.t" */
    p = put_u32(p, 8 + 4);
    *p++ = 2, *p++ = 0, *p++ = 0, *p++ = 0;
    p = put_u32(p, 1);
    p = put_u32(p, 1);
    *p++ = 3;
    memcpy(p, "r.t", 3), p += 3;
    CHILD_CHECK(send(fd, out, (size_t)(p - out), MSG_NOSIGNAL) == p - out);

    int subs_seen = 0;
    char bound[8][16] = { { 0 } };
    for (;;) {
        uint8_t hdr[8], body[512];
        CHILD_CHECK(read_full(fd, hdr, 8) == 0);
        uint32_t len = get_u32(hdr);
        CHILD_CHECK(len <= sizeof body);
        CHILD_CHECK(read_full(fd, body, len) == 0);
        if (hdr[4] == 2 && !subs_seen) {
            CHILD_CHECK(hdr[5] == 0); /* no ENTRIES for us */
            char set[256] = "";
            uint32_t count = get_u32(body + 4);
            const uint8_t *q = body + 8;
            /* the endpoint sends its types in its table's order: sort */
            const char *names[8];
            char store[8][64];
            CHILD_CHECK(count <= 8);
            for (uint32_t i = 0; i < count; i++) {
                snprintf(store[i], sizeof store[i], "%.*s", q[0], (const char *)q + 1);
                names[i] = store[i];
                q += 1 + q[0];
            }
            qsort(names, count, sizeof *names, cmp_str);
            for (uint32_t i = 0; i < count; i++) {
                strcat(set, i ? "," : "");
                strcat(set, names[i]);
            }
            /* lahja.stats: every endpoint's built-in request, reserved */
            if (strcmp(set, "lahja.stats,lim,old.x") != 0) {
                fprintf(stderr, "[child] SUBS was %s\n", set);
                CHILD_CHECK(!"plain SUBS of lahja.stats,lim,old.x");
            }
            subs_seen = 1;
        } else if (hdr[4] == 4) { /* TYPE */
            uint32_t id = get_u32(body);
            CHILD_CHECK(id < 8 && body[4] < 16);
            memcpy(bound[id], body + 5, body[4]);
        } else if (hdr[4] == 5) { /* EVENT */
            uint32_t id = get_u32(body);
            CHILD_CHECK(subs_seen && id < 8);
            CHILD_CHECK(strcmp(bound[id], "r.t") == 0);
            CHILD_CHECK(len == 4 + 2 && memcmp(body + 4, "hi", 2) == 0);
            break;
        }
    }
    close(fd);
    return 0;
}

static int main_old_peer(void *arg)
{
    lahja_endpoint_t *ep = ep_start("a", NULL);
    assert_non_null(ep);
    static const char *const to_raw[] = { "raw" }, *const to_zzz[] = { "zzz" };
    int n = 0;
    lahja_subscription_t *s[4];
    assert_int_equal(lahja_subscribe(ep, "old.x", on_count_local, &n, &s[0]), 0);
    assert_int_equal(lahja_subscribe(ep, "old.*", on_count_local, &n, &s[1]), 0);
    assert_int_equal(lahja_subscribe_from(ep, "lim", to_raw, 1, on_count_local, &n, &s[2]), 0);
    assert_int_equal(lahja_subscribe_from(ep, "lim2", to_zzz, 1, on_count_local, &n, &s[3]), 0);
    /* The raw peer is forked once "a" serves; it runs no runtime, and
     * what it inherits of ours it does not use. */
    fflush(NULL);
    pid_t raw = fork();
    assert_true(raw >= 0);
    if (raw == 0) {
        alarm(CHILD_ALARM_S);
        _exit(old_peer() == 0 ? 0 : CHILD_FAILED);
    }
    *(pid_t *)arg = raw;
    assert_int_equal(lahja_wait_until_endpoint_subscribed_to(ep, "raw", "r.t",
                                                             lahja_deadline_in(GUARD_MS)),
                     0);
    assert_int_equal(send_str(ep, "r.t", "hi"), 0);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (lahja_is_connected_to(ep, "raw"))
        assert_int_equal(lahja_wait_until_connections_change(ep, deadline), 0);
    for (int i = 0; i < 4; i++)
        lahja_subscription_cancel(s[i]);
    ep_finish(ep);
    return 0;
}

static void test_old_peer_gets_plain_subs_and_interoperates(void **state)
{
    (void)state;
    pid_t raw = 0;
    RUN_MAIN(main_old_peer, &raw);
    int status = 0;
    assert_int_equal(waitpid(raw, &status, 0), raw);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BUS_TEST(test_pattern_gets_its_share_and_star_everything),
        BUS_TEST(test_origin_filter_other_publisher_sends_nothing),
        BUS_TEST(test_nosubscribers_and_waits_count_patterns),
        BUS_TEST(test_local_dispatch_reaches_each_consumer_once),
        BUS_TEST(test_old_peer_gets_plain_subs_and_interoperates),
    };
    ignore_sigpipe();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
