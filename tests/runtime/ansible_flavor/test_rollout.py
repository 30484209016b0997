"""A rollout gated by the playbook, through the real controller: a new version whose playbook fails
stalls with the old members serving and says why; once the playbook can succeed the rollout
completes. A thread asks every instance the process plugin describes for ``GET /`` throughout:
the number that answer (configured and serving) never drops below ``size - MaxUnavailable``."""

from __future__ import annotations

from tests.runtime.ansible_flavor.conftest import World, wait_for
from tests.runtime.serving import Answering

SIZE = 2
ROLLOUT = {"MaxSurge": 1, "MaxUnavailable": 0, "ProgressDeadline": "6s"}
MESSAGE = "the package mirror is down"


def test_a_rollout_whose_playbook_fails_stalls_with_the_old_members_serving_and_never_drops_below_size(world: World):
    world.commit(world.spec(size=SIZE, message="v1", grace="4s", **ROLLOUT))
    old = {i["ID"] for i in world.wait_converged(SIZE, message="v1", timeout=120)["Instances"]}
    serving = Answering(world.instances)
    serving.start()
    try:
        world.fail_flag.touch()
        world.commit(world.spec(size=SIZE, message="v2", grace="4s", **ROLLOUT))

        def stalled_and_says_why():
            status = world.describe().get("Status") or {}
            return status.get("Condition") == "Degraded" and MESSAGE in status.get("Reason", "")

        wait_for(stalled_and_says_why, 120, "the rollout to stall, saying that the playbook fails", interval=0.1)
        # The old members are still there, serving the old configuration.
        by_id = {d["ID"]: d for d in world.instances()}
        assert old <= set(by_id)
        assert {world.served(by_id[i]) for i in old} == {"v1"}

        # The mirror is back: the next new member is configured, and the rollout completes.
        world.fail_flag.unlink()
        desc = world.wait_converged(SIZE, message="v2", timeout=180)
        assert not old & {i["ID"] for i in desc["Instances"]}
    finally:
        samples = serving.stop()
    assert samples and min(samples) >= SIZE, f"serving members dropped to {min(samples)} (samples: {samples[:50]}...)"
