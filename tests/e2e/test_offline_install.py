"""Offline installs, end to end: a wheelhouse built with `pip download` from the collection's pinned
constraints, then the role run with every package index unreachable (PIP_INDEX_URL on a closed port,
no pip configuration files, no find-links but the wheelhouse). The controller comes up, the venv holds
exactly the pinned versions and the wheel the Ansible controller built, and the same run without the
wheelhouse fails at the install (so the first one really read no index).
"""

from __future__ import annotations

import os
import socket
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.e2e import role
from tests.e2e.conftest import BIN, E2E, REPO, Run

pytestmark = pytest.mark.timeout(600)


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
    return role.run(e2e, prefix, *extra, env=env, timeout=500)


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
        installed = role.installed(prefix)
        expected = role.pins(e2e.collection / "requirements" / "runtime.txt")
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
        role.teardown(e2e, prefix)


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
        role.teardown(e2e, prefix)
