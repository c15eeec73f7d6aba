from abc import ABC, abstractmethod
from typing import Any, Type

from lahja.asyncio import AsyncioEndpoint
from lahja.base import BaseEndpoint

try:
    from lahja.trio import TrioEndpoint
except ImportError:  # trio missing: only the asyncio backend can run
    TrioEndpoint = None  # type: ignore


class BaseBackend(ABC):
    """An event loop flavour: its endpoint class, how to run, how to sleep."""

    name: str
    Endpoint: Type[BaseEndpoint]

    @staticmethod
    @abstractmethod
    def run(coro: Any, *args: Any) -> None:
        ...

    @staticmethod
    @abstractmethod
    async def sleep(seconds: float) -> None:
        ...


class AsyncioBackend(BaseBackend):
    name = "asyncio"
    Endpoint = AsyncioEndpoint

    @staticmethod
    def run(coro: Any, *args: Any) -> None:
        import asyncio

        loop = asyncio.get_event_loop()
        loop.run_until_complete(coro(*args))
        loop.stop()

    @staticmethod
    async def sleep(seconds: float) -> None:
        import asyncio

        await asyncio.sleep(seconds)


class TrioBackend(BaseBackend):
    name = "trio"
    Endpoint = TrioEndpoint

    @staticmethod
    def run(coro: Any, *args: Any) -> None:
        import trio

        trio.run(coro, *args)

    @staticmethod
    async def sleep(seconds: float) -> None:
        import trio

        await trio.sleep(seconds)
