"""A crash loop is named as such (issue 12, item 10).

As reported: under `infrakit up`, a group whose process Command exits at once read
"5 running, 5 pending" while every instance had exited. Members that end on their own before
they have proved themselves are CRASH failures of their slot; the status says "crash loop",
and counts as running only the instances the plugin describes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from infrakit_runtime.group.plan import outcomes
from infrakit_runtime.group.plan.health import HealthRecord
from infrakit_runtime.group.plan.memory import CRASH, START, Memory
from infrakit_runtime.group.plan.observed import Unseen
from infrakit_runtime.group.plan.plan import plan_group
from infrakit_runtime.group.plan.spec import parse_spec
from infrakit_runtime.spi import instance
from tests.runtime.test_launcher import PROBE, infrakit, serving, wait_until

SPEC = parse_spec({"ID": "crash", "Properties": {
    "Allocation": {"Size": 2}, "Instance": {"Plugin": "process", "Properties": {"Command": ["/bin/false"]}},
    "Flavor": {"Plugin": "vanilla", "Properties": {}}}})


def member(iid: str) -> instance.Description:
    return instance.Description(id=iid, tags={instance.TAG_GROUP: "crash", instance.TAG_CONFIG_HASH: SPEC.config_hash})


def test_a_member_that_exits_before_it_is_described_or_before_it_proved_itself_is_a_crash():
    vanished = outcomes.after_vanished(Memory(), spec=SPEC, description=member("p-1"), waited=30.0, now=100.0)
    assert vanished.get("*").kind == CRASH
    lost = outcomes.after_loss(Memory(), spec=SPEC, description=member("p-2"),
                               record=HealthRecord(first_seen=99.0), now=100.0)
    assert lost.get("*").kind == CRASH


def test_the_group_condition_names_a_crash_loop_while_its_retry_is_due():
    memory = Memory().failed("*", 10.0, "instance p-1 exited 0.1s after it started", kind=CRASH)
    due = memory.get("*").retry_at
    plan = plan_group(spec=SPEC, observed=[], health={}, memory=memory, now=due)
    assert plan.actions, "the retry is due: creates are planned"
    assert plan.condition == "Degraded" and plan.reason.startswith("crash loop: new instances keep exiting"), plan.reason
    assert "instance p-1 exited 0.1s after it started" in plan.reason
    # A version that runs but never passes its probe is not a crash loop.
    memory = Memory().failed("*", 10.0, "instance p-1 was unhealthy", kind=START)
    assert "crash loop" not in plan_group(spec=SPEC, observed=[], health={}, memory=memory, now=due).reason


def test_the_plan_names_a_crash_loop_while_creates_back_off():
    memory = Memory().failed("*", 10.0, "instance p-1 exited 0.1s after it started", kind=CRASH)
    plan = plan_group(spec=SPEC, observed=[], health={}, memory=memory, now=10.5)
    assert plan.condition == "Degraded" and plan.reason.startswith("crash loop: creating instances is backing off")


def test_running_counts_only_the_members_the_plugin_describes():
    """A member provisioned but not described yet is awaited (it still fills its slot), not running."""
    unseen = (Unseen(description=member("p-2"), since=99.0),)
    plan = plan_group(spec=SPEC, observed=[member("p-1")], health={}, memory=Memory(), now=100.0, unseen=unseen)
    assert plan.counts.running == 1 and plan.status()["Running"] == 1
    assert not plan.actions, "the awaited member still counts against the size: no extra create"
    assert plan_group(spec=SPEC, observed=[member("p-1"), member("p-2")], health={}, memory=Memory(),
                      now=100.0).counts.running == 2


def test_a_crash_loop_is_named_as_such_not_reported_as_running_instances(daemons):
    """A group whose Command exits at once, run as the report ran it: `infrakit up`, then `group describe`."""
    config = daemons.home / "infrakit.yml"
    config.write_text("poll_interval: 1s\nplugins: [process, vanilla, manager]\n")
    spec = daemons.home / "crash.yml"
    spec.write_text("ID: crash\nProperties:\n  Allocation: {Size: 5}\n"
                    "  Instance: {Plugin: process, Properties: {Command: ['/bin/sh', '-c', 'exit 3']}}\n"
                    "  Flavor: {Plugin: vanilla, Properties: {}}\n")
    log = open(daemons.home / "up.log", "wb")
    up = subprocess.Popen([sys.executable, "-m", "infrakit_runtime", "--config", str(config), "up", *PROBE],
                          env=daemons.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: serving(daemons, "process", "vanilla", "group"), timeout=60, what="the daemons")
        infrakit(daemons, "--config", str(config), "group", "commit", str(spec))
        seen: list[str] = []

        def named() -> bool:
            seen.append(infrakit(daemons, "--config", str(config), "group", "describe", "crash").stdout)
            return "crash loop" in seen[-1]

        try:
            wait_until(named, timeout=180, what="a crash loop in the status")
        except AssertionError as e:
            raise AssertionError(f"{e}; the last status:\n{seen[-1] if seen else ''}") from None
        text = seen[-1]
        assert "Degraded" in text, text
        assert "5 running" not in text, text
        status = daemons.client("group").call("Group.DescribeGroup", {"Name": "group", "ID": "crash"})
        running = len(daemons.client("process").call("Instance.DescribeInstances", {"Tags": {}})["Descriptions"])
        assert status["Description"]["Status"]["Running"] <= running + 1, status  # at most a start in between
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
        log.close()
