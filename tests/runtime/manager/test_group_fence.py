"""The per-group plugin fence: a group's plugins change the world only while that group may act."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from infrakit_runtime.manager.fencing import FencedLookup, NotActing
from infrakit_runtime.spi import instance


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def provision(self, spec: instance.Spec) -> str:
        self.calls.append("provision")
        return "i-1"

    async def destroy(self, instance_id: str, context: Any) -> None:
        self.calls.append("destroy")

    async def describe_instances(self, tags: dict[str, str], properties: bool) -> list[Any]:
        self.calls.append("describe")
        return []


class Lookup:
    def __init__(self) -> None:
        self.plugin = Recorder()

    def instance(self, name: str) -> Any:
        return self.plugin

    def flavor(self, name: str) -> Any:
        raise NotImplementedError

    async def check(self, name: str, interface: Any) -> None:
        return None


def test_each_group_passes_its_own_guard_and_without_one_the_global_guard_decides():
    async def scenario() -> None:
        inner = Lookup()
        fenced = FencedLookup(inner)
        spec = instance.Spec(properties={}, tags={})
        fenced.guard = lambda: None
        assert await fenced.for_group("web").instance("file").provision(spec) == "i-1"  # one leader: the global guard
        owned = {"web"}
        fenced.group_guard = lambda gid: None if gid in owned else f"does not own group {gid}"
        await fenced.for_group("web").instance("file").provision(spec)
        db = fenced.for_group("db").instance("file")
        with pytest.raises(NotActing, match="refused to destroy an instance: does not own group db"):
            await db.destroy("i-1", instance.Context(reason=instance.REASON_TERMINATE))
        assert await db.describe_instances({}, False) == []  # reads are never fenced
        web = fenced.for_group("web").instance("file")
        owned.clear()  # the guard is asked at each call, not when the plugin was looked up
        with pytest.raises(NotActing):
            await web.provision(spec)
        assert inner.plugin.calls == ["provision", "provision", "describe"]

    asyncio.run(scenario())
