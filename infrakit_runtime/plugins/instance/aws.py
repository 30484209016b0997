"""AWS EC2 instance plugin: instances are EC2 instances, membership is EC2 tags.

Guarantee: an instance carries its tags from launch (TagSpecifications, instance and
volumes), so DescribeInstances — one paginated, tag-filtered DescribeInstances —
always sees every live member; a repeated Provision for the same slot and attempt
never launches a duplicate (ClientToken, see ``aws_launch``); Validate checks
Properties offline against botocore's RunInstances model, plus, for a named launch
template, once with EC2 (``aws_templates``); credentials come only from boto3's standard
chain and never appear in a result, error or log line. Pets with ``Volumes`` keep their
EBS volumes and private IPs across replacements (``aws_pets``); a spot member with an
interruption notice is described as outdated (``spot-interruption``) so the group replaces
it before EC2 takes it.

Limit: "live" means ``pending`` or ``running``: a stopped instance is not a member,
so a group replaces it (and the stopped one is left for its owner). ProvisionMany's
batches use MinCount=1 by default, so EC2 may launch fewer than asked; the missing
slots are reported as errors for the caller to retry.

Daemon options (``-o key=value``): ``region``, ``profile``, ``endpoint_url``,
``retry_mode`` (standard|adaptive), ``max_attempts`` (botocore's, default 5),
``provision_many`` (default true; false leaves ProvisionMany unannounced, so a
controller provisions slot by slot with Provision, as with InfraKit's Go plugins),
``max_batch`` (instances per RunInstances in ProvisionMany, default 100),
``batch_min_count`` (``one``: MinCount=1, take what EC2 can give; ``all``:
MinCount=MaxCount, all or nothing), ``concurrency`` (EC2 calls in flight, default 16),
``throttle_retries``/``throttle_base``/``throttle_cap`` (the plugin's own backoff on
throttling, after botocore's retries).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import logging
from collections.abc import AsyncIterator
from typing import Any

from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.plugins.instance import aws_launch, aws_pets, aws_templates, aws_validate, revisions
from infrakit_runtime.plugins.instance.aws_ec2 import RETRY_MODES, AwsError, Backoff, Ec2, Settings
from infrakit_runtime.rpc.instance import InstanceService
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError

log = logging.getLogger(__name__)

VENDOR = {"Name": "infrakit-instance-aws", "Version": "0.1.0", "Sub": "", "URL": "https://github.com/docker/infrakit"}
LIVE_STATES = ("pending", "running")
DEAD_STATES = frozenset({"shutting-down", "terminated"})
# DescribeInstances' largest page: a 1,000-instance group costs one call.
PAGE_SIZE = 1000
NOT_FOUND = "InvalidInstanceID.NotFound"
BATCH_MIN_COUNTS = ("one", "all")
# Longest chain of already-terminated answers followed before giving up (see aws_launch.chained_token).
MAX_TOKEN_CHAIN = 5
# Instances whose tags and attachments are remembered from DescribeInstances (for Destroy's checks).
SEEN_LIMIT = 50_000
# How a spot member with an interruption notice is described: outdated, so the group replaces it
# (a replacement first, within MaxSurge) before EC2 takes it two minutes later.
SPOT_INTERRUPTION_HASH = "spot-interruption"


def _jsonable(value: Any) -> JSON:
    """An EC2 response value as JSON (timestamps become ISO 8601 strings)."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def describe(raw: dict[str, Any], properties: bool) -> instance.Description:
    """An EC2 instance as an InfraKit description."""
    tags = {t["Key"]: t.get("Value", "") for t in raw.get("Tags") or []}
    props = None
    if properties:
        props = _jsonable({
            "Address": raw.get("PrivateIpAddress"),
            "PrivateIpAddress": raw.get("PrivateIpAddress"),
            "PublicIpAddress": raw.get("PublicIpAddress"),
            "State": (raw.get("State") or {}).get("Name"),
            "LaunchTime": raw.get("LaunchTime"),
            "Placement": raw.get("Placement"),
            "InstanceType": raw.get("InstanceType"),
            "ImageId": raw.get("ImageId"),
            "SubnetId": raw.get("SubnetId"),
            "VpcId": raw.get("VpcId"),
            "Volumes": {d: v for d, v in aws_pets.attached(raw).items() if d != raw.get("RootDeviceName")},
            "InstanceLifecycle": raw.get("InstanceLifecycle") or "on-demand",
        })
    # Pets launched here always carry the tag; an IP logical ID is also the private IP.
    return instance.Description(id=raw["InstanceId"], logical_id=tags.get(instance.TAG_LOGICAL_ID),
                                tags=tags, properties=props)


class AwsInstancePlugin:
    """``InstancePlugin`` (plus ``provision_many``) backed by EC2 through ``Ec2``."""

    def __init__(self, ec2: Ec2, *, max_batch: int = 100, batch_min_count: str = "one",
                 concurrency: int = 16) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if batch_min_count not in BATCH_MIN_COUNTS:
            raise ValueError(f"batch_min_count must be one of {', '.join(BATCH_MIN_COUNTS)}, got {batch_min_count!r}")
        self.ec2 = ec2
        self.max_batch = max_batch
        self.batch_min_count = batch_min_count
        self.pets = aws_pets.Pets(ec2)
        self._slots = asyncio.Semaphore(concurrency)
        # Instance ID -> {Tags, BlockDeviceMappings} as last described (bounded, oldest dropped first).
        self._seen: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()

    async def validate(self, properties: JSON) -> None:
        """Shape check against botocore's model (offline); a named launch template is also checked with EC2."""
        found = aws_validate.problems(properties)
        if isinstance(properties, dict) and "LaunchTemplate" in properties and self.ec2.connected:
            found += await aws_templates.problems(self.ec2, properties)
        if found:
            raise ValidationError(found)

    async def _launch(self, params: dict[str, Any], count: int, token: str) -> list[dict[str, Any]]:
        """RunInstances for up to ``count`` instances; the live ones launched (or found) under ``token``.

        If EC2 answers the token with instances already terminated (the slot's previous
        instance, launched under the same token and since killed), follow a deterministic
        token chain so a replacement is launched — once, even across retries.
        """
        min_count = count if self.batch_min_count == "all" else 1
        for _ in range(MAX_TOKEN_CHAIN):
            async with self._slots:
                answer = await self.ec2.call("RunInstances", **params, MinCount=min_count, MaxCount=count,
                                             ClientToken=token)
            launched = answer.get("Instances") or []
            live = [i for i in launched if (i.get("State") or {}).get("Name") not in DEAD_STATES]
            if live or not launched:
                return live
            token = aws_launch.chained_token(token, [i["InstanceId"] for i in launched])
        raise PluginError(f"RunInstances failed: ClientToken chain exhausted after {MAX_TOKEN_CHAIN} terminated answers")

    async def provision(self, spec: instance.Spec) -> instance.ID:
        properties = aws_validate.validate(spec.properties, "Spec.Properties")
        if "Volumes" in properties:
            return await self._provision_pet(properties, spec)
        launched = await self._launch(aws_launch.run_params(properties, spec), 1, aws_launch.client_token(spec))
        if not launched:
            raise PluginError("RunInstances failed: EC2 launched no instance")
        instance_id = launched[0]["InstanceId"]
        log.info("launched %s (group %s, logical ID %s)", instance_id, spec.tags.get(instance.TAG_GROUP, "-"),
                 spec.logical_id or "-")
        return instance_id

    async def _provision_pet(self, properties: dict[str, Any], spec: instance.Spec) -> instance.ID:
        """A pet with kept volumes: find or create them, launch, attach (see ``aws_pets``)."""
        pairs = await self.pets.volumes_for(properties, spec)
        spec = dataclasses.replace(spec, tags={**spec.tags, aws_pets.TAG_ATTACH: aws_pets.attach_tag(pairs)})
        launched = await self._launch(aws_launch.run_params(properties, spec), 1, aws_launch.client_token(spec))
        if not launched:
            raise PluginError("RunInstances failed: EC2 launched no instance")
        instance_id = launched[0]["InstanceId"]
        log.info("launched %s for logical ID %s of group %s with volumes %s", instance_id, spec.logical_id,
                 spec.tags.get(instance.TAG_GROUP, "-"), ", ".join(v for _, v in pairs))
        try:
            await self.pets.attach(instance_id, pairs)
        except AwsError as e:
            log.warning("volumes of %s are attached at the next describe: %s", instance_id, e)
        return instance_id

    async def provision_many(self, specs: list[instance.Spec]) -> list[instance.ProvisionResult]:
        """Provision every spec; cattle with the same request share RunInstances calls.

        Results are per slot, in order: a slot gets an ID or the error that kept it empty
        (invalid Properties, an EC2 error for its batch, or a partial launch).
        """
        results: list[instance.ProvisionResult] = [instance.ProvisionResult(error="not attempted")] * len(specs)
        launches: list[tuple[int, dict[str, Any], instance.Spec]] = []
        pets: list[tuple[int, dict[str, Any], instance.Spec]] = []
        for i, spec in enumerate(specs):
            try:
                properties = aws_validate.validate(spec.properties, f"Specs[{i}].Properties")
            except ValidationError as e:
                results[i] = instance.ProvisionResult(error=str(e))
                continue
            (pets if "Volumes" in properties else launches).append((i, properties, spec))

        async def pet(i: int, properties: dict[str, Any], spec: instance.Spec) -> None:
            try:
                results[i] = instance.ProvisionResult(id=await self._provision_pet(properties, spec))
            except PluginError as e:
                results[i] = instance.ProvisionResult(error=str(e))

        async def run(batch: aws_launch.Batch) -> None:
            try:
                launched = await self._launch(batch.params, len(batch.slots), batch.token)
            except PluginError as e:
                for i in batch.slots:
                    results[i] = instance.ProvisionResult(error=str(e))
                return
            for n, i in enumerate(batch.slots):
                if n < len(launched):
                    results[i] = instance.ProvisionResult(id=launched[n]["InstanceId"])
                else:
                    results[i] = instance.ProvisionResult(error=(
                        f"RunInstances launched {len(launched)} of {len(batch.slots)} instances "
                        "(EC2 capacity or limits); this slot is still empty"))

        batches = aws_launch.plan_batches(launches, self.max_batch)
        async with asyncio.TaskGroup() as tg:
            for n, batch in enumerate(batches):
                tg.create_task(run(batch), name=f"aws/run-instances/{n}")
            for i, properties, spec in pets:
                tg.create_task(pet(i, properties, spec), name=f"aws/pet/{spec.logical_id}")
        log.info("provisioned %d of %d slots in %d RunInstances calls",
                 sum(r.id is not None for r in results), len(specs), len(batches))
        return results

    async def label(self, instance_id: instance.ID, labels: dict[str, str]) -> None:
        if not labels:
            return
        try:
            await self.ec2.call("CreateTags", Resources=[instance_id],
                                Tags=[{"Key": k, "Value": v} for k, v in sorted(labels.items())])
        except AwsError as e:
            if e.code == NOT_FOUND:
                raise PluginError(f"instance {instance_id} not found: {e}") from None
            raise
        seen = self._seen.get(instance_id)
        if seen is not None:
            seen["Tags"] = [*(t for t in seen.get("Tags") or [] if t["Key"] not in labels),
                            *({"Key": k, "Value": v} for k, v in labels.items())]

    def _remember(self, raw: dict[str, Any]) -> None:
        self._seen[raw["InstanceId"]] = {"InstanceId": raw["InstanceId"], "Tags": raw.get("Tags") or [],
                                         "BlockDeviceMappings": raw.get("BlockDeviceMappings") or []}
        self._seen.move_to_end(raw["InstanceId"])
        while len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)

    async def _last_seen(self, instance_id: instance.ID) -> dict[str, Any] | None:
        raw = self._seen.get(instance_id)
        if raw is not None:
            return raw
        try:
            answer = await self.ec2.call("DescribeInstances", InstanceIds=[instance_id])
        except AwsError as e:
            if e.code == NOT_FOUND:
                return None
            raise
        return next((i for r in answer.get("Reservations") or [] for i in r.get("Instances") or []), None)

    async def destroy(self, instance_id: instance.ID, context: instance.Context) -> None:
        """Terminate; an instance EC2 no longer knows is already destroyed, not an error.

        Kept volumes stay, unless the instance was labelled ``infrakit.delete-volumes=true``.
        """
        raw = await self._last_seen(instance_id)
        tags = {t["Key"]: t.get("Value", "") for t in (raw or {}).get("Tags") or []}
        leftover = await self.pets.before_terminate(instance_id, tags, raw) if raw else []
        try:
            await self.ec2.call("TerminateInstances", InstanceIds=[instance_id])
        except AwsError as e:
            if e.code != NOT_FOUND:
                raise
            log.info("destroy %s: already gone (%s)", instance_id, e.code)
            return
        finally:
            self._seen.pop(instance_id, None)
        for volume in leftover:
            try:
                await self.ec2.call("DeleteVolume", VolumeId=volume)
            except AwsError as e:
                log.warning("cannot delete volume %s of %s: %s", volume, instance_id, e)
        log.info("terminated %s (%s)", instance_id, context.reason)

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        """Live instances carrying every tag (AND): one paginated, server-side filtered call."""
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(tags.items())]
        filters.append({"Name": "instance-state-name", "Values": list(LIVE_STATES)})
        found = []
        spot = False
        for page in await self.ec2.pages("DescribeInstances", Filters=filters, MaxResults=PAGE_SIZE):
            for reservation in page.get("Reservations") or []:
                for raw in reservation.get("Instances") or []:
                    description = describe(raw, properties)
                    # EC2 filter values treat * and ? as wildcards: keep exact matches only.
                    if all(description.tags.get(k) == v for k, v in tags.items()):
                        found.append(description)
                        self._remember(raw)
                        spot = spot or raw.get("InstanceLifecycle") == "spot"
                        if aws_pets.TAG_ATTACH in description.tags:
                            await self.pets.reconcile(raw)
        if spot:
            found = await self._mark_interrupted(found)
        return found

    async def describe_since(self, tags: dict[str, str], properties: bool, revision: str) -> instance.Listing:
        """``instance.Revised`` by content (``revisions``): the listing asked for again, and no list when
        ``revision`` names the very same one, so an unchanged group costs its caller no decoding or plan."""
        return await revisions.listing_since(self.describe_instances(tags, properties), revision)

    async def _mark_interrupted(self, found: list[instance.Description]) -> list[instance.Description]:
        """Spot members with an interruption notice, described as outdated (one call, only for spot groups)."""
        try:
            answer = await self.ec2.call("DescribeSpotInstanceRequests", Filters=[
                {"Name": "status-code", "Values": ["marked-for-termination"]}])
        except AwsError as e:
            log.warning("cannot read spot interruption notices: %s", e)
            return found
        doomed = {r.get("InstanceId") for r in answer.get("SpotInstanceRequests") or []}
        out = []
        for d in found:
            if d.id in doomed:
                log.info("spot instance %s has an interruption notice: replacing it", d.id)
                d = dataclasses.replace(d, tags={**d.tags, instance.TAG_CONFIG_HASH: SPOT_INTERRUPTION_HASH})
            out.append(d)
        return out


class SlotBySlot:
    """The plugin without ``provision_many``: the daemon then announces no InstanceBatch.

    Why: a controller batches whenever the plugin offers it; this lets an operator (or a
    benchmark) run the same plugin the way InfraKit's controller drives it, one Provision
    per slot.
    """

    def __init__(self, plugin: AwsInstancePlugin) -> None:
        self.plugin = plugin
        self.validate = plugin.validate
        self.provision = plugin.provision
        self.label = plugin.label
        self.destroy = plugin.destroy
        self.describe_instances = plugin.describe_instances


_OPTIONS = {
    "region": str, "profile": str, "endpoint_url": str, "retry_mode": str, "max_attempts": int,
    "provision_many": bool, "max_batch": int, "batch_min_count": str, "concurrency": int,
    "throttle_retries": int, "throttle_base": float, "throttle_cap": float,
}


def check_options(raw: dict[str, Any]) -> dict[str, Any]:
    """Daemon options, type-checked, with every problem listed."""
    problems, out = [], {}
    for key, value in raw.items():
        kind = _OPTIONS.get(key)
        if kind is None:
            problems.append(f"unknown option {key!r} for the aws plugin; known: {', '.join(sorted(_OPTIONS))}")
        elif value is None:
            continue
        elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
        elif kind is bool and not isinstance(value, bool):
            problems.append(f"option {key} must be true or false, got {value!r}")
        elif kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            problems.append(f"option {key} must be a positive integer, got {value!r}")
        elif kind is str and not isinstance(value, str):
            problems.append(f"option {key} must be a string, got {value!r}")
        elif kind is float and not isinstance(value, float):
            problems.append(f"option {key} must be a number, got {value!r}")
        else:
            out[key] = value
    if out.get("retry_mode", "standard") not in RETRY_MODES:
        problems.append(f"option retry_mode must be one of {', '.join(RETRY_MODES)}, got {out['retry_mode']!r}")
    if out.get("batch_min_count", "one") not in BATCH_MIN_COUNTS:
        problems.append(f"option batch_min_count must be one of {', '.join(BATCH_MIN_COUNTS)}, "
                        f"got {out['batch_min_count']!r}")
    if problems:
        raise ValidationError(problems)
    return out


def connection(o: dict[str, Any], *, max_workers: int = 16) -> Settings:
    """How to reach AWS from checked options (``check_options``); credentials stay with boto3's chain."""
    return Settings(region=o.get("region"), profile=o.get("profile"), endpoint_url=o.get("endpoint_url"),
                    retry_mode=o.get("retry_mode", "standard"), max_attempts=o.get("max_attempts", 5),
                    max_workers=max_workers)


def build(options: dict[str, Any]) -> AwsInstancePlugin:
    """A plugin from daemon options (not yet connected: await ``plugin.ec2.connect()``)."""
    o = check_options(options)
    concurrency = o.get("concurrency", 16)
    settings = connection(o, max_workers=concurrency)
    defaults = Backoff()
    backoff = Backoff(retries=o.get("throttle_retries", defaults.retries), base=o.get("throttle_base", defaults.base),
                      cap=o.get("throttle_cap", defaults.cap))
    return AwsInstancePlugin(Ec2(settings, backoff=backoff), max_batch=o.get("max_batch", 100),
                             batch_min_count=o.get("batch_min_count", "one"), concurrency=concurrency)


@contextlib.asynccontextmanager
async def open_daemon(ctx: DaemonContext) -> AsyncIterator[Served]:
    """Serve the aws plugin; options as in the module docstring, credentials from boto3's chain."""
    o = check_options(ctx.options)
    plugin = build(ctx.options)
    # botocore's DEBUG lines carry signed headers (the access key ID) and whole request bodies:
    # keep them out of the daemon's log even when the daemon itself logs at debug.
    for name in ("botocore", "boto3", "urllib3"):
        if logging.getLogger(name).getEffectiveLevel() < logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    try:
        await plugin.ec2.connect()
        s = plugin.ec2.settings
        log.info("aws plugin: region %s, endpoint %s, retry mode %s (max %d attempts)",
                 plugin.ec2.client.meta.region_name, s.endpoint_url or "default", s.retry_mode, s.max_attempts)
        served = plugin if o.get("provision_many", True) else SlotBySlot(plugin)
        yield Served(services=[InstanceService({"": served})], vendor=VENDOR)
    finally:
        plugin.ec2.close()
