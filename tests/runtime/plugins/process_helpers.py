"""Helpers for the process plugin's tests: polling, /proc and cgroup v2 facts, a call wrapper."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infrakit_runtime.plugins.instance import process_os
from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.spi import instance

# A child that sleeps and can be found by the marker argument that follows it.
SLEEP_PY = "import time; time.sleep(600)"


def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as e:  # not there yet
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last: {last!r}")


def running(pid: int) -> bool:
    stat = process_os.read_stat(pid)
    return stat is not None and stat.running


def instance_processes(marker: bytes) -> list[int]:
    """Running instance processes (they carry INFRAKIT_INSTANCE_ID) whose environment holds ``marker``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ and any(e.startswith(b"INFRAKIT_INSTANCE_ID=") for e in environ) \
                and running(int(entry.name)):
            found.append(int(entry.name))
    return found


# --- cgroup v2 -------------------------------------------------------------------------------------


def cgroup2_mount() -> Path | None:
    """Where cgroup v2 is mounted (``/sys/fs/cgroup`` or, on hybrid hosts, ``/sys/fs/cgroup/unified``)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return Path(left.split()[4])
    return None


def cgroup_writable() -> bool:
    mount = cgroup2_mount()
    if mount is None:
        return False
    probe = mount / f"infrakit-test-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


def cgroup_dir(pid: int) -> Path | None:
    """The cgroup v2 directory ``pid`` is in, or None."""
    mount = cgroup2_mount()
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::") and mount is not None:
            return mount / line[3:].lstrip("/")
    return None


def remove_cgroup(path: Path) -> None:
    """Kill what is left in a test's cgroup and remove it (and its parent, once empty)."""
    if not path.is_dir():
        return
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            path.rmdir()
            break
        except FileNotFoundError:
            break
        except OSError:
            time.sleep(0.05)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


# --- calls -----------------------------------------------------------------------------------------


class Call:
    """``call("Provision", Spec=...)`` on the process plugin daemon."""

    def __init__(self, client: SyncClient) -> None:
        self.client = client

    def __call__(self, method: str, **params: Any) -> Any:
        return self.client.call(f"Instance.{method}", {"Type": "", **params})

    def provision(self, properties: dict[str, Any], **kwargs: Any) -> str:
        return self("Provision", Spec=spec(properties, **kwargs))["ID"]

    def describe(self, tags: dict[str, str] | None = None, properties: bool = False) -> list[dict[str, Any]]:
        return self("DescribeInstances", Tags=tags or {}, Properties=properties)["Descriptions"]

    def pids(self, tags: dict[str, str] | None = None) -> dict[str, int]:
        return {d["ID"]: d["Properties"]["PID"] for d in self.describe(tags, properties=True)}

    def destroy(self, instance_id: str) -> None:
        self("Destroy", Instance=instance_id, Context={"Reason": "terminate"})


def spec(properties: dict[str, Any], *, tags: dict[str, str] | None = None, init: str = "",
         logical_id: str | None = None) -> dict[str, Any]:
    return instance.Spec(properties=properties, tags=tags or {}, init=init, logical_id=logical_id).to_wire()


def state_dir(daemons) -> Path:
    return daemons.home / "instance-process"
