"""The ansible flavor daemon's plugs into the RPC layer: its service, and the plugins it calls by name.

Guarantee: the only module of this flavor that imports ``rpc``; the flavor itself sees spi
Protocols and plain lookups. One kept-alive client per socket (``rpc.lookup.PluginDirectory``).
Limit: names resolve in the daemon's plugin directory when first used.
"""

from __future__ import annotations

from pathlib import Path

from infrakit_runtime.rpc import discovery
from infrakit_runtime.rpc.client import Client
from infrakit_runtime.rpc.flavor import FlavorService
from infrakit_runtime.rpc.group import GroupClient
from infrakit_runtime.rpc.lookup import PluginDirectory
from infrakit_runtime.rpc.service import Service
from infrakit_runtime.spi import flavor
from infrakit_runtime.spi.common import PluginName


class Lookups:
    """Flavor and instance plugins by ``socket[/type]`` name, and the manager's Group SPI."""

    def __init__(self, directory: Path, *, group: str) -> None:
        self.plugins = PluginDirectory(directory)
        self.flavor = self.plugins.flavor
        self.instance = self.plugins.instance
        pn = PluginName.parse(group)
        self._group_client = Client(discovery.resolve(pn, directory), name=pn.socket)
        self.groups = GroupClient(self._group_client)

    async def close(self) -> None:
        await self._group_client.close()
        await self.plugins.close()


def service(plugin: flavor.FlavorPlugin) -> Service:
    return FlavorService({"": plugin})
