"""The ``selfhost`` daemon: the etcd flavor as ``selfhost/etcd``, the manager flavor as ``selfhost/manager``.

Guarantee: one daemon holds the flavor objects for as long as it runs and closes their clients
(and any snapshot in progress) when it stops.
Limit: no options; everything a flavor needs is in the group's Properties.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from infrakit_runtime.daemon import DaemonContext, Served
from infrakit_runtime.plugins.flavor.selfhost.etcd import EtcdFlavor
from infrakit_runtime.plugins.flavor.selfhost.manager import ManagerFlavor
from infrakit_runtime.rpc.flavor import FlavorService
from infrakit_runtime.spi.common import ValidationError

VENDOR = {"Name": "infrakit-flavor-selfhost", "Version": "0.1.0", "Sub": "", "URL": "https://github.com/docker/infrakit"}


@contextlib.asynccontextmanager
async def open_daemon(ctx: DaemonContext) -> AsyncIterator[Served]:
    if ctx.options:
        raise ValidationError(f"the selfhost flavors take no options, got {', '.join(sorted(map(str, ctx.options)))}")
    etcd, manager = EtcdFlavor(), ManagerFlavor()
    try:
        yield Served(services=[FlavorService({"etcd": etcd, "manager": manager})], vendor=VENDOR)
    finally:
        await etcd.close()
        await manager.close()
