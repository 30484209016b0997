"""Group SPI (InfraKit ``Group/0.1.1``): keep a declared group of instances alive.

A group is a spec ``{ID, Properties}`` whose Properties name an instance plugin,
a flavor plugin and an allocation. The wire carries Properties as raw JSON; the
controller (``infrakit_runtime.group.plan.spec``) parses and validates it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import JSON, InterfaceSpec, PluginError
from infrakit_runtime.spi.wire import Reader

INTERFACE = InterfaceSpec("Group", "0.1.1")

ID = str


@dataclasses.dataclass(frozen=True)
class Spec:
    """A group declaration as it crosses the wire.

    ``status`` is our additive field, set only in InspectGroups answers for a group the
    manager keeps but cannot enforce (``{Condition: Degraded, Reason}``); it is never part
    of the declaration (the group parser reads ``ID`` and ``Properties`` only).
    """

    id: ID
    properties: JSON = None
    status: JSON = None

    def to_wire(self) -> dict[str, Any]:
        out = {"ID": self.id, "Properties": self.properties}
        if self.status is not None:
            out["Status"] = self.status
        return out

    @classmethod
    def from_wire(cls, obj: JSON, where: str = "Spec") -> Spec:
        r = Reader(obj, where)
        return cls(id=r.string("ID", required=True), properties=r.raw("Properties"), status=r.raw("Status"))


@dataclasses.dataclass(frozen=True)
class Description:
    """A group's members and whether they match the spec.

    ``status`` is our additive field (counts, health, condition, last error);
    InfraKit's clients ignore it.
    """

    instances: tuple[instance.Description, ...] = ()
    converged: bool = False
    status: JSON = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Instances": [i.to_wire() for i in self.instances], "Converged": self.converged}
        if self.status is not None:
            out["Status"] = self.status
        return out

    @classmethod
    def from_wire(cls, obj: JSON, where: str = "Description") -> Description:
        r = Reader(obj, where)
        raw = r.raw("Instances") or []
        return cls(
            instances=tuple(instance.Description.from_wire(x, f"{where}.Instances[{i}]") for i, x in enumerate(raw)),
            converged=r.boolean("Converged"),
            status=r.raw("Status"),
        )


@dataclasses.dataclass(frozen=True)
class Commit:
    """What CommitGroup answers: InfraKit's plan text, and (ours) the spec as the controller reads it.

    ``spec`` is the committed spec's canonical form (every field spelled out, durations as Go
    text), ``previous`` the stored spec's (None for a new group), ``changed`` whether the two
    differ. Go InfraKit answers only ``Details``: then ``spec`` and ``changed`` are None, and a
    client that needs them must compare for itself. Go clients ignore the added fields.
    """

    details: str
    spec: JSON = None
    previous: JSON = None
    changed: bool | None = None

    def to_wire(self, group_id: ID) -> dict[str, Any]:
        out: dict[str, Any] = {"ID": group_id, "Details": self.details}
        if self.changed is not None:
            out.update({"Spec": self.spec, "Previous": self.previous, "Changed": self.changed})
        return out

    @classmethod
    def from_wire(cls, obj: JSON, where: str = "result") -> Commit:
        r = Reader(obj, where)
        changed = r.raw("Changed")
        return cls(details=r.string("Details"), spec=r.raw("Spec"), previous=r.raw("Previous"),
                   changed=changed if isinstance(changed, bool) else None)


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a Group call comes from, which the manager orders and forwards by.

    ``sent``: when the call was first sent (seconds since the epoch, by its sender's clock), if
    the sender said. ``forwarded_by``: the replica that forwarded it, if one did. ``Origin()``
    is a call made here and now.
    """

    sent: float | None = None
    forwarded_by: str | None = None


@runtime_checkable
class GroupPlugin(Protocol):
    """Declared groups, enforced. Every method may raise ``PluginError``."""

    async def commit_group(self, spec: Spec, pretend: bool) -> Commit:
        """Validate and (unless ``pretend``) enforce ``spec``; return the plan's text and canonical spec."""

    async def free_group(self, group_id: ID) -> None:
        """Stop managing the group; leave its instances alone."""

    async def describe_group(self, group_id: ID) -> Description:
        """The group's members and convergence."""

    async def destroy_group(self, group_id: ID) -> None:
        """Stop managing the group and destroy every member."""

    async def inspect_groups(self) -> list[Spec]:
        """Every group being managed."""

    async def destroy_instances(self, group_id: ID, instances: list[instance.ID]) -> None:
        """Destroy the named members (the group replaces them unless resized)."""

    async def size(self, group_id: ID) -> int:
        """The declared size."""

    async def set_size(self, group_id: ID, size: int) -> None:
        """Change the declared size."""


class UnknownGroup(PluginError):
    """The group named is not managed here (never committed, or freed or destroyed since).

    Crosses the wire as InfraKit's -32000 with its sentence, plus ``data: {"Kind": "UnknownGroup"}``
    (Go's clients ignore ``data``), so a caller tells it apart without reading the message.
    """

    kind = "UnknownGroup"

    def __init__(self, group_id: ID) -> None:
        self.group_id = group_id
        super().__init__(f"Group '{group_id}' is not being watched")


@runtime_checkable
class Announcing(Protocol):
    """A Group implementation that names its groups in ``Handshake.Hello`` (as Go InfraKit's manager
    does: one ``Group`` object per group, ``group/<ID>``, beside ``groups``)."""

    async def announced(self) -> list[ID]:
        """The IDs of the groups to announce, sorted; never raises (an empty list when unknown)."""


@runtime_checkable
class Routed(Protocol):
    """A Group implementation whose answers depend on where a call comes from (the manager)."""

    def with_origin(self, origin: Origin) -> GroupPlugin:
        """This implementation, answering calls from ``origin``."""

