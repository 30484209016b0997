"""The OS is the source of truth for process instances (issue 12, case 3).

Lost or damaged records are rebuilt from the processes themselves; a dead instance takes
its whole tree with it, setsid children included, even when it died while no daemon ran.
Each test runs twice: with a cgroup per instance, and with the fallback (environment
marker plus the daemon as child subreaper). Processes are found by a marker argument.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from infrakit_runtime.plugins.instance import process_cgroup
from infrakit_runtime.plugins.instance.process import ProcessInstancePlugin
from infrakit_runtime.spi import instance
from tests.runtime.plugins import process_helpers as ph
from tests.runtime.procs import marker_pids


def sleeper(marker: str) -> list[str]:
    return [sys.executable, "-c", ph.SLEEP_PY, marker]


def shell_child(marker: str) -> str:
    """A sh command line starting a sleeper that carries ``marker``."""
    return f"{sys.executable} -c '{ph.SLEEP_PY}' {marker}"


def test_records_moved_away_and_recreated_empty_are_rebuilt_from_the_processes(daemons, start_process_daemon,
                                                                               marker):
    call = start_process_daemon()
    tags = {"infrakit.group": "web", "infrakit.config.hash": "abc"}
    ids = [call.provision({"Command": sleeper(marker)}, tags=tags) for _ in range(4)]
    before = {d["ID"]: d for d in call.describe(tags, properties=True)}
    assert len(marker_pids(marker)) == 4

    # While the daemon runs: the directory is moved away and an empty one put in its place.
    records = ph.state_dir(daemons)
    records.rename(records.with_name("moved-away"))
    records.mkdir()
    found = {d["ID"]: d for d in call.describe(tags, properties=True)}
    assert sorted(found) == sorted(ids), "every running instance is still described"
    assert {i: d["Properties"]["PID"] for i, d in found.items()} == {i: d["Properties"]["PID"] for i, d in before.items()}
    assert all((records / f"{i}.json").exists() for i in ids), "the records are written again"

    # While no daemon runs: the records are lost for good; the restarted daemon finds the processes.
    daemons.kill("process")
    shutil.rmtree(records)
    records.mkdir()
    call = start_process_daemon()
    found = {d["ID"]: d for d in call.describe(tags, properties=True)}
    assert sorted(found) == sorted(ids)
    for iid, d in found.items():
        assert d["Tags"] == tags
        assert d["Properties"]["PID"] == before[iid]["Properties"]["PID"]
        assert d["Properties"]["Port"] == before[iid]["Properties"]["Port"]
    assert "rebuilt" in daemons.log("process")
    assert len(marker_pids(marker)) == 4, "nothing started, nothing left behind"

    for iid in ids:
        call.destroy(iid)
    assert not marker_pids(marker)


def test_a_truncated_record_is_rebuilt_from_its_process_when_the_daemon_restarts(daemons, start_process_daemon,
                                                                                 marker):
    call = start_process_daemon()
    tags = {"infrakit.group": "db", "infrakit.logical_id": "db-1"}
    damaged = call.provision({"Command": sleeper(marker)}, tags=tags, logical_id="db-1")
    intact = call.provision({"Command": sleeper(marker)}, tags={"infrakit.group": "db"})
    pids = call.pids()

    daemons.kill("process")
    record = ph.state_dir(daemons) / f"{damaged}.json"
    record.write_text(record.read_text()[:40])
    ghost = ph.state_dir(daemons) / "process-00000000000000ee.json"  # unreadable, and nothing of it runs
    ghost.write_text("{")
    call = start_process_daemon()
    found = {d["ID"]: d for d in call.describe({"infrakit.group": "db"}, properties=True)}
    assert sorted(found) == sorted([damaged, intact])
    assert found[damaged]["Properties"]["PID"] == pids[damaged]
    assert found[damaged]["Tags"] == tags and found[damaged]["LogicalID"] == "db-1"
    assert json.loads(record.read_text())["PID"] == pids[damaged]
    log = daemons.log("process")
    assert f"{damaged}" in log and "rebuilt" in log
    assert len(marker_pids(marker)) == 2
    assert not ghost.exists() and (ghost.parent / f".{ghost.name}.unreadable").read_text() == "{"

    for iid in found:
        call.destroy(iid)
    assert not marker_pids(marker)


def test_children_of_a_leader_killed_while_no_daemon_ran_are_stopped_when_it_restarts(daemons, start_process_daemon,
                                                                                      marker):
    call = start_process_daemon()
    iid = call.provision({"Command": f"{shell_child(marker)} & {shell_child(marker)} & wait", "Port": False})
    children = ph.eventually(lambda: len(marker_pids(marker)) == 2 and marker_pids(marker))
    [leader] = call.pids().values()

    daemons.kill("process")
    os.kill(leader, signal.SIGKILL)
    ph.eventually(lambda: not ph.running(leader))
    assert marker_pids(marker) == children, "the children outlive their leader while no daemon runs"

    call = start_process_daemon()
    assert call.describe() == []
    ph.eventually(lambda: not marker_pids(marker), timeout=10)
    assert not (ph.state_dir(daemons) / f"{iid}.json").exists()


def test_destroy_takes_down_children_that_called_setsid_or_cleared_their_environment(start_process_daemon, marker):
    call = start_process_daemon()
    setsid_child, bare_child, orphan = f"{marker}-setsid", f"{marker}-bare", f"{marker}-orphan"
    command = (f"setsid {shell_child(setsid_child)} & "  # its own session: not in the leader's process group
               f"setsid env -i {shell_child(bare_child)} & "  # its own session, no environment at all
               f"(setsid env -i {shell_child(orphan)} &) ; "  # the same, and its parent exits at once
               "wait")
    iid = call.provision({"Command": command, "Port": False})
    ph.eventually(lambda: all(marker_pids(m) for m in (setsid_child, bare_child, orphan)))
    [leader] = call.pids().values()
    [orphan_pid] = marker_pids(orphan)
    assert os.getsid(orphan_pid) != leader and os.getsid(next(iter(marker_pids(setsid_child)))) != leader

    call.destroy(iid)
    assert not ph.running(leader)
    for m in (setsid_child, bare_child, orphan):
        assert not marker_pids(m), f"{m} survived Destroy"
    assert call.describe() == []


def test_an_instance_that_exits_takes_its_setsid_children_with_it(start_process_daemon, marker):
    call = start_process_daemon()
    command = f"setsid {shell_child(marker)} & setsid env -i {shell_child(marker)} & sleep 600"
    call.provision({"Command": command, "Port": False})
    ph.eventually(lambda: len(marker_pids(marker)) == 2)
    [leader] = call.pids().values()
    os.kill(leader, signal.SIGKILL)
    ph.eventually(lambda: call.describe() == [])
    ph.eventually(lambda: not marker_pids(marker), timeout=10)


def test_each_instance_has_a_cgroup_of_its_own_that_goes_with_it(start_process_daemon, mode, marker):
    call = start_process_daemon()
    iid = call.provision({"Command": f"setsid {shell_child(marker)} & wait", "Port": False})
    [child] = ph.eventually(lambda: marker_pids(marker))
    [leader] = call.pids().values()
    cgroup = ph.cgroup_dir(leader)
    if mode == "fallback":
        assert cgroup is None or cgroup.name != iid, "no cgroup is made when cgroups are off"
        call.destroy(iid)
        return
    assert cgroup is not None and cgroup.name == iid
    assert ph.cgroup_dir(child) == cgroup, "a setsid child stays in its instance's cgroup"
    assert sorted(int(p) for p in (cgroup / "cgroup.procs").read_text().split()) == sorted([leader, child])
    call.destroy(iid)
    assert not cgroup.exists(), "the cgroup is removed with its instance"


def test_empty_cgroups_of_state_directories_that_are_gone_are_collected_and_busy_ones_kept(tmp_path, reaper, marker):
    if not ph.cgroup_writable():
        pytest.skip("cgroup v2 is not mounted writable here")
    gone, busy = tmp_path / "gone", tmp_path / "busy"
    made = {}
    for state in (gone, busy):
        state.mkdir()
        cgroups, _ = process_cgroup.open_cgroups("auto", state)
        assert cgroups is not None
        cgroups.create("process-00000000000000a1")
        made[state] = cgroups
    held = reaper.spawn([sys.executable, "-c", ph.SLEEP_PY, marker])
    (made[busy].path("process-00000000000000a1") / "cgroup.procs").write_text(str(held.pid))
    reaper.cgroups.add(made[busy].path("process-00000000000000a1"))
    shutil.rmtree(gone)
    shutil.rmtree(busy)

    survivor = tmp_path / "another"
    survivor.mkdir()
    mine, _ = process_cgroup.open_cgroups("auto", survivor)
    assert mine is not None
    assert not made[gone].root.exists(), "empty cgroups of a removed state directory are collected"
    assert made[busy].path("process-00000000000000a1").is_dir(), "a cgroup with a process in it is never touched"
    assert held.poll() is None
    mine.close()


@pytest.mark.parametrize("shared", [True, False], ids=["shared-process", "alone"])
def test_strays_are_stopped_only_when_no_other_daemon_shares_the_process(tmp_path, daemons, reaper, marker, shared):
    """As child subreaper the daemon inherits orphans; with other daemons in its process (``plugin run
    process vanilla``) their children, a vanilla health probe say, look the same and must be left alone."""
    env = {**os.environ, "INFRAKIT_HOME": str(daemons.home)}
    probe_like = subprocess.Popen([sys.executable, "-c", ph.SLEEP_PY, marker], start_new_session=True,
                                  env={"PATH": os.environ["PATH"]})  # this process's child: own session, no marker

    async def scenario() -> None:
        plugin = ProcessInstancePlugin(tmp_path / "state", base_env=env, subreaper=True, companions=lambda: shared,
                                       sweep_interval=0)
        await plugin.start()
        try:
            iid = await plugin.provision(instance.Spec(properties={"Command": ["sleep", "60"], "Port": False}))
            await plugin.reconcile()
            await plugin.destroy(iid, instance.Context())
        finally:
            await plugin.close()

    try:
        asyncio.run(scenario())
        if shared:
            assert probe_like.poll() is None, "another daemon's child was taken for a stray"
        else:  # stopped (and reaped by the plugin, so Popen cannot tell how it ended)
            assert not marker_pids(marker), "alone, a child of the daemon that is no leader is an escaped orphan"
    finally:
        probe_like.kill()
        probe_like.wait()


def test_another_daemons_pid_file_naming_this_process_means_the_process_is_shared(tmp_path):
    from infrakit_runtime.plugins.instance.process import _shares_process

    (tmp_path / "process.pid").write_text(f"{os.getpid()}\n")
    (tmp_path / "elsewhere.pid").write_text("1\n")
    assert not _shares_process(tmp_path, "process")
    (tmp_path / "vanilla.pid").write_text(f"{os.getpid()}\n")
    assert _shares_process(tmp_path, "process")
