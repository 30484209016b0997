"""The aws plugin driven by the real group controller against moto's standalone EC2 server.

Everything is a real process: moto on loopback, the aws daemon (boto3 over HTTP), the
vanilla flavor (no health probe, so HEALTHY as in InfraKit) and the manager daemon with
its file store. The tests look at the world through their own boto3 client, never at the
controller's memory: EC2 is the source of truth for membership.

Two facts of moto make EC2's state a precise witness here: it keeps terminated instances
visible (so "every instance ever launched for the group" is countable, and a duplicate
launched then destroyed still shows), and every RunInstances call makes exactly one
reservation (so reservations count launches).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import pytest

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import Daemons
from tests.runtime.plugins import moto_fixture
from tests.runtime.plugins.moto_fixture import observer, start_aws

# moto's standalone server and its helpers (pytest finds fixtures among a module's globals).
moto_server, moto, ec2, ami = moto_fixture.moto_server, moto_fixture.moto, moto_fixture.ec2, moto_fixture.ami

SIZE = 10
MAX_SURGE = 2
GROUP = "web"
LIVE = ("pending", "running")


class AwsStack:
    """aws + vanilla + manager daemons over one moto, driven through the manager's socket."""

    def __init__(self, daemons: Daemons, moto: str, ami: str, *aws_options: str) -> None:
        self.d, self.moto, self.ami = daemons, moto, ami
        debug = daemons.home / "aws-debug.yml"
        debug.write_text("log_level: debug\n")  # the aws daemon logs every RPC request it serves
        # moto launches only MinCount, so batches ask for all or nothing.
        start_aws(daemons, moto, "batch_min_count=all", *aws_options, env={"INFRAKIT_CONFIG": str(debug)}).close()
        daemons.start("vanilla")
        self.start_manager()

    def start_manager(self) -> None:
        self.d.start("manager", env={"INFRAKIT_GROUP_POLL_INTERVAL": "0.5s"})

    def spec(self, instance_type: str = "t2.micro", size: int = SIZE) -> dict[str, Any]:
        return {"ID": GROUP, "Properties": {
            "Allocation": {"Size": size},
            "Instance": {"Plugin": "aws", "Properties": {"ImageId": self.ami, "InstanceType": instance_type}},
            "Flavor": {"Plugin": "vanilla", "Properties": {"Init": ["echo hello"]}},
            "Updating": {"MaxSurge": MAX_SURGE, "MaxUnavailable": 0},
            "Health": {"GracePeriod": "5s"},
        }}

    def call(self, method: str, params: dict[str, Any]) -> Any:
        client = self.d.client("group", timeout=30)
        try:
            return client.call(method, {"Name": "group", **params})
        finally:
            client.close()

    def commit(self, spec: dict[str, Any]) -> str:
        """CommitGroup, retried while the manager names itself as the leader it has not yet become.

        (Manager._await_election settles as soon as the store advertises this replica's own
        location, a moment before ``Manager.lease`` is set; the call then refuses with
        "not the leader; the leader is at <its own socket>". Reported as a manager bug.)
        """
        deadline = time.monotonic() + 10
        while True:
            try:
                return self.call("Group.CommitGroup", {"Spec": spec, "Pretend": False})["Details"]
            except RemoteError as e:
                if "is not the leader" not in e.message or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def wait_converged(self, done: Any = None, timeout: float = 60.0, what: str = "convergence") -> dict[str, Any]:
        """The group's description once converged at SIZE and ``done(description)`` holds."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.call("Group.DescribeGroup", {"ID": GROUP})["Description"]
                if last.get("Converged") and len(last["Instances"]) == SIZE and (done is None or done(last)):
                    return last
            except Exception as e:  # the manager may be restarting or electing itself
                last = str(e)
            time.sleep(0.2)
        status = last.get("Status", last) if isinstance(last, dict) else last
        raise AssertionError(f"timed out waiting for {what}; last: {str(status)[:1500]}")

    def rpc_requests(self, method: str) -> int:
        """How many ``method`` requests the aws daemon served (its debug log of RPC traffic)."""
        return sum(1 for line in self.d.log("aws").splitlines()
                   if "request on " in line and f'"method": "{method}"' in line.replace('":"', '": "'))


def tagged(ec2: Any, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The group's instances as EC2 reports them (every state unless ``states`` is given)."""
    filters = [{"Name": "tag:infrakit.group", "Values": [GROUP]}]
    if states:
        filters.append({"Name": "instance-state-name", "Values": list(states)})
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def reservations(ec2: Any) -> int:
    """RunInstances calls that launched group instances (moto: one reservation per call)."""
    filters = [{"Name": "tag:infrakit.group", "Values": [GROUP]}]
    return sum(len(p["Reservations"]) for p in ec2.get_paginator("describe_instances").paginate(Filters=filters))


@pytest.fixture
def stack(daemons: Daemons, moto: str, ami: str) -> Any:
    s = AwsStack(daemons, moto, ami)
    try:
        yield s
    finally:
        daemons.stop_all()


def test_a_group_of_ten_converges_with_one_batched_run_instances_call(stack, ec2):
    assert stack.commit(stack.spec()) == f"Managing {SIZE} instances"
    desc = stack.wait_converged()
    live = tagged(ec2, LIVE)
    assert sorted(i["InstanceId"] for i in live) == sorted(i["ID"] for i in desc["Instances"])
    assert {i["InstanceType"] for i in live} == {"t2.micro"}
    assert all(i["Tags"] for i in live) and {t["Key"] for t in live[0]["Tags"]} >= {
        "infrakit.group", "infrakit.config.hash"}
    # One RunInstances call for all ten: the controller used ProvisionMany, never Provision.
    assert len(tagged(ec2)) == SIZE and reservations(ec2) == 1
    assert stack.rpc_requests("Instance.ProvisionMany") == 1
    assert stack.rpc_requests("Instance.Provision") == 0
    # Listed at least twice (before and after the launch): DescribeSince, the plugin keeping revisions by content.
    assert stack.rpc_requests("Instance.DescribeSince") >= 2


def test_without_provision_many_the_controller_launches_slot_by_slot(daemons, moto, ami, ec2):
    stack = AwsStack(daemons, moto, ami, "provision_many=false")
    client = daemons.client("aws")
    try:
        assert "InstanceBatch/0.1.0" not in client.hello()
    finally:
        client.close()
    stack.commit(stack.spec())
    stack.wait_converged()
    assert len(tagged(ec2, LIVE)) == SIZE and len(tagged(ec2)) == SIZE and reservations(ec2) == SIZE
    assert stack.rpc_requests("Instance.Provision") == SIZE
    assert stack.rpc_requests("Instance.ProvisionMany") == 0


def test_instances_terminated_behind_the_controllers_back_are_replaced_once(stack, ec2):
    stack.commit(stack.spec())
    first = stack.wait_converged()
    victims = sorted(i["ID"] for i in first["Instances"])[:3]
    ec2.terminate_instances(InstanceIds=victims)
    stack.wait_converged(lambda d: not set(victims) & {i["ID"] for i in d["Instances"]}, what="replacements")
    live = tagged(ec2, LIVE)
    assert len(live) == SIZE and not set(victims) & {i["InstanceId"] for i in live}
    # Exactly three launches replaced the three lost: no duplicate was launched and destroyed again.
    states = collections.Counter(i["State"]["Name"] for i in tagged(ec2))
    assert sum(states.values()) == SIZE + 3, states
    assert stack.rpc_requests("Instance.Destroy") == 0, "nothing live was destroyed"


class LiveSampler(threading.Thread):
    """Counts the group's pending/running instances in EC2, by instance type, continuously."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True, name="live-sampler")
        self.ec2 = observer(endpoint)
        self.samples: list[collections.Counter[str]] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append(collections.Counter(i["InstanceType"] for i in tagged(self.ec2, LIVE)))
            except Exception as e:
                self.errors.append(repr(e))
            time.sleep(0.02)

    def stop(self) -> list[collections.Counter[str]]:
        self._halt.set()
        self.join(30)
        return self.samples


def test_a_rolling_update_of_the_instance_type_stays_within_size_and_surge(stack, ec2, moto):
    stack.commit(stack.spec("t2.micro"))
    stack.wait_converged()
    sampler = LiveSampler(moto)
    sampler.start()
    try:
        assert stack.commit(stack.spec("t3.micro")) == f"Performing a rolling update on {SIZE} instances"
        stack.wait_converged(lambda d: {i["InstanceType"] for i in tagged(ec2, LIVE)} == {"t3.micro"},
                             timeout=90, what="every instance on t3.micro")
    finally:
        samples = sampler.stop()
    assert not sampler.errors, sampler.errors[:3]
    totals = [sum(s.values()) for s in samples]
    mixed = [s for s in samples if s["t2.micro"] and s["t3.micro"]]
    assert mixed, "the sampler must have watched the rollout in progress"
    assert min(totals) >= SIZE, f"running instances dropped to {min(totals)} during the rollout"
    assert max(totals) <= SIZE + MAX_SURGE, f"running instances reached {max(totals)} (MaxSurge {MAX_SURGE})"
    live = tagged(ec2, LIVE)
    assert len(live) == SIZE and {i["InstanceType"] for i in live} == {"t3.micro"}
    # Ten replacements, each launched once; the ten old instances terminated.
    assert len(tagged(ec2)) == 2 * SIZE
    assert collections.Counter(i["InstanceType"] for i in tagged(ec2, ("shutting-down", "terminated"))) == {
        "t2.micro": SIZE}


def test_a_manager_killed_right_after_a_launch_launches_no_duplicate_on_restart(stack, ec2, daemons):
    stack.commit(stack.spec())
    deadline = time.monotonic() + 30
    while not tagged(ec2):  # the first launch has reached EC2 ...
        assert time.monotonic() < deadline, "the controller never launched"
    daemons.kill("group")  # ... and the controller dies at once (SIGKILL: no cleanup, no goodbye)
    launched_before = len(tagged(ec2))
    stack.start_manager()
    desc = stack.wait_converged(what="convergence after the restart")
    live = tagged(ec2, LIVE)
    assert len(live) == SIZE and sorted(i["InstanceId"] for i in live) == sorted(i["ID"] for i in desc["Instances"])
    # The restarted controller found the tagged instances and launched nothing more: every
    # instance the group ever had is one of the ten live ones.
    assert launched_before == SIZE and len(tagged(ec2)) == SIZE
