"""The ``manager`` daemon kind: Group + Manager SPI on the well-known ``group`` socket.

Guarantee: the daemon validates all of its options before starting anything, refuses a
TCP listener without a bearer token (loopback included) or off loopback without TLS, and on
shutdown stops its supervisors before resigning leadership so a follower takes over at once.
Limit: options are read once at start; change them and restart the daemon.

Options (``-o key=value`` or the config file's ``plugins[].options``)::

    backend:        {type: file, dir: ...} | {type: etcd, endpoints: [...], ...}   default file in $INFRAKIT_HOME/store
    poll_interval:  5s      (env INFRAKIT_GROUP_POLL_INTERVAL wins, as in InfraKit)
    listen:         HOST:PORT   TCP listener for follower forwarding and remote clients (off by default)
    advertise:      URL         the location followers forward to (default from listen, else the Unix socket)
    tls:            {cert, key, ca}  cert/key required for a listener off loopback; ca (a PEM bundle)
                                 verifies the leader's certificate when forwarding (default: system CAs)
    token_file:     FILE         bearer token for the TCP listener and for forwarding to the leader (default
                                 $INFRAKIT_TOKEN_FILE or the config file's token_file); required with listen,
                                 loopback included; refused when other users can read it
    forward:        true         followers forward Group calls to the leader (false: refuse, naming it)
    events_json:    false        also write every event as one JSON line: true for stderr, or a file path
    self_logical_id: ID          the logical ID of the instance this replica runs on (default env
                                 INFRAKIT_GROUP_SELF_LOGICAL_ID, as in InfraKit): never destroyed while it
                                 leads, rolled last, leadership handed over first
    sharding:       off          off: one leader runs every group; groups: the replicas share the groups, each
                                 group owned by one replica (etcd backend only; see manager.shared)

Routes beside JSON-RPC: ``GET /events`` (Server-Sent Events) and ``GET /metrics``
(Prometheus text format: the controller's metrics join the series every daemon exports).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from infrakit_runtime import logs
from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.durations import parse_duration
from infrakit_runtime.group import events as ev
from infrakit_runtime.group.controller import GroupController
from infrakit_runtime.group.events import EventLog
from infrakit_runtime.manager.backend import BackendFactory, SharedBackend
from infrakit_runtime.manager.fencing import FencedLookup
from infrakit_runtime.manager.manager import Manager
from infrakit_runtime.manager.metrics import ControllerMetrics
from infrakit_runtime.manager.shared import ShardedManager
from infrakit_runtime.rpc import tokens
from infrakit_runtime.rpc.client import default_timeout
from infrakit_runtime.rpc.group import GroupService
from infrakit_runtime.rpc.lookup import PluginDirectory
from infrakit_runtime.rpc.manager import ManagerService
from infrakit_runtime.spi.common import ValidationError, json_type

KNOWN = {"backend", "poll_interval", "listen", "advertise", "tls", "token_file", "forward", "events_json",
         "self_logical_id", "sharding"}
# The values of the ``sharding`` option: one leader (the default), or replicas sharing the groups.
SHARDING = ("off", "groups")
ENV_SELF_LOGICAL_ID = "INFRAKIT_GROUP_SELF_LOGICAL_ID"


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_options(options: dict[str, Any], *, home: Path, open_backend: BackendFactory) -> dict[str, Any]:
    """Every option checked; ``ValidationError`` lists each problem (secrets never echoed).

    ``open_backend`` turns the ``backend`` option into a ``Backend``: the daemon wiring injects
    the implementations (``infrakit_runtime.backends``), which this package never imports.
    """
    problems: list[str] = []
    for key in sorted(set(options) - KNOWN, key=str):
        problems.append(f"manager option {key!r} is unknown (known: {', '.join(sorted(KNOWN))})")
    out: dict[str, Any] = {}
    raw_poll = os.environ.get("INFRAKIT_GROUP_POLL_INTERVAL") or options.get("poll_interval") or 5.0
    try:
        out["poll_interval"] = parse_duration(raw_poll)
        if out["poll_interval"] <= 0:
            raise ValueError
    except (ValueError, TypeError):
        problems.append(f"poll_interval: {raw_poll!r} is not a positive duration (e.g. 5s)")
    backend = options.get("backend") or {"type": "file", "dir": str(home / "store")}
    if isinstance(backend, dict) and backend.get("type", "file") == "file" and not backend.get("dir"):
        backend = {**backend, "dir": str(home / "store")}
    try:
        out["backend"] = open_backend(backend)
    except ValidationError as e:
        problems.extend(e.problems)
    out["tcp"] = None
    listen = options.get("listen")
    tls = options.get("tls")
    token_file = options.get("token_file") or os.environ.get(tokens.ENV)
    if token_file is not None and not isinstance(token_file, str):
        problems.append(f"token_file must be a file path, got {json_type(token_file)}")
        token_file = None
    if listen:
        host, _, port = str(listen).rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"listen: {listen!r} is not HOST:PORT")
        else:
            out["tcp"] = (host or "127.0.0.1", int(port))
            if not _is_loopback(host or "127.0.0.1") and not tls:
                problems.append(f"listen: {listen} is not loopback; a TCP listener off loopback requires tls (cert, key)")
            if not token_file:
                problems.append(f"listen: {listen} requires a bearer token, loopback included (any local user can "
                                f"reach loopback): set token_file in the manager's options, or {tokens.ENV} or "
                                "token_file in the config file, to a file only the daemons' user can read")
    out["ssl_context"] = None
    out["forward_ssl"] = None
    if tls:
        if not isinstance(tls, dict) or not tls.get("cert") or not tls.get("key"):
            problems.append(f"tls must be a mapping with cert and key files, got {json_type(tls)}")
        else:
            unknown = sorted(set(tls) - {"cert", "key", "ca"}, key=str)
            if unknown:
                problems.append(f"tls: unknown keys {', '.join(map(str, unknown))} (known: ca, cert, key)")
            if tls.get("ca"):
                try:
                    out["forward_ssl"] = ssl.create_default_context(cafile=str(tls["ca"]))
                except (OSError, ssl.SSLError) as e:
                    problems.append(f"tls.ca: cannot load {tls['ca']}: {e}")
            try:
                ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                ctx.load_cert_chain(tls["cert"], tls["key"])
                out["ssl_context"] = ctx
            except (OSError, ssl.SSLError) as e:
                problems.append(f"tls: cannot load {tls.get('cert')} / {tls.get('key')}: {e}")
    out["token"] = None
    if token_file:
        try:
            out["token"] = tokens.read(token_file)
        except ValidationError as e:
            problems.extend(f"token_file: {p}" for p in e.problems)
    forward = options.get("forward", True)
    if not isinstance(forward, bool):
        problems.append(f"forward must be true or false, got {forward!r}")
    out["forward"] = bool(forward)
    self_id = options.get("self_logical_id", os.environ.get(ENV_SELF_LOGICAL_ID) or None)
    if self_id is not None and (not isinstance(self_id, str) or not self_id.strip()):
        problems.append(f"self_logical_id must be a logical ID (a non-empty string), got {self_id!r}")
        self_id = None
    out["self_id"] = self_id
    events_json = options.get("events_json", False)
    if events_json is None or isinstance(events_json, bool):
        out["events_json"] = bool(events_json)
    elif isinstance(events_json, str) and events_json.strip():
        out["events_json"] = events_json if os.path.isabs(events_json) else str(home / events_json)
    else:
        problems.append(f"events_json must be true, false or a file path, got {events_json!r}")
    out["advertise"] = options.get("advertise")
    sharding = options.get("sharding", "off")
    if sharding is False or sharding is None:
        sharding = "off"
    out["sharding"] = sharding
    if sharding not in SHARDING:
        problems.append(f"sharding: {sharding!r} is not one of {', '.join(SHARDING)} "
                        "(off: one leader runs every group; groups: the replicas share them, etcd backend only)")
    elif sharding == "groups":
        kind = backend.get("type", "file") if isinstance(backend, dict) else None
        if kind != "etcd":
            problems.append(f"sharding: groups needs the etcd backend, but backend.type is {kind!r}: the file "
                            "backend keeps one leader (use sharding: off, or backend: {type: etcd, ...})")
        if self_id is not None:
            problems.append("sharding: groups cannot be combined with self_logical_id: handing a replica's own "
                            "instance over is single-leader only (use sharding: off)")
    if problems:
        raise ValidationError(problems)
    return out


def events_json_handler(target: bool | str) -> logging.Handler | None:
    """Also write each event as its bare wire object (stderr or an appended file), whatever the log format.

    On stderr the JSON line replaces the event's ordinary log line (the events logger stops
    propagating), so nothing is said twice there; a file gets the JSON lines and the log keeps
    its own. The handler is returned so the daemon can remove it.
    """
    if not target:
        return None
    handler: logging.Handler
    if isinstance(target, str):
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.EventWireFormatter())
    ev.event_log.addHandler(handler)
    ev.event_log.setLevel(logging.INFO)
    ev.event_log.propagate = isinstance(target, str)
    return handler


def events_route(log: EventLog) -> web.RouteDef:
    """``GET /events``: Server-Sent Events, as InfraKit served them."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await _events(request, log)

    return web.get("/events", handler)


async def _events(request: web.Request, log: EventLog) -> web.StreamResponse:
    """Recent history (``?since=SEQ``, ``?group=ID``), then every new event as it happens."""
    try:
        since = int(request.query.get("since", "0"))
    except ValueError:
        return web.Response(status=400, text="since must be an integer event sequence number")
    group = request.query.get("group")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    queue = log.subscribe()
    try:
        for e in log.recent(group=group, limit=0, since=since):
            await response.write(f"id: {e.seq}\nevent: {e.kind}\ndata: {json.dumps(e.to_wire())}\n\n".encode())
        while True:
            try:
                e = await asyncio.wait_for(queue.get(), 15)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if group and e.group != group:
                continue
            await response.write(f"id: {e.seq}\nevent: {e.kind}\ndata: {json.dumps(e.to_wire())}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        log.unsubscribe(queue)
    return response


@contextlib.asynccontextmanager
async def open_daemon(ctx: DaemonContext, *, open_backend: BackendFactory) -> AsyncIterator[Served]:
    opts = parse_options(ctx.options, home=ctx.home, open_backend=open_backend)
    events = EventLog()
    json_handler = events_json_handler(opts["events_json"])
    loop = asyncio.get_running_loop()
    metrics = ControllerMetrics(ctx.metrics.registry)
    directory = PluginDirectory(ctx.plugins_dir, timeout=default_timeout(), observer=metrics.observe_call)
    plugins = FencedLookup(directory)  # changes only under a trusted lease
    handover: list[Callable[[str], Coroutine[Any, Any, Any]]] = []
    controller = GroupController(plugins=plugins, poll_interval=opts["poll_interval"], events=events, clock=loop.time,
                                 self_id=opts["self_id"], on_handover=lambda why: handover[0](why),
                                 on_pass=metrics.observe_pass)
    if opts["advertise"]:
        location = opts["advertise"]
    elif opts["tcp"]:
        scheme = "https" if opts["ssl_context"] else "http"
        location = f"{scheme}://{opts['tcp'][0]}:{opts['tcp'][1]}"
    else:
        location = f"unix://{ctx.plugins_dir / ctx.name}"
    candidate = f"{socket.gethostname()}:{os.getpid()}:{ctx.name}"
    manager: Manager
    if opts["sharding"] == "groups" and isinstance(opts["backend"], SharedBackend):
        manager = ShardedManager(backend=opts["backend"], controller=controller, candidate=candidate,
                                 location=location, forward=opts["forward"], token=opts["token"],
                                 forward_ssl=opts["forward_ssl"])
    else:
        manager = Manager(backend=opts["backend"], controller=controller, candidate=candidate, location=location,
                          forward=opts["forward"], token=opts["token"], forward_ssl=opts["forward_ssl"])
    plugins.guard = manager.acting_problem
    plugins.group_guard = manager.group_acting_problem
    handover.append(manager.hand_over)
    metrics.attach(controller=controller, manager=manager)
    task = asyncio.create_task(manager.run(), name=f"manager/{ctx.name}")
    try:
        served = Served(services=[GroupService({"": manager}), ManagerService({"": manager})],
                        routes=[events_route(events)], tcp=opts["tcp"],
                        ssl_context=opts["ssl_context"], token=opts["token"])
        yield served
    finally:
        await manager.resign()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await manager.close()
        await directory.close()
        metrics.close()
        if json_handler is not None:
            ev.event_log.removeHandler(json_handler)
            json_handler.close()
