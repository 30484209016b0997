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
from typing import Any

from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.group.plan.memory import Memory
from infrakit_runtime.plugins.instance.selector import choices as ch
from infrakit_runtime.plugins.instance.selector.plugin import SelectorPlugin
from infrakit_runtime.rpc.instance import InstanceService
from infrakit_runtime.rpc.lookup import PluginDirectory
from infrakit_runtime.spi.common import ValidationError

VENDOR = {"Name": "infrakit-instance-selector", "Version": "0.1.0", "Sub": "", "URL": "https://github.com/docker/infrakit"}
_OPTIONS = {"backoff_base": 5.0, "backoff_max": 300.0}


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
    plugins = PluginDirectory(ctx.plugins_dir)
    plugin = SelectorPlugin(policy=policy, lookup=plugins.instance, self_name=ctx.name,
                            memory=Memory(base_delay=o["backoff_base"], max_delay=o["backoff_max"]),
                            state_file=ctx.state_dir("selectors") / f"{ctx.name}.json")
    try:
        yield Served(services=[InstanceService({"": plugin})], vendor={**VENDOR, "Sub": policy})
    finally:
        await plugins.close()


def open_spread(ctx: DaemonContext) -> contextlib.AbstractAsyncContextManager[Served]:
    """Spread: members balanced within one across the choices (equal shares)."""
    return _serve(ctx, ch.SPREAD)


def open_tiered(ctx: DaemonContext) -> contextlib.AbstractAsyncContextManager[Served]:
    """Tiered: each member on the first choice, in order, that can take it."""
    return _serve(ctx, ch.TIERED)


def open_weighted(ctx: DaemonContext) -> contextlib.AbstractAsyncContextManager[Served]:
    """Weighted: members in proportion to each choice's Affinity.Weight."""
    return _serve(ctx, ch.WEIGHTED)
