"""The plan is the one answer to "converged?", to the group's condition, and to when to look again."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit_runtime.group.plan.health import HealthRecord, Verdict
from infrakit_runtime.group.plan.memory import CATTLE_SLOT, START, Memory
from infrakit_runtime.group.plan.plan import judge_members, plan_group
from infrakit_runtime.spi import flavor
from tests.runtime.group import world
from tests.runtime.group.world import member, ready, unknown

NOW = 1000.0


def plan(spec, members, health=None, memory=None, now=NOW):
    return plan_group(spec=spec, observed=members, health=health or {}, memory=memory or Memory(), now=now)


def test_a_group_whose_members_are_still_starting_is_not_converged_and_says_it_waits_for_their_checks():
    spec = world.spec(2)
    members = [member(f"i{n}", spec.config_hash) for n in range(2)]
    p = plan(spec, members, {"i0": ready(), "i1": unknown(NOW - 1)})
    assert p.is_noop and p.shaped and not p.converged
    assert (p.condition, p.reason) == ("Progressing", "waiting for new instances to pass their health checks")
    assert p.summary == "Noop"


def test_a_slot_whose_last_provision_failed_keeps_the_group_degraded_with_the_error_when_its_retry_is_due():
    memory = Memory().failed(CATTLE_SLOT, 0.0, "ami-123 not found")
    due = plan(world.spec(1), [], memory=memory)  # the backoff expired: a create is planned
    assert due.actions and not due.converged
    assert (due.condition, due.reason) == (
        "Degraded", "provisioning keeps failing (1 consecutive failures; retrying now): ami-123 not found")
    held = plan(world.spec(1), [], memory=memory, now=0.1)
    assert held.condition == "Degraded" and "ami-123 not found" in held.reason and "backing off" in held.reason
    assert plan(world.spec(1), [], now=0.0).condition == "Progressing"


def test_a_start_failure_is_named_as_such_while_its_retry_is_due():
    memory = Memory().failed(CATTLE_SLOT, 10.0, "instance i-4 exited 0.7s after it started, before it passed its "
                             "health check", kind=START)
    p = plan(world.spec(1), [], memory=memory)
    assert (p.condition, p.reason) == (
        "Degraded", "new instances keep failing to start (1 consecutive failures; retrying now): instance i-4 exited "
                    "0.7s after it started, before it passed its health check")


def test_a_braked_group_whose_members_never_passed_a_check_says_so_rather_than_waiting():
    spec = world.spec(3, health={"GracePeriod": "10s", "MaxUnhealthy": 1})
    members = [member(f"i{n}", spec.config_hash) for n in range(3)]
    p = plan(spec, members, {f"i{n}": unknown(0.0) for n in range(3)})
    assert p.braked and p.shaped and not p.converged and p.condition == "Degraded"
    assert p.reason.startswith("max-unhealthy brake: 3 of 3 instances are unhealthy or not passing")


def test_a_plan_that_acts_asks_to_be_looked_at_again_at_once_and_a_converged_one_waits_for_the_poll():
    spec = world.spec(2)
    assert plan(spec, []).requeue_after == 0.0
    members = [member(f"i{n}", spec.config_hash) for n in range(2)]
    assert plan(spec, members, {"i0": ready(), "i1": ready()}).requeue_after is None


def test_a_group_short_of_members_that_are_starting_is_looked_at_again_at_once():
    # Three of four up to date, one more starting: surge allows nothing more, the group is moving.
    spec = world.spec(3, init="v2", updating={"MaxSurge": 1, "MaxUnavailable": 0})
    old = world.spec(3).config_hash
    members = [member("o1", old), member("o2", old), member("o3", old), member("n1", spec.config_hash)]
    p = plan(spec, members, {"o1": ready(), "o2": ready(), "o3": ready(), "n1": unknown(NOW - 1)})
    assert p.is_noop and p.counts.pending == 1 and p.requeue_after == 0.0


_RECORDS = st.sampled_from([
    None, ready(0.0), ready(NOW - 1), unknown(NOW - 1), unknown(0.0),
    HealthRecord(first_seen=0.0, last=flavor.Health.UNHEALTHY, consecutive_unhealthy=5),
])


@settings(max_examples=300, deadline=None)
@given(size=st.integers(min_value=0, max_value=4), n=st.integers(min_value=0, max_value=6),
       outdated=st.integers(min_value=0, max_value=2), records=st.lists(_RECORDS, min_size=6, max_size=6),
       failing_slot=st.booleans())
def test_converged_means_count_config_and_health_all_match_and_nothing_else(size, n, outdated, records, failing_slot):
    spec = world.spec(size)
    old = world.spec(size, init="v0").config_hash
    members = [member(f"i{k}", old if k < outdated else spec.config_hash) for k in range(n)]
    health = {f"i{k}": r for k, r in enumerate(records[:n]) if r is not None}
    memory = Memory().failed(CATTLE_SLOT, NOW - 1, "boom") if failing_slot else Memory()
    p = plan(spec, members, health, memory)
    verdicts = judge_members(spec=spec, observed=members, health=health, now=NOW)
    everything_matches = (n == size and all(m.tags["infrakit.config.hash"] == spec.config_hash for m in members)
                          and all(v is Verdict.READY for v in verdicts.values()))
    assert p.converged == everything_matches, p
    assert (p.condition == "Converged") == p.converged, p
    assert not p.converged or (p.is_noop and p.shaped and p.reason == "" and p.requeue_after is None), p
    assert not p.actions or p.requeue_after == 0.0, p
    assert p.status()["Condition"] == p.condition
