/*
 * inter_process_ping_pong: two processes chatting over the bus.
 *
 *   proc1   serves endpoint "e1"; handles SecondThingHappened with a
 *           subscription; broadcasts FirstThingHappened("Hit from proc1")
 *   proc2   serves endpoint "e2" and connects to e1; handles
 *           FirstThingHappened with a subscription and also reads it from
 *           a stream; broadcasts SecondThingHappened("Hit from proc2")
 *
 * Each process starts broadcasting once the other subscribes to its
 * event, says hello and broadcasts --rounds times, --interval-ms apart,
 * then waits for all of the other's events.  The sockets live in a fresh
 * temporary directory (removed at the end) unless --base-dir names one.
 *
 *   build/examples/inter_process_ping_pong [--rounds N] [--interval-ms MS]
 *                                          [--base-dir DIR]
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lahja/lahja.h>

#define FIRST "FirstThingHappened"
#define SECOND "SecondThingHappened"
#define PATIENCE_MS 10000 /* for the peer to show up, on top of its rounds */

static struct {
    long rounds;
    long interval_ms;
    const char *base_dir;
} args = { 3, 500, NULL };

/* One line per call, flushed at once: both processes share stdout, and
 * whole lines written in the order they happen keep the output readable. */
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* The endpoints report dropped peers and failing handlers here. */
static void log_problem(void *user, lahja_log_level_t level, const char *endpoint,
                        const char *message)
{
    (void)user;
    if (level >= LAHJA_LOG_WARNING)
        fprintf(stderr, "%s: %s\n", endpoint, message);
}

static const lahja_endpoint_options_t endpoint_options = { .log = log_problem };

/* Long enough for the other process to start and play all its rounds. */
static lahja_time_t patience(void)
{
    return lahja_deadline_in(PATIENCE_MS + (uint64_t)args.rounds * (uint64_t)args.interval_ms);
}

static int serve(const char *name, lahja_endpoint_t **out)
{
    lahja_conn_config_t cfg;
    int rc = lahja_conn_config_from_name(&cfg, name, args.base_dir);
    if (rc == 0)
        rc = lahja_endpoint_new(name, &endpoint_options, out);
    if (rc != 0)
        return rc;
    rc = lahja_endpoint_start(*out, &cfg);
    if (rc != 0)
        lahja_endpoint_free(*out);
    return rc;
}

static void print_payload(const char *prefix, const lahja_event_t *ev)
{
    size_t len;
    const char *p = lahja_event_payload(ev, &len);
    say("%s%.*s", prefix, (int)len, p);
}

/* Counts a peer's events as a subscription handler sees them. */
struct tally {
    const char *prefix;
    long seen;
    lahja_latch_t all_seen; /* set at the last round's event */
};

static int on_hit(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct tally *t = user;
    print_payload(t->prefix, ev);
    if (++t->seen == args.rounds)
        lahja_latch_set(&t->all_seen);
    return 0;
}

/* Says hello and broadcasts `type`, once per round. */
static int chatter(lahja_endpoint_t *ep, const char *who, const char *type)
{
    char hit[32];
    int len = snprintf(hit, sizeof hit, "Hit from %s", who);
    for (long i = 0; i < args.rounds; i++) {
        int rc = i == 0 ? 0 : lahja_sleep((uint64_t)args.interval_ms);
        lahja_event_t *ev = NULL;
        if (rc == 0) {
            say("Hello from %s", who);
            rc = lahja_event_new(type, hit, (size_t)len, &ev);
        }
        if (rc == 0)
            rc = lahja_broadcast(ep, ev, NULL, patience());
        lahja_event_unref(ev);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int wait_until_disconnected(lahja_endpoint_t *ep, const char *name)
{
    int rc = 0;
    while (rc == 0 && lahja_is_connected_to(ep, name))
        rc = lahja_wait_until_connections_change(ep, patience());
    return rc;
}

static int wait_until_unsubscribed(lahja_endpoint_t *ep, const char *name, const char *type)
{
    int rc = 0;
    while (rc == 0 && lahja_is_endpoint_subscribed_to(ep, name, type))
        rc = lahja_wait_until_endpoint_subscriptions_change(ep, patience());
    return rc;
}

/* ---------------------------------------------------------------- proc1 */

static int proc1(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep;
    int rc = serve("e1", &ep);
    if (rc != 0)
        return rc;
    struct tally t = { .prefix = "Received via SUBSCRIBE API in proc1: " };
    lahja_latch_init(&t.all_seen);
    lahja_subscription_t *sub = NULL;
    rc = lahja_subscribe(ep, SECOND, on_hit, &t, &sub);
    if (rc == 0)
        rc = lahja_wait_until_any_endpoint_subscribed_to(ep, FIRST, patience());
    if (rc == 0)
        rc = chatter(ep, "proc1", FIRST);
    if (rc == 0)
        rc = lahja_latch_wait(&t.all_seen, patience());
    /*
     * Stopping drops what is not yet written, so neither side stops while
     * the other may still be receiving: unsubscribing tells proc2 that
     * proc1 has all it wanted, and proc2 leaving says the same of proc2.
     */
    lahja_subscription_cancel(sub);
    if (rc == 0)
        rc = wait_until_disconnected(ep, "e2");
    lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep);
    return rc;
}

/* ---------------------------------------------------------------- proc2 */

static int read_stream(void *arg)
{
    lahja_stream_t *stream = arg;
    lahja_event_t *ev;
    int rc;
    while ((rc = lahja_stream_next(stream, patience(), &ev)) == 0) {
        print_payload("Received via STREAM API in proc2: ", ev);
        lahja_event_unref(ev);
    }
    return rc == -EPIPE ? 0 : rc; /* -EPIPE: it has delivered every round */
}

/* Runs the rounds with the stream read alongside, by a task of its own. */
static int play(lahja_endpoint_t *ep, lahja_stream_t *stream, struct tally *t)
{
    lahja_nursery_t *n;
    int rc = lahja_nursery_open(&n);
    if (rc != 0)
        return rc;
    rc = lahja_nursery_spawn(n, read_stream, stream, &(lahja_task_options_t){ .name = "stream" },
                             NULL);
    if (rc == 0)
        rc = chatter(ep, "proc2", SECOND);
    if (rc == 0)
        rc = lahja_latch_wait(&t->all_seen, patience());
    if (rc != 0)
        lahja_nursery_cancel(n);
    int joined = lahja_nursery_close(n);
    return rc != 0 ? rc : joined;
}

static int proc2(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep;
    int rc = serve("e2", &ep);
    if (rc != 0)
        return rc;
    struct tally t = { .prefix = "Received via SUBSCRIBE API in proc2: " };
    lahja_latch_init(&t.all_seen);
    lahja_subscription_t *sub = NULL;
    lahja_stream_t *stream = NULL;
    lahja_conn_config_t e1;
    /* Both consumers are in place before connecting: e1 learns of the
     * type in the handshake, and neither can miss proc1's first event. */
    rc = lahja_subscribe(ep, FIRST, on_hit, &t, &sub);
    if (rc == 0)
        rc = lahja_stream_open(ep, FIRST, (size_t)args.rounds, NULL, &stream);
    if (rc == 0)
        rc = lahja_conn_config_from_name(&e1, "e1", args.base_dir);
    if (rc == 0)
        rc = lahja_connect(ep, &e1, 1, patience()); /* waits for e1's socket */
    if (rc == 0)
        rc = lahja_wait_until_any_endpoint_subscribed_to(ep, SECOND, patience());
    if (rc == 0)
        rc = play(ep, stream, &t);
    if (rc == 0)
        rc = wait_until_unsubscribed(ep, "e1", SECOND);
    lahja_stream_close(stream);
    lahja_subscription_cancel(sub);
    lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep);
    return rc;
}

/* --------------------------------------------------------------- parent */

static pid_t start_process(const char *name, lahja_task_fn fn)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int rc = lahja_run(fn, NULL, &(lahja_task_options_t){ .name = name });
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", name, lahja_strerror(rc));
    _exit(rc == 0 ? 0 : 1);
}

/* Waits for both; if one fails, the other is stopped rather than left to
 * wait out its deadlines for a peer that is gone.  Returns 1 if both
 * exited 0. */
static int wait_both(pid_t pids[2])
{
    int ok = 1;
    for (int left = 2; left > 0; left--) {
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0)
            return 0;
        int i = pid == pids[0] ? 0 : 1;
        pids[i] = 0;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            continue;
        ok = 0;
        if (pids[1 - i] > 0)
            kill(pids[1 - i], SIGTERM);
    }
    return ok;
}

/* Removes the temporary directory, and the sockets a crashed process may
 * have left in it. */
static void remove_base_dir(const char *dir)
{
    const char *names[] = { "e1", "e2" };
    for (size_t i = 0; i < 2; i++) {
        lahja_conn_config_t cfg;
        if (lahja_conn_config_from_name(&cfg, names[i], dir) == 0)
            unlink(cfg.path);
    }
    if (rmdir(dir) != 0)
        perror(dir);
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i += 2) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = -1;
        if (val == NULL) {
            rc = -1;
        } else if (strcmp(argv[i], "--rounds") == 0) {
            rc = parse_long(val, 1, INT_MAX, &args.rounds);
        } else if (strcmp(argv[i], "--interval-ms") == 0) {
            rc = parse_long(val, 0, 60 * 1000, &args.interval_ms);
        } else if (strcmp(argv[i], "--base-dir") == 0) {
            args.base_dir = val;
            rc = 0;
        }
        if (rc != 0) {
            fprintf(stderr, "usage: %s [--rounds N] [--interval-ms MS] [--base-dir DIR]\n",
                    argv[0]);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0)
        return 2;
    char tmp[LAHJA_PATH_MAX + 1];
    const char *dir = args.base_dir;
    if (dir == NULL) {
        const char *t = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/lahja-ping-pong-XXXXXX", t != NULL && *t ? t : "/tmp");
        if (mkdtemp(tmp) == NULL) {
            perror("mkdtemp");
            return 1;
        }
        args.base_dir = tmp;
    }
    fflush(stdout); /* nothing buffered may be printed twice by the children */
    pid_t pids[2] = { start_process("proc1", proc1), -1 };
    if (pids[0] > 0)
        pids[1] = start_process("proc2", proc2);
    int ok;
    if (pids[1] > 0) {
        ok = wait_both(pids);
    } else {
        perror("fork");
        ok = 0;
        if (pids[0] > 0 && kill(pids[0], SIGTERM) == 0)
            waitpid(pids[0], NULL, 0);
    }
    if (dir == NULL)
        remove_base_dir(tmp);
    return ok ? 0 : 1;
}
