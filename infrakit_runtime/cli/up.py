"""``infrakit up``: run the configuration file's daemons under supervision, kept when asked.

Guarantee: ``up`` refuses a second supervisor for the same plugin directory and an empty
``plugins`` list, before anything starts. Limit: the supervising itself is ``launcher``'s and
``keeper``'s; this module only turns the command line into their calls.

Cost: the supervisor runs for as long as the daemons do, so ``infrakit_runtime.cli.main``
runs this command without assembling the rest of the CLI (``app``), and what this module
imports is all the supervisor carries: ``launcher``, ``keeper``, ``config`` and the blocking
client, without aiohttp, rich or prometheus_client (tests/runtime/cli/test_up_footprint.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from infrakit_runtime import config, logs
from infrakit_runtime.cli.common import UsageError, add_probe_options, liveness


def register(sub: Any) -> None:
    """Add ``up`` to the top-level parser."""
    up = sub.add_parser("up", help="run the daemons of the configuration file under supervision",
                        description="Run the daemons of the configuration file in a supervised child process (all "
                        "in one process by default, each on its own socket; 'processes: separate' or --processes "
                        "separate gives each its own), restart it when it dies or a daemon stops answering (with "
                        "backoff, never giving up) and stop them all on SIGTERM/SIGINT. One supervisor per "
                        "plugin directory. With --keeper (implied by --detach) a small keeper process runs the "
                        "supervisor and restarts it if it dies, until it is stopped on request.")
    up.add_argument("--detach", action="store_true",
                    help="run in the background (double fork), under a keeper that restarts the supervisor")
    up.add_argument("--keeper", action="store_true",
                    help="run the supervisor under a keeper in the foreground (for a container's entrypoint)")
    up.add_argument("--log-file", help="log file when detached (default $INFRAKIT_HOME/infrakit-up.log)")
    up.add_argument("--processes", choices=config.PROCESSES,
                    help="one process for every daemon, or a process each (default: the config file's "
                    "'processes', else one); a daemon sharing a process cannot be restarted or stopped alone")
    add_probe_options(up)
    up.set_defaults(func=cmd_up)


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
        if args.processes:
            probe += ["--processes", args.processes]
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
        asyncio.run(supervise(cfg.daemon_processes(args.processes), plugins_dir=cfg.plugins_dir, liveness=liveness(args),
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
