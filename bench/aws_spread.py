"""1,000 members over three subnets behind a target group, one subnet dry then back: ``python -m bench.aws --spread``.

Real daemons over moto (behind moto_front): aws, spread (three choices on the one aws daemon,
one per subnet), targetgroup (HealthCheck ELB, no wrapped flavor) and the manager. Three
phases, each counted at moto by action:

1. **outage**: subnet c refuses capacity from the start; the group of N converges over a and b;
2. **recovery**: c accepts again; members move back (MaxSurge 10%, MaxUnavailable 0) until the
   group is balanced and converged; the fewest live instances during the moves is rebuilt
   from the front's log of launches and terminations (no sampling load on moto);
3. **steady**: requests per reconcile pass once nothing is left to do.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import boto3

from bench import aws, common
from bench.common import machine, table, write_section
from infrakit_runtime.rpc.errors import RemoteError

TITLE = "AWS: 1,000 members over three subnets (moto)"
ZONES = ("a", "b", "c")


def observers(endpoint: str) -> tuple[Any, Any]:
    kw = {"region_name": "us-east-1", "endpoint_url": endpoint, "aws_access_key_id": "testing",
          "aws_secret_access_key": "testing"}
    return boto3.client("ec2", **kw), boto3.client("elbv2", **kw)


@contextlib.contextmanager
def world(endpoint: str) -> Iterator[tuple[common.Home, dict[str, str], str]]:
    """A VPC with a /20 subnet per zone and a target group, and the daemons, in a fresh home."""
    aws.reset(int(endpoint.rsplit(":", 1)[1]))
    ec2, elb = observers(endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = {z: ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{16 * (i + 1)}.0/20",
                                    AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
               for i, z in enumerate(ZONES)}
    tg = elb.create_target_group(Name="bench", Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    elb.modify_target_group_attributes(TargetGroupArn=tg, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "0"}])
    with common.home() as h:
        conn = ["-o", f"endpoint_url={endpoint}", "-o", "region=us-east-1"]
        h.start("aws", *conn, "-o", "batch_min_count=all", "-o", "max_attempts=2", env=aws.CREDS)
        slow = {"INFRAKIT_CLIENT_TIMEOUT": "300s"}  # moto takes 15 s and more to list 1,000 instances
        h.start("spread", "-o", "backoff_base=2", "-o", "backoff_max=10", env=slow)
        h.start("targetgroup", *conn, env={**aws.CREDS, **slow})
        h.start("manager", "-o", "events_json=true",
                env={"INFRAKIT_GROUP_POLL_INTERVAL": aws.POLL, "INFRAKIT_CLIENT_TIMEOUT": "300s"})
        yield h, subnets, tg


def spec(n: int, subnets: dict[str, str], tg: str) -> dict[str, Any]:
    return {"ID": aws.GROUP, "Properties": {
        "Allocation": {"Size": n},
        "Instance": {"Plugin": "spread", "Properties": [
            {"Name": f"us-east-1{z}", "Plugin": "aws",
             "Properties": {"ImageId": "ami-03cf127a", "InstanceType": "t3.micro", "SubnetId": subnets[z]}}
            for z in ZONES]},
        "Flavor": {"Plugin": "targetgroup", "Properties": {"TargetGroups": [tg], "HealthCheck": "ELB"}},
        "Updating": {"MaxSurge": "10%", "MaxUnavailable": 0},
    }}


def by_action(records: list[tuple[str, bool, float, float]], start: float, end: float,
              probes: list[float] | None = None) -> dict[str, int]:
    """Requests per action that moto answered in [start, end], less one DescribeInstances per
    DescribeGroup confirmation the bench itself made in that window (``probes``)."""
    out: dict[str, int] = {}
    for action, _, t0, _ in records:
        if start <= t0 <= end:
            out[action] = out.get(action, 0) + 1
    ours = sum(1 for t in probes or [] if start <= t <= end)
    if ours and "DescribeInstances" in out:
        out["DescribeInstances"] -= ours
    return dict(sorted(out.items()))


def balance(endpoint: str, subnets: dict[str, str]) -> dict[str, int]:
    ec2, _ = observers(endpoint)
    counts = dict.fromkeys(ZONES, 0)
    zone_of = {s: z for z, s in subnets.items()}
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:infrakit.group", "Values": [aws.GROUP]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    for page in pages:
        for r in page["Reservations"]:
            for i in r["Instances"]:
                counts[zone_of[i["SubnetId"]]] += 1
    return counts


def status(h: common.Home) -> dict[str, Any]:
    try:
        desc = aws.manager_call(h, "Group.DescribeGroup", {"ID": aws.GROUP}, timeout=300)["Description"]
    except RemoteError as e:  # no pass has completed yet: moto is slow at 1,000
        return {"converged": False, "error": e.message}
    return {"converged": bool(desc.get("Converged")), **(desc.get("Status") or {})}


class Watch:
    """Waits for convergence from the manager's event log and the front's log, not from DescribeGroup.

    Why: each DescribeGroup costs a full DescribeInstances, which at 1,000 instances takes moto
    seconds and would be counted as the controller's. DescribeGroup is asked only once the
    logs say the group looks done (``n`` live, every instance launched since ``since`` found
    healthy, nothing launched or terminated for longer
    than a pass takes: moto lists 1,000 instances in about 15 s); each such confirmation is
    counted in ``probes`` so the caller can take it out of the per-action counts.
    """

    def __init__(self, h: common.Home, port: int, n: int) -> None:
        self.h, self.port, self.n = h, port, n
        self.probes: list[float] = []
        self.quiet = max(5.0, n / 25)  # seconds: 40 at 1,000, longer than a pass between two rebalance rounds

    def until_converged(self, what: str, since: float, live_before: int, extra: Any = None,
                        timeout: float = 1800) -> float:
        """Block until converged; the time of the last launch, termination or first health that got it there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = [e for e in aws.front_events(self.port) if e[0] >= since]
            launched = {i for _, a, ids in events if a == "RunInstances" for i in ids}
            terminated = {i for _, a, ids in events if a == "TerminateInstances" for i in ids}
            healthy = {e["Instance"]: e["Time"] for e in aws.events(self.h, "instance_healthy") if e["Time"] >= since}
            last = max([t for t, a, _ in events if a in ("RunInstances", "TerminateInstances")] +
                       list(healthy.values()) + [since])
            looks_done = (live_before + len(launched) - len(terminated) == self.n and launched <= set(healthy)
                          and time.time() - last > self.quiet and (extra is None or extra()))
            if looks_done:
                self.probes.append(time.time())
                s = status(self.h)
                if s["converged"] and s.get("Healthy") == self.n:
                    return last
            time.sleep(2)
        raise RuntimeError(f"{what}: not converged in {timeout:.0f}s; last status {str(status(self.h))[:800]}")


def fewest_live(events: list[tuple[float, str, list[str]]], start: float, live: int) -> tuple[int, int]:
    """The fewest and the most instances alive from ``start`` on, from launches and terminations."""
    low = high = live
    for _, action, ids in sorted(e for e in events if e[0] >= start):
        if action == "RunInstances":
            live += len(ids)
        elif action == "TerminateInstances":
            live -= len(ids)
        low, high = min(low, live), max(high, live)
    return low, high


def main(endpoint: str, n: int, *, write: bool = True) -> None:
    port = int(endpoint.rsplit(":", 1)[1])
    rows: list[list[Any]] = []
    with world(endpoint) as (h, subnets, tg):
        watch = Watch(h, port, n)
        aws.front(port, refuse_subnets=[subnets["c"]])
        t0 = time.time()
        aws.commit(h, spec(n, subnets, tg))
        t1 = watch.until_converged("outage", t0, 0)
        records = aws.moto_records(port)
        outage = balance(endpoint, subnets)
        refused = by_action(records, t0, t1).get("RunInstances", 0) - sum(
            1 for t, a, ids in aws.front_events(port) if a == "RunInstances" and ids and t0 <= t <= t1)
        rows.append([f"outage: c refuses, {n} converge over a and b", f"{t1 - t0:.0f} s",
                     "/".join(str(outage[z]) for z in ZONES), f"{n} ({refused} requests refused)",
                     ", ".join(f"{k} {v}" for k, v in by_action(records, t0, t1, watch.probes).items())])

        aws.front(port, refuse_subnets=[])
        t2 = time.time()
        # At least this many members must move (those above the largest even share); counted from the
        # front's log, so waiting puts no describe load on moto.
        share = -(-n // len(ZONES))
        expected = sum(max(0, outage[z] - share) for z in ZONES)

        def moved() -> bool:
            return sum(len(ids) for t, a, ids in aws.front_events(port) if a == "RunInstances" and t >= t2) >= expected

        t3 = watch.until_converged("recovery", t2, n, extra=moved)
        records = aws.moto_records(port)
        after = balance(endpoint, subnets)
        low, high = fewest_live(aws.front_events(port), t2, n)
        moves = sum(len(ids) for t, a, ids in aws.front_events(port) if a == "RunInstances" and t >= t2)
        rows.append([f"recovery: members move back (MaxSurge 10%, MaxUnavailable 0), live {low}-{high}",
                     f"{t3 - t2:.0f} s", "/".join(str(after[z]) for z in ZONES), f"{moves} moved",
                     ", ".join(f"{k} {v}" for k, v in by_action(records, t2, t3, watch.probes).items())])
        steady = aws.steady_state(port, n)
        rows.append(["steady: converged, nothing to do (per pass)",
                     f"{steady['period']:.1f} s per pass, {steady['describe']:.1f} s of it moto's DescribeInstances",
                     "/".join(str(after[z]) for z in ZONES), "-",
                     ", ".join(f"{k} {v / aws.STEADY_CYCLES:g}" for k, v in sorted(steady["by_action"].items()))])
    t = table(["phase", "wall", "balance a/b/c", "launches", "EC2 and ELBv2 requests (by action)"], rows)
    print(t)
    if not write:
        return
    write_section(TITLE, f"""
`python -m bench.aws --spread -n {n}` — {machine()}.

{n} members, the spread selector over three subnets of one VPC (three choices on one aws
daemon), the targetgroup flavor registering every member in one target group and taking health
from it (`HealthCheck: ELB`, deregistration delay 0), `MaxSurge: 10%`, `MaxUnavailable: 0`,
poll interval {aws.POLL}. moto runs behind the tests' front, which makes subnet c refuse
capacity (InsufficientInstanceCapacity) during the outage and counts every request by action.
"live" is rebuilt from the front's log of launches and terminations. Convergence is read from the
manager's event log; the bench's own DescribeGroup confirmations are not counted.

{t}

A steady pass costs one DescribeInstances for the whole group (the selector asks its one
plugin once for three choices, pages of 1,000) plus one DescribeTargetHealth for the target
group: nothing grows with the number of members but pagination. New members are registered
100 per RegisterTargets and launched 100 per RunInstances; the leaving side is per member: each
member moved costs one DeregisterTargets, two DescribeTargetHealth (registered? drained?) and one
TerminateInstances, because the Flavor SPI drains, and the controller destroys, one instance at a
time (batching them is not done yet). During the outage, subnet c's batches were refused (each
refused request counts once per botocore attempt, two here), its members launched in a and b in
the same call, and the dry subnet was tried again each time its backoff (2 s doubling to 10 s)
expired, a refused RunInstances each time and no instance launched elsewhere for it. moto, not
the runtime, sets the pace: most of a steady pass is moto answering the DescribeInstances of
1,000 instances.
""")
