"""A real stack for the ansible flavor: process instances, the ansible flavor wrapping vanilla's HTTP
probe, and the manager, each a daemon on its own socket; the playbooks in ``playbooks/``."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit_runtime.cli.observe import http_get
from infrakit_runtime.rpc.discovery import Address
from tests.runtime.conftest import Daemons
from tests.runtime.controller.harness import Stack

HERE = Path(__file__).parent
PLAYBOOKS = HERE / "playbooks"
APP = HERE / "app.py"
# An ExtraVar with a secret name: it must never show in a log, an event, a description or a metric.
SECRET = "tok-9d1e4b2a-never-shown"
TAG_CONFIGURED = "infrakit.ansible.configured"


class World(Stack):
    """The controller stack plus the ansible flavor daemon, and the files its playbooks read and write."""

    def __init__(self, daemons: Daemons, *, poll: str = "0.5s") -> None:
        self.root = daemons.home.parent
        self.config_dir = self.root / "conf"
        self.config_dir.mkdir()
        self.ledger = self.root / "ledger"
        self.fail_flag = self.root / "fail"
        self.drain_fail_flag = self.root / "drain-fail"
        super().__init__(daemons, poll=poll)
        daemons.start("ansible")

    def spec(self, gid: str = "web", *, size: int | None = 2, logical_ids: list[str] | None = None,  # type: ignore[override]
             message: str = "v1", grace: str = "60s", unhealthy_threshold: int = 2, retries: int = 0,
             connection: Any = "local", max_unhealthy: str | None = None, extra_vars: dict[str, Any] | None = None,
             **updating: Any) -> dict[str, Any]:
        health: dict[str, Any] = {"GracePeriod": grace, "UnhealthyThreshold": unhealthy_threshold}
        if max_unhealthy is not None:
            health["MaxUnhealthy"] = max_unhealthy
        props: dict[str, Any] = {
            "Allocation": {"Size": size},
            "Instance": {"Plugin": "process", "Properties": {
                "Command": [sys.executable, str(APP), self.marker], "Env": {"CONFIG_DIR": str(self.config_dir)}}},
            "Flavor": {"Plugin": "ansible", "Properties": {
                "Playbook": str(PLAYBOOKS / "configure.yml"),
                "ExtraVars": {"message": message, "config_dir": str(self.config_dir), "ledger": str(self.ledger),
                              "fail_flag": str(self.fail_flag), "api_token": SECRET, **(extra_vars or {})},
                "Connection": connection, "Retries": retries, "Timeout": "3m",
                "Drain": {"Playbook": str(PLAYBOOKS / "drain.yml"), "Timeout": "3m",
                          "ExtraVars": {"drain_fail_flag": str(self.drain_fail_flag)}},
                "Flavor": {"Plugin": "vanilla", "Properties": {
                    "Health": {"HTTP": "http://{{address}}/healthz", "Timeout": "2s"}}},
            }},
            "Health": health,
        }
        if updating:
            props["Updating"] = updating
        return {"ID": gid, "Properties": props}

    def runs(self) -> list[tuple[str, str]]:
        """Every configuration run so far, as (instance ID, message) from the playbook's own ledger."""
        if not self.ledger.exists():
            return []
        return [tuple(line.split(" ", 1)) for line in self.ledger.read_text().splitlines()  # type: ignore[misc]
                if not line.endswith(" drained")]

    def drained(self) -> list[str]:
        if not self.ledger.exists():
            return []
        return [line.split(" ", 1)[0] for line in self.ledger.read_text().splitlines() if line.endswith(" drained")]

    def events(self, gid: str = "web", kind: str | None = None) -> list[dict[str, Any]]:
        found = self.call("Manager.Events", {"Group": gid, "Limit": 0})["Events"] or []
        return [e for e in found if kind is None or e["Kind"] == kind]

    def served(self, description: dict[str, Any]) -> str | None:
        """What the instance's program answers at / (its configuration), None when it does not answer 200."""
        address = (description.get("Properties") or {}).get("Address")
        try:
            with urllib.request.urlopen(f"http://{address}/", timeout=2) as resp:
                return resp.read().decode().strip()
        except Exception:
            return None

    def rows(self, gid: str = "web") -> dict[str, dict[str, Any]]:
        return {r["ID"]: r for r in (self.describe(gid).get("Status") or {}).get("Instances") or []}

    def metrics(self, name: str) -> str:
        resp = http_get(Address(unix_path=self.d.plugins_dir / name), "/metrics", timeout=10)
        try:
            return resp.read().decode()
        finally:
            resp.close()

    def everything_an_operator_sees(self, gid: str = "web") -> str:
        """Logs, events, the description, metrics and every file the daemons wrote (run logs included), but
        the spec store: it holds the declared spec, ExtraVars and all, as a configuration file would."""
        parts = [json.dumps(self.describe(gid)), json.dumps(self.events(gid)), self.metrics("ansible"),
                 self.metrics("group")]
        store = self.d.home / "store"
        for path in self.d.home.rglob("*"):
            if path.is_file() and store not in path.parents:
                try:
                    parts.append(path.read_text(errors="replace"))
                except OSError:
                    pass
        return "\n".join(parts)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def world(daemons: Daemons) -> Iterator[World]:
    w = World(daemons)
    try:
        yield w
    finally:
        daemons.stop_all()
        w.kill_instances()
