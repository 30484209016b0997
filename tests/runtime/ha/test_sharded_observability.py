"""What an operator sees of replicas sharing the groups (``sharding: groups``), from real replicas on a real etcd.

``infrakit manager status`` (table, json, yaml) names the mode, the live members and each group's
owner, as the replicas themselves settled it (``Sharded.wait_settled``: every live replica's
``Owned`` and etcd's owner keys agree); each replica's ``/metrics`` says the same
(``infrakit_group_owned``, ``infrakit_manager_members``), and ``infrakit_manager_leader`` is 1 on
every member with ``infrakit_manager_sharded`` 1 beside it, which the alert rules read.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from infrakit_runtime.cli.observe import http_get
from infrakit_runtime.rpc.discovery import Address
from tests.runtime.ha.cluster import wait_for
from tests.runtime.ha.sharded import SETTLE, Sharded

GROUPS = [f"g{i}" for i in range(6)]


def cli(stack: Sharded, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infrakit_runtime", *args], env=stack.d.env,
                          capture_output=True, text=True, timeout=60)


def scrape(stack: Sharded, name: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a replica's ``/metrics``, keyed by (name, labels)."""
    resp = http_get(Address(unix_path=stack.d.plugins_dir / name), "/metrics", timeout=10)
    try:
        text = resp.read().decode()
    finally:
        resp.close()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


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


def test_each_replicas_metrics_say_which_groups_it_owns_and_how_many_members_share_them(sharded: Any) -> None:
    stack, owners = settled_stack(sharded)

    def owned_per_metrics() -> dict[str, str] | None:
        seen: dict[str, str] = {}
        for name in stack.names:
            samples = scrape(stack, name)
            for (metric, labels), value in samples.items():
                if metric != "infrakit_group_owned" or dict(labels)["group"] not in GROUPS:
                    continue
                if value == 1:
                    if dict(labels)["group"] in seen:
                        return None
                    seen[dict(labels)["group"]] = name
        return seen if seen == owners else None

    wait_for(owned_per_metrics, SETTLE, f"infrakit_group_owned naming the owners {owners}")
    for name in stack.names:
        samples = scrape(stack, name)
        gauge = {dict(labels)["group"]: value for (metric, labels), value in samples.items()
                 if metric == "infrakit_group_owned"}
        # 1 where this replica owns the group, 0 for every other group it knows of.
        assert {g: v for g, v in gauge.items() if g in GROUPS} == {g: 1.0 if owners[g] == name else 0.0 for g in GROUPS}
        assert samples[("infrakit_manager_members", frozenset())] == 3
        assert samples[("infrakit_manager_sharded", frozenset())] == 1
        assert samples[("infrakit_manager_leader", frozenset())] == 1
