"""Soak: 50 groups x 200 instances (file plugin) for minutes, instances killed at a steady rate.

What it shows: whether the daemons stay flat over time under steady churn (RSS and CPU of each
daemon, first quarter of the run against the last), how long a reconcile pass takes (the
manager's ``infrakit_reconcile_duration_seconds`` histogram from ``GET /metrics``), and how long
a lost instance takes to be replaced (from deleting its file to the controller listing the
group at its size again without it). The daemons (manager, file, vanilla) are separate real
processes on Unix sockets in a temp INFRAKIT_HOME; the scale-up from zero is warm-up and is
not measured. At the end the file plugin itself must hold exactly 200 members per group.

    python -m bench.soak [--minutes 5] [--groups 50] [--size 200] [--kill-rate 2] [--interval 10]

Limit: one machine, the file plugin (no real processes: 10,000 of them would not fit here); the
chaos suite (tests/chaos) covers real processes under faults.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import re
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import Home, machine, percentile, table, write_section
from bench.controller import cpu_seconds, memory_kib
from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from infrakit_runtime.rpc.errors import RemoteError


def spec(gid: str, size: int) -> dict[str, Any]:
    return {"ID": gid, "Properties": {
        "Allocation": {"Size": size},
        "Instance": {"Plugin": "file", "Properties": {"note": "soak"}},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Init": ["echo soak"], "Tags": {"tier": "soak"}}},
        "Health": {"GracePeriod": "0s"},
    }}


class UnixHTTP(http.client.HTTPConnection):
    """HTTP over the manager's Unix socket (for ``GET /metrics``)."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(self.path))


_BUCKET = re.compile(r'^infrakit_reconcile_duration_seconds_bucket\{(.*)\} (\S+)$')


def reconcile_buckets(sock: Path) -> dict[float, float] | None:
    """Cumulative reconcile-duration bucket counts summed over groups, or None without /metrics."""
    conn = UnixHTTP(sock)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
        if resp.status != 200:
            return None
    except OSError:
        return None
    finally:
        conn.close()
    out: dict[float, float] = {}
    for line in text.splitlines():
        m = _BUCKET.match(line)
        if m:
            le = re.search(r'le="([^"]+)"', m.group(1))
            if le:
                bound = float("inf") if le.group(1) == "+Inf" else float(le.group(1))
                out[bound] = out.get(bound, 0.0) + float(m.group(2))
    return out or None


def histogram_percentile(first: dict[float, float], last: dict[float, float], p: float) -> float:
    """The upper bucket bound holding the p-th percentile of the passes observed between two scrapes."""
    bounds = sorted(last)
    counts = [last[b] - first.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0
    if total <= 0:
        return float("nan")
    for b, c in zip(bounds, counts, strict=True):
        if c >= p / 100 * total:
            return b
    return bounds[-1]


class Soak:
    """The stack, the killer and the samplers."""

    def __init__(self, *, groups: int, size: int, poll: str) -> None:
        self.groups = [f"g{i:02d}" for i in range(groups)]
        self.size = size
        self.home = Home()
        self.home.start("file")
        self.home.start("vanilla")
        self.home.start("manager", env={"INFRAKIT_GROUP_POLL_INTERVAL": poll})
        self.directory = self.home.path / "instance-file"
        self.kills: list[tuple[float, str, str]] = []  # (time, group, instance id)
        self.replaced: list[float] = []
        self.unreplaced: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def client(self, name: str = "group") -> SyncClient:
        return SyncClient(Address(unix_path=self.home.plugins_dir / name), timeout=120)

    def converge(self) -> float:
        t0 = time.perf_counter()
        c = self.client()
        try:
            for gid in self.groups:
                # A busy file plugin (scanning thousands of files) can miss the commit's handshake deadline:
                # the commit is then refused, nothing applied, and sending it again is the right move.
                for attempt in range(20):
                    try:
                        c.call("Group.CommitGroup", {"Name": "group", "Spec": spec(gid, self.size), "Pretend": False})
                        break
                    except RemoteError as e:
                        print(f"commit of {gid} refused (attempt {attempt + 1}), retrying: {e}")
                        time.sleep(1)
            pending = set(self.groups)
            while pending:
                for gid in sorted(pending):
                    desc = c.call("Group.DescribeGroup", {"Name": "group", "ID": gid})["Description"]
                    if desc["Converged"] and len(desc["Instances"]) == self.size:
                        pending.discard(gid)
                time.sleep(0.5)
        finally:
            c.close()
        return time.perf_counter() - t0

    # -- churn ----------------------------------------------------------------------------

    def killer(self, rate: float, rng: random.Random) -> None:
        """Delete one random instance file every 1/rate seconds, remembering its group."""
        period = 1.0 / rate
        following = time.monotonic()
        while not self._halt.is_set():
            following += period
            names = [e.name for e in self.directory.iterdir() if not e.name.startswith(".")]
            victim = self.directory / rng.choice(names)
            try:
                gid = json.loads(victim.read_text())["Tags"]["infrakit.group"]
                victim.unlink()
            except (OSError, ValueError, KeyError):
                continue
            with self._lock:
                self.kills.append((time.monotonic(), gid, victim.name))
                self.unreplaced[victim.name] = (time.monotonic(), gid)
            self._halt.wait(max(0.0, following - time.monotonic()))

    def watcher(self) -> None:
        """Mark deletions replaced as the controller's view of their group fills back up.

        Kills in one group can overlap, so a group need not be whole again before an earlier
        kill counts as replaced: with ``deficit = size - members`` observed, every pending kill
        of that group whose victim is gone is replaced except the ``deficit`` most recent ones
        (replacements are first come, first served).
        """
        c = self.client()
        try:
            while not self._halt.is_set() or self.unreplaced:
                with self._lock:
                    pending = dict(self.unreplaced)
                for gid in sorted({g for _, g in pending.values()}):
                    try:
                        desc = c.call("Group.DescribeGroup", {"Name": "group", "ID": gid})["Description"]
                    except Exception:
                        continue
                    members = {i["ID"] for i in desc["Instances"]}
                    now = time.monotonic()
                    deficit = max(0, self.size - len(members))
                    with self._lock:
                        mine = sorted((t, iid) for iid, (t, g) in self.unreplaced.items() if g == gid and iid not in members)
                        for t, iid in mine[:max(0, len(mine) - deficit)]:
                            self.replaced.append(now - t)
                            del self.unreplaced[iid]
                if self._halt.is_set() and time.monotonic() > self._drain_deadline:
                    return
                time.sleep(0.02)
        finally:
            c.close()

    # -- the run --------------------------------------------------------------------------

    def run(self, *, minutes: float, rate: float, interval: float, seed: int) -> dict[str, Any]:
        warmup = self.converge()
        print(f"warm-up: {len(self.groups)} x {self.size} converged in {warmup:.1f} s; soaking {minutes:g} min")
        procs = dict(self.home.procs)
        samples: list[dict[str, Any]] = []
        scrape0 = reconcile_buckets(self.home.plugins_dir / "group")
        self._drain_deadline = float("inf")
        threads = [threading.Thread(target=self.killer, args=(rate, random.Random(seed)), daemon=True),
                   threading.Thread(target=self.watcher, daemon=True)]
        for t in threads:
            t.start()
        start = time.monotonic()
        end = start + minutes * 60
        prev_cpu = {n: cpu_seconds([p.pid]) for n, p in procs.items()}
        prev_t = start
        while time.monotonic() < end:
            time.sleep(min(interval, max(0.0, end - time.monotonic())))
            now = time.monotonic()
            row: dict[str, Any] = {"t": now - start}
            for n, p in procs.items():
                cpu = cpu_seconds([p.pid])
                row[n] = {"rss_mib": memory_kib([p.pid], "VmRSS") / 1024, "cpu": (cpu - prev_cpu[n]) / (now - prev_t)}
                prev_cpu[n] = cpu
            prev_t = now
            row["buckets"] = reconcile_buckets(self.home.plugins_dir / "group")
            with self._lock:
                row["kills"], row["replaced"] = len(self.kills), len(self.replaced)
            samples.append(row)
            print(f"  t={row['t']:6.0f}s " + "  ".join(f"{n}: {row[n]['rss_mib']:.0f} MiB {row[n]['cpu'] * 100:.0f}%"
                                                    for n in procs) + f"  kills {row['kills']} replaced {row['replaced']}")
        self._halt.set()
        self._drain_deadline = time.monotonic() + 60
        for t in threads:
            t.join(90)
        members = self.final_members()
        return {"warmup_s": warmup, "samples": samples, "scrape0": scrape0, "procs": list(procs),
                "replaced": list(self.replaced), "kills": len(self.kills), "unreplaced": len(self.unreplaced),
                "members": members}

    def final_members(self) -> dict[str, int]:
        """Members per group as the file plugin itself reports them, once the controller has settled."""
        c = self.client("file")
        try:
            deadline = time.monotonic() + 60
            while True:
                counts = {gid: len(c.call("Instance.DescribeInstances", {"Tags": {"infrakit.group": gid}})["Descriptions"])
                          for gid in self.groups}
                if all(n == self.size for n in counts.values()) or time.monotonic() > deadline:
                    return counts
                time.sleep(1)
        finally:
            c.close()

    def close(self) -> None:
        self._halt.set()
        self.home.close()


def quarter_means(samples: list[dict[str, Any]], name: str, key: str) -> tuple[float, float]:
    q = max(1, len(samples) // 4)
    return (statistics.mean(s[name][key] for s in samples[:q]), statistics.mean(s[name][key] for s in samples[-q:]))


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    samples = r["samples"]
    rows = []
    for name in r["procs"]:
        rss0, rss1 = quarter_means(samples, name, "rss_mib")
        cpu0, cpu1 = quarter_means(samples, name, "cpu")
        rows.append([f"{name} daemon: RSS", f"{rss0:.1f} MiB", f"{rss1:.1f} MiB", f"{(rss1 - rss0) / rss0 * 100:+.1f} %"])
        rows.append([f"{name} daemon: CPU (share of one core)", f"{cpu0 * 100:.1f} %", f"{cpu1 * 100:.1f} %",
                     f"{(cpu1 - cpu0) * 100:+.1f} points"])
    text = table(["per daemon (mean of the samples in each quarter)", "first quarter", "last quarter", "change"], rows)
    lat = r["replaced"]
    first, last = r["scrape0"], samples[-1]["buckets"] if samples else None
    if first and last:
        recon = (f"p50 ≤ {histogram_percentile(first, last, 50) * 1000:g} ms, p90 ≤ {histogram_percentile(first, last, 90) * 1000:g} ms, "
                 f"p99 ≤ {histogram_percentile(first, last, 99) * 1000:g} ms over {last.get(float('inf'), 0) - first.get(float('inf'), 0):.0f} passes "
                 "(manager /metrics, bucket upper bounds)")
    else:
        recon = "the manager exposes no /metrics"
    members = r["members"]
    wrong = {g: n for g, n in members.items() if n != args.size}
    rows2 = [
        ["groups x instances", f"{args.groups} x {args.size} = {args.groups * args.size:,} (file plugin), poll {args.poll}"],
        ["warm-up (0 → all converged, not measured below)", f"{r['warmup_s']:.1f} s"],
        ["soak", f"{args.minutes:g} min, one instance file deleted every {1 / args.kill_rate:g} s "
                 f"({r['kills']} deleted), samples every {args.interval:g} s"],
        ["replacement latency (file deleted → group at size again)",
         f"p50 {percentile(lat, 50):.2f} s, p90 {percentile(lat, 90):.2f} s, p99 {percentile(lat, 99):.2f} s, "
         f"max {max(lat) if lat else float('nan'):.2f} s ({len(lat)} replaced, {r['unreplaced']} not)"],
        ["reconcile pass duration", recon],
        ["members per group at the end (from the file plugin)",
         "all " + str(args.size) if not wrong else f"WRONG: {wrong}"],
    ]
    return table(["soak", "figure"], rows2) + "\n\n" + text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--kill-rate", type=float, default=2.0, help="instance files deleted per second")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--poll", default="5s", help="the manager's poll interval")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    soak = Soak(groups=args.groups, size=args.size, poll=args.poll)
    try:
        r = soak.run(minutes=args.minutes, rate=args.kill_rate, interval=args.interval, seed=args.seed)
    finally:
        soak.close()
    text = report(r, args)
    print(text)
    out = Path("tests/output")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench-soak.json").write_text(json.dumps({k: v for k, v in r.items() if k != "samples"} |
                                                    {"samples": [{k: v for k, v in s.items() if k != "buckets"}
                                                                 for s in r["samples"]]}, indent=1, default=str))
    if not args.no_record:
        write_section("Soak (bench/soak.py)", f"Machine: {machine()}.\n\n{text}\n\n"
                      "Manager, file and vanilla daemons are separate processes. RSS and CPU are the means of the "
                      "samples in the first and last quarter of the soak (after the warm-up): flat means no leak "
                      "and no creeping work. Replacement latency is measured from the deletion of an instance file "
                      "until DescribeGroup lists the group without it and as many members short of its size as there "
                      "are later deletions in that group still pending (kills overlap at this rate); the file plugin's directory watch wakes the controller, so it does not wait for the "
                      "poll interval.")


if __name__ == "__main__":
    main()
