"""Another local user cannot act through a TCP listener, loopback included (issue 12, item 2).

The attack as reported: the daemons run as root; an unprivileged user on the same host sends
``Instance.Provision`` with ``Command: ["/bin/sh", "-c", "id > pwned.txt"]`` to
``infrakit plugin run process:p --tcp 127.0.0.1:PORT``, or ``Group.CommitGroup`` to a manager
whose ``listen:`` is on loopback with no token, and gets ``uid=0(root)``. Each test creates a
real throwaway user (``useradd``) and sends the requests as that user with
``runuser -u USER -- curl``, exactly as the report did; the user is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from tests.runtime.conftest import REPO
from tests.runtime.security.conftest import TOKEN, WRONG_TOKEN, free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/sbin/useradd").exists(),
                                reason="creating a throwaway user needs root and useradd")


@pytest.fixture
def intruder() -> Iterator[str]:
    """A real unprivileged local user, created for this test and deleted after it."""
    name = f"ikatk{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True,
                   capture_output=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)


@pytest.fixture
def home() -> Iterator[Path]:
    # Short: AF_UNIX paths are limited to ~107 bytes. World-traversable, so that only the modes the
    # daemons set (0750 plugin dir, 0660 socket, the token file's own mode) stand between the
    # intruder and the files.
    with tempfile.TemporaryDirectory(prefix="iklu-") as d:
        os.chmod(d, 0o755)
        yield Path(d)


def as_user(user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *argv], cwd="/", capture_output=True, text=True,
                          timeout=60)


def curl(user: str, url: str, *, method: str | None = None, params: dict[str, Any] | None = None,
         authorization: str | None = None) -> tuple[int, str]:
    """``runuser -u USER -- curl``: (curl's exit status, HTTP status or '' when none) as that user."""
    argv = ["curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}"]
    if method is not None:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    if authorization is not None:
        argv += ["-H", f"Authorization: {authorization}"]
    done = as_user(user, *argv, url)
    return done.returncode, done.stdout.strip()


def pwn_params(target: Path) -> dict[str, Any]:
    return {"Type": "", "Spec": {"Properties": {"Command": ["/bin/sh", "-c", f"id > {target}"]}, "Tags": {}}}


def commit_params(target: Path) -> dict[str, Any]:
    spec = {"ID": "pwn", "Properties": {
        "Allocation": {"Size": 1},
        "Instance": {"Plugin": "process", "Properties": {"Command": ["/bin/sh", "-c", f"id > {target}; sleep 600"]}},
        "Flavor": {"Plugin": "vanilla", "Properties": {}}}}
    return {"Name": "group", "Spec": spec, "Pretend": False}


def token_file(directory: Path, mode: int = 0o600, text: str = TOKEN) -> Path:
    path = directory / "token"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


class Daemon:
    """One ``infrakit plugin run`` process in ``home``, its output in a file, stopped at teardown."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.plugins = home / "plugins"
        self.log_path = home / f"daemon-{secrets.token_hex(3)}.log"
        self.env = {**os.environ, "INFRAKIT_HOME": str(home), "INFRAKIT_PLUGINS_DIR": str(self.plugins),
                    "PYTHONPATH": str(REPO), **(env or {})}
        for name in ("INFRAKIT_CONFIG", "INFRAKIT_TOKEN_FILE"):
            if not env or name not in env:
                self.env.pop(name, None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "infrakit_runtime", "plugin", "run", *args],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def serving(self, name: str, port: int | None = None, timeout: float = 60) -> bool:
        """Wait until it answers on its socket (and accepts on ``port``): True, or it exited: False."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if (self.plugins / name).exists() and (port is None or _accepts(port)):
                client = SyncClient(Address(unix_path=self.plugins / name), timeout=2)
                try:
                    client.hello()
                    return True
                except Exception:
                    pass
                finally:
                    client.close()
            time.sleep(0.05)
        raise AssertionError(f"the daemon neither served nor exited within {timeout}s:\n{self.log()}")

    def exited(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, name: str, method: str, params: dict[str, Any]) -> Any:
        client = SyncClient(Address(unix_path=self.plugins / name), name=name, timeout=30)
        try:
            return client.call(method, params)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)


def _accepts(port: int) -> bool:
    with contextlib.closing(socket.socket()) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    try:
        yield daemons
    finally:
        for d in reversed(daemons):
            d.stop()


HOW_TO = ("--token-file", "INFRAKIT_TOKEN_FILE", "token_file")


def test_plugin_run_tcp_without_a_token_refuses_to_start_and_the_local_user_gets_nothing(
        intruder: str, home: Path, started: list[Daemon]) -> None:
    port = free_port()
    pwned = home / "pwned.txt"
    daemon = Daemon(home, "process:p", "--tcp", f"127.0.0.1:{port}")
    started.append(daemon)
    served = daemon.serving("p", port)
    code, status = curl(intruder, f"http://127.0.0.1:{port}/", method="Instance.Provision", params=pwn_params(pwned))
    assert not served and daemon.exited() != 0, "a TCP listener without a token must not start"
    text = daemon.log()
    assert "requires a bearer token" in text and all(way in text for way in HOW_TO), text
    assert "Traceback" not in text
    assert (code, status) == (7, "000"), "nothing may listen on the port"
    assert not pwned.exists()


def test_with_a_token_another_users_provision_is_refused_and_nothing_runs(
        intruder: str, home: Path, started: list[Daemon]) -> None:
    port = free_port()
    pwned = home / "pwned.txt"
    secret = token_file(home)
    daemon = Daemon(home, "process:p", "--tcp", f"127.0.0.1:{port}", "--token-file", str(secret))
    started.append(daemon)
    assert daemon.serving("p", port), daemon.log()
    url = f"http://127.0.0.1:{port}/"
    # The intruder can neither read the token, nor reach the Unix socket, nor call without the token.
    assert as_user(intruder, "cat", str(secret)).returncode != 0
    unix = as_user(intruder, "curl", "-sS", "--max-time", "20", "--unix-socket", str(home / "plugins" / "p"),
                   "http://x/info/api.json")
    assert unix.returncode != 0, unix.stdout
    for authorization in (None, f"Bearer {WRONG_TOKEN}", "Bearer", TOKEN, f"Bearer {TOKEN}x", f"Basic {TOKEN}"):
        assert curl(intruder, url, method="Instance.Provision", params=pwn_params(pwned),
                    authorization=authorization) == (0, "401"), authorization
    assert curl(intruder, f"http://127.0.0.1:{port}/info/api.json") == (0, "401")
    # Nothing was created: the plugin (asked over its Unix socket) has no instance, no command ran.
    assert daemon.call("p", "Instance.DescribeInstances", {"Type": "", "Tags": {}})["Descriptions"] == []
    assert not pwned.exists()
    # The listener itself works for whoever holds the token (so the refusals above are about the token).
    assert curl(intruder, url, method="Handshake.Hello", authorization=f"Bearer {TOKEN}") == (0, "200")
    assert TOKEN not in daemon.log()
    assert TOKEN not in Path(f"/proc/{daemon.proc.pid}/cmdline").read_text()


def test_a_token_file_that_others_can_read_is_refused(intruder: str, home: Path, started: list[Daemon]) -> None:
    secret = token_file(home, mode=0o644)
    assert as_user(intruder, "cat", str(secret)).stdout.strip() == TOKEN, "the danger being refused"
    daemon = Daemon(home, "vanilla", "--tcp", f"127.0.0.1:{free_port()}", "--token-file", str(secret))
    started.append(daemon)
    assert daemon.exited() != 0
    text = daemon.log()
    assert str(secret) in text and "readable by other users" in text and "chmod 600" in text, text
    assert TOKEN not in text


def test_a_token_file_another_user_owns_is_refused(intruder: str, home: Path, started: list[Daemon]) -> None:
    """Its owner could change it at will (even at mode 600), and with it who may call."""
    secret = token_file(home)
    subprocess.run(["chown", intruder, str(secret)], check=True, timeout=30)
    daemon = Daemon(home, "vanilla", "--tcp", f"127.0.0.1:{free_port()}", "--token-file", str(secret))
    started.append(daemon)
    assert daemon.exited() != 0
    assert str(secret) in daemon.log() and "must belong to the daemons' user or root" in daemon.log(), daemon.log()


def test_an_empty_or_missing_token_file_is_refused_naming_it(home: Path, started: list[Daemon]) -> None:
    empty = token_file(home, text="")
    for path in (empty, home / "nosuch"):
        daemon = Daemon(home, "vanilla", "--tcp", f"127.0.0.1:{free_port()}", "--token-file", str(path))
        started.append(daemon)
        assert daemon.exited() != 0
        assert str(path) in daemon.log() and "Traceback" not in daemon.log(), daemon.log()


def manager_options(home: Path, port: int, **extra: Any) -> Path:
    path = home / "manager.json"
    path.write_text(json.dumps({"backend": {"type": "file", "dir": str(home / "store")},
                                "listen": f"127.0.0.1:{port}", "poll_interval": "1s", **extra}))
    return path


def test_a_manager_listening_on_loopback_without_a_token_refuses_to_start(
        intruder: str, home: Path, started: list[Daemon]) -> None:
    port = free_port()
    pwned = home / "pwned.txt"
    for kind in ("process", "vanilla"):
        started.append(Daemon(home, kind))
        assert started[-1].serving(kind)
    manager = Daemon(home, "manager", "--options-file", str(manager_options(home, port)))
    started.append(manager)
    served = manager.serving("group", port)
    code, status = curl(intruder, f"http://127.0.0.1:{port}/", method="Group.CommitGroup",
                        params=commit_params(pwned))
    assert not served and manager.exited() != 0, "a manager listening on TCP without a token must not start"
    assert "token_file" in manager.log() and "Traceback" not in manager.log(), manager.log()
    assert (code, status) == (7, "000")
    assert not list((home / "store").glob("**/*.json"))
    assert not pwned.exists()


def test_with_a_token_another_users_commit_to_the_manager_is_refused_and_nothing_is_stored(
        intruder: str, home: Path, started: list[Daemon]) -> None:
    port = free_port()
    pwned = home / "pwned.txt"
    for kind in ("process", "vanilla"):
        started.append(Daemon(home, kind))
        assert started[-1].serving(kind)
    options = manager_options(home, port, token_file=str(token_file(home)))
    manager = Daemon(home, "manager", "--options-file", str(options))
    started.append(manager)
    assert manager.serving("group", port), manager.log()
    url = f"http://127.0.0.1:{port}"
    for authorization in (None, f"Bearer {WRONG_TOKEN}"):
        assert curl(intruder, f"{url}/", method="Group.CommitGroup", params=commit_params(pwned),
                    authorization=authorization) == (0, "401")
        assert curl(intruder, f"{url}/metrics", authorization=authorization) == (0, "401")
        assert curl(intruder, f"{url}/events?since=0", authorization=authorization) == (0, "401")
    assert not manager.call("group", "Group.InspectGroups", {"Name": "group"})["Groups"]
    assert not list((home / "store").glob("**/*.json"))
    assert manager.call("process", "Instance.DescribeInstances", {"Type": "", "Tags": {}})["Descriptions"] == []
    assert not pwned.exists()
    assert curl(intruder, f"{url}/", method="Manager.IsLeader", authorization=f"Bearer {TOKEN}") == (0, "200")


def test_the_cli_and_the_controller_reach_a_tcp_plugin_with_the_token_and_fail_readably_without(
        home: Path, started: list[Daemon]) -> None:
    """Clients: a ``.listen`` file points at a TCP plugin; INFRAKIT_TOKEN_FILE gives them its token."""
    port = free_port()
    secret = token_file(home)
    remote_home = home / "remote"
    remote_home.mkdir()
    remote = Daemon(remote_home, "file:remote", "--tcp", f"127.0.0.1:{port}", "--token-file", str(secret))
    started.append(remote)
    assert remote.serving("remote", port), remote.log()
    local = home / "local"
    (local / "plugins").mkdir(parents=True)
    (local / "plugins" / "remote.listen").write_text(f"tcp://127.0.0.1:{port}\n")
    env = {**os.environ, "INFRAKIT_HOME": str(local), "INFRAKIT_PLUGINS_DIR": str(local / "plugins"),
           "PYTHONPATH": str(REPO)}
    env.pop("INFRAKIT_TOKEN_FILE", None)
    env.pop("INFRAKIT_CONFIG", None)
    cli = [sys.executable, "-m", "infrakit_runtime", "instance", "--plugin", "remote", "describe"]
    refused = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr and "Traceback" not in refused.stderr
    allowed = subprocess.run(cli, env={**env, "INFRAKIT_TOKEN_FILE": str(secret)}, capture_output=True, text=True,
                             timeout=60)
    assert allowed.returncode == 0, allowed.stderr
    # The controller (a manager with the same token) provisions through the TCP plugin.
    with_token = {"INFRAKIT_TOKEN_FILE": str(secret)}
    started.append(Daemon(local, "vanilla", env=with_token))
    assert started[-1].serving("vanilla")
    manager = Daemon(local, "manager", "-o", "poll_interval=1s", env=with_token)
    started.append(manager)
    assert manager.serving("group"), manager.log()
    spec = {"ID": "remote", "Properties": {"Allocation": {"Size": 2}, "Instance": {"Plugin": "remote", "Properties": {}},
                                           "Flavor": {"Plugin": "vanilla", "Properties": {}}}}
    manager.call("group", "Group.CommitGroup", {"Name": "group", "Spec": spec, "Pretend": False})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        described = remote.call("remote", "Instance.DescribeInstances", {"Type": "", "Tags": {}})["Descriptions"]
        if len(described) == 2:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the controller did not provision through the TCP plugin:\n{manager.log()}")
    assert TOKEN not in manager.log() and TOKEN not in remote.log()
