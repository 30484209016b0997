"""Finding the processes a test started, by a marker argument only that test uses (never by name)."""

from __future__ import annotations

from pathlib import Path


def marker_pids(marker: str) -> set[int]:
    """Live (non-zombie) processes whose argv holds ``marker`` as one argument."""
    pids = set()
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            pids.add(int(entry.name))
    return pids
