"""The ``infrakit`` command: its parser, assembled from one module per command family, and ``main``.

Guarantee: errors reach the user as one readable line and a non-zero exit (2 for a usage
mistake, 1 for a plugin's refusal or an unreachable one), never a traceback (``--log-level
debug`` shows the traffic and the details). Limit: this module only assembles; it is the one
module of the package that imports the command modules, and none imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from infrakit_runtime import __version__, config, logs
from infrakit_runtime.cli import completion, flavor, group, instance, observe, plugin, selfhost
from infrakit_runtime.cli.common import UsageError
from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from infrakit_runtime.spi.common import PluginError, ValidationError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="infrakit",
        description="Declarative, self-healing infrastructure groups (InfraKit-compatible runtime).",
        epilog="Environment: INFRAKIT_HOME, INFRAKIT_PLUGINS_DIR, INFRAKIT_CLIENT_TIMEOUT, "
        "INFRAKIT_GROUP_POLL_INTERVAL, INFRAKIT_INSTANCE_FILE_DIR, INFRAKIT_CONFIG keep InfraKit's meaning; "
        "INFRAKIT_LOG_LEVEL and INFRAKIT_LOG_FORMAT set --log-level and --log-format; INFRAKIT_TOKEN_FILE names "
        "the bearer token file of TCP listeners and of the clients that call them.",
    )
    p.add_argument("--version", action="version", version=f"infrakit {__version__}")
    p.add_argument("--config", help="configuration file (default $INFRAKIT_CONFIG or $INFRAKIT_HOME/infrakit.yml)")
    p.add_argument("--log-level", choices=list(logs.LEVELS), help="log level (debug dumps RPC traffic)")
    p.add_argument("--log-format", choices=["text", "json"], help="log line format on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    plugin.register(sub)
    instance.register(sub)
    flavor.register(sub)
    group.register(sub)
    observe.register(sub)
    selfhost.register(sub)
    completion.register(sub, parser=p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
