"""Manager SPI (InfraKit ``Stack/0.1.1``): leadership and the stored specs.

Served on the same socket as the Group SPI by the manager daemon. InfraKit
declared ``Enforce``, ``Inspect`` and ``Terminate`` but never implemented them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from infrakit_runtime.spi import group
from infrakit_runtime.spi.common import InterfaceSpec

INTERFACE = InterfaceSpec("Stack", "0.1.1")


@runtime_checkable
class Manager(Protocol):
    """Who leads, where, and what is declared."""

    async def is_leader(self) -> bool:
        """True when this replica runs the group supervisors."""

    async def leader_location(self) -> str | None:
        """The leader's advertised URL, if known."""

    async def specs(self) -> list[group.Spec]:
        """Every group spec in the store."""
