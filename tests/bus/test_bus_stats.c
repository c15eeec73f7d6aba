/*
 * Statistics (B36): what an endpoint counts of its peers and of itself,
 * and the built-in request that reads it from another process.
 *
 *  - after a known exchange (N events of S bytes each way), both sides
 *    count them, in events, payload bytes and wire bytes; the connection's
 *    age grows; the built-in request is answered across processes with
 *    the documented text, parsed back; the reserved type is routed but
 *    listed neither among our types nor among the peer's;
 *  - an endpoint with options.no_stats is not asked: LAHJA_ENOSUBSCRIBERS;
 *  - a stopped peer over the high-water mark holds broadcasts up (counted
 *    once per broadcast), and, killed, loses what it did not confirm;
 *  - streams' drops are summed per endpoint, closed streams included;
 *  - a request left unanswered counts as pending until it is cancelled;
 *    the calls refuse bad arguments and names never connected.
 */
#define _GNU_SOURCE
#include "support_bus.h"

#define N 10
#define S 100

/* ------------------------------------------------------------ children */

struct child_args {
    const char *dir;
    int no_stats;
};

/* "b": connects to "a", answers N "Ping" with N "Pong" of S bytes, and
 * stops once it receives "Done". */
static int child_pong(void *arg)
{
    const struct child_args *a = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    opts.no_stats = a->no_stats;
    lahja_endpoint_t *ep = bus_client("b", &opts);
    lahja_stream_t *pings = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Ping", N, NULL, &pings), 0);
    EXPECT_EQ(bus_connect(ep, a->dir, "a"), 0);
    for (int i = 0; i < N; i++) {
        lahja_event_t *ev = NULL;
        EXPECT_EQ(lahja_stream_next(pings, lahja_deadline_in(GUARD_MS), &ev), 0);
        lahja_event_unref(ev);
    }
    lahja_stream_close(pings);
    char payload[S];
    memset(payload, 'p', sizeof payload);
    for (int i = 0; i < N; i++)
        EXPECT_EQ(lahja_broadcast_bytes(ep, "Pong", payload, sizeof payload, NULL,
                                        lahja_deadline_in(GUARD_MS)),
                  0);
    lahja_event_t *done = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Done", LAHJA_FOREVER, &done), 0); /* the alarm bounds it */
    lahja_event_unref(done);
    bus_close(ep);
    return 0;
}

/* "b": connects to "a" and subscribes to "Big"; then the test stops and
 * kills it. */
static int child_sink(void *arg)
{
    const struct child_args *a = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("b", &opts);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Big", bus_count_handler, NULL, &s), 0);
    EXPECT_EQ(bus_connect(ep, a->dir, "a"), 0);
    lahja_event_t *done = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Done", LAHJA_FOREVER, &done), 0); /* killed first */
    return 0;
}

/* ------------------------------------------------------ the reply's text */

/* The value of top-level `key` (before the first peer= line), copied. */
static int reply_get(const char *text, const char *key, char *out, size_t len)
{
    size_t klen = strlen(key);
    for (const char *l = text; *l; l = strchr(l, '\n') + 1) {
        if (strncmp(l, "peer=", 5) == 0)
            break;
        const char *end = strchr(l, '\n');
        EXPECT_TRUE(end != NULL); /* every line ends with one */
        if (strncmp(l, key, klen) == 0 && l[klen] == '=') {
            snprintf(out, len, "%.*s", (int)(end - l - klen - 1), l + klen + 1);
            return 1;
        }
    }
    return 0;
}

static unsigned long long reply_u64(const char *text, const char *key)
{
    char v[64] = "";
    EXPECT_TRUE(reply_get(text, key, v, sizeof v));
    return strtoull(v, NULL, 10);
}

/* Field `field` of peer `name`'s block ("peer=name", then "peer.*"). */
static unsigned long long reply_peer_u64(const char *text, const char *name, const char *field)
{
    char open[LAHJA_NAME_MAX + 8];
    snprintf(open, sizeof open, "peer=%s\n", name);
    const char *b = strstr(text, open);
    EXPECT_TRUE(b != NULL);
    char key[64];
    snprintf(key, sizeof key, "\npeer.%s=", field);
    const char *next = strstr(b + 1, "\npeer=");
    const char *f = strstr(b, key);
    EXPECT_TRUE(f != NULL && (next == NULL || f < next));
    return strtoull(f + strlen(key), NULL, 10);
}

static int count_lines(const char *text, const char *line)
{
    int n = 0;
    size_t len = strlen(line);
    for (const char *l = text; *l; l = strchr(l, '\n') + 1)
        n += strncmp(l, line, len) == 0 && l[len] == '\n';
    return n;
}

/* ------------------------------------------------- counts and the request */

struct seen_types {
    int peers;
    int reserved;
};

static void note_types(const char *name, const char *const *types, size_t n, void *user)
{
    struct seen_types *s = user;
    (void)name;
    s->peers++;
    for (size_t i = 0; i < n; i++)
        s->reserved += strncmp(types[i], LAHJA_RESERVED_PREFIX, 6) == 0;
}

/* Asks endpoint `who` for its statistics: the reply's text, NUL-terminated
 * (the caller frees it), or NULL with *rc set. */
static char *ask_stats(lahja_endpoint_t *ep, const char *who, int *rc)
{
    lahja_broadcast_config_t cfg = { .filter_endpoint = who };
    lahja_event_t *reply = NULL;
    *rc = lahja_request_bytes(ep, LAHJA_STATS_REQUEST, LAHJA_STATS_REPLY, NULL, 0, &cfg,
                              lahja_deadline_in(GUARD_MS), &reply);
    if (*rc != 0)
        return NULL;
    EXPECT_TRUE(strcmp(lahja_event_type(reply), LAHJA_STATS_REPLY) == 0);
    size_t len;
    const char *p = lahja_event_payload(reply, &len);
    char *text = malloc(len + 1);
    EXPECT_TRUE(text != NULL);
    memcpy(text, p, len);
    text[len] = '\0';
    lahja_event_unref(reply);
    return text;
}

/* Peer `who`'s statistics once nothing is left queued for it: control
 * frames (receipts, subscription acknowledgements) go out at the end of
 * a loop turn, so the count is polled until the deadline. */
static void stats_once_written(lahja_endpoint_t *ep, const char *who, lahja_peer_stats_t *ps)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    for (;;) {
        EXPECT_EQ(lahja_peer_stats(ep, who, ps), 0);
        if (ps->queued == 0 || lahja_now() >= deadline)
            return;
        EXPECT_EQ(lahja_sleep_until(lahja_deadline_in(1)), 0);
    }
}

static int main_counts_and_request(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "a", &opts);
    lahja_stream_t *pongs = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Pong", N, NULL, &pongs), 0);
    struct child_args ca = { dir, 0 };
    bus_child_t b = bus_fork(child_pong, &ca);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "b", "Ping", lahja_deadline_in(GUARD_MS)),
              0);
    char payload[S];
    memset(payload, 'q', sizeof payload);
    for (int i = 0; i < N; i++)
        EXPECT_EQ(lahja_broadcast_bytes(ep, "Ping", payload, sizeof payload, NULL,
                                        lahja_deadline_in(GUARD_MS)),
                  0);
    for (int i = 0; i < N; i++) {
        lahja_event_t *ev = NULL;
        EXPECT_EQ(lahja_stream_next(pongs, lahja_deadline_in(GUARD_MS), &ev), 0);
        lahja_event_unref(ev);
    }
    lahja_stream_close(pongs);
    EXPECT_EQ(lahja_wait_until_delivered(ep, lahja_deadline_in(GUARD_MS)), 0);
    /* b has closed its Ping stream and waits for Done: our answers to
     * those two subscription changes are written at the end of a loop
     * turn, which may come after this task resumes. */
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "b", "Done", lahja_deadline_in(GUARD_MS)),
              0);
    lahja_peer_stats_t ps;
    stats_once_written(ep, "b", &ps);
    EXPECT_EQ(ps.connected, 1);
    EXPECT_EQ(ps.pid, b.pid);
    EXPECT_EQ(ps.events_out, N);
    EXPECT_EQ(ps.events_in, N);
    EXPECT_EQ(ps.payload_out, N * S);
    EXPECT_EQ(ps.payload_in, N * S);
    EXPECT_TRUE(ps.bytes_out > ps.payload_out); /* frames: headers, types, HELLO, SUBS */
    EXPECT_TRUE(ps.bytes_in > ps.payload_in);
    EXPECT_EQ(ps.queued, 0);
    EXPECT_EQ(ps.blocked, 0);
    EXPECT_EQ(ps.confirmed, N);
    EXPECT_EQ(ps.lost, 0);
    /* The default high-water mark (1 MiB); through shared memory, what
     * may wait behind the ring (64 KiB). */
    const char *shm = getenv("LAHJA_SHM");
    EXPECT_EQ(ps.high_water, shm != NULL && strcmp(shm, "0") == 0 ? 1u << 20 : 64u << 10);
    lahja_endpoint_stats_t es;
    EXPECT_EQ(lahja_endpoint_stats(ep, &es), 0);
    EXPECT_EQ(es.peers, 1);
    EXPECT_EQ(es.dispatched, N);
    EXPECT_EQ(es.requests_pending, 0);
    EXPECT_EQ(es.stream_drops, 0);
    EXPECT_TRUE(es.started_ms > 0);
    EXPECT_EQ(lahja_peer_stats(ep, "nobody", &ps), -ENOENT);

    /* The connection's age grows with the clock. */
    lahja_peer_stats_t before, after;
    EXPECT_EQ(lahja_peer_stats(ep, "b", &before), 0);
    EXPECT_EQ(lahja_sleep_until(lahja_deadline_in(30)), 0); /* time passing, not a sync */
    EXPECT_EQ(lahja_peer_stats(ep, "b", &after), 0);
    EXPECT_EQ(after.since, before.since);
    EXPECT_TRUE(after.age_ms >= before.age_ms + 30);

    /* The built-in type is routed, but listed nowhere the application
     * looks for its own subscriptions or its peers'. */
    EXPECT_EQ(lahja_is_endpoint_subscribed_to(ep, "b", LAHJA_STATS_REQUEST), 1);
    const char *types[8];
    size_t nt = lahja_subscribed_types(ep, types, 8);
    for (size_t i = 0; i < nt && i < 8; i++)
        EXPECT_TRUE(strncmp(types[i], "lahja.", 6) != 0);
    struct seen_types seen = { 0, 0 };
    lahja_foreach_peer(ep, note_types, &seen);
    EXPECT_EQ(seen.peers, 1);
    EXPECT_EQ(seen.reserved, 0);

    /* b's own view, as a tool would read it. */
    int rc;
    char *text = ask_stats(ep, "b", &rc);
    EXPECT_EQ(rc, 0);
    EXPECT_TRUE(strncmp(text, "lahja-stats=1\n", 14) == 0);
    char v[LAHJA_NAME_MAX + 1];
    EXPECT_TRUE(reply_get(text, "name", v, sizeof v) && strcmp(v, "b") == 0);
    EXPECT_EQ(reply_u64(text, "pid"), b.pid);
    EXPECT_EQ(reply_u64(text, "uid"), geteuid());
    EXPECT_TRUE(reply_get(text, "version", v, sizeof v) && strcmp(v, lahja_version_string()) == 0);
    EXPECT_TRUE(reply_u64(text, "started_ms") >= es.started_ms - 60000);
    EXPECT_EQ(reply_u64(text, "peers"), 1);
    EXPECT_EQ(reply_u64(text, "dispatched"), N + 1); /* the Pings, and this request */
    EXPECT_EQ(reply_u64(text, "requests_pending"), 0);
    EXPECT_EQ(count_lines(text, "sub=Done"), 1);       /* its wait_for */
    EXPECT_EQ(count_lines(text, "sub=lahja.stats"), 0); /* reserved: not listed */
    EXPECT_EQ(reply_peer_u64(text, "a", "pid"), getpid());
    EXPECT_EQ(reply_peer_u64(text, "a", "events_in"), N + 1);
    EXPECT_EQ(reply_peer_u64(text, "a", "events_out"), N);
    EXPECT_EQ(reply_peer_u64(text, "a", "payload_in"), N * S);
    EXPECT_EQ(reply_peer_u64(text, "a", "payload_out"), N * S);
    EXPECT_EQ(reply_peer_u64(text, "a", "lost"), 0);
    EXPECT_TRUE(reply_peer_u64(text, "a", "bytes_in") > N * S);
    free(text);

    /* An endpoint answers itself too (this one is local). */
    lahja_broadcast_config_t self = { .internal = 1 };
    lahja_event_t *reply = NULL;
    EXPECT_EQ(lahja_request_bytes(ep, LAHJA_STATS_REQUEST, LAHJA_STATS_REPLY, NULL, 0, &self,
                                  lahja_deadline_in(GUARD_MS), &reply),
              0);
    size_t len;
    const char *p = lahja_event_payload(reply, &len);
    EXPECT_TRUE(len > 0 && p[len - 1] == '\n' && memmem(p, len, "\nname=a\n", 8) != NULL);
    lahja_event_unref(reply);

    bus_peer_done(ep, "b");
    EXPECT_CHILD_OK(&b);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(counts_and_request)

/* options.no_stats: the request finds nobody to answer it. */
static int main_refused_when_off(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "a", &opts);
    struct child_args ca = { dir, 1 };
    bus_child_t b = bus_fork(child_pong, &ca);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "b", "Ping", lahja_deadline_in(GUARD_MS)),
              0);
    EXPECT_EQ(lahja_is_endpoint_subscribed_to(ep, "b", LAHJA_STATS_REQUEST), 0);
    int rc;
    char *text = ask_stats(ep, "b", &rc);
    EXPECT_TRUE(text == NULL);
    EXPECT_EQ(rc, LAHJA_ENOSUBSCRIBERS);
    /* Let b finish its exchange and stop. */
    lahja_stream_t *pongs = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Pong", N, NULL, &pongs), 0);
    for (int i = 0; i < N; i++)
        EXPECT_EQ(bus_send(ep, "Ping", "x"), 0);
    for (int i = 0; i < N; i++) {
        lahja_event_t *ev = NULL;
        EXPECT_EQ(lahja_stream_next(pongs, lahja_deadline_in(GUARD_MS), &ev), 0);
        lahja_event_unref(ev);
    }
    lahja_stream_close(pongs);
    bus_peer_done(ep, "b");
    EXPECT_CHILD_OK(&b);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(refused_when_off)

/* ----------------------------------------------------- blocked and lost */

#define BIG (256 * 1024)

/*
 * A peer that reads nothing (SIGSTOP) fills its queue: each
 * broadcast_nowait refused with -EAGAIN counts as blocked, and so does a
 * lahja_broadcast that waits for it, once however often it is woken.
 * Killed, it has confirmed nothing of what it was sent: lost.
 */
static int main_blocked_then_lost(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    opts.high_water = 64 * 1024;
    opts.hard_limit = 4 * BIG;
    opts.compress_threshold = SIZE_MAX;
    opts.linger_ms = 1;
    lahja_endpoint_t *ep = bus_serve(dir, "a", &opts);
    struct child_args ca = { dir, 0 };
    bus_child_t b = bus_fork(child_sink, &ca);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "b", "Big", lahja_deadline_in(GUARD_MS)),
              0);
    EXPECT_EQ(kill(b.pid, SIGSTOP), 0);

    uint8_t *payload = malloc(BIG);
    EXPECT_TRUE(payload != NULL);
    for (size_t i = 0; i < BIG; i++)
        payload[i] = (uint8_t)(i * 2654435761u >> 24);
    int rc = 0, sent = 0;
    /* The socket's buffer takes some; the hard limit then refuses. */
    for (int i = 0; i < 256 && rc == 0; i++) {
        lahja_event_t *ev = NULL;
        EXPECT_EQ(lahja_event_new("Big", payload, BIG, &ev), 0);
        rc = lahja_broadcast_nowait(ep, ev, NULL);
        sent += rc == 0;
        lahja_event_unref(ev);
    }
    EXPECT_EQ(rc, -EAGAIN);
    EXPECT_TRUE(strcmp(lahja_endpoint_blocked_peer(ep), "b") == 0);
    lahja_peer_stats_t ps;
    EXPECT_EQ(lahja_peer_stats(ep, "b", &ps), 0);
    EXPECT_EQ(ps.blocked, 1);
    EXPECT_TRUE(ps.queued > ps.high_water);
    EXPECT_EQ(ps.events_out, sent);

    /* A broadcast that waits, until its deadline: one more. */
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new("Big", payload, BIG, &ev), 0);
    EXPECT_EQ(lahja_broadcast(ep, ev, NULL, lahja_deadline_in(50)), -ETIMEDOUT);
    lahja_event_unref(ev);
    EXPECT_EQ(lahja_peer_stats(ep, "b", &ps), 0);
    EXPECT_EQ(ps.blocked, 2);
    EXPECT_EQ(ps.events_out, sent);
    EXPECT_EQ(ps.confirmed, 0);

    /* A posted one: tried, then waiting as a callback call; one more. */
    EXPECT_EQ(lahja_event_new("Big", payload, BIG, &ev), 0);
    EXPECT_EQ(lahja_post(ep, ev, NULL, 0), 0); /* the endpoint owns ev now */
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (lahja_peer_stats(ep, "b", &ps) == 0 && ps.blocked < 3 && lahja_now() < deadline)
        EXPECT_EQ(lahja_sleep_until(lahja_deadline_in(1)), 0); /* loop turns, bounded */
    EXPECT_EQ(ps.blocked, 3);
    EXPECT_EQ(lahja_sleep_until(lahja_deadline_in(20)), 0); /* turns in which it waits on */
    EXPECT_EQ(lahja_peer_stats(ep, "b", &ps), 0);
    EXPECT_EQ(ps.blocked, 3);
    free(payload);

    EXPECT_EQ(kill(b.pid, SIGKILL), 0);
    EXPECT_EQ(kill(b.pid, SIGCONT), 0);
    int status = bus_child_wait_blocking(&b);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    bus_wait_disconnected(ep, "b");
    EXPECT_EQ(lahja_peer_stats(ep, "b", &ps), 0);
    EXPECT_EQ(ps.connected, 0);
    EXPECT_EQ(ps.events_out, 0); /* no connection now */
    EXPECT_EQ(ps.confirmed, 0);
    EXPECT_EQ(ps.lost, sent);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(blocked_then_lost)

/* ------------------------------------------------------------- streams */

static int main_stream_drops_summed(void *arg)
{
    (void)arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("a", &opts);
    lahja_stream_options_t so = { .capacity = 2, .policy = LAHJA_STREAM_DROP_NEWEST };
    lahja_stream_t *s1 = NULL, *s2 = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "Tick", 0, &so, &s1), 0);
    lahja_broadcast_config_t self = { .internal = 1 };
    for (int i = 0; i < 5; i++)
        EXPECT_EQ(lahja_broadcast_bytes(ep, "Tick", "t", 1, &self, LAHJA_FOREVER), 0);
    EXPECT_EQ(lahja_stream_dropped(s1), 3);
    lahja_stream_close(s1);
    EXPECT_EQ(lahja_stream_open(ep, "Tock", 0, &so, &s2), 0);
    for (int i = 0; i < 3; i++)
        EXPECT_EQ(lahja_broadcast_bytes(ep, "Tock", "t", 1, &self, LAHJA_FOREVER), 0);
    lahja_endpoint_stats_t es;
    EXPECT_EQ(lahja_endpoint_stats(ep, &es), 0);
    EXPECT_EQ(es.stream_drops, 4); /* 3 of the closed stream, 1 of the open one */
    EXPECT_EQ(es.dispatched, 8);
    EXPECT_EQ(es.peers, 0);
    lahja_stream_close(s2);
    bus_close(ep);
    return 0;
}
BUS_MAIN_TEST(stream_drops_summed)

/* ------------------------------------------- requests and bad arguments */

static int silent_handler(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    (void)ev;
    (void)user;
    return 0; /* keeps the request unanswered */
}

static void request_done(lahja_endpoint_t *ep, int status, lahja_event_t *ev, void *user)
{
    (void)ep;
    lahja_event_unref(ev);
    lahja_complete(user, status);
}

static int main_requests_pending_and_arguments(void *arg)
{
    (void)arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = NULL;
    EXPECT_EQ(lahja_endpoint_new("a", &opts, &ep), 0);
    lahja_endpoint_stats_t es;
    EXPECT_EQ(lahja_endpoint_stats(ep, &es), 0); /* before start: all 0 */
    EXPECT_EQ(es.started_ms, 0);
    EXPECT_EQ(lahja_endpoint_start(ep, NULL), 0);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Question", silent_handler, NULL, &s), 0);
    lahja_event_t *q = NULL;
    EXPECT_EQ(lahja_request_new("Question", "Answer", "?", 1, &q), 0);
    lahja_completion_t done;
    lahja_completion_init(&done);
    lahja_op_t *op = NULL;
    EXPECT_EQ(lahja_request_cb(ep, q, NULL, LAHJA_FOREVER, request_done, &done, &op), 0);
    EXPECT_EQ(lahja_endpoint_stats(ep, &es), 0);
    EXPECT_EQ(es.requests_pending, 1);
    EXPECT_TRUE(es.started_ms > 0);
    lahja_op_cancel(op);
    EXPECT_EQ(lahja_completion_wait(&done, lahja_deadline_in(GUARD_MS)), -ECANCELED);
    EXPECT_EQ(lahja_endpoint_stats(ep, &es), 0);
    EXPECT_EQ(es.requests_pending, 0);
    lahja_event_unref(q);

    lahja_peer_stats_t ps;
    EXPECT_EQ(lahja_peer_stats(NULL, "b", &ps), -EINVAL);
    EXPECT_EQ(lahja_peer_stats(ep, NULL, &ps), -EINVAL);
    EXPECT_EQ(lahja_peer_stats(ep, "b", NULL), -EINVAL);
    EXPECT_EQ(lahja_peer_stats(ep, "b", &ps), -ENOENT);
    EXPECT_EQ(lahja_endpoint_stats(NULL, &es), -EINVAL);
    EXPECT_EQ(lahja_endpoint_stats(ep, NULL), -EINVAL);
    lahja_subscription_cancel(s);
    bus_close(ep);
    return 0;
}
BUS_MAIN_TEST(requests_pending_and_arguments)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counts_and_request),
        cmocka_unit_test(test_refused_when_off),
        cmocka_unit_test(test_blocked_then_lost),
        cmocka_unit_test(test_stream_drops_summed),
        cmocka_unit_test(test_requests_pending_and_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
