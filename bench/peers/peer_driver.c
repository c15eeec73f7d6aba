/*
 * peer_driver - the methodology bench/run.sh applies to every peer
 * transport (see peer.h), the same bench/bench_bus.c applies to lahja.
 *
 *   peer_X thr <nsubs> <n> <size> <addr> <label>
 *       The parent publishes; <nsubs> forked processes receive.  First a
 *       handshake: the parent sends hello messages every millisecond
 *       until every receiver has seen one (and said so over a pipe), so
 *       no receiver misses data by joining late.  Then <n> data messages
 *       of <size> bytes back to back, then end messages until every
 *       receiver has reported.  Receivers count the data messages
 *       delivered to them and when the first and the last arrived:
 *         rate = sum(delivered) / (max(last) - min(first))
 *
 *   peer_X lat <n> <size> <addr> <label>
 *       The parent sends requests one at a time to a forked responder
 *       that echoes them: 1000 warm-up round trips, then <n> timed ones.
 *       Median, 99th percentile and mean round trip.
 *
 * Output, one line on stdout:
 *   THR label= impl= scen= nsubs= n= size= delivered= pct= rate= mbps=
 *   LAT label= impl= scen= n= size= med_us= p99_us= mean_us= rate=
 * impl and scen come from PB_IMPL and PB_SCEN (default: the program's
 * name and "adhoc").  Diagnostics go to stderr; the exit status is 0
 * only when every process did its part.
 *
 * Processes are forked before any transport library starts a thread.
 * Children die with the parent (PR_SET_PDEATHSIG); the parent kills and
 * reaps them when it fails, times out (alarm, PB_ALARM seconds, default
 * 600) or is terminated, and kills the responder once it has answered
 * the end message.  Receivers exit once they have reported.  PB_PIN=same puts every process on CPU 0,
 * PB_PIN=split the parent on CPU 0 and the children on CPU 1: a
 * diagnostic only, by default the scheduler decides.
 *
 * The children may stand on another host (bench/run.sh's cross-host
 * rows, hosts made by tests/nats/hosts.sh): PB_CHILD_NETNS names a
 * network namespace (a file such as /run/netns/<name>) every child enters
 * right after fork, and PB_CHILD_ADDR the address the children use
 * instead of <addr> (e.g. the NATS server of their host).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "peer.h"

#define MAX_SUBS 64
#define WARMUP_RTS 1000
/* A receiver that has seen the handshake gives up after this long
 * without any message: the publisher is gone or stuck. */
#define SILENCE_MS 30000
/* How long the publisher keeps sending end messages for receivers that
 * are still draining. */
#define END_MS 120000

typedef struct {
    uint64_t delivered;
    uint64_t first_ns, last_ns;
    uint64_t gaps;     /* sequence numbers not following the previous one */
    uint64_t bad_size; /* data messages of the wrong length */
    int ended;         /* saw an end message */
} sub_result_t;

static pid_t children[MAX_SUBS];
static volatile sig_atomic_t nchildren;
/* The process's transport handle.  It is never closed (see peer.h); held
 * here, it stays reachable until exit, which leak checkers accept. */
static void *transport;

uint64_t peer_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *peer_env(const char *key, const char *dflt)
{
    const char *v = getenv(key);
    return v != NULL && *v ? v : dflt;
}

int peer_env_int(const char *key, int dflt)
{
    const char *v = getenv(key);
    return v != NULL && *v ? atoi(v) : dflt;
}

/* Kills and reaps every child; async-signal-safe. */
static void kill_children(void)
{
    for (int i = 0; i < nchildren; i++)
        if (children[i] > 0)
            kill(children[i], SIGKILL);
    for (int i = 0; i < nchildren; i++)
        if (children[i] > 0)
            while (waitpid(children[i], NULL, 0) < 0 && errno == EINTR) {
            }
    nchildren = 0;
}

static void on_fatal_signal(int sig)
{
    static const char msg[] = "peer: timed out or terminated\n";
    kill_children();
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing more to do */
    }
    _exit(128 + sig);
}

static void pin(int child)
{
    const char *mode = peer_env("PB_PIN", "");
    if (!*mode)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(child && strcmp(mode, "split") == 0 ? 1 : 0, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        perror("sched_setaffinity");
}

/* A child enters the network namespace PB_CHILD_NETNS, when set. */
static void enter_child_netns(void)
{
    const char *path = peer_env("PB_CHILD_NETNS", "");
    if (!*path)
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
        fprintf(stderr, "peer: entering network namespace %s: %s\n", path, strerror(errno));
        _exit(1);
    }
    close(fd);
}

/* fork() for a child that must not outlive the parent. */
static pid_t fork_child(void)
{
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        kill_children();
        exit(1);
    }
    if (pid == 0) {
        nchildren = 0;
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGALRM, SIG_DFL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        alarm((unsigned)peer_env_int("PB_ALARM", 600));
        pin(1);
        enter_child_netns();
        return 0;
    }
    children[nchildren] = pid;
    nchildren = nchildren + 1;
    return pid;
}

/* Waits for every child to exit, for at most timeout_ms, then kills the
 * rest.  Returns 1 when all exited with status 0. */
static int reap_children(int timeout_ms)
{
    int ok = 1, left = nchildren;
    uint64_t deadline = peer_now_ns() + (uint64_t)timeout_ms * 1000000u;
    while (left > 0 && peer_now_ns() < deadline) {
        for (int i = 0; i < nchildren; i++) {
            int st;
            if (children[i] <= 0 || waitpid(children[i], &st, WNOHANG) != children[i])
                continue;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                ok = 0;
            children[i] = 0;
            left--;
        }
        if (left > 0)
            usleep(1000);
    }
    if (left > 0) {
        fprintf(stderr, "peer: %d child process(es) did not exit; killed\n", left);
        ok = 0;
    }
    kill_children();
    return ok;
}

static int write_full(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads up to n bytes within timeout_ms; returns bytes read, 0 at EOF or
 * timeout, < 0 on error. */
static ssize_t read_some(int fd, void *p, size_t n, int timeout_ms)
{
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    int r = poll(&pf, 1, timeout_ms);
    if (r < 0)
        return errno == EINTR ? 0 : -1;
    if (r == 0)
        return 0;
    ssize_t got = read(fd, p, n);
    if (got < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    return got == 0 ? -1 : got; /* EOF: every writer is gone */
}

static void set_header(unsigned char *msg, char kind, uint64_t seq)
{
    memcpy(msg, "EVT:", 4);
    msg[4] = (unsigned char)kind;
    memset(msg + 5, 0, 3);
    memcpy(msg + 8, &seq, 8);
}

static const char *impl_name(const char *argv0)
{
    const char *slash = strrchr(argv0, '/');
    return peer_env("PB_IMPL", slash != NULL ? slash + 1 : argv0);
}

/* ------------------------------------------------------------ throughput */

/* The clock is read at the first message and at the last (sequence
 * number count - 1), or at the end message if that never came: a read per
 * message would be measured instead of the messages (bench_bus does the
 * same). */
static void subscriber(const char *addr, int idx, uint64_t count, size_t size, int ack_fd,
                       int res_fd)
{
    size_t cap = size + PEER_SLACK;
    unsigned char *buf = malloc(cap);
    sub_result_t r = { 0 };
    void *h = transport = buf != NULL ? peer_ops.sub_open(addr, idx) : NULL;
    if (h == NULL) {
        fprintf(stderr, "peer %s: receiver %d could not connect to %s\n", peer_ops.name, idx, addr);
        (void)write_full(res_fd, &r, sizeof r);
        _exit(1);
    }
    int acked = 0;
    uint64_t expect = 0;
    for (;;) {
        ssize_t n = peer_ops.sub_recv(h, buf, cap, acked ? SILENCE_MS : PEER_CONNECT_MS);
        if (n <= 0) {
            fprintf(stderr, "peer %s: receiver %d: %s after %llu messages\n", peer_ops.name, idx,
                    n == 0 ? "silence" : "receive error", (unsigned long long)r.delivered);
            break;
        }
        if (n < PEER_HDR)
            continue;
        if (buf[4] == PEER_DATA) {
            uint64_t seq;
            memcpy(&seq, buf + 8, 8);
            if (r.delivered == 0)
                r.first_ns = peer_now_ns();
            if (seq == count - 1)
                r.last_ns = peer_now_ns();
            r.delivered++;
            r.gaps += seq != expect;
            expect = seq + 1;
            r.bad_size += (size_t)n != size;
        } else if (buf[4] == PEER_HELLO) {
            if (!acked) {
                char c = 'A';
                if (write_full(ack_fd, &c, 1) != 0)
                    break;
                acked = 1;
            }
        } else if (buf[4] == PEER_END) {
            if (r.last_ns == 0)
                r.last_ns = peer_now_ns();
            r.ended = 1;
            break;
        }
    }
    _exit(write_full(res_fd, &r, sizeof r) == 0 && r.ended ? 0 : 1);
}

static int run_thr(int nsubs, uint64_t n, size_t size, const char *addr, const char *label,
                   const char *impl)
{
    if (nsubs < 1 || nsubs > MAX_SUBS || size < PEER_HDR || n == 0) {
        fprintf(stderr, "peer: need 1..%d receivers, n > 0, size >= %d\n", MAX_SUBS, PEER_HDR);
        return 2;
    }
    int ack[2], res[2];
    if (pipe(ack) != 0 || pipe(res) != 0) {
        perror("pipe");
        return 1;
    }
    for (int i = 0; i < nsubs; i++) {
        if (fork_child() == 0) {
            close(ack[0]);
            close(res[0]);
            subscriber(peer_env("PB_CHILD_ADDR", addr), i, n, size, ack[1], res[1]);
        }
    }
    close(ack[1]);
    close(res[1]);
    pin(0);

    unsigned char *msg = calloc(1, size);
    void *h = transport = msg != NULL ? peer_ops.pub_open(addr, nsubs) : NULL;
    if (h == NULL) {
        fprintf(stderr, "peer %s: could not publish on %s\n", peer_ops.name, addr);
        kill_children();
        return 1;
    }

    /* Handshake: hello every millisecond until every receiver has one. */
    int acks = 0;
    uint64_t seq = 0, t0 = peer_now_ns();
    while (acks < nsubs) {
        set_header(msg, PEER_HELLO, seq++);
        peer_ops.pub_send(h, msg, PEER_HDR);
        if (peer_ops.pub_flush != NULL)
            peer_ops.pub_flush(h);
        char c[MAX_SUBS];
        ssize_t k = read_some(ack[0], c, sizeof c, 1);
        if (k < 0 || peer_now_ns() - t0 > (uint64_t)PEER_CONNECT_MS * 1000000u) {
            fprintf(stderr, "peer %s: handshake failed (%d of %d receivers)\n", peer_ops.name,
                    acks, nsubs);
            kill_children();
            return 1;
        }
        acks += (int)k;
    }

    /* Data, back to back. */
    uint64_t refused = 0;
    for (uint64_t i = 0; i < n; i++) {
        set_header(msg, PEER_DATA, i);
        if (peer_ops.pub_send(h, msg, size) != 0 && ++refused == 1)
            fprintf(stderr, "peer %s: send refused at message %llu\n", peer_ops.name,
                    (unsigned long long)i);
    }
    if (peer_ops.pub_flush != NULL)
        peer_ops.pub_flush(h);

    /* End messages until every receiver has reported. */
    sub_result_t results[MAX_SUBS];
    size_t want = sizeof results[0] * (size_t)nsubs, got = 0;
    uint64_t end_deadline = peer_now_ns() + (uint64_t)END_MS * 1000000u;
    while (got < want && peer_now_ns() < end_deadline) {
        set_header(msg, PEER_END, 0);
        peer_ops.pub_send(h, msg, PEER_HDR);
        if (peer_ops.pub_flush != NULL)
            peer_ops.pub_flush(h);
        ssize_t k = read_some(res[0], (char *)results + got, want - got, 5);
        if (k < 0)
            break;
        got += (size_t)k;
    }
    int ok = got == want;
    if (!ok)
        fprintf(stderr, "peer %s: only %zu of %d receivers reported\n", peer_ops.name,
                got / sizeof results[0], nsubs);

    uint64_t total = 0, gaps = 0, bad = 0, first = UINT64_MAX, last = 0;
    for (int i = 0; i < (int)(got / sizeof results[0]); i++) {
        const sub_result_t *r = &results[i];
        ok = ok && r->ended;
        total += r->delivered;
        gaps += r->gaps;
        bad += r->bad_size;
        if (r->delivered > 0) {
            first = r->first_ns < first ? r->first_ns : first;
            last = r->last_ns > last ? r->last_ns : last;
        }
    }
    if (gaps > 0 || bad > 0 || refused > 0)
        fprintf(stderr, "peer %s %s: %llu gaps, %llu wrong sizes, %llu sends refused\n",
                peer_ops.name, label, (unsigned long long)gaps, (unsigned long long)bad,
                (unsigned long long)refused);
    double secs = last > first ? (double)(last - first) / 1e9 : 0;
    double rate = secs > 0 ? (double)total / secs : 0;
    if (ok)
        printf("THR label=%s impl=%s scen=%s nsubs=%d n=%llu size=%zu delivered=%llu pct=%.2f "
               "rate=%.0f mbps=%.1f\n",
               label, impl, peer_env("PB_SCEN", "adhoc"), nsubs, (unsigned long long)n, size,
               (unsigned long long)total, 100.0 * (double)total / ((double)n * nsubs), rate,
               rate * (double)size / 1e6);
    fflush(stdout);

    ok = reap_children(10000) && ok;
    free(msg);
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------- latency */

static void responder(const char *addr, size_t size, int ready_fd)
{
    size_t cap = size + PEER_SLACK;
    unsigned char *buf = malloc(cap);
    void *h = transport = buf != NULL ? peer_ops.rep_open(addr) : NULL;
    if (h == NULL) {
        fprintf(stderr, "peer %s: responder could not listen on %s\n", peer_ops.name, addr);
        _exit(1);
    }
    char c = 'R';
    if (write_full(ready_fd, &c, 1) != 0)
        _exit(1);
    for (;;) {
        ssize_t n = peer_ops.rep_serve_one(h, buf, cap);
        if (n < PEER_HDR)
            _exit(1);
        /* After the end message's reply, wait to be killed: exiting could
         * lose the reply still queued in a library's I/O thread. */
        if (buf[4] == PEER_END)
            for (;;)
                pause();
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int run_lat(uint64_t n, size_t size, const char *addr, const char *label,
                   const char *impl)
{
    if (size < PEER_HDR || n == 0) {
        fprintf(stderr, "peer: need n > 0, size >= %d\n", PEER_HDR);
        return 2;
    }
    int ready[2];
    if (pipe(ready) != 0) {
        perror("pipe");
        return 1;
    }
    if (fork_child() == 0) {
        close(ready[0]);
        responder(peer_env("PB_CHILD_ADDR", addr), size, ready[1]);
    }
    close(ready[1]);
    pin(0);

    size_t cap = size + PEER_SLACK;
    unsigned char *msg = calloc(1, size), *reply = malloc(cap);
    uint64_t *rt = malloc(sizeof *rt * n);
    char c;
    void *h = NULL;
    if (msg != NULL && reply != NULL && rt != NULL && read_some(ready[0], &c, 1, PEER_CONNECT_MS) == 1)
        h = transport = peer_ops.req_open(addr);
    if (h == NULL) {
        fprintf(stderr, "peer %s: no responder at %s\n", peer_ops.name, addr);
        kill_children();
        return 1;
    }

    for (uint64_t i = 0; i < WARMUP_RTS + n; i++) {
        int timed = i >= WARMUP_RTS;
        set_header(msg, timed ? PEER_DATA : PEER_HELLO, i);
        uint64_t a = peer_now_ns();
        ssize_t got = peer_ops.req_roundtrip(h, msg, size, reply, cap);
        uint64_t b = peer_now_ns();
        if (got != (ssize_t)size || memcmp(reply, msg, PEER_HDR) != 0) {
            fprintf(stderr, "peer %s: bad reply to request %llu (%zd bytes)\n", peer_ops.name,
                    (unsigned long long)i, got);
            kill_children();
            return 1;
        }
        if (timed)
            rt[i - WARMUP_RTS] = b - a;
    }
    /* The end message's reply says the responder did its part. */
    set_header(msg, PEER_END, 0);
    int ok = peer_ops.req_roundtrip(h, msg, PEER_HDR, reply, cap) == PEER_HDR;
    kill_children();
    if (!ok) {
        fprintf(stderr, "peer %s: no reply to the end message\n", peer_ops.name);
        return 1;
    }

    double sum = 0;
    for (uint64_t i = 0; i < n; i++)
        sum += (double)rt[i];
    qsort(rt, n, sizeof *rt, cmp_u64);
    double med = n % 2 ? (double)rt[n / 2] : ((double)rt[n / 2 - 1] + (double)rt[n / 2]) / 2;
    uint64_t p99_idx = (n * 99 + 99) / 100 - 1; /* ceil(0.99 n) - 1 */
    printf("LAT label=%s impl=%s scen=%s n=%llu size=%zu med_us=%.2f p99_us=%.2f mean_us=%.2f "
           "rate=%.0f\n",
           label, impl, peer_env("PB_SCEN", "adhoc"), (unsigned long long)n, size, med / 1e3,
           (double)rt[p99_idx] / 1e3, sum / (double)n / 1e3, (double)n / (sum / 1e9));
    fflush(stdout);

    free(msg);
    free(reply);
    free(rt);
    return 0;
}

int main(int argc, char **argv)
{
    struct sigaction sa = { .sa_handler = on_fatal_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)peer_env_int("PB_ALARM", 600));

    const char *impl = impl_name(argv[0]);
    if (argc == 7 && strcmp(argv[1], "thr") == 0)
        return run_thr(atoi(argv[2]), strtoull(argv[3], NULL, 10), strtoul(argv[4], NULL, 10),
                       argv[5], argv[6], impl);
    if (argc == 6 && strcmp(argv[1], "lat") == 0)
        return run_lat(strtoull(argv[2], NULL, 10), strtoul(argv[3], NULL, 10), argv[4], argv[5],
                       impl);
    fprintf(stderr,
            "usage: %s thr <nsubs> <n> <size> <addr> <label>\n"
            "       %s lat <n> <size> <addr> <label>\n",
            argv[0], argv[0]);
    return 2;
}
