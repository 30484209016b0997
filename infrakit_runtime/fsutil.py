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
import time
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


# A listing is reused only when the directory has not changed since a scan that began this long
# after its last change: longer than any filesystem timestamp granularity (a jiffy, 1-10 ms).
LISTING_GUARD_NS = 50_000_000


class RecordDirectory:
    """JSON records (objects with a string ``ID``), one per file, cached by (mtime, size).

    Records are written by rename (``atomic_write``), which changes the directory's mtime; so
    while the directory's mtime stands still the last listing is reused without a single
    ``stat``, and fifty callers in one burst cost one scan. A record edited in place by some
    other tool is seen once anything else in the directory changes.
    """

    def __init__(self, directory: Path, *, accept: Callable[[str], bool] = lambda name: True) -> None:
        self.directory = directory
        self._accept = accept
        self._cache: dict[str, tuple[int, int, dict[str, Any]]] = {}
        self._listing: list[dict[str, Any]] | None = None
        self._listed_mtime = -1
        self._listed_at = 0

    def scan(self) -> list[dict[str, Any]]:
        """Every readable record, sorted by file name; hidden, rejected and unreadable files are skipped.

        The list returned is shared with later callers until the directory changes: do not mutate it.
        """
        started = time.time_ns()
        mtime = os.stat(self.directory).st_mtime_ns
        if self._listing is not None and mtime == self._listed_mtime and self._listed_at - mtime > LISTING_GUARD_NS:
            return self._listing
        self._listing = self._scan()
        self._listed_mtime, self._listed_at = mtime, started
        return self._listing

    def _scan(self) -> list[dict[str, Any]]:
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
        self._listing = None
