"""The aws plugin's pure parts: Properties validation, launch requests, tokens, batches, options."""

from __future__ import annotations

import pytest

from infrakit_runtime.plugins.instance import aws, aws_launch, aws_validate
from infrakit_runtime.plugins.instance.aws_ec2 import Backoff
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import ValidationError


def problems(props):
    return aws_validate.problems(props)


def test_a_launch_template_replaces_image_id_and_passes_as_is():
    assert problems({"LaunchTemplate": {"LaunchTemplateName": "web", "Version": "$Latest"}}) == []
    assert problems({"ImageId": "ami-1", "InstanceType": "m5.large", "SubnetId": "subnet-1",
                     "SecurityGroupIds": ["sg-1"], "KeyName": "k", "IamInstanceProfile": {"Name": "p"},
                     "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 20, "Encrypted": True}}],
                     "TagSpecifications": [{"ResourceType": "volume", "Tags": [{"Key": "k", "Value": "v"}]}],
                     "MetadataOptions": {"HttpTokens": "required"}}) == []


@pytest.mark.parametrize(("props", "expected"), [
    ({"ImageId": 7}, "Properties.ImageId must be a string, got number"),
    ({"ImageId": "a", "SecurityGroupIds": "sg-1"}, "Properties.SecurityGroupIds must be an array, got string"),
    ({"ImageId": "a", "SecurityGroupIds": ["sg-1", 2]}, "Properties.SecurityGroupIds[1] must be a string, got number"),
    ({"ImageId": "a", "EbsOptimized": "yes"}, "Properties.EbsOptimized must be a boolean, got string"),
    ({"ImageId": "a", "IamInstanceProfile": "p"}, "Properties.IamInstanceProfile must be an object, got string"),
    ({"ImageId": "a", "Ipv6AddressCount": True}, "Properties.Ipv6AddressCount must be an integer, got boolean"),
    ({"ImageId": "a", "Placement": {"Zone": "x"}}, "Properties.Placement.Zone is not a field of Placement"),
    ({"ImageId": "a", "InstanceType": "t3.mirco"}, "(did you mean t3.micro"),
    ({"ImageId": "a", "MetadataOptions": {"HttpTokens": "maybe"}},
     "Properties.MetadataOptions.HttpTokens 'maybe' is not a valid HttpTokensState"),
    ({"ImageId": "a", "TagSpecifications": [{"ResourceType": "instance", "Tags": []}]},
     "Properties.TagSpecifications[0] cannot tag resource type 'instance'"),
    ({"ImageId": "a", "UserData": "x"}, "Properties.UserData cannot be set: the plugin sets it from the instance spec's Init"),
    ({"ImageId": "a", "ClientToken": "x"}, "Properties.ClientToken cannot be set"),
    ({"InstanceType": "t3.micro"}, "Properties.ImageId is required unless Properties.LaunchTemplate is given"),
    ([], "Properties must be an object (RunInstances input), got array"),
])
def test_each_problem_names_its_path(props, expected):
    found = problems(props)
    assert any(expected in p for p in found), found


def test_every_problem_is_listed_at_once():
    with pytest.raises(ValidationError) as err:
        aws_validate.validate({"Imagid": "a", "MinCount": 2, "BlockDeviceMappings": [{"Ebs": {"VolumeSize": "8"}}]})
    assert len(err.value.problems) == 4
    assert "MinCount is required" not in str(err.value)


def spec(**kw):
    return instance.Spec(properties={"ImageId": "ami-1"}, **kw)


def test_run_params_tag_instance_and_volumes_and_drop_request_metadata():
    s = spec(tags={"infrakit.group": "g", "infrakit.slot": "3", "infrakit.attempt": "1"}, init="echo", logical_id="web1")
    params = aws_launch.run_params({"ImageId": "ami-1", "TagSpecifications": [
        {"ResourceType": "volume", "Tags": [{"Key": "backup", "Value": "daily"}, {"Key": "infrakit.group", "Value": "x"}]},
        {"ResourceType": "network-interface", "Tags": [{"Key": "n", "Value": "1"}]}]}, s)
    by_type = {ts["ResourceType"]: {t["Key"]: t["Value"] for t in ts["Tags"]} for ts in params["TagSpecifications"]}
    assert by_type["instance"] == {"infrakit.group": "g", "infrakit.logical_id": "web1", "Name": "web1"}
    assert by_type["volume"] == {"backup": "daily", "infrakit.group": "g", "infrakit.logical_id": "web1", "Name": "web1"}
    assert by_type["network-interface"] == {"n": "1"}
    assert params["UserData"] == "echo" and "PrivateIpAddress" not in params


def test_an_ip_logical_id_is_the_private_ip_and_not_a_name():
    params = aws_launch.run_params({"ImageId": "ami-1"}, spec(logical_id="10.0.0.5"))
    assert params["PrivateIpAddress"] == "10.0.0.5"
    assert {"Key": "Name", "Value": "10.0.0.5"} not in params["TagSpecifications"][0]["Tags"]


def test_client_token_derivation():
    tags = {"infrakit.group": "g", "infrakit.config.hash": "h", "infrakit.slot": "1", "infrakit.attempt": "0"}
    token = aws_launch.client_token(spec(tags=tags))
    assert token == aws_launch.client_token(spec(tags=dict(tags)))
    assert len(token) <= 64 and token.startswith("ik1-")
    for key, value in [("infrakit.group", "g2"), ("infrakit.config.hash", "h2"), ("infrakit.slot", "2"),
                       ("infrakit.attempt", "1")]:
        assert aws_launch.client_token(spec(tags={**tags, key: value})) != token
    # Without a slot there is nothing to be idempotent about: every call is a new launch.
    no_slot = spec(tags={"infrakit.group": "g"})
    assert aws_launch.client_token(no_slot) != aws_launch.client_token(no_slot)
    assert aws_launch.chained_token(token, ["i-2", "i-1"]) == aws_launch.chained_token(token, ["i-1", "i-2"]) != token


def test_batches_group_identical_cattle_and_launch_pets_alone():
    cattle = [(i, {"ImageId": "ami-1"}, spec(tags={"infrakit.slot": str(i)})) for i in range(5)]
    other = [(5, {"ImageId": "ami-2"}, spec(tags={"infrakit.slot": "5"}))]
    pets = [(6, {"ImageId": "ami-1"}, spec(logical_id="p1")), (7, {"ImageId": "ami-1"}, spec(logical_id="p2"))]
    batches = aws_launch.plan_batches(cattle + other + pets, max_batch=2)
    assert sorted(b.slots for b in batches) == [(0, 1), (2, 3), (4,), (5,), (6,), (7,)]
    assert len({b.token for b in batches}) == 6


def test_backoff_is_capped_and_jittered():
    b = Backoff(retries=5, base=0.5, cap=4.0)
    assert [b.delay(n, lambda: 1.0) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.delay(3, lambda: 0.25) == 1.0


def test_options_are_checked_and_credentials_are_not_options():
    plugin = aws.build({"region": "eu-west-1", "retry_mode": "adaptive", "max_attempts": 3, "max_batch": 50})
    assert plugin.ec2.settings.retry_mode == "adaptive" and plugin.max_batch == 50
    plugin.ec2.close()
    with pytest.raises(ValidationError) as err:
        aws.build({"aws_secret_access_key": "x", "retry_mode": "legacy", "max_batch": 0})
    assert len(err.value.problems) == 3


def test_kept_volumes_are_checked_against_create_volume_and_need_a_zone():
    assert problems({"ImageId": "a", "SubnetId": "subnet-1", "Volumes": [
        {"Device": "/dev/sdf", "Size": 20, "VolumeType": "gp3", "Iops": 3000, "Encrypted": True, "Tags": {"k": "v"}},
        {"Device": "xvdg", "SnapshotId": "snap-1"}]}) == []
    assert problems({"ImageId": "a", "Placement": {"AvailabilityZone": "us-east-1a"},
                     "Volumes": [{"Device": "/dev/sdf", "Size": 1}]}) == []
    found = problems({"ImageId": "a", "Volumes": [
        {"Device": "sdf", "Size": "8", "VolumeType": "gp4", "Iopz": 3, "AvailabilityZone": "x", "Tags": {"a": 1}},
        {"Device": "/dev/sdg"}, {"Device": "/dev/sdg", "Size": 1}, 7]})
    assert found == [
        "Properties.Volumes[0].Device must be the device name the instance sees (/dev/sdf, xvdf), got 'sdf'",
        "Properties.Volumes[0].Size must be an integer, got string",
        "Properties.Volumes[0].VolumeType 'gp4' is not a valid VolumeType (did you mean gp3, gp2?); allowed: standard, "
        "io1, io2, gp2, sc1, st1, gp3",
        "Properties.Volumes[0].Iopz is not a field of a kept volume (did you mean Iops?)",
        "Properties.Volumes[0].AvailabilityZone is not a field of a kept volume; known fields: Device, Tags, Encrypted, "
        "Iops, KmsKeyId, Size, SnapshotId, Throughput, VolumeType",
        "Properties.Volumes[0].Tags must be an object of strings, got object",
        "Properties.Volumes[1].Size is required unless Properties.Volumes[1].SnapshotId is given",
        "Properties.Volumes[2].Device '/dev/sdg' is used by another volume",
        "Properties.Volumes[3] must be an object {Device, Size, VolumeType, ...}, got number",
        "Properties.Volumes: a volume lives in one availability zone: give SubnetId (or Placement.AvailabilityZone) "
        "so every instance of a logical ID launches where its volume is",
    ]
    assert problems({"ImageId": "a", "Volumes": {}}) == [
        "Properties.Volumes must be a list of volumes {Device, Size, VolumeType, ...}, got object"]


def test_kept_volumes_never_reach_run_instances():
    params = aws_launch.run_params({"ImageId": "ami-1", "SubnetId": "s", "Volumes": [{"Device": "/dev/sdf", "Size": 1}]},
                                   spec(logical_id="10.0.0.5"))
    assert "Volumes" not in params and params["PrivateIpAddress"] == "10.0.0.5"


def test_spot_members_must_be_one_time_and_terminate_when_interrupted():
    spot = {"MarketType": "spot", "SpotOptions": {"MaxPrice": "0.05", "SpotInstanceType": "one-time"}}
    assert problems({"ImageId": "a", "InstanceMarketOptions": spot}) == []
    assert problems({"ImageId": "a", "InstanceMarketOptions": {"MarketType": "spot"}}) == []
    found = problems({"ImageId": "a", "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": {
        "SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "hibernate"}}})
    assert found == [
        "Properties.InstanceMarketOptions.SpotOptions.SpotInstanceType must be one-time: a persistent request "
        "relaunches instances by itself, beside the group's own replacements",
        "Properties.InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior must be terminate: a stopped or "
        "hibernated instance is not a member, so the group replaces it, and it would come back as one too many",
    ]
