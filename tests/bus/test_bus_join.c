/*
 * Discovery (B35): endpoints that only join a directory form a full
 * mesh, whatever order they start in; a member killed and restarted is
 * back in it; stale sockets are cleaned, other files ignored; a member
 * that stops has left and is not retried.
 *
 * The members are real processes (m0, m1, ...); the test process joins
 * too, as "observer", which does not serve: it connects to every member
 * and none connects to it.
 */
#define _GNU_SOURCE
#include "support_bus.h"

#include <fcntl.h>

#define MEMBERS 6

/* ---------------------------------------------------------------- logs */

/* A log that counts WARNING lines (printed) and wakes `changed` at every
 * line, remembering the last one that contains `want`. */
struct watch {
    int warnings;
    const char *want;
    int seen;                  /* lines containing `want` */
    lahja_cond_t changed;
};

static void watch_log(void *user, lahja_log_level_t level, const char *endpoint, const char *msg)
{
    struct watch *w = user;
    bus_log_fn(NULL, level, endpoint, msg);
    if (level >= LAHJA_LOG_WARNING) {
        w->warnings++;
        fprintf(stderr, "[pid %d] %s: unexpected warning: %s\n", (int)getpid(), endpoint, msg);
    }
    if (w->want != NULL && strstr(msg, w->want) != NULL)
        w->seen++;
    lahja_cond_broadcast(&w->changed);
}

static lahja_endpoint_options_t watch_opts(struct watch *w)
{
    memset(w, 0, sizeof *w);
    lahja_cond_init(&w->changed);
    lahja_endpoint_options_t o = { .log = watch_log, .log_user = w };
    return o;
}

/* ------------------------------------------------------------- members */

struct member_args {
    const char *dir;
    int self;
    int n;     /* members m0..m<n-1> */
    int later; /* waits at the "restart" barrier before it starts */
};

static void member_name(char *buf, size_t len, int i)
{
    snprintf(buf, len, "m%d", i);
}

#define PINGS 50 /* each member to each other, per check */

struct member {
    int self;
    int checks;
    int round;                    /* the last check's */
    int done;
    int pings[MEMBERS][3];        /* by sender and round */
    lahja_cond_t changed;
};

/* A one-byte payload: a round. */
static int round_of(const lahja_event_t *ev)
{
    size_t len = 0;
    const unsigned char *p = lahja_event_payload(ev, &len);
    return len == 1 && p[0] >= 1 && p[0] <= 2 ? p[0] : 0;
}

static int on_check(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct member *m = user;
    m->round = round_of(ev);
    m->checks++;
    lahja_cond_broadcast(&m->changed);
    return 0;
}

static int on_ping(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    struct member *m = user;
    int from = -1;
    EXPECT_EQ(sscanf(lahja_event_origin(ev), "m%d", &from), 1);
    EXPECT_TRUE(from >= 0 && from < MEMBERS && round_of(ev) != 0);
    if (from != m->self) /* a broadcast reaches our own subscribers too */
        m->pings[from][round_of(ev)]++;
    lahja_cond_broadcast(&m->changed);
    return 0;
}

/*
 * One check's traffic: PINGS events to every other member, and every
 * other's PINGS received, exactly.  What the simultaneous connects of
 * discovery chose must carry them all; and they are confirmed before
 * the answer, so that a member killed after it loses nothing of ours.
 */
static void ping_round(lahja_endpoint_t *ep, const struct member_args *a, struct member *m)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    char other[16];
    for (int i = 0; i < a->n; i++) {
        member_name(other, sizeof other, i);
        if (i != a->self)
            EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, other, "Ping", deadline), 0);
    }
    unsigned char r = (unsigned char)m->round;
    for (int k = 0; k < PINGS; k++) {
        lahja_event_t *ev = NULL;
        EXPECT_EQ(lahja_event_new("Ping", &r, 1, &ev), 0);
        EXPECT_EQ(lahja_broadcast(ep, ev, NULL, deadline), 0);
        lahja_event_unref(ev);
    }
    for (int i = 0; i < a->n; i++)
        while (i != a->self && m->pings[i][r] < PINGS)
            EXPECT_EQ(lahja_cond_wait(&m->changed, deadline), 0);
    for (int i = 0; i < a->n; i++)
        EXPECT_EQ(m->pings[i][r], i == a->self ? 0 : PINGS);
    EXPECT_EQ(lahja_wait_until_delivered(ep, deadline), 0);
}

static int on_done(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    struct member *m = user;
    m->done = 1;
    lahja_cond_broadcast(&m->changed);
    return 0;
}

/* Waits until ep is connected to every other member. */
static void wait_mesh(lahja_endpoint_t *ep, const struct member_args *a)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    for (int i = 0; i < a->n; i++) {
        char name[16];
        member_name(name, sizeof name, i);
        if (i != a->self)
            EXPECT_EQ(lahja_wait_until_connected_to(ep, name, deadline), 0);
    }
}

/*
 * A barrier, the named pipe <dir>/restart (not a socket: the members
 * ignore it).  A process forked while the test's endpoint has
 * connections would inherit a copy of their memory, which valgrind
 * reports as lost in it: so the member that restarts is forked at the
 * start, and waits here.
 */
static void barrier_path(char *buf, size_t len, const char *dir)
{
    snprintf(buf, len, "%s/restart", dir);
}

/* In the child: tells the test it is at the barrier (a signal), then
 * blocks until released. */
static void barrier_wait(const char *dir)
{
    char path[BUS_DIR_MAX + 16], b = 0;
    barrier_path(path, sizeof path, dir);
    int fd = open(path, O_RDWR);
    EXPECT_TRUE(fd >= 0);
    bus_child_signal();
    ssize_t n;
    while ((n = read(fd, &b, 1)) < 0 && errno == EINTR)
        ;
    EXPECT_EQ(n, 1);
    close(fd);
}

static void barrier_release(bus_child_t *c, const char *dir)
{
    EXPECT_EQ(bus_child_await_signal(c), 0);
    char path[BUS_DIR_MAX + 16];
    barrier_path(path, sizeof path, dir);
    int fd = open(path, O_WRONLY);
    EXPECT_TRUE(fd >= 0);
    EXPECT_EQ(write(fd, "g", 1), 1);
    close(fd);
}

/*
 * A member: serves in the directory and joins it, nothing else.  Once it
 * sees every other member it signals the parent; at every "Check" it
 * waits for the whole mesh again and answers "MeshOk" to the observer;
 * at "Done" it stops.  Nothing it does is worth a WARNING: the
 * simultaneous connects of discovery are routine.
 */
static int child_member(void *arg)
{
    const struct member_args *a = arg;
    if (a->later)
        barrier_wait(a->dir);
    char name[16];
    member_name(name, sizeof name, a->self);
    struct watch w;
    lahja_endpoint_options_t opts = watch_opts(&w);
    lahja_endpoint_t *ep = bus_serve(a->dir, name, &opts);
    struct member m = { .self = a->self };
    lahja_cond_init(&m.changed);
    lahja_subscription_t *check = NULL, *done = NULL, *ping = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Check", on_check, &m, &check), 0);
    EXPECT_EQ(lahja_subscribe(ep, "Done", on_done, &m, &done), 0);
    EXPECT_EQ(lahja_subscribe(ep, "Ping", on_ping, &m, &ping), 0);
    EXPECT_EQ(lahja_join(ep, a->dir), 0);
    wait_mesh(ep, a);
    bus_child_signal();
    int answered = 0;
    while (!m.done) {
        if (m.checks == answered) {
            /* The child's alarm bounds this wait. */
            EXPECT_EQ(lahja_cond_wait(&m.changed, LAHJA_FOREVER), 0);
            continue;
        }
        answered = m.checks;
        wait_mesh(ep, a);
        ping_round(ep, a, &m);
        lahja_broadcast_config_t cfg = { .filter_endpoint = "observer" };
        lahja_event_t *ok = bus_event("MeshOk", name);
        EXPECT_EQ(lahja_broadcast(ep, ok, &cfg, lahja_deadline_in(GUARD_MS)), 0);
        lahja_event_unref(ok);
    }
    lahja_subscription_cancel(check);
    lahja_subscription_cancel(done);
    lahja_subscription_cancel(ping);
    bus_close(ep);
    EXPECT_EQ(w.warnings, 0);
    return 0;
}

/* The observer: joined, not serving. */
static lahja_endpoint_t *observer(const char *dir, struct watch *w)
{
    lahja_endpoint_options_t opts = watch_opts(w);
    lahja_endpoint_t *ep = bus_client("observer", &opts);
    EXPECT_EQ(lahja_join(ep, dir), 0);
    return ep;
}

static void observer_sees_all(lahja_endpoint_t *ep, int n)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    for (int i = 0; i < n; i++) {
        char name[16];
        member_name(name, sizeof name, i);
        EXPECT_EQ(lahja_wait_until_connected_to(ep, name, deadline), 0);
    }
}

/* Every member confirms, once more, that it sees every other. */
static void check_mesh(lahja_endpoint_t *ep, int n, int round, struct bus_counter *oks)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    for (int i = 0; i < n; i++) {
        char name[16];
        member_name(name, sizeof name, i);
        EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, name, "Check", deadline), 0);
    }
    int before = oks->n;
    unsigned char r = (unsigned char)round;
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_event_new("Check", &r, 1, &ev), 0);
    EXPECT_EQ(lahja_broadcast(ep, ev, NULL, deadline), 0);
    lahja_event_unref(ev);
    bus_counter_wait(oks, before + n);
    EXPECT_EQ(lahja_wait_until_delivered(ep, deadline), 0);
}

static void members_done(lahja_endpoint_t *ep, bus_child_t *c, int n)
{
    for (int i = 0; i < n; i++) {
        char name[16];
        member_name(name, sizeof name, i);
        bus_peer_done(ep, name);
    }
    for (int i = 0; i < n; i++)
        EXPECT_CHILD_OK(&c[i]);
}

/* --------------------------------------------------------------- mesh */

/*
 * MEMBERS processes that only join one directory, started in a random
 * order (the observer joining somewhere among them), form a full mesh:
 * each sees the MEMBERS-1 others.  One is then killed (SIGKILL: its
 * socket stays behind) and started again, and the mesh is whole again,
 * its new process connected to every other.  Each time, every member
 * sends PINGS events to every other, and each receives them all.
 */
static int main_mesh_forms_and_heals(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct member_args args[MEMBERS];
    int order[MEMBERS];
    unsigned seed = (unsigned)getpid() ^ (unsigned)lahja_now();
    if (getenv("LAHJA_TEST_SEED") != NULL)
        seed = (unsigned)strtoul(getenv("LAHJA_TEST_SEED"), NULL, 10);
    srand(seed);
    fprintf(stderr, "mesh_forms_and_heals: seed %u (LAHJA_TEST_SEED=%u repeats it)\n", seed, seed);
    for (int i = 0; i < MEMBERS; i++) {
        args[i] = (struct member_args){ dir, i, MEMBERS, 0 };
        order[i] = i;
    }
    for (int i = MEMBERS - 1; i > 0; i--) {
        int k = rand() % (i + 1), t = order[i];
        order[i] = order[k];
        order[k] = t;
    }
    int observer_at = rand() % (MEMBERS + 1);
    int k = rand() % MEMBERS; /* the one killed and restarted */
    char path[BUS_DIR_MAX + 16];
    barrier_path(path, sizeof path, dir);
    EXPECT_EQ(mkfifo(path, 0600), 0);
    struct member_args again = { dir, k, MEMBERS, 1 };
    bus_child_t restarted = bus_fork(child_member, &again);

    bus_child_t c[MEMBERS];
    struct watch w;
    lahja_endpoint_t *ep = NULL;
    for (int i = 0; i <= MEMBERS; i++) {
        if (i == observer_at)
            ep = observer(dir, &w);
        if (i < MEMBERS)
            c[order[i]] = bus_fork(child_member, &args[order[i]]);
    }
    struct bus_counter oks;
    bus_counter_init(&oks);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "MeshOk", bus_count_handler, &oks, &s), 0);
    for (int i = 0; i < MEMBERS; i++)
        EXPECT_EQ(bus_child_await_signal(&c[i]), 0);
    observer_sees_all(ep, MEMBERS);
    check_mesh(ep, MEMBERS, 1, &oks);

    char name[16];
    member_name(name, sizeof name, k);
    EXPECT_EQ(kill(c[k].pid, SIGKILL), 0);
    int status = bus_child_wait_blocking(&c[k]);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    bus_wait_disconnected(ep, name);
    c[k] = restarted;
    barrier_release(&c[k], dir);
    EXPECT_EQ(bus_child_await_signal(&c[k]), 0); /* it sees every other */
    observer_sees_all(ep, MEMBERS);
    check_mesh(ep, MEMBERS, 2, &oks);             /* and every other sees it */
    lahja_peer_info_t info;
    EXPECT_EQ(lahja_peer_info(ep, name, &info), 0);
    EXPECT_EQ(info.pid, c[k].pid);
    EXPECT_EQ(info.kept, 1);

    members_done(ep, c, MEMBERS);
    lahja_subscription_cancel(s);
    bus_close(ep);
    EXPECT_EQ(w.warnings, 0);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(mesh_forms_and_heals)

/* --------------------------------------------------- files of the dir */

/* A socket file at dir/file that nobody listens on, as a killed process
 * leaves; `age_s` seconds old. */
static void dead_socket(const char *dir, const char *file, int age_s)
{
    char path[sizeof ((struct sockaddr_un *)0)->sun_path];
    EXPECT_TRUE((size_t)snprintf(path, sizeof path, "%s/%s", dir, file) < sizeof path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    EXPECT_TRUE(fd >= 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, path, sizeof path);
    EXPECT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
    if (age_s > 0) {
        struct timespec t[2] = { { .tv_sec = time(NULL) - age_s }, { .tv_sec = time(NULL) - age_s } };
        EXPECT_EQ(utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW), 0);
    }
}

static int exists(const char *dir, const char *file)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    return lstat(path, &st) == 0;
}

/* Waits until the observer no longer keeps `name` (every log line
 * wakes us: its removal is logged). */
static void wait_forgotten(lahja_endpoint_t *ep, struct watch *w, const char *name)
{
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    lahja_peer_info_t info;
    for (;;) {
        EXPECT_EQ(lahja_peer_info(ep, name, &info), 0);
        if (!info.kept && info.state != LAHJA_PEER_CONNECTING)
            return;
        EXPECT_EQ(lahja_cond_wait(&w->changed, deadline), 0);
    }
}

static lahja_peer_state_t state_of(lahja_endpoint_t *ep, const char *name)
{
    lahja_peer_info_t info;
    EXPECT_EQ(lahja_peer_info(ep, name, &info), 0);
    return info.state;
}

/*
 * A socket nobody listens on is not kept for ever: one found old is
 * cleaned at once; one that appears new is tried (it may be an endpoint
 * between its bind and its listen) and cleaned once it is old.  Files
 * that are not sockets, and sockets without the .ipc suffix, are left
 * alone and not tried.
 */
static int main_stale_sockets_cleaned_other_files_ignored(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    dead_socket(dir, "ghost.ipc", 3600);
    dead_socket(dir, "ghost.sock", 3600);
    char path[256];
    snprintf(path, sizeof path, "%s/plain.ipc", dir);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    EXPECT_TRUE(fd >= 0);
    close(fd);
    struct member_args alive = { dir, 0, 1, 0 };
    bus_child_t c = bus_fork(child_member, &alive);
    EXPECT_EQ(bus_child_await_signal(&c), 0);

    struct watch w;
    lahja_endpoint_t *ep = observer(dir, &w);
    EXPECT_EQ(lahja_wait_until_connected_to(ep, "m0", lahja_deadline_in(GUARD_MS)), 0);
    /* Cleaned by m0 or by the observer, whichever probes it first. */
    wait_forgotten(ep, &w, "ghost");
    EXPECT_TRUE(!exists(dir, "ghost.ipc"));
    EXPECT_EQ(state_of(ep, "ghost"), LAHJA_PEER_UNKNOWN);
    EXPECT_TRUE(exists(dir, "ghost.sock"));
    EXPECT_TRUE(exists(dir, "plain.ipc"));
    EXPECT_EQ(state_of(ep, "plain"), LAHJA_PEER_UNKNOWN);

    /* A new one: tried, and left while it is young. */
    time_t made = time(NULL);
    w.want = "kept connection to young: attempt";
    w.seen = 0;
    dead_socket(dir, "young.ipc", 0);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (w.seen == 0)
        EXPECT_EQ(lahja_cond_wait(&w.changed, deadline), 0);
    if (time(NULL) - made < 2)
        EXPECT_TRUE(exists(dir, "young.ipc"));
    char young[256];
    snprintf(young, sizeof young, "%s/young.ipc", dir);
    struct timespec old[2] = { { .tv_sec = made - 3600 }, { .tv_sec = made - 3600 } };
    if (exists(dir, "young.ipc")) {
        EXPECT_EQ(utimensat(AT_FDCWD, young, old, AT_SYMLINK_NOFOLLOW), 0);
        wait_forgotten(ep, &w, "young");
    }
    EXPECT_TRUE(!exists(dir, "young.ipc"));
    EXPECT_EQ(state_of(ep, "young"), LAHJA_PEER_UNKNOWN);

    bus_peer_done(ep, "m0");
    EXPECT_CHILD_OK(&c);
    bus_close(ep);
    EXPECT_EQ(w.warnings, 0);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(stale_sockets_cleaned_other_files_ignored)

/* ------------------------------------------------------------ leaving */

/*
 * A member that stops removes its socket: it has left, and its name is
 * no longer kept (no attempt follows its going).  The join's own errors
 * too.
 */
static int main_member_that_stops_has_left(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct member_args a = { dir, 0, 1, 0 };
    bus_child_t c = bus_fork(child_member, &a);
    EXPECT_EQ(bus_child_await_signal(&c), 0);
    struct watch w;
    lahja_endpoint_t *ep = observer(dir, &w);
    EXPECT_EQ(lahja_wait_until_connected_to(ep, "m0", lahja_deadline_in(GUARD_MS)), 0);
    lahja_peer_info_t info;
    EXPECT_EQ(lahja_peer_info(ep, "m0", &info), 0);
    EXPECT_EQ(info.kept, 1);

    w.want = "join: m0 left";
    w.seen = 0;
    bus_peer_done(ep, "m0");
    EXPECT_CHILD_OK(&c);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (w.seen == 0)
        EXPECT_EQ(lahja_cond_wait(&w.changed, deadline), 0);
    bus_wait_disconnected(ep, "m0");
    EXPECT_EQ(lahja_peer_info(ep, "m0", &info), 0);
    EXPECT_EQ(info.kept, 0);
    EXPECT_EQ(info.state, LAHJA_PEER_UNKNOWN);

    /* Errors. */
    EXPECT_EQ(lahja_join(NULL, dir), -EINVAL);
    EXPECT_EQ(lahja_join(ep, dir), -EALREADY);
    EXPECT_EQ(lahja_join(ep, ""), -EALREADY);
    lahja_endpoint_t *other = NULL;
    EXPECT_EQ(lahja_endpoint_new("other", NULL, &other), 0);
    EXPECT_EQ(lahja_join(other, dir), LAHJA_ELIFECYCLE);
    char elsewhere[BUS_DIR_MAX];
    bus_dir_make(elsewhere);
    lahja_conn_config_t cfg = bus_cfg(elsewhere, "other");
    EXPECT_EQ(lahja_endpoint_start(other, &cfg), 0);
    EXPECT_EQ(lahja_join(other, dir), -EINVAL);
    EXPECT_TRUE(strstr(lahja_endpoint_last_error(other), "serves at") != NULL);
    char slash[BUS_DIR_MAX + 2];
    snprintf(slash, sizeof slash, "%s/", elsewhere);
    EXPECT_EQ(lahja_join(other, slash), 0); /* the directory it serves in */
    bus_close(other);
    bus_dir_remove(elsewhere);

    bus_close(ep);
    EXPECT_EQ(w.warnings, 0);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(member_that_stops_has_left)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mesh_forms_and_heals),
        cmocka_unit_test(test_stale_sockets_cleaned_other_files_ignored),
        cmocka_unit_test(test_member_that_stops_has_left),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
