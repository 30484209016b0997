"""A flavor's count of its cluster's quorum (``flavor.Quorum``) crosses the wire beside the verdicts.

Our additive ``Quorum`` (Flavor.Healthy) and ``Quorums`` (Flavor.HealthyMany) fields: the client reads
them back as they were sent; a field that is absent, null or not a count reads as no report at all
(InfraKit's flavors send none), and combo keeps the report of a member flavor that gives one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from infrakit_runtime.plugins.flavor.combo import _combined
from infrakit_runtime.rpc import flavor as rpc_flavor
from infrakit_runtime.spi import flavor, instance
from infrakit_runtime.spi.wire import Reader

LOST, HELD = flavor.Quorum(answering=1, voting=3), flavor.Quorum(answering=2, voting=3)


class Counting:
    """A flavor of voting members: says HEALTHY, and what it counts of its cluster."""

    def __init__(self, quorums: list[flavor.Quorum | None]) -> None:
        self.quorums = quorums

    async def assess_many(self, properties: Any, descriptions: list[instance.Description]) -> list[flavor.Assessment]:
        return [flavor.Assessment(flavor.Health.HEALTHY, "", self.quorums[int(d.id[1:])]) for d in descriptions]

    async def healthy(self, properties: Any, description: instance.Description) -> flavor.Health:
        return flavor.Health.HEALTHY


class Loopback:
    """An rpc client whose calls are answered by the service's methods in process (the codec, no socket)."""

    def __init__(self, obj: Any, *, batch: bool, answer: dict[str, Any] | None = None) -> None:
        self.obj, self.batch, self.answer, self.timeout = obj, batch, answer, 5.0

    async def hello(self) -> dict[str, Any]:
        return {str(flavor.BATCH_INTERFACE): []} if self.batch else {}

    async def call(self, method: str, params: dict[str, Any], timeout: float | None = None) -> Any:
        if self.answer is not None:
            return self.answer
        handler = {"Flavor.Healthy": rpc_flavor._healthy, "Flavor.HealthyMany": rpc_flavor._healthy_many}[method]
        return await handler(self.obj, Reader(params, "params"))


def assess(client: Loopback, n: int) -> list[flavor.Assessment]:
    descriptions = [instance.Description(id=f"i{k}", logical_id=f"10.0.0.{k}") for k in range(n)]
    return asyncio.run(rpc_flavor.FlavorClient(client).assess_many(None, descriptions))  # type: ignore[arg-type]


@pytest.mark.parametrize("batch", [True, False])
def test_the_quorum_a_flavor_counts_reaches_the_controller_as_it_was_sent(batch: bool):
    got = assess(Loopback(Counting([LOST, None, HELD]), batch=batch), 3)
    assert [a.quorum for a in got] == [LOST, None, HELD]
    assert [a.health for a in got] == [flavor.Health.HEALTHY] * 3


@pytest.mark.parametrize("quorums", [None, "3", [None], [{"Answering": 4, "Voting": 3}], [{"Answering": True, "Voting": 3}],
                                     [{"Answering": -1, "Voting": 3}], [{"Voting": 3}], [[1, 3]]])
def test_a_missing_or_unreadable_quorum_is_no_report(quorums: Any):
    answer = {"Healths": [1], "Reasons": [""], **({"Quorums": quorums} if quorums is not None else {})}
    assert assess(Loopback(None, batch=True, answer=answer), 1) == [flavor.Assessment(flavor.Health.HEALTHY)]


def test_combo_keeps_the_quorum_a_member_flavor_counts():
    a = _combined([("Flavors[0] (vanilla)", flavor.Assessment(flavor.Health.HEALTHY)),
                   ("Flavors[1] (selfhost/etcd)", flavor.Assessment(flavor.Health.HEALTHY, "", LOST))])
    assert a.quorum == LOST and a.health is flavor.Health.HEALTHY
