"""Combo flavor: InfraKit's chain of flavors, each reached over JSON-RPC, acting as one.

Guarantee: Prepare runs the listed flavors in order, each one's output spec the
next one's input, so tags merge (later wins) and Init lines concatenate in list
order; Healthy is HEALTHY only when every flavor says so, UNHEALTHY as soon as
one does, UNKNOWN otherwise (including a flavor that cannot be reached: an
unreachable plugin is no verdict on the instance); Drain attempts every flavor,
in order, and reports every failure; Validate validates each flavor and lists
every problem. Members are plugin daemons addressed by ``name[/type]``, so a Go
flavor and a Python one combine alike.
Limit: no transaction across members: if a later flavor fails in Prepare,
nothing is provisioned, but a Drain that fails halfway has still run the
members before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable

from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.rpc.errors import UnreachableError
from infrakit_runtime.rpc.flavor import FlavorService
from infrakit_runtime.rpc.lookup import PluginDirectory
from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.common import JSON, PluginError, PluginName, ValidationError, json_type

log = logging.getLogger(__name__)

Lookup = Callable[[str], flavor.FlavorPlugin]
# What a member may fail with: its own verdict, or not answering at all.
_MEMBER_ERRORS = (PluginError, UnreachableError)


@dataclasses.dataclass(frozen=True)
class Member:
    """One flavor in the chain: where it is and the Properties it is given."""

    plugin: str
    properties: JSON = None

    def label(self, index: int) -> str:
        return f"Flavors[{index}] ({self.plugin})"


def parse_properties(obj: JSON, *, self_name: str, strict: bool) -> list[Member]:
    """The members, or ``ValidationError`` listing every problem.

    A member naming this combo's own socket is refused always: it would call
    itself until every call timed out. ``strict`` (Validate) also rejects unknown
    keys and an empty chain.
    """
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise ValidationError(f"Properties must be an object, got {json_type(obj)}")
    problems: list[str] = []
    if strict:
        problems += [f"unknown property {k!r} (known: Flavors)" for k in sorted(set(obj) - {"Flavors"})]
    raw = obj.get("Flavors")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ValidationError([*problems, f"Flavors must be an array of {{Plugin, Properties}}, got {json_type(raw)}"])
    if strict and not raw:
        problems.append("Flavors must list at least one flavor as {Plugin, Properties}")
    members = []
    for i, item in enumerate(raw):
        where = f"Flavors[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object with Plugin and Properties, got {json_type(item)}")
            continue
        if strict:
            problems += [f"unknown {where} property {k!r} (known: Plugin, Properties)"
                         for k in sorted(set(item) - {"Plugin", "Properties"})]
        name = item.get("Plugin")
        if not isinstance(name, str) or not name:
            problems.append(f"{where}.Plugin must name a flavor plugin as name[/type], got {json_type(name)}")
            continue
        try:
            socket = PluginName.parse(name).socket
        except ValueError as e:
            problems.append(f"{where}.Plugin: {e}")
            continue
        if socket == self_name:
            problems.append(f"{where}.Plugin {name!r} is this combo flavor itself (a combo cannot contain itself)")
            continue
        members.append(Member(plugin=name, properties=item.get("Properties")))
    if problems:
        raise ValidationError(problems)
    return members


class ComboFlavorPlugin:
    """``FlavorPlugin`` that chains the flavors its Properties list."""

    def __init__(self, *, self_name: str, lookup: Lookup) -> None:
        self.self_name = self_name
        self.lookup = lookup

    def _members(self, properties: JSON, *, strict: bool = False) -> list[Member]:
        return parse_properties(properties, self_name=self.self_name, strict=strict)

    async def validate(self, properties: JSON, allocation: flavor.Allocation) -> None:
        members = self._members(properties, strict=True)

        async def one(i: int, m: Member) -> list[str]:
            try:
                await self.lookup(m.plugin).validate(m.properties, allocation)
            except _MEMBER_ERRORS as e:
                # A member's problems arrive joined by "; " (one JSON-RPC message): name the member on each.
                return [f"{m.label(i)}: {p}" for p in str(e).split("; ")]
            return []

        problems = await asyncio.gather(*(one(i, m) for i, m in enumerate(members)))
        found = [p for member_problems in problems for p in member_problems]
        if found:
            raise ValidationError(found)

    async def prepare(self, properties: JSON, spec: instance.Spec, allocation: flavor.Allocation,
                      index: flavor.Index) -> instance.Spec:
        for i, m in enumerate(self._members(properties)):
            try:
                spec = await self.lookup(m.plugin).prepare(m.properties, spec, allocation, index)
            except _MEMBER_ERRORS as e:
                raise PluginError(f"{m.label(i)} could not prepare the instance: {e}") from None
        return spec

    async def healthy(self, properties: JSON, description: instance.Description) -> flavor.Health:
        return (await self.assess_many(properties, [description]))[0].health

    async def assess_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Assessment]:
        """Every member judges every instance (one call per member); the reasons of the members that
        decide the verdict are kept, each named by its member."""
        members = self._members(properties)

        async def one(i: int, m: Member) -> list[flavor.Assessment]:
            plugin = self.lookup(m.plugin)
            try:
                if isinstance(plugin, flavor.Assessing):
                    return list(await plugin.assess_many(m.properties, descriptions))
                verdicts = await asyncio.gather(*(plugin.healthy(m.properties, d) for d in descriptions))
                return [flavor.Assessment(h) for h in verdicts]
            except _MEMBER_ERRORS as e:
                log.warning("%s gave no health verdict: %s", m.label(i), e)
                return [flavor.Assessment(flavor.Health.UNKNOWN, f"no verdict: {e}")] * len(descriptions)

        by_member = await asyncio.gather(*(one(i, m) for i, m in enumerate(members)))
        return [_combined([(m.label(i), answers[k]) for i, (m, answers) in enumerate(zip(members, by_member, strict=True))])
                for k in range(len(descriptions))]

    async def drain(self, properties: JSON, description: instance.Description) -> None:
        errors = []
        for i, m in enumerate(self._members(properties)):
            try:
                await self.lookup(m.plugin).drain(m.properties, description)
            except _MEMBER_ERRORS as e:
                errors.append(f"{m.label(i)}: {e}")
        if errors:
            raise PluginError(f"draining instance {description.id} failed: " + "; ".join(errors))


def _combined(answers: list[tuple[str, flavor.Assessment]]) -> flavor.Assessment:
    """UNHEALTHY as soon as one member says so, HEALTHY when all do, else UNKNOWN; the reason names every
    member that is not healthy (in its words, else its verdict), or, when all are, those that said why.
    ``final`` (the verdict never changes) only when every member said its own is final."""
    verdicts = [a.health for _, a in answers]
    if flavor.Health.UNHEALTHY in verdicts:
        health = flavor.Health.UNHEALTHY
    elif all(v == flavor.Health.HEALTHY for v in verdicts):
        health = flavor.Health.HEALTHY
    else:
        health = flavor.Health.UNKNOWN
    if health == flavor.Health.HEALTHY:
        parts = [f"{label}: {a.reason}" for label, a in answers if a.reason]
    else:
        parts = [f"{label}: {a.reason or _WORDS[a.health]}" for label, a in answers if a.health != flavor.Health.HEALTHY]
    quorum = next((a.quorum for _, a in answers if a.quorum is not None), None)  # a voting member's cluster
    # Fixed only when every member's verdict is: one member that probes keeps the whole chain asked.
    final = bool(answers) and all(a.final for _, a in answers)
    return flavor.Assessment(health, "; ".join(parts), quorum, final=final)


_WORDS = {flavor.Health.UNKNOWN: "no verdict yet", flavor.Health.HEALTHY: "healthy", flavor.Health.UNHEALTHY: "unhealthy"}


@contextlib.asynccontextmanager
async def open_daemon(ctx: DaemonContext) -> AsyncIterator[Served]:
    """No options: members are found by name in the plugin directory at call time."""
    plugins = PluginDirectory(ctx.plugins_dir)
    plugin = ComboFlavorPlugin(self_name=ctx.name, lookup=plugins.flavor)
    try:
        yield Served(services=[FlavorService({"": plugin})])
    finally:
        await plugins.close()
