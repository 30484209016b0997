# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Group specs and descriptions between the module face (snake_case) and the wire (PascalCase).

Guarantee: the controller owns the spec's grammar. ``build_spec`` only renames the module's
options into the wire spec and merges them over the stored one; it parses no duration,
percentage or default, so a value is accepted or refused (with the field named) by the
controller alone. ``spec_to_module`` shows any wire spec, every field of it, in option names.
Limit: against Go InfraKit, which answers no canonical form, a commit is judged changed by
plain equality with the stored spec (the merge keeps every stored key, so that is exact for
keys the user left alone, and strict for the ones given).
"""

from __future__ import annotations

import copy
import json

# module option -> wire key, in the controller's order
UPDATING_FIELDS = {
    "duration": "Duration",
    "count": "Count",
    "skip_before_instance_destroy": "SkipBeforeInstanceDestroy",
    "max_surge": "MaxSurge",
    "max_unavailable": "MaxUnavailable",
    "progress_deadline": "ProgressDeadline",
    "quorum": "Quorum",
}
HEALTH_FIELDS = {
    "grace_period": "GracePeriod",
    "unhealthy_threshold": "UnhealthyThreshold",
    "healthy_threshold": "HealthyThreshold",
    "max_unhealthy": "MaxUnhealthy",
    "interval": "Interval",
}
PLUGIN_FIELDS = {"plugin": "Plugin", "properties": "Properties", "options": "Options"}
# Options that take a duration: a YAML number there means seconds (the module's one convenience).
DURATION_OPTIONS = ("duration", "progress_deadline", "grace_period", "interval")

SECTIONS = (
    ("instance", "Instance", PLUGIN_FIELDS),
    ("flavor", "Flavor", PLUGIN_FIELDS),
    ("updating", "Updating", UPDATING_FIELDS),
    ("health", "Health", HEALTH_FIELDS),
)


class SpecError(ValueError):
    """Options the module cannot turn into a spec at all (nothing to send the controller)."""


# --- specs ----------------------------------------------------------------------------------


def _wire_value(option, value):
    if option in DURATION_OPTIONS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return "%ss" % value  # "600s"; the controller judges it, "nans" and "-5s" included
    return copy.deepcopy(value)


def _merge_section(given, stored, fields, purge):
    """The wire section: the keys the user gave over the stored section's (or alone, with ``purge``)."""
    out = {} if purge or not isinstance(stored, dict) else copy.deepcopy(stored)
    for option, key in fields.items():
        value = (given or {}).get(option)
        if value is not None:
            out[key] = _wire_value(option, value)
    return out


def build_spec(params, stored=None, purge=False):
    """The wire spec the module commits: its options merged over the ``stored`` spec.

    Sections the user left out (allocation, ``instance``, ``flavor``, ``updating``, ``health``)
    are kept as stored, so ``size: 5`` alone rescales a group. In a section the user gives,
    the keys given replace the stored ones and the others are kept; with ``purge`` a given
    section replaces the stored one whole (keys left out fall back to the controller's defaults).
    Stored keys this module has no option for are kept as they are.
    """
    name = params["name"]
    stored_props = (stored or {}).get("Properties")
    stored_props = copy.deepcopy(stored_props) if isinstance(stored_props, dict) else {}
    props = stored_props

    if params.get("logical_ids") is not None:
        props["Allocation"] = {"LogicalIDs": list(params["logical_ids"])}
    elif params.get("size") is not None:
        props["Allocation"] = {"Size": params["size"]}
    elif props.get("Allocation") is None:
        raise SpecError("group %s does not exist yet: give size or logical_ids to create it" % name)

    for option, key, fields in SECTIONS:
        if params.get(option) is not None:
            props[key] = _merge_section(params[option], props.get(key), fields, purge)
        elif key in ("Instance", "Flavor") and props.get(key) is None:
            raise SpecError("group %s does not exist yet: give %s (plugin and properties) to create it" % (name, option))

    spec = {"ID": name, "Properties": props}
    try:
        json.dumps(spec, allow_nan=False)
    except ValueError:
        raise SpecError(
            "group %s: a number in its options is not finite (inf or nan); give a finite number or text" % name
        ) from None
    return spec


def _section_from_wire(section, fields):
    out = {}
    for option, key in fields.items():
        if isinstance(section, dict) and key in section:
            out[option] = section[key]
    return out


def spec_to_module(spec):
    """A wire spec in the module's vocabulary (for ``spec`` results and diffs), every field of it."""
    if spec is None:
        return None
    props = spec.get("Properties") or {}
    out = {"name": spec.get("ID")}
    allocation = props.get("Allocation") or {}
    if allocation.get("LogicalIDs"):
        out["logical_ids"] = list(allocation["LogicalIDs"])
    else:
        out["size"] = allocation.get("Size") or 0
    for option, key, fields in SECTIONS:
        section = _section_from_wire(props.get(key), fields)
        if section:
            out[option] = section
    return out


def plainly_equal(desired, stored):
    """Go InfraKit's answer to "changed?" (it returns no canonical form): the specs as sent and stored,
    ``null`` and absent alike, and ``LogicalIDs: null`` (which InfraKit adds) ignored."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    if stored is None:
        return False
    return clean({"ID": desired.get("ID"), "Properties": desired.get("Properties")}) == \
        clean({"ID": stored.get("ID"), "Properties": stored.get("Properties")})


# --- descriptions ---------------------------------------------------------------------------

_HEALTH_WORDS = {0: "unknown", 1: "healthy", 2: "unhealthy"}


def instance_address(properties):
    """``Properties.Address`` (or ``Host``) as the instance plugin reports it, else None."""
    if not isinstance(properties, dict):
        return None
    for key in ("Address", "Host"):
        value = properties.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def address_host(address):
    """The host part of ``host:port`` / ``[v6]:port`` / ``host``."""
    if not address:
        return None
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    if address.count(":") == 1:
        return address.split(":", 1)[0]
    return address


def describe_instances(description):
    """The instances of a DescribeGroup ``Description`` in the module's vocabulary.

    Health and up-to-date come from our controller's additive ``Status``; against
    Go InfraKit they are ``unknown`` and null.
    """
    status = (description or {}).get("Status") or {}
    by_id = {}
    for entry in status.get("Instances") or []:
        if isinstance(entry, dict) and entry.get("ID"):
            by_id[entry["ID"]] = entry
    out = []
    for inst in (description or {}).get("Instances") or []:
        info = by_id.get(inst.get("ID"), {})
        health = info.get("Health", "unknown")
        if isinstance(health, int) and not isinstance(health, bool):
            health = _HEALTH_WORDS.get(health, "unknown")
        properties = inst.get("Properties")
        address = instance_address(properties)
        out.append({
            "id": inst.get("ID"),
            "logical_id": inst.get("LogicalID") or info.get("LogicalID"),
            "tags": dict(inst.get("Tags") or {}),
            "properties": properties,
            "address": address,
            "health": health or "unknown",
            "up_to_date": info.get("UpToDate") if "UpToDate" in info else None,
        })
    return out


_COUNT_KEYS = (("desired", "Desired"), ("running", "Running"), ("healthy", "Healthy"),
               ("unhealthy", "Unhealthy"), ("pending", "Pending"), ("outdated", "Outdated"))


def describe_group(group_id, description, spec=None):
    """A DescribeGroup ``Description`` as a module result: instances, counts, plan, convergence."""
    description = description or {}
    status = description.get("Status") if isinstance(description.get("Status"), dict) else None
    instances = describe_instances(description)
    counts = {}
    if status is not None:
        source = status.get("Counts") if isinstance(status.get("Counts"), dict) else status
        for option, key in _COUNT_KEYS:
            counts[option] = source.get(key)
    else:
        desired = None
        allocation = ((spec or {}).get("Properties") or {}).get("Allocation") or {}
        if allocation.get("LogicalIDs"):
            desired = len(allocation["LogicalIDs"])
        elif spec is not None:
            desired = int(allocation.get("Size") or 0)
        counts = {option: None for option, _key in _COUNT_KEYS}
        counts["desired"] = desired
        counts["running"] = len(instances)
    return {
        "id": group_id,
        "converged": bool(description.get("Converged")),
        "condition": status.get("Condition") if status else None,
        "reason": status.get("Reason") if status else None,
        "plan": status.get("Plan") if status else None,
        "last_error": status.get("LastError") if status else None,
        "counts": counts,
        "instances": instances,
        "events": describe_events(status),
    }


def describe_events(status):
    """The group's recent controller events (newest last), or [] against Go InfraKit."""
    events = (status or {}).get("Events")
    if not isinstance(events, list):
        return []
    out = []
    for event in events:
        if isinstance(event, dict):
            out.append({
                "seq": event.get("Seq"),
                "time": event.get("Time"),
                "kind": event.get("Kind"),
                "instance": event.get("Instance") or None,
                "reason": event.get("Reason") or None,
            })
    return out


def is_settled(description):
    """The controller's answer: ``Converged``. Ours takes it from its plan (count, config and every
    member healthy; ``Status.Condition`` is ``Converged`` exactly then); Go InfraKit's has only it."""
    return bool((description or {}).get("Converged"))


def _names(instances):
    out = []
    for inst in instances:
        name = inst["id"]
        if inst.get("logical_id"):
            name += " (logical ID %s)" % inst["logical_id"]
        out.append(name)
    return ", ".join(out)


def unsettled_report(group, spec=None):
    """Why a group is not converged, naming the instances that are missing, outdated or unhealthy."""
    parts = []
    counts = group.get("counts") or {}
    instances = group.get("instances") or []
    allocation = ((spec or {}).get("Properties") or {}).get("Allocation") or {}
    present_ids = {i.get("logical_id") for i in instances if i.get("logical_id")}
    missing_ids = [lid for lid in allocation.get("LogicalIDs") or [] if lid not in present_ids]
    if missing_ids:
        parts.append("missing logical IDs: %s" % ", ".join(missing_ids))
    else:
        desired, running = counts.get("desired"), counts.get("running")
        if desired is not None and running is not None and running < desired:
            parts.append("missing: %d of %d instances (%d running)" % (desired - running, desired, running))
        elif desired is not None and len(instances) > desired:
            parts.append("extra: %d instances above the desired %d" % (len(instances) - desired, desired))
    outdated = [i for i in instances if i.get("up_to_date") is False]
    if outdated:
        parts.append("outdated: %s" % _names(outdated))
    unhealthy = [i for i in instances if i.get("health") == "unhealthy"]
    if unhealthy:
        parts.append("unhealthy: %s" % _names(unhealthy))
    unknown = [i for i in instances if i.get("health") == "unknown" and i.get("up_to_date") is not None]
    if unknown and not unhealthy:
        parts.append("health not yet known: %s" % _names(unknown))
    if group.get("condition"):
        text = "condition %s" % group["condition"]
        if group.get("reason"):
            text += " (%s)" % group["reason"]
        parts.append(text)
    if group.get("last_error"):
        parts.append("last error: %s" % group["last_error"])
    if not parts:
        parts.append("the controller reports the group as not converged")
    return "; ".join(parts)
