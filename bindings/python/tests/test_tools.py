"""
lahja.tools: drivers run by every runner, in one process (asyncio, trio)
and each in a process of its own (both frameworks mixed): connecting,
broadcast, request, checkpoints, throws, and a failing driver process
reported by the isolated runners.
"""
import pytest

from lahja import BroadcastConfig, ConnectionConfig
from lahja.exceptions import ConnectionAttemptRejected, NoSubscribers
from lahja.tools import drivers as d
from lahja.tools.runner import (
    AsyncioRunner,
    DriverFailed,
    IsolatedHeterogenousRunner,
    IsolatedHomogenousRunner,
    TrioRunner,
)

from events import Answer, Ping, Question

RUNNERS = {
    "asyncio": lambda: AsyncioRunner(),
    "trio": lambda: TrioRunner(),
    "isolated-trio": lambda: IsolatedHomogenousRunner(TrioRunner()),
    "isolated-asyncio": lambda: IsolatedHomogenousRunner(AsyncioRunner()),
    "isolated-mixed": lambda: IsolatedHeterogenousRunner(TrioRunner(), AsyncioRunner()),
}


@pytest.fixture(params=sorted(RUNNERS))
def runner(request):
    return RUNNERS[request.param]()


def test_broadcast_request_and_checkpoints(runner, bus_dir):
    server_cfg = ConnectionConfig.from_name("server", bus_dir)
    got = []
    done_server, done_client = d.checkpoint("done")
    server = d.driver(
        d.serve_endpoint(server_cfg),
        d.wait_for(Ping, on_event=lambda ep, ev: got.append(ev.n)),
        d.serve_request(Question, lambda ep, q: Answer(q.text + "!")),
        done_server,
    )
    client = d.driver(
        d.run_endpoint("client"),
        d.connect_to_endpoints(server_cfg),
        d.throws(d.connect_to_endpoints(server_cfg), ConnectionAttemptRejected),
        d.wait_any_then_broadcast(Ping(4)),
        d.wait_until_any_endpoint_subscribed_to(Question),
        d.request(Question("hi"), on_response=lambda ep, r: got.append(r.text)),
        d.throws(d.broadcast(Ping(5)), NoSubscribers),
        d.broadcast(Ping(6), BroadcastConfig(require_subscriber=False)),
        done_client,
    )
    runner(server, client)
    if not isinstance(runner, (IsolatedHomogenousRunner, IsolatedHeterogenousRunner)):
        assert got == [4, "hi!"]


@pytest.mark.parametrize("name", ["isolated-trio", "isolated-mixed"])
def test_isolated_runner_reports_a_failed_driver(name, bus_dir):
    failing = d.driver(
        d.run_endpoint("lonely"),
        d.broadcast(Ping(1)),  # nobody subscribes: NoSubscribers in the child
    )
    with pytest.raises(DriverFailed, match="driver processes failed"):
        RUNNERS[name]()(failing)


def test_throws_says_when_nothing_was_raised(bus_dir):
    from lahja.tools.drivers.actions import DidNotThrow

    drv = d.driver(
        d.run_endpoint("quiet"),
        d.throws(d.broadcast(Ping(), BroadcastConfig(require_subscriber=False)), NoSubscribers),
    )
    with pytest.raises(DidNotThrow):
        AsyncioRunner()(drv)
