"""Kill the controller with SIGKILL mid-rollout or mid-scale-up: on restart it finishes, no duplicates, no orphans."""

from __future__ import annotations

import signal
import time

import pytest


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def assert_exactly(stack, size: int, config_hash: str | None = None) -> None:
    world = stack.instances()
    assert len(world) == size, f"{len(world)} instances for a group of {size}"
    assert stack.live_processes() == size, "a process exists that the plugin does not describe (orphan) or vice versa"
    if config_hash:
        assert {d["Tags"]["infrakit.config.hash"] for d in world} == {config_hash}


@pytest.mark.parametrize("kill_after", [1, 2])
def test_a_controller_killed_mid_rollout_finishes_it_after_restart(stack, kill_after):
    stack.commit(stack.spec(size=4, message="v1"))
    old_hash = stack.wait_converged(4, message="v1")["Instances"][0]["Tags"]["infrakit.config.hash"]
    stack.commit(stack.spec(size=4, message="v2"))
    wait_for(lambda: sum(d["Tags"]["infrakit.config.hash"] != old_hash for d in stack.instances()) >= kill_after,
             what=f"{kill_after} new instance(s)")
    stack.d.kill("group", signal.SIGKILL)
    stack.start_manager()
    desc = stack.wait_converged(4, message="v2", timeout=90)
    assert_exactly(stack, 4, desc["Instances"][0]["Tags"]["infrakit.config.hash"])


def test_a_controller_killed_mid_scale_up_finishes_it_after_restart(stack):
    stack.commit(stack.spec(size=2))
    stack.wait_converged(2)
    stack.commit(stack.spec(size=8))
    wait_for(lambda: len(stack.instances()) >= 3, what="the scale-up to start")
    stack.d.kill("group", signal.SIGKILL)
    stack.start_manager()
    stack.wait_converged(8, timeout=90)
    assert_exactly(stack, 8)


def test_a_restarted_controller_adopts_a_converged_group_without_touching_it(stack):
    stack.commit(stack.spec(size=3))
    before = {i["ID"] for i in stack.wait_converged(3)["Instances"]}
    stack.d.kill("group", signal.SIGKILL)
    stack.start_manager()
    after = {i["ID"] for i in stack.wait_converged(3)["Instances"]}
    assert after == before
    assert_exactly(stack, 3)
