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


def test_module_spec_equals_what_go_infrakit_stores_for_it():
    # InspectGroups adds LogicalIDs: null and Updating {Duration: 0s, Count: 0, SkipBeforeInstanceDestroy: null}.
    built = groups.build_spec(WORKERS)
    assert built == recording("group-commit")["request"]["body"]["params"]["Spec"]
    assert groups.normalize(built) == groups.normalize(GO_STORED)


def test_size_zero_is_a_size_and_equals_a_stored_zero():
    built = groups.build_spec(dict(WORKERS, size=0))
    assert built["Properties"]["Allocation"] == {"Size": 0}
    stored = dict(built, Properties=dict(built["Properties"], Allocation={"Size": 0, "LogicalIDs": None}))
    assert groups.normalize(built) == groups.normalize(stored)
    assert groups.normalize(built) != groups.normalize(groups.build_spec(dict(WORKERS, size=1)))


def test_map_order_and_spelled_out_defaults_do_not_count_as_changes():
    mine = groups.build_spec(dict(WORKERS, updating=dict(max_surge=1, progress_deadline="10m"),
                                  health=dict(grace_period=30)))
    theirs = {
        "ID": "workers",
        "Properties": {
            "Updating": {"ProgressDeadline": "600s", "MaxUnavailable": 0, "Duration": "0s", "Count": 0},
            "Health": {"UnhealthyThreshold": 3, "GracePeriod": "30s", "MaxUnhealthy": "40%"},
            "Flavor": {"Properties": {"Tags": {"tier": "web"}, "Init": ["echo hello"]}, "Plugin": "vanilla"},
            "Instance": {"Properties": {"note": "wire-test"}, "Plugin": "file"},
            "Allocation": {"LogicalIDs": None, "Size": 3},
        },
    }
    assert groups.normalize(mine) == groups.normalize(theirs)


def test_a_real_policy_change_is_a_change():
    a = groups.build_spec(dict(WORKERS, updating=dict(max_surge=1)))
    b = groups.build_spec(dict(WORKERS, updating=dict(max_surge="50%")))
    assert groups.normalize(a) != groups.normalize(b)


def test_left_out_sections_keep_the_stored_ones():
    built = groups.build_spec(params(size=5), stored=GO_STORED)
    assert built["Properties"]["Allocation"] == {"Size": 5}
    assert built["Properties"]["Instance"] == GO_STORED["Properties"]["Instance"]
    assert built["Properties"]["Flavor"] == GO_STORED["Properties"]["Flavor"]
    assert built["Properties"]["Updating"] == GO_STORED["Properties"]["Updating"]


def test_a_new_group_needs_allocation_instance_and_flavor():
    with pytest.raises(groups.SpecError, match="give size or logical_ids"):
        groups.build_spec(params(instance=WORKERS["instance"], flavor=WORKERS["flavor"]))
    with pytest.raises(groups.SpecError, match="give flavor"):
        groups.build_spec(params(size=1, instance=WORKERS["instance"]))


def test_bad_values_are_refused_with_the_option_name():
    with pytest.raises(groups.SpecError, match="size must be 0 or more"):
        groups.build_spec(dict(WORKERS, size=-1))
    with pytest.raises(groups.SpecError, match="updating.max_surge"):
        groups.build_spec(dict(WORKERS, updating=dict(max_surge="lots")))
    with pytest.raises(groups.SpecError, match="health.grace_period"):
        groups.build_spec(dict(WORKERS, health=dict(grace_period="soon")))
    with pytest.raises(groups.SpecError, match="repeated: a"):
        groups.build_spec(dict(WORKERS, size=None, logical_ids=["a", "b", "a"]))


@pytest.mark.parametrize("text, seconds", [
    ("0s", 0.0), (0, 0.0), ("90", 90.0), ("1m30s", 90.0), ("1h", 3600.0), ("250ms", 0.25), ("1.5s", 1.5),
])
def test_go_durations(text, seconds):
    assert groups.parse_duration(text) == seconds


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


def test_converged_flag_alone_is_not_settled_when_status_disagrees():
    assert not groups.is_settled({"Converged": True, "Status": {"Condition": "RollingUpdate"}})
    assert groups.is_settled({"Converged": True, "Status": {"Condition": "Converged"}})


def test_address_host_handles_ports_and_ipv6():
    assert groups.address_host("127.0.0.1:8080") == "127.0.0.1"
    assert groups.address_host("[::1]:8080") == "::1"
    assert groups.address_host("db.example.com") == "db.example.com"
