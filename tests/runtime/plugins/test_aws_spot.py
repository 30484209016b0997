"""Spot with on-demand fallback (a tiered selector over two aws choices), through the real controller, against moto.

moto launches spot instances (InstanceMarketOptions) but never refuses one and never
interrupts one; its front refuses spot launches on request (InsufficientInstanceCapacity, as
EC2 answers when the spot pool is dry) and gives an instance a spot interruption notice
(DescribeSpotInstanceRequests: marked-for-termination), terminating it after the notice period
as EC2 does.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.runtime.conftest import Daemons
from tests.runtime.plugins import moto_fixture
from tests.runtime.plugins.ec2_world import Ec2World
from tests.runtime.plugins.moto_fixture import configure, front_events

moto_server, moto, ec2, ami = moto_fixture.moto_server, moto_fixture.moto, moto_fixture.ec2, moto_fixture.ami

GROUP = "batch"
BACKOFF_MAX = 0.5


def spec(world: Ec2World, size: int) -> dict[str, Any]:
    base = {"ImageId": world.ami, "InstanceType": "c5.large", "SubnetId": world.subnets["a"]}
    return {"ID": GROUP, "Properties": {
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "tiered", "Properties": [
            {"Name": "spot", "Plugin": "aws", "Properties": {**base, "InstanceMarketOptions": {
                "MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time",
                                                      "InstanceInterruptionBehavior": "terminate"}}}},
            {"Name": "on-demand", "Plugin": "aws", "Properties": base}]},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Init": ["run-jobs"]}},
        "Updating": {"MaxSurge": 1, "MaxUnavailable": 0},
        "Health": {"GracePeriod": "5s"},
    }}


@pytest.fixture
def world(daemons: Daemons, moto: str, ami: str) -> Any:
    w = Ec2World(daemons, moto, ami)
    w.start_aws()
    w.start("tiered", "backoff_base=0.2", f"backoff_max={BACKOFF_MAX}")
    w.start("vanilla")
    w.start_manager()
    try:
        yield w
    finally:
        daemons.stop_all()


def markets(world: Ec2World) -> dict[str, str]:
    """Instance ID -> spot or on-demand, for every live member."""
    return {i["InstanceId"]: i.get("InstanceLifecycle", "on-demand") for i in world.instances(GROUP)}


def test_members_fall_back_to_on_demand_while_spot_is_refused_and_replacements_use_spot_again_after(world):
    configure(world.endpoint, refuse_spot=True)
    world.commit(spec(world, 3))
    world.wait("3 members", lambda: world.converged(GROUP, 3), group=GROUP)
    assert sorted(markets(world).values()) == ["on-demand"] * 3
    choices = {next(t["Value"] for t in i["Tags"] if t["Key"] == "infrakit.choice") for i in world.instances(GROUP)}
    assert choices == {"on-demand"}
    refused = configure(world.endpoint)["counts"]["RunInstances"]
    assert refused >= 2, "spot was asked first"
    configure(world.endpoint, refuse_spot=False)

    def replace_on_demand_until_spot() -> bool:
        # Each replacement asks spot first once its backoff is over; drive replacements until one lands there.
        now = markets(world)
        if "spot" in now.values():
            return True
        if world.converged(GROUP, 3):
            world.ec2.terminate_instances(InstanceIds=[sorted(now)[0]])
        return False

    world.wait("a replacement on spot", replace_on_demand_until_spot, group=GROUP)
    world.wait("3 members", lambda: world.converged(GROUP, 3), group=GROUP)
    assert "spot" in markets(world).values()


def test_a_spot_member_with_an_interruption_notice_is_replaced_before_ec2_takes_it(world):
    configure(world.endpoint, interruption_notice=120)
    world.commit(spec(world, 2))
    world.wait("2 spot members", lambda: world.converged(GROUP, 2) and set(markets(world).values()) == {"spot"},
               group=GROUP)
    before = set(markets(world))
    victim = sorted(before)[0]
    configure(world.endpoint, interrupt=[victim])
    world.wait("the victim replaced", lambda: victim not in markets(world) and world.converged(GROUP, 2), group=GROUP)
    events = front_events(world.endpoint)
    terminated = [t for t, a, ids in events if a == "TerminateInstances" and victim in ids]
    assert terminated, "the controller terminated it, not EC2 at the end of the notice"
    (replacement,) = set(markets(world)) - before
    launched = {i: t for t, a, ids in events if a == "RunInstances" for i in ids}
    assert launched[replacement] < terminated[0], "the replacement came first (MaxSurge 1), then the victim went"
    assert markets(world)[replacement] == "spot"
    assert len(world.instances(GROUP, states=None)) == 3


def test_a_spot_member_ec2_took_without_notice_is_replaced_like_any_lost_member(world):
    world.commit(spec(world, 2))
    world.wait("2 spot members", lambda: world.converged(GROUP, 2) and set(markets(world).values()) == {"spot"},
               group=GROUP)
    victim = sorted(markets(world))[0]
    world.ec2.terminate_instances(InstanceIds=[victim])
    world.wait("the victim replaced", lambda: victim not in markets(world) and world.converged(GROUP, 2), group=GROUP)
    assert set(markets(world).values()) == {"spot"}
