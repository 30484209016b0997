"""The ansible flavor's Properties: every problem reported at once, by field, before anything runs.

Guarantee: ``parse`` is pure (no file system, no Ansible): it checks types, ranges and shapes
and returns a frozen ``Properties``; ``strict`` (Validate) also refuses unknown fields, as the
other flavors do. What needs the machine (the playbook exists and passes Ansible's syntax check,
the key and vault files are readable) is ``plugin.AnsibleFlavor.validate``'s business.
Limit: a playbook that parses can still fail on an instance; that is what Healthy reports.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from infrakit_runtime.plugins import fields
from infrakit_runtime.spi.common import JSON, ValidationError

FIELDS = ("Playbook", "ExtraVars", "Connection", "VaultPasswordFile", "Timeout", "Retries", "Concurrency",
          "Drain", "Flavor")
CONNECTION_FIELDS = ("Type", "User", "PrivateKeyFile", "Port", "HostKeyChecking", "Become", "BecomeUser")
DRAIN_FIELDS = ("Playbook", "ExtraVars", "Timeout")
CONNECTIONS = ("local", "ssh")

DEFAULT_TIMEOUT = 600.0
DEFAULT_DRAIN_TIMEOUT = 300.0
DEFAULT_RETRIES = 1
MAX_RETRIES = 10
# Ansible's own default number of forks, and AWX's: a sensible number of hosts to work on at once.
DEFAULT_CONCURRENCY = 5
MAX_CONCURRENCY = 100
# The controller waits this long for a Drain call (rpc DRAIN_TIMEOUT is 900 s), minus a margin to answer in.
MAX_DRAIN_TOTAL = 870.0

# A failed attempt is retried after 2 s, doubling up to a minute.
RETRY_DELAY = 2.0
MAX_RETRY_DELAY = 60.0

# ns.collection.playbook (ansible-playbook runs playbooks of installed collections by FQCN).
_FQCN = re.compile(r"^[a-z0-9_]+\.[a-z0-9_]+\.[A-Za-z0-9_][A-Za-z0-9_.]*$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Connection:
    """How Ansible reaches an instance."""

    type: str = "local"
    user: str | None = None
    private_key_file: str | None = None
    port: int | None = None
    host_key_checking: bool = False
    become: bool = False
    become_user: str | None = None


@dataclasses.dataclass(frozen=True)
class Drain:
    """The playbook run before the controller destroys an instance."""

    playbook: str
    extra_vars: dict[str, Any] = dataclasses.field(default_factory=dict)
    timeout: float = DEFAULT_DRAIN_TIMEOUT


@dataclasses.dataclass(frozen=True)
class Properties:
    """The ansible flavor's Properties, checked."""

    playbook: str
    extra_vars: dict[str, Any] = dataclasses.field(default_factory=dict)
    connection: Connection = Connection()
    vault_password_file: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    concurrency: int = DEFAULT_CONCURRENCY
    drain: Drain | None = None
    inner: tuple[str, JSON] | None = None  # (plugin, properties) of the wrapped flavor

    def playbooks(self) -> list[tuple[str, str]]:
        """(field, playbook) of every playbook these Properties run."""
        out = [("Properties.Playbook", self.playbook)]
        if self.drain is not None:
            out.append(("Properties.Drain.Playbook", self.drain.playbook))
        return out


def retry_delay(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1`` once attempt ``attempt`` (1-based) has failed."""
    return min(MAX_RETRY_DELAY, RETRY_DELAY * 2 ** max(0, attempt - 1))


def worst_drain(drain: Drain, retries: int) -> float:
    """The longest a Drain call can take: every attempt timing out, plus the waits between them."""
    return drain.timeout * (retries + 1) + sum(retry_delay(a) for a in range(1, retries + 1))


def label(playbook: str) -> str:
    """How a playbook is named in reasons and events: a file by its name, a collection's by its FQCN."""
    return playbook.rsplit("/", 1)[-1]


def is_fqcn(playbook: str) -> bool:
    """Whether ``playbook`` names a playbook of an installed collection rather than a file."""
    return not playbook.startswith("/") and bool(_FQCN.match(playbook))


def _playbook(r: fields.Fields, key: str) -> str | None:
    value = r.obj.get(key)
    expected = "an absolute path to a playbook, or a playbook of an installed collection by its FQCN " \
               "(namespace.collection.playbook)"
    if value is None:
        r.problems.append(fields.missing(r.path(key), expected))
        return None
    if not isinstance(value, str):
        r.problems.append(fields.wrong_type(r.path(key), expected, value))
        return None
    if not (value.startswith("/") or _FQCN.match(value)) or "\0" in value:
        r.problems.append(fields.wrong_value(r.path(key), expected, value))
        return None
    return value


def _variables(r: fields.Fields, key: str) -> dict[str, Any]:
    value = r.mapping(key, "an object of variables")
    bad = [k for k in value if not isinstance(k, str) or not _VARIABLE.match(k)]
    r.problems.extend(f"{r.path(key)}: {k!r} is not a valid Ansible variable name" for k in bad)
    return value


def _user(r: fields.Fields, key: str) -> str | None:
    value = r.string(key)
    if value is not None and not _USER.match(value):
        r.problems.append(fields.wrong_value(r.path(key), "a user name", value))
        return None
    return value


def _connection(raw: JSON, problems: list[str], strict: bool) -> Connection:
    where = "Properties.Connection"
    if raw is None:
        return Connection()
    if isinstance(raw, str):
        raw = {"Type": raw}
    if not isinstance(raw, dict):
        problems.append(fields.wrong_type(where, f"\"local\", \"ssh\" or an object {{{', '.join(CONNECTION_FIELDS)}}}",
                                          raw))
        return Connection()
    r = fields.Fields(raw, where, problems)
    if strict:
        r.unknown(CONNECTION_FIELDS)
    kind = raw.get("Type", "local")
    known = kind in CONNECTIONS
    if not known:
        problems.append(fields.wrong_value(f"{where}.Type", f"one of {', '.join(CONNECTIONS)}", kind))
        kind = "local"
    conn = Connection(type=kind, user=_user(r, "User"), private_key_file=r.abs_path("PrivateKeyFile"),
                      port=r.port("Port", 0) or None, host_key_checking=r.boolean("HostKeyChecking", False),
                      become=r.boolean("Become", False), become_user=_user(r, "BecomeUser"))
    if kind == "local" and known:
        problems.extend(f"{where}.{k} applies to the ssh connection only" for k in ("User", "PrivateKeyFile", "Port",
                                                                                      "HostKeyChecking")
                        if raw.get(k) is not None)
    if conn.become_user is not None and not conn.become:
        problems.append(f"{where}.BecomeUser needs {where}.Become: true")
    return conn


def _drain(raw: JSON, problems: list[str], strict: bool) -> Drain | None:
    where = "Properties.Drain"
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(fields.wrong_type(where, f"an object {{{', '.join(DRAIN_FIELDS)}}}", raw))
        return None
    r = fields.Fields(raw, where, problems)
    if strict:
        r.unknown(DRAIN_FIELDS)
    playbook = _playbook(r, "Playbook")
    extra = _variables(r, "ExtraVars")
    timeout = r.duration("Timeout", DEFAULT_DRAIN_TIMEOUT)
    return Drain(playbook=playbook, extra_vars=extra, timeout=timeout) if playbook else None


def _inner(raw: JSON, problems: list[str], strict: bool, self_name: str) -> tuple[str, JSON] | None:
    where = "Properties.Flavor"
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("Plugin"), str) or not raw["Plugin"]:
        problems.append(f"{where} must be {{Plugin, Properties}}: the flavor whose health check (and Init) the "
                        "instance also needs, asked once the playbook has succeeded")
        return None
    if strict:
        fields.Fields(raw, where, problems).unknown(("Plugin", "Properties"))
    if self_name and raw["Plugin"].partition("/")[0] == self_name:
        problems.append(f"{where}.Plugin {raw['Plugin']!r} is this flavor itself")
        return None
    return raw["Plugin"], raw.get("Properties")


def parse(obj: JSON, *, strict: bool = True, self_name: str = "") -> Properties:
    """Checked Properties, or ``ValidationError`` listing every problem by its field."""
    if not isinstance(obj, dict):
        raise ValidationError(fields.wrong_type("Properties", "an object with at least Playbook", obj))
    problems: list[str] = []
    r = fields.Fields(obj, "Properties", problems)
    if strict:
        r.unknown(FIELDS)
    playbook = _playbook(r, "Playbook")
    extra = _variables(r, "ExtraVars")
    connection = _connection(obj.get("Connection"), problems, strict)
    vault = r.abs_path("VaultPasswordFile")
    timeout = r.duration("Timeout", DEFAULT_TIMEOUT)
    retries = r.integer("Retries", DEFAULT_RETRIES, minimum=0, maximum=MAX_RETRIES)
    concurrency = r.integer("Concurrency", DEFAULT_CONCURRENCY, minimum=1, maximum=MAX_CONCURRENCY)
    drain = _drain(obj.get("Drain"), problems, strict)
    if drain is not None and worst_drain(drain, retries) > MAX_DRAIN_TOTAL:
        problems.append(f"Properties.Drain.Timeout: {retries + 1} attempts (Retries + 1) of up to "
                        f"{drain.timeout:g}s each, with the waits between them, take up to "
                        f"{worst_drain(drain, retries):g}s; the controller waits {MAX_DRAIN_TOTAL:g}s for a drain")
    inner = _inner(obj.get("Flavor"), problems, strict, self_name)
    if problems or playbook is None:
        raise ValidationError(problems)
    return Properties(playbook=playbook, extra_vars=extra, connection=connection, vault_password_file=vault,
                      timeout=timeout, retries=retries, concurrency=concurrency, drain=drain, inner=inner)
