"""A controller on this host for the e2e tests of the Ansible face, started as the README does it.

``infrakit plugin start manager process vanilla`` from the project's venv under a private
INFRAKIT_HOME: real daemons on real Unix sockets, without installing the role (test_controller.py
covers that). Guarantee: on exit every group is destroyed, the supervisor (and with it its
daemons) stopped, and any process whose command line carries ``marker`` killed, whatever the test
did. Instances that should be cleaned up must carry the marker (``webapp_command`` does).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from tests.e2e.conftest import BIN, ours, wait_until


@dataclass
class LocalController:
    home: Path
    marker: str

    @property
    def plugins_dir(self) -> Path:
        return self.home / "plugins"

    @property
    def url(self) -> str:
        return str(self.plugins_dir / "group")

    def call(self, method: str, params: dict) -> dict:
        client = SyncClient(Address(unix_path=self.plugins_dir / "group"), name="group", timeout=10)
        try:
            return client.call(method, params)
        finally:
            client.close()

    def describe(self, group: str) -> dict:
        return self.call("Group.DescribeGroup", {"Name": f"group/{group}", "ID": group})["Description"]

    def group_ids(self) -> list[str]:
        return [g["ID"] for g in self.call("Group.InspectGroups", {"Name": "group/groups", "ID": ""})["Groups"] or []]

    def webapp_command(self, *extra: str) -> list[str]:
        """An instance Command: the runtime's demo web service, marked for clean-up."""
        return [str(BIN / "python"), "-m", "infrakit_runtime.examples.webapp", f"--marker={self.marker}", *extra]

    def leads(self) -> bool:
        return bool(self.call("Manager.IsLeader", {}).get("Leader"))


@contextlib.contextmanager
def local_controller(root: Path, env: dict[str, str]) -> Iterator[LocalController]:
    home = root / "ik"
    home.mkdir(parents=True)
    controller = LocalController(home=home, marker=f"ik-e2e-{uuid.uuid4().hex}")
    daemon_env = dict(env, INFRAKIT_HOME=str(home), INFRAKIT_PLUGINS_DIR=str(controller.plugins_dir))
    with open(home / "start.log", "wb") as log:
        supervisor = subprocess.Popen([str(BIN / "infrakit"), "plugin", "start", "manager", "process", "vanilla"],
                                      env=daemon_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(controller.leads, 60, "the manager to lead")
        yield controller
    finally:
        with contextlib.suppress(Exception):
            for group in controller.group_ids():
                controller.call("Group.DestroyGroup", {"Name": f"group/{group}", "ID": group})
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(timeout=60)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            supervisor.wait()
        for pid in ours(controller.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not ours(controller.marker), 20, "every instance process gone")
