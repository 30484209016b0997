"""The Group SPI on the wire (``Group/0.1.1``): the manager's service and the client that calls it.

Guarantee: requests are decoded strictly (a bad field is named) before the manager runs; the
client turns every error answer into a ``PluginError`` carrying the manager's sentence.
Limit: whatever object a call names (``group``, ``group/groups``, ``group/<ID>``), the group is the one
its ``ID`` param names; ``Handshake.Hello`` announces ``groups`` and one object per group the
manager knows (Go's CLI needs them), but answers every name alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from infrakit_runtime.rpc.client import Client
from infrakit_runtime.rpc.errors import RemoteError
from infrakit_runtime.rpc.service import Method, Service
from infrakit_runtime.spi import group, instance
from infrakit_runtime.spi.common import PluginError
from infrakit_runtime.spi.wire import Reader

# Headers that carry a call's origin (``group.Origin``): when its sender sent it (seconds since
# the epoch: our CLI stamps every call) and which replica forwarded it to the leader.
ORIGIN = "X-Infrakit-Origin"
FORWARDED_BY = "X-Infrakit-Forwarded-By"


def origin_from_headers(headers: Mapping[str, str]) -> group.Origin:
    """The origin a request's headers declare; a stamp that is not a finite number is ignored."""
    sent: float | None = None
    raw = headers.get(ORIGIN)
    if raw:
        try:
            sent = float(raw)
        except ValueError:
            sent = None
        if sent is not None and not math.isfinite(sent):
            sent = None
    return group.Origin(sent=sent, forwarded_by=headers.get(FORWARDED_BY) or None)


def origin_headers(origin: group.Origin | None) -> dict[str, str] | None:
    """The headers that carry ``origin`` (none for a call made here and now)."""
    if origin is None:
        return None
    headers = {}
    if origin.sent is not None:
        headers[ORIGIN] = repr(origin.sent)
    if origin.forwarded_by:
        headers[FORWARDED_BY] = origin.forwarded_by
    return headers or None


# --- service --------------------------------------------------------------------------------



def _id(p: Reader) -> str:
    return p.string("ID", required=True)


async def _commit(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    spec = group.Spec.from_wire(p.raw("Spec"), "Spec")
    answer = await obj.commit_group(spec, p.boolean("Pretend"))
    return answer.to_wire(spec.id)


async def _free(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _id(p)
    await obj.free_group(gid)
    return {"ID": gid}


async def _describe(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _id(p)
    return {"ID": gid, "Description": (await obj.describe_group(gid)).to_wire()}


async def _destroy(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _id(p)
    await obj.destroy_group(gid)
    return {"ID": gid}


async def _inspect(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    specs = await obj.inspect_groups()
    # InfraKit answers null, not [], when there are no groups.
    return {"ID": p.string("ID"), "Groups": [s.to_wire() for s in specs] or None}


async def _destroy_instances(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _id(p)
    await obj.destroy_instances(gid, p.string_list("Instances") or [])
    return {"ID": gid}


async def _size(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _id(p)
    return {"ID": gid, "Size": await obj.size(gid)}


async def _set_size(obj: group.GroupPlugin, p: Reader) -> dict[str, Any]:
    gid = _id(p)
    await obj.set_size(gid, p.integer("Size", minimum=0))
    return {"ID": gid}


class GroupService(Service):
    """The Group SPI. Objects are addressed by ``Name`` (``group``, ``group/groups``,
    ``group/<ID>``); the group itself is always named by the ``ID`` param."""

    interface = group.INTERFACE
    selector = "Name"
    methods = {
        "Group.CommitGroup": Method(_commit, {"Name": "", "Spec": {"ID": "", "Properties": None}, "Pretend": False}),
        "Group.FreeGroup": Method(_free, {"Name": "", "ID": ""}),
        "Group.DescribeGroup": Method(_describe, {"Name": "", "ID": ""}),
        "Group.DestroyGroup": Method(_destroy, {"Name": "", "ID": ""}),
        "Group.InspectGroups": Method(_inspect, {"Name": "", "ID": ""}),
        "Group.DestroyInstances": Method(_destroy_instances, {"Name": "", "ID": "", "Instances": None}),
        "Group.Size": Method(_size, {"Name": "", "ID": ""}),
        "Group.SetSize": Method(_set_size, {"Name": "", "ID": "", "Size": 0}),
    }

    def select(self, socket_name: str, params: Reader) -> tuple[Any, dict[str, Any]]:
        return self.objects[""], {"Name": params.string("Name")}

    def bind(self, obj: Any, headers: Mapping[str, str]) -> Any:
        """A manager answers each call knowing its origin, passed explicitly from the request's headers."""
        if isinstance(obj, group.Routed):
            return obj.with_origin(origin_from_headers(headers))
        return obj

    def hello_objects(self) -> list[dict[str, str]]:
        return [{"Name": "groups", "ProxyFor": ""}]

    async def announce(self) -> list[dict[str, str]]:
        """``groups`` and one object per group, as Go InfraKit's manager announces them: Go's CLI
        builds its ``group/<ID>`` commands from this list."""
        obj = self.objects[""]
        ids = await obj.announced() if isinstance(obj, group.Announcing) else []
        return [{"Name": name, "ProxyFor": ""} for name in sorted({"groups", *ids})]


# --- client ---------------------------------------------------------------------------------


class GroupClient:
    """``GroupPlugin`` over JSON-RPC, addressing the manager's ``group`` socket.

    Every method takes an optional ``origin``: a replica forwarding a call to its leader passes
    the call's origin on (``X-Infrakit-Origin``, ``X-Infrakit-Forwarded-By``).
    """

    def __init__(self, client: Client, name: str = "group") -> None:
        self.client = client
        self.name = name

    async def _call(self, method: str, params: dict[str, Any], origin: group.Origin | None) -> Any:
        try:
            return await self.client.call(method, {"Name": self.name, **params}, headers=origin_headers(origin))
        except RemoteError as e:
            kind = e.data.get("Kind") if isinstance(e.data, dict) else None
            if kind == group.UnknownGroup.kind and isinstance(params.get("ID"), str):
                raise group.UnknownGroup(params["ID"]) from None
            raise PluginError(e.message) from None

    async def commit_group(self, spec: group.Spec, pretend: bool, *, origin: group.Origin | None = None) -> group.Commit:
        result = await self._call("Group.CommitGroup", {"Spec": spec.to_wire(), "Pretend": pretend}, origin)
        return group.Commit.from_wire(result)

    async def free_group(self, group_id: group.ID, *, origin: group.Origin | None = None) -> None:
        await self._call("Group.FreeGroup", {"ID": group_id}, origin)

    async def describe_group(self, group_id: group.ID, *, origin: group.Origin | None = None) -> group.Description:
        result = await self._call("Group.DescribeGroup", {"ID": group_id}, origin)
        return group.Description.from_wire(result.get("Description"))

    async def destroy_group(self, group_id: group.ID, *, origin: group.Origin | None = None) -> None:
        await self._call("Group.DestroyGroup", {"ID": group_id}, origin)

    async def inspect_groups(self, *, origin: group.Origin | None = None) -> list[group.Spec]:
        result = await self._call("Group.InspectGroups", {"ID": ""}, origin)
        return [group.Spec.from_wire(g) for g in result.get("Groups") or []]

    async def destroy_instances(self, group_id: group.ID, instances: list[instance.ID], *,
                                origin: group.Origin | None = None) -> None:
        await self._call("Group.DestroyInstances", {"ID": group_id, "Instances": instances}, origin)

    async def size(self, group_id: group.ID, *, origin: group.Origin | None = None) -> int:
        return int((await self._call("Group.Size", {"ID": group_id}, origin))["Size"])

    async def set_size(self, group_id: group.ID, size: int, *, origin: group.Origin | None = None) -> None:
        await self._call("Group.SetSize", {"ID": group_id, "Size": size}, origin)
