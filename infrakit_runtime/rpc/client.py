"""Calling plugins: an async client for daemons and a blocking one for the CLI.

Messages are built and parsed with jsonrpcclient; transport is aiohttp (async,
kept-alive connections over a Unix socket or TCP) or ``http.client`` over
AF_UNIX (sync). A TCP plugin gets the bearer token of ``$INFRAKIT_TOKEN_FILE`` unless the
caller gives one. Every call has a timeout: a hung plugin must never hang its
caller. ``INFRAKIT_CLIENT_TIMEOUT`` (seconds, or Go durations like ``30s``)
keeps its InfraKit meaning.

Cost: aiohttp (about 14 MiB of RSS) is imported by the first async call, not with this
module, so what calls through the blocking client only (most commands, the supervisor of
``infrakit up``) does not carry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jsonrpcclient import Error, Ok, parse, request

from infrakit_runtime.durations import parse_duration
from infrakit_runtime.rpc import discovery, redact, tokens
from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from infrakit_runtime.spi.common import InterfaceSpec, ValidationError

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)
traffic = logging.getLogger("infrakit_runtime.rpc.traffic")

DEFAULT_TIMEOUT = 30.0

# Told of every async call with (plugin name, method, seconds, outcome) where outcome is
# "ok", "error" (an error answer) or "unreachable"; given to the client that makes the calls
# (metrics register one through the daemon's plugin directory). Must not raise.
CallObserver = Callable[[str, str, float, str], None]


def default_timeout() -> float:
    raw = os.environ.get("INFRAKIT_CLIENT_TIMEOUT")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        return parse_duration(raw)
    except ValueError:
        log.warning("ignoring INFRAKIT_CLIENT_TIMEOUT=%r: not a duration", raw)
        return DEFAULT_TIMEOUT


def _params(params: dict[str, Any] | None) -> dict[str, Any]:
    return params if params is not None else {}


def _refusal(name: str, method: str, status: int, payload: bytes) -> Exception:
    """The error for a non-200 answer: 503 (a daemon at its connection limit) is transient."""
    text = payload.decode(errors="replace").strip()
    if status == 503:
        try:
            text = json.loads(text)["error"]["message"]
        except (ValueError, TypeError, KeyError):
            pass
        return UnreachableError(f"plugin {name} is busy and did not take {method}: {text}")
    return RemoteError(name, method, -32600, f"plugin {name} answered HTTP {status}: {text}")


def _result(name: str, method: str, payload: bytes) -> Any:
    if not payload.strip():
        raise RemoteError(name, method, -32603, f"plugin {name} sent an empty answer to {method}")
    try:
        message = json.loads(payload)
    except ValueError as e:
        raise RemoteError(name, method, -32700, f"plugin {name} sent invalid JSON for {method}: {e}") from None
    parsed = parse(message)
    if isinstance(parsed, Ok):
        return parsed.result
    assert isinstance(parsed, Error)
    raise RemoteError(name, method, parsed.code, parsed.message, parsed.data)


def _default_token(name: str, address: discovery.Address) -> str | None:
    """The token a TCP plugin needs (``$INFRAKIT_TOKEN_FILE``); none for a Unix socket, whose mode guards it."""
    if address.url is None:
        return None
    try:
        return tokens.from_environment()
    except ValidationError as e:
        raise UnreachableError(f"cannot call plugin {name} at {address}: {e}") from None


class Client:
    """An async JSON-RPC client for one plugin daemon, with kept-alive connections."""

    def __init__(self, address: discovery.Address, *, name: str = "", timeout: float | None = None,
                 token: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 observer: CallObserver | None = None) -> None:
        self.address = address
        self._observer = observer
        self.name = name or str(address)
        self.timeout = timeout if timeout is not None else default_timeout()
        self._token = token
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_plugin(cls, name: str, **kwargs: Any) -> Client:
        pn = discovery.PluginName.parse(name)
        return cls(discovery.resolve(pn), name=pn.socket, **kwargs)

    def _url(self) -> str:
        return self.address.url.rstrip("/") + "/" if self.address.url else "http://plugin/"

    def _ensure_session(self) -> aiohttp.ClientSession:
        import aiohttp  # on the first call (module docstring)

        if self._session is None or self._session.closed:
            if self.address.unix_path is not None:
                connector: aiohttp.BaseConnector = aiohttp.UnixConnector(path=str(self.address.unix_path), limit=64)
            else:
                connector = aiohttp.TCPConnector(limit=64, ssl=self._ssl if self._ssl is not None else True)
            headers = {"Content-Type": "application/json"}
            token = self._token or _default_token(self.name, self.address)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            self._session = aiohttp.ClientSession(connector=connector, headers=headers)
        return self._session

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None,
                   headers: dict[str, str] | None = None) -> Any:
        """Call ``method``; raise ``RemoteError`` for an error answer, ``UnreachableError`` otherwise."""
        body = json.dumps(request(method, params=_params(params)), separators=(",", ":")).encode()
        if traffic.isEnabledFor(logging.DEBUG):
            traffic.debug("call %s: %s", self.name, redact.for_log(body))
        session = self._ensure_session()
        limit = timeout if timeout is not None else self.timeout
        started = time.perf_counter()
        outcome = "unreachable"
        try:
            result = await self._post(session, method, body, limit, headers)
            outcome = "ok"
            return result
        except RemoteError:
            outcome = "error"
            raise
        finally:
            if self._observer is not None:
                try:
                    self._observer(self.name, method, time.perf_counter() - started, outcome)
                except Exception:  # an observer must never break a call
                    log.exception("call observer failed")

    async def _post(self, session: aiohttp.ClientSession, method: str, body: bytes, limit: float,
                    headers: dict[str, str] | None = None) -> Any:
        import aiohttp  # loaded already by _ensure_session

        try:
            async with asyncio.timeout(limit):
                async with session.post(self._url(), data=body, headers=headers) as resp:
                    payload = await resp.read()
                    if resp.status != 200:
                        raise _refusal(self.name, method, resp.status, payload)
        except TimeoutError:
            raise UnreachableError(f"plugin {self.name} did not answer {method} within {limit:g}s") from None
        except aiohttp.ClientConnectionError as e:
            raise UnreachableError(f"cannot reach plugin {self.name} at {self.address}: {e}") from None
        if traffic.isEnabledFor(logging.DEBUG):
            traffic.debug("answer %s: %s", self.name, redact.for_log(payload))
        return _result(self.name, method, payload)

    async def hello(self, *, timeout: float | None = None) -> dict[str, list[dict[str, str]]]:
        """The interfaces and objects the daemon announces."""
        result = await self.call("Handshake.Hello", {}, timeout=timeout)
        return dict(result.get("Objects") or {})

    async def check_interface(self, interface: InterfaceSpec, *, timeout: float | None = None) -> None:
        """Raise ``RemoteError`` unless the daemon implements ``interface`` at exactly this version."""
        objects = await self.hello(timeout=timeout)
        if str(interface) in objects:
            return
        offered = ", ".join(sorted(objects)) or "nothing"
        raise RemoteError(self.name, "Handshake.Hello", -32000,
                          f"plugin {self.name} does not implement {interface} (it offers {offered})")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a Unix socket: the standard library's way to reach a plugin daemon."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("plugin", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class SyncClient:
    """A blocking client (standard library only) for the CLI and scripts."""

    def __init__(self, address: discovery.Address, *, name: str = "", timeout: float | None = None,
                 token: str | None = None) -> None:
        self.address = address
        self.name = name or str(address)
        self.timeout = timeout if timeout is not None else default_timeout()
        self._token = token
        self._conn: http.client.HTTPConnection | None = None

    @classmethod
    def for_plugin(cls, name: str, **kwargs: Any) -> SyncClient:
        pn = discovery.PluginName.parse(name)
        return cls(discovery.resolve(pn), name=pn.socket, **kwargs)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.address.unix_path is not None:
                self._conn = UnixHTTPConnection(str(self.address.unix_path), self.timeout)
            else:
                parts = urlsplit(self.address.url or "")
                cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
                self._conn = cls(parts.hostname or "localhost", parts.port, timeout=self.timeout)
        return self._conn

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        body = json.dumps(request(method, params=_params(params)), separators=(",", ":")).encode()
        # When the call was made (rpc.group.ORIGIN): the manager refuses a change older than one it
        # already applied.
        headers = {"Content-Type": "application/json", "X-Infrakit-Origin": repr(time.time())}
        token = self._token or _default_token(self.name, self.address)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", "/", body=body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                # A kept-alive connection the server closed: reconnect once.
                self.close()
                if attempt == 2:
                    raise UnreachableError(f"cannot reach plugin {self.name} at {self.address}: {e}") from None
            except TimeoutError:
                self.close()
                raise UnreachableError(f"plugin {self.name} did not answer {method} within {self.timeout:g}s") from None
            except OSError as e:
                self.close()
                raise UnreachableError(f"cannot reach plugin {self.name} at {self.address}: {e.strerror or e}") from None
        if resp.status != 200:
            raise _refusal(self.name, method, resp.status, payload)
        return _result(self.name, method, payload)

    def hello(self) -> dict[str, list[dict[str, str]]]:
        return dict(self.call("Handshake.Hello", {}).get("Objects") or {})

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
