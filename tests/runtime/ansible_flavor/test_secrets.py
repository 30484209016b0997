"""Secrets through the real controller: a playbook reads a vaulted variable (VaultPasswordFile) and
uses it in a ``no_log`` task, first failing, then succeeding. Neither the vault password, nor the
vaulted value, nor a secret-named ExtraVar appears in a log, an event, ``describe`` or a metric."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from tests.runtime.ansible_flavor.conftest import PLAYBOOKS, SECRET, World, wait_for

VAULT_PASSWORD = "vpw-6b1f0c93-never-shown"
DB_PASSWORD = "dbpw-e47a2d15-never-shown"
TASK = "Log in with the vaulted password quietly"


def vaulted(root: Path) -> tuple[Path, Path]:
    """A vault password file and a vars file encrypted with it by ansible-vault."""
    root.mkdir(mode=0o700)
    password = root / "vault-password"
    password.write_text(VAULT_PASSWORD + "\n")
    password.chmod(0o600)
    variables = root / "secrets.yml"
    variables.write_text(f"db_password: {DB_PASSWORD}\n")
    subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt", "--vault-password-file",
                    str(password), str(variables)], check=True, capture_output=True, timeout=60)
    assert DB_PASSWORD not in variables.read_text()
    return password, variables


def test_vault_password_vaulted_values_and_no_log_output_never_show(world: World):
    password, variables = vaulted(world.root / "vault")
    spec = world.spec(size=1, message="v1", grace="4s", unhealthy_threshold=2,
                      extra_vars={"vaulted_vars": str(variables)})
    ansible = spec["Properties"]["Flavor"]["Properties"]
    ansible["Playbook"] = str(PLAYBOOKS / "vaulted.yml")
    ansible["VaultPasswordFile"] = str(password)

    # While the quiet task fails, the member says which task failed, and that its output is hidden.
    world.fail_flag.touch()
    world.commit(spec)
    failing = wait_for(lambda: [r for r in world.rows().values() if TASK in r.get("Reason", "")], 120,
                       "the member to say that the quiet task failed")
    assert "the output is hidden: the task has no_log: true" in failing[0]["Reason"], failing

    # Then it succeeds: the vault was opened (the instance serves a digest of the vaulted value).
    world.fail_flag.unlink()
    desc = world.wait_converged(1, timeout=180)
    digest = hashlib.sha1(DB_PASSWORD.encode()).hexdigest()
    assert world.served(desc["Instances"][0]) == f"v1 {digest}"

    seen = world.everything_an_operator_sees()
    assert TASK in seen  # the failure is there, named...
    for secret in (VAULT_PASSWORD, DB_PASSWORD, SECRET):  # ...and no secret is
        assert secret not in seen, secret
