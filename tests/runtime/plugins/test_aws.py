"""The aws instance plugin against moto's standalone EC2 server: the real daemon, real HTTP, real boto3.

moto runs as its own process on loopback (never in-process mocking, see ``moto_fixture``)
and is reset between tests. The daemon gets fake credentials in its environment only. Where a test must see
what the plugin sends (ClientToken, request counts) it runs the plugin object in-process
against the same server and watches botocore's event hooks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from typing import Any

import pytest

from infrakit_runtime.plugins.instance import aws
from infrakit_runtime.rpc.errors import RemoteError
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import ValidationError
from tests.runtime.plugins import moto_fixture
from tests.runtime.plugins.moto_fixture import ACCESS_KEY, CREDS, REGION, SECRET_KEY, start_aws

# moto's standalone server and its helpers (pytest finds fixtures among a module's globals).
moto_server, moto, ec2, ami = moto_fixture.moto_server, moto_fixture.moto, moto_fixture.ec2, moto_fixture.ami


@pytest.fixture
def plugin(daemons: Any, moto: str) -> Any:
    return start_aws(daemons, moto)


def spec(ami: str, **kw: Any) -> dict[str, Any]:
    props = {"ImageId": ami, "InstanceType": "t3.micro", **kw.pop("props", {})}
    return {"Properties": props, "Tags": kw.pop("tags", {}), "Init": kw.pop("init", ""),
            "LogicalID": kw.pop("logical_id", None)}


def provision(plugin: Any, s: dict[str, Any]) -> str:
    return plugin.call("Instance.Provision", {"Type": "", "Spec": s})["ID"]


def ec2_instance(ec2: Any, instance_id: str) -> dict[str, Any]:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def tags_of(obj: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in obj.get("Tags") or []}


def test_provision_tags_the_instance_and_its_volumes_at_launch(plugin, ec2, ami):
    iid = provision(plugin, spec(ami, tags={"infrakit.group": "web", "infrakit.config.hash": "h1", "team": "a"}))
    raw = ec2_instance(ec2, iid)
    assert tags_of(raw) == {"infrakit.group": "web", "infrakit.config.hash": "h1", "team": "a"}
    assert raw["InstanceType"] == "t3.micro" and raw["ImageId"] == ami
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])["Volumes"]
    assert volumes and all(tags_of(v)["infrakit.group"] == "web" and tags_of(v)["team"] == "a" for v in volumes)


def test_describe_ands_tags_skips_terminated_and_reports_properties(plugin, ec2, ami):
    a1 = provision(plugin, spec(ami, tags={"infrakit.group": "a", "role": "x"}))
    a2 = provision(plugin, spec(ami, tags={"infrakit.group": "a", "role": "y"}))
    gone = provision(plugin, spec(ami, tags={"infrakit.group": "a", "role": "x"}))
    provision(plugin, spec(ami, tags={"infrakit.group": "b", "role": "x"}))
    plugin.call("Instance.Destroy", {"Type": "", "Instance": gone, "Context": {"Reason": "terminate"}})

    def ids(tags: dict[str, str], props: bool = False) -> dict[str, Any]:
        found = plugin.call("Instance.DescribeInstances", {"Type": "", "Tags": tags, "Properties": props})
        return {d["ID"]: d for d in found["Descriptions"]}

    assert set(ids({"infrakit.group": "a"})) == {a1, a2}
    assert set(ids({"infrakit.group": "a", "role": "x"})) == {a1}
    assert ids({"infrakit.group": "a", "role": "z"}) == {}
    plain = ids({"infrakit.group": "a", "role": "y"})[a2]
    assert "Properties" not in plain and plain["Tags"] == {"infrakit.group": "a", "role": "y"}
    props = ids({"infrakit.group": "a", "role": "y"}, props=True)[a2]["Properties"]
    raw = ec2_instance(ec2, a2)
    assert props["Address"] == props["PrivateIpAddress"] == raw["PrivateIpAddress"]
    assert props["PublicIpAddress"] == raw.get("PublicIpAddress")
    assert props["State"] in ("pending", "running")
    assert props["InstanceType"] == "t3.micro" and props["ImageId"] == ami
    assert props["Placement"]["AvailabilityZone"].startswith(REGION)
    assert props["LaunchTime"] == raw["LaunchTime"].isoformat()


def test_label_merges_tags(plugin, ec2, ami):
    # (EC2 answers CreateTags on an unknown ID with InvalidInstanceID.NotFound; moto accepts it,
    # so the not-found path cannot be shown here.)
    iid = provision(plugin, spec(ami, tags={"infrakit.group": "web", "infrakit.config.hash": "old"}))
    plugin.call("Instance.Label", {"Type": "", "Instance": iid, "Labels": {"infrakit.config.hash": "new", "x": "1"}})
    assert tags_of(ec2_instance(ec2, iid)) == {"infrakit.group": "web", "infrakit.config.hash": "new", "x": "1"}
    found = plugin.call("Instance.DescribeInstances", {"Type": "", "Tags": {"infrakit.config.hash": "new"}})
    assert [d["ID"] for d in found["Descriptions"]] == [iid]


def test_destroy_terminates_and_destroying_a_missing_instance_is_fine(plugin, ec2, ami):
    iid = provision(plugin, spec(ami, tags={"infrakit.group": "web"}))
    plugin.call("Instance.Destroy", {"Type": "", "Instance": iid, "Context": {"Reason": "terminate"}})
    assert ec2_instance(ec2, iid)["State"]["Name"] in ("shutting-down", "terminated")
    plugin.call("Instance.Destroy", {"Type": "", "Instance": "i-0123456789abcdef0", "Context": {"Reason": "terminate"}})


def test_init_becomes_user_data(plugin, ec2, ami):
    init = "#!/bin/sh\necho hello > /tmp/hello\n"
    iid = provision(plugin, spec(ami, init=init))
    data = ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")["UserData"]["Value"]
    assert base64.b64decode(data).decode() == init


def test_ip_logical_id_becomes_the_private_ip_and_a_name_becomes_the_name_tag(plugin, ec2, ami):
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    pet = provision(plugin, spec(ami, props={"SubnetId": subnet}, logical_id="10.20.1.17", tags={"infrakit.group": "db"}))
    named = provision(plugin, spec(ami, logical_id="db-primary", tags={"infrakit.group": "db"}))
    raw = ec2_instance(ec2, pet)
    assert raw["PrivateIpAddress"] == "10.20.1.17"
    assert tags_of(raw)["infrakit.logical_id"] == "10.20.1.17" and "Name" not in tags_of(raw)
    assert tags_of(ec2_instance(ec2, named))["Name"] == "db-primary"
    found = plugin.call("Instance.DescribeInstances", {"Type": "", "Tags": {"infrakit.group": "db"}, "Properties": True})
    by_id = {d["ID"]: d for d in found["Descriptions"]}
    assert by_id[pet]["LogicalID"] == "10.20.1.17" == by_id[pet]["Properties"]["Address"]
    assert by_id[named]["LogicalID"] == "db-primary"


def test_provision_many_launches_identical_cattle_in_one_run_instances_call(daemons, moto, ec2, ami):
    plugin = start_aws(daemons, moto, "batch_min_count=all", "max_batch=4")
    hello = plugin.hello()
    assert "InstanceBatch/0.1.0" in hello
    cattle = spec(ami, tags={"infrakit.group": "web", "infrakit.config.hash": "h"})
    pet = spec(ami, tags={"infrakit.group": "web", "infrakit.config.hash": "h"}, logical_id="web-pet")
    results = plugin.call("Instance.ProvisionMany", {"Type": "", "Specs": [cattle] * 6 + [pet]})["Results"]
    assert [r["Error"] for r in results] == [None] * 7
    ids = [r["ID"] for r in results]
    assert len(set(ids)) == 7
    reservations = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    sizes = sorted(len(r["Instances"]) for r in reservations)
    assert sizes == [1, 2, 4]  # the pet alone; 6 cattle in chunks of max_batch=4
    by_reservation = {i["InstanceId"]: r["ReservationId"] for r in reservations for i in r["Instances"]}
    assert len({by_reservation[i] for i in ids[:4]}) == 1


def test_a_partial_batch_launch_reports_the_missing_slots(plugin, ec2, ami):
    # With MinCount=1 EC2 may launch fewer than MaxCount; moto always launches MinCount,
    # which is exactly what a capacity-limited launch looks like.
    results = plugin.call("Instance.ProvisionMany", {"Type": "", "Specs": [spec(ami)] * 3})["Results"]
    assert results[0]["ID"] and results[0]["Error"] is None
    for r in results[1:]:
        assert r["ID"] is None and "launched 1 of 3" in r["Error"]
    assert len(ec2.describe_instances()["Reservations"][0]["Instances"]) == 1


def test_ec2_errors_carry_the_aws_error_code(plugin):
    with pytest.raises(RemoteError) as err:
        provision(plugin, spec("ami-12345678"))
    assert err.value.code == -32000
    assert err.value.message.startswith("RunInstances failed: InvalidAMIID.NotFound: ")
    assert "ami-12345678" in err.value.message


def test_validate_lists_every_problem_over_the_wire(plugin, ami):
    props = {"ImageID": ami, "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": "8"}}],
             "MaxCount": 3}
    with pytest.raises(RemoteError) as err:
        plugin.call("Instance.Validate", {"Type": "", "Properties": props})
    msg = err.value.message
    assert "Properties.ImageID is not a field of RunInstancesRequest (did you mean ImageId?)" in msg
    assert "Properties.BlockDeviceMappings[0].Ebs.VolumeSize must be an integer, got string" in msg
    assert "Properties.ImageId is required unless Properties.LaunchTemplate is given" in msg
    assert "Properties.MaxCount cannot be set" in msg
    assert plugin.call("Instance.Validate", {"Type": "", "Properties": {"ImageId": ami}})["OK"] is True


@contextlib.asynccontextmanager
async def in_process(moto: str, **options: Any) -> Any:
    """The plugin object against moto, with a log of every EC2 request about to be sent.

    ``before-call`` fires once per API call with the serialized request: its body holds the
    query parameters exactly as they go out (ClientToken among them).
    """
    old = {k: os.environ.get(k) for k in CREDS}
    os.environ.update(CREDS)
    try:
        p = aws.build({"endpoint_url": moto, "region": REGION, **options})
        await p.ec2.connect()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    calls: list[tuple[str, dict[str, Any]]] = []
    p.ec2.client.meta.events.register(
        "before-call.ec2.*", lambda params, model, **kw: calls.append((model.name, dict(params["body"]))))
    p.calls = calls
    try:
        yield p
    finally:
        p.ec2.close()


def test_validate_makes_no_api_call_but_one_to_read_a_named_launch_template(moto, ami):
    async def main() -> None:
        async with in_process(moto) as p:
            with pytest.raises(ValidationError) as err:
                await p.validate({"Imageid": "x", "InstanceType": 3, "BlockDeviceMappings": [{"Ebs": {"VolumeSize": "8"}}]})
            assert len(err.value.problems) == 4
            await p.validate({"ImageId": ami, "InstanceType": "t3.micro"})
            assert p.calls == []
            await p.describe_instances({}, False)
            assert [name for name, _ in p.calls] == ["DescribeInstances"]
            with pytest.raises(ValidationError, match="LaunchTemplateName 'web' does not exist"):
                await p.validate({"LaunchTemplate": {"LaunchTemplateName": "web", "Version": "1"}})
            assert [name for name, _ in p.calls] == ["DescribeInstances", "DescribeLaunchTemplateVersions"]

    asyncio.run(main())


def test_client_token_is_stable_per_slot_and_attempt_and_slot_tags_stay_off_ec2(moto, ec2, ami):
    base = {"infrakit.group": "web", "infrakit.config.hash": "h1"}

    def cattle(slot: str, attempt: str = "1") -> instance.Spec:
        return instance.Spec(properties={"ImageId": ami}, tags={**base, "infrakit.slot": slot, "infrakit.attempt": attempt})

    async def main() -> list[str]:
        async with in_process(moto) as p:
            first = await p.provision(cattle("3"))
            await p.provision(cattle("3"))        # a retry of the same slot and attempt
            await p.provision(cattle("4"))        # another slot
            await p.provision(cattle("3", "2"))   # the same slot, a new attempt
            await p.provision(instance.Spec(properties={"ImageId": ami}, tags=base, logical_id="db1"))
            await p.provision(instance.Spec(properties={"ImageId": ami}, tags=base, logical_id="db1"))
            assert tags_of(ec2_instance(ec2, first)) == base
            return [params["ClientToken"] for name, params in p.calls if name == "RunInstances"]

    tokens = asyncio.run(main())
    assert all(t.startswith("ik1-") and len(t) <= 64 for t in tokens)
    assert tokens[0] == tokens[1]
    assert len({tokens[0], tokens[2], tokens[3], tokens[4]}) == 4
    assert tokens[4] == tokens[5]


def test_batch_client_token_is_stable_for_the_same_slots(moto, ami):
    specs = [instance.Spec(properties={"ImageId": ami}, tags={"infrakit.group": "w", "infrakit.slot": str(i)})
             for i in range(3)]

    async def main() -> list[str]:
        async with in_process(moto, batch_min_count="all") as p:
            await p.provision_many(specs)
            await p.provision_many(list(reversed(specs)))
            await p.provision_many(specs[:2])
            return [params["ClientToken"] for name, params in p.calls if name == "RunInstances"]

    first, retried, fewer = asyncio.run(main())
    assert first == retried != fewer


def test_throttling_is_retried_with_capped_jittered_backoff(moto, ami):
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    class Throttled:
        status_code = 400
        headers: dict[str, str] = {}

    async def main(throttles: int) -> Any:
        async with in_process(moto, throttle_retries=3, throttle_base=1.0, throttle_cap=2.0) as p:
            p.ec2._sleep = fake_sleep
            p.ec2._rng = lambda: 1.0
            left = [throttles]

            def throttle(**kw: Any) -> Any:
                if left[0] > 0:
                    left[0] -= 1
                    return Throttled(), {"Error": {"Code": "RequestLimitExceeded", "Message": "Request limit exceeded."}}
                return None

            p.ec2.client.meta.events.register_first("before-call.ec2.RunInstances", throttle)
            return await p.provision(instance.Spec(properties={"ImageId": ami}))

    assert asyncio.run(main(2)).startswith("i-")
    assert sleeps == [1.0, 2.0]
    sleeps.clear()
    with pytest.raises(aws.PluginError, match=r"^RunInstances failed: RequestLimitExceeded: Request limit exceeded\."):
        asyncio.run(main(10))
    assert sleeps == [1.0, 2.0, 2.0]


def test_credentials_never_reach_the_log_or_any_answer(daemons, moto, ami):
    config = daemons.home / "debug.yml"
    config.write_text("log_level: debug\n")
    daemons.env["INFRAKIT_CONFIG"] = str(config)  # debug: every RPC request and answer is logged too
    plugin = start_aws(daemons, moto)
    answers: list[str] = []
    iid = provision(plugin, spec(ami, tags={"infrakit.group": "web"}))
    for method, params in [
        ("Instance.DescribeInstances", {"Type": "", "Tags": {"infrakit.group": "web"}, "Properties": True}),
        ("Instance.Provision", {"Type": "", "Spec": spec("ami-00000000")}),
        ("Instance.Validate", {"Type": "", "Properties": {"ImageId": 5}}),
        ("Instance.Label", {"Type": "", "Instance": "i-0000000000000000f", "Labels": {"a": "b"}}),
        ("Instance.Destroy", {"Type": "", "Instance": iid, "Context": {"Reason": "terminate"}}),
    ]:
        try:
            answers.append(repr(plugin.call(method, params)))
        except RemoteError as e:
            answers.append(e.message)
    assert any("InvalidAMIID" in a for a in answers)
    daemons.stop_all()
    log = daemons.log("aws")
    assert "aws plugin: region us-east-1" in log
    for secret in (SECRET_KEY, ACCESS_KEY):
        assert secret not in log
        assert all(secret not in a for a in answers)


def test_bad_options_stop_the_daemon_with_every_problem(daemons, moto):
    proc = daemons.start("aws", "-o", "retry_mode=legacy", "-o", "bogus=1", "-o", "max_attempts=-2",
                         env=CREDS, wait=False)
    assert proc.wait(20) != 0
    log = daemons.log("aws")
    assert "retry_mode must be one of standard, adaptive" in log
    assert "unknown option 'bogus'" in log
    assert "max_attempts must be a positive integer" in log
