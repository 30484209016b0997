"""The manager flavor against real controller replicas on the test etcd cluster: it renders each
replica's configuration, judges a replica healthy when it leads or follows the leader, and drains
a leading replica only after it has handed leadership over."""

from __future__ import annotations

import json
import re

import pytest

from infrakit_runtime.spi import flavor
from infrakit_runtime.spi.common import ValidationError
from tests.runtime.selfhosted import local
from tests.runtime.selfhosted.replica_world import ReplicaWorld, config_of

HEALTHY, UNHEALTHY = flavor.Health.HEALTHY, flavor.Health.UNHEALTHY


def test_prepare_renders_the_replicas_configuration_and_self_id(replica_world: ReplicaWorld) -> None:
    replica_world.logical_ids = local.free_ids(1)
    (lid,) = replica_world.logical_ids
    init = replica_world.prepare(lid)
    assert re.search(rf"^export INFRAKIT_GROUP_SELF_LOGICAL_ID='?{re.escape(lid)}'?$", init, re.M)
    body = init.split("<<'INFRAKIT_REPLICA'\n", 1)[1].split("\nINFRAKIT_REPLICA", 1)[0]
    doc = json.loads(body)
    props = replica_world.properties
    assert doc["manager"]["listen"] == lid and doc["manager"]["advertise"] == f"http://{lid}"
    assert doc["manager"]["backend"] == props["Backend"] and doc["manager"]["token_file"] == props["TokenFile"]
    assert doc["token_file"] == props["TokenFile"] and doc["poll_interval"] == "0.5s"
    assert doc["manager"]["events_json"] is True
    assert str(config_of(init)).startswith(props["ConfigDir"])


def test_replicas_that_lead_or_follow_the_leader_are_healthy_and_a_dead_one_is_not(replica_world: ReplicaWorld) -> None:
    lids = replica_world.grow(3)
    local.wait_for(lambda: replica_world.healthy(*lids) == [HEALTHY] * 3, 60, "three healthy replicas", interval=0.3)
    leader = replica_world.leader()
    follower = next(lid for lid in lids if lid != leader)
    assert config_of(replica_world.inits[follower]).stat().st_mode & 0o077 == 0, "the config is private"
    local.kill(replica_world.procs[follower])
    verdicts = dict(zip(lids, replica_world.healthy(*lids), strict=True))
    assert verdicts[follower] is UNHEALTHY
    assert [v for lid, v in verdicts.items() if lid != follower] == [HEALTHY, HEALTHY]


def test_validate_lists_every_problem_naming_its_field(replica_world: ReplicaWorld) -> None:
    bad = {"Backend": {"type": "etcd"}, "ListenPort": 70000, "ConfigDir": "relative", "TLS": {"cert": "/c"},
           "Options": {"listen": "0.0.0.0:1"}, "Shape": "round"}
    with pytest.raises(ValidationError) as raised:
        replica_world.run(replica_world.flavor.validate(bad, flavor.Allocation(logical_ids=("10.0.0.1", "10.0.0.1:24864"))))
    text = "\n".join(raised.value.problems)
    for expected in ("TokenFile is required", "Backend.endpoints must list", "ListenPort must be an integer",
                     "ConfigDir must be an absolute path", "TLS needs cert and key", "Options.listen is rendered",
                     "Shape is not a field", "would listen on 10.0.0.1:24864"):
        assert expected in text, f"{expected!r} missing from:\n{text}"


def test_each_replica_knows_its_own_logical_id(replica_world: ReplicaWorld) -> None:
    lids = replica_world.grow(2)
    local.wait_for(lambda: replica_world.healthy(*lids) == [HEALTHY] * 2, 60, "two healthy replicas", interval=0.3)
    for lid in lids:
        assert replica_world.rpc(lid, "Manager.Status")["SelfLogicalID"] == lid


def test_draining_the_leader_hands_leadership_to_a_follower_first(replica_world: ReplicaWorld) -> None:
    lids = replica_world.grow(3)
    local.wait_for(lambda: replica_world.healthy(*lids) == [HEALTHY] * 3, 60, "three healthy replicas", interval=0.3)
    leader = replica_world.leader()
    follower = next(lid for lid in lids if lid != leader)
    replica_world.run(replica_world.flavor.drain(replica_world.properties, replica_world.description(follower)))
    assert replica_world.leader() == leader, "draining a follower leaves the leader alone"

    replica_world.run(replica_world.flavor.drain(replica_world.properties, replica_world.description(leader)))
    # Drain returned: the old leader no longer leads, it is alive, and it does not take leadership back.
    assert replica_world.procs[leader].poll() is None
    assert replica_world.rpc(leader, "Manager.IsLeader")["Leader"] is False
    new = replica_world.leader()
    assert new != leader
    local.wait_for(lambda: replica_world.healthy(*lids) == [HEALTHY] * 3, 60, "all three follow the new leader",
                   interval=0.3)
    status = replica_world.rpc(leader, "Manager.Status")
    assert status["Location"] == f"http://{new}" and "handed leadership over" in (status["LastLoss"] or "")
    assert replica_world.leader() == new
