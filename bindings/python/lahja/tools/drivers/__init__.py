"""Drivers: an initializer (serve or run an endpoint) and actions on it."""
from .actions import (  # noqa: F401
    broadcast,
    checkpoint,
    connect_to_endpoints,
    request,
    serve_request,
    throws,
    wait_any_then_broadcast,
    wait_for,
    wait_until_any_endpoint_subscribed_to,
    wait_until_connected_to,
)
from .driver import driver  # noqa: F401
from .initializers import run_endpoint, serve_endpoint  # noqa: F401
