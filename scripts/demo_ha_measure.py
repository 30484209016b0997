"""`make demo-ha`'s measurements on the running plane in PREFIX (scripts/demo-ha.sh).

SIGKILL one etcd member: seconds until etcd lists 3 voters again, all answering /health.
Manager.HandOver on the leading replica: seconds until another replica leads.
SIGKILL the leading replica: seconds until another leads, then until the group is whole again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infrakit_runtime.controlplane import ControlPlane
from tests.runtime.selfhosted import local


def whole(cp: ControlPlane) -> bool:
    voters = [m for m in local.members(cp.etcd.logical_ids[0]) if not m.get("isLearner")] if any(
        local.health(lid) for lid in cp.etcd.logical_ids) else []
    if len(voters) != 3 or sum(local.health(lid) for lid in cp.etcd.logical_ids) != 3:
        return False
    return all(cp.converged(g) and all(cp.healthy(g, d) for d in cp.members(g)) for g in (cp.etcd, cp.managers))


def main(prefix: Path) -> None:
    cp = ControlPlane(etcd=json.loads((prefix / "etcd.json").read_text()),
                      managers=json.loads((prefix / "managers.json").read_text()), plugins_dir=prefix / "plugins")
    try:
        local.wait_for(lambda: whole(cp), 300, "3 + 3 healthy members", interval=0.2)
        lid = cp.etcd.logical_ids[-1]
        victim = next(d for d in cp.members(cp.etcd) if d["LogicalID"] == lid)
        t = time.monotonic()
        os.killpg(int(victim["Properties"]["PID"]), signal.SIGKILL)
        local.wait_for(lambda: any(d["LogicalID"] == lid and d["ID"] != victim["ID"] for d in cp.members(cp.etcd))
                       and whole(cp), 300, "the etcd member replaced", interval=0.05)
        print(f"   etcd member {lid} SIGKILLed: 3 healthy members again after {time.monotonic() - t:.1f}s "
              f"(removed, re-added as a learner, promoted)")

        leader = cp.status()["Leader"]
        t = time.monotonic()
        cp._replica(leader).call("Manager.HandOver", {"Reason": "make demo-ha"})
        new = local.wait_for(lambda: (s := cp.status()) and s["Leader"] not in (None, leader) and s["Leader"], 60,
                             "a new leader", interval=0.01)
        print(f"   leader {leader} handed over: {new} leads after {time.monotonic() - t:.2f}s")

        victim = next(d for d in cp.members(cp.managers) if f"http://{d['LogicalID']}" == new)
        t = time.monotonic()
        os.killpg(int(victim["Properties"]["PID"]), signal.SIGKILL)
        newer = local.wait_for(lambda: (s := cp.status()) and s["Leader"] not in (None, new) and s["Leader"], 60,
                               "a new leader", interval=0.01)
        led = time.monotonic() - t
        local.wait_for(lambda: whole(cp), 300, "the replica replaced", interval=0.2)
        print(f"   leading replica {new} SIGKILLed: {newer} leads after {led:.1f}s (the lease TTL), "
              f"3 healthy replicas again after {time.monotonic() - t:.1f}s")
    finally:
        cp.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
