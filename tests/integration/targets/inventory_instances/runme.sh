#!/usr/bin/env bash
# The inventory plugin against a real controller: the group's instances are hosts with their
# addresses, and a play over that inventory reaches each one.
set -eux

export ANSIBLE_ROLES_PATH=..
state=$(mktemp -d)
cleanup() {
  ansible-playbook teardown.yml -e "state_dir=$state" "$@" || true
  rm -rf "$state"
}
trap cleanup EXIT

ansible-playbook setup.yml -e "state_dir=$state" "$@"
controller_url=$(cat "$state/controller_url")

cat >"$state/test.infrakit.yml" <<YAML
plugin: infrakit.core.instances
controller_url: $controller_url
group_ids: [web]
group_prefix: ik_
hostnames: [address]
compose:
  health_url: "'http://' ~ infrakit_address ~ '/'"
keyed_groups:
  - key: infrakit_health
    prefix: health
YAML

export ANSIBLE_INVENTORY_ENABLED=infrakit.core.instances
ansible-inventory -i "$state/test.infrakit.yml" --list >"$state/inventory.json"
python3 - "$state/inventory.json" "$state/addresses" <<'PY'
import json, sys

def plain(value):
    # ansible-inventory marks plugin-provided strings as untrusted: {"__ansible_unsafe": "..."}.
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value

inventory = plain(json.load(open(sys.argv[1])))
expected = sorted(open(sys.argv[2]).read().split())
hosts = sorted(inventory["ik_web"]["hosts"])
assert hosts == expected, (hosts, expected)
assert sorted(inventory["health_healthy"]["hosts"]) == expected, inventory.get("health_healthy")
for name in hosts:
    hostvars = inventory["_meta"]["hostvars"][name]
    assert hostvars["ansible_host"] == "127.0.0.1", hostvars
    assert hostvars["ansible_connection"] == "local", hostvars
    assert hostvars["infrakit_address"] == name, hostvars
    assert hostvars["infrakit_group"] == "web", hostvars
    assert hostvars["infrakit_tags"]["tier"] == "web", hostvars
    assert hostvars["health_url"] == "http://%s/" % name, hostvars
print("inventory ok:", hosts)
PY

ansible-playbook -i "$state/test.infrakit.yml" reach.yml -e "state_dir=$state" "$@"
