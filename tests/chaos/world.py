"""A chaos trial's world: real daemons, a 20-instance group of real processes, faults, and a verdict.

Guarantee: everything a trial does to the world is decided up front by ``random.Random(seed)``
(which faults, when, for how long; which specs are committed, when, to which replica) and
written to the trial's journal, so a failure names the seed that replays the same schedule
(``INFRAKIT_CHAOS_SEED=<seed>``). The verdict checks the world itself: the instance plugin's
own description, the OS process table (by the trial's marker argument), the stored spec and
the replicas' debug logs (``tests/chaos/ledger.py``).
Limit: a seed fixes the schedule, not the OS scheduler; a replay hits the same moments of the
schedule, not necessarily the same instructions of the daemons.

Why the process plugin and the webapp rather than the file plugin: the faults worth finding
here are orphans (a process that runs but that no one describes) and duplicates, which only
real processes whose start can be interrupted can produce; 20 webapps cost about 0.6 GB and a
couple of CPU-seconds per rollout on this machine, which a trial affords. The soak
(``bench/soak.py``) uses the file plugin, where 10,000 processes would not fit.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from tests.chaos import ledger
from tests.runtime.conftest import Daemons, wait_for_socket
from tests.runtime.procs import marker_pids

POLL = "0.5s"
SIZE = 20
WINDOW = 8.0  # seconds of faults and commits after the first commit
RECOVERY_TIMEOUT = 150.0


class StaleCommitApplied(AssertionError):
    """A commit whose sender got no acknowledgement took effect after a later acknowledged one."""


@dataclasses.dataclass
class Commit:
    """One CommitGroup the trial sent, and what came back."""

    number: int
    allocation: dict[str, Any]
    message: str
    via: str
    sent: float = 0.0
    outcome: str = "not sent"  # "acked" | "error: ..."

    @property
    def acked(self) -> bool:
        return self.outcome == "acked"

    @property
    def key(self) -> str:
        return json.dumps([self.allocation, self.message], sort_keys=True)

    @property
    def size(self) -> int:
        return len(self.allocation["LogicalIDs"]) if "LogicalIDs" in self.allocation else self.allocation["Size"]

    def __str__(self) -> str:
        what = f"{self.size} pets" if "LogicalIDs" in self.allocation else f"size {self.size}"
        return f"#{self.number} {what} {self.message} via {self.via} at +{self.sent:.2f}s: {self.outcome}"


class Processes(Daemons):
    """``Daemons`` with one log file per process run, so each incarnation's log is its own."""

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.logs: dict[str, list[Path]] = collections.defaultdict(list)
        self.paused: set[str] = set()

    def start(self, daemon: str, *args: str, env: dict[str, str] | None = None, wait: bool = True) -> subprocess.Popen:
        kind, _, name = daemon.partition(":")
        name = name or ("group" if kind == "manager" else kind)
        path = self.home / f"{name}.{len(self.logs[name]) + 1}.log"
        self.logs[name].append(path)
        with open(path, "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "infrakit_runtime", "plugin", "run", daemon, *args],
                env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.procs[name] = proc
        if wait:
            wait_for_socket(self.plugins_dir / name, timeout=30, proc=proc)
        return proc

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def log(self, name: str) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs[name])

    def stop_all(self) -> None:
        for name in list(self.paused):  # a stopped process ignores SIGTERM until continued
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.procs[name].pid, signal.SIGCONT)
        self.paused.clear()
        super().stop_all()


class World:
    """process + vanilla + manager replicas, one group ``web``, and the trial's record."""

    def __init__(self, daemons: Processes, *, seed: int, scenario: str, replicas: tuple[str, ...] = ("group",),
                 backend: dict[str, Any] | None = None, pets: bool = False) -> None:
        self.d = daemons
        self.seed = seed
        self.scenario = scenario
        self.replicas = replicas
        self.backend = backend or {"type": "file", "dir": str(daemons.home / "store")}
        self.pets = pets
        self.marker = f"--marker={uuid.uuid4().hex}"
        self.flags = daemons.home / "health-flags"
        self.flags.mkdir(exist_ok=True)
        self.commits: list[Commit] = []
        self.journal: list[str] = []
        self.t0 = time.monotonic()
        self.start_window = self.t0
        self._lock = threading.Lock()
        self.d.start("process")
        self.d.start("vanilla")
        for name in replicas:
            self.start_replica(name)

    # -- record -------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        with self._lock:
            self.journal.append(f"+{time.monotonic() - self.t0:6.2f}s {text}")

    def replay(self) -> str:
        return f"INFRAKIT_CHAOS_SEED={self.seed} pytest tests/chaos -k '{self.scenario}'"

    def story(self) -> str:
        """Everything a person needs to replay and understand a failed trial."""
        lines = [f"scenario {self.scenario}, seed {self.seed} (replay: {self.replay()})", "journal:"]
        lines += [f"  {j}" for j in self.journal]
        lines += ["commits:"] + [f"  {c}" for c in self.commits]
        lines.append(f"logs: {self.d.home}")
        return "\n".join(lines)

    # -- daemons ------------------------------------------------------------------------------

    def start_replica(self, name: str) -> None:
        options = self.d.home / f"{name}.options.json"
        options.write_text(json.dumps({"backend": self.backend}))
        self.d.start(f"manager:{name}", "--options-file", str(options),
                     env={"INFRAKIT_GROUP_POLL_INTERVAL": POLL, "INFRAKIT_LOG_LEVEL": "debug"})

    def restart(self, name: str) -> None:
        if name in self.replicas:
            self.start_replica(name)
        else:
            self.d.start(name)
        self.note(f"restarted {name} (pid {self.d.procs[name].pid})")

    def signal(self, name: str, sig: signal.Signals) -> None:
        proc = self.d.procs[name]
        self.note(f"{sig.name} {name} (pid {proc.pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        if sig == signal.SIGSTOP:
            self.d.paused.add(name)
        elif sig == signal.SIGCONT:
            self.d.paused.discard(name)
        elif sig == signal.SIGKILL:
            proc.wait(10)

    def reachable(self) -> list[str]:
        """Replicas that run and are not paused (calling a paused one would only wait)."""
        return [n for n in self.replicas if self.d.alive(n) and n not in self.d.paused]

    # -- RPC ----------------------------------------------------------------------------------

    def rpc(self, name: str, method: str, params: dict[str, Any] | None = None, timeout: float = 10) -> Any:
        client = SyncClient(Address(unix_path=self.d.plugins_dir / name), name=name, timeout=timeout)
        try:
            if method.startswith("Group."):
                params = {"Name": name, **(params or {})}
            return client.call(method, params or {})
        finally:
            client.close()

    def leader(self) -> str | None:
        """The reachable replica that says it leads, if any."""
        for name in self.reachable():
            with contextlib.suppress(Exception):
                if self.rpc(name, "Manager.IsLeader", timeout=3)["Leader"]:
                    return name
        return None

    def spec(self, *, allocation: dict[str, Any], message: str) -> dict[str, Any]:
        return {"ID": "web", "Properties": {
            "Allocation": allocation,
            "Instance": {"Plugin": "process", "Properties": {
                "Command": [sys.executable, "-m", "infrakit_runtime.examples.webapp", self.marker],
                "Env": {"HEALTH_FLAG_DIR": str(self.flags)},
            }},
            "Flavor": {"Plugin": "vanilla", "Properties": {
                "Init": [f"export MESSAGE={message}"],
                "Health": {"HTTP": "http://{{address}}/healthz", "Timeout": "1s"},
            }},
            "Health": {"GracePeriod": "1s", "UnhealthyThreshold": 2},
            "Updating": {"MaxSurge": 5, "MaxUnavailable": 2},
        }}

    def commit(self, allocation: dict[str, Any], message: str, *, via: str | None = None, timeout: float = 10) -> Commit:
        """Send one CommitGroup and record whether it was acknowledged."""
        targets = self.reachable()
        name = via or (targets[0] if targets else self.replicas[0])
        c = Commit(number=len(self.commits) + 1, allocation=allocation, message=message, via=name,
                   sent=time.monotonic() - self.t0)
        with self._lock:
            self.commits.append(c)
        try:
            self.rpc(name, "Group.CommitGroup", {"Spec": self.spec(allocation=allocation, message=message), "Pretend": False},
                     timeout=timeout)
            c.outcome = "acked"
        except Exception as e:  # refused, unreachable or timed out: not acknowledged
            c.outcome = f"error: {e}"[:300]
        self.note(f"commit {c}")
        return c

    def instances(self) -> list[dict[str, Any]]:
        """What the process plugin itself reports for the group (the world, not the controller's view)."""
        client = SyncClient(Address(unix_path=self.d.plugins_dir / "process"), name="process", timeout=30)
        try:
            return client.call("Instance.DescribeInstances",
                               {"Tags": {"infrakit.group": "web"}, "Properties": True})["Descriptions"]
        finally:
            client.close()

    def answer(self, description: dict[str, Any]) -> str | None:
        address = (description.get("Properties") or {}).get("Address")
        if not address:
            return None
        try:
            with urllib.request.urlopen(f"http://{address}/", timeout=2) as resp:
                return resp.read().decode().split(" from ")[0].strip()
        except Exception:
            return None

    def marker_pids(self) -> set[int]:
        """Live (non-zombie) processes carrying this trial's marker argument."""
        return marker_pids(self.marker)

    def kill_instances(self) -> None:
        for pid in self.marker_pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    # -- the schedule ---------------------------------------------------------------------------

    def commit_plan(self, rng: random.Random, count: int = 3) -> list[tuple[float, dict[str, Any], str]]:
        """``count`` commits at random moments of the window: rollouts and resizes, each one distinct."""
        out: list[tuple[float, dict[str, Any], str]] = []
        version, size = 1, SIZE
        seen = {(SIZE, 1)}
        for at in sorted(rng.uniform(0.2, WINDOW) for _ in range(count)):
            if rng.random() < 0.5:
                version += 1
            else:
                choices = [s for s in (16, 18, 20, 22) if (s, version) not in seen]
                if choices:
                    size = rng.choice(choices)
                else:
                    version += 1
            seen.add((size, version))
            allocation = ({"LogicalIDs": [f"10.0.0.{i}" for i in range(1, size + 1)]} if self.pets else {"Size": size})
            out.append((at, allocation, f"v{version}"))
        return out

    def first_allocation(self) -> dict[str, Any]:
        return {"LogicalIDs": [f"10.0.0.{i}" for i in range(1, SIZE + 1)]} if self.pets else {"Size": SIZE}

    def committer(self, rng: random.Random) -> threading.Thread:
        """A thread sending the planned commits at their moments, each to a random reachable replica."""
        plan = self.commit_plan(rng)
        picks = [rng.random() for _ in plan]

        def run() -> None:
            for (at, allocation, message), pick in zip(plan, picks, strict=True):
                delay = self.start_window + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                targets = self.reachable() or list(self.replicas)
                self.commit(allocation, message, via=targets[int(pick * len(targets))])

        return threading.Thread(target=run, name="committer", daemon=True)

    def run(self, faults: Any, rng: random.Random) -> None:
        """First commit (the group starts converging), then the window: faults here, commits in a thread."""
        first = self.commit(self.first_allocation(), "v1", timeout=30)
        assert first.acked, f"the first commit was refused before any fault: {first.outcome}\n{self.story()}"
        self.start_window = time.monotonic()
        committer = self.committer(random.Random(rng.random()))
        committer.start()
        faults(self, random.Random(rng.random()))
        committer.join(60)
        assert not committer.is_alive(), f"the committer is stuck\n{self.story()}"

    def sleep_until(self, at: float) -> None:
        delay = self.start_window + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    # -- the verdict ----------------------------------------------------------------------------

    def restore(self) -> None:
        """Undo every fault: continue paused daemons, start dead ones."""
        for name in list(self.d.paused):
            self.signal(name, signal.SIGCONT)
        for name in ("process", "vanilla", *self.replicas):
            if not self.d.alive(name):
                self.restart(name)

    def stored(self, timeout: float = 60) -> dict[str, Any]:
        """The group's spec as the store holds it (``Manager.Specs`` reads the backend itself)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for name in self.reachable():
                try:
                    specs = self.rpc(name, "Manager.Specs")["Specs"]
                    return next(s for s in specs if s["ID"] == "web")
                except Exception as e:  # the backend may be recovering
                    last = e
            time.sleep(0.3)
        raise AssertionError(f"no replica could read the stored spec within {timeout}s: {last}\n{self.story()}")

    def stored_commit(self) -> Commit:
        """The commit the store holds now (every stored spec must be one the trial sent)."""
        props = self.stored()["Properties"]
        message = props["Flavor"]["Properties"]["Init"][0].removeprefix("export MESSAGE=")
        key = json.dumps([props["Allocation"], message], sort_keys=True)
        matches = [c for c in self.commits if c.key == key]
        assert matches, f"the stored spec {key} is none of the commits sent\n{self.story()}"
        return max(matches, key=lambda c: c.number)

    def settle(self) -> Commit:
        """Until the group is converged at the stored spec and the store did not change meanwhile.

        The store is read again after convergence: a commit still travelling (forwarded to a
        replica that was paused) may land late, and the verdict is about the final state.
        Converged means DescribeGroup says so at the stored size and every member answers
        HTTP with the stored spec's message.
        """
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        last: Any = None
        while time.monotonic() < deadline:
            want = self.stored_commit()
            for name in self.reachable():
                try:
                    desc = self.rpc(name, "Group.DescribeGroup", {"ID": "web"})["Description"]
                except Exception as e:
                    last = str(e)
                    continue
                status = desc.get("Status") or {}
                last = {"want": str(want), "via": name, "Converged": desc.get("Converged"),
                        "members": len(desc["Instances"]),
                        **{k: status.get(k) for k in ("Condition", "Reason", "Summary", "Desired", "Healthy", "LastError")}}
                if desc.get("Converged") and len(desc["Instances"]) == want.size:
                    wrong = {i["ID"]: [(i.get("Properties") or {}).get("Address"), self.answer(i)] for i in desc["Instances"]}
                    wrong = {k: v for k, v in wrong.items() if v[1] != want.message}
                    if not wrong and self.stored_commit().key == want.key:
                        return want
                    last["not answering " + want.message] = wrong
                break
            time.sleep(0.3)
        raise AssertionError(f"the group did not converge to its stored spec within {RECOVERY_TIMEOUT}s; "
                             f"last: {json.dumps(last)[:1500]}\n{self.story()}")

    def check_acknowledged(self, final: Commit) -> None:
        """No acknowledged commit lost: the final spec is the last acked commit or one sent after it."""
        last_acked = max(c.number for c in self.commits if c.acked)
        if final.number >= last_acked:
            return
        stale = StaleCommitApplied if not final.acked else AssertionError
        raise stale(f"acknowledged commit #{last_acked} was lost: the store and the group hold commit "
                    f"#{final.number} ({final.outcome[:120]}), sent before it\n{self.story()}")

    def verify(self) -> dict[str, int]:
        """Converged to the stored spec; no acked commit lost; no duplicate, orphan or split-brain action."""
        self.restore()
        want = self.settle()
        self.check_acknowledged(want)
        world = self.instances()
        # Duplicates, from the plugin itself.
        if self.pets:
            per_id = collections.Counter(d.get("LogicalID") for d in world)
            duplicated = {k: n for k, n in per_id.items() if n > 1}
            assert not duplicated, f"logical IDs with several instances: {duplicated}\n{self.story()}"
            assert set(per_id) == set(want.allocation["LogicalIDs"]), \
                f"logical IDs {sorted(per_id, key=str)} != {want.allocation['LogicalIDs']}\n{self.story()}"
        assert len(world) == want.size, f"{len(world)} instances for a group of {want.size} (duplicates)\n{self.story()}"
        hashes = {d["Tags"]["infrakit.config.hash"] for d in world}
        assert len(hashes) == 1, f"members carry several configurations after convergence: {hashes}\n{self.story()}"
        # Orphans: every live marker process is a described member (destroyed ones may still be exiting).
        described = {d["Properties"]["PID"] for d in world}
        deadline = time.monotonic() + 20
        while (orphans := self.marker_pids() - described) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not orphans, f"{len(orphans)} orphan process(es) not described by the plugin: {sorted(orphans)}\n{self.story()}"
        assert self.marker_pids() == described, f"described members that do not run: {described - self.marker_pids()}\n{self.story()}"
        # One actor per term.
        incarnations = ledger.read({f"{name}#{i + 1}": (p, i == len(self.d.logs[name]) - 1 and self.d.alive(name))
                                    for name in self.replicas for i, p in enumerate(self.d.logs[name])})
        problems = ledger.split_brain(incarnations)
        assert not problems, "split brain:\n  " + "\n  ".join(problems) + "\n" + self.story()
        terms = sorted({t.term for inc in incarnations for t in inc.tenures})
        assert ledger.action_count(incarnations) > 0, f"no mutating call found in the replicas' logs\n{self.story()}"
        return {"instances": len(world), "terms": len(terms), "actions": ledger.action_count(incarnations),
                "acked": sum(c.acked for c in self.commits), "commits": len(self.commits)}

    def close(self) -> None:
        self.d.stop_all()
        self.kill_instances()
