"""A VPC in moto and the daemons that run groups in it, for the EC2 scenario tests.

``Ec2World`` builds, through its own boto3 clients, what an operator would have: a VPC with
one subnet per zone (``us-east-1a/b/c``), optionally a target group; then starts real daemons
(aws, a selector, vanilla, targetgroup, manager) on real sockets and drives the manager like a
client would. Tests look at EC2 and ELBv2 through the observer clients, never at the
controller's memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import boto3

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import Daemons
from tests.runtime.plugins.moto_fixture import CREDS, REGION, observer

LIVE = ("pending", "running")
ZONES = ("a", "b", "c")


def elb_observer(endpoint: str) -> Any:
    return boto3.client("elbv2", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="observer",
                        aws_secret_access_key="observer")


class Ec2World:
    """One moto endpoint, one VPC with a subnet per zone, and the daemons a scenario asks for."""

    def __init__(self, daemons: Daemons, endpoint: str, ami: str) -> None:
        self.d, self.endpoint, self.ami = daemons, endpoint, ami
        self.ec2, self.elb = observer(endpoint), elb_observer(endpoint)
        self.vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.subnets = {z: self.ec2.create_subnet(VpcId=self.vpc, CidrBlock=f"10.0.{i + 1}.0/24",
                                                  AvailabilityZone=f"{REGION}{z}")["Subnet"]["SubnetId"]
                        for i, z in enumerate(ZONES)}
        self.zone_of = {s: z for z, s in self.subnets.items()}

    # -- daemons -------------------------------------------------------------------------------

    def start_aws(self, *options: str) -> None:
        opts = ["-o", f"endpoint_url={self.endpoint}", "-o", f"region={REGION}",
                # moto launches only MinCount: batches ask for all or nothing. Two attempts: a refused
                # launch (HTTP 500, as EC2 answers InsufficientInstanceCapacity) is retried once.
                "-o", "batch_min_count=all", "-o", "max_attempts=2"]
        for o in options:
            opts += ["-o", o]
        self.d.start("aws", *opts, env=CREDS)

    def start(self, kind: str, *options: str, env: dict[str, str] | None = None) -> None:
        opts: list[str] = []
        for o in options:
            opts += ["-o", o]
        self.d.start(kind, *opts, env=env)

    def start_manager(self) -> None:
        self.d.start("manager", env={"INFRAKIT_GROUP_POLL_INTERVAL": "0.5s"})

    # -- the manager ---------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any]) -> Any:
        client = self.d.client("group", timeout=60)
        try:
            return client.call(method, {"Name": "group", **params})
        finally:
            client.close()

    def commit(self, spec: dict[str, Any]) -> str:
        """CommitGroup, retried while a fresh manager is still electing itself."""
        deadline = time.monotonic() + 15
        while True:
            try:
                return self.call("Group.CommitGroup", {"Spec": spec, "Pretend": False})["Details"]
            except RemoteError as e:
                if "is not the leader" not in e.message or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def describe(self, group: str) -> dict[str, Any]:
        return self.call("Group.DescribeGroup", {"ID": group})["Description"]

    def wait(self, what: str, done: Callable[[], Any], timeout: float = 90.0, group: str | None = None) -> Any:
        """Poll ``done`` until it returns something true; fail naming ``what`` and the group's status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                result = done()
            except RemoteError:
                result = None
            if result:
                return result
            time.sleep(0.2)
        status: Any = None
        if group is not None:
            try:
                status = self.describe(group).get("Status")
            except Exception as e:
                status = str(e)
        raise AssertionError(f"timed out waiting for {what}; group status: {str(status)[:2000]}")

    def converged(self, group: str, size: int) -> bool:
        desc = self.describe(group)
        status = desc.get("Status") or {}
        return bool(desc.get("Converged")) and len(desc["Instances"]) == size and status.get("Healthy") == size

    # -- EC2 as the world sees it -----------------------------------------------------------------

    def instances(self, group: str, states: tuple[str, ...] | None = LIVE) -> list[dict[str, Any]]:
        filters = [{"Name": "tag:infrakit.group", "Values": [group]}]
        if states:
            filters.append({"Name": "instance-state-name", "Values": list(states)})
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=filters)
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def by_zone(self, group: str) -> dict[str, int]:
        counts = dict.fromkeys(ZONES, 0)
        for i in self.instances(group):
            counts[self.zone_of[i["SubnetId"]]] += 1
        return counts


class Sampler(threading.Thread):
    """Calls ``sample()`` continuously on its own thread until stopped; keeps every answer."""

    def __init__(self, sample: Callable[[], Any], period: float = 0.05) -> None:
        super().__init__(daemon=True, name="sampler")
        self.sample, self.period = sample, period
        self.samples: list[Any] = []
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as e:
                self.errors.append(repr(e))
            time.sleep(self.period)

    def stop(self) -> list[Any]:
        self._halt.set()
        self.join(30)
        return self.samples
