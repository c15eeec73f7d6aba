"""
Running the C core's loop from Python's event loops.

liblahja runs on a libuv loop, one per thread (``_core.loop()``; a new one
after ``fork``).  Nothing runs it on a thread of its own: the framework's
own loop does, through the loop's file descriptor, which is readable
whenever libuv has work (epoll's descriptor).  A pump per framework loop:

- asyncio: ``add_reader`` on the descriptor, and a timer for libuv's next
  deadline;
- trio: a system task that waits with ``wait_readable`` under a deadline.

Every call into the core that may have given libuv work (a write queued,
a callback due at the next turn) *kicks* the pump, which then runs libuv
once, soon, from the framework loop.  Callbacks into Python (handlers,
the end of a call) happen only there, never within a call.

Streams that fill up *hold* the pump (``hold``/``release``): libuv is not
run, so nothing more is read from the sockets, and the peers' high-water
marks slow the publishers down instead of an event being dropped.
"""
import asyncio
import math
import os
import threading
import weakref

try:
    import trio
    import trio.lowlevel
except ImportError:  # trio is optional: asyncio alone works without it
    trio = None

from . import _core

__all__ = ["asyncio_pump", "trio_pump"]

# How long a kicked pump may wait while the framework's loop has other
# work ready (see _AsyncioPump._next_turn).
DEFER_TURNS = 64
DEFER_SECONDS = 0.0005

_local = threading.local()


class _Pump:
    """What every pump has: the core loop, kicks and holds."""

    def __init__(self, core):
        self.core = core
        self.holds = 0
        self.kicked = False
        self.lazy = False  # the pending run may wait for a busy loop

    def hold(self):
        """A consumer is full: stop running libuv until release()."""
        self.holds += 1
        if self.holds == 1:
            self.pause()

    def release(self):
        """The consumer made room: run libuv again."""
        self.holds -= 1
        if self.holds == 0:
            self.resume()
            self.kick()

    def pause(self):
        pass

    def resume(self):
        pass

    def run_once(self):
        """Runs libuv's due work once; the seconds until it wants to run
        again (0: at once), or None."""
        self.kicked = False
        self.lazy = False
        if self.holds:
            return None
        return self.core.run()


class _AsyncioPump(_Pump):
    def __init__(self, loop, core):
        super().__init__(core)
        self.loop = loop
        self.timer = None
        self.deferred = 0
        self.kicked_at = 0.0
        loop.add_reader(core.fd, self._on_readable)

    def _on_readable(self):
        # Input is taken at once when the loop has nothing else to do.
        # While it is busy (a task broadcasting, a stream being read) it
        # waits as a lazy kick does, and comes in one run with the writes:
        # reading each receipt or event as it comes would run the core,
        # and write, once per event.
        if self.kicked and self.lazy:
            return
        if self.loop._ready:
            self.kick_lazy()
        else:
            self._run()

    def _run(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        t = self.run_once()
        if t is None:
            return
        if t <= 0:
            self.kick()
            return
        self.timer = self.loop.call_later(t, self._on_timer)

    def _on_timer(self):
        self.timer = None
        self._run()

    def pause(self):
        # The descriptor stays readable: not watched while held.
        self.loop.remove_reader(self.core.fd)

    def resume(self):
        self.loop.add_reader(self.core.fd, self._on_readable)

    def kick(self):
        # libuv runs at the loop's turn after next: a task the caller starts
        # right after its call (a wait for what the call causes) is under
        # way before the effects come back, as with lahja's own tasks.
        if self.kicked:
            self.lazy = False
            return
        if not self.loop.is_closed():
            self.kicked = True
            self.lazy = False
            self.loop.call_soon(self._next_turn)

    def kick_now(self):
        """A kick for a call whose caller waits for its answer (a request, a
        response): libuv runs at the next turn."""
        if self.kicked and not self.lazy:
            return
        if not self.loop.is_closed():
            self.kicked = True
            self.lazy = False
            self.loop.call_soon(self._run)

    def kick_lazy(self):
        """A kick for output only (broadcasts): while other callbacks are
        ready (a task broadcasting in a loop), libuv waits a few more turns,
        so that what they queue leaves in one write per peer; never longer
        than DEFER_TURNS turns or DEFER_SECONDS.  With nothing else to do,
        or after a kick(), it runs as a kick's would."""
        if self.kicked or self.loop.is_closed():
            return
        self.kicked = True
        self.lazy = True
        self.deferred = 0
        self.kicked_at = self.loop.time()
        self.loop.call_soon(self._next_turn)

    def _next_turn(self):
        if (self.lazy and self.loop._ready and self.deferred < DEFER_TURNS
                and self.loop.time() - self.kicked_at < DEFER_SECONDS):
            self.deferred += 1
            self.loop.call_soon(self._next_turn)
            return
        self.loop.call_soon(self._run)


def asyncio_pump():
    """The pump of the running asyncio loop (made on first use)."""
    loop = asyncio.get_running_loop()
    pumps = _pumps()
    pump = pumps.get(loop)
    if pump is None:
        pump = pumps[loop] = _AsyncioPump(loop, _core.loop())
    return pump


class _TrioPump(_Pump):
    def __init__(self, core):
        super().__init__(core)
        self.scope = None
        self.lazy_kicks = 0
        trio.lowlevel.spawn_system_task(self._main, name="lahja core loop")

    async def _main(self):
        t = 0.0
        ran_at_kicks = 0
        while True:
            if not self.kicked:
                if self.holds or t is None:
                    deadline = math.inf
                else:
                    deadline = trio.current_time() + t
                with trio.CancelScope(deadline=deadline) as self.scope:
                    if self.holds:  # the descriptor stays readable
                        await trio.sleep_forever()
                    await trio.lowlevel.wait_readable(self.core.fd)
                self.scope = None
                # Input while broadcasts are flowing waits for their batch,
                # as a lazy kick does; input to an idle endpoint is read at
                # once.
                if not self.kicked and self.lazy_kicks != ran_at_kicks:
                    self.kicked = self.lazy = True
            if self.kicked:
                await trio.lowlevel.checkpoint()
                # A lazy kick (broadcasts) waits while broadcasts keep
                # coming, a scheduling round at a time, as the asyncio
                # pump's does while its loop is busy (kick_lazy).
                deferred, since, seen = 0, trio.current_time(), -1
                while (self.lazy and self.lazy_kicks != seen and deferred < DEFER_TURNS
                       and trio.current_time() - since < DEFER_SECONDS):
                    seen = self.lazy_kicks
                    deferred += 1
                    await trio.lowlevel.checkpoint()
            ran_at_kicks = self.lazy_kicks
            t = self.run_once()

    def kick(self):
        self.lazy = False
        if not self.kicked:
            self.kicked = True
            if self.scope is not None:
                self.scope.cancel()

    def kick_now(self):
        """See _AsyncioPump.kick_now."""
        self.kick()

    def kick_lazy(self):
        """See _AsyncioPump.kick_lazy."""
        self.lazy_kicks += 1
        if not self.kicked:
            self.kicked = True
            self.lazy = True
            if self.scope is not None:
                self.scope.cancel()


if trio is not None:
    _trio_pump = trio.lowlevel.RunVar("lahja_pump")


def trio_pump():
    """The pump of the running trio run (made on first use)."""
    try:
        return _trio_pump.get()
    except LookupError:
        pump = _TrioPump(_core.loop())
        _trio_pump.set(pump)
        return pump


def _pumps():
    """This thread's asyncio pumps, by their loop (weakly):
    a fresh set after fork, whose child runs a core loop of its own."""
    pid = os.getpid()
    if getattr(_local, "pid", None) != pid:
        _local.pid = pid
        _local.pumps = weakref.WeakKeyDictionary()
    return _local.pumps
