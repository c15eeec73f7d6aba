/*
 * Endpoints and connections (B1-B5): where an endpoint listens, stale and
 * live socket files, pure clients, connect's waiting and refusals, and
 * one connection carrying traffic both ways without relaying.
 *
 * Peers run in forked processes, each with its own runtime; tests use a
 * fresh temporary directory as base directory so that they can run in
 * parallel.
 */
#define _GNU_SOURCE
#include <poll.h>

#include "support_bus.h"

#define PENDING 12345

/* ------------------------------------------------------- B1: configs */

static void expect_bad_name(const char *name)
{
    lahja_conn_config_t cfg;
    memset(&cfg, 0x5a, sizeof cfg);
    lahja_conn_config_t before = cfg;
    EXPECT_EQ(lahja_conn_config_from_name(&cfg, name, "/tmp"), -EINVAL);
    EXPECT_EQ(lahja_conn_config_from_path(&cfg, name, "/tmp/x.ipc"), -EINVAL);
    /* Output parameters are set only on success. */
    EXPECT_EQ(memcmp(&cfg, &before, sizeof cfg), 0);
    lahja_endpoint_t *ep = NULL;
    EXPECT_EQ(lahja_endpoint_new(name, NULL, &ep), -EINVAL);
    EXPECT_TRUE(ep == NULL);
}

static void test_config_names(void **state)
{
    (void)state;
    char n256[257], n255[256];
    memset(n256, 'a', 256);
    n256[256] = '\0';
    memset(n255, 'b', 255);
    n255[255] = '\0';

    expect_bad_name("");
    expect_bad_name(n256);
    expect_bad_name("a/b");
    expect_bad_name("/");
    expect_bad_name("a\x01" "b");
    expect_bad_name("tab\tname");
    expect_bad_name("del\x7f");
    expect_bad_name("caf\xc3\xa9");
    expect_bad_name(NULL);

    lahja_conn_config_t cfg;
    EXPECT_EQ(lahja_conn_config_from_name(&cfg, "srv-1 x", "/run/a"), 0);
    assert_string_equal(cfg.name, "srv-1 x");
    assert_string_equal(cfg.path, "/run/a/srv-1 x.ipc");
    EXPECT_EQ(lahja_conn_config_from_path(&cfg, "srv", "/some/where.sock"), 0);
    assert_string_equal(cfg.name, "srv");
    assert_string_equal(cfg.path, "/some/where.sock");

    /* 255 bytes is a valid name: it fits a config given by path, but no
     * Unix socket path can hold it with a directory. */
    EXPECT_EQ(lahja_conn_config_from_path(&cfg, n255, "/tmp/long.ipc"), 0);
    assert_string_equal(cfg.name, n255);
    EXPECT_EQ(lahja_conn_config_from_name(&cfg, n255, "/tmp"), -ENAMETOOLONG);
    EXPECT_EQ(lahja_conn_config_from_path(&cfg, "srv", ""), -EINVAL);
    EXPECT_EQ(lahja_conn_config_from_path(&cfg, "srv", NULL), -EINVAL);
}

static void test_config_path_lengths(void **state)
{
    (void)state;
    /* sun_path holds 107 bytes and the NUL. */
    char path[LAHJA_PATH_MAX + 2];
    memset(path, 'p', sizeof path);
    path[0] = '/';
    path[LAHJA_PATH_MAX] = '\0';
    lahja_conn_config_t cfg;
    EXPECT_EQ(lahja_conn_config_from_path(&cfg, "srv", path), 0);
    EXPECT_EQ(strlen(cfg.path), LAHJA_PATH_MAX);
    path[LAHJA_PATH_MAX] = 'p';
    path[LAHJA_PATH_MAX + 1] = '\0';
    memset(&cfg, 0, sizeof cfg);
    EXPECT_EQ(lahja_conn_config_from_path(&cfg, "srv", path), -ENAMETOOLONG);
    EXPECT_EQ(cfg.name[0], '\0');

    /* <base>/<name>.ipc: base of 98 bytes + "/" + "srv" + ".ipc" = 106,
     * then 107 fits, 108 does not. */
    char base[LAHJA_PATH_MAX];
    memset(base, 'd', 100);
    base[0] = '/';
    base[99] = '\0';
    EXPECT_EQ(lahja_conn_config_from_name(&cfg, "srv", base), 0);
    EXPECT_EQ(strlen(cfg.path), 99 + 1 + 3 + 4);
    base[99] = 'd';
    base[100] = '\0';
    EXPECT_EQ(lahja_conn_config_from_name(&cfg, "srv", base), -ENAMETOOLONG);

    char small[8];
    EXPECT_EQ(lahja_default_base_dir(small, sizeof small), -ENAMETOOLONG);
}

/* B1: the default base directory, from the environment of a child (so
 * that the test process's own is left alone). */
static int child_default_dirs(void *arg)
{
    const char *dir = arg;
    char want[256], got[256];
    snprintf(want, sizeof want, "%s/lahja", dir);
    EXPECT_EQ(setenv("XDG_RUNTIME_DIR", dir, 1), 0);
    EXPECT_EQ(lahja_default_base_dir(got, sizeof got), 0);
    EXPECT_TRUE(strcmp(got, want) == 0);

    lahja_conn_config_t cfg;
    EXPECT_EQ(lahja_conn_config_from_name(&cfg, "srv", NULL), 0);
    snprintf(want, sizeof want, "%s/lahja/srv.ipc", dir);
    EXPECT_TRUE(strcmp(cfg.path, want) == 0);

    snprintf(want, sizeof want, "/tmp/lahja-%u", (unsigned)geteuid());
    EXPECT_EQ(unsetenv("XDG_RUNTIME_DIR"), 0);
    EXPECT_EQ(lahja_default_base_dir(got, sizeof got), 0);
    EXPECT_TRUE(strcmp(got, want) == 0);
    /* A relative XDG_RUNTIME_DIR is invalid (XDG base directory spec):
     * ignored. */
    EXPECT_EQ(setenv("XDG_RUNTIME_DIR", "relative/dir", 1), 0);
    EXPECT_EQ(lahja_default_base_dir(got, sizeof got), 0);
    EXPECT_TRUE(strcmp(got, want) == 0);
    return 0;
}

static void test_default_base_dir(void **state)
{
    (void)state;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    bus_child_t c = bus_fork_plain(child_default_dirs, dir);
    EXPECT_CHILD_OK(&c);
    bus_dir_remove(dir);
}

static void expect_mode(const char *path, mode_t type, mode_t perms)
{
    struct stat st;
    EXPECT_EQ(lstat(path, &st), 0);
    EXPECT_EQ(st.st_mode & S_IFMT, type);
    EXPECT_EQ(st.st_mode & 07777, perms);
}

static void expect_absent(const char *path)
{
    struct stat st;
    EXPECT_EQ(lstat(path, &st) == 0 ? 0 : -errno, -ENOENT);
}

/* B1: serving in the default directory creates it, 0700; the socket
 * file is 0600.  A child sets XDG_RUNTIME_DIR to the test's directory. */
static int child_serve_default(void *arg)
{
    const char *dir = arg;
    char base[256], sock[256];
    snprintf(base, sizeof base, "%s/lahja", dir);
    snprintf(sock, sizeof sock, "%s/lahja/srv.ipc", dir);
    EXPECT_EQ(setenv("XDG_RUNTIME_DIR", dir, 1), 0);
    expect_absent(base);

    lahja_conn_config_t cfg;
    EXPECT_EQ(lahja_conn_config_from_name(&cfg, "srv", NULL), 0);
    lahja_endpoint_t *ep = NULL;
    EXPECT_EQ(lahja_endpoint_new("srv", NULL, &ep), 0);
    EXPECT_EQ(lahja_endpoint_start(ep, &cfg), 0);
    expect_mode(base, S_IFDIR, 0700);
    expect_mode(sock, S_IFSOCK, 0600);
    bus_close(ep);
    expect_absent(sock);

    /* An existing default directory open to others is made private:
     * another user who can write there could swap our socket. */
    EXPECT_EQ(chmod(base, 0755), 0);
    EXPECT_EQ(lahja_endpoint_new("srv", NULL, &ep), 0);
    EXPECT_EQ(lahja_endpoint_start(ep, &cfg), 0);
    expect_mode(base, S_IFDIR, 0700);
    bus_close(ep);

    /* One that belongs to another user is not used at all (root can
     * give it away to test this). */
    if (geteuid() == 0) {
        EXPECT_EQ(chown(base, 65534, 65534), 0);
        EXPECT_EQ(lahja_endpoint_new("srv", NULL, &ep), 0);
        EXPECT_EQ(lahja_endpoint_start(ep, &cfg), -EPERM);
        EXPECT_EQ(lahja_endpoint_is_running(ep), 0);
        expect_absent(sock);
        EXPECT_EQ(lahja_endpoint_free(ep), 0);
    }
    return 0;
}

static void test_serving_creates_default_dir_0700(void **state)
{
    (void)state;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    bus_child_t c = bus_fork(child_serve_default, dir);
    EXPECT_CHILD_OK(&c);
    bus_dir_remove(dir);
}

/* B1: in an explicit directory too, the socket file is 0600. */
static int main_socket_mode(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX], path[128];
    bus_dir_make(dir);
    snprintf(path, sizeof path, "%s/srv.ipc", dir);
    lahja_endpoint_t *ep = NULL;
    EXPECT_EQ(lahja_endpoint_new("srv", NULL, &ep), 0);
    EXPECT_EQ(lahja_endpoint_is_running(ep), 0);
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 0);

    /* A config naming another endpoint is refused, and nothing done. */
    lahja_conn_config_t other = bus_cfg(dir, "other");
    EXPECT_EQ(lahja_endpoint_start(ep, &other), -EINVAL);
    EXPECT_EQ(lahja_endpoint_is_running(ep), 0);
    expect_absent(other.path);

    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    EXPECT_EQ(lahja_endpoint_start(ep, &cfg), 0);
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 1);
    expect_mode(path, S_IFSOCK, 0600);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(socket_mode)

/* ------------------------------------------------- B2: socket files */

/* A process that listens at the path, says so, and waits to be killed. */
static int child_bind_and_wait(void *arg)
{
    const char *path = arg;
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    EXPECT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    EXPECT_EQ(listen(fd, 4), 0);
    bus_child_signal();
    for (;;)
        pause(); /* until SIGKILL (or the alarm) */
    return 0;
}

struct stale_args {
    char dir[BUS_DIR_MAX];
};

static int main_stale_socket(void *arg)
{
    struct stale_args *a = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(a->dir, "srv", &opts);
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 1);
    /* It really listens: a peer connects and is answered. */
    struct bus_peer_args peer = { a->dir, "cli", "srv" };
    bus_child_t c = bus_fork(bus_peer_main, &peer);
    bus_ask(ep, "Echo", "EchoAnswer", "over the stale file", "cli", "over the stale file");
    bus_peer_done(ep, "cli");
    EXPECT_CHILD_OK(&c);
    bus_close(ep);
    return 0;
}

/* B2: a socket file left by a process killed with SIGKILL is replaced. */
static void test_stale_socket_replaced(void **state)
{
    (void)state;
    struct stale_args a;
    bus_dir_make(a.dir);
    lahja_conn_config_t cfg = bus_cfg(a.dir, "srv");
    bus_child_t c = bus_fork_plain(child_bind_and_wait, cfg.path);
    EXPECT_EQ(bus_child_await_signal(&c), 0);
    EXPECT_EQ(kill(c.pid, SIGKILL), 0);
    int status = bus_child_wait(&c);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    struct stat st;
    EXPECT_EQ(lstat(cfg.path, &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode)); /* left behind */

    bus_run_in_child(main_stale_socket, &a);
    expect_absent(cfg.path);
    bus_dir_remove(a.dir);
}

/* In another process: serving the same name fails, and the live endpoint
 * still accepts this process as a client. */
static int child_second_server(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_t *dup = NULL;
    EXPECT_EQ(lahja_endpoint_new("srv", NULL, &dup), 0);
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    EXPECT_EQ(lahja_endpoint_start(dup, &cfg), -EADDRINUSE);
    EXPECT_TRUE(strstr(lahja_endpoint_last_error(dup), "a live endpoint serves there") != NULL);
    EXPECT_TRUE(strstr(lahja_endpoint_last_error(dup), cfg.path) != NULL);
    EXPECT_EQ(lahja_endpoint_is_serving(dup), 0);
    EXPECT_EQ(lahja_endpoint_is_running(dup), 0);
    EXPECT_EQ(lahja_endpoint_free(dup), 0);

    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *cli = bus_client("cli", &opts);
    EXPECT_EQ(bus_connect(cli, dir, "srv"), 0);
    bus_ask(cli, "Echo", "EchoAnswer", "still there", "srv", "still there");
    bus_close(cli);
    return 0;
}

/* B2: serving over a live endpoint of the same name fails with
 * -EADDRINUSE and leaves the live one alone. */
static int main_live_socket_kept(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    lahja_subscription_t *echo = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Echo", bus_echo_handler, "EchoAnswer", &echo), 0);
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    struct stat before, after;
    EXPECT_EQ(lstat(cfg.path, &before), 0);

    bus_child_t c = bus_fork(child_second_server, dir);
    EXPECT_CHILD_OK(&c);

    EXPECT_EQ(lstat(cfg.path, &after), 0);
    EXPECT_EQ(after.st_ino, before.st_ino);
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 1);
    lahja_subscription_cancel(echo);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(live_socket_kept)

/* B2: stopping removes the socket file. */
static int main_stop_removes_socket(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    lahja_endpoint_t *ep = bus_serve(dir, "srv", NULL);
    expect_mode(cfg.path, S_IFSOCK, 0600);
    EXPECT_EQ(lahja_endpoint_stop(ep), 0);
    expect_absent(cfg.path);
    EXPECT_EQ(lahja_endpoint_free(ep), 0);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(stop_removes_socket)

/* B2: what is at the path and is not a socket is not ours to replace. */
static int main_non_socket_untouched(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    const char content[] = "precious data";
    FILE *f = fopen(cfg.path, "w");
    EXPECT_TRUE(f != NULL);
    EXPECT_EQ(fwrite(content, 1, sizeof content, f), sizeof content);
    EXPECT_EQ(fclose(f), 0);
    EXPECT_EQ(chmod(cfg.path, 0640), 0);

    lahja_endpoint_t *ep = NULL;
    EXPECT_EQ(lahja_endpoint_new("srv", NULL, &ep), 0);
    EXPECT_EQ(lahja_endpoint_start(ep, &cfg), -EEXIST);
    EXPECT_EQ(lahja_endpoint_is_running(ep), 0);
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 0);
    expect_mode(cfg.path, S_IFREG, 0640);
    char back[sizeof content + 8] = { 0 };
    f = fopen(cfg.path, "r");
    EXPECT_TRUE(f != NULL);
    EXPECT_EQ(fread(back, 1, sizeof back, f), sizeof content);
    fclose(f);
    EXPECT_EQ(memcmp(back, content, sizeof content), 0);

    /* A directory there is left alone too. */
    lahja_conn_config_t dcfg = bus_cfg(dir, "srv-dir");
    EXPECT_EQ(mkdir(dcfg.path, 0700), 0);
    lahja_endpoint_t *ep2 = NULL;
    EXPECT_EQ(lahja_endpoint_new("srv-dir", NULL, &ep2), 0);
    EXPECT_EQ(lahja_endpoint_start(ep2, &dcfg), -EEXIST);
    expect_mode(dcfg.path, S_IFDIR, 0700);
    EXPECT_EQ(lahja_endpoint_free(ep2), 0);

    /* The refused start did nothing: the endpoint can still serve
     * elsewhere. */
    char other[128];
    snprintf(other, sizeof other, "%s/elsewhere.ipc", dir);
    lahja_conn_config_t ocfg;
    EXPECT_EQ(lahja_conn_config_from_path(&ocfg, "srv", other), 0);
    EXPECT_EQ(lahja_endpoint_start(ep, &ocfg), 0);
    expect_mode(other, S_IFSOCK, 0600);
    bus_close(ep);
    expect_mode(cfg.path, S_IFREG, 0640);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(non_socket_untouched)

/*
 * A start that fails while binding (its directory does not exist) must
 * leave nothing behind that outlives the endpoint: freeing it at once,
 * then letting the loop run, touches no freed memory.  Run in a child so
 * that a sanitizer's abort is reported as this test's failure.
 */
static int child_bind_fails_then_free(void *arg)
{
    const char *dir = arg;
    char missing[128];
    snprintf(missing, sizeof missing, "%s/missing", dir);
    lahja_endpoint_t *ep = NULL;
    EXPECT_EQ(lahja_endpoint_new("srv", NULL, &ep), 0);
    lahja_conn_config_t cfg = bus_cfg(missing, "srv");
    EXPECT_EQ(lahja_endpoint_start(ep, &cfg), -ENOENT);
    EXPECT_EQ(lahja_endpoint_is_running(ep), 0);
    EXPECT_EQ(lahja_endpoint_free(ep), 0);
    /* Let the loop run its close callbacks while this task is alive. */
    for (int i = 0; i < 4; i++)
        EXPECT_EQ(lahja_sleep(1), 0);
    return 0;
}

static void test_failed_bind_then_free(void **state)
{
    (void)state;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    bus_child_t c = bus_fork(child_bind_fails_then_free, dir);
    EXPECT_CHILD_OK(&c);
    bus_dir_remove(dir);
}

/* Same, but the endpoint is started again after the failed bind, then
 * stopped and freed: the first attempt's handle must not disturb the
 * second's bookkeeping. */
static int child_bind_fails_then_retry(void *arg)
{
    const char *dir = arg;
    char missing[128];
    snprintf(missing, sizeof missing, "%s/missing", dir);
    lahja_endpoint_t *ep = NULL;
    EXPECT_EQ(lahja_endpoint_new("srv", NULL, &ep), 0);
    lahja_conn_config_t bad = bus_cfg(missing, "srv");
    EXPECT_EQ(lahja_endpoint_start(ep, &bad), -ENOENT);
    lahja_conn_config_t good = bus_cfg(dir, "srv");
    EXPECT_EQ(lahja_endpoint_start(ep, &good), 0);
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 1);
    bus_close(ep);
    for (int i = 0; i < 4; i++)
        EXPECT_EQ(lahja_sleep(1), 0);
    return 0;
}

static void test_failed_bind_then_retry(void **state)
{
    (void)state;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    bus_child_t c = bus_fork(child_bind_fails_then_retry, dir);
    EXPECT_CHILD_OK(&c);
    bus_dir_remove(dir);
}

/* ---------------------------------------------------- B3: pure client */

/* The pure client: no socket file, and events both ways. */
static int child_pure_client(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("cli", &opts);
    EXPECT_EQ(lahja_endpoint_is_running(ep), 1);
    EXPECT_EQ(lahja_endpoint_is_serving(ep), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/cli.ipc", dir);
    expect_absent(path);

    lahja_stream_t *in = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "ToCli", 1, NULL, &in), 0);
    EXPECT_EQ(bus_connect(ep, dir, "srv"), 0);
    EXPECT_EQ(lahja_is_connected_to(ep, "srv"), 1);
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_stream_next(in, lahja_deadline_in(GUARD_MS), &ev), 0);
    EXPECT_TRUE(bus_payload_is(ev, "to the client"));
    EXPECT_TRUE(strcmp(lahja_event_origin(ev), "srv") == 0);
    lahja_event_unref(ev);
    lahja_stream_close(in);

    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "srv", "ToSrv",
                                                      lahja_deadline_in(GUARD_MS)),
              0);
    EXPECT_EQ(bus_send(ep, "ToSrv", "to the server"), 0);
    /* Stays until the server has it: it unsubscribes then. */
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    while (lahja_is_endpoint_subscribed_to(ep, "srv", "ToSrv"))
        EXPECT_EQ(lahja_wait_until_endpoint_subscriptions_change(ep, deadline), 0);
    bus_close(ep);
    return 0;
}

static int main_pure_client(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    lahja_stream_t *in = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "ToSrv", 1, NULL, &in), 0);

    bus_child_t c = bus_fork(child_pure_client, dir);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "cli", "ToCli", deadline), 0);
    EXPECT_EQ(bus_send(ep, "ToCli", "to the client"), 0);
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_stream_next(in, deadline, &ev), 0);
    EXPECT_TRUE(bus_payload_is(ev, "to the server"));
    EXPECT_TRUE(strcmp(lahja_event_origin(ev), "cli") == 0);
    lahja_event_unref(ev);
    lahja_stream_close(in);
    EXPECT_CHILD_OK(&c);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(pure_client)

/* ------------------------------------------------------ B4: connect */

struct connect_call {
    lahja_endpoint_t *ep;
    lahja_conn_config_t cfg;
    int started;
    int rc;
};

static int task_connect(void *arg)
{
    struct connect_call *call = arg;
    call->started = 1;
    call->rc = lahja_connect(call->ep, &call->cfg, 1, lahja_deadline_in(GUARD_MS));
    return 0;
}

/* B4: connect waits for a socket that does not exist yet: the server is
 * started, from another process, only once the connect is under way. */
static int main_connect_waits_for_socket(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("cli", &opts);
    struct connect_call call = { ep, bus_cfg(dir, "srv"), 0, PENDING };
    lahja_task_t *t = NULL;
    EXPECT_EQ(lahja_spawn(lahja_rt_current(), task_connect, &call, NULL, &t), 0);
    while (!call.started)
        EXPECT_EQ(lahja_yield(), 0);
    /* The connect has made its first attempt and is waiting. */
    expect_absent(call.cfg.path);
    EXPECT_EQ(call.rc, PENDING);

    struct bus_peer_args peer = { dir, "srv", NULL };
    bus_child_t c = bus_fork(bus_peer_main, &peer);
    int result = PENDING;
    EXPECT_EQ(lahja_task_join(t, lahja_deadline_in(GUARD_MS), &result), 0);
    EXPECT_EQ(call.rc, 0);
    EXPECT_EQ(lahja_is_connected_to(ep, "srv"), 1);
    bus_ask(ep, "Echo", "EchoAnswer", "late server", "srv", "late server");
    bus_peer_done(ep, "srv");
    EXPECT_CHILD_OK(&c);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(connect_waits_for_socket)

/* B4: nobody serving: the deadline passes, and the attempt leaves
 * nothing behind (the same connect can be tried again). */
static int main_connect_deadline(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct bus_log log = { 0 };
    lahja_endpoint_options_t opts = bus_opts(&log);
    lahja_endpoint_t *ep = bus_client("cli", &opts);
    lahja_conn_config_t ghost = bus_cfg(dir, "ghost");
    EXPECT_EQ(lahja_connect(ep, &ghost, 1, lahja_deadline_in(100)), -ETIMEDOUT);
    EXPECT_EQ(lahja_is_connected_to(ep, "ghost"), 0);
    /* The error and the log say why: no socket to connect to, and where. */
    const char *why = lahja_endpoint_last_error(ep);
    EXPECT_TRUE(strstr(why, "connect to ghost at ") != NULL);
    EXPECT_TRUE(strstr(why, ghost.path) != NULL);
    EXPECT_TRUE(strstr(why, "no socket file there") != NULL);
    EXPECT_EQ(bus_log_count(&log, "connection to ghost", "nobody serves that name", NULL), 1);
    EXPECT_EQ(lahja_connect(ep, &ghost, 1, lahja_deadline_in(100)), -ETIMEDOUT);

    /* A socket file nobody listens on (ECONNREFUSED) is waited on too. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", ghost.path);
    EXPECT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
    EXPECT_EQ(lahja_connect(ep, &ghost, 1, lahja_deadline_in(100)), -ETIMEDOUT);
    EXPECT_EQ(lahja_is_connected_to(ep, "ghost"), 0);
    EXPECT_TRUE(strstr(lahja_endpoint_last_error(ep), "nobody listening") != NULL);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(connect_deadline)

/* B4: connecting to itself, to one name twice in a call, or to a name
 * already connected is LAHJA_ECONNREJECTED, and nothing is done. */
static int main_connect_rejections(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct bus_peer_args peer = { dir, "srv", NULL };
    bus_child_t c = bus_fork(bus_peer_main, &peer);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "cli", &opts);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);

    lahja_conn_config_t self = bus_cfg(dir, "cli");
    EXPECT_EQ(lahja_connect(ep, &self, 1, deadline), LAHJA_ECONNREJECTED);
    lahja_conn_config_t twice[2] = { bus_cfg(dir, "srv"), bus_cfg(dir, "srv") };
    EXPECT_EQ(lahja_connect(ep, twice, 2, deadline), LAHJA_ECONNREJECTED);
    /* Checked before anything is tried: the first config, a server that
     * does not exist, would otherwise make this wait (until -ETIMEDOUT). */
    lahja_conn_config_t ghost_then_self[2] = { bus_cfg(dir, "ghost"), self };
    EXPECT_EQ(lahja_connect(ep, ghost_then_self, 2, deadline), LAHJA_ECONNREJECTED);
    EXPECT_EQ(lahja_is_connected_to(ep, "srv"), 0);
    EXPECT_EQ(lahja_is_connected_to(ep, "ghost"), 0);

    EXPECT_EQ(lahja_connect(ep, twice, 1, deadline), 0);
    EXPECT_EQ(lahja_connect(ep, twice, 1, deadline), LAHJA_ECONNREJECTED);
    EXPECT_EQ(lahja_is_connected_to(ep, "srv"), 1);
    /* The existing connection is unharmed. */
    bus_ask(ep, "Echo", "EchoAnswer", "once", "srv", "once");
    bus_peer_done(ep, "srv");
    EXPECT_CHILD_OK(&c);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(connect_rejections)

/* B4: the endpoint at the path carries another name than expected: the
 * connect fails, and leaves no connection under either name. */
static int main_connect_wrong_name(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct bus_peer_args peer = { dir, "srv", NULL };
    bus_child_t c = bus_fork(bus_peer_main, &peer);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("cli", &opts);
    lahja_conn_config_t srv = bus_cfg(dir, "srv");
    lahja_conn_config_t bob;
    EXPECT_EQ(lahja_conn_config_from_path(&bob, "bob", srv.path), 0);
    EXPECT_EQ(lahja_connect(ep, &bob, 1, lahja_deadline_in(GUARD_MS)), LAHJA_ECONNREJECTED);
    EXPECT_EQ(lahja_is_connected_to(ep, "bob"), 0);
    EXPECT_EQ(lahja_is_connected_to(ep, "srv"), 0);

    EXPECT_EQ(lahja_connect(ep, &srv, 1, lahja_deadline_in(GUARD_MS)), 0);
    bus_ask(ep, "Echo", "EchoAnswer", "right name", "srv", "right name");
    bus_peer_done(ep, "srv");
    EXPECT_CHILD_OK(&c);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(connect_wrong_name)

/* A raw client that says it is "peer" and must be hung up on. */
static int child_impostor(void *arg)
{
    const char *path = arg;
    int fd = raw_connect(path);
    EXPECT_TRUE(fd >= 0);
    uint8_t hello[64];
    uint8_t *end = raw_hello(hello, "peer");
    raw_send(fd, hello, (size_t)(end - hello));
    uint8_t got[512];
    ssize_t n = raw_read_to_eof(fd, got, sizeof got);
    EXPECT_TRUE(n >= 0); /* hung up on, not taken in */
    raw_expect_hello(got, n, "srv");
    close(fd);
    return 0;
}

/*
 * B4, B2: "srv" is connected to the live endpoint "peer"; another process
 * connecting to srv under the name "peer" is refused
 * (ConnectionAttemptRejected: a name already connected), and the
 * connection to the real peer stays.  A live endpoint is never displaced.
 */
static int main_duplicate_name_refused(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    struct bus_peer_args peer = { dir, "peer", NULL };
    bus_child_t pc = bus_fork(bus_peer_main, &peer);
    struct bus_log log = { 0 };
    lahja_endpoint_options_t opts = bus_opts(&log);
    lahja_endpoint_t *ep = bus_serve(dir, "srv", &opts);
    EXPECT_EQ(bus_connect(ep, dir, "peer"), 0);
    bus_ask(ep, "Echo", "EchoAnswer", "real", "peer", "real");

    lahja_conn_config_t cfg = bus_cfg(dir, "srv");
    bus_child_t impostor = bus_fork_plain(child_impostor, cfg.path);
    EXPECT_CHILD_OK(&impostor);
    EXPECT_EQ(bus_log_count(&log, "incoming connection dropped",
                            lahja_strerror(LAHJA_ECONNREJECTED), NULL),
              1);
    EXPECT_EQ(bus_log_count(&log, "connection to peer", NULL, NULL), 0);
    EXPECT_EQ(lahja_is_connected_to(ep, "peer"), 1);
    bus_ask(ep, "Echo", "EchoAnswer", "still real", "peer", "still real");
    bus_peer_done(ep, "peer");
    EXPECT_CHILD_OK(&pc);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(duplicate_name_refused)

/* ------------------------------------------- B5: both ways, no relay */

/* "a": answers AskA, connects to "b", asks b, then waits for Bye. */
static int child_two_way(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("a", &opts);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "AskA", bus_echo_handler, "AnsA", &s), 0);
    EXPECT_EQ(bus_connect(ep, dir, "b"), 0);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "b", "AskB",
                                                      lahja_deadline_in(GUARD_MS)),
              0);
    bus_ask(ep, "AskB", "AnsB", "from a", "b", "from a");
    lahja_event_t *bye = NULL;
    EXPECT_EQ(lahja_wait_for(ep, "Bye", lahja_deadline_in(GUARD_MS), &bye), 0);
    EXPECT_TRUE(strcmp(lahja_event_origin(bye), "b") == 0);
    lahja_event_unref(bye);
    lahja_subscription_cancel(s);
    bus_close(ep);
    return 0;
}

struct peer_list {
    int n;
    int a_has_ask;
};

static void on_peer(const char *name, const char *const *types, size_t ntypes, void *user)
{
    struct peer_list *l = user;
    l->n++;
    if (strcmp(name, "a") != 0)
        return;
    for (size_t i = 0; i < ntypes; i++)
        if (strcmp(types[i], "AskA") == 0)
            l->a_has_ask = 1;
}

/* B5: "a" connects to "b"; "b" sees "a" and both ask each other. */
static int main_connection_two_way(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "b", &opts);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "AskB", bus_echo_handler, "AnsB", &s), 0);
    EXPECT_EQ(lahja_is_connected_to(ep, "a"), 0);
    bus_child_t c = bus_fork(child_two_way, dir);

    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_connected_to(ep, "a", deadline), 0);
    EXPECT_EQ(lahja_is_connected_to(ep, "a"), 1);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "a", "AskA", deadline), 0);
    struct peer_list peers = { 0, 0 };
    lahja_foreach_peer(ep, on_peer, &peers);
    EXPECT_EQ(peers.n, 1);
    EXPECT_EQ(peers.a_has_ask, 1);
    bus_ask(ep, "AskA", "AnsA", "from b", "a", "from b");

    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "a", "Bye", deadline), 0);
    EXPECT_EQ(bus_send(ep, "Bye", NULL), 0);
    EXPECT_CHILD_OK(&c);
    EXPECT_EQ(lahja_is_connected_to(ep, "a"), 0);
    lahja_subscription_cancel(s);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(connection_two_way)

/* "a" in the chain a - b - c: asks b once, then leaves. */
static int child_chain_a(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("a", &opts);
    EXPECT_EQ(bus_connect(ep, dir, "b"), 0);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "b", "Hop",
                                                      lahja_deadline_in(GUARD_MS)),
              0);
    /* c subscribes to Hop too, but a is not connected to it. */
    EXPECT_EQ(lahja_is_connected_to(ep, "c"), 0);
    bus_ask(ep, "Hop", "HopAck", "hop", "b", "hop");
    bus_close(ep);
    return 0;
}

/* "c": counts the Hop events reaching it until b says Done. */
static int child_chain_c(void *arg)
{
    const char *dir = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_client("c", &opts);
    struct bus_counter hops;
    bus_counter_init(&hops);
    lahja_subscription_t *s = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Hop", bus_count_handler, &hops, &s), 0);
    lahja_stream_t *done = NULL;
    EXPECT_EQ(lahja_stream_open(ep, "ChainDone", 1, NULL, &done), 0);
    EXPECT_EQ(bus_connect(ep, dir, "b"), 0);
    lahja_event_t *ev = NULL;
    EXPECT_EQ(lahja_stream_next(done, LAHJA_FOREVER, &ev), 0);
    lahja_event_unref(ev);
    /* Whatever b might have passed on from a was sent to us before a
     * left, so before ChainDone. */
    EXPECT_EQ(hops.n, 0);
    EXPECT_EQ(lahja_is_connected_to(ep, "a"), 0);
    lahja_stream_close(done);
    lahja_subscription_cancel(s);
    bus_close(ep);
    return 0;
}

/* B5: no relaying.  b answers a's Hop request; c, connected to b only and
 * subscribed to Hop, never sees it. */
static int main_no_relaying(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "b", &opts);
    bus_child_t c = bus_fork(child_chain_c, dir);
    lahja_time_t deadline = lahja_deadline_in(GUARD_MS);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "c", "Hop", deadline), 0);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "c", "ChainDone", deadline), 0);

    bus_child_t a = bus_fork(child_chain_a, dir);
    EXPECT_EQ(lahja_wait_until_connected_to(ep, "a", deadline), 0);
    /* a sends its Hop only once b subscribes to it, which is now. */
    struct bus_counter hops;
    bus_counter_init(&hops);
    lahja_subscription_t *count = NULL, *answer = NULL;
    EXPECT_EQ(lahja_subscribe(ep, "Hop", bus_count_handler, &hops, &count), 0);
    EXPECT_EQ(lahja_subscribe(ep, "Hop", bus_echo_handler, "HopAck", &answer), 0);
    bus_counter_wait(&hops, 1);
    bus_wait_disconnected(ep, "a");
    EXPECT_CHILD_OK(&a);
    EXPECT_EQ(hops.n, 1);

    EXPECT_EQ(bus_send(ep, "ChainDone", NULL), 0);
    EXPECT_CHILD_OK(&c);
    lahja_subscription_cancel(count);
    lahja_subscription_cancel(answer);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(no_relaying)

/* ------------------------------------------- handshake, loop blocked */

/*
 * A raw client sends its HELLO and its SUBS in one write, then waits for
 * the endpoint's SUBS and signals once it has it.  Both frames reach the
 * endpoint in one read, which also wakes the task waiting for the
 * subscription; if the endpoint's own SUBS were still queued when that
 * task blocks the loop, the client would never get it.
 */
static int child_raw_subscriber(void *arg)
{
    int fd = raw_connect(arg);
    if (fd < 0)
        return 1;
    static const char *const types[] = { "Ping" };
    uint8_t buf[512];
    uint8_t *p = raw_hello(buf, "raw");
    p = raw_subs(p, 1, types, 1);
    raw_send(fd, buf, (size_t)(p - buf));
    /* Frames until a SUBS: header = u32 body length, u8 kind, 3 bytes. */
    uint8_t in[4096];
    size_t have = 0;
    for (;;) {
        while (have >= RAW_HDR) {
            uint32_t len = (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 |
                           (uint32_t)in[3] << 24;
            if (in[4] == RAW_SUBS) {
                bus_child_signal();
                close(fd);
                return 0;
            }
            if (RAW_HDR + (size_t)len > have)
                break;
            memmove(in, in + RAW_HDR + len, have - RAW_HDR - len);
            have -= RAW_HDR + len;
        }
        ssize_t n = recv(fd, in + have, sizeof in - have, 0);
        if (n <= 0)
            return 2; /* the receive timeout (GUARD_MS): no SUBS came */
        have += (size_t)n;
    }
}

struct blocked_args {
    char dir[BUS_DIR_MAX];
};

static int main_subs_out_before_waiters_run(void *arg)
{
    struct blocked_args *a = arg;
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(a->dir, "srv", &opts);
    lahja_subscription_t *sub;
    EXPECT_EQ(lahja_subscribe(ep, "Pong", bus_echo_handler, NULL, &sub), 0);
    lahja_conn_config_t cfg = bus_cfg(a->dir, "srv");
    bus_child_t c = bus_fork_plain(child_raw_subscriber, cfg.path);
    EXPECT_EQ(lahja_wait_until_endpoint_subscribed_to(ep, "raw", "Ping",
                                                      lahja_deadline_in(GUARD_MS)), 0);
    /* The loop is blocked from here until the client has our SUBS. */
    struct pollfd pfd = { c.fd, POLLIN, 0 };
    EXPECT_EQ(poll(&pfd, 1, GUARD_MS), 1);
    EXPECT_CHILD_OK(&c);
    lahja_subscription_cancel(sub);
    bus_close(ep);
    return 0;
}

/* Our subscriptions are written as soon as the peer's HELLO is read, not
 * at the end of the loop turn: a task woken by the handshake that then
 * blocks the loop does not hold them back. */
static void test_subs_written_before_waiters_run(void **state)
{
    (void)state;
    struct blocked_args a;
    bus_dir_make(a.dir);
    bus_run_in_child(main_subs_out_before_waiters_run, &a);
    bus_dir_remove(a.dir);
}

/*
 * B20, B21: an endpoint counts itself as connected, as lahja's does,
 * serving or not; it is not one of its peers, and connecting to itself
 * is still refused (B4).
 */
static int main_self_counts_as_connected(void *arg)
{
    (void)arg;
    char dir[BUS_DIR_MAX];
    bus_dir_make(dir);
    lahja_endpoint_options_t opts = bus_opts(NULL);
    lahja_endpoint_t *ep = bus_serve(dir, "me", &opts);
    EXPECT_EQ(lahja_is_connected_to(ep, "me"), 1);
    EXPECT_EQ(lahja_is_connected_to(ep, "someone"), 0);
    EXPECT_EQ(lahja_wait_until_connected_to(ep, "me", lahja_deadline_in(GUARD_MS)), 0);
    EXPECT_EQ(bus_connect(ep, dir, "me"), LAHJA_ECONNREJECTED);
    int peers = 0;
    lahja_foreach_peer(ep, bus_count_peer, &peers);
    EXPECT_EQ(peers, 0);
    bus_close(ep);

    ep = bus_client("alone", &opts);
    EXPECT_EQ(lahja_is_connected_to(ep, "alone"), 1);
    bus_close(ep);
    bus_dir_remove(dir);
    return 0;
}
BUS_MAIN_TEST(self_counts_as_connected)

int main(void)
{
    bus_filter_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_names),
        cmocka_unit_test(test_config_path_lengths),
        cmocka_unit_test(test_default_base_dir),
        cmocka_unit_test(test_serving_creates_default_dir_0700),
        cmocka_unit_test(test_socket_mode),
        cmocka_unit_test(test_stale_socket_replaced),
        cmocka_unit_test(test_live_socket_kept),
        cmocka_unit_test(test_stop_removes_socket),
        cmocka_unit_test(test_non_socket_untouched),
        cmocka_unit_test(test_failed_bind_then_free),
        cmocka_unit_test(test_failed_bind_then_retry),
        cmocka_unit_test(test_pure_client),
        cmocka_unit_test(test_connect_waits_for_socket),
        cmocka_unit_test(test_connect_deadline),
        cmocka_unit_test(test_connect_rejections),
        cmocka_unit_test(test_connect_wrong_name),
        cmocka_unit_test(test_duplicate_name_refused),
        cmocka_unit_test(test_connection_two_way),
        cmocka_unit_test(test_no_relaying),
        cmocka_unit_test(test_subs_written_before_waiters_run),
        cmocka_unit_test(test_self_counts_as_connected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
