"""The launcher supervises real daemon processes: restart on death, restart on hang, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.runtime.conftest import wait_for_socket


def infrakit(daemons, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "infrakit_runtime", *args], env=daemons.env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"infrakit {' '.join(args)} failed: {proc.stderr}")
    return proc


def pid_of(daemons, name: str) -> int:
    return int((daemons.plugins_dir / f"{name}.pid").read_text())


def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def started(daemons):
    """``infrakit plugin start file:f1 file:f2`` in the foreground, as a user would run it."""
    log = open(daemons.home / "start.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "infrakit_runtime", "plugin", "start", "file:f1", "file:f2",
                             "--probe-interval", "0.5", "--probe-timeout", "0.5", "--probe-failures", "2"],
                            env=daemons.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for name in ("f1", "f2"):
            wait_for_socket(daemons.plugins_dir / name, proc=proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_a_daemon_killed_with_sigkill_is_restarted_and_answers_again(daemons, started):
    old = pid_of(daemons, "f1")
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: (daemons.plugins_dir / "f1.pid").exists() and pid_of(daemons, "f1") != old, what="a new f1")
    wait_for_socket(daemons.plugins_dir / "f1")
    assert daemons.client("f1").call("Instance.DescribeInstances", {})["Descriptions"] == []


def test_a_hung_daemon_is_killed_and_restarted(daemons, started):
    old = pid_of(daemons, "f2")
    os.kill(old, signal.SIGSTOP)
    try:
        wait_until(lambda: (daemons.plugins_dir / "f2.pid").exists() and pid_of(daemons, "f2") != old,
                   timeout=30, what="a restarted f2")
    finally:
        try:
            os.kill(old, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_for_socket(daemons.plugins_dir / "f2")


def test_sigterm_stops_every_daemon_and_removes_their_sockets(daemons, started):
    pids = [pid_of(daemons, n) for n in ("f1", "f2")]
    started.send_signal(signal.SIGTERM)
    assert started.wait(20) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (daemons.plugins_dir / "f1").exists() and not (daemons.plugins_dir / "f2").exists()


def test_plugin_ls_lists_names_interfaces_and_sockets(daemons, started):
    out = infrakit(daemons, "plugin", "ls").stdout
    assert "f1" in out and "f2" in out and "Instance/0.6.1" in out and str(daemons.plugins_dir / "f1") in out


def test_a_stale_socket_left_by_a_killed_daemon_does_not_block_a_restart(daemons):
    proc = daemons.start("file")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(5)
    assert (daemons.plugins_dir / "file").exists(), "SIGKILL leaves the socket file behind"
    daemons.start("file")
    assert daemons.client("file").call("Instance.DescribeInstances", {})["Descriptions"] == []


def test_a_socket_held_by_a_live_daemon_is_not_stolen(daemons):
    daemons.start("file")
    second = subprocess.run([sys.executable, "-m", "infrakit_runtime", "plugin", "run", "file"], env=daemons.env,
                            capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert "already serving" in second.stderr
    assert "Traceback" not in second.stderr
    assert daemons.client("file").call("Instance.DescribeInstances", {})["Descriptions"] == []


def test_plugin_stop_terminates_a_daemon_and_its_socket_goes_away(daemons):
    proc = daemons.start("file")
    assert "stopped file" in infrakit(daemons, "plugin", "stop", "file").stdout
    proc.wait(10)
    assert not (daemons.plugins_dir / "file").exists()
    assert infrakit(daemons, "plugin", "stop", "file", check=False).returncode == 1


def test_sockets_are_private_to_the_service_user(daemons):
    daemons.start("file")
    assert (daemons.plugins_dir / "file").stat().st_mode & 0o777 == 0o660


def test_the_cli_provisions_describes_and_destroys_through_a_daemon(daemons, tmp_path: Path):
    daemons.start("file")
    spec = tmp_path / "spec.yml"
    spec.write_text("Properties: {note: hi}\nTags: {tier: web}\n")
    instance_id = infrakit(daemons, "instance", "--plugin", "file", "provision", str(spec)).stdout.strip()
    assert instance_id.startswith("instance-")
    listed = infrakit(daemons, "instance", "--plugin", "file", "-o", "json", "describe", "--tags", "tier=web").stdout
    assert instance_id in listed
    infrakit(daemons, "instance", "--plugin", "file", "destroy", instance_id)
    assert instance_id not in infrakit(daemons, "instance", "--plugin", "file", "describe").stdout


def test_cli_errors_are_one_readable_line_not_a_traceback(daemons, tmp_path: Path):
    result = infrakit(daemons, "instance", "--plugin", "nosuch", "describe", check=False)
    assert result.returncode != 0 and "no plugin named nosuch" in result.stderr and "Traceback" not in result.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("plugins: [{kind: nope}]\nfoo: 1\n")
    result = infrakit(daemons, "--config", str(bad), "plugin", "ls", check=False)
    assert result.returncode == 2 and "unknown key 'foo'" in result.stderr and "'nope' is not one of" in result.stderr


def test_a_supervised_daemon_stopped_by_name_stays_stopped(daemons, started):
    assert "stopped f1" in infrakit(daemons, "plugin", "stop", "f1").stdout
    time.sleep(2)  # several restart delays: a supervisor that restarted it would have by now
    assert not (daemons.plugins_dir / "f1").exists()
    assert started.poll() is None, "the supervisor keeps running the other daemons"
    assert daemons.client("f2").call("Instance.DescribeInstances", {})["Descriptions"] == []


def test_plugin_stop_all_stops_the_supervisor_and_its_daemons(daemons, started):
    out = infrakit(daemons, "plugin", "stop", "--all").stdout
    assert "stopped f1" in out and "stopped f2" in out
    assert started.wait(20) == 0
    assert not (daemons.plugins_dir / "f1").exists() and not (daemons.plugins_dir / "f2").exists()
