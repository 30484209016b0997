"""Shared benchmark plumbing: machine facts, daemons in a temp home, and docs/benchmarks.md sections."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO / "docs" / "benchmarks.md"


def scratch_dir() -> str | None:
    """Where a bench puts its homes, stores and instance files: ``INFRAKIT_BENCH_TMP``, else tmpfs.

    The figures are the daemons' work, not a disk's. On this shared machine's ext4, 1,000 instance
    files written and renamed took 52 ms in one run and 785 ms in the next, depending on other
    processes' journal traffic, and that swing set every 0->N figure; on tmpfs the same code writes
    them in a steady 50-90 ms. ``INFRAKIT_BENCH_TMP=/tmp`` (or any directory) measures a real disk;
    without tmpfs the system's temporary directory is used.
    """
    chosen = os.environ.get("INFRAKIT_BENCH_TMP")
    if chosen:
        return chosen
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def _scratch_filesystem() -> str:
    where = scratch_dir() or tempfile.gettempdir()
    best = ("", "unknown")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and (where + "/").startswith(fields[1].rstrip("/") + "/") and len(fields[1]) > len(best[0]):
                best = (fields[1], fields[2])
    return f"files in {where} ({best[1]})"


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (f"{datetime.date.today().isoformat()}, {os.cpu_count()} vCPU ({cpu}), load average {load}, "
            f"Python {platform.python_version()}, {_scratch_filesystem()}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_section(title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of docs/benchmarks.md."""
    BENCHMARKS_MD.parent.mkdir(exist_ok=True)
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    BENCHMARKS_MD.write_text(text.rstrip() + "\n")


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


class Home:
    """A temporary INFRAKIT_HOME with daemons started as real processes."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="infrakit-bench-", dir=scratch_dir())
        self.path = Path(self._tmp.name)
        self.plugins_dir = self.path / "plugins"
        self.env = {**os.environ, "INFRAKIT_HOME": str(self.path), "INFRAKIT_PLUGINS_DIR": str(self.plugins_dir)}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, daemon: str, *args: str, env: dict[str, str] | None = None,
              together: tuple[str, ...] = ()) -> subprocess.Popen:
        """Start ``daemon`` (and any ``together`` daemons in the same process); wait for every socket."""
        names = []
        for d in (daemon, *together):
            kind, _, name = d.partition(":")
            names.append(name or ("group" if kind == "manager" else kind))
        log = open(self.path / f"{names[0]}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "infrakit_runtime", "plugin", "run", daemon, *together, *args],
                                env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
        self.procs[names[0]] = proc
        deadline = time.monotonic() + 20
        for name in names:
            sock = self.plugins_dir / name
            # Connectable, not only present: the file exists from bind(), and on a loaded machine the
            # daemon can be descheduled before listen(), so a first call would be refused.
            while not (sock.exists() and _accepts(sock)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{daemon} did not start: {(self.path / f'{names[0]}.log').read_text()}")
                time.sleep(0.02)
        return proc

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._tmp.cleanup()


@contextlib.contextmanager
def home() -> Iterator[Home]:
    h = Home()
    try:
        yield h
    finally:
        h.close()
