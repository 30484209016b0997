"""CommitGroup's Details text is InfraKit's (checked against the wire recordings)."""

from __future__ import annotations

import json

from infrakit_runtime.group.plan.spec import parse_spec
from infrakit_runtime.group.plan.summary import describe_commit
from infrakit_runtime.spi import instance
from tests.runtime.conftest import WIRE
from tests.runtime.group import world
from tests.runtime.group.world import member


def recorded(name: str) -> tuple[dict, str]:
    body = json.loads((WIRE / name).read_text())
    return body["request"]["body"]["params"]["Spec"], body["response"]["body"]["result"]["Details"]


def instances_of(name: str) -> list[instance.Description]:
    body = json.loads((WIRE / name).read_text())["response"]["body"]
    return [instance.Description.from_wire(i) for i in body["result"]["Description"]["Instances"]]


def test_a_new_group_is_managing_n_instances():
    spec, details = recorded("group-commit.json")
    assert describe_commit(None, parse_spec(spec), []) == details == "Managing 3 instances"
    spec, details = recorded("group-commit-pretend.json")
    assert describe_commit(None, parse_spec(spec), []) == details


def test_an_init_change_is_a_rolling_update_of_every_outdated_member():
    spec, details = recorded("group-commit-update.json")
    before = parse_spec(recorded("group-commit.json")[0])
    assert describe_commit(before, parse_spec(spec), instances_of("group-describe.json")) == details
    spec, details = recorded("group-commit-update-pretend.json")
    assert describe_commit(before, parse_spec(spec), instances_of("group-describe.json")) == details


def test_recommitting_mid_update_still_describes_the_update():
    spec, details = recorded("group-commit-same.json")
    new = parse_spec(spec)
    # Recorded (id 32) right after the update commit (id 31), when all three members still
    # had the old hash; group-describe-updating.json (id 33) is later, with one already gone.
    assert describe_commit(new, new, instances_of("group-describe.json")) == details
    assert describe_commit(new, new, instances_of("group-describe-updating.json")) == (
        "Performing a rolling update on 2 instances")


def test_recommitting_a_converged_group_is_noop():
    new = parse_spec(recorded("group-commit-update.json")[0])
    assert describe_commit(new, new, instances_of("group-describe-after-update.json")) == "Noop"


def test_size_changes_use_infrakit_wording():
    old = world.spec(3)
    members = [member(i, old.config_hash) for i in "abc"]
    assert describe_commit(old, world.spec(5), members) == "Adding 2 instances to increase the group size to 5"
    assert describe_commit(old, world.spec(1), members) == "Terminating 2 instances to reduce the group size to 1"
    assert describe_commit(old, world.spec(8, init="v2"), members) == (
        "Performing a rolling update on 3 instances, then adding 5 instances to increase the group size to 8")
    assert describe_commit(old, world.spec(2, init="v2"), members) == (
        "Terminating 1 instances to reduce the group size to 2,  then performing a rolling update on 2 instances")


def test_a_new_hash_with_nothing_to_roll_adjusts_the_configuration():
    assert describe_commit(world.spec(0), world.spec(0, init="v2"), []) == (
        "Adjusting the instance configuration, no restarts necessary")


def test_bootstrap_members_are_not_counted_as_rolled():
    new = world.spec(2)
    members = [member("a", new.config_hash), member("b", instance.BOOTSTRAP_CONFIG_HASH)]
    assert describe_commit(new, new, members) == "Noop"
