"""What every SPI's service shares: a ``Service`` serves one interface for named objects.

A ``Service`` serves one interface (``Instance/0.6.1``...) for one or more plugin objects
selected by the request's ``Type`` (instance, flavor) or ``Name`` (group) field, exactly as
InfraKit's ``socket/type`` names do. Each SPI's codec, service and client live in one module
of their own (``rpc.instance``, ``rpc.flavor``, ``rpc.group``, ``rpc.manager``), as InfraKit's
``pkg/rpc/<spi>`` does.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from infrakit_runtime.spi.common import InterfaceSpec, ValidationError
from infrakit_runtime.spi.wire import Reader

Handler = Callable[[Any, Reader], Awaitable[dict[str, Any]]]
T = TypeVar("T")

# How many per-instance calls a batch runs at once: inside a daemon serving a batch method over
# single calls, and inside a client falling back to single calls for a daemon without the batch.
BATCH_CONCURRENCY = 64


@dataclasses.dataclass(frozen=True)
class Method:
    """One RPC method: its handler and an example request used by /info/api.json."""

    handler: Handler
    example: dict[str, Any]


class Service:
    """One interface served for a set of named objects (``""`` is the default object)."""

    interface: InterfaceSpec
    methods: dict[str, Method]
    selector = "Type"

    def __init__(self, objects: dict[str, Any]) -> None:
        if not objects:
            raise ValueError("a service needs at least one object")
        self.objects = objects

    def select(self, socket_name: str, params: Reader) -> tuple[Any, dict[str, Any]]:
        """The object a request addresses, and the fields every answer echoes."""
        key = params.string(self.selector)
        if key in self.objects:
            return self.objects[key], {self.selector: key}
        known = ", ".join(repr(k) for k in sorted(self.objects) if k) or "none but the default"
        raise ValidationError(
            f"not found: {socket_name}/{key} (key={key}); this plugin serves types: {known}"
        )

    def bind(self, obj: Any, headers: Mapping[str, str]) -> Any:
        """The object that answers this request; a service whose answers depend on the request's
        metadata (the Group SPI: who forwarded it, when it was sent) passes it explicitly here."""
        return obj

    def extra_interfaces(self) -> list[InterfaceSpec]:
        return []

    def hello_objects(self) -> list[dict[str, str]]:
        return [{"Name": name or ".", "ProxyFor": ""} for name in sorted(self.objects)]

    async def announce(self) -> list[dict[str, str]]:
        """The objects ``Handshake.Hello`` announces now (a service whose objects change overrides it)."""
        return self.hello_objects()


async def bounded(calls: list[Coroutine[Any, Any, T]], *, limit: int = BATCH_CONCURRENCY) -> list[T | BaseException]:
    """Await coroutines with at most ``limit`` in flight, keeping order; an exception is returned, not raised."""
    gate = asyncio.Semaphore(limit)

    async def one(coro: Coroutine[Any, Any, T]) -> T:
        async with gate:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in calls), return_exceptions=True))
