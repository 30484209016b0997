# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

from ansible_collections.infrakit.core.plugins.modules import group_info

READS = {"Group.InspectGroups", "Group.DescribeGroup", "Manager.IsLeader", "Manager.LeaderLocation", "Manager.Status"}


def spec(group_id, size):
    return {"ID": group_id, "Properties": {
        "Allocation": {"Size": size, "LogicalIDs": None},
        "Instance": {"Plugin": "process", "Properties": {}},
        "Flavor": {"Plugin": "vanilla", "Properties": {}},
    }}


def test_lists_every_group_with_instances_health_and_leadership(controller, run_module):
    controller.groups = {"web": spec("web", 2), "db": spec("db", 1)}
    result = run_module(group_info.main, dict(controller_url=controller.url))
    assert result["changed"] is False
    assert [g["id"] for g in result["groups"]] == ["db", "web"]
    web = result["groups"][1]
    assert web["spec"]["size"] == 2 and web["spec"]["instance"]["plugin"] == "process"
    assert [i["health"] for i in web["instances"]] == ["healthy", "healthy"]
    assert web["counts"]["running"] == 2
    assert result["leader"] == {"is_leader": True, "location": "http://127.0.0.1:24864"}
    assert result["controller"]["backend"] == {"type": "file", "healthy": True, "reason": None}
    assert result["controller"]["term"] == 3 and result["controller"]["problem"] is None
    assert result["controller"]["sharding"] is None and result["controller"]["members"] is None
    assert [g["owner"] for g in result["groups"]] == [None, None]
    assert set(controller.methods()) <= READS


def test_sharing_replicas_report_each_groups_owner_and_the_members(controller, run_module):
    controller.groups = {"web": spec("web", 1), "db": spec("db", 1), "api": spec("api", 1), "new": spec("new", 1)}
    controller.sharded = {
        "Sharding": "groups", "Owned": ["web"],
        "Owners": {"web": "vm:1:group-a", "db": "vm:2:group-b", "api": "vm:3:group-c"},
        "Members": {"vm:1:group-a": "http://10.0.0.1:24864", "vm:2:group-b": "http://10.0.0.2:24864"},
    }
    result = run_module(group_info.main, dict(controller_url=controller.url))
    owners = {g["id"]: g["owner"] for g in result["groups"]}
    assert owners == {
        "web": {"candidate": "vm:1:group-a", "location": "http://10.0.0.1:24864", "live": True},
        "db": {"candidate": "vm:2:group-b", "location": "http://10.0.0.2:24864", "live": True},
        # Its owner's key outlives it by up to a lease TTL.
        "api": {"candidate": "vm:3:group-c", "location": None, "live": False},
        "new": None,
    }
    assert result["controller"]["sharding"] == "groups" and result["controller"]["owned"] == ["web"]
    assert result["controller"]["members"] == {"vm:1:group-a": "http://10.0.0.1:24864",
                                               "vm:2:group-b": "http://10.0.0.2:24864"}
    assert set(controller.methods()) <= READS


def test_one_group_by_name_and_an_unknown_name_is_empty(controller, run_module):
    controller.groups = {"web": spec("web", 1), "db": spec("db", 1)}
    result = run_module(group_info.main, dict(name="web", controller_url=controller.url), check_mode=True)
    assert [g["id"] for g in result["groups"]] == ["web"]
    assert controller.methods().count("Group.DescribeGroup") == 1
    result = run_module(group_info.main, dict(name="nosuch", controller_url=controller.url))
    assert result["groups"] == []


def test_specs_only_skips_describe(controller, run_module):
    controller.groups = {"web": spec("web", 1)}
    result = run_module(group_info.main, dict(instances=False, controller_url=controller.url))
    assert result["groups"][0]["instances"] == []
    assert "Group.DescribeGroup" not in controller.methods()


def test_go_infrakit_without_status_reports_no_controller_status(controller, run_module):
    controller.with_status = False
    controller.groups = {"web": spec("web", 1)}
    result = run_module(group_info.main, dict(controller_url=controller.url))
    assert result["controller"] is None
    assert result["groups"][0]["instances"][0]["health"] == "unknown"


def test_unreachable_controller_fails_cleanly(sockdir, run_module, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    result = run_module(group_info.main, dict(controller_url=sockdir + "/none"))
    assert result["failed"] is True
    assert "cannot reach the InfraKit controller" in result["msg"]


def test_validate_certs_comes_from_INFRAKIT_VALIDATE_CERTS_as_awx_injects_it(tls_controller, run_module, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    args = dict(controller_url=tls_controller.url)
    monkeypatch.delenv("INFRAKIT_VALIDATE_CERTS", raising=False)
    refused = run_module(group_info.main, args)
    assert refused["failed"] is True and "certificate verify failed" in refused["msg"].lower()
    # AWX renders a boolean credential field as True/False.
    monkeypatch.setenv("INFRAKIT_VALIDATE_CERTS", "False")
    assert run_module(group_info.main, args)["leader"]["is_leader"] is True
    # An explicit option wins over the environment.
    again = run_module(group_info.main, dict(args, validate_certs=True))
    assert again["failed"] is True and "certificate verify failed" in again["msg"].lower()
