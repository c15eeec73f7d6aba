/*
 * The module: the thread's Loop, the error classes, argument parsing, and
 * the module's own functions.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

/* ------------------------------------------------------------- the loop */

/* The thread's Loop.  Its reference is never dropped: libuv's loop can be
 * closed only once every handle on it is, which the endpoints made on it
 * may never allow; a thread's loop lives as long as the process (one
 * made by a thread that exits is leaked). */
static __thread LoopObject *tls_loop;

/* In a fork child the forking thread forgets its Loop, so that checking
 * a Loop is a comparison, not a getpid() system call on every method
 * call; the pid is still compared where a loop is made, for a child
 * made without the atfork handlers running. */
static void forget_loop_in_child(void)
{
    tls_loop = NULL;
}

LoopObject *loop_get(void)
{
    LoopObject *l = tls_loop;
    if (l != NULL && l->pid == getpid())
        return l;
    /* None yet, or the parent's (fork): the parent's stays as it is,
     * leaked, since closing it would close the parent's epoll fd. */
    l = PyObject_New(LoopObject, &LoopType);
    if (l == NULL)
        return NULL;
    l->rt = NULL;
    l->pid = getpid();
    l->running = 0;
    int rc = uv_loop_init(&l->loop);
    if (rc != 0) {
        PyObject_Free(l);
        return (LoopObject *)raise_code(rc, NULL);
    }
    rc = lahja_rt_new(&l->loop, NULL, &l->rt);
    if (rc != 0) {
        uv_loop_close(&l->loop);
        PyObject_Free(l);
        return (LoopObject *)raise_code(rc, "lahja_rt_new: this thread has a runtime already");
    }
    tls_loop = l;
    return l;
}

int loop_is_current(const LoopObject *loop)
{
    return loop == tls_loop;
}

int loop_check(const LoopObject *loop)
{
    if (loop_is_current(loop))
        return 1;
    PyErr_SetString(PyExc_RuntimeError,
                    "lahja object used on another thread or process than its loop's");
    return 0;
}

static void loop_dealloc(LoopObject *self)
{
    /* Unreachable for a thread's loop (its reference is never dropped). */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Seconds until libuv wants to run, 0.0 for now, None for no timer. */
static PyObject *loop_timeout_value(LoopObject *self)
{
    if (!uv_loop_alive(&self->loop))
        Py_RETURN_NONE;
    uv_update_time(&self->loop);
    int ms = uv_backend_timeout(&self->loop);
    if (ms < 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(ms / 1000.0);
}

static PyObject *loop_run(LoopObject *self, PyObject *unused)
{
    (void)unused;
    if (!loop_check(self))
        return NULL;
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError, "Loop.run() called from inside Loop.run()");
        return NULL;
    }
    self->running = 1;
    uv_run(&self->loop, UV_RUN_NOWAIT);
    self->running = 0;
    return loop_timeout_value(self);
}

static PyObject *loop_timeout(LoopObject *self, PyObject *unused)
{
    (void)unused;
    if (!loop_check(self))
        return NULL;
    return loop_timeout_value(self);
}

static PyObject *loop_alive(LoopObject *self, PyObject *unused)
{
    (void)unused;
    if (!loop_check(self))
        return NULL;
    return PyBool_FromLong(uv_loop_alive(&self->loop));
}

static PyObject *loop_fd(LoopObject *self, void *closure)
{
    (void)closure;
    if (!loop_check(self))
        return NULL;
    return PyLong_FromLong(uv_backend_fd(&self->loop));
}

static PyObject *loop_pid(LoopObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong((long)self->pid);
}

static PyMethodDef loop_methods[] = {
    { "run", (PyCFunction)loop_run, METH_NOARGS,
      "run() -> float | None\n\n"
      "Runs what libuv has ready, without waiting (uv_run UV_RUN_NOWAIT): the\n"
      "callbacks into Python (op callbacks, handlers of events from peers) are\n"
      "called from here; only a handler of an event an endpoint broadcasts to\n"
      "itself is called from within that broadcast.\n"
      "Returns the seconds until libuv wants to run again: 0.0 when it has work\n"
      "pending, None when no timer is due (wait for fd only, or nothing is alive).\n"
      "Exceptions raised by callbacks are reported, never raised here.\n"
      "Errors: RuntimeError on another thread or process, or when called from\n"
      "inside run().  Thread: the loop's." },
    { "timeout", (PyCFunction)loop_timeout, METH_NOARGS,
      "timeout() -> float | None\n\n"
      "What run() would return, without running anything.  Thread: the loop's." },
    { "alive", (PyCFunction)loop_alive, METH_NOARGS,
      "alive() -> bool\n\n"
      "Whether libuv has active handles or requests (uv_loop_alive).\n"
      "Thread: the loop's." },
    { NULL, NULL, 0, NULL }
};

static PyGetSetDef loop_getset[] = {
    { "fd", (getter)loop_fd, NULL,
      "The loop's backend fd (epoll): readable when libuv has I/O to handle.\n"
      "Owned by the loop; do not close it.  Thread: the loop's.",
      NULL },
    { "pid", (getter)loop_pid, NULL, "The process that made this loop.", NULL },
    { NULL, NULL, NULL, NULL, NULL }
};

PyTypeObject LoopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lahja._core.Loop",
    .tp_basicsize = sizeof(LoopObject),
    .tp_dealloc = (destructor)loop_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The thread's libuv loop with its lahja runtime; get it with _core.loop().\n"
              "Not made directly.  Drive it: wait until fd is readable or timeout()\n"
              "seconds passed, then call run().",
    .tp_methods = loop_methods,
    .tp_getset = loop_getset,
};

/* ----------------------------------------------------------- the errors */

static PyObject *Error;

/* The subclasses, by the codes the Python layer maps. */
static struct {
    int code;
    const char *name;
    const char *doc;
    PyObject *cls;
} subclasses[] = {
    { LAHJA_ENOSUBSCRIBERS, "NoSubscribers", "Nobody subscribes to the event's type.", NULL },
    { LAHJA_EBIND, "BindError", "The event was broadcast before.", NULL },
    { LAHJA_ECONNREJECTED, "ConnectionAttemptRejected",
      "A connection to self, twice to a name, or to a name already connected.", NULL },
    { LAHJA_ELIFECYCLE, "LifecycleError",
      "The endpoint is not running (not started, stopped, or freed).", NULL },
    { LAHJA_EREMOTEDISCONNECTED, "RemoteDisconnected", "The peer a call needed went away.",
      NULL },
    { LAHJA_EUNEXPECTEDRESPONSE, "UnexpectedResponse",
      "A response of another type than the request expects.", NULL },
    { -ETIMEDOUT, "Timeout", "The call's timeout passed.", NULL },
    { -ECANCELED, "Cancelled", "The call was cancelled (Op.cancel).", NULL },
    { -EAGAIN, "WouldBlock", "A peer is over its queue's limit; nothing was sent.", NULL },
};

#define NSUBCLASSES (sizeof subclasses / sizeof subclasses[0])

int errors_init(PyObject *module)
{
    Error = PyErr_NewExceptionWithDoc(
        "lahja._core.Error",
        "An error of liblahja: args are (code, message), `code` the negative\n"
        "lahja code (a -errno value or a LAHJA_E* one), `name` its symbolic name.",
        NULL, NULL);
    if (Error == NULL || PyModule_AddObjectRef(module, "Error", Error) < 0)
        return -1;
    for (size_t i = 0; i < NSUBCLASSES; i++) {
        char qual[96];
        snprintf(qual, sizeof qual, "lahja._core.%s", subclasses[i].name);
        subclasses[i].cls = PyErr_NewExceptionWithDoc(qual, subclasses[i].doc, Error, NULL);
        if (subclasses[i].cls == NULL ||
            PyModule_AddObjectRef(module, subclasses[i].name, subclasses[i].cls) < 0)
            return -1;
    }
    return 0;
}

PyObject *error_new(int code, const char *message)
{
    if (code == -ENOMEM)
        return PyErr_NoMemory();
    PyObject *cls = Error;
    for (size_t i = 0; i < NSUBCLASSES; i++)
        if (subclasses[i].code == code)
            cls = subclasses[i].cls;
    if (message == NULL || *message == '\0')
        message = lahja_strerror(code);
    PyObject *exc = PyObject_CallFunction(cls, "is", code, message);
    if (exc == NULL)
        return NULL;
    PyObject *c = PyLong_FromLong(code);
    PyObject *n = PyUnicode_FromString(lahja_err_name(code));
    if (c == NULL || n == NULL || PyObject_SetAttrString(exc, "code", c) < 0 ||
        PyObject_SetAttrString(exc, "name", n) < 0)
        Py_CLEAR(exc);
    Py_XDECREF(c);
    Py_XDECREF(n);
    return exc;
}

PyObject *raise_code(int code, const char *message)
{
    PyObject *exc = error_new(code, message);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* ------------------------------------------------------------ arguments */

int origins_get(PyObject *origins, Origins *out)
{
    out->seq = NULL;
    out->names = NULL;
    out->n = 0;
    if (origins == NULL || origins == Py_None)
        return 0;
    out->seq = PySequence_Fast(origins, "origins must be a sequence of names");
    if (out->seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(out->seq);
    out->names = PyMem_Malloc(sizeof *out->names * (size_t)(n > 0 ? n : 1));
    if (out->names == NULL) {
        Py_CLEAR(out->seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        out->names[i] = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(out->seq, i));
        if (out->names[i] == NULL) {
            origins_release(out);
            return -1;
        }
    }
    out->n = (size_t)n;
    return 0;
}

void origins_release(Origins *o)
{
    PyMem_Free(o->names);
    o->names = NULL;
    Py_CLEAR(o->seq);
}

int parse_args(const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               const char *const names[], int npos, int nreq, PyObject **out)
{
    int n = 0;
    while (names[n] != NULL)
        out[n++] = NULL;
    if (nargs > npos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d positional arguments (%zd given)",
                     fn, npos, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int i = 0;
        while (i < n && PyUnicode_CompareWithASCIIString(key, names[i]) != 0)
            i++;
        if (i == n) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fn,
                         key);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fn,
                         names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (int i = 0; i < nreq; i++)
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn, names[i]);
            return -1;
        }
    return 0;
}

int deadline_from(PyObject *timeout, lahja_time_t *out)
{
    if (timeout == NULL || timeout == Py_None) {
        *out = LAHJA_FOREVER;
        return 0;
    }
    double s = PyFloat_AsDouble(timeout);
    if (s == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(s)) {
        PyErr_SetString(PyExc_ValueError, "timeout is NaN");
        return -1;
    }
    double ms = ceil(s * 1000.0);
    *out = ms <= 0 ? lahja_now() : ms >= 1e18 ? LAHJA_FOREVER : lahja_deadline_in((uint64_t)ms);
    return 0;
}

/* ---------------------------------------------------------- the module */

static PyObject *mod_loop(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    LoopObject *l = loop_get();
    return (PyObject *)Py_XNewRef(l);
}

static PyObject *mod_default_base_dir(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    char buf[LAHJA_PATH_MAX + 1];
    int rc = lahja_default_base_dir(buf, sizeof buf);
    if (rc != 0)
        return raise_code(rc, NULL);
    return PyUnicode_DecodeFSDefault(buf);
}

static PyObject *mod_path_of(PyObject *module, PyObject *args)
{
    (void)module;
    const char *name, *dir = NULL;
    if (!PyArg_ParseTuple(args, "s|z:path_of", &name, &dir))
        return NULL;
    lahja_conn_config_t cfg;
    int rc = lahja_conn_config_from_name(&cfg, name, dir);
    if (rc != 0)
        return raise_code(rc, NULL);
    return PyUnicode_DecodeFSDefault(cfg.path);
}

static PyObject *mod_strerror(PyObject *module, PyObject *arg)
{
    (void)module;
    int code = PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(lahja_strerror(code));
}

static PyObject *mod_err_name(PyObject *module, PyObject *arg)
{
    (void)module;
    int code = PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred())
        return NULL;
    return PyUnicode_FromString(lahja_err_name(code));
}

static PyObject *mod_error(PyObject *module, PyObject *args)
{
    (void)module;
    int code;
    const char *message = NULL;
    if (!PyArg_ParseTuple(args, "i|z:error", &code, &message))
        return NULL;
    return error_new(code, message);
}

static PyMethodDef module_methods[] = {
    { "loop", (PyCFunction)mod_loop, METH_NOARGS,
      "loop() -> Loop\n\n"
      "The calling thread's Loop, made on first use (and made anew in a child\n"
      "after fork(): the parent's is left alone, never closed).  It lives as\n"
      "long as the process.  Errors: Error if libuv or the runtime cannot be\n"
      "set up.  Thread: any; each thread gets its own." },
    { "default_base_dir", (PyCFunction)mod_default_base_dir, METH_NOARGS,
      "default_base_dir() -> str\n\n"
      "Where endpoints serve by default: $XDG_RUNTIME_DIR/lahja or\n"
      "/tmp/lahja-<uid> (not created here).  Errors: Error.  Thread: any." },
    { "path_of", (PyCFunction)mod_path_of, METH_VARARGS,
      "path_of(name, dir=None) -> str\n\n"
      "The socket path of endpoint `name` in `dir` (None: default_base_dir()):\n"
      "<dir>/<name>.ipc.  Errors: Error (bad name, path too long).  Thread: any." },
    { "strerror", (PyCFunction)mod_strerror, METH_O,
      "strerror(code) -> str\n\nThe message of a lahja code (lahja_strerror).  Thread: any." },
    { "err_name", (PyCFunction)mod_err_name, METH_O,
      "err_name(code) -> str\n\nThe symbolic name of a lahja code.  Thread: any." },
    { "error", (PyCFunction)mod_error, METH_VARARGS,
      "error(code, message=None) -> Error\n\n"
      "The exception instance (of the subclass for `code`) that a call failing\n"
      "with `code` raises: for turning a callback's status into an exception.\n"
      "Thread: any." },
    { NULL, NULL, 0, NULL }
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "lahja._core",
    .m_doc = "liblahja's endpoints for Python: the C layer under the lahja package.\n"
             "Every object belongs to the thread whose Loop made it; callbacks run\n"
             "inside Loop.run().",
    .m_size = -1,
    .m_methods = module_methods,
};

static int add_type(PyObject *m, PyTypeObject *t, const char *name)
{
    if (PyType_Ready(t) < 0)
        return -1;
    return PyModule_AddObjectRef(m, name, (PyObject *)t);
}

static int add_constants(PyObject *m)
{
    static const struct {
        const char *name;
        int value;
    } consts[] = {
        { "ENOSUBSCRIBERS", LAHJA_ENOSUBSCRIBERS },
        { "EUNEXPECTEDRESPONSE", LAHJA_EUNEXPECTEDRESPONSE },
        { "EBIND", LAHJA_EBIND },
        { "ECONNREJECTED", LAHJA_ECONNREJECTED },
        { "ELIFECYCLE", LAHJA_ELIFECYCLE },
        { "EREMOTEDISCONNECTED", LAHJA_EREMOTEDISCONNECTED },
        { "EWRONGTHREAD", LAHJA_EWRONGTHREAD },
        { "ETIMEDOUT", -ETIMEDOUT },
        { "ECANCELED", -ECANCELED },
        { "EAGAIN", -EAGAIN },
        { "LOG_DEBUG", LAHJA_LOG_DEBUG },
        { "LOG_INFO", LAHJA_LOG_INFO },
        { "LOG_WARNING", LAHJA_LOG_WARNING },
        { "LOG_ERROR", LAHJA_LOG_ERROR },
    };
    for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++)
        if (PyModule_AddIntConstant(m, consts[i].name, consts[i].value) < 0)
            return -1;
    return 0;
}

PyMODINIT_FUNC PyInit__core(void);

PyMODINIT_FUNC PyInit__core(void)
{
    PyObject *m = PyModule_Create(&core_module);
    if (m == NULL)
        return NULL;
    /* Once per import; a second registration (the module imported
     * again) does the same thing twice. */
    if (pthread_atfork(NULL, NULL, forget_loop_in_child) != 0) {
        Py_DECREF(m);
        return PyErr_NoMemory();
    }
    if (add_type(m, &LoopType, "Loop") < 0 || add_type(m, &EventType, "Event") < 0 ||
        add_type(m, &OpType, "Op") < 0 || add_type(m, &SubscriptionType, "Subscription") < 0 ||
        add_type(m, &EndpointType, "Endpoint") < 0 || errors_init(m) < 0 || add_constants(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
