# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

import os
import sys

import pytest
from ansible.errors import AnsibleError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader

from ansible_collections.infrakit.core.plugins.inventory.instances import hostname_for, sanitize_group_name
from ansible_collections.infrakit.core.tests.unit.plugins.fake_controller import described_instance


def spec(group_id, size=None, logical_ids=None):
    return {"ID": group_id, "Properties": {
        "Allocation": {"Size": size, "LogicalIDs": logical_ids},
        "Instance": {"Plugin": "process", "Properties": {}},
        "Flavor": {"Plugin": "vanilla", "Properties": {"Tags": {"tier": group_id}}},
    }}


def load(sockdir, controller, body, name="test.infrakit.yml", cache=False, url=None):
    path = os.path.join(sockdir, name)
    with open(path, "w") as f:
        f.write("plugin: infrakit.core.instances\ncontroller_url: %s\n%s" % (url or controller.url, body))
    plugin = inventory_loader.get("infrakit.core.instances")
    assert plugin.verify_file(path)
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), path, cache=cache)
    if plugin.get_option("cache"):
        # What InventoryManager does after parse: persist the cache.
        plugin.update_cache_if_changed()
    return inventory


def test_every_instance_is_a_host_in_its_groups_ansible_group(sockdir, controller):
    controller.groups = {"web-1": spec("web-1", size=2), "db": spec("db", logical_ids=["10.0.0.1"])}
    inventory = load(sockdir, controller, "")
    assert sorted(h.name for h in inventory.groups["web_1"].get_hosts()) == ["instance-0", "instance-1"]
    assert [h.name for h in inventory.groups["db"].get_hosts()] == ["10.0.0.1"]
    host = inventory.get_host("instance-1")
    hostvars = host.get_vars()
    assert hostvars["ansible_host"] == "127.0.0.1"
    assert hostvars["infrakit_address"] == "127.0.0.1:20001"
    assert hostvars["infrakit_group"] == "web-1"
    assert hostvars["infrakit_tags"]["infrakit.group"] == "web-1"
    assert hostvars["infrakit_properties"]["PID"] == 4001
    assert hostvars["infrakit_health"] == "healthy"
    assert hostvars["infrakit_up_to_date"] is True


def test_selected_groups_prefix_hostnames_compose_and_keyed_groups(sockdir, controller):
    controller.groups = {"web": spec("web", size=2), "db": spec("db", size=1)}
    inventory = load(sockdir, controller, "\n".join([
        "group_ids: [web]",
        "group_prefix: ik-",
        "hostnames: ['tag:nosuch', address]",
        "compose:",
        "  health_url: \"'http://' ~ infrakit_address ~ '/'\"",
        "keyed_groups:",
        "  - key: infrakit_health",
        "    prefix: health",
        "groups:",
        "  current: infrakit_up_to_date",
        "",
    ]))
    assert sorted(h.name for h in inventory.groups["ik_web"].get_hosts()) == ["127.0.0.1:20000", "127.0.0.1:20001"]
    assert "db" not in inventory.groups
    host = inventory.get_host("127.0.0.1:20000")
    assert host.get_vars()["health_url"] == "http://127.0.0.1:20000/"
    assert [h.name for h in inventory.groups["health_healthy"].get_hosts()] == ["127.0.0.1:20000", "127.0.0.1:20001"]
    assert len(inventory.groups["current"].get_hosts()) == 2
    assert [r["params"]["ID"] for r in controller.calls("Group.DescribeGroup")] == ["web"]


def test_a_missing_selected_group_is_an_error_only_when_strict(sockdir, controller):
    controller.groups = {"web": spec("web", size=1)}
    inventory = load(sockdir, controller, "group_ids: [web, nosuch]\n")
    assert [h.name for h in inventory.groups["web"].get_hosts()] == ["instance-0"]
    with pytest.raises(AnsibleError, match="manages no group nosuch"):
        load(sockdir, controller, "group_ids: [web, nosuch]\nstrict: true\n")


def test_unreachable_controller_is_an_ansible_error(sockdir, controller, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    with pytest.raises(AnsibleError, match="cannot reach the InfraKit controller"):
        load(sockdir, controller, "", url=sockdir + "/nothing-here")
    assert controller.requests == []


def test_cached_inventory_is_served_without_asking_the_controller(sockdir, controller):
    controller.groups = {"web": spec("web", size=1)}
    body = "cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: %s/cache\n" % sockdir
    # cache=False refreshes the cache, as ansible-inventory --flush-cache does.
    load(sockdir, controller, body, cache=False)
    asked = len(controller.requests)
    inventory = load(sockdir, controller, body, cache=True)
    assert asked > 0
    assert len(controller.requests) == asked
    assert [h.name for h in inventory.groups["web"].get_hosts()] == ["instance-0"]


def test_hostname_preferences_and_sanitised_group_names():
    instance = {"id": "i-1", "logical_id": None, "address": "10.0.0.9:80", "tags": {"Name": "web-a"}}
    assert hostname_for(instance, ["logical_id", "tag:Name", "id"]) == ["web-a", "i-1", "i-1"]
    assert hostname_for(instance, ["host"]) == ["10.0.0.9", "i-1"]
    with pytest.raises(AnsibleError, match="unknown preference"):
        hostname_for(instance, ["dns"])
    assert sanitize_group_name("web.prod-1") == "web_prod_1"
    assert sanitize_group_name("1st") == "_1st"


def test_secret_keys_and_listed_values_are_masked_in_host_vars_and_in_the_cache(sockdir, controller):
    controller.groups = {"db": spec("db", size=1)}
    instance = described_instance("db", 0, "127.0.0.1:20000")
    instance["Properties"].update({"Env": {"DB_PASSWORD": "hunter2-Sup3r", "HOME": "/srv"},
                                   "Command": "db --admin-password=swordfish-42"})
    instance["Tags"]["api_key"] = "tag-secret-99"
    controller.scripts["db"] = [{"Instances": [instance], "Converged": True}]
    body = ("secret_values: [swordfish-42]\ncache: true\ncache_plugin: ansible.builtin.jsonfile\n"
            "cache_connection: %s/cache\n" % sockdir)
    inventory = load(sockdir, controller, body)
    hostvars = inventory.get_host("instance-0").get_vars()
    assert hostvars["infrakit_properties"]["Env"]["HOME"] == "/srv"
    assert hostvars["infrakit_properties"]["PID"] == 4000
    text = repr(hostvars)
    for secret in ("hunter2-Sup3r", "swordfish-42", "tag-secret-99"):
        assert secret not in text
    cached = ""
    for name in os.listdir(os.path.join(sockdir, "cache")):
        with open(os.path.join(sockdir, "cache", name)) as f:
            cached += f.read()
    assert "instance-0" in cached
    for secret in ("hunter2-Sup3r", "swordfish-42", "tag-secret-99"):
        assert secret not in cached


@pytest.mark.parametrize("name, accepted", [
    ("infrakit.instances.yml", True), ("infrakit.instances.yaml", True), ("prod.infrakit.instances.yml", True),
    ("infrakit.yml", True), ("infrakit.yaml", True), ("web.infrakit.yml", True),
    ("instances.yml", False), ("hosts.yml", False), ("infrakit.instances.json", False),
])
def test_file_names_the_docs_use_are_accepted(sockdir, name, accepted):
    path = os.path.join(sockdir, name)
    with open(path, "w") as f:
        f.write("plugin: infrakit.core.instances\n")
    assert inventory_loader.get("infrakit.core.instances").verify_file(path) is accepted


def test_validate_certs_comes_from_INFRAKIT_VALIDATE_CERTS(sockdir, tls_controller, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    tls_controller.groups = {"web": spec("web", size=1)}
    monkeypatch.delenv("INFRAKIT_VALIDATE_CERTS", raising=False)
    with pytest.raises(AnsibleError, match=r"(?i)certificate verify failed"):
        load(sockdir, tls_controller, "")
    monkeypatch.setenv("INFRAKIT_VALIDATE_CERTS", "False")
    inventory = load(sockdir, tls_controller, "")
    assert [h.name for h in inventory.groups["web"].get_hosts()] == ["instance-0"]


def test_process_instances_behind_the_local_socket_get_a_local_connection(sockdir, controller):
    aws = spec("db", size=1)
    aws["Properties"]["Instance"]["Plugin"] = "aws/ec2-instance"
    typed = spec("jobs", size=1)
    typed["Properties"]["Instance"]["Plugin"] = "process/batch"
    controller.groups = {"web": spec("web", size=1), "db": aws, "jobs": typed}
    for n, group_id in enumerate(sorted(controller.groups)):
        controller.scripts[group_id] = [{"Instances": [described_instance(group_id, n, "127.0.0.1:%d" % (20000 + n))],
                                         "Converged": True}]
    inventory = load(sockdir, controller, "")
    web, jobs = (inventory.groups[g].get_hosts()[0].get_vars() for g in ("web", "jobs"))
    assert web["ansible_connection"] == "local" and jobs["ansible_connection"] == "local"
    assert web["ansible_python_interpreter"] == sys.executable
    assert "ansible_connection" not in inventory.groups["db"].get_hosts()[0].get_vars()


def test_the_local_connection_can_be_turned_off_or_composed_over(sockdir, controller):
    controller.groups = {"web": spec("web", size=1)}
    off = load(sockdir, controller, "local_plugins: []\n")
    assert "ansible_connection" not in off.get_host("instance-0").get_vars()
    composed = load(sockdir, controller, "compose:\n  ansible_connection: \"'ssh'\"\n")
    assert composed.get_host("instance-0").get_vars()["ansible_connection"] == "ssh"


def test_process_instances_behind_an_https_controller_get_no_connection_guess(sockdir, tls_controller, monkeypatch):
    monkeypatch.setenv("INFRAKIT_VALIDATE_CERTS", "false")
    tls_controller.groups = {"web": spec("web", size=1)}
    hostvars = load(sockdir, tls_controller, "").get_host("instance-0").get_vars()
    assert "ansible_connection" not in hostvars and hostvars["ansible_host"] == "127.0.0.1"
    # The compose line docs/awx.md gives for this case.
    composed = load(sockdir, tls_controller, "compose:\n  ansible_host: \"'infrakit.example.com'\"\n")
    assert composed.get_host("instance-0").get_vars()["ansible_host"] == "infrakit.example.com"
