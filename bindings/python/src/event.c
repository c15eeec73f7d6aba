/*
 * Events, ops and subscriptions: the objects the endpoint's calls give
 * Python.
 */
#include <errno.h>
#include <stdlib.h>

#include "core.h"

/* ---------------------------------------------------------------- events */

/*
 * An Event is made for every event a handler gets, so it is kept small:
 * the lahja event, its payload as bytes only when asked for, nothing
 * else.  A handler's event is lent by the library for the call only;
 * the Event borrows it, and takes a reference (a copy, for a lent event)
 * only when it is still held after the handler, or when a buffer is
 * exported over the payload, which must outlive the lending.
 */

PyObject *event_wrap(lahja_event_t *ev, int lent)
{
    EventObject *e = PyObject_New(EventObject, &EventType);
    if (e == NULL) {
        if (!lent)
            lahja_event_unref(ev);
        return NULL;
    }
    e->ev = ev;
    e->payload = NULL;
    e->lent = lent;
    return (PyObject *)e;
}

/* Turns a lent event into one of our own; 0, or -1 with MemoryError. */
static int event_keep(EventObject *e)
{
    if (!e->lent)
        return 0;
    e->lent = 0;
    e->ev = lahja_event_ref(e->ev);
    if (e->ev == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

void event_unlend(EventObject *e)
{
    /* Held by the caller only: it is about to go, and its dealloc leaves
     * a lent event alone. */
    if (!e->lent || Py_REFCNT(e) == 1)
        return;
    if (event_keep(e) < 0)
        PyErr_Clear(); /* the Event is left empty: its accessors raise */
}

/* The event, or NULL with an exception when keeping it failed. */
static lahja_event_t *event_get(EventObject *e)
{
    if (e->ev == NULL)
        PyErr_SetString(PyExc_MemoryError, "the event could not be kept");
    return e->ev;
}

static void event_dealloc(EventObject *self)
{
    if (!self->lent)
        lahja_event_unref(self->ev);
    Py_XDECREF(self->payload);
    PyObject_Free(self);
}

static PyObject *event_type(EventObject *self, void *closure)
{
    (void)closure;
    lahja_event_t *ev = event_get(self);
    return ev == NULL ? NULL : PyUnicode_FromString(lahja_event_type(ev));
}

static PyObject *str_or_none(const char *s)
{
    if (s == NULL)
        Py_RETURN_NONE;
    return PyUnicode_FromString(s);
}

static PyObject *event_origin(EventObject *self, void *closure)
{
    (void)closure;
    lahja_event_t *ev = event_get(self);
    return ev == NULL ? NULL : str_or_none(lahja_event_origin(ev));
}

static PyObject *event_response_type(EventObject *self, void *closure)
{
    (void)closure;
    lahja_event_t *ev = event_get(self);
    return ev == NULL ? NULL : str_or_none(lahja_event_response_type(ev));
}

static PyObject *event_id(EventObject *self, void *closure)
{
    (void)closure;
    lahja_event_t *ev = event_get(self);
    return ev == NULL ? NULL : PyLong_FromUnsignedLongLong(lahja_event_id(ev));
}

static PyObject *event_payload(EventObject *self, void *closure)
{
    (void)closure;
    if (self->payload == NULL) {
        lahja_event_t *ev = event_get(self);
        if (ev == NULL)
            return NULL;
        size_t len;
        const void *p = lahja_event_payload(ev, &len);
        self->payload = PyBytes_FromStringAndSize(p, (Py_ssize_t)len);
        if (self->payload == NULL)
            return NULL;
    }
    return Py_NewRef(self->payload);
}

static int event_getbuffer(EventObject *self, Py_buffer *view, int flags)
{
    if (event_keep(self) < 0 || event_get(self) == NULL) {
        view->obj = NULL;
        return -1;
    }
    size_t len;
    const void *p = lahja_event_payload(self->ev, &len);
    /* Read-only: an event's payload never changes once made (other
     * threads and peers' queues may share it). */
    return PyBuffer_FillInfo(view, (PyObject *)self, (void *)p, (Py_ssize_t)len, 1, flags);
}

static Py_ssize_t event_len(EventObject *self)
{
    if (event_get(self) == NULL)
        return -1;
    size_t len;
    lahja_event_payload(self->ev, &len);
    return (Py_ssize_t)len;
}

static PyObject *event_repr(EventObject *self)
{
    if (self->ev == NULL)
        return PyUnicode_FromString("<lahja._core.Event (lost)>");
    size_t len;
    lahja_event_payload(self->ev, &len);
    const char *origin = lahja_event_origin(self->ev);
    return PyUnicode_FromFormat("<lahja._core.Event %s from %s, %zu bytes>",
                                lahja_event_type(self->ev), origin ? origin : "(none)", len);
}

static PyGetSetDef event_getset[] = {
    { "type", (getter)event_type, NULL, "The event's type (str).", NULL },
    { "origin", (getter)event_origin, NULL,
      "The sending endpoint's name, or None for an event never broadcast.", NULL },
    { "id", (getter)event_id, NULL,
      "A request's id, a response's request id; else 0.", NULL },
    { "response_type", (getter)event_response_type, NULL,
      "A request's expected response type, None if not a request (and for a\n"
      "request from another endpoint: the type is not sent).",
      NULL },
    { "payload", (getter)event_payload, NULL,
      "The payload as bytes, copied on first access and cached.  For no copy,\n"
      "use the buffer protocol: memoryview(event), valid while it is held.",
      NULL },
    { NULL, NULL, NULL, NULL, NULL }
};

static PyBufferProcs event_as_buffer = {
    .bf_getbuffer = (getbufferproc)event_getbuffer,
};

static PySequenceMethods event_as_sequence = {
    .sq_length = (lenfunc)event_len,
};

PyTypeObject EventType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lahja._core.Event",
    .tp_basicsize = sizeof(EventObject),
    .tp_dealloc = (destructor)event_dealloc,
    .tp_repr = (reprfunc)event_repr,
    .tp_as_sequence = &event_as_sequence,
    .tp_as_buffer = &event_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An event received (by a handler, wait_for, or as a response): read-only.\n"
              "It holds a reference to the C event; the buffer protocol gives a\n"
              "zero-copy, read-only view of the payload; len() is its size.\n"
              "Any thread may read it; it is not made from Python.",
    .tp_getset = event_getset,
};

/* ------------------------------------------------------------------- ops */

OpObject *op_new(EndpointObject *ep, PyObject *callback)
{
    if (!PyCallable_Check(callback)) {
        PyErr_SetString(PyExc_TypeError, "callback must be callable");
        return NULL;
    }
    OpObject *op = PyObject_New(OpObject, &OpType);
    if (op == NULL)
        return NULL;
    op->op = NULL;
    op->endpoint = (EndpointObject *)Py_NewRef(ep);
    op->callback = Py_NewRef(callback);
    op->done = 0;
    op->status = 0;
    op->id = 0;
    return op;
}

/* Releases what only the callback needed. */
static void op_release(OpObject *op)
{
    op->op = NULL;
    Py_CLEAR(op->callback);
    Py_CLEAR(op->endpoint);
}

PyObject *op_started(OpObject *op, int rc)
{
    if (rc != 0) {
        const char *msg = op->endpoint->core != NULL
                              ? lahja_endpoint_last_error(op->endpoint->core->ep) : NULL;
        op_release(op);
        Py_DECREF(op);
        return raise_code(rc, msg);
    }
    Py_INCREF(op); /* the C side's, until the callback ran */
    return (PyObject *)op;
}

/* Calls the callback with `args` (stolen), then drops everything the op
 * held and the C side's reference. */
static void op_finish(OpObject *op, int status, PyObject *args)
{
    op->done = 1;
    op->status = status;
    op->op = NULL; /* invalid once this callback returns */
    EndpointObject *ep = op->endpoint;
    PyObject *cb = op->callback;
    op->endpoint = NULL;
    op->callback = NULL;
    if (args != NULL) {
        PyObject *r = PyObject_Call(cb, args, NULL);
        Py_DECREF(args);
        if (r != NULL)
            Py_DECREF(r);
    }
    if (PyErr_Occurred())
        endpoint_report(ep, cb);
    Py_DECREF(cb);
    Py_DECREF(ep);
    Py_DECREF(op);
}

void op_done_status(lahja_endpoint_t *ep, int status, void *user)
{
    (void)ep;
    op_finish(user, status, Py_BuildValue("(i)", status));
}

void op_done_event(lahja_endpoint_t *ep, int status, lahja_event_t *ev, void *user)
{
    (void)ep;
    PyObject *e = Py_None;
    if (ev != NULL) {
        e = event_wrap(ev, 0);
        if (e == NULL) {
            op_finish(user, status, NULL);
            return;
        }
    } else {
        Py_INCREF(e);
    }
    op_finish(user, status, Py_BuildValue("(iN)", status, e));
}

static PyObject *op_cancel(OpObject *self, PyObject *unused)
{
    (void)unused;
    if (self->op != NULL && !self->done) {
        if (!loop_check(self->endpoint->loop))
            return NULL;
        lahja_op_cancel(self->op);
    }
    Py_RETURN_NONE;
}

static PyObject *op_get_done(OpObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->done);
}

static PyObject *op_get_status(OpObject *self, void *closure)
{
    (void)closure;
    if (!self->done)
        Py_RETURN_NONE;
    return PyLong_FromLong(self->status);
}

static void op_dealloc(OpObject *self)
{
    /* Only reached once the callback ran (the C side holds a reference
     * until then), or for a call that never started. */
    Py_XDECREF(self->callback);
    Py_XDECREF(self->endpoint);
    PyObject_Free(self);
}

static PyMethodDef op_methods[] = {
    { "cancel", (PyCFunction)op_cancel, METH_NOARGS,
      "cancel() -> None\n\n"
      "Ends the call (lahja_op_cancel): its callback is then called, from\n"
      "Loop.run(), with -ECANCELED, or with the call's own result if that\n"
      "was already due.  Does nothing once the callback ran.\n"
      "Errors: RuntimeError on another thread.  Thread: the endpoint's." },
    { NULL, NULL, 0, NULL }
};

static PyObject *op_get_id(OpObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(self->id);
}

static PyGetSetDef op_getset[] = {
    { "done", (getter)op_get_done, NULL, "Whether the callback has been called.", NULL },
    { "id", (getter)op_get_id, NULL,
      "A request's id, what its responses are addressed to (the requester keys\n"
      "its pending requests by it); 0 for other calls.", NULL },
    { "status", (getter)op_get_status, NULL,
      "The status the callback got (0 or a negative code), None until then.", NULL },
    { NULL, NULL, NULL, NULL, NULL }
};

PyTypeObject OpType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lahja._core.Op",
    .tp_basicsize = sizeof(OpObject),
    .tp_dealloc = (destructor)op_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A call under way (connect, broadcast, request, wait_for, wait_until_*).\n"
              "Its callback is called exactly once, from Loop.run(); until then the\n"
              "Op holds the callback and the Endpoint, and is held by the call.",
    .tp_methods = op_methods,
    .tp_getset = op_getset,
};

/* --------------------------------------------------------- subscriptions */

static int on_event(lahja_endpoint_t *ep, lahja_event_t *ev, void *user)
{
    (void)ep;
    SubscriptionObject *s = user;
    /* The handler may cancel the subscription (dropping what it holds):
     * keep both for the call. */
    PyObject *handler = Py_NewRef(s->handler);
    EndpointObject *endpoint = (EndpointObject *)Py_NewRef(s->endpoint);
    PyObject *e = event_wrap(ev, 1);
    if (e != NULL) {
        PyObject *r = PyObject_CallOneArg(handler, e);
        Py_XDECREF(r);
    }
    /* Reported first: its traceback may hold the Event, which is then
     * kept. */
    if (PyErr_Occurred())
        endpoint_report(endpoint, handler);
    if (e != NULL) {
        event_unlend((EventObject *)e);
        Py_DECREF(e);
    }
    Py_DECREF(handler);
    Py_DECREF(endpoint);
    return 0; /* reported above; the library's log line would repeat it */
}

PyObject *subscription_new(EndpointObject *ep, PyObject *type, PyObject *handler,
                           PyObject *origins)
{
    if (!PyCallable_Check(handler)) {
        PyErr_SetString(PyExc_TypeError, "handler must be callable");
        return NULL;
    }
    const char *ctype = PyUnicode_AsUTF8(type);
    if (ctype == NULL)
        return NULL;
    Origins o;
    if (origins_get(origins, &o) < 0)
        return NULL;
    SubscriptionObject *s = PyObject_GC_New(SubscriptionObject, &SubscriptionType);
    if (s == NULL) {
        origins_release(&o);
        return NULL;
    }
    s->sub = NULL;
    s->endpoint = NULL;
    s->handler = NULL;
    s->type = Py_NewRef(type);
    s->prev = s->next = NULL;
    int rc = o.names != NULL
                 ? lahja_subscribe_from(ep->core->ep, ctype, o.names, o.n, on_event, s, &s->sub)
                 : lahja_subscribe(ep->core->ep, ctype, on_event, s, &s->sub);
    origins_release(&o);
    if (rc != 0) {
        Py_DECREF(s);
        return raise_code(rc, NULL);
    }
    s->endpoint = (EndpointObject *)Py_NewRef(ep);
    s->handler = Py_NewRef(handler);
    /* The endpoint's list holds a reference while it is subscribed. */
    s->next = ep->subs;
    if (ep->subs != NULL)
        ep->subs->prev = s;
    ep->subs = s;
    Py_INCREF(s);
    PyObject_GC_Track(s);
    return (PyObject *)s;
}

void subscription_end(SubscriptionObject *s, int cancel_in_c)
{
    if (s->endpoint == NULL)
        return;
    EndpointObject *ep = s->endpoint;
    if (cancel_in_c && s->sub != NULL)
        lahja_subscription_cancel(s->sub);
    s->sub = NULL;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        ep->subs = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    PyObject *handler = s->handler;
    s->handler = NULL;
    s->endpoint = NULL;
    Py_DECREF(handler);
    Py_DECREF(ep);
    Py_DECREF(s); /* the list's; may free s */
}

static PyObject *subscription_cancel(SubscriptionObject *self, PyObject *unused)
{
    (void)unused;
    if (self->endpoint == NULL)
        Py_RETURN_NONE;
    if (!loop_check(self->endpoint->loop))
        return NULL;
    subscription_end(self, 1);
    Py_RETURN_NONE;
}

static PyObject *subscription_active(SubscriptionObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->endpoint != NULL);
}

static PyObject *subscription_type(SubscriptionObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->type);
}

static int subscription_traverse(SubscriptionObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->handler);
    Py_VISIT(self->endpoint);
    return 0;
}

/* The collector breaks a cycle through a subscription by cancelling it,
 * which is what dropping every reference to its endpoint means.  Not on
 * another thread than the loop's, nor in a fork child: the C side could
 * not be cancelled there, and the cycle stays (a leak, not a crash). */
static int subscription_clear(SubscriptionObject *self)
{
    if (self->endpoint != NULL && loop_is_current(self->endpoint->loop)) {
        Py_INCREF(self);
        subscription_end(self, 1);
        Py_DECREF(self);
    }
    return 0;
}

static void subscription_dealloc(SubscriptionObject *self)
{
    PyObject_GC_UnTrack(self);
    /* Subscribed ones are held by their endpoint's list: not reached. */
    Py_XDECREF(self->type);
    PyObject_GC_Del(self);
}

static PyMethodDef subscription_methods[] = {
    { "cancel", (PyCFunction)subscription_cancel, METH_NOARGS,
      "cancel() -> None\n\n"
      "Ends the subscription (lahja_subscription_cancel) and drops the handler;\n"
      "safe inside the handler itself, and after the endpoint stopped.\n"
      "Idempotent.  Errors: RuntimeError on another thread.\n"
      "Thread: the endpoint's." },
    { NULL, NULL, 0, NULL }
};

static PyGetSetDef subscription_getset[] = {
    { "active", (getter)subscription_active, NULL,
      "Whether it is still subscribed (not cancelled, endpoint not freed).", NULL },
    { "type", (getter)subscription_type, NULL, "The type or pattern subscribed to.", NULL },
    { NULL, NULL, NULL, NULL, NULL }
};

PyTypeObject SubscriptionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lahja._core.Subscription",
    .tp_basicsize = sizeof(SubscriptionObject),
    .tp_dealloc = (destructor)subscription_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A handler subscribed to a type (Endpoint.subscribe).  The endpoint holds\n"
              "it, and it holds the handler, until cancel() or the endpoint is freed.",
    .tp_traverse = (traverseproc)subscription_traverse,
    .tp_clear = (inquiry)subscription_clear,
    .tp_methods = subscription_methods,
    .tp_getset = subscription_getset,
};
