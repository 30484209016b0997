"""Process instance records: one JSON file per instance, replaced atomically, so a crash never leaves half a record.

``<id>.json`` holds ``{ID, LogicalID, Tags, Spec, PID, StartTime, Port,
StartedAt, Log}``; ``<id>.log`` is the instance's stdout and stderr. A record
says what was started, not whether it still runs: callers check the process.
One daemon per directory is enforced with ``lock()``; the store itself does
not serialise writers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from infrakit_runtime import fsutil
from infrakit_runtime.plugins.instance.process_props import INSTANCE_ID
from infrakit_runtime.spi.common import PluginError, ValidationError

log = logging.getLogger(__name__)

TAIL_BYTES = 1024


def check_id(instance_id: str) -> None:
    """Refuse anything but our IDs: they become file names, so ``../x`` must never get through."""
    if not INSTANCE_ID.match(instance_id):
        raise ValidationError(f"{instance_id!r} is not a process instance ID (expected process-<16 hex digits>)")


class RecordStore:
    """The instance records in ``directory``; parsed files are cached by (mtime, size)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._records = fsutil.RecordDirectory(self.directory, accept=lambda name: name.endswith(".json"))

    def path(self, instance_id: str) -> Path:
        return self.directory / f"{instance_id}.json"

    def log_path(self, instance_id: str) -> Path:
        return self.directory / f"{instance_id}.log"

    def read(self, instance_id: str) -> dict[str, Any] | None:
        """One record, or None when there is none."""
        path = self.path(instance_id)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as e:
            raise PluginError(f"instance record {path} is corrupt: {e}") from None
        return record if isinstance(record, dict) else None

    def write(self, record: dict[str, Any]) -> None:
        """Replace a record atomically and durably (blocking: call it from a thread)."""
        fsutil.atomic_write(self.path(record["ID"]), json.dumps(record, indent=2, sort_keys=True).encode(), mode=0o640)

    def scan(self) -> list[dict[str, Any]]:
        """Every readable record, sorted by ID; unreadable files are logged and skipped."""
        return self._records.scan()

    def scan_all(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Every readable record, and the IDs whose record file exists but cannot be read (damaged)."""
        records = [r for r in self.scan() if INSTANCE_ID.match(r["ID"])]
        readable = {r["ID"] for r in records}
        with os.scandir(self.directory) as entries:
            damaged = sorted(e.name[:-5] for e in entries
                             if e.name.endswith(".json") and INSTANCE_ID.match(e.name[:-5]) and e.name[:-5] not in readable)
        return records, damaged

    def set_aside(self, instance_id: str) -> Path:
        """Move an unreadable record out of the way (hidden, so scans skip it), kept for inspection."""
        aside = self.directory / f".{instance_id}.json.unreadable"
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path(instance_id), aside)
        self._records.forget(f"{instance_id}.json")
        return aside

    def tail(self, instance_id: str) -> str:
        """The last output of an instance (for the daemon log when it dies)."""
        with contextlib.suppress(OSError), open(self.log_path(instance_id), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL_BYTES))
            return f.read().decode(errors="replace").strip()
        return ""

    def remove(self, instance_id: str) -> None:
        """Delete a record, its log and any leftover temp file; missing files are fine."""
        for path in (self.path(instance_id), self.log_path(instance_id),
                     self.directory / f".{instance_id}.json.tmp"):
            path.unlink(missing_ok=True)
        self._records.forget(f"{instance_id}.json")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the directory: two daemons must not manage the same instances.

        The kernel drops the lock when the holder dies, and the descriptor is
        close-on-exec, so no instance inherits it and blocks the next daemon.
        """
        path = self.directory / ".lock"
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValidationError(f"another process plugin daemon is using {self.directory}") from None
            yield
