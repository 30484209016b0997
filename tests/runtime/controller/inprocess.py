"""The real ``GroupController`` in one process: the file instance plugin, an in-memory flavor, a fake clock.

No sockets and no sleeps: plugins are objects found through a ``PluginLookup`` of their own, and
the loop's clock is looptime's (``tests/runtime/fakeclock.py``), so a grace period or a poll
interval costs nothing but the work done in it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from infrakit_runtime.group import events
from infrakit_runtime.group.controller import GroupController
from infrakit_runtime.plugins.instance.file import FileInstancePlugin
from infrakit_runtime.spi import flavor, group, instance
from infrakit_runtime.spi.common import JSON, InterfaceSpec, PluginError, ValidationError


class MemoryFlavor:
    """``flavor.Extended`` in memory: Init from Properties, health as the test sets it (default healthy)."""

    def __init__(self) -> None:
        self.unhealthy: set[str] = set()
        self.drained: list[str] = []

    async def validate(self, properties: JSON, allocation: flavor.Allocation) -> None:
        if isinstance(properties, dict) and "Init" in properties and not isinstance(properties["Init"], str):
            raise ValidationError("Init must be a string")

    async def prepare(self, properties: JSON, spec: instance.Spec, allocation: flavor.Allocation,
                      index: flavor.Index) -> instance.Spec:
        init = properties.get("Init", "") if isinstance(properties, dict) else ""
        return dataclasses.replace(spec, init=init)

    async def healthy(self, properties: JSON, description: instance.Description) -> flavor.Health:
        return flavor.Health.UNHEALTHY if description.id in self.unhealthy else flavor.Health.HEALTHY

    async def drain(self, properties: JSON, description: instance.Description) -> None:
        self.drained.append(description.id)

    async def prepare_many(self, properties: JSON, specs: list[instance.Spec], allocation: flavor.Allocation,
                           indices: list[flavor.Index]) -> list[instance.Spec | PluginError]:
        return [await self.prepare(properties, s, allocation, x) for s, x in zip(specs, indices, strict=True)]

    async def healthy_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Health]:
        return [await self.healthy(properties, d) for d in descriptions]


class Plugins:
    """``PluginLookup`` over plugin objects in this process."""

    def __init__(self, instances: dict[str, Any], flavors: dict[str, Any]) -> None:
        self.instances, self.flavors = instances, flavors

    def instance(self, name: str) -> instance.Extended:
        return self.instances[name]

    def flavor(self, name: str) -> flavor.Extended:
        return self.flavors[name]

    async def check(self, name: str, interface: InterfaceSpec) -> None:
        known = self.instances if interface == instance.INTERFACE else self.flavors
        if name not in known:
            raise ValidationError(f"plugin {name!r} is not reachable: no such plugin in this process")


class World:
    """A controller over a file plugin in ``directory`` and a memory flavor; call inside a fake-clock loop."""

    def __init__(self, directory: Path, *, poll_interval: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        self.files = FileInstancePlugin(directory)
        self.flavor = MemoryFlavor()
        self.events = events.EventLog(clock=loop.time)
        self.controller = GroupController(plugins=Plugins({"file": self.files}, {"memory": self.flavor}),
                                          poll_interval=poll_interval, events=self.events, clock=loop.time)

    async def close(self) -> None:
        await self.controller.stop_all()

    @staticmethod
    def spec(gid: str = "web", *, size: int | None = 3, logical_ids: list[str] | None = None, init: str = "v1",
             grace: str = "1s", unhealthy_threshold: int = 2, health_interval: str | None = None,
             **updating: Any) -> group.Spec:
        allocation: dict[str, Any] = {"LogicalIDs": logical_ids} if logical_ids is not None else {"Size": size}
        props: dict[str, Any] = {
            "Allocation": allocation,
            "Instance": {"Plugin": "file", "Properties": {"Note": "in-process"}},
            "Flavor": {"Plugin": "memory", "Properties": {"Init": init}},
            "Health": {"GracePeriod": grace, "UnhealthyThreshold": unhealthy_threshold},
        }
        if health_interval is not None:
            props["Health"]["Interval"] = health_interval
        if updating:
            props["Updating"] = updating
        return group.Spec(id=gid, properties=props)

    async def commit(self, spec: group.Spec, pretend: bool = False) -> str:
        return (await self.controller.commit_group(spec, pretend)).details

    async def members(self, gid: str = "web") -> list[instance.Description]:
        """What the instance plugin itself reports (the world, not the controller's view)."""
        return await self.files.describe_instances({instance.TAG_GROUP: gid}, True)

    async def converged(self, size: int, gid: str = "web", init: str | None = None) -> bool:
        desc = await self.controller.describe_group(gid)
        if not desc.converged or len(desc.instances) != size or len(await self.members(gid)) != size:
            return False
        return init is None or all(self.init(d) == init for d in await self.members(gid))

    @staticmethod
    def init(description: instance.Description) -> str:
        spec = description.properties if isinstance(description.properties, dict) else {}
        return str(spec.get("Init", ""))

    def kinds(self, gid: str = "web") -> list[tuple[str, str]]:
        return [(e.kind, e.instance) for e in self.events.recent(group=gid, limit=0)]
