"""A self-hosted control plane on this machine, end to end (issue 15): three etcd members and three
controller replicas, each a process instance the plane keeps alive itself.

One plane serves the whole module (bringing it up costs most of the time); the tests run in
file order and each leaves it at 3 + 3 healthy for the next.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.conftest import Daemons
from tests.runtime.selfhosted import local
from tests.runtime.selfhosted.plane import ETCD, MANAGERS, Plane
from tests.runtime.selfhosted.writer import Writer

pytestmark = pytest.mark.skipif(__import__("shutil").which("etcd") is None, reason="etcd is not on PATH")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    daemons = Daemons(Path(tmp_path_factory.mktemp("plane")) / "home")
    p = None
    try:
        p = Plane(daemons, ttl="3s")
        report = p.cp.up(timeout=240)
        assert report["changed"] and set(report["committed"]) == {ETCD, MANAGERS}, report
        yield p
    finally:
        if p is not None:
            p.close()
        daemons.stop_all()


def settled(plane: Plane) -> dict[str, Any]:
    """Both groups converged with 3 healthy members each, etcd with 3 voters: the plane as each test leaves it."""
    def check() -> dict[str, Any] | None:
        if len(plane.etcd_voters()) != 3 or plane.etcd_healthy() != 3:
            return None
        etcd, managers = plane.describe(ETCD), plane.describe(MANAGERS)
        ok = all(d["Converged"] and len(d["Instances"]) == 3 and d.get("Status", {}).get("Healthy") == 3
                 for d in (etcd, managers))
        return {"etcd": etcd, "managers": managers} if ok else None
    return local.wait_for(check, 240, "3 + 3 healthy members", interval=0.5)


def test_up_grows_from_one_member_and_one_replica_and_a_second_up_changes_nothing(plane: Plane) -> None:
    settled(plane)
    assert plane.leader() in [f"http://{lid}" for lid in plane.manager_ids]
    again = plane.cp.up(timeout=120)
    assert not again["changed"] and again["bootstrapped"] == [] and again["committed"] == [], again


def test_a_sigkilled_etcd_member_is_replaced_as_a_learner_then_promoted(plane: Plane) -> None:
    settled(plane)
    victim = plane.by_logical_id(ETCD)[plane.etcd_ids[2]]
    before = {m["ID"] for m in plane.etcd_voters()}
    plane.kill(victim)
    def replaced() -> bool:
        now = plane.by_logical_id(ETCD).get(plane.etcd_ids[2])
        voters = plane.etcd_voters()
        return bool(now and now["ID"] != victim["ID"] and len(voters) == 3 and {m["ID"] for m in voters} != before)
    local.wait_for(replaced, 180, "the killed member replaced by a new voter", interval=0.3)
    settled(plane)


def test_a_killed_follower_replica_is_replaced_and_the_group_keeps_its_leader(plane: Plane) -> None:
    settled(plane)
    leader = plane.leader()
    members = plane.by_logical_id(MANAGERS)
    follower = next(lid for lid in plane.manager_ids if f"http://{lid}" != leader)
    plane.kill(members[follower])
    local.wait_for(lambda: plane.by_logical_id(MANAGERS).get(follower, {}).get("ID") not in (None, members[follower]["ID"]),
                   120, "the killed replica replaced", interval=0.3)
    settled(plane)
    assert plane.leader() == leader, "a follower's loss does not move leadership"


def collect_events(plane: Plane, into: dict[tuple[str, int, float], dict[str, Any]]) -> None:
    """Every replica's events, from the JSON lines in the instance logs (a destroyed replica's log goes
    with it: collect as the rollout goes)."""
    for path in (plane.d.home / "instance-process").glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith('{"Seq"'):
                with contextlib.suppress(ValueError):
                    e = json.loads(line)
                    into[(path.name, e["Seq"], e["Time"])] = {**e, "Log": path.name}


def test_a_rollout_of_the_replicas_rolls_the_leader_last_after_it_hands_over(plane: Plane) -> None:
    settled(plane)
    leader = plane.leader()
    assert leader is not None
    leader_lid = leader.removeprefix("http://")
    spec = plane.manager_spec
    spec["Properties"]["Flavor"]["Properties"]["Options"]["poll_interval"] = "0.4s"  # hashed: a rollout
    before = {lid: d["ID"] for lid, d in plane.by_logical_id(MANAGERS).items()}
    order: list[str] = []  # logical IDs in the order their old instance was seen gone
    events: dict[tuple[str, int, float], dict[str, Any]] = {}
    plane.commit(spec)

    def rolled() -> bool:
        collect_events(plane, events)
        now = {lid: d["ID"] for lid, d in plane.by_logical_id(MANAGERS).items()}
        order.extend(lid for lid, iid in before.items() if now.get(lid) != iid and lid not in order)
        return len(now) == 3 and all(now[lid] != before[lid] for lid in before)
    local.wait_for(rolled, 240, "every replica replaced", interval=0.2)
    settled(plane)
    collect_events(plane, events)
    assert plane.leader() != leader
    assert order[-1] == leader_lid and len(order) == 3, order
    # Who destroyed the old leader's instance, and when, comes from the events the replicas wrote
    # themselves (each with its own timestamp), not from this test's polling: under load one poll can
    # span the handover and the destroy both.
    handovers = sorted((e for e in events.values() if e["Kind"] == "handover" and e["Group"] == MANAGERS),
                       key=lambda e: e["Time"])
    assert handovers and leader_lid in handovers[0]["Reason"], handovers
    old_leaders_log = f"{before[leader_lid]}.log"
    gained = [e for e in events.values() if e["Kind"] == "leadership_gained" and e["Time"] > handovers[0]["Time"]
              and e["Log"] != old_leaders_log]
    assert gained, "a follower took over after the handover"
    destroyed = [e for e in events.values()
                 if e["Kind"] == "destroyed" and e["Group"] == MANAGERS and e["Instance"] == before[leader_lid]]
    assert destroyed, f"no replica recorded destroying the old leader's instance {before[leader_lid]}"
    assert all(e["Log"] != old_leaders_log for e in destroyed), f"the old leader destroyed itself: {destroyed}"
    assert min(e["Time"] for e in destroyed) > min(e["Time"] for e in gained), \
        f"the old leader's instance went before a follower led: destroyed {destroyed}, gained {gained}"


def test_a_rolling_change_of_the_etcd_group_keeps_quorum_under_writes(plane: Plane) -> None:
    settled(plane)
    spec = plane.etcd_spec
    spec["Properties"]["Flavor"]["Properties"]["Timeout"] = "2s"  # hashed: a rollout
    before = {lid: d["ID"] for lid, d in plane.by_logical_id(ETCD).items()}
    with Writer([f"http://{lid}" for lid in plane.etcd_ids], deadline=2.0) as writer:
        plane.commit(spec)

        def rolled() -> bool:
            now = {lid: d["ID"] for lid, d in plane.by_logical_id(ETCD).items()}
            return len(now) == 3 and all(now[lid] != before[lid] for lid in before)
        local.wait_for(rolled, 300, "every etcd member replaced", interval=0.5)
        settled(plane)
    tally = writer.tally()
    print(f"rolling etcd change: {tally.line()}")
    assert tally.writes > 20
    assert tally.unexplained == 0, tally.line()


def test_two_of_three_etcd_members_stopped_nothing_acts_and_healing_resumes_when_one_returns(plane: Plane) -> None:
    settled(plane)
    members = plane.by_logical_id(ETCD)
    a, b = (members[lid] for lid in plane.etcd_ids[:2])
    plane.kill(a, signal.SIGSTOP)
    plane.kill(b, signal.SIGSTOP)
    try:
        def loud() -> str | None:
            status = plane.cp.status()
            answers = [r for r in (status or {}).get("Replicas", {}).values() if isinstance(r, dict)]
            problems = [r.get("Problem") or "" for r in answers]
            return problems[0] if answers and all("no quorum" in p for p in problems) else None
        problem = local.wait_for(loud, 60, "every replica to say etcd has no quorum", interval=0.5)
        assert "etcd" in problem
        ids = {lid: d["ID"] for lid, d in plane.by_logical_id(ETCD).items()}
        assert ids == {lid: d["ID"] for lid, d in members.items()}, "nothing was replaced without quorum"
    finally:
        plane.kill(a, signal.SIGCONT)  # one returns: quorum is back, the other is replaced
    local.wait_for(lambda: plane.by_logical_id(ETCD).get(plane.etcd_ids[1], {}).get("ID") not in (None, b["ID"]),
                   240, "the still-stopped member replaced", interval=0.5)
    plane.kill(b, signal.SIGCONT)
    plane.kill(b)
    settled(plane)


def test_down_removes_every_replica_and_member_and_a_second_down_changes_nothing(plane: Plane) -> None:
    settled(plane)
    report = plane.cp.down(purge=True)
    assert report["changed"] and set(report["freed"]) == {ETCD, MANAGERS} and len(report["destroyed"]) == 6, report
    assert plane.members(ETCD) == [] and plane.members(MANAGERS) == []
    local.wait_for(lambda: plane.etcd_healthy() == 0 and plane.cp.status() is None, 30, "nothing answering")
    assert not (plane.d.home / "etcd").exists() and not (plane.d.home / "replicas").exists()
    again = plane.cp.down(purge=True)
    assert not again["changed"], again
