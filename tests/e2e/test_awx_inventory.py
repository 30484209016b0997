"""docs/awx.md's inventory how-to, followed as written (issue 13, item 4).

The file name, the inventory file, the credential type's injectors and the example playbook are
read from the page itself, so the page cannot drift from what works. The injectors are rendered
the way AWX renders them (a boolean field becomes ``True``/``False``) into the environment of
``ansible-inventory`` and ``ansible-playbook``, which run against a real controller whose group
of process instances must all be reached.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest
import yaml

from tests.e2e.conftest import BIN, E2E, REPO, Run, wait_until
from tests.e2e.local_controller import LocalController, local_controller

pytestmark = pytest.mark.timeout(600)

AWX_DOC = REPO / "docs" / "awx.md"


def section(text: str, number: int) -> str:
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/awx.md has no section {number}"
    return match.group(0)


def yaml_blocks(text: str) -> list[str]:
    """The ```yaml blocks of a piece of Markdown, dedented (blocks inside list items are indented)."""
    blocks = []
    for indent, body in re.findall(r"^( *)```yaml\n(.*?)^\1```", text, re.MULTILINE | re.DOTALL):
        blocks.append("".join(line[len(indent):] for line in body.splitlines(keepends=True)))
    return blocks


def documented() -> dict:
    text = AWX_DOC.read_text()
    credential = section(text, 2)
    (injectors,) = [b for b in yaml_blocks(credential) if b.startswith("env:")]
    inventory = section(text, 5)
    name = re.search(r"inventory file `([^`]+)`", inventory)
    assert name, "section 5 names no inventory file"
    blocks = yaml_blocks(inventory)
    return {"name": name.group(1), "file": blocks[0], "injectors": yaml.safe_load(injectors),
            "playbook": next(b for b in blocks if b.startswith("- name:"))}


def awx_environment(injectors: dict, inputs: dict) -> dict[str, str]:
    """What AWX puts in the job's environment for a credential of this type."""
    return {key: jinja2.Template(value).render(**inputs) for key, value in injectors["env"].items()}


@pytest.fixture(scope="module")
def controller(e2e: E2E, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalController]:
    with local_controller(tmp_path_factory.mktemp("awx"), e2e.env) as running:
        spec = {"ID": "web", "Properties": {
            "Allocation": {"Size": 2},
            "Instance": {"Plugin": "process", "Properties": {"Command": running.webapp_command(),
                                                             "Env": {"MESSAGE": "from-awx-doc"}}},
            "Flavor": {"Plugin": "vanilla", "Properties": {"Health": {"HTTP": "http://{{address}}/healthz"}}}}}
        running.call("Group.CommitGroup", {"Name": "group/groups", "Spec": spec, "Pretend": False})
        wait_until(lambda: (d := running.describe("web"))["Converged"] and len(d["Instances"]) == 2, 120,
                   "web converged with 2 instances")
        yield running


def run(e2e: E2E, cwd: Path, env: dict[str, str], *argv: str) -> Run:
    proc = subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=cwd, env={**e2e.env, **env}, capture_output=True,
                          text=True, timeout=300)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def plain(value):
    """ansible-inventory marks plugin-provided strings as untrusted: {"__ansible_unsafe": "..."}."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def test_the_documented_inventory_source_lists_and_reaches_every_process_instance(
        e2e: E2E, controller: LocalController, tmp_path: Path) -> None:
    doc = documented()
    assert doc["name"] == "infrakit.instances.yml"
    (tmp_path / doc["name"]).write_text(doc["file"])
    (tmp_path / "reach.yml").write_text(doc["playbook"])
    # The credential as AWX injects it: URL (here the local socket), no token, validate_certs False.
    env = awx_environment(doc["injectors"], {"controller_url": controller.url, "controller_token": "",
                                             "validate_certs": False})
    assert env["INFRAKIT_VALIDATE_CERTS"] == "False"

    # AWX's inventory update: ansible-inventory with the default enabled plugins (auto picks ours).
    listed = run(e2e, tmp_path, env, "ansible-inventory", "-i", doc["name"], "--list")
    assert listed.rc == 0, listed.stdout[-3000:] + listed.stderr[-3000:]
    assert "[WARNING]" not in listed.stderr, listed.stderr
    inventory = plain(json.loads(listed.stdout))
    pids = {i["Properties"]["PID"] for i in controller.describe("web")["Instances"]}
    hosts = inventory["web"]["hosts"]
    assert len(hosts) == 2
    hostvars = inventory["_meta"]["hostvars"]
    assert {hostvars[h]["infrakit_properties"]["PID"] for h in hosts} == pids
    assert all(hostvars[h]["ansible_connection"] == "local" for h in hosts)

    # A job on that inventory: every instance reached, none unreachable.
    played = run(e2e, tmp_path, env, "ansible-playbook", "-i", doc["name"], "reach.yml")
    assert played.rc == 0, played.stdout[-5000:] + played.stderr[-3000:]
    for host in hosts:
        assert played.recap(host)["unreachable"] == 0 and played.recap(host)["failed"] == 0
        assert re.search(rf"{re.escape(host)} \(pid \d+\): from-awx-doc from process-", played.stdout), played.stdout
