"""
The pytest_trio plugin, run by pytest's own pytester in a subprocess
session: trio tests, trio fixtures yielding inside nurseries and torn
down in reverse, a plain fixture over trio fixtures with parameters, the
nursery fixture, failures reported, and asyncio tests beside trio ones.
"""


def run(pytester, source, *args):
    pytester.makepyfile(test_it=source)
    return pytester.runpytest_subprocess("-p", "pytest_trio", "-p", "no:cacheprovider", *args)


def test_fixtures_order_nurseries_and_params(pytester):
    result = run(pytester, '''
import pytest, trio, pytest_trio

log = []

@pytest_trio.trio_fixture
async def outer():
    async with trio.open_nursery() as n:
        log.append("outer up")
        yield n
        log.append("outer down")

@pytest_trio.trio_fixture
async def inner(outer):
    with trio.CancelScope():
        log.append("inner up")
        yield "inner"
        log.append("inner down")

@pytest.fixture(params=["a", "b"])
def pair(request, inner, outer):
    return (request.param, inner)

@pytest.mark.trio
async def test_uses(pair, nursery):
    nursery.start_soon(trio.sleep_forever)
    await trio.sleep(0)
    assert pair[1] == "inner"
    assert log[-2:] == ["outer up", "inner up"]

def test_teardown_order():
    assert log == ["outer up", "inner up", "inner down", "outer down"] * 2
''')
    result.assert_outcomes(passed=3)


def test_a_failure_is_reported(pytester):
    result = run(pytester, '''
import pytest, trio

@pytest.mark.trio
async def test_fails():
    await trio.sleep(0)
    raise ValueError("from the test")
''')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*ValueError: from the test*"])


def test_asyncio_and_trio_in_one_session(pytester):
    # A plain async fixture in a module without trio is pytest-asyncio's
    # (in its default, strict mode); trio tests run beside.
    pytester.makepyfile(test_a='''
import asyncio, pytest

@pytest.fixture
async def plain_async():
    await asyncio.sleep(0)
    yield "asyncio"

@pytest.mark.asyncio
async def test_asyncio(plain_async):
    assert plain_async == "asyncio"
''', test_b='''
import pytest, trio

@pytest.fixture
async def trio_side():
    await trio.sleep(0)
    yield "trio"

@pytest.mark.trio
async def test_trio(trio_side):
    assert trio_side == "trio"
''')
    result = pytester.runpytest_subprocess("-p", "pytest_trio", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
