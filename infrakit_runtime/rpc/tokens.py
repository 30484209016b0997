"""Bearer tokens of TCP listeners: read from a file only the daemons' user can read, never from argv.

Guarantee: a token comes from a file — ``--token-file FILE`` (``plugin run``), the manager's
``token_file`` option, ``$INFRAKIT_TOKEN_FILE`` or the config file's ``token_file`` — and is
never echoed: every refusal names the file, not its content. A file other users can read or
write, one owned by a user other than the daemon's or root, an empty one, or one holding
anything but printable ASCII on one line is refused. Clients (the CLI, a controller calling a
plugin found through a ``.listen`` file) send the token of ``$INFRAKIT_TOKEN_FILE`` to TCP
plugins; the manager forwards to its leader with its own ``token_file``.
Limit: the file is read when a daemon starts or a client connects; to rotate the token, write
the new file and restart the daemons.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from infrakit_runtime.spi.common import ValidationError

ENV = "INFRAKIT_TOKEN_FILE"

HOW = ("put a random token in a file only the daemons' user can read (umask 077; openssl rand -hex 32 > FILE) "
       f"and name it with --token-file FILE, the {ENV} environment variable, or token_file in the config file")


def read(path: str | os.PathLike[str]) -> str:
    """The token held in ``path``; ``ValidationError`` naming the file (never its content) otherwise."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise ValidationError(f"token file {p}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValidationError(f"token file {p} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o006:
        what = "readable" if mode & 0o004 else "writable"
        raise ValidationError(f"token file {p} is {what} by other users (mode {mode:04o}): chmod 600 {p} "
                              "(or 640 to share it with the daemons' group)")
    if st.st_uid not in (0, os.geteuid()):
        raise ValidationError(f"token file {p} belongs to uid {st.st_uid}, who could change it: it must belong "
                              "to the daemons' user or root")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ValidationError(f"token file {p}: {e.strerror}") from None
    token = raw.strip()
    if not token:
        raise ValidationError(f"token file {p} is empty; {HOW}")
    if any(b < 0x21 or b > 0x7E for b in token):
        raise ValidationError(f"token file {p} must hold one token of printable ASCII characters on one line, "
                              "without spaces")
    return token.decode("ascii")


def from_environment() -> str | None:
    """The token of ``$INFRAKIT_TOKEN_FILE``, or None when it is not set."""
    path = os.environ.get(ENV)
    return read(path) if path else None


def matches(offered: str, token: str) -> bool:
    """True when an ``Authorization`` header value is ``Bearer <token>``, compared in constant time.

    Both sides are hashed first, so neither the token's content nor its length shows in the time taken.
    """
    expected = hashlib.sha256(f"Bearer {token}".encode()).digest()
    given = hashlib.sha256(offered.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(given, expected)
