"""Disaster recovery of a self-hosted plane from a snapshot, following docs/operations.md literally
(issue 15): the periodic snapshot holds a user group's spec; every etcd member is killed and its data
directory deleted; the documented steps - copy the newest snapshot aside, ``selfhost down``, ``selfhost
up``, restore the snapshot into a throwaway etcd and re-commit what it holds - bring the spec back, and
the group adopts its instance, which kept running, instead of making a new one.

The shell blocks of the section are read from the document and run with bash, with this test's paths
and free ports put in place of the documented ones: a step that is wrong in the document fails here.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.conftest import REPO, Daemons
from tests.runtime.selfhosted import local
from tests.runtime.selfhosted.plane import ETCD, MANAGERS, Plane

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None or shutil.which("etcdctl") is None,
                                reason="etcd and etcdctl are not on PATH (make system-deps)")

DOC_PREFIX = "/var/lib/infrakit-selfhosted"
WEB = "web"


def documented_blocks() -> list[str]:
    """The ``sh`` blocks of operations.md's 'Disaster recovery from a snapshot', in order."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("### Disaster recovery from a snapshot", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return [re.sub(r"^   ", "", b, flags=re.M) for b in re.findall(r"```sh\n(.*?)```", section, flags=re.S)]


def snapshot_time(path: Path) -> float:
    """When a snapshot was started, from its name (``etcd-<UTC time>.db``)."""
    stamp = path.name.removeprefix("etcd-").removesuffix(".db")
    return datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=datetime.UTC).timestamp()


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    daemons = Daemons(tmp_path / "home")
    p = None
    try:
        p = Plane(daemons, ttl="3s", snapshot={"Dir": str(daemons.home / "snapshots"), "Interval": "2s", "Keep": 3})
        yield p
    finally:
        if p is not None:
            p.close()
            with contextlib.suppress(Exception):
                for d in web_instances(p):
                    p.kill(d)
        daemons.stop_all()


def web_instances(plane: Plane) -> list[dict[str, Any]]:
    """The web group's instances, as the process plugin describes them."""
    client = plane.d.client("process")
    try:
        found = client.call("Instance.DescribeInstances", {"Tags": {"infrakit.group": WEB}, "Properties": True})
    finally:
        client.close()
    return list(found.get("Descriptions") or [])


def web_spec(plane: Plane) -> dict[str, Any]:
    return {"ID": WEB, "Properties": {
        "Allocation": {"Size": 1},
        "Instance": {"Plugin": "process", "Properties": {"Command": ["sleep", "3600"], "Port": False}},
        "Flavor": {"Plugin": "vanilla", "Properties": {}},
    }}


def test_a_lost_plane_is_rebuilt_from_a_snapshot_as_documented_and_its_groups_are_back(plane: Plane,
                                                                                      tmp_path: Path) -> None:
    home = plane.d.home
    plane.d.start("vanilla")
    (home / "etcd.json").write_text(json.dumps(plane.etcd_spec))
    (home / "managers.json").write_text(json.dumps(plane.manager_spec))
    (home / "infrakit.yml").write_text(f"home: {home}\nplugins_dir: {plane.d.plugins_dir}\n")
    env = {**plane.d.env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def infrakit(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infrakit_runtime", "--config", str(home / "infrakit.yml"), *args],
                              env=env, capture_output=True, text=True, timeout=timeout)

    def selfhost(action: str) -> dict[str, Any]:
        done = infrakit("selfhost", "--etcd", str(home / "etcd.json"), "--managers", str(home / "managers.json"), action)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    selfhost("up")
    plane.commit(web_spec(plane))
    committed = time.time()
    web = local.wait_for(lambda: web_instances(plane), 120, "the web instance")
    stored = {s["ID"]: s for s in plane.cp.call("Group.InspectGroups", {})["Groups"]}
    assert set(stored) == {ETCD, MANAGERS, WEB}
    snapshots = home / "snapshots"
    local.wait_for(lambda: [p for p in snapshots.glob("etcd-*.db") if snapshot_time(p) > committed], 120,
                   "a periodic snapshot taken after the web group was committed", interval=0.3)

    # The disaster: every etcd member killed, its data directory deleted.
    for d in plane.members(ETCD):
        plane.kill(d)
    shutil.rmtree(home / "etcd")
    local.wait_for(lambda: plane.etcd_healthy() == 0 and plane.members(ETCD) == [], 30, "no etcd member left")

    ports = local.port_pairs(1)[0]
    blocks = [b.replace(DOC_PREFIX, str(home)).replace("/tmp/restore", str(tmp_path / "restore"))
              .replace("23999", str(ports + 1)).replace("23998", str(ports))
              .replace("group-127.0.0.1:24801", f"group-{plane.manager_ids[0]}") for b in documented_blocks()]
    assert len(blocks) == 2, blocks

    # 1. A majority is gone: no replica leads.
    local.wait_for(lambda: plane.leader() is None, 60, "no replica leading")
    # 2. The newest snapshot copied aside.
    run(blocks[0], env, cwd=tmp_path)
    assert (home / "restore.db").stat().st_size > 0
    # 3. What is left removed, files kept; the web instance keeps running.
    report = selfhost("down")
    assert report["destroyed"] and plane.members(MANAGERS) == []
    assert snapshots.is_dir()
    # 4. The plane started again: a new cluster, the etcd and managers groups only.
    selfhost("up")
    assert {s["ID"] for s in plane.cp.call("Group.InspectGroups", {})["Groups"]} == {ETCD, MANAGERS}
    # 5. The specs read out of the snapshot and committed through a replica.
    run(blocks[1], env, cwd=tmp_path)
    # 6. Every group is back as it was committed, and web adopted its running instance.
    back = {s["ID"]: s for s in plane.cp.call("Group.InspectGroups", {})["Groups"]}
    assert back[WEB] == stored[WEB]
    assert set(back) == {ETCD, MANAGERS, WEB}
    local.wait_for(lambda: plane.describe(WEB)["Converged"], 120, "the web group converged")
    assert [d["ID"] for d in web_instances(plane)] == [d["ID"] for d in web]
    assert not (tmp_path / "restore").exists()


def run(script: str, env: dict[str, str], *, cwd: Path) -> None:
    done = subprocess.run(["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
