"""The etcd flavor against real etcd processes: members join as learners, are promoted once caught up,
are removed on drain, and a dead member is replaced by remove-then-add with a fresh data directory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
from pathlib import Path

import pytest

from infrakit_runtime.plugins.flavor.selfhost import snapshots
from infrakit_runtime.spi import flavor
from infrakit_runtime.spi.common import PluginError, ValidationError
from tests.runtime.selfhosted import local
from tests.runtime.selfhosted.etcd_world import EtcdWorld

HEALTHY, UNHEALTHY = flavor.Health.HEALTHY, flavor.Health.UNHEALTHY


def _setting(init: str, name: str) -> str:
    m = re.search(rf"^export ETCD_{name}=(.*)$", init, re.M)
    assert m, f"ETCD_{name} not rendered in:\n{init}"
    return m.group(1).strip("'")


def _member(world: EtcdWorld, via: str, lid: str) -> dict:
    peer = f"http://127.0.0.1:{int(lid.rsplit(':', 1)[1]) + 1}"
    found = [m for m in local.members(via) if peer in m.get("peerURLs", [])]
    assert len(found) <= 1
    return found[0] if found else {}


def test_a_cluster_grows_from_a_bootstrap_member_one_learner_at_a_time(etcd_world: EtcdWorld) -> None:
    first, second, third = etcd_world.grow(3)
    voters = etcd_world.voters(first)
    assert sorted(m["name"] for m in voters) == sorted(n.replace(":", "-") for n in (first, second, third))
    # The bootstrap member started a new cluster of one; the others joined the running cluster.
    assert _setting(etcd_world.inits[first], "INITIAL_CLUSTER_STATE") == "new"
    assert _setting(etcd_world.inits[third], "INITIAL_CLUSTER_STATE") == "existing"
    assert len(_setting(etcd_world.inits[third], "INITIAL_CLUSTER").split(",")) == 3
    assert all(local.health(lid) for lid in (first, second, third))


def test_a_second_bootstrap_is_refused_while_the_cluster_answers(etcd_world: EtcdWorld) -> None:
    _, second = etcd_world.grow(2)
    with pytest.raises(PluginError, match=r"already answers .* a second, separate cluster"):
        etcd_world.prepare(second, bootstrap=True)


def test_a_learner_is_promoted_only_once_it_has_started_and_caught_up(etcd_world: EtcdWorld) -> None:
    first, _ = etcd_world.grow(2)
    etcd_world.logical_ids.append(third := local.member_ids(1)[0])
    init = etcd_world.prepare(third)
    added = _member(etcd_world, first, third)
    assert added.get("isLearner") and not added.get("name"), "added as a learner, not started yet"
    assert etcd_world.healthy(third) == [UNHEALTHY]  # listed but not started: the grace period covers a start
    assert _member(etcd_world, first, third).get("isLearner"), "never promoted before it has caught up"
    etcd_world.start(third, init)
    etcd_world.wait_healthy(third)
    promoted = _member(etcd_world, first, third)
    assert promoted["ID"] == added["ID"] and not promoted.get("isLearner")


def test_an_unstarted_learner_is_reused_and_one_no_longer_allocated_is_removed(etcd_world: EtcdWorld) -> None:
    first, _ = etcd_world.grow(2)
    stray, kept = local.member_ids(2)
    etcd_world.logical_ids.append(stray)
    etcd_world.prepare(stray)
    before = _member(etcd_world, first, stray)["ID"]
    etcd_world.prepare(stray)  # the provision failed; the controller prepares the same ID again
    assert _member(etcd_world, first, stray)["ID"] == before, "the learner added earlier is reused"
    etcd_world.logical_ids[-1] = kept  # the allocation moved on: the stray learner blocks nobody
    etcd_world.start(kept, etcd_world.prepare(kept))
    assert _member(etcd_world, first, stray) == {}
    etcd_world.wait_healthy(kept)


def test_a_killed_member_is_replaced_by_remove_then_add_with_a_fresh_data_directory(etcd_world: EtcdWorld) -> None:
    first, second, third = etcd_world.grow(3)
    old = _member(etcd_world, first, second)
    old_dir = _setting(etcd_world.inits[second], "DATA_DIR")
    local.kill(etcd_world.procs[second])
    assert etcd_world.healthy(second) == [UNHEALTHY]
    init = etcd_world.prepare(second)  # what the controller does for a logical ID with no instance
    new = _member(etcd_world, first, second)
    assert new["ID"] != old["ID"] and new.get("isLearner"), "the dead member was removed, a learner added"
    assert _setting(init, "DATA_DIR") != old_dir and not Path(_setting(init, "DATA_DIR")).exists()
    etcd_world.start(second, init)
    etcd_world.wait_healthy(first, second, third)
    assert len(etcd_world.voters(first)) == 3


def test_drain_removes_the_member_after_moving_raft_leadership_away(etcd_world: EtcdWorld) -> None:
    lids = etcd_world.grow(3)
    leader_id = local.etcd_call(lids[0], "maintenance/status")["leader"]
    leader = next(lid for lid in lids if _member(etcd_world, lids[0], lid)["ID"] == leader_id)
    others = [lid for lid in lids if lid != leader]
    etcd_world.run(etcd_world.flavor.drain(etcd_world.properties, etcd_world.description(leader)))
    # The removal is committed when drain returns, but etcd 3.4 lists members from each member's own
    # applied state: a busy follower may show the old membership (and leader) for a moment.
    local.wait_for(lambda: _member(etcd_world, others[0], leader) == {}, 30, "the removal to reach the other member")
    local.wait_for(lambda: local.etcd_call(others[0], "maintenance/status")["leader"] not in (leader_id, "0", 0),
                   30, "the other member to follow a new raft leader")
    # etcd stops a member that learns it was removed.
    local.wait_for(lambda: etcd_world.procs[leader].poll() is not None, 30, "the removed member to exit")
    assert etcd_world.healthy(*others) == [HEALTHY, HEALTHY]


def test_members_say_unhealthy_once_the_cluster_has_lost_quorum(etcd_world: EtcdWorld) -> None:
    lids = etcd_world.grow(3)
    for lid in lids[1:]:
        local.kill(etcd_world.procs[lid])
    local.wait_for(lambda: not local.health(lids[0]), 30, "the survivor to notice it has no leader")
    assert etcd_world.healthy(*lids) == [UNHEALTHY] * 3


def test_with_no_member_answering_the_list_the_count_is_none_of_the_voters_last_listed(etcd_world: EtcdWorld) -> None:
    """Two members killed and the survivor too slow to answer (stopped): the member list fails, and the
    count says 0 of 3 rather than nothing - with no count, the controller would see one answering
    member of the one its instance plugin still describes, a majority, and replace the killed ones."""
    lids = etcd_world.grow(3)
    etcd_world.properties["Timeout"] = "1s"
    assert {a.quorum for a in etcd_world.assess(*lids)} == {flavor.Quorum(answering=3, voting=3)}
    for lid in lids[1:]:
        local.kill(etcd_world.procs[lid])
    survivor = etcd_world.procs[lids[0]]
    os.kill(survivor.pid, signal.SIGSTOP)
    try:
        got = etcd_world.assess(lids[0])
    finally:
        os.kill(survivor.pid, signal.SIGCONT)
    assert [(a.health, a.quorum) for a in got] == [(UNHEALTHY, flavor.Quorum(answering=0, voting=3))], got
    assert "no etcd member lists the cluster" in got[0].reason
    # A member no list has ever shown: nothing is known to count.
    fresh = EtcdWorld(etcd_world.root, etcd_world.run)
    try:
        assert fresh.assess(lids[1])[0].quorum is None
    finally:
        fresh.close()


def test_a_snapshot_is_taken_when_due_and_only_the_newest_are_kept(etcd_world: EtcdWorld, tmp_path: Path) -> None:
    (first,) = etcd_world.grow(1)
    directory = tmp_path / "snapshots"
    etcd_world.properties["Snapshot"] = {"Dir": str(directory), "Interval": "1h", "Keep": 2}
    directory.mkdir()
    for stale in ("etcd-20000101T000000.000000Z.db", "etcd-20000102T000000.000000Z.db"):
        (directory / stale).write_bytes(b"old")
        os.utime(directory / stale, (0, 0))
    assert etcd_world.healthy(first) == [HEALTHY]
    local.wait_for(lambda: etcd_world.run(asyncio.sleep(0.05, etcd_world.flavor.snapshots.taken == 1)), 30,
                   "a snapshot (taken in the background)")
    files = snapshots.snapshot_files(directory)
    assert len(files) == 2 and files[0].name == "etcd-20000102T000000.000000Z.db", "the oldest is removed"
    data = files[-1].read_bytes()
    assert hashlib.sha256(data[:-32]).digest() == data[-32:], "etcd's integrity hash closes the snapshot"
    etcd_world.healthy(first)  # not due again for an hour
    assert etcd_world.flavor.snapshots.taken == 1


def test_a_snapshot_is_due_when_there_is_none_or_the_newest_is_older_than_the_interval() -> None:
    assert snapshots.due(None, interval=60, now=100)
    assert not snapshots.due(50, interval=60, now=100)
    assert snapshots.due(40, interval=60, now=100)


def test_validate_lists_every_problem_naming_its_field(etcd_world: EtcdWorld) -> None:
    bad = {"ClientPort": 0, "DataDir": "relative", "Launch": "docker", "Options": {"name": "x", "Bad_Flag": "1"},
           "Snapshot": {"Interval": "soon"}, "Color": "blue"}
    with pytest.raises(ValidationError) as raised:
        etcd_world.run(etcd_world.flavor.validate(bad, flavor.Allocation(logical_ids=("10.0.0.1", "not a host"))))
    text = "\n".join(raised.value.problems)
    for expected in ("ClientPort must be an integer from 1 to 65535", "DataDir must be an absolute path",
                     "Launch must be one of env, debian", "Options.name is rendered by the flavor",
                     "Options.Bad_Flag: name an etcd flag", "Snapshot.Dir is required", "Snapshot.Interval",
                     "Color is not a field", "LogicalIDs[1]"):
        assert expected in text, f"{expected!r} missing from:\n{text}"
    with pytest.raises(ValidationError, match=r"keeps pets: give the group Allocation\.LogicalIDs"):
        etcd_world.run(etcd_world.flavor.validate({}, flavor.Allocation(size=3)))
    with pytest.raises(ValidationError, match=re.escape("would listen on http://127.0.0.1:2380")):
        etcd_world.run(etcd_world.flavor.validate({}, flavor.Allocation(logical_ids=("127.0.0.1:2379", "127.0.0.1:2380"))))
