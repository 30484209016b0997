"""The selfhost daemon serves its flavors over a real socket, under their types."""

from __future__ import annotations

import pytest

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import Daemons


def test_the_daemon_serves_the_etcd_flavor_by_type_and_refuses_options(daemons: Daemons) -> None:
    daemons.start("selfhost")
    client = daemons.client("selfhost")
    try:
        hello = client.hello()
        assert {o["Name"] for o in hello["Flavor/0.1.1"]} >= {"etcd"}
        client.call("Flavor.Validate", {"Type": "etcd", "Properties": {},
                                        "Allocation": {"LogicalIDs": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}})
        with pytest.raises(RemoteError, match="keeps pets"):
            client.call("Flavor.Validate", {"Type": "etcd", "Properties": {}, "Allocation": {"Size": 3}})
    finally:
        client.close()
    proc = daemons.start("selfhost:other", "-o", "color=blue", wait=False)
    assert proc.wait(30) != 0
    assert "take no options" in daemons.log("other")
