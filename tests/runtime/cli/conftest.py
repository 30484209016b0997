"""A manager with the file instance plugin and vanilla: enough for the CLI's group commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.runtime.group import world


class Manager:
    def __init__(self, daemons) -> None:
        self.d = daemons

    def spec(self, gid: str, size: int) -> dict:
        return {**world.raw_spec(size), "ID": gid}

    def call(self, method: str, params: dict):
        client = self.d.client("group", timeout=30)
        try:
            return client.call(method, params)
        finally:
            client.close()

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infrakit_runtime", *args], env=self.d.env,
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def manager(daemons):
    directory = daemons.home / "instances"
    directory.mkdir()
    daemons.start("file", env={"INFRAKIT_INSTANCE_FILE_DIR": str(directory)})
    daemons.start("vanilla")
    daemons.start("manager", env={"INFRAKIT_GROUP_POLL_INTERVAL": "0.2s"})
    return Manager(daemons)
