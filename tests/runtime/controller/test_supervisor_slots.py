"""A create whose outcome is unknown is retried as the same slot, so idempotent plugins make no duplicate.

A unit test with an in-process fake plugin: the logic under test is the supervisor's choice of
slot tags, not any I/O (the aws plugin's use of the slot as a ClientToken is tested against moto).
"""

from __future__ import annotations

import asyncio

from infrakit_runtime.group import events
from infrakit_runtime.group.plan.spec import parse_spec
from infrakit_runtime.group.supervisor import Supervisor
from infrakit_runtime.rpc.errors import UnreachableError
from infrakit_runtime.spi import flavor, instance


class FlakyInstances:
    """Times out on the first batch, then provisions; remembers every slot it was asked for."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.made: list[instance.Description] = []

    async def describe_instances(self, tags, properties):
        return list(self.made)

    async def provision_many(self, specs):
        self.calls.append([s.tags[instance.TAG_SLOT] for s in specs])
        if len(self.calls) == 1:
            raise UnreachableError("plugin aws did not answer Instance.ProvisionMany within 30s")
        out = []
        for s in specs:
            iid = f"i-{len(self.made)}"
            self.made.append(instance.Description(id=iid, tags=dict(s.tags)))
            out.append(instance.ProvisionResult(id=iid))
        return out


class Flavor:
    async def prepare_many(self, properties, specs, allocation, indices):
        return list(specs)

    async def healthy_many(self, properties, descriptions):
        return [flavor.Health.HEALTHY] * len(descriptions)


def spec(size: int):
    return parse_spec({"ID": "g", "Properties": {"Allocation": {"Size": size},
                                                 "Instance": {"Plugin": "aws"}, "Flavor": {"Plugin": "vanilla"}}})


def test_a_batch_that_timed_out_is_retried_with_the_same_slots():
    async def run() -> FlakyInstances:
        plugin = FlakyInstances()
        clock = iter(range(0, 10_000, 10))
        sup = Supervisor(spec=spec(3), instances=plugin, flavors=Flavor(), clock=lambda: float(next(clock)),
                         poll_interval=1.0, events=events.EventLog())
        for _ in range(4):
            await sup.reconcile_once()
        return plugin

    plugin = asyncio.run(run())
    assert len(plugin.calls) == 2, plugin.calls
    assert sorted(plugin.calls[1]) == sorted(plugin.calls[0]), "the retry names the same slots"
    assert len(set(plugin.calls[0])) == 3
    assert len(plugin.made) == 3


class SlowToList(FlakyInstances):
    """Provisions every batch at once but lists nothing yet (a cloud's eventual consistency)."""

    async def describe_instances(self, tags, properties):
        return []

    async def provision_many(self, specs):
        self.calls.append([s.tags[instance.TAG_SLOT] for s in specs])
        out = []
        for s in specs:
            iid = f"i-{len(self.made)}"
            self.made.append(instance.Description(id=iid, tags=dict(s.tags)))
            out.append(instance.ProvisionResult(id=iid))
        return out


def test_a_batch_of_new_instances_is_awaited_once_each_in_provision_order():
    # The batch joins the awaited (unseen) members in one pass (one pass per instance made a scale-up to
    # 10,000 quadratic: bench/controller.py); what it holds must be what the per-instance updates held.
    async def run() -> tuple[SlowToList, Supervisor]:
        plugin = SlowToList()
        sup = Supervisor(spec=spec(50), instances=plugin, flavors=Flavor(), clock=lambda: 100.0,
                         poll_interval=1.0, events=events.EventLog())
        await sup.reconcile_once()
        await sup.reconcile_once()  # still unlisted, within the grace: awaited, not provisioned again
        return plugin, sup

    plugin, sup = asyncio.run(run())
    assert len(plugin.calls) == 1 and len(plugin.calls[0]) == 50
    assert [u.id for u in sup.unseen] == [d.id for d in plugin.made]
    assert all(u.since == 100.0 for u in sup.unseen)
    provisioned = [e for e in sup.events.recent(group="g", limit=1000) if e.kind == events.PROVISIONED]
    assert [e.instance for e in provisioned] == [d.id for d in plugin.made]
