"""From instance specs to RunInstances requests: tags at launch, UserData, IP pets, idempotency.

Guarantee: an instance is never visible untagged — its tags (and its volumes' tags)
are part of the RunInstances call itself (TagSpecifications), so the group
controller's tag query finds it from its first moment. Each request carries a
ClientToken (EC2's idempotency key) derived deterministically, so repeating a request
for the same slot and attempt returns the instance already launched instead of a
second one.

The ClientToken derivation (``client_token``)::

    "ik1-" + hex(sha256("ik1" NUL group NUL slot NUL config_hash NUL attempt))[:48]

* ``group``: the ``infrakit.group`` tag; ``config_hash``: the ``infrakit.config.hash`` tag;
* ``slot``: the spec's LogicalID (pets), else its ``infrakit.slot`` tag (cattle);
* ``attempt``: the ``infrakit.attempt`` tag, a value the caller keeps stable while it
  retries one launch and changes only when it means "launch a new instance for this
  slot" (e.g. after observing the previous one gone). Absent means ``""``.

``infrakit.slot`` and ``infrakit.attempt`` are request metadata: they steer the token
and are never written to EC2. A batch (``Batch``) of cattle slots carries one token
derived from the sorted tokens of its slots, so a repeated batch of the same slots is
idempotent too.

Limit: the guarantee needs a slot. A cattle spec with neither LogicalID nor
``infrakit.slot`` (what InfraKit's Go controller sends) gets a random token: each
such call launches an instance, as in InfraKit. EC2 remembers a token for a limited
time after the request; the guarantee holds within that window.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import secrets
from typing import Any

from infrakit_runtime.plugins.instance.aws_validate import EXTENSIONS
from infrakit_runtime.spi import instance

TAG_SLOT = instance.TAG_SLOT
TAG_ATTEMPT = instance.TAG_ATTEMPT
# Tags that steer the plugin and never reach EC2.
REQUEST_TAGS = frozenset({TAG_SLOT, TAG_ATTEMPT})
TOKEN_PREFIX = "ik1-"


def is_ipv4(text: str | None) -> bool:
    """Whether a logical ID names the instance's private IPv4 address."""
    if not text:
        return False
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


def ec2_tags(spec: instance.Spec) -> dict[str, str]:
    """The tags written to EC2: the spec's, minus request metadata, plus logical ID and Name."""
    tags = {k: v for k, v in spec.tags.items() if k not in REQUEST_TAGS}
    if spec.logical_id:
        tags[instance.TAG_LOGICAL_ID] = spec.logical_id
        if not is_ipv4(spec.logical_id):
            tags.setdefault("Name", spec.logical_id)
    return tags


def slot_of(spec: instance.Spec) -> str | None:
    """The slot a spec fills: its logical ID (pets) or its ``infrakit.slot`` tag (cattle)."""
    return spec.logical_id or spec.tags.get(TAG_SLOT) or None


def client_token(spec: instance.Spec) -> str:
    """The spec's idempotency token (see the module docstring for the derivation)."""
    slot = slot_of(spec)
    if slot is None:
        return TOKEN_PREFIX + "r-" + secrets.token_hex(24)
    parts = ("ik1", spec.tags.get(instance.TAG_GROUP, ""), slot,
             spec.tags.get(instance.TAG_CONFIG_HASH, ""), spec.tags.get(TAG_ATTEMPT, ""))
    return TOKEN_PREFIX + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:48]


def batch_token(tokens: list[str]) -> str:
    """One token for a batch: deterministic when every slot's token is, random otherwise."""
    if any(t.startswith(TOKEN_PREFIX + "r-") for t in tokens):
        return TOKEN_PREFIX + "r-" + secrets.token_hex(24)
    joined = "\0".join(sorted(tokens))
    return TOKEN_PREFIX + "b-" + hashlib.sha256(joined.encode()).hexdigest()[:48]


def chained_token(token: str, dead_ids: list[str]) -> str:
    """The next token after EC2 answered ``token`` with instances already terminated.

    Deterministic, so a retry that meets the same terminated instances follows the same
    chain and finds the live instance the first retry launched.
    """
    joined = "\0".join([token, *sorted(dead_ids)])
    return TOKEN_PREFIX + "c-" + hashlib.sha256(joined.encode()).hexdigest()[:48]


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def run_params(properties: dict[str, Any], spec: instance.Spec) -> dict[str, Any]:
    """RunInstances input for ``spec`` (without MinCount, MaxCount and ClientToken).

    Instance and volume tags are the spec's; a user TagSpecification for volumes is
    merged under them (the spec wins on a shared key), other resource types pass through.
    """
    params = {k: v for k, v in properties.items() if k != "TagSpecifications" and k not in EXTENSIONS}
    tags = ec2_tags(spec)
    specs: list[dict[str, Any]] = []
    volume_extra: dict[str, str] = {}
    for ts in properties.get("TagSpecifications") or []:
        if ts.get("ResourceType") == "volume":
            volume_extra.update({t["Key"]: t["Value"] for t in ts.get("Tags") or [] if "Key" in t})
        else:
            specs.append(ts)
    if tags:
        specs.append({"ResourceType": "instance", "Tags": _tag_list(tags)})
    if tags or volume_extra:
        specs.append({"ResourceType": "volume", "Tags": _tag_list({**volume_extra, **tags})})
    if specs:
        params["TagSpecifications"] = specs
    if spec.init:
        params["UserData"] = spec.init  # botocore base64-encodes RunInstances' UserData itself
    if is_ipv4(spec.logical_id):
        params["PrivateIpAddress"] = spec.logical_id
    return params


def batch_key(properties: dict[str, Any], spec: instance.Spec) -> str:
    """Specs with equal keys can share one RunInstances call (same request but for the slot)."""
    return json.dumps({"p": properties, "t": ec2_tags(spec), "i": spec.init}, sort_keys=True, default=str)


@dataclasses.dataclass(frozen=True)
class Batch:
    """One RunInstances call filling ``slots`` (indexes into the caller's spec list)."""

    slots: tuple[int, ...]
    params: dict[str, Any]
    token: str


def plan_batches(launches: list[tuple[int, dict[str, Any], instance.Spec]], max_batch: int) -> list[Batch]:
    """Group launches: LogicalID-free specs with the same request share calls of up to ``max_batch``.

    Pets (a LogicalID) always launch alone: each has its own IP or Name. Order within a
    group follows the caller's order, so the same request plans the same batches.
    """
    groups: dict[str, list[tuple[int, dict[str, Any], instance.Spec]]] = {}
    batches: list[Batch] = []
    for index, properties, spec in launches:
        if spec.logical_id:
            batches.append(Batch((index,), run_params(properties, spec), client_token(spec)))
        else:
            groups.setdefault(batch_key(properties, spec), []).append((index, properties, spec))
    for members in groups.values():
        for start in range(0, len(members), max_batch):
            chunk = members[start:start + max_batch]
            _, properties, spec = chunk[0]
            tokens = [client_token(s) for _, _, s in chunk]
            token = tokens[0] if len(chunk) == 1 else batch_token(tokens)
            batches.append(Batch(tuple(i for i, _, _ in chunk), run_params(properties, spec), token))
    return batches
