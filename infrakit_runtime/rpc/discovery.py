"""Where plugins live: the plugin directory, socket names and ``.listen`` files.

Resolution follows InfraKit: ``$INFRAKIT_PLUGINS_DIR``, else
``$INFRAKIT_HOME/plugins``, else ``~/.infrakit/plugins``. A plugin is a Unix
socket named after it, or a ``<name>.listen`` file holding ``tcp://host:port``.
Names are ``socket[/type]``: the part after the slash selects an object inside
the daemon (``aws/ec2-instance``).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

from infrakit_runtime.spi.common import PluginName

__all__ = ["Address", "PluginName", "infrakit_home", "list_plugins", "plugins_dir", "resolve"]


def infrakit_home() -> Path:
    return Path(os.environ.get("INFRAKIT_HOME") or Path.home() / ".infrakit")


def plugins_dir() -> Path:
    explicit = os.environ.get("INFRAKIT_PLUGINS_DIR")
    if explicit:
        return Path(explicit)
    return infrakit_home() / "plugins"


@dataclasses.dataclass(frozen=True)
class Address:
    """How to reach a plugin daemon: a Unix socket path or a TCP/TLS URL."""

    unix_path: Path | None = None
    url: str | None = None

    def __str__(self) -> str:
        return str(self.unix_path) if self.unix_path else str(self.url)


def resolve(name: str | PluginName, directory: Path | None = None) -> Address:
    """The address of a plugin by name; a ``.listen`` file wins over a socket."""
    pn = PluginName.parse(name) if isinstance(name, str) else name
    directory = directory or plugins_dir()
    listen = directory / f"{pn.socket}.listen"
    try:
        # A name too long for the file system (ENAMETOOLONG) is simply not a TCP plugin.
        is_tcp = listen.is_file()
    except (OSError, ValueError):
        is_tcp = False
    if is_tcp:
        url = listen.read_text().strip()
        if url.startswith("tcp://"):
            url = "http://" + url[len("tcp://") :]
        return Address(url=url)
    return Address(unix_path=directory / pn.socket)


def list_plugins(directory: Path | None = None) -> dict[str, Address]:
    """Every plugin found in the directory: sockets and ``.listen`` files, by name."""
    directory = directory or plugins_dir()
    found: dict[str, Address] = {}
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return found
    for entry in entries:
        try:
            mode = entry.stat().st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISSOCK(mode):
            found.setdefault(entry.name, Address(unix_path=entry))
        elif entry.name.endswith(".listen"):
            found[entry.name[: -len(".listen")]] = resolve(entry.name[: -len(".listen")], directory)
    return found
