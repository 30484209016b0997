# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
name: instances
short_description: InfraKit instances as hosts, InfraKit groups as Ansible groups
version_added: 0.1.0
description:
  - Asks the InfraKit controller for its groups (C(Group.InspectGroups)) and their instances
    (C(Group.DescribeGroup)), and adds every instance as a host in an Ansible group named after its
    InfraKit group.
  - Host variables carry the instance's tags, properties, health and address; C(ansible_host) is
    the host part of C(Properties.Address) (or C(Properties.Host)) when the instance plugin reports one.
  - Instances of the plugins in O(local_plugins) (the C(process) plugin) run on the controller's own
    host; when the controller is reached through its local Unix socket, that host is the one running
    the inventory, and they get C(ansible_connection=local) (see O(local_plugins)).
  - Uses a YAML configuration file whose name ends with C(infrakit.yml), C(infrakit.yaml),
    C(infrakit.instances.yml) or C(infrakit.instances.yaml).
author:
  - infrakit.core maintainers (@infrakit)
options:
  plugin:
    description: Marks this file as a configuration of this plugin.
    type: str
    required: true
    choices: [infrakit.core.instances]
  group_ids:
    description:
      - Only instances of these InfraKit groups. Empty means every group the controller manages.
      - A listed group the controller does not manage is an error when O(strict=true), else skipped.
    type: list
    elements: str
    default: []
  group_prefix:
    description:
      - Prefix of the Ansible group made for each InfraKit group. The result is sanitised into a
        valid group name (characters other than letters, digits and C(_) become C(_)).
    type: str
    default: ""
  hostnames:
    description:
      - Preferences for the inventory hostname of an instance; the first one that has a value wins,
        and the instance ID is the last resort.
      - V(id) is the instance ID, V(logical_id) its logical ID (pets), V(address) the reported
        address (C(host:port)), V(host) the host part of the address, V(tag:NAME) the value of the
        tag C(NAME).
      - A name already taken by another instance falls through to the next preference.
    type: list
    elements: str
    default: [logical_id, id]
  ansible_host:
    description:
      - Set C(ansible_host) to the host part of the instance's reported address.
    type: bool
    default: true
  local_plugins:
    description:
      - Instance plugins (the socket part of C(Plugin), so V(process) covers C(process/batch)) whose
        instances run on the host of the controller itself, as the C(process) plugin's local
        processes do.
      - When O(controller_url) is a Unix socket, the controller runs where this inventory runs, and
        these instances get C(ansible_connection=local) and, as Ansible's implicit C(localhost) does,
        C(ansible_python_interpreter) set to the Python running Ansible, so tasks reach them without SSH.
      - Through an https O(controller_url) they get no connection variables; they run on the
        controller's host, so set C(ansible_host) to it with O(compose) (see the examples).
      - O(compose) is applied after, so it can set another C(ansible_connection).
    type: list
    elements: str
    default: [process]
extends_documentation_fragment:
  - constructed
  - inventory_cache
  - infrakit.core.controller.plugins
  - infrakit.core.secrets.plugins
notes:
  - Host variables set by this plugin are C(infrakit_id), C(infrakit_group), C(infrakit_logical_id),
    C(infrakit_tags), C(infrakit_properties), C(infrakit_address), C(infrakit_health) and
    C(infrakit_up_to_date) (health and up-to-date are only known from this collection's controller),
    plus C(ansible_host) and, for O(local_plugins), C(ansible_connection) and C(ansible_python_interpreter).
seealso:
  - module: infrakit.core.group
  - module: infrakit.core.group_info
"""

EXAMPLES = r"""
# web.infrakit.yml: only the web group, named by a tag, with constructed groups and variables.
# (The smallest source, infrakit.instances.yml as docs/awx.md names it, is the plugin line alone:
# every instance of every group, named by logical ID or instance ID, from the controller that
# INFRAKIT_CONTROLLER_URL names, which the AWX credential type injects.)
plugin: infrakit.core.instances
group_ids: [web]
group_prefix: infrakit_
hostnames:
  - tag:Name
  - address
compose:
  health_url: "'http://' ~ infrakit_address ~ '/'"
keyed_groups:
  - key: infrakit_tags.tier
    prefix: tier
  - key: infrakit_health
    prefix: health
groups:
  outdated: not (infrakit_up_to_date | default(true))
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: /tmp/infrakit-inventory
cache_timeout: 60
# A controller over TLS (token from INFRAKIT_CONTROLLER_TOKEN) instead of the local socket; its
# process instances run on the controller's host, so reach them there over SSH:
# controller_url: https://infrakit.example.com:24864
# strict: true
# compose:
#   ansible_host: "'infrakit.example.com'"
"""

import re
import sys

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.infrakit.core.plugins.module_utils import secrets
from ansible_collections.infrakit.core.plugins.module_utils.controller import (
    ControllerClient,
    ControllerError,
    RemoteError,
    parse_controller_url,
)
from ansible_collections.infrakit.core.plugins.module_utils.groups import address_host, describe_group

_UNSAFE_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")

FILE_SUFFIXES = ("infrakit.yml", "infrakit.yaml", "infrakit.instances.yml", "infrakit.instances.yaml")


def sanitize_group_name(name):
    out = _UNSAFE_GROUP_CHARS.sub("_", name)
    if not out or out[0].isdigit():
        out = "_" + out
    return out


def plugin_socket(name):
    """The socket part of a plugin name ``socket[/type]``."""
    return (name or "").split("/", 1)[0]


def hostname_for(instance, preferences):
    """The candidate names of an instance in preference order (the ID last)."""
    out = []
    for pref in preferences:
        if pref == "id":
            value = instance.get("id")
        elif pref == "logical_id":
            value = instance.get("logical_id")
        elif pref == "address":
            value = instance.get("address")
        elif pref == "host":
            value = address_host(instance.get("address"))
        elif pref.startswith("tag:"):
            value = (instance.get("tags") or {}).get(pref[len("tag:"):])
        else:
            raise AnsibleError(
                "hostnames: unknown preference %r; use id, logical_id, address, host or tag:NAME" % pref)
        if value:
            out.append(str(value))
    out.append(instance["id"])
    return out


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "infrakit.core.instances"

    def __init__(self):
        super().__init__()
        self._hidden = set()

    def verify_file(self, path):
        if not super().verify_file(path):
            return False
        return path.endswith(FILE_SUFFIXES)

    def _client(self):
        try:
            return ControllerClient(
                url=self.get_option("controller_url"),
                token=self.get_option("controller_token"),
                validate_certs=self.get_option("validate_certs"),
                timeout=self.get_option("timeout"),
            )
        except ValueError as e:
            raise AnsibleError("infrakit.core.instances: %s" % to_native(e))

    def fetch(self):
        """Every selected group with its described instances, secrets masked, as plain data (what is cached)."""
        self._hidden = set(self.get_option("secret_values") or [])
        try:
            return secrets.mask(self._fetch(), self._hidden)
        except AnsibleError as e:
            # A message may quote a spec; the exception it came from is left out for the same reason.
            raise AnsibleError(secrets.mask(to_native(e.message), self._hidden)) from None

    def _fetch(self):
        client = self._client()
        wanted = self.get_option("group_ids") or []
        strict = self.get_option("strict")
        try:
            specs = {s["ID"]: s for s in client.inspect_groups() if isinstance(s, dict) and s.get("ID")}
            self._hidden |= secrets.everywhere(secrets.secret_values(specs))
            missing = [g for g in wanted if g not in specs]
            if missing and strict:
                raise AnsibleError("infrakit.core.instances: the controller manages no group %s (it manages: %s)"
                                   % (", ".join(missing), ", ".join(sorted(specs)) or "none"))
            ids = [g for g in wanted if g in specs] if wanted else sorted(specs)
            groups = []
            for group_id in ids:
                try:
                    description = client.describe_group(group_id)
                except RemoteError as e:
                    if strict:
                        raise
                    self.display.warning(secrets.mask("infrakit.core.instances: skipping group %s: %s"
                                                      % (group_id, e.message), self._hidden))
                    continue
                group = describe_group(group_id, description, specs[group_id])
                group["instance_plugin"] = ((specs[group_id].get("Properties") or {}).get("Instance") or {}).get("Plugin")
                groups.append(group)
            return groups
        except ControllerError as e:
            raise AnsibleError("infrakit.core.instances: %s" % e.message)

    def local_connection(self, group):
        """Whether the group's instances run where this inventory runs (see ``local_plugins``)."""
        try:
            unix_socket, _url = parse_controller_url(self.get_option("controller_url"))
        except ValueError:
            return False
        return unix_socket is not None and plugin_socket(group.get("instance_plugin")) in self.get_option("local_plugins")

    def populate(self, groups):
        preferences = self.get_option("hostnames")
        prefix = self.get_option("group_prefix")
        strict = self.get_option("strict")
        taken = set()
        for group in groups:
            ansible_group = self.inventory.add_group(sanitize_group_name(prefix + group["id"]))
            local = self.local_connection(group)
            for instance in group["instances"]:
                name = next(n for n in hostname_for(instance, preferences) if n not in taken)
                taken.add(name)
                self.inventory.add_host(name, group=ansible_group)
                hostvars = {
                    "infrakit_id": instance["id"],
                    "infrakit_group": group["id"],
                    "infrakit_logical_id": instance["logical_id"],
                    "infrakit_tags": instance["tags"],
                    "infrakit_properties": instance["properties"],
                    "infrakit_address": instance["address"],
                    "infrakit_health": instance["health"],
                    "infrakit_up_to_date": instance["up_to_date"],
                }
                if self.get_option("ansible_host") and instance["address"]:
                    hostvars["ansible_host"] = address_host(instance["address"])
                if local:
                    # As Ansible does for its implicit localhost: no SSH, and the Python running Ansible.
                    hostvars["ansible_connection"] = "local"
                    hostvars["ansible_python_interpreter"] = sys.executable
                for key, value in hostvars.items():
                    self.inventory.set_variable(name, key, value)
                self._set_composite_vars(self.get_option("compose"), hostvars, name, strict=strict)
                # Composed variables are visible to the conditional and keyed groups.
                allvars = self.inventory.get_host(name).get_vars()
                self._add_host_to_composed_groups(self.get_option("groups"), allvars, name, strict=strict)
                self._add_host_to_keyed_groups(self.get_option("keyed_groups"), allvars, name, strict=strict)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        groups = None
        if use_cache:
            try:
                groups = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if groups is None:
            groups = self.fetch()
        if update_cache:
            self._cache[cache_key] = groups
        self.populate(groups)
