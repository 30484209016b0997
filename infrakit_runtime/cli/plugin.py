"""``infrakit plugin run|start|stop|ls``: run, supervise, list and stop plugin daemons.

Guarantee: a daemon's options are checked before anything starts (a bad ``--tcp`` or token
file is a usage error naming the option). Limit: the supervising itself is ``launcher``'s; this
module only turns command lines into its calls (``infrakit up`` is ``up``'s).

Cost: every daemon runs through ``plugin run`` and carries what this module imports, so
``infrakit_runtime.cli.main`` runs the ``plugin`` commands without assembling the rest of the
CLI (``app``: rich and the other families, about 3 MiB of RSS), and ``launcher`` and ``ctypes``
are imported by the commands that use them, not here (about 1 MiB more)
(tests/runtime/cli/test_daemon_footprint.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
from typing import Any

import yaml

from infrakit_runtime import config
from infrakit_runtime.cli.common import (
    UsageError,
    add_probe_options,
    emit,
    liveness,
    output_option,
    parse_pairs,
    read_document,
    table,
)
from infrakit_runtime.daemon import KINDS, DaemonSpec, run_forever
from infrakit_runtime.rpc import discovery, tokens
from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.errors import RemoteError, UnreachableError


def register(sub: Any) -> None:
    """Add ``plugin`` to the top-level parser."""
    plugin = sub.add_parser("plugin", help="run, supervise, list and stop plugin daemons")
    psub = plugin.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = psub.add_parser("run", help="run daemons in the foreground, in this one process (for systemd)",
                          description=f"Run plugin daemons in the foreground. Kinds: {', '.join(sorted(KINDS))}. "
                          "Several daemons given together share this process (and its memory), each on its own socket.")
    run.add_argument("daemons", nargs="+", metavar="KIND[:NAME]")
    run.add_argument("-o", "--option", action="append", metavar="KEY=VALUE", help="a plugin option (repeatable)")
    run.add_argument("--options-file", metavar="FILE", help="YAML/JSON mapping of plugin options")
    run.add_argument("--tcp", metavar="HOST:PORT",
                     help="also listen on TCP: requires a bearer token (--token-file), and TLS off loopback")
    run.add_argument("--token-file", metavar="FILE",
                     help="file holding the bearer token of the TCP listener (mode 600 or 640; default "
                          "$INFRAKIT_TOKEN_FILE or the config file's token_file); also sent by this daemon's clients")
    run.add_argument("--tls-cert", metavar="FILE", help="certificate (PEM) of the TCP listener")
    run.add_argument("--tls-key", metavar="FILE", help="private key (PEM) of the TCP listener")
    run.set_defaults(func=cmd_plugin_run)
    start = psub.add_parser("start", help="run daemons as supervised children in the foreground",
                            description="Start each daemon as a child, restart any that dies (with backoff), "
                            "and stop them all on SIGTERM/SIGINT.")
    start.add_argument("daemons", nargs="+", metavar="KIND[:NAME]")
    add_probe_options(start)
    start.set_defaults(func=cmd_plugin_start)
    stop = psub.add_parser("stop", help="stop running daemons by name")
    stop.add_argument("names", nargs="*", metavar="NAME")
    stop.add_argument("--all", action="store_true", help="stop every daemon in the plugin directory")
    stop.set_defaults(func=cmd_plugin_stop)
    ls = psub.add_parser("ls", help="list plugins: name, interfaces, socket")
    output_option(ls, top=True)
    ls.set_defaults(func=cmd_plugin_ls)



def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if getattr(args, "options_file", None):
        doc = read_document(args.options_file)
        if not isinstance(doc, dict):
            raise UsageError(f"{args.options_file} must hold a mapping of options")
        options.update(doc)
    for key, value in parse_pairs(getattr(args, "option", None), "--option").items():
        options[key] = yaml.safe_load(value) if value else value
    return options


def cmd_plugin_run(args: argparse.Namespace, cfg: config.Config) -> int:
    specs = []
    for text in args.daemons:
        spec = DaemonSpec.parse(text)
        options = effective_options(spec, cfg)
        if len(args.daemons) == 1:
            options = {**options, **_options(args)}
        specs.append(DaemonSpec(spec.kind, spec.name, options))
    if len(specs) > 1 and (args.option or args.options_file):
        raise UsageError("-o/--options-file apply to a single daemon; give several daemons their options in the config file")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"two daemons would share a socket name: {', '.join(names)}")
    tcp, token, ssl_context = _tcp_listener(args)
    if os.environ.get("INFRAKIT_PARENT_DEATHSIG"):
        _die_with_parent()
    asyncio.run(run_forever(specs, plugins_dir=cfg.plugins_dir, home=cfg.home, tcp=tcp, token=token,
                            ssl_context=ssl_context))
    return 0


def _tcp_listener(args: argparse.Namespace) -> tuple[tuple[str, int] | None, str | None, Any]:
    """``--tcp`` with its bearer token (always) and TLS (required off loopback), checked before anything starts.

    ``--token-file FILE`` stands for ``INFRAKIT_TOKEN_FILE=FILE``: the daemon's own clients (a
    manager's forwarding, calls to plugins found through ``.listen`` files) send the same token.
    """
    if args.token_file:
        os.environ[tokens.ENV] = args.token_file
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not args.tcp:
        if args.tls_cert:
            raise UsageError("--tls-cert/--tls-key configure the --tcp listener; add --tcp HOST:PORT")
        return None, None, None
    host, _, port = args.tcp.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--tcp {args.tcp!r} is not HOST:PORT")
    token = tokens.from_environment()
    if token is None:
        raise UsageError(f"--tcp {args.tcp} requires a bearer token, loopback included (any local user can reach "
                         f"loopback): {tokens.HOW}")
    ssl_context = None
    if args.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise UsageError(f"--tls-cert/--tls-key: cannot load {args.tls_cert} / {args.tls_key}: {e}") from None
    return (host or "127.0.0.1", int(port)), token, ssl_context


def effective_options(spec: DaemonSpec, cfg: config.Config) -> dict[str, Any]:
    """A daemon's options from the config file: its ``plugins`` entry, and for the manager the
    file's top-level ``poll_interval`` and ``manager`` section as defaults under it."""
    configured = cfg.daemon(spec.name)
    options = dict(configured.options) if configured and configured.kind == spec.kind else {}
    if spec.kind == "manager":
        options = {**cfg.manager, "poll_interval": cfg.poll_interval, **options}
    return options


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM us when the supervising parent dies (Linux only)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:
        raise SystemExit(0)


def cmd_plugin_start(args: argparse.Namespace, cfg: config.Config) -> int:
    from infrakit_runtime.launcher import supervise

    specs = [DaemonSpec.parse(d) for d in args.daemons]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"two daemons would share a socket name: {', '.join(names)}")
    os.environ["INFRAKIT_PARENT_DEATHSIG"] = "1"
    asyncio.run(supervise(specs, plugins_dir=cfg.plugins_dir, liveness=liveness(args)))
    return 0


def cmd_plugin_stop(args: argparse.Namespace, cfg: config.Config) -> int:
    from infrakit_runtime.launcher import process_mates, stop_plugin, stop_supervisors

    names = list(args.names)
    if args.all:
        # Supervisors first, so they do not restart what is being stopped; they stop their children.
        supervised = sorted(p.name[: -len(".pid")] for p in cfg.plugins_dir.glob("*.pid") if not p.name.startswith("infrakit-"))
        if stop_supervisors(cfg.plugins_dir):
            for n in supervised:
                print(f"stopped {n}")
        names = sorted(p.name[: -len(".pid")] for p in cfg.plugins_dir.glob("*.pid") if not p.name.startswith("infrakit-"))
        if not names:
            return 0
    if not names:
        raise UsageError("name the plugins to stop, or pass --all")
    for n in names:
        alone = [m for m in process_mates(cfg.plugins_dir, n) if m not in names]
        if alone:
            raise UsageError(f"{n} shares its process with {', '.join(alone)}: a daemon of a shared process cannot be "
                             f"stopped alone; stop them together (infrakit plugin stop {' '.join(sorted([n, *alone]))}), "
                             f"or give {n} a process of its own ('process: own' in its plugins entry, or "
                             "'processes: separate')")
    stopped: list[str] = []
    missing: list[str] = []
    for n in names:
        if n in stopped:
            continue  # its process, shared with a daemon named before, is stopped already
        mates = process_mates(cfg.plugins_dir, n)
        if stop_plugin(cfg.plugins_dir, n):
            stopped += [n, *mates]
        else:
            missing.append(n)
    for n in names:
        if n in stopped:
            print(f"stopped {n}")
    if missing and not args.all:
        print(f"not running: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def cmd_plugin_ls(args: argparse.Namespace, cfg: config.Config) -> int:
    rows = []
    for name, address in discovery.list_plugins(cfg.plugins_dir).items():
        client = SyncClient(address, name=name, timeout=min(cfg.client_timeout, 3.0))
        try:
            interfaces = ", ".join(sorted(client.hello()))
        except (UnreachableError, RemoteError) as e:
            interfaces = f"(not answering: {e})"
        finally:
            client.close()
        rows.append({"name": name, "interfaces": interfaces, "address": str(address)})
    if args.output != "table":
        emit(rows, args.output)
    elif rows:
        print(table([[r["name"], r["interfaces"], r["address"]] for r in rows], ["NAME", "INTERFACES", "SOCKET"]))
    else:
        print(f"no plugins in {cfg.plugins_dir}")
    return 0
