"""What every daemon exports on ``GET /metrics``: the process, the build, and the RPC calls it answered.

Guarantee: each daemon has its own ``CollectorRegistry`` carrying the process collector
(CPU, memory, file descriptors, start time), the platform collector (``python_info``),
``infrakit_build_info`` and ``infrakit_rpc_server_duration_seconds`` by method and outcome;
a daemon kind with more to say (the manager) adds its collectors to the same registry. No
counter or histogram exports a ``_created`` series (one series per counter, not two).
Limit: a request that is not JSON, or nested too deep, is refused before it names a method
and is not counted; methods a socket does not have share the label ``other``, so a client
cannot grow the series count. Several daemons in one process each report that process.
"""

from __future__ import annotations

import functools
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from infrakit_runtime import __version__
from infrakit_runtime.rpc import errors

__all__ = ["CONTENT_TYPE", "RPC_BUCKETS", "DaemonMetrics", "build_info", "outcome"]

# Process-wide, before any metric exists: a _created series per counter doubles the count for
# a timestamp Prometheus does not need (it detects counter resets itself).
disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST
# One RPC over a Unix socket is sub-millisecond; a cloud provision takes seconds.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNKNOWN = "unknown"


@functools.cache
def build_info() -> dict[str, str]:
    """``version``, ``python`` and ``git_commit`` (``unknown`` outside a git checkout) of this runtime."""
    return {"version": __version__, "python": platform.python_version(),
            "git_commit": _git_commit(Path(__file__).resolve().parent.parent)}


def _git_commit(root: Path) -> str:
    """HEAD of the checkout the runtime runs from; an installed wheel or a collection has no ``.git``."""
    if not (root / ".git").exists():
        return UNKNOWN
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit) else UNKNOWN


def outcome(code: int | None) -> str:
    """The bounded label for an answer: ``ok``, ``error`` (the plugin refused) or ``invalid`` (a bad request)."""
    if code is None:
        return "ok"
    return "error" if code == errors.APPLICATION_ERROR else "invalid"


class DaemonMetrics:
    """One daemon's registry with the series every daemon kind exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        info = build_info()
        Gauge("infrakit_build_info", "Always 1; the labels say which runtime this daemon runs",
              sorted(info), registry=r).labels(**info).set(1)
        self.served = Histogram("infrakit_rpc_server_duration_seconds",
                                "JSON-RPC calls this daemon answered, by method and outcome",
                                ["method", "outcome"], registry=r, buckets=RPC_BUCKETS)
        self._children: dict[tuple[str, str], Any] = {}

    def observe_rpc(self, method: str, code: int | None, seconds: float) -> None:
        """A ``Dispatcher.observe`` callback: one answered call."""
        key = (method, outcome(code))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.served.labels(*key)
        child.observe(max(0.0, seconds))

    def render(self) -> bytes:
        """The text exposition format, as ``GET /metrics`` serves it."""
        return generate_latest(self.registry)
