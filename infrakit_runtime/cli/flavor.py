"""``infrakit flavor``: talk to a flavor plugin (validate, prepare, healthy).

Guarantee: one Flavor SPI call per action, printed as the plugin answered it with ``-o json|yaml``.
Limit: no retries; the plugin's own error is shown as it is.
"""

from __future__ import annotations

import argparse
from typing import Any

from infrakit_runtime import config
from infrakit_runtime.cli.common import client_for, emit, output_option, read_document


def register(sub: Any) -> None:
    """Add ``flavor`` to the top-level parser."""
    fl = sub.add_parser("flavor", help="talk to a flavor plugin")
    fl.add_argument("--plugin", required=True, metavar="NAME", help="plugin name, socket[/type]")
    output_option(fl, top=True)
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
