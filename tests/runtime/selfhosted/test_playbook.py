"""playbooks/selfhosted.yml with ansible-playbook, as AWX would run it: up from nothing, up again
changes nothing, check mode changes nothing, teardown removes everything, a second teardown
changes nothing (issue 15, item 4)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from infrakit_runtime.controlplane import ControlPlane
from tests.runtime.selfhosted import local

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None or not (BIN / "ansible-playbook").exists(),
                                reason="needs etcd and ansible-playbook")


def play(prefix: Path, ids: dict[str, list[str]], *args: str) -> tuple[dict[str, int], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFRAKIT_")}
    env.update(ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ANSIBLE_NOCOLOR="1")
    cmd = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "playbooks/selfhosted.yml",
           "-e", json.dumps(ids), "-e", f"ansible_python_interpreter={sys.executable}",
           "-e", f"selfhosted_prefix={prefix} selfhosted_infrakit={BIN / 'infrakit'} selfhosted_python={sys.executable}",
           "-e", "selfhosted_timeout=240", *args]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    recap = re.search(r"localhost\s+: (.*)", out.stdout)
    assert recap, out.stdout[-2000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))}, out.stdout


def test_the_playbook_brings_the_plane_up_idempotently_and_tears_it_down(tmp_path: Path) -> None:
    prefix = tmp_path / "plane"
    ids = {"selfhosted_etcd_ids": local.member_ids(3), "selfhosted_manager_ids": local.free_ids(3)}
    try:
        recap, out = play(prefix, ids)
        assert recap["failed"] == 0 and recap["changed"] > 0
        assert "bootstrapped 2, committed etcd, managers" in out
        cp = ControlPlane(etcd=json.loads((prefix / "etcd.json").read_text()),
                          managers=json.loads((prefix / "managers.json").read_text()), plugins_dir=prefix / "plugins")
        try:
            assert len(cp.members(cp.etcd)) == 3 and len(cp.members(cp.managers)) == 3
            assert (cp.status() or {}).get("Leader")
        finally:
            cp.close()
        assert play(prefix, ids)[0]["changed"] == 0
        recap, out = play(prefix, ids, "--check")
        assert recap["changed"] == 0 and recap["failed"] == 0
        recap, out = play(prefix, ids, "-e", "selfhosted_state=absent", "--check")
        assert "check mode: would free the groups etcd and managers" in out and prefix.exists()
        recap, _ = play(prefix, ids, "-e", "selfhosted_state=absent")
        assert recap["changed"] > 0 and not prefix.exists()
        assert sum(local.health(lid) for lid in ids["selfhosted_etcd_ids"]) == 0
        assert play(prefix, ids, "-e", "selfhosted_state=absent")[0]["changed"] == 0
    finally:
        if prefix.exists():
            subprocess.run([str(BIN / "infrakit"), "--config", str(prefix / "infrakit.yml"), "plugin", "stop", "--all"],
                           capture_output=True, timeout=60)
