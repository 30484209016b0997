"""AWS plugin against moto: a 1,000-instance group converging through the controller, batched or not.

Two layers, one moto. Through the controller (manager + aws + vanilla daemons, real
processes): commit a group of N, time it to converged, count RunInstances, with the aws
daemon's ProvisionMany (identical slots 100 per RunInstances) and without it
(``provision_many=false``: one Provision per slot, as InfraKit's controller does); then
count EC2 requests per steady-state reconcile pass at N/10 and N instances, which must
grow only with DescribeInstances pagination (1 page per 1,000), never per instance. The
plugin object alone: the same N slots provisioned directly, and one describe cycle.

moto runs behind ``tests/runtime/plugins/moto_front.py`` (the tests' front, transparent until
told otherwise), which records every request it answers: that is where calls are counted and
where "how much of the time moto itself took" is measured, since boto3 runs inside the aws
daemon. Prints tables and records them in docs/benchmarks.md ("AWS plugin (moto)").

``--spread``: 1,000 members spread over three subnets by the spread selector, behind a target
group (the targetgroup flavor, health from the load balancer), one subnet refusing capacity
(the front answers InsufficientInstanceCapacity) until the group converged over two, then
recovering: calls per action in each phase, the balance reached, the fewest live instances
during the rebalance, and a steady pass's requests. Recorded in "AWS: 1,000 members over
three subnets (moto)".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from bench import common
from bench.common import REPO, machine, table, write_section
from infrakit_runtime.plugins.instance import aws
from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from infrakit_runtime.rpc.errors import RemoteError
from infrakit_runtime.spi import instance

TITLE = "AWS plugin (moto)"
GROUP = "bench"


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.runtime.plugins.moto_front", str(port)], cwd=REPO,
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
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _http(port: int, method: str, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def reset(port: int) -> int:
    """Empty moto, the front's faults and its request records."""
    try:
        status, _ = _http(port, "POST", "/moto-api/reset")
        return status
    except OSError:
        return 0


def moto_records(port: int, clear: bool = False) -> list[tuple[str, bool, float, float]]:
    """The requests moto answered since the last clear: (action, first page, start, end)."""
    _, body = _http(port, "POST" if clear else "GET", "/moto-front/records")
    return [tuple(r) for r in json.loads(body)]


def front(port: int, **state: Any) -> dict[str, Any]:
    """Configure what moto_front injects (see tests/runtime/plugins/moto_front.py); its state and counts."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST" if state else "GET", "/moto-front", body=json.dumps(state).encode())
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def front_events(port: int) -> list[tuple[float, str, list[str]]]:
    """(time, action, IDs) of every RunInstances, TerminateInstances, RegisterTargets, DeregisterTargets."""
    _, body = _http(port, "GET", "/moto-front/events")
    return [tuple(e) for e in json.loads(body)]


def busy(intervals: list[tuple[float, float]]) -> float:
    """Wall time during which at least one of ``intervals`` was open (their union)."""
    out, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if a > end:
            out += b - a
            end = b
        elif b > end:
            out += b - end
            end = b
    return out


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
        return busy(self.intervals)

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


# -- through the controller: manager + aws + vanilla daemons ------------------------------------

CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
         "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
         "AWS_EC2_METADATA_DISABLED": "true"}
POLL = "1s"
STEADY_CYCLES = 3


def group_spec(n: int) -> dict[str, Any]:
    return {"ID": GROUP, "Properties": {
        "Allocation": {"Size": n},
        "Instance": {"Plugin": "aws", "Properties": {"ImageId": "ami-03cf127a", "InstanceType": "t3.micro"}},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Init": ["echo hello"]}},
    }}


def manager_call(h: common.Home, method: str, params: dict[str, Any], timeout: float = 120) -> Any:
    client = SyncClient(Address(unix_path=h.plugins_dir / "group"), name="group", timeout=timeout)
    try:
        return client.call(method, {"Name": "group", **params})
    finally:
        client.close()


def commit(h: common.Home, spec: dict[str, Any]) -> None:
    """CommitGroup, retried while the manager names itself as the leader it has not yet become."""
    deadline = time.monotonic() + 15
    while True:
        try:
            manager_call(h, "Group.CommitGroup", {"Spec": spec, "Pretend": False})
            return
        except (RemoteError, OSError) as e:
            if time.monotonic() > deadline or (isinstance(e, RemoteError) and "not the leader" not in e.message):
                raise
        time.sleep(0.1)


def events(h: common.Home, kind: str) -> list[dict[str, Any]]:
    """The manager's events of ``kind`` (it logs each as a JSON line: events_json)."""
    out = []
    for line in (h.path / "group.log").read_text(errors="replace").splitlines():
        at = line.find('{"Seq"')
        if at >= 0 and f'"Kind": "{kind}"' in line:
            out.append(json.loads(line[at:]))
    return out


def stack(endpoint: str, *aws_options: str) -> contextlib.AbstractContextManager[common.Home]:
    """A fresh INFRAKIT_HOME with the aws (moto launches only MinCount: all or nothing), vanilla and manager daemons."""

    @contextlib.contextmanager
    def run() -> Iterator[common.Home]:
        with common.home() as h:
            opts = ["-o", f"endpoint_url={endpoint}", "-o", "region=us-east-1", "-o", "batch_min_count=all"]
            for o in aws_options:
                opts += ["-o", o]
            h.start("aws", *opts, env=CREDS)
            h.start("vanilla")
            h.start("manager", "-o", "events_json=true",
                    env={"INFRAKIT_GROUP_POLL_INTERVAL": POLL, "INFRAKIT_CLIENT_TIMEOUT": "300s"})
            yield h
    return run()


def converge_through_controller(endpoint: str, n: int, *aws_options: str,
                                steady: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Commit a group of ``n``; time until every instance passed its first health check; then a steady state.

    Converged = the pass in which the n-th distinct instance was reported healthy (vanilla
    without a probe: healthy at its first check, so that pass plans nothing more).
    DescribeGroup is called only once, at the end, to confirm: each call costs a full
    DescribeInstances, which would slow moto down during the measurement.
    """
    port = int(endpoint.rsplit(":", 1)[1])
    reset(port)
    with stack(endpoint, *aws_options) as h:
        moto_records(port, clear=True)
        t0 = time.time()
        commit(h, group_spec(n))
        deadline = time.monotonic() + 900
        while True:
            healthy = events(h, "instance_healthy")
            if len({e["Instance"] for e in healthy}) >= n:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"group of {n} did not converge: {len(healthy)} healthy; see {h.path}/group.log")
            time.sleep(0.5)
        t1 = max(e["Time"] for e in healthy)
        records = [r for r in moto_records(port) if r[2] <= t1]
        steady_row = steady_state(port, n) if steady else None
        desc = manager_call(h, "Group.DescribeGroup", {"ID": GROUP})["Description"]
        if not desc.get("Converged") or len(desc["Instances"]) != n:
            raise RuntimeError(f"group of {n} not converged after all: {str(desc.get('Status'))[:500]}")
        failed = len(events(h, "provision_failed"))
    run = [(a, b) for action, _, a, b in records if action == "RunInstances"]
    describe = [(a, b) for action, _, a, b in records if action == "DescribeInstances"]
    row = {"n": n, "mode": aws_options, "wall": t1 - t0, "run": len(run), "busy": busy([(a, b) for *_, a, b in records]),
           "run_busy": busy(run), "describes": len(describe), "describe_busy": busy(describe), "failed": failed}
    return row, steady_row


def steady_state(port: int, n: int) -> dict[str, Any]:
    """EC2 requests per reconcile pass, counted at moto over STEADY_CYCLES whole passes.

    A pass starts with the first page of its DescribeInstances (no NextToken); every
    request from one such start to the next belongs to that pass.
    """
    time.sleep(1.0)  # let the converging pass finish
    moto_records(port, clear=True)
    deadline = time.monotonic() + 300
    while True:
        records = moto_records(port)
        starts = sorted(r[2] for r in records if r[0] == "DescribeInstances" and r[1])
        if len(starts) > STEADY_CYCLES:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(starts)} passes in 300 s at {n} instances")
        time.sleep(0.5)
    first, last = starts[0], starts[STEADY_CYCLES]
    window = [r for r in records if first <= r[2] < last]
    by_action: dict[str, int] = {}
    for action, *_ in window:
        by_action[action] = by_action.get(action, 0) + 1
    describes = [r[3] - r[2] for r in window if r[0] == "DescribeInstances"]
    return {"n": n, "calls": len(window) / STEADY_CYCLES, "by_action": by_action,
            "period": (last - first) / STEADY_CYCLES, "describe": sum(describes) / STEADY_CYCLES}


def controller_rows(endpoint: str, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    small = max(1, n // 10)
    batched, steady_big = converge_through_controller(endpoint, n)
    per_slot, _ = converge_through_controller(endpoint, n, "provision_many=false", steady=False)
    _, steady_small = converge_through_controller(endpoint, small)
    return [per_slot, batched], [r for r in (steady_small, steady_big) if r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=1000, help="instances to converge (default 1000)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    ap.add_argument("--spread", action="store_true", help="run only the spread-over-three-subnets scenario")
    args = ap.parse_args()
    os.environ.update({k: v for k, v in CREDS.items() if k != "AWS_DEFAULT_REGION"})
    if args.spread:
        from bench import aws_spread

        with moto_server() as endpoint:
            aws_spread.main(endpoint, args.n, write=not args.no_write)
        return
    with moto_server() as endpoint:
        converged, described = asyncio.run(main_async(endpoint, args.n))
        controlled, steady = controller_rows(endpoint, args.n)
    t1 = table(["launch", "instances", "RunInstances calls", "wall", "waiting on EC2 (moto)",
                "mean RunInstances", "instances/s"],
               [[c["mode"], c["n"], c["run"], f"{c['wall']:.2f} s",
                 f"{c['busy']:.2f} s ({c['busy'] / c['wall']:.0%} of wall)",
                 f"{1000 * c['http'] / max(c['calls'], 1):.0f} ms", f"{c['n'] / c['wall']:.0f}"] for c in converged])
    t2 = table(["steady state: DescribeInstances by group tag", "instances", "API calls per cycle", "wall per cycle",
                "of which EC2 (moto)"],
               [[f"instances {d['layout']}", d["n"], f"{d['calls']:g}", f"{1000 * d['wall']:.0f} ms",
                 f"{1000 * d['http']:.0f} ms"] for d in described])
    t3 = table(["controller → aws daemon", "instances", "RunInstances calls", "wall to converged",
                "moto busy (any request)", "of which RunInstances", "DescribeInstances (moto time)",
                "failed provisions"],
               [["ProvisionMany (batches of 100)" if not c["mode"] else "Provision per slot (provision_many=false)",
                 c["n"], c["run"], f"{c['wall']:.1f} s", f"{c['busy']:.1f} s ({c['busy'] / c['wall']:.0%})",
                 f"{c['run_busy']:.1f} s", f"{c['describes']} ({c['describe_busy']:.1f} s)", c["failed"]]
                for c in controlled])
    t4 = table(["steady state: one reconcile pass", "instances", "EC2 requests per pass", "by action",
                "pass period (poll 1 s)", "DescribeInstances time in moto per pass"],
               [["group converged, nothing to do", s["n"], f"{s['calls']:g}",
                 ", ".join(f"{k} {v / STEADY_CYCLES:g}" for k, v in sorted(s["by_action"].items())),
                 f"{s['period']:.2f} s", f"{1000 * s['describe']:.0f} ms"] for s in steady])
    print(t1, t2, t3, t4, sep="\n\n")
    if args.no_write:
        return
    write_section(TITLE, f"""
`python -m bench.aws` — {machine()}.

moto's standalone EC2 server runs on loopback behind a thin WSGI front (the tests' moto_front)
that records each request it answers (action, start, end): that is where RunInstances calls are
counted and "moto busy" (wall time during which moto was answering at least one request)
is measured. Batches use MinCount=MaxCount (moto launches only MinCount).

### Through the group controller (manager + aws + vanilla daemons)

A group of {args.n} is committed to the manager (poll interval {POLL}); "converged" is the
moment the {args.n}th distinct instance passed its first health check (vanilla without a
probe: healthy at once), read from the manager's event log, confirmed by one DescribeGroup
afterwards. With ProvisionMany the controller hands every missing slot to the aws daemon
in one call, which launches identical slots 100 per RunInstances; with
`provision_many=false` the daemon does not announce the batch extension and the controller
calls Provision once per slot (32 in flight; the plugin keeps 16 EC2 calls in flight).

{t3}

A steady-state pass is one DescribeInstances by group tag (pages of 1,000) and nothing
else; counted at moto over {STEADY_CYCLES} whole passes:

{t4}

### The plugin object alone

The plugin object driven directly (no controller, no RPC): {args.n} cattle slots, then one
DescribeInstances by group tag confirms them. "Waiting on EC2" is measured at the client's
HTTP layer (send to parsed response); "mean RunInstances" is per request with up to 16 in
flight (moto serializes them, so concurrency lengthens each one).

{t1}

{t2}

moto is the bottleneck, not the plugin or the controller: most of the wall time is spent
waiting for moto's answers, and moto's describe time grows with the instances it holds
(also terminated ones, in other groups). A steady-state pass stays at one DescribeInstances
call per 1,000 instances; it grows only with pagination, never per instance.
""")


if __name__ == "__main__":
    main()
