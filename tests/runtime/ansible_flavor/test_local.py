"""The ansible flavor with the local connection, through the real controller: process instances are
healthy only once the playbook has written the configuration they serve; each run's result is in
the group's events and ``describe``; its log is kept by instance; the instance is tagged, so a
restarted flavor daemon does not run the playbook again; a scale-down runs the drain playbook, and
a drain that keeps failing is retried, then reported."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.runtime.ansible_flavor.conftest import SECRET, TAG_CONFIGURED, World, wait_for


def test_instances_are_healthy_only_once_configured_and_a_restarted_flavor_does_not_run_again(world: World):
    world.commit(world.spec(size=2, message="v1", retries=1))
    seen_healthy: dict[str, str | None] = {}

    def converged():
        desc = world.describe()
        for row in (desc.get("Status") or {}).get("Instances") or []:
            if row["Health"] == "healthy" and row["ID"] not in seen_healthy:
                # Healthy in the controller's eyes: the playbook has run, so the instance serves its configuration.
                seen_healthy[row["ID"]] = world.served(next(i for i in desc["Instances"] if i["ID"] == row["ID"]))
        return desc if desc.get("Converged") and len(desc["Instances"]) == 2 else None

    desc = wait_for(converged, 120, "web converged at 2")
    members = {i["ID"]: i for i in desc["Instances"]}
    assert seen_healthy == dict.fromkeys(members, "v1")
    assert sorted(i for i, _ in world.runs()) == sorted(members)  # one run each
    # Configured for the config hash it carries, on the instance itself.
    for d in world.instances():
        assert d["Tags"][TAG_CONFIGURED] == d["Tags"]["infrakit.config.hash"]

    # Each run's result: in describe (the reason of each member) and in the group's events.
    rows = world.rows()
    for iid in members:
        assert "playbook" in rows[iid]["Reason"] and "succeeded" in rows[iid]["Reason"], rows[iid]
        assert "ok=" in rows[iid]["Reason"] and "changed=" in rows[iid]["Reason"]
    healthy_events = {e["Instance"]: e["Reason"] for e in world.events(kind="instance_healthy")}
    assert set(healthy_events) == set(members)
    assert all("succeeded" in r and "changed=" in r for r in healthy_events.values()), healthy_events
    # The run's log, by instance.
    for iid in members:
        log = Path(rows[iid]["Reason"].rsplit("(log: ", 1)[1].rstrip(")"))
        assert log.parent.name == iid and "PLAY RECAP" in log.read_text()

    # A restarted flavor daemon finds the tag and runs nothing, while the group stays healthy.
    world.d.kill("ansible", signal.SIGKILL)
    world.d.start("ansible")
    passes = world.describe()
    wait_for(lambda: all(r["Reason"].startswith("configured for") for r in world.rows().values()), 60,
             "the restarted flavor to judge the members from their tag")
    assert world.describe()["Converged"], passes
    assert len(world.runs()) == 2

    # Scale down: the member that goes is drained by the drain playbook before it is destroyed.
    world.call("Group.SetSize", {"ID": "web", "Size": 1})
    wait_for(lambda: len(world.instances()) == 1, 120, "web scaled down to 1")
    gone = set(members) - {d["ID"] for d in world.instances()}
    assert world.drained() == sorted(gone)

    # A drain that fails is retried, then reported (naming the task), and the instance still goes.
    world.drain_fail_flag.touch()
    (last,) = (d["ID"] for d in world.instances())
    world.call("Group.SetSize", {"ID": "web", "Size": 0})
    wait_for(lambda: not world.instances(), 120, "web scaled down to 0")
    (failed,) = world.events(kind="drain_failed")
    assert failed["Instance"] == last and "failed after 2 attempt(s)" in failed["Reason"], failed
    assert "the load balancer would not let" in failed["Reason"] and "Refuse while the test says so" in failed["Reason"]
    drains = sorted(p.name for p in (world.d.home / "ansible" / "ansible" / "runs" / last).glob("*-drain-*.log"))
    assert len(drains) == 2, drains

    assert SECRET not in world.everything_an_operator_sees()
