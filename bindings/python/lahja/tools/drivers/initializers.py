"""How a driver's endpoint comes to be: served, or run without serving."""
from typing import Any, AsyncContextManager, Callable

from ...base import EndpointAPI
from ...common import ConnectionConfig
from ..engine import EngineAPI


class Initializer:
    """Makes a driver's endpoint for an engine: an async context manager
    that yields the running endpoint."""

    def __init__(self, fn: Callable[..., AsyncContextManager[EndpointAPI]], **kwargs: Any):
        self._fn = fn
        self._kwargs = kwargs

    def __call__(self, engine: EngineAPI) -> AsyncContextManager[EndpointAPI]:
        return self._fn(engine, **self._kwargs)

    def __str__(self) -> str:
        return self._fn.__name__


def _serve(engine: EngineAPI, config: ConnectionConfig) -> AsyncContextManager[EndpointAPI]:
    return engine.endpoint_class.serve(config)


def _run(engine: EngineAPI, name: str) -> AsyncContextManager[EndpointAPI]:
    return engine.endpoint_class(name).run()


def serve_endpoint(config: ConnectionConfig) -> Initializer:
    """An endpoint named config.name serving at config.path."""
    return Initializer(_serve, config=config)


def run_endpoint(name: str) -> Initializer:
    """An endpoint named `name` that serves nothing."""
    return Initializer(_run, name=name)
