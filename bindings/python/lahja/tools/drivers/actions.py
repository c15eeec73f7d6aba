"""
What a driver does with its endpoint: each factory returns an action, a
callable of (engine, endpoint), synchronous (SyncAction) or not
(AsyncAction).
"""
import functools
import inspect
import logging
import multiprocessing
from typing import Any, Awaitable, Callable, Optional, Tuple, Type, Union

from ...base import EndpointAPI
from ...common import BaseEvent, BaseRequestResponseEvent, BroadcastConfig, ConnectionConfig
from ...exceptions import LahjaError
from ..engine import EngineAPI

logger = logging.getLogger("lahja.driver")


class DidNotThrow(LahjaError):
    """throws(): the action returned instead of raising."""


class SyncAction:
    """fn(engine, endpoint, **kwargs), called as it is."""

    def __init__(self, fn: Callable[..., None], **kwargs: Any) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._kwargs = kwargs

    def __call__(self, engine: EngineAPI, endpoint: EndpointAPI) -> None:
        self._fn(engine, endpoint, **self._kwargs)

    def __str__(self) -> str:
        return self._fn.__name__


class AsyncAction:
    """await coro(engine, endpoint, **kwargs)."""

    def __init__(self, coro: Callable[..., Awaitable[None]], **kwargs: Any) -> None:
        functools.update_wrapper(self, coro)
        self._coro = coro
        self._kwargs = kwargs

    async def __call__(self, engine: EngineAPI, endpoint: EndpointAPI) -> None:
        await self._coro(engine, endpoint, **self._kwargs)

    def __str__(self) -> str:
        return self._coro.__name__


Action = Union[SyncAction, AsyncAction]
EventHandlerFn = Callable[[EndpointAPI, BaseEvent], Any]


async def _call_back(fn: Optional[EventHandlerFn], endpoint: EndpointAPI, ev: BaseEvent) -> None:
    if fn is None:
        return
    result = fn(endpoint, ev)
    if inspect.isawaitable(result):
        await result


async def _wait_for(engine: EngineAPI, endpoint: EndpointAPI, event_type: Type[BaseEvent],
                    on_event: Optional[EventHandlerFn]) -> None:
    ev = await endpoint.wait_for(event_type)
    logger.debug("[%s] got %s", endpoint, ev)
    await _call_back(on_event, endpoint, ev)


def wait_for(event_type: Type[BaseEvent], on_event: Optional[EventHandlerFn] = None
             ) -> AsyncAction:
    """Waits for an event of the type, then calls on_event(endpoint, event)
    (awaited if it is a coroutine function)."""
    return AsyncAction(_wait_for, event_type=event_type, on_event=on_event)


def serve_request(
    request_type: Type[BaseRequestResponseEvent[BaseEvent]],
    get_response: Callable[[EndpointAPI, BaseRequestResponseEvent[BaseEvent]], BaseEvent],
) -> AsyncAction:
    """Waits for a request of the type and answers it with
    get_response(endpoint, request)."""

    async def answer(endpoint: EndpointAPI, req: BaseRequestResponseEvent[BaseEvent]) -> None:
        await endpoint.broadcast(get_response(endpoint, req), config=req.broadcast_config())

    return AsyncAction(_wait_for, event_type=request_type, on_event=answer)


async def _request(engine: EngineAPI, endpoint: EndpointAPI,
                   event: BaseRequestResponseEvent[BaseEvent],
                   config: Optional[BroadcastConfig],
                   on_response: Optional[EventHandlerFn]) -> None:
    response = await endpoint.request(event, config=config)
    await _call_back(on_response, endpoint, response)


def request(event: BaseRequestResponseEvent[BaseEvent], config: Optional[BroadcastConfig] = None,
            on_response: Optional[EventHandlerFn] = None) -> AsyncAction:
    """Sends the request (EndpointAPI.request), then calls
    on_response(endpoint, response)."""
    return AsyncAction(_request, event=event, config=config, on_response=on_response)


async def _connect_to_endpoints(engine: EngineAPI, endpoint: EndpointAPI,
                                configs: Tuple[ConnectionConfig, ...]) -> None:
    await endpoint.connect_to_endpoints(*configs)


def connect_to_endpoints(*configs: ConnectionConfig) -> AsyncAction:
    """EndpointAPI.connect_to_endpoints."""
    return AsyncAction(_connect_to_endpoints, configs=configs)


async def _wait_until_any_endpoint_subscribed_to(engine: EngineAPI, endpoint: EndpointAPI,
                                                 event_type: Type[BaseEvent]) -> None:
    await endpoint.wait_until_any_endpoint_subscribed_to(event_type)


def wait_until_any_endpoint_subscribed_to(event_type: Type[BaseEvent]) -> AsyncAction:
    """EndpointAPI.wait_until_any_endpoint_subscribed_to."""
    return AsyncAction(_wait_until_any_endpoint_subscribed_to, event_type=event_type)


async def _wait_until_connected_to(engine: EngineAPI, endpoint: EndpointAPI, name: str) -> None:
    await endpoint.wait_until_connected_to(name)


def wait_until_connected_to(name: str) -> AsyncAction:
    """EndpointAPI.wait_until_connected_to."""
    return AsyncAction(_wait_until_connected_to, name=name)


async def _broadcast(engine: EngineAPI, endpoint: EndpointAPI, event: BaseEvent,
                     config: Optional[BroadcastConfig]) -> None:
    await endpoint.broadcast(event, config=config)


def broadcast(event: BaseEvent, config: Optional[BroadcastConfig] = None) -> AsyncAction:
    """EndpointAPI.broadcast."""
    return AsyncAction(_broadcast, event=event, config=config)


async def _wait_any_then_broadcast(engine: EngineAPI, endpoint: EndpointAPI, event: BaseEvent,
                                   config: Optional[BroadcastConfig]) -> None:
    await endpoint.wait_until_any_endpoint_subscribed_to(type(event))
    await endpoint.broadcast(event, config=config)


def wait_any_then_broadcast(event: BaseEvent, config: Optional[BroadcastConfig] = None
                            ) -> AsyncAction:
    """Waits until some endpoint subscribes to the event's type, then
    broadcasts it."""
    return AsyncAction(_wait_any_then_broadcast, event=event, config=config)


def throws(action: Action, exc_type: Type[Exception]) -> Action:
    """The action, which must raise exc_type (else DidNotThrow)."""
    if isinstance(action, AsyncAction):
        async def _throws_async(engine: EngineAPI, endpoint: EndpointAPI) -> None:
            try:
                await action(engine, endpoint)
            except exc_type:
                return
            raise DidNotThrow(f"{action} did not raise {exc_type.__name__}")

        return AsyncAction(_throws_async)
    if isinstance(action, SyncAction):
        def _throws(engine: EngineAPI, endpoint: EndpointAPI) -> None:
            try:
                action(engine, endpoint)
            except exc_type:
                return
            raise DidNotThrow(f"{action} did not raise {exc_type.__name__}")

        return SyncAction(_throws)
    raise TypeError(f"Unsupported action: {action!r}")


def checkpoint(name: str) -> Tuple[AsyncAction, AsyncAction]:
    """Two actions, one for each of two drivers: each waits until the
    other reached its own (works across forked processes too)."""
    left, right = multiprocessing.Event(), multiprocessing.Event()

    def side(mine: Any, other: Any) -> AsyncAction:
        async def _checkpoint(engine: EngineAPI, endpoint: EndpointAPI) -> None:
            mine.set()
            while not other.is_set():
                await engine.sleep(0.01)

        _checkpoint.__name__ = f"checkpoint[{name}]"
        return AsyncAction(_checkpoint)

    return side(left, right), side(right, left)
