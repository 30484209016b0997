"""Fixtures for the self-hosted control plane tests (real etcd processes; skipped without etcd)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.etcd_cluster import etcd, etcd_cluster
from tests.runtime.selfhosted.etcd_world import EtcdWorld

__all__ = ["etcd", "etcd_cluster", "etcd_world", "replica_world", "run"]


@pytest.fixture
def run() -> Iterator[Callable[[Any], Any]]:
    """Run a coroutine on one event loop kept for the whole test (clients bind to their loop)."""
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture
def etcd_world(tmp_path: Path, run: Callable[[Any], Any]) -> Iterator[EtcdWorld]:
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not on PATH (make system-deps installs Debian's etcd-server)")
    world = EtcdWorld(tmp_path, run)
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def replica_world(daemons: Any, etcd: Any, run: Callable[[Any], Any]) -> Iterator[Any]:
    """Replicas configured by the manager flavor on the session etcd cluster, under a fresh prefix."""
    import uuid

    from tests.runtime.selfhosted.replica_world import ReplicaWorld

    world = ReplicaWorld(daemons, run, endpoints=etcd.endpoints, prefix=f"/selfhost-{uuid.uuid4().hex[:8]}/")
    try:
        yield world
    finally:
        world.close()
