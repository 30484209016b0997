"""Pets that keep their disks: one EBS volume per logical ID and device, created once, reattached to every replacement.

Guarantee: a logical ID's volume is created once (CreateVolume with a token derived from group,
logical ID and device, in the zone of the launch's subnet), tagged ``infrakit.group``,
``infrakit.logical_id`` and ``infrakit.volume.device``, and found again by those tags for every
later instance of the same logical ID; it is attached without DeleteOnTermination, so no
rollout, replacement or scale-down deletes it. A launch never starts while the volume is still
held by a live instance (the error says to replace, then create); the instance carries the
tag ``infrakit.attach`` naming its volumes, and every DescribeInstances attaches any listed
volume not yet attached (a launch interrupted between RunInstances and AttachVolume heals).
Only an explicit request deletes a volume: an instance labelled ``infrakit.delete-volumes=true``
gets DeleteOnTermination on its kept volumes just before it is terminated.
Limit: a logical ID's volume stays in its first zone; moving the pet's subnet to another zone
is refused at launch with the volume's zone named.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from infrakit_runtime.plugins.instance.aws_ec2 import AwsError, Ec2
from infrakit_runtime.plugins.instance.aws_validate import VOLUME_FIELDS, zone_source
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import PluginError

log = logging.getLogger(__name__)

TAG_DEVICE = "infrakit.volume.device"
TAG_ATTACH = "infrakit.attach"
TAG_DELETE_VOLUMES = "infrakit.delete-volumes"
LIVE = frozenset({"pending", "running", "stopping", "stopped"})
# How long a launch waits for a volume its dead predecessor still holds, and for the new instance to run.
DETACH_WAIT = 20.0
RUN_WAIT = 15.0
POLL = 1.0


def attach_tag(pairs: list[tuple[str, str]]) -> str:
    return ",".join(f"{device}={volume}" for device, volume in pairs)


def parse_attach_tag(text: str | None) -> list[tuple[str, str]]:
    out = []
    for item in (text or "").split(","):
        device, sep, volume = item.partition("=")
        if sep and device and volume:
            out.append((device, volume))
    return out


def attached(raw: dict[str, Any]) -> dict[str, str]:
    """Device -> volume ID of an instance's EBS attachments, as DescribeInstances reports them."""
    return {m["DeviceName"]: m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings") or []
            if m.get("DeviceName") and (m.get("Ebs") or {}).get("VolumeId")}


class Pets:
    """The volume side of a pet's launch, reattachment and explicit deletion."""

    def __init__(self, ec2: Ec2, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] | None = None) -> None:
        self.ec2 = ec2
        self.sleep = sleep
        self.clock = clock or time.monotonic
        self._zones: dict[str, str] = {}

    async def zone(self, properties: dict[str, Any]) -> str:
        subnet, zone = zone_source(properties)
        if zone:
            return zone
        if subnet is None:
            raise PluginError("a pet needs a SubnetId or a Placement.AvailabilityZone to keep its volume in")
        if subnet not in self._zones:
            answer = await self.ec2.call("DescribeSubnets", SubnetIds=[subnet])
            self._zones[subnet] = answer["Subnets"][0]["AvailabilityZone"]
        return self._zones[subnet]

    async def volumes_for(self, properties: dict[str, Any], spec: instance.Spec) -> list[tuple[str, str]]:
        """The (device, volume ID) pairs this launch gets: found by tag, or created once. Raises if one is busy."""
        group, lid = spec.tags.get(instance.TAG_GROUP, ""), spec.logical_id
        if not lid:
            raise PluginError("Properties.Volumes are kept per logical ID: give the group Allocation.LogicalIDs")
        zone = await self.zone(properties)
        answer = await self.ec2.call("DescribeVolumes", Filters=[
            {"Name": f"tag:{instance.TAG_GROUP}", "Values": [group]},
            {"Name": f"tag:{instance.TAG_LOGICAL_ID}", "Values": [lid]},
            {"Name": "tag-key", "Values": [TAG_DEVICE]},  # launches tag their root volumes with the group too
            {"Name": "status", "Values": ["creating", "available", "in-use"]}])
        existing = {}
        for v in answer.get("Volumes") or []:
            tags = {t["Key"]: t.get("Value", "") for t in v.get("Tags") or []}
            if tags.get(instance.TAG_GROUP) == group and tags.get(instance.TAG_LOGICAL_ID) == lid:
                existing[tags.get(TAG_DEVICE, "")] = v
        pairs = []
        for want in properties["Volumes"]:
            device = want["Device"]
            v = existing.get(device)
            if v is None:
                v = await self._create(want, zone, group, lid, spec)
            elif v.get("AvailabilityZone") != zone:
                raise PluginError(f"volume {v['VolumeId']} of logical ID {lid} ({device}) is in "
                                  f"{v.get('AvailabilityZone')}; this launch would be in {zone}: launch it in the "
                                  "volume's zone (a volume cannot move)")
            await self._free(v, lid)
            pairs.append((device, v["VolumeId"]))
        return pairs

    async def _create(self, want: dict[str, Any], zone: str, group: str, lid: str, spec: instance.Spec) -> dict[str, Any]:
        tags = {**(want.get("Tags") or {}), instance.TAG_GROUP: group, instance.TAG_LOGICAL_ID: lid,
                TAG_DEVICE: want["Device"], "Name": f"{group}/{lid}{want['Device']}"}
        token = hashlib.sha256("\0".join(("ik1-vol", group, lid, want["Device"])).encode()).hexdigest()[:48]
        v = await self.ec2.call("CreateVolume", AvailabilityZone=zone, ClientToken=token,
                                TagSpecifications=[{"ResourceType": "volume",
                                                    "Tags": [{"Key": k, "Value": x} for k, x in sorted(tags.items())]}],
                                **{k: want[k] for k in VOLUME_FIELDS if k in want})
        log.info("created volume %s for logical ID %s of group %s (%s, %s)", v["VolumeId"], lid, group,
                 want["Device"], zone)
        return v

    async def _free(self, v: dict[str, Any], lid: str) -> None:
        """Return once the volume can be attached; raise if a live instance holds it."""
        deadline = self.clock() + DETACH_WAIT
        while True:
            if v.get("State") in ("available", "creating"):
                return
            holders = [a["InstanceId"] for a in v.get("Attachments") or [] if a.get("InstanceId")]
            states = {}
            if holders:
                answer = await self.ec2.call("DescribeInstances", InstanceIds=holders)
                states = {i["InstanceId"]: (i.get("State") or {}).get("Name")
                          for r in answer.get("Reservations") or [] for i in r.get("Instances") or []}
            live = [f"{iid} ({state})" for iid, state in states.items() if state in LIVE]
            if live:
                raise PluginError(f"volume {v['VolumeId']} of logical ID {lid} is attached to {', '.join(live)}: a pet "
                                  "that keeps its volume is replaced, then created (Updating: MaxSurge 0, "
                                  "MaxUnavailable 1)")
            if self.clock() >= deadline:
                raise PluginError(f"volume {v['VolumeId']} of logical ID {lid} is still detaching from its terminated "
                                  "instance; the launch is retried")
            await self.sleep(POLL)
            answer = await self.ec2.call("DescribeVolumes", VolumeIds=[v["VolumeId"]])
            v = (answer.get("Volumes") or [v])[0]

    async def attach(self, instance_id: str, pairs: list[tuple[str, str]]) -> None:
        """Attach once the instance runs; what is not attached within RUN_WAIT the next describe attaches."""
        deadline = self.clock() + RUN_WAIT
        while True:
            answer = await self.ec2.call("DescribeInstances", InstanceIds=[instance_id])
            raw: dict[str, Any] = next((i for r in answer.get("Reservations") or [] for i in r.get("Instances") or []), {})
            state = (raw.get("State") or {}).get("Name")
            if state == "running":
                await self.reconcile(raw)
                return
            if state not in ("pending", None) or self.clock() >= deadline:
                log.info("instance %s is %s: its volumes are attached when it runs", instance_id, state)
                return
            await self.sleep(POLL)

    async def reconcile(self, raw: dict[str, Any]) -> None:
        """Attach every volume the instance's ``infrakit.attach`` tag names that is not attached (running only)."""
        if (raw.get("State") or {}).get("Name") != "running":
            return
        tags = {t["Key"]: t.get("Value", "") for t in raw.get("Tags") or []}
        have = attached(raw)
        for device, volume in parse_attach_tag(tags.get(TAG_ATTACH)):
            if have.get(device) == volume:
                continue
            try:
                await self.ec2.call("AttachVolume", Device=device, InstanceId=raw["InstanceId"], VolumeId=volume)
                log.info("attached volume %s to %s as %s", volume, raw["InstanceId"], device)
            except AwsError as e:
                log.warning("cannot attach volume %s to %s yet: %s", volume, raw["InstanceId"], e)

    async def before_terminate(self, instance_id: str, tags: dict[str, str], raw: dict[str, Any] | None) -> list[str]:
        """With ``infrakit.delete-volumes=true``: make EC2 delete the kept volumes with the instance.

        Returns the volumes that were not attached (EC2 cannot delete those with it): delete them after.
        """
        if tags.get(TAG_DELETE_VOLUMES, "").lower() != "true":
            return []
        pairs = parse_attach_tag(tags.get(TAG_ATTACH))
        have = attached(raw or {})
        on = [d for d, v in pairs if have.get(d) == v]
        if on:
            await self.ec2.call("ModifyInstanceAttribute", InstanceId=instance_id, BlockDeviceMappings=[
                {"DeviceName": d, "Ebs": {"DeleteOnTermination": True}} for d in on])
        log.info("instance %s asked for its volumes to go: %s", instance_id, ", ".join(v for _, v in pairs) or "none")
        return [v for d, v in pairs if have.get(d) != v]
