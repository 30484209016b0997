"""Builders for planner tests: specs, members and health records in one line each."""

from __future__ import annotations

from typing import Any

from infrakit_runtime.group.plan.health import HealthRecord
from infrakit_runtime.group.plan.spec import GroupSpec, parse_spec
from infrakit_runtime.spi import flavor, instance

GROUP = "workers"


def raw_spec(
    size: int | None = 3,
    *,
    init: str = "echo hello",
    logical_ids: list[str] | None = None,
    updating: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The wire spec recorded in shared/wire (group-commit.json), with knobs."""
    alloc: dict[str, Any] = {"LogicalIDs": logical_ids} if logical_ids is not None else {"Size": size}
    props: dict[str, Any] = {
        "Allocation": alloc,
        "Instance": {"Plugin": "file", "Properties": {"note": "wire-test"}},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Init": [init], "Tags": {"tier": "web"}}},
    }
    if updating is not None:
        props["Updating"] = updating
    if health is not None:
        props["Health"] = health
    return {"ID": GROUP, "Properties": props}


def spec(size: int | None = 3, **kwargs: Any) -> GroupSpec:
    return parse_spec(raw_spec(size, **kwargs))


def member(iid: str, config_hash: str, logical_id: str | None = None, group: str = GROUP) -> instance.Description:
    tags = {instance.TAG_GROUP: group, instance.TAG_CONFIG_HASH: config_hash, "tier": "web"}
    if logical_id is not None:
        tags[instance.TAG_LOGICAL_ID] = logical_id
    return instance.Description(id=iid, logical_id=logical_id, tags=tags)


def ready(first_seen: float = 0.0, checks: int = 1) -> HealthRecord:
    return HealthRecord(first_seen=first_seen, last=flavor.Health.HEALTHY, consecutive_healthy=checks)


def failing(first_seen: float = 0.0, checks: int = 3) -> HealthRecord:
    return HealthRecord(first_seen=first_seen, last=flavor.Health.UNHEALTHY, consecutive_unhealthy=checks)


def unknown(first_seen: float = 0.0) -> HealthRecord:
    return HealthRecord(first_seen=first_seen, last=flavor.Health.UNKNOWN)
