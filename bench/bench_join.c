/*
 * bench_join - how long a bus formed by discovery (lahja_join) takes to
 * become a full mesh.
 *
 * Each run forks --procs processes (default 16) that each serve in one
 * fresh directory and join it, naming no peer.  The time measured runs
 * from just before the first fork until the last process sees every
 * other connected (lahja_wait_until_connected_to for each name); each
 * process reports the moment it did over a pipe, on CLOCK_MONOTONIC.
 * Forking and starting the processes is included: it is what a user
 * starting a bus waits for.  Prints the median, min and max over --runs
 * runs (default 5), the median of the per-run median process, and when
 * the last process had joined (start-up, which the mesh cannot beat).
 *
 * Prints figures, never judges them: it exits 0 unless a run fails.
 *
 * Usage: bench_join [--procs N] [--runs R]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lahja/lahja.h>
#include <uv.h>

#define MAX_PROCS 64
#define MAX_RUNS 64
#define PATIENCE_MS 60000

static int procs = 16, runs = 5;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ a member */

struct member {
    const char *dir;
    int self;
    int report; /* write end: the moment it saw every other */
    int stop;   /* read end: EOF when the run is over */
};

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)events;
    lahja_complete(h->data, status);
}

/* Suspends the task until fd is readable or hung up. */
static int wait_readable(int fd)
{
    uv_poll_t poll;
    lahja_completion_t done;
    lahja_completion_init(&done);
    int rc = uv_poll_init(lahja_rt_loop(lahja_rt_current()), &poll, fd);
    if (rc != 0)
        return rc;
    poll.data = &done;
    rc = uv_poll_start(&poll, UV_READABLE | UV_DISCONNECT, on_readable);
    if (rc == 0)
        rc = lahja_completion_wait(&done, LAHJA_FOREVER);
    lahja_uv_close((uv_handle_t *)&poll);
    return rc;
}

static int member_main(void *arg)
{
    const struct member *m = arg;
    char name[16];
    snprintf(name, sizeof name, "m%d", m->self);
    lahja_conn_config_t cfg;
    lahja_endpoint_t *ep = NULL;
    int rc = lahja_conn_config_from_name(&cfg, name, m->dir);
    if (rc == 0)
        rc = lahja_endpoint_new(name, NULL, &ep);
    if (rc == 0)
        rc = lahja_endpoint_start(ep, &cfg);
    if (rc == 0)
        rc = lahja_join(ep, m->dir);
    uint64_t joined = now_ns();
    lahja_time_t deadline = lahja_deadline_in(PATIENCE_MS);
    for (int i = 0; rc == 0 && i < procs; i++) {
        char other[16];
        snprintf(other, sizeof other, "m%d", i);
        if (i != m->self)
            rc = lahja_wait_until_connected_to(ep, other, deadline);
    }
    uint64_t t[2] = { joined, rc == 0 ? now_ns() : 0 };
    if (write(m->report, t, sizeof t) != (ssize_t)sizeof t && rc == 0)
        rc = -errno;
    if (rc == 0)
        rc = wait_readable(m->stop);
    if (ep != NULL && lahja_endpoint_is_running(ep))
        lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep);
    return rc;
}

/* ---------------------------------------------------------------- a run */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* One run: *last = ns until every process saw every other, *mid = the
 * median process's time, *started = until the last had joined (its
 * start-up: fork, runtime, endpoint).  0, or -1 if a process failed. */
static int run_once(uint64_t *last, uint64_t *mid, uint64_t *started)
{
    char dir[] = "/tmp/lahja-bench-join-XXXXXX";
    if (mkdtemp(dir) == NULL)
        return -1;
    int report[2], stop[2];
    if (pipe(report) != 0 || pipe(stop) != 0)
        return -1;
    pid_t pid[MAX_PROCS];
    fflush(NULL);
    uint64_t t0 = now_ns();
    for (int i = 0; i < procs; i++) {
        pid[i] = fork();
        if (pid[i] == 0) {
            close(report[0]);
            close(stop[1]);
            struct member m = { dir, i, report[1], stop[0] };
            int rc = lahja_run(member_main, &m, NULL);
            if (rc != 0)
                fprintf(stderr, "m%d: %s\n", i, lahja_strerror(rc));
            _exit(rc == 0 ? 0 : 1);
        }
    }
    close(report[1]);
    close(stop[0]);
    uint64_t at[MAX_PROCS];
    int ok = 1;
    *started = 0;
    for (int i = 0; i < procs; i++) {
        uint64_t t[2] = { 0, 0 }; /* joined, meshed */
        if (read(report[0], t, sizeof t) != (ssize_t)sizeof t || t[1] == 0)
            ok = 0;
        at[i] = t[1] > t0 ? t[1] - t0 : 0;
        if (t[0] > t0 && t[0] - t0 > *started)
            *started = t[0] - t0;
    }
    close(stop[1]); /* every process stops */
    close(report[0]);
    for (int i = 0; i < procs; i++) {
        int status;
        waitpid(pid[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            ok = 0;
    }
    rmdir(dir); /* every socket went with its endpoint */
    qsort(at, (size_t)procs, sizeof at[0], cmp_u64);
    *last = at[procs - 1];
    *mid = at[procs / 2];
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--procs") == 0 && i + 1 < argc)
            procs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--procs N (2..%d)] [--runs R (1..%d)]\n", argv[0],
                    MAX_PROCS, MAX_RUNS);
            return 2;
        }
    }
    if (procs < 2 || procs > MAX_PROCS || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "%s: --procs 2..%d, --runs 1..%d\n", argv[0], MAX_PROCS, MAX_RUNS);
        return 2;
    }
    uint64_t last[MAX_RUNS], mid[MAX_RUNS], started[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        if (run_once(&last[r], &mid[r], &started[r]) != 0) {
            fprintf(stderr, "run %d failed\n", r + 1);
            return 1;
        }
        printf("run %d: full mesh of %d in %.1f ms (median process %.1f ms; all joined at "
               "%.1f ms)\n",
               r + 1, procs, last[r] / 1e6, mid[r] / 1e6, started[r] / 1e6);
    }
    qsort(last, (size_t)runs, sizeof last[0], cmp_u64);
    qsort(mid, (size_t)runs, sizeof mid[0], cmp_u64);
    qsort(started, (size_t)runs, sizeof started[0], cmp_u64);
    printf("join mesh procs=%d runs=%d median_ms=%.1f min_ms=%.1f max_ms=%.1f "
           "median_process_ms=%.1f all_joined_ms=%.1f\n",
           procs, runs, last[runs / 2] / 1e6, last[0] / 1e6, last[runs - 1] / 1e6,
           mid[runs / 2] / 1e6, started[runs / 2] / 1e6);
    return 0;
}
