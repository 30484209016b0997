"""Scale-out: many groups shared by three replicas on a real 3-member etcd (issue 18).

Three ``manager`` replicas (real processes, ``sharding: groups``, lease TTL 5 s) share one
``file`` instance plugin and one ``vanilla`` flavor on a real 3-member etcd cluster on loopback
(the HA test harness, ``tests/runtime/ha/sharded.py``). The bench commits ``--groups`` groups of
``--size`` instances through the replicas in turn (each commit reaches its group's owner), and
measures:

- **converge**: from the first commit until every instance file exists and every group
  says Converged;
- **steady state**: per replica, its share of one core over ``--steady`` seconds and its RSS
  (and the shared file and vanilla daemons', for scale), with how many groups it owns;
- **move after SIGKILL**: one replica is SIGKILLed; the time until the survivors own all of its
  groups (each exactly once, read from their Manager.Status) and until those groups are
  Converged again under their new owners;
- **actions by non-owners**: every Provision/Destroy/Label/Drain any replica sent, from its
  debug log, checked against when that replica owned the group (its own ``ownership_gained`` /
  ``ownership_lost`` events): must be 0.

    python -m bench.scale [--groups 500 --size 200] [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, scratch_dir, table, write_section
from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from tests.runtime.conftest import Daemons
from tests.runtime.etcd_cluster import NAMES, EtcdCluster
from tests.runtime.ha.cluster import etcd_backend, stop_everything, wait_for
from tests.runtime.ha.sharded import Sharded

CLK_TCK = os.sysconf("SC_CLK_TCK")
TTL = 5.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def instance_files(directory: Path) -> int:
    with os.scandir(directory) as entries:
        return sum(1 for e in entries if not e.name.startswith("."))


def spec(gid: str, size: int) -> dict[str, Any]:
    return {"ID": gid, "Properties": {"Allocation": {"Size": size},
                                      "Instance": {"Plugin": "file", "Properties": {"note": "scale"}},
                                      "Flavor": {"Plugin": "vanilla", "Properties": {}},
                                      "Health": {"GracePeriod": "0s"}}}


def not_converged(stack: Sharded, groups: list[str], via: list[str]) -> list[str]:
    """The groups that do not say Converged right now (asked through the live replicas in turn)."""
    def ask(i_gid: tuple[int, str]) -> str | None:
        i, gid = i_gid
        try:
            desc = stack.rpc(via[i % len(via)], "Group.DescribeGroup", {"ID": gid}, timeout=60)["Description"]
        except (RemoteError, UnreachableError, OSError):
            return gid
        return None if desc.get("Converged") else gid

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return [g for g in pool.map(ask, enumerate(groups)) if g is not None]


def owners(stack: Sharded) -> dict[str, str] | None:
    """group → replica once every live replica answers and no group is owned twice; else None."""
    out: dict[str, str] = {}
    for name in stack.live():
        try:
            owned = stack.status(name, timeout=10)["Owned"]
        except (RemoteError, UnreachableError, OSError, KeyError):
            return None
        for gid in owned:
            if gid in out:
                return None
            out[gid] = name
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--poll", default="5s", help="each replica's poll interval")
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of steady state measured")
    parser.add_argument("--quick", action="store_true", help="50 groups x 20 (a smoke run)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    if args.quick:
        args.groups, args.size, args.steady = 50, 20, 10.0
    groups = [f"g{i:03d}" for i in range(args.groups)]
    total = args.groups * args.size

    root = Path(tempfile.mkdtemp(prefix="infrakit-scale-", dir=scratch_dir()))
    etcd = EtcdCluster(root / "etcd")
    (root / "etcd").mkdir()
    daemons = Daemons(root / "home")
    stack: Sharded | None = None
    out: dict[str, Any] = {}
    try:
        for name in NAMES:
            etcd.start(name)
        etcd.wait_healthy()
        stack = Sharded(daemons, backend=etcd_backend(etcd, "/bench-scale/", ttl=f"{TTL:g}s"), poll=args.poll)
        names = list(stack.names)
        wait_for(lambda: all(len(stack.status(n)["Members"] or {}) == len(names) for n in names), 60,
                 "every replica to see the others")

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda i_g: stack.rpc(names[i_g[0] % len(names)], "Group.CommitGroup",
                                                {"Spec": spec(i_g[1], args.size), "Pretend": False}, timeout=120),
                          enumerate(groups)))
        out["commit"] = time.monotonic() - t0
        print(f"committed {len(groups)} groups in {out['commit']:.1f}s", flush=True)
        wait_for(lambda: instance_files(stack.files) >= total, 3600, f"{total} instance files", interval=0.5)
        out["files"] = time.monotonic() - t0
        print(f"{total} instance files after {out['files']:.1f}s", flush=True)
        wait_for(lambda: not not_converged(stack, groups, names), 1800, "every group Converged", interval=1.0)
        out["converge"] = time.monotonic() - t0
        print(f"every group converged after {out['converge']:.1f}s", flush=True)

        owned = wait_for(lambda: (o := owners(stack)) is not None and len(o) == len(groups) and o, 120,
                         "every group owned once")
        share = {n: sum(1 for o in owned.values() if o == n) for n in names}
        time.sleep(2 * TTL)  # settle: the last passes after converging
        pids = {n: stack.d.procs[n].pid for n in [*names, "file", "vanilla"]}
        cpu0 = {n: cpu_seconds(p) for n, p in pids.items()}
        w0 = time.monotonic()
        samples: dict[str, list[float]] = {n: [] for n in pids}
        while time.monotonic() - w0 < args.steady:
            for n, p in pids.items():
                samples[n].append(rss_mib(p))
            time.sleep(1.0)
        wall = time.monotonic() - w0
        out["steady"] = {n: {"cpu": 100 * (cpu_seconds(p) - cpu0[n]) / wall, "rss": statistics.median(samples[n]),
                             "groups": share.get(n)} for n, p in pids.items()}

        victim = max(names, key=lambda n: share[n])
        theirs = sorted(g for g, o in owned.items() if o == victim)
        killed = stack.kill(victim)
        k0 = time.monotonic()
        moved = wait_for(lambda: (o := owners(stack)) is not None and set(theirs) <= set(o) and o, TTL + 120,
                         f"{victim}'s groups owned by survivors", interval=0.05)
        out["moved"] = time.monotonic() - k0
        claims = [e for n in names if n != victim for e in stack.events(n, "ownership_gained") if e["Time"] > killed]
        out["claims"] = len(claims)
        out["claimed_once"] = sorted(e["Group"] for e in claims) == theirs
        out["others_moved"] = sum(1 for g, o in owned.items() if o != victim and moved.get(g) != o)
        wait_for(lambda: not not_converged(stack, theirs, [n for n in names if n != victim]), 600,
                 f"{victim}'s groups Converged under their new owners", interval=0.5)
        out["reconverged"] = time.monotonic() - k0
        out["victim"], out["victim_groups"] = victim, len(theirs)
        out["to"] = {n: sum(1 for g in theirs if moved[g] == n) for n in names if n != victim}
        time.sleep(1.0)  # the last log lines
        out["bad"] = stack.overlaps()
        out["actions"] = len(stack.group_actions())
    finally:
        if stack is not None:
            stop_everything(stack)
        else:
            daemons.stop_all()
        etcd.stop_all()
        shutil.rmtree(root, ignore_errors=True)

    rows = [["converge: first commit → every instance file written", f"{out['files']:.1f} s"],
            ["converge: → every group says Converged", f"{out['converge']:.1f} s (commits alone {out['commit']:.1f} s)"]]
    for n, s in out["steady"].items():
        who = f"replica {n} ({s['groups']} groups)" if s["groups"] is not None else f"{n} daemon (shared)"
        rows.append([f"steady state, {who}", f"{s['cpu']:.1f} % of one core, RSS {s['rss']:.0f} MiB"])
    rows += [
        [f"SIGKILL of {out['victim']} ({out['victim_groups']} groups): survivors own them all",
         f"{out['moved']:.2f} s (TTL {TTL:g} s); to {', '.join(f'{n}: {c}' for n, c in out['to'].items())}"],
        ["same: those groups Converged again under their new owners", f"{out['reconverged']:.2f} s"],
        ["claims after the kill / each of its groups claimed exactly once / other groups moved",
         f"{out['claims']} / {'yes' if out['claimed_once'] else 'NO'} / {out['others_moved']}"],
        ["mutating plugin calls sent outside the sender's ownership of the group (of all sent)",
         f"**{len(out['bad'])}** (of {out['actions']})"],
    ]
    body = "\n\n".join([
        f"Measured {machine()}. {args.groups} groups x {args.size} instances = {total:,} (file plugin, "
        f"vanilla flavor), three `manager` replicas with `sharding: groups` as real processes on a real "
        f"3-member etcd cluster on loopback (lease TTL {TTL:g} s, poll {args.poll}), all on this one "
        "machine with the shared plugins and etcd.",
        table(["figure", "value"], rows),
    ])
    print(body)
    for line in out["bad"][:20]:
        print("NON-OWNER ACTION:", line)
    if not args.no_record and not args.quick:
        write_section("Scale-out over three replicas (bench/scale.py)", body)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
