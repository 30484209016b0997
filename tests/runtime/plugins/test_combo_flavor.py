"""The combo flavor chaining two real vanilla daemons over their Unix sockets."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from infrakit_runtime.rpc.client import SyncClient
from infrakit_runtime.rpc.errors import RemoteError
from infrakit_runtime.rpc.lookup import PluginDirectory
from tests.runtime.conftest import Daemons, wait_for_socket

UNKNOWN, HEALTHY, UNHEALTHY = 0, 1, 2
INSTANCE = {"ID": "instance-3", "LogicalID": "10.0.0.3", "Tags": {"infrakit.group": "web"}}


@pytest.fixture(scope="module")
def combo(tmp_path_factory) -> Iterator[SyncClient]:
    """Two vanilla daemons and a combo over them, shared by the module: none keeps state between calls."""
    daemons = Daemons(tmp_path_factory.mktemp("combo") / "home")
    try:
        for name in ("vanilla:a", "vanilla:b", "combo"):
            daemons.start(name, wait=False)
        for name in ("a", "b", "combo"):
            wait_for_socket(daemons.plugins_dir / name, proc=daemons.procs[name])
        client = daemons.client("combo", timeout=20)
        yield client
        client.close()
    finally:
        daemons.stop_all()


def chain(a: dict, b: dict, *more: dict) -> dict:
    return {"Flavors": [{"Plugin": "a", "Properties": a}, {"Plugin": "b", "Properties": b}, *more]}


def health(client, properties: dict) -> int:
    return client.call("Flavor.Healthy", {"Type": "", "Properties": properties, "Instance": INSTANCE})["Health"]


def test_combo_announces_the_flavor_interface(combo):
    hello = combo.hello()
    assert hello["Flavor/0.1.1"] == [{"Name": ".", "ProxyFor": ""}]


def test_prepare_feeds_each_flavor_the_previous_output_so_tags_merge_and_init_concatenates(combo):
    properties = chain(
        {"Init": ["echo a1", "echo a2"], "Tags": {"from": "a", "only-a": "1"}, "Attachments": [{"ID": "vol-a"}]},
        {"Init": ["echo b"], "Tags": {"from": "b"}, "Attachments": [{"ID": "gpu-b", "Type": "gpu"}]},
    )
    spec = {"Properties": {"image": "x"}, "Tags": {"infrakit.group": "web"}, "Init": "#!/bin/sh", "LogicalID": None}
    answer = combo.call("Flavor.Prepare", {"Type": "", "Properties": properties, "Spec": spec,
                                           "Allocation": {"Size": 2}, "Index": {"Group": "web", "Sequence": 1}})
    assert answer["Spec"] == {
        "Properties": {"image": "x"},
        "Tags": {"infrakit.group": "web", "from": "b", "only-a": "1"},
        "Init": "#!/bin/sh\necho a1\necho a2\necho b",
        "LogicalID": None,
        "Attachments": [{"ID": "vol-a", "Type": ""}, {"ID": "gpu-b", "Type": "gpu"}],
    }


def test_prepare_names_the_member_that_failed(combo):
    properties = chain({"Init": ["ok"]}, {"InitScriptTemplateURL": "gopher://x"})
    with pytest.raises(RemoteError) as failed:
        combo.call("Flavor.Prepare", {"Type": "", "Properties": properties, "Spec": {"Init": ""},
                                      "Allocation": {"Size": 1}, "Index": {"Group": "g", "Sequence": 0}})
    assert failed.value.code == -32000
    assert failed.value.message.startswith("Flavors[1] (b) could not prepare the instance: InitScriptTemplateURL")


def test_health_is_healthy_only_when_every_flavor_says_so(combo):
    yes, no = {"Health": {"Command": ["true"]}}, {"Health": {"Command": ["false"]}}
    cannot_tell = {"Health": {"TCP": "{{address}}:{{port}}"}}  # the instance has no Port property
    assert health(combo, chain(yes, {})) == HEALTHY
    assert health(combo, chain(yes, no)) == UNHEALTHY
    assert health(combo, chain(no, yes)) == UNHEALTHY
    assert health(combo, chain(yes, cannot_tell)) == UNKNOWN
    assert health(combo, chain(cannot_tell, no)) == UNHEALTHY


def test_healthy_many_says_final_only_when_no_member_probes(combo):
    """Vanilla says ``Final`` without a probe; the chain says it when all its members do, so the controller
    stops asking about a settled member of a combo group as it does for a vanilla one."""
    def many(properties: dict) -> dict:
        return combo.call("Flavor.HealthyMany", {"Type": "", "Properties": properties, "Instances": [INSTANCE] * 2})

    quiet = many(chain({"Init": ["echo a"]}, {"Tags": {"b": "1"}}))
    assert quiet["Healths"] == [HEALTHY, HEALTHY] and quiet.get("Final") is True
    probing = many(chain({}, {"Health": {"Command": ["true"]}}))
    assert probing["Healths"] == [HEALTHY, HEALTHY] and "Final" not in probing
    unreachable = many(chain({}, {}, {"Plugin": "not-running", "Properties": {}}))
    assert unreachable["Healths"] == [UNKNOWN, UNKNOWN] and "Final" not in unreachable


def test_an_unreachable_member_makes_health_unknown_not_unhealthy(combo):
    properties = chain({}, {}, {"Plugin": "not-running", "Properties": {}})
    assert health(combo, properties) == UNKNOWN


def test_drain_attempts_every_member_and_reports_every_failure(combo, tmp_path):
    marker = tmp_path / "b-drained"
    fail = {"Drain": {"Command": ["sh", "-c", "echo a refused >&2; exit 1"]}}
    touch = {"Drain": {"Command": [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('{{{{id}}}}')"]}}
    properties = chain(fail, touch, {"Plugin": "not-running", "Properties": {}})
    with pytest.raises(RemoteError) as failed:
        combo.call("Flavor.Drain", {"Type": "", "Properties": properties, "Instance": INSTANCE})
    message = failed.value.message
    assert message.startswith("draining instance instance-3 failed: Flavors[0] (a): drain of instance instance-3")
    assert "exited with status 1: a refused" in message
    assert "; Flavors[2] (not-running): cannot reach plugin not-running" in message
    assert "Flavors[1]" not in message
    assert marker.read_text() == "instance-3"


def test_validate_lists_every_problem_of_every_member(combo):
    properties = {
        "Flavors": [
            {"Plugin": "a", "Properties": {"Init": "not a list", "Health": {}}},
            {"Plugin": "b", "Properties": {"Tags": {"ok": "yes"}}},
            {"Plugin": "b/other", "Properties": {}},
            {"Plugin": "combo", "Properties": {}},
            {"Plugin": "", "Properties": {}, "Weight": 2},
        ],
        "Mode": "all",
    }
    with pytest.raises(RemoteError) as failed:
        combo.call("Flavor.Validate", {"Type": "", "Properties": properties, "Allocation": {"Size": 1}})
    assert failed.value.message.split("; ") == [
        "unknown property 'Mode' (known: Flavors)",
        "Flavors[3].Plugin 'combo' is this combo flavor itself (a combo cannot contain itself)",
        "unknown Flavors[4] property 'Weight' (known: Plugin, Properties)",
        "Flavors[4].Plugin must name a flavor plugin as name[/type], got string",
    ]
    del properties["Mode"]
    properties["Flavors"] = properties["Flavors"][:3]
    with pytest.raises(RemoteError) as failed:
        combo.call("Flavor.Validate", {"Type": "", "Properties": properties, "Allocation": {"Size": 1}})
    problems = failed.value.message.split("; ")
    assert problems[:2] == [
        "Flavors[0] (a): Init must be an array of strings, got string",
        "Flavors[0] (a): Health needs at least one probe: HTTP, TCP or Command",
    ]
    assert problems[2].startswith("Flavors[2] (b/other): not found: b/other")
    assert all(p.startswith("Flavors[2] (b/other): ") for p in problems[2:])
    valid = chain({"Init": ["x"]}, {"Health": {"Command": ["true"]}})
    answer = combo.call("Flavor.Validate", {"Type": "", "Properties": valid, "Allocation": {"Size": 1}})
    assert answer == {"Type": "", "OK": True}


def test_clients_are_cached_per_plugin_name_and_share_one_connection_per_socket(tmp_path):
    plugins = PluginDirectory(tmp_path)
    a, a_again, a_typed = plugins.flavor("a"), plugins.flavor("a"), plugins.flavor("a/t")
    assert a is a_again
    assert a_typed is not a
    assert a_typed.client is a.client
    assert plugins.flavor("b").client is not a.client
    assert plugins.instance("a").client is a.client, "one connection per socket, whatever the SPI"
    asyncio.run(plugins.close())
