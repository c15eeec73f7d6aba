/*
 * An endpoint run as a service: it starts with the service and stops
 * (closing its connections, removing its socket) when the service tree
 * is cancelled.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <lahja/lahja.h>

struct app {
    lahja_endpoint_t *ep;
    lahja_service_t ep_svc;
    lahja_conn_config_t cfg;
    lahja_manager_t *ep_manager;
    int received;
    lahja_latch_t got;
    int running_inside;
};

static int on_ping(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep, (void)ev;
    struct app *a = user;
    a->received++;
    lahja_latch_set(&a->got);
    return 0;
}

/* A task of the root service using the endpoint once it runs. */
static int user_task(void *arg)
{
    struct app *a = arg;
    int rc = lahja_manager_wait_started(a->ep_manager, lahja_deadline_in(10000));
    while (rc == 0 && !lahja_endpoint_is_running(a->ep))
        rc = lahja_yield();
    if (rc != 0)
        return rc;
    a->running_inside = lahja_endpoint_is_serving(a->ep);
    lahja_subscription_t *s;
    rc = lahja_subscribe(a->ep, "Ping", on_ping, a, &s);
    if (rc != 0)
        return rc;
    lahja_event_t *ev;
    lahja_event_new("Ping", "x", 1, &ev);
    rc = lahja_broadcast(a->ep, ev, NULL, lahja_deadline_in(10000));
    lahja_event_unref(ev);
    if (rc == 0)
        rc = lahja_latch_wait(&a->got, lahja_deadline_in(10000));
    lahja_subscription_cancel(s);
    if (rc == 0)
        lahja_manager_cancel(lahja_manager_current()); /* done: take the tree down */
    return rc;
}

static int root_run(lahja_manager_t *m, void *user)
{
    struct app *a = user;
    int rc = lahja_manager_run_daemon_child_service(m, &a->ep_svc, "endpoint", &a->ep_manager);
    if (rc == 0)
        rc = lahja_manager_run_task(m, user_task, a, 0, "user");
    return rc;
}

static int main_task(void *arg)
{
    struct app *a = arg;
    assert_int_equal(lahja_endpoint_new("svc-ep", NULL, &a->ep), 0);
    lahja_endpoint_service(&a->ep_svc, a->ep, &a->cfg);
    lahja_service_t root = { .name = "root", .run = root_run, .user = a };
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&root, &m), 0);
    int rc = lahja_manager_run(m);
    assert_int_equal(rc, 0);
    assert_int_equal(lahja_manager_nerrors(m), 0);
    assert_true(lahja_manager_is_cancelled(a->ep_manager));
    assert_false(lahja_endpoint_is_running(a->ep));
    assert_int_equal(lahja_manager_free(m), 0);
    assert_int_equal(lahja_endpoint_free(a->ep), 0);
    return 0;
}

static void test_endpoint_lives_and_dies_with_its_service(void **state)
{
    (void)state;
    char dir[] = "/tmp/lahja-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct app a = { 0 };
    lahja_latch_init(&a.got);
    assert_int_equal(lahja_conn_config_from_name(&a.cfg, "svc-ep", dir), 0);
    assert_int_equal(lahja_run(main_task, &a, NULL), 0);
    assert_int_equal(a.received, 1);
    assert_true(a.running_inside);
    struct stat st;
    assert_int_equal(stat(a.cfg.path, &st), -1); /* socket removed at stop */
    assert_int_equal(rmdir(dir), 0);
}

static int bad_main(void *arg)
{
    (void)arg;
    lahja_endpoint_t *ep;
    assert_int_equal(lahja_endpoint_new("bad", NULL, &ep), 0);
    lahja_conn_config_t cfg;
    assert_int_equal(lahja_conn_config_from_path(&cfg, "bad", "/nonexistent-dir/x/bad.ipc"), 0);
    lahja_service_t svc;
    lahja_endpoint_service(&svc, ep, &cfg);
    lahja_manager_t *m;
    assert_int_equal(lahja_manager_new(&svc, &m), 0);
    int rc = lahja_manager_run(m);
    assert_int_equal(rc, -ENOENT); /* the directory does not exist */
    assert_int_equal(lahja_manager_nerrors(m), 1);
    assert_non_null(strstr(lahja_manager_error(m, 0)->message, "endpoint bad cannot start"));
    assert_false(lahja_endpoint_is_running(ep));
    lahja_manager_free(m);
    lahja_endpoint_free(ep);
    return 0;
}

static void test_start_failure_fails_the_service(void **state)
{
    (void)state;
    assert_int_equal(lahja_run(bad_main, NULL, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoint_lives_and_dies_with_its_service),
        cmocka_unit_test(test_start_failure_fails_the_service),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
