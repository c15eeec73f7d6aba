/*
 * chaos: the delivery contract (spec/bus.md B30) under SIGKILL.
 *
 * N processes c0..c{N-1}, each serving one endpoint in a fresh temporary
 * directory, form a full mesh: every process keeps every other connected
 * (lahja_keep_connected), so that simultaneous connects are the rule, and
 * a restarted process is connected again by the endpoints themselves.  Each sends numbered events
 * to every peer, one peer at a time (filter_endpoint), and makes requests
 * to random peers.  The parent kills processes c2..c{N-1} with SIGKILL at
 * random moments and starts them again as a new generation; c0 and c1
 * live to the end.  Then every process stops sending, waits until its
 * peers have confirmed what it sent (lahja_wait_until_delivered), writes
 * its figures and exits.
 *
 * What each process records lives in a shared anonymous mapping made
 * before the first fork, so that it survives SIGKILL:
 *  - receivers, per (receiver incarnation, sender incarnation): the first
 *    and last sequence number seen, how many, and every number that was
 *    not last + 1 (a hole, a duplicate, a reordering).  A receipt goes
 *    out after the handler returns, so an event its sender counts as
 *    confirmed is always recorded here;
 *  - senders, per (sender incarnation, receiver slot): the last sequence
 *    number whose broadcast returned 0, and lahja_delivery_stats for that
 *    peer (sent, confirmed, lost), every 100 ms and after the final wait.
 *
 * The verdict:
 *  (a) no receiver incarnation saw a hole, a duplicate or a reordering,
 *      nor an event meant for another endpoint;
 *  (b) a sender that lived to the end: for every receiver name, the
 *      events missing (sent minus received by every incarnation of that
 *      receiver) are at most the losses it reported for that peer;
 *  (c) between c0 and c1, both ways: nothing missing, nothing lost;
 *  (d) a sender that was killed: what it sent and nobody received is only
 *      a tail, or events sent to a receiver incarnation that died; never
 *      events missing before others that arrived at the same receiver
 *      incarnation.  The tail a killed process still had queued goes with
 *      it: that loss is the killed process's, and nobody is left to
 *      report it;
 *  (e) every process exited 0, except those killed;
 *  (f) c0 and c1 end with no more open descriptors than they had once
 *      the first full mesh was up (a connection that lost a simultaneous
 *      connect may still have been closing then), their resident memory
 *      grew by less than 16 MiB, none of their broadcasts failed but for
 *      want of a subscriber, and no request between them failed;
 * and, along the way, a connection never becomes visible without
 * lahja_wait_until_connections_change waking its waiters.
 *
 *   chaos [--procs N] [--seconds S] [--seed X] [--rate EV_PER_S]
 *         [--kill-ms MIN:MAX] [--verbose]
 *
 * A long run by hand: chaos --seconds 600 --procs 12.  The seed is
 * printed; --seed replays the same kill schedule (the processes'
 * interleaving is the machine's).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <lahja/lahja.h>

#define MAX_PROCS 32
#define MIN_PROCS 6
#define NEVER_KILLED 2 /* slots 0 and 1 */

#define EV_TYPE "chaos.ev"
#define REQ_TYPE "chaos.req"
#define RESP_TYPE "chaos.resp"

#define BURST 10                /* events per peer per round */
#define BROADCAST_MS 10000      /* a broadcast's deadline */
#define REQUEST_MS 10000        /* a request's deadline */
#define REQUEST_GAP_MS 10       /* between a process's requests */
#define STATS_MS 100            /* delivery figures written this often */
#define PHASE_MS 30000          /* a phase of the end, for every process */
#define GRACE_MS 10000          /* the parent's wait beyond: a process that
                                   fails reports it before being called hung */
#define FD_SETTLE_MS 2000       /* for a closing connection's descriptor */
#define RSS_GROWTH_MAX (16u << 20)

/* AddressSanitizer keeps freed memory in quarantine (up to 256 MiB):
 * resident memory then says nothing about ours, and LeakSanitizer checks
 * every process at its exit instead. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_CHECKED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_CHECKED 0
#endif
#endif
#ifndef RSS_CHECKED
#define RSS_CHECKED 1
#endif

/* Where the child finds its pipes (see child_fds). */
#define CTL_FD 3 /* the parent writes a byte at each phase */
#define REP_FD 4 /* the child writes a byte at each state it reaches */

/* ------------------------------------------------------------ records */

enum phase { PH_START, PH_RUN, PH_MESH, PH_QUIET, PH_DRAIN, PH_EXIT };

/* What a child reached, bits of inc.state. */
enum {
    ST_MESHED_START = 1, /* connected to every peer, gen 0 */
    ST_MESHED_END = 2,   /* connected to every peer at the end */
    ST_QUIET = 4,        /* sends and requests nothing more */
    ST_DRAINED = 8,      /* waited until delivered, figures written */
    ST_FAILED = 16       /* something it checks itself failed */
};

/* One sender incarnation towards one receiver slot. */
struct peer_rec {
    uint64_t sent_ok; /* the last sequence number whose broadcast returned 0 */
    uint64_t st_sent, st_confirmed, st_lost; /* lahja_delivery_stats */
    uint32_t st_valid;                       /* read at least once */
    uint32_t st_final;                       /* read after the final wait */
    uint64_t req_ok, req_failed;             /* our requests to that peer */
    int32_t req_last_err;
    int32_t bc_last_err; /* a broadcast error other than "no subscribers" */
    uint64_t bc_errors;
};

/* One incarnation of a slot: a process. */
struct inc {
    int32_t slot, gen, pid;
    int32_t state;   /* ST_* bits, written by the child */
    int32_t killed;  /* by the parent */
    int32_t reaped;  /* the parent has its wait status */
    int32_t status;  /* the wait status */
    int32_t hung;    /* killed because it missed a phase's deadline */
    int32_t drain_rc;
    int32_t peer_gen_at_birth[MAX_PROCS]; /* each peer's generation when it was forked */
    int64_t fd_base, fd_end, rss_base, rss_end;
    uint64_t reconnects; /* kept connections that came back, over the peers */
    uint64_t misdelivered; /* events with a payload not meant for us */
    uint64_t missed_wakeups; /* fully connected, yet the connection wait went on */
    char fail_msg[240];
    struct peer_rec peer[MAX_PROCS];
};

/* One receiver incarnation's view of one sender incarnation. */
struct rrec {
    int32_t rslot, rgen, sslot, sgen;
    uint64_t first, last, count;
    uint64_t holes, dups; /* seq > last + 1; seq <= last */
    uint64_t bad_seq, bad_last; /* the first violation: what came after what */
};

struct shm {
    uint32_t nprocs, max_incs, max_recs;
    int32_t phase;
    uint32_t n_recs; /* atomic: receivers take records from the pool */
    uint32_t recs_overflow;
};

static struct shm *shm;
static struct inc *incs;
static struct rrec *recs;
static size_t shm_size;

/* The event's payload. */
struct chaos_ev {
    uint32_t slot, gen, to, pad;
    uint64_t seq;
};

/* ------------------------------------------------------------ options */

static struct {
    int procs;
    double seconds;
    uint64_t seed;
    int rate; /* events per second, per pair */
    int kill_min_ms, kill_max_ms;
    int verbose;
} opt = { 8, 30, 0, 1000, 100, 800, 0 };

static char base_dir[64];

static uint64_t rnd_next(uint64_t *s)
{
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t rnd_mix(uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t s = seed ^ (a * 0x9E3779B97F4A7C15ULL) ^ (b * 0xC2B2AE3D27D4EB4FULL);
    return s != 0 ? s : 1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void slot_name(char *buf, size_t len, int slot)
{
    snprintf(buf, len, "c%d", slot);
}

/* Descriptors open in this process. */
static int64_t fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -1;
    int64_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own */
}

/* Resident memory in bytes. */
static int64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return -1;
    long size = 0, resident = 0;
    int ok = fscanf(f, "%ld %ld", &size, &resident) == 2;
    fclose(f);
    return ok ? (int64_t)resident * sysconf(_SC_PAGESIZE) : -1;
}

/* =================================================================== child */

struct child;

struct peer_task {
    struct child *c;
    int p; /* the peer's slot */
};

struct child {
    int slot, gen, nprocs;
    struct inc *inc;
    lahja_endpoint_t *ep;
    char name[MAX_PROCS][16];
    lahja_conn_config_t cfg[MAX_PROCS];
    struct peer_task pt[MAX_PROCS];
    uint64_t rnd;
    int stop_sending; /* senders and the requester end their loop */
    int stop_stats;
    /* Receiver records of this incarnation, by sender slot then sender
     * generation: index + 1 into recs, 0 for none yet. */
    uint32_t *rec_of[MAX_PROCS];
    uint32_t rec_cap[MAX_PROCS];
};

static void child_fail(struct child *c, const char *fmt, ...)
{
    char msg[240];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "chaos: c%d gen %d: %s\n", c->slot, c->gen, msg);
    if (c->inc->fail_msg[0] == '\0')
        snprintf(c->inc->fail_msg, sizeof c->inc->fail_msg, "%s", msg);
    __atomic_fetch_or(&c->inc->state, ST_FAILED, __ATOMIC_SEQ_CST);
}

static void report(struct child *c, int bit)
{
    __atomic_fetch_or(&c->inc->state, bit, __ATOMIC_SEQ_CST);
    char b = (char)bit;
    while (write(REP_FD, &b, 1) < 0 && errno == EINTR)
        ;
}

static void log_fn(void *user, lahja_log_level_t level, const char *endpoint, const char *msg)
{
    (void)user;
    if (opt.verbose && level >= LAHJA_LOG_WARNING)
        fprintf(stderr, "[%s pid %d] %s\n", endpoint, (int)getpid(), msg);
}

/* The record of sender (sslot, sgen) in this receiver incarnation. */
static struct rrec *rec_for(struct child *c, uint32_t sslot, uint32_t sgen)
{
    if (sgen >= c->rec_cap[sslot]) {
        uint32_t cap = c->rec_cap[sslot] ? c->rec_cap[sslot] : 16;
        while (cap <= sgen)
            cap *= 2;
        uint32_t *p = realloc(c->rec_of[sslot], cap * sizeof *p);
        if (p == NULL)
            return NULL;
        memset(p + c->rec_cap[sslot], 0, (cap - c->rec_cap[sslot]) * sizeof *p);
        c->rec_of[sslot] = p;
        c->rec_cap[sslot] = cap;
    }
    uint32_t i = c->rec_of[sslot][sgen];
    if (i == 0) {
        uint32_t n = __atomic_fetch_add(&shm->n_recs, 1, __ATOMIC_SEQ_CST);
        if (n >= shm->max_recs) {
            __atomic_fetch_add(&shm->recs_overflow, 1, __ATOMIC_SEQ_CST);
            return NULL;
        }
        struct rrec *r = &recs[n];
        r->rslot = c->slot;
        r->rgen = c->gen;
        r->sslot = (int32_t)sslot;
        r->sgen = (int32_t)sgen;
        i = n + 1;
        c->rec_of[sslot][sgen] = i;
    }
    return &recs[i - 1];
}

/* Records every event before returning: its receipt leaves after us. */
static int on_event(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct child *c = user;
    size_t len = 0;
    const void *p = lahja_event_payload(ev, &len);
    struct chaos_ev w;
    const char *origin = lahja_event_origin(ev);
    if (len != sizeof w || origin == NULL) {
        c->inc->misdelivered++;
        return 0;
    }
    memcpy(&w, p, sizeof w);
    char want[16];
    if (w.slot >= (uint32_t)c->nprocs || w.to != (uint32_t)c->slot) {
        c->inc->misdelivered++;
        return 0;
    }
    slot_name(want, sizeof want, (int)w.slot);
    if (strcmp(origin, want) != 0) {
        c->inc->misdelivered++;
        return 0;
    }
    struct rrec *r = rec_for(c, w.slot, w.gen);
    if (r == NULL)
        return 0;
    if (r->count == 0) {
        r->first = w.seq;
    } else if (w.seq != r->last + 1) {
        if (r->holes + r->dups == 0) {
            r->bad_seq = w.seq;
            r->bad_last = r->last;
        }
        if (w.seq > r->last + 1)
            r->holes++;
        else
            r->dups++;
    }
    r->last = w.seq;
    r->count++;
    return 0;
}

/* Answers a request with its own payload. */
static int on_request(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)user;
    size_t len = 0;
    const void *p = lahja_event_payload(ev, &len);
    lahja_event_t *resp = NULL;
    int rc = lahja_event_new(RESP_TYPE, p, len, &resp);
    if (rc == 0)
        rc = lahja_respond(ep, ev, resp);
    lahja_event_unref(resp);
    return rc;
}

static int ended(int rc)
{
    return rc == -ECANCELED || rc == LAHJA_ELIFECYCLE;
}

/* How each process keeps the others connected: a restarted peer is
 * back within tens of milliseconds. */
static const lahja_reconnect_options_t reconnect = { .min_ms = 5, .max_ms = 50 };

/* Sends numbered events to one peer, BURST at a time. */
static int sender_task(void *arg)
{
    struct peer_task *t = arg;
    struct child *c = t->c;
    struct peer_rec *pr = &c->inc->peer[t->p];
    lahja_broadcast_config_t cfg = { .filter_endpoint = c->name[t->p] };
    uint64_t gap_ms = (uint64_t)(1000 * BURST / opt.rate);
    if (gap_ms == 0)
        gap_ms = 1;
    while (!c->stop_sending) {
        if (!lahja_is_endpoint_subscribed_to(c->ep, c->name[t->p], EV_TYPE)) {
            int rc = lahja_wait_until_endpoint_subscribed_to(c->ep, c->name[t->p], EV_TYPE,
                                                             lahja_deadline_in(200));
            if (rc != 0 && rc != -ETIMEDOUT)
                return ended(rc) ? 0 : rc;
            continue;
        }
        for (int i = 0; i < BURST && !c->stop_sending; i++) {
            struct chaos_ev w = { (uint32_t)c->slot, (uint32_t)c->gen, (uint32_t)t->p, 0,
                                  pr->sent_ok + 1 };
            int rc = lahja_broadcast_bytes(c->ep, EV_TYPE, &w, sizeof w, &cfg,
                                           lahja_deadline_in(BROADCAST_MS));
            if (rc == 0) {
                pr->sent_ok = w.seq;
                continue;
            }
            if (rc != LAHJA_ENOSUBSCRIBERS) {
                pr->bc_errors++;
                pr->bc_last_err = rc;
            }
            break;
        }
        int rc = lahja_sleep(gap_ms);
        if (rc != 0)
            return ended(rc) ? 0 : rc;
    }
    return 0;
}

/* Requests from random peers, one at a time. */
static int requester_task(void *arg)
{
    struct child *c = arg;
    while (!c->stop_sending) {
        int cand[MAX_PROCS], n = 0;
        for (int p = 0; p < c->nprocs; p++)
            if (p != c->slot && lahja_is_endpoint_subscribed_to(c->ep, c->name[p], REQ_TYPE))
                cand[n++] = p;
        if (n > 0) {
            int p = cand[rnd_next(&c->rnd) % (uint64_t)n];
            uint64_t nonce = rnd_next(&c->rnd);
            lahja_event_t *q = NULL, *a = NULL;
            int rc = lahja_request_new(REQ_TYPE, RESP_TYPE, &nonce, sizeof nonce, &q);
            if (rc == 0) {
                lahja_broadcast_config_t cfg = { .filter_endpoint = c->name[p] };
                rc = lahja_request(c->ep, q, &cfg, lahja_deadline_in(REQUEST_MS), &a);
            }
            if (rc == 0) {
                size_t len = 0;
                const void *pl = lahja_event_payload(a, &len);
                if (len != sizeof nonce || memcmp(pl, &nonce, len) != 0 ||
                    strcmp(lahja_event_origin(a), c->name[p]) != 0)
                    rc = -EPROTO;
            }
            lahja_event_unref(a);
            lahja_event_unref(q);
            if (rc == 0) {
                c->inc->peer[p].req_ok++;
            } else {
                c->inc->peer[p].req_failed++;
                c->inc->peer[p].req_last_err = rc;
                if (ended(rc))
                    return 0;
            }
        }
        int rc = lahja_sleep(REQUEST_GAP_MS);
        if (rc != 0)
            return ended(rc) ? 0 : rc;
    }
    return 0;
}

static void write_stats(struct child *c, int final)
{
    uint64_t reconnects = 0;
    for (int p = 0; p < c->nprocs; p++) {
        if (p == c->slot)
            continue;
        lahja_peer_info_t info;
        if (lahja_peer_info(c->ep, c->name[p], &info) == 0)
            reconnects += info.reconnects;
        lahja_delivery_t d;
        if (lahja_delivery_stats(c->ep, c->name[p], &d) != 0)
            continue; /* never connected to it */
        struct peer_rec *pr = &c->inc->peer[p];
        pr->st_sent = d.sent;
        pr->st_confirmed = d.confirmed;
        pr->st_lost = d.lost;
        pr->st_valid = 1;
        pr->st_final = final;
    }
    c->inc->reconnects = reconnects;
}

/* Writes the delivery figures every STATS_MS. */
static int stats_task(void *arg)
{
    struct child *c = arg;
    while (!c->stop_stats) {
        write_stats(c, 0);
        int rc = lahja_sleep(STATS_MS);
        if (rc != 0)
            return ended(rc) ? 0 : rc;
    }
    return 0;
}

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

static int meshed(struct child *c)
{
    for (int p = 0; p < c->nprocs; p++)
        if (p != c->slot && !lahja_is_connected_to(c->ep, c->name[p]))
            return 0;
    return 1;
}

/* Waits until connected to every peer; says which are missing if not. */
static int wait_meshed(struct child *c, lahja_time_t deadline, const char *what)
{
    while (!meshed(c)) {
        lahja_time_t slice = lahja_deadline_in(200);
        int rc = lahja_wait_until_connections_change(c->ep, slice < deadline ? slice : deadline);
        if (rc == -ETIMEDOUT && lahja_now() < deadline) {
            /* Connected to every peer, and nobody woke us: a connection
             * that became visible without a change being announced. */
            if (meshed(c))
                c->inc->missed_wakeups++;
            continue;
        }
        if (rc != 0) {
            /* Each missing peer, with what its last attempt said. */
            char missing[160] = "";
            for (int p = 0; p < c->nprocs; p++) {
                lahja_peer_info_t info;
                if (p == c->slot || lahja_is_connected_to(c->ep, c->name[p]) ||
                    lahja_peer_info(c->ep, c->name[p], &info) != 0 ||
                    strlen(missing) + 40 >= sizeof missing)
                    continue;
                sprintf(missing + strlen(missing), " %s (%s)", c->name[p],
                        lahja_err_name(info.last_error));
            }
            child_fail(c, "%s: %s; not connected to%s", what, lahja_err_name(rc), missing);
            return rc;
        }
    }
    return 0;
}

static int join_all(lahja_task_t **tasks, int n, lahja_time_t deadline)
{
    for (int i = 0; i < n; i++) {
        if (tasks[i] == NULL)
            continue;
        int result = 0;
        int rc = lahja_task_join(tasks[i], deadline, &result);
        if (rc != 0)
            return rc;
        if (result != 0 && !ended(result))
            return result;
    }
    return 0;
}

/* The phases of the end, as the parent announces them. */
static int child_phases(struct child *c, lahja_task_t **senders, lahja_task_t *requester,
                        lahja_task_t *stats)
{
    int done = PH_START;
    if (c->gen == 0) {
        int rc = wait_meshed(c, lahja_deadline_in(PHASE_MS), "first full mesh");
        if (rc != 0)
            return rc;
        report(c, ST_MESHED_START);
    } else {
        done = PH_RUN; /* born while running */
    }
    for (;;) {
        int phase = __atomic_load_n(&shm->phase, __ATOMIC_SEQ_CST);
        if (phase <= done) {
            char b;
            int rc = wait_readable(CTL_FD);
            if (rc != 0)
                return rc;
            ssize_t r = read(CTL_FD, &b, 1);
            if (r == 0) {
                child_fail(c, "the parent went away");
                return -EPIPE;
            }
            continue;
        }
        if (phase == PH_EXIT)
            return 0; /* also when the parent gave up before the end */
        int next = done + 1;
        int rc = 0;
        switch (next) {
        case PH_RUN:
            c->inc->fd_base = fd_count();
            c->inc->rss_base = rss_bytes();
            break;
        case PH_MESH:
            rc = wait_meshed(c, lahja_deadline_in(PHASE_MS), "full mesh at the end");
            if (rc != 0)
                return rc;
            report(c, ST_MESHED_END);
            break;
        case PH_QUIET: {
            c->stop_sending = 1;
            lahja_time_t deadline = lahja_deadline_in(PHASE_MS);
            rc = join_all(senders, c->nprocs, deadline);
            if (rc == 0)
                rc = join_all(&requester, 1, deadline);
            for (int p = 0; p < c->nprocs; p++) /* connected to all: no more attempts */
                if (p != c->slot && rc == 0)
                    rc = lahja_stop_keeping(c->ep, c->name[p]);
            if (rc != 0) {
                child_fail(c, "quiet: %s", lahja_err_name(rc));
                return rc;
            }
            report(c, ST_QUIET);
            break;
        }
        case PH_DRAIN: {
            c->inc->drain_rc = lahja_wait_until_delivered(c->ep, lahja_deadline_in(PHASE_MS));
            c->stop_stats = 1;
            lahja_task_cancel(stats);
            rc = join_all(&stats, 1, lahja_deadline_in(PHASE_MS));
            write_stats(c, 1);
            /* A connection that lost the simultaneous connect may still be
             * closing: its descriptor goes within moments. */
            lahja_time_t settle = lahja_deadline_in(FD_SETTLE_MS);
            int64_t fds = fd_count();
            while (c->inc->fd_base > 0 && fds > c->inc->fd_base && lahja_now() < settle) {
                if (lahja_sleep(20) != 0)
                    break;
                fds = fd_count();
            }
            c->inc->fd_end = fds;
            c->inc->rss_end = rss_bytes();
            if (rc != 0) {
                child_fail(c, "drain: %s", lahja_err_name(rc));
                return rc;
            }
            report(c, ST_DRAINED);
            break;
        }
        }
        done = next;
    }
}

static int child_main(void *arg)
{
    struct child *c = arg;
    lahja_endpoint_options_t o = { .log = log_fn };
    int rc = lahja_endpoint_new(c->name[c->slot], &o, &c->ep);
    if (rc == 0)
        rc = lahja_endpoint_start(c->ep, &c->cfg[c->slot]);
    if (rc != 0) {
        child_fail(c, "start: %s", lahja_err_name(rc));
        lahja_endpoint_free(c->ep);
        return rc;
    }
    lahja_subscription_t *evs = NULL, *reqs = NULL;
    rc = lahja_subscribe(c->ep, EV_TYPE, on_event, c, &evs);
    if (rc == 0)
        rc = lahja_subscribe(c->ep, REQ_TYPE, on_request, NULL, &reqs);

    lahja_nursery_t *n = NULL;
    lahja_task_t *senders[MAX_PROCS] = { 0 };
    lahja_task_t *requester = NULL, *stats = NULL;
    if (rc == 0)
        rc = lahja_nursery_open(&n);
    if (rc == 0) {
        for (int p = 0; p < c->nprocs && rc == 0; p++) {
            if (p == c->slot)
                continue;
            c->pt[p] = (struct peer_task){ c, p };
            rc = lahja_keep_connected(c->ep, &c->cfg[p], &reconnect);
            if (rc == 0)
                rc = lahja_nursery_spawn(n, sender_task, &c->pt[p], NULL, &senders[p]);
        }
        if (rc == 0)
            rc = lahja_nursery_spawn(n, requester_task, c, NULL, &requester);
        if (rc == 0)
            rc = lahja_nursery_spawn(n, stats_task, c, NULL, &stats);
        if (rc == 0)
            rc = child_phases(c, senders, requester, stats);
        /* Normally every task has ended by now; not so when the parent
         * gave up before the end. */
        lahja_nursery_cancel(n);
        int jrc = lahja_nursery_close(n);
        if (rc == 0 && jrc != 0) {
            child_fail(c, "a task failed: %s", lahja_err_name(jrc));
            rc = jrc;
        }
    } else {
        child_fail(c, "setting up: %s", lahja_err_name(rc));
    }
    lahja_subscription_cancel(evs);
    lahja_subscription_cancel(reqs);
    int src = lahja_endpoint_stop(c->ep);
    if (src != 0 && rc == 0) {
        child_fail(c, "stop: %s", lahja_err_name(src));
        rc = src;
    }
    lahja_endpoint_free(c->ep);
    return rc;
}

/* In the child: the control pipe at CTL_FD, the report pipe at REP_FD,
 * nothing else of the parent's but stdio. */
static void child_fds(int ctl, int rep)
{
    int a = fcntl(ctl, F_DUPFD_CLOEXEC, 100);
    int b = fcntl(rep, F_DUPFD_CLOEXEC, 100);
    if (a < 0 || b < 0 || dup2(a, CTL_FD) < 0 || dup2(b, REP_FD) < 0)
        _exit(97);
    close_range(REP_FD + 1, ~0u, 0);
}

static void child_run(int slot, int gen, struct inc *inc, pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(96);
    alarm((unsigned)opt.seconds + 300); /* past every deadline of the parent */
    static struct child c;
    memset(&c, 0, sizeof c);
    c.slot = slot;
    c.gen = gen;
    c.nprocs = opt.procs;
    c.inc = inc;
    c.rnd = rnd_mix(opt.seed, (uint64_t)slot + 1, (uint64_t)gen + 1);
    for (int p = 0; p < c.nprocs; p++) {
        slot_name(c.name[p], sizeof c.name[p], p);
        if (lahja_conn_config_from_name(&c.cfg[p], c.name[p], base_dir) != 0)
            _exit(95);
    }
    int rc = lahja_run(child_main, &c, NULL);
    for (int p = 0; p < MAX_PROCS; p++)
        free(c.rec_of[p]);
    fflush(NULL);
    exit(rc == 0 ? 0 : 3);
}

/* ================================================================== parent */

struct slot_state {
    int inc;    /* its current incarnation */
    int gen;    /* its current generation */
    pid_t pid;  /* 0: none running */
    int ctl_w;  /* our end of its control pipe */
    int rep_r;  /* our end of its report pipe */
};

static struct slot_state slots[MAX_PROCS];
static uint32_t n_incs;
static int kills, unexpected_exits, incs_exhausted;

static int spawn_slot(int slot)
{
    if (n_incs >= shm->max_incs) {
        incs_exhausted = 1;
        return -1;
    }
    struct slot_state *s = &slots[slot];
    int idx = (int)n_incs++;
    struct inc *inc = &incs[idx];
    inc->slot = slot;
    inc->gen = s->pid == 0 && s->inc < 0 ? 0 : s->gen + 1;
    for (int p = 0; p < opt.procs; p++)
        inc->peer_gen_at_birth[p] = p == slot ? inc->gen : slots[p].gen;
    int ctl[2], rep[2];
    if (pipe2(ctl, O_CLOEXEC) != 0 || pipe2(rep, O_CLOEXEC) != 0) {
        perror("chaos: pipe");
        exit(2);
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        perror("chaos: fork");
        exit(2);
    }
    if (pid == 0) {
        child_fds(ctl[0], rep[1]);
        child_run(slot, inc->gen, inc, parent);
    }
    close(ctl[0]);
    close(rep[1]);
    fcntl(rep[0], F_SETFL, O_NONBLOCK);
    inc->pid = pid;
    s->inc = idx;
    s->gen = inc->gen;
    s->pid = pid;
    s->ctl_w = ctl[1];
    s->rep_r = rep[0];
    return 0;
}

/* Reaps the slot's process (it has exited or been killed). */
static void reap_slot(int slot)
{
    struct slot_state *s = &slots[slot];
    struct inc *inc = &incs[s->inc];
    int status = 0;
    pid_t r;
    while ((r = waitpid(s->pid, &status, 0)) < 0 && errno == EINTR)
        ;
    inc->reaped = 1;
    inc->status = status;
    close(s->ctl_w);
    close(s->rep_r);
    s->pid = 0;
    s->ctl_w = s->rep_r = -1;
}

static void notify_all(int phase)
{
    __atomic_store_n(&shm->phase, phase, __ATOMIC_SEQ_CST);
    for (int i = 0; i < opt.procs; i++) {
        if (slots[i].pid == 0)
            continue;
        char b = (char)phase;
        while (write(slots[i].ctl_w, &b, 1) < 0 && errno == EINTR)
            ;
    }
}

/* What an exit that no kill caused means to pump(). */
enum exit_mode {
    DEATH_RESTART, /* during the run: a failure; the slot is started again */
    DEATH_FAILS, /* in the end phases: a failure */
    DEATH_EXPECTED /* told to exit */
};

/*
 * Reads what the children report until `until_ms` (monotonic) or, with
 * want_bit, until every process still running has that state bit.  A
 * process that exits is reaped.  Returns 1 once every slot's process has
 * want_bit; 0 if some slot has none left then, at the deadline, or when
 * no process is left.
 */
static int pump(int64_t until_ms, int want_bit, enum exit_mode mode)
{
    for (;;) {
        if (want_bit) {
            int all = 1, gone = 0;
            for (int i = 0; i < opt.procs; i++) {
                if (slots[i].pid == 0)
                    gone = 1;
                else if (!(__atomic_load_n(&incs[slots[i].inc].state, __ATOMIC_SEQ_CST) &
                           want_bit))
                    all = 0;
            }
            if (all)
                return !gone;
        }
        int64_t left = until_ms - mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd pfd[MAX_PROCS];
        int who[MAX_PROCS], n = 0;
        for (int i = 0; i < opt.procs; i++) {
            if (slots[i].pid == 0)
                continue;
            pfd[n] = (struct pollfd){ .fd = slots[i].rep_r, .events = POLLIN };
            who[n++] = i;
        }
        if (n == 0)
            return 0;
        int r = poll(pfd, (nfds_t)n, (int)left);
        if (r < 0 && errno != EINTR) {
            perror("chaos: poll");
            exit(2);
        }
        for (int k = 0; k < n && r > 0; k++) {
            if (pfd[k].revents == 0)
                continue;
            char buf[64];
            ssize_t got = read(pfd[k].fd, buf, sizeof buf);
            if (got > 0 || (got < 0 && (errno == EAGAIN || errno == EINTR)))
                continue;
            int slot = who[k];
            struct inc *inc = &incs[slots[slot].inc];
            reap_slot(slot);
            if (mode == DEATH_EXPECTED)
                continue;
            unexpected_exits++;
            fprintf(stderr, "chaos: c%d gen %d exited on its own (status 0x%x)%s%s\n", slot,
                    inc->gen, inc->status, inc->fail_msg[0] ? ": " : "", inc->fail_msg);
            if (mode == DEATH_RESTART)
                spawn_slot(slot);
        }
    }
}

static void kill_one(uint64_t *rnd)
{
    int cand[MAX_PROCS], n = 0;
    for (int i = NEVER_KILLED; i < opt.procs; i++)
        if (slots[i].pid != 0)
            cand[n++] = i;
    if (n == 0)
        return;
    int slot = cand[rnd_next(rnd) % (uint64_t)n];
    struct inc *inc = &incs[slots[slot].inc];
    kill(slots[slot].pid, SIGKILL);
    inc->killed = 1;
    reap_slot(slot);
    kills++;
    spawn_slot(slot);
}

/* Kills whatever still runs after a missed deadline. */
static void kill_hung(const char *phase, int want_bit)
{
    for (int i = 0; i < opt.procs; i++) {
        if (slots[i].pid == 0)
            continue;
        struct inc *inc = &incs[slots[i].inc];
        if (want_bit && (__atomic_load_n(&inc->state, __ATOMIC_SEQ_CST) & want_bit))
            continue;
        fprintf(stderr, "chaos: c%d gen %d (pid %d) hung: no %s within %d s; killed\n", i,
                inc->gen, (int)slots[i].pid, phase, (PHASE_MS + GRACE_MS) / 1000);
        inc->hung = 1;
        kill(slots[i].pid, SIGKILL);
        reap_slot(i);
    }
}

/* ---------------------------------------------------------------- verdict */

/* The checks, by name, with how many times each failed. */
static const char *const check_names[] = { "a", "b", "c", "d", "e", "f", "waits", "records" };
#define NCHECKS (sizeof check_names / sizeof check_names[0])
#define LINES_PER_CHECK 10
static int failures, failed[NCHECKS];

static void fail(const char *check, const char *fmt, ...)
{
    size_t k = 0;
    while (k + 1 < NCHECKS && strcmp(check_names[k], check) != 0)
        k++;
    if (failed[k]++ < LINES_PER_CHECK) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "chaos: FAIL (%s) ", check);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    failures++;
}

static int cmp_rec(const void *a, const void *b)
{
    const struct rrec *x = &recs[*(const uint32_t *)a], *y = &recs[*(const uint32_t *)b];
    if (x->sslot != y->sslot)
        return x->sslot < y->sslot ? -1 : 1;
    if (x->sgen != y->sgen)
        return x->sgen < y->sgen ? -1 : 1;
    if (x->rslot != y->rslot)
        return x->rslot < y->rslot ? -1 : 1;
    if (x->rgen != y->rgen)
        return x->rgen < y->rgen ? -1 : 1;
    return 0;
}

/* The first of the sorted records from (sslot, sgen) to rslot (or where
 * it would be). */
static uint32_t group_start(const uint32_t *order, uint32_t m, int sslot, int sgen, int rslot)
{
    uint32_t lo = 0, hi = m;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const struct rrec *r = &recs[order[mid]];
        int before = r->sslot != sslot   ? r->sslot < sslot
                     : r->sgen != sgen   ? r->sgen < sgen
                                         : r->rslot < rslot;
        if (before)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A process that lived to the end and finished every phase. */
static int lived_to_end(const struct inc *inc)
{
    return !inc->killed && !inc->hung && inc->reaped && WIFEXITED(inc->status) &&
           WEXITSTATUS(inc->status) == 0 && (inc->state & ST_DRAINED);
}

static struct {
    uint64_t sent, received, silent, reported_lost, req_ok, req_failed;
    uint64_t reconnects;
} sum;

static void verdict(void)
{
    uint32_t nrec = shm->n_recs < shm->max_recs ? shm->n_recs : shm->max_recs;
    if (shm->recs_overflow)
        fail("records", "the receivers' record pool (%u) overflowed %u times", shm->max_recs,
             shm->recs_overflow);
    if (incs_exhausted)
        fail("records", "the process table (%u) was full: kills stopped early", shm->max_incs);

    /* (a) and the records sorted by sender incarnation, then receiver. */
    uint32_t *order = malloc((nrec ? nrec : 1) * sizeof *order);
    uint32_t m = 0;
    for (uint32_t i = 0; i < nrec; i++) {
        struct rrec *r = &recs[i];
        if (r->count == 0)
            continue; /* killed before its first event was recorded */
        sum.received += r->count;
        if (r->holes || r->dups)
            fail("a", "c%d gen %d received from c%d gen %d: %" PRIu64 " holes, %" PRIu64
                      " duplicates or reorderings (first: %" PRIu64 " after %" PRIu64 ")",
                 r->rslot, r->rgen, r->sslot, r->sgen, r->holes, r->dups, r->bad_seq,
                 r->bad_last);
        order[m++] = i;
    }
    qsort(order, m, sizeof *order, cmp_rec);
    for (uint32_t i = 0; i < n_incs; i++)
        if (incs[i].misdelivered)
            fail("a", "c%d gen %d received %" PRIu64 " events not meant for it",
                 incs[i].slot, incs[i].gen, incs[i].misdelivered);

    /* (b), (c), (d): every sender incarnation towards every receiver slot. */
    for (uint32_t si = 0; si < n_incs; si++) {
        struct inc *s = &incs[si];
        int lived = lived_to_end(s);
        for (int rs = 0; rs < opt.procs; rs++) {
            sum.req_ok += s->peer[rs].req_ok;
            sum.req_failed += s->peer[rs].req_failed;
            if (rs == s->slot)
                continue;
            struct peer_rec *pr = &s->peer[rs];
            uint64_t sent = pr->sent_ok;
            sum.sent += sent;
            if (pr->st_valid)
                sum.reported_lost += pr->st_lost;
            /* The group of records (s, rs), in receiver generation order. */
            uint32_t g0 = group_start(order, m, s->slot, s->gen, rs), g1 = g0;
            while (g1 < m && recs[order[g1]].sslot == s->slot && recs[order[g1]].sgen == s->gen &&
                   recs[order[g1]].rslot == rs)
                g1++;
            uint64_t received = 0, prev_last = 0, max_last = 0, gaps = 0;
            int prev_rgen = -1;
            for (uint32_t j = g0; j < g1; j++) {
                struct rrec *r = &recs[order[j]];
                received += r->count;
                if (r->first <= prev_last)
                    fail("a", "c%d gen %d -> c%d: events %" PRIu64 "..%" PRIu64
                              " reached gen %d and an earlier incarnation too",
                         s->slot, s->gen, rs, r->first, prev_last, r->rgen);
                else if (r->first > prev_last + 1) {
                    /* Missing before what this incarnation received: lost
                     * with a receiver incarnation that died, unless this
                     * is the one that was there when the sender started. */
                    int explained = prev_rgen >= 0 ? r->rgen > prev_rgen
                                                   : r->rgen > s->peer_gen_at_birth[rs];
                    if (!explained)
                        gaps += r->first - prev_last - 1;
                }
                prev_last = r->last;
                prev_rgen = r->rgen;
                if (r->last > max_last)
                    max_last = r->last;
            }
            /* A killed sender may have been killed after the broadcast
             * handed its event over and before it wrote it down. */
            uint64_t may = sent + (lived ? 0 : 1);
            if (max_last > may)
                fail("a", "c%d gen %d -> c%d: received up to %" PRIu64 ", sent %" PRIu64,
                     s->slot, s->gen, rs, max_last, sent);
            if (lived) {
                uint64_t missing = sent > received ? sent - received : 0;
                if (!pr->st_final && sent > 0)
                    fail("b", "c%d gen %d has no final figures for c%d", s->slot, s->gen, rs);
                if (missing > pr->st_lost) {
                    sum.silent += missing - pr->st_lost;
                    fail("b", "c%d gen %d -> c%d: sent %" PRIu64 ", received %" PRIu64
                              ", missing %" PRIu64 " but reported lost %" PRIu64
                              " (confirmed %" PRIu64 " of %" PRIu64 ")",
                         s->slot, s->gen, rs, sent, received, missing, pr->st_lost,
                         pr->st_confirmed, pr->st_sent);
                }
                if (s->slot < NEVER_KILLED && rs < NEVER_KILLED) {
                    if (missing != 0 || pr->st_lost != 0)
                        fail("c", "c%d -> c%d: missing %" PRIu64 ", lost %" PRIu64, s->slot, rs,
                             missing, pr->st_lost);
                    if (sent == 0)
                        fail("c", "c%d sent nothing to c%d", s->slot, rs);
                }
            } else if (gaps > 0) {
                sum.silent += gaps;
                fail("d", "c%d gen %d (killed) -> c%d: %" PRIu64
                          " events missing before others the same receiver incarnation got",
                     s->slot, s->gen, rs, gaps);
            }
        }
    }
    free(order);

    /* (e) and (f). */
    for (uint32_t i = 0; i < n_incs; i++) {
        struct inc *inc = &incs[i];
        sum.reconnects += inc->reconnects;
        if (inc->missed_wakeups)
            fail("waits", "c%d gen %d: connected to every peer %" PRIu64
                          " times without lahja_wait_until_connections_change waking",
                 inc->slot, inc->gen, inc->missed_wakeups);
        if (inc->killed)
            continue;
        if (inc->hung)
            fail("e", "c%d gen %d hung", inc->slot, inc->gen);
        else if (!inc->reaped || !WIFEXITED(inc->status) || WEXITSTATUS(inc->status) != 0)
            fail("e", "c%d gen %d ended with status 0x%x%s%s", inc->slot, inc->gen, inc->status,
                 inc->fail_msg[0] ? ": " : "", inc->fail_msg);
        else if (inc->drain_rc != 0)
            fail("e", "c%d gen %d: lahja_wait_until_delivered: %s", inc->slot, inc->gen,
                 lahja_err_name(inc->drain_rc));
    }
    for (int slot = 0; slot < NEVER_KILLED; slot++) {
        struct inc *inc = &incs[slot]; /* the first incarnations are 0..procs-1 */
        if (inc->gen != 0 || inc->slot != slot || !lived_to_end(inc)) {
            fail("f", "c%d did not finish every phase of the end", slot);
            continue;
        }
        if (inc->fd_base <= 0 || inc->fd_end > inc->fd_base)
            fail("f", "c%d: %" PRId64 " descriptors at the end, %" PRId64
                      " after the first full mesh",
                 slot, inc->fd_end, inc->fd_base);
        if (RSS_CHECKED && inc->rss_end - inc->rss_base > (int64_t)RSS_GROWTH_MAX)
            fail("f", "c%d: resident memory grew by %" PRId64 " KiB (%" PRId64 " -> %" PRId64
                      " KiB)",
                 slot, (inc->rss_end - inc->rss_base) >> 10, inc->rss_base >> 10,
                 inc->rss_end >> 10);
        int other = 1 - slot;
        if (inc->peer[other].req_failed != 0)
            fail("f", "c%d: %" PRIu64 " requests to c%d failed (last: %s)", slot,
                 inc->peer[other].req_failed, other, lahja_err_name(inc->peer[other].req_last_err));
        if (inc->peer[other].req_ok == 0)
            fail("f", "c%d made no request to c%d", slot, other);
        for (int p = 0; p < opt.procs; p++)
            if (inc->peer[p].bc_errors)
                fail("f", "c%d: %" PRIu64 " broadcasts to c%d failed (last: %s)", slot,
                     inc->peer[p].bc_errors, p, lahja_err_name(inc->peer[p].bc_last_err));
    }
    if (unexpected_exits)
        fail("e", "%d processes exited without being told to", unexpected_exits);
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *f)
{
    fprintf(f, "usage: chaos [--procs N (>= %d, <= %d)] [--seconds S] [--seed X]\n"
               "             [--rate EVENTS_PER_S_PER_PAIR] [--kill-ms MIN:MAX] [--verbose]\n",
            MIN_PROCS, MAX_PROCS);
}

static void parse_args(int argc, char **argv)
{
    int have_seed = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--verbose") == 0) {
            opt.verbose = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (v == NULL) {
            usage(stderr);
            exit(2);
        }
        i++;
        if (strcmp(a, "--procs") == 0)
            opt.procs = atoi(v);
        else if (strcmp(a, "--seconds") == 0)
            opt.seconds = atof(v);
        else if (strcmp(a, "--seed") == 0)
            opt.seed = strtoull(v, NULL, 0), have_seed = 1;
        else if (strcmp(a, "--rate") == 0)
            opt.rate = atoi(v);
        else if (strcmp(a, "--kill-ms") == 0) {
            if (sscanf(v, "%d:%d", &opt.kill_min_ms, &opt.kill_max_ms) != 2)
                opt.kill_min_ms = -1;
        } else {
            usage(stderr);
            exit(2);
        }
    }
    if (opt.procs < MIN_PROCS || opt.procs > MAX_PROCS || opt.seconds <= 0 || opt.rate <= 0 ||
        opt.rate > 100000 || opt.kill_min_ms < 1 || opt.kill_max_ms < opt.kill_min_ms) {
        usage(stderr);
        exit(2);
    }
    if (!have_seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        opt.seed = ((uint64_t)ts.tv_sec * 1000003u) ^ (uint64_t)ts.tv_nsec ^
                   ((uint64_t)getpid() << 32);
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)f;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    printf("chaos: seed %" PRIu64 " (replay: --seed %" PRIu64 "), %d processes, %.0f s, "
           "%d events/s per pair, a kill every %d..%d ms\n",
           opt.seed, opt.seed, opt.procs, opt.seconds, opt.rate, opt.kill_min_ms,
           opt.kill_max_ms);

    /* Room for every incarnation the kills can make, and for every pair
     * of incarnations that overlap in time (each new one meets the
     * procs - 1 current ones, and each later one), both ways. */
    uint64_t max_incs = (uint64_t)opt.procs + (uint64_t)(opt.seconds * 1000) / opt.kill_min_ms + 16;
    uint64_t max_recs = 2 * max_incs * (uint64_t)(opt.procs - 1) + 64;
    shm_size = sizeof *shm + max_incs * sizeof *incs + max_recs * sizeof *recs;
    void *mem = mmap(NULL, shm_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("chaos: mmap");
        return 2;
    }
    shm = mem;
    shm->nprocs = (uint32_t)opt.procs;
    shm->max_incs = (uint32_t)max_incs;
    shm->max_recs = (uint32_t)max_recs;
    shm->phase = PH_START;
    incs = (struct inc *)(shm + 1);
    recs = (struct rrec *)(incs + max_incs);

    snprintf(base_dir, sizeof base_dir, "/tmp/lahja-chaos-XXXXXX");
    if (mkdtemp(base_dir) == NULL) {
        perror("chaos: mkdtemp");
        return 2;
    }

    int64_t t_start = mono_ms();
    for (int i = 0; i < opt.procs; i++)
        slots[i] = (struct slot_state){ .inc = -1, .gen = 0, .ctl_w = -1, .rep_r = -1 };
    for (int i = 0; i < opt.procs; i++)
        spawn_slot(i);

    int ok = pump(mono_ms() + PHASE_MS + GRACE_MS, ST_MESHED_START, DEATH_FAILS);
    if (!ok) {
        fail("e", "the first full mesh did not form within %d s", (PHASE_MS + GRACE_MS) / 1000);
        kill_hung("first full mesh", ST_MESHED_START);
    } else {
        notify_all(PH_RUN);
        uint64_t rnd = rnd_mix(opt.seed, 0, 0);
        int64_t end = mono_ms() + (int64_t)(opt.seconds * 1000);
        for (;;) {
            int64_t now = mono_ms();
            if (now >= end)
                break;
            int64_t next = now + opt.kill_min_ms +
                           (int64_t)(rnd_next(&rnd) %
                                     (uint64_t)(opt.kill_max_ms - opt.kill_min_ms + 1));
            if (next > end)
                next = end;
            pump(next, 0, DEATH_RESTART);
            if (mono_ms() >= end || incs_exhausted)
                break;
            kill_one(&rnd);
        }
        static const struct {
            int phase, bit;
            const char *what;
        } steps[] = { { PH_MESH, ST_MESHED_END, "full mesh at the end" },
                      { PH_QUIET, ST_QUIET, "quiet" },
                      { PH_DRAIN, ST_DRAINED, "drain" } };
        for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
            notify_all(steps[i].phase);
            if (!pump(mono_ms() + PHASE_MS + GRACE_MS, steps[i].bit, DEATH_FAILS)) {
                kill_hung(steps[i].what, steps[i].bit);
                break;
            }
        }
    }
    notify_all(PH_EXIT);
    /* Every process exits now: its report pipe reaches EOF. */
    pump(mono_ms() + PHASE_MS + GRACE_MS, 0, DEATH_EXPECTED);
    kill_hung("exit", 0);
    int64_t t_end = mono_ms();

    verdict();
    printf("chaos: processes %d, kills %d, events sent %" PRIu64 ", received %" PRIu64
           ", silent losses %" PRIu64 ", reported losses %" PRIu64 ", requests ok %" PRIu64
           " failed %" PRIu64 ", reconnections %" PRIu64 ", duration %.1f s, seed %" PRIu64 "\n",
           opt.procs, kills, sum.sent, sum.received, sum.silent, sum.reported_lost, sum.req_ok,
           sum.req_failed, sum.reconnects,
           (double)(t_end - t_start) / 1000.0, opt.seed);
    for (int slot = 0; slot < NEVER_KILLED; slot++) {
        struct inc *inc = &incs[slot];
        printf("chaos: c%d: descriptors %" PRId64 " -> %" PRId64 ", resident %" PRId64
               " -> %" PRId64 " KiB\n",
               slot, inc->fd_base, inc->fd_end, inc->rss_base >> 10, inc->rss_end >> 10);
    }
    nftw(base_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    munmap(mem, shm_size);
    if (failures) {
        printf("chaos: FAILED:");
        for (size_t k = 0; k < NCHECKS; k++)
            if (failed[k])
                printf(" (%s) %d", check_names[k], failed[k]);
        printf(" (at most %d lines of each above)\n", LINES_PER_CHECK);
        return 1;
    }
    printf("chaos: passed\n");
    return 0;
}
