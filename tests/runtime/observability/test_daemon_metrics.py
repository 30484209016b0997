"""``GET /metrics`` on every daemon kind: build info, process and platform series, RPC served per method.

Each daemon runs as a real process on a real Unix socket; the calls and the scrape go over it.
"""

from __future__ import annotations

import http.client
import platform
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import infrakit_runtime
from infrakit_runtime.rpc.client import SyncClient, UnixHTTPConnection
from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import REPO, Daemons
from tests.runtime.observability.conftest import value

SERVED = "infrakit_rpc_server_duration_seconds"
# kind -> (a call that succeeds, a call the plugin refuses with an application error)
CALLS: dict[str, tuple[tuple[str, dict], tuple[str, dict]]] = {
    "file": (("Instance.DescribeInstances", {"Tags": {"infrakit.group": "g"}}),
             ("Instance.Destroy", {"Instance": "no-such-instance", "Context": {"Reason": "test"}})),
    "process": (("Instance.DescribeInstances", {"Tags": {"infrakit.group": "g"}}),
                ("Instance.Validate", {"Properties": {"Command": 42}})),
    "vanilla": (("Flavor.Validate", {"Properties": {"Init": ["true"]}, "Allocation": {"Size": 1}}),
                ("Flavor.Validate", {"Properties": {"Init": 42}, "Allocation": {"Size": 1}})),
    "combo": (("Flavor.Validate", {"Properties": {"Flavors": [{"Plugin": "vanilla", "Properties": {}}]},
                                   "Allocation": {"Size": 1}}),
              ("Flavor.Validate", {"Properties": {"Flavors": 42}, "Allocation": {"Size": 1}})),
    "manager": (("Manager.IsLeader", {}),
                ("Group.DescribeGroup", {"ID": "no-such-group"})),
}
# A combo chains other flavors: it needs one to validate against.
NEEDS = {"combo": ["vanilla"]}


def scrape_unix(path: Path) -> str:
    conn = UnixHTTPConnection(str(path), 10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, body
        assert resp.getheader("Content-Type", "").startswith("text/plain"), resp.getheader("Content-Type")
        return body
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _git_commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _call(client: SyncClient, method: str, params: dict) -> bool:
    try:
        client.call(method, params)
        return True
    except RemoteError:
        return False


@pytest.mark.parametrize("kind", sorted(CALLS))
def test_every_daemon_kind_exports_build_process_and_served_rpc_metrics(daemons: Daemons, kind: str) -> None:
    name = "group" if kind == "manager" else kind
    for other in NEEDS.get(kind, []):
        daemons.start(other)
    daemons.start(kind)
    (good, good_params), (bad, bad_params) = CALLS[kind]
    client = daemons.client(name)
    try:
        client.hello()
        assert _call(client, good, good_params), f"{good} should succeed on {kind}"
        assert _call(client, good, good_params)
        assert not _call(client, bad, bad_params), f"{bad} should be refused on {kind}"
        assert not _call(client, "Instance.NoSuchMethod", {})
        assert not _call(client, "Made.Up-Method-with-a-long-unique-name-0123456789", {})
    finally:
        client.close()
    text = scrape_unix(daemons.plugins_dir / name)
    m = samples(text)

    assert value(m, "infrakit_build_info", version=infrakit_runtime.__version__,
                 python=platform.python_version(), git_commit=_git_commit()) == 1, \
        sorted(k for k in m if k[0] == "infrakit_build_info")
    for series in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_start_time_seconds",
                   "process_open_fds", "process_max_fds"):
        assert any(k[0] == series for k in m), f"{kind} does not export {series}"
    assert any(k[0] == "python_info" for k in m), f"{kind} does not export python_info"

    # Every answered call is counted by method and outcome; unknown methods share one bounded label.
    assert value(m, f"{SERVED}_count", method="Handshake.Hello", outcome="ok") >= 1
    assert value(m, f"{SERVED}_count", method=good, outcome="ok") >= 2
    assert value(m, f"{SERVED}_count", method=bad, outcome="error") == 1
    assert value(m, f"{SERVED}_count", method="other", outcome="invalid") == 2
    assert value(m, f"{SERVED}_sum", method=good, outcome="ok") > 0
    assert value(m, f"{SERVED}_bucket", method=good, outcome="ok", le="+Inf") >= 2
    methods = {dict(labels)["method"] for n, labels in m if n == f"{SERVED}_count"}
    assert not any("Made.Up" in x or "NoSuchMethod" in x for x in methods), methods

    created = sorted({n for n, _ in m if n.endswith("_created")})
    assert not created, f"{kind} exports _created series: {created}"
    assert "_created" not in text


def test_a_scrape_is_not_counted_as_an_rpc_and_a_second_scrape_sees_the_first_calls(daemons: Daemons) -> None:
    daemons.start("vanilla")
    path = daemons.plugins_dir / "vanilla"
    first = samples(scrape_unix(path))
    client = daemons.client("vanilla")
    try:
        client.call("Flavor.Validate", {"Properties": {}, "Allocation": {"Size": 1}})
    finally:
        client.close()
    second = samples(scrape_unix(path))
    before = value(first, f"{SERVED}_count", method="Flavor.Validate", outcome="ok")
    assert value(second, f"{SERVED}_count", method="Flavor.Validate", outcome="ok") == before + 1
    assert {k for k in second if k[0] == f"{SERVED}_count"} >= {k for k in first if k[0] == f"{SERVED}_count"}


def test_metrics_are_only_served_on_get(daemons: Daemons) -> None:
    daemons.start("file")
    conn = UnixHTTPConnection(str(daemons.plugins_dir / "file"), 10)
    try:
        conn.request("POST", "/metrics", body=b"{}", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 405
    finally:
        conn.close()
    assert isinstance(conn, http.client.HTTPConnection)
