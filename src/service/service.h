/*
 * The service manager's internals.
 *
 * A manager runs every task of its service flat in one runtime nursery
 * (`tasks`), inside a shielded scope, and keeps the task tree of
 * async_service itself in svc_task records: parent, children, daemon.
 * Cancellation never reaches the service tasks through the runtime's
 * scope tree; it goes through the manager's cancel handler, which
 * cancels the tree leaves first and waits for each task before its
 * parent.  A cancellation of the task running the manager reaches the
 * handler (it sits outside the shield) and is turned into that ordered
 * cancellation.
 */
#ifndef LAHJA_SERVICE_INT_H
#define LAHJA_SERVICE_INT_H

#include "lahja/service.h"
#include "runtime/rt.h"

/* Internal: never exported from the shared library. */
#pragma GCC visibility push(hidden)

/* At most this many children per task, and root tasks per manager. */
#define LAHJA_MAX_CHILDREN 1000

enum svc_kind {
    SVC_FUNCTION, /* lahja_manager_run_task */
    SVC_CHILD,    /* a child service: runs its manager */
    SVC_RUN       /* the service's run function: not counted in stats */
};

struct svc_task {
    struct lahja_manager *m;
    struct svc_task *parent;    /* NULL: a root task */
    lahja_link_t children;      /* svc_task.sibling, in start order */
    size_t nchildren;
    lahja_link_t sibling;       /* in parent->children, or m->roots */
    struct lahja_task *task;    /* the runtime task; valid while running */
    lahja_task_fn fn;
    void *arg;
    struct lahja_manager *child; /* SVC_CHILD */
    lahja_latch_t done;         /* set when finished */
    int refs;                   /* the running task's, and the cancel
                                   handler's while it works on this one */
    uint8_t kind;               /* enum svc_kind */
    uint8_t daemon;
    uint8_t finished;
    char *fail_msg;             /* lahja_service_fail's message, or NULL */
    char name[64];
};

/* A recorded error.  Entries never move (a pointer handed out stays
 * valid until the manager is freed); the strings live in the same block. */
struct svc_error {
    lahja_service_error_t pub;
    struct svc_error *next;
    int allocated;              /* 0 for the manager's out-of-memory entry */
};

struct lahja_manager {
    lahja_service_t *svc;
    struct lahja_manager *parent; /* the manager running this one as a
                                     child service, or NULL */
    struct lahja_nursery *tasks;  /* every service task, while running */
    lahja_link_t roots;           /* root svc_tasks */
    size_t nroots;
    lahja_latch_t started_ev, cancel_ev, finished_ev;
    uint8_t started, cancelled, finishing, finished;
    size_t total, ndone;          /* stats (S15) */
    struct svc_error *errors;     /* in the order they happened */
    struct svc_error **errors_tail;
    size_t nerrors;
    struct svc_error oom;         /* recorded when an entry cannot be
                                     allocated: the failure still counts */
    lahja_link_t owned;           /* child managers made by this one */
    lahja_link_t owned_link;      /* in parent->owned */
    struct lahja_task *bg;        /* lahja_background_start's runner */
    char last_msg[512];
};

/* Starts a service task of `kind` under the calling service task (or as
 * a root).  *out is NULL when dropped because the service is cancelled. */
int lahja_svc_schedule(struct lahja_manager *m, enum svc_kind kind, lahja_task_fn fn, void *arg,
                       struct lahja_manager *child, unsigned flags, const char *name,
                       struct svc_task **out);

/* Cancels the whole tree, leaves first, waiting for each task.  Runs in
 * the cancel handler, shielded. */
void lahja_svc_cancel_all(struct lahja_manager *m);

/* Records an error (copies the strings) and cancels the service. */
void lahja_svc_record(struct lahja_manager *m, const char *task_name, int code,
                      const char *message);

/* The service task the calling task runs, or NULL. */
struct svc_task *lahja_svc_current(void);

/* Waits, not cancellable, until `e` is set, without touching `e` after
 * it was set (its owner may free it at once).  Task context. */
void lahja_svc_wait_set(lahja_latch_t *e);

#pragma GCC visibility pop

#endif /* LAHJA_SERVICE_INT_H */
