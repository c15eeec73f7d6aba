"""
The trio endpoint: lahja's TrioEndpoint on liblahja.

The core's loop runs in a system task of the trio run (``lahja._driver``).
A call that waits parks the calling task (``wait_task_rescheduled``) until
the core's callback reschedules it; a trio cancellation aborts the park
and cancels the core's call.
"""
import contextlib
from typing import Any, AsyncIterator, Optional

import outcome
import trio
import trio.lowlevel

from .. import _core
from .._driver import trio_pump
from ..base import BaseEndpoint, StreamQueue, converted, error_for
from ..common import ConnectionConfig
from ..exceptions import ConnectionAttemptRejected, LifecycleError

__all__ = ["TrioEndpoint"]


class _Parked:
    """One task waiting for a core call's callback (see
    BaseEndpoint._waiter): the callback reschedules it; a cancellation
    aborts the wait and cancels the core's call."""

    __slots__ = ("task", "endpoint")

    def __init__(self, endpoint=None) -> None:
        self.task = trio.lowlevel.current_task()
        self.endpoint = endpoint

    def done(self, value) -> None:
        """Wakes the task with an outcome, unless it was aborted."""
        if self.task is not None:
            task, self.task = self.task, None
            trio.lowlevel.reschedule(task, value)

    def callback(self, status: int, value: Any = None) -> None:
        if status == 0:
            self.done(outcome.Value(value))
        else:
            self.done(outcome.Error(error_for(status, self.endpoint._last_error())))

    async def wait(self, op=None):
        def abort(raise_cancel):
            self.task = None
            if op is not None:
                op.cancel()
                if self.endpoint is not None:
                    self.endpoint._pump().kick()
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)


class _Queue(StreamQueue):
    """A stream's events; the stream's task parks until one comes."""

    __slots__ = ("parked",)

    def __init__(self, pump) -> None:
        super().__init__(pump)
        self.parked: Optional[_Parked] = None

    def wake(self) -> None:
        p = self.parked
        if p is not None:
            self.parked = None
            p.done(outcome.Value(None))

    async def get(self):
        if self.items:
            await trio.lowlevel.checkpoint()  # every get is a checkpoint
        while not self.items:
            self.parked = _Parked()
            try:
                await self.parked.wait()
            finally:
                self.parked = None
        return self.take()


class TrioEndpoint(BaseEndpoint):
    """
    An endpoint driven by trio.  It runs once: running it again after it
    stopped is LifecycleError, as in lahja.
    """

    _connection_backlog = 10
    _stream_zero_is_one = True  # as lahja's trio endpoint

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._pump_ = None
        self._started = trio.Event()
        self._stopped = trio.Event()
        self._serving = False
        self._server_stopped = trio.Event()
        self._nursery: Optional[trio.Nursery] = None

    # ------------------------------------------------------ properties

    @property
    def is_running(self) -> bool:
        return self._started.is_set() and not self._stopped.is_set()

    @property
    def is_stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def is_serving(self) -> bool:
        return self._serving and self.is_running

    @property
    def is_server_stopped(self) -> bool:
        return self._server_stopped.is_set()

    async def wait_started(self) -> None:
        await self._started.wait()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ------------------------------------------------------- lifecycle

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator["TrioEndpoint"]:
        """``async with endpoint.run():`` runs it (without serving) for the
        block; it runs once (LifecycleError otherwise)."""
        async with trio.open_nursery() as nursery:
            await self._start(None, nursery)
            try:
                yield self
            finally:
                with trio.CancelScope(shield=True):
                    await self._stop()
                nursery.cancel_scope.cancel()

    @classmethod
    @contextlib.asynccontextmanager
    async def serve(cls, config: ConnectionConfig) -> AsyncIterator["TrioEndpoint"]:
        """``async with TrioEndpoint.serve(config) as ep:`` runs an endpoint
        named config.name serving at config.path."""
        ep = cls(config.name)
        async with trio.open_nursery() as nursery:
            await ep._start(str(config.path), nursery)
            try:
                yield ep
            finally:
                with trio.CancelScope(shield=True):
                    await ep._stop()
                nursery.cancel_scope.cancel()

    async def _start(self, path: Optional[str], nursery: trio.Nursery) -> None:
        if self._started.is_set():
            raise LifecycleError(f"{self} has already been started")
        self._pump_ = trio_pump()
        ep = self._new_core_endpoint()
        try:
            ep.start(path)
        except _core.Error as e:
            raise converted(e) from None
        self._core_ep = ep
        self._nursery = nursery
        self._serving = path is not None
        self._subscribe_all()
        self._started.set()
        self._pump_.kick()
        await trio.lowlevel.checkpoint()

    async def _stop(self) -> None:
        ep = self._core_ep
        if ep is None or self._stopped.is_set():
            return
        for c in self._consumers.values():
            c.sub = None
            for q in c.queues:
                q.release()
        parked = _Parked()

        def stopped(status):
            parked.done(outcome.Value(status))

        try:
            ep.stop(stopped)
        except _core.Error:
            parked.done(outcome.Value(0))
        self._pump_.kick()
        await parked.wait()
        self._serving = False
        self._server_stopped.set()
        self._stopped.set()

    # ------------------------------------------------------ connecting

    async def connect_to_endpoints(self, *endpoints: ConnectionConfig) -> None:
        """As BaseEndpoint's; not running is ConnectionAttemptRejected too,
        as in lahja's trio endpoint."""
        if not self.is_running:
            raise ConnectionAttemptRejected(f"{self} is not running")
        await super().connect_to_endpoints(*endpoints)

    # ------------------------------------------------------------ hooks

    def _pump(self):
        pump = self._pump_
        if pump is None:
            pump = self._pump_ = trio_pump()
        return pump

    def _spawn_handler(self, handler, ev) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._run_handler, handler, ev)

    def _waiter(self) -> _Parked:
        return _Parked(self)

    def _new_queue(self) -> _Queue:
        return _Queue(self._pump())
