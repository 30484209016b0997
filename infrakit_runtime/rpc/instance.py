"""The Instance SPI on the wire (``Instance/0.6.1``, plus our InstanceBatch and InstanceWatch).

Guarantee: ``InstanceService`` decodes every request strictly (a bad field is named, -32602)
before the plugin object runs, and announces an extension only when every object it serves
implements it. ``InstanceClient`` is just another ``instance.Extended``: where the daemon
announces InstanceBatch, ``provision_many`` is one call, else one Provision per spec (bounded),
so whether to batch is decided here and nowhere else; ``wait_change`` raises ``Unsupported``
where the daemon announces no InstanceWatch; ``describe_since`` is a plain DescribeInstances (every
answer complete) where the daemon announces no InstanceRevision (InfraKit's plugins).
Limit: the client caches the daemon's handshake; a daemon restarted with other extensions is
seen after ``forget()`` (which a failed long poll or DescribeSince calls itself: one failed pass).
"""

from __future__ import annotations

from typing import Any

from infrakit_runtime.rpc.client import Client
from infrakit_runtime.rpc.errors import RemoteError
from infrakit_runtime.rpc.service import Method, Service, bounded
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import JSON, InterfaceSpec, PluginError, Unsupported, ValidationError
from infrakit_runtime.spi.wire import ParamsError, Reader

# A long poll never holds a connection longer than this, whatever the caller asks.
MAX_WAIT_CHANGE = 60.0


# --- service --------------------------------------------------------------------------------


async def _validate(obj: instance.InstancePlugin, p: Reader) -> dict[str, Any]:
    await obj.validate(p.raw("Properties"))
    return {"OK": True}


async def _provision(obj: instance.InstancePlugin, p: Reader) -> dict[str, Any]:
    spec = instance.Spec.from_wire(p.raw("Spec"), "Spec")
    return {"ID": await obj.provision(spec)}


async def _provision_many(obj: instance.Batch, p: Reader) -> dict[str, Any]:
    raw = p.raw("Specs")
    if not isinstance(raw, list):
        raise ParamsError("Specs must be an array of instance specs")
    specs = [instance.Spec.from_wire(s, f"Specs[{i}]") for i, s in enumerate(raw)]
    results = await obj.provision_many(specs)
    return {"Results": [r.to_wire() for r in results]}


async def _wait_change(obj: instance.Watch, p: Reader) -> dict[str, Any]:
    timeout = min(max(float(p.integer("Timeout", default=30)), 0.0), MAX_WAIT_CHANGE)
    return {"Revision": await obj.wait_change(p.integer("Revision", minimum=0), timeout)}


async def _label(obj: instance.InstancePlugin, p: Reader) -> dict[str, Any]:
    await obj.label(p.string("Instance", required=True), p.string_map("Labels") or {})
    return {"OK": True}


async def _destroy(obj: instance.InstancePlugin, p: Reader) -> dict[str, Any]:
    await obj.destroy(p.string("Instance", required=True), instance.Context.from_wire(p.raw("Context")))
    return {"OK": True}


async def _describe(obj: instance.InstancePlugin, p: Reader) -> dict[str, Any]:
    found = await obj.describe_instances(p.string_map("Tags") or {}, p.boolean("Properties"))
    return {"Descriptions": [d.to_wire() for d in found]}


async def _describe_since(obj: instance.Revised, p: Reader) -> dict[str, Any]:
    answer = await obj.describe_since(p.string_map("Tags") or {}, p.boolean("Properties"), p.string("Revision"))
    if answer.descriptions is None:
        return {"Revision": answer.revision, "Unchanged": True, "Descriptions": None}
    return {"Revision": answer.revision, "Unchanged": False, "Descriptions": [d.to_wire() for d in answer.descriptions]}


_EXAMPLE_SPEC = instance.Spec(properties={"exampleString": "a_string"}).to_wire()


class InstanceService(Service):
    interface = instance.INTERFACE
    methods = {
        "Instance.Validate": Method(_validate, {"Type": "", "Properties": {"exampleString": "a_string"}}),
        "Instance.Provision": Method(_provision, {"Type": "", "Spec": _EXAMPLE_SPEC}),
        "Instance.Label": Method(_label, {"Type": "", "Instance": "", "Labels": None}),
        "Instance.Destroy": Method(_destroy, {"Type": "", "Instance": "", "Context": {"Reason": ""}}),
        "Instance.DescribeInstances": Method(_describe, {"Type": "", "Tags": None, "Properties": False}),
    }
    # Extensions served only when every object implements the capability's Protocol.
    extensions: dict[str, tuple[type, InterfaceSpec, Method]] = {
        "Instance.ProvisionMany": (instance.Batch, instance.BATCH_INTERFACE,
                                   Method(_provision_many, {"Type": "", "Specs": [_EXAMPLE_SPEC]})),
        "Instance.WaitChange": (instance.Watch, instance.WATCH_INTERFACE,
                                Method(_wait_change, {"Type": "", "Revision": 0, "Timeout": 30})),
        "Instance.DescribeSince": (instance.Revised, instance.REVISION_INTERFACE,
                                   Method(_describe_since, {"Type": "", "Tags": None, "Properties": False,
                                                            "Revision": ""})),
    }

    def __init__(self, objects: dict[str, Any]) -> None:
        super().__init__(objects)
        self._extra: list[InterfaceSpec] = []
        for name, (protocol, interface, method) in self.extensions.items():
            if all(isinstance(o, protocol) for o in objects.values()):
                self.methods = {**self.methods, name: method}
                self._extra.append(interface)

    def extra_interfaces(self) -> list[InterfaceSpec]:
        return list(self._extra)


# --- client ---------------------------------------------------------------------------------


class InstanceClient:
    """``instance.Extended`` over JSON-RPC; ``type`` selects the object in the daemon."""

    def __init__(self, client: Client, type_: str = "") -> None:
        self.client = client
        self.type = type_
        self._announced: dict[str, Any] | None = None

    async def _call(self, method: str, params: dict[str, Any], *, timeout: float | None = None) -> Any:
        try:
            return await self.client.call(method, {"Type": self.type, **params}, timeout=timeout)
        except RemoteError as e:
            if method == "Instance.Validate":
                raise ValidationError(e.message) from None
            raise PluginError(e.message) from None

    async def _announces(self, interface: InterfaceSpec) -> bool:
        if self._announced is None:
            self._announced = await self.client.hello()
        return str(interface) in self._announced

    def forget(self) -> None:
        """Forget the daemon's handshake: the next call that needs it asks again (after a restart)."""
        self._announced = None

    async def validate(self, properties: JSON) -> None:
        await self._call("Instance.Validate", {"Properties": properties})

    async def provision(self, spec: instance.Spec) -> instance.ID:
        result = await self._call("Instance.Provision", {"Spec": spec.to_wire()})
        if not result.get("ID"):
            raise PluginError(f"plugin {self.client.name} provisioned an instance but returned no ID")
        return str(result["ID"])

    async def provision_many(self, specs: list[instance.Spec]) -> list[instance.ProvisionResult]:
        """One ProvisionMany where the daemon announces InstanceBatch, else one Provision per spec."""
        if len(specs) > 1 and await self._announces(instance.BATCH_INTERFACE):
            result = await self._call("Instance.ProvisionMany", {"Specs": [s.to_wire() for s in specs]})
            return [instance.ProvisionResult.from_wire(r, f"Results[{i}]")
                    for i, r in enumerate(result.get("Results") or [])]
        out: list[instance.ProvisionResult] = []
        for r in await bounded([self.provision(s) for s in specs]):
            if isinstance(r, PluginError):
                out.append(instance.ProvisionResult(error=str(r)))
            elif isinstance(r, BaseException):
                raise r
            else:
                out.append(instance.ProvisionResult(id=r))
        return out

    async def wait_change(self, revision: int, timeout: float) -> int:
        """Block until the plugin's revision passes ``revision`` or ``timeout`` elapses."""
        try:
            if not await self._announces(instance.WATCH_INTERFACE):
                raise Unsupported(f"plugin {self.client.name} does not announce {instance.WATCH_INTERFACE}")
            result = await self._call("Instance.WaitChange", {"Revision": revision, "Timeout": int(timeout)},
                                      timeout=timeout + 10)
        except Unsupported:
            raise
        except PluginError:
            self.forget()  # the daemon may have restarted, with other extensions
            raise
        return int(result.get("Revision", 0))

    async def label(self, instance_id: instance.ID, labels: dict[str, str]) -> None:
        await self._call("Instance.Label", {"Instance": instance_id, "Labels": labels})

    async def destroy(self, instance_id: instance.ID, context: instance.Context) -> None:
        await self._call("Instance.Destroy", {"Instance": instance_id, "Context": context.to_wire()})

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        result = await self._call("Instance.DescribeInstances", {"Tags": tags, "Properties": properties})
        return [instance.Description.from_wire(d) for d in result.get("Descriptions") or []]

    async def describe_since(self, tags: dict[str, str], properties: bool, revision: str) -> instance.Listing:
        """``instance.Revised``: one DescribeSince where the daemon announces InstanceRevision, else a
        DescribeInstances every time (revision "": the answer is always complete)."""
        if not await self._announces(instance.REVISION_INTERFACE):
            return instance.Listing(descriptions=await self.describe_instances(tags, properties))
        try:
            result = await self._call("Instance.DescribeSince",
                                      {"Tags": tags, "Properties": properties, "Revision": revision})
        except PluginError:
            self.forget()  # the daemon may have restarted, with other extensions
            raise
        current = result.get("Revision")
        current = current if isinstance(current, str) else ""
        if result.get("Unchanged") is True and revision and current == revision:
            return instance.Listing(revision=current)
        return instance.Listing(revision=current, descriptions=[instance.Description.from_wire(d)
                                                                for d in result.get("Descriptions") or []])
