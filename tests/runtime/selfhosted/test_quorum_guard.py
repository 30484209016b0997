"""The quorum guard with real etcd members (issue 15, item 2): an etcd group managed by a controller
whose own store is elsewhere (the file backend), so the controller keeps running while the group
loses its quorum and says so itself.

Two of three members stopped (SIGSTOP: present, not answering): the group is Degraded with "quorum
lost: N of 3 members answer" and nothing is destroyed or created, whatever MaxUnavailable (3 here)
allows; one of them continued: the one still stopped is replaced and the group is whole again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from infrakit_runtime.controlplane import ControlPlane
from tests.runtime.conftest import Daemons
from tests.runtime.selfhosted import local
from tests.runtime.selfhosted.plane import ETCD, specs

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not on PATH")


def test_two_of_three_members_stopped_nothing_is_done_and_the_group_says_how_many_answer(
        daemons: Daemons, tmp_path: Path) -> None:
    daemons.start("process")
    daemons.start("selfhost")
    daemons.start("manager", "-o", "poll_interval=0.3s")
    token = tmp_path / "token"
    token.write_text("t\n")
    token.chmod(0o600)
    etcd_ids = local.member_ids(3)
    etcd_spec, managers = specs(daemons.home, etcd_ids=etcd_ids, manager_ids=local.free_ids(1), token_file=str(token))
    etcd_spec["Properties"]["Updating"] = {"MaxSurge": 0, "MaxUnavailable": 3, "Quorum": True}
    etcd_spec["Properties"]["Health"] = {"GracePeriod": "3s", "UnhealthyThreshold": 2}
    cp = ControlPlane(etcd=etcd_spec, managers=managers, plugins_dir=daemons.plugins_dir)
    group = daemons.client("group")
    stopped: list[dict[str, Any]] = []
    try:
        cp.bootstrap(cp.etcd)
        group.call("Group.CommitGroup", {"Spec": etcd_spec, "Pretend": False})

        def describe() -> dict[str, Any]:
            return group.call("Group.DescribeGroup", {"ID": ETCD})["Description"]

        def whole() -> bool:
            d = describe()
            return bool(d["Converged"] and d["Status"]["Healthy"] == 3 and sum(map(local.health, etcd_ids)) == 3)
        local.wait_for(whole, 180, "3 healthy etcd members", interval=0.3)

        members = {d["LogicalID"]: d for d in cp.members(cp.etcd)}
        stopped = [members[etcd_ids[0]], members[etcd_ids[1]]]
        since = time.time()
        for d in stopped:
            signal_member(d, signal.SIGSTOP)

        def degraded() -> str | None:
            status = describe()["Status"]
            return status["Reason"] if status["Condition"] == "Degraded" and "quorum lost" in status["Reason"] else None
        reason = local.wait_for(degraded, 60, "the group to say it has lost quorum", interval=0.2)
        assert "of 3 members answer" in reason
        # Long enough for the stopped members to be condemned (grace 3 s, 2 checks): still nothing is done.
        local.wait_for(lambda: describe()["Status"]["Unhealthy"] >= 2, 60, "two members judged unhealthy", interval=0.2)
        for _ in range(10):
            assert {d["LogicalID"]: d["ID"] for d in cp.members(cp.etcd)} == {k: v["ID"] for k, v in members.items()}
            assert "quorum lost" in describe()["Status"]["Reason"]
        events = group.call("Manager.Events", {"Group": ETCD, "Limit": 0})["Events"]
        assert not [e for e in events if e["Kind"] in ("destroyed", "provisioning") and e["Time"] > since]

        signal_member(stopped.pop(0), signal.SIGCONT)  # one returns: quorum is back
        local.wait_for(lambda: {d["LogicalID"]: d["ID"] for d in cp.members(cp.etcd)}.get(etcd_ids[1])
                       not in (None, members[etcd_ids[1]]["ID"]), 120, "the still-stopped member replaced", interval=0.3)
        local.wait_for(whole, 180, "3 healthy etcd members again", interval=0.3)
    finally:
        for d in stopped:
            signal_member(d, signal.SIGCONT)
        for d in cp.members(cp.etcd):
            signal_member(d, signal.SIGKILL)
        group.close()
        cp.close()


def signal_member(description: dict[str, Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(description["Properties"]["PID"]), sig)
