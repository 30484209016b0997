"""What every ``infrakit`` command shares: the top-level options and how a command is run (its
errors turned into one line and an exit code), input files, output formats, and finding a plugin.

Guarantee: imports nothing of the CLI (every command module imports this one, never the
reverse), so the package has no import cycle; ``make lint`` keeps it so.
Limit: helpers only; each command family lives in a module of its own (``plugin``, ``up``,
``instance``, ``flavor``, ``group``, ``observe``, ``selfhost``, ``completion``), and ``app``
assembles them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from infrakit_runtime import __version__, config, logs
from infrakit_runtime.rpc import discovery
from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from infrakit_runtime.spi.common import PluginError, ValidationError

OUTPUTS = ("table", "json", "yaml")


def output_option(p: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-o json|yaml`` for scripts; ``top`` marks a command's own copy, which a subcommand's copy
    overrides only when given (SUPPRESS), so ``-o`` may come before or after the action."""
    p.add_argument("-o", "--output", choices=OUTPUTS, default="table" if top else argparse.SUPPRESS,
                   help="table for people (default), json or yaml for scripts")


# Shell completion asks the manager for these values (``infrakit group ls -q``); the attribute name
# is argcomplete's convention for per-argument completers.
GROUP_IDS = "group-ids"


def completes_group_ids(action: argparse.Action) -> argparse.Action:
    """Mark an argument whose value is a group ID, so ``infrakit completion`` offers the live ones."""
    setattr(action, "completer", GROUP_IDS)  # noqa: B010 -- argparse.Action declares no such attribute
    return action


class UsageError(Exception):
    """A mistake on the command line or in an input file."""


# --- the top level ----------------------------------------------------------------------------


def _global_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"infrakit {__version__}")
    p.add_argument("--config", help="configuration file (default $INFRAKIT_CONFIG or $INFRAKIT_HOME/infrakit.yml)")
    p.add_argument("--log-level", choices=list(logs.LEVELS), help="log level (debug dumps RPC traffic)")
    p.add_argument("--log-format", choices=["text", "json"], help="log line format on stderr")


def top_parser() -> tuple[argparse.ArgumentParser, Any]:
    """The ``infrakit`` parser with its top-level options, and the subparsers its commands register in."""
    p = argparse.ArgumentParser(
        prog="infrakit",
        description="Declarative, self-healing infrastructure groups (InfraKit-compatible runtime).",
        epilog="Environment: INFRAKIT_HOME, INFRAKIT_PLUGINS_DIR, INFRAKIT_CLIENT_TIMEOUT, "
        "INFRAKIT_GROUP_POLL_INTERVAL, INFRAKIT_INSTANCE_FILE_DIR, INFRAKIT_CONFIG keep InfraKit's meaning; "
        "INFRAKIT_LOG_LEVEL and INFRAKIT_LOG_FORMAT set --log-level and --log-format; INFRAKIT_TOKEN_FILE names "
        "the bearer token file of TCP listeners and of the clients that call them.",
    )
    _global_options(p)
    return p, p.add_subparsers(dest="command", metavar="COMMAND", required=True)


class _Unparsable(Exception):
    pass


class _Scanner(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # the full parser says what is wrong
        raise _Unparsable(message)


def command_of(argv: list[str] | None) -> str | None:
    """The command ``argv`` names (``up``, ``group``...), read with the top-level options only; None if unclear."""
    scanner = _Scanner(prog="infrakit", add_help=False)
    _global_options(scanner)
    scanner.add_argument("rest", nargs=argparse.REMAINDER)
    try:
        args, unknown = scanner.parse_known_args(sys.argv[1:] if argv is None else argv)
    except _Unparsable:
        return None
    if unknown:  # -h or a mistake before the command: the full parser answers
        return None
    return args.rest[0] if args.rest else None


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv``, load the configuration, set up logging and run the command.

    Errors reach the user as one readable line and a non-zero exit (2 for a usage mistake, 1 for
    a plugin's refusal or an unreachable one), never a traceback (``--log-level debug`` shows the
    traffic and the details).
    """
    args = parser.parse_args(argv)
    try:
        cfg = config.load(Path(args.config) if args.config else None, required=bool(args.config))
        if cfg.token_file is not None:
            # Read by every client of a TCP plugin and inherited by the daemons this command starts.
            os.environ["INFRAKIT_TOKEN_FILE"] = str(cfg.token_file)
        logs.setup(args.log_level or os.environ.get("INFRAKIT_LOG_LEVEL") or cfg.log_level,
                   args.log_format or os.environ.get("INFRAKIT_LOG_FORMAT") or cfg.log_format)
        return int(args.func(args, cfg) or 0)
    except (UsageError, ValidationError, ValueError) as e:
        print(f"infrakit: {e}", file=sys.stderr)
        return 2
    except RemoteError as e:
        print(f"infrakit: {e.plugin}: {e.message} (code {e.code})", file=sys.stderr)
        return 1
    except (UnreachableError, PluginError) as e:
        print(f"infrakit: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# --- supervising ------------------------------------------------------------------------------


def add_probe_options(p: argparse.ArgumentParser) -> None:
    """The liveness probe of ``plugin start`` and ``up``."""
    p.add_argument("--probe-interval", type=float, default=5.0, metavar="SECONDS",
                   help="handshake each daemon this often; a hung one is killed and restarted (0 disables)")
    p.add_argument("--probe-timeout", type=float, default=3.0, metavar="SECONDS", help="handshake answer deadline")
    p.add_argument("--probe-failures", type=int, default=3, metavar="N", help="missed handshakes before a restart")


def liveness(args: argparse.Namespace) -> Any:
    """The ``launcher.Liveness`` of the probe options, or None when disabled (imported here, when supervising)."""
    from infrakit_runtime.launcher import Liveness

    if args.probe_interval <= 0:
        return None
    return Liveness(interval=args.probe_interval, timeout=args.probe_timeout, failures=args.probe_failures)


# --- helpers ----------------------------------------------------------------------------------


def read_document(path: str) -> Any:
    """A YAML or JSON document from a file, or from stdin when ``path`` is ``-``."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UsageError(f"{path} is neither valid YAML nor JSON: {e}") from None


def parse_pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r} must be key=value")
        out[key] = value
    return out


def emit(obj: Any, fmt: str) -> None:
    if fmt == "yaml":
        sys.stdout.write(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False))
    else:
        sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def address_of(name: str, cfg: config.Config) -> tuple[discovery.Address, discovery.PluginName]:
    """Where the plugin ``name`` (``socket[/type]``) listens; a precise error when it is not there."""
    pn = discovery.PluginName.parse(name)
    address = discovery.resolve(pn, cfg.plugins_dir)
    if address.unix_path is not None and not address.unix_path.exists():
        raise UsageError(f"no plugin named {pn.socket} in {cfg.plugins_dir} (start it with: infrakit plugin start KIND:{pn.socket})")
    return address, pn


def client_for(name: str, cfg: config.Config) -> tuple[SyncClient, str]:
    address, pn = address_of(name, cfg)
    return SyncClient(address, name=pn.socket, timeout=cfg.client_timeout), pn.type


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)] if rows else [len(h) for h in headers]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in rows]
    return "\n".join(lines)
