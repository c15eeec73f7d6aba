"""
AsyncioEndpoint against real endpoints in one process (each endpoint its
own liblahja endpoint, connected over Unix sockets): lifecycle, routing,
the consuming calls, requests, awareness and errors.  Every wait has a
deadline; none stands in for synchronization.
"""
import asyncio
import logging
import pickle

import pytest
import pytest_asyncio

from lahja import AsyncioEndpoint, BroadcastConfig, ConnectionConfig
from lahja.exceptions import (
    BindError,
    ConnectionAttemptRejected,
    NoSubscribers,
    UnexpectedResponse,
)

from events import Answer, Ping, Pong, Question, SubPing, Wrong

T = 10  # seconds: a deadline, never a pause


async def until(cond, what="condition"):
    """Until cond() holds, yielding to the loop; at most T seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + T
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


@pytest_asyncio.fixture
async def pair(bus_dir):
    """A server and a client connected to it."""
    async with AsyncioEndpoint.serve(ConnectionConfig.from_name("server", bus_dir)) as server:
        async with AsyncioEndpoint("client").run() as client:
            await asyncio.wait_for(
                client.connect_to_endpoints(ConnectionConfig.from_name("server", bus_dir)), T)
            await asyncio.wait_for(server.wait_until_connected_to("client"), T)
            yield server, client


@pytest.mark.asyncio
async def test_run_and_serve_report_their_state(bus_dir):
    ep = AsyncioEndpoint("solo")
    assert ep.is_running is False and ep.is_serving is False
    async with ep.run():
        assert ep.is_running is True and ep.is_serving is False
    assert ep.is_running is False
    # It runs again, as lahja's asyncio endpoint does.
    async with ep.run():
        assert ep.is_running is True
    cfg = ConnectionConfig.from_name("srv", bus_dir)
    with pytest.raises(ValueError, match="body"):
        async with AsyncioEndpoint.serve(cfg) as srv:
            assert srv.is_serving is True and cfg.path.exists()
            raise ValueError("body")
    assert srv.is_serving is False and srv.is_running is False
    assert not cfg.path.exists()


@pytest.mark.asyncio
async def test_running_twice_is_refused():
    async with AsyncioEndpoint("twice").run() as ep:
        with pytest.raises(RuntimeError):
            async with ep.run():
                pass


@pytest.mark.asyncio
async def test_endpoint_cannot_be_pickled():
    with pytest.raises(Exception):
        pickle.dumps(AsyncioEndpoint("p"))


@pytest.mark.asyncio
async def test_connect_errors(pair, bus_dir):
    server, client = pair
    with pytest.raises(ConnectionAttemptRejected):
        await client.connect_to_endpoints(ConnectionConfig.from_name("server", bus_dir))
    with pytest.raises(ConnectionAttemptRejected):
        await server.connect_to_endpoints(ConnectionConfig.from_name("server", bus_dir))
    assert server.is_connected_to("client") and client.is_connected_to("server")
    assert client.is_connected_to("client")  # itself, as lahja


@pytest.mark.asyncio
async def test_broadcast_both_ways_and_exact_types(pair):
    server, client = pair
    got = []
    client.subscribe(Ping, got.append)
    await asyncio.wait_for(server.wait_until_endpoint_subscribed_to("client", Ping), T)
    await server.broadcast(SubPing(0), BroadcastConfig(require_subscriber=False))
    for i in range(5):
        await server.broadcast(Ping(i))
    await until(lambda: len(got) == 5, "5 pings")
    assert [e.n for e in got] == list(range(5))
    assert all(type(e) is Ping and e.get_origin() == "server" for e in got)
    back = []
    server.subscribe(Pong, back.append)
    await asyncio.wait_for(client.wait_until_any_endpoint_subscribed_to(Pong), T)
    await client.broadcast(Pong(7))
    await until(lambda: back, "a pong")
    assert back[0].n == 7 and back[0].get_origin() == "client"


@pytest.mark.asyncio
async def test_no_subscribers_and_bind(pair):
    server, client = pair
    with pytest.raises(NoSubscribers):
        await server.broadcast(Ping())
    with pytest.raises(NoSubscribers):
        server.broadcast_nowait(Ping())
    with pytest.raises(NoSubscribers):
        await server.request(Question())
    await server.broadcast(Ping(), BroadcastConfig(require_subscriber=False))
    ev = Ping()
    client.subscribe(Ping, lambda e: None)
    await asyncio.wait_for(server.wait_until_any_endpoint_subscribed_to(Ping), T)
    await server.broadcast(ev)
    with pytest.raises(BindError):
        await server.broadcast(ev)


@pytest.mark.asyncio
async def test_subscription_is_announced_and_withdrawn(pair):
    server, client = pair
    sub = server.subscribe(Ping, lambda e: None)
    assert server.is_any_endpoint_subscribed_to(Ping)
    assert Ping in server.get_subscribed_events()
    await asyncio.wait_for(client.wait_until_endpoint_subscribed_to("server", Ping), T)
    assert client.is_endpoint_subscribed_to("server", Ping)
    assert not client.is_endpoint_subscribed_to("server", Pong)
    remote = [r for r in client._connections if r.name == "server"]
    assert len(remote) == 1 and Ping in remote[0].get_subscribed_events()
    sub.unsubscribe()
    assert Ping not in server.get_subscribed_events()
    await until(lambda: not client.is_any_endpoint_subscribed_to(Ping), "the withdrawal")
    names = dict(client.get_connected_endpoints_and_subscriptions())
    assert set(names) == {"client", "server"}


@pytest.mark.asyncio
async def test_stream_num_events_break_and_cleanup(pair):
    server, client = pair
    got = []

    async def consume():
        async for ev in client.stream(Ping, num_events=3):
            got.append(ev.n)

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(server.wait_until_endpoint_subscribed_to("client", Ping), T)
    for i in range(3):
        await server.broadcast(Ping(i))
    await asyncio.wait_for(task, T)
    assert got == [0, 1, 2]
    await until(lambda: not server.is_endpoint_subscribed_to("client", Ping), "unsubscribed")

    # Broken out of: unsubscribed too.
    async def consume_until_break():
        async for ev in client.stream(Ping):
            if ev.n == 1:
                break

    task = asyncio.ensure_future(consume_until_break())
    await asyncio.wait_for(server.wait_until_endpoint_subscribed_to("client", Ping), T)
    await server.broadcast(Ping(0))
    await server.broadcast(Ping(1))
    await asyncio.wait_for(task, T)
    await until(lambda: not server.is_endpoint_subscribed_to("client", Ping), "unsubscribed")

    # Cancelled while waiting: unsubscribed.
    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(server.wait_until_endpoint_subscribed_to("client", Ping), T)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: not server.is_endpoint_subscribed_to("client", Ping), "unsubscribed")


@pytest.mark.asyncio
async def test_stream_keeps_every_event_of_a_burst(pair):
    """More events than a stream holds: the reading pauses, none is lost."""
    server, client = pair
    n = 5000
    got = []

    async def consume():
        async for ev in client.stream(Ping, num_events=n):
            got.append(ev.n)
            if len(got) % 100 == 0:
                await asyncio.sleep(0.001)  # a slow consumer

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(server.wait_until_endpoint_subscribed_to("client", Ping), T)
    for i in range(n):
        await server.broadcast(Ping(i))
    await asyncio.wait_for(task, 60)
    assert got == list(range(n))


@pytest.mark.asyncio
async def test_wait_for_and_its_cancellation(pair):
    server, client = pair
    waiter = asyncio.ensure_future(client.wait_for(Pong))
    await asyncio.wait_for(server.wait_until_endpoint_subscribed_to("client", Pong), T)
    await server.broadcast(Pong(3))
    assert (await asyncio.wait_for(waiter, T)).n == 3
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.wait_for(Pong), 0.05)
    await until(lambda: not server.is_endpoint_subscribed_to("client", Pong), "unsubscribed")


@pytest.mark.asyncio
async def test_request_response(pair):
    server, client = pair

    async def answer():
        async for q in server.stream(Question):
            await server.broadcast(Answer(q.text.upper()), q.broadcast_config())

    task = asyncio.ensure_future(answer())
    await asyncio.wait_for(client.wait_until_any_endpoint_subscribed_to(Question), T)
    for word in ("a", "bc", "def"):
        resp = await asyncio.wait_for(client.request(Question(word)), T)
        assert isinstance(resp, Answer) and resp.text == word.upper()
        assert resp.get_origin() == "server"
    # Addressed to one endpoint.
    resp = await asyncio.wait_for(client.request(Question("x"), BroadcastConfig("server")), T)
    assert resp.text == "X"
    task.cancel()


@pytest.mark.asyncio
async def test_unexpected_response(pair):
    server, client = pair

    async def answer_wrong():
        q = await server.wait_for(Question)
        await server.broadcast(Wrong(), q.broadcast_config())

    task = asyncio.ensure_future(answer_wrong())
    await asyncio.wait_for(client.wait_until_any_endpoint_subscribed_to(Question), T)
    with pytest.raises(UnexpectedResponse):
        await asyncio.wait_for(client.request(Question()), T)
    await task


@pytest.mark.asyncio
async def test_cancelled_request_is_withdrawn(pair):
    server, client = pair
    server.subscribe(Question, lambda q: None)  # never answers
    await asyncio.wait_for(client.wait_until_any_endpoint_subscribed_to(Question), T)
    q = Question()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.request(q), 0.01)
    assert q._id not in client._futures


@pytest.mark.asyncio
async def test_request_to_a_peer_that_goes_fails(bus_dir):
    cfg = ConnectionConfig.from_name("leaving", bus_dir)
    async with AsyncioEndpoint("asker").run() as asker:
        async with AsyncioEndpoint.serve(cfg) as leaving:
            leaving.subscribe(Question, lambda q: None)
            await asker.connect_to_endpoints(cfg)
            await asyncio.wait_for(asker.wait_until_any_endpoint_subscribed_to(Question), T)
            pending = asyncio.ensure_future(asker.request(Question()))
            await asyncio.sleep(0)
        from lahja.exceptions import RemoteDisconnected

        with pytest.raises(RemoteDisconnected):
            await asyncio.wait_for(pending, T)


@pytest.mark.asyncio
async def test_to_itself(bus_dir):
    async with AsyncioEndpoint("me").run() as me:
        got = []
        me.subscribe(Ping, got.append)
        await me.broadcast(Ping(1))
        await until(lambda: got, "its own event")

        async def answer():
            q = await me.wait_for(Question)
            await me.broadcast(Answer("self"), q.broadcast_config())

        task = asyncio.ensure_future(answer())
        await until(lambda: me.is_any_endpoint_subscribed_to(Question), "a local subscriber")
        assert (await asyncio.wait_for(me.request(Question()), T)).text == "self"
        await task
        assert me.get_connected_endpoints_and_subscriptions()[0][0] == "me"


@pytest.mark.asyncio
async def test_filter_endpoint_and_internal(bus_dir):
    cfg = ConnectionConfig.from_name("hub", bus_dir)
    async with AsyncioEndpoint.serve(cfg) as hub, \
            AsyncioEndpoint("a").run() as a, AsyncioEndpoint("b").run() as b:
        await a.connect_to_endpoints(cfg)
        await b.connect_to_endpoints(cfg)
        got_a, got_b, got_hub = [], [], []
        a.subscribe(Ping, got_a.append)
        b.subscribe(Ping, got_b.append)
        hub.subscribe(Ping, got_hub.append)
        await asyncio.wait_for(hub.wait_until_all_endpoints_subscribed_to(Ping), T)
        await hub.broadcast(Ping(1), BroadcastConfig(filter_endpoint="a"))
        await hub.broadcast(Ping(2), BroadcastConfig(internal=True))
        await hub.broadcast(Ping(3))
        await until(lambda: len(got_a) == 2 and len(got_b) == 1 and len(got_hub) == 2,
                    "every delivery")
        assert [e.n for e in got_a] == [1, 3]  # in order; b never saw 1
        assert [e.n for e in got_b] == [3]
        assert [e.n for e in got_hub] == [2, 3]


@pytest.mark.asyncio
async def test_handler_errors_are_logged_and_dispatch_goes_on(pair, caplog):
    server, client = pair
    got = []

    def bad(ev):
        raise RuntimeError("boom")

    async def bad_async(ev):
        raise RuntimeError("boom")

    client.subscribe(Ping, bad)
    client.subscribe(Ping, bad_async)
    client.subscribe(Ping, got.append)
    await asyncio.wait_for(server.wait_until_any_endpoint_subscribed_to(Ping), T)
    with caplog.at_level(logging.DEBUG, logger="lahja"):
        await server.broadcast(Ping(1))
        await server.broadcast(Ping(2))
        await until(lambda: len(got) == 2, "both events")
        await asyncio.sleep(0)
    assert "Error in subscription handler" in caplog.text


@pytest.mark.asyncio
async def test_wait_until_connections_change(bus_dir):
    cfg = ConnectionConfig.from_name("target", bus_dir)
    async with AsyncioEndpoint.serve(cfg) as target, AsyncioEndpoint("c").run() as c:
        change = asyncio.ensure_future(c.wait_until_connections_change())
        connecting = asyncio.ensure_future(c.connect_to_endpoints(cfg))
        assert not c.is_connected_to("target")
        await asyncio.wait_for(change, T)
        await asyncio.wait_for(connecting, T)
        assert c.is_connected_to("target")
        assert target.is_connected_to("c")


@pytest.mark.asyncio
async def test_local_subscription_changes_wake_waiters():
    async with AsyncioEndpoint("lone").run() as ep:
        change = asyncio.ensure_future(ep.wait_until_endpoint_subscriptions_change())
        await asyncio.sleep(0)
        ep.subscribe(Ping, lambda e: None)
        await asyncio.wait_for(change, T)
        await asyncio.wait_for(ep.wait_until_all_endpoints_subscribed_to(Ping), T)


def test_lahja_type_is_checked_when_the_class_is_made():
    from lahja import RawEvent

    for bad in ("", "x*", "y" * 256, 5):
        with pytest.raises(TypeError):
            type("Bad", (RawEvent,), {"lahja_type": bad})
    ok = type("Ok", (RawEvent,), {"lahja_type": "a.b"})
    assert ok.event_type_name() == "a.b"
    sub = type("Sub", (ok,), {})
    assert sub.event_type_name().endswith(".Sub")  # not inherited: a type of its own


@pytest.mark.asyncio
async def test_a_busy_broadcaster_still_delivers(pair):
    """Broadcasts wait for a busy loop to batch them (kick_lazy), but only
    for a bounded time: a task that broadcasts without ever letting the
    loop idle still gets its events to the peer as it goes."""
    server, client = pair
    got = []
    client.subscribe(Ping, got.append)
    await asyncio.wait_for(server.wait_until_endpoint_subscribed_to("client", Ping), T)
    loop = asyncio.get_running_loop()
    end = loop.time() + T
    i = 0
    while len(got) < 100:
        assert loop.time() < end, f"only {len(got)} of {i} events arrived"
        await server.broadcast(Ping(i))
        i += 1
        await asyncio.sleep(0)
    assert [e.n for e in got] == list(range(len(got)))
