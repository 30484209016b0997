"""The vanilla flavor's health probes and drain hook, against real servers, ports and processes."""

from __future__ import annotations

import contextlib
import http.server
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import Daemons
from tests.runtime.procs import marker_pids

UNKNOWN, HEALTHY, UNHEALTHY = 0, 1, 2


class StatusServer(http.server.ThreadingHTTPServer):
    """Answers every GET with the next status in ``statuses`` (the last one repeats)."""

    daemon_threads = True

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), StatusHandler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def next_status(self, path: str) -> int:
        self.paths.append(path)
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


class StatusHandler(http.server.BaseHTTPRequestHandler):
    server: StatusServer

    def do_GET(self) -> None:
        status = self.server.next_status(self.path)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_server(*statuses: int) -> Iterator[StatusServer]:
    server = StatusServer(list(statuses))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="status-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def daemons_here(tmp_path_factory) -> Iterator[Daemons]:
    """One vanilla daemon for the module: it keeps no state between calls, and starts cost time."""
    daemons = Daemons(tmp_path_factory.mktemp("vanilla-probes") / "home")
    try:
        daemons.start("vanilla")
        yield daemons
    finally:
        daemons.stop_all()


@pytest.fixture
def vanilla(daemons_here):
    client = daemons_here.client("vanilla", timeout=15)
    yield client
    client.close()


def health(client, probes: dict, instance: dict | None = None) -> int:
    instance = instance or {"ID": "instance-1", "LogicalID": None, "Tags": {}}
    return client.call("Flavor.Healthy", {"Type": "", "Properties": {"Health": probes}, "Instance": instance})["Health"]


def at(address: str, **extra: object) -> dict:
    """An instance description whose Properties carry its address (and more)."""
    return {"ID": "instance-7", "LogicalID": None, "Tags": {"role": "web"},
            "Properties": {"Address": address, **extra}}


def test_no_probe_declared_means_healthy_as_in_infrakit(vanilla):
    answer = vanilla.call("Flavor.Healthy", {"Type": "", "Properties": {"Init": ["echo hi"]},
                                             "Instance": {"ID": "i-1", "Tags": {}}})
    assert answer["Health"] == HEALTHY


def test_an_http_probe_follows_the_server_from_healthy_to_unhealthy(vanilla):
    with http_server(200, 500) as server:
        probe = {"HTTP": f"http://127.0.0.1:{server.port}/healthz", "Timeout": "2s"}
        assert health(vanilla, probe) == HEALTHY
        assert health(vanilla, probe) == UNHEALTHY
        assert server.paths == ["/healthz", "/healthz"]


def test_an_http_probe_checks_the_exact_status_when_one_is_expected(vanilla):
    with http_server(204, 200) as server:
        probe = {"HTTP": f"http://127.0.0.1:{server.port}/", "ExpectStatus": 200}
        assert health(vanilla, probe) == UNHEALTHY
        assert health(vanilla, probe) == HEALTHY
        # Without ExpectStatus any 2xx passes, and a redirect is not followed into a pass.
        assert health(vanilla, {"HTTP": f"http://127.0.0.1:{server.port}/"}) == HEALTHY
    with http_server(302) as server:
        assert health(vanilla, {"HTTP": f"http://127.0.0.1:{server.port}/"}) == UNHEALTHY


def test_an_http_probe_to_a_closed_port_is_unhealthy(vanilla):
    assert health(vanilla, {"HTTP": f"http://127.0.0.1:{free_port()}/", "Timeout": "1s"}) == UNHEALTHY


def test_an_http_probe_fills_the_address_from_the_instance_description(vanilla):
    with http_server(200) as server:
        probe = {"HTTP": "http://{{address}}/ready/{{id}}/{{tags.role}}"}
        assert health(vanilla, probe, at(f"127.0.0.1:{server.port}")) == HEALTHY
        assert server.paths == ["/ready/instance-7/web"]


def test_a_tcp_probe_is_healthy_while_the_port_listens_and_unhealthy_once_closed(vanilla):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    instance = at("127.0.0.1", Host="127.0.0.1", Port=port)
    try:
        assert health(vanilla, {"TCP": "{{host}}:{{port}}", "Timeout": "1s"}, instance) == HEALTHY
    finally:
        listener.close()
    assert health(vanilla, {"TCP": "{{host}}:{{port}}", "Timeout": "1s"}, instance) == UNHEALTHY


def test_the_address_falls_back_to_the_address_tag_then_the_logical_id(vanilla):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        probe = {"TCP": f"{{{{address}}}}:{listener.getsockname()[1]}"}
        tagged = {"ID": "i-1", "LogicalID": "10.255.255.1", "Tags": {"infrakit.address": "127.0.0.1"}}
        assert health(vanilla, probe, tagged) == HEALTHY
        pet = {"ID": "i-2", "LogicalID": "127.0.0.1", "Tags": {}}
        assert health(vanilla, probe, pet) == HEALTHY


def test_an_instance_without_an_address_yet_is_unknown_not_unhealthy(vanilla):
    no_address = {"ID": "i-new", "LogicalID": None, "Tags": {}}
    assert health(vanilla, {"HTTP": "http://{{address}}/healthz"}, no_address) == UNKNOWN
    assert health(vanilla, {"TCP": "127.0.0.1:{{port}}"}, at("127.0.0.1")) == UNKNOWN
    assert health(vanilla, {"Command": ["true", "{{tags.missing}}"]}, at("127.0.0.1")) == UNKNOWN


def test_a_command_probe_passes_on_exit_zero_and_fails_otherwise(vanilla):
    assert health(vanilla, {"Command": ["true"]}) == HEALTHY
    assert health(vanilla, {"Command": ["false"]}) == UNHEALTHY
    # Placeholders are filled per argument, with no shell in between.
    assert health(vanilla, {"Command": ["test", "{{tags.role}}", "=", "web"]}, at("127.0.0.1")) == HEALTHY
    assert health(vanilla, {"Command": ["test", "{{id}}", "=", "someone-else"]}, at("127.0.0.1")) == UNHEALTHY


def test_a_command_that_cannot_be_started_says_nothing_about_the_instance(vanilla):
    assert health(vanilla, {"Command": ["/nonexistent/health-check"]}) == UNKNOWN


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_a_command_past_its_timeout_is_unhealthy_and_killed_with_its_children(vanilla, tmp_path):
    pid_file = tmp_path / "sleeper.pid"
    script = f"sleep 30 & echo $! > {pid_file}; wait"
    assert health(vanilla, {"Command": ["sh", "-c", script], "Timeout": "500ms"}) == UNHEALTHY
    sleeper = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _gone(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(sleeper), "the probe's child process outlived the probe"


def test_every_declared_probe_must_pass(vanilla):
    with http_server(200) as server:
        url = f"http://127.0.0.1:{server.port}/"
        assert health(vanilla, {"HTTP": url, "Command": ["true"]}) == HEALTHY
        assert health(vanilla, {"HTTP": url, "Command": ["false"]}) == UNHEALTHY
        assert health(vanilla, {"HTTP": url, "TCP": f"127.0.0.1:{free_port()}", "Timeout": "1s"}) == UNHEALTHY
        # A definite failure outweighs a probe that cannot tell yet.
        no_address = {"ID": "i-new", "Tags": {}}
        assert health(vanilla, {"TCP": "{{address}}:80", "Command": ["false"]}, no_address) == UNHEALTHY
        assert health(vanilla, {"TCP": "{{address}}:80", "Command": ["true"]}, no_address) == UNKNOWN


def test_probes_do_not_block_the_daemon_while_they_wait(daemons_here, vanilla):
    """A slow probe runs on the event loop's terms: other calls are answered meanwhile."""
    results: dict[str, int] = {}
    marker = f"slow-probe-{uuid.uuid4().hex}"

    def slow() -> None:
        client = daemons_here.client("vanilla", timeout=15)
        try:
            results["slow"] = health(client, {"Command": ["sh", "-c", "sleep 3", marker], "Timeout": "2s"})
        finally:
            client.close()

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 30
    while not marker_pids(marker):  # the slow probe is running inside the daemon
        assert time.monotonic() < deadline, "the slow probe never started"
        time.sleep(0.02)
    assert "slow" not in results
    assert health(vanilla, {"Command": ["true"]}) == HEALTHY
    assert "slow" not in results, "the quick probe was answered only after the slow one"
    thread.join(10)
    assert results["slow"] == UNHEALTHY


def test_drain_runs_its_command_with_the_instance_filled_in(vanilla, tmp_path):
    marker = tmp_path / "drained"
    # No shell: each placeholder fills exactly one argument.
    props = {"Drain": {"Command": [sys.executable, "-c",
                                   f"import sys; open({str(marker)!r}, 'w').write(' '.join(sys.argv[1:]))",
                                   "{{id}}", "{{address}}"], "Timeout": "10s"}}
    answer = vanilla.call("Flavor.Drain", {"Type": "", "Properties": props, "Instance": at("10.0.0.9")})
    assert answer == {"Type": "", "OK": True}
    assert marker.read_text() == "instance-7 10.0.0.9"


def test_a_failing_drain_is_an_error_naming_the_instance_and_the_command(vanilla):
    props = {"Drain": {"Command": ["sh", "-c", "echo still busy >&2; exit 3"]}}
    with pytest.raises(RemoteError) as failed:
        vanilla.call("Flavor.Drain", {"Type": "", "Properties": props, "Instance": at("10.0.0.9")})
    assert failed.value.code == -32000
    assert "drain of instance instance-7 failed" in failed.value.message
    assert "exited with status 3: still busy" in failed.value.message


def test_drain_without_a_hook_is_a_no_op_as_in_infrakit(vanilla):
    answer = vanilla.call("Flavor.Drain", {"Type": "", "Properties": {"Init": ["x"]}, "Instance": at("10.0.0.9")})
    assert answer == {"Type": "", "OK": True}
