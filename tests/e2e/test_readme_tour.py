"""The README's five-minute tour, run as written from the checkout: it works in a temporary
directory and leaves the checkout as it found it (issue 13, item 9).

Two lines are adapted, and only these: after the daemons are started in the background the script
waits until the manager answers (a person gives them a second), and the `kill -9 <a PID ...>`
placeholder becomes the command that finds one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from tests.e2e.conftest import E2E, REPO, wait_until

pytestmark = pytest.mark.timeout(600)

WAIT_FOR_DAEMONS = "until infrakit group ls >/dev/null 2>&1; do sleep 0.2; done"
KILL_ONE = ("kill -9 \"$(infrakit instance --plugin process -o json describe --properties"
            " | python3 -c 'import json, sys; print(json.load(sys.stdin)[0][\"Properties\"][\"PID\"])')\"")


def tour() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"^## Five-minute tour\n+```sh\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no five-minute tour"
    lines = []
    for line in match.group(1).splitlines():
        if line.startswith("kill -9 <"):
            line = KILL_ONE
        lines.append(line)
        if line.startswith("infrakit plugin start") and line.split("#")[0].rstrip().endswith("&"):
            lines.append(WAIT_FOR_DAEMONS)
    assert KILL_ONE in lines and WAIT_FOR_DAEMONS in lines, "the tour's shape changed; adapt this test"
    return "\n".join(lines) + "\n"


def checkout_state() -> set[str]:
    """Untracked and ignored files of the checkout (bytecode caches aside: importing writes them)."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return {line for line in out.splitlines() if "__pycache__" not in line and not line.endswith(".pyc")}


def test_the_readme_tour_runs_in_a_temporary_directory_and_leaves_the_checkout_clean(
        e2e: E2E, tmp_path: Path) -> None:
    script = tour()
    temp = tmp_path / "tmp"
    temp.mkdir()
    before = checkout_state()
    env = dict(e2e.env, TMPDIR=str(temp))
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=480)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        for home in temp.iterdir():
            socket = home / "plugins" / "group"
            if socket.exists():   # a failed tour: take its group and daemons down
                with contextlib.suppress(Exception):
                    SyncClient(Address(unix_path=socket), name="group", timeout=10).call(
                        "Group.DestroyGroup", {"Name": "group/web", "ID": "web"})
                subprocess.run([str(REPO / ".venv" / "bin" / "infrakit"), "plugin", "stop", "--all"],
                               env=dict(env, INFRAKIT_HOME=str(home)), capture_output=True, timeout=60)
    assert proc.returncode == 0, output[-6000:]

    assert "Managing 3 instances" in output
    assert "Performing a rolling update on 3 instances" in output, output[-4000:]
    (home,) = list(temp.iterdir())
    assert "MESSAGE=v2" in (home / "web.yml").read_text()
    assert not (REPO / "web.yml").exists() and not (REPO / ".tour").exists()
    assert checkout_state() == before
    # The tour stops its daemons at the end.
    wait_until(lambda: not list((home / "plugins").glob("*.pid")), 30, "the tour's daemons stopped")
