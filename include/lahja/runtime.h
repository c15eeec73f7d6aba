/**
 * @file lahja/runtime.h
 * Tasks: stackful coroutines on a libuv loop, with structured
 * concurrency (nurseries), cancel scopes and deadlines.
 *
 * The model, in brief (docs/runtime.md has the long form):
 *
 *  - A task is a function running on its own stack.  Tasks of one runtime
 *    share one libuv loop and one thread and run one at a time; another
 *    task runs only when the current one suspends.  Every call documented
 *    as "suspending" is a checkpoint: it is where a task can be cancelled.
 *
 *  - Cancellation is level-triggered.  Once a cancel scope is cancelled,
 *    the suspending call a task inside it is blocked in, and every later
 *    one, returns -ECANCELED at once, until the task closes that scope.
 *    A scope whose deadline passed behaves the same and reports
 *    -ETIMEDOUT.  A shielded scope hides the cancellation of the scopes
 *    around it, so that cleanup code can still suspend.
 *
 *  - A nursery is a scope that owns child tasks; closing it waits for all
 *    of them.  The first child that fails cancels the nursery, and so its
 *    siblings and the body of the task that opened it.
 *
 * Threads: a runtime, and every object created on it, belongs to the
 * thread that created the runtime.  Functions called from another thread
 * return LAHJA_EWRONGTHREAD where they can detect it; the others are
 * documented as loop-thread only, like libuv's.  One runtime per thread.
 * After fork(), the child must not use its parent's runtime (its loop
 * shares kernel objects with the parent's); it may start its own with
 * lahja_rt_new() or lahja_run(), also from inside a task it inherited.
 *
 * Errors: negative codes, see lahja/error.h.  Output parameters are set
 * only on success.
 */
#ifndef LAHJA_RUNTIME_H
#define LAHJA_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "lahja/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The libuv types of the prototypes below, by their struct tags
 * (uv_loop_t is struct uv_loop_s, uv_req_t struct uv_req_s, uv_handle_t
 * struct uv_handle_s), so that this header need not include <uv.h>,
 * which does not compile under a strict -std=c11 without a feature-test
 * macro.  A program that calls libuv includes <uv.h> itself; its
 * uv_loop_t * and the like are these very types.
 */
struct uv_loop_s;
struct uv_req_s;
struct uv_handle_s;

/* ---------------------------------------------------------------- time */

/**
 * A point in time on the loop's monotonic clock, in milliseconds, the
 * same clock as uv_now().  Deadlines are absolute values of this type.
 */
typedef uint64_t lahja_time_t;

/** A deadline that never passes. */
#define LAHJA_FOREVER UINT64_MAX

/**
 * The current time of the calling thread's runtime (uv_update_time(),
 * then uv_now()).  Returns 0 on a thread without a runtime.
 */
lahja_time_t lahja_now(void);

/**
 * lahja_now() + ms, saturating at LAHJA_FOREVER.  The usual way to turn
 * a timeout into a deadline: lahja_sleep_until(lahja_deadline_in(50)).
 */
lahja_time_t lahja_deadline_in(uint64_t ms);

/* ------------------------------------------------------------- runtime */

/** A runtime: the tasks of one thread's libuv loop. */
typedef struct lahja_rt lahja_rt_t;
/** A task, as its handle (lahja_spawn(), lahja_nursery_spawn()). */
typedef struct lahja_task lahja_task_t;
/** A cancel scope (lahja_scope_open()). */
typedef struct lahja_scope lahja_scope_t;
/** A nursery: a cancel scope that owns child tasks (lahja_nursery_open()). */
typedef struct lahja_nursery lahja_nursery_t;

/**
 * A task's function.  It returns 0 on success or a negative error code;
 * a non-zero return is the task's failure (see nurseries).  Returning
 * -ECANCELED or -ETIMEDOUT while the task is being cancelled is the
 * normal way to end on cancellation and does not count as a failure.
 */
typedef int (*lahja_task_fn)(void *arg);

/** How to start a task; a NULL pointer to it gives every default. */
typedef struct lahja_task_options {
    /** A name for errors and debugging, copied (up to 63 bytes).  NULL
     * gives "task". */
    const char *name;
    /** Usable stack size in bytes, rounded up to whole pages; 0 gives the
     * runtime's default.  A guard page below it faults on overflow. */
    size_t stack_size;
} lahja_task_options_t;

/** How to set up a runtime (lahja_rt_new()); NULL gives every default. */
typedef struct lahja_rt_options {
    /** Default stack size for tasks; 0 gives 256 KiB. */
    size_t stack_size;
    /** How many finished tasks (with their stacks) to keep for reuse;
     * 0 gives 64.  Larger values trade memory for spawn speed. */
    size_t pool_size;
} lahja_rt_options_t;

/**
 * Creates a runtime that hosts tasks on `loop`, which the caller owns and
 * runs with uv_run() as usual.  The runtime adds two internal handles to
 * the loop; they keep it alive only while a task is ready to run.
 * `opts` may be NULL.  On success *out owns the runtime; release it with
 * lahja_rt_close().
 * After fork(), the child's thread has no runtime: a pthread_atfork
 * child handler (registered by the first call) forgets the parent's
 * without closing it, since its loop's kernel objects are shared with
 * the parent; its memory is leaked in the child.  So lahja_rt_new
 * succeeds in the child, on a loop the child made with uv_loop_init().
 * Errors: -EINVAL, -ENOMEM, -EBUSY (this thread already has a runtime).
 */
int lahja_rt_new(struct uv_loop_s *loop, const lahja_rt_options_t *opts, lahja_rt_t **out);

/**
 * Closes a runtime that has no live tasks.  Its handles are closed and
 * its memory freed by close callbacks, so the caller must run the loop
 * (uv_run) once more before uv_loop_close().
 * Errors: -EBUSY if tasks are still alive (nothing is done then),
 * LAHJA_EWRONGTHREAD.  Accepts NULL (returns 0).
 */
int lahja_rt_close(lahja_rt_t *rt);

/**
 * Cancels every root task of the runtime (those started with
 * lahja_spawn), and through them all their descendants.  Typically
 * called from a signal watcher.  It is permanent: root tasks spawned
 * afterwards start cancelled.  Loop thread only.
 */
void lahja_rt_cancel(lahja_rt_t *rt);

/** The loop a runtime runs on. */
struct uv_loop_s *lahja_rt_loop(const lahja_rt_t *rt);

/** The calling thread's runtime, or NULL. */
lahja_rt_t *lahja_rt_current(void);

/** How many tasks of the runtime have started and not yet finished. */
size_t lahja_rt_ntasks(const lahja_rt_t *rt);

/**
 * The embedded entry point: creates a loop and a runtime on the calling
 * thread, runs fn(arg) as the main task, and runs the loop until the main
 * task has finished.  Root tasks still alive then are cancelled and
 * awaited; then everything is closed and freed.
 * Returns the main task's result, or LAHJA_EDEADLOCK when every task was
 * blocked and nothing could ever wake one (the tasks are then cancelled
 * and awaited before returning), or -ENOMEM/-EBUSY if setting up failed.
 * Handles the tasks never released are released here.  If a task stays
 * blocked even after cancellation (a shielded wait nothing can end), its
 * memory cannot be freed: LAHJA_EDEADLOCK, and the runtime is leaked.
 */
int lahja_run(lahja_task_fn fn, void *arg, const lahja_task_options_t *opts);

/* --------------------------------------------------------------- tasks */

/**
 * Starts a root task on `rt`: fn(arg) runs on its own stack from the next
 * scheduling point.  Can be called from a task or from any libuv callback
 * on the runtime's thread.
 * If `out` is non-NULL, *out is a handle the caller owns: the task object
 * stays valid until the handle is released by a successful
 * lahja_task_join() or by lahja_task_detach().  With `out` NULL the task
 * is detached from the start.
 * Errors: -EINVAL, -ENOMEM (mmap of the stack failed), LAHJA_EWRONGTHREAD.
 */
int lahja_spawn(lahja_rt_t *rt, lahja_task_fn fn, void *arg,
                const lahja_task_options_t *opts, lahja_task_t **out);

/**
 * Suspends the calling task until `t` has finished, then stores its
 * result in *result (if non-NULL).  For a root task's handle, a successful
 * join releases the handle.  A task cannot join itself (-EDEADLK).
 * Suspending; errors: -ECANCELED, -ETIMEDOUT (the handle stays valid),
 * LAHJA_ENOTASK when not called from a task.
 */
int lahja_task_join(lahja_task_t *t, lahja_time_t deadline, int *result);

/** Releases a root task's handle without waiting; the task runs on. */
void lahja_task_detach(lahja_task_t *t);

/**
 * Cancels the task: its own outermost scope, so every suspending call it
 * makes, now or later, outside shielded scopes returns -ECANCELED.
 * Cancelling a finished task does nothing.  Loop thread only.
 */
void lahja_task_cancel(lahja_task_t *t);

/** Non-zero once the task has finished (its function returned). */
int lahja_task_done(const lahja_task_t *t);

/** The task's result; meaningful only once lahja_task_done(). */
int lahja_task_result(const lahja_task_t *t);

/** The task's name (static storage inside the task object). */
const char *lahja_task_name(const lahja_task_t *t);

/** The calling task, or NULL when not called from a task. */
lahja_task_t *lahja_task_current(void);

/**
 * A checkpoint that lets every other ready task run before the caller
 * continues.  Suspending; errors: -ECANCELED, -ETIMEDOUT, LAHJA_ENOTASK.
 */
int lahja_yield(void);

/**
 * A checkpoint that does not suspend: returns -ECANCELED or -ETIMEDOUT
 * if the calling task is being cancelled, else 0.  LAHJA_ENOTASK outside a task.
 */
int lahja_checkpoint(void);

/**
 * Suspends until `deadline` (returns 0) unless cancelled first.
 * Suspending; errors: -ECANCELED, -ETIMEDOUT (an enclosing scope's
 * deadline came first), LAHJA_ENOTASK.
 */
int lahja_sleep_until(lahja_time_t deadline);

/** lahja_sleep_until(lahja_deadline_in(ms)). */
int lahja_sleep(uint64_t ms);

/* -------------------------------------------------------- cancel scopes */

/** The flags of lahja_scope_open(). */
enum lahja_scope_flags {
    /** Cancellation of enclosing scopes does not reach inside. */
    LAHJA_SCOPE_SHIELD = 1u << 0
};

/**
 * Opens a cancel scope in the calling task, nested inside its current
 * innermost scope.  Calls made inside it return -ETIMEDOUT once
 * `deadline` has passed (LAHJA_FOREVER for none) and -ECANCELED once it is
 * cancelled.  Scopes are closed in the reverse order of opening, by the
 * task that opened them (a programmer error otherwise: assertion).
 * Errors: LAHJA_ENOTASK, -ENOMEM.
 */
int lahja_scope_open(lahja_time_t deadline, unsigned flags, lahja_scope_t **out);

/**
 * Cancels the scope and everything running inside it, including tasks
 * in nurseries opened inside it.  Idempotent.  Can be called from any
 * task or callback on the loop thread.
 */
void lahja_scope_cancel(lahja_scope_t *s);

/** Moves the scope's deadline (earlier or later).  Loop thread only. */
void lahja_scope_set_deadline(lahja_scope_t *s, lahja_time_t deadline);

/** Turns the shield on or off.  Loop thread only. */
void lahja_scope_set_shield(lahja_scope_t *s, int shield);

/**
 * Closes and frees the innermost scope of the calling task.  Returns
 * -ECANCELED if the scope was cancelled, -ETIMEDOUT if it was cancelled
 * by its deadline, else 0: what a caller needs to tell "my own timeout
 * fired" from success.  A deadline counts once a checkpoint inside the
 * scope has seen it pass (as trio's cancelled_caught): a deadline that
 * passed while the task never reached a checkpoint under it gives 0.
 * Does not suspend.
 */
int lahja_scope_close(lahja_scope_t *s);

/* ------------------------------------------------------------ nurseries */

/** A child that failed, as recorded by its nursery. */
typedef struct lahja_failure {
    const char *task_name; /**< a copy, valid until the nursery is freed */
    int code;              /**< the child's non-zero result */
} lahja_failure_t;

/**
 * Opens a nursery in the calling task: a cancel scope nested inside the
 * task's innermost scope that also owns child tasks.  Must be closed (or
 * joined and freed) by the same task, in scope order.
 * Errors: LAHJA_ENOTASK, -ENOMEM.
 */
int lahja_nursery_open(lahja_nursery_t **out);

/**
 * Starts fn(arg) as a child task of the nursery.  Can be called from any
 * task (children spawning siblings included) or callback on the loop
 * thread, until the nursery's join has returned.  A child spawned into a
 * cancelled nursery starts cancelled.  If `out` is non-NULL, *out is a
 * handle valid until the nursery is freed (no release needed); joining
 * it is allowed and does not change how the nursery treats the result.
 * Without a handle, a child's memory is recycled as soon as it finishes:
 * a long-lived nursery costs memory for its live children only.
 * Errors: -EINVAL, -ENOMEM, LAHJA_ELIFECYCLE (the nursery has been
 * joined), LAHJA_EWRONGTHREAD.
 */
int lahja_nursery_spawn(lahja_nursery_t *n, lahja_task_fn fn, void *arg,
                        const lahja_task_options_t *opts, lahja_task_t **out);

/** Cancels the nursery's scope: every child and the nursery body. */
void lahja_nursery_cancel(lahja_nursery_t *n);

/**
 * Waits until every child has finished.  While it waits, cancellation of
 * the enclosing scopes is passed on to the children but does not end the
 * wait: a nursery never outlives its children.  Then pops the nursery's
 * scope.  Returns the first failure's code if a child failed; else
 * -ECANCELED/-ETIMEDOUT if the calling task is cancelled by a scope
 * outside the nursery; else 0 (also when the nursery was cancelled with
 * lahja_nursery_cancel()).  Call once, from the task that opened it.
 */
int lahja_nursery_join(lahja_nursery_t *n);

/** Number of failed children, in the order they failed. */
size_t lahja_nursery_nfailures(const lahja_nursery_t *n);

/** The i-th failure, or NULL if i is out of range.  The pointer is valid
 * until the next spawn into the nursery or its free. */
const lahja_failure_t *lahja_nursery_failure(const lahja_nursery_t *n, size_t i);

/**
 * Frees a joined nursery and its children's task objects (their handles
 * become invalid).  Accepts NULL.  Freeing a nursery that was not joined
 * is a programmer error (assertion).
 */
void lahja_nursery_free(lahja_nursery_t *n);

/** lahja_nursery_join() then lahja_nursery_free(); returns the join's result. */
int lahja_nursery_close(lahja_nursery_t *n);

/* ---------------------------------------------------- synchronization */

/* Private: an intrusive doubly linked list node. */
struct lahja__link {
    struct lahja__link *prev, *next;
};

/**
 * A latch: a one-shot event (trio's Event); once set it stays set, and
 * every wait returns at once.  Plain struct, to embed; needs no
 * destruction, but must not be freed while tasks wait on it.  (Named
 * latch so as not to be confused with the events of the bus.)
 */
typedef struct lahja_latch {
    struct lahja__link waiters; /**< private */
    int set;                    /**< private */
} lahja_latch_t;

/** Initializes a latch, not set. */
void lahja_latch_init(lahja_latch_t *e);

/** Sets the latch and wakes every waiter.  Errors: LAHJA_EWRONGTHREAD. */
int lahja_latch_set(lahja_latch_t *e);

/** Non-zero once the latch is set. */
int lahja_latch_is_set(const lahja_latch_t *e);

/**
 * Suspends until the latch is set (0 at once if it already is; this is
 * still a checkpoint).  Suspending; errors: -ECANCELED, -ETIMEDOUT, LAHJA_ENOTASK.
 */
int lahja_latch_wait(lahja_latch_t *e, lahja_time_t deadline);

/**
 * A condition: tasks wait for a notification.  There is no mutex, since
 * tasks of one runtime never run at the same time: check the predicate,
 * wait, check again.  Waiters are woken in FIFO order.
 */
typedef struct lahja_cond {
    struct lahja__link waiters; /**< private */
} lahja_cond_t;

/** Initializes a condition, with no waiters. */
void lahja_cond_init(lahja_cond_t *c);

/** Suspending; errors: -ECANCELED, -ETIMEDOUT, LAHJA_ENOTASK. */
int lahja_cond_wait(lahja_cond_t *c, lahja_time_t deadline);

/** Wakes the longest waiting task, if any.  Errors: LAHJA_EWRONGTHREAD. */
int lahja_cond_signal(lahja_cond_t *c);

/** Wakes every waiting task.  Errors: LAHJA_EWRONGTHREAD. */
int lahja_cond_broadcast(lahja_cond_t *c);

/**
 * A bounded FIFO queue of pointers between tasks.  Items are void
 * pointers the queue does not own.
 */
typedef struct lahja_queue lahja_queue_t;

/** Capacity >= 1.  Errors: -EINVAL, -ENOMEM. */
int lahja_queue_new(size_t capacity, lahja_queue_t **out);

/**
 * Appends an item, suspending while the queue is full.  The item is in
 * the queue (or handed to a receiver) exactly when 0 is returned.
 * Suspending; errors: -EPIPE (queue closed), -ECANCELED, -ETIMEDOUT, LAHJA_ENOTASK.
 */
int lahja_queue_send(lahja_queue_t *q, void *item, lahja_time_t deadline);

/** Appends without suspending.  Errors: -EAGAIN (full), -EPIPE (closed). */
int lahja_queue_try_send(lahja_queue_t *q, void *item);

/**
 * Takes the oldest item into *item, suspending while the queue is empty.
 * After close, the items still queued are delivered, then -EPIPE.
 * Suspending; errors: -EPIPE, -ECANCELED, -ETIMEDOUT, LAHJA_ENOTASK.
 */
int lahja_queue_recv(lahja_queue_t *q, void **item, lahja_time_t deadline);

/** Takes without suspending.  Errors: -EAGAIN (empty), -EPIPE (closed and empty). */
int lahja_queue_try_recv(lahja_queue_t *q, void **item);

/**
 * Closes the queue: every waiting and later sender gets -EPIPE; receivers
 * drain what is queued, then get -EPIPE.  Idempotent.
 */
void lahja_queue_close(lahja_queue_t *q);

/** Items currently queued. */
size_t lahja_queue_len(const lahja_queue_t *q);

/**
 * Frees the queue.  Items still queued are the caller's (drain them
 * first if they own memory).  No task may be waiting on it (assertion).
 * Accepts NULL.
 */
void lahja_queue_free(lahja_queue_t *q);

/* ------------------------------------------------- waiting on libuv */

/**
 * A completion lets a task wait for a libuv callback: point the request's
 * or handle's `data` at it, call lahja_complete() from the callback, and
 * wait with lahja_completion_wait() or lahja_uv_req_wait().
 * Plain struct, to embed or keep on the task's stack.
 */
typedef struct lahja_completion {
    struct lahja_task *task; /**< private: the waiting task */
    int done;                /**< private */
    int status;              /**< the status given to lahja_complete() */
} lahja_completion_t;

/** Initializes a completion, not done. */
void lahja_completion_init(lahja_completion_t *c);

/**
 * Marks the completion done with `status` and wakes its waiter.  Call
 * from a libuv callback (or task) on the runtime's thread.  Completing
 * twice keeps the first status.
 */
void lahja_complete(lahja_completion_t *c, int status);

/**
 * Suspends until lahja_complete() is called, then returns its status.
 * On -ECANCELED/-ETIMEDOUT the completion is still pending: the caller
 * must make sure the callback can no longer touch it (stop the handle)
 * before it goes out of scope.
 * Suspending; errors: -ECANCELED, -ETIMEDOUT, LAHJA_ENOTASK.
 */
int lahja_completion_wait(lahja_completion_t *c, lahja_time_t deadline);

/**
 * Waits for a request already submitted with `c` reachable from its
 * callback.  If the wait is cancelled or times out, the request is
 * cancelled with uv_cancel() and the wait goes on, not cancellable, until
 * the callback has run, so that neither `req` nor `c` is touched after
 * this returns.  Returns the callback's status if it completed normally,
 * else -ECANCELED/-ETIMEDOUT.  Requests uv_cancel() cannot stop (writes,
 * connects) are awaited to completion; close the handle to end them.
 * Suspending; errors: -ECANCELED, -ETIMEDOUT, LAHJA_ENOTASK.
 */
int lahja_uv_req_wait(struct uv_req_s *req, lahja_completion_t *c, lahja_time_t deadline);

/**
 * Closes a handle and waits, not cancellable, for its close callback;
 * after it returns the handle's memory may be freed.  The handle's data
 * field is overwritten.  Errors: LAHJA_ENOTASK.
 */
int lahja_uv_close(struct uv_handle_s *h);

#ifdef __cplusplus
}
#endif
#endif /* LAHJA_RUNTIME_H */
