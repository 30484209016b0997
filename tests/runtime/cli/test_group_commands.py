"""``infrakit group``: every action answers -o json, an unknown group is told by its error kind, and the
CLI names the object Go InfraKit's manager resolves (a real manager over its socket)."""

from __future__ import annotations

import json

import yaml

from infrakit_runtime.cli.group import object_name
from infrakit_runtime.rpc import discovery
from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import WIRE


def test_every_group_action_prints_json_with_o_json(manager):
    manager.call("Group.CommitGroup", {"Name": "group", "Spec": manager.spec("web", 1), "Pretend": False})
    assert json.loads(manager.cli("group", "size", "web", "-o", "json").stdout) == {"ID": "web", "Size": 1}
    assert json.loads(manager.cli("group", "-o", "json", "set-size", "web", "2").stdout) == {"ID": "web", "Size": 2}
    assert manager.call("Group.Size", {"Name": "group", "ID": "web"})["Size"] == 2
    assert json.loads(manager.cli("group", "free", "web", "-o", "json").stdout) == {"ID": "web"}
    manager.call("Group.CommitGroup", {"Name": "group", "Spec": manager.spec("web", 0), "Pretend": False})
    assert yaml.safe_load(manager.cli("group", "destroy", "web", "-o", "yaml").stdout) == {"ID": "web"}
    assert json.loads(manager.cli("group", "ls", "-o", "json").stdout) == []


def test_watching_a_group_nobody_manages_stops_at_once_and_says_so(manager):
    # No --timeout: only the error's kind (UnknownGroup) ends the watch.
    done = manager.cli("group", "watch", "nosuch", timeout=60)
    assert done.returncode == 1
    assert "infrakit: group nosuch: Group 'nosuch' is not being watched" in done.stderr


def test_an_unknown_group_is_infrakits_error_plus_its_kind(manager):
    recorded = json.loads((WIRE / "error-group-describe-unknown.json").read_text())["response"]["body"]["error"]
    try:
        manager.call("Group.DescribeGroup", {"Name": "group/groups", "ID": "nosuch"})
    except RemoteError as e:
        assert (e.code, e.message) == (recorded["code"], recorded["message"])
        assert e.data == {"Kind": "UnknownGroup"}
    else:
        raise AssertionError("DescribeGroup of an unknown group succeeded")


def test_the_cli_names_the_object_a_go_manager_resolves_once_groups_exist():
    # Go's manager answers "not found: group (key=)" to a bare "group" once a group exists; group/groups works.
    assert object_name(discovery.PluginName.parse("group")) == "group/groups"
    assert object_name(discovery.PluginName.parse("group/workers")) == "group/workers"
    assert object_name(discovery.PluginName.parse("other")) == "other/groups"
