"""Plugins by name over the plugin directory: the ``PluginLookup`` every daemon wires in.

Guarantee: one kept-alive ``Client`` per socket and one SPI client per ``socket[/type]`` name,
so a client's cached handshake is shared by every caller of that name; every call has the
client timeout. Looking a plugin up never touches the network; the first call does.
Limit: a name resolves (Unix socket or ``.listen`` file) when its socket's client is first
made; a plugin that later moves from a socket to TCP is seen after ``close()``.
"""

from __future__ import annotations

from pathlib import Path

from infrakit_runtime.rpc import discovery
from infrakit_runtime.rpc.client import CallObserver, Client
from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from infrakit_runtime.rpc.flavor import FlavorClient
from infrakit_runtime.rpc.instance import InstanceClient
from infrakit_runtime.spi.common import InterfaceSpec, PluginName, ValidationError

# How long a commit's check of a plugin's handshake may take.
CHECK_TIMEOUT = 5.0


class PluginDirectory:
    """``PluginLookup`` over RPC: the plugins of ``directory`` (default: the environment's)."""

    def __init__(self, directory: Path | None = None, *, timeout: float | None = None,
                 observer: CallObserver | None = None) -> None:
        self.directory = directory
        self._timeout = timeout
        self._observer = observer
        self._clients: dict[str, Client] = {}
        self._instances: dict[str, InstanceClient] = {}
        self._flavors: dict[str, FlavorClient] = {}

    def _client(self, pn: PluginName) -> Client:
        client = self._clients.get(pn.socket)
        if client is None:
            client = self._clients[pn.socket] = Client(discovery.resolve(pn, self.directory), name=pn.socket,
                                                       timeout=self._timeout, observer=self._observer)
        return client

    def instance(self, name: str) -> InstanceClient:
        found = self._instances.get(name)
        if found is None:
            pn = PluginName.parse(name)
            found = self._instances[name] = InstanceClient(self._client(pn), pn.type)
        return found

    def flavor(self, name: str) -> FlavorClient:
        found = self._flavors.get(name)
        if found is None:
            pn = PluginName.parse(name)
            found = self._flavors[name] = FlavorClient(self._client(pn), pn.type)
        return found

    async def check(self, name: str, interface: InterfaceSpec) -> None:
        """Raise ``ValidationError`` unless plugin ``name`` answers and implements ``interface``."""
        pn = PluginName.parse(name)
        try:
            await self._client(pn).check_interface(interface, timeout=CHECK_TIMEOUT)
        except UnreachableError as e:
            raise ValidationError(f"plugin {name!r} is not reachable: {e}") from None
        except RemoteError as e:
            raise ValidationError(e.message) from None

    async def close(self) -> None:
        clients = list(self._clients.values())
        self._clients, self._instances, self._flavors = {}, {}, {}
        for client in clients:
            await client.close()
