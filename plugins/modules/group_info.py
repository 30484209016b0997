#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: group_info
short_description: Read InfraKit groups, their instances and health, and who leads the controller
version_added: 0.1.0
description:
  - Lists the groups the InfraKit controller manages (or one of them), each with its spec,
    instances, health and convergence.
  - Reports whether the controller answering is the leader, where the leader is, and, from this
    collection's controller, the state of its coordination backend.
  - When the controller's replicas share the groups (their C(sharding) option is C(groups)) there is no single leader;
    each group then reports its owner (the replica that runs it), and RV(controller) the live members.
  - Never changes anything.
author:
  - infrakit.core maintainers (@infrakit)
options:
  name:
    description:
      - Only this group. A group the controller does not manage yields an empty O(name) result,
        not a failure.
    type: str
    aliases: [id]
  instances:
    description:
      - Describe each group's instances (one C(DescribeGroup) call per group).
      - Set to V(false) to list only the specs.
    type: bool
    default: true
extends_documentation_fragment:
  - infrakit.core.controller
  - infrakit.core.secrets
attributes:
  check_mode:
    support: full
    description: The module only reads, so it runs unchanged in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to show.
  platform:
    support: full
    platforms: posix
    description: Runs where the controller socket or URL is reachable.
  action_group:
    support: full
    description: Use C(group/infrakit.core.infrakit) in C(module_defaults) to set the connection options.
    membership:
      - infrakit.core.infrakit
seealso:
  - module: infrakit.core.group
  - plugin: infrakit.core.instances
    plugin_type: inventory
"""

EXAMPLES = r"""
- name: Every group, with instances and health
  infrakit.core.group_info:
  register: infrakit

- name: Fail unless every group is converged
  ansible.builtin.assert:
    that: infrakit.groups | rejectattr('converged') | list | length == 0
    fail_msg: "{{ infrakit.groups | rejectattr('converged') | map(attribute='id') | list }} not converged"

- name: One group on a remote controller
  infrakit.core.group_info:
    name: web
    controller_url: https://infrakit.example.com:24864
    controller_token: "{{ vault_infrakit_token }}"
  register: web

- name: Addresses of the healthy web instances
  ansible.builtin.debug:
    msg: "{{ web.groups[0].instances | selectattr('health', 'eq', 'healthy') | map(attribute='address') | list }}"
"""

RETURN = r"""
groups:
  description: The groups, sorted by ID.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The group ID.
      type: str
    spec:
      description: The stored spec in the option names of M(infrakit.core.group).
      type: dict
    converged:
      description: Whether the controller reports the group converged.
      type: bool
    condition:
      description: The controller's condition (C(Converged), C(Scaling), C(RollingUpdate)...); null from Go InfraKit.
      type: str
    reason:
      description: Why the group is in its condition.
      type: str
    plan:
      description: The controller's current plan text.
      type: str
    last_error:
      description: The controller's last error acting on the group.
      type: str
    events:
      description:
        - The group's most recent controller events, oldest first, each with C(seq), C(time) (Unix seconds),
          C(kind) (for example C(instance_lost), C(provisioned), C(destroyed), C(brake_engaged)), C(instance) and C(reason).
        - Empty against Go InfraKit, which reports no events.
      type: list
      elements: dict
    counts:
      description: C(desired), C(running), C(healthy), C(unhealthy), C(pending) and C(outdated) instance counts.
      type: dict
    instances:
      description:
        - Each instance with C(id), C(logical_id), C(tags), C(properties), C(address), C(health)
          (C(healthy), C(unhealthy) or C(unknown)) and C(up_to_date).
        - Empty when O(instances=false).
      type: list
      elements: dict
    owner:
      description:
        - When the replicas share the groups (RV(controller.sharding) is C(groups)), the replica that owns
          and runs this group, as etcd's owner key names it, with C(candidate), C(location) (its advertised
          URL; null when it is no live member any more, until its key expires) and C(live).
        - Null when the group has no owner right now (it is moving, or its owner's lease has not expired
          yet and no member has claimed it), and always null with one leader, which runs every group (see RV(leader)).
      type: dict
      returned: always
      sample: {candidate: "vm:5502:group-b", location: "http://10.0.0.6:24864", live: true}
  sample:
    - id: web
      spec: {name: web, size: 2, instance: {plugin: process, properties: {}}, flavor: {plugin: vanilla, properties: {}}}
      converged: true
      condition: Converged
      reason: null
      plan: Managing 2 instances
      last_error: null
      events:
        - {seq: 7, time: 1795600019.0, kind: provisioned, instance: process-1, reason: increasing the group to 2 instances}
      counts: {desired: 2, running: 2, healthy: 2, unhealthy: 0, pending: 0, outdated: 0}
      instances:
        - {id: process-1, logical_id: null, tags: {infrakit.group: web}, properties: {Address: "127.0.0.1:40001"},
           address: "127.0.0.1:40001", health: healthy, up_to_date: true}
leader:
  description:
    - Leadership as the answering controller replica sees it.
    - When the replicas share the groups there is no single leader; every registered member answers
      C(is_leader=true) and C(location) is that member's own URL. Each group's RV(groups[].owner) says who runs it.
  returned: always
  type: dict
  contains:
    is_leader:
      description: Whether the replica that answered is the leader (sharing the groups, a registered member).
      type: bool
    location:
      description: The leader's advertised URL, if known.
      type: str
  sample: {is_leader: true, location: "https://10.0.0.5:24864"}
controller:
  description:
    - The controller's own status (C(Manager.Status)); null when the controller does not offer it,
      as with Go InfraKit.
  returned: always
  type: dict
  contains:
    leader:
      description: Whether the replica that answered is the leader.
      type: bool
    location:
      description: The leader's advertised URL.
      type: str
    term:
      description: The leadership term of the answering replica when it leads.
      type: int
    problem:
      description: Why nothing is enforced from this replica's point of view (no leader, backend unusable...), or null when all is well.
      type: str
    backend:
      description: The coordination backend, with C(type) (C(file) or C(etcd)), C(healthy) and C(reason).
      type: dict
    sharding:
      description: C(groups) when the replicas share the groups (each group owned by one replica); null with one leader.
      type: str
    members:
      description: Sharing the groups, the live replicas (candidate -> advertised URL); null with one leader.
      type: dict
    owned:
      description: Sharing the groups, the IDs of the groups the answering replica owns; null with one leader.
      type: list
      elements: str
  sample: {leader: true, location: null, term: 1, problem: null, backend: {type: file, healthy: true, reason: null},
           sharding: null, members: null, owned: null}
"""

from ansible_collections.infrakit.core.plugins.module_utils.controller import RemoteError, location_text
from ansible_collections.infrakit.core.plugins.module_utils.groups import describe_group, spec_to_module
from ansible_collections.infrakit.core.plugins.module_utils.modules import InfraKitModule

ARGUMENT_SPEC = dict(
    name=dict(type="str", aliases=["id"]),
    instances=dict(type="bool", default=True),
)


def controller_status(raw):
    """``Manager.Status`` in the module's vocabulary, or None."""
    if raw is None:
        return None
    backend = raw.get("Backend") if isinstance(raw.get("Backend"), dict) else {}
    return {
        "leader": raw.get("Leader"),
        "location": location_text(raw.get("Location")),
        "term": raw.get("Term"),
        "problem": raw.get("Problem") or None,
        "backend": {"type": backend.get("Type"), "healthy": backend.get("Healthy"), "reason": backend.get("Reason")},
        "sharding": raw.get("Sharding") or None,
        "members": _members(raw) if raw.get("Sharding") else None,
        "owned": sorted(raw.get("Owned") or []) if raw.get("Sharding") else None,
    }


def _members(raw):
    members = raw.get("Members")
    return {str(k): location_text(v) for k, v in members.items()} if isinstance(members, dict) else {}


def group_owner(raw, group_id):
    """Sharing the groups: the owner of ``group_id`` as ``Manager.Status`` names it, or None."""
    if not raw or not raw.get("Sharding"):
        return None
    owners = raw.get("Owners") if isinstance(raw.get("Owners"), dict) else {}
    candidate = owners.get(group_id)
    if not candidate:
        return None
    members = _members(raw)
    return {"candidate": candidate, "location": members.get(candidate), "live": candidate in members}


def main_body(m):
    client = m.client
    name = m.params["name"]
    status = client.status()
    groups = []
    specs = [s for s in client.inspect_groups() if isinstance(s, dict) and (name is None or s.get("ID") == name)]
    for spec in sorted(specs, key=lambda s: s.get("ID") or ""):
        description = client.describe_group(spec["ID"]) if m.params["instances"] else {}
        group = describe_group(spec["ID"], description, spec)
        group["spec"] = spec_to_module(spec)
        group["owner"] = group_owner(status, spec["ID"])
        groups.append(group)

    location = None
    try:
        location = client.leader_location()
    except RemoteError:
        # Go InfraKit's file backend answers an error until a leader has written its location.
        location = None
    leader = {"is_leader": client.is_leader(), "location": location}
    m.exit_json(changed=False, groups=groups, leader=leader, controller=controller_status(status))


def main():
    m = InfraKitModule(ARGUMENT_SPEC, supports_check_mode=True)
    m.run(main_body)


if __name__ == "__main__":
    main()
