"""The Group SPI on the wire (``Group/0.1.1``): the manager's service and the client that calls it.

Guarantee: requests are decoded strictly (a bad field is named) before the manager runs; the
client turns every error answer into a ``PluginError`` carrying the manager's sentence.
Limit: the service announces one object, ``groups``; the group is always named by ``ID``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infrakit_runtime.rpc.client import Client
from infrakit_runtime.rpc.errors import RemoteError
from infrakit_runtime.rpc.service import Method, Service
from infrakit_runtime.spi import group, instance
from infrakit_runtime.spi.common import PluginError
from infrakit_runtime.spi.wire import Reader

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

    def hello_objects(self) -> list[dict[str, str]]:
        return [{"Name": "groups", "ProxyFor": ""}]


# --- client ---------------------------------------------------------------------------------


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
            raise PluginError(e.message) from None

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
