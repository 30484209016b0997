"""The runtime's configuration file (``infrakit.yml``), strictly validated.

Environment variables keep InfraKit's meaning and win over the file, so an
InfraKit user's scripts keep working: ``INFRAKIT_HOME``, ``INFRAKIT_PLUGINS_DIR``,
``INFRAKIT_CLIENT_TIMEOUT``, ``INFRAKIT_GROUP_POLL_INTERVAL``; ours too: ``INFRAKIT_TOKEN_FILE``
(the file's ``token_file``: the bearer token of TCP listeners and their clients). The file is found
at ``--config``, ``$INFRAKIT_CONFIG``, or ``$INFRAKIT_HOME/infrakit.yml``.

``processes`` says how ``infrakit up`` runs the ``plugins``: ``one`` (the default) serves them
all from one process, each on its own socket, paying for one Python runtime; ``separate`` gives
each its own process, so that one can die or be stopped alone. A plugin entry's ``process: own``
takes that one daemon out of the shared process.

Every problem in the file is reported at once, by path, before anything starts.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from infrakit_runtime.daemon import KINDS, DaemonSpec
from infrakit_runtime.durations import parse_duration
from infrakit_runtime.logs import LEVELS
from infrakit_runtime.rpc import discovery
from infrakit_runtime.spi.common import ValidationError, json_type

TOP_KEYS = {"home", "plugins_dir", "client_timeout", "log_level", "log_format", "poll_interval", "plugins", "manager",
            "token_file", "processes"}
# How ``infrakit up`` runs the configured daemons (see the module docstring).
PROCESSES = ("one", "separate")


@dataclasses.dataclass(frozen=True)
class Config:
    home: Path
    plugins_dir: Path
    client_timeout: float = 30.0
    log_level: str = "info"
    log_format: str = "text"
    poll_interval: float = 5.0
    plugins: tuple[DaemonSpec, ...] = ()
    manager: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The bearer token file of every TCP listener and of the clients that call one.
    token_file: Path | None = None
    source: Path | None = None
    processes: str = "one"
    # Daemons whose entry says ``process: own``: never in the shared process.
    own_process: frozenset[str] = frozenset()

    def daemon(self, name: str) -> DaemonSpec | None:
        return next((p for p in self.plugins if p.name == name), None)

    def daemon_processes(self, processes: str | None = None) -> list[tuple[DaemonSpec, ...]]:
        """The configured daemons as ``infrakit up`` runs them: one tuple per process, in config order.

        ``processes`` (``one`` or ``separate``) overrides the file's setting.
        """
        mode = processes or self.processes
        if mode == "separate":
            return [(p,) for p in self.plugins]
        shared = tuple(p for p in self.plugins if p.name not in self.own_process)
        own = [(p,) for p in self.plugins if p.name in self.own_process]
        return ([shared] if shared else []) + own


def default_path() -> Path:
    explicit = os.environ.get("INFRAKIT_CONFIG")
    return Path(explicit) if explicit else discovery.infrakit_home() / "infrakit.yml"


def load(path: Path | None = None, *, required: bool = False) -> Config:
    """Read and validate the config file; a missing optional file gives the defaults."""
    path = path or default_path()
    raw: Any = {}
    source: Path | None = None
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise ValidationError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ValidationError(f"cannot read config file {path}: {e.strerror}") from None
    else:
        source = path
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ValidationError(f"config file {path} is not valid YAML: {e}") from None
    return parse(raw, source=source)


def _duration(value: Any, where: str, problems: list[str], default: float) -> float:
    if value is None:
        return default
    if not isinstance(value, (str, int, float)):
        problems.append(f"{where}: {value!r} is not a duration (e.g. 5s, 500ms)")
        return default
    try:
        return parse_duration(value)
    except (ValueError, TypeError):
        problems.append(f"{where}: {value!r} is not a duration (e.g. 5s, 500ms)")
        return default


def _is_path(value: Any) -> bool:
    """A string usable as a file name: no NUL, encodable for the file system."""
    if not isinstance(value, str) or "\0" in value:
        return False
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        return False
    return True


def _path_or_none(value: Any) -> str | None:
    return value if _is_path(value) else None


def parse(raw: Any, *, source: Path | None = None) -> Config:
    """Validate a decoded config document; raise ``ValidationError`` listing every problem."""
    where = str(source) if source else "config"
    if not isinstance(raw, dict):
        raise ValidationError(f"{where}: the top level must be a mapping, got {json_type(raw)}")
    problems: list[str] = []
    # YAML keys need not be strings: sort by text so that mixed keys cannot raise.
    for key in sorted(set(raw) - TOP_KEYS, key=str):
        problems.append(f"{where}: unknown key {key!r} (known: {', '.join(sorted(TOP_KEYS))})")

    for key in ("home", "plugins_dir"):
        if raw.get(key) is not None and not _is_path(raw[key]):
            problems.append(f"{where}: {key} must be a directory path, got {raw[key]!r}")
    if raw.get("token_file") is not None and not (_is_path(raw["token_file"]) and raw["token_file"]):
        problems.append(f"{where}: token_file must be a file path, got {json_type(raw['token_file'])}")
    token_file = os.environ.get("INFRAKIT_TOKEN_FILE") or _path_or_none(raw.get("token_file"))
    home = Path(os.environ.get("INFRAKIT_HOME") or _path_or_none(raw.get("home")) or discovery.infrakit_home())
    plugins_dir = Path(os.environ.get("INFRAKIT_PLUGINS_DIR") or _path_or_none(raw.get("plugins_dir")) or home / "plugins")
    timeout = _duration(os.environ.get("INFRAKIT_CLIENT_TIMEOUT") or raw.get("client_timeout"), f"{where}: client_timeout", problems, 30.0)
    poll = _duration(os.environ.get("INFRAKIT_GROUP_POLL_INTERVAL") or raw.get("poll_interval"), f"{where}: poll_interval", problems, 5.0)
    if poll <= 0:
        problems.append(f"{where}: poll_interval must be positive")
    level = raw.get("log_level", "info")
    if not isinstance(level, str) or level not in LEVELS:
        problems.append(f"{where}: log_level {level!r} is not one of {', '.join(LEVELS)}")
    fmt = raw.get("log_format", "text")
    if fmt not in ("text", "json"):
        problems.append(f"{where}: log_format {fmt!r} is not text or json")

    specs: list[DaemonSpec] = []
    plugins = raw.get("plugins") or []
    if not isinstance(plugins, list):
        problems.append(f"{where}: plugins must be a list, got {json_type(plugins)}")
        plugins = []
    names: set[str] = set()
    own: set[str] = set()
    for i, entry in enumerate(plugins):
        at = f"{where}: plugins[{i}]"
        if isinstance(entry, str):
            entry = {"kind": entry}
        if not isinstance(entry, dict):
            problems.append(f"{at} must be a kind name or a mapping, got {json_type(entry)}")
            continue
        unknown = set(entry) - {"kind", "name", "options", "process"}
        if unknown:
            problems.append(f"{at}: unknown keys {', '.join(sorted(map(str, unknown)))} "
                            "(known: kind, name, options, process)")
        if entry.get("process", "shared") not in ("own", "shared"):
            problems.append(f"{at}.process: {entry['process']!r} is not own or shared")
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            problems.append(f"{at}.kind: {kind!r} is not one of {', '.join(sorted(KINDS))}")
            continue
        options = entry.get("options") or {}
        if not isinstance(options, dict):
            problems.append(f"{at}.options must be a mapping, got {json_type(options)}")
            continue
        name = entry.get("name")
        if name is not None and not _is_path(name):
            problems.append(f"{at}.name must be a socket name, got {name!r}")
            continue
        try:
            spec = DaemonSpec.parse(f"{kind}:{entry['name']}" if entry.get("name") else kind, options)
        except (ValidationError, ValueError) as e:
            problems.append(f"{at}: {e}")
            continue
        if spec.name in names:
            problems.append(f"{at}: a second plugin is named {spec.name!r}")
        names.add(spec.name)
        specs.append(spec)
        if entry.get("process") == "own":
            own.add(spec.name)
    manager = raw.get("manager") or {}
    if not isinstance(manager, dict):
        problems.append(f"{where}: manager must be a mapping, got {json_type(manager)}")
        manager = {}
    processes = raw.get("processes", "one")
    if processes not in PROCESSES:
        problems.append(f"{where}: processes {processes!r} is not one of {', '.join(PROCESSES)}")
    if problems:
        raise ValidationError(problems)
    return Config(home=home, plugins_dir=plugins_dir, client_timeout=timeout, log_level=level, log_format=fmt,
                  poll_interval=poll, plugins=tuple(specs), manager=dict(manager),
                  token_file=Path(token_file) if token_file else None, source=source,
                  processes=processes, own_process=frozenset(own))
