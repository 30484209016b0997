"""A group spread over three subnets, through the real group controller, against moto.

Real processes throughout: moto behind ``moto_front`` (which refuses capacity in a subnet on
request, as EC2 does when a zone runs dry), the aws daemon (boto3 over HTTP), the spread
selector daemon, vanilla and the manager. The world is read from EC2 with an observer client.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.runtime.conftest import Daemons
from tests.runtime.plugins import moto_fixture
from tests.runtime.plugins.ec2_world import ZONES, Ec2World, Sampler
from tests.runtime.plugins.moto_fixture import configure

moto_server, moto, ec2, ami = moto_fixture.moto_server, moto_fixture.moto, moto_fixture.ec2, moto_fixture.ami

GROUP, SIZE = "web", 9


def spread_spec(world: Ec2World, size: int = SIZE) -> dict[str, Any]:
    return {"ID": GROUP, "Properties": {
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "spread", "Properties": [
            {"Name": f"us-east-1{z}", "Plugin": "aws",
             "Properties": {"ImageId": world.ami, "InstanceType": "t3.micro", "SubnetId": world.subnets[z]}}
            for z in ZONES]},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Init": ["echo hello"]}},
        "Updating": {"MaxSurge": 1, "MaxUnavailable": 0},
        "Health": {"GracePeriod": "5s"},
    }}


@pytest.fixture
def world(daemons: Daemons, moto: str, ami: str) -> Any:
    w = Ec2World(daemons, moto, ami)
    w.start_aws()
    w.start("spread", "backoff_base=1", "backoff_max=3")
    w.start("vanilla")
    w.start_manager()
    try:
        yield w
    finally:
        daemons.stop_all()


def test_nine_members_over_three_subnets_are_balanced_three_three_three(world):
    assert world.commit(spread_spec(world)) == f"Managing {SIZE} instances"
    world.wait("9 converged members", lambda: world.converged(GROUP, SIZE), group=GROUP)
    assert world.by_zone(GROUP) == {"a": 3, "b": 3, "c": 3}
    live = world.instances(GROUP)
    assert {t["Key"] for i in live for t in i["Tags"]} >= {"infrakit.group", "infrakit.config.hash", "infrakit.choice"}
    assert {next(t["Value"] for t in i["Tags"] if t["Key"] == "infrakit.choice") for i in live} == {
        "us-east-1a", "us-east-1b", "us-east-1c"}
    # Three choices on one aws daemon: the first launch was one ProvisionMany, three RunInstances.
    assert configure(world.endpoint)["counts"].get("RunInstances") == 3


def test_a_subnet_without_capacity_gives_its_share_away_and_gets_it_back_never_below_nine_ready(world):
    configure(world.endpoint, refuse_subnets=[world.subnets["c"]])
    world.commit(spread_spec(world))
    world.wait("9 members over two subnets", lambda: world.converged(GROUP, SIZE), group=GROUP)
    outage = world.by_zone(GROUP)
    assert outage["c"] == 0 and sorted(outage.values()) == [0, 4, 5], outage
    # Once its backoff expires subnet c is tried again (a move back); still refused, that costs no instance.
    runs = configure(world.endpoint)["counts"]["RunInstances"]
    world.wait("subnet c tried again", lambda: configure(world.endpoint)["counts"]["RunInstances"] > runs + 1,
               group=GROUP)
    assert len(world.instances(GROUP, states=None)) == SIZE, "a refused move launched an instance elsewhere"

    def sample() -> tuple[int, int]:
        status = world.describe(GROUP).get("Status") or {}
        return len(world.instances(GROUP)), int(status.get("Healthy", 0))

    sampler = Sampler(sample)
    sampler.start()
    try:
        configure(world.endpoint, refuse_subnets=[])
        world.wait("3/3/3 again", lambda: world.by_zone(GROUP) == {"a": 3, "b": 3, "c": 3}
                   and world.converged(GROUP, SIZE), timeout=120, group=GROUP)
    finally:
        samples = sampler.stop()
    assert not sampler.errors, sampler.errors[:3]
    assert len(samples) > 10, "the sampler must have watched the rebalance"
    live, healthy = min(s[0] for s in samples), min(s[1] for s in samples)
    assert live >= SIZE, f"live instances dropped to {live} during the rebalance"
    assert healthy >= SIZE, f"healthy members dropped to {healthy} during the rebalance (MaxUnavailable 0)"
    assert max(s[0] for s in samples) <= SIZE + 1, "never above size + MaxSurge"
    # Three members moved: three launched into subnet c, three terminated elsewhere.
    ever = world.instances(GROUP, states=None)
    assert len(ever) == SIZE + 3, [(i["InstanceId"], i["State"]["Name"]) for i in ever]


def test_pets_pinned_to_their_subnets_get_their_addresses_there(world):
    pins = {"a": ["10.0.1.10", "10.0.1.11"], "b": ["10.0.2.10"], "c": ["10.0.3.10"]}
    spec = spread_spec(world)
    spec["Properties"]["Allocation"] = {"LogicalIDs": [ip for ips in pins.values() for ip in ips]}
    spec["Properties"]["Updating"] = {"MaxSurge": 0, "MaxUnavailable": 1}
    for choice, z in zip(spec["Properties"]["Instance"]["Properties"], ZONES, strict=True):
        choice["Instances"] = pins[z]
    world.commit(spec)
    world.wait("4 pets", lambda: world.converged(GROUP, 4), group=GROUP)
    placed = {i["PrivateIpAddress"]: world.zone_of[i["SubnetId"]] for i in world.instances(GROUP)}
    assert placed == {ip: z for z, ips in pins.items() for ip in ips}
