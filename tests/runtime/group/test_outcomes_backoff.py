"""A cattle slot's backoff ends when a member made since its last failure proves itself, not because
members that were serving before keep passing their checks (every cattle member shares one slot)."""

from __future__ import annotations

from infrakit_runtime.group.plan import outcomes
from infrakit_runtime.group.plan.memory import CATTLE_SLOT, START, Memory
from tests.runtime.group.world import member, ready, spec

FAILED_AT = 1000.0


def test_members_serving_before_a_failure_do_not_end_the_backoff_of_their_replacements():
    s = spec(3, health={"GracePeriod": "30s"})
    old = [member("old-1", s.config_hash), member("old-2", s.config_hash)]
    records = {d.id: ready(first_seen=0.0, checks=50) for d in old}
    memory = Memory().failed(CATTLE_SLOT, FAILED_AT, "instance new-1 never passed its health check", kind=START)
    after = outcomes.after_checks(memory, spec=s, members=old, before=records, after=records, now=FAILED_AT + 0.5)
    assert after.backing_off(CATTLE_SLOT, FAILED_AT + 0.5)
    assert after.get(CATTLE_SLOT) == memory.get(CATTLE_SLOT)


def test_a_member_made_since_the_failure_that_proves_itself_ends_the_backoff():
    s = spec(3, health={"GracePeriod": "30s"})
    new = member("new-2", s.config_hash)
    memory = Memory().failed(CATTLE_SLOT, FAILED_AT, "instance new-1 never passed its health check", kind=START)
    settled = {new.id: ready(first_seen=FAILED_AT + 2, checks=3)}
    after = outcomes.after_checks(memory, spec=s, members=[new], before={}, after=settled, now=FAILED_AT + 40)
    assert after.get(CATTLE_SLOT) is None
