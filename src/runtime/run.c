/*
 * lahja_run: the embedded entry point, a loop and a runtime of its own
 * for the length of one main task.
 */
#include <errno.h>

#include "rt.h"

struct main_task {
    lahja_task_fn fn;
    void *arg;
    int result;
    int done;
};

/* Runs the user's main function; when it returns, everything else is
 * cancelled and the loop stopped, so that user handles left open (a
 * listening socket, a signal watcher) cannot keep lahja_run from
 * returning. */
static int main_task(void *arg)
{
    struct main_task *m = arg;
    m->result = m->fn(m->arg);
    m->done = 1;
    lahja_rt_cancel(lahja_tls_rt);
    uv_stop(lahja_tls_rt->loop);
    return m->result;
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Runs the loop until the cancelled tasks have finished, or nothing can
 * make progress any more. */
static void drain_tasks(lahja_rt_t *rt, uv_loop_t *loop)
{
    while (lahja_rt_ntasks(rt) > 0 && uv_run(loop, UV_RUN_ONCE) != 0)
        ;
    if (lahja_rt_ntasks(rt) > 0)
        uv_run(loop, UV_RUN_NOWAIT); /* tasks made ready by the last pass */
}

int lahja_run(lahja_task_fn fn, void *arg, const lahja_task_options_t *opts)
{
    if (fn == NULL)
        return -EINVAL;
    lahja_forget_inherited();
    if (lahja_tls_rt != NULL)
        return -EBUSY;
    uv_loop_t loop;
    int rc = uv_loop_init(&loop);
    if (rc != 0)
        return rc;
    lahja_rt_t *rt;
    rc = lahja_rt_new(&loop, NULL, &rt);
    if (rc != 0) {
        uv_loop_close(&loop);
        return rc;
    }
    struct main_task m = { fn, arg, 0, 0 };
    rc = lahja_spawn(rt, main_task, &m, opts, NULL);
    if (rc == 0) {
        uv_run(&loop, UV_RUN_DEFAULT);
        /* uv_run returned without main_task stopping it: every task is
         * blocked and no handle or timer can wake one. */
        rc = m.done ? m.result : LAHJA_EDEADLOCK;
        lahja_rt_cancel(rt);
        drain_tasks(rt, &loop);
        if (lahja_rt_ntasks(rt) > 0) {
            /* A shielded wait that nothing ends: its stack cannot be
             * freed, so the runtime is leaked, but the thread is free to
             * start another. */
            lahja_tls_rt = NULL;
            return LAHJA_EDEADLOCK;
        }
        lahja_task_release_all(rt);
    }
    lahja_rt_close(rt);
    uv_walk(&loop, close_any, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rc;
}
