"""Three replicas sharing the groups (``sharding: groups``) on a real 3-member etcd cluster.

Each replica is a real manager process; instances are files (the file instance plugin) so that
nine groups cost nothing to run, and deleting a file makes its owner act (a replacement).
Who owned what, and when, comes from each replica's own events (``ownership_gained`` /
``ownership_lost``, JSON lines in its log); what it did comes from the mutating calls it logged
(``infrakit_runtime.rpc.traffic``). Tests wait on conditions with generous timeouts.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from infrakit_runtime.rpc.errors import RemoteError, UnreachableError
from tests.runtime.ha.cluster import etcd_key_meta, wait_for
from tests.runtime.ha.sharded import SETTLE, TTL, Sharded

GROUPS = [f"g{i}" for i in range(9)]


def commit_all(stack: Sharded, via: str, groups: list[str] = GROUPS) -> None:
    for gid in groups:
        stack.rpc(via, "Group.CommitGroup", {"Spec": stack.file_spec(gid), "Pretend": False})


def delete_one_file(stack: Sharded, gid: str) -> str | None:
    members = stack.instances(gid)
    if not members:
        return None
    victim = members[0]["ID"]
    with contextlib.suppress(FileNotFoundError):
        (stack.files / victim).unlink()
    return victim


def test_nine_groups_are_spread_over_three_replicas_each_with_exactly_one_owner_reachable_from_any(sharded):
    stack = sharded()
    commit_all(stack, "group-a")  # each commit reaches its rendezvous owner, which claims then stores it
    owners = stack.wait_settled(GROUPS, "every group owned by exactly one replica")
    stack.wait_instances(GROUPS)
    share = {n: sorted(g for g, o in owners.items() if o == n) for n in stack.names}
    print(f"shares: {share}")
    assert all(share[n] for n in stack.names), share
    for via in stack.names:  # any replica answers for any group, and for all of them
        inspected = stack.rpc(via, "Group.InspectGroups", {})["Groups"]
        assert sorted(g["ID"] for g in inspected) == GROUPS
        for gid in GROUPS:
            desc = stack.rpc(via, "Group.DescribeGroup", {"ID": gid})["Description"]
            assert len(desc["Instances"]) == 1
    status = stack.status("group-b")
    assert status["Sharding"] == "groups" and sorted(status["Owned"]) == share["group-b"]
    assert stack.overlaps() == []


def test_a_killed_replicas_groups_move_each_to_one_survivor_and_no_other_group_moves(sharded):
    stack = sharded()
    commit_all(stack, "group-b")
    before = stack.wait_settled(GROUPS, "the groups spread")
    stack.wait_instances(GROUPS)
    victim = "group-c"
    theirs = sorted(g for g, o in before.items() if o == victim)
    assert theirs, before
    killed = stack.kill(victim)
    after = stack.wait_settled(GROUPS, "the victim's groups claimed by survivors")
    for gid, owner in before.items():
        if owner != victim:
            assert after[gid] == owner, f"{gid} moved from {owner} to {after[gid]} though its owner lived"
        else:
            assert after[gid] in ("group-a", "group-b")
    for name in ("group-a", "group-b"):  # survivors gave up nothing
        assert [e for e in stack.events(name, "ownership_lost") if e["Time"] > killed] == []
    claims = [e for n in ("group-a", "group-b") for e in stack.events(n, "ownership_gained") if e["Time"] > killed]
    assert sorted(e["Group"] for e in claims) == theirs, claims  # each exactly once
    print(f"after SIGKILL of {victim} (TTL {TTL:g}s): its {len(theirs)} group(s) claimed "
          f"{min(e['Time'] for e in claims) - killed:.2f}s to {max(e['Time'] for e in claims) - killed:.2f}s later")
    gone = delete_one_file(stack, theirs[0])  # the new owner acts on a moved group
    wait_for(lambda: [i for i in stack.instances(theirs[0]) if i["ID"] != gone], SETTLE, "the replacement")
    assert stack.overlaps() == []


def test_a_joining_replica_takes_its_share_with_never_two_acting_owners(sharded):
    stack = sharded(first=("group-a", "group-b"))
    commit_all(stack, "group-a")
    before = stack.wait_settled(GROUPS, "two replicas sharing the groups")
    stack.wait_instances(GROUPS)
    stop = threading.Event()
    rounds = [0]

    def seen(gid: str) -> bool:
        """The group's owner has listed its instance (one it made but never listed counts as a member for
        ``observed.UNSEEN_GRACE``, 30 s: deleting that one would stall the churn, not test anything)."""
        try:
            status = stack.rpc("group-a", "Group.DescribeGroup", {"ID": gid})["Description"]["Status"]
        except (RemoteError, UnreachableError, OSError):
            return False
        return status.get("Running") == 1 and status.get("Desired") == 1

    def churn() -> None:  # keep every owner acting on every group while groups move
        while not stop.is_set():
            with contextlib.suppress(Exception):
                wait_for(lambda: stop.is_set() or all(seen(g) for g in GROUPS), SETTLE, "every instance listed")
                gone = {gid: delete_one_file(stack, gid) for gid in GROUPS}
                wait_for(lambda gone=gone: stop.is_set() or all(any(i["ID"] != gone[g] for i in stack.instances(g))
                                                                for g in GROUPS),
                         SETTLE, "a replacement in every group", interval=0.05)
                rounds[0] += 1

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        wait_for(lambda: rounds[0] >= 2, SETTLE, "churn under way")
        joined = time.time()
        stack.start_replica("group-c")
        after = stack.wait_settled(GROUPS, "the newcomer taking its share")
        at_join = rounds[0]
        wait_for(lambda: rounds[0] >= at_join + 2, SETTLE, "churn going on after the join")
    finally:
        stop.set()
        worker.join(SETTLE)
    moved = sorted(g for g in GROUPS if before[g] != after[g])
    assert moved and all(after[g] == "group-c" for g in moved), (before, after)
    gained = [e["Time"] for e in stack.events("group-c", "ownership_gained")]
    print(f"join: {len(moved)} group(s) moved to group-c within {max(gained) - joined:.2f}s of starting it; "
          f"{rounds[0]} rounds of replacing one instance in every group; {len(stack.group_actions())} mutating calls checked")
    assert stack.overlaps() == []
    stack.wait_instances(GROUPS)


def test_an_owner_paused_past_its_lease_acts_on_nothing_and_writes_nothing_after_it_resumes(sharded, etcd, prefix):
    stack = sharded()
    commit_all(stack, "group-a")
    before = stack.wait_settled(GROUPS, "the groups spread")
    stack.wait_instances(GROUPS)
    victim = "group-b"
    theirs = sorted(g for g, o in before.items() if o == victim)
    target = theirs[0]
    acted = len(stack.group_actions())
    paused = stack.kill(victim, signal.SIGSTOP)
    after = stack.wait_settled(GROUPS, "survivors owning the paused replica's groups")
    assert all(after[g] != victim for g in GROUPS)
    survivor = after[target]
    # The new owner scales the group up: the paused one still believes in 1 and would destroy the extra one.
    stack.rpc(survivor, "Group.CommitGroup", {"Spec": stack.file_spec(target, size=2), "Pretend": False})
    wait_for(lambda: len(stack.instances(target)) == 2, SETTLE, "the new owner scaling up")
    key = f"{prefix}groups/{target}"
    written = etcd_key_meta(etcd, key)
    outcome: dict[str, Any] = {}

    def late_commit() -> None:  # reaches the paused replica's socket, handled as soon as it resumes
        try:
            outcome["answer"] = stack.rpc(victim, "Group.CommitGroup", {"Spec": stack.file_spec(target, size=3),
                                                                        "Pretend": False})
        except RemoteError as e:
            outcome["error"] = e.message

    caller = threading.Thread(target=late_commit)
    caller.start()
    # A deliberate pause: the call must reach the frozen replica's socket before it resumes, and
    # nothing observable from here marks that (it is queued in the kernel).
    time.sleep(0.3)
    resumed = stack.kill(victim, signal.SIGCONT)
    caller.join(60)
    assert "answer" not in outcome, f"the resumed replica accepted a commit: {outcome}"
    wait_for(lambda: [e for e in stack.events(victim, "membership_lost") if e["Time"] > paused], SETTLE,
             "the resumed replica noticing it lost its membership")
    wait_for(lambda: (o := stack.settled(GROUPS)) and victim in o.values(), SETTLE,
             "the resumed replica registered again and given its share back", interval=0.2)
    back = [e["Time"] for e in stack.events(victim, "membership_gained") if e["Time"] > resumed]
    assert back, "the resumed replica never registered again"
    late = [a for a in stack.group_actions()[acted:] if a[0] == victim and resumed <= a[2] + 0.001 < min(back)]
    assert late == [], f"the resumed replica acted before registering again: {late}"
    stale = [a for a in stack.group_actions() if a[0] == victim and paused < a[2] + 0.001 < min(back)]
    assert stale == [], stale
    meta = etcd_key_meta(etcd, key)
    assert meta is not None and meta["mod_revision"] == written["mod_revision"], "the resumed replica wrote the store"
    assert json.loads(etcd3_get(etcd, key))["Properties"]["Allocation"] == {"Size": 2}
    assert len(stack.instances(target)) == 2
    print(f"pause: {victim} resumed {resumed - paused:.2f}s after SIGSTOP, refused {outcome.get('error', '')[:120]!r}, "
          f"registered again {min(back) - resumed:.2f}s after SIGCONT")


def etcd3_get(etcd: Any, key: str) -> bytes:
    import urllib.parse

    import etcd3gw

    url = urllib.parse.urlsplit(etcd.endpoints[0])
    return etcd3gw.client(host=url.hostname, port=url.port, timeout=5).get(key)[0]


def test_the_file_backend_refuses_sharding_naming_the_field(tmp_path: Path) -> None:
    from infrakit_runtime.backends import open_backend
    from infrakit_runtime.manager.daemon import parse_options
    from infrakit_runtime.spi.common import ValidationError

    with pytest.raises(ValidationError) as refused:
        parse_options({"sharding": "groups", "backend": {"type": "file", "dir": str(tmp_path / "s")}},
                      home=tmp_path, open_backend=open_backend)
    assert any(p.startswith("sharding: groups needs the etcd backend") and "'file'" in p for p in refused.value.problems)
    with pytest.raises(ValidationError) as bad:
        parse_options({"sharding": "replicas", "backend": {"type": "file", "dir": str(tmp_path / "s")}},
                      home=tmp_path, open_backend=open_backend)
    assert any(p.startswith("sharding: 'replicas' is not one of off, groups") for p in bad.value.problems)
    assert parse_options({"backend": {"type": "file", "dir": str(tmp_path / "s")}},
                         home=tmp_path, open_backend=open_backend)["sharding"] == "off"


def test_the_config_files_manager_section_carries_sharding_to_the_manager(tmp_path: Path) -> None:
    from infrakit_runtime import config
    from infrakit_runtime.backends import open_backend
    from infrakit_runtime.cli.plugin import effective_options
    from infrakit_runtime.daemon import DaemonSpec
    from infrakit_runtime.manager.daemon import parse_options
    from infrakit_runtime.spi.common import ValidationError

    cfg = config.parse({"manager": {"sharding": "groups", "backend": {"type": "file", "dir": str(tmp_path / "s")}}})
    options = effective_options(DaemonSpec.parse("manager"), cfg)
    assert options["sharding"] == "groups"
    with pytest.raises(ValidationError, match="sharding: groups needs the etcd backend"):
        parse_options(options, home=tmp_path, open_backend=open_backend)
    etcd_options = {**options, "backend": {"type": "etcd", "endpoints": ["http://127.0.0.1:2379"]}}
    assert parse_options(etcd_options, home=tmp_path, open_backend=open_backend)["sharding"] == "groups"
