"""The controller role run for real on this host under a prefix (tests/e2e/playbooks/role.yml), and undone.

``run`` installs as the current user (no root), with this venv's Python as the interpreter;
``teardown`` removes the install and waits until no process under the prefix is left.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
from pathlib import Path

from tests.e2e.conftest import BIN, E2E, Run, ours, wait_until

PLAYBOOK = Path(__file__).parent / "playbooks" / "role.yml"


def run(e2e: E2E, prefix: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 800) -> Run:
    """``ansible-playbook role.yml`` for ``prefix`` with ``extra`` arguments (``-e ...``)."""
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(PLAYBOOK), "-e", f"role_prefix={prefix}",
                           "-e", f"ansible_python_interpreter={BIN / 'python'}", "-e", f"controller_user={user}",
                           "-e", f"controller_group={group}", *extra],
                          env=e2e.env if env is None else env, capture_output=True, text=True, timeout=timeout)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def teardown(e2e: E2E, prefix: Path) -> None:
    subprocess.run([str(BIN / "ansible-playbook"), "playbooks/teardown.yml", "-e", f"controller_prefix={prefix}",
                    "-e", "controller_user_create=false", "-e", "teardown_remove_install=true",
                    "-e", f"ansible_python_interpreter={BIN / 'python'}"],
                   cwd=e2e.collection, env=e2e.env, capture_output=True, text=True, timeout=300)
    wait_until(lambda: ours(str(prefix)) == [], 30, f"every process under {prefix} gone")


def pins(path: Path) -> dict[str, str]:
    """``name==version`` lines of a requirements file, names normalised as ``installed`` gives them."""
    out = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==")
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def installed(prefix: Path) -> dict[str, str]:
    """Every distribution in the runtime's venv under ``prefix``, by normalised name."""
    venv = prefix / "opt" / "infrakit" / "venv"
    return json.loads(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m, json; print(json.dumps("
         "{d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))"],
        capture_output=True, text=True, check=True).stdout)
