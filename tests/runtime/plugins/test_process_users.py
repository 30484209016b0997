"""Process instances as another user (issue 12, case 2): ``User``/``Group``, validated and applied at spawn.

The tests create a real unprivileged user and groups (``useradd``; they run as root here)
and remove them at the end. An instance's tree is still tracked for such users: a setsid
child goes with Destroy, a restarted daemon finds the instance again, and a process the user
starts with a forged marker is never taken for an instance.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.plugins import process_helpers as ph
from tests.runtime.procs import marker_pids

# The test's own interpreter may live where other users cannot reach it (under /root): use the system's.
PYTHON = next((p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None)


def _why_not() -> str | None:
    """Why a throwaway user cannot be made and used here, or None."""
    if os.geteuid() != 0:
        return f"creating a throwaway user needs root; these tests run as uid {os.geteuid()}"
    missing = [tool for tool in ("useradd", "userdel", "groupadd", "groupdel") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not on PATH (Debian: apt-get install passwd)"
    if PYTHON is None:
        return "no python3 other users can run (/usr/bin/python3 or /usr/local/bin/python3)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    extra_group: str
    extra_gid: int


@pytest.fixture
def throwaway_user() -> Iterator[User]:
    suffix = uuid.uuid4().hex[:8]
    name, extra = f"ikt{suffix}", f"iktx{suffix}"
    subprocess.run(["groupadd", extra], check=True)
    try:
        subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin",
                        "--groups", extra, name], check=True)
        try:
            entry = pwd.getpwnam(name)
            yield User(name=name, uid=entry.pw_uid, gid=entry.pw_gid, extra_group=extra,
                       extra_gid=grp.getgrnam(extra).gr_gid)
        finally:
            subprocess.run(["userdel", name], check=False)
            subprocess.run(["groupdel", name], check=False, stderr=subprocess.DEVNULL)
    finally:
        subprocess.run(["groupdel", extra], check=False)


def ids_command(marker: str) -> str:
    """Print the identity the instance runs with, then sleep as a process carrying ``marker``."""
    return f'id -u; id -g; id -G; echo "home=$HOME user=$USER"; exec {PYTHON} -c "{ph.SLEEP_PY}" {marker}'


def log_lines(call, iid: str) -> list[str]:
    [found] = [d for d in call.describe(properties=True) if d["ID"] == iid]
    return open(found["Properties"]["Log"]).read().splitlines()


def uid_of(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def test_an_instance_runs_as_the_named_user_with_its_groups_and_its_tree_goes_with_it(start_process_daemon,
                                                                                     throwaway_user, marker):
    call = start_process_daemon()
    u = throwaway_user
    child = f"{marker}-child"
    iid = call.provision({"Command": f"setsid {PYTHON} -c '{ph.SLEEP_PY}' {child} & " + ids_command(marker),
                          "User": u.name, "Port": False})
    lines = ph.eventually(lambda: len(log_lines(call, iid)) >= 4 and log_lines(call, iid))
    assert lines[0] == str(u.uid) and lines[1] == str(u.gid)
    assert sorted(map(int, lines[2].split())) == sorted([u.gid, u.extra_gid])
    assert lines[3] == f"home={pwd.getpwnam(u.name).pw_dir} user={u.name}"
    [pid] = ph.eventually(lambda: marker_pids(marker))
    [child_pid] = ph.eventually(lambda: marker_pids(child))
    assert uid_of(pid) == u.uid and uid_of(child_pid) == u.uid

    call.destroy(iid)
    assert not marker_pids(marker) and not marker_pids(child)


def test_numeric_user_and_group_are_applied(start_process_daemon, throwaway_user, marker):
    call = start_process_daemon()
    u = throwaway_user
    iid = call.provision({"Command": ids_command(marker), "User": u.uid, "Group": str(u.extra_gid), "Port": False})
    lines = ph.eventually(lambda: len(log_lines(call, iid)) >= 3 and log_lines(call, iid))
    assert lines[0] == str(u.uid) and lines[1] == str(u.extra_gid)
    assert lines[2].split() == [str(u.extra_gid)], "an explicit Group replaces the user's groups"
    call.destroy(iid)


def test_unknown_users_and_groups_are_refused_naming_the_field(daemons, reaper):
    daemons.start("process")
    call = ph.Call(daemons.client("process"))
    ghost = f"nosuch{uuid.uuid4().hex[:8]}"
    with pytest.raises(RemoteError) as err:
        call("Validate", Properties={"Command": ["true"], "User": ghost, "Group": ghost})
    assert f"User '{ghost}' is not a user on this host" in err.value.message
    assert f"Group '{ghost}' is not a group on this host" in err.value.message
    for bad, words in (([1], "User must be a user name or a numeric uid, got array"),
                       (-1, "User -1 is not a valid uid"), (2**40, "is not a valid uid"), (True, "got boolean"),
                       ("a\0b", "User must not contain a NUL character")):
        with pytest.raises(RemoteError, match="User") as err:
            call("Validate", Properties={"Command": ["true"], "User": bad})
        assert words in err.value.message
    free_uid = next(i for i in range(60000, 65000) if not _uid_exists(i))
    with pytest.raises(RemoteError, match=f"User {free_uid} has no passwd entry: give Group too"):
        call("Validate", Properties={"Command": ["true"], "User": free_uid})
    with pytest.raises(RemoteError, match=f"User '{ghost}'"):
        call.provision({"Command": ["true"], "User": ghost})
    assert call.describe() == []
    call.client.close()


def _uid_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_a_restarted_daemon_finds_a_users_instance_and_records_lost_leave_nothing_untracked(
        daemons, start_process_daemon, throwaway_user, mode, marker):
    call = start_process_daemon()
    iid = call.provision({"Command": [PYTHON, "-c", ph.SLEEP_PY, marker], "User": throwaway_user.name,
                          "Port": False}, tags={"infrakit.group": "u"})
    pids = call.pids()
    daemons.kill("process")
    call = start_process_daemon()
    assert call.pids() == pids, "the record names it: adopted"

    daemons.kill("process")
    shutil.rmtree(ph.state_dir(daemons))
    call = start_process_daemon()
    if mode == "cgroup":
        # Only the plugin can put a process in its cgroups: that is proof enough to adopt it.
        assert call.pids({"infrakit.group": "u"}) == pids
        call.destroy(iid)
    else:
        # Without a record or a cgroup, another user's process cannot prove it is ours: stopped, not adopted.
        assert call.describe() == []
    ph.eventually(lambda: not marker_pids(marker))


def test_a_forged_marker_never_makes_a_process_an_instance(daemons, start_process_daemon, throwaway_user, reaper,
                                                           marker):
    call = start_process_daemon()
    forged_id = "process-00000000000000ff"
    env = {"PATH": os.environ["PATH"], "INFRAKIT_INSTANCE_ID": forged_id,
           "INFRAKIT_INSTANCE_OWNER": str(ph.state_dir(daemons).resolve()),
           "INFRAKIT_INSTANCE_TAGS": json.dumps({"infrakit.group": "web"})}
    forged = reaper.spawn([PYTHON, "-c", ph.SLEEP_PY, marker], user=throwaway_user.name, env=env)
    ph.eventually(lambda: marker_pids(marker))
    daemons.kill("process")
    call = start_process_daemon()
    assert call.describe({"infrakit.group": "web"}) == []
    assert not (ph.state_dir(daemons) / f"{forged_id}.json").exists()
    ph.eventually(lambda: forged.poll() is not None, timeout=10)
