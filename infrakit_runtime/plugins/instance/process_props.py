"""Process instance properties: every problem in a spec is reported at once, before anything starts.

Validation checks types, names, that ``Dir`` exists and ``User``/``Group`` resolve *now*,
and that every argument and variable fits what Linux lets a process start with
(``process_limits``); it cannot promise the directory or the user still exist, or that
the command can be executed, when an instance is provisioned later (Provision re-checks
and fails with its own error).
"""

from __future__ import annotations

import dataclasses
import grp
import json
import os
import pwd
import re

from infrakit_runtime.plugins.instance import process_limits
from infrakit_runtime.plugins.instance.process_os import Identity, can_switch_user
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import JSON, ValidationError, json_type

KNOWN_KEYS = ("Command", "Dir", "Env", "Group", "Port", "User")
INSTANCE_ID = re.compile(r"^process-[0-9a-f]{16}$")
MAX_ID = 2**32 - 2  # (uid_t) -1 means "unchanged" to the kernel

# Variables the plugin sets for every instance; a spec may not override them. The owner marker
# (the plugin's state directory) and the tags let a daemon that lost its records find them again.
ENV_INSTANCE_ID = "INFRAKIT_INSTANCE_ID"
ENV_LOGICAL_ID = "INFRAKIT_LOGICAL_ID"
ENV_PORT = "INFRAKIT_PORT"
ENV_PLAIN_PORT = "PORT"
ENV_GROUP = "INFRAKIT_GROUP"
ENV_OWNER = "INFRAKIT_INSTANCE_OWNER"
ENV_TAGS = "INFRAKIT_INSTANCE_TAGS"
RESERVED_ENV = (ENV_INSTANCE_ID, ENV_LOGICAL_ID, ENV_PORT, ENV_GROUP, ENV_OWNER, ENV_TAGS)
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
    user: str | int | None = None  # as given: a name or a numeric uid
    group: str | int | None = None


def _check_command(raw: JSON, problems: list[str]) -> tuple[str, ...] | str | None:
    if raw is None:
        problems.append("Command is required: a list of strings (argv) or a string run with /bin/sh -c")
        return None
    if isinstance(raw, str):
        if not raw.strip():
            problems.append("Command must not be an empty string")
        elif "\0" in raw:
            problems.append("Command must not contain a NUL character")
        elif too_big := process_limits.string_problem("Command (the /bin/sh -c script)", raw):
            problems.append(too_big)
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
        elif too_big := process_limits.string_problem(f"Command[{i}]", arg):
            problems.append(too_big)
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
        if too_big := process_limits.string_problem(f"Env.{name}", f"{name}={value}"):
            problems.append(too_big)
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


def _check_id(field: str, raw: JSON, problems: list[str]) -> str | int | None:
    """A user or group as given: a name, or a numeric ID (a number, or a string of digits)."""
    kind = "uid" if field == "User" else "gid"
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        problems.append(f"{field} must be a {field.lower()} name or a numeric {kind}, got {json_type(raw)}")
        return None
    if isinstance(raw, str):
        if not raw:
            problems.append(f"{field} must not be empty")
            return None
        if "\0" in raw:
            problems.append(f"{field} must not contain a NUL character")
            return None
        if not (raw.isascii() and raw.isdigit()):
            return raw
        if len(raw) > 10:
            problems.append(f"{field} {raw[:20]} is not a valid {kind} (0 to {MAX_ID})")
            return None
        raw = int(raw)
    if not 0 <= raw <= MAX_ID:
        problems.append(f"{field} {raw} is not a valid {kind} (0 to {MAX_ID})")
        return None
    return raw


def _lookup_user(user: str | int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
    except (KeyError, ValueError, OverflowError):
        return None


def _lookup_group(group: str | int) -> int | None:
    if isinstance(group, int):
        return group  # a numeric gid needs no group entry
    try:
        return grp.getgrnam(group).gr_gid
    except (KeyError, ValueError):
        return None


def resolve_identity(user: str | int | None, group: str | int | None, *,
                     group_given: bool = False) -> tuple[Identity | None, list[str]]:
    """Who the instance runs as (None: the daemon's own user), and the problems naming User or Group.

    A named user brings its primary group and its supplementary groups (like ``runuser``);
    an explicit Group replaces them all. A numeric uid without a passwd entry is allowed,
    with a Group. Switching needs root (or CAP_SETUID and CAP_SETGID).
    """
    if user is None and group is None:
        return None, []
    problems: list[str] = []
    uid, gid, groups = os.geteuid(), os.getegid(), None
    if user is not None:
        entry = _lookup_user(user)
        if entry is not None:
            uid, gid = entry.pw_uid, entry.pw_gid
            groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        elif isinstance(user, int):
            uid = user
            if group is None and not group_given:
                problems.append(f"User {user} has no passwd entry: give Group too (its primary group is unknown)")
        else:
            problems.append(f"User {user!r} is not a user on this host (no passwd entry)")
    if group is not None:
        found = _lookup_group(group)
        if found is None:
            problems.append(f"Group {group!r} is not a group on this host (no group entry)")
        else:
            gid, groups = found, (found,)
    if not problems and (uid, gid) != (os.geteuid(), os.getegid()) and not can_switch_user():
        problems.append(f"{'User' if user is not None else 'Group'}: this daemon runs as uid {os.geteuid()} "
                        "without root (or CAP_SETUID and CAP_SETGID), so it cannot start processes as another user")
    if problems:
        return None, problems
    return Identity(uid=uid, gid=gid, groups=groups if groups is not None else (gid,)), []


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
    user = _check_id("User", raw.get("User"), problems)
    group = _check_id("Group", raw.get("Group"), problems)
    if user is not None or group is not None:
        problems.extend(resolve_identity(user, group, group_given=raw.get("Group") is not None)[1])
    if problems:
        raise ValidationError(problems)
    assert command is not None
    return Properties(command=command, env=env, dir=directory, port=port, user=user, group=group)


def identity(props: Properties) -> Identity | None:
    """Resolve ``User``/``Group`` again (at Provision: the user may have gone since Validate)."""
    found, problems = resolve_identity(props.user, props.group)
    if problems:
        raise ValidationError(problems)
    return found


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


def user_variables(props: Properties) -> dict[str, str]:
    """HOME, USER and LOGNAME of a named ``User`` (the daemon's own would point at root's home)."""
    entry = _lookup_user(props.user) if props.user is not None else None
    if entry is None:
        return {}
    return {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}


def environment(props: Properties, *, base: dict[str, str], instance_id: str, spec: instance.Spec,
                port: int | None, owner: str = "") -> dict[str, str]:
    """The instance's environment: ``base`` (the daemon's), the user's HOME/USER/LOGNAME, ``Env``, the plugin's.

    The plugin's variables include the owner marker and the tags the instance starts with,
    which every process it starts inherits: how a daemon finds them without its records.
    """
    env = {k: v for k, v in base.items() if k not in RESERVED_ENV and k != ENV_PLAIN_PORT}
    env.update(user_variables(props))
    env.update(props.env)
    env[ENV_INSTANCE_ID] = instance_id
    if owner:
        env[ENV_OWNER] = owner
        env[ENV_TAGS] = json.dumps(dict(spec.tags), sort_keys=True, separators=(",", ":"))
    env[ENV_LOGICAL_ID] = spec.logical_id or ""
    group = spec.tags.get(instance.TAG_GROUP)
    if group is not None:
        env[ENV_GROUP] = group
    if port is not None:
        env[ENV_PORT] = env[ENV_PLAIN_PORT] = str(port)
    return env



def launch(props: Properties, *, base: dict[str, str], instance_id: str, spec: instance.Spec, port: int | None,
           owner: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment to start, once checked against what Linux lets a process start with.

    Raises ``ValidationError`` naming the largest fields when they do not fit (``process_limits``).
    """
    env = environment(props, base=base, instance_id=instance_id, spec=spec, port=port, owner=owner)
    args = argv(props, spec.init, env)
    sizes = {f"Env.{k}": len(os.fsencode(f"{k}={v}")) + 1 for k, v in props.env.items()}
    sizes["Command"] = sum(len(os.fsencode(a)) + 1 for a in args)
    process_limits.check_total(args, env, fields=sizes)
    return args, env
