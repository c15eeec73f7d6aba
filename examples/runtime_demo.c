/*
 * runtime_demo: tasks, a nursery, a bounded queue, a deadline and
 * cancellation, in one small program.
 *
 * A producer sends numbered jobs through a queue of capacity 4 to two
 * workers; the workers take turns; a watchdog scope gives the whole
 * batch a deadline it easily meets; then a sleeper is cancelled and
 * cleans up inside a shielded scope.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>

#include <lahja/lahja.h>

#define NJOBS 8

struct work {
    lahja_queue_t *jobs;
    int done[2];
};

struct worker_arg {
    struct work *w;
    int id;
};

static int producer(void *arg)
{
    struct work *w = arg;
    for (intptr_t i = 1; i <= NJOBS; i++) {
        int rc = lahja_queue_send(w->jobs, (void *)i, LAHJA_FOREVER);
        if (rc != 0)
            return rc;
    }
    lahja_queue_close(w->jobs); /* workers drain what is left, then stop */
    return 0;
}

static int worker(void *arg)
{
    struct worker_arg *a = arg;
    void *job;
    int rc;
    while ((rc = lahja_queue_recv(a->w->jobs, &job, LAHJA_FOREVER)) == 0) {
        printf("worker %d: job %d\n", a->id, (int)(intptr_t)job);
        a->w->done[a->id]++;
        lahja_sleep(1); /* pretend to work; lets the other worker run */
    }
    return rc == -EPIPE ? 0 : rc;
}

static int sleeper(void *arg)
{
    (void)arg;
    int rc = lahja_sleep(60 * 1000);
    printf("sleeper: woke with %s\n", lahja_err_name(rc));
    /* Cleanup that must suspend runs in a shielded scope. */
    lahja_scope_t *shield;
    lahja_scope_open(LAHJA_FOREVER, LAHJA_SCOPE_SHIELD, &shield);
    int rc2 = lahja_sleep(5);
    lahja_scope_close(shield);
    printf("sleeper: shielded cleanup slept, %s\n", lahja_err_name(rc2));
    return rc;
}

static int demo(void *arg)
{
    (void)arg;
    struct work w = { 0 };
    lahja_queue_new(4, &w.jobs);
    struct worker_arg a0 = { &w, 0 }, a1 = { &w, 1 };

    lahja_scope_t *deadline;
    lahja_scope_open(lahja_deadline_in(5000), 0, &deadline);
    lahja_nursery_t *n;
    lahja_nursery_open(&n);
    lahja_nursery_spawn(n, producer, &w, &(lahja_task_options_t){ .name = "producer" }, NULL);
    lahja_nursery_spawn(n, worker, &a0, &(lahja_task_options_t){ .name = "worker0" }, NULL);
    lahja_nursery_spawn(n, worker, &a1, &(lahja_task_options_t){ .name = "worker1" }, NULL);
    int rc = lahja_nursery_close(n);
    int drc = lahja_scope_close(deadline);
    printf("batch: %d + %d jobs, nursery %s, deadline %s\n", w.done[0], w.done[1],
           lahja_err_name(rc), drc == 0 ? "met" : "missed");
    lahja_queue_free(w.jobs);

    lahja_task_t *t;
    lahja_spawn(lahja_rt_current(), sleeper, NULL, NULL, &t);
    lahja_sleep(10);
    lahja_task_cancel(t);
    int result;
    lahja_task_join(t, LAHJA_FOREVER, &result);
    printf("sleeper returned %s\n", lahja_err_name(result));
    return rc;
}

int main(void)
{
    int rc = lahja_run(demo, NULL, NULL);
    printf("lahja_run: %s\n", rc == 0 ? "ok" : lahja_strerror(rc));
    return rc == 0 ? 0 : 1;
}
