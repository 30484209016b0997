"""A selector's Properties: the list of choices, parsed strictly, every problem named by its path.

Guarantee: ``parse`` returns choices that a placement can use as they are (unique names, a
plugin name of the form ``socket[/type]`` that is not the selector itself, each logical ID
pinned to at most one choice, a positive weight where the policy needs one) or raises
``ValidationError`` listing every problem, each naming its path (``Properties[1].Affinity.Weight``).
Limit: a shape check only; whether a choice's own Properties suit its plugin is that plugin's
Validate, which ``plugin.SelectorPlugin.validate`` calls.

The grammar, one object per choice (InfraKit's ``{Name, Instances, Affinity}`` plus ours)::

    - Name: us-east-1a              # unique; members carry it in the tag infrakit.choice
      Plugin: aws                   # the instance plugin (socket[/type]); default: Name, as in InfraKit
      Properties: {SubnetId: ...}   # that plugin's Properties for members placed here
      Instances: [10.0.1.10]        # pets (logical IDs) pinned to this choice
      Affinity: {Weight: 3}         # weighted only: this choice's share
"""

from __future__ import annotations

import dataclasses
from typing import Any

from infrakit_runtime.rpc import discovery
from infrakit_runtime.spi.common import JSON, ValidationError, json_type

SPREAD = "spread"
TIERED = "tiered"
WEIGHTED = "weighted"
POLICIES = (SPREAD, TIERED, WEIGHTED)

# The tag every member placed by a selector carries: the name of its choice.
TAG_CHOICE = "infrakit.choice"
MAX_NAME = 128
FIELDS = ("Name", "Plugin", "Properties", "Instances", "Affinity")


@dataclasses.dataclass(frozen=True)
class Choice:
    """One place members can go: an instance plugin and the Properties it is given there."""

    name: str
    plugin: str
    properties: JSON = None
    instances: tuple[str, ...] = ()
    weight: int = 1

    def label(self, index: int) -> str:
        return f"Properties[{index}] ({self.name})"


def _name(item: dict[str, Any], where: str, problems: list[str]) -> str | None:
    name = item.get("Name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}.Name must be a non-empty string naming the choice, got {json_type(name)}")
        return None
    if len(name) > MAX_NAME or not name.isprintable():
        problems.append(f"{where}.Name must be at most {MAX_NAME} printable characters, got {name[:40]!r}")
        return None
    return name


def _plugin(item: dict[str, Any], name: str | None, where: str, self_name: str, problems: list[str]) -> str | None:
    plugin = item.get("Plugin", name)
    if plugin is None:
        return None  # the Name problem is already reported
    if not isinstance(plugin, str) or not plugin:
        problems.append(f"{where}.Plugin must name an instance plugin as socket[/type], got {json_type(plugin)}")
        return None
    try:
        socket = discovery.PluginName.parse(plugin).socket
    except ValueError as e:
        problems.append(f"{where}.Plugin: {e}")
        return None
    if socket == self_name:
        problems.append(f"{where}.Plugin {plugin!r} is this selector itself (a selector cannot choose itself)")
        return None
    return plugin


def _instances(item: dict[str, Any], where: str, problems: list[str]) -> tuple[str, ...]:
    raw = item.get("Instances")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"{where}.Instances must be a list of logical IDs, got {json_type(raw)}")
        return ()
    out: list[str] = []
    for i, lid in enumerate(raw):
        if not isinstance(lid, str) or not lid:
            problems.append(f"{where}.Instances[{i}] must be a non-empty string (a logical ID), got {json_type(lid)}")
        elif lid in out:
            problems.append(f"{where}.Instances[{i}] {lid!r} is listed twice")
        else:
            out.append(lid)
    return tuple(out)


def _weight(item: dict[str, Any], where: str, policy: str, problems: list[str]) -> int:
    affinity = item.get("Affinity")
    if policy != WEIGHTED:
        if affinity is not None:
            problems.append(f"{where}.Affinity is read by the weighted selector only; remove it from a {policy} choice")
        return 1
    if not isinstance(affinity, dict):
        problems.append(f"{where}.Affinity must be an object {{Weight: N}} (the choice's share), got {json_type(affinity)}")
        return 1
    problems += [f"{where}.Affinity.{k} is not a field of Affinity (known: Weight)" for k in sorted(set(affinity) - {"Weight"})]
    weight = affinity.get("Weight")
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        problems.append(f"{where}.Affinity.Weight must be a positive integer, got {weight!r}")
        return 1
    return weight


def parse(obj: JSON, *, policy: str, self_name: str = "") -> tuple[Choice, ...]:
    """The choices in ``obj`` (a selector's Properties), or ``ValidationError`` listing every problem."""
    if policy not in POLICIES:
        raise ValueError(f"unknown selector policy {policy!r}")
    if not isinstance(obj, list):
        raise ValidationError(f"Properties must be a list of choices {{{', '.join(FIELDS)}}}, got {json_type(obj)}")
    if not obj:
        raise ValidationError("Properties must list at least one choice")
    problems: list[str] = []
    choices: list[Choice] = []
    names: dict[str, int] = {}
    pinned: dict[str, int] = {}
    for i, item in enumerate(obj):
        where = f"Properties[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object {{{', '.join(FIELDS)}}}, got {json_type(item)}")
            continue
        problems += [f"{where}.{k} is not a field of a choice (known: {', '.join(FIELDS)})"
                     for k in sorted(set(item) - set(FIELDS))]
        name = _name(item, where, problems)
        if name is not None and name in names:
            problems.append(f"{where}.Name {name!r} is already the name of Properties[{names[name]}]")
            name = None
        elif name is not None:
            names[name] = i
        plugin = _plugin(item, name, where, self_name, problems)
        instances = _instances(item, where, problems)
        for lid in instances:
            if lid in pinned:
                problems.append(f"{where}.Instances: logical ID {lid!r} is already pinned to Properties[{pinned[lid]}]")
            else:
                pinned[lid] = i
        weight = _weight(item, where, policy, problems)
        if name is not None and plugin is not None:
            choices.append(Choice(name=name, plugin=plugin, properties=item.get("Properties"),
                                  instances=instances, weight=weight))
    if problems:
        raise ValidationError(problems)
    return tuple(choices)


def pinned_choice(choices: tuple[Choice, ...], logical_id: str | None) -> Choice | None:
    """The choice a logical ID is pinned to, if any."""
    if logical_id is None:
        return None
    for c in choices:
        if logical_id in c.instances:
            return c
    return None
