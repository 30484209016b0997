"""``infrakit instance``: talk to an instance plugin (describe, provision, validate, destroy, label).

Guarantee: one Instance SPI call per action (per ID for destroy), printed as the plugin answered
it with ``-o json|yaml``. Limit: no retries; the plugin's own error is shown as it is.
"""

from __future__ import annotations

import argparse
from typing import Any

from infrakit_runtime import config
from infrakit_runtime.cli.common import client_for, emit, output_option, parse_pairs, read_document, table


def register(sub: Any) -> None:
    """Add ``instance`` to the top-level parser."""
    inst = sub.add_parser("instance", help="talk to an instance plugin")
    inst.add_argument("--plugin", required=True, metavar="NAME", help="plugin name, socket[/type]")
    output_option(inst, top=True)
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
