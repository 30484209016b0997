"""The group spec, parsed and validated: every problem is reported at once, or nothing is accepted.

Guarantee: ``parse_spec`` either returns a complete ``GroupSpec`` (every default filled in,
every value checked) or raises ``ValidationError`` listing each problem with its field path,
so an invalid commit leaves the running group exactly as it was. ``GroupSpec.to_wire()``
reproduces what InfraKit's ``InspectGroups`` returns for the same spec.
Limit: plugin Properties are opaque here; the instance and flavor plugins validate them.

The Properties document is InfraKit's, with our additions (marked *ours*)::

    Allocation: {Size: 3} | {LogicalIDs: [a, b, c]}   one of the two is required
    Instance:   {Plugin: name, Properties: {...}}     Plugin required; hashed
    Flavor:     {Plugin: name, Properties: {...}}     Plugin required; hashed
    Updating:   {Duration, Count, SkipBeforeInstanceDestroy,          InfraKit's, kept and round-tripped
                 MaxSurge, MaxUnavailable, ProgressDeadline, Quorum}  ours
    Health:     {GracePeriod, UnhealthyThreshold, HealthyThreshold,   ours
                 MaxUnhealthy, Interval}

Defaults (for InfraKit's fields ``0`` and an absent key mean the same, as they do to Go's
decoder; for ours an explicit 0 is a value, e.g. ``GracePeriod: 0s`` means no grace):

- ``Allocation.Size``: 0 when only ``Size: 0`` is given (a group scaled to nothing).
  A non-empty ``LogicalIDs`` makes the group pets and its size the number of IDs.
- ``Updating.Duration``: ``0s``; ``Updating.Count``: 0; ``Updating.SkipBeforeInstanceDestroy``:
  null (any other value skips the flavor's Drain before a rolling-update destroy).
- ``Updating.MaxSurge``: 1 (integer or ``"25%"``; a percentage of the size, rounded up).
- ``Updating.MaxUnavailable``: 0 (integer or percentage, rounded down). Both 0 is refused: a
  rolling update could never progress. Should percentages both round to 0 for some size,
  MaxUnavailable acts as 1 (as Kubernetes does).
- ``Updating.Quorum``: false. True for a group whose members form a quorum (etcd members): one
  change at a time and never below a majority answering, whatever MaxUnavailable says; with the
  majority lost nothing is changed (``plan.quorum``).
- ``Updating.ProgressDeadline``: ``600s``: an unconverged group with no progress for this long
  is reported Degraded.
- ``Health.GracePeriod``: ``30s`` after an instance is first seen before health can condemn it.
- ``Health.UnhealthyThreshold``: 3 consecutive UNHEALTHY checks before replacement.
- ``Health.HealthyThreshold``: 1 consecutive HEALTHY check before an instance counts as ready.
- ``Health.MaxUnhealthy``: ``"40%"``: above this many unhealthy instances at once the group stops
  replacing for health (the cloud is sick, not the instances). A percentage rounds down but
  never below 1, so a small group can still heal one instance.
- ``Health.Interval``: null (members are probed once per pass, so the poll interval decides);
  a duration probes them at that interval between passes too, whatever the poll interval.

Durations are Go strings (``"30s"``, ``"1m30s"``); a bare number other than 0 is refused
because Go reads it as nanoseconds.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from infrakit_runtime import durations
from infrakit_runtime.group.plan import fields, hashing
from infrakit_runtime.group.plan.fields import Scaled
from infrakit_runtime.spi import group
from infrakit_runtime.spi.common import JSON, ValidationError, json_type

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_UNHEALTHY",
    "DEFAULT_PROGRESS_DEADLINE",
    "GroupSpec",
    "HealthPolicy",
    "PluginSection",
    "Scaled",
    "Updating",
    "parse_spec",
]

DEFAULT_PROGRESS_DEADLINE = 600.0
DEFAULT_GRACE_PERIOD = 30.0
DEFAULT_UNHEALTHY_THRESHOLD = 3
DEFAULT_HEALTHY_THRESHOLD = 1
# The planner writes one action per missing member; a size past this is a typo or an attack
# (Size: 1e12 would make a single plan allocate a trillion actions and take the manager down).
MAX_SIZE = 100_000

_KNOWN = {
    "": ("ID", "Properties"),
    "Properties": ("Allocation", "Instance", "Flavor", "Updating", "Health"),
    "Properties.Allocation": ("Size", "LogicalIDs"),
    # InfraKit's dependency resolver reads Options beside Plugin; accepted, not hashed.
    "Properties.Instance": ("Plugin", "Properties", "Options"),
    "Properties.Flavor": ("Plugin", "Properties", "Options"),
    "Properties.Updating": (
        "Duration", "Count", "SkipBeforeInstanceDestroy", "MaxSurge", "MaxUnavailable", "ProgressDeadline", "Quorum",
    ),
    "Properties.Health": ("GracePeriod", "UnhealthyThreshold", "HealthyThreshold", "MaxUnhealthy", "Interval"),
}


DEFAULT_MAX_SURGE = Scaled(1)
DEFAULT_MAX_UNAVAILABLE = Scaled(0)
DEFAULT_MAX_UNHEALTHY = Scaled(40, percent=True)


@dataclasses.dataclass(frozen=True)
class PluginSection:
    """An Instance or Flavor section: which plugin, its opaque Properties, and InfraKit's Options.

    Options (read by InfraKit's dependency resolver) are kept and compared, never hashed.
    """

    plugin: str
    properties: JSON = None
    options: JSON = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"Plugin": self.plugin, "Properties": self.properties}
        if self.options is not None:
            wire["Options"] = self.options
        return wire


@dataclasses.dataclass(frozen=True)
class Updating:
    """How a rolling update proceeds (InfraKit's three fields, then ours)."""

    duration: float = 0.0
    count: int = 0
    skip_before_instance_destroy: JSON = None
    max_surge: Scaled = DEFAULT_MAX_SURGE
    max_unavailable: Scaled = DEFAULT_MAX_UNAVAILABLE
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE
    quorum: bool = False


@dataclasses.dataclass(frozen=True)
class HealthPolicy:
    """When health checks condemn an instance, and when the group stops believing them."""

    grace_period: float = DEFAULT_GRACE_PERIOD
    unhealthy_threshold: int = DEFAULT_UNHEALTHY_THRESHOLD
    healthy_threshold: int = DEFAULT_HEALTHY_THRESHOLD
    max_unhealthy: Scaled = DEFAULT_MAX_UNHEALTHY
    interval: float | None = None


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """A validated group spec. ``size`` is the desired count (for pets, the number of logical IDs)."""

    id: group.ID
    size: int
    logical_ids: tuple[str, ...] | None
    instance: PluginSection
    flavor: PluginSection
    updating: Updating = Updating()
    health: HealthPolicy = HealthPolicy()
    config_hash: str = ""
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def is_pets(self) -> bool:
        return self.logical_ids is not None

    def max_surge(self) -> int:
        """Instances allowed above ``size`` during a rollout (percentages round up)."""
        surge = self.updating.max_surge.resolve(self.size, round_up=True)
        return surge

    def max_unavailable(self) -> int:
        """Instances allowed below ``size`` during a rollout; never both this and surge 0."""
        unavailable = self.updating.max_unavailable.resolve(self.size, round_up=False)
        if unavailable == 0 and self.max_surge() == 0:
            return 1
        return unavailable

    def max_unhealthy(self) -> int:
        """The most unhealthy instances the group replaces before braking."""
        policy = self.health.max_unhealthy
        if policy.percent:
            return max(1, policy.resolve(self.size, round_up=False))
        return policy.value

    def with_size(self, size: int) -> GroupSpec:
        """This spec resized (cattle only), re-validated, with ``raw`` updated to match (``SetSize``)."""
        raw = json.loads(json.dumps(self.raw))
        props = raw.setdefault("Properties", {})
        alloc = props.get("Allocation") if isinstance(props.get("Allocation"), dict) else {}
        props["Allocation"] = {**alloc, "Size": size}
        return parse_spec(raw)

    def to_wire(self) -> dict[str, Any]:
        """The spec as InfraKit's InspectGroups returns it: its struct fields filled, ours kept if given."""
        raw_props: dict[str, Any] = self.raw["Properties"] if isinstance(self.raw.get("Properties"), dict) else {}
        raw_updating: dict[str, Any] = raw_props["Updating"] if isinstance(raw_props.get("Updating"), dict) else {}
        updating: dict[str, Any] = {
            "Duration": durations.format_duration(self.updating.duration),
            "Count": self.updating.count,
            "SkipBeforeInstanceDestroy": self.updating.skip_before_instance_destroy,
        }
        for key in ("MaxSurge", "MaxUnavailable", "ProgressDeadline", "Quorum"):
            if raw_updating.get(key) is not None:
                updating[key] = raw_updating[key]
        props: dict[str, Any] = {
            "Instance": self.instance.to_wire(),
            "Flavor": self.flavor.to_wire(),
            "Allocation": {
                "Size": 0 if self.is_pets else self.size,
                "LogicalIDs": list(self.logical_ids) if self.logical_ids is not None else None,
            },
            "Updating": updating,
        }
        if isinstance(raw_props.get("Health"), dict):
            props["Health"] = raw_props["Health"]
        return {"ID": self.id, "Properties": props}

    def canonical(self) -> dict[str, Any]:
        """The one spelling of this spec: every field spelled out as the controller reads it.

        Durations are Go's text (``600s`` is ``10m0s``), amounts an integer or ``"N%"``, every
        default filled in, Options, ``Health.Interval`` and ``SkipBeforeInstanceDestroy`` kept.
        It is a valid spec and a fixed point: ``parse_spec(c).canonical() == c``. CommitGroup
        answers it (``Spec``, our addition), so a client shows and compares what the controller
        enforces instead of re-implementing this grammar.
        """
        u, h = self.updating, self.health
        return {
            "ID": self.id,
            "Properties": {
                "Allocation": {
                    "Size": 0 if self.is_pets else self.size,
                    "LogicalIDs": list(self.logical_ids) if self.logical_ids is not None else None,
                },
                "Instance": self.instance.to_wire(),
                "Flavor": self.flavor.to_wire(),
                "Updating": {
                    "Duration": durations.format_duration(u.duration), "Count": u.count,
                    "SkipBeforeInstanceDestroy": u.skip_before_instance_destroy,
                    "MaxSurge": u.max_surge.to_wire(), "MaxUnavailable": u.max_unavailable.to_wire(),
                    "ProgressDeadline": durations.format_duration(u.progress_deadline), "Quorum": u.quorum,
                },
                "Health": {
                    "GracePeriod": durations.format_duration(h.grace_period),
                    "UnhealthyThreshold": h.unhealthy_threshold, "HealthyThreshold": h.healthy_threshold,
                    "MaxUnhealthy": h.max_unhealthy.to_wire(),
                    "Interval": durations.format_duration(h.interval) if h.interval is not None else None,
                },
            },
        }

    def normalized(self) -> dict[str, Any]:
        """A canonical form for "did the spec change?": defaults filled, durations in seconds.

        Two specs that mean the same compare equal however their maps were ordered, whether
        a default was spelled out or left out, and whether a number was written 1 or 1.0.
        Logical IDs are sorted: their order does not change which instances the group wants.
        """
        u, h = self.updating, self.health
        return {
            "ID": self.id,
            "Allocation": {
                "Size": None if self.is_pets else self.size,
                "LogicalIDs": sorted(self.logical_ids) if self.logical_ids is not None else None,
            },
            "Instance": self.instance.to_wire(),
            "Flavor": self.flavor.to_wire(),
            "Updating": {
                "Duration": u.duration, "Count": u.count, "SkipBeforeInstanceDestroy": u.skip_before_instance_destroy,
                "MaxSurge": u.max_surge.to_wire(), "MaxUnavailable": u.max_unavailable.to_wire(),
                "ProgressDeadline": u.progress_deadline, "Quorum": u.quorum,
            },
            "Health": {
                "GracePeriod": h.grace_period, "UnhealthyThreshold": h.unhealthy_threshold,
                "HealthyThreshold": h.healthy_threshold, "MaxUnhealthy": h.max_unhealthy.to_wire(),
                "Interval": h.interval,
            },
        }


def parse_spec(spec: group.Spec | JSON) -> GroupSpec:
    """Validate a wire spec ``{ID, Properties}``; raise ``ValidationError`` listing every problem."""
    # A wire Spec's additive Status (InspectGroups) is a report, not part of the declaration.
    raw = {"ID": spec.id, "Properties": spec.properties} if isinstance(spec, group.Spec) else spec
    p = fields.Problems(known=_KNOWN)
    if not isinstance(raw, dict):
        raise ValidationError(f"spec must be an object, got {json_type(raw)}")
    p.unknown_keys(raw, "")
    group_id = raw.get("ID")
    if group_id is None or group_id == "":
        p.add("ID is required")
    elif not isinstance(group_id, str):
        p.add(f"ID must be a string, got {json_type(group_id)}")
    props = p.mapping(raw.get("Properties"), "Properties", required=True)

    size, logical_ids = _allocation(p, props.get("Allocation"))
    instance_section = _plugin_section(p, props.get("Instance"), "Properties.Instance")
    flavor_section = _plugin_section(p, props.get("Flavor"), "Properties.Flavor")
    updating = _updating(p, props.get("Updating"))
    health = _health(p, props.get("Health"))
    config_hash = ""
    if instance_section is not None and flavor_section is not None:
        try:
            config_hash = hashing.config_hash(props.get("Instance"), props.get("Flavor"))
        except (ValueError, TypeError) as e:
            p.add(f"Properties: cannot hash the Instance and Flavor sections: {e}")
    if p.problems:
        raise ValidationError(p.problems)
    assert isinstance(group_id, str) and instance_section and flavor_section and updating and health
    return GroupSpec(
        id=group_id, size=size, logical_ids=logical_ids, instance=instance_section, flavor=flavor_section,
        updating=updating, health=health, config_hash=config_hash, raw=json.loads(json.dumps(raw)),
    )


def _allocation(p: fields.Problems, value: JSON) -> tuple[int, tuple[str, ...] | None]:
    path = "Properties.Allocation"
    alloc = p.mapping(value, path, required=True)
    if value is not None and isinstance(value, dict) and "Size" not in alloc and alloc.get("LogicalIDs") is None:
        p.add(f"{path}: one of Size or LogicalIDs is required")
    size = p.integer(alloc.get("Size"), f"{path}.Size", default=0)
    if size > MAX_SIZE:
        p.add(f"{path}.Size must be at most {MAX_SIZE}, got {size}")
        size = 0
    ids = alloc.get("LogicalIDs")
    if ids is None or ids == []:
        return size, None
    if not isinstance(ids, list):
        p.add(f"{path}.LogicalIDs must be an array of strings, got {json_type(ids)}")
        return size, None
    if alloc.get("Size") not in (None, 0):
        p.add(f"{path}: Size and LogicalIDs are mutually exclusive")
    seen: set[str] = set()
    for i, lid in enumerate(ids):
        if not isinstance(lid, str) or not lid:
            p.add(f"{path}.LogicalIDs[{i}] must be a non-empty string, got {json.dumps(lid)}")
        elif lid in seen:
            p.add(f"{path}.LogicalIDs[{i}]: duplicate logical ID {json.dumps(lid)}")
        else:
            seen.add(lid)
    if len(ids) > MAX_SIZE:
        p.add(f"{path}.LogicalIDs must list at most {MAX_SIZE} IDs, got {len(ids)}")
    logical_ids = tuple(lid for lid in ids if isinstance(lid, str))
    return len(logical_ids), logical_ids


def _plugin_section(p: fields.Problems, value: JSON, path: str) -> PluginSection | None:
    section = p.mapping(value, path, required=True)
    if value is None or not isinstance(value, dict):
        return None
    plugin = section.get("Plugin")
    if plugin is None or plugin == "":
        p.add(f"{path}.Plugin is required")
        return None
    if not isinstance(plugin, str):
        p.add(f"{path}.Plugin must be a string, got {json_type(plugin)}")
        return None
    return PluginSection(plugin=plugin, properties=section.get("Properties"), options=section.get("Options"))


def _updating(p: fields.Problems, value: JSON) -> Updating:
    path = "Properties.Updating"
    u = p.mapping(value, path)
    duration = p.duration(u.get("Duration"), f"{path}.Duration", default=0.0)
    count = p.integer(u.get("Count"), f"{path}.Count", default=0)
    surge = p.scaled(u.get("MaxSurge"), f"{path}.MaxSurge", default=DEFAULT_MAX_SURGE)
    unavailable = p.scaled(u.get("MaxUnavailable"), f"{path}.MaxUnavailable", default=DEFAULT_MAX_UNAVAILABLE)
    deadline = p.duration(u.get("ProgressDeadline"), f"{path}.ProgressDeadline", default=DEFAULT_PROGRESS_DEADLINE)
    quorum = u.get("Quorum", False)
    if not isinstance(quorum, bool):
        p.add(f"{path}.Quorum must be true or false, got {json_type(quorum)}")
        quorum = False
    if surge.value == 0 and unavailable.value == 0:
        p.add(f"{path}: MaxSurge and MaxUnavailable cannot both be 0: a rolling update could never progress")
    if count and duration:
        p.add(f"{path}: Count and Duration are mutually exclusive")
    if deadline is not None and deadline <= 0:
        p.add(f"{path}.ProgressDeadline must be more than 0s")
    return Updating(
        duration=duration or 0.0, count=count, skip_before_instance_destroy=u.get("SkipBeforeInstanceDestroy"),
        max_surge=surge, max_unavailable=unavailable,
        progress_deadline=deadline if deadline else DEFAULT_PROGRESS_DEADLINE, quorum=quorum,
    )


def _health(p: fields.Problems, value: JSON) -> HealthPolicy:
    path = "Properties.Health"
    h = p.mapping(value, path)
    grace = p.duration(h.get("GracePeriod"), f"{path}.GracePeriod", default=DEFAULT_GRACE_PERIOD)
    interval = p.duration(h.get("Interval"), f"{path}.Interval", default=None)
    if h.get("Interval") is not None and not interval:
        p.add(f"{path}.Interval must be more than 0s")
    return HealthPolicy(
        grace_period=grace if grace is not None else DEFAULT_GRACE_PERIOD,
        unhealthy_threshold=p.integer(
            h.get("UnhealthyThreshold"), f"{path}.UnhealthyThreshold", default=DEFAULT_UNHEALTHY_THRESHOLD, minimum=1
        ),
        healthy_threshold=p.integer(
            h.get("HealthyThreshold"), f"{path}.HealthyThreshold", default=DEFAULT_HEALTHY_THRESHOLD, minimum=1
        ),
        max_unhealthy=p.scaled(h.get("MaxUnhealthy"), f"{path}.MaxUnhealthy", default=DEFAULT_MAX_UNHEALTHY),
        interval=interval or None,
    )
