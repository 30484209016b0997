# -*- coding: utf-8 -*-
# Copyright: infrakit.core contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Secrets out of what the modules and the inventory plugin return and log.

Guarantee: a value under a key that names a secret (``password``, ``passwd``, ``secret``,
``token``, ``credential``, and ``private``/``api``/``access``/``secret`` followed by ``key``, in
any case and with any separator: ``DB_PASSWORD``, ``SecretAccessKey``, ``api-key``) is masked
under its key at any depth, and, together with every value the user lists, wherever else it is
copied (a plan text, an error message, a command line). The key rule is the daemons' own
(``infrakit_runtime/rpc/redact.py``), mirrored here because module_utils may import only the
standard library and ``ansible.module_utils``; a unit test holds both to one table of keys.

Limit: only keys are judged, never values: a secret in free text (an ``Init`` script, a
``Command``) is masked only when the user lists it. A value under a secret key that is shorter
than four characters or a flag word (``true``, ``no``...) is masked under its key but not
elsewhere, as masking every ``1`` or ``no`` would blank unrelated counts and words.
"""

from __future__ import annotations

import copy
import re

from ansible.module_utils.common.parameters import remove_values

# The same expression as infrakit_runtime.rpc.redact.SECRET_KEY.
SECRET_KEY = re.compile(r"passw(or)?d|secret|token|credential|(private|api|access|secret)[-_ ]?key", re.IGNORECASE)

# What Ansible itself prints for a whole value that came from a no_log option.
MASK = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"

# Values at least this long (and not a flag word) are masked wherever they appear.
MIN_EVERYWHERE = 4
_FLAG_WORDS = frozenset(("true", "false", "yes", "no", "on", "off", "none", "null"))


def is_secret_key(key):
    return isinstance(key, str) and bool(SECRET_KEY.search(key))


def _is_set(value):
    return value is not None and value != "" and not isinstance(value, bool)


def _leaves(value):
    """Every scalar inside ``value`` as text (booleans, None and empty strings are not secrets)."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _leaves(item)
    elif _is_set(value):
        yield str(value)


def secret_values(value):
    """The text of every value under a secret-named key in ``value``, at any depth."""
    found = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if is_secret_key(key):
                found.update(_leaves(item))
            else:
                found.update(secret_values(item))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found.update(secret_values(item))
    return found


def redact(value):
    """A copy of ``value`` with the value of every secret-named key replaced by ``MASK``."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret_key(k) and _is_set(v) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return copy.deepcopy(value)


def everywhere(values):
    """The values safe to mask wherever they appear (see the module's limit)."""
    return {v for v in values if len(v) >= MIN_EVERYWHERE and v.lower() not in _FLAG_WORDS}


def mask(value, listed=()):
    """``value`` with secret keys masked and their values, and the ``listed`` ones, removed from all text.

    For the inventory plugin, which has no ``AnsibleModule`` to do the second half; modules use
    ``no_log_values`` (see ``modules.InfraKitModule``).
    """
    hidden = everywhere(secret_values(value)) | {v for v in listed or () if v}
    masked = redact(value)
    return remove_values(masked, hidden) if hidden else masked
