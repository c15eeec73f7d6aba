"""
The endpoint API, and what the asyncio and trio endpoints share.

An endpoint here is a liblahja endpoint (``_core.Endpoint``): the
connections, the handshake, the subscriptions peers announce, routing,
backpressure and request ids are all the C core's.  What this layer adds
is lahja's Python face: event classes, encoded by ``lahja.common`` (pickle,
or raw bytes), consumers kept per type on the Python side, and the calls
that wait, each a call of the core's callback form awaited by the
framework (``_call``), which cancels the core's call when the awaiting
task is cancelled.

One core subscription is kept per event type while any Python consumer
(handler, stream, ``wait_for``) wants that type, so peers learn of it
through the core; the core calls ``_Consumers.dispatch``, which decodes
the event once and hands it to every consumer.
"""
from abc import ABC, abstractmethod
from collections import deque
import inspect
import logging
from typing import (
    Any,
    AsyncContextManager,
    AsyncGenerator,
    Awaitable,
    Callable,
    Dict,
    List,
    Optional,
    Set,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from . import _core
from .common import (
    BaseEvent,
    BaseRequestResponseEvent,
    BroadcastConfig,
    ConnectionConfig,
    Subscription,
    decode_event,
    encode_event,
    event_class_for,
)
from .exceptions import (
    BindError,
    ConnectionAttemptRejected,
    LahjaError,
    LifecycleError,
    NoSubscribers,
    RemoteDisconnected,
    UnexpectedResponse,
    WouldBlock,
)
from .typing import EventAPI, RequestID  # noqa: F401 (lahja.base re-exports EventAPI)

TResponse = TypeVar("TResponse", bound=BaseEvent)
TWaitForEvent = TypeVar("TWaitForEvent", bound=BaseEvent)
TSubscribeEvent = TypeVar("TSubscribeEvent", bound=BaseEvent)
TStreamEvent = TypeVar("TStreamEvent", bound=BaseEvent)

# How many events a stream holds before it holds the core instead (see
# _driver): past it, nothing more is read until the consumer catches up.
STREAM_HIGH_WATER = 1000


def _type_name(event_type: Type[BaseEvent]) -> str:
    return event_type.event_type_name()


# ------------------------------------------------------------------ errors

_ERRORS = {
    _core.ENOSUBSCRIBERS: NoSubscribers,
    _core.EBIND: BindError,
    _core.ECONNREJECTED: ConnectionAttemptRejected,
    _core.ELIFECYCLE: LifecycleError,
    _core.EREMOTEDISCONNECTED: RemoteDisconnected,
    _core.EUNEXPECTEDRESPONSE: UnexpectedResponse,
    _core.EAGAIN: WouldBlock,
}


def error_for(status: int, message: str = "") -> BaseException:
    """The exception for a core status (a negative code)."""
    text = message or _core.strerror(status)
    if status == _core.ETIMEDOUT:
        return TimeoutError(text)
    cls = _ERRORS.get(status)
    if cls is not None:
        return cls(text)
    return LahjaError(f"{text} ({status})")


def converted(exc: "_core.Error") -> BaseException:
    """A core exception as lahja's."""
    return error_for(exc.code, str(exc))


# --------------------------------------------------------------- the views

class RemoteEndpoint:
    """
    A connected endpoint as this one sees it, live: its name, and the
    event types it subscribes to now (those of a class this process knows;
    ``subscribed_type_names`` has every name, a C peer's too).
    """

    __slots__ = ("name", "_endpoint")

    def __init__(self, name: str, endpoint: "BaseEndpoint") -> None:
        self.name = name
        self._endpoint = endpoint

    @property
    def subscribed_type_names(self) -> Tuple[str, ...]:
        ep = self._endpoint._core_ep
        if ep is None or not ep.is_running:
            return ()
        for n, types in ep.peers():
            if n == self.name:
                return types
        return ()

    def get_subscribed_events(self) -> Set[Type[BaseEvent]]:
        """The event classes it subscribes to now."""
        return _classes(self.subscribed_type_names)

    def __repr__(self) -> str:
        return f"<RemoteEndpoint {self.name}>"


def _classes(names) -> Set[Type[BaseEvent]]:
    out = set()
    for n in names:
        cls = event_class_for(n)
        if cls is not None:
            out.add(cls)
    return out


# ------------------------------------------------------------ the API

class EndpointAPI(ABC):
    """
    An endpoint: it serves and connects to other endpoints, broadcasts
    events, consumes them (subscribe, stream, wait_for), makes and answers
    requests, and knows who is connected and what each subscribes to.
    """

    __slots__ = ("name",)

    name: str

    @property
    @abstractmethod
    def is_running(self) -> bool:
        ...

    @property
    @abstractmethod
    def is_serving(self) -> bool:
        ...

    @abstractmethod
    def run(self) -> AsyncContextManager["EndpointAPI"]:
        """``async with endpoint.run():`` the endpoint runs, without serving."""

    @classmethod
    @abstractmethod
    def serve(cls, config: ConnectionConfig) -> AsyncContextManager["EndpointAPI"]:
        """``async with Endpoint.serve(config) as ep:`` runs an endpoint named
        config.name that serves at config.path."""

    @abstractmethod
    async def connect_to_endpoints(self, *endpoints: ConnectionConfig) -> None:
        """Connects to each endpoint and returns once all are connected."""

    @abstractmethod
    def is_connected_to(self, endpoint_name: str) -> bool:
        ...

    @abstractmethod
    async def wait_until_connected_to(self, endpoint_name: str) -> None:
        ...

    @abstractmethod
    def get_connected_endpoints_and_subscriptions(
        self,
    ) -> Tuple[Tuple[str, Set[Type[BaseEvent]]], ...]:
        ...

    @abstractmethod
    async def wait_until_connections_change(self) -> None:
        ...

    @abstractmethod
    async def broadcast(self, item: BaseEvent, config: Optional[BroadcastConfig] = None) -> None:
        ...

    @abstractmethod
    def broadcast_nowait(
        self, item: BaseEvent, config: Optional[BroadcastConfig] = None
    ) -> None:
        ...

    @abstractmethod
    async def request(
        self,
        item: BaseRequestResponseEvent[TResponse],
        config: Optional[BroadcastConfig] = None,
    ) -> TResponse:
        ...

    @abstractmethod
    def subscribe(
        self,
        event_type: Type[TSubscribeEvent],
        handler: Callable[[TSubscribeEvent], Union[Any, Awaitable[Any]]],
    ) -> Subscription:
        ...

    @abstractmethod
    def stream(
        self, event_type: Type[TStreamEvent], num_events: Optional[int] = None
    ) -> AsyncGenerator[TStreamEvent, None]:
        ...

    @abstractmethod
    async def wait_for(self, event_type: Type[TWaitForEvent]) -> TWaitForEvent:
        ...

    @abstractmethod
    def get_subscribed_events(self) -> Set[Type[BaseEvent]]:
        ...

    @abstractmethod
    async def wait_until_endpoint_subscriptions_change(self) -> None:
        ...

    @abstractmethod
    def is_endpoint_subscribed_to(
        self, remote_endpoint: str, event_type: Type[BaseEvent]
    ) -> bool:
        ...

    @abstractmethod
    def is_any_endpoint_subscribed_to(self, event_type: Type[BaseEvent]) -> bool:
        ...

    @abstractmethod
    def are_all_endpoints_subscribed_to(
        self, event_type: Type[BaseEvent], include_self: bool = True
    ) -> bool:
        ...

    @abstractmethod
    async def wait_until_endpoint_subscribed_to(
        self, remote_endpoint: str, event: Type[BaseEvent]
    ) -> None:
        ...

    @abstractmethod
    async def wait_until_any_endpoint_subscribed_to(self, event: Type[BaseEvent]) -> None:
        ...

    @abstractmethod
    async def wait_until_all_endpoints_subscribed_to(
        self, event: Type[BaseEvent], *, include_self: bool = True
    ) -> None:
        ...


# ------------------------------------------------------------- streams

class StreamQueue:
    """
    A stream's events: put by the core's dispatch, taken by the stream.
    Past STREAM_HIGH_WATER it holds the pump (nothing more is read) until
    the stream has taken it down to half.  A framework's subclass says how
    the stream waits for an event (its ``get``) and is woken (``wake``).
    """

    __slots__ = ("items", "pump", "held")

    def __init__(self, pump) -> None:
        self.items: deque = deque()
        self.pump = pump
        self.held = False

    def put(self, ev) -> None:
        self.items.append(ev)
        self.wake()
        if not self.held and len(self.items) >= STREAM_HIGH_WATER:
            self.held = True
            self.pump.hold()

    def take(self):
        """The next event (there is one)."""
        ev = self.items.popleft()
        if self.held and len(self.items) < STREAM_HIGH_WATER // 2:
            self.release()
        return ev

    def release(self) -> None:
        """Lets the pump run again, if this queue held it."""
        if self.held:
            self.held = False
            self.pump.release()

    def wake(self) -> None:
        raise NotImplementedError


# ------------------------------------------------------------- consumers

class _Consumers:
    """
    Every Python consumer of one event type on one endpoint, behind one
    core subscription.  ``dispatch`` is the core's handler: it decodes the
    event once and gives it to the streams, the sync handlers and the
    async ones (started as tasks), in that order.
    """

    __slots__ = ("endpoint", "type_name", "event_type", "handlers", "async_handlers",
                 "queues", "sub")

    def __init__(self, endpoint: "BaseEndpoint", event_type: Type[BaseEvent]) -> None:
        self.endpoint = endpoint
        self.event_type = event_type
        self.type_name = _type_name(event_type)
        self.handlers: List[Callable[[Any], Any]] = []
        self.async_handlers: List[Callable[[Any], Awaitable[Any]]] = []
        self.queues: List[Any] = []
        self.sub = None

    def empty(self) -> bool:
        return not (self.handlers or self.async_handlers or self.queues)

    def dispatch(self, cev: "_core.Event") -> None:
        ep = self.endpoint
        try:
            ev = decode_event(cev, self.event_type)
        except Exception:
            ep.logger.warning("%s: cannot decode an event of type %s from %s",
                              ep, cev.type, cev.origin, exc_info=True)
            return
        for q in self.queues:
            q.put(ev)
        for h in self.handlers:
            try:
                h(ev)
            except Exception:
                ep.logger.debug("%s: Error in subscription handler %s", ep, h, exc_info=True)
        for h in self.async_handlers:
            ep._spawn_handler(h, ev)


# ---------------------------------------------------------- the base

class BaseEndpoint(EndpointAPI):
    """
    What the asyncio and trio endpoints share: the queries, which ask the
    core; the consumers; broadcasting and requests.  A subclass provides
    the framework: ``_pump()`` (the driver of the core loop), ``_call``
    (await a core call in callback form), ``_spawn_handler``,
    ``_new_queue`` and the lifecycle.
    """

    __slots__ = ()
    logger = logging.getLogger("lahja.endpoint.Endpoint")
    has_snappy_support = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._core_ep: Optional[_core.Endpoint] = None
        self._consumers: Dict[Type[BaseEvent], _Consumers] = {}
        self._futures: Dict[RequestID, Any] = {}

    def __str__(self) -> str:
        return f"Endpoint[{self.name}]"

    def __repr__(self) -> str:
        return f"<{self.name}>"

    def __reduce__(self) -> None:  # type: ignore
        raise NotImplementedError("Endpoints cannot be pickled")

    # -------------------------------------------------------- the core

    def _ep(self) -> "_core.Endpoint":
        ep = self._core_ep
        if ep is None or not ep.is_running:
            raise LifecycleError(f"{self} is not running")
        return ep

    def _new_core_endpoint(self) -> "_core.Endpoint":
        return _core.Endpoint(self.name)

    @property
    def _connections(self) -> Tuple[RemoteEndpoint, ...]:
        """The connected endpoints (lahja's internal view, kept for its
        tests): each with ``name`` and ``get_subscribed_events()``."""
        ep = self._core_ep
        if ep is None or not ep.is_running:
            return ()
        return tuple(RemoteEndpoint(n, self) for n, _ in ep.peers())

    def join_nats(self, servers: str, **options: Any) -> None:
        """Reaches the endpoints of other hosts through a NATS cluster:
        ``servers`` is one URL or several, comma-separated; ``options`` are
        lahja_join_nats's (prefix, user, password, token, creds_file, host,
        heartbeat_ms, dead_after_ms).  Call it once the endpoint runs; it
        blocks while it connects to the first server.  Not in lahja."""
        ep = self._core_ep
        if ep is None or not ep.is_running:
            raise LifecycleError("join_nats: the endpoint is not running")
        ep.join_nats(servers, **options)

    # ------------------------------------------------------- queries

    def is_connected_to(self, endpoint_name: str) -> bool:
        """True for this endpoint's own name, and a connected one's."""
        if endpoint_name == self.name:
            return True
        ep = self._core_ep
        return ep is not None and ep.is_running and bool(ep.is_connected_to(endpoint_name))

    def get_connected_endpoints_and_subscriptions(
        self,
    ) -> Tuple[Tuple[str, Set[Type[BaseEvent]]], ...]:
        """This endpoint and every connected one, each with its event types."""
        own = ((self.name, self.get_subscribed_events()),)
        ep = self._core_ep
        if ep is None or not ep.is_running:
            return own
        return own + tuple((n, _classes(types)) for n, types in ep.peers())

    def get_subscribed_events(self) -> Set[Type[BaseEvent]]:
        """The event types this endpoint consumes now."""
        return set(self._consumers)

    def is_endpoint_subscribed_to(
        self, remote_endpoint: str, event_type: Type[BaseEvent]
    ) -> bool:
        """True if that endpoint (a connected one, or this one) subscribes to
        the type."""
        if remote_endpoint == self.name:
            return event_type in self._consumers
        ep = self._core_ep
        return (ep is not None and ep.is_running
                and bool(ep.is_endpoint_subscribed_to(remote_endpoint, _type_name(event_type))))

    def is_any_endpoint_subscribed_to(self, event_type: Type[BaseEvent]) -> bool:
        """True if this endpoint or a connected one subscribes to the type."""
        if event_type in self._consumers:
            return True
        ep = self._core_ep
        return (ep is not None and ep.is_running
                and bool(ep.is_any_endpoint_subscribed_to(_type_name(event_type))))

    def are_all_endpoints_subscribed_to(
        self, event_type: Type[BaseEvent], include_self: bool = True
    ) -> bool:
        """True if every connected endpoint, and this one unless
        include_self is False, subscribes to the type."""
        if include_self and event_type not in self._consumers:
            return False
        ep = self._core_ep
        if ep is None or not ep.is_running:
            return True
        return bool(ep.are_all_endpoints_subscribed_to(_type_name(event_type), False))

    def maybe_raise_no_subscribers_exception(
        self, config: Optional[BroadcastConfig], event_type: Type[BaseEvent]
    ) -> None:
        """Raises NoSubscribers if nobody, this endpoint included, subscribes
        to the type and the config requires a subscriber (the default) and is
        not a response."""
        if config is not None and (not config.require_subscriber
                                   or config.filter_event_id is not None):
            return
        if not self.is_any_endpoint_subscribed_to(event_type):
            raise NoSubscribers(f"no subscriptions for {event_type.__name__}")

    # ------------------------------------------------------------ waits

    async def wait_until_connected_to(self, endpoint_name: str) -> None:
        """Returns once connected to that endpoint (at once for its own name)."""
        if self.is_connected_to(endpoint_name):
            return
        await self._call(self._ep().wait_until_connected_to, endpoint_name, None)

    async def wait_until_connections_change(self) -> None:
        """Returns at the next change of the set of connected endpoints."""
        await self._call(self._ep().wait_until_connections_change, None)

    async def wait_until_endpoint_subscriptions_change(self) -> None:
        """Returns at the next change of any endpoint's subscriptions, this
        one's included, or of the set of connected endpoints."""
        await self._call(self._ep().wait_until_endpoint_subscriptions_change, None)

    async def wait_until_endpoint_subscribed_to(
        self, remote_endpoint: str, event: Type[BaseEvent]
    ) -> None:
        """Returns once that endpoint subscribes to the type."""
        await self._call(self._ep().wait_until_endpoint_subscribed_to, remote_endpoint,
                         _type_name(event), None)

    async def wait_until_any_endpoint_subscribed_to(self, event: Type[BaseEvent]) -> None:
        """Returns once this endpoint or a connected one subscribes to the type."""
        if event in self._consumers:
            return
        await self._call(self._ep().wait_until_any_endpoint_subscribed_to,
                         _type_name(event), None)

    async def wait_until_all_endpoints_subscribed_to(
        self, event: Type[BaseEvent], *, include_self: bool = True
    ) -> None:
        """Returns once every connected endpoint, and this one unless
        include_self is False, subscribes to the type."""
        await self._call(self._ep().wait_until_all_endpoints_subscribed_to,
                         _type_name(event), bool(include_self), None)

    # -------------------------------------------------------- consuming

    def _consumers_for(self, event_type: Type[BaseEvent]) -> _Consumers:
        c = self._consumers.get(event_type)
        if c is None:
            c = _Consumers(self, event_type)
            ep = self._core_ep
            if ep is not None and ep.is_running:
                c.sub = ep.subscribe(c.type_name, c.dispatch)
                self._pump().kick()
            self._consumers[event_type] = c
        return c

    def _consumer_gone(self, c: _Consumers) -> None:
        if not c.empty() or self._consumers.get(c.event_type) is not c:
            return
        del self._consumers[c.event_type]
        if c.sub is not None:
            c.sub.cancel()
            c.sub = None
            if self._core_ep is not None and self._core_ep.is_running:
                self._pump().kick()

    def _subscribe_all(self) -> None:
        """At start: the core subscriptions of what was subscribed before."""
        for c in self._consumers.values():
            c.sub = self._core_ep.subscribe(c.type_name, c.dispatch)

    def subscribe(
        self,
        event_type: Type[TSubscribeEvent],
        handler: Callable[[TSubscribeEvent], Union[Any, Awaitable[Any]]],
    ) -> Subscription:
        """Calls handler(event) for every event of exactly that type until
        the subscription's unsubscribe().  A coroutine function runs as a
        task of its own per event.  A handler that raises is logged (at
        DEBUG, lahja's "Error in subscription handler") and the others run."""
        c = self._consumers_for(event_type)
        is_async = _is_coroutine_function(handler)
        (c.async_handlers if is_async else c.handlers).append(handler)

        def unsubscribe() -> None:
            lst = c.async_handlers if is_async else c.handlers
            try:
                lst.remove(handler)
            except ValueError:
                return
            self._consumer_gone(c)

        return Subscription(unsubscribe)

    # ------------------------------------------------------ broadcasting

    def _prepare(self, item: BaseEvent, config: Optional[BroadcastConfig]):
        """What broadcasting `item` takes: the running core endpoint, its
        type name and payload, and the config's fields.  A bound event is
        BindError.  NoSubscribers (lahja's rule: checked for the default
        config only) is left to the core, which checks it as it routes."""
        if item.is_bound:
            raise BindError(f"Event is already bound: {item!r}")
        ep = self._ep()
        name, payload = encode_event(item)
        if config is None:
            return ep, name, payload, None, 0, False, True
        return (ep, name, payload, config.filter_endpoint, config.filter_event_id or 0,
                config.internal, False)

    def _sent(self, item: BaseEvent, fid: int) -> None:
        # A response goes at once (someone waits for it); other broadcasts
        # may wait for a busy loop, to leave in one write (_driver).
        if fid:
            self._pump().kick_now()
        else:
            self._pump().kick_lazy()
        item.bind(self, None)

    async def broadcast(self, item: BaseEvent, config: Optional[BroadcastConfig] = None) -> None:
        """Broadcasts the event to every endpoint, this one included, that
        subscribes to its type and that config allows; returns once it is
        queued for each under its high-water mark, waiting while a peer is
        over it.  NoSubscribers as lahja's; the event is bound: broadcasting
        it again is BindError."""
        ep, name, payload, fe, fid, internal, require = self._prepare(item, config)
        try:
            ep.broadcast_nowait(name, payload, fe, fid, internal, require)
        except _core.WouldBlock:
            # A peer is over its high-water mark: wait for room.
            await self._call(self._broadcast_waiting, name, payload, fe, fid, internal, require)
            item.bind(self, None)
        except _core.Error as e:
            raise converted(e) from None
        else:
            self._sent(item, fid)

    def _broadcast_waiting(self, name, payload, fe, fid, internal, require, callback):
        # None when room was made meanwhile: queued already, no callback.
        return self._ep().broadcast(name, payload, fe, fid, internal, require,
                                    timeout=None, callback=callback)

    def broadcast_nowait(self, item: BaseEvent, config: Optional[BroadcastConfig] = None) -> None:
        """As broadcast, without waiting: the event is queued for every
        receiver at once.  Bounded, unlike lahja's: when a receiving peer is
        over its high-water mark it raises WouldBlock (naming the peer) and
        queues nothing."""
        ep, name, payload, fe, fid, internal, require = self._prepare(item, config)
        try:
            ep.broadcast_nowait(name, payload, fe, fid, internal, require)
        except _core.Error as e:
            raise converted(e) from None
        self._sent(item, fid)

    async def request(
        self,
        item: BaseRequestResponseEvent[TResponse],
        config: Optional[BroadcastConfig] = None,
    ) -> TResponse:
        """Broadcasts the request and returns the first response to it,
        which must be an instance of item.expected_response_type()
        (else UnexpectedResponse).  If every endpoint it went to
        disconnects before answering, RemoteDisconnected.  Cancelling the
        awaiting task withdraws the request."""
        ep, name, payload, fe, _, internal, require = self._prepare(item, config)
        expected = item.expected_response_type()
        if internal:
            fe = self.name
        waiter = self._waiter()
        try:
            op = ep.request(name, _type_name(expected), payload, fe, require, None,
                            callback=waiter.callback)
        except _core.Error as e:
            raise converted(e) from None
        rid = op.id
        item.bind(self, rid)
        self._futures[rid] = waiter
        self._pump().kick_now()
        try:
            cev = await waiter.wait(op)
        finally:
            self._futures.pop(rid, None)
        return decode_event(cev, expected)

    # ------------------------------------------------------ connecting

    async def connect_to_endpoints(self, *endpoints: ConnectionConfig) -> None:
        """Connects to each endpoint (waiting for its socket to appear, up
        to 30 s) and returns once every one is connected.  Its own name, a
        name twice, or one already connected: ConnectionAttemptRejected."""
        names = [c.name for c in endpoints]
        if self.name in names:
            raise ConnectionAttemptRejected("Cannot connect an endpoint to itself.")
        if len(set(names)) != len(names):
            raise ConnectionAttemptRejected(f"Duplicate endpoints in {names}")
        for n in names:
            if self.is_connected_to(n):
                raise ConnectionAttemptRejected(f"Already connected to {n}")
        await self._call(self._ep().connect, [(c.name, str(c.path)) for c in endpoints], 30.0)

    # ---------------------------------------------------------- streams

    # What num_events=0 gives: nothing (lahja's asyncio endpoint) or one
    # event (its trio endpoint).
    _stream_zero_is_one = False

    async def stream(
        self, event_type: Type[TStreamEvent], num_events: Optional[int] = None
    ) -> AsyncGenerator[TStreamEvent, None]:
        """The events of exactly that type, as they come; after num_events
        of them it ends (None: never; 0: see _stream_zero_is_one).  It
        subscribes at its first step and unsubscribes however it ends
        (exhausted, closed, broken out of, cancelled).  A consumer that
        falls STREAM_HIGH_WATER events behind holds the endpoint's reading
        until it catches up, so nothing is dropped (the peers' high-water
        marks slow their publishers)."""
        limit = num_events
        if limit is not None and limit <= 0:
            if not self._stream_zero_is_one:
                return
            limit = 1
        q = self._new_queue()
        c = self._consumers_for(event_type)
        c.queues.append(q)
        try:
            n = 0
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

    async def _run_handler(self, handler, ev) -> None:
        """An async handler's run for one event; what it raises is logged."""
        try:
            await handler(ev)
        except Exception:
            self.logger.debug("%s: Error in subscription handler %s", self, handler,
                              exc_info=True)

    def _last_error(self) -> str:
        """The core's account of its last failure, for an exception's text."""
        ep = self._core_ep
        return ep.last_error if ep is not None else ""

    # ------------------------------------------------------------ hooks

    def _pump(self):
        """The driver of the core's loop for this endpoint's framework."""
        raise NotImplementedError

    def _waiter(self):
        """A one-shot waiter for a core call: ``callback(status, value=None)``
        for the core, ``await wait(op)`` for the caller (cancelling op if the
        caller is cancelled)."""
        raise NotImplementedError

    async def _call(self, start, *args):
        """Starts a core call in callback form, start(*args, callback), and
        awaits its end; a start that returns None (done at once) is done."""
        waiter = self._waiter()
        try:
            op = start(*args, waiter.callback)
        except _core.Error as e:
            raise converted(e) from None
        if op is None:  # done as it started: no callback comes
            return None
        self._pump().kick()
        return await waiter.wait(op)

    def _spawn_handler(self, handler, ev) -> None:
        """Runs an async handler for one event, on its own."""
        raise NotImplementedError

    def _new_queue(self) -> StreamQueue:
        """A stream's queue, of the framework's kind."""
        raise NotImplementedError


def _is_coroutine_function(fn) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))
