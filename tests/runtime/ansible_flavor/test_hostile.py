"""Hostile calls to the ansible flavor daemon: every answer a result or a JSON-RPC error, never a crash.

Hypothesis fires wrong-typed and malformed params at every Flavor method of a real daemon on its
Unix socket; afterwards the daemon still answers its handshake and its log holds no traceback.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infrakit_runtime.rpc.errors import RemoteError
from tests.runtime.conftest import Daemons

METHODS = ["Flavor.Validate", "Flavor.Prepare", "Flavor.Healthy", "Flavor.HealthyMany", "Flavor.Drain",
           "Flavor.PrepareMany"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=12,
)
# Properties that parse but name a playbook nobody has: nothing gets configured.
properties = st.one_of(json_values, st.fixed_dictionaries(
    {"Playbook": st.just("/nonexistent/infrakit-test/site.yml")},
    optional={"Retries": json_values, "Concurrency": json_values, "Connection": json_values, "Drain": json_values,
              "Flavor": json_values, "ExtraVars": json_values, "Timeout": json_values}))
instance = st.one_of(json_values, st.fixed_dictionaries(
    {"ID": st.text(min_size=1, max_size=12)},
    optional={"Tags": st.dictionaries(st.sampled_from(["infrakit.group", "x"]), st.text(max_size=5)),
              "Properties": json_values, "LogicalID": json_values}))
params = st.fixed_dictionaries({}, optional={
    "Type": st.one_of(st.just(""), json_values), "Properties": properties, "Instance": instance,
    "Instances": st.one_of(st.lists(instance, max_size=3), json_values), "Spec": json_values,
    "Allocation": json_values, "Index": json_values, "Specs": json_values, "Indices": json_values,
})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemons(tmp_path_factory.mktemp("hostile") / "home")
    d.start("ansible")
    client = d.client("ansible", timeout=30)
    try:
        yield d, client
    finally:
        client.close()
        d.stop_all()


@pytest.mark.parametrize("method", METHODS)
def test_every_hostile_call_gets_an_answer_and_the_daemon_lives(daemon, method):
    d, client = daemon

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(params)
    def fire(p):
        try:
            answer = client.call(method, p)
        except RemoteError as e:
            assert e.code in (-32000, -32600, -32602) and e.message, e
        else:
            assert isinstance(answer, dict)

    fire()
    assert "Flavor/0.1.1" in client.hello()
    assert "Traceback" not in d.log("ansible")
