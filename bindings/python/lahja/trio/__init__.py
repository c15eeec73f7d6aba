"""lahja on trio."""
from .endpoint import TrioEndpoint  # noqa: F401
