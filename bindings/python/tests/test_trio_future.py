"""lahja.trio.future.Future: outcomes, awaiting, cancellation."""
import concurrent.futures

import pytest
import trio

from lahja.trio.future import Future, InvalidState


class Boom(Exception):
    pass


def test_a_new_future_has_no_outcome():
    future = Future()
    assert not future.done() and not future.cancelled()
    with pytest.raises(InvalidState):
        future.result()
    with pytest.raises(InvalidState):
        future.exception()


@pytest.mark.trio
async def test_await_returns_the_result_set_later():
    future = Future()

    async def resolve():
        await trio.sleep(0.01)
        future.set_result("done")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(resolve)
        assert await future == "done"
    assert future.exception() is None


@pytest.mark.trio
async def test_await_raises_the_error_set():
    future = Future()
    try:
        raise Boom("testing")
    except Boom as err:
        future.set_exception(err, err.__traceback__)
    with pytest.raises(Boom, match="testing"):
        await future
    assert isinstance(future.exception(), Boom)


@pytest.mark.trio
async def test_cancel_raises_concurrent_cancelled_error():
    future = Future()
    assert future.cancel() is True
    assert future.cancelled() and future.done()
    with pytest.raises(concurrent.futures.CancelledError):
        await future
    with pytest.raises(concurrent.futures.CancelledError):
        future.exception()


def test_the_first_outcome_wins():
    future = Future()
    future.set_result(1)
    assert future.cancel() is False
    future.set_result(2)
    future.set_exception(Boom())
    assert future.result() == 1
