/*
 * lahja._core: liblahja's endpoint for Python, through the bus's callback
 * forms and non-suspending calls.  Python's own event loop (asyncio,
 * trio, a select() loop) drives the thread's libuv loop: it waits for
 * Loop.fd to be readable or Loop.timeout() to pass, then calls
 * Loop.run(), inside which the callbacks into Python happen (but for the
 * handlers of an event an endpoint broadcasts to itself, which the
 * library calls from within the broadcast).
 *
 * Threads: every object belongs to the thread whose Loop it was made on,
 * and the GIL is held in every callback (they come from Loop.run(), or
 * from a method the thread called).  After fork() the child's thread
 * gets a new Loop; the parent's objects are refused there.
 */
#ifndef LAHJA_PY_CORE_H
#define LAHJA_PY_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sys/types.h>
#include <uv.h>

#include <lahja/lahja.h>

/* ------------------------------------------------------------- the loop */

/* One per thread, made by loop_get() and never freed: the thread-local
 * pointer holds its reference.  A Loop inherited through fork() is left
 * as it is (its epoll fd is the parent's too) and a new one made. */
typedef struct {
    PyObject_HEAD
    uv_loop_t loop;
    lahja_rt_t *rt;
    pid_t pid;   /* the process that made it */
    int running; /* inside Loop.run(): libuv's uv_run is not re-entrant */
} LoopObject;

extern PyTypeObject LoopType;

/* The calling thread's Loop, made on first use (a borrowed reference),
 * or NULL with an exception set. */
LoopObject *loop_get(void);

/* Non-zero if `loop` is the calling thread's Loop in this process;
 * otherwise sets RuntimeError and returns 0. */
int loop_check(const LoopObject *loop);

/* loop_check without the exception: for deallocs and the collector,
 * which may run on any thread (or in a fork child), where the C objects
 * must be left alone (leaked) rather than touched. */
int loop_is_current(const LoopObject *loop);

/* ----------------------------------------------------------- the errors */

/* Raises the _core.Error subclass for `code` with `message` (NULL:
 * lahja_strerror(code)).  Returns NULL, for `return raise_code(...)`. */
PyObject *raise_code(int code, const char *message);

/* The exception instance raise_code would raise, or NULL. */
PyObject *error_new(int code, const char *message);

/* The error classes, made by module init. */
int errors_init(PyObject *module);

/* ------------------------------------------------------------ arguments */

/*
 * Parses a METH_FASTCALL | METH_KEYWORDS call: names[] (NULL-terminated)
 * are the parameters, the first `npos` may be given by position, the
 * first `nreq` are required.  Fills out[] with borrowed references (NULL
 * for the ones not given).  Returns 0, or -1 with TypeError set.
 */
int parse_args(const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               const char *const names[], int npos, int nreq, PyObject **out);

/* The endpoint names of an `origins` argument (a sequence of str; None
 * or NULL: none, *names NULL).  The names are borrowed from *seq, which
 * the caller releases with origins_release() after the lahja call.
 * Returns -1 with an exception set on a bad value. */
typedef struct {
    PyObject *seq;
    const char **names;
    size_t n;
} Origins;
int origins_get(PyObject *origins, Origins *out);
void origins_release(Origins *o);

/* A timeout in seconds (None or NULL: none) as a deadline on the loop's
 * clock; -1 with an exception set on a bad value. */
int deadline_from(PyObject *timeout, lahja_time_t *out);

/* ---------------------------------------------------------------- events */

/* An event seen from Python.  While a subscription handler runs, its
 * event is lent (`lent`): the handler's Event points at it, and keeps it
 * (lahja_event_ref, which copies a lent event) only if something still
 * holds the Event when the handler returns, or if a buffer is exported
 * over its payload meanwhile. */
typedef struct {
    PyObject_HEAD
    lahja_event_t *ev;  /* NULL only if keeping a lent event failed */
    PyObject *payload;  /* the payload as bytes, made on first access */
    int lent;
} EventObject;

extern PyTypeObject EventType;

/* A new Event owning the reference `ev` (lent: borrowing it).  On error
 * returns NULL with an exception set, and unrefs `ev` unless lent. */
PyObject *event_wrap(lahja_event_t *ev, int lent);

/* Ends the lending of a handler's Event: keeps a reference to the event if
 * the Event is still held elsewhere. */
void event_unlend(EventObject *e);

/* ------------------------------------------------------------- endpoints */

typedef struct SubscriptionObject SubscriptionObject;

/* What outlives the Endpoint object when its dealloc has to stop the
 * endpoint first: the C endpoint and its log callable, freed together
 * by the stop's callback. */
typedef struct {
    lahja_endpoint_t *ep;
    PyObject *log; /* the `log` callable, or NULL */
} EndpointCore;

typedef struct {
    PyObject_HEAD
    EndpointCore *core;  /* NULL once freed */
    LoopObject *loop;    /* a strong reference: the loop must outlive it */
    PyObject *on_error;  /* callable or NULL */
    PyObject *name;      /* str */
    SubscriptionObject *subs; /* the live subscriptions, each a reference */
    PyObject *weakrefs;
} EndpointObject;

extern PyTypeObject EndpointType;

/* Reports the exception set (raised by a handler or callback): to the
 * endpoint's on_error callable if it has one, else through
 * PyErr_WriteUnraisable.  Clears it. */
void endpoint_report(EndpointObject *self, PyObject *where);

/* --------------------------------------------------------- subscriptions */

struct SubscriptionObject {
    PyObject_HEAD
    lahja_subscription_t *sub; /* NULL once cancelled */
    EndpointObject *endpoint;  /* a reference while subscribed */
    PyObject *handler;         /* a reference while subscribed */
    PyObject *type;            /* str */
    SubscriptionObject *prev, *next; /* in endpoint->subs */
};

extern PyTypeObject SubscriptionType;

/* A subscription of `handler` to `type` (origins: a sequence of names or
 * NULL).  New reference or NULL with an exception set. */
PyObject *subscription_new(EndpointObject *ep, PyObject *type, PyObject *handler,
                           PyObject *origins);

/* Cancels it (if still subscribed) and releases what it holds. */
void subscription_end(SubscriptionObject *s, int cancel_in_c);

/* ------------------------------------------------------------------- ops */

/* What the callback of an op is called with. */
enum op_kind {
    OP_STATUS, /* callback(status) */
    OP_EVENT   /* callback(status, Event | None) */
};

/* A call under way.  The C side holds a reference from the start of the
 * call until its callback has run; the callback and the Endpoint are
 * released then, which breaks the cycles a callback closing over its Op
 * would make. */
typedef struct {
    PyObject_HEAD
    lahja_op_t *op;          /* valid until the callback ran; NULL for stop */
    EndpointObject *endpoint;
    PyObject *callback;
    int done;
    int status;              /* the callback's status, once done */
    uint64_t id;             /* request(): the request's id, else 0 */
} OpObject;

extern PyTypeObject OpType;

/* A new Op for a call about to start: the caller passes it as `user` to
 * the lahja call, with op_done_status/op_done_event as the callback and
 * &op->op as the handle, then calls op_started() with the call's result. */
OpObject *op_new(EndpointObject *ep, PyObject *callback);

/* After the lahja call: on 0 the C side keeps a reference (released by
 * the callback) and the Op is returned (new reference); otherwise the
 * error is raised and NULL returned. */
PyObject *op_started(OpObject *op, int rc);

void op_done_status(lahja_endpoint_t *ep, int status, void *user);
void op_done_event(lahja_endpoint_t *ep, int status, lahja_event_t *ev, void *user);

#endif /* LAHJA_PY_CORE_H */
