"""Process instance properties: every problem in a spec is reported at once, before anything starts.

Validation checks types, names and that ``Dir`` exists *now*; it cannot promise
the directory still exists, or that the command can be executed, when an
instance is provisioned later (Provision re-checks and fails with its own error).
"""

from __future__ import annotations

import re

import dataclasses
import os

from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import JSON, ValidationError, json_type

KNOWN_KEYS = ("Command", "Dir", "Env", "Port")

# Variables the plugin sets for every instance; a spec may not override them.
ENV_INSTANCE_ID = "INFRAKIT_INSTANCE_ID"
ENV_LOGICAL_ID = "INFRAKIT_LOGICAL_ID"
ENV_PORT = "INFRAKIT_PORT"
ENV_PLAIN_PORT = "PORT"
ENV_GROUP = "INFRAKIT_GROUP"
RESERVED_ENV = (ENV_INSTANCE_ID, ENV_LOGICAL_ID, ENV_PORT, ENV_GROUP)
# The variables an argv Command may name with $NAME (filled in by the plugin, see ``expand``).
PLUGIN_VARIABLES = frozenset((*RESERVED_ENV, ENV_PLAIN_PORT))


@dataclasses.dataclass(frozen=True)
class Properties:
    """A validated ``Instance.Properties`` for the process plugin.

    ``command`` is an argv list, or a string for ``/bin/sh -c``.
    """

    command: tuple[str, ...] | str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    dir: str | None = None
    port: bool = True


def _check_command(raw: JSON, problems: list[str]) -> tuple[str, ...] | str | None:
    if raw is None:
        problems.append("Command is required: a list of strings (argv) or a string run with /bin/sh -c")
        return None
    if isinstance(raw, str):
        if not raw.strip():
            problems.append("Command must not be an empty string")
        elif "\0" in raw:
            problems.append("Command must not contain a NUL character")
        return raw
    if not isinstance(raw, list):
        problems.append(f"Command must be a list of strings or a string, got {json_type(raw)}")
        return None
    if not raw:
        problems.append("Command must not be an empty list")
        return None
    ok = True
    for i, arg in enumerate(raw):
        if not isinstance(arg, str):
            problems.append(f"Command[{i}] must be a string, got {json_type(arg)}")
            ok = False
        elif "\0" in arg:
            problems.append(f"Command[{i}] must not contain a NUL character")
            ok = False
    if ok and not raw[0]:
        problems.append("Command[0] (the program) must not be empty")
    return tuple(raw) if ok else None


def _check_env(raw: JSON, port: bool, problems: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"Env must be an object mapping names to strings, got {json_type(raw)}")
        return {}
    env: dict[str, str] = {}
    for name, value in raw.items():
        if not name or "=" in name or "\0" in name:
            problems.append(f"Env name {name!r} is not a valid variable name (empty, or contains '=' or NUL)")
            continue
        if name in RESERVED_ENV or (port and name == ENV_PLAIN_PORT):
            problems.append(f"Env.{name} is set by the plugin for every instance and cannot be overridden")
            continue
        if not isinstance(value, str):
            problems.append(f"Env.{name} must be a string, got {json_type(value)}")
            continue
        if "\0" in value:
            problems.append(f"Env.{name} must not contain a NUL character")
            continue
        env[name] = value
    return env


def _check_dir(raw: JSON, problems: list[str]) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        problems.append(f"Dir must be a string (an absolute path), got {json_type(raw)}")
        return None
    if not os.path.isabs(raw):
        problems.append(f"Dir {raw!r} must be an absolute path (instances outlive the daemon and its cwd)")
    elif not os.path.isdir(raw):
        problems.append(f"Dir {raw!r} does not exist or is not a directory")
    return raw


def parse(raw: JSON) -> Properties:
    """Validated properties; raise ``ValidationError`` listing every problem found."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValidationError(f"Properties must be an object, got {json_type(raw)}")
    problems: list[str] = []
    unknown = sorted(k for k in raw if k not in KNOWN_KEYS)
    if unknown:
        problems.append(
            f"unknown propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
            f"known properties: {', '.join(KNOWN_KEYS)}"
        )
    port_raw = raw.get("Port", True)
    port = True
    if port_raw is None:
        port = True
    elif isinstance(port_raw, bool):
        port = port_raw
    else:
        problems.append(f"Port must be true or false, got {json_type(port_raw)}")
    command = _check_command(raw.get("Command"), problems)
    env = _check_env(raw.get("Env"), port, problems)
    directory = _check_dir(raw.get("Dir"), problems)
    if problems:
        raise ValidationError(problems)
    assert command is not None
    return Properties(command=command, env=env, dir=directory, port=port)


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand(arg: str, env: dict[str, str]) -> str:
    """The plugin's own variables (``$PORT``, ``${INFRAKIT_INSTANCE_ID}``...) filled in.

    So an argv command can name its port (``["python3", "-m", "http.server", "$PORT"]``)
    without a shell. Only the variables this plugin sets are touched, with exactly the value
    a shell would give them: ``$$``, ``$HOME`` and any other ``$`` text pass through
    unchanged, so a ``["sh", "-c", "..."]`` script still means what it says.
    """
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in PLUGIN_VARIABLES and name in env:
            return env[name]
        return m.group(0)

    return _VARIABLE.sub(one, arg)


def argv(props: Properties, init: str, env: dict[str, str] | None = None) -> list[str]:
    """The argv to exec: the command itself, or ``/bin/sh -c`` running ``init`` first in the same shell.

    Init and command share one shell so that what Init exports reaches the
    command; an argv command is passed as ``"$@"`` so it needs no quoting. Its
    arguments have ``$NAME`` expanded from the instance's environment (``env``).
    """
    if isinstance(props.command, str):
        script = f"{init}\n{props.command}" if init.strip() else props.command
        return ["/bin/sh", "-c", script]
    command = [expand(a, env) for a in props.command] if env is not None else list(props.command)
    if init.strip():
        return ["/bin/sh", "-c", f'{init}\nexec "$@"', "sh", *command]
    return command


def environment(props: Properties, *, base: dict[str, str], instance_id: str, spec: instance.Spec,
                port: int | None) -> dict[str, str]:
    """The instance's environment: ``base`` (the daemon's), then ``Env``, then the plugin's variables."""
    env = {k: v for k, v in base.items() if k not in RESERVED_ENV and k != ENV_PLAIN_PORT}
    env.update(props.env)
    env[ENV_INSTANCE_ID] = instance_id
    env[ENV_LOGICAL_ID] = spec.logical_id or ""
    group = spec.tags.get(instance.TAG_GROUP)
    if group is not None:
        env[ENV_GROUP] = group
    if port is not None:
        env[ENV_PORT] = env[ENV_PLAIN_PORT] = str(port)
    return env

