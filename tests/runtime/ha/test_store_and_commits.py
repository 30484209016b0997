"""Issue 12 #5 and #6 on real daemons: the store is checked, one bad group costs one group, no commit is half-applied.

A manager that takes over reads every stored spec. An entry the store cannot vouch for (a
file whose name and ID disagree, a value that is not JSON) and a group whose instance plugin
cannot be reached are kept as Degraded groups, reported everywhere an operator looks, and
retried with backoff, while the manager leads and every other group is enforced. The
operator's bad entry is never rewritten or deleted behind their back. A commit whose answer
cannot be computed (the instance plugin fails) is refused before anything is stored.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import etcd3gw
import pytest

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import Daemons
from tests.runtime.ha.cluster import wait_for
from tests.runtime.observability.conftest import ObservedStack, value


@pytest.fixture
def stack(daemons: Daemons) -> Iterator[ObservedStack]:
    s = ObservedStack(daemons)
    try:
        yield s
    finally:
        daemons.stop_all()
        s.kill_instances()


def manager(stack: ObservedStack, method: str, params: dict[str, Any] | None = None, name: str = "group") -> Any:
    client = stack.d.client(name, timeout=30)
    try:
        return client.call(method, params or {})
    finally:
        client.close()


def restart_manager(stack: ObservedStack, between: Any = None) -> None:
    """Stop the manager (gracefully), run ``between`` while it is down, start it again."""
    stack.d.kill("group", signal.SIGTERM)
    if between is not None:
        between()
    stack.start_manager()


def leading(stack: ObservedStack, timeout: float = 30.0) -> dict[str, Any]:
    return wait_for(lambda: (s := manager(stack, "Manager.Status"))["Leader"] and s, timeout, "the manager to lead")


def degraded(stack: ObservedStack, gid: str, timeout: float = 30.0) -> dict[str, Any]:
    return stack.wait(lambda d: (d.get("Status") or {}).get("Condition") == "Degraded", timeout,
                      f"{gid} reported Degraded", gid)


def kill_one_and_see_it_replaced(stack: ObservedStack, gid: str, size: int) -> None:
    """Proof that ``gid`` is enforced right now: a killed member is replaced."""
    victim = stack.instances(gid)[0]
    os.kill(victim["Properties"]["PID"], signal.SIGKILL)
    stack.wait(lambda d: d.get("Converged") and len(d["Instances"]) == size
               and victim["ID"] not in {i["ID"] for i in d["Instances"]}, 60, f"{gid} replacing a killed member", gid)


def test_a_store_file_whose_name_and_id_disagree_is_refused_and_its_group_kept_degraded(stack: ObservedStack) -> None:
    stack.commit(stack.spec("rt1", size=2))
    stack.commit(stack.spec("web", size=1))
    stack.wait_converged(2, gid="rt1")
    stack.wait_converged(1, gid="web")
    members = {d["ID"] for d in stack.instances("rt1")}
    path = stack.d.home / "store" / "groups" / "rt1.json"
    tampered = json.loads(path.read_text())
    tampered["ID"] = "other"
    data = json.dumps(tampered).encode()
    restart_manager(stack, lambda: path.write_bytes(data))

    status = leading(stack)
    desc = degraded(stack, "rt1")
    reason = desc["Status"]["Reason"]
    assert "rt1.json" in reason and "'other'" in reason, reason
    assert desc["Converged"] is False
    # Nothing was made for "other", and rt1's members were neither abandoned nor replaced.
    with pytest.raises(RemoteError, match="not being watched"):
        stack.describe("other")
    kill_one_and_see_it_replaced(stack, "web", 1)  # the other group is enforced meanwhile
    assert stack.instances("other") == []
    assert {d["ID"] for d in stack.instances("rt1")} == members
    assert stack.live_processes() == 3

    # Reported wherever an operator looks, and the operator's file is left exactly as it was.
    status = manager(stack, "Manager.Status")
    assert [g["Group"] for g in status["Degraded"]] == ["rt1"] and "rt1.json" in status["Degraded"][0]["Reason"]
    groups = {g["ID"]: g for g in stack.call("Group.InspectGroups", {"ID": ""})["Groups"]}
    assert set(groups) == {"rt1", "web"}
    assert groups["rt1"]["Status"]["Condition"] == "Degraded" and groups["rt1"]["Properties"] is None
    assert "Status" not in groups["web"]
    metrics = stack.scrape()
    assert value(metrics, "infrakit_group_condition", group="rt1", condition="Degraded") == 1
    assert value(metrics, "infrakit_group_converged", group="rt1") == 0
    assert value(metrics, "infrakit_group_condition", group="web", condition="Converged") == 1
    cli = stack.cli("manager", "status")
    assert cli.returncode == 0 and "rt1" in cli.stdout and "Degraded" in cli.stdout, cli.stdout + cli.stderr
    assert path.read_bytes() == data

    # Committing rt1 again is the operator's explicit fix: it is enforced, with the members it had.
    stack.commit(stack.spec("rt1", size=2))
    stack.wait_converged(2, gid="rt1")
    assert {d["ID"] for d in stack.instances("rt1")} == members
    assert manager(stack, "Manager.Status")["Degraded"] == []


def test_a_store_file_that_is_not_json_costs_only_its_own_group(stack: ObservedStack) -> None:
    stack.commit(stack.spec("web", size=2))
    stack.wait_converged(2, gid="web")
    broken = stack.d.home / "store" / "groups" / "broken.json"
    restart_manager(stack, lambda: broken.write_bytes(b'{"ID": "broken", "Prop'))

    term = leading(stack)["Term"]
    desc = degraded(stack, "broken")
    assert "broken.json" in desc["Status"]["Reason"] and "not valid JSON" in desc["Status"]["Reason"]
    kill_one_and_see_it_replaced(stack, "web", 2)
    status = manager(stack, "Manager.Status")
    assert status["Leader"] and status["Term"] == term and status["LeadershipChanges"] == 1
    assert broken.read_bytes() == b'{"ID": "broken", "Prop'

    # The operator fixes the file: the retry (with backoff) enforces it without a restart.
    fixed = stack.spec("broken", size=1)
    broken.write_text(json.dumps(fixed))
    stack.wait_converged(1, gid="broken", timeout=90)
    assert manager(stack, "Manager.Status")["Degraded"] == []
    assert manager(stack, "Manager.Status")["Term"] == term


def test_a_group_whose_instance_plugin_is_unreachable_is_degraded_and_enforced_once_it_returns(
        stack: ObservedStack) -> None:
    far_dir = f"dir={stack.d.home / 'instance-far'}"  # a records directory of its own
    stack.d.start("process:far", "-o", far_dir)
    far = stack.spec("far", size=1)
    far["Properties"]["Instance"]["Plugin"] = "far"
    stack.commit(far)
    stack.commit(stack.spec("web", size=1))
    stack.wait_converged(1, gid="far")
    stack.wait_converged(1, gid="web")

    def plugin_gone() -> None:
        stack.d.kill("far", signal.SIGTERM)

    restart_manager(stack, plugin_gone)
    term = leading(stack)["Term"]
    desc = degraded(stack, "far")
    assert "far" in desc["Status"]["Reason"], desc["Status"]
    kill_one_and_see_it_replaced(stack, "web", 1)
    # The leadership loop is not failing: same term, one leadership change, while the Degraded group
    # is retried again.
    tried = manager(stack, "Manager.Status")["Degraded"][0]["Failures"]
    status = wait_for(lambda: (s := manager(stack, "Manager.Status"))["Degraded"][0]["Failures"] > tried and s,
                      90, "another retry of the Degraded group")
    assert status["Leader"] and status["Term"] == term and status["LeadershipChanges"] == 1
    assert [g["Group"] for g in status["Degraded"]] == ["far"]
    assert status["Degraded"][0]["Failures"] >= 1
    assert "Traceback" not in stack.d.log("group")

    stack.d.start("process:far", "-o", far_dir)
    stack.wait_converged(1, gid="far", timeout=90)
    assert manager(stack, "Manager.Status")["Degraded"] == []
    kinds = [e["Kind"] for e in manager(stack, "Manager.Events", {"Group": "far", "Limit": 0})["Events"]]
    assert "group_degraded" in kinds and "group_restored" in kinds


def test_a_commit_whose_answer_cannot_be_computed_is_not_stored(stack: ObservedStack, tmp_path: Path) -> None:
    directory = tmp_path / "instance-files"
    stack.d.start("file", env={"INFRAKIT_INSTANCE_FILE_DIR": str(directory)})

    def spec(size: int) -> dict[str, Any]:
        return {"ID": "files", "Properties": {"Allocation": {"Size": size},
                                              "Instance": {"Plugin": "file", "Properties": {}},
                                              "Flavor": {"Plugin": "vanilla", "Properties": {}}}}

    stack.commit(spec(1))
    stack.wait_converged(1, gid="files")
    stored = manager(stack, "Manager.Specs")["Specs"]
    # The plugin still validates specs, but can no longer describe its instances.
    for f in directory.iterdir():
        f.unlink()
    directory.rmdir()

    def describe_fails() -> bool:
        try:
            stack.describe("files")
        except RemoteError:
            return True
        return False

    wait_for(describe_fails, 30, "the file plugin failing DescribeInstances")
    with pytest.raises(RemoteError):
        stack.commit(spec(2))
    assert manager(stack, "Manager.Specs")["Specs"] == stored, "a refused commit was stored"
    restart_manager(stack)
    leading(stack)
    assert manager(stack, "Manager.Specs")["Specs"] == stored


def test_an_etcd_key_whose_name_and_id_disagree_or_whose_value_is_not_json_costs_only_its_group(
        replicas: Any, etcd: Any, prefix: str) -> None:
    stack = replicas(names=("group-a", "group-b"))
    stack.commit(stack.spec(size=1))
    stack.wait_converged(1)
    url = urllib.parse.urlsplit(etcd.endpoints[0])
    raw = etcd3gw.client(host=url.hostname, port=url.port, timeout=5)
    tampered = {**stack.spec("rt1", size=1), "ID": "other"}
    raw.put(f"{prefix}groups/rt1", json.dumps(tampered))
    raw.put(f"{prefix}groups/junk", "not json at all")

    old = stack.leader()
    stack.kill(old)
    new = stack.leader(timeout=30, exclude=(old,))
    stack.via = new
    for gid, words in (("rt1", ("groups/rt1", "'other'")), ("junk", ("groups/junk", "not valid JSON"))):
        desc = stack.wait(lambda d: (d.get("Status") or {}).get("Condition") == "Degraded", 30,
                          f"{gid} reported Degraded", gid)
        assert all(w in desc["Status"]["Reason"] for w in words), desc["Status"]["Reason"]
    victim = stack.instances()[0]
    os.kill(victim["Properties"]["PID"], signal.SIGKILL)
    stack.wait(lambda d: d.get("Converged") and len(d["Instances"]) == 1
               and victim["ID"] not in {i["ID"] for i in d["Instances"]}, what="web enforced by the new leader")
    assert stack.instances("other") == []
    assert sorted(g["Group"] for g in stack.status(new)["Degraded"]) == ["junk", "rt1"]
    assert json.loads(raw.get(f"{prefix}groups/rt1")[0]) == tampered
    assert raw.get(f"{prefix}groups/junk")[0] == b"not json at all"
