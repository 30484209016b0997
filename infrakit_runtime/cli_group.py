"""``infrakit group ...``: declare groups and read their state through the manager's socket."""

from __future__ import annotations

import argparse
from typing import Any

GROUP_SOCKET = "group"


def register(sub: Any) -> None:
    """Add the ``group`` command tree to the top-level parser."""
    grp = sub.add_parser("group", help="declare groups and read their state (via the manager)")
    grp.add_argument("--plugin", default=GROUP_SOCKET, metavar="NAME", help="the group plugin socket (default: group)")
    grp.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    gsub = grp.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = gsub.add_parser("commit", help="commit a group spec (YAML/JSON file, - for stdin)")
    c.add_argument("file")
    c.add_argument("--pretend", action="store_true", help="show the plan, change nothing")
    gsub.add_parser("ls", help="list the groups being managed")
    for name, text in (("describe", "show a group's instances"), ("free", "stop managing a group, keep its instances"),
                       ("destroy", "destroy a group and every instance in it"), ("size", "show a group's declared size")):
        a = gsub.add_parser(name, help=text)
        a.add_argument("id", metavar="ID")
    ss = gsub.add_parser("set-size", help="change a group's declared size")
    ss.add_argument("id", metavar="ID")
    ss.add_argument("size", type=int)
    grp.set_defaults(func=cmd_group)


def cmd_group(args: argparse.Namespace, cfg: Any) -> int:
    from infrakit_runtime.cli import client_for, emit, read_document, table

    client, _ = client_for(args.plugin, cfg)
    name = args.plugin
    if args.action == "commit":
        doc = read_document(args.file)
        specs = doc if isinstance(doc, list) else [doc]
        for spec in specs:
            result = client.call("Group.CommitGroup", {"Name": name, "Spec": spec, "Pretend": args.pretend})
            verb = "would" if args.pretend else "committed"
            print(f"{result.get('ID')}: {verb}: {result.get('Details')}")
    elif args.action == "ls":
        groups = client.call("Group.InspectGroups", {"Name": name, "ID": ""}).get("Groups") or []
        if args.output != "table":
            emit(groups, args.output)
        else:
            print(table([[g["ID"]] for g in groups], ["ID"]))
    elif args.action == "describe":
        desc = client.call("Group.DescribeGroup", {"Name": name, "ID": args.id}).get("Description") or {}
        if args.output != "table":
            emit(desc, args.output)
        else:
            rows = [[i["ID"], i.get("LogicalID") or "-", (i.get("Tags") or {}).get("infrakit.config.hash", "-")]
                    for i in desc.get("Instances") or []]
            print(table(rows, ["ID", "LOGICAL", "CONFIG"]))
            print(f"converged: {desc.get('Converged')}")
    elif args.action == "free":
        client.call("Group.FreeGroup", {"Name": name, "ID": args.id})
        print(f"freed {args.id}")
    elif args.action == "destroy":
        client.call("Group.DestroyGroup", {"Name": name, "ID": args.id})
        print(f"destroyed {args.id}")
    elif args.action == "size":
        print(client.call("Group.Size", {"Name": name, "ID": args.id}).get("Size"))
    elif args.action == "set-size":
        client.call("Group.SetSize", {"Name": name, "ID": args.id, "Size": args.size})
        print(f"{args.id} size set to {args.size}")
    return 0
