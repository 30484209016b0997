"""Offline installs, end to end: a wheelhouse built with `pip download` from the collection's pinned
constraints, then the role run with every package index unreachable (PIP_INDEX_URL on a closed port,
no pip configuration files, no find-links but the wheelhouse). The controller comes up, the venv holds
exactly the pinned versions and the wheel the Ansible controller built, and the same run without the
wheelhouse fails at the install (so the first one really read no index).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, E2E, REPO, Run, ours, wait_until

pytestmark = pytest.mark.timeout(600)
PLAYBOOK = Path(__file__).parent / "playbooks" / "role.yml"


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released: connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_env(e2e: E2E) -> dict[str, str]:
    env = {k: v for k, v in e2e.env.items() if not k.startswith("PIP_")}
    env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": f"http://127.0.0.1:{closed_port()}/simple",
                "PIP_RETRIES": "0", "PIP_TIMEOUT": "5", "PIP_NO_CACHE_DIR": "1"})
    return env


def run_role(e2e: E2E, env: dict[str, str], prefix: Path, *extra: str) -> Run:
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(PLAYBOOK), "-e", f"role_prefix={prefix}",
                           "-e", f"ansible_python_interpreter={BIN / 'python'}", "-e", f"controller_user={user}",
                           "-e", f"controller_group={group}", *extra],
                          env=env, capture_output=True, text=True, timeout=500)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==")
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every dependency of the runtime at its pinned version, as operations.md says to build it."""
    wheels = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run([str(BIN / "python"), "-m", "pip", "download", "--disable-pip-version-check", "--only-binary", ":all:",
                    "-r", str(REPO / "requirements" / "runtime.txt"), "-d", str(wheels)],
                   check=True, capture_output=True, timeout=400)
    return wheels


def test_the_role_installs_offline_from_a_wheelhouse_with_every_index_unreachable(
        e2e: E2E, wheelhouse: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    env = offline_env(e2e)
    run = run_role(e2e, env, prefix, "-e", f"controller_wheelhouse={wheelhouse}")
    try:
        assert run.rc == 0, run.stdout[-6000:] + run.stderr[-2000:]
        assert "daemon(s) answering" in run.stdout
        venv = prefix / "opt" / "infrakit" / "venv"
        installed = json.loads(subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m, json; print(json.dumps("
             "{d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))"],
            capture_output=True, text=True, check=True).stdout)
        expected = pins(e2e.collection / "requirements" / "runtime.txt")
        assert {k: installed.get(k) for k in expected} == expected
        assert installed["infrakit-runtime"] == "0.1.0"
        # The wheel on the host is the one the Ansible controller built, byte for byte.
        (built,) = Path(f"{prefix}-build").glob("infrakit_runtime-*.whl")
        assert (prefix / "opt" / "infrakit" / "dist" / built.name).read_bytes() == built.read_bytes()
        assert zipfile.ZipFile(built).testzip() is None

        # A second run with the index still unreachable changes nothing.
        again = run_role(e2e, env, prefix, "-e", f"controller_wheelhouse={wheelhouse}")
        assert again.rc == 0, again.stdout[-4000:]
        assert again.recap()["changed"] == 0, again.stdout[-4000:]
    finally:
        teardown(e2e, prefix)


def test_without_the_wheelhouse_the_same_run_fails_at_the_install(e2e: E2E, tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    env = offline_env(e2e)
    run = run_role(e2e, env, prefix)
    try:
        assert run.rc != 0
        install = "TASK [infrakit.core.controller : Install the runtime, its extras and their pinned dependencies"
        assert install in run.stdout, "the run failed before the install: " + run.stdout[-6000:] + run.stderr[-2000:]
        failed = run.stdout[run.stdout.index(install):]
        assert f"Looking in indexes: {env['PIP_INDEX_URL']}" in failed, run.stdout[-4000:]
        assert "ResolutionImpossible" in failed or "No matching distribution found" in failed, run.stdout[-4000:]
        # Nothing half-installed: no runtime in the venv, no record that would make the next run skip the install.
        venv = prefix / "opt" / "infrakit" / "venv"
        assert not (venv / "bin" / "infrakit").exists()
        assert not (venv / ".infrakit-installed").exists()
    finally:
        teardown(e2e, prefix)


def teardown(e2e: E2E, prefix: Path) -> None:
    subprocess.run([str(BIN / "ansible-playbook"), "playbooks/teardown.yml", "-e", f"controller_prefix={prefix}",
                    "-e", "controller_user_create=false", "-e", "teardown_remove_install=true",
                    "-e", f"ansible_python_interpreter={BIN / 'python'}"],
                   cwd=e2e.collection, env=e2e.env, capture_output=True, text=True, timeout=300)
    wait_until(lambda: ours(str(prefix)) == [], 30, f"every process under {prefix} gone")
