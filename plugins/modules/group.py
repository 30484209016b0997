#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
module: group
short_description: Declare an InfraKit group and let the controller keep it that way
version_added: 0.1.0
description:
  - Commits the spec of a group of instances (cattle with a O(size), or pets with O(logical_ids))
    to the InfraKit controller, which then creates, heals, scales and rolls instances until
    reality matches it.
  - The options are merged over the stored spec (see O(purge)) and sent as given; the controller
    alone reads the spec's grammar. It answers the spec in its canonical form (every default
    spelled out, durations as Go text such as V(10m0s)) and whether it differs from the one it
    enforces; the module reports that as C(changed), C(spec) and the diff. A value the controller
    refuses (for example V(12.5%)) fails the task with the field named, and nothing changes.
  - Against Go InfraKit, which answers no canonical form, the spec is compared with the stored
    one as it is.
  - The module first asks the controller for the plan (C(Pretend)) and commits only when the spec
    changed. In check mode it stops there; the plan text is returned and nothing changes.
  - With O(wait=true) the module returns once the group is converged and healthy, and fails
    naming the instances that are missing, outdated or unhealthy when it is not within
    O(wait_timeout).
  - O(state=absent) destroys the group and all its instances (with O(wait=true), waiting up to
    O(wait_timeout) for the controller to destroy them and confirming the group is gone);
    O(state=freed) stops managing the group and leaves its instances running.
author:
  - infrakit.core maintainers (@infrakit)
options:
  name:
    description:
      - The group ID. Instances carry it in their C(infrakit.group) tag.
    type: str
    required: true
    aliases: [id]
  state:
    description:
      - V(present) commits the spec.
      - V(absent) destroys the group and every instance in it.
      - V(freed) stops managing the group but leaves its instances alone.
    type: str
    choices: [present, absent, freed]
    default: present
  size:
    description:
      - Number of interchangeable instances (cattle).
      - Required with O(instance) and O(flavor) to create a group. For an existing group,
        setting O(size) alone rescales it and keeps the rest of the stored spec.
      - V(0) is a valid size, for a group that exists with no instances.
    type: int
  logical_ids:
    description:
      - One instance per logical ID (pets), for example fixed IP addresses.
      - Mutually exclusive with O(size).
    type: list
    elements: str
  instance:
    description:
      - The instance plugin and the properties it provisions each instance from.
      - Required to create a group; for an existing group, left out means keep the stored one.
      - Given for an existing group, the suboptions given replace the stored ones and the others
        are kept, unless O(purge=true).
    type: dict
    suboptions:
      plugin:
        description:
          - The instance plugin name, C(socket[/type]), for example V(process) or V(aws/ec2-instance).
        type: str
        required: true
      properties:
        description:
          - The plugin's own properties, passed through unchanged (a change rolls the instances).
        type: raw
      options:
        description:
          - InfraKit's C(Options) beside the plugin name, kept and compared, never hashed (a change
            does not roll instances).
        type: raw
  flavor:
    description:
      - The flavor plugin and its properties (init script, tags, health probe).
      - Required to create a group; for an existing group, left out means keep the stored one.
      - Given for an existing group, the suboptions given replace the stored ones and the others
        are kept, unless O(purge=true).
    type: dict
    suboptions:
      plugin:
        description:
          - The flavor plugin name, for example V(vanilla).
        type: str
        required: true
      properties:
        description:
          - The plugin's own properties, passed through unchanged (a change rolls the instances).
          - "For V(vanilla): C(Init), C(Tags) and C(Health), for example C(HTTP: http://{{address}}/healthz).
            Mark such values C(!unsafe) so Ansible does not template the braces."
        type: raw
      options:
        description:
          - InfraKit's C(Options) beside the plugin name, kept and compared, never hashed.
        type: raw
  updating:
    description:
      - How a rolling update replaces instances after the instance or flavor section changed.
      - Only the instance and flavor sections are hashed, so changing this never rolls instances.
      - Left out for an existing group means keep the stored policy; given, its suboptions are
        merged over the stored ones (with O(purge=true) it replaces the stored policy, and unset
        suboptions fall back to the controller defaults).
      - "Durations are Go text such as V(30s), V(1m30s) or V(250ms); a number means seconds."
    type: dict
    suboptions:
      max_surge:
        description:
          - Extra instances allowed above the desired count during an update, a number or a
            percentage such as V(25%). The controller default is V(1).
        type: raw
      max_unavailable:
        description:
          - Instances allowed below the desired count during an update, a number or a
            percentage. The controller default is V(0).
        type: raw
      progress_deadline:
        description:
          - How long an update may make no progress before the controller reports it stalled,
            as a duration such as V(10m) or a number of seconds. The controller default is V(600s).
        type: raw
      duration:
        description:
          - InfraKit's pause between replacing two instances, as a duration. Default V(0s).
        type: raw
      count:
        description:
          - InfraKit's number of instances replaced per step (V(0) lets the controller decide).
        type: int
      skip_before_instance_destroy:
        description:
          - InfraKit's C(SkipBeforeInstanceDestroy); any value skips the flavor's drain before a
            rolling update destroys an instance. The controller default is null.
        type: raw
      quorum:
        description:
          - For pets whose members vote, such as etcd members. V(true) makes the controller change one
            member at a time, never remove an answering member below a majority, and do nothing while
            a majority does not answer, whatever O(updating.max_unavailable) says. The controller
            default is V(false).
        type: bool
  health:
    description:
      - When the controller considers an instance unhealthy and replaces it.
      - Left out for an existing group means keep the stored policy; given, its suboptions are
        merged over the stored ones (replacing them with O(purge=true)).
    type: dict
    suboptions:
      grace_period:
        description:
          - Time after creation during which failed health checks are ignored, as a duration.
            The controller default is V(30s).
        type: raw
      unhealthy_threshold:
        description:
          - Consecutive failed checks before an instance is replaced. The controller default is V(3).
        type: int
      healthy_threshold:
        description:
          - Consecutive passed checks before an instance counts as healthy again. The controller
            default is V(1).
        type: int
      max_unhealthy:
        description:
          - When more of the group than this (a number or a percentage) is unhealthy at once, the
            controller stops replacing instances (the cloud is sick, not the instances). The
            controller default is V(40%).
        type: raw
      interval:
        description:
          - How often to check each instance's health, as a duration. The controller default is
            null (its poll interval decides).
        type: raw
  purge:
    description:
      - With V(false), a section given (O(instance), O(flavor), O(updating), O(health)) is merged
        into the stored one key by key, so keys set by another tool (InfraKit's CLI, a playbook
        that set other suboptions) are kept.
      - With V(true), each section given replaces the stored one whole; sections left out are
        still kept.
    type: bool
    default: false
  wait:
    description:
      - For O(state=present), wait until the controller reports the group converged and healthy.
      - For O(state=absent), give the controller up to O(wait_timeout) (instead of O(timeout)) to
        destroy the instances, then confirm it no longer lists the group. With V(false) the destroy
        request must be answered within O(timeout).
      - Ignored in check mode and for O(state=freed).
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait when O(wait=true).
    type: int
    default: 300
extends_documentation_fragment:
  - infrakit.core.controller
  - infrakit.core.secrets
attributes:
  check_mode:
    support: full
    description: The controller plans the commit (C(Pretend)) and returns the plan; nothing changes.
  diff_mode:
    support: full
    description: The spec before and after, in the module's option names.
  platform:
    support: full
    platforms: posix
    description: Runs where the controller socket or URL is reachable, usually C(localhost) or the controller host.
  action_group:
    support: full
    description: Use C(group/infrakit.core.infrakit) in C(module_defaults) to set the connection options.
    membership:
      - infrakit.core.infrakit
notes:
  - The group's spec is sent to the controller as InfraKit's C({ID, Properties}) with C(Allocation),
    C(Instance), C(Flavor), C(Updating) and C(Health) sections; every field of them has an option.
  - A group committed with InfraKit's CLI reports C(changed=false) from this module when the
    options say the same, however either spelled it.
  - Against Go InfraKit the module works too, but instance health, up-to-date flags and counts are
    only reported by this collection's controller.
seealso:
  - module: infrakit.core.group_info
  - plugin: infrakit.core.instances
    plugin_type: inventory
"""

EXAMPLES = r"""
- name: Three web servers as local processes, checked over HTTP
  infrakit.core.group:
    name: web
    size: 3
    instance:
      plugin: process
      properties:
        # A string runs under /bin/sh -c, so the PORT the process plugin exports expands.
        Command: python3 -m http.server --bind 127.0.0.1 $PORT
    flavor:
      plugin: vanilla
      properties:
        Tags: {tier: web}
        Health:
          HTTP: !unsafe "http://{{address}}/"
    updating:
      max_surge: 1
      max_unavailable: 0
    health:
      grace_period: 10s
      unhealthy_threshold: 3
  register: web

- name: Show the controller's plan
  ansible.builtin.debug:
    var: web.plan

- name: What would scaling to 5 do? (nothing changes in check mode)
  infrakit.core.group:
    name: web
    size: 5
  check_mode: true
  register: preview

- name: Scale to 5 and wait until all are up and healthy
  infrakit.core.group:
    name: web
    size: 5
    wait_timeout: 120

- name: Check health every 15s; the rest of the stored health policy is kept
  infrakit.core.group:
    name: web
    health:
      interval: 15s

- name: Replace the whole update policy (unset keys go back to the controller defaults)
  infrakit.core.group:
    name: web
    updating:
      max_surge: 25%
    purge: true

- name: Pets with fixed logical IDs, through a remote controller
  infrakit.core.group:
    name: db
    logical_ids: [10.0.0.11, 10.0.0.12, 10.0.0.13]
    instance:
      plugin: aws/ec2-instance
      properties:
        RunInstancesInput: {ImageId: ami-0123456789abcdef0, InstanceType: t3.small}
    flavor:
      plugin: vanilla
      properties:
        Init: [systemctl start postgresql]
    controller_url: https://infrakit.example.com:24864
    controller_token: "{{ vault_infrakit_token }}"

- name: Set the connection once for every infrakit.core module
  module_defaults:
    group/infrakit.core.infrakit:
      controller_url: /var/lib/infrakit/plugins/group
  block:
    - name: Stop managing the db group but keep its instances
      infrakit.core.group:
        name: db
        state: freed

    - name: Destroy the web group and its instances
      infrakit.core.group:
        name: web
        state: absent
"""

RETURN = r"""
plan:
  description:
    - The controller's plan for the committed spec (in check mode, for the spec that would be committed),
      for example C(Managing 3 instances) or C(Performing a rolling update on 2 instances).
    - When the spec was already current, the controller's latest plan if it reports one.
  returned: state is present
  type: str
  sample: Adding 2 instances to increase the group size to 5
spec:
  description:
    - The group's spec as committed (or, in check mode, as it would be), in the module's option names.
    - From this collection's controller, its canonical form with every default spelled out; from Go
      InfraKit, the spec as sent.
  returned: state is present
  type: dict
  sample:
    name: web
    size: 3
    instance: {plugin: process, properties: {Command: python3 -m http.server $PORT}}
    flavor: {plugin: vanilla, properties: {Tags: {tier: web}}}
    updating: {duration: 0s, count: 0, skip_before_instance_destroy: null, max_surge: 1, max_unavailable: 0,
               progress_deadline: 10m0s}
    health: {grace_period: 30s, unhealthy_threshold: 3, healthy_threshold: 1, max_unhealthy: 40%, interval: null}
destroyed:
  description: The instances the group had when O(state=absent) destroyed it (in check mode, would destroy).
  returned: state is absent and the group existed
  type: list
  elements: str
  sample: [process-8f2c, process-9a1d]
id:
  description: The group ID.
  returned: always
  type: str
  sample: web
converged:
  description: Whether the controller reports the group converged (false in check mode for a group not created yet).
  returned: state is present
  type: bool
  sample: true
condition:
  description: The controller's condition for the group, such as C(Converged), C(Scaling) or C(RollingUpdate); null from Go InfraKit.
  returned: state is present
  type: str
  sample: Converged
reason:
  description: Why the group is in its condition, when the controller says.
  returned: state is present
  type: str
  sample: null
last_error:
  description: The controller's last error acting on the group, if any.
  returned: state is present
  type: str
  sample: null
events:
  description:
    - The group's most recent controller events, oldest first, each with C(seq), C(time), C(kind), C(instance) and C(reason).
    - Empty against Go InfraKit.
  returned: state is present
  type: list
  elements: dict
  sample: [{seq: 7, time: 1795600019.0, kind: provisioned, instance: process-1, reason: increasing the group to 3 instances}]
counts:
  description: Instance counts; only C(desired) and C(running) are known against Go InfraKit.
  returned: state is present
  type: dict
  contains:
    desired:
      description: Instances the spec asks for.
      type: int
    running:
      description: Instances that exist.
      type: int
    healthy:
      description: Instances whose health check passes.
      type: int
    unhealthy:
      description: Instances whose health check fails.
      type: int
    pending:
      description: Instances being created.
      type: int
    outdated:
      description: Instances still on an older instance or flavor section.
      type: int
  sample: {desired: 3, running: 3, healthy: 3, unhealthy: 0, pending: 0, outdated: 0}
instances:
  description: The group's instances.
  returned: state is present
  type: list
  elements: dict
  contains:
    id:
      description: The instance ID from the instance plugin.
      type: str
    logical_id:
      description: The logical ID, for pets.
      type: str
    tags:
      description: The instance's tags, including C(infrakit.group) and C(infrakit.config.hash).
      type: dict
    properties:
      description: What the instance plugin reports about the instance.
      type: raw
    address:
      description: C(Properties.Address) (or C(Host)) when the instance plugin reports one.
      type: str
    health:
      description: C(healthy), C(unhealthy) or C(unknown).
      type: str
    up_to_date:
      description: Whether the instance runs the current instance and flavor sections; null when unknown.
      type: bool
  sample:
    - id: process-8f2c
      logical_id: null
      tags: {infrakit.group: web, infrakit.config.hash: mvxacvjmbbjytlvshmkgzggqgg3zequ3, tier: web}
      properties: {Address: "127.0.0.1:40123", PID: 4242}
      address: "127.0.0.1:40123"
      health: healthy
      up_to_date: true
rpc_code:
  description: The JSON-RPC error code when the controller refused a call.
  returned: failure and the controller answered with an error
  type: int
  sample: -32000
rpc_method:
  description: The JSON-RPC method that failed.
  returned: failure
  type: str
  sample: Group.CommitGroup
"""

import time

from ansible_collections.infrakit.core.plugins.module_utils.controller import ControllerError
from ansible_collections.infrakit.core.plugins.module_utils.groups import (
    build_spec,
    describe_group,
    is_settled,
    plainly_equal,
    spec_to_module,
    unsettled_report,
)
from ansible_collections.infrakit.core.plugins.module_utils.modules import InfraKitModule

POLL_INTERVAL = 2.0

_PLUGIN_OPTIONS = dict(
    plugin=dict(type="str", required=True),
    properties=dict(type="raw"),
    options=dict(type="raw"),
)

ARGUMENT_SPEC = dict(
    name=dict(type="str", required=True, aliases=["id"]),
    state=dict(type="str", default="present", choices=["present", "absent", "freed"]),
    size=dict(type="int"),
    logical_ids=dict(type="list", elements="str"),
    instance=dict(type="dict", options=_PLUGIN_OPTIONS),
    flavor=dict(type="dict", options=_PLUGIN_OPTIONS),
    updating=dict(
        type="dict",
        options=dict(
            max_surge=dict(type="raw"),
            max_unavailable=dict(type="raw"),
            progress_deadline=dict(type="raw"),
            duration=dict(type="raw"),
            count=dict(type="int"),
            skip_before_instance_destroy=dict(type="raw"),
            quorum=dict(type="bool"),
        ),
    ),
    health=dict(
        type="dict",
        options=dict(
            grace_period=dict(type="raw"),
            unhealthy_threshold=dict(type="int"),
            healthy_threshold=dict(type="int"),
            max_unhealthy=dict(type="raw"),
            interval=dict(type="raw"),
        ),
    ),
    purge=dict(type="bool", default=False),
    wait=dict(type="bool", default=True),
    wait_timeout=dict(type="int", default=300),
)


def _empty_group(group_id):
    return describe_group(group_id, {}, None)


def wait_until_settled(client, spec, timeout, clock=time.monotonic, sleep=time.sleep):
    """Poll DescribeGroup until the group is converged; return ``(group, settled)``."""
    deadline = clock() + timeout
    while True:
        description = client.describe_group(spec["ID"])
        group = describe_group(spec["ID"], description, spec)
        if is_settled(description):
            return group, True
        remaining = deadline - clock()
        if remaining <= 0:
            return group, False
        sleep(min(POLL_INTERVAL, remaining))


def judge(desired, stored, answer):
    """``(changed, before, after)``: the controller's verdict and canonical forms, or plain equality
    against Go InfraKit, which answers neither."""
    if answer["changed"] is None:
        return not plainly_equal(desired, stored), stored, desired
    return answer["changed"], answer["previous"], answer["spec"]


def ensure_present(m, stored):
    params = m.params
    client = m.client
    name = params["name"]
    exists = stored is not None
    desired = build_spec(params, stored, purge=params["purge"])
    # The controller validates, plans and judges; Pretend never acts.
    answer = client.commit_group(desired, pretend=True, exists=exists)
    changed, before, after = judge(desired, stored, answer)
    result = dict(changed=changed, spec=spec_to_module(after))
    if m.diff_mode:
        result["diff"] = dict(before=spec_to_module(before) or {}, after=spec_to_module(after))

    if m.check_mode:
        group = describe_group(name, client.describe_group(name), stored) if exists else _empty_group(name)
        group["plan"] = answer["details"]
        result.update(group)
        m.exit_json(**result)

    plan = None
    if changed:
        committed = client.commit_group(desired, pretend=False, exists=exists)
        plan = committed["details"]
        if committed["spec"] is not None:
            result["spec"] = spec_to_module(committed["spec"])
    try:
        if params["wait"]:
            group, settled = wait_until_settled(client, desired, params["wait_timeout"])
        else:
            group = describe_group(name, client.describe_group(name), desired)
            settled = True
    except ControllerError as e:
        # The commit has happened: say so.
        m.fail_json(changed=changed, plan=plan, **e.to_result())
    if plan is not None:
        group["plan"] = plan
    result.update(group)
    if not settled:
        result["msg"] = "group %s did not converge within %ss: %s" % (
            name, params["wait_timeout"], unsettled_report(group, desired))
        m.fail_json(**result)
    m.exit_json(**result)


def wait_until_gone(client, group_id, timeout, clock=time.monotonic, sleep=time.sleep):
    """Poll InspectGroups until the controller no longer lists the group; return whether it did."""
    deadline = clock() + timeout
    while True:
        if client.find_group(group_id) is None:
            return True
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        sleep(min(POLL_INTERVAL, remaining))


def ensure_gone(m, stored, state):
    params = m.params
    name = params["name"]
    result = dict(changed=stored is not None, id=name)
    if m.diff_mode:
        result["diff"] = dict(before=spec_to_module(stored) or {}, after={})
    if stored is None:
        m.exit_json(**result)
    if state == "freed":
        if not m.check_mode:
            m.client.free_group(name)
        m.exit_json(**result)

    members = [i["id"] for i in describe_group(name, m.client.describe_group(name), stored)["instances"]]
    result["destroyed"] = members
    if m.check_mode:
        m.exit_json(**result)
    started = time.monotonic()
    if params["wait"]:
        # The controller answers once it has destroyed every member: give it the wait, not the call timeout.
        m.client.timeout = max(m.client.timeout, params["wait_timeout"])
    m.client.destroy_group(name)
    if params["wait"]:
        remaining = max(0.0, params["wait_timeout"] - (time.monotonic() - started))
        if not wait_until_gone(m.client, name, remaining):
            result["msg"] = ("group %s was destroyed but the controller still lists it after %ss (was it "
                             "committed again meanwhile?)" % (name, params["wait_timeout"]))
            m.fail_json(**result)
    m.exit_json(**result)


def main_body(m):
    params = m.params
    name = params["name"].strip()
    if not name or "/" in name:
        m.fail_json(msg="name must be a non-empty group ID without '/', got %r" % params["name"])
    if params["wait_timeout"] < 0:
        m.fail_json(msg="wait_timeout must be 0 or more, got %d" % params["wait_timeout"])
    params["name"] = name
    stored = m.client.find_group(name)
    if params["state"] == "present":
        ensure_present(m, stored)
    else:
        ensure_gone(m, stored, params["state"])


def main():
    m = InfraKitModule(
        ARGUMENT_SPEC,
        supports_check_mode=True,
        mutually_exclusive=[("size", "logical_ids")],
    )
    m.run(main_body)


if __name__ == "__main__":
    main()
