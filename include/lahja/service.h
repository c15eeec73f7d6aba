/**
 * @file lahja/service.h
 * Services and their managers.
 *
 * A service is a run function with a name and user data.  A manager runs
 * one service, once, as a tree of tasks: the run function is the first
 * task; from inside, tasks start more tasks and child services.  One
 * failure cancels the whole service, leaves first, and every error is
 * kept, in order.  Nothing is left running when the manager finishes.
 *
 *   - A task's children: a task started (lahja_manager_run_task) from
 *     inside a service task is that task's child; started from anywhere
 *     else it is a root task.  A task whose function returned 0 is not
 *     done until its children are; so a service whose run function
 *     returned keeps running until every task it started is done, and
 *     then finishes cleanly.
 *   - A task fails when its function returns non-zero (other than
 *     -ECANCELED/-ETIMEDOUT while being cancelled).  Its error is
 *     recorded and the service is cancelled; its live children move to
 *     its parent, and the cancellation ends them.
 *   - A daemon task whose function returns, or a daemon child service
 *     that finishes, is an error (LAHJA_EDAEMONEXIT, "Daemon task
 *     NAME[daemon=True] exited") unless the service is being cancelled.
 *   - Cancellation is depth first, leaves first: every descendant of a
 *     task has finished, cleanup included, before that task is
 *     cancelled.  Child services are stopped through their manager.
 *   - A task (or the set of root tasks) holds at most 1000 children.
 *
 * Threads: everything here runs on the runtime's loop thread; the calls
 * that wait are suspending task calls (lahja/runtime.h).
 */
#ifndef LAHJA_SERVICE_H
#define LAHJA_SERVICE_H

#include <stddef.h>

#include "lahja/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A manager: runs one service, once (lahja_manager_new()). */
typedef struct lahja_manager lahja_manager_t;

/** A service's run function: runs as the service's first task.  Returns 0
 * or a negative error code, like any task. */
typedef int (*lahja_service_fn)(lahja_manager_t *manager, void *user);

/**
 * A service: fill it in (or use lahja_service_init) and hand it to a
 * manager.  The manager does not own it; it must outlive the manager.
 */
typedef struct lahja_service {
    const char *name;          /**< shown in messages; NULL gives "service" */
    lahja_service_fn run;      /**< the run function */
    void *user;                /**< passed to run */
    lahja_manager_t *manager;  /**< private: the manager that took it */
    lahja_task_fn plain_fn;    /**< private: lahja_as_service */
    void *plain_arg;           /**< private: lahja_as_service */
} lahja_service_t;

/** Fills in a service.  Needed only when not using a designated initializer. */
void lahja_service_init(lahja_service_t *svc, const char *name, lahja_service_fn run, void *user);

/**
 * Makes a service out of a plain task function (as_service): its run
 * calls fn(arg); inside, lahja_manager_current() is the manager.
 * `svc` holds fn and arg; it must outlive its manager.
 */
void lahja_as_service(lahja_service_t *svc, const char *name, lahja_task_fn fn, void *arg);

/* ------------------------------------------------------------ managers */

/**
 * Creates the manager of `svc` (not started).  A service has at most one
 * manager, ever: a second one is LAHJA_ELIFECYCLE.  On success *out owns
 * the manager; free it with lahja_manager_free once it is not running.
 * Errors: -EINVAL, -ENOMEM, LAHJA_ELIFECYCLE.
 */
int lahja_manager_new(lahja_service_t *svc, lahja_manager_t **out);

/**
 * Frees a manager that never started or has finished, and its recorded
 * errors.  The service keeps its manager pointer (it cannot be run
 * again).  Accepts NULL.  Errors: -EBUSY while it runs (nothing done).
 */
int lahja_manager_free(lahja_manager_t *m);

/**
 * Runs the service in the calling task until it has finished: the run
 * function, every task and child service it started.  If the calling task
 * is cancelled, the service is cancelled (leaves first) and awaited.
 * Returns 0 if no error was recorded, else the first error's code (all of
 * them: lahja_manager_error()).  Running twice is LAHJA_ELIFECYCLE.
 * Suspending; errors also LAHJA_ENOTASK.
 */
int lahja_manager_run(lahja_manager_t *m);

/** lahja_manager_new + lahja_manager_run + lahja_manager_free. */
int lahja_service_run(lahja_service_t *svc);

/** The manager of the service task calling, or NULL. */
lahja_manager_t *lahja_manager_current(void);

/* ------------------------------------------------- scheduling (inside) */

/** The flags of lahja_manager_run_task() and lahja_manager_run_child_service(). */
enum lahja_manager_flags {
    LAHJA_DAEMON = 1u << 0 /**< expected to run until the service is cancelled */
};

/**
 * Starts fn(arg) as a task of the service, named `name` (copied; NULL
 * gives "task"), a child of the calling service task or a root task.
 * With LAHJA_DAEMON its returning is an error.  While the service is
 * being cancelled the task is dropped and 0 returned.
 * Errors: -EINVAL, -ENOMEM, LAHJA_ELIFECYCLE (not running: before start,
 * after finish, or while finishing), LAHJA_ETOOMANYCHILDREN (the parent
 * has 1000 children; the message names the ten most common:
 * lahja_manager_last_message()).
 */
int lahja_manager_run_task(lahja_manager_t *m, lahja_task_fn fn, void *arg, unsigned flags,
                           const char *name);

/** lahja_manager_run_task(m, fn, arg, LAHJA_DAEMON, name). */
int lahja_manager_run_daemon_task(lahja_manager_t *m, lahja_task_fn fn, void *arg,
                                  const char *name);

/**
 * Runs `child` as a child service: a task of this service whose work is
 * running the child's manager, created here and stored in *out (if
 * non-NULL; owned by this manager, valid until it is freed).  The child's
 * errors fail that task as one error.  With LAHJA_DAEMON the child
 * finishing is an error.  A child that already has a manager is
 * LAHJA_ELIFECYCLE.  While this service is being cancelled the child is
 * dropped: 0 is returned, *out is NULL, and the child may still be run
 * elsewhere.  Other errors as lahja_manager_run_task.
 */
int lahja_manager_run_child_service(lahja_manager_t *m, lahja_service_t *child, unsigned flags,
                                    const char *name, lahja_manager_t **out);

/** lahja_manager_run_child_service(m, child, LAHJA_DAEMON, name, out). */
int lahja_manager_run_daemon_child_service(lahja_manager_t *m, lahja_service_t *child,
                                           const char *name, lahja_manager_t **out);

/* --------------------------------------------------- control (outside) */

/**
 * Cancels the service: its tasks are cancelled leaves first and it
 * finishes.  Does nothing if finished.  Errors: LAHJA_ELIFECYCLE (never
 * started).  Does not suspend.
 */
int lahja_manager_cancel(lahja_manager_t *m);

/**
 * Cancels the service and waits until it has finished.  The wait is not
 * cancellable (a cancelled service finishes as soon as its cleanup has
 * run).  Returns 0, or LAHJA_ELIFECYCLE if it never started.
 */
int lahja_manager_stop(lahja_manager_t *m);

/** Suspending waits for the flags; errors -ECANCELED, -ETIMEDOUT, LAHJA_ENOTASK.
 * @{ */
int lahja_manager_wait_started(lahja_manager_t *m, lahja_time_t deadline);
int lahja_manager_wait_finished(lahja_manager_t *m, lahja_time_t deadline);
/** @} */

/**
 * The flags (S7); they only move forward.  running = started and not
 * finished; did_error turns on with the first error, before finishing.
 * @{
 */
int lahja_manager_is_started(const lahja_manager_t *m);
int lahja_manager_is_running(const lahja_manager_t *m);
int lahja_manager_is_cancelled(const lahja_manager_t *m);
int lahja_manager_is_finished(const lahja_manager_t *m);
int lahja_manager_did_error(const lahja_manager_t *m);
/** @} */

/** How many tasks a manager has scheduled, and finished. */
typedef struct lahja_manager_stats {
    size_t total;    /**< tasks scheduled: daemons and child services count
                        one each, the run function not at all */
    size_t finished; /**< of those, how many are done */
    size_t pending;  /**< total - finished */
} lahja_manager_stats_t;

/** Fills in *out with the manager's counts. */
void lahja_manager_stats(const lahja_manager_t *m, lahja_manager_stats_t *out);

/** An error recorded by a manager. */
typedef struct lahja_service_error {
    const char *task_name; /**< the task that failed */
    int code;              /**< its result, or LAHJA_EDAEMONEXIT */
    const char *message;   /**< human-readable, never NULL */
} lahja_service_error_t;

/** Number of errors recorded, and the i-th (NULL if out of range), in the
 * order they happened; valid until the manager is freed.
 * @{ */
size_t lahja_manager_nerrors(const lahja_manager_t *m);
const lahja_service_error_t *lahja_manager_error(const lahja_manager_t *m, size_t i);
/** @} */

/**
 * Writes "<Manager[NAME] flags=SRCFE>" into buf (at most len bytes with
 * the NUL): each letter upper case when its flag (started, running,
 * cancelled, finished, did_error) is on, lower case when off.  Returns
 * what snprintf returns.
 */
int lahja_manager_describe(const lahja_manager_t *m, char *buf, size_t len);

/**
 * The message of the last LAHJA_ETOOMANYCHILDREN returned by this
 * manager (naming the ten most common task names), or "".
 */
const char *lahja_manager_last_message(const lahja_manager_t *m);

/**
 * Records a message for the calling service task's failure and returns
 * `code`, so that a task can end with
 *
 *     return lahja_service_fail(-EIO, "peer %s went away", name);
 *
 * The message (printf format, truncated to 255 bytes) becomes the error's
 * message; without it the message is lahja_strerror(code).  Outside a
 * service task it only returns `code`.
 */
int lahja_service_fail(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* ----------------------------------------------- external calls (S17) */

/**
 * Runs fn(arg) for code outside the service, from the calling task, and
 * returns its result; if the service finishes while fn is under way, fn
 * is cancelled and the call returns LAHJA_ELIFECYCLE.  Tasks fn starts
 * with lahja_manager_run_task are root tasks of the service.
 * Errors: LAHJA_ELIFECYCLE (not running), LAHJA_ENOTASK,
 * -ECANCELED when the calling task is cancelled.
 */
int lahja_manager_call(lahja_manager_t *m, lahja_task_fn fn, void *arg);

/* ------------------------------------------- background service (S18) */

/**
 * Starts `svc` in the background, in a root task of the runtime, and
 * waits until it has started; *out is its manager.  End the scope with
 * lahja_background_end(), always.
 * Errors: as lahja_manager_new, LAHJA_ENOTASK.
 */
int lahja_background_start(lahja_service_t *svc, lahja_manager_t **out);

/**
 * Ends the scope of a background service: stops it (cancel, then wait,
 * not cancellable, until it has finished) and reaps its task.  Returns 0
 * if it recorded no error, else its first error's code; the manager stays
 * valid for inspection (flags, stats, errors) until lahja_manager_free.
 * Errors: -EINVAL, LAHJA_ENOTASK.
 */
int lahja_background_end(lahja_manager_t *m);

#ifdef __cplusplus
}
#endif
#endif /* LAHJA_SERVICE_H */
