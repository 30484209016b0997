"""The ansible flavor inside combo, through the real controller: combo [vanilla's HTTP probe, ansible]
is healthy once both are, and the playbook's reason reaches describe and the events, named by member."""

from __future__ import annotations

import copy

from tests.runtime.ansible_flavor.conftest import TAG_CONFIGURED, World, wait_for


def test_inside_combo_the_playbook_gates_health_and_its_reason_is_shown_by_member(world: World):
    world.d.start("combo")
    spec = world.spec(size=1, message="combined")
    ansible = copy.deepcopy(spec["Properties"]["Flavor"])
    probe = ansible["Properties"].pop("Flavor")  # the wrapped vanilla probe becomes combo's first member
    spec["Properties"]["Flavor"] = {"Plugin": "combo", "Properties": {"Flavors": [probe, ansible]}}
    world.commit(spec)
    reasons: list[str] = []

    def converged():
        desc = world.describe()
        reasons.extend(r.get("Reason", "") for r in (desc.get("Status") or {}).get("Instances") or [])
        return desc if desc.get("Converged") and len(desc["Instances"]) == 1 else None

    desc = wait_for(converged, 120, "web converged at 1", interval=0.1)
    assert world.served(desc["Instances"][0]) == "combined"
    assert any("Flavors[1] (ansible): configur" in r for r in reasons), reasons
    final = world.rows()[desc["Instances"][0]["ID"]]["Reason"]
    assert final.startswith("Flavors[1] (ansible): playbook ") and "succeeded" in final, final
    assert world.instances()[0]["Tags"][TAG_CONFIGURED]
    healthy = world.events(kind="instance_healthy")
    assert healthy and "Flavors[1] (ansible): playbook " in healthy[0]["Reason"]
