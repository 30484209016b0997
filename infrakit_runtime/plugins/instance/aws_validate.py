"""AWS instance Properties validation: every problem found offline, against botocore's own model.

Guarantee: ``Properties`` that pass here are shaped exactly as EC2's RunInstances input
expects (member names, JSON types, nesting, required members, enum values), using the
service model shipped with the installed botocore, so the check follows the SDK the
plugin calls with. Our one addition, ``Volumes`` (EBS volumes kept per logical ID), is
checked the same way against CreateVolume's model. It makes no API call and needs no
credentials.

Limit: this is a shape check. Whether ``ami-123`` exists, the subnet is in the right
VPC or the account may launch ``p5.48xlarge`` only EC2 can say, at Provision time.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

import botocore.session
from botocore.model import Shape, StructureShape

from infrakit_runtime.spi.common import JSON, ValidationError, json_type

# RunInstances members the plugin sets itself; a user value would break an invariant.
CONTROLLED: dict[str, str] = {
    "MinCount": "the plugin launches one instance per slot (or a batch in ProvisionMany)",
    "MaxCount": "the plugin launches one instance per slot (or a batch in ProvisionMany)",
    "ClientToken": "the plugin derives an idempotency token per slot so a retry never launches a duplicate",
    "UserData": "the plugin sets it from the instance spec's Init (the flavor's init script)",
    "DryRun": "a dry run never launches, so the group could never converge",
    "PrivateIpAddress": "give the group LogicalIDs that are IP addresses; each pet then gets its own",
}
# TagSpecifications for these resource types are built from the spec's Tags.
CONTROLLED_TAG_RESOURCES = {"instance": "instance tags come from the group spec (Tags), applied at launch"}
# Our Properties beside RunInstances' own: a pet's kept EBS volumes (see aws_pets).
EXTENSIONS = ("Volumes",)
# CreateVolume members a kept volume may set; the plugin sets the zone, tags and token itself.
VOLUME_FIELDS = ("Encrypted", "Iops", "KmsKeyId", "Size", "SnapshotId", "Throughput", "VolumeType")
# Numeric-looking shapes (botocore type names) and the JSON values they accept.
_INTEGERS = {"integer", "long"}
_FLOATS = {"float", "double"}


@functools.cache
def input_shape(operation: str) -> StructureShape:
    """An EC2 operation's input shape from the installed botocore (loaded once; pure file reads)."""
    model = botocore.session.get_session().get_service_model("ec2")
    shape = model.operation_model(operation).input_shape
    assert isinstance(shape, StructureShape)
    return shape


def run_instances_shape() -> StructureShape:
    return input_shape("RunInstances")


def _close(name: str, choices: list[str]) -> str:
    # Case-insensitive first: `imageId` for `ImageId` is the most common slip.
    lowered = {c.lower(): c for c in choices}
    hits = [lowered[name.lower()]] if name.lower() in lowered else []
    hits += [c for c in difflib.get_close_matches(name, choices, n=3, cutoff=0.6) if c not in hits]
    return f" (did you mean {', '.join(hits)}?)" if hits else ""


def _check(value: JSON, shape: Shape, path: str, problems: list[str]) -> None:
    """Append a sentence per mismatch between ``value`` and ``shape`` (recursively)."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            problems.append(f"{path} must be an object, got {json_type(value)}")
            return
        members = shape.members
        for key, item in value.items():
            if key not in members:
                known = sorted(members)
                hint = _close(key, known) or f"; known fields: {', '.join(known)}"
                problems.append(f"{path}.{key} is not a field of {shape.name}{hint}")
                continue
            _check(item, members[key], f"{path}.{key}", problems)
        for req in shape.required_members:
            if req not in value:
                problems.append(f"{path}.{req} is required")
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(f"{path} must be an array, got {json_type(value)}")
            return
        for i, item in enumerate(value):
            _check(item, shape.member, f"{path}[{i}]", problems)
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{path} must be an object, got {json_type(value)}")
            return
        for key, item in value.items():
            _check(item, shape.value, f"{path}.{key}", problems)
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(f"{path} must be a string, got {json_type(value)}")
        elif shape.enum and value not in shape.enum:
            choices = list(shape.enum)
            listed = ", ".join(choices) if len(choices) <= 12 else f"one of {len(choices)} values"
            problems.append(f"{path} {value!r} is not a valid {shape.name}{_close(value, choices)}; allowed: {listed}")
    elif kind in _INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path} must be an integer, got {json_type(value)}")
    elif kind in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{path} must be a number, got {json_type(value)}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{path} must be a boolean, got {json_type(value)}")
    elif kind in ("blob", "timestamp"):
        if not isinstance(value, str):
            problems.append(f"{path} must be a string, got {json_type(value)}")


def problems(properties: JSON, where: str = "Properties") -> list[str]:
    """Every problem with ``properties`` as RunInstances input the plugin completes.

    ``MinCount``/``MaxCount`` are required by the model but supplied by the plugin, so
    they are not reported missing; ``ImageId`` is required unless a LaunchTemplate gives it.
    """
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        return [f"{where} must be an object (RunInstances input), got {json_type(properties)}"]
    found: list[str] = []
    for key, why in CONTROLLED.items():
        if key in properties:
            found.append(f"{where}.{key} cannot be set: {why}")
    shape = run_instances_shape()
    checked = {k: v for k, v in properties.items() if k not in CONTROLLED and k not in EXTENSIONS}
    sub: list[str] = []
    _check(checked, shape, where, sub)
    found += [p for p in sub if not any(p == f"{where}.{k} is required" for k in CONTROLLED)]
    if not properties.get("ImageId") and "LaunchTemplate" not in properties:
        found.append(f"{where}.ImageId is required unless {where}.LaunchTemplate is given")
    tag_specs = properties.get("TagSpecifications")
    # A wrong type is already reported by _check; only a list can be walked here.
    for i, ts in enumerate(tag_specs if isinstance(tag_specs, list) else []):
        if isinstance(ts, dict) and ts.get("ResourceType") in CONTROLLED_TAG_RESOURCES:
            found.append(f"{where}.TagSpecifications[{i}] cannot tag resource type {ts['ResourceType']!r}: "
                         f"{CONTROLLED_TAG_RESOURCES[ts['ResourceType']]}")
    if "Volumes" in properties:
        found += volume_problems(properties["Volumes"], properties, f"{where}.Volumes")
    found += spot_problems(properties, where)
    if isinstance(properties.get("LaunchTemplate"), dict):
        found += launch_template_problems(properties["LaunchTemplate"], f"{where}.LaunchTemplate")
    return found


def launch_template_problems(lt: dict[str, Any], where: str) -> list[str]:
    """A launch template is named by exactly one of ID or name, at "$Latest", "$Default" or a version number."""
    found = []
    if ("LaunchTemplateId" in lt) == ("LaunchTemplateName" in lt):
        found.append(f"{where} must name the template by exactly one of LaunchTemplateId or LaunchTemplateName")
    version = lt.get("Version")
    if isinstance(version, str) and version not in ("$Latest", "$Default") and not (
            version.isascii() and version.isdigit() and int(version) >= 1):
        found.append(f"{where}.Version must be $Latest, $Default or a version number, got {version!r} (a number "
                     "pins the template: a new version then rolls the group; $Latest changes nothing here)")
    return found

def spot_problems(properties: dict[str, Any], where: str) -> list[str]:
    """A spot member must end when EC2 takes it back: one-time requests that terminate."""
    market = properties.get("InstanceMarketOptions")
    options = market.get("SpotOptions") if isinstance(market, dict) else None
    if not isinstance(options, dict):
        return []
    found = []
    if options.get("SpotInstanceType", "one-time") != "one-time":
        found.append(f"{where}.InstanceMarketOptions.SpotOptions.SpotInstanceType must be one-time: a persistent "
                     "request relaunches instances by itself, beside the group's own replacements")
    if options.get("InstanceInterruptionBehavior", "terminate") != "terminate":
        found.append(f"{where}.InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior must be terminate: a "
                     "stopped or hibernated instance is not a member, so the group replaces it, and it would come "
                     "back as one too many")
    return found


def zone_source(properties: dict[str, Any]) -> tuple[str | None, str | None]:
    """Where a launch's zone is named: (subnet ID, availability zone); either may be None."""
    placement = properties.get("Placement")
    zone = placement.get("AvailabilityZone") if isinstance(placement, dict) else None
    subnet = properties.get("SubnetId")
    nics = properties.get("NetworkInterfaces")
    if not subnet and isinstance(nics, list) and nics and isinstance(nics[0], dict):
        subnet = nics[0].get("SubnetId")
    return (subnet if isinstance(subnet, str) and subnet else None), (zone if isinstance(zone, str) and zone else None)


def volume_problems(volumes: JSON, properties: dict[str, Any], where: str) -> list[str]:
    """Every problem with ``Volumes``: a list of {Device, Tags, <CreateVolume fields>}."""
    if not isinstance(volumes, list) or not volumes:
        return [f"{where} must be a list of volumes {{Device, Size, VolumeType, ...}}, got {json_type(volumes)}"]
    found: list[str] = []
    shape = input_shape("CreateVolume")
    devices: list[str] = []
    for i, v in enumerate(volumes):
        at = f"{where}[{i}]"
        if not isinstance(v, dict):
            found.append(f"{at} must be an object {{Device, Size, VolumeType, ...}}, got {json_type(v)}")
            continue
        device = v.get("Device")
        if not isinstance(device, str) or not device.startswith(("/dev/", "xvd")):
            found.append(f"{at}.Device must be the device name the instance sees (/dev/sdf, xvdf), got {device!r}")
        elif device in devices:
            found.append(f"{at}.Device {device!r} is used by another volume")
        else:
            devices.append(device)
        for key, value in v.items():
            if key == "Device":
                continue
            if key == "Tags":
                if not isinstance(value, dict) or not all(isinstance(x, str) for x in value.values()):
                    found.append(f"{at}.Tags must be an object of strings, got {json_type(value)}")
            elif key not in VOLUME_FIELDS:
                known = ["Device", "Tags", *VOLUME_FIELDS]
                found.append(f"{at}.{key} is not a field of a kept volume{_close(key, known) or '; known fields: ' + ', '.join(known)}")
            else:
                _check(value, shape.members[key], f"{at}.{key}", found)
        if "Size" not in v and "SnapshotId" not in v:
            found.append(f"{at}.Size is required unless {at}.SnapshotId is given")
    subnet, zone = zone_source(properties)
    if not subnet and not zone:
        found.append(f"{where}: a volume lives in one availability zone: give SubnetId (or "
                     "Placement.AvailabilityZone) so every instance of a logical ID launches where its volume is")
    return found


def validate(properties: JSON, where: str = "Properties") -> dict[str, Any]:
    """``properties`` as a dict, or ``ValidationError`` listing every problem."""
    found = problems(properties, where)
    if found:
        raise ValidationError(found)
    return dict(properties or {})
