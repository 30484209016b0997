"""``Sharded``: three manager replicas sharing the groups (``sharding: groups``) on a real etcd cluster.

Each replica is a real manager process; instances are files (the file instance plugin) so that
many groups cost nothing to run, and deleting a file makes its owner act (a replacement).
Who owned what, and when, comes from each replica's own events (``ownership_gained`` /
``ownership_lost``, JSON lines in its log); what it did comes from the mutating calls it logged
(``infrakit_runtime.rpc.traffic``). Used by tests/runtime/ha/test_sharded_replicas.py, the CLI and
metrics tests of the sharded mode, and bench/scale.py.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from tests.runtime.ha.cluster import _CALL, MUTATING, Replicas, _log_time, wait_for

TTL = 4.0
SETTLE = 3 * TTL + 60  # a move takes a TTL plus a round trip; the CI machine is busy


class Sharded(Replicas):
    """``Replicas`` with ``sharding: groups``, the file instance plugin, and only ``first`` started at once."""

    def __init__(self, daemons: Any, *, first: tuple[str, ...] | None = None, **kwargs: Any) -> None:
        self.first = first
        self.files = daemons.home / "instance-files"
        super().__init__(daemons, **kwargs)

    def start_manager(self) -> None:
        self.d.start("file", env={"INFRAKIT_INSTANCE_FILE_DIR": str(self.files)})
        for name in self.first or self.names:
            self.start_replica(name)

    def start_replica(self, name: str) -> None:
        options = {"backend": self.backend, "listen": f"127.0.0.1:{self.ports[name]}", "forward": True,
                   "events_json": True, "token_file": str(self.token_file), "sharding": "groups"}
        path = self.d.home / f"{name}.options.json"
        path.write_text(json.dumps(options))
        self.d.start(f"manager:{name}", "--options-file", str(path), env={**self.env, "INFRAKIT_CONFIG": str(self.config)})
        self.gone.pop(name, None)

    def started(self) -> list[str]:
        return [n for n in self.names if n in self.d.procs]

    def live(self) -> list[str]:
        return [n for n in self.started() if n not in self.gone and n not in self.stopped]

    def file_spec(self, gid: str, size: int = 1) -> dict[str, Any]:
        return {"ID": gid, "Properties": {"Allocation": {"Size": size},
                                          "Instance": {"Plugin": "file", "Properties": {}},
                                          "Flavor": {"Plugin": "vanilla", "Properties": {}}}}

    def instances(self, gid: str = "web") -> list[dict[str, Any]]:
        client = self.d.client("file")
        try:
            return client.call("Instance.DescribeInstances", {"Tags": {"infrakit.group": gid}, "Properties": False})["Descriptions"]
        finally:
            client.close()

    def group_call(self, via: str, method: str, params: dict[str, Any]) -> Any:
        return self.rpc(via, method, params)

    # -- ownership as the replicas report it ---------------------------------------------

    def owned(self) -> dict[str, list[str]]:
        """Each live replica's own ``Owned`` (what its fence lets it act on)."""
        out = {}
        for name in self.live():
            with contextlib.suppress(RemoteError, UnreachableError, OSError):
                out[name] = self.status(name, timeout=5)["Owned"]
        return out

    def settled(self, groups: list[str]) -> dict[str, str] | None:
        """group -> owner once every live replica answers, each group is acted on by exactly one of them,
        and etcd's owner keys (``Owners``) agree; else None."""
        owned = self.owned()
        if set(owned) != set(self.live()):
            return None
        acting: dict[str, str] = {}
        for name, gids in owned.items():
            for gid in gids:
                if gid in acting:
                    return None
                acting[gid] = name
        if set(acting) != set(groups):
            return None
        owners = self.status(self.live()[0], timeout=5)["Owners"]
        names = {self.candidate(n): n for n in self.live()}
        if {g: names.get(c) for g, c in owners.items() if g in groups} != acting:
            return None
        return acting

    def wait_members(self) -> None:
        """Until every live replica sees every live one registered (a commit routed meanwhile may be
        refused by a replica whose view differs from the forwarder's: "retry")."""
        def agreed() -> bool:
            try:
                return all(len(self.status(n, timeout=5).get("Members") or {}) == len(self.live()) for n in self.live())
            except (RemoteError, UnreachableError, OSError):
                return False
        wait_for(agreed, SETTLE, "every replica registered and seen by all")

    def candidate(self, name: str) -> str:
        return self.status(name, timeout=5)["Candidate"]

    def wait_settled(self, groups: list[str], what: str) -> dict[str, str]:
        return wait_for(lambda: self.settled(groups), SETTLE, what, interval=0.2)

    def wait_instances(self, groups: list[str], size: int = 1) -> None:
        wait_for(lambda: all(len(self.instances(g)) == size for g in groups), SETTLE, f"{size} instance(s) per group")

    # -- who did what, when --------------------------------------------------------------

    def ownership(self) -> dict[str, list[tuple[str, float, float]]]:
        """group -> [(replica, gained, lost)] from every replica's events; an open interval ends at the
        replica's death, else never (two open ones for one group would be two owners now)."""
        out: dict[str, list[tuple[str, float, float]]] = {}
        for name in self.started():
            open_: dict[str, float] = {}
            for e in self.events(name):
                if e["Kind"] == "ownership_gained":
                    open_.setdefault(e["Group"], e["Time"])
                elif e["Kind"] == "ownership_lost" and e["Group"] in open_:
                    out.setdefault(e["Group"], []).append((name, open_.pop(e["Group"]), e["Time"]))
            end = self.gone.get(name, float("inf"))
            for gid, start in open_.items():
                out.setdefault(gid, []).append((name, start, end))
        return out

    def group_actions(self) -> list[tuple[str, str, float, str]]:
        """Every mutating call sent, as (replica, group, time, method); a Destroy's group from ``provisioned`` events."""
        group_of = {e["Instance"]: e["Group"] for n in self.started() for e in self.events(n, "provisioned")}
        out = []
        for name in self.started():
            for line in self.log(name).splitlines():
                m = _CALL.match(line)
                if not m:
                    continue
                with contextlib.suppress(ValueError):
                    body = json.loads(m.group(3))
                    method, params = body.get("method", ""), body.get("params") or {}
                    if method not in MUTATING:
                        continue
                    specs = params.get("Specs") or [params.get("Spec") or {}]
                    groups = {(s.get("Tags") or {}).get("infrakit.group") for s in specs} - {None}
                    if "Instance" in params:
                        groups.add(group_of.get(params["Instance"], f"?{params['Instance']}"))
                    for gid in groups:
                        out.append((name, str(gid), _log_time(m.group(1)), str(method)))
        return out

    def overlaps(self) -> list[str]:
        """Two replicas owning one group at once, or a change sent by a replica outside its ownership of that group.

        A log line's time is truncated to the millisecond, hence the 1 ms allowance.
        """
        bad = []
        intervals = self.ownership()
        for gid, spans in intervals.items():
            for i, (a, a_start, a_end) in enumerate(spans):
                for b, b_start, b_end in spans[i + 1:]:
                    if a != b and a_start < b_end and b_start < a_end:
                        bad.append(f"{gid}: {a} owned it {a_start:.3f}-{a_end:.3f}, {b} {b_start:.3f}-{b_end:.3f}")
        for name, gid, t, method in self.group_actions():
            if not any(r == name and start - 0.001 <= t <= end + 0.001 for r, start, end in intervals.get(gid, [])):
                bad.append(f"{name} sent {method} for {gid} at {t:.3f} outside its ownership {intervals.get(gid)}")
        return bad
