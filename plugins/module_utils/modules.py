# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""The shared shape of every infrakit.core module: connection options once, errors one way, secrets masked.

Guarantee: a ``ControllerError`` or ``SpecError`` raised while a module runs ends in
``fail_json`` with its sentence (and JSON-RPC code and method when the controller
answered), never in a traceback. Every value under a secret-named key, in the options or in
what the controller answers, and every value of ``secret_values`` is masked in the result
(``invocation``, ``spec``, ``diff``, instance properties, messages) and in the invocation the
module logs: the values join Ansible's ``no_log_values``, so Ansible masks them wherever they
appear, and ``secrets.redact`` masks short ones under their key. Limit: other exceptions are
bugs and surface as such; what is masked is only what ``secrets`` says (see its limit).
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.infrakit.core.plugins.module_utils import secrets
from ansible_collections.infrakit.core.plugins.module_utils.controller import (
    CONTROLLER_ARGUMENT_SPEC,
    ControllerClient,
    ControllerError,
)
from ansible_collections.infrakit.core.plugins.module_utils.groups import SpecError

SECRETS_ARGUMENT_SPEC = dict(
    secret_values=dict(type="list", elements="str", no_log=True, default=[]),
)


class _MaskingModule(AnsibleModule):
    """An ``AnsibleModule`` that learns the secrets in its options before it logs its invocation.

    ``AnsibleModule.__init__`` logs the invocation (syslog or journal) before it returns, masking
    only ``no_log_values``; this hook adds the values under secret-named keys first and logs the
    options with those keys masked.
    """

    def _log_invocation(self):
        learn(self, self.params)
        params = self.params
        self.params = secrets.redact(params)
        try:
            super()._log_invocation()
        finally:
            self.params = params


def learn(module, value):
    """Add the values under secret-named keys in ``value`` to the module's ``no_log_values``."""
    module.no_log_values.update(secrets.everywhere(secrets.secret_values(value)))


class InfraKitModule:
    """An ``AnsibleModule`` with the controller and secret options added and a lazily built client."""

    def __init__(self, argument_spec, **kwargs):
        spec = dict(CONTROLLER_ARGUMENT_SPEC)
        spec.update(SECRETS_ARGUMENT_SPEC)
        spec.update(argument_spec)
        self.module = _MaskingModule(argument_spec=spec, **kwargs)
        # Also when the invocation was not logged (a task with no_log: true).
        learn(self.module, self.module.params)
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
            self.fail_json(changed=False, **e.to_result())
        except SpecError as e:
            self.fail_json(changed=False, msg=str(e))

    def exit_json(self, **result):
        self.module.exit_json(**self._masked(result))

    def fail_json(self, **result):
        self.module.fail_json(**self._masked(result))

    def _masked(self, result):
        """``result`` with secret keys masked and their values (from the controller too) added to
        ``no_log_values``, which AnsibleModule then removes from the whole result."""
        learn(self.module, result)
        masked = secrets.redact(result)
        masked["invocation"] = {"module_args": secrets.redact(self.module.params)}
        return masked
