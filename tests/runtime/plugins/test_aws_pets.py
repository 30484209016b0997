"""Pets that keep their private IP and their EBS volume, through the real group controller, against moto.

The logical IDs are private IPs in subnet a; each pet has one kept volume at /dev/sdf. moto
keeps a terminated instance's IP reserved forever; its front releases it as EC2 does, so a
replacement can take the address again. Everything is read back from EC2.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.runtime.conftest import Daemons
from tests.runtime.plugins import moto_fixture
from tests.runtime.plugins.ec2_world import Ec2World

moto_server, moto, ec2, ami = moto_fixture.moto_server, moto_fixture.moto, moto_fixture.ec2, moto_fixture.ami

GROUP = "db"
IPS = ["10.0.1.10", "10.0.1.11", "10.0.1.12"]


def spec(world: Ec2World, ips: list[str], instance_type: str = "t3.micro", surge: int = 0) -> dict[str, Any]:
    return {"ID": GROUP, "Properties": {
        "Allocation": {"LogicalIDs": ips},
        "Instance": {"Plugin": "aws", "Properties": {
            "ImageId": world.ami, "InstanceType": instance_type, "SubnetId": world.subnets["a"],
            "Volumes": [{"Device": "/dev/sdf", "Size": 8, "VolumeType": "gp3", "Tags": {"team": "db"}}]}},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Init": ["mount /dev/sdf /var/lib/db"]}},
        "Updating": {"MaxSurge": surge, "MaxUnavailable": 1 - surge},
        "Health": {"GracePeriod": "5s"},
    }}


@pytest.fixture
def world(daemons: Daemons, moto: str, ami: str) -> Any:
    w = Ec2World(daemons, moto, ami)
    w.start_aws()
    w.start("vanilla")
    w.start_manager()
    try:
        yield w
    finally:
        daemons.stop_all()


def pets(world: Ec2World) -> dict[str, dict[str, Any]]:
    """Logical ID -> {id, ip, type, sdf (volume attached at /dev/sdf)} for every live member."""
    out = {}
    for i in world.instances(GROUP):
        tags = {t["Key"]: t["Value"] for t in i.get("Tags") or []}
        sdf = next((m["Ebs"]["VolumeId"] for m in i.get("BlockDeviceMappings") or [] if m["DeviceName"] == "/dev/sdf"),
                   None)
        out[tags["infrakit.logical_id"]] = {"id": i["InstanceId"], "ip": i["PrivateIpAddress"],
                                            "type": i["InstanceType"], "sdf": sdf}
    return out


def volumes(world: Ec2World) -> dict[str, str]:
    """Logical ID -> volume ID of every volume kept for the group (root volumes carry the group's tags too)."""
    found = world.ec2.describe_volumes(Filters=[{"Name": "tag:infrakit.group", "Values": [GROUP]},
                                                {"Name": "tag-key", "Values": ["infrakit.volume.device"]}])["Volumes"]
    return {next(t["Value"] for t in v["Tags"] if t["Key"] == "infrakit.logical_id"): v["VolumeId"] for v in found}


def settled(world: Ec2World, ips: list[str], instance_type: str = "t3.micro") -> dict[str, dict[str, Any]] | None:
    now = pets(world)
    ok = (sorted(now) == sorted(ips) and all(p["ip"] == lid and p["sdf"] and p["type"] == instance_type
                                              for lid, p in now.items()) and world.converged(GROUP, len(ips)))
    return now if ok else None


def test_a_pet_killed_comes_back_with_its_ip_and_its_volume(world):
    world.commit(spec(world, IPS[:2]))
    first = world.wait("two pets with their IPs and volumes", lambda: settled(world, IPS[:2]), group=GROUP)
    kept = volumes(world)
    assert kept == {lid: p["sdf"] for lid, p in first.items()}
    tags = {t["Key"]: t["Value"] for t in world.ec2.describe_volumes(VolumeIds=[kept[IPS[0]]])["Volumes"][0]["Tags"]}
    assert tags["infrakit.group"] == GROUP and tags["infrakit.logical_id"] == IPS[0] and tags["team"] == "db"
    victim = first[IPS[0]]["id"]
    world.ec2.terminate_instances(InstanceIds=[victim])
    again = world.wait("the pet back", lambda: (s := settled(world, IPS[:2])) and s[IPS[0]]["id"] != victim and s,
                       group=GROUP)
    assert again[IPS[0]]["ip"] == IPS[0]
    assert again[IPS[0]]["sdf"] == first[IPS[0]]["sdf"], "the replacement got the pet's own volume"
    assert again[IPS[1]] == first[IPS[1]], "the other pet was not touched"
    assert volumes(world) == kept, "no volume created, none deleted"


def test_a_rollout_replaces_each_pet_then_creates_it_with_the_same_ip_and_volume(world):
    world.commit(spec(world, IPS[:2]))
    first = world.wait("two pets", lambda: settled(world, IPS[:2]), group=GROUP)
    world.commit(spec(world, IPS[:2], "t3.small"))
    after = world.wait("both pets on t3.small", lambda: settled(world, IPS[:2], "t3.small"), timeout=120, group=GROUP)
    for lid in IPS[:2]:
        assert after[lid]["id"] != first[lid]["id"] and after[lid]["sdf"] == first[lid]["sdf"]
    assert volumes(world) == {lid: p["sdf"] for lid, p in first.items()}


def test_only_an_explicit_request_deletes_a_pets_volume(world):
    world.commit(spec(world, IPS))
    first = world.wait("three pets", lambda: settled(world, IPS), group=GROUP)
    world.commit(spec(world, IPS[:2]))  # pet .12 leaves the group: its volume stays
    world.wait(".12 gone", lambda: settled(world, IPS[:2]), group=GROUP)
    assert volumes(world) == {lid: p["sdf"] for lid, p in first.items()}
    assert world.ec2.describe_volumes(VolumeIds=[first[IPS[2]]["sdf"]])["Volumes"][0]["State"] == "available"
    aws = world.d.client("aws", timeout=30)
    try:
        aws.call("Instance.Label", {"Type": "", "Instance": first[IPS[1]]["id"],
                                    "Labels": {"infrakit.delete-volumes": "true"}})
    finally:
        aws.close()
    world.commit(spec(world, IPS[:1]))  # pet .11 leaves, asking for its volume to go with it
    world.wait(".11 gone with its volume", lambda: settled(world, IPS[:1]) and IPS[1] not in volumes(world),
               group=GROUP)
    assert volumes(world) == {IPS[0]: first[IPS[0]]["sdf"], IPS[2]: first[IPS[2]]["sdf"]}


def test_a_surge_rollout_of_pets_with_volumes_is_refused_naming_the_holder(world):
    world.commit(spec(world, IPS[:1]))
    first = world.wait("one pet", lambda: settled(world, IPS[:1]), group=GROUP)
    world.commit(spec(world, IPS[:1], "t3.small", surge=1))
    status = world.wait("the refusal", lambda: (s := world.describe(GROUP).get("Status") or {})
                        and "is attached to" in str(s.get("LastError") or s.get("Reason")) and s, group=GROUP)
    message = str(status.get("LastError") or status.get("Reason"))
    assert f"volume {first[IPS[0]]['sdf']} of logical ID {IPS[0]} is attached to {first[IPS[0]]['id']} (running)" \
        in message and "MaxSurge 0, MaxUnavailable 1" in message
    assert pets(world) == first, "the pet keeps running; nothing was launched"
    assert len(world.instances(GROUP, states=None)) == 1
