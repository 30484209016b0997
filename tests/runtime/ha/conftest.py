"""HA fixtures: the real etcd cluster, and manager replicas torn down with everything they started."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.runtime.conftest import Daemons
from tests.runtime.etcd_cluster import EtcdCluster, etcd, etcd_cluster
from tests.runtime.ha.cluster import Replicas, etcd_backend, stop_everything
from tests.runtime.ha.sharded import TTL, Sharded

__all__ = ["etcd", "etcd_cluster", "prefix", "replicas", "sharded"]


@pytest.fixture
def prefix() -> str:
    """A fresh etcd key prefix per test, so tests on the shared cluster never see each other."""
    return f"/ha-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def replicas(daemons: Daemons, etcd: EtcdCluster, prefix: str) -> Iterator[Callable[..., Replicas]]:
    """``replicas(forward=..., backend=...)`` starts the stack; everything is stopped afterwards."""
    started: list[Replicas] = []

    def start(**kwargs: Any) -> Replicas:
        kwargs.setdefault("backend", etcd_backend(etcd, prefix))
        stack = Replicas(daemons, **kwargs)
        started.append(stack)
        return stack

    try:
        yield start
    finally:
        for stack in started:
            stop_everything(stack)


@pytest.fixture
def sharded(daemons: Daemons, etcd: EtcdCluster, prefix: str) -> Iterator[Callable[..., Sharded]]:
    """``sharded(first=...)`` starts replicas sharing the groups and waits until all see each other."""
    started: list[Sharded] = []

    def start(**kwargs: Any) -> Sharded:
        stack = Sharded(daemons, backend=etcd_backend(etcd, prefix, ttl=f"{TTL:g}s"), **kwargs)
        started.append(stack)
        stack.wait_members()
        return stack

    try:
        yield start
    finally:
        for stack in started:
            stop_everything(stack)
