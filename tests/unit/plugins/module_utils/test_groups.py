# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import pytest

from ansible_collections.infrakit.core.plugins.module_utils import groups
from ansible_collections.infrakit.core.tests.unit.plugins.fake_controller import recording

GO_STORED = recording("group-inspect")["response"]["body"]["result"]["Groups"][0]


def params(**kwargs):
    base = dict(name="workers", size=None, logical_ids=None, instance=None, flavor=None, updating=None, health=None)
    base.update(kwargs)
    return base


WORKERS = params(
    size=3,
    instance=dict(plugin="file", properties={"note": "wire-test"}),
    flavor=dict(plugin="vanilla", properties={"Init": ["echo hello"], "Tags": {"tier": "web"}}),
)


def test_module_spec_is_what_go_infrakit_was_sent_and_equals_what_it_stores_once_merged():
    built = groups.build_spec(WORKERS)
    assert built == recording("group-commit")["request"]["body"]["params"]["Spec"]
    # Go adds LogicalIDs: null and Updating {Duration: 0s, Count: 0, SkipBeforeInstanceDestroy: null};
    # the next run merges over that, so the same options are no change.
    again = groups.build_spec(WORKERS, stored=GO_STORED)
    assert groups.plainly_equal(again, GO_STORED)
    assert not groups.plainly_equal(groups.build_spec(dict(WORKERS, size=4), stored=GO_STORED), GO_STORED)
    assert not groups.plainly_equal(built, None)


def test_values_go_to_the_controller_as_given_and_a_number_of_seconds_becomes_text():
    built = groups.build_spec(dict(WORKERS, updating=dict(max_surge="12.5%", progress_deadline=600, duration="10m"),
                                   health=dict(grace_period=1.5, interval="15s", max_unhealthy="lots")))
    assert built["Properties"]["Updating"] == {"MaxSurge": "12.5%", "ProgressDeadline": "600s", "Duration": "10m"}
    assert built["Properties"]["Health"] == {"GracePeriod": "1.5s", "Interval": "15s", "MaxUnhealthy": "lots"}


def test_every_field_has_an_option():
    built = groups.build_spec(dict(
        WORKERS,
        instance=dict(plugin="file", properties={}, options={"Resolve": True}),
        flavor=dict(plugin="vanilla", properties={}, options={"Wait": "5s"}),
        updating=dict(skip_before_instance_destroy="skip", count=2, quorum=True),
        health=dict(interval="15s", healthy_threshold=2),
    ))
    props = built["Properties"]
    assert props["Instance"]["Options"] == {"Resolve": True} and props["Flavor"]["Options"] == {"Wait": "5s"}
    assert props["Updating"] == {"SkipBeforeInstanceDestroy": "skip", "Count": 2, "Quorum": True}
    assert props["Health"] == {"Interval": "15s", "HealthyThreshold": 2}
    shown = groups.spec_to_module(built)
    assert shown["instance"]["options"] == {"Resolve": True}
    assert shown["updating"] == {"count": 2, "skip_before_instance_destroy": "skip", "quorum": True}
    assert shown["health"] == {"healthy_threshold": 2, "interval": "15s"}


STORED = {"ID": "workers", "Properties": {
    "Allocation": {"Size": 3, "LogicalIDs": None},
    "Instance": {"Plugin": "file", "Properties": {"note": "wire-test"}, "Options": {"Resolve": True}},
    "Flavor": {"Plugin": "vanilla", "Properties": {"Init": ["echo hello"]}},
    "Updating": {"MaxSurge": "25%", "ProgressDeadline": "20m", "SkipBeforeInstanceDestroy": "skip"},
    "Health": {"GracePeriod": "10s", "Interval": "15s"},
}}


def test_left_out_sections_keep_the_stored_ones():
    built = groups.build_spec(params(size=5), stored=GO_STORED)
    assert built["Properties"]["Allocation"] == {"Size": 5}
    assert built["Properties"]["Instance"] == GO_STORED["Properties"]["Instance"]
    assert built["Properties"]["Flavor"] == GO_STORED["Properties"]["Flavor"]
    assert built["Properties"]["Updating"] == GO_STORED["Properties"]["Updating"]


def test_a_given_section_is_merged_into_the_stored_one():
    built = groups.build_spec(params(updating=dict(max_unavailable=1), health=dict(grace_period="5s"),
                                     instance=dict(plugin="file", properties={"note": "v2"})), stored=STORED)
    props = built["Properties"]
    assert props["Updating"] == {"MaxSurge": "25%", "ProgressDeadline": "20m", "SkipBeforeInstanceDestroy": "skip",
                                 "MaxUnavailable": 1}
    assert props["Health"] == {"GracePeriod": "5s", "Interval": "15s"}
    assert props["Instance"] == {"Plugin": "file", "Properties": {"note": "v2"}, "Options": {"Resolve": True}}
    assert STORED["Properties"]["Updating"] == {"MaxSurge": "25%", "ProgressDeadline": "20m",
                                                "SkipBeforeInstanceDestroy": "skip"}  # not modified


def test_purge_replaces_each_given_section_whole_and_keeps_the_others():
    built = groups.build_spec(params(updating=dict(max_unavailable=1), instance=dict(plugin="file", properties={})),
                              stored=STORED, purge=True)
    props = built["Properties"]
    assert props["Updating"] == {"MaxUnavailable": 1}
    assert props["Instance"] == {"Plugin": "file", "Properties": {}}
    assert props["Health"] == STORED["Properties"]["Health"]
    assert props["Flavor"] == STORED["Properties"]["Flavor"]


def test_a_new_group_needs_allocation_instance_and_flavor():
    with pytest.raises(groups.SpecError, match="give size or logical_ids"):
        groups.build_spec(params(instance=WORKERS["instance"], flavor=WORKERS["flavor"]))
    with pytest.raises(groups.SpecError, match="give flavor"):
        groups.build_spec(params(size=1, instance=WORKERS["instance"]))


def test_a_number_that_is_not_json_is_refused_before_the_controller():
    with pytest.raises(groups.SpecError, match="not finite"):
        groups.build_spec(dict(WORKERS, updating=dict(max_surge=float("inf"))))


def test_module_utils_parses_no_spec_grammar():
    # One owner: durations, percentages, defaults and the canonical form are the controller's.
    for gone in ("parse_duration", "format_duration", "parse_amount", "parse_count", "normalize", "diff_view",
                 "UPDATING_DEFAULTS", "HEALTH_DEFAULTS"):
        assert not hasattr(groups, gone), gone


def test_description_without_status_is_go_infrakit_shaped():
    description = recording("group-describe")["response"]["body"]["result"]["Description"]
    group = groups.describe_group("workers", description, GO_STORED)
    assert group["converged"] is True
    assert group["condition"] is None
    assert group["counts"]["desired"] == 3 and group["counts"]["running"] == 3
    assert {i["health"] for i in group["instances"]} == {"unknown"}
    assert {i["up_to_date"] for i in group["instances"]} == {None}
    assert group["instances"][0]["tags"]["tier"] == "web"
    assert group["events"] == []
    assert groups.is_settled(description)


def test_the_groups_recent_events_are_returned_oldest_first():
    description = {"Converged": True, "Instances": [], "Status": {"Condition": "Converged", "Events": [
        {"Seq": 3, "Time": 10.5, "Kind": "instance_lost", "Group": "web", "Instance": "i-1", "Reason": "gone"},
        {"Seq": 4, "Time": 10.6, "Kind": "provisioning", "Group": "web", "Instance": "", "Reason": "replacing"},
    ]}}
    group = groups.describe_group("web", description)
    assert group["events"] == [
        {"seq": 3, "time": 10.5, "kind": "instance_lost", "instance": "i-1", "reason": "gone"},
        {"seq": 4, "time": 10.6, "kind": "provisioning", "instance": None, "reason": "replacing"},
    ]


def test_unsettled_report_names_missing_outdated_and_unhealthy_instances():
    description = {
        "Converged": False,
        "Instances": [
            {"ID": "i-1", "LogicalID": "10.0.0.1", "Tags": {}, "Properties": {"Address": "10.0.0.1:80"}},
            {"ID": "i-2", "LogicalID": "10.0.0.2", "Tags": {}, "Properties": {}},
        ],
        "Status": {
            "Desired": 3, "Running": 2, "Healthy": 1, "Unhealthy": 1, "Pending": 0, "Outdated": 1,
            "Condition": "RollingUpdate", "Reason": "waiting for a healthy replacement", "LastError": "boom",
            "Instances": [
                {"ID": "i-1", "LogicalID": "10.0.0.1", "Health": "healthy", "UpToDate": False},
                {"ID": "i-2", "LogicalID": "10.0.0.2", "Health": "unhealthy", "UpToDate": True},
            ],
        },
    }
    spec = {"ID": "db", "Properties": {"Allocation": {"LogicalIDs": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}}}
    group = groups.describe_group("db", description, spec)
    assert group["instances"][0]["address"] == "10.0.0.1:80"
    report = groups.unsettled_report(group, spec)
    assert "missing logical IDs: 10.0.0.3" in report
    assert "outdated: i-1 (logical ID 10.0.0.1)" in report
    assert "unhealthy: i-2 (logical ID 10.0.0.2)" in report
    assert "condition RollingUpdate (waiting for a healthy replacement)" in report
    assert "last error: boom" in report
    assert not groups.is_settled(description)


def test_settled_is_the_controllers_converged_answer():
    # Go InfraKit answers Converged only; ours answers it from the plan, with Status.Condition agreeing.
    assert groups.is_settled({"Converged": True})
    assert groups.is_settled({"Converged": True, "Status": {"Condition": "Converged"}})
    assert not groups.is_settled({"Converged": False, "Status": {"Condition": "Progressing"}})
    assert not groups.is_settled({"Status": {"Condition": "Converged"}})
    assert not groups.is_settled(None)


def test_address_host_handles_ports_and_ipv6():
    assert groups.address_host("127.0.0.1:8080") == "127.0.0.1"
    assert groups.address_host("[::1]:8080") == "::1"
    assert groups.address_host("db.example.com") == "db.example.com"
