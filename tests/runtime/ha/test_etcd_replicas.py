"""Three manager replicas on a real 3-member etcd cluster: failover, fencing, quorum, forwarding."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.ha.cluster import etcd_key_meta, wait_for

TTL = 5.0


def members(stack, gid: str = "web") -> set[str]:
    return {d["ID"] for d in stack.instances(gid)}


def kill_one_instance(stack, gid: str = "web") -> str:
    victim = stack.instances(gid)[0]
    os.kill(victim["Properties"]["PID"], signal.SIGKILL)
    return victim["ID"]


def test_a_commit_acknowledged_just_before_the_leader_is_killed_is_enforced_by_the_next_leader(replicas):
    stack = replicas()
    old = stack.leader()
    follower = next(n for n in stack.names if n != old)
    stack.via = follower  # followers forward Group calls to the leader
    assert stack.commit(stack.spec(size=2)) == "Managing 2 instances"
    stack.wait_converged(2)

    stack.via = old
    stack.commit(stack.spec(size=3))  # acknowledged by the leader ...
    stack.kill(old)  # ... which dies at once, maybe before it provisioned anything

    stack.via = None
    new = stack.leader(timeout=TTL + 10)
    assert new != old
    stack.wait_converged(3)
    assert stack.live_processes() == 3

    victim = kill_one_instance(stack)  # enforcement goes on after the failover
    stack.wait(lambda d: d.get("Converged") and len(d["Instances"]) == 3 and victim not in {i["ID"] for i in d["Instances"]},
               what="the killed instance replaced by the new leader")
    assert stack.live_processes() == 3
    assert [s["Properties"]["Allocation"] for s in stack.rpc(new, "Manager.Specs")["Specs"]] == [{"Size": 3}]
    assert stack.actions(new), "the new leader itself replaced the instances"
    assert stack.actions_by_non_leaders() == []


def test_a_leader_paused_past_its_lease_neither_acts_nor_writes_when_it_resumes(replicas, etcd, prefix):
    stack = replicas(forward=False)
    stack.commit(stack.spec(size=3))
    stack.wait_converged(3)
    old = stack.leader()
    follower = next(n for n in stack.names if n != old)
    with pytest.raises(RemoteError, match=f"not the leader; the leader is at {stack.location(old)}"):
        stack.rpc(follower, "Group.DescribeGroup", {"ID": "web"})

    stack.kill(old, signal.SIGSTOP)
    acted_before_pause = len(stack.actions(old))
    new = stack.leader(timeout=TTL + 10, exclude=(old,))
    stack.via = new
    stack.commit(stack.spec(size=2))  # the new leader scales down; the paused one still believes in 3
    stack.wait_converged(2)
    key = prefix + "groups/web"
    written = etcd_key_meta_of(etcd, key)

    # A write that reaches the old leader while it is paused, handled as soon as it resumes.
    outcome: dict[str, Any] = {}

    def late_commit() -> None:
        try:
            outcome["answer"] = stack.rpc(old, "Group.CommitGroup", {"Spec": stack.spec(size=5), "Pretend": False})
        except RemoteError as e:
            outcome["error"] = e.message

    caller = threading.Thread(target=late_commit)
    caller.start()
    # A deliberate pause: the call must reach the frozen replica's socket before it resumes, and
    # nothing observable from here marks that (it is queued in the kernel).
    time.sleep(0.3)
    stack.kill(old, signal.SIGCONT)
    caller.join(30)
    assert "answer" not in outcome, f"the resumed old leader accepted a commit: {outcome}"
    assert "not the leader" in outcome["error"] or "lost leadership" in outcome["error"], outcome

    wait_for(lambda: stack.events(old, "leadership_lost"), 10, "the old leader to notice it lost the lease")
    time.sleep(2.0)  # four poll intervals in which an unfenced supervisor would act on its stale size of 3
    assert len(stack.actions(old)) == acted_before_pause, "the resumed old leader sent changes to a plugin"
    assert etcd_key_meta_of(etcd, key) == written, "the resumed old leader wrote the store"
    assert stack.leader() == new
    assert len(stack.instances()) == 2 and stack.live_processes() == 2
    status = stack.status(old)
    assert status["Leader"] is False and status["Location"] == stack.location(new)
    assert stack.actions_by_non_leaders() == []


def etcd_key_meta_of(etcd, key: str) -> dict[str, Any]:
    meta = etcd_key_meta(etcd, key)
    assert meta is not None, f"no key {key} in etcd"
    return {k: meta[k] for k in ("create_revision", "mod_revision", "version")}


def test_a_graceful_stop_of_the_leader_hands_over_without_waiting_for_the_lease(replicas):
    stack = replicas()
    stack.commit(stack.spec(size=2))
    stack.wait_converged(2)
    old = stack.leader()
    followers = [n for n in stack.names if n != old]
    wait_for(lambda: all(stack.status(n)["Location"] == stack.location(old) for n in followers), 30,
             "the followers to know the leader")
    stopped = stack.kill(old, signal.SIGTERM)
    new = stack.leader(timeout=TTL + 10)
    gained = max(e["Time"] for e in stack.events(new, "leadership_gained"))
    print(f"graceful handover: new leader {gained - stopped:.3f}s after SIGTERM to the old one (bench.failover)")
    # The old leader revoked its lease on the way out (the speed that buys is bench.failover's to measure).
    assert "resigned leadership" in stack.log(old) and "could not revoke" not in stack.log(old), stack.log(old)[-2000:]
    victim = kill_one_instance(stack)
    stack.wait(lambda d: d.get("Converged") and len(d["Instances"]) == 2 and victim not in {i["ID"] for i in d["Instances"]},
               what="the new leader replacing a killed instance")
    assert stack.actions_by_non_leaders() == []


def test_one_etcd_member_down_changes_nothing_and_two_down_stop_every_replica_until_recovery(replicas, etcd):
    stack = replicas()
    stack.commit(stack.spec(size=2))
    stack.wait_converged(2)
    leader = stack.leader()
    term = stack.status(leader)["Term"]

    etcd.stop("m3")
    victim = kill_one_instance(stack)
    stack.wait(lambda d: d.get("Converged") and len(d["Instances"]) == 2 and victim not in {i["ID"] for i in d["Instances"]},
               what="healing with one etcd member down")
    assert stack.leader() == leader and stack.status(leader)["Term"] == term, "losing one member moved leadership"

    etcd.stop("m2")
    wait_for(lambda: not stack.leaders(), TTL + 5, "every replica to stop leading without quorum")
    for name in stack.names:
        status = stack.status(name)
        assert status["Leader"] is False
        assert status["Backend"]["Healthy"] is False and "quorum" in status["Backend"]["Reason"], status
        assert status["Problem"] and "etcd" in status["Problem"], status
    with pytest.raises(RemoteError, match="not the leader"):
        stack.rpc(stack.names[0], "Group.DescribeGroup", {"ID": "web"})
    acted = {n: len(stack.actions(n)) for n in stack.names}
    kill_one_instance(stack)
    time.sleep(2.0)  # four poll intervals: nobody may replace it without a lease
    assert len(stack.instances()) == 1, "a replica acted without quorum"
    assert {n: len(stack.actions(n)) for n in stack.names} == acted

    etcd.start("m2")
    etcd.start("m3")
    etcd.wait_healthy()
    stack.leader(timeout=3 * TTL + 10)
    stack.wait_converged(2, timeout=60)
    assert [s["Properties"]["Allocation"] for s in stack.rpc(stack.leader(), "Manager.Specs")["Specs"]] == [{"Size": 2}]
    assert stack.live_processes() == 2
    assert stack.actions_by_non_leaders() == []
