"""What the role renders for systemd hosts, checked with systemd's own verifier, and the config
files it writes, checked with the runtime's own parser. Nothing is started (systemd is not PID 1
here, and must never be booted in a namespace on this machine)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infrakit_runtime import config
from infrakit_runtime.backends import open_backend
from infrakit_runtime.manager import daemon as manager_daemon
from tests.e2e.conftest import BIN, E2E

pytestmark = pytest.mark.timeout(180)
HERE = Path(__file__).parent


def render(e2e: E2E, out: Path, *extra: str) -> None:
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(HERE / "playbooks" / "render.yml"),
                           "-e", f"render_dir={out}", "-e", f"render_exec_start={BIN / 'infrakit'}",
                           "-e", f"ansible_python_interpreter={BIN / 'python'}", *extra],
                          env=e2e.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def verify(units: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_units_pass_systemd_analyze_verify_with_no_warning(e2e: E2E, tmp_path: Path) -> None:
    render(e2e, tmp_path)
    units = sorted((tmp_path / "units").iterdir())
    assert [u.name for u in units] == ["infrakit-controller.target", "infrakit-group.service",
                                       "infrakit-process.service", "infrakit-vanilla.service"]
    result = verify(units)
    print(result.stderr)
    assert result.returncode == 0
    assert result.stderr == ""

    # The check can fail: one unknown key and a missing program are reported.
    broken = tmp_path / "broken" / "infrakit-group.service"
    broken.parent.mkdir()
    text = (tmp_path / "units" / "infrakit-group.service").read_text()
    broken.write_text(text.replace(f"ExecStart={BIN / 'infrakit'}", "ExecStart=/nonexistent/infrakit")
                      .replace("[Service]\n", "[Service]\nWatchDogSec=5\n"))
    bad = verify([broken])
    assert "Unknown key" in bad.stderr and "/nonexistent/infrakit" in bad.stderr


def test_units_supervise_each_daemon_with_a_watchdog_and_a_sandbox(e2e: E2E, tmp_path: Path) -> None:
    render(e2e, tmp_path)
    root = tmp_path / "root"
    for name, kind in (("group", "manager"), ("process", "process"), ("vanilla", "vanilla")):
        text = (tmp_path / "units" / f"infrakit-{name}.service").read_text()
        lines = set(text.splitlines())
        assert f"ExecStart={BIN / 'infrakit'} --config {root}/etc/infrakit/infrakit.yml plugin run {kind}:{name}" in lines
        for setting in ("Type=notify", "NotifyAccess=main", "Restart=always", "RestartSec=2s", "WatchdogSec=30s",
                        "User=infrakit", "Group=infrakit", "NoNewPrivileges=yes", "ProtectSystem=strict",
                        "PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet=",
                        f"ReadWritePaths={root}/var/lib/infrakit {root}/var/log/infrakit"):
            assert setting in lines, (name, setting)
        # Process instances outlive a restart of their plugin daemon; other daemons leave nothing behind.
        assert ("KillMode=process" in lines) == (kind == "process")
    assert "After=infrakit-process.service infrakit-vanilla.service" in (tmp_path / "units" / "infrakit-group.service").read_text()


def test_home_directories_are_only_made_read_only_when_the_install_lives_there(e2e: E2E, tmp_path: Path) -> None:
    render(e2e, tmp_path, "-e", "controller_home=/home/ops/infrakit")
    assert "ProtectHome=read-only" in (tmp_path / "units" / "infrakit-group.service").read_text().splitlines()


def test_the_default_config_is_what_the_runtime_accepts(e2e: E2E, tmp_path: Path) -> None:
    render(e2e, tmp_path)
    cfg = config.parse(yaml.safe_load((tmp_path / "infrakit.yml").read_text()))
    assert [(p.kind, p.name) for p in cfg.plugins] == [("process", "process"), ("vanilla", "vanilla"), ("manager", "group")]
    assert cfg.poll_interval == 5.0
    assert cfg.daemon_processes() == [cfg.plugins], "`infrakit up` serves the three daemons from one process"
    manager = cfg.daemon("group")
    assert manager.options["backend"] == {"type": "file", "dir": f"{tmp_path}/root/var/lib/infrakit/store"}


def test_a_daemon_marked_process_own_keeps_that_in_the_config(e2e: E2E, tmp_path: Path) -> None:
    render(e2e, tmp_path, "-e", '{"controller_processes": "one", "controller_plugins": '
           '[{"kind": "process", "process": "own"}, {"kind": "vanilla"}, {"kind": "manager"}]}')
    cfg = config.parse(yaml.safe_load((tmp_path / "infrakit.yml").read_text()))
    assert [[p.name for p in proc] for proc in cfg.daemon_processes()] == [["vanilla", "group"], ["process"]]


def test_a_listener_without_a_token_is_refused_before_anything_is_written(e2e: E2E, tmp_path: Path) -> None:
    """Loopback included: the manager would refuse to start, so the role says so first."""
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(HERE / "playbooks" / "render.yml"),
                           "-e", f"render_dir={tmp_path}", "-e", f"render_exec_start={BIN / 'infrakit'}",
                           "-e", f"ansible_python_interpreter={BIN / 'python'}", "-e", "controller_listen=127.0.0.1:24864"],
                          env=e2e.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "controller_listen (127.0.0.1:24864) needs a bearer token, loopback included" in proc.stdout, proc.stdout[-3000:]
    assert not (tmp_path / "infrakit.yml").exists() and not (tmp_path / "units").exists()


def test_an_etcd_config_with_a_listener_and_token_is_what_the_manager_accepts(e2e: E2E, tmp_path: Path) -> None:
    token = tmp_path / "root" / "etc" / "infrakit" / "token"
    render(e2e, tmp_path, "-e", '{"controller_backend": "etcd", "controller_etcd_endpoints": ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]}',
           "-e", "controller_listen=127.0.0.1:24864", "-e", "controller_token=s3cret", "-e", "controller_poll_interval=2s",
           "-e", "controller_log_level=debug")
    raw = (tmp_path / "infrakit.yml").read_text()
    assert "s3cret" not in raw
    cfg = config.parse(yaml.safe_load(raw))
    assert cfg.log_level == "debug" and cfg.poll_interval == 2.0
    options = cfg.daemon("group").options
    assert options["backend"]["type"] == "etcd"
    assert options["token_file"] == str(token)
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text("s3cret\n")
    token.chmod(0o640)  # as the role writes it: a token file other users can read is refused
    parsed = manager_daemon.parse_options(options, home=tmp_path, open_backend=open_backend)
    assert parsed["tcp"] == ("127.0.0.1", 24864)
    assert parsed["token"] == "s3cret"
    assert parsed["poll_interval"] == 2.0
