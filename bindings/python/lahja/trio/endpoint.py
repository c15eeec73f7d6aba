"""
The trio endpoint: lahja's TrioEndpoint on liblahja.

The core's loop runs in a system task of the trio run (``lahja._driver``).
A call that waits parks the calling task (``wait_task_rescheduled``) until
the core's callback reschedules it; a trio cancellation aborts the park
and cancels the core's call.
"""
import contextlib
from collections import deque
from typing import Any, AsyncGenerator, AsyncIterator, Optional, Type

import outcome
import trio
import trio.lowlevel

from .. import _core
from .._driver import trio_pump
from ..base import (
    STREAM_HIGH_WATER,
    BaseEndpoint,
    TStreamEvent,
    TWaitForEvent,
    converted,
    error_for,
)
from ..common import BaseEvent, ConnectionConfig
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


class _Queue:
    """A stream's events (see lahja.asyncio.endpoint._Queue)."""

    __slots__ = ("items", "parked", "pump", "held")

    def __init__(self, pump) -> None:
        self.items: deque = deque()
        self.parked: Optional[_Parked] = None
        self.pump = pump
        self.held = False

    def put(self, ev) -> None:
        self.items.append(ev)
        p = self.parked
        if p is not None:
            self.parked = None
            p.done(outcome.Value(None))
        if not self.held and len(self.items) >= STREAM_HIGH_WATER:
            self.held = True
            self.pump.hold()

    async def get(self):
        if self.items:
            await trio.lowlevel.checkpoint()  # every get is a checkpoint
        while not self.items:
            self.parked = _Parked()
            try:
                await self.parked.wait()
            finally:
                self.parked = None
        ev = self.items.popleft()
        if self.held and len(self.items) < STREAM_HIGH_WATER // 2:
            self.release()
        return ev

    def release(self) -> None:
        if self.held:
            self.held = False
            self.pump.release()


class TrioEndpoint(BaseEndpoint):
    """
    An endpoint driven by trio.  It runs once: running it again after it
    stopped is LifecycleError, as in lahja.
    """

    _connection_backlog = 10

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
        """Connects to each endpoint (waiting for its socket, up to 30 s) and
        returns once every one is connected.  Not running, its own name or a
        name already connected: ConnectionAttemptRejected."""
        if not self.is_running:
            raise ConnectionAttemptRejected(f"{self} is not running")
        names = [c.name for c in endpoints]
        if len(set(names)) != len(names):
            raise ConnectionAttemptRejected(f"Duplicate endpoints in {names}")
        for n in names:
            if self.is_connected_to(n):
                raise ConnectionAttemptRejected(f"Already connected to {n}")
        await self._call(self._ep().connect, [(c.name, str(c.path)) for c in endpoints], 30.0)

    # --------------------------------------------------------- streams

    async def stream(
        self, event_type: Type[TStreamEvent], num_events: Optional[int] = None
    ) -> AsyncGenerator[TStreamEvent, None]:
        """The events of exactly that type as they come, num_events of them
        (None: without end; 0 is taken as 1, as lahja's trio endpoint does).
        Subscribed from its first step until it ends however it ends; a
        consumer that falls behind holds the endpoint's reading (nothing is
        dropped), see AsyncioEndpoint.stream."""
        q = _Queue(self._pump())
        c = self._consumers_for(event_type)
        c.queues.append(q)
        try:
            n = 0
            limit = None if num_events is None else max(num_events, 1)
            while limit is None or n < limit:
                yield await q.get()
                n += 1
        finally:
            q.release()
            try:
                c.queues.remove(q)
            except ValueError:
                pass
            self._consumer_gone(c)

    async def wait_for(self, event_type: Type[TWaitForEvent]) -> TWaitForEvent:
        """The next event of exactly that type."""
        agen = self.stream(event_type, num_events=1)
        try:
            return await agen.__anext__()
        finally:
            await agen.aclose()

    # ------------------------------------------------------------ hooks

    def _pump(self):
        pump = self._pump_
        if pump is None:
            pump = self._pump_ = trio_pump()
        return pump

    def _spawn_handler(self, handler, ev) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._run_handler, handler, ev)

    async def _run_handler(self, handler, ev) -> None:
        try:
            await handler(ev)
        except Exception:
            self.logger.debug("%s: Error in subscription handler %s", self, handler,
                              exc_info=True)

    def _waiter(self) -> _Parked:
        return _Parked(self)

    def _last_error(self) -> str:
        ep = self._core_ep
        return ep.last_error if ep is not None else ""
