"""Helpers for the self-hosted control plane tests: loopback addresses, etcd processes started from a flavor's init.

An etcd member's logical ID is ``127.0.0.1:PORT`` (its client port; the peer port is the next),
so a member needs two consecutive free ports. ``start_rendered`` runs an init script the way the
process plugin does (``sh -c '<init>; exec etcd'``), in its own session so a test can SIGKILL it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any


def port_pairs(n: int) -> list[int]:
    """``n`` ports ``p`` with ``p`` and ``p + 1`` both free now (bound, then released)."""
    found: list[int] = []
    held: list[socket.socket] = []
    try:
        while len(found) < n:
            a = socket.socket()
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            b = socket.socket()
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                a.close()
                b.close()
                continue
            held += [a, b]
            found.append(port)
        return found
    finally:
        for s in held:
            s.close()


def member_ids(n: int) -> list[str]:
    return [f"127.0.0.1:{p}" for p in port_pairs(n)]


def free_ids(n: int) -> list[str]:
    """``n`` logical IDs ``127.0.0.1:PORT`` on ports free now (one port each: controller replicas)."""
    return [f"127.0.0.1:{p}" for p in port_pairs(n)]


def client_url(lid: str) -> str:
    return f"http://{lid}"


def start_rendered(init: str, log: Path, *, argv: list[str] | None = None,
                   env: dict[str, str] | None = None) -> subprocess.Popen:
    """Run ``init`` then exec ``argv`` (default ``etcd``) in one shell, as the process plugin runs an instance."""
    with open(log, "ab") as out:
        return subprocess.Popen(["/bin/sh", "-c", f'{init}\nexec "$@"', "sh", *(argv or ["etcd"])],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def etcd_call(lid: str, path: str, body: dict[str, Any] | None = None, timeout: float = 2.0) -> dict[str, Any]:
    request = urllib.request.Request(f"{client_url(lid)}/v3/{path}", data=json.dumps(body or {}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def members(lid: str) -> list[dict[str, Any]]:
    return list(etcd_call(lid, "cluster/member/list").get("members") or [])


def health(lid: str) -> bool:
    try:
        with urllib.request.urlopen(f"{client_url(lid)}/health", timeout=1) as resp:
            return json.loads(resp.read()).get("health") == "true"
    except Exception:  # down, or no leader
        return False


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something true; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as e:  # a member still starting
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
