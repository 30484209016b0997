"""Instance SPI (InfraKit ``Instance/0.6.1``): where instances come from.

An instance plugin provisions, labels, destroys and describes instances. It must
persist the tags it is given: the group controller finds its members by tag, so
the plugin (the cloud) is the source of truth for membership, never memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol, runtime_checkable

from infrakit_runtime.spi.common import JSON, InterfaceSpec, json_type
from infrakit_runtime.spi.wire import ParamsError, Reader

INTERFACE = InterfaceSpec("Instance", "0.6.1")
# Our extensions, additive: announced under their own names in Handshake.Hello, which
# InfraKit's Go clients ignore.
BATCH_INTERFACE = InterfaceSpec("InstanceBatch", "0.1.0")  # Instance.ProvisionMany
WATCH_INTERFACE = InterfaceSpec("InstanceWatch", "0.1.0")  # Instance.WaitChange (long poll)
REVISION_INTERFACE = InterfaceSpec("InstanceRevision", "0.1.0")  # Instance.DescribeSince

# Tags that drive group membership (InfraKit's names, so its instances are adopted).
TAG_GROUP = "infrakit.group"
TAG_CONFIG_HASH = "infrakit.config.hash"
TAG_LOGICAL_ID = "infrakit.logical_id"
# Request metadata a controller may send with Provision: which slot a create fills (stable while
# its outcome is unknown, so a retry is recognisably the same request) and an attempt counter.
# Plugins that support idempotent creates (aws: ClientToken) derive their token from them.
TAG_SLOT = "infrakit.slot"
TAG_ATTEMPT = "infrakit.attempt"
# An instance tagged with this config hash is adopted by its group without a rollout.
BOOTSTRAP_CONFIG_HASH = "bootstrap"

# Destroy reasons InfraKit sends in Context.Reason.
REASON_TERMINATE = "terminate"
REASON_ROLLING_UPDATE = "rolling_update"

ID = str
LogicalID = str


@dataclasses.dataclass(frozen=True)
class Attachment:
    """A resource to attach to an instance (a volume, a network interface)."""

    id: str
    type: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {"ID": self.id, "Type": self.type}

    @classmethod
    def from_wire(cls, obj: JSON, where: str = "Attachment") -> Attachment:
        r = Reader(obj, where)
        return cls(id=r.string("ID", required=True), type=r.string("Type"))


@dataclasses.dataclass(frozen=True)
class Spec:
    """What to provision: plugin-specific Properties plus tags, init script, logical ID."""

    properties: JSON = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    init: str = ""
    logical_id: LogicalID | None = None
    attachments: tuple[Attachment, ...] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "Properties": self.properties,
            "Tags": dict(self.tags) if self.tags is not None else None,
            "Init": self.init,
            "LogicalID": self.logical_id,
            "Attachments": [a.to_wire() for a in self.attachments] if self.attachments is not None else None,
        }

    @classmethod
    def from_wire(cls, obj: JSON, where: str = "Spec") -> Spec:
        r = Reader(obj, where)
        attachments = r.raw("Attachments")
        if attachments is not None and not isinstance(attachments, list):
            raise ParamsError(f"{r.path('Attachments')} must be an array, got {json_type(attachments)}")
        return cls(
            properties=r.raw("Properties"),
            tags=r.string_map("Tags") or {},
            init=r.string("Init"),
            logical_id=r.optional_string("LogicalID"),
            attachments=(
                tuple(Attachment.from_wire(a, f"{r.path('Attachments')}[{i}]") for i, a in enumerate(attachments))
                if attachments is not None
                else None
            ),
        )


@dataclasses.dataclass(frozen=True)
class Description:
    """What a plugin reports about one live instance.

    ``properties`` is present only when the caller asked for it (InfraKit omits
    the field otherwise); ``None`` means "not asked", not JSON null.
    """

    id: ID
    logical_id: LogicalID | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    properties: JSON = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ID": self.id, "LogicalID": self.logical_id, "Tags": dict(self.tags)}
        if self.properties is not None:
            out["Properties"] = self.properties
        return out

    @classmethod
    def from_wire(cls, obj: JSON, where: str = "Description") -> Description:
        r = Reader(obj, where)
        return cls(
            id=r.string("ID", required=True),
            logical_id=r.optional_string("LogicalID"),
            tags=r.string_map("Tags") or {},
            properties=r.raw("Properties"),
        )


@dataclasses.dataclass(frozen=True)
class Context:
    """Why an instance is being destroyed (``terminate`` or ``rolling_update``)."""

    reason: str = REASON_TERMINATE

    def to_wire(self) -> dict[str, Any]:
        return {"Reason": self.reason}

    @classmethod
    def from_wire(cls, obj: JSON, where: str = "Context") -> Context:
        return cls(reason=Reader(obj, where).string("Reason"))


@dataclasses.dataclass(frozen=True)
class ProvisionResult:
    """One slot's outcome in a batch provision: an ID, or the error that left the slot unfilled."""

    id: ID | None = None
    error: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"ID": self.id, "Error": self.error}

    @classmethod
    def from_wire(cls, obj: JSON, where: str = "Result") -> ProvisionResult:
        r = Reader(obj, where)
        return cls(id=r.optional_string("ID") or None, error=r.optional_string("Error") or None)


@dataclasses.dataclass(frozen=True)
class Listing:
    """A DescribeInstances answer stamped with the plugin's ``revision`` (``Revised``).

    ``descriptions`` is None when nothing the plugin would list has changed since the revision the
    caller named: the caller's last listing stands. ``revision`` is opaque, "" when the plugin keeps
    none (every answer is then complete).
    """

    revision: str = ""
    descriptions: list[Description] | None = None


@runtime_checkable
class InstancePlugin(Protocol):
    """Where instances come from. Every method may raise ``PluginError``."""

    async def validate(self, properties: JSON) -> None:
        """Raise ``ValidationError`` listing every problem with ``properties``."""

    async def provision(self, spec: Spec) -> ID:
        """Create one instance carrying ``spec.tags``; return its ID."""

    async def label(self, instance: ID, labels: dict[str, str]) -> None:
        """Merge ``labels`` into the instance's tags."""

    async def destroy(self, instance: ID, context: Context) -> None:
        """Remove the instance."""

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Description]:
        """Live instances carrying every tag in ``tags`` (AND); with Properties if asked."""


@runtime_checkable
class Batch(Protocol):
    """``InstanceBatch``: many creates in one call (one EC2 RunInstances for identical cattle)."""

    async def provision_many(self, specs: list[Spec]) -> list[ProvisionResult]:
        """One result per spec, in order; a slot that failed carries its error, the others their ID."""


@runtime_checkable
class Watch(Protocol):
    """``InstanceWatch``: a long poll that returns as soon as the plugin's members change."""

    async def wait_change(self, revision: int, timeout: float) -> int:
        """The plugin's revision once it passes ``revision``, or after ``timeout`` seconds.

        Raises ``Unsupported`` when the plugin cannot announce changes (the caller then polls).
        """


@runtime_checkable
class Revised(Protocol):
    """``InstanceRevision``: a describe that answers "unchanged" instead of the same list again.

    A caller describing the same thing every pass sends the revision of its last answer and, while
    nothing changed, gets no list to decode and no reason to plan again. Plugins without it
    (InfraKit's) are described in full every pass.
    """

    async def describe_since(self, tags: dict[str, str], properties: bool, revision: str) -> Listing:
        """``describe_instances(tags, properties)`` stamped with the current revision, or no list when
        ``revision`` (one this plugin returned; "" for none) is still current.

        A revision is current only while the plugin would list exactly what it was stamped on, across
        restarts of the plugin too: a caller holding a stale one always gets the full list. (The file
        plugin's never repeat; a digest of the listing, ``plugins.instance.revisions``, repeats only
        with an equal list.)
        """


@runtime_checkable
class Extended(InstancePlugin, Batch, Watch, Protocol):
    """What a group controller drives: the plugin with both extensions always callable.

    ``provision_many`` works on every plugin (one call where the plugin announces the batch
    extension, else one Provision per spec, bounded); ``wait_change`` raises ``Unsupported``
    where the plugin announces no watch. Whether to batch is the implementation's decision
    (the RPC client's, from the handshake), never the caller's.
    """
