"""The launcher supervises real daemon processes: restart on death, restart on hang, clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infrakit_runtime.keeper import next_delay
from infrakit_runtime.launcher import Backoff
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


# --- supervisor mode: one `infrakit up` per directory, kept alive by its keeper (issue 12, item 10) ----------


def write_config(daemons, *names: str) -> Path:
    config = daemons.home / "infrakit.yml"
    config.write_text("plugins:\n" + "".join(f"  - {{kind: file, name: {n}}}\n" for n in names))
    return config


PROBE = ("--probe-interval", "0.5", "--probe-timeout", "2", "--probe-failures", "4")


def ours(daemons) -> dict[int, list[str]]:
    """Every live process of this test's plugin directory (keeper, supervisor, daemons), by pid."""
    needle = f"INFRAKIT_PLUGINS_DIR={daemons.plugins_dir}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            argv = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if argv and state != "Z":
            found[int(entry.name)] = argv
    return found


def roles(daemons) -> dict[str, list[int]]:
    """Live processes by role: keeper, supervisor, and each daemon name (daemons sharing a process share its pid)."""
    out: dict[str, list[int]] = {}
    for pid, argv in ours(daemons).items():
        if "up" in argv:
            found = ["keeper" if "--detach" in argv or "--keeper" in argv else "supervisor"]
        elif "run" in argv:
            found = [a.partition(":")[2] for a in argv[argv.index("run") + 1:] if ":" in a and not a.startswith("-")]
        else:
            continue
        for role in found:
            out.setdefault(role, []).append(pid)
    return {k: sorted(v) for k, v in out.items()}


def one_each(daemons, *names: str, keeper: bool = True) -> bool:
    expected = {"supervisor": 1, **{n: 1 for n in names}, **({"keeper": 1} if keeper else {})}
    return {k: len(v) for k, v in roles(daemons).items()} == expected


def serving(daemons, *names: str) -> bool:
    for name in names:
        try:
            wait_for_socket(daemons.plugins_dir / name, timeout=0.5)
        except TimeoutError:
            return False
    return True


def kill_everything(daemons) -> None:
    for _ in range(3):
        for pid in ours(daemons):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not ours(daemons), timeout=20, what="everything to stop")
            return
    for pid in ours(daemons):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def kept(daemons):
    """``infrakit up --detach`` as the controller role runs it where systemd is absent: a keeper, a supervisor."""
    config = write_config(daemons, "f1", "f2")
    try:
        infrakit(daemons, "--config", str(config), "up", "--detach", *PROBE)
        wait_until(lambda: serving(daemons, "f1", "f2") and one_each(daemons, "f1", "f2"), timeout=60,
                   what="the kept supervisor and its daemons")
        yield config
    finally:
        kill_everything(daemons)


def test_a_supervisor_killed_with_sigkill_is_restarted_by_its_keeper_and_its_daemons_come_back(daemons, kept):
    before = roles(daemons)
    supervisor = pid_of(daemons, "infrakit-up")
    assert [supervisor] == before["supervisor"]
    os.kill(supervisor, signal.SIGKILL)
    wait_until(lambda: roles(daemons).get("supervisor", [supervisor]) != [supervisor] and serving(daemons, "f1", "f2")
               and one_each(daemons, "f1", "f2"), timeout=60, what="a new supervisor and its daemons")
    after = roles(daemons)
    assert after["keeper"] == before["keeper"], "the same keeper"
    assert pid_of(daemons, "infrakit-up") == after["supervisor"][0], "the pid file names the new supervisor"
    for name in ("f1", "f2"):
        assert after[name] != before[name] and pid_of(daemons, name) == after[name][0]
        assert daemons.client(name).call("Instance.DescribeInstances", {})["Descriptions"] == []
    # Killed again, at once: still restarted (it never gives up), never two of anything.
    os.kill(after["supervisor"][0], signal.SIGKILL)
    wait_until(lambda: roles(daemons).get("supervisor", after["supervisor"]) != after["supervisor"]
               and serving(daemons, "f1", "f2") and one_each(daemons, "f1", "f2"), timeout=60,
               what="a third supervisor")
    assert "was killed by signal 9; restarting it" in (daemons.home / "infrakit-up.log").read_text()


def test_a_supervisor_stopped_on_purpose_takes_its_keeper_and_daemons_with_it(daemons, kept):
    """SIGTERM to the supervisor (what the role and `kill` do) is a stop, not a crash."""
    os.kill(pid_of(daemons, "infrakit-up"), signal.SIGTERM)
    wait_until(lambda: not ours(daemons), timeout=30, what="keeper, supervisor and daemons to stop")
    assert not (daemons.plugins_dir / "f1").exists() and not (daemons.plugins_dir / "infrakit-keeper.pid").exists()


def test_a_restart_as_the_role_does_it_leaves_exactly_one_kept_supervisor(daemons, kept):
    """Stop (SIGTERM, wait for the supervisor to exit), then start at once: the old keeper may still be ending."""
    old = roles(daemons)
    os.kill(old["supervisor"][0], signal.SIGTERM)
    wait_until(lambda: not Path(f"/proc/{old['supervisor'][0]}").exists(), timeout=30, what="the supervisor to exit")
    infrakit(daemons, "--config", str(kept), "up", "--detach", *PROBE)
    wait_until(lambda: serving(daemons, "f1", "f2") and one_each(daemons, "f1", "f2")
               and roles(daemons)["supervisor"] != old["supervisor"], timeout=60, what="one new kept supervisor")


def test_plugin_stop_all_stops_a_kept_supervisor_for_good(daemons, kept):
    out = infrakit(daemons, "plugin", "stop", "--all").stdout
    assert "stopped f1" in out and "stopped f2" in out
    wait_until(lambda: not ours(daemons), timeout=30, what="keeper, supervisor and daemons to stop")


def test_sigterm_to_the_keeper_stops_the_supervisor_and_every_daemon(daemons, kept):
    keeper = roles(daemons)["keeper"][0]
    assert pid_of(daemons, "infrakit-keeper") == keeper
    os.kill(keeper, signal.SIGTERM)
    wait_until(lambda: not ours(daemons), timeout=30, what="keeper, supervisor and daemons to stop")
    assert not (daemons.plugins_dir / "f1").exists()


def test_a_second_keeper_or_supervisor_for_the_same_directory_leaves_the_first_in_charge(daemons, kept):
    before = roles(daemons)
    again = infrakit(daemons, "--config", str(kept), "up", "--detach", *PROBE)
    assert again.returncode == 0
    second = infrakit(daemons, "--config", str(kept), "up", *PROBE, check=False)
    assert second.returncode == 2 and "another infrakit up supervisor" in second.stderr, second.stderr
    assert f"pid {before['supervisor'][0]}" in second.stderr and "Traceback" not in second.stderr
    wait_until(lambda: "another infrakit up keeper" in (daemons.home / "infrakit-up.log").read_text(), timeout=30,
               what="the second keeper to step aside")
    assert roles(daemons) == before


def test_a_new_keeper_adopts_a_running_supervisor_and_restarts_it_when_it_dies(daemons, kept):
    """The keeper itself was killed: the supervisor runs on; a new keeper keeps it without starting a second one."""
    before = roles(daemons)
    os.kill(before["keeper"][0], signal.SIGKILL)
    wait_until(lambda: "keeper" not in roles(daemons), timeout=30, what="the keeper to die")
    assert serving(daemons, "f1", "f2") and roles(daemons)["supervisor"] == before["supervisor"]
    infrakit(daemons, "--config", str(kept), "up", "--detach", *PROBE)
    wait_until(lambda: "keeping it" in (daemons.home / "infrakit-up.log").read_text(), timeout=30,
               what="the new keeper to adopt the supervisor")
    assert {k: v for k, v in roles(daemons).items() if k != "keeper"} == {k: v for k, v in before.items() if k != "keeper"}
    os.kill(before["supervisor"][0], signal.SIGKILL)
    wait_until(lambda: roles(daemons).get("supervisor", before["supervisor"]) != before["supervisor"]
               and serving(daemons, "f1", "f2") and one_each(daemons, "f1", "f2"), timeout=60,
               what="the adopted supervisor to be replaced")


def test_sigterm_to_a_keeper_that_adopted_a_supervisor_stops_that_supervisor_too(daemons, kept):
    before = roles(daemons)
    os.kill(before["keeper"][0], signal.SIGKILL)
    wait_until(lambda: "keeper" not in roles(daemons), timeout=30, what="the keeper to die")
    infrakit(daemons, "--config", str(kept), "up", "--detach", *PROBE)
    wait_until(lambda: "keeping it" in (daemons.home / "infrakit-up.log").read_text(), timeout=30,
               what="the new keeper to adopt the supervisor")
    os.kill(pid_of(daemons, "infrakit-keeper"), signal.SIGTERM)
    wait_until(lambda: not ours(daemons), timeout=30, what="keeper, adopted supervisor and daemons to stop")


def test_a_stale_pid_file_is_replaced_and_the_program_it_names_is_never_signalled(daemons):
    """A killed supervisor's pid files may name a pid the system gave to another program since."""
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        (daemons.plugins_dir / "infrakit-up.pid").write_text(f"{bystander.pid}\n")
        (daemons.plugins_dir / f"infrakit-supervisor.{bystander.pid}.pid").write_text(f"{bystander.pid}\n")
        (daemons.plugins_dir / "f1.pid").write_text(f"{bystander.pid}\n")
        config = write_config(daemons, "f1")
        log = open(daemons.home / "up.log", "wb")
        up = subprocess.Popen([sys.executable, "-m", "infrakit_runtime", "--config", str(config), "up", *PROBE],
                              env=daemons.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: serving(daemons, "f1") and one_each(daemons, "f1", keeper=False), timeout=60,
                       what="the supervisor and f1")
            assert pid_of(daemons, "infrakit-up") == up.pid
            assert not (daemons.plugins_dir / f"infrakit-supervisor.{bystander.pid}.pid").exists()
            infrakit(daemons, "plugin", "stop", "--all")
            assert up.wait(30) == 0
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
            log.close()
        (daemons.plugins_dir / "f1.pid").write_text(f"{bystander.pid}\n")
        assert infrakit(daemons, "plugin", "stop", "f1", check=False).returncode == 1
        assert bystander.poll() is None, "a pid from a stale pid file was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_a_daemon_left_hung_by_a_killed_supervisor_is_stopped_before_its_successor_starts(daemons):
    """No daemon twice: the new supervisor stops what the dead one left, even a process that ignores SIGTERM."""
    config = write_config(daemons, "f1")
    argv = [sys.executable, "-m", "infrakit_runtime", "--config", str(config), "up", *PROBE]
    first = subprocess.Popen(argv, env=daemons.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    second = None
    try:
        wait_until(lambda: serving(daemons, "f1"), timeout=60, what="f1")
        hung = pid_of(daemons, "f1")
        os.kill(hung, signal.SIGSTOP)  # the kernel's SIGTERM on the supervisor's death stays pending
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert roles(daemons) == {"f1": [hung]}
        log = open(daemons.home / "up2.log", "wb")
        second = subprocess.Popen(argv, env=daemons.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(lambda: serving(daemons, "f1") and one_each(daemons, "f1", keeper=False)
                   and roles(daemons)["f1"] != [hung], timeout=60, what="a new f1 in place of the hung one")
        assert "left running by a supervisor that died" in (daemons.home / "up2.log").read_text()
    finally:
        if second is not None and second.poll() is None:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        kill_everything(daemons)


@given(requested=st.booleans(), lived=st.floats(0, 1e6), failures=st.integers(0, 10_000))
def test_the_keeper_never_gives_up_and_waits_at_most_the_cap(requested: bool, lived: float, failures: int) -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, stable=60.0)
    count, delay = next_delay(requested=requested, lived=lived, failures=failures, backoff=backoff)
    if requested:
        assert delay is None
    else:
        assert delay is not None and 0 < delay <= 30.0 * 1.2
        assert count == (1 if lived >= 60.0 else failures + 1)



# A keeper in its own process whose clock delivers SIGTERM to it at the instant it is about to start the
# supervisor: after the last check for a stop, before the child exists - the window the keeper's signal
# handler cannot forward the signal through. The "supervisor" is a program that records its pid and sleeps.
STOP_WHILE_STARTING = """
import os, signal, sys, time
from pathlib import Path
from infrakit_runtime.keeper import Keeper
calls = []
def clock():
    calls.append(1)
    if len(calls) == 1:
        os.kill(os.getpid(), signal.SIGTERM)
    return time.monotonic()
child = [sys.executable, "-c", "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)",
         sys.argv[2]]
keeper = Keeper(child, plugins_dir=Path(sys.argv[1]), clock=clock)
code = keeper.run()
print("starts", keeper.starts)
sys.exit(code)
"""


def cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_stop_that_arrives_while_the_keeper_starts_the_supervisor_still_stops_it(tmp_path: Path) -> None:
    plugins, child_pid = tmp_path / "plugins", tmp_path / "child.pid"
    plugins.mkdir()
    keeper = subprocess.Popen([sys.executable, "-c", STOP_WHILE_STARTING, str(plugins), str(child_pid)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            out, _ = keeper.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("the keeper never stopped: it waited for a supervisor it never told to stop") from None
        assert keeper.returncode == 0 and b"starts 1" in out, out
        # The supervisor was started (the stop came too late to prevent that) and was stopped with its keeper.
        assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(child_pid).encode() in cmdline(p)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(keeper.pid, signal.SIGKILL)
