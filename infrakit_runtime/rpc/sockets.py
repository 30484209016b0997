"""Unix socket hygiene: replace a stale socket, never steal a live one (InfraKit issue 308).

A daemon killed with SIGKILL leaves its socket file behind; the next start must
not fail on it. A socket file some live daemon still accepts on is a different
matter: starting a second daemon there would silently steal its traffic.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from pathlib import Path

from infrakit_runtime.spi.common import PluginError

SOCKET_MODE = 0o660
DIR_MODE = 0o750


class SocketInUseError(PluginError):
    """Another live daemon is serving on the socket path."""


def socket_is_live(path: Path, timeout: float = 1.0) -> bool:
    """True when a process accepts connections on the Unix socket at ``path``."""
    with contextlib.closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            # EAGAIN (backlog full) or a timeout still means someone is listening.
            return True
        return True


def prepare_socket_path(path: Path) -> None:
    """Make ``path`` free to bind: create its directory, remove a stale socket.

    Raises ``SocketInUseError`` when a live daemon holds it and ``PluginError``
    when something other than a socket is in the way.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise PluginError(f"{path} exists and is not a socket; refusing to replace it")
    if socket_is_live(path):
        raise SocketInUseError(f"a plugin is already serving on {path}; stop it first (infrakit plugin stop {path.name})")
    path.unlink(missing_ok=True)


def secure_socket(path: Path) -> None:
    """Give a freshly bound socket the mode the design promises (0660)."""
    os.chmod(path, SOCKET_MODE)
