"""Files that never come out half-written, and directories of JSON records read cheaply.

Guarantee: ``atomic_write`` leaves either the old file or the new one, never a mix, and with
``durable`` the rename itself survives a power cut (the directory is fsynced). A failed write
removes its temp file. ``RecordDirectory`` re-reads only records whose (mtime, size) changed,
so listing 10,000 records costs a directory scan, not 10,000 reads.
Limit: plain local filesystems; on NFS ``os.replace`` is atomic per client only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` all-or-nothing; raises ``OSError`` (callers phrase it)."""
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    if durable:
        fsync_dir(path.parent)


class RecordDirectory:
    """JSON records (objects with a string ``ID``), one per file, cached by (mtime, size)."""

    def __init__(self, directory: Path, *, accept: Callable[[str], bool] = lambda name: True) -> None:
        self.directory = directory
        self._accept = accept
        self._cache: dict[str, tuple[int, int, dict[str, Any]]] = {}

    def scan(self) -> list[dict[str, Any]]:
        """Every readable record, sorted by file name; hidden, rejected and unreadable files are skipped."""
        seen: dict[str, tuple[int, int, dict[str, Any]]] = {}
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not self._accept(entry.name) or not entry.is_file():
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                cached = self._cache.get(entry.name)
                if cached and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
                    seen[entry.name] = cached
                    continue
                try:
                    record = json.loads(Path(entry.path).read_text())
                except FileNotFoundError:
                    continue
                except (ValueError, UnicodeDecodeError):
                    log.warning("ignoring unreadable record %s", entry.path)
                    continue
                if isinstance(record, dict) and isinstance(record.get("ID"), str):
                    seen[entry.name] = (st.st_mtime_ns, st.st_size, record)
        self._cache = seen
        return [v[2] for _, v in sorted(seen.items())]

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)
