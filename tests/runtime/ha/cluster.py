"""Several manager replicas as real processes, sharing one process and one vanilla plugin.

Layout: one plugins dir holds ``process``, ``vanilla`` and one socket per replica
(``group-a``, ``group-b``, ...; the well-known ``group`` name can only be one of them, so
tests address replicas by socket name). Each replica also listens on its own loopback TCP
port (with a shared bearer token), which it advertises: that is where followers forward Group calls.

Every replica runs at ``--log-level debug``, so its own log holds each RPC it *sends*
(``infrakit_runtime.rpc.traffic``: ``call process: {..."method":"Instance.Provision"...}``)
and, as JSON lines, the events it emits (``leadership_gained``, ``provisioning``, ...).
``actions()`` and ``leadership()`` read them back: who changed the world, when, and when
each replica believed it led. The bench (``bench/failover.py``) uses the same harness.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import etcd3gw

from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from tests.runtime.conftest import Daemons
from tests.runtime.controller.harness import Stack
from tests.runtime.etcd_cluster import EtcdCluster, free_ports

# The calls that change the world (the plugin fence guards exactly these).
MUTATING = ("Instance.Provision", "Instance.ProvisionMany", "Instance.Destroy", "Instance.Label", "Flavor.Drain")
_CALL = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*infrakit_runtime\.rpc\.traffic: call (\S+): (\{.*)$")


@dataclass(frozen=True)
class Action:
    """One mutating call a replica sent, with the wall-clock time its log line was written."""

    replica: str
    time: float
    method: str


def etcd_backend(etcd: EtcdCluster, prefix: str, ttl: str = "5s") -> dict[str, Any]:
    return {"type": "etcd", "endpoints": etcd.endpoints, "prefix": prefix, "ttl": ttl, "timeout": "2s"}


class Replicas(Stack):
    """process + vanilla + N manager replicas; ``call`` goes to ``via`` (default: the current leader)."""

    def __init__(self, daemons: Daemons, *, backend: dict[str, Any], names: tuple[str, ...] = ("group-a", "group-b", "group-c"),
                 forward: bool = True, poll: str = "0.5s") -> None:
        self.backend = backend
        self.names = names
        self.forward = forward
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.stopped: set[str] = set()  # SIGSTOPped: do not call them, they would not answer
        self.gone: dict[str, float] = {}  # killed or terminated: wall-clock time they stopped acting
        self.via: str | None = None
        config = daemons.home / "debug.json"
        config.write_text(json.dumps({"log_level": "debug"}))
        self.config = config
        # Every TCP listener needs a bearer token, loopback included; the replicas share one.
        self.token_file = daemons.home / "token"
        self.token_file.write_text("ha-replicas-token\n")
        self.token_file.chmod(0o600)
        super().__init__(daemons, poll=poll)

    # -- processes --------------------------------------------------------------------------

    def start_manager(self) -> None:
        for name in self.names:
            self.start_replica(name)

    def start_replica(self, name: str) -> None:
        options = {"backend": self.backend, "listen": f"127.0.0.1:{self.ports[name]}", "forward": self.forward,
                   "events_json": True, "token_file": str(self.token_file)}
        path = self.d.home / f"{name}.options.json"
        path.write_text(json.dumps(options))
        self.d.start(f"manager:{name}", "--options-file", str(path), env={**self.env, "INFRAKIT_CONFIG": str(self.config)})
        self.gone.pop(name, None)

    def location(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Signal a replica; returns the wall-clock time the signal was sent.

        A killed replica cannot act after that moment; a terminated one may until it exits
        (``gone`` records whichever applies, for ``actions_by_non_leaders``).
        """
        if sig == signal.SIGSTOP:
            self.d.kill(name, sig)
            self.stopped.add(name)
            return time.time()
        if sig == signal.SIGCONT:
            self.d.kill(name, sig)
            self.stopped.discard(name)
            return time.time()
        sent = time.time()
        self.d.kill(name, sig)  # waits for the exit
        self.gone[name] = sent if sig == signal.SIGKILL else time.time()
        return sent

    def live(self) -> list[str]:
        return [n for n in self.names if n not in self.gone and n not in self.stopped]

    # -- RPC --------------------------------------------------------------------------------

    def rpc(self, replica: str, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> Any:
        client = self.d.client(replica, timeout=timeout)
        try:
            return client.call(method, {"Name": replica, **(params or {})} if method.startswith("Group.") else params or {})
        finally:
            client.close()

    def call(self, method: str, params: dict[str, Any]) -> Any:
        return self.rpc(self.via or self.leader(), method, params)

    def status(self, replica: str, timeout: float = 30) -> dict[str, Any]:
        return self.rpc(replica, "Manager.Status", timeout=timeout)

    def leaders(self) -> list[str]:
        """The live replicas that say they lead right now (more than one would be split brain)."""
        out = []
        for name in self.live():
            with contextlib.suppress(RemoteError, UnreachableError, OSError):
                if self.rpc(name, "Manager.IsLeader", timeout=3)["Leader"]:
                    out.append(name)
        return out

    def leader(self, timeout: float = 20.0, exclude: tuple[str, ...] = ()) -> str:
        """Wait for exactly one live replica (not in ``exclude``) to lead, and name it."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            seen = self.leaders()
            assert len(seen) <= 1, f"split brain: {seen} all say they lead"
            if seen and seen[0] not in exclude:
                return seen[0]
            time.sleep(0.02)
        raise AssertionError(f"no single leader within {timeout}s (leading: {seen})")

    def followers(self) -> list[str]:
        leader = self.leader()
        return [n for n in self.live() if n != leader]

    # -- what the replicas said they did ----------------------------------------------------

    def log(self, replica: str) -> str:
        return self.d.log(replica)

    def actions(self, replica: str) -> list[Action]:
        """Every mutating call ``replica`` sent to a plugin, in order, from its debug log."""
        out = []
        for line in self.log(replica).splitlines():
            m = _CALL.match(line)
            if not m:
                continue
            try:
                method = json.loads(m.group(3)).get("method", "")
            except ValueError:
                continue
            if method in MUTATING:
                out.append(Action(replica, _log_time(m.group(1)), method))
        return out

    def events(self, replica: str, kind: str | None = None) -> list[dict[str, Any]]:
        """The events ``replica`` emitted (JSON lines in its log), optionally of one kind."""
        out = []
        for line in self.log(replica).splitlines():
            start = line.find('{"Seq"')
            if start < 0:
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line[start:])
                if kind is None or event.get("Kind") == kind:
                    out.append(event)
        return out

    def terms(self) -> list[tuple[float, str]]:
        """Every leadership_gained across replicas, in time order: (time, replica)."""
        return sorted((e["Time"], n) for n in self.names for e in self.events(n, "leadership_gained"))

    def actions_by_non_leaders(self) -> list[Action]:
        """Mutating calls sent by a replica that was not the current leader when it sent them.

        The current leader at time t is the replica with the latest ``leadership_gained``
        at or before t, as long as it had not lost leadership or died since. A log line's
        time is truncated to the millisecond, hence the 1 ms allowance.
        """
        terms = self.terms()
        bad = []
        for name in self.names:
            losses = [e["Time"] for e in self.events(name, "leadership_lost")]
            for action in self.actions(name):
                t = action.time + 0.001
                before = [(g, n) for g, n in terms if g <= t]
                if not before or before[-1][1] != name:
                    bad.append(action)
                    continue
                gained = before[-1][0]
                if any(gained <= lost <= action.time for lost in losses) or action.time > self.gone.get(name, float("inf")):
                    bad.append(action)
        return bad


def _log_time(stamp: str) -> float:
    """The text log format's local-time stamp (``2025-01-31 12:00:00,123``) as epoch seconds."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def etcd_key_meta(etcd: EtcdCluster, key: str) -> dict[str, Any] | None:
    """An etcd key's metadata (create/mod revision, version) as etcd itself reports it."""
    for endpoint in etcd.endpoints:
        url = urllib.parse.urlsplit(endpoint)
        with contextlib.suppress(Exception):
            found = etcd3gw.client(host=url.hostname, port=url.port, timeout=2).get(key, metadata=True)
            return dict(found[0][1]) if found else None
    raise AssertionError("no etcd member answered")


def stop_everything(stack: Replicas) -> None:
    """Wake paused replicas (a stopped process ignores SIGTERM), stop every daemon, kill every instance."""
    for name in list(stack.stopped):
        with contextlib.suppress(ProcessLookupError, KeyError):
            os.kill(stack.d.procs[name].pid, signal.SIGCONT)
    stack.stopped.clear()
    stack.d.stop_all()
    stack.kill_instances()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


__all__ = ["MUTATING", "Action", "Replicas", "etcd_backend", "etcd_key_meta", "stop_everything", "wait_for"]
