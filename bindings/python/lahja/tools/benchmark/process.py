"""
The processes of the benchmark: one driver floods events (or requests),
N consumers take them and time them, one reporter collects the consumers'
totals, prints the report and tells the root endpoint to shut down.

Two environment variables, read only by this module, help measuring
without changing the output:

* ``LAHJA_BENCH_PROFILE=<dir>``: the driver and every consumer run under
  cProfile and dump ``<dir>/<role>-<pid>.prof`` (wall-clock time; with
  ``LAHJA_BENCH_PROFILE_CLOCK=cpu``, the process's CPU time);
* ``LAHJA_BENCH_TOTALS=<file>``: the reporter appends one JSON line with
  the backend, the counts, the report's total time and every consumer's
  Total.
"""
from abc import ABC, abstractmethod
import itertools
import json
import logging
import multiprocessing
import os
import signal
import time
from typing import Any, Callable, NamedTuple, Optional, Tuple

from lahja import BroadcastConfig, ConnectionConfig
from lahja.base import EndpointAPI
from lahja.exceptions import NoSubscribers, RemoteDisconnected
from lahja.tools.benchmark.backends import BaseBackend
from lahja.tools.benchmark.constants import (
    DRIVER_ENDPOINT,
    REPORTER_ENDPOINT,
    ROOT_ENDPOINT,
)
from lahja.tools.benchmark.logging import setup_stderr_lahja_logging
from lahja.tools.benchmark.stats import GlobalStatistic, LocalStatistic
from lahja.tools.benchmark.typing import (
    PerfMeasureEvent,
    PerfMeasureRequest,
    PerfMeasureResponse,
    RawMeasureEntry,
    ShutdownEvent,
    TotalRecordedEvent,
)
from lahja.tools.benchmark.utils.reporting import print_full_report


def _profiled(role: str, body: Callable[[], None]) -> None:
    """Run body(), under cProfile when LAHJA_BENCH_PROFILE names a directory."""
    out_dir = os.environ.get("LAHJA_BENCH_PROFILE")
    if not out_dir:
        body()
        return
    import cProfile

    if os.environ.get("LAHJA_BENCH_PROFILE_CLOCK") == "cpu":
        # CPU time of this process: time spent descheduled does not count.
        profiler = cProfile.Profile(time.process_time)
    else:
        profiler = cProfile.Profile()
    profiler.enable()
    try:
        body()
    finally:
        profiler.disable()
        profiler.dump_stats(os.path.join(out_dir, f"{role}-{os.getpid()}.prof"))


class DriverProcessConfig(NamedTuple):
    num_events: int
    connected_endpoints: Tuple[ConnectionConfig, ...]
    throttle: float
    payload_bytes: int
    backend: BaseBackend
    debug_logging: bool


class BaseDriverProcess(ABC):
    """The one process sending: runs until stop() interrupts it."""

    logger = logging.getLogger("lahja.tools.benchmark.process.DriverProcess")

    def __init__(self, config: DriverProcessConfig) -> None:
        self._config = config
        self._process: Optional[multiprocessing.Process] = None

    def start(self) -> None:
        process = multiprocessing.Process(
            target=self.launch, args=(self._config,), daemon=True
        )
        self._process = process
        process.start()

    def stop(self) -> None:
        process = self._process
        if process is None:
            raise Exception("no process")
        if process.pid is None:
            process.terminate()
        else:
            os.kill(process.pid, signal.SIGINT)
        process.join(1)
        if process.is_alive():
            process.terminate()
            process.join(1)

    @classmethod
    def launch(cls, config: DriverProcessConfig) -> None:
        if config.debug_logging:
            setup_stderr_lahja_logging()

        def body() -> None:
            try:
                config.backend.run(cls.worker, config)
            except KeyboardInterrupt:
                pass

        _profiled("driver", body)

    @classmethod
    async def worker(cls, config: DriverProcessConfig) -> None:
        own = ConnectionConfig.from_name(DRIVER_ENDPOINT)
        async with config.backend.Endpoint.serve(own) as event_bus:
            await event_bus.connect_to_endpoints(*config.connected_endpoints)
            await cls.do_driver(event_bus, config)

    @staticmethod
    @abstractmethod
    async def do_driver(event_bus: EndpointAPI, config: DriverProcessConfig) -> None:
        ...


async def _idle_until_stopped(config: DriverProcessConfig) -> None:
    # Every consumer has taken its events and left; the root interrupts us
    # (stop()) once the report is out.  Sending on would only raise
    # NoSubscribers, so wait quietly instead of dying with a traceback.
    while True:
        await config.backend.sleep(3600)


async def _await_consumers(
    event_bus: EndpointAPI, config: DriverProcessConfig, event_type: Any
) -> None:
    for consumer in config.connected_endpoints:
        await event_bus.wait_until_endpoint_subscribed_to(consumer.name, event_type)


class BroadcastDriver(BaseDriverProcess):
    @staticmethod
    async def do_driver(event_bus: EndpointAPI, config: DriverProcessConfig) -> None:
        await _await_consumers(event_bus, config, PerfMeasureEvent)
        payload = bytes(config.payload_bytes)
        sleep = config.backend.sleep
        try:
            for index in itertools.count():
                await sleep(config.throttle)
                await event_bus.broadcast(
                    PerfMeasureEvent(payload, index, time.time())
                )
        except NoSubscribers:
            await _idle_until_stopped(config)


class RequestDriver(BaseDriverProcess):
    @classmethod
    async def do_driver(
        cls, event_bus: EndpointAPI, config: DriverProcessConfig
    ) -> None:
        await _await_consumers(event_bus, config, PerfMeasureRequest)
        payload = bytes(config.payload_bytes)
        sleep = config.backend.sleep
        try:
            for index in itertools.count():
                await sleep(config.throttle)
                await event_bus.request(
                    PerfMeasureRequest(payload, index, time.time())
                )
        except (NoSubscribers, RemoteDisconnected):
            # Or the last request went to a consumer that has just left.
            await _idle_until_stopped(config)


class ConsumerConfig(NamedTuple):
    num_events: int
    backend: BaseBackend
    debug_logging: bool


class BaseConsumerProcess(ABC):
    """A receiving process: takes num_events, then sends its Total to the reporter."""

    logger = logging.getLogger("lahja.tools.benchmark.process.ConsumerProcess")

    def __init__(self, name: str, config: ConsumerConfig) -> None:
        self._name = name
        self._config = config
        self._process: Optional[multiprocessing.Process] = None

    def start(self) -> None:
        process = multiprocessing.Process(
            target=self.launch, args=(self._name, self._config)
        )
        self._process = process
        process.start()

    @classmethod
    def launch(cls, name: str, config: ConsumerConfig) -> None:
        if config.debug_logging:
            setup_stderr_lahja_logging()
        _profiled(name, lambda: config.backend.run(cls.worker, name, config))

    @classmethod
    async def worker(cls, name: str, config: ConsumerConfig) -> None:
        own = ConnectionConfig.from_name(name)
        async with config.backend.Endpoint.serve(own) as event_bus:
            await event_bus.connect_to_endpoints(
                ConnectionConfig.from_name(REPORTER_ENDPOINT)
            )
            await event_bus.wait_until_connected_to(DRIVER_ENDPOINT)
            stats = await cls.do_consumer(event_bus, config)
            await event_bus.wait_until_endpoint_subscribed_to(
                REPORTER_ENDPOINT, TotalRecordedEvent
            )
            await event_bus.broadcast(
                TotalRecordedEvent(stats.crunch(event_bus.name)),
                BroadcastConfig(filter_endpoint=REPORTER_ENDPOINT),
            )

    @staticmethod
    @abstractmethod
    async def do_consumer(
        event_bus: EndpointAPI, config: ConsumerConfig
    ) -> LocalStatistic:
        ...


class BroadcastConsumer(BaseConsumerProcess):
    @staticmethod
    async def do_consumer(
        event_bus: EndpointAPI, config: ConsumerConfig
    ) -> LocalStatistic:
        stats = LocalStatistic()
        async for event in event_bus.stream(
            PerfMeasureEvent, num_events=config.num_events
        ):
            stats.add(RawMeasureEntry(event.sent_at, time.time()))
        return stats


class RequestConsumer(BaseConsumerProcess):
    @staticmethod
    async def do_consumer(
        event_bus: EndpointAPI, config: ConsumerConfig
    ) -> LocalStatistic:
        stats = LocalStatistic()
        async for request in event_bus.stream(
            PerfMeasureRequest, num_events=config.num_events
        ):
            await event_bus.broadcast(PerfMeasureResponse(), request.broadcast_config())
            stats.add(RawMeasureEntry(request.sent_at, time.time()))
        return stats


class ReportingProcessConfig(NamedTuple):
    num_processes: int
    num_events: int
    throttle: float
    payload_bytes: int
    backend: BaseBackend
    debug_logging: bool


def _append_totals(
    config: ReportingProcessConfig, statistic: GlobalStatistic, elapsed: float
) -> None:
    path = os.environ.get("LAHJA_BENCH_TOTALS")
    if not path:
        return
    record = {
        "backend": config.backend.name,
        "num_processes": config.num_processes,
        "num_events": config.num_events,
        "payload_bytes": config.payload_bytes,
        "total_time": elapsed,
        "totals": [total._asdict() for total in statistic._entries],
    }
    with open(path, "a") as out:
        out.write(json.dumps(record) + "\n")


class ReportingProcess:
    """Collects one Total per consumer, prints the report, shuts the run down."""

    logger = logging.getLogger("lahja.tools.benchmark.process.ReportingProcess")

    def __init__(self, config: ReportingProcessConfig) -> None:
        self._name = REPORTER_ENDPOINT
        self._config = config
        self._process: Optional[multiprocessing.Process] = None

    def start(self) -> None:
        process = multiprocessing.Process(target=self.launch, args=(self._config,))
        self._process = process
        process.start()

    @classmethod
    def launch(cls, config: ReportingProcessConfig) -> None:
        if config.debug_logging:
            setup_stderr_lahja_logging()
        # The report goes through the root logger: bare messages, on stderr.
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        config.backend.run(ReportingProcess.worker, logging.getLogger("reporting"), config)

    @staticmethod
    async def worker(logger: logging.Logger, config: ReportingProcessConfig) -> None:
        own = ConnectionConfig.from_name(REPORTER_ENDPOINT)
        async with config.backend.Endpoint.serve(own) as event_bus:
            await event_bus.connect_to_endpoints(ConnectionConfig.from_name(ROOT_ENDPOINT))
            statistic = GlobalStatistic()
            async for recorded in event_bus.stream(
                TotalRecordedEvent, num_events=config.num_processes
            ):
                statistic.add(recorded.total)
            print_full_report(
                logger,
                config.backend,
                config.num_processes,
                config.num_events,
                statistic,
            )
            _append_totals(config, statistic, time.time() - statistic._created_at)
            await event_bus.broadcast(
                ShutdownEvent(), BroadcastConfig(filter_endpoint=ROOT_ENDPOINT)
            )
