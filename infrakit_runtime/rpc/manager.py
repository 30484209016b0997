"""The Manager SPI on the wire (InfraKit's ``Stack/0.1.1``), plus our Status and Events.

Served on the manager's ``group`` socket beside the Group SPI. ``LeaderLocation`` answers a
URL as Go's ``url.URL`` struct, as InfraKit does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from infrakit_runtime.rpc.service import Method, Service
from infrakit_runtime.spi import manager
from infrakit_runtime.spi.common import JSON
from infrakit_runtime.spi.wire import Reader


def location_to_wire(url: str | None) -> JSON:
    """A URL as Go's ``url.URL`` struct, which InfraKit's LeaderLocation returns."""
    if not url:
        return None
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


async def _is_leader(obj: manager.Manager, p: Reader) -> dict[str, Any]:
    return {"Leader": await obj.is_leader()}


async def _leader_location(obj: manager.Manager, p: Reader) -> dict[str, Any]:
    return {"Location": location_to_wire(await obj.leader_location())}


async def _specs(obj: manager.Manager, p: Reader) -> dict[str, Any]:
    specs = await obj.specs()
    return {"Specs": [s.to_wire() for s in specs] or None}


async def _status(obj: Any, p: Reader) -> dict[str, Any]:
    return dict(await obj.status())


async def _hand_over(obj: Any, p: Reader) -> dict[str, Any]:
    answer = await obj.hand_over(p.string("Reason") or "asked over RPC (Manager.HandOver)")
    return {"HandedOver": answer["HandedOver"], "Location": location_to_wire(answer["Leader"])}


async def _events(obj: Any, p: Reader) -> dict[str, Any]:
    events = await obj.recent_events(since=p.integer("Since", minimum=0), group_id=p.string("Group") or None,
                                     limit=p.integer("Limit", 100, minimum=0))
    return {"Events": events}


class ManagerService(Service):
    interface = manager.INTERFACE
    selector = ""
    methods = {
        "Manager.IsLeader": Method(_is_leader, {}),
        "Manager.LeaderLocation": Method(_leader_location, {}),
        "Manager.Specs": Method(_specs, {}),
        # Ours: leader, location, backend health, and why a replica is not acting.
        "Manager.Status": Method(_status, {}),
        # Ours: this replica's recent events (Since: a sequence number, Limit 0: all kept).
        "Manager.Events": Method(_events, {"Since": 0, "Group": "", "Limit": 100}),
        # Ours: a leader stops leading so a follower takes over (supervisors first, then the lease);
        # it campaigns again only once another leads. A follower answers HandedOver false.
        "Manager.HandOver": Method(_hand_over, {"Reason": ""}),
    }

    def select(self, socket_name: str, params: Reader) -> tuple[Any, dict[str, Any]]:
        return self.objects[""], {}
