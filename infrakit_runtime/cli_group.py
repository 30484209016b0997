"""``infrakit group ...``: declare groups and read their state through the manager's socket.

Guarantee: every command is one or a few Group SPI calls on the manager (any InfraKit
group plugin answers them too); ``--pretend`` changes nothing, and ``-o json|yaml`` prints
the wire data unchanged so scripts see exactly what DescribeGroup/InspectGroups returned.
Limit: ``watch`` polls DescribeGroup (every ``--interval``); it shows what the controller
reports, and an InfraKit controller without our ``Status`` gives only membership.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from infrakit_runtime import cli_render
from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.errors import RemoteError, UnreachableError

GROUP_SOCKET = "group"
OUTPUTS = ("table", "json", "yaml")


def _output_option(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-o`` before or after the action; the action's copy only counts when given (SUPPRESS)."""
    p.add_argument("-o", "--output", choices=OUTPUTS, default="table" if top else argparse.SUPPRESS,
                   help="table for people (default), json or yaml for scripts")


def register(sub: Any) -> None:
    """Add the ``group`` command tree to the top-level parser."""
    grp = sub.add_parser("group", help="declare groups and read their state (via the manager)")
    grp.add_argument("--plugin", default=GROUP_SOCKET, metavar="NAME", help="the group plugin socket (default: group)")
    _output_option(grp, top=True)
    gsub = grp.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = gsub.add_parser("commit", help="commit a group spec (YAML/JSON file, - for stdin)")
    c.add_argument("file")
    c.add_argument("--pretend", action="store_true", help="show the plan and the spec diff, change nothing")
    _output_option(c)
    _output_option(gsub.add_parser("ls", help="list the groups being managed, with their condition"))
    d = gsub.add_parser("describe", help="show a group's condition, counts, instances and recent events")
    d.add_argument("id", metavar="ID")
    _output_option(d)
    w = gsub.add_parser("watch", help="follow a group live until it converges",
                        description="Show the group's progress until it is converged (exit 0); with --timeout, "
                        "exit 1 if it is not converged in time.")
    w.add_argument("id", metavar="ID")
    w.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS", help="give up after this long (0: never)")
    w.add_argument("--interval", type=float, default=0.5, metavar="SECONDS", help="poll DescribeGroup this often")
    _output_option(w)
    for name, text in (("free", "stop managing a group, keep its instances"),
                       ("destroy", "destroy a group and every instance in it"), ("size", "show a group's declared size")):
        a = gsub.add_parser(name, help=text)
        a.add_argument("id", metavar="ID")
    ss = gsub.add_parser("set-size", help="change a group's declared size")
    ss.add_argument("id", metavar="ID")
    ss.add_argument("size", type=int)
    grp.set_defaults(func=cmd_group)


def register_observe(sub: Any) -> None:
    """Add ``infrakit events`` and ``infrakit manager`` (kept in ``cli_observe``)."""
    from infrakit_runtime import cli_observe

    cli_observe.register(sub)


def cmd_group(args: argparse.Namespace, cfg: Any) -> int:
    from infrakit_runtime.cli import client_for

    client, _ = client_for(args.plugin, cfg)
    try:
        handler = {
            "commit": _commit, "ls": _ls, "describe": _describe, "watch": _watch, "free": _free,
            "destroy": _destroy, "size": _size, "set-size": _set_size,
        }[args.action]
        return handler(args, client)
    finally:
        client.close()


def _call(client: SyncClient, args: argparse.Namespace, method: str, **params: Any) -> Any:
    return client.call(method, {"Name": args.plugin, **params})


def _describe_group(client: SyncClient, args: argparse.Namespace, group_id: str) -> dict[str, Any]:
    return _call(client, args, "Group.DescribeGroup", ID=group_id).get("Description") or {}


def _normalized(spec: Any) -> Any:
    """A spec as InspectGroups would show it once committed, so the diff shows only real changes."""
    from infrakit_runtime.group.plan.spec import parse_spec
    from infrakit_runtime.spi.common import ValidationError

    try:
        return parse_spec(spec).to_wire()
    except (ValidationError, ValueError, TypeError):
        return spec  # the controller's answer says what is wrong with it


def _commit(args: argparse.Namespace, client: SyncClient) -> int:
    from infrakit_runtime.cli import emit, read_document

    doc = read_document(args.file)
    specs = doc if isinstance(doc, list) else [doc]
    stored: dict[str, Any] = {}
    if args.pretend:
        stored = {g["ID"]: g for g in _call(client, args, "Group.InspectGroups", ID="").get("Groups") or []}
    results = []
    out = cli_render.console()
    for spec in specs:
        result = _call(client, args, "Group.CommitGroup", Spec=spec, Pretend=args.pretend)
        gid = str(result.get("ID") or (spec.get("ID") if isinstance(spec, dict) else "") or "")
        entry: dict[str, Any] = {"ID": gid, "Details": result.get("Details"), "Pretend": args.pretend}
        if args.pretend:
            entry["Diff"] = "".join(cli_render.spec_diff(gid, stored.get(gid), _normalized(spec)))
        results.append(entry)
        if args.output == "table":
            out.print(f"{gid}: {'would' if args.pretend else 'committed'}: {entry['Details']}", markup=False)
            if args.pretend:
                if entry["Diff"]:
                    out.print(cli_render.diff_text(entry["Diff"].splitlines(keepends=True)), end="")
                else:
                    out.print("(the spec is unchanged)")
    if args.output != "table":
        emit(results if isinstance(doc, list) else results[0], args.output)
    return 0


def _ls(args: argparse.Namespace, client: SyncClient) -> int:
    from infrakit_runtime.cli import emit

    groups = _call(client, args, "Group.InspectGroups", ID="").get("Groups") or []
    rows = []
    for g in groups:
        row: dict[str, Any] = {"ID": g["ID"]}
        try:
            desc = _describe_group(client, args, g["ID"])
        except RemoteError as e:
            row["Error"] = e.message
        else:
            status = desc.get("Status") or {}
            row.update({"Converged": bool(desc.get("Converged")), "Condition": status.get("Condition"),
                        "Reason": status.get("Reason") or "", "Plan": status.get("Plan") or ""})
            row.update({k: status.get(k, len(desc.get("Instances") or []) if k == "Running" else None)
                        for k in cli_render.COUNT_KEYS})
        row["Spec"] = g
        rows.append(row)
    if args.output != "table":
        emit(rows, args.output)
    elif rows:
        cli_render.console().print(cli_render.groups_table(rows))
    else:
        print("no groups are being managed")
    return 0


def _describe(args: argparse.Namespace, client: SyncClient) -> int:
    from infrakit_runtime.cli import emit

    desc = _describe_group(client, args, args.id)
    if args.output != "table":
        emit(desc, args.output)
    else:
        cli_render.console().print(cli_render.describe_view(args.id, desc))
    return 0


def _converged(desc: dict[str, Any]) -> bool:
    status = desc.get("Status")
    if isinstance(status, dict) and status.get("Condition") is not None:
        return bool(desc.get("Converged")) and status.get("Condition") == "Converged"
    return bool(desc.get("Converged"))


def _watch(args: argparse.Namespace, client: SyncClient) -> int:
    """Poll DescribeGroup and redraw until converged; 0 when it is, 1 on --timeout or an unknown group."""
    from rich.live import Live

    from infrakit_runtime.cli import emit

    started = time.monotonic()
    desc: dict[str, Any] | None = None
    error: str | None = None
    out = cli_render.console()
    live = Live(cli_render.watch_view(args.id, None, elapsed=0), console=out, refresh_per_second=4,
                auto_refresh=False) if args.output == "table" else None
    outcome = 1
    try:
        if live is not None:
            live.start()
        while True:
            try:
                desc, error = _describe_group(client, args, args.id), None
            except RemoteError as e:
                if "is not being watched" in e.message:
                    error = e.message
                    desc = None
                    if live is not None:
                        live.update(cli_render.watch_view(args.id, None, elapsed=0, error=error), refresh=True)
                    break
                error = e.message
            except UnreachableError as e:
                error = str(e)
                client.close()
            elapsed = time.monotonic() - started
            if live is not None:
                live.update(cli_render.watch_view(args.id, desc, elapsed=elapsed, error=error), refresh=True)
            if desc is not None and _converged(desc):
                outcome = 0
                break
            if args.timeout and elapsed >= args.timeout:
                break
            time.sleep(max(0.05, args.interval))
    finally:
        if live is not None:
            live.stop()
            if not out.is_terminal:
                out.line()
    if args.output != "table" and desc is not None:
        emit(desc, args.output)
    if outcome == 0:
        if args.output == "table":
            out.print(f"group {args.id} converged", style="green")
        return 0
    err = cli_render.console(stderr=True)
    if desc is None:
        err.print(f"infrakit: group {args.id}: {error or 'no answer from the controller'}", markup=False)
    else:
        status = desc.get("Status") or {}
        why = f"{status.get('Condition', 'not converged')}: {status.get('Reason') or status.get('Plan') or ''}"
        err.print(f"infrakit: group {args.id} did not converge within {args.timeout:g}s ({why.strip()})", markup=False)
    return 1


def _free(args: argparse.Namespace, client: SyncClient) -> int:
    _call(client, args, "Group.FreeGroup", ID=args.id)
    print(f"freed {args.id}")
    return 0


def _destroy(args: argparse.Namespace, client: SyncClient) -> int:
    _call(client, args, "Group.DestroyGroup", ID=args.id)
    print(f"destroyed {args.id}")
    return 0


def _size(args: argparse.Namespace, client: SyncClient) -> int:
    print(_call(client, args, "Group.Size", ID=args.id).get("Size"))
    return 0


def _set_size(args: argparse.Namespace, client: SyncClient) -> int:
    _call(client, args, "Group.SetSize", ID=args.id, Size=args.size)
    print(f"{args.id} size set to {args.size}")
    return 0
