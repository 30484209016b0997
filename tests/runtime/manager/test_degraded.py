"""``DegradedGroups``: the leader's record of groups it keeps but cannot enforce, on the Memory backoff schedule."""

from __future__ import annotations

import pytest

from infrakit_runtime.group.plan.memory import backoff_delay
from infrakit_runtime.manager.degraded import BASE_DELAY, MAX_DELAY, DegradedGroups


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_degraded_group_is_retried_on_the_memory_schedule_capped_at_max_delay() -> None:
    clock = Clock()
    groups = DegradedGroups(clock=clock)
    assert groups.wait_time() is None and groups.due() == []
    for count in range(1, 12):
        groups.mark("web", "plugin far is not reachable")
        delay = backoff_delay("web", count, base=BASE_DELAY, cap=MAX_DELAY)
        assert groups.wait_time() == pytest.approx(delay) and delay <= MAX_DELAY
        assert groups.due() == []
        clock.now += delay
        assert groups.due() == ["web"] and groups.wait_time() == 0
    assert groups.summary() == [{"Group": "web", "Reason": "plugin far is not reachable", "Failures": 11,
                                 "RetryIn": 0.0}]


def test_only_news_is_reported_and_clearing_forgets_the_schedule() -> None:
    clock = Clock()
    groups = DegradedGroups(clock=clock)
    assert groups.mark("a", "one reason") is True
    assert groups.mark("a", "one reason") is False
    assert groups.mark("a", "another reason") is True
    since = groups.get("a").since  # type: ignore[union-attr]
    clock.now += 5
    groups.mark("a", "another reason")
    assert groups.get("a").since == since  # type: ignore[union-attr]
    assert groups.clear("a") is True and groups.clear("a") is False
    assert "a" not in groups and groups.memory.get("a") is None
    assert groups.mark("a", "back again") is True and groups.summary()[0]["Failures"] == 1


def test_what_a_degraded_group_reports() -> None:
    groups = DegradedGroups(clock=Clock())
    groups.mark("rt1", "the stored spec /s/groups/rt1.json is refused")
    groups.mark("far", "plugin far is not reachable", {"ID": "far", "Properties": {"Allocation": {"Size": 1}}})
    description = groups.describe("rt1")
    assert description.converged is False and description.instances == ()
    assert description.status["Condition"] == "Degraded" and "rt1.json" in description.status["Reason"]
    assert groups.inspect("rt1").to_wire() == {"ID": "rt1", "Properties": None, "Status": {
        "Condition": "Degraded", "Reason": "the stored spec /s/groups/rt1.json is refused"}}
    assert groups.inspect("far").properties == {"Allocation": {"Size": 1}}
    groups.reset()
    assert groups.ids() == [] and groups.wait_time() is None
