"""A self-hosted control plane on this machine: etcd members and controller replicas as process instances.

Layout (one INFRAKIT_HOME): the ``process`` and ``selfhost`` plugin daemons run beside the test
(``Daemons``); everything else is an instance of the process plugin kept alive by the plane
itself - three etcd members (``127.0.0.1:PORT`` logical IDs, peer port PORT+1, group ``etcd``)
and three controller replicas (``127.0.0.1:PORT``, group ``managers``, socket
``group-127.0.0.1:PORT``, etcd backend on the etcd group). ``up`` is ``infrakit selfhost up``'s
logic (``controlplane.ControlPlane``): bootstrap one of each, commit both groups, wait.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from typing import Any

from infrakit_runtime.controlplane import ControlPlane
from tests.runtime.conftest import Daemons
from tests.runtime.selfhosted import local

ETCD, MANAGERS = "etcd", "managers"


def specs(home: os.PathLike[str] | str, *, etcd_ids: list[str], manager_ids: list[str], token_file: str,
          ttl: str = "5s", poll: str = "0.5s", quorum: bool = True, python: str = sys.executable,
          snapshot: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two group specs of a plane whose files live under ``home`` (``snapshot``: the etcd flavor's Snapshot)."""
    updating: dict[str, Any] = {"MaxSurge": 0, "MaxUnavailable": 1}
    etcd = {"ID": ETCD, "Properties": {
        "Allocation": {"LogicalIDs": etcd_ids},
        "Instance": {"Plugin": "process", "Properties": {"Command": ["etcd"], "Port": False}},
        "Flavor": {"Plugin": "selfhost/etcd", "Properties": {"DataDir": f"{home}/etcd", "Timeout": "1s",
                                                             **({"Snapshot": snapshot} if snapshot else {})}},
        "Updating": {**updating, "Quorum": True} if quorum else updating,
        "Health": {"GracePeriod": "15s", "UnhealthyThreshold": 2},
    }}
    managers = {"ID": MANAGERS, "Properties": {
        "Allocation": {"LogicalIDs": manager_ids},
        "Instance": {"Plugin": "process", "Properties": {
            "Command": [python, "-m", "infrakit_runtime", "plugin", "run", "manager:group-${INFRAKIT_LOGICAL_ID}"],
            "Port": False}},
        "Flavor": {"Plugin": "selfhost/manager", "Properties": {
            "TokenFile": token_file, "ConfigDir": f"{home}/replicas",
            "Backend": {"type": "etcd", "endpoints": [f"http://{lid}" for lid in etcd_ids], "prefix": "/infrakit/",
                        "ttl": ttl, "timeout": "1s"},
            "Options": {"poll_interval": poll, "events_json": True}}},
        "Updating": updating,
        "Health": {"GracePeriod": "20s", "UnhealthyThreshold": 2},
    }}
    return etcd, managers


class Plane:
    """The plugin daemons of one host and the control plane they keep alive."""

    def __init__(self, daemons: Daemons, *, ttl: str = "5s", poll: str = "0.5s", quorum: bool = True,
                 snapshot: dict[str, Any] | None = None) -> None:
        self.d = daemons
        daemons.start("process")
        daemons.start("selfhost")
        token = daemons.home / "token"
        token.write_text("selfhost-plane-token\n")
        token.chmod(0o600)
        self.etcd_ids, self.manager_ids = local.member_ids(3), local.free_ids(3)
        self.etcd_spec, self.manager_spec = specs(daemons.home, etcd_ids=self.etcd_ids, manager_ids=self.manager_ids,
                                                  token_file=str(token), ttl=ttl, poll=poll, quorum=quorum,
                                                  snapshot=snapshot)
        self.cp = ControlPlane(etcd=self.etcd_spec, managers=self.manager_spec, plugins_dir=daemons.plugins_dir)

    # -- the world as the plugins see it --------------------------------------------------------

    def members(self, group: str) -> list[dict[str, Any]]:
        return self.cp.members(self.cp.etcd if group == ETCD else self.cp.managers)

    def by_logical_id(self, group: str) -> dict[str, dict[str, Any]]:
        return {d["LogicalID"]: d for d in self.members(group)}

    def etcd_voters(self) -> list[dict[str, Any]]:
        """The voting members etcd itself lists (asked of every member until one answers)."""
        for lid in self.etcd_ids:
            with contextlib.suppress(Exception):
                return [m for m in local.members(lid) if not m.get("isLearner")]
        return []

    def etcd_healthy(self) -> int:
        return sum(local.health(lid) for lid in self.etcd_ids)

    def leader(self) -> str | None:
        status = self.cp.status()
        return status["Leader"] if status else None

    def describe(self, group: str) -> dict[str, Any]:
        return self.cp.call("Group.DescribeGroup", {"ID": group})["Description"]

    def commit(self, spec: dict[str, Any]) -> str:
        return str(self.cp.call("Group.CommitGroup", {"Spec": spec, "Pretend": False})["Details"])

    def replica_log(self, lid: str) -> str:
        """The output of every process that has held logical ID ``lid`` (the process plugin's instance logs)."""
        out = []
        for path in sorted((self.d.home / "instance-process").glob("*.log")):
            text = path.read_text(errors="replace")
            if f"INFRAKIT_GROUP_SELF_LOGICAL_ID={lid}" in text or lid in text:
                out.append(text)
        return "\n".join(out)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every event any replica ever emitted (their JSON lines in the instance logs), oldest first."""
        found = []
        for path in sorted((self.d.home / "instance-process").glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                start = line.find('{"Seq"')
                if start < 0:
                    continue
                with contextlib.suppress(ValueError):
                    event = json.loads(line[start:])
                    if kind is None or event.get("Kind") == kind:
                        found.append({**event, "Log": path.name})
        return sorted(found, key=lambda e: e["Time"])

    def pid(self, description: dict[str, Any]) -> int:
        return int(description["Properties"]["PID"])

    def kill(self, description: dict[str, Any], sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid(description), sig)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.cp.down(purge=False)
        for group in (MANAGERS, ETCD):  # whatever is left, by the plugin's own record of it
            with contextlib.suppress(Exception):
                for d in self.members(group):
                    self.kill(d)
        self.cp.close()
