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


def served_connections(pid: int, socket_path: Path) -> int:
    """Connections process ``pid`` holds open on the Unix socket it listens on at ``socket_path``.

    An accepted Unix socket carries its listener's path in ``/proc/net/unix``, so this counts
    exactly the clients being served, not the daemon's own outgoing connections or files.
    """
    path = str(socket_path)
    inodes = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == path:
            inodes.add(fields[6])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            held += 1
    return max(0, held - 1)  # the listening socket itself
