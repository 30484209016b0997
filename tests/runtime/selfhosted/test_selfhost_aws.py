"""The selfhost flavors with the aws plugin, against moto (issue 15, item 5: the plumbing).

Private IPs are the logical IDs: an etcd member at 10.0.1.10 listens on 2379/2380 there, a replica
at 10.0.1.20 on 24864. moto runs nothing, so no etcd ever answers: what is checked is the path from
the specs to EC2 - the controller accepts both specs, the bootstrap member and replica are launched
with their private IP, their tags and the init the flavors rendered (etcd's settings for Debian's
service, the replica's configuration and self ID). Committed, the etcd group finds no member
answering: the quorum guard launches nothing and says "quorum lost".
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from infrakit_runtime.controlplane import ControlPlane
from tests.runtime.conftest import Daemons
from tests.runtime.plugins import moto_fixture
from tests.runtime.plugins.ec2_world import Ec2World

moto_server, moto, ec2, ami = moto_fixture.moto_server, moto_fixture.moto, moto_fixture.ec2, moto_fixture.ami

ETCD_IPS = ["10.0.1.10", "10.0.1.11", "10.0.1.12"]
REPLICA_IPS = ["10.0.1.20", "10.0.1.21", "10.0.1.22"]


@pytest.fixture
def world(daemons: Daemons, moto: str, ami: str) -> Any:
    w = Ec2World(daemons, moto, ami)
    w.start_aws()
    w.start("selfhost")
    w.start_manager()
    try:
        yield w
    finally:
        daemons.stop_all()


def specs(world: Ec2World) -> tuple[dict[str, Any], dict[str, Any]]:
    instance = {"Plugin": "aws", "Properties": {"ImageId": world.ami, "InstanceType": "t3.small",
                                                "SubnetId": world.subnets["a"]}}
    etcd = {"ID": "etcd", "Properties": {
        "Allocation": {"LogicalIDs": ETCD_IPS}, "Instance": instance,
        "Flavor": {"Plugin": "selfhost/etcd", "Properties": {"Launch": "debian", "DataDir": "/var/lib/etcd/infrakit",
                                                              "Timeout": "1s"}},
        "Updating": {"MaxSurge": 0, "MaxUnavailable": 1, "Quorum": True},
        "Health": {"GracePeriod": "60s"},
    }}
    managers = {"ID": "managers", "Properties": {
        "Allocation": {"LogicalIDs": REPLICA_IPS}, "Instance": instance,
        "Flavor": {"Plugin": "selfhost/manager", "Properties": {
            "TokenFile": "/etc/infrakit/token", "ConfigDir": "/etc/infrakit/replicas",
            "TLS": {"cert": "/etc/infrakit/tls/replica.crt", "key": "/etc/infrakit/tls/replica.key",
                    "ca": "/etc/infrakit/tls/ca.crt"},
            "Backend": {"type": "etcd", "endpoints": [f"http://{ip}:2379" for ip in ETCD_IPS], "ttl": "5s"}}},
        "Updating": {"MaxSurge": 0, "MaxUnavailable": 1},
        "Health": {"GracePeriod": "60s"},
    }}
    return etcd, managers


def user_data(world: Ec2World, instance_id: str) -> str:
    raw = world.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(raw).decode()


def test_the_flavors_launch_pets_at_their_private_ips_with_the_init_they_rendered(world: Ec2World) -> None:
    etcd, managers = specs(world)
    for spec in (etcd, managers):
        world.call("Group.CommitGroup", {"Spec": spec, "Pretend": True})  # validated by both plugins
    cp = ControlPlane(etcd=etcd, managers=managers, plugins_dir=world.d.plugins_dir, timeout=30)
    try:
        member = cp.bootstrap(cp.etcd)
        replica = cp.bootstrap(cp.managers)
    finally:
        cp.close()
    by_id = {i["InstanceId"]: i for i in world.instances("etcd") + world.instances("managers")}
    m, r = by_id[member], by_id[replica]
    assert m["PrivateIpAddress"] == ETCD_IPS[0] and r["PrivateIpAddress"] == REPLICA_IPS[0]
    tags = {t["Key"]: t["Value"] for t in m["Tags"]}
    assert tags["infrakit.logical_id"] == ETCD_IPS[0] and tags["infrakit.config.hash"] == "bootstrap"

    init = user_data(world, member)
    assert "/etc/default/etcd" in init
    for expected in ('ETCD_INITIAL_CLUSTER_STATE="new"', f'ETCD_ADVERTISE_CLIENT_URLS="http://{ETCD_IPS[0]}:2379"',
                     f'ETCD_INITIAL_ADVERTISE_PEER_URLS="http://{ETCD_IPS[0]}:2380"', "/var/lib/etcd/infrakit/"):
        assert expected in init, (expected, init)

    init = user_data(world, replica)
    assert f"export INFRAKIT_GROUP_SELF_LOGICAL_ID={REPLICA_IPS[0]}" in init
    config = json.loads(init.split("<<'INFRAKIT_REPLICA'\n", 1)[1].split("\nINFRAKIT_REPLICA", 1)[0])
    assert config["manager"]["listen"] == f"{REPLICA_IPS[0]}:24864"
    assert config["manager"]["advertise"] == f"https://{REPLICA_IPS[0]}:24864"
    assert config["manager"]["backend"]["endpoints"][0] == f"http://{ETCD_IPS[0]}:2379"

    # Committed, the group finds its member not answering (moto runs no etcd): a quorum it cannot have,
    # so nothing is launched, nothing relabelled, and the group says so.
    world.commit(etcd)
    reason = world.wait("the etcd group to say it has no quorum",
                        lambda: "quorum lost" in (r := (world.describe("etcd").get("Status") or {}).get("Reason") or "")
                        and r, group="etcd")
    assert "0 of 3 members answer" in reason
    assert [i["InstanceId"] for i in world.instances("etcd")] == [member]
