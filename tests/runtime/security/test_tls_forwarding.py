"""A follower forwards Group calls to the leader over TLS with the bearer token, verifying its certificate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.security.conftest import free_port, make_cert

SPEC = {"ID": "tls", "Properties": {"Allocation": {"Size": 1}, "Instance": {"Plugin": "file", "Properties": {}},
                                    "Flavor": {"Plugin": "vanilla", "Properties": {}}}}


def start_replica(daemons, name: str, *, store: Path, cert: Path, key: Path, token_file: Path) -> int:
    port = free_port()
    options = {"backend": {"type": "file", "dir": str(store)}, "listen": f"127.0.0.1:{port}",
               "tls": {"cert": str(cert), "key": str(key), "ca": str(cert)}, "token_file": str(token_file)}
    path = daemons.home / f"{name}.json"
    path.write_text(json.dumps(options))
    daemons.start(f"manager:{name}", "--options-file", str(path))
    return port


def leader_of(daemons, names: list[str]) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for name in names:
            if daemons.client(name).call("Manager.IsLeader", {})["Leader"]:
                return name
        time.sleep(0.1)
    raise AssertionError("no leader elected")


@pytest.fixture
def pair(daemons, tmp_path: Path):
    cert, key = make_cert(tmp_path)
    token = tmp_path / "token"
    token.write_text("s3cret-forwarding-token\n")
    token.chmod(0o600)
    daemons.start("file")
    daemons.start("vanilla")
    store = daemons.home / "store"
    for name in ("group-a", "group-b"):
        start_replica(daemons, name, store=store, cert=cert, key=key, token_file=token)
    leader = leader_of(daemons, ["group-a", "group-b"])
    follower = "group-b" if leader == "group-a" else "group-a"
    return leader, follower, cert, key, store


def test_a_follower_forwards_a_commit_to_the_leader_over_tls(daemons, pair):
    leader, follower, *_ = pair
    location = daemons.client(follower).call("Manager.LeaderLocation", {})["Location"]
    assert location["Scheme"] == "https" and location["Host"].startswith("127.0.0.1:")
    result = daemons.client(follower).call("Group.CommitGroup", {"Name": "group", "Spec": SPEC, "Pretend": False})
    assert result["Details"] == "Managing 1 instances"
    # The leader's canonical spec and verdict travel back through the follower.
    assert result["Changed"] is True and result["Previous"] is None
    assert result["Spec"]["Properties"]["Updating"]["ProgressDeadline"] == "10m0s"
    groups = daemons.client(leader).call("Group.InspectGroups", {"Name": "group", "ID": ""})["Groups"]
    assert [g["ID"] for g in groups] == ["tls"]


def test_a_follower_with_the_wrong_token_is_refused_by_the_leader_and_nothing_changes(daemons, pair, tmp_path: Path):
    leader, follower, cert, key, store = pair
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token\n")
    wrong.chmod(0o600)
    daemons.kill(follower)
    start_replica(daemons, follower, store=store, cert=cert, key=key, token_file=wrong)
    with pytest.raises(RemoteError) as e:
        daemons.client(follower).call("Group.CommitGroup", {"Name": "group", "Spec": SPEC, "Pretend": False})
    assert "401" in e.value.message and "not-the-token" not in e.value.message
    assert daemons.client(leader).call("Group.InspectGroups", {"Name": "group", "ID": ""})["Groups"] is None
