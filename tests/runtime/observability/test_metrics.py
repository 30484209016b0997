"""``GET /metrics`` on a real manager: gauges follow the group, counters follow what the controller did."""

from __future__ import annotations

import os
import signal
import time

from tests.runtime.observability.conftest import value


def wait_for(predicate, timeout: float = 30.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_metrics_follow_a_scale_up_and_a_killed_instance(stack):
    stack.commit(stack.spec(size=2))
    stack.wait_converged(2)
    m = stack.scrape()
    assert value(m, "infrakit_manager_leader") == 1
    assert value(m, "infrakit_manager_leadership_changes_total") == 1
    # One leader runs every group: it owns each, and says it does not share them.
    assert value(m, "infrakit_group_owned", group="web") == 1
    assert m[("infrakit_manager_sharded", frozenset())] == 0
    assert ("infrakit_manager_members", frozenset()) not in m
    assert value(m, "infrakit_group_desired_instances", group="web") == 2
    assert value(m, "infrakit_group_poll_interval_seconds", group="web") == 0.5  # the stack's POLL
    assert value(m, "infrakit_group_converged", group="web") == 1
    assert value(m, "infrakit_group_condition", group="web", condition="Converged") == 1
    assert value(m, "infrakit_instances_provisioned_total", group="web") == 2
    assert value(m, "infrakit_reconcile_duration_seconds_count", group="web") >= 1
    assert value(m, "infrakit_rpc_duration_seconds_count", plugin="process", method="Instance.DescribeInstances",
                 outcome="ok") >= 1

    # Scale up: the desired gauge moves at once, the group is not converged until the new ones are healthy.
    stack.call("Group.SetSize", {"ID": "web", "Size": 4})
    m = stack.scrape()
    assert value(m, "infrakit_group_desired_instances", group="web") == 4
    stack.wait_converged(4)
    m = wait_for(lambda: (s := stack.scrape()) and value(s, "infrakit_group_healthy_instances", group="web") == 4 and s,
                 what="4 healthy in the gauges")
    assert value(m, "infrakit_group_running_instances", group="web") == 4
    assert value(m, "infrakit_group_pending_instances", group="web") == 0
    assert value(m, "infrakit_group_outdated_instances", group="web") == 0
    assert value(m, "infrakit_instances_provisioned_total", group="web") == 4
    assert value(m, "infrakit_instances_lost_total", group="web") == 0

    # A failure: one instance killed is counted lost and replaced; the gauges come back to 4 healthy.
    victim = stack.describe()["Instances"][0]
    os.kill(victim["Properties"]["PID"], signal.SIGKILL)
    stack.wait(lambda d: d.get("Converged") and len(d["Instances"]) == 4
               and victim["ID"] not in {i["ID"] for i in d["Instances"]}, what="the killed instance replaced")
    m = wait_for(lambda: (s := stack.scrape()) and value(s, "infrakit_group_healthy_instances", group="web") == 4 and s,
                 what="4 healthy again in the gauges")
    assert value(m, "infrakit_instances_lost_total", group="web") == 1
    assert value(m, "infrakit_instances_provisioned_total", group="web") == 5
    assert value(m, "infrakit_events_total", kind="instance_lost") == 1
    assert value(m, "infrakit_group_converged", group="web") == 1

    # Scale down: destroys are counted by why.
    stack.call("Group.SetSize", {"ID": "web", "Size": 3})
    stack.wait_converged(3)
    m = stack.scrape()
    assert value(m, "infrakit_instances_destroyed_total", group="web", reason="scale_down") == 1
    assert value(m, "infrakit_group_desired_instances", group="web") == 3

