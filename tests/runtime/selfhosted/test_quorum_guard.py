"""The quorum guard with real etcd members (issue 15, item 2): an etcd group managed by a controller
whose own store is elsewhere (the file backend), so the controller keeps running while the group
loses its quorum and says so itself.

Two of three members stopped (SIGSTOP: present, not answering): the group is Degraded with "quorum
lost: N of 3 members answer" and nothing is destroyed or created, whatever MaxUnavailable (3 here)
allows; one of them continued: the one still stopped is replaced and the group is whole again.

Two of three members killed (SIGKILL: the process plugin stops describing them at once, so only
the etcd flavor's count of the cluster's voting members shows that two of three are gone): not one
mutating plugin call while the quorum is lost, and the group heals once a member is back.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infrakit_runtime.controlplane import ControlPlane
from infrakit_runtime.rpc.client import SyncClient
from tests.runtime.conftest import Daemons
from tests.runtime.observability.test_daemon_metrics import samples, scrape_unix
from tests.runtime.selfhosted import local
from tests.runtime.selfhosted.plane import ETCD, specs

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not on PATH")

# Every call of the controller that could change the cluster: an instance made or destroyed, a member
# added (Prepare) or removed (Drain, and Prepare's remove-then-add).
MUTATING = ("Instance.Provision", "Instance.Destroy", "Flavor.Prepare", "Flavor.PrepareMany", "Flavor.Drain")
CHANGES = ("provisioning", "provisioned", "provision_failed", "destroyed", "destroy_failed", "drain_failed", "relabelled")


@dataclass
class Guarded:
    """A managed etcd group of three healthy members (``Updating.Quorum``, MaxUnavailable 3, a short grace)."""

    daemons: Daemons
    cp: ControlPlane
    group: SyncClient
    ids: list[str]

    def describe(self) -> dict[str, Any]:
        return self.group.call("Group.DescribeGroup", {"ID": ETCD})["Description"]

    def whole(self) -> bool:
        d = self.describe()
        return bool(d["Converged"] and d["Status"]["Healthy"] == 3 and sum(map(local.health, self.ids)) == 3)

    def instances(self) -> dict[str, dict[str, Any]]:
        return {d["LogicalID"]: d for d in self.cp.members(self.cp.etcd)}

    def degraded(self) -> str | None:
        status = self.describe()["Status"]
        return status["Reason"] if status["Condition"] == "Degraded" and "quorum lost" in status["Reason"] else None

    def calls(self) -> dict[str, float]:
        """How many calls the controller has made to its plugins, by method (its /metrics: the call record)."""
        counted: dict[str, float] = {}
        for (name, labels), v in samples(scrape_unix(self.daemons.plugins_dir / "group")).items():
            if name == "infrakit_rpc_duration_seconds_count":
                method = dict(labels)["method"]
                counted[method] = counted.get(method, 0.0) + v
        return counted


@pytest.fixture
def guarded(daemons: Daemons, tmp_path: Path) -> Iterator[Guarded]:
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
    g = Guarded(daemons=daemons, cp=cp, group=daemons.client("group"), ids=etcd_ids)
    try:
        cp.bootstrap(cp.etcd)
        g.group.call("Group.CommitGroup", {"Spec": etcd_spec, "Pretend": False})
        local.wait_for(g.whole, 180, "3 healthy etcd members", interval=0.3)
        yield g
    finally:
        with contextlib.suppress(Exception):
            for d in cp.members(cp.etcd):
                signal_member(d, signal.SIGCONT)
                signal_member(d, signal.SIGKILL)
        g.group.close()
        cp.close()


def test_two_of_three_members_stopped_nothing_is_done_and_the_group_says_how_many_answer(guarded: Guarded) -> None:
    g, etcd_ids = guarded, guarded.ids
    members = g.instances()
    stopped = [members[etcd_ids[0]], members[etcd_ids[1]]]
    since = time.time()
    try:
        for d in stopped:
            signal_member(d, signal.SIGSTOP)
        reason = local.wait_for(g.degraded, 60, "the group to say it has lost quorum", interval=0.2)
        assert "of 3 members answer" in reason
        # Long enough for the stopped members to be condemned (grace 3 s, 2 checks): still nothing is done.
        local.wait_for(lambda: g.describe()["Status"]["Unhealthy"] >= 2, 60, "two members judged unhealthy", interval=0.2)
        for _ in range(10):
            assert {lid: d["ID"] for lid, d in g.instances().items()} == {k: v["ID"] for k, v in members.items()}
            assert "quorum lost" in g.describe()["Status"]["Reason"]
        events = g.group.call("Manager.Events", {"Group": ETCD, "Limit": 0})["Events"]
        assert not [e for e in events if e["Kind"] in ("destroyed", "provisioning") and e["Time"] > since]

        signal_member(stopped.pop(0), signal.SIGCONT)  # one returns: quorum is back
        local.wait_for(lambda: g.instances().get(etcd_ids[1], {}).get("ID") not in (None, members[etcd_ids[1]]["ID"]),
                       120, "the still-stopped member replaced", interval=0.3)
        local.wait_for(g.whole, 180, "3 healthy etcd members again", interval=0.3)
    finally:
        for d in stopped:
            signal_member(d, signal.SIGCONT)


def test_two_of_three_members_killed_no_mutating_call_until_one_is_restarted_by_hand_then_the_group_heals(
        guarded: Guarded, tmp_path: Path) -> None:
    """Two members SIGKILLed: the process plugin no longer describes them, so the controller sees one
    member of one; the etcd flavor's count (1 of 3 voting members answer) holds every change.

    How one comes back: as an operator would, by restarting the killed etcd by hand on its own data
    directory, with the settings the etcd flavor rendered for it (the init the process plugin ran,
    read here from the instance's description before the kill; on a host, from the unit or ``ps``).
    The process plugin cannot restart an instance that died, and the controller must not act without
    quorum, so a hand restart is the one way back that uses neither. The restarted member is no
    instance of the plugin: once quorum is back, the controller replaces both logical IDs without an
    instance - the dead member and the hand-started one - one at a time, by remove-then-add.

    What proves "no action": the manager's own record of its plugin calls (/metrics, by method) shows
    no Provision, Destroy, Prepare or Drain from the kill until the restart, while it made at least six
    more health checks (each pass checks, then plans); no change event; the selfhost daemon logged no
    member added or removed; and the etcd member list is unchanged.
    """
    g, etcd_ids = guarded, guarded.ids
    members = g.instances()
    # The raft leader survives: it goes on answering healthy until it steps down (an election timeout
    # later), the moment a planner that counted only what the instance plugin describes would act.
    leader = raft_leader(etcd_ids)
    killed = [members[lid] for lid in etcd_ids if lid != leader]
    member_ids = {m["ID"] for m in local.members(leader)}
    before = g.calls()
    log_from = len(g.daemons.log("selfhost"))
    since = time.time()
    hand: subprocess.Popen | None = None
    try:
        for d in killed:
            signal_member(d, signal.SIGKILL)
        # 1 of 3, or 0 of 3 when the survivor's status request times out on a busy machine.
        reason = local.wait_for(lambda: (r := g.degraded()) and re.search(r"[01] of 3 members answer \(the flavor's", r)
                                and r, 60, "the group to say that fewer than 2 of 3 members answer", interval=0.2)
        assert "quorum lost" in reason and "a majority needs 2" in reason
        checks = g.calls().get("Flavor.HealthyMany", 0.0)
        local.wait_for(lambda: g.calls().get("Flavor.HealthyMany", 0.0) >= checks + 6, 120,
                       "six more health checks of the group", interval=0.2)
        local.wait_for(lambda: g.describe()["Status"]["Unhealthy"] >= 1, 60, "the survivor judged unhealthy (no leader)",
                       interval=0.2)
        after = g.calls()
        assert {m: after.get(m, 0.0) for m in MUTATING} == {m: before.get(m, 0.0) for m in MUTATING}, (before, after)
        events = g.group.call("Manager.Events", {"Group": ETCD, "Limit": 0})["Events"]
        assert not [e for e in events if e["Kind"] in CHANGES and e["Time"] > since]
        assert sorted(e["Instance"] for e in events if e["Kind"] == "instance_lost" and e["Time"] > since) == \
            sorted(d["ID"] for d in killed)
        logged = g.daemons.log("selfhost")[log_from:]
        assert not [line for line in logged.splitlines()
                    if "added etcd member" in line or "removing etcd" in line or "removed etcd member" in line]
        assert {m["ID"] for m in local.members(leader)} == member_ids
        d = g.describe()
        assert d["Status"]["Condition"] == "Degraded" and not d["Converged"]

        back = killed[1]  # as an operator would: the same settings, the same data directory
        init = back["Properties"]["Spec"]["Init"]
        hand = local.start_rendered(init, tmp_path / "restarted-by-hand.log")
        local.wait_for(lambda: g.degraded() is None, 120, "the quorum back", interval=0.3)
        local.wait_for(lambda: all(g.instances().get(d["LogicalID"], {}).get("ID") not in (None, d["ID"])
                                   for d in killed), 240, "both killed members' logical IDs held by new instances",
                       interval=0.3)
        local.wait_for(g.whole, 240, "3 healthy etcd members again", interval=0.3)
        local.wait_for(lambda: hand.poll() is not None, 60, "the hand-started member to exit once replaced")
        assert len([m for m in local.members(leader) if not m.get("isLearner")]) == 3
    finally:
        if hand is not None:
            local.kill(hand)


def raft_leader(lids: list[str]) -> str:
    """The logical ID of the etcd member that leads the raft group now."""
    status = local.etcd_call(lids[0], "maintenance/status")
    by_id = {int(m["ID"]): m for m in local.members(lids[0])}
    urls = by_id[int(status["leader"])]["clientURLs"]
    return next(lid for lid in lids if local.client_url(lid) in urls)


def signal_member(description: dict[str, Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(description["Properties"]["PID"]), sig)
