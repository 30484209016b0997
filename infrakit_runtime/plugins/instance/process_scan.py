"""Which processes belong to which process instance, decided from what the OS shows, not from records.

Guarantee: ``reconcile`` is pure and total: given the records, the daemon's memory and a
snapshot of every process, it says which instances live (and which records to rebuild),
which are dead (and which of their processes to stop), and which processes nobody can
vouch for. It never adopts a process a local user could have forged, and never leaves a
process that belongs to a dead instance running.

A process belongs to instance X, in this order of proof:

1. it is X's recorded leader (pid and start time both match);
2. it is in X's cgroup (only root can put it there);
3. its environment carries X's ID and this plugin's owner marker (set at spawn, inherited);
4. it is in the session of X's live leader;
5. its parent belongs to X (so a child that cleared its environment still counts).

A marker alone (3) is believed for a rebuild only if the process runs as the daemon's own
user: any user can set an environment variable. Limit: a process that leaves its session,
clears its environment and outlives its parent is found only by its cgroup, or, while the
daemon that started it runs, as a *stray* (an orphan the daemon, as child subreaper,
inherited); after a daemon restart without cgroups it is out of reach.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from infrakit_runtime.plugins.instance import process_os, process_props

Leader = tuple[int, int]  # (pid, start time)


@dataclasses.dataclass(frozen=True)
class Proc:
    """One process as the snapshot saw it."""

    pid: int
    ppid: int
    sid: int
    start_time: int
    running: bool = True
    marker: str | None = None  # the instance ID in its environment, when the owner marker is ours
    cgroup: str | None = None  # the instance whose cgroup it is in
    own_user: bool = False  # its real and effective uid are the daemon's
    foreign: bool = False  # marked by another process plugin (a daemon this one runs as an instance, say)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)  # our INFRAKIT_* variables

    @property
    def key(self) -> Leader:
        return self.pid, self.start_time


@dataclasses.dataclass(frozen=True)
class World:
    """Every process on the host, by PID, and the instance cgroups that exist."""

    procs: Mapping[int, Proc]
    cgroups: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class Findings:
    """What ``reconcile`` decided; the plugin acts on it."""

    live: Mapping[str, Leader]  # instances whose leader runs (from a record or memory)
    rebuild: Mapping[str, Proc]  # instances with no usable record: their leader, to write one from
    dead: Mapping[str, tuple[Proc, ...]]  # instances that are gone: what is left of them, to stop
    untrusted: tuple[Proc, ...]  # marked processes no record, cgroup or uid vouches for: to stop
    strays: tuple[Proc, ...]  # orphans the daemon inherited that belong to no instance: to stop


def alive(world: World, leader: Leader | None) -> bool:
    if leader is None:
        return False
    proc = world.procs.get(leader[0])
    return proc is not None and proc.start_time == leader[1] and proc.running


def members(world: World, leaders: Mapping[str, Leader], held: Iterable[int] = ()) -> dict[str, list[Proc]]:
    """Every running process attributed to an instance (rules 1-5 of the module docstring).

    ``held`` are leaders that exited but that this daemon has not reaped yet: their PID, so
    their session ID, cannot be reused meanwhile, and rule 4 still applies to them.
    """
    held = set(held)
    owner: dict[int, str] = {}
    for iid, (pid, start) in leaders.items():
        if alive(world, (pid, start)):
            owner[pid] = iid
    for proc in world.procs.values():
        if proc.pid in owner or not proc.running:
            continue
        tagged = proc.cgroup or proc.marker
        if tagged is not None:
            owner[proc.pid] = tagged
    # A live leader's session: the processes it started without leaving it (even with a cleared environment).
    sessions = {pid: iid for iid, (pid, start) in leaders.items() if alive(world, (pid, start)) or pid in held}
    for proc in world.procs.values():
        if proc.pid not in owner and proc.running and not proc.foreign and proc.sid in sessions:
            owner[proc.pid] = sessions[proc.sid]
    children: dict[int, list[int]] = {}
    for proc in world.procs.values():
        if proc.running and not proc.foreign:  # another plugin's instances are its own, whoever started it
            children.setdefault(proc.ppid, []).append(proc.pid)
    stack = list(owner)
    while stack:
        pid = stack.pop()
        for child in children.get(pid, ()):
            if child not in owner:
                owner[child] = owner[pid]
                stack.append(child)
    found: dict[str, list[Proc]] = {}
    for pid, iid in owner.items():
        found.setdefault(iid, []).append(world.procs[pid])
    return found


def pick_leader(procs: Iterable[Proc]) -> Proc | None:
    """The process a lost record most likely named: a session leader with no parent in the instance, oldest first."""
    procs = list(procs)
    inside = {p.pid for p in procs}
    roots = [p for p in procs if p.ppid not in inside]
    if not roots:
        return None
    return min(roots, key=lambda p: (p.pid != p.sid, p.start_time, p.pid))


def reconcile(*, world: World, records: Mapping[str, Leader | None], memory: Mapping[str, Leader],
              provisioning: Iterable[str] = (), held: Iterable[int] = (), daemon_pid: int = 0,
              subreaper: bool = False) -> Findings:
    """Pure: the decisions for ``world``. Who acts: ``ProcessInstancePlugin`` (rebuild, stop, forget).

    ``records`` maps every instance with a record to its leader (None while the record is
    half-written); a damaged record is simply absent. ``memory`` is what the running daemon
    watches. Instances being provisioned are left alone.
    """
    busy = set(provisioning)
    leaders = {**{i: r for i, r in records.items() if r is not None}, **memory}
    belong = members(world, leaders, held)
    live: dict[str, Leader] = {}
    rebuild: dict[str, Proc] = {}
    dead: dict[str, tuple[Proc, ...]] = {}
    untrusted: list[Proc] = []
    for iid in sorted(set(records) | set(memory) | set(belong) | set(world.cgroups)):
        if iid in busy:
            continue
        procs = belong.get(iid, [])
        leader = leaders.get(iid)
        if leader is not None:
            if alive(world, leader):
                live[iid] = leader
            else:
                dead[iid] = tuple(procs)
            continue
        vouched = [p for p in procs if p.cgroup == iid or (p.marker == iid and p.own_user)]
        chosen = pick_leader(vouched)
        if chosen is not None:
            rebuild[iid] = chosen
        elif iid in records or iid in world.cgroups:
            dead[iid] = tuple(procs)
        elif procs:
            untrusted.extend(procs)
    strays = find_strays(world, belong, leaders, daemon_pid) if subreaper else ()
    return Findings(live=live, rebuild=rebuild, dead=dead, untrusted=tuple(untrusted), strays=strays)


def find_strays(world: World, belong: Mapping[str, list[Proc]], leaders: Mapping[str, Leader],
                daemon_pid: int) -> tuple[Proc, ...]:
    """Running children of the daemon that are no instance's leader and no instance's member.

    The daemon starts nothing but instance leaders, so, as child subreaper, any other child
    it has is an orphan some instance left behind after leaving its session and clearing its
    environment: nothing tells which instance, and nothing else would ever stop it.
    """
    attributed = {p.pid for procs in belong.values() for p in procs} | {pid for pid, _ in leaders.values()}
    return tuple(p for p in world.procs.values() if p.running and p.ppid == daemon_pid and p.pid not in attributed)


def rebuilt_record(iid: str, leader: Proc, *, log_path: str) -> dict[str, Any]:
    """A record for ``iid`` written from its leader's environment (the tags it was started with)."""
    env = leader.env
    try:
        tags = json.loads(env.get(process_props.ENV_TAGS, "{}"))
    except ValueError:
        tags = {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        tags = {}
    port_text = env.get(process_props.ENV_PORT, "")
    port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else None
    return {
        "ID": iid, "LogicalID": env.get(process_props.ENV_LOGICAL_ID) or None, "Tags": tags, "Spec": None,
        "PID": leader.pid, "StartTime": leader.start_time, "Port": port,
        "StartedAt": process_os.started_at(leader.start_time), "Log": log_path,
        "Rebuilt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --- the snapshot (I/O) --------------------------------------------------------------------------------


Marking = tuple[str | None, dict[str, str], bool]  # (instance ID, our variables, foreign)


def parse_environ(raw: bytes, owner: str) -> Marking:
    """The instance ID of an environment marked by ``owner``, our variables, and whether another owner marked it."""
    ours: dict[str, str] = {}
    for item in raw.split(b"\0"):
        if item.startswith(b"INFRAKIT_"):
            name, _, value = item.partition(b"=")
            ours[name.decode(errors="replace")] = value.decode(errors="replace")
    marked_by = ours.get(process_props.ENV_OWNER)
    iid = ours.get(process_props.ENV_INSTANCE_ID)
    if marked_by is None or not iid or not process_props.INSTANCE_ID.match(iid):
        return None, {}, False
    if marked_by != owner:
        return None, {}, True
    return iid, ours, False


class Scanner:
    """Snapshots of /proc, shared: callers that arrive during a scan get the next one, a burst costs one scan.

    A process's environment is read once per (pid, start time): it is what the process was
    started with, so later scans read only ``stat`` (and the uid of marked processes).
    """

    def __init__(self, owner: str, *, cgroups: Callable[[], dict[str, list[int]]] | None = None) -> None:
        self.owner = owner
        self._cgroups = cgroups  # instance ID -> PIDs in its cgroup
        self._environ: dict[Leader, Marking] = {}
        self._task: asyncio.Future[World] | None = None
        self._started = 0.0

    def scan(self) -> World:
        """A blocking snapshot of every process (run it in a thread)."""
        procs: dict[int, Proc] = {}
        seen: dict[Leader, Marking] = {}
        euid = os.geteuid()
        # Read before the processes: a PID that moves in meanwhile is caught by the next scan.
        groups = self._cgroups() if self._cgroups is not None else {}
        cgroup_of = {pid: iid for iid, pids in groups.items() for pid in pids}
        for stat in process_os.all_stats():
            key = (stat.pid, stat.start_time)
            marked = self._environ.get(key)
            if marked is None:
                raw = process_os.read_environ(stat.pid)
                marked = parse_environ(raw, self.owner) if raw is not None else (None, {}, False)
            seen[key] = marked
            iid, env, foreign = marked
            own_user = False
            if iid is not None:
                uids = process_os.real_and_effective_uid(stat.pid)
                own_user = uids is not None and uids == (euid, euid)
            procs[stat.pid] = Proc(pid=stat.pid, ppid=stat.ppid, sid=stat.sid, start_time=stat.start_time,
                                   running=stat.running, marker=iid, cgroup=cgroup_of.get(stat.pid),
                                   own_user=own_user, foreign=foreign, env=env)
        self._environ = seen
        return World(procs=procs, cgroups=frozenset(groups))

    async def world(self) -> World:
        """A snapshot begun after this call was made (joining one in flight if it began after)."""
        loop = asyncio.get_running_loop()
        requested = loop.time()
        while True:
            if self._task is None or self._task.done():
                self._started = loop.time()
                self._task = asyncio.ensure_future(asyncio.to_thread(self.scan))
            task, started = self._task, self._started
            result = await asyncio.shield(task)
            if started >= requested:
                return result
