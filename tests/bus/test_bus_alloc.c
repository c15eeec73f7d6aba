/*
 * Running out of memory: every allocation the library makes over a
 * scenario fails in turn.  Run N fails the Nth allocation (exactly that
 * one: the ones after it succeed again), for N = 1, 2, ... until a run
 * makes fewer than N allocations.  Whatever fails, the process under test
 * must not crash, hang or leak, its endpoint must stop and free cleanly,
 * and no call may report success for an event its peer never got.
 *
 * This executable is linked with --wrap for malloc, calloc and realloc
 * (see CMakeLists.txt), the only allocation functions the library calls:
 * the library's calls (and this file's) go to the wrappers below, which
 * pass them on to the real functions unless the failure is due.  libuv's,
 * liblz4's and libc's own allocations are not counted.  Under
 * AddressSanitizer and valgrind the real functions are still theirs, so
 * that leaks are found (test_injection_fails_exactly_the_nth checks it
 * under ASan).
 *
 * The scenario runs in a process of its own for each N (its endpoint
 * "subj"), with a peer endpoint ("peer") in another process, started
 * normally and never failing:
 *   subj starts (serving), subscribes (a handler answering the peer's
 *   requests, a handler for "Fin"), opens a stream, connects to peer,
 *   broadcasts events small and large (each of a new type, so that each
 *   makes a TYPE binding; a compressible one; then the first types
 *   again), broadcast_bytes, a request peer answers, a wait_for of an
 *   event peer sends once subj waits for it, reads the stream, stops,
 *   frees.
 *   peer records every event it receives (label and contents), sends
 *   subj three "Tick" (the stream), a request "Question" (answered by
 *   subj's handler), and "Last" (the wait_for) followed by "Fin".  It
 *   stops once subj's process is done and subj's connection has ended,
 *   then reports what it received.
 * Waits never depend on the timing of the failure: an event lost on
 * receipt (a consumer's copy that could not be allocated) is known lost
 * once "Fin", which comes after everything else peer sends and reaches a
 * handler without allocating, has arrived; a connection dropped for lack
 * of memory ends the waits at once.  A wait that reaches its deadline is
 * reported as a hang.
 *
 * A run fails if: the process crashes or leaks (under ASan or valgrind),
 * stop or free fails, a broadcast (or broadcast_bytes, or respond)
 * returned 0 and peer did not receive it, a call failed and peer
 * received its event all the same, peer received something altered or
 * dropped subj for a protocol error, or a wait hung.  Every run is
 * made; the failed ones are listed at the end, with a summary of what
 * the calls returned.
 *
 * LAHJA_TEST_ALLOC_N=<n> runs only N = n; LAHJA_TEST_ALLOC_BACKTRACE=1
 * prints the stack of each allocation made to fail (resolve the
 * addresses with addr2line -f -e <this executable>);
 * LAHJA_TEST_ALLOC_STRIDE=<s> runs every s-th N only.  Under valgrind,
 * where each of the some 90 runs takes most of a second, the stride
 * defaults to 2, so that the test stays well within its time limit;
 * everywhere else it is 1.
 */
#define _GNU_SOURCE
#include <execinfo.h>

#include "support_bus.h"

#if defined(__SANITIZE_ADDRESS__)
/* From the sanitizer runtime: non-zero if its allocator made p. */
int __sanitizer_get_ownership(const volatile void *p);
#endif

/* The deadline of a wait for something peer sends.  A wait that reaches
 * it counts as a hang. */
#define WAIT_MS 5000

/* Under valgrind, every how many N a run is made by default. */
#define VALGRIND_STRIDE 2

/* ------------------------------------------------- failure injection */

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);

static struct {
    int armed;
    unsigned long target;     /* the allocation that fails, from 1 */
    unsigned long count;      /* allocations since armed */
    int fired;                /* the target was reached */
    const char *step;         /* what the program is doing */
    const char *fired_step;   /* what it was doing when the failure came */
} inj;

static void inject_arm(unsigned long n)
{
    inj.target = n;
    inj.count = 0;
    inj.fired = 0;
    inj.fired_step = NULL;
    inj.armed = 1;
}

static void inject_disarm(void)
{
    inj.armed = 0;
}

static int inject_now(void)
{
    if (!inj.armed || ++inj.count != inj.target)
        return 0;
    inj.fired = 1;
    inj.fired_step = inj.step;
    if (getenv("LAHJA_TEST_ALLOC_BACKTRACE") != NULL) {
        void *frames[64];
        int n = backtrace(frames, 64);
        dprintf(2, "[pid %d] allocation %lu fails (during %s), from:\n", (int)getpid(),
                inj.count, inj.step != NULL ? inj.step : "?");
        backtrace_symbols_fd(frames, n, 2);
    }
    errno = ENOMEM;
    return 1;
}

void *__wrap_malloc(size_t n)
{
    return inject_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
    return inject_now() ? NULL : __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n)
{
    return inject_now() ? NULL : __real_realloc(p, n);
}

/* ------------------------------------------------------------ events */

enum { SMALL = 100, LARGE = 3000, PACKED = 12000 };

/* What subj broadcasts, in order: every type new (a TYPE binding each),
 * then round 2 sends the first types again. */
static const struct spec {
    const char *type;
    int round;
    size_t len;
} specs[] = {
    { "Small0", 1, SMALL }, { "Large0", 1, LARGE }, { "Small1", 1, SMALL },
    { "Large1", 1, LARGE }, { "Packed", 1, PACKED }, { "Small2", 1, SMALL },
    { "Large2", 1, LARGE }, { "Small0", 2, SMALL }, { "Large0", 2, LARGE },
};
#define NSPECS (sizeof specs / sizeof specs[0])

/* Types peer subscribes to (each once), besides "Ask". */
static const char *const peer_types[] = { "Small0", "Large0", "Small1", "Large1",
                                          "Packed", "Small2", "Large2", "Bytes" };
#define NPEER_TYPES (sizeof peer_types / sizeof peer_types[0])

#define LABEL_MAX 24
#define PAYLOAD_MAX 16384

/*
 * An event's payload: its label ("<type>#<round>") and a NUL, then bytes
 * that follow from the label, so that the receiver can check them:
 * pseudo-random for most, a repeated pattern for "Packed" (over the
 * compression threshold, and compressible).
 */
static size_t payload_make(uint8_t *buf, const char *label, size_t len)
{
    size_t n = strlen(label) + 1;
    memcpy(buf, label, n);
    uint32_t x = 2166136261u;
    for (const char *c = label; *c; c++)
        x = (x ^ (uint8_t)*c) * 16777619u;
    int packed = strncmp(label, "Packed", 6) == 0;
    for (size_t i = n; i < len; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = packed ? (uint8_t)("lahja "[i % 6]) : (uint8_t)(x >> 16);
    }
    return len > n ? len : n;
}

/* The label of a received payload, if the payload is exactly what
 * payload_make gives for it; else NULL. */
static const char *payload_check(const void *p, size_t len)
{
    static uint8_t want[PAYLOAD_MAX];
    const char *label = p;
    const char *nul = memchr(p, '\0', len < LABEL_MAX ? len : LABEL_MAX);
    if (nul == NULL || len > PAYLOAD_MAX)
        return NULL;
    if (payload_make(want, label, len) != len || memcmp(want, p, len) != 0)
        return NULL;
    return label;
}

/* ------------------------------------------------------------- peer */

#define PEER_GOT_MAX 64

struct peer {
    const char *dir;
    lahja_endpoint_t *ep;
    struct bus_log log;
    char got[PEER_GOT_MAX][LABEL_MAX];
    int ngot;
    int altered;
    int ticks_sent, asked, last_sent;
    lahja_event_t *question;
    int asked_done;
    int ask_rc;
    int reply_ok;
};

static void peer_record(struct peer *p, lahja_event_t *ev)
{
    size_t len = 0;
    const void *data = lahja_event_payload(ev, &len);
    const char *label = payload_check(data, len);
    if (label == NULL) {
        p->altered++;
        return;
    }
    if (p->ngot < PEER_GOT_MAX)
        snprintf(p->got[p->ngot++], LABEL_MAX, "%s", label);
}

static int peer_on_event(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    peer_record(user, ev);
    return 0;
}

/* "Ask": recorded, and answered with "Answer" echoing the payload. */
static int peer_on_ask(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    peer_record(user, ev);
    return bus_echo_handler(ep, ev, "Answer");
}

/* Peer's request to subj, in a task of its own. */
static int peer_ask(void *arg)
{
    struct peer *p = arg;
    lahja_broadcast_config_t cfg = { .filter_endpoint = "subj" };
    lahja_event_t *reply = NULL;
    p->ask_rc = lahja_request(p->ep, p->question, &cfg, lahja_deadline_in(GUARD_MS), &reply);
    if (p->ask_rc == 0) {
        size_t len = 0;
        const void *data = lahja_event_payload(reply, &len);
        const char *label = payload_check(data, len);
        p->reply_ok = strcmp(lahja_event_type(reply), "Reply") == 0 && label != NULL &&
                      strcmp(label, "Reply#1") == 0;
        lahja_event_unref(reply);
    }
    p->asked_done = 1;
    return 0;
}

/* Ends peer once subj's process is done (its end of the socket pair
 * closes) and subj's connection, if any, has ended: everything subj sent
 * has been read by then. */
static int peer_watch(void *arg)
{
    struct peer *p = arg;
    EXPECT_EQ(bus_wait_readable(bus_child_fd, LAHJA_FOREVER), 0);
    while (lahja_is_connected_to(p->ep, "subj"))
        EXPECT_EQ(lahja_wait_until_connections_change(p->ep, lahja_deadline_in(GUARD_MS)), 0);
    EXPECT_EQ(lahja_endpoint_stop(p->ep), 0);
    return 0;
}

static int peer_send(struct peer *p, const char *type, const char *label)
{
    static uint8_t buf[256];
    size_t len = payload_make(buf, label, 64);
    lahja_broadcast_config_t cfg = { .filter_endpoint = "subj", .allow_no_subscribers = 1 };
    return lahja_broadcast_bytes(p->ep, type, buf, len, &cfg, lahja_deadline_in(GUARD_MS));
}

/* Sends subj what it has subscribed to by now, each thing once. */
static void peer_react(struct peer *p, lahja_nursery_t *n)
{
    lahja_endpoint_t *ep = p->ep;
    if (!lahja_is_connected_to(ep, "subj"))
        return;
    if (!p->ticks_sent && lahja_is_endpoint_subscribed_to(ep, "subj", "Tick")) {
        p->ticks_sent = 1;
        peer_send(p, "Tick", "Tick#1");
        peer_send(p, "Tick", "Tick#2");
        peer_send(p, "Tick", "Tick#3");
    }
    if (!p->asked && lahja_is_endpoint_subscribed_to(ep, "subj", "Question")) {
        p->asked = 1;
        uint8_t buf[64];
        size_t len = payload_make(buf, "Question#1", 40);
        EXPECT_EQ(lahja_request_new("Question", "Reply", buf, len, &p->question), 0);
        EXPECT_EQ(lahja_nursery_spawn(n, peer_ask, p, NULL, NULL), 0);
        /* Sent before anything that follows. */
        while (lahja_event_id(p->question) == 0 && !p->asked_done)
            EXPECT_EQ(lahja_yield(), 0);
    }
    if (!p->last_sent && lahja_is_endpoint_subscribed_to(ep, "subj", "Last")) {
        p->last_sent = 1;
        peer_send(p, "Last", "Last#1");
        /* After everything else peer sends. */
        peer_send(p, "Fin", "Fin#1");
    }
}

static int peer_main(void *arg)
{
    struct peer *p = arg;
    lahja_endpoint_options_t opts = bus_opts(&p->log);
    p->ep = bus_serve(p->dir, "peer", &opts);
    lahja_subscription_t *sub = NULL;
    for (size_t i = 0; i < NPEER_TYPES; i++)
        EXPECT_EQ(lahja_subscribe(p->ep, peer_types[i], peer_on_event, p, &sub), 0);
    EXPECT_EQ(lahja_subscribe(p->ep, "Ask", peer_on_ask, p, &sub), 0);
    lahja_nursery_t *n = NULL;
    EXPECT_EQ(lahja_nursery_open(&n), 0);
    EXPECT_EQ(lahja_nursery_spawn(n, peer_watch, p, NULL, NULL), 0);
    do
        peer_react(p, n);
    while (lahja_wait_until_endpoint_subscriptions_change(p->ep, LAHJA_FOREVER) == 0);
    EXPECT_EQ(lahja_nursery_close(n), 0);
    EXPECT_EQ(lahja_endpoint_free(p->ep), 0); /* with the subscriptions */
    lahja_event_unref(p->question);

    /* The report, line by line. */
    int fd = bus_child_fd;
    for (int i = 0; i < p->ngot; i++)
        dprintf(fd, "got %s\n", p->got[i]);
    if (p->altered)
        dprintf(fd, "altered %d\n", p->altered);
    if (p->asked)
        dprintf(fd, "ask %d %d\n", p->ask_rc, p->reply_ok);
    for (int i = 0; i < p->log.n; i++)
        if (p->log.level[i] >= LAHJA_LOG_WARNING)
            dprintf(fd, "log %s\n", p->log.line[i]);
    return 0;
}

/* Forks peer, with a socket pair to it: subj shuts down its side's
 * writing when it is done; peer writes its report and exits. */
static bus_child_t peer_fork(struct peer *p)
{
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fflush(NULL);
    pid_t pid = fork();
    EXPECT_TRUE(pid >= 0);
    if (pid == 0) {
        close(sv[0]);
        bus_child_setup(sv[1]);
        struct bus_task_call call = { peer_main, p };
        int rc = bus_run_task(&call);
        /* _exit: forked inside subj's task, peer holds a copy of subj's
         * runtime, which it neither owns nor frees. */
        fflush(NULL);
        _exit(rc == 0 ? 0 : BUS_EXIT_FAIL);
    }
    close(sv[1]);
    bus_child_track(pid, 0);
    return (bus_child_t){ pid, sv[0] };
}

/* Reads fd to its end into buf (NUL-terminated); from a process's pipe
 * or socket, blocking or not. */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n > 0) {
            len += (size_t)n;
            if (len == cap - 1)
                break;
            continue;
        }
        if (n == 0)
            break;
        if (errno == EINTR)
            continue;
        EXPECT_EQ(errno, EAGAIN);
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        poll(&pfd, 1, -1);
    }
    buf[len] = '\0';
    return len;
}

/* ---------------------------------------------------------- subject */

#define NOTES_MAX 64
#define NOTE_LEN 160

struct subject {
    unsigned long n;            /* the allocation that fails */
    char dir[BUS_DIR_MAX];
    lahja_endpoint_t *ep;
    struct bus_log log;
    lahja_scope_t *scope;       /* the scenario: cancelled if the
                                   connection to peer ends */
    lahja_scope_t *stream_scope; /* inside it, the stream's reading and */
    lahja_scope_t *wait_scope;  /* inside that, the wait_for: each
                                   cancelled by "Fin" while it waits */
    lahja_cond_t go;            /* the connect step is over */
    int go_given;
    int connected;              /* lahja_connect returned 0 */
    int dropped;                /* the connection ended before stop */
    int fin;                    /* "Fin" received */
    lahja_scope_t *waiting;     /* the scope of a wait in progress */
    int respond_rc;             /* 1: respond never called */
    int request_rc;             /* 1: no request made */
    int stats_rc;               /* lahja_delivery_stats for peer, after stop */
    lahja_delivery_t stats;
    int totals_rc;              /* and over every peer (peer is the only one) */
    lahja_delivery_t totals;
    int sent_rc[NSPECS + 2];    /* each broadcast's result; 1: not made */
    const char *sent_label[NSPECS + 2];
    char labels[NSPECS + 2][LABEL_MAX];
    int nsent;
    char notes[NOTES_MAX][NOTE_LEN]; /* outcomes, for the summary */
    int nnotes;
    int violations;
};

static struct subject subj_state;

/* Records an outcome; digits become '#', so that the summary groups
 * outcomes that differ only by which event. */
static void note(struct subject *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct subject *s, const char *fmt, ...)
{
    if (s->nnotes == NOTES_MAX)
        return;
    char *line = s->notes[s->nnotes++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, NOTE_LEN, fmt, ap);
    va_end(ap);
    for (char *c = line; *c; c++)
        if ((*c >= '0' && *c <= '9') || *c == '\n')
            *c = *c == '\n' ? ' ' : '#';
}

/* A run's failure: printed at once, with the run's N. */
static void violation(struct subject *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void violation(struct subject *s, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "N=%lu (failure injected during %s): %s\n", s->n,
            inj.fired_step != NULL ? inj.fired_step : "nothing", msg);
    s->violations++;
}

/* Notes a call's failure. */
static int outcome(struct subject *s, const char *what, int rc)
{
    if (rc != 0)
        note(s, "%s: %s", what, lahja_err_name(rc));
    return rc;
}

static int subj_on_question(lahja_endpoint_t *ep, lahja_event_t *q, void *user)
{
    struct subject *s = user;
    uint8_t buf[64];
    size_t len = payload_make(buf, "Reply#1", 40);
    lahja_event_t *reply = NULL;
    int rc = outcome(s, "event_new (reply)", lahja_event_new("Reply", buf, len, &reply));
    if (rc == 0)
        rc = outcome(s, "respond", lahja_respond(ep, q, reply));
    lahja_event_unref(reply);
    s->respond_rc = rc;
    return 0;
}

static int subj_on_fin(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    struct subject *s = user;
    s->fin = 1;
    if (s->waiting != NULL)
        lahja_scope_cancel(s->waiting); /* what it waits for was lost */
    return 0;
}

/* Ends the scenario's waits if the connection to peer ends. */
static int subj_watch(void *arg)
{
    struct subject *s = arg;
    while (!s->go_given)
        EXPECT_EQ(lahja_cond_wait(&s->go, LAHJA_FOREVER), 0);
    if (!s->connected)
        return 0;
    for (;;) {
        if (!lahja_is_connected_to(s->ep, "peer")) {
            s->dropped = 1;
            lahja_scope_cancel(s->scope);
            return 0;
        }
        if (lahja_wait_until_connections_change(s->ep, LAHJA_FOREVER) != 0)
            return 0; /* stopped */
    }
}

/* A wait for something peer sends: ended by its deadline (a hang), by
 * the connection's end, or by "Fin" (it was lost on receipt). */
static int subj_wait_rc(struct subject *s, const char *what, int rc)
{
    if (rc == -ETIMEDOUT && !s->fin)
        violation(s, "%s hung (no result in %d ms)", what, WAIT_MS);
    else if (rc == -ECANCELED || (rc == -ETIMEDOUT && s->fin))
        note(s, "%s: ended (%s)", what,
             s->dropped ? "connection dropped" : "what it waited for was lost on receipt");
    else
        outcome(s, what, rc);
    return rc;
}

static void subj_broadcast(struct subject *s, const struct spec *sp)
{
    static uint8_t buf[PAYLOAD_MAX];
    int i = s->nsent++;
    snprintf(s->labels[i], LABEL_MAX, "%s#%d", sp->type, sp->round);
    s->sent_label[i] = s->labels[i];
    s->sent_rc[i] = 1;
    size_t len = payload_make(buf, s->labels[i], sp->len);
    const char *kind = sp->round == 2 ? "broadcast (a type bound before)"
                       : sp->len == PACKED ? "broadcast (compressible)"
                       : sp->len == LARGE  ? "broadcast (large)"
                                           : "broadcast (small)";
    inj.step = kind;
    lahja_event_t *ev = NULL;
    if (outcome(s, "event_new", lahja_event_new(sp->type, buf, len, &ev)) != 0)
        return;
    s->sent_rc[i] = outcome(s, kind, lahja_broadcast(s->ep, ev, NULL, lahja_deadline_in(WAIT_MS)));
    lahja_event_unref(ev);
}

static void subj_broadcast_bytes(struct subject *s)
{
    uint8_t buf[256];
    int i = s->nsent++;
    snprintf(s->labels[i], LABEL_MAX, "Bytes#1");
    s->sent_label[i] = s->labels[i];
    size_t len = payload_make(buf, s->labels[i], 200);
    inj.step = "broadcast_bytes";
    s->sent_rc[i] = outcome(s, "broadcast_bytes",
                            lahja_broadcast_bytes(s->ep, "Bytes", buf, len, NULL,
                                                  lahja_deadline_in(WAIT_MS)));
}

static void subj_request(struct subject *s)
{
    uint8_t buf[64];
    size_t len = payload_make(buf, "Ask#1", 40);
    lahja_event_t *q = NULL, *a = NULL;
    inj.step = "request";
    if (outcome(s, "request_new", lahja_request_new("Ask", "Answer", buf, len, &q)) != 0)
        return;
    lahja_broadcast_config_t cfg = { .filter_endpoint = "peer" };
    int rc = lahja_request(s->ep, q, &cfg, lahja_deadline_in(WAIT_MS), &a);
    s->request_rc = rc;
    if (rc == -ETIMEDOUT)
        violation(s, "request hung (no answer in %d ms)", WAIT_MS);
    else
        outcome(s, "request", rc);
    if (rc == 0) {
        size_t n = 0;
        const void *p = lahja_event_payload(a, &n);
        if (strcmp(lahja_event_type(a), "Answer") != 0 || n != len || memcmp(p, buf, len) != 0)
            violation(s, "request returned an answer that is not peer's");
        lahja_event_unref(a);
    }
    lahja_event_unref(q);
}

static void subj_wait_for(struct subject *s)
{
    inj.step = "wait_for";
    if (!lahja_is_connected_to(s->ep, "peer"))
        return;
    lahja_event_t *ev = NULL;
    s->waiting = s->wait_scope;
    int rc = lahja_wait_for(s->ep, "Last", lahja_deadline_in(WAIT_MS), &ev);
    s->waiting = NULL;
    if (subj_wait_rc(s, "wait_for", rc) == 0) {
        size_t n = 0;
        const void *data = lahja_event_payload(ev, &n);
        const char *label = payload_check(data, n);
        if (label == NULL || strcmp(label, "Last#1") != 0)
            violation(s, "wait_for returned an event that is not peer's");
        lahja_event_unref(ev);
    }
}

static void subj_stream(struct subject *s, lahja_stream_t *st)
{
    inj.step = "stream_next";
    for (int i = 1; i <= 3; i++) {
        /* After "Fin" anything still to come is lost: take what is queued. */
        lahja_event_t *ev = NULL;
        s->waiting = s->stream_scope;
        int rc = lahja_stream_next(st, s->fin ? lahja_now() : lahja_deadline_in(WAIT_MS), &ev);
        s->waiting = NULL;
        if (subj_wait_rc(s, "stream_next", rc) != 0)
            return;
        char want[LABEL_MAX];
        snprintf(want, sizeof want, "Tick#%d", i);
        size_t n = 0;
        const void *data = lahja_event_payload(ev, &n);
        const char *label = payload_check(data, n);
        if (label == NULL || strcmp(label, want) != 0)
            note(s, "stream_next: a tick skipped (lost on receipt)");
        lahja_event_unref(ev);
    }
}

/* Everything the endpoint does, up to stop and free: each call may fail. */
static void subj_scenario(struct subject *s)
{
    lahja_endpoint_t *ep = s->ep;
    lahja_conn_config_t self = bus_cfg(s->dir, "subj"), peer = bus_cfg(s->dir, "peer");
    lahja_subscription_t *question = NULL, *fin = NULL;
    lahja_stream_t *st = NULL;

    inj.step = "start";
    int started = outcome(s, "start", lahja_endpoint_start(ep, &self)) == 0;
    if (started) {
        inj.step = "subscribe";
        outcome(s, "subscribe", lahja_subscribe(ep, "Question", subj_on_question, s, &question));
        outcome(s, "subscribe", lahja_subscribe(ep, "Fin", subj_on_fin, s, &fin));
        inj.step = "stream_open";
        outcome(s, "stream_open", lahja_stream_open(ep, "Tick", 3, NULL, &st));
        inj.step = "connect";
        s->connected =
            outcome(s, "connect", lahja_connect(ep, &peer, 1, lahja_deadline_in(GUARD_MS))) == 0;
    }
    s->go_given = 1;
    lahja_cond_broadcast(&s->go);
    if (started) {
        for (size_t i = 0; i < NSPECS; i++)
            subj_broadcast(s, &specs[i]);
        subj_broadcast_bytes(s);
        subj_request(s);
        subj_wait_for(s);
    }
    lahja_scope_close(s->wait_scope);
    if (started && st != NULL && lahja_is_connected_to(ep, "peer"))
        subj_stream(s, st);
    lahja_scope_close(s->stream_scope);
    lahja_stream_close(st);
    lahja_subscription_cancel(fin);
    /* The handler answering peer stays until stop: a request may still
     * be coming. */
    inj.step = "stop";
    int rc = lahja_endpoint_stop(ep);
    if (started && rc != 0)
        violation(s, "stop returned %s", lahja_err_name(rc));
    lahja_subscription_cancel(question);
    s->stats_rc = lahja_delivery_stats(ep, "peer", &s->stats);
    s->totals_rc = lahja_delivery_stats(ep, NULL, &s->totals);
}

/* Non-zero if subj's connection to peer ended before subj stopped. */
static int subj_dropped(const struct subject *s)
{
    for (int i = 0; i < s->log.n; i++)
        if (strstr(s->log.line[i], "connection to peer:") != NULL &&
            strstr(s->log.line[i], "endpoint stopping") == NULL)
            return 1;
    return 0;
}

/* Checks what peer reports against what subj's calls returned. */
static void subj_check(struct subject *s, char *report)
{
    const char *how = subj_dropped(s) ? "the connection was dropped" : "the connection stayed up";
    int ask_rc = 1, reply_ok = 0, altered = 0;
    char *save = NULL;
    static char got[PEER_GOT_MAX][LABEL_MAX];
    int ngot = 0;
    for (char *line = strtok_r(report, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "got ", 4) == 0 && ngot < PEER_GOT_MAX)
            snprintf(got[ngot++], LABEL_MAX, "%s", line + 4);
        else if (strncmp(line, "altered ", 8) == 0)
            altered = atoi(line + 8);
        else if (sscanf(line, "ask %d %d", &ask_rc, &reply_ok) == 2)
            ;
        else if (strncmp(line, "log ", 4) == 0) {
            if (strstr(line, lahja_strerror(-EPROTO)) != NULL)
                violation(s, "peer dropped subj for a protocol error: %s", line + 4);
            note(s, "peer logged: %s", line + 4);
        }
    }
    if (altered)
        violation(s, "peer received %d events altered", altered);

    /* What subj reported sent (returned 0) and peer did not get: each
     * one must be counted lost (B30). */
    int ok = 0, missing = 0;
    char missed[512] = "";
    for (int i = 0; i < s->nsent; i++) {
        int received = 0;
        for (int k = 0; k < ngot; k++)
            received += strcmp(got[k], s->sent_label[i]) == 0;
        if (received > 1)
            violation(s, "peer received %s %d times", s->sent_label[i], received);
        if (s->sent_rc[i] == 0) {
            ok++;
            if (!received) {
                missing++;
                size_t n = strlen(missed);
                snprintf(missed + n, sizeof missed - n, " %s", s->sent_label[i]);
            }
        } else if (received) {
            violation(s, "the broadcast of %s failed (%s); peer received it all the same",
                      s->sent_label[i],
                      s->sent_rc[i] == 1 ? "not made" : lahja_err_name(s->sent_rc[i]));
        }
    }
    if (s->respond_rc == 0) {
        ok++;
        if (ask_rc != 0) {
            missing++;
            size_t n = strlen(missed);
            snprintf(missed + n, sizeof missed - n, " Reply#1 (respond; peer's request: %s)",
                     lahja_err_name(ask_rc));
        }
    }
    if (ask_rc == 0 && !reply_ok)
        violation(s, "peer's request returned a reply that is not subj's");
    if (ask_rc != 1 && ask_rc != 0)
        note(s, "peer's request: %s", lahja_err_name(ask_rc));
    ok += s->request_rc == 0;
    /* A request that failed may have been queued all the same: its
     * answer never came, or could not be copied (-ENOMEM). */
    int maybe = s->request_rc != 0 && s->request_rc != 1 && s->request_rc != LAHJA_ENOSUBSCRIBERS;

    const lahja_delivery_t *d = &s->stats;
    if (s->stats_rc == -ENOENT && !s->connected && ok == 0)
        return; /* never connected */
    if (s->stats_rc != 0) {
        violation(s, "lahja_delivery_stats for peer returned %s, subj %s connected to it, "
                  "%d calls returned 0 for it; over every peer (%s): %llu sent, %llu "
                  "confirmed, %llu lost", lahja_err_name(s->stats_rc),
                  s->connected ? "having" : "not having", ok, lahja_err_name(s->totals_rc),
                  (unsigned long long)s->totals.sent, (unsigned long long)s->totals.confirmed,
                  (unsigned long long)s->totals.lost);
        if (s->totals_rc != 0)
            return;
        d = &s->totals; /* peer's, since it is the only one */
    }
    if ((uint64_t)missing > d->lost)
        violation(s, "%d events returned 0 and peer never received them, %llu counted lost "
                  "(%s):%s", missing, (unsigned long long)d->lost, how, missed);
    else if (missing > 0)
        note(s, "sent, not received, counted lost (%s)", how);
    if (d->sent != d->confirmed + d->lost)
        violation(s, "after stop, %llu sent, %llu confirmed, %llu lost: some still in flight",
                  (unsigned long long)d->sent, (unsigned long long)d->confirmed,
                  (unsigned long long)d->lost);
    if (d->sent < (uint64_t)ok || d->sent > (uint64_t)(ok + maybe))
        violation(s, "%llu events counted sent; subj's calls say %d%s",
                  (unsigned long long)d->sent, ok, maybe ? " or one more" : "");
    if (d->confirmed > (uint64_t)(ngot + (ask_rc == 0)))
        violation(s, "%llu events counted confirmed; peer received %d",
                  (unsigned long long)d->confirmed, ngot + (ask_rc == 0));
}

static int subj_main(void *arg)
{
    struct subject *s = arg;
    bus_dir_make(s->dir);
    struct peer peer = { .dir = s->dir };
    bus_child_t pc = peer_fork(&peer);

    lahja_endpoint_options_t opts = bus_opts(&s->log);
    EXPECT_EQ(lahja_endpoint_new("subj", &opts, &s->ep), 0);
    EXPECT_EQ(lahja_scope_open(LAHJA_FOREVER, 0, &s->scope), 0);
    EXPECT_EQ(lahja_scope_open(LAHJA_FOREVER, 0, &s->stream_scope), 0);
    EXPECT_EQ(lahja_scope_open(LAHJA_FOREVER, 0, &s->wait_scope), 0);
    lahja_cond_init(&s->go);
    lahja_task_t *watch = NULL;
    EXPECT_EQ(lahja_spawn(lahja_rt_current(), subj_watch, s, NULL, &watch), 0);
    s->respond_rc = 1;
    s->request_rc = 1;

    inject_arm(s->n);
    subj_scenario(s);
    lahja_scope_close(s->scope);
    EXPECT_EQ(lahja_task_join(watch, LAHJA_FOREVER, NULL), 0);
    inj.step = "free";
    int rc = lahja_endpoint_free(s->ep);
    inject_disarm();
    if (rc != 0)
        violation(s, "free returned %s", lahja_err_name(rc));

    /* Peer's report, once it has read everything subj sent. */
    static char report[65536];
    EXPECT_EQ(shutdown(pc.fd, SHUT_WR), 0);
    read_all(pc.fd, report, sizeof report);
    EXPECT_CHILD_OK(&pc);
    subj_check(s, report);
    for (int i = 0; i < s->log.n; i++)
        if (s->log.level[i] >= LAHJA_LOG_INFO && strstr(s->log.line[i], "stopping") == NULL)
            note(s, "subj logged: %s", s->log.line[i]);
    bus_dir_remove(s->dir);

    int fd = bus_child_fd;
    dprintf(fd, "fired %d\nallocs %lu\n", inj.fired, inj.count);
    if (inj.fired)
        dprintf(fd, "during %s\n", inj.fired_step != NULL ? inj.fired_step : "?");
    for (int i = 0; i < s->nnotes; i++)
        dprintf(fd, "note %s\n", s->notes[i]);
    return s->violations ? -1 : 0;
}

/* The process under test: subj_main as the main task of its runtime;
 * its violations are printed already. */
static int subj_run(void *arg)
{
    return lahja_run(subj_main, arg, NULL);
}

/* ------------------------------------------------------------ driver */

#define KINDS_MAX 256
/* Far more than the scenario allocates: ends a run of crashes. */
#define RUNS_MAX 5000

/* Distinct outcomes and how many runs had each. */
static struct {
    char text[KINDS_MAX][NOTE_LEN + 16];
    int count[KINDS_MAX];
    int n;
} kinds;

static void kind_count(const char *text)
{
    for (int i = 0; i < kinds.n; i++) {
        if (strcmp(kinds.text[i], text) == 0) {
            kinds.count[i]++;
            return;
        }
    }
    if (kinds.n < KINDS_MAX) {
        /* Cut to fit: a kind is a line of a few words. */
        snprintf(kinds.text[kinds.n], sizeof kinds.text[0], "%.*s",
                 (int)sizeof kinds.text[0] - 1, text);
        kinds.count[kinds.n++] = 1;
    }
}

static unsigned long env_ulong(const char *name, unsigned long dflt)
{
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? strtoul(v, NULL, 10) : dflt;
}

static void test_every_allocation_of_a_scenario(void **state)
{
    (void)state;
    unsigned long stride = 1;
    if (RUNNING_ON_VALGRIND)
        stride = VALGRIND_STRIDE;
    stride = env_ulong("LAHJA_TEST_ALLOC_STRIDE", stride);
    if (stride == 0)
        stride = 1;
    unsigned long only = env_ulong("LAHJA_TEST_ALLOC_N", 0);
    memset(&kinds, 0, sizeof kinds);
    int runs = 0, fired = 0, failed = 0;
    unsigned long allocs = 0;
    char failures[2048] = "";
    static char out[65536];

    for (unsigned long n = only ? only : 1;; n += stride) {
        subj_state = (struct subject){ .n = n };
        bus_child_t c = bus_fork_how(subj_run, &subj_state, 1);
        read_all(c.fd, out, sizeof out);
        int status = bus_child_wait(&c);
        runs++;
        int this_fired = -1;
        char *save = NULL;
        for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            char text[NOTE_LEN + 32];
            if (sscanf(line, "fired %d", &this_fired) == 1)
                continue;
            if (sscanf(line, "allocs %lu", &allocs) == 1)
                continue;
            if (strncmp(line, "during ", 7) == 0) {
                snprintf(text, sizeof text, "failure injected during %s", line + 7);
                kind_count(text);
            } else if (strncmp(line, "note ", 5) == 0) {
                kind_count(line + 5);
            }
        }
        if (this_fired < 0) /* ended before saying whether its N came */
            this_fired = 1;
        fired += this_fired;
        if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            failed++;
            size_t len = strlen(failures);
            if (len < sizeof failures - 64)
                snprintf(failures + len, sizeof failures - len, " %lu(%s %d)", n,
                         WIFSIGNALED(status) ? "signal" : "exit",
                         WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        }
        if (only || !this_fired || runs == RUNS_MAX)
            break;
    }

    printf("allocation failures over the scenario: %d runs (N from %lu, stride %lu), "
           "%d with a failure injected, %d failed; the last run made %lu allocations\n",
           runs, only ? only : 1, stride, fired, failed, allocs);
    for (int i = 0; i < kinds.n; i++)
        printf("  %4d  %s\n", kinds.count[i], kinds.text[i]);
    if (failed)
        printf("failed runs (N, how):%s\n", failures);
    fflush(stdout);
    assert_int_equal(failed, 0);
    assert_true(only || fired > 0);
}

/* ------------------------------------------------------------ accept */

/* A raw client in a child: HELLO as `name`, an empty SUBS, then "done";
 * reads until the endpoint hangs up.  With `served`, the endpoint must
 * have answered with its HELLO: it accepted and shook hands.  Without,
 * it must only have hung up: served or dropped, but not left waiting. */
struct visit {
    const char *path;
    const char *name;
    int served;
};

static int visit(void *arg)
{
    const struct visit *v = arg;
    static uint8_t buf[512];
    int fd = raw_connect(v->path);
    EXPECT_TRUE(fd >= 0);
    uint8_t *p = raw_hello(buf, v->name);
    p = raw_subs(p, 1, NULL, 0);
    raw_send(fd, buf, (size_t)(p - buf));
    EXPECT_EQ(shutdown(fd, SHUT_WR), 0);
    ssize_t n = raw_read_to_eof(fd, buf, sizeof buf);
    if (n < 0)
        fprintf(stderr, "%s: neither served nor hung up on (%s)\n", v->name,
                lahja_err_name((int)n));
    EXPECT_TRUE(n >= 0);
    if (v->served)
        raw_expect_hello(buf, n, "srv");
    close(fd);
    return 0;
}

/*
 * The allocations made for an incoming connection fail in turn: the
 * Nth in run N, counted from just before a raw client connects until it
 * has been served (or hung up on).  Each time, that client is not left
 * waiting, and a client connecting afterwards is accepted and served.
 */
static int main_accept_after_failed_allocation(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    int failed = 0;
    unsigned long n;
    for (n = 1;; n++) {
        static struct bus_log log;
        memset(&log, 0, sizeof log);
        lahja_endpoint_options_t opts = bus_opts(&log);
        lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
        struct visit first = { cfg.path, "first", 0 }, later = { cfg.path, "later", 1 };
        inject_arm(n);
        inj.step = "accept";
        bus_child_t c = bus_fork_plain(visit, &first);
        int first_status = bus_child_wait(&c);
        inject_disarm();
        int first_ok = WIFEXITED(first_status) && WEXITSTATUS(first_status) == 0;
        if (!first_ok)
            fprintf(stderr, "N=%lu (failure injected: %s): the first client was neither served "
                    "nor hung up on\n", n, inj.fired ? "yes" : "no");
        c = bus_fork_plain(visit, &later);
        int status = bus_child_wait(&c);
        int later_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!later_ok)
            fprintf(stderr, "N=%lu (failure injected: %s): a client connecting afterwards was "
                    "not served\n", n, inj.fired ? "yes" : "no");
        if (!first_ok || !later_ok) {
            fprintf(stderr, "the endpoint logged:\n");
            bus_log_dump(&log);
            failed++;
        }
        bus_close(ep);
        if (!inj.fired)
            break;
    }
    printf("accepting: %lu runs, each failing one allocation made for an incoming connection; "
           "%d failed\n", n, failed);
    fflush(stdout);
    bus_dir_remove(dir);
    EXPECT_EQ(failed, 0);
    return 0;
}
BUS_MAIN_TEST(accept_after_failed_allocation)

/* -------------------------------------------------------- the wrappers */

/* The Nth allocation fails, once; the library's calls are counted; and
 * under ASan the memory still comes from its allocator. */
static void test_injection_fails_exactly_the_nth(void **state)
{
    (void)state;
    lahja_event_t *a = NULL, *b = NULL, *c = NULL;
    inject_arm(2);
    assert_int_equal(lahja_event_new("T", "x", 1, &a), 0);
    assert_int_equal(lahja_event_new("T", "x", 1, &b), -ENOMEM);
    assert_int_equal(lahja_event_new("T", "x", 1, &c), 0);
    inject_disarm();
    assert_true(inj.fired);
    assert_int_equal(inj.count, 3);
#if defined(__SANITIZE_ADDRESS__)
    assert_int_equal(__sanitizer_get_ownership(a), 1);
#endif
    lahja_event_unref(a);
    lahja_event_unref(c);
}

/* lahja_endpoint_new with each of its allocations failing. */
static int main_endpoint_new_fails_cleanly(void *arg)
{
    (void)arg;
    uid_t uids[1] = { 12345 };
    lahja_endpoint_options_t opts = { .allowed_uids = uids, .n_allowed_uids = 1 };
    for (unsigned long n = 1;; n++) {
        lahja_endpoint_t *ep = NULL;
        inject_arm(n);
        int rc = lahja_endpoint_new("ep", &opts, &ep);
        inject_disarm();
        if (inj.fired) {
            EXPECT_EQ(rc, -ENOMEM);
            continue;
        }
        EXPECT_EQ(rc, 0);
        EXPECT_EQ(lahja_endpoint_free(ep), 0);
        break;
    }
    return 0;
}
BUS_MAIN_TEST(endpoint_new_fails_cleanly)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_injection_fails_exactly_the_nth),
        cmocka_unit_test(test_endpoint_new_fails_cleanly),
        cmocka_unit_test(test_accept_after_failed_allocation),
        cmocka_unit_test(test_every_allocation_of_a_scenario),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
