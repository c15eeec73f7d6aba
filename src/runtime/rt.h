/*
 * The runtime's internals, shared by its files (and by white-box tests).
 *
 * Ownership of a task object: it holds references from
 *   - its own execution ("runner"), dropped by the scheduler once the
 *     task has finished and its stack is no longer in use;
 *   - the handle returned by lahja_spawn (root tasks with `out`), dropped
 *     by a successful join or by detach;
 *   - its nursery (nursery children), dropped by lahja_nursery_free.
 * When the count reaches zero the object goes back to the runtime's pool
 * (or is freed, its timer closed first).
 */
#ifndef LAHJA_RT_H
#define LAHJA_RT_H

#include <pthread.h>
#include <sys/types.h>
#include <stdint.h>
#include <uv.h>

#include "common/list.h"
#include "ctx.h"
#include "lahja/runtime.h"
#include "stack.h"

/* Internal: never exported from the shared library. */
#pragma GCC visibility push(hidden)

#if defined(__SANITIZE_ADDRESS__)
#define LAHJA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LAHJA_ASAN 1
#endif
#endif

/* Returned by lahja_wait when the call's own deadline passed (as opposed
 * to a scope's): the callers turn it into -ETIMEDOUT, or success for sleep. */
#define LAHJA_WAIT_EXPIRED INT32_MIN

/* lahja_wait flags */
#define LAHJA_WAIT_NOCANCEL 1u /* cancellation does not end the wait */

enum lahja_task_state {
    LAHJA_TASK_READY,     /* in the ready queue, not yet resumed */
    LAHJA_TASK_RUNNING,
    LAHJA_TASK_SUSPENDED, /* in lahja_wait */
    LAHJA_TASK_DONE       /* function returned */
};

/* Why a suspended task was made ready. */
enum lahja_wake {
    LAHJA_WAKE_NONE = 0, /* not woken yet */
    LAHJA_WAKE_RESULT,   /* lahja_wake(): the awaited thing happened */
    LAHJA_WAKE_RECHECK,  /* a scope changed: re-evaluate cancellation */
    LAHJA_WAKE_TIMER     /* the effective deadline's timer fired */
};

struct lahja_scope {
    struct lahja_scope *parent; /* enclosing scope, maybe another task's;
                                   NULL only for the runtime's root scope */
    lahja_link_t children;      /* scopes whose parent this is */
    lahja_link_t sibling;       /* in parent->children */
    struct lahja_task *task;    /* task whose stack of scopes holds this,
                                   NULL for the runtime's root scope */
    lahja_time_t deadline;      /* LAHJA_FOREVER: none */
    unsigned shield : 1;
    unsigned cancelled : 1;
    unsigned timed_out : 1;     /* cancelled because the deadline passed */
};

struct lahja_task {
    lahja_ctx_t ctx;
    struct lahja_rt *rt;
    lahja_task_fn fn;
    void *arg;
    int result;
    uint8_t state;              /* enum lahja_task_state */
    uint8_t wake;               /* enum lahja_wake */
    uint8_t cancellable;        /* the current wait ends on cancellation */
    uint8_t has_handle;         /* a lahja_spawn handle is outstanding */
    int refs;
    int wake_result;            /* lahja_wake's value */
    void *wait_data;            /* per-primitive slot (queue hand-off) */
    lahja_link_t ready;         /* in rt->ready */
    lahja_link_t wait;          /* in the awaited primitive's waiters */
    lahja_link_t joiners;       /* tasks in lahja_task_join on this */
    lahja_link_t pool;          /* in rt->pool */
    lahja_link_t obj;           /* in rt->objects, while allocated */
    struct lahja_scope root;    /* outermost scope: lahja_task_cancel */
    struct lahja_scope *scope;  /* innermost open scope */
    struct lahja_nursery *nursery; /* until finished; NULL for root tasks */
    lahja_link_t sibling;       /* in nursery->handles */
    uv_timer_t timer;           /* armed while waiting with a deadline, and
                                   left armed (unreferenced) after, for the
                                   next wait: see arm_deadline */
    lahja_time_t timer_due;     /* when it fires, while it is armed */
    lahja_stack_t stack;
#ifdef LAHJA_ASAN
    void *asan_fake;            /* ASan fake stack saved across switches */
#endif
    void *local;                /* owned by the layer that set it: the
                                   service task this task runs */
    char name[64];
};

/* A failure as a nursery keeps it: the name is copied, so that the
 * failed task's object can be recycled at once. */
struct lahja_failure_rec {
    lahja_failure_t pub;        /* pub.task_name is set when handed out */
    char name[64];
};

/*
 * A nursery holds a reference only to the children whose handle was
 * asked for (they stay valid until lahja_nursery_free); the others are
 * recycled as soon as they finish, so that a long-lived nursery costs
 * memory for its live children only.
 */
struct lahja_nursery {
    struct lahja_scope scope;   /* sits in the opener's scope stack */
    struct lahja_rt *rt;
    lahja_link_t handles;       /* children spawned with a handle */
    size_t live;                /* children not finished */
    lahja_link_t joinq;         /* the opener, while in join */
    struct lahja_failure_rec *failures;
    size_t nfailures, capfailures;
    int joined;
};

struct lahja_rt {
    uv_loop_t *loop;
    uv_idle_t idle;             /* active while tasks are ready: the loop
                                   then polls without blocking */
    uv_check_t check;           /* runs tasks woken by I/O callbacks in
                                   the same loop iteration */
    lahja_ctx_t sched_ctx;      /* the loop's own stack */
    lahja_link_t ready;
    lahja_link_t pool;          /* finished task objects for reuse */
    lahja_link_t objects;       /* every task object allocated */
    size_t npool, pool_max;
    size_t stack_size;          /* default */
    size_t ntasks;              /* started and not finished */
    size_t nobjects;            /* task objects allocated, pooled ones too */
    size_t nclosing;            /* handles whose close callback is pending */
    struct lahja_scope root;    /* parent of every root task's scope */
    pthread_t thread;           /* owner */
    pid_t pid;                  /* process that created it: a forked child
                                   must not use its parent's loop */
    int in_sched;               /* a scheduler pass is under way */
    int from_sched;             /* the task being entered comes from the
                                   scheduler's stack (ASan bookkeeping) */
    int idle_on;                /* the idle handle is started */
    unsigned budget;            /* resumptions left in this pass */
    struct lahja_task *dead;    /* finished, its stack just left: the
                                   next to run drops its runner ref */
    int closing;
    void *blocks;               /* free small blocks (lahja_block_get),
                                   chained through their first word */
    unsigned nblocks;
#ifdef LAHJA_ASAN
    const void *main_lo;        /* the loop stack's bounds, for ASan */
    size_t main_size;
#endif
};

/*
 * Small blocks of LAHJA_BLOCK_SIZE bytes, kept by the calling thread's
 * runtime for reuse (at most LAHJA_BLOCKS_MAX; freed with it): what is
 * allocated and freed for every message (events) costs a list operation
 * instead of the C library's allocator, whose per-thread cache holds
 * only a few blocks of a size.  A block may be freed on any thread,
 * with or without a runtime (then it is free()d).  get: NULL without
 * memory.
 */
#define LAHJA_BLOCK_SIZE 256
#define LAHJA_BLOCKS_MAX 256
void *lahja_block_get(void);
void lahja_block_put(void *block);

/* The calling thread's runtime and running task (NULL outside a task). */
extern __thread struct lahja_rt *lahja_tls_rt;
extern __thread struct lahja_task *lahja_tls_task;

/*
 * Forgets a runtime inherited through fork(): its loop shares kernel
 * objects with the parent, so the child must start its own.
 */
void lahja_forget_inherited(void);

/* Non-zero if the caller is not the runtime's owner thread. */
int lahja_rt_wrong_thread(const struct lahja_rt *rt);

/*
 * The core of every suspending call.  Suspends the calling task, linked
 * into `waiters` (may be NULL) at its tail, until lahja_wake() is called
 * on it, which returns the value given to lahja_wake(), or until the
 * effective deadline passes or (unless LAHJA_WAIT_NOCANCEL) the task is
 * cancelled.  Returns then -ECANCELED, -ETIMEDOUT (a scope's deadline),
 * or LAHJA_WAIT_EXPIRED (the call's own deadline).  Cancellation and
 * deadlines are checked before suspending: a checkpoint.  On any return
 * the task is no longer linked in `waiters`.  Task context only.
 */
int lahja_wait(lahja_link_t *waiters, lahja_time_t deadline, unsigned flags);

/*
 * Wakes a task suspended in lahja_wait: unlinks it from its waiters list
 * and makes lahja_wait return `result`.  The caller must know the task is
 * waiting (it found it in a waiters list).
 */
void lahja_wake(struct lahja_task *t, int result);

/* Wakes the first task in `waiters` with `result`; returns it or NULL. */
struct lahja_task *lahja_wake_first(lahja_link_t *waiters, int result);

/* Makes a suspended, cancellable task re-evaluate its scopes. */
void lahja_task_recheck(struct lahja_task *t);

/* Appends a task to the ready queue and makes sure the loop will run it. */
void lahja_ready_push(struct lahja_task *t);

/*
 * The cancellation status of `s` and the scopes around it: -ECANCELED or
 * -ETIMEDOUT for the innermost cancelled scope before a shield, else 0.
 * A scope whose deadline has passed is cancelled here, as timed out.
 * If `deadline` is non-NULL, it is lowered to the earliest scope deadline
 * on the way.
 */
int lahja_scope_status(struct lahja_scope *s, lahja_time_t now, lahja_time_t *deadline);

/* Links a scope in as the innermost of task `t` (t may be NULL with an
 * explicit parent for the runtime root). */
void lahja_scope_init(struct lahja_scope *s, struct lahja_scope *parent,
                      struct lahja_task *t, lahja_time_t deadline, unsigned flags);

/* Unlinks a scope from its parent. */
void lahja_scope_unlink(struct lahja_scope *s);

/* Cancels a scope and wakes every task inside it. */
void lahja_scope_cancel_as(struct lahja_scope *s, int timed_out);

/* Pushes/pops a scope on the calling task's stack of scopes. */
void lahja_scope_push(struct lahja_task *t, struct lahja_scope *s, lahja_time_t deadline,
                      unsigned flags);
void lahja_scope_pop(struct lahja_task *t, struct lahja_scope *s);

/*
 * Creates a task object (from the pool if it can) running fn(arg) under
 * `parent` scope, queued to run.  Counts one runner reference.
 */
int lahja_task_create(struct lahja_rt *rt, lahja_task_fn fn, void *arg,
                      const lahja_task_options_t *opts, struct lahja_scope *parent,
                      struct lahja_task **out);

/* Drops one reference; the object is recycled at zero. */
void lahja_task_unref(struct lahja_task *t);

/*
 * lahja_nursery_spawn without a handle, for the layers above: *out is
 * valid only until the task finishes (its runner holds the only
 * reference).  Errors as lahja_nursery_spawn.
 */
int lahja_nursery_spawn_weak(struct lahja_nursery *n, lahja_task_fn fn, void *arg,
                             const lahja_task_options_t *opts, struct lahja_task **out);

/* Called on the task's own stack when its function has returned. */
void lahja_nursery_child_done(struct lahja_nursery *n, struct lahja_task *t, int failed);

/*
 * Leaves the running task `t` (suspended, queued, or finished if `dying`)
 * for the next ready task, or the scheduler; returns when `t` is resumed
 * (never if dying).
 */
void lahja_switch_away(struct lahja_task *t, int dying);

/* Called first thing on a new task's stack. */
void lahja_task_started(struct lahja_task *t);

/*
 * Frees the finished task objects still held by handles the application
 * never released (lahja_run owns everything it created).
 */
void lahja_task_release_all(struct lahja_rt *rt);

/* Returns every pooled task object's memory (closing their timers). */
void lahja_task_pool_drain(struct lahja_rt *rt);

/* A task object's memory was released: a closed runtime may be freed. */
void lahja_rt_object_freed(struct lahja_rt *rt);

/* Usable stack bounds of a task (for the guard page test). */
void lahja_task_stack_bounds(const struct lahja_task *t, void **lo, size_t *size);

#pragma GCC visibility pop

#endif /* LAHJA_RT_H */
