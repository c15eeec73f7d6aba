/*
 * The examples, run as a user runs them: a real process, its output read
 * through a pipe, signals sent to it.  Paths to the binaries come from
 * the command line (CTest passes them).
 */
#include <errno.h>
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

extern char **environ;

static const char *services_bin;

#define DEADLINE_MS 20000 /* generous: the machine may be loaded */

struct child {
    pid_t pid;
    int out; /* read end of its stdout */
    char buf[65536];
    size_t len;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void start(struct child *c, char *const argv[])
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    assert_int_equal(posix_spawn(&c->pid, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    c->out = fds[0];
    c->len = 0;
    c->buf[0] = '\0';
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

static int finish(struct child *c)
{
    int ok = read_until(c, NULL);
    close(c->out);
    int status;
    assert_int_equal(waitpid(c->pid, &status, 0), c->pid);
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

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s SERVICES_BINARY\n", argv[0]);
        return 2;
    }
    services_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_services_stops_cleanly_on_sigint),
        cmocka_unit_test(test_services_failure_cancels_everything),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
