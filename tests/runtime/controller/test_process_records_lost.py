"""Through the real group controller: lost process records never double a group (issue 12, case 3a).

The manager, the vanilla flavor and the process plugin run as daemons; the process plugin's
records directory is moved away and replaced by an empty one while the group is converged.
The group must stay at its size with the same processes: no replacement started beside
instances that still run, and never Converged over 2x the processes.
"""

from __future__ import annotations

import http.client
import re
import shutil
import socket

from tests.runtime.controller.harness import Stack

SIZE = 5


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self._path)


def metric(stack: Stack, name: str, group: str = "web") -> float:
    """A counter of the manager's /metrics for ``group`` (0 when not yet exported)."""
    conn = _UnixHTTP(str(stack.d.plugins_dir / "group"))
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    m = re.search(rf'^{re.escape(name)}\{{group="{re.escape(group)}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def passes(stack: Stack) -> float:
    return metric(stack, "infrakit_reconcile_duration_seconds_count")


def test_records_lost_under_a_converged_group_are_rebuilt_not_doubled(stack):
    stack.commit(stack.spec(size=SIZE, grace="0s", unhealthy_threshold=2))
    stack.wait_converged(SIZE, message="v1")
    before = {d["ID"]: d["Properties"]["PID"] for d in stack.instances()}
    provisioned = metric(stack, "infrakit_instances_provisioned_total")
    assert stack.live_processes() == SIZE

    records = stack.d.home / "instance-process"
    records.rename(records.with_name("instance-process.moved"))
    records.mkdir()
    # Let the controller look at the group several times after the loss.
    seen = passes(stack)
    stack.wait(lambda _: passes(stack) >= seen + 6, what="six controller passes after the records were lost")
    desc = stack.wait_converged(SIZE, message="v1")

    assert {d["ID"]: d["Properties"]["PID"] for d in stack.instances()} == before
    assert metric(stack, "infrakit_instances_provisioned_total") == provisioned, "nothing was started"
    assert stack.live_processes() == SIZE, "no process runs beside the group"
    assert desc["Converged"] and len(desc["Instances"]) == SIZE
    assert len(list(records.glob("process-*.json"))) == SIZE
    shutil.rmtree(records.with_name("instance-process.moved"), ignore_errors=True)
