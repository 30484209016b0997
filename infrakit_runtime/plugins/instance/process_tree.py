"""Signal a process instance's whole tree, setsid children included, never a process that merely reuses a PID.

Guarantee: with a cgroup per instance, SIGKILL is ``cgroup.kill`` (the kernel ends every
member at once) and SIGTERM goes to each PID the cgroup lists, checked through a pidfd.
Without cgroups, the tree is what ``process_scan.members`` attributes to the instance
(recorded leader, environment marker, the leader's session, descent), plus the strays the
daemon inherited as child subreaper; each is signalled through a pidfd after its start time
was checked, and SIGKILL is repeated on fresh snapshots until none is left, so a child forked
during the kill is caught by the next round.
Limit: without cgroups, a process that leaves the session, clears its environment and whose
parent exits before the daemon sees it is found only as a stray of the daemon that started
it, and only while no other daemon shares that process (then the children of this process
are not all instances'); a process stuck in uninterruptible sleep outlives ``KILL_WAIT`` and
is reported.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
from collections.abc import Callable

from infrakit_runtime.plugins.instance import process_os, process_scan
from infrakit_runtime.plugins.instance.process_cgroup import Cgroups

log = logging.getLogger(__name__)

# After SIGKILL a process is gone within milliseconds; this only bounds a stuck (D state) exit.
KILL_WAIT = 5.0
ROUND_PAUSE = 0.02


def _in_cgroup(cgroups: Cgroups, pid: int, instance_id: str) -> bool:
    """Whether ``pid`` is still in ``instance_id``'s cgroup (checked again just before the signal)."""
    return cgroups.member_of(pid) == instance_id


class Trees:
    """Signals instance trees for one plugin; ``children`` is the plugin's set of unreaped leaders."""

    def __init__(self, *, scanner: process_scan.Scanner, cgroups: Cgroups | None, children: set[int],
                 strays: Callable[[], bool], spawning: Callable[[], bool]) -> None:
        self.scanner = scanner
        self.cgroups = cgroups
        self._children = children
        self._strays = strays  # whether every child of this process that is not a leader is an instance's orphan
        self._spawning = spawning
        self._inherited: set[int] = set()  # killed orphans the daemon inherited: reaped once they exit

    def has_cgroup(self, instance_id: str) -> bool:
        return self.cgroups is not None and self.cgroups.path(instance_id).is_dir()

    def _held(self, leader: process_scan.Leader | None) -> set[int]:
        """The leader's PID if it is our child (alive or an unreaped zombie): its group and session are safe to use."""
        if leader is None or leader[0] not in self._children:
            return set()
        stat = process_os.read_stat(leader[0])
        return {leader[0]} if stat is not None and stat.start_time == leader[1] else set()

    async def _found(self, instance_id: str, leader: process_scan.Leader | None) -> list[process_scan.Proc]:
        world = await self.scanner.world()
        held = self._held(leader)
        belong = process_scan.members(world, {instance_id: leader} if leader else {}, held)
        found = list(belong.get(instance_id, []))
        if self._strays() and not self._spawning():
            found.extend(p for p in process_scan.find_strays(world, belong, {}, os.getpid())
                         if p.pid not in self._children)
        return found

    async def signal(self, instance_id: str, leader: process_scan.Leader | None, sig: int) -> None:
        """Send ``sig`` (SIGTERM) to every process of the instance."""
        held = self._held(leader)
        if held:
            process_os.signal_group(leader[0], sig)  # type: ignore[index]
        if self.has_cgroup(instance_id):
            assert self.cgroups is not None
            cgroups = self.cgroups
            for pid in cgroups.procs(instance_id):
                process_os.signal_if(pid, functools.partial(_in_cgroup, cgroups, pid, instance_id), sig)
            return
        for proc in await self._found(instance_id, leader):
            process_os.signal_process(proc.pid, proc.start_time, sig)

    async def kill(self, instance_id: str, leader: process_scan.Leader | None) -> bool:
        """SIGKILL every process of the instance and wait until none runs; False if one outlived ``KILL_WAIT``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KILL_WAIT
        if self._held(leader):
            process_os.signal_group(leader[0], signal.SIGKILL)  # type: ignore[index]
        if self.has_cgroup(instance_id):
            assert self.cgroups is not None
            self.cgroups.kill(instance_id)
            while self.cgroups.populated(instance_id):
                if loop.time() > deadline:
                    log.error("instance %s: processes %s survived SIGKILL for %gs (uninterruptible sleep?)",
                              instance_id, self.cgroups.procs(instance_id), KILL_WAIT)
                    return False
                await asyncio.sleep(ROUND_PAUSE)
            self.cgroups.remove(instance_id)
            return True
        while True:
            found = await self._found(instance_id, leader)
            if not found:
                return True
            if loop.time() > deadline:
                log.error("instance %s: processes %s survived SIGKILL for %gs (uninterruptible sleep?)",
                          instance_id, [p.pid for p in found], KILL_WAIT)
                return False
            self.stop(found, "")
            await asyncio.sleep(ROUND_PAUSE)

    def stop(self, procs: list[process_scan.Proc], why: str) -> None:
        """SIGKILL processes found by a snapshot (each checked through a pidfd), saying why if ``why``."""
        me = os.getpid()
        for proc in procs:
            if process_os.signal_process(proc.pid, proc.start_time, signal.SIGKILL):
                if proc.ppid == me and proc.pid not in self._children:
                    self._inherited.add(proc.pid)
                if why:
                    log.warning("stopped process %d: %s", proc.pid, why)

    def reap(self) -> None:
        """Collect the exited orphans this daemon inherited (as child subreaper): those it killed, and,
        when every child of this process is an instance's, any other that is not a leader."""
        for pid in list(self._inherited):
            if process_os.reap(pid) or process_os.read_stat(pid) is None:
                self._inherited.discard(pid)
        if self._strays():
            for pid in process_os.zombie_children(exclude=self._children):
                process_os.reap(pid)
