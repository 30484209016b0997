"""ELBv2 for the targetgroup flavor: target groups resolved once, health read once per pass, registrations batched.

Guarantee: a health round over any number of members costs each target group one
DescribeTargetHealth (answers are shared for ``ttl`` seconds, and concurrent askers share the
answer in flight) and one RegisterTargets per ``REGISTER_BATCH`` new targets; every call goes
through ``aws_ec2.Ec2`` (thread pool, throttling backoff, errors scrubbed of credentials).
Limit: answers are up to ``ttl`` old; a member registered by another writer is seen at the
next snapshot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from infrakit_runtime.plugins.instance.aws_ec2 import AwsError, Ec2

log = logging.getLogger(__name__)

REGISTER_BATCH = 100
# Target states in which a target is (still) in the group, as ELBv2 names them.
REGISTERED = frozenset({"initial", "healthy", "unhealthy", "unavailable", "unhealthy.draining"})
DRAINING = "draining"
SUPPORTED_TYPES = ("instance", "ip")


@dataclasses.dataclass(frozen=True)
class TargetGroup:
    arn: str
    name: str
    target_type: str
    port: int | None
    deregistration_delay: float


class Elb:
    """The ELBv2 calls the flavor makes, shared by all its members."""

    def __init__(self, api: Ec2, *, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.ttl = ttl
        self.clock = clock
        self._groups: dict[str, TargetGroup] = {}
        self._snapshots: dict[str, tuple[float, dict[str, str]]] = {}
        self._inflight: dict[str, asyncio.Future[dict[str, str]]] = {}

    # -- target groups -------------------------------------------------------------------------

    async def resolve(self, refs: list[str]) -> tuple[dict[str, TargetGroup], list[str]]:
        """Target groups by ARN or name: those found, and a sentence for each one not found."""
        found, missing = {r: self._groups[r] for r in refs if r in self._groups}, []
        todo = [r for r in refs if r not in found]
        for ref in todo:
            try:
                key = {"TargetGroupArns": [ref]} if ref.startswith("arn:") else {"Names": [ref]}
                answer = await self.api.call("DescribeTargetGroups", **key)
            except AwsError as e:
                if e.code in ("TargetGroupNotFound", "ValidationError"):
                    missing.append(f"target group {ref!r} does not exist ({e.code})")
                    continue
                raise
            groups = answer.get("TargetGroups") or []
            if not groups:
                missing.append(f"target group {ref!r} does not exist")
                continue
            raw = groups[0]
            attributes = await self.api.call("DescribeTargetGroupAttributes", TargetGroupArn=raw["TargetGroupArn"])
            delay = next((a.get("Value") for a in attributes.get("Attributes") or []
                          if a.get("Key") == "deregistration_delay.timeout_seconds"), "300")
            tg = TargetGroup(arn=raw["TargetGroupArn"], name=raw.get("TargetGroupName", ref),
                             target_type=raw.get("TargetType", "instance"), port=raw.get("Port"),
                             deregistration_delay=float(delay or 300))
            self._groups[ref] = self._groups[tg.arn] = tg
            found[ref] = tg
        return found, missing

    # -- health --------------------------------------------------------------------------------

    async def health(self, tg: TargetGroup) -> dict[str, str]:
        """Target ID -> ELBv2 state for every target the group knows, at most ``ttl`` old."""
        cached = self._snapshots.get(tg.arn)
        if cached is not None and self.clock() - cached[0] < self.ttl:
            return cached[1]
        inflight = self._inflight.get(tg.arn)
        if inflight is None:
            inflight = self._inflight[tg.arn] = asyncio.ensure_future(self._fetch(tg))
        return await asyncio.shield(inflight)

    async def _fetch(self, tg: TargetGroup) -> dict[str, str]:
        try:
            answer = await self.api.call("DescribeTargetHealth", TargetGroupArn=tg.arn)
            states = {d["Target"]["Id"]: (d.get("TargetHealth") or {}).get("State", "")
                      for d in answer.get("TargetHealthDescriptions") or []}
            self._snapshots[tg.arn] = (self.clock(), states)
            return states
        finally:
            self._inflight.pop(tg.arn, None)

    async def target_state(self, tg: TargetGroup, target: str) -> str:
        """One target's state, asked directly (Drain polls it without waiting for a snapshot)."""
        answer = await self.api.call("DescribeTargetHealth", TargetGroupArn=tg.arn, Targets=[{"Id": target}])
        for d in answer.get("TargetHealthDescriptions") or []:
            if d["Target"]["Id"] == target:
                return (d.get("TargetHealth") or {}).get("State", "")
        return "unused"

    def _note(self, tg: TargetGroup, target: str, state: str) -> None:
        cached = self._snapshots.get(tg.arn)
        if cached is not None:
            cached[1][target] = state

    # -- registration --------------------------------------------------------------------------

    async def register(self, tg: TargetGroup, targets: list[str], port: int | None) -> None:
        """Register ``targets``, ``REGISTER_BATCH`` per RegisterTargets call."""
        ordered = sorted(set(targets))
        for start in range(0, len(ordered), REGISTER_BATCH):
            chunk = ordered[start:start + REGISTER_BATCH]
            await self.api.call("RegisterTargets", TargetGroupArn=tg.arn,
                                Targets=[{"Id": t, **({"Port": port} if port else {})} for t in chunk])
            for t in chunk:
                self._note(tg, t, "initial")
        log.info("registered %d target(s) in %s", len(ordered), tg.name)

    async def deregister(self, tg: TargetGroup, target: str, port: int | None) -> None:
        await self.api.call("DeregisterTargets", TargetGroupArn=tg.arn,
                            Targets=[{"Id": target, **({"Port": port} if port else {})}])
        self._note(tg, target, DRAINING)


def target_id(tg: TargetGroup, instance_id: str, properties: Any) -> str | None:
    """What ``tg`` calls this member: its instance ID, or its private IP for an ``ip`` target group."""
    if tg.target_type == "instance":
        return instance_id
    props = properties if isinstance(properties, dict) else {}
    address = props.get("PrivateIpAddress") or props.get("Address")
    return str(address) if address else None
