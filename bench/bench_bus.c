/*
 * bench_bus: lahja's side of the bus benchmarks (bench/run.sh runs it
 * beside the peers and prints the table).  Every process is forked
 * before its runtime starts; every figure is counted where events are
 * delivered, never where they are sent.  Each subcommand prints one line
 * of key=value fields in the format the runner aggregates.
 *
 *   bench_bus thr <nsubs> <n> <size> <dir> <label>
 *       one broadcaster, <nsubs> subscriber processes; <n> events of
 *       <size> bytes, lossless (lahja_broadcast waits under the high-water
 *       mark).  rate = delivered / (last - first receipt), all receivers.
 *   bench_bus lat <n> <size> <dir> <label>
 *       sequential lahja_request round trips to a responder process.
 *   bench_bus inflight <tasks> <n> <size> <dir> <label>
 *       <tasks> concurrent tasks share <n> requests; completed/s.
 *   bench_bus seeds <consumers> <events> <dir> <label>
 *       lahja's perf_benchmark: consumers stream <events> events from one
 *       driver; propagated and received events/s.
 *   bench_bus seedsreq <consumers> <requests> <dir> <label>
 *       its request mode: <requests> requests to each consumer.
 *   bench_bus mem <dir> <label>
 *       resident memory: an idle endpoint, per connection, and a
 *       broadcaster whose only subscriber has stopped reading.
 *   bench_bus mesh <N> <dir> <label>
 *       N endpoints (processes) in a full mesh: connect time, and the
 *       broadcaster's CPU per event with one subscriber and with all.
 *
 * PB_IMPL and PB_SCEN name the implementation and scenario in the output.
 * PB_PIN=same puts every process on CPU 0, PB_PIN=split the parent on CPU
 * 0 and the others on CPU 1 (as the peers' driver does).
 * LAHJA_BUSY_POLL_US, LAHJA_HIGH_WATER and LAHJA_SHM_RING set every
 * endpoint's busy_poll_us, high_water and shm_ring; LAHJA_NO_STATS=1 its
 * no_stats (what the built-in
 * statistics request costs).  LAHJA_BENCH_LOAN=1 makes large payloads
 * (64 KiB and more) with lahja_event_loan, writing only their sequence
 * number: what a program that builds its payload in place pays.
 *
 * Across hosts (thr and lat): with LAHJA_BENCH_NATS=URLS every endpoint
 * joins that NATS cluster as a host of its own, so that every connection
 * goes through NATS, and waits for its peers there instead of connecting
 * to their sockets.  The forked processes use LAHJA_BENCH_CHILD_NATS
 * instead, if set, and first enter the network namespace
 * LAHJA_BENCH_CHILD_NETNS (a path, or a name under /var/run/netns), if
 * set: the other host.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lahja/lahja.h>

#define DATA "bench.Data"
#define END "bench.End"
#define REQ "bench.Request"
#define RESP "bench.Response"
#define SETUP_MS 20000 /* connecting, subscribing: a loaded machine is slow */
#define RUN_MS 120000  /* any single wait of a measured phase */
#define MAX_PROCS 64

static const char *dir;
static int loan_mode;            /* LAHJA_BENCH_LOAN */
static const char *nats_urls;    /* LAHJA_BENCH_NATS, or the child's */
static char nats_prefix[32];     /* this run's, shared with the children */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const char *env_or(const char *key, const char *dflt)
{
    const char *v = getenv(key);
    return v != NULL && *v ? v : dflt;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_bus: %s: %s\n", what, lahja_strerror(rc));
    _exit(1);
}

static void log_problem(void *user, lahja_log_level_t level, const char *ep, const char *msg)
{
    (void)user;
    if (level >= LAHJA_LOG_WARNING)
        fprintf(stderr, "bench_bus %s: %s\n", ep, msg);
}

/* An endpoint named `name`, started, serving when `serve`. */
static lahja_endpoint_t *endpoint(const char *name, int serve,
                                  const lahja_endpoint_options_t *extra)
{
    lahja_endpoint_options_t o = { 0 };
    if (extra != NULL)
        o = *extra;
    o.log = log_problem;
    o.busy_poll_us = (uint32_t)strtoul(env_or("LAHJA_BUSY_POLL_US", "0"), NULL, 10);
    o.high_water = (size_t)strtoul(env_or("LAHJA_HIGH_WATER", "0"), NULL, 10);
    o.no_stats = (int)strtol(env_or("LAHJA_NO_STATS", "0"), NULL, 10);
    o.shm_ring = (size_t)strtoul(env_or("LAHJA_SHM_RING", "0"), NULL, 10);
    lahja_endpoint_t *ep;
    lahja_conn_config_t cfg;
    int rc = lahja_conn_config_from_name(&cfg, name, dir);
    if (rc == 0)
        rc = lahja_endpoint_new(name, &o, &ep);
    if (rc == 0)
        rc = lahja_endpoint_start(ep, serve ? &cfg : NULL);
    if (rc == 0 && nats_urls != NULL) {
        lahja_nats_options_t no = { .servers = nats_urls, .prefix = nats_prefix, .host = name };
        rc = lahja_join_nats(ep, &no);
        if (rc != 0)
            fprintf(stderr, "bench_bus: %s\n", lahja_endpoint_last_error(ep));
    }
    if (rc != 0)
        die(name, rc);
    return ep;
}

static void connect_to(lahja_endpoint_t *ep, const char *name)
{
    if (nats_urls != NULL) {
        int rc = lahja_wait_until_connected_to(ep, name, lahja_deadline_in(SETUP_MS));
        if (rc != 0)
            die(name, rc);
        return;
    }
    lahja_conn_config_t cfg;
    int rc = lahja_conn_config_from_name(&cfg, name, dir);
    if (rc == 0)
        rc = lahja_connect(ep, &cfg, 1, lahja_deadline_in(SETUP_MS));
    if (rc != 0)
        die(name, rc);
}

static void wait_subscribed(lahja_endpoint_t *ep, const char *name, const char *type)
{
    int rc = lahja_wait_until_endpoint_subscribed_to(ep, name, type, lahja_deadline_in(SETUP_MS));
    if (rc != 0)
        die(type, rc);
}

static void count_peer(const char *name, const char *const *types, size_t ntypes, void *user)
{
    (void)name;
    (void)types;
    (void)ntypes;
    (*(int *)user)++;
}

static int npeers(const lahja_endpoint_t *ep)
{
    int n = 0;
    lahja_foreach_peer(ep, count_peer, &n);
    return n;
}

/* Until `want` peers have connected, then until every one has gone: the
 * other side's signal that it is done. */
static int serve_until_alone(lahja_endpoint_t *ep, int want)
{
    int rc = 0;
    while (rc == 0 && npeers(ep) < want)
        rc = lahja_wait_until_connections_change(ep, lahja_deadline_in(SETUP_MS));
    while (rc == 0 && npeers(ep) > 0)
        rc = lahja_wait_until_connections_change(ep, lahja_deadline_in(RUN_MS * 2));
    return rc;
}

static void finish(lahja_endpoint_t *ep)
{
    lahja_endpoint_stop(ep);
    lahja_endpoint_free(ep);
}

static void pin(int child)
{
    const char *mode = env_or("PB_PIN", "");
    if (!*mode)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(child && strcmp(mode, "split") == 0 ? 1 : 0, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        perror("sched_setaffinity");
}

/* Runs fn in a forked process with its own runtime; returns the pid. */
static pid_t spawn_process(lahja_task_fn fn, void *arg)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        pin(1);
        const char *ns = getenv("LAHJA_BENCH_CHILD_NETNS");
        if (ns != NULL && *ns) {
            char path[256];
            snprintf(path, sizeof path, "%s%s", strchr(ns, '/') ? "" : "/var/run/netns/", ns);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
                perror(path);
                _exit(1);
            }
            close(fd);
        }
        if (nats_urls != NULL)
            nats_urls = env_or("LAHJA_BENCH_CHILD_NATS", nats_urls);
        alarm(300); /* nothing here may outlive a stuck parent */
        int rc = lahja_run(fn, arg, NULL);
        _exit(rc == 0 ? 0 : 1);
    }
    return pid;
}

static int reap(pid_t *pids, int n)
{
    int ok = 1;
    for (int i = 0; i < n; i++) {
        int st;
        if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            ok = 0;
    }
    return ok;
}

static int read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static void write_full(int fd, const void *p, size_t n)
{
    if (write(fd, p, n) != (ssize_t)n)
        _exit(1);
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f != NULL) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

/* A payload buffer of random bytes: LZ4 gains nothing on them, so large
 * events measure the transport, not the compressor. */
static uint8_t *payload(size_t size)
{
    uint8_t *buf = malloc(size < 8 ? 8 : size);
    if (buf == NULL)
        die("payload", -ENOMEM);
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < size; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    return buf;
}

/*
 * Large payloads are not copied: they are handed over with
 * lahja_event_wrap, in buffers recycled through this pool when the bus
 * releases them (after writing them to every peer).
 */
#define WRAP_MIN (64 * 1024)
#define POOL_MAX 64

static struct {
    uint8_t *free[POOL_MAX];
    size_t n, size;
} pool;

static void pool_put(void *buf, void *user)
{
    (void)user;
    if (pool.n < POOL_MAX)
        pool.free[pool.n++] = buf;
    else
        free(buf);
}

static uint8_t *pool_get(const uint8_t *like, size_t size)
{
    if (pool.size != size) {
        while (pool.n > 0)
            free(pool.free[--pool.n]);
        pool.size = size;
    }
    if (pool.n > 0)
        return pool.free[--pool.n];
    uint8_t *buf = malloc(size);
    if (buf == NULL)
        die("payload", -ENOMEM);
    memcpy(buf, like, size); /* once per buffer: the contents stay random */
    return buf;
}

/* Broadcasts one event of `type` carrying seq in its first 8 bytes: a
 * copy of buf with lahja_broadcast_bytes, or a pooled buffer handed over
 * with lahja_event_wrap for large ones. */
static int send_seq(lahja_endpoint_t *ep, const char *type, uint8_t *buf, size_t size,
                    uint64_t seq, const lahja_broadcast_config_t *cfg, lahja_time_t deadline)
{
    if (size < WRAP_MIN) {
        memcpy(buf, &seq, sizeof seq);
        return lahja_broadcast_bytes(ep, type, buf, size, cfg, deadline);
    }
    lahja_event_t *ev;
    if (loan_mode) {
        void *lent;
        int rc = lahja_event_loan(ep, type, size, &ev, &lent);
        if (rc != 0)
            return rc;
        memcpy(lent, &seq, sizeof seq);
        rc = lahja_broadcast(ep, ev, cfg, deadline);
        lahja_event_unref(ev);
        return rc;
    }
    uint8_t *own = pool_get(buf, size);
    memcpy(own, &seq, sizeof seq);
    int rc = lahja_event_wrap(type, own, size, pool_put, NULL, &ev);
    if (rc != 0) {
        pool_put(own, NULL);
        return rc;
    }
    rc = lahja_broadcast(ep, ev, cfg, deadline);
    lahja_event_unref(ev);
    return rc;
}

static void name_of(char *buf, size_t len, const char *prefix, int i)
{
    snprintf(buf, len, "%s%d", prefix, i);
}

/* ================================================================ thr */

struct sub_result {
    uint64_t delivered, first_ns, last_ns, gaps, bytes_bad;
};

struct sub_ctx {
    int idx, resfd;
    size_t size;
    const char *server;    /* the broadcaster's endpoint name */
    const char *data_type;
    uint64_t n;            /* events the publisher sends */
    struct sub_result r;
    uint64_t expect;
    lahja_latch_t ended;
};

/*
 * The receivers' clock is read at the first event and at the last one
 * (sequence number n - 1), not at every event: a clock read costs tens
 * of nanoseconds on a virtual machine, as much as an event's delivery,
 * and would be measured instead of it.  The raw peers do the same.
 */

static int on_data(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct sub_ctx *s = user;
    size_t len;
    const uint8_t *p = lahja_event_payload(ev, &len);
    uint64_t seq = 0;
    if (len >= sizeof seq)
        memcpy(&seq, p, sizeof seq);
    if (len != s->size)
        s->r.bytes_bad++;
    if (s->r.delivered++ == 0)
        s->r.first_ns = now_ns();
    if (seq == s->n - 1)
        s->r.last_ns = now_ns();
    if (seq != s->expect)
        s->r.gaps++;
    s->expect = seq + 1;
    return 0;
}

static int on_end(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    (void)ev;
    lahja_latch_set(user);
    return 0;
}

static int on_data_end(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    (void)ev;
    struct sub_ctx *s = user;
    if (s->r.last_ns == 0) /* the last event never came (fewer delivered than sent) */
        s->r.last_ns = now_ns();
    lahja_latch_set(&s->ended);
    return 0;
}

static int count_event(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    (void)ev;
    (*(uint64_t *)user)++;
    return 0;
}

static int subscriber(void *arg)
{
    struct sub_ctx *s = arg;
    char name[32];
    name_of(name, sizeof name, "sub", s->idx);
    lahja_endpoint_t *ep = endpoint(name, 0, NULL);
    lahja_subscription_t *d, *e;
    int rc = lahja_subscribe(ep, s->data_type, on_data, s, &d);
    if (rc == 0)
        rc = lahja_subscribe(ep, END, on_data_end, s, &e);
    if (rc != 0)
        die("subscribe", rc);
    lahja_latch_init(&s->ended);
    connect_to(ep, s->server);
    rc = lahja_latch_wait(&s->ended, lahja_deadline_in(RUN_MS * 2));
    write_full(s->resfd, &s->r, sizeof s->r);
    finish(ep);
    return rc;
}

struct pub_ctx {
    int nsubs;
    uint64_t n;
    size_t size;
};

static int publisher(void *arg)
{
    struct pub_ctx *p = arg;
    lahja_endpoint_t *ep = endpoint("pub", 1, NULL);
    for (int i = 0; i < p->nsubs; i++) {
        char name[32];
        name_of(name, sizeof name, "sub", i);
        wait_subscribed(ep, name, DATA);
        wait_subscribed(ep, name, END);
    }
    uint8_t *buf = payload(p->size);
    lahja_time_t deadline = lahja_deadline_in(RUN_MS); /* for the whole run */
    for (uint64_t i = 0; i < p->n; i++) {
        int rc = send_seq(ep, DATA, buf, p->size, i, NULL, deadline);
        if (rc != 0)
            die("broadcast", rc);
    }
    int rc = send_seq(ep, END, buf, 8, 0, NULL, deadline);
    if (rc != 0)
        die("broadcast end", rc);
    free(buf);
    finish(ep); /* lingers until the output has reached the subscribers */
    return 0;
}

static int cmd_thr(int nsubs, uint64_t n, size_t size, const char *label)
{
    if (nsubs < 1 || nsubs > MAX_PROCS || size < 8) {
        fprintf(stderr, "thr: 1..%d subscribers, size >= 8\n", MAX_PROCS);
        return 2;
    }
    int res[2];
    if (pipe(res) != 0)
        return 1;
    pid_t pids[MAX_PROCS];
    struct sub_ctx s = {
        .resfd = res[1], .size = size, .n = n, .server = "pub", .data_type = DATA
    };
    for (int i = 0; i < nsubs; i++) {
        s.idx = i;
        pids[i] = spawn_process(subscriber, &s);
    }
    close(res[1]);
    struct pub_ctx p = { nsubs, n, size };
    int rc = lahja_run(publisher, &p, NULL);
    if (rc != 0)
        die("publisher", rc);
    uint64_t total = 0, gaps = 0, bad = 0, first = UINT64_MAX, last = 0;
    for (int i = 0; i < nsubs; i++) {
        struct sub_result r;
        if (read_full(res[0], &r, sizeof r) != 0) {
            fprintf(stderr, "thr: a subscriber did not report\n");
            return 1;
        }
        total += r.delivered;
        gaps += r.gaps;
        bad += r.bytes_bad;
        if (r.delivered > 0) {
            first = r.first_ns < first ? r.first_ns : first;
            last = r.last_ns > last ? r.last_ns : last;
        }
    }
    if (!reap(pids, nsubs))
        return 1;
    double secs = last > first ? (double)(last - first) / 1e9 : 0;
    double rate = secs > 0 ? (double)total / secs : 0;
    printf("THR label=%s impl=%s scen=%s nsubs=%d n=%llu size=%zu delivered=%llu pct=%.2f "
           "rate=%.0f mbps=%.1f gaps=%llu\n",
           label, env_or("PB_IMPL", "lahja"), env_or("PB_SCEN", "adhoc"), nsubs,
           (unsigned long long)n, size, (unsigned long long)total,
           100.0 * (double)total / ((double)n * nsubs), rate, rate * (double)size / 1e6,
           (unsigned long long)gaps);
    return total == n * (uint64_t)nsubs && gaps == 0 && bad == 0 ? 0 : 1;
}

/* ========================================================== responder */

static int answer(lahja_endpoint_t *ep, lahja_event_t *req, void *user)
{
    (void)user;
    size_t len;
    const void *p = lahja_event_payload(req, &len);
    lahja_event_t *resp;
    int rc = lahja_event_new(RESP, p, len, &resp);
    if (rc != 0)
        return rc;
    rc = lahja_respond(ep, req, resp);
    lahja_event_unref(resp);
    return rc;
}

/* Serves requests as endpoint `arg` (its name) until its requester has
 * come and gone. */
static int responder(void *arg)
{
    lahja_endpoint_t *ep = endpoint(arg, 1, NULL);
    lahja_subscription_t *sub;
    int rc = lahja_subscribe(ep, REQ, answer, NULL, &sub);
    if (rc != 0)
        die("subscribe", rc);
    rc = serve_until_alone(ep, 1);
    lahja_subscription_cancel(sub);
    finish(ep);
    return rc;
}

/* A requester endpoint connected to `server`, which answers REQ. */
static lahja_endpoint_t *requester(const char *name, const char *server)
{
    lahja_endpoint_t *ep = endpoint(name, 0, NULL);
    connect_to(ep, server);
    wait_subscribed(ep, server, REQ);
    return ep;
}

/* One round trip; the response must carry the request's sequence. */
static int round_trip(lahja_endpoint_t *ep, uint8_t *buf, size_t size, uint64_t seq,
                      const lahja_broadcast_config_t *cfg)
{
    memcpy(buf, &seq, sizeof seq);
    lahja_event_t *req, *resp;
    int rc = lahja_request_new(REQ, RESP, buf, size, &req);
    if (rc != 0)
        return rc;
    rc = lahja_request(ep, req, cfg, lahja_deadline_in(RUN_MS), &resp);
    lahja_event_unref(req);
    if (rc != 0)
        return rc;
    size_t len;
    const uint8_t *p = lahja_event_payload(resp, &len);
    uint64_t got;
    memcpy(&got, p, sizeof got);
    rc = len == size && got == seq ? 0 : -EPROTO;
    lahja_event_unref(resp);
    return rc;
}

/* ================================================================ lat */

struct lat_ctx {
    uint64_t n;
    size_t size;
    uint64_t *rt;
};

static int lat_main(void *arg)
{
    struct lat_ctx *l = arg;
    lahja_endpoint_t *ep = requester("req", "rep");
    uint8_t *buf = payload(l->size);
    for (uint64_t i = 0; i < 1000; i++) {
        int rc = round_trip(ep, buf, l->size, i, NULL);
        if (rc != 0)
            die("warm-up request", rc);
    }
    for (uint64_t i = 0; i < l->n; i++) {
        uint64_t a = now_ns();
        int rc = round_trip(ep, buf, l->size, i, NULL);
        l->rt[i] = now_ns() - a;
        if (rc != 0)
            die("request", rc);
    }
    free(buf);
    finish(ep);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmd_lat(uint64_t n, size_t size, const char *label)
{
    if (n < 1 || size < 8)
        return 2;
    pid_t pid = spawn_process(responder, (void *)"rep");
    struct lat_ctx l = { n, size, calloc(n, sizeof(uint64_t)) };
    int rc = lahja_run(lat_main, &l, NULL);
    if (rc != 0 || !reap(&pid, 1))
        return 1;
    double sum = 0;
    for (uint64_t i = 0; i < n; i++)
        sum += (double)l.rt[i];
    qsort(l.rt, n, sizeof *l.rt, cmp_u64);
    printf("LAT label=%s impl=%s scen=%s n=%llu size=%zu med_us=%.2f p99_us=%.2f mean_us=%.2f "
           "rate=%.0f\n",
           label, env_or("PB_IMPL", "lahja"), env_or("PB_SCEN", "adhoc"), (unsigned long long)n,
           size, (double)l.rt[n / 2] / 1e3, (double)l.rt[(size_t)((double)n * 0.99)] / 1e3,
           sum / (double)n / 1e3, (double)n / (sum / 1e9));
    free(l.rt);
    return 0;
}

/* =========================================================== inflight */

struct flight {
    lahja_endpoint_t *ep;
    uint64_t next, n;
    size_t size;
    const lahja_broadcast_config_t *cfg;
};

/* One of the concurrent requesters: takes sequence numbers until all
 * are taken. */
static int flight_task(void *arg)
{
    struct flight *f = arg;
    uint8_t *buf = payload(f->size);
    int rc = 0;
    while (rc == 0 && f->next < f->n)
        rc = round_trip(f->ep, buf, f->size, f->next++, f->cfg);
    free(buf);
    return rc;
}

/* `tasks` requesters in a nursery; returns the seconds they took. */
static double run_flights(struct flight *f, int tasks)
{
    lahja_nursery_t *nu;
    int rc = lahja_nursery_open(&nu);
    if (rc != 0)
        die("nursery", rc);
    uint64_t t0 = now_ns();
    for (int i = 0; i < tasks && rc == 0; i++)
        rc = lahja_nursery_spawn(nu, flight_task, f, NULL, NULL);
    int jrc = lahja_nursery_close(nu);
    if (rc != 0 || jrc != 0)
        die("requests", rc != 0 ? rc : jrc);
    return (double)(now_ns() - t0) / 1e9;
}

struct inflight_ctx {
    int tasks;
    uint64_t n;
    size_t size;
    double secs;
};

static int inflight_main(void *arg)
{
    struct inflight_ctx *c = arg;
    lahja_endpoint_t *ep = requester("req", "rep");
    struct flight warm = { ep, 0, 10000, c->size, NULL };
    run_flights(&warm, c->tasks);
    struct flight f = { ep, 0, c->n, c->size, NULL };
    c->secs = run_flights(&f, c->tasks);
    finish(ep);
    return 0;
}

static int cmd_inflight(int tasks, uint64_t n, size_t size, const char *label)
{
    if (tasks < 1 || n < 1 || size < 8)
        return 2;
    pid_t pid = spawn_process(responder, (void *)"rep");
    struct inflight_ctx c = { tasks, n, size, 0 };
    int rc = lahja_run(inflight_main, &c, NULL);
    if (rc != 0 || !reap(&pid, 1))
        return 1;
    double rate = (double)n / c.secs;
    printf("THR label=%s impl=%s scen=%s nsubs=1 n=%llu size=%zu delivered=%llu pct=100.00 "
           "rate=%.0f mbps=%.1f tasks=%d\n",
           label, env_or("PB_IMPL", "lahja"), env_or("PB_SCEN", "inflight"),
           (unsigned long long)n, size, (unsigned long long)n, rate, rate * (double)size / 1e6,
           tasks);
    return 0;
}

/* ============================================================== seeds */

/* lahja's perf_benchmark event: its index, when it was sent, a payload. */
struct perf_event {
    uint64_t n;
    uint64_t sent_ns;
    uint8_t payload[1];
};

struct consumer_result {
    uint64_t received, first_sent_ns, last_received_ns;
};

struct consumer_ctx {
    int idx, resfd;
    uint64_t events;
};

static int consumer(void *arg)
{
    struct consumer_ctx *c = arg;
    char name[32];
    name_of(name, sizeof name, "consumer", c->idx);
    lahja_endpoint_t *ep = endpoint(name, 0, NULL);
    /* Python lahja's stream is unbounded: this one holds them all. */
    lahja_stream_options_t so = { .capacity = c->events };
    lahja_stream_t *s;
    int rc = lahja_stream_open(ep, DATA, c->events, &so, &s);
    if (rc != 0)
        die("stream", rc);
    connect_to(ep, "driver");
    struct consumer_result r = { 0, UINT64_MAX, 0 };
    lahja_event_t *ev;
    lahja_time_t deadline = lahja_deadline_in(RUN_MS); /* for the whole run */
    while ((rc = lahja_stream_next(s, deadline, &ev)) == 0) {
        struct perf_event pe;
        size_t len;
        const void *p = lahja_event_payload(ev, &len);
        memcpy(&pe, p, len < sizeof pe ? len : sizeof pe);
        r.received++;
        if (pe.sent_ns < r.first_sent_ns)
            r.first_sent_ns = pe.sent_ns;
        r.last_received_ns = now_ns();
        lahja_event_unref(ev);
    }
    write_full(c->resfd, &r, sizeof r);
    lahja_stream_close(s);
    finish(ep);
    return rc == -EPIPE ? 0 : rc;
}

struct driver_ctx {
    int consumers;
    uint64_t events;
};

static int driver(void *arg)
{
    struct driver_ctx *d = arg;
    lahja_endpoint_t *ep = endpoint("driver", 1, NULL);
    for (int i = 0; i < d->consumers; i++) {
        char name[32];
        name_of(name, sizeof name, "consumer", i);
        wait_subscribed(ep, name, DATA);
    }
    lahja_time_t deadline = lahja_deadline_in(RUN_MS); /* for the whole run */
    for (uint64_t i = 0; i < d->events; i++) {
        struct perf_event pe = { i, now_ns(), { 0 } };
        lahja_event_t *ev;
        int rc = lahja_event_new(DATA, &pe, sizeof pe, &ev);
        if (rc == 0)
            rc = lahja_broadcast(ep, ev, NULL, deadline);
        lahja_event_unref(ev);
        if (rc != 0)
            die("broadcast", rc);
    }
    finish(ep);
    return 0;
}

static int cmd_seeds(int consumers, uint64_t events, const char *label)
{
    if (consumers < 1 || consumers > MAX_PROCS || events < 1)
        return 2;
    int res[2];
    if (pipe(res) != 0)
        return 1;
    pid_t pids[MAX_PROCS];
    for (int i = 0; i < consumers; i++) {
        struct consumer_ctx c = { i, res[1], events };
        pids[i] = spawn_process(consumer, &c);
    }
    close(res[1]);
    struct driver_ctx d = { consumers, events };
    if (lahja_run(driver, &d, NULL) != 0)
        return 1;
    uint64_t received = 0, first = UINT64_MAX, last = 0;
    for (int i = 0; i < consumers; i++) {
        struct consumer_result r;
        if (read_full(res[0], &r, sizeof r) != 0)
            return 1;
        received += r.received;
        first = r.first_sent_ns < first ? r.first_sent_ns : first;
        last = r.last_received_ns > last ? r.last_received_ns : last;
    }
    if (!reap(pids, consumers) || last <= first)
        return 1;
    double secs = (double)(last - first) / 1e9;
    printf("SEEDS label=%s impl=%s scen=%s consumers=%d events=%llu received=%llu "
           "propagated_rate=%.0f received_rate=%.0f\n",
           label, env_or("PB_IMPL", "lahja"), env_or("PB_SCEN", "seeds-stream"), consumers,
           (unsigned long long)events, (unsigned long long)received, (double)events / secs,
           (double)received / secs);
    return received == events * (uint64_t)consumers ? 0 : 1;
}

/* Request mode: each consumer answers; the driver runs one sequential
 * requester per consumer, concurrently. */
struct seedsreq_ctx {
    int consumers;
    uint64_t requests;
    double secs;
};

static int seedsreq_main(void *arg)
{
    struct seedsreq_ctx *c = arg;
    lahja_endpoint_t *ep = endpoint("driver", 0, NULL);
    struct flight f[MAX_PROCS];
    lahja_broadcast_config_t cfg[MAX_PROCS];
    char names[MAX_PROCS][32];
    for (int i = 0; i < c->consumers; i++) {
        name_of(names[i], sizeof names[i], "consumer", i);
        connect_to(ep, names[i]);
        wait_subscribed(ep, names[i], REQ);
        cfg[i] = (lahja_broadcast_config_t){ .filter_endpoint = names[i] };
        f[i] = (struct flight){ ep, 0, c->requests, 16, &cfg[i] };
    }
    lahja_nursery_t *nu;
    int rc = lahja_nursery_open(&nu);
    uint64_t t0 = now_ns();
    for (int i = 0; i < c->consumers && rc == 0; i++)
        rc = lahja_nursery_spawn(nu, flight_task, &f[i], NULL, NULL);
    int jrc = lahja_nursery_close(nu);
    c->secs = (double)(now_ns() - t0) / 1e9;
    finish(ep);
    return rc != 0 ? rc : jrc;
}

static int cmd_seedsreq(int consumers, uint64_t requests, const char *label)
{
    if (consumers < 1 || consumers > MAX_PROCS || requests < 1)
        return 2;
    pid_t pids[MAX_PROCS];
    char names[MAX_PROCS][32];
    for (int i = 0; i < consumers; i++) {
        name_of(names[i], sizeof names[i], "consumer", i);
        pids[i] = spawn_process(responder, names[i]);
    }
    struct seedsreq_ctx c = { consumers, requests, 0 };
    int rc = lahja_run(seedsreq_main, &c, NULL);
    if (!reap(pids, consumers) || rc != 0)
        return 1;
    printf("SEEDS label=%s impl=%s scen=%s consumers=%d requests=%llu rate=%.0f\n", label,
           env_or("PB_IMPL", "lahja"), env_or("PB_SCEN", "seeds-request"), consumers,
           (unsigned long long)requests, (double)requests * consumers / c.secs);
    return 0;
}

/* ================================================================ mem */

#define MEM_CONNS 64
#define MEM_EVENT 1024

struct mem_ctx {
    long idle_kb, per_conn_kb, stalled_kb;
    uint64_t stalled_events;
    size_t high_water;
    pid_t clients, stalled;
};

/* MEM_CONNS endpoints in one process, each connected to "mem". */
static int mem_clients(void *arg)
{
    (void)arg;
    lahja_endpoint_t *eps[MEM_CONNS];
    for (int i = 0; i < MEM_CONNS; i++) {
        char name[32];
        name_of(name, sizeof name, "client", i);
        eps[i] = endpoint(name, 0, NULL);
        connect_to(eps[i], "mem");
    }
    /* Until the measured endpoint leaves. */
    int rc = 0;
    while (rc == 0 && lahja_is_connected_to(eps[0], "mem"))
        rc = lahja_wait_until_connections_change(eps[0], lahja_deadline_in(RUN_MS));
    for (int i = 0; i < MEM_CONNS; i++)
        finish(eps[i]);
    return rc;
}

/* Subscribes, then stops reading for good (SIGSTOP, until killed). */
static int mem_stalled(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep = endpoint("stalled", 0, NULL);
    lahja_subscription_t *s;
    uint64_t got = 0;
    int rc = lahja_subscribe(ep, DATA, count_event, &got, &s);
    if (rc != 0)
        die("subscribe", rc);
    connect_to(ep, "mem");
    lahja_sleep(1); /* a loop turn: our subscriptions are written */
    raise(SIGSTOP);
    return 0;
}

static int mem_main(void *arg)
{
    struct mem_ctx *m = arg;
    long before = rss_kb();
    lahja_endpoint_t *ep = endpoint("mem", 1, NULL);
    m->idle_kb = rss_kb() - before;

    before = rss_kb();
    m->clients = spawn_process(mem_clients, NULL);
    int rc = 0;
    while (rc == 0 && npeers(ep) < MEM_CONNS)
        rc = lahja_wait_until_connections_change(ep, lahja_deadline_in(SETUP_MS));
    if (rc != 0)
        die("clients", rc);
    lahja_sleep(50); /* the handshakes' last frames are read */
    m->per_conn_kb = (rss_kb() - before) / MEM_CONNS;

    m->stalled = spawn_process(mem_stalled, NULL);
    wait_subscribed(ep, "stalled", DATA);
    /* Until it has stopped: it reads nothing from then on.  Polled, not
     * waited for: the loop must run meanwhile, to finish its handshake. */
    for (;;) {
        int st;
        pid_t w = waitpid(m->stalled, &st, WUNTRACED | WNOHANG);
        if (w == m->stalled && WIFSTOPPED(st))
            break;
        if (w != 0)
            die("stalled peer", -ECHILD);
        lahja_sleep(1);
    }
    lahja_peer_stats_t ps;
    if (lahja_peer_stats(ep, "stalled", &ps) == 0)
        m->high_water = ps.high_water; /* the default */
    uint8_t buf[MEM_EVENT] = { 0 };
    before = rss_kb();
    /* Sends until lahja_broadcast stays blocked for half a second: the
     * stalled peer's queue is at its high-water mark. */
    for (uint64_t i = 0; i < 10000000; i++) {
        memcpy(buf, &i, sizeof i);
        lahja_event_t *ev;
        rc = lahja_event_new(DATA, buf, sizeof buf, &ev);
        if (rc == 0)
            rc = lahja_broadcast(ep, ev, NULL, lahja_deadline_in(500));
        lahja_event_unref(ev);
        if (rc == -ETIMEDOUT)
            break;
        if (rc != 0)
            die("broadcast", rc);
        m->stalled_events++;
    }
    m->stalled_kb = rss_kb() - before;
    kill(m->stalled, SIGKILL);
    finish(ep);
    return 0;
}

static int cmd_mem(const char *label)
{
    struct mem_ctx m = { 0 };
    long base = rss_kb();
    int rc = lahja_run(mem_main, &m, NULL);
    if (rc != 0)
        return 1;
    int st;
    waitpid(m.stalled, &st, 0);
    if (!reap(&m.clients, 1))
        return 1;
    printf("MEM label=%s impl=%s scen=%s process_kb=%ld idle_kb=%ld per_conn_kb=%ld "
           "conns=%d stalled_kb=%ld stalled_events=%llu event_size=%d high_water_kb=%zu\n",
           label, env_or("PB_IMPL", "lahja"), env_or("PB_SCEN", "memory"), base, m.idle_kb,
           m.per_conn_kb, MEM_CONNS, m.stalled_kb, (unsigned long long)m.stalled_events,
           MEM_EVENT, m.high_water / 1024);
    return 0;
}

/* =============================================================== mesh */

#define MESH_ONE "mesh.One"
#define MESH_ALL "mesh.All"
#define MESH_QUIT "mesh.Quit"
#define MESH_K 20000
#define MESH_SIZE 64

struct mesh_ctx {
    int idx, n;
    int readyfd, gofd, resfd;
};

struct mesh_result {
    uint64_t connected_ns;
    uint64_t one_cpu_ns, all_cpu_ns, one_wall_ns, all_wall_ns;
};

/* Everybody connects to everybody with a lower index. */
static void mesh_connect(lahja_endpoint_t *ep, int idx, int n)
{
    lahja_conn_config_t cfgs[MAX_PROCS];
    for (int j = 0; j < idx; j++) {
        char name[32];
        name_of(name, sizeof name, "m", j);
        lahja_conn_config_from_name(&cfgs[j], name, dir);
    }
    int rc = idx > 0 ? lahja_connect(ep, cfgs, (size_t)idx, lahja_deadline_in(SETUP_MS)) : 0;
    while (rc == 0 && npeers(ep) < n - 1)
        rc = lahja_wait_until_connections_change(ep, lahja_deadline_in(SETUP_MS));
    if (rc != 0)
        die("mesh connect", rc);
}

/* Broadcasts MESH_K events of `type`, then asks each of `upto` peers
 * (m1..m<upto>) for an answer: they have them all then.  Returns the
 * CPU this process spent, and the wall time in *wall. */
static uint64_t mesh_phase(lahja_endpoint_t *ep, const char *type, int upto, uint64_t *wall)
{
    uint8_t buf[MESH_SIZE] = { 0 };
    uint64_t c0 = cpu_ns(), w0 = now_ns();
    lahja_time_t deadline = lahja_deadline_in(RUN_MS);
    for (uint64_t i = 0; i < MESH_K; i++) {
        int rc = send_seq(ep, type, buf, sizeof buf, i, NULL, deadline);
        if (rc != 0)
            die("mesh broadcast", rc);
    }
    for (int j = 1; j <= upto; j++) {
        char name[32];
        name_of(name, sizeof name, "m", j);
        lahja_broadcast_config_t cfg = { .filter_endpoint = name };
        int rc = round_trip(ep, buf, sizeof buf, 0, &cfg);
        if (rc != 0)
            die("mesh request", rc);
    }
    *wall = now_ns() - w0;
    return cpu_ns() - c0;
}

static int mesh_member(void *arg)
{
    struct mesh_ctx *m = arg;
    char name[32];
    name_of(name, sizeof name, "m", m->idx);
    lahja_endpoint_t *ep = endpoint(name, 1, NULL);
    uint64_t got = 0;
    lahja_subscription_t *s[4];
    int rc = 0;
    lahja_latch_t quit;
    lahja_latch_init(&quit);
    if (m->idx == 1)
        rc = lahja_subscribe(ep, MESH_ONE, count_event, &got, &s[0]);
    if (rc == 0 && m->idx > 0)
        rc = lahja_subscribe(ep, MESH_ALL, count_event, &got, &s[1]);
    if (rc == 0 && m->idx > 0)
        rc = lahja_subscribe(ep, REQ, answer, NULL, &s[2]);
    if (rc == 0 && m->idx > 0)
        rc = lahja_subscribe(ep, MESH_QUIT, on_end, &quit, &s[3]);
    if (rc != 0)
        die("subscribe", rc);
    char c = 'r';
    write_full(m->readyfd, &c, 1);
    if (read_full(m->gofd, &c, 1) != 0) /* everybody serves: go */
        _exit(1);
    mesh_connect(ep, m->idx, m->n);
    struct mesh_result r = { now_ns(), 0, 0, 0, 0 };
    if (m->idx == 0) {
        char peer[32];
        for (int j = 1; j < m->n; j++) {
            name_of(peer, sizeof peer, "m", j);
            wait_subscribed(ep, peer, MESH_ALL);
            wait_subscribed(ep, peer, REQ);
        }
        if (m->n > 1)
            wait_subscribed(ep, "m1", MESH_ONE);
        r.one_cpu_ns = mesh_phase(ep, MESH_ONE, 1, &r.one_wall_ns);
        r.all_cpu_ns = mesh_phase(ep, MESH_ALL, m->n - 1, &r.all_wall_ns);
        lahja_event_t *ev;
        rc = lahja_event_new(MESH_QUIT, NULL, 0, &ev);
        if (rc == 0)
            rc = lahja_broadcast(ep, ev, NULL, lahja_deadline_in(RUN_MS));
        lahja_event_unref(ev);
    } else {
        rc = lahja_latch_wait(&quit, lahja_deadline_in(RUN_MS * 2));
    }
    write_full(m->resfd, &r, sizeof r);
    finish(ep);
    return rc;
}

static int cmd_mesh(int n, const char *label)
{
    if (n < 2 || n > MAX_PROCS)
        return 2;
    int ready[2], go[2], res[2];
    if (pipe(ready) != 0 || pipe(go) != 0 || pipe(res) != 0)
        return 1;
    pid_t pids[MAX_PROCS];
    for (int i = 0; i < n; i++) {
        struct mesh_ctx m = { i, n, ready[1], go[0], res[1] };
        pids[i] = spawn_process(mesh_member, &m);
    }
    close(ready[1]);
    close(res[1]);
    for (int i = 0; i < n; i++) {
        char c;
        if (read_full(ready[0], &c, 1) != 0)
            return 1;
    }
    uint64_t t0 = now_ns();
    char gos[MAX_PROCS];
    memset(gos, 'g', sizeof gos);
    write_full(go[1], gos, (size_t)n);
    uint64_t connected = 0;
    struct mesh_result first = { 0 };
    for (int i = 0; i < n; i++) {
        struct mesh_result r;
        if (read_full(res[0], &r, sizeof r) != 0)
            return 1;
        connected = r.connected_ns > connected ? r.connected_ns : connected;
        if (r.one_cpu_ns != 0)
            first = r;
    }
    if (!reap(pids, n))
        return 1;
    int subs = n - 1;
    printf("MESH label=%s impl=%s scen=%s n=%d connect_ms=%.2f bcast_one_cpu_us=%.3f "
           "bcast_all_cpu_us=%.3f bcast_all_cpu_per_sub_us=%.3f one_rate=%.0f all_rate=%.0f\n",
           label, env_or("PB_IMPL", "lahja"), env_or("PB_SCEN", "mesh"), n,
           (double)(connected - t0) / 1e6, (double)first.one_cpu_ns / MESH_K / 1e3,
           (double)first.all_cpu_ns / MESH_K / 1e3,
           (double)first.all_cpu_ns / MESH_K / 1e3 / subs,
           first.one_wall_ns ? MESH_K / ((double)first.one_wall_ns / 1e9) : 0,
           first.all_wall_ns ? (double)MESH_K * subs / ((double)first.all_wall_ns / 1e9) : 0);
    return 0;
}

/* =============================================================== main */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_bus thr <nsubs> <n> <size> <dir> <label>\n"
            "       bench_bus lat <n> <size> <dir> <label>\n"
            "       bench_bus inflight <tasks> <n> <size> <dir> <label>\n"
            "       bench_bus seeds <consumers> <events> <dir> <label>\n"
            "       bench_bus seedsreq <consumers> <requests> <dir> <label>\n"
            "       bench_bus mem <dir> <label>\n"
            "       bench_bus mesh <N> <dir> <label>\n");
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    pin(0);
    alarm(600); /* a safety net: nothing here takes that long */
    loan_mode = getenv("LAHJA_BENCH_LOAN") != NULL && strcmp(getenv("LAHJA_BENCH_LOAN"), "1") == 0;
    nats_urls = getenv("LAHJA_BENCH_NATS");
    if (nats_urls != NULL && *nats_urls == '\0')
        nats_urls = NULL;
    snprintf(nats_prefix, sizeof nats_prefix, "bench%d", (int)getpid());
    const char *cmd = argc > 1 ? argv[1] : "";
    int rc = 2;
    if (!strcmp(cmd, "thr") && argc == 7) {
        dir = argv[5];
        rc = cmd_thr(atoi(argv[2]), strtoull(argv[3], NULL, 10), strtoul(argv[4], NULL, 10),
                     argv[6]);
    } else if (!strcmp(cmd, "lat") && argc == 6) {
        dir = argv[4];
        rc = cmd_lat(strtoull(argv[2], NULL, 10), strtoul(argv[3], NULL, 10), argv[5]);
    } else if (!strcmp(cmd, "inflight") && argc == 7) {
        dir = argv[5];
        rc = cmd_inflight(atoi(argv[2]), strtoull(argv[3], NULL, 10),
                          strtoul(argv[4], NULL, 10), argv[6]);
    } else if (!strcmp(cmd, "seeds") && argc == 6) {
        dir = argv[4];
        rc = cmd_seeds(atoi(argv[2]), strtoull(argv[3], NULL, 10), argv[5]);
    } else if (!strcmp(cmd, "seedsreq") && argc == 6) {
        dir = argv[4];
        rc = cmd_seedsreq(atoi(argv[2]), strtoull(argv[3], NULL, 10), argv[5]);
    } else if (!strcmp(cmd, "mem") && argc == 4) {
        dir = argv[2];
        rc = cmd_mem(argv[3]);
    } else if (!strcmp(cmd, "mesh") && argc == 5) {
        dir = argv[3];
        rc = cmd_mesh(atoi(argv[2]), argv[4]);
    }
    if (rc == 2)
        usage();
    else if (rc != 0)
        fprintf(stderr, "bench_bus %s: failed\n", cmd);
    return rc;
}
