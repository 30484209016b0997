"""The controller role with the ansible flavor among its daemons: it installs the runtime's ``ansible``
extra at the pins of requirements/ansible.txt, the flavor daemon runs and can check a playbook with
the ansible-playbook of that venv, and a second run changes nothing."""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from infrakit_runtime.rpc.errors import RemoteError
from tests.e2e.conftest import BIN, E2E, Run, ours, wait_until

pytestmark = pytest.mark.timeout(900)
PLAYBOOK = Path(__file__).parent / "playbooks" / "role.yml"
DAEMONS = json.dumps([{"kind": "process"}, {"kind": "vanilla"}, {"kind": "ansible"}, {"kind": "manager"}])


def run_role(e2e: E2E, prefix: Path) -> Run:
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(PLAYBOOK), "-e", f"role_prefix={prefix}",
                           "-e", f"ansible_python_interpreter={BIN / 'python'}", "-e", f"controller_user={user}",
                           "-e", f"controller_group={group}", "-e", f"{{\"controller_plugins\": {DAEMONS}}}"],
                          env=e2e.env, capture_output=True, text=True, timeout=800)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==")
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def test_the_role_installs_the_ansible_extra_when_a_daemon_is_the_ansible_flavor(e2e: E2E, tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    run = run_role(e2e, prefix)
    try:
        assert run.rc == 0, run.stdout[-6000:] + run.stderr[-2000:]
        venv = prefix / "opt" / "infrakit" / "venv"
        installed = json.loads(subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m, json; print(json.dumps("
             "{d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))"],
            capture_output=True, text=True, check=True).stdout)
        expected = pins(e2e.collection / "requirements" / "ansible.txt")
        assert {k: installed.get(k) for k in expected} == expected

        plugins = prefix / "var" / "lib" / "infrakit" / "plugins"
        wait_until(lambda: (plugins / "ansible").exists(), 60, "the ansible flavor's socket")
        client = SyncClient(Address(unix_path=plugins / "ansible"), name="ansible", timeout=60)
        try:
            assert "Flavor/0.1.1" in client.hello()
            bad = tmp_path / "bad.yml"
            bad.write_text("- hosts: all\n  tasks:\n    - no_such_module_xyz: {}\n")
            with pytest.raises(RemoteError, match="no_such_module_xyz"):
                client.call("Flavor.Validate", {"Type": "", "Properties": {"Playbook": str(bad)},
                                                "Allocation": {"Size": 1}})
        finally:
            client.close()

        again = run_role(e2e, prefix)
        assert again.rc == 0, again.stdout[-4000:]
        assert again.recap()["changed"] == 0, again.stdout[-4000:]
    finally:
        subprocess.run([str(BIN / "ansible-playbook"), "playbooks/teardown.yml", "-e", f"controller_prefix={prefix}",
                        "-e", "controller_user_create=false", "-e", "teardown_remove_install=true",
                        "-e", f"ansible_python_interpreter={BIN / 'python'}"],
                       cwd=e2e.collection, env=e2e.env, capture_output=True, text=True, timeout=300)
        wait_until(lambda: ours(str(prefix)) == [], 30, f"every process under {prefix} gone")
