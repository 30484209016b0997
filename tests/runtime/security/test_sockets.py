"""Plugin sockets are 0660 in a 0750 directory, whatever the daemon's umask."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.conftest import Daemons


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def short_home() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="iksec-") as d:
        yield Path(d)


@pytest.mark.parametrize("kind", ["file", "vanilla", "manager"])
def test_a_daemon_creates_its_plugin_dir_0750_and_its_socket_0660_even_with_a_lax_umask(
        short_home: Path, kind: str) -> None:
    daemons = Daemons(short_home / "home")
    created = short_home / "fresh" / "plugins"  # does not exist: the daemon creates it
    daemons.plugins_dir = created
    daemons.env["INFRAKIT_PLUGINS_DIR"] = str(created)
    try:
        with umask(0):  # inherited by the daemon: modes must come from the code, not the umask
            daemons.start(kind)
        name = "group" if kind == "manager" else kind
        assert stat.S_IMODE(created.stat().st_mode) == 0o750
        sock = created / name
        assert stat.S_ISSOCK(sock.lstat().st_mode)
        assert stat.S_IMODE(sock.lstat().st_mode) == 0o660
    finally:
        daemons.stop_all()
