"""The group spec: strict validation listing every problem, defaults, InfraKit's round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infrakit_runtime import durations
from infrakit_runtime.group.plan.spec import GroupSpec, Scaled, parse_spec
from infrakit_runtime.spi import group
from infrakit_runtime.spi.common import ValidationError
from tests.runtime.conftest import WIRE
from tests.runtime.group import world


def problems(raw) -> list[str]:
    with pytest.raises(ValidationError) as e:
        parse_spec(raw)
    return e.value.problems


def recorded(name: str) -> dict:
    return json.loads((WIRE / name).read_text())


def test_the_recorded_commit_parses_with_every_default():
    raw = recorded("group-commit.json")["request"]["body"]["params"]["Spec"]
    spec = parse_spec(group.Spec.from_wire(raw))
    assert (spec.id, spec.size, spec.logical_ids, spec.is_pets) == ("workers", 3, None, False)
    assert spec.instance.plugin == "file" and spec.flavor.properties == {"Init": ["echo hello"], "Tags": {"tier": "web"}}
    assert spec.config_hash == "mvxacvjmbbjytlvshmkgzggqgg3zequ3"
    u, h = spec.updating, spec.health
    assert (u.duration, u.count, u.skip_before_instance_destroy) == (0.0, 0, None)
    assert (u.max_surge, u.max_unavailable, u.progress_deadline) == (Scaled(1), Scaled(0), 600.0)
    assert (h.grace_period, h.unhealthy_threshold, h.healthy_threshold, h.interval) == (30.0, 3, 1, None)
    assert h.max_unhealthy == Scaled(40, percent=True)
    assert spec.raw == raw


def test_to_wire_is_what_infrakit_inspect_groups_returns():
    raw = recorded("group-commit.json")["request"]["body"]["params"]["Spec"]
    inspected = recorded("group-inspect.json")["response"]["body"]["result"]["Groups"][0]
    assert parse_spec(raw).to_wire() == inspected
    # Same key order as Go's struct, so the bytes match too.
    assert json.dumps(parse_spec(raw).to_wire(), separators=(",", ":")) == json.dumps(inspected, separators=(",", ":"))


def test_to_wire_keeps_our_additions_and_round_trips():
    raw = world.raw_spec(updating={"MaxSurge": "25%", "MaxUnavailable": 1, "Duration": "1m"},
                         health={"GracePeriod": "10s"})
    wire = parse_spec(raw).to_wire()
    assert wire["Properties"]["Updating"] == {"Duration": "1m0s", "Count": 0, "SkipBeforeInstanceDestroy": None,
                                              "MaxSurge": "25%", "MaxUnavailable": 1}
    assert wire["Properties"]["Health"] == {"GracePeriod": "10s"}
    assert parse_spec(wire) == parse_spec(raw)


def test_pets_take_their_size_from_the_logical_ids():
    spec = world.spec(logical_ids=["a", "b"])
    assert spec.is_pets and spec.size == 2 and spec.logical_ids == ("a", "b")
    assert spec.to_wire()["Properties"]["Allocation"] == {"Size": 0, "LogicalIDs": ["a", "b"]}


def test_size_zero_is_a_group_scaled_to_nothing():
    assert world.spec(0).size == 0


def test_every_problem_is_listed_at_once_with_its_field_path():
    raw = {
        "ID": "",
        "Extra": 1,
        "Properties": {
            "Allocation": {"Size": 2, "LogicalIDs": ["a", "a", ""]},
            "Instance": {"Properties": {}},
            "Flavor": {"Plugin": 7, "Propertys": {}},
            "Updating": {"MaxSurge": "abc", "MaxUnavailable": -1, "Count": 1, "Duration": "5s",
                         "ProgressDeadline": "soon"},
            "Health": {"GracePeriod": 30, "UnhealthyThreshold": 0, "MaxUnhealthy": "140%"},
        },
    }
    assert problems(raw) == [
        'Unknown key "Extra" (known keys: ID, Properties)',
        "ID is required",
        "Properties.Allocation: Size and LogicalIDs are mutually exclusive",
        'Properties.Allocation.LogicalIDs[1]: duplicate logical ID "a"',
        'Properties.Allocation.LogicalIDs[2] must be a non-empty string, got ""',
        "Properties.Instance.Plugin is required",
        'Properties.Flavor: unknown key "Propertys" (known keys: Plugin, Properties, Options)',
        "Properties.Flavor.Plugin must be a string, got number",
        'Properties.Updating.MaxSurge: "abc" is not an integer or percentage (e.g. 1 or "25%")',
        "Properties.Updating.MaxUnavailable must not be negative, got -1",
        'Properties.Updating.ProgressDeadline: "soon" is not a duration (expected e.g. "500ms", "30s", "1m30s")',
        "Properties.Updating: Count and Duration are mutually exclusive",
        "Properties.Health.GracePeriod must be a duration string like \"30s\", got number"
        " (a bare number is ambiguous: Go reads it as nanoseconds)",
        "Properties.Health.UnhealthyThreshold must be at least 1, got 0",
        'Properties.Health.MaxUnhealthy: "140%" is more than 100%',
    ]


@pytest.mark.parametrize(
    ("properties", "problem"),
    [
        (None, "Properties is required"),
        ({"Instance": {"Plugin": "i"}, "Flavor": {"Plugin": "f"}}, "Properties.Allocation is required"),
        ({"Allocation": {}, "Instance": {"Plugin": "i"}, "Flavor": {"Plugin": "f"}},
         "Properties.Allocation: one of Size or LogicalIDs is required"),
        ({"Allocation": {"Size": -1}, "Instance": {"Plugin": "i"}, "Flavor": {"Plugin": "f"}},
         "Properties.Allocation.Size must be at least 0, got -1"),
        ({"Allocation": {"Size": "3"}, "Instance": {"Plugin": "i"}, "Flavor": {"Plugin": "f"}},
         "Properties.Allocation.Size must be an integer, got string"),
        ({"Allocation": {"LogicalIDs": "a"}, "Instance": {"Plugin": "i"}, "Flavor": {"Plugin": "f"}},
         "Properties.Allocation.LogicalIDs must be an array of strings, got string"),
        ({"Allocation": {"Size": 1}, "Instance": [], "Flavor": {"Plugin": "f"}},
         "Properties.Instance must be an object, got array"),
        ({"Allocation": {"Size": 1}, "Instance": {"Plugin": "i"}},
         "Properties.Flavor is required"),
        ({"Allocation": {"Size": 1}, "Instance": {"Plugin": "i"}, "Flavor": {"Plugin": "f"},
          "Updating": {"MaxSurge": 0, "MaxUnavailable": "0%"}},
         "Properties.Updating: MaxSurge and MaxUnavailable cannot both be 0: a rolling update could never progress"),
        ({"Allocation": {"Size": 1}, "Instance": {"Plugin": "i"}, "Flavor": {"Plugin": "f"},
          "Updating": {"ProgressDeadline": "0s"}}, "Properties.Updating.ProgressDeadline must be more than 0s"),
        ({"Allocation": {"Size": 1}, "Instance": {"Plugin": "i"}, "Flavor": {"Plugin": "f"},
          "Health": {"Interval": "0s"}}, "Properties.Health.Interval must be more than 0s"),
        ({"Allocation": {"Size": 1}, "Instance": {"Plugin": "i"}, "Flavor": {"Plugin": "f"}, "Healths": {}},
         'Properties: unknown key "Healths" (known keys: Allocation, Instance, Flavor, Updating, Health)'),
    ],
)
def test_each_invalid_field_is_named(properties, problem):
    assert problem in problems({"ID": "g", "Properties": properties})


def test_a_spec_that_is_not_an_object_is_refused():
    assert problems([1]) == ["spec must be an object, got array"]


def test_percentages_resolve_against_the_size():
    spec = world.spec(10, updating={"MaxSurge": "25%", "MaxUnavailable": "25%"}, health={"MaxUnhealthy": "40%"})
    assert (spec.max_surge(), spec.max_unavailable(), spec.max_unhealthy()) == (3, 2, 4)


def test_max_unavailable_acts_as_one_when_both_percentages_round_to_zero():
    spec = world.spec(3, updating={"MaxSurge": "0%", "MaxUnavailable": "10%"})
    assert (spec.max_surge(), spec.max_unavailable()) == (0, 1)


def test_max_unhealthy_percentage_never_rounds_below_one():
    assert world.spec(1).max_unhealthy() == 1
    assert world.spec(2).max_unhealthy() == 1
    assert world.spec(5).max_unhealthy() == 2
    assert world.spec(5, health={"MaxUnhealthy": 0}).max_unhealthy() == 0


def test_integer_strings_and_integral_floats_are_integers():
    spec = world.spec(3, updating={"MaxSurge": "2", "MaxUnavailable": 1.0})
    assert (spec.updating.max_surge, spec.updating.max_unavailable) == (Scaled(2), Scaled(1))


def test_durations_are_go_strings():
    spec = world.spec(updating={"Duration": "1m30s", "ProgressDeadline": "2h"}, health={"GracePeriod": "0s"})
    assert (spec.updating.duration, spec.updating.progress_deadline, spec.health.grace_period) == (90.0, 7200.0, 0.0)


def test_normalized_ignores_map_order_spelled_out_defaults_and_number_spelling():
    plain = parse_spec(world.raw_spec())
    spelled = world.raw_spec(
        updating={"Duration": "0s", "Count": 0, "MaxSurge": 1, "MaxUnavailable": 0, "ProgressDeadline": "10m"},
        health={"GracePeriod": "30s", "UnhealthyThreshold": 3, "HealthyThreshold": 1, "MaxUnhealthy": "40%"},
    )
    spelled["Properties"]["Flavor"]["Properties"] = {"Tags": {"tier": "web"}, "Init": ["echo hello"]}
    reordered = json.loads(json.dumps(spelled, sort_keys=True))
    assert parse_spec(reordered).normalized() == plain.normalized()
    assert parse_spec(reordered) == plain


def test_normalized_sees_real_changes():
    base = world.spec().normalized()
    assert world.spec(4).normalized() != base
    assert world.spec(init="v2").normalized() != base
    assert world.spec(updating={"MaxSurge": 2}).normalized() != base
    assert world.spec(health={"GracePeriod": "1m"}).normalized() != base


def test_logical_id_order_does_not_change_the_normalized_form():
    assert world.spec(logical_ids=["a", "b"]).normalized() == world.spec(logical_ids=["b", "a"]).normalized()


def test_with_size_resizes_and_keeps_everything_else():
    spec = world.spec(3, updating={"MaxSurge": 2})
    resized = spec.with_size(5)
    assert isinstance(resized, GroupSpec) and resized.size == 5
    assert resized.updating == spec.updating and resized.config_hash == spec.config_hash
    assert resized.raw["Properties"]["Allocation"] == {"Size": 5}
    assert spec.raw["Properties"]["Allocation"] == {"Size": 3}


def test_the_config_hash_covers_only_instance_and_flavor():
    assert world.spec(3).config_hash == world.spec(5, updating={"MaxSurge": 3}).config_hash
    assert world.spec(init="v2").config_hash != world.spec().config_hash


# --- the canonical form: the one spelling of a spec (issue 14, item 2) -------------------------


def test_canonical_spells_out_every_field_with_go_durations():
    canonical = world.spec(updating={"ProgressDeadline": "600s"}).canonical()
    props = canonical["Properties"]
    assert props["Updating"] == {"Duration": "0s", "Count": 0, "SkipBeforeInstanceDestroy": None, "MaxSurge": 1,
                                 "MaxUnavailable": 0, "ProgressDeadline": "10m0s", "Quorum": False}
    assert props["Health"] == {"GracePeriod": "30s", "UnhealthyThreshold": 3, "HealthyThreshold": 1,
                               "MaxUnhealthy": "40%", "Interval": None}
    assert props["Allocation"] == {"Size": 3, "LogicalIDs": None}
    assert world.spec(updating={"ProgressDeadline": "10m"}).canonical() == canonical


def test_canonical_keeps_options_interval_and_skip_before_instance_destroy():
    raw = world.raw_spec(updating={"SkipBeforeInstanceDestroy": "drain"}, health={"Interval": "15s"})
    raw["Properties"]["Instance"]["Options"] = {"Resolve": True}
    raw["Properties"]["Flavor"]["Options"] = {"Wait": "5s"}
    spec = parse_spec(raw)
    canonical = spec.canonical()
    assert canonical["Properties"]["Instance"]["Options"] == {"Resolve": True}
    assert canonical["Properties"]["Flavor"]["Options"] == {"Wait": "5s"}
    assert canonical["Properties"]["Updating"]["SkipBeforeInstanceDestroy"] == "drain"
    assert canonical["Properties"]["Health"]["Interval"] == "15s"
    # InspectGroups keeps Options too, and an Options change is a change, though not a rollout.
    assert spec.to_wire()["Properties"]["Instance"]["Options"] == {"Resolve": True}
    without = world.spec()
    assert without.normalized() != spec.normalized() and without.config_hash == spec.config_hash


def test_the_canonical_form_is_a_fixed_point():
    for raw in (world.raw_spec(), world.raw_spec(logical_ids=["b", "a"]),
                world.raw_spec(logical_ids=["a", "b", "c"], updating={"MaxSurge": 0, "MaxUnavailable": 1, "Quorum": True}),
                world.raw_spec(updating={"MaxSurge": "25%", "Duration": "1m30.5s"},
                               health={"GracePeriod": "0s", "Interval": "250ms", "MaxUnhealthy": 2})):
        canonical = parse_spec(raw).canonical()
        assert parse_spec(canonical).canonical() == canonical
        assert parse_spec(canonical).normalized() == parse_spec(raw).normalized()


def test_a_fractional_percentage_is_refused_naming_the_field():
    assert problems(world.raw_spec(updating={"MaxSurge": "12.5%"})) == [
        'Properties.Updating.MaxSurge: "12.5%" is not an integer or percentage (e.g. 1 or "25%")']


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-9, max_value=10 * 365 * 24 * 3600, allow_nan=False, allow_infinity=False))
def test_any_duration_reaches_a_canonical_text_that_reads_back_to_itself(seconds):
    text = durations.format_duration(seconds)
    assert "e" not in text
    again = durations.format_duration(durations.parse_duration(text))
    assert durations.format_duration(durations.parse_duration(again)) == again
    spec = world.spec(health={"GracePeriod": text})
    assert parse_spec(spec.canonical()).canonical() == spec.canonical()


def test_quorum_is_kept_by_every_form_of_the_spec():
    spec = world.spec(logical_ids=["a", "b", "c"], updating={"MaxSurge": 0, "MaxUnavailable": 1, "Quorum": True})
    assert spec.updating.quorum
    assert parse_spec(spec.canonical()).updating.quorum and parse_spec(spec.to_wire()).updating.quorum
    assert spec.normalized() != world.spec(logical_ids=["a", "b", "c"],
                                           updating={"MaxSurge": 0, "MaxUnavailable": 1}).normalized()


def test_quorum_must_be_a_boolean():
    with pytest.raises(ValidationError, match=r"Properties.Updating.Quorum must be true or false, got string"):
        world.spec(logical_ids=["a"], updating={"MaxUnavailable": 1, "Quorum": "yes"})
