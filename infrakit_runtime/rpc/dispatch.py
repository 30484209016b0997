"""The JSON-RPC 2.0 dispatcher: bytes in, bytes out, never an exception out.

Reproduces InfraKit's recorded behaviour (``shared/wire/``) where the standard
allows it: params as an object or a one-element array, string or number ids
echoed, notifications answered with an empty body, -32700 for a method that is
not a string (Go's decoder fails on it). Where InfraKit departs from JSON-RPC 2.0
otherwise we follow the standard codes (-32700 parse error, -32601 unknown method,
-32602 bad params) and keep messages a person can act on.

One request cannot starve the daemon (issue 12): a batch holds at most ``MAX_BATCH``
calls, refused as a whole past that after parsing no more than ``MAX_BATCH + 1`` of its
entries; a batch's calls run ``BATCH_CONCURRENCY`` at a time, giving the event loop a turn
after each, and at most ``BATCHES_AT_ONCE`` batches run at once per daemon; once a batch's
answers pass ``MAX_BATCH_ANSWER_BYTES`` its calls not yet started are answered with an
error instead of run. A body over ``LARGE_BODY_BYTES`` is parsed only while no other is
(``json`` cannot yield mid-parse), and the nesting check yields as it walks.
Limit: one large body still costs one uninterruptible parse (about 0.1-0.5 s for 8 MiB
on 2 vCPU); the server's body limit bounds it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from infrakit_runtime.rpc import errors
from infrakit_runtime.rpc.service import Service
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError, json_type
from infrakit_runtime.spi.wire import ParamsError, Reader

log = logging.getLogger(__name__)

# Deeper JSON than this is refused before any handler sees it.
MAX_NESTING = 64
# A batch (a JSON array of calls) with more entries than this is refused as a whole.
MAX_BATCH = 1000
# Calls of one batch running at once; the loop gets a turn after each call.
BATCH_CONCURRENCY = 8
# Batches one daemon works on at once; more wait their turn.
BATCHES_AT_ONCE = 4
# Past this many bytes of answers, a batch's calls not yet started are answered with an error.
MAX_BATCH_ANSWER_BYTES = 8 * 1024 * 1024
# Bodies past this size are parsed one at a time.
LARGE_BODY_BYTES = 256 * 1024
# The nesting check gives the loop a turn after this many values.
_WALK_SLICE = 20_000
HANDSHAKE = "Handshake.Hello"
# Told of every answered message: (method, or "other" when this socket has no such method;
# the error code, None for a result; seconds). Metrics subscribe here. Must not raise.
Observer = Callable[[str, int | None, float], None]
_WS = re.compile(r"[ \t\n\r]*")


class _TooManyCalls(Exception):
    """A batch holds more than ``MAX_BATCH`` entries (raised while parsing, before the rest is read)."""


async def _depth_ok(value: JSON, limit: int, *, upper_bound: int) -> bool:
    """Whether ``value`` nests at most ``limit`` deep; ``upper_bound`` caps its container count.

    The bound (brackets and braces in the raw body, strings included) spares the walk for
    almost every request; a body with many containers is walked in slices, yielding between.
    """
    if upper_bound <= limit:
        return True
    stack = [(value, 1)]
    budget = _WALK_SLICE
    while stack:
        v, d = stack.pop()
        if d > limit:
            return False
        for x in v.values() if isinstance(v, dict) else v:
            if isinstance(x, (dict, list)):
                stack.append((x, d + 1))
            budget -= 1
            if budget <= 0:
                await asyncio.sleep(0)
                budget = _WALK_SLICE
    return True


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and InfraKit's Go decoder) does not, and
    # echoing one back (an id) would make our own answer invalid JSON.
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode(body: bytes) -> JSON:
    """``json.loads`` of a request body, except that a batch is parsed entry by entry.

    Raises ``_TooManyCalls`` as soon as a batch's ``MAX_BATCH + 1``-th entry is parsed, so
    an oversized batch costs ``MAX_BATCH`` entries of work, not the whole body.
    """
    text = body.decode(json.detect_encoding(body), "surrogatepass")
    start = _WS.match(text).end()  # type: ignore[union-attr]
    if not text.startswith("[", start):
        return _DECODER.decode(text)
    entries: list[JSON] = []
    idx = _WS.match(text, start + 1).end()  # type: ignore[union-attr]
    if text.startswith("]", idx):
        end = idx + 1
    else:
        while True:
            value, idx = _DECODER.raw_decode(text, idx)
            entries.append(value)
            if len(entries) > MAX_BATCH:
                raise _TooManyCalls
            idx = _WS.match(text, idx).end()  # type: ignore[union-attr]
            if text.startswith(",", idx):
                idx = _WS.match(text, idx + 1).end()  # type: ignore[union-attr]
            elif text.startswith("]", idx):
                end = idx + 1
                break
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, idx)
    rest = _WS.match(text, end).end()  # type: ignore[union-attr]
    if rest != len(text):
        raise json.JSONDecodeError("Extra data", text, rest)
    return entries


def _compact(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as Go writes it; ASCII escapes when a lone surrogate cannot be UTF-8."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A request may carry "\ud800" (legal JSON, not encodable UTF-8) in an id or a name we echo.
        return json.dumps(obj, separators=(",", ":")).encode()


def encode(obj: Any) -> bytes:
    """One answer as a body: compact JSON and a newline."""
    return _compact(obj) + b"\n"


def _valid_id(message: JSON) -> bool:
    if not isinstance(message, dict) or "id" not in message:
        return False
    req_id = message["id"]
    return req_id is None or (isinstance(req_id, (str, int, float)) and not isinstance(req_id, bool))


class Dispatcher:
    """Routes ``Service.Method`` calls to the services of one plugin socket."""

    def __init__(self, name: str, services: list[Service], *, vendor: dict[str, str] | None = None) -> None:
        self.name = name
        self.services = services
        self.vendor = vendor
        self._methods: dict[str, tuple[Service, Any]] = {}
        for service in services:
            for method_name, method in service.methods.items():
                self._methods[method_name] = (service, method)
        self._service_names = {m.split(".", 1)[0] for m in self._methods} | {"Handshake"}
        self.observe: Observer | None = None
        self._parsing = asyncio.Lock()  # one large body parsed at a time
        self._batches = asyncio.Semaphore(BATCHES_AT_ONCE)

    # -- introspection -----------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """The objects every service serves from the start (what the daemon logs when it starts)."""
        objects: dict[str, list[dict[str, str]]] = {}
        for service in self.services:
            objects[str(service.interface)] = service.hello_objects()
            for extra in service.extra_interfaces():
                objects[str(extra)] = service.hello_objects()
        return {"Objects": objects}

    async def hello_now(self) -> dict[str, Any]:
        """``Handshake.Hello``'s answer: the objects served now (the manager adds one per group)."""
        objects: dict[str, list[dict[str, str]]] = {}
        for service in self.services:
            announced = await service.announce()
            objects[str(service.interface)] = announced
            for extra in service.extra_interfaces():
                objects[str(extra)] = announced
        return {"Objects": objects}

    def api(self) -> dict[str, Any]:
        """The ``/info/api.json`` document: what this socket implements, with example calls."""
        interfaces = []
        for service in self.services:
            methods = [
                {
                    "Request": {"jsonrpc": "2.0", "method": name, "params": method.example, "id": "1"},
                    "Response": {"result": {}, "id": "1"},
                }
                for name, method in sorted(service.methods.items())
            ]
            spec = {"Name": service.interface.name, "Version": service.interface.version, "Sub": ""}
            interfaces.append({**spec, "Methods": methods})
        return {
            "Vendor": self.vendor,
            "Implements": [{"Name": s.interface.name, "Version": s.interface.version, "Sub": ""} for s in self.services],
            "Interfaces": interfaces,
        }

    # -- dispatch ----------------------------------------------------------------------------

    async def handle_body(self, body: bytes, *, headers: Mapping[str, str] | None = None) -> bytes | None:
        """Answer one HTTP request body; ``None`` means "no response" (notifications only).

        ``headers`` are the HTTP request's, handed to each service's ``bind`` (the Group SPI reads
        its ordering and forwarding headers there).
        """
        headers = headers if headers is not None else {}
        try:
            if len(body) > LARGE_BODY_BYTES:
                async with self._parsing:
                    message = decode(body)
                await asyncio.sleep(0)  # the loop's turn between two large parses
            else:
                message = decode(body)
        except _TooManyCalls:
            return encode(self._error(None, errors.RpcError(
                errors.INVALID_REQUEST, f"a batch may hold at most {MAX_BATCH} calls and this one holds more; "
                                        f"send them in batches of up to {MAX_BATCH}")))
        except RecursionError:
            return encode(self._error(None, errors.RpcError(errors.PARSE_ERROR, f"request JSON is nested deeper than {MAX_NESTING} levels")))
        except (ValueError, UnicodeDecodeError) as e:
            return encode(self._error(None, errors.RpcError(errors.PARSE_ERROR, f"request is not valid JSON: {e}")))
        if not await _depth_ok(message, MAX_NESTING, upper_bound=body.count(b"[") + body.count(b"{")):
            return encode(self._error(None, errors.RpcError(errors.INVALID_REQUEST, f"request JSON is nested deeper than {MAX_NESTING} levels")))
        if isinstance(message, list):
            if not message:
                return encode(self._error(None, errors.RpcError(errors.INVALID_REQUEST, "empty batch")))
            async with self._batches:
                return await self._handle_batch(message, headers)
        answer = await self.handle_message(message, headers=headers)
        return encode(answer) if answer is not None else None

    async def _handle_batch(self, entries: list[JSON], headers: Mapping[str, str]) -> bytes | None:
        """Run a batch's calls ``BATCH_CONCURRENCY`` at a time, in order; answers keep the batch's order."""
        answers: list[bytes | None] = [None] * len(entries)
        size = 0
        cursor = iter(range(len(entries)))

        async def worker() -> None:
            nonlocal size
            for i in cursor:
                entry = entries[i]
                answer: dict[str, Any] | None
                if size > MAX_BATCH_ANSWER_BYTES and _valid_id(entry):
                    answer = self._error(entry["id"], errors.RpcError(
                        errors.APPLICATION_ERROR, f"not run: the answers to this batch passed {MAX_BATCH_ANSWER_BYTES} "
                                                  "bytes; send this call again in a smaller batch"))
                else:
                    answer = await self.handle_message(entry, headers=headers)
                if answer is not None:
                    answers[i] = part = _compact(answer)
                    size += len(part)
                await asyncio.sleep(0)  # the loop's turn after every call

        await asyncio.gather(*(worker() for _ in range(min(BATCH_CONCURRENCY, len(entries)))))
        kept = [a for a in answers if a is not None]
        return b"[" + b",".join(kept) + b"]\n" if kept else None

    async def handle_message(self, message: JSON, *, headers: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        headers = headers if headers is not None else {}
        if self.observe is None:
            return await self._answer(message, headers)
        started = time.perf_counter()
        answer = await self._answer(message, headers)
        method = message.get("method") if isinstance(message, dict) else None
        known = method if isinstance(method, str) and (method == HANDSHAKE or method in self._methods) else "other"
        code = answer["error"]["code"] if answer is not None and "error" in answer else None
        self.observe(known, code, time.perf_counter() - started)
        return answer

    async def _answer(self, message: JSON, headers: Mapping[str, str]) -> dict[str, Any] | None:
        if not isinstance(message, dict):
            return self._error(None, errors.RpcError(errors.INVALID_REQUEST, f"a request must be an object, got {json_type(message)}"))
        has_id = "id" in message
        req_id = message.get("id")
        if has_id and not (req_id is None or (isinstance(req_id, (str, int, float)) and not isinstance(req_id, bool))):
            return self._error(None, errors.RpcError(errors.INVALID_REQUEST, f"id must be a string, number or null, got {json_type(req_id)}"))
        try:
            result = await self._call(message, headers)
        except errors.RpcError as e:
            return self._error(req_id, e) if has_id else None
        if not has_id:
            return None
        return {"jsonrpc": "2.0", "result": result, "id": req_id}

    def _error(self, req_id: JSON, error: errors.RpcError) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "error": error.to_wire(), "id": req_id}

    async def _call(self, message: dict[str, Any], headers: Mapping[str, str]) -> Any:
        if message.get("jsonrpc") != "2.0":
            raise errors.RpcError(errors.INVALID_REQUEST, "jsonrpc must be 2.0", message)
        method = message.get("method")
        if not isinstance(method, str):
            # Go InfraKit's decoder fails on a method that is not a string and answers -32700: so do we.
            raise errors.RpcError(errors.PARSE_ERROR, f"method must be a string, got {json_type(method)}")
        params = message.get("params")
        if isinstance(params, list):
            if len(params) != 1:
                raise errors.RpcError(errors.INVALID_PARAMS, f"params must be an object or a one-element array, got an array of {len(params)}")
            params = params[0]
        if params is not None and not isinstance(params, dict):
            raise errors.RpcError(errors.INVALID_PARAMS, f"params must be an object, got {json_type(params)}")
        if method == HANDSHAKE:
            return await self.hello_now()
        entry = self._methods.get(method)
        if entry is None:
            service_name = method.split(".", 1)[0]
            if service_name not in self._service_names:
                raise errors.RpcError(errors.METHOD_NOT_FOUND, f"rpc: can't find service \"{method}\" on plugin {self.name}")
            raise errors.RpcError(errors.METHOD_NOT_FOUND, f"rpc: can't find method \"{method}\" on plugin {self.name}")
        service, handler = entry
        try:
            reader = Reader(params, "")
        except ValidationError as e:
            raise errors.RpcError(errors.INVALID_PARAMS, str(e)) from None
        try:
            obj, echo = service.select(self.name, reader)
        except ValidationError as e:
            raise errors.RpcError(errors.APPLICATION_ERROR, str(e)) from None
        try:
            result = await handler.handler(service.bind(obj, headers), reader)
        except ValidationError as e:
            # Malformed params are -32602; a plugin's own validation verdict is an application error.
            code = errors.INVALID_PARAMS if isinstance(e, ParamsError) else errors.APPLICATION_ERROR
            raise errors.RpcError(code, str(e)) from None
        except PluginError as e:
            raise errors.RpcError(errors.APPLICATION_ERROR, str(e), {"Kind": e.kind} if e.kind else None) from None
        except errors.RpcError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug in a plugin must not kill the daemon
            log.exception("%s failed on plugin %s", method, self.name)
            raise errors.RpcError(errors.APPLICATION_ERROR, f"{method} failed: {type(e).__name__}: {e}") from None
        return {**echo, **result}
