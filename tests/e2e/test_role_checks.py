"""The controller role checks the host before it changes anything: a missing service user or group,
an interpreter that is missing or older than 3.11, each fails with a message that names the
variable and the fix, and leaves nothing behind (no directory under the prefix, no wheel built).

Each run is the installed collection's role, run by ansible-playbook on this machine.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, E2E, Run

pytestmark = pytest.mark.timeout(300)
PLAYBOOK = Path(__file__).parent / "playbooks" / "role.yml"


def run_role(e2e: E2E, prefix: Path, *extra: str) -> Run:
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(PLAYBOOK), "-e", f"role_prefix={prefix}",
                           "-e", f"ansible_python_interpreter={BIN / 'python'}", *extra],
                          env=e2e.env, capture_output=True, text=True, timeout=240)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def me() -> tuple[str, str]:
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def assert_untouched(prefix: Path) -> None:
    assert not prefix.exists(), sorted(str(p) for p in prefix.rglob("*"))
    assert not Path(f"{prefix}-build").exists()


def unused(database: str) -> str:
    lookup = pwd.getpwnam if database == "passwd" else grp.getgrnam
    for n in range(100):
        name = f"ikit-missing-{n}"
        try:
            lookup(name)
        except KeyError:
            return name
    raise AssertionError("no unused name")


def test_a_missing_user_fails_before_anything_is_created_and_names_the_variables(e2e: E2E, tmp_path: Path) -> None:
    user, group = unused("passwd"), me()[1]
    run = run_role(e2e, tmp_path / "root", "-e", f"controller_user={user}", "-e", f"controller_group={group}")
    assert run.rc != 0
    assert f"user {user} not found" in run.stdout, run.stdout[-3000:]
    assert "controller_user_create is false" in run.stdout
    assert f"user {user} and group" not in run.stdout
    assert_untouched(tmp_path / "root")


def test_a_missing_group_fails_before_anything_is_created(e2e: E2E, tmp_path: Path) -> None:
    user, group = me()[0], unused("group")
    run = run_role(e2e, tmp_path / "root", "-e", f"controller_user={user}", "-e", f"controller_group={group}")
    assert run.rc != 0
    assert f"group {group} not found" in run.stdout, run.stdout[-3000:]
    assert_untouched(tmp_path / "root")


def test_the_default_user_without_user_creation_is_refused_too(e2e: E2E, tmp_path: Path) -> None:
    try:
        pwd.getpwnam("infrakit")
        pytest.skip("this machine has a user named infrakit")
    except KeyError:
        pass
    run = run_role(e2e, tmp_path / "root", "-e", "controller_user=infrakit", "-e", "controller_group=infrakit")
    assert run.rc != 0
    assert "user infrakit and group infrakit not found" in run.stdout, run.stdout[-3000:]
    assert_untouched(tmp_path / "root")


def test_an_interpreter_that_does_not_exist_fails_before_anything_is_created(e2e: E2E, tmp_path: Path) -> None:
    user, group = me()
    run = run_role(e2e, tmp_path / "root", "-e", f"controller_user={user}", "-e", f"controller_group={group}",
                   "-e", f"controller_venv_python={tmp_path / 'no-python'}")
    assert run.rc != 0
    assert "needs Python 3.11 or later" in run.stdout and "controller_venv_python" in run.stdout, run.stdout[-3000:]
    assert "does not run" in run.stdout
    assert_untouched(tmp_path / "root")


def older_python() -> str | None:
    """A real interpreter older than 3.11 on this machine (a distribution's or pyenv's), if any runs."""
    for version in ("3.10", "3.9", "3.8"):
        candidates = [shutil.which(f"python{version}")]
        candidates += sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}"))
        for candidate in filter(None, candidates):
            probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info < (3, 11))"],
                                   capture_output=True, text=True)
            if probe.returncode == 0 and probe.stdout.strip() == "True":
                return candidate
    return None


@pytest.mark.skipif(older_python() is None, reason="no Python older than 3.11 on this machine")
def test_an_interpreter_older_than_3_11_fails_before_anything_is_created(e2e: E2E, tmp_path: Path) -> None:
    python = older_python()
    version = subprocess.run([python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    user, group = me()
    run = run_role(e2e, tmp_path / "root", "-e", f"controller_user={user}", "-e", f"controller_group={group}",
                   "-e", f"controller_venv_python={python}")
    assert run.rc != 0
    assert f"({python}) is {version}" in run.stdout, run.stdout[-3000:]
    assert_untouched(tmp_path / "root")


def test_a_missing_wheelhouse_fails_before_anything_is_created(e2e: E2E, tmp_path: Path) -> None:
    user, group = me()
    run = run_role(e2e, tmp_path / "root", "-e", f"controller_user={user}", "-e", f"controller_group={group}",
                   "-e", f"controller_wheelhouse={tmp_path / 'no-wheels'}")
    assert run.rc != 0
    assert "is not a directory on the Ansible controller" in run.stdout, run.stdout[-3000:]
    assert_untouched(tmp_path / "root")
