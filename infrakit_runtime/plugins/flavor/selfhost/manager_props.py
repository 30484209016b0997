"""The manager flavor's Properties and the replica configuration it renders: pure, no I/O.

Guarantee: ``parse`` returns complete Properties or raises ``ValidationError`` listing every
problem with its field; ``replica`` derives a replica's listen address and advertised URL from
its logical ID; ``render`` gives the init that writes the replica's configuration file (the
runtime's ``infrakit.yml``: its backend, listener, token file and options) and exports
``INFRAKIT_CONFIG`` and ``INFRAKIT_GROUP_SELF_LOGICAL_ID`` (InfraKit's name for the self ID),
so the replica knows which member it runs on.

Properties::

    TokenFile: /etc/infrakit/token   required: the bearer token file of every replica's listener
                                     (also what the flavor presents to ask a replica how it is)
    Backend: {type: etcd, endpoints: [...], prefix: /infrakit/, ttl: 5s}   required: the replicas' store
    ListenPort: 24864     listen port of a replica whose logical ID is a bare host; HOST:PORT names it
    ConfigDir: /etc/infrakit/replicas   where the init writes <name>.yml
    TLS: {cert, key, ca}  the replica's listener certificate (required off loopback) and the CA
                          replicas (and this flavor) verify the leader with
    Options: {...}        more manager options (poll_interval, events_json, forward); the rendered
                          ones (backend, listen, advertise, token_file, tls) cannot be set
    Timeout: 3s           each call to a replica (health, handover)

Limit: the replica's program is the group's Instance command (``infrakit plugin run
manager:NAME``); the flavor writes its configuration, it does not choose its socket name.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from typing import Any

from infrakit_runtime.plugins import fields
from infrakit_runtime.plugins.flavor.selfhost import addresses
from infrakit_runtime.spi.common import JSON, ValidationError

__all__ = ["ManagerProperties", "Replica", "parse", "render", "replica"]

KNOWN = ("TokenFile", "Backend", "ListenPort", "ConfigDir", "TLS", "Options", "Timeout")
TLS_KEYS = ("cert", "key", "ca")
RENDERED = ("backend", "listen", "advertise", "token_file", "tls")
# Options that the config file keeps at its top level (the manager's own would be overridden there).
TOP_LEVEL = ("poll_interval",)
ENV_SELF_LOGICAL_ID = "INFRAKIT_GROUP_SELF_LOGICAL_ID"


@dataclasses.dataclass(frozen=True)
class ManagerProperties:
    token_file: str
    backend: dict[str, Any]
    listen_port: int = 24864
    config_dir: str = "/etc/infrakit/replicas"
    tls: dict[str, str] | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    timeout: float = 3.0


def parse(obj: JSON, *, strict: bool = False) -> ManagerProperties:
    f = fields.Fields(obj)
    if strict:
        f.unknown(KNOWN)
    token_file = f.abs_path("TokenFile")
    f.required("TokenFile", "the bearer token file every replica's listener requires (loopback included)")
    backend = f.obj.get("Backend")
    if backend is None:
        f.problems.append(fields.missing("Backend", "the replicas' store, e.g. {type: etcd, endpoints: [http://10.0.0.1:2379]}"))
        backend = {}
    elif not isinstance(backend, dict):
        f.problems.append(fields.wrong_type("Backend", "an object (the manager's backend option)", backend))
        backend = {}
    elif backend.get("type") == "etcd":
        endpoints = backend.get("endpoints")
        if not isinstance(endpoints, list) or not endpoints or not all(isinstance(e, str) and e for e in endpoints):
            f.problems.append("Backend.endpoints must list the etcd group's client URLs (replicas share leadership "
                              "and the store through them)")
    elif backend.get("type") not in (None, "file"):
        f.problems.append(fields.wrong_value("Backend.type", "etcd or file", backend.get("type")))
    tls = None
    t = f.nested("TLS")
    if t is not None:
        if strict:
            t.unknown(TLS_KEYS)
        tls = {k: v for k in TLS_KEYS if (v := t.abs_path(k)) is not None}
        if not tls.get("cert") or not tls.get("key"):
            t.problems.append("TLS needs cert and key (absolute paths on the replica's host)")
    options = f.obj.get("Options") or {}
    if not isinstance(options, dict):
        f.problems.append(fields.wrong_type("Options", "an object of manager options", options))
        options = {}
    for key in sorted(options, key=str):
        if key in RENDERED:
            f.problems.append(f"Options.{key} is rendered by the flavor from the logical ID and the Properties; "
                              f"it cannot be set")
    props = ManagerProperties(
        token_file=token_file or "", backend=dict(backend), listen_port=f.port("ListenPort", 24864),
        config_dir=f.abs_path("ConfigDir", ManagerProperties.config_dir) or ManagerProperties.config_dir,
        tls=tls, options=dict(options), timeout=f.duration("Timeout", ManagerProperties.timeout),
    )
    if f.problems:
        raise ValidationError(f.problems)
    return props


@dataclasses.dataclass(frozen=True)
class Replica:
    """Where one replica listens and how the others reach it, from its logical ID."""

    logical_id: str
    name: str
    listen: str
    url: str


def replica(props: ManagerProperties, logical_id: str) -> Replica:
    at = addresses.parse(logical_id)
    port = at.port_or(props.listen_port)
    scheme = "https" if props.tls else "http"
    return Replica(logical_id=logical_id, name=addresses.member_name(logical_id), listen=at.with_port(port),
                   url=at.url(scheme, port))


def logical_id_problems(props: ManagerProperties, logical_ids: tuple[str, ...] | None) -> list[str]:
    if not logical_ids:
        return ["the manager flavor keeps pets: give the group Allocation.LogicalIDs, one per replica "
                "(an IP, or HOST:PORT on one machine)"]
    problems: list[str] = []
    seen: dict[str, str] = {}
    for i, lid in enumerate(logical_ids):
        try:
            r = replica(props, lid)
        except ValueError as e:
            problems.append(f"Allocation.LogicalIDs[{i}]: {e}")
            continue
        if r.listen in seen:
            problems.append(f"Allocation.LogicalIDs[{i}] {lid!r} would listen on {r.listen}, as {seen[r.listen]!r} does")
        seen[r.listen] = lid
    return problems


def config(props: ManagerProperties, me: Replica) -> dict[str, Any]:
    """The replica's configuration file (``infrakit.yml``) as a document."""
    manager: dict[str, Any] = {k: v for k, v in props.options.items() if k not in TOP_LEVEL}
    manager.update(backend=props.backend, listen=me.listen, advertise=me.url, token_file=props.token_file)
    if props.tls:
        manager["tls"] = dict(props.tls)
    doc: dict[str, Any] = {"token_file": props.token_file, "manager": manager}
    doc.update({k: props.options[k] for k in TOP_LEVEL if k in props.options})
    return doc


def config_path(props: ManagerProperties, me: Replica) -> str:
    return f"{props.config_dir.rstrip('/')}/{me.name}.yml"


def render(props: ManagerProperties, me: Replica) -> str:
    """The init: write the configuration (JSON, which YAML reads), export where it is and who this is."""
    path = config_path(props, me)
    body = json.dumps(config(props, me), indent=1, sort_keys=True)
    return "\n".join([
        f"mkdir -p {shlex.quote(props.config_dir)}",
        f"umask 077; cat > {shlex.quote(path)} <<'INFRAKIT_REPLICA'", body, "INFRAKIT_REPLICA",
        f"export INFRAKIT_CONFIG={shlex.quote(path)}",
        f"export {ENV_SELF_LOGICAL_ID}={shlex.quote(me.logical_id)}",
    ])
