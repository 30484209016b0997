"""Launch templates instead of RunInstances properties, through the real group controller, against moto.

moto keeps launch templates and their versions and launches from them (RunInstances with
LaunchTemplate), so nothing is injected here: the templates are made with an observer client
as an operator would, the group names one, and EC2 shows what was launched.
"""

from __future__ import annotations

from typing import Any

import pytest

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import Daemons
from tests.runtime.plugins import moto_fixture
from tests.runtime.plugins.ec2_world import Ec2World
from tests.runtime.plugins.moto_fixture import configure

moto_server, moto, ec2, ami = moto_fixture.moto_server, moto_fixture.moto, moto_fixture.ec2, moto_fixture.ami

GROUP, SIZE = "app", 3


@pytest.fixture
def world(daemons: Daemons, moto: str, ami: str) -> Any:
    w = Ec2World(daemons, moto, ami)
    w.ec2.create_launch_template(LaunchTemplateName="app", LaunchTemplateData={
        "ImageId": ami, "InstanceType": "t3.micro", "UserData": "dGVtcGxhdGU="})
    w.start_aws()
    w.start("spread")
    w.start("vanilla")
    w.start_manager()
    try:
        yield w
    finally:
        daemons.stop_all()


def spec(world: Ec2World, version: str, **extra: Any) -> dict[str, Any]:
    return {"ID": GROUP, "Properties": {
        "Allocation": {"Size": SIZE},
        "Instance": {"Plugin": "aws", "Properties": {
            "LaunchTemplate": {"LaunchTemplateName": "app", "Version": version}, "SubnetId": world.subnets["b"],
            **extra}},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Init": ["start app"]}},
        "Updating": {"MaxSurge": 1, "MaxUnavailable": 0},
        "Health": {"GracePeriod": "5s"},
    }}


def types(world: Ec2World) -> list[str]:
    return sorted(i["InstanceType"] for i in world.instances(GROUP))


def test_a_group_launches_from_a_pinned_template_version_and_a_new_version_rolls_it(world):
    assert world.commit(spec(world, "1")) == f"Managing {SIZE} instances"
    world.wait("3 members from version 1", lambda: world.converged(GROUP, SIZE) and types(world) == ["t3.micro"] * 3,
               group=GROUP)
    live = world.instances(GROUP)
    assert {i["ImageId"] for i in live} == {world.ami}, "the image came from the template"
    assert {i["SubnetId"] for i in live} == {world.subnets["b"]}, "Properties beside the template apply"
    # The whole data: moto ignores SourceVersion (EC2 would copy version 1 and apply the change).
    world.ec2.create_launch_template_version(LaunchTemplateName="app", LaunchTemplateData={
        "ImageId": world.ami, "InstanceType": "t3.small"})
    assert world.commit(spec(world, "2")) == f"Performing a rolling update on {SIZE} instances"
    world.wait("3 members from version 2", lambda: world.converged(GROUP, SIZE) and types(world) == ["t3.small"] * 3,
               timeout=120, group=GROUP)
    assert len(world.instances(GROUP, states=None)) == 2 * SIZE


def test_validation_names_every_problem_with_the_template(world):
    world.ec2.create_launch_template(LaunchTemplateName="bare", LaunchTemplateData={"InstanceType": "t3.micro"})
    world.ec2.create_launch_template(LaunchTemplateName="sticky", LaunchTemplateData={
        "ImageId": world.ami, "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop"}}})
    cases = [
        ({"LaunchTemplate": {"LaunchTemplateName": "nope", "Version": "1"}},
         "Properties.LaunchTemplate.LaunchTemplateName 'nope' does not exist"),
        ({"LaunchTemplate": {"LaunchTemplateName": "app", "Version": "7"}},
         "Properties.LaunchTemplate.Version 7 of launch template 'app' does not exist"),
        ({"LaunchTemplate": {"LaunchTemplateName": "app", "LaunchTemplateId": "lt-0123", "Version": "1"}},
         "Properties.LaunchTemplate must name the template by exactly one of LaunchTemplateId or LaunchTemplateName"),
        ({"LaunchTemplate": {"LaunchTemplateName": "app", "Version": "latest"}},
         "Properties.LaunchTemplate.Version must be $Latest, $Default or a version number, got 'latest'"),
        ({"LaunchTemplate": {"LaunchTemplateName": "bare", "Version": "$Latest"}},
         "Properties.ImageId is required: launch template 'bare' version 1 gives no ImageId"),
        ({"LaunchTemplate": {"LaunchTemplateName": "sticky", "Version": "$Default"}},
         "Properties.LaunchTemplate (launch template 'sticky' version 1): InstanceMarketOptions.SpotOptions."
         "SpotInstanceType must be one-time"),
        ({"LaunchTemplate": {"LaunchTemplateName": "app", "Version": "1"}, "InstanceTyp": "t3.micro"},
         "Properties.InstanceTyp is not a field of RunInstancesRequest (did you mean InstanceType?)"),
    ]
    aws = world.d.client("aws", timeout=30)
    try:
        for props, expected in cases:
            with pytest.raises(RemoteError) as err:
                aws.call("Instance.Validate", {"Type": "", "Properties": props})
            assert expected in err.value.message, (props, err.value.message)
        assert aws.call("Instance.Validate", {"Type": "", "Properties": {
            "LaunchTemplate": {"LaunchTemplateName": "app", "Version": "$Latest"}}})["OK"] is True
    finally:
        aws.close()
    with pytest.raises(RemoteError) as err:
        world.commit(spec(world, "7"))
    assert "Properties.Instance (aws): Properties.LaunchTemplate.Version 7 of launch template 'app' does not exist" \
        in err.value.message
    assert not world.instances(GROUP, states=None), "nothing launched"


def test_a_running_group_refuses_a_bad_template_commit_with_every_problem_and_keeps_running_as_it_was(world):
    world.commit(spec(world, "1"))
    world.wait("3 members from version 1", lambda: world.converged(GROUP, SIZE), group=GROUP)
    members = {i["InstanceId"] for i in world.instances(GROUP)}
    with pytest.raises(RemoteError) as err:
        world.commit(spec(world, "7", InstanceTyp="t3.small"))
    message = err.value.message
    for expected in ["Properties.LaunchTemplate.Version 7 of launch template 'app' does not exist",
                     "Properties.InstanceTyp is not a field of RunInstancesRequest (did you mean InstanceType?)"]:
        assert expected in message, (expected, message)
    (stored,) = world.call("Group.InspectGroups", {})["Groups"]
    assert stored["Properties"]["Instance"]["Properties"]["LaunchTemplate"]["Version"] == "1"
    # Three more passes of the controller (each one DescribeInstances) change nothing.
    before = configure(world.endpoint)["counts"]
    world.wait("three more passes", lambda: configure(world.endpoint)["counts"]["DescribeInstances"]
               >= before["DescribeInstances"] + 3, group=GROUP)
    after = configure(world.endpoint)["counts"]
    assert after.get("RunInstances") == before.get("RunInstances") and "TerminateInstances" not in after
    assert {i["InstanceId"] for i in world.instances(GROUP, states=None)} == members


def test_templates_in_spread_choices_are_checked_per_choice_then_launch_in_each_subnet(world):
    def spread(versions: dict[str, str]) -> dict[str, Any]:
        s = spec(world, "1")
        s["Properties"]["Allocation"] = {"Size": 4}
        s["Properties"]["Instance"] = {"Plugin": "spread", "Properties": [
            {"Name": f"us-east-1{z}", "Plugin": "aws", "Properties": {
                "LaunchTemplate": {"LaunchTemplateName": "app", "Version": v}, "SubnetId": world.subnets[z]}}
            for z, v in versions.items()]}
        return s

    with pytest.raises(RemoteError) as err:
        world.commit(spread({"a": "1", "b": "9"}))
    assert "Properties.Instance (spread): Properties[1] (us-east-1b): Properties.LaunchTemplate.Version 9 of " \
           "launch template 'app' does not exist" in err.value.message, err.value.message
    assert "Properties[0]" not in err.value.message
    assert not world.instances(GROUP, states=None), "nothing launched"
    world.commit(spread({"a": "1", "b": "1"}))
    world.wait("2 + 2 members from the template", lambda: world.converged(GROUP, 4)
               and world.by_zone(GROUP) == {"a": 2, "b": 2, "c": 0}, group=GROUP)
    assert {(i["ImageId"], i["InstanceType"]) for i in world.instances(GROUP)} == {(world.ami, "t3.micro")}
