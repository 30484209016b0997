# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import time

import pytest

from ansible_collections.infrakit.core.plugins.modules import group
from ansible_collections.infrakit.core.tests.unit.plugins.fake_controller import described_instance


def web(controller, **overrides):
    args = dict(
        name="web",
        size=3,
        instance=dict(plugin="process", properties={"Command": ["python3", "-m", "http.server", "$PORT"]}),
        flavor=dict(plugin="vanilla", properties={"Tags": {"tier": "web"}, "Health": {"HTTP": "http://{{address}}/"}}),
        controller_url=controller.url,
        wait_timeout=5,
    )
    args.update(overrides)
    return args


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(group, "POLL_INTERVAL", 0.01)


def test_create_commits_the_spec_and_returns_the_converged_group(controller, run_module):
    result = run_module(group.main, web(controller))
    assert result["changed"] is True
    assert result["plan"] == "Managing 3 instances"
    assert result["converged"] is True and result["condition"] == "Converged"
    assert result["counts"] == dict(desired=3, running=3, healthy=3, unhealthy=0, pending=0, outdated=0)
    assert [i["health"] for i in result["instances"]] == ["healthy"] * 3
    assert result["instances"][0]["address"] == "127.0.0.1:20000"
    assert result["spec"]["instance"]["plugin"] == "process"
    # The controller plans (and judges) first, then the spec is committed.
    assert [c["params"]["Pretend"] for c in controller.calls("Group.CommitGroup")] == [True, False]
    commit = controller.calls("Group.CommitGroup")[1]["params"]
    assert commit["Name"] == "group/groups" and commit["Pretend"] is False
    assert commit["Spec"]["Properties"]["Allocation"] == {"Size": 3}
    assert controller.groups["web"]["Properties"]["Flavor"]["Properties"]["Health"] == {"HTTP": "http://{{address}}/"}


def test_a_second_run_with_the_same_spec_changes_nothing(controller, run_module):
    run_module(group.main, web(controller))
    before = len(controller.calls("Group.CommitGroup"))
    result = run_module(group.main, web(controller))
    assert result["changed"] is False
    # Only a pretend commit: nothing is committed again.
    assert [c["params"]["Pretend"] for c in controller.calls("Group.CommitGroup")[before:]] == [True]
    assert result["plan"] == "Managing 3 instances"  # the controller's current plan, from Status


def test_size_zero_is_created_once_and_then_unchanged(controller, run_module):
    assert run_module(group.main, web(controller, size=0))["changed"] is True
    assert controller.groups["web"]["Properties"]["Allocation"] == {"Size": 0, "LogicalIDs": None}
    result = run_module(group.main, web(controller, size=0))
    assert result["changed"] is False
    assert result["counts"]["desired"] == 0


def test_defaults_the_controller_spells_out_are_not_a_change(controller, run_module):
    controller.stored_extras["web"] = {"Updating": {"Duration": "0s", "Count": 0, "SkipBeforeInstanceDestroy": None}}
    run_module(group.main, web(controller))
    assert "Updating" in controller.groups["web"]["Properties"]
    assert run_module(group.main, web(controller))["changed"] is False


def test_check_mode_returns_the_plan_and_commits_nothing(controller, run_module):
    result = run_module(group.main, web(controller), check_mode=True)
    assert result["changed"] is True
    assert result["plan"] == "Managing 3 instances"
    assert controller.groups == {}
    assert [c["params"]["Pretend"] for c in controller.calls("Group.CommitGroup")] == [True]
    assert result["instances"] == []


def test_check_mode_on_a_current_group_is_not_a_change(controller, run_module):
    run_module(group.main, web(controller))
    controller.plan = "Managing 3 instances"
    result = run_module(group.main, web(controller), check_mode=True)
    assert result["changed"] is False
    assert controller.calls("Group.CommitGroup")[-1]["params"]["Pretend"] is True


def test_check_mode_scale_is_planned_not_applied(controller, run_module):
    run_module(group.main, web(controller))
    controller.plan = "Adding 2 instances to increase the group size to 5"
    result = run_module(group.main, dict(name="web", size=5, controller_url=controller.url), check_mode=True)
    assert result["changed"] is True
    assert result["plan"] == "Adding 2 instances to increase the group size to 5"
    assert controller.groups["web"]["Properties"]["Allocation"]["Size"] == 3


def test_diff_shows_the_spec_before_and_after(controller, run_module):
    result = run_module(group.main, web(controller), diff=True)
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["size"] == 3
    result = run_module(group.main, dict(name="web", size=4, controller_url=controller.url), diff=True)
    assert result["diff"]["before"]["size"] == 3
    assert result["diff"]["after"]["size"] == 4
    assert result["diff"]["after"]["flavor"] == result["diff"]["before"]["flavor"]


def test_size_alone_rescales_an_existing_group_and_keeps_the_rest(controller, run_module):
    run_module(group.main, web(controller, updating=dict(max_surge="50%", progress_deadline=120)))
    result = run_module(group.main, dict(name="web", size=5, controller_url=controller.url))
    assert result["changed"] is True
    stored = controller.groups["web"]["Properties"]
    assert stored["Allocation"]["Size"] == 5
    assert stored["Instance"]["Plugin"] == "process"
    assert stored["Updating"] == {"MaxSurge": "50%", "ProgressDeadline": "120s"}


def test_wait_polls_until_the_rollout_converges(controller, run_module):
    run_module(group.main, web(controller))
    rolling = {"Converged": False, "Instances": [described_instance("web", 0)],
               "Status": {"Condition": "RollingUpdate", "Instances": []}}
    # Our controller answers Converged and Status.Condition from one plan, so they never disagree:
    # the module waits on Converged alone (the one answer, Go InfraKit's too).
    still_rolling = {"Converged": False, "Instances": [], "Status": {"Condition": "Progressing"}}
    converged = {"Converged": True, "Instances": [described_instance("web", 5, "127.0.0.1:9")],
                 "Status": {"Condition": "Converged", "Desired": 1, "Running": 1,
                            "Instances": [{"ID": "instance-5", "Health": "healthy", "UpToDate": True}]}}
    controller.scripts["web"] = [rolling, still_rolling, converged]
    controller.plan = "Performing a rolling update on 1 instance"
    result = run_module(group.main, web(controller, size=1, flavor=dict(plugin="vanilla", properties={"Init": ["v2"]})))
    assert result["changed"] is True
    assert result["plan"] == "Performing a rolling update on 1 instance"
    assert result["instances"][0]["id"] == "instance-5"
    assert controller.methods().count("Group.DescribeGroup") >= 3


def test_wait_timeout_fails_naming_the_instances_that_are_not_right(controller, run_module):
    run_module(group.main, web(controller))
    stuck = {
        "Converged": False,
        "Instances": [described_instance("web", 1), described_instance("web", 2)],
        "Status": {"Desired": 3, "Running": 2, "Healthy": 1, "Unhealthy": 1, "Pending": 0, "Outdated": 1,
                   "Condition": "Healing", "Reason": "max-unhealthy brake", "LastError": "process exited",
                   "Instances": [{"ID": "instance-1", "Health": "healthy", "UpToDate": False},
                                 {"ID": "instance-2", "Health": "unhealthy", "UpToDate": True}]},
    }
    controller.scripts["web"] = [stuck]
    result = run_module(group.main, web(controller, size=3, wait_timeout=1))
    assert result["failed"] is True
    msg = result["msg"]
    assert msg.startswith("group web did not converge within 1s")
    assert "missing: 1 of 3 instances (2 running)" in msg
    assert "outdated: instance-1" in msg
    assert "unhealthy: instance-2" in msg
    assert "condition Healing (max-unhealthy brake)" in msg
    assert "last error: process exited" in msg
    assert result["changed"] is False  # the spec was already committed by the first run


def test_against_go_infrakit_wait_relies_on_converged(controller, run_module):
    controller.with_status = False
    result = run_module(group.main, web(controller))
    assert result["converged"] is True and result["condition"] is None
    assert result["counts"]["desired"] == 3 and result["counts"]["running"] == 3
    assert {i["health"] for i in result["instances"]} == {"unknown"}


def test_unknown_plugin_fails_with_the_controllers_reason_and_changes_nothing(controller, run_module):
    result = run_module(group.main, web(controller, instance=dict(plugin="nosuch", properties={})))
    assert result["failed"] is True
    assert "no plugin named 'nosuch'" in result["msg"]
    assert result["rpc_code"] == -32000 and result["rpc_method"] == "Group.CommitGroup"
    assert result["changed"] is False
    assert controller.groups == {}


def test_unknown_plugin_fails_in_check_mode_too(controller, run_module):
    result = run_module(group.main, web(controller, flavor=dict(plugin="nosuch")), check_mode=True)
    assert result["failed"] is True and "no plugin named 'nosuch'" in result["msg"]


def test_size_and_logical_ids_together_are_refused_before_any_call(controller, run_module):
    result = run_module(group.main, web(controller, logical_ids=["a", "b"]))
    assert result["failed"] is True
    assert "mutually exclusive" in result["msg"]
    assert controller.requests == []


def test_unreachable_controller_fails_with_a_clear_message(sockdir, run_module, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    result = run_module(group.main, dict(name="web", size=1, controller_url=sockdir + "/nothing-here"))
    assert result["failed"] is True
    assert "cannot reach the InfraKit controller at %s/nothing-here" % sockdir in result["msg"]
    assert result["changed"] is False


def test_creating_without_instance_says_what_is_missing(controller, run_module):
    result = run_module(group.main, dict(name="web", size=1, controller_url=controller.url))
    assert result["failed"] is True
    assert result["msg"] == "group web does not exist yet: give instance (plugin and properties) to create it"


def pets(controller):
    args = web(controller, logical_ids=["10.0.0.1", "10.0.0.2"])
    del args["size"]
    return args


def test_pets_by_logical_id(controller, run_module):
    result = run_module(group.main, pets(controller))
    assert controller.groups["web"]["Properties"]["Allocation"]["LogicalIDs"] == ["10.0.0.1", "10.0.0.2"]
    assert [i["logical_id"] for i in result["instances"]] == ["10.0.0.1", "10.0.0.2"]
    again = run_module(group.main, pets(controller))
    assert again["changed"] is False


def test_absent_destroys_an_existing_group_once(controller, run_module):
    run_module(group.main, web(controller))
    assert run_module(group.main, dict(name="web", state="absent", controller_url=controller.url),
                      check_mode=True)["changed"] is True
    assert "web" in controller.groups
    assert run_module(group.main, dict(name="web", state="absent", controller_url=controller.url))["changed"] is True
    assert controller.groups == {}
    result = run_module(group.main, dict(name="web", state="absent", controller_url=controller.url))
    assert result["changed"] is False
    assert controller.methods().count("Group.DestroyGroup") == 1


def test_freed_stops_managing_without_destroying(controller, run_module):
    run_module(group.main, web(controller))
    result = run_module(group.main, dict(name="web", state="freed", controller_url=controller.url))
    assert result["changed"] is True
    assert controller.methods().count("Group.FreeGroup") == 1
    assert "Group.DestroyGroup" not in controller.methods()
    assert run_module(group.main, dict(name="web", state="freed", controller_url=controller.url))["changed"] is False


def test_connection_options_come_from_the_environment(controller, run_module, monkeypatch):
    monkeypatch.setenv("INFRAKIT_CONTROLLER_URL", controller.url)
    args = web(controller)
    del args["controller_url"]
    assert run_module(group.main, args)["changed"] is True


def test_default_url_is_the_group_socket_in_the_plugin_dir(controller, run_module, monkeypatch, sockdir):
    monkeypatch.delenv("INFRAKIT_CONTROLLER_URL", raising=False)
    monkeypatch.setenv("INFRAKIT_PLUGINS_DIR", sockdir)
    args = web(controller)
    del args["controller_url"]
    assert run_module(group.main, args)["changed"] is True


def test_against_go_infrakit_a_spec_merged_over_the_stored_one_is_compared_plainly(controller, run_module):
    # Go InfraKit answers no canonical form: the module compares what it sends with what is stored.
    controller.stored_extras["web"] = {"Updating": {"Duration": "0s", "Count": 0, "SkipBeforeInstanceDestroy": None}}
    run_module(group.main, web(controller, health=dict(grace_period="30s")))
    result = run_module(group.main, web(controller, health=dict(grace_period=30)), diff=True)
    assert result["changed"] is False
    assert result["diff"]["before"] == result["diff"]["after"]
    assert result["spec"]["health"] == {"grace_period": "30s"}
    respelled = run_module(group.main, web(controller, health=dict(grace_period="0.5m")), diff=True)
    assert respelled["changed"] is True  # no grammar here: only the controller could say 0.5m is 30s
    assert respelled["diff"]["after"]["health"] == {"grace_period": "0.5m"}


def test_absent_with_wait_gives_the_controller_the_wait_timeout_to_destroy(controller, run_module):
    run_module(group.main, web(controller))
    controller.delays["Group.DestroyGroup"] = 1.5
    slow = run_module(group.main, dict(name="web", state="absent", controller_url=controller.url, timeout=1,
                                       wait=False))
    assert slow["failed"] is True and "no answer from the InfraKit controller" in slow["msg"]
    deadline = time.monotonic() + 30
    while "web" in controller.groups and time.monotonic() < deadline:  # the late destroy lands
        time.sleep(0.05)
    run_module(group.main, web(controller))
    result = run_module(group.main, dict(name="web", state="absent", controller_url=controller.url, timeout=1,
                                         wait_timeout=10))
    assert result["changed"] is True and "failed" not in result
    assert result["destroyed"] == ["instance-0", "instance-1", "instance-2"]
    assert controller.groups == {}


def test_absent_with_wait_fails_when_the_group_is_still_listed(controller, run_module):
    run_module(group.main, web(controller))
    controller.destroy_keeps_listing = True
    result = run_module(group.main, dict(name="web", state="absent", controller_url=controller.url, wait_timeout=1))
    assert result["failed"] is True
    assert result["msg"].startswith("group web was destroyed but the controller still lists it after 1s")
