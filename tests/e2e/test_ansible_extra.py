"""The controller role with the ansible flavor among its daemons: it installs the runtime's ``ansible``
extra at the pins of requirements/ansible.txt, the flavor daemon runs and can check a playbook with
the ansible-playbook of that venv, and a second run changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from infrakit_runtime.rpc.errors import RemoteError
from tests.e2e import role
from tests.e2e.conftest import E2E, Run, wait_until

pytestmark = pytest.mark.timeout(900)
DAEMONS = json.dumps([{"kind": "process"}, {"kind": "vanilla"}, {"kind": "ansible"}, {"kind": "manager"}])


def run_role(e2e: E2E, prefix: Path) -> Run:
    return role.run(e2e, prefix, "-e", f"{{\"controller_plugins\": {DAEMONS}}}")


def test_the_role_installs_the_ansible_extra_when_a_daemon_is_the_ansible_flavor(e2e: E2E, tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    run = run_role(e2e, prefix)
    try:
        assert run.rc == 0, run.stdout[-6000:] + run.stderr[-2000:]
        installed = role.installed(prefix)
        expected = role.pins(e2e.collection / "requirements" / "ansible.txt")
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
        role.teardown(e2e, prefix)
