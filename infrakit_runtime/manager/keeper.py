"""Lease keepers: a leader's lease is kept on a thread of its own, watched by its event loop's pulse.

Guarantee: renewing a lease never waits behind request work. The event loop is shared with
every RPC and every supervisor, and asyncio's default executor with every ``to_thread`` (store
reads, status, plugin I/O): a renewal scheduled on either queues behind whatever a flood put
there, misses its deadline, and leadership moves although the leader is healthy (issue 12:
one 130k-call batch did exactly that). A ``Keeper`` is a daemon thread per held lease that
ticks every ``renew_interval`` and renews from there, so it waits only for the GIL, which
CPython hands over between bytecodes every few milliseconds; the longest single wait is one
C-level operation such as parsing one request body, which the server's body limit bounds
(about 0.5 s for 8 MiB on 2 vCPU), far inside any renewal deadline.

Limit, and why the loop is still watched: a keeper that renewed regardless would let a leader
whose loop is wedged for good (a deadlock, a callback that never returns) hold leadership
forever while nothing is enforced and nobody else may lead. So each tick first posts a probe
to the loop and measures how long ago the previous probe ran; the backend renews only while
that silence is under the lease TTL. A loop that stalls for less than a TTL (a burst of work,
a pause of the machine) keeps its leadership; a loop silent for longer loses it: the etcd
lease is no longer renewed and lapses one TTL later (``holds()`` turns false before that, on
the renewal deadline), the file lock is released at once. Either way another replica leads
within about two TTLs of the wedge. Safety never rests on the keeper: every write stays fenced
by the lease in the backend, and ``holds()`` by the time of the last accepted renewal.

Threads rather than a process: a renewing child process would need its own backend session
and a channel for the fencing state, and could outlive a wedged parent, the case to avoid.
CPython threads have no priorities worth setting; the GIL hand-over is the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def set_event(event: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
    """``event.set()`` from any thread (an asyncio event may only be set on its own loop)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        event.set()
        return
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(event.set)


class Keeper(threading.Thread):
    """Calls ``tick(silence)`` every ``interval`` seconds on its own thread until it returns False.

    ``silence`` is how long ago the event loop last ran one of the keeper's probes (about
    ``interval`` when the loop is healthy). Time in which the keeper itself did not run
    (the whole process was stopped or starved: it woke more than two intervals late) is not
    counted against the loop: a paused process is not a wedged loop. The keeper stops when ``tick`` returns False,
    when ``cancel()`` is called, or when the loop is closed; an exception in ``tick`` is
    logged and the keeper goes on (a keeper that died quietly would end leadership quietly).
    """

    def __init__(self, *, name: str, interval: float, loop: asyncio.AbstractEventLoop,
                 tick: Callable[[float], bool]) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self._loop = loop
        self._tick = tick
        self._cancelled = threading.Event()
        self._seen = time.monotonic()

    def cancel(self) -> None:
        """Stop ticking (a tick under way finishes); the lease is then neither renewed nor checked here."""
        self._cancelled.set()

    def _probed(self) -> None:
        self._seen = time.monotonic()

    def run(self) -> None:
        woke = judged_from = time.monotonic()
        while not self._cancelled.wait(self.interval):
            now = time.monotonic()
            if now - woke > 2 * self.interval:
                judged_from = now  # we did not run either: say nothing about the loop for that time
            woke = now
            try:
                self._loop.call_soon_threadsafe(self._probed)
            except RuntimeError:
                return  # the loop is closed
            try:
                if not self._tick(now - max(self._seen, judged_from)):
                    return
            except Exception:
                log.exception("%s: a lease keeper tick failed", self.name)
