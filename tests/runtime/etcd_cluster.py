"""A real 3-member etcd cluster on loopback for the backend and HA tests (Debian's ``etcd-server``).

Shared by ``tests/runtime/backends`` and ``tests/runtime/ha`` (each conftest imports the
fixtures; pytest then runs one cluster per importing directory). Started once per session on free ports in a temp dir; tests may stop and start
members (``etcd_cluster.stop("m2")``), and the ``etcd`` fixture puts every member
back and waits for a healthy cluster before the next test. Skips only when no
``etcd`` binary is on PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

NAMES = ("m1", "m2", "m3")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdCluster:
    """Three etcd processes; ``endpoints`` are their client URLs in member order."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ports = free_ports(2 * len(NAMES))
        self.client_port = dict(zip(NAMES, ports[: len(NAMES)], strict=True))
        self.peer_port = dict(zip(NAMES, ports[len(NAMES):], strict=True))
        self.procs: dict[str, subprocess.Popen] = {}
        self.initial = ",".join(f"{n}=http://127.0.0.1:{self.peer_port[n]}" for n in NAMES)

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint(n) for n in NAMES]

    def endpoint(self, name: str) -> str:
        return f"http://127.0.0.1:{self.client_port[name]}"

    def start(self, name: str) -> None:
        if name in self.procs and self.procs[name].poll() is None:
            return
        client = self.endpoint(name)
        peer = f"http://127.0.0.1:{self.peer_port[name]}"
        with open(self.root / f"{name}.log", "ab") as log:  # the child keeps its own copy
            self.procs[name] = subprocess.Popen(
                ["etcd", "--name", name, "--data-dir", str(self.root / name),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", self.initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", f"infrakit-test-{os.getpid()}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def stop(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        proc.wait(10)

    def running(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def healthy(self, name: str) -> bool:
        try:
            with urllib.request.urlopen(self.endpoint(name) + "/health", timeout=1) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except Exception:  # not up, or no leader yet
            return False

    def wait_healthy(self, timeout: float = 20, members: list[str] | None = None) -> None:
        """Until every one of ``members`` (default: all) is running and sees a raft leader."""
        members = list(members or NAMES)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in members:
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"etcd {name} is not running: see {self.root / (name + '.log')}")
            if all(self.healthy(n) for n in members):
                return
            time.sleep(0.1)
        raise TimeoutError(f"etcd cluster not healthy within {timeout}s; logs in {self.root}")

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not on PATH (install Debian's etcd-server: apt-get install -y etcd-server)")
    root = Path(tempfile.mkdtemp(prefix="infrakit-etcd-"))
    cluster = EtcdCluster(root)
    try:
        for name in NAMES:
            cluster.start(name)
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def etcd(etcd_cluster: EtcdCluster) -> Iterator[EtcdCluster]:
    """The session cluster, whole and healthy before and after the test."""
    for name in NAMES:
        etcd_cluster.start(name)
    etcd_cluster.wait_healthy()
    yield etcd_cluster
    for name in NAMES:
        etcd_cluster.start(name)
    etcd_cluster.wait_healthy()
