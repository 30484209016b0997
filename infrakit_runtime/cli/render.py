"""How the CLI shows controller state to a person: tables, the watch view, diffs, event lines.

Guarantee: everything here turns already-fetched wire data (DescribeGroup's Description,
Manager.Status, events) into rich renderables or plain strings; nothing calls a plugin, so
a renderer can be tested with a dict. Colour and terminal effects come from rich, which
turns them off when stdout is not a terminal or ``NO_COLOR`` is set.
Limit: for people; scripts should use ``-o json|yaml``, whose shape is the wire's, while
these layouts may change between releases.
"""

from __future__ import annotations

import datetime
import difflib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml
from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

CONDITION_STYLES = {"Converged": "green", "Progressing": "yellow", "Degraded": "bold red"}
HEALTH_STYLES = {"healthy": "green", "unhealthy": "red", "unknown": "yellow"}
COUNT_KEYS = ("Desired", "Running", "Healthy", "Unhealthy", "Pending", "Outdated")


def console(*, stderr: bool = False) -> Console:
    """A console for stdout (or stderr): colours on a terminal only; a wide page when piped, so rows never wrap."""
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    return Console(file=stream, width=None if terminal else 200, no_color=bool(os.environ.get("NO_COLOR")) or None,
                   highlight=False, soft_wrap=not terminal)


def _table(*headers: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for h in headers:
        table.add_column(h, overflow="fold")
    return table


def age(seconds: float | int | None) -> str:
    """``kubectl``-style ages: 42s, 3m12s, 5h4m, 2d3h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def when(epoch: float | None) -> str:
    """An event time in the local zone, to the millisecond."""
    if not epoch:
        return "-"
    return datetime.datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="milliseconds")


def condition_text(status: Mapping[str, Any], converged: bool | None = None) -> Text:
    condition = status.get("Condition") or ("Converged" if converged else "Unknown")
    return Text(condition, style=CONDITION_STYLES.get(condition, ""))


def counts_line(status: Mapping[str, Any]) -> str:
    return ", ".join(f"{status.get(k, 0)} {k.lower()}" for k in COUNT_KEYS if k in status)


# -- groups ------------------------------------------------------------------------------------


def groups_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """``infrakit group ls``: one line per group with its condition and counts."""
    table = _table("ID", "CONDITION", "DESIRED", "RUNNING", "HEALTHY", "OUTDATED", "PLAN")
    for r in rows:
        if r.get("Error"):
            table.add_row(r["ID"], Text("Unknown", style="yellow"), "-", "-", "-", "-", r["Error"])
            continue
        table.add_row(r["ID"], condition_text(r, r.get("Converged")), *(str(r.get(k, "-")) for k in
                      ("Desired", "Running", "Healthy", "Outdated")), str(r.get("Plan") or ""))
    return table


def instances_table(description: Mapping[str, Any]) -> Table:
    """Instance, logical ID, health, up to date, age, and the flavor's reason when one gave any: from
    Status.Instances, else the bare Description."""
    status = description.get("Status") or {}
    rows = status.get("Instances")
    reasons = any(r.get("Reason") for r in rows or [])
    table = _table("INSTANCE", "LOGICAL ID", "HEALTH", "UP TO DATE", "AGE", *(("REASON",) if reasons else ()))
    if rows is None:  # an InfraKit controller: no Status, only the members
        for i in description.get("Instances") or []:
            table.add_row(i.get("ID", ""), i.get("LogicalID") or "-", "-", "-", "-")
        return table
    for r in rows:
        health = r.get("Health") or "unknown"
        cells = [r.get("ID", ""), r.get("LogicalID") or "-", Text(health, style=HEALTH_STYLES.get(health, "")),
                 "yes" if r.get("UpToDate") else Text("no", style="yellow"), age(r.get("Age"))]
        table.add_row(*cells, *((r.get("Reason") or "",) if reasons else ()))
    return table


def events_table(events: Iterable[Mapping[str, Any]], *, with_group: bool = True) -> Table:
    headers = ("TIME", "KIND", "GROUP", "INSTANCE", "REASON") if with_group else ("TIME", "KIND", "INSTANCE", "REASON")
    table = _table(*headers)
    for e in events:
        cells: list[Any] = [when(e.get("Time")), _kind(e.get("Kind", ""))]
        if with_group:
            cells.append(e.get("Group") or "-")
        cells += [e.get("Instance") or "-", e.get("Reason") or ""]
        table.add_row(*cells)
    return table


def _kind(kind: str) -> Text:
    style = "red" if ("failed" in kind or kind in ("instance_lost", "instance_unhealthy", "brake_engaged",
                                                   "leadership_lost")) else ""
    return Text(kind, style=style)


def header(group_id: str, description: Mapping[str, Any]) -> RenderableType:
    """The lines above a group's instance table: condition, reason, counts, plan, last error."""
    status = description.get("Status") or {}
    lines: list[RenderableType] = []
    title = Text.assemble(("Group ", "bold"), (group_id, "bold"), "  ",
                          condition_text(status, description.get("Converged")))
    lines.append(title)
    if status.get("Reason"):
        lines.append(Text(f"Reason:     {status['Reason']}"))
    if any(k in status for k in COUNT_KEYS):
        lines.append(Text(f"Instances:  {counts_line(status)}"))
    if status.get("Plan"):
        lines.append(Text(f"Plan:       {status['Plan']}"))
    if status.get("LastError"):
        lines.append(Text(f"Last error: {status['LastError']}", style="red"))
    return Group(*lines)


def describe_view(group_id: str, description: Mapping[str, Any], *, events: int = 10) -> RenderableType:
    """``infrakit group describe``: header, instances, and the last few events."""
    parts: list[RenderableType] = [header(group_id, description), Text(""), instances_table(description)]
    recent = ((description.get("Status") or {}).get("Events") or [])[-events:]
    if recent:
        parts += [Text("Events:", style="bold"), events_table(recent, with_group=False)]
    return Group(*parts)


def progress(description: Mapping[str, Any]) -> tuple[int, int]:
    """(up-to-date healthy members, desired): what "done" means for a watch."""
    status = description.get("Status") or {}
    rows = status.get("Instances") or []
    done = sum(1 for r in rows if r.get("UpToDate") and r.get("Health") == "healthy")
    desired = status.get("Desired")
    if desired is None:
        desired = len(description.get("Instances") or [])
    return done, int(desired)


def watch_view(group_id: str, description: Mapping[str, Any] | None, *, elapsed: float,
               error: str | None = None) -> RenderableType:
    """``infrakit group watch``: progress bar toward convergence above the describe view."""
    if description is None:
        return Text(f"Group {group_id}: waiting for the controller ({error or 'no answer yet'})  {age(elapsed)}",
                    style="yellow")
    done, desired = progress(description)
    bar = ProgressBar(total=max(desired, 1), completed=min(done, max(desired, 1)), width=40)
    line = Group(Text(f"{done}/{desired} instances up to date and healthy   elapsed {age(elapsed)}"), bar)
    parts: list[RenderableType] = [describe_view(group_id, description, events=5), Text(""), line]
    if error:
        parts.append(Text(f"(last poll failed: {error})", style="yellow"))
    return Group(*parts)


# -- commit --pretend --------------------------------------------------------------------------


def spec_diff(group_id: str, stored: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """A unified diff of two specs as YAML (keys sorted, so only real changes show)."""
    def lines(doc: Mapping[str, Any] | None) -> list[str]:
        if doc is None:
            return []
        return yaml.safe_dump(dict(doc), sort_keys=True, default_flow_style=False).splitlines(keepends=True)

    before = f"{group_id} (stored)" if stored is not None else "/dev/null"
    return list(difflib.unified_diff(lines(stored), lines(new), fromfile=before, tofile=f"{group_id} (new)"))


def diff_text(diff: Sequence[str]) -> Text:
    """A diff coloured like git's (rich drops the colour when it should)."""
    out = Text()
    for line in diff:
        style = ""
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        out.append(line if line.endswith("\n") else line + "\n", style=style)
    return out


# -- manager -----------------------------------------------------------------------------------


def manager_view(status: Mapping[str, Any]) -> RenderableType:
    """``infrakit manager status``: leader, location, backend health, and why it is not acting.

    With shared groups (``Sharding``) there is no single leader: the mode, the live members and
    which member owns which group instead (``sharded_view``).
    """
    if status.get("Sharding"):
        return sharded_view(status)
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    leader = status.get("Leader")
    table.add_row("Leader", Text("yes", style="green") if leader else Text("no (following)", style="yellow"))
    if status.get("Term") is not None:
        table.add_row("Term", str(status["Term"]))
    table.add_row("Candidate", str(status.get("Candidate") or "-"))
    table.add_row("Leader location", str(status.get("Location") or "none elected"))
    _backend_rows(table, status)
    if status.get("Groups") is not None:
        table.add_row("Groups", str(status["Groups"]))
    _degraded_rows(table, status)
    table.add_row("Leadership changes", str(status.get("LeadershipChanges", 0)))
    if status.get("Problem"):
        table.add_row("Problem", Text(str(status["Problem"]), style="red"))
    return table


def sharded_view(status: Mapping[str, Any]) -> RenderableType:
    """Shared groups: this replica (member or not, what it owns), the live members, and each group's owner."""
    summary = Table(box=None, show_header=False, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("Mode", f"sharded ({status['Sharding']}): each member runs the groups it owns")
    me = str(status.get("Candidate") or "-")
    member = status.get("Leader")
    summary.add_row("This replica", Text.assemble(f"{me} ", Text("member", style="green") if member
                                                   else Text("not a member (owns nothing)", style="yellow")))
    _backend_rows(summary, status)
    members: Mapping[str, Any] = status.get("Members") or {}
    owners: Mapping[str, Any] = status.get("Owners") or {}
    summary.add_row("Members", str(len(members)) if status.get("Members") is not None else "unknown (backend unreadable)")
    summary.add_row("Owned here", ", ".join(status.get("Owned") or ()) or "none")
    summary.add_row("Ownership moves", str(status.get("Moves", 0)))
    _degraded_rows(summary, status)
    if status.get("Problem"):
        summary.add_row("Problem", Text(str(status["Problem"]), style="red"))
    parts: list[RenderableType] = [summary]
    if members:
        table = _table("MEMBER", "LOCATION", "GROUPS")
        counts: dict[str, int] = {}
        for owner in owners.values():
            counts[str(owner)] = counts.get(str(owner), 0) + 1
        for name, location in members.items():
            label = Text.assemble(name, (" (this replica)", "bold") if name == me else "")
            table.add_row(label, str(location or "-"), str(counts.get(name, 0)))
        parts += [Text(""), table]
    if owners:
        table = _table("GROUP", "OWNER", "LOCATION")
        for gid, owner in owners.items():
            location = members.get(owner)
            table.add_row(str(gid), str(owner), str(location) if location else Text("not a live member", style="red"))
        parts += [Text(""), table]
    return Group(*parts)


def _backend_rows(table: Table, status: Mapping[str, Any]) -> None:
    backend = status.get("Backend") or {}
    healthy = backend.get("Healthy")
    state = Text("healthy", style="green") if healthy else Text(f"unhealthy: {backend.get('Reason') or '?'}", style="red")
    table.add_row("Backend", Text.assemble(f"{backend.get('Type', '?')} ", state))
    for key, value in backend.items():
        if key not in ("Type", "Healthy", "Reason"):
            table.add_row(f"  {key}", str(value))


def _degraded_rows(table: Table, status: Mapping[str, Any]) -> None:
    for entry in status.get("Degraded") or ():
        retry = f" (retry {entry.get('Failures', 0) + 1} in {age(entry.get('RetryIn'))})"
        table.add_row(f"  {entry.get('Group')}", Text(f"Degraded: {entry.get('Reason')}{retry}", style="red"))


def event_line(event: Mapping[str, Any]) -> Text:
    """One event for ``infrakit events --follow``: time, kind, group/instance, reason."""
    where = "/".join(x for x in (event.get("Group"), event.get("Instance")) if x) or "-"
    text = Text.assemble(f"{when(event.get('Time'))}  ", _kind(str(event.get("Kind", ""))), f"  {where}")
    if event.get("Reason"):
        text.append(f"  {event['Reason']}")
    return text
