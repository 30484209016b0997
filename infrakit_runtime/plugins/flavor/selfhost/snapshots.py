"""Periodic etcd snapshots, driven by the health checks: level-triggered, nothing to restart.

Guarantee: a snapshot is taken when the newest one in ``Snapshot.Dir`` is older than
``Snapshot.Interval`` (or there is none), from a member that has just been judged healthy, one
at a time per directory; it is written atomically (``etcd-<UTC time>.db``, the format
``etcdctl snapshot restore`` reads), then all but the newest ``Keep`` are removed. The schedule
is read from the directory itself, so a restarted flavor daemon keeps it.
Limit: snapshots are taken only while the group is enforced (a leader runs health checks) and
the cluster has quorum; the directory is on the host of the flavor daemon the leader calls.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from pathlib import Path

from infrakit_runtime.plugins.flavor.selfhost.etcd_members import EtcdError, Members
from infrakit_runtime.plugins.flavor.selfhost.etcd_props import Snapshot

log = logging.getLogger(__name__)

__all__ = ["Snapshotter", "due", "snapshot_files"]

PATTERN = "etcd-*.db"


def snapshot_files(directory: Path) -> list[Path]:
    """The snapshots in ``directory``, oldest first (their names sort by time)."""
    try:
        return sorted(p for p in directory.glob(PATTERN) if p.is_file())
    except OSError:
        return []


def due(newest_mtime: float | None, *, interval: float, now: float) -> bool:
    """Is a snapshot due, given when the newest was written (None: there is none)? Pure."""
    return newest_mtime is None or now - newest_mtime >= interval


class Snapshotter:
    """Starts a snapshot when one is due; at most one runs per directory."""

    def __init__(self, *, wall_clock: Callable[[], float] = time.time) -> None:
        self._running: dict[str, asyncio.Task[None]] = {}
        self._clock = wall_clock
        self.taken = 0
        self.last_error: str | None = None

    def maybe_start(self, snapshot: Snapshot, *, members: Members, endpoint: str) -> bool:
        """Start a snapshot of ``endpoint`` into ``snapshot.dir`` if one is due; whether one started."""
        task = self._running.get(snapshot.dir)
        if task is not None and not task.done():
            return False
        files = snapshot_files(Path(snapshot.dir))
        newest = None
        if files:
            try:
                newest = files[-1].stat().st_mtime
            except OSError:
                newest = None
        if not due(newest, interval=snapshot.interval, now=self._clock()):
            return False
        self._running[snapshot.dir] = asyncio.create_task(self._take(snapshot, members, endpoint),
                                                          name=f"etcd-snapshot/{snapshot.dir}")
        return True

    async def _take(self, snapshot: Snapshot, members: Members, endpoint: str) -> None:
        directory = Path(snapshot.dir)
        stamp = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        dest = directory / f"etcd-{stamp}.db"
        try:
            size = await members.snapshot(endpoint, dest)
        except (EtcdError, OSError) as e:
            self.last_error = f"snapshot of {endpoint} into {directory} failed: {e}"
            log.warning("%s", self.last_error)
            return
        self.taken += 1
        self.last_error = None
        log.info("etcd snapshot of %s written to %s (%d bytes)", endpoint, dest, size)
        for old in snapshot_files(directory)[:-snapshot.keep]:
            try:
                old.unlink()
            except OSError as e:
                log.warning("cannot remove old etcd snapshot %s: %s", old, e)

    async def close(self) -> None:
        tasks = [t for t in self._running.values() if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._running.clear()
