"""The targetgroup flavor through the real group controller, against moto's EC2 and ELBv2.

moto registers a target as healthy at once and forgets a deregistered one at once; its front
(``moto_front``) makes a fresh target ``initial`` for a second, a deregistered one ``draining``
for the target group's deregistration delay (2 s here), and a target the test names
``unhealthy``, and logs every register, deregister and terminate with its time. Each member's
"application" is a small HTTP server of the test's own that answers 503 for its first second
after the first probe (the instance is booting), then 200: vanilla probes it, and the
targetgroup flavor wraps vanilla, so registration has a real health signal to wait for.
"""

from __future__ import annotations

import http.server
import threading
import time
from typing import Any

import pytest

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import Daemons
from tests.runtime.plugins import moto_fixture
from tests.runtime.plugins.ec2_world import Ec2World, Sampler
from tests.runtime.plugins.moto_fixture import ACCESS_KEY, CREDS, SECRET_KEY, configure, front_events

moto_server, moto, ec2, ami = moto_fixture.moto_server, moto_fixture.moto, moto_fixture.ec2, moto_fixture.ami

GROUP, SIZE, DELAY, BOOT = "web", 3, 2, 1.0


class Apps(http.server.ThreadingHTTPServer):
    """Every member's application: ``GET /health/<instance ID>`` is 503 for BOOT seconds after its first probe."""

    def __init__(self) -> None:
        self.first_probe: dict[str, float] = {}
        self.first_ok: dict[str, float] = {}
        self.lock = threading.Lock()
        apps = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                iid, now = self.path.rsplit("/", 1)[-1], time.time()
                with apps.lock:
                    started = apps.first_probe.setdefault(iid, now)
                    up = now - started >= BOOT
                    if up:
                        apps.first_ok.setdefault(iid, now)
                self.send_response(200 if up else 503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/health/{{{{id}}}}"


@pytest.fixture
def apps() -> Any:
    a = Apps()
    try:
        yield a
    finally:
        a.shutdown()
        a.server_close()


@pytest.fixture
def world(daemons: Daemons, moto: str, ami: str) -> Any:
    w = Ec2World(daemons, moto, ami)
    tg = w.elb.create_target_group(Name="web", Protocol="HTTP", Port=80, VpcId=w.vpc, TargetType="instance")
    w.tg = tg["TargetGroups"][0]["TargetGroupArn"]
    w.elb.modify_target_group_attributes(TargetGroupArn=w.tg, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": str(DELAY)}])
    configure(moto, elb_initial=1.0)
    debug = daemons.home / "debug.yml"
    debug.write_text("log_level: debug\n")  # every RPC and every botocore line a daemon would log
    w.start_aws()
    w.start("vanilla")
    w.start("targetgroup", f"endpoint_url={moto}", "region=us-east-1", "max_attempts=2", "health_ttl=0.2",
            env={**CREDS, "INFRAKIT_CONFIG": str(debug)})
    w.start_manager()
    try:
        yield w
    finally:
        daemons.stop_all()


def spec(world: Ec2World, apps: Apps, instance_type: str = "t3.micro", **health: Any) -> dict[str, Any]:
    return {"ID": GROUP, "Properties": {
        "Allocation": {"Size": SIZE},
        "Instance": {"Plugin": "aws", "Properties": {"ImageId": world.ami, "InstanceType": instance_type,
                                                     "SubnetId": world.subnets["a"]}},
        "Flavor": {"Plugin": "targetgroup", "Properties": {
            "TargetGroups": ["web"], "HealthCheck": "ELB",
            "Flavor": {"Plugin": "vanilla", "Properties": {"Init": ["systemctl start web"],
                                                          "Health": {"HTTP": apps.url(), "Timeout": "2s"}}}}},
        "Updating": {"MaxSurge": 1, "MaxUnavailable": 0},
        "Health": {"GracePeriod": "3s", "UnhealthyThreshold": 2, **health},
    }}


def targets(world: Ec2World) -> dict[str, str]:
    return {d["Target"]["Id"]: d["TargetHealth"]["State"]
            for d in world.elb.describe_target_health(TargetGroupArn=world.tg)["TargetHealthDescriptions"]}


def healthy_targets(world: Ec2World) -> set[str]:
    return {t for t, s in targets(world).items() if s == "healthy"}


def live_ids(world: Ec2World) -> set[str]:
    return {i["InstanceId"] for i in world.instances(GROUP)}


def settled(world: Ec2World, instance_type: str) -> bool:
    live = world.instances(GROUP)
    return (world.converged(GROUP, SIZE) and {i["InstanceType"] for i in live} == {instance_type}
            and healthy_targets(world) == {i["InstanceId"] for i in live} and set(targets(world)) == live_ids(world))


def test_a_rollout_deregisters_before_destroying_and_registers_after_healthy_never_below_size(world, apps):
    world.commit(spec(world, apps))
    world.wait("3 members registered and healthy", lambda: settled(world, "t3.micro"), group=GROUP)
    old = live_ids(world)
    sampler = Sampler(lambda: len(healthy_targets(world)))
    sampler.start()
    try:
        world.commit(spec(world, apps, "t3.small"))
        world.wait("every member on t3.small, registered and healthy", lambda: settled(world, "t3.small"),
                   timeout=120, group=GROUP)
    finally:
        samples = sampler.stop()
    assert not sampler.errors, sampler.errors[:3]
    assert len(samples) > 20 and min(samples) >= SIZE, f"healthy targets dropped to {min(samples)}"
    new = live_ids(world)
    assert not old & new
    events = front_events(world.endpoint)

    def first(action: str, iid: str) -> float:
        return min(t for t, a, ids in events if a == action and iid in ids)

    for iid in old:
        deregistered, terminated = first("DeregisterTargets", iid), first("TerminateInstances", iid)
        assert terminated - deregistered >= DELAY, f"{iid} terminated {terminated - deregistered:.2f}s after " \
                                                   f"deregistration, before its {DELAY}s of draining ended"
    for iid in new:
        registered = first("RegisterTargets", iid)
        assert registered >= apps.first_ok[iid], f"{iid} registered before its application answered healthy"
        assert registered - apps.first_probe[iid] >= BOOT
    log = world.d.log("targetgroup")
    assert "DEBUG" in log, "the daemon logged at debug level"
    assert ACCESS_KEY not in log and SECRET_KEY not in log, "credentials reached the targetgroup daemon's log"


def test_a_member_the_load_balancer_finds_unhealthy_is_replaced(world, apps):
    world.commit(spec(world, apps))
    world.wait("3 members registered and healthy", lambda: settled(world, "t3.micro"), group=GROUP)
    victim = sorted(live_ids(world))[0]
    configure(world.endpoint, unhealthy=[victim])
    world.wait("the unhealthy member replaced", lambda: victim not in live_ids(world) and settled(world, "t3.micro"),
               group=GROUP)
    terminated = [ids for _, a, ids in front_events(world.endpoint) if a == "TerminateInstances"]
    assert terminated == [[victim]], terminated
    assert len(world.instances(GROUP, states=None)) == SIZE + 1


def test_the_brake_holds_when_the_load_balancer_finds_most_members_unhealthy(world, apps):
    world.commit(spec(world, apps, MaxUnhealthy=1))
    world.wait("3 members registered and healthy", lambda: settled(world, "t3.micro"), group=GROUP)
    members = live_ids(world)
    configure(world.endpoint, unhealthy=sorted(members))
    status = world.wait("the brake", lambda: (world.describe(GROUP).get("Status") or {}).get("Braked")
                        and world.describe(GROUP)["Status"], group=GROUP)
    assert status["Braked"] is True and status["Healthy"] == 0
    configure(world.endpoint, unhealthy=[])
    world.wait("healthy again, nobody replaced", lambda: settled(world, "t3.micro"), group=GROUP)
    assert live_ids(world) == members
    assert not [e for e in front_events(world.endpoint) if e[1] == "TerminateInstances"]


def test_validate_names_every_problem_and_checks_the_target_groups_exist(world, apps):
    bad = spec(world, apps)
    bad["Properties"]["Flavor"]["Properties"] = {
        "TargetGroups": ["web", "nope", 5], "HealthCheck": "LB", "Port": 70000, "Colour": "red",
        "DrainTimeout": "1h", "Flavor": {"Plugin": "vanilla", "Properties": {"Init": "not a list"}}}
    with pytest.raises(RemoteError) as err:
        world.commit(bad)
    message = err.value.message
    for expected in ["Properties.Colour is not a field", "Properties.TargetGroups[2] must be a target group ARN or name",
                     "Properties.Port must be a port number (1-65535), got 70000",
                     "Properties.HealthCheck must be one of EC2, ELB, got 'LB'",
                     "Properties.DrainTimeout must be at most 870s"]:
        assert expected in message, (expected, message)
    bad["Properties"]["Flavor"]["Properties"] = {"TargetGroups": ["web", "nope"],
                                                 "Flavor": {"Plugin": "vanilla", "Properties": {"Init": 7}}}
    with pytest.raises(RemoteError) as err:
        world.commit(bad)
    assert "Properties.TargetGroups[1]: target group 'nope' does not exist" in err.value.message
    assert "Properties.Flavor (vanilla): Init must be" in err.value.message, err.value.message
    with pytest.raises(RemoteError):
        world.describe(GROUP)  # nothing was committed


def test_fifty_members_cost_one_target_health_read_and_one_registration(world):
    ids = [i["InstanceId"] for i in world.ec2.run_instances(ImageId=world.ami, MinCount=50, MaxCount=50,
                                                               SubnetId=world.subnets["a"])["Instances"]]
    members = [{"ID": i, "LogicalID": None, "Tags": {}, "Properties": {"State": "running"}} for i in ids]
    props = {"TargetGroups": [world.tg], "HealthCheck": "ELB"}
    client = world.d.client("targetgroup", timeout=30)
    try:
        before = configure(world.endpoint)["counts"]
        first = client.call("Flavor.HealthyMany", {"Type": "", "Properties": props, "Instances": members})["Healths"]
        after = configure(world.endpoint)["counts"]
        assert first == [0] * 50, "registered just now: initial, not healthy yet"
        assert after.get("RegisterTargets", 0) - before.get("RegisterTargets", 0) == 1
        assert after.get("DescribeTargetHealth", 0) - before.get("DescribeTargetHealth", 0) == 1
        assert set(targets(world)) == set(ids)
        world.wait("the target group finds them healthy", lambda: client.call(
            "Flavor.HealthyMany", {"Type": "", "Properties": props, "Instances": members})["Healths"] == [1] * 50)
        assert configure(world.endpoint)["counts"]["RegisterTargets"] == after["RegisterTargets"]
    finally:
        client.close()
