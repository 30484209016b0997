"""Flavor SPI (InfraKit ``Flavor/0.1.1``): what goes on an instance and how its health is judged.

A flavor prepares the instance spec (init script, tags, attachments) before it is
provisioned, answers whether a running instance is healthy, and drains one
before it is destroyed.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Protocol, runtime_checkable

from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import JSON, InterfaceSpec, PluginError
from infrakit_runtime.spi.wire import Reader

INTERFACE = InterfaceSpec("Flavor", "0.1.1")
# Our extension (additive, announced in Handshake.Hello): Flavor.PrepareMany and Flavor.HealthyMany.
BATCH_INTERFACE = InterfaceSpec("FlavorBatch", "0.1.0")


class Health(enum.IntEnum):
    """A flavor's verdict on an instance; the default means "cannot tell yet"."""

    UNKNOWN = 0
    HEALTHY = 1
    UNHEALTHY = 2


@dataclasses.dataclass(frozen=True)
class Quorum:
    """What a flavor of voting members (etcd) sees of the cluster an instance belongs to: how many of
    its voting members answer. It counts members the instance plugin no longer describes (a killed
    process still votes until it is removed), which the controller alone cannot see.

    On the wire: ``{"Answering": n, "Voting": m}``, our additive ``Quorum`` (``Flavor.Healthy``) or
    ``Quorums`` (``Flavor.HealthyMany``) field.
    """

    answering: int
    voting: int

    @property
    def held(self) -> bool:
        """Do a majority of the voting members answer?"""
        return self.answering >= self.voting // 2 + 1

    def to_wire(self) -> dict[str, Any]:
        return {"Answering": self.answering, "Voting": self.voting}

    @classmethod
    def from_wire(cls, obj: Any) -> Quorum | None:
        """The quorum in ``obj``; None when there is none or it does not read as one (it only ever adds caution)."""
        if not isinstance(obj, dict):
            return None
        answering, voting = obj.get("Answering"), obj.get("Voting")
        if (not isinstance(answering, int) or not isinstance(voting, int) or isinstance(answering, bool)
                or isinstance(voting, bool) or not 0 <= answering <= voting):
            return None
        return cls(answering=answering, voting=voting)


@dataclasses.dataclass(frozen=True)
class Assessment:
    """A health verdict with the flavor's reason: why unhealthy, what is still pending, what made it healthy.

    On the wire the reason is our additive ``Reason`` (``Flavor.Healthy``) or ``Reasons``
    (``Flavor.HealthyMany``) field; InfraKit's clients read ``Health`` only. ``quorum``: for members
    of a voting cluster, what the flavor sees of the cluster's quorum (``Quorum``), else None.
    ``final``: the flavor probes nothing under these Properties (``Probing``), so it gives this
    instance the same verdict every time and asking again tells nothing (our additive ``Final`` in
    ``Flavor.HealthyMany``).
    """

    health: Health = Health.UNKNOWN
    reason: str = ""
    quorum: Quorum | None = None
    final: bool = False


@runtime_checkable
class Assessing(Protocol):
    """A flavor that can say why (our extension; the controller shows the reason in events and describe)."""

    async def assess_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[Assessment]:
        """``healthy`` for each instance, in order, each with its reason (empty when there is nothing to say)."""


@runtime_checkable
class Probing(Protocol):
    """A flavor that can say whether its Properties declare any probe (our extension).

    Without a probe a flavor answers every instance the same, every time (vanilla: HEALTHY, as
    InfraKit does): ``Flavor.HealthyMany`` then says ``Final`` and the controller stops asking
    about an instance once it has proved itself. InfraKit's flavors never say it: they are asked
    every pass.
    """

    def has_probe(self, properties: JSON) -> bool:
        """Does ``properties`` declare a probe? False: every instance gets the same verdict every time."""


@dataclasses.dataclass(frozen=True)
class Allocation:
    """How a group is sized: a count of cattle, or one pet per logical ID."""

    size: int = 0
    logical_ids: tuple[str, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"Size": self.size, "LogicalIDs": list(self.logical_ids) if self.logical_ids is not None else None}

    @classmethod
    def from_wire(cls, obj: JSON, where: str = "Allocation") -> Allocation:
        r = Reader(obj, where)
        ids = r.string_list("LogicalIDs")
        return cls(size=r.integer("Size", minimum=0), logical_ids=tuple(ids) if ids is not None else None)


@dataclasses.dataclass(frozen=True)
class Index:
    """Which group an instance is prepared for, and a sequence number within it."""

    group: str = ""
    sequence: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {"Group": self.group, "Sequence": self.sequence}

    @classmethod
    def from_wire(cls, obj: JSON, where: str = "Index") -> Index:
        r = Reader(obj, where)
        return cls(group=r.string("Group"), sequence=r.integer("Sequence"))


@runtime_checkable
class FlavorPlugin(Protocol):
    """What goes on an instance. Every method may raise ``PluginError``."""

    async def validate(self, properties: JSON, allocation: Allocation) -> None:
        """Raise ``ValidationError`` listing every problem with ``properties``."""

    async def prepare(
        self, properties: JSON, spec: instance.Spec, allocation: Allocation, index: Index
    ) -> instance.Spec:
        """Return ``spec`` with this flavor's init, tags and attachments applied."""

    async def healthy(self, properties: JSON, description: instance.Description) -> Health:
        """Judge one running instance."""

    async def drain(self, properties: JSON, description: instance.Description) -> None:
        """Prepare an instance for removal (move its work away)."""


@runtime_checkable
class Batch(Protocol):
    """``FlavorBatch``: one round trip per reconcile pass instead of one per instance."""

    async def prepare_many(self, properties: JSON, specs: list[instance.Spec], allocation: Allocation,
                           indices: list[Index]) -> list[instance.Spec | PluginError]:
        """``prepare`` for each spec, in order; a spec that could not be prepared gives its error."""

    async def healthy_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[Health]:
        """``healthy`` for each instance, in order; a probe that failed to run gives ``UNKNOWN``."""


@runtime_checkable
class Extended(FlavorPlugin, Batch, Protocol):
    """What a group controller drives: the plugin with the batch extension always callable
    (one call where the plugin announces it, else one call per instance, bounded)."""
