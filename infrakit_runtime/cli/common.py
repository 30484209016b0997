"""What every ``infrakit`` command shares: input files, output formats, and finding a plugin.

Guarantee: imports nothing of the CLI (every command module imports this one, never the
reverse), so the package has no import cycle; ``make lint`` keeps it so.
Limit: helpers only; each command family lives in a module of its own (``plugin``, ``instance``,
``flavor``, ``group``, ``observe``, ``completion``), and ``app`` assembles them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from infrakit_runtime import config
from infrakit_runtime.rpc import discovery
from infrakit_runtime.rpc.client import SyncClient

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
