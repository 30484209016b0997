"""The ``infrakit`` command: run and supervise plugin daemons, and talk to them.

Errors reach the user as one readable line and a non-zero exit, never a
traceback (``--log-level debug`` shows the traffic and the details).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from infrakit_runtime import __version__, config, logs
from infrakit_runtime.daemon import KINDS, DaemonSpec
from infrakit_runtime.rpc import discovery
from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from infrakit_runtime.spi.common import PluginError, ValidationError

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A mistake on the command line or in an input file."""


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


def client_for(name: str, cfg: config.Config) -> tuple[SyncClient, str]:
    pn = discovery.PluginName.parse(name)
    address = discovery.resolve(pn, cfg.plugins_dir)
    if address.unix_path is not None and not address.unix_path.exists():
        raise UsageError(f"no plugin named {pn.socket} in {cfg.plugins_dir} (start it with: infrakit plugin start KIND:{pn.socket})")
    return SyncClient(address, name=pn.socket, timeout=cfg.client_timeout), pn.type


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)] if rows else [len(h) for h in headers]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip() for r in rows]
    return "\n".join(lines)


# --- plugin ----------------------------------------------------------------------------------


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
    from infrakit_runtime.daemon import run_forever

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
    import ssl

    from infrakit_runtime.rpc import tokens

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
    import signal

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
    asyncio.run(supervise(specs, plugins_dir=cfg.plugins_dir, liveness=_liveness(args)))
    return 0


def _liveness(args: argparse.Namespace) -> Any:
    from infrakit_runtime.launcher import Liveness

    if args.probe_interval <= 0:
        return None
    return Liveness(interval=args.probe_interval, timeout=args.probe_timeout, failures=args.probe_failures)


def _add_probe_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probe-interval", type=float, default=5.0, metavar="SECONDS",
                   help="handshake each daemon this often; a hung one is killed and restarted (0 disables)")
    p.add_argument("--probe-timeout", type=float, default=3.0, metavar="SECONDS", help="handshake answer deadline")
    p.add_argument("--probe-failures", type=int, default=3, metavar="N", help="missed handshakes before a restart")


def cmd_up(args: argparse.Namespace, cfg: config.Config) -> int:
    from infrakit_runtime import keeper
    from infrakit_runtime.launcher import UP_STOPPED, LockHeld, supervise, up_lock

    if not cfg.plugins:
        raise UsageError(f"no plugins configured in {cfg.source or config.default_path()}; add a 'plugins' list")
    if args.config:
        os.environ["INFRAKIT_CONFIG"] = str(Path(args.config).resolve())
    if args.detach or args.keeper:
        if args.detach:
            _detach(args.log_file or str(cfg.home / "infrakit-up.log"))
        probe = ["--probe-interval", str(args.probe_interval), "--probe-timeout", str(args.probe_timeout),
                 "--probe-failures", str(args.probe_failures)]
        argv = keeper.supervisor_argv(config=args.config, log_level=args.log_level, log_format=args.log_format,
                                      probe=probe)
        return keeper.keep(argv, plugins_dir=cfg.plugins_dir)
    os.environ["INFRAKIT_PARENT_DEATHSIG"] = "1"
    lock = up_lock(cfg.plugins_dir)
    try:
        lock.acquire()
    except LockHeld as e:
        raise UsageError(f"{e}; stop it first (kill {e.pid})" if e.pid else str(e)) from None
    try:
        asyncio.run(supervise(list(cfg.plugins), plugins_dir=cfg.plugins_dir, liveness=_liveness(args),
                              stopped_marker=cfg.plugins_dir / UP_STOPPED))
    finally:
        lock.release()
    return 0


def _detach(log_file: str) -> None:
    """Classic double fork: the supervisor outlives the shell (or Ansible task) that started it."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    logs.setup(logging.getLevelName(logging.getLogger().level).lower())


def cmd_plugin_stop(args: argparse.Namespace, cfg: config.Config) -> int:
    from infrakit_runtime.launcher import stop_plugin, stop_supervisors

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
    missing = [n for n in names if not stop_plugin(cfg.plugins_dir, n)]
    for n in names:
        if n not in missing:
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


# --- instance / flavor -------------------------------------------------------------------------


def cmd_instance(args: argparse.Namespace, cfg: config.Config) -> int:
    client, type_ = client_for(args.plugin, cfg)
    base = {"Type": type_}
    if args.action == "describe":
        tags = parse_pairs(args.tags, "--tags")
        result = client.call("Instance.DescribeInstances", {**base, "Tags": tags, "Properties": args.properties})
        descriptions = result.get("Descriptions") or []
        if args.output != "table":
            emit(descriptions, args.output)
        else:
            rows = [[d["ID"], d.get("LogicalID") or "-", ",".join(f"{k}={v}" for k, v in sorted((d.get("Tags") or {}).items()))] for d in descriptions]
            print(table(rows, ["ID", "LOGICAL", "TAGS"]))
    elif args.action == "provision":
        spec = read_document(args.file)
        result = client.call("Instance.Provision", {**base, "Spec": spec})
        print(result.get("ID"))
    elif args.action == "validate":
        props = read_document(args.file)
        client.call("Instance.Validate", {**base, "Properties": props})
        print("valid")
    elif args.action == "destroy":
        for instance_id in args.ids:
            client.call("Instance.Destroy", {**base, "Instance": instance_id, "Context": {"Reason": "terminate"}})
            print(f"destroyed {instance_id}")
    elif args.action == "label":
        client.call("Instance.Label", {**base, "Instance": args.id, "Labels": parse_pairs(args.labels, "label")})
        print(f"labelled {args.id}")
    return 0


def cmd_flavor(args: argparse.Namespace, cfg: config.Config) -> int:
    client, type_ = client_for(args.plugin, cfg)
    props = read_document(args.properties) if args.properties else None
    allocation = {"Size": args.size, "LogicalIDs": args.logical_ids.split(",") if args.logical_ids else None}
    base = {"Type": type_, "Properties": props}
    if args.action == "validate":
        client.call("Flavor.Validate", {**base, "Allocation": allocation})
        print("valid")
    elif args.action == "prepare":
        spec = read_document(args.spec) if args.spec else {}
        result = client.call("Flavor.Prepare", {**base, "Spec": spec, "Allocation": allocation,
                                                "Index": {"Group": args.group or "", "Sequence": args.sequence}})
        emit(result.get("Spec"), args.output if args.output != "table" else "yaml")
    elif args.action == "healthy":
        inst = read_document(args.instance)
        result = client.call("Flavor.Healthy", {**base, "Instance": inst})
        print({0: "unknown", 1: "healthy", 2: "unhealthy"}.get(result.get("Health"), str(result.get("Health"))))
    return 0


# --- parser ----------------------------------------------------------------------------------


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
    _add_probe_options(start)
    start.set_defaults(func=cmd_plugin_start)
    stop = psub.add_parser("stop", help="stop running daemons by name")
    stop.add_argument("names", nargs="*", metavar="NAME")
    stop.add_argument("--all", action="store_true", help="stop every daemon in the plugin directory")
    stop.set_defaults(func=cmd_plugin_stop)
    ls = psub.add_parser("ls", help="list plugins: name, interfaces, socket")
    ls.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    ls.set_defaults(func=cmd_plugin_ls)

    up = sub.add_parser("up", help="run the daemons of the configuration file under supervision",
                        description="Run every daemon of the configuration file as a child, restart any that dies "
                        "(with backoff, never giving up) and stop them all on SIGTERM/SIGINT. One supervisor per "
                        "plugin directory. With --keeper (implied by --detach) a small keeper process runs the "
                        "supervisor and restarts it if it dies, until it is stopped on request.")
    up.add_argument("--detach", action="store_true",
                    help="run in the background (double fork), under a keeper that restarts the supervisor")
    up.add_argument("--keeper", action="store_true",
                    help="run the supervisor under a keeper in the foreground (for a container's entrypoint)")
    up.add_argument("--log-file", help="log file when detached (default $INFRAKIT_HOME/infrakit-up.log)")
    _add_probe_options(up)
    up.set_defaults(func=cmd_up)

    inst = sub.add_parser("instance", help="talk to an instance plugin")
    inst.add_argument("--plugin", required=True, metavar="NAME", help="plugin name, socket[/type]")
    inst.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    isub = inst.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = isub.add_parser("describe", help="list instances")
    d.add_argument("--tags", action="append", metavar="KEY=VALUE", help="only instances with this tag (ANDed)")
    d.add_argument("--properties", action="store_true", help="include each instance's properties")
    pr = isub.add_parser("provision", help="provision one instance from a Spec file (YAML/JSON, - for stdin)")
    pr.add_argument("file")
    va = isub.add_parser("validate", help="validate instance Properties from a file")
    va.add_argument("file")
    de = isub.add_parser("destroy", help="destroy instances by ID")
    de.add_argument("ids", nargs="+", metavar="ID")
    la = isub.add_parser("label", help="merge labels into an instance's tags")
    la.add_argument("id", metavar="ID")
    la.add_argument("labels", nargs="+", metavar="KEY=VALUE")
    inst.set_defaults(func=cmd_instance)

    fl = sub.add_parser("flavor", help="talk to a flavor plugin")
    fl.add_argument("--plugin", required=True, metavar="NAME", help="plugin name, socket[/type]")
    fl.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    fl.add_argument("--properties", metavar="FILE", help="flavor Properties (YAML/JSON)")
    fl.add_argument("--size", type=int, default=1, help="Allocation.Size")
    fl.add_argument("--logical-ids", help="Allocation.LogicalIDs, comma separated")
    fsub = fl.add_subparsers(dest="action", metavar="ACTION", required=True)
    fsub.add_parser("validate", help="validate flavor Properties")
    fp = fsub.add_parser("prepare", help="show the instance Spec the flavor prepares")
    fp.add_argument("--spec", metavar="FILE", help="the instance Spec to prepare")
    fp.add_argument("--group", help="Index.Group")
    fp.add_argument("--sequence", type=int, default=0, help="Index.Sequence")
    fh = fsub.add_parser("healthy", help="ask whether an instance is healthy")
    fh.add_argument("--instance", required=True, metavar="FILE", help="the instance Description")
    fl.set_defaults(func=cmd_flavor)

    from infrakit_runtime import cli_group

    cli_group.register(sub)
    cli_group.register_observe(sub)
    from infrakit_runtime import cli_selfhost

    cli_selfhost.register(sub)
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
