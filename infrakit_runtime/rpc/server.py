"""The plugin daemon's HTTP face: aiohttp on a Unix socket (and optionally TCP).

Lifecycle is explicit (``AppRunner.setup`` → ``UnixSite.start`` → ``cleanup``);
the socket is checked for staleness before binding and removed on the way out.
HTTP behaviour mirrors InfraKit's recordings: every JSON-RPC outcome is HTTP
200, a non-POST is 405, a Content-Type other than ``application/json`` is 415
(a missing one is accepted), unknown paths are 404. ``GET /metrics`` serves the daemon's
Prometheus registry, behind the same bearer token as every route on TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from infrakit_runtime import metrics
from infrakit_runtime.rpc import errors, limits, redact, tokens
from infrakit_runtime.rpc.dispatch import Dispatcher, encode
from infrakit_runtime.rpc.sockets import prepare_socket_path, secure_socket
from infrakit_runtime.spi.common import ValidationError

log = logging.getLogger(__name__)
traffic = logging.getLogger("infrakit_runtime.rpc.traffic")

# Bodies past this are refused with a JSON-RPC error before they are parsed.
MAX_BODY_BYTES = 8 * 1024 * 1024
# Request and response bodies longer than this are logged (at debug) by size only.
TRAFFIC_LOG_BYTES = 256 * 1024
SHUTDOWN_TIMEOUT = 1.0
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
EXTRA_ROUTES = web.AppKey("extra_routes", list)
TOKEN = web.AppKey("token", str)
METRICS = web.AppKey("metrics", metrics.DaemonMetrics)

_JSON_TYPES = ("application/json", "application/json-rpc", "application/jsonrequest")


async def _rpc(request: web.Request) -> web.StreamResponse:
    dispatcher = request.app[DISPATCHER]
    if request.method != "POST":
        return web.Response(status=405, text=f"rpc: POST method required, received {request.method}")
    ctype = request.headers.get("Content-Type")
    if ctype is not None and ctype.split(";", 1)[0].strip().lower() not in _JSON_TYPES:
        return web.Response(status=415, text=f"rpc: unrecognized Content-Type: {ctype}")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        error = errors.RpcError(errors.INVALID_REQUEST, f"request body of {request.content_length} bytes exceeds the limit of {MAX_BODY_BYTES}")
        return _json_response(encode({"jsonrpc": "2.0", "error": error.to_wire(), "id": None}))
    declared = request.content_length
    if declared is not None and declared <= limits.SMALL_BODY_BYTES:
        return await _answer(request, dispatcher)
    # A large (or chunked) body waits for room in the process's budget before it is read.
    size = declared if declared is not None else MAX_BODY_BYTES
    budget = limits.body_budget()
    if not await budget.acquire(size, timeout=limits.BODY_TIMEOUT):
        error = errors.RpcError(errors.APPLICATION_ERROR, f"daemon {dispatcher.name} is busy reading other large requests; "
                                                          "retry shortly")
        response = web.Response(status=503, body=encode({"jsonrpc": "2.0", "error": error.to_wire(), "id": None}),
                                content_type="application/json", headers={"Retry-After": "1"})
        response.force_close()
        return response
    try:
        return await _answer(request, dispatcher)
    finally:
        budget.release(size)


async def _answer(request: web.Request, dispatcher: Dispatcher) -> web.StreamResponse:
    """Read the body (within ``BODY_TIMEOUT``), dispatch it, answer."""
    try:
        async with asyncio.timeout(limits.BODY_TIMEOUT):
            body = await _read_limited(request)
    except TimeoutError:
        error = errors.RpcError(errors.INVALID_REQUEST, f"request body not received within {limits.BODY_TIMEOUT:g}s")
        response = _json_response(encode({"jsonrpc": "2.0", "error": error.to_wire(), "id": None}))
        response.force_close()
        return response
    if body is None:
        error = errors.RpcError(errors.INVALID_REQUEST, f"request body exceeds the limit of {MAX_BODY_BYTES} bytes")
        return _json_response(encode({"jsonrpc": "2.0", "error": error.to_wire(), "id": None}))
    if traffic.isEnabledFor(logging.DEBUG):
        traffic.debug("request on %s: %s", dispatcher.name, _loggable(body))
    answer = await dispatcher.handle_body(body, headers=request.headers)
    if traffic.isEnabledFor(logging.DEBUG):
        traffic.debug("response on %s: %s", dispatcher.name, _loggable(answer or b""))
    return _json_response(answer or b"")


def _loggable(body: bytes) -> str:
    """A body for the debug traffic log: redacted, or only its size past ``TRAFFIC_LOG_BYTES``.

    Redacting means parsing: logging a flood of 8 MiB bodies in full would cost the daemon
    more than answering them.
    """
    if len(body) > TRAFFIC_LOG_BYTES:
        return f"({len(body)} bytes, longer than the {TRAFFIC_LOG_BYTES} logged)"
    return redact.for_log(body)


async def _read_limited(request: web.Request) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _json_response(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


async def _api(request: web.Request) -> web.Response:
    return _json_response(encode(request.app[DISPATCHER].api()))


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": metrics.CONTENT_TYPE})


async def _functions(request: web.Request) -> web.Response:
    # InfraKit lists the template functions it renders under "builtin" (its CLI reads that key);
    # our plugins render none, so the list is empty, in the same shape.
    return _json_response(encode({"builtin": []}))


@web.middleware
async def _auth(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Bearer-token check on every route of a TCP listener; the Unix socket's file mode guards the rest.

    Fails closed: a request whose transport is not known to be a Unix socket needs the token.
    """
    if not _on_unix_socket(request) and not tokens.matches(request.headers.get("Authorization", ""), request.app[TOKEN]):
        log.warning("refused a request from %s: missing or wrong bearer token", request.remote)
        return web.Response(status=401, text="unauthorized: a valid bearer token is required")
    return await handler(request)


def _on_unix_socket(request: web.Request) -> bool:
    transport = request.transport
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        return bool(sock.family == socket.AF_UNIX)
    return isinstance(transport.get_extra_info("sockname"), str)


def is_loopback(host: str) -> bool:
    """True only for addresses that cannot be reached from another machine ("" means every interface)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_app(dispatcher: Dispatcher, *, token: str | None = None, routes: list[web.RouteDef] | None = None,
             daemon_metrics: metrics.DaemonMetrics | None = None) -> web.Application:
    """The aiohttp application serving one dispatcher (and optional extra routes such as /events).

    With ``daemon_metrics``, every answered call is counted there and ``GET /metrics`` serves it.
    """
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_auth] if token else [])
    app[DISPATCHER] = dispatcher
    if token:
        app[TOKEN] = token
    app.router.add_route("*", "/", _rpc)
    app.router.add_get("/info/api.json", _api)
    app.router.add_get("/info/functions.json", _functions)
    if daemon_metrics is not None:
        app[METRICS] = daemon_metrics
        dispatcher.observe = daemon_metrics.observe_rpc
        app.router.add_get("/metrics", _metrics)
    if routes:
        app.router.add_routes(routes)
    return app


@contextlib.asynccontextmanager
async def serve(
    app: web.Application,
    *,
    socket_path: Path | None,
    tcp: tuple[str, int] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[web.AppRunner]:
    """Serve ``app`` until the context exits; the socket file is removed afterwards."""
    if socket_path is None and tcp is None:
        raise ValueError("serve needs a socket path, a TCP address, or both")
    # The last line of defence for every caller (``plugin run --tcp``, the manager's listen, ...).
    if tcp is not None and not app.get(TOKEN):
        raise ValidationError(f"refusing to listen on {tcp[0]}:{tcp[1]}: every TCP listener requires a bearer token, "
                              f"loopback included (any local user can reach loopback); {tokens.HOW}")
    if tcp is not None and not is_loopback(tcp[0]) and ssl_context is None:
        raise ValidationError(f"refusing to listen on {tcp[0]}:{tcp[1]}: a TCP listener off loopback "
                              "requires TLS and a bearer token")
    # A short shutdown timeout: long polls (Instance.WaitChange) must not hold a stopping daemon.
    # Connection limits and head/idle deadlines: rpc.limits.
    runner = limits.Runner(app, daemon=app[DISPATCHER].name if DISPATCHER in app else "?", access_log=None, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    bound: Path | None = None
    try:
        if socket_path is not None:
            prepare_socket_path(socket_path)
            site = web.UnixSite(runner, str(socket_path), backlog=1024)
            await site.start()
            bound = socket_path
            secure_socket(socket_path)
        if tcp is not None:
            tcp_site = web.TCPSite(runner, tcp[0], tcp[1], ssl_context=ssl_context, backlog=1024)
            await tcp_site.start()
        yield runner
    finally:
        await runner.cleanup()
        if bound is not None:
            with contextlib.suppress(FileNotFoundError):
                bound.unlink()


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
