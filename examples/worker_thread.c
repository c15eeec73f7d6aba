/*
 * worker_thread: publishing from a thread that is not the endpoint's.
 *
 * The main task serves the endpoint "worker" and waits for a subscriber
 * to "Progress".  Then a worker thread counts the primes below --limit
 * (default 100000) in --steps parts (default 10), and after each part
 * posts a Progress event ("3/10: 3245 primes below 30000") with
 * lahja_post: the endpoint's own thread broadcasts it, in the order
 * posted.  At the end the worker posts a call (lahja_post_call) that
 * wakes the main task, which joins it and stops.  The worker never calls
 * the endpoint directly: posting is all another thread may do with it.
 * In two terminals:
 *
 *   build/examples/subscriber --from worker --type Progress --count 10
 *   build/examples/worker_thread
 *
 * --dir DIR as for examples/publisher.c.  SIGINT or SIGTERM stops the
 * worker at its next part and the program cleanly, with exit status 0.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <lahja/lahja.h>

static struct {
    const char *dir;
    long limit, steps;
} args = { NULL, 100000, 10 };

struct work {
    lahja_endpoint_t *ep;
    lahja_latch_t done; /* set on the endpoint's thread, by finished() */
    atomic_int stop;    /* set by the main task: the worker ends early */
    long primes, below; /* the worker's result, read once it is joined */
    int error;          /* a post that failed */
};

static lahja_scope_t *work_scope; /* cancelled by a signal */

/* Progress nobody listens to is dropped, not an error (by default a
 * broadcast nobody subscribes to fails, and a posted one is logged). */
static const lahja_broadcast_config_t progress_cfg = { .allow_no_subscribers = 1 };

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    printf("%s: stopping\n", signum == SIGINT ? "SIGINT" : "SIGTERM");
    if (work_scope != NULL)
        lahja_scope_cancel(work_scope);
}

static int is_prime(long n)
{
    for (long d = 2; d * d <= n; d++)
        if (n % d == 0)
            return 0;
    return n >= 2;
}

/* Runs on the endpoint's thread, from its loop, after every progress
 * event posted before it has been broadcast. */
static void finished(lahja_endpoint_t *ep, void *user)
{
    (void)ep;
    struct work *w = user;
    lahja_latch_set(&w->done);
}

static void *worker(void *arg)
{
    struct work *w = arg;
    for (long step = 1, n = 0; step <= args.steps && !atomic_load(&w->stop); step++) {
        w->below = args.limit * step / args.steps;
        for (; n < w->below; n++)
            w->primes += is_prime(n);
        char text[64];
        int len = snprintf(text, sizeof text, "%ld/%ld: %ld primes below %ld", step, args.steps,
                           w->primes, w->below);
        lahja_event_t *ev;
        w->error = lahja_event_new("Progress", text, (size_t)len, &ev);
        /* -1: waits while the post queue is full (the endpoint's thread
         * drains it).  On success the endpoint owns the event. */
        if (w->error == 0 && (w->error = lahja_post(w->ep, ev, &progress_cfg, -1)) != 0)
            lahja_event_unref(ev); /* not taken: still ours */
        if (w->error != 0)
            break;
    }
    /* With -1 this fails only when the endpoint is stopping (it is not:
     * the main task stops it after the join) or memory ran out. */
    lahja_post_call(w->ep, finished, w, -1);
    return NULL;
}

static int main_task(void *arg)
{
    (void)arg;
    lahja_conn_config_t cfg;
    struct work w = { .primes = 0 };
    int rc = lahja_conn_config_from_name(&cfg, "worker", args.dir);
    if (rc == 0)
        rc = lahja_endpoint_new("worker", NULL, &w.ep);
    if (rc != 0)
        return rc;
    lahja_latch_init(&w.done);
    uv_signal_t sigs[2];
    const int signums[2] = { SIGINT, SIGTERM };
    for (int i = 0; i < 2; i++) {
        uv_signal_init(lahja_rt_loop(lahja_rt_current()), &sigs[i]);
        uv_signal_start(&sigs[i], on_signal, signums[i]);
    }

    pthread_t thread;
    int started = 0;
    rc = lahja_endpoint_start(w.ep, &cfg);
    if (rc == 0)
        rc = lahja_scope_open(LAHJA_FOREVER, 0, &work_scope);
    if (rc == 0) {
        printf("waiting for a subscriber\n");
        rc = lahja_wait_until_any_endpoint_subscribed_to(w.ep, "Progress", LAHJA_FOREVER);
        if (rc == 0 && (rc = -pthread_create(&thread, NULL, worker, &w)) == 0)
            started = 1;
        if (rc == 0)
            rc = lahja_latch_wait(&w.done, LAHJA_FOREVER);
        if (lahja_scope_close(work_scope) == -ECANCELED)
            rc = 0; /* a signal: a normal end */
        work_scope = NULL;
    }
    if (started) {
        atomic_store(&w.stop, 1); /* if a signal came first */
        /* Out of the cancelled scope, this wait is not cancelled: the
         * loop runs on meanwhile, takes the worker's last posts, and
         * finished() comes. */
        lahja_latch_wait(&w.done, LAHJA_FOREVER);
        pthread_join(thread, NULL);
        if (rc == 0)
            rc = w.error;
        printf("%ld primes below %ld\n", w.primes, w.below);
    }
    lahja_endpoint_stop(w.ep); /* after the join: nobody may post any more */
    lahja_endpoint_free(w.ep);
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
        else if (strcmp(argv[i], "--limit") == 0)
            args.limit = strtol(argv[i + 1], &end, 10);
        else if (strcmp(argv[i], "--steps") == 0)
            args.steps = strtol(argv[i + 1], &end, 10);
        else
            return -1;
        if (end != NULL && (*end != '\0' || end == argv[i + 1]))
            return -1;
    }
    return argc % 2 == 1 && args.limit >= 0 && args.steps >= 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0) {
        fprintf(stderr, "usage: %s [--dir DIR] [--limit N] [--steps N]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* line by line, also into a pipe */
    int rc = lahja_run(main_task, NULL, NULL);
    if (rc != 0)
        fprintf(stderr, "worker_thread: %s\n", lahja_strerror(rc));
    return rc == 0 ? 0 : 1;
}
