/*
 * Helpers shared by the event, consume, request, awareness and volume
 * tests of the bus.
 *
 * Each test that crosses processes forks its children before the parent
 * starts its own runtime, so that no child inherits a socket of the
 * parent's endpoint (an inherited descriptor would keep a connection
 * open after the parent closed it).  Every endpoint listens in a fresh
 * mkdtemp directory.  The parent is always endpoint "a"; children are
 * "b", "c", ...
 *
 * Processes synchronize through the bus only: a child waits until the
 * parent subscribes to what it will send, the parent waits until a
 * child's subscription set (as the parent sees it) is what the next step
 * needs.  A "Fence" event ends a script: since events from one endpoint
 * to another arrive in order (B14), whatever the sender broadcast before
 * its Fence has been dispatched by the time the Fence is.
 *
 * Children cannot use cmocka (a failed assertion would unwind into the
 * child's copy of the test runner): they check with CHILD_CHECK, which
 * prints and exits non-zero, and the parent asserts their exit status.
 * An alarm() ends any child that hangs; the fixture's teardown kills and
 * reaps whatever a failed test left behind.
 */
#ifndef LAHJA_TEST_SUPPORT_EVENTS_H
#define LAHJA_TEST_SUPPORT_EVENTS_H

#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <lahja/lahja.h>

#include "bus/endpoint.h" /* white-box: queues, compression, pending requests */
#include "runtime/rt.h"   /* white-box: lahja_tls_rt, see RUN_MAIN */

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

/* A guard deadline for waits that the other side must end: if it never
 * does, the test fails instead of hanging.  Generous for valgrind. */
#define GUARD_MS 30000

/* A child still alive after this is killed by SIGALRM. */
#define CHILD_ALARM_S 100

/* Exit status of a child whose check failed. */
#define CHILD_FAILED 3

#define MAX_CHILDREN 4

/* The type that ends a script, and the type children report on. */
#define FENCE "Fence"
#define REPORT "Report"

/* A NULL-terminated list of types, for wait_peer_state and the specs. */
#define TYPES(...) ((const char *const[]){ __VA_ARGS__, NULL })

static char g_base[64];
static pid_t g_pids[MAX_CHILDREN];

/* Set once a failed test has left its runtime behind (see RUN_MAIN). */
static int g_tainted;

/* ---------------------------------------------------------- fixture */

/*
 * A failed assertion in a task longjmps from the task's stack past the
 * frames of lahja_run on this one: their epilogues never run, so under
 * AddressSanitizer their redzones stay poisoned below the test runner's
 * frame and a later frame there would trip on them.  Forgets them.
 */
static __attribute__((noinline)) void forget_dead_frames(void)
{
#if defined(__SANITIZE_ADDRESS__)
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    __asan_unpoison_memory_region((void *)(sp - ((uintptr_t)1 << 20)), (size_t)1 << 20);
#endif
}

static inline int fx_setup(void **state)
{
    (void)state;
    forget_dead_frames();
    strcpy(g_base, "/tmp/lahja-bus-XXXXXX");
    memset(g_pids, 0, sizeof g_pids);
    return mkdtemp(g_base) != NULL ? 0 : -1;
}

/* Kills and reaps the children a failed test left, empties the directory. */
static __attribute__((noinline)) int fx_teardown_body(void)
{
    for (size_t i = 0; i < MAX_CHILDREN; i++) {
        if (g_pids[i] > 0) {
            kill(g_pids[i], SIGKILL);
            waitpid(g_pids[i], NULL, 0);
            g_pids[i] = 0;
        }
    }
    DIR *d = opendir(g_base);
    if (d != NULL) {
        struct dirent *e;
        char path[sizeof g_base + 300];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", g_base, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(g_base);
    return 0;
}

static inline int fx_teardown(void **state)
{
    (void)state;
    forget_dead_frames(); /* before the body lays out its frame */
    return fx_teardown_body();
}

#define BUS_TEST(name) cmocka_unit_test_setup_teardown(name, fx_setup, fx_teardown)

/*
 * The bus does not protect itself from SIGPIPE (test_bus_lifecycle's
 * write_to_dead_peer_no_sigpipe covers that): a peer that closes while a
 * write to it is due (a subscription update, an acknowledgement) would
 * kill the writing process.  These tests are about something else, so
 * every test program ignores it, before forking, for its children too.
 */
static inline void ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

/*
 * Runs a parent's main task: lahja_run(fn) must return 0.  A failed
 * assertion unwinds past lahja_run and leaves its runtime on the thread;
 * forgetting it (leaked) lets the next tests run on a runtime of their
 * own instead of failing with -EBUSY.  Under valgrind the children forked
 * by later tests inherit that leak and report it: the first failure of a
 * program is the one that counts.
 */
#define RUN_MAIN(fn, arg)                                      \
    do {                                                       \
        if (lahja_tls_rt != NULL)                              \
            g_tainted = 1;                                     \
        lahja_tls_rt = NULL;                                   \
        lahja_tls_task = NULL;                                 \
        assert_int_equal(lahja_run((fn), (arg), NULL), 0);     \
    } while (0)

/* ---------------------------------------------------------- children */

static inline void child_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "[child %d] %s:%d: check failed: %s\n", (int)getpid(), file, line, what);
    _exit(CHILD_FAILED);
}

static inline void child_fail_rc(const char *file, int line, const char *what, int got, int want)
{
    fprintf(stderr, "[child %d] %s:%d: %s returned %s, expected %s\n", (int)getpid(), file, line,
            what, lahja_err_name(got), lahja_err_name(want));
    _exit(CHILD_FAILED);
}

#define CHILD_CHECK(cond)                               \
    do {                                                \
        if (!(cond))                                    \
            child_fail(__FILE__, __LINE__, #cond);      \
    } while (0)

#define CHILD_RC(expr, want)                                        \
    do {                                                            \
        int rc_ = (expr);                                           \
        if (rc_ != (want))                                          \
            child_fail_rc(__FILE__, __LINE__, #expr, rc_, (want));  \
    } while (0)

/* Forks a child that runs fn(arg) as the main task of its own runtime. */
static inline pid_t fx_spawn(lahja_task_fn fn, void *arg)
{
    size_t slot = 0;
    while (slot < MAX_CHILDREN && g_pids[slot] != 0)
        slot++;
    assert_true(slot < MAX_CHILDREN);
    fflush(NULL); /* nothing buffered is written twice */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(CHILD_ALARM_S);
        if (g_tainted && RUNNING_ON_VALGRIND)
            fprintf(stderr, "[child %d] note: an earlier test failed; its abandoned runtime, "
                            "inherited here, shows as a leak\n", (int)getpid());
        int rc = lahja_run(fn, arg, NULL);
        if (rc != 0)
            fprintf(stderr, "[child %d] main task failed: %s\n", (int)getpid(), lahja_err_name(rc));
        _exit(rc == 0 ? 0 : CHILD_FAILED);
    }
    g_pids[slot] = pid;
    return pid;
}

/* Reaps a child and asserts that it exited with status 0. */
static inline void fx_expect_exit(pid_t pid)
{
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    for (size_t i = 0; i < MAX_CHILDREN; i++)
        if (g_pids[i] == pid)
            g_pids[i] = 0;
    if (WIFSIGNALED(status))
        fail_msg("child %d killed by signal %d", (int)pid, WTERMSIG(status));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---------------------------------------------------------- endpoints */

/* A started endpoint serving at <g_base>/<name>.ipc, or NULL. */
static inline lahja_endpoint_t *ep_start(const char *name, const lahja_endpoint_options_t *opts)
{
    lahja_endpoint_t *ep;
    lahja_conn_config_t cfg;
    if (lahja_endpoint_new(name, opts, &ep) != 0)
        return NULL;
    if (lahja_conn_config_from_name(&cfg, name, g_base) != 0 ||
        lahja_endpoint_start(ep, &cfg) != 0) {
        lahja_endpoint_free(ep);
        return NULL;
    }
    return ep;
}

static inline void ep_finish(lahja_endpoint_t *ep)
{
    lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep);
}

/* Connects to every endpoint named in the NULL-terminated list. */
static inline int ep_connect(lahja_endpoint_t *ep, const char *const *names)
{
    lahja_conn_config_t cfgs[MAX_CHILDREN];
    size_t n = 0;
    for (; names[n] != NULL; n++) {
        if (n == MAX_CHILDREN)
            return -EINVAL;
        int rc = lahja_conn_config_from_name(&cfgs[n], names[n], g_base);
        if (rc != 0)
            return rc;
    }
    return lahja_connect(ep, cfgs, n, lahja_deadline_in(GUARD_MS));
}

/* Broadcasts a new event of `type` (suspending, under the guard). */
static inline int send_event(lahja_endpoint_t *ep, const char *type, const void *payload,
                             size_t len, const lahja_broadcast_config_t *cfg)
{
    lahja_event_t *ev;
    int rc = lahja_event_new(type, payload, len, &ev);
    if (rc != 0)
        return rc;
    rc = lahja_broadcast(ep, ev, cfg, lahja_deadline_in(GUARD_MS));
    lahja_event_unref(ev);
    return rc;
}

static inline int send_str(lahja_endpoint_t *ep, const char *type, const char *s)
{
    return send_event(ep, type, s, strlen(s), NULL);
}

/* As send_event, never suspending: for handlers. */
static inline int send_nowait(lahja_endpoint_t *ep, const char *type, const void *payload,
                              size_t len, const lahja_broadcast_config_t *cfg)
{
    lahja_event_t *ev;
    int rc = lahja_event_new(type, payload, len, &ev);
    if (rc != 0)
        return rc;
    rc = lahja_broadcast_nowait(ep, ev, cfg);
    lahja_event_unref(ev);
    return rc;
}

/* Non-zero if the event's payload is exactly the string s. */
static inline int payload_is(const lahja_event_t *ev, const char *s)
{
    size_t len;
    const void *p = lahja_event_payload(ev, &len);
    return len == strlen(s) && (len == 0 || memcmp(p, s, len) == 0);
}

/* The 32-bit sequence number a script event carries, or UINT32_MAX. */
static inline uint32_t payload_seq(const lahja_event_t *ev)
{
    size_t len;
    const void *p = lahja_event_payload(ev, &len);
    uint32_t seq = UINT32_MAX;
    if (len == sizeof seq)
        memcpy(&seq, p, sizeof seq);
    return seq;
}

/* -------------------------------------------------------- peer views */

static inline int view_has_all(const lahja_endpoint_t *ep, const char *peer,
                               const char *const *types)
{
    for (size_t i = 0; types != NULL && types[i] != NULL; i++)
        if (!lahja_is_endpoint_subscribed_to(ep, peer, types[i]))
            return 0;
    return 1;
}

static inline int view_has_none(const lahja_endpoint_t *ep, const char *peer,
                                const char *const *types)
{
    for (size_t i = 0; types != NULL && types[i] != NULL; i++)
        if (lahja_is_endpoint_subscribed_to(ep, peer, types[i]))
            return 0;
    return 1;
}

/*
 * Waits until `peer`, still connected, subscribes to every type of `has`
 * and to none of `lacks` (either may be NULL), as this endpoint sees it.
 * A peer that disconnects meanwhile is LAHJA_EREMOTEDISCONNECTED: its
 * empty view must not pass for a removed type.
 */
static inline int wait_peer_state(lahja_endpoint_t *ep, const char *peer, const char *const *has,
                                  const char *const *lacks)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    for (;;) {
        if (!lahja_is_connected_to(ep, peer))
            return LAHJA_EREMOTEDISCONNECTED;
        if (view_has_all(ep, peer, has) && view_has_none(ep, peer, lacks))
            return 0;
        int rc = lahja_wait_until_endpoint_subscriptions_change(ep, deadline);
        if (rc != 0)
            return rc;
    }
}

/* Keeps a child's endpoint up until the parent "a" has gone, then frees it. */
static inline int linger_and_finish(lahja_endpoint_t *ep)
{
    while (lahja_is_connected_to(ep, "a"))
        if (lahja_wait_until_connections_change(ep, lahja_deadline_in(GUARD_MS)) != 0)
            break;
    ep_finish(ep);
    return 0;
}

/* The types a connected peer subscribes to, as lahja_foreach_peer gives
 * them, joined sorted with ','. */
struct peer_types {
    const char *peer;
    int found;
    char joined[256];
};

static inline int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static inline void collect_peer_types(const char *name, const char *const *types, size_t n,
                                      void *user)
{
    struct peer_types *pt = user;
    if (strcmp(name, pt->peer) != 0)
        return;
    const char *sorted[32];
    pt->found++;
    pt->joined[0] = '\0';
    if (n > 32)
        n = 32;
    memcpy(sorted, types, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strncat(pt->joined, ",", sizeof pt->joined - strlen(pt->joined) - 1);
        strncat(pt->joined, sorted[i], sizeof pt->joined - strlen(pt->joined) - 1);
    }
}

/* ------------------------------------------------------------ logging */

struct log_capture {
    int errors;
    char last_error[512];
};

static inline void capture_log(void *user, lahja_log_level_t level, const char *endpoint,
                               const char *message)
{
    (void)endpoint;
    struct log_capture *lc = user;
    if (level == LAHJA_LOG_ERROR) {
        lc->errors++;
        snprintf(lc->last_error, sizeof lc->last_error, "%s", message);
    }
}

/* ------------------------------------------------------------ counting */

/* A handler's record: calls, the last sequence number, order breaks. */
struct counter {
    int n;
    uint32_t next_seq;   /* the sequence number expected next */
    int out_of_order;
    char last_origin[LAHJA_NAME_MAX + 1];
    lahja_latch_t reached; /* set when n reaches `want` */
    int want;
};

static inline void counter_init(struct counter *c, int want)
{
    memset(c, 0, sizeof *c);
    lahja_latch_init(&c->reached);
    c->want = want;
}

static inline int on_count(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct counter *c = user;
    uint32_t seq = payload_seq(ev);
    if (seq != UINT32_MAX) {
        if (seq != c->next_seq)
            c->out_of_order++;
        c->next_seq = seq + 1;
    }
    const char *origin = lahja_event_origin(ev);
    snprintf(c->last_origin, sizeof c->last_origin, "%s", origin != NULL ? origin : "(null)");
    if (++c->n == c->want)
        lahja_latch_set(&c->reached);
    return 0;
}

/* -------------------------------------------------- scripted children */

/*
 * A sender: serves `name`, waits until "a" subscribes to every type it
 * will send and to Fence, sends `count` events of each type in turn
 * (payload: a 32-bit sequence number from 0), then, if `await_lacks` is
 * set, waits until "a" no longer subscribes to it, sends Fence and
 * lingers until "a" has gone.
 */
struct send_spec {
    const char *name;
    const char *types[4];
    uint32_t count;
    int allow_no_subscribers; /* "a" may unsubscribe while we send */
    const char *await_lacks;
};

static inline int child_sender(void *arg)
{
    const struct send_spec *s = arg;
    lahja_endpoint_t *ep = ep_start(s->name, NULL);
    CHILD_CHECK(ep != NULL);
    CHILD_RC(lahja_wait_until_connected_to(ep, "a", lahja_deadline_in(GUARD_MS)), 0);
    for (size_t t = 0; s->types[t] != NULL; t++)
        CHILD_RC(lahja_wait_until_endpoint_subscribed_to(ep, "a", s->types[t],
                                                         lahja_deadline_in(GUARD_MS)), 0);
    CHILD_RC(lahja_wait_until_endpoint_subscribed_to(ep, "a", FENCE, lahja_deadline_in(GUARD_MS)),
             0);
    lahja_broadcast_config_t cfg = { .allow_no_subscribers = s->allow_no_subscribers };
    for (size_t t = 0; s->types[t] != NULL; t++)
        for (uint32_t i = 0; i < s->count; i++)
            CHILD_RC(send_event(ep, s->types[t], &i, sizeof i, &cfg), 0);
    if (s->await_lacks != NULL)
        CHILD_RC(wait_peer_state(ep, "a", NULL, TYPES(s->await_lacks)), 0);
    CHILD_RC(send_event(ep, FENCE, NULL, 0, NULL), 0);
    return linger_and_finish(ep);
}

/*
 * A collector: serves `name`, subscribes to `types` and Fence, connects
 * to `connect_to` if set, and records the type of every event it gets.
 * On Fence it reports "<name>:<type>,<type>,...,Fence" to "a" (which
 * subscribes to Report before connecting) and lingers.
 */
struct collect_spec {
    const char *name;
    const char *types[6];
};

struct collector {
    char rec[512];
    lahja_latch_t fenced;
};

static inline int on_collect(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct collector *c = user;
    if (c->rec[0] != '\0')
        strncat(c->rec, ",", sizeof c->rec - strlen(c->rec) - 1);
    strncat(c->rec, lahja_event_type(ev), sizeof c->rec - strlen(c->rec) - 1);
    if (strcmp(lahja_event_type(ev), FENCE) == 0)
        lahja_latch_set(&c->fenced);
    return 0;
}

static inline int child_collect(void *arg)
{
    const struct collect_spec *s = arg;
    struct collector c = { .rec = "" };
    lahja_latch_init(&c.fenced);
    lahja_endpoint_t *ep = ep_start(s->name, NULL);
    CHILD_CHECK(ep != NULL);
    lahja_subscription_t *subs[8];
    size_t n = 0;
    for (; s->types[n] != NULL; n++)
        CHILD_RC(lahja_subscribe(ep, s->types[n], on_collect, &c, &subs[n]), 0);
    CHILD_RC(lahja_subscribe(ep, FENCE, on_collect, &c, &subs[n]), 0);
    n++;
    CHILD_RC(lahja_latch_wait(&c.fenced, lahja_deadline_in(GUARD_MS)), 0);
    char report[600];
    snprintf(report, sizeof report, "%s:%s", s->name, c.rec);
    CHILD_RC(send_str(ep, REPORT, report), 0);
    for (size_t i = 0; i < n; i++)
        lahja_subscription_cancel(subs[i]);
    return linger_and_finish(ep);
}

/* Waits until every peer of `names` subscribes to every type of `types`. */
static inline void expect_peers_ready(lahja_endpoint_t *ep, const char *const *names,
                                      const char *const *types)
{
    for (size_t i = 0; names[i] != NULL; i++)
        assert_int_equal(wait_peer_state(ep, names[i], types, NULL), 0);
}

/* Reads `n` reports from the stream and stores each by its child's name
 * (the letter before ':'), "b" in out[0], "c" in out[1], ... */
static inline void read_reports(lahja_stream_t *st, size_t n, char out[][512])
{
    for (size_t i = 0; i < n; i++) {
        lahja_event_t *ev;
        assert_int_equal(lahja_stream_next(st, lahja_deadline_in(GUARD_MS), &ev), 0);
        size_t len;
        const char *p = lahja_event_payload(ev, &len);
        assert_true(len >= 2 && p[1] == ':' && p[0] >= 'b' && p[0] < 'b' + MAX_CHILDREN);
        assert_true(len < 512);
        memcpy(out[p[0] - 'b'], p, len);
        out[p[0] - 'b'][len] = '\0';
        lahja_event_unref(ev);
    }
}

#endif /* LAHJA_TEST_SUPPORT_EVENTS_H */
