"""Health-driven replacement: grace period, thresholds, the max-unhealthy brake, backoff, deadlines."""

from __future__ import annotations

import pytest

from infrakit_runtime.group.plan.health import HealthRecord, Verdict, verdict
from infrakit_runtime.group.plan.memory import CATTLE_SLOT, Memory, backoff_delay
from infrakit_runtime.group.plan.plan import CAUSE_UNHEALTHY, Create, Destroy, plan_group
from infrakit_runtime.spi import flavor
from tests.runtime.group import world
from tests.runtime.group.world import failing, member, ready

NOW = 1000.0


def plan(spec, members, health=None, memory=None, now=NOW):
    return plan_group(spec=spec, observed=members, health=health or {}, memory=memory or Memory(), now=now)


def group_of(spec, n=5):
    return [member(f"i{k}", spec.config_hash) for k in range(n)]


def test_health_record_counts_consecutive_checks():
    r = HealthRecord(first_seen=0)
    r = r.checked(flavor.Health.UNHEALTHY).checked(flavor.Health.UNHEALTHY)
    assert (r.consecutive_unhealthy, r.consecutive_healthy) == (2, 0)
    r = r.checked(flavor.Health.HEALTHY)
    assert (r.consecutive_unhealthy, r.consecutive_healthy, r.last) == (0, 1, flavor.Health.HEALTHY)
    r = r.checked(flavor.Health.UNKNOWN)
    assert (r.consecutive_unhealthy, r.consecutive_healthy, r.last) == (0, 0, flavor.Health.UNKNOWN)


@pytest.mark.parametrize(
    ("record", "now", "expected"),
    [
        (None, NOW, Verdict.PENDING),
        (HealthRecord(first_seen=NOW - 10), NOW, Verdict.PENDING),
        (HealthRecord(first_seen=NOW - 31), NOW, Verdict.SUSPECT),
        (failing(NOW - 10), NOW, Verdict.PENDING),          # within grace: never condemned
        (failing(NOW - 31, checks=2), NOW, Verdict.SUSPECT),  # below the threshold
        (failing(NOW - 31, checks=3), NOW, Verdict.FAILED),
        (ready(NOW - 1), NOW, Verdict.READY),
    ],
)
def test_an_instance_is_condemned_only_after_grace_and_threshold(record, now, expected):
    assert verdict(record, world.spec().health, now) is expected


def test_healthy_threshold_delays_readiness():
    policy = world.spec(health={"HealthyThreshold": 2}).health
    assert verdict(ready(NOW, checks=1), policy, NOW) is Verdict.PENDING
    assert verdict(ready(NOW, checks=2), policy, NOW) is Verdict.READY


def test_a_failed_instance_is_destroyed_without_drain_and_replaced():
    spec = world.spec(5)
    health = {f"i{k}": ready() for k in range(5)} | {"i2": failing()}
    p = plan(spec, group_of(spec), health)
    assert p.actions == (Destroy("i2", "unhealthy for 3 consecutive checks", drain=False, cause=CAUSE_UNHEALTHY),
                         Create(None, "increasing the group to 5 instances"))
    assert p.counts.unhealthy == 1 and p.condition == "Progressing"


def test_an_unhealthy_instance_within_grace_is_left_alone():
    spec = world.spec(5)
    health = {f"i{k}": ready() for k in range(5)} | {"i2": failing(NOW - 5)}
    assert plan(spec, group_of(spec), health).is_noop


def test_max_unhealthy_brake_stops_replacement_and_reports_degraded():
    spec = world.spec(5)  # 40% of 5: at most 2 replaced at once
    health = {f"i{k}": (failing() if k < 3 else ready()) for k in range(5)}
    p = plan(spec, group_of(spec), health)
    assert p.is_noop and not p.converged and p.condition == "Degraded"
    assert p.braked and p.status()["Braked"]
    assert p.reason == ("max-unhealthy brake: 3 of 5 instances are unhealthy or not passing their health checks, "
                        "more than Health.MaxUnhealthy (40%) allows; no instance is destroyed on the word of a health "
                        "check until fewer are")


def test_at_the_max_unhealthy_limit_replacement_goes_on():
    spec = world.spec(5)
    health = {f"i{k}": (failing() if k < 2 else ready()) for k in range(5)}
    p = plan(spec, group_of(spec), health)
    assert sorted(a.instance_id for a in p.actions if isinstance(a, Destroy)) == ["i0", "i1"]
    assert not p.braked


def test_the_brake_does_not_stop_a_scale_down():
    spec = world.spec(2)
    health = {f"i{k}": (failing() if k < 3 else ready()) for k in range(5)}
    p = plan(spec, group_of(spec), health)
    assert sorted(a.instance_id for a in p.actions) == ["i0", "i1", "i2"]
    assert all(a.cause == "scale_down" for a in p.actions)


def test_backoff_is_deterministic_capped_and_jittered():
    assert backoff_delay("*", 1) == backoff_delay("*", 1)
    assert 0.5 <= backoff_delay("*", 1) < 1.0
    assert 2.0 <= backoff_delay("*", 3) < 4.0
    assert 150.0 <= backoff_delay("*", 40) < 300.0
    assert len({backoff_delay(f"slot{k}", 5) for k in range(20)}) == 20


def test_memory_records_and_forgets_failures():
    m = Memory().failed(CATTLE_SLOT, 10.0, "quota").failed(CATTLE_SLOT, 11.0, "quota again")
    failure = m.get(CATTLE_SLOT)
    assert failure.count == 2 and failure.error == "quota again" and m.last_error() == "quota again"
    assert m.backing_off(CATTLE_SLOT, 11.0) and not m.backing_off(CATTLE_SLOT, failure.retry_at)
    assert m.succeeded(CATTLE_SLOT) == Memory() and Memory().succeeded("x") == Memory()


def test_creates_are_held_while_their_slot_backs_off_and_the_plan_says_why():
    spec = world.spec(3)
    memory = Memory().failed(CATTLE_SLOT, NOW - 0.1, "InstanceLimitExceeded")
    p = plan(spec, [], memory=memory)
    assert p.is_noop and p.condition == "Degraded"
    assert p.reason.startswith("creating instances is backing off after 1 failures")
    assert p.reason.endswith(": InstanceLimitExceeded")
    later = plan(spec, [], memory=memory, now=NOW + 10)
    # The retry is due: creates go ahead, and the group stays Degraded with the error until one works.
    assert len(later.actions) == 3 and later.condition == "Degraded"
    assert later.reason == "provisioning keeps failing (1 consecutive failures; retrying now): InstanceLimitExceeded"


def test_no_progress_past_the_deadline_is_degraded():
    spec = world.spec(3, init="v2", updating={"ProgressDeadline": "60s"})
    members = [member(i, world.spec(3).config_hash) for i in "abc"] + [member("new", spec.config_hash)]
    health = {**{i: ready() for i in "abc"}, "new": HealthRecord(first_seen=0)}
    stuck = plan(spec, members, health, memory=Memory().progressed(NOW - 61))
    assert stuck.condition == "Degraded" and stuck.reason == (
        "rollout stuck: no progress for 61s (Updating.ProgressDeadline is 60s); 0 of 3 instances run the new spec "
        "and pass its health check, 3 instances of the previous spec keep serving")
    bigger = world.spec(5, updating={"ProgressDeadline": "60s"})
    scaling = plan(bigger, [member(i, bigger.config_hash) for i in "abc"], {i: ready() for i in "abc"},
                   memory=Memory().failed("*", NOW - 70, "quota").progressed(NOW - 61))
    assert len(scaling.actions) == 2 and scaling.condition == "Degraded"
    assert scaling.reason == "no progress for 61s (Updating.ProgressDeadline is 60s); last failure: quota"
    assert plan(spec, members, health, memory=Memory().progressed(NOW - 59)).condition == "Progressing"
