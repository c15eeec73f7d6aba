/*
 * Helpers shared by the bus tests that run endpoints in real processes:
 * temporary directories, forked children and how to wait for them from a
 * task, log capture, and a raw socket client that writes frames by hand.
 *
 * Processes are ordered through the bus itself (wait_until_*, requests)
 * or through a child's end of life (its pipe reaches EOF), never with
 * sleeps.  Each test's body runs in a child process of its own (see
 * BUS_MAIN_TEST), so that a failure, a crash or a leak stays within its
 * test.  Checks go through EXPECT_*, which work on both sides of a fork:
 * in the test runner they fail the cmocka test; in a child (where a
 * cmocka failure would unwind into a copy of the runner) they print what
 * went wrong and exit with BUS_EXIT_FAIL.
 *
 * Each test file defines _GNU_SOURCE before its first include.
 */
#ifndef LAHJA_TEST_SUPPORT_BUS_H
#define LAHJA_TEST_SUPPORT_BUS_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include <lahja/lahja.h>

/* RUNNING_ON_VALGRIND: tests that fork many processes do fewer rounds
 * under valgrind. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

/* A long guard deadline for waits that something else must end: if it
 * never comes, the test fails instead of hanging.  Generous, for a
 * loaded machine and valgrind. */
#define GUARD_MS 10000

/* A child that outlives this is killed by SIGALRM, so that no test
 * leaves a process behind even when the test process itself fails. */
#define BUS_CHILD_ALARM_S 60

/* A child's exit code when one of its checks failed. */
#define BUS_EXIT_FAIL 99

/* Non-zero in a forked child: checks exit instead of failing cmocka. */
static int bus_in_child;

/* In a forked child: its end of the pipe to the parent (see bus_child_t). */
static int bus_child_fd = -1;

/* ------------------------------------------------------------- checks */

/* This process's children not yet reaped, killed if a check fails so
 * that a failed test leaves no process behind (nor waits for the
 * children's alarms). */
#define BUS_MAX_CHILDREN 16
static pid_t bus_children[BUS_MAX_CHILDREN];

static inline void bus_child_track(pid_t pid, pid_t replace)
{
    for (int i = 0; i < BUS_MAX_CHILDREN; i++) {
        if (bus_children[i] == replace) {
            bus_children[i] = pid;
            return;
        }
    }
}

static inline void bus_kill_children(void)
{
    for (int i = 0; i < BUS_MAX_CHILDREN; i++) {
        if (bus_children[i] > 0) {
            kill(bus_children[i], SIGKILL);
            waitpid(bus_children[i], NULL, 0);
            bus_children[i] = 0;
        }
    }
}

static inline void bus_fail_at(const char *file, int line)
{
    bus_kill_children();
    if (bus_in_child) {
        fflush(stderr);
        _exit(BUS_EXIT_FAIL);
    }
    _fail(file, line);
}

static inline void bus_expect_eq(long long actual, long long expected, const char *a,
                                 const char *e, const char *file, int line)
{
    if (actual == expected)
        return;
    fprintf(stderr, "%s:%d: [pid %d] %s is %lld (%s), expected %s = %lld (%s)\n", file, line,
            (int)getpid(), a, actual, lahja_err_name((int)actual), e, expected,
            lahja_err_name((int)expected));
    bus_fail_at(file, line);
}

static inline void bus_expect_true(int cond, const char *what, const char *file, int line)
{
    if (cond)
        return;
    fprintf(stderr, "%s:%d: [pid %d] expected %s\n", file, line, (int)getpid(), what);
    bus_fail_at(file, line);
}

#define EXPECT_EQ(actual, expected)                                                 \
    bus_expect_eq((long long)(actual), (long long)(expected), #actual, #expected, \
                  __FILE__, __LINE__)
#define EXPECT_TRUE(cond) bus_expect_true((cond) != 0, #cond, __FILE__, __LINE__)

/* Checks that a wait status says "exited with code 0", naming what
 * happened otherwise (a signal: which one). */
static inline void bus_expect_exit_ok(int status, const char *who, const char *file, int line)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return;
    if (WIFSIGNALED(status))
        fprintf(stderr, "%s:%d: %s was killed by signal %d (%s)\n", file, line, who,
                WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        fprintf(stderr, "%s:%d: %s exited with code %d\n", file, line, who,
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    bus_fail_at(file, line);
}

#define EXPECT_EXIT_OK(status, who) bus_expect_exit_ok((status), (who), __FILE__, __LINE__)

/* ------------------------------------------------------ temporary dirs */

#define BUS_DIR_MAX 64

/* A fresh private directory per test, so that tests run in parallel. */
static inline void bus_dir_make(char dir[BUS_DIR_MAX])
{
    snprintf(dir, BUS_DIR_MAX, "/tmp/lahja-bus-XXXXXX");
    EXPECT_TRUE(mkdtemp(dir) != NULL);
}

static inline int bus_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)f;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* Removes the directory and everything in it. */
static inline void bus_dir_remove(const char *dir)
{
    EXPECT_EQ(nftw(dir, bus_rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* ------------------------------------------------------------- configs */

/* The config of endpoint `name` in directory `dir` (<dir>/<name>.ipc). */
static inline lahja_conn_config_t bus_cfg(const char *dir, const char *name)
{
    lahja_conn_config_t cfg;
    EXPECT_EQ(lahja_conn_config_from_name(&cfg, name, dir), 0);
    return cfg;
}

/* ----------------------------------------------------------------- logs */

#define BUS_LOG_LINES 64
#define BUS_LOG_LINE 320

/* What an endpoint logged, kept for the test to search. */
struct bus_log {
    int n;
    lahja_log_level_t level[BUS_LOG_LINES];
    char line[BUS_LOG_LINES][BUS_LOG_LINE];
};

static inline void bus_log_fn(void *user, lahja_log_level_t level, const char *endpoint,
                              const char *message)
{
    struct bus_log *log = user;
    if (getenv("LAHJA_TEST_VERBOSE") != NULL)
        fprintf(stderr, "[pid %d %s %d] %s\n", (int)getpid(), endpoint, (int)level, message);
    if (log == NULL || log->n == BUS_LOG_LINES)
        return;
    log->level[log->n] = level;
    snprintf(log->line[log->n], BUS_LOG_LINE, "%s", message);
    log->n++;
}

/* Options that log into `log` (NULL: only to stderr when verbose). */
static inline lahja_endpoint_options_t bus_opts(struct bus_log *log)
{
    lahja_endpoint_options_t o = { .log = bus_log_fn, .log_user = log };
    return o;
}

/* The number of logged lines that contain every one of the (up to
 * three, NULL-terminated) needles. */
static inline int bus_log_count(const struct bus_log *log, const char *a, const char *b,
                                const char *c)
{
    int n = 0;
    for (int i = 0; i < log->n; i++) {
        const char *l = log->line[i];
        if (strstr(l, a) && (b == NULL || strstr(l, b)) && (c == NULL || strstr(l, c)))
            n++;
    }
    return n;
}

static inline void bus_log_dump(const struct bus_log *log)
{
    for (int i = 0; i < log->n; i++)
        fprintf(stderr, "  log[%d] level %d: %s\n", i, (int)log->level[i], log->line[i]);
}

/* --------------------------------------------------------- endpoints */

/* A started endpoint serving at <dir>/<name>.ipc. */
static inline lahja_endpoint_t *bus_serve(const char *dir, const char *name,
                                          const lahja_endpoint_options_t *opts)
{
    lahja_endpoint_t *ep = NULL;
    EXPECT_EQ(lahja_endpoint_new(name, opts, &ep), 0);
    lahja_conn_config_t cfg = bus_cfg(dir, name);
    EXPECT_EQ(lahja_endpoint_start(ep, &cfg), 0);
    return ep;
}

/* A started endpoint that only connects out (B3). */
static inline lahja_endpoint_t *bus_client(const char *name, const lahja_endpoint_options_t *opts)
{
    lahja_endpoint_t *ep = NULL;
    EXPECT_EQ(lahja_endpoint_new(name, opts, &ep), 0);
    EXPECT_EQ(lahja_endpoint_start(ep, NULL), 0);
    return ep;
}

static inline int bus_connect(lahja_endpoint_t *ep, const char *dir, const char *name)
{
    lahja_conn_config_t cfg = bus_cfg(dir, name);
    return lahja_connect(ep, &cfg, 1, lahja_deadline_in(GUARD_MS));
}

/* A lahja_peer_fn counting the peers into *(int *)user. */
static inline void bus_count_peer(const char *name, const char *const *types, size_t ntypes,
                                  void *user)
{
    (void)name, (void)types, (void)ntypes;
    ++*(int *)user;
}

static inline void bus_close(lahja_endpoint_t *ep)
{
    EXPECT_EQ(lahja_endpoint_stop(ep), 0);
    EXPECT_EQ(lahja_endpoint_free(ep), 0);
}

/* Waits until `ep` no longer has a connection to `name`. */
static inline void bus_wait_disconnected(lahja_endpoint_t *ep, const char *name)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (lahja_is_connected_to(ep, name))
        EXPECT_EQ(lahja_wait_until_connections_change(ep, deadline), 0);
}

/* A new event with a string payload. */
static inline lahja_event_t *bus_event(const char *type, const char *payload)
{
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new(type, payload, payload ? strlen(payload) : 0, &ev), 0);
    return ev;
}

/* Broadcasts a new event (default config) and drops our reference. */
static inline int bus_send(lahja_endpoint_t *ep, const char *type, const char *payload)
{
    lahja_event_t *ev = bus_event(type, payload);
    int rc = lahja_broadcast(ep, ev, NULL, lahja_deadline_in(GUARD_MS));
    lahja_event_unref(ev);
    return rc;
}

/* Non-zero if the event's payload is exactly the string `s`. */
static inline int bus_payload_is(const lahja_event_t *ev, const char *s)
{
    size_t len = 0;
    const void *p = lahja_event_payload(ev, &len);
    return len == strlen(s) && memcmp(p, s, len) == 0;
}

/* Requests `type` (expecting `answer_type`) from endpoint `from` only,
 * and checks that the answer carries `want`.  Waits first until `from`
 * subscribes to `type`: a peer's subscriptions arrive after the
 * handshake that ends lahja_connect. */
static inline void bus_ask(lahja_endpoint_t *ep, const char *type, const char *answer_type,
                           const char *payload, const char *from, const char *want)
{
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, from, type, lahja_deadline_in(GUARD_MS)),
              0);
    lahja_event_t *q = NULL, *a = NULL;
    EXPECT_EQ(lahja_request_new(type, answer_type, payload, strlen(payload), &q), 0);
    lahja_broadcast_config_t cfg = { .filter_endpoint = from };
    EXPECT_EQ(lahja_request(ep, q, &cfg, lahja_deadline_in(GUARD_MS), &a), 0);
    EXPECT_TRUE(strcmp(lahja_event_type(a), answer_type) == 0);
    EXPECT_TRUE(strcmp(lahja_event_origin(a), from) == 0);
    EXPECT_TRUE(bus_payload_is(a, want));
    lahja_event_unref(a);
    lahja_event_unref(q);
}

/* A handler answering every request with an event of the type in
 * `user` whose payload echoes the request's. */
static inline int bus_echo_handler(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    size_t len = 0;
    const void *p = lahja_event_payload(ev, &len);
    lahja_event_t *answer = NULL;
    int rc = lahja_event_new(user, p, len, &answer);
    if (rc == 0)
        rc = lahja_respond(ep, ev, answer);
    lahja_event_unref(answer);
    return rc;
}

/* Counts the events a handler sees and wakes whoever waits for more. */
struct bus_counter {
    int n;
    lahja_cond_t changed;
};

static inline void bus_counter_init(struct bus_counter *c)
{
    c->n = 0;
    lahja_cond_init(&c->changed);
}

static inline int bus_count_handler(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    struct bus_counter *c = user;
    c->n++;
    lahja_cond_broadcast(&c->changed);
    return 0;
}

static inline void bus_counter_wait(struct bus_counter *c, int want)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (c->n < want)
        EXPECT_EQ(lahja_cond_wait(&c->changed, deadline), 0);
}

/* ------------------------------------------------------------ children */

typedef struct bus_child {
    pid_t pid;
    int fd; /* read end of a pipe only the child writes: EOF when it has exited */
} bus_child_t;

/* In the child: nothing of the parent's stays open but stdio and the
 * child's end of its pipe.  A child holding a copy of the parent's
 * sockets would keep those connections alive after the parent closes
 * them, and the peers would never see EOF. */
static inline void bus_child_setup(int keep)
{
    bus_in_child = 1;
    bus_child_fd = keep;
    memset(bus_children, 0, sizeof bus_children); /* the parent's, not ours */
    alarm(BUS_CHILD_ALARM_S);
    if (keep > 3)
        close_range(3, (unsigned)keep - 1, 0);
    close_range((unsigned)keep + 1, ~0u, 0);
}

/* In the child: tells the parent it has reached a point (one byte). */
static inline void bus_child_signal(void)
{
    EXPECT_EQ(write(bus_child_fd, "!", 1), 1);
}

/* Forks a child that runs fn(arg) without a runtime and exits with its
 * result (0 on success): with _exit, or with exit when `full_exit` (see
 * bus_run_in_child). */
static inline bus_child_t bus_fork_how(int (*fn)(void *), void *arg, int full_exit)
{
    int p[2];
    EXPECT_EQ(pipe(p), 0);
    fflush(NULL); /* no buffered output printed twice */
    pid_t pid = fork();
    EXPECT_TRUE(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        bus_child_setup(p[1]);
        int rc = fn(arg);
        fflush(NULL);
        if (full_exit)
            exit(rc == 0 ? 0 : BUS_EXIT_FAIL);
        _exit(rc == 0 ? 0 : BUS_EXIT_FAIL);
    }
    close(p[1]);
    bus_child_track(pid, 0);
    EXPECT_EQ(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    return (bus_child_t){ pid, p[0] };
}

static inline bus_child_t bus_fork_plain(int (*fn)(void *), void *arg)
{
    return bus_fork_how(fn, arg, 0);
}

/* The child's side of bus_fork: its own runtime, fn as the main task. */
struct bus_task_call {
    lahja_task_fn fn;
    void *arg;
};

static inline int bus_run_task(void *arg)
{
    struct bus_task_call *call = arg;
    int rc = lahja_run(call->fn, call->arg, NULL);
    if (rc != 0)
        fprintf(stderr, "[pid %d] child task failed: %s\n", (int)getpid(), lahja_err_name(rc));
    return rc;
}

/* Forks a child that runs fn(arg) as the main task of its own runtime
 * (lahja_run) and exits 0 if it returns 0. */
static inline bus_child_t bus_fork(lahja_task_fn fn, void *arg)
{
    struct bus_task_call call = { fn, arg };
    return bus_fork_how(bus_run_task, &call, 0);
}

/* As bus_fork, ending the child with exit() (see bus_run_in_child). */
static inline bus_child_t bus_fork_exiting(lahja_task_fn fn, void *arg)
{
    struct bus_task_call call = { fn, arg };
    return bus_fork_how(bus_run_task, &call, 1);
}

static inline void bus_on_readable(uv_poll_t *h, int status, int events)
{
    (void)events;
    lahja_complete(h->data, status);
}

/* Suspends the calling task until fd is readable or hung up. */
static inline int bus_wait_readable(int fd, lahja_time_t deadline)
{
    uv_poll_t poll;
    lahja_completion_t done;
    lahja_completion_init(&done);
    int rc = uv_poll_init(lahja_rt_loop(lahja_rt_current()), &poll, fd);
    if (rc != 0)
        return rc;
    poll.data = &done;
    rc = uv_poll_start(&poll, UV_READABLE | UV_DISCONNECT, bus_on_readable);
    if (rc == 0)
        rc = lahja_completion_wait(&done, deadline);
    lahja_uv_close((uv_handle_t *)&poll);
    return rc;
}

/* Reaps the child: returns its wait status.  From a task, it waits for
 * the child's exit without blocking the loop (the endpoints of this
 * process keep serving meanwhile); outside a task it simply blocks. */
static inline int bus_child_wait(bus_child_t *c)
{
    char buf[64];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            break;
        if (n < 0 && errno == EAGAIN) {
            if (lahja_task_current() == NULL) {
                fcntl(c->fd, F_SETFL, 0);
                continue;
            }
            /* The child's alarm bounds this wait. */
            EXPECT_EQ(bus_wait_readable(c->fd, LAHJA_FOREVER), 0);
        }
    }
    close(c->fd);
    c->fd = -1;
    int status = 0;
    pid_t r;
    while ((r = waitpid(c->pid, &status, 0)) < 0 && errno == EINTR)
        ;
    bus_child_track(0, c->pid);
    EXPECT_EQ(r, c->pid);
    return status;
}

/* Reaps the child, blocking even in a task: for a test that must know
 * the child is gone before its own loop runs again. */
static inline int bus_child_wait_blocking(bus_child_t *c)
{
    int status = 0;
    pid_t r;
    while ((r = waitpid(c->pid, &status, 0)) < 0 && errno == EINTR)
        ;
    bus_child_track(0, c->pid);
    EXPECT_EQ(r, c->pid);
    close(c->fd);
    c->fd = -1;
    return status;
}

/* Waits for the child's bus_child_signal(): 0, or -EPIPE if it exited
 * first.  From a task without blocking the loop, else blocking. */
static inline int bus_child_await_signal(bus_child_t *c)
{
    char b;
    for (;;) {
        ssize_t n = read(c->fd, &b, 1);
        if (n == 1)
            return 0;
        if (n == 0)
            return -EPIPE;
        if (errno == EINTR)
            continue;
        EXPECT_EQ(errno, EAGAIN);
        if (lahja_task_current() != NULL) {
            EXPECT_EQ(bus_wait_readable(c->fd, LAHJA_FOREVER), 0);
        } else {
            struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
            poll(&pfd, 1, -1);
        }
    }
}

/* Reaps the child and checks that it exited with code 0. */
#define EXPECT_CHILD_OK(child) EXPECT_EXIT_OK(bus_child_wait(child), #child)

/* ---------------------------------------------------------- peer child */

/* A peer run in a child process by bus_peer_main. */
struct bus_peer_args {
    const char *dir;
    const char *name;
    const char *connect_to; /* NULL: serve <dir>/<name>.ipc and wait */
};

/*
 * A peer: answers "Echo" requests with "EchoAnswer" (the same payload),
 * serves `name` in `dir` or, with connect_to, runs as a pure client
 * connected to that endpoint, and stops once it receives "Done"
 * (bus_peer_done).  Its "Echo" subscription tells the other side it is
 * ready.
 */
static inline int bus_peer_main(void *arg)
{
    const struct bus_peer_args *a = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = a->connect_to != NULL ? bus_client(a->name, &opts)
                                                 : bus_serve(a->dir, a->name, &opts);
    lahja_subscription_t *echo = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Echo", bus_echo_handler, "EchoAnswer", &echo), 0);
    if (a->connect_to != NULL)
        EXPECT_EQ(bus_connect(ep, a->dir, a->connect_to), 0);
    /* The child's alarm bounds this wait. */
    lahja_event_t *done = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Done", LAHJA_FOREVER, &done), 0);
    lahja_event_unref(done);
    lahja_subscription_cancel(echo);
    bus_close(ep);
    return 0;
}

/* Tells the peer child `name` (connected to ep) to stop. */
static inline void bus_peer_done(lahja_endpoint_t *ep, const char *name)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, name, "Done", deadline), 0);
    lahja_broadcast_config_t cfg = { .filter_endpoint = name };
    lahja_event_t *ev = bus_event("Done", NULL);
    EXPECT_EQ(lahja_broadcast(ep, ev, &cfg, deadline), 0);
    lahja_event_unref(ev);
}

/* ----------------------------------------------------------- raw frames */

/* The frame format, written out by hand from the protocol's contract
 * (src/wire/wire.h) rather than with the codec under test: 8-byte header
 * u32 body length (LE) | u8 kind | u8 flags | u16 reserved. */
enum {
    RAW_HELLO = 1,
    RAW_SUBS = 2,
    RAW_SUBS_ACK = 3,
    RAW_TYPE = 4,
    RAW_EVENT = 5,
    RAW_F_REQUEST = 1,
    RAW_F_RESPONSE = 2,
    RAW_F_LZ4 = 4,
    RAW_HDR = 8
};

static inline uint8_t *raw_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static inline uint8_t *raw_header(uint8_t *p, uint32_t body_len, uint8_t kind, uint8_t flags)
{
    p = raw_u32(p, body_len);
    *p++ = kind;
    *p++ = flags;
    *p++ = 0;
    *p++ = 0;
    return p;
}

/* HELLO: "LAHJA" (or `magic`), version, features 0, the largest frame
 * we accept (any: a raw client reads nothing it must parse), name.
 * Returns the end of the frame. */
static inline uint8_t *raw_hello_as(uint8_t *p, const char *magic, uint8_t version,
                                    const char *name)
{
    size_t n = strlen(name);
    p = raw_header(p, (uint32_t)(5 + 1 + 4 + 4 + 1 + n), RAW_HELLO, 0);
    memcpy(p, magic, 5);
    p += 5;
    *p++ = version;
    p = raw_u32(p, 0);
    p = raw_u32(p, UINT32_MAX);
    *p++ = (uint8_t)n;
    memcpy(p, name, n);
    return p + n;
}

static inline uint8_t *raw_hello(uint8_t *p, const char *name)
{
    return raw_hello_as(p, "LAHJA", 1, name);
}

/* TYPE: binds `id` to `type` for our later EVENT frames. */
static inline uint8_t *raw_type(uint8_t *p, uint32_t id, const char *type)
{
    size_t n = strlen(type);
    p = raw_header(p, (uint32_t)(4 + 1 + n), RAW_TYPE, 0);
    p = raw_u32(p, id);
    *p++ = (uint8_t)n;
    memcpy(p, type, n);
    return p + n;
}

/* SUBS: sequence number `seq`, the whole set of types we subscribe to. */
static inline uint8_t *raw_subs(uint8_t *p, uint32_t seq, const char *const *types, uint32_t n)
{
    size_t body = 8;
    for (uint32_t i = 0; i < n; i++)
        body += 1 + strlen(types[i]);
    p = raw_header(p, (uint32_t)body, RAW_SUBS, 0);
    p = raw_u32(p, seq);
    p = raw_u32(p, n);
    for (uint32_t i = 0; i < n; i++) {
        size_t len = strlen(types[i]);
        *p++ = (uint8_t)len;
        memcpy(p, types[i], len);
        p += len;
    }
    return p;
}

/* A plain EVENT of bound type `id`. */
static inline uint8_t *raw_event(uint8_t *p, uint32_t id, const void *payload, uint32_t len)
{
    p = raw_header(p, 4 + len, RAW_EVENT, 0);
    p = raw_u32(p, id);
    memcpy(p, payload, len);
    return p + len;
}

/* ------------------------------------------------------------ raw client */

/* A blocking Unix socket connected to `path`, or -errno.  Reads and
 * writes give up after GUARD_MS, so that a peer that never closes nor
 * reads cannot hang it. */
static inline int raw_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = { GUARD_MS / 1000, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

/* Sends everything it can; a peer that already hung up is not an error
 * here (what the test checks is that it hangs up). */
static inline void raw_send(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

/*
 * Reads until the peer hangs up.  Returns the number of bytes received
 * before that (the first `cap` kept in `keep`), or -ETIMEDOUT if the
 * connection was still open after GUARD_MS.  A hang-up is EOF, or
 * ECONNRESET: a Unix socket closed with bytes of ours still unread
 * resets the connection instead of ending it cleanly.
 */
static inline ssize_t raw_read_to_eof(int fd, uint8_t *keep, size_t cap)
{
    size_t total = 0;
    uint8_t buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return (ssize_t)total;
        if (n < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        if (keep != NULL && total < cap)
            memcpy(keep + total, buf, (size_t)n < cap - total ? (size_t)n : cap - total);
        total += (size_t)n;
    }
}

/* Milliseconds on the monotonic clock. */
static inline int64_t bus_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Checks that buf[0..len) starts with the HELLO of endpoint `name`: the
 * frame every endpoint sends first (magic "LAHJA", version 1). */
static inline void raw_expect_hello(const uint8_t *buf, ssize_t len, const char *name)
{
    size_t n = strlen(name);
    EXPECT_TRUE(len >= (ssize_t)(RAW_HDR + 15 + n));
    uint32_t body = (uint32_t)buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16 |
                    (uint32_t)buf[3] << 24;
    EXPECT_EQ(body, 15 + n);
    EXPECT_EQ(buf[4], RAW_HELLO);
    EXPECT_EQ(buf[5], 0);
    EXPECT_EQ(buf[6] | buf[7], 0);
    EXPECT_EQ(memcmp(buf + RAW_HDR, "LAHJA", 5), 0);
    EXPECT_EQ(buf[RAW_HDR + 5], 1);
    EXPECT_EQ(buf[RAW_HDR + 14], n);
    EXPECT_EQ(memcmp(buf + RAW_HDR + 15, name, n), 0);
}

/* ------------------------------------------------------ raw client cases */

/* A raw client's visit: what it sends, and what the endpoint must log
 * when it hangs up on it. */
struct bus_raw_case {
    /* Writes the bytes to send at p; returns their end. */
    uint8_t *(*build)(uint8_t *p);
    size_t flood;            /* then this many zero bytes */
    int half_close;          /* then shutdown(SHUT_WR): "I am done" */
    int expect_err;          /* the reason logged: lahja_strerror(expect_err), */
    const char *expect_text; /* or this when expect_err is 0 */
    const char *expect_peer; /* the name the raw client gave in its HELLO,
                                NULL if it was dropped before ("incoming") */
    size_t max_alloc;        /* non-zero: no allocation larger while it ran */
    int min_ms;              /* non-zero: not hung up on before this long */
};

/* The largest allocation request seen since the last reset, where a test
 * file tracks them (it sets bus_alloc_tracked). */
static size_t bus_alloc_peak;
static int bus_alloc_tracked;

struct bus_raw_visit {
    const struct bus_raw_case *rc;
    const char *path;
};

/* The raw client, in a child: connects, sends, and must be hung up on
 * after receiving the endpoint's HELLO. */
static inline int bus_raw_client(void *arg)
{
    const struct bus_raw_visit *v = arg;
    static uint8_t buf[1 << 16];
    int64_t t0 = bus_ms();
    int fd = raw_connect(v->path);
    EXPECT_TRUE(fd >= 0);
    uint8_t *end = v->rc->build(buf);
    raw_send(fd, buf, (size_t)(end - buf));
    if (v->rc->flood > 0) {
        memset(buf, 0, sizeof buf);
        for (size_t sent = 0; sent < v->rc->flood; sent += sizeof buf)
            raw_send(fd, buf, sizeof buf); /* fails once hung up on: fine */
    }
    if (v->rc->half_close)
        EXPECT_EQ(shutdown(fd, SHUT_WR), 0);
    uint8_t got[512];
    ssize_t n = raw_read_to_eof(fd, got, sizeof got);
    int64_t elapsed = bus_ms() - t0;
    EXPECT_TRUE(n >= 0); /* hung up on, not left open */
    raw_expect_hello(got, n, "srv");
    if (v->rc->min_ms > 0 && elapsed < v->rc->min_ms) {
        fprintf(stderr, "hung up on after %lld ms, before %d ms\n", (long long)elapsed,
                v->rc->min_ms);
        EXPECT_TRUE(elapsed >= v->rc->min_ms);
    }
    close(fd);
    return 0;
}

/* Checks that the log says the raw client was dropped, and why. */
static inline void bus_expect_dropped(const struct bus_log *log, int from,
                                      const struct bus_raw_case *rc)
{
    const char *why = rc->expect_err != 0 ? lahja_strerror(rc->expect_err) : rc->expect_text;
    char who[300];
    if (rc->expect_peer != NULL)
        snprintf(who, sizeof who, "connection from %s:", rc->expect_peer);
    else
        snprintf(who, sizeof who, "incoming connection dropped:");
    int n = 0;
    for (int i = from; i < log->n; i++)
        n += strstr(log->line[i], who) != NULL && strstr(log->line[i], why) != NULL;
    if (n != 1) {
        fprintf(stderr, "expected one log line with \"%s\" and \"%s\":\n", who, why);
        bus_log_dump(log);
    }
    EXPECT_EQ(n, 1);
}

/*
 * The endpoint "srv" (max_payload 64 KiB, handshake timeout as given)
 * with a real peer connected from another process; a raw client visits
 * (bus_raw_client) and is hung up on with the logged reason; the peer
 * is still connected and still answers, before and after.
 */
static inline void bus_raw_case_run(const struct bus_raw_case *rc, uint32_t handshake_timeout_ms)
{
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct bus_log log = { 0 };
    lahja_endpoint_options_t opts = bus_opts(&log);
    opts.max_payload = 64 * 1024;
    opts.handshake_timeout_ms = handshake_timeout_ms;
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    struct bus_peer_args peer = { dir, "peer", "srv" };
    bus_child_t pc = bus_fork(bus_peer_main, &peer);
    bus_ask(ep, "Echo", "EchoAnswer", "before", "peer", "before");

    int from = log.n;
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    struct bus_raw_visit visit = { rc, cfg.path };
    bus_alloc_peak = 0;
    bus_child_t raw = bus_fork_plain(bus_raw_client, &visit);
    EXPECT_CHILD_OK(&raw);
    size_t peak = bus_alloc_peak;
    bus_expect_dropped(&log, from, rc);
    if (rc->max_alloc != 0) {
        if (getenv("LAHJA_TEST_VERBOSE") != NULL)
            fprintf(stderr, "largest allocation while the raw client ran: %zu\n", peak);
        EXPECT_TRUE(bus_alloc_tracked);
        if (peak > rc->max_alloc)
            fprintf(stderr, "allocated %zu bytes at once, over %zu\n", peak, rc->max_alloc);
        EXPECT_TRUE(peak <= rc->max_alloc);
    }

    EXPECT_EQ(lahja_is_connected_to(ep, "peer"), 1);
    bus_ask(ep, "Echo", "EchoAnswer", "after", "peer", "after");
    bus_peer_done(ep, "peer");
    EXPECT_CHILD_OK(&pc);
    bus_close(ep);
    bus_dir_remove(dir);
}

/* ------------------------------------------------------------- runner */

/*
 * Runs fn(arg) as the main task of a runtime in a child process of its
 * own, which must exit 0 (fn returned 0, every check passed, and, built
 * with AddressSanitizer, nothing leaked: the child ends with exit(), so
 * that LeakSanitizer looks).  BUS_MAIN_TEST(name) is the cmocka test
 * test_<name> whose body is the task main_<name>.
 */
static inline void bus_run_in_child_at(lahja_task_fn fn, void *arg, const char *what,
                                       const char *file, int line)
{
    bus_child_t c = bus_fork_exiting(fn, arg);
    bus_expect_exit_ok(bus_child_wait(&c), what, file, line);
}

#define bus_run_in_child(fn, arg) bus_run_in_child_at((fn), (arg), #fn, __FILE__, __LINE__)

#define BUS_MAIN_TEST(name)                       \
    static void test_##name(void **state)         \
    {                                             \
        (void)state;                              \
        bus_run_in_child(main_##name, NULL);      \
    }

/* For a test file's main: LAHJA_TEST_FILTER=<glob> runs only the
 * matching tests (when chasing one). */
static inline void bus_filter_from_env(void)
{
    const char *filter = getenv("LAHJA_TEST_FILTER");
    if (filter != NULL)
        cmocka_set_test_filter(filter);
}

#endif /* LAHJA_TEST_SUPPORT_BUS_H */
