"""A real OpenSSH server on loopback for the ssh connection's tests: its own host key, a generated
client key, a free port, the current user; started and stopped by the test (Debian's openssh-server)."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    def __init__(self, root: Path, port: int, proc: subprocess.Popen, key: Path) -> None:
        self.root, self.port, self.proc, self.key = root, port, proc, key
        self.user = getpass.getuser()

    def log(self) -> str:
        return (self.root / "sshd.log").read_text(errors="replace")


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)


@contextlib.contextmanager
def running_sshd(root: Path) -> Iterator[Sshd]:
    missing = [name for name, found in ((SSHD, os.access(SSHD, os.X_OK)), ("ssh", shutil.which("ssh")),
                                        ("ssh-keygen", shutil.which("ssh-keygen"))) if not found]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: `make system-deps` (run by `make test`) installs "
                    "Debian's openssh-server, which brings the client")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    _keygen(root / "host_key")
    _keygen(root / "client_key")
    authorized = root / "authorized_keys"
    authorized.write_text((root / "client_key.pub").read_text())
    authorized.chmod(0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation, as the Debian unit provides
    for _ in range(5):  # a free port can be taken between the check and sshd's bind: take another
        port = _free_port()
        config = root / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {root / 'host_key'}",
            f"AuthorizedKeysFile {authorized}", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "PidFile none", "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp", "",
        ]))
        log = open(root / "sshd.log", "ab")
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        else:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            continue
        try:
            yield Sshd(root, port, proc, root / "client_key")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return
    raise RuntimeError(f"sshd did not start; its log: {(root / 'sshd.log').read_text(errors='replace')[-2000:]}")
