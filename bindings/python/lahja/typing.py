"""Types shared by the package's modules."""
from abc import ABC, abstractmethod
from typing import NewType

# A request's id: the C core's 64-bit id of the request.
RequestID = NewType("RequestID", int)


class EventAPI(ABC):
    """What an event object of a framework offers (asyncio.Event, trio.Event)."""

    @abstractmethod
    def is_set(self) -> bool:
        ...

    @abstractmethod
    def set(self) -> None:
        ...

    @abstractmethod
    async def wait(self) -> None:
        ...
