"""The controller against real daemons and real processes: converge, heal, roll, destroy, refuse.

Integration only: what the controller decides (scaling, pets, free, pretend...) is tested in one
process on a fake clock in ``test_controller_in_process.py``; here the same stack runs as an
operator's would (manager, process and vanilla daemons on sockets, instances as OS processes).
"""

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


def test_destroy_removes_every_instance_and_the_group(stack):
    stack.commit(stack.spec(size=3))
    stack.wait_converged(3)
    stack.call("Group.DestroyGroup", {"ID": "web"})
    assert stack.instances() == []
    assert stack.live_processes() == 0
    assert stack.call("Group.InspectGroups", {"ID": ""})["Groups"] is None


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
