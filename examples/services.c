/*
 * services: a small tree of services, supervised.
 *
 *   app                      the root service
 *   ├── ticker   (daemon)    prints a tick and the stats every 100 ms
 *   ├── failer               fails on demand: after --fail-after N ticks
 *   └── workers  (child)     a child service with two workers that
 *                            take jobs from a queue
 *
 * Ctrl-C (SIGINT) cancels the root: everything is cancelled leaves
 * first, each task cleans up, and the program prints how it ended.
 * With --fail-after N, the failer's error cancels everything the same way
 * and the program exits 1 with the error.
 *
 *   build/examples/services [--fail-after N]
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <lahja/lahja.h>

struct app {
    lahja_service_t svc;
    lahja_service_t workers_svc;
    lahja_manager_t *manager;
    lahja_queue_t *jobs;
    lahja_cond_t tick;
    int ticks;
    int fail_after; /* 0: never */
};

static void print_stats(const char *who, lahja_manager_t *m)
{
    char desc[128];
    lahja_manager_stats_t st;
    lahja_manager_describe(m, desc, sizeof desc);
    lahja_manager_stats(m, &st);
    printf("%s: %s tasks total=%zu finished=%zu pending=%zu\n", who, desc, st.total,
           st.finished, st.pending);
    fflush(stdout);
}

static int ticker(void *arg)
{
    struct app *app = arg;
    int rc;
    while ((rc = lahja_sleep(100)) == 0) {
        app->ticks++;
        printf("tick %d\n", app->ticks);
        print_stats("app", app->manager);
        lahja_queue_try_send(app->jobs, (void *)(intptr_t)app->ticks);
        lahja_cond_broadcast(&app->tick);
    }
    printf("ticker: stopping\n");
    return rc;
}

static int failer(void *arg)
{
    struct app *app = arg;
    while (app->fail_after == 0 || app->ticks < app->fail_after) {
        int rc = lahja_cond_wait(&app->tick, LAHJA_FOREVER);
        if (rc != 0)
            return rc;
    }
    return lahja_service_fail(-EIO, "failing on demand after %d ticks", app->ticks);
}

static int worker(void *arg)
{
    struct app *app = arg;
    void *job;
    int rc;
    while ((rc = lahja_queue_recv(app->jobs, &job, LAHJA_FOREVER)) == 0)
        printf("worker: job %d\n", (int)(intptr_t)job);
    /* Cleanup that must suspend runs shielded, with its own deadline. */
    lahja_scope_t *s;
    if (lahja_scope_open(lahja_deadline_in(50), LAHJA_SCOPE_SHIELD, &s) == 0) {
        lahja_sleep(10); /* e.g. flush what was in progress */
        lahja_scope_close(s);
    }
    printf("worker: stopped\n");
    return rc;
}

static int run_workers(lahja_manager_t *m, void *user)
{
    struct app *app = user;
    lahja_manager_run_task(m, worker, app, 0, "worker");
    lahja_manager_run_task(m, worker, app, 0, "worker");
    return 0;
}

static int run_app(lahja_manager_t *m, void *user)
{
    struct app *app = user;
    int rc = lahja_manager_run_daemon_task(m, ticker, app, "ticker");
    if (rc == 0)
        rc = lahja_manager_run_task(m, failer, app, 0, "failer");
    if (rc == 0)
        rc = lahja_manager_run_child_service(m, &app->workers_svc, 0, "workers", NULL);
    return rc;
}

static void on_sigint(uv_signal_t *h, int signum)
{
    (void)signum;
    struct app *app = h->data;
    printf("\nSIGINT: cancelling\n");
    lahja_manager_cancel(app->manager);
}

static int main_task(void *arg)
{
    struct app *app = arg;
    int rc = lahja_manager_new(&app->svc, &app->manager);
    if (rc != 0)
        return rc;
    uv_signal_t sig;
    uv_signal_init(lahja_rt_loop(lahja_rt_current()), &sig);
    sig.data = app;
    uv_signal_start(&sig, on_sigint, SIGINT);

    printf("running; Ctrl-C to stop\n");
    fflush(stdout);
    rc = lahja_manager_run(app->manager);

    lahja_uv_close((uv_handle_t *)&sig);
    print_stats("app", app->manager);
    for (size_t i = 0; i < lahja_manager_nerrors(app->manager); i++) {
        const lahja_service_error_t *e = lahja_manager_error(app->manager, i);
        printf("error in %s: %s (%s)\n", e->task_name, e->message, lahja_err_name(e->code));
    }
    lahja_manager_free(app->manager);
    return rc;
}

int main(int argc, char **argv)
{
    struct app app = { .fail_after = 0 };
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fail-after") == 0 && i + 1 < argc) {
            app.fail_after = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--fail-after N]\n", argv[0]);
            return 2;
        }
    }
    lahja_service_init(&app.svc, "app", run_app, &app);
    lahja_service_init(&app.workers_svc, "workers", run_workers, &app);
    lahja_cond_init(&app.tick);
    if (lahja_queue_new(16, &app.jobs) != 0)
        return 1;
    int rc = lahja_run(main_task, &app, NULL);
    lahja_queue_free(app.jobs);
    printf("%s\n", rc == 0 ? "stopped cleanly" : lahja_strerror(rc));
    return rc == 0 ? 0 : 1;
}
