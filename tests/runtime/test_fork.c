/*
 * fork(): a child process inherits the parent's runtime in memory but
 * must not use it (the loop's epoll fd is shared with the parent).  It
 * can start its own runtime, also from inside a task it inherited.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <lahja/lahja.h>

static int child_main(void *arg)
{
    (void)arg;
    int rc = lahja_sleep(1);
    return rc == 0 ? 5 : 6;
}

static int parent_main(void *arg)
{
    int *status = arg;
    pid_t pid = fork();
    if (pid == 0) {
        /* Still on the parent's task stack, with its runtime in TLS. */
        int rc = lahja_run(child_main, NULL, NULL);
        _exit(rc == 5 ? 0 : 1);
    }
    assert_true(pid > 0);
    assert_int_equal(waitpid(pid, status, 0), pid);
    /* The parent's own runtime is untouched: it still suspends. */
    return lahja_sleep(1);
}

static void test_child_runs_its_own_runtime(void **state)
{
    (void)state;
    int status = -1;
    assert_int_equal(lahja_run(parent_main, &status, NULL), 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_runs_its_own_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
