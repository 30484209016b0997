"""The group module leaves the spec's grammar to the controller (issue 14, item 2).

A real controller and real ansible-playbook runs of the installed collection: the module sends its
options merged over the stored spec and reports ``changed``, ``spec`` and the diff as the controller
judges them, so a spec committed with the CLI's spelling is no change when the module says the same,
600 s is spelled one way, ``12.5%`` is refused like the controller refuses it, every field is
expressible and kept, a given section is merged (or replaced with ``purge``), and ``state: absent``
with ``wait`` returns once the instances are gone.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, E2E, Run, ours
from tests.e2e.local_controller import LocalController, local_controller

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def controller(e2e: E2E, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalController]:
    with local_controller(tmp_path_factory.mktemp("grammar"), e2e.env) as running:
        yield running


def play(e2e: E2E, controller: LocalController, tmp_path: Path, tasks: list[dict], *args: str) -> dict:
    """Run ``tasks`` (each registering its result as ``r<N>``) and return the registered results."""
    registered = []
    for n, task in enumerate(tasks):
        task.setdefault("register", f"r{n}")
        registered.append(task["register"])
    tasks.append({"name": "Save the results", "ansible.builtin.copy": {
        "dest": str(tmp_path / "results.json"),
        "content": "{{ {" + ", ".join(f"'{r}': {r}" for r in registered) + "} | to_json }}"}})
    document = [{
        "name": "Group module", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "module_defaults": {"group/infrakit.core.infrakit": {"controller_url": controller.url}},
        "vars": {"ansible_python_interpreter": str(BIN / "python")},
        "tasks": tasks,
    }]
    (tmp_path / "play.yml").write_text(json.dumps(document))
    proc = subprocess.run([str(BIN / "ansible-playbook"), "play.yml", *args], cwd=tmp_path, env=e2e.env,
                          capture_output=True, text=True, timeout=400)
    run = Run(proc.returncode, proc.stdout, proc.stderr)
    assert run.rc == 0, run.stdout[-6000:] + run.stderr[-3000:]
    return json.loads((tmp_path / "results.json").read_text())


def stored(controller: LocalController, gid: str) -> dict:
    for spec in controller.call("Group.InspectGroups", {"Name": "group/groups", "ID": ""})["Groups"] or []:
        if spec["ID"] == gid:
            return spec["Properties"]
    raise AssertionError(f"group {gid} is not stored")


def cli_spec(controller: LocalController, gid: str) -> dict:
    """A spec as an InfraKit CLI user writes it: PascalCase, every field, its own spellings."""
    return {"ID": gid, "Properties": {
        "Allocation": {"Size": 0},
        "Instance": {"Plugin": "process", "Properties": {"Command": controller.webapp_command()},
                     "Options": {"Resolve": True}},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Init": ["export MESSAGE=cli"]}},
        "Updating": {"MaxSurge": "25%", "ProgressDeadline": "600s", "SkipBeforeInstanceDestroy": "skip"},
        "Health": {"GracePeriod": "0.5m", "Interval": "15s", "MaxUnhealthy": "40%"},
    }}


def module_args(controller: LocalController, gid: str, **extra) -> dict:
    """The same spec as the module's options, spelled the module's way."""
    args = {"name": gid, "size": 0,
            "instance": {"plugin": "process", "properties": {"Command": controller.webapp_command()},
                         "options": {"Resolve": True}},
            "flavor": {"plugin": "vanilla", "properties": {"Init": ["export MESSAGE=cli"]}},
            "updating": {"max_surge": "25%", "progress_deadline": 600, "skip_before_instance_destroy": "skip"},
            "health": {"grace_period": 30, "interval": "15s"}}
    args.update(extra)
    return args


def test_a_group_committed_with_the_cli_is_no_change_when_the_module_says_the_same(
        e2e: E2E, controller: LocalController, tmp_path: Path) -> None:
    controller.call("Group.CommitGroup", {"Name": "group/groups", "Spec": cli_spec(controller, "cli"), "Pretend": False})
    before = stored(controller, "cli")
    results = play(e2e, controller, tmp_path, [
        {"infrakit.core.group": module_args(controller, "cli")},
        {"infrakit.core.group": {"name": "cli", "size": 0}},
        {"infrakit.core.group": module_args(controller, "cli"), "check_mode": True},
    ], "--diff")
    for name in ("r0", "r1", "r2"):
        assert results[name]["changed"] is False, (name, results[name].get("diff"))
    spec = results["r0"]["spec"]
    assert spec["updating"]["progress_deadline"] == "10m0s"          # 600 and "600s": one spelling
    assert spec["health"]["grace_period"] == "30s" and spec["health"]["interval"] == "15s"
    assert spec["instance"]["options"] == {"Resolve": True}
    assert spec["updating"]["skip_before_instance_destroy"] == "skip"
    assert results["r1"]["spec"] == spec
    assert stored(controller, "cli") == before                          # nothing was recommitted or dropped


def test_a_fractional_percentage_and_a_negative_size_are_refused_by_the_controller_naming_the_field(
        e2e: E2E, controller: LocalController, tmp_path: Path) -> None:
    controller.call("Group.CommitGroup", {"Name": "group/groups", "Spec": cli_spec(controller, "refuse"),
                                          "Pretend": False})
    before = stored(controller, "refuse")
    results = play(e2e, controller, tmp_path, [
        {"infrakit.core.group": {"name": "refuse", "updating": {"max_surge": "12.5%"}}, "ignore_errors": True},
        {"infrakit.core.group": {"name": "refuse", "size": -1}, "ignore_errors": True},
        {"infrakit.core.group": {"name": "refuse", "health": {"grace_period": "soon"}}, "ignore_errors": True,
         "check_mode": True},
    ])
    assert results["r0"]["failed"] is True and results["r0"]["changed"] is False
    assert 'Properties.Updating.MaxSurge: "12.5%" is not an integer or percentage' in results["r0"]["msg"]
    assert "Properties.Allocation.Size must be at least 0, got -1" in results["r1"]["msg"]
    assert 'Properties.Health.GracePeriod: "soon" is not a duration' in results["r2"]["msg"]
    assert stored(controller, "refuse") == before


def test_a_given_section_is_merged_and_purge_replaces_it_whole(
        e2e: E2E, controller: LocalController, tmp_path: Path) -> None:
    controller.call("Group.CommitGroup", {"Name": "group/groups", "Spec": cli_spec(controller, "merge"),
                                          "Pretend": False})
    results = play(e2e, controller, tmp_path, [
        {"infrakit.core.group": {"name": "merge", "health": {"interval": "20s"}}},
        {"infrakit.core.group": {"name": "merge", "health": {"interval": 20}}},
        {"infrakit.core.group": {"name": "merge", "updating": {"max_surge": 2}, "purge": True}, "check_mode": True},
        {"infrakit.core.group": {"name": "merge", "updating": {"max_surge": 2}, "purge": True}},
    ], "--diff")
    assert results["r0"]["changed"] is True
    assert results["r0"]["diff"]["before"]["health"]["interval"] == "15s"
    assert results["r0"]["diff"]["after"]["health"]["interval"] == "20s"
    assert results["r0"]["diff"]["after"]["health"]["grace_period"] == "30s"
    assert results["r1"]["changed"] is False
    props = stored(controller, "merge")
    assert props["Health"] == {"GracePeriod": "0.5m", "Interval": "20s", "MaxUnhealthy": "40%"}
    assert props["Instance"]["Options"] == {"Resolve": True}
    # purge in check mode: the real plan, nothing stored; then for real, Updating is replaced whole.
    assert results["r2"]["changed"] is True and results["r2"]["plan"]
    assert results["r2"]["spec"]["updating"]["progress_deadline"] == "10m0s"
    assert results["r3"]["changed"] is True
    assert stored(controller, "merge")["Updating"] == {"Duration": "0s", "Count": 0, "SkipBeforeInstanceDestroy": None,
                                                       "MaxSurge": 2}


def test_absent_with_wait_returns_once_every_instance_is_gone(
        e2e: E2E, controller: LocalController, tmp_path: Path) -> None:
    gid = "gone"
    marker_arg = f"--marker={controller.marker}-{gid}"
    command = [*controller.webapp_command(), marker_arg]
    results = play(e2e, controller, tmp_path, [
        {"infrakit.core.group": {"name": gid, "size": 2, "wait_timeout": 120,
                                 "instance": {"plugin": "process", "properties": {"Command": command}},
                                 "flavor": {"plugin": "vanilla", "properties": {}}}},
        {"infrakit.core.group": {"name": gid, "state": "absent"}, "check_mode": True},
        {"infrakit.core.group": {"name": gid, "state": "absent", "wait_timeout": 120}},
    ])
    members = sorted(i["id"] for i in results["r0"]["instances"])
    assert len(members) == 2
    assert results["r1"]["changed"] is True and sorted(results["r1"]["destroyed"]) == members
    assert results["r2"]["changed"] is True and sorted(results["r2"]["destroyed"]) == members
    # No polling here: when the module returned, the controller had destroyed the members.
    assert ours(marker_arg) == []
    assert gid not in controller.group_ids()
