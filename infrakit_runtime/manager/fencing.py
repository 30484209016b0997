"""Acting under the lease: every call that changes the world asks leadership first.

Guarantee: Provision, ProvisionMany, Destroy, Label and Drain are sent only while this
replica holds a lease its backend still trusts *locally* (etcd: a renewal succeeded less
than ``renew_deadline`` ago; file: the lock is still held). The check is synchronous and
made right before the call is sent, so a process that was paused past its lease (SIGSTOP,
a long GC, a stalled VM) and resumes in the middle of a reconcile pass is refused before
its first action, even if the loop runs its supervisors before its lease watchdog.
Limit: a check and the send that follows it are not atomic; a pause that falls exactly
between the two still lets one call out. Plugins cannot check a lease themselves (the
InfraKit wire carries no fencing token), so this narrows the window to microseconds
rather than closing it. Reads (Describe, Healthy, Prepare, Validate) are never fenced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from infrakit_runtime.group.controller import PluginDirectory
from infrakit_runtime.rpc.remote import FlavorClient, InstanceClient
from infrakit_runtime.spi.common import PluginError

# Why this replica must not act now, or None when it may.
Guard = Callable[[], str | None]


class NotActing(PluginError):
    """A change was refused because this replica does not hold a trusted lease."""


def _check(guard: Guard, doing: str) -> None:
    problem = guard()
    if problem is not None:
        raise NotActing(f"not acting: refused to {doing}: {problem}")


class _Fenced:
    """A plugin client whose mutating calls pass the guard first; everything else is the client's."""

    _MUTATING: ClassVar[dict[str, str]] = {}

    def __init__(self, inner: Any, guard: Guard) -> None:
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_guard", guard)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        doing = self._MUTATING.get(name)
        if doing is None:
            return attr

        async def fenced(*args: Any, **kwargs: Any) -> Any:
            _check(self._guard, doing)
            return await attr(*args, **kwargs)

        return fenced

    def __setattr__(self, name: str, value: Any) -> None:
        # The controller resets a client's cached handshake (``_objects``) after a plugin restart.
        setattr(self._inner, name, value)


class FencedInstance(_Fenced):
    _MUTATING: ClassVar[dict[str, str]] = {"provision": "provision an instance", "provision_many": "provision instances",
                 "destroy": "destroy an instance", "label": "relabel an instance"}


class FencedFlavor(_Fenced):
    _MUTATING: ClassVar[dict[str, str]] = {"drain": "drain an instance"}


class FencedPlugins(PluginDirectory):
    """The controller's plugin directory, with every change gated by ``guard``.

    ``guard`` is set once the manager exists (it answers for the lease); until then
    nothing may act.
    """

    def __init__(self, *, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout)
        self.guard: Guard = lambda: "the manager has not started"

    def instance(self, name: str) -> InstanceClient:
        return FencedInstance(super().instance(name), lambda: self.guard())  # type: ignore[return-value]

    def flavor(self, name: str) -> FlavorClient:
        return FencedFlavor(super().flavor(name), lambda: self.guard())  # type: ignore[return-value]
