"""Shared fixtures: real plugin daemons as real processes on real Unix sockets in a temp dir."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from tests.runtime import leftovers

REPO = Path(__file__).resolve().parents[2]
WIRE = REPO.parent / "shared" / "wire"


def wait_for_socket(path: Path, timeout: float = 15.0, proc: subprocess.Popen | None = None) -> None:
    """Block until a daemon answers its handshake on ``path``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"daemon for {path.name} exited with {proc.returncode}")
        if path.exists():
            client = SyncClient(Address(unix_path=path), timeout=2)
            try:
                client.hello()
                return
            except Exception as e:  # not ready yet
                last = e
            finally:
                client.close()
        time.sleep(0.05)
    raise TimeoutError(f"no daemon answered on {path} within {timeout}s: {last}")


class Daemons:
    """Starts ``infrakit plugin run`` processes in one temp INFRAKIT_HOME; stops them all at teardown."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.plugins_dir = home / "plugins"
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "INFRAKIT_HOME": str(home),
            "INFRAKIT_PLUGINS_DIR": str(self.plugins_dir),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("INFRAKIT_CONFIG", None)

    def start(self, daemon: str, *args: str, env: dict[str, str] | None = None, wait: bool = True) -> subprocess.Popen:
        kind, _, name = daemon.partition(":")
        name = name or ("group" if kind == "manager" else kind)
        log = open(self.home / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "infrakit_runtime", "plugin", "run", daemon, *args],
            env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.procs[name] = proc
        if wait:
            wait_for_socket(self.plugins_dir / name, proc=proc)
        return proc

    def client(self, name: str, timeout: float = 10) -> SyncClient:
        return SyncClient(Address(unix_path=self.plugins_dir / name), name=name, timeout=timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(10)

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        """Stop the daemons (SIGTERM, then SIGKILL to their process groups), then kill whatever else still runs for
        this home: instances outlive their plugin by design, and a keeper or supervisor started with ``env`` is no
        child of ours."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        leftovers.kill_under(self.home)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(tmp_path / "home")
    try:
        yield d
    finally:
        d.stop_all()
