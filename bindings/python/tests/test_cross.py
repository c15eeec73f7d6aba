"""
One bus, several languages and frameworks, each endpoint a process of
its own: an asyncio endpoint and a trio endpoint exchanging events and
requests both ways, and Python endpoints with C ones (the `lahja` tool,
a liblahja program) — broadcast both ways, request both ways, and each
side seeing the other's subscriptions.
"""
import asyncio
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from lahja import AsyncioEndpoint, ConnectionConfig

from events import Ping, Pong, Question, RawStatus, StatusReply, Tick

T = 10
HERE = pathlib.Path(__file__).parent


def child(code: str, *args: str) -> subprocess.Popen:
    """A Python process running `code` (the tests' events importable)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


TRIO_PEER = """
    import sys, trio
    from lahja import ConnectionConfig
    from lahja.trio.endpoint import TrioEndpoint
    from events import Answer, Ping, Pong, Question

    async def main(path):
        async with TrioEndpoint.serve(ConnectionConfig("trio-peer", path)) as ep:
            async def answer():
                async for q in ep.stream(Question, num_events=3):
                    await ep.broadcast(Answer("trio:" + q.text), q.broadcast_config())
            async with trio.open_nursery() as n:
                n.start_soon(answer)
                got = []
                async for ev in ep.stream(Ping, num_events=20):
                    got.append(ev.n)
                await ep.wait_until_endpoint_subscribed_to("asyncio-peer", Pong)
                for i in range(20):
                    await ep.broadcast(Pong(i))
                print("trio got", got, flush=True)
                await ep.wait_until_connections_change()  # the other leaves

    trio.run(main, sys.argv[1])
"""


@pytest.mark.asyncio
async def test_asyncio_and_trio_processes_on_one_bus(bus_dir):
    path = bus_dir / "trio-peer.ipc"
    proc = child(TRIO_PEER, str(path))
    try:
        async with AsyncioEndpoint("asyncio-peer").run() as ep:
            for _ in range(T * 100):
                if path.exists():
                    break
                await asyncio.sleep(0.01)
            await ep.connect_to_endpoints(ConnectionConfig("trio-peer", path))
            await asyncio.wait_for(ep.wait_until_endpoint_subscribed_to("trio-peer", Ping), T)
            pongs = []
            ep.subscribe(Pong, lambda e: pongs.append(e.n))
            for i in range(20):
                await ep.broadcast(Ping(i))
            for word in ("x", "y", "z"):
                resp = await asyncio.wait_for(ep.request(Question(word)), T)
                assert resp.text == "trio:" + word
            for _ in range(T * 100):
                if len(pongs) == 20:
                    break
                await asyncio.sleep(0.01)
            assert pongs == list(range(20))
    finally:
        out = finish(proc)
    assert "trio got " + str(list(range(20))) in out


def start_tool(tool, bus_dir, *args):
    return subprocess.Popen([tool, "--dir", str(bus_dir), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.asyncio
async def test_c_emits_python_receives(bus_dir, lahja_tool):
    cfg = ConnectionConfig.from_name("py", bus_dir)
    async with AsyncioEndpoint.serve(cfg) as ep:
        got = []
        ep.subscribe(Tick, got.append)
        emit = start_tool(lahja_tool, bus_dir, "emit", "Tick", "from C", "--count", "3")
        for _ in range(T * 100):
            if len(got) == 3 or emit.poll() is not None:
                break
            await asyncio.sleep(0.01)
        # The loop goes on while emit waits for its receipts.
        out, err = await asyncio.get_running_loop().run_in_executor(
            None, lambda: emit.communicate(timeout=T))
        assert emit.returncode == 0, err
        assert [e.payload for e in got] == [b"from C"] * 3
        assert got[0].get_origin().startswith("lahja-emit-")


@pytest.mark.asyncio
async def test_python_emits_c_receives(bus_dir, lahja_tool):
    mon = start_tool(lahja_tool, bus_dir, "monitor", "Tick", "--count", "2")
    try:
        async with AsyncioEndpoint("py-emitter").run() as ep:
            name = await _tool_endpoint(bus_dir, "lahja-monitor-")
            await ep.connect_to_endpoints(ConnectionConfig.from_name(name, bus_dir))
            await asyncio.wait_for(ep.wait_until_endpoint_subscribed_to(name, Tick), T)
            assert ep.is_endpoint_subscribed_to(name, Tick)
            assert not ep.is_endpoint_subscribed_to(name, Ping)
            await ep.broadcast(Tick(b"one"))
            await ep.broadcast(Tick(b"two"))
            out, err = await asyncio.get_running_loop().run_in_executor(
                None, lambda: mon.communicate(timeout=T))
    finally:
        mon.kill()
    assert mon.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].endswith(" py-emitter Tick 3 one") and lines[1].endswith(" Tick 3 two")


@pytest.mark.asyncio
async def test_c_requests_python_answers(bus_dir, lahja_tool):
    cfg = ConnectionConfig.from_name("py-responder", bus_dir)
    async with AsyncioEndpoint.serve(cfg) as ep:
        async def answer():
            async for q in ep.stream(RawStatus):
                await ep.broadcast(StatusReply(b"fine, " + q.payload), q.broadcast_config())

        task = asyncio.ensure_future(answer())
        req = start_tool(lahja_tool, bus_dir, "request", "Status", "thanks",
                         "--response-type", "Status.reply")
        out, err = await asyncio.get_running_loop().run_in_executor(
            None, lambda: req.communicate(timeout=T))
        task.cancel()
    assert req.returncode == 0, err
    assert out == "fine, thanks\n"


@pytest.mark.asyncio
async def test_python_requests_c_answers(bus_dir, lahja_tool):
    resp = start_tool(lahja_tool, bus_dir, "respond", "Status", "ok", "--name", "c-status")
    try:
        async with AsyncioEndpoint("py-asker").run() as ep:
            await _tool_endpoint(bus_dir, "c-status")
            await ep.connect_to_endpoints(ConnectionConfig.from_name("c-status", bus_dir))
            await asyncio.wait_for(ep.wait_until_any_endpoint_subscribed_to(RawStatus), T)
            for _ in range(3):
                reply = await asyncio.wait_for(ep.request(RawStatus(b"?")), T)
                assert isinstance(reply, StatusReply) and reply.payload == b"ok"
                assert reply.get_origin() == "c-status"
    finally:
        resp.terminate()
        resp.communicate(timeout=T)


@pytest.mark.asyncio
async def test_c_sees_python_subscriptions(bus_dir, lahja_tool):
    cfg = ConnectionConfig.from_name("py-subscriber", bus_dir)
    async with AsyncioEndpoint.serve(cfg) as ep:
        ep.subscribe(Tick, lambda e: None)
        ep.subscribe(Ping, lambda e: None)
        ls = start_tool(lahja_tool, bus_dir, "ls")
        out, err = await asyncio.get_running_loop().run_in_executor(
            None, lambda: ls.communicate(timeout=T))
    assert ls.returncode == 0, err
    row = [line for line in out.splitlines() if line.startswith("py-subscriber ")]
    assert row, out
    assert "Tick" in row[0] and "events.Ping" in row[0]


async def _tool_endpoint(bus_dir, prefix):
    """The name of the first endpoint whose socket starts with prefix."""
    for _ in range(T * 100):
        for p in bus_dir.glob(prefix + "*.ipc"):
            return p.name[:-len(".ipc")]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {prefix}* endpoint in {bus_dir}")


STOPPED_PEER = """
    import asyncio, os, signal, sys
    from lahja import AsyncioEndpoint, ConnectionConfig
    from events import Ping

    async def main(path):
        async with AsyncioEndpoint.serve(ConnectionConfig("sleeper", path)) as ep:
            ep.subscribe(Ping, lambda e: None)
            print("serving", flush=True)
            await ep.wait_until_connected_to("flooder")
            os.kill(os.getpid(), signal.SIGSTOP)  # stops reading, for good
            await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.asyncio
async def test_broadcast_nowait_is_bounded_and_broadcast_waits(bus_dir):
    """A peer that stops reading: broadcast_nowait fails with WouldBlock
    once the peer's queue is over its high-water mark, having queued a
    bounded amount; broadcast waits instead, and a deadline ends the wait."""
    from lahja.exceptions import WouldBlock

    path = bus_dir / "sleeper.ipc"
    proc = child(STOPPED_PEER, str(path))
    try:
        assert proc.stdout.readline().strip() == "serving"
        async with AsyncioEndpoint("flooder").run() as ep:
            await ep.connect_to_endpoints(ConnectionConfig("sleeper", path))
            await asyncio.wait_for(ep.wait_until_endpoint_subscribed_to("sleeper", Ping), T)
            for _ in range(T * 200):  # until it has stopped
                if open(f"/proc/{proc.pid}/stat").read().split(") ")[1][0] == "T":
                    break
                await asyncio.sleep(0.005)
            big = os.urandom(65536)  # incompressible: LZ4 would shrink a run of one byte
            sent = 0
            with pytest.raises(WouldBlock):
                while sent < 100000:
                    ep.broadcast_nowait(Ping(sent, big))
                    sent += 1
                    if sent % 16 == 0:
                        await asyncio.sleep(0)  # let the core write
            # Bounded by the default hard limit, 4 x high_water (1 MiB) +
            # max_payload (64 MiB), and what the kernel's buffers hold.
            queued = sent * len(big)
            assert 4 * 2**20 < queued < 96 * 2**20, queued
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ep.broadcast(Ping(-1, big)), 0.2)
    finally:
        proc.kill()
        proc.communicate(timeout=T)


@pytest.fixture
def nats_url(tmp_path):
    """A nats-server of this test's own, on a port the kernel picks."""
    server = shutil.which("nats-server")
    if server is None:
        pytest.skip("no nats-server")
    log = tmp_path / "nats.log"
    conf = tmp_path / "nats.conf"
    conf.write_text("listen: 127.0.0.1:-1\n")
    proc = subprocess.Popen([server, "-c", str(conf), "-l", str(log)])
    try:
        for _ in range(T * 100):
            text = log.read_text() if log.exists() else ""
            m = re.search(r"Listening for client connections on 127\.0\.0\.1:(\d+)", text)
            if m:
                yield f"nats://127.0.0.1:{m.group(1)}"
                break
            assert proc.poll() is None, text
            time.sleep(0.01)
        else:
            raise AssertionError("nats-server did not start")
    finally:
        proc.terminate()
        proc.wait(timeout=T)


@pytest.mark.asyncio
async def test_python_requests_c_on_another_host_through_nats(bus_dir, lahja_tool, nats_url):
    """A Python endpoint and a C one that share no directory and say they
    are on different hosts meet through NATS."""
    env = dict(os.environ, LAHJA_HOST_ID="host-c")
    resp = subprocess.Popen([lahja_tool, "--dir", str(bus_dir), "--nats", nats_url, "respond",
                             "Status", "far", "--name", "c-far"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async with AsyncioEndpoint("py-near").run() as ep:
            ep.join_nats(nats_url, host="host-py")
            await asyncio.wait_for(ep.wait_until_endpoint_subscribed_to("c-far", RawStatus), T)
            reply = await asyncio.wait_for(ep.request(RawStatus(b"?")), T)
            assert isinstance(reply, StatusReply) and reply.payload == b"far"
            assert reply.get_origin() == "c-far"
    finally:
        resp.terminate()
        out, err = resp.communicate(timeout=T)
    assert "serving c-far" in out, err
