"""Secret-looking values out of logged RPC traffic: the debug dump shows shapes, never credentials.

Guarantee: ``for_log(body)`` returns the body's text with the value of every object key that
names a secret (``password``, ``passwd``, ``secret``, ``token``, ``credential``, and
``private``/``api``/``access``/``secret`` followed by ``key``, in any case and with any
separator: ``Password``, ``db_password``, ``SecretAccessKey``, ``api-key``,
``INFRAKIT_CONTROLLER_TOKEN``) replaced by ``"***"``, at any depth.
Limit: only keys are judged, never values: a secret inside a free-text field (``UserData``, an
``Init`` script, a command line) is logged as sent. Plain ``Key``/``KeyName`` (EC2 tag keys, key
pair names) are not secrets and stay. Bodies that are not JSON are logged as they are.
"""

from __future__ import annotations

import json
import re
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(r"passw(or)?d|secret|token|credential|(private|api|access|secret)[-_ ]?key", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key))


def redact(value: Any) -> Any:
    """``value`` with the values of secret-named keys masked (a copy; the input is untouched)."""
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_secret_key(k) and v not in (None, "") else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def for_log(body: bytes) -> str:
    """The text of a JSON-RPC body fit for a debug log line."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return body.decode(errors="replace").rstrip()
    return json.dumps(redact(message), separators=(",", ":"), ensure_ascii=False)
