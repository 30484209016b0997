"""Finding plugins by name: the one thing a group controller knows about where plugins live.

A lookup hands out ``instance.Extended`` and ``flavor.Extended`` objects by plugin name
(``socket[/type]``): RPC clients over the plugin directory in a daemon
(``rpc.lookup.PluginDirectory``), plugin objects in the same process in a test. The controller
cannot tell the difference, which is the point.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.common import InterfaceSpec


class PluginLookup(Protocol):
    """Plugins by name. Looking one up costs nothing and never fails for a well-formed name;
    reaching it is the first call's business."""

    def instance(self, name: str) -> instance.Extended:
        """The instance plugin called ``name``."""

    def flavor(self, name: str) -> flavor.Extended:
        """The flavor plugin called ``name``."""

    async def check(self, name: str, interface: InterfaceSpec) -> None:
        """Raise ``ValidationError`` unless ``name`` answers and implements ``interface`` at that version."""


@runtime_checkable
class GroupScoped(Protocol):
    """A lookup that can hand out plugins on behalf of one group (``for_group``).

    The manager's fenced lookup is one: a change sent through ``for_group(G)``'s plugins is
    allowed only while the replica may act on G, so the controller asks for a group's
    plugins this way when it can.
    """

    def for_group(self, group_id: str) -> PluginLookup:
        """The plugins, acting on behalf of group ``group_id``."""
