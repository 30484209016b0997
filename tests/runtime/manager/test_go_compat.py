"""Go InfraKit's CLI against our manager: every group verb, addressed as Go's CLI addresses it.

Go's CLI builds its per-group commands (``infrakit local group/<ID> inspect|scale|destroy|
free-group|destroy-instance``) from the objects the manager announces in ``Handshake.Hello``
(``shared/wire/handshake-hello-group-with-groups.json``), then names the object ``group/<ID>``
in every call. A real manager daemon, real file and vanilla plugins, over the real socket.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.runtime.conftest import WIRE
from tests.runtime.group import world


def _spec(gid: str, size: int) -> dict:
    return {**world.raw_spec(size), "ID": gid}


@pytest.fixture
def manager(daemons):
    directory = daemons.home / "instances"
    directory.mkdir()
    daemons.start("file", env={"INFRAKIT_INSTANCE_FILE_DIR": str(directory)})
    daemons.start("vanilla")
    daemons.start("manager", env={"INFRAKIT_GROUP_POLL_INTERVAL": "0.2s"})
    return daemons


def _call(daemons, method: str, params: dict):
    client = daemons.client("group", timeout=30)
    try:
        return client.call(method, params)
    finally:
        client.close()


def _group_objects(daemons) -> list[str]:
    client = daemons.client("group")
    try:
        return [o["Name"] for o in client.hello()["Group/0.1.1"]]
    finally:
        client.close()


def _wait(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def test_the_manager_announces_one_group_object_per_group_as_go_infrakit_does(manager):
    assert _group_objects(manager) == ["groups"]
    for gid, size in (("workers", 2), ("db", 1)):
        _call(manager, "Group.CommitGroup", {"Name": "group", "Spec": _spec(gid, size), "Pretend": False})
    recorded = json.loads((WIRE / "handshake-hello-group-with-groups.json").read_text())
    go = sorted(o["Name"] for o in recorded["response"]["body"]["result"]["Objects"]["Group/0.1.1"])
    assert _group_objects(manager) == go == ["db", "groups", "workers"]
    _call(manager, "Group.FreeGroup", {"Name": "group/db", "ID": "db"})
    assert _group_objects(manager) == ["groups", "workers"]


def test_every_group_verb_works_addressed_to_the_groups_own_object(manager):
    _call(manager, "Group.CommitGroup", {"Name": "group/groups", "Spec": _spec("workers", 2), "Pretend": False})
    name = {"Name": "group/workers", "ID": "workers"}
    # inspect
    _wait(lambda: len((_call(manager, "Group.DescribeGroup", name)["Description"] or {}).get("Instances") or []) == 2,
          "two members")
    assert [g["ID"] for g in _call(manager, "Group.InspectGroups", name)["Groups"]] == ["workers"]
    # scale
    assert _call(manager, "Group.Size", name)["Size"] == 2
    _call(manager, "Group.SetSize", {**name, "Size": 3})
    assert _call(manager, "Group.Size", name)["Size"] == 3
    members = _wait(lambda: [i["ID"] for i in _call(manager, "Group.DescribeGroup", name)["Description"]["Instances"]
                             if len(_call(manager, "Group.DescribeGroup", name)["Description"]["Instances"]) == 3],
                    "three members")
    # destroy-instance: the member goes, and the group replaces it
    _call(manager, "Group.DestroyInstances", {**name, "Instances": [members[0]]})
    _wait(lambda: (lambda ids: len(ids) == 3 and members[0] not in ids)(
        [i["ID"] for i in _call(manager, "Group.DescribeGroup", name)["Description"]["Instances"]]), "a replacement")
    # free-group, then commit again and destroy
    _call(manager, "Group.FreeGroup", name)
    assert _call(manager, "Group.InspectGroups", {"Name": "group/groups", "ID": ""})["Groups"] is None
    _call(manager, "Group.CommitGroup", {"Name": "group/workers", "Spec": _spec("workers", 1), "Pretend": False})
    _call(manager, "Group.DestroyGroup", name)
    assert _group_objects(manager) == ["groups"]
