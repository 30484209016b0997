"""A cgroup v2 per process instance: membership no process can leave, forge, or outlive unseen.

Guarantee: a process enters its instance's cgroup before it executes anything (see
``process_os.child_setup``), so everything it forks, setsid children included, stays in
that cgroup; ``kill`` ends them all at once through ``cgroup.kill``; only root can move a
process in, so membership proves a process is ours; and the directory is named after the
instance ID under a directory named after the plugin's state directory, so a daemon that
lost its records still finds every instance by listing it.
Limit: needs cgroup v2 mounted writable and ``cgroup.kill`` (Linux 5.14+); without them the
plugin falls back to an environment marker and the daemon as child subreaper. No resource
controller is enabled: the cgroup tracks, it does not limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from pathlib import Path

from infrakit_runtime.spi.common import ValidationError

log = logging.getLogger(__name__)

PARENT = "infrakit-process"
_ID = re.compile(r"^process-[0-9a-f]{16}$")
# On each state directory's cgroup directory (cgroupfs keeps user xattrs since Linux 5.7): whose it is.
XATTR_STATE_DIR = "user.infrakit.state_dir"


def mount_point(mountinfo: Path = Path("/proc/self/mountinfo")) -> tuple[Path, str] | None:
    """Where cgroup v2 is mounted, and which cgroup path is its root (``/`` unless namespaced)."""
    with contextlib.suppress(OSError):
        for line in mountinfo.read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields = left.split()
            if right.split(" ", 1)[0] == "cgroup2" and len(fields) > 4:
                return Path(fields[4]), fields[3]
    return None


class Cgroups:
    """The instance cgroups of one plugin state directory, under ``root``."""

    def __init__(self, root: Path, *, mount: Path, mount_root: str = "/") -> None:
        self.root = root
        self._mount = mount
        # How /proc/<pid>/cgroup names ``root``: its path below the mount, seen from the mount's root.
        below = root.relative_to(mount).as_posix()
        self._proc_prefix = "/" + "/".join(p for p in (mount_root.strip("/"), below) if p) + "/"

    def path(self, instance_id: str) -> Path:
        return self.root / instance_id

    def create(self, instance_id: str) -> Path:
        path = self.path(instance_id)
        path.mkdir(exist_ok=True)
        return path

    def open_procs(self, instance_id: str) -> int:
        """A write descriptor on the instance's ``cgroup.procs`` (close-on-exec): the child writes itself in."""
        return os.open(self.path(instance_id) / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def instances(self) -> list[str]:
        """The instance IDs that have a cgroup (whether or not anything runs in it)."""
        with contextlib.suppress(OSError):
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir() and _ID.match(e.name))
        return []

    def procs(self, instance_id: str) -> list[int]:
        """Every PID in the instance's cgroup and its sub-cgroups (an instance running as root may make some)."""
        found: list[int] = []
        for directory, _, _ in os.walk(self.path(instance_id)):
            with contextlib.suppress(OSError, ValueError):
                found.extend(int(p) for p in Path(directory, "cgroup.procs").read_text().split())
        return found

    def members(self) -> dict[str, list[int]]:
        """Every instance cgroup and the PIDs in it."""
        return {iid: self.procs(iid) for iid in self.instances()}

    def populated(self, instance_id: str) -> bool:
        """Whether any process (zombies aside) is left in the instance's cgroup tree."""
        try:
            text = (self.path(instance_id) / "cgroup.events").read_text()
        except OSError:
            return False
        return "populated 1" in text

    def kill(self, instance_id: str) -> bool:
        """SIGKILL every process in the instance's cgroup tree at once; False when it has no cgroup."""
        try:
            (self.path(instance_id) / "cgroup.kill").write_text("1")
        except FileNotFoundError:
            return False
        return True

    def remove(self, instance_id: str) -> bool:
        """Remove the instance's (empty) cgroup tree; True when it is gone."""
        path = self.path(instance_id)
        for directory, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                continue
            except OSError as e:
                log.debug("cgroup %s not removed yet: %s", directory, e)
                return False
        return True

    def member_of(self, pid: int) -> str | None:
        """The instance whose cgroup ``pid`` is in, if any."""
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("0::") and line[3:].startswith(self._proc_prefix):
                name = line[3 + len(self._proc_prefix):].split("/", 1)[0]
                return name if _ID.match(name) else None
        return None

    def close(self) -> None:
        """Remove this state directory's cgroup directory if no instance cgroup is left in it."""
        with contextlib.suppress(OSError):
            self.root.rmdir()


def collect_abandoned(base: Path, *, keep: Path) -> list[Path]:
    """Remove the empty cgroups of state directories that no longer exist (a test's, a removed install's).

    Only directories labelled with their state directory (``XATTR_STATE_DIR``) whose state
    directory is gone, and only cgroups no process is in: nothing is ever killed here.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            path = Path(entry.path)
            if not entry.is_dir() or path == keep or not entry.name.startswith("dir-"):
                continue
            try:
                state_dir = os.getxattr(path, XATTR_STATE_DIR).decode(errors="replace")
            except OSError:
                continue
            if os.path.exists(state_dir):
                continue
            cgroups = Cgroups(path, mount=path.parent, mount_root="/")
            for iid in cgroups.instances():
                if not cgroups.populated(iid):
                    cgroups.remove(iid)
            with contextlib.suppress(OSError):
                path.rmdir()
                removed.append(path)
    return removed


def owner_key(state_dir: Path) -> str:
    """The cgroup directory name for a state directory: the same for a directory recreated at the same path."""
    return "dir-" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:20]


def open_cgroups(option: str, state_dir: Path) -> tuple[Cgroups | None, str]:
    """The instance cgroups to use per the daemon's ``cgroup`` option, or None and why not.

    ``off``: none. ``auto``: ``<cgroup2 mount>/infrakit-process/<key>`` if it can be made and
    offers ``cgroup.kill``, else none. A path: that cgroup v2 directory (for a subtree
    delegated by systemd), which must work, or the daemon refuses to start.
    """
    if option == "off":
        return None, "disabled by the cgroup=off option"
    mounted = mount_point()
    explicit = option != "auto"
    if explicit and not os.path.isabs(option):
        raise ValidationError(f"option cgroup: {option!r} must be auto, off or an absolute path to a cgroup v2 directory")
    if mounted is None:
        if explicit:
            raise ValidationError(f"option cgroup: {option} is unusable: no cgroup v2 file system is mounted")
        return None, "no cgroup v2 file system is mounted"
    mount, mount_root = mounted
    base = Path(option) if explicit else mount / PARENT
    if explicit and mount not in (base, *base.parents):
        raise ValidationError(f"option cgroup: {option} is not inside the cgroup v2 mount {mount}")
    root = base / owner_key(state_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.setxattr(root, XATTR_STATE_DIR, str(state_dir.resolve()).encode())
        if not (root / "cgroup.kill").exists():
            raise OSError(f"{root} has no cgroup.kill (Linux 5.14 or later is needed)")
        probe = root / "process-0000000000000000"
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError as e:
        why = f"cannot use {root}: {e.strerror or e}"
        if explicit:
            raise ValidationError(f"option cgroup: {why}") from None
        return None, why
    for gone in collect_abandoned(base, keep=root):
        log.info("removed the empty cgroups of %s, whose state directory no longer exists", gone)
    return Cgroups(root, mount=mount, mount_root=mount_root), f"instance cgroups under {root}"
