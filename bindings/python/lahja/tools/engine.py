"""Engines: how drivers run on one framework (asyncio or trio)."""
from abc import ABC, abstractmethod
import asyncio
from typing import Any, Awaitable, Callable, Type

from ..asyncio import AsyncioEndpoint
from ..base import EndpointAPI
from ..typing import EventAPI

# A driver: a coroutine function of an engine.
Driver = Callable[["EngineAPI"], Awaitable[None]]


class EngineAPI(ABC):
    """Runs drivers, and sleeps and times out, the framework's way."""

    endpoint_class: Type[EndpointAPI]
    Event: Type[EventAPI]

    @abstractmethod
    def run_drivers(self, *drivers: Driver) -> Awaitable[None]:
        """Runs the drivers concurrently until every one is done."""

    @abstractmethod
    async def run_with_timeout(
        self, coro: Callable[..., Awaitable[Any]], *args: Any, timeout: int
    ) -> None:
        """Awaits coro(*args) for at most `timeout` seconds; the built-in
        TimeoutError when it takes longer."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Sleeps the framework's way."""


class AsyncioEngine(EngineAPI):
    """Drivers on asyncio, with AsyncioEndpoint."""

    endpoint_class = AsyncioEndpoint
    Event = asyncio.Event

    async def run_drivers(self, *drivers: Driver) -> None:
        await asyncio.gather(*(driver(self) for driver in drivers))

    async def run_with_timeout(
        self, coro: Callable[..., Awaitable[Any]], *args: Any, timeout: int
    ) -> None:
        try:
            await asyncio.wait_for(coro(*args), timeout=timeout)
        except asyncio.TimeoutError as err:
            raise TimeoutError(f"{coro} did not finish within {timeout} s") from err

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


try:
    import trio

    from ..trio import TrioEndpoint
except ImportError:  # without trio, only the asyncio engine
    trio = None


if trio is not None:

    class TrioEngine(EngineAPI):
        """Drivers on trio, with TrioEndpoint."""

        endpoint_class = TrioEndpoint
        Event = trio.Event

        async def run_drivers(self, *drivers: Driver) -> None:
            async with trio.open_nursery() as nursery:
                for driver in drivers:
                    nursery.start_soon(driver, self)

        async def run_with_timeout(
            self, coro: Callable[..., Awaitable[Any]], *args: Any, timeout: int
        ) -> None:
            try:
                with trio.fail_after(timeout):
                    await coro(*args)
            except trio.TooSlowError as err:
                raise TimeoutError(f"{coro} did not finish within {timeout} s") from err

        async def sleep(self, seconds: float) -> None:
            await trio.sleep(seconds)
