"""The ansible flavor's ssh connection against a real sshd on loopback (a free port, a generated key):
the playbook reaches the instance over ssh, configures it, and the key never shows anywhere."""

from __future__ import annotations

import sys

from tests.runtime.ansible_flavor.conftest import SECRET, TAG_CONFIGURED, World, wait_for
from tests.runtime.ansible_flavor.sshd import running_sshd


def test_an_instance_is_configured_over_ssh(world: World):
    with running_sshd(world.root / "sshd") as sshd:
        connection = {"Type": "ssh", "User": sshd.user, "PrivateKeyFile": str(sshd.key), "Port": sshd.port}
        # The "remote" is this machine: name its interpreter rather than trust discovery in a login shell here.
        world.commit(world.spec(size=1, message="over ssh", connection=connection,
                                extra_vars={"ansible_python_interpreter": sys.executable}))
        desc = world.wait_converged(1, message="over ssh", timeout=120)
        member = desc["Instances"][0]
        assert world.runs() == [(member["ID"], "over ssh")]
        # It went through sshd, authenticated by the generated key.
        wait_for(lambda: f"Accepted publickey for {sshd.user}" in sshd.log(), 10, "sshd to log the key login")
        assert next(d for d in world.instances() if d["ID"] == member["ID"])["Tags"][TAG_CONFIGURED]
        private_key = sshd.key.read_text().strip().splitlines()[1]  # a line of the key's body
        seen = world.everything_an_operator_sees()
        assert private_key not in seen and SECRET not in seen
