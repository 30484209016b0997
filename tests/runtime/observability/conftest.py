"""A real stack (process + vanilla + manager) for observability tests, and ways to read it as an operator does."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infrakit_runtime.cli.observe import http_get
from infrakit_runtime.rpc.discovery import Address
from tests.runtime.conftest import Daemons
from tests.runtime.controller.harness import Stack

EVENTS_FILE = "events.jsonl"
MISSING_PROGRAM = "/nonexistent/infrakit-test/no-such-program"


class ObservedStack(Stack):
    """The controller stack with the manager writing its events as JSON lines to a file."""

    def start_manager(self) -> None:
        self.d.start("manager", "-o", f"events_json={EVENTS_FILE}", env=self.env)

    def metrics_text(self) -> str:
        resp = http_get(Address(unix_path=self.d.plugins_dir / "group"), "/metrics", timeout=10)
        try:
            assert resp.getheader("Content-Type", "").startswith("text/plain")
            return resp.read().decode()
        finally:
            resp.close()

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        """Every sample of the manager's ``/metrics``, keyed by (name, labels)."""
        out = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def failing_spec(self, gid: str = "broken") -> dict[str, Any]:
        """A group whose instance plugin accepts the spec but fails every provision (the program is missing)."""
        spec = self.spec(gid, size=1)
        spec["Properties"]["Instance"]["Properties"]["Command"] = [MISSING_PROGRAM, "--serve"]
        # Without Init the process plugin execs the command itself, so the start fails in Provision.
        spec["Properties"]["Flavor"]["Properties"].pop("Init")
        return spec

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infrakit_runtime", *args], env=self.d.env,
                              capture_output=True, text=True, timeout=timeout)


def value(samples: dict, name: str, **labels: str) -> float:
    """One sample's value, 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def stack(daemons: Daemons) -> Iterator[ObservedStack]:
    s = ObservedStack(daemons)
    try:
        yield s
    finally:
        daemons.stop_all()
        s.kill_instances()
