"""
Trio tests for pytest: the part of pytest-trio's interface that lahja's
test suite uses, for Debian's trio (there is no pytest-trio package).

- ``@pytest.mark.trio`` runs an ``async def`` test in ``trio.run``.
- For such a test, async fixtures (and fixtures marked with
  ``@trio_fixture``, and plain fixtures that depend on either) are set up
  inside that ``trio.run``: each in a task of its own, in dependency
  order, so that a fixture may yield from inside a nursery or a cancel
  scope it opened; after the test they are torn down in reverse order.
- The ``nursery`` fixture is a nursery open for the test's length,
  cancelled at its end.

Only function-scoped fixtures may be trio fixtures.  Loaded as a pytest
plugin: ``-p pytest_trio``, or automatically through the entry point the
build installs beside the lahja package.

So that asyncio tests and trio tests can run in one pytest session with
pytest-asyncio in its default (strict) mode, a plain ``@pytest.fixture``
``async def`` in a module that does not use trio is handed to
pytest-asyncio as an asyncio fixture, as lahja's suite expects of its
asyncio tests; in a module that uses trio, it is a trio fixture.
"""
import inspect

import pytest
import trio

__all__ = ["trio_fixture"]


def trio_fixture(func=None, **kwargs):
    """A fixture set up inside the test's trio.run, even if not async."""
    if func is None:
        return lambda f: trio_fixture(f, **kwargs)
    func._force_trio_fixture = True
    return pytest.fixture(func, **kwargs)


def pytest_configure(config):
    config.addinivalue_line("markers", "trio: run this async test with trio.run")


def _claim_async_fixtures(module):
    """Marks the plain async fixtures of a module that does not use trio
    as pytest-asyncio's (what its strict mode looks for)."""
    names = vars(module)
    if "trio" in names or "pytest_trio" in names:
        return
    for obj in list(names.values()):
        wrapped = getattr(obj, "__pytest_wrapped__", None)
        func = getattr(wrapped, "obj", None)
        if func is None or getattr(func, "_force_trio_fixture", False):
            continue
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            try:
                func._force_asyncio_fixture = True
            except AttributeError:
                pass


def pytest_plugin_registered(plugin, manager):
    # conftest modules: registered before their fixtures are parsed.
    if inspect.ismodule(plugin) and getattr(plugin, "__file__", "").endswith("conftest.py"):
        _claim_async_fixtures(plugin)


def pytest_collectstart(collector):
    # Test modules: imported here, before their items (and pytest-asyncio's
    # look at their fixtures) are made.
    if isinstance(collector, pytest.Module):
        try:
            module = collector.obj
        except Exception:
            return  # collection reports the import error itself
        _claim_async_fixtures(module)


class _TrioFixture:
    """A fixture's value to be: set up in the test's trio.run."""

    def __init__(self, name, func, kwargs):
        self.name = name
        self.func = func
        self.kwargs = kwargs
        self.value = None
        self.teardown = trio.Event()
        self.ended = trio.Event()
        self.error = None

    def deps(self):
        return [v for v in self.kwargs.values() if isinstance(v, _TrioFixture)]

    async def run(self, task_status=trio.TASK_STATUS_IGNORED):
        kwargs = {k: (v.value if isinstance(v, _TrioFixture) else v)
                  for k, v in self.kwargs.items()}
        func = self.func
        try:
            if inspect.isasyncgenfunction(func):
                agen = func(**kwargs)
                self.value = await agen.asend(None)
                task_status.started()
                await self.teardown.wait()
                try:
                    await agen.asend(None)
                except StopAsyncIteration:
                    pass
                else:
                    raise RuntimeError(f"fixture {self.name} yielded more than once")
            elif inspect.iscoroutinefunction(func):
                self.value = await func(**kwargs)
                task_status.started()
                await self.teardown.wait()
            elif inspect.isgeneratorfunction(func):
                gen = func(**kwargs)
                self.value = next(gen)
                task_status.started()
                await self.teardown.wait()
                try:
                    next(gen)
                except StopIteration:
                    pass
                else:
                    raise RuntimeError(f"fixture {self.name} yielded more than once")
            else:
                self.value = func(**kwargs)
                task_status.started()
                await self.teardown.wait()
        finally:
            self.ended.set()


def _is_trio_test(request):
    node = request.node
    return isinstance(node, pytest.Function) and node.get_closest_marker("trio") is not None


@pytest.hookimpl(tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    func = fixturedef.func
    forced = getattr(func, "_force_trio_fixture", False)
    is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
    if not (forced or is_async or fixturedef.argnames):
        return None
    if not _is_trio_test(request):
        if forced:
            raise RuntimeError(f"trio fixture {fixturedef.argname} used by a test that is not "
                               "marked @pytest.mark.trio")
        return None
    kwargs = {}
    for name in fixturedef.argnames:
        kwargs[name] = request if name == "request" else request.getfixturevalue(name)
    depends = any(isinstance(v, _TrioFixture) for v in kwargs.values())
    if not (forced or is_async or depends):
        return None
    if fixturedef.scope != "function":
        raise RuntimeError(f"trio fixture {fixturedef.argname} must be function-scoped")
    value = _TrioFixture(fixturedef.argname, func, kwargs)
    fixturedef.cached_result = (value, fixturedef.cache_key(request), None)
    return value


def _in_order(values):
    """Every trio fixture reachable from values, dependencies first."""
    order, seen = [], set()

    def visit(f):
        if id(f) in seen:
            return
        seen.add(id(f))
        for d in f.deps():
            visit(d)
        order.append(f)

    for v in values:
        if isinstance(v, _TrioFixture):
            visit(v)
    return order


async def _run_test(fn, funcargs):
    fixtures = _in_order(funcargs.values())
    async with trio.open_nursery() as nursery:
        try:
            for f in fixtures:
                await nursery.start(f.run)
            args = {k: (v.value if isinstance(v, _TrioFixture) else v)
                    for k, v in funcargs.items()}
            await fn(**args)
        finally:
            for f in reversed(fixtures):
                f.teardown.set()
                await f.ended.wait()


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if pyfuncitem.get_closest_marker("trio") is None:
        return None
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        raise RuntimeError(f"{pyfuncitem.nodeid} is marked trio but is not async def")
    funcargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    trio.run(_run_test, fn, funcargs)
    return True


@trio_fixture
async def nursery():
    """A nursery open for the test's length, cancelled at its end."""
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()
