"""
TrioEndpoint against real endpoints in one process: lifecycle, routing,
streams, requests and cancellation through trio's cancel scopes.  Each
test is one trio.run; every wait has a deadline (trio.fail_after).
"""
import pytest
import trio

from lahja import BroadcastConfig, ConnectionConfig
from lahja.exceptions import ConnectionAttemptRejected, LifecycleError, NoSubscribers
from lahja.trio.endpoint import TrioEndpoint

from events import Answer, Ping, Pong, Question, SubPing

T = 10


def run(fn, *args):
    trio.run(fn, *args)


async def until(cond, what="condition"):
    with trio.fail_after(T):
        while not cond():
            await trio.sleep(0.001)


def test_runs_once():
    async def main():
        ep = TrioEndpoint("once")
        assert ep.is_running is False
        async with ep.run():
            assert ep.is_running is True
            with pytest.raises(LifecycleError):
                async with ep.run():
                    pass
        assert ep.is_running is False
        with pytest.raises(LifecycleError):
            async with ep.run():
                pass

    run(main)


def test_serve_connect_broadcast_both_ways(bus_dir):
    async def main():
        cfg = ConnectionConfig.from_name("tserver", bus_dir)
        async with TrioEndpoint.serve(cfg) as server, TrioEndpoint("tclient").run() as client:
            assert server.is_serving is True and client.is_serving is False
            with trio.fail_after(T):
                await client.connect_to_endpoints(cfg)
                await server.wait_until_connected_to("tclient")
            with pytest.raises(ConnectionAttemptRejected):
                await client.connect_to_endpoints(cfg)
            got, back = [], []
            client.subscribe(Ping, got.append)
            server.subscribe(Pong, back.append)
            with trio.fail_after(T):
                await server.wait_until_endpoint_subscribed_to("tclient", Ping)
                await client.wait_until_endpoint_subscribed_to("tserver", Pong)
            await server.broadcast(SubPing(9), BroadcastConfig(require_subscriber=False))
            for i in range(10):
                await server.broadcast(Ping(i))
            await client.broadcast(Pong(1))
            await until(lambda: len(got) == 10 and back)
            assert [e.n for e in got] == list(range(10))
            assert back[0].get_origin() == "tclient"
            with pytest.raises(NoSubscribers):
                await client.broadcast(Answer("nobody"))
        assert not cfg.path.exists()

    run(main)


def test_stream_and_wait_for(bus_dir):
    async def main():
        cfg = ConnectionConfig.from_name("s", bus_dir)
        async with TrioEndpoint.serve(cfg) as server, TrioEndpoint("c").run() as client:
            await client.connect_to_endpoints(cfg)
            got = []

            async def consume():
                async for ev in client.stream(Ping, num_events=4):
                    got.append(ev.n)

            async with trio.open_nursery() as n:
                n.start_soon(consume)
                with trio.fail_after(T):
                    await server.wait_until_endpoint_subscribed_to("c", Ping)
                for i in range(4):
                    await server.broadcast(Ping(i))
            assert got == [0, 1, 2, 3]
            await until(lambda: not server.is_endpoint_subscribed_to("c", Ping))

            # num_events=0 yields one event, as lahja's trio endpoint.
            async def one():
                got.clear()
                async for ev in client.stream(Pong, num_events=0):
                    got.append(ev.n)

            async with trio.open_nursery() as n:
                n.start_soon(one)
                with trio.fail_after(T):
                    await server.wait_until_endpoint_subscribed_to("c", Pong)
                await server.broadcast(Pong(5))
                await server.broadcast(Pong(6), BroadcastConfig(require_subscriber=False))
            assert got == [5]

            # wait_for under a cancel scope: withdrawn when it expires.
            with trio.move_on_after(0.05):
                await client.wait_for(Pong)
            await until(lambda: not server.is_endpoint_subscribed_to("c", Pong))

    run(main)


def test_request_response_and_cancellation(bus_dir):
    async def main():
        cfg = ConnectionConfig.from_name("r", bus_dir)
        async with TrioEndpoint.serve(cfg) as server, TrioEndpoint("asker").run() as client:
            await client.connect_to_endpoints(cfg)

            async def answer():
                async for q in server.stream(Question):
                    if q.text != "never":
                        await server.broadcast(Answer(q.text * 2), q.broadcast_config())

            async with trio.open_nursery() as n:
                n.start_soon(answer)
                with trio.fail_after(T):
                    await client.wait_until_any_endpoint_subscribed_to(Question)
                    for word in ("a", "b"):
                        assert (await client.request(Question(word))).text == word * 2
                    resp = await client.request(Question("c"), BroadcastConfig("r"))
                    assert resp.text == "cc"
                q = Question("never")
                with trio.move_on_after(0.05):
                    await client.request(q)
                assert q._id not in client._futures
                n.cancel_scope.cancel()

    run(main)


def test_async_handler_runs_in_the_endpoint_nursery(bus_dir):
    async def main():
        async with TrioEndpoint("h").run() as ep:
            seen = trio.Event()

            async def handler(ev):
                await trio.sleep(0)
                seen.set()

            ep.subscribe(Ping, handler)
            await ep.broadcast(Ping())
            with trio.fail_after(T):
                await seen.wait()

    run(main)


def test_a_busy_broadcaster_still_delivers(bus_dir):
    async def main():
        cfg = ConnectionConfig.from_name("busy", bus_dir)
        async with TrioEndpoint.serve(cfg) as server, TrioEndpoint("rx").run() as client:
            await client.connect_to_endpoints(cfg)
            got = []
            client.subscribe(Ping, got.append)
            with trio.fail_after(T):
                await server.wait_until_endpoint_subscribed_to("rx", Ping)
                i = 0
                while len(got) < 100:
                    await server.broadcast(Ping(i))
                    i += 1
                    await trio.sleep(0)
            assert [e.n for e in got] == list(range(len(got)))

    run(main)
