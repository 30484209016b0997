"""An instance as an Ansible host: the variables a playbook sees, and which configuration it is due.

Guarantee: pure functions of an instance description. The host variables carry the names the
``infrakit.core.instances`` inventory plugin sets (``infrakit_id``, ``infrakit_group``,
``infrakit_logical_id``, ``infrakit_tags``, ``infrakit_properties``, ``infrakit_address``,
``ansible_host``), so one playbook serves both the flavor and an inventory-driven run.
Limit: ``infrakit_health`` and ``infrakit_up_to_date`` are the controller's judgement and are
not known here (the instance is being configured: it is neither yet).
"""

from __future__ import annotations

from typing import Any

from infrakit_runtime.plugins.flavor.ansible.props import Connection
from infrakit_runtime.spi import instance

# Set on an instance once its playbook has succeeded, to the config hash it was configured for.
TAG_CONFIGURED = "infrakit.ansible.configured"


def config_of(d: instance.Description) -> str | None:
    """The configuration an instance is due: its ``infrakit.config.hash`` tag; None while it has none
    (not made by a group controller) or is still ``bootstrap`` (the controller relabels it first)."""
    value = d.tags.get(instance.TAG_CONFIG_HASH)
    if not value or value == instance.BOOTSTRAP_CONFIG_HASH:
        return None
    return value


def configured(d: instance.Description) -> bool:
    """Whether the instance says it was configured for the configuration it is due (the tag)."""
    config = config_of(d)
    return config is not None and d.tags.get(TAG_CONFIGURED) == config


def address(d: instance.Description) -> str | None:
    """``Properties.Address`` (or ``Host``) as the instance plugin reports it, as the inventory plugin reads it."""
    props = d.properties if isinstance(d.properties, dict) else {}
    for key in ("Address", "Host"):
        value = props.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def address_host(value: str | None) -> str | None:
    """The host part of ``host:port``, ``[v6]:port`` or ``host``."""
    if not value:
        return None
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def host_vars(d: instance.Description, connection: Connection) -> dict[str, Any]:
    """The inventory variables of the instance's host for one run."""
    addr = address(d)
    out: dict[str, Any] = {
        "infrakit_id": d.id,
        "infrakit_group": d.tags.get(instance.TAG_GROUP),
        "infrakit_logical_id": d.logical_id or d.tags.get(instance.TAG_LOGICAL_ID),
        "infrakit_tags": dict(d.tags),
        "infrakit_properties": d.properties,
        "infrakit_address": addr,
        "ansible_connection": connection.type,
    }
    host = address_host(addr) or d.logical_id
    if host:
        out["ansible_host"] = host
    if connection.type == "local":
        # The flavor's own interpreter has what Ansible's modules need; a playbook can still override it.
        out["ansible_python_interpreter"] = "{{ ansible_playbook_python }}"
    else:
        if connection.user:
            out["ansible_user"] = connection.user
        if connection.port:
            out["ansible_port"] = connection.port
        if connection.private_key_file:
            out["ansible_ssh_private_key_file"] = connection.private_key_file
        if not connection.host_key_checking:
            # New instances bring new host keys (AWX's default too): do not prompt, do not remember them.
            out["ansible_ssh_common_args"] = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
    if connection.become:
        out["ansible_become"] = True
        if connection.become_user:
            out["ansible_become_user"] = connection.become_user
    return out


def reachable(d: instance.Description, connection: Connection) -> bool:
    """Whether a run could reach the instance: a local run always; an ssh run needs an address."""
    return connection.type == "local" or bool(address_host(address(d)) or d.logical_id)
