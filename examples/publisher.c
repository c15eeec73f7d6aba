/*
 * publisher: serves the endpoint "publisher" and broadcasts a "Tick"
 * event every --interval-ms (default 1000), its payload the tick's
 * number as text, until --count ticks (default 0: until Ctrl-C).  It
 * waits for a subscriber before the first tick, and again whenever
 * nobody listens.  Its partner is examples/subscriber.c; run them in two
 * terminals, in either order:
 *
 *   build/examples/publisher --interval-ms 500
 *   build/examples/subscriber --count 5
 *
 * Both take --dir DIR, the directory of the sockets (by default
 * $XDG_RUNTIME_DIR/lahja or /tmp/lahja-<uid>): give both the same.
 * SIGINT or SIGTERM stops it cleanly, with exit status 0.
 *
 * Task style: the program is one task (lahja_run), in which every call
 * that waits (for a subscriber, for the interval, for a slow reader) is a
 * plain call that returns when it is done, or when it is cancelled.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <lahja/lahja.h>

#define TICK "Tick"

static struct {
    const char *dir;
    long interval_ms, count;
} args = { NULL, 1000, 0 };

/* The scope the work runs in: a signal cancels it, so that the call the
 * task is waiting in returns -ECANCELED and the task goes on to stop the
 * endpoint.  NULL once the work is over. */
static lahja_scope_t *work;

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    printf("%s: stopping\n", signum == SIGINT ? "SIGINT" : "SIGTERM");
    if (work != NULL)
        lahja_scope_cancel(work);
}

/* What the endpoint cannot return to us (a peer dropped, and why). */
static void log_warning(void *user, lahja_log_level_t level, const char *ep, const char *msg)
{
    (void)user;
    if (level >= LAHJA_LOG_WARNING)
        fprintf(stderr, "%s: %s\n", ep, msg);
}

static int publish(lahja_endpoint_t *ep)
{
    int rc = 0;
    for (long i = 1; rc == 0 && (args.count == 0 || i <= args.count); i++) {
        if (i > 1)
            rc = lahja_sleep((uint64_t)args.interval_ms);
        /* Broadcasting a type nobody subscribes to fails
         * (LAHJA_ENOSUBSCRIBERS): wait for a subscriber instead. */
        if (rc == 0 && !lahja_is_any_endpoint_subscribed_to(ep, TICK)) {
            printf("waiting for a subscriber\n");
            rc = lahja_wait_until_any_endpoint_subscribed_to(ep, TICK, LAHJA_FOREVER);
        }
        char text[24];
        int len = snprintf(text, sizeof text, "%ld", i);
        /* Suspends only while a subscriber reads too slowly. */
        if (rc == 0)
            rc = lahja_broadcast_bytes(ep, TICK, text, (size_t)len, NULL, lahja_deadline_in(5000));
        if (rc == 0)
            printf("sent tick %ld\n", i);
    }
    return rc;
}

static int main_task(void *arg)
{
    (void)arg;
    const lahja_endpoint_options_t opts = { .log = log_warning };
    lahja_conn_config_t cfg;
    lahja_endpoint_t *ep;
    int rc = lahja_conn_config_from_name(&cfg, "publisher", args.dir); /* <dir>/publisher.ipc */
    if (rc == 0)
        rc = lahja_endpoint_new("publisher", &opts, &ep);
    if (rc != 0)
        return rc;

    /* libuv handles on the runtime's loop, as in any libuv program. */
    uv_signal_t sigs[2];
    const int signums[2] = { SIGINT, SIGTERM };
    for (int i = 0; i < 2; i++) {
        uv_signal_init(lahja_rt_loop(lahja_rt_current()), &sigs[i]);
        uv_signal_start(&sigs[i], on_signal, signums[i]);
    }

    rc = lahja_endpoint_start(ep, &cfg); /* -EADDRINUSE: a publisher runs already */
    if (rc == 0) {
        printf("serving publisher at %s\n", cfg.path);
        rc = lahja_scope_open(LAHJA_FOREVER, 0, &work);
    }
    if (rc == 0) {
        rc = publish(ep);
        if (rc != 0 && rc != -ECANCELED)
            fprintf(stderr, "publisher: %s\n", lahja_endpoint_last_error(ep));
        if (lahja_scope_close(work) == -ECANCELED)
            rc = 0; /* a signal: a normal end */
        work = NULL;
    }
    /* Gives the subscribers up to a second to confirm the last ticks,
     * then closes every connection and removes the socket file. */
    lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep);
    for (int i = 0; i < 2; i++)
        lahja_uv_close((uv_handle_t *)&sigs[i]);
    return rc;
}

static int parse_args(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        char *end = NULL;
        if (strcmp(argv[i], "--dir") == 0)
            args.dir = argv[i + 1];
        else if (strcmp(argv[i], "--interval-ms") == 0)
            args.interval_ms = strtol(argv[i + 1], &end, 10);
        else if (strcmp(argv[i], "--count") == 0)
            args.count = strtol(argv[i + 1], &end, 10);
        else
            return -1;
        if (end != NULL && (*end != '\0' || end == argv[i + 1]))
            return -1;
    }
    return argc % 2 == 1 && args.interval_ms >= 0 && args.count >= 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0) {
        fprintf(stderr, "usage: %s [--dir DIR] [--interval-ms MS] [--count N]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* line by line, also into a pipe */
    int rc = lahja_run(main_task, NULL, NULL);
    if (rc != 0)
        fprintf(stderr, "publisher: %s\n", lahja_strerror(rc));
    return rc == 0 ? 0 : 1;
}
