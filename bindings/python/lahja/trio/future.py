"""A future for trio tasks, as lahja's (lahja.trio.future)."""
import concurrent.futures
from typing import Any, Generator, Generic, Optional, TypeVar

import trio

TResult = TypeVar("TResult")


class InvalidState(Exception):
    """result() of a future that is not done."""


class Future(Generic[TResult]):
    """
    A result that a task sets and others await.  ``await future`` waits
    until it is done and gives result(): the value, the exception set
    (raised again), or concurrent.futures.CancelledError once cancelled.
    """

    def __init__(self) -> None:
        self._done = trio.Event()
        self._cancelled = False
        self._result: Optional[TResult] = None
        self._error: Optional[BaseException] = None

    def cancelled(self) -> bool:
        return self._cancelled

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> TResult:
        """The result; raises what was set, CancelledError if cancelled,
        InvalidState if not done yet."""
        if self._cancelled:
            raise concurrent.futures.CancelledError()
        if not self._done.is_set():
            raise InvalidState("result is not ready")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore

    def exception(self) -> Optional[BaseException]:
        """The exception set, or None; InvalidState if not done yet."""
        if self._cancelled:
            raise concurrent.futures.CancelledError()
        if not self._done.is_set():
            raise InvalidState("result is not ready")
        return self._error

    def set_result(self, result: TResult) -> None:
        """Done with this result (once done, later outcomes are ignored)."""
        if self._done.is_set():
            return
        self._result = result
        self._done.set()

    def set_exception(self, exc_value: BaseException, exc_tb: Any = None) -> None:
        """Done with this error, raised again by result() and await (once
        done, later outcomes are ignored)."""
        if self._done.is_set():
            return
        if exc_tb is not None:
            exc_value = exc_value.with_traceback(exc_tb)
        self._error = exc_value
        self._done.set()

    def cancel(self) -> bool:
        """Cancels it if not done; False if it was done already."""
        if self._done.is_set():
            return False
        self._cancelled = True
        self._done.set()
        return True

    def __await__(self) -> Generator[Any, None, TResult]:
        yield from self._done.wait().__await__()
        return self.result()
