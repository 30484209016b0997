"""What an operator sees of replicas sharing the groups (``sharding: groups``), from real replicas on a real etcd.

``infrakit manager status`` (table, json, yaml) names the mode, the live members and each group's
owner, as the replicas themselves settled it (``Sharded.wait_settled``: every live replica's
``Owned`` and etcd's owner keys agree).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import yaml

from tests.runtime.ha.sharded import Sharded

GROUPS = [f"g{i}" for i in range(6)]


def cli(stack: Sharded, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infrakit_runtime", *args], env=stack.d.env,
                          capture_output=True, text=True, timeout=60)


def settled_stack(sharded: Any) -> tuple[Sharded, dict[str, str]]:
    """Three replicas and six groups, each group owned by exactly one; group -> owning replica."""
    stack = sharded()
    for gid in GROUPS:
        stack.rpc("group-a", "Group.CommitGroup", {"Spec": stack.file_spec(gid), "Pretend": False})
    return stack, stack.wait_settled(GROUPS, "every group owned by exactly one replica")


def test_manager_status_shows_the_mode_the_members_and_each_groups_owner(sharded: Any) -> None:
    stack, owners = settled_stack(sharded)
    candidates = {name: stack.candidate(name) for name in stack.names}
    assert len(set(owners.values())) > 1, f"the groups did not spread: {owners}"

    for via in stack.names:
        out = cli(stack, "manager", "--plugin", via, "status")
        assert out.returncode == 0, out.stdout + out.stderr
        text = out.stdout
        assert "sharded (groups)" in text and "Leader location" not in text, text
        rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
        for name, candidate in candidates.items():
            # MEMBER  LOCATION  GROUPS: each live member, where it listens, how many groups it owns.
            row = rows[candidate]
            assert stack.location(name) in row and row[-1] == str(sum(1 for o in owners.values() if o == name)), text
        assert f"{candidates[via]} (this replica)" in text, text
        for gid, name in owners.items():
            # GROUP  OWNER  LOCATION
            assert rows[gid] == [gid, candidates[name], stack.location(name)], text
        mine = sorted(g for g, o in owners.items() if o == via)
        assert f"Owned here {', '.join(mine)}" in " ".join(text.split()), text

    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        out = cli(stack, "manager", "--plugin", "group-b", "status", "-o", fmt)
        assert out.returncode == 0, out.stdout + out.stderr
        doc = load(out.stdout)
        assert doc["Sharding"] == "groups"
        assert doc["Members"] == {candidates[n]: stack.location(n) for n in stack.names}
        assert {g: c for g, c in doc["Owners"].items() if g in GROUPS} == {g: candidates[n] for g, n in owners.items()}
        assert doc["Owned"] == sorted(g for g, o in owners.items() if o == "group-b")
