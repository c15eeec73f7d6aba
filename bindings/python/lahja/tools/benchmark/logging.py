import logging as _logging
import sys


def setup_stderr_lahja_logging() -> None:
    """Send every record of the ``lahja`` logger tree, DEBUG and up, to stderr."""
    handler = _logging.StreamHandler(sys.stderr)
    handler.setLevel(_logging.DEBUG)
    lahja_logger = _logging.getLogger("lahja")
    lahja_logger.setLevel(_logging.DEBUG)
    lahja_logger.addHandler(handler)
