"""An etcd cluster grown and healed through the etcd flavor alone, its members real etcd processes.

What the controller would do, done by hand so the flavor can be tested without one: bootstrap a
member (``Prepare`` of an instance tagged ``bootstrap``), join others (``Prepare``, then run the
rendered init as the process plugin would), judge them (``Healthy``, which promotes caught-up
learners), remove them (``Drain``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infrakit_runtime.plugins.flavor.selfhost.etcd import EtcdFlavor
from infrakit_runtime.spi import flavor, instance
from tests.runtime.selfhosted import local


class EtcdWorld:
    def __init__(self, root: Path, run: Callable[[Any], Any]) -> None:
        self.root = root
        self.run = run
        self.flavor = EtcdFlavor()
        self.procs: dict[str, subprocess.Popen] = {}
        self.inits: dict[str, str] = {}
        self.logical_ids: list[str] = []
        self.properties: dict[str, Any] = {"DataDir": str(root / "data"), "Timeout": "2s"}

    @property
    def allocation(self) -> flavor.Allocation:
        return flavor.Allocation(logical_ids=tuple(self.logical_ids))

    def spec(self, lid: str, *, bootstrap: bool = False) -> instance.Spec:
        tags = {instance.TAG_GROUP: "etcd", instance.TAG_LOGICAL_ID: lid,
                instance.TAG_CONFIG_HASH: instance.BOOTSTRAP_CONFIG_HASH if bootstrap else "h1"}
        return instance.Spec(tags=tags, logical_id=lid)

    def description(self, lid: str) -> instance.Description:
        return instance.Description(id=f"i-{lid}", logical_id=lid, tags={instance.TAG_LOGICAL_ID: lid})

    def prepare(self, lid: str, *, bootstrap: bool = False) -> str:
        prepared = self.run(self.flavor.prepare(self.properties, self.spec(lid, bootstrap=bootstrap), self.allocation,
                                                flavor.Index(group="etcd", sequence=0)))
        return prepared.init

    def start(self, lid: str, init: str) -> subprocess.Popen:
        self.inits[lid] = init
        self.procs[lid] = local.start_rendered(init, self.root / f"{local.client_url(lid).split('//')[1]}.log")
        return self.procs[lid]

    def healthy(self, *lids: str) -> list[flavor.Health]:
        return self.run(self.flavor.healthy_many(self.properties, [self.description(lid) for lid in lids]))

    def assess(self, *lids: str) -> list[flavor.Assessment]:
        return self.run(self.flavor.assess_many(self.properties, [self.description(lid) for lid in lids]))

    def wait_healthy(self, *lids: str, timeout: float = 30.0) -> None:
        local.wait_for(lambda: all(h is flavor.Health.HEALTHY for h in self.healthy(*lids)), timeout,
                       f"etcd members {', '.join(lids)} healthy (promoted, caught up)", interval=0.2)

    def grow(self, n: int) -> list[str]:
        """A cluster of ``n`` healthy voting members: one bootstrapped, the rest joined one at a time."""
        self.logical_ids = local.member_ids(n)
        first = self.logical_ids[0]
        self.start(first, self.prepare(first, bootstrap=True))
        self.wait_healthy(first)
        for lid in self.logical_ids[1:]:
            self.start(lid, self.prepare(lid))
            self.wait_healthy(lid)
        return list(self.logical_ids)

    def voters(self, via: str) -> list[dict[str, Any]]:
        return [m for m in local.members(via) if not m.get("isLearner")]

    def close(self) -> None:
        for proc in self.procs.values():
            local.kill(proc)
        self.run(self.flavor.close())
