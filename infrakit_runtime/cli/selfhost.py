"""``infrakit selfhost up|down|status``: a self-hosted control plane from one host (``controlplane``).

Guarantee: ``up`` and ``down`` are idempotent and print what they did as one JSON object whose
``changed`` says whether anything changed (Ansible's ``changed_when`` reads it); a second
``up`` on a converged plane changes nothing. ``status`` changes nothing.
Limit: the two group specs must be the ones the plane runs (the CLI reads addresses, ports
and files from them, never from the running plane).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from infrakit_runtime.cli.common import read_document


def register(sub: Any) -> None:
    p = sub.add_parser("selfhost", help="bootstrap, inspect and tear down a self-hosted control plane",
                       description="A control plane whose etcd members and controller replicas are two pet groups "
                       "the controller keeps alive itself. 'up' starts one etcd member and one replica if none "
                       "runs, commits both groups and waits until they converge; 'down' removes everything.")
    p.add_argument("--etcd", required=True, metavar="FILE", help="the etcd group's spec (YAML/JSON)")
    p.add_argument("--managers", required=True, metavar="FILE", help="the controller replicas' group spec (YAML/JSON)")
    ssub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = ssub.add_parser("up", help="bootstrap what is missing, commit both groups, wait for them to converge")
    up.add_argument("--timeout", type=float, default=180.0, metavar="SECONDS", help="give up waiting after this long")
    down = ssub.add_parser("down", help="free both groups and destroy every replica and etcd member")
    down.add_argument("--purge", action="store_true", help="also remove the etcd data and replica config directories")
    ssub.add_parser("status", help="the leader and each replica's answer")
    p.set_defaults(func=cmd_selfhost)


def cmd_selfhost(args: argparse.Namespace, cfg: Any) -> int:
    from infrakit_runtime.controlplane import ControlPlane  # not loaded by every daemon's ``plugin run``

    plane = ControlPlane(etcd=read_document(args.etcd), managers=read_document(args.managers),
                         plugins_dir=cfg.plugins_dir, timeout=min(cfg.client_timeout, 30.0))
    try:
        if args.action == "up":
            report: Any = plane.up(timeout=args.timeout)
        elif args.action == "down":
            report = plane.down(purge=args.purge)
        else:
            report = plane.status()
            if report is None:
                print(f"infrakit: no replica answers at {', '.join(plane.replica_urls())}", file=sys.stderr)
                return 1
    finally:
        plane.close()
    json.dump(report, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0
