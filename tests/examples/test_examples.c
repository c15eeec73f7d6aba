/*
 * The examples, run as a user runs them: a real process, its output read
 * through a pipe, signals sent to it.  The bus examples fork a pair of
 * processes each; their lines are counted, since the two processes'
 * lines interleave differently from run to run.  The publisher, the
 * subscriber, libuv_app and worker_thread are separate programs, started
 * here as a user starts them in two terminals, in a private socket
 * directory.  Paths to the binaries come from the command line (CTest
 * passes them).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

extern char **environ;

static const char *services_bin;
static const char *ping_pong_bin;
static const char *request_api_bin;
static const char *publisher_bin;
static const char *subscriber_bin;
static const char *libuv_app_bin;
static const char *worker_thread_bin;
static const char *join_bin;

#define DEADLINE_MS 20000 /* generous: the machine may be loaded */

struct child {
    pid_t pid;
    int out; /* read end of its stdout */
    char buf[65536];
    size_t len;
};

/* The children started and not yet reaped: a failed test leaves some,
 * and its teardown kills them, rather than leave a publisher waiting
 * forever for a subscriber. */
static pid_t live[8];

static void track(pid_t pid, pid_t with)
{
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
        if (live[i] == with) {
            live[i] = pid;
            return;
        }
    assert_true(0); /* more children at once than live[] holds */
}

static int kill_leftovers(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
    return 0;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts argv with its stdout (and, with `with_stderr`, its stderr) into
 * a pipe. */
static void start_with(struct child *c, char *const argv[], int with_stderr)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    if (with_stderr)
        posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    assert_int_equal(posix_spawn(&c->pid, argv[0], &fa, NULL, argv, environ), 0);
    track(c->pid, 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    c->out = fds[0];
    c->len = 0;
    c->buf[0] = '\0';
}

static void start(struct child *c, char *const argv[])
{
    start_with(c, argv, 0);
}

/* Reads output until `needle` appears (NULL: until EOF) or the deadline.
 * Returns 1 if found (or EOF reached for NULL). */
static int read_until(struct child *c, const char *needle)
{
    int64_t end = now_ms() + DEADLINE_MS;
    for (;;) {
        if (needle != NULL && strstr(c->buf, needle) != NULL)
            return 1;
        int64_t left = end - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = { .fd = c->out, .events = POLLIN };
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        ssize_t n = read(c->out, c->buf + c->len, sizeof c->buf - 1 - c->len);
        if (n <= 0)
            return needle == NULL;
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
    }
}

/* Reads the output to its end and returns the exit status.  A child
 * still running at the deadline is killed (and the test fails) rather
 * than waited for. */
static int finish(struct child *c)
{
    int ok = read_until(c, NULL);
    close(c->out);
    if (!ok)
        kill(c->pid, SIGKILL);
    int status;
    assert_int_equal(waitpid(c->pid, &status, 0), c->pid);
    track(0, c->pid);
    assert_true(ok);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_services_stops_cleanly_on_sigint(void **state)
{
    (void)state;
    struct child c;
    char *argv[] = { (char *)services_bin, NULL };
    start(&c, argv);
    assert_true(read_until(&c, "tick 2\n"));
    kill(c.pid, SIGINT);
    assert_int_equal(finish(&c), 0);
    assert_non_null(strstr(c.buf, "SIGINT: cancelling"));
    assert_non_null(strstr(c.buf, "ticker: stopping"));
    assert_non_null(strstr(c.buf, "worker: stopped\nworker: stopped\n"));
    assert_non_null(strstr(c.buf, "app: <Manager[app] flags=SrCFe> tasks total=3 finished=3 pending=0"));
    assert_non_null(strstr(c.buf, "stopped cleanly"));
}

static void test_services_failure_cancels_everything(void **state)
{
    (void)state;
    struct child c;
    char *argv[] = { (char *)services_bin, "--fail-after", "2", NULL };
    start(&c, argv);
    assert_int_equal(finish(&c), 1);
    assert_non_null(strstr(c.buf, "tick 2\n"));
    assert_null(strstr(c.buf, "tick 3\n"));
    assert_non_null(strstr(c.buf, "app: <Manager[app] flags=SrCFE> tasks total=3 finished=3 pending=0"));
    assert_non_null(strstr(c.buf, "error in failer: failing on demand after 2 ticks (EIO)"));
}

/* ------------------------------------------------------------- the bus */

/* How many lines of c's output are exactly `line`. */
static int count_lines(const struct child *c, const char *line)
{
    int n = 0;
    size_t len = strlen(line);
    for (const char *p = c->buf; (p = strstr(p, line)) != NULL; p += len) {
        int starts = p == c->buf || p[-1] == '\n';
        if (starts && p[len] == '\n')
            n++;
    }
    return n;
}

static int count_all_lines(const struct child *c)
{
    int n = 0;
    for (const char *p = c->buf; (p = strchr(p, '\n')) != NULL; p++)
        n++;
    return n;
}

/* Runs argv to its end, its stderr with its stdout, and checks that it
 * exits 0 before the deadline. */
static void run_to_end(struct child *c, char *const argv[])
{
    int64_t t0 = now_ms();
    start_with(c, argv, 1);
    assert_int_equal(finish(c), 0);
    assert_true(now_ms() - t0 < DEADLINE_MS);
}

/* Every round: a hello from each, and proc1's hit through proc2's
 * subscription and stream, proc2's through proc1's subscription; and
 * nothing else (no warning either). */
static void assert_ping_pong(const struct child *c, int rounds)
{
    assert_int_equal(count_lines(c, "Hello from proc1"), rounds);
    assert_int_equal(count_lines(c, "Hello from proc2"), rounds);
    assert_int_equal(count_lines(c, "Received via SUBSCRIBE API in proc2: Hit from proc1"), rounds);
    assert_int_equal(count_lines(c, "Received via STREAM API in proc2: Hit from proc1"), rounds);
    assert_int_equal(count_lines(c, "Received via SUBSCRIBE API in proc1: Hit from proc2"), rounds);
    assert_int_equal(count_all_lines(c), 5 * rounds);
}

/* A fresh directory for the example's own temporary files. */
static void make_tmpdir(char *dir, size_t size)
{
    snprintf(dir, size, "/tmp/lahja-test-examples-XXXXXX");
    assert_non_null(mkdtemp(dir));
}

static void test_ping_pong_three_rounds_by_default(void **state)
{
    (void)state;
    char tmpdir[64];
    make_tmpdir(tmpdir, sizeof tmpdir);
    assert_int_equal(setenv("TMPDIR", tmpdir, 1), 0);
    struct child c;
    char *argv[] = { (char *)ping_pong_bin, "--interval-ms", "20", NULL };
    run_to_end(&c, argv);
    unsetenv("TMPDIR");
    assert_ping_pong(&c, 3);
    /* Its temporary base directory is gone: ours is empty again. */
    assert_int_equal(rmdir(tmpdir), 0);
}

static void test_ping_pong_rounds_and_base_dir(void **state)
{
    (void)state;
    char dir[64], path[96];
    make_tmpdir(dir, sizeof dir);
    struct child c;
    char *argv[] = { (char *)ping_pong_bin, "--rounds", "7", "--interval-ms", "0",
                     "--base-dir", dir, NULL };
    run_to_end(&c, argv);
    assert_ping_pong(&c, 7);
    /* Stopping removed both sockets; the directory given is left. */
    snprintf(path, sizeof path, "%s/e1.ipc", dir);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof path, "%s/e2.ipc", dir);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(rmdir(dir), 0);
}

static void test_ping_pong_rejects_bad_arguments(void **state)
{
    (void)state;
    struct child c;
    char *argv[] = { (char *)ping_pong_bin, "--rounds", "0", NULL };
    start(&c, argv);
    assert_int_equal(finish(&c), 2);
}

/*
 * The early README's ping-pong by discovery: the same binary run twice
 * (three times), each only joining the bus directory.  Each gets every
 * hit of every other, and nothing else (no warning either); the
 * directory is empty afterwards.
 */
static void run_joiners(int n, const char *rounds)
{
    char dir[64], name[3][16], peers[16], line[160];
    make_tmpdir(dir, sizeof dir);
    snprintf(peers, sizeof peers, "%d", n - 1);
    struct child c[3];
    for (int i = 0; i < n; i++) {
        snprintf(name[i], sizeof name[i], "p%d", i + 1);
        char *argv[] = { (char *)join_bin, name[i], "--bus", dir, "--peers", peers,
                         "--rounds", (char *)rounds, "--interval-ms", "20", NULL };
        start_with(&c[i], argv, 1);
    }
    int r = atoi(rounds);
    for (int i = 0; i < n; i++) {
        assert_int_equal(finish(&c[i]), 0);
        snprintf(line, sizeof line, "Hello from %s", name[i]);
        assert_int_equal(count_lines(&c[i], line), r);
        for (int j = 0; j < n; j++) {
            if (j == i)
                continue;
            snprintf(line, sizeof line, "%s received: Hit from %s", name[i], name[j]);
            assert_int_equal(count_lines(&c[i], line), r);
        }
        assert_int_equal(count_all_lines(&c[i]), r * n);
    }
    assert_int_equal(rmdir(dir), 0);
}

static void test_join_ping_pong_two_processes(void **state)
{
    (void)state;
    run_joiners(2, "3");
}

static void test_join_ping_pong_three_processes(void **state)
{
    (void)state;
    run_joiners(3, "2");
}

static void test_join_ping_pong_rejects_bad_arguments(void **state)
{
    (void)state;
    struct child c;
    char *no_name[] = { (char *)join_bin, "--rounds", "1", NULL };
    start(&c, no_name);
    assert_int_equal(finish(&c), 2);
    char *no_peers[] = { (char *)join_bin, "p1", "--peers", "0", NULL };
    start(&c, no_peers);
    assert_int_equal(finish(&c), 2);
}

static void test_request_api_three_answers_by_default(void **state)
{
    (void)state;
    struct child c;
    char *argv[] = { (char *)request_api_bin, NULL };
    run_to_end(&c, argv);
    assert_int_equal(count_lines(&c, "Got answer: Yay"), 3);
    assert_string_equal(c.buf, "Requesting\nGot answer: Yay\n"
                               "Requesting\nGot answer: Yay\n"
                               "Requesting\nGot answer: Yay\n");
}

static void test_request_api_count(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    struct child c;
    char *argv[] = { (char *)request_api_bin, "--count", "10", "--base-dir", dir, NULL };
    run_to_end(&c, argv);
    assert_int_equal(count_lines(&c, "Requesting"), 10);
    assert_int_equal(count_lines(&c, "Got answer: Yay"), 10);
    assert_int_equal(count_all_lines(&c), 20);
    assert_int_equal(rmdir(dir), 0); /* the responder removed its socket */
}

/* ------------------------------------------ publisher and subscriber */

/* What the subscriber prints for `n` events of `type` (lower case) from
 * `from`, whose payloads are payloads[i] (NULL: i + 1). */
static void expect_events(char *buf, size_t size, const char *from, const char *type, int n,
                          const char *const *payloads)
{
    size_t len = (size_t)snprintf(buf, size, "waiting for %s\n", from);
    for (int i = 0; i < n; i++) {
        char num[16];
        snprintf(num, sizeof num, "%d", i + 1);
        len += (size_t)snprintf(buf + len, size - len, "got %s %s from %s\n", type,
                                payloads != NULL ? payloads[i] : num, from);
        assert_true(len < size);
    }
}

/* The subscriber printed exactly the five ticks, in order, and the
 * publisher sent them; the socket directory is empty again. */
static void assert_five_ticks(struct child *sub, struct child *pub, const char *dir)
{
    char want[512];
    expect_events(want, sizeof want, "publisher", "tick", 5, NULL);
    assert_string_equal(sub->buf, want);
    assert_int_equal(count_lines(pub, "sent tick 5"), 1);
    assert_null(strstr(pub->buf, "sent tick 6"));
    assert_int_equal(rmdir(dir), 0); /* the publisher removed its socket */
}

static void test_subscriber_first_then_publisher(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    struct child sub, pub;
    char *sub_argv[] = { (char *)subscriber_bin, "--dir", dir, "--count", "5",
                         "--wait-ms", "20000", NULL };
    char *pub_argv[] = { (char *)publisher_bin, "--dir", dir, "--count", "5",
                         "--interval-ms", "20", NULL };
    start(&sub, sub_argv);
    assert_true(read_until(&sub, "waiting for publisher\n")); /* no socket there yet */
    start(&pub, pub_argv);
    assert_int_equal(finish(&sub), 0);
    assert_int_equal(finish(&pub), 0);
    assert_five_ticks(&sub, &pub, dir);
}

static void test_publisher_first_then_subscriber(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    struct child sub, pub;
    char *sub_argv[] = { (char *)subscriber_bin, "--dir", dir, "--count", "5", NULL };
    char *pub_argv[] = { (char *)publisher_bin, "--dir", dir, "--count", "5",
                         "--interval-ms", "20", NULL };
    start(&pub, pub_argv);
    assert_true(read_until(&pub, "waiting for a subscriber\n"));
    start(&sub, sub_argv);
    assert_int_equal(finish(&sub), 0);
    assert_int_equal(finish(&pub), 0);
    assert_five_ticks(&sub, &pub, dir);
}

/* Each stops cleanly on a signal, whatever it was waiting for: the
 * publisher for a subscriber, the subscriber for a publisher. */
static void test_publisher_and_subscriber_stop_on_signals(void **state)
{
    (void)state;
    char dir[64], path[96];
    make_tmpdir(dir, sizeof dir);
    struct child pub, sub;
    char *pub_argv[] = { (char *)publisher_bin, "--dir", dir, NULL };
    start(&pub, pub_argv);
    assert_true(read_until(&pub, "waiting for a subscriber\n"));
    kill(pub.pid, SIGTERM);
    assert_int_equal(finish(&pub), 0);
    assert_non_null(strstr(pub.buf, "SIGTERM: stopping\n"));
    snprintf(path, sizeof path, "%s/publisher.ipc", dir);
    assert_int_equal(access(path, F_OK), -1);

    char *sub_argv[] = { (char *)subscriber_bin, "--dir", dir, "--wait-ms", "60000", NULL };
    start(&sub, sub_argv);
    assert_true(read_until(&sub, "waiting for publisher\n"));
    kill(sub.pid, SIGINT);
    assert_int_equal(finish(&sub), 0);
    assert_string_equal(sub.buf, "waiting for publisher\nSIGINT: stopping\n");
    assert_int_equal(rmdir(dir), 0);
}

static void test_new_examples_reject_bad_arguments(void **state)
{
    (void)state;
    const char *bins[] = { publisher_bin, subscriber_bin, libuv_app_bin, worker_thread_bin };
    for (size_t i = 0; i < sizeof bins / sizeof bins[0]; i++) {
        struct child c;
        char *argv[] = { (char *)bins[i], "--count", "x", NULL };
        start(&c, argv);
        assert_int_equal(finish(&c), 2);
    }
}

/* ----------------------------------------------------------- libuv_app */

/* Connects to 127.0.0.1:port, sends `line` and returns the first line of
 * the answer in buf (with its newline). */
static void tcp_exchange(int port, const char *line, char *buf, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
    size_t len = 0;
    int64_t end = now_ms() + DEADLINE_MS;
    buf[0] = '\0';
    while (strchr(buf, '\n') == NULL && now_ms() < end && len + 1 < size) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, (int)(end - now_ms())) <= 0)
            continue;
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
    }
    close(fd);
}

static void test_libuv_app_tcp_status_heartbeat_and_sigint(void **state)
{
    (void)state;
    char dir[64], path[96], answer[64];
    make_tmpdir(dir, sizeof dir);
    struct child app, ask, sub;
    char *app_argv[] = { (char *)libuv_app_bin, "--dir", dir, "--interval-ms", "20", NULL };
    start(&app, app_argv);
    assert_true(read_until(&app, "TCP on 127.0.0.1:"));
    assert_true(read_until(&app, "\n"));
    int port = atoi(strstr(app.buf, "TCP on 127.0.0.1:") + strlen("TCP on 127.0.0.1:"));
    assert_true(port > 0);

    tcp_exchange(port, "hello\n", answer, sizeof answer);
    assert_string_equal(answer, "echo hello\n");

    char *ask_argv[] = { (char *)libuv_app_bin, "--dir", dir, "--ask", "app", NULL };
    run_to_end(&ask, ask_argv);
    assert_string_equal(ask.buf, "app: TCP clients served: 1\n");

    /* The heartbeats start with the first subscriber. */
    char want[256];
    char *sub_argv[] = { (char *)subscriber_bin, "--dir", dir, "--from", "app",
                         "--type", "Heartbeat", "--count", "2", NULL };
    run_to_end(&sub, sub_argv);
    expect_events(want, sizeof want, "app", "heartbeat", 2, NULL);
    assert_string_equal(sub.buf, want);

    kill(app.pid, SIGINT);
    assert_int_equal(finish(&app), 0);
    assert_non_null(strstr(app.buf, "SIGINT: stopping\n"));
    snprintf(path, sizeof path, "%s/app.ipc", dir);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(rmdir(dir), 0);
}

/* Asking an endpoint nobody serves fails with the endpoint's own words. */
static void test_libuv_app_ask_nobody(void **state)
{
    (void)state;
    char dir[64];
    make_tmpdir(dir, sizeof dir);
    struct child c;
    char *argv[] = { (char *)libuv_app_bin, "--dir", dir, "--ask", "nobody", NULL };
    start_with(&c, argv, 1);
    assert_int_equal(finish(&c), 1);
    assert_non_null(strstr(c.buf, "no socket file there: nobody serves that name"));
    assert_int_equal(rmdir(dir), 0);
}

/* -------------------------------------------------------- worker_thread */

static void test_worker_thread_progress_in_order(void **state)
{
    (void)state;
    /* The primes below 10000, 20000, ... 100000. */
    static const char *const progress[] = {
        "1/10: 1229 primes below 10000",  "2/10: 2262 primes below 20000",
        "3/10: 3245 primes below 30000",  "4/10: 4203 primes below 40000",
        "5/10: 5133 primes below 50000",  "6/10: 6057 primes below 60000",
        "7/10: 6935 primes below 70000",  "8/10: 7837 primes below 80000",
        "9/10: 8713 primes below 90000",  "10/10: 9592 primes below 100000",
    };
    char dir[64], want[1024];
    make_tmpdir(dir, sizeof dir);
    struct child sub, worker;
    char *sub_argv[] = { (char *)subscriber_bin, "--dir", dir, "--from", "worker",
                         "--type", "Progress", "--count", "10", "--wait-ms", "20000", NULL };
    char *worker_argv[] = { (char *)worker_thread_bin, "--dir", dir, NULL };
    start(&sub, sub_argv);
    assert_true(read_until(&sub, "waiting for worker\n"));
    start(&worker, worker_argv);
    assert_int_equal(finish(&sub), 0);
    assert_int_equal(finish(&worker), 0);
    expect_events(want, sizeof want, "worker", "progress", 10, progress);
    assert_string_equal(sub.buf, want);
    assert_non_null(strstr(worker.buf, "\n9592 primes below 100000\n"));
    assert_int_equal(rmdir(dir), 0);
}

int main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: %s SERVICES PING_PONG REQUEST_API PUBLISHER SUBSCRIBER "
                        "LIBUV_APP WORKER_THREAD JOIN_PING_PONG\n", argv[0]);
        return 2;
    }
    services_bin = argv[1];
    ping_pong_bin = argv[2];
    request_api_bin = argv[3];
    publisher_bin = argv[4];
    subscriber_bin = argv[5];
    libuv_app_bin = argv[6];
    worker_thread_bin = argv[7];
    join_bin = argv[8];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_services_stops_cleanly_on_sigint),
        cmocka_unit_test(test_services_failure_cancels_everything),
        cmocka_unit_test(test_ping_pong_three_rounds_by_default),
        cmocka_unit_test(test_ping_pong_rounds_and_base_dir),
        cmocka_unit_test(test_ping_pong_rejects_bad_arguments),
        cmocka_unit_test_teardown(test_join_ping_pong_two_processes, kill_leftovers),
        cmocka_unit_test_teardown(test_join_ping_pong_three_processes, kill_leftovers),
        cmocka_unit_test(test_join_ping_pong_rejects_bad_arguments),
        cmocka_unit_test(test_request_api_three_answers_by_default),
        cmocka_unit_test(test_request_api_count),
        cmocka_unit_test_teardown(test_subscriber_first_then_publisher, kill_leftovers),
        cmocka_unit_test_teardown(test_publisher_first_then_subscriber, kill_leftovers),
        cmocka_unit_test_teardown(test_publisher_and_subscriber_stop_on_signals, kill_leftovers),
        cmocka_unit_test_teardown(test_new_examples_reject_bad_arguments, kill_leftovers),
        cmocka_unit_test_teardown(test_libuv_app_tcp_status_heartbeat_and_sigint, kill_leftovers),
        cmocka_unit_test_teardown(test_libuv_app_ask_nobody, kill_leftovers),
        cmocka_unit_test_teardown(test_worker_thread_progress_in_order, kill_leftovers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
