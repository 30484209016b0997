"""A playbook that fails, through the real controller: the instance is UNHEALTHY with the failing
task's name and message, replaced under the group's thresholds with backoff; when every member
fails the max-unhealthy brake holds (nothing is destroyed on the playbook's word); a fixed spec
committed then recovers the group."""

from __future__ import annotations

import time

from tests.runtime.ansible_flavor.conftest import SECRET, World, wait_for

TASK = "Refuse while the test says so"
MESSAGE = "the package mirror is down"


def condition(world: World) -> tuple[str, str]:
    status = world.describe().get("Status") or {}
    return status.get("Condition", ""), status.get("Reason", "")


def test_a_failing_playbook_gets_its_instance_replaced_with_backoff_and_the_brake_holds_when_all_fail(world: World):
    world.commit(world.spec(size=3, grace="4s", unhealthy_threshold=2, MaxSurge=3))
    first = {i["ID"] for i in world.wait_converged(3, timeout=120)["Instances"]}

    # The mirror goes down; one member is lost and its replacements cannot be configured.
    world.fail_flag.touch()
    lost = sorted(first)[0]
    world.call("Group.DestroyInstances", {"ID": "web", "Instances": [lost]})
    failed = wait_for(lambda: [e for e in world.events(kind="destroyed") if TASK in e["Reason"]], 120,
                      "a replacement destroyed for its failing playbook")
    reason = failed[0]["Reason"]
    assert "unhealthy for 2 consecutive checks" in reason and MESSAGE in reason and "failed=1" in reason, reason
    # Its slot backs off (a start failure, counted): the group is Degraded and says why, in the playbook's words.
    def degraded_by_the_playbook():
        state, why = condition(world)
        return state == "Degraded" and MESSAGE in why and ("backing off after" in why or "keep failing to start" in why)

    wait_for(degraded_by_the_playbook, 120, "the group to say that creating instances backs off, and why",
             interval=0.05)
    unhealthy = [e for e in world.events(kind="instance_unhealthy") if TASK in e["Reason"]]
    assert all(e["Reason"].startswith("playbook ") for e in unhealthy)
    # The members configured before the mirror went down keep serving throughout.
    assert first - {lost} <= {d["ID"] for d in world.instances()}

    # Now every member fails: the ones left are lost too, and their replacements cannot be configured either.
    world.call("Group.DestroyInstances", {"ID": "web", "Instances": sorted(first - {lost})})

    def all_failing():
        rows = world.rows()
        failing = [r for r in rows.values() if r["Verdict"] == "failed" and TASK in r.get("Reason", "")]
        return len(rows) == 3 and len(failing) == 3 and "max-unhealthy brake" in condition(world)[1]

    wait_for(all_failing, 180, "three failing members held by the brake")
    held = {d["ID"] for d in world.instances()}
    destroyed = len(world.events(kind="destroyed"))
    deadline = time.monotonic() + 8  # sixteen passes at the test's 0.5 s poll interval
    while time.monotonic() < deadline:
        assert {d["ID"] for d in world.instances()} == held
        time.sleep(0.5)
    assert len(world.events(kind="destroyed")) == destroyed
    assert world.events(kind="brake_engaged")

    # The mirror is back and a fixed spec is committed: a rollout replaces the failed members.
    world.fail_flag.unlink()
    world.commit(world.spec(size=3, grace="4s", unhealthy_threshold=2, message="v2", MaxSurge=3))
    world.wait_converged(3, message="v2", timeout=180)
    assert SECRET not in world.everything_an_operator_sees()
