"""Wire codecs for each SPI: decode params, call the plugin object, encode the result.

A ``Service`` serves one interface (``Instance/0.6.1``...) for one or more plugin
objects selected by the request's ``Type`` (instance, flavor) or ``Name``
(group) field, exactly as InfraKit's ``socket/type`` names do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from infrakit_runtime.spi import flavor, group, instance, manager
from infrakit_runtime.spi.common import JSON, InterfaceSpec, ValidationError
from infrakit_runtime.spi.wire import ParamsError, Reader

Handler = Callable[[Any, Reader], Awaitable[dict[str, Any]]]

# Our extensions are additive: extra methods announced under extra interface names in
# Handshake.Hello, which InfraKit's Go clients ignore.
INSTANCE_BATCH = InterfaceSpec("InstanceBatch", "0.1.0")  # Instance.ProvisionMany
INSTANCE_WATCH = InterfaceSpec("InstanceWatch", "0.1.0")  # Instance.WaitChange (long poll)
FLAVOR_BATCH = InterfaceSpec("FlavorBatch", "0.1.0")  # Flavor.PrepareMany, Flavor.HealthyMany
# How many per-instance calls a batch method runs at once inside the daemon.
BATCH_CONCURRENCY = 64
# A long poll never holds a connection longer than this, whatever the caller asks.
MAX_WAIT_CHANGE = 60.0


@dataclasses.dataclass(frozen=True)
class Method:
    """One RPC method: its handler and an example request used by /info/api.json."""

    handler: Handler
    example: dict[str, Any]


class Service:
    """One interface served for a set of named objects (``""`` is the default object)."""

    interface: InterfaceSpec
    methods: dict[str, Method]
    selector = "Type"

    def __init__(self, objects: dict[str, Any]) -> None:
        if not objects:
            raise ValueError("a service needs at least one object")
        self.objects = objects

    def select(self, socket_name: str, params: Reader) -> tuple[Any, dict[str, Any]]:
        """The object a request addresses, and the fields every answer echoes."""
        key = params.string(self.selector)
        if key in self.objects:
            return self.objects[key], {self.selector: key}
        known = ", ".join(repr(k) for k in sorted(self.objects) if k) or "none but the default"
        raise ValidationError(
            f"not found: {socket_name}/{key} (key={key}); this plugin serves types: {known}"
        )

    def extra_interfaces(self) -> list[InterfaceSpec]:
        return []

    def hello_objects(self) -> list[dict[str, str]]:
        return [{"Name": name or ".", "ProxyFor": ""} for name in sorted(self.objects)]


# --- Instance -------------------------------------------------------------------------------


async def _instance_validate(obj: instance.InstancePlugin, p: Reader) -> dict[str, Any]:
    await obj.validate(p.raw("Properties"))
    return {"OK": True}


async def _instance_provision(obj: instance.InstancePlugin, p: Reader) -> dict[str, Any]:
    spec = instance.Spec.from_wire(p.raw("Spec"), "Spec")
    return {"ID": await obj.provision(spec)}


async def _instance_provision_many(obj: Any, p: Reader) -> dict[str, Any]:
    raw = p.raw("Specs")
    if not isinstance(raw, list):
        raise ParamsError("Specs must be an array of instance specs")
    specs = [instance.Spec.from_wire(s, f"Specs[{i}]") for i, s in enumerate(raw)]
    results = await obj.provision_many(specs)
    return {"Results": [r.to_wire() for r in results]}


async def _instance_wait_change(obj: Any, p: Reader) -> dict[str, Any]:
    timeout = min(max(float(p.integer("Timeout", default=30)), 0.0), MAX_WAIT_CHANGE)
    return {"Revision": await obj.wait_change(p.integer("Revision", minimum=0), timeout)}


async def _instance_label(obj: instance.InstancePlugin, p: Reader) -> dict[str, Any]:
    await obj.label(p.string("Instance", required=True), p.string_map("Labels") or {})
    return {"OK": True}


async def _instance_destroy(obj: instance.InstancePlugin, p: Reader) -> dict[str, Any]:
    await obj.destroy(p.string("Instance", required=True), instance.Context.from_wire(p.raw("Context")))
    return {"OK": True}


async def _instance_describe(obj: instance.InstancePlugin, p: Reader) -> dict[str, Any]:
    found = await obj.describe_instances(p.string_map("Tags") or {}, p.boolean("Properties"))
    return {"Descriptions": [d.to_wire() for d in found]}


_EXAMPLE_SPEC = instance.Spec(properties={"exampleString": "a_string"}).to_wire()


@dataclasses.dataclass(frozen=True)
class ProvisionResult:
    """One slot's outcome in a batch provision: an ID or an error text."""

    id: str | None = None
    error: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"ID": self.id, "Error": self.error}


class InstanceService(Service):
    interface = instance.INTERFACE
    methods = {
        "Instance.Validate": Method(_instance_validate, {"Type": "", "Properties": {"exampleString": "a_string"}}),
        "Instance.Provision": Method(_instance_provision, {"Type": "", "Spec": _EXAMPLE_SPEC}),
        "Instance.Label": Method(_instance_label, {"Type": "", "Instance": "", "Labels": None}),
        "Instance.Destroy": Method(_instance_destroy, {"Type": "", "Instance": "", "Context": {"Reason": ""}}),
        "Instance.DescribeInstances": Method(_instance_describe, {"Type": "", "Tags": None, "Properties": False}),
    }
    # Extensions served only when every object implements the capability.
    extensions = {
        "provision_many": (INSTANCE_BATCH, "Instance.ProvisionMany",
                           Method(_instance_provision_many, {"Type": "", "Specs": [_EXAMPLE_SPEC]})),
        "wait_change": (INSTANCE_WATCH, "Instance.WaitChange",
                        Method(_instance_wait_change, {"Type": "", "Revision": 0, "Timeout": 30})),
    }

    def __init__(self, objects: dict[str, Any]) -> None:
        super().__init__(objects)
        self._extra: list[InterfaceSpec] = []
        for capability, (interface, name, method) in self.extensions.items():
            if all(hasattr(o, capability) for o in objects.values()):
                self.methods = {**self.methods, name: method}
                self._extra.append(interface)

    def extra_interfaces(self) -> list[InterfaceSpec]:
        return list(self._extra)


# --- Flavor ---------------------------------------------------------------------------------


async def _flavor_validate(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    await obj.validate(p.raw("Properties"), flavor.Allocation.from_wire(p.raw("Allocation")))
    return {"OK": True}


async def _flavor_prepare(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    spec = await obj.prepare(
        p.raw("Properties"),
        instance.Spec.from_wire(p.raw("Spec"), "Spec"),
        flavor.Allocation.from_wire(p.raw("Allocation")),
        flavor.Index.from_wire(p.raw("Index")),
    )
    return {"Spec": spec.to_wire()}


def _flavor_instance(p: Reader) -> instance.Description:
    return instance.Description.from_wire(p.raw("Instance"), "Instance")


async def _flavor_healthy(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    return {"Health": int(await obj.healthy(p.raw("Properties"), _flavor_instance(p)))}


async def _flavor_drain(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    await obj.drain(p.raw("Properties"), _flavor_instance(p))
    return {"OK": True}


async def _bounded(calls: list[Any]) -> list[Any]:
    """Await coroutines with at most BATCH_CONCURRENCY in flight, keeping order."""
    import asyncio

    gate = asyncio.Semaphore(BATCH_CONCURRENCY)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in calls), return_exceptions=True)


async def _flavor_prepare_many(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    raw_specs, raw_indices = p.raw("Specs"), p.raw("Indices")
    if not isinstance(raw_specs, list) or not isinstance(raw_indices, list) or len(raw_specs) != len(raw_indices):
        raise ParamsError("Specs and Indices must be arrays of the same length")
    props, allocation = p.raw("Properties"), flavor.Allocation.from_wire(p.raw("Allocation"))
    specs = [instance.Spec.from_wire(s, f"Specs[{i}]") for i, s in enumerate(raw_specs)]
    indices = [flavor.Index.from_wire(x, f"Indices[{i}]") for i, x in enumerate(raw_indices)]
    results = await _bounded([obj.prepare(props, s, allocation, x) for s, x in zip(specs, indices, strict=True)])
    return {"Results": [
        {"Spec": None, "Error": str(r)} if isinstance(r, BaseException) else {"Spec": r.to_wire(), "Error": None}
        for r in results
    ]}


async def _flavor_healthy_many(obj: flavor.FlavorPlugin, p: Reader) -> dict[str, Any]:
    raw = p.raw("Instances")
    if not isinstance(raw, list):
        raise ParamsError("Instances must be an array of instance descriptions")
    props = p.raw("Properties")
    descriptions = [instance.Description.from_wire(d, f"Instances[{i}]") for i, d in enumerate(raw)]
    if hasattr(obj, "healthy_many"):
        # A flavor that judges many members at once (one load-balancer read for all) does it itself.
        many = await obj.healthy_many(props, descriptions)
        return {"Healths": [int(h) for h in many]}
    results = await _bounded([obj.healthy(props, d) for d in descriptions])
    # A probe that raised cannot tell: UNKNOWN, never a crash of the whole batch.
    return {"Healths": [int(flavor.Health.UNKNOWN) if isinstance(r, BaseException) else int(r) for r in results]}


_EXAMPLE_INSTANCE = {"ID": "", "LogicalID": None, "Tags": None}


class FlavorService(Service):
    interface = flavor.INTERFACE
    methods = {
        "Flavor.Validate": Method(_flavor_validate, {"Type": "", "Properties": None, "Allocation": {"Size": 0, "LogicalIDs": None}}),
        "Flavor.Prepare": Method(
            _flavor_prepare,
            {
                "Type": "",
                "Properties": None,
                "Spec": instance.Spec().to_wire(),
                "Allocation": {"Size": 0, "LogicalIDs": None},
                "Index": {"Group": "", "Sequence": 0},
            },
        ),
        "Flavor.Healthy": Method(_flavor_healthy, {"Type": "", "Properties": None, "Instance": _EXAMPLE_INSTANCE}),
        "Flavor.Drain": Method(_flavor_drain, {"Type": "", "Properties": None, "Instance": _EXAMPLE_INSTANCE}),
        # Our batch extension: one round trip per reconcile instead of one per instance.
        "Flavor.PrepareMany": Method(_flavor_prepare_many, {"Type": "", "Properties": None, "Specs": [], "Indices": [],
                                                            "Allocation": {"Size": 0, "LogicalIDs": None}}),
        "Flavor.HealthyMany": Method(_flavor_healthy_many, {"Type": "", "Properties": None, "Instances": []}),
    }

    def extra_interfaces(self) -> list[InterfaceSpec]:
        return [FLAVOR_BATCH]


# --- Group ----------------------------------------------------------------------------------


def _group_id(p: Reader) -> str:
    return p.string("ID", required=True)


async def _group_commit(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    spec = group.Spec.from_wire(p.raw("Spec"), "Spec")
    answer = await obj.commit_group(spec, p.boolean("Pretend"))
    return answer.to_wire(spec.id)


async def _group_free(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _group_id(p)
    await obj.free_group(gid)
    return {"ID": gid}


async def _group_describe(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _group_id(p)
    return {"ID": gid, "Description": (await obj.describe_group(gid)).to_wire()}


async def _group_destroy(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _group_id(p)
    await obj.destroy_group(gid)
    return {"ID": gid}


async def _group_inspect(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    specs = await obj.inspect_groups()
    # InfraKit answers null, not [], when there are no groups.
    return {"ID": p.string("ID"), "Groups": [s.to_wire() for s in specs] or None}


async def _group_destroy_instances(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _group_id(p)
    await obj.destroy_instances(gid, p.string_list("Instances") or [])
    return {"ID": gid}


async def _group_size(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _group_id(p)
    return {"ID": gid, "Size": await obj.size(gid)}


async def _group_set_size(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _group_id(p)
    await obj.set_size(gid, p.integer("Size", minimum=0))
    return {"ID": gid}


class GroupService(Service):
    """The Group SPI. Objects are addressed by ``Name`` (``group``, ``group/groups``,
    ``group/<ID>``); the group itself is always named by the ``ID`` param."""

    interface = group.INTERFACE
    selector = "Name"
    methods = {
        "Group.CommitGroup": Method(_group_commit, {"Name": "", "Spec": {"ID": "", "Properties": None}, "Pretend": False}),
        "Group.FreeGroup": Method(_group_free, {"Name": "", "ID": ""}),
        "Group.DescribeGroup": Method(_group_describe, {"Name": "", "ID": ""}),
        "Group.DestroyGroup": Method(_group_destroy, {"Name": "", "ID": ""}),
        "Group.InspectGroups": Method(_group_inspect, {"Name": "", "ID": ""}),
        "Group.DestroyInstances": Method(_group_destroy_instances, {"Name": "", "ID": "", "Instances": None}),
        "Group.Size": Method(_group_size, {"Name": "", "ID": ""}),
        "Group.SetSize": Method(_group_set_size, {"Name": "", "ID": "", "Size": 0}),
    }

    def select(self, socket_name: str, params: Reader) -> tuple[Any, dict[str, Any]]:
        return self.objects[""], {"Name": params.string("Name")}

    def hello_objects(self) -> list[dict[str, str]]:
        return [{"Name": "groups", "ProxyFor": ""}]


# --- Manager --------------------------------------------------------------------------------


def location_to_wire(url: str | None) -> JSON:
    """A URL as Go's ``url.URL`` struct, which InfraKit's LeaderLocation returns."""
    if not url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return {
        "Scheme": parts.scheme,
        "Opaque": "",
        "User": None,
        "Host": parts.netloc,
        "Path": parts.path,
        "RawPath": "",
        "OmitHost": False,
        "ForceQuery": False,
        "RawQuery": parts.query,
        "Fragment": parts.fragment,
        "RawFragment": "",
    }


def location_from_wire(obj: JSON) -> str | None:
    """The inverse of ``location_to_wire`` (also accepts a plain string)."""
    if obj is None:
        return None
    if isinstance(obj, str):
        return obj
    r = Reader(obj, "Location")
    scheme, host, path = r.string("Scheme"), r.string("Host"), r.string("Path")
    if not scheme and not host:
        return None
    query = r.string("RawQuery")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


async def _manager_is_leader(obj: manager.Manager, p: Reader) -> dict[str, Any]:
    return {"Leader": await obj.is_leader()}


async def _manager_leader_location(obj: manager.Manager, p: Reader) -> dict[str, Any]:
    return {"Location": location_to_wire(await obj.leader_location())}


async def _manager_specs(obj: manager.Manager, p: Reader) -> dict[str, Any]:
    specs = await obj.specs()
    return {"Specs": [s.to_wire() for s in specs] or None}


async def _manager_status(obj: Any, p: Reader) -> dict[str, Any]:
    return dict(await obj.status())


async def _manager_hand_over(obj: Any, p: Reader) -> dict[str, Any]:
    answer = await obj.hand_over(p.string("Reason") or "asked over RPC (Manager.HandOver)")
    return {"HandedOver": answer["HandedOver"], "Location": location_to_wire(answer["Leader"])}


async def _manager_events(obj: Any, p: Reader) -> dict[str, Any]:
    events = await obj.recent_events(since=p.integer("Since", minimum=0), group_id=p.string("Group") or None,
                                     limit=p.integer("Limit", 100, minimum=0))
    return {"Events": events}


class ManagerService(Service):
    interface = manager.INTERFACE
    selector = ""
    methods = {
        "Manager.IsLeader": Method(_manager_is_leader, {}),
        "Manager.LeaderLocation": Method(_manager_leader_location, {}),
        "Manager.Specs": Method(_manager_specs, {}),
        # Ours: leader, location, backend health, and why a replica is not acting.
        "Manager.Status": Method(_manager_status, {}),
        # Ours: this replica's recent events (Since: a sequence number, Limit 0: all kept).
        "Manager.Events": Method(_manager_events, {"Since": 0, "Group": "", "Limit": 100}),
        # Ours: a leader stops leading so a follower takes over (supervisors first, then the lease);
        # it campaigns again only once another leads. A follower answers HandedOver false.
        "Manager.HandOver": Method(_manager_hand_over, {"Reason": ""}),
    }

    def select(self, socket_name: str, params: Reader) -> tuple[Any, dict[str, Any]]:
        return self.objects[""], {}


def service_for(interface: InterfaceSpec, objects: dict[str, Any]) -> Service:
    """The service class that serves ``interface`` over ``objects``."""
    for cls in (InstanceService, FlavorService, GroupService, ManagerService):
        if cls.interface == interface:
            return cls(objects)
    raise ValueError(f"no wire codec for interface {interface}")


def example_response(method: str) -> JSON:
    """A zero-valued result, the shape /info/api.json documents."""
    return {"result": {}, "method": method}
