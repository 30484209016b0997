"""Launch templates for the aws plugin: what Validate checks with EC2 before a group is committed.

Guarantee: when Properties name a launch template (``LaunchTemplate``, by ID or name, at a
version), Validate asks EC2 once (DescribeLaunchTemplateVersions) and reports, by field, a
template or version that does not exist, a launch that would have no ImageId (neither the
template nor Properties give one) and template data that breaks a group's rules (a spot market
that is persistent or stops instances). Properties beside the template override it, as
RunInstances does; the flavor's Init replaces the template's UserData.
Limit: the template is read when the group is validated; a template version changed later
(``$Latest``, ``$Default``) changes launches without rolling the group: pin a version number
to have a new version roll it.
"""

from __future__ import annotations

from typing import Any

from infrakit_runtime.plugins.instance import aws_validate
from infrakit_runtime.plugins.instance.aws_ec2 import AwsError, Ec2


async def problems(ec2: Ec2, properties: dict[str, Any], where: str = "Properties") -> list[str]:
    """Every problem EC2 shows with the launch template ``properties`` names ([] when none is named)."""
    lt = properties.get("LaunchTemplate")
    if not isinstance(lt, dict) or aws_validate.launch_template_problems(lt, where):
        return []
    key = "LaunchTemplateId" if "LaunchTemplateId" in lt else "LaunchTemplateName"
    ref, version = lt.get(key), lt.get("Version", "$Default")
    if not isinstance(ref, str) or not isinstance(version, str):
        return []  # the shape check has said so
    try:
        answer = await ec2.call("DescribeLaunchTemplateVersions", **{key: ref}, Versions=[version])
    except AwsError as e:
        if "VersionNotFound" in e.code:
            return [f"{where}.LaunchTemplate.Version {version} of launch template {ref!r} does not exist ({e.code})"]
        if "NotFound" in e.code or "Malformed" in e.code:
            return [f"{where}.LaunchTemplate.{key} {ref!r} does not exist ({e.code})"]
        return [f"{where}.LaunchTemplate: cannot check launch template {ref!r}: {e}"]
    versions = answer.get("LaunchTemplateVersions") or []
    if not versions:
        return [f"{where}.LaunchTemplate.Version {version} of launch template {ref!r} does not exist"]
    data = versions[0].get("LaunchTemplateData") or {}
    named = f"launch template {ref!r} version {versions[0].get('VersionNumber', version)}"
    found = []
    if not properties.get("ImageId") and not data.get("ImageId"):
        found.append(f"{where}.ImageId is required: {named} gives no ImageId")
    if "InstanceMarketOptions" not in properties:
        found += [p.replace(f"{where}.", f"{where}.LaunchTemplate ({named}): ", 1)
                  for p in aws_validate.spot_problems(data, where)]
    return found
