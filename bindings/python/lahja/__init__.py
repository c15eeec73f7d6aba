"""
lahja: a multi-process event bus, lahja 0.17's API on liblahja.

Endpoints serve and connect over Unix sockets, announce the event types
they consume, and exchange events (broadcast, subscribe, stream,
wait_for, request/response) with Python endpoints (asyncio or trio) and
with C programs using liblahja, on one bus.  See docs/python.md.
"""
from .asyncio import AsyncioEndpoint  # noqa: F401
from .base import EndpointAPI  # noqa: F401
from .common import (  # noqa: F401
    BaseEvent,
    BaseRequestResponseEvent,
    BroadcastConfig,
    ConnectionConfig,
    RawEvent,
    Subscription,
)
from .exceptions import ConnectionAttemptRejected, UnexpectedResponse  # noqa: F401

try:
    from .trio import TrioEndpoint  # noqa: F401
except ImportError:  # trio is not installed: asyncio alone
    pass
