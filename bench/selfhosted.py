"""A self-hosted control plane healing and rolling itself: what each event costs (issue 15).

One plane on loopback (``tests/runtime/selfhosted/plane.py``): three etcd members and three
controller replicas, each a ``process`` instance the plane keeps alive itself (lease TTL 5 s,
poll 0.5 s, the default health settings of the plane's specs), grown from one member and one
replica by ``infrakit selfhost up``'s logic. Then:

- **etcd SIGKILL**: SIGKILL one etcd member (in turn), time until etcd lists 3 voters again, all
  answering ``/health``, the killed one replaced (remove, add as learner, promote).
- **replica rollout**: commit a changed replicas' spec (a poll interval, hashed), so every
  replica is replaced, the leader's last after it hands leadership over. Leaderless time per
  handover: from the old leader's ``leadership_lost`` to the next ``leadership_gained``
  (wall-clock stamps of the replicas' own JSON event lines, same host).
- **leader SIGKILL**: SIGKILL the leading replica: from the signal to the next ``leadership_gained``.
- **etcd rollout**: commit a changed etcd spec (a flavor timeout, hashed) while a client writes
  every 100 ms (``writer.py``: a write fails if no member accepted it within 1 s); failed writes,
  split into those inside an etcd leader election (raft term change) and the rest.

    python -m bench.selfhosted [--kills 5] [--rollouts 3] [--crashes 3] [--etcd-rollouts 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import machine, scratch_dir, table, write_section
from tests.runtime.conftest import Daemons
from tests.runtime.selfhosted import local
from tests.runtime.selfhosted.plane import ETCD, MANAGERS, Plane
from tests.runtime.selfhosted.writer import Writer

TTL = "5s"


class EventTap:
    """Every replica's JSON event lines, read from the instance logs as they appear (a destroyed
    replica's log goes with it, so the tap reads every 50 ms in a thread)."""

    def __init__(self, plane: Plane) -> None:
        self.dir = plane.d.home / "instance-process"
        self.events: dict[tuple[str, int, float], dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.read()

    def read(self) -> None:
        for path in list(self.dir.glob("*.log")):
            with contextlib.suppress(OSError):
                for line in path.read_text(errors="replace").splitlines():
                    if line.startswith('{"Seq"'):
                        with contextlib.suppress(ValueError):
                            e = json.loads(line)
                            self.events[(path.name, e["Seq"], e["Time"])] = {**e, "Log": path.name}

    def of(self, kind: str, after: float = 0.0) -> list[dict[str, Any]]:
        return sorted((e for e in list(self.events.values()) if e["Kind"] == kind and e["Time"] >= after),
                      key=lambda e: e["Time"])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def settled(plane: Plane, timeout: float = 300) -> None:
    def ok() -> bool:
        if len(plane.etcd_voters()) != 3 or plane.etcd_healthy() != 3:
            return False
        return all(d["Converged"] and len(d["Instances"]) == 3 and d.get("Status", {}).get("Healthy") == 3
                   for d in (plane.describe(ETCD), plane.describe(MANAGERS)))
    local.wait_for(ok, timeout, "3 + 3 healthy members", interval=0.2)


def etcd_kill(plane: Plane, n: int) -> float:
    lid = plane.etcd_ids[n % 3]
    victim = plane.by_logical_id(ETCD)[lid]
    voters = {m["ID"] for m in plane.etcd_voters()}
    sent = time.monotonic()
    plane.kill(victim)

    def healed() -> bool:
        now = plane.by_logical_id(ETCD).get(lid)
        current = plane.etcd_voters()
        return bool(now and now["ID"] != victim["ID"] and len(current) == 3
                    and {m["ID"] for m in current} != voters and plane.etcd_healthy() == 3)
    local.wait_for(healed, 180, "3 healthy etcd members", interval=0.05)
    return time.monotonic() - sent


def replica_rollout(plane: Plane, tap: EventTap, n: int) -> list[float]:
    settled(plane)
    started = time.time()
    spec = plane.manager_spec
    spec["Properties"]["Flavor"]["Properties"]["Options"]["poll_interval"] = f"{0.5 + 0.01 * (n + 1):.2f}s"
    before = {lid: d["ID"] for lid, d in plane.by_logical_id(MANAGERS).items()}
    plane.commit(spec)

    def rolled() -> bool:
        now = {lid: d["ID"] for lid, d in plane.by_logical_id(MANAGERS).items()}
        return len(now) == 3 and all(now[lid] != before[lid] for lid in before)
    local.wait_for(rolled, 300, "every replica replaced", interval=0.2)
    settled(plane)
    tap.read()
    gaps = []
    for lost in tap.of("leadership_lost", started):
        gained = [e for e in tap.of("leadership_gained", lost["Time"]) if e["Log"] != lost["Log"]]
        if gained:
            gaps.append(gained[0]["Time"] - lost["Time"])
    return gaps


def leader_crash(plane: Plane, tap: EventTap) -> float:
    settled(plane)
    leader = plane.leader()
    assert leader is not None
    member = plane.by_logical_id(MANAGERS)[leader.removeprefix("http://")]
    sent = time.time()
    plane.kill(member)

    def gained() -> float | None:
        tap.read()
        found = tap.of("leadership_gained", sent)
        return found[0]["Time"] if found else None
    return float(local.wait_for(gained, 60, "a new leader", interval=0.05)) - sent


def etcd_rollout(plane: Plane, n: int) -> Any:
    settled(plane)
    spec = plane.etcd_spec
    spec["Properties"]["Flavor"]["Properties"]["Timeout"] = f"{1 + n + 1}s"
    before = {lid: d["ID"] for lid, d in plane.by_logical_id(ETCD).items()}
    with Writer([f"http://{lid}" for lid in plane.etcd_ids], deadline=1.0) as writer:
        plane.commit(spec)

        def rolled() -> bool:
            now = {lid: d["ID"] for lid, d in plane.by_logical_id(ETCD).items()}
            return len(now) == 3 and all(now[lid] != before[lid] for lid in before)
        local.wait_for(rolled, 300, "every etcd member replaced", interval=0.2)
        settled(plane)
    return writer.tally()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} / {max(values):.2f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5, help="etcd members SIGKILLed, one after another")
    parser.add_argument("--rollouts", type=int, default=3, help="rollouts of the replicas")
    parser.add_argument("--crashes", type=int, default=3, help="SIGKILLs of the leading replica")
    parser.add_argument("--etcd-rollouts", type=int, default=2, help="rolling changes of the etcd group")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="infrakit-selfhosted-", dir=scratch_dir()))
    daemons = Daemons(root / "home")
    plane: Plane | None = None
    tap: EventTap | None = None
    try:
        plane = Plane(daemons, ttl=TTL)
        t0 = time.monotonic()
        report = plane.cp.up(timeout=300)
        settled(plane)
        up = time.monotonic() - t0
        print(f"up: 3 + 3 healthy after {up:.1f}s ({report['seconds']})", flush=True)
        tap = EventTap(plane)
        kills = []
        for n in range(args.kills):
            settled(plane)
            kills.append(etcd_kill(plane, n))
            print(f"etcd SIGKILL {n + 1}: 3 healthy after {kills[-1]:.2f}s", flush=True)
        handovers: list[float] = []
        for n in range(args.rollouts):
            gaps = replica_rollout(plane, tap, n)
            handovers += gaps
            print(f"replica rollout {n + 1}: leaderless {', '.join(f'{g:.3f}s' for g in gaps)}", flush=True)
        crashes = []
        for _ in range(args.crashes):
            crashes.append(leader_crash(plane, tap))
            print(f"leader SIGKILL: new leader after {crashes[-1]:.2f}s", flush=True)
        tallies = []
        for n in range(args.etcd_rollouts):
            tallies.append(etcd_rollout(plane, n))
            print(f"etcd rollout {n + 1}: {tallies[-1].line()}", flush=True)
        settled(plane)
    finally:
        if tap is not None:
            tap.close()
        if plane is not None:
            plane.close()
        daemons.stop_all()
        shutil.rmtree(root, ignore_errors=True)

    rows = [
        ["etcd member SIGKILLed → 3 healthy members (replaced: remove, add as learner, promote)", str(len(kills)),
         spread(kills), "≤ 15 s"],
        ["replica rollout: no leader during the handover", str(len(handovers)), spread(handovers), "≤ 1 s"],
        ["leading replica SIGKILLed: no leader", str(len(crashes)), spread(crashes), f"≤ TTL + 1 s = {float(TTL[:-1]) + 1:g} s"],
    ]
    writes = sum(t.writes for t in tallies)
    failed = sum(t.failed for t in tallies)
    explained = sum(t.explained for t in tallies)
    elections = sum(t.elections for t in tallies)
    longest = max((t.longest_gap for t in tallies), default=0.0)
    body = (
        f"Measured {machine()}. One plane on loopback: 3 etcd members and 3 controller "
        f"replicas as `process` instances the plane keeps alive itself (lease TTL {TTL}, poll 0.5 s, the plane's "
        f"health settings: grace 15-20 s, 2 failed checks), grown from one member and one replica in {up:.1f} s. "
        "Median / max, seconds.\n\n"
        + table(["scenario", "trials", "seconds", "target"], rows)
        + f"\n\nRolling change of the etcd group ({len(tallies)} rollouts, each member replaced in turn: drain = "
        "remove from the cluster, then a fresh member added as a learner and promoted) with a client writing every "
        f"100 ms (a write fails when no member accepted it within 1 s): **{failed} failed of {writes}**, "
        f"{explained} of them during {elections} etcd leader election(s), {failed - explained} outside any; longest "
        f"time between two successful writes {longest:.2f} s.\n\n"
        "How: the replicas' own JSON event lines (wall clock, same host) give `leadership_lost` (the handover) and "
        "the next `leadership_gained`; etcd's member list and `/health` give the member counts. A handover stops the "
        "old leader's supervisors, revokes its lease, and the followers' watches fire at once; a crash waits for the "
        "lease to expire. `python -m bench.selfhosted` reproduces it.\n"
    )
    print(body)
    if not args.no_write:
        write_section("Self-hosted control plane (bench/selfhosted.py)", body)


if __name__ == "__main__":
    main()
