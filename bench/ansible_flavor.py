"""What the ansible flavor costs: a scale-up of 20 with and without a playbook, and runs per second.

Each scenario starts fresh daemons (process, vanilla, ansible, manager) as real processes in a
temp INFRAKIT_HOME and commits a group of 20 process instances (a tiny HTTP server each):

- baseline: vanilla's HTTP probe alone, the configuration baked into the image (the server
  answers /healthz at once);
- with the flavor: the ansible flavor wraps the same probe and its playbook writes the
  configuration (gather_facts off, one copy task, local connection), at a given Concurrency.

Each figure is the wall time from CommitGroup until DescribeGroup says Converged (20 healthy
members); the flavor's cost is the difference. Runs per second count the 20 playbook runs from
the first start to the last end (from the runs' own records), and CPU is what the ansible
daemon and its ansible-playbook children used. Poll interval 1 s for both.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

from bench.common import Home, machine, table, write_section
from infrakit_runtime.plugins.flavor.ansible.props import DEFAULT_CONCURRENCY
from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address

N = 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
APP = '''
import http.server, os, sys
from pathlib import Path
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        conf = Path(os.environ["CONFIG_DIR"]) / (os.environ["INFRAKIT_INSTANCE_ID"] + ".conf")
        ok = os.environ.get("BAKED") == "1" or conf.exists()
        self.send_response(200 if ok else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''
PLAYBOOK = '''
- name: Configure
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the configuration the instance serves
      ansible.builtin.copy:
        dest: "{{ config_dir }}/{{ infrakit_id }}.conf"
        content: "configured\\n"
        mode: "0644"
'''


def cpu_seconds(pid: int, children: bool) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / CLK_TCK


class Stack:
    def __init__(self) -> None:
        self.home = Home()
        self.conf = self.home.path / "conf"
        self.conf.mkdir()
        (self.home.path / "app.py").write_text(APP)
        (self.home.path / "site.yml").write_text(PLAYBOOK)
        self.home.start("process")
        self.home.start("vanilla")
        self.home.start("ansible")
        self.home.start("manager", env={"INFRAKIT_GROUP_POLL_INTERVAL": "1s"})
        self.client = SyncClient(Address(unix_path=self.home.plugins_dir / "group"), timeout=120)

    def spec(self, *, ansible: bool, concurrency: int | None) -> dict:
        probe = {"Plugin": "vanilla", "Properties": {"Health": {"HTTP": "http://{{address}}/healthz", "Timeout": "2s"}}}
        flavor = probe
        if ansible:
            props = {"Playbook": str(self.home.path / "site.yml"), "ExtraVars": {"config_dir": str(self.conf)},
                     "Flavor": probe}
            if concurrency is not None:
                props["Concurrency"] = concurrency
            flavor = {"Plugin": "ansible", "Properties": props}
        return {"ID": "bench", "Properties": {
            "Allocation": {"Size": N},
            "Instance": {"Plugin": "process", "Properties": {
                "Command": [sys.executable, str(self.home.path / "app.py")],
                # Without the flavor the configuration is baked in: the server is healthy at once.
                "Env": {"CONFIG_DIR": str(self.conf), "BAKED": "0" if ansible else "1"}}},
            "Flavor": flavor,
            "Health": {"GracePeriod": "10m"},
        }}

    def converge(self, spec: dict, timeout: float = 900) -> float:
        t0 = time.perf_counter()
        self.client.call("Group.CommitGroup", {"Name": "group", "Spec": spec, "Pretend": False})
        while time.perf_counter() - t0 < timeout:
            desc = self.client.call("Group.DescribeGroup", {"Name": "group", "ID": "bench"})["Description"]
            if desc["Converged"] and len(desc["Instances"]) == N:
                return time.perf_counter() - t0
            time.sleep(0.05)
        raise TimeoutError("the group did not converge")

    def runs(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in (self.home.path / "ansible" / "ansible" / "runs").glob("*/*.json")]

    def close(self) -> None:
        self.client.close()
        self.home.close()
        # The process plugin's instances outlive its daemon by design: end this stack's servers.
        app = str(self.home.path / "app.py").encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if app in (entry / "cmdline").read_bytes():
                        os.kill(int(entry.name), signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass


def baseline() -> float:
    s = Stack()
    try:
        return s.converge(s.spec(ansible=False, concurrency=None))
    finally:
        s.close()


def with_flavor(concurrency: int | None) -> dict:
    s = Stack()
    try:
        pid = s.home.procs["ansible"].pid
        cpu0 = cpu_seconds(pid, children=True)
        wall = s.converge(s.spec(ansible=True, concurrency=concurrency))
        cpu = cpu_seconds(pid, children=True) - cpu0
        runs = s.runs()
        assert len(runs) == N and all(r["result"]["status"] == "successful" for r in runs), runs
        first = min(r["job"]["started"] for r in runs)
        last = max(r["job"]["finished"] for r in runs)
        durations = [r["result"]["duration"] for r in runs]
        return {"wall": wall, "span": last - first, "per_second": N / (last - first), "cpu": cpu,
                "median_run": statistics.median(durations)}
    finally:
        s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-record", action="store_true", help="print the table only; leave docs/benchmarks.md")
    args = parser.parse_args()
    base = min(baseline() for _ in range(2))
    results = {"baseline": base}
    rows = [["vanilla probe only (configuration baked in)", f"{base:.1f} s", "—", "—", "—"]]
    for concurrency, label in ((None, f"ansible flavor, default Concurrency ({DEFAULT_CONCURRENCY})"), (1, "Concurrency 1"),
                               (10, "Concurrency 10")):
        r = with_flavor(concurrency)
        results[str(concurrency or "default")] = r
        rows.append([label, f"{r['wall']:.1f} s (+{r['wall'] - base:.1f} s)", f"{r['per_second']:.2f}",
                     f"{r['median_run']:.1f} s", f"{r['cpu']:.1f} CPU-s ({r['cpu'] / N:.2f} per instance)"])
    text = table([f"scale-up 0→{N}, until Converged", "wall", "instances configured / s", "median run",
                  "ansible daemon + playbooks"], rows)
    print(text)
    Path("tests/output").mkdir(parents=True, exist_ok=True)
    Path("tests/output/bench-ansible-flavor.json").write_text(json.dumps(results, indent=2))
    if not args.no_record:
        write_section("Ansible flavor (bench/ansible_flavor.py)", f"Machine: {machine()}.\n\n{text}\n\n"
                      f"A group of {N} process instances (a small HTTP server each) behind vanilla's HTTP probe, "
                      "poll interval 1 s. With the flavor, each instance is configured by a one-task playbook "
                      "(local connection, gather_facts off) through ansible-runner, one ansible-playbook per "
                      "instance; the probe is asked once the playbook succeeded. Instances configured per second "
                      "count the runs from the first start to the last end; CPU is the flavor daemon's and its "
                      "ansible-playbook children's. The flavor's cost is CPU: each run is an ansible-playbook "
                      "process (Python and Ansible's start, the play, the module), so instances configured per "
                      "second cannot exceed the vCPUs divided by the CPU-s per instance, whatever the "
                      "Concurrency; a Concurrency above that only lengthens each run. Figures taken while other "
                      "test suites shared the machine (see the load average) are an upper bound on the cost.")


if __name__ == "__main__":
    main()
