"""Remote plugins: each SPI Protocol implemented over a ``Client``.

A remote plugin is just another implementation of the Protocol, so the group
controller drives a Go plugin, a Python daemon or an in-process object alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infrakit_runtime.rpc.client import Client
from infrakit_runtime.rpc.errors import RemoteError
from infrakit_runtime.rpc.services import (
    FLAVOR_BATCH,
    INSTANCE_BATCH,
    INSTANCE_WATCH,
    ProvisionResult,
    location_from_wire,
)
from infrakit_runtime.spi import flavor, group, instance
from infrakit_runtime.spi.common import JSON, PluginError, ValidationError

# Drain may rightly take as long as a load balancer's deregistration delay (300 s by default) or a
# flavor's drain hook: the call waits up to this long, whatever the client's usual timeout.
DRAIN_TIMEOUT = 900.0


def _raise_plugin_error(e: RemoteError) -> None:
    raise PluginError(e.message) from None


class InstanceClient:
    """``InstancePlugin`` over JSON-RPC; ``type`` selects the object in the daemon."""

    def __init__(self, client: Client, type_: str = "") -> None:
        self.client = client
        self.type = type_
        self._objects: dict[str, Any] | None = None

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        try:
            return await self.client.call(method, {"Type": self.type, **params})
        except RemoteError as e:
            if method == "Instance.Validate":
                raise ValidationError(e.message) from None
            _raise_plugin_error(e)

    async def validate(self, properties: JSON) -> None:
        await self._call("Instance.Validate", {"Properties": properties})

    async def provision(self, spec: instance.Spec) -> instance.ID:
        result = await self._call("Instance.Provision", {"Spec": spec.to_wire()})
        if not result.get("ID"):
            raise PluginError(f"plugin {self.client.name} provisioned an instance but returned no ID")
        return str(result["ID"])

    async def _announced(self) -> dict[str, Any]:
        if self._objects is None:
            self._objects = await self.client.hello()
        return self._objects

    async def supports_batch(self) -> bool:
        """Whether the daemon announces ``Instance.ProvisionMany`` (our extension)."""
        return str(INSTANCE_BATCH) in await self._announced()

    async def supports_watch(self) -> bool:
        """Whether the daemon announces ``Instance.WaitChange`` (our long-poll extension)."""
        return str(INSTANCE_WATCH) in await self._announced()

    async def wait_change(self, revision: int, timeout: float) -> int:
        """Block until the plugin's revision passes ``revision`` or ``timeout`` elapses."""
        try:
            result = await self.client.call("Instance.WaitChange", {"Type": self.type, "Revision": revision,
                                                                     "Timeout": int(timeout)}, timeout=timeout + 10)
        except RemoteError as e:
            _raise_plugin_error(e)
        return int(result.get("Revision", 0))

    async def provision_many(self, specs: list[instance.Spec]) -> list[ProvisionResult]:
        result = await self._call("Instance.ProvisionMany", {"Specs": [s.to_wire() for s in specs]})
        return [ProvisionResult(id=r.get("ID"), error=r.get("Error")) for r in result.get("Results") or []]

    async def label(self, instance_id: instance.ID, labels: dict[str, str]) -> None:
        await self._call("Instance.Label", {"Instance": instance_id, "Labels": labels})

    async def destroy(self, instance_id: instance.ID, context: instance.Context) -> None:
        await self._call("Instance.Destroy", {"Instance": instance_id, "Context": context.to_wire()})

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        result = await self._call("Instance.DescribeInstances", {"Tags": tags, "Properties": properties})
        return [instance.Description.from_wire(d) for d in result.get("Descriptions") or []]


class FlavorClient:
    """``FlavorPlugin`` over JSON-RPC, using our batch extension when the daemon announces it."""

    def __init__(self, client: Client, type_: str = "") -> None:
        self.client = client
        self.type = type_
        self._batch: bool | None = None

    async def supports_batch(self) -> bool:
        if self._batch is None:
            self._batch = str(FLAVOR_BATCH) in await self.client.hello()
        return self._batch

    async def prepare_many(self, properties: JSON, specs: list[instance.Spec], allocation: flavor.Allocation,
                           indices: list[flavor.Index]) -> list[instance.Spec | PluginError]:
        """Prepare many specs in one call (batch daemons) or one call each (InfraKit's plugins)."""
        if not await self.supports_batch():
            out: list[instance.Spec | PluginError] = []
            for spec, index in zip(specs, indices, strict=True):
                try:
                    out.append(await self.prepare(properties, spec, allocation, index))
                except PluginError as e:
                    out.append(e)
            return out
        result = await self._call("Flavor.PrepareMany", {
            "Properties": properties, "Specs": [s.to_wire() for s in specs],
            "Allocation": allocation.to_wire(), "Indices": [i.to_wire() for i in indices],
        })
        return [PluginError(r["Error"]) if r.get("Error") else instance.Spec.from_wire(r.get("Spec"))
                for r in result.get("Results") or []]

    async def healthy_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Health]:
        """Health of many instances in one call (batch daemons) or concurrent single calls."""
        if not await self.supports_batch():
            import asyncio

            gate = asyncio.Semaphore(32)

            async def one(d: instance.Description) -> flavor.Health:
                async with gate:
                    try:
                        return await self.healthy(properties, d)
                    except PluginError:
                        return flavor.Health.UNKNOWN

            return list(await asyncio.gather(*(one(d) for d in descriptions)))
        result = await self._call("Flavor.HealthyMany", {"Properties": properties,
                                                         "Instances": [d.to_wire() for d in descriptions]})
        out = []
        for h in result.get("Healths") or []:
            try:
                out.append(flavor.Health(int(h)))
            except (TypeError, ValueError):
                out.append(flavor.Health.UNKNOWN)
        return out

    async def _call(self, method: str, params: dict[str, Any], timeout: float | None = None) -> Any:
        try:
            return await self.client.call(method, {"Type": self.type, **params}, timeout=timeout)
        except RemoteError as e:
            if method == "Flavor.Validate":
                raise ValidationError(e.message) from None
            _raise_plugin_error(e)

    async def validate(self, properties: JSON, allocation: flavor.Allocation) -> None:
        await self._call("Flavor.Validate", {"Properties": properties, "Allocation": allocation.to_wire()})

    async def prepare(self, properties: JSON, spec: instance.Spec, allocation: flavor.Allocation,
                      index: flavor.Index) -> instance.Spec:
        result = await self._call("Flavor.Prepare", {
            "Properties": properties, "Spec": spec.to_wire(),
            "Allocation": allocation.to_wire(), "Index": index.to_wire(),
        })
        return instance.Spec.from_wire(result.get("Spec"))

    async def healthy(self, properties: JSON, description: instance.Description) -> flavor.Health:
        result = await self._call("Flavor.Healthy", {"Properties": properties, "Instance": description.to_wire()})
        try:
            return flavor.Health(int(result.get("Health", 0)))
        except ValueError:
            return flavor.Health.UNKNOWN

    async def drain(self, properties: JSON, description: instance.Description) -> None:
        await self._call("Flavor.Drain", {"Properties": properties, "Instance": description.to_wire()},
                         timeout=max(self.client.timeout, DRAIN_TIMEOUT))


class GroupClient:
    """``GroupPlugin`` over JSON-RPC, addressing the manager's ``group`` socket."""

    def __init__(self, client: Client, name: str = "group",
                 headers: Callable[[], dict[str, str]] | None = None) -> None:
        self.client = client
        self.name = name
        self._headers = headers

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        try:
            return await self.client.call(method, {"Name": self.name, **params},
                                          headers=self._headers() if self._headers else None)
        except RemoteError as e:
            _raise_plugin_error(e)

    async def commit_group(self, spec: group.Spec, pretend: bool) -> group.Commit:
        result = await self._call("Group.CommitGroup", {"Spec": spec.to_wire(), "Pretend": pretend})
        return group.Commit.from_wire(result)

    async def free_group(self, group_id: group.ID) -> None:
        await self._call("Group.FreeGroup", {"ID": group_id})

    async def describe_group(self, group_id: group.ID) -> group.Description:
        result = await self._call("Group.DescribeGroup", {"ID": group_id})
        return group.Description.from_wire(result.get("Description"))

    async def destroy_group(self, group_id: group.ID) -> None:
        await self._call("Group.DestroyGroup", {"ID": group_id})

    async def inspect_groups(self) -> list[group.Spec]:
        result = await self._call("Group.InspectGroups", {"ID": ""})
        return [group.Spec.from_wire(g) for g in result.get("Groups") or []]

    async def destroy_instances(self, group_id: group.ID, instances: list[instance.ID]) -> None:
        await self._call("Group.DestroyInstances", {"ID": group_id, "Instances": instances})

    async def size(self, group_id: group.ID) -> int:
        return int((await self._call("Group.Size", {"ID": group_id}))["Size"])

    async def set_size(self, group_id: group.ID, size: int) -> None:
        await self._call("Group.SetSize", {"ID": group_id, "Size": size})


class ManagerClient:
    """``Manager`` over JSON-RPC."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def is_leader(self) -> bool:
        return bool((await self.client.call("Manager.IsLeader", {})).get("Leader"))

    async def leader_location(self) -> str | None:
        return location_from_wire((await self.client.call("Manager.LeaderLocation", {})).get("Location"))

    async def specs(self) -> list[group.Spec]:
        result = await self.client.call("Manager.Specs", {})
        return [group.Spec.from_wire(s) for s in result.get("Specs") or []]
