/*
 * Security and the handshake (B6, B27, B28): who may connect, peers that
 * speak another protocol or version, and peers that never finish the
 * handshake.
 *
 * The B27 tests need root, to run a child as another user (nobody,
 * 65534); they are skipped, saying so, otherwise.
 */
#define _GNU_SOURCE
#include <grp.h>

#include "support_bus.h"

#define NOBODY ((uid_t)65534)

/* ------------------------------------------------------ B6: handshake */

static uint8_t *b_wrong_magic(uint8_t *p)
{
    return raw_hello_as(p, "LAHJB", 1, "raw");
}

static uint8_t *b_version_2(uint8_t *p)
{
    return raw_hello_as(p, "LAHJA", 2, "raw");
}

/* A version 2 HELLO need not look like ours past magic and version: it
 * must still be told apart as another version, not as garbage. */
static uint8_t *b_version_2_other_layout(uint8_t *p)
{
    p = raw_header(p, 5 + 1 + 30, RAW_HELLO, 0);
    memcpy(p, "LAHJA", 5);
    p[5] = 2;
    memset(p + 6, 0xAB, 30);
    return p + 36;
}

static uint8_t *b_version_0(uint8_t *p)
{
    return raw_hello_as(p, "LAHJA", 0, "raw");
}

static const struct bus_raw_case wrong_magic = { .build = b_wrong_magic, .expect_err = -EPROTO };
static const struct bus_raw_case version_2 = { .build = b_version_2,
                                               .expect_err = -EPROTONOSUPPORT };
static const struct bus_raw_case version_2_layout = { .build = b_version_2_other_layout,
                                                      .expect_err = -EPROTONOSUPPORT };
static const struct bus_raw_case version_0 = { .build = b_version_0,
                                               .expect_err = -EPROTONOSUPPORT };

/* B6: a client with the wrong magic, or another version, is refused (it
 * is hung up on after our HELLO), the reason logged, and the endpoint's
 * other peer is unaffected. */
static int main_hello_wrong_magic(void *arg)
{
    (void)arg;
    bus_raw_case_run(&wrong_magic, 0);
    return 0;
}
BUS_MAIN_TEST(hello_wrong_magic)

static int main_hello_version_2(void *arg)
{
    (void)arg;
    bus_raw_case_run(&version_2, 0);
    bus_raw_case_run(&version_2_layout, 0);
    bus_raw_case_run(&version_0, 0);
    return 0;
}
BUS_MAIN_TEST(hello_version_2)

/* A server speaking another protocol: accepts one connection, sends the
 * HELLO it was given, and waits for the client to hang up. */
struct raw_server {
    char path[LAHJA_PATH_MAX + 1];
    uint8_t *(*build)(uint8_t *p);
};

static uint8_t *b_server_wrong_magic(uint8_t *p)
{
    return raw_hello_as(p, "LAHJB", 1, "srv");
}

static uint8_t *b_server_version_2(uint8_t *p)
{
    return raw_hello_as(p, "LAHJA", 2, "srv");
}

static int child_raw_server(void *arg)
{
    const struct raw_server *s = arg;
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", s->path);
    EXPECT_EQ(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    EXPECT_EQ(listen(lfd, 4), 0);
    int fd = accept(lfd, NULL, NULL);
    EXPECT_TRUE(fd >= 0);
    struct timeval tv = { GUARD_MS / 1000, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t buf[512];
    uint8_t *end = s->build(buf);
    raw_send(fd, buf, (size_t)(end - buf));
    uint8_t got[512];
    ssize_t n = raw_read_to_eof(fd, got, sizeof got);
    EXPECT_TRUE(n >= 0);
    /* The client said who it is before it hung up. */
    raw_expect_hello(got, n, "cli");
    close(fd);
    close(lfd);
    return 0;
}

/* B6 from the connecting side: lahja_connect fails with a clear error. */
static void connect_to_raw_server(uint8_t *(*build)(uint8_t *), int expect)
{
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct raw_server s = { .build = build };
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    snprintf(s.path, sizeof s.path, "%s", cfg.path);
    bus_child_t c = bus_fork_plain(child_raw_server, &s);
    struct bus_log log = { 0 };
    lahja_endpoint_options_t opts = bus_opts(&log);
    lahja_endpoint_t *ep = bus_client("cli", &opts);
    /* connect waits for the socket to appear. */
    EXPECT_EQ(lahja_connect(ep, &cfg, 1, lahja_deadline_in(GUARD_MS)), expect);
    EXPECT_EQ(lahja_is_connected_to(ep, "srv"), 0);
    EXPECT_EQ(bus_log_count(&log, "connection to srv", lahja_strerror(expect), NULL), 1);
    EXPECT_CHILD_OK(&c);
    bus_close(ep);
    bus_dir_remove(dir);
}

static int main_connect_to_other_protocol(void *arg)
{
    (void)arg;
    connect_to_raw_server(b_server_wrong_magic, -EPROTO);
    connect_to_raw_server(b_server_version_2, -EPROTONOSUPPORT);
    return 0;
}
BUS_MAIN_TEST(connect_to_other_protocol)

/* --------------------------------------------- B28: handshake timeout */

static uint8_t *b_nothing(uint8_t *p)
{
    return p;
}

static uint8_t *b_half_hello(uint8_t *p)
{
    uint8_t hello[64];
    raw_hello(hello, "slow");
    memcpy(p, hello, 10); /* the header and two bytes of magic */
    return p + 10;
}

#define HANDSHAKE_MS 200

/* The loop's clock counts whole milliseconds, so a timer may fire up to
 * one millisecond early as seen from a finer clock. */
static const struct bus_raw_case silent = { .build = b_nothing,
                                            .expect_text = "no handshake in time",
                                            .min_ms = HANDSHAKE_MS - 1 };
static const struct bus_raw_case half_hello = { .build = b_half_hello,
                                                .expect_text = "no handshake in time",
                                                .min_ms = HANDSHAKE_MS - 1 };

/* B28: a client that connects and never sends its HELLO (or only part of
 * it) is dropped once handshake_timeout_ms has passed, and not before. */
static int main_handshake_timeout(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct bus_log log = { 0 };
    lahja_endpoint_options_t opts = bus_opts(&log);
    opts.handshake_timeout_ms = HANDSHAKE_MS; /* for every peer */
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    lahja_subscription_t *echo = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Echo", bus_echo_handler, "EchoAnswer", &echo), 0);
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");

    const struct bus_raw_case *cases[] = { &silent, &half_hello };
    for (int i = 0; i < 2; i++) {
        int from = log.n;
        struct bus_raw_visit visit = { cases[i], cfg.path };
        bus_child_t raw = bus_fork_plain(bus_raw_client, &visit);
        EXPECT_CHILD_OK(&raw);
        bus_expect_dropped(&log, from, cases[i]);
    }

    /*
     * Still serving, and a peer that does complete its handshake is not
     * dropped by the timer.  The peer is in this process: its HELLO
     * arrives within a loop turn or two of the accept, which no load on
     * the machine can stretch to 200 ms the way it could delay another
     * process.
     */
    lahja_endpoint_t *cli = bus_client("cli", &opts);
    EXPECT_EQ(bus_connect(cli, dir, "srv"), 0);
    bus_ask(cli, "Echo", "EchoAnswer", "in time", "srv", "in time");
    EXPECT_EQ(lahja_is_connected_to(ep, "cli"), 1);
    bus_close(cli);
    lahja_subscription_cancel(echo);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(handshake_timeout)

/* ------------------------------------------------- B27: other users */

static int skip_unless_root(void)
{
    if (geteuid() == 0)
        return 0;
    fprintf(stderr, "  skipped: B27 needs root, to run a peer as another user (nobody)\n");
    return 1;
}

/* In a child: drops to nobody for good. */
static void become_nobody(void)
{
    EXPECT_EQ(setgroups(0, NULL), 0);
    EXPECT_EQ(setgid((gid_t)NOBODY), 0);
    EXPECT_EQ(setuid(NOBODY), 0);
    EXPECT_EQ(geteuid(), NOBODY);
}

/*
 * The test directory is made 0755 so that nobody can reach the socket
 * at all: the connect attempt itself is what is under test.  (A private
 * directory, like an endpoint's default one, 0700, would stop nobody
 * before the socket.)  Where the credential check is under test, the
 * socket file is also opened to all (0666), since connect(2) needs write
 * permission on it.
 */
static void dir_open_to_all(const char *dir)
{
    EXPECT_EQ(chmod(dir, 0755), 0);
}

struct nobody_try {
    const char *dir;
    int expect_raw;     /* raw_connect's result: 0 (connected) or -EACCES */
    int expect_connect; /* lahja_connect's */
    int ask;            /* then exchange a request with srv */
};

/* As nobody: a raw connect, then a real endpoint's lahja_connect. */
static int child_nobody(void *arg)
{
    const struct nobody_try *t = arg;
    become_nobody();
    lahja_conn_config_t cfg = bus_cfg(t->dir, "srv");

    int fd = raw_connect(cfg.path);
    EXPECT_EQ(fd < 0 ? fd : 0, t->expect_raw);
    if (fd >= 0) {
        uint8_t hello[64];
        uint8_t *end = raw_hello(hello, "raw-nobody");
        raw_send(fd, hello, (size_t)(end - hello));
        uint8_t got[64];
        if (t->expect_connect == 0) {
            /* Let in: the endpoint's HELLO comes; we leave. */
            size_t want = RAW_HDR + 15 + strlen("srv");
            EXPECT_EQ(recv(fd, got, want, MSG_WAITALL), (ssize_t)want);
            raw_expect_hello(got, (ssize_t)want, "srv");
        } else {
            /* Hung up on before a word. */
            EXPECT_EQ(raw_read_to_eof(fd, got, sizeof got), 0);
        }
        close(fd);
    }

    /* The client checks the server's user too (B27, both directions):
     * let root in, so that what is tested is the server's check. */
    static const uid_t root[] = { 0 };
    lahja_endpoint_options_t opts = bus_opts(NULL);
    opts.allowed_uids = root;
    opts.n_allowed_uids = 1;
    lahja_endpoint_t *ep = bus_client("nobody", &opts);
    EXPECT_EQ(lahja_connect(ep, &cfg, 1, lahja_deadline_in(GUARD_MS)), t->expect_connect);
    if (t->ask)
        bus_ask(ep, "Echo", "EchoAnswer", "from nobody", "srv", "from nobody");
    bus_close(ep);
    return 0;
}

/* srv (root, the given allowed uids) meets a nobody child, then a peer of
 * its own user. */
static void meet_nobody(struct nobody_try *t, const uid_t *allowed, size_t nallowed,
                        mode_t socket_mode, int expect_refusals)
{
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    dir_open_to_all(dir);
    t->dir = dir;
    struct bus_log log = { 0 };
    lahja_endpoint_options_t opts = bus_opts(&log);
    opts.allowed_uids = allowed;
    opts.n_allowed_uids = nallowed;
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    lahja_subscription_t *echo = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Echo", bus_echo_handler, "EchoAnswer", &echo), 0);
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    if (socket_mode != 0600)
        EXPECT_EQ(chmod(cfg.path, socket_mode), 0);

    bus_child_t c = bus_fork(child_nobody, t);
    EXPECT_CHILD_OK(&c);
    int refused = bus_log_count(&log, "refusing a process of uid 65534", NULL, NULL);
    if (refused != expect_refusals)
        bus_log_dump(&log);
    EXPECT_EQ(refused, expect_refusals);
    EXPECT_EQ(lahja_is_connected_to(ep, "nobody"), 0);

    /* A peer of our own user is let in. */
    struct bus_peer_args peer = { dir, "peer", "srv" };
    bus_child_t pc = bus_fork(bus_peer_main, &peer);
    bus_ask(ep, "Echo", "EchoAnswer", "same user", "peer", "same user");
    bus_peer_done(ep, "peer");
    EXPECT_CHILD_OK(&pc);
    lahja_subscription_cancel(echo);
    bus_close(ep);
    bus_dir_remove(dir);
}

/* B27, the file mode: the socket file is 0600, so another user's connect
 * fails at once with -EACCES, and the endpoint never hears of it. */
static int main_other_user_file_mode(void *arg)
{
    (void)arg;
    struct nobody_try t = { .expect_raw = -EACCES, .expect_connect = -EACCES };
    meet_nobody(&t, NULL, 0, 0600, 0);
    return 0;
}

static void test_other_user_file_mode(void **state)
{
    (void)state;
    if (skip_unless_root())
        skip();
    bus_run_in_child(main_other_user_file_mode, NULL);
}

/*
 * B27, the credential check: the socket file opened to all (0666), the
 * endpoint still refuses another user: it hangs up at once, before saying
 * anything (the raw client reads EOF and nothing else), and logs the
 * refusal.  A lahja client sees the hang-up during its handshake:
 * LAHJA_EREMOTEDISCONNECTED.
 */
static int main_other_user_credentials(void *arg)
{
    (void)arg;
    struct nobody_try t = { .expect_raw = 0, .expect_connect = LAHJA_EREMOTEDISCONNECTED };
    meet_nobody(&t, NULL, 0, 0666, 2);
    return 0;
}

static void test_other_user_credentials(void **state)
{
    (void)state;
    if (skip_unless_root())
        skip();
    bus_run_in_child(main_other_user_credentials, NULL);
}

/* B27, widened: with nobody in allowed_uids (and the file open to it),
 * nobody connects and exchanges events. */
static int main_other_user_allowed(void *arg)
{
    (void)arg;
    static const uid_t allowed[] = { NOBODY };
    struct nobody_try t = { .expect_raw = 0, .expect_connect = 0, .ask = 1 };
    meet_nobody(&t, allowed, 1, 0666, 0);
    return 0;
}

static void test_other_user_allowed(void **state)
{
    (void)state;
    if (skip_unless_root())
        skip();
    bus_run_in_child(main_other_user_allowed, NULL);
}

/* A server run by nobody, in a directory of its own, that lets root in
 * (allowed_uids {0}) and stops when told (bus_peer_done). */
static int child_nobody_server(void *arg)
{
    const char *dir = arg;
    become_nobody();
    static const uid_t root[] = { 0 };
    lahja_endpoint_options_t opts = bus_opts(NULL);
    opts.allowed_uids = root;
    opts.n_allowed_uids = 1;
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    lahja_subscription_t *echo = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Echo", bus_echo_handler, "EchoAnswer", &echo), 0);
    lahja_event_t *done = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Done", LAHJA_FOREVER, &done), 0);
    lahja_event_unref(done);
    lahja_subscription_cancel(echo);
    bus_close(ep);
    return 0;
}

/* B27 in the other direction: the connecting side checks the server's
 * user too.  Connecting to a server run by nobody fails with -EACCES,
 * unless nobody is in our allowed_uids. */
static int main_server_of_other_user(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX], sub[BUS_DIR_MAX + 16];
    bus_dir_make(dir);
    dir_open_to_all(dir);
    snprintf(sub, sizeof sub, "%s/nobody", dir);
    EXPECT_EQ(mkdir(sub, 0755), 0);
    EXPECT_EQ(chown(sub, NOBODY, (gid_t)NOBODY), 0);
    bus_child_t c = bus_fork(child_nobody_server, sub);
    lahja_conn_config_t cfg = bus_cfg(sub, "srv");

    struct bus_log log = { 0 };
    lahja_endpoint_options_t opts = bus_opts(&log);
    lahja_endpoint_t *strict = bus_client("strict", &opts);
    EXPECT_EQ(lahja_connect(strict, &cfg, 1, lahja_deadline_in(GUARD_MS)), -EACCES);
    EXPECT_EQ(bus_log_count(&log, "refusing a process of uid 65534", NULL, NULL), 1);
    EXPECT_EQ(lahja_is_connected_to(strict, "srv"), 0);
    bus_close(strict);

    static const uid_t allowed[] = { NOBODY };
    opts.allowed_uids = allowed;
    opts.n_allowed_uids = 1;
    lahja_endpoint_t *open = bus_client("open", &opts);
    EXPECT_EQ(lahja_connect(open, &cfg, 1, lahja_deadline_in(GUARD_MS)), 0);
    bus_ask(open, "Echo", "EchoAnswer", "to nobody", "srv", "to nobody");
    bus_peer_done(open, "srv");
    EXPECT_CHILD_OK(&c);
    bus_close(open);
    bus_dir_remove(dir);
    return 0;
}

static void test_server_of_other_user(void **state)
{
    (void)state;
    if (skip_unless_root())
        skip();
    bus_run_in_child(main_server_of_other_user, NULL);
}

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_wrong_magic),
        cmocka_unit_test(test_hello_version_2),
        cmocka_unit_test(test_connect_to_other_protocol),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_other_user_file_mode),
        cmocka_unit_test(test_other_user_credentials),
        cmocka_unit_test(test_other_user_allowed),
        cmocka_unit_test(test_server_of_other_user),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
