"""``infrakit events`` and ``infrakit manager status``: what the controller did, and who leads.

Guarantee: reading only. ``events`` is one ``Manager.Events`` call; with ``--follow`` it then
streams the manager's ``GET /events`` (Server-Sent Events) over the same Unix socket (or TCP
address) the RPC uses, from the last sequence it printed, so nothing is shown twice, and
after a dropped connection it resumes from there. ``manager status`` is one ``Manager.Status`` call
(with ``sharding: groups``: the members and each group's owner instead of a leader).
Limit: events come from the replica you ask (each keeps its own bounded ring, emptied by a
restart); ask the leader for a group's story.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

from infrakit_runtime.cli import render
from infrakit_runtime.cli.common import OUTPUTS, UsageError, client_for, completes_group_ids, emit
from infrakit_runtime.rpc import discovery, tokens
from infrakit_runtime.rpc.client import SyncClient, UnixHTTPConnection
from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from infrakit_runtime.spi.common import ValidationError

MANAGER_SOCKET = "group"
RECONNECT_DELAY = 1.0


def register(sub: Any) -> None:
    """Add ``events`` and ``manager`` to the top-level parser."""
    e = sub.add_parser("events", help="show the controller's recent events, or follow them live")
    e.add_argument("--plugin", default=MANAGER_SOCKET, metavar="NAME", help="the manager socket (default: group)")
    e.add_argument("-f", "--follow", action="store_true", help="keep printing events as they happen (Ctrl-C stops)")
    completes_group_ids(e.add_argument("--group", metavar="ID", help="only this group's events"))
    e.add_argument("--since", type=int, default=0, metavar="SEQ", help="only events after this sequence number")
    e.add_argument("--limit", type=int, default=50, metavar="N", help="at most the last N past events (0: all kept)")
    e.add_argument("-o", "--output", choices=OUTPUTS, default="table",
                   help="table (default); json prints one JSON object per line with --follow")
    e.set_defaults(func=cmd_events)

    m = sub.add_parser("manager", help="the manager: leadership and backend health")
    m.add_argument("--plugin", default=MANAGER_SOCKET, metavar="NAME", help="the manager socket (default: group)")
    m.add_argument("-o", "--output", choices=OUTPUTS, default="table")
    msub = m.add_subparsers(dest="action", metavar="ACTION", required=True)
    st = msub.add_parser("status", help="leader, leader location, backend health, and why a replica is not acting; "
                                        "with sharding: the members and each group's owner")
    st.add_argument("-o", "--output", choices=OUTPUTS, default=argparse.SUPPRESS)
    m.set_defaults(func=cmd_manager)


def cmd_manager(args: argparse.Namespace, cfg: Any) -> int:
    client, _ = client_for(args.plugin, cfg)
    try:
        status = client.call("Manager.Status", {})
    finally:
        client.close()
    if args.output != "table":
        emit(status, args.output)
    else:
        render.console().print(render.manager_view(status))
    return 0


def cmd_events(args: argparse.Namespace, cfg: Any) -> int:
    if args.limit < 0 or args.since < 0:
        raise UsageError("--limit and --since must not be negative")
    if args.follow and args.output == "yaml":
        raise UsageError("--follow prints a stream: use -o table or -o json")
    client, _ = client_for(args.plugin, cfg)
    try:
        events = client.call("Manager.Events", {"Since": args.since, "Group": args.group or "",
                                                "Limit": args.limit}).get("Events") or []
    finally:
        client.close()
    if args.follow:
        out = render.console()
        for event in events:
            _print_event(out, event, args.output)
        since = max([args.since, *(int(e.get("Seq") or 0) for e in events)])
        address = discovery.resolve(discovery.PluginName.parse(args.plugin), cfg.plugins_dir)
        return _follow(address, args, since=since, timeout=cfg.client_timeout)
    if args.output != "table":
        emit(events, args.output)
    elif events:
        render.console().print(render.events_table(events, with_group=not args.group))
    else:
        print("no events" + (f" for group {args.group}" if args.group else ""))
    return 0


def _follow(address: discovery.Address, args: argparse.Namespace, *, since: int, timeout: float) -> int:
    """Print every event after ``since`` as it happens; after a dropped stream, resume from the last seen."""
    out = render.console()
    while True:
        try:
            for event in stream_events(address, since=since, group=args.group, timeout=max(timeout, 30.0)):
                seq = int(event.get("Seq") or 0)
                if seq and seq <= since:
                    continue
                since = max(since, seq)
                _print_event(out, event, args.output)
        except UnreachableError as e:
            render.console(stderr=True).print(f"infrakit: {e}; reconnecting", markup=False)
        time.sleep(RECONNECT_DELAY)
        since = _resume_point(address, args, since)


def _resume_point(address: discovery.Address, args: argparse.Namespace, since: int) -> int:
    """Where to resume: ``since``, or 0 when the manager restarted (its sequence starts over)."""
    client = SyncClient(address, name=args.plugin, timeout=5)
    try:
        newest = client.call("Manager.Events", {"Since": 0, "Group": "", "Limit": 1}).get("Events") or []
    except (UnreachableError, RemoteError):
        return since
    finally:
        client.close()
    return 0 if not newest or int(newest[-1].get("Seq") or 0) < since else since


def _print_event(out: Any, event: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    else:
        out.print(render.event_line(event))


def http_get(address: discovery.Address, path: str, *, timeout: float | None) -> http.client.HTTPResponse:
    """``GET path`` on a daemon's HTTP app (Unix socket or TCP); the open response, status checked."""
    conn: http.client.HTTPConnection
    if address.unix_path is not None:
        conn = UnixHTTPConnection(str(address.unix_path), timeout)
    else:
        parts = urlsplit(address.url or "")
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname or "localhost", parts.port, timeout=timeout)
    headers = {"Accept": "text/event-stream"}
    if address.url is not None:
        try:
            token = tokens.from_environment()
        except ValidationError as e:
            raise UnreachableError(f"cannot reach {address}: {e}") from None
        if token:
            headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
    except OSError as e:
        conn.close()
        raise UnreachableError(f"cannot reach {address}: {e.strerror or e}") from None
    if resp.status != 200:
        body = resp.read().decode(errors="replace").strip()
        conn.close()
        raise UnreachableError(f"{address} answered HTTP {resp.status} for {path}: {body}")
    return resp


def stream_events(address: discovery.Address, *, since: int = 0, group: str | None = None,
                  timeout: float | None = 60.0) -> Iterator[dict[str, Any]]:
    """The manager's ``/events`` Server-Sent Events as dicts (history after ``since``, then live).

    Raises ``UnreachableError`` when the stream cannot be opened or ends; ``timeout`` must
    exceed the server's 15 s keep-alive.
    """
    query = {"since": str(since)}
    if group:
        query["group"] = group
    resp = http_get(address, f"/events?{urlencode(query)}", timeout=timeout)
    data: list[str] = []
    try:
        while True:
            try:
                raw = resp.readline()
            except (TimeoutError, OSError) as e:
                raise UnreachableError(f"the event stream from {address} stopped: {e}") from None
            if not raw:
                raise UnreachableError(f"the event stream from {address} closed")
            line = raw.decode(errors="replace").rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                event = json.loads("\n".join(data))
                data = []
                if isinstance(event, dict):
                    yield event
    finally:
        resp.close()
