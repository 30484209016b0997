"""`infrakit up` runs the configured daemons in one process by default (issue 18), and keeps the
supervisor's promises for it: the process comes back when it dies or a daemon in it stops answering,
a stop takes every socket with it, a daemon cannot be stopped alone, and one that cannot start does
not keep the others down. `processes: separate` keeps one process per daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from infrakit_runtime import config
from infrakit_runtime.spi.common import ValidationError
from tests.runtime.test_launcher import PROBE, infrakit, kill_everything, ours, pid_of, roles, serving, wait_until


def write(daemons, text: str) -> Path:
    path = daemons.home / "infrakit.yml"
    path.write_text(text)
    return path


FILES = "plugins:\n  - {kind: file, name: f1}\n  - {kind: file, name: f2}\n  - {kind: file, name: f3}\n"


def start_up(daemons, cfg: Path, *args: str) -> subprocess.Popen:
    log = open(daemons.home / "up.log", "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "infrakit_runtime", "--config", str(cfg), "up", *PROBE, *args],
                                env=daemons.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def shared_pid(daemons, *names: str) -> int | None:
    """The one pid serving every named daemon (their pid files and their handshakes agree), else None."""
    if not serving(daemons, *names):
        return None
    try:
        pids = {pid_of(daemons, n) for n in names}
    except (FileNotFoundError, ValueError):
        return None
    found = roles(daemons)
    if len(pids) != 1 or any(found.get(n) != sorted(pids) for n in names):
        return None
    return pids.pop()


def up_log(daemons) -> str:
    return (daemons.home / "up.log").read_text(errors="replace")


@pytest.fixture
def one(daemons):
    """`infrakit up` in the foreground with three daemons and no `processes` setting: the default."""
    up = start_up(daemons, write(daemons, FILES))
    try:
        wait_until(lambda: shared_pid(daemons, "f1", "f2", "f3"), timeout=60, what="three daemons in one process")
        yield up
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                pass
        kill_everything(daemons)


def back_in_a_new_process(daemons, old: int) -> None:
    wait_until(lambda: shared_pid(daemons, "f1", "f2", "f3") not in (None, old), timeout=60,
               what="every daemon back, in one new process")
    for name in ("f1", "f2", "f3"):
        assert daemons.client(name).call("Instance.DescribeInstances", {})["Descriptions"] == []


def test_by_default_up_serves_every_configured_daemon_from_one_child_process(daemons, one):
    found = roles(daemons)
    assert len(found["supervisor"]) == 1 and found["f1"] == found["f2"] == found["f3"]
    assert len(ours(daemons)) == 2, "the supervisor and one daemon process, nothing else"
    listed = infrakit(daemons, "plugin", "ls").stdout
    assert all(f"{daemons.plugins_dir / n}" in listed for n in ("f1", "f2", "f3")) and "not answering" not in listed


def test_the_shared_process_killed_with_sigkill_comes_back_with_every_daemon(daemons, one):
    old = pid_of(daemons, "f1")
    os.kill(old, signal.SIGKILL)
    back_in_a_new_process(daemons, old)
    assert "all of f1, f2, f3 are down; restarting them" in up_log(daemons)


def test_a_daemon_whose_socket_vanishes_gets_the_shared_process_restarted(daemons, one):
    """The probe handshakes every daemon of the process, not only the first."""
    old = pid_of(daemons, "f3")
    (daemons.plugins_dir / "f3").unlink()
    back_in_a_new_process(daemons, old)
    assert "f3 is hung; killing pid" in up_log(daemons) and "which share its process" in up_log(daemons)


def test_a_hung_shared_process_is_killed_and_restarted(daemons, one):
    old = pid_of(daemons, "f2")
    os.kill(old, signal.SIGSTOP)
    try:
        back_in_a_new_process(daemons, old)
    finally:
        with pytest.raises(ProcessLookupError):
            os.kill(old, signal.SIGKILL)  # already killed by the supervisor, not left stopped


def test_sigterm_stops_the_shared_process_and_removes_every_socket_and_pid_file(daemons, one):
    one.send_signal(signal.SIGTERM)
    assert one.wait(30) == 0
    assert not ours(daemons), "no daemon process left behind"
    left = sorted(p.name for p in daemons.plugins_dir.iterdir() if not p.name.startswith("infrakit-up."))
    assert left == [], left


def test_one_daemon_of_a_shared_process_cannot_be_stopped_alone_but_all_of_them_can(daemons, one):
    pid = pid_of(daemons, "f1")
    refused = infrakit(daemons, "plugin", "stop", "f1", check=False)
    assert refused.returncode == 2 and "f1 shares its process with f2, f3" in refused.stderr, refused.stderr
    assert "infrakit plugin stop f1 f2 f3" in refused.stderr and "Traceback" not in refused.stderr
    assert shared_pid(daemons, "f1", "f2", "f3") == pid, "a refused stop stops nothing"
    out = infrakit(daemons, "plugin", "stop", "f1", "f2", "f3").stdout
    assert out.split("\n")[:3] == ["stopped f1", "stopped f2", "stopped f3"], out
    wait_until(lambda: "stopped on request (infrakit plugin stop); not restarting it" in up_log(daemons),
               what="the supervisor to record the stop")
    assert one.poll() is None, "the supervisor runs on"
    assert not any((daemons.plugins_dir / n).exists() for n in ("f1", "f2", "f3"))
    assert set(roles(daemons)) == {"supervisor"}, "and it did not restart them"


def test_a_daemon_that_cannot_start_does_not_keep_the_others_of_its_process_down(daemons, tmp_path: Path):
    """A bad option for one daemon ends the shared process at start; its daemons then run apart, loudly."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = write(daemons, FILES + f"  - {{kind: file, name: bad, options: {{dir: {blocker}/sub}}}}\n")
    up = start_up(daemons, cfg)
    try:
        wait_until(lambda: serving(daemons, "f1", "f2", "f3") and len({pid_of(daemons, n) for n in ("f1", "f2", "f3")})
                   == 3, timeout=90, what="the good daemons serving, each in a process of its own")
        wait_until(lambda: "bad exited with" in up_log(daemons), timeout=90, what="the bad daemon's restarts")
        text = up_log(daemons)
        assert "cannot start, and the f1, f2, f3 sharing its process stop with it" in text
        assert "before every daemon was serving (never serving: " in text and "bad" in text
        assert not (daemons.plugins_dir / "bad").exists()
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0
        assert not ours(daemons)
    finally:
        if up.poll() is None:
            up.kill()
        kill_everything(daemons)


@pytest.mark.parametrize(("setting", "flag"), [("processes: separate\n", ()), ("", ("--processes", "separate"))])
def test_separate_gives_every_daemon_its_own_process(daemons, setting: str, flag: tuple[str, ...]):
    up = start_up(daemons, write(daemons, setting + FILES), *flag)
    try:
        wait_until(lambda: serving(daemons, "f1", "f2", "f3")
                   and all(len(roles(daemons).get(n, [])) == 1 for n in ("f1", "f2", "f3"))
                   and len({roles(daemons)[n][0] for n in ("f1", "f2", "f3")}) == 3,
                   timeout=60, what="three daemon processes")
        victim = pid_of(daemons, "f2")
        others = {n: pid_of(daemons, n) for n in ("f1", "f3")}
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: serving(daemons, "f2") and roles(daemons).get("f2", [victim]) != [victim], timeout=60,
                   what="f2 alone restarted")
        assert {n: pid_of(daemons, n) for n in ("f1", "f3")} == others, "the others were left alone"
        assert "stopped f2" in infrakit(daemons, "plugin", "stop", "f2").stdout
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(30)
        kill_everything(daemons)


def test_a_daemon_marked_process_own_runs_apart_from_the_shared_process(daemons):
    cfg = write(daemons, FILES.replace("{kind: file, name: f3}", "{kind: file, name: f3, process: own}"))
    up = start_up(daemons, cfg)
    try:
        wait_until(lambda: shared_pid(daemons, "f1", "f2") and serving(daemons, "f3")
                   and roles(daemons).get("f3") not in (None, roles(daemons)["f1"]), timeout=60,
                   what="f1 and f2 together, f3 apart")
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)
        kill_everything(daemons)


def test_the_processes_setting_is_validated_and_groups_the_daemons():
    cfg = config.parse({"plugins": ["file", "vanilla", {"kind": "manager", "process": "own"}]})
    assert cfg.processes == "one"
    assert [[s.name for s in p] for p in cfg.daemon_processes()] == [["file", "vanilla"], ["group"]]
    assert [[s.name for s in p] for p in cfg.daemon_processes("separate")] == [["file"], ["vanilla"], ["group"]]
    alone = config.parse({"processes": "separate", "plugins": ["file", "vanilla"]})
    assert [[s.name for s in p] for p in alone.daemon_processes()] == [["file"], ["vanilla"]]
    with pytest.raises(ValidationError) as e:
        config.parse({"processes": "two", "plugins": [{"kind": "file", "process": "mine"}]})
    assert "processes 'two' is not one of one, separate" in str(e.value)
    assert "plugins[0].process: 'mine' is not own or shared" in str(e.value)
