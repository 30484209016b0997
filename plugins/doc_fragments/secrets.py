# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""How every module and plugin of infrakit.core keeps secrets out of its output."""

from __future__ import annotations


class ModuleDocFragment:

    # For modules.
    DOCUMENTATION = r"""
options:
  secret_values:
    description:
      - Values to mask wherever they appear in the module's result and in the invocation it logs,
        for secrets that are not under a secret-named key, such as a password inside a
        C(Command) or an C(Init) script.
      - Values under a key that names a secret are masked without being listed, see the notes.
      - This option is itself C(no_log).
    type: list
    elements: str
    default: []
notes:
  - Values under a key that names a secret (one containing C(password), C(passwd), C(secret),
    C(token) or C(credential), or C(private), C(api), C(access) or C(secret) followed by C(key), in
    any case and with any separator, for example C(Env.DB_PASSWORD) or C(SecretAccessKey)) are
    masked, at any depth, in everything the module returns (C(invocation), C(spec), C(diff),
    instance C(properties) and C(tags), messages), C(-vvv) included, and in the invocation it logs.
    It is the rule the controller's daemons use for their own logs.
  - Such values, and O(secret_values), join Ansible's C(no_log) values, so a copy anywhere else in
    the output is masked too; a value shorter than four characters, or a word such as C(true) or
    C(no), is masked only under its key.
  - Only the output is masked; the controller receives and stores the real values, and a change of
    a secret is still reported as a change.
"""

    # For the inventory plugin.
    PLUGINS = r"""
options:
  secret_values:
    description:
      - Values to mask wherever they appear in the host variables, for secrets that are not under
        a secret-named key, such as a password inside a C(Command).
      - Values under a key that names a secret are masked without being listed, see the notes.
    type: list
    elements: str
    default: []
notes:
  - Values under a key that names a secret (one containing C(password), C(passwd), C(secret),
    C(token) or C(credential), or C(private), C(api), C(access) or C(secret) followed by C(key), in
    any case and with any separator) are masked in the host variables (C(infrakit_properties),
    C(infrakit_tags)) and in the inventory cache, as are the values of O(secret_values) wherever
    they appear; the controller's daemons use the same rule for their own logs.
"""
