"""Every shipped playbook in --check changes nothing, says what it WOULD do, and reports changed=0
when nothing would change (issue 13, item 8).

A demo controller of its own (demo.yml's controller and group plays, under a prefix of this module)
is the world; before and after each --check run the test takes a snapshot of it: the stored specs,
each group's instances and config hashes, the processes of the prefix, and every file under it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.discovery import Address
from tests.e2e.conftest import BIN, E2E, Run, ours, wait_until

pytestmark = pytest.mark.timeout(900)


class Demo:
    def __init__(self, e2e: E2E, prefix: Path) -> None:
        self.e2e = e2e
        self.prefix = prefix
        self.plugins_dir = prefix / "root" / "var" / "lib" / "infrakit" / "plugins"
        self.python = prefix / "root" / "opt" / "infrakit" / "venv" / "bin" / "python"

    def playbook(self, name: str, *args: str) -> Run:
        return self.e2e.playbook(name, "-e", f"demo_prefix={self.prefix}", *args)

    def call(self, method: str, params: dict) -> dict:
        client = SyncClient(Address(unix_path=self.plugins_dir / "group"), name="group", timeout=10)
        try:
            return client.call(method, params)
        finally:
            client.close()

    def world(self) -> dict:
        """Everything a --check run must leave as it was."""
        specs = self.call("Group.InspectGroups", {"Name": "group/groups", "ID": ""})["Groups"] or []
        groups = {}
        for spec in specs:
            described = self.call("Group.DescribeGroup", {"Name": f"group/{spec['ID']}", "ID": spec["ID"]})
            groups[spec["ID"]] = sorted((i["ID"], i["Tags"].get("infrakit.config.hash"))
                                        for i in described["Description"]["Instances"])
        files = {}
        for path in self.prefix.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.suffix not in (".log", ".pyc"):
                files[str(path.relative_to(self.prefix))] = path.stat().st_mtime_ns
        return {"specs": json.dumps(specs, sort_keys=True), "groups": groups, "pids": sorted(ours(str(self.prefix))),
                "files": files}


def recap(run: Run) -> dict[str, int]:
    assert run.rc == 0, run.stdout[-6000:] + run.stderr[-3000:]
    return run.recap()


def changed_tasks(run: Run) -> list[str]:
    """The tasks that reported a change, with what they said (for failure messages)."""
    out, task = [], None
    for line in run.stdout.splitlines():
        if line.startswith("TASK ["):
            task = line
        elif line.startswith("changed:"):
            out.append(f"{task}\n  {line}")
    return out


API = {"name": "api", "size": 2, "wait_timeout": 120,
       "flavor": {"plugin": "vanilla", "properties": {"Init": ["export MESSAGE=api-v1"]}}}


def cluster_vars(demo: Demo, tmp_path: Path, **overrides) -> str:
    group = dict(API, instance={"plugin": "process", "properties": {
        "Command": [str(demo.python), "-m", "infrakit_runtime.examples.webapp"]}}, **overrides)
    path = tmp_path / f"cluster-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps({"infrakit_groups": [group],
                                "infrakit_controller_url": str(demo.plugins_dir / "group")}))
    return f"@{path}"


@pytest.fixture(scope="module")
def demo(e2e: E2E) -> Iterator[Demo]:
    demo = Demo(e2e, e2e.root / "check-mode")
    try:
        yield demo
    finally:
        if demo.python.exists():
            e2e.playbook("teardown.yml", "-e", f"controller_prefix={demo.prefix / 'root'}",
                         "-e", "controller_user_create=false", "-e", "teardown_groups=destroy",
                         "-e", f"ansible_python_interpreter={BIN / 'python'}")
        wait_until(lambda: not ours(str(demo.prefix)), 30, "every process of the check-mode demo gone")


def test_demo_in_check_mode_on_a_fresh_machine_installs_nothing_and_says_what_it_would_do(demo: Demo) -> None:
    run = demo.playbook("demo.yml", "--check")
    recap(run)
    # Nothing installed. (The role builds the runtime's wheel on the Ansible controller even in check mode,
    # into demo_prefix/pack, to know whether the copy would change; that is the controller's cache, not the host.)
    assert [p for p in (demo.prefix / "root").rglob("*") if p.is_file()] == []
    assert not ours(str(demo.prefix))
    assert "Check mode, nothing changed: once the controller is installed, this play would declare the group web" \
        in run.stdout
    assert "Check mode, nothing changed. The show would:" in run.stdout
    assert "the controller would plan it once installed" in run.stdout


def test_demo_in_check_mode_on_an_installed_demo_reports_no_change_and_describes_the_show(demo: Demo) -> None:
    installed = demo.playbook("demo.yml", "--tags", "controller,group")
    assert recap(installed)["failed"] == 0
    wait_until(lambda: len(demo.world()["groups"]["web"]) == 3, 60, "web with 3 instances")
    before = demo.world()

    again = demo.playbook("demo.yml", "--check", "--tags", "controller,group")
    assert recap(again)["changed"] == 0, "\n".join(changed_tasks(again))
    assert "Check mode: the group is already as declared" in again.stdout
    assert demo.world() == before

    full = demo.playbook("demo.yml", "--check")
    # Only the two tasks that plan the show's rollout and scale would change something.
    assert recap(full)["changed"] == 2, "\n".join(changed_tasks(full))
    assert re.search(r"- roll out v2, .*: Performing a rolling update on 3 instances", full.stdout), full.stdout[-4000:]
    assert re.search(r"- scale to 5: .*Adding 2 instances", full.stdout), full.stdout[-4000:]
    assert "Killed" not in full.stdout and "replaced it" not in full.stdout
    assert demo.world() == before


def test_cluster_in_check_mode_says_would_and_changes_nothing(demo: Demo, tmp_path: Path) -> None:
    declared = demo.playbook("cluster.yml", "-e", cluster_vars(demo, tmp_path))
    assert recap(declared)["changed"] == 1
    before = demo.world()

    same = demo.playbook("cluster.yml", "--check", "-e", cluster_vars(demo, tmp_path))
    assert recap(same)["changed"] == 0
    assert "api: unchanged" in same.stdout

    bigger = demo.playbook("cluster.yml", "--check", "-e", cluster_vars(demo, tmp_path, size=4))
    assert recap(bigger)["changed"] == 1
    assert "api: would be changed (check mode: nothing changed); plan: Adding 2 instances" in bigger.stdout
    gone = demo.playbook("cluster.yml", "--check", "-e", cluster_vars(demo, tmp_path, state="absent"))
    assert recap(gone)["changed"] == 1
    assert "api: would be destroyed (check mode: nothing changed)" in gone.stdout
    assert demo.world() == before


def test_rolling_update_in_check_mode_says_would_roll_out_and_changes_nothing(demo: Demo, tmp_path: Path) -> None:
    before = demo.world()
    url = f"infrakit_controller_url={demo.plugins_dir / 'group'}"
    same = demo.playbook("rolling_update.yml", "--check", "-e", "rolling_update_group=api", "-e", url,
                         "-e", json.dumps({"rolling_update_flavor": API["flavor"]}))
    assert recap(same)["changed"] == 0
    assert "api: already up to date" in same.stdout

    v2 = {"plugin": "vanilla", "properties": {"Init": ["export MESSAGE=api-v2"]}}
    rolled = demo.playbook("rolling_update.yml", "--check", "-e", "rolling_update_group=api", "-e", url,
                           "-e", json.dumps({"rolling_update_flavor": v2}))
    assert recap(rolled)["changed"] == 1
    assert "api: would roll out (check mode: nothing changed)" in rolled.stdout
    assert "plan: Performing a rolling update on 2 instances" in rolled.stdout
    assert "rolled out" not in rolled.stdout and "after:" not in rolled.stdout
    assert demo.world() == before


def test_deploy_in_check_mode_on_the_same_install_reports_no_change(demo: Demo) -> None:
    before = demo.world()
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    group = __import__("grp").getgrgid(os.getgid()).gr_name
    # What demo.yml gives the role, as extra vars (its build directory too: the default one is shared by
    # every run on this machine, so another run's wheel would look like a change).
    run = demo.playbook("deploy.yml", "--check", "-e", "deploy_hosts=localhost", "-e", "deploy_become=false",
                        "-e", f"controller_prefix={demo.prefix / 'root'}", "-e", "controller_user_create=false",
                        "-e", f"controller_user={user}", "-e", f"controller_group={group}",
                        "-e", f"controller_build_dir={demo.prefix / 'pack'}", "-e", "controller_poll_interval=1s",
                        "-e", "controller_supervisor_probe_interval=1", "-e", "controller_supervisor_probe_timeout=2",
                        "-e", "controller_supervisor_probe_failures=3", "-e", "ansible_connection=local",
                        "-e", f"ansible_python_interpreter={BIN / 'python'}")
    assert recap(run)["changed"] == 0, "\n".join(changed_tasks(run))
    assert demo.world() == before


def test_teardown_in_check_mode_changes_nothing_and_says_what_it_would_do(demo: Demo) -> None:
    before = demo.world()
    run = demo.e2e.playbook("teardown.yml", "--check", "-e", f"controller_prefix={demo.prefix / 'root'}",
                            "-e", "controller_user_create=false", "-e", "teardown_groups=destroy",
                            "-e", "teardown_remove_install=true", "-e", f"ansible_python_interpreter={BIN / 'python'}")
    recap(run)
    assert ("Check mode, nothing changed. A real run would destroy the groups api, web, stop the daemons and remove "
            "their sockets and remove the installation.") in run.stdout, run.stdout[-6000:]
    assert demo.world() == before
