"""
The asyncio endpoint: lahja's AsyncioEndpoint on liblahja.

The core's loop runs from the asyncio loop (``lahja._driver``); every call
that waits is a core call in callback form whose callback completes an
asyncio future, and cancelling the awaiting task cancels the core call.
"""
import asyncio
import contextlib
from typing import Any, AsyncIterator, Optional

from .. import _core
from .._driver import asyncio_pump
from ..base import BaseEndpoint, StreamQueue, converted, error_for
from ..common import ConnectionConfig  # lahja's tests import it from here too

__all__ = ["AsyncioEndpoint"]


class _Queue(StreamQueue):
    """A stream's events; the stream waits on a future."""

    __slots__ = ("waiter",)

    def __init__(self, pump) -> None:
        super().__init__(pump)
        self.waiter: Optional[asyncio.Future] = None

    def wake(self) -> None:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                w.set_result(None)

    async def get(self):
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.take()


class _Waiter:
    """A core call's end, as an asyncio future (see BaseEndpoint._waiter)."""

    __slots__ = ("fut", "endpoint")

    def __init__(self, endpoint: "AsyncioEndpoint") -> None:
        self.fut = endpoint._loop.create_future()
        self.endpoint = endpoint

    def callback(self, status: int, value: Any = None) -> None:
        fut = self.fut
        if fut.done():
            return
        if status == 0:
            fut.set_result(value)
        else:
            fut.set_exception(error_for(status, self.endpoint._last_error()))

    async def wait(self, op) -> Any:
        try:
            return await self.fut
        except asyncio.CancelledError:
            op.cancel()
            self.endpoint._pump().kick()
            raise


class AsyncioEndpoint(BaseEndpoint):
    """
    An endpoint driven by asyncio.  Made outside a loop; used from one
    loop at a time (the one it runs on).  It may run again after it
    stopped, as lahja's.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._pump_ = None
        self._running = False
        self._serving = False
        self._ipc_path = None
        self._handler_tasks: set = set()

    # ------------------------------------------------------ properties

    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def is_serving(self) -> bool:
        return self._serving

    @property
    def ipc_path(self):
        return self._ipc_path

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise AttributeError("Endpoint does not have an event loop set.")
        return self._loop

    # ------------------------------------------------------- lifecycle

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator["AsyncioEndpoint"]:
        """``async with endpoint.run():`` runs it (without serving); it stops
        at the end of the block, also when the block raises.  Running an
        endpoint that runs is RuntimeError, as in lahja."""
        await self._start(None)
        try:
            yield self
        finally:
            await self._stop()

    @classmethod
    @contextlib.asynccontextmanager
    async def serve(cls, config: ConnectionConfig) -> AsyncIterator["AsyncioEndpoint"]:
        """``async with AsyncioEndpoint.serve(config) as ep:`` runs an endpoint
        named config.name serving at config.path (the socket is removed at
        the end)."""
        ep = cls(config.name)
        await ep._start(str(config.path))
        try:
            yield ep
        finally:
            await ep._stop()

    async def _start(self, path: Optional[str]) -> None:
        if self._running:
            raise RuntimeError(f"{self} is already running")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._pump_ = asyncio_pump()
        ep = self._new_core_endpoint()
        try:
            ep.start(path)
        except _core.Error as e:
            raise converted(e) from None
        self._core_ep = ep
        self._running = True
        self._serving = path is not None
        self._ipc_path = path
        self._subscribe_all()
        self._pump_.kick()

    async def _stop(self) -> None:
        ep = self._core_ep
        if ep is None:
            return
        self._running = False
        self._serving = False
        for c in self._consumers.values():
            c.sub = None
            for q in c.queues:
                q.release()
        done = self._loop.create_future()

        def stopped(status):
            if not done.done():
                done.set_result(status)

        try:
            ep.stop(stopped)
        except _core.Error:
            done.set_result(0)
        self._pump_.kick()
        # Stopping is not cancellable: the endpoint's sockets must close.
        await asyncio.shield(done)
        self._core_ep = None
        for t in list(self._handler_tasks):
            t.cancel()

    # ------------------------------------------------------------ hooks

    def _pump(self):
        pump = self._pump_
        if pump is None:
            pump = self._pump_ = asyncio_pump()
        return pump

    def _spawn_handler(self, handler, ev) -> None:
        task = self._loop.create_task(self._run_handler(handler, ev))
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)

    def _waiter(self) -> "_Waiter":
        return _Waiter(self)

    def _new_queue(self) -> _Queue:
        return _Queue(self._pump())
