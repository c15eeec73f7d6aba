/*
 * nats_node - one endpoint of the cross-host tests (test_nats.sh): it
 * joins a NATS cluster (lahja_join_nats) and plays a role.
 *
 *   nats_node URLS NAME serve
 *       answers "Ping" with "pong from NAME"; counts "Ev" events, whose
 *       payloads are their numbers 0, 1, 2... per sender, and answers
 *       "Count" with "<events> <in order: 1|0>"; subscribes to "Hang"
 *       and never answers it.  Prints "ready" once joined.  Runs until
 *       SIGTERM.
 *   nats_node URLS NAME basic PEER...
 *       the checks of one exchange with the peers (see basic()).
 *   nats_node URLS NAME hang PEER
 *       a request to PEER that it never answers; prints "waiting", then
 *       how long it took to fail once PEER is killed (must be
 *       RemoteDisconnected).
 *   nats_node URLS NAME stream PEER N RATE
 *       sends N "Ev" to PEER, RATE per millisecond-ish batch; then waits
 *       for their delivery and checks PEER counted N in order, nothing
 *       lost.  Prints "streaming" once started.
 *   nats_node URLS NAME cut PEER
 *       sends "Ev" to PEER until its connection ends (its host cut off),
 *       checks the delivery counts account for every event (sent =
 *       confirmed + lost, nothing in flight), then waits for PEER to come
 *       back and checks a request goes through.
 *
 * Every check prints "ok <what>" or "FAIL <what>: why"; the exit status
 * is 0 only if all passed.  Timing options: LAHJA_NATS_HEARTBEAT_MS
 * (default 200) and LAHJA_NATS_DEAD_MS (default 1000).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lahja/lahja.h>

#define PATIENCE_MS 20000

static const char *urls, *name, *role;
static char **peers;
static int npeers;
static int failures;
static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
}

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

static void check(int ok, const char *what, const char *fmt, ...)
{
    if (ok) {
        say("ok %s", what);
        return;
    }
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    say("FAIL %s: %s", what, why);
    failures++;
}

static lahja_time_t patience(void)
{
    return lahja_deadline_in(PATIENCE_MS);
}

/* --------------------------------------------------------------- serve */

struct counts {
    uint64_t events;
    uint64_t next;   /* the number expected next */
    int in_order;
};

static int on_ev(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct counts *c = user;
    size_t len;
    const char *p = lahja_event_payload(ev, &len);
    char num[32];
    snprintf(num, sizeof num, "%.*s", (int)(len < 31 ? len : 31), p);
    uint64_t n = strtoull(num, NULL, 10);
    if (n == 0)
        c->next = 0; /* a new sender's first (the tests use one at a time) */
    if (n != c->next)
        c->in_order = 0;
    c->next = n + 1;
    c->events++;
    return 0;
}

static int on_ping(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)user;
    const char *user_reply = "Ping.reply";
    char reply[300];
    int len = snprintf(reply, sizeof reply, "pong from %s", name);
    return lahja_respond_bytes(ep, ev, user_reply, reply, (size_t)len);
}

static int on_count(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    struct counts *c = user;
    const char *user_reply = "Count.reply";
    char reply[64];
    int len = snprintf(reply, sizeof reply, "%" PRIu64 " %d", c->events, c->in_order);
    return lahja_respond_bytes(ep, ev, user_reply, reply, (size_t)len);
}

static int on_hang(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    (void)ev;
    (void)user;
    return 0;
}

static int serve(lahja_endpoint_t *ep)
{
    struct counts c = { .in_order = 1 };
    int rc = lahja_subscribe(ep, "Ping", on_ping, NULL, NULL);
    if (rc == 0)
        rc = lahja_subscribe(ep, "Ev", on_ev, &c, NULL);
    if (rc == 0)
        rc = lahja_subscribe(ep, "Count", on_count, &c, NULL);
    if (rc == 0)
        rc = lahja_subscribe(ep, "Hang", on_hang, NULL, NULL);
    if (rc != 0)
        return rc;
    say("ready");
    while (!stopping)
        lahja_sleep(20);
    say("%s got %" PRIu64 " Ev, %s", name, c.events, c.in_order ? "in order" : "OUT OF ORDER");
    return 0;
}

/* ------------------------------------------------------------- clients */

static int request(lahja_endpoint_t *ep, const char *peer, const char *type, char *out,
                   size_t cap, lahja_time_t deadline)
{
    char rtype[64];
    snprintf(rtype, sizeof rtype, "%s.reply", type);
    lahja_broadcast_config_t cfg = { .filter_endpoint = peer };
    lahja_event_t *resp = NULL;
    int rc = lahja_request_bytes(ep, type, rtype, "", 0, &cfg, deadline, &resp);
    if (rc != 0)
        return rc;
    size_t len;
    const char *p = lahja_event_payload(resp, &len);
    snprintf(out, cap, "%.*s", (int)len, p);
    lahja_event_unref(resp);
    return 0;
}

static int send_evs(lahja_endpoint_t *ep, const char *peer, uint64_t from, uint64_t n)
{
    lahja_broadcast_config_t cfg = { .filter_endpoint = peer };
    for (uint64_t i = from; i < from + n; i++) {
        char num[32];
        int len = snprintf(num, sizeof num, "%" PRIu64, i);
        int rc = lahja_broadcast_bytes(ep, "Ev", num, (size_t)len, peer ? &cfg : NULL, patience());
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The count a peer gives, and whether in order; -1 on failure. */
static long long peer_count(lahja_endpoint_t *ep, const char *peer, int *in_order)
{
    char out[64];
    int rc = request(ep, peer, "Count", out, sizeof out, patience());
    if (rc != 0)
        return -1;
    long long n = -1;
    if (sscanf(out, "%lld %d", &n, in_order) != 2)
        return -1;
    return n;
}

static int wait_peers(lahja_endpoint_t *ep)
{
    for (int i = 0; i < npeers; i++) {
        int rc = lahja_wait_until_endpoint_subscribed_to(ep, peers[i], "Count", patience());
        if (rc != 0) {
            check(0, "peers connected", "%s: %s", peers[i], lahja_strerror(rc));
            return rc;
        }
    }
    check(1, "peers connected", "");
    return 0;
}

/* Broadcast, requests, awareness, NoSubscribers and filter_endpoint
 * across hosts. */
static int basic(lahja_endpoint_t *ep)
{
    if (wait_peers(ep) != 0)
        return 1;
    int rc = lahja_wait_until_all_endpoints_subscribed_to(ep, "Ev", 0, patience());
    check(rc == 0, "wait_until_all_endpoints_subscribed_to sees the remote ones", "%s",
          lahja_strerror(rc));
    check(lahja_is_any_endpoint_subscribed_to(ep, "Ping"), "a remote subscriber counts", "");
    for (int i = 0; i < npeers; i++) {
        peer_count(ep, peers[i], &(int){ 0 }); /* the peer's count starts from here */
    }
    const char *nobody = "NobodyListens";
    rc = lahja_broadcast_bytes(ep, nobody, "x", 1, NULL, patience());
    check(rc == LAHJA_ENOSUBSCRIBERS, "an event nobody subscribes to anywhere",
          "broadcast gave %s", lahja_strerror(rc));
    lahja_event_t *resp = NULL;
    rc = lahja_request_bytes(ep, nobody, "NobodyListens.reply", "", 0, NULL, patience(), &resp);
    check(rc == LAHJA_ENOSUBSCRIBERS, "a request nobody subscribes to anywhere",
          "request gave %s", lahja_strerror(rc));

    /* Counts start from a known point: each peer's count now. */
    long long base[16];
    for (int i = 0; i < npeers && i < 16; i++) {
        int ord = 0;
        base[i] = peer_count(ep, peers[i], &ord);
    }
    const uint64_t n = 20000;
    rc = send_evs(ep, NULL, 0, n);
    check(rc == 0, "broadcast 20000 events to every host", "%s", lahja_strerror(rc));
    rc = lahja_wait_until_delivered(ep, patience());
    check(rc == 0, "their delivery confirmed", "%s", lahja_strerror(rc));
    for (int i = 0; i < npeers && i < 16; i++) {
        int ord = 0;
        long long got = peer_count(ep, peers[i], &ord);
        check(got - base[i] == (long long)n && ord, "each remote endpoint got every event, in order",
              "%s counted %lld (in order: %d)", peers[i], got - base[i], ord);
    }
    for (int i = 0; i < npeers; i++) {
        char out[300], want[300];
        snprintf(want, sizeof want, "pong from %s", peers[i]);
        rc = request(ep, peers[i], "Ping", out, sizeof out, patience());
        check(rc == 0 && strcmp(out, want) == 0, "a request to a remote endpoint (filter_endpoint)",
              "%s: %s, answer \"%s\"", peers[i], lahja_strerror(rc), rc == 0 ? out : "");
    }
    /* filter_endpoint: only the first peer gets these. */
    long long before[16];
    for (int i = 0; i < npeers && i < 16; i++) {
        int ord = 0;
        before[i] = peer_count(ep, peers[i], &ord);
    }
    rc = send_evs(ep, peers[0], 0, 100);
    check(rc == 0, "broadcast with filter_endpoint", "%s", lahja_strerror(rc));
    lahja_wait_until_delivered(ep, patience());
    for (int i = 0; i < npeers && i < 16; i++) {
        int ord = 0;
        long long got = peer_count(ep, peers[i], &ord) - before[i];
        long long want = i == 0 ? 100 : 0;
        check(got == want, "filter_endpoint reaches only its endpoint", "%s counted %lld, not %lld",
              peers[i], got, want);
    }
    lahja_delivery_t d;
    rc = lahja_delivery_stats(ep, NULL, &d);
    check(rc == 0 && d.lost == 0 && d.sent == d.confirmed, "nothing lost, everything confirmed",
          "sent %" PRIu64 ", confirmed %" PRIu64 ", lost %" PRIu64, d.sent, d.confirmed, d.lost);
    return 0;
}

static int hang(lahja_endpoint_t *ep)
{
    if (wait_peers(ep) != 0)
        return 1;
    lahja_broadcast_config_t cfg = { .filter_endpoint = peers[0] };
    say("waiting");
    lahja_time_t t0 = lahja_now();
    lahja_event_t *resp = NULL;
    int rc = lahja_request_bytes(ep, "Hang", "Hang.reply", "", 0, &cfg, patience(), &resp);
    uint64_t ms = lahja_now() - t0;
    check(rc == LAHJA_EREMOTEDISCONNECTED, "a request pending on a killed remote endpoint fails",
          "it gave %s", lahja_strerror(rc));
    say("failed after %" PRIu64 " ms", ms);
    return 0;
}

static int stream(lahja_endpoint_t *ep, uint64_t n, uint64_t batch)
{
    if (wait_peers(ep) != 0)
        return 1;
    int ord = 0;
    long long base = peer_count(ep, peers[0], &ord);
    say("streaming");
    int rc = 0;
    for (uint64_t i = 0; rc == 0 && i < n; i += batch) {
        rc = send_evs(ep, peers[0], i, i + batch <= n ? batch : n - i);
        if (rc == 0)
            rc = lahja_sleep(1);
    }
    check(rc == 0, "streamed every event", "%s", lahja_strerror(rc));
    rc = lahja_wait_until_delivered(ep, patience());
    check(rc == 0, "their delivery confirmed", "%s", lahja_strerror(rc));
    long long got = peer_count(ep, peers[0], &ord) - base;
    check(got == (long long)n && ord, "the remote endpoint got every event, in order",
          "counted %lld of %" PRIu64 " (in order: %d)", got, n, ord);
    lahja_delivery_t d;
    rc = lahja_delivery_stats(ep, peers[0], &d);
    check(rc == 0 && d.lost == 0, "nothing lost", "sent %" PRIu64 ", confirmed %" PRIu64
          ", lost %" PRIu64, d.sent, d.confirmed, d.lost);
    return 0;
}

static int cut(lahja_endpoint_t *ep)
{
    if (wait_peers(ep) != 0)
        return 1;
    say("streaming");
    uint64_t i = 0;
    lahja_time_t until = patience();
    while (lahja_is_connected_to(ep, peers[0]) && lahja_now() < until) {
        lahja_broadcast_config_t cfg = { .filter_endpoint = peers[0] };
        char num[32];
        int len = snprintf(num, sizeof num, "%" PRIu64, i);
        int rc = lahja_broadcast_bytes(ep, "Ev", num, (size_t)len, &cfg,
                                       lahja_deadline_in(100));
        if (rc == 0)
            i++;
        else if (rc != -ETIMEDOUT && rc != LAHJA_ENOSUBSCRIBERS)
            break;
        if (i % 64 == 0)
            lahja_sleep(1);
    }
    say("connection ended after %" PRIu64 " events", i);
    lahja_delivery_t d;
    int rc = lahja_delivery_stats(ep, peers[0], &d);
    check(rc == 0 && d.sent == d.confirmed + d.lost,
          "every event sent is confirmed or counted lost, none silent",
          "sent %" PRIu64 ", confirmed %" PRIu64 ", lost %" PRIu64, d.sent, d.confirmed, d.lost);
    say("lost %" PRIu64 " of %" PRIu64, d.lost, d.sent);
    rc = lahja_wait_until_endpoint_subscribed_to(ep, peers[0], "Ping", patience());
    check(rc == 0, "the cut-off endpoint is back", "%s", lahja_strerror(rc));
    char out[300];
    rc = request(ep, peers[0], "Ping", out, sizeof out, patience());
    check(rc == 0, "a request goes through again", "%s", lahja_strerror(rc));
    return 0;
}

/* ----------------------------------------------------------------- main */

static void log_line(void *user, lahja_log_level_t level, const char *endpoint,
                     const char *message)
{
    (void)user;
    if (level >= LAHJA_LOG_INFO)
        fprintf(stderr, "%s: %s\n", endpoint, message);
}

static int play(void *arg)
{
    char **argv = arg;
    lahja_endpoint_options_t o = { .log = log_line };
    lahja_endpoint_t *ep = NULL;
    int rc = lahja_endpoint_new(name, &o, &ep);
    if (rc == 0)
        rc = lahja_endpoint_start(ep, NULL);
    if (rc != 0) {
        say("FAIL start: %s", lahja_strerror(rc));
        return 1;
    }
    const char *hb = getenv("LAHJA_NATS_HEARTBEAT_MS"), *dead = getenv("LAHJA_NATS_DEAD_MS");
    lahja_nats_options_t no = {
        .servers = urls,
        .prefix = getenv("LAHJA_NATS_PREFIX"),
        .heartbeat_ms = hb != NULL ? (uint32_t)atoi(hb) : 200,
        .dead_after_ms = dead != NULL ? (uint32_t)atoi(dead) : 1000,
    };
    rc = lahja_join_nats(ep, &no);
    if (rc != 0) {
        say("FAIL join: %s (%s)", lahja_strerror(rc), lahja_endpoint_last_error(ep));
        lahja_endpoint_stop(ep);
        lahja_endpoint_free(ep);
        return 1;
    }
    if (strcmp(role, "serve") == 0)
        rc = serve(ep);
    else if (strcmp(role, "basic") == 0)
        rc = basic(ep);
    else if (strcmp(role, "hang") == 0)
        rc = hang(ep);
    else if (strcmp(role, "stream") == 0)
        rc = stream(ep, strtoull(argv[0], NULL, 10), strtoull(argv[1], NULL, 10));
    else if (strcmp(role, "cut") == 0)
        rc = cut(ep);
    lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep);
    return rc != 0 || failures != 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: nats_node URLS NAME serve|basic|hang|stream|cut [ARGS]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    urls = argv[1];
    name = argv[2];
    role = argv[3];
    char *rest[3] = { NULL, NULL, NULL };
    if (strcmp(role, "serve") != 0) {
        if (argc < 5)
            return 2;
        peers = &argv[4];
        npeers = strcmp(role, "basic") == 0 ? argc - 4 : 1;
        if (strcmp(role, "stream") == 0) {
            if (argc < 7)
                return 2;
            rest[0] = argv[5];
            rest[1] = argv[6];
        }
    }
    struct sigaction sa = { .sa_handler = on_term };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = lahja_run(play, rest, NULL);
    lahja_nats_close(1000); /* nats.c's threads end before the process does */
    return rc != 0 ? 1 : 0;
}
