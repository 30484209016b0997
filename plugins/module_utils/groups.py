# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Group specs and descriptions between the module face (snake_case) and the wire (PascalCase).

Guarantee: ``normalize`` maps two specs the controller treats alike (key order,
defaults spelled out or left out, ``0s`` vs ``0``, ``null`` vs absent) to equal
values, so ``changed`` is computed by plain comparison. Limit: instance and flavor
``properties`` belong to their plugins and are compared as given, apart from
dropping ``null`` values.
"""

from __future__ import annotations

import copy
import math
import re

# Defaults the controller applies to a section left out; a stored spec that spells
# them out equals one that omits them.
UPDATING_DEFAULTS = {"MaxSurge": 1, "MaxUnavailable": 0, "ProgressDeadline": 600.0, "Duration": 0.0, "Count": 0}
HEALTH_DEFAULTS = {"GracePeriod": 30.0, "UnhealthyThreshold": 3, "HealthyThreshold": 1, "MaxUnhealthy": "40%"}

# module option -> (wire key, kind)
UPDATING_FIELDS = {
    "max_surge": ("MaxSurge", "amount"),
    "max_unavailable": ("MaxUnavailable", "amount"),
    "progress_deadline": ("ProgressDeadline", "duration"),
    "duration": ("Duration", "duration"),
    "count": ("Count", "count"),
}
HEALTH_FIELDS = {
    "grace_period": ("GracePeriod", "duration"),
    "unhealthy_threshold": ("UnhealthyThreshold", "count"),
    "healthy_threshold": ("HealthyThreshold", "count"),
    "max_unhealthy": ("MaxUnhealthy", "amount"),
}

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class SpecError(ValueError):
    """An option value the module refuses before talking to the controller."""


# --- scalar kinds ---------------------------------------------------------------------------


# Longer than any sensible deadline; keeps arithmetic finite.
MAX_DURATION = 10 * 365 * 24 * 3600


def parse_duration(value, where="duration"):
    """Seconds in a Go duration (``1m30s``), a number of seconds, or a numeric string."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise SpecError("%s must be a duration such as 30s or 10m, got %r" % (where, value))
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise SpecError("%s must be a finite duration such as 30s, got %r" % (where, value))
        if value < 0:
            raise SpecError("%s must not be negative, got %r" % (where, value))
        if value > MAX_DURATION:
            raise SpecError("%s must be at most %d seconds (about ten years), got %r" % (where, MAX_DURATION, value))
        return float(value)
    text = str(value).strip()
    if re.match(r"^\d+(\.\d+)?$", text):
        return parse_duration(float(text), where)
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise SpecError("%s must be a duration such as 30s, 1m30s or 10m, got %r" % (where, value))
    return parse_duration(total, where)


def format_duration(seconds):
    """The Go-style text for a number of seconds (``600s`` stays ``600s``; fractions keep ``ms``)."""
    if seconds == int(seconds):
        return "%ds" % int(seconds)
    return "%dms" % int(round(seconds * 1000))


def parse_amount(value, where):
    """A count (``2``) or a percentage (``25%``): int or canonical ``"N%"`` text."""
    if isinstance(value, bool) or value is None:
        raise SpecError("%s must be a number or a percentage such as 25%%, got %r" % (where, value))
    if isinstance(value, int):
        if value < 0:
            raise SpecError("%s must not be negative, got %r" % (where, value))
        return value
    text = str(value).strip()
    if re.match(r"^\d{1,18}$", text):
        return int(text)
    if re.match(r"^\d+$", text):
        raise SpecError("%s is too large, got a number of %d digits" % (where, len(text)))
    match = re.match(r"^(\d+(?:\.\d+)?)\s*%$", text)
    if match:
        number = float(match.group(1))
        if number > 100:
            raise SpecError("%s must be at most 100%%, got %r" % (where, value))
        return "%g%%" % number
    raise SpecError("%s must be a number or a percentage such as 25%%, got %r" % (where, value))


def parse_count(value, where):
    if isinstance(value, bool):
        raise SpecError("%s must be a whole number, got %r" % (where, value))
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SpecError("%s must be a whole number, got %r" % (where, value))
    if number < 0 or (isinstance(value, float) and value != number):
        raise SpecError("%s must be a whole number of 0 or more, got %r" % (where, value))
    return number


_PARSERS = {"amount": parse_amount, "count": parse_count}


def _section_to_wire(options, fields, section):
    """Module sub-options -> wire section (only the keys the user set)."""
    out = {}
    for option, (key, kind) in fields.items():
        value = (options or {}).get(option)
        if value is None:
            continue
        where = "%s.%s" % (section, option)
        if kind == "duration":
            out[key] = format_duration(parse_duration(value, where))
        else:
            out[key] = _PARSERS[kind](value, where)
    return out


def _section_from_wire(section, fields):
    out = {}
    for option, (key, _kind) in fields.items():
        if isinstance(section, dict) and section.get(key) is not None:
            out[option] = section[key]
    return out


# --- specs ----------------------------------------------------------------------------------


def _plugin_to_wire(options, section):
    if options is None:
        return None
    plugin = (options.get("plugin") or "").strip()
    if not plugin:
        raise SpecError("%s.plugin must name a plugin (socket[/type], e.g. process or aws/ec2-instance)" % section)
    return {"Plugin": plugin, "Properties": copy.deepcopy(options.get("properties"))}


def build_spec(params, stored=None):
    """The wire spec the module commits, from its options.

    Sections the user left out (``instance``, ``flavor``, ``updating``, ``health``, allocation)
    are taken from ``stored``, so ``size: 5`` alone rescales an existing group. A section the
    user gives replaces the stored one as a whole.
    """
    name = params["name"]
    stored_props = copy.deepcopy((stored or {}).get("Properties") or {})
    props = {}

    if params.get("logical_ids") is not None:
        ids = [str(i) for i in params["logical_ids"]]
        if len(set(ids)) != len(ids):
            raise SpecError("logical_ids must be unique; repeated: %s" % ", ".join(sorted({i for i in ids if ids.count(i) > 1})))
        if any(not i.strip() for i in ids):
            raise SpecError("logical_ids must not contain empty strings")
        props["Allocation"] = {"LogicalIDs": ids}
    elif params.get("size") is not None:
        if params["size"] < 0:
            raise SpecError("size must be 0 or more, got %d" % params["size"])
        props["Allocation"] = {"Size": params["size"]}
    elif stored_props.get("Allocation") is not None:
        props["Allocation"] = stored_props["Allocation"]
    else:
        raise SpecError("group %s does not exist yet: give size or logical_ids to create it" % name)

    for option, key in (("instance", "Instance"), ("flavor", "Flavor")):
        section = _plugin_to_wire(params.get(option), option)
        if section is None:
            section = stored_props.get(key)
        if section is None:
            raise SpecError("group %s does not exist yet: give %s (plugin and properties) to create it" % (name, option))
        props[key] = section

    for option, key, fields in (("updating", "Updating", UPDATING_FIELDS), ("health", "Health", HEALTH_FIELDS)):
        if params.get(option) is not None:
            section = _section_to_wire(params[option], fields, option)
            if section:
                props[key] = section
        elif stored_props.get(key) is not None:
            props[key] = stored_props[key]

    return {"ID": name, "Properties": props}


def _drop_nulls(value):
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _normalize_section(section, defaults, fields):
    out = {}
    kinds = dict(fields.values())
    for key, value in (section or {}).items():
        if value is None:
            continue
        kind = kinds.get(key)
        try:
            if kind == "duration":
                value = parse_duration(value, key)
            elif kind == "amount":
                value = parse_amount(value, key)
            elif kind == "count":
                value = parse_count(value, key)
        except SpecError:
            pass  # keep what the controller stored; it then differs and is recommitted
        if key in defaults and value == defaults[key]:
            continue
        out[key] = value
    return out


def normalize(spec):
    """A comparable form of a wire spec (see the module docstring); None stays None."""
    if spec is None:
        return None
    props = (spec or {}).get("Properties") or {}
    out = {}
    allocation = props.get("Allocation") or {}
    if allocation.get("LogicalIDs"):
        out["Allocation"] = {"LogicalIDs": [str(i) for i in allocation["LogicalIDs"]]}
    else:
        out["Allocation"] = {"Size": int(allocation.get("Size") or 0)}
    for key in ("Instance", "Flavor"):
        section = props.get(key) or {}
        out[key] = {"Plugin": section.get("Plugin") or "", "Properties": _drop_nulls(section.get("Properties"))}
    updating = _normalize_section(props.get("Updating"), UPDATING_DEFAULTS, UPDATING_FIELDS)
    # InfraKit's own Updating field, always null from our modules.
    updating.pop("SkipBeforeInstanceDestroy", None)
    if updating:
        out["Updating"] = updating
    health = _normalize_section(props.get("Health"), HEALTH_DEFAULTS, HEALTH_FIELDS)
    if health:
        out["Health"] = health
    # Any other section the controller keeps is compared as it is.
    for key, value in props.items():
        if key not in ("Allocation", "Instance", "Flavor", "Updating", "Health") and value is not None:
            out[key] = _drop_nulls(value)
    return {"ID": spec.get("ID"), "Properties": out}


def diff_view(spec):
    """A spec for ``diff`` output: normalised, so only real differences show, with durations as text."""
    if spec is None:
        return {}
    normal = normalize(spec)
    for key, fields in (("Updating", UPDATING_FIELDS), ("Health", HEALTH_FIELDS)):
        section = normal["Properties"].get(key)
        for wire_key, kind in fields.values():
            if section and kind == "duration" and isinstance(section.get(wire_key), float):
                section[wire_key] = format_duration(section[wire_key])
    return spec_to_module(normal)


def spec_to_module(spec):
    """A wire spec in the module's vocabulary (for ``spec`` results and diffs)."""
    if spec is None:
        return None
    props = spec.get("Properties") or {}
    out = {"name": spec.get("ID")}
    allocation = props.get("Allocation") or {}
    if allocation.get("LogicalIDs"):
        out["logical_ids"] = list(allocation["LogicalIDs"])
    else:
        out["size"] = int(allocation.get("Size") or 0)
    for key, option in (("Instance", "instance"), ("Flavor", "flavor")):
        section = props.get(key)
        if section is not None:
            out[option] = {"plugin": section.get("Plugin"), "properties": section.get("Properties")}
    updating = _section_from_wire(props.get("Updating"), UPDATING_FIELDS)
    if updating:
        out["updating"] = updating
    health = _section_from_wire(props.get("Health"), HEALTH_FIELDS)
    if health:
        out["health"] = health
    return out


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
    """Converged, and, when the controller reports a Status, its condition says so too."""
    if not (description or {}).get("Converged"):
        return False
    status = description.get("Status")
    if isinstance(status, dict) and status.get("Condition") is not None:
        return status.get("Condition") == "Converged"
    return True


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
