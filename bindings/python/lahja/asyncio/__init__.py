"""lahja on asyncio."""
from .endpoint import AsyncioEndpoint  # noqa: F401
