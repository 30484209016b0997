"""``infrakit group ...``: declare groups and read their state through the manager's socket.

Guarantee: every command is one or a few Group SPI calls made through ``rpc.group.GroupClient``
(the client the manager's replicas forward with: one typed Group client), so any InfraKit group
plugin answers them too; the object named is ``group/groups`` (or the ``--plugin``'s own
``socket/type``), which a Go InfraKit manager also resolves once groups exist. ``--pretend``
changes nothing and shows the diff of the controller's canonical answer (the controller owns
the spec's meaning; a Go manager's stored spec otherwise); ``-o json|yaml`` prints the wire data, so scripts see what DescribeGroup and
InspectGroups returned. "Converged" is the controller's answer (``Description.Converged``, which
our controller takes from its plan), never recomputed here.
Limit: ``watch`` polls DescribeGroup (every ``--interval``); it shows what the controller
reports, and an InfraKit controller without our ``Status`` gives only membership.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from infrakit_runtime import config
from infrakit_runtime.cli import render
from infrakit_runtime.cli.common import address_of, completes_group_ids, emit, output_option, read_document
from infrakit_runtime.rpc import discovery
from infrakit_runtime.rpc.client import Client
from infrakit_runtime.rpc.group import GroupClient
from infrakit_runtime.spi import group
from infrakit_runtime.spi.common import PluginError

GROUP_SOCKET = "group"
# The object that stands for every group on a manager (Go resolves a bare "group" only while no group exists).
ALL_GROUPS = "groups"


def register(sub: Any) -> None:
    """Add the ``group`` command tree to the top-level parser."""
    grp = sub.add_parser("group", help="declare groups and read their state (via the manager)")
    grp.add_argument("--plugin", default=GROUP_SOCKET, metavar="NAME",
                     help="the group plugin, socket[/object] (default: group, which calls the object group/groups)")
    output_option(grp, top=True)
    gsub = grp.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = gsub.add_parser("commit", help="commit a group spec (YAML/JSON file, - for stdin)")
    c.add_argument("file")
    c.add_argument("--pretend", action="store_true", help="show the plan and the spec diff, change nothing")
    output_option(c)
    ls = gsub.add_parser("ls", help="list the groups being managed, with their condition")
    ls.add_argument("-q", "--quiet", action="store_true",
                    help="print only the group IDs, one per line (no DescribeGroup calls; shell completion uses it)")
    output_option(ls)
    d = gsub.add_parser("describe", help="show a group's condition, counts, instances and recent events")
    completes_group_ids(d.add_argument("id", metavar="ID"))
    output_option(d)
    w = gsub.add_parser("watch", help="follow a group live until it converges",
                        description="Show the group's progress until it is converged (exit 0); with --timeout, "
                        "exit 1 if it is not converged in time.")
    completes_group_ids(w.add_argument("id", metavar="ID"))
    w.add_argument("--timeout", type=float, default=0.0, metavar="SECONDS", help="give up after this long (0: never)")
    w.add_argument("--interval", type=float, default=0.5, metavar="SECONDS", help="poll DescribeGroup this often")
    output_option(w)
    for name, text in (("free", "stop managing a group, keep its instances"),
                       ("destroy", "destroy a group and every instance in it"), ("size", "show a group's declared size")):
        a = gsub.add_parser(name, help=text)
        completes_group_ids(a.add_argument("id", metavar="ID"))
        output_option(a)
    ss = gsub.add_parser("set-size", help="change a group's declared size")
    completes_group_ids(ss.add_argument("id", metavar="ID"))
    ss.add_argument("size", type=int)
    output_option(ss)
    grp.set_defaults(func=cmd_group)


def object_name(pn: discovery.PluginName) -> str:
    """The Group object a call names: the plugin's own ``socket/type``, else ``socket/groups``."""
    return str(pn) if pn.type else f"{pn.socket}/{ALL_GROUPS}"


def cmd_group(args: argparse.Namespace, cfg: config.Config) -> int:
    address, pn = address_of(args.plugin, cfg)
    handler = HANDLERS[args.action]

    async def run() -> int:
        client = Client(address, name=pn.socket, timeout=cfg.client_timeout)
        try:
            return await handler(args, Groups(GroupClient(client, name=object_name(pn))))
        finally:
            await client.close()

    return asyncio.run(run())


class Groups:
    """The Group client as the CLI uses it: every call stamped with when it was sent (the manager
    refuses a change older than one it already applied)."""

    def __init__(self, client: GroupClient) -> None:
        self.client = client

    @staticmethod
    def _origin() -> group.Origin:
        return group.Origin(sent=time.time())

    async def commit(self, spec: group.Spec, *, pretend: bool) -> group.Commit:
        return await self.client.commit_group(spec, pretend, origin=self._origin())

    async def inspect(self) -> list[group.Spec]:
        return await self.client.inspect_groups(origin=self._origin())

    async def describe(self, group_id: group.ID) -> group.Description:
        return await self.client.describe_group(group_id, origin=self._origin())

    async def free(self, group_id: group.ID) -> None:
        await self.client.free_group(group_id, origin=self._origin())

    async def destroy(self, group_id: group.ID) -> None:
        await self.client.destroy_group(group_id, origin=self._origin())

    async def size(self, group_id: group.ID) -> int:
        return await self.client.size(group_id, origin=self._origin())

    async def set_size(self, group_id: group.ID, size: int) -> None:
        await self.client.set_size(group_id, size, origin=self._origin())


async def _commit(args: argparse.Namespace, groups: Groups) -> int:
    doc = read_document(args.file)
    specs = [group.Spec.from_wire(s, f"{args.file}[{i}]" if isinstance(doc, list) else args.file)
             for i, s in enumerate(doc if isinstance(doc, list) else [doc])]
    stored: dict[str, Any] | None = None
    results = []
    out = render.console()
    for spec in specs:
        answer = await groups.commit(spec, pretend=args.pretend)
        entry: dict[str, Any] = {"ID": spec.id, "Details": answer.details, "Pretend": args.pretend}
        if answer.changed is not None:
            entry.update({"Changed": answer.changed, "Spec": answer.spec})
        if args.pretend:
            if answer.changed is not None:
                # The controller owns the spec's meaning: it answers both sides in its canonical form.
                before, after = answer.previous, answer.spec
            else:  # a Go InfraKit manager answers only Details: compare with what it stores, as given
                if stored is None:
                    stored = {s.id: s.to_wire() for s in await groups.inspect()}
                before, after = stored.get(spec.id), spec.to_wire()
            entry["Diff"] = "".join(render.spec_diff(spec.id, before if isinstance(before, dict) else None,
                                                     after if isinstance(after, dict) else {}))
        results.append(entry)
        if args.output == "table":
            out.print(f"{spec.id}: {'would' if args.pretend else 'committed'}: {answer.details}", markup=False)
            if args.pretend:
                if entry["Diff"]:
                    out.print(render.diff_text(entry["Diff"].splitlines(keepends=True)), end="")
                else:
                    out.print("(the spec is unchanged)")
    if args.output != "table":
        emit(results if isinstance(doc, list) else results[0], args.output)
    return 0


async def _ls(args: argparse.Namespace, groups: Groups) -> int:
    specs = await groups.inspect()
    if args.quiet:
        for spec in specs:
            print(spec.id)
        return 0
    rows = []
    for spec in specs:
        row: dict[str, Any] = {"ID": spec.id}
        try:
            desc = await groups.describe(spec.id)
        except PluginError as e:
            row["Error"] = str(e)
        else:
            status = desc.status if isinstance(desc.status, dict) else {}
            row.update({"Converged": desc.converged, "Condition": status.get("Condition"),
                        "Reason": status.get("Reason") or "", "Plan": status.get("Plan") or ""})
            row.update({k: status.get(k, len(desc.instances) if k == "Running" else None) for k in render.COUNT_KEYS})
        row["Spec"] = spec.to_wire()
        rows.append(row)
    if args.output != "table":
        emit(rows, args.output)
    elif rows:
        render.console().print(render.groups_table(rows))
    else:
        print("no groups are being managed")
    return 0


async def _describe(args: argparse.Namespace, groups: Groups) -> int:
    desc = (await groups.describe(args.id)).to_wire()
    if args.output != "table":
        emit(desc, args.output)
    else:
        render.console().print(render.describe_view(args.id, desc))
    return 0


async def _watch(args: argparse.Namespace, groups: Groups) -> int:
    """Poll DescribeGroup and redraw until converged; 0 when it is, 1 on --timeout or an unknown group."""
    from rich.live import Live  # only ``group watch`` draws live; not loaded by every daemon

    started = time.monotonic()
    desc: group.Description | None = None
    error: str | None = None
    out = render.console()
    live = Live(render.watch_view(args.id, None, elapsed=0), console=out, refresh_per_second=4,
                auto_refresh=False) if args.output == "table" else None
    converged = False
    try:
        if live is not None:
            live.start()
        while True:
            try:
                desc, error = await groups.describe(args.id), None
            except group.UnknownGroup as e:
                desc, error = None, str(e)
                if live is not None:
                    live.update(render.watch_view(args.id, None, elapsed=0, error=error), refresh=True)
                break
            except PluginError as e:  # refused, or unreachable: keep trying
                error = str(e)
            elapsed = time.monotonic() - started
            if live is not None:
                live.update(render.watch_view(args.id, desc.to_wire() if desc else None, elapsed=elapsed,
                                              error=error), refresh=True)
            if desc is not None and desc.converged:
                converged = True
                break
            if args.timeout and elapsed >= args.timeout:
                break
            await asyncio.sleep(max(0.05, args.interval))
    finally:
        if live is not None:
            live.stop()
            if not out.is_terminal:
                out.line()
    if args.output != "table" and desc is not None:
        emit(desc.to_wire(), args.output)
    if converged:
        if args.output == "table":
            out.print(f"group {args.id} converged", style="green")
        return 0
    err = render.console(stderr=True)
    if desc is None:
        err.print(f"infrakit: group {args.id}: {error or 'no answer from the controller'}", markup=False)
    else:
        status = desc.status if isinstance(desc.status, dict) else {}
        why = f"{status.get('Condition', 'not converged')}: {status.get('Reason') or status.get('Plan') or ''}"
        err.print(f"infrakit: group {args.id} did not converge within {args.timeout:g}s ({why.strip()})", markup=False)
    return 1


def _done(args: argparse.Namespace, text: str, result: dict[str, Any]) -> int:
    if args.output != "table":
        emit(result, args.output)
    else:
        print(text)
    return 0


async def _free(args: argparse.Namespace, groups: Groups) -> int:
    await groups.free(args.id)
    return _done(args, f"freed {args.id}", {"ID": args.id})


async def _destroy(args: argparse.Namespace, groups: Groups) -> int:
    await groups.destroy(args.id)
    return _done(args, f"destroyed {args.id}", {"ID": args.id})


async def _size(args: argparse.Namespace, groups: Groups) -> int:
    size = await groups.size(args.id)
    return _done(args, str(size), {"ID": args.id, "Size": size})


async def _set_size(args: argparse.Namespace, groups: Groups) -> int:
    await groups.set_size(args.id, args.size)
    return _done(args, f"{args.id} size set to {args.size}", {"ID": args.id, "Size": args.size})


HANDLERS: dict[str, Callable[[argparse.Namespace, Groups], Awaitable[int]]] = {
    "commit": _commit, "ls": _ls, "describe": _describe, "watch": _watch, "free": _free,
    "destroy": _destroy, "size": _size, "set-size": _set_size,
}

__all__ = ["GROUP_SOCKET", "cmd_group", "object_name", "register"]
