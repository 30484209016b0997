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
rather than closing it. With ``sharding: groups`` the guard is per group: a group's
plugins (``FencedLookup.for_group``) act only while the membership lease is trusted locally
and this replica still owns that group. A batch (ProvisionMany, or the client's one-by-one fallback for a
plugin without it) is checked once, before its first call. Reads (Describe, Healthy, Prepare,
Validate, the watch) are never fenced.
"""

from __future__ import annotations

from collections.abc import Callable

from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.common import JSON, InterfaceSpec, PluginError
from infrakit_runtime.spi.lookup import PluginLookup

# Why this replica must not act now, or None when it may.
Guard = Callable[[], str | None]
# The same for changes made on behalf of one group.
GroupGuard = Callable[[str], str | None]


class NotActing(PluginError):
    """A change was refused because this replica does not hold a trusted lease."""


def _check(guard: Guard, doing: str) -> None:
    problem = guard()
    if problem is not None:
        raise NotActing(f"not acting: refused to {doing}: {problem}")


class FencedInstance:
    """``instance.Extended`` whose changes (provision, destroy, label) pass ``guard`` first."""

    def __init__(self, inner: instance.Extended, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard

    async def validate(self, properties: JSON) -> None:
        await self._inner.validate(properties)

    async def provision(self, spec: instance.Spec) -> instance.ID:
        _check(self._guard, "provision an instance")
        return await self._inner.provision(spec)

    async def provision_many(self, specs: list[instance.Spec]) -> list[instance.ProvisionResult]:
        _check(self._guard, "provision instances")
        return await self._inner.provision_many(specs)

    async def label(self, instance_id: instance.ID, labels: dict[str, str]) -> None:
        _check(self._guard, "relabel an instance")
        await self._inner.label(instance_id, labels)

    async def destroy(self, instance_id: instance.ID, context: instance.Context) -> None:
        _check(self._guard, "destroy an instance")
        await self._inner.destroy(instance_id, context)

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[instance.Description]:
        return await self._inner.describe_instances(tags, properties)

    async def wait_change(self, revision: int, timeout: float) -> int:
        return await self._inner.wait_change(revision, timeout)

    async def describe_since(self, tags: dict[str, str], properties: bool, revision: str) -> instance.Listing:
        """The inner plugin's ``describe_since`` (``instance.Revised``), else a complete description every time."""
        if isinstance(self._inner, instance.Revised):
            return await self._inner.describe_since(tags, properties, revision)
        return instance.Listing(descriptions=await self._inner.describe_instances(tags, properties))


class FencedFlavor:
    """``flavor.Extended`` whose drain passes ``guard`` first (the rest only reads or computes)."""

    def __init__(self, inner: flavor.Extended, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard

    async def validate(self, properties: JSON, allocation: flavor.Allocation) -> None:
        await self._inner.validate(properties, allocation)

    async def prepare(self, properties: JSON, spec: instance.Spec, allocation: flavor.Allocation,
                      index: flavor.Index) -> instance.Spec:
        return await self._inner.prepare(properties, spec, allocation, index)

    async def prepare_many(self, properties: JSON, specs: list[instance.Spec], allocation: flavor.Allocation,
                           indices: list[flavor.Index]) -> list[instance.Spec | PluginError]:
        return await self._inner.prepare_many(properties, specs, allocation, indices)

    async def healthy(self, properties: JSON, description: instance.Description) -> flavor.Health:
        return await self._inner.healthy(properties, description)

    async def healthy_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Health]:
        return await self._inner.healthy_many(properties, descriptions)

    async def assess_many(self, properties: JSON, descriptions: list[instance.Description]) -> list[flavor.Assessment]:
        """The verdicts with the flavor's reasons when it gives them (``flavor.Assessing``), else without."""
        if isinstance(self._inner, flavor.Assessing):
            return await self._inner.assess_many(properties, descriptions)
        return [flavor.Assessment(h) for h in await self._inner.healthy_many(properties, descriptions)]

    async def drain(self, properties: JSON, description: instance.Description) -> None:
        _check(self._guard, "drain an instance")
        await self._inner.drain(properties, description)


class FencedLookup:
    """A ``PluginLookup`` whose plugins change the world only while ``guard`` allows it.

    ``guard`` is set once the manager exists (it answers for the lease); until then nothing
    may act.
    """

    def __init__(self, inner: PluginLookup) -> None:
        self._inner = inner
        self.guard: Guard = lambda: "the manager has not started"
        # Set by the manager: whether it may act on one group (default: the global guard).
        self.group_guard: GroupGuard | None = None

    def _now(self) -> str | None:
        return self.guard()

    def for_group(self, group_id: str) -> GroupLookup:
        """The plugins acting on behalf of ``group_id``: fenced by ``group_guard(group_id)``."""
        return GroupLookup(self, group_id)

    def instance(self, name: str) -> FencedInstance:
        return FencedInstance(self._inner.instance(name), self._now)

    def flavor(self, name: str) -> FencedFlavor:
        return FencedFlavor(self._inner.flavor(name), self._now)

    async def check(self, name: str, interface: InterfaceSpec) -> None:
        await self._inner.check(name, interface)


class GroupLookup:
    """One group's view of a ``FencedLookup``: its changes pass that group's guard."""

    def __init__(self, fenced: FencedLookup, group_id: str) -> None:
        self._fenced = fenced
        self.group_id = group_id

    def _now(self) -> str | None:
        group_guard = self._fenced.group_guard
        return group_guard(self.group_id) if group_guard is not None else self._fenced.guard()

    def instance(self, name: str) -> FencedInstance:
        return FencedInstance(self._fenced._inner.instance(name), self._now)

    def flavor(self, name: str) -> FencedFlavor:
        return FencedFlavor(self._fenced._inner.flavor(name), self._now)

    async def check(self, name: str, interface: InterfaceSpec) -> None:
        await self._fenced.check(name, interface)
