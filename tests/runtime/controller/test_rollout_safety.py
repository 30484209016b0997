"""A rollout whose new version or new probe is broken never takes the serving instances (issue 12, item 1).

Real processes: the process plugin running the webapp, the vanilla flavor probing it over
HTTP, the manager daemon. A background thread asks every instance the plugin describes for
``GET /`` throughout, and the tests assert on what it saw: the number of instances that
answered never dropped below ``size - MaxUnavailable`` (3 - 0 here), and the instances that
served before the commit are still the ones serving while the new version is broken.
"""

from __future__ import annotations

import copy
import signal
import sys
from typing import Any

from tests.runtime.controller.harness import Stack
from tests.runtime.serving import Answering

SIZE = 3
ROLLOUT = {"MaxSurge": 1, "MaxUnavailable": 0, "ProgressDeadline": "8s"}


def healthy_group(stack: Stack) -> tuple[dict[str, Any], set[str]]:
    good = stack.spec(size=SIZE, message="v1", **ROLLOUT)
    stack.commit(good)
    desc = stack.wait_converged(SIZE, message="v1")
    return good, {i["ID"] for i in desc["Instances"]}


def with_probe(spec: dict[str, Any], url: str) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out["Properties"]["Flavor"]["Properties"]["Health"]["HTTP"] = url
    return out


def with_program(spec: dict[str, Any], code: str, stack: Stack) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    out["Properties"]["Instance"]["Properties"]["Command"] = [sys.executable, "-c", code, stack.marker]
    return out


def stuck(desc: dict[str, Any]) -> bool:
    status = desc.get("Status") or {}
    return status.get("Condition") == "Degraded" and "rollout stuck" in status.get("Reason", "")


def serving_ids(stack: Stack) -> set[str]:
    return {d["ID"] for d in stack.instances() if stack.answer(d) == "v1"}


def test_a_new_probe_that_answers_404_never_takes_a_serving_instance(stack):
    good, old = healthy_group(stack)
    answers = Answering(stack.instances)
    answers.start()
    try:
        stack.commit(with_probe(good, "http://{{address}}/nosuch"))
        desc = stack.wait(stuck, timeout=90, what="the rollout reported stuck")
        assert "3 instances of the previous spec keep serving" in desc["Status"]["Reason"]
        assert serving_ids(stack) >= old, "the instances serving before the commit still serve"
        kinds = [(e["Kind"], e["Instance"]) for e in desc["Status"]["Events"]]
        assert not [k for k in kinds if k[0] == "destroyed" and k[1] in old], kinds
        # Rolled back: the old instances are current again, the broken new one goes.
        stack.commit(good)
        after = {i["ID"] for i in stack.wait_converged(SIZE, message="v1", timeout=60)["Instances"]}
        assert after == old
    finally:
        samples = answers.stop()
    assert len(samples) > 20, "the sampler must have watched the whole rollout"
    assert min(samples) >= SIZE, f"instances answering dropped to {min(samples)} during the rollout"


def test_a_new_program_that_never_serves_stalls_behind_the_old_instances(stack):
    good, old = healthy_group(stack)
    answers = Answering(stack.instances)
    answers.start()
    try:
        stack.commit(with_program(good, "import time; time.sleep(3600)", stack))
        stack.wait(stuck, timeout=90, what="the rollout reported stuck")
        assert serving_ids(stack) >= old
        # Fixed: a working v2 rolls out within the same bounds.
        stack.commit(stack.spec(size=SIZE, message="v2", **ROLLOUT))
        stack.wait_converged(SIZE, message="v2", timeout=90)
    finally:
        samples = answers.stop()
    assert len(samples) > 20
    assert min(samples) >= SIZE, f"instances answering dropped to {min(samples)} during the rollout"
    assert stack.live_processes() == SIZE


def test_a_crash_looping_new_version_backs_off_and_the_old_instances_keep_serving(stack):
    good, old = healthy_group(stack)
    answers = Answering(stack.instances)
    answers.start()
    try:
        stack.commit(with_program(good, "import time; time.sleep(0.5); raise SystemExit(3)", stack))
        desc = stack.wait(lambda d: (d.get("Status") or {}).get("Condition") == "Degraded"
                          and "exited" in (d["Status"].get("Reason") or "") + (d["Status"].get("LastError") or ""),
                          timeout=60, what="the crash loop reported")
        stack.wait(stuck, timeout=90, what="the rollout reported stuck")
        assert serving_ids(stack) >= old
        desc = stack.describe()
        started = [e for e in desc["Status"]["Events"] if e["Kind"] == "provisioned"]
        assert len(started) < 10, f"crash loop without backoff: {len(started)} starts in the recent events"
    finally:
        samples = answers.stop()
    assert len(samples) > 20
    assert min(samples) >= SIZE, f"instances answering dropped to {min(samples)} during the rollout"


def test_a_controller_restarted_while_a_rollout_is_stuck_keeps_the_old_instances(stack):
    good, old = healthy_group(stack)
    answers = Answering(stack.instances)
    answers.start()
    try:
        stack.commit(with_probe(good, "http://{{address}}/nosuch"))
        stack.wait(lambda d: d.get("Status", {}).get("Condition") == "Degraded", timeout=60,
                   what="the broken probe noticed")
        # The new leader knows only the stored spec: it has never seen the probe the old instances were made with.
        stack.d.kill("group", signal.SIGKILL)
        stack.start_manager()
        stack.wait(stuck, timeout=90, what="the restarted controller reported the rollout stuck")
        assert serving_ids(stack) >= old
        unjudged = [i for i in stack.describe()["Status"]["Instances"] if i["ID"] in old]
        assert {i["Verdict"] for i in unjudged} == {"unjudged"}, unjudged
    finally:
        samples = answers.stop()
    assert len(samples) > 20
    assert min(samples) >= SIZE, f"instances answering dropped to {min(samples)} during the rollout"
