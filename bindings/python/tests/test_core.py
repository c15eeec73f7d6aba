"""Tests of lahja._core, driven directly: a small pump runs the thread's
libuv loop (select on Loop.fd for Loop.timeout(), then Loop.run()) until a
condition holds or a deadline passes.  No sleep is used to wait for
anything."""

import errno
import gc
import multiprocessing
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref

import pytest

from lahja import _core

ELIFECYCLE = _core.ELIFECYCLE


def pump(cond, timeout=10.0):
    """Runs the loop until cond() is true; fails after `timeout` seconds."""
    loop = _core.loop()
    deadline = time.monotonic() + timeout
    while True:
        wait = loop.run()
        if cond():
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("condition not met within %.1f s" % timeout)
        select.select([loop.fd], [], [], left if wait is None else min(wait, left))


def fd_count():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def base_dir():
    # Short: a socket's path must fit in 107 bytes.
    d = tempfile.mkdtemp(prefix="ljpy")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def stop_all(*endpoints):
    done = []
    for ep in endpoints:
        if ep.is_running:
            ep.stop(done.append)
        else:
            done.append(0)
    pump(lambda: len(done) == len(endpoints))
    for ep in endpoints:
        ep.free()
    return done


@pytest.fixture
def pair(base_dir):
    """Endpoint a serving, b connected to it."""
    a = _core.Endpoint("a", linger_ms=200)
    b = _core.Endpoint("b", linger_ms=200)
    a.start(_core.path_of("a", base_dir))
    b.start()
    status = []
    b.connect([("a", a.path)], 5, status.append)
    pump(lambda: status)
    assert status == [0]
    pump(lambda: a.is_connected_to("b"))
    yield a, b
    stop_all(a, b)


def wait_ok(call, *args):
    """Starts a call whose callback gets a status and pumps until it came."""
    status = []
    call(*args, status.append)
    pump(lambda: status)
    return status[0]


# ------------------------------------------------------------------ loop


def test_loop_is_per_thread_and_runs():
    loop = _core.loop()
    assert _core.loop() is loop
    assert isinstance(loop.fd, int) and loop.fd >= 0
    assert loop.pid == os.getpid()
    t = loop.run()
    assert t is None or t >= 0.0
    assert loop.timeout() is None or loop.timeout() >= 0.0
    other = []
    th = threading.Thread(target=lambda: other.append(_core.loop()))
    th.start()
    th.join()
    assert other[0] is not loop


def test_calls_from_another_thread_are_refused(pair):
    a, b = pair
    errors, ran = [], []

    def worker():
        for call in (lambda: b.broadcast_nowait("X", b""), lambda: a.peers(),
                     lambda: a.loop.run()):
            try:
                call()
            except RuntimeError as e:
                errors.append(e)
        ran.append(_core.loop().run())  # the thread's own loop is fine

    th = threading.Thread(target=worker)
    th.start()
    th.join()
    assert len(errors) == 3 and len(ran) == 1


def test_errors_carry_codes():
    e = _core.error(_core.ENOSUBSCRIBERS)
    assert isinstance(e, _core.NoSubscribers) and isinstance(e, _core.Error)
    assert e.code == _core.ENOSUBSCRIBERS and e.name == "LAHJA_ENOSUBSCRIBERS"
    assert isinstance(_core.error(-errno.ETIMEDOUT), _core.Timeout)
    assert isinstance(_core.error(-errno.ECANCELED), _core.Cancelled)
    assert isinstance(_core.error(-errno.EAGAIN), _core.WouldBlock)
    assert isinstance(_core.error(ELIFECYCLE), _core.LifecycleError)
    assert type(_core.error(-errno.EPROTO)) is _core.Error
    with pytest.raises(_core.Error) as info:
        _core.Endpoint("bad/name")
    assert info.value.code == -errno.EINVAL


def test_every_function_has_a_docstring():
    for name in dir(_core):
        obj = getattr(_core, name)
        if callable(obj) and not name.startswith("_"):
            assert obj.__doc__, name
            for attr, member in vars(obj).items() if isinstance(obj, type) else ():
                if not attr.startswith("_") and callable(member):
                    assert member.__doc__, "%s.%s" % (name, attr)


# --------------------------------------------------------- in one process


def test_serve_connect_and_queries(pair):
    a, b = pair
    assert a.is_serving and a.is_running and not b.is_serving
    assert b.path is None and a.path.endswith("/a.ipc")
    assert a.name == "a"
    assert b.is_connected_to("a") and b.is_connected_to("b")
    assert [p[0] for p in b.peers()] == ["a"]
    info = b.peer_info("a")
    assert info["state"] == "connected" and info["pid"] == os.getpid()
    assert b.stats()["peers"] == 1
    assert b.peer_stats("a")["connected"]
    with pytest.raises(_core.ConnectionAttemptRejected):
        b.connect([("a", a.path)], 1, lambda s: None)


def test_broadcast_both_ways(pair):
    a, b = pair
    got_a, got_b = [], []
    a.subscribe("ToA", lambda e: got_a.append((e.type, e.origin, e.payload)))
    b.subscribe("ToB", lambda e: got_b.append((e.type, e.origin, bytes(e))))
    assert wait_ok(b.wait_until_endpoint_subscribed_to, "a", "ToA", 5) == 0
    assert wait_ok(a.wait_until_endpoint_subscribed_to, "b", "ToB", 5) == 0
    b.broadcast_nowait("ToA", b"from b")
    a.broadcast_nowait("ToB", bytearray(b"from a"))
    assert b.broadcast("ToA", memoryview(b"again")) is None
    pump(lambda: len(got_a) == 2 and got_b)
    assert got_a == [("ToA", "b", b"from b"), ("ToA", "b", b"again")]
    assert got_b == [("ToB", "a", b"from a")]


def test_subscribe_then_unsubscribe(pair):
    a, b = pair
    got = []
    sub = a.subscribe("T", got.append)
    assert sub.active and sub.type == "T" and a.subscribed_types() == ("T",)
    assert wait_ok(b.wait_until_any_endpoint_subscribed_to, "T", 5) == 0
    b.broadcast_nowait("T", b"1")
    pump(lambda: got)
    sub.cancel()
    sub.cancel()  # idempotent
    assert not sub.active and a.subscribed_types() == ()
    pump(lambda: not b.is_endpoint_subscribed_to("a", "T"))
    with pytest.raises(_core.NoSubscribers) as info:
        b.broadcast_nowait("T", b"2")
    assert info.value.code == _core.ENOSUBSCRIBERS
    assert len(got) == 1


def test_subscription_from_origins(pair):
    a, b = pair
    got = []
    a.subscribe("O", got.append, origins=["nobody"])
    a.subscribe("O", lambda e: got.append(e.origin), origins=("b",))
    assert wait_ok(b.wait_until_endpoint_subscribed_to, "a", "O", 5) == 0
    b.broadcast_nowait("O", b"")
    pump(lambda: got)
    assert got == ["b"]


def test_no_subscribers(pair):
    a, b = pair
    with pytest.raises(_core.NoSubscribers):
        b.broadcast_nowait("Nobody", b"x")
    b.broadcast_nowait("Nobody", b"x", require_subscriber=False)
    with pytest.raises(_core.NoSubscribers):
        b.broadcast("Nobody", b"x", callback=lambda s: None)
    status = []
    b.request("Nobody", "Resp", b"", callback=lambda s, e: status.append((s, e)))
    pump(lambda: status)
    assert status == [(_core.ENOSUBSCRIBERS, None)]


def test_request_and_respond(pair):
    a, b = pair

    def answer(req):
        assert req.id != 0 and req.origin == "b"
        a.respond(req, "Resp", req.payload.upper())

    a.subscribe("Req", answer)
    assert wait_ok(b.wait_until_endpoint_subscribed_to, "a", "Req", 5) == 0
    got = []
    op = b.request("Req", "Resp", b"hello", timeout=5,
                   callback=lambda s, e: got.append((s, e)))
    assert isinstance(op, _core.Op) and not op.done
    pump(lambda: got)
    status, ev = got[0]
    assert status == 0 and ev.type == "Resp" and ev.payload == b"hello".upper()
    assert ev.origin == "a" and len(ev) == 5 and bytes(memoryview(ev)) == b"HELLO"
    assert op.done and op.status == 0
    # A response of another type than expected.
    a.subscribe("Req2", lambda r: a.respond(r, "Other", b""))
    assert wait_ok(b.wait_until_endpoint_subscribed_to, "a", "Req2", 5) == 0
    got.clear()
    b.request("Req2", "Resp", b"", callback=lambda s, e: got.append(s))
    pump(lambda: got)
    assert got == [_core.EUNEXPECTEDRESPONSE]


def test_respond_after_the_handler(pair):
    """A request kept by its handler is answered later, outside it."""
    a, b = pair
    requests = []
    a.subscribe("Later", requests.append)
    assert wait_ok(b.wait_until_endpoint_subscribed_to, "a", "Later", 5) == 0
    got = []
    for ep in (b, a):  # from a peer, and from the endpoint itself
        requests.clear()
        ep.request("Later", "LaterResp", ep.name.encode(), timeout=5,
                   callback=lambda s, e: got.append((s, e and e.payload)))
        pump(lambda: requests)
        assert requests[0].origin == ep.name
        a.respond(requests[0], "LaterResp", requests[0].payload + b"!")
        pump(lambda: len(got) == (1 if ep is b else 2))
    assert got == [(0, b"b!"), (0, b"a!")]


def test_request_to_self(pair):
    a, _ = pair
    a.subscribe("Local", lambda r: a.respond(r, "LocalResp", b"me"))
    got = []
    a.request("Local", "LocalResp", b"", callback=lambda s, e: got.append(e.payload))
    pump(lambda: got)
    assert got == [b"me"]


def test_wait_for_and_timeout(pair):
    a, b = pair
    got = []
    a.wait_for("W", 5, lambda s, e: got.append((s, e and e.payload)))
    assert wait_ok(b.wait_until_endpoint_subscribed_to, "a", "W", 5) == 0
    b.broadcast_nowait("W", b"w")
    pump(lambda: got)
    assert got == [(0, b"w")]
    got.clear()
    a.wait_for("W", 0.02, lambda s, e: got.append((s, e)))
    pump(lambda: got)
    assert got == [(-errno.ETIMEDOUT, None)]
    got.clear()
    a.wait_for("W", None, lambda s, e: got.append(e.origin), origins=["b"])
    pump(lambda: b.is_endpoint_subscribed_to("a", "W"))
    b.broadcast_nowait("W", b"")
    pump(lambda: got)
    assert got == ["b"]


def test_wait_until_family(base_dir):
    a = _core.Endpoint("wa", linger_ms=200)
    b = _core.Endpoint("wb", linger_ms=200)
    a.start(_core.path_of("wa", base_dir))
    b.start()
    changes, connected = [], []
    a.wait_until_connections_change(5, changes.append)
    a.wait_until_connected_to("wb", 5, connected.append)
    assert wait_ok(b.connect, [("wa", a.path)], 5) == 0
    pump(lambda: changes and connected)
    assert changes == [0] and connected == [0]
    subs_changed, any_sub, all_sub = [], [], []
    b.wait_until_endpoint_subscriptions_change(5, subs_changed.append)
    b.wait_until_any_endpoint_subscribed_to("S", 5, any_sub.append)
    b.wait_until_all_endpoints_subscribed_to("S", False, 5, all_sub.append)
    a.subscribe("S", lambda e: None)
    pump(lambda: subs_changed and any_sub and all_sub)
    assert subs_changed == [0] and any_sub == [0] and all_sub == [0]
    assert b.are_all_endpoints_subscribed_to("S", False)
    assert not b.are_all_endpoints_subscribed_to("S", True)
    assert b.is_any_endpoint_subscribed_to("S")
    b.broadcast_nowait("S", b"x" * 1000)
    assert wait_ok(b.wait_until_delivered, 5) == 0
    assert b.stats()["confirmed"] >= 1
    assert stop_all(a, b) == [0, 0]


def test_op_cancelled(pair):
    a, _ = pair
    got = []
    op = a.wait_for("Never", None, lambda s, e: got.append((s, e)))
    op.cancel()
    pump(lambda: got)
    assert got == [(-errno.ECANCELED, None)]
    assert op.done and op.status == -errno.ECANCELED
    op.cancel()  # after the callback: nothing
    waits = []
    op = a.wait_until_connected_to("nobody", 10, waits.append)
    op.cancel()
    pump(lambda: waits)
    assert waits == [-errno.ECANCELED]


def test_handler_exception_is_reported_and_dispatch_goes_on(base_dir):
    errors = []
    a = _core.Endpoint("ea", on_error=errors.append)
    a.start()
    got = []

    def bad(e):
        raise ValueError("in handler " + e.type)

    a.subscribe("E", bad)
    a.subscribe("E", got.append)
    a.broadcast_nowait("E", b"1")
    a.broadcast_nowait("E", b"2")
    pump(lambda: len(got) == 2)
    assert [str(e) for e in errors] == ["in handler E", "in handler E"]
    assert errors[0].__traceback__ is not None
    # A callback's exception goes the same way.
    a.wait_for("Never", 0.01, lambda s, e: 1 / 0)
    pump(lambda: len(errors) == 3)
    assert isinstance(errors[2], ZeroDivisionError)
    stop_all(a)


def test_handler_exception_without_on_error_goes_to_unraisablehook(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    a = _core.Endpoint("ua")
    a.start()
    a.subscribe("U", lambda e: {}["missing"])
    got = []
    a.subscribe("U", got.append)
    a.broadcast_nowait("U", b"")
    pump(lambda: got)
    assert len(seen) == 1 and seen[0].exc_type is KeyError
    stop_all(a)


def test_stop_while_calls_are_under_way(pair):
    a, b = pair
    order = []
    a.subscribe("Slow", lambda e: None)  # never answers
    assert wait_ok(b.wait_until_endpoint_subscribed_to, "a", "Slow", 5) == 0
    b.wait_for("Never", None, lambda s, e: order.append(("wait_for", s)))
    b.request("Slow", "SlowResp", b"", callback=lambda s, e: order.append(("request", s)))
    b.wait_until_connected_to("nobody", None, lambda s: order.append(("connected_to", s)))
    b.wait_until_delivered(None, lambda s: order.append(("delivered", s)))
    b.stop(lambda s: order.append(("stop", s)))
    pump(lambda: order and order[-1][0] == "stop")
    assert order[-1] == ("stop", 0)
    by_name = dict(order)
    assert by_name["wait_for"] == ELIFECYCLE
    assert by_name["request"] == ELIFECYCLE
    assert by_name["connected_to"] == ELIFECYCLE
    assert by_name["delivered"] in (0, ELIFECYCLE)
    with pytest.raises(_core.LifecycleError):
        b.broadcast_nowait("Slow", b"")
    with pytest.raises(_core.LifecycleError):
        b.wait_for("X", 1, lambda s, e: None)
    with pytest.raises(_core.LifecycleError):
        b.stop(lambda s: None)


def test_options_and_reentrancy():
    errors = []
    a = _core.Endpoint("ra", high_water=None, linger_ms=50, max_payload=1024,
                       on_error=errors.append)
    with pytest.raises(OverflowError):
        _core.Endpoint("rb", linger_ms=2**40)
    with pytest.raises(TypeError):
        _core.Endpoint("rb", bogus=1)
    a.start()
    # Op callbacks come from Loop.run() (a handler of an event broadcast
    # to the endpoint itself is called from within the broadcast).
    a.wait_for("R", 0.001, lambda s, e: _core.loop().run())
    a.subscribe("R", lambda e: None)
    with pytest.raises(_core.Error) as info:
        a.broadcast_nowait("R", b"x" * 2048)
    assert info.value.code == -errno.EMSGSIZE
    pump(lambda: errors)
    assert isinstance(errors[0], RuntimeError)  # Loop.run() inside Loop.run()
    # An Op nobody holds still gets its callback.
    got = []
    a.wait_for("Never", 0.01, lambda s, e: got.append(s))
    gc.collect()
    pump(lambda: got)
    assert got == [-errno.ETIMEDOUT]
    stop_all(a)


def test_free(base_dir):
    a = _core.Endpoint("fa")
    with pytest.raises(_core.LifecycleError):
        a.stop(lambda s: None)
    a.start()
    with pytest.raises(_core.Error) as info:
        a.free()
    assert info.value.code == -errno.EBUSY
    sub = a.subscribe("F", lambda e: None)
    stop_all(a)
    assert not sub.active  # freed with the endpoint
    sub.cancel()
    with pytest.raises(_core.LifecycleError):
        a.peers()
    assert not a.is_running and a.path is None


def test_dealloc_of_endpoints_and_events(base_dir):
    loop = _core.loop()
    loop.run()
    base = fd_count()
    kept = []
    for i in range(5):
        a = _core.Endpoint("da%d" % i, linger_ms=100)
        b = _core.Endpoint("db%d" % i, linger_ms=100)
        a.start(_core.path_of(a.name, base_dir))
        b.start()
        assert wait_ok(b.connect, [(a.name, a.path)], 5) == 0
        got = []
        # A cycle: a -> subscription -> handler -> a.
        a.subscribe("D", lambda e, a=a: got.append(e) or a.name)
        assert wait_ok(b.wait_until_endpoint_subscribed_to, a.name, "D", 5) == 0
        b.broadcast_nowait("D", b"payload %d" % i)
        pump(lambda: got)
        view = memoryview(got[0])
        kept.append((view, weakref.ref(a), weakref.ref(b)))
        del a, b, got
    gc.collect()
    for view, wa, wb in kept:
        assert wa() is None and wb() is None
        assert bytes(view).startswith(b"payload ")
    del view
    kept.clear()
    # The dropped endpoints were running: they stop, then free themselves,
    # closing every socket, as the loop runs.
    pump(lambda: fd_count() <= base)
    assert not os.listdir(base_dir)


def test_event_outlives_its_handler(pair):
    a, b = pair
    kept = []
    views = []

    def handler(e):
        kept.append(e)
        views.append(memoryview(e))

    a.subscribe("K", handler)
    a.subscribe("K", lambda e: None)  # an Event nobody keeps
    assert wait_ok(b.wait_until_endpoint_subscribed_to, "a", "K", 5) == 0
    for i in range(50):
        b.broadcast_nowait("K", b"%d" % i * 100)
    pump(lambda: len(kept) == 50)
    for i, (e, v) in enumerate(zip(kept, views)):
        assert e.payload == b"%d" % i * 100 == bytes(v)
        assert e.payload is e.payload  # made once
        assert e.response_type is None and e.id == 0


def test_broadcast_waits_for_a_slow_peer(base_dir):
    """A peer that does not read (stopped with SIGSTOP) makes
    broadcast_nowait raise WouldBlock, and broadcast wait for room."""
    a = _core.Endpoint("sa", high_water=4096, hard_limit=65536, linger_ms=100)
    a.start(_core.path_of("sa", base_dir))
    child = subprocess.Popen([sys.executable, "-c", CHILD, a.path, "slow"],
                             env=child_env())
    try:
        assert wait_ok(a.wait_until_endpoint_subscribed_to, "child", "Big", 20) == 0
        os.kill(child.pid, signal.SIGSTOP)
        blob = os.urandom(16384)  # not compressible: it fills the queue
        with pytest.raises(_core.WouldBlock):
            for _ in range(1000):
                a.broadcast_nowait("Big", blob)
        status = []
        op = a.broadcast("Big", blob, timeout=20, callback=status.append)
        assert isinstance(op, _core.Op)
        os.kill(child.pid, signal.SIGCONT)
        pump(lambda: status, 20)
        assert status == [0]
        a.broadcast_nowait("Quit", b"")
        # Its exit is no event of our loop, its disconnection is.
        pump(lambda: not a.is_connected_to("child"), 20)
        assert child.wait(20) == 0
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGCONT)
            child.kill()
        child.wait()
    stop_all(a)


# -------------------------------------------------------- across processes

CHILD = r"""
import select, sys, time
from lahja import _core

loop = _core.loop()

def pump(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while not cond():
        wait = loop.run()
        if cond():
            return
        left = end - time.monotonic()
        if left <= 0:
            sys.exit("child: timed out")
        select.select([loop.fd], [], [], left if wait is None else min(wait, left))

path = sys.argv[1]
ep = _core.Endpoint("child", linger_ms=500)
ep.start()
done = []
ep.connect([("sa" if sys.argv[2] == "slow" else "parent", path)], 10, done.append)
pump(lambda: done)
assert done == [0], done
quit = []
ep.subscribe("Quit", quit.append)
ep.subscribe("Big", lambda e: None)
ep.subscribe("Ask", lambda e: ep.respond(e, "Answer", e.payload[::-1]))
ep.subscribe("Ping", lambda e: ep.broadcast_nowait("Pong", e.payload + b"-pong"))
pump(lambda: quit, 60)
st = []
ep.stop(st.append)
pump(lambda: st)
sys.exit(0 if st == [0] else 3)
"""


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def test_across_processes(base_dir):
    p = _core.Endpoint("parent", linger_ms=500)
    p.start(_core.path_of("parent", base_dir))
    child = subprocess.Popen([sys.executable, "-c", CHILD, p.path, "normal"],
                             env=child_env())
    try:
        assert wait_ok(p.wait_until_connected_to, "child", 20) == 0
        assert wait_ok(p.wait_until_endpoint_subscribed_to, "child", "Quit", 20) == 0
        assert p.peer_info("child")["pid"] == child.pid
        pongs = []
        p.subscribe("Pong", pongs.append)
        p.broadcast_nowait("Ping", b"ping")
        pump(lambda: pongs, 20)
        assert pongs[0].payload == b"ping-pong" and pongs[0].origin == "child"
        got = []
        p.request("Ask", "Answer", b"abc", timeout=20,
                  callback=lambda s, e: got.append((s, e and e.payload)))
        pump(lambda: got, 20)
        assert got == [(0, b"cba")]
        gone = []
        p.wait_until_connections_change(20, gone.append)
        p.broadcast_nowait("Quit", b"")
        pump(lambda: gone, 20)
        assert gone == [0]
        assert child.wait(20) == 0
        assert not p.is_connected_to("child")
    finally:
        child.kill()
        child.wait()
    stop_all(p)


def _forked(parent_ep, path, results):
    """In a child made by fork: the parent's endpoint is refused, a new
    loop and endpoint work."""
    try:
        parent_ep.peers()
        results.put("parent's endpoint usable in the child")
        return
    except RuntimeError:
        pass
    loop = _core.loop()
    if loop.pid != os.getpid():
        results.put("inherited loop")
        return
    ep = _core.Endpoint("forked", linger_ms=500)
    ep.start()
    if wait_ok(ep.connect, [("fparent", path)], 10) != 0:
        results.put("connect failed: " + ep.last_error)
        return
    if wait_ok(ep.wait_until_endpoint_subscribed_to, "fparent", "FromChild", 10) != 0:
        results.put("no subscription")
        return
    ep.broadcast_nowait("FromChild", str(os.getpid()).encode())
    wait_ok(ep.wait_until_delivered, 10)
    stop_all(ep)
    results.put("ok")


def test_use_after_fork(base_dir):
    p = _core.Endpoint("fparent", linger_ms=200)
    p.start(_core.path_of("fparent", base_dir))
    got = []
    p.subscribe("FromChild", got.append)
    ctx = multiprocessing.get_context("fork")
    results = ctx.SimpleQueue()
    proc = ctx.Process(target=_forked, args=(p, p.path, results))
    proc.start()
    try:
        # The child waits for our receipts: the loop runs until it has
        # gone (its exit is no event of the loop, its disconnection is).
        pump(lambda: got and not p.is_connected_to("forked"), 30)
        proc.join(30)
        assert not results.empty(), "the child reported nothing"
        assert results.get() == "ok"
        assert proc.exitcode == 0
        assert got and got[0].origin == "forked" and int(got[0].payload) == proc.pid
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    stop_all(p)


def test_log_callable(base_dir):
    lines = []
    a = _core.Endpoint("la", log=lambda level, ep, msg: lines.append((level, ep, msg)))
    a.start()
    status = []
    a.connect([("ghost", os.path.join(base_dir, "ghost.ipc"))], 0.2, status.append)
    pump(lambda: status)
    assert status[0] != 0
    assert "ghost" in a.last_error
    stop_all(a)
    for level, ep, msg in lines:
        assert ep == "la" and isinstance(msg, str)
