"""Serving a selector: ``infrakit plugin run spread|tiered|weighted[:name]``.

Guarantee: the choices' plugins are reached by name in the daemon's own plugin directory, one
kept-alive client per socket, so a choice may be any instance plugin daemon (aws, process, a Go
plugin); the selector's memory of groups and plugins survives a restart in the state directory.
Limit: the daemon holds no lock on its state file: run one daemon per name.

Options (``-o key=value``): ``backoff_base`` (seconds before a failing choice is tried again,
doubling on each failure, default 5) and ``backoff_max`` (default 300).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.group.memory import Memory
from infrakit_runtime.plugins.instance.selector import choices as ch
from infrakit_runtime.plugins.instance.selector.plugin import SelectorPlugin
from infrakit_runtime.rpc import discovery
from infrakit_runtime.rpc.client import Client
from infrakit_runtime.rpc.remote import InstanceClient
from infrakit_runtime.rpc.services import InstanceService
from infrakit_runtime.spi import instance
from infrakit_runtime.spi.common import ValidationError

VENDOR = {"Name": "infrakit-instance-selector", "Version": "0.1.0", "Sub": "", "URL": "https://github.com/docker/infrakit"}
_OPTIONS = {"backoff_base": 5.0, "backoff_max": 300.0}


class InstanceClients:
    """``Lookup`` over RPC: one kept-alive ``Client`` per socket, one ``InstanceClient`` per ``name[/type]``."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self._clients: dict[str, Client] = {}
        self._instances: dict[str, InstanceClient] = {}

    def __call__(self, name: str) -> instance.InstancePlugin:
        found = self._instances.get(name)
        if found is None:
            pn = discovery.PluginName.parse(name)
            client = self._clients.get(pn.socket)
            if client is None:
                client = self._clients[pn.socket] = Client(discovery.resolve(pn, self.directory), name=pn.socket)
            found = self._instances[name] = InstanceClient(client, pn.type)
        return found

    async def close(self) -> None:
        clients, self._clients, self._instances = list(self._clients.values()), {}, {}
        for client in clients:
            await client.close()


def options(raw: dict[str, Any]) -> dict[str, float]:
    """Daemon options, checked, every problem listed."""
    problems, out = [], dict(_OPTIONS)
    for key, value in raw.items():
        if key not in _OPTIONS:
            problems.append(f"unknown option {key!r} for a selector; known: {', '.join(sorted(_OPTIONS))}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            problems.append(f"option {key} must be a positive number of seconds, got {value!r}")
        else:
            out[key] = float(value)
    if not problems and out["backoff_max"] < out["backoff_base"]:
        problems.append(f"option backoff_max ({out['backoff_max']:g}s) must be at least backoff_base "
                        f"({out['backoff_base']:g}s)")
    if problems:
        raise ValidationError(problems)
    return out


@contextlib.asynccontextmanager
async def _serve(ctx: DaemonContext, policy: str) -> AsyncIterator[Served]:
    o = options(ctx.options)
    clients = InstanceClients(ctx.plugins_dir)
    plugin = SelectorPlugin(policy=policy, lookup=clients, self_name=ctx.name,
                            memory=Memory(base_delay=o["backoff_base"], max_delay=o["backoff_max"]),
                            state_file=ctx.state_dir("selectors") / f"{ctx.name}.json")
    try:
        yield Served(services=[InstanceService({"": plugin})], vendor={**VENDOR, "Sub": policy})
    finally:
        await clients.close()


def open_spread(ctx: DaemonContext) -> contextlib.AbstractAsyncContextManager[Served]:
    """Spread: members balanced within one across the choices (equal shares)."""
    return _serve(ctx, ch.SPREAD)


def open_tiered(ctx: DaemonContext) -> contextlib.AbstractAsyncContextManager[Served]:
    """Tiered: each member on the first choice, in order, that can take it."""
    return _serve(ctx, ch.TIERED)


def open_weighted(ctx: DaemonContext) -> contextlib.AbstractAsyncContextManager[Served]:
    """Weighted: members in proportion to each choice's Affinity.Weight."""
    return _serve(ctx, ch.WEIGHTED)
