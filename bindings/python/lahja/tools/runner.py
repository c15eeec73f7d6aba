"""
Runners: the outermost layer, run from synchronous code.  AsyncioRunner
and TrioRunner run drivers together in this process; the isolated runners
run each driver in a forked process of its own, and, unlike lahja's,
fail when a driver's process fails.
"""
from abc import ABC, abstractmethod
import asyncio
import itertools
import multiprocessing
from typing import Any, Iterator

from .engine import AsyncioEngine, Driver


class RunnerAPI(ABC):
    @abstractmethod
    def __call__(self, *drivers: Driver) -> None:
        """Runs the drivers until every one is done; raises what they raise."""


class AsyncioRunner(RunnerAPI):
    """Runs the drivers together on this thread's asyncio event loop."""

    def __init__(self) -> None:
        self._engine = AsyncioEngine()

    def __call__(self, *drivers: Driver) -> None:
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:  # none set on this thread
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
        loop.run_until_complete(self._engine.run_drivers(*drivers))


class TrioRunner(RunnerAPI):
    """Runs the drivers together in one trio.run."""

    def __init__(self) -> None:
        from .engine import TrioEngine

        self._engine = TrioEngine()

    def __call__(self, *drivers: Driver) -> None:
        import trio

        trio.run(self._engine.run_drivers, *drivers)


class DriverFailed(Exception):
    """A driver's process (of an isolated runner) failed."""


def _run_one(runner: RunnerAPI, driver: Driver) -> None:
    runner(driver)


class BaseIsolatedProcessRunner(RunnerAPI):
    """
    Runs each driver in a process of its own (forked: drivers may be
    closures), all at once, and waits for all of them.  A process that
    fails (an exception, a non-zero exit) is DriverFailed naming the
    driver, once every process has ended.
    """

    @abstractmethod
    def get_runner(self) -> RunnerAPI:
        """The runner of the next driver's process."""

    def __call__(self, *drivers: Driver) -> None:
        ctx = multiprocessing.get_context("fork")
        procs = [(d, ctx.Process(target=_run_one, args=(self.get_runner(), d)))
                 for d in drivers]
        for _, p in procs:
            p.start()
        for _, p in procs:
            p.join()
        failed = [f"{d} (exit code {p.exitcode})" for d, p in procs if p.exitcode != 0]
        if failed:
            raise DriverFailed("driver processes failed: " + ", ".join(failed))


class IsolatedHomogenousRunner(BaseIsolatedProcessRunner):
    """Every driver's process runs the same runner."""

    def __init__(self, runner: RunnerAPI) -> None:
        self._runner = runner

    def get_runner(self) -> RunnerAPI:
        return self._runner


class IsolatedHeterogenousRunner(BaseIsolatedProcessRunner):
    """The drivers' processes take the runners in turn."""

    def __init__(self, *choices: RunnerAPI) -> None:
        self._choices: Iterator[Any] = itertools.cycle(choices)

    def get_runner(self) -> RunnerAPI:
        return next(self._choices)
