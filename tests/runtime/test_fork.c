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
#include <uv.h>

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

static int sleeper(void *arg)
{
    int *ran = arg;
    int rc = lahja_sleep(1);
    *ran = rc == 0;
    return rc;
}

/* The child of a process hosting a runtime on its own loop, as a language
 * binding does: what it checks, it reports through its exit status,
 * since a cmocka failure would unwind into the parent's test runner. */
static int child_of_hosted_runtime(void)
{
    if (lahja_rt_current() != NULL)
        return 10; /* the atfork handler did not forget the parent's */
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        return 11;
    lahja_rt_t *rt;
    if (lahja_rt_new(&loop, NULL, &rt) != 0)
        return 12;
    int ran = 0;
    if (lahja_spawn(rt, sleeper, &ran, NULL, NULL) != 0)
        return 13;
    uv_run(&loop, UV_RUN_DEFAULT);
    if (!ran)
        return 14;
    if (lahja_rt_close(rt) != 0)
        return 15;
    uv_run(&loop, UV_RUN_DEFAULT); /* the runtime's close callbacks */
    return uv_loop_close(&loop) == 0 ? 0 : 16;
}

static void test_child_of_hosted_runtime_makes_its_own(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    lahja_rt_t *rt;
    assert_int_equal(lahja_rt_new(&loop, NULL, &rt), 0);
    pid_t pid = fork();
    if (pid == 0)
        _exit(child_of_hosted_runtime());
    assert_true(pid > 0);
    int status = -1;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The parent's runtime is still its thread's, and still runs tasks. */
    assert_ptr_equal(lahja_rt_current(), rt);
    int ran = 0;
    assert_int_equal(lahja_spawn(rt, sleeper, &ran, NULL, NULL), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_true(ran);
    assert_int_equal(lahja_rt_close(rt), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_runs_its_own_runtime),
        cmocka_unit_test(test_child_of_hosted_runtime_makes_its_own),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
