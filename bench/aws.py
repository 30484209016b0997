"""AWS plugin against moto: converging 1,000 instances with and without batching, and describe cost.

Drives the plugin object directly (the group controller is not ready yet): "converge N"
means provisioning N cattle slots of one group, then one DescribeInstances by group tag
to confirm all N are live. Without batching every slot is its own RunInstances
(``provision``, 16 in flight); with batching ``provision_many`` groups the identical
slots into RunInstances calls of up to 100 (MinCount=MaxCount, because moto launches
only MinCount). Each EC2 request is timed at the HTTP layer (botocore's ``before-send``
to ``response-received``) to show how much of the wall time moto itself took.

The steady-state cycle is one ``describe_instances`` by group tag, as the supervisor
would poll; its API-call count must stay at what pagination needs (1 page per 1,000).
Prints a table and records it in docs/benchmarks.md ("AWS plugin (moto)").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from bench.common import machine, table, write_section
from infrakit_runtime.plugins.instance import aws
from infrakit_runtime.spi import instance

TITLE = "AWS plugin (moto)"
GROUP = "bench"


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while reset(port) != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def reset(port: int) -> int:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/moto-api/reset")
        return conn.getresponse().status
    except OSError:
        return 0


class HttpTimer:
    """Records each EC2 request's interval between send and parsed response (per thread)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self.intervals: list[tuple[float, float]] = []
        self._local = threading.local()
        self._lock = threading.Lock()

    def busy(self) -> float:
        """Wall time during which at least one request was waiting on EC2 (union of intervals)."""
        out, end = 0.0, float("-inf")
        for a, b in sorted(self.intervals):
            if a > end:
                out += b - a
                end = b
            elif b > end:
                out += b - end
                end = b
        return out

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-send.ec2.*", self._start)
        client.meta.events.register("response-received.ec2.*", self._stop)

    def _start(self, **kwargs: Any) -> None:
        self._local.t0 = time.perf_counter()

    def _stop(self, **kwargs: Any) -> None:
        now = time.perf_counter()
        t0 = getattr(self._local, "t0", now)
        elapsed = now - t0
        with self._lock:
            self.intervals.append((t0, now))
            self.total += elapsed
            self.count += 1


def specs(n: int) -> list[instance.Spec]:
    tags = {"infrakit.group": GROUP, "infrakit.config.hash": "benchhash"}
    return [instance.Spec(properties={"ImageId": "ami-03cf127a", "InstanceType": "t3.micro"},
                          tags={**tags, "infrakit.slot": str(i), "infrakit.attempt": "0"}) for i in range(n)]


async def plugin_for(endpoint: str, **options: Any) -> tuple[aws.AwsInstancePlugin, HttpTimer]:
    p = aws.build({"endpoint_url": endpoint, "region": "us-east-1", **options})
    await p.ec2.connect()
    timer = HttpTimer()
    timer.attach(p.ec2.client)
    return p, timer


async def converge(endpoint: str, n: int, batch: bool) -> dict[str, Any]:
    p, timer = await plugin_for(endpoint, batch_min_count="all", max_batch=100, concurrency=16)
    try:
        t0 = time.perf_counter()
        if batch:
            results = await p.provision_many(specs(n))
            failed = [r.error for r in results if r.id is None]
        else:
            outcome = await asyncio.gather(*(p.provision(s) for s in specs(n)), return_exceptions=True)
            failed = [str(r) for r in outcome if isinstance(r, BaseException)]
        wall = time.perf_counter() - t0
        found = await p.describe_instances({"infrakit.group": GROUP}, False)
        if failed or len(found) != n:
            raise RuntimeError(f"converge {n} (batch={batch}): {len(found)} live, {len(failed)} failed: {failed[:3]}")
        return {"mode": "ProvisionMany (batches of 100)" if batch else "Provision per slot (16 in flight)",
                "n": n, "run": p.ec2.requests.get("RunInstances", 0), "wall": wall,
                "http": sum(b - a for a, b in timer.intervals[:-1]), "busy": timer.busy() - (
                    timer.intervals[-1][1] - timer.intervals[-1][0]), "calls": timer.count - 1}
    finally:
        p.ec2.close()


async def describe_cycles(endpoint: str, n: int, cycles: int = 3) -> dict[str, Any]:
    p, timer = await plugin_for(endpoint)
    try:
        t0 = time.perf_counter()
        for _ in range(cycles):
            found = await p.describe_instances({"infrakit.group": GROUP}, True)
            assert len(found) == n, (len(found), n)
        wall = (time.perf_counter() - t0) / cycles
        return {"n": n, "calls": p.ec2.requests.get("DescribeInstances", 0) / cycles, "wall": wall,
                "http": timer.total / cycles}
    finally:
        p.ec2.close()


async def main_async(endpoint: str, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    port = int(endpoint.rsplit(":", 1)[1])
    converged, described = [], []
    for batch in (False, True):
        reset(port)
        converged.append(await converge(endpoint, n, batch))
        described.append({**await describe_cycles(endpoint, n), "layout": "1 per reservation" if not batch
                          else "100 per reservation"})
    reset(port)
    small = max(1, n // 10)
    await converge(endpoint, small, True)
    described.insert(0, {**await describe_cycles(endpoint, small), "layout": "100 per reservation"})
    return converged, described


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="instances to converge (default 1000)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ[key] = value
    with moto_server() as endpoint:
        converged, described = asyncio.run(main_async(endpoint, args.n))
    t1 = table(["launch", "instances", "RunInstances calls", "wall", "waiting on EC2 (moto)",
                "mean RunInstances", "instances/s"],
               [[c["mode"], c["n"], c["run"], f"{c['wall']:.2f} s",
                 f"{c['busy']:.2f} s ({c['busy'] / c['wall']:.0%} of wall)",
                 f"{1000 * c['http'] / max(c['calls'], 1):.0f} ms", f"{c['n'] / c['wall']:.0f}"] for c in converged])
    t2 = table(["steady state: DescribeInstances by group tag", "instances", "API calls per cycle", "wall per cycle",
                "of which EC2 (moto)"],
               [[f"instances {d['layout']}", d["n"], f"{d['calls']:g}", f"{1000 * d['wall']:.0f} ms",
                 f"{1000 * d['http']:.0f} ms"] for d in described])
    print(t1, "\n", t2, sep="\n")
    if args.no_write:
        return
    write_section(TITLE, f"""
`python -m bench.aws` — {machine()}.

The plugin object is driven directly against moto's standalone EC2 server on loopback
(the group controller is not ready yet): "converge" provisions {args.n} cattle slots of one
group (timed below), then one DescribeInstances by group tag confirms they are live.
Batches use MinCount=MaxCount (moto launches only MinCount). "Waiting on EC2" is the wall
time during which at least one request was outstanding at the HTTP layer (send to parsed
response); "mean RunInstances" is per request, with up to 16 in flight (moto serializes
them, so concurrency lengthens each one).

{t1}

{t2}

moto is the bottleneck here, not the plugin: nearly all of the wall time is spent waiting
for moto's answers. A steady-state cycle stays at one DescribeInstances call per 1,000
instances (pages of 1,000); it grows only with pagination, never per instance.
""")


if __name__ == "__main__":
    main()
