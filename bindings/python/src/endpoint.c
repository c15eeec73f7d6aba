/*
 * _core.Endpoint: lahja_endpoint_t through its non-suspending calls and
 * callback forms.
 *
 * Lifetime: the Python object owns an EndpointCore (the C endpoint and
 * its log callable).  Endpoint.free() frees it once stopped; a dealloc
 * of a running endpoint stops it with a C-only callback that frees the
 * core, so nothing leaks as long as the thread's loop keeps being run.
 * Ops and subscriptions hold the Endpoint, so it cannot go while a
 * callback into Python may still come.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

#define METH_FK (METH_FASTCALL | METH_KEYWORDS)
#define FASTCALL(fn) ((PyCFunction)(void (*)(void))(fn))

typedef PyObject *const *Args;

/* -------------------------------------------------------------- helpers */

/* Non-zero if the endpoint may be used now: on its loop's thread, not
 * freed.  Otherwise sets the exception. */
static int usable(EndpointObject *self)
{
    if (!loop_check(self->loop))
        return 0;
    if (self->core == NULL) {
        raise_code(LAHJA_ELIFECYCLE, "the endpoint was freed");
        return 0;
    }
    return 1;
}

/* Raises `rc` with the endpoint's account of the failure when it has
 * one (the calls that set lahja_endpoint_last_error), else the code's. */
static PyObject *raise_ep(EndpointObject *self, int rc)
{
    return raise_code(rc, lahja_endpoint_last_error(self->core->ep));
}

/* A str argument as UTF-8 (borrowed from the str), or NULL with TypeError. */
static const char *utf8(PyObject *o, const char *what)
{
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be str, not %.100s", what, Py_TYPE(o)->tp_name);
        return NULL;
    }
    return PyUnicode_AsUTF8(o);
}

/* Like utf8(), None (or not given) giving NULL without an error: check
 * PyErr_Occurred() when it returns NULL. */
static const char *utf8_or_null(PyObject *o, const char *what)
{
    return o == NULL || o == Py_None ? NULL : utf8(o, what);
}

/* A truth value with a default for "not given". */
static int truth(PyObject *o, int dflt)
{
    return o == NULL ? dflt : PyObject_IsTrue(o);
}

/* A payload: bytes directly (the common case costs no buffer export),
 * any other bytes-like object through the buffer protocol.  release_payload
 * must follow a successful call. */
static int get_payload(PyObject *o, Py_buffer *view)
{
    if (PyBytes_CheckExact(o)) {
        view->obj = NULL;
        view->buf = PyBytes_AS_STRING(o);
        view->len = PyBytes_GET_SIZE(o);
        return 0;
    }
    return PyObject_GetBuffer(o, view, PyBUF_SIMPLE);
}

static void release_payload(Py_buffer *view)
{
    if (view->obj != NULL)
        PyBuffer_Release(view);
}

/* The broadcast config from the keyword arguments; -1 on a bad one. */
static int broadcast_config(PyObject *filter_endpoint, PyObject *filter_event_id,
                            PyObject *internal, PyObject *require_subscriber,
                            lahja_broadcast_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->filter_endpoint = utf8_or_null(filter_endpoint, "filter_endpoint");
    if (cfg->filter_endpoint == NULL && PyErr_Occurred())
        return -1;
    if (filter_event_id != NULL && filter_event_id != Py_None) {
        cfg->filter_event_id = PyLong_AsUnsignedLongLong(filter_event_id);
        if (PyErr_Occurred())
            return -1;
    }
    int in = truth(internal, 0), req = truth(require_subscriber, 1);
    if (in < 0 || req < 0)
        return -1;
    cfg->internal = in;
    cfg->allow_no_subscribers = !req;
    return 0;
}

/* configs: a sequence of names (served in the default directory) or
 * (name, path) pairs, path None for the default.  PyMem_Free *out. */
static int conn_configs(PyObject *configs, lahja_conn_config_t **out, size_t *n)
{
    PyObject *seq = PySequence_Fast(configs, "configs must be a sequence of (name, path)");
    if (seq == NULL)
        return -1;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    lahja_conn_config_t *c = PyMem_Calloc(len > 0 ? (size_t)len : 1, sizeof *c);
    if (c == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        const char *name, *path = NULL;
        if (PyUnicode_Check(item)) {
            name = PyUnicode_AsUTF8(item);
        } else if (!PyArg_ParseTuple(item, "sz;a config is (name, path)", &name, &path)) {
            goto fail;
        }
        if (name == NULL)
            goto fail;
        int rc = path != NULL ? lahja_conn_config_from_path(&c[i], name, path)
                              : lahja_conn_config_from_name(&c[i], name, NULL);
        if (rc != 0) {
            raise_code(rc, NULL);
            goto fail;
        }
    }
    Py_DECREF(seq);
    *out = c;
    *n = (size_t)len;
    return 0;
fail:
    PyMem_Free(c);
    Py_DECREF(seq);
    return -1;
}

void endpoint_report(EndpointObject *self, PyObject *where)
{
    if (self == NULL || self->on_error == NULL) {
        PyErr_WriteUnraisable(where);
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    PyObject *r = PyObject_CallOneArg(self->on_error, value != NULL ? value : Py_None);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (r == NULL)
        PyErr_WriteUnraisable(self->on_error);
    Py_XDECREF(r);
}

/* ---------------------------------------------------------- the core */

static void log_to_python(void *user, lahja_log_level_t level, const char *endpoint,
                          const char *message)
{
    EndpointCore *core = user;
    /* Lines come from within lahja calls, perhaps while an exception is
     * being raised: keep it aside. */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = PyObject_CallFunction(core->log, "iss", (int)level, endpoint, message);
    if (r == NULL)
        PyErr_WriteUnraisable(core->log);
    Py_XDECREF(r);
    PyErr_Restore(type, value, tb);
}

static void core_free(EndpointCore *core)
{
    lahja_endpoint_free(core->ep);
    Py_XDECREF(core->log);
    PyMem_Free(core);
}

/* The stop a dealloc started: the endpoint may be freed now. */
static void core_stopped(lahja_endpoint_t *ep, int status, void *user)
{
    (void)ep;
    (void)status;
    core_free(user);
}

/* Lets the C endpoint go: freed now if it is not running, else stopped
 * and freed by the stop's callback.  One inherited through fork() is
 * not ours to touch (its sockets are the parent's too), nor one whose
 * last reference went on another thread (the library would refuse, and
 * its log may still call into the core): leaked. */
static void core_release(EndpointObject *self)
{
    EndpointCore *core = self->core;
    self->core = NULL;
    if (core == NULL || !loop_is_current(self->loop))
        return;
    if (lahja_endpoint_is_running(core->ep) &&
        lahja_endpoint_stop_cb(core->ep, core_stopped, core) == 0)
        return;
    core_free(core);
}

/* Ends every subscription (in C too when `in_c`): before the endpoint's
 * memory goes, which takes the subscriptions' with it. */
static void end_subscriptions(EndpointObject *self, int in_c)
{
    while (self->subs != NULL)
        subscription_end(self->subs, in_c);
}

/* ------------------------------------------------------ construction */

/* An option: None (or not given) is 0, the library's default. */
static int opt_u64(PyObject *o, unsigned long long max, unsigned long long *out)
{
    *out = 0;
    if (o == NULL || o == Py_None)
        return 0;
    *out = PyLong_AsUnsignedLongLong(o);
    if (PyErr_Occurred())
        return -1;
    if (*out > max) {
        PyErr_SetString(PyExc_OverflowError, "option out of range");
        return -1;
    }
    return 0;
}

static PyObject *endpoint_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = { "name", "high_water", "hard_limit", "max_payload", "linger_ms",
                              "compress_threshold", "busy_poll_us", "handshake_timeout_ms",
                              "no_stats", "on_error", "log", NULL };
    PyObject *name, *on_error = Py_None, *log = Py_None, *o[7] = { NULL };
    unsigned long long high_water, hard_limit, max_payload, compress, linger_ms, busy_poll_us,
        handshake_ms;
    int no_stats = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "U|$OOOOOOOpOO:Endpoint", kwlist, &name, &o[0],
                                     &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &no_stats,
                                     &on_error, &log))
        return NULL;
    if (opt_u64(o[0], SIZE_MAX, &high_water) < 0 || opt_u64(o[1], SIZE_MAX, &hard_limit) < 0 ||
        opt_u64(o[2], SIZE_MAX, &max_payload) < 0 || opt_u64(o[3], UINT32_MAX, &linger_ms) < 0 ||
        opt_u64(o[4], SIZE_MAX, &compress) < 0 || opt_u64(o[5], UINT32_MAX, &busy_poll_us) < 0 ||
        opt_u64(o[6], UINT32_MAX, &handshake_ms) < 0)
        return NULL;
    if ((on_error != Py_None && !PyCallable_Check(on_error)) ||
        (log != Py_None && !PyCallable_Check(log))) {
        PyErr_SetString(PyExc_TypeError, "on_error and log must be callable or None");
        return NULL;
    }
    const char *cname = PyUnicode_AsUTF8(name);
    if (cname == NULL)
        return NULL;
    LoopObject *loop = loop_get();
    if (loop == NULL)
        return NULL;
    EndpointObject *self = (EndpointObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->loop = (LoopObject *)Py_NewRef(loop);
    self->name = Py_NewRef(name);
    self->on_error = on_error != Py_None ? Py_NewRef(on_error) : NULL;
    self->core = PyMem_Calloc(1, sizeof *self->core);
    if (self->core == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    lahja_endpoint_options_t opts = {
        .high_water = (size_t)high_water,
        .hard_limit = (size_t)hard_limit,
        .max_payload = (size_t)max_payload,
        .linger_ms = (uint32_t)linger_ms,
        .compress_threshold = (size_t)compress,
        .busy_poll_us = (uint32_t)busy_poll_us,
        .handshake_timeout_ms = (uint32_t)handshake_ms,
        .no_stats = no_stats,
    };
    if (log != Py_None) {
        self->core->log = Py_NewRef(log);
        opts.log = log_to_python;
        opts.log_user = self->core;
    }
    int rc = lahja_endpoint_new(cname, &opts, &self->core->ep);
    if (rc != 0) {
        Py_CLEAR(self->core->log);
        PyMem_Free(self->core);
        self->core = NULL;
        Py_DECREF(self);
        return raise_code(rc, NULL);
    }
    return (PyObject *)self;
}

static int endpoint_traverse(EndpointObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->on_error);
    if (self->core != NULL)
        Py_VISIT(self->core->log);
    for (SubscriptionObject *s = self->subs; s != NULL; s = s->next)
        Py_VISIT(s);
    return 0;
}

/* Breaking a cycle (endpoint -> subscription -> handler -> endpoint)
 * cancels the subscriptions: nobody can reach them any more.  On
 * another thread than the loop's, or in a fork child, the cycle stays
 * (a leak): the C subscriptions could not be cancelled there, and would
 * call into freed objects. */
static int endpoint_clear(EndpointObject *self)
{
    if (!loop_is_current(self->loop))
        return 0;
    Py_INCREF(self);
    end_subscriptions(self, self->core != NULL);
    Py_CLEAR(self->on_error);
    Py_DECREF(self);
    return 0;
}

static void endpoint_dealloc(EndpointObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    /* Subscriptions hold the endpoint: none is left here. */
    core_release(self);
    Py_CLEAR(self->on_error);
    Py_CLEAR(self->name);
    Py_CLEAR(self->loop);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ------------------------------------------------------------ lifecycle */

static PyObject *ep_start(EndpointObject *self, Args args, Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "path", NULL };
    PyObject *a[1];
    if (parse_args("start", args, nargs, kw, names, 1, 0, a) < 0 || !usable(self))
        return NULL;
    const char *path = utf8_or_null(a[0], "path");
    if (path == NULL && PyErr_Occurred())
        return NULL;
    lahja_conn_config_t cfg;
    if (path != NULL) {
        int rc = lahja_conn_config_from_path(&cfg, PyUnicode_AsUTF8(self->name), path);
        if (rc != 0)
            return raise_code(rc, NULL);
    }
    int rc = lahja_endpoint_start(self->core->ep, path != NULL ? &cfg : NULL);
    if (rc != 0)
        return raise_ep(self, rc);
    Py_RETURN_NONE;
}

static PyObject *ep_stop(EndpointObject *self, Args args, Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "callback", NULL };
    PyObject *a[1];
    if (parse_args("stop", args, nargs, kw, names, 1, 1, a) < 0 || !usable(self))
        return NULL;
    OpObject *op = op_new(self, a[0]);
    if (op == NULL)
        return NULL;
    PyObject *r = op_started(op, lahja_endpoint_stop_cb(self->core->ep, op_done_status, op));
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *ep_free(EndpointObject *self, PyObject *unused)
{
    (void)unused;
    if (!loop_check(self->loop))
        return NULL;
    if (self->core == NULL)
        Py_RETURN_NONE;
    if (lahja_endpoint_is_running(self->core->ep))
        return raise_code(-EBUSY, "the endpoint is running: stop it first");
    /* lahja_endpoint_free frees the subscriptions not cancelled. */
    end_subscriptions(self, 0);
    EndpointCore *core = self->core;
    self->core = NULL;
    core_free(core);
    Py_RETURN_NONE;
}

static PyObject *ep_join(EndpointObject *self, Args args, Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "dir", NULL };
    PyObject *a[1];
    if (parse_args("join", args, nargs, kw, names, 1, 0, a) < 0 || !usable(self))
        return NULL;
    const char *dir = utf8_or_null(a[0], "dir");
    if (dir == NULL && PyErr_Occurred())
        return NULL;
    int rc = lahja_join(self->core->ep, dir);
    if (rc != 0)
        return raise_ep(self, rc);
    Py_RETURN_NONE;
}

/* A non-negative int argument that fits 32 bits (None or absent: 0). */
static int u32_arg(PyObject *o, const char *what, uint32_t *out)
{
    *out = 0;
    if (o == NULL || o == Py_None)
        return 0;
    unsigned long v = PyLong_AsUnsignedLong(o);
    if (PyErr_Occurred())
        return -1;
    if (v > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s: too large", what);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static PyObject *ep_join_nats(EndpointObject *self, Args args, Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "servers", "prefix", "user", "password", "token",
                                         "creds_file", "host", "heartbeat_ms",
                                         "dead_after_ms", NULL };
    PyObject *a[9];
    if (parse_args("join_nats", args, nargs, kw, names, 1, 1, a) < 0 || !usable(self))
        return NULL;
    lahja_nats_options_t o = { 0 };
    const char **strs[] = { &o.servers, &o.prefix, &o.user, &o.password, &o.token,
                            &o.creds_file, &o.host };
    for (int i = 0; i < 7; i++) {
        *strs[i] = utf8_or_null(a[i], names[i]);
        if (*strs[i] == NULL && PyErr_Occurred())
            return NULL;
    }
    if (u32_arg(a[7], "heartbeat_ms", &o.heartbeat_ms) < 0
        || u32_arg(a[8], "dead_after_ms", &o.dead_after_ms) < 0)
        return NULL;
    /* It blocks while it connects to the first server, holding the GIL:
     * the endpoint's log callback may run meanwhile. */
    int rc = lahja_join_nats(self->core->ep, &o);
    if (rc != 0)
        return raise_ep(self, rc);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------- connecting */

static PyObject *ep_connect(EndpointObject *self, Args args, Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "configs", "timeout", "callback", NULL };
    PyObject *a[3];
    if (parse_args("connect", args, nargs, kw, names, 3, 3, a) < 0 || !usable(self))
        return NULL;
    lahja_time_t deadline;
    lahja_conn_config_t *cfgs;
    size_t n;
    if (deadline_from(a[1], &deadline) < 0 || conn_configs(a[0], &cfgs, &n) < 0)
        return NULL;
    OpObject *op = op_new(self, a[2]);
    if (op == NULL) {
        PyMem_Free(cfgs);
        return NULL;
    }
    int rc = lahja_connect_cb(self->core->ep, cfgs, n, deadline, op_done_status, op, &op->op);
    PyMem_Free(cfgs);
    return op_started(op, rc);
}

static PyObject *ep_connect_nowait(EndpointObject *self, Args args, Py_ssize_t nargs,
                                   PyObject *kw)
{
    static const char *const names[] = { "configs", NULL };
    PyObject *a[1];
    if (parse_args("connect_nowait", args, nargs, kw, names, 1, 1, a) < 0 || !usable(self))
        return NULL;
    lahja_conn_config_t *cfgs;
    size_t n;
    if (conn_configs(a[0], &cfgs, &n) < 0)
        return NULL;
    int rc = lahja_connect_nowait(self->core->ep, cfgs, n);
    PyMem_Free(cfgs);
    if (rc != 0)
        return raise_code(rc, NULL);
    Py_RETURN_NONE;
}

static PyObject *ep_keep_connected(EndpointObject *self, Args args, Py_ssize_t nargs,
                                   PyObject *kw)
{
    static const char *const names[] = { "name", "path", "min_ms", "max_ms", NULL };
    PyObject *a[4];
    if (parse_args("keep_connected", args, nargs, kw, names, 2, 1, a) < 0 || !usable(self))
        return NULL;
    const char *name = utf8(a[0], "name");
    const char *path = name != NULL ? utf8_or_null(a[1], "path") : NULL;
    if (PyErr_Occurred())
        return NULL;
    lahja_reconnect_options_t ro = { 0, 0 };
    if (a[2] != NULL && (ro.min_ms = (uint32_t)PyLong_AsUnsignedLong(a[2]), PyErr_Occurred()))
        return NULL;
    if (a[3] != NULL && (ro.max_ms = (uint32_t)PyLong_AsUnsignedLong(a[3]), PyErr_Occurred()))
        return NULL;
    lahja_conn_config_t cfg;
    int rc = path != NULL ? lahja_conn_config_from_path(&cfg, name, path)
                          : lahja_conn_config_from_name(&cfg, name, NULL);
    if (rc == 0)
        rc = lahja_keep_connected(self->core->ep, &cfg, &ro);
    if (rc != 0)
        return raise_code(rc, NULL);
    Py_RETURN_NONE;
}

/* --------------------------------------------------------- broadcasting */

static const char *const broadcast_names[] = { "type", "payload", "filter_endpoint",
                                               "filter_event_id", "internal",
                                               "require_subscriber", "timeout", "callback",
                                               NULL };

/* A broadcast_nowait of a new event of `type`; on -EAGAIN with `keep`
 * non-NULL, the event is left there for the waiting form. */
static int try_broadcast(EndpointObject *self, PyObject *const *a, lahja_broadcast_config_t *cfg,
                         lahja_event_t **keep)
{
    const char *type = utf8(a[0], "type");
    if (type == NULL)
        return 1;
    Py_buffer view;
    if (get_payload(a[1], &view) < 0)
        return 1;
    if (broadcast_config(a[2], a[3], a[4], a[5], cfg) < 0) {
        release_payload(&view);
        return 1;
    }
    lahja_event_t *ev;
    int rc = lahja_event_new(type, view.buf, (size_t)view.len, &ev);
    release_payload(&view);
    if (rc != 0)
        return rc;
    rc = lahja_broadcast_nowait(self->core->ep, ev, cfg);
    if (rc == -EAGAIN && keep != NULL)
        *keep = ev;
    else
        lahja_event_unref(ev);
    return rc;
}

/* Raises what a broadcast that did not happen returned. */
static PyObject *raise_broadcast(EndpointObject *self, int rc)
{
    if (rc == 1) /* the exception is set */
        return NULL;
    if (rc == -EAGAIN) {
        const char *peer = lahja_endpoint_blocked_peer(self->core->ep);
        PyObject *msg = PyUnicode_FromFormat("peer %s is over its queue's limit", peer);
        if (msg == NULL)
            return NULL;
        raise_code(rc, PyUnicode_AsUTF8(msg));
        Py_DECREF(msg);
        return NULL;
    }
    return raise_ep(self, rc);
}

static PyObject *ep_broadcast_nowait(EndpointObject *self, Args args, Py_ssize_t nargs,
                                     PyObject *kw)
{
    PyObject *a[8];
    if (kw == NULL && nargs == 2) { /* the common call: no parsing */
        a[0] = args[0];
        a[1] = args[1];
        a[2] = a[3] = a[4] = a[5] = NULL;
    } else if (parse_args("broadcast_nowait", args, nargs, kw, broadcast_names, 6, 2, a) < 0 ||
               a[6] != NULL || a[7] != NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "broadcast_nowait() takes no timeout nor callback");
        return NULL;
    }
    if (!usable(self))
        return NULL;
    lahja_broadcast_config_t cfg;
    int rc = try_broadcast(self, a, &cfg, NULL);
    if (rc != 0)
        return raise_broadcast(self, rc);
    Py_RETURN_NONE;
}

static PyObject *ep_broadcast(EndpointObject *self, Args args, Py_ssize_t nargs, PyObject *kw)
{
    PyObject *a[8];
    if (parse_args("broadcast", args, nargs, kw, broadcast_names, 6, 2, a) < 0 || !usable(self))
        return NULL;
    lahja_time_t deadline;
    if (deadline_from(a[6], &deadline) < 0)
        return NULL;
    PyObject *callback = a[7] != NULL && a[7] != Py_None ? a[7] : NULL;
    lahja_broadcast_config_t cfg;
    lahja_event_t *ev = NULL;
    int rc = try_broadcast(self, a, &cfg, callback != NULL ? &ev : NULL);
    if (rc == 0)
        Py_RETURN_NONE;
    if (ev == NULL)
        return raise_broadcast(self, rc);
    /* A peer is over its hard limit: wait for room in the callback form. */
    OpObject *op = op_new(self, callback);
    if (op == NULL) {
        lahja_event_unref(ev);
        return NULL;
    }
    rc = lahja_broadcast_cb(self->core->ep, ev, &cfg, deadline, op_done_status, op, &op->op);
    lahja_event_unref(ev); /* the call holds its own reference */
    return op_started(op, rc);
}

static PyObject *ep_request(EndpointObject *self, Args args, Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "type", "response_type", "payload", "filter_endpoint",
                                         "require_subscriber", "timeout", "callback", NULL };
    PyObject *a[7];
    if (parse_args("request", args, nargs, kw, names, 7, 3, a) < 0 || !usable(self))
        return NULL;
    if (a[6] == NULL) {
        PyErr_SetString(PyExc_TypeError, "request() missing required argument 'callback'");
        return NULL;
    }
    const char *type = utf8(a[0], "type");
    const char *rtype = type != NULL ? utf8(a[1], "response_type") : NULL;
    lahja_time_t deadline;
    lahja_broadcast_config_t cfg;
    if (rtype == NULL || deadline_from(a[5], &deadline) < 0 ||
        broadcast_config(a[3], NULL, NULL, a[4], &cfg) < 0)
        return NULL;
    Py_buffer view;
    if (get_payload(a[2], &view) < 0)
        return NULL;
    OpObject *op = op_new(self, a[6]);
    if (op == NULL) {
        release_payload(&view);
        return NULL;
    }
    /* Made here rather than by the bytes form: lahja_request_cb binds
     * the request's id, which Op.id gives the caller. */
    lahja_event_t *req = NULL;
    int rc = lahja_request_new(type, rtype, view.buf, (size_t)view.len, &req);
    release_payload(&view);
    if (rc == 0) {
        rc = lahja_request_cb(self->core->ep, req, &cfg, deadline, op_done_event, op, &op->op);
        if (rc == 0)
            op->id = lahja_event_id(req);
        lahja_event_unref(req);
    }
    return op_started(op, rc);
}

static PyObject *ep_respond(EndpointObject *self, Args args, Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "request", "type", "payload", NULL };
    PyObject *a[3];
    if (parse_args("respond", args, nargs, kw, names, 3, 3, a) < 0 || !usable(self))
        return NULL;
    if (!PyObject_TypeCheck(a[0], &EventType)) {
        PyErr_SetString(PyExc_TypeError, "request must be a lahja._core.Event");
        return NULL;
    }
    EventObject *req = (EventObject *)a[0];
    const char *type = utf8(a[1], "type");
    if (type == NULL)
        return NULL;
    if (req->ev == NULL)
        return PyErr_NoMemory();
    Py_buffer view;
    if (get_payload(a[2], &view) < 0)
        return NULL;
    int rc = lahja_respond_bytes(self->core->ep, req->ev, type, view.buf, (size_t)view.len);
    release_payload(&view);
    if (rc != 0)
        return raise_broadcast(self, rc);
    Py_RETURN_NONE;
}

/* ----------------------------------------------------------- consuming */

static PyObject *ep_subscribe(EndpointObject *self, Args args, Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "type", "handler", "origins", NULL };
    PyObject *a[3];
    if (parse_args("subscribe", args, nargs, kw, names, 3, 2, a) < 0 || !usable(self))
        return NULL;
    if (utf8(a[0], "type") == NULL)
        return NULL;
    return subscription_new(self, a[0], a[1], a[2]);
}

static PyObject *ep_wait_for(EndpointObject *self, Args args, Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "type", "timeout", "callback", "origins", NULL };
    PyObject *a[4];
    if (parse_args("wait_for", args, nargs, kw, names, 4, 3, a) < 0 || !usable(self))
        return NULL;
    const char *type = utf8(a[0], "type");
    lahja_time_t deadline;
    if (type == NULL || deadline_from(a[1], &deadline) < 0)
        return NULL;
    OpObject *op = op_new(self, a[2]);
    if (op == NULL)
        return NULL;
    Origins o;
    if (origins_get(a[3], &o) < 0) {
        Py_DECREF(op);
        return NULL;
    }
    int rc = o.names != NULL ? lahja_wait_for_from_cb(self->core->ep, type, o.names, o.n, deadline,
                                                      op_done_event, op, &op->op)
                             : lahja_wait_for_cb(self->core->ep, type, deadline, op_done_event, op,
                                                 &op->op);
    origins_release(&o);
    return op_started(op, rc);
}

/* ---------------------------------------------------------------- waits */

/* The common part of the waits: timeout a[t], callback a[t + 1]. */
#define WAIT_PROLOGUE(fname, npar)                                                          \
    PyObject *a[npar];                                                                      \
    if (parse_args(fname, args, nargs, kw, names, npar, npar, a) < 0 || !usable(self))      \
        return NULL;                                                                        \
    lahja_time_t deadline;                                                                  \
    if (deadline_from(a[npar - 2], &deadline) < 0)                                          \
        return NULL;                                                                        \
    OpObject *op = op_new(self, a[npar - 1]);                                               \
    if (op == NULL)                                                                         \
        return NULL

static PyObject *ep_wait_until_delivered(EndpointObject *self, Args args, Py_ssize_t nargs,
                                         PyObject *kw)
{
    static const char *const names[] = { "timeout", "callback", NULL };
    WAIT_PROLOGUE("wait_until_delivered", 2);
    return op_started(op, lahja_wait_until_delivered_cb(self->core->ep, deadline, op_done_status,
                                                        op, &op->op));
}

static PyObject *ep_wait_until_connected_to(EndpointObject *self, Args args, Py_ssize_t nargs,
                                            PyObject *kw)
{
    static const char *const names[] = { "name", "timeout", "callback", NULL };
    WAIT_PROLOGUE("wait_until_connected_to", 3);
    const char *name = utf8(a[0], "name");
    if (name == NULL) {
        Py_DECREF(op);
        return NULL;
    }
    return op_started(op, lahja_wait_until_connected_to_cb(self->core->ep, name, deadline,
                                                           op_done_status, op, &op->op));
}

static PyObject *ep_wait_until_connections_change(EndpointObject *self, Args args,
                                                  Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "timeout", "callback", NULL };
    WAIT_PROLOGUE("wait_until_connections_change", 2);
    return op_started(op, lahja_wait_until_connections_change_cb(self->core->ep, deadline,
                                                                 op_done_status, op, &op->op));
}

static PyObject *ep_wait_until_endpoint_subscriptions_change(EndpointObject *self, Args args,
                                                             Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "timeout", "callback", NULL };
    WAIT_PROLOGUE("wait_until_endpoint_subscriptions_change", 2);
    return op_started(op, lahja_wait_until_endpoint_subscriptions_change_cb(
                              self->core->ep, deadline, op_done_status, op, &op->op));
}

static PyObject *ep_wait_until_endpoint_subscribed_to(EndpointObject *self, Args args,
                                                      Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "name", "type", "timeout", "callback", NULL };
    WAIT_PROLOGUE("wait_until_endpoint_subscribed_to", 4);
    const char *name = utf8(a[0], "name");
    const char *type = name != NULL ? utf8(a[1], "type") : NULL;
    if (type == NULL) {
        Py_DECREF(op);
        return NULL;
    }
    return op_started(op, lahja_wait_until_endpoint_subscribed_to_cb(
                              self->core->ep, name, type, deadline, op_done_status, op, &op->op));
}

static PyObject *ep_wait_until_any_endpoint_subscribed_to(EndpointObject *self, Args args,
                                                          Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "type", "timeout", "callback", NULL };
    WAIT_PROLOGUE("wait_until_any_endpoint_subscribed_to", 3);
    const char *type = utf8(a[0], "type");
    if (type == NULL) {
        Py_DECREF(op);
        return NULL;
    }
    return op_started(op, lahja_wait_until_any_endpoint_subscribed_to_cb(
                              self->core->ep, type, deadline, op_done_status, op, &op->op));
}

static PyObject *ep_wait_until_all_endpoints_subscribed_to(EndpointObject *self, Args args,
                                                           Py_ssize_t nargs, PyObject *kw)
{
    static const char *const names[] = { "type", "include_self", "timeout", "callback", NULL };
    WAIT_PROLOGUE("wait_until_all_endpoints_subscribed_to", 4);
    const char *type = utf8(a[0], "type");
    int self_too = type != NULL ? PyObject_IsTrue(a[1]) : -1;
    if (self_too < 0) {
        Py_DECREF(op);
        return NULL;
    }
    return op_started(op, lahja_wait_until_all_endpoints_subscribed_to_cb(
                              self->core->ep, type, self_too, deadline, op_done_status, op,
                              &op->op));
}

/* -------------------------------------------------------------- queries */

static PyObject *ep_is_connected_to(EndpointObject *self, PyObject *name)
{
    const char *n = usable(self) ? utf8(name, "name") : NULL;
    return n == NULL ? NULL : PyBool_FromLong(lahja_is_connected_to(self->core->ep, n));
}

static PyObject *ep_is_endpoint_subscribed_to(EndpointObject *self, PyObject *args)
{
    const char *name, *type;
    if (!PyArg_ParseTuple(args, "ss:is_endpoint_subscribed_to", &name, &type) || !usable(self))
        return NULL;
    return PyBool_FromLong(lahja_is_endpoint_subscribed_to(self->core->ep, name, type));
}

static PyObject *ep_is_any_endpoint_subscribed_to(EndpointObject *self, PyObject *type)
{
    const char *t = usable(self) ? utf8(type, "type") : NULL;
    return t == NULL ? NULL
                     : PyBool_FromLong(lahja_is_any_endpoint_subscribed_to(self->core->ep, t));
}

static PyObject *ep_are_all_endpoints_subscribed_to(EndpointObject *self, PyObject *args)
{
    const char *type;
    int include_self = 1;
    if (!PyArg_ParseTuple(args, "s|p:are_all_endpoints_subscribed_to", &type, &include_self) ||
        !usable(self))
        return NULL;
    return PyBool_FromLong(
        lahja_are_all_endpoints_subscribed_to(self->core->ep, type, include_self));
}

static PyObject *str_tuple(const char *const *s, size_t n)
{
    PyObject *t = PyTuple_New((Py_ssize_t)n);
    for (size_t i = 0; t != NULL && i < n; i++) {
        PyObject *u = PyUnicode_FromString(s[i]);
        if (u == NULL)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, (Py_ssize_t)i, u);
    }
    return t;
}

static void add_peer(const char *name, const char *const *types, size_t ntypes, void *user)
{
    PyObject *list = user;
    if (PyErr_Occurred())
        return;
    PyObject *t = str_tuple(types, ntypes);
    PyObject *item = t != NULL ? Py_BuildValue("(sN)", name, t) : NULL;
    if (item != NULL) {
        PyList_Append(list, item);
        Py_DECREF(item);
    }
}

static PyObject *ep_peers(EndpointObject *self, PyObject *unused)
{
    (void)unused;
    if (!usable(self))
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    lahja_foreach_peer(self->core->ep, add_peer, list);
    if (PyErr_Occurred())
        Py_CLEAR(list);
    return list;
}

static PyObject *ep_subscribed_types(EndpointObject *self, PyObject *unused)
{
    (void)unused;
    if (!usable(self))
        return NULL;
    size_t n = lahja_subscribed_types(self->core->ep, NULL, 0);
    const char **types = PyMem_Malloc(sizeof *types * (n + 1));
    if (types == NULL)
        return PyErr_NoMemory();
    n = lahja_subscribed_types(self->core->ep, types, n);
    PyObject *t = str_tuple(types, n);
    PyMem_Free(types);
    return t;
}

/* d[key] = v; -1 on error. */
static int put(PyObject *d, const char *key, PyObject *v)
{
    int rc = v != NULL ? PyDict_SetItemString(d, key, v) : -1;
    Py_XDECREF(v);
    return rc;
}

#define PUT_U64(d, s, f) put(d, #f, PyLong_FromUnsignedLongLong((unsigned long long)(s).f))

static PyObject *ep_peer_info(EndpointObject *self, PyObject *name)
{
    static const char *const states[] = { "unknown", "connecting", "connected", "retrying",
                                          "failed" };
    const char *n = usable(self) ? utf8(name, "name") : NULL;
    if (n == NULL)
        return NULL;
    lahja_peer_info_t pi;
    int rc = lahja_peer_info(self->core->ep, n, &pi);
    if (rc != 0)
        return raise_code(rc, NULL);
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    const char *state = (unsigned)pi.state < 5 ? states[pi.state] : "unknown";
    if (put(d, "state", PyUnicode_FromString(state)) < 0 ||
        put(d, "kept", PyBool_FromLong(pi.kept)) < 0 ||
        put(d, "outbound", PyBool_FromLong(pi.outbound)) < 0 ||
        put(d, "pid", PyLong_FromLong((long)pi.pid)) < 0 || PUT_U64(d, pi, since) < 0 ||
        PUT_U64(d, pi, next_attempt) < 0 || PUT_U64(d, pi, retry_ms) < 0 ||
        PUT_U64(d, pi, failures) < 0 || PUT_U64(d, pi, reconnects) < 0 ||
        put(d, "last_error", PyLong_FromLong(pi.last_error)) < 0)
        Py_CLEAR(d);
    return d;
}

static PyObject *ep_stats(EndpointObject *self, PyObject *unused)
{
    (void)unused;
    if (!usable(self))
        return NULL;
    lahja_endpoint_stats_t s;
    lahja_delivery_t dl = { 0, 0, 0 };
    int rc = lahja_endpoint_stats(self->core->ep, &s);
    if (rc != 0)
        return raise_code(rc, NULL);
    (void)lahja_delivery_stats(self->core->ep, NULL, &dl);
    PyObject *d = PyDict_New();
    if (d != NULL &&
        (PUT_U64(d, s, started_ms) < 0 || PUT_U64(d, s, peers) < 0 ||
         PUT_U64(d, s, stream_drops) < 0 || PUT_U64(d, s, dispatched) < 0 ||
         PUT_U64(d, s, requests_pending) < 0 || PUT_U64(d, dl, sent) < 0 ||
         PUT_U64(d, dl, confirmed) < 0 || PUT_U64(d, dl, lost) < 0))
        Py_CLEAR(d);
    return d;
}

static PyObject *ep_peer_stats(EndpointObject *self, PyObject *name)
{
    const char *n = usable(self) ? utf8(name, "name") : NULL;
    if (n == NULL)
        return NULL;
    lahja_peer_stats_t s;
    int rc = lahja_peer_stats(self->core->ep, n, &s);
    if (rc != 0)
        return raise_code(rc, NULL);
    PyObject *d = PyDict_New();
    if (d != NULL &&
        (put(d, "connected", PyBool_FromLong(s.connected)) < 0 ||
         put(d, "pid", PyLong_FromLong((long)s.pid)) < 0 || PUT_U64(d, s, since) < 0 ||
         PUT_U64(d, s, age_ms) < 0 || PUT_U64(d, s, events_out) < 0 ||
         PUT_U64(d, s, events_in) < 0 || PUT_U64(d, s, bytes_out) < 0 ||
         PUT_U64(d, s, bytes_in) < 0 || PUT_U64(d, s, payload_out) < 0 ||
         PUT_U64(d, s, payload_in) < 0 || PUT_U64(d, s, queued) < 0 ||
         PUT_U64(d, s, high_water) < 0 || PUT_U64(d, s, blocked) < 0 ||
         PUT_U64(d, s, confirmed) < 0 || PUT_U64(d, s, lost) < 0))
        Py_CLEAR(d);
    return d;
}

/* ----------------------------------------------------------- properties */

static PyObject *ep_get_name(EndpointObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->name);
}

static PyObject *ep_get_path(EndpointObject *self, void *closure)
{
    (void)closure;
    const char *p = self->core != NULL ? lahja_endpoint_path(self->core->ep) : "";
    if (*p == '\0')
        Py_RETURN_NONE;
    return PyUnicode_DecodeFSDefault(p);
}

static PyObject *ep_get_is_running(EndpointObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->core != NULL && lahja_endpoint_is_running(self->core->ep));
}

static PyObject *ep_get_is_serving(EndpointObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->core != NULL && lahja_endpoint_is_serving(self->core->ep));
}

static PyObject *ep_get_last_error(EndpointObject *self, void *closure)
{
    (void)closure;
    if (!usable(self))
        return NULL;
    return PyUnicode_FromString(lahja_endpoint_last_error(self->core->ep));
}

static PyObject *ep_get_loop(EndpointObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->loop);
}

static PyObject *ep_repr(EndpointObject *self)
{
    return PyUnicode_FromFormat("<lahja._core.Endpoint %R%s>", self->name,
                                self->core == NULL ? " (freed)"
                                : lahja_endpoint_is_running(self->core->ep) ? " (running)"
                                                                            : "");
}

/* ---------------------------------------------------------------- table */

#define THREAD_DOC "  Thread: the endpoint's (else RuntimeError)."
#define OP_DOC                                                                              \
    "\nReturns the Op; callback(status) is called once, from Loop.run(): 0, or -ETIMEDOUT\n" \
    "when `timeout` (seconds, None: none) passes, -ECANCELED after Op.cancel(),\n"         \
    "LAHJA_ELIFECYCLE when the endpoint stops first.  Errors (the call did not start,\n"   \
    "the callback is never called): Error, LifecycleError when not running." THREAD_DOC

static PyMethodDef endpoint_methods[] = {
    { "start", FASTCALL(ep_start), METH_FK,
      "start(path=None) -> None\n\n"
      "Starts the endpoint, serving at the Unix socket `path` (see path_of()), or\n"
      "only connecting out when None.  Errors: BindError/Error (address in use:\n"
      "-EADDRINUSE), LifecycleError if started before." THREAD_DOC },
    { "stop", FASTCALL(ep_stop), METH_FK,
      "stop(callback) -> None\n\n"
      "Stops the endpoint (lahja_endpoint_stop_cb): every call under way ends with\n"
      "LAHJA_ELIFECYCLE (its callback first), then callback(status) is called from\n"
      "Loop.run().  The endpoint holds the callback until then.  Errors:\n"
      "LifecycleError if never started or already stopped." THREAD_DOC },
    { "free", (PyCFunction)ep_free, METH_NOARGS,
      "free() -> None\n\n"
      "Frees the C endpoint of a stopped (or never started) endpoint now, with its\n"
      "subscriptions; later calls raise LifecycleError.  Without it, dealloc frees\n"
      "(stopping first if needed).  Idempotent.  Errors: Error (-EBUSY) while\n"
      "running." THREAD_DOC },
    { "join", FASTCALL(ep_join), METH_FK,
      "join(dir=None) -> None\n\n"
      "Joins the bus of directory `dir` (lahja_join): keeps connected to every\n"
      "endpoint serving there.  Errors: Error, LifecycleError." THREAD_DOC },
    { "join_nats", FASTCALL(ep_join_nats), METH_FK,
      "join_nats(servers, prefix=None, user=None, password=None, token=None,\n"
      "          creds_file=None, host=None, heartbeat_ms=0, dead_after_ms=0) -> None\n\n"
      "Joins the endpoints of other hosts through the NATS servers `servers`\n"
      "(comma-separated URLs; lahja_join_nats).  Blocks while it connects to the\n"
      "first.  Errors: Error, LifecycleError." THREAD_DOC },
    { "connect", FASTCALL(ep_connect), METH_FK,
      "connect(configs, timeout, callback) -> Op\n\n"
      "Connects to each endpoint of `configs` (names, or (name, path) pairs with\n"
      "path None for the default directory) and waits for every handshake.\n"
      "Errors also ConnectionAttemptRejected." OP_DOC },
    { "connect_nowait", FASTCALL(ep_connect_nowait), METH_FK,
      "connect_nowait(configs) -> None\n\n"
      "Starts connecting to each of `configs` in the background and returns.\n"
      "Errors: Error, ConnectionAttemptRejected, LifecycleError." THREAD_DOC },
    { "keep_connected", FASTCALL(ep_keep_connected), METH_FK,
      "keep_connected(name, path=None, min_ms=0, max_ms=0) -> None\n\n"
      "Keeps the endpoint connected to `name` (lahja_keep_connected), reconnecting\n"
      "with backoff min_ms..max_ms (0: defaults).  Errors: Error." THREAD_DOC },
    { "broadcast_nowait", FASTCALL(ep_broadcast_nowait), METH_FK,
      "broadcast_nowait(type, payload, filter_endpoint=None, filter_event_id=0,\n"
      "                 internal=False, require_subscriber=True) -> None\n\n"
      "Broadcasts an event of `type` with a copy of the bytes-like `payload`, never\n"
      "waiting.  Errors: WouldBlock (a peer is over its hard limit: nothing sent),\n"
      "NoSubscribers (unless require_subscriber is false), Error (-EMSGSIZE,\n"
      "-EINVAL), LifecycleError." THREAD_DOC },
    { "broadcast", FASTCALL(ep_broadcast), METH_FK,
      "broadcast(type, payload, filter_endpoint=None, filter_event_id=0,\n"
      "          internal=False, require_subscriber=True, timeout=None,\n"
      "          callback=None) -> Op | None\n\n"
      "As broadcast_nowait, returning None when the event was queued at once (the\n"
      "common case: no Op is made).  When a peer is over its limit and `callback`\n"
      "is given, waits for room instead: returns an Op, and callback(status) comes\n"
      "once it is queued, or with the error.  Without a callback that case raises\n"
      "WouldBlock." THREAD_DOC },
    { "request", FASTCALL(ep_request), METH_FK,
      "request(type, response_type, payload, filter_endpoint=None,\n"
      "        require_subscriber=True, timeout=None, *, callback) -> Op\n\n"
      "Sends a request and waits for its first response (lahja_request_cb); the\n"
      "Op's id is the request's.\n"
      "callback(status, Event | None), the Event the response (its own reference).\n"
      "Statuses also NoSubscribers', UnexpectedResponse's and RemoteDisconnected's\n"
      "codes." OP_DOC },
    { "respond", FASTCALL(ep_respond), METH_FK,
      "respond(request, type, payload) -> None\n\n"
      "Answers the request Event `request` with an event of `type` carrying a copy\n"
      "of `payload`, to the requester only.  Errors: Error (-EINVAL: not a\n"
      "request), WouldBlock, LifecycleError." THREAD_DOC },
    { "subscribe", FASTCALL(ep_subscribe), METH_FK,
      "subscribe(type, handler, origins=None) -> Subscription\n\n"
      "Calls handler(event) for every event of `type` (a type, or a pattern ending\n"
      "in '*'), from the endpoints named in `origins` only if given: from\n"
      "Loop.run(), or, for an event this endpoint broadcasts to itself, from within\n"
      "that broadcast call (the library dispatches local events at once).\n"
      "The endpoint holds the handler until Subscription.cancel().  An exception\n"
      "the handler raises goes to on_error (else sys.unraisablehook); the other\n"
      "handlers still run.  Errors: Error (-EINVAL), LifecycleError." THREAD_DOC },
    { "wait_for", FASTCALL(ep_wait_for), METH_FK,
      "wait_for(type, timeout, callback, origins=None) -> Op\n\n"
      "Waits for the next event of `type` (from `origins` only, if given):\n"
      "callback(status, Event | None)." OP_DOC },
    { "wait_until_delivered", FASTCALL(ep_wait_until_delivered), METH_FK,
      "wait_until_delivered(timeout, callback) -> Op\n\n"
      "Waits until every peer confirmed every event sent to it so far; status\n"
      "LAHJA_EREMOTEDISCONNECTED if a connection with events unconfirmed ended." OP_DOC },
    { "wait_until_connected_to", FASTCALL(ep_wait_until_connected_to), METH_FK,
      "wait_until_connected_to(name, timeout, callback) -> Op\n\n"
      "Waits until a connection to `name` is established." OP_DOC },
    { "wait_until_connections_change", FASTCALL(ep_wait_until_connections_change), METH_FK,
      "wait_until_connections_change(timeout, callback) -> Op\n\n"
      "Waits until a connection is made or lost." OP_DOC },
    { "wait_until_endpoint_subscriptions_change",
      FASTCALL(ep_wait_until_endpoint_subscriptions_change), METH_FK,
      "wait_until_endpoint_subscriptions_change(timeout, callback) -> Op\n\n"
      "Waits until a peer's (or this endpoint's) subscriptions change." OP_DOC },
    { "wait_until_endpoint_subscribed_to", FASTCALL(ep_wait_until_endpoint_subscribed_to),
      METH_FK,
      "wait_until_endpoint_subscribed_to(name, type, timeout, callback) -> Op\n\n"
      "Waits until endpoint `name` subscribes to `type`." OP_DOC },
    { "wait_until_any_endpoint_subscribed_to",
      FASTCALL(ep_wait_until_any_endpoint_subscribed_to), METH_FK,
      "wait_until_any_endpoint_subscribed_to(type, timeout, callback) -> Op\n\n"
      "Waits until some endpoint (this one included) subscribes to `type`." OP_DOC },
    { "wait_until_all_endpoints_subscribed_to",
      FASTCALL(ep_wait_until_all_endpoints_subscribed_to), METH_FK,
      "wait_until_all_endpoints_subscribed_to(type, include_self, timeout, callback)\n"
      "    -> Op\n\n"
      "Waits until every connected endpoint (and this one if include_self)\n"
      "subscribes to `type`." OP_DOC },
    { "is_connected_to", (PyCFunction)ep_is_connected_to, METH_O,
      "is_connected_to(name) -> bool\n\n"
      "Whether a connection to `name` is established (true for the endpoint's own\n"
      "name).  Errors: TypeError, LifecycleError once freed." THREAD_DOC },
    { "is_endpoint_subscribed_to", (PyCFunction)ep_is_endpoint_subscribed_to, METH_VARARGS,
      "is_endpoint_subscribed_to(name, type) -> bool\n\n"
      "Whether endpoint `name` (connected, or this one) subscribes to `type`." THREAD_DOC },
    { "is_any_endpoint_subscribed_to", (PyCFunction)ep_is_any_endpoint_subscribed_to, METH_O,
      "is_any_endpoint_subscribed_to(type) -> bool\n\n"
      "Whether any connected endpoint, or this one, subscribes to `type`." THREAD_DOC },
    { "are_all_endpoints_subscribed_to", (PyCFunction)ep_are_all_endpoints_subscribed_to,
      METH_VARARGS,
      "are_all_endpoints_subscribed_to(type, include_self=True) -> bool\n\n"
      "Whether every connected endpoint (and this one if include_self) subscribes\n"
      "to `type`." THREAD_DOC },
    { "peers", (PyCFunction)ep_peers, METH_NOARGS,
      "peers() -> list[tuple[str, tuple[str, ...]]]\n\n"
      "Every connected endpoint's name with the types it subscribes to; new\n"
      "objects the caller owns." THREAD_DOC },
    { "subscribed_types", (PyCFunction)ep_subscribed_types, METH_NOARGS,
      "subscribed_types() -> tuple[str, ...]\n\n"
      "The types and patterns this endpoint subscribes to." THREAD_DOC },
    { "peer_info", (PyCFunction)ep_peer_info, METH_O,
      "peer_info(name) -> dict\n\n"
      "Where the endpoint stands with `name` (lahja_peer_info): state ('unknown',\n"
      "'connecting', 'connected', 'retrying', 'failed'), kept, outbound, pid, since,\n"
      "next_attempt, retry_ms, failures, reconnects, last_error.  Errors: Error." THREAD_DOC },
    { "stats", (PyCFunction)ep_stats, METH_NOARGS,
      "stats() -> dict\n\n"
      "The endpoint's counts (lahja_endpoint_stats: started_ms, peers, stream_drops,\n"
      "dispatched, requests_pending) and its delivery totals (sent, confirmed,\n"
      "lost).  Errors: Error." THREAD_DOC },
    { "peer_stats", (PyCFunction)ep_peer_stats, METH_O,
      "peer_stats(name) -> dict\n\n"
      "The counts of peer `name` (lahja_peer_stats).  Errors: Error (-ENOENT: never\n"
      "connected)." THREAD_DOC },
    { NULL, NULL, 0, NULL }
};

static PyGetSetDef endpoint_getset[] = {
    { "name", (getter)ep_get_name, NULL, "The endpoint's name.  Any thread.", NULL },
    { "path", (getter)ep_get_path, NULL,
      "The path it serves at, or None when it does not serve.  Any thread.", NULL },
    { "is_running", (getter)ep_get_is_running, NULL,
      "Started and not stopped.  Any thread (from another: a value of the past).", NULL },
    { "is_serving", (getter)ep_get_is_serving, NULL,
      "Running and serving.  Any thread (from another: a value of the past).", NULL },
    { "last_error", (getter)ep_get_last_error, NULL,
      "The endpoint's account of its last failure (lahja_endpoint_last_error),\n"
      "read in a callback to explain its status; '' before any." THREAD_DOC,
      NULL },
    { "loop", (getter)ep_get_loop, NULL, "The Loop it was made on.", NULL },
    { NULL, NULL, NULL, NULL, NULL }
};

PyTypeObject EndpointType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lahja._core.Endpoint",
    .tp_basicsize = sizeof(EndpointObject),
    .tp_dealloc = (destructor)endpoint_dealloc,
    .tp_repr = (reprfunc)ep_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Endpoint(name, *, high_water=None, hard_limit=None, max_payload=None,\n"
              "         linger_ms=None, compress_threshold=None, busy_poll_us=None,\n"
              "         handshake_timeout_ms=None, no_stats=False, on_error=None, log=None)\n\n"
              "A stopped lahja endpoint on the calling thread's Loop (None or 0: the\n"
              "library's default; sizes in bytes).  on_error(exc) gets the exceptions\n"
              "raised by handlers and callbacks (default: sys.unraisablehook);\n"
              "log(level, endpoint, message) replaces the library's stderr logging.\n"
              "Every method is for the Loop's thread only.  Dropping the last\n"
              "reference to a running endpoint stops it, and frees it once stopped\n"
              "(keep running the Loop).\n"
              "Errors: Error (-EINVAL: bad name).",
    .tp_traverse = (traverseproc)endpoint_traverse,
    .tp_clear = (inquiry)endpoint_clear,
    .tp_weaklistoffset = offsetof(EndpointObject, weakrefs),
    .tp_methods = endpoint_methods,
    .tp_getset = endpoint_getset,
    .tp_new = endpoint_new,
};
