"""Secrets in a group's spec never reach Ansible's output (issue 12, item 8).

A real controller, the installed collection, real ansible-playbook -vvv, ansible-inventory -vvv and
ansible-runner (what AWX runs, with its job events): a password under a secret-named key
(``Env.DB_PASSWORD``) and a value listed in ``secret_values`` (inside ``Command``) appear nowhere
in anything printed or recorded, while the controller got the real values.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import ansible_runner
import pytest

from tests.e2e.conftest import BIN, E2E, Run, wait_until
from tests.e2e.local_controller import LocalController, local_controller

pytestmark = pytest.mark.timeout(600)

PASSWORD = "pw-e2e-Hunter2-9431"
LISTED = "listed-Swordfish-7730"
SECRETS = (PASSWORD, LISTED)


@pytest.fixture(scope="module")
def controller(e2e: E2E, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalController]:
    with local_controller(tmp_path_factory.mktemp("secrets"), e2e.env) as running:
        yield running


def run(e2e: E2E, cwd: Path, *argv: str) -> Run:
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=cwd, env=e2e.env, capture_output=True, text=True,
                          timeout=400)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def assert_hidden(text: str, where: str) -> None:
    for secret in SECRETS:
        count = text.count(secret)
        assert count == 0, f"{secret!r} appears {count} times in {where}:\n{text[-8000:]}"


def instance(controller: LocalController) -> dict:
    return {"plugin": "process",
            "properties": {"Command": controller.webapp_command(f"--admin-password={LISTED}"),
                           "Env": {"DB_PASSWORD": PASSWORD, "MESSAGE": "vault"}}}


def test_group_and_group_info_with_vvv_print_no_secret_and_the_controller_has_the_real_values(
        e2e: E2E, controller: LocalController, tmp_path: Path) -> None:
    play = [{
        "name": "Secrets in a spec", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "module_defaults": {"group/infrakit.core.infrakit": {"controller_url": controller.url}},
        "vars": {"ansible_python_interpreter": str(BIN / "python")},
        "tasks": [
            {"name": "Create", "infrakit.core.group": {
                "name": "vault", "size": 1, "instance": instance(controller), "secret_values": [LISTED],
                "flavor": {"plugin": "vanilla", "properties": {}}, "wait_timeout": 120}, "register": "created"},
            {"name": "Check mode with diff", "infrakit.core.group": {
                "name": "vault", "size": 2, "secret_values": [LISTED]},
             "check_mode": True, "diff": True},
            {"name": "Read", "infrakit.core.group_info": {"name": "vault", "secret_values": [LISTED]},
             "register": "info"},
            {"name": "Show what was registered", "ansible.builtin.debug": {"var": "info"}},
            {"name": "Unchanged rerun", "infrakit.core.group": {
                "name": "vault", "size": 1, "instance": instance(controller), "secret_values": [LISTED],
                "flavor": {"plugin": "vanilla", "properties": {}}}, "register": "again"},
            {"name": "The rerun changed nothing", "ansible.builtin.assert": {"that": ["not again.changed"]}},
        ],
    }]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    result = run(e2e, tmp_path, "ansible-playbook", "-vvv", "--diff", "play.yml")
    assert result.rc == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in result.stdout     # it was there, masked
    assert_hidden(result.stdout + result.stderr, "ansible-playbook -vvv")
    # The controller itself got the real values: the instance runs with them.
    (described,) = controller.describe("vault")["Instances"]
    stored = controller.call("Group.InspectGroups", {"Name": "group/groups", "ID": ""})["Groups"]
    assert stored[0]["Properties"]["Instance"]["Properties"]["Env"]["DB_PASSWORD"] == PASSWORD
    environ = Path(f"/proc/{described['Properties']['PID']}/environ").read_bytes().split(b"\0")
    assert f"DB_PASSWORD={PASSWORD}".encode() in environ


def test_the_inventory_with_vvv_prints_no_secret(e2e: E2E, controller: LocalController, tmp_path: Path) -> None:
    # Committed by someone else (here: straight over the socket), as a group an inventory lists usually is.
    section = instance(controller)
    spec = {"ID": "vault-inv", "Properties": {
        "Allocation": {"Size": 1},
        "Instance": {"Plugin": section["plugin"], "Properties": section["properties"]},
        "Flavor": {"Plugin": "vanilla", "Properties": {}}}}
    controller.call("Group.CommitGroup", {"Name": "group/groups", "Spec": spec, "Pretend": False})
    wait_until(lambda: len(controller.describe("vault-inv")["Instances"]) == 1, 60, "vault-inv's instance")
    (tmp_path / "infrakit.yml").write_text(
        f"plugin: infrakit.core.instances\ncontroller_url: {controller.url}\nsecret_values: [{LISTED}]\n")
    result = run(e2e, tmp_path, "ansible-inventory", "-vvv", "-i", "infrakit.yml", "--list")
    assert result.rc == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert '"vault_inv"' in result.stdout and "infrakit_properties" in result.stdout
    assert_hidden(result.stdout + result.stderr, "ansible-inventory -vvv --list")


def cluster_vars(controller: LocalController) -> str:
    return json.dumps({
        "infrakit_controller_url": controller.url,
        "infrakit_secret_values": [LISTED],
        "infrakit_groups": [{"name": "cluster-vault", "size": 1, "instance": instance(controller),
                             "flavor": {"plugin": "vanilla", "properties": {}}, "wait_timeout": 120}],
    })


def test_cluster_playbook_with_vvv_prints_no_secret(e2e: E2E, controller: LocalController, tmp_path: Path) -> None:
    (tmp_path / "vars.json").write_text(cluster_vars(controller))
    result = run(e2e, tmp_path, "ansible-playbook", "-vvv", str(e2e.collection / "playbooks" / "cluster.yml"),
                 "-e", "@vars.json", "-e", f"ansible_python_interpreter={BIN / 'python'}")
    assert result.rc == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert result.recap()["changed"] == 1
    assert_hidden(result.stdout + result.stderr, "cluster.yml -vvv")


def test_cluster_playbook_under_ansible_runner_records_no_secret_in_stdout_or_job_events(
        e2e: E2E, controller: LocalController, tmp_path: Path) -> None:
    private = tmp_path / "runner"
    (private / "env").mkdir(parents=True)
    (private / "inventory").mkdir()
    (private / "inventory" / "hosts").write_text(
        f"localhost ansible_connection=local ansible_python_interpreter={BIN / 'python'}\n")
    (private / "env" / "extravars").write_text(cluster_vars(controller))
    envvars = {k: v for k, v in e2e.env.items() if k.startswith("ANSIBLE_") or k in ("PATH", "INFRAKIT_HOME")}
    runner = ansible_runner.run(private_data_dir=str(private), playbook=str(e2e.collection / "playbooks" / "cluster.yml"),
                                envvars=envvars, quiet=True, timeout=300, verbosity=3)
    assert runner.status == "successful", runner.stdout.read()[-4000:]
    events = list(runner.events)
    assert any(e.get("event") == "runner_on_ok" and e["event_data"].get("task") == "Declare each group" for e in events)
    assert_hidden(json.dumps(events), "ansible-runner job events")
    recorded = "".join(p.read_text(errors="replace") for p in (private / "artifacts").rglob("*") if p.is_file())
    assert_hidden(recorded, "ansible-runner artifacts (stdout, job_events)")
