"""What one client may cost a daemon: connections, and time to send a request.

Guarantee: a daemon process holds at most ``connection_limit()`` client connections over all
its sockets (Unix and TCP, every daemon it runs); a connection that has not completed a
request head ``HEADER_TIMEOUT`` after it opened (or after the first byte of its next head) is
answered 408 and closed; a kept-alive connection idle for ``IDLE_TIMEOUT`` is closed. So slow
or silent clients cannot pin descriptors, and a flood of connections costs a bounded number.
(The body deadline, ``BODY_TIMEOUT``, is enforced where bodies are read: ``rpc.server``.)

Memory: a body over ``SMALL_BODY_BYTES`` is read only once it fits in the process's
``BODY_BUDGET`` (its declared length, or the body limit when chunked), which it holds until it
is answered; until then aiohttp stops reading its socket after 128 KiB. So bodies held at
once stay under ``BODY_BUDGET`` plus ``SMALL_BODY_BYTES`` per connection, whatever the flood. A
request that waits ``BODY_TIMEOUT`` for the budget is answered 503, like one over the limit.

At the limit, a new connection first takes the place of the connection that has waited
longest without a request in progress (kept-alive idle, or still sending its head), which is
closed. Only when every connection is in the middle of a request is the new one refused: it
is answered ``503 Service Unavailable`` with ``Retry-After: 1`` and a JSON-RPC error naming
the limit, and closed (our clients report that as "unreachable", so callers back off and
retry rather than treat it as the plugin's verdict).

Limit: the limit and timeouts are constants, documented in docs/plugins.md ("Limits"); a
legitimate client that needs more connections than the limit waits for 503s to clear. The
accounting lives in a subclass of aiohttp's connection protocol (``RequestHandler``) and
reads two of its private fields (the count of parsed requests and the queue of pipelined
ones); aiohttp is pinned and ``tests/runtime/security/test_floods.py`` pins the behaviour.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import resource
import time
import weakref
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

# Open connections per daemon process, over all its sockets (see connection_limit()).
MAX_CONNECTIONS = 512
# A request's head (request line and headers) must be complete this long after its first byte,
# or after the connection opened for its first request.
HEADER_TIMEOUT = 10.0
# A request's body must have arrived this long after its head (checked in rpc.server).
BODY_TIMEOUT = 20.0
# A kept-alive connection with no request for this long is closed (our clients keep 15 s).
IDLE_TIMEOUT = 75.0
# A refused connection is read (and discarded) this long before it is closed, so the client
# can finish sending its request and read the 503 instead of a broken pipe.
REFUSAL_LINGER = 1.0
# Refused connections lingering at once, beyond which further ones are closed at once.
MAX_LINGERING = 64
# Bodies up to this size are read at once; larger ones wait for room in BODY_BUDGET.
SMALL_BODY_BYTES = 64 * 1024
# Bytes of large bodies one daemon process reads and holds at once (two bodies at the 8 MiB limit).
BODY_BUDGET = 16 * 1024 * 1024
# Cut and refused connections are logged as one summary line at most this often.
REPORT_EVERY = 60.0


def connection_limit() -> int:
    """``MAX_CONNECTIONS``, or half the process's open-file limit when that is lower (never below 16)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft // 2))


class _Pool:
    """The open connections of one daemon process (one event loop), whichever socket they came in on."""

    def __init__(self) -> None:
        self.limit = connection_limit()
        self.open: set[_Connection] = set()
        self.lingering = 0
        self._counts: dict[str, int] = {}
        self._reported = float("-inf")

    def make_room(self) -> bool:
        """Close the connection waiting longest without a request in progress; False if every one is busy."""
        idle = [c for c in self.open if c.waiting_for_head()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since)
        self.open.discard(oldest)
        oldest.force_close()
        self.report("closed idle to make room")
        return True

    def report(self, what: str) -> None:
        """Count an event; log the counts at most every ``REPORT_EVERY`` seconds (a flood is one line)."""
        self._counts[what] = self._counts.get(what, 0) + 1
        now = time.monotonic()
        if now - self._reported >= REPORT_EVERY:
            summary = ", ".join(f"{n} {w}" for w, n in sorted(self._counts.items()))
            log.warning("client connections (limit %d, %d open): %s", self.limit, len(self.open), summary)
            self._counts.clear()
            self._reported = now


class Budget:
    """Bytes of large bodies held at once in one process; waiters are served in order of arrival."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, size: int, *, timeout: float) -> bool:
        """Hold ``size`` bytes (at most the capacity), waiting up to ``timeout`` for room; False if none came."""
        size = min(size, self.capacity)
        if not self._waiters and self.used + size <= self.capacity:
            self.used += size
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((size, waiter))
        try:
            async with asyncio.timeout(timeout):
                await waiter
            return True
        except BaseException as e:
            if waiter.done() and not waiter.cancelled():
                self.release(size)  # granted just as we gave up: hand it on
            else:
                self._waiters = collections.deque(w for w in self._waiters if w[1] is not waiter)
                self._wake()
            if isinstance(e, TimeoutError):
                return False
            raise

    def release(self, size: int) -> None:
        self.used -= min(size, self.capacity)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            size, waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += size
                waiter.set_result(None)


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()
_BUDGETS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Budget] = weakref.WeakKeyDictionary()


def _pool(loop: asyncio.AbstractEventLoop) -> _Pool:
    pool = _POOLS.get(loop)
    if pool is None:
        pool = _POOLS[loop] = _Pool()
    return pool


def body_budget() -> Budget:
    """The running process's budget for large bodies."""
    loop = asyncio.get_running_loop()
    budget = _BUDGETS.get(loop)
    if budget is None:
        budget = _BUDGETS[loop] = Budget(BODY_BUDGET)
    return budget


def _raw_response(status: str, body: bytes, content_type: str, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n").encode() + body


class _Connection(RequestHandler):
    """aiohttp's connection protocol, counted in the pool, with a deadline for each request head.

    It waits for a head (``waiting_for_head``) when aiohttp does: between a response (and
    the draining of a body left unread) and the next complete head. ``idle_since`` is when
    it last opened or answered, the order in which idle connections make room.
    """

    def __init__(self, manager: web.Server, *, daemon: str, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.daemon = daemon
        self.idle_since = 0.0
        self._head_timer: asyncio.TimerHandle | None = None
        self._pool_: _Pool | None = None
        self._refused: asyncio.TimerHandle | bool = False

    # -- accepting ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pool = _pool(self._loop)
        if len(pool.open) >= pool.limit and not pool.make_room():
            self._refuse(pool, transport)
            return
        self._pool_ = pool
        pool.open.add(self)
        super().connection_made(transport)
        self.idle_since = self._loop.time()
        self._arm_head_timer()

    def _refuse(self, pool: _Pool, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        message = (f"daemon {self.daemon} has reached its limit of {pool.limit} connections, every one busy "
                   "with a request; retry shortly")
        body = json.dumps({"jsonrpc": "2.0", "error": {"code": -32000, "message": message, "data": None},
                           "id": None}, separators=(",", ":")).encode() + b"\n"
        transport.write(_raw_response("503 Service Unavailable", body, "application/json", "Retry-After: 1\r\n"))
        pool.report("refused at the limit")
        if pool.lingering >= MAX_LINGERING or not transport.can_write_eof():
            self._refused = True
            transport.close()
            return
        # Half-close: the client may still be writing its request; reading (and dropping) it
        # for a moment lets it read the 503 instead of hitting a broken pipe.
        transport.write_eof()
        pool.lingering += 1
        self._pool_ = pool
        self._refused = self._loop.call_later(REFUSAL_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:  # a complete head: a request is under way
            self._cancel_head_timer()
        elif data and self._head_timer is None and self.waiting_for_head():
            self._arm_head_timer()  # the first bytes of the next head on a kept-alive connection

    def eof_received(self) -> None:
        # Returning None (falsy) lets the transport close itself: a refused client has said
        # everything, so its lingering ends now; otherwise aiohttp's own behaviour.
        if self._refused:
            return None
        return super().eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        pool, self._pool_ = self._pool_, None
        if self._refused:
            if isinstance(self._refused, asyncio.TimerHandle):
                self._refused.cancel()
                if pool is not None:
                    pool.lingering -= 1
            return
        if pool is not None:
            pool.open.discard(self)
        self._cancel_head_timer()
        super().connection_lost(exc)

    # -- requests ----------------------------------------------------------------------------

    def waiting_for_head(self) -> bool:
        """No request in progress: aiohttp waits for the next complete head (its own idle test)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    async def finish_response(self, request: Any, resp: Any, start_time: float | None) -> Any:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self.idle_since = self._loop.time()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self._loop.call_later(HEADER_TIMEOUT, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.waiting_for_head() or self.transport is None:
            return
        body = f"no complete request head within {HEADER_TIMEOUT:g}s\n".encode()
        self.transport.write(_raw_response("408 Request Timeout", body, "text/plain; charset=utf-8"))
        if self._pool_ is not None:
            self._pool_.report("cut for a slow or missing request head")
        self.force_close()


class _Server(web.Server):
    """aiohttp's low-level server, building ``_Connection`` protocols."""

    daemon = ""

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, daemon=self.daemon, **self._kwargs)


class Runner(web.AppRunner):
    """``web.AppRunner`` whose connections obey this module's limits and timeouts."""

    def __init__(self, app: web.Application, *, daemon: str, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=IDLE_TIMEOUT, **kwargs)
        self._daemon = daemon

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The application builds a plain Server (with its own handler and request factory);
        # only the protocol it makes differs, so the instance changes class rather than be rebuilt.
        server.__class__ = _Server
        assert isinstance(server, _Server)
        server.daemon = self._daemon
        return server
