"""The controller against real processes: heal, scale, roll, pets, free, destroy, pretend."""

from __future__ import annotations

import os
import signal

from tests.runtime.controller.harness import Sampler


def test_a_group_of_five_converges_with_every_instance_serving(stack):
    assert stack.commit(stack.spec(size=5)) == "Managing 5 instances"
    desc = stack.wait_converged(5, message="v1")
    status = desc["Status"]
    assert status["Condition"] == "Converged" and status["Healthy"] == 5 and status["Outdated"] == 0
    assert {i["Health"] for i in status["Instances"]} == {"healthy"}
    assert stack.live_processes() == 5


def test_instances_killed_with_sigkill_are_replaced(stack):
    stack.commit(stack.spec(size=5))
    desc = stack.wait_converged(5)
    victims = desc["Instances"][:2]
    for v in victims:
        os.kill(v["Properties"]["PID"], signal.SIGKILL)
    desc = stack.wait(lambda d: d.get("Converged") and len(d["Instances"]) == 5
                      and not {v["ID"] for v in victims} & {i["ID"] for i in d["Instances"]}, what="replacements")
    assert stack.live_processes() == 5
    kinds = [e["Kind"] for e in desc["Status"]["Events"]]
    assert "instance_lost" in kinds and "provisioned" in kinds


def test_an_instance_whose_health_check_fails_is_replaced_after_the_threshold(stack):
    stack.commit(stack.spec(size=3, grace="0s", unhealthy_threshold=2))
    desc = stack.wait_converged(3)
    sick = desc["Instances"][0]["ID"]
    stack.make_unhealthy(sick)
    desc = stack.wait(lambda d: d.get("Converged") and sick not in {i["ID"] for i in d["Instances"]}
                      and len(d["Instances"]) == 3, what="the unhealthy instance replaced")
    events = [(e["Kind"], e["Instance"]) for e in desc["Status"]["Events"]]
    assert ("instance_unhealthy", sick) in events and ("destroyed", sick) in events


def test_a_rolling_update_never_drops_below_the_declared_size(stack):
    stack.commit(stack.spec(size=4, message="v1"))
    stack.wait_converged(4, message="v1")
    sampler = Sampler(stack)
    sampler.start()
    assert stack.commit(stack.spec(size=4, message="v2")) == "Performing a rolling update on 4 instances"
    stack.wait_converged(4, message="v2", timeout=90)
    samples = sampler.stop()
    assert len(samples) > 10, "the sampler must have watched the whole rollout"
    assert min(samples) >= 4, f"healthy instances dropped to {min(samples)} during the rollout"
    assert stack.live_processes() == 4


def test_scaling_up_then_down_removes_the_newest_and_keeps_serving(stack):
    stack.commit(stack.spec(size=5))
    first = {i["ID"] for i in stack.wait_converged(5)["Instances"]}
    assert stack.commit(stack.spec(size=8)) == "Adding 3 instances to increase the group size to 8"
    stack.wait_converged(8)
    assert stack.commit(stack.spec(size=2)) == "Terminating 6 instances to reduce the group size to 2"
    remaining = {i["ID"] for i in stack.wait_converged(2)["Instances"]}
    assert remaining <= first, "scale-down removes the newest instances first"
    assert stack.live_processes() == 2
    stack.call("Group.SetSize", {"ID": "web", "Size": 3})
    stack.wait_converged(3)
    assert stack.call("Group.Size", {"ID": "web"})["Size"] == 3


def test_pets_get_one_instance_per_logical_id(stack):
    stack.commit(stack.spec(logical_ids=["db-a", "db-b", "db-c"]))
    desc = stack.wait_converged(3)
    assert sorted(i["LogicalID"] for i in desc["Instances"]) == ["db-a", "db-b", "db-c"]
    victim = next(i for i in desc["Instances"] if i["LogicalID"] == "db-b")
    os.kill(victim["Properties"]["PID"], signal.SIGKILL)
    desc = stack.wait(lambda d: d.get("Converged") and len(d["Instances"]) == 3
                      and victim["ID"] not in {i["ID"] for i in d["Instances"]}, what="db-b replaced")
    assert sorted(i["LogicalID"] for i in desc["Instances"]) == ["db-a", "db-b", "db-c"]
    stack.commit(stack.spec(logical_ids=["db-a", "db-c"]))
    desc = stack.wait_converged(2)
    assert sorted(i["LogicalID"] for i in desc["Instances"]) == ["db-a", "db-c"]


def test_free_then_recommit_adopts_the_instances_without_churn(stack):
    stack.commit(stack.spec(size=3))
    before = {i["ID"] for i in stack.wait_converged(3)["Instances"]}
    stack.call("Group.FreeGroup", {"ID": "web"})
    assert stack.call("Group.InspectGroups", {"ID": ""})["Groups"] is None
    assert {i["ID"] for i in stack.instances()} == before, "free leaves the instances running"
    stack.commit(stack.spec(size=3))
    after = {i["ID"] for i in stack.wait_converged(3)["Instances"]}
    assert after == before


def test_destroy_removes_every_instance_and_the_group(stack):
    stack.commit(stack.spec(size=3))
    stack.wait_converged(3)
    stack.call("Group.DestroyGroup", {"ID": "web"})
    assert stack.instances() == []
    assert stack.live_processes() == 0
    assert stack.call("Group.InspectGroups", {"ID": ""})["Groups"] is None


def test_pretend_returns_the_plan_and_changes_nothing(stack):
    assert stack.commit(stack.spec(size=3), pretend=True) == "Managing 3 instances"
    assert stack.call("Group.InspectGroups", {"ID": ""})["Groups"] is None
    assert stack.instances() == []
    stack.commit(stack.spec(size=3))
    before = {i["ID"] for i in stack.wait_converged(3)["Instances"]}
    assert stack.commit(stack.spec(size=3, message="v2"), pretend=True) == "Performing a rolling update on 3 instances"
    assert stack.commit(stack.spec(size=5), pretend=True) == "Adding 2 instances to increase the group size to 5"
    assert {i["ID"] for i in stack.describe()["Instances"]} == before
    assert stack.call("Group.Size", {"ID": "web"})["Size"] == 3


def test_an_invalid_spec_is_refused_with_every_problem_and_changes_nothing(stack):
    stack.commit(stack.spec(size=2))
    before = {i["ID"] for i in stack.wait_converged(2)["Instances"]}
    bad = stack.spec(size=2)
    bad["Properties"]["Instance"]["Properties"]["Command"] = 5
    bad["Properties"]["Flavor"]["Plugin"] = "nosuch"
    bad["Properties"]["Allocation"]["Size"] = -1
    client = stack.d.client("group")
    try:
        client.call("Group.CommitGroup", {"Name": "group", "Spec": bad, "Pretend": False})
        raise AssertionError("an invalid spec was accepted")
    except Exception as e:
        message = str(e)
    assert "Size" in message and "nosuch" in message
    assert {i["ID"] for i in stack.describe()["Instances"]} == before
    assert stack.call("Group.Size", {"ID": "web"})["Size"] == 2
