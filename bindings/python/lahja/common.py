"""
Events, configurations and subscriptions, as lahja's, and how events
travel: an event class has a type name on the bus (its module and
qualified name, or a ``lahja_type`` it sets), and its instances are
pickled, except RawEvent's, whose payload is raw bytes, so that C
endpoints and Python ones exchange events.
"""
from abc import ABC, abstractmethod
import pickle
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    NamedTuple,
    Optional,
    Set,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from .exceptions import BindError
from .typing import RequestID

__all__ = [
    "BaseEvent",
    "BaseRequestResponseEvent",
    "BroadcastConfig",
    "ConnectionConfig",
    "RawEvent",
    "Subscription",
    "decode_event",
    "encode_event",
    "event_class_for",
]

_PICKLE = pickle.HIGHEST_PROTOCOL


class Subscription:
    """What subscribe() returns: unsubscribe() ends the subscription."""

    def __init__(self, unsubscribe_fn: Callable[[], Any]) -> None:
        self._unsubscribe_fn = unsubscribe_fn

    def unsubscribe(self) -> None:
        """Ends the subscription (again: nothing)."""
        self._unsubscribe_fn()


class BroadcastConfig:
    """
    Where a broadcast may go: only to ``filter_endpoint`` (a name), as the
    response to request ``filter_event_id``, only to this endpoint
    (``internal``), and whether nobody subscribing is an error
    (``require_subscriber``, NoSubscribers).  internal with filter_endpoint
    is ValueError.
    """

    def __init__(
        self,
        filter_endpoint: Optional[str] = None,
        filter_event_id: Optional[RequestID] = None,
        internal: bool = False,
        require_subscriber: bool = True,
    ) -> None:
        self.filter_endpoint = filter_endpoint
        self.filter_event_id = filter_event_id
        self.internal = internal
        self.require_subscriber = require_subscriber
        if self.internal and self.filter_endpoint is not None:
            raise ValueError("`internal` can not be used with `filter_endpoint`")

    def allowed_to_receive(self, endpoint: str) -> bool:
        """Whether endpoint `endpoint` may receive what this config sends."""
        return self.filter_endpoint is None or self.filter_endpoint == endpoint

    def __str__(self) -> str:
        where = "internal" if self.internal else "external"
        return (f"BroadcastConfig[{where} / endpoint={self.filter_endpoint} / "
                f"id={self.filter_event_id}]")


_registry: Dict[str, type] = {}


class BaseEvent:
    """
    An event.  Subclass it; an instance is bound when broadcast (its origin
    and, for a request, its id are set) and cannot be broadcast again.

    Its type on the bus is ``"<module>.<qualname>"`` of its class, unless
    the class sets ``lahja_type`` (a name of 1 to 255 bytes, not ending in
    ``*``).  Matching is by exact type: a subclass's events do not reach
    the subscribers of its base.
    """

    _origin = ""
    _id: Optional[RequestID] = None
    is_bound = False
    _lahja_raw = False
    _lahja_name = "lahja.common.BaseEvent"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("lahja_type")
        if own is not None and not (isinstance(own, str) and 0 < len(own.encode()) <= 255
                                    and not own.endswith("*")):
            raise TypeError(f"{cls.__qualname__}.lahja_type must be a name of 1 to 255 bytes "
                            f"not ending in '*', not {own!r}")
        cls._lahja_name = own if own else f"{cls.__module__}.{cls.__qualname__}"
        _registry.setdefault(cls._lahja_name, cls)

    @classmethod
    def event_type_name(cls) -> str:
        """The class's type name on the bus."""
        return cls._lahja_name

    def get_origin(self) -> str:
        """The name of the endpoint that broadcast it; AttributeError while
        it is not bound."""
        if not self.is_bound:
            raise AttributeError("Event is not bound")
        return self._origin

    def bind(self, endpoint: Any, id: Optional[RequestID]) -> None:
        """Binds it to the endpoint broadcasting it (and the request's id);
        BindError if it is bound already."""
        if self.is_bound:
            raise BindError(f"Event is already bound: {self!r}")
        self._origin = endpoint.name
        self._id = id
        self.is_bound = True

    def broadcast_config(self, internal: bool = False) -> BroadcastConfig:
        """The config that answers this event: to its origin, as the
        response to its id (internal: within this endpoint)."""
        if internal:
            return BroadcastConfig(internal=True, filter_event_id=self._id)
        return BroadcastConfig(filter_endpoint=self._origin, filter_event_id=self._id)


TResponse = TypeVar("TResponse", bound=BaseEvent)


class BaseRequestResponseEvent(ABC, BaseEvent, Generic[TResponse]):
    """A request: its expected_response_type() is the class the answer
    must be an instance of (else UnexpectedResponse)."""

    @staticmethod
    @abstractmethod
    def expected_response_type() -> Type[TResponse]:
        """The type of the expected response."""


class RawEvent(BaseEvent):
    """
    An event whose payload is raw bytes, for exchanging events with C
    endpoints: a subclass names the type, ``class Tick(RawEvent):
    lahja_type = "Tick"``, and its instances carry ``payload`` (bytes) as
    it goes on the wire.  A subclass that also defines a static
    ``expected_response_type()`` is a request.
    """

    _lahja_raw = True

    def __init__(self, payload: Union[bytes, bytearray, memoryview] = b"") -> None:
        self.payload = bytes(payload)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.payload!r})"


class ConnectionConfig(NamedTuple):
    """Where an endpoint serves: its name and its socket's path."""

    name: str
    path: Path

    @classmethod
    def from_name(cls, name: str, base_path: Optional[Path] = None) -> "ConnectionConfig":
        """The config of endpoint `name` at ``<base_path>/<name>.ipc``, or
        ``<name>.ipc`` in the current directory when base_path is None (as
        lahja); TypeError if base_path is not a directory."""
        if base_path is None:
            return cls(name=name, path=Path(f"{name}.ipc"))
        base_path = Path(base_path)
        if base_path.is_dir():
            return cls(name=name, path=base_path / f"{name}.ipc")
        raise TypeError("Provided `base_path` must be a directory")


def event_class_for(type_name: str) -> Optional[type]:
    """The event class this process knows under a type name, or None."""
    return _registry.get(type_name)


def encode_event(item: BaseEvent) -> Tuple[str, Any]:
    """An event's type name and payload: its bytes for a RawEvent, its
    pickle for any other."""
    cls = type(item)
    if cls._lahja_raw:
        return cls._lahja_name, item.payload
    return cls._lahja_name, pickle.dumps(item, _PICKLE)


def decode_event(cev: Any, cls: type) -> BaseEvent:
    """The event a core event carries, bound to its origin (and id, for a
    request): a `cls` around the payload if cls is a RawEvent, else the
    unpickled event."""
    if cls._lahja_raw:
        ev = cls.__new__(cls)
        ev.payload = cev.payload
    else:
        ev = pickle.loads(cev)
    ev._origin = cev.origin
    ev._id = cev.id or None  # a request's id (a response's too), else 0
    ev.is_bound = True
    return ev


# lahja's wire messages, kept for code that imports them; this package's
# wire is liblahja's (docs/protocol.md).

class Message(ABC):
    """A message between two endpoints (not used on this package's wire)."""


class Broadcast(NamedTuple):
    event: Union[BaseEvent, bytes]
    config: Optional[BroadcastConfig]


class SubscriptionsUpdated(NamedTuple):
    subscriptions: Set[Type[BaseEvent]]
    response_expected: bool


class SubscriptionsAck:
    pass


class Hello(NamedTuple):
    name: str


for _m in (Broadcast, SubscriptionsUpdated, SubscriptionsAck, Hello):
    Message.register(_m)

Msg = Union[Broadcast, Hello, SubscriptionsUpdated, SubscriptionsAck]


class RequestIDGenerator:
    """Ids made of a base and a counter, as lahja's (this package's request
    ids are the C core's instead)."""

    def __init__(self, base: bytes) -> None:
        self._base = base
        self._counter = 0

    def __iter__(self) -> "RequestIDGenerator":
        return self

    def __next__(self) -> bytes:
        self._counter += 1
        return self._base + self._counter.to_bytes(4, "little")


def should_endpoint_receive_item(
    item: BaseEvent,
    config: Optional[BroadcastConfig],
    endpoint_name: str,
    subscribed_events: Set[Type[BaseEvent]],
) -> bool:
    """lahja's routing rule: filtered to another endpoint, no; a response,
    yes; else whether the exact type is subscribed."""
    if config is not None and not config.allowed_to_receive(endpoint_name):
        return False
    if config is not None and config.filter_event_id is not None:
        return True
    return type(item) in subscribed_events
