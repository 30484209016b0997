"""Which process instances run: records and the daemon's memory, checked against the OS, which wins.

Guarantee: a watched instance's death is seen at once (pidfd, or a 0.5 s /proc poll) and
buries it: its whole tree is stopped (``process_tree``), its leader reaped, its record
removed, the revision bumped. A record that vanishes or is damaged while the daemon runs is
written again from memory; at start and every ``SWEEP_INTERVAL``, ``reconcile`` compares
records and memory with every process (``process_scan``): instances without a record are
rebuilt from their processes, the remains of dead ones are stopped, and processes that
claim to be instances without proof are stopped too. Limit: between sweeps, a process that
escapes without the daemon watching (only a forged marker can) runs until the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import resource
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from infrakit_runtime.plugins.instance import process_cgroup, process_os, process_scan, process_store, process_tree
from infrakit_runtime.spi.common import PluginError

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
SWEEP_INTERVAL = 10.0
# Descriptors kept for everything but pidfds (sockets, logs, records being written).
RESERVED_FDS = 256


@dataclasses.dataclass
class _Watch:
    """One live instance this daemon watches for exit, and its record as last written."""

    record: dict[str, Any]
    fd: int | None
    stopping: bool = False
    exited: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)  # the leader exited

    @property
    def leader(self) -> process_scan.Leader:
        return self.record["PID"], self.record["StartTime"]


def _leader(record: Mapping[str, Any]) -> process_scan.Leader | None:
    pid, start_time = record.get("PID"), record.get("StartTime")
    if isinstance(pid, int) and isinstance(start_time, int) and not isinstance(pid, bool):
        return pid, start_time
    return None


class Tracker:
    """The instances in ``directory`` and their processes; ``ProcessInstancePlugin`` adds the Instance SPI.

    ``use_pidfd=False`` selects the /proc polling fallback (the path taken on kernels without
    pidfd_open). ``cgroups`` (from ``process_cgroup.open_cgroups``) gives each instance a
    cgroup; without it, ``subreaper`` makes the daemon inherit what instances orphan. Such an
    orphan that nothing ties to an instance (a *stray*) is stopped only while ``companions()``
    says no other daemon shares this process (``plugin run process vanilla``: their children,
    health probes say, are this process's children too and must not be taken for strays).
    """

    def __init__(self, directory: Path, *, use_pidfd: bool = True, cgroups: process_cgroup.Cgroups | None = None,
                 subreaper: bool = False, companions: Callable[[], bool] = lambda: False,
                 sweep_interval: float = SWEEP_INTERVAL) -> None:
        self.store = process_store.RecordStore(directory)
        self.owner = str(directory.resolve())
        self._use_pidfd = use_pidfd
        # Past this many pidfds, watch by polling: running out of descriptors would stop the server.
        self._max_pidfds = max(0, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - RESERVED_FDS)
        self._pidfds = 0
        self._watches: dict[str, _Watch] = {}
        self._children: set[int] = set()
        self._provisioning: dict[str, int | None] = {}  # ID -> port, while Provision runs
        self._burials: dict[str, asyncio.Task[None]] = {}
        self._spawning = 0
        self._subreaper = subreaper
        self._warned_companions = False
        self._sweep_interval = sweep_interval
        self._poller: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.scanner = process_scan.Scanner(self.owner, cgroups=cgroups.members if cgroups is not None else None)
        self._companions = companions
        self.trees = process_tree.Trees(scanner=self.scanner, cgroups=cgroups, children=self._children,
                                        strays=self._strays_are_ours, spawning=lambda: self._spawning > 0)
        # Microseconds since the epoch: a restarted daemon's revisions exceed its predecessor's,
        # so a caller holding an old revision is answered at once rather than after its timeout.
        self._revision = time.time_ns() // 1000
        self._changed = asyncio.Event()

    @property
    def cgroups(self) -> process_cgroup.Cgroups | None:
        return self.trees.cgroups

    def _strays_are_ours(self) -> bool:
        """Whether a child of this process that is no leader can only be an orphan an instance left."""
        if not self._subreaper:
            return False
        if self._companions():
            if not self._warned_companions:
                log.warning("process plugin: other daemons share this process, so orphans that escape an instance "
                            "(own session, environment cleared) cannot be told from their children and are left "
                            "running; run the process plugin alone or with cgroups")
                self._warned_companions = True
            return False
        return True

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the instances a previous daemon left, from records and from the processes themselves."""
        if self._subreaper and not process_os.set_child_subreaper(True):
            log.warning("process plugin: prctl(PR_SET_CHILD_SUBREAPER) failed; orphans of instances go to init")
            self._subreaper = False
        await self.reconcile()
        live = [r["ID"] for r in self.store.scan() if self._alive(r)]
        log.info("process plugin: %d live instance(s) in %s", len(live), self.store.directory)
        if self._sweep_interval > 0:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="process-plugin/sweep")

    async def close(self) -> None:
        """Stop watching; the instances keep running (they must outlive the daemon)."""
        for task in (self._poller, self._sweeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._poller = self._sweeper = None
        if self._burials:
            await asyncio.gather(*self._burials.values(), return_exceptions=True)
        loop = asyncio.get_running_loop()
        for watch in self._watches.values():
            if watch.fd is not None:
                loop.remove_reader(watch.fd)
                os.close(watch.fd)
        self._watches.clear()
        self._pidfds = 0
        if self._subreaper:
            process_os.set_child_subreaper(False)
        if self.cgroups is not None:
            self.cgroups.close()

    # --- revision / long poll ---------------------------------------------------------------

    def _bump(self) -> None:
        self._revision += 1
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def revision(self) -> int:
        return self._revision

    async def wait_change(self, revision: int, timeout: float) -> int:
        """The current revision once it differs from ``revision``, or after ``timeout`` seconds.

        A revision above ours (from a daemon that ran with a clock set later) is
        answered at once too, so the caller resynchronises instead of stalling.
        """
        deadline = asyncio.get_running_loop().time() + max(0.0, timeout)
        while self._revision == revision:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return self._revision

    def _forget(self, instance_id: str, why: str) -> None:
        """Remove an instance's record and log; a crash's last output goes to the daemon log first."""
        if why == "exited":
            tail = self.store.tail(instance_id)
            log.warning("instance %s exited; removing its record%s", instance_id,
                        f"; last output:\n{tail}" if tail else "")
        self.store.remove(instance_id)

    # --- the OS as the source of truth ---------------------------------------------------------

    async def reconcile(self) -> None:
        """Records and memory against every process: rewrite, rebuild, adopt, or stop (``process_scan``)."""
        # Memory first, then records, then the processes: all that memory and the records name was
        # started before the snapshot began, so a leader missing from it is dead, not yet to come.
        memory = {i: w.leader for i, w in self._watches.items()}
        busy = set(self._provisioning) | set(self._burials)
        records, damaged = await asyncio.to_thread(self.store.scan_all)
        full = {r["ID"]: r for r in records}
        on_disk = {iid: _leader(r) for iid, r in full.items()}
        world = await self.scanner.world()
        # Whatever started, or began to die, while the snapshot was taken is settled next time.
        busy |= set(self._provisioning) | set(self._burials) | (set(self._watches) - set(memory))
        findings = process_scan.reconcile(
            world=world, records=on_disk, memory={i: m for i, m in memory.items() if i in self._watches},
            provisioning=busy, held=self._children, daemon_pid=os.getpid(),
            subreaper=self._strays_are_ours() and self._spawning == 0)
        changed = await self._restore_records(set(on_disk), damaged, among=set(memory))
        for iid, leader in findings.rebuild.items():
            if self.cgroups is not None and leader.cgroup == iid and self.cgroups.member_of(leader.pid) != iid:
                continue  # left its cgroup since the snapshot (it exited): the next sweep settles it
            half = full.get(iid)
            if half is not None:  # written by a daemon killed between the record and the start
                record = {**half, "PID": leader.pid, "StartTime": leader.start_time}
                log.info("adopted instance %s (pid %d) left half-provisioned by a previous daemon", iid, leader.pid)
            else:
                record = process_scan.rebuilt_record(iid, leader, log_path=str(self.store.log_path(iid)))
                log.warning("instance %s had %s; rebuilt it from its running process (pid %d)", iid,
                            "a damaged record" if iid in damaged else "no record", leader.pid)
            await asyncio.to_thread(self.store.write, record)
            changed = True
            if self._watch(iid, record) is None:
                self._bury_later(iid, _leader(record), why="exited")
        for iid in findings.dead:
            if iid in self._watches:
                self._on_exit(iid)
            else:
                self._bury_later(iid, on_disk.get(iid), why="exited")
        burials = [self._burials[i] for i in findings.dead if i in self._burials]
        for iid in damaged:
            if iid not in findings.rebuild and iid not in self._watches and iid not in self._provisioning:
                aside = self.store.set_aside(iid)
                log.warning("the record of instance %s is unreadable and no process proves the instance runs; "
                            "moved it to %s", iid, aside)
        self.trees.stop(list(findings.untrusted),
                        "it claims to be an instance of this plugin, but no record, cgroup or user vouches for it")
        if self._spawning == 0:
            self.trees.stop([p for p in findings.strays if p.pid not in self._children],
                            "an orphan an instance left behind (outside its session, environment cleared)")
        self.trees.reap()
        if changed:
            self._bump()
        await asyncio.gather(*(asyncio.shield(t) for t in burials), return_exceptions=True)

    async def _restore_records(self, on_disk: set[str], damaged: list[str] | None, *,
                               among: set[str] | None = None) -> bool:
        """Write again the record of every watched instance (of ``among``) whose file vanished or was damaged."""
        restored = False
        for iid, watch in list(self._watches.items()):
            if iid in on_disk or iid in self._burials or iid in self._provisioning or (among is not None and iid not in among):
                continue
            await asyncio.to_thread(self.store.write, watch.record)
            how = "missing or unreadable" if damaged is None else "unreadable" if iid in damaged else "missing"
            log.warning("the record of instance %s was %s; wrote it again from the daemon's memory", iid, how)
            restored = True
        return restored

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.reconcile()
            except (OSError, PluginError) as e:
                log.warning("process plugin: sweep failed (%s); trying again in %gs", e, self._sweep_interval)

    # --- watching ----------------------------------------------------------------------------

    def _watch(self, instance_id: str, record: dict[str, Any]) -> _Watch | None:
        """Watch a live instance for exit; None when it turns out to be gone already."""
        existing = self._watches.get(instance_id)
        if existing is not None:
            return existing
        leader = _leader(record)
        if leader is None:
            return None
        pid, start_time = leader
        fd = None
        if self._use_pidfd and self._pidfds < self._max_pidfds:
            try:
                fd = process_os.open_pidfd(pid)
            except ProcessLookupError:
                return None
        # Checked after opening the pidfd: if the PID was recycled in between, this catches it.
        if not process_os.is_running(pid, start_time):
            if fd is not None:
                os.close(fd)
            return None
        watch = _Watch(record=record, fd=fd)
        self._watches[instance_id] = watch
        if fd is not None:
            self._pidfds += 1
            asyncio.get_running_loop().add_reader(fd, self._on_exit, instance_id)
        elif self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="process-plugin/poll")
        return watch

    async def _poll(self) -> None:
        """The fallback without pidfds: look at /proc for every watched instance twice a second."""
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            for instance_id, watch in list(self._watches.items()):
                if watch.fd is None and not process_os.is_running(*watch.leader):
                    self._on_exit(instance_id)

    def _on_exit(self, instance_id: str) -> None:
        """A watched instance's leader exited: stop watching, then bury what is left of it."""
        watch = self._watches.pop(instance_id, None)
        if watch is None:
            return
        if watch.fd is not None:
            asyncio.get_running_loop().remove_reader(watch.fd)
            os.close(watch.fd)
            self._pidfds -= 1
        self._bury_later(instance_id, watch.leader, why="destroyed" if watch.stopping else "exited", watch=watch)

    def _bury_later(self, instance_id: str, leader: process_scan.Leader | None, *, why: str,
                    watch: _Watch | None = None) -> None:
        if instance_id not in self._burials:
            self._burials[instance_id] = asyncio.get_running_loop().create_task(
                self._bury(instance_id, leader, why=why, watch=watch), name=f"process-plugin/bury/{instance_id}")

    async def _bury(self, instance_id: str, leader: process_scan.Leader | None, *, why: str,
                    watch: _Watch | None) -> None:
        """Kill every process left of a dead instance (its tree, by cgroup or marker), reap its leader, forget it."""
        try:
            await self.trees.kill(instance_id, leader)
            if leader is not None and leader[0] in self._children and process_os.reap(leader[0]):
                self._children.discard(leader[0])
            self.trees.reap()
            self._forget(instance_id, why)
            self._bump()
        finally:
            self._burials.pop(instance_id, None)
            if watch is not None:
                watch.exited.set()

    def _alive(self, record: dict[str, Any]) -> bool:
        """Whether a record's instance runs; a dead one is buried (its tree stopped, its record removed)."""
        instance_id = record["ID"]
        if instance_id in self._provisioning or instance_id in self._burials:
            return False
        if instance_id in self._watches:
            return True
        if _leader(record) is None:
            return False  # half-written by a daemon killed while provisioning: settled by ``reconcile``
        if self._watch(instance_id, record) is not None:
            return True
        self._bury_later(instance_id, _leader(record), why="exited")
        return False

    def _record(self, instance_id: str) -> dict[str, Any] | None:
        """An instance's record: from disk, else (lost or damaged) from the daemon's memory."""
        try:
            record = self.store.read(instance_id)
        except PluginError:
            record = None
        watch = self._watches.get(instance_id)
        return record if record is not None or watch is None else dict(watch.record)

    async def _burial(self, instance_id: str) -> None:
        task = self._burials.get(instance_id)
        if task is not None:
            await asyncio.shield(task)
