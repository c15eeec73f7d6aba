"""
Event bus throughput benchmark, lahja 0.17's scripts/perf_benchmark.py
for lahja for C: same options, same report (on stderr).

    perf_benchmark.py [--num-processes N] [--num-events N] [--throttle S]
                      [--payload-bytes N] [--backend asyncio|trio]...
                      [--mode broadcast|request] [--enable-debug-logs]
"""
import argparse
import multiprocessing
import os
import tempfile

from lahja import ConnectionConfig
from lahja.tools.benchmark.backends import AsyncioBackend, BaseBackend, TrioBackend
from lahja.tools.benchmark.constants import ROOT_ENDPOINT
from lahja.tools.benchmark.logging import setup_stderr_lahja_logging
from lahja.tools.benchmark.process import (
    BroadcastConsumer,
    BroadcastDriver,
    ConsumerConfig,
    DriverProcessConfig,
    ReportingProcess,
    ReportingProcessConfig,
    RequestConsumer,
    RequestDriver,
)
from lahja.tools.benchmark.typing import ShutdownEvent
from lahja.tools.benchmark.utils.config import (
    create_consumer_endpoint_configs,
    create_consumer_endpoint_name,
)

MODES = {
    "broadcast": (BroadcastDriver, BroadcastConsumer),
    "request": (RequestDriver, RequestConsumer),
}
BACKENDS = {"asyncio": AsyncioBackend, "trio": TrioBackend}

parser = argparse.ArgumentParser()
parser.add_argument(
    "--num-processes",
    type=int,
    default=10,
    help="The number of processes listening for events",
)
parser.add_argument(
    "--num-events", type=int, default=100, help="The number of events propagated"
)
parser.add_argument(
    "--throttle",
    type=float,
    default=0.0,
    help="The time to wait between propagating events",
)
parser.add_argument(
    "--payload-bytes", type=int, default=1, help="The payload of each event in bytes"
)
parser.add_argument("--backend", action="append", help="The endpoint backend to use")
parser.add_argument(
    "--mode",
    default="broadcast",
    choices=tuple(MODES),
    help="benchmarks request/response round trip",
)
parser.add_argument(
    "--enable-debug-logs",
    action="store_true",
    help="Turns on DEBUG level logging to stderr to the `lahja` namespaced loggers.",
)


async def run(args: argparse.Namespace, backend: BaseBackend) -> None:
    """One benchmark round: this process is the root endpoint, the rest are children."""
    if args.mode not in MODES:
        raise Exception(f"Unknown mode: '{args.mode}'")
    driver_class, consumer_class = MODES[args.mode]
    consumers = create_consumer_endpoint_configs(args.num_processes)

    async with backend.Endpoint.serve(ConnectionConfig.from_name(ROOT_ENDPOINT)) as root:
        # The reporter is its own process; it also receives a few events,
        # which the figures do not count.
        ReportingProcess(
            ReportingProcessConfig(
                num_processes=args.num_processes,
                num_events=args.num_events,
                throttle=args.throttle,
                payload_bytes=args.payload_bytes,
                backend=backend,
                debug_logging=args.enable_debug_logs,
            )
        ).start()

        consumer_config = ConsumerConfig(
            num_events=args.num_events,
            backend=backend,
            debug_logging=args.enable_debug_logs,
        )
        for index in range(args.num_processes):
            consumer_class(create_consumer_endpoint_name(index), consumer_config).start()

        # The only process sending events.
        driver = driver_class(
            DriverProcessConfig(
                num_events=args.num_events,
                connected_endpoints=consumers,
                throttle=args.throttle,
                payload_bytes=args.payload_bytes,
                backend=backend,
                debug_logging=args.enable_debug_logs,
            )
        )
        driver.start()

        await root.wait_for(ShutdownEvent)
        driver.stop()


def main() -> None:
    args = parser.parse_args()
    # Children start fresh (spawn), not as forks of a process running a loop.
    multiprocessing.set_start_method("spawn")
    if args.enable_debug_logs:
        setup_stderr_lahja_logging()

    for backend_name in args.backend or ["asyncio"]:
        if backend_name not in BACKENDS:
            raise Exception(f"Unrecognized backend: {args.backend}")
        backend = BACKENDS[backend_name]()
        here = os.getcwd()
        # The endpoints' sockets live in a fresh directory per round.
        with tempfile.TemporaryDirectory() as scratch:
            os.chdir(scratch)
            try:
                backend.run(run, args, backend)
            finally:
                os.chdir(here)


if __name__ == "__main__":
    main()
