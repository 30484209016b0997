"""End-to-end fixtures: the collection built with ansible-galaxy, installed into a temporary
collections path, and driven from that installed copy with ansible-playbook and ansible-runner.

Everything lives under one temporary directory (Ansible's home and temp dirs, the controller's
prefix, INFRAKIT_HOME) or in a test's own tmp_path; whatever a test leaves under its tmp_path is killed
when it ends (and fails it), whatever any test started is killed at the end of the session, whatever
happened in between.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from tests.runtime import leftovers

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
                   r"failed=(?P<failed>\d+)", re.MULTILINE)


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    def recap(self, host: str = "localhost") -> dict[str, int]:
        for m in RECAP.finditer(self.stdout):
            if m.group("host") == host:
                return {k: int(v) for k, v in m.groupdict().items() if k != "host"}
        raise AssertionError(f"no recap for {host} in:\n{self.stdout[-3000:]}\n{self.stderr[-2000:]}")


@dataclass
class E2E:
    """The installed collection and the places the tests use."""

    root: Path
    collection: Path
    env: dict[str, str]

    @property
    def prefix(self) -> Path:
        return self.root / "demo"

    @property
    def plugins_dir(self) -> Path:
        return self.prefix / "root" / "var" / "lib" / "infrakit" / "plugins"

    @property
    def config(self) -> Path:
        return self.prefix / "root" / "etc" / "infrakit" / "infrakit.yml"

    def playbook(self, name: str, *args: str, timeout: float = 400) -> Run:
        proc = subprocess.run([str(BIN / "ansible-playbook"), f"playbooks/{name}", *args], cwd=self.collection,
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def client(self, name: str = "group", timeout: float = 10) -> SyncClient:
        return SyncClient(Address(unix_path=self.plugins_dir / name), name=name, timeout=timeout)

    def describe(self, group: str) -> dict:
        client = self.client()
        try:
            return client.call("Group.DescribeGroup", {"Name": "group", "ID": group})["Description"]
        finally:
            client.close()

    def pid(self, name: str) -> int | None:
        try:
            return int((self.plugins_dir / f"{name}.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def answers(self, name: str) -> bool:
        client = self.client(name, timeout=2)
        try:
            client.hello()
            return True
        except Exception:
            return False
        finally:
            client.close()


def ours(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line mentions ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # a daemon restarting
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    root = tmp_path_factory.mktemp("e2e")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFRAKIT_", "ANSIBLE_"))}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "ANSIBLE_COLLECTIONS_PATH": str(root / "collections"),
        "ANSIBLE_HOME": str(root / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(root / "ansible-tmp"),
        "ANSIBLE_REMOTE_TEMP": str(root / "ansible-remote-tmp"),
        "ANSIBLE_ASYNC_DIR": str(root / "ansible-async"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
        # Never the user's ~/.infrakit: the role sets explicit paths, and this catches anything else.
        "INFRAKIT_HOME": str(root / "stray-infrakit-home"),
    })
    dist = root / "dist"
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(dist), str(REPO)],
                   check=True, capture_output=True, env=env)
    (tarball,) = dist.glob("infrakit-core-*.tar.gz")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--force", "-p", str(root / "collections"),
                    str(tarball)], check=True, capture_output=True, env=env)
    collection = root / "collections" / "ansible_collections" / "infrakit" / "core"
    assert (collection / "MANIFEST.json").is_file()
    try:
        yield E2E(root=root, collection=collection, env=env)
    finally:
        # Whatever any test of the session left, under the shared root or a test's own tmp_path (the role
        # checks and offline installs put their prefix there): frozen first, so a keeper restarts nothing.
        leftovers.kill_under(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def nothing_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that ran the role under its own tmp_path leaves no process there, passed or failed.

    Whatever is left is killed (so it cannot outlive the run) and the test errors, naming it.
    """
    if "tmp_path" not in request.fixturenames:
        yield
        return
    tmp_path = request.getfixturevalue("tmp_path")  # set up now, so it is torn down after this check
    yield
    found = leftovers.kill_under(tmp_path)
    assert not found, f"processes left behind under this test's tmp_path (now killed): {leftovers.describe(found)}"
