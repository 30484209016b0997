"""Target-group flavor: members join ELBv2 target groups once healthy and leave them, drained, before they go.

Guarantee: a member is registered in every listed target group only once it is healthy by
the flavor it wraps (``Flavor``, e.g. vanilla with an HTTP probe; without one, once EC2 says
running), so a load balancer never receives a member that is still starting. Drain
deregisters it from every target group and returns only when none still reports it
``draining`` (the target group's deregistration delay), so the controller destroys a member
after its connections are drained. With ``HealthCheck: ELB`` a member is HEALTHY only when
every target group says ``healthy`` and UNHEALTHY as soon as one says ``unhealthy``, so the
controller replaces members the load balancer rejects, under the group's thresholds and
max-unhealthy brake (Auto Scaling's health check type ELB). Validate checks every field and,
with one call per target group, that the target groups exist.
Limit: a member destroyed for being unhealthy is not drained (the controller skips Drain for
it) and leaves its target groups when EC2 terminates it. Drain waits at most ``DrainTimeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.durations import parse_duration
from infrakit_runtime.plugins.flavor import targetgroup_elb as tge
from infrakit_runtime.plugins.instance import aws
from infrakit_runtime.plugins.instance.aws_ec2 import AwsError, Ec2
from infrakit_runtime.rpc.flavor import DRAIN_TIMEOUT, FlavorService
from infrakit_runtime.rpc.lookup import PluginDirectory
from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError, json_type

log = logging.getLogger(__name__)

Lookup = Callable[[str], flavor.Extended]
FIELDS = ("TargetGroups", "Port", "HealthCheck", "Flavor", "DrainTimeout")
HEALTH_CHECKS = ("EC2", "ELB")
# Beyond the target group's own deregistration delay, how long Drain keeps waiting by default.
DRAIN_MARGIN = 30.0
# A Drain call is given DRAIN_TIMEOUT by the controller: answer (even "still draining") before that.
MAX_DRAIN = DRAIN_TIMEOUT - DRAIN_MARGIN
POLL = 1.0


@dataclasses.dataclass(frozen=True)
class Properties:
    target_groups: tuple[str, ...]
    port: int | None = None
    health_check: str = "EC2"
    inner: tuple[str, JSON] | None = None  # (plugin, properties) of the wrapped flavor
    drain_timeout: float | None = None


def parse(obj: JSON, *, self_name: str = "", strict: bool = True) -> Properties:
    """The flavor's Properties, or ``ValidationError`` naming every problem by its field."""
    if not isinstance(obj, dict):
        raise ValidationError(f"Properties must be an object {{{', '.join(FIELDS)}}}, got {json_type(obj)}")
    problems: list[str] = []
    if strict:
        problems += [f"Properties.{k} is not a field (known: {', '.join(FIELDS)})" for k in sorted(set(obj) - set(FIELDS))]
    groups = obj.get("TargetGroups")
    refs: list[str] = []
    if not isinstance(groups, list) or not groups:
        problems.append(f"Properties.TargetGroups must list at least one target group (ARN or name), got {json_type(groups)}")
    else:
        for i, ref in enumerate(groups):
            if not isinstance(ref, str) or not ref:
                problems.append(f"Properties.TargetGroups[{i}] must be a target group ARN or name, got {json_type(ref)}")
            elif ref in refs:
                problems.append(f"Properties.TargetGroups[{i}] {ref!r} is listed twice")
            else:
                refs.append(ref)
    port = obj.get("Port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        problems.append(f"Properties.Port must be a port number (1-65535), got {port!r}")
    check = obj.get("HealthCheck", "EC2")
    if check not in HEALTH_CHECKS:
        problems.append(f"Properties.HealthCheck must be one of {', '.join(HEALTH_CHECKS)}, got {check!r}")
    inner = None
    raw_inner = obj.get("Flavor")
    if raw_inner is not None:
        if not isinstance(raw_inner, dict) or not isinstance(raw_inner.get("Plugin"), str) or not raw_inner["Plugin"]:
            problems.append("Properties.Flavor must be {Plugin, Properties}: the flavor whose health gates registration")
        else:
            if strict:
                problems += [f"Properties.Flavor.{k} is not a field (known: Plugin, Properties)"
                             for k in sorted(set(raw_inner) - {"Plugin", "Properties"})]
            if raw_inner["Plugin"].partition("/")[0] == self_name:
                problems.append(f"Properties.Flavor.Plugin {raw_inner['Plugin']!r} is this flavor itself")
            inner = (raw_inner["Plugin"], raw_inner.get("Properties"))
    timeout = None
    if obj.get("DrainTimeout") is not None:
        try:
            timeout = parse_duration(obj["DrainTimeout"])
        except ValueError as e:
            problems.append(f"Properties.DrainTimeout: {e}")
        else:
            if timeout > MAX_DRAIN:
                problems.append(f"Properties.DrainTimeout must be at most {MAX_DRAIN:g}s (the controller waits "
                                f"{DRAIN_TIMEOUT:g}s for a Drain), got {obj['DrainTimeout']!r}")
    if problems:
        raise ValidationError(problems)
    return Properties(target_groups=tuple(refs), port=port, health_check=check, inner=inner, drain_timeout=timeout)


class TargetGroupFlavor:
    """``FlavorPlugin`` registering members in ELBv2 target groups; ``lookup`` finds the wrapped flavor."""

    def __init__(self, elb: tge.Elb, *, lookup: Lookup, self_name: str = "",
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.elb, self.lookup, self.self_name = elb, lookup, self_name
        self.clock, self.sleep = clock, sleep

    def _props(self, properties: JSON) -> Properties:
        return parse(properties, self_name=self.self_name, strict=False)

    async def _groups(self, props: Properties) -> list[tge.TargetGroup]:
        found, missing = await self.elb.resolve(list(props.target_groups))
        if missing:
            raise PluginError("; ".join(missing))
        return [found[r] for r in props.target_groups]

    async def validate(self, properties: JSON, allocation: flavor.Allocation) -> None:
        props = parse(properties, self_name=self.self_name)
        problems: list[str] = []
        if props.inner is not None:
            try:
                await self.lookup(props.inner[0]).validate(props.inner[1], allocation)
            except PluginError as e:
                problems += [f"Properties.Flavor ({props.inner[0]}): {p}" for p in str(e).split("; ")]
        try:
            found, missing = await self.elb.resolve(list(props.target_groups))
        except AwsError as e:
            raise ValidationError([*problems, f"Properties.TargetGroups: cannot look them up: {e}"]) from None
        problems += [f"Properties.TargetGroups[{props.target_groups.index(r)}]: {m}"
                     for r, m in zip([r for r in props.target_groups if r not in found], missing, strict=True)]
        for i, ref in enumerate(props.target_groups):
            tg = found.get(ref)
            if tg is not None and tg.target_type not in tge.SUPPORTED_TYPES:
                problems.append(f"Properties.TargetGroups[{i}] {tg.name!r} has targets of type {tg.target_type!r}; "
                                f"members can join target groups of type {' or '.join(tge.SUPPORTED_TYPES)}")
        if problems:
            raise ValidationError(problems)

    async def prepare(self, properties: JSON, spec: instance.Spec, allocation: flavor.Allocation,
                      index: flavor.Index) -> instance.Spec:
        props = self._props(properties)
        if props.inner is None:
            return spec
        return await self.lookup(props.inner[0]).prepare(props.inner[1], spec, allocation, index)

    async def prepare_many(self, properties: JSON, specs: list[instance.Spec], allocation: flavor.Allocation,
                           indices: list[flavor.Index]) -> list[instance.Spec | PluginError]:
        """The wrapped flavor prepares them all in one call; without one, the specs go as they are."""
        props = self._props(properties)
        if props.inner is None:
            return list(specs)
        return await self.lookup(props.inner[0]).prepare_many(props.inner[1], specs, allocation, indices)

    async def _gates(self, props: Properties, descriptions: list[instance.Description]) -> list[flavor.Health]:
        """Whether each member is ready to take traffic, before any load balancer looks at it."""
        if props.inner is None:
            states = [d.properties.get("State") if isinstance(d.properties, dict) else None for d in descriptions]
            return [flavor.Health.HEALTHY if s in (None, "running") else flavor.Health.UNKNOWN for s in states]
        inner = self.lookup(props.inner[0])
        try:
            return list(await inner.healthy_many(props.inner[1], descriptions))
        except PluginError as e:
            log.warning("flavor %s gave no verdict: %s", props.inner[0], e)
            return [flavor.Health.UNKNOWN] * len(descriptions)

    async def healthy(self, properties: JSON, description: instance.Description) -> flavor.Health:
        return (await self.healthy_many(properties, [description]))[0]

    async def healthy_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Health]:
        """Every member's verdict in one round: registering the newly healthy ones, reading each target group once."""
        props = self._props(properties)
        verdicts = await self._gates(props, descriptions)
        # Not registered while starting; an unhealthy member is the wrapped flavor's verdict.
        ready = [i for i, g in enumerate(verdicts) if g is flavor.Health.HEALTHY]
        if not ready:
            return verdicts
        states: dict[int, list[str] | None] = {i: [] for i in ready}
        try:
            for tg in await self._groups(props):
                known = await self.elb.health(tg)
                new: list[str] = []
                for i in ready:
                    target = tge.target_id(tg, descriptions[i].id, descriptions[i].properties)
                    seen = states[i]
                    if seen is None:
                        continue
                    state = known.get(target, "unused") if target is not None else tge.DRAINING
                    if target is None or state == tge.DRAINING:
                        states[i] = None  # no address yet, or leaving (Drain ran, the destroy follows)
                    elif state not in tge.REGISTERED:
                        new.append(target)
                        seen.append("initial")
                    else:
                        seen.append(state)
                if new:
                    await self.elb.register(tg, new, props.port)
        except PluginError as e:
            log.warning("target groups %s: %s", ", ".join(props.target_groups), e)
            return [flavor.Health.UNKNOWN if i in states else v for i, v in enumerate(verdicts)]
        for i, seen in states.items():
            verdicts[i] = _verdict(props.health_check, seen)
        return verdicts

    async def drain(self, properties: JSON, description: instance.Description) -> None:
        """Deregister from every target group, wait until none reports the member draining, then drain inside."""
        props = self._props(properties)
        groups = await self._groups(props)
        waiting: list[tuple[tge.TargetGroup, str]] = []
        for tg in groups:
            target = tge.target_id(tg, description.id, description.properties)
            if target is None:
                continue
            if await self.elb.target_state(tg, target) in tge.REGISTERED | {tge.DRAINING}:
                await self.elb.deregister(tg, target, props.port)
                waiting.append((tg, target))
        if waiting:
            limit = props.drain_timeout
            if limit is None:
                limit = min(MAX_DRAIN, max(tg.deregistration_delay for tg, _ in waiting) + DRAIN_MARGIN)
            deadline = self.clock() + limit
            log.info("draining %s from %s (up to %.0fs)", description.id, ", ".join(tg.name for tg, _ in waiting), limit)
            while waiting:
                waiting = [(tg, t) for tg, t in waiting
                           if await self.elb.target_state(tg, t) in tge.REGISTERED | {tge.DRAINING}]
                if not waiting:
                    break
                if self.clock() >= deadline:
                    raise PluginError(f"instance {description.id} is still draining from "
                                      f"{', '.join(tg.name for tg, _ in waiting)} after {limit:g}s (DrainTimeout)")
                await self.sleep(POLL)
        if props.inner is not None:
            await self.lookup(props.inner[0]).drain(props.inner[1], description)


def _verdict(check: str, states: list[str] | None) -> flavor.Health:
    if states is None:
        return flavor.Health.UNKNOWN
    if check == "EC2":
        return flavor.Health.HEALTHY
    if any(s.startswith("unhealthy") for s in states):
        return flavor.Health.UNHEALTHY
    if all(s in ("healthy", "unavailable") for s in states):
        return flavor.Health.HEALTHY
    return flavor.Health.UNKNOWN


_OPTIONS = {"region": str, "profile": str, "endpoint_url": str, "retry_mode": str, "max_attempts": int,
            "health_ttl": float}


@contextlib.asynccontextmanager
async def open_daemon(ctx: DaemonContext) -> AsyncIterator[Served]:
    """Options: ``region``, ``profile``, ``endpoint_url``, ``retry_mode``, ``max_attempts`` (as the aws plugin's)
    and ``health_ttl`` (seconds a target-health answer is shared, default 1)."""
    unknown = sorted(set(ctx.options) - set(_OPTIONS))
    if unknown:
        raise ValidationError([f"unknown option {k!r} for the targetgroup flavor; known: {', '.join(sorted(_OPTIONS))}"
                               for k in unknown])
    ttl = ctx.options.get("health_ttl", 1.0)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl <= 0:
        raise ValidationError(f"option health_ttl must be a positive number of seconds, got {ttl!r}")
    settings = aws.connection(aws.check_options({k: v for k, v in ctx.options.items() if k != "health_ttl"}))
    api = Ec2(settings, service="elbv2")
    for name in ("botocore", "boto3", "urllib3"):
        if logging.getLogger(name).getEffectiveLevel() < logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    plugins = PluginDirectory(ctx.plugins_dir)
    try:
        await api.connect()
        plugin = TargetGroupFlavor(tge.Elb(api, ttl=float(ttl)), lookup=plugins.flavor, self_name=ctx.name)
        yield Served(services=[FlavorService({"": plugin})])
    finally:
        api.close()
        await plugins.close()
