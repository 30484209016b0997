# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""The shared shape of every infrakit.core module: connection options once, errors one way.

Guarantee: a ``ControllerError`` or ``SpecError`` raised while a module runs ends in
``fail_json`` with its sentence (and JSON-RPC code and method when the controller
answered), never in a traceback. Limit: other exceptions are bugs and surface as such.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.infrakit.core.plugins.module_utils.controller import (
    CONTROLLER_ARGUMENT_SPEC,
    ControllerClient,
    ControllerError,
)
from ansible_collections.infrakit.core.plugins.module_utils.groups import SpecError


class InfraKitModule:
    """An ``AnsibleModule`` with the controller options added and a lazily built client."""

    def __init__(self, argument_spec, **kwargs):
        spec = dict(CONTROLLER_ARGUMENT_SPEC)
        spec.update(argument_spec)
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        self._client = None

    @property
    def params(self):
        return self.module.params

    @property
    def check_mode(self):
        return self.module.check_mode

    @property
    def diff_mode(self):
        return self.module._diff

    @property
    def client(self):
        if self._client is None:
            self._client = ControllerClient.from_params(self.module.params)
        return self._client

    def run(self, body):
        """Call ``body(self)`` and turn the errors it may raise into ``fail_json``."""
        try:
            body(self)
        except ControllerError as e:
            self.module.fail_json(changed=False, **e.to_result())
        except SpecError as e:
            self.module.fail_json(changed=False, msg=str(e))

    def exit_json(self, **result):
        self.module.exit_json(**result)

    def fail_json(self, **result):
        self.module.fail_json(**result)
