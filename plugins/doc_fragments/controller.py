# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Connection options shared by every module and plugin that talks to the InfraKit controller."""

from __future__ import annotations


class ModuleDocFragment:

    # For modules: values come from the task, else the environment of the host running the module.
    DOCUMENTATION = r"""
options:
  controller_url:
    description:
      - Where the InfraKit controller (the manager daemon serving the Group interface) listens.
      - Either the path of its Unix socket (optionally written C(unix:///path/to/group)) or an
        C(https://host:port) URL of its TLS listener.
      - Plain C(http://) URLs are refused because the controller's TCP listener always uses TLS.
      - If not set, the environment variable E(INFRAKIT_CONTROLLER_URL) is used.
      - If that is not set either, the local socket C(group) in the plugin directory of the host
        running the module is used, resolved like InfraKit does it, that is
        C($INFRAKIT_PLUGINS_DIR/group), else C($INFRAKIT_HOME/plugins/group), else
        C(~/.infrakit/plugins/group).
    type: str
  controller_token:
    description:
      - Bearer token sent in the C(Authorization) header to the controller's https listener.
      - If not set, the environment variable E(INFRAKIT_CONTROLLER_TOKEN) is used.
      - Not needed for the Unix socket, which is protected by file permissions.
    type: str
  validate_certs:
    description:
      - Whether to verify the TLS certificate of an https O(controller_url).
      - Set to V(false) only for a controller on a trusted network with a self-signed certificate.
      - If not set, the environment variable E(INFRAKIT_VALIDATE_CERTS) is used (the AWX credential
        type in the collection's C(docs/awx.md) injects it), else V(true).
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the controller to answer one call.
      - A call that could not connect is retried three times with a short backoff; a call that
        got an answer, even an error, is never retried.
    type: int
    default: 30
notes:
  - All calls are JSON-RPC 2.0 requests as InfraKit defines them, so the options also work against
    Go InfraKit's manager, apart from the health and status details only this controller reports.
"""

    # For the inventory plugin: the same options, read through Ansible's configuration system.
    PLUGINS = r"""
options:
  controller_url:
    description:
      - Where the InfraKit controller (the manager daemon serving the Group interface) listens.
      - Either the path of its Unix socket (optionally written C(unix:///path/to/group)) or an
        C(https://host:port) URL of its TLS listener.
      - Defaults to the local socket C(group) in the plugin directory on the Ansible controller,
        that is C($INFRAKIT_PLUGINS_DIR/group), else C($INFRAKIT_HOME/plugins/group), else
        C(~/.infrakit/plugins/group).
    type: str
    env:
      - name: INFRAKIT_CONTROLLER_URL
  controller_token:
    description:
      - Bearer token sent in the C(Authorization) header to the controller's https listener.
    type: str
    env:
      - name: INFRAKIT_CONTROLLER_TOKEN
  validate_certs:
    description:
      - Whether to verify the TLS certificate of an https O(controller_url).
      - Set to V(false) only for a controller on a trusted network with a self-signed certificate.
    type: bool
    default: true
    env:
      - name: INFRAKIT_VALIDATE_CERTS
  timeout:
    description:
      - Seconds to wait for the controller to answer one call.
    type: int
    default: 30
"""
