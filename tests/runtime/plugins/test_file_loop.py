"""The file instance plugin keeps its event loop free (issue 18): scans and writes run on a worker
thread, so under a flood of commits the daemon still answers Handshake.Hello and the rest.

Each describe is answered by a scan that started after it was asked (it sees every write that
returned before it), and the describes that arrive while one scan runs share the next one.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from infrakit_runtime.plugins.instance.file import FileInstancePlugin
from infrakit_runtime.spi import instance

GROUP = {instance.TAG_GROUP: "g"}


def spec(n: int) -> instance.Spec:
    return instance.Spec(tags={**GROUP, "n": str(n)})


async def yields(work: Any) -> tuple[Any, bool]:
    """``work``'s result, and whether the loop ran anything else before it finished (a callback
    scheduled first): work done on the loop itself, however long, lets nothing else run."""
    ran = False

    def mark() -> None:
        nonlocal ran
        ran = True

    asyncio.get_running_loop().call_soon(mark)
    return await work, ran


def test_scans_and_writes_leave_the_loop_free_to_answer_others(tmp_path: Path) -> None:
    async def main() -> None:
        plugin = FileInstancePlugin(tmp_path)
        results, freed = await yields(plugin.provision_many([spec(n) for n in range(300)]))
        assert all(r.id for r in results) and freed
        found, freed = await yields(plugin.describe_instances(GROUP, False))
        assert len(found) == 300 and freed
        listing, freed = await yields(plugin.describe_since(GROUP, False, ""))
        assert listing.descriptions is not None and len(listing.descriptions) == 300 and freed
        assert (await yields(plugin.label(results[0].id or "", {"x": "1"})))[1]
        assert (await yields(plugin.provision(spec(300))))[1]
        assert (await yields(plugin.destroy(results[1].id or "", instance.Context())))[1]
        assert len(await plugin.describe_instances(GROUP, False)) == 300
    asyncio.run(main())


def test_a_describe_asked_after_a_write_sees_it_though_an_older_scan_is_still_running(tmp_path: Path) -> None:
    """Scan 1 starts before the write and is held; describe B, asked after the write returned, must
    not be answered by it; the describes asked while scan 2 waits share that one scan."""
    async def main() -> None:
        plugin = FileInstancePlugin(tmp_path)
        first = await plugin.provision(spec(0))
        release, started = threading.Event(), threading.Event()
        scans = 0
        real = plugin._store.scan

        def held_scan() -> list[dict[str, Any]]:
            nonlocal scans
            scans += 1
            if scans == 1:
                started.set()
                release.wait(30)
            return real()

        plugin._store.scan = held_scan  # type: ignore[method-assign]
        a = asyncio.create_task(plugin.describe_instances(GROUP, False))
        assert await asyncio.to_thread(started.wait, 30), "scan 1 running on its thread"
        second = await plugin.provision(spec(1))
        later = [asyncio.create_task(plugin.describe_instances(GROUP, False)) for _ in range(5)]
        await asyncio.sleep(0)
        release.set()
        got_a = {d.id for d in await a}
        got_later = [{d.id for d in await t} for t in later]
        assert first in got_a
        assert all(g == {first, second} for g in got_later), got_later
        assert scans == 2, "the five describes asked during scan 1 shared scan 2"
    asyncio.run(main())
