"""A real controller stack for tests: process + vanilla + manager daemons, and helpers to watch a group."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.runtime.conftest import Daemons
from tests.runtime.procs import marker_pids
from tests.runtime.serving import count_answering

POLL = "0.5s"


class Stack:
    """Drives the manager over its real socket, like any client would."""

    def __init__(self, daemons: Daemons, *, poll: str = POLL) -> None:
        self.d = daemons
        self.flags = daemons.home / "health-flags"
        self.flags.mkdir(exist_ok=True)
        self.marker = f"--marker={uuid.uuid4().hex}"
        self.env = {"INFRAKIT_GROUP_POLL_INTERVAL": poll}
        daemons.start("process")
        daemons.start("vanilla")
        self.start_manager()

    def start_manager(self) -> None:
        self.d.start("manager", env=self.env)

    def spec(self, gid: str = "web", *, size: int | None = 3, logical_ids: list[str] | None = None,
             message: str = "v1", grace: str = "1s", unhealthy_threshold: int = 2, **updating: Any) -> dict[str, Any]:
        allocation: dict[str, Any] = {"LogicalIDs": logical_ids} if logical_ids is not None else {"Size": size}
        props: dict[str, Any] = {
            "Allocation": allocation,
            "Instance": {"Plugin": "process", "Properties": {
                "Command": [sys.executable, "-m", "infrakit_runtime.examples.webapp", self.marker],
                "Env": {"HEALTH_FLAG_DIR": str(self.flags)},
            }},
            "Flavor": {"Plugin": "vanilla", "Properties": {
                "Init": [f"export MESSAGE={message}"],
                "Health": {"HTTP": "http://{{address}}/healthz", "Timeout": "1s"},
            }},
            "Health": {"GracePeriod": grace, "UnhealthyThreshold": unhealthy_threshold},
        }
        if updating:
            props["Updating"] = updating
        return {"ID": gid, "Properties": props}

    def call(self, method: str, params: dict[str, Any]) -> Any:
        client = self.d.client("group", timeout=30)
        try:
            return client.call(method, {"Name": "group", **params})
        finally:
            client.close()

    def commit(self, spec: dict[str, Any], pretend: bool = False) -> str:
        return self.call("Group.CommitGroup", {"Spec": spec, "Pretend": pretend})["Details"]

    def describe(self, gid: str = "web") -> dict[str, Any]:
        return self.call("Group.DescribeGroup", {"ID": gid})["Description"]

    def instances(self, gid: str = "web") -> list[dict[str, Any]]:
        """What the process plugin itself reports for the group (the world, not the controller's view)."""
        client = self.d.client("process")
        try:
            return client.call("Instance.DescribeInstances", {"Tags": {"infrakit.group": gid}, "Properties": True})["Descriptions"]
        finally:
            client.close()

    def wait(self, predicate, timeout: float = 60.0, what: str = "the group", gid: str = "web") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.describe(gid)
                if predicate(last):
                    return last
            except Exception as e:  # the manager may be restarting
                last = {"error": str(e)}
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last description: {json.dumps(last.get('Status', last))[:2000]}")

    def wait_converged(self, size: int, gid: str = "web", timeout: float = 60.0, message: str | None = None) -> dict[str, Any]:
        def done(desc: dict[str, Any]) -> bool:
            if not desc.get("Converged") or len(desc["Instances"]) != size:
                return False
            return message is None or all(self.answer(i) == message for i in desc["Instances"])
        return self.wait(done, timeout, f"{gid} converged at {size}", gid)

    def answer(self, description: dict[str, Any], path: str = "/") -> str | None:
        address = (description.get("Properties") or {}).get("Address")
        if not address:
            return None
        try:
            with urllib.request.urlopen(f"http://{address}{path}", timeout=1) as resp:
                return resp.read().decode().split(" from ")[0].strip()
        except Exception:
            return None

    def healthy_count(self, gid: str = "web") -> int:
        """Instances of the group that answer their health check right now."""
        return count_answering(self.instances(gid), "/healthz", timeout=1)

    def make_unhealthy(self, instance_id: str) -> None:
        (self.flags / instance_id).touch()

    def live_processes(self) -> int:
        """Processes on this machine started for this test's groups (found by their marker argument)."""
        return len(marker_pids(self.marker))

    def kill_instances(self) -> None:
        """SIGKILL every instance process of this test (cleanup)."""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if self.marker.encode() in (entry / "cmdline").read_bytes().split(b"\0"):
                        os.kill(int(entry.name), 9)
                except OSError:
                    pass


class Sampler(threading.Thread):
    """Samples how many instances answer their health check, continuously, in the background."""

    def __init__(self, stack: Stack, gid: str = "web") -> None:
        super().__init__(daemon=True)
        self.stack, self.gid = stack, gid
        self.samples: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append(self.stack.healthy_count(self.gid))
            except Exception:
                pass
            time.sleep(0.05)

    def stop(self) -> list[int]:
        self._halt.set()
        self.join(10)
        return self.samples
