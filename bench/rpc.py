"""RPC round trip: ``Instance.DescribeInstances`` with 10 instances over the file plugin's Unix socket.

Measures, with a standard-library client (as the Go baseline was measured):
median and p99 latency with a new connection per call and over a kept-alive
connection, and throughput with 50 concurrent clients. Prints a table and
records it in docs/benchmarks.md.

Baseline (issue 2): Go InfraKit's file plugin, 2 vCPU, stdlib client: median
0.78 ms (p99 3.0 ms) new connection per call, 0.74 ms kept alive.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import threading
import time

from bench.common import home, machine, percentile, table, write_section

BODY = json.dumps({"jsonrpc": "2.0", "method": "Instance.DescribeInstances",
                   "params": {"Type": "", "Tags": {"infrakit.group": "bench"}, "Properties": False}, "id": 1}).encode()
HEADERS = {"Content-Type": "application/json"}


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("plugin", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def call(conn: http.client.HTTPConnection) -> bytes:
    conn.request("POST", "/", body=BODY, headers=HEADERS)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200 or b'"result"' not in data:
        raise RuntimeError(f"bad answer: {resp.status} {data[:200]!r}")
    return data


def latencies(path: str, n: int, keepalive: bool) -> list[float]:
    out = []
    conn = UnixHTTP(path)
    for _ in range(n):
        if not keepalive:
            conn = UnixHTTP(path)
        t0 = time.perf_counter()
        call(conn)
        out.append(time.perf_counter() - t0)
        if not keepalive:
            conn.close()
    conn.close()
    return out


def throughput(path: str, clients: int, seconds: float) -> float:
    counts = [0] * clients
    stop = time.monotonic() + seconds
    barrier = threading.Barrier(clients)

    def worker(i: int) -> None:
        conn = UnixHTTP(path)
        barrier.wait()
        while time.monotonic() < stop:
            call(conn)
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    with home() as h:
        h.start("file")
        path = str(h.plugins_dir / "file")
        conn = UnixHTTP(path)
        for i in range(10):
            spec = {"Properties": {"n": i}, "Tags": {"infrakit.group": "bench", "infrakit.config.hash": "x"}, "Init": ""}
            conn.request("POST", "/", body=json.dumps({"jsonrpc": "2.0", "method": "Instance.Provision",
                                                       "params": {"Type": "", "Spec": spec}, "id": i}).encode(), headers=HEADERS)
            conn.getresponse().read()
        conn.close()
        latencies(path, 300, True)  # warm up
        fresh = latencies(path, args.calls, keepalive=False)
        kept = latencies(path, args.calls, keepalive=True)
        rate = throughput(path, 50, args.seconds)
    ms = lambda v: f"{v * 1000:.2f} ms"  # noqa: E731
    rows = [
        ["new connection per call", ms(percentile(fresh, 50)), ms(percentile(fresh, 99)), "0.78 ms / 3.0 ms"],
        ["kept-alive connection", ms(percentile(kept, 50)), ms(percentile(kept, 99)), "0.74 ms / —"],
        ["50 concurrent clients", f"{rate:,.0f} calls/s", "", "—"],
    ]
    text = table(["DescribeInstances, 10 instances", "median", "p99", "Go InfraKit (median / p99)"], rows)
    print(text)
    if not args.no_record:
        write_section("RPC round trip (bench/rpc.py)", f"Machine: {machine()}.\n\n{text}\n\n"
                      "Client: Python standard library over the Unix socket, as for the Go baseline "
                      f"({args.calls} calls per row after 300 warm-up calls; throughput over {args.seconds:g} s).")


if __name__ == "__main__":
    main()
