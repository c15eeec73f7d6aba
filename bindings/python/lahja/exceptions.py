"""The errors lahja raises: lahja's own names and bases."""


class LahjaError(Exception):
    """Base class of every lahja error."""


class BindError(LahjaError):
    """An event already bound (broadcast before) was broadcast again."""


class ConnectionAttemptRejected(LahjaError):
    """A connection to itself, to a name twice, or to one already connected."""


class LifecycleError(LahjaError):
    """A call that the endpoint's state does not allow: starting twice,
    using it before it runs or after it stopped."""


class NoSubscribers(LahjaError):
    """Nobody, this endpoint included, subscribes to the event's type.  Set
    BroadcastConfig's require_subscriber to False to send it anyway."""


class RemoteDisconnected(LahjaError):
    """Every endpoint a request went to disconnected before answering."""


class UnexpectedResponse(LahjaError):
    """A response was not of the type the request expects."""


class WouldBlock(LahjaError):
    """broadcast_nowait found a receiving peer over its high-water mark:
    nothing was sent (this package's broadcast_nowait is bounded)."""
