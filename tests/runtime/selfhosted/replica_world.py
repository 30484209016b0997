"""Controller replicas configured by the manager flavor, run as the process plugin would run them.

Each replica is ``infrakit plugin run manager:group-<name>`` after the flavor's rendered init
(which writes its configuration file and exports ``INFRAKIT_CONFIG``), sharing one plugin
directory and one etcd key prefix on the test etcd cluster.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infrakit_runtime.plugins.flavor.selfhost import addresses
from infrakit_runtime.plugins.flavor.selfhost.manager import ManagerFlavor
from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from infrakit_runtime.spi import flavor, instance
from tests.runtime.conftest import Daemons
from tests.runtime.selfhosted import local

TOKEN = "selfhost-replicas-token"


class ReplicaWorld:
    def __init__(self, daemons: Daemons, run: Callable[[Any], Any], *, endpoints: list[str], prefix: str) -> None:
        self.d = daemons
        self.run = run
        self.flavor = ManagerFlavor()
        self.procs: dict[str, subprocess.Popen] = {}
        self.inits: dict[str, str] = {}
        token = daemons.home / "token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        self.token_file = token
        self.properties: dict[str, Any] = {
            "TokenFile": str(token), "ConfigDir": str(daemons.home / "replicas"),
            "Backend": {"type": "etcd", "endpoints": endpoints, "prefix": prefix, "ttl": "2s", "timeout": "1s"},
            "Options": {"poll_interval": "0.5s", "events_json": True}, "Timeout": "2s",
        }
        self.logical_ids: list[str] = []

    @property
    def allocation(self) -> flavor.Allocation:
        return flavor.Allocation(logical_ids=tuple(self.logical_ids))

    def socket(self, lid: str) -> str:
        return f"group-{addresses.member_name(lid)}"

    def description(self, lid: str) -> instance.Description:
        return instance.Description(id=f"i-{lid}", logical_id=lid, tags={instance.TAG_LOGICAL_ID: lid})

    def prepare(self, lid: str) -> str:
        spec = instance.Spec(tags={instance.TAG_LOGICAL_ID: lid}, logical_id=lid)
        return self.run(self.flavor.prepare(self.properties, spec, self.allocation, flavor.Index(group="managers"))).init

    def start(self, lid: str) -> subprocess.Popen:
        init = self.inits[lid] = self.prepare(lid)
        argv = [sys.executable, "-m", "infrakit_runtime", "plugin", "run", f"manager:{self.socket(lid)}"]
        env = {k: v for k, v in self.d.env.items() if k != "INFRAKIT_GROUP_POLL_INTERVAL"}
        self.procs[lid] = local.start_rendered(init, self.d.home / f"{self.socket(lid)}.log", argv=argv, env=env)
        return self.procs[lid]

    def grow(self, n: int) -> list[str]:
        self.logical_ids = local.free_ids(n)
        for lid in self.logical_ids:
            self.start(lid)
        return list(self.logical_ids)

    def healthy(self, *lids: str) -> list[flavor.Health]:
        return self.run(self.flavor.healthy_many(self.properties, [self.description(lid) for lid in lids]))

    def rpc(self, lid: str, method: str, params: dict[str, Any] | None = None) -> Any:
        client = SyncClient(Address(unix_path=self.d.plugins_dir / self.socket(lid)), timeout=10)
        try:
            return client.call(method, params or {})
        finally:
            client.close()

    def leader(self) -> str:
        def find() -> str | None:
            leading = [lid for lid in self.logical_ids
                       if self.procs[lid].poll() is None and self.rpc(lid, "Manager.IsLeader")["Leader"]]
            return leading[0] if len(leading) == 1 else None
        return local.wait_for(find, 30, "one replica to lead")

    def log(self, lid: str) -> str:
        return (self.d.home / f"{self.socket(lid)}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs.values():
            local.kill(proc, sig=15)
        for proc in self.procs.values():
            local.kill(proc)
        self.run(self.flavor.close())


def config_of(init: str) -> Path:
    line = next(x for x in init.splitlines() if x.startswith("export INFRAKIT_CONFIG="))
    return Path(line.split("=", 1)[1].strip("'"))
