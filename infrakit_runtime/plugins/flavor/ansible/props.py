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

from infrakit_runtime.durations import parse_duration
from infrakit_runtime.spi.common import JSON, ValidationError, json_type

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


class _Reader:
    """Reads the fields of one object, collecting problems instead of stopping at the first."""

    def __init__(self, obj: dict[str, Any], where: str, problems: list[str]) -> None:
        self.obj, self.where, self.problems = obj, where, problems

    def path(self, key: str) -> str:
        return f"{self.where}.{key}"

    def unknown(self, known: tuple[str, ...]) -> None:
        self.problems.extend(f"{self.path(k)} is not a field (known: {', '.join(known)})"
                             for k in sorted(set(self.obj) - set(known), key=str))

    def playbook(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None:
            self.problems.append(f"{self.path(key)} is required: an absolute path to a playbook, or a playbook of "
                                 "an installed collection by its FQCN (namespace.collection.playbook)")
            return None
        if not isinstance(value, str) or not (value.startswith("/") or _FQCN.match(value)) or "\0" in value:
            self.problems.append(f"{self.path(key)} must be an absolute path to a playbook or a collection "
                                 f"playbook's FQCN (namespace.collection.playbook), got {value!r}")
            return None
        return value

    def path_field(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
            self.problems.append(f"{self.path(key)} must be an absolute file path, got {value!r}")
            return None
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(f"{self.path(key)} must be an object of variables, got {json_type(value)}")
            return {}
        bad = [k for k in value if not isinstance(k, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k)]
        self.problems.extend(f"{self.path(key)}: {k!r} is not a valid Ansible variable name" for k in bad)
        return dict(value)

    def duration(self, key: str, default: float) -> float:
        value = self.obj.get(key)
        if value is None:
            return default
        try:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ValueError(f"must be a duration such as \"10m\", got {json_type(value)}")
            seconds = parse_duration(value)
        except ValueError as e:
            self.problems.append(f"{self.path(key)}: {e}")
            return default
        if seconds <= 0:
            self.problems.append(f"{self.path(key)} must be longer than 0s, got {value!r}")
            return default
        return seconds

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.obj.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.problems.append(f"{self.path(key)} must be an integer from {minimum} to {maximum}, got {value!r}")
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problems.append(f"{self.path(key)} must be true or false, got {json_type(value)}")
            return default
        return value

    def name(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not _USER.match(value):
            self.problems.append(f"{self.path(key)} must be a user name, got {value!r}")
            return None
        return value


def _connection(raw: JSON, problems: list[str], strict: bool) -> Connection:
    where = "Properties.Connection"
    if raw is None:
        return Connection()
    if isinstance(raw, str):
        raw = {"Type": raw}
    if not isinstance(raw, dict):
        problems.append(f"{where} must be \"local\", \"ssh\" or an object {{{', '.join(CONNECTION_FIELDS)}}}, "
                        f"got {json_type(raw)}")
        return Connection()
    r = _Reader(raw, where, problems)
    if strict:
        r.unknown(CONNECTION_FIELDS)
    kind = raw.get("Type", "local")
    known = kind in CONNECTIONS
    if not known:
        problems.append(f"{where}.Type must be one of {', '.join(CONNECTIONS)}, got {kind!r}")
        kind = "local"
    port = raw.get("Port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        problems.append(f"{where}.Port must be a port number (1-65535), got {port!r}")
        port = None
    conn = Connection(type=kind, user=r.name("User"), private_key_file=r.path_field("PrivateKeyFile"), port=port,
                      host_key_checking=r.boolean("HostKeyChecking", False), become=r.boolean("Become", False),
                      become_user=r.name("BecomeUser"))
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
        problems.append(f"{where} must be an object {{{', '.join(DRAIN_FIELDS)}}}, got {json_type(raw)}")
        return None
    r = _Reader(raw, where, problems)
    if strict:
        r.unknown(DRAIN_FIELDS)
    playbook = r.playbook("Playbook")
    extra = r.mapping("ExtraVars")
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
        problems.extend(f"{where}.{k} is not a field (known: Plugin, Properties)"
                        for k in sorted(set(raw) - {"Plugin", "Properties"}, key=str))
    if self_name and raw["Plugin"].partition("/")[0] == self_name:
        problems.append(f"{where}.Plugin {raw['Plugin']!r} is this flavor itself")
        return None
    return raw["Plugin"], raw.get("Properties")


def parse(obj: JSON, *, strict: bool = True, self_name: str = "") -> Properties:
    """Checked Properties, or ``ValidationError`` listing every problem by its field."""
    if not isinstance(obj, dict):
        raise ValidationError(f"Properties must be an object with at least Playbook, got {json_type(obj)}")
    problems: list[str] = []
    r = _Reader(obj, "Properties", problems)
    if strict:
        r.unknown(FIELDS)
    playbook = r.playbook("Playbook")
    extra = r.mapping("ExtraVars")
    connection = _connection(obj.get("Connection"), problems, strict)
    vault = r.path_field("VaultPasswordFile")
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
