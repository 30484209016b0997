"""Two manager replicas on one host sharing a file-backend store: one leads, the other takes over."""

from __future__ import annotations

import os
import signal

import pytest

from tests.runtime.ha.cluster import Replicas, stop_everything


@pytest.fixture
def file_replicas(daemons):
    stack = Replicas(daemons, backend={"type": "file", "dir": str(daemons.home / "shared-store")},
                     names=("group-a", "group-b"))
    try:
        yield stack
    finally:
        stop_everything(stack)


def test_the_other_replica_takes_over_a_killed_leader_and_enforces_the_stored_spec(file_replicas):
    stack = file_replicas
    old = stack.leader()
    other = next(n for n in stack.names if n != old)
    stack.via = other  # the follower forwards to the leader's advertised TCP location
    assert stack.commit(stack.spec(size=2)) == "Managing 2 instances"
    stack.wait_converged(2)
    assert stack.status(other)["Location"] == stack.location(old)

    stack.kill(old)
    assert stack.leader(timeout=10) == other
    victim = stack.instances()[0]
    os.kill(victim["Properties"]["PID"], signal.SIGKILL)
    stack.wait(lambda d: d.get("Converged") and len(d["Instances"]) == 2
               and victim["ID"] not in {i["ID"] for i in d["Instances"]}, what="the survivor replacing a killed instance")
    assert stack.live_processes() == 2
    assert stack.status(other)["Term"] > 1
    assert stack.actions(other), "the survivor itself acted"
    assert stack.actions_by_non_leaders() == []
