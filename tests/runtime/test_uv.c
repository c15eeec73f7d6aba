/*
 * Waiting from a task on libuv: file system requests, thread pool work
 * (also cancelled while queued or running), timers, closing handles, and
 * the completion's own rules.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lahja/lahja.h>

#include "runtime/rt.h"
#include "support_sync.h"

#define FILE_SIZE 123

/* A file with known contents, made before each file system test. */
static char file_path[64];
static char file_data[FILE_SIZE];

static int make_file(void **state)
{
    (void)state;
    strcpy(file_path, "/tmp/lahja_test_uv_XXXXXX");
    int fd = mkstemp(file_path);
    if (fd < 0)
        return -1;
    for (int i = 0; i < FILE_SIZE; i++)
        file_data[i] = (char)('a' + i % 26);
    ssize_t n = write(fd, file_data, FILE_SIZE);
    close(fd);
    return n == FILE_SIZE ? no_runtime_left(state) : -1;
}

static int remove_file(void **state)
{
    (void)state;
    unlink(file_path);
    return 0;
}

static uv_loop_t *loop_here(void)
{
    return lahja_rt_loop(lahja_rt_current());
}

/* ------------------------------------------------------ file system */

static void on_fs(uv_fs_t *req)
{
    lahja_complete(req->data, (int)req->result);
}

/* Points a request at a fresh completion, before submitting it. */
static uv_fs_t *fs_req(uv_fs_t *req, lahja_completion_t *c)
{
    lahja_completion_init(c);
    req->data = c;
    return req;
}

/* Waits for a submitted fs request; returns its callback's status. */
static int await_fs(int submit_rc, uv_fs_t *req, lahja_completion_t *c)
{
    assert_int_equal(submit_rc, 0);
    int rc = lahja_uv_req_wait((uv_req_t *)req, c, LAHJA_FOREVER);
    assert_int_equal(rc, (int)req->result);
    return rc;
}

static int main_fs_stat(void *arg)
{
    (void)arg;
    uv_fs_t req;
    lahja_completion_t c;
    int rc = await_fs(uv_fs_stat(loop_here(), fs_req(&req, &c), file_path, on_fs), &req, &c);
    assert_int_equal(rc, 0);
    assert_int_equal(req.statbuf.st_size, FILE_SIZE);
    uv_fs_req_cleanup(&req);

    rc = await_fs(uv_fs_stat(loop_here(), fs_req(&req, &c), "/nonexistent/lahja", on_fs),
                  &req, &c);
    assert_int_equal(rc, UV_ENOENT);
    uv_fs_req_cleanup(&req);
    return 0;
}

static void test_fs_stat(void **state)
{
    (void)state;
    RUN_MAIN(main_fs_stat, NULL);
}

static int main_fs_open_read_close(void *arg)
{
    (void)arg;
    uv_fs_t req;
    lahja_completion_t c;
    uv_loop_t *loop = loop_here();
    int fd = await_fs(uv_fs_open(loop, fs_req(&req, &c), file_path, O_RDONLY, 0, on_fs),
                      &req, &c);
    uv_fs_req_cleanup(&req);
    assert_true(fd >= 0);

    char buf[2 * FILE_SIZE];
    uv_buf_t b = uv_buf_init(buf, sizeof buf);
    int n = await_fs(uv_fs_read(loop, fs_req(&req, &c), fd, &b, 1, 0, on_fs), &req, &c);
    uv_fs_req_cleanup(&req);
    assert_int_equal(n, FILE_SIZE);
    assert_memory_equal(buf, file_data, FILE_SIZE);

    int rc = await_fs(uv_fs_close(loop, fs_req(&req, &c), fd, on_fs), &req, &c);
    uv_fs_req_cleanup(&req);
    assert_int_equal(rc, 0);

    rc = await_fs(uv_fs_open(loop, fs_req(&req, &c), "/nonexistent/lahja", O_RDONLY, 0, on_fs),
                  &req, &c);
    uv_fs_req_cleanup(&req);
    assert_int_equal(rc, UV_ENOENT);
    return 0;
}

static void test_fs_open_read_close(void **state)
{
    (void)state;
    RUN_MAIN(main_fs_open_read_close, NULL);
}

/* ------------------------------------------------------- thread pool */

/* A unit of thread pool work, and what happened to it. */
struct work {
    uv_work_t req;
    lahja_completion_t c;
    uv_sem_t *release;   /* if set, the work blocks until it is posted */
    uv_async_t *started; /* if set, signalled when the work begins */
    uv_thread_t thread;  /* where the work ran */
    long sum;
    int ran;             /* the work function ran to its end */
    int after_ran;       /* after_work was called ... */
    int after_status;    /* ... with this status */
};

static void work_fn(uv_work_t *req)
{
    struct work *w = req->data;
    w->thread = uv_thread_self();
    if (w->started != NULL)
        uv_async_send(w->started);
    if (w->release != NULL)
        uv_sem_wait(w->release);
    long sum = 0;
    for (long i = 1; i <= 1000; i++)
        sum += i;
    w->sum = sum;
    w->ran = 1;
}

static void after_work_fn(uv_work_t *req, int status)
{
    struct work *w = req->data;
    w->after_ran = 1;
    w->after_status = status;
    lahja_complete(&w->c, status);
}

static void work_init(struct work *w, uv_sem_t *release, uv_async_t *started)
{
    memset(w, 0, sizeof *w);
    w->req.data = w;
    lahja_completion_init(&w->c);
    w->release = release;
    w->started = started;
}

static int work_submit(struct work *w)
{
    return uv_queue_work(loop_here(), &w->req, work_fn, after_work_fn);
}

static int main_queue_work(void *arg)
{
    (void)arg;
    struct work w;
    work_init(&w, NULL, NULL);
    assert_int_equal(work_submit(&w), 0);
    int rc = lahja_uv_req_wait((uv_req_t *)&w.req, &w.c, LAHJA_FOREVER);
    assert_int_equal(rc, 0);
    assert_true(w.after_ran);
    assert_true(w.ran);
    assert_int_equal(w.sum, 500500);
    uv_thread_t self = uv_thread_self();
    assert_false(uv_thread_equal(&w.thread, &self));
    return 0;
}

static void test_queue_work_awaited(void **state)
{
    (void)state;
    RUN_MAIN(main_queue_work, NULL);
}

/* An async handle that sets an event: how a worker thread tells the
 * loop that its work has started. */
struct started {
    uv_async_t async;
    lahja_latch_t ev;
};

static void on_started(uv_async_t *h)
{
    lahja_latch_set(h->data);
}

static void started_init(struct started *s)
{
    lahja_latch_init(&s->ev);
    assert_int_equal(uv_async_init(loop_here(), &s->async, on_started), 0);
    s->async.data = &s->ev;
}

/* A task that submits work and waits for it. */
struct work_waiter {
    struct work *w;
    lahja_time_t deadline;
    lahja_latch_t blocking; /* set right before it waits */
    lahja_time_t start, end;
    int rc;
    int after_ran_at_return; /* after_work had run when the wait returned */
};

static int work_waiter(void *arg)
{
    struct work_waiter *ww = arg;
    int rc = work_submit(ww->w);
    if (rc != 0)
        return rc;
    ww->start = lahja_now();
    lahja_latch_set(&ww->blocking);
    ww->rc = lahja_uv_req_wait((uv_req_t *)&ww->w->req, &ww->w->c, ww->deadline);
    ww->after_ran_at_return = ww->w->after_ran;
    ww->end = lahja_now();
    return 0;
}

static lahja_task_t *start_work_waiter(struct work_waiter *ww, struct work *w,
                                       lahja_time_t deadline)
{
    ww->w = w;
    ww->deadline = deadline;
    ww->rc = 1;
    ww->after_ran_at_return = 0;
    lahja_latch_init(&ww->blocking);
    lahja_task_t *t;
    assert_int_equal(lahja_spawn(lahja_rt_current(), work_waiter, ww, NULL, &t), 0);
    assert_int_equal(lahja_latch_wait(&ww->blocking, LAHJA_FOREVER), 0);
    assert_false(lahja_task_done(t));
    return t;
}

static void join_ok(lahja_task_t *t)
{
    int result = -1;
    assert_int_equal(lahja_task_join(t, LAHJA_FOREVER, &result), 0);
    assert_int_equal(result, 0);
}

/*
 * The thread pool has a single thread (see main): `blocker` occupies it
 * until released, so that work submitted after it stays queued.
 */
struct pool_blocked {
    uv_sem_t release;
    struct started started;
    struct work blocker;
};

static void block_pool(struct pool_blocked *pb)
{
    assert_int_equal(uv_sem_init(&pb->release, 0), 0);
    started_init(&pb->started);
    work_init(&pb->blocker, &pb->release, &pb->started.async);
    assert_int_equal(work_submit(&pb->blocker), 0);
    assert_int_equal(lahja_latch_wait(&pb->started.ev, LAHJA_FOREVER), 0);
}

static void unblock_pool(struct pool_blocked *pb)
{
    uv_sem_post(&pb->release);
    int rc = lahja_uv_req_wait((uv_req_t *)&pb->blocker.req, &pb->blocker.c, LAHJA_FOREVER);
    assert_int_equal(rc, 0);
    assert_true(pb->blocker.ran);
    assert_int_equal(lahja_uv_close((uv_handle_t *)&pb->started.async), 0);
    uv_sem_destroy(&pb->release);
}

static int main_cancel_queued_work(void *arg)
{
    (void)arg;
    struct pool_blocked pb;
    block_pool(&pb);
    struct work victim;
    work_init(&victim, NULL, NULL);
    struct work_waiter ww;
    lahja_task_t *t = start_work_waiter(&ww, &victim, LAHJA_FOREVER);
    lahja_task_cancel(t);
    join_ok(t);
    /* uv_cancel() took the queued work back: the wait reports the
     * cancellation, after after_work had run. */
    assert_int_equal(ww.rc, -ECANCELED);
    assert_true(ww.after_ran_at_return);
    assert_int_equal(victim.after_status, UV_ECANCELED);
    assert_false(victim.ran);
    unblock_pool(&pb);
    return 0;
}

static void test_cancel_wait_on_queued_work(void **state)
{
    (void)state;
    RUN_MAIN(main_cancel_queued_work, NULL);
}

static int main_deadline_queued_work(void *arg)
{
    (void)arg;
    struct pool_blocked pb;
    block_pool(&pb);
    struct work victim;
    work_init(&victim, NULL, NULL);
    struct work_waiter ww;
    lahja_task_t *t = start_work_waiter(&ww, &victim, lahja_deadline_in(SHORT_MS));
    join_ok(t);
    assert_int_equal(ww.rc, -ETIMEDOUT);
    assert_true(ww.end >= ww.deadline); /* not before it, however late the task began */
    assert_true(ww.after_ran_at_return);
    assert_int_equal(victim.after_status, UV_ECANCELED);
    assert_false(victim.ran);
    unblock_pool(&pb);
    return 0;
}

static void test_deadline_on_queued_work(void **state)
{
    (void)state;
    RUN_MAIN(main_deadline_queued_work, NULL);
}

/* The task has taken its cancellation and waits on, not cancellable. */
static int in_uncancellable_wait(const lahja_task_t *t)
{
    return t->state == LAHJA_TASK_SUSPENDED && !t->cancellable;
}

static int main_cancel_running_work(void *arg)
{
    (void)arg;
    uv_sem_t release;
    assert_int_equal(uv_sem_init(&release, 0), 0);
    struct started started;
    started_init(&started);
    struct work victim;
    work_init(&victim, &release, &started.async);
    struct work_waiter ww;
    lahja_task_t *t = start_work_waiter(&ww, &victim, LAHJA_FOREVER);
    assert_int_equal(lahja_latch_wait(&started.ev, LAHJA_FOREVER), 0);

    /* The work is running: uv_cancel() cannot stop it, so the waiter
     * must keep waiting for after_work, cancelled or not. */
    lahja_task_cancel(t);
    while (!in_uncancellable_wait(t))
        assert_int_equal(lahja_yield(), 0);
    assert_false(lahja_task_done(t));
    assert_false(victim.after_ran);

    uv_sem_post(&release);
    join_ok(t);
    /* It completed anyway: the real status, so its result is not lost. */
    assert_int_equal(ww.rc, 0);
    assert_true(ww.after_ran_at_return);
    assert_int_equal(victim.after_status, 0);
    assert_true(victim.ran);
    assert_int_equal(victim.sum, 500500);
    assert_int_equal(lahja_uv_close((uv_handle_t *)&started.async), 0);
    uv_sem_destroy(&release);
    return 0;
}

static void test_cancel_wait_on_running_work(void **state)
{
    (void)state;
    RUN_MAIN(main_cancel_running_work, NULL);
}

/* ---------------------------------------------------------- handles */

static void on_timer_complete(uv_timer_t *h)
{
    lahja_complete(h->data, 17);
}

static int main_timer_handle(void *arg)
{
    (void)arg;
    uv_timer_t timer;
    lahja_completion_t c;
    lahja_completion_init(&c);
    assert_int_equal(uv_timer_init(loop_here(), &timer), 0);
    timer.data = &c;
    lahja_time_t t0 = lahja_now();
    assert_int_equal(uv_timer_start(&timer, on_timer_complete, SHORT_MS, 0), 0);
    int rc = lahja_completion_wait(&c, LAHJA_FOREVER);
    lahja_time_t waited = elapsed_since(t0);
    assert_int_equal(lahja_uv_close((uv_handle_t *)&timer), 0);
    assert_int_equal(rc, 17);
    assert_true(waited >= SHORT_MS);
    return 0;
}

static void test_timer_handle_awaited(void **state)
{
    (void)state;
    RUN_MAIN(main_timer_handle, NULL);
}

static void find_handle(uv_handle_t *h, void *arg)
{
    void **want = arg;
    if (h == *want)
        *want = NULL;
}

/* Non-zero if the loop still lists the handle (closed ones leave it). */
static int loop_has_handle(uv_loop_t *loop, uv_handle_t *h)
{
    void *want = h;
    uv_walk(loop, find_handle, &want);
    return want == NULL;
}

static void on_tick(uv_timer_t *h)
{
    (void)h;
}

/* Starts a repeating timer in heap memory. */
static uv_timer_t *new_ticking_timer(void)
{
    uv_timer_t *h = malloc(sizeof *h);
    assert_non_null(h);
    assert_int_equal(uv_timer_init(loop_here(), h), 0);
    assert_int_equal(uv_timer_start(h, on_tick, 1, 1), 0);
    return h;
}

/* Closes h with lahja_uv_close, checks it is gone, frees it: with a
 * sanitizer or valgrind, any later touch by libuv is an error. */
static void close_and_free(uv_timer_t *h)
{
    assert_true(loop_has_handle(loop_here(), (uv_handle_t *)h));
    assert_int_equal(lahja_uv_close((uv_handle_t *)h), 0);
    assert_true(uv_is_closing((uv_handle_t *)h));
    assert_false(loop_has_handle(loop_here(), (uv_handle_t *)h));
    free(h);
}

static int main_uv_close(void *arg)
{
    (void)arg;
    close_and_free(new_ticking_timer());
    /* Not cancellable: a cancelled task still waits for the close. */
    lahja_scope_t *s;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), 0);
    lahja_scope_cancel(s);
    close_and_free(new_ticking_timer());
    assert_int_equal(lahja_checkpoint(), -ECANCELED);
    assert_int_equal(lahja_scope_close(s), -ECANCELED);
    return 0;
}

static void test_uv_close_waits_for_close_callback(void **state)
{
    (void)state;
    RUN_MAIN(main_uv_close, NULL);
}

static void test_uv_close_outside_task(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_timer_t timer;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uv_timer_init(&loop, &timer), 0);
    assert_int_equal(lahja_uv_close((uv_handle_t *)&timer), LAHJA_ENOTASK);
    assert_false(uv_is_closing((uv_handle_t *)&timer));
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* ------------------------------------------------------ completions */

struct twice {
    lahja_completion_t c;
    counter_t waiting;
    int rc;
};

static int completion_waiter(void *arg)
{
    struct twice *tw = arg;
    counter_bump(&tw->waiting);
    tw->rc = lahja_completion_wait(&tw->c, LAHJA_FOREVER);
    return 0;
}

static int main_complete_twice(void *arg)
{
    (void)arg;
    struct twice tw = { .rc = 1 };
    lahja_completion_init(&tw.c);
    counter_init(&tw.waiting);
    lahja_nursery_t *nur;
    assert_int_equal(lahja_nursery_open(&nur), 0);
    assert_int_equal(lahja_nursery_spawn(nur, completion_waiter, &tw, NULL, NULL), 0);
    assert_int_equal(counter_wait(&tw.waiting, 1), 0);
    lahja_complete(&tw.c, 3);
    lahja_complete(&tw.c, 4);
    assert_int_equal(lahja_nursery_close(nur), 0);
    assert_int_equal(tw.rc, 3);
    assert_int_equal(tw.c.status, 3);
    return 0;
}

static void test_complete_twice_keeps_first_status(void **state)
{
    (void)state;
    /* Without a waiter, and outside any task. */
    lahja_completion_t c;
    lahja_completion_init(&c);
    lahja_complete(&c, 5);
    lahja_complete(&c, 7);
    lahja_complete(&c, 0);
    assert_int_equal(c.status, 5);
    /* With a waiter, which gets the first status. */
    RUN_MAIN(main_complete_twice, NULL);
}

static int main_completed_before_wait(void *arg)
{
    (void)arg;
    lahja_completion_t c;
    lahja_completion_init(&c);
    lahja_complete(&c, 9);
    lahja_scope_t *s;
    assert_int_equal(lahja_scope_open(LAHJA_FOREVER, 0, &s), 0);
    lahja_scope_cancel(s);
    /* The result may carry a resource: it is returned, not -ECANCELED. */
    assert_int_equal(lahja_completion_wait(&c, LAHJA_FOREVER), 9);
    assert_int_equal(lahja_completion_wait(&c, 0), 9);
    /* The task really is cancelled. */
    assert_int_equal(lahja_checkpoint(), -ECANCELED);
    assert_int_equal(lahja_scope_close(s), -ECANCELED);
    return 0;
}

static void test_completed_before_wait_returns_status_when_cancelled(void **state)
{
    (void)state;
    RUN_MAIN(main_completed_before_wait, NULL);
}

int main(void)
{
    /* One pool thread, so that one blocked work item keeps the next one
     * queued.  Must be set before libuv starts its thread pool. */
    setenv("UV_THREADPOOL_SIZE", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fs_stat, make_file, remove_file),
        cmocka_unit_test_setup_teardown(test_fs_open_read_close, make_file, remove_file),
        TEST(test_queue_work_awaited),
        TEST(test_cancel_wait_on_queued_work),
        TEST(test_deadline_on_queued_work),
        TEST(test_cancel_wait_on_running_work),
        TEST(test_timer_handle_awaited),
        TEST(test_uv_close_waits_for_close_callback),
        TEST(test_uv_close_outside_task),
        TEST(test_complete_twice_keeps_first_status),
        TEST(test_completed_before_wait_returns_status_when_cancelled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
